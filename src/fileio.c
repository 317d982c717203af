/* Whole-file I/O.  Writes replace files atomically: readers of `path` see
 * either the old file or the complete new one, never a prefix, even if the
 * process dies or the disk fills up half way. */
#include "io_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* strerror plus a plain-words hint for the failure users actually hit. */
static const char *why(int err)
{
    return err == ENOSPC ? "No space left on device (the disk is full)" : strerror(err);
}

static int write_all(int fd, const unsigned char *p, size_t len)
{
    while (len > 0) {
        /* Some kernels cap a single write near 2 GiB; ask for less. */
        size_t chunk = len < ((size_t)1 << 30) ? len : ((size_t)1 << 30);
        ssize_t k = write(fd, p, chunk);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (k == 0) { /* no progress and no errno: treat like a full disk */
            errno = ENOSPC;
            return -1;
        }
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

/* The rename is only durable once the directory entry itself is on disk. */
static int fsync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash) dir = strdup(".");
    else if (slash == path) dir = strdup("/");
    else dir = strndup(path, (size_t)(slash - path));
    if (!dir) {
        errno = ENOMEM;
        return -1;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    /* Some file systems cannot fsync a directory; there is nothing more to do. */
    if (rc != 0 && (saved == EINVAL || saved == ENOTSUP)) rc = 0;
    errno = saved;
    return rc;
}

bn_status bn_write_file_atomic(const char *path, const void *buf, size_t len)
{
    if (!path || !*path) return bn_fail(BN_ERR_ARG, "cannot write a file: empty path");
    if (!buf && len > 0) return bn_fail(BN_ERR_ARG, "cannot write '%s': no data (NULL buffer)", path);

    static const char suffix[] = ".tmp.XXXXXX";
    size_t plen = strlen(path);
    char *tmp = malloc(plen + sizeof suffix);
    if (!tmp) return bn_fail(BN_ERR_NOMEM, "cannot write '%s': out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, suffix, sizeof suffix);

    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        bn_status st = bn_fail(BN_ERR_IO, "cannot write '%s': cannot create temporary file '%s': %s",
                               path, tmp, why(e));
        free(tmp);
        return st;
    }
    /* mkstemp makes the file 0600; outputs are meant to be shared like any
     * file the user would create. */
    (void)fchmod(fd, 0644);

    const char *step;
    int rc;
    if (write_all(fd, buf, len) != 0) {
        step = "write";
        goto fail;
    }
    if (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP) {
        step = "fsync";
        goto fail;
    }
    /* close can report a deferred write error (NFS, quota). */
    rc = close(fd);
    fd = -1;
    if (rc != 0 && errno != EINTR) {
        step = "close";
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        step = "rename of the temporary file";
        goto fail;
    }
    free(tmp);
    if (fsync_parent_dir(path) != 0)
        return bn_fail(BN_ERR_IO, "wrote '%s' but could not sync its directory: %s", path, why(errno));
    return BN_OK;

fail:;
    int e = errno;
    if (fd >= 0) close(fd);
    unlink(tmp);
    free(tmp);
    return bn_fail(BN_ERR_IO, "cannot write '%s' (%zu bytes): %s failed: %s", path, len, step, why(e));
}

const char *bn_path_basename(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

bn_status bn_read_whole_file(const char *path, unsigned char **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    if (!path || !*path) return bn_fail(BN_ERR_ARG, "cannot read a file: empty path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return bn_fail(BN_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return bn_fail(BN_ERR_IO, "cannot stat '%s': %s", path, strerror(e));
    }
    if (S_ISDIR(sb.st_mode)) {
        close(fd);
        return bn_fail(BN_ERR_IO, "cannot read '%s': it is a directory", path);
    }
    /* st_size is only a hint (pipes, files still growing): read to EOF. */
    size_t cap = S_ISREG(sb.st_mode) && sb.st_size > 0 ? (size_t)sb.st_size + 1 : 65536;
    size_t n = 0;
    unsigned char *p = malloc(cap);
    if (!p) {
        close(fd);
        return bn_fail(BN_ERR_NOMEM, "cannot allocate %zu bytes to read '%s'", cap, path);
    }
    for (;;) {
        if (n + 1 >= cap) { /* keep room for the NUL terminator */
            size_t ncap = cap * 2;
            unsigned char *q = ncap > cap ? realloc(p, ncap) : NULL;
            if (!q) {
                free(p);
                close(fd);
                return bn_fail(BN_ERR_NOMEM, "cannot allocate %zu bytes to read '%s'", ncap, path);
            }
            p = q;
            cap = ncap;
        }
        size_t want = cap - 1 - n;
        if (want > ((size_t)1 << 30)) want = (size_t)1 << 30;
        ssize_t k = read(fd, p + n, want);
        if (k < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            free(p);
            close(fd);
            return bn_fail(BN_ERR_IO, "cannot read '%s': %s", path, strerror(e));
        }
        if (k == 0) break;
        n += (size_t)k;
    }
    close(fd);
    p[n] = '\0';
    *buf = p;
    *len = n;
    return BN_OK;
}
