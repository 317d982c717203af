/* Synthetic data generators: what each promises about its X and y, that a
 * spec reproduces its data bit for bit, and that bad specs are refused with
 * a message naming the culprit. */
#include <criterion/criterion.h>

#include "test_support.h"
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bnspike.h"
#include "linalg.h"

static bn_dataset *generate(const char *spec, bn_loss loss)
{
    bn_dataset *ds = NULL;
    cr_assert_eq(bn_dataset_generate(spec, loss, &ds), BN_OK, "%s: %s", spec, bn_last_error());
    return ds;
}

static double *centered(const bn_dataset *ds)
{
    double *xc = ts_center(bn_dataset_X(ds), bn_dataset_n(ds), bn_dataset_d(ds));
    cr_assert(xc);
    return xc;
}

/* Largest |Σ - I| entry with Σ = Xcᵀ Xc / n. */
static double whitening_error(const bn_dataset *ds)
{
    int64_t n = bn_dataset_n(ds), d = bn_dataset_d(ds);
    double *xc = centered(ds), worst = 0;
    for (int64_t a = 0; a < d; a++)
        for (int64_t b = 0; b < d; b++) {
            double s = 0;
            for (int64_t i = 0; i < n; i++) s += xc[i * d + a] * xc[i * d + b];
            worst = fmax(worst, fabs(s / (double)n - (a == b)));
        }
    free(xc);
    return worst;
}

static void expect_arg_error(const char *spec, bn_loss loss, const char *needle1, const char *needle2)
{
    bn_dataset *ds = (bn_dataset *)0x1;
    cr_assert_eq(bn_dataset_generate(spec, loss, &ds), BN_ERR_ARG, "'%s' was accepted", spec ? spec : "(null)");
    cr_assert_null(ds, "'%s': out not cleared", spec);
    const char *msg = bn_last_error();
    cr_assert(strstr(msg, needle1), "'%s': message '%s' lacks '%s'", spec, msg, needle1);
    if (needle2) cr_assert(strstr(msg, needle2), "'%s': message '%s' lacks '%s'", spec, msg, needle2);
}

/* ----------------------------------------------------------- whitened */

Test(generate, whitened_covariance_is_identity)
{
    /* Tolerance 1e-12 on every entry of Σ - I (the brief's contract). */
    const char *specs[] = {"whitened", "whitened:n=50,d=49,seed=7", "whitened:n=1000,d=3,seed=1"};
    for (int c = 0; c < 3; c++) {
        bn_dataset *ds = generate(specs[c], BN_LOSS_SQUARE);
        double err = whitening_error(ds);
        cr_assert_leq(err, 1e-12, "%s: max |Σ - I| = %.3g", specs[c], err);
        bn_dataset_free(ds);
    }
    bn_dataset *ds = generate("whitened:n=80,d=10", BN_LOSS_LOGISTIC);
    cr_assert_leq(whitening_error(ds), 1e-12);
    bn_dataset_free(ds);
}

Test(generate, whitened_targets_without_noise_recover_wnorm)
{
    /* noise=0: y = Xc w_true exactly, so on whitened data w_true = Xcᵀy/n and
     * its norm is wnorm. */
    bn_dataset *ds = generate("whitened:n=200,d=8,noise=0,wnorm=2.5,seed=3", BN_LOSS_SQUARE);
    int64_t n = 200, d = 8;
    double *xc = centered(ds), b[8] = {0}, ysum = 0;
    for (int64_t i = 0; i < n; i++) {
        ysum += bn_dataset_y(ds)[i];
        for (int64_t t = 0; t < d; t++) b[t] += xc[i * d + t] * bn_dataset_y(ds)[i] / (double)n;
    }
    cr_assert_float_eq(ts_norm(b, d), 2.5, 1e-12, "‖Xcᵀy/n‖ = %.17g", ts_norm(b, d));
    cr_assert_leq(fabs(ysum), 1e-10, "Σy = %.3g: targets of centered data sum to zero", ysum);
    free(xc);
    bn_dataset_free(ds);
}

Test(generate, whitened_needs_enough_samples)
{
    expect_arg_error("whitened:n=10,d=10", BN_LOSS_SQUARE, "n-1 >= d", "d=10");
}

/* ------------------------------------------------------------ hilbert */

Test(generate, hilbert_default_is_the_papers_shape)
{
    bn_dataset *ds = generate("hilbert", BN_LOSS_SQUARE);
    cr_assert_eq(bn_dataset_n(ds), 64);
    cr_assert_eq(bn_dataset_d(ds), 256);
    cr_assert_str_eq(bn_dataset_name(ds), "hilbert:n=64,d=256,noise=0.01,ynoise=0,scale=auto,wnorm=1,seed=0");
    bn_dataset_free(ds);
}

/* Singular values of the n×d Hilbert slice, computed here. */
static void hilbert_singular_values(int64_t n, int64_t d, double *s, double *fro)
{
    double *H = malloc((size_t)(n * d) * sizeof(double)), *sup = malloc((size_t)n * sizeof(double));
    *fro = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) {
            H[i * d + j] = 1.0 / (double)(i + j + 1);
            *fro += H[i * d + j] * H[i * d + j];
        }
    *fro = sqrt(*fro);
    cr_assert_eq(LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'N', (lapack_int)n, (lapack_int)d, H,
                                (lapack_int)d, s, NULL, 1, NULL, 1, sup), 0);
    free(H);
    free(sup);
}

Test(generate, hilbert_is_a_rotated_scaled_hilbert_slice)
{
    /* Rotations keep singular values: with noise=0, X = c·Q_n H Q_d has the
     * singular values of H times c, and scale=auto makes the mean square of
     * X's entries exactly 1. */
    int64_t n = 12, d = 30;
    double sh[12], sx[12], sup[12], fro;
    hilbert_singular_values(n, d, sh, &fro);
    bn_dataset *ds = generate("hilbert:n=12,d=30,noise=0,seed=4", BN_LOSS_SQUARE);
    double *X = malloc((size_t)(n * d) * sizeof(double)), ms = 0;
    memcpy(X, bn_dataset_X(ds), (size_t)(n * d) * sizeof(double));
    for (int64_t i = 0; i < n * d; i++) ms += X[i] * X[i] / (double)(n * d);
    cr_assert_float_eq(ms, 1.0, 1e-12, "mean square %.17g", ms);
    cr_assert_eq(LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'N', (lapack_int)n, (lapack_int)d, X,
                                (lapack_int)d, sx, NULL, 1, NULL, 1, sup), 0);
    double c = sqrt((double)(n * d)) / fro;
    /* Singular values down to 1e-12 of the largest (below that, rounding). */
    for (int64_t k = 0; k < n && sh[k] > 1e-12 * sh[0]; k++)
        cr_assert_leq(fabs(sx[k] - c * sh[k]), 1e-12 * c * sh[0], "σ_%lld: %.17g vs %.17g",
                      (long long)k, sx[k], c * sh[k]);
    bn_dataset_free(ds);

    /* scale=2: ‖X‖_F = 2‖H‖_F. */
    ds = generate("hilbert:n=12,d=30,noise=0,scale=2", BN_LOSS_SQUARE);
    cr_assert_float_eq(ts_norm(bn_dataset_X(ds), n * d), 2 * fro, 1e-12);
    bn_dataset_free(ds);
    free(X);
}

Test(generate, hilbert_wide_and_tall_both_work)
{
    bn_dataset *ds = generate("hilbert:n=20,d=300", BN_LOSS_LOGISTIC);
    for (int64_t i = 0; i < 20; i++)
        cr_assert(bn_dataset_y(ds)[i] == 1 || bn_dataset_y(ds)[i] == -1);
    bn_dataset_free(ds);
    ds = generate("hilbert:n=300,d=20,seed=2", BN_LOSS_SQUARE);
    cr_assert_eq(bn_dataset_n(ds), 300);
    cr_assert_eq(bn_dataset_d(ds), 20);
    bn_dataset_free(ds);
}

/* ----------------------------------------------------------- gaussian */

Test(generate, gaussian_features_are_standard_normal)
{
    /* 20000 entries: mean within 0.03 (≈4 standard errors), variance within 0.05. */
    bn_dataset *ds = generate("gaussian:n=2000,d=10,seed=5", BN_LOSS_SQUARE);
    const double *X = bn_dataset_X(ds);
    double mean = 0, var = 0;
    for (int i = 0; i < 20000; i++) mean += X[i] / 20000;
    for (int i = 0; i < 20000; i++) var += (X[i] - mean) * (X[i] - mean) / 20000;
    cr_assert_leq(fabs(mean), 0.03, "mean %.3g", mean);
    cr_assert_leq(fabs(var - 1), 0.05, "variance %.3g", var);
    bn_dataset_free(ds);
}

Test(generate, gaussian_logistic_labels_are_separable_with_margin)
{
    bn_dataset *ds = generate("gaussian:n=300,d=15,margin=0.2,seed=6", BN_LOSS_LOGISTIC);
    int64_t n = 300, d = 15, pos = 0;
    for (int64_t i = 0; i < n; i++) {
        double y = bn_dataset_y(ds)[i];
        cr_assert(y == 1 || y == -1, "y[%lld] = %g", (long long)i, y);
        pos += y > 0;
    }
    cr_assert(pos > 0 && pos < n, "one class is empty");
    /* Separable: the max-margin w* certifies it, computed margins all >= 1,
     * and since the generator's own ŵ/0.2 is feasible, ‖w*‖ <= 5. */
    double w[15];
    cr_assert_eq(bn_reference_direction(ds, BN_LOSS_LOGISTIC, w, NULL), BN_OK, "%s", bn_last_error());
    double *xc = centered(ds);
    for (int64_t i = 0; i < n; i++) {
        double m = 0;
        for (int64_t t = 0; t < d; t++) m += bn_dataset_y(ds)[i] * xc[i * d + t] * w[t];
        cr_assert_geq(m, 1 - 1e-9, "margin %lld = %.17g", (long long)i, m);
    }
    cr_assert_leq(ts_norm(w, d), 5 * (1 + 1e-12));
    free(xc);
    bn_dataset_free(ds);
}

/* ------------------------------------------------------ active-margin */

Test(generate, active_margin_is_centered_and_balanced)
{
    bn_dataset *ds = generate("active-margin:n=16,d=7,seed=2", BN_LOSS_LOGISTIC);
    const double *X = bn_dataset_X(ds), *y = bn_dataset_y(ds);
    for (int64_t j = 0; j < 7; j++) {
        double s = 0;
        for (int64_t i = 0; i < 16; i++) s += X[i * 7 + j];
        cr_assert_leq(fabs(s), 1e-12, "column %lld sums to %.3g", (long long)j, s);
    }
    double ysum = 0;
    for (int64_t i = 0; i < 16; i++) ysum += y[i];
    cr_assert_eq(ysum, 0.0);
    bn_dataset_free(ds);
    expect_arg_error("active-margin:n=15", BN_LOSS_LOGISTIC, "even", "n=15");
    expect_arg_error("active-margin", BN_LOSS_SQUARE, "logistic", NULL);
    expect_arg_error("active-margin:margin=0", BN_LOSS_LOGISTIC, "margin", NULL);
}

/* -------------------------------------------------- shapes, determinism */

Test(generate, shapes_follow_the_spec)
{
    const char *specs[] = {"whitened:n=33,d=4", "hilbert:n=9,d=13", "gaussian:n=21,d=2",
                           "active-margin:n=6,d=11"};
    const int64_t shape[][2] = {{33, 4}, {9, 13}, {21, 2}, {6, 11}};
    for (int c = 0; c < 4; c++) {
        bn_dataset *ds = generate(specs[c], BN_LOSS_LOGISTIC);
        cr_assert_eq(bn_dataset_n(ds), shape[c][0], "%s", specs[c]);
        cr_assert_eq(bn_dataset_d(ds), shape[c][1], "%s", specs[c]);
        bn_dataset_free(ds);
    }
}

Test(generate, same_spec_same_bits_other_seed_other_data)
{
    const char *specs[] = {"whitened:n=40,d=5,seed=11", "hilbert:n=10,d=20,seed=11",
                           "gaussian:n=30,d=6,seed=11", "active-margin:n=10,d=8,seed=11"};
    const char *other[] = {"whitened:n=40,d=5,seed=12", "hilbert:n=10,d=20,seed=12",
                           "gaussian:n=30,d=6,seed=12", "active-margin:n=10,d=8,seed=12"};
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 2; l++) {
            bn_loss loss = l ? BN_LOSS_LOGISTIC : BN_LOSS_SQUARE;
            if (c == 3 && loss == BN_LOSS_SQUARE) continue;
            bn_dataset *a = generate(specs[c], loss), *b = generate(specs[c], loss);
            bn_dataset *o = generate(other[c], loss);
            size_t nx = (size_t)(bn_dataset_n(a) * bn_dataset_d(a)) * sizeof(double);
            cr_assert(memcmp(bn_dataset_X(a), bn_dataset_X(b), nx) == 0, "%s: X differs", specs[c]);
            cr_assert(memcmp(bn_dataset_y(a), bn_dataset_y(b), (size_t)bn_dataset_n(a) * sizeof(double)) == 0,
                      "%s: y differs", specs[c]);
            cr_assert_eq(bn_dataset_checksum(a), bn_dataset_checksum(b));
            cr_assert(memcmp(bn_dataset_X(a), bn_dataset_X(o), nx) != 0, "%s: seed ignored", specs[c]);
            cr_assert_neq(bn_dataset_checksum(a), bn_dataset_checksum(o));
            bn_dataset_free(a);
            bn_dataset_free(b);
            bn_dataset_free(o);
        }
}

Test(generate, name_lists_the_values_used)
{
    bn_dataset *ds = generate("gaussian: d = 3 ,seed=9,noise=0.25", BN_LOSS_SQUARE);
    cr_assert_str_eq(bn_dataset_name(ds), "gaussian:n=200,d=3,noise=0.25,wnorm=1,seed=9");
    bn_dataset_free(ds);
    ds = generate("gaussian:d=3,seed=9,noise=0.25", BN_LOSS_LOGISTIC);
    cr_assert_str_eq(bn_dataset_name(ds), "gaussian:n=200,d=3,margin=0.1,seed=9");
    bn_dataset_free(ds);
}

/* ----------------------------------------------------------- bad specs */

Test(generate, bad_specs_name_the_key)
{
    expect_arg_error("foo", BN_LOSS_SQUARE, "unknown generator 'foo'", "whitened, hilbert, gaussian, active-margin");
    expect_arg_error("hilbert:bogus=1", BN_LOSS_SQUARE, "unknown key 'bogus'", "n,d,noise,ynoise,scale,wnorm,seed");
    expect_arg_error("gaussian:n=abc", BN_LOSS_SQUARE, "key n", "'abc'");
    expect_arg_error("gaussian:n=1", BN_LOSS_SQUARE, "key n", "'1'");
    expect_arg_error("gaussian:n=12x", BN_LOSS_SQUARE, "key n", "'12x'");
    expect_arg_error("gaussian:d=0", BN_LOSS_SQUARE, "key d", "'0'");
    expect_arg_error("gaussian:seed=-1", BN_LOSS_SQUARE, "key seed", "'-1'");
    expect_arg_error("gaussian:seed=99999999999999999999999", BN_LOSS_SQUARE, "key seed", NULL);
    expect_arg_error("gaussian:noise=-0.1", BN_LOSS_SQUARE, "key noise", "'-0.1'");
    expect_arg_error("gaussian:noise=nan", BN_LOSS_SQUARE, "key noise", "'nan'");
    expect_arg_error("gaussian:wnorm=0", BN_LOSS_SQUARE, "key wnorm", "> 0");
    expect_arg_error("gaussian:noise=", BN_LOSS_SQUARE, "key noise", "''");
    expect_arg_error("gaussian:n=5,n=6", BN_LOSS_SQUARE, "key n is given twice", NULL);
    expect_arg_error("gaussian:n", BN_LOSS_SQUARE, "item 'n' is not key=value", NULL);
    expect_arg_error("gaussian:n=5,", BN_LOSS_SQUARE, "is not key=value", NULL);
    expect_arg_error("gaussian:margin=4", BN_LOSS_LOGISTIC, "key margin", "[0, 3]");
    expect_arg_error("hilbert:scale=0", BN_LOSS_SQUARE, "key scale", "'auto'");
    expect_arg_error("whitened:margin=1", BN_LOSS_SQUARE, "unknown key 'margin'", NULL);
    expect_arg_error("", BN_LOSS_SQUARE, "empty generator spec", NULL);
    expect_arg_error(NULL, BN_LOSS_SQUARE, "empty generator spec", NULL);
}

/* A spec's data, and the row-space basis of its centered X, are the same bits
 * whatever OpenBLAS's thread count (by default the machine's core count): on
 * a 2-core machine OPENBLAS_NUM_THREADS=1 and 2 gave different hilbert data,
 * so different trajectories, until linalg.c fixed the count of each call.
 * The caller's thread count comes back unchanged. */
Test(generate, same_bits_on_any_openblas_thread_count)
{
    /* the last one's SVD (2.7e9 flops) takes linalg.c's several-thread path */
    const char *specs[] = {"hilbert:n=64,d=256,noise=0.01,seed=1", "hilbert:n=300,d=200,seed=3",
                           "whitened:n=400,d=20,seed=2", "gaussian:n=200,d=300,seed=5",
                           "gaussian:n=700,d=1400,seed=6"};
    int saved = openblas_get_num_threads();
    for (int c = 0; c < 5; c++) {
        uint64_t sum0 = 0;
        double *basis0 = NULL;
        size_t nb = 0;
        for (int nt = 1; nt <= 3; nt++) {
            openblas_set_num_threads(nt);
            bn_dataset *ds = generate(specs[c], BN_LOSS_LOGISTIC);
            cr_assert_eq(openblas_get_num_threads(), nt, "%s: the thread count was not restored", specs[c]);
            int64_t n = bn_dataset_n(ds), d = bn_dataset_d(ds);
            double *xc = centered(ds);
            bn_la_rowspace *rs = NULL;
            cr_assert_eq(bn_la_rowspace_create(xc, n, d, -1.0, &rs), BN_OK, "%s", bn_last_error());
            size_t cnt = (size_t)(bn_la_rowspace_rank(rs) * d);
            if (nt == 1) {
                sum0 = bn_dataset_checksum(ds);
                nb = cnt;
                basis0 = malloc(cnt * sizeof(double));
                cr_assert(basis0);
                memcpy(basis0, bn_la_rowspace_basis(rs), cnt * sizeof(double));
            } else {
                cr_expect_eq(bn_dataset_checksum(ds), sum0, "%s: data differ at %d OpenBLAS threads", specs[c], nt);
                cr_expect(cnt == nb && memcmp(basis0, bn_la_rowspace_basis(rs), cnt * sizeof(double)) == 0,
                          "%s: row-space basis differs at %d OpenBLAS threads", specs[c], nt);
            }
            bn_la_rowspace_free(rs);
            free(xc);
            bn_dataset_free(ds);
        }
        free(basis0);
    }
    openblas_set_num_threads(saved);
}
