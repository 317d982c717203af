/* CPU backend: OpenBLAS for the two products of a step, OpenMP across
 * trajectories for the column passes (bn_math.h). */
#include "../backend.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* OpenBLAS's own thread control, declared here to avoid depending on which
 * cblas.h variant is first on the include path. */
extern void openblas_set_num_threads(int num_threads);
extern char *openblas_get_config(void);

static void cpu_destroy(bn_backend *be) { free(be); }

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

static void cpu_dealloc(bn_backend *be, void *ptr)
{
    (void)be;
    free(ptr);
}

static bn_status cpu_copy(bn_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes) memcpy(dst, src, bytes);
    return BN_OK;
}

static bn_status cpu_synchronize(bn_backend *be)
{
    (void)be;
    return BN_OK;
}

#define REAL double
#define BN_SFX(name) name##_f64
#define CBLAS_GEMM cblas_dgemm
#include "cpu_ops_impl.h"
#undef REAL
#undef BN_SFX
#undef CBLAS_GEMM

#define REAL float
#define BN_SFX(name) name##_f32
#define CBLAS_GEMM cblas_sgemm
#include "cpu_ops_impl.h"
#undef REAL
#undef BN_SFX
#undef CBLAS_GEMM

bn_status bn_cpu_backend_open(bn_precision prec, int threads, bn_backend **out)
{
    bn_backend *be = calloc(1, sizeof *be);
    if (!be) return bn_fail(BN_ERR_NOMEM, "cannot allocate the CPU backend");
#ifdef _OPENMP
    if (threads <= 0) threads = omp_get_num_procs();
#else
    if (threads <= 0) threads = 1;
#endif
    be->ops = prec == BN_FP32 ? &cpu_ops_f32 : &cpu_ops_f64;
    be->kind = BN_BACKEND_CPU;
    be->precision = prec;
    be->threads = threads;
    openblas_set_num_threads(threads);
    snprintf(be->desc, sizeof be->desc, "cpu (%s, %d threads)", openblas_get_config(), threads);
    *out = be;
    return BN_OK;
}
