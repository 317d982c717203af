/* `bnspike plot DIR`: PNG figures rendered by gnuplot (Debian's gnuplot-nox).
 *
 * A run folder (trajectories.npz, from `bnspike run` or `sweep
 * --save-trajectories`) gets the paper's Figure 3 panels for the chosen
 * trajectories: loss (log), |rho| (log) with the unit roundoff, eta_eff with
 * the stability line 2/|w_LS|_Sigma (kappa = 2), and sharpness with 2/eta_w.
 * A sweep folder (summary.csv) gets phase diagrams of chosen summary columns
 * over two swept settings (medians over the seeds in each cell).
 *
 * The data goes to text files in a temporary folder, a gnuplot script draws
 * them, and the PNG is written under a temporary name and renamed. */
#include "common.h"

#include <errno.h>
#include <math.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static const char plot_help[] =
    "usage: bnspike plot DIR [options]\n"
    "\n"
    "Draws a PNG with gnuplot (apt-get install gnuplot-nox; $GNUPLOT overrides\n"
    "the program).\n"
    "\n"
    "A run folder (DIR/trajectories.npz: `bnspike run`, or `bnspike sweep\n"
    "--save-trajectories`): the paper's Figure 3 panels for the chosen\n"
    "trajectories: loss (log scale), |rho| (log) with the unit roundoff u of the\n"
    "run's precision, eta_eff with the stability line 2/|w_LS|_Sigma (kappa = 2;\n"
    "square loss), and the sharpness lambda_max(H) with 2/eta_w (when the run\n"
    "recorded sharpness).  Dotted vertical lines mark each spike's onset and\n"
    "dashed ones its peak (from the file's events, else detected on the records\n"
    "when they hold every step).  Default output DIR/figure3.png.\n"
    "  --traj LIST              trajectories to draw, e.g. 0,3,5 (0)\n"
    "\n"
    "A sweep folder (DIR/summary.csv): phase diagrams, one panel per metric, over\n"
    "two swept settings; each cell shows the median over its seeds (and over any\n"
    "other swept setting); gray cells have no value (no spike), dark gray cells\n"
    "diverged in most seeds.  With one swept setting: the metric against it, one\n"
    "point per trajectory and the median line.  Default output DIR/phase.png.\n"
    "  --metric LIST            summary.csv columns (onset_step, rho_peak,\n"
    "                           loss_ratio, n_spikes, kappa_onset, th_onset_step,\n"
    "                           ...) or onset_minus_theory (onset_step -\n"
    "                           th_onset_step) or spike_fraction (share of seeds\n"
    "                           with a spike) (onset_step,rho_peak,loss_ratio)\n"
    "  --x NAME, --y NAME       the settings on the axes (eta-w, eta-gamma, gamma0,\n"
    "                           w0-scale; default: the first two --grid axes)\n"
    "  --figure3                draw Figure 3 of a sweep folder's\n"
    "                           trajectories.npz instead of phase diagrams\n"
    "\n"
    "  --out FILE.png           output file\n"
    "  --size WxH               image size in pixels (run 1200x900, sweep 520 per\n"
    "                           panel x 460)\n"
    "  --title TEXT             figure title (default: the folder and its data)\n"
    "  -h, --help               this text\n";

#define MAX_TRAJ 16
#define MAX_METRICS 8

typedef struct {
    const char *dir, *out, *title, *x, *y;
    const char *traj_list, *metrics;
    int width, height, figure3;
} plot_req;

/* ------------------------------------------------------------ small I/O */

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    size_t k;
    while (b && (k = fread(b + len, 1, cap - len - 1, f)) > 0) {
        len += k;
        if (cap - len < 2) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) {
                free(b);
                b = NULL;
            } else {
                b = nb;
            }
        }
    }
    fclose(f);
    if (b) b[len] = '\0';
    return b;
}

/* The first string value of "key": "..." in a JSON text (no unescaping beyond \" and \\),
 * after the first occurrence of `after` when that is not NULL. */
static int json_get_after(const char *json, const char *after, const char *key, char *out, size_t cap)
{
    if (!json) return 0;
    if (after) {
        json = strstr(json, after);
        if (!json) return 0;
    }
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\": \"", key);
    const char *p = strstr(json, pat);
    if (!p) return 0;
    p += strlen(pat);
    size_t k = 0;
    while (*p && *p != '"' && k + 1 < cap) {
        if (*p == '\\' && p[1]) p++;
        out[k++] = *p++;
    }
    out[k] = '\0';
    return 1;
}

static int json_get(const char *json, const char *key, char *out, size_t cap)
{
    return json_get_after(json, NULL, key, out, cap);
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* A numeric CSV with one header line. */
typedef struct {
    char **names;
    int ncols;
    double *v; /* nrows × ncols */
    int64_t nrows;
} table;

static void table_free(table *t)
{
    for (int c = 0; c < t->ncols; c++) free(t->names[c]);
    free(t->names);
    free(t->v);
    memset(t, 0, sizeof *t);
}

static int table_read(const char *path, table *t)
{
    memset(t, 0, sizeof *t);
    char *text = read_text(path);
    if (!text) {
        fprintf(stderr, "bnspike: cannot read %s: %s\n", path, strerror(errno));
        return EXIT_RUN_FAILED;
    }
    char *line = text, *nl = strchr(line, '\n');
    if (!nl) {
        fprintf(stderr, "bnspike: %s has no header line\n", path);
        free(text);
        return EXIT_RUN_FAILED;
    }
    *nl = '\0';
    t->ncols = 1;
    for (char *p = line; *p; p++) t->ncols += *p == ',';
    t->names = calloc((size_t)t->ncols, sizeof(char *));
    int c = 0;
    for (char *tok = strtok(line, ",\r"); tok && c < t->ncols; tok = strtok(NULL, ",\r")) t->names[c++] = strdup(tok);
    int64_t cap = 1024;
    t->v = malloc((size_t)cap * (size_t)t->ncols * sizeof(double));
    for (char *p = nl + 1; *p;) {
        char *e = strchr(p, '\n');
        if (e) *e = '\0';
        if (*p && *p != '\r') {
            if (t->nrows == cap) {
                cap *= 2;
                t->v = realloc(t->v, (size_t)cap * (size_t)t->ncols * sizeof(double));
            }
            double *row = t->v + (size_t)t->nrows * (size_t)t->ncols;
            char *q = p;
            for (int k = 0; k < t->ncols; k++) {
                char *end;
                row[k] = strtod(q, &end);
                if (end == q) row[k] = NAN;
                q = strchr(end, ',');
                if (!q) {
                    for (int m = k + 1; m < t->ncols; m++) row[m] = NAN;
                    break;
                }
                q++;
            }
            t->nrows++;
        }
        if (!e) break;
        p = e + 1;
    }
    free(text);
    return 0;
}

static int table_col(const table *t, const char *name)
{
    for (int c = 0; c < t->ncols; c++)
        if (t->names[c] && strcmp(t->names[c], name) == 0) return c;
    return -1;
}

/* ------------------------------------------------------------ gnuplot */

static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                                     "#17becf", "#8c564b", "#e377c2"};
#define NCOLORS (int)(sizeof colors / sizeof colors[0])

/* A gnuplot single-quoted string: ' doubles. */
static void gp_quote(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputc('\'', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

static void gp_terminal(FILE *f, int w, int h, const char *out_tmp)
{
    fprintf(f, "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
               "  set terminal pngcairo size %d,%d enhanced font 'Sans,10' background rgb 'white'\n"
               "} else {\n"
               "  set terminal png size %d,%d enhanced background rgb 'white'\n"
               "}\n", w, h, w, h);
    fprintf(f, "set output ");
    gp_quote(f, out_tmp);
    fprintf(f, "\nset datafile missing 'nan'\nset grid lc rgb '#e5e5e5'\nset key top right opaque box lc rgb '#cccccc'\n");
}

/* Runs gnuplot on the script, writing out_tmp, then renames it to out. */
static int run_gnuplot(const char *script, const char *out_tmp, const char *out)
{
    const char *prog = getenv("GNUPLOT");
    if (!prog || !*prog) prog = "gnuplot";
    char *argv[] = {(char *)prog, (char *)script, NULL};
    pid_t pid;
    int err = posix_spawnp(&pid, prog, NULL, NULL, argv, environ);
    if (err) {
        fprintf(stderr, "bnspike: cannot start %s: %s (bnspike plot needs gnuplot: apt-get install gnuplot-nox)\n",
                prog, strerror(err));
        return EXIT_RUN_FAILED;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !exists(out_tmp)) {
        fprintf(stderr, "bnspike: gnuplot failed (%s %s)\n", prog, script);
        unlink(out_tmp);
        return EXIT_RUN_FAILED;
    }
    if (rename(out_tmp, out) != 0) {
        fprintf(stderr, "bnspike: cannot rename %s to %s: %s\n", out_tmp, out, strerror(errno));
        unlink(out_tmp);
        return EXIT_RUN_FAILED;
    }
    return 0;
}

static char *make_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s/bnspike-plot-XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(buf);
    return d ? strdup(d) : NULL;
}

static void remove_tmpdir(const char *dir)
{
    char path[4300];
    static const char *const files[] = {"plot.gp", "cells.dat", "missing.dat", "diverged.dat", "points.dat",
                                        "median.dat"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    for (int m = 0; m < MAX_METRICS; m++)
        for (int k = 0; k < 4; k++) {
            snprintf(path, sizeof path, "%s/m%d_%d.dat", dir, m, k);
            unlink(path);
        }
    for (int j = 0; j < MAX_TRAJ; j++) {
        snprintf(path, sizeof path, "%s/traj%d.dat", dir, j);
        unlink(path);
        snprintf(path, sizeof path, "%s/sharp%d.dat", dir, j);
        unlink(path);
    }
    rmdir(dir);
}

static void default_out(char *buf, size_t cap, const char *dir, const char *name)
{
    snprintf(buf, cap, "%s/%s", dir, name);
}

/* Output paths: the file and its temporary name beside it. */
static int out_paths(const plot_req *r, const char *def_name, char *out, size_t cap, char *tmp, size_t tcap)
{
    if (r->out) snprintf(out, cap, "%s", r->out);
    else default_out(out, cap, r->dir, def_name);
    if (strchr(out, '\n')) {
        fprintf(stderr, "bnspike: output path has a newline\n");
        return EXIT_USAGE;
    }
    snprintf(tmp, tcap, "%s.tmp.%ld.png", out, (long)getpid());
    return 0;
}

/* ------------------------------------------------------------ Figure 3 */

typedef struct {
    bn_array step, loss, rho, eta_eff, records, eta_w, kscale, ev_traj, ev_onset, ev_peak, sharp, sharp_w,
        sharp_step;
    int64_t S, R;
} run_arrays;

static void run_arrays_free(run_arrays *a)
{
    bn_array *all[] = {&a->step, &a->loss, &a->rho, &a->eta_eff, &a->records, &a->eta_w, &a->kscale,
                       &a->ev_traj, &a->ev_onset, &a->ev_peak, &a->sharp, &a->sharp_w, &a->sharp_step};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bn_array_free(all[i]);
}

static int parse_traj_list(const char *s, int64_t *out, int *n, int64_t S)
{
    *n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v < 0) return cli_usage_error("plot", "--traj %s: expected a list of trajectory numbers", s);
        if (v >= S) return cli_usage_error("plot", "--traj %s: trajectory %lld does not exist (S = %lld)", s, v, (long long)S);
        if (*n == MAX_TRAJ) return cli_usage_error("plot", "--traj %s: at most %d trajectories", s, MAX_TRAJ);
        out[(*n)++] = v;
        if (*end == ',') end++;
        else if (*end) return cli_usage_error("plot", "--traj %s: expected a list of trajectory numbers", s);
        p = end;
    }
    if (*n == 0) return cli_usage_error("plot", "--traj: empty list");
    return 0;
}

/* κ's scale from the npz, else by loading the run's data again (checked by its checksum). */
static double find_kappa_scale(const run_arrays *a, const char *json)
{
    if (a->kscale.data && a->kscale.size >= 1 && isfinite(a->kscale.data[0])) return a->kscale.data[0];
    char loss_s[32], src[1200], sum[64];
    if (!json_get(json, "loss", loss_s, sizeof loss_s) || strcmp(loss_s, "square") != 0) return NAN;
    if (!json_get(json, "source", src, sizeof src) || !json_get(json, "checksum_fnv1a64", sum, sizeof sum)) return NAN;
    bn_dataset *ds = NULL;
    bn_status st = BN_ERR_ARG;
    if (strncmp(src, "generator ", 10) == 0) st = bn_dataset_generate(src + 10, BN_LOSS_SQUARE, &ds);
    else if (strncmp(src, "csv ", 4) == 0) st = bn_dataset_load_csv(src + 4, &ds);
    if (st) return NAN;
    char mine[32];
    snprintf(mine, sizeof mine, "%016llx", (unsigned long long)bn_dataset_checksum(ds));
    double B = NAN;
    if (strcmp(mine, sum) == 0 && bn_kappa_scale(ds, BN_LOSS_SQUARE, NULL, &B) != BN_OK) B = NAN;
    bn_dataset_free(ds);
    return B;
}

static int read_member(const char *path, const char *name, bn_array *a, int required)
{
    bn_status st = bn_npz_read(path, name, a);
    if (st && required) {
        fprintf(stderr, "bnspike: %s: %s\n", path, bn_last_error());
        return EXIT_RUN_FAILED;
    }
    if (st) memset(a, 0, sizeof *a);
    return 0;
}

static int plot_run(const plot_req *r, const char *npz)
{
    run_arrays a;
    memset(&a, 0, sizeof a);
    int rc = 0;
    rc = rc ? rc : read_member(npz, "step", &a.step, 1);
    rc = rc ? rc : read_member(npz, "loss", &a.loss, 1);
    rc = rc ? rc : read_member(npz, "rho", &a.rho, 1);
    rc = rc ? rc : read_member(npz, "eta_eff", &a.eta_eff, 1);
    if (rc) {
        run_arrays_free(&a);
        return rc;
    }
    read_member(npz, "records", &a.records, 0);
    read_member(npz, "eta_w", &a.eta_w, 0);
    read_member(npz, "kappa_scale", &a.kscale, 0);
    read_member(npz, "ev_traj", &a.ev_traj, 0);
    read_member(npz, "ev_onset_step", &a.ev_onset, 0);
    read_member(npz, "ev_peak_step", &a.ev_peak, 0);
    read_member(npz, "sharpness", &a.sharp, 0);
    read_member(npz, "sharpness_weighted", &a.sharp_w, 0);
    read_member(npz, "sharpness_step", &a.sharp_step, 0);
    if (a.step.ndim != 2) {
        fprintf(stderr, "bnspike: %s: 'step' is not an S×R array\n", npz);
        run_arrays_free(&a);
        return EXIT_RUN_FAILED;
    }
    a.S = a.step.shape[0];
    a.R = a.step.shape[1];
    int64_t traj[MAX_TRAJ];
    int nt = 0;
    rc = parse_traj_list(r->traj_list ? r->traj_list : "0", traj, &nt, a.S);
    char jpath[4200];
    snprintf(jpath, sizeof jpath, "%s/run.json", r->dir);
    char *json = read_text(jpath);
    char prec[16] = "fp64", dname[512] = "";
    json_get(json, "precision", prec, sizeof prec);
    json_get_after(json, "\"data\": {", "name", dname, sizeof dname);
    double u = strcmp(prec, "fp32") == 0 ? 0x1p-24 : 0x1p-53;
    double B = rc ? NAN : find_kappa_scale(&a, json);
    free(json);
    char out[4200], tmp_png[4300];
    if (!rc) rc = out_paths(r, "figure3.png", out, sizeof out, tmp_png, sizeof tmp_png);
    char *td = rc ? NULL : make_tmpdir();
    if (!rc && !td) {
        fprintf(stderr, "bnspike: cannot create a temporary folder: %s\n", strerror(errno));
        rc = EXIT_RUN_FAILED;
    }
    if (rc) {
        run_arrays_free(&a);
        return rc;
    }
    /* Data files, and the events to mark. */
    int have_sharp = 0;
    double emin = INFINITY, emax = 0;
    double onsets[MAX_TRAJ][8], peaks[MAX_TRAJ][8];
    int nev[MAX_TRAJ] = {0};
    bn_event_params ep;
    bn_event_params_default(&ep);
    for (int i = 0; i < nt; i++) {
        int64_t j = traj[i], R = a.R;
        int64_t cnt = a.records.data ? (int64_t)a.records.data[j] : R;
        char path[4300];
        snprintf(path, sizeof path, "%s/traj%d.dat", td, i);
        FILE *f = fopen(path, "w");
        if (!f) continue;
        int consecutive = 1;
        for (int64_t k = 0; k < cnt; k++) {
            double s = a.step.data[j * R + k];
            if (!isfinite(s)) continue;
            consecutive &= s == (double)k;
            double ee = a.eta_eff.data[j * R + k];
            if (ee > 0 && isfinite(ee)) {
                emin = fmin(emin, ee);
                emax = fmax(emax, ee);
            }
            fprintf(f, "%.17g %.17g %.17g %.17g\n", s, a.loss.data[j * R + k], fabs(a.rho.data[j * R + k]),
                    a.eta_eff.data[j * R + k]);
        }
        fclose(f);
        if (a.ev_traj.data && a.ev_onset.data && a.ev_peak.data) {
            for (int64_t e = 0; e < a.ev_traj.size && nev[i] < 8; e++)
                if ((int64_t)a.ev_traj.data[e] == j) {
                    onsets[i][nev[i]] = a.ev_onset.data[e];
                    peaks[i][nev[i]++] = a.ev_peak.data[e];
                }
        } else if (consecutive && cnt > 1) {
            bn_event_series s = {.rho = a.rho.data + j * R, .loss = a.loss.data + j * R,
                                 .eta_eff = a.eta_eff.data + j * R};
            bn_events *ev = NULL;
            if (bn_events_from_series(&s, 1, cnt, 0, &ep, strcmp(prec, "fp32") == 0 ? BN_FP32 : BN_FP64, NAN,
                                      &ev) == BN_OK) {
                for (int64_t e = 0; e < bn_events_count(ev, 0) && nev[i] < 8; e++) {
                    onsets[i][nev[i]] = (double)bn_events_get(ev, 0, e)->onset_step;
                    peaks[i][nev[i]++] = (double)bn_events_get(ev, 0, e)->peak_step;
                }
            }
            bn_events_free(ev);
        }
        if (a.sharp.data) {
            snprintf(path, sizeof path, "%s/sharp%d.dat", td, i);
            f = fopen(path, "w");
            if (!f) continue;
            int64_t Rs = a.sharp.ndim == 2 ? a.sharp.shape[1] : 0;
            double ew = a.eta_w.data ? a.eta_w.data[j] : NAN;
            for (int64_t k = 0; k < Rs; k++) {
                /* sharpness_step: one row for all (bnspike run) or one per
                 * trajectory (adaptive records of sweep --save-trajectories). */
                double s = a.sharp_step.data && a.sharp_step.size == Rs       ? a.sharp_step.data[k]
                           : a.sharp_step.data && a.sharp_step.size == a.S * Rs ? a.sharp_step.data[j * Rs + k]
                           : Rs == R                                            ? a.step.data[j * R + k]
                                                                                : NAN;
                double v = a.sharp.data[j * Rs + k];
                double vw = a.sharp_w.data && a.sharp_w.size == a.sharp.size ? a.sharp_w.data[j * Rs + k] / ew : NAN;
                if (!isfinite(s) || !isfinite(v)) continue;
                fprintf(f, "%.17g %.17g %.17g\n", s, v, vw);
                have_sharp = 1;
            }
            fclose(f);
        }
    }
    char script[4300];
    snprintf(script, sizeof script, "%s/plot.gp", td);
    FILE *g = fopen(script, "w");
    if (!g) {
        fprintf(stderr, "bnspike: cannot write %s\n", script);
        remove_tmpdir(td);
        free(td);
        run_arrays_free(&a);
        return EXIT_RUN_FAILED;
    }
    gp_terminal(g, r->width ? r->width : 1200, r->height ? r->height : 900, tmp_png);
    char title[1200];
    if (r->title) snprintf(title, sizeof title, "%s", r->title);
    else snprintf(title, sizeof title, "%s — %s", r->dir, dname[0] ? dname : "run");
    fprintf(g, "set multiplot layout 2,2 title ");
    gp_quote(g, title);
    fprintf(g, " noenhanced\nset xlabel 'step t'\n");
    /* Event markers: dotted at onsets, dashed at peaks, in each trajectory's colour. */
    int arrows = 0;
    for (int i = 0; i < nt; i++)
        for (int e = 0; e < nev[i]; e++) {
            fprintf(g, "set arrow %d from %.17g, graph 0 to %.17g, graph 1 nohead dt 3 lc rgb '%s'\n", ++arrows,
                    onsets[i][e], onsets[i][e], colors[i % NCOLORS]);
            fprintf(g, "set arrow %d from %.17g, graph 0 to %.17g, graph 1 nohead dt 2 lc rgb '%s'\n", ++arrows,
                    peaks[i][e], peaks[i][e], colors[i % NCOLORS]);
        }
#define FOR_TRAJ(fmt_using, extra)                                                                  \
    do {                                                                                            \
        for (int i = 0; i < nt; i++) {                                                              \
            fprintf(g, "%s'%s/traj%d.dat' using %s with lines lw 1.5 lc rgb '%s' title 'traj %lld'", \
                    i ? ", \\\n  " : "plot ", td, i, fmt_using, colors[i % NCOLORS], (long long)traj[i]); \
        }                                                                                           \
        fprintf(g, "%s\n", extra);                                                                  \
    } while (0)
    fprintf(g, "set title 'loss'\nset logscale y\nset format y '10^{%%L}'\nset ylabel 'L'\n");
    FOR_TRAJ("1:2", "");
    fprintf(g, "set title '|{/Symbol r}| = {/Symbol b}/{/Symbol a}  (gray: unit roundoff u = 2^{%d}, %s)'\n"
               "set ylabel '|{/Symbol r}|'\n", strcmp(prec, "fp32") == 0 ? -24 : -53, prec);
    char floor_line[200];
    snprintf(floor_line, sizeof floor_line, ", \\\n  %.17g with lines dt 2 lw 1.5 lc rgb '#888888' title 'u'", u);
    FOR_TRAJ("1:3", floor_line);
    fprintf(g, "unset logscale y\nset format y '%%g'\n");
    char kline[256] = "";
    if (isfinite(B) && B > 0) {
        fprintf(g, "set title '{/Symbol h}_{eff} = {/Symbol h}_w {/Symbol g} / ||w||^2_{/Symbol S}  "
                   "(dashed: stability line {/Symbol k} = {/Symbol h}_{eff} ||w_{LS}||_{/Symbol S} = 2)'\n");
        snprintf(kline, sizeof kline, ", \\\n  %.17g with lines dt 2 lw 1.5 lc rgb 'black' title '2/||w_{LS}||_{/Symbol S}'",
                 2.0 / B);
    } else {
        fprintf(g, "set title '{/Symbol h}_{eff} = {/Symbol h}_w {/Symbol g} / ||w||^2_{/Symbol S}  (no stability line: "
                   "logistic loss or the data could not be reloaded)'\n");
    }
    fprintf(g, "set ylabel '{/Symbol h}_{eff}'\n");
    /* A first step that blows ‖w‖ up can leave η_eff spanning decades: log scale then. */
    if (emax > 100 * emin) fprintf(g, "set logscale y\nset format y '10^{%%L}'\n");
    FOR_TRAJ("1:4", kline);
    fprintf(g, "unset logscale y\nset format y '%%g'\n");
    fprintf(g, "set title 'sharpness {/Symbol l}_{max}(H) and 2/{/Symbol h}_w (dashed)'\nset ylabel '{/Symbol l}_{max}'\n");
    if (have_sharp) {
        for (int i = 0; i < nt; i++) {
            double ew = a.eta_w.data ? a.eta_w.data[traj[i]] : NAN;
            fprintf(g, "%s'%s/sharp%d.dat' using 1:2 with linespoints pt 7 ps 0.4 lw 1.5 lc rgb '%s' title 'traj %lld'",
                    i ? ", \\\n  " : "plot ", td, i, colors[i % NCOLORS], (long long)traj[i]);
            if (a.sharp_w.data)
                fprintf(g, ", \\\n  '%s/sharp%d.dat' using 1:3 with lines dt 3 lw 1.5 lc rgb '%s' "
                           "title '{/Symbol l}_{max}(P^{1/2}HP^{1/2})/{/Symbol h}_w'", td, i, colors[i % NCOLORS]);
            if (isfinite(ew))
                fprintf(g, ", \\\n  %.17g with lines dt 2 lw 1.5 lc rgb '%s' title '2/{/Symbol h}_w'", 2.0 / ew,
                        colors[i % NCOLORS]);
        }
        fprintf(g, "\n");
    } else {
        fprintf(g, "unset arrow\nunset key\nunset border\nunset tics\nunset xlabel\nunset ylabel\nunset grid\n"
                   "set label 1 'sharpness not recorded in this run' at graph 0.5, 0.5 center\n"
                   "plot [0:1][0:1] -1 notitle\n");
    }
    fprintf(g, "unset multiplot\n");
#undef FOR_TRAJ
    fclose(g);
    rc = run_gnuplot(script, tmp_png, out);
    if (!rc) printf("wrote %s (Figure 3 panels, trajectories %s)\n", out, r->traj_list ? r->traj_list : "0");
    remove_tmpdir(td);
    free(td);
    run_arrays_free(&a);
    return rc;
}

/* ------------------------------------------------------- phase diagrams */

static const char *const axis_names[4] = {"eta_w", "eta_gamma", "gamma0", "w0_scale"};
static const char *const axis_labels[4] = {"{/Symbol h}_w", "{/Symbol h}_{/Symbol g}", "{/Symbol g}_0",
                                           "w_0 scale"};

static int axis_of(const char *s)
{
    if (!s) return -1;
    char b[32];
    snprintf(b, sizeof b, "%s", s);
    for (char *p = b; *p; p++)
        if (*p == '-') *p = '_';
    for (int a = 0; a < 4; a++)
        if (strcmp(b, axis_names[a]) == 0) return a;
    return -1;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Sorted distinct values of column c. */
static int64_t distinct(const table *t, int c, double **out)
{
    double *v = malloc((size_t)(t->nrows ? t->nrows : 1) * sizeof(double));
    for (int64_t i = 0; i < t->nrows; i++) v[i] = t->v[i * t->ncols + c];
    qsort(v, (size_t)t->nrows, sizeof(double), cmp_double);
    int64_t n = 0;
    for (int64_t i = 0; i < t->nrows; i++)
        if (n == 0 || v[i] != v[n - 1]) v[n++] = v[i];
    *out = v;
    return n;
}

static int64_t index_of(const double *vals, int64_t n, double x)
{
    for (int64_t i = 0; i < n; i++)
        if (vals[i] == x) return i;
    return -1;
}

static int geometric(const double *v, int64_t n)
{
    if (n < 3 || !(v[0] > 0)) return 0;
    double r = v[1] / v[0];
    for (int64_t i = 2; i < n; i++)
        if (fabs(v[i] / v[i - 1] / r - 1) > 1e-6) return 0;
    return r > 1.0 + 1e-9;
}

static double median(double *v, int64_t n)
{
    if (n == 0) return NAN;
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The metric of row i (NaN: no value). */
typedef struct {
    char name[64];
    int col, col2, kind; /* kind 0: column, 1: onset - theory, 2: spike fraction */
    int is_step;
} metric;

static double metric_value(const table *t, const metric *m, int64_t i)
{
    const double *row = t->v + (size_t)i * (size_t)t->ncols;
    if (m->kind == 2) return row[m->col] > 0 ? 1.0 : 0.0;
    if (m->kind == 1) {
        double a = row[m->col], b = row[m->col2];
        return (a >= 0 && b >= 0) ? a - b : NAN;
    }
    double v = row[m->col];
    if (m->is_step && v < 0) return NAN;
    return isfinite(v) ? v : NAN;
}

static int parse_metrics(const char *list, const table *t, metric *ms, int *n)
{
    *n = 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (*n == MAX_METRICS) return cli_usage_error("plot", "--metric: at most %d metrics", MAX_METRICS);
        metric *m = &ms[(*n)++];
        memset(m, 0, sizeof *m);
        snprintf(m->name, sizeof m->name, "%s", tok);
        if (strcmp(tok, "onset_minus_theory") == 0) {
            m->kind = 1;
            m->col = table_col(t, "onset_step");
            m->col2 = table_col(t, "th_onset_step");
            if (m->col < 0 || m->col2 < 0)
                return cli_usage_error("plot", "--metric onset_minus_theory: the sweep has no theory columns "
                                               "(square loss, without --no-theory)");
        } else if (strcmp(tok, "spike_fraction") == 0) {
            m->kind = 2;
            m->col = table_col(t, "n_spikes");
        } else {
            m->col = table_col(t, tok);
            if (m->col < 0) return cli_usage_error("plot", "--metric %s: no such column in summary.csv", tok);
            size_t L = strlen(tok);
            m->is_step = L > 5 && strcmp(tok + L - 5, "_step") == 0;
        }
    }
    return *n ? 0 : cli_usage_error("plot", "--metric: empty list");
}

static void fmt_tic(char *b, size_t cap, double v)
{
    snprintf(b, cap, "%.3g", v);
}

static void gp_index_tics(FILE *g, const char *axis, const double *vals, int64_t n)
{
    int64_t stride = n <= 8 ? 1 : (n + 7) / 8;
    fprintf(g, "set %stics (", axis);
    for (int64_t i = 0; i < n; i += stride) {
        char b[32];
        fmt_tic(b, sizeof b, vals[i]);
        fprintf(g, "%s'%s' %lld", i ? ", " : "", b, (long long)i);
    }
    fprintf(g, ")\n");
}

/* Colour-bar tics 1-2-5 per decade over [lo, hi] for log scales. */
static void gp_log_cbtics(FILE *g, double lo, double hi)
{
    fprintf(g, "set cbtics (");
    int first = 1, count = 0;
    double e0 = floor(log10(lo)), e1 = ceil(log10(hi));
    int step125 = e1 - e0 <= 3;
    for (double e = e0; e <= e1; e++)
        for (int k = 0; k < 3; k++) {
            double m = step125 ? (k == 0 ? 1 : k == 1 ? 2 : 5) : (k == 0 ? 1 : 0);
            if (m == 0) continue;
            double v = m * pow(10, e);
            if (v < lo * (1 - 1e-9) || v > hi * (1 + 1e-9)) continue;
            char b[32];
            snprintf(b, sizeof b, "%g", v);
            fprintf(g, "%s'%s' %.17g", first ? "" : ", ", b, v);
            first = 0;
            count++;
        }
    if (count < 2) fprintf(g, "%s'%.3g' %.17g, '%.3g' %.17g", first ? "" : ", ", lo, lo, hi, hi);
    fprintf(g, ")\n");
}

static int plot_sweep(const plot_req *r)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/summary.csv", r->dir);
    table t;
    int rc = table_read(path, &t);
    if (rc) return rc;
    /* Swept settings, in the order of the --grid flags (run.json). */
    int order[4], na = 0;
    int64_t nv[4];
    double *vals[4] = {0};
    snprintf(path, sizeof path, "%s/run.json", r->dir);
    char *json = read_text(path);
    const char *pos[4] = {0};
    for (int a = 0; a < 4; a++) {
        int c = table_col(&t, axis_names[a]);
        if (c < 0) continue;
        double *v;
        int64_t n = distinct(&t, c, &v);
        if (n > 1) {
            order[na++] = a;
            vals[a] = v;
            nv[a] = n;
            char pat[64];
            snprintf(pat, sizeof pat, "\"name\": \"%s\"", axis_names[a]);
            pos[a] = json ? strstr(json, pat) : NULL;
        } else {
            free(v);
        }
    }
    /* Sort the swept axes by where they appear in run.json's grid. */
    for (int i = 0; i < na; i++)
        for (int k = i + 1; k < na; k++) {
            const char *pi = pos[order[i]], *pk = pos[order[k]];
            if (pk && (!pi || pk < pi)) {
                int tmp = order[i];
                order[i] = order[k];
                order[k] = tmp;
            }
        }
    char dname[512] = "";
    json_get_after(json, "\"data\": {", "name", dname, sizeof dname);
    free(json);
    int ax = r->x ? axis_of(r->x) : (na > 0 ? order[0] : -1);
    int ay = r->y ? axis_of(r->y) : (na > 1 ? order[1] : -1);
    if (r->x && ax < 0) rc = cli_usage_error("plot", "--x %s: expected eta-w, eta-gamma, gamma0 or w0-scale", r->x);
    else if (r->y && ay < 0) rc = cli_usage_error("plot", "--y %s: expected eta-w, eta-gamma, gamma0 or w0-scale", r->y);
    else if (ax < 0) rc = cli_usage_error("plot", "%s/summary.csv sweeps no setting: nothing to draw over", r->dir);
    else if (!vals[ax]) rc = cli_usage_error("plot", "--x: %s is not swept in this folder", axis_names[ax]);
    else if (ay >= 0 && !vals[ay]) rc = cli_usage_error("plot", "--y: %s is not swept in this folder", axis_names[ay]);
    else if (ax == ay) rc = cli_usage_error("plot", "--x and --y name the same setting");
    metric ms[MAX_METRICS];
    int nm = 0;
    if (!rc) rc = parse_metrics(r->metrics ? r->metrics : "onset_step,rho_peak,loss_ratio", &t, ms, &nm);
    char out[4200], tmp_png[4300];
    if (!rc) rc = out_paths(r, "phase.png", out, sizeof out, tmp_png, sizeof tmp_png);
    char *td = rc ? NULL : make_tmpdir();
    if (!rc && !td) {
        fprintf(stderr, "bnspike: cannot create a temporary folder: %s\n", strerror(errno));
        rc = EXIT_RUN_FAILED;
    }
    if (rc) {
        for (int a = 0; a < 4; a++) free(vals[a]);
        table_free(&t);
        return rc;
    }
    int cx = table_col(&t, axis_names[ax]), cy = ay >= 0 ? table_col(&t, axis_names[ay]) : -1;
    int cdiv = table_col(&t, "diverged");
    int64_t nx = nv[ax], ny = ay >= 0 ? nv[ay] : 1;
    int64_t *cell = malloc((size_t)t.nrows * sizeof(int64_t));
    double *buf = malloc((size_t)(t.nrows + 1) * sizeof(double));
    for (int64_t i = 0; i < t.nrows; i++) {
        const double *row = t.v + (size_t)i * (size_t)t.ncols;
        int64_t xi = index_of(vals[ax], nx, row[cx]), yi = cy >= 0 ? index_of(vals[ay], ny, row[cy]) : 0;
        cell[i] = xi * ny + yi;
    }
    char script[4300];
    snprintf(script, sizeof script, "%s/plot.gp", td);
    FILE *g = fopen(script, "w");
    int W = r->width ? r->width : 520 * nm, H = r->height ? r->height : 460;
    gp_terminal(g, W, H, tmp_png);
    char title[1200];
    if (r->title) snprintf(title, sizeof title, "%s", r->title);
    else snprintf(title, sizeof title, "%s — %s, %lld trajectories", r->dir, dname[0] ? dname : "sweep",
                  (long long)t.nrows);
    fprintf(g, "set multiplot layout 1,%d title ", nm);
    gp_quote(g, title);
    fprintf(g, " noenhanced\n");
    for (int m = 0; m < nm; m++) {
        char f_cells[4300], f_miss[4300], f_div[4300], f_pts[4300], f_med[4300];
        snprintf(f_cells, sizeof f_cells, "%s/m%d_0.dat", td, m);
        snprintf(f_miss, sizeof f_miss, "%s/m%d_1.dat", td, m);
        snprintf(f_div, sizeof f_div, "%s/m%d_2.dat", td, m);
        snprintf(f_pts, sizeof f_pts, "%s/m%d_3.dat", td, m);
        snprintf(f_med, sizeof f_med, "%s/median.dat", td);
        FILE *fc = fopen(f_cells, "w"), *fm = fopen(f_miss, "w"), *fd = fopen(f_div, "w"), *fp = fopen(f_pts, "w");
        double lo = INFINITY, hi = -INFINITY;
        int64_t ncells = 0, nmiss = 0, ndiv = 0;
        for (int64_t c = 0; c < nx * ny; c++) {
            int64_t k = 0, total = 0, dv = 0;
            for (int64_t i = 0; i < t.nrows; i++) {
                if (cell[i] != c) continue;
                total++;
                if (cdiv >= 0 && t.v[(size_t)i * (size_t)t.ncols + (size_t)cdiv] > 0) dv++;
                double v = metric_value(&t, &ms[m], i);
                if (isfinite(v)) buf[k++] = v;
                if (ay < 0 && isfinite(v)) fprintf(fp, "%.17g %.17g\n", vals[ax][c / ny], v);
            }
            if (total == 0) continue;
            double md = ms[m].kind == 2 ? (k ? median(buf, k) : NAN) : median(buf, k);
            if (ms[m].kind == 2 && k) {
                double s = 0;
                for (int64_t q = 0; q < k; q++) s += buf[q];
                md = s / (double)k;
            }
            int64_t xi = c / ny, yi = c % ny;
            if (2 * dv > total) {
                fprintf(fd, "%lld %lld\n", (long long)xi, (long long)yi);
                ndiv++;
            } else if (isfinite(md)) {
                fprintf(fc, "%lld %lld %.17g %.17g\n", (long long)xi, (long long)yi, md, vals[ax][xi]);
                lo = fmin(lo, md);
                hi = fmax(hi, md);
                ncells++;
            } else {
                fprintf(fm, "%lld %lld\n", (long long)xi, (long long)yi);
                nmiss++;
            }
        }
        fclose(fc), fclose(fm), fclose(fd), fclose(fp);
        (void)f_med;
        int logc = lo > 0 && hi / lo > 20 && ms[m].kind != 1;
        fprintf(g, "reset\nset grid lc rgb '#e5e5e5'\nset key top right opaque box lc rgb '#cccccc'\n"
                   "set datafile missing 'nan'\n");
        fprintf(g, "set title ");
        char mt[700];
        snprintf(mt, sizeof mt, "%s%s", ms[m].name,
                 ms[m].kind == 2 ? " (share of seeds)" : " (median over seeds)");
        gp_quote(g, mt);
        fprintf(g, " noenhanced\n");
        if (ay >= 0) {
            fprintf(g, "set xrange [-0.5:%lld.5]\nset yrange [-0.5:%lld.5]\n", (long long)(nx - 1), (long long)(ny - 1));
            gp_index_tics(g, "x", vals[ax], nx);
            gp_index_tics(g, "y", vals[ay], ny);
            fprintf(g, "set xlabel '%s%s'\nset ylabel '%s%s'\nunset grid\n", axis_labels[ax],
                    geometric(vals[ax], nx) ? " (log spaced)" : "", axis_labels[ay],
                    geometric(vals[ay], ny) ? " (log spaced)" : "");
            if (ms[m].kind == 1) {
                double a = fmax(fabs(lo), fabs(hi));
                if (!(a > 0)) a = 1;
                fprintf(g, "set palette defined (-1 '#2166ac', 0 '#f7f7f7', 1 '#b2182b')\nset cbrange [%.17g:%.17g]\n",
                        -a, a);
            } else {
                fprintf(g, "set palette defined (0 '#440154', 1 '#3b528b', 2 '#21918c', 3 '#5ec962', 4 '#fde725')\n");
                if (ms[m].kind == 2) {
                    fprintf(g, "set cbrange [0:1]\n");
                } else if (logc) {
                    fprintf(g, "set logscale cb\nset cbrange [%.17g:%.17g]\n", lo, hi);
                    gp_log_cbtics(g, lo, hi);
                } else if (ncells && lo == hi) {
                    fprintf(g, "set cbrange [%.17g:%.17g]\n", lo - 0.5 - fabs(lo) * 0.01, hi + 0.5 + fabs(hi) * 0.01);
                }
            }
            fprintf(g, "set key outside bottom center horizontal noopaque nobox\n");
            int first = 1;
            fprintf(g, "plot ");
            if (ncells) {
                fprintf(g, "'%s' using 1:2:(0.5):(0.5):3 with boxxyerror fillcolor palette fillstyle solid noborder notitle", f_cells);
                first = 0;
            }
            if (nmiss) {
                fprintf(g, "%s'%s' using 1:2:(0.5):(0.5) with boxxyerror fillcolor rgb '#d0d0d0' fillstyle solid noborder title 'no value'",
                        first ? "" : ", \\\n  ", f_miss);
                first = 0;
            }
            if (ndiv) {
                fprintf(g, "%s'%s' using 1:2:(0.5):(0.5) with boxxyerror fillcolor rgb '#606060' fillstyle solid noborder title 'diverged'",
                        first ? "" : ", \\\n  ", f_div);
                first = 0;
            }
            if (first) fprintf(g, "1/0 notitle");
            fprintf(g, "\n");
        } else {
            fprintf(g, "set xlabel '%s'\n", axis_labels[ax]);
            if (geometric(vals[ax], nx))
                fprintf(g, "set logscale x\nset xrange [%.17g:%.17g]\n", vals[ax][0] / 1.15, vals[ax][nx - 1] * 1.15);
            else
                fprintf(g, "set xrange [%.17g:%.17g]\n", vals[ax][0] - 0.05 * (vals[ax][nx - 1] - vals[ax][0]),
                        vals[ax][nx - 1] + 0.05 * (vals[ax][nx - 1] - vals[ax][0]));
            if (logc) fprintf(g, "set logscale y\n");
            if (ncells)
                fprintf(g, "plot '%s' using 1:2 with points pt 7 ps 0.6 lc rgb '#1f77b4' title 'trajectories', \\\n"
                           "  '%s' using 4:3 with lines lw 2 lc rgb '#d62728' title 'median'\n", f_pts, f_cells);
            else
                fprintf(g, "set label 1 'no values' at graph 0.5,0.5 center\nplot [0:1][0:1] -1 notitle\n");
        }
    }
    fprintf(g, "unset multiplot\n");
    fclose(g);
    rc = run_gnuplot(script, tmp_png, out);
    if (!rc) {
        printf("wrote %s (", out);
        for (int m = 0; m < nm; m++) printf("%s%s", m ? ", " : "", ms[m].name);
        if (ay >= 0) printf(" over %s × %s)\n", axis_names[ax], axis_names[ay]);
        else printf(" against %s)\n", axis_names[ax]);
    }
    remove_tmpdir(td);
    free(td);
    free(cell);
    free(buf);
    for (int a = 0; a < 4; a++) free(vals[a]);
    table_free(&t);
    return rc;
}

/* ----------------------------------------------------------------- main */

int cmd_plot(int argc, char **argv)
{
    plot_req r;
    memset(&r, 0, sizeof r);
    enum { P_OUT = 256, P_TRAJ, P_METRIC, P_X, P_Y, P_SIZE, P_TITLE, P_FIG3 };
    static const struct option opts[] = {
        {"out", required_argument, 0, P_OUT},       {"traj", required_argument, 0, P_TRAJ},
        {"metric", required_argument, 0, P_METRIC}, {"x", required_argument, 0, P_X},
        {"y", required_argument, 0, P_Y},           {"size", required_argument, 0, P_SIZE},
        {"title", required_argument, 0, P_TITLE},   {"figure3", no_argument, 0, P_FIG3},
        {"help", no_argument, 0, 'h'},              {0, 0, 0, 0}};
    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (opt) {
        case P_OUT: r.out = optarg; break;
        case P_TRAJ: r.traj_list = optarg; break;
        case P_METRIC: r.metrics = optarg; break;
        case P_X: r.x = optarg; break;
        case P_Y: r.y = optarg; break;
        case P_TITLE: r.title = optarg; break;
        case P_FIG3: r.figure3 = 1; break;
        case P_SIZE: {
            char *end;
            long w = strtol(optarg, &end, 10), h = 0;
            if (*end == 'x' || *end == 'X') h = strtol(end + 1, &end, 10);
            if (*end || w < 100 || h < 100 || w > 10000 || h > 10000)
                return cli_usage_error("plot", "--size %s: expected WxH, each 100..10000", optarg);
            r.width = (int)w;
            r.height = (int)h;
            break;
        }
        case 'h': fputs(plot_help, stdout); return 0;
        case ':': return cli_usage_error("plot", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage_error("plot", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return cli_usage_error("plot", "no folder given");
    if (optind + 1 < argc) return cli_usage_error("plot", "unexpected argument '%s'", argv[optind + 1]);
    r.dir = argv[optind];
    if (cli_parse_only) return 0;
    char npz[4200], csv[4200];
    snprintf(npz, sizeof npz, "%s/trajectories.npz", r.dir);
    snprintf(csv, sizeof csv, "%s/summary.csv", r.dir);
    int has_npz = exists(npz), has_csv = exists(csv);
    if (!has_npz && !has_csv) {
        fprintf(stderr, "bnspike: %s holds neither trajectories.npz (a run) nor summary.csv (a sweep)\n", r.dir);
        return EXIT_RUN_FAILED;
    }
    if (has_csv && !r.figure3 && !r.traj_list) return plot_sweep(&r);
    if (!has_npz) return cli_usage_error("plot", "%s has no trajectories.npz (sweep with --save-trajectories)", r.dir);
    return plot_run(&r, npz);
}
