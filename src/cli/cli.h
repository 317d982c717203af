/* Pieces of the command-line tool shared across its files. */
#ifndef BN_CLI_H
#define BN_CLI_H

#include "bnspike.h"

#include <stdio.h>

/* Exit codes: usage errors differ from failures of a well-formed request. */
enum { EXIT_RUN_FAILED = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 130 };

/* Prints "bnspike: <context>: <detail>" for a library failure; returns EXIT_RUN_FAILED. */
int cli_report(const char *context, bn_status st);
/* Prints "bnspike: <message>" plus a hint to --help; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));


/* Progress line on stderr: a bar when stderr is a terminal, plain lines otherwise. */
typedef struct {
    int enabled, tty;
    double t_start, t_last;
    int64_t seeds;
} cli_progress;
void cli_progress_init(cli_progress *p, int quiet, int64_t seeds);
/* Also returns non-zero once SIGINT/SIGTERM arrived (even when quiet). */
int cli_progress_cb(void *user, int64_t step, int64_t steps);
void cli_progress_done(cli_progress *p);

/* SIGINT/SIGTERM ask a running command to stop at the next step boundary
 * (signals.c); the signal number that arrived (0: none), and the exit code
 * 128 + signal (130 for SIGINT, 143 for SIGTERM). */
void cli_signals_install(void);
int cli_stop_signal(void);
int cli_signal_exit_code(void);

/* The whole command line (main() calls it). */
int bnspike_main(int argc, char **argv);
/* When set, every command returns 0 right after its options parsed and
 * checked, before it reads data or writes anything (the CLI fuzz target). */
extern int cli_parse_only;

int cmd_run(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_backends(int argc, char **argv);

#endif
