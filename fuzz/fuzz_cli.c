/* libFuzzer target: the command-line parser.
 *
 * The input is a command line: the first byte picks the subcommand (run,
 * sweep, theory, plot, data, demo, backends, or none: the first word is the
 * command; byte % 8, so the digits '0'..'7' in text seed files), the rest is
 * split into argv words at NUL and newline bytes.
 * cli_parse_only makes every command return right after its options are
 * parsed and checked, before it reads data or writes a file. */
#include "cli/cli.h"

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const commands[] = {"run", "sweep", "theory", "plot", "data", "demo", "backends"};
enum { NCOMMANDS = sizeof commands / sizeof commands[0], MAX_WORDS = 256 };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    cli_parse_only = 1;
    /* Help and usage texts are not what is being tested (libFuzzer's
     * -close_fd_mask=2 hides stderr, mk/fuzz.mk passes it). */
    if (!freopen("/dev/null", "w", stdout)) return 0;
    return 0;
}

/* glibc's getopt keeps a pointer into the previous argv (a half-read "-abc"
 * cluster) that `optind = 1` does not clear; optind = 0 makes the next call
 * start afresh.  A one-shot process never parses twice, so only the harness
 * needs this. */
static void reset_getopt(void)
{
    static char prog[] = "bnspike";
    static char *none[] = {prog, NULL};
    optind = 0;
    (void)getopt(1, none, "");
    optind = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cli_parse_only = 1;
    if (size == 0) return 0;
    /* The words: the bytes after the first, split at NUL and newline bytes
     * (an extra NUL at the end terminates the last word). */
    size_t n = size - 1;
    char *buf = malloc(n + 1);
    char **argv = malloc((MAX_WORDS + 3) * sizeof *argv);
    if (!buf || !argv) {
        free(buf);
        free(argv);
        return 0;
    }
    if (n) memcpy(buf, data + 1, n);
    buf[n] = '\0';
    int argc = 0;
    static char prog[] = "bnspike";
    argv[argc++] = prog;
    unsigned pick = data[0] % (NCOMMANDS + 1);
    if (pick < NCOMMANDS) argv[argc++] = (char *)commands[pick];
    size_t start = 0;
    for (size_t i = 0; i < n && argc < MAX_WORDS + 2; i++) {
        if (buf[i] == '\0' || buf[i] == '\n') {
            /* An empty word ends at a NUL ("--out\n\0"); runs of newlines
             * are one separator, so text seed files read naturally. */
            if (i > start || buf[i] == '\0') argv[argc++] = buf + start;
            buf[i] = '\0';
            start = i + 1;
        }
    }
    if (start < n && argc < MAX_WORDS + 2) argv[argc++] = buf + start;
    argv[argc] = NULL;
    reset_getopt();
    (void)bnspike_main(argc, argv);
    reset_getopt();
    free(argv);
    free(buf);
    return 0;
}
