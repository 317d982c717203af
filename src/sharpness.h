/* Sharpness along every trajectory (issue 3): exact batched Hessian-vector
 * products, a batched shifted power iteration, Lanczos with full
 * reorthogonalization, and the dense Hessian for small problems.
 *
 * Everything runs through the backend table (backend.h): one HVP is two
 * batched matrix products (product_xw, product_xtq) around one column pass
 * (hvp_columns); the vector algebra of the iterations is in the backend ops
 * power_update and lanczos_extend.  The host only moves O(S) scalars per
 * iteration (the control block, bn_hvp_math.h), plus, for Lanczos, the small
 * tridiagonal eigenproblems.
 *
 * Operators.  H is the (d+1)×(d+1) Hessian of L in (w, γ) at the state set by
 * bn_sharp_set_state.  op is a combination of the flags below:
 *   0                      H
 *   WEIGHTED               P^½ H P^½, P = diag(η_w·I_d, η_γ) of the trajectory
 *   PROJECT                Π H Π on range(Π), Π = I - (ŵ,0)(ŵ,0)ᵀ, ŵ = w/‖w‖:
 *                          the directions that change the direction of w, or γ
 *   WEIGHTED|PROJECT       Π P^½ H P^½ Π on range(Π)  (P^½ and Π commute)
 * "On range(Π)" means the eigenvalue belonging to (ŵ, 0) itself (an exact 0 of
 * ΠHΠ) is excluded: the vectors of the iterations stay in range(Π).
 *
 * Power iteration and the shift.  Power iteration converges to the eigenvalue
 * of largest magnitude, and H is indefinite.  Each column iterates on
 * B = A - σI (σ ≤ 0, starting at the previous record's σ, 0 at first):
 *   - every Rayleigh quotient μ = vᵀAv is a lower bound of λ_max(A); the
 *     reported value is the largest one seen, so the estimate never exceeds
 *     λ_max (up to rounding) and never belongs to the wrong end;
 *   - when μ - σ < 0 settles (relative change ≤ 1e-2), the dominant
 *     eigenvalue of B is λ_min(A) - σ: σ moves halfway to μ ≈ λ_min, and the
 *     column restarts from its record's start vector; this may repeat.  At
 *     σ = (σ_old + λ_min)/2 the top of B is still λ_max - σ as long as
 *     λ_max > σ_old, and B's ratio (λ_2 - σ)/(λ_max - σ), which sets the
 *     speed, is smaller than at σ = λ_min (issue 7: 13.5 → 12.5 products a
 *     trajectory per record on the paper case; σ = μ was the first rule);
 *   - convergence: relative change |μ_k - μ_{k-1}| ≤ tol·max(|μ_k|, |μ_k - σ|),
 *     and, once the changes shrink geometrically with ratio ρ < 1, the
 *     extrapolated remaining change |Δ|/(1-ρ) too; only with μ - σ ≥ 0, and
 *     only once two changes (three HVPs since the start or the last shift)
 *     give ρ.  Note the scale: with a shift (|λ_min| ≫ λ_max), the error is
 *     ~tol·|μ - σ|, which relative to λ_max itself can be 30× tol (measured,
 *     bench/RESULTS.md);
 *   - columns leave the batch when they converge (compaction, issue 7: the
 *     backend op copy_columns gathers the still-active columns into a compact
 *     batch, so the products cost what the active columns need; results are
 *     bitwise those of the full batch);
 *   The start vector of a record is the previous record's final vector
 *   (warm start), projected on range(Π) and normalized; at the first record a
 *   deterministic pseudo-random vector (key = seed id).
 *
 * Lanczos.  H maps everything into rowspace(Xc) ⊕ γ and vanishes on
 * null(Xc) × {0}; so every operator above is block diagonal: on the invariant
 * subspace E = Π P^½ (rowspace ⊕ γ) (dimension r+1, minus 1 for PROJECT when
 * w is in the row space) and exactly 0 on the rest of its space.  Lanczos
 * runs in E (start and restart vectors are Π·A·x for a pseudo-random x) and
 * the exact zeros, dim - dim E of them, are added to its Ritz values; without
 * this a single Krylov sequence would see the (highly repeated) zero once.
 * Full reorthogonalization
 * (modified Gram-Schmidt, twice) in lanczos_extend.  A Ritz value θ with
 * residual bound |β_m s_m| ≤ tol·scale (scale = largest |Ritz value|) is
 * converged (an eigenvalue lies within that bound).  Exact multiplicities
 * (whitened data has them) are found by restarting: when β_m ≤ ~tol·scale the
 * Krylov space is invariant, the block is closed (its Ritz values are
 * eigenvalues) and a new random vector orthogonal to the basis opens the next
 * block.  While the open block's top Ritz value is not converged, or ties with
 * a closed block's value inside the top k, the process continues.
 *
 * LOBPCG (issue 7).  Where the backend has lobpcg_update (CPU and CUDA), the
 * general path replaces the power iteration by LOBPCG with one vector: the
 * same start vectors and compaction; each iteration multiplies the residual
 * r = Ax - μx once and moves to the top Ritz vector of span{x, r, p} (3×3
 * Rayleigh-Ritz per column in the backend's pass, bn_lobpcg_ritz; the same
 * pass applies the stopping rule, bn_lobpcg_check, and clears the column's
 * ACTIVE flag); it stops
 * when the Ritz value changes by ≤ tol·|θ|, when the quadratic residual
 * bound ‖r‖²/gap is below BN_LOB_GAP_FAC·tol·|θ| (gap: to the second Ritz
 * value; at the start, the column's gap of the last record, which may stop it
 * after one product) or at the ceiling.  Between records each operator keeps
 * its last two vectors and starts from their linear extrapolation
 * (bn_lobpcg_predict).  No
 * shift: the Ritz value is the top of its subspace whatever the most
 * negative eigenvalue (paper case, logistic: products per trajectory and
 * record 13.9 → 8.0, the slowest column 1635 → 22, errors 4e-6 → 2e-7; the
 * prediction and the gap rule 8.0 → 6.1 at the same errors).
 * su.plain_power (BN_SHARP_PLAIN_POWER) keeps the power iteration.
 *
 * Square loss (issue 7).  With su.sq_lam/sq_cy set (the engine in the data's
 * singular basis, sharpness_log.c), bn_sharp_power runs each column's whole
 * iteration in one backend call (power_square) on the Hessian's
 * diagonal-plus-rank-3 form, O(d) per product and no matrix products; the
 * same start, shift and stopping rule (bn_power_control), plus an exact
 * eigenvalue count that certifies each value and, where it finds a larger
 * eigenvalue, finds λ_max on the count: a bracket, then (once λ_max is alone
 * in it) inverse iteration through the Woodbury form, whose Rayleigh
 * quotient and one count usually close the bracket, then bisection for what
 * is left (bn_sqh_math.h).  With tol ≥ 1e-7 (the count's resolution,
 * BN_SQH_COUNT_TOL_MIN) the count also stops a column: a warm start already
 * within tol after one or two products (counted only when the product's
 * residual allows it, BN_SQH_COUNT_RESIDUAL), and a column not converged
 * after BN_SQH_POWER_CAP = 4 products, finished on the count to tol
 * relative to λ (issue 7: slow columns had taken up to the iteration limit;
 * on the paper case, products, counts and solves per trajectory and record
 * 12.5 → 10.3 → 8.6 at T = 500, the slowest column of a batch 2012 → 101).
 * The other operations (bn_sharp_apply, Lanczos, the dense Hessian) keep the
 * general HVPs.
 *
 * Precision: tol is raised to 4·ε·√(d+1) of the backend precision
 * (bn_sharp_tol_effective), the level of rounding noise in μ: ≈ 4e-6 for fp32
 * at d = 256, ≈ 1.4e-14 for fp64. */
#ifndef BN_SHARPNESS_H
#define BN_SHARPNESS_H

#include "backend.h"

enum { BN_SOP_WEIGHTED = 1, BN_SOP_PROJECT = 2, BN_SOP_COUNT = 4 };

typedef struct {
    int64_t n, d, S;
    int logistic;
    const void *Xc, *y;              /* backend buffers (n×d col-major, n), kept by the caller */
    const void *XcT;                 /* optional: Xcᵀ (d×n col-major), used for Xcᵀ·Q if set */
    const double *eta_w, *eta_gamma; /* host, S each: P of the weighted operators (copied)   */
    uint64_t seed;                   /* column j's pseudo-random vectors use key seed + j      */
    double tol;                      /* power: relative change; Lanczos: Ritz residual / scale */
    int64_t maxiter;                 /* HVPs per power iteration (≥ 1)                        */
    int64_t lanczos_max;             /* Lanczos basis size limit (0: no Lanczos buffers)      */
    /* For Lanczos: the numerical rank r of Xc (0 = unknown: no zeros are added)
     * and, per column, whether w lies in the row space of Xc (NULL = all do;
     * GD keeps w's null-space part fixed, so the flag of w0 holds throughout). */
    int64_t rank;
    const unsigned char *w_in_rowspace;
    /* Power iteration: 0 (default) = the columns that have converged leave the
     * batch (compaction, when the backend has copy_columns); 1 = every column
     * stays in the batch until the last one converges (the results are the
     * same: for tests and benchmarks). */
    int no_compact;
    /* Square loss (issue 7): when Xc's Gram matrix XcᵀXc is diagonal (the
     * engine runs in the data's singular basis, sharpness_log.c), its
     * diagonal λ and c_y = Xcᵀy (backend buffers, d each, kept by the caller)
     * let bn_sharp_power run each column's iteration whole on the backend at
     * O(d) per product (bn_sqh_math.h) instead of two matrix products.
     * NULL = the general HVPs; ignored for the logistic loss and by backends
     * without power_square. */
    const void *sq_lam, *sq_cy;
    /* 1 = the general path's λ_max by the shifted power iteration even where
     * the backend has lobpcg_update (for tests and side-by-side benchmarks);
     * 0 (default) = LOBPCG there. */
    int plain_power;
} bn_sharp_setup;

typedef struct bn_sharp bn_sharp;

/* BN_ERR_UNAVAILABLE when the backend lacks the sharpness ops. */
bn_status bn_sharp_create(bn_backend *be, const bn_sharp_setup *su, bn_sharp **out);
void bn_sharp_free(bn_sharp *sh);
double bn_sharp_tol_effective(const bn_sharp *sh);
/* Dimension of the space op acts on: d+1, or d with PROJECT. */
int64_t bn_sharp_dim(const bn_sharp *sh, int op);

/* The state (w_t, γ_t) of every column: W d×S, gamma S (backend buffers, read
 * now and by the calls that follow until the next bn_sharp_set_state). */
bn_status bn_sharp_set_state(bn_sharp *sh, const void *W, const void *gamma);

/* (X, xg) = P^½ H P^½ (V, vg) (WEIGHTED) or H (V, vg), backend buffers
 * (d×S, S).  PROJECT is not applied here (the iterations project). */
bn_status bn_sharp_apply(bn_sharp *sh, int op, const void *V, const void *vg, void *X, void *xg);

/* λ_max of op for every column by the shifted power iteration (see above).
 * lam, shift: S (float64; shift = the final σ, 0 when none was needed);
 * iters, conv: S (HVPs used, 1 = converged).  NaN for a non-finite state. */
bn_status bn_sharp_power(bn_sharp *sh, int op, double *lam, double *shift, int64_t *iters,
                         int64_t *conv);

/* bn_sharp_power with a ceiling (NULL = none): ceil[j], when finite, is an
 * upper bound of column j's λ_max(op), known to about tol (NaN = none).  A
 * column stops, converged, at the first Rayleigh quotient μ ≥ σ within tol/2
 * of it: μ ≥ ceil - ½·tol·max(|ceil|, |ceil - σ|); λ_max(op) is then in
 * [μ, ceil], so μ is off by at most tol/2 plus the ceiling's own error.  For
 * the sphere operator Π A Π the ceiling is A's λ_max of the same record: on
 * range(Π) its eigenvalues interlace A's (Courant-Fischer), and when A's top
 * eigenvector is nearly ⊥ ŵ (calm descent: Hŵ = -(∇_w L, 0)/‖w‖ is small),
 * the first product from A's vector, projected, reaches it (issue 7: sphere
 * products per trajectory and record on the paper case, logistic 3.21 →
 * 2.04; square, structured, evaluations 2.04 → 1.24).  On LOBPCG's path,
 * right after A's own call (bn_sharp_power_warm_from), that first value
 * needs no product: Πx's Rayleigh quotient follows from A's final x and Ax
 * (bn_lobpcg_shared_value), and a column it stops reports 0 products
 * (logistic paper case: sphere 1.51 → 0.91 products).  Both paths:
 * the square loss's columns (power_square) take it through io[BN_SQ_CEIL]
 * and skip the certificate's count when it stops them. */
bn_status bn_sharp_power_bounded(bn_sharp *sh, int op, const double *ceil, double *lam, double *shift,
                                 int64_t *iters, int64_t *conv);

/* The next bn_sharp_power of dst starts from src's last vector (normalized;
 * projected then), not from dst's own: sharing between operators of one
 * record (issue 7).  Nothing when src has no vector yet. */
bn_status bn_sharp_power_warm_from(bn_sharp *sh, int dst, int src);

/* Whether bn_sharp_power uses the square loss's structured products, and how
 * many columns of its last call the exact eigenvalue count corrected
 * (bn_sqh_math_impl.h's certificate; 0 on the general path). */
int bn_sharp_is_square(const bn_sharp *sh);
/* Whether bn_sharp_power's general path runs LOBPCG (else the power iteration). */
int bn_sharp_uses_lobpcg(const bn_sharp *sh);
int64_t bn_sharp_last_corrected(const bn_sharp *sh);
/* How many columns of its last call hit BN_SQH_POWER_CAP products and were
 * finished by bisection on the count (0 on the general path). */
int64_t bn_sharp_last_bisected(const bn_sharp *sh);

/* How many times bn_sharp_power compacted its batch so far (tests). */
int64_t bn_sharp_compactions(const bn_sharp *sh);

/* The pieces of bn_sharp_power, for benchmarks: prepare sets the start
 * vectors and activates every column; one iteration is one HVP, the vector
 * update (power_update) and the O(S) download of the control block. */
bn_status bn_sharp_power_prepare(bn_sharp *sh, int op);
bn_status bn_sharp_power_iteration(bn_sharp *sh, int op);

/* The k largest eigenvalues of op (descending) for every column: eigs S×k
 * row-major (NaN past the dimension); iters, conv: S. */
bn_status bn_sharp_lanczos(bn_sharp *sh, int op, int64_t k, double *eigs, int64_t *iters,
                           int64_t *conv);

/* The dense Hessian H of columns j0..j1-1, built from the HVPs of the d+1
 * unit vectors: H (j1-j0)×(d+1)×(d+1) row-major, float64; not symmetrized. */
bn_status bn_sharp_dense_hessian(bn_sharp *sh, int64_t j0, int64_t j1, double *H);
/* Host: all eigenvalues (descending) of op built from one column's dense H
 * (symmetrized), its w (d) and step sizes.  evals: d+1 entries; *count
 * receives the dimension (d+1, or d with PROJECT). */
bn_status bn_sharp_dense_eigs(const double *H, int64_t d, const double *w, double eta_w,
                              double eta_gamma, int op, double *evals, int64_t *count);

/* Checkpoints (issue 6; ckpt.h): the engine's warm-start state (shifts and
 * warm vectors, bitwise in the backend precision), as consecutive sections;
 * load into an engine created with the same setup and backend precision. */
typedef struct bn_ckpt bn_ckpt;
bn_status bn_sharp_ckpt_save(const bn_sharp *sh, bn_ckpt *c);
bn_status bn_sharp_ckpt_load(bn_sharp *sh, bn_ckpt *c);

/* ------------------------------------------------------ records of a run
 *
 * Per record (power method): λ_max of H, P^½HP^½ and the sphere operator.
 * Issue 7: when n < d and every w0 lies in rowspace(Xc) (GD keeps it there),
 * the engine runs in an orthonormal basis of the row space (dimension r+1
 * instead of d+1; the d − r exact zeros are added back), which is exact and
 * ~d/r times cheaper; and the sphere iteration starts from the unprojected
 * operator's vector of the same record (sharpness_log.c).  Environment
 * overrides for side-by-side benchmarks: BN_SHARP_FULL (engine in R^d),
 * BN_SHARP_NO_COMPACT, BN_SHARP_NO_SHARE, BN_SHARP_NO_CEILING. */

typedef struct bn_sharp_log bn_sharp_log;

/* Checks the sharpness settings of a run (d: the data dimension). */
bn_status bn_sharp_validate(const bn_run_config *cfg, int64_t d);
/* Host copies of the problem, read by bn_sharp_log_create only. */
typedef struct {
    const double *xc;    /* n×d row-major, centered                                   */
    const double *y;     /* n                                                         */
    const double *w0;    /* S×d: the starts (Lanczos: whether each is in the row space) */
    int64_t rank_hint;   /* > 0: the rank of Xc when known (e.g. from the reference)   */
    /* Non-NULL: the run's state W is given in these row-space coordinates
     * (basis_rank×d row-major, orthonormal right singular vectors of Xc, as
     * bn_la_rowspace gives them; sim.c), and the engine works in them. */
    const double *basis;
    int64_t basis_rank;
    const double *xr;    /* with basis: Xc·basisᵀ (n×basis_rank row-major), the data
                          * the run's Xc buffer holds                                  */
} bn_sharp_log_host;

/* Xc, y: backend buffers (n×d, n; with host->basis, the run's n×basis_rank
 * coordinates data). */

bn_status bn_sharp_log_create(bn_backend *be, const bn_run_config *cfg, int64_t n, int64_t d,
                              const void *Xc, const void *y, const double *eta_w,
                              const double *eta_gamma, const bn_sharp_log_host *host,
                              bn_sharp_log **out);
void bn_sharp_log_free(bn_sharp_log *lg);
/* The first sharpness step > t (T+1 when none is left). */
int64_t bn_sharp_log_next_step(const bn_sharp_log *lg, int64_t t);
/* Records step t when it is a sharpness step (else does nothing); W, gamma
 * hold the state (w_t, γ_t): W d×S, or basis_rank×S in the host's basis. */
bn_status bn_sharp_log_at(bn_sharp_log *lg, int64_t t, const void *W, const void *gamma);
int bn_sharp_log_n_arrays(const bn_sharp_log *lg);
bn_status bn_sharp_log_array(const bn_sharp_log *lg, int i, bn_sim_array *out);
void bn_sharp_log_info(const bn_sharp_log *lg, bn_sharpness_info *info);
/* Checkpoints (issue 6): the records written so far, the info counters and
 * the engine's warm-start state.  Save after the sharpness record of some step
 * t (before bn_sharp_log_at of any later step); load into a fresh log created
 * with the same configuration, data and backend: the run then continues
 * bitwise as the uninterrupted one. */
bn_status bn_sharp_log_ckpt_save(const bn_sharp_log *lg, bn_ckpt *c);
bn_status bn_sharp_log_ckpt_load(bn_sharp_log *lg, bn_ckpt *c);
/* For tests and benchmarks: the engine's dimension (r with the reduced basis,
 * else d). */
int64_t bn_sharp_log_engine_dim(const bn_sharp_log *lg);

#endif
