/* Sharpness benchmark (issue 3): one batched power-iteration step (one exact
 * HVP = two matrix products + the column pass, the vector update power_update
 * and the O(S) control download, exactly what bn_sharp_power runs per
 * iteration) against one GD step, side by side, same backend, same threads.
 *
 *   build/bench_sharpness [--threads N] [--quick] [--fp32]
 *
 * GD step (ops): the four primitives of a step as step.c calls them
 *   (U = Xc·W, forward_columns, G = Xcᵀ·Q, update_columns), no records;
 * GD step (run): ms per step of a bn_sim run recording every step (as
 *   bench_cpu measures it), i.e. what a user's run costs per step;
 * power step: bn_sharp_power_iteration, every column active.
 * The target of the issue is power/GD(ops) ≤ 1.2.  Times are medians over
 * repetitions of ~0.1 s each; compare ratios, not absolute numbers, on a
 * shared machine.
 *
 *   build/bench_sharpness --runs [--threads N] [--reps R] [--steps T] [--tol X] [--fp32]
 *                         [--exact-cols N (32)] [--only-s256] [--default-only: that variant alone]
 *                         [--logistic: the logistic loss (the general HVPs in every variant)]
 *
 * Whole runs (issue 7), on the bench table's paper case (hilbert:n=64,d=256,
 * noise=0.01,seed=1, square loss, η_w 0.9, η_γ 0.05, γ0 0.1, w0 projected on
 * the row space, records every 10 steps) at S = 256 and S = 1: the time of a
 * run without sharpness and with --sharpness-every 10, repetitions
 * interleaved (median, min), for seven engine variants side by side: the
 * first algorithm (every column in the batch until the slowest converges,
 * in R^d, the sphere from its own vector: BN_SHARP_NO_COMPACT, BN_SHARP_FULL,
 * BN_SHARP_NO_SHARE), then compaction, the row-space basis, the sphere's
 * start from the weighted operator's vector, its ceiling (the weighted
 * operator's λ_max, BN_SHARP_NO_CEILING off), LOBPCG in place of the shifted
 * power iteration (BN_SHARP_PLAIN_POWER off), and the square loss's structured
 * products (no matrix products at all; BN_SHARP_GENERAL off) added one by one; the
 * HVPs per record (per trajectory, and batched: the slowest column of each
 * operator), and the eigenvalues against the exact method (dense Hessian +
 * LAPACK) on the first min(S, 32) trajectories, same states.  Like
 * bench_table, it re-executes itself with GOMP_SPINCOUNT=10000 unless
 * OMP_WAIT_POLICY or GOMP_SPINCOUNT is set. */
#include "backend.h"
#include "sharpness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void die(const char *what)
{
    fprintf(stderr, "bench_sharpness: %s: %s\n", what, bn_last_error());
    exit(1);
}

#define CHECK(expr, what)                      \
    do {                                       \
        if ((expr) != BN_OK) die(what);        \
    } while (0)

typedef struct {
    bn_backend *be;
    int64_t n, d, S;
    void *Xc, *y, *zn, *zd, *W, *U, *Q, *G, *gam, *eta, *st;
    int64_t *div;
    bn_sharp *sh;
} setup;

static void *dalloc(bn_backend *be, size_t count)
{
    void *p = NULL;
    CHECK(be->ops->alloc(be, (count ? count : 1) * bn_real_size(be->precision), &p), "alloc");
    return p;
}

static void upload(bn_backend *be, void *dst, const double *src, size_t count)
{
    if (be->precision == BN_FP64) {
        CHECK(be->ops->upload(be, dst, src, count * sizeof(double)), "upload");
        return;
    }
    float *t = malloc(count * sizeof(float) + 4);
    for (size_t i = 0; i < count; i++) t[i] = (float)src[i];
    CHECK(be->ops->upload(be, dst, t, count * sizeof(float)), "upload");
    free(t);
}

static void setup_open(setup *s, const bn_dataset *ds, int64_t S, bn_precision prec, int threads)
{
    memset(s, 0, sizeof *s);
    CHECK(bn_backend_open(BN_BACKEND_CPU, prec, threads, 0, &s->be), "backend");
    int64_t n = bn_dataset_n(ds), d = bn_dataset_d(ds);
    s->n = n;
    s->d = d;
    s->S = S;
    double *xc = NULL;
    CHECK(bn_dataset_centered(ds, &xc), "centered");
    double *cm = malloc((size_t)(n * d) * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < d; k++) cm[i + k * n] = xc[i * d + k];
    free(xc);
    bn_backend *be = s->be;
    s->Xc = dalloc(be, (size_t)(n * d));
    upload(be, s->Xc, cm, (size_t)(n * d));
    free(cm);
    s->y = dalloc(be, (size_t)n);
    upload(be, s->y, bn_dataset_y(ds), (size_t)n);
    s->zn = dalloc(be, (size_t)n); /* zeros: no reference direction */
    s->zd = dalloc(be, (size_t)d);
    double *w = malloc((size_t)(d * S) * sizeof(double)), *g = malloc((size_t)S * sizeof(double));
    for (int64_t i = 0; i < d * S; i++) w[i] = sin(0.37 * (double)i + 1.0);
    for (int64_t j = 0; j < S; j++) g[j] = 0.5 + 0.01 * (double)j;
    s->W = dalloc(be, (size_t)(d * S));
    upload(be, s->W, w, (size_t)(d * S));
    s->gam = dalloc(be, (size_t)S);
    upload(be, s->gam, g, (size_t)S);
    double *eta = malloc((size_t)S * sizeof(double)), *eg = malloc((size_t)S * sizeof(double));
    for (int64_t j = 0; j < S; j++) {
        eta[j] = 1e-3; /* tiny steps: the state hardly moves while timing */
        eg[j] = 1e-3;
    }
    s->eta = dalloc(be, (size_t)S);
    upload(be, s->eta, eta, (size_t)S);
    s->U = dalloc(be, (size_t)(n * S));
    s->Q = dalloc(be, (size_t)(n * S));
    s->G = dalloc(be, (size_t)(d * S));
    s->st = dalloc(be, (size_t)(BN_ST_COUNT * S));
    CHECK(be->ops->alloc(be, (size_t)S * sizeof(int64_t), (void **)&s->div), "alloc");
    memset(s->div, 0xff, (size_t)S * sizeof(int64_t)); /* CPU: host memory; -1 */
    bn_sharp_setup su = {.n = n, .d = d, .S = S, .Xc = s->Xc, .y = s->y, .eta_w = eta, .eta_gamma = eg,
                         .seed = 1, .tol = 1e-6, .maxiter = 1000};
    CHECK(bn_sharp_create(be, &su, &s->sh), "sharpness engine");
    CHECK(bn_sharp_set_state(s->sh, s->W, s->gam), "state");
    free(w);
    free(g);
    free(eta);
    free(eg);
}

static void setup_close(setup *s)
{
    bn_sharp_free(s->sh);
    void *b[] = {s->Xc, s->y, s->zn, s->zd, s->W, s->U, s->Q, s->G, s->gam, s->eta, s->st, s->div};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) s->be->ops->dealloc(s->be, b[i]);
    bn_backend_close(s->be);
}

static void gd_step(setup *s)
{
    const bn_backend_ops *o = s->be->ops;
    CHECK(o->product_xw(s->be, s->n, s->d, s->S, s->Xc, s->W, s->U), "xw");
    CHECK(o->forward_columns(s->be, s->n, s->S, s->U, s->y, s->zn, s->gam, 0, s->Q, s->st), "forward");
    CHECK(o->product_xtq(s->be, s->n, s->d, s->S, s->Xc, s->Q, s->G), "xtq");
    CHECK(o->update_columns(s->be, s->d, s->S, s->W, s->G, s->zd, s->eta, s->eta, s->gam, 1, s->st, 0, s->div),
          "update");
}

static void power_step(setup *s) { CHECK(bn_sharp_power_iteration(s->sh, 0), "power iteration"); }

/* Median seconds per call of fn over `reps` repetitions of ~0.1 s. */
static double time_it(void (*fn)(setup *), setup *s, int reps)
{
    double t[15];
    int iters = 1;
    for (int r = -1; r < reps; r++) {
        double t0 = now();
        for (int i = 0; i < iters; i++) fn(s);
        double el = now() - t0;
        if (r < 0) {
            iters = (int)fmax(3, fmin(1e6, 0.1 / fmax(el, 1e-9)));
            continue;
        }
        t[r] = el / iters;
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp_double);
    return t[reps / 2];
}

/* ms per step of a bn_sim run that records every step (like bench_cpu). */
static double sim_seconds(const bn_dataset *ds, int64_t S, bn_precision prec, int threads, int reps)
{
    bn_run_config c;
    bn_run_config_default(&c);
    c.backend = BN_BACKEND_CPU;
    c.precision = prec;
    c.threads = threads;
    c.seeds = S;
    c.skip_reference = 1;
    c.project_w0 = 0;
    c.eta_w = 0.1;
    int64_t steps = 10;
    double t[15];
    for (int r = -1; r < reps; r++) {
        c.steps = steps;
        bn_sim *sim = NULL;
        CHECK(bn_sim_create(ds, &c, &sim), "sim");
        double t0 = now();
        CHECK(bn_sim_run(sim, NULL, NULL), "run");
        double per = (now() - t0) / (double)(steps + 1);
        bn_sim_free(sim);
        if (r < 0) {
            steps = (int64_t)fmax(5, fmin(1e6, 0.1 / fmax(per, 1e-9)));
            continue;
        }
        t[r] = per;
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp_double);
    return t[reps / 2];
}

/* ------------------------------------------------------- whole runs (--runs) */

static bn_loss g_loss = BN_LOSS_SQUARE; /* --logistic */

static void run_config(bn_run_config *c, int64_t S, int64_t T, int64_t sharp, int method, bn_precision prec,
                       int threads, double tol)
{
    bn_run_config_default(c);
    c->loss = g_loss;
    c->backend = BN_BACKEND_CPU;
    c->precision = prec;
    c->threads = threads;
    c->seeds = S;
    c->steps = T;
    c->every = 10;
    c->eta_w = 0.9;
    c->eta_gamma = 0.05;
    c->gamma0 = 0.1;
    c->w0_align = 0;
    c->w0_noise = 1;
    c->seed = 0;
    c->sharpness_every = sharp;
    c->sharpness_method = method;
    c->sharpness_tol = tol;
}

/* The engine variants timed side by side (environment overrides read by
 * bn_sharp_log_create and sim.c): the first algorithm, compaction alone, the
 * row-space basis, the shared sphere start, the sphere's ceiling (with the
 * shifted power iteration: BN_SHARP_PLAIN_POWER), LOBPCG (all with the general
 * HVPs: BN_SHARP_GENERAL), and the default, which adds the square loss's
 * structured products (bn_sqh_math.h; the run's own row-space coordinates). */
typedef struct {
    const char *name;
    int full, nocompact, noshare, general, noceiling, plain;
} variant;
static const variant g_variants[] = {
    {"before (batched, R^d, no sharing)", 1, 1, 1, 1, 1, 1},
    {"compaction", 1, 0, 1, 1, 1, 1},
    {"compaction + row-space basis", 0, 0, 1, 1, 1, 1},
    {"+ sphere from weighted", 0, 0, 0, 1, 1, 1},
    {"+ the sphere's ceiling", 0, 0, 0, 1, 0, 1},
    {"+ LOBPCG instead of power iteration", 0, 0, 0, 1, 0, 0},
    {"+ structured square-loss products (default)", 0, 0, 0, 0, 0, 0},
};
#define NVAR 7

static void setenv_if(const char *name, int on)
{
    if (on) setenv(name, "1", 1);
    else unsetenv(name);
}

static void variant_env(const variant *v)
{
    setenv_if("BN_SHARP_FULL", v->full);
    setenv_if("BN_SHARP_NO_COMPACT", v->nocompact);
    setenv_if("BN_SHARP_NO_SHARE", v->noshare);
    setenv_if("BN_SHARP_GENERAL", v->general);
    setenv_if("BN_SHARP_NO_CEILING", v->noceiling);
    setenv_if("BN_SHARP_PLAIN_POWER", v->plain);
}

static bn_sim *run_once(const bn_dataset *ds, const bn_run_config *c, double *sec)
{
    bn_sim *sim = NULL;
    CHECK(bn_sim_create(ds, c, &sim), "sim");
    double t0 = now();
    CHECK(bn_sim_run(sim, NULL, NULL), "run");
    *sec = now() - t0;
    return sim;
}

static int64_t g_exact_cols = 32;
static int g_only256 = 0;
static int g_first_var = 0; /* --default-only: NVAR - 1, the default engine alone */

static const char *const op_names[3] = {"sharpness", "sharpness_weighted", "sharpness_sphere"};

static double median_of(const double *x, int n, double *mn)
{
    double t[64];
    memcpy(t, x, (size_t)n * sizeof(double));
    qsort(t, (size_t)n, sizeof(double), cmp_double);
    *mn = t[0];
    return t[n / 2];
}

static void runs_case(const bn_dataset *ds, int64_t S, int64_t T, int reps, bn_precision prec, int threads,
                      double tol, int nvar)
{
    bn_run_config c0, c1, ce;
    run_config(&c0, S, T, 0, BN_SHARPNESS_POWER, prec, threads, tol);
    run_config(&c1, S, T, 10, BN_SHARPNESS_POWER, prec, threads, tol);
    int64_t Se = S < g_exact_cols ? S : g_exact_cols;
    run_config(&ce, Se, T, 10, BN_SHARPNESS_EXACT, BN_FP64, threads, tol);
    if (reps > 60) reps = 60;
    double t0s[64], t1s[NVAR][64];
    bn_sim *keep[NVAR] = {NULL};
    /* repetitions interleave: no sharpness, then each variant */
    for (int r = -1; r < reps; r++) {
        double a;
        bn_sim_free(run_once(ds, &c0, &a));
        if (r >= 0) t0s[r] = a;
        for (int v = g_first_var; v < nvar; v++) {
            variant_env(&g_variants[v]);
            bn_sim *s1 = run_once(ds, &c1, &a);
            if (r < 0) keep[v] = s1; /* the warm-up runs: their records */
            else {
                bn_sim_free(s1);
                t1s[v][r] = a;
            }
        }
    }
    variant_env(&g_variants[NVAR - 1]);
    double mn0, med0 = median_of(t0s, reps, &mn0);
    printf("S=%lld T=%lld (records every 10 steps; sharpness every 10): no sharpness %.2f ms (min %.2f)\n", (long long)S,
           (long long)T, 1e3 * med0, 1e3 * mn0);
    double sec;
    /* The exact method runs in R^d, and a trajectory in other coordinates
     * rounds differently: through a spike (the logistic case) the states
     * drift apart, so the errors come from a power run on the exact run's
     * own states (BN_FULL_SPACE=1: the simulation in R^d, the engine still in
     * its own coordinates), checked bitwise below. */
    bn_sim *ex = run_once(ds, &ce, &sec);
    bn_run_config cc = ce;
    cc.sharpness_method = BN_SHARPNESS_POWER;
    cc.precision = c1.precision;
    for (int v = g_first_var; v < nvar; v++) {
        double mn1, med1 = median_of(t1s[v], reps, &mn1);
        bn_sim_array it, stp;
        CHECK(bn_sim_sharpness_find(keep[v], "sharpness_iters", &it), "iters");
        CHECK(bn_sim_sharpness_find(keep[v], "sharpness_step", &stp), "steps");
        int64_t Rs = stp.shape[0];
        double batched = 0, colsum = 0;
        int64_t colmax = 0;
        for (int64_t r = 0; r < Rs; r++) {
            int64_t rmax = 0;
            for (int q = 0; q < 3; q++) {
                int64_t mx = 0;
                for (int64_t j = 0; j < S; j++) {
                    int64_t x = it.i64[((size_t)j * (size_t)Rs + (size_t)r) * 3 + (size_t)q];
                    mx = x > mx ? x : mx;
                    colsum += (double)x;
                }
                batched += (double)mx;
                rmax += mx;
            }
            colmax = rmax > colmax ? rmax : colmax;
        }
        bn_sharpness_info info;
        bn_sim_sharpness_info(keep[v], &info);
        printf("  %-40s %9.2f ms (min %9.2f)  overhead %+6.0f%% (of mins %+6.0f%%)\n", g_variants[v].name, 1e3 * med1,
               1e3 * mn1, 100 * (med1 / med0 - 1), 100 * (mn1 / mn0 - 1));
        printf("      HVPs per record, 3 operators: per trajectory mean %.1f, batched (slowest column) mean %.1f max %lld; "
               "not converged %lld\n",
               colsum / (double)Rs / (double)S, batched / (double)Rs, (long long)colmax, (long long)info.not_converged);
        setenv("BN_FULL_SPACE", "1", 1);
        variant_env(&g_variants[v]);
        bn_sim *chk = run_once(ds, &cc, &sec);
        unsetenv("BN_FULL_SPACE");
        size_t nw = (size_t)(Se * bn_dataset_d(ds)) * sizeof(double);
        int same = memcmp(bn_sim_w_final(chk), bn_sim_w_final(ex), nw) == 0;
        printf("      vs exact (first %lld trajectories × %lld records, %s states), max | mean rel error:",
               (long long)Se, (long long)Rs, same ? "the same" : "DIFFERENT");
        for (int q = 0; q < 3; q++) {
            bn_sim_array a, b;
            CHECK(bn_sim_sharpness_find(chk, op_names[q], &a), "lam");
            CHECK(bn_sim_sharpness_find(ex, op_names[q], &b), "lam exact");
            double emax = 0, esum = 0;
            int64_t cnt = 0;
            for (int64_t j = 0; j < Se; j++)
                for (int64_t r = 0; r < Rs; r++) {
                    double x = a.f64[(size_t)j * (size_t)Rs + (size_t)r], y = b.f64[(size_t)j * (size_t)Rs + (size_t)r];
                    if (!isfinite(x) || !isfinite(y)) continue;
                    double e = fabs(x - y) / fmax(fabs(y), 1e-300);
                    emax = fmax(emax, e);
                    esum += e;
                    cnt++;
                }
            printf(" %s %.1e | %.1e", q == 0 ? "H" : q == 1 ? "weighted" : "sphere", emax, cnt ? esum / (double)cnt : 0.0);
        }
        printf("\n");
        bn_sim_free(chk);
        bn_sim_free(keep[v]);
    }
    bn_sim_free(ex);
    fflush(stdout);
}

static int runs_main(int threads, int reps, int64_t T, bn_precision prec, double tol, int nvar)
{
    bn_dataset *ds = NULL;
    CHECK(bn_dataset_generate("hilbert:n=64,d=256,noise=0.01,seed=1", g_loss, &ds), "data");
    printf("bnspike sharpness runs: hilbert:n=64,d=256,noise=0.01,seed=1, %s, %s, CPU, %d threads, tol %g, "
           "GOMP_SPINCOUNT=%s; %d repetitions interleaved (median, min)\n",
           g_loss == BN_LOSS_LOGISTIC ? "logistic" : "square", bn_precision_name(prec), threads, tol,
           getenv("GOMP_SPINCOUNT") ? getenv("GOMP_SPINCOUNT") : "unset", reps);
    runs_case(ds, 256, T, reps, prec, threads, tol, nvar);
    if (!g_only256) runs_case(ds, 1, 5 * T, reps, prec, threads, tol, nvar);
    bn_dataset_free(ds);
    return 0;
}

int main(int argc, char **argv)
{
    int threads = 2, quick = 0, fp32 = 0, runs = 0, reps = 3, nvar = NVAR;
    double tol = 1e-6;
    int64_t T = 100;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--fp32")) fp32 = 1;
        else if (!strcmp(argv[i], "--runs")) runs = 1;
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) T = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--tol") && i + 1 < argc) tol = atof(argv[++i]);
        else if (!strcmp(argv[i], "--exact-cols") && i + 1 < argc) g_exact_cols = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--only-s256")) g_only256 = 1;
        else if (!strcmp(argv[i], "--default-only")) g_first_var = NVAR - 1;
        else if (!strcmp(argv[i], "--logistic")) g_loss = BN_LOSS_LOGISTIC;
        else {
            fprintf(stderr, "usage: bench_sharpness [--threads N] [--quick] [--fp32] | --runs [--reps R] [--steps T] "
                            "[--tol X] [--exact-cols N] [--only-s256] [--default-only] [--logistic]\n");
            return 2;
        }
    }
    bn_precision prec = fp32 ? BN_FP32 : BN_FP64;
    if (runs) {
        /* As bench_table: a short OpenMP spin on a shared machine (bench.c). */
        if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT")) {
            setenv("GOMP_SPINCOUNT", "10000", 1);
            execv("/proc/self/exe", argv);
        }
        return runs_main(threads, reps < 1 ? 1 : reps, T < 10 ? 10 : T, prec, tol, nvar);
    }
    struct { int64_t n, d, S; } cases[] = {{64, 256, 256}, {64, 256, 1}, {2048, 4096, 32}};
    reps = quick ? 3 : 7;
    printf("bnspike sharpness benchmark: square loss, %s, CPU, %d threads\n", bn_precision_name(prec), threads);
    printf("%6s %6s %6s %14s %14s %14s %10s %10s\n", "n", "d", "S", "GD ops ms", "GD run ms", "power ms",
           "pow/GDops", "pow/GDrun");
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int64_t n = cases[k].n, d = cases[k].d, S = cases[k].S;
        if (quick && n > 1000) continue;
        char spec[128];
        snprintf(spec, sizeof spec, "gaussian:n=%lld,d=%lld,seed=1", (long long)n, (long long)d);
        bn_dataset *ds = NULL;
        CHECK(bn_dataset_generate(spec, BN_LOSS_SQUARE, &ds), "data");
        setup s;
        setup_open(&s, ds, S, prec, threads);
        CHECK(bn_sharp_power_prepare(s.sh, 0), "prepare");
        double gd = time_it(gd_step, &s, reps);
        double pw = time_it(power_step, &s, reps);
        setup_close(&s);
        double run = sim_seconds(ds, S, prec, threads, reps);
        bn_dataset_free(ds);
        printf("%6lld %6lld %6lld %14.4f %14.4f %14.4f %10.2f %10.2f\n", (long long)n, (long long)d, (long long)S,
               1e3 * gd, 1e3 * run, 1e3 * pw, pw / gd, pw / run);
        fflush(stdout);
    }
    return 0;
}
