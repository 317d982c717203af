/* Per-column math of the sharpness computation (issue 3), written once as
 * static inline functions that the C compiler and nvcc both include, like
 * bn_math.h: the exact Hessian-vector product of MODEL.md ("Hessian-vector
 * product", forward over reverse) and the vector updates of the batched power
 * iteration and Lanczos process.  A backend's sharpness ops (backend.h) apply
 * these functions to every column of a batch; the CUDA backend may split a
 * column over a thread group, using the scalar helpers (bn_hvp_coeffs,
 * bn_hvp_qdot_elem) so that the formulas stay the same.
 *
 * fp32 and fp64 come from the same text: bn_hvp_math_impl.h is included twice
 * with REAL set to float and double.  Names carry the suffix _f32 / _f64.
 *
 * Vectors of the (d+1)-dimensional parameter space (w, γ) are stored as a
 * w-part (a column of a d×S matrix) and a γ-part (one entry of an S array). */
#ifndef BN_HVP_MATH_H
#define BN_HVP_MATH_H

#include "bn_math.h"

/* Per-column state of the HVP at (w, γ), written by bn_hvp_prepare_column.
 * Layout: hs[field * S + column] (field-major, like the stats block). */
enum {
    BN_HS_S = 0, /* s = ‖u‖/√n                      */
    BN_HS_GAMMA, /* γ                               */
    BN_HS_C,     /* c = uᵀr/(n s²)                  */
    BN_HS_UR,    /* uᵀr                             */
    BN_HS_HUU,   /* Σ h_i u_i², h = ℓ''(z)/n         */
    BN_HS_COUNT
};

/* The control block of the iteration ops: ctl[field * S + column], backend
 * precision.  The host writes the inputs, the ops write the outputs; fields
 * are ordered so that each group is one contiguous transfer. */
enum {
    BN_SC_ACTIVE = 0, /* in: ≠ 0 when the column takes part (others untouched)  */
    BN_SC_SIGMA,      /* in: shift σ of the power iteration                       */
    BN_SC_NV,         /* in/out: norm of the stored (unnormalized) power vector   */
    BN_SC_MU,         /* out: Rayleigh quotient of the power iteration            */
    BN_SC_ALPHA,      /* out: Lanczos α_k = q_kᵀ A q_k                            */
    BN_SC_BETA,       /* out: norm of the new Lanczos/start vector before scaling */
    BN_SC_COUNT
};

/* Deterministic pseudo-random start vectors: entry i (0..d, d = the γ-part) of
 * the vector (key, counter) is a pure function of the three, uniform in
 * [-1, 1), identical on CPU and GPU (integer hashing, one exact conversion).
 * key is the trajectory's seed id, so a trajectory's vectors do not depend on
 * its position in the batch. */
BN_HD static inline uint64_t bn_hvp_mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

BN_HD static inline double bn_hvp_random(uint64_t key, uint64_t counter, int64_t i)
{
    uint64_t h = bn_hvp_mix64(key ^ bn_hvp_mix64(counter ^ bn_hvp_mix64((uint64_t)i + 0x5851F42D4C957F2Dull)));
    /* 53 random bits → [0, 1) exactly, then [-1, 1). */
    return (double)(h >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

/* The control of one column's shifted power iteration (sharpness.h), after
 * each product: the column's Rayleigh quotient mu and the norm nv of its next
 * (unnormalized) vector, as bn_power_update_column writes them.  Shared by the
 * batched host loop (sharpness.c) and the per-column iterations that run
 * whole on a backend (bn_sqh_power_column), so both stop by the same rule.
 * Returns BN_PW_DONE (with *lam, *conv), BN_PW_RESTART (*sigma moved to mu:
 * the vector restarts from the record's start) or BN_PW_GO. */
typedef struct {
    double mu_prev, d_prev, best;
    int64_t it;
} bn_power_state;

enum { BN_PW_GO = 0, BN_PW_DONE, BN_PW_RESTART };

BN_HD static inline bn_power_state bn_power_state_init(void)
{
    bn_power_state c;
    c.mu_prev = c.d_prev = NAN;
    c.best = -INFINITY;
    c.it = 0;
    return c;
}

BN_HD static inline int bn_power_control(bn_power_state *c, double mu, double nv, double *sigma,
                                         double tol, double *lam, int *conv)
{
    c->it++;
    if (!isfinite(mu)) { /* a non-finite state (or an overflow): nothing to report */
        *lam = NAN;
        *conv = 0;
        return BN_PW_DONE;
    }
    if (mu > c->best) c->best = mu;
    if (!(nv > 0) || !isfinite(nv)) {
        /* (A - σI)v = 0: v is an eigenvector with eigenvalue σ = μ. */
        *lam = c->best;
        *conv = nv == 0;
        return BN_PW_DONE;
    }
    double dm = mu - c->mu_prev, gap = mu - *sigma;
    double scale = fmax(fabs(mu), fabs(gap));
    if (gap < 0 && fabs(dm) <= 1e-2 * fabs(gap)) {
        /* The dominant eigenvalue of A - σI is negative: μ ≈ λ_min.  Shift to
         * halfway, σ = (σ + μ)/2: λ_max - σ then still dominates as long as
         * λ_max > σ_old (λ_max ≥ 0 = the first σ always), and the ratio
         * (λ_2 - σ)/(λ_max - σ) that sets the speed is smaller than at σ = μ
         * (issue 7: a shifted column took 22 products on average). */
        *sigma = 0.5 * (*sigma + mu);
        c->mu_prev = c->d_prev = NAN;
        return BN_PW_RESTART;
    }
    /* Only with two changes seen (the extrapolation below needs their ratio):
     * from a good warm start the first change alone can be small while the
     * ratio is close to 1 (issue 7: accepted after 2 HVPs, such a column was
     * off by 5e-4 relative). */
    int ok = fabs(dm) <= tol * scale && gap >= 0 && !isnan(c->d_prev);
    if (ok && c->d_prev != 0) {
        double rho = fabs(dm) / fabs(c->d_prev);
        if (rho < 1) ok = fabs(dm) / (1 - rho) <= tol * scale;
    }
    if (ok) {
        *lam = c->best;
        *conv = 1;
        return BN_PW_DONE;
    }
    c->d_prev = dm;
    c->mu_prev = mu;
    return BN_PW_GO;
}

/* The ceiling's stop (bn_sharp_power_bounded, sharpness.h), before
 * bn_power_control: ceil, when finite, is an upper bound of λ_max known to
 * about tol (for the sphere operator, its unprojected operator's λ_max).  A
 * Rayleigh quotient mu ≥ σ within slack of it ends the column: λ_max is in
 * [mu, ceil].  Counts the product; returns 1 when the column is done. */
BN_HD static inline int bn_power_ceiling(bn_power_state *c, double mu, double sigma, double ceil, double slack)
{
    if (!isfinite(ceil) || !isfinite(mu) || mu - sigma < 0 || mu < ceil - slack) return 0;
    c->it++;
    if (mu > c->best) c->best = mu;
    return 1;
}

/* LOBPCG with one vector (issue 7; sharpness.h), the general path's λ_max:
 * each iteration multiplies the residual r = Ax - μx once and takes the
 * largest Ritz value of A on span{x, r, p}, p the previous step's direction.
 * Per column the backend keeps L = [x | Ax | p | Ap], 4 vectors of d+1 reals
 * (w-part, then γ), the control state lc (BN_LC_*, float64, below), and the
 * op bn_lobpcg_column runs one stage:
 *   START  v = x (unit), X = A·v:  L ← (x, ΠAx, 0, 0); r = Ax - μx into v
 *          (μ = xᵀAx/xᵀx, Π applied), μ to ctl[MU], ‖r‖ to ctl[NV]; the
 *          stopping rule (bn_lobpcg_check) on μ;
 *   STEP   v = r, X = A·r:  the Gram entries of (x, r, p) (M), of (x, r, p)
 *          against A·(x, r, p) (K) and ŵᵀ(Ar), ŵᵀŵ (WA, WW); the 3×3
 *          Rayleigh-Ritz (bn_lobpcg_ritz, bn_lobpcg_coefficients);
 *          x ← cx x + cr r + cp p, p ← pr r + pp p, A· alike (the
 *          coefficients make both unit vectors), r ← Ax - μx into v; the
 *          stopping rule on the Ritz value.
 *   SHARED  (before START, for the sphere operator Π A Π started from A's
 *          vector of this record, L still holding A's final x, Ax): the
 *          Rayleigh quotient of Πx without a product, by
 *          bn_lobpcg_shared_value; a column whose value reaches the ceiling
 *          (A's λ_max) stops there with no product at all;
 *   PREDICT (before START, between records) v = x of the last record,
 *          X = x of the one before: X ← bn_lobpcg_predict's extrapolation
 *          of the two (the host then swaps the buffers).
 * Besides the change of the value, a column stops when its Ritz pair is
 * accurate by the quadratic residual bound: ‖r‖²/gap ≤ BN_LOB_GAP_FAC·tol·|θ|,
 * ‖r‖ the new vector's residual and gap the distance from θ to the second
 * Ritz value (START: the gap of the column's last record, lc[GAP]).  For
 * the top eigenvalue, λ_max - θ ≤ ‖r‖²/(θ - λ₂) once θ > λ₂; the Ritz gap
 * stands in for θ - λ₂ (it can exceed it, hence the factor).  On the paper
 * case this stops most columns one product earlier than the change alone,
 * which needs a second value to compare (issue 7).
 * A column that stops clears its ctl[ACTIVE] itself, so an iteration needs
 * one product, one pass over each column and the download of ACTIVE: the
 * Rayleigh-Ritz runs beside the column's data, in the backend's own threads
 * (on the host it was a serial loop and two transfers per iteration).  For
 * the sphere operator every vector stays in range(Π): START projects Ax, STEP
 * uses ΠAr = Ar - ŵ·WA/WW; the Gram entries need no projection, since x, r, p
 * are ⊥ ŵ. */
enum { BN_LOB_START = 0, BN_LOB_STEP, BN_LOB_PREDICT, BN_LOB_SHARED };
/* The gap rule's safety factor (above), and the least cosine between the
 * last two records' vectors for PREDICT to extrapolate (below it the last
 * vector alone: a jump, as at a spike, predicts nothing). */
#define BN_LOB_GAP_FAC 0.1
#define BN_LOB_PREDICT_COS 0.9
enum {
    BN_LG_XX = 0, BN_LG_XR, BN_LG_XP, BN_LG_RR, BN_LG_RP, BN_LG_PP, /* M */
    BN_LG_KXX, BN_LG_KXR, BN_LG_KXP, BN_LG_KRR, BN_LG_KRP, BN_LG_KPP, /* K = vᵢᵀ A vⱼ */
    BN_LG_WA, BN_LG_WW,
    BN_LG_COUNT
};
/* The combination's coefficients (bn_lobpcg_coefficients). */
enum { BN_LG_CX = 0, BN_LG_CR, BN_LG_CP, BN_LG_PR, BN_LG_PPC, BN_LG_MU, BN_LG_NIN };
/* A column's LOBPCG control state, float64 whatever the backend precision
 * (the host's arithmetic before the step moved to the backend, bitwise):
 * field f of column j at lc[f·S + j]. */
enum {
    BN_LC_THETA = 0, /* the last value: μ, then the Ritz values (NaN at first) */
    BN_LC_BEST,      /* the largest value seen (-∞ at first)                  */
    BN_LC_CEIL,      /* in: the ceiling (NaN: none)                           */
    BN_LC_IT,        /* products so far                                       */
    BN_LC_USEP,      /* 1 once p is in the basis                              */
    BN_LC_CONV,      /* out: 1 = converged                                    */
    BN_LC_LAM,       /* out once stopped: the estimate (NaN: non-finite)      */
    BN_LC_GAP,       /* in: the last record's Ritz gap (NaN: none); out: this one's */
    BN_LC_COUNT
};

/* x = u × v. */
BN_HD BN_COLUMN_INLINE static inline void bn_cross3(const double *u, const double *v, double *x)
{
    x[0] = u[1] * v[2] - u[2] * v[1];
    x[1] = u[2] * v[0] - u[0] * v[2];
    x[2] = u[0] * v[1] - u[1] * v[0];
}

/* A unit null vector z of the 3×3 C - λI (λ an eigenvalue of the symmetric
 * C, to rounding): the longest cross product of two rows, or, where C - λI
 * has rank ≤ 1 (λ repeated), a vector ⊥ its longest row (any, when there is
 * none).  Returns the Rayleigh quotient zᵀCz. */
BN_HD BN_COLUMN_INLINE static inline double bn_sym3_vector(const double C[3][3], double lam, double z[3])
{
    const double B[3][3] = {{C[0][0] - lam, C[0][1], C[0][2]},
                            {C[0][1], C[1][1] - lam, C[1][2]},
                            {C[0][2], C[1][2], C[2][2] - lam}};
    double best = 0, rbest = 0;
    int ib = 0;
    for (int i = 0; i < 3; i++) {
        const double *u = B[i];
        double x[3];
        bn_cross3(u, B[(i + 1) % 3], x);
        double nx = x[0] * x[0] + x[1] * x[1] + x[2] * x[2];
        if (nx > best) {
            best = nx;
            z[0] = x[0];
            z[1] = x[1];
            z[2] = x[2];
        }
        double nr = u[0] * u[0] + u[1] * u[1] + u[2] * u[2];
        if (nr > rbest) {
            rbest = nr;
            ib = i;
        }
    }
    if (!(best > 1e-24 * rbest * rbest)) {
        const double *u = B[ib];
        int k = fabs(u[0]) <= fabs(u[1]) && fabs(u[0]) <= fabs(u[2]) ? 0 : (fabs(u[1]) <= fabs(u[2]) ? 1 : 2);
        double e[3] = {0, 0, 0};
        e[k] = 1;
        bn_cross3(u, e, z);
        best = z[0] * z[0] + z[1] * z[1] + z[2] * z[2];
        if (!(best > 0)) {
            z[0] = 1;
            z[1] = z[2] = 0;
            best = 1;
        }
    }
    double inv = 1 / sqrt(best), rq = 0;
    for (int i = 0; i < 3; i++) z[i] *= inv;
    for (int i = 0; i < 3; i++) rq += z[i] * (C[i][0] * z[0] + C[i][1] * z[1] + C[i][2] * z[2]);
    return rq;
}

/* The largest eigenvalue of the symmetric b×b matrix C (b = 2 or 3; entries
 * of order 1, bn_sym3_top scales) and a unit eigenvector z.  b = 2: the
 * closed form.  b = 3: Newton's method on det(λI - C) from above (the smaller
 * of Gershgorin's bound and tr/3 + √(2/3·‖C - tr/3·I‖²_F)), where the cubic
 * is increasing and convex, so the iterates fall monotonically to the root;
 * the vector is bn_sym3_vector's and the value returned its Rayleigh
 * quotient: accurate to rounding where Newton's λ is not (a double root:
 * √ε), and never above λ_max.  Only +, -, ×, ÷ and √, a fixed sequence of
 * operations (CPU and GPU differ only where nvcc contracts into FMAs).
 * Cyclic Jacobi did the same at several times the cost: most of LOBPCG's
 * column pass (issue 7). */
BN_HD BN_COLUMN_INLINE static inline double bn_sym3_top_unit(const double C[3][3], int b, double z[3])
{
    z[0] = 1;
    z[1] = z[2] = 0;
    if (b == 2) {
        double h = 0.5 * (C[0][0] - C[1][1]), c = C[0][1], r = sqrt(h * h + c * c);
        double z0 = h >= 0 ? h + r : c, z1 = h >= 0 ? c : r - h, nz = sqrt(z0 * z0 + z1 * z1);
        if (nz > 0) {
            z[0] = z0 / nz;
            z[1] = z1 / nz;
        }
        return 0.5 * (C[0][0] + C[1][1]) + r;
    }
    const double a01 = C[0][1], a02 = C[0][2], a12 = C[1][2];
    const double q01 = a01 * a01, q02 = a02 * a02, q12 = a12 * a12;
    double mean = (C[0][0] + C[1][1] + C[2][2]) / 3, ss = 2 * (q01 + q02 + q12);
    double gb = -INFINITY;
    for (int i = 0; i < 3; i++) {
        double e = C[i][i] - mean, row = C[i][i];
        ss += e * e;
        for (int k = 0; k < 3; k++)
            if (k != i) row += fabs(C[i][k]);
        if (row > gb) gb = row;
    }
    double fb = mean + sqrt(2 * ss / 3), lam = fb < gb ? fb : gb;
    for (int it = 0; it < 100; it++) {
        double d0 = lam - C[0][0], d1 = lam - C[1][1], d2 = lam - C[2][2];
        double f = d0 * d1 * d2 - d0 * q12 - d1 * q02 - d2 * q01 - 2 * a01 * a02 * a12;
        double fp = d1 * d2 + d0 * d2 + d0 * d1 - q01 - q02 - q12;
        if (!(f > 0) || !(fp > 0)) break;
        double next = lam - f / fp;
        if (!(next < lam) || !isfinite(next)) break;
        lam = next;
    }
    /* Twice: from the Rayleigh quotient of the first vector, accurate to
     * rounding, a repeated root's rank-1 C - λI is seen as such. */
    lam = bn_sym3_vector(C, lam, z);
    return bn_sym3_vector(C, lam, z);
}

/* bn_sym3_top_unit on C scaled by a power of two (exact) to max|Cᵢₖ| in
 * [1/2, 1): the cubic and the squared cross products scale as |C|³ and |C|⁴,
 * and would overflow or underflow far inside the range of double.  A zero C:
 * λ = 0, z = e₀; a non-finite one: NaN. */
BN_HD BN_COLUMN_INLINE static inline double bn_sym3_top(const double C[3][3], int b, double z[3])
{
    double mx = 0;
    int bad = 0;
    for (int i = 0; i < b; i++)
        for (int k = 0; k < b; k++) {
            bad |= !isfinite(C[i][k]);
            mx = fmax(mx, fabs(C[i][k]));
        }
    z[0] = 1;
    z[1] = z[2] = 0;
    if (bad) return NAN;
    if (mx == 0) return 0;
    int e;
    frexp(mx, &e);
    double sc = ldexp(1.0, -e), Cs[3][3] = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}};
    for (int i = 0; i < b; i++)
        for (int k = 0; k < b; k++) Cs[i][k] = C[i][k] * sc;
    return ldexp(bn_sym3_top_unit((const double(*)[3])Cs, b, z), e);
}

/* The Rayleigh-Ritz step of one column (float64, in the backend's column
 * pass): from the Gram entries g (BN_LG_COUNT, g[i]: field i), with p in
 * the basis when use_p, the largest Ritz value *theta, the second *theta2
 * (NaN for a basis of one vector) and the top vector's coefficients c
 * (x, r, p).  The basis is scaled to unit vectors and
 * Cholesky-factored; a vector whose part orthogonal to the ones before it
 * has squared relative norm below tau is dropped (p when it is nearly in
 * span{x, r}, as near convergence; r when it vanishes), since such a nearly
 * dependent basis would amplify rounding by 1/√tau.  Returns the basis size
 * used (1: x alone, *theta = its Rayleigh quotient), 0 for a non-finite
 * input.  The reduced eigenproblem: bn_sym3_top. */
BN_HD BN_COLUMN_INLINE static inline int bn_lobpcg_ritz(const double *g, int use_p, double tau, double *theta,
                                                        double *theta2, double c[3])
{
    *theta2 = NAN;
    double M[3][3] = {{g[BN_LG_XX], g[BN_LG_XR], g[BN_LG_XP]},
                      {g[BN_LG_XR], g[BN_LG_RR], g[BN_LG_RP]},
                      {g[BN_LG_XP], g[BN_LG_RP], g[BN_LG_PP]}};
    double K[3][3] = {{g[BN_LG_KXX], g[BN_LG_KXR], g[BN_LG_KXP]},
                      {g[BN_LG_KXR], g[BN_LG_KRR], g[BN_LG_KRP]},
                      {g[BN_LG_KXP], g[BN_LG_KRP], g[BN_LG_KPP]}};
    int b = use_p ? 3 : 2;
    *theta = NAN;
    for (int i = 0; i < b; i++)
        for (int k = 0; k < b; k++)
            if (!isfinite(M[i][k]) || !isfinite(K[i][k])) return 0;
    if (!(M[0][0] > 0)) return 0;
    double sc[3] = {0, 0, 0}, Lc[3][3] = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}};
    int used = 0;
    for (int i = 0; i < b; i++) {
        if (!(M[i][i] > 0)) break;
        sc[i] = 1 / sqrt(M[i][i]);
        double row[3];
        for (int k = 0; k <= i; k++) {
            double s = M[i][k] * sc[i] * sc[k];
            for (int q = 0; q < k; q++) s -= row[q] * (k < i ? Lc[k][q] : row[q]);
            row[k] = k < i ? s / Lc[k][k] : s;
        }
        if (i > 0 && !(row[i] >= tau)) break;
        for (int k = 0; k < i; k++) Lc[i][k] = row[k];
        Lc[i][i] = sqrt(i > 0 ? row[i] : 1.0);
        used = i + 1;
    }
    c[0] = sc[0];
    c[1] = c[2] = 0;
    if (used <= 1) {
        *theta = K[0][0] / M[0][0];
        return 1;
    }
    /* C = Lc⁻¹ (S K S) Lc⁻ᵀ, S = diag(sc). */
    double Y[3][3], C[3][3] = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}};
    for (int k = 0; k < used; k++) /* Y = Lc⁻¹ S K S, column k */
        for (int i = 0; i < used; i++) {
            double s = K[i][k] * sc[i] * sc[k];
            for (int q = 0; q < i; q++) s -= Lc[i][q] * Y[q][k];
            Y[i][k] = s / Lc[i][i];
        }
    for (int i = 0; i < used; i++) /* C = Y Lc⁻ᵀ, row i */
        for (int k = 0; k < used; k++) {
            double s = Y[i][k];
            for (int q = 0; q < k; q++) s -= C[i][q] * Lc[k][q];
            C[i][k] = s / Lc[k][k];
        }
    for (int i = 0; i < used; i++)
        for (int k = 0; k < i; k++) C[i][k] = C[k][i] = 0.5 * (C[i][k] + C[k][i]);
    double z[3];
    *theta = bn_sym3_top(C, used, z);
    /* The other eigenvalues from the trace and the sum of the principal 2×2
     * minors: λ₂ + λ₃ = tr - θ, λ₂λ₃ = m₂ - θ(λ₂ + λ₃) (only a gap estimate
     * is made of it). */
    if (used == 2) {
        *theta2 = C[0][0] + C[1][1] - *theta;
    } else {
        double sm = C[0][0] + C[1][1] + C[2][2] - *theta;
        double m2 = C[0][0] * C[1][1] - C[0][1] * C[0][1] + C[0][0] * C[2][2] - C[0][2] * C[0][2] +
                    C[1][1] * C[2][2] - C[1][2] * C[1][2];
        double disc = 0.25 * sm * sm - (m2 - *theta * sm);
        *theta2 = 0.5 * sm + sqrt(disc > 0 ? disc : 0);
    }
    double y[3];
    for (int i = used - 1; i >= 0; i--) { /* y = Lc⁻ᵀ z */
        double s = z[i];
        for (int q = i + 1; q < used; q++) s -= Lc[q][i] * y[q];
        y[i] = s / Lc[i][i];
    }
    for (int i = 0; i < 3; i++) c[i] = i < used ? y[i] * sc[i] : 0;
    return isfinite(*theta) ? used : 0;
}

/* STEP's combination coefficients from the Gram entries g and the Ritz vector's
 * coefficients c (x, r, p) of bn_lobpcg_ritz: scaled so that the new x and p
 * are unit vectors, ‖Σ cᵢvᵢ‖² = cᵀMc (p = 0 when its part vanishes). */
BN_HD BN_COLUMN_INLINE static inline void bn_lobpcg_coefficients(const double *g, const double *c, double theta,
                                                                 double *in)
{
    const double M[3][3] = {{g[BN_LG_XX], g[BN_LG_XR], g[BN_LG_XP]},
                            {g[BN_LG_XR], g[BN_LG_RR], g[BN_LG_RP]},
                            {g[BN_LG_XP], g[BN_LG_RP], g[BN_LG_PP]}};
    double nx = 0, np = 0;
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++) {
            nx += c[i] * M[i][k] * c[k];
            if (i > 0 && k > 0) np += c[i] * M[i][k] * c[k];
        }
    double ix = nx > 0 ? 1 / sqrt(nx) : 1, ip = np > 0 && isfinite(np) ? 1 / sqrt(np) : 0;
    in[BN_LG_CX] = c[0] * ix;
    in[BN_LG_CR] = c[1] * ix;
    in[BN_LG_CP] = c[2] * ix;
    in[BN_LG_PR] = c[1] * ip;
    in[BN_LG_PPC] = c[2] * ip;
    in[BN_LG_MU] = theta;
}

/* After a product: a column's stopping rules on its new value th (the
 * start's Rayleigh quotient, then the Ritz values; change_known once there
 * is a previous one) and rr, the squared residual norm of its new vector.
 * It stops at its ceiling, when th changed by ≤ tol·|th|, by the gap rule
 * (rr ≤ BN_LOB_GAP_FAC·tol·|th|·lc[GAP], above), or at a non-finite th.
 * lc: the column's BN_LC_* fields, stride S.  Returns 1 when it stops. */
BN_HD BN_COLUMN_INLINE static inline int bn_lobpcg_check(double *lc, int64_t S, double th, int change_known,
                                                         double rr, double tol)
{
    lc[BN_LC_IT * S] += 1;
    if (!isfinite(th)) {
        lc[BN_LC_LAM * S] = NAN;
        return 1;
    }
    double best = lc[BN_LC_BEST * S], ceil = lc[BN_LC_CEIL * S];
    if (th > best) lc[BN_LC_BEST * S] = best = th;
    int done = isfinite(ceil) && th >= ceil - 0.5 * tol * fabs(ceil);
    if (!done && change_known) done = fabs(th - lc[BN_LC_THETA * S]) <= tol * fabs(th);
    double gap = lc[BN_LC_GAP * S];
    if (!done && gap > 0 && isfinite(gap)) done = rr <= BN_LOB_GAP_FAC * tol * fabs(th) * gap;
    lc[BN_LC_THETA * S] = th;
    if (done) {
        lc[BN_LC_CONV * S] = 1;
        lc[BN_LC_LAM * S] = best;
    }
    return done;
}

/* START's rules: bn_lobpcg_check on the start's Rayleigh quotient mu and
 * residual norm nv, with the last record's gap; a zero nv (x an
 * eigenvector) also ends the column.  A column that stops here consumes its
 * gap (NaN after): the Ritz gap can only overstate θ - λ₂, and a start near
 * a lower eigenvector that overtook the top one (a spike) would otherwise
 * stop on it record after record; its next record takes a STEP, which
 * refreshes the gap and sees such a crossing. */
BN_HD BN_COLUMN_INLINE static inline int bn_lobpcg_check_start(double *lc, int64_t S, double mu, double nv,
                                                               double tol)
{
    if (bn_lobpcg_check(lc, S, mu, 0, nv * nv, tol)) {
        lc[BN_LC_GAP * S] = NAN;
        return 1;
    }
    if (nv != 0) return 0;
    lc[BN_LC_CONV * S] = 1;
    lc[BN_LC_LAM * S] = lc[BN_LC_BEST * S];
    lc[BN_LC_GAP * S] = NAN;
    return 1;
}

/* STEP's rules on the Ritz value th, the second one th2 (the gap, when it
 * is one) and rr, the new residual's squared norm; from now on p is in the
 * basis. */
BN_HD BN_COLUMN_INLINE static inline int bn_lobpcg_check_step(double *lc, int64_t S, double th, double th2,
                                                              double rr, double tol)
{
    lc[BN_LC_USEP * S] = 1;
    if (th - th2 > 0 && isfinite(th - th2)) lc[BN_LC_GAP * S] = th - th2;
    return bn_lobpcg_check(lc, S, th, 1, rr, tol);
}

/* SHARED's value: the Rayleigh quotient of Πx, Π = I - ŵŵᵀ (ŵ = (w, 0)/‖w‖),
 * under Π A Π from the sums xx = xᵀx, xa = xᵀAx (w-parts and γ), ww = wᵀw,
 * wx = wᵀx, wa = wᵀ(Ax) (w-parts): with c = wx/ww,
 *   (Πx)ᵀA(Πx) = xa - 2c·wa + c²·(w,0)ᵀA(w,0),  ‖Πx‖² = xx - c·wx,
 * and (w,0)ᵀA(w,0) = 0 exactly: scale invariance gives H(w,0) = (-∇_w L, 0)
 * (A = H; P^½HP^½ scales it by η_w) and wᵀ∇_w L = 0 (MODEL.md).  NaN when Πx
 * vanishes or a sum is not finite. */
BN_HD BN_COLUMN_INLINE static inline double bn_lobpcg_shared_value(double xx, double xa, double ww, double wx,
                                                                  double wa)
{
    if (!(ww > 0) || !isfinite(xx + xa + ww + wx + wa)) return NAN;
    double c = wx / ww, nn = xx - c * wx;
    return nn > 0 ? (xa - 2 * c * wa) / nn : NAN;
}

/* SHARED's rule: a column whose value mu reaches its ceiling (as in
 * bn_lobpcg_check) stops converged, with no product counted; any other is
 * left as it was for START.  Returns 1 when it stops. */
BN_HD BN_COLUMN_INLINE static inline int bn_lobpcg_check_shared(double *lc, int64_t S, double mu, double tol)
{
    double ceil = lc[BN_LC_CEIL * S];
    if (!isfinite(mu) || !isfinite(ceil) || !(mu >= ceil - 0.5 * tol * fabs(ceil))) return 0;
    lc[BN_LC_THETA * S] = lc[BN_LC_BEST * S] = lc[BN_LC_LAM * S] = mu;
    lc[BN_LC_CONV * S] = 1;
    return 1;
}

/* PREDICT's combination X ← a·v + b·x from the Gram entries of the last
 * record's vector v and the one before, x (vv = vᵀv, xx, vx; w-parts and γ):
 * the linear extrapolation 2v̂ - x̂ (x̂ signed like v̂), left to the start to
 * normalize; v̂ alone when the two are further apart than BN_LOB_PREDICT_COS,
 * v when either is degenerate.  The eigenvector moves smoothly between
 * records in calm descent, so the extrapolation's error is second order in
 * the step: on the paper case the start's median Rayleigh-quotient error fell
 * from 5e-6 to 6e-8 (issue 7). */
BN_HD BN_COLUMN_INLINE static inline void bn_lobpcg_predict(double vv, double xx, double vx, double *a, double *b)
{
    *a = 1;
    *b = 0;
    if (!(vv > 0) || !(xx > 0) || !isfinite(vv) || !isfinite(xx) || !isfinite(vx)) return;
    double nv = sqrt(vv), nx = sqrt(xx), cs = vx / (nv * nx);
    *a = 1 / nv;
    if (!(fabs(cs) >= BN_LOB_PREDICT_COS)) return;
    *a = 2 / nv;
    *b = (cs >= 0 ? -1 : 1) / nx;
}

#define REAL double
#define BN_SFX(name) name##_f64
#define R_SQRT sqrt
#define R_FABS fabs
#include "bn_hvp_math_impl.h"
#undef REAL
#undef BN_SFX
#undef R_SQRT
#undef R_FABS

#define REAL float
#define BN_SFX(name) name##_f32
#define R_SQRT sqrtf
#define R_FABS fabsf
#include "bn_hvp_math_impl.h"
#undef REAL
#undef BN_SFX
#undef R_SQRT
#undef R_FABS

#endif
