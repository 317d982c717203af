/* Whole trajectories against independent references: the exact three-variable
 * map of MODEL.md on whitened data, Lemma 1, the invariant ‖w_{t+1}‖² =
 * ‖w_t‖² + η_w²‖∇_w L‖², MODEL.md's delayed-spike example, batch independence
 * and divergence isolation. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_support.h"

#define DEMO_SPEC "whitened:n=400,d=20,noise=0.5,wnorm=4,seed=1"

static bn_sim *run_sim(const bn_dataset *ds, const bn_run_config *cfg)
{
    bn_sim *sim = NULL;
    bn_status st = bn_sim_create(ds, cfg, &sim);
    cr_assert_eq(st, BN_OK, "bn_sim_create: %s", bn_last_error());
    st = bn_sim_run(sim, NULL, NULL);
    cr_assert_eq(st, BN_OK, "bn_sim_run: %s", bn_last_error());
    return sim;
}

static const double *field(const bn_sim *sim, const char *name)
{
    const double *p;
    int64_t r, c;
    cr_assert_eq(bn_sim_field(sim, name, &p, &r, &c), BN_OK);
    return p;
}

static void demo_config(bn_run_config *c) { ts_demo_config(c, BN_BACKEND_CPU); }

/* α, β, γ of the full d-dimensional GD equal the three-variable map
 * (Lemmas 1 and 7) on whitened data.  MODEL.md measured 4e-11 over 3000
 * steps; 1e-9 (α, β scaled by ‖w‖; γ relative) over 3000 steps, through a spike. */
Test(dynamics, whitened_matches_three_variable_map)
{
    bn_dataset *ds;
    cr_assert_eq(bn_dataset_generate(DEMO_SPEC, BN_LOSS_SQUARE, &ds), BN_OK, "%s", bn_last_error());
    bn_run_config c;
    demo_config(&c);
    c.steps = 3000;
    bn_sim *sim = run_sim(ds, &c);
    const double *al = field(sim, "alpha"), *be = field(sim, "beta"), *ga = field(sim, "gamma");
    /* B = ‖Xcᵀy/n‖ from the data, independently of the reference solver. */
    double B = ts_b_norm(ds);
    int64_t n = bn_dataset_n(ds);
    const double *y = bn_dataset_y(ds);
    double a = al[0], b = be[0], g = ga[0], worst = 0;
    int64_t worst_t = 0;
    for (int64_t t = 0; t <= c.steps; t++) {
        double N = sqrt(a * a + b * b);
        double e = fmax(fmax(fabs(al[t] - a) / N, fabs(be[t] - b) / N), fabs(ga[t] - g) / fabs(g));
        if (e > worst) { worst = e; worst_t = t; }
        double N3 = N * N * N;
        double a1 = a + c.eta_w * g * B * b * b / N3;
        double b1 = b * fabs(1 - c.eta_w * g * B * a / N3);
        double g1 = g - c.eta_gamma * (g - B * a / N);
        a = a1; b = b1; g = g1;
    }
    cr_expect_leq(worst, 1e-9, "full GD vs three-variable map: worst rel err %.3e at step %lld", worst, (long long)worst_t);

    /* Lemma 1: L - L* = ½(γ - B cos θ)² + ½ B² sin² θ, L* = ½ mean(y²) - ½ B². */
    const double *loss = field(sim, "loss"), *wn = field(sim, "w_norm");
    double my2 = 0;
    for (int64_t i = 0; i < n; i++) my2 += y[i] * y[i] / (double)n;
    double lstar = 0.5 * my2 - 0.5 * B * B, wl = 0;
    for (int64_t t = 0; t <= c.steps; t += 7) {
        double ct = al[t] / wn[t], st = be[t] / wn[t];
        double rhs = 0.5 * (ga[t] - B * ct) * (ga[t] - B * ct) + 0.5 * B * B * st * st;
        wl = fmax(wl, fabs((loss[t] - lstar) - rhs) / fmax(loss[t], 1e-300));
    }
    cr_expect_leq(wl, 1e-12, "Lemma 1 decomposition rel err %.3e", wl);
    bn_sim_free(sim);
    bn_dataset_free(ds);
}

/* ‖w‖ never decreases and grows exactly by η_w²‖∇_w L‖² (scale invariance),
 * on non-whitened data of both losses. */
Test(dynamics, norm_growth_invariant)
{
    const char *specs[2] = {"hilbert:n=64,d=256,noise=0.01,seed=3", "gaussian:n=80,d=30,seed=4"};
    for (int lg = 0; lg <= 1; lg++) {
        bn_dataset *ds;
        cr_assert_eq(bn_dataset_generate(specs[lg], lg ? BN_LOSS_LOGISTIC : BN_LOSS_SQUARE, &ds), BN_OK, "%s", bn_last_error());
        bn_run_config c;
        demo_config(&c);
        c.loss = lg ? BN_LOSS_LOGISTIC : BN_LOSS_SQUARE;
        c.steps = 500;
        c.seeds = 3;
        c.w0_align = 0;
        c.w0_noise = 1;
        bn_sim *sim = run_sim(ds, &c);
        const double *wn = field(sim, "w_norm"), *gn = field(sim, "grad_norm_w");
        int64_t R = bn_sim_records(sim);
        double worst = 0;
        for (int64_t j = 0; j < 3; j++)
            for (int64_t t = 0; t + 1 < R; t++) {
                const double *w = wn + j * R, *g = gn + j * R;
                cr_assert_geq(w[t + 1], w[t] * (1 - 1e-15), "‖w‖ fell at step %lld", (long long)t);
                double pred = w[t] * w[t] + c.eta_w * c.eta_w * g[t] * g[t];
                worst = fmax(worst, fabs(w[t + 1] * w[t + 1] - pred) / pred);
            }
        cr_expect_leq(worst, 1e-12, "‖w_{t+1}‖² vs ‖w_t‖² + η²‖∇L‖²: rel err %.3e", worst);
        bn_sim_free(sim);
        bn_dataset_free(ds);
    }
}

/* MODEL.md: κ crosses 2 near step 15, ρ climbs from ~5e-7 to ~0.34 by step 40,
 * the loss jumps (0.36 → 1.08), ‖w‖ jumps (2.02 → 3.31), then ρ decays again. */
Test(dynamics, model_md_delayed_spike_example)
{
    bn_dataset *ds;
    cr_assert_eq(bn_dataset_generate(DEMO_SPEC, BN_LOSS_SQUARE, &ds), BN_OK, "%s", bn_last_error());
    bn_run_config c;
    demo_config(&c);
    c.steps = 200;
    c.seeds = 2;
    bn_sim *sim = run_sim(ds, &c);
    const double *rho = field(sim, "rho"), *loss = field(sim, "loss"), *wn = field(sim, "w_norm");
    int64_t R = bn_sim_records(sim);
    for (int64_t j = 0; j < 2; j++) {
        bn_spike sp;
        cr_assert_eq(bn_find_first_spike(rho + j * R, loss + j * R, wn + j * R, R, BN_SPIKE_MIN_RISE, &sp), BN_OK);
        cr_assert(sp.found, "trajectory %lld has no spike", (long long)j);
        cr_expect(sp.onset >= 8 && sp.onset <= 30, "onset at step %lld, expected near 15", (long long)sp.onset);
        cr_expect(sp.rho_peak >= 0.1 && sp.rho_peak <= 1.0, "peak ρ %.3g, expected of order 0.3", sp.rho_peak);
        cr_expect(sp.rho_onset < 1e-4, "ρ at onset %.3g should be tiny", sp.rho_onset);
        cr_expect_geq(sp.loss_peak / sp.loss_onset, 2.0, "loss jump %.3g → %.3g", sp.loss_onset, sp.loss_peak);
        cr_expect_geq(sp.wnorm_end / sp.wnorm_onset, 1.3, "‖w‖ jump %.3g → %.3g", sp.wnorm_onset, sp.wnorm_end);
        /* Self-stabilization: ρ decays again after the spike. */
        cr_expect_lt(rho[j * R + R - 1], 1e-3 * sp.rho_peak, "ρ did not decay after the spike");
    }
    bn_sim_free(sim);
    bn_dataset_free(ds);
}

/* Seed s alone equals seed s inside a batch: bitwise on one thread count,
 * within 1e-12 across thread counts. */
Test(dynamics, batch_independence)
{
    bn_dataset *ds;
    cr_assert_eq(bn_dataset_generate("hilbert:n=64,d=256,noise=0.01,seed=2", BN_LOSS_SQUARE, &ds), BN_OK, "%s", bn_last_error());
    bn_run_config c;
    demo_config(&c);
    c.steps = 300;
    c.w0_align = 0;
    c.w0_noise = 1;
    c.seeds = 9;
    bn_sim *batch = run_sim(ds, &c);
    c.threads = 2;
    bn_sim *batch2 = run_sim(ds, &c);
    c.threads = 1;
    c.seeds = 1;
    c.seed = 5;
    bn_sim *alone = run_sim(ds, &c);
    int64_t R = bn_sim_records(alone), d = bn_sim_dim(alone);
    for (int f = 0; f < bn_sim_n_fields(); f++) {
        const char *name = bn_sim_field_name(f);
        const double *a = field(alone, name), *b = field(batch, name) + 5 * R, *b2 = field(batch2, name);
        for (int64_t t = 0; t < R; t++)
            cr_assert(a[t] == b[t] || (isnan(a[t]) && isnan(b[t])),
                      "%s[%lld]: alone %.17g vs in batch %.17g", name, (long long)t, a[t], b[t]);
        double e = ts_rel_err(b2, field(batch, name), 9 * R);
        cr_expect_leq(e, 1e-12, "%s: 1 vs 2 threads rel err %.3e", name, e);
    }
    const double *wa = bn_sim_w_final(alone), *wb = bn_sim_w_final(batch) + 5 * d;
    cr_expect_eq(memcmp(wa, wb, (size_t)d * sizeof(double)), 0, "w_final differs alone vs batch");
    bn_sim_free(batch);
    bn_sim_free(batch2);
    bn_sim_free(alone);
    bn_dataset_free(ds);
}

/* A diverging trajectory is marked with its step; the others do not change. */
Test(dynamics, divergence_is_isolated)
{
    bn_dataset *ds;
    cr_assert_eq(bn_dataset_generate(DEMO_SPEC, BN_LOSS_SQUARE, &ds), BN_OK, "%s", bn_last_error());
    bn_run_config c;
    demo_config(&c);
    c.steps = 1500;
    c.seeds = 3;
    double eg[3] = {0.05, 50.0, 0.05}; /* |1 - η_γ| = 49: γ overflows in ~200 steps */
    c.eta_gamma_per = eg;
    bn_sim *mixed = run_sim(ds, &c);
    const int64_t *div = bn_sim_diverged_step(mixed);
    cr_expect_eq(div[0], -1);
    cr_expect_eq(div[2], -1);
    cr_expect(div[1] > 0 && div[1] < 1500, "trajectory 1 should diverge (step %lld)", (long long)div[1]);
    const double *loss = field(mixed, "loss");
    int64_t R = bn_sim_records(mixed);
    cr_expect(!isfinite(loss[R + R - 1]), "diverged trajectory should end non-finite");
    c.eta_gamma_per = NULL;
    c.seeds = 1;
    bn_sim *alone = run_sim(ds, &c);
    const double *la = field(alone, "loss");
    for (int64_t t = 0; t < R; t++) cr_assert_eq(la[t], loss[t], "trajectory 0 changed at step %lld", (long long)t);
    bn_sim_free(mixed);
    bn_sim_free(alone);
    bn_dataset_free(ds);
}

/* fp32 follows fp64 before the rising edge (falling phase contracts errors). */
Test(dynamics, fp32_tracks_fp64_before_the_edge)
{
    bn_dataset *ds;
    cr_assert_eq(bn_dataset_generate(DEMO_SPEC, BN_LOSS_SQUARE, &ds), BN_OK, "%s", bn_last_error());
    bn_run_config c;
    demo_config(&c);
    c.steps = 10;
    bn_sim *s64 = run_sim(ds, &c);
    c.precision = BN_FP32;
    bn_sim *s32 = run_sim(ds, &c);
    const char *names[] = {"loss", "gamma", "w_norm", "eta_eff"};
    for (int i = 0; i < 4; i++) {
        double e = ts_rel_err(field(s32, names[i]), field(s64, names[i]), bn_sim_records(s64));
        /* fp32 unit roundoff 6e-8 × (n=400 sums, 10 steps) */
        cr_expect_leq(e, 1e-5, "%s fp32 vs fp64 rel err %.3e", names[i], e);
    }
    bn_sim_free(s64);
    bn_sim_free(s32);
    bn_dataset_free(ds);
}

/* Records: step 0, every K-th step and the last step. */
Test(dynamics, record_schedule)
{
    bn_dataset *ds;
    cr_assert_eq(bn_dataset_generate(DEMO_SPEC, BN_LOSS_SQUARE, &ds), BN_OK, "%s", bn_last_error());
    bn_run_config c;
    demo_config(&c);
    c.steps = 23;
    c.every = 5;
    bn_sim *sim = run_sim(ds, &c);
    cr_assert_eq(bn_sim_records(sim), 6);
    const double *step = field(sim, "step");
    double expect[6] = {0, 5, 10, 15, 20, 23};
    for (int i = 0; i < 6; i++) cr_expect_eq(step[i], expect[i]);
    c.every = 1;
    bn_sim *full = run_sim(ds, &c);
    const double *lf = field(full, "loss"), *ls = field(sim, "loss");
    for (int i = 0; i < 6; i++) cr_expect_eq(ls[i], lf[(int)expect[i]], "record %d", i);
    bn_sim_free(sim);
    bn_sim_free(full);
    bn_dataset_free(ds);
}

/* Row-space coordinates (n < d): the same run as in R^d, field by field.
 * The reference is the full-space run of the same library (BN_FULL_SPACE=1),
 * itself checked against the per-sample model and the three-variable map
 * elsewhere; before any rising edge the two agree to rounding. */
Test(dynamics, rowspace_coordinates_match_full_space)
{
    bn_dataset *ds;
    cr_assert_eq(bn_dataset_generate("hilbert:n=64,d=256,noise=0.01,seed=3", BN_LOSS_SQUARE, &ds), BN_OK);
    bn_run_config c;
    bn_run_config_default(&c);
    c.backend = BN_BACKEND_CPU;
    c.steps = 25; /* on this data ρ starts rising near step 30: rounding then grows geometrically */
    c.seeds = 5;
    c.eta_w = 0.5;
    c.w0_align = 1;
    c.w0_noise = 0.3;
    bn_sim *red = run_sim(ds, &c);
    setenv("BN_FULL_SPACE", "1", 1);
    bn_sim *full = run_sim(ds, &c);
    unsetenv("BN_FULL_SPACE");
    cr_assert_lt(bn_sim_coordinate_dim(red), 256, "expected row-space coordinates (got %lld)",
                 (long long)bn_sim_coordinate_dim(red));
    cr_assert_eq(bn_sim_coordinate_dim(full), 256);
    const char *names[] = {"loss", "gamma", "w_norm", "alpha", "beta", "rho", "grad_norm_w", "grad_gamma"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        const double *a = field(red, names[k]), *b = field(full, names[k]);
        int64_t n = c.seeds * bn_sim_records(red);
        double e = ts_rel_err(a, b, n);
        cr_expect_leq(e, 1e-10, "%s: row-space vs full-space rel err %.3e", names[k], e);
    }
    double e = ts_rel_err(bn_sim_w_final(red), bn_sim_w_final(full), c.seeds * 256);
    cr_expect_leq(e, 1e-10, "w_final rel err %.3e", e);
    bn_sim_free(red);
    bn_sim_free(full);
    bn_dataset_free(ds);
}
