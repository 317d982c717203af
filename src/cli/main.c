/* bnspike command line: subcommand dispatch and the shared error reporting.
 * main() itself is in cli_entry.c, so tools (the fuzz targets) can link the
 * whole command line and call bnspike_main. */
#include "cli.h"
#include "common.h"
#include "shard.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#if __has_include("git_commit.h")
#include "git_commit.h"
#endif
#ifndef BN_GIT_COMMIT
#define BN_GIT_COMMIT "unknown"
#endif

static const char main_help[] =
    "usage: bnspike COMMAND [options]\n"
    "\n"
    "Full-batch gradient descent on batch-normalized linear models, batched over\n"
    "many trajectories, to study delayed loss spikes.\n"
    "\n"
    "commands:\n"
    "  run        simulate S trajectories on one data set (bnspike run --help)\n"
    "  demo       the embedded delayed-spike example (bnspike demo --help)\n"
    "  sweep      a grid of settings × seeds as large batches, with the spike\n"
    "             events of every trajectory (bnspike sweep --help); --shard I/N\n"
    "             runs one slice of it; a `make MPI=1` build under mpirun splits it\n"
    "  merge      join the shard folders of a sweep into its outputs\n"
    "             (bnspike merge --help)\n"
    "  theory     MODEL.md's three-variable map from the same start, beside the\n"
    "             simulation (bnspike theory --help)\n"
    "  plot       PNG figures of a run (Figure 3 panels) or a sweep (phase\n"
    "             diagrams) (bnspike plot --help)\n"
    "  data       write a generated data set as CSV (bnspike data --help)\n"
    "  backends   list the compiled-in backends and visible devices\n"
    "\n"
    "  -h, --help     this text\n"
    "  --version      version, git commit and backends\n";

int cli_report(const char *context, bn_status st)
{
    const char *detail = bn_last_error();
    fprintf(stderr, "bnspike: %s: %s\n", context, detail[0] ? detail : bn_status_name(st));
    return st == BN_ERR_INTERRUPTED ? EXIT_INTERRUPTED : EXIT_RUN_FAILED;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bnspike %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see bnspike %s --help)\n", cmd);
    va_end(ap);
    return EXIT_USAGE;
}

int cmd_backends(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    char buf[4096];
    bn_backends_describe(buf, sizeof buf);
    fputs(buf, stdout);
    return 0;
}

int cli_parse_only = 0;

int bnspike_main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(main_help, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        fputs(main_help, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("bnspike %s (git %s)\n", BN_VERSION, BN_GIT_COMMIT);
        return cmd_backends(0, NULL);
    }
    if (strcmp(cmd, "run") == 0) return cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "demo") == 0) return cmd_demo(argc - 1, argv + 1);
    if (strcmp(cmd, "backends") == 0) return cmd_backends(argc - 1, argv + 1);
    if (strcmp(cmd, "sweep") == 0) return cmd_sweep(argc - 1, argv + 1);
    if (strcmp(cmd, "merge") == 0) return cmd_merge(argc - 1, argv + 1);
    if (strcmp(cmd, "theory") == 0) return cmd_theory(argc - 1, argv + 1);
    if (strcmp(cmd, "plot") == 0) return cmd_plot(argc - 1, argv + 1);
    if (strcmp(cmd, "data") == 0) return cmd_data(argc - 1, argv + 1);
    fprintf(stderr, "bnspike: unknown command '%s' (see bnspike --help)\n", cmd);
    return EXIT_USAGE;
}
