/* Reference directions (least squares, hard-margin SVM) and the linear
 * algebra under them.  Every expected number comes from an independent
 * route: closed forms, LAPACK called directly here on a different
 * formulation (normal equations, Gram matrices), or the KKT conditions,
 * which certify optimality of a convex program on their own. */
#include <criterion/criterion.h>

#include "test_support.h"
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bnspike.h"
#include "linalg.h"
#include "rng.h"

/* ------------------------------------------------------------- helpers */

static double *normals(uint64_t key, int64_t count)
{
    double *v = malloc((size_t)count * sizeof(double));
    cr_assert(v);
    bn_rng_normal(key, 99, 0, count, v);
    return v;
}

static double *centered(const double *X, int64_t n, int64_t d)
{
    double *xc = ts_center(X, n, d);
    cr_assert(xc);
    return xc;
}

static double rel_err(const double *a, const double *b, int64_t len)
{
    double diff = 0;
    for (int64_t i = 0; i < len; i++) diff += (a[i] - b[i]) * (a[i] - b[i]);
    double ref = ts_norm(b, len);
    return sqrt(diff) / (ref > 0 ? ref : 1);
}

static bn_dataset *make_ds(const double *X, const double *y, int64_t n, int64_t d)
{
    bn_dataset *ds = NULL;
    cr_assert_eq(bn_dataset_create(X, y, n, d, "test", &ds), BN_OK, "%s", bn_last_error());
    return ds;
}

static bn_dataset *generate(const char *spec, bn_loss loss)
{
    bn_dataset *ds = NULL;
    cr_assert_eq(bn_dataset_generate(spec, loss, &ds), BN_OK, "%s: %s", spec, bn_last_error());
    return ds;
}

/* Solves the SPD system S x = b (k×k row-major, S overwritten) with dposv. */
static void spd_solve(double *S, int64_t k, double *b)
{
    lapack_int info = LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', (lapack_int)k, 1, S, (lapack_int)k,
                                    b, 1);
    cr_assert_eq(info, 0, "dposv failed: %d", (int)info);
}

/* Independent least squares on centered data: normal equations
 * (XcᵀXc) w = Xcᵀ y when Xc has full column rank, else the row-space form
 * w = Xcᵀ α with (XcXcᵀ + 11ᵀ) α = y_c: range(Xc) is exactly 1⊥ when
 * rank(Xc) = n-1, so adding 11ᵀ makes the Gram matrix invertible without
 * changing α on 1⊥. */
static void ls_by_gram(const double *xc, const double *y, int64_t n, int64_t d, double *w)
{
    if (d < n - 1) {
        double *S = calloc((size_t)(d * d), sizeof(double)), *b = calloc((size_t)d, sizeof(double));
        for (int64_t i = 0; i < n; i++)
            for (int64_t a = 0; a < d; a++) {
                b[a] += xc[i * d + a] * y[i];
                for (int64_t c = 0; c < d; c++) S[a * d + c] += xc[i * d + a] * xc[i * d + c];
            }
        spd_solve(S, d, b);
        memcpy(w, b, (size_t)d * sizeof(double));
        free(S);
        free(b);
        return;
    }
    double *S = calloc((size_t)(n * n), sizeof(double)), *alpha = calloc((size_t)n, sizeof(double));
    double ymean = 0;
    for (int64_t i = 0; i < n; i++) ymean += y[i] / (double)n;
    for (int64_t i = 0; i < n; i++) {
        alpha[i] = y[i] - ymean;
        for (int64_t k = 0; k < n; k++) {
            double s = 1.0;
            for (int64_t a = 0; a < d; a++) s += xc[i * d + a] * xc[k * d + a];
            S[i * n + k] = s;
        }
    }
    spd_solve(S, n, alpha);
    for (int64_t a = 0; a < d; a++) {
        w[a] = 0;
        for (int64_t i = 0; i < n; i++) w[a] += xc[i * d + a] * alpha[i];
    }
    free(S);
    free(alpha);
}

/* KKT certificate of the hard-margin SVM (no bias) on the centered data,
 * built here from w alone: margins, the active set, multipliers from
 * LAPACK's own least squares on Z_Aᵀ λ = w, and the duality gap. */
static void check_svm_kkt(const bn_dataset *ds, const double *w, const bn_ref_info *info,
                          const char *what)
{
    int64_t n = bn_dataset_n(ds), d = bn_dataset_d(ds);
    const double *y = bn_dataset_y(ds);
    double *xc = centered(bn_dataset_X(ds), n, d);
    double *margin = malloc((size_t)n * sizeof(double));
    double min_margin = INFINITY;
    int64_t n_active = 0, n_close = 0;
    for (int64_t i = 0; i < n; i++) {
        margin[i] = 0;
        for (int64_t t = 0; t < d; t++) margin[i] += y[i] * xc[i * d + t] * w[t];
        min_margin = fmin(min_margin, margin[i]);
        n_active += fabs(margin[i] - 1) <= 1e-7;
    }
    /* Primal feasibility, tolerance 1e-9 (the library promises that). */
    cr_assert_geq(min_margin, 1 - 1e-9, "%s: min margin %.17g", what, min_margin);
    cr_assert_gt(n_active, 0, "%s: no active constraint", what);

    /* Multipliers on the active set, column-major Z_Aᵀ (d×a). */
    int64_t a = n_active, rows = d > a ? d : a;
    double *zt = malloc((size_t)(d * a) * sizeof(double));
    double *rhs = calloc((size_t)rows, sizeof(double));
    double *sv = malloc((size_t)(d < a ? d : a) * sizeof(double));
    int64_t *idx = malloc((size_t)a * sizeof(int64_t));
    for (int64_t i = 0, p = 0; i < n; i++)
        if (fabs(margin[i] - 1) <= 1e-7) {
            idx[p] = i;
            for (int64_t t = 0; t < d; t++) zt[p * d + t] = y[i] * xc[i * d + t];
            p++;
        }
    memcpy(rhs, w, (size_t)d * sizeof(double));
    lapack_int rank;
    cr_assert_eq(LAPACKE_dgelsd(LAPACK_COL_MAJOR, (lapack_int)d, (lapack_int)a, 1, zt,
                                (lapack_int)d, rhs, (lapack_int)rows, sv, -1.0, &rank), 0);
    /* dgelsd overwrote zt: rebuild the active rows to test stationarity. */
    double lmax = 0, lmin = INFINITY, lsum = 0;
    for (int64_t p = 0; p < a; p++) {
        lmax = fmax(lmax, rhs[p]);
        lmin = fmin(lmin, rhs[p]);
        lsum += rhs[p];
    }
    double *resid = malloc((size_t)d * sizeof(double));
    for (int64_t t = 0; t < d; t++) resid[t] = -w[t];
    for (int64_t p = 0; p < a; p++)
        for (int64_t t = 0; t < d; t++) resid[t] += rhs[p] * y[idx[p]] * xc[idx[p] * d + t];
    double wn = ts_norm(w, d);
    cr_assert_gt(lmax, 0, "%s: all multipliers are zero", what);
    /* Dual feasibility, stationarity, complementary slackness and the
     * duality gap (‖w‖² = Σλ at the optimum), each to 1e-9 relative. */
    cr_assert_geq(lmin, -1e-9 * lmax, "%s: multiplier %.3g < 0 (max %.3g)", what, lmin, lmax);
    cr_assert_leq(ts_norm(resid, d), 1e-9 * wn, "%s: stationarity residual %.3g, ‖w‖ %.3g", what,
                  ts_norm(resid, d), wn);
    for (int64_t p = 0; p < a; p++)
        if (rhs[p] > 1e-6 * lmax) {
            double gap = fabs(rhs[p] * (margin[idx[p]] - 1));
            cr_assert_leq(gap, 1e-9 * lmax, "%s: complementary slackness %.3g at %lld", what,
                          gap, (long long)idx[p]);
            n_close += fabs(margin[idx[p]] - 1) <= 1e-9;
        }
    cr_assert_gt(n_close, 0);
    cr_assert_leq(fabs(wn * wn - lsum), 1e-9 * wn * wn, "%s: ‖w‖² = %.17g but Σλ = %.17g",
                  what, wn * wn, lsum);

    /* What the library reports must match what is measured here. */
    cr_assert_eq(info->kind, 1);
    cr_assert_leq(fabs(info->residual - (1 - min_margin)), 1e-12, "%s: residual %.3g vs %.3g",
                  what, info->residual, 1 - min_margin);
    cr_assert_eq(info->n_support, n_active, "%s: n_support %lld, measured %lld", what,
                 (long long)info->n_support, (long long)n_active);
    cr_assert_eq(info->all_active, n_active == n);
    cr_assert_leq(info->kkt_violation, 1e-9, "%s: kkt_violation %.3g", what, info->kkt_violation);
    free(xc);
    free(margin);
    free(zt);
    free(rhs);
    free(sv);
    free(idx);
    free(resid);
}

static void svm_case(const char *spec)
{
    bn_dataset *ds = generate(spec, BN_LOSS_LOGISTIC);
    int64_t d = bn_dataset_d(ds);
    double *w = malloc((size_t)d * sizeof(double));
    bn_ref_info info;
    cr_assert_eq(bn_reference_direction(ds, BN_LOSS_LOGISTIC, w, &info), BN_OK, "%s: %s", spec,
                 bn_last_error());
    check_svm_kkt(ds, w, &info, spec);
    free(w);
    bn_dataset_free(ds);
}

/* ----------------------------------------------------------- linalg */

Test(linalg, lstsq_overdetermined_matches_normal_equations)
{
    int64_t m = 40, n = 7;
    double *A = normals(1, m * n), *b = normals(2, m), x[7], ref[7];
    cr_assert_eq(bn_la_lstsq(A, m, n, b, 1, -1, x, NULL), BN_OK);
    double S[49] = {0};
    for (int64_t i = 0; i < m; i++)
        for (int64_t a = 0; a < n; a++) {
            for (int64_t c = 0; c < n; c++) S[a * n + c] += A[i * n + a] * A[i * n + c];
        }
    for (int64_t a = 0; a < n; a++) {
        ref[a] = 0;
        for (int64_t i = 0; i < m; i++) ref[a] += A[i * n + a] * b[i];
    }
    spd_solve(S, n, ref);
    cr_assert_leq(rel_err(x, ref, n), 1e-12, "relative error %.3g", rel_err(x, ref, n));
    free(A);
    free(b);
}

Test(linalg, lstsq_underdetermined_is_minimum_norm_and_multi_rhs)
{
    /* A 5×9: the min-norm solution of A x = b is Aᵀ (A Aᵀ)⁻¹ b. */
    int64_t m = 5, n = 9, k = 3;
    double *A = normals(3, m * n), *B = normals(4, m * k);
    double X[27], ref[9], S[25], col[5];
    int64_t rank = -1;
    cr_assert_eq(bn_la_lstsq(A, m, n, B, k, -1, X, &rank), BN_OK);
    cr_assert_eq(rank, 5);
    for (int64_t c = 0; c < k; c++) {
        for (int64_t i = 0; i < m; i++) {
            col[i] = B[i * k + c];
            for (int64_t j = 0; j < m; j++) {
                S[i * m + j] = 0;
                for (int64_t t = 0; t < n; t++) S[i * m + j] += A[i * n + t] * A[j * n + t];
            }
        }
        spd_solve(S, m, col);
        double got[9];
        for (int64_t t = 0; t < n; t++) {
            ref[t] = 0;
            for (int64_t i = 0; i < m; i++) ref[t] += A[i * n + t] * col[i];
            got[t] = X[t * k + c];
        }
        cr_assert_leq(rel_err(got, ref, n), 1e-12, "rhs %lld: relative error %.3g", (long long)c,
                      rel_err(got, ref, n));
    }
    free(A);
    free(B);
}

Test(linalg, rank_and_singular_values)
{
    /* A rank-3 product of 8×3 and 3×6 factors, and a diagonal with known values. */
    double *L = normals(5, 24), *R = normals(6, 18), A[48];
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 6; j++) {
            A[i * 6 + j] = 0;
            for (int t = 0; t < 3; t++) A[i * 6 + j] += L[i * 3 + t] * R[t * 6 + j];
        }
    int64_t rank = -1;
    cr_assert_eq(bn_la_rank(A, 8, 6, -1, &rank), BN_OK);
    cr_assert_eq(rank, 3);
    double D[12] = {0}, s[3];
    D[0 * 4 + 1] = 2;   /* row 0 */
    D[1 * 4 + 3] = -5;  /* row 1 */
    D[2 * 4 + 0] = 0.5; /* row 2 */
    cr_assert_eq(bn_la_singular_values(D, 3, 4, s), BN_OK);
    cr_assert_float_eq(s[0], 5, 1e-14);
    cr_assert_float_eq(s[1], 2, 1e-14);
    cr_assert_float_eq(s[2], 0.5, 1e-14);
    free(L);
    free(R);
}

Test(linalg, rowspace_projection_matches_gram_formula)
{
    /* P v = Aᵀ (A Aᵀ)⁻¹ A v for a full-row-rank A (4×7); three vectors at
     * once, written over their own storage. */
    int64_t m = 4, n = 7, count = 3;
    double *A = normals(7, m * n), *V = normals(8, count * n);
    double *P = malloc((size_t)(count * n) * sizeof(double));
    memcpy(P, V, (size_t)(count * n) * sizeof(double));
    bn_la_rowspace *rs = NULL;
    cr_assert_eq(bn_la_rowspace_create(A, m, n, -1, &rs), BN_OK);
    cr_assert_eq(bn_la_rowspace_rank(rs), 4);
    cr_assert_eq(bn_la_rowspace_dim(rs), 7);
    cr_assert_eq(bn_la_rowspace_project(rs, P, count, P), BN_OK);
    for (int64_t c = 0; c < count; c++) {
        double S[16], av[4], ref[7];
        for (int64_t i = 0; i < m; i++) {
            av[i] = 0;
            for (int64_t t = 0; t < n; t++) av[i] += A[i * n + t] * V[c * n + t];
            for (int64_t j = 0; j < m; j++) {
                S[i * m + j] = 0;
                for (int64_t t = 0; t < n; t++) S[i * m + j] += A[i * n + t] * A[j * n + t];
            }
        }
        spd_solve(S, m, av);
        for (int64_t t = 0; t < n; t++) {
            ref[t] = 0;
            for (int64_t i = 0; i < m; i++) ref[t] += A[i * n + t] * av[i];
        }
        cr_assert_leq(rel_err(P + c * n, ref, n), 1e-13, "vector %lld: %.3g", (long long)c,
                      rel_err(P + c * n, ref, n));
    }
    /* Projecting twice changes nothing. */
    double again[21];
    cr_assert_eq(bn_la_rowspace_project(rs, P, count, again), BN_OK);
    cr_assert_leq(rel_err(again, P, count * n), 1e-14);
    bn_la_rowspace_free(rs);
    free(A);
    free(V);
    free(P);
}

Test(linalg, orthonormalize_gives_haar_convention_qr)
{
    int64_t m = 12, n = 5;
    double *A = normals(9, m * n), Q[60];
    cr_assert_eq(bn_la_orthonormalize(A, m, n, Q), BN_OK);
    for (int64_t a = 0; a < n; a++)
        for (int64_t b = 0; b < n; b++) {
            double qq = 0, qa = 0;
            for (int64_t i = 0; i < m; i++) {
                qq += Q[i * n + a] * Q[i * n + b];
                qa += Q[i * n + a] * A[i * n + b]; /* R = QᵀA */
            }
            cr_assert_float_eq(qq, a == b ? 1.0 : 0.0, 1e-14, "QᵀQ[%lld][%lld] = %.3g", (long long)a,
                               (long long)b, qq);
            if (a > b) cr_assert_leq(fabs(qa), 1e-13, "R below the diagonal: %.3g", qa);
            if (a == b) cr_assert_gt(qa, 0, "R[%lld][%lld] = %.3g is not positive", (long long)a, (long long)a, qa);
        }
    /* A dependent column is refused rather than given an arbitrary Q column. */
    for (int64_t i = 0; i < m; i++) A[i * n + 3] = 2 * A[i * n + 1];
    cr_assert_eq(bn_la_orthonormalize(A, m, n, Q), BN_ERR_DATA);
    free(A);
}

Test(linalg, symmetric_eigenvalues_of_the_discrete_laplacian)
{
    /* tridiag(-1, 2, -1) of size 40: eigenvalues 2 - 2 cos(kπ/41), k = 1..40. */
    int64_t n = 40;
    double *A = calloc((size_t)(n * n), sizeof(double)), ev[40], *V = malloc((size_t)(n * n) * sizeof(double));
    for (int64_t i = 0; i < n; i++) {
        A[i * n + i] = 2;
        if (i + 1 < n) A[i * n + i + 1] = A[(i + 1) * n + i] = -1;
    }
    cr_assert_eq(bn_la_sym_eigen(A, n, ev, NULL), BN_OK);
    for (int64_t k = 0; k < n; k++) {
        double exact = 2 - 2 * cos((double)(k + 1) * M_PI / (double)(n + 1));
        cr_assert_float_eq(ev[k], exact, 1e-13, "eigenvalue %lld: %.17g vs %.17g", (long long)k, ev[k], exact);
    }
    /* With vectors: A v_k = λ_k v_k for column k. */
    cr_assert_eq(bn_la_sym_eigen(A, n, ev, V), BN_OK);
    for (int64_t k = 0; k < n; k += 13)
        for (int64_t i = 0; i < n; i++) {
            double av = 0;
            for (int64_t j = 0; j < n; j++) av += A[i * n + j] * V[j * n + k];
            cr_assert_float_eq(av, ev[k] * V[i * n + k], 1e-13);
        }
    free(A);
    free(V);
}

/* ------------------------------------------------------ least squares */

static void ls_case(const char *spec, double tol)
{
    bn_dataset *ds = generate(spec, BN_LOSS_SQUARE);
    int64_t n = bn_dataset_n(ds), d = bn_dataset_d(ds);
    double *xc = centered(bn_dataset_X(ds), n, d);
    double *w = malloc((size_t)d * sizeof(double)), *ref = malloc((size_t)d * sizeof(double));
    bn_ref_info info;
    cr_assert_eq(bn_reference_direction(ds, BN_LOSS_SQUARE, w, &info), BN_OK, "%s", bn_last_error());
    ls_by_gram(xc, bn_dataset_y(ds), n, d, ref);
    cr_assert_leq(rel_err(w, ref, d), tol, "%s: relative error %.3g vs the Gram solve", spec,
                  rel_err(w, ref, d));
    /* info: the residual measured here and the rank of Xc. */
    const double *y = bn_dataset_y(ds);
    double ymean = 0, rr = 0, yy = 0;
    for (int64_t i = 0; i < n; i++) ymean += y[i] / (double)n;
    for (int64_t i = 0; i < n; i++) {
        double r = -(y[i] - ymean);
        for (int64_t t = 0; t < d; t++) r += xc[i * d + t] * w[t];
        rr += r * r;
        yy += (y[i] - ymean) * (y[i] - ymean);
    }
    cr_assert_eq(info.kind, 0);
    cr_assert_float_eq(info.residual, sqrt(rr / yy), 1e-12, "%s: residual %.17g vs %.17g", spec,
                       info.residual, sqrt(rr / yy));
    cr_assert_leq(info.kkt_violation, 1e-12, "%s: kkt %.3g", spec, info.kkt_violation);
    cr_assert_eq(info.rank, (d < n - 1 ? d : n - 1), "%s: rank %lld", spec, (long long)info.rank);
    free(xc);
    free(w);
    free(ref);
    bn_dataset_free(ds);
}

Test(reference_ls, tall_data_matches_normal_equations)
{
    ls_case("gaussian:n=60,d=12,seed=3", 1e-12);
    ls_case("whitened:n=100,d=30,seed=4", 1e-12);
}

Test(reference_ls, wide_data_matches_row_space_formula)
{
    /* d > n: the minimum-norm solution is Xcᵀ α; matching that formula is
     * also the check that w lies in the row space of Xc. */
    ls_case("gaussian:n=20,d=50,seed=5", 1e-12);
    /* Hilbert (the paper's 64×256): cond(Xc) ~ 1e3, so the Gram route
     * itself is only good to ~cond²·eps ~ 1e-10. */
    ls_case("hilbert", 1e-9);
}

Test(reference_ls, duplicated_column_splits_the_weight)
{
    /* Column 2 = column 0: rank d-1, and the minimum-norm solution puts
     * half of the reduced problem's weight on each copy. */
    int64_t n = 30, d = 4;
    double *X = normals(10, n * d), *y = normals(11, n), w[4], wr[3];
    for (int64_t i = 0; i < n; i++) X[i * d + 2] = X[i * d + 0];
    bn_dataset *ds = make_ds(X, y, n, d);
    bn_ref_info info;
    cr_assert_eq(bn_reference_direction(ds, BN_LOSS_SQUARE, w, &info), BN_OK);
    cr_assert_eq(info.rank, 3);
    double *xr = malloc((size_t)(n * 3) * sizeof(double));
    for (int64_t i = 0; i < n; i++) {
        xr[i * 3 + 0] = X[i * d + 0];
        xr[i * 3 + 1] = X[i * d + 1];
        xr[i * 3 + 2] = X[i * d + 3];
    }
    double *xrc = centered(xr, n, 3);
    ls_by_gram(xrc, y, n, 3, wr);
    double expect[4] = {wr[0] / 2, wr[1], wr[0] / 2, wr[2]};
    cr_assert_leq(rel_err(w, expect, d), 1e-12, "relative error %.3g", rel_err(w, expect, d));
    bn_dataset_free(ds);
    free(X);
    free(y);
    free(xr);
    free(xrc);
}

Test(reference_ls, centering_and_scale_behave)
{
    /* Shifting X changes nothing; scaling X by s scales w by 1/s. */
    int64_t n = 25, d = 6;
    double *X = normals(12, n * d), *y = normals(13, n), w0[6], w1[6], w2[6];
    bn_dataset *a = make_ds(X, y, n, d);
    for (int64_t i = 0; i < n * d; i++) X[i] = 1000 * X[i] + 7;
    bn_dataset *b = make_ds(X, y, n, d);
    bn_ref_info info;
    cr_assert_eq(bn_reference_direction(a, BN_LOSS_SQUARE, w0, &info), BN_OK);
    cr_assert_eq(bn_reference_direction(b, BN_LOSS_SQUARE, w1, NULL), BN_OK);
    for (int64_t t = 0; t < d; t++) w2[t] = 1000 * w1[t];
    cr_assert_leq(rel_err(w2, w0, d), 1e-12, "%.3g", rel_err(w2, w0, d));
    bn_dataset_free(a);
    bn_dataset_free(b);
    free(X);
    free(y);
}

/* ---------------------------------------------------------------- SVM */

Test(reference_svm, hand_solved_example)
{
    /* Centered points (then shifted by (10, -3) to exercise centering):
     * z = y·x̃ = (2,0), (2,0), (1,3), (1,3), (5,5), (5,5).  The optimum is
     * w* = (1/2, 1/6): 2w₁ = 1 and w₁ + 3w₂ = 1 active, 5w₁ + 5w₂ = 10/3 not. */
    double X[12] = {2, 0, -2, 0, 1, 3, -1, -3, 5, 5, -5, -5}, y[6] = {1, -1, 1, -1, 1, -1}, w[2];
    for (int i = 0; i < 6; i++) {
        X[2 * i] += 10;
        X[2 * i + 1] -= 3;
    }
    bn_dataset *ds = make_ds(X, y, 6, 2);
    bn_ref_info info;
    cr_assert_eq(bn_reference_direction(ds, BN_LOSS_LOGISTIC, w, &info), BN_OK, "%s", bn_last_error());
    cr_assert_float_eq(w[0], 0.5, 1e-14, "w = (%.17g, %.17g)", w[0], w[1]);
    cr_assert_float_eq(w[1], 1.0 / 6, 1e-14, "w = (%.17g, %.17g)", w[0], w[1]);
    cr_assert_eq(info.n_support, 4);
    cr_assert_eq(info.all_active, 0);
    cr_assert_eq(info.rank, 2);
    check_svm_kkt(ds, w, &info, "hand example");
    bn_dataset_free(ds);
}

Test(reference_svm, kkt_on_gaussian_data)
{
    svm_case("gaussian:n=200,d=20,seed=1");         /* d < n */
    svm_case("gaussian:n=40,d=100,seed=2");         /* d > n */
    svm_case("gaussian:n=300,d=5,margin=0,seed=3"); /* few dimensions, tiny margins */
    svm_case("whitened:n=120,d=30,seed=4");
}

Test(reference_svm, kkt_on_hilbert_data)
{
    svm_case("hilbert");                    /* the paper's 64×256 */
    svm_case("hilbert:n=64,d=16,seed=1");   /* d < n */
    svm_case("hilbert:noise=0,seed=2");     /* numerically rank ~17 */
    svm_case("hilbert:n=200,d=40,noise=0.001,seed=3");
}

Test(reference_svm, gaussian_margin_bounds_the_norm)
{
    /* The generator guarantees |⟨x̃_i, ŵ⟩| >= margin for its ŵ, so ŵ/margin is
     * feasible and the max-margin solution can only be shorter. */
    bn_dataset *ds = generate("gaussian:n=150,d=10,margin=0.25,seed=8", BN_LOSS_LOGISTIC);
    double w[10];
    cr_assert_eq(bn_reference_direction(ds, BN_LOSS_LOGISTIC, w, NULL), BN_OK);
    cr_assert_leq(ts_norm(w, 10), 1 / 0.25 * (1 + 1e-12), "‖w*‖ = %.17g", ts_norm(w, 10));
    bn_dataset_free(ds);
}

Test(reference_svm, active_margin_data_has_every_sample_active)
{
    const char *specs[] = {"active-margin", "active-margin:n=40,d=5,seed=3",
                           "active-margin:n=30,d=200,margin=0.3,noise=2,seed=4"};
    const double margins[] = {1, 1, 0.3};
    for (int c = 0; c < 3; c++) {
        bn_dataset *ds = generate(specs[c], BN_LOSS_LOGISTIC);
        int64_t n = bn_dataset_n(ds), d = bn_dataset_d(ds);
        double *w = malloc((size_t)d * sizeof(double));
        bn_ref_info info;
        cr_assert_eq(bn_reference_direction(ds, BN_LOSS_LOGISTIC, w, &info), BN_OK, "%s", bn_last_error());
        cr_assert(info.all_active, "%s: only %lld of %lld active", specs[c], (long long)info.n_support,
                  (long long)n);
        cr_assert_eq(info.n_support, n);
        double *xc = centered(bn_dataset_X(ds), n, d);
        for (int64_t i = 0; i < n; i++) {
            double m = 0;
            for (int64_t t = 0; t < d; t++) m += bn_dataset_y(ds)[i] * xc[i * d + t] * w[t];
            cr_assert_leq(fabs(m - 1), 1e-9, "%s: margin %lld = %.17g", specs[c], (long long)i, m);
        }
        /* The construction's geometric margin is `margin`, so ‖w*‖ = 1/margin. */
        cr_assert_float_eq(ts_norm(w, d), 1 / margins[c], 1e-9 / margins[c], "%s: ‖w*‖ = %.17g",
                           specs[c], ts_norm(w, d));
        check_svm_kkt(ds, w, &info, specs[c]);
        free(xc);
        free(w);
        bn_dataset_free(ds);
    }
}

static void expect_not_separable(const double *X, const double *y, int64_t n, int64_t d,
                                 const char *what)
{
    bn_dataset *ds = make_ds(X, y, n, d);
    double *w = malloc((size_t)d * sizeof(double));
    for (int64_t t = 0; t < d; t++) w[t] = 42;
    bn_ref_info info = {.kind = 7, .n_support = 9};
    cr_assert_eq(bn_reference_direction(ds, BN_LOSS_LOGISTIC, w, &info), BN_ERR_NOT_SEPARABLE,
                 "%s: accepted (%s)", what, bn_last_error());
    cr_assert(strstr(bn_last_error(), "not linearly separable through the origin after centering"),
              "%s: message '%s'", what, bn_last_error());
    for (int64_t t = 0; t < d; t++) cr_assert_eq(w[t], 0.0, "%s: w_out not cleared", what);
    cr_assert_eq(info.kind, 0);
    cr_assert_eq(info.n_support, 0);
    free(w);
    bn_dataset_free(ds);
}

Test(reference_svm, refuses_inseparable_data)
{
    /* The same point with both labels. */
    double dup_X[8] = {1, 2, 1, 2, 0, 0, 3, 1}, dup_y[4] = {1, -1, 1, -1};
    expect_not_separable(dup_X, dup_y, 4, 2, "duplicate point");
    /* XOR in the plane. */
    double xor_X[8] = {1, 1, -1, -1, 1, -1, -1, 1}, xor_y[4] = {1, 1, -1, -1};
    expect_not_separable(xor_X, xor_y, 4, 2, "xor");
    /* Alternating labels on a line. */
    double line_X[4] = {1, 2, 3, 4}, line_y[4] = {1, -1, 1, -1};
    expect_not_separable(line_X, line_y, 4, 1, "line");
    /* A sample at the centroid has margin 0 for every w. */
    double mid_X[3] = {-1, 1, 0}, mid_y[3] = {1, -1, 1};
    expect_not_separable(mid_X, mid_y, 3, 1, "centroid");
    /* One class only: centered samples sum to zero. */
    double one_X[6] = {1, 0, 0, 1, 2, 2}, one_y[3] = {1, 1, 1};
    expect_not_separable(one_X, one_y, 3, 2, "one class");
    /* Random labels, n = 200 ≫ 2d = 10: inseparable with overwhelming
     * probability (Cover, 1965); checked once, the data is fixed by the seed. */
    double *X = normals(20, 200 * 5), *y = normals(21, 200);
    for (int i = 0; i < 200; i++) y[i] = y[i] > 0 ? 1 : -1;
    expect_not_separable(X, y, 200, 5, "random labels");
    free(X);
    free(y);
}

Test(reference_svm, refuses_labels_other_than_plus_minus_one)
{
    double X[6] = {1, 0, 0, 1, 2, 2}, y[3] = {1, -1, 0.5}, w[2];
    bn_dataset *ds = make_ds(X, y, 3, 2);
    cr_assert_eq(bn_reference_direction(ds, BN_LOSS_LOGISTIC, w, NULL), BN_ERR_DATA);
    cr_assert(strstr(bn_last_error(), "labels -1 or +1"), "message '%s'", bn_last_error());
    bn_dataset_free(ds);
}

Test(reference_svm, scale_and_shift_of_the_data)
{
    /* Scaling X by s scales w* by 1/s; shifting X changes nothing. */
    bn_dataset *a = generate("gaussian:n=80,d=6,seed=9", BN_LOSS_LOGISTIC);
    double *X = malloc(80 * 6 * sizeof(double)), w0[6], w1[6];
    for (int i = 0; i < 480; i++) X[i] = 1e3 * bn_dataset_X(a)[i] - 5;
    bn_dataset *b = make_ds(X, bn_dataset_y(a), 80, 6);
    cr_assert_eq(bn_reference_direction(a, BN_LOSS_LOGISTIC, w0, NULL), BN_OK);
    cr_assert_eq(bn_reference_direction(b, BN_LOSS_LOGISTIC, w1, NULL), BN_OK);
    for (int t = 0; t < 6; t++) w1[t] *= 1e3;
    cr_assert_leq(rel_err(w1, w0, 6), 1e-10, "%.3g", rel_err(w1, w0, 6));
    bn_dataset_free(a);
    bn_dataset_free(b);
    free(X);
}

Test(reference, rejects_bad_arguments)
{
    double w[2];
    cr_assert_eq(bn_reference_direction(NULL, BN_LOSS_SQUARE, w, NULL), BN_ERR_ARG);
    double X[4] = {0, 1, 1, 0}, y[2] = {1, -1};
    bn_dataset *ds = make_ds(X, y, 2, 2);
    cr_assert_eq(bn_reference_direction(ds, BN_LOSS_SQUARE, NULL, NULL), BN_ERR_ARG);
    cr_assert_eq(bn_reference_direction(ds, (bn_loss)5, w, NULL), BN_ERR_ARG);
    bn_dataset_free(ds);
}
