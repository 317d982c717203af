/* The square loss's Hessian in the data's singular basis (issue 7), written
 * once as static inline functions that the C compiler and nvcc both include.
 *
 * Why.  With u = A·z for data A (n×r) whose Gram matrix AᵀA = diag(λ) is
 * diagonal (A = Xc·V_rᵀ with V_r the right singular vectors of Xc: the
 * sharpness engine's row-space basis, sharpness_log.c), the square loss has
 * ℓ'' = 1, and the whole Hessian of L in (z, γ) is
 *   H_zz = a·diag(λ) + [rank 2 in span{p, c_y}],  p = λ∘z,  c_y = Aᵀy,
 *   H_zγ = (κ_b·p - c_y)/(√n‖u‖),  H_γγ = 1,
 * with scalars of (z, γ) alone (derivation below).  A product H·(v, δ) then
 * costs O(r) instead of two matrix products with A (4·n·r per column), and the
 * data enter only through λ and c_y, two r-vectors.
 *
 * Derivation (MODEL.md's notation; û = u/‖u‖, ẑ = u/s, g = ℓ'(γẑ) = γẑ - y):
 * z_pred = γ√n·u/‖u‖, so with J = ∂z_pred/∂u = (γ/s)(I - ûûᵀ) and
 * Σ_i g_i ∂²(u_i/‖u‖) = -[gûᵀ + ûgᵀ + (gᵀû)(I - 3ûûᵀ)]/‖u‖²,
 *   ∂²L/∂u² = (1/n)JᵀJ - (γ/(√n‖u‖²))[gûᵀ + ûgᵀ + (gᵀû)(I - 3ûûᵀ)].
 * With m = Aᵀû = p/‖u‖, h = Aᵀg = (γ/s)p - c_y, c1 = γ²/‖u‖², c3 = γ/(√n‖u‖²)
 * and gᵀû = γ√n - (c_yᵀz)/‖u‖:
 *   H_zz = (c1 - c3·gᵀû)·diag(λ) + (3c3·gᵀû - c1)·mmᵀ - c3·(hmᵀ + mhᵀ),
 *   H_zγ = (h - (gᵀû)·m)/(√n‖u‖),  H_γγ = ẑᵀẑ/n = 1.
 * Checked against the general HVP of bn_hvp_math.h and the dense Hessian
 * (tests/test_sharpness.c).
 *
 * fp32 and fp64 come from one text: bn_sqh_math_impl.h is included twice. */
#ifndef BN_SQH_MATH_H
#define BN_SQH_MATH_H

#include "bn_hvp_math.h"

#include <stddef.h>

/* Per-column results of bn_sqh_power_column, as a backend's power_square op
 * stores them: io[field * S + column], backend precision. */
enum {
    BN_SQ_SIGMA = 0, /* in/out: the shift σ (as in sharpness.h)            */
    BN_SQ_CEIL,      /* in: the ceiling of bn_power_ceiling (NaN: none)    */
    BN_SQ_LAM,       /* out: the estimate of λ_max (NaN: non-finite state) */
    BN_SQ_ITERS,     /* out: products used                                 */
    BN_SQ_CONV,      /* out: 1 = converged                                 */
    BN_SQ_FIXED,     /* out: 1 = the certificate found a larger eigenvalue;
                        2 = capped at BN_SQH_POWER_CAP products, finished by
                        bisection on the count                              */
    BN_SQ_COUNT
};

/* The coefficients of one column's state (bn_sqh_coef's fields), cached
 * between the operators of one record: BN_SQC_COUNT reals per column,
 * field-major. */
#define BN_SQH_COEF_FIELDS(X) X(nu) X(gs) X(a) X(kmm) X(khm) X(kb) X(isn) X(uu) X(yu) X(zz) X(l2z2) X(cy2) X(lmax)
#define BN_SQH_COEF_ENUM(f) BN_SQC_##f,
enum { BN_SQH_COEF_FIELDS(BN_SQH_COEF_ENUM) BN_SQC_COUNT };
#undef BN_SQH_COEF_ENUM

/* Power products per column before the count takes over (bn_sqh_power_column;
 * 8 before the certificate had its inverse-iteration rounds, issue 7: with
 * them 4 is cheaper, 10.0 → 9.7 products, counts and solves per trajectory and
 * record at T = 500, and more columns end at tol relative to λ). */
#define BN_SQH_POWER_CAP 4
/* The early count (one or two products in) runs only when the product's
 * residual ρ = ‖(A - σ)v - (μ - σ)v‖ (unit v) allows it to succeed: the
 * Rayleigh quotient's error is about ρ²/gap, so with ρ² > c·tol·s²
 * (s = max(|μ|, |μ - σ|)) a count would mostly fail.  c = 1 was best of
 * 0.01-1e4 on the paper case (issue 7: products and counts per trajectory
 * and record 9.7 → 8.6 at T = 500, 7.3 → 6.9 at T = 2000). */
#define BN_SQH_COUNT_RESIDUAL 1.0
/* The count's resolution: its sums and the 3×3 inertia round, and on
 * ill-conditioned data (Hilbert, n=16, d=60: poles from 0.38 down to 1e-6)
 * the count's λ_max sat 1.7e-8 (relative) below the one the structured
 * products converge to, which agrees with LAPACK to 1e-12.  So the count
 * stops an iteration (the early certificate, the cap) only when tol is well
 * above that; with a tighter tol the products alone stop it. */
#define BN_SQH_COUNT_TOL_MIN 1e-7

/* Precision-independent helpers of the certificate (bn_sqh_math_impl.h). */

/* #neg of a symmetric 3×3 from its characteristic polynomial
 * x³ - c1x² + c2x - c3: the negative roots are the sign changes of
 * (1, c1, c2, c3); coefficients within rounding of 0 (relative to the
 * matrix's scale) count as 0. */
BN_HD BN_COLUMN_INLINE static inline int bn_sqh_neg3(const double *m)
{
    double sc = 0;
    for (int t = 0; t < 9; t++) sc = fabs(m[t]) > sc ? fabs(m[t]) : sc;
    double c1 = m[0] + m[4] + m[8];
    double c2 = m[0] * m[4] - m[1] * m[3] + m[0] * m[8] - m[2] * m[6] + m[4] * m[8] - m[5] * m[7];
    double c3 = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) +
                m[2] * (m[3] * m[7] - m[4] * m[6]);
    double e = 1e-13;
    double c[4] = {1, fabs(c1) > e * sc ? c1 : 0, fabs(c2) > e * sc * sc ? c2 : 0, fabs(c3) > e * sc * sc * sc ? c3 : 0};
    int changes = 0;
    double last = 1;
    for (int t = 1; t < 4; t++)
        if (c[t] != 0) {
            changes += (c[t] > 0) != (last > 0);
            last = c[t];
        }
    return changes;
}

/* m, or 1e-300 for m = 0 (a pole hit exactly), without a branch: with
 * bn_sqh_above, what lets the certificate's per-entry loops vectorize (they
 * ran scalar, at 3× a product's cost).  m + 1e-300 differs from m only for
 * |m| < 1e-284. */
BN_HD BN_COLUMN_INLINE static inline double bn_sqh_nonzero(double m) { return m + (double)(m == 0) * 1e-300; }

/* 1 when m > 0, else 0 (NaN: 0).  On the host through isgreater, a quiet
 * comparison that gcc if-converts in the per-entry loops (m > 0 may trap on
 * NaN, which kept them scalar); nvcc's isgreater is host-only, and there a
 * plain comparison is the same value. */
BN_HD BN_COLUMN_INLINE static inline double bn_sqh_above(double m)
{
#ifdef __CUDACC__
    return m > 0 ? 1.0 : 0.0;
#else
    return (double)isgreater(m, 0.0);
#endif
}

/* x = m⁻¹b for a 3×3 (adjugate over determinant). */
BN_HD BN_COLUMN_INLINE static inline void bn_sqh_solve3(const double *m, const double *b, double *x)
{
    double a00 = m[4] * m[8] - m[5] * m[7], a01 = m[2] * m[7] - m[1] * m[8], a02 = m[1] * m[5] - m[2] * m[4];
    double a10 = m[5] * m[6] - m[3] * m[8], a11 = m[0] * m[8] - m[2] * m[6], a12 = m[2] * m[3] - m[0] * m[5];
    double a20 = m[3] * m[7] - m[4] * m[6], a21 = m[1] * m[6] - m[0] * m[7], a22 = m[0] * m[4] - m[1] * m[3];
    double det = m[0] * a00 + m[1] * a10 + m[2] * a20;
    if (det == 0) det = 1e-300;
    x[0] = (a00 * b[0] + a01 * b[1] + a02 * b[2]) / det;
    x[1] = (a10 * b[0] + a11 * b[1] + a12 * b[2]) / det;
    x[2] = (a20 * b[0] + a21 * b[1] + a22 * b[2]) / det;
}

#define REAL double
#define BN_SFX(name) name##_f64
#define R_SQRT sqrt
#define R_FABS fabs
#include "bn_sqh_math_impl.h"
#undef REAL
#undef BN_SFX
#undef R_SQRT
#undef R_FABS

#define REAL float
#define BN_SFX(name) name##_f32
#define R_SQRT sqrtf
#define R_FABS fabsf
#include "bn_sqh_math_impl.h"
#undef REAL
#undef BN_SFX
#undef R_SQRT
#undef R_FABS

#endif
