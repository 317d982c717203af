/* bn_det_gemm vs OpenBLAS cblas_dgemm/sgemm on the shapes of a simulation
 * step: U = Xc·W is (m, n, k) = (n_samples, S, d) and G = Xcᵀ·Q is
 * (d, S, n_samples), here with (64, S, 256) and (256, S, 64) for S = 1, 256,
 * 4096, plus the tall (2048, 32, 4096) and (4096, 32, 2048).  Column-major,
 * tight leading dimensions, C overwritten (beta = 0), as the backend calls it.
 *
 * Prints ms per call for each, and det/BLAS (the project's target for a whole
 * step is <= 1.3× two BLAS products).  Threads 1 and 2 (OpenBLAS through
 * openblas_set_num_threads, ours through the threads argument).  Timing: the
 * best of 5 batches, each batch long enough (>= 20 ms) to swamp the clock, and
 * the best over R rounds (default 2; the machine may be shared).
 *
 *   bench_det_gemm [--quick] [--rounds R] [--threads N] [--f64|--f32]
 *                  [--isa avx512|avx2|generic]
 *
 * Build: gcc -std=c11 -O2 -fopenmp -D_GNU_SOURCE -Iinclude -Isrc \
 *          bench/bench_det_gemm.c src/cpu/det_gemm.c -lopenblas -lm -o bench_det_gemm */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bnspike.h"
#include "cpu/det_gemm.h"

extern void openblas_set_num_threads(int);
extern char *openblas_get_corename(void);

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void pause_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

typedef struct {
    int64_t m, n, k;
    const char *what;
} shape;

typedef struct {
    int f32, threads;
    int64_t m, n, k;
    void *A, *B, *C;
} job;

static void run_det(const job *j)
{
    if (j->f32)
        bn_det_gemm_f32(j->m, j->n, j->k, j->A, j->m, j->B, j->k, j->C, j->m, j->threads);
    else
        bn_det_gemm_f64(j->m, j->n, j->k, j->A, j->m, j->B, j->k, j->C, j->m, j->threads);
}

static void run_blas(const job *j)
{
    if (j->f32)
        cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, (int)j->m, (int)j->n, (int)j->k,
                    1.0f, j->A, (int)j->m, j->B, (int)j->k, 0.0f, j->C, (int)j->m);
    else
        cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, (int)j->m, (int)j->n, (int)j->k,
                    1.0, j->A, (int)j->m, j->B, (int)j->k, 0.0, j->C, (int)j->m);
}

/* Seconds per call: best of `batches` batch means. */
static double time_it(void (*fn)(const job *), const job *j, int quick)
{
    fn(j); /* warm: caches, scratch buffers, thread pools */
    fn(j);
    double t0 = now();
    fn(j);
    double once = now() - t0;
    const double batch_s = quick ? 0.005 : 0.02;
    int reps = once > 0 ? (int)(batch_s / once) + 1 : 1000;
    double best = 1e30;
    for (int b = 0; b < (quick ? 3 : 5); b++) {
        t0 = now();
        for (int r = 0; r < reps; r++) fn(j);
        double t = (now() - t0) / reps;
        if (t < best) best = t;
    }
    return best;
}

static void fill(void *p, int64_t len, int f32, unsigned seed)
{
    srand(seed);
    for (int64_t i = 0; i < len; i++) {
        double v = 2.0 * rand() / RAND_MAX - 1.0;
        if (f32)
            ((float *)p)[i] = (float)v;
        else
            ((double *)p)[i] = v;
    }
}

int main(int argc, char **argv)
{
    /* OpenBLAS at its best on this CPU (bn_blas_kernels_suggested): it reads
     * OPENBLAS_CORETYPE when it starts. */
    if (bn_blas_kernels_setenv()) execv("/proc/self/exe", argv);
    int quick = 0, only_threads = 0, do64 = 1, do32 = 1, rounds = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            only_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]) > 0 ? atoi(argv[i]) : 1;
        else if (!strcmp(argv[i], "--f64"))
            do32 = 0;
        else if (!strcmp(argv[i], "--f32"))
            do64 = 0;
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            const char *s = argv[++i];
            int ok = 0;
            for (int a = 0; a < BN_DG_ISA_COUNT; a++)
                if (!strcmp(s, bn_det_gemm_isa_name((bn_dg_isa)a))) ok = bn_det_gemm_set_isa((bn_dg_isa)a);
            if (!ok) {
                fprintf(stderr, "--isa %s: unknown or not supported by this CPU\n", s);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: %s [--quick] [--rounds R] [--threads N] [--f64|--f32] [--isa NAME]\n", argv[0]);
            return 2;
        }
    }
    static const shape shapes[] = {
        {64, 1, 256, "U=Xc·W,  n=64  d=256 S=1"},     {256, 1, 64, "G=XcᵀQ,  n=64  d=256 S=1"},
        {64, 256, 256, "U=Xc·W,  n=64  d=256 S=256"}, {256, 256, 64, "G=XcᵀQ,  n=64  d=256 S=256"},
        {64, 4096, 256, "U=Xc·W,  n=64  d=256 S=4096"}, {256, 4096, 64, "G=XcᵀQ,  n=64  d=256 S=4096"},
        {2048, 32, 4096, "U=Xc·W,  n=2048 d=4096 S=32"}, {4096, 32, 2048, "G=XcᵀQ,  n=2048 d=4096 S=32"},
    };
    const int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    printf("bn_det_gemm (path %s) vs OpenBLAS %s; ms per call (best of %d rounds), ratio = det / BLAS\n",
           bn_det_gemm_isa_name(bn_det_gemm_isa()), openblas_get_corename(), rounds);
    for (int f32 = 0; f32 <= 1; f32++) {
        if ((f32 && !do32) || (!f32 && !do64)) continue;
        const size_t es = f32 ? sizeof(float) : sizeof(double);
        for (int threads = 1; threads <= 2; threads++) {
            if (only_threads && threads != only_threads) continue;
            openblas_set_num_threads(threads);
            job jobs[16];
            double td[16], tb[16];
            for (int s = 0; s < nshapes; s++) {
                job j = {f32, threads, shapes[s].m, shapes[s].n, shapes[s].k, NULL, NULL, NULL};
                j.A = malloc((size_t)(j.m * j.k) * es);
                j.B = malloc((size_t)(j.k * j.n) * es);
                j.C = malloc((size_t)(j.m * j.n) * es);
                if (!j.A || !j.B || !j.C) {
                    fprintf(stderr, "out of memory\n");
                    return 1;
                }
                fill(j.A, j.m * j.k, f32, 1u + (unsigned)s);
                fill(j.B, j.k * j.n, f32, 100u + (unsigned)s);
                jobs[s] = j;
                td[s] = tb[s] = 1e30;
            }
            /* One library at a time, with a pause in between: OpenBLAS's
             * threads busy-wait for a while after a call (and OpenMP's after a
             * parallel region), which would steal the second core from the
             * other library's team. */
            for (int r = 0; r < rounds; r++) {
                for (int s = 0; s < nshapes; s++) {
                    double t = time_it(run_det, &jobs[s], quick);
                    if (t < td[s]) td[s] = t;
                }
                pause_s(0.3);
                for (int s = 0; s < nshapes; s++) {
                    double t = time_it(run_blas, &jobs[s], quick);
                    if (t < tb[s]) tb[s] = t;
                }
                pause_s(0.3);
            }
            printf("\n%s, threads=%d\n", f32 ? "fp32 (sgemm)" : "fp64 (dgemm)", threads);
            printf("  %-5s %-5s %-5s  %-29s %10s %10s %7s %8s %8s\n", "m", "n", "k", "", "det ms",
                   "BLAS ms", "ratio", "det GF/s", "BLAS GF/s");
            double geo = 0;
            for (int s = 0; s < nshapes; s++) {
                const job *j = &jobs[s];
                double fl = 2.0 * (double)j->m * (double)j->n * (double)j->k;
                printf("  %-5lld %-5lld %-5lld  %-29s %10.4f %10.4f %7.3f %8.1f %8.1f\n",
                       (long long)j->m, (long long)j->n, (long long)j->k, shapes[s].what,
                       td[s] * 1e3, tb[s] * 1e3, td[s] / tb[s], fl / td[s] * 1e-9,
                       fl / tb[s] * 1e-9);
                geo += log(td[s] / tb[s]);
                free(j->A);
                free(j->B);
                free(j->C);
            }
            printf("  geometric-mean ratio %.3f\n", exp(geo / nshapes));
            fflush(stdout);
        }
    }
    return 0;
}
