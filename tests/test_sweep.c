/* `bnspike sweep` and bn_sweep_run: a 2×3×2 grid × 4 seeds gives the same
 * rows as the same 48 trajectories run one by one with `bnspike run`; batch
 * sizes do not change results; outputs, progress, errors, and the real data
 * sets in data/. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test_support.h"

#define DEMO_SPEC "whitened:n=400,d=20,noise=0.5,wnorm=4,seed=1"

static char *tmp;
static void setup(void) { tmp = ts_tmpdir(); }
static void teardown(void)
{
    ts_rmdir(tmp);
    free(tmp);
}
TestSuite(sweep, .init = setup, .fini = teardown);

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* A numeric CSV: header names and rows. */
typedef struct {
    char names[128][48];
    int ncols;
    double *v;
    int nrows;
} csv_t;

static void csv_read(const char *path, csv_t *c)
{
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "r");
    cr_assert(f, "cannot open %s", path);
    static char line[1 << 16];
    cr_assert(fgets(line, sizeof line, f));
    line[strcspn(line, "\r\n")] = 0;
    for (char *tok = strtok(line, ","); tok && c->ncols < 128; tok = strtok(NULL, ","))
        snprintf(c->names[c->ncols++], 48, "%s", tok);
    int cap = 64;
    c->v = malloc((size_t)cap * (size_t)c->ncols * sizeof(double));
    while (fgets(line, sizeof line, f)) {
        if (c->nrows == cap) c->v = realloc(c->v, (size_t)(cap *= 2) * (size_t)c->ncols * sizeof(double));
        char *p = line;
        for (int k = 0; k < c->ncols; k++) {
            c->v[c->nrows * c->ncols + k] = strtod(p, &p);
            if (*p == ',') p++;
        }
        c->nrows++;
    }
    fclose(f);
}

static double csv_get(const csv_t *c, int row, const char *name)
{
    for (int k = 0; k < c->ncols; k++)
        if (strcmp(c->names[k], name) == 0) return c->v[row * c->ncols + k];
    cr_assert_fail("summary.csv has no column %s", name);
    return NAN;
}

static void read_npz(const char *path, const char *name, bn_array *a)
{
    cr_assert_eq(bn_npz_read(path, name, a), BN_OK, "%s[%s]: %s", path, name, bn_last_error());
}

/* The acceptance test: a 2×3×2 grid × 4 seeds against 48 single runs. */
Test(sweep, grid_rows_equal_single_runs)
{
    char cmd[4096], *out = NULL;
    const char *common = "--data " DEMO_SPEC " --w0-align 1 --w0-noise 0.05 --eta-gamma 0.05 --steps 150 "
                         "--backend cpu --threads 1 --quiet";
    snprintf(cmd, sizeof cmd,
             "'%s' sweep %s --seeds 4 --seed 3 --grid eta-w=0.9,1.5 --grid gamma0=0.05,0.1,0.3 "
             "--grid w0-scale=0.5,1 --batch 7 --out '%s/sw'", ts_cli(), common, tmp);
    int rc = ts_run(cmd, &out);
    cr_assert_eq(rc, 0, "sweep failed:\n%s", out);
    free(out);
    char path[1200];
    snprintf(path, sizeof path, "%s/sw/summary.csv", tmp);
    csv_t c;
    csv_read(path, &c);
    cr_assert_eq(c.nrows, 48);
    bn_dataset *ds;
    cr_assert_eq(bn_dataset_generate(DEMO_SPEC, BN_LOSS_SQUARE, &ds), BN_OK);
    double B;
    cr_assert_eq(bn_kappa_scale(ds, BN_LOSS_SQUARE, NULL, &B), BN_OK);
    bn_event_params p;
    bn_event_params_default(&p);
    double etas[2] = {0.9, 1.5}, g0s[3] = {0.05, 0.1, 0.3}, scales[2] = {0.5, 1};
    int spiking = 0;
    for (int j = 0; j < 48; j++) {
        int g = j / 4, s = j % 4;
        double eta = etas[g / 6], g0 = g0s[(g / 2) % 3], sc = scales[g % 2];
        /* Settings and seed of the row. */
        cr_expect_eq(csv_get(&c, j, "traj"), j);
        cr_expect_eq(csv_get(&c, j, "grid_index"), g);
        cr_expect_eq(csv_get(&c, j, "seed"), 3 + s);
        cr_expect_eq(csv_get(&c, j, "eta_w"), eta);
        cr_expect_eq(csv_get(&c, j, "gamma0"), g0);
        cr_expect_eq(csv_get(&c, j, "w0_scale"), sc);
        cr_expect_eq(csv_get(&c, j, "eta_gamma"), 0.05);
        snprintf(cmd, sizeof cmd, "'%s' run %s --eta-w %.17g --gamma0 %.17g --w0-scale %.17g --seed %d --out '%s/r'",
                 ts_cli(), common, eta, g0, sc, 3 + s, tmp);
        rc = ts_run(cmd, &out);
        cr_assert_eq(rc, 0, "run failed:\n%s", out);
        free(out);
        snprintf(path, sizeof path, "%s/r/trajectories.npz", tmp);
        bn_array f[6];
        const char *names[6] = {"rho", "loss", "eta_eff", "w_norm", "alpha_sigma", "beta_sigma"};
        for (int k = 0; k < 6; k++) read_npz(path, names[k], &f[k]);
        bn_event_series ser = {.rho = f[0].data, .loss = f[1].data, .eta_eff = f[2].data, .w_norm = f[3].data,
                               .alpha_sigma = f[4].data, .beta_sigma = f[5].data};
        bn_events *ev;
        cr_assert_eq(bn_events_from_series(&ser, 1, f[0].size, 0, &p, BN_FP64, B, &ev), BN_OK);
        const bn_traj_summary *sum = bn_events_summary(ev, 0);
        cr_expect_eq(csv_get(&c, j, "n_spikes"), sum->n_spikes, "traj %d: n_spikes", j);
        cr_expect_eq(csv_get(&c, j, "diverged"), sum->diverged, "traj %d: diverged", j);
        const bn_spike_event *e = bn_events_get(ev, 0, 0);
        if (e) {
            spiking++;
            const char *steps[] = {"onset_step", "peak_step", "end_step", "confirm_step", "loss_before_step"};
            const bn_struct_field *fl;
            int nfl = bn_spike_event_fields(&fl);
            for (int k = 0; k < nfl; k++) {
                double x = csv_get(&c, j, fl[k].name), y = bn_struct_field_get(e, &fl[k]);
                int is_step = 0;
                for (size_t q = 0; q < sizeof steps / sizeof steps[0]; q++) is_step |= strcmp(fl[k].name, steps[q]) == 0;
                if (is_step || fl[k].type != BN_SF_F64) {
                    cr_expect_eq(x, y, "traj %d %s: sweep %g, run %g", j, fl[k].name, x, y);
                } else if (!(isnan(x) && isnan(y))) {
                    /* Equal up to the rounding of a different batch width,
                     * amplified by u/ρ_min along the edge (see test_theory.c). */
                    double tol = fmax(1e-12, 64 * ldexp(1, -53) / e->rho_min);
                    cr_expect_leq(fabs(x - y), tol * fabs(y), "traj %d %s: sweep %.17g, run %.17g", j, fl[k].name, x, y);
                }
            }
        } else {
            cr_expect_eq(csv_get(&c, j, "onset_step"), -1);
            cr_expect(isnan(csv_get(&c, j, "rho_peak")));
        }
        bn_events_free(ev);
        for (int k = 0; k < 6; k++) bn_array_free(&f[k]);
    }
    cr_expect_geq(spiking, 24, "most of this grid should spike (%d of 48)", spiking);
    /* The other outputs exist; run.json records the grid. */
    const char *files[] = {"summary.json", "events.csv", "theory-events.csv", "run.json"};
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        snprintf(path, sizeof path, "%s/sw/%s", tmp, files[k]);
        cr_expect(exists(path), "missing %s", path);
    }
    snprintf(cmd, sizeof cmd, "grep -c '\"grid_points\": 12' '%s/sw/run.json'", tmp);
    cr_expect_eq(ts_run(cmd, NULL), 0, "run.json lacks grid_points");
    free(c.v);
    bn_dataset_free(ds);
}

/* Batch width changes nothing but rounding: events and record counts of the
 * same sweep run as 1 batch and as batches of 3. */
Test(sweep, batch_size_does_not_change_results)
{
    bn_dataset *ds;
    cr_assert_eq(bn_dataset_generate(DEMO_SPEC, BN_LOSS_SQUARE, &ds), BN_OK);
    bn_run_config c;
    bn_run_config_default(&c);
    c.backend = BN_BACKEND_CPU;
    c.threads = 1;
    c.steps = 200;
    c.w0_align = 1;
    c.w0_noise = 0.05;
    enum { N = 8 };
    double eta[N], sc[N];
    uint64_t ids[N];
    for (int j = 0; j < N; j++) {
        eta[j] = 0.5 + 0.25 * j;
        sc[j] = j % 2 ? 0.5 : 2.0;
        ids[j] = (uint64_t)(j % 3);
    }
    bn_sweep_spec sp = {.count = N, .eta_w = eta, .w0_scale = sc, .seed_id = ids, .theory = 1,
                        .rec = {.every = 25, .keep = 1}};
    bn_event_params_default(&sp.rec.events);
    bn_sweep *a, *b;
    cr_assert_eq(bn_sweep_run(ds, &c, &sp, NULL, NULL, &a), BN_OK, "%s", bn_last_error());
    sp.batch = 3;
    cr_assert_eq(bn_sweep_run(ds, &c, &sp, NULL, NULL, &b), BN_OK, "%s", bn_last_error());
    cr_expect_eq(bn_sweep_batches(a), 1);
    cr_expect_eq(bn_sweep_batches(b), 3);
    const bn_events *ea = bn_sweep_events(a), *eb = bn_sweep_events(b);
    for (int j = 0; j < N; j++) {
        cr_expect_eq(bn_events_count(ea, j), bn_events_count(eb, j), "traj %d", j);
        for (int64_t k = 0; k < bn_events_count(ea, j) && k < bn_events_count(eb, j); k++) {
            const bn_spike_event *x = bn_events_get(ea, j, k), *y = bn_events_get(eb, j, k);
            cr_expect_eq(x->onset_step, y->onset_step);
            cr_expect_eq(x->peak_step, y->peak_step);
            cr_expect_float_eq(x->rho_peak, y->rho_peak, fmax(1e-12, 64 * ldexp(1, -53) / x->rho_min) * y->rho_peak);
        }
        cr_expect_eq(bn_sweep_record_counts(a)[j], bn_sweep_record_counts(b)[j]);
        /* The theory ran from the same start. */
        cr_expect_eq(bn_sweep_alpha0_sigma(a)[j], bn_sweep_alpha0_sigma(b)[j]);
    }
    /* Seed id 0 at w0_scale 2 and 0.5: the starts differ only by the scale. */
    const double *w0 = bn_sweep_w0(a);
    for (int i = 0; i < 20; i++) cr_expect_float_eq(w0[0 * 20 + i], 4 * w0[3 * 20 + i], 1e-15);
    bn_sweep_free(a);
    bn_sweep_free(b);
    bn_dataset_free(ds);
}

static void expect_fail(const char *args, int rc_expected, const char *needle)
{
    char cmd[4096], *out = NULL, dir[1100];
    snprintf(dir, sizeof dir, "%s/bad", tmp);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' sweep %s --quiet --out '%s'", tmp, ts_cli(), args, dir);
    int rc = ts_run(cmd, &out);
    cr_expect_eq(rc, rc_expected, "`sweep %s` exited %d:\n%s", args, rc, out);
    cr_expect(strstr(out, needle) != NULL, "`sweep %s`: message lacks '%s':\n%s", args, needle, out);
    cr_expect(!exists(dir), "`sweep %s` failed but left %s", args, dir);
    free(out);
}

Test(sweep, bad_requests_fail_cleanly)
{
    expect_fail("--data whitened --grid eta-x=1,2", 2, "unknown name 'eta-x'");
    expect_fail("--data whitened --grid eta-w=log:0:1:5", 2, "log spacing needs A, B > 0");
    expect_fail("--data whitened --grid eta-w=lin:1:2", 2, "expected lin:A:B:N");
    expect_fail("--data whitened --grid eta-w=1,x", 2, "not a list of finite numbers");
    expect_fail("--data whitened --grid eta-w=1 --grid eta_w=2", 2, "already on the grid");
    expect_fail("--data whitened --w0 w.npy", 2, "--w0 is not available");
    expect_fail("--grid eta-w=1", 2, "no data given");
    expect_fail("--data whitened --min-rise 1", 2, "--min-rise must be > 1");
    expect_fail("--data whitened --grid eta-w=-1,1 --steps 5", 1, "eta_w must be a finite number > 0");
    expect_fail("--csv ../../nonexistent.csv", 1, "nonexistent.csv");
}

/* Progress: plain lines when stderr is not a terminal; --quiet silences it. */
Test(sweep, progress_lines_and_quiet)
{
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd, "('%s' sweep --data whitened --steps 50 --threads 1 --grid eta-w=0.5,1 --out '%s/p' 2>&1 >/dev/null)",
             ts_cli(), tmp);
    cr_assert_eq(ts_run(cmd, &out), 0, "%s", out);
    cr_expect(strstr(out, "progress: step 50/50") != NULL, "no progress line:\n%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' sweep --data whitened --steps 50 --threads 1 --grid eta-w=0.5,1 --quiet --out '%s/q'",
             ts_cli(), tmp);
    cr_assert_eq(ts_run(cmd, &out), 0, "%s", out);
    cr_expect_eq(strlen(out), 0, "--quiet printed:\n%s", out);
    free(out);
}

/* --save-trajectories: adaptive records, settings and events in the npz. */
Test(sweep, saved_trajectories)
{
    char cmd[4096], *out = NULL, path[1200];
    snprintf(cmd, sizeof cmd,
             "'%s' sweep --data " DEMO_SPEC " --w0-scale 0.5 --w0-align 1 --w0-noise 0.05 --steps 300 --every 100 "
             "--seeds 2 --grid eta-w=0.9,1.2 --save-trajectories --window-pre 3 --window-post 4 --threads 1 --quiet "
             "--out '%s/s'", ts_cli(), tmp);
    cr_assert_eq(ts_run(cmd, &out), 0, "%s", out);
    free(out);
    snprintf(path, sizeof path, "%s/s/trajectories.npz", tmp);
    bn_array step, rec, on, end, tr, eta;
    read_npz(path, "step", &step);
    read_npz(path, "records", &rec);
    read_npz(path, "ev_onset_step", &on);
    read_npz(path, "ev_end_step", &end);
    read_npz(path, "ev_traj", &tr);
    read_npz(path, "eta_w", &eta);
    cr_assert_eq(step.ndim, 2);
    cr_expect_eq(step.shape[0], 4);
    cr_expect_eq(eta.data[0], 0.9);
    cr_expect_eq(eta.data[3], 1.2);
    int64_t R = step.shape[1];
    for (int64_t e = 0; e < on.size; e++) {
        int64_t j = (int64_t)tr.data[e];
        int64_t lo = (int64_t)on.data[e] - 3, hi = end.data[e] >= 0 ? (int64_t)end.data[e] + 4 : 300;
        for (int64_t t = lo < 0 ? 0 : lo; t <= hi && t <= 300; t++) {
            int found = 0;
            for (int64_t k = 0; k < (int64_t)rec.data[j]; k++) found |= step.data[j * R + k] == (double)t;
            cr_expect(found, "traj %lld: step %lld inside the window of the spike at %g is not recorded",
                      (long long)j, (long long)t, on.data[e]);
        }
    }
    for (int64_t j = 0; j < 4; j++) {
        cr_expect_eq(step.data[j * R], 0);
        cr_expect_eq(step.data[j * R + (int64_t)rec.data[j] - 1], 300);
    }
    bn_array_free(&step), bn_array_free(&rec), bn_array_free(&on), bn_array_free(&end), bn_array_free(&tr);
    bn_array_free(&eta);
}

/* The real data sets of data/ (scikit-learn's tables): diabetes (square) and
 * wine classes 0 v 1 (logistic, separable) run; breast cancer is refused by the
 * hard-margin SVM (not separable through the origin after centering). */
Test(sweep, real_data_files)
{
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' sweep --csv data/diabetes.csv --steps 100 --grid eta-w=0.1,1 --threads 1 --quiet --out '%s/d'",
             ts_cli(), tmp);
    cr_expect_eq(ts_run(cmd, &out), 0, "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd,
             "'%s' sweep --csv data/wine-0v1.csv --loss logistic --steps 100 --grid eta-w=0.1,1 --threads 1 --quiet "
             "--out '%s/w'", ts_cli(), tmp);
    cr_expect_eq(ts_run(cmd, &out), 0, "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' sweep --csv data/breast-cancer.csv --loss logistic --steps 10 --quiet --out '%s/b'",
             ts_cli(), tmp);
    cr_expect_eq(ts_run(cmd, &out), 1);
    cr_expect(strstr(out, "not linearly separable") != NULL, "%s", out);
    free(out);
    char path[1200];
    snprintf(path, sizeof path, "%s/w/summary.csv", tmp);
    csv_t c;
    csv_read(path, &c);
    cr_expect_eq(c.nrows, 2);
    cr_expect(isnan(csv_get(&c, 0, "kappa_max")), "no κ for logistic loss");
    free(c.v);
}
