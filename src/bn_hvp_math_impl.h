/* Template body of bn_hvp_math.h: included with REAL = double and REAL = float.
 * No include guard on purpose.
 *
 * Notation (MODEL.md): u = Xc w, s = ‖u‖/√n, z = γu/s, r = ℓ'(z)/n,
 * c = uᵀr/(n s²); h = ℓ''(z)/n.  Direction (v, δ) for (w, γ), u̇ = Xc v.
 *
 * Every column sum uses the BN_LANES partial sums of bn_math.h (bn_lane_total):
 * a serial sum is one dependent add per entry, and at the paper's sizes those
 * latency chains, not the matrix products, were most of a general power
 * iteration's time (issue 7, logistic loss).  Loops that write a vector and
 * loops that sum are kept apart, so that both vectorize. */

/* State pass of one column, after u = Xc w:
 *   r_out[i] = ℓ'(z_i)/n, h_out[i] = ℓ''(z_i)/n (n each),
 *   hs: column j of the BN_HS block (stride S between fields).
 * z is computed exactly as bn_forward_column does (g_s = γ/s, z = g_s·u). */
BN_HD BN_COLUMN_INLINE static inline void BN_SFX(bn_hvp_prepare_column)(int64_t n, const REAL *u, const REAL *y,
                                                       REAL gamma, int logistic, REAL *r_out,
                                                       REAL *h_out, REAL *hs, int64_t S)
{
    REAL ss8[BN_LANES] = {0};
    BN_LANE_LOOP(n, { ss8[k] += u[i] * u[i]; });
    REAL rn = (REAL)n;
    REAL s = R_SQRT(BN_SFX(bn_lane_total)(ss8) / rn);
    REAL g_s = gamma / s;
    for (int64_t i = 0; i < n; i++) {
        REAL z = g_s * u[i];
        REAL d2;
        r_out[i] = BN_SFX(bn_loss_d1_d2)(logistic, z, y[i], &d2) / rn;
        h_out[i] = d2 / rn;
    }
    REAL ur8[BN_LANES] = {0}, huu8[BN_LANES] = {0};
    BN_LANE_LOOP(n, {
        ur8[k] += u[i] * r_out[i];
        huu8[k] += h_out[i] * u[i] * u[i];
    });
    REAL ur = BN_SFX(bn_lane_total)(ur8);
    hs[BN_HS_S * S] = s;
    hs[BN_HS_GAMMA * S] = gamma;
    hs[BN_HS_C * S] = ur / (rn * s * s);
    hs[BN_HS_UR * S] = ur;
    hs[BN_HS_HUU * S] = BN_SFX(bn_lane_total)(huu8);
}

/* The scalars of one HVP column.  ż = A·u + B·u̇ with A = δ/s - γṡ/s² and
 * B = γ/s, so q̇ = A(r - c·u) + B(ṙ - ċ·u - c·u̇) (MODEL.md's q̇ regrouped). */
typedef struct {
    REAL A, B, c, cdot, aw;
} BN_SFX(bn_hvp_coef);

/* From the column's state hs (stride S), the three sums of the raw direction
 *   p_uu = Σ u_i·ud_i,  p_ru = Σ r_i·ud_i,  p_huu = Σ h_i·u_i·ud_i
 * (ud = Udot[:,j] = Xc v_raw), the raw γ-direction delta, and the scalings
 * aw, ag of the direction (v, δ) = (aw·v_raw, ag·delta):
 * fills the coefficients and returns (H·(v, δ))_γ scaled by ag. */
BN_HD static inline REAL BN_SFX(bn_hvp_coeffs)(int64_t n, const REAL *hs, int64_t S, REAL p_uu,
                                               REAL p_ru, REAL p_huu, REAL delta, REAL aw,
                                               REAL ag, BN_SFX(bn_hvp_coef) *cf)
{
    REAL rn = (REAL)n;
    REAL s = hs[BN_HS_S * S], gamma = hs[BN_HS_GAMMA * S], c = hs[BN_HS_C * S];
    REAL ur = hs[BN_HS_UR * S], huu = hs[BN_HS_HUU * S];
    REAL dl = ag * delta;
    REAL u_ud = aw * p_uu, r_ud = aw * p_ru, hu_ud = aw * p_huu;
    REAL sdot = u_ud / (rn * s);
    REAL A = dl / s - gamma * sdot / (s * s);
    REAL B = gamma / s;
    REAL u_rdot = A * huu + B * hu_ud;
    cf->A = A;
    cf->B = B;
    cf->c = c;
    cf->cdot = (r_ud + u_rdot) / (rn * s * s) - (REAL)2 * ur * sdot / (rn * s * s * s);
    cf->aw = aw;
    REAL hg = (u_rdot + r_ud) / s - ur * sdot / (s * s);
    return ag * hg;
}

/* One entry of aw·q̇ (the vector whose product with Xcᵀ is aw·(H·(v, δ))_w). */
BN_HD static inline REAL BN_SFX(bn_hvp_qdot_elem)(const BN_SFX(bn_hvp_coef) *cf, REAL r, REAL h,
                                                  REAL u, REAL ud_raw)
{
    REAL ud = cf->aw * ud_raw;
    REAL rdot = h * (cf->A * u + cf->B * ud);
    REAL q = cf->A * (r - cf->c * u) + cf->B * (rdot - cf->cdot * u - cf->c * ud);
    return cf->aw * q;
}

/* Directional pass of one column, after ud = Xc v_raw (Udot[:,j]):
 *   u, r, h: the state (n each), hs: the column's BN_HS entries (stride S),
 *   delta: the raw γ-part of the direction, aw/ag: scalings (1 = plain HVP),
 *   qdot_out (n): aw·q̇, so that Xcᵀ·qdot_out = aw·(H·(aw·v, ag·δ))_w.
 * Returns ag·(H·(aw·v, ag·δ))_γ.  Two passes over n: the sums, then q̇. */
BN_HD BN_COLUMN_INLINE static inline REAL BN_SFX(bn_hvp_column)(int64_t n, const REAL *u, const REAL *r,
                                               const REAL *h, const REAL *hs, int64_t S,
                                               const REAL *ud, REAL delta, REAL aw, REAL ag,
                                               REAL *qdot_out)
{
    REAL uu8[BN_LANES] = {0}, ru8[BN_LANES] = {0}, huu8[BN_LANES] = {0};
    BN_LANE_LOOP(n, {
        uu8[k] += u[i] * ud[i];
        ru8[k] += r[i] * ud[i];
        huu8[k] += h[i] * u[i] * ud[i];
    });
    BN_SFX(bn_hvp_coef) cf;
    REAL hg = BN_SFX(bn_hvp_coeffs)(n, hs, S, BN_SFX(bn_lane_total)(uu8), BN_SFX(bn_lane_total)(ru8),
                                    BN_SFX(bn_lane_total)(huu8), delta, aw, ag, &cf);
    for (int64_t i = 0; i < n; i++) qdot_out[i] = BN_SFX(bn_hvp_qdot_elem)(&cf, r[i], h[i], u[i], ud[i]);
    return hg;
}

/* One step of the shifted power iteration for one column.
 *   v (d), *vg: the stored vector V (unnormalized, norm ctl[NV], in the range
 *   of the projector Π when project != 0), overwritten by the next one;
 *   x (d), xg: A·V (the operator applied to the stored vector);
 *   w (d): the state, for Π = I - (ŵ,0)(ŵ,0)ᵀ with ŵ = w/‖w‖;
 *   ctl: the column's control entries (stride S).
 * Writes μ = VᵀX/‖V‖² (the Rayleigh quotient) to ctl[MU] and
 *   V ← Π(X - σV)/‖V‖  (= Π(A - σI)V̂ for the unit V̂),
 * and its norm to ctl[NV].  Two passes over d. */
BN_HD BN_COLUMN_INLINE static inline void BN_SFX(bn_power_update_column)(int64_t d, REAL *v, REAL *vg, const REAL *x,
                                                        REAL xg, const REAL *w, int project,
                                                        REAL *ctl, int64_t S)
{
    REAL nv = ctl[BN_SC_NV * S], sigma = ctl[BN_SC_SIGMA * S];
    REAL a8[BN_LANES] = {0}, ww = 0, wx = 0, wv = 0;
    if (project) {
        REAL ww8[BN_LANES] = {0}, wx8[BN_LANES] = {0}, wv8[BN_LANES] = {0};
        BN_LANE_LOOP(d, {
            a8[k] += v[i] * x[i];
            ww8[k] += w[i] * w[i];
            wx8[k] += w[i] * x[i];
            wv8[k] += w[i] * v[i];
        });
        ww = BN_SFX(bn_lane_total)(ww8);
        wx = BN_SFX(bn_lane_total)(wx8);
        wv = BN_SFX(bn_lane_total)(wv8);
    } else {
        BN_LANE_LOOP(d, { a8[k] += v[i] * x[i]; });
    }
    REAL a = BN_SFX(bn_lane_total)(a8) + *vg * xg;
    REAL inv = (REAL)1 / nv;
    REAL pc = (project && ww > 0) ? (wx - sigma * wv) * inv / ww : (REAL)0;
    /* Components along eigenvalues much smaller than the dominant one shrink
     * geometrically and would become subnormal after enough iterations, which
     * slows every later product many times over: flush them to zero far below
     * the precision (the norm of V is the previous one, ≈ |λ_dom(A - σI)|). */
    const REAL tiny = nv * (REAL)(sizeof(REAL) == sizeof(float) ? 1e-25 : 1e-150);
    for (int64_t i = 0; i < d; i++) {
        REAL yi = (x[i] - sigma * v[i]) * inv - pc * w[i];
        v[i] = R_FABS(yi) < tiny ? (REAL)0 : yi;
    }
    REAL yy8[BN_LANES] = {0};
    BN_LANE_LOOP(d, { yy8[k] += v[i] * v[i]; });
    REAL yg = (xg - sigma * *vg) * inv;
    *vg = yg;
    ctl[BN_SC_MU * S] = a * inv * inv;
    ctl[BN_SC_NV * S] = R_SQRT(BN_SFX(bn_lane_total)(yy8) + yg * yg);
}

/* v ← Πv = v - ŵ(ŵᵀv) (the w-part; the γ-part is untouched). */
BN_HD BN_COLUMN_INLINE static inline void BN_SFX(bn_hvp_project)(int64_t d, const REAL *w, REAL *v)
{
    REAL ww8[BN_LANES] = {0}, wv8[BN_LANES] = {0};
    BN_LANE_LOOP(d, {
        ww8[k] += w[i] * w[i];
        wv8[k] += w[i] * v[i];
    });
    REAL ww = BN_SFX(bn_lane_total)(ww8), wv = BN_SFX(bn_lane_total)(wv8);
    if (ww > 0) {
        REAL f = wv / ww;
        for (int64_t i = 0; i < d; i++) v[i] -= f * w[i];
    }
}

/* Extends an orthonormal basis of one column by one vector.
 *   qw: the column's w-parts, slot i at qw + i·d·S (d entries);
 *   qg: its γ-parts, slot i at qg[i·S];  slots 0..kt hold the basis (kt ≥ -1).
 *   x (d), xg: the new vector (NULL: the random vector (key, counter)).
 * When x is given and kt ≥ 0, ctl[ALPHA] = q_ktᵀx (the Lanczos α_kt).
 * Then slot kt+1 ← x, projected with Π when project != 0, orthogonalized
 * against slots 0..kt by modified Gram-Schmidt applied twice, projected with Π
 * again, and divided by its norm β, which goes to ctl[BETA] (β = 0 leaves a
 * zero vector).
 * coef (may be NULL; stride S): coef[b·S] = the sum over both passes of the
 * coefficient removed along slot b (b = 0..kt), i.e. q_bᵀ(Πx) up to rounding:
 * column kt of the Rayleigh-Ritz matrix QᵀAQ when x = A q_kt.
 * x may be slot kt+1 itself; it must not overlap slots 0..kt otherwise. */
BN_HD BN_COLUMN_INLINE static inline void BN_SFX(bn_lanczos_extend_column)(int64_t d, int64_t S, int64_t kt, REAL *qw,
                                                          REAL *qg, const REAL *x, const REAL *xg,
                                                          const REAL *w, int project, uint64_t key,
                                                          uint64_t counter, REAL *ctl, REAL *coef)
{
    const int64_t ws = d * S; /* stride between slots of the w-parts */
    REAL *dst = qw + (kt + 1) * ws;
    REAL *dg = qg + (kt + 1) * S;
    if (x) {
        if (kt >= 0) {
            const REAL *qk = qw + kt * ws;
            REAL a8[BN_LANES] = {0};
            BN_LANE_LOOP(d, { a8[k] += qk[i] * x[i]; });
            ctl[BN_SC_ALPHA * S] = BN_SFX(bn_lane_total)(a8) + qg[kt * S] * *xg;
        }
        if (x != dst)
            for (int64_t i = 0; i < d; i++) dst[i] = x[i];
        *dg = *xg;
    } else {
        for (int64_t i = 0; i < d; i++) dst[i] = (REAL)bn_hvp_random(key, counter, i);
        *dg = (REAL)bn_hvp_random(key, counter, d);
    }
    if (project) BN_SFX(bn_hvp_project)(d, w, dst);
    for (int pass = 0; pass < 2; pass++)
        for (int64_t b = 0; b <= kt; b++) {
            const REAL *qb = qw + b * ws;
            REAL qgb = qg[b * S];
            REAL c8[BN_LANES] = {0};
            BN_LANE_LOOP(d, { c8[k] += qb[i] * dst[i]; });
            REAL c = BN_SFX(bn_lane_total)(c8) + qgb * *dg;
            for (int64_t i = 0; i < d; i++) dst[i] -= c * qb[i];
            *dg -= c * qgb;
            if (coef) coef[b * S] = pass ? coef[b * S] + c : c;
        }
    /* Again after the orthogonalization: the component along ŵ must be small
     * relative to the new vector, not to x (it would otherwise grow from step
     * to step like an eigenvector of eigenvalue 0). */
    if (project) BN_SFX(bn_hvp_project)(d, w, dst);
    REAL nn8[BN_LANES] = {0};
    BN_LANE_LOOP(d, { nn8[k] += dst[i] * dst[i]; });
    REAL beta = R_SQRT(BN_SFX(bn_lane_total)(nn8) + *dg * *dg);
    if (beta > 0) {
        REAL inv = (REAL)1 / beta;
        for (int64_t i = 0; i < d; i++) dst[i] *= inv;
        *dg *= inv;
    }
    ctl[BN_SC_BETA * S] = beta;
}

/* STEP's Rayleigh-Ritz from one column's Gram entries gr (REAL), p in the
 * basis when use_p, in float64 from there (bn_lobpcg_ritz,
 * bn_lobpcg_coefficients): the combination's coefficients c, the sphere's
 * projection factor *f = ŵᵀ(Ar)/ŵᵀŵ, the second Ritz value *th2 and the
 * Ritz value (NaN for a non-finite state), returned.  Shared with the CUDA
 * kernel. */
BN_HD BN_COLUMN_INLINE static inline double BN_SFX(bn_lobpcg_plan)(const REAL *gr, int project, int use_p,
                                                                   double tau, REAL *c, REAL *f, double *th2)
{
    double g[BN_LG_COUNT], cf[3] = {1, 0, 0}, th, in[BN_LG_NIN];
    for (int k = 0; k < BN_LG_COUNT; k++) g[k] = (double)gr[k];
    if (bn_lobpcg_ritz(g, use_p, tau, &th, th2, cf) == 0) th = NAN;
    bn_lobpcg_coefficients(g, cf, th, in);
    for (int k = 0; k < BN_LG_NIN; k++) c[k] = (REAL)in[k];
    *f = project && gr[BN_LG_WW] > 0 ? gr[BN_LG_WA] / gr[BN_LG_WW] : (REAL)0;
    return th;
}

/* One entry of PREDICT's combination a·v + b·x (bn_lobpcg_predict), shared
 * with the CUDA kernel; b = 0 (no extrapolation) reads no x, whatever it
 * holds, NaN included. */
BN_HD BN_COLUMN_INLINE static inline REAL BN_SFX(bn_lobpcg_predict_entry)(REAL a, REAL b, REAL v, REAL x)
{
    return b != 0 ? a * v + b * x : a * v;
}

/* One entry of LOBPCG's combination (STEP, bn_hvp_math.h), shared with the CUDA kernel:
 * c the BN_LG_NIN inputs (cx, cr, cp, pr, pp, μ), ri and ari the entry of r
 * and of ΠAr; the entries of x, Ax, p, Ap are updated in place, and the
 * entry of the new residual Ax - μx is returned. */
BN_HD BN_COLUMN_INLINE static inline REAL BN_SFX(bn_lobpcg_combine_entry)(const REAL *c, REAL ri, REAL ari, REAL *x,
                                                                          REAL *ax, REAL *p, REAL *ap)
{
    REAL xn = c[BN_LG_CX] * *x + c[BN_LG_CR] * ri + c[BN_LG_CP] * *p;
    REAL axn = c[BN_LG_CX] * *ax + c[BN_LG_CR] * ari + c[BN_LG_CP] * *ap;
    *p = c[BN_LG_PR] * ri + c[BN_LG_PPC] * *p;
    *ap = c[BN_LG_PR] * ari + c[BN_LG_PPC] * *ap;
    *x = xn;
    *ax = axn;
    return axn - c[BN_LG_MU] * xn;
}

/* One stage of LOBPCG for one column (bn_hvp_math.h: BN_LOB_*): L the
 * column's 4(d+1) reals, v/vg the vector last multiplied, x/xg its product
 * (START projects it in place with Π when project; PREDICT: v/vg and x/xg
 * the last two records' vectors, x ← the prediction; SHARED reads L and w
 * only), lc: BN_LC_COUNT fields
 * (float64) and ctl: BN_SC_COUNT fields, both of stride S; tol the stopping
 * rule's, tau bn_lobpcg_ritz's.  A column that stops clears ctl[ACTIVE]. */
BN_HD BN_COLUMN_INLINE static inline void BN_SFX(bn_lobpcg_column)(int stage, int64_t d, REAL *BN_RESTRICT v,
                                                                   REAL *vg, REAL *BN_RESTRICT x, REAL *xg,
                                                                   const REAL *BN_RESTRICT w, int project, REAL *L,
                                                                   double *lc, REAL *ctl, int64_t S, double tol,
                                                                   double tau)
{
    /* The four vectors of L are disjoint, and none overlaps v, x or w. */
    const int64_t e = d + 1;
    REAL *BN_RESTRICT lx = L, *BN_RESTRICT lax = L + e, *BN_RESTRICT lp = L + 2 * e, *BN_RESTRICT lap = L + 3 * e;
    int stop;
    if (stage == BN_LOB_SHARED) {
        REAL g8[5][BN_LANES] = {{0}};
        BN_LANE_LOOP(d, {
            g8[0][k] += lx[i] * lx[i];
            g8[1][k] += lx[i] * lax[i];
            g8[2][k] += w[i] * w[i];
            g8[3][k] += w[i] * lx[i];
            g8[4][k] += w[i] * lax[i];
        });
        double mu = bn_lobpcg_shared_value((double)(BN_SFX(bn_lane_total)(g8[0]) + lx[d] * lx[d]),
                                           (double)(BN_SFX(bn_lane_total)(g8[1]) + lx[d] * lax[d]),
                                           (double)BN_SFX(bn_lane_total)(g8[2]), (double)BN_SFX(bn_lane_total)(g8[3]),
                                           (double)BN_SFX(bn_lane_total)(g8[4]));
        if (bn_lobpcg_check_shared(lc, S, mu, tol)) ctl[BN_SC_ACTIVE * S] = 0;
        return;
    }
    if (stage == BN_LOB_PREDICT) {
        REAL g8[3][BN_LANES] = {{0}};
        BN_LANE_LOOP(d, {
            g8[0][k] += v[i] * v[i];
            g8[1][k] += x[i] * x[i];
            g8[2][k] += v[i] * x[i];
        });
        double a, b;
        bn_lobpcg_predict((double)(BN_SFX(bn_lane_total)(g8[0]) + *vg * *vg),
                          (double)(BN_SFX(bn_lane_total)(g8[1]) + *xg * *xg),
                          (double)(BN_SFX(bn_lane_total)(g8[2]) + *vg * *xg), &a, &b);
        const REAL ra = (REAL)a, rb = (REAL)b;
        for (int64_t i = 0; i < d; i++) x[i] = BN_SFX(bn_lobpcg_predict_entry)(ra, rb, v[i], x[i]);
        *xg = BN_SFX(bn_lobpcg_predict_entry)(ra, rb, *vg, *xg);
        return;
    }
    if (stage == BN_LOB_START) {
        if (project) BN_SFX(bn_hvp_project)(d, w, x);
        REAL xx8[BN_LANES] = {0}, xa8[BN_LANES] = {0};
        BN_LANE_LOOP(d, {
            lx[i] = v[i];
            lax[i] = x[i];
            lp[i] = lap[i] = 0;
            xx8[k] += v[i] * v[i];
            xa8[k] += v[i] * x[i];
        });
        lx[d] = *vg;
        lax[d] = *xg;
        lp[d] = lap[d] = 0;
        REAL xx = BN_SFX(bn_lane_total)(xx8) + lx[d] * lx[d];
        REAL mu = xx > 0 ? (BN_SFX(bn_lane_total)(xa8) + lx[d] * lax[d]) / xx : (REAL)NAN;
        REAL rr8[BN_LANES] = {0};
        BN_LANE_LOOP(d, {
            v[i] = lax[i] - mu * lx[i];
            rr8[k] += v[i] * v[i];
        });
        *vg = lax[d] - mu * lx[d];
        REAL nv = R_SQRT(BN_SFX(bn_lane_total)(rr8) + *vg * *vg);
        ctl[BN_SC_MU * S] = mu;
        ctl[BN_SC_NV * S] = nv;
        stop = bn_lobpcg_check_start(lc, S, (double)mu, (double)nv, tol);
    } else {
        REAL s8[BN_LG_COUNT][BN_LANES] = {{0}};
        BN_LANE_LOOP(d, {
            REAL xi = lx[i], ri = v[i], pi = lp[i], axi = lax[i], ari = x[i], api = lap[i], wi = w[i];
            s8[BN_LG_XX][k] += xi * xi;
            s8[BN_LG_XR][k] += xi * ri;
            s8[BN_LG_XP][k] += xi * pi;
            s8[BN_LG_RR][k] += ri * ri;
            s8[BN_LG_RP][k] += ri * pi;
            s8[BN_LG_PP][k] += pi * pi;
            s8[BN_LG_KXX][k] += xi * axi;
            s8[BN_LG_KXR][k] += xi * ari;
            s8[BN_LG_KXP][k] += xi * api;
            s8[BN_LG_KRR][k] += ri * ari;
            s8[BN_LG_KRP][k] += ri * api;
            s8[BN_LG_KPP][k] += pi * api;
            s8[BN_LG_WA][k] += wi * ari;
            s8[BN_LG_WW][k] += wi * wi;
        });
        const REAL xg_ = lx[d], rg = *vg, pg = lp[d], axg = lax[d], arg = *xg, apg = lap[d];
        const REAL tail[BN_LG_COUNT] = {xg_ * xg_, xg_ * rg,  xg_ * pg,  rg * rg,  rg * pg,  pg * pg, xg_ * axg,
                                        xg_ * arg, xg_ * apg, rg * arg, rg * apg, pg * apg, 0,       0};
        REAL gr[BN_LG_COUNT], c[BN_LG_NIN], f;
        for (int q = 0; q < BN_LG_COUNT; q++) gr[q] = BN_SFX(bn_lane_total)(s8[q]) + tail[q];
        double th2, th = BN_SFX(bn_lobpcg_plan)(gr, project, lc[BN_LC_USEP * S] != 0, tau, c, &f, &th2);
        REAL rr8[BN_LANES] = {0};
        BN_LANE_LOOP(d, {
            v[i] = BN_SFX(bn_lobpcg_combine_entry)(c, v[i], x[i] - f * w[i], &lx[i], &lax[i], &lp[i], &lap[i]);
            rr8[k] += v[i] * v[i];
        });
        *vg = BN_SFX(bn_lobpcg_combine_entry)(c, *vg, *xg, &lx[d], &lax[d], &lp[d], &lap[d]);
        ctl[BN_SC_MU * S] = c[BN_LG_MU];
        stop = bn_lobpcg_check_step(lc, S, th, th2, (double)(BN_SFX(bn_lane_total)(rr8) + *vg * *vg), tol);
    }
    if (stop) ctl[BN_SC_ACTIVE * S] = 0;
}
