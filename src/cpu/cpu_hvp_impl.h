/* Template body of the CPU backend's sharpness ops (issue 3): included by
 * cpu_ops_impl.h with REAL = double (fp64) and REAL = float (fp32).  Every op
 * applies one bn_hvp_math.h function per column, chunks of columns in
 * parallel (OpenMP), each column summed in an order fixed by its length: a
 * column's result depends neither on S nor on the thread count.  No include guard on purpose. */

/* The column ranges (BN_CPU_COLUMN_RANGE) are compiled once per instruction
 * set with the dynamic vectorizer cost model, like cpu_power_square_range:
 * the lane sums of bn_hvp_math.h run over a few dozen entries (r = 63 on the
 * paper case) with a ragged end.  Every clone does the same IEEE operations. */

BN_CPU_COLUMN_RANGE BN_SFX(cpu_hvp_prepare_range)(int64_t j0, int64_t j1, int64_t n, int64_t S, const REAL *u,
                                                  const REAL *y, const REAL *g, int logistic, REAL *r, REAL *h,
                                                  REAL *st)
{
    for (int64_t j = j0; j < j1; j++)
        BN_SFX(bn_hvp_prepare_column)(n, u + j * n, y, g[j], logistic, r + j * n, h + j * n, st + j, S);
}

/* U, R, H2: n×S col-major; y: n; gamma: S; hs: BN_HS_COUNT×S field-major. */
static bn_status BN_SFX(cpu_hvp_prepare_columns)(bn_backend *be, int64_t n, int64_t S,
                                                 const void *U, const void *y, const void *gamma,
                                                 int logistic, void *R, void *H2, void *hs)
{
    int64_t chunks = (S + BN_CPU_CHUNK - 1) / BN_CPU_CHUNK;
    BN_CPU_FOR(chunks > 1 && (n * S) > 4096, static, c, chunks, {
        BN_SFX(cpu_hvp_prepare_range)(c * BN_CPU_CHUNK, BN_CPU_CHUNK_END(c, S), n, S, (const REAL *)U,
                                      (const REAL *)y, (const REAL *)gamma, logistic, (REAL *)R, (REAL *)H2,
                                      (REAL *)hs);
    });
    return BN_OK;
}

BN_CPU_COLUMN_RANGE BN_SFX(cpu_hvp_range)(int64_t j0, int64_t j1, int64_t n, int64_t S, const REAL *u,
                                          const REAL *r, const REAL *h, const REAL *st, const REAL *ud,
                                          const REAL *dv, const REAL *sw, const REAL *sg, REAL *q, REAL *out)
{
    for (int64_t j = j0; j < j1; j++)
        out[j] = BN_SFX(bn_hvp_column)(n, u + j * n, r + j * n, h + j * n, st + j, S, ud + j * n, dv[j],
                                       sw ? sw[j] : (REAL)1, sg ? sg[j] : (REAL)1, q + j * n);
}

/* Udot, Qdot: n×S col-major; vg, hg, aw, ag: S (aw/ag NULL = ones). */
static bn_status BN_SFX(cpu_hvp_columns)(bn_backend *be, int64_t n, int64_t S, const void *U,
                                         const void *R, const void *H2, const void *hs,
                                         const void *Udot, const void *vg, const void *aw,
                                         const void *ag, void *Qdot, void *hg)
{
    int64_t chunks = (S + BN_CPU_CHUNK - 1) / BN_CPU_CHUNK;
    BN_CPU_FOR(chunks > 1 && (n * S) > 4096, static, c, chunks, {
        BN_SFX(cpu_hvp_range)(c * BN_CPU_CHUNK, BN_CPU_CHUNK_END(c, S), n, S, (const REAL *)U, (const REAL *)R,
                              (const REAL *)H2, (const REAL *)hs, (const REAL *)Udot, (const REAL *)vg,
                              (const REAL *)aw, (const REAL *)ag, (REAL *)Qdot, (REAL *)hg);
    });
    return BN_OK;
}

BN_CPU_COLUMN_RANGE BN_SFX(cpu_power_update_range)(int64_t j0, int64_t j1, int64_t d, int64_t S, REAL *v, REAL *g,
                                                   const REAL *x, const REAL *xgv, const REAL *w, int project,
                                                   REAL *c)
{
    for (int64_t j = j0; j < j1; j++)
        if (c[BN_SC_ACTIVE * S + j] != 0)
            BN_SFX(bn_power_update_column)(d, v + j * d, g + j, x + j * d, xgv[j], w + j * d, project, c + j, S);
}

/* V, X, W: d×S col-major; vg, xg: S; ctl: BN_SC_COUNT×S field-major. */
static bn_status BN_SFX(cpu_power_update)(bn_backend *be, int64_t d, int64_t S, void *V, void *vg,
                                          const void *X, const void *xg, const void *W,
                                          int project, void *ctl)
{
    int64_t chunks = (S + BN_CPU_CHUNK - 1) / BN_CPU_CHUNK;
    BN_CPU_FOR(chunks > 1 && (d * S) > 4096, static, c, chunks, {
        BN_SFX(cpu_power_update_range)(c * BN_CPU_CHUNK, BN_CPU_CHUNK_END(c, S), d, S, (REAL *)V, (REAL *)vg,
                                       (const REAL *)X, (const REAL *)xg, (const REAL *)W, project, (REAL *)ctl);
    });
    return BN_OK;
}

BN_CPU_COLUMN_RANGE BN_SFX(cpu_lobpcg_range)(int64_t j0, int64_t j1, int stage, int64_t d, int64_t S, REAL *v,
                                             REAL *g, REAL *x, REAL *xgv, const REAL *w, int project, REAL *l,
                                             double *lc, REAL *c, double tol, double tau)
{
    for (int64_t j = j0; j < j1; j++)
        if (c[BN_SC_ACTIVE * S + j] != 0)
            BN_SFX(bn_lobpcg_column)(stage, d, v + j * d, g + j, x + j * d, xgv + j, w + j * d, project,
                                     l + j * 4 * (d + 1), lc + j, c + j, S, tol, tau);
}

/* V, X, W: d×S col-major; vg, xg: S; L: 4(d+1)×S col-major; lc: BN_LC_COUNT×S
 * (float64) and ctl: BN_SC_COUNT×S field-major. */
static bn_status BN_SFX(cpu_lobpcg_update)(bn_backend *be, int stage, int64_t d, int64_t S, void *V, void *vg,
                                           void *X, void *xg, const void *W, int project, void *L, double *lc,
                                           void *ctl, double tol, double tau)
{
    int64_t chunks = (S + BN_CPU_CHUNK - 1) / BN_CPU_CHUNK;
    BN_CPU_FOR(chunks > 1 && (d * S) > 4096, static, c, chunks, {
        BN_SFX(cpu_lobpcg_range)(c * BN_CPU_CHUNK, BN_CPU_CHUNK_END(c, S), stage, d, S, (REAL *)V, (REAL *)vg,
                                 (REAL *)X, (REAL *)xg, (const REAL *)W, project, (REAL *)L, lc, (REAL *)ctl, tol,
                                 tau);
    });
    return BN_OK;
}

BN_CPU_COLUMN_RANGE BN_SFX(cpu_lanczos_extend_range)(int64_t j0, int64_t j1, int64_t d, int64_t S, int64_t k,
                                                     REAL *qw, REAL *qg, const REAL *x, const REAL *xgv,
                                                     const REAL *w, int project, uint64_t seed, uint64_t counter,
                                                     REAL *c, REAL *cf)
{
    for (int64_t j = j0; j < j1; j++)
        if (c[BN_SC_ACTIVE * S + j] != 0)
            BN_SFX(bn_lanczos_extend_column)(d, S, k, qw + j * d, qg + j, x ? x + j * d : NULL,
                                             x ? xgv + j : NULL, w + j * d, project, seed + (uint64_t)j,
                                             counter, c + j, cf ? cf + j : NULL);
}

/* QW: slots of d×S col-major (slot i at i·d·S); QG: slots of S; X: d×S or
 * NULL; xg: S; W: d×S; ctl: BN_SC_COUNT×S field-major. */
static bn_status BN_SFX(cpu_lanczos_extend)(bn_backend *be, int64_t d, int64_t S, int64_t k,
                                            void *QW, void *QG, const void *X, const void *xg,
                                            const void *W, int project, uint64_t seed,
                                            uint64_t counter, void *ctl, void *coef)
{
    int64_t chunks = (S + BN_CPU_CHUNK - 1) / BN_CPU_CHUNK;
    int64_t work = d * S * (k + 3);
    BN_CPU_FOR(chunks > 1 && work > 8192, static, c, chunks, {
        BN_SFX(cpu_lanczos_extend_range)(c * BN_CPU_CHUNK, BN_CPU_CHUNK_END(c, S), d, S, k, (REAL *)QW,
                                         (REAL *)QG, (const REAL *)X, (const REAL *)xg, (const REAL *)W, project,
                                         seed, counter, (REAL *)ctl, (REAL *)coef);
    });
    return BN_OK;
}

/* Columns [j0, j1) of power_square (per-ISA clones, as cpu_forward_range). */
BN_CPU_CLONES BN_CPU_VECT_DYNAMIC static void
BN_SFX(cpu_power_square_range)(int64_t j0, int64_t j1, int64_t r, int64_t n, int64_t S, const REAL *lam,
                               const REAL *cy, const REAL *z, const REAL *g, const REAL *sw, const REAL *sg,
                               int project, int warm, uint64_t seed, uint64_t counter, REAL *v, REAL *vg, REAL *vs,
                               REAL *vgs, double tol, int64_t maxiter, REAL *io, REAL *coef, int coef_ready)
{
    for (int64_t j = j0; j < j1; j++)
        BN_SFX(bn_sqh_power_column)(r, n, lam, cy, z + j * r, g[j], sw ? sw[j] : (REAL)1, sg ? sg[j] : (REAL)1,
                                    project, warm, seed + (uint64_t)j, counter, v + j * r, vg + j, vs + j * r,
                                    vgs + j, tol, maxiter, io + j, coef ? coef + j : NULL, coef_ready, S);
}

/* lam, cy: r; Z, V, Vs: r×S col-major; gamma, aw, ag, vg, vgs: S; io:
 * BN_SQ_COUNT×S and coef: BN_SQC_COUNT×S field-major.  Columns take very
 * different numbers of iterations, so they are dealt out in small chunks on
 * demand; each column's arithmetic is its own, so the result does not depend
 * on the schedule. */
static bn_status BN_SFX(cpu_power_square)(bn_backend *be, int64_t r, int64_t n, int64_t S, const void *lam,
                                          const void *cy, const void *Z, const void *gamma, const void *aw,
                                          const void *ag, int project, int warm, uint64_t seed, uint64_t counter,
                                          void *V, void *vg, void *Vs, void *vgs, double tol, int64_t maxiter,
                                          void *io, void *coef, int coef_ready)
{
    /* A chunk is one cache line of the per-column arrays (io, vg, coef). */
    const int64_t chunk = 64 / (int64_t)sizeof(REAL), chunks = (S + chunk - 1) / chunk;
    BN_CPU_FOR(chunks > 1 && r * S > 2048, dynamic, c, chunks, {
        BN_SFX(cpu_power_square_range)(c * chunk, c * chunk + chunk < S ? c * chunk + chunk : S, r, n, S,
                                       (const REAL *)lam, (const REAL *)cy, (const REAL *)Z, (const REAL *)gamma,
                                       (const REAL *)aw, (const REAL *)ag, project, warm, seed, counter, (REAL *)V,
                                       (REAL *)vg, (REAL *)Vs, (REAL *)vgs, tol, maxiter, (REAL *)io,
                                       (REAL *)coef, coef_ready);
    });
    return BN_OK;
}

/* Strided gather/scatter of whole columns (backend.h copy_columns). */
static bn_status BN_SFX(cpu_copy_columns)(bn_backend *be, int64_t rows, int64_t count, const void *src,
                                          int64_t srs, int64_t scs, const int64_t *sidx, void *dst,
                                          int64_t drs, int64_t dcs, const int64_t *didx)
{
    const REAL *s = (const REAL *)src;
    REAL *o = (REAL *)dst;
    BN_CPU_FOR(count > 1 && rows * count > 65536, static, k, count, {
        const REAL *a = s + (sidx ? sidx[k] : k) * scs;
        REAL *b = o + (didx ? didx[k] : k) * dcs;
        if (srs == 1 && drs == 1) {
            memcpy(b, a, (size_t)rows * sizeof(REAL));
        } else {
            for (int64_t i = 0; i < rows; i++) b[i * drs] = a[i * srs];
        }
    });
    return BN_OK;
}
