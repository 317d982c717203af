/* Progress on stderr for long runs: a redrawn bar with steps/s and ETA on a
 * terminal, a plain line every few seconds otherwise (logs, batch jobs). */
#include "cli.h"

#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_progress_init(cli_progress *p, int quiet, int64_t seeds)
{
    p->enabled = !quiet;
    p->tty = isatty(STDERR_FILENO);
    p->t_start = p->t_last = now();
    p->seeds = seeds;
}

static void fmt_eta(char *buf, size_t len, double s)
{
    if (s < 0 || s > 1e7) snprintf(buf, len, "--");
    else if (s < 60) snprintf(buf, len, "%.0fs", s);
    else if (s < 3600) snprintf(buf, len, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, len, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

int cli_progress_cb(void *user, int64_t step, int64_t steps)
{
    cli_progress *p = user;
    if (cli_stop_signal()) {
        if (p->enabled) fprintf(stderr, "%sbnspike: stopping at step %lld of %lld (signal %d)\n", p->tty ? "\n" : "",
                                (long long)step, (long long)steps, cli_stop_signal());
        return 1;
    }
    if (!p->enabled) return 0;
    double t = now();
    double min_gap = p->tty ? 0.1 : 5.0;
    if (step < steps && t - p->t_last < min_gap) return 0;
    p->t_last = t;
    double el = t - p->t_start;
    double rate = el > 0 ? (double)step / el : 0;
    char eta[32];
    fmt_eta(eta, sizeof eta, rate > 0 ? (double)(steps - step) / rate : -1);
    double frac = steps > 0 ? (double)step / (double)steps : 1;
    if (p->tty) {
        char bar[31];
        int fill = (int)(frac * 30);
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r[%s] %5.1f%% step %lld/%lld  %.3g steps/s  %.3g seed-steps/s  ETA %s ", bar,
                100 * frac, (long long)step, (long long)steps, rate, rate * (double)p->seeds, eta);
    } else {
        fprintf(stderr, "progress: step %lld/%lld (%.1f%%)  %.3g steps/s  ETA %s\n", (long long)step,
                (long long)steps, 100 * frac, rate, eta);
    }
    fflush(stderr);
    return 0;
}

void cli_progress_done(cli_progress *p)
{
    if (p->enabled && p->tty) fprintf(stderr, "\n");
}
