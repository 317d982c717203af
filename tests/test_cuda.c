/* The CUDA backend against the CPU backend (suite "cuda").
 *
 * Every test needs a CUDA device and skips visibly ("skipped: no CUDA
 * device") when the backend is not compiled in or no device is visible.
 *
 * Tolerances and why:
 *  - fp64 GPU vs fp64 CPU differ only in summation order (cuBLAS blocking,
 *    the kernels' warp/block trees, FMA contraction), ~1e-16 per operation.
 *    Along a calm (contracting) stretch that stays ~1e-13, so 1e-10 has a wide
 *    margin; through a rising edge differences grow geometrically, so runs
 *    are compared before any edge, or by the spike's onset step only.
 *  - ρ = β/α is resolved only to about ε·‖w‖/α in absolute terms (MODEL.md,
 *    "Precision matters"), so ρ is compared relatively down to ρ = 1e-5 and
 *    absolutely below: |Δρ| ≤ tol·max(|ρ|, 1e-5).
 *  - fp32 GPU vs fp64 CPU: fp32 unit roundoff 6e-8 times sums over n=400 and
 *    10 steps: 1e-5 on loss, γ, ‖w‖, η_eff (the bound of the CPU fp32 test). */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_support.h"
#ifdef BN_HAVE_CUDA
#include "cuda/bn_cuda_extra.h"
#endif

#define DEMO_SPEC "whitened:n=400,d=20,noise=0.5,wnorm=4,seed=1"
#define HILBERT_SPEC "hilbert:n=64,d=256,noise=0.01,seed=2"

static int gpu_count(void)
{
#ifdef BN_HAVE_CUDA
    return bn_cuda_device_count();
#else
    return 0;
#endif
}

#ifdef BN_HAVE_CUDA
#define BN_CUDA_NOTE ""
#else
#define BN_CUDA_NOTE " (the CUDA backend is not compiled into this build)"
#endif

#define REQUIRE_GPU()                                                         \
    do {                                                                      \
        if (gpu_count() <= 0) cr_skip_test("skipped: no CUDA device" BN_CUDA_NOTE); \
    } while (0)

static void counters(long long *graph, long long *plain, long long *fused)
{
#ifdef BN_HAVE_CUDA
    bn_cuda_debug_counters(graph, plain, fused, NULL);
#else
    *graph = *plain = *fused = 0;
#endif
}

static bn_sim *run_sim(const bn_dataset *ds, const bn_run_config *cfg)
{
    bn_sim *sim = NULL;
    bn_status st = bn_sim_create(ds, cfg, &sim);
    cr_assert_eq(st, BN_OK, "bn_sim_create (%s): %s", bn_backend_name(cfg->backend), bn_last_error());
    st = bn_sim_run(sim, NULL, NULL);
    cr_assert_eq(st, BN_OK, "bn_sim_run (%s): %s", bn_backend_name(cfg->backend), bn_last_error());
    return sim;
}

static const double *field(const bn_sim *sim, const char *name)
{
    const double *p;
    int64_t r, c;
    cr_assert_eq(bn_sim_field(sim, name, &p, &r, &c), BN_OK, "%s", bn_last_error());
    return p;
}

static bn_dataset *dataset(const char *spec, bn_loss loss)
{
    bn_dataset *ds = NULL;
    cr_assert_eq(bn_dataset_generate(spec, loss, &ds), BN_OK, "%s: %s", spec, bn_last_error());
    return ds;
}

static void demo_config(bn_run_config *c, bn_backend_kind kind)
{
    bn_run_config_default(c);
    c->backend = kind;
    c->threads = 1;
    c->eta_w = 0.9;
    c->eta_gamma = 0.05;
    c->gamma0 = 0.1;
    c->w0_scale = 0.5;
    c->w0_align = 1.0;
    c->w0_noise = 0.05;
}

/* Element-wise max |a-b| / max(|b|, floor) over records [0, upto] of every
 * trajectory (rows of R).  NaN on one side only counts as infinite. */
static double elem_rel(const double *a, const double *b, int64_t S, int64_t R, int64_t upto,
                       double floor, int64_t *at_row, int64_t *at_rec)
{
    double worst = 0;
    for (int64_t j = 0; j < S; j++)
        for (int64_t t = 0; t <= upto && t < R; t++) {
            double x = a[j * R + t], y = b[j * R + t];
            if (isnan(x) && isnan(y)) continue;
            double e = fabs(x - y) / fmax(fabs(y), floor);
            if (isnan(e)) e = INFINITY;
            if (e > worst) {
                worst = e;
                if (at_row) *at_row = j;
                if (at_rec) *at_rec = t;
            }
        }
    return worst;
}

/* Norm-wise relative difference of two series: max |a-b| / max |b| over the
 * entries where both are finite; equal non-finite entries (NaN and NaN, the
 * same infinity) agree; a non-finite entry on one side only is infinite. */
static double series_rel(const double *a, const double *b, int64_t len)
{
    double m = 0, scale = 0;
    for (int64_t i = 0; i < len; i++) {
        if ((isnan(a[i]) && isnan(b[i])) || (isinf(a[i]) && a[i] == b[i])) continue;
        if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
        m = fmax(m, fabs(a[i] - b[i]));
        scale = fmax(scale, fabs(b[i]));
    }
    return scale > 0 ? m / scale : m;
}

/* Norm-wise per trajectory: max over the S rows (of R) of series_rel. */
static double rows_rel(const double *a, const double *b, int64_t S, int64_t R)
{
    double worst = 0;
    for (int64_t j = 0; j < S; j++) worst = fmax(worst, series_rel(a + j * R, b + j * R, R));
    return worst;
}

/* One record field, GPU vs CPU.  ρ = β/α is compared through the angle
 * atan(ρ) to the reference (absolute, in radians): β and α each carry an
 * absolute error ~ε‖w‖, so ρ itself is ill-conditioned where α crosses 0
 * (relative error ε·|ρ|) and where ρ is tiny (ε/ρ), while the angle is not.
 * Every other field: norm-wise per trajectory (rows_rel). */
static double field_err(const char *name, const double *a, const double *b, int64_t S, int64_t R)
{
    if (strcmp(name, "rho") != 0 && strcmp(name, "rho_sigma") != 0) return rows_rel(a, b, S, R);
    double worst = 0;
    for (int64_t i = 0; i < S * R; i++) {
        if (isnan(a[i]) && isnan(b[i])) continue;
        double e = fabs(atan(a[i]) - atan(b[i]));
        if (isnan(e)) return INFINITY;
        worst = fmax(worst, e);
    }
    return worst;
}

static int same_bits(const double *a, const double *b, int64_t len)
{
    for (int64_t i = 0; i < len; i++)
        if (!(a[i] == b[i] || (isnan(a[i]) && isnan(b[i])))) return 0;
    return 1;
}

/* ------------------------------------------------------------------ basics */

Test(cuda, describe_and_open)
{
    REQUIRE_GPU();
    char buf[4096];
    cr_assert_eq(bn_backends_describe(buf, sizeof buf), BN_OK);
    cr_log_info("%s", buf);
    cr_expect(strstr(buf, "device 0") != NULL, "describe does not list device 0:\n%s", buf);
    for (int p = 0; p < 2; p++) {
        bn_backend *be = NULL;
        bn_status st = bn_backend_open(BN_BACKEND_CUDA, p ? BN_FP32 : BN_FP64, 0, 0, &be);
        cr_assert_eq(st, BN_OK, "open: %s", bn_last_error());
        cr_expect_eq(be->kind, BN_BACKEND_CUDA);
        cr_expect_eq(be->precision, p ? BN_FP32 : BN_FP64);
        cr_expect_eq(be->threads, 1);
        cr_expect_eq(be->device, 0);
        cr_expect(strstr(be->desc, "cuda device 0") != NULL, "desc: %s", be->desc);
        cr_log_info("backend: %s", be->desc);
        bn_backend_close(be);
    }
    bn_backend *be = NULL;
    bn_status st = bn_backend_open(BN_BACKEND_CUDA, BN_FP64, 0, gpu_count(), &be);
    cr_expect_eq(st, BN_ERR_ARG, "opening device %d (one past the last) gave %s", gpu_count(), bn_status_name(st));
    cr_expect(strstr(bn_last_error(), "does not exist") != NULL, "message: %s", bn_last_error());
}

/* The primitive ops one by one (no graphs), against the CPU, at lengths that
 * use each column-kernel shape (warp: ≤512, block of 256: ≤8192, block of 512). */
Test(cuda, primitives_match_cpu)
{
    REQUIRE_GPU();
    const int64_t shapes[][3] = {{50, 30, 5}, {1000, 600, 3}, {9000, 20, 2}, {7, 9000, 3}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        for (int lg = 0; lg <= 1; lg++)
            for (int pr = 0; pr <= 1; pr++) {
                int64_t n = shapes[k][0], d = shapes[k][1], S = shapes[k][2];
                ts_problem p;
                ts_problem_make(&p, n, d, lg, 100 + k);
                double *W = malloc((size_t)(S * d) * sizeof(double)), *gam = malloc((size_t)S * sizeof(double));
                for (int64_t j = 0; j < S; j++) {
                    for (int64_t i = 0; i < d; i++) W[j * d + i] = p.w[i] * (1.0 + 0.1 * (double)j) + 0.01 * (double)((i + j) % 5);
                    gam[j] = 0.3 + 0.2 * (double)j;
                }
                double *Gc = malloc((size_t)(S * d) * sizeof(double)), *Gg = malloc((size_t)(S * d) * sizeof(double));
                double *sc = malloc((size_t)(BN_ST_COUNT * S) * sizeof(double));
                double *sg = malloc((size_t)(BN_ST_COUNT * S) * sizeof(double));
                bn_precision prec = pr ? BN_FP32 : BN_FP64;
                cr_assert_eq(ts_backend_gradient(BN_BACKEND_CPU, BN_FP64, &p, lg, S, W, gam, Gc, sc), BN_OK, "%s", bn_last_error());
                cr_assert_eq(ts_backend_gradient(BN_BACKEND_CUDA, prec, &p, lg, S, W, gam, Gg, sg), BN_OK, "%s", bn_last_error());
                double tol = pr ? 2e-3 : 1e-11;
                double eg = ts_rel_err(Gg, Gc, S * d);
                cr_expect_leq(eg, tol, "n=%lld d=%lld S=%lld %s %s: gradient rel err %.3e", (long long)n, (long long)d,
                              (long long)S, lg ? "logistic" : "square", pr ? "fp32" : "fp64", eg);
                /* α, β and their Σ versions are zero here (no reference): compare the rest. */
                const int fields[] = {BN_ST_LOSS, BN_ST_GAMMA, BN_ST_SNORM, BN_ST_GGAMMA, BN_ST_WNORM, BN_ST_GNORM};
                for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++) {
                    double e = ts_rel_err(sg + fields[f] * S, sc + fields[f] * S, S);
                    cr_expect_leq(e, tol, "n=%lld d=%lld %s %s: stats field %d rel err %.3e", (long long)n, (long long)d,
                                  lg ? "logistic" : "square", pr ? "fp32" : "fp64", fields[f], e);
                }
                free(W);
                free(gam);
                free(Gc);
                free(Gg);
                free(sc);
                free(sg);
                ts_problem_free(&p);
            }
}

/* ------------------------------------------- (a) fp64 GPU = fp64 CPU */

static void compare_loss_gamma_rho(const bn_sim *gpu, const bn_sim *cpu, int64_t upto, double tol, const char *what)
{
    int64_t S = bn_sim_seeds(cpu), R = bn_sim_records(cpu);
    const char *names[3] = {"loss", "gamma", "rho"};
    for (int i = 0; i < 3; i++) {
        int64_t j = -1, t = -1;
        double e = elem_rel(field(gpu, names[i]), field(cpu, names[i]), S, R, upto, i == 2 ? 1e-5 : 1e-300, &j, &t);
        cr_log_info("%s: %s worst rel err %.3e (trajectory %lld, record %lld)", what, names[i], e, (long long)j, (long long)t);
        cr_expect_leq(e, tol, "%s: %s GPU vs CPU rel err %.3e at trajectory %lld record %lld (gpu %.17g, cpu %.17g)",
                      what, names[i], e, (long long)j, (long long)t, j >= 0 ? field(gpu, names[i])[j * R + t] : 0.0,
                      j >= 0 ? field(cpu, names[i])[j * R + t] : 0.0);
    }
}

/* A calm run (small η_w, w0 leaning on the reference so α > 0: ρ decays
 * slowly from ~3.4 to ~8e-4 and never rises):
 * 1500 steps, which also crosses the driver's 1024-step block boundary. */
Test(cuda, fp64_matches_cpu_calm_1500_steps)
{
    REQUIRE_GPU();
    bn_dataset *ds = dataset(DEMO_SPEC, BN_LOSS_SQUARE);
    bn_run_config c;
    demo_config(&c, BN_BACKEND_CPU);
    c.eta_w = 0.002;
    c.w0_align = 3.0;
    c.w0_noise = 1.0;
    c.seeds = 4;
    c.steps = 1500;
    bn_sim *cpu = run_sim(ds, &c);
    long long g0, p0, f0, g1, p1, f1;
    counters(&g0, &p0, &f0);
    c.backend = BN_BACKEND_CUDA;
    bn_sim *gpu = run_sim(ds, &c);
    counters(&g1, &p1, &f1);
    cr_log_info("gpu: %s; steps via graphs %lld, plain %lld, fused %lld", bn_sim_backend_desc(gpu), g1 - g0, p1 - p0, f1 - f0);
    cr_expect_eq(bn_sim_backend(gpu), BN_BACKEND_CUDA);
    cr_expect_eq(g1 - g0, 1501, "expected all 1501 steps to run through CUDA graphs (graphs %lld, plain %lld)", g1 - g0, p1 - p0);
    compare_loss_gamma_rho(gpu, cpu, c.steps, 1e-10, "calm 1500 steps");
    /* No rising edge in this run: the comparison is before any edge. */
    const double *rho = field(cpu, "rho");
    int64_t R = bn_sim_records(cpu);
    for (int64_t j = 0; j < c.seeds; j++)
        for (int64_t t = 0; t + 1 < R; t++)
            cr_assert(fabs(rho[j * R + t + 1]) <= fabs(rho[j * R + t]), "the calm run has a rising edge at step %lld", (long long)t);
    for (int f = 0; f < bn_sim_n_fields(); f++) {
        const char *name = bn_sim_field_name(f);
        double e = field_err(name, field(gpu, name), field(cpu, name), c.seeds, R);
        cr_expect_leq(e, 1e-10, "calm run: field %s rel err %.3e", name, e);
    }
    const int64_t *dg = bn_sim_diverged_step(gpu);
    for (int64_t j = 0; j < c.seeds; j++) cr_expect_eq(dg[j], -1);
    bn_sim_free(cpu);
    bn_sim_free(gpu);
    bn_dataset_free(ds);
}

/* MODEL.md's spiking example: steps 0..10 only (ρ falls to ~1e-7 by then and
 * the edge starts near step 15). */
Test(cuda, fp64_matches_cpu_before_the_edge)
{
    REQUIRE_GPU();
    bn_dataset *ds = dataset(DEMO_SPEC, BN_LOSS_SQUARE);
    bn_run_config c;
    demo_config(&c, BN_BACKEND_CPU);
    c.seeds = 4;
    c.steps = 10;
    bn_sim *cpu = run_sim(ds, &c);
    c.backend = BN_BACKEND_CUDA;
    bn_sim *gpu = run_sim(ds, &c);
    compare_loss_gamma_rho(gpu, cpu, 10, 1e-10, "spiking example, steps 0..10");
    bn_sim_free(cpu);
    bn_sim_free(gpu);
    bn_dataset_free(ds);
}

Test(cuda, spike_onset_matches_cpu)
{
    REQUIRE_GPU();
    bn_dataset *ds = dataset(DEMO_SPEC, BN_LOSS_SQUARE);
    bn_run_config c;
    demo_config(&c, BN_BACKEND_CPU);
    c.seeds = 4;
    c.steps = 200;
    bn_sim *cpu = run_sim(ds, &c);
    c.backend = BN_BACKEND_CUDA;
    bn_sim *gpu = run_sim(ds, &c);
    int64_t R = bn_sim_records(cpu);
    for (int64_t j = 0; j < c.seeds; j++) {
        bn_spike a, b;
        cr_assert_eq(bn_find_first_spike(field(cpu, "rho") + j * R, field(cpu, "loss") + j * R,
                                         field(cpu, "w_norm") + j * R, R, BN_SPIKE_MIN_RISE, &a), BN_OK);
        cr_assert_eq(bn_find_first_spike(field(gpu, "rho") + j * R, field(gpu, "loss") + j * R,
                                         field(gpu, "w_norm") + j * R, R, BN_SPIKE_MIN_RISE, &b), BN_OK);
        cr_log_info("trajectory %lld: onset cpu %lld gpu %lld, peak cpu %lld gpu %lld, rho_peak cpu %.6g gpu %.6g",
                    (long long)j, (long long)a.onset, (long long)b.onset, (long long)a.peak, (long long)b.peak,
                    a.rho_peak, b.rho_peak);
        cr_expect(a.found && b.found, "trajectory %lld: spike found cpu %d gpu %d", (long long)j, a.found, b.found);
        cr_expect_eq(b.onset, a.onset, "trajectory %lld: spike onset GPU %lld vs CPU %lld", (long long)j,
                     (long long)b.onset, (long long)a.onset);
        cr_expect(llabs((long long)(b.peak - a.peak)) <= 1, "trajectory %lld: peak GPU %lld vs CPU %lld",
                  (long long)j, (long long)b.peak, (long long)a.peak);
    }
    bn_sim_free(cpu);
    bn_sim_free(gpu);
    bn_dataset_free(ds);
}

/* ------------------------------------------- (b) fp32 GPU vs fp64 CPU */

Test(cuda, fp32_tracks_fp64_cpu_before_the_edge)
{
    REQUIRE_GPU();
    bn_dataset *ds = dataset(DEMO_SPEC, BN_LOSS_SQUARE);
    bn_run_config c;
    demo_config(&c, BN_BACKEND_CPU);
    c.seeds = 4;
    c.steps = 10;
    bn_sim *s64 = run_sim(ds, &c);
    c.backend = BN_BACKEND_CUDA;
    c.precision = BN_FP32;
    bn_sim *s32 = run_sim(ds, &c);
    int64_t S = c.seeds, R = bn_sim_records(s64);
    const char *names[] = {"loss", "gamma", "w_norm", "eta_eff"};
    for (int i = 0; i < 4; i++) {
        double e = elem_rel(field(s32, names[i]), field(s64, names[i]), S, R, R - 1, 1e-300, NULL, NULL);
        cr_log_info("fp32 GPU vs fp64 CPU: %s rel err %.3e", names[i], e);
        cr_expect_leq(e, 1e-5, "%s fp32 GPU vs fp64 CPU rel err %.3e", names[i], e);
    }
    /* ρ: fp32 resolves it to ~6e-8·‖w‖/α; over steps 0..5 ρ ≥ 1e-2, so 1e-3. */
    double e = elem_rel(field(s32, "rho"), field(s64, "rho"), S, R, 5, 1e-300, NULL, NULL);
    cr_log_info("fp32 GPU vs fp64 CPU: rho (steps 0..5) rel err %.3e", e);
    cr_expect_leq(e, 1e-3, "rho fp32 GPU vs fp64 CPU rel err %.3e over steps 0..5", e);
    bn_sim_free(s64);
    bn_sim_free(s32);
    bn_dataset_free(ds);
}

/* ------------------------------------------- (c) batch independence */

/* Seed s inside a batch of 300 vs seed s alone, both on the GPU, from the
 * bitwise same start (the alone runs take the batch's w0 row: the driver's
 * row-space projection is itself a BLAS product whose rounding may depend on
 * S).  Not expected bitwise: the column kernels sum a column in an order
 * fixed by n and d only, but the products are not — S=1 runs cuBLAS gemv,
 * S=300 a GEMM whose kernel (tiling, split over k) cuBLAS picks by shape.
 * So ≤1e-12 on a calm (contracting) run, where rounding differences do not
 * grow.  Within one shape the results are bitwise reproducible: graphs vs
 * plain launches must agree exactly. */
Test(cuda, batch_seed_equals_alone)
{
    REQUIRE_GPU();
    bn_dataset *ds = dataset(DEMO_SPEC, BN_LOSS_SQUARE);
    bn_run_config c;
    demo_config(&c, BN_BACKEND_CUDA);
    c.eta_w = 0.002;
    c.w0_align = 3.0;
    c.w0_noise = 1.0;
    c.steps = 300;
    c.seeds = 300;
    bn_sim *batch = run_sim(ds, &c);
    int64_t R = bn_sim_records(batch), d = bn_sim_dim(batch);
    const int64_t picks[3] = {5, 150, 299};
    int bitwise_all = 1;
    double worst_all = 0;
    for (int k = 0; k < 3; k++) {
        bn_run_config c1 = c;
        c1.seeds = 1;
        c1.w0 = bn_sim_w0(batch) + picks[k] * d;
        c1.w0_rows = 1;
        c1.project_w0 = 0;
        bn_sim *alone = run_sim(ds, &c1);
        for (int f = 0; f < bn_sim_n_fields(); f++) {
            const char *name = bn_sim_field_name(f);
            const double *a = field(alone, name), *b = field(batch, name) + picks[k] * R;
            bitwise_all &= same_bits(a, b, R);
            double e = field_err(name, a, b, 1, R);
            worst_all = fmax(worst_all, e);
            cr_expect_leq(e, 1e-12, "seed %lld: %s alone vs in a batch of 300: rel err %.3e", (long long)picks[k], name, e);
        }
        const double *wa = bn_sim_w_final(alone), *wb = bn_sim_w_final(batch) + picks[k] * d;
        double ew = series_rel(wa, wb, d);
        bitwise_all &= same_bits(wa, wb, d);
        cr_expect_leq(ew, 1e-12, "seed %lld: w_final alone vs in batch rel err %.3e", (long long)picks[k], ew);
        bn_sim_free(alone);
    }
    cr_log_info("seed alone vs in batch of 300: worst rel err %.3e, %s", worst_all,
                bitwise_all ? "bitwise equal" : "not bitwise equal (expected on a GPU: gemv vs GEMM)");

    /* Same shape, plain launches instead of graphs: bitwise equal. */
    setenv("BN_CUDA_GRAPHS", "0", 1);
    long long g0, p0, f0, g1, p1, f1;
    counters(&g0, &p0, &f0);
    bn_sim *plain = run_sim(ds, &c);
    counters(&g1, &p1, &f1);
    unsetenv("BN_CUDA_GRAPHS");
    cr_expect_eq(p1 - p0, c.steps + 1, "BN_CUDA_GRAPHS=0 should run every step with plain launches (plain %lld, graphs %lld)",
                 p1 - p0, g1 - g0);
    for (int f = 0; f < bn_sim_n_fields(); f++) {
        const char *name = bn_sim_field_name(f);
        cr_expect(same_bits(field(plain, name), field(batch, name), c.seeds * R),
                  "%s: graphs vs plain launches differ (rel err %.3e)", name,
                  field_err(name, field(plain, name), field(batch, name), c.seeds, R));
    }
    cr_expect(same_bits(bn_sim_w_final(plain), bn_sim_w_final(batch), c.seeds * d), "w_final: graphs vs plain launches differ");
    bn_sim_free(plain);
    bn_sim_free(batch);
    bn_dataset_free(ds);
}

/* ------------------------------------------- (d) divergence isolation */

Test(cuda, divergence_is_isolated)
{
    REQUIRE_GPU();
    bn_dataset *ds = dataset(DEMO_SPEC, BN_LOSS_SQUARE);
    bn_run_config c;
    demo_config(&c, BN_BACKEND_CUDA);
    c.steps = 1500;
    c.seeds = 3;
    double eg_mixed[3] = {0.05, 50.0, 0.05}; /* |1 - η_γ| = 49: γ overflows in ~200 steps */
    double eg_clean[3] = {0.05, 0.05, 0.05};
    c.eta_gamma_per = eg_mixed;
    bn_sim *mixed = run_sim(ds, &c);
    c.eta_gamma_per = eg_clean;
    bn_sim *clean = run_sim(ds, &c);
    c.eta_gamma_per = eg_mixed;
    c.backend = BN_BACKEND_CPU;
    bn_sim *cpu = run_sim(ds, &c);
    const int64_t *div = bn_sim_diverged_step(mixed), *dcpu = bn_sim_diverged_step(cpu);
    cr_log_info("diverged_step GPU {%lld, %lld, %lld}, CPU {%lld, %lld, %lld}", (long long)div[0], (long long)div[1],
                (long long)div[2], (long long)dcpu[0], (long long)dcpu[1], (long long)dcpu[2]);
    cr_expect_eq(div[0], -1);
    cr_expect_eq(div[2], -1);
    cr_expect(div[1] > 0 && div[1] < 1500, "trajectory 1 should diverge (step %lld)", (long long)div[1]);
    cr_expect_eq(div[1], dcpu[1], "divergence step GPU %lld vs CPU %lld", (long long)div[1], (long long)dcpu[1]);
    int64_t R = bn_sim_records(mixed);
    cr_expect(!isfinite(field(mixed, "loss")[R + R - 1]), "the diverged trajectory should end non-finite");
    /* The two finite trajectories equal those of the run without the diverging one, bitwise
     * (same shape S=3, so the same cuBLAS kernels; columns never mix). */
    for (int f = 0; f < bn_sim_n_fields(); f++) {
        const char *name = bn_sim_field_name(f);
        const double *a = field(mixed, name), *b = field(clean, name);
        for (int j = 0; j <= 2; j += 2)
            cr_expect(same_bits(a + j * R, b + j * R, R), "%s of trajectory %d changed next to a diverging one (rel err %.3e)",
                      name, j, rows_rel(a + j * R, b + j * R, 1, R));
    }
    bn_sim_free(mixed);
    bn_sim_free(clean);
    bn_sim_free(cpu);
    bn_dataset_free(ds);
}

/* ------------------------------------------- (e) every field, odd S */

static void all_fields_match(const char *spec, bn_loss loss, double eta_w, int64_t S, int64_t steps, int64_t every,
                             double tol)
{
    bn_dataset *ds = dataset(spec, loss);
    bn_run_config c;
    demo_config(&c, BN_BACKEND_CPU);
    c.loss = loss;
    c.eta_w = eta_w;
    c.w0_align = 0;
    c.w0_noise = 1;
    c.seeds = S;
    c.steps = steps;
    c.every = every;
    bn_sim *cpu = run_sim(ds, &c);
    c.backend = BN_BACKEND_CUDA;
    bn_sim *gpu = run_sim(ds, &c);
    int64_t R = bn_sim_records(cpu), d = bn_sim_dim(cpu);
    cr_assert_eq(bn_sim_records(gpu), R);
    for (int f = 0; f < bn_sim_n_fields(); f++) {
        const char *name = bn_sim_field_name(f);
        double e = field_err(name, field(gpu, name), field(cpu, name), S, R);
        cr_log_info("%s: %s GPU vs CPU rel err %.3e", spec, name, e);
        cr_expect_leq(e, tol, "%s S=%lld: field %s GPU vs CPU rel err %.3e", spec, (long long)S, name, e);
    }
    double ew = rows_rel(bn_sim_w_final(gpu), bn_sim_w_final(cpu), S, d);
    double eg = series_rel(bn_sim_gamma_final(gpu), bn_sim_gamma_final(cpu), S);
    cr_expect_leq(ew, tol, "%s: w_final rel err %.3e", spec, ew);
    cr_expect_leq(eg, tol, "%s: gamma_final rel err %.3e", spec, eg);
    for (int64_t j = 0; j < S; j++) cr_expect_eq(bn_sim_diverged_step(gpu)[j], -1);
    bn_sim_free(cpu);
    bn_sim_free(gpu);
    bn_dataset_free(ds);
}

/* The paper-size Hilbert data, S=33 (not a multiple of the 8 columns a block
 * of the column kernels takes), records every 3rd step plus the last.
 * η_w = 0.1: at 0.9 this data amplifies a 1e-15 perturbation of w0 to 1e-8
 * within 50 steps (and at 0.3, one of the 33 starts to 7e-10), which no
 * tolerance on rounding differences can absorb. */
Test(cuda, hilbert_all_fields_match_cpu)
{
    REQUIRE_GPU();
    all_fields_match(HILBERT_SPEC, BN_LOSS_SQUARE, 0.1, 33, 50, 3, 1e-10);
}

Test(cuda, logistic_all_fields_match_cpu)
{
    REQUIRE_GPU();
    all_fields_match("gaussian:n=80,d=30,seed=4", BN_LOSS_LOGISTIC, 0.5, 33, 100, 1, 1e-10);
}

/* ------------------------------------------- run_steps windows and ring */

typedef struct {
    int64_t n, d, S, T, K;
    double *xc_cm, *y, *uhat, *ehat, *eta_w, *eta_g, *gamma0, *W0; /* host, fp64 */
} win_problem;

static void win_make(win_problem *w, int64_t n, int64_t d, int64_t S, int64_t T, int64_t K, uint64_t seed)
{
    ts_problem p;
    ts_problem_make(&p, n, d, 0, seed);
    w->n = n, w->d = d, w->S = S, w->T = T, w->K = K;
    w->xc_cm = malloc((size_t)(n * d) * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < d; k++) w->xc_cm[i + k * n] = p.xc[i * d + k];
    w->y = malloc((size_t)n * sizeof(double));
    memcpy(w->y, p.y, (size_t)n * sizeof(double));
    w->ehat = malloc((size_t)d * sizeof(double));
    double en = 0;
    for (int64_t k = 0; k < d; k++) en += p.w[k] * p.w[k];
    for (int64_t k = 0; k < d; k++) w->ehat[k] = p.w[k] / sqrt(en);
    w->uhat = calloc((size_t)n, sizeof(double));
    double un = 0;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t k = 0; k < d; k++) w->uhat[i] += p.xc[i * d + k] * w->ehat[k];
        un += w->uhat[i] * w->uhat[i];
    }
    for (int64_t i = 0; i < n; i++) w->uhat[i] /= sqrt(un);
    w->eta_w = malloc((size_t)S * sizeof(double));
    w->eta_g = malloc((size_t)S * sizeof(double));
    w->gamma0 = malloc((size_t)S * sizeof(double));
    w->W0 = malloc((size_t)(S * d) * sizeof(double));
    for (int64_t j = 0; j < S; j++) {
        w->eta_w[j] = 0.05 * (double)(1 + j % 4);
        w->eta_g[j] = 0.05;
        w->gamma0[j] = 0.4 + 0.1 * (double)j;
        for (int64_t k = 0; k < d; k++) w->W0[j * d + k] = p.w[k] + 0.3 * sin((double)(k * 7 + j * 3));
    }
    ts_problem_free(&p);
}

static void win_free(win_problem *w)
{
    free(w->xc_cm), free(w->y), free(w->uhat), free(w->ehat), free(w->eta_w), free(w->eta_g), free(w->gamma0),
        free(w->W0);
}

static void up(bn_backend *be, void *dst, const double *src, int64_t count)
{
    bn_status st;
    if (be->precision == BN_FP64) st = be->ops->upload(be, dst, src, (size_t)count * sizeof(double));
    else {
        float *t = malloc((size_t)count * sizeof(float) + 1);
        for (int64_t i = 0; i < count; i++) t[i] = (float)src[i];
        st = be->ops->upload(be, dst, t, (size_t)count * sizeof(float));
        free(t);
    }
    cr_assert_eq(st, BN_OK, "upload: %s", bn_last_error());
}

static void down(bn_backend *be, double *dst, const void *src, int64_t count)
{
    bn_status st;
    if (be->precision == BN_FP64) st = be->ops->download(be, dst, src, (size_t)count * sizeof(double));
    else {
        float *t = malloc((size_t)count * sizeof(float) + 1);
        st = be->ops->download(be, t, src, (size_t)count * sizeof(float));
        for (int64_t i = 0; i < count; i++) dst[i] = t[i];
        free(t);
    }
    cr_assert_eq(st, BN_OK, "download: %s", bn_last_error());
}

static void *dalloc(bn_backend *be, int64_t count, size_t elem)
{
    void *p = NULL;
    cr_assert_eq(be->ops->alloc(be, (size_t)count * elem, &p), BN_OK, "alloc: %s", bn_last_error());
    return p;
}

/* Runs the problem the way sim.c does (windows bounded by the ring and by
 * max_steps), through run_steps when the backend has one, else the generic
 * loop.  records: R × BN_ST_COUNT × S; Wout: S×d; div: S. */
static void win_drive(bn_backend_kind kind, const win_problem *w, int64_t ring_slots, int64_t max_steps,
                      double *records, double *Wout, int64_t *div)
{
    bn_backend *be = NULL;
    cr_assert_eq(bn_backend_open(kind, BN_FP64, 1, 0, &be), BN_OK, "%s", bn_last_error());
    size_t rs = sizeof(double);
    int64_t n = w->n, d = w->d, S = w->S, T = w->T, K = w->K, blk = BN_ST_COUNT * S;
    bn_step_plan p;
    memset(&p, 0, sizeof p);
    p.n = n, p.d = d, p.S = S, p.logistic = 0;
    p.Xc = dalloc(be, n * d, rs);
    p.y = dalloc(be, n, rs);
    p.uhat = dalloc(be, n, rs);
    p.ehat = dalloc(be, d, rs);
    p.eta_w = dalloc(be, S, rs);
    p.eta_gamma = dalloc(be, S, rs);
    p.W = dalloc(be, d * S, rs);
    p.gamma = dalloc(be, S, rs);
    p.U = dalloc(be, n * S, rs);
    p.Q = dalloc(be, n * S, rs);
    p.G = dalloc(be, d * S, rs);
    p.stats_ring = dalloc(be, blk * ring_slots, rs);
    p.ring_slots = ring_slots;
    p.stats_scratch = dalloc(be, blk, rs);
    p.diverged_step = dalloc(be, S, sizeof(int64_t));
    p.steps = T, p.every = K;
    up(be, (void *)p.Xc, w->xc_cm, n * d);
    up(be, (void *)p.y, w->y, n);
    up(be, (void *)p.uhat, w->uhat, n);
    up(be, (void *)p.ehat, w->ehat, d);
    up(be, (void *)p.eta_w, w->eta_w, S);
    up(be, (void *)p.eta_gamma, w->eta_g, S);
    up(be, p.W, w->W0, d * S);
    up(be, p.gamma, w->gamma0, S);
    int64_t *neg = malloc((size_t)S * sizeof(int64_t));
    for (int64_t j = 0; j < S; j++) neg[j] = -1;
    cr_assert_eq(be->ops->upload(be, p.diverged_step, neg, (size_t)S * sizeof(int64_t)), BN_OK);
    free(neg);
    int64_t t0 = 0;
    while (t0 <= T) {
        int64_t slot0 = -1;
        for (int64_t t = t0; t <= T && slot0 < 0; t++) slot0 = bn_record_slot(t, T, K);
        int64_t used = 0, t1 = t0;
        while (t1 <= T && t1 - t0 < max_steps) {
            int64_t add = bn_record_slot(t1, T, K) >= 0;
            if (used + add > ring_slots) break;
            used += add;
            t1++;
        }
        bn_status st = be->ops->run_steps ? be->ops->run_steps(be, &p, t0, t1, slot0)
                                          : bn_run_steps_generic(be, &p, t0, t1, slot0);
        cr_assert_eq(st, BN_OK, "run_steps %lld..%lld: %s", (long long)t0, (long long)t1, bn_last_error());
        if (used) down(be, records + slot0 * blk, p.stats_ring, used * blk);
        t0 = t1;
    }
    down(be, Wout, p.W, d * S);
    cr_assert_eq(be->ops->download(be, div, p.diverged_step, (size_t)S * sizeof(int64_t)), BN_OK);
    void *bufs[] = {(void *)p.Xc, (void *)p.y, (void *)p.uhat, (void *)p.ehat, (void *)p.eta_w, (void *)p.eta_gamma,
                    p.W, p.gamma, p.U, p.Q, p.G, p.stats_ring, p.stats_scratch, p.diverged_step};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->ops->dealloc(be, bufs[i]);
    bn_backend_close(be);
}

/* Small rings (slot0 > 0, windows of 1..K records), windows shorter and longer
 * than the graph unroll (16 steps), odd record schedules. */
Test(cuda, run_steps_windows_and_ring)
{
    REQUIRE_GPU();
    const int64_t cases[][4] = {
        /* T, K, ring_slots, max_steps */
        {37, 4, 2, 1024}, {37, 4, 6, 1024}, {37, 1, 40, 17}, {50, 3, 3, 5}, {64, 7, 100, 1024}, {33, 33, 1, 1024},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        win_problem w;
        win_make(&w, 40, 30, 7, cases[k][0], cases[k][1], 77 + k);
        int64_t R = bn_record_count(w.T, w.K), blk = BN_ST_COUNT * w.S;
        double *rc = calloc((size_t)(R * blk), sizeof(double)), *rg = calloc((size_t)(R * blk), sizeof(double));
        double *Wc = malloc((size_t)(w.S * w.d) * sizeof(double)), *Wg = malloc((size_t)(w.S * w.d) * sizeof(double));
        int64_t *dc = malloc((size_t)w.S * sizeof(int64_t)), *dg = malloc((size_t)w.S * sizeof(int64_t));
        for (int64_t i = 0; i < R * blk; i++) rg[i] = NAN; /* a record never written stays NaN */
        win_drive(BN_BACKEND_CPU, &w, cases[k][2], cases[k][3], rc, Wc, dc);
        win_drive(BN_BACKEND_CUDA, &w, cases[k][2], cases[k][3], rg, Wg, dg);
        double worst = 0;
        for (int64_t r = 0; r < R; r++)
            for (int f = 0; f < BN_ST_COUNT; f++)
                worst = fmax(worst, ts_rel_err(rg + r * blk + f * w.S, rc + r * blk + f * w.S, w.S));
        cr_expect_leq(worst, 1e-11, "case %zu (T=%lld K=%lld ring %lld max %lld): records rel err %.3e", k,
                      (long long)w.T, (long long)w.K, (long long)cases[k][2], (long long)cases[k][3], worst);
        double ew = ts_rel_err(Wg, Wc, w.S * w.d);
        cr_expect_leq(ew, 1e-11, "case %zu: final W rel err %.3e", k, ew);
        for (int64_t j = 0; j < w.S; j++) cr_expect_eq(dg[j], dc[j], "case %zu: diverged_step[%lld]", k, (long long)j);
        free(rc), free(rg), free(Wc), free(Wg), free(dc), free(dg);
        win_free(&w);
    }
}

/* ------------------------------------------- (f) fused small-problem path */

static bn_sim *run_path(const bn_dataset *ds, const bn_run_config *c, int fused, long long *fused_steps)
{
    long long g0, p0, f0, g1, p1, f1;
    setenv("BN_CUDA_FUSED", fused ? "1" : "0", 1);
    counters(&g0, &p0, &f0);
    bn_sim *s = run_sim(ds, c);
    counters(&g1, &p1, &f1);
    unsetenv("BN_CUDA_FUSED");
    *fused_steps = f1 - f0;
    return s;
}

static void fused_vs_cublas(const char *spec, bn_loss loss, bn_precision prec, double eta_w, int64_t S,
                            int64_t steps, int64_t every, const double *eg_per, double tol)
{
    bn_dataset *ds = dataset(spec, loss);
    bn_run_config c;
    demo_config(&c, BN_BACKEND_CUDA);
    c.loss = loss;
    c.precision = prec;
    c.eta_w = eta_w;
    c.w0_align = 0;
    c.w0_noise = 1;
    c.seeds = S;
    c.steps = steps;
    c.every = every;
    c.eta_gamma_per = eg_per;
    long long fa, fb;
    bn_sim *a = run_path(ds, &c, 0, &fa);
    bn_sim *b = run_path(ds, &c, 1, &fb);
    cr_expect_eq(fa, 0, "%s: fused path ran %lld steps with BN_CUDA_FUSED=0", spec, fa);
    cr_expect_eq(fb, steps + 1, "%s: fused path ran %lld of %lld steps with BN_CUDA_FUSED=1", spec, fb, (long long)steps + 1);
    int64_t R = bn_sim_records(a), d = bn_sim_dim(a);
    for (int f = 0; f < bn_sim_n_fields(); f++) {
        const char *name = bn_sim_field_name(f);
        double e = field_err(name, field(b, name), field(a, name), S, R);
        cr_log_info("%s %s: %s fused vs cuBLAS path rel err %.3e", spec, bn_precision_name(prec), name, e);
        cr_expect_leq(e, tol, "%s %s: %s fused vs cuBLAS path rel err %.3e", spec, bn_precision_name(prec), name, e);
    }
    double ew = rows_rel(bn_sim_w_final(b), bn_sim_w_final(a), S, d);
    cr_expect_leq(ew, tol, "%s: w_final fused vs cuBLAS rel err %.3e", spec, ew);
    double eg = series_rel(bn_sim_gamma_final(b), bn_sim_gamma_final(a), S);
    cr_expect_leq(eg, tol, "%s: gamma_final fused vs cuBLAS rel err %.3e", spec, eg);
    for (int64_t j = 0; j < S; j++)
        cr_expect_eq(bn_sim_diverged_step(b)[j], bn_sim_diverged_step(a)[j], "%s: diverged_step[%lld] fused %lld vs cuBLAS %lld",
                     spec, (long long)j, (long long)bn_sim_diverged_step(b)[j], (long long)bn_sim_diverged_step(a)[j]);
    bn_sim_free(a);
    bn_sim_free(b);
    bn_dataset_free(ds);
}

Test(cuda, fused_path_matches_cublas_path)
{
    REQUIRE_GPU();
    fused_vs_cublas(HILBERT_SPEC, BN_LOSS_SQUARE, BN_FP64, 0.1, 33, 100, 7, NULL, 1e-10);
    fused_vs_cublas(HILBERT_SPEC, BN_LOSS_SQUARE, BN_FP32, 0.1, 33, 20, 1, NULL, 1e-4);
    fused_vs_cublas("gaussian:n=80,d=30,seed=4", BN_LOSS_LOGISTIC, BN_FP64, 0.5, 17, 100, 1, NULL, 1e-10);
    /* n = 128 (4 rows per lane) and an odd d. */
    fused_vs_cublas("gaussian:n=128,d=77,seed=5", BN_LOSS_SQUARE, BN_FP64, 0.2, 70, 60, 5, NULL, 1e-10);
    /* A diverging column inside a tile: marked at the same step on both paths. */
    double eg[9] = {0.05, 0.05, 0.05, 50.0, 0.05, 0.05, 0.05, 0.05, 0.05};
    fused_vs_cublas("gaussian:n=60,d=40,seed=6", BN_LOSS_SQUARE, BN_FP64, 0.2, 9, 400, 10, eg, 1e-10);
    /* n = 400 does not fit the fused kernel: BN_CUDA_FUSED=1 must fall back. */
    bn_dataset *ds = dataset(DEMO_SPEC, BN_LOSS_SQUARE);
    bn_run_config c;
    demo_config(&c, BN_BACKEND_CUDA);
    c.steps = 20;
    long long f;
    bn_sim *s = run_path(ds, &c, 1, &f);
    cr_expect_eq(f, 0, "n=400 should not take the fused path (took %lld steps)", f);
    bn_sim_free(s);
    bn_dataset_free(ds);
}

/* ------------------------------------------- (g) allocation refusal */

Test(cuda, alloc_larger_than_free_is_refused)
{
    REQUIRE_GPU();
#ifdef BN_HAVE_CUDA
    bn_backend *be = NULL;
    cr_assert_eq(bn_backend_open(BN_BACKEND_CUDA, BN_FP64, 0, 0, &be), BN_OK, "%s", bn_last_error());
    bn_cuda_info info;
    cr_assert_eq(bn_cuda_device_info(0, &info), BN_OK, "%s", bn_last_error());
    size_t want = info.free_mem + ((size_t)1 << 30);
    void *p = (void *)&info;
    bn_status st = be->ops->alloc(be, want, &p);
    cr_log_info("refusal message: %s", bn_last_error());
    cr_expect_eq(st, BN_ERR_NOMEM, "allocating %zu bytes (free %zu) gave %s", want, info.free_mem, bn_status_name(st));
    cr_expect_null(p, "a refused allocation must leave *ptr NULL");
    char num[32];
    snprintf(num, sizeof num, "%zu", want);
    cr_expect(strstr(bn_last_error(), num) != NULL, "the message should give the bytes needed (%s): %s", num, bn_last_error());
    cr_expect(strstr(bn_last_error(), "free") != NULL, "the message should give the bytes free: %s", bn_last_error());
    st = be->ops->alloc(be, (size_t)-1 / 2, &p);
    cr_expect_eq(st, BN_ERR_NOMEM, "allocating SIZE_MAX/2 gave %s", bn_status_name(st));
    /* The backend still works afterwards. */
    double src[5] = {1, 2, 3, 4, 5}, dst[5] = {0};
    void *q = NULL;
    cr_assert_eq(be->ops->alloc(be, sizeof src, &q), BN_OK, "%s", bn_last_error());
    cr_assert_eq(be->ops->upload(be, q, src, sizeof src), BN_OK, "%s", bn_last_error());
    cr_assert_eq(be->ops->download(be, dst, q, sizeof dst), BN_OK, "%s", bn_last_error());
    cr_expect_eq(memcmp(src, dst, sizeof src), 0, "upload/download round trip");
    be->ops->dealloc(be, q);
    bn_backend_close(be);
#endif
}
