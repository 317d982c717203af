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
} BN_SFX(bn_sqh_coef);

BN_HD BN_COLUMN_INLINE static inline void BN_SFX(bn_sqh_prepare)(int64_t r, int64_t n, const REAL *lam,
                                                                 const REAL *cy, const REAL *z, REAL gamma,
                                                                 BN_SFX(bn_sqh_coef) *cf)
{
    REAL uu8[BN_LANES] = {0}, yu8[BN_LANES] = {0}, zz8[BN_LANES] = {0};
    BN_LANE_LOOP(r, {
        REAL zi = z[i];
        uu8[k] += lam[i] * zi * zi;
        yu8[k] += cy[i] * zi;
        zz8[k] += zi * zi;
    });
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

/* v ← the unit start of a power iteration: v itself (warm = 1: the previous
 * record's vector) projected with Π when project, normalized; or, when
 * warm = 0 or that vector is degenerate, the pseudo-random vector (key,
 * counter) of bn_hvp_random, projected and normalized.  As sharpness.c's
 * power_start does it through lanczos_extend. */
BN_HD BN_COLUMN_INLINE static inline void BN_SFX(bn_sqh_start)(int64_t r, const REAL *z, int project, int warm,
                                                               uint64_t key, uint64_t counter, REAL *v, REAL *vg)
{
    for (int pass = warm ? 0 : 1; pass < 2; pass++) {
        if (pass == 1) {
            for (int64_t i = 0; i < r; i++) v[i] = (REAL)bn_hvp_random(key, counter, i);
            *vg = (REAL)bn_hvp_random(key, counter, r);
        }
        if (project) {
            REAL zz8[BN_LANES] = {0}, zv8[BN_LANES] = {0};
            BN_LANE_LOOP(r, {
                zz8[k] += z[i] * z[i];
                zv8[k] += z[i] * v[i];
            });
            REAL zz = BN_SFX(bn_lane_total)(zz8);
            if (zz > 0) {
                REAL f = BN_SFX(bn_lane_total)(zv8) / zz;
                for (int64_t i = 0; i < r; i++) v[i] -= f * z[i];
            }
        }
        REAL nn8[BN_LANES] = {0};
        BN_LANE_LOOP(r, { nn8[k] += v[i] * v[i]; });
        REAL nn = R_SQRT(BN_SFX(bn_lane_total)(nn8) + *vg * *vg);
        if (nn > 0 && isfinite(nn)) {
            REAL inv = (REAL)1 / nn;
            for (int64_t i = 0; i < r; i++) v[i] *= inv;
            *vg *= inv;
            return;
        }
    }
}

/* The whole shifted power iteration of one column (sharpness.h: the start,
 * the shift, the restarts, bn_power_control's stopping rule), on the square
 * loss's Hessian operator op = P^½HP^½ (aw = √η_w, ag = √η_γ; 1, 1 for H), on
 * range(Π) when project.  v, vg: the previous vector in (warm = 1; else
 * anything), the last vector out; vs, vgs: the record's start, written here
 * (restarts return to it); key, counter: the pseudo-random start
 * (bn_sqh_start); io: the BN_SQ fields (stride S). */
BN_HD BN_COLUMN_INLINE static inline void BN_SFX(bn_sqh_power_column)(int64_t r, int64_t n, const REAL *lam,
                                                                      const REAL *cy, const REAL *z, REAL gamma,
                                                                      REAL aw, REAL ag, int project, int warm,
                                                                      uint64_t key, uint64_t counter, REAL *v,
                                                                      REAL *vg, REAL *vs, REAL *vgs, double tol,
                                                                      int64_t maxiter, REAL *io, int64_t S)
{
    BN_SFX(bn_sqh_start)(r, z, project, warm, key, counter, v, vg);
    for (int64_t i = 0; i < r; i++) vs[i] = v[i];
    *vgs = *vg;
    BN_SFX(bn_sqh_coef) cf;
    BN_SFX(bn_sqh_prepare)(r, n, lam, cy, z, gamma, &cf);
    double sigma = (double)io[BN_SQ_SIGMA * S], lam_out = NAN;
    bn_power_state pc = bn_power_state_init();
    REAL nv = 1;
    int conv = 0, act = BN_PW_GO;
    for (int64_t it = 0; it < maxiter && act != BN_PW_DONE; it++) {
        REAL mu = BN_SFX(bn_sqh_power_step)(r, &cf, lam, cy, z, aw, ag, project, (REAL)sigma, v, vg, &nv);
        act = bn_power_control(&pc, (double)mu, (double)nv, &sigma, tol, &lam_out, &conv);
        if (act == BN_PW_RESTART) {
            for (int64_t i = 0; i < r; i++) v[i] = vs[i];
            *vg = *vgs;
            nv = 1;
        }
    }
    if (act != BN_PW_DONE) lam_out = pc.best; /* the best lower bound found */
    io[BN_SQ_SIGMA * S] = (REAL)sigma;
    io[BN_SQ_LAM * S] = (REAL)lam_out;
    io[BN_SQ_ITERS * S] = (REAL)pc.it;
    io[BN_SQ_CONV * S] = (REAL)conv;
}
