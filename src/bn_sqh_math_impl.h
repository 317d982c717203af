/* Template body of bn_sqh_math.h: included with REAL = double and REAL = float.
 * No include guard on purpose.
 *
 * One column: z (r) the state in the singular basis, γ; the data's λ (r, the
 * diagonal of AᵀA) and c_y = Aᵀy (r), shared by every column.  Sums use
 * BN_LANES interleaved partial sums in a fixed order (bn_lane_total), so a
 * column's result depends only on its own numbers. */

/* The scalars of H at (z, γ) (bn_sqh_math.h's derivation) and three sums of
 * the state reused by every product. */
typedef struct {
    REAL nu;  /* ‖u‖ = √(Σλz²)                     */
    REAL gs;  /* γ/s                               */
    REAL a;   /* c1 - c3·gᵀû: the diag(λ) part      */
    REAL kmm; /* 3c3·gᵀû - c1: the mmᵀ part         */
    REAL khm; /* -c3: the hmᵀ + mhᵀ part             */
    REAL kb;  /* γ/s - gᵀû/‖u‖: p's share of H_zγ    */
    REAL isn; /* 1/(√n‖u‖)                          */
    REAL uu, yu, zz; /* Σλz², Σc_y z, Σz²           */
    REAL l2z2, cy2, lmax; /* Σλ²z², Σc_y², max λ (the certificate's bound) */
} BN_SFX(bn_sqh_coef);

BN_HD BN_COLUMN_INLINE static inline void BN_SFX(bn_sqh_prepare)(int64_t r, int64_t n, const REAL *lam,
                                                                 const REAL *cy, const REAL *z, REAL gamma,
                                                                 BN_SFX(bn_sqh_coef) *cf)
{
    REAL uu8[BN_LANES] = {0}, yu8[BN_LANES] = {0}, zz8[BN_LANES] = {0}, lz8[BN_LANES] = {0}, cc8[BN_LANES] = {0};
    REAL lm8[BN_LANES] = {0};
    BN_LANE_LOOP(r, {
        REAL zi = z[i], li = lam[i];
        uu8[k] += li * zi * zi;
        yu8[k] += cy[i] * zi;
        zz8[k] += zi * zi;
        lz8[k] += li * li * zi * zi;
        cc8[k] += cy[i] * cy[i];
        lm8[k] = li > lm8[k] ? li : lm8[k];
    });
    REAL lmax = 0;
    for (int k = 0; k < BN_LANES; k++) lmax = lm8[k] > lmax ? lm8[k] : lmax;
    cf->l2z2 = BN_SFX(bn_lane_total)(lz8);
    cf->cy2 = BN_SFX(bn_lane_total)(cc8);
    cf->lmax = lmax;
    REAL uu = BN_SFX(bn_lane_total)(uu8), yu = BN_SFX(bn_lane_total)(yu8);
    REAL sq = R_SQRT((REAL)n), nu = R_SQRT(uu);
    REAL gs = gamma * sq / nu;
    REAL gu = gamma * sq - yu / nu;
    REAL c1 = gamma * gamma / uu, c3 = gamma / (sq * uu);
    cf->nu = nu;
    cf->gs = gs;
    cf->a = c1 - c3 * gu;
    cf->kmm = (REAL)3 * c3 * gu - c1;
    cf->khm = -c3;
    cf->kb = gs - gu / nu;
    cf->isn = (REAL)1 / (sq * nu);
    cf->uu = uu;
    cf->yu = yu;
    cf->zz = BN_SFX(bn_lane_total)(zz8);
}

/* bn_sqh_coef to and from BN_SQC_COUNT reals at stride S (the cache of one
 * record's coefficients: they depend on the state alone, not on the operator),
 * in the order of BN_SQH_COEF_FIELDS. */
BN_HD BN_COLUMN_INLINE static inline void BN_SFX(bn_sqh_coef_store)(const BN_SFX(bn_sqh_coef) *cf, REAL *c, int64_t S)
{
#define BN_SQH_STORE(f) c[BN_SQC_##f * S] = cf->f;
    BN_SQH_COEF_FIELDS(BN_SQH_STORE)
#undef BN_SQH_STORE
}

BN_HD BN_COLUMN_INLINE static inline void BN_SFX(bn_sqh_coef_load)(BN_SFX(bn_sqh_coef) *cf, const REAL *c, int64_t S)
{
#define BN_SQH_LOAD(f) cf->f = c[BN_SQC_##f * S];
    BN_SQH_COEF_FIELDS(BN_SQH_LOAD)
#undef BN_SQH_LOAD
}

/* The product (x, xg) = P^½HP^½·(v, vg), P^½ = diag(aw·I, ag) (aw = ag = 1:
 * H itself), from two sums of the raw direction, lzv = Σλ_i z_i v_i and
 * cv = Σ(c_y)_i v_i: x_i = xv·λ_i v_i + xp·λ_i z_i + xc·(c_y)_i, and the
 * return value is xg. */
typedef struct {
    REAL xv, xp, xc;
} BN_SFX(bn_sqh_dir);

BN_HD BN_COLUMN_INLINE static inline REAL BN_SFX(bn_sqh_direction)(const BN_SFX(bn_sqh_coef) *cf, REAL lzv,
                                                                   REAL cv, REAL vg, REAL aw, REAL ag,
                                                                   BN_SFX(bn_sqh_dir) *o)
{
    REAL pv = aw * lzv, c = aw * cv, dl = ag * vg; /* pᵀv', c_yᵀv', δ' of the scaled direction */
    REAL mv = pv / cf->nu, hv = cf->gs * pv - c;   /* mᵀv', hᵀv' */
    REAL cp = cf->kmm * mv / cf->nu + cf->khm * (cf->gs * mv + hv / cf->nu) + cf->kb * dl * cf->isn;
    REAL cc = -cf->khm * mv - dl * cf->isn;
    o->xv = aw * cf->a * aw;
    o->xp = aw * cp;
    o->xc = aw * cc;
    return ag * ((cf->kb * pv - c) * cf->isn + dl);
}

/* (x, xg) = P^½HP^½·(v, vg) written out (tests compare it with the general
 * HVP and the dense Hessian; the power iteration below never forms x). */
BN_HD static inline REAL BN_SFX(bn_sqh_apply)(int64_t r, const BN_SFX(bn_sqh_coef) *cf, const REAL *lam,
                                              const REAL *cy, const REAL *z, REAL aw, REAL ag, const REAL *v,
                                              REAL vg, REAL *x)
{
    REAL l8[BN_LANES] = {0}, c8[BN_LANES] = {0};
    BN_LANE_LOOP(r, {
        l8[k] += lam[i] * z[i] * v[i];
        c8[k] += cy[i] * v[i];
    });
    BN_SFX(bn_sqh_dir) o;
    REAL xg = BN_SFX(bn_sqh_direction)(cf, BN_SFX(bn_lane_total)(l8), BN_SFX(bn_lane_total)(c8), vg, aw, ag, &o);
    for (int64_t i = 0; i < r; i++) x[i] = o.xv * lam[i] * v[i] + o.xp * lam[i] * z[i] + o.xc * cy[i];
    return xg;
}

/* One step of the shifted power iteration on A = P^½HP^½, the same step as
 * bn_power_update_column (μ = VᵀAV/‖V‖², V ← Π(AV - σV)/‖V‖, the same flush to
 * zero), fused: A·V is a combination of λ∘v, λ∘z and c_y, so μ and the
 * projection's coefficient come from four sums of one pass, and a second pass
 * writes the next V.  *nv: in the norm of V, out the norm of the next one. */
BN_HD BN_COLUMN_INLINE static inline REAL BN_SFX(bn_sqh_power_step)(int64_t r, const BN_SFX(bn_sqh_coef) *cf,
                                                                    const REAL *BN_RESTRICT lam,
                                                                    const REAL *BN_RESTRICT cy,
                                                                    const REAL *BN_RESTRICT z, REAL aw, REAL ag,
                                                                    int project, REAL sigma, REAL *BN_RESTRICT v,
                                                                    REAL *vg, REAL *nv)
{
    REAL lvv8[BN_LANES] = {0}, lzv8[BN_LANES] = {0}, cv8[BN_LANES] = {0}, zv8[BN_LANES] = {0};
    BN_LANE_LOOP(r, {
        REAL vi = v[i], li = lam[i];
        lvv8[k] += li * vi * vi;
        lzv8[k] += li * z[i] * vi;
        cv8[k] += cy[i] * vi;
        zv8[k] += z[i] * vi;
    });
    REAL lvv = BN_SFX(bn_lane_total)(lvv8), lzv = BN_SFX(bn_lane_total)(lzv8);
    REAL cv = BN_SFX(bn_lane_total)(cv8), zv = BN_SFX(bn_lane_total)(zv8);
    BN_SFX(bn_sqh_dir) o;
    REAL g = *vg;
    REAL xg = BN_SFX(bn_sqh_direction)(cf, lzv, cv, g, aw, ag, &o);
    REAL inv = (REAL)1 / *nv;
    REAL vx = o.xv * lvv + o.xp * lzv + o.xc * cv + g * xg;
    REAL pc = 0;
    if (project && cf->zz > 0) {
        REAL wx = o.xv * lzv + o.xp * cf->uu + o.xc * cf->yu; /* zᵀ(AV)_z */
        pc = (wx - sigma * zv) * inv / cf->zz;
    }
    const REAL tiny = *nv * (REAL)(sizeof(REAL) == sizeof(float) ? 1e-25 : 1e-150);
    /* The new vector, then its norm: a plain loop and a read-only sum, which
     * both vectorize (one loop that writes v and sums lanes does not). */
    const REAL cvv = o.xv * inv, sv = sigma * inv, cpp = o.xp * inv, ccc = o.xc * inv;
    BN_LANE_LOOP(r, {
        REAL li = lam[i], zi = z[i];
        REAL yi = (cvv * li - sv) * v[i] + cpp * li * zi + ccc * cy[i] - pc * zi;
        v[i] = R_FABS(yi) < tiny ? (REAL)0 : yi;
    });
    REAL yy8[BN_LANES] = {0};
    BN_LANE_LOOP(r, { yy8[k] += v[i] * v[i]; });
    REAL yg = (xg - sigma * g) * inv;
    *vg = yg;
    *nv = R_SQRT(BN_SFX(bn_lane_total)(yy8) + yg * yg);
    return vx * inv * inv;
}

/* v ← the start of a power iteration, returning its norm (not normalized:
 * bn_sqh_power_step takes the norm, so a scaling pass would be wasted): v
 * itself (warm = 1: the previous record's vector) projected with Π when
 * project; or, when warm = 0 or that vector is degenerate, the pseudo-random
 * vector (key, counter) of bn_hvp_random, projected.  As sharpness.c's
 * power_start does it through lanczos_extend, up to the normalization.
 * zz = Σz² (bn_sqh_coef).  One pass of sums and one that projects and reads
 * the norm back from them, ‖v - fz‖² = vᵀv - f·zᵀv (f = zᵀv/zᵀz); where
 * that cancels (v nearly along z, ≥ 99.99% of vᵀv) the norm is summed again. */
BN_HD BN_COLUMN_INLINE static inline REAL BN_SFX(bn_sqh_start)(int64_t r, const REAL *z, REAL zz, int project,
                                                               int warm, uint64_t key, uint64_t counter, REAL *v,
                                                               REAL *vg)
{
    for (int pass = warm ? 0 : 1; pass < 2; pass++) {
        if (pass == 1) {
            for (int64_t i = 0; i < r; i++) v[i] = (REAL)bn_hvp_random(key, counter, i);
            *vg = (REAL)bn_hvp_random(key, counter, r);
        }
        const int proj = project && zz > 0;
        REAL vv8[BN_LANES] = {0}, zv8[BN_LANES] = {0};
        if (proj)
            BN_LANE_LOOP(r, {
                vv8[k] += v[i] * v[i];
                zv8[k] += z[i] * v[i];
            });
        else
            BN_LANE_LOOP(r, { vv8[k] += v[i] * v[i]; });
        REAL vv = BN_SFX(bn_lane_total)(vv8);
        if (proj) {
            REAL zv = BN_SFX(bn_lane_total)(zv8), f = zv / zz, left = vv - f * zv;
            for (int64_t i = 0; i < r; i++) v[i] -= f * z[i];
            if (left < (REAL)1e-4 * vv) {
                REAL nn8[BN_LANES] = {0};
                BN_LANE_LOOP(r, { nn8[k] += v[i] * v[i]; });
                left = BN_SFX(bn_lane_total)(nn8);
            }
            vv = left;
        }
        REAL nn = R_SQRT(vv + *vg * *vg);
        if (nn > 0 && isfinite(nn)) return nn;
    }
    return 1; /* a non-finite state: NaN flows on, as from any start */
}

/* ------------------------------------------------------- the certificate
 *
 * A warm-started power iteration can settle on the wrong eigenvalue: when
 * two eigenvalues cross between records, the start has almost no component
 * along the new top eigenvector, and the stopping rule sees nothing move
 * (measured: 8% low on the paper's data, issue 7).  Here the operator is
 * A = D + U·K·Uᵀ, D = diag(a·aw²·λ, 0), U = [aw·p, aw·c_y, ag·e_γ] (unit
 * columns below, K rescaled to match) and
 *   K = [[kmm/‖u‖² + 2·khm·γ/(s‖u‖), -khm/‖u‖, kb·isn], [., 0, -isn], [., ., 1]]
 * (bn_sqh_direction written as a matrix), so the number of its eigenvalues
 * above θ is an exact inertia count (Haynsworth; with T = K + K·W·K,
 * W = Uᵀ(D - θ)⁻¹U, congruent to K⁻¹ + W):
 *   #{λ(A) > θ} = #{D_ii > θ} + #neg(T) - #neg(K),
 * and on the sphere (A compressed to q⊥, q = (ẑ, 0); Haynsworth on A - θ
 * bordered by q) one less when qᵀ(A - θ)⁻¹q > 0.  The 3×3 inertias come from
 * the signs of the characteristic polynomial's coefficients (Descartes' rule
 * is exact for real roots).  One count just above the iteration's value
 * certifies it; a positive count starts a bisection on the count, and inverse
 * iteration through the Woodbury form gives the new eigenvector (the next
 * record's warm start).  A (nearly) singular K (γ ≈ 0) is not certified. */
typedef struct {
    double xv;      /* D = diag(xv·λ_i, 0)                               */
    double cp, cc;  /* unit columns: u1 = cp·(λ∘z), u2 = cc·c_y           */
    double iz;      /* 1/‖z‖: q = iz·z                                   */
    double K[9];    /* 3×3, the unit columns' (u3 = e_γ)                 */
    int kneg;       /* #neg(K)                                           */
    double bound;   /* ≥ every |λ(A)|                                    */
} BN_SFX(bn_sqh_lowrank);

/* 0 when K is (nearly) singular: no certificate. */
BN_HD BN_COLUMN_INLINE static inline int BN_SFX(bn_sqh_lowrank_make)(BN_SFX(bn_sqh_lowrank) *L,
                                                                    const BN_SFX(bn_sqh_coef) *cf, double aw,
                                                                    double ag)
{
    double nu = (double)cf->nu, gs = (double)cf->gs, khm = (double)cf->khm, isn = (double)cf->isn;
    double K[9] = {(double)cf->kmm / (nu * nu) + 2 * khm * gs / nu, -khm / nu, (double)cf->kb * isn,
                   -khm / nu, 0, -isn,
                   (double)cf->kb * isn, -isn, 1};
    L->xv = aw * aw * (double)cf->a;
    double dmax = fabs(L->xv) * (double)cf->lmax; /* λ ≥ 0 */
    double nrm[3] = {aw * sqrt((double)cf->l2z2), aw * sqrt((double)cf->cy2), ag};
    L->bound = dmax;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            K[a * 3 + b] *= nrm[a] * nrm[b];
            L->bound += fabs(K[a * 3 + b]);
        }
    for (int t = 0; t < 9; t++) L->K[t] = K[t];
    L->cp = nrm[0] > 0 ? aw / nrm[0] : 0;
    L->cc = nrm[1] > 0 ? aw / nrm[1] : 0;
    L->iz = cf->zz > 0 ? 1 / sqrt((double)cf->zz) : 0;
    double sc = 0, det = K[0] * (K[4] * K[8] - K[5] * K[7]) - K[1] * (K[3] * K[8] - K[5] * K[6]) +
                         K[2] * (K[3] * K[7] - K[4] * K[6]);
    for (int t = 0; t < 9; t++) sc = fabs(K[t]) > sc ? fabs(K[t]) : sc;
    L->kneg = bn_sqh_neg3(K);
    return isfinite(det) && fabs(det) > 1e-10 * sc * sc * sc && nrm[0] > 0 && nrm[1] > 0 && ag > 0;
}

/* Over the w-entries, with m_i = D_ii - θ and f = (λ∘z, c_y, z):
 * G = [Σf1²/m, Σf1f2/m, Σf2²/m] and, for the sphere, gq = [Σf1·z/m, Σf2·z/m,
 * Σz²/m]; when b is given, hb = [Σf1·b/m, Σf2·b/m, Σz·b/m].  Returns
 * #{D_ii > θ} (the γ entry's D is 0); θ exactly on a pole counts as below. */
BN_HD BN_COLUMN_INLINE static inline int64_t BN_SFX(bn_sqh_sums)(const BN_SFX(bn_sqh_lowrank) *L, int64_t r, const REAL *lam,
                                               const REAL *cy, const REAL *z, double theta, double *G, double *gq,
                                               const REAL *b, double *hb)
{
    /* Branch-free (bn_sqh_above, bn_sqh_nonzero) and one named array per
     * sum, so that the loop vectorizes and its lanes can stay in registers. */
    double g0[BN_LANES] = {0}, g1[BN_LANES] = {0}, g2[BN_LANES] = {0}, c8[BN_LANES] = {0};
    const double xv = L->xv;
#define BN_SQH_SUMS_G                                                                                   \
    double li = (double)lam[i], zi = (double)z[i], ci = (double)cy[i];                                  \
    double m = xv * li - theta;                                                                         \
    c8[k] += bn_sqh_above(m);                                                                           \
    double im = 1 / bn_sqh_nonzero(m);                                                                  \
    double f1 = li * zi * im, f2 = ci * im;                                                             \
    g0[k] += li * zi * f1;                                                                              \
    g1[k] += ci * f1;                                                                                   \
    g2[k] += ci * f2;
    if (gq) {
        double q0[BN_LANES] = {0}, q1[BN_LANES] = {0}, q2[BN_LANES] = {0};
        BN_LANE_LOOP(r, {
            BN_SQH_SUMS_G
            q0[k] += zi * f1;
            q1[k] += zi * f2;
            q2[k] += zi * zi * im;
        });
        gq[0] = bn_lane_total_f64(q0);
        gq[1] = bn_lane_total_f64(q1);
        gq[2] = bn_lane_total_f64(q2);
    } else {
        BN_LANE_LOOP(r, { BN_SQH_SUMS_G });
    }
#undef BN_SQH_SUMS_G
    G[0] = bn_lane_total_f64(g0);
    G[1] = bn_lane_total_f64(g1);
    G[2] = bn_lane_total_f64(g2);
    if (b) {
        double h8[3][BN_LANES] = {{0}};
        BN_LANE_LOOP(r, {
            double li = (double)lam[i], zi = (double)z[i];
            double m = xv * li - theta;
            double bi = (double)b[i] / bn_sqh_nonzero(m);
            h8[0][k] += li * zi * bi;
            h8[1][k] += (double)cy[i] * bi;
            h8[2][k] += zi * bi;
        });
        for (int a = 0; a < 3; a++) hb[a] = bn_lane_total_f64(h8[a]);
    }
    return (int64_t)bn_lane_total_f64(c8) + (0 > theta);
}

/* T = K + K·W·K with W = Uᵀ(D - θ)⁻¹U (unit columns; W_33 = 1/(0 - θ)). */
BN_HD BN_COLUMN_INLINE static inline void BN_SFX(bn_sqh_tmat)(const BN_SFX(bn_sqh_lowrank) *L, const double *G, double theta,
                                            double *T)
{
    double W[9] = {L->cp * L->cp * G[0], L->cp * L->cc * G[1], 0,
                   L->cp * L->cc * G[1], L->cc * L->cc * G[2], 0,
                   0, 0, 1 / (theta != 0 ? -theta : 1e-300)};
    double KW[9];
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) KW[a * 3 + b] = L->K[a * 3] * W[b] + L->K[a * 3 + 1] * W[3 + b] + L->K[a * 3 + 2] * W[6 + b];
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            T[a * 3 + b] = L->K[a * 3 + b] + KW[a * 3] * L->K[b] + KW[a * 3 + 1] * L->K[3 + b] + KW[a * 3 + 2] * L->K[6 + b];
}

/* yᵀ(A - θ)⁻¹x by Woodbury, from xᵀM⁻¹y = xy, U'ᵀM⁻¹x = ux, U'ᵀM⁻¹y = uy:
 * xy - (K·ux)ᵀT⁻¹(K·uy)  ((K⁻¹ + W)⁻¹ = K·T⁻¹·K). */
BN_HD BN_COLUMN_INLINE static inline double BN_SFX(bn_sqh_woodbury)(const BN_SFX(bn_sqh_lowrank) *L, const double *T, double xy,
                                                   const double *ux, const double *uy)
{
    double kx[3], ky[3], t[3];
    for (int a = 0; a < 3; a++) {
        kx[a] = L->K[a * 3] * ux[0] + L->K[a * 3 + 1] * ux[1] + L->K[a * 3 + 2] * ux[2];
        ky[a] = L->K[a * 3] * uy[0] + L->K[a * 3 + 1] * uy[1] + L->K[a * 3 + 2] * uy[2];
    }
    bn_sqh_solve3(T, ky, t);
    return xy - (kx[0] * t[0] + kx[1] * t[1] + kx[2] * t[2]);
}

/* #{λ > θ} of A (project = 0) or of A compressed to q⊥ (project = 1). */
BN_HD BN_COLUMN_INLINE static inline int64_t BN_SFX(bn_sqh_count_above)(const BN_SFX(bn_sqh_lowrank) *L, int64_t r, const REAL *lam,
                                                      const REAL *cy, const REAL *z, int project, double theta)
{
    double G[3], gq[3] = {0, 0, 0}, T[9];
    int64_t c = BN_SFX(bn_sqh_sums)(L, r, lam, cy, z, theta, G, project ? gq : NULL, NULL, NULL);
    BN_SFX(bn_sqh_tmat)(L, G, theta, T);
    c += bn_sqh_neg3(T) - L->kneg;
    if (project) {
        double uq[3] = {L->cp * gq[0] * L->iz, L->cc * gq[1] * L->iz, 0};
        if (BN_SFX(bn_sqh_woodbury)(L, T, gq[2] * L->iz * L->iz, uq, uq) > 0) c -= 1;
    }
    return c;
}

/* (v, vg) ← (A - θ)⁻¹(v, vg), or for project its solution on q⊥ (the
 * multiple of (A - θ)⁻¹q that makes qᵀx = 0): x = M⁻¹b - M⁻¹U'·w.  Also
 * *bx = bᵀx and *xx = xᵀx (b the v that came in): θ + bᵀx/xᵀx is x's
 * Rayleigh quotient, xᵀ(A - θ)x = xᵀb. */
BN_HD BN_COLUMN_INLINE static inline void BN_SFX(bn_sqh_solve)(const BN_SFX(bn_sqh_lowrank) *L, int64_t r, const REAL *lam,
                                             const REAL *cy, const REAL *z, int project, double theta, REAL *v,
                                             REAL *vg, double *bx, double *xx)
{
    double G[3], gq[3], hb[3], T[9];
    BN_SFX(bn_sqh_sums)(L, r, lam, cy, z, theta, G, gq, v, hb);
    BN_SFX(bn_sqh_tmat)(L, G, theta, T);
    double mg = theta != 0 ? -theta : 1e-300; /* the γ entry's D - θ */
    double ub[3] = {L->cp * hb[0], L->cc * hb[1], (double)*vg / mg};
    double uq[3] = {L->cp * gq[0] * L->iz, L->cc * gq[1] * L->iz, 0};
    /* w = (K⁻¹ + W)⁻¹·(U'ᵀM⁻¹b) = K·T⁻¹·K·ub, and the same for q */
    double kb[3], kq[3], wb[3], wq[3], t[3];
    for (int a = 0; a < 3; a++) {
        kb[a] = L->K[a * 3] * ub[0] + L->K[a * 3 + 1] * ub[1] + L->K[a * 3 + 2] * ub[2];
        kq[a] = L->K[a * 3] * uq[0] + L->K[a * 3 + 1] * uq[1] + L->K[a * 3 + 2] * uq[2];
    }
    bn_sqh_solve3(T, kb, t);
    for (int a = 0; a < 3; a++) wb[a] = L->K[a * 3] * t[0] + L->K[a * 3 + 1] * t[1] + L->K[a * 3 + 2] * t[2];
    bn_sqh_solve3(T, kq, t);
    for (int a = 0; a < 3; a++) wq[a] = L->K[a * 3] * t[0] + L->K[a * 3 + 1] * t[1] + L->K[a * 3 + 2] * t[2];
    double mu = 0;
    if (project) { /* qᵀ(A-θ)⁻¹b / qᵀ(A-θ)⁻¹q */
        double qb = L->iz * hb[2] - (uq[0] * wb[0] + uq[1] * wb[1] + uq[2] * wb[2]);
        double qq = L->iz * L->iz * gq[2] - (uq[0] * wq[0] + uq[1] * wq[1] + uq[2] * wq[2]);
        mu = qq != 0 ? qb / qq : 0;
    }
    const double xv = L->xv;
    double bx8 = 0, xx8 = 0;
    for (int64_t i = 0; i < r; i++) {
        double li = (double)lam[i], zi = (double)z[i];
        double m = xv * li - theta;
        double ui = li * zi * L->cp, ci = (double)cy[i] * L->cc;
        double x = ((double)v[i] - ui * wb[0] - ci * wb[1]) / (m != 0 ? m : 1e-300);
        double xq = (L->iz * zi - ui * wq[0] - ci * wq[1]) / (m != 0 ? m : 1e-300);
        double xi = x - mu * xq;
        bx8 += (double)v[i] * xi;
        xx8 += xi * xi;
        v[i] = (REAL)xi;
    }
    double xg = ((double)*vg - wb[2]) / mg - mu * (-wq[2] / mg);
    *bx = bx8 + (double)*vg * xg;
    *xx = xx8 + xg * xg;
    *vg = (REAL)xg;
}

/* One step of inverse iteration: (v, vg) ← (A - θ)⁻¹(v, vg) normalized, and
 * *mu its Rayleigh quotient (a lower bound of λ_max).  0, v not normalized,
 * when the iterate's norm is zero or not finite. */
BN_HD BN_COLUMN_INLINE static inline int BN_SFX(bn_sqh_inverse_step)(const BN_SFX(bn_sqh_lowrank) *L, int64_t r,
                                                                    const REAL *lam, const REAL *cy, const REAL *z,
                                                                    int project, double theta, REAL *v, REAL *vg,
                                                                    double *mu)
{
    double bx, xx;
    BN_SFX(bn_sqh_solve)(L, r, lam, cy, z, project, theta, v, vg, &bx, &xx);
    double nn = sqrt(xx);
    *mu = theta + bx / xx;
    if (!(nn > 0) || !isfinite(nn)) return 0;
    for (int64_t i = 0; i < r; i++) v[i] = (REAL)((double)v[i] / nn);
    *vg = (REAL)((double)*vg / nn);
    return 1;
}

/* The certificate of one converged (or stopped) iteration with value *lam:
 * no eigenvalue above *lam + slack → 0.  Else λ_max by bisection on the count
 * to tol·max(|λ|, 8ε·bound) (*evals counts the counts), v ← its eigenvector by
 * two steps of inverse iteration (normalized; in range(Π) when project), and 1.
 * The bracket's top grows from just above lo (×8 per count, each count above
 * 0 also raising lo) rather than starting at bound: the iteration's value is
 * usually close, and bound can be several λ_max away (issue 7: from bound, a
 * capped column's bisection took ~20 counts). */
BN_HD BN_COLUMN_INLINE static inline int BN_SFX(bn_sqh_certify)(const BN_SFX(bn_sqh_lowrank) *Lp, int64_t r,
                                                                const REAL *lam, const REAL *cy, const REAL *z,
                                                                int project, double tol, double slack,
                                                                double *lam_io, int64_t *evals, REAL *v, REAL *vg)
{
    const BN_SFX(bn_sqh_lowrank) L = *Lp;
    double lo = *lam_io + slack;
    *evals += 1;
    int64_t nlo = isfinite(lo) ? BN_SFX(bn_sqh_count_above)(&L, r, lam, cy, z, project, lo) : 0; /* #{λ > lo} */
    if (nlo <= 0) return 0;
    if (!(L.bound > lo)) return 0;
    const double eps = sizeof(REAL) == sizeof(float) ? 6e-8 : 1.2e-16;
    double grow = fmax(64 * tol * fabs(lo), fmax(2 * slack, 8 * eps * L.bound)), hi = lo + grow;
    while (hi < L.bound && *evals < 400) {
        *evals += 1;
        int64_t c = BN_SFX(bn_sqh_count_above)(&L, r, lam, cy, z, project, hi);
        if (c <= 0) break;
        lo = hi;
        nlo = c;
        grow *= 8;
        hi = lo + grow;
    }
    if (!(hi < L.bound)) hi = L.bound;
    /* Once λ_max is the only eigenvalue in (lo, hi]: inverse iteration at θ
     * just above hi, where (A - θ)⁻¹ amplifies λ_max's eigenvector most.  Its
     * Rayleigh quotient is a lower bound that converges at the squared ratio
     * (θ - λ_max)/(θ - λ_2), λ_2 ≤ lo, and one count just above it usually
     * closes the bracket, where bisection from the bracket's width takes ~10
     * counts (issue 7).  The iterate is the vector left behind (the next
     * record's warm start); bisection does the rest, then two solves at the
     * final bracket give the vector. */
    int rounds = 0, solved = 0;
    for (;;) {
        const double close = tol * fmax(fabs(lo), 8 * eps * L.bound);
        if (!(hi - lo > close) || *evals >= 400) break;
        if (nlo == 1 && rounds < 2) {
            double mu; /* ≤ λ_max */
            int ok = BN_SFX(bn_sqh_inverse_step)(&L, r, lam, cy, z, project, hi + (hi - lo) / 1024, v, vg, &mu);
            *evals += 1;
            rounds++;
            solved = ok && isfinite(mu);
            if (!solved) {
                rounds = 2; /* bisection goes on; the next record's start
                               replaces a non-finite vector (bn_sqh_start) */
                continue;
            }
            if (mu > lo && mu < hi) lo = mu;
            if (!(hi - lo > close)) break;
            double at = lo + close;
            *evals += 1;
            int64_t c = BN_SFX(bn_sqh_count_above)(&L, r, lam, cy, z, project, at);
            if (c > 0) lo = at;
            else hi = at;
            continue;
        }
        solved = 0;
        double mid = 0.5 * (lo + hi);
        *evals += 1;
        int64_t c = BN_SFX(bn_sqh_count_above)(&L, r, lam, cy, z, project, mid);
        if (c > 0) {
            lo = mid;
            nlo = c;
        } else {
            hi = mid;
        }
    }
    *lam_io = 0.5 * (lo + hi);
    /* θ just above λ_max: (A - θ)⁻¹ amplifies its eigenvector most. */
    double th = hi + (hi - lo);
    double mu;
    for (int step = solved ? 2 : 0; step < 2; step++)
        if (!BN_SFX(bn_sqh_inverse_step)(&L, r, lam, cy, z, project, th, v, vg, &mu)) break;
    return 1;
}

/* The whole shifted power iteration of one column (sharpness.h: the start,
 * the shift, the restarts, bn_power_control's stopping rule), on the square
 * loss's Hessian operator op = P^½HP^½ (aw = √η_w, ag = √η_γ; 1, 1 for H), on
 * range(Π) when project.  v, vg: the previous vector in (warm = 1; else
 * anything), the last vector out; vs, vgs: the record's start, written here
 * (restarts return to it); key, counter: the pseudo-random start
 * (bn_sqh_start); io: the BN_SQ fields (stride S); coef: NULL, or the
 * column's cached coefficients (BN_SQC_COUNT at stride S), read when
 * coef_ready, else computed and written (issue 7: the three operators of a
 * record share one state, and the coefficients' pass was a sixth of a warm
 * column's work). */
BN_HD BN_COLUMN_INLINE static inline void BN_SFX(bn_sqh_power_column)(int64_t r, int64_t n, const REAL *lam,
                                                                      const REAL *cy, const REAL *z, REAL gamma,
                                                                      REAL aw, REAL ag, int project, int warm,
                                                                      uint64_t key, uint64_t counter, REAL *v,
                                                                      REAL *vg_io, REAL *vs, REAL *vgs_out,
                                                                      double tol, int64_t maxiter, REAL *io,
                                                                      REAL *coef, int coef_ready, int64_t S)
{
    /* The γ entries live in arrays of S, where neighbouring columns (other
     * threads' on the CPU) share cache lines: kept here, written once. */
    REAL vg_l = *vg_io, vgs_l = 0, *vg = &vg_l, *vgs = &vgs_l;
    BN_SFX(bn_sqh_coef) cf;
    if (coef && coef_ready) {
        BN_SFX(bn_sqh_coef_load)(&cf, coef, S);
    } else {
        BN_SFX(bn_sqh_prepare)(r, n, lam, cy, z, gamma, &cf);
        if (coef) BN_SFX(bn_sqh_coef_store)(&cf, coef, S);
    }
    const REAL nvs = BN_SFX(bn_sqh_start)(r, z, cf.zz, project, warm, key, counter, v, vg);
    for (int64_t i = 0; i < r; i++) vs[i] = v[i];
    *vgs = *vg;
    BN_SFX(bn_sqh_lowrank) L;
    int countable = BN_SFX(bn_sqh_lowrank_make)(&L, &cf, (double)aw, (double)ag);
    double sigma = (double)io[BN_SQ_SIGMA * S], ceil = (double)io[BN_SQ_CEIL * S], lam_out = NAN;
    bn_power_state pc = bn_power_state_init();
    REAL nv = nvs;
    int conv = 0, act = BN_PW_GO, certified = 0;
    int64_t counts = 0;
    /* With the count at hand, a column that has not converged after
     * BN_SQH_POWER_CAP products is finished by bisection (in the certificate
     * below): slow columns (ratio (λ_2 - σ)/(λ_max - σ) near 1, or shifted)
     * took up to the iteration limit, 100-1000 products, a third of all
     * products on the paper case (issue 7). */
    int count_stops = countable && tol >= BN_SQH_COUNT_TOL_MIN;
    const double count_floor = 8 * 1.2e-16 * L.bound; /* no count is finer than this */
    int64_t cap = count_stops && maxiter > BN_SQH_POWER_CAP ? BN_SQH_POWER_CAP : maxiter;
    for (int64_t it = 0; it < cap && act != BN_PW_DONE; it++) {
        double sig_used = sigma;
        REAL mu = BN_SFX(bn_sqh_power_step)(r, &cf, lam, cy, z, aw, ag, project, (REAL)sigma, v, vg, &nv);
        double ms = (double)mu - sig_used, res2 = (double)nv * (double)nv - ms * ms;
        double scl = fmax(fabs((double)mu), fabs(ms));
        /* tol relative to λ, as the certificate asks of a value it proves */
        if (bn_power_ceiling(&pc, (double)mu, sig_used, ceil, 0.5 * fmax(tol * fabs(ceil), count_floor))) {
            lam_out = pc.best;
            conv = 1;
            act = BN_PW_DONE;
            certified = 1; /* λ_max is in [μ, ceil] */
            break;
        }
        act = bn_power_control(&pc, (double)mu, (double)nv, &sigma, tol, &lam_out, &conv);
        if (act == BN_PW_RESTART) {
            for (int64_t i = 0; i < r; i++) v[i] = vs[i];
            *vg = *vgs;
            nv = nvs;
        } else if (act == BN_PW_GO && count_stops && it < 2 && res2 <= BN_SQH_COUNT_RESIDUAL * tol * scl * scl) {
            /* From a warm start the Rayleigh quotient is often already within
             * tol: every μ is a lower bound of λ_max, so no eigenvalue above
             * best·(1 + tol) proves it (relative to λ itself, tighter than the
             * stopping rule's scale), one or two products in, where the
             * stopping rule needs three. */
            double best = pc.best, th = best + fmax(tol * fabs(best), count_floor);
            counts++;
            if (isfinite(th) && BN_SFX(bn_sqh_count_above)(&L, r, lam, cy, z, project, th) <= 0) {
                lam_out = best;
                conv = 1;
                act = BN_PW_DONE;
                certified = 1;
            }
        }
    }
    int capped = act != BN_PW_DONE && cap < maxiter;
    if (act != BN_PW_DONE) lam_out = pc.best; /* the best lower bound found */
    int fixed = 0;
    int64_t its = pc.it + counts;
    if (!certified && countable && isfinite(lam_out)) {
        /* Slack: the stopping rule's own scale (sharpness.h), so that only a
         * miss costs a bisection; a capped column's value is only a lower
         * bound, so there the certificate asks for tol relative to λ. */
        double slack = capped ? fmax(tol * fabs(lam_out), count_floor)
                              : 64 * tol * fmax(fabs(lam_out), fabs(lam_out - sigma));
        fixed = BN_SFX(bn_sqh_certify)(&L, r, lam, cy, z, project, tol, slack, &lam_out, &its, v, vg);
        if (fixed || capped) conv = 1;
        if (fixed && capped) fixed = 2;
    }
    *vg_io = vg_l;
    *vgs_out = vgs_l;
    io[BN_SQ_SIGMA * S] = (REAL)sigma;
    io[BN_SQ_LAM * S] = (REAL)lam_out;
    io[BN_SQ_ITERS * S] = (REAL)its;
    io[BN_SQ_CONV * S] = (REAL)conv;
    io[BN_SQ_FIXED * S] = (REAL)fixed;
}
