/* Deterministic dense matrix product for the CPU backend.
 *
 * Why this exists: the project promises that trajectory s gives bitwise the
 * same numbers whether it runs alone (S = 1) or inside a batch of 10,000, and
 * whatever the thread count.  OpenBLAS does not promise that: the rounding of
 * column j of A·B depends on how many columns the call has (it picks other
 * microkernels, small-matrix paths and K-blockings), so the per-step products
 * U = Xc·W and G = Xcᵀ·Q would couple the trajectories through rounding.
 *
 * CONTRACT (both precisions).  C = A·B, every matrix column-major, beta = 0
 * (C is overwritten).  Every element is exactly the chain
 *
 *     c = +0;  for p = 0 .. k-1:  c = fma(A[i,p], B[p,j], c)
 *
 * with a fused (single-rounding) multiply-add in increasing p.  So the bits of
 * C[i,j] depend only on row i of A and column j of B: not on m, n or k-blocking,
 * not on where column j sits among the columns, not on the thread count and
 * not on which instruction-set path ran (an FMA is correctly rounded, so a
 * vector lane, a scalar vfmadd and the C library's fma() agree bit for bit).
 * Two caveats, both outside what the simulator produces: when the result is a
 * NaN, its payload/sign may differ between paths; and the vector paths obey
 * the MXCSR flush-to-zero/denormals-are-zero bits (default off) while a
 * software fma() would not.
 *
 * Argument rules: m, n, k >= 0 (nothing is done for m <= 0 or n <= 0; k = 0
 * gives C = +0); lda >= m, ldb >= k, ldc >= m; C must not overlap A or B.
 * threads <= 1 runs serially in the calling thread; threads > 1 uses an
 * OpenMP team of at most that size for products big enough to gain from it,
 * and never opens a nested parallel region (a call from inside one is serial).
 * The functions are thread-safe (the packing scratch is per thread).
 *
 * Instruction set: AVX-512F, else AVX2+FMA, else portable C (fma()/fmaf()
 * from <math.h>: same bits, much slower), chosen once with
 * __builtin_cpu_supports.  The environment variable BN_DET_GEMM_ISA =
 * avx512 | avx2 | generic overrides the choice (read once, at the first call;
 * a path the CPU lacks falls back to the best one it has, with a warning on
 * stderr).  Tests and benchmarks can also switch with bn_det_gemm_set_isa. */
#ifndef BN_DET_GEMM_H
#define BN_DET_GEMM_H

#include <stdint.h>

/* C = A·B.  A: m×k col-major (lda), B: k×n col-major (ldb), C: m×n
 * col-major (ldc), overwritten.  See the contract above. */
void bn_det_gemm_f64(int64_t m, int64_t n, int64_t k, const double *A, int64_t lda,
                     const double *B, int64_t ldb, double *C, int64_t ldc, int threads);
/* The same in single precision (fmaf chains, float accumulation). */
void bn_det_gemm_f32(int64_t m, int64_t n, int64_t k, const float *A, int64_t lda,
                     const float *B, int64_t ldb, float *C, int64_t ldc, int threads);

/* ------------------------------------------------ path selection (testing) */

typedef enum {
    BN_DG_ISA_GENERIC = 0, /* portable C with fma()/fmaf()                     */
    BN_DG_ISA_AVX2 = 1,    /* AVX2 + FMA, 256-bit                               */
    BN_DG_ISA_AVX512 = 2,  /* AVX-512F, 512-bit                                 */
    BN_DG_ISA_COUNT
} bn_dg_isa;

/* 1 if this CPU can run the path (GENERIC: always). */
int bn_det_gemm_isa_supported(bn_dg_isa isa);
/* The path the next call will use (resolves the default/env choice). */
bn_dg_isa bn_det_gemm_isa(void);
/* "generic", "avx2", "avx512". */
const char *bn_det_gemm_isa_name(bn_dg_isa isa);
/* Forces a path for the whole process (tests, benchmarks).  Returns 0 and
 * changes nothing when the CPU lacks it.  Calls already running are not
 * affected; the results are the same bits either way. */
int bn_det_gemm_set_isa(bn_dg_isa isa);

#endif
