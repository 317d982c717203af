/* The reference direction w* that α, β and ρ are measured against.
 *
 * Square loss: the minimum-norm solution of min ‖Xc w - y‖ (LAPACK dgelsd on
 * Xc).  Singular values below rcond·s_1 with rcond = max(n, d)·eps (numpy's
 * default) count as zero: they are below what rounding X alone can cause, and
 * keeping them would let noise directions dominate w*.  Reported
 * (bn_ref_info, kind 0): residual = ‖Xc w - y_c‖/‖y_c‖ with y_c = y - mean(y)
 * (range(Xc) ⟂ 1, so the mean of y can never be fitted; measured against y
 * itself the residual would only report that floor), kkt_violation =
 * ‖Xcᵀ(Xc w - y)‖/(‖Xc‖_F·‖y_c‖) (both 0 when y is constant), rank = the
 * numerical rank dgelsd used.
 *
 * Logistic loss: the hard-margin SVM on the centered data, no bias,
 *     min ‖w‖²  s.t.  y_i⟨w, x̃_i⟩ >= 1 for all i.
 * With z_i = y_i x̃_i this is a least-distance program, min ‖w‖ s.t. Z w >= 1,
 * which Lawson & Hanson (Solving Least Squares Problems, ch. 23) turn into
 * the nonnegative least-squares problem
 *     min_{u >= 0} ‖E u - f‖,   E = [Zᵀ; c·1ᵀ] ((d+1)×n),  f = e_{d+1}.
 * Its residual r = f - E u either vanishes — then some u >= 0 has Zᵀu = 0,
 * 1ᵀu = 1/c, a certificate that no w separates (Gordan's alternative) — or
 * gives the solution w = -r_{1:d}/(c·r_{d+1}), multipliers λ = u/(c·r_{d+1}).
 * Why this form: it is bounded whether or not the data is separable, so
 * infeasibility is a number (‖r‖ = 0) rather than a diverging iteration, and
 * the NNLS is solved by an exact active-set method on a QR factorization of
 * E's passive columns (no Gram matrix, so the condition number is not
 * squared: this is what keeps Hilbert data tractable).
 *
 * Scale: Z is divided by R = max_i ‖x̃_i‖, and c is chosen so that the
 * active-set decisions are not lost in rounding.  At the optimum
 * ‖r‖² = r_{d+1} = 1/(1 + c²/γ²) with γ the geometric margin (in units of R),
 * and the gradients the method compares are g_j = c·‖r‖²·(1 - margin_j).
 * Starting with c = 1 gives ‖r‖ ≈ γ; while ‖r‖ < SVM_RHO_ACCEPT the problem
 * is solved again with c = c·‖r‖ ≈ γ, which makes ‖r‖ ≈ 0.7.  Data is
 * declared not separable when even c = SVM_C_MIN leaves ‖r‖ below
 * SVM_RHO_ACCEPT, i.e. when γ < ~1e-12·R: a margin that small is at the level
 * where rounding of the samples' coordinates can flip the answer, and the
 * NNLS residual of truly inseparable data is then still far below the
 * threshold (its rounding level is ~eps·sqrt(n)/c).
 *
 * Polish: the active set A (the NNLS's passive set plus the samples already
 * on the margin) gives w as the least-norm solution of Z_A w = 1 and λ_A
 * from Z_Aᵀ λ_A = w (both by SVD least squares), so the active margins are 1
 * to rounding.  A negative λ or a violated margin (possible only through
 * rounding) moves one index and solves again, a few times at most.  The
 * result is kept only if its KKT violation is no worse than the NNLS's.  The
 * NNLS answer alone already has a KKT violation ~1e-14 (its scale is fixed
 * from the passive margins), so for big support sets (two SVDs of |A|×d,
 * seconds at n = d = 3000) the polish runs only if that is above 1e-12.
 *
 * Reported (bn_ref_info, kind 1): residual = 1 - min margin (<= 0 when every
 * constraint holds), kkt_violation = the largest of: primal infeasibility
 * max(0, 1 - min margin); dual infeasibility max(0, -min λ)/max λ;
 * complementary slackness max |λ_i (margin_i - 1)| / max λ; stationarity
 * ‖w - Σ λ_i y_i x̃_i‖ / ‖w‖.  n_support counts margins with
 * |margin - 1| <= SVM_SUPPORT_TOL (1e-7: a sample that close to the boundary
 * is a support vector for any purpose the simulator has), all_active says
 * whether that is every sample (the paper's Assumption 3).  A solution whose
 * KKT violation exceeds SVM_KKT_FAIL is refused rather than returned. */
#include "internal.h"
#include "linalg.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SVM_C_MIN 1e-9        /* smallest c tried; see the top comment          */
#define SVM_RHO_ACCEPT 1e-3   /* ‖r‖ at which c is small enough: ‖w_scaled‖ <~ 1e3 */
#define SVM_DEP_TOL 1e-10     /* a column this close to the span of the others is */
                              /* treated as dependent (relative to its norm)       */
#define SVM_SUPPORT_TOL 1e-7
#define SVM_POLISH_TOL 1e-12  /* margins / λ the polish loop still corrects       */
#define SVM_POLISH_ACTIVE 1e-9 /* margins this close to 1 start in the polish set  */
#define SVM_POLISH_ROUNDS 8   /* each round is two SVD solves                      */
#define SVM_POLISH_SKIP 1e-12 /* an NNLS solution this good is polished only when */
#define SVM_POLISH_CHEAP 1e9  /* |A|²·d <= this (two SVDs then take < ~1 s)       */
#define SVM_KKT_FAIL 1e-6
#define SVM_BLOCK_MAX 64      /* most columns entered per active-set step          */

/* ------------------------------------------------------------- helpers */

static double *alloc_doubles(int64_t a, int64_t b)
{
    size_t count = bn_mul_size((size_t)a, (size_t)b);
    if (!count || !bn_mul_size(count, sizeof(double))) return NULL;
    return malloc(count * sizeof(double));
}

static double norm2(const double *v, int64_t len)
{
    double s = 0;
    for (int64_t i = 0; i < len; i++) s += v[i] * v[i];
    return sqrt(s);
}

static double dot(const double *a, const double *b, int64_t len)
{
    double s = 0;
    for (int64_t i = 0; i < len; i++) s += a[i] * b[i];
    return s;
}

/* -------------------------------------------------------- least squares */

static bn_status reference_ls(const double *xc, const double *y, int64_t n, int64_t d,
                              double *w, bn_ref_info *info)
{
    double *r = alloc_doubles(n, 1);
    double *g = alloc_doubles(d, 1);
    bn_status st = BN_OK;
    if (!r || !g) {
        st = bn_fail(BN_ERR_NOMEM, "least squares: cannot allocate work vectors");
        goto done;
    }
    int64_t rank = 0;
    st = bn_la_lstsq(xc, n, d, y, 1, -1.0, w, &rank);
    if (st != BN_OK) goto done;
    /* range(Xc) ⟂ 1, so the mean of y is never fitted: measure against y_c. */
    double ymean = 0;
    for (int64_t i = 0; i < n; i++) ymean += y[i];
    ymean /= (double)n;
    double yc_norm = 0, xc_fro = norm2(xc, n * d);
    for (int64_t i = 0; i < n; i++) {
        r[i] = -(y[i] - ymean);
        yc_norm += r[i] * r[i];
    }
    yc_norm = sqrt(yc_norm);
    bn_la_gemv(0, n, d, 1.0, xc, w, 1.0, r); /* r = Xc w - y_c */
    bn_la_gemv(1, n, d, 1.0, xc, r, 0.0, g); /* g = Xcᵀ r      */
    info->kind = 0;
    info->residual = yc_norm > 0 ? norm2(r, n) / yc_norm : 0;
    info->kkt_violation = yc_norm > 0 && xc_fro > 0 ? norm2(g, d) / (xc_fro * yc_norm) : 0;
    info->n_support = 0;
    info->all_active = 0;
    info->rank = rank;
done:
    free(r);
    free(g);
    return st;
}

/* ----------------------------------------- NNLS on E = [Zᵀ; c·1ᵀ] (LDP) */

typedef struct {
    int64_t n, d, m;     /* m = d + 1: rows of E                          */
    const double *Z;     /* n×d, rows z_i = y_i x̃_i / R                   */
    double c;
    int64_t k, kmax;     /* passive columns now / at most                 */
    double *Q;           /* kmax×m: row j holds QR column j (orthonormal) */
    double *R;           /* kmax×kmax column-major upper triangle         */
    int64_t *cols;       /* sample index of QR column j                   */
    double *u;           /* n, the NNLS variable (0 outside the set)      */
    double *z, *h;       /* work: kmax each                               */
    double *r, *g;       /* residual f - E u (m), gradient Eᵀ r (n)        */
    double *V, *H, *Hp;  /* a block of new columns (B×m) and their        */
    double *vnorm;       /* coefficients on Q (kmax×B, two passes); ‖e_j‖ */
    int64_t *cand;       /* n: candidates to enter                        */
    unsigned char *passive, *banned, *fresh;
} ldp;

#define RIJ(s, i, j) ((s)->R[(j) * (s)->kmax + (i)])

static void ldp_free(ldp *s)
{
    free(s->Q);
    free(s->R);
    free(s->cols);
    free(s->u);
    free(s->z);
    free(s->h);
    free(s->r);
    free(s->g);
    free(s->V);
    free(s->H);
    free(s->Hp);
    free(s->vnorm);
    free(s->cand);
    free(s->passive);
    free(s->banned);
    free(s->fresh);
}

static bn_status ldp_init(ldp *s, const double *Z, int64_t n, int64_t d)
{
    memset(s, 0, sizeof *s);
    s->n = n;
    s->d = d;
    s->m = d + 1;
    s->Z = Z;
    s->kmax = n < s->m ? n : s->m;
    s->Q = alloc_doubles(s->kmax, s->m);
    s->R = alloc_doubles(s->kmax, s->kmax);
    s->cols = malloc((size_t)s->kmax * sizeof(int64_t));
    s->u = alloc_doubles(n, 1);
    s->z = alloc_doubles(s->kmax, 1);
    s->h = alloc_doubles(s->kmax, 1);
    s->r = alloc_doubles(s->m, 1);
    s->g = alloc_doubles(n, 1);
    s->V = alloc_doubles(SVM_BLOCK_MAX, s->m);
    s->H = alloc_doubles(s->kmax, SVM_BLOCK_MAX);
    s->Hp = alloc_doubles(s->kmax, SVM_BLOCK_MAX);
    s->vnorm = alloc_doubles(SVM_BLOCK_MAX, 1);
    s->cand = malloc((size_t)n * sizeof(int64_t));
    s->passive = malloc((size_t)n);
    s->banned = malloc((size_t)n);
    s->fresh = calloc((size_t)n, 1);
    if (!s->Q || !s->R || !s->cols || !s->u || !s->z || !s->h || !s->r || !s->g || !s->V ||
        !s->H || !s->Hp || !s->vnorm || !s->cand || !s->passive || !s->banned || !s->fresh) {
        ldp_free(s);
        return bn_fail(BN_ERR_NOMEM, "SVM: cannot allocate the solver for %lld samples × %lld features",
                       (long long)n, (long long)d);
    }
    return BN_OK;
}

static void ldp_reset(ldp *s, double c)
{
    s->c = c;
    s->k = 0;
    memset(s->u, 0, (size_t)s->n * sizeof(double));
    memset(s->passive, 0, (size_t)s->n);
    memset(s->banned, 0, (size_t)s->n);
}

/* Appends columns js[0..B) of E to the QR, in order: each is projected off
 * the existing Q as a block (two passes of classical Gram–Schmidt with
 * matrix products, which keeps Q orthonormal to rounding), then off the ones
 * of the block accepted before it.  A column left with less than
 * SVM_DEP_TOL of its norm lies numerically in the span of the passive set:
 * it is banned instead.  Returns how many entered (marked fresh). */
static int64_t ldp_add_block(ldp *s, const int64_t *js, int64_t B)
{
    int64_t k0 = s->k, m = s->m, d = s->d;
    for (int64_t b = 0; b < B; b++) {
        double *v = s->V + b * m;
        memcpy(v, s->Z + js[b] * d, (size_t)d * sizeof(double));
        v[d] = s->c;
        s->vnorm[b] = norm2(v, m);
    }
    if (k0 > 0) {
        for (int pass = 0; pass < 2; pass++) {
            double *hp = pass ? s->Hp : s->H;
            bn_la_gemm(0, 1, k0, B, m, 1.0, s->Q, m, s->V, m, 0.0, hp, B);
            bn_la_gemm(1, 0, B, m, k0, -1.0, hp, B, s->Q, m, 1.0, s->V, m);
        }
        for (int64_t i = 0; i < k0 * B; i++) s->H[i] += s->Hp[i];
    }
    int64_t added = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t k = s->k, j = js[b], in_block = k - k0;
        if (k == s->kmax) {
            s->banned[j] = 1;
            continue;
        }
        double *v = s->V + b * m;
        for (int64_t i = 0; i < in_block; i++) s->h[i] = 0;
        for (int pass = 0; pass < 2 && in_block > 0; pass++) {
            double *hp = s->z; /* free until the next solve */
            bn_la_gemv(0, in_block, m, 1.0, s->Q + k0 * m, v, 0.0, hp);
            bn_la_gemv(1, in_block, m, -1.0, s->Q + k0 * m, hp, 1.0, v);
            for (int64_t i = 0; i < in_block; i++) s->h[i] += hp[i];
        }
        double nu = norm2(v, m);
        if (!(nu > SVM_DEP_TOL * s->vnorm[b])) {
            s->banned[j] = 1;
            continue;
        }
        for (int64_t t = 0; t < m; t++) s->Q[k * m + t] = v[t] / nu;
        for (int64_t i = 0; i < k0; i++) RIJ(s, i, k) = s->H[i * B + b];
        for (int64_t i = 0; i < in_block; i++) RIJ(s, k0 + i, k) = s->h[i];
        RIJ(s, k, k) = nu;
        s->cols[k] = j;
        s->passive[j] = 1;
        s->fresh[j] = 1;
        s->k = k + 1;
        added++;
    }
    return added;
}

/* Removes QR column p and restores the triangle with Givens rotations. */
static void ldp_remove(ldp *s, int64_t p)
{
    int64_t k = s->k, m = s->m;
    s->passive[s->cols[p]] = 0;
    s->fresh[s->cols[p]] = 0;
    s->u[s->cols[p]] = 0;
    for (int64_t j = p; j < k - 1; j++) {
        s->cols[j] = s->cols[j + 1];
        for (int64_t i = 0; i <= j + 1; i++) RIJ(s, i, j) = RIJ(s, i, j + 1);
    }
    for (int64_t i = p; i < k - 1; i++) {
        double a = RIJ(s, i, i), b = RIJ(s, i + 1, i);
        double rr = hypot(a, b);
        double cs = a / rr, sn = b / rr;
        for (int64_t j = i; j < k - 1; j++) {
            double x = RIJ(s, i, j), y = RIJ(s, i + 1, j);
            RIJ(s, i, j) = cs * x + sn * y;
            RIJ(s, i + 1, j) = -sn * x + cs * y;
        }
        bn_la_rot(m, s->Q + i * m, s->Q + (i + 1) * m, cs, sn);
    }
    s->k = k - 1;
}

/* out = R⁻¹ rhs (back substitution on the passive triangle). */
static void ldp_back_substitute(const ldp *s, const double *rhs, double *out)
{
    for (int64_t i = s->k - 1; i >= 0; i--) {
        double t = rhs[i];
        for (int64_t j = i + 1; j < s->k; j++) t -= RIJ(s, i, j) * out[j];
        out[i] = t / RIJ(s, i, i);
    }
}

/* z = argmin ‖E_P z - f‖ = R⁻¹ Qᵀ f, and Qᵀ f is the last entry of each column. */
static void ldp_solve(ldp *s)
{
    for (int64_t i = 0; i < s->k; i++) s->h[i] = s->Q[i * s->m + s->d];
    ldp_back_substitute(s, s->h, s->z);
}

/* r = f - E u and g = Eᵀ r; returns ‖r‖. */
static double ldp_residual(ldp *s)
{
    int64_t d = s->d;
    double sum_u = 0;
    for (int64_t p = 0; p < s->k; p++) sum_u += s->u[s->cols[p]];
    bn_la_gemv(1, s->n, d, -1.0, s->Z, s->u, 0.0, s->r);
    s->r[d] = 1.0 - s->c * sum_u;
    bn_la_gemv(0, s->n, d, 1.0, s->Z, s->r, 0.0, s->g);
    for (int64_t i = 0; i < s->n; i++) s->g[i] += s->c * s->r[d];
    return norm2(s->r, s->m);
}

/* Iterative refinement of the final u_P: many rank-one updates and Givens
 * removals leave the QR slightly off, and the margins of passive samples are
 * only as exact as the least-squares solve.  One correction from the true
 * residual, u_P += R⁻¹ Qᵀ (f - E u), restores that (twice for good measure);
 * it is skipped if it would push a value to zero. */
static void ldp_refine(ldp *s)
{
    for (int it = 0; it < 2 && s->k > 0; it++) {
        ldp_residual(s);
        bn_la_gemv(0, s->k, s->m, 1.0, s->Q, s->r, 0.0, s->h);
        ldp_back_substitute(s, s->h, s->z);
        for (int64_t p = 0; p < s->k; p++)
            if (!(s->u[s->cols[p]] + s->z[p] > 0)) return;
        for (int64_t p = 0; p < s->k; p++) s->u[s->cols[p]] += s->z[p];
    }
}

/* Lawson–Hanson NNLS, entering up to B columns per step: the B largest
 * gradients, B = 1 + k/8 capped at SVM_BLOCK_MAX.  Each step costs a pass
 * over Z for the gradient, so when every sample ends up a support vector
 * this takes ~n/64 + 50 steps instead of n.  With B = 1 it is exactly their
 * algorithm; with B > 1 it is the same monotone active-set method entering a
 * face of higher dimension.  A fresh column that the first solve gives a
 * nonpositive value is banned (for B = 1 that can only be rounding), and so
 * is a whole block that made no progress; bans are lifted after the next
 * step that did.  Returns 1 when it converged, 0 when it ran out of steps
 * (3n + 100, their bound with room; never seen in practice). */
static int ldp_run(ldp *s, double c)
{
    ldp_reset(s, c);
    int64_t max_iter = 3 * s->n + 100;
    double max_col = 0;
    for (int64_t i = 0; i < s->n; i++) {
        double e = hypot(norm2(s->Z + i * s->d, s->d), c);
        if (e > max_col) max_col = e;
    }
    for (int64_t iter = 0; iter < max_iter; iter++) {
        double rho = ldp_residual(s);
        /* At the optimum g_j = c·r_{d+1}·(1 - margin_j): stop once no margin
         * is short by more than 1e-13, or g is at the rounding level of a
         * length-m dot product (~sqrt(m)·eps·‖e_j‖‖r‖, with room). */
        double tol = fmax(1e-13 * c * s->r[s->d],
                          4 * sqrt((double)s->m) * DBL_EPSILON * rho * max_col);
        int64_t nc = 0;
        for (int64_t i = 0; i < s->n; i++)
            if (!s->passive[i] && !s->banned[i] && s->g[i] > tol) s->cand[nc++] = i;
        if (nc == 0) {
            ldp_refine(s);
            return 1;
        }
        int64_t B = 1 + s->k / 8;
        if (B > SVM_BLOCK_MAX) B = SVM_BLOCK_MAX;
        if (B > nc) B = nc;
        for (int64_t b = 0; b < B; b++) { /* the B largest g to the front */
            int64_t best = b;
            for (int64_t t = b + 1; t < nc; t++)
                if (s->g[s->cand[t]] > s->g[s->cand[best]]) best = t;
            int64_t tmp = s->cand[b];
            s->cand[b] = s->cand[best];
            s->cand[best] = tmp;
        }
        if (ldp_add_block(s, s->cand, B) == 0) continue;
        for (int first = 1;; first = 0) {
            ldp_solve(s);
            int64_t worst = -1;
            double alpha = 1;
            for (int64_t p = 0; p < s->k; p++) {
                if (s->z[p] > 0) continue;
                double up = s->u[s->cols[p]];
                double a = up > 0 ? up / (up - s->z[p]) : 0; /* a fresh column blocks at once */
                if (worst < 0 || a < alpha) {
                    alpha = a;
                    worst = p;
                }
            }
            if (worst < 0) {
                int progress = 0;
                for (int64_t p = 0; p < s->k; p++) {
                    s->u[s->cols[p]] = s->z[p];
                    progress |= s->fresh[s->cols[p]];
                    s->fresh[s->cols[p]] = 0;
                }
                /* A fresh column that stayed makes the objective drop, so
                 * everything may be tried again; if none stayed, the step
                 * went nowhere and the block must not be retried as is. */
                if (progress) memset(s->banned, 0, (size_t)s->n);
                else
                    for (int64_t b = 0; b < B; b++) s->banned[s->cand[b]] = 1;
                break;
            }
            for (int64_t p = 0; p < s->k; p++) {
                double *up = &s->u[s->cols[p]];
                *up += alpha * (s->z[p] - *up);
            }
            s->u[s->cols[worst]] = 0;
            /* Leave the set: what reached zero heading down.  A fresh column
             * at zero heading up (z > 0) stays: the next step moves it. */
            for (int64_t p = s->k - 1; p >= 0; p--) {
                int64_t j = s->cols[p];
                if (s->u[j] <= 0 && s->z[p] <= 0) {
                    if (first && s->fresh[j]) s->banned[j] = 1;
                    ldp_remove(s, p);
                }
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ SVM */

typedef struct {
    double violation, min_margin;
    int64_t n_support;
} kkt_report;

/* KKT measures of (w, λ) for min ‖w‖² s.t. Z w >= 1 (see the top comment). */
static bn_status svm_kkt(const double *Z, int64_t n, int64_t d, const double *w,
                         const double *lambda, kkt_report *rep)
{
    double *margin = alloc_doubles(n, 1);
    double *resid = alloc_doubles(d, 1);
    if (!margin || !resid) {
        free(margin);
        free(resid);
        return bn_fail(BN_ERR_NOMEM, "SVM: cannot allocate the KKT check");
    }
    bn_la_gemv(0, n, d, 1.0, Z, w, 0.0, margin);
    memcpy(resid, w, (size_t)d * sizeof(double));
    bn_la_gemv(1, n, d, -1.0, Z, lambda, 1.0, resid);
    double lmax = 0, lmin = 0, cs = 0, mmin = INFINITY;
    int64_t support = 0;
    for (int64_t i = 0; i < n; i++) {
        lmax = fmax(lmax, lambda[i]);
        lmin = fmin(lmin, lambda[i]);
        mmin = fmin(mmin, margin[i]);
        if (fabs(margin[i] - 1) <= SVM_SUPPORT_TOL) support++;
    }
    for (int64_t i = 0; i < n; i++) cs = fmax(cs, fabs(lambda[i] * (margin[i] - 1)));
    double wn = norm2(w, d);
    double v = fmax(0, 1 - mmin);
    if (lmax > 0) v = fmax(v, fmax(-lmin, cs) / lmax);
    else v = INFINITY;
    v = fmax(v, wn > 0 ? norm2(resid, d) / wn : INFINITY);
    rep->violation = v;
    rep->min_margin = mmin;
    rep->n_support = support;
    free(margin);
    free(resid);
    return BN_OK;
}

/* Least-norm w with Z_A w = 1 and λ_A with Z_Aᵀ λ_A = w.  A starts as the
 * NNLS's passive set plus every sample whose margin under w (the NNLS
 * solution) is within SVM_POLISH_ACTIVE of 1: when several samples sit
 * exactly on the margin but only some are passive (degenerate data such as
 * active-margin, whose dual solutions form a line), the least-norm λ over
 * all of them is the balanced one instead of an arbitrary vertex.  Then, for
 * at most SVM_POLISH_ROUNDS rounds, a clearly negative λ leaves A or the
 * most violated margin enters.  w is overwritten; `in_set` is work (n). */
static bn_status svm_polish(const double *Z, int64_t n, int64_t d, const double *u,
                            unsigned char *in_set, double *w, double *lambda)
{
    double *za = alloc_doubles(n, d), *zat = alloc_doubles(d, n);
    double *ones = alloc_doubles(n, 1), *la = alloc_doubles(n, 1), *margin = alloc_doubles(n, 1);
    int64_t *idx = malloc((size_t)n * sizeof(int64_t));
    bn_status st = BN_OK;
    if (!za || !zat || !ones || !la || !margin || !idx) {
        st = bn_fail(BN_ERR_NOMEM, "SVM: cannot allocate the polishing step");
        goto done;
    }
    bn_la_gemv(0, n, d, 1.0, Z, w, 0.0, margin);
    for (int64_t i = 0; i < n; i++) in_set[i] = u[i] > 0 || fabs(margin[i] - 1) <= SVM_POLISH_ACTIVE;
    for (int round = 0; round < SVM_POLISH_ROUNDS; round++) {
        int64_t a = 0;
        for (int64_t i = 0; i < n; i++)
            if (in_set[i]) idx[a++] = i;
        if (a == 0) {
            st = bn_fail(BN_ERR_BACKEND, "SVM: polishing emptied the support set");
            goto done;
        }
        for (int64_t p = 0; p < a; p++) {
            memcpy(za + p * d, Z + idx[p] * d, (size_t)d * sizeof(double));
            ones[p] = 1;
            for (int64_t t = 0; t < d; t++) zat[t * a + p] = Z[idx[p] * d + t];
        }
        st = bn_la_lstsq(za, a, d, ones, 1, -1.0, w, NULL);
        if (st == BN_OK) st = bn_la_lstsq(zat, d, a, w, 1, -1.0, la, NULL);
        if (st != BN_OK) goto done;
        memset(lambda, 0, (size_t)n * sizeof(double));
        double lmax = 0;
        int64_t low_p = 0;
        for (int64_t p = 0; p < a; p++) {
            lambda[idx[p]] = la[p];
            lmax = fmax(lmax, la[p]);
            if (la[p] < la[low_p]) low_p = p;
        }
        bn_la_gemv(0, n, d, 1.0, Z, w, 0.0, margin);
        int64_t short_i = -1;
        for (int64_t i = 0; i < n; i++)
            if (!in_set[i] && margin[i] < 1 - SVM_POLISH_TOL && (short_i < 0 || margin[i] < margin[short_i]))
                short_i = i;
        if (la[low_p] < -SVM_POLISH_TOL * lmax) in_set[idx[low_p]] = 0;
        else if (short_i >= 0) in_set[short_i] = 1;
        else break;
    }
    /* Still off after the last round: the caller keeps whichever of this and
     * the NNLS solution has the smaller KKT violation. */
done:
    free(za);
    free(zat);
    free(ones);
    free(la);
    free(margin);
    free(idx);
    return st;
}

/* A short certificate for the refusal message: the samples carrying the
 * largest weight in the NNLS's u (a nonnegative combination of y_i x̃_i that
 * nearly cancels). */
static void describe_certificate(const ldp *s, char *buf, size_t len)
{
    size_t at = (size_t)snprintf(buf, len, "a nonnegative combination of y_i·x̃_i over %lld samples "
                                 "cancels (e.g. samples", (long long)s->k);
    int64_t shown = 0;
    for (int64_t p = 0; p < s->k && shown < 4 && at < len; p++, shown++)
        at += (size_t)snprintf(buf + at, len - at, "%s %lld", shown ? "," : "", (long long)s->cols[p]);
    if (at < len) snprintf(buf + at, len - at, "%s)", s->k > shown ? ", ..." : "");
}

static bn_status reference_svm(const double *xc, const double *y, int64_t n, int64_t d,
                               double *w, bn_ref_info *info)
{
    int64_t n_pos = 0;
    for (int64_t i = 0; i < n; i++) n_pos += y[i] > 0;
    if (n_pos == 0 || n_pos == n)
        return bn_fail(BN_ERR_NOT_SEPARABLE,
                       "data is not linearly separable through the origin after centering: every "
                       "label is %+g, and centered samples sum to zero, so no w gives all of them "
                       "a positive margin", y[0]);
    double *Z = alloc_doubles(n, d), *Zs = alloc_doubles(n, d);
    double *lambda = alloc_doubles(n, 1), *w_nnls = alloc_doubles(d, 1), *l_nnls = alloc_doubles(n, 1);
    unsigned char *in_set = malloc((size_t)n);
    ldp s;
    int have_ldp = 0;
    bn_status st = BN_OK;
    if (!Z || !Zs || !lambda || !w_nnls || !l_nnls || !in_set) {
        st = bn_fail(BN_ERR_NOMEM, "SVM: cannot allocate work arrays for %lld×%lld", (long long)n, (long long)d);
        goto done;
    }
    double radius = 0;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t t = 0; t < d; t++) Z[i * d + t] = y[i] * xc[i * d + t];
        radius = fmax(radius, norm2(Z + i * d, d));
    }
    if (!(radius > 0)) {
        st = bn_fail(BN_ERR_NOT_SEPARABLE, "data is not linearly separable through the origin after "
                     "centering: all samples are identical, so every centered sample is zero");
        goto done;
    }
    for (int64_t i = 0; i < n * d; i++) Zs[i] = Z[i] / radius;
    st = ldp_init(&s, Zs, n, d);
    if (st != BN_OK) goto done;
    have_ldp = 1;

    double c = 1, rho = 0;
    int converged = 0;
    for (;;) {
        converged = ldp_run(&s, c);
        rho = ldp_residual(&s);
        if (rho >= SVM_RHO_ACCEPT) break;
        if (c <= SVM_C_MIN) {
            char cert[160];
            describe_certificate(&s, cert, sizeof cert);
            st = bn_fail(BN_ERR_NOT_SEPARABLE,
                         "data is not linearly separable through the origin after centering: no w "
                         "gives every sample a margin above %.0e × max ‖x̃_i‖ (%s)",
                         SVM_RHO_ACCEPT * SVM_C_MIN, cert);
            goto done;
        }
        c = fmax(SVM_C_MIN, c * rho);
    }
    /* Back to unscaled units: w_s = -r_{1:d}/(c r_{d+1}), w = w_s/R,
     * λ = u/(c r_{d+1} R²).  r_{d+1} = 1 - c·Σu loses digits to cancellation
     * (it is ~γ² for c = 1); it only scales w and λ together, so the scale is
     * taken instead from the passive margins, which are exactly 1 at the
     * optimum. */
    double denom = c * s.r[d], passive_margin = 0;
    for (int64_t t = 0; t < d; t++) w_nnls[t] = -s.r[t] / (denom * radius);
    for (int64_t p = 0; p < s.k; p++) passive_margin += dot(Z + s.cols[p] * d, w_nnls, d);
    double fix = s.k > 0 && passive_margin > 0 ? (double)s.k / passive_margin : 1.0;
    for (int64_t t = 0; t < d; t++) w_nnls[t] *= fix;
    for (int64_t i = 0; i < n; i++) l_nnls[i] = fix * s.u[i] / (denom * radius * radius);
    kkt_report rep_nnls, rep;
    st = svm_kkt(Z, n, d, w_nnls, l_nnls, &rep_nnls);
    if (st != BN_OK) goto done;

    memcpy(w, w_nnls, (size_t)d * sizeof(double));
    int polish = rep_nnls.violation > SVM_POLISH_SKIP ||
                 (double)s.k * (double)s.k * (double)d <= SVM_POLISH_CHEAP;
    st = polish ? svm_polish(Z, n, d, s.u, in_set, w, lambda) : BN_OK;
    if (polish && st == BN_OK) st = svm_kkt(Z, n, d, w, lambda, &rep);
    if (!polish || st != BN_OK || !(rep.violation <= rep_nnls.violation)) {
        bn_clear_error();
        st = BN_OK;
        memcpy(w, w_nnls, (size_t)d * sizeof(double));
        rep = rep_nnls;
    }
    if (!(rep.violation <= SVM_KKT_FAIL)) {
        st = bn_fail(BN_ERR_BACKEND, "SVM: the solution reaches only a KKT violation of %.3g (limit "
                     "%.0e)%s; the data may be too ill-conditioned", rep.violation, SVM_KKT_FAIL,
                     converged ? "" : " and the active-set method ran out of iterations");
        goto done;
    }
    info->kind = 1;
    info->residual = 1 - rep.min_margin;
    info->kkt_violation = rep.violation;
    info->n_support = rep.n_support;
    info->all_active = rep.n_support == n;
    st = bn_la_rank(xc, n, d, -1.0, &info->rank);
done:
    if (have_ldp) ldp_free(&s);
    free(Z);
    free(Zs);
    free(lambda);
    free(w_nnls);
    free(l_nnls);
    free(in_set);
    return st;
}

/* ---------------------------------------------------------- public entry */

bn_status bn_reference_direction(const bn_dataset *ds, bn_loss loss, double *w_out,
                                 bn_ref_info *info)
{
    if (!ds || !w_out) return bn_fail(BN_ERR_ARG, "bn_reference_direction: data set or w_out is NULL");
    if (loss != BN_LOSS_SQUARE && loss != BN_LOSS_LOGISTIC)
        return bn_fail(BN_ERR_ARG, "bn_reference_direction: unknown loss %d", (int)loss);
    int64_t n = bn_dataset_n(ds), d = bn_dataset_d(ds);
    memset(w_out, 0, (size_t)d * sizeof(double));
    bn_ref_info local;
    if (!info) info = &local;
    memset(info, 0, sizeof *info);
    if (loss == BN_LOSS_LOGISTIC) BN_TRY(bn_dataset_check_labels(ds));
    double *xc = NULL;
    BN_TRY(bn_dataset_centered(ds, &xc));
    double *w = alloc_doubles(d, 1);
    bn_status st;
    if (!w) st = bn_fail(BN_ERR_NOMEM, "cannot allocate the reference direction");
    else if (loss == BN_LOSS_SQUARE) st = reference_ls(xc, bn_dataset_y(ds), n, d, w, info);
    else st = reference_svm(xc, bn_dataset_y(ds), n, d, w, info);
    /* Only a complete answer reaches the caller: w_out stays zero on failure. */
    if (st == BN_OK) memcpy(w_out, w, (size_t)d * sizeof(double));
    else memset(info, 0, sizeof *info);
    free(w);
    free(xc);
    return st;
}
