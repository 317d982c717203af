/* The one-product gradient of MODEL.md against independent references:
 * central finite differences of the per-sample loss, and the per-sample
 * chain rule.  Square and logistic, fp64 and fp32. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "test_support.h"

static void check_against_naive(int logistic, bn_precision prec, double tol_w, double tol_g)
{
    ts_problem p;
    ts_problem_make(&p, 30, 50, logistic, 11 + (uint64_t)logistic);
    double *G = malloc(sizeof(double) * 50), st[BN_ST_COUNT];
    double *gref = malloc(sizeof(double) * 50), ggref;
    cr_assert_eq(ts_backend_gradient(BN_BACKEND_CPU, prec, &p, logistic, 1, p.w, &p.gamma, G, st), BN_OK);
    ts_naive_grad(&p, logistic, gref, &ggref);
    double e = ts_rel_err(G, gref, 50);
    cr_expect_leq(e, tol_w, "∇_w L vs per-sample chain rule (%s, %s): rel err %.3e > %.1e",
                  logistic ? "logistic" : "square", bn_precision_name(prec), e, tol_w);
    double eg = fabs(st[BN_ST_GGAMMA] - ggref) / fabs(ggref);
    cr_expect_leq(eg, tol_g, "∂_γ L rel err %.3e", eg);
    double L = ts_naive_loss(&p, p.w, p.gamma, logistic);
    cr_expect_leq(fabs(st[BN_ST_LOSS] - L) / L, tol_g, "loss %.17g vs naive %.17g", st[BN_ST_LOSS], L);
    free(G);
    free(gref);
    ts_problem_free(&p);
}

/* fp64: same math, different summation order → a few ulps. */
Test(gradient, naive_square_fp64) { check_against_naive(0, BN_FP64, 1e-12, 1e-12); }
Test(gradient, naive_logistic_fp64) { check_against_naive(1, BN_FP64, 1e-12, 1e-12); }
/* fp32: unit roundoff 6e-8 times the condition of the sums (n=30, d=50). */
Test(gradient, naive_square_fp32) { check_against_naive(0, BN_FP32, 2e-4, 2e-5); }
Test(gradient, naive_logistic_fp32) { check_against_naive(1, BN_FP32, 2e-4, 2e-5); }

/* Central differences with h = 1e-5·scale: truncation O(h²) ≈ 1e-10, rounding
 * ≈ 1e-16/h ≈ 1e-11, so 1e-8 relative leaves a margin and still catches a
 * wrong term (which would be O(1)). */
static void check_fd(int logistic)
{
    ts_problem p;
    ts_problem_make(&p, 40, 25, logistic, 5 + (uint64_t)logistic);
    double G[25], st[BN_ST_COUNT], fd[25];
    cr_assert_eq(ts_backend_gradient(BN_BACKEND_CPU, BN_FP64, &p, logistic, 1, p.w, &p.gamma, G, st), BN_OK);
    double wn = 0;
    for (int k = 0; k < 25; k++) wn += p.w[k] * p.w[k];
    double h = 1e-5 * sqrt(wn);
    for (int k = 0; k < 25; k++) {
        double keep = p.w[k];
        p.w[k] = keep + h;
        double lp = ts_naive_loss(&p, p.w, p.gamma, logistic);
        p.w[k] = keep - h;
        double lm = ts_naive_loss(&p, p.w, p.gamma, logistic);
        p.w[k] = keep;
        fd[k] = (lp - lm) / (2 * h);
    }
    double e = ts_rel_err(G, fd, 25);
    cr_expect_leq(e, 1e-8, "∇_w L vs central differences: rel err %.3e", e);
    double hg = 1e-5;
    double fdg = (ts_naive_loss(&p, p.w, p.gamma + hg, logistic) - ts_naive_loss(&p, p.w, p.gamma - hg, logistic)) / (2 * hg);
    cr_expect_leq(fabs(st[BN_ST_GGAMMA] - fdg) / fabs(fdg), 1e-8, "∂_γ L %.17g vs FD %.17g", st[BN_ST_GGAMMA], fdg);
    ts_problem_free(&p);
}

Test(gradient, finite_differences_square) { check_fd(0); }
Test(gradient, finite_differences_logistic) { check_fd(1); }

/* Scale invariance makes w ⟂ ∇_w L exactly; the batch of S columns must
 * equal each column alone, bit for bit. */
Test(gradient, orthogonal_to_w_and_batched_equals_single)
{
    for (int logistic = 0; logistic <= 1; logistic++) {
        ts_problem p;
        ts_problem_make(&p, 64, 256, logistic, 21);
        enum { S = 7 };
        double *W = malloc(sizeof(double) * S * 256), gam[S];
        for (int j = 0; j < S; j++) {
            for (int k = 0; k < 256; k++) W[j * 256 + k] = p.w[k] * (1 + 0.1 * j) + 0.01 * j * (k % 3);
            gam[j] = 0.5 + 0.2 * j;
        }
        double *G = malloc(sizeof(double) * S * 256), st[BN_ST_COUNT * S];
        cr_assert_eq(ts_backend_gradient(BN_BACKEND_CPU, BN_FP64, &p, logistic, S, W, gam, G, st), BN_OK);
        for (int j = 0; j < S; j++) {
            double dot = 0, wn = 0, gn = 0;
            for (int k = 0; k < 256; k++) {
                dot += W[j * 256 + k] * G[j * 256 + k];
                wn += W[j * 256 + k] * W[j * 256 + k];
                gn += G[j * 256 + k] * G[j * 256 + k];
            }
            cr_expect_leq(fabs(dot), 1e-13 * sqrt(wn * gn), "wᵀ∇L = %.3e (column %d)", dot, j);
            double G1[256], st1[BN_ST_COUNT];
            cr_assert_eq(ts_backend_gradient(BN_BACKEND_CPU, BN_FP64, &p, logistic, 1, W + j * 256, gam + j, G1, st1), BN_OK);
            int diff = 0, sdiff = 0;
            for (int k = 0; k < 256; k++) diff += G1[k] != G[j * 256 + k];
            for (int f = 0; f < BN_ST_COUNT; f++) sdiff += st1[f] != st[f * S + j];
            cr_expect_eq(diff, 0, "column %d: %d of 256 gradient entries differ alone vs batch", j, diff);
            cr_expect_eq(sdiff, 0, "column %d: %d stats differ alone vs batch", j, sdiff);
        }
        free(W);
        free(G);
        ts_problem_free(&p);
    }
}

/* Logistic loss stays finite where exp(-yz) overflows. */
Test(gradient, logistic_extreme_logits_are_finite)
{
    for (int i = 0; i < 2; i++) {
        double big = i ? 800.0 : -800.0;
        double l = bn_loss_value_f64(1, big, 1.0), d1 = bn_loss_d1_f64(1, big, 1.0), d2 = bn_loss_d2_f64(1, big, 1.0);
        cr_expect(isfinite(l) && isfinite(d1) && isfinite(d2), "z=%g: ℓ=%g ℓ'=%g ℓ''=%g", big, l, d1, d2);
        if (big < 0) cr_expect_float_eq(l, 800.0, 1e-12);
        else cr_expect_lt(l, 1e-300);
    }
    float lf = bn_loss_value_f32(1, -200.f, 1.f);
    cr_expect_float_eq(lf, 200.f, 1e-5);
}

/* Whether ℓ, ℓ', ℓ'' at (z, y) are off the naive formulas in long double,
 * ℓ = log(1 + e^{-yz}), ℓ' = -y/(1 + e^{yz}), ℓ'' = e^{yz}/(1 + e^{yz})² (or
 * the square loss's), by more than rel relative. */
static int off_naive(int logistic, long double z, long double y, long double l, long double d1, long double d2,
                     long double rel)
{
    long double L, D1, D2;
    if (logistic) {
        long double ep = expl(y * z);
        L = log1pl(1.0L / ep);
        D1 = -y / (1.0L + ep);
        D2 = ep / ((1.0L + ep) * (1.0L + ep));
    } else {
        L = 0.5L * (z - y) * (z - y);
        D1 = z - y;
        D2 = 1;
    }
    return fabsl(l - L) > rel * fabsl(L) || fabsl(d1 - D1) > rel * fabsl(D1) || fabsl(d2 - D2) > rel * fabsl(D2);
}

/* The one-exp forms (bn_loss_value_d1, bn_loss_d1_d2) against the naive
 * formulas in long double, and the single values (bn_loss_value, _d1, _d2)
 * bitwise against the pairs they are read off.
 * Tolerances (|yz| ≤ 30; measured 5e-16 and 2.6e-7): fp64 8e-16, fp32 4e-7
 * relative, a few ulps: the forms round 4-5 times after the exp. */
Test(gradient, logistic_one_exp_forms_match_naive_and_separate)
{
    int bad64 = 0, bad32 = 0, neq = 0;
    for (int lg = 0; lg < 2; lg++)
        for (int yi = 0; yi < 2; yi++)
            for (int k = -600; k <= 600; k++) {
                double y = lg ? (yi ? 1.0 : -1.0) : (yi ? 0.7 : -1.3), z = k * 0.05 + (k == 0 ? 0.0 : 1e-3);
                double d1, d2, l = bn_loss_value_d1_f64(lg, z, y, &d1), e1 = bn_loss_d1_d2_f64(lg, z, y, &d2);
                neq += l != bn_loss_value_f64(lg, z, y) || d1 != bn_loss_d1_f64(lg, z, y) ||
                       e1 != bn_loss_d1_f64(lg, z, y) || d2 != bn_loss_d2_f64(lg, z, y);
                float zf = (float)z, yf = (float)y, f1, f2;
                float lf = bn_loss_value_d1_f32(lg, zf, yf, &f1), g1 = bn_loss_d1_d2_f32(lg, zf, yf, &f2);
                neq += lf != bn_loss_value_f32(lg, zf, yf) || f1 != bn_loss_d1_f32(lg, zf, yf) ||
                       g1 != bn_loss_d1_f32(lg, zf, yf) || f2 != bn_loss_d2_f32(lg, zf, yf);
                bad64 += off_naive(lg, z, y, l, d1, d2, 8e-16L);
                bad32 += off_naive(lg, zf, yf, lf, f1, f2, 4e-7L);
            }
    cr_expect_eq(neq, 0, "%d single values differ from the pairs", neq);
    cr_expect_eq(bad64, 0, "%d fp64 values off the naive long-double formulas by > 8e-16 relative", bad64);
    cr_expect_eq(bad32, 0, "%d fp32 values off the naive long-double formulas by > 4e-7 relative", bad32);
}
