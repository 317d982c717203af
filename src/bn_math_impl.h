/* Template body of bn_math.h: included with REAL = double and REAL = float.
 * No include guard on purpose. */

/* The logistic loss and its derivatives at t = -y·z all come from the one
 * e = exp(-|t|) (bn_logistic_e), so the pairs that a pass needs (loss and
 * ℓ', ℓ' and ℓ'') need one exp, not two.  Per step, exp and log1p are most of
 * a logistic run's time (issue 7).  Each formula is written once, in the
 * pairs; the single values below are read off them. */
BN_HD BN_COLUMN_INLINE static inline REAL BN_SFX(bn_logistic_e)(REAL t)
{
    return R_EXP(-R_FABS(t));
}

/* σ(t) from e = exp(-|t|), without overflow for either sign of t. */
BN_HD BN_COLUMN_INLINE static inline REAL BN_SFX(bn_sigmoid_e)(REAL t, REAL e)
{
    return t >= 0 ? (REAL)1 / ((REAL)1 + e) : e / ((REAL)1 + e);
}

/* ℓ''(z, y) = σ(t)σ(-t) = e/(1 + e)² from e = exp(-|t|): accurate to a few
 * ulps for every t.  (p(1 - p) with p = σ(yz) cancels where p is near 1:
 * 1e-3 relative at yz = 30 in fp64, all digits in fp32.) */
BN_HD BN_COLUMN_INLINE static inline REAL BN_SFX(bn_logistic_d2_e)(REAL e)
{
    REAL q = (REAL)1 / ((REAL)1 + e);
    return e * q * q;
}

/* ℓ(z, y) and *d1 = ℓ'(z, y) = ∂ℓ/∂z with one exp (the forward pass).
 * Logistic uses softplus(-yz) in the form that never overflows. */
BN_HD BN_COLUMN_INLINE static inline REAL BN_SFX(bn_loss_value_d1)(int logistic, REAL z, REAL y, REAL *d1)
{
    if (!logistic) {
        REAL e = z - y;
        *d1 = e;
        return (REAL)0.5 * e * e;
    }
    REAL t = -y * z, e = BN_SFX(bn_logistic_e)(t);
    *d1 = -y * BN_SFX(bn_sigmoid_e)(t, e);
    return (t > 0 ? t : (REAL)0) + R_LOG1P(e);
}

/* ℓ'(z, y), and *d2 = ℓ''(z, y) = ∂²ℓ/∂z², with one exp (the HVP state). */
BN_HD BN_COLUMN_INLINE static inline REAL BN_SFX(bn_loss_d1_d2)(int logistic, REAL z, REAL y, REAL *d2)
{
    if (!logistic) {
        *d2 = (REAL)1;
        return z - y;
    }
    REAL t = -y * z, e = BN_SFX(bn_logistic_e)(t);
    *d2 = BN_SFX(bn_logistic_d2_e)(e);
    return -y * BN_SFX(bn_sigmoid_e)(t, e);
}

/* ℓ(z, y), ℓ'(z, y) and ℓ''(z, y) alone (the unused half of a pair is dead
 * code once inlined). */
BN_HD BN_COLUMN_INLINE static inline REAL BN_SFX(bn_loss_value)(int logistic, REAL z, REAL y)
{
    REAL d1;
    return BN_SFX(bn_loss_value_d1)(logistic, z, y, &d1);
}

BN_HD BN_COLUMN_INLINE static inline REAL BN_SFX(bn_loss_d1)(int logistic, REAL z, REAL y)
{
    REAL d2;
    return BN_SFX(bn_loss_d1_d2)(logistic, z, y, &d2);
}

BN_HD BN_COLUMN_INLINE static inline REAL BN_SFX(bn_loss_d2)(int logistic, REAL z, REAL y)
{
    REAL d2;
    BN_SFX(bn_loss_d1_d2)(logistic, z, y, &d2);
    return d2;
}

/* One entry of q = (γ/s)(r - c·u), the vector whose product with Xcᵀ is ∇_w L. */
BN_HD BN_COLUMN_INLINE static inline REAL BN_SFX(bn_grad_q_elem)(REAL gamma_over_s, REAL r, REAL c, REAL u)
{
    return gamma_over_s * (r - c * u);
}

/* Column sums use BN_LANES interleaved partial sums (element i goes to lane
 * i mod BN_LANES) added in a fixed tree: the order depends only on the length,
 * never on S or the thread count, and the lanes are independent, so the loops
 * vectorize and pipeline without any reassociation by the compiler. */
BN_HD BN_COLUMN_INLINE static inline REAL BN_SFX(bn_lane_total)(const REAL *acc)
{
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Forward pass of one trajectory (one column), after u = Xc w:
 *   u: n, y: n, uhat: n (Xc w_ref/‖Xc w_ref‖, or all zeros),
 *   q_out: n, receives (γ/s)(r - c·u);  stats: column j of the stats block.
 * Three passes over n: s needs ‖u‖ before z, and c needs uᵀr before q. */
BN_HD BN_COLUMN_INLINE static inline void BN_SFX(bn_forward_column)(int64_t n, const REAL *u, const REAL *y,
                                                   const REAL *uhat, REAL gamma, int logistic,
                                                   REAL *q_out, REAL *stats, int64_t S)
{
    REAL ss8[BN_LANES] = {0}, a8[BN_LANES] = {0};
    BN_LANE_LOOP(n, {
        REAL v = u[i];
        ss8[k] += v * v;
        a8[k] += v * uhat[i];
    });
    REAL ss = BN_SFX(bn_lane_total)(ss8), a = BN_SFX(bn_lane_total)(a8);
    REAL rn = (REAL)n;
    REAL s = R_SQRT(ss / rn);
    REAL g_s = gamma / s;
    REAL loss8[BN_LANES] = {0}, dot8[BN_LANES] = {0}, bres8[BN_LANES] = {0};
    BN_LANE_LOOP(n, {
        REAL z = g_s * u[i];
        REAL d1;
        loss8[k] += BN_SFX(bn_loss_value_d1)(logistic, z, y[i], &d1);
        REAL r = d1 / rn;
        dot8[k] += u[i] * r;
        q_out[i] = r;
        REAL e = u[i] - a * uhat[i];
        bres8[k] += e * e;
    });
    REAL loss = BN_SFX(bn_lane_total)(loss8), dot = BN_SFX(bn_lane_total)(dot8);
    REAL bres = BN_SFX(bn_lane_total)(bres8);
    REAL c = dot / (rn * s * s);
    for (int64_t i = 0; i < n; i++) q_out[i] = BN_SFX(bn_grad_q_elem)(g_s, q_out[i], c, u[i]);
    REAL sqrt_n = R_SQRT(rn);
    stats[BN_ST_LOSS * S] = loss / rn;
    stats[BN_ST_GAMMA * S] = gamma;
    stats[BN_ST_SNORM * S] = s;
    stats[BN_ST_GGAMMA * S] = dot / s;
    stats[BN_ST_ALPHA_S * S] = a / sqrt_n;
    stats[BN_ST_BETA_S * S] = R_SQRT(bres) / sqrt_n;
}

/* The GD update of one trajectory, after g = Xcᵀ q = ∇_w L:
 *   w: d (updated in place when update != 0), g: d, ehat: d (unit or zeros),
 *   gamma: the column's γ (updated in place), stats: column j of the stats block.
 * Returns 1 when state t is not finite (the caller marks divergence at t). */
BN_HD BN_COLUMN_INLINE static inline int BN_SFX(bn_update_column)(int64_t d, REAL *w, const REAL *g,
                                                 const REAL *ehat, REAL eta_w, REAL eta_gamma,
                                                 REAL *gamma, int update, REAL *stats, int64_t S)
{
    REAL ww8[BN_LANES] = {0}, a8[BN_LANES] = {0}, gg8[BN_LANES] = {0};
    BN_LANE_LOOP(d, {
        ww8[k] += w[i] * w[i];
        a8[k] += w[i] * ehat[i];
        gg8[k] += g[i] * g[i];
    });
    REAL ww = BN_SFX(bn_lane_total)(ww8), a = BN_SFX(bn_lane_total)(a8);
    REAL gg = BN_SFX(bn_lane_total)(gg8);
    REAL bb8[BN_LANES] = {0};
    BN_LANE_LOOP(d, {
        REAL e = w[i] - a * ehat[i];
        bb8[k] += e * e;
        if (update) w[i] -= eta_w * g[i];
    });
    REAL bb = BN_SFX(bn_lane_total)(bb8);
    stats[BN_ST_WNORM * S] = R_SQRT(ww);
    stats[BN_ST_ALPHA * S] = a;
    stats[BN_ST_BETA * S] = R_SQRT(bb);
    stats[BN_ST_GNORM * S] = R_SQRT(gg);
    REAL gamma_t = *gamma;
    if (update) *gamma = gamma_t - eta_gamma * stats[BN_ST_GGAMMA * S];
    /* Judge state t only: a non-finite w_{t+1} shows up in step t+1's loss. */
    return !(isfinite(stats[BN_ST_LOSS * S]) && isfinite(gamma_t) && isfinite(ww) && isfinite(gg));
}
