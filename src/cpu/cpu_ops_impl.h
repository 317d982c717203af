/* Template body of the CPU backend's precision-specific ops: included by
 * cpu_backend.c with REAL = double (fp64) and REAL = float (fp32).
 * No include guard on purpose. */

/* C = op(A)·B with the deterministic GEMM (det_gemm.h): every column's bits
 * depend only on that column, so a trajectory is bitwise the same alone or in
 * any batch, on any thread count.  op(A) is m×k; A: col-major with lda rows
 * (for trans, A is k×m and Aᵀ comes from cpu_transpose_of); B: k×ncols (ldb),
 * C: m×ncols (ldc). */
static bn_status BN_SFX(cpu_gemm)(bn_backend *be, int trans, int64_t m, int64_t ncols, int64_t k,
                                  const REAL *A, int64_t lda, const REAL *B, int64_t ldb, REAL *C,
                                  int64_t ldc)
{
    if (trans) {
        const void *at;
        BN_TRY(cpu_transpose_of(be, A, lda, m, sizeof(REAL), &at));
        A = at;
        lda = m;
    }
    BN_SFX(bn_det_gemm)(m, ncols, k, A, lda, B, ldb, C, ldc, be->threads);
    return BN_OK;
}

/* U = Xc·W.  Xc: n×d col-major, W: d×S col-major, U: n×S col-major. */
static bn_status BN_SFX(cpu_product_xw)(bn_backend *be, int64_t n, int64_t d, int64_t S,
                                        const void *Xc, const void *W, void *U)
{
    return BN_SFX(cpu_gemm)(be, 0, n, S, d, (const REAL *)Xc, n, (const REAL *)W, d, (REAL *)U, n);
}

/* G = Xcᵀ·Q.  Xc: n×d col-major, Q: n×S col-major, G: d×S col-major. */
static bn_status BN_SFX(cpu_product_xtq)(bn_backend *be, int64_t n, int64_t d, int64_t S,
                                         const void *Xc, const void *Q, void *G)
{
    return BN_SFX(cpu_gemm)(be, 1, d, S, n, (const REAL *)Xc, n, (const REAL *)Q, n, (REAL *)G, d);
}

/* Columns [j0, j1) of the forward pass; U, Q: n×S col-major; y, uhat: n;
 * gamma: S; stats: BN_ST_COUNT×S field-major.  Compiled once per instruction
 * set (BN_CPU_CLONES) so the lane sums of bn_math.h run in vector registers;
 * every clone does the same IEEE operations (no contraction in C11 mode), so
 * the bits do not depend on which one the CPU picks. */
BN_CPU_CLONES static void BN_SFX(cpu_forward_range)(int64_t j0, int64_t j1, int64_t n, int64_t S,
                                                    const REAL *u, const REAL *y, const REAL *uhat,
                                                    const REAL *g, int logistic, REAL *q, REAL *st)
{
    for (int64_t j = j0; j < j1; j++)
        BN_SFX(bn_forward_column)(n, u + j * n, y, uhat, g[j], logistic, q + j * n, st + j, S);
}

/* Columns are independent and each is summed in an order fixed by its length,
 * so the result does not depend on the thread count or the chunking. */
static bn_status BN_SFX(cpu_forward_columns)(bn_backend *be, int64_t n, int64_t S,
                                             const void *U, const void *y, const void *uhat,
                                             const void *gamma, int logistic, void *Q,
                                             void *stats)
{
    int64_t chunks = (S + BN_CPU_CHUNK - 1) / BN_CPU_CHUNK;
    BN_CPU_FOR(chunks > 1 && (n * S) > 4096, static, c, chunks, {
        BN_SFX(cpu_forward_range)(c * BN_CPU_CHUNK, BN_CPU_CHUNK_END(c, S),
                                  n, S, (const REAL *)U, (const REAL *)y, (const REAL *)uhat,
                                  (const REAL *)gamma, logistic, (REAL *)Q, (REAL *)stats);
    });
    return BN_OK;
}

/* Columns [j0, j1) of the update; W, G: d×S col-major; ehat: d; eta_w,
 * eta_gamma, gamma, diverged_step: S. */
BN_CPU_CLONES static void BN_SFX(cpu_update_range)(int64_t j0, int64_t j1, int64_t d, int64_t S,
                                                   REAL *w, const REAL *g, const REAL *ehat,
                                                   const REAL *ew, const REAL *eg, REAL *gam,
                                                   int update, REAL *st, int64_t step,
                                                   int64_t *diverged_step)
{
    for (int64_t j = j0; j < j1; j++) {
        int bad = BN_SFX(bn_update_column)(d, w + j * d, g + j * d, ehat, ew[j], eg[j], gam + j,
                                           update, st + j, S);
        if (bad && diverged_step[j] < 0) diverged_step[j] = step;
    }
}

static bn_status BN_SFX(cpu_update_columns)(bn_backend *be, int64_t d, int64_t S, void *W,
                                            const void *G, const void *ehat, const void *eta_w,
                                            const void *eta_gamma, void *gamma, int update,
                                            void *stats, int64_t step, int64_t *diverged_step)
{
    int64_t chunks = (S + BN_CPU_CHUNK - 1) / BN_CPU_CHUNK;
    BN_CPU_FOR(chunks > 1 && (d * S) > 4096, static, c, chunks, {
        BN_SFX(cpu_update_range)(c * BN_CPU_CHUNK, BN_CPU_CHUNK_END(c, S),
                                 d, S, (REAL *)W, (const REAL *)G, (const REAL *)ehat,
                                 (const REAL *)eta_w, (const REAL *)eta_gamma, (REAL *)gamma, update,
                                 (REAL *)stats, step, diverged_step);
    });
    return BN_OK;
}

#include "cpu_hvp_impl.h"

static const bn_backend_ops BN_SFX(cpu_ops) = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .dealloc = cpu_dealloc,
    .upload = cpu_copy,
    .download = cpu_copy,
    .synchronize = cpu_synchronize,
    .product_xw = BN_SFX(cpu_product_xw),
    .product_xtq = BN_SFX(cpu_product_xtq),
    .forward_columns = BN_SFX(cpu_forward_columns),
    .update_columns = BN_SFX(cpu_update_columns),
    .run_steps = NULL,
    .hvp_prepare_columns = BN_SFX(cpu_hvp_prepare_columns),
    .hvp_columns = BN_SFX(cpu_hvp_columns),
    .power_update = BN_SFX(cpu_power_update),
    .lanczos_extend = BN_SFX(cpu_lanczos_extend),
    .lobpcg_update = BN_SFX(cpu_lobpcg_update),
    .copy_columns = BN_SFX(cpu_copy_columns),
    .power_square = BN_SFX(cpu_power_square),
};
