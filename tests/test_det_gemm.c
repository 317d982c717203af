/* bn_det_gemm_f64/f32 (src/cpu/det_gemm.h).
 *
 * The contract is bitwise: C[i,j] is the chain c = +0; c = fma(A[i,p], B[p,j], c)
 * for p = 0..k-1.  So most tests compare BITS (memcmp, which also tells -0
 * from +0), against:
 *   (e) that chain written as a plain scalar loop with fma()/fmaf() (the
 *       contract itself), for every instruction-set path this CPU has;
 *   (b) the same column computed alone (n = 1) vs inside n = 2, 5, 17, 300;
 *   (c) threads = 1 vs 2 vs 3 (and a call from inside a parallel region);
 *   (d) every instruction-set path vs the portable one (paths the CPU lacks
 *       are skipped with a message).
 * (a) checks the values against a long-double triple loop with the standard
 * bound for a recursively summed dot product with one rounding per step:
 *       |C - C_exact| <= k · u' · (|A|·|B|)[i,j],   u' = 2^-52 (f64), 2^-23 (f32)
 * (twice the unit roundoff u = 2^-53 / 2^-24, so the γ_k = k·u/(1-k·u) bound
 * holds with room for the reference's own long-double rounding).
 * Random data are full-mantissa values in [-1, 1), so any change of order or
 * of rounding shows up in the bits (check_sensitivity shows that it does).
 * Leading dimensions are padded and the padding of C is checked untouched. */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/det_gemm.h"

/* ------------------------------------------------------------------ helpers */

static uint64_t dgt_rng(uint64_t *s) /* xorshift64* */
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}
/* Uniform in [-1, 1) with a full 53-bit mantissa. */
static double dgt_unif(uint64_t *s) { return (double)(dgt_rng(s) >> 11) * 0x1p-52 - 1.0; }

static const double DGT_SENTINEL = 1234.5;
static const int64_t DGT_PAD = 3; /* extra rows in every leading dimension */

/* A typed test problem: A m×k (lda), B k×n (ldb), C m×n (ldc), col-major. */
#define DGT_DEFINE(T, SFX, FMA, GEMM)                                                      \
    typedef struct {                                                                       \
        int64_t m, n, k, lda, ldb, ldc;                                                    \
        T *A, *B, *C;                                                                      \
    } dgt_prob_##SFX;                                                                      \
                                                                                           \
    static void dgt_make_##SFX(dgt_prob_##SFX *p, int64_t m, int64_t n, int64_t k,         \
                               uint64_t seed)                                              \
    {                                                                                      \
        p->m = m, p->n = n, p->k = k;                                                      \
        p->lda = m + DGT_PAD, p->ldb = k + DGT_PAD, p->ldc = m + DGT_PAD;                  \
        p->A = malloc(sizeof(T) * (size_t)(p->lda * (k ? k : 1)));                         \
        p->B = malloc(sizeof(T) * (size_t)(p->ldb * n));                                   \
        p->C = malloc(sizeof(T) * (size_t)(p->ldc * n));                                   \
        cr_assert(p->A && p->B && p->C);                                                   \
        uint64_t s = 0x9E3779B97F4A7C15ULL ^ (seed * 0xD1B54A32D192ED03ULL);               \
        for (int64_t i = 0; i < p->lda * (k ? k : 1); i++) p->A[i] = (T)dgt_unif(&s);      \
        for (int64_t i = 0; i < p->ldb * n; i++) p->B[i] = (T)dgt_unif(&s);                \
    }                                                                                      \
    static void dgt_free_##SFX(dgt_prob_##SFX *p)                                          \
    {                                                                                      \
        free(p->A);                                                                        \
        free(p->B);                                                                        \
        free(p->C);                                                                        \
    }                                                                                      \
    /* Runs the GEMM on a C prefilled with the sentinel; checks the padding. */            \
    static void dgt_run_##SFX(dgt_prob_##SFX *p, int threads)                              \
    {                                                                                      \
        for (int64_t i = 0; i < p->ldc * p->n; i++) p->C[i] = (T)DGT_SENTINEL;             \
        GEMM(p->m, p->n, p->k, p->A, p->lda, p->B, p->ldb, p->C, p->ldc, threads);         \
        for (int64_t j = 0; j < p->n; j++)                                                 \
            for (int64_t i = p->m; i < p->ldc; i++)                                        \
                cr_assert_eq(p->C[i + j * p->ldc], (T)DGT_SENTINEL,                        \
                             "C padding written at (%lld, %lld), m=%lld n=%lld k=%lld",    \
                             (long long)i, (long long)j, (long long)p->m, (long long)p->n, \
                             (long long)p->k);                                             \
    }                                                                                      \
    /* The contract, literally. */                                                         \
    static T dgt_chain_##SFX(const dgt_prob_##SFX *p, int64_t i, int64_t j)                \
    {                                                                                      \
        T c = 0;                                                                           \
        for (int64_t q = 0; q < p->k; q++)                                                 \
            c = FMA(p->A[i + q * p->lda], p->B[q + j * p->ldb], c);                        \
        return c;                                                                          \
    }                                                                                      \
    /* Largest |C - exact| / (k · u' · (|A||B|)[i,j]) (must be <= 1). */                   \
    static double dgt_value_ratio_##SFX(const dgt_prob_##SFX *p, double u2)                \
    {                                                                                      \
        double worst = 0;                                                                  \
        for (int64_t j = 0; j < p->n; j++)                                                 \
            for (int64_t i = 0; i < p->m; i++) {                                           \
                long double s = 0, sa = 0;                                                 \
                for (int64_t q = 0; q < p->k; q++) {                                       \
                    long double t = (long double)p->A[i + q * p->lda] *                    \
                                    (long double)p->B[q + j * p->ldb];                     \
                    s += t;                                                                \
                    sa += fabsl(t);                                                        \
                }                                                                          \
                long double err = fabsl((long double)p->C[i + j * p->ldc] - s);            \
                long double bound = (long double)p->k * (long double)u2 * sa;              \
                double r = bound > 0 ? (double)(err / bound) : (err > 0 ? INFINITY : 0);   \
                if (r > worst) worst = r;                                                  \
            }                                                                              \
        return worst;                                                                      \
    }

DGT_DEFINE(double, f64, fma, bn_det_gemm_f64)
DGT_DEFINE(float, f32, fmaf, bn_det_gemm_f32)

static const int64_t dgt_sizes[] = {1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100, 257};
#define DGT_NSIZES ((int)(sizeof dgt_sizes / sizeof dgt_sizes[0]))

/* Forces a path for this test process; 0 (with a visible message) if the CPU
 * lacks it.  Criterion runs every test in its own process, so this does not
 * leak into other tests. */
static int dgt_use_isa(bn_dg_isa isa)
{
    if (bn_det_gemm_set_isa(isa)) return 1;
    fprintf(stderr, "[det_gemm] SKIPPED: this CPU lacks the %s path\n", bn_det_gemm_isa_name(isa));
    return 0;
}

/* ------------------------------------------------------------ (a) values */

#define DGT_VALUES(SFX, U2)                                                                \
    for (int a = 0; a < DGT_NSIZES; a++)                                                   \
        for (int b = 0; b < DGT_NSIZES; b++)                                               \
            for (int c = 0; c < DGT_NSIZES; c++) {                                         \
                dgt_prob_##SFX p;                                                          \
                dgt_make_##SFX(&p, dgt_sizes[a], dgt_sizes[b], dgt_sizes[c],               \
                               (uint64_t)(a * 10000 + b * 100 + c));                       \
                dgt_run_##SFX(&p, 1);                                                      \
                double r = dgt_value_ratio_##SFX(&p, U2);                                  \
                cr_assert_leq(r, 1.0, "m=%lld n=%lld k=%lld: error is %.3g × the bound",   \
                              (long long)p.m, (long long)p.n, (long long)p.k, r);          \
                dgt_free_##SFX(&p);                                                        \
            }

Test(det_gemm, values_f64) { DGT_VALUES(f64, 0x1p-52) }
Test(det_gemm, values_f32) { DGT_VALUES(f32, 0x1p-23) }

/* ------------------------------------------- (e) the contract: fma chains */

/* Every (m, n, k) of the size list on every path this CPU has (the portable
 * path, which is the reference loop itself, only up to 10^5 FMAs per call);
 * plus shapes that cross the k-block (256 f64 / 512 f32 elements), the
 * A-packing, the parallel thresholds and (1500×20×900: A > 4 MiB, packed, 2+
 * k-blocks) the pipelined packing of a streamed A, with 1 and 2 threads. */
#define DGT_CHAIN(SFX, T)                                                                  \
    int have[BN_DG_ISA_COUNT];                                                             \
    for (int isa = 0; isa < BN_DG_ISA_COUNT; isa++)                                        \
        if (!(have[isa] = bn_det_gemm_isa_supported((bn_dg_isa)isa)))                      \
            fprintf(stderr, "[det_gemm] SKIPPED: this CPU lacks the %s path\n",            \
                    bn_det_gemm_isa_name((bn_dg_isa)isa));                                 \
    static const int64_t big[][3] = {{50, 30, 600},  {100, 20, 1100}, {300, 9, 513},       \
                                     {1000, 33, 70}, {65, 300, 257},  {700, 3, 1500},      \
                                     {1500, 20, 900}};                                     \
    const int nsmall = DGT_NSIZES * DGT_NSIZES * DGT_NSIZES;                               \
    const int nbig = (int)(sizeof big / sizeof big[0]);                                    \
    for (int s = 0; s < nsmall + nbig; s++) {                                              \
        dgt_prob_##SFX p;                                                                  \
        if (s < nsmall)                                                                    \
            dgt_make_##SFX(&p, dgt_sizes[s / (DGT_NSIZES * DGT_NSIZES)],                   \
                           dgt_sizes[s / DGT_NSIZES % DGT_NSIZES], dgt_sizes[s % DGT_NSIZES], \
                           (uint64_t)(7 + s));                                             \
        else                                                                               \
            dgt_make_##SFX(&p, big[s - nsmall][0], big[s - nsmall][1], big[s - nsmall][2], \
                           (uint64_t)(7 + s));                                             \
        T *ref = malloc(sizeof(T) * (size_t)(p.m * p.n));                                  \
        cr_assert(ref);                                                                    \
        for (int64_t j = 0; j < p.n; j++)                                                  \
            for (int64_t i = 0; i < p.m; i++) ref[i + j * p.m] = dgt_chain_##SFX(&p, i, j); \
        for (int isa = 0; isa < BN_DG_ISA_COUNT; isa++) {                                  \
            if (!have[isa] || (isa == BN_DG_ISA_GENERIC && p.m * p.n * p.k > 100000))      \
                continue;                                                                  \
            cr_assert(bn_det_gemm_set_isa((bn_dg_isa)isa));                                \
            for (int threads = 1; threads <= (s < nsmall ? 1 : 2); threads++) {            \
                dgt_run_##SFX(&p, threads);                                                \
                int64_t bad = 0;                                                           \
                for (int64_t j = 0; j < p.n; j++)                                          \
                    for (int64_t i = 0; i < p.m; i++)                                      \
                        bad += memcmp(&ref[i + j * p.m], &p.C[i + j * p.ldc], sizeof(T)) != 0; \
                cr_assert_eq(bad, 0, "%s: m=%lld n=%lld k=%lld threads=%d: %lld elements " \
                             "differ from the fma chain", bn_det_gemm_isa_name((bn_dg_isa)isa), \
                             (long long)p.m, (long long)p.n, (long long)p.k, threads,      \
                             (long long)bad);                                              \
            }                                                                              \
        }                                                                                  \
        free(ref);                                                                         \
        dgt_free_##SFX(&p);                                                                \
    }

Test(det_gemm, fma_chain_f64) { DGT_CHAIN(f64, double) }
Test(det_gemm, fma_chain_f32) { DGT_CHAIN(f32, float) }

/* The tests above have teeth: the same sums in another order (here reversed
 * p) or with separate multiply and add change many bits. */
Test(det_gemm, check_sensitivity)
{
    dgt_prob_f64 p;
    dgt_make_f64(&p, 64, 16, 256, 5);
    dgt_run_f64(&p, 1);
    int64_t rev_differs = 0, mul_add_differs = 0;
    for (int64_t j = 0; j < p.n; j++)
        for (int64_t i = 0; i < p.m; i++) {
            double r = 0, s = 0;
            for (int64_t q = p.k - 1; q >= 0; q--) r = fma(p.A[i + q * p.lda], p.B[q + j * p.ldb], r);
            for (int64_t q = 0; q < p.k; q++) {
                volatile double t = p.A[i + q * p.lda] * p.B[q + j * p.ldb];
                s += t;
            }
            rev_differs += r != p.C[i + j * p.ldc];
            mul_add_differs += s != p.C[i + j * p.ldc];
        }
    cr_expect_gt(rev_differs, p.m * p.n / 4, "reversed order differs in only %lld of %lld",
                 (long long)rev_differs, (long long)(p.m * p.n));
    cr_expect_gt(mul_add_differs, p.m * p.n / 4, "mul+add differs in only %lld of %lld",
                 (long long)mul_add_differs, (long long)(p.m * p.n));
    dgt_free_f64(&p);
}

/* Signed zeros and the empty chain: fma(-1, 0, +0) = +0 (a first step done as
 * a plain multiply would give -0); k = 0 writes +0; m = 0 or n = 0 writes
 * nothing. */
Test(det_gemm, zeros_and_empty)
{
    for (int isa = 0; isa < BN_DG_ISA_COUNT; isa++) {
        if (!dgt_use_isa((bn_dg_isa)isa)) continue;
        for (int64_t m = 1; m <= 40; m += 13)
            for (int64_t n = 1; n <= 20; n += 9) {
                dgt_prob_f64 p;
                dgt_make_f64(&p, m, n, 3, 1);
                for (int64_t i = 0; i < p.lda * 3; i++) p.A[i] = -1.0;
                for (int64_t i = 0; i < p.ldb * n; i++) p.B[i] = 0.0;
                dgt_run_f64(&p, 1);
                for (int64_t j = 0; j < n; j++)
                    for (int64_t i = 0; i < m; i++)
                        cr_assert(p.C[i + j * p.ldc] == 0 && !signbit(p.C[i + j * p.ldc]),
                                  "%s: expected +0 at (%lld,%lld)", bn_det_gemm_isa_name(isa),
                                  (long long)i, (long long)j);
                p.k = 0; /* empty chain */
                dgt_run_f64(&p, 1);
                for (int64_t j = 0; j < n; j++)
                    for (int64_t i = 0; i < m; i++)
                        cr_assert(p.C[i + j * p.ldc] == 0 && !signbit(p.C[i + j * p.ldc]));
                dgt_free_f64(&p);

                dgt_prob_f32 q;
                dgt_make_f32(&q, m, n, 3, 2);
                for (int64_t i = 0; i < q.lda * 3; i++) q.A[i] = -1.0f;
                for (int64_t i = 0; i < q.ldb * n; i++) q.B[i] = 0.0f;
                dgt_run_f32(&q, 1);
                for (int64_t j = 0; j < n; j++)
                    for (int64_t i = 0; i < m; i++)
                        cr_assert(q.C[i + j * q.ldc] == 0 && !signbit(q.C[i + j * q.ldc]));
                dgt_free_f32(&q);
            }
    }
    double C[4] = {7, 7, 7, 7}, A[4] = {1, 2, 3, 4};
    bn_det_gemm_f64(0, 2, 2, A, 1, A, 2, C, 1, 1);
    bn_det_gemm_f64(2, 0, 2, A, 2, A, 2, C, 2, 1);
    for (int i = 0; i < 4; i++) cr_assert_eq(C[i], 7.0, "m = 0 or n = 0 must not write C");
}

/* Inf and NaN propagate (NaN payloads are outside the contract). */
Test(det_gemm, inf_nan)
{
    dgt_prob_f64 p;
    dgt_make_f64(&p, 33, 9, 20, 3);
    p.A[5 + 4 * p.lda] = INFINITY; /* row 5 → ±inf (or NaN where B = 0: none) */
    p.B[7 + 2 * p.ldb] = NAN;      /* column 2 → NaN */
    dgt_run_f64(&p, 1);
    for (int64_t j = 0; j < p.n; j++)
        for (int64_t i = 0; i < p.m; i++) {
            double v = p.C[i + j * p.ldc];
            if (j == 2)
                cr_assert(isnan(v), "(%lld,2) should be NaN", (long long)i);
            else if (i == 5)
                cr_assert(isinf(v), "(5,%lld) should be inf", (long long)j);
            else
                cr_assert(isfinite(v));
        }
    dgt_free_f64(&p);
}

/* ------------------------------- (b) a column does not depend on n or on j */

/* For a shape (m, k): B has 300 columns; the GEMM runs on the first n of them
 * (n = 1, 2, 5, 17, 300) and, for n = 1, on every column alone; each column
 * must have the same bits in every run.  Column j sits in a different place
 * of the register blocks for each n (and with n > NR, A is packed). */
#define DGT_COLUMNS(SFX, T)                                                                \
    static const int64_t shapes[][2] = {{50, 30},  {20, 400}, {64, 256},  {256, 64},       \
                                        {1, 1},    {7, 3},    {100, 257}, {33, 513},       \
                                        {129, 17}, {500, 600}, {17, 1100}};                \
    static const int64_t ns[] = {2, 5, 17, 300};                                           \
    for (int s = 0; s < (int)(sizeof shapes / sizeof shapes[0]); s++) {                    \
        const int64_t m = shapes[s][0], k = shapes[s][1];                                  \
        dgt_prob_##SFX p;                                                                  \
        dgt_make_##SFX(&p, m, 300, k, (uint64_t)(31 + s));                                 \
        T *alone = malloc(sizeof(T) * (size_t)(m * 300));                                  \
        cr_assert(alone);                                                                  \
        for (int64_t j = 0; j < 300; j++)                                                  \
            GEMM_##SFX(m, 1, k, p.A, p.lda, p.B + j * p.ldb, p.ldb, alone + j * m, m, 1);  \
        for (int t = 0; t < 4; t++) {                                                      \
            p.n = ns[t];                                                                   \
            dgt_run_##SFX(&p, 1);                                                          \
            for (int64_t j = 0; j < p.n; j++)                                              \
                cr_assert(memcmp(alone + j * m, p.C + j * p.ldc, sizeof(T) * (size_t)m) == 0, \
                          "m=%lld k=%lld: column %lld differs between n=1 and n=%lld",     \
                          (long long)m, (long long)k, (long long)j, (long long)p.n);       \
        }                                                                                  \
        free(alone);                                                                       \
        dgt_free_##SFX(&p);                                                                \
    }

#define GEMM_f64 bn_det_gemm_f64
#define GEMM_f32 bn_det_gemm_f32
Test(det_gemm, column_independent_of_n_f64) { DGT_COLUMNS(f64, double) }
Test(det_gemm, column_independent_of_n_f32) { DGT_COLUMNS(f32, float) }

/* ------------------------------------------------- (c) across thread counts */

/* Shapes above the parallel threshold, split along n (n >= m) and along m
 * (tall A, few columns, including S = 1 and 32). */
#define DGT_THREADS(SFX, T)                                                                \
    static const int64_t shapes[][3] = {{64, 300, 256}, {256, 300, 64}, {257, 33, 1000},   \
                                        {2000, 32, 300}, {3000, 1, 100}, {1000, 7, 600},   \
                                        {100, 2000, 30}};                                  \
    for (int s = 0; s < (int)(sizeof shapes / sizeof shapes[0]); s++) {                    \
        dgt_prob_##SFX p;                                                                  \
        dgt_make_##SFX(&p, shapes[s][0], shapes[s][1], shapes[s][2], (uint64_t)(77 + s));  \
        const size_t bytes = sizeof(T) * (size_t)(p.ldc * p.n);                            \
        T *ref = malloc(bytes);                                                            \
        cr_assert(ref);                                                                    \
        dgt_run_##SFX(&p, 1);                                                              \
        memcpy(ref, p.C, bytes);                                                           \
        for (int threads = 2; threads <= 3; threads++) {                                   \
            dgt_run_##SFX(&p, threads);                                                    \
            cr_assert(memcmp(ref, p.C, bytes) == 0, "m=%lld n=%lld k=%lld: threads=%d "    \
                      "differs from threads=1", (long long)p.m, (long long)p.n,            \
                      (long long)p.k, threads);                                            \
        }                                                                                  \
        /* From inside a parallel region: must not nest, must give the same bits. */       \
        int bad = 0;                                                                       \
        _Pragma("omp parallel num_threads(2) reduction(+ : bad)")                          \
        {                                                                                  \
            T *mine = malloc(bytes);                                                       \
            if (!mine) {                                                                   \
                bad++;                                                                     \
            } else {                                                                       \
                memcpy(mine, ref, bytes);                                                  \
                GEMM_##SFX(p.m, p.n, p.k, p.A, p.lda, p.B, p.ldb, mine, p.ldc, 2);         \
                bad += memcmp(ref, mine, bytes) != 0;                                      \
                free(mine);                                                                \
            }                                                                              \
        }                                                                                  \
        cr_assert_eq(bad, 0, "m=%lld n=%lld k=%lld: call inside a parallel region differs", \
                     (long long)p.m, (long long)p.n, (long long)p.k);                      \
        free(ref);                                                                         \
        dgt_free_##SFX(&p);                                                                \
    }

Test(det_gemm, threads_f64) { DGT_THREADS(f64, double) }
Test(det_gemm, threads_f32) { DGT_THREADS(f32, float) }

/* --------------------------------------------- (d) across instruction sets */

/* Each SIMD path against the portable one, on shapes that exercise every
 * tail, the one-column kernel, packing and k-blocking. */
#define DGT_ISA(SFX, T, ISA)                                                               \
    if (!bn_det_gemm_isa_supported(ISA)) {                                                 \
        fprintf(stderr, "[det_gemm] SKIPPED: this CPU lacks the %s path\n",                \
                bn_det_gemm_isa_name(ISA));                                                \
        cr_skip_test("CPU lacks %s", bn_det_gemm_isa_name(ISA));                           \
    }                                                                                      \
    static const int64_t shapes[][3] = {{1, 1, 1},     {7, 300, 3},   {17, 9, 33},         \
                                        {64, 1, 256},  {256, 1, 64},  {100, 17, 257},      \
                                        {257, 33, 600}, {33, 257, 100}, {1000, 2, 1100},   \
                                        {48, 48, 48},  {49, 8, 513},  {24, 6, 1}};         \
    for (int s = 0; s < (int)(sizeof shapes / sizeof shapes[0]); s++) {                    \
        dgt_prob_##SFX p;                                                                  \
        dgt_make_##SFX(&p, shapes[s][0], shapes[s][1], shapes[s][2], (uint64_t)(500 + s)); \
        const size_t bytes = sizeof(T) * (size_t)(p.ldc * p.n);                            \
        T *ref = malloc(bytes);                                                            \
        cr_assert(ref);                                                                    \
        cr_assert(bn_det_gemm_set_isa(BN_DG_ISA_GENERIC));                                 \
        dgt_run_##SFX(&p, 1);                                                              \
        memcpy(ref, p.C, bytes);                                                           \
        cr_assert(bn_det_gemm_set_isa(ISA));                                               \
        cr_assert_eq(bn_det_gemm_isa(), ISA);                                              \
        for (int threads = 1; threads <= 2; threads++) {                                   \
            dgt_run_##SFX(&p, threads);                                                    \
            cr_assert(memcmp(ref, p.C, bytes) == 0, "%s vs generic: m=%lld n=%lld k=%lld " \
                      "threads=%d differ", bn_det_gemm_isa_name(ISA), (long long)p.m,      \
                      (long long)p.n, (long long)p.k, threads);                            \
        }                                                                                  \
        free(ref);                                                                         \
        dgt_free_##SFX(&p);                                                                \
    }

Test(det_gemm, isa_avx512_f64) { DGT_ISA(f64, double, BN_DG_ISA_AVX512) }
Test(det_gemm, isa_avx512_f32) { DGT_ISA(f32, float, BN_DG_ISA_AVX512) }
Test(det_gemm, isa_avx2_f64) { DGT_ISA(f64, double, BN_DG_ISA_AVX2) }
Test(det_gemm, isa_avx2_f32) { DGT_ISA(f32, float, BN_DG_ISA_AVX2) }

/* BN_DET_GEMM_ISA is read at the first call of the process (each Criterion
 * test is a fresh process).  "generic" is always available. */
Test(det_gemm, env_override)
{
    setenv("BN_DET_GEMM_ISA", "generic", 1);
    cr_assert_eq(bn_det_gemm_isa(), BN_DG_ISA_GENERIC,
                 "BN_DET_GEMM_ISA=generic not honoured (run without --no-fork)");
    cr_assert_str_eq(bn_det_gemm_isa_name(bn_det_gemm_isa()), "generic");
    /* bn_det_gemm_set_isa refuses a path the CPU lacks and keeps the old one. */
    for (int isa = 0; isa < BN_DG_ISA_COUNT; isa++)
        if (!bn_det_gemm_isa_supported((bn_dg_isa)isa)) {
            cr_assert_eq(bn_det_gemm_set_isa((bn_dg_isa)isa), 0);
            cr_assert_eq(bn_det_gemm_isa(), BN_DG_ISA_GENERIC);
        }
    cr_assert_eq(bn_det_gemm_set_isa(BN_DG_ISA_COUNT), 0);
}
