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

static void demo_config(bn_run_config *c, bn_backend_kind kind) { ts_demo_config(c, kind); }

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
    /* A diverging column runs away (γ grows ×49 a step) and amplifies each
     * path's rounding without bound: only its divergence step is compared. */
    const int64_t *da = bn_sim_diverged_step(a);
    for (int f = 0; f < bn_sim_n_fields(); f++) {
        const char *name = bn_sim_field_name(f);
        double e = 0;
        for (int64_t j = 0; j < S; j++)
            if (da[j] < 0) e = fmax(e, field_err(name, field(b, name) + j * R, field(a, name) + j * R, 1, R));
        cr_log_info("%s %s: %s fused vs cuBLAS path rel err %.3e", spec, bn_precision_name(prec), name, e);
        cr_expect_leq(e, tol, "%s %s: %s fused vs cuBLAS path rel err %.3e", spec, bn_precision_name(prec), name, e);
    }
    for (int64_t j = 0; j < S; j++) {
        if (da[j] >= 0) continue;
        double ew = rows_rel(bn_sim_w_final(b) + j * d, bn_sim_w_final(a) + j * d, 1, d);
        cr_expect_leq(ew, tol, "%s: w_final[%lld] fused vs cuBLAS rel err %.3e", spec, (long long)j, ew);
        double eg = series_rel(bn_sim_gamma_final(b) + j, bn_sim_gamma_final(a) + j, 1);
        cr_expect_leq(eg, tol, "%s: gamma_final[%lld] fused vs cuBLAS rel err %.3e", spec, (long long)j, eg);
    }
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

/* ------------------------------------------- (h) sharpness ops (issue 3) */

/* The four sharpness ops of backend.h (hvp_prepare_columns, hvp_columns,
 * power_update, lanczos_extend), CUDA against the CPU backend's op on
 * identical inputs: the same host values uploaded to both (rounded to float
 * on both for fp32), random columns, S = 1, 7, 33 at a warp-per-column
 * length and longer columns for the block kernels (256 and 512 threads).
 *
 * Tolerances:
 *  - fp64: 1e-12 relative.  Both backends evaluate the bn_hvp_math.h
 *    formulas; only the order of the sums (per-thread partial sums and an
 *    xor tree on the GPU, serial on the CPU) and FMA contraction differ: a
 *    sum of L terms then differs by ≲ L·ε·Σ|terms| (2e-12 for L = 9000 at
 *    worst, ~√L·ε in practice).  Vectors are compared norm-wise per column;
 *    the scalars that are dot products with unit basis vectors (Lanczos α
 *    and the removed coefficients) relative to ‖x‖, the bound of their size
 *    (they may be small by chance); hg (the γ-part of the HVP, a difference
 *    of terms that may cancel) relative to the size of its terms
 *    (hv_hg_scale); every other scalar relative to itself.
 *  - fp32 (GPU fp32 against CPU fp32): the same reasoning with ε = 6e-8:
 *    ~√L·ε ≈ 6e-6 at L = 9000, so 1e-4.
 *  - The pseudo-random start (lanczos_extend with x = NULL) is bitwise: its
 *    entries bn_hvp_random are integer hashing and exact conversions, and the
 *    op divides them by its own β: with the GPU's β, the GPU's vector must be
 *    exactly bn_hvp_random(seed + j, counter, i)·(1/β) (IEEE division and
 *    multiplication on both sides), which a single wrong bit of any entry
 *    breaks.
 *  - Untouched data (inactive columns, slots 0..k, the ctl fields an op does
 *    not write) must be bitwise what the CPU leaves there (the input). */

typedef struct {
    bn_backend *cpu, *gpu;
} hv_pair;

typedef struct {
    void *c, *g; /* the same buffer on the CPU and the GPU backend */
    int64_t count;
} hv_buf;

static hv_pair hv_open(bn_precision prec)
{
    hv_pair p;
    cr_assert_eq(bn_backend_open(BN_BACKEND_CPU, prec, 1, 0, &p.cpu), BN_OK, "%s", bn_last_error());
    cr_assert_eq(bn_backend_open(BN_BACKEND_CUDA, prec, 0, 0, &p.gpu), BN_OK, "%s", bn_last_error());
    return p;
}

static void hv_close(hv_pair *p)
{
    bn_backend_close(p->cpu);
    bn_backend_close(p->gpu);
}

/* Both buffers, holding host (NULL: zeros). */
static hv_buf hv_new(hv_pair *p, const double *host, int64_t count)
{
    size_t rs = bn_real_size(p->cpu->precision);
    hv_buf b = {dalloc(p->cpu, count, rs), dalloc(p->gpu, count, rs), count};
    if (host) {
        up(p->cpu, b.c, host, count);
        up(p->gpu, b.g, host, count);
    }
    return b;
}

static void hv_get(hv_pair *p, hv_buf b, double *hc, double *hg)
{
    down(p->cpu, hc, b.c, b.count);
    down(p->gpu, hg, b.g, b.count);
}

static void hv_free(hv_pair *p, hv_buf b)
{
    p->cpu->ops->dealloc(p->cpu, b.c);
    p->gpu->ops->dealloc(p->gpu, b.g);
}

/* Offset `elems` reals into a backend buffer. */
static void *hv_at(const bn_backend *be, void *base, int64_t elems)
{
    return (char *)base + (size_t)elems * bn_real_size(be->precision);
}

/* Deterministic inputs in [-1, 1). */
static double hv_rand(uint64_t key, int64_t i) { return bn_hvp_random(key, 0x77, i); }

static double *hv_vec(int64_t count, uint64_t key, double scale)
{
    double *v = malloc((size_t)(count ? count : 1) * sizeof(double));
    for (int64_t i = 0; i < count; i++) v[i] = scale * hv_rand(key, i);
    return v;
}

static double *hv_zeros(int64_t count) { return calloc((size_t)(count ? count : 1), sizeof(double)); }

/* Max over the columns with act[j] != 0 (act NULL: all) of the norm-wise
 * relative difference ‖a_j - b_j‖∞ / ‖b_j‖∞ (len entries per column). */
static double hv_cols_rel(const double *a, const double *b, int64_t len, int64_t S, const double *act)
{
    double worst = 0;
    for (int64_t j = 0; j < S; j++)
        if (!act || act[j] != 0) worst = fmax(worst, ts_rel_err(a + j * len, b + j * len, len));
    return worst;
}

/* Max over active columns of |a_j - b_j| / max(|b_j|, scale_j) (scale NULL: |b_j|). */
static double hv_scal_rel(const double *a, const double *b, int64_t S, const double *act, const double *scale)
{
    double worst = 0;
    for (int64_t j = 0; j < S; j++) {
        if (act && act[j] == 0) continue;
        double e = fabs(a[j] - b[j]) / fmax(fabs(b[j]), scale ? scale[j] : 1e-300);
        if (isnan(e)) e = isnan(a[j]) && isnan(b[j]) ? 0 : INFINITY;
        worst = fmax(worst, e);
    }
    return worst;
}

/* The size of the terms that make up hg = ag·(H·(aw·v, ag·δ))_γ in
 * bn_hvp_coeffs, with every sum and difference taken in absolute value: the
 * scale against which a different summation order changes hg (hg itself may
 * cancel to much less). */
static double hv_hg_scale(int64_t n, const double *u, const double *r, const double *h, const double *hs, int64_t S,
                          const double *ud, double delta, double aw, double ag)
{
    double puu = 0, pru = 0, phuu = 0;
    for (int64_t i = 0; i < n; i++) {
        puu += fabs(u[i] * ud[i]);
        pru += fabs(r[i] * ud[i]);
        phuu += fabs(h[i] * u[i] * ud[i]);
    }
    double rn = (double)n, s = fabs(hs[BN_HS_S * S]), g = fabs(hs[BN_HS_GAMMA * S]);
    double ur = fabs(hs[BN_HS_UR * S]), huu = fabs(hs[BN_HS_HUU * S]);
    aw = fabs(aw), ag = fabs(ag);
    double sdot = aw * puu / (rn * s);
    double A = ag * fabs(delta) / s + g * sdot / (s * s), B = g / s;
    return ag * ((A * huu + B * aw * phuu + aw * pru) / s + ur * sdot / (s * s));
}

/* Lengths (n or d) and batch sizes: a warp per column (≤ 512), a block of
 * 256 (≤ 8192) and a block of 512; S = 33 is not a multiple of the 8 columns
 * of a warp-kernel block. */
static const int64_t hv_shapes[][2] = {{40, 1}, {40, 7}, {40, 33}, {700, 1}, {700, 7}, {700, 33}, {9000, 3}};
#define HV_NSHAPES ((int)(sizeof hv_shapes / sizeof hv_shapes[0]))

static double hv_tol(bn_precision prec) { return prec == BN_FP32 ? 1e-4 : 1e-12; }

/* hvp_prepare_columns, then hvp_columns on the CPU's prepared state. */
static void hv_check_hvp(hv_pair *p, int logistic, int64_t n, int64_t S)
{
    const double tol = hv_tol(p->cpu->precision);
    const char *what = logistic ? "logistic" : "square";
    const char *pn = bn_precision_name(p->cpu->precision);
    int64_t nS = n * S;
    uint64_t key = 1000 * (uint64_t)n + (uint64_t)S + 17 * (uint64_t)logistic;
    double *U = hv_vec(nS, key, 2.0), *y = hv_vec(n, key + 1, 1.5), *gam = hv_vec(S, key + 2, 0.2);
    if (logistic)
        for (int64_t i = 0; i < n; i++) y[i] = y[i] >= 0 ? 1.0 : -1.0;
    for (int64_t j = 0; j < S; j++) gam[j] += 0.3 + 0.4 * (double)(j % 5);
    hv_buf bU = hv_new(p, U, nS), by = hv_new(p, y, n), bg = hv_new(p, gam, S);
    hv_buf bR = hv_new(p, NULL, nS), bH = hv_new(p, NULL, nS), bhs = hv_new(p, NULL, BN_HS_COUNT * S);
    cr_assert_eq(p->cpu->ops->hvp_prepare_columns(p->cpu, n, S, bU.c, by.c, bg.c, logistic, bR.c, bH.c, bhs.c), BN_OK,
                 "%s", bn_last_error());
    cr_assert_eq(p->gpu->ops->hvp_prepare_columns(p->gpu, n, S, bU.g, by.g, bg.g, logistic, bR.g, bH.g, bhs.g), BN_OK,
                 "%s", bn_last_error());
    double *Rc = hv_zeros(nS), *Rg = hv_zeros(nS), *Hc = hv_zeros(nS), *Hg = hv_zeros(nS);
    double *hsc = hv_zeros(BN_HS_COUNT * S), *hsg = hv_zeros(BN_HS_COUNT * S);
    hv_get(p, bR, Rc, Rg);
    hv_get(p, bH, Hc, Hg);
    hv_get(p, bhs, hsc, hsg);
    double eR = hv_cols_rel(Rg, Rc, n, S, NULL), eH = hv_cols_rel(Hg, Hc, n, S, NULL), ehs = 0;
    for (int f = 0; f < BN_HS_COUNT; f++) ehs = fmax(ehs, hv_scal_rel(hsg + f * S, hsc + f * S, S, NULL, NULL));
    cr_log_info("hvp_prepare_columns %s %s n=%lld S=%lld: R %.2e, H2 %.2e, hs %.2e", what, pn, (long long)n,
                (long long)S, eR, eH, ehs);
    cr_expect_leq(eR, tol, "hvp_prepare_columns %s %s n=%lld S=%lld: R rel err %.3e", what, pn, (long long)n, (long long)S, eR);
    cr_expect_leq(eH, tol, "hvp_prepare_columns %s %s n=%lld S=%lld: H2 rel err %.3e", what, pn, (long long)n, (long long)S, eH);
    cr_expect_leq(ehs, tol, "hvp_prepare_columns %s %s n=%lld S=%lld: hs rel err %.3e", what, pn, (long long)n, (long long)S, ehs);
    cr_expect(same_bits(hsg + BN_HS_GAMMA * S, hsc + BN_HS_GAMMA * S, S), "hs[GAMMA] is a copy of gamma");

    /* hvp_columns on the CPU's state (identical inputs), with and without the scalings. */
    hv_buf sR = hv_new(p, Rc, nS), sH = hv_new(p, Hc, nS), shs = hv_new(p, hsc, BN_HS_COUNT * S);
    double *Ud = hv_vec(nS, key + 3, 1.0), *vg = hv_vec(S, key + 4, 1.0), *aw = hv_vec(S, key + 5, 0.4);
    double *ag = hv_vec(S, key + 6, 0.4);
    for (int64_t j = 0; j < S; j++) aw[j] += 0.6, ag[j] += 0.6;
    hv_buf bUd = hv_new(p, Ud, nS), bvg = hv_new(p, vg, S), baw = hv_new(p, aw, S), bag = hv_new(p, ag, S);
    hv_buf bQ = hv_new(p, NULL, nS), bhg = hv_new(p, NULL, S);
    double *Qc = hv_zeros(nS), *Qg = hv_zeros(nS), *hgc = hv_zeros(S), *hgg = hv_zeros(S), *hgs = hv_zeros(S);
    for (int scaled = 0; scaled <= 1; scaled++) {
        cr_assert_eq(p->cpu->ops->hvp_columns(p->cpu, n, S, bU.c, sR.c, sH.c, shs.c, bUd.c, bvg.c, scaled ? baw.c : NULL,
                                              scaled ? bag.c : NULL, bQ.c, bhg.c), BN_OK, "%s", bn_last_error());
        cr_assert_eq(p->gpu->ops->hvp_columns(p->gpu, n, S, bU.g, sR.g, sH.g, shs.g, bUd.g, bvg.g, scaled ? baw.g : NULL,
                                              scaled ? bag.g : NULL, bQ.g, bhg.g), BN_OK, "%s", bn_last_error());
        hv_get(p, bQ, Qc, Qg);
        hv_get(p, bhg, hgc, hgg);
        for (int64_t j = 0; j < S; j++)
            hgs[j] = hv_hg_scale(n, U + j * n, Rc + j * n, Hc + j * n, hsc + j, S, Ud + j * n, vg[j],
                                 scaled ? aw[j] : 1, scaled ? ag[j] : 1);
        double eQ = hv_cols_rel(Qg, Qc, n, S, NULL), eg = hv_scal_rel(hgg, hgc, S, NULL, hgs);
        cr_log_info("hvp_columns %s %s n=%lld S=%lld%s: Qdot %.2e, hg %.2e", what, pn, (long long)n, (long long)S,
                    scaled ? " (aw, ag)" : "", eQ, eg);
        cr_expect_leq(eQ, tol, "hvp_columns %s %s n=%lld S=%lld%s: Qdot rel err %.3e", what, pn, (long long)n,
                      (long long)S, scaled ? " (aw, ag)" : "", eQ);
        cr_expect_leq(eg, tol, "hvp_columns %s %s n=%lld S=%lld%s: hg rel err %.3e", what, pn, (long long)n,
                      (long long)S, scaled ? " (aw, ag)" : "", eg);
    }
    hv_buf bufs[] = {bU, by, bg, bR, bH, bhs, sR, sH, shs, bUd, bvg, baw, bag, bQ, bhg};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) hv_free(p, bufs[i]);
    double *hosts[] = {U, y, gam, Rc, Rg, Hc, Hg, hsc, hsg, Ud, vg, aw, ag, Qc, Qg, hgc, hgg, hgs};
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) free(hosts[i]);
}

Test(cuda, sharpness_hvp_ops_match_cpu)
{
    REQUIRE_GPU();
    for (int pr = 0; pr <= 1; pr++) {
        hv_pair p = hv_open(pr ? BN_FP32 : BN_FP64);
        for (int lg = 0; lg <= 1; lg++)
            for (int s = 0; s < HV_NSHAPES; s++) hv_check_hvp(&p, lg, hv_shapes[s][0], hv_shapes[s][1]);
        hv_close(&p);
    }
}

/* The control block: ACTIVE set for j % 4 != 2 (column 2 of every 4 inactive),
 * SIGMA from sigma (NULL: 0), NV from nv (NULL: 1), and the outputs MU, ALPHA,
 * BETA preset to sentinels, so what an op must not write shows. */
static double *hv_ctl(int64_t S, const double *sigma, const double *nv)
{
    double *c = hv_zeros(BN_SC_COUNT * S);
    for (int64_t j = 0; j < S; j++) {
        c[BN_SC_ACTIVE * S + j] = j % 4 != 2;
        c[BN_SC_SIGMA * S + j] = sigma ? sigma[j] : 0;
        c[BN_SC_NV * S + j] = nv ? nv[j] : 1;
        c[BN_SC_MU * S + j] = 42.0 + (double)j;
        c[BN_SC_ALPHA * S + j] = 43.0 + (double)j;
        c[BN_SC_BETA * S + j] = 44.0 + (double)j;
    }
    return c;
}

/* Entries of column j (len each) equal bitwise on both sides, for the
 * columns with act[j] == 0. */
static int hv_inactive_same(const double *a, const double *b, int64_t len, int64_t S, const double *act)
{
    for (int64_t j = 0; j < S; j++)
        if (act[j] == 0 && !same_bits(a + j * len, b + j * len, len)) return 0;
    return 1;
}

static void hv_check_power(hv_pair *p, int64_t d, int64_t S, int project)
{
    const double tol = hv_tol(p->cpu->precision);
    const char *pn = bn_precision_name(p->cpu->precision);
    const int fp32 = p->cpu->precision == BN_FP32;
    int64_t dS = d * S;
    uint64_t key = 5000 + 100 * (uint64_t)d + (uint64_t)S + 7 * (uint64_t)project;
    double *V = hv_vec(dS, key, 1.0), *vg = hv_vec(S, key + 1, 1.0), *X = hv_vec(dS, key + 2, 0.3);
    double *xg = hv_vec(S, key + 3, 0.3), *W = hv_vec(dS, key + 4, 1.0), *sig = hv_vec(S, key + 5, 0.0);
    double *nv = hv_zeros(S);
    for (int64_t j = 0; j < S; j++) {
        /* X ≈ 1.7 V (as X = A V), plus noise; entry 1 of each column falls
         * below the flush-to-zero threshold nv·1e-150 (fp32: 1e-25) */
        double nn = vg[j] * vg[j];
        for (int64_t i = 0; i < d; i++) nn += V[j * d + i] * V[j * d + i];
        nv[j] = sqrt(nn);
        for (int64_t i = 0; i < d; i++) X[j * d + i] += 1.7 * V[j * d + i];
        xg[j] += 1.7 * vg[j];
        sig[j] = -0.2 * (double)(j % 3);
        if (d >= 3) {
            V[j * d + 1] = 0;
            W[j * d + 1] = 0;
            X[j * d + 1] = (fp32 ? 1e-27 : 1e-152) * nv[j];
        }
    }
    double *ctl = hv_ctl(S, sig, nv);
    hv_buf bV = hv_new(p, V, dS), bvg = hv_new(p, vg, S), bX = hv_new(p, X, dS), bxg = hv_new(p, xg, S);
    hv_buf bW = hv_new(p, W, dS), bc = hv_new(p, ctl, BN_SC_COUNT * S);
    cr_assert_eq(p->cpu->ops->power_update(p->cpu, d, S, bV.c, bvg.c, bX.c, bxg.c, bW.c, project, bc.c), BN_OK,
                 "%s", bn_last_error());
    cr_assert_eq(p->gpu->ops->power_update(p->gpu, d, S, bV.g, bvg.g, bX.g, bxg.g, bW.g, project, bc.g), BN_OK,
                 "%s", bn_last_error());
    double *Vc = hv_zeros(dS), *Vg = hv_zeros(dS), *gc = hv_zeros(S), *gg = hv_zeros(S);
    double *cc = hv_zeros(BN_SC_COUNT * S), *cg = hv_zeros(BN_SC_COUNT * S);
    hv_get(p, bV, Vc, Vg);
    hv_get(p, bvg, gc, gg);
    hv_get(p, bc, cc, cg);
    const double *act = ctl + BN_SC_ACTIVE * S;
    double eV = hv_cols_rel(Vg, Vc, d, S, act), eg = hv_scal_rel(gg, gc, S, act, NULL);
    double emu = hv_scal_rel(cg + BN_SC_MU * S, cc + BN_SC_MU * S, S, act, NULL);
    double env = hv_scal_rel(cg + BN_SC_NV * S, cc + BN_SC_NV * S, S, act, NULL);
    cr_log_info("power_update %s d=%lld S=%lld project=%d: V %.2e, vg %.2e, MU %.2e, NV %.2e", pn, (long long)d,
                (long long)S, project, eV, eg, emu, env);
    cr_expect_leq(eV, tol, "power_update %s d=%lld S=%lld project=%d: V rel err %.3e", pn, (long long)d, (long long)S, project, eV);
    cr_expect_leq(eg, tol, "power_update %s d=%lld S=%lld project=%d: vg rel err %.3e", pn, (long long)d, (long long)S, project, eg);
    cr_expect_leq(emu, tol, "power_update %s d=%lld S=%lld project=%d: MU rel err %.3e", pn, (long long)d, (long long)S, project, emu);
    cr_expect_leq(env, tol, "power_update %s d=%lld S=%lld project=%d: NV rel err %.3e", pn, (long long)d, (long long)S, project, env);
    for (int64_t j = 0; j < S && d >= 3; j++)
        if (act[j] != 0)
            cr_expect(Vg[j * d + 1] == 0 && Vc[j * d + 1] == 0,
                      "power_update %s: entry below the flush threshold not flushed (column %lld: gpu %g cpu %g)", pn,
                      (long long)j, Vg[j * d + 1], Vc[j * d + 1]);
    /* Inactive columns and the fields power_update does not write: untouched. */
    cr_expect(hv_inactive_same(Vg, Vc, d, S, act), "power_update %s: an inactive column of V was written", pn);
    cr_expect(hv_inactive_same(gg, gc, 1, S, act), "power_update %s: vg of an inactive column was written", pn);
    for (int f = 0; f < BN_SC_COUNT; f++) {
        int written = f == BN_SC_MU || f == BN_SC_NV;
        cr_expect(written ? hv_inactive_same(cg + f * S, cc + f * S, 1, S, act) : same_bits(cg + f * S, cc + f * S, S),
                  "power_update %s: ctl field %d written where it must not be", pn, f);
    }
    hv_buf bufs[] = {bV, bvg, bX, bxg, bW, bc};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) hv_free(p, bufs[i]);
    double *hosts[] = {V, vg, X, xg, W, sig, nv, ctl, Vc, Vg, gc, gg, cc, cg};
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) free(hosts[i]);
}

Test(cuda, sharpness_power_update_matches_cpu)
{
    REQUIRE_GPU();
    for (int pr = 0; pr <= 1; pr++) {
        hv_pair p = hv_open(pr ? BN_FP32 : BN_FP64);
        for (int s = 0; s < HV_NSHAPES; s++)
            for (int project = 0; project <= 1; project++) hv_check_power(&p, hv_shapes[s][0], hv_shapes[s][1], project);
        hv_close(&p);
    }
}

enum { HV_X_GIVEN = 0, HV_X_RANDOM = 1, HV_X_SLOT = 2 }; /* x: a vector, NULL, slot k+1 itself */

/* One lanczos_extend call on both backends: slots 0..k an orthonormal basis
 * (per column, in the (d+1)-space), slot k+1 garbage or x itself. */
static void hv_check_lanczos(hv_pair *p, int64_t d, int64_t S, int64_t k, int xmode, int project, int with_coef)
{
    const double tol = hv_tol(p->cpu->precision);
    const char *pn = bn_precision_name(p->cpu->precision);
    const int fp32 = p->cpu->precision == BN_FP32;
    const int64_t D = d + 1, slots = k + 2, dS = d * S;
    uint64_t key = 9000 + 1000 * (uint64_t)d + 10 * (uint64_t)S + (uint64_t)(k + 1) + 100 * (uint64_t)xmode;
    double *QW = hv_vec(slots * dS, key, 1.0), *QG = hv_vec(slots * S, key + 1, 1.0);
    double *q = malloc((size_t)(slots * D) * sizeof(double));
    for (int64_t j = 0; j < S; j++) {
        /* an orthonormal basis of k+1 vectors: Gram-Schmidt (twice) on random ones */
        for (int64_t b = 0; b <= k; b++) {
            double *v = q + b * D;
            for (int64_t i = 0; i < D; i++) v[i] = hv_rand(key + 2 + (uint64_t)j, b * D + i);
            for (int pass = 0; pass < 2; pass++)
                for (int64_t a = 0; a < b; a++) {
                    double c = 0;
                    for (int64_t i = 0; i < D; i++) c += q[a * D + i] * v[i];
                    for (int64_t i = 0; i < D; i++) v[i] -= c * q[a * D + i];
                }
            double nn = 0;
            for (int64_t i = 0; i < D; i++) nn += v[i] * v[i];
            for (int64_t i = 0; i < D; i++) v[i] /= sqrt(nn);
            for (int64_t i = 0; i < d; i++) QW[b * dS + j * d + i] = v[i];
            QG[b * S + j] = v[d];
        }
    }
    double *X = hv_vec(dS, key + 3, 1.0), *xg = hv_vec(S, key + 4, 1.0), *W = hv_vec(dS, key + 5, 1.0);
    if (xmode == HV_X_SLOT) {
        memcpy(QW + (k + 1) * dS, X, (size_t)dS * sizeof(double));
        memcpy(QG + (k + 1) * S, xg, (size_t)S * sizeof(double));
    }
    const uint64_t seed = 31 + (uint64_t)d, counter = 0x1000 + (uint64_t)(k + 1);
    /* ‖x‖ per column: the scale of α and of the removed coefficients */
    double *xn = hv_zeros(S);
    for (int64_t j = 0; j < S; j++) {
        double nn = 0;
        for (int64_t i = 0; i <= d; i++) {
            double xi = xmode == HV_X_RANDOM ? bn_hvp_random(seed + (uint64_t)j, counter, i) : i < d ? X[j * d + i] : xg[j];
            nn += xi * xi;
        }
        xn[j] = sqrt(nn);
    }
    double *ctl = hv_ctl(S, NULL, NULL);
    double *coef = hv_vec((k + 1) * S, key + 6, 50.0);
    hv_buf bQW = hv_new(p, QW, slots * dS), bQG = hv_new(p, QG, slots * S), bX = hv_new(p, X, dS);
    hv_buf bxg = hv_new(p, xg, S), bW = hv_new(p, W, dS), bc = hv_new(p, ctl, BN_SC_COUNT * S);
    hv_buf bcf = hv_new(p, coef, (k + 1) * S);
    void *xc = NULL, *xgc = NULL, *xgp = NULL, *xgg = NULL;
    if (xmode == HV_X_GIVEN) xc = bX.c, xgc = bxg.c, xgp = bX.g, xgg = bxg.g;
    if (xmode == HV_X_SLOT) {
        xc = hv_at(p->cpu, bQW.c, (k + 1) * dS), xgc = hv_at(p->cpu, bQG.c, (k + 1) * S);
        xgp = hv_at(p->gpu, bQW.g, (k + 1) * dS), xgg = hv_at(p->gpu, bQG.g, (k + 1) * S);
    }
    cr_assert_eq(p->cpu->ops->lanczos_extend(p->cpu, d, S, k, bQW.c, bQG.c, xc, xgc, bW.c, project, seed, counter, bc.c,
                                             with_coef ? bcf.c : NULL), BN_OK, "%s", bn_last_error());
    cr_assert_eq(p->gpu->ops->lanczos_extend(p->gpu, d, S, k, bQW.g, bQG.g, xgp, xgg, bW.g, project, seed, counter, bc.g,
                                             with_coef ? bcf.g : NULL), BN_OK, "%s", bn_last_error());
    double *Wc = hv_zeros(slots * dS), *Wg = hv_zeros(slots * dS), *Gc = hv_zeros(slots * S), *Gg = hv_zeros(slots * S);
    double *cc = hv_zeros(BN_SC_COUNT * S), *cg = hv_zeros(BN_SC_COUNT * S);
    double *fc = hv_zeros((k + 1) * S), *fg = hv_zeros((k + 1) * S);
    hv_get(p, bQW, Wc, Wg);
    hv_get(p, bQG, Gc, Gg);
    hv_get(p, bc, cc, cg);
    hv_get(p, bcf, fc, fg);
    const double *act = ctl + BN_SC_ACTIVE * S;
    char what[160];
    snprintf(what, sizeof what, "lanczos_extend %s d=%lld S=%lld k=%lld x=%s project=%d coef=%d", pn, (long long)d,
             (long long)S, (long long)k, xmode == HV_X_GIVEN ? "given" : xmode == HV_X_RANDOM ? "random" : "slot k+1",
             project, with_coef);
    /* the new vector (w-part and γ-part of slot k+1) */
    double *nc = hv_zeros(S * D), *ng = hv_zeros(S * D);
    for (int64_t j = 0; j < S; j++) {
        memcpy(nc + j * D, Wc + (k + 1) * dS + j * d, (size_t)d * sizeof(double));
        memcpy(ng + j * D, Wg + (k + 1) * dS + j * d, (size_t)d * sizeof(double));
        nc[j * D + d] = Gc[(k + 1) * S + j];
        ng[j * D + d] = Gg[(k + 1) * S + j];
    }
    double ev = hv_cols_rel(ng, nc, D, S, act);
    double eb = hv_scal_rel(cg + BN_SC_BETA * S, cc + BN_SC_BETA * S, S, act, NULL);
    double ea = 0, ef = 0;
    int alpha_written = xmode != HV_X_RANDOM && k >= 0;
    if (alpha_written) ea = hv_scal_rel(cg + BN_SC_ALPHA * S, cc + BN_SC_ALPHA * S, S, act, xn);
    if (with_coef)
        for (int64_t b = 0; b <= k; b++) ef = fmax(ef, hv_scal_rel(fg + b * S, fc + b * S, S, act, xn));
    cr_log_info("%s: vector %.2e, beta %.2e, alpha %.2e, coef %.2e", what, ev, eb, ea, ef);
    cr_expect_leq(ev, tol, "%s: new vector rel err %.3e", what, ev);
    cr_expect_leq(eb, tol, "%s: beta rel err %.3e", what, eb);
    cr_expect_leq(ea, tol, "%s: alpha err %.3e (relative to ‖x‖)", what, ea);
    cr_expect_leq(ef, tol, "%s: coef err %.3e (relative to ‖x‖)", what, ef);
    /* Untouched: slots 0..k everywhere, slot k+1 and coef of inactive columns,
     * the ctl fields not written (ALPHA only with x and k ≥ 0), coef with k = -1. */
    cr_expect(same_bits(Wg, Wc, (k + 1) * dS) && same_bits(Gg, Gc, (k + 1) * S), "%s: basis slots 0..k changed", what);
    cr_expect(hv_inactive_same(ng, nc, D, S, act), "%s: slot k+1 of an inactive column was written", what);
    for (int f = 0; f < BN_SC_COUNT; f++) {
        int written = f == BN_SC_BETA || (f == BN_SC_ALPHA && alpha_written);
        cr_expect(written ? hv_inactive_same(cg + f * S, cc + f * S, 1, S, act) : same_bits(cg + f * S, cc + f * S, S),
                  "%s: ctl field %d written where it must not be", what, f);
    }
    for (int64_t b = 0; b <= k; b++)
        cr_expect(with_coef ? hv_inactive_same(fg + b * S, fc + b * S, 1, S, act) : same_bits(fg + b * S, fc + b * S, S),
                  "%s: coef row %lld written where it must not be", what, (long long)b);
    /* The pseudo-random start, bitwise: entry i = bn_hvp_random(seed + j, counter, i)·(1/β). */
    if (xmode == HV_X_RANDOM && k == -1 && !project) {
        int64_t bad = 0, checked = 0;
        for (int64_t j = 0; j < S; j++) {
            if (act[j] == 0) continue;
            for (int side = 0; side < 2; side++) {
                const double *got = side ? ng + j * D : nc + j * D;
                double beta = (side ? cg : cc)[BN_SC_BETA * S + j];
                for (int64_t i = 0; i <= d; i++) {
                    double r = bn_hvp_random(seed + (uint64_t)j, counter, i), want;
                    if (fp32) {
                        float inv = 1.0f / (float)beta;
                        want = (double)((float)r * inv);
                    } else {
                        double inv = 1.0 / beta;
                        want = r * inv;
                    }
                    bad += !(got[i] == want);
                    checked++;
                }
            }
        }
        cr_log_info("%s: %lld of %lld pseudo-random entries differ bitwise from bn_hvp_random·(1/β)", what, (long long)bad,
                    (long long)checked);
        cr_expect_eq(bad, 0, "%s: %lld of %lld pseudo-random start entries differ bitwise from bn_hvp_random", what,
                     (long long)bad, (long long)checked);
    }
    hv_buf bufs[] = {bQW, bQG, bX, bxg, bW, bc, bcf};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) hv_free(p, bufs[i]);
    double *hosts[] = {QW, QG, q, X, xg, W, xn, ctl, coef, Wc, Wg, Gc, Gg, cc, cg, fc, fg, nc, ng};
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) free(hosts[i]);
}

Test(cuda, sharpness_lanczos_extend_matches_cpu)
{
    REQUIRE_GPU();
    const int64_t ks[] = {-1, 0, 3};
    for (int pr = 0; pr <= 1; pr++) {
        hv_pair p = hv_open(pr ? BN_FP32 : BN_FP64);
        for (int s = 0; s < HV_NSHAPES; s++)
            for (int ki = 0; ki < 3; ki++)
                for (int xm = 0; xm < 3; xm++)
                    for (int project = 0; project <= 1; project++)
                        hv_check_lanczos(&p, hv_shapes[s][0], hv_shapes[s][1], ks[ki], xm, project,
                                         (xm + project) % 2 == 0);
        hv_close(&p);
    }
}

/* ------------------------------------------- (i) sharpness in a run */

/* bn_sim with sharpness records every 5 steps (0, 5, ..., 20), the CUDA
 * backend against the CPU backend.
 *
 * Tolerances:
 *  - fp64, 1e-8 relative.  The two trajectories agree to ~1e-13 (calm runs,
 *    as above) and every HVP, vector update and Gram-Schmidt step agrees to
 *    rounding (the op tests), so the μ sequences of the power iteration and
 *    the Ritz values of Lanczos track each other to ~1e-13 — as long as both
 *    stop at the same iteration.  The stopping tests compare a change with
 *    tol·scale, and a change that lands within rounding of that threshold
 *    stops one backend an iteration before the other.  The runs therefore
 *    use tol = 1e-10: a different stopping iteration then moves a power
 *    estimate by at most about one last change (≤ tol·scale, or the
 *    extrapolated rest of the geometric tail, of the same order), and a Ritz
 *    value by at most its residual bound (≤ tol·scale), both ~1e-10 ≪ 1e-8.
 *    (At the default tol = 1e-6 the same argument gives only ~1e-6.)  eigs
 *    are compared relative to the largest |eigenvalue| of their record, as
 *    the Lanczos tolerance is (zeros and near-zero Ritz values have no
 *    relative accuracy).
 *  - fp32 GPU against fp64 CPU: the fp32 trajectory itself is off by ~1e-5
 *    (see (b)), the effective tolerance is raised to 4·ε·√(d+1) ≈ 1.3e-6 and
 *    μ carries rounding noise of that order: 1e-4 relative for λ_max, 1e-3
 *    of the record's largest |eigenvalue| for eigs (the bounds of the CPU's
 *    own fp32 test, tests/test_sharpness.c). */

static bn_sim *sharp_sim(const bn_dataset *ds, bn_loss loss, bn_backend_kind kind, bn_precision prec, double eta_w,
                         int64_t S, int64_t every, int64_t eigs, double tol)
{
    bn_run_config c;
    demo_config(&c, kind);
    c.loss = loss;
    c.precision = prec;
    c.eta_w = eta_w;
    c.eta_gamma = 0.3;
    c.w0_align = 0;
    c.w0_noise = 1;
    c.seeds = S;
    c.steps = 20;
    c.every = 1;
    c.sharpness_every = every;
    c.sharpness_tol = tol;
    c.sharpness_maxiter = 5000;
    c.eigs = eigs;
    return run_sim(ds, &c);
}

static bn_sim_array sharp_arr(const bn_sim *s, const char *name)
{
    bn_sim_array a;
    cr_assert_eq(bn_sim_sharpness_find(s, name, &a), BN_OK, "%s", bn_last_error());
    return a;
}

static int64_t sharp_len(const bn_sim_array *a)
{
    int64_t len = 1;
    for (int i = 0; i < a->ndim; i++) len *= a->shape[i];
    return len;
}

/* Worst difference of a float64 sharpness array, g against c: blocks of the
 * last dimension (eigs: the k values of one record; else single values)
 * relative to the block's largest |value| in c.  NaN on both sides agrees. */
static double sharp_err(const bn_sim *g, const bn_sim *c, const char *name)
{
    bn_sim_array a = sharp_arr(g, name), b = sharp_arr(c, name);
    cr_assert_eq(a.ndim, b.ndim, "%s: ndim", name);
    for (int i = 0; i < a.ndim; i++) cr_assert_eq(a.shape[i], b.shape[i], "%s: shape[%d]", name, i);
    cr_assert(a.f64 && b.f64, "%s is not float64", name);
    int64_t len = sharp_len(&b), blk = b.ndim == 3 ? b.shape[2] : 1;
    double worst = 0;
    for (int64_t r = 0; r < len; r += blk) {
        double scale = 0;
        for (int64_t i = r; i < r + blk; i++)
            if (isfinite(b.f64[i])) scale = fmax(scale, fabs(b.f64[i]));
        for (int64_t i = r; i < r + blk; i++) {
            if (isnan(a.f64[i]) && isnan(b.f64[i])) continue;
            double e = fabs(a.f64[i] - b.f64[i]) / fmax(scale, 1e-300);
            worst = fmax(worst, isnan(e) ? INFINITY : e);
        }
    }
    return worst;
}

/* Number of entries of an int64 sharpness array that are not 1. */
static int64_t sharp_not_one(const bn_sim *s, const char *name)
{
    bn_sim_array a = sharp_arr(s, name);
    int64_t n = 0;
    for (int64_t i = 0; i < sharp_len(&a); i++) n += a.i64[i] != 1;
    return n;
}

typedef struct {
    const char *spec;
    bn_loss loss;
    double eta_w;
} sharp_case;

/* Calm runs (the trajectories agree to ~1e-13), square and logistic. */
static const sharp_case sharp_cases[] = {
    {"gaussian:n=40,d=30,seed=2", BN_LOSS_SQUARE, 0.3},
    {"gaussian:n=80,d=30,seed=4", BN_LOSS_LOGISTIC, 0.5},
};

static void sharp_compare_fp64(int64_t eigs)
{
    const char *names[] = {"sharpness", "sharpness_weighted", "sharpness_sphere", "eigs"};
    for (size_t k = 0; k < sizeof sharp_cases / sizeof sharp_cases[0]; k++) {
        const sharp_case *sc = &sharp_cases[k];
        bn_dataset *ds = dataset(sc->spec, sc->loss);
        const int64_t S = 4;
        bn_sim *cpu = sharp_sim(ds, sc->loss, BN_BACKEND_CPU, BN_FP64, sc->eta_w, S, 5, eigs, 1e-10);
        bn_sim *gpu = sharp_sim(ds, sc->loss, BN_BACKEND_CUDA, BN_FP64, sc->eta_w, S, 5, eigs, 1e-10);
        int64_t R = bn_sim_records(cpu);
        double etraj = rows_rel(field(gpu, "loss"), field(cpu, "loss"), S, R);
        cr_log_info("%s eigs=%lld: loss GPU vs CPU rel err %.3e", sc->spec, (long long)eigs, etraj);
        bn_sim_array sa = sharp_arr(gpu, "sharpness_step"), sb = sharp_arr(cpu, "sharpness_step");
        cr_assert_eq(sa.shape[0], 5, "%s: %lld sharpness records, expected 5", sc->spec, (long long)sa.shape[0]);
        for (int64_t i = 0; i < sa.shape[0]; i++) cr_expect_eq(sa.i64[i], sb.i64[i]);
        for (int q = 0; q < (eigs > 0 ? 4 : 3); q++) {
            double e = sharp_err(gpu, cpu, names[q]);
            cr_log_info("%s eigs=%lld: %s GPU vs CPU rel err %.3e", sc->spec, (long long)eigs, names[q], e);
            cr_expect_leq(e, 1e-8, "%s: %s GPU vs CPU rel err %.3e", sc->spec, names[q], e);
        }
        bn_sim_array it = sharp_arr(gpu, "sharpness_iters"), itc = sharp_arr(cpu, "sharpness_iters");
        int64_t same_it = 0, tot_g = 0, tot_c = 0;
        for (int64_t i = 0; i < sharp_len(&it); i++) {
            same_it += it.i64[i] == itc.i64[i];
            tot_g += it.i64[i];
            tot_c += itc.i64[i];
        }
        cr_log_info("%s: power iterations GPU %lld, CPU %lld HVPs; the same count in %lld of %lld", sc->spec,
                    (long long)tot_g, (long long)tot_c, (long long)same_it, (long long)sharp_len(&it));
        cr_expect_eq(sharp_not_one(gpu, "sharpness_converged"), sharp_not_one(cpu, "sharpness_converged"),
                     "%s: power iterations not converged GPU %lld vs CPU %lld", sc->spec,
                     (long long)sharp_not_one(gpu, "sharpness_converged"), (long long)sharp_not_one(cpu, "sharpness_converged"));
        if (eigs > 0)
            cr_expect_eq(sharp_not_one(gpu, "eigs_converged"), sharp_not_one(cpu, "eigs_converged"),
                         "%s: Lanczos not converged GPU %lld vs CPU %lld", sc->spec,
                         (long long)sharp_not_one(gpu, "eigs_converged"), (long long)sharp_not_one(cpu, "eigs_converged"));
        if (eigs == 0) {
            /* The trajectory is the same bits with and without sharpness. */
            bn_sim *plain = sharp_sim(ds, sc->loss, BN_BACKEND_CUDA, BN_FP64, sc->eta_w, S, 0, 0, 1e-10);
            for (int f = 0; f < bn_sim_n_fields(); f++) {
                const char *name = bn_sim_field_name(f);
                cr_expect(same_bits(field(plain, name), field(gpu, name), S * R),
                          "%s: field %s changed by computing sharpness on the GPU", sc->spec, name);
            }
            bn_sim_free(plain);
        }
        bn_sim_free(cpu);
        bn_sim_free(gpu);
        bn_dataset_free(ds);
    }
}

Test(cuda, sharpness_run_power_matches_cpu)
{
    REQUIRE_GPU();
    sharp_compare_fp64(0);
}

Test(cuda, sharpness_run_eigs_matches_cpu)
{
    REQUIRE_GPU();
    sharp_compare_fp64(3);
}

Test(cuda, sharpness_run_fp32_within_tolerance)
{
    REQUIRE_GPU();
    const char *names[] = {"sharpness", "sharpness_weighted", "sharpness_sphere", "eigs"};
    const double tols[] = {1e-4, 1e-4, 1e-4, 1e-3};
    for (size_t k = 0; k < sizeof sharp_cases / sizeof sharp_cases[0]; k++) {
        const sharp_case *sc = &sharp_cases[k];
        bn_dataset *ds = dataset(sc->spec, sc->loss);
        const int64_t S = 4;
        bn_sim *c64 = sharp_sim(ds, sc->loss, BN_BACKEND_CPU, BN_FP64, sc->eta_w, S, 5, 3, 1e-10);
        bn_sim *c32 = sharp_sim(ds, sc->loss, BN_BACKEND_CPU, BN_FP32, sc->eta_w, S, 5, 3, 1e-6);
        bn_sim *g32 = sharp_sim(ds, sc->loss, BN_BACKEND_CUDA, BN_FP32, sc->eta_w, S, 5, 3, 1e-6);
        for (int q = 0; q < 4; q++) {
            double e = sharp_err(g32, c64, names[q]), e32 = sharp_err(g32, c32, names[q]);
            cr_log_info("%s: %s fp32 GPU vs fp64 CPU rel err %.3e (vs fp32 CPU %.3e)", sc->spec, names[q], e, e32);
            cr_expect_leq(e, tols[q], "%s: %s fp32 GPU vs fp64 CPU rel err %.3e", sc->spec, names[q], e);
            cr_expect_leq(e32, tols[q], "%s: %s fp32 GPU vs fp32 CPU rel err %.3e", sc->spec, names[q], e32);
        }
        bn_sim_free(c64);
        bn_sim_free(c32);
        bn_sim_free(g32);
        bn_dataset_free(ds);
    }
}

/* The paper-size Hilbert data, S = 33 (not a multiple of the 8 columns of a
 * warp-kernel block), and a wide Gaussian problem (d = 600: the block kernels
 * of power_update and lanczos_extend inside a run), power and eigs. */
Test(cuda, sharpness_run_larger_shapes_match_cpu)
{
    REQUIRE_GPU();
    const struct {
        const char *spec;
        double eta_w;
        int64_t S;
    } cases[] = {{HILBERT_SPEC, 0.1, 33}, {"gaussian:n=50,d=600,seed=7", 0.3, 3}};
    const char *names[] = {"sharpness", "sharpness_weighted", "sharpness_sphere", "eigs"};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        bn_dataset *ds = dataset(cases[k].spec, BN_LOSS_SQUARE);
        bn_sim *cpu = sharp_sim(ds, BN_LOSS_SQUARE, BN_BACKEND_CPU, BN_FP64, cases[k].eta_w, cases[k].S, 5, 3, 1e-10);
        bn_sim *gpu = sharp_sim(ds, BN_LOSS_SQUARE, BN_BACKEND_CUDA, BN_FP64, cases[k].eta_w, cases[k].S, 5, 3, 1e-10);
        for (int q = 0; q < 4; q++) {
            double e = sharp_err(gpu, cpu, names[q]);
            cr_log_info("%s S=%lld: %s GPU vs CPU rel err %.3e", cases[k].spec, (long long)cases[k].S, names[q], e);
            cr_expect_leq(e, 1e-8, "%s: %s GPU vs CPU rel err %.3e", cases[k].spec, names[q], e);
        }
        cr_log_info("%s: not converged: power GPU %lld CPU %lld, Lanczos GPU %lld CPU %lld", cases[k].spec,
                    (long long)sharp_not_one(gpu, "sharpness_converged"), (long long)sharp_not_one(cpu, "sharpness_converged"),
                    (long long)sharp_not_one(gpu, "eigs_converged"), (long long)sharp_not_one(cpu, "eigs_converged"));
        bn_sim_free(cpu);
        bn_sim_free(gpu);
        bn_dataset_free(ds);
    }
}
