/* CPU benchmark: ms/step of a bnspike run against the matrix-product floor,
 * measured side by side in one run.  The floor is the two products of one
 * step (U = Xc·W, G = Xcᵀ·Q) timed alone through OpenBLAS; everything else a
 * step does (column passes, records, divergence checks) is overhead on it.
 *
 *   build/bench_cpu [--threads N] [--quick] [--csv FILE]
 *
 * Times are medians over repetitions; each repetition runs enough steps to
 * last ~0.2 s.  This machine is shared and noisy: compare the ratio, not the
 * absolute numbers, between runs. */
#include "bnspike.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern void openblas_set_num_threads(int num_threads);

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

static double median(double *v, int k)
{
    qsort(v, (size_t)k, sizeof *v, cmp_double);
    return v[k / 2];
}

/* Seconds per call of the two GEMMs of one step, fp64 or fp32. */
static double floor_seconds(int64_t n, int64_t d, int64_t S, int fp32, int reps)
{
    size_t esz = fp32 ? 4 : 8;
    void *X = calloc((size_t)(n * d), esz), *W = calloc((size_t)(d * S), esz);
    void *U = calloc((size_t)(n * S), esz), *G = calloc((size_t)(d * S), esz);
    for (int64_t i = 0; i < n * d; i++) {
        double v = sin((double)i);
        if (fp32) ((float *)X)[i] = (float)v; else ((double *)X)[i] = v;
    }
    for (int64_t i = 0; i < d * S; i++) {
        double v = cos((double)i);
        if (fp32) ((float *)W)[i] = (float)v; else ((double *)W)[i] = v;
    }
    double per_call = 0, times[15];
    int iters = 1;
    for (int r = -1; r < reps; r++) {
        double t0 = now();
        for (int it = 0; it < iters; it++) {
            if (fp32) {
                cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)S, (int)d, 1.f, X, (int)n, W, (int)d, 0.f, U, (int)n);
                cblas_sgemm(CblasColMajor, CblasTrans, CblasNoTrans, (int)d, (int)S, (int)n, 1.f, X, (int)n, U, (int)n, 0.f, G, (int)d);
            } else {
                cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)S, (int)d, 1.0, X, (int)n, W, (int)d, 0.0, U, (int)n);
                cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, (int)d, (int)S, (int)n, 1.0, X, (int)n, U, (int)n, 0.0, G, (int)d);
            }
        }
        double el = now() - t0;
        if (r < 0) { /* warm-up doubles as calibration: ~0.1 s per repetition */
            iters = (int)fmax(1, fmin(1e6, 0.1 / fmax(el, 1e-9)));
            continue;
        }
        times[r] = el / iters;
    }
    per_call = median(times, reps);
    free(X); free(W); free(U); free(G);
    return per_call;
}

/* Wall seconds of one bnspike run of `steps` steps (setup excluded). */
static double run_once(const bn_dataset *ds, const bn_run_config *c0, int64_t steps)
{
    bn_run_config c = *c0;
    c.steps = steps;
    bn_sim *sim = NULL;
    if (bn_sim_create(ds, &c, &sim) != BN_OK) {
        fprintf(stderr, "bench: %s\n", bn_last_error());
        exit(1);
    }
    double t0 = now();
    if (bn_sim_run(sim, NULL, NULL) != BN_OK) {
        fprintf(stderr, "bench: %s\n", bn_last_error());
        exit(1);
    }
    double el = now() - t0;
    bn_sim_free(sim);
    return el;
}

/* Seconds per step of a bnspike run: (t(2N) - t(N)) / N, so one-time costs
 * inside a run (the CPU backend's Xcᵀ copy, first touch of the buffers) do not
 * count as step time however short the run. */
static double sim_seconds(const bn_dataset *ds, int64_t S, int fp32, int threads, int reps)
{
    bn_run_config c;
    bn_run_config_default(&c);
    c.backend = BN_BACKEND_CPU;
    c.precision = fp32 ? BN_FP32 : BN_FP64;
    c.threads = threads;
    c.seeds = S;
    c.every = 1;
    /* The reference solve and the w0 projection are one-time setup (an SVD):
     * skipped here; the per-step work is the same. */
    c.skip_reference = 1;
    c.project_w0 = 0;
    c.eta_w = 0.1;
    double per = run_once(ds, &c, 10) / 11.0;
    int64_t steps = (int64_t)fmax(5, fmin(1e6, 0.2 / fmax(per, 1e-9)));
    double times[15];
    for (int r = 0; r < reps; r++)
        times[r] = (run_once(ds, &c, 2 * steps) - run_once(ds, &c, steps)) / (double)steps;
    return median(times, reps);
}

int main(int argc, char **argv)
{
    /* OpenBLAS at its best on this CPU (bn_blas_kernels_suggested): it reads
     * OPENBLAS_CORETYPE when it starts. */
    if (bn_blas_kernels_setenv()) execv("/proc/self/exe", argv);
    int threads = 2, quick = 0;
    const char *csv = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--csv") && i + 1 < argc) csv = argv[++i];
        else {
            fprintf(stderr, "usage: bench_cpu [--threads N] [--quick] [--csv FILE]\n");
            return 2;
        }
    }
    openblas_set_num_threads(threads);
    struct { int64_t n, d, S; int fp32; } cases[] = {
        {64, 256, 1, 0}, {64, 256, 256, 0}, {2048, 4096, 32, 0},
        {64, 256, 1, 1}, {64, 256, 256, 1}, {2048, 4096, 32, 1},
    };
    int reps = quick ? 3 : 7;
    FILE *out = csv ? fopen(csv, "w") : NULL;
    if (out) fprintf(out, "n,d,S,precision,threads,bnspike_ms_per_step,floor_ms,ratio,seed_steps_per_s\n");
    printf("bnspike CPU benchmark: square loss, records every step, %d threads\n", threads);
    printf("%6s %6s %6s %5s %14s %12s %8s %14s\n", "n", "d", "S", "prec", "bnspike ms/st", "floor ms", "ratio", "seed-steps/s");
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int64_t n = cases[k].n, d = cases[k].d, S = cases[k].S;
        if (quick && n > 1000) continue;
        char spec[128];
        snprintf(spec, sizeof spec, "gaussian:n=%lld,d=%lld,seed=1", (long long)n, (long long)d);
        bn_dataset *ds = NULL;
        if (bn_dataset_generate(spec, BN_LOSS_SQUARE, &ds) != BN_OK) {
            fprintf(stderr, "bench: %s\n", bn_last_error());
            return 1;
        }
        double fl = floor_seconds(n, d, S, cases[k].fp32, reps);
        double sim = sim_seconds(ds, S, cases[k].fp32, threads, reps);
        bn_dataset_free(ds);
        printf("%6lld %6lld %6lld %5s %14.4f %12.4f %8.2f %14.3e\n", (long long)n, (long long)d, (long long)S,
               cases[k].fp32 ? "fp32" : "fp64", 1e3 * sim, 1e3 * fl, sim / fl, (double)S / sim);
        fflush(stdout);
        if (out)
            fprintf(out, "%lld,%lld,%lld,%s,%d,%.6g,%.6g,%.4f,%.6g\n", (long long)n, (long long)d, (long long)S,
                    cases[k].fp32 ? "fp32" : "fp64", threads, 1e3 * sim, 1e3 * fl, sim / fl, (double)S / sim);
    }
    if (out) fclose(out);
    return 0;
}
