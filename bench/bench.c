/* The unified benchmark (make bench): one table, every row measured in the
 * same run, side by side — bnspike, the matrix-product floor and the peers.
 *
 *   build/bench_table [--quick] [--full] [--passive | --spin N|keep] [--threads N] [--reps R]
 *                     [--gap SEC] [--csv FILE] [--peers torch,numpy|none] [--python PY]
 *                     [--only TEXT] [--no-scaling] [--no-memory] [--device N] [--gpu-steps N]
 *                     [--steps-scale F] [--work DIR] [--keep]
 *
 * Rows (one per case and backend): ms per GD step, seed-steps/s, the ratio to
 * the floor (bnspike / floor) and to each peer (peer / bnspike, so > 1 means
 * bnspike is faster).  Cases: the paper's size n=64, d=256 at S=1, 256, 4096;
 * n=2048, d=4096, S=32; n=4096, d=8192, S=256 (GPU only); square and logistic;
 * fp64 and fp32; with and without sharpness every 10 steps.  A section of
 * extra sizes feeds the scaling figure (bench/plot_scaling.py), and a memory
 * section measures the peak resident set of each implementation against S.
 *
 * Participants, all with the same thread count:
 *   bnspike  bn_sim_run through the public API; bn_sim_create (data upload,
 *            start, reference) is not timed.  The start w0 and the reference
 *            direction are the ones the correctness check used (the first S
 *            rows of one set), given explicitly, so every participant runs
 *            the same trajectories.
 *   floor    the two products of a step (U = Xc·W, G = Xcᵀ·Q) of the same
 *            shapes and precision, T times, timed alone through OpenBLAS
 *            (cblas_dgemm/sgemm; on a GPU: cuBLAS through the CUDA backend's
 *            product ops).  Everything else a step does is overhead on it.
 *   torch    bench/peers/torch_batched.py: the batched run as a PyTorch user
 *            writes it (autograd over the S columns, double backward for the
 *            Hessian-vector products), --device cpu (and cuda with a GPU).
 *   numpy    bench/peers/numpy_batched.py: the same in plain numpy with the
 *            analytic gradient and HVP.
 * The peers run as servers (one Python process each, torch imported once),
 * fed the same inputs (X, y, w0, reference, step sizes) from files this
 * program writes.  Every participant runs the same T steps with the same
 * records (every 10 steps) and the same sharpness schedule.  With a device
 * (a CUDA=1 build where the CUDA backend opens), every case also runs
 * bnspike --backend cuda, the floor on cuBLAS and torch --device cuda; the
 * GPU rows without sharpness run at least --gpu-steps steps (2000), and the
 * table gives the CPU/GPU ratio.  --steps-scale F multiplies every T (smoke
 * tests, e.g. on the CUDA host emulator).
 *
 * Correctness before timing: for each data set and loss, a short fp64 run of
 * bnspike (8 trajectories, every step recorded, sharpness every 10 steps on
 * the paper's data) is compared with each peer on identical inputs: loss, γ
 * and ρ must agree to 1e-9 relative over the steps before any spike's onset
 * (bn_find_first_spike on |ρ|; later, rounding differences grow
 * geometrically, MODEL.md).  A peer that fails is not timed on that data.
 *
 * Timing: repetitions interleave the participants (floor, bnspike, torch,
 * numpy, floor, ...) with a pause of --gap seconds (0.3) between phases: the
 * thread pools of one phase (OpenBLAS's threads and libgomp's workers spin a
 * while after each call before they sleep) must not steal a core from the
 * next.  The first repetition is a warm-up; reported is the median over the
 * others, and a row whose bnspike or floor times spread by more than 1.5x
 * (max/min) is flagged "noisy".
 *
 * OpenMP's waiting: unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set, the
 * program re-executes itself with GOMP_SPINCOUNT=10000 (--spin N; --spin keep
 * leaves the environment alone), which the peers inherit (torch's OpenMP and
 * MKL's gnu_thread layer are libgomp too; OpenBLAS's pthreads are not
 * affected).  On a machine shared with other busy processes, workers that
 * spin long (libgomp's default: 300000 iterations; OMP_WAIT_POLICY=active:
 * forever) keep their core while the teammate they wait for queues behind
 * another process, and every barrier then costs a time slice: 10-100x
 * slower steps, seen here.  Passive waiting (--passive) avoids that but pays
 * a futex wake-up per parallel region, about 2x per step at the paper's size
 * here.  A short spin is as fast as the default on a quiet machine, and in
 * the loaded runs recorded so far it never blew up.  bench/RESULTS.md shows
 * the three.
 *
 * The machine, load averages (before and after), library versions, BLAS
 * kernels and thread counts are printed first; --csv writes every
 * measurement (one line per case and participant, with min/median/max). */
#include "bnspike.h"
#include "backend.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern void openblas_set_num_threads(int num_threads);
extern char *openblas_get_corename(void);
extern char *openblas_get_config(void);

#define PAPER_SPEC "hilbert:n=64,d=256,noise=0.01,seed=1"
#define MAXREP 15
#define CHECK_SEEDS 8
#define CHECK_TOL 1e-9
#define SHARP_CHECK_TOL 1e-4

/* ------------------------------------------------------------- utilities */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void pause_s(double s)
{
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_of(const double *v, int k)
{
    if (k <= 0) return NAN;
    double t[MAXREP];
    memcpy(t, v, (size_t)k * sizeof *t);
    qsort(t, (size_t)k, sizeof *t, cmp_double);
    return k % 2 ? t[k / 2] : 0.5 * (t[k / 2 - 1] + t[k / 2]);
}

static double min_of(const double *v, int k)
{
    double m = INFINITY;
    for (int i = 0; i < k; i++) m = fmin(m, v[i]);
    return k ? m : NAN;
}

static double max_of(const double *v, int k)
{
    double m = -INFINITY;
    for (int i = 0; i < k; i++) m = fmax(m, v[i]);
    return k ? m : NAN;
}

static void die(const char *what)
{
    fprintf(stderr, "bench: %s: %s\n", what, bn_last_error());
    exit(1);
}

static void load_line(char *buf, size_t len)
{
    double l[3] = {NAN, NAN, NAN};
    if (getloadavg(l, 3) < 3) snprintf(buf, len, "load average unavailable");
    else snprintf(buf, len, "load average %.2f %.2f %.2f (1/5/15 min)", l[0], l[1], l[2]);
}

/* The value of "key": in a JSON line (numbers and strings only; enough for
 * the peers' flat answers). */
static int json_num(const char *s, const char *key, double *out)
{
    char pat[96];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = s ? strstr(s, pat) : NULL;
    if (!p) return 0;
    p += strlen(pat);
    while (*p == ' ') p++;
    char *end;
    double v = strtod(p, &end);
    if (end == p) return 0;
    *out = v;
    return 1;
}

static int json_str(const char *s, const char *key, char *buf, size_t len)
{
    char pat[96];
    snprintf(pat, sizeof pat, "\"%s\": \"", key);
    const char *p = s ? strstr(s, pat) : NULL;
    if (!p || !len) return 0;
    p += strlen(pat);
    size_t k = 0;
    for (; *p && *p != '"' && k + 1 < len; p++) {
        if (*p == '\\' && p[1]) p++;
        buf[k++] = *p;
    }
    buf[k] = '\0';
    return 1;
}

static int json_true(const char *s, const char *key)
{
    char pat[96];
    snprintf(pat, sizeof pat, "\"%s\": true", key);
    return s && strstr(s, pat) != NULL;
}

/* ------------------------------------------------------------- settings */

static int g_threads = 2, g_reps = 5, g_quick = 0, g_full = 0, g_keep = 0, g_device = 0;
static int g_scaling = 1, g_memory = 1, g_gpu = 0;
static int64_t g_gpu_steps = 2000;
static double g_tscale = 1.0;
static double g_gap = 0.3;
static const char *g_python = "python3", *g_peers_dir = "bench/peers", *g_only = NULL;
static char g_work[512] = "";
static FILE *g_csv = NULL;
static int g_failures = 0;
static double g_t0;

/* One CSV line (NAN and negative sizes print as empty fields). */
static void csv_line(const char *section, const char *name, int64_t n, int64_t d, int64_t S, const char *loss,
                     const char *prec, int64_t sharp, int64_t every, int64_t steps, const char *impl,
                     const char *device, double ms, double ms_min, double ms_max, double sps, int reps, double hvps,
                     double rss, double rss_base, const char *status, const char *note)
{
    if (!g_csv) return;
    double v[8] = {ms, ms_min, ms_max, sps, (double)reps, hvps, rss, rss_base};
    fprintf(g_csv, "%s,%s,%lld,%lld,%lld,%s,%s,%lld,%lld,%lld,%d,%s,%s", section, name, (long long)n, (long long)d,
            (long long)S, loss, prec, (long long)sharp, (long long)every, (long long)steps, g_threads, impl, device);
    for (int i = 0; i < 8; i++) {
        if (isnan(v[i]) || v[i] < 0) fprintf(g_csv, ",");
        else fprintf(g_csv, ",%.6g", v[i]);
    }
    fprintf(g_csv, ",%s,\"%s\"\n", status ? status : "", note ? note : "");
}

/* ------------------------------------------------------------- peers */

enum { P_TORCH, P_NUMPY, P_TORCH_CUDA, NPEER };
static const char *const peer_label[NPEER] = {"torch", "numpy", "torch-cuda"};

typedef struct {
    int wanted, alive;
    pid_t pid;
    FILE *to, *from;
    char *line; /* last answer */
    size_t cap;
    char hello[4096];
} peer;

static peer g_peer[NPEER];

/* fork + exec with the child's stdin/stdout on pipes; stderr is shared. */
static pid_t spawn(char *const argv[], FILE **to, FILE **from)
{
    int in[2], out[2];
    if (pipe(in) != 0) return -1;
    if (pipe(out) != 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t p = fork();
    if (p == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    if (p < 0) {
        close(in[1]);
        close(out[0]);
        return -1;
    }
    *to = fdopen(in[1], "w");
    *from = fdopen(out[0], "r");
    return p;
}

static int peer_read(peer *pr)
{
    if (!pr->alive) return 0;
    ssize_t k = getline(&pr->line, &pr->cap, pr->from);
    if (k <= 0) {
        pr->alive = 0;
        return 0;
    }
    return 1;
}

static void peer_start(int id)
{
    peer *pr = &g_peer[id];
    char script[1024], th[16];
    snprintf(script, sizeof script, "%s/%s", g_peers_dir, id == P_NUMPY ? "numpy_batched.py" : "torch_batched.py");
    snprintf(th, sizeof th, "%d", g_threads);
    char *argv_t[] = {(char *)g_python, script, "--serve", "--device", id == P_TORCH_CUDA ? "cuda" : "cpu",
                      "--threads", th, NULL};
    char *argv_n[] = {(char *)g_python, script, "--serve", "--threads", th, NULL};
    pr->pid = spawn(id == P_NUMPY ? argv_n : argv_t, &pr->to, &pr->from);
    pr->alive = pr->pid > 0;
    snprintf(pr->hello, sizeof pr->hello, "could not start %s %s", g_python, script);
    if (!pr->alive || !peer_read(pr)) {
        printf("  %-10s unavailable: %s\n", peer_label[id], pr->hello);
        pr->alive = 0;
        return;
    }
    snprintf(pr->hello, sizeof pr->hello, "%s", pr->line);
    if (!json_true(pr->line, "ready")) {
        char err[512] = "no answer";
        json_str(pr->line, "error", err, sizeof err);
        printf("  %-10s unavailable: %s\n", peer_label[id], err);
        pr->alive = 0;
        return;
    }
    char a[256] = "", b[256] = "", c[256] = "", e[256] = "";
    double thr = 0;
    json_num(pr->line, id == P_NUMPY ? "blas_threads" : "threads", &thr);
    if (id == P_NUMPY) {
        json_str(pr->line, "numpy", a, sizeof a);
        json_str(pr->line, "blas", b, sizeof b);
        json_str(pr->line, "blas_kernel", c, sizeof c);
        printf("  %-10s numpy %s, BLAS %s, kernels %s, %g BLAS threads (elementwise work: 1 thread)\n",
               peer_label[id], a, b, c[0] ? c : "?", thr);
    } else {
        json_str(pr->line, "torch", a, sizeof a);
        json_str(pr->line, "blas", b, sizeof b);
        json_str(pr->line, "cpu_capability", c, sizeof c);
        json_str(pr->line, id == P_TORCH_CUDA ? "gpu" : "openmp", e, sizeof e);
        printf("  %-10s torch %s, %s, ATen CPU kernels %s, %s, %g threads\n", peer_label[id], a, b[0] ? b : "BLAS ?",
               c[0] ? c : "?", e, thr);
    }
}

static void peer_stop(int id)
{
    peer *pr = &g_peer[id];
    if (pr->pid <= 0) return;
    if (pr->alive) {
        fprintf(pr->to, "{\"cmd\": \"quit\"}\n");
        fflush(pr->to);
    }
    fclose(pr->to);
    fclose(pr->from);
    int st;
    waitpid(pr->pid, &st, 0);
    pr->pid = 0;
    pr->alive = 0;
    free(pr->line);
    pr->line = NULL;
}

/* One run of a peer: seconds, or NAN with *err set. */
static double peer_run(int id, const char *dir, int64_t S, bn_precision prec, int64_t T, int64_t every,
                       int64_t sharp, const char *out, double *hvps, char *err, size_t errlen)
{
    peer *pr = &g_peer[id];
    *hvps = 0;
    if (!pr->alive) {
        snprintf(err, errlen, "peer not running");
        return NAN;
    }
    char outq[700] = "null";
    if (out) snprintf(outq, sizeof outq, "\"%s\"", out);
    fprintf(pr->to,
            "{\"cmd\": \"run\", \"inputs\": \"%s\", \"S\": %lld, \"dtype\": \"%s\", \"steps\": %lld, "
            "\"every\": %lld, \"sharpness_every\": %lld, \"out\": %s}\n",
            dir, (long long)S, prec == BN_FP32 ? "float32" : "float64", (long long)T, (long long)every,
            (long long)sharp, outq);
    fflush(pr->to);
    if (!peer_read(pr)) {
        snprintf(err, errlen, "peer exited");
        return NAN;
    }
    double sec = NAN;
    if (!json_true(pr->line, "ok") || !json_num(pr->line, "seconds", &sec)) {
        char e[400] = "bad answer";
        json_str(pr->line, "error", e, sizeof e);
        snprintf(err, errlen, "%s", e);
        return NAN;
    }
    json_num(pr->line, "hvps", hvps);
    if (!json_true(pr->line, "finite")) snprintf(err, errlen, "non-finite records");
    return sec;
}

/* ------------------------------------------------------------- data sets */

enum { D_PAPER, D_BIG, D_HUGE, D_MID1, D_MID2, NDATA };

typedef struct {
    const char *key, *spec;
    int64_t n, d;
    int solve;          /* LS/SVM reference and w0 projected on the row space of Xc
                           (else reference Xcᵀy/‖Xcᵀy‖ and w0 unprojected: an SVD
                           of the data would be minutes of setup on 2 cores)     */
    int64_t check_steps, check_sharp;
    /* per loss */
    bn_dataset *ds[2];
    int64_t smax[2];
    char dir[2][600];
    int ready[2];
    int check[2][NPEER]; /* 0 not run, 1 pass, -1 fail */
    double *w0[2], *ref[2];
} bdata;

static bdata g_data[NDATA] = {
#define DATA(k, sp, nn, dd, so, cs, csh) {.key = k, .spec = sp, .n = nn, .d = dd, .solve = so, .check_steps = cs, .check_sharp = csh}
    DATA("paper", PAPER_SPEC, 64, 256, 1, 40, 10),
    DATA("n2048", "gaussian:n=2048,d=4096,seed=1", 2048, 4096, 0, 20, 0),
    DATA("n4096", "gaussian:n=4096,d=8192,seed=1", 4096, 8192, 0, 10, 0),
    DATA("n512", "gaussian:n=512,d=1024,seed=1", 512, 1024, 0, 20, 0),
    DATA("n1024", "gaussian:n=1024,d=2048,seed=1", 1024, 2048, 0, 20, 0),
#undef DATA
};

/* The run settings every participant uses (MODEL.md's example step sizes,
 * random starts w0 = ξ). */
static void base_config(bn_run_config *c, bn_loss loss, bn_precision prec, bn_backend_kind kind)
{
    bn_run_config_default(c);
    c->loss = loss;
    c->precision = prec;
    c->backend = kind;
    c->threads = g_threads;
    c->device = g_device;
    c->eta_w = 0.9;
    c->eta_gamma = 0.05;
    c->gamma0 = 0.1;
    c->w0_align = 0;
    c->w0_noise = 1;
    c->seed = 0;
}

static int write_text(const char *path, const char *text)
{
    return bn_write_file_atomic(path, text, strlen(text)) == BN_OK ? 0 : -1;
}

static bn_dataset *data_get(bdata *b, bn_loss loss)
{
    if (!b->ds[loss]) {
        double t = now();
        if (bn_dataset_generate(b->spec, loss, &b->ds[loss]) != BN_OK) die(b->spec);
        printf("  data %s (%s): generated in %.1f s\n", b->spec, bn_loss_name(loss), now() - t);
    }
    return b->ds[loss];
}

/* Writes X.npy, y.npy, w0.npy (smax rows), ref.npy and meta.json for the peers
 * and keeps w0 and the reference for bnspike's timed runs. */
static void data_dump(bdata *b, bn_loss loss)
{
    if (b->ready[loss]) return;
    bn_dataset *ds = data_get(b, loss);
    int64_t n = b->n, d = b->d, S = b->smax[loss];
    double t = now();
    bn_run_config c;
    base_config(&c, loss, BN_FP64, BN_BACKEND_CPU);
    c.seeds = S;
    c.steps = 1;
    double *ref = NULL;
    if (!b->solve) {
        double *xc = NULL;
        if (bn_dataset_centered(ds, &xc) != BN_OK) die("centering");
        ref = calloc((size_t)d, sizeof *ref);
        const double *y = bn_dataset_y(ds);
        for (int64_t i = 0; i < n; i++)
            for (int64_t k = 0; k < d; k++) ref[k] += xc[i * d + k] * y[i];
        free(xc);
        c.w_ref = ref;
        c.project_w0 = 0;
    }
    bn_sim *sim = NULL;
    if (bn_sim_create(ds, &c, &sim) != BN_OK) die("setup of the shared start");
    b->w0[loss] = malloc((size_t)(S * d) * sizeof(double));
    b->ref[loss] = malloc((size_t)d * sizeof(double));
    memcpy(b->w0[loss], bn_sim_w0(sim), (size_t)(S * d) * sizeof(double));
    memcpy(b->ref[loss], bn_sim_w_ref(sim), (size_t)d * sizeof(double));
    const bn_ref_info *ri = bn_sim_ref_info(sim);
    char refdesc[160];
    if (b->solve)
        snprintf(refdesc, sizeof refdesc, "%s, rank %lld", loss == BN_LOSS_SQUARE ? "least squares" : "hard-margin SVM",
                 (long long)ri->rank);
    else
        snprintf(refdesc, sizeof refdesc, "Xc^T y (supplied, not solved), w0 not projected");
    bn_sim_free(sim);
    free(ref);

    snprintf(b->dir[loss], sizeof b->dir[loss], "%s/%s-%s", g_work, b->key, bn_loss_name(loss));
    if (mkdir(b->dir[loss], 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "bench: cannot create %s: %s\n", b->dir[loss], strerror(errno));
        exit(1);
    }
    char path[800];
    int64_t shp[2];
    int bad = 0;
    shp[0] = n, shp[1] = d;
    snprintf(path, sizeof path, "%s/X.npy", b->dir[loss]);
    bad |= bn_npy_write_f64(path, bn_dataset_X(ds), 2, shp) != BN_OK;
    shp[0] = n;
    snprintf(path, sizeof path, "%s/y.npy", b->dir[loss]);
    bad |= bn_npy_write_f64(path, bn_dataset_y(ds), 1, shp) != BN_OK;
    shp[0] = S, shp[1] = d;
    snprintf(path, sizeof path, "%s/w0.npy", b->dir[loss]);
    bad |= bn_npy_write_f64(path, b->w0[loss], 2, shp) != BN_OK;
    shp[0] = d;
    snprintf(path, sizeof path, "%s/ref.npy", b->dir[loss]);
    bad |= bn_npy_write_f64(path, b->ref[loss], 1, shp) != BN_OK;
    char meta[1024];
    snprintf(meta, sizeof meta,
             "{\"data\": \"%s\", \"n\": %lld, \"d\": %lld, \"S\": %lld, \"steps\": %lld, \"every\": 1, "
             "\"eta_w\": %.17g, \"eta_gamma\": %.17g, \"gamma0\": %.17g, \"loss\": \"%s\", \"precision\": \"fp64\", "
             "\"sharpness_every\": %lld, \"sharpness_tol\": %.17g, \"sharpness_maxiter\": %lld, "
             "\"reference\": \"%s\", \"backend\": \"cpu\"}\n",
             b->spec, (long long)n, (long long)d, (long long)S, (long long)b->check_steps, c.eta_w, c.eta_gamma,
             c.gamma0, bn_loss_name(loss), (long long)b->check_sharp, c.sharpness_tol,
             (long long)c.sharpness_maxiter, refdesc);
    snprintf(path, sizeof path, "%s/meta.json", b->dir[loss]);
    bad |= write_text(path, meta) != 0;
    if (bad) die("writing the peers' inputs");
    printf("  inputs %-6s %-8s n=%lld d=%lld, %lld starts, reference %s (%.1f s) -> %s\n", b->key,
           bn_loss_name(loss), (long long)n, (long long)d, (long long)S, refdesc, now() - t, b->dir[loss]);
    b->ready[loss] = 1;
}

/* A sim of the shared start: the first S rows of the dumped w0 and its reference. */
static bn_status sim_make(bdata *b, bn_loss loss, bn_precision prec, bn_backend_kind kind, int64_t S, int64_t T,
                          int64_t every, int64_t sharp, bn_sim **out)
{
    bn_run_config c;
    base_config(&c, loss, prec, kind);
    c.seeds = S;
    c.steps = T;
    c.every = every;
    c.w0 = b->w0[loss];
    c.w0_rows = S;
    c.w_ref = b->ref[loss];
    c.project_w0 = 0; /* the dumped rows are already projected when b->solve */
    c.sharpness_every = sharp;
    return bn_sim_create(data_get(b, loss), &c, out);
}

/* ------------------------------------------------------------- correctness */

/* Max relative error of peer field `name` against bnspike's, entries of
 * trajectory j at records 0..upto[j]; rho relative down to |ρ| = 1e-5 and
 * absolute below (as torch_batched.py's compare). */
static double field_err(const char *npz, const char *name, const double *ours, int64_t S, int64_t R,
                        const int64_t *upto, int rho_floor, char *err, size_t errlen)
{
    bn_array a;
    if (bn_npz_read(npz, name, &a) != BN_OK) {
        snprintf(err, errlen, "%s: %s", name, bn_last_error());
        return INFINITY;
    }
    double m = 0;
    if (a.ndim != 2 || a.shape[0] != S || a.shape[1] != R) {
        snprintf(err, errlen, "%s has the wrong shape", name);
        m = INFINITY;
    } else {
        for (int64_t j = 0; j < S; j++)
            for (int64_t r = 0; r <= upto[j] && r < R; r++) {
                double x = a.data[j * R + r], y = ours[j * R + r];
                if (isnan(x) && isnan(y)) continue;
                double e = fabs(x - y) / fmax(fabs(y), rho_floor ? 1e-5 : 1e-300);
                if (!(e <= m)) m = isnan(e) ? INFINITY : e;
            }
    }
    bn_array_free(&a);
    return m;
}

/* The short fp64 run of bnspike, then each peer on the same inputs. */
static void data_check(bdata *b, bn_loss loss)
{
    int64_t S = b->smax[loss] < CHECK_SEEDS ? b->smax[loss] : CHECK_SEEDS, T = b->check_steps;
    bn_sim *sim = NULL;
    if (sim_make(b, loss, BN_FP64, BN_BACKEND_CPU, S, T, 1, b->check_sharp, &sim) != BN_OK ||
        bn_sim_run(sim, NULL, NULL) != BN_OK)
        die("check run");
    int64_t R = bn_sim_records(sim), rows, cols;
    const double *rho, *loss_r, *gam, *wn;
    bn_sim_field(sim, "rho", &rho, &rows, &cols);
    bn_sim_field(sim, "loss", &loss_r, &rows, &cols);
    bn_sim_field(sim, "gamma", &gam, &rows, &cols);
    bn_sim_field(sim, "w_norm", &wn, &rows, &cols);
    /* The stretch before the first spike of each trajectory. */
    int64_t upto[CHECK_SEEDS], shortest = R - 1;
    double *arho = malloc((size_t)R * sizeof(double));
    for (int64_t j = 0; j < S; j++) {
        for (int64_t r = 0; r < R; r++) arho[r] = fabs(rho[j * R + r]);
        bn_spike sp;
        upto[j] = R - 1;
        if (bn_find_first_spike(arho, loss_r + j * R, wn + j * R, R, BN_SPIKE_MIN_RISE, &sp) == BN_OK && sp.found)
            upto[j] = sp.onset;
        if (upto[j] < shortest) shortest = upto[j];
    }
    free(arho);
    const double *sh[3] = {NULL, NULL, NULL};
    int64_t Rs = 0;
    const char *sh_names[3] = {"sharpness", "sharpness_weighted", "sharpness_sphere"};
    for (int q = 0; q < 3 && b->check_sharp; q++) {
        bn_sim_array arr;
        if (bn_sim_sharpness_find(sim, sh_names[q], &arr) == BN_OK) {
            sh[q] = arr.f64;
            Rs = arr.shape[1];
        }
    }
    int64_t shsteps[64];
    for (int64_t r = 0; r < Rs && r < 64; r++) shsteps[r] = r * b->check_sharp < T ? r * b->check_sharp : T;
    for (int id = 0; id < NPEER; id++) {
        if (!g_peer[id].alive) continue;
        char out[800], err[400] = "";
        snprintf(out, sizeof out, "%s/check-%s.npz", b->dir[loss], peer_label[id]);
        double hv;
        double sec = peer_run(id, b->dir[loss], S, BN_FP64, T, 1, b->check_sharp, out, &hv, err, sizeof err);
        double e_loss = INFINITY, e_gam = INFINITY, e_rho = INFINITY, e_sh = 0;
        if (!isnan(sec)) {
            err[0] = '\0';
            e_loss = field_err(out, "loss", loss_r, S, R, upto, 0, err, sizeof err);
            e_gam = field_err(out, "gamma", gam, S, R, upto, 0, err, sizeof err);
            e_rho = field_err(out, "rho", rho, S, R, upto, 1, err, sizeof err);
            for (int q = 0; q < 3 && sh[q]; q++) {
                int64_t up[CHECK_SEEDS];
                for (int64_t j = 0; j < S; j++) { /* sharpness records before the spike */
                    up[j] = -1;
                    for (int64_t r = 0; r < Rs; r++)
                        if (shsteps[r] <= upto[j]) up[j] = r;
                }
                double e = field_err(out, sh_names[q], sh[q], S, Rs, up, 0, err, sizeof err);
                if (!(e <= e_sh)) e_sh = e;
            }
        }
        int pass = e_loss <= CHECK_TOL && e_gam <= CHECK_TOL && e_rho <= CHECK_TOL && e_sh <= SHARP_CHECK_TOL;
        b->check[loss][id] = pass ? 1 : -1;
        if (!pass) g_failures++;
        printf("  check %-10s %-6s %-8s %lld trajectories, steps 0..%lld (shortest stretch before a spike: %lld): "
               "max rel err loss %.1e gamma %.1e rho %.1e -> %s%s%s\n",
               peer_label[id], b->key, bn_loss_name(loss), (long long)S, (long long)T, (long long)shortest, e_loss,
               e_gam, e_rho, pass ? "PASS" : "FAIL", err[0] ? ": " : "", err);
        if (sh[0]) printf("        sharpness (3 operators, power iteration tol 1e-6): max rel diff %.1e (gate %.0e)\n", e_sh,
                          SHARP_CHECK_TOL);
        char key[64], note[200];
        snprintf(key, sizeof key, "%s-%s", b->key, bn_loss_name(loss));
        snprintf(note, sizeof note, "loss %.2e gamma %.2e rho %.2e sharpness %.2e; stretch %lld", e_loss, e_gam, e_rho,
                 e_sh, (long long)shortest);
        csv_line("check", key, b->n, b->d, S, bn_loss_name(loss), "fp64", b->check_sharp, 1, T, peer_label[id], "cpu",
                 NAN, NAN, NAN, NAN, 0, NAN, NAN, NAN, pass ? "pass" : "FAIL", note);
    }
    bn_sim_free(sim);
}

/* ------------------------------------------------------------- participants */

typedef struct {
    int kind;         /* bn_backend_kind */
    bn_precision prec;
    int64_t n, d, S;
    void *Xc, *W, *U, *G;
    bn_backend *be;   /* GPU floor: the CUDA backend's product ops (cuBLAS) */
} floor_bufs;

static void floor_open(floor_bufs *f, int kind, bn_precision prec, int64_t n, int64_t d, int64_t S)
{
    memset(f, 0, sizeof *f);
    f->kind = kind;
    f->prec = prec;
    f->n = n, f->d = d, f->S = S;
    size_t es = prec == BN_FP32 ? 4 : 8;
    size_t cnt[4] = {(size_t)(n * d), (size_t)(d * S), (size_t)(n * S), (size_t)(d * S)};
    void **buf[4] = {&f->Xc, &f->W, &f->U, &f->G};
    if (kind == BN_BACKEND_CUDA && bn_backend_open(BN_BACKEND_CUDA, prec, g_threads, g_device, &f->be) != BN_OK)
        die("CUDA floor");
    for (int i = 0; i < 4; i++) {
        void *h = malloc(cnt[i] * es + 64);
        if (!h) die("floor buffers");
        for (size_t k = 0; k < cnt[i]; k++) {
            double v = i == 0 ? sin((double)k) : cos((double)k);
            if (es == 4) ((float *)h)[k] = (float)v;
            else ((double *)h)[k] = v;
        }
        if (f->be) {
            if (f->be->ops->alloc(f->be, cnt[i] * es, buf[i]) != BN_OK ||
                f->be->ops->upload(f->be, *buf[i], h, cnt[i] * es) != BN_OK)
                die("CUDA floor buffers");
            free(h);
        } else {
            *buf[i] = h;
        }
    }
}

static void floor_close(floor_bufs *f)
{
    void *b[4] = {f->Xc, f->W, f->U, f->G};
    for (int i = 0; i < 4; i++) {
        if (f->be) f->be->ops->dealloc(f->be, b[i]);
        else free(b[i]);
    }
    if (f->be) bn_backend_close(f->be);
}

/* Seconds for T steps' worth of the two products. */
static double floor_run(floor_bufs *f, int64_t T)
{
    int n = (int)f->n, d = (int)f->d, S = (int)f->S;
    if (f->be) {
        const bn_backend_ops *o = f->be->ops;
        o->synchronize(f->be);
        double t0 = now();
        for (int64_t t = 0; t < T; t++) {
            o->product_xw(f->be, n, d, S, f->Xc, f->W, f->U);
            o->product_xtq(f->be, n, d, S, f->Xc, f->U, f->G);
        }
        o->synchronize(f->be);
        return now() - t0;
    }
    double t0 = now();
    for (int64_t t = 0; t < T; t++) {
        if (f->prec == BN_FP32) {
            cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, S, d, 1.f, f->Xc, n, f->W, d, 0.f, f->U, n);
            cblas_sgemm(CblasColMajor, CblasTrans, CblasNoTrans, d, S, n, 1.f, f->Xc, n, f->U, n, 0.f, f->G, d);
        } else {
            cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, S, d, 1.0, f->Xc, n, f->W, d, 0.0, f->U, n);
            cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, d, S, n, 1.0, f->Xc, n, f->U, n, 0.0, f->G, d);
        }
    }
    return now() - t0;
}

/* Batched HVPs of a sharpness run: per record and operator, the iterations of
 * the slowest column (every iteration multiplies all S columns). */
static double sim_hvps(const bn_sim *sim)
{
    bn_sim_array a;
    if (bn_sim_sharpness_find(sim, "sharpness_iters", &a) != BN_OK) return 0;
    double tot = 0;
    for (int64_t r = 0; r < a.shape[1]; r++)
        for (int64_t q = 0; q < a.shape[2]; q++) {
            int64_t mx = 0;
            for (int64_t j = 0; j < a.shape[0]; j++) {
                int64_t v = a.i64[(j * a.shape[1] + r) * a.shape[2] + q];
                if (v > mx) mx = v;
            }
            tot += (double)mx;
        }
    return tot;
}

/* One timed bnspike run; NAN with err on failure. */
static double bn_run(bdata *b, bn_loss loss, bn_precision prec, bn_backend_kind kind, int64_t S, int64_t T,
                     int64_t every, int64_t sharp, double *hvps, int64_t *ndiv, char *err, size_t errlen)
{
    bn_sim *sim = NULL;
    bn_status st = sim_make(b, loss, prec, kind, S, T, every, sharp, &sim);
    if (st != BN_OK) {
        snprintf(err, errlen, "%s: %s", bn_status_name(st), bn_last_error());
        return NAN;
    }
    double t0 = now();
    st = bn_sim_run(sim, NULL, NULL);
    double el = now() - t0;
    if (st != BN_OK) {
        snprintf(err, errlen, "%s: %s", bn_status_name(st), bn_last_error());
        bn_sim_free(sim);
        return NAN;
    }
    *hvps = sim_hvps(sim);
    const int64_t *dv = bn_sim_diverged_step(sim);
    *ndiv = 0;
    for (int64_t j = 0; j < S; j++) *ndiv += dv[j] >= 0;
    bn_sim_free(sim);
    return el;
}

/* ------------------------------------------------------------- cases */

typedef struct {
    const char *section; /* "table" or "scaling" */
    int data;
    bn_loss loss;
    bn_precision prec;
    int64_t S, T, every, sharp;
    int gpu_only;
    int level;   /* 0: --quick and default, 1: default, 2: --full only */
    int reps;    /* 0 = --reps */
} bcase;

#define SQ BN_LOSS_SQUARE
#define LG BN_LOSS_LOGISTIC
#define F64 BN_FP64
#define F32 BN_FP32
static const bcase g_cases[] = {
    /* the table */
    {"table", D_PAPER, SQ, F64, 1, 2000, 10, 0, 0, 0, 0},
    {"table", D_PAPER, SQ, F64, 256, 500, 10, 0, 0, 0, 0},
    {"table", D_PAPER, SQ, F64, 4096, 50, 10, 0, 0, 0, 0},
    {"table", D_PAPER, SQ, F64, 1, 500, 10, 10, 0, 0, 0},
    {"table", D_PAPER, SQ, F64, 256, 200, 10, 10, 0, 1, 2},
    {"table", D_PAPER, SQ, F64, 4096, 20, 10, 10, 0, 2, 3},
    {"table", D_PAPER, LG, F64, 1, 2000, 10, 0, 0, 1, 0},
    {"table", D_PAPER, LG, F64, 256, 500, 10, 0, 0, 0, 0},
    {"table", D_PAPER, LG, F64, 4096, 50, 10, 0, 0, 1, 0},
    {"table", D_PAPER, LG, F64, 1, 500, 10, 10, 0, 1, 0},
    {"table", D_PAPER, LG, F64, 256, 20, 10, 10, 0, 2, 2},
    {"table", D_PAPER, SQ, F32, 1, 2000, 10, 0, 0, 1, 0},
    {"table", D_PAPER, SQ, F32, 256, 500, 10, 0, 0, 0, 0},
    {"table", D_PAPER, SQ, F32, 4096, 50, 10, 0, 0, 1, 0},
    {"table", D_PAPER, LG, F32, 256, 500, 10, 0, 0, 1, 0},
    /* T = 100, not 20: a run's first steps carry one-time costs (first
     * touches of the buffers and of Xc's transpose, about 0.14 s at this size),
     * which at T = 20 added 7 ms to a 14 ms step (issue 7, ninth session). */
    {"table", D_BIG, SQ, F64, 32, 100, 10, 0, 0, 0, 0},
    {"table", D_BIG, LG, F64, 32, 100, 10, 0, 0, 1, 0},
    {"table", D_BIG, SQ, F32, 32, 100, 10, 0, 0, 1, 0},
    {"table", D_BIG, SQ, F64, 32, 10, 10, 10, 0, 2, 1},
    {"table", D_HUGE, SQ, F64, 256, 20, 10, 0, 1, 0, 0},
    /* extra sizes for the scaling figure: fp64, square, no sharpness */
    {"scaling", D_PAPER, SQ, F64, 16, 2000, 10, 0, 0, 1, 3},
    {"scaling", D_PAPER, SQ, F64, 64, 1000, 10, 0, 0, 1, 3},
    {"scaling", D_PAPER, SQ, F64, 1024, 100, 10, 0, 0, 1, 3},
    {"scaling", D_PAPER, SQ, F64, 16384, 20, 10, 0, 0, 1, 3},
    {"scaling", D_MID1, SQ, F64, 32, 100, 10, 0, 0, 1, 3},
    {"scaling", D_MID2, SQ, F64, 64, 30, 10, 0, 0, 1, 3},
};
#define NCASES ((int)(sizeof g_cases / sizeof g_cases[0]))

static const int64_t g_mem_S[] = {1, 64, 1024, 4096, 16384};
static const int64_t g_mem_S_quick[] = {1, 4096};

static int case_enabled(const bcase *c)
{
    if (c->level > (g_full ? 2 : g_quick ? 0 : 1)) return 0;
    if (!strcmp(c->section, "scaling") && !g_scaling) return 0;
    return 1;
}

static void case_name(const bcase *c, char *buf, size_t len)
{
    const bdata *b = &g_data[c->data];
    char shape[48];
    if (c->data == D_PAPER) snprintf(shape, sizeof shape, "paper");
    else snprintf(shape, sizeof shape, "n%lld d%lld", (long long)b->n, (long long)b->d);
    snprintf(buf, len, "%s S=%lld %s %s%s", shape, (long long)c->S, c->loss == SQ ? "sq" : "lg",
             c->prec == F32 ? "fp32" : "fp64", c->sharp ? " sh10" : "");
}

static int case_selected(const bcase *c)
{
    if (!case_enabled(c)) return 0;
    if (!g_only) return 1;
    char nm[96];
    case_name(c, nm, sizeof nm);
    size_t k = strlen(g_only);
    if (k && g_only[k - 1] == '$') /* "TEXT$": the whole name */
        return strlen(nm) == k - 1 && !strncmp(nm, g_only, k - 1);
    return strstr(nm, g_only) != NULL || strstr(c->section, g_only) != NULL;
}

/* Participants of a row. */
enum { W_FLOOR, W_BN, W_TORCH, W_NUMPY, W_GFLOOR, W_GBN, W_TORCH_CUDA, NWHO };
static const char *const who_label[NWHO] = {"floor", "bnspike", "torch", "numpy", "floor-gpu", "bnspike-gpu",
                                            "torch-cuda"};

typedef struct {
    int on;
    int k;
    double t[MAXREP];
    double hvps;
    int64_t ndiv;
    int64_t T;
    char err[300];
} meas;

typedef struct {
    double ms[NWHO];   /* median ms per step, NAN when not measured */
    double ms_min[NWHO];
    double hvps[NWHO];
} case_result;

static case_result g_res[NCASES];

static void csv_row(const bcase *c, const char *name, int w, const meas *m, double ms)
{
    const bdata *b = &g_data[c->data];
    csv_line(c->section, name, b->n, b->d, c->S, bn_loss_name(c->loss), bn_precision_name(c->prec), c->sharp, c->every,
             m->T, who_label[w], w >= W_GFLOOR ? "gpu" : "cpu", ms, 1e3 * min_of(m->t, m->k) / (double)m->T,
             1e3 * max_of(m->t, m->k) / (double)m->T, (double)c->S / (ms * 1e-3), m->k, m->hvps, NAN, NAN,
             m->err[0] ? "error" : "ok", m->err);
}

static void print_table_header(const char *title)
{
    printf("\n%s\n", title);
    printf("%-26s %-4s %5s %10s %11s %9s %7s %9s %7s %9s %7s  %s\n", "case", "back", "T", "ms/step", "seed-st/s",
           "floor ms", "/floor", "torch ms", "t/bn", "numpy ms", "np/bn", "note");
}

static void fmt_ms(char *buf, size_t len, double ms)
{
    if (isnan(ms)) snprintf(buf, len, "-");
    else if (ms >= 100) snprintf(buf, len, "%.1f", ms);
    else if (ms >= 1) snprintf(buf, len, "%.3f", ms);
    else snprintf(buf, len, "%.4f", ms);
}

static void fmt_ratio(char *buf, size_t len, double r)
{
    if (isnan(r) || isinf(r)) snprintf(buf, len, "-");
    else if (r >= 100) snprintf(buf, len, "%.0f", r);
    else snprintf(buf, len, "%.2f", r);
}

/* Finds the measured row without sharpness that matches c (for the overhead). */
static int nosharp_twin(int ci)
{
    const bcase *c = &g_cases[ci];
    for (int k = 0; k < NCASES; k++) {
        const bcase *o = &g_cases[k];
        if (k != ci && !o->sharp && o->data == c->data && o->loss == c->loss && o->prec == c->prec && o->S == c->S &&
            !isnan(g_res[k].ms[W_BN]))
            return k;
    }
    return -1;
}

static void run_case(int ci)
{
    const bcase *c = &g_cases[ci];
    bdata *b = &g_data[c->data];
    char name[96];
    case_name(c, name, sizeof name);
    for (int w = 0; w < NWHO; w++) g_res[ci].ms[w] = NAN;
    if (c->gpu_only && !g_gpu) {
        printf("%-26s %-4s GPU only: no device (%s)\n", name, "cuda",
               "build with CUDA=1 and run where bn_backends_describe lists a device");
        csv_line(c->section, name, b->n, b->d, c->S, bn_loss_name(c->loss), bn_precision_name(c->prec), c->sharp,
                 c->every, c->T, "bnspike-gpu", "gpu", NAN, NAN, NAN, NAN, 0, NAN, NAN, NAN, "skipped",
                 "GPU only: no device");
        return;
    }
    data_dump(b, c->loss);
    meas m[NWHO];
    memset(m, 0, sizeof m);
    int cpu = !c->gpu_only;
    m[W_FLOOR].on = cpu;
    m[W_BN].on = cpu;
    m[W_TORCH].on = cpu && g_peer[P_TORCH].alive && b->check[c->loss][P_TORCH] == 1;
    m[W_NUMPY].on = cpu && g_peer[P_NUMPY].alive && b->check[c->loss][P_NUMPY] == 1;
    m[W_GFLOOR].on = g_gpu;
    m[W_GBN].on = g_gpu;
    m[W_TORCH_CUDA].on = g_gpu && g_peer[P_TORCH_CUDA].alive && b->check[c->loss][P_TORCH_CUDA] == 1;
    /* The same T for every participant on a device; GPU steps are ~100x
     * shorter, so GPU rows without sharpness run at least --gpu-steps. */
    int64_t T = c->T * g_tscale < 1 ? 1 : (int64_t)llround((double)c->T * g_tscale);
    int64_t Tg = c->sharp || T >= g_gpu_steps ? T : g_gpu_steps;
    for (int w = 0; w < NWHO; w++) m[w].T = w >= W_GFLOOR ? Tg : T;
    for (int id = 0; id < NPEER; id++) {
        int w = id == P_TORCH ? W_TORCH : id == P_NUMPY ? W_NUMPY : W_TORCH_CUDA;
        if (g_peer[id].alive && b->check[c->loss][id] == -1) snprintf(m[w].err, sizeof m[w].err, "correctness check failed");
        if ((w == W_TORCH_CUDA ? g_gpu : cpu) && g_peer[id].wanted && !g_peer[id].alive)
            snprintf(m[w].err, sizeof m[w].err, "peer unavailable");
    }
    floor_bufs fc, fg;
    if (m[W_FLOOR].on) floor_open(&fc, BN_BACKEND_CPU, c->prec, b->n, b->d, c->S);
    if (m[W_GFLOOR].on) floor_open(&fg, BN_BACKEND_CUDA, c->prec, b->n, b->d, c->S);
    int reps = c->reps > 0 && c->reps < g_reps ? c->reps : g_reps;
    for (int r = -1; r < reps; r++) {
        int warm = r < 0;
        for (int w = 0; w < NWHO; w++) {
            meas *x = &m[w];
            if (!x->on) continue;
            /* Warm-up: a short run without sharpness (kernels, allocators, pools). */
            int64_t Tr = warm ? (x->T < 20 ? x->T : 20) : x->T, sh = warm ? 0 : c->sharp;
            double sec = NAN, hv = 0;
            int64_t nd = 0;
            char err[300] = "";
            switch (w) {
            case W_FLOOR: sec = floor_run(&fc, Tr); break;
            case W_GFLOOR: sec = floor_run(&fg, Tr); break;
            case W_BN:
            case W_GBN:
                sec = bn_run(b, c->loss, c->prec, w == W_BN ? BN_BACKEND_CPU : BN_BACKEND_CUDA, c->S, Tr, c->every, sh,
                             &hv, &nd, err, sizeof err);
                break;
            default: {
                int id = w == W_TORCH ? P_TORCH : w == W_NUMPY ? P_NUMPY : P_TORCH_CUDA;
                sec = peer_run(id, b->dir[c->loss], c->S, c->prec, Tr, c->every, sh, NULL, &hv, err, sizeof err);
            }
            }
            if (isnan(sec)) {
                x->on = 0;
                snprintf(x->err, sizeof x->err, "%s", err);
                g_failures++;
            } else if (!warm) {
                x->t[x->k++] = sec;
                x->hvps = hv;
                x->ndiv = nd;
                if (err[0]) snprintf(x->err, sizeof x->err, "%s", err);
            }
            pause_s(g_gap);
        }
    }
    if (m[W_FLOOR].on) floor_close(&fc);
    if (m[W_GFLOOR].on) floor_close(&fg);

    for (int w = 0; w < NWHO; w++) {
        if (m[w].k > 0) {
            g_res[ci].ms[w] = 1e3 * median_of(m[w].t, m[w].k) / (double)m[w].T;
            g_res[ci].ms_min[w] = 1e3 * min_of(m[w].t, m[w].k) / (double)m[w].T;
            g_res[ci].hvps[w] = m[w].hvps;
        }
        if (m[w].k > 0 || m[w].err[0]) csv_row(c, name, w, &m[w], g_res[ci].ms[w]);
    }
    /* the printed rows: cpu, then gpu */
    int named = 0;
    for (int gpu = 0; gpu < 2; gpu++) {
        int wf = gpu ? W_GFLOOR : W_FLOOR, wb = gpu ? W_GBN : W_BN, wt = gpu ? W_TORCH_CUDA : W_TORCH;
        if (!m[wb].k && !m[wb].err[0]) continue;
        const double *ms = g_res[ci].ms;
        double bn = ms[wb];
        char a[5][24], rr[3][24];
        fmt_ms(a[0], 24, bn);
        fmt_ms(a[1], 24, ms[wf]);
        fmt_ms(a[2], 24, ms[wt]);
        fmt_ms(a[3], 24, gpu ? NAN : ms[W_NUMPY]);
        fmt_ratio(rr[0], 24, bn / ms[wf]);
        fmt_ratio(rr[1], 24, ms[wt] / bn);
        fmt_ratio(rr[2], 24, gpu ? NAN : ms[W_NUMPY] / bn);
        char note[400] = "";
        size_t k = 0;
#define NOTE(...) k += (size_t)snprintf(note + k, k < sizeof note ? sizeof note - k : 0, __VA_ARGS__)
        if (m[wb].err[0]) NOTE("bnspike: %s; ", m[wb].err);
        if (m[wt].err[0]) NOTE("%s: %s; ", who_label[wt], m[wt].err);
        if (!gpu && m[W_NUMPY].err[0]) NOTE("numpy: %s; ", m[W_NUMPY].err);
        if (m[wb].ndiv) NOTE("%lld diverged; ", (long long)m[wb].ndiv);
        {
            double sp_b = m[wb].k ? max_of(m[wb].t, m[wb].k) / min_of(m[wb].t, m[wb].k) : 1;
            double sp_f = m[wf].k ? max_of(m[wf].t, m[wf].k) / min_of(m[wf].t, m[wf].k) : 1;
            if (sp_b > 1.5 || sp_f > 1.5) NOTE("noisy: max/min bnspike %.1f floor %.1f; ", sp_b, sp_f);
        }
        if (c->sharp) {
            NOTE("HVPs bn %.0f", m[wb].hvps);
            if (m[wt].k) NOTE(" t %.0f", m[wt].hvps);
            if (!gpu && m[W_NUMPY].k) NOTE(" np %.0f", m[W_NUMPY].hvps);
            int tw = nosharp_twin(ci);
            if (tw >= 0 && !isnan(g_res[tw].ms[wb])) NOTE("; sharpness +%.0f%%", 100.0 * (bn / g_res[tw].ms[wb] - 1));
            NOTE("; ");
        }
        if (gpu && !isnan(ms[W_BN]) && !isnan(bn)) NOTE("cpu/gpu %.3gx; ", ms[W_BN] / bn);
        if (k >= 2 && note[k - 2] == ';') note[k - 2] = '\0';
        printf("%-26s %-4s %5lld %10s %11.3g %9s %7s %9s %7s %9s %7s  %s\n", named ? "" : name, gpu ? "cuda" : "cpu",
               (long long)m[wb].T, a[0], (double)c->S / (bn * 1e-3), a[1], rr[0], a[2], rr[1], a[3], rr[2], note);
        named = 1;
    }
    fflush(stdout);
    if (g_csv) fflush(g_csv);
}

/* ------------------------------------------------------------- memory */

/* The child of the memory section: a user's run of S trajectories on the
 * paper's data (generation, reference, start, run), then exit. */
static int mem_child(int64_t S, int64_t T)
{
    bn_dataset *ds = NULL;
    if (bn_dataset_generate(PAPER_SPEC, BN_LOSS_SQUARE, &ds) != BN_OK) die("data");
    bn_run_config c;
    base_config(&c, BN_LOSS_SQUARE, BN_FP64, BN_BACKEND_CPU);
    c.seeds = S;
    c.steps = T;
    c.every = 10;
    bn_sim *sim = NULL;
    if (bn_sim_create(ds, &c, &sim) != BN_OK || bn_sim_run(sim, NULL, NULL) != BN_OK) die("memory run");
    bn_sim_free(sim);
    bn_dataset_free(ds);
    /* VmHWM: the peak of this process's own memory map (a fresh one since
     * exec; ru_maxrss would keep the parent's size from the fork). */
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    char l[256];
    while (f && fgets(l, sizeof l, f))
        if (!strncmp(l, "VmHWM:", 6)) kb = atol(l + 6);
    if (f) fclose(f);
    printf("{\"rss_peak_kb\": %ld}\n", kb);
    return 0;
}

/* Runs argv to the end; the last line of its stdout in out.  The peak memory
 * comes from the child itself (VmHWM in /proc/self/status: its own memory map
 * since exec); getrusage's ru_maxrss of a forked child would include the
 * parent's resident set at the fork. */
static int run_child(char *const argv[], char *out, size_t outlen)
{
    FILE *to, *from;
    pid_t p = spawn(argv, &to, &from);
    if (p < 0) return -1;
    fclose(to);
    char *line = NULL;
    size_t cap = 0;
    out[0] = '\0';
    while (getline(&line, &cap, from) > 0) snprintf(out, outlen, "%s", line);
    free(line);
    fclose(from);
    int st;
    if (waitpid(p, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return -1;
    return 0;
}

static void memory_section(const char *self)
{
    const int64_t *Ss = g_quick ? g_mem_S_quick : g_mem_S;
    int nS = g_quick ? 2 : (int)(sizeof g_mem_S / sizeof g_mem_S[0]);
    int64_t T = 100;
    bdata *b = &g_data[D_PAPER];
    data_dump(b, SQ);
    printf("\nPeak memory (resident set: VmHWM of a separate process per S, read by the process itself): paper size,\n"
           "fp64, square, %lld steps, records every 10.  bnspike: data generation + setup + run; peers: the Python\n"
           "process (interpreter and imports included; 'base' = its peak after the imports, before any data).\n",
           (long long)T);
    printf("%8s %14s %20s %20s\n", "S", "bnspike MiB", "torch MiB (base)", "numpy MiB (base)");
    for (int i = 0; i < nS; i++) {
        int64_t S = Ss[i];
        if (S > b->smax[SQ]) continue;
        char sS[32], sT[32], th[16], script[2][1024];
        snprintf(sS, sizeof sS, "%lld", (long long)S);
        snprintf(sT, sizeof sT, "%lld", (long long)T);
        snprintf(th, sizeof th, "%d", g_threads);
        char *av_bn[] = {(char *)self, "--mem-child", sS, sT, NULL};
        double kb[3] = {-1, -1, -1}, base[3] = {NAN, NAN, NAN};
        char out[8192];
        if (run_child(av_bn, out, sizeof out) == 0) json_num(out, "rss_peak_kb", &kb[0]);
        pause_s(g_gap);
        for (int p = 0; p < 2; p++) {
            int id = p == 0 ? P_TORCH : P_NUMPY;
            if (!g_peer[id].wanted) continue;
            snprintf(script[p], sizeof script[p], "%s/%s", g_peers_dir, p == 0 ? "torch_batched.py" : "numpy_batched.py");
            char *av_t[] = {(char *)g_python, script[p], "--device", "cpu", "--threads", th, "--inputs", b->dir[SQ],
                            "--time", "--S", sS, "--steps", sT, "--every", "10", "--warmup", "0", NULL};
            char *av_n[] = {(char *)g_python, script[p], "--threads", th, "--inputs", b->dir[SQ], "--time", "--S", sS,
                            "--steps", sT, "--every", "10", "--warmup", "0", NULL};
            if (run_child(p == 0 ? av_t : av_n, out, sizeof out) == 0) {
                json_num(out, "rss_peak_kb", &kb[1 + p]);
                json_num(out, "rss_base_kb", &base[1 + p]);
            }
            pause_s(g_gap);
        }
        char c1[40], c2[40];
        snprintf(c1, sizeof c1, "%.1f (%.0f)", kb[1] / 1024.0, base[1] / 1024.0);
        snprintf(c2, sizeof c2, "%.1f (%.0f)", kb[2] / 1024.0, base[2] / 1024.0);
        printf("%8lld %14.1f %20s %20s\n", (long long)S, kb[0] / 1024.0, kb[1] > 0 ? c1 : "-", kb[2] > 0 ? c2 : "-");
        fflush(stdout);
        const char *names[3] = {"bnspike", "torch", "numpy"};
        for (int p = 0; p < 3; p++) {
            char nm[64];
            snprintf(nm, sizeof nm, "paper S=%lld sq fp64", (long long)S);
            if (kb[p] > 0)
                csv_line("memory", nm, b->n, b->d, S, "square", "fp64", 0, 10, T, names[p], "cpu", NAN, NAN, NAN, NAN,
                         0, NAN, kb[p], base[p], "ok", "");
        }
    }
}

/* ------------------------------------------------------------- targets */

static int find_case(int data, bn_loss loss, bn_precision prec, int64_t S, int64_t sharp)
{
    for (int k = 0; k < NCASES; k++) {
        const bcase *c = &g_cases[k];
        if (!strcmp(c->section, "table") && c->data == data && c->loss == loss && c->prec == prec && c->S == S &&
            c->sharp == sharp)
            return k;
    }
    return -1;
}

static void target_line(const char *what, double value, double vmin, double limit, int at_most, const char *unit)
{
    if (isnan(value)) {
        printf("  %-58s not measured\n", what);
        return;
    }
    int met = at_most ? value <= limit : value >= limit;
    printf("  %-58s %8.2f%s  (target %s %.2f%s)  %-6s  [best-of-reps: %.2f%s]\n", what, value, unit,
           at_most ? "<=" : ">=", limit, unit, met ? "MET" : "MISSED", vmin, unit);
}

/* a/b of two participants of case k, from medians or from the fastest repetitions. */
static double ratio(int k, int a, int b, int best)
{
    if (k < 0) return NAN;
    const double *m = best ? g_res[k].ms_min : g_res[k].ms;
    return m[a] / m[b];
}

static void targets(void)
{
    printf("\nTargets (CPU, %d threads, fp64, square loss; medians of this run, and the same from each participant's\n"
           "fastest repetition):\n", g_threads);
    int k256 = find_case(D_PAPER, SQ, F64, 256, 0), k1 = find_case(D_PAPER, SQ, F64, 1, 0);
    int kb = find_case(D_BIG, SQ, F64, 32, 0);
    target_line("paper S=256: bnspike / floor", ratio(k256, W_BN, W_FLOOR, 0), ratio(k256, W_BN, W_FLOOR, 1), 1.3, 1, "x");
    target_line("paper S=256: torch CPU / bnspike", ratio(k256, W_TORCH, W_BN, 0), ratio(k256, W_TORCH, W_BN, 1), 8, 0,
                "x");
    target_line("paper S=1: torch CPU / bnspike", ratio(k1, W_TORCH, W_BN, 0), ratio(k1, W_TORCH, W_BN, 1), 15, 0, "x");
    target_line("n=2048 d=4096 S=32: bnspike / floor", ratio(kb, W_BN, W_FLOOR, 0), ratio(kb, W_BN, W_FLOOR, 1), 1.25, 1,
                "x");
    int64_t sS[] = {1, 256, 4096};
    bn_loss sl[] = {SQ, LG};
    for (int li = 0; li < 2; li++)
        for (int i = 0; i < 3; i++) {
            int ks = find_case(D_PAPER, sl[li], F64, sS[i], 10), k0 = find_case(D_PAPER, sl[li], F64, sS[i], 0);
            if (ks < 0 || k0 < 0 || isnan(g_res[ks].ms[W_BN]) || isnan(g_res[k0].ms[W_BN])) continue;
            char what[96];
            snprintf(what, sizeof what, "paper S=%lld %s: sharpness every 10 steps adds (T=%lld)", (long long)sS[i],
                     sl[li] == SQ ? "sq" : "lg", (long long)g_cases[ks].T);
            target_line(what, 100.0 * (g_res[ks].ms[W_BN] / g_res[k0].ms[W_BN] - 1),
                        100.0 * (g_res[ks].ms_min[W_BN] / g_res[k0].ms_min[W_BN] - 1), 25, 1, "%");
        }
}

/* ------------------------------------------------------------- main */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_table [--quick] [--full] [--passive | --spin N|keep] [--threads N] [--reps R]\n"
            "                   [--gap SEC] [--csv FILE] [--peers torch,numpy|none] [--python PY] [--peers-dir DIR] [--only TEXT]\n"
            "                   [--no-scaling] [--no-memory] [--device N] [--gpu-steps N] [--steps-scale F]\n                   [--work DIR] [--keep]\n");
}

static void rm_tree(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "bench: could not remove %s\n", dir);
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "--mem-child")) return mem_child(atoll(argv[2]), atoll(argv[3]));
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    g_threads = ncpu > 0 ? (int)ncpu : 2;
    const char *csv = NULL, *peers = "torch,numpy", *work = NULL;
    int passive = 0;
    const char *spin = "10000";
    if (getenv("PYTHON")) g_python = getenv("PYTHON");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "--quick")) g_quick = 1;
        else if (!strcmp(a, "--passive")) passive = 1;
        else if (!strcmp(a, "--spin") && more) {
            spin = argv[++i];
            if (!strcmp(spin, "keep")) spin = NULL;
        }
        else if (!strcmp(a, "--full")) g_full = 1;
        else if (!strcmp(a, "--keep")) g_keep = 1;
        else if (!strcmp(a, "--no-scaling")) g_scaling = 0;
        else if (!strcmp(a, "--no-memory")) g_memory = 0;
        else if (!strcmp(a, "--threads") && more) g_threads = atoi(argv[++i]);
        else if (!strcmp(a, "--reps") && more) g_reps = atoi(argv[++i]);
        else if (!strcmp(a, "--gap") && more) g_gap = atof(argv[++i]);
        else if (!strcmp(a, "--csv") && more) csv = argv[++i];
        else if (!strcmp(a, "--peers") && more) peers = argv[++i];
        else if (!strcmp(a, "--python") && more) g_python = argv[++i];
        else if (!strcmp(a, "--peers-dir") && more) g_peers_dir = argv[++i];
        else if (!strcmp(a, "--only") && more) g_only = argv[++i];
        else if (!strcmp(a, "--device") && more) g_device = atoi(argv[++i]);
        else if (!strcmp(a, "--gpu-steps") && more) g_gpu_steps = atoll(argv[++i]);
        else if (!strcmp(a, "--steps-scale") && more) g_tscale = atof(argv[++i]);
        else if (!strcmp(a, "--work") && more) work = argv[++i];
        else {
            usage();
            return 2;
        }
    }
    /* libgomp reads OMP_WAIT_POLICY / GOMP_SPINCOUNT when the program starts:
     * set them and start again (the peers inherit them). */
    if (!getenv("BN_BENCH_OMP_SET")) {
        int again = 0;
        if (passive) {
            setenv("OMP_WAIT_POLICY", "passive", 1);
            again = 1;
        } else if (spin && !getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT")) {
            setenv("GOMP_SPINCOUNT", spin, 1);
            again = 1;
        }
        /* The floor is OpenBLAS's best: its own kernels for this CPU. */
        if (bn_blas_kernels_setenv()) again = 1;
        if (again) {
            setenv("BN_BENCH_OMP_SET", "1", 1);
            execv("/proc/self/exe", argv);
            fprintf(stderr, "bench: re-executing with the OpenMP settings failed (%s); continuing\n", strerror(errno));
        }
    }
    if (g_quick) {
        if (g_reps > 3) g_reps = 3;
        g_scaling = 0;
    }
    if (g_reps < 1) g_reps = 1;
    if (g_reps > MAXREP) g_reps = MAXREP;
    if (g_threads < 1) g_threads = 1;
    if (!(g_tscale > 0)) g_tscale = 1;
    g_t0 = now();
    for (int k = 0; k < NCASES; k++)
        for (int w = 0; w < NWHO; w++) g_res[k].ms[w] = g_res[k].ms_min[w] = NAN;
    signal(SIGPIPE, SIG_IGN);
    openblas_set_num_threads(g_threads);
    char th[16];
    snprintf(th, sizeof th, "%d", g_threads);
    /* The peers' thread pools (set before they start). */
    setenv("OMP_NUM_THREADS", th, 1);
    setenv("MKL_NUM_THREADS", th, 1);
    setenv("OPENBLAS_NUM_THREADS", th, 1);

    /* ------------------------------------------------ the machine */
    time_t wall = time(NULL);
    char date[64], load0[128], cpu[256] = "?", host[128] = "?";
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S %Z", localtime(&wall));
    load_line(load0, sizeof load0);
    FILE *ci = fopen("/proc/cpuinfo", "r");
    if (ci) {
        char l[1024];
        while (fgets(l, sizeof l, ci))
            if (!strncmp(l, "model name", 10)) {
                char *p = strchr(l, ':');
                if (p) snprintf(cpu, sizeof cpu, "%s", p + 2);
                cpu[strcspn(cpu, "\n")] = '\0';
                break;
            }
        fclose(ci);
    }
    gethostname(host, sizeof host);
    printf("bnspike %s benchmark, %s, host %s\n", BN_VERSION, date, host);
    printf("CPU: %s, %ld online CPUs; %s\n", cpu, ncpu, load0);
    printf("threads: %d for everyone (bnspike cfg.threads; OpenBLAS floor; torch.set_num_threads; numpy's BLAS via "
           "OPENBLAS_NUM_THREADS)\n", g_threads);
    printf("OpenMP (bnspike and torch): OMP_WAIT_POLICY=%s, GOMP_SPINCOUNT=%s%s; pause between phases %.2f s;\n"
           "%d timed repetitions (+1 warm-up) per row, medians\n",
           getenv("OMP_WAIT_POLICY") ? getenv("OMP_WAIT_POLICY") : "unset",
           getenv("GOMP_SPINCOUNT") ? getenv("GOMP_SPINCOUNT") : "unset",
           getenv("BN_BENCH_OMP_SET") ? " (set by the bench)" : " (from the environment)", g_gap, g_reps);
    const char *envs[] = {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_PROC_BIND", "GOMP_CPU_AFFINITY"};
    for (size_t i = 0; i < sizeof envs / sizeof envs[0]; i++)
        if (getenv(envs[i])) printf("environment: %s=%s\n", envs[i], getenv(envs[i]));
    printf("floor: OpenBLAS cblas_?gemm, %s kernels (%s)\n", openblas_get_corename(), openblas_get_config());
    char desc[4096];
    bn_backends_describe(desc, sizeof desc);
    printf("bnspike backends:\n%s", desc);
    {
        bn_backend *be = NULL;
        if (bn_backend_open(BN_BACKEND_CUDA, BN_FP64, g_threads, g_device, &be) == BN_OK) {
            g_gpu = 1;
            printf("GPU: device %d present: %s (GPU rows: bnspike --backend cuda, the floor through cuBLAS, torch "
                   "--device cuda; at least %lld steps without sharpness)\n", g_device, be->desc, (long long)g_gpu_steps);
            bn_backend_close(be);
        } else {
            printf("GPU: none (%s)\n", bn_last_error());
        }
    }

    /* ------------------------------------------------ work folder, peers */
    if (work) {
        snprintf(g_work, sizeof g_work, "%s", work);
        mkdir(g_work, 0777);
    } else {
        snprintf(g_work, sizeof g_work, "%s/bnspike-bench.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(g_work)) {
            fprintf(stderr, "bench: mkdtemp: %s\n", strerror(errno));
            return 1;
        }
    }
    if (csv) {
        g_csv = fopen(csv, "w");
        if (!g_csv) {
            fprintf(stderr, "bench: cannot write %s: %s\n", csv, strerror(errno));
            return 1;
        }
        fprintf(g_csv, "# bnspike %s bench, %s, %s, %ld CPUs, %d threads, OMP_WAIT_POLICY=%s, GOMP_SPINCOUNT=%s, %s\n",
                BN_VERSION, date, cpu, ncpu, g_threads, getenv("OMP_WAIT_POLICY") ? getenv("OMP_WAIT_POLICY") : "unset",
                getenv("GOMP_SPINCOUNT") ? getenv("GOMP_SPINCOUNT") : "unset", load0);
        fprintf(g_csv, "section,case,n,d,S,loss,precision,sharpness_every,every,steps,threads,impl,device,ms_per_step,"
                       "ms_min,ms_max,seed_steps_per_s,reps,hvps,rss_peak_kb,rss_base_kb,status,note\n");
    }
    g_peer[P_TORCH].wanted = strstr(peers, "torch") != NULL;
    g_peer[P_NUMPY].wanted = strstr(peers, "numpy") != NULL;
    g_peer[P_TORCH_CUDA].wanted = g_gpu && g_peer[P_TORCH].wanted;
    printf("peers (%s, %s):\n", g_python, g_peers_dir);
    for (int id = 0; id < NPEER; id++)
        if (g_peer[id].wanted) peer_start(id);
    if (!g_peer[P_TORCH].wanted && !g_peer[P_NUMPY].wanted) printf("  none (--peers none)\n");

    /* ------------------------------------------------ inputs and checks */
    for (int k = 0; k < NCASES; k++) {
        const bcase *c = &g_cases[k];
        if (!case_selected(c) || (c->gpu_only && !g_gpu)) continue;
        bdata *b = &g_data[c->data];
        if (c->S > b->smax[c->loss]) b->smax[c->loss] = c->S;
    }
    if (g_memory) {
        int nS = g_quick ? 2 : (int)(sizeof g_mem_S / sizeof g_mem_S[0]);
        int64_t top = (g_quick ? g_mem_S_quick : g_mem_S)[nS - 1];
        if (top > g_data[D_PAPER].smax[SQ]) g_data[D_PAPER].smax[SQ] = top;
    }
    printf("\nInputs shared by every participant, and correctness (fp64, same inputs, before any spike, loss/gamma/rho "
           "<= %.0e relative):\n", CHECK_TOL);
    for (int di = 0; di < NDATA; di++)
        for (int l = 0; l < 2; l++) {
            bdata *b = &g_data[di];
            if (b->smax[l] <= 0) continue;
            data_dump(b, (bn_loss)l);
            data_check(b, (bn_loss)l);
        }
    printf("  (%.0f s so far)\n", now() - g_t0);

    /* ------------------------------------------------ the table */
    print_table_header("ms/step: median time per GD step (records every 10 steps; 'sh10': sharpness every 10 steps);\n"
                       "/floor = bnspike / floor; t/bn, np/bn = peer / bnspike (> 1: bnspike faster)");
    const char *sec_prev = "table";
    for (int k = 0; k < NCASES; k++) {
        if (!case_selected(&g_cases[k])) continue;
        if (strcmp(g_cases[k].section, sec_prev)) {
            sec_prev = g_cases[k].section;
            printf("%.0f s so far\n", now() - g_t0);
            print_table_header("Extra sizes for the scaling figure (fp64, square, no sharpness)");
        }
        run_case(k);
    }
    printf("(%.0f s so far)\n", now() - g_t0);
    if (g_memory && !g_only) memory_section("/proc/self/exe");
    if (!g_only) targets();

    for (int id = 0; id < NPEER; id++) peer_stop(id);
    char load1[128];
    load_line(load1, sizeof load1);
    printf("\n%s at the start, %s at the end; %.0f s in all; %d failures\n", load0, load1, now() - g_t0, g_failures);
    if (g_csv) {
        fprintf(g_csv, "# end: %s, %.0f s\n", load1, now() - g_t0);
        fclose(g_csv);
    }
    for (int di = 0; di < NDATA; di++)
        for (int l = 0; l < 2; l++) {
            bn_dataset_free(g_data[di].ds[l]);
            free(g_data[di].w0[l]);
            free(g_data[di].ref[l]);
        }
    if (!g_keep && !work) rm_tree(g_work);
    else printf("inputs kept in %s\n", g_work);
    return g_failures ? 1 : 0;
}
