/* The square loss's structured sharpness (issue 7, bn_sqh_math.h): its
 * Hessian product in the data's singular basis against the general HVP (itself
 * checked against finite differences in test_sharpness.c), its power
 * iteration against the general engine's and LAPACK's eigenvalues of the
 * dense Hessian, batch independence, fp32, whole runs (row-space coordinates
 * and n ≥ d) against the exact method, and the CUDA backend against the CPU. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "linalg.h"
#include "rng.h"
#include "sharpness.h"
#include "test_support.h"

/* A problem and its singular basis: V (r×d row-major, orthonormal rows),
 * Xr = Xc·Vᵀ (n×r row-major), λ_k = ‖Xr[:,k]‖², c_y = Xrᵀy — computed here
 * with plain loops from the LAPACK basis. */
typedef struct {
    ts_problem p;
    int64_t r;
    double *V, *xr, *lam, *cy;
} basis_pb;

static void basis_make(basis_pb *b, int64_t n, int64_t d, uint64_t seed)
{
    ts_problem_make(&b->p, n, d, 0, seed);
    bn_la_rowspace *rs = NULL;
    cr_assert_eq(bn_la_rowspace_create(b->p.xc, n, d, 0.0, &rs), BN_OK);
    int64_t r = b->r = bn_la_rowspace_rank(rs);
    b->V = malloc((size_t)(r * d) * sizeof(double));
    memcpy(b->V, bn_la_rowspace_basis(rs), (size_t)(r * d) * sizeof(double));
    bn_la_rowspace_free(rs);
    b->xr = calloc((size_t)(n * r), sizeof(double));
    b->lam = calloc((size_t)r, sizeof(double));
    b->cy = calloc((size_t)r, sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < r; k++) {
            double s = 0;
            for (int64_t l = 0; l < d; l++) s += b->p.xc[i * d + l] * b->V[k * d + l];
            b->xr[i * r + k] = s;
            b->lam[k] += s * s;
            b->cy[k] += s * b->p.y[i];
        }
}

static void basis_free(basis_pb *b)
{
    ts_problem_free(&b->p);
    free(b->V);
    free(b->xr);
    free(b->lam);
    free(b->cy);
}

/* w (d) = Vᵀz (r) and z = V·w. */
static void from_basis(const basis_pb *b, const double *z, double *w)
{
    int64_t d = b->p.d;
    for (int64_t l = 0; l < d; l++) {
        w[l] = 0;
        for (int64_t k = 0; k < b->r; k++) w[l] += b->V[k * d + l] * z[k];
    }
}

static void to_basis(const basis_pb *b, const double *w, double *z)
{
    int64_t d = b->p.d;
    for (int64_t k = 0; k < b->r; k++) {
        z[k] = 0;
        for (int64_t l = 0; l < d; l++) z[k] += b->V[k * d + l] * w[l];
    }
}

/* An engine on data A (n×dim row-major) with S states Z (S×dim row-major) and
 * gamma; square = 1 gives it λ and c_y (the structured products). */
typedef struct {
    bn_backend *be;
    bn_sharp *sh;
    void *dA, *dy, *dZ, *dg, *dl, *dc;
} eng;

static void eng_open(eng *e, bn_backend_kind kind, bn_precision prec, const basis_pb *b, int in_basis, int square,
                     int64_t S, const double *Z, const double *gam, const double *ew, const double *eg, double tol,
                     uint64_t seed)
{
    memset(e, 0, sizeof *e);
    cr_assert_eq(bn_backend_open(kind, prec, 1, 0, &e->be), BN_OK, "%s", bn_last_error());
    int64_t n = b->p.n, dim = in_basis ? b->r : b->p.d;
    const double *A = in_basis ? b->xr : b->p.xc;
    double *cm = malloc((size_t)(n * dim) * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < dim; k++) cm[i + k * n] = A[i * dim + k];
    e->dA = ts_dev(e->be, (size_t)(n * dim));
    ts_up(e->be, e->dA, cm, (size_t)(n * dim));
    free(cm);
    e->dy = ts_dev(e->be, (size_t)n);
    ts_up(e->be, e->dy, b->p.y, (size_t)n);
    e->dZ = ts_dev(e->be, (size_t)(dim * S));
    ts_up(e->be, e->dZ, Z, (size_t)(dim * S));
    e->dg = ts_dev(e->be, (size_t)S);
    ts_up(e->be, e->dg, gam, (size_t)S);
    if (square) {
        e->dl = ts_dev(e->be, (size_t)b->r);
        e->dc = ts_dev(e->be, (size_t)b->r);
        ts_up(e->be, e->dl, b->lam, (size_t)b->r);
        ts_up(e->be, e->dc, b->cy, (size_t)b->r);
    }
    bn_sharp_setup su = {.n = n, .d = dim, .S = S, .Xc = e->dA, .y = e->dy, .eta_w = ew, .eta_gamma = eg,
                         .seed = seed, .tol = tol, .maxiter = 20000, .rank = dim, .sq_lam = e->dl, .sq_cy = e->dc};
    cr_assert_eq(bn_sharp_create(e->be, &su, &e->sh), BN_OK, "%s", bn_last_error());
    cr_assert_eq(bn_sharp_is_square(e->sh), square);
    cr_assert_eq(bn_sharp_set_state(e->sh, e->dZ, e->dg), BN_OK);
}

/* New states (Z on the host: S×dim) for the next "record". */
static void eng_state(eng *e, const double *Z, int64_t count)
{
    ts_up(e->be, e->dZ, Z, (size_t)count);
    cr_assert_eq(bn_sharp_set_state(e->sh, e->dZ, e->dg), BN_OK);
}

static void eng_close(eng *e)
{
    bn_sharp_free(e->sh);
    void *bufs[] = {e->dA, e->dy, e->dZ, e->dg, e->dl, e->dc};
    for (int i = 0; i < 6; i++)
        if (bufs[i]) e->be->ops->dealloc(e->be, bufs[i]);
    bn_backend_close(e->be);
}

/* S states in the basis: z_j = V·w + 0.3·j·ξ_j; γ_j = 0.4 + 0.5·j; column
 * 1 is the "negative-dominant" state of test_sharpness.c (w against Xcᵀy,
 * small, γ large), where the shift is needed. */
static void states(const basis_pb *b, int64_t S, double *Z, double *gam, uint64_t seed)
{
    int64_t r = b->r, d = b->p.d, n = b->p.n;
    double *xi = malloc((size_t)r * sizeof(double)), *zw = malloc((size_t)r * sizeof(double));
    to_basis(b, b->p.w, zw);
    for (int64_t j = 0; j < S; j++) {
        bn_rng_normal(seed + (uint64_t)j, BN_STREAM_DATA_AUX, 77, r, xi);
        for (int64_t k = 0; k < r; k++) Z[j * r + k] = zw[k] + 0.3 * (double)j * xi[k];
        gam[j] = 0.4 + 0.5 * (double)j;
    }
    if (S > 1) {
        double nb = 0, *bw = malloc((size_t)d * sizeof(double));
        for (int64_t l = 0; l < d; l++) {
            bw[l] = 0;
            for (int64_t i = 0; i < n; i++) bw[l] += b->p.xc[i * d + l] * b->p.y[i];
            nb += bw[l] * bw[l];
        }
        double *zb = malloc((size_t)r * sizeof(double));
        to_basis(b, bw, zb);
        for (int64_t k = 0; k < r; k++) Z[r + k] = -0.2 * zb[k] / sqrt(nb) + 0.01 * zw[k];
        gam[1] = 6.0;
        free(bw);
        free(zb);
    }
    free(xi);
    free(zw);
}

/* LAPACK's eigenvalues (descending) of operator op for column j of the dense
 * Hessians H (S×(r+1)×(r+1), from the general engine), and the spectral radius. */
static int64_t lapack_eigs(const double *H, int64_t r, int64_t j, const double *z, double ew, double eg, int op,
                           double *ev, double *rad)
{
    int64_t D = r + 1, cnt = 0;
    cr_assert_eq(bn_sharp_dense_eigs(H + j * D * D, r, z, ew, eg, op, ev, &cnt), BN_OK);
    *rad = fmax(fabs(ev[0]), fabs(ev[cnt - 1]));
    return cnt;
}

/* ------------------------------------------------------- the product */

/* P^½HP^½·(v, δ) of the structured formula (in the basis) equals V times the
 * general HVP at w = Vᵀz along Vᵀv, for H and the weighted operator, at n < d
 * (r = n-1 < d) and n > d (r = d, a rotation).  Both sides are fp64 sums of
 * O(r) terms: 1e-12 relative to the largest entry. */
Test(sharpness_square, product_matches_general_hvp)
{
    const int64_t shapes[2][2] = {{30, 50}, {60, 20}};
    for (int sh = 0; sh < 2; sh++) {
        basis_pb b;
        basis_make(&b, shapes[sh][0], shapes[sh][1], 11 + (uint64_t)sh);
        enum { S = 3 };
        int64_t r = b.r, d = b.p.d;
        cr_assert_eq(r, shapes[sh][0] < d ? shapes[sh][0] - 1 : d);
        double *Z = malloc((size_t)(S * r) * sizeof(double)), gam[S], ew[S] = {0.9, 0.3, 1.7}, eg[S] = {0.05, 0.4, 0};
        states(&b, S, Z, gam, 5);
        double *W = malloc((size_t)(S * d) * sizeof(double));
        for (int64_t j = 0; j < S; j++) from_basis(&b, Z + j * r, W + j * d);
        eng g;
        eng_open(&g, BN_BACKEND_CPU, BN_FP64, &b, 0, 0, S, W, gam, ew, eg, 1e-8, 1);
        double *vz = malloc((size_t)(S * r) * sizeof(double)), *vw = malloc((size_t)(S * d) * sizeof(double));
        double vg[S], xgen[S * 64], xg_gen[S], xs[64], xz[64];
        for (int64_t j = 0; j < S; j++) {
            for (int64_t k = 0; k < r; k++) vz[j * r + k] = sin(0.7 + 1.3 * (double)(k + j * r));
            vg[j] = 0.37 - 0.2 * (double)j;
            from_basis(&b, vz + j * r, vw + j * d);
        }
        void *dV = ts_dev(g.be, (size_t)(S * d)), *dvg = ts_dev(g.be, S), *dX = ts_dev(g.be, (size_t)(S * d)),
             *dxg = ts_dev(g.be, S);
        ts_up(g.be, dV, vw, (size_t)(S * d));
        ts_up(g.be, dvg, vg, S);
        for (int op = 0; op <= BN_SOP_WEIGHTED; op++) {
            cr_assert_eq(bn_sharp_apply(g.sh, op, dV, dvg, dX, dxg), BN_OK);
            ts_down(g.be, xgen, dX, (size_t)(S * d));
            ts_down(g.be, xg_gen, dxg, S);
            for (int64_t j = 0; j < S; j++) {
                bn_sqh_coef_f64 cf;
                bn_sqh_prepare_f64(r, b.p.n, b.lam, b.cy, Z + j * r, gam[j], &cf);
                double aw = op ? sqrt(ew[j]) : 1, ag = op ? sqrt(eg[j]) : 1;
                xs[r] = bn_sqh_apply_f64(r, &cf, b.lam, b.cy, Z + j * r, aw, ag, vz + j * r, vg[j], xs);
                to_basis(&b, xgen + j * d, xz);
                xz[r] = xg_gen[j];
                double e = ts_rel_err(xs, xz, r + 1);
                cr_expect_leq(e, 1e-12, "n=%lld d=%lld op %d column %lld: structured vs general HVP rel err %.3e",
                              (long long)b.p.n, (long long)d, op, (long long)j, e);
            }
        }
        void *bufs[] = {dV, dvg, dX, dxg};
        for (int i = 0; i < 4; i++) g.be->ops->dealloc(g.be, bufs[i]);
        eng_close(&g);
        free(Z);
        free(W);
        free(vz);
        free(vw);
        basis_free(&b);
    }
}

/* ------------------------------------------------ the power iteration */

/* λ_max of every operator (H, weighted, sphere, plain sphere) over four
 * "records" (warm starts; the states move between them) from the structured
 * engine, the general engine in the same basis and LAPACK on the dense
 * Hessian: tol 1e-10, so both iterations are within ~30·tol of the spectral
 * radius (sharpness.h's scale of the stopping rule): 1e-8·radius.  Column 1
 * needs the shift. */
Test(sharpness_square, power_matches_general_engine_and_lapack)
{
    basis_pb b;
    basis_make(&b, 24, 60, 21);
    enum { S = 4 };
    int64_t r = b.r, D = r + 1;
    double *Z = malloc((size_t)(S * r) * sizeof(double)), gam[S];
    double ew[S] = {0.9, 0.3, 1.7, 0.6}, eg[S] = {0.05, 0.4, 0, 0.2};
    states(&b, S, Z, gam, 9);
    eng sq, gen;
    eng_open(&sq, BN_BACKEND_CPU, BN_FP64, &b, 1, 1, S, Z, gam, ew, eg, 1e-10, 3);
    eng_open(&gen, BN_BACKEND_CPU, BN_FP64, &b, 1, 0, S, Z, gam, ew, eg, 1e-10, 3);
    double *H = malloc((size_t)(S * D * D) * sizeof(double)), *ev = malloc((size_t)D * sizeof(double));
    double *xi = malloc((size_t)r * sizeof(double));
    int shifted = 0;
    for (int rec = 0; rec < 4; rec++) {
        cr_assert_eq(bn_sharp_dense_hessian(gen.sh, 0, S, H), BN_OK);
        for (int op = 0; op < BN_SOP_COUNT; op++) {
            double ls[S], lg[S], ss[S], sg[S];
            int64_t is[S], ig[S], cs[S], cg[S];
            cr_assert_eq(bn_sharp_power(sq.sh, op, ls, ss, is, cs), BN_OK, "%s", bn_last_error());
            cr_assert_eq(bn_sharp_power(gen.sh, op, lg, sg, ig, cg), BN_OK, "%s", bn_last_error());
            for (int64_t j = 0; j < S; j++) {
                double rad;
                lapack_eigs(H, r, j, Z + j * r, ew[j], eg[j], op, ev, &rad);
                cr_expect_eq(cs[j], 1, "record %d op %d column %lld did not converge", rec, op, (long long)j);
                cr_expect_leq(fabs(ls[j] - ev[0]), 1e-8 * rad, "record %d op %d col %lld: structured %.15g LAPACK %.15g",
                              rec, op, (long long)j, ls[j], ev[0]);
                cr_expect_leq(fabs(ls[j] - lg[j]), 1e-8 * rad, "record %d op %d col %lld: structured %.15g general %.15g",
                              rec, op, (long long)j, ls[j], lg[j]);
                shifted += ss[j] != 0;
            }
        }
        for (int64_t j = 0; j < S; j++) {
            bn_rng_normal(40 + (uint64_t)(rec * S + j), BN_STREAM_DATA_AUX, 3, r, xi);
            for (int64_t k = 0; k < r; k++) Z[j * r + k] += 0.02 * xi[k];
        }
        eng_state(&sq, Z, (size_t)(S * r));
        eng_state(&gen, Z, (size_t)(S * r));
    }
    cr_expect_gt(shifted, 0, "no column needed the shift: the negative-dominant state is not exercised");
    eng_close(&sq);
    eng_close(&gen);
    free(Z);
    free(H);
    free(ev);
    free(xi);
    basis_free(&b);
}

/* The sphere's ceiling (bn_sharp_power_bounded), on the structured and the
 * general engine, over four records, the sphere warm-started from the
 * weighted operator as a run does.  Three engines per kind run the same
 * arithmetic: unbounded; ceiling NaN (must be bitwise the unbounded); ceiling
 * = LAPACK's exact sphere λ_max.  With the exact ceiling a column may only
 * stop earlier (products ≤ the unbounded's), and when the ceiling stopped it
 * (fewer products), its value is within the slack of the truth: tol/2 at the
 * stopping rule's scale on the general path, tol·|λ| relative on the
 * structured one (plus rounding, 1e-13·radius).  At tol 1e-10, every value
 * is within 1e-8·radius of LAPACK (the scale of the other power tests), and
 * the ceiling must stop at least one column early. */
Test(sharpness_square, sphere_ceiling_stops_early_within_its_slack)
{
    basis_pb b;
    basis_make(&b, 24, 60, 21);
    enum { S = 4 };
    int64_t r = b.r, D = r + 1;
    const double tol = 1e-10;
    double ew[S] = {0.9, 0.3, 1.7, 0.6}, eg[S] = {0.05, 0.4, 0, 0.2};
    const int sphere = BN_SOP_PROJECT | BN_SOP_WEIGHTED;
    double *H = malloc((size_t)(S * D * D) * sizeof(double)), *ev = malloc((size_t)D * sizeof(double));
    double *xi = malloc((size_t)r * sizeof(double));
    for (int square = 0; square < 2; square++) {
        double *Z = malloc((size_t)(S * r) * sizeof(double)), gam[S];
        states(&b, S, Z, gam, 9);
        eng e[3];
        for (int k = 0; k < 3; k++) eng_open(&e[k], BN_BACKEND_CPU, BN_FP64, &b, 1, square, S, Z, gam, ew, eg, tol, 3);
        int early = 0;
        for (int rec = 0; rec < 4; rec++) {
            cr_assert_eq(bn_sharp_dense_hessian(e[0].sh, 0, S, H), BN_OK);
            double truth[S], rad[S], nan_ceil[S];
            for (int64_t j = 0; j < S; j++) {
                lapack_eigs(H, r, j, Z + j * r, ew[j], eg[j], sphere, ev, &rad[j]);
                truth[j] = ev[0];
                nan_ceil[j] = NAN;
            }
            double l[3][S], sg[3][S];
            int64_t it[3][S], cv[3][S];
            for (int k = 0; k < 3; k++) {
                cr_assert_eq(bn_sharp_power(e[k].sh, BN_SOP_WEIGHTED, l[k], sg[k], it[k], cv[k]), BN_OK);
                cr_assert_eq(bn_sharp_power_warm_from(e[k].sh, sphere, BN_SOP_WEIGHTED), BN_OK);
                const double *ceil = k == 0 ? NULL : k == 1 ? nan_ceil : truth;
                cr_assert_eq(bn_sharp_power_bounded(e[k].sh, sphere, ceil, l[k], sg[k], it[k], cv[k]), BN_OK,
                             "%s", bn_last_error());
            }
            for (int64_t j = 0; j < S; j++) {
                const char *kind = square ? "structured" : "general";
                cr_expect(l[1][j] == l[0][j] && it[1][j] == it[0][j] && sg[1][j] == sg[0][j],
                          "%s rec %d col %lld: a NaN ceiling changed the iteration", kind, rec, (long long)j);
                cr_expect_leq(it[2][j], it[0][j], "%s rec %d col %lld: %lld products with the ceiling, %lld without",
                              kind, rec, (long long)j, (long long)it[2][j], (long long)it[0][j]);
                cr_expect_eq(cv[2][j], 1);
                cr_expect_leq(fabs(l[2][j] - truth[j]), 1e-8 * rad[j], "%s rec %d col %lld: %.15g vs LAPACK %.15g",
                              kind, rec, (long long)j, l[2][j], truth[j]);
                if (it[2][j] < it[0][j]) {
                    early++;
                    double slack = square ? 0.5 * tol * fabs(truth[j])
                                          : 0.5 * tol * fmax(fabs(truth[j]), fabs(truth[j] - sg[2][j]));
                    cr_expect_geq(l[2][j], truth[j] - slack - 1e-13 * rad[j],
                                  "%s rec %d col %lld: stopped at %.15g, more than the slack below %.15g", kind, rec,
                                  (long long)j, l[2][j], truth[j]);
                }
            }
            for (int64_t j = 0; j < S; j++) {
                bn_rng_normal(40 + (uint64_t)(rec * S + j), BN_STREAM_DATA_AUX, 3, r, xi);
                for (int64_t k = 0; k < r; k++) Z[j * r + k] += 0.02 * xi[k];
            }
            for (int k = 0; k < 3; k++) eng_state(&e[k], Z, (size_t)(S * r));
        }
        cr_expect_gt(early, 0, "%s: the ceiling never stopped a column early", square ? "structured" : "general");
        for (int k = 0; k < 3; k++) eng_close(&e[k]);
        free(Z);
    }
    free(H);
    free(ev);
    free(xi);
    basis_free(&b);
}

/* The cap (bn_sqh_math.h): at tol 1e-6 a column not converged after
 * BN_SQH_POWER_CAP products is finished by bisection on the count.  From the
 * cold first record (random starts) some columns are capped; every value,
 * capped or not, is within tol of LAPACK (capped ones: tol·|λ| plus the
 * count's resolution, BN_SQH_COUNT_TOL_MIN·|λ|; the others at the stopping
 * rule's scale, 64·tol·max(|λ|, |λ - σ|)), the iteration counts stay below
 * cap + 2 early counts + 64 bisection counts, and the vectors left behind
 * (for capped columns: inverse iteration at the bisected value) are such
 * good starts that the same states are certified again after one product. */
Test(sharpness_square, capped_columns_finish_by_bisection)
{
    basis_pb b;
    basis_make(&b, 24, 60, 33);
    enum { S = 6 };
    int64_t r = b.r, D = r + 1;
    double *Z = malloc((size_t)(S * r) * sizeof(double)), gam[S];
    double ew[S] = {0.9, 0.3, 1.7, 0.6, 1.1, 0.8}, eg[S] = {0.05, 0.4, 0.01, 0.2, 0.3, 0.02};
    states(&b, S, Z, gam, 5);
    const double tol = 1e-6;
    eng sq, gen;
    eng_open(&sq, BN_BACKEND_CPU, BN_FP64, &b, 1, 1, S, Z, gam, ew, eg, tol, 3);
    eng_open(&gen, BN_BACKEND_CPU, BN_FP64, &b, 1, 0, S, Z, gam, ew, eg, tol, 3);
    double *H = malloc((size_t)(S * D * D) * sizeof(double)), *ev = malloc((size_t)D * sizeof(double));
    cr_assert_eq(bn_sharp_dense_hessian(gen.sh, 0, S, H), BN_OK);
    int64_t capped = 0;
    for (int op = 0; op < BN_SOP_COUNT; op++) {
        double lam[S], sig[S];
        int64_t it[S], cv[S];
        for (int pass = 0; pass < 2; pass++) {
            cr_assert_eq(bn_sharp_power(sq.sh, op, lam, sig, it, cv), BN_OK, "%s", bn_last_error());
            if (pass == 0) capped += bn_sharp_last_bisected(sq.sh);
            for (int64_t j = 0; j < S; j++) {
                double rad;
                int64_t cnt = lapack_eigs(H, r, j, Z + j * r, ew[j], eg[j], op, ev, &rad);
                double err = fabs(lam[j] - ev[0]);
                double lim = fmax(tol * fabs(ev[0]) + BN_SQH_COUNT_TOL_MIN * fabs(ev[0]),
                                  64 * tol * fmax(fabs(ev[0]), fabs(ev[0] - sig[j]))) + 1e-12 * rad;
                cr_expect_eq(cv[j], 1, "op %d col %lld pass %d: not converged", op, (long long)j, pass);
                cr_expect_leq(err, lim, "op %d col %lld pass %d: %.15g LAPACK %.15g (error %.2e, limit %.2e)", op,
                              (long long)j, pass, lam[j], ev[0], err, lim);
                cr_expect_leq(it[j], BN_SQH_POWER_CAP + 2 + 64, "op %d col %lld pass %d: %lld iterations", op,
                              (long long)j, pass, (long long)it[j]);
                /* Not for the negative-dominant column (|λ_min| ≈ 180 λ_max):
                 * there the count's resolution, which scales with the
                 * spectral radius, is near tol·λ_max and can reject a good
                 * start, whose λ_min part then grows 180× per product. */
                if (pass == 1 && fabs(ev[cnt - 1]) <= 10 * fabs(ev[0]))
                    cr_expect_leq(it[j], 2, "op %d col %lld: %lld iterations from its own vector (1 product and "
                                  "1 count expected)", op, (long long)j, (long long)it[j]);
            }
        }
    }
    cr_expect_gt(capped, 0, "no column was capped: the bisection after the cap is not exercised");
    eng_close(&sq);
    eng_close(&gen);
    free(Z);
    free(H);
    free(ev);
    basis_free(&b);
}

/* A column's values and iteration counts are bitwise the same alone (seed
 * shifted to its key) as in a batch, over two records (warm starts). */
Test(sharpness_square, column_is_the_same_alone_and_in_a_batch)
{
    basis_pb b;
    basis_make(&b, 20, 40, 31);
    enum { S = 5, J = 3 };
    int64_t r = b.r;
    double *Z = malloc((size_t)(S * r) * sizeof(double)), gam[S], ew[S] = {0.9, 0.8, 0.7, 0.6, 0.5},
           eg[S] = {0.1, 0.2, 0.3, 0.4, 0.5};
    states(&b, S, Z, gam, 13);
    eng all, one;
    eng_open(&all, BN_BACKEND_CPU, BN_FP64, &b, 1, 1, S, Z, gam, ew, eg, 1e-9, 100);
    eng_open(&one, BN_BACKEND_CPU, BN_FP64, &b, 1, 1, 1, Z + J * r, gam + J, ew + J, eg + J, 1e-9, 100 + J);
    for (int rec = 0; rec < 2; rec++) {
        for (int op = 0; op < BN_SOP_COUNT; op++) {
            double la[S], l1, sa[S], s1;
            int64_t ia[S], i1, ca[S], c1;
            cr_assert_eq(bn_sharp_power(all.sh, op, la, sa, ia, ca), BN_OK);
            cr_assert_eq(bn_sharp_power(one.sh, op, &l1, &s1, &i1, &c1), BN_OK);
            cr_expect_eq(memcmp(&la[J], &l1, sizeof l1), 0, "op %d: batch %.17g alone %.17g", op, la[J], l1);
            cr_expect_eq(ia[J], i1);
        }
        for (int64_t k = 0; k < S * r; k++) Z[k] *= 1.0 + 0.01 * sin((double)k);
        eng_state(&all, Z, (size_t)(S * r));
        eng_state(&one, Z + J * r, (size_t)r);
    }
    eng_close(&all);
    eng_close(&one);
    free(Z);
    basis_free(&b);
}

/* fp32: the same iteration in single precision, against fp64 LAPACK.  The
 * effective tolerance is 4·ε·√(r+1) ≈ 1.7e-6 (bn_sharp_tol_effective), and
 * the state itself is rounded to fp32: 2e-4 of the spectral radius. */
Test(sharpness_square, fp32_within_tolerance_of_lapack)
{
    basis_pb b;
    basis_make(&b, 24, 50, 41);
    enum { S = 3 };
    int64_t r = b.r, D = r + 1;
    double *Z = malloc((size_t)(S * r) * sizeof(double)), gam[S], ew[S] = {0.9, 0.3, 1.7}, eg[S] = {0.05, 0.4, 0};
    states(&b, S, Z, gam, 17);
    eng e32, gen;
    eng_open(&e32, BN_BACKEND_CPU, BN_FP32, &b, 1, 1, S, Z, gam, ew, eg, 1e-6, 7);
    eng_open(&gen, BN_BACKEND_CPU, BN_FP64, &b, 1, 0, S, Z, gam, ew, eg, 1e-6, 7);
    double *H = malloc((size_t)(S * D * D) * sizeof(double)), *ev = malloc((size_t)D * sizeof(double));
    cr_assert_eq(bn_sharp_dense_hessian(gen.sh, 0, S, H), BN_OK);
    for (int op = 0; op < BN_SOP_COUNT; op++) {
        double l[S], s[S];
        int64_t it[S], cv[S];
        cr_assert_eq(bn_sharp_power(e32.sh, op, l, s, it, cv), BN_OK);
        for (int64_t j = 0; j < S; j++) {
            double rad;
            lapack_eigs(H, r, j, Z + j * r, ew[j], eg[j], op, ev, &rad);
            cr_expect_leq(fabs(l[j] - ev[0]), 2e-4 * rad, "op %d col %lld: fp32 %.9g LAPACK %.9g", op, (long long)j,
                          l[j], ev[0]);
        }
    }
    eng_close(&e32);
    eng_close(&gen);
    free(Z);
    free(H);
    free(ev);
    basis_free(&b);
}

/* ------------------------------------------------------ the certificate */

/* The exact count of eigenvalues above θ (the inertia of the structured
 * Hessian) equals LAPACK's for θ between consecutive eigenvalues, above the
 * top and below the bottom, for all four operators; and the certificate,
 * handed the second eigenvalue as if an iteration had stopped there, finds
 * the top one by bisection (tol 1e-10: 1e-9 of the spectral radius), while
 * handed the top one it reports nothing to correct. */
Test(sharpness_square, count_and_certificate_match_lapack)
{
    basis_pb b;
    basis_make(&b, 24, 60, 61);
    enum { S = 4 };
    int64_t r = b.r, D = r + 1;
    double *Z = malloc((size_t)(S * r) * sizeof(double)), gam[S], ew[S] = {0.9, 0.3, 1.7, 0.6},
           eg[S] = {0.05, 0.4, 0.01, 0.2};
    states(&b, S, Z, gam, 23);
    eng gen;
    eng_open(&gen, BN_BACKEND_CPU, BN_FP64, &b, 1, 0, S, Z, gam, ew, eg, 1e-10, 3);
    double *H = malloc((size_t)(S * D * D) * sizeof(double)), *ev = malloc((size_t)D * sizeof(double));
    double *v = malloc((size_t)r * sizeof(double));
    cr_assert_eq(bn_sharp_dense_hessian(gen.sh, 0, S, H), BN_OK);
    int checked = 0;
    for (int op = 0; op < BN_SOP_COUNT; op++)
        for (int64_t j = 0; j < S; j++) {
            int proj = (op & BN_SOP_PROJECT) != 0, wt = (op & BN_SOP_WEIGHTED) != 0;
            double aw = wt ? sqrt(ew[j]) : 1, ag = wt ? sqrt(eg[j]) : 1;
            double rad;
            int64_t cnt = lapack_eigs(H, r, j, Z + j * r, ew[j], eg[j], op, ev, &rad);
            bn_sqh_coef_f64 cf;
            bn_sqh_prepare_f64(r, b.p.n, b.lam, b.cy, Z + j * r, gam[j], &cf);
            bn_sqh_lowrank_f64 L;
            cr_assert(bn_sqh_lowrank_make_f64(&L, &cf, aw, ag), "K singular");
            cr_expect_geq(L.bound, rad * (1 - 1e-12), "bound %.6g below the spectral radius %.6g", L.bound, rad);
            for (int64_t t = 0; t <= 6 && t <= cnt; t++) {
                double th = t == 0 ? ev[0] + 0.1 * rad
                            : t == 6 || t == cnt ? ev[cnt - 1] - 0.1 * rad : 0.5 * (ev[t - 1] + ev[t]);
                int64_t want = t == 6 || t == cnt ? cnt : t;
                if (t > 0 && t < 6 && t < cnt && ev[t - 1] - ev[t] < 1e-9 * rad) continue; /* a tie */
                int64_t got = bn_sqh_count_above_f64(&L, r, b.lam, b.cy, Z + j * r, proj, th);
                cr_expect_eq(got, want, "op %d col %lld θ=%.10g: count %lld, LAPACK %lld", op, (long long)j, th,
                             (long long)got, (long long)want);
                checked++;
            }
            if (cnt >= 2 && ev[0] - ev[1] > 1e-6 * rad) {
                double l = ev[1], vg = 0.3;
                int64_t evals = 0;
                for (int64_t k = 0; k < r; k++) v[k] = cos(0.5 + (double)k);
                int fixed = bn_sqh_certify_f64(&L, r, b.lam, b.cy, Z + j * r, proj, 1e-10, 1e-9 * rad, &l, &evals, v,
                                               &vg);
                cr_expect_eq(fixed, 1, "op %d col %lld: the second eigenvalue was not caught", op, (long long)j);
                cr_expect_leq(fabs(l - ev[0]), 1e-9 * rad, "op %d col %lld: bisection %.15g LAPACK %.15g", op,
                              (long long)j, l, ev[0]);
                l = ev[0];
                fixed = bn_sqh_certify_f64(&L, r, b.lam, b.cy, Z + j * r, proj, 1e-10, 1e-9 * rad, &l, &evals, v, &vg);
                cr_expect_eq(fixed, 0, "op %d col %lld: the top eigenvalue was not certified", op, (long long)j);
            }
        }
    cr_expect_gt(checked, 60);
    eng_close(&gen);
    free(Z);
    free(H);
    free(ev);
    free(v);
    basis_free(&b);
}

/* --------------------------------------------------------- whole runs */

static bn_sim *run_threads(const char *spec, int method, int64_t sharp_every, int64_t S, int threads);

static bn_sim *run(const char *spec, int method, int64_t sharp_every, int64_t S)
{
    return run_threads(spec, method, sharp_every, S, 2);
}

static bn_sim *run_threads(const char *spec, int method, int64_t sharp_every, int64_t S, int threads)
{
    bn_dataset *ds = NULL;
    cr_assert_eq(bn_dataset_generate(spec, BN_LOSS_SQUARE, &ds), BN_OK, "%s", bn_last_error());
    bn_run_config c;
    bn_run_config_default(&c);
    c.backend = BN_BACKEND_CPU;
    c.threads = threads;
    c.steps = 60;
    c.every = 5;
    c.seeds = S;
    c.eta_w = 0.9;
    c.eta_gamma = 0.3;
    c.sharpness_every = sharp_every;
    c.sharpness_method = method;
    c.sharpness_tol = 1e-11;
    c.sharpness_maxiter = 20000;
    bn_sim *sim = NULL;
    cr_assert_eq(bn_sim_create(ds, &c, &sim), BN_OK, "%s", bn_last_error());
    cr_assert_eq(bn_sim_run(sim, NULL, NULL), BN_OK, "%s", bn_last_error());
    bn_dataset_free(ds);
    return sim;
}

/* The structured columns run in parallel chunks dealt out on demand
 * (cpu_power_square): the records are bitwise the same on 1, 2 and 3
 * threads.  S = 200 columns of r = 15 take the parallel path (r·S > 2048). */
Test(sharpness_square, records_bitwise_on_any_thread_count)
{
    const char *spec = "hilbert:n=16,d=60,noise=0.01,seed=3";
    bn_sim *one = run_threads(spec, BN_SHARPNESS_POWER, 5, 200, 1);
    const char *names[] = {"sharpness", "sharpness_weighted", "sharpness_sphere", "sharpness_iters"};
    for (int t = 2; t <= 3; t++) {
        bn_sim *many = run_threads(spec, BN_SHARPNESS_POWER, 5, 200, t);
        for (int k = 0; k < 4; k++) {
            bn_sim_array a, b;
            cr_assert_eq(bn_sim_sharpness_find(one, names[k], &a), BN_OK);
            cr_assert_eq(bn_sim_sharpness_find(many, names[k], &b), BN_OK);
            size_t len = (size_t)(a.shape[0] * a.shape[1] * (a.ndim > 2 ? a.shape[2] : 1));
            int same = a.f64 ? memcmp(a.f64, b.f64, len * sizeof(double)) == 0
                             : memcmp(a.i64, b.i64, len * sizeof(int64_t)) == 0;
            cr_expect(same, "%s differs between 1 and %d threads", names[k], t);
        }
        bn_sim_free(many);
    }
    bn_sim_free(one);
}

/* n < d (the run steps in row-space coordinates, which sharpness records now
 * share) and n > d (the engine rotates w into the singular basis): the
 * structured records equal the exact method's (dense Hessian, LAPACK) and the
 * general engine's (BN_SHARP_GENERAL) to 1e-8 of their scale, and the
 * trajectory is bitwise the one without sharpness. */
Test(sharpness_square, runs_match_exact_and_general)
{
    const char *specs[2] = {"hilbert:n=16,d=60,noise=0.01,seed=3", "gaussian:n=50,d=12,seed=4"};
    for (int q = 0; q < 2; q++) {
        bn_sim *sq = run(specs[q], BN_SHARPNESS_POWER, 5, 3);
        setenv("BN_SHARP_GENERAL", "1", 1);
        bn_sim *gen = run(specs[q], BN_SHARPNESS_POWER, 5, 3);
        unsetenv("BN_SHARP_GENERAL");
        bn_sim *ex = run(specs[q], BN_SHARPNESS_EXACT, 5, 3);
        bn_sim *none = run(specs[q], BN_SHARPNESS_POWER, 0, 3);
        if (q == 0) {
            cr_expect_eq(bn_sim_coordinate_dim(sq), 15, "sharpness run not in row-space coordinates");
            cr_expect_eq(bn_sim_coordinate_dim(ex), 60, "the exact method needs w in R^d");
        }
        const char *names[] = {"sharpness", "sharpness_weighted", "sharpness_sphere"};
        for (int k = 0; k < 3; k++) {
            bn_sim_array a, g, e;
            cr_assert_eq(bn_sim_sharpness_find(sq, names[k], &a), BN_OK);
            cr_assert_eq(bn_sim_sharpness_find(gen, names[k], &g), BN_OK);
            cr_assert_eq(bn_sim_sharpness_find(ex, names[k], &e), BN_OK);
            int64_t len = a.shape[0] * a.shape[1];
            double scale = ts_max_abs(e.f64, len);
            for (int64_t i = 0; i < len; i++) {
                cr_expect_leq(fabs(a.f64[i] - e.f64[i]), 1e-8 * scale, "%s %s[%lld]: structured %.14g exact %.14g",
                              specs[q], names[k], (long long)i, a.f64[i], e.f64[i]);
                cr_expect_leq(fabs(a.f64[i] - g.f64[i]), 1e-8 * scale, "%s %s[%lld]: structured %.14g general %.14g",
                              specs[q], names[k], (long long)i, a.f64[i], g.f64[i]);
            }
        }
        for (int f = 0; f < bn_sim_n_fields(); f++) {
            const double *fa, *fn;
            int64_t rr, kk;
            bn_sim_field(sq, bn_sim_field_name(f), &fa, &rr, &kk);
            bn_sim_field(none, bn_sim_field_name(f), &fn, &rr, &kk);
            cr_expect_eq(memcmp(fa, fn, (size_t)(rr * kk) * sizeof(double)), 0, "%s: field %s differs with sharpness",
                         specs[q], bn_sim_field_name(f));
        }
        bn_sim_free(sq);
        bn_sim_free(gen);
        bn_sim_free(ex);
        bn_sim_free(none);
    }
}

/* ------------------------------------------------------------- CUDA */

/* The CUDA backend's power_square (one thread per column, the same
 * bn_sqh_power_column) against the CPU's: the same function, summed in the
 * same order, so equal to rounding (FMA contraction): 1e-10 relative, and
 * the same iteration counts within 2.  Skipped without a device; runs on the
 * host emulator (src/cuda/emu/run_emu_tests.sh --filter 'sharpness_square/cuda*'). */
Test(sharpness_square, cuda_matches_cpu)
{
    bn_backend *probe = NULL;
    if (bn_backend_open(BN_BACKEND_CUDA, BN_FP64, 1, 0, &probe) != BN_OK) cr_skip("no CUDA device");
    bn_backend_close(probe);
    basis_pb b;
    basis_make(&b, 24, 60, 51);
    enum { S = 6 };
    int64_t r = b.r;
    double *Z = malloc((size_t)(S * r) * sizeof(double)), gam[S], ew[S], eg[S];
    states(&b, S, Z, gam, 19);
    for (int j = 0; j < S; j++) {
        ew[j] = 0.3 + 0.2 * j;
        eg[j] = 0.05 * j;
    }
    eng gpu, cpu;
    eng_open(&gpu, BN_BACKEND_CUDA, BN_FP64, &b, 1, 1, S, Z, gam, ew, eg, 1e-10, 9);
    eng_open(&cpu, BN_BACKEND_CPU, BN_FP64, &b, 1, 1, S, Z, gam, ew, eg, 1e-10, 9);
    /* The sphere operators (PROJECT) with their ceiling, the CPU's λ_max of
     * the unprojected operator, as a run passes it (io[BN_SQ_CEIL]). */
    double up[2][S];
    for (int rec = 0; rec < 2; rec++)
        for (int op = 0; op < BN_SOP_COUNT; op++) {
            double lg[S], lc[S], sg[S], sc[S];
            int64_t ig[S], ic[S], cg[S], cc[S];
            const double *ceil = (op & BN_SOP_PROJECT) ? up[op & BN_SOP_WEIGHTED] : NULL;
            cr_assert_eq(bn_sharp_power_bounded(gpu.sh, op, ceil, lg, sg, ig, cg), BN_OK, "%s", bn_last_error());
            cr_assert_eq(bn_sharp_power_bounded(cpu.sh, op, ceil, lc, sc, ic, cc), BN_OK, "%s", bn_last_error());
            if (!(op & BN_SOP_PROJECT)) memcpy(up[op], lc, sizeof lc);
            for (int j = 0; j < S; j++) {
                cr_expect_leq(fabs(lg[j] - lc[j]), 1e-10 * fmax(fabs(lc[j]), 1e-300), "op %d col %d: CUDA %.15g CPU %.15g",
                              op, j, lg[j], lc[j]);
                cr_expect_leq(llabs(ig[j] - ic[j]), 2, "op %d col %d: iterations CUDA %lld CPU %lld", op, j,
                              (long long)ig[j], (long long)ic[j]);
                cr_expect_eq(cg[j], cc[j]);
            }
        }
    eng_close(&gpu);
    eng_close(&cpu);
    free(Z);
    basis_free(&b);
}
