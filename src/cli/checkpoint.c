/* The command line's side of long runs: where checkpoints live, resuming, and
 * the checks made before a run touches its output folder (writable, room on
 * the file system).  The library does the checkpointing itself. */
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

int cli_resume_setup(const char *cmd, cli_opts *o, cli_ckpt_paths *p)
{
    p->read[0] = 0;
    if (o->resume) {
        if (!o->out_given) o->out_dir = o->resume;
        snprintf(p->read, sizeof p->read, "%s/checkpoint.bnck", o->resume);
        struct stat sb;
        if (stat(p->read, &sb) != 0) {
            fprintf(stderr, "bnspike %s: --resume %s: no checkpoint there (%s): the run finished, or never "
                            "wrote one (see --checkpoint-every)\n", cmd, o->resume, strerror(errno));
            return EXIT_RUN_FAILED;
        }
    }
    snprintf(p->write, sizeof p->write, "%s/checkpoint.bnck", o->out_dir);
    return 0;
}

bn_checkpoint_config cli_checkpoint_config(const cli_opts *o, const cli_ckpt_paths *p, const char *extra)
{
    bn_checkpoint_config ck = {.path = p->write, .every = o->ckpt_every, .resume = p->read[0] ? p->read : NULL,
                               .extra = extra};
    return ck;
}

/* A process killed while writing leaves its temp file (the target itself is
 * intact, see bn_write_file_atomic); the next run into the folder removes them. */
static void remove_stale_temps(const char *dir)
{
    static const char *const outputs[] = {"checkpoint.bnck", "trajectories.npz", "run.json", "summary.csv",
                                          "summary.json", "events.csv", "theory-events.csv"};
    DIR *dp = opendir(dir);
    if (!dp) return;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL)
        for (size_t k = 0; k < sizeof outputs / sizeof outputs[0]; k++) {
            size_t len = strlen(outputs[k]);
            if (strncmp(e->d_name, outputs[k], len) == 0 && strncmp(e->d_name + len, ".tmp.", 5) == 0 &&
                strlen(e->d_name + len + 5) == 6) {
                char path[4400];
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                unlink(path);
            }
        }
    closedir(dp);
}

/* Free bytes on the file system that holds path or, when it does not exist
 * yet, its nearest existing ancestor (-1: unknown). */
static double free_bytes(const char *path)
{
    char p[4200];
    snprintf(p, sizeof p, "%s", path);
    for (;;) {
        struct statvfs vf;
        if (statvfs(p, &vf) == 0) return (double)vf.f_bavail * (double)vf.f_frsize;
        char *slash = strrchr(p, '/');
        if (!slash) return statvfs(".", &vf) == 0 ? (double)vf.f_bavail * (double)vf.f_frsize : -1;
        if (slash == p) return statvfs("/", &vf) == 0 ? (double)vf.f_bavail * (double)vf.f_frsize : -1;
        *slash = 0;
    }
}

int cli_prepare_output(const char *dir, double bytes, const char *what, int *created)
{
    *created = 0;
    /* Space first, so a refusal leaves no folder behind. */
    double avail = free_bytes(dir);
    if (avail >= 0 && bytes > avail) {
        char need[32], have[32];
        bn_format_bytes(bytes, need, sizeof need);
        bn_format_bytes(avail, have, sizeof have);
        fprintf(stderr, "bnspike: not enough disk space in %s for %s: about %s needed, %s free\n", dir, what,
                need, have);
        return EXIT_RUN_FAILED;
    }
    struct stat sb;
    int existed = stat(dir, &sb) == 0;
    int rc = cli_make_dirs(dir);
    if (rc) return rc;
    *created = !existed;
    remove_stale_temps(dir);
    /* A probe file tells more than access(2): read-only mounts, quotas, root. */
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.bnspike-probe.XXXXXX", dir);
    int fd = mkstemp(probe);
    if (fd < 0) {
        fprintf(stderr, "bnspike: cannot write to output folder %s: %s\n", dir, strerror(errno));
        if (!existed) rmdir(dir);
        return EXIT_RUN_FAILED;
    }
    close(fd);
    unlink(probe);
    return 0;
}

void cli_output_discard(const char *dir, int created)
{
    if (created) rmdir(dir); /* fails, harmlessly, when something was written */
}

void cli_checkpoint_remove(const char *path)
{
    if (unlink(path) != 0 && errno != ENOENT)
        fprintf(stderr, "bnspike: warning: cannot remove the finished run's checkpoint %s: %s\n", path,
                strerror(errno));
}
