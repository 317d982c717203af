/* GPU benchmark of bnspike through the public API (make bench-gpu).
 *
 *   build/bench_gpu [--csv FILE] [--quick] [--device N] [--no-fused] [--no-cpu] [--smoke]
 *   build/bench_gpu --dump-check DIR [--steps T] [--seeds S] [--backend auto|cuda|cpu]
 *
 * Sections (each prints a table; --csv writes every row too):
 *  (i)   the paper's size, n=64, d=256, fp64, square loss, records every 10
 *        steps: seed-steps/s for S=16384 and S=1024 on the GPU (cuBLAS+graph
 *        path, and the fused small-problem path), and the CPU backend at
 *        S=1024 for the GPU/CPU ratio.
 *  (ii)  n=d=16384, S=1, fp32: ms/step against the time to read X twice at
 *        the device's measured copy bandwidth (a step must read Xc for Xc·w
 *        and again for Xcᵀq); target ratio <= 1.3.
 *  (iii) CPU vs GPU ms/step, fp64: n=2048, d=4096, S=32 and n=4096, d=8192,
 *        S=256 (the CPU runs only a few steps of the latter: each takes
 *        about a tenth of a second or more).
 * Timing: a progress callback marks the first block boundary at or after a
 * warm-up step (graph capture, cuBLAS and module loading happen before it)
 * and the end of the run; the GPU is synchronized at both marks, so the time
 * between them is device work plus the driver's per-block record downloads,
 * i.e. what a user of bn_sim_run gets.  The driver launches the next block
 * before it reports a boundary, so the synchronization at the first mark also
 * completes that block: the timed steps start at the following boundary.
 * (Device runs before 2026-11-28 19:45 UTC counted from the mark itself and
 * overstated the rate by up to one block; bench/RESULTS.md corrects them.)  Setup (data, reference, upload) is
 * excluded.  Rates are seed-steps/s = S × timed steps / seconds.
 *
 * --quick: shorter runs and smaller (ii); --smoke: tiny sizes that only
 * exercise the program (for the host emulator in src/cuda/emu), no meaning.
 *
 * --dump-check DIR writes identical inputs for the PyTorch peer
 * (bench/peers/torch_batched.py): X.npy (raw n×d), y.npy, w0.npy (S×d, the
 * start bnspike actually used), ref.npy (the reference direction), meta.json
 * (step sizes, γ0, steps), and bnspike.npz with loss/gamma/rho/w_norm (S×R,
 * every step) from a short fp64 run on the chosen backend. */
#include "bnspike.h"
#ifdef BN_HAVE_CUDA
#include "cuda/bn_cuda_extra.h"
#endif

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define PAPER_SPEC "hilbert:n=64,d=256,noise=0.01,seed=1"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int g_device = 0;
static int g_smoke = 0; /* --smoke: tiny sizes, to exercise the program itself (e.g. under src/cuda/emu) */
static FILE *g_csv = NULL;
static int g_failures = 0;

static void gpu_sync(void)
{
#ifdef BN_HAVE_CUDA
    if (bn_cuda_device_sync(g_device) != BN_OK) fprintf(stderr, "bench_gpu: sync failed: %s\n", bn_last_error());
#endif
}

/* ------------------------------------------------------------- timing */

typedef struct {
    int64_t warm, steps;
    int gpu;
    int started;
    double t_start, t_end;
    int64_t s_start, s_end;
} run_timer;

static int timer_cb(void *user, int64_t step, int64_t steps)
{
    run_timer *t = user;
    (void)steps;
    /* The driver launches the next block before it reports this boundary, so
     * the synchronization at the mark also finishes that block: the timed
     * steps start where it ends, which is the step of the next report. */
    if (t->started && t->s_start < 0) t->s_start = step;
    if (!t->started && step >= t->warm && step < t->steps) {
        if (t->gpu) gpu_sync();
        t->t_start = now();
        t->s_start = -1;
        t->started = 1;
    }
    if (step >= t->steps) {
        if (t->gpu) gpu_sync();
        t->t_end = now();
        t->s_end = step;
    }
    return 0;
}

typedef struct {
    const char *section, *name;
    const char *backend, *precision, *path;
    int64_t n, d, S, steps_timed;
    double seconds, ms_per_step, seed_steps_per_s;
    int ok;
    char note[160];
} result;

static void print_header(const char *title)
{
    printf("\n%s\n", title);
    printf("  %-26s %-5s %-5s %-7s %6s %6s %6s %6s %10s %12s  %s\n", "case", "back", "prec", "path", "n", "d",
           "S", "steps", "ms/step", "seed-steps/s", "note");
}

static void emit(const result *r)
{
    if (r->ok)
        printf("  %-26s %-5s %-5s %-7s %6lld %6lld %6lld %6lld %10.4f %12.4g  %s\n", r->name, r->backend,
               r->precision, r->path, (long long)r->n, (long long)r->d, (long long)r->S, (long long)r->steps_timed,
               r->ms_per_step, r->seed_steps_per_s, r->note);
    else
        printf("  %-26s %-5s %-5s %-7s %6lld %6lld %6lld   FAILED: %s\n", r->name, r->backend, r->precision, r->path,
               (long long)r->n, (long long)r->d, (long long)r->S, r->note);
    if (g_csv)
        fprintf(g_csv, "%s,%s,%s,%s,%s,%lld,%lld,%lld,%lld,%.6g,%.6g,%.6g,%d,\"%s\"\n", r->section, r->name, r->backend,
                r->precision, r->path, (long long)r->n, (long long)r->d, (long long)r->S, (long long)r->steps_timed,
                r->seconds, r->ms_per_step, r->seed_steps_per_s, r->ok, r->note);
    fflush(stdout);
    if (g_csv) fflush(g_csv);
}

static void emit_value(const char *section, const char *name, double value, const char *unit, const char *note)
{
    printf("  %-40s %14.6g %-10s %s\n", name, value, unit, note);
    if (g_csv)
        fprintf(g_csv, "%s,%s,,,,,,,,,,%.6g,1,\"%s [%s]\"\n", section, name, value, note, unit);
    fflush(stdout);
}

typedef struct {
    const char *spec;
    bn_backend_kind backend;
    bn_precision prec;
    int64_t S, steps, every, warm;
    int fast_setup; /* skip_reference + no projection: for the big shapes */
    int fused;      /* BN_CUDA_FUSED=1 */
} bench_case;

/* One timed run; fills r.  The data set is generated once per spec by the caller. */
static void run_case(const bn_dataset *ds, const bench_case *bc, result *r)
{
    bn_run_config c;
    bn_run_config_default(&c);
    c.backend = bc->backend;
    c.precision = bc->prec;
    c.device = g_device;
    c.steps = bc->steps;
    c.every = bc->every;
    c.seeds = bc->S;
    c.eta_w = 0.9;
    c.eta_gamma = 0.05;
    c.gamma0 = 0.1;
    c.w0_align = 0;
    c.w0_noise = 1;
    if (bc->fast_setup) {
        c.skip_reference = 1;
        c.project_w0 = 0;
    }
    r->backend = bn_backend_name(bc->backend);
    r->precision = bn_precision_name(bc->prec);
    r->path = bc->backend == BN_BACKEND_CPU ? "blas" : (bc->fused ? "fused" : "graphs");
    r->n = bn_dataset_n(ds);
    r->d = bn_dataset_d(ds);
    r->S = bc->S;
    r->ok = 0;
    r->note[0] = '\0';
    if (bc->fused) setenv("BN_CUDA_FUSED", "1", 1);
    else unsetenv("BN_CUDA_FUSED");
    bn_sim *sim = NULL;
    double t_setup = now();
    bn_status st = bn_sim_create(ds, &c, &sim);
    t_setup = now() - t_setup;
    unsetenv("BN_CUDA_FUSED");
    if (st != BN_OK) {
        snprintf(r->note, sizeof r->note, "create: %s: %.120s", bn_status_name(st), bn_last_error());
        g_failures++;
        return;
    }
#ifdef BN_HAVE_CUDA
    long long f0 = 0, f1 = 0;
    bn_cuda_debug_counters(NULL, NULL, &f0, NULL);
#endif
    run_timer t = {.warm = bc->warm, .steps = bc->steps, .gpu = bc->backend != BN_BACKEND_CPU};
    if (t.gpu) gpu_sync();
    double t0 = now();
    st = bn_sim_run(sim, timer_cb, &t);
    if (t.gpu) gpu_sync();
    double whole = now() - t0;
    if (st != BN_OK) {
        snprintf(r->note, sizeof r->note, "run: %s: %.120s", bn_status_name(st), bn_last_error());
        g_failures++;
        bn_sim_free(sim);
        return;
    }
#ifdef BN_HAVE_CUDA
    bn_cuda_debug_counters(NULL, NULL, &f1, NULL);
    if (bc->fused && f1 - f0 == 0) snprintf(r->note, sizeof r->note, "fused path NOT taken; ");
#endif
    if (bc->warm > 0 && t.started && t.s_start >= 0 && 3 * (t.s_end - t.s_start) >= bc->steps) {
        r->steps_timed = t.s_end - t.s_start;
        r->seconds = t.t_end - t.t_start;
    } else { /* no warm-up asked (CPU), or the blocks were too long for a mark: the whole run */
        r->steps_timed = bc->steps + 1;
        r->seconds = whole;
        if (bc->warm > 0) {
            size_t k = strlen(r->note);
            snprintf(r->note + k, sizeof r->note - k, "whole run timed (no warm-up mark); ");
        }
    }
    r->ms_per_step = 1e3 * r->seconds / (double)r->steps_timed;
    r->seed_steps_per_s = (double)bc->S * (double)r->steps_timed / r->seconds;
    size_t k = strlen(r->note);
    snprintf(r->note + k, sizeof r->note - k, "setup %.1fs, run %.2fs", t_setup, whole);
    /* A diverged or non-finite benchmark is a wrong benchmark. */
    const int64_t *div = bn_sim_diverged_step(sim);
    int64_t ndiv = 0;
    for (int64_t j = 0; j < bc->S; j++) ndiv += div[j] >= 0;
    if (ndiv) {
        k = strlen(r->note);
        snprintf(r->note + k, sizeof r->note - k, "; %lld trajectories diverged", (long long)ndiv);
    }
    r->ok = 1;
    bn_sim_free(sim);
}

static bn_dataset *make_data(const char *spec)
{
    bn_dataset *ds = NULL;
    double t = now();
    if (bn_dataset_generate(spec, BN_LOSS_SQUARE, &ds) != BN_OK) {
        fprintf(stderr, "bench_gpu: %s: %s\n", spec, bn_last_error());
        g_failures++;
        return NULL;
    }
    printf("  (data %s generated in %.1f s)\n", spec, now() - t);
    return ds;
}

/* A large data set made quickly (the generators' Gaussian draws take ~1 min
 * for 16384²): entries uniform in [-√3, √3] (unit variance) from splitmix64,
 * y uniform too.  The values do not matter for timing, only that the run
 * stays finite. */
static bn_dataset *make_fast_data(int64_t n, int64_t d, uint64_t seed)
{
    double t = now();
    size_t nd = (size_t)n * (size_t)d;
    double *X = malloc(nd * sizeof(double)), *y = malloc((size_t)n * sizeof(double));
    if (!X || !y) {
        fprintf(stderr, "bench_gpu: cannot allocate %lld×%lld data\n", (long long)n, (long long)d);
        free(X);
        free(y);
        g_failures++;
        return NULL;
    }
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < nd + (size_t)n; i++) {
        uint64_t v = (z += 0x9E3779B97F4A7C15ull);
        v = (v ^ (v >> 30)) * 0xBF58476D1CE4E5B9ull;
        v = (v ^ (v >> 27)) * 0x94D049BB133111EBull;
        v ^= v >> 31;
        double u = ((double)(v >> 11) * 0x1.0p-53 * 2.0 - 1.0) * 1.7320508075688772;
        if (i < nd) X[i] = u;
        else y[i - nd] = u;
    }
    char name[64];
    snprintf(name, sizeof name, "uniform:n=%lld,d=%lld", (long long)n, (long long)d);
    bn_dataset *ds = NULL;
    bn_status st = bn_dataset_create(X, y, n, d, name, &ds);
    free(X);
    free(y);
    if (st != BN_OK) {
        fprintf(stderr, "bench_gpu: %s: %s\n", name, bn_last_error());
        g_failures++;
        return NULL;
    }
    printf("  (data %s made in %.1f s)\n", name, now() - t);
    return ds;
}

/* ------------------------------------------------------------- sections */

static void section_paper(int quick, int no_fused, int no_cpu, double *gpu_rate_16k, double *ratio_gpu_cpu)
{
    print_header("(i) paper size: n=64, d=256, fp64, square loss, every 10 steps");
    bn_dataset *ds = make_data(PAPER_SPEC);
    if (!ds) return;
    /* Over 4096 steps, so even 1024-step blocks leave a third of the run
     * after the warm-up mark and the block it absorbs. */
    int64_t steps = g_smoke ? 60 : (quick ? 400 : 4100), warm = g_smoke ? 20 : 100;
    int64_t big = g_smoke ? 64 : 16384, small = g_smoke ? 24 : 1024;
    bench_case cases[] = {
        {PAPER_SPEC, BN_BACKEND_CUDA, BN_FP64, big, steps, 10, warm, 0, 0},
        {PAPER_SPEC, BN_BACKEND_CUDA, BN_FP64, big, steps, 10, warm, 0, 1},
        {PAPER_SPEC, BN_BACKEND_CUDA, BN_FP64, small, steps, 10, warm, 0, 0},
        {PAPER_SPEC, BN_BACKEND_CUDA, BN_FP64, small, steps, 10, warm, 0, 1},
        {PAPER_SPEC, BN_BACKEND_CPU, BN_FP64, small, g_smoke ? 40 : (quick ? 100 : 300), 10, 0, 0, 0},
    };
    const char *names[] = {"paper_S16384_gpu", "paper_S16384_gpu_fused", "paper_S1024_gpu", "paper_S1024_gpu_fused",
                           "paper_S1024_cpu"};
    double gpu1024 = 0, cpu1024 = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (no_fused && cases[i].fused) continue;
        if (no_cpu && cases[i].backend == BN_BACKEND_CPU) continue;
        result r = {.section = "i", .name = names[i]};
        run_case(ds, &cases[i], &r);
        emit(&r);
        if (!r.ok) continue;
        if (i == 0) *gpu_rate_16k = r.seed_steps_per_s;
        if (i == 2) gpu1024 = r.seed_steps_per_s;
        if (i == 4) cpu1024 = r.seed_steps_per_s;
    }
    if (gpu1024 > 0 && cpu1024 > 0) {
        *ratio_gpu_cpu = gpu1024 / cpu1024;
        emit_value("i", "paper_S1024_gpu_over_cpu", *ratio_gpu_cpu, "x", "seed-steps/s GPU (graphs) / CPU at S=1024");
    }
    bn_dataset_free(ds);
}

static void section_big_s1(int quick, double bandwidth, double *ratio_out)
{
    print_header("(ii) n=d=16384, S=1, fp32: ms/step against reading X twice");
    int64_t nn = g_smoke ? 600 : (quick ? 8192 : 16384), dd = g_smoke ? 700 : nn;
    bn_dataset *ds = make_fast_data(nn, dd, 1);
    if (!ds) return;
    /* 3100 steps: the first block (1024 steps) holds the graph capture and
     * cuBLAS's first calls, the second is absorbed by the mark; a third is timed. */
    bench_case bc = {"", BN_BACKEND_CUDA, BN_FP32, 1, g_smoke ? 40 : 3100, 1000000, 20, 1, 0};
    result r = {.section = "ii", .name = "gemv_S1_fp32_gpu"};
    run_case(ds, &bc, &r);
    emit(&r);
    if (r.ok && bandwidth > 0) {
        double xbytes = (double)bn_dataset_n(ds) * (double)bn_dataset_d(ds) * 4.0;
        double floor_ms = 1e3 * 2.0 * xbytes / bandwidth;
        *ratio_out = r.ms_per_step / floor_ms;
        emit_value("ii", "read_X_twice_ms", floor_ms, "ms", "2 x bytes(X fp32) / copy bandwidth");
        emit_value("ii", "ms_per_step_over_read_X_twice", *ratio_out, "x", "target <= 1.3");
    }
    bn_dataset_free(ds);
}

static void section_cpu_vs_gpu(int quick, int no_cpu)
{
    print_header("(iii) CPU vs GPU, fp64 (reference skipped, w0 not projected)");
    struct {
        int64_t n, d, S, gpu_steps, cpu_steps;
        const char *gname, *cname;
    } sh[] = {
        {2048, 4096, 32, 3100, quick ? 10 : 30, "n2048_d4096_S32_gpu", "n2048_d4096_S32_cpu"},
        {4096, 8192, 256, 3100, quick ? 2 : 4, "n4096_d8192_S256_gpu", "n4096_d8192_S256_cpu"},
    };
    if (g_smoke) {
        sh[0].n = 128, sh[0].d = 256, sh[0].S = 8, sh[0].gpu_steps = 30, sh[0].cpu_steps = 10;
        sh[1].n = 256, sh[1].d = 600, sh[1].S = 16, sh[1].gpu_steps = 20, sh[1].cpu_steps = 4;
    }
    for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
        bn_dataset *ds = make_fast_data(sh[i].n, sh[i].d, 2 + i);
        if (!ds) continue;
        bench_case g = {"", BN_BACKEND_CUDA, BN_FP64, sh[i].S, sh[i].gpu_steps, 1000000, 10, 1, 0};
        result rg = {.section = "iii", .name = sh[i].gname};
        run_case(ds, &g, &rg);
        emit(&rg);
        if (!no_cpu) {
            bench_case cc = {"", BN_BACKEND_CPU, BN_FP64, sh[i].S, sh[i].cpu_steps, 1000000, 0, 1, 0};
            result rc = {.section = "iii", .name = sh[i].cname};
            run_case(ds, &cc, &rc);
            if (rc.ok) {
                size_t k = strlen(rc.note);
                snprintf(rc.note + k, sizeof rc.note - k, "; CPU timed on %lld steps only", (long long)sh[i].cpu_steps);
            }
            emit(&rc);
            if (rg.ok && rc.ok) {
                char nm[64];
                snprintf(nm, sizeof nm, "%s_cpu_over_gpu_ms", sh[i].gname);
                emit_value("iii", nm, rc.ms_per_step / rg.ms_per_step, "x", "CPU ms/step / GPU ms/step");
            }
        }
        bn_dataset_free(ds);
    }
}

/* ------------------------------------------------------------- check dump */

static int write_text(const char *path, const char *text)
{
    return bn_write_file_atomic(path, text, strlen(text)) == BN_OK ? 0 : -1;
}

static int dump_check(const char *dir, int64_t steps, int64_t S, bn_backend_kind kind)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "bench_gpu: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    bn_dataset *ds = NULL;
    if (bn_dataset_generate(PAPER_SPEC, BN_LOSS_SQUARE, &ds) != BN_OK) {
        fprintf(stderr, "bench_gpu: %s\n", bn_last_error());
        return 1;
    }
    bn_run_config c;
    bn_run_config_default(&c);
    c.backend = kind;
    c.device = g_device;
    c.precision = BN_FP64;
    c.steps = steps;
    c.every = 1;
    c.seeds = S;
    c.eta_w = 0.9;
    c.eta_gamma = 0.05;
    c.gamma0 = 0.1;
    c.w0_align = 0;
    c.w0_noise = 1;
    bn_sim *sim = NULL;
    if (bn_sim_create(ds, &c, &sim) != BN_OK || bn_sim_run(sim, NULL, NULL) != BN_OK) {
        fprintf(stderr, "bench_gpu: check run: %s\n", bn_last_error());
        return 1;
    }
    int64_t n = bn_dataset_n(ds), d = bn_dataset_d(ds), R = bn_sim_records(sim);
    char path[4096];
    int64_t shp[2];
    int bad = 0;
    shp[0] = n, shp[1] = d;
    snprintf(path, sizeof path, "%s/X.npy", dir);
    bad |= bn_npy_write_f64(path, bn_dataset_X(ds), 2, shp) != BN_OK;
    shp[0] = n;
    snprintf(path, sizeof path, "%s/y.npy", dir);
    bad |= bn_npy_write_f64(path, bn_dataset_y(ds), 1, shp) != BN_OK;
    shp[0] = S, shp[1] = d;
    snprintf(path, sizeof path, "%s/w0.npy", dir);
    bad |= bn_npy_write_f64(path, bn_sim_w0(sim), 2, shp) != BN_OK;
    shp[0] = d;
    snprintf(path, sizeof path, "%s/ref.npy", dir);
    bad |= bn_npy_write_f64(path, bn_sim_w_ref(sim), 1, shp) != BN_OK;
    bn_npz *z = NULL;
    bad |= bn_npz_create(&z) != BN_OK;
    const char *names[] = {"loss", "gamma", "rho", "w_norm", "alpha", "beta"};
    for (size_t i = 0; !bad && i < sizeof names / sizeof names[0]; i++) {
        const double *p;
        int64_t r, cc;
        bad |= bn_sim_field(sim, names[i], &p, &r, &cc) != BN_OK;
        int64_t s2[2] = {r, cc};
        if (!bad) bad |= bn_npz_add_f64(z, names[i], p, 2, s2) != BN_OK;
    }
    snprintf(path, sizeof path, "%s/bnspike.npz", dir);
    if (!bad) bad |= bn_npz_write(z, path) != BN_OK;
    bn_npz_free(z);
    char meta[1024];
    snprintf(meta, sizeof meta,
             "{\"data\": \"%s\", \"n\": %lld, \"d\": %lld, \"S\": %lld, \"steps\": %lld, \"every\": 1, "
             "\"records\": %lld, \"eta_w\": %.17g, \"eta_gamma\": %.17g, \"gamma0\": %.17g, \"loss\": \"square\", "
             "\"precision\": \"fp64\", \"backend\": \"%s\", \"backend_desc\": \"%s\"}\n",
             PAPER_SPEC, (long long)n, (long long)d, (long long)S, (long long)steps, (long long)R, c.eta_w,
             c.eta_gamma, c.gamma0, bn_backend_name(bn_sim_backend(sim)), bn_sim_backend_desc(sim));
    snprintf(path, sizeof path, "%s/meta.json", dir);
    bad |= write_text(path, meta) != 0;
    if (bad) fprintf(stderr, "bench_gpu: writing the check files failed: %s\n", bn_last_error());
    else printf("wrote %s/{X,y,w0,ref}.npy, meta.json and bnspike.npz (%lld trajectories, steps 0..%lld, %s)\n", dir,
                (long long)S, (long long)steps, bn_sim_backend_desc(sim));
    bn_sim_free(sim);
    bn_dataset_free(ds);
    return bad;
}

/* ------------------------------------------------------------- main */

static void usage(void)
{
    fprintf(stderr, "usage: bench_gpu [--csv FILE] [--quick] [--device N] [--no-fused] [--no-cpu] [--smoke]\n"
                    "       bench_gpu --dump-check DIR [--steps T] [--seeds S] [--backend auto|cuda|cpu]\n");
}

int main(int argc, char **argv)
{
    const char *csv = NULL, *dump = NULL;
    int quick = 0, no_fused = 0, no_cpu = 0;
    int64_t steps = 30, seeds = 8;
    bn_backend_kind dump_kind = BN_BACKEND_AUTO;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--csv") == 0 && i + 1 < argc) csv = argv[++i];
        else if (strcmp(argv[i], "--quick") == 0) quick = 1;
        else if (strcmp(argv[i], "--smoke") == 0) g_smoke = 1;
        else if (strcmp(argv[i], "--no-fused") == 0) no_fused = 1;
        else if (strcmp(argv[i], "--no-cpu") == 0) no_cpu = 1;
        else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) g_device = atoi(argv[++i]);
        else if (strcmp(argv[i], "--dump-check") == 0 && i + 1 < argc) dump = argv[++i];
        else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) steps = atoll(argv[++i]);
        else if (strcmp(argv[i], "--seeds") == 0 && i + 1 < argc) seeds = atoll(argv[++i]);
        else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) {
            if (bn_parse_backend(argv[++i], &dump_kind) != BN_OK) {
                fprintf(stderr, "bench_gpu: %s\n", bn_last_error());
                return 2;
            }
        } else {
            usage();
            return 2;
        }
    }
    if (dump) return dump_check(dump, steps, seeds, dump_kind);

    char desc[4096];
    bn_backends_describe(desc, sizeof desc);
    printf("bnspike %s GPU benchmark\n%s", BN_VERSION, desc);
#ifndef BN_HAVE_CUDA
    (void)quick;
    (void)no_fused;
    (void)no_cpu;
    (void)csv;
    (void)section_paper;
    (void)section_big_s1;
    (void)section_cpu_vs_gpu;
    printf("bench_gpu: this build has no CUDA backend (rebuild with CUDA=1)\n");
    return 2;
#else
    if (bn_cuda_device_count() <= 0) {
        printf("bench_gpu: no CUDA device visible\n");
        return 2;
    }
    bn_cuda_info info;
    if (bn_cuda_device_info(g_device, &info) != BN_OK) {
        fprintf(stderr, "bench_gpu: device %d: %s\n", g_device, bn_last_error());
        return 1;
    }
    printf("device %d: %s, compute capability %d.%d, %d SMs, %.1f GiB (%.1f GiB free), L2 %.0f MiB\n", g_device,
           info.name, info.cc_major, info.cc_minor, info.sms, (double)info.total_mem / 1073741824.0,
           (double)info.free_mem / 1073741824.0, (double)info.l2_bytes / 1048576.0);
    printf("CUDA driver %d.%d, runtime %d.%d, cuBLAS %d.%d.%d\n", info.driver_version / 1000,
           (info.driver_version % 1000) / 10, info.runtime_version / 1000, (info.runtime_version % 1000) / 10,
           info.cublas_major, info.cublas_minor, info.cublas_patch);
    if (csv) {
        g_csv = fopen(csv, "w");
        if (!g_csv) {
            fprintf(stderr, "bench_gpu: cannot write %s: %s\n", csv, strerror(errno));
            return 1;
        }
        fprintf(g_csv, "section,case,backend,precision,path,n,d,S,steps_timed,seconds,ms_per_step,seed_steps_per_s,ok,note\n");
        fprintf(g_csv, "device,\"%s\",,,,,,,,,,,1,\"cc %d.%d; driver %d; runtime %d; cuBLAS %d.%d.%d\"\n", info.name,
                info.cc_major, info.cc_minor, info.driver_version, info.runtime_version, info.cublas_major,
                info.cublas_minor, info.cublas_patch);
    }
    double bw = 0;
    size_t bw_bytes = g_smoke ? ((size_t)16 << 20) : (quick ? ((size_t)256 << 20) : ((size_t)1 << 30));
    if (bn_cuda_copy_bandwidth(g_device, bw_bytes, 10, &bw) != BN_OK) {
        fprintf(stderr, "bench_gpu: bandwidth probe failed: %s\n", bn_last_error());
        g_failures++;
    } else {
        printf("\ndevice-to-device copy bandwidth (read + write, %zu MiB buffers): %.1f GB/s\n", bw_bytes >> 20, bw / 1e9);
        emit_value("bw", "copy_bandwidth_GBps", bw / 1e9, "GB/s", "cudaMemcpy D2D, (read+write)/time, median of 10");
    }
    double rate16k = 0, ratio_gc = 0, ratio_floor = 0;
    section_paper(quick, no_fused, no_cpu, &rate16k, &ratio_gc);
    section_big_s1(quick, bw, &ratio_floor);
    section_cpu_vs_gpu(quick, no_cpu);
    printf("\nSUMMARY paper_fp64_S16384_seed_steps_per_s=%.4g gpu_over_cpu_S1024=%.3g S1_fp32_ratio_to_read_X_twice=%.3g failures=%d\n",
           rate16k, ratio_gc, ratio_floor, g_failures);
    if (g_csv) fclose(g_csv);
    return g_failures ? 1 : 0;
#endif
}
