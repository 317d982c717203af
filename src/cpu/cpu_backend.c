/* CPU backend: the deterministic GEMM (det_gemm.h) for the two products of
 * a step, OpenMP across trajectories for the column passes (bn_math.h).
 * OpenBLAS serves only the one-time host linear algebra (linalg.c). */
#include "../backend.h"
#include "det_gemm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif


static bn_status cpu_alloc(bn_backend *be, size_t bytes, void **ptr)
{
    (void)be;
    /* 64-byte alignment so BLAS kernels and the column loops vectorize. */
    size_t sz = (bytes + 63) / 64 * 64;
    *ptr = aligned_alloc(64, sz ? sz : 64);
    if (!*ptr) return bn_fail(BN_ERR_NOMEM, "cannot allocate %zu bytes of host memory", bytes);
    memset(*ptr, 0, sz ? sz : 64);
    return BN_OK;
}

/* The CPU backend's context: the transposed copy of the data that the
 * deterministic GEMM needs for G = Xcᵀ·Q (it only computes C = A·B). */
typedef struct {
    const void *xc;  /* the Xc buffer the copy was made from            */
    int64_t n, d;
    void *xct;       /* Xcᵀ: d×n column-major (= Xc row-major)          */
} cpu_ctx;

static void cpu_drop_transpose(cpu_ctx *c)
{
    free(c->xct);
    c->xct = NULL;
    c->xc = NULL;
}

static void cpu_destroy(bn_backend *be)
{
    if (be->ctx) cpu_drop_transpose(be->ctx);
    free(be->ctx);
    free(be);
}

static void cpu_dealloc(bn_backend *be, void *ptr)
{
    cpu_ctx *c = be->ctx;
    if (ptr && ptr == c->xc) cpu_drop_transpose(c);
    free(ptr);
}

/* Xcᵀ for the Xc buffer at `xc`, made once: the data does not change during a
 * run, and an upload into that buffer (cpu_copy) drops the copy. */
static bn_status cpu_transpose_of(bn_backend *be, const void *xc, int64_t n, int64_t d, size_t esz,
                                  const void **xct)
{
    cpu_ctx *c = be->ctx;
    if (c->xc != xc || c->n != n || c->d != d) {
        cpu_drop_transpose(c);
        c->xct = malloc((size_t)n * (size_t)d * esz + 1);
        if (!c->xct) return bn_fail(BN_ERR_NOMEM, "cannot allocate %zu bytes for Xcᵀ", (size_t)(n * d) * esz);
        for (int64_t j = 0; j < d; j++)
            for (int64_t i = 0; i < n; i++)
                memcpy((char *)c->xct + ((size_t)j + (size_t)i * (size_t)d) * esz,
                       (const char *)xc + ((size_t)i + (size_t)j * (size_t)n) * esz, esz);
        c->xc = xc;
        c->n = n;
        c->d = d;
    }
    *xct = c->xct;
    return BN_OK;
}

static bn_status cpu_copy(bn_backend *be, void *dst, const void *src, size_t bytes)
{
    cpu_ctx *c = be->ctx;
    if (dst == c->xc) cpu_drop_transpose(c);
    if (bytes) memcpy(dst, src, bytes);
    return BN_OK;
}

static bn_status cpu_synchronize(bn_backend *be)
{
    (void)be;
    return BN_OK;
}

/* Column passes per instruction set (GCC function multiversioning), and how
 * many columns one OpenMP task takes. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define BN_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BN_CPU_CLONES
#endif
/* The structured power columns (r ≈ 63 on the paper case) are loops of a few
 * dozen entries with a ragged end; at -O2, gcc's "very cheap" vectorizer
 * leaves the copies, the tails and the loops that need an alias check scalar.
 * Its dynamic cost model vectorizes them (issue 7: a warm column's three
 * operators ~15% faster, measured in isolation), and the general sharpness
 * ops' lane sums with them.  Only there: the step kernels were tuned as
 * they are. */
#if defined(__GNUC__) && !defined(__clang__)
#define BN_CPU_VECT_DYNAMIC __attribute__((optimize("vect-cost-model=dynamic")))
#else
#define BN_CPU_VECT_DYNAMIC
#endif
#define BN_CPU_CHUNK 16
/* The end of column chunk c (BN_CPU_CHUNK columns each) of S. */
#define BN_CPU_CHUNK_END(c, S) ((c) * BN_CPU_CHUNK + BN_CPU_CHUNK < (S) ? (c) * BN_CPU_CHUNK + BN_CPU_CHUNK : (S))
/* The general sharpness ops' column ranges (cpu_hvp_impl.h). */
#define BN_CPU_COLUMN_RANGE BN_CPU_CLONES BN_CPU_VECT_DYNAMIC static void

/* The CPU ops' column loops (internal.h's BN_PAR_FOR on be->threads). */
#define BN_CPU_FOR(cond, sched, var, count, ...) \
    BN_PAR_FOR(cond, schedule(sched) num_threads(be->threads), var, count, __VA_ARGS__)

#define REAL double
#define BN_SFX(name) name##_f64
#include "cpu_ops_impl.h"
#undef REAL
#undef BN_SFX

#define REAL float
#define BN_SFX(name) name##_f32
#include "cpu_ops_impl.h"
#undef REAL
#undef BN_SFX

bn_status bn_cpu_backend_open(bn_precision prec, int threads, bn_backend **out)
{
    bn_backend *be = calloc(1, sizeof *be);
    if (be) be->ctx = calloc(1, sizeof(cpu_ctx));
    if (!be || !be->ctx) {
        free(be);
        return bn_fail(BN_ERR_NOMEM, "cannot allocate the CPU backend");
    }
#ifdef _OPENMP
    if (threads <= 0) threads = omp_get_num_procs();
#else
    if (threads <= 0) threads = 1;
#endif
    be->ops = prec == BN_FP32 ? &cpu_ops_f32 : &cpu_ops_f64;
    be->kind = BN_BACKEND_CPU;
    be->precision = prec;
    be->threads = threads;
    snprintf(be->desc, sizeof be->desc, "cpu (deterministic GEMM, %s path, %d threads)",
             bn_det_gemm_isa_name(bn_det_gemm_isa()), threads);
    *out = be;
    return BN_OK;
}
