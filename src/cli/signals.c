/* SIGINT/SIGTERM during a run or sweep: the first one asks the run to stop at
 * the next step boundary (the progress callback returns non-zero), where a
 * checkpoint and the partial outputs are written; a second one terminates at
 * once, as the user presumably wants.  SIGXFSZ is ignored so that a file-size
 * limit (ulimit -f) turns into a write error with a message, not a kill. */
#include "cli.h"

#include <signal.h>
#include <string.h>

static volatile sig_atomic_t stop_signal = 0;

static void on_signal(int sig)
{
    if (stop_signal) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    stop_signal = sig;
}

void cli_signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGXFSZ, SIG_IGN);
}

int cli_stop_signal(void) { return (int)stop_signal; }

int cli_signal_exit_code(void) { return stop_signal ? 128 + (int)stop_signal : EXIT_INTERRUPTED; }
