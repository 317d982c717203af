/* Where a GPU step's time goes (make CUDA=1 build/gpu_profile; needs a device).
 *
 *   build/gpu_profile [--device N] [--reps R]
 *
 * For the paper's size (n=64, d=256) at S = 1024 and 16384, fp64 and fp32, it
 * times through the backend table, each op alone over R repetitions (one
 * synchronization at the end, so launch overhead overlaps as in a run):
 *   xw        U = Xc·W              (cuBLAS)
 *   forward   the forward column pass
 *   xtq       G = Xcᵀ·Q             (cuBLAS)
 *   update    the update column pass
 *   step_ops  the four in sequence (one GD step through the ops)
 *   graph_K   run_steps over 2000 steps, records every K (K = 1, 10, T) with
 *             the ring on the device and no downloads (the captured graphs)
 *   download  one record block device → host (GB/s, pageable memory)
 *   sim_run_K bn_sim_run over 2000 steps, every K: what a user gets, with the
 *             driver's record downloads and conversion between blocks
 * and for n = d = 16384, S = 1, fp32 the two products against reading X twice.
 * Prints one line per measurement: "profile <case> <what> <ms> <note>". */
#include "backend.h"
#include "bnspike.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define CK(x)                                                                                  \
    do {                                                                                       \
        bn_status st_ = (x);                                                                   \
        if (st_) {                                                                             \
            fprintf(stderr, "gpu_profile: %s failed: %s\n", #x, bn_last_error());              \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

static void *dev_fill(bn_backend *be, size_t count, double scale, uint64_t seed)
{
    size_t rs = bn_real_size(be->precision);
    void *host = malloc(count * rs + 1), *dev = NULL;
    uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (size_t i = 0; i < count; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double v = scale * ((double)(x >> 11) / 9007199254740992.0 - 0.5);
        if (rs == 8) ((double *)host)[i] = v;
        else ((float *)host)[i] = (float)v;
    }
    CK(be->ops->alloc(be, count * rs + 1, &dev));
    CK(be->ops->upload(be, dev, host, count * rs));
    free(host);
    return dev;
}

static void report(const char *cs, const char *what, double ms, const char *note)
{
    printf("profile %-22s %-12s %10.4f ms  %s\n", cs, what, ms, note);
    fflush(stdout);
}

static void paper_case(int device, bn_precision prec, int64_t S, int reps)
{
    int64_t n = 64, d = 256, T = 2000;
    bn_backend *be = NULL;
    CK(bn_backend_open(BN_BACKEND_CUDA, prec, 0, device, &be));
    char cs[64];
    snprintf(cs, sizeof cs, "paper_%s_S%lld", bn_precision_name(prec), (long long)S);
    void *Xc = dev_fill(be, (size_t)(n * d), 1.0, 1), *y = dev_fill(be, (size_t)n, 1.0, 2);
    void *uhat = dev_fill(be, (size_t)n, 0.1, 3), *ehat = dev_fill(be, (size_t)d, 0.1, 4);
    void *W = dev_fill(be, (size_t)(d * S), 1.0, 5), *gamma = dev_fill(be, (size_t)S, 0.1, 6);
    void *etaw = dev_fill(be, (size_t)S, 0.0, 7), *etag = dev_fill(be, (size_t)S, 0.0, 8);
    void *U = dev_fill(be, (size_t)(n * S), 0, 9), *Q = dev_fill(be, (size_t)(n * S), 0, 10);
    void *G = dev_fill(be, (size_t)(d * S), 0, 11);
    int64_t R10 = T / 10 + 2, R1 = T + 1;
    size_t rs = bn_real_size(prec);
    void *ring = dev_fill(be, (size_t)(R1 * BN_ST_COUNT * S), 0, 12), *scratch = dev_fill(be, (size_t)(BN_ST_COUNT * S), 0, 13);
    int64_t *div = NULL;
    CK(be->ops->alloc(be, (size_t)S * 8, (void **)&div));
    int64_t *hdiv = malloc((size_t)S * 8);
    for (int64_t j = 0; j < S; j++) hdiv[j] = -1;
    CK(be->ops->upload(be, div, hdiv, (size_t)S * 8));
    /* eta = 0 keeps the state fixed, so every repetition does the same work. */
    CK(be->ops->synchronize(be));

    double t0, ms;
#define TIME_OPS(name, call)                                                                   \
    CK(call);                                                                                  \
    CK(be->ops->synchronize(be));                                                              \
    t0 = now();                                                                                \
    for (int r = 0; r < reps; r++) CK(call);                                                   \
    CK(be->ops->synchronize(be));                                                              \
    ms = 1e3 * (now() - t0) / reps;                                                            \
    report(cs, name, ms, "")
    TIME_OPS("xw", be->ops->product_xw(be, n, d, S, Xc, W, U));
    TIME_OPS("forward", be->ops->forward_columns(be, n, S, U, y, uhat, gamma, 0, Q, scratch));
    TIME_OPS("xtq", be->ops->product_xtq(be, n, d, S, Xc, Q, G));
    TIME_OPS("update", be->ops->update_columns(be, d, S, W, G, ehat, etaw, etag, gamma, 1, scratch, 5, div));
    CK(be->ops->synchronize(be));
    t0 = now();
    for (int r = 0; r < reps; r++) {
        CK(be->ops->product_xw(be, n, d, S, Xc, W, U));
        CK(be->ops->forward_columns(be, n, S, U, y, uhat, gamma, 0, Q, scratch));
        CK(be->ops->product_xtq(be, n, d, S, Xc, Q, G));
        CK(be->ops->update_columns(be, d, S, W, G, ehat, etaw, etag, gamma, 1, scratch, 5, div));
    }
    CK(be->ops->synchronize(be));
    ms = 1e3 * (now() - t0) / reps;
    char note[96];
    snprintf(note, sizeof note, "%.3g seed-steps/s", (double)S / (ms * 1e-3));
    report(cs, "step_ops", ms, note);

    int64_t everys[3] = {1, 10, T};
    for (int k = 0; k < 3; k++) {
        bn_step_plan plan = {.n = n, .d = d, .S = S, .logistic = 0, .Xc = Xc, .y = y, .uhat = uhat,
                             .ehat = ehat, .eta_w = etaw, .eta_gamma = etag, .W = W, .gamma = gamma,
                             .U = U, .Q = Q, .G = G, .stats_ring = ring, .ring_slots = R1,
                             .stats_scratch = scratch, .diverged_step = div, .steps = T, .every = everys[k]};
        if (!be->ops->run_steps) break;
        CK(be->ops->run_steps(be, &plan, 0, 50, 0)); /* capture */
        CK(be->ops->synchronize(be));
        t0 = now();
        CK(be->ops->run_steps(be, &plan, 50, T, bn_record_slot(50, T, everys[k]) >= 0 ? 0 : 0));
        CK(be->ops->synchronize(be));
        ms = 1e3 * (now() - t0) / (double)(T - 50);
        char what[32];
        snprintf(what, sizeof what, "graph_%lld", (long long)everys[k]);
        snprintf(note, sizeof note, "%.3g seed-steps/s", (double)S / (ms * 1e-3));
        report(cs, what, ms, note);
    }
    /* One block of 50 records down, pageable. */
    size_t bytes = (size_t)50 * BN_ST_COUNT * (size_t)S * rs;
    void *host = malloc(bytes);
    CK(be->ops->download(be, host, ring, bytes));
    CK(be->ops->synchronize(be));
    t0 = now();
    for (int r = 0; r < 5; r++) CK(be->ops->download(be, host, ring, bytes));
    CK(be->ops->synchronize(be));
    ms = 1e3 * (now() - t0) / 5;
    snprintf(note, sizeof note, "%.2f GB/s for %.1f MB", (double)bytes / (ms * 1e-3) / 1e9, (double)bytes / 1e6);
    report(cs, "download", ms, note);
    free(host);
    (void)R10;
    void *bufs[] = {Xc, y, uhat, ehat, W, gamma, etaw, etag, U, Q, G, ring, scratch, div};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->ops->dealloc(be, bufs[i]);
    free(hdiv);
    bn_backend_close(be);
}

static void sim_case(int device, bn_precision prec, int64_t S, int64_t every, int observe)
{
    bn_dataset *ds = NULL;
    CK(bn_dataset_generate("hilbert:n=64,d=256,noise=0.01,seed=1", BN_LOSS_SQUARE, &ds));
    bn_run_config c;
    bn_run_config_default(&c);
    c.backend = BN_BACKEND_CUDA;
    c.device = device;
    c.precision = prec;
    c.steps = 2000;
    c.every = every;
    c.seeds = S;
    c.eta_w = 0.5;
    c.skip_reference = 1;
    c.project_w0 = 0;
    bn_sim *sim = NULL;
    CK(bn_sim_create(ds, &c, &sim));
    double t0 = now();
    bn_recorder *rec = NULL;
    if (observe) {
        bn_recorder_config rc = {.every = every, .keep = 1};
        bn_event_params_default(&rc.events);
        c.every = c.steps;
        CK(bn_recorder_create(ds, &c, sim, &rc, 1.0, &rec));
        CK(bn_recorder_run(rec, sim, NULL, NULL));
    } else {
        CK(bn_sim_run(sim, NULL, NULL));
    }
    double wall = now() - t0;
    char cs[64], what[48], note[128];
    snprintf(cs, sizeof cs, "paper_%s_S%lld", bn_precision_name(prec), (long long)S);
    snprintf(what, sizeof what, "%s_%lld", observe ? "recorder" : "sim_run", (long long)every);
    double ms = 1e3 * wall / 2000.0;
    snprintf(note, sizeof note, "%.3g seed-steps/s (sim wall %.3f s, total %.3f s)", (double)S / (ms * 1e-3),
             bn_sim_wall_seconds(sim), wall);
    report(cs, what, ms, note);
    bn_recorder_free(rec);
    bn_sim_free(sim);
    bn_dataset_free(ds);
}

static void big_s1(int device, int reps)
{
    int64_t n = 16384, d = 16384;
    bn_backend *be = NULL;
    CK(bn_backend_open(BN_BACKEND_CUDA, BN_FP32, 0, device, &be));
    void *Xc = dev_fill(be, (size_t)(n * d), 1.0, 1), *w = dev_fill(be, (size_t)d, 1.0, 2);
    void *u = dev_fill(be, (size_t)n, 0, 3), *g = dev_fill(be, (size_t)d, 0, 4);
    size_t bytes = (size_t)(n * d) * 4;
    double t0, ms;
    const char *cs = "big_fp32_S1";
    TIME_OPS("xw", be->ops->product_xw(be, n, d, 1, Xc, w, u));
    double xw = ms;
    TIME_OPS("xtq", be->ops->product_xtq(be, n, d, 1, Xc, u, g));
    double xtq = ms;
    char note[96];
    snprintf(note, sizeof note, "two products %.4f ms; X is %.0f MB", xw + xtq, (double)bytes / 1e6);
    report(cs, "products", xw + xtq, note);
    be->ops->dealloc(be, Xc);
    be->ops->dealloc(be, w);
    be->ops->dealloc(be, u);
    be->ops->dealloc(be, g);
    bn_backend_close(be);
}

int main(int argc, char **argv)
{
    int device = 0, reps = 200;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) device = atoi(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: gpu_profile [--device N] [--reps R]\n");
            return 2;
        }
    }
    char buf[2048];
    bn_backends_describe(buf, sizeof buf);
    fputs(buf, stdout);
    int64_t Ss[2] = {1024, 16384};
    for (int p = 0; p < 2; p++)
        for (int k = 0; k < 2; k++) paper_case(device, p ? BN_FP32 : BN_FP64, Ss[k], reps);
    for (int k = 0; k < 2; k++) {
        sim_case(device, BN_FP64, Ss[k], 10, 0);
        sim_case(device, BN_FP64, Ss[k], 2000, 0);
        sim_case(device, BN_FP64, Ss[k], 10, 1);
    }
    big_s1(device, reps / 4 > 10 ? reps / 4 : 10);
    return 0;
}
