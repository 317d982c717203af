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
