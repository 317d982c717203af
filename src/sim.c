/* The simulation driver: validates a run, prepares the start (reference
 * direction, w0, per-trajectory settings), moves everything to the backend,
 * runs the steps in blocks and turns the backend's per-step statistics into
 * the record arrays of MODEL.md.  It calls BLAS/CUDA only through the backend. */
#include "backend.h"
#include "ckpt.h"
#include "linalg.h"
#include "resources.h"
#include "rng.h"
#include "sharpness.h"
#include "sim_setup.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Record fields, in the order the arrays are stored and written. */
enum {
    F_STEP, F_LOSS, F_GAMMA, F_WNORM, F_WNORM_S, F_ALPHA, F_BETA, F_RHO, F_ETA_EFF,
    F_GNORM, F_GGAMMA, F_ALPHA_S, F_BETA_S, F_RHO_S, F_COUNT
};
static const char *const field_names[F_COUNT] = {
    "step", "loss", "gamma", "w_norm", "w_norm_sigma", "alpha", "beta", "rho", "eta_eff",
    "grad_norm_w", "grad_gamma", "alpha_sigma", "beta_sigma", "rho_sigma"};

/* Host memory for the stats ring: enough for long blocks, small next to the data. */
#define BN_RING_BYTES ((size_t)64 << 20)
/* At most this many steps between progress reports / record downloads. */
#define BN_BLOCK_MAX_STEPS 1024

struct bn_sim {
    bn_run_config cfg;
    int64_t n, d, S, R;
    /* Row-space coordinates (see choose_coordinates): the device works with
     * w = Vᵀz, z of length dd = rank(Xc) < d, V (dd×d row-major, orthonormal
     * rows) in basis; without them dd = d and basis = NULL. */
    int64_t dd;
    double *basis;
    bn_backend *be;
    double *eta_w, *eta_gamma, *gamma0; /* S each (host, float64) */
    double *w0;                         /* S×d row-major          */
    double *w_ref;                      /* d                      */
    bn_ref_info ref_info;
    double *rec[F_COUNT];               /* each S×R row-major     */
    double *rec_by_slot[F_COUNT];       /* R×S while running: one record's values are
                                           contiguous; transposed into rec at the end */
    double *w_final, *gamma_final;
    int64_t *diverged;
    double wall;
    int ran;
    /* device buffers */
    void *dXc, *dy, *duhat, *dehat, *deta_w, *deta_g, *dW, *dgamma, *dU, *dQ, *dG, *dring,
        *dscratch;
    int64_t *ddiv;
    int64_t ring_slots;
    bn_sharp_log *sharp; /* sharpness records (issue 3), NULL when off */
    /* checkpoints (issue 6) */
    int64_t start_step;          /* first step to run (> 0 after a resume)    */
    double wall_before;          /* wall time of the runs before a resume     */
    double *restored_rec;        /* F_COUNT×R×S records from a checkpoint     */
    bn_sim_ckpt_hook ckpt_hook;
    void *ckpt_user;
    int64_t ckpt_every;
    double t_start;
    /* host side of the record flow */
    void *staging;               /* one block: half the ring, backend precision */
    double *row;                 /* F_COUNT×S: an observed step that is no record */
    double prof[4];              /* BN_SIM_PROFILE: wait+download, records, transpose, sharpness (s) */
};

int bn_sim_n_fields(void) { return F_COUNT; }
const char *bn_sim_field_name(int i) { return (i >= 0 && i < F_COUNT) ? field_names[i] : NULL; }

void bn_run_config_default(bn_run_config *c)
{
    memset(c, 0, sizeof *c);
    c->loss = BN_LOSS_SQUARE;
    c->precision = BN_FP64;
    c->backend = BN_BACKEND_AUTO;
    c->steps = 1000;
    c->every = 1;
    c->seeds = 1;
    c->eta_w = 0.9;
    c->eta_gamma = 0.05;
    c->gamma0 = 0.1;
    c->w0_scale = 1.0;
    c->w0_align = 0.0;
    c->w0_noise = 1.0;
    c->project_w0 = 1;
    c->sharpness_tol = 1e-6;
    c->sharpness_maxiter = 1000;
}

static bn_status check_setting(const char *what, double v, int allow_zero)
{
    if (!isfinite(v) || v < 0 || (!allow_zero && v == 0))
        return bn_fail(BN_ERR_ARG, "%s must be a finite number %s 0 (got %g)", what,
                       allow_zero ? ">=" : ">", v);
    return BN_OK;
}

static bn_status validate_config(const bn_run_config *c, int64_t d)
{
    if (c->steps <= 0) return bn_fail(BN_ERR_ARG, "steps must be > 0 (got %lld)", (long long)c->steps);
    if (c->every <= 0) return bn_fail(BN_ERR_ARG, "every must be > 0 (got %lld)", (long long)c->every);
    if (c->seeds <= 0) return bn_fail(BN_ERR_ARG, "seeds must be > 0 (got %lld)", (long long)c->seeds);
    if (c->threads < 0) return bn_fail(BN_ERR_ARG, "threads must be >= 0 (got %d)", c->threads);
    if (c->w0 && c->w0_rows != 1 && c->w0_rows != c->seeds)
        return bn_fail(BN_ERR_ARG, "w0 has %lld rows; expected 1 or seeds=%lld (each of length d=%lld)",
                       (long long)c->w0_rows, (long long)c->seeds, (long long)d);
    for (int64_t j = 0; j < c->seeds; j++) {
        BN_TRY(check_setting("eta_w", c->eta_w_per ? c->eta_w_per[j] : c->eta_w, 0));
        BN_TRY(check_setting("eta_gamma", c->eta_gamma_per ? c->eta_gamma_per[j] : c->eta_gamma, 1));
        double g0 = c->gamma0_per ? c->gamma0_per[j] : c->gamma0;
        if (!isfinite(g0)) return bn_fail(BN_ERR_ARG, "gamma0 must be finite (got %g)", g0);
        if (!c->w0) BN_TRY(check_setting("w0_scale", c->w0_scale_per ? c->w0_scale_per[j] : c->w0_scale, 0));
    }
    if (!c->w0 && (!isfinite(c->w0_align) || !isfinite(c->w0_noise) ||
                   (c->w0_align == 0 && c->w0_noise == 0)))
        return bn_fail(BN_ERR_ARG, "w0_align and w0_noise must be finite and not both 0");
    return bn_sharp_validate(c, d);
}

/* The start of every trajectory, S×d row-major: explicit rows, or
 * scale·(align·ê + noise·ξ) with ξ from the seed's own Philox stream. */
static void build_w0(const bn_run_config *c, int64_t d, const double *ehat, double *w0)
{
    for (int64_t j = 0; j < c->seeds; j++) {
        double *w = w0 + j * d;
        if (c->w0) {
            memcpy(w, c->w0 + (c->w0_rows == 1 ? 0 : j) * d, (size_t)d * sizeof(double));
            continue;
        }
        double scale = c->w0_scale_per ? c->w0_scale_per[j] : c->w0_scale;
        bn_rng_normal(c->seed + (uint64_t)j, BN_STREAM_W0, 0, d, w);
        for (int64_t i = 0; i < d; i++) w[i] = scale * (c->w0_align * ehat[i] + c->w0_noise * w[i]);
    }
}

static void fill_per(double *dst, const double *per, double scalar, int64_t S)
{
    for (int64_t j = 0; j < S; j++) dst[j] = per ? per[j] : scalar;
}

static bn_status dev_alloc(bn_backend *be, size_t count, size_t elem, void **p)
{
    size_t bytes = bn_mul_size(count ? count : 1, elem);
    if (!bytes) return bn_fail(BN_ERR_ARG, "buffer of %zu elements is too large", count);
    return be->ops->alloc(be, bytes, p);
}

/* Transposes a row-major rows×cols matrix into column-major (= cols×rows row-major). */
static double *to_col_major(const double *a, int64_t rows, int64_t cols)
{
    double *t = malloc((size_t)rows * (size_t)cols * sizeof(double) + 1);
    if (!t) return NULL;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) t[i + j * rows] = a[i * cols + j];
    return t;
}

/* z = V·w for `rows` vectors (rows×d → rows×dd), one row at a time in a
 * fixed order, so a trajectory's z does not depend on the batch or threads. */
static void to_rowspace(const bn_sim *sim, const double *w, int64_t rows, double *z)
{
    int64_t d = sim->d, r = sim->dd;
    const double *V = sim->basis;
#pragma omp parallel for schedule(static) if (rows * r * d > 1000000)
    for (int64_t j = 0; j < rows; j++)
        for (int64_t k = 0; k < r; k++) {
            double v = 0;
            for (int64_t i = 0; i < d; i++) v += V[k * d + i] * w[j * d + i];
            z[j * r + k] = v;
        }
}

/* w = Vᵀ·z for `rows` vectors (rows×dd → rows×d). */
static void from_rowspace(const bn_sim *sim, const double *z, int64_t rows, double *w)
{
    int64_t d = sim->d, r = sim->dd;
    const double *V = sim->basis;
#pragma omp parallel for schedule(static) if (rows * r * d > 1000000)
    for (int64_t j = 0; j < rows; j++) {
        double *wj = w + j * d;
        for (int64_t i = 0; i < d; i++) wj[i] = 0;
        for (int64_t k = 0; k < r; k++) {
            const double zk = z[j * r + k];
            for (int64_t i = 0; i < d; i++) wj[i] += zk * V[k * d + i];
        }
    }
}

/* Row-space coordinates.  GD moves w only inside the row space of Xc (the
 * gradient Xcᵀq lies there), so with w0 projected onto it (the default) and
 * rank r < d, w = Vᵀz for an orthonormal basis V (r×d) and the run can work
 * with z: Xc·w = (Xc·Vᵀ)·z, ‖w‖ = ‖z‖, wᵀê = zᵀ(V·ê) and ‖w - a·ê‖ = ‖z - a·V·ê‖
 * whenever ê lies in the row space too (the least-squares and SVM directions
 * do), so every record field is the same quantity, with products r/d the size.
 * V is orthonormal, so nothing is worse conditioned than Xc itself.  Off for
 * sharpness runs (the engine works in w), for a start or an ê outside the row
 * space, for data so large that the basis would take more than about a
 * second, and with BN_FULL_SPACE=1.  Sharpness records by the power method
 * use the same coordinates (the engine then works in this basis, issue 7);
 * the exact method and BN_SHARP_FULL need w in R^d.  rs: the row space
 * (NULL: not computed, because the rules below exclude it). */
static int coordinates_considered(const bn_sim *sim)
{
    int64_t n = sim->n, d = sim->d;
    const char *env = getenv("BN_FULL_SPACE");
    int sharp_in_rd = sim->cfg.sharpness_every > 0 &&
                      (sim->cfg.sharpness_method != BN_SHARPNESS_POWER || getenv("BN_SHARP_FULL") != NULL);
    if (sharp_in_rd || (env && *env && strcmp(env, "0") != 0) || n >= d) return 0;
    /* The basis is an SVD of Xc (~4n²d flops): at most about a second.  The
     * rule looks at the data's shape only, never at S or T, so a trajectory
     * runs in the same coordinates alone or in any batch. */
    return 4.0 * (double)n * (double)n * (double)d <= 1e10;
}

/* Whether v (d) lies in the row space: its residual after projection,
 * formed explicitly (no cancellation), within rounding of its norm.
 * work: dd + d doubles. */
static int in_rowspace(const bn_sim *sim, const double *v, double *work)
{
    int64_t d = sim->d;
    double *back = work + sim->dd;
    to_rowspace(sim, v, 1, work);
    from_rowspace(sim, work, 1, back);
    double v2 = 0, e2 = 0;
    for (int64_t i = 0; i < d; i++) {
        e2 += (v[i] - back[i]) * (v[i] - back[i]);
        v2 += v[i] * v[i];
    }
    return e2 <= 1e-24 * v2;
}

static bn_status choose_coordinates(bn_sim *sim, const bn_la_rowspace *rs, const double *ehat)
{
    int64_t d = sim->d;
    sim->dd = d;
    if (!rs || !coordinates_considered(sim)) return BN_OK;
    int64_t r = bn_la_rowspace_rank(rs);
    /* Only where it pays: at least a quarter of the dimensions go. */
    if (r <= 0 || 4 * r > 3 * d) return BN_OK;
    sim->basis = malloc((size_t)r * (size_t)d * sizeof(double));
    double *work = malloc((size_t)(r + d) * sizeof(double));
    int use = sim->basis && work;
    if (use) {
        memcpy(sim->basis, bn_la_rowspace_basis(rs), (size_t)r * (size_t)d * sizeof(double));
        sim->dd = r;
    }
    /* ê and a start given as is (not projected here) must lie in the row
     * space.  (Explicit starts decide for their whole batch: one row outside
     * the row space keeps the batch in R^d, so such a row's batch mates then
     * round as in R^d.) */
    if (use) use = in_rowspace(sim, ehat, work);
    for (int64_t j = 0; use && !sim->cfg.project_w0 && j < sim->S; j++) use = in_rowspace(sim, sim->w0 + j * d, work);
    free(work);
    if (!use) {
        free(sim->basis);
        sim->basis = NULL;
        sim->dd = d;
    }
    return BN_OK;
}

/* *xr_out: the host Xc·Vᵀ (n×dd row-major) in row-space coordinates, which
 * the sharpness log reuses (the caller frees it), else NULL. */
static bn_status upload_problem(bn_sim *sim, const double *xc, const double *y,
                                const double *uhat, const double *ehat, double **xr_out)
{
    *xr_out = NULL;
    bn_backend *be = sim->be;
    int64_t n = sim->n, d = sim->dd, S = sim->S;
    size_t rs = bn_real_size(be->precision);
    size_t block = (size_t)BN_ST_COUNT * (size_t)S;
    /* Two halves: while the host copies one block's records out of one, the
     * next block writes into the other.  Each half holds every step (an
     * observer sees each one) when memory allows. */
    int64_t half = (int64_t)(BN_RING_BYTES / 2 / (block * rs));
    if (half < 1) half = 1;
    if (half > sim->cfg.steps + 1) half = sim->cfg.steps + 1;
    sim->ring_slots = 2 * half;
    BN_TRY(dev_alloc(be, (size_t)n * (size_t)d, rs, &sim->dXc));
    BN_TRY(dev_alloc(be, (size_t)n, rs, &sim->dy));
    BN_TRY(dev_alloc(be, (size_t)n, rs, &sim->duhat));
    BN_TRY(dev_alloc(be, (size_t)d, rs, &sim->dehat));
    BN_TRY(dev_alloc(be, (size_t)S, rs, &sim->deta_w));
    BN_TRY(dev_alloc(be, (size_t)S, rs, &sim->deta_g));
    BN_TRY(dev_alloc(be, (size_t)S, rs, &sim->dgamma));
    BN_TRY(dev_alloc(be, (size_t)d * (size_t)S, rs, &sim->dW));
    BN_TRY(dev_alloc(be, (size_t)d * (size_t)S, rs, &sim->dG));
    BN_TRY(dev_alloc(be, (size_t)n * (size_t)S, rs, &sim->dU));
    BN_TRY(dev_alloc(be, (size_t)n * (size_t)S, rs, &sim->dQ));
    BN_TRY(dev_alloc(be, block * (size_t)sim->ring_slots, rs, &sim->dring));
    BN_TRY(dev_alloc(be, block, rs, &sim->dscratch));
    BN_TRY(dev_alloc(be, (size_t)S, sizeof(int64_t), (void **)&sim->ddiv));

    /* In row-space coordinates: Xc·Vᵀ (n×dd), V·ê and z0 = V·w0. */
    double *xr = NULL, *er = NULL, *z0 = NULL;
    if (sim->basis) {
        xr = malloc((size_t)n * (size_t)d * sizeof(double) + 1);
        er = malloc((size_t)d * sizeof(double) + 1);
        z0 = malloc((size_t)S * (size_t)d * sizeof(double) + 1);
        if (!xr || !er || !z0) {
            free(xr), free(er), free(z0);
            return bn_fail(BN_ERR_NOMEM, "cannot allocate the row-space coordinates");
        }
        /* One product for the data (the same for every trajectory). */
        bn_la_gemm(0, 1, n, d, sim->d, 1.0, xc, sim->d, sim->basis, sim->d, 0.0, xr, d);
        to_rowspace(sim, ehat, 1, er);
        to_rowspace(sim, sim->w0, S, z0);
    }
    double *xc_cm = to_col_major(xr ? xr : xc, n, d);
    bn_status st = xc_cm ? bn_upload_f64(be, sim->dXc, xc_cm, (size_t)n * (size_t)d)
                         : bn_fail(BN_ERR_NOMEM, "cannot allocate staging memory for the upload");
    free(xc_cm);
    /* w0 is S×d row-major, which is already W's d×S column-major layout. */
    if (!st) st = bn_upload_f64(be, sim->dW, z0 ? z0 : sim->w0, (size_t)d * (size_t)S);
    if (!st) st = bn_upload_f64(be, sim->dehat, er ? er : ehat, (size_t)d);
    free(er), free(z0);
    *xr_out = xr;
    BN_TRY(st);
    BN_TRY(bn_upload_f64(be, sim->dy, y, (size_t)n));
    BN_TRY(bn_upload_f64(be, sim->duhat, uhat, (size_t)n));
    BN_TRY(bn_upload_f64(be, sim->deta_w, sim->eta_w, (size_t)S));
    BN_TRY(bn_upload_f64(be, sim->deta_g, sim->eta_gamma, (size_t)S));
    BN_TRY(bn_upload_f64(be, sim->dgamma, sim->gamma0, (size_t)S));
    for (int64_t j = 0; j < S; j++) sim->diverged[j] = -1;
    return be->ops->upload(be, sim->ddiv, sim->diverged, (size_t)S * sizeof(int64_t));
}

/* Host memory still to come: the record buffers of the run, staging, and on
 * the CPU backend its "device" buffers (the CUDA backend checks device memory
 * itself, allocation by allocation). */
static bn_status check_memory(const bn_sim *sim)
{
    double n = (double)sim->n, d = (double)sim->d, S = (double)sim->S, R = (double)sim->R;
    double rs = (double)bn_real_size(sim->be->precision);
    double host = 8.0 * ((double)F_COUNT * S * R + 2.0 * n * d + 2.0 * S * d) + (double)BN_RING_BYTES;
    if (sim->be->kind == BN_BACKEND_CPU)
        host += rs * (2.0 * n * d + 2.0 * d * S + 2.0 * n * S + 4.0 * S) + (double)BN_RING_BYTES;
    char what[160];
    snprintf(what, sizeof what, "a run of %lld trajectories (n=%lld, d=%lld, %lld records)", (long long)sim->S,
             (long long)sim->n, (long long)sim->d, (long long)sim->R);
    return bn_check_host_memory(host, what);
}

static bn_status alloc_host(bn_sim *sim)
{
    int64_t S = sim->S, d = sim->d;
    size_t sr = bn_mul_size((size_t)S, (size_t)sim->R);
    if (!sr || !bn_mul_size(sr, sizeof(double) * F_COUNT))
        return bn_fail(BN_ERR_ARG, "%lld seeds × %lld records is too large", (long long)S, (long long)sim->R);
    sim->eta_w = malloc((size_t)S * sizeof(double));
    sim->eta_gamma = malloc((size_t)S * sizeof(double));
    sim->gamma0 = malloc((size_t)S * sizeof(double));
    sim->gamma_final = malloc((size_t)S * sizeof(double));
    sim->diverged = malloc((size_t)S * sizeof(int64_t));
    sim->w0 = malloc((size_t)S * (size_t)d * sizeof(double));
    sim->w_final = malloc((size_t)S * (size_t)d * sizeof(double));
    sim->w_ref = calloc((size_t)d, sizeof(double));
    int ok = sim->eta_w && sim->eta_gamma && sim->gamma0 && sim->gamma_final && sim->diverged &&
             sim->w0 && sim->w_final && sim->w_ref;
    for (int f = 0; f < F_COUNT && ok; f++) ok = (sim->rec[f] = malloc(sr * sizeof(double))) != NULL;
    if (!ok)
        return bn_fail(BN_ERR_NOMEM, "cannot allocate host memory for %lld trajectories × %lld records",
                       (long long)S, (long long)sim->R);
    return BN_OK;
}

bn_status bn_sim_create(const bn_dataset *ds, const bn_run_config *cfg, bn_sim **out)
{
    *out = NULL;
    bn_clear_error();
    int64_t n = bn_dataset_n(ds), d = bn_dataset_d(ds);
    BN_TRY(validate_config(cfg, d));
    if (cfg->loss == BN_LOSS_LOGISTIC) BN_TRY(bn_dataset_check_labels(ds));

    bn_sim *sim = calloc(1, sizeof *sim);
    if (!sim) return bn_fail(BN_ERR_NOMEM, "cannot allocate the simulation");
    sim->cfg = *cfg;
    sim->cfg.eta_w_per = sim->cfg.eta_gamma_per = sim->cfg.gamma0_per = sim->cfg.w0_scale_per = NULL;
    sim->cfg.w0 = sim->cfg.w_ref = NULL; /* the sim keeps its own copies */
    sim->n = n;
    sim->d = d;
    sim->S = cfg->seeds;
    sim->R = bn_record_count(cfg->steps, cfg->every);

    double *xc = NULL, *ehat = NULL, *uhat = NULL, *xr = NULL;
    bn_status st = alloc_host(sim);
    if (st == BN_OK) st = bn_dataset_centered(ds, &xc);
    if (st == BN_OK) {
        fill_per(sim->eta_w, cfg->eta_w_per, cfg->eta_w, sim->S);
        fill_per(sim->eta_gamma, cfg->eta_gamma_per, cfg->eta_gamma, sim->S);
        fill_per(sim->gamma0, cfg->gamma0_per, cfg->gamma0, sim->S);
        ehat = calloc((size_t)d, sizeof(double));
        uhat = calloc((size_t)n, sizeof(double));
        if (!ehat || !uhat) st = bn_fail(BN_ERR_NOMEM, "cannot allocate the reference direction");
    }
    if (st == BN_OK) st = bn_setup_reference(ds, cfg, xc, sim->w_ref, &sim->ref_info, ehat, uhat);
    /* One row space (an SVD) for both the projection of w0 and the coordinates. */
    bn_la_rowspace *rs = NULL;
    if (st == BN_OK && (cfg->project_w0 || coordinates_considered(sim)))
        st = bn_la_rowspace_create(xc, n, d, 0.0, &rs);
    if (st == BN_OK) {
        build_w0(cfg, d, ehat, sim->w0);
        if (cfg->project_w0) st = bn_setup_project_rowspace(rs, sim->w0, sim->S);
    }
    if (st == BN_OK) st = bn_setup_check_w0(xc, n, d, sim->w0, sim->S);
    if (st == BN_OK) st = choose_coordinates(sim, rs, ehat);
    bn_la_rowspace_free(rs);
    if (st == BN_OK) st = bn_backend_open(cfg->backend, cfg->precision, cfg->threads, cfg->device, &sim->be);
    if (st == BN_OK) st = check_memory(sim);
    if (st == BN_OK) st = upload_problem(sim, xc, bn_dataset_y(ds), uhat, ehat, &xr);
    if (st == BN_OK && cfg->sharpness_every > 0)
    {
        bn_sharp_log_host host = {.xc = xc, .y = bn_dataset_y(ds), .w0 = sim->w0, .rank_hint = sim->ref_info.rank,
                                  .basis = sim->basis, .basis_rank = sim->basis ? sim->dd : 0, .xr = xr};
        st = bn_sharp_log_create(sim->be, cfg, n, d, sim->dXc, sim->dy, sim->eta_w, sim->eta_gamma, &host,
                                 &sim->sharp);
    }
    free(xc);
    free(ehat);
    free(uhat);
    free(xr);
    if (st != BN_OK) {
        /* Keep the message of the first failure: freeing never fails. */
        bn_sim_free(sim);
        return st;
    }
    *out = sim;
    return BN_OK;
}

/* Threads for the host's per-record passes (conversion, transposition). */
static int host_threads(const bn_sim *sim)
{
    return sim->cfg.threads > 0 ? sim->cfg.threads : omp_get_max_threads();
}

/* Turns the staged ring slots [0, count) — steps t_first.. on the ring
 * schedule `ring_every`, in the backend's precision — into record columns
 * (steps on the run's schedule) and observer calls, in step order. */
static bn_status collect_records(bn_sim *sim, int64_t slot0, int64_t count, int64_t t_first,
                                 int64_t ring_every, bn_step_observer observer, void *obs_user)
{
    int64_t S = sim->S;
    size_t block = (size_t)BN_ST_COUNT * (size_t)S;
    double *row = sim->row; /* one step's fields, F_COUNT×S */
    int64_t T = sim->cfg.steps, K = sim->cfg.every;
    int no_ref = sim->cfg.skip_reference, f32 = sim->be->precision == BN_FP32;
    int nt = host_threads(sim);
    const double *eta_w = sim->eta_w;
    int64_t t = t_first;
    for (int64_t k = 0; k < count; k++) {
        while (bn_record_slot(t, T, ring_every) != slot0 + k) t++;
        const void *blk = (const char *)sim->staging + (size_t)k * block * (f32 ? sizeof(float) : sizeof(double));
        int64_t slot = bn_record_slot(t, T, K);
        /* Straight into the record when this step is one, else into row. */
        double *dst = slot >= 0 ? NULL : row;
        double *out[F_COUNT];
        for (int f = 0; f < F_COUNT; f++)
            out[f] = dst ? dst + (size_t)f * (size_t)S : sim->rec_by_slot[f] + (size_t)slot * (size_t)S;
        double tt = (double)t;
#define ST(field) (f32 ? (double)((const float *)blk)[(size_t)(field) * (size_t)S + (size_t)j] \
                       : ((const double *)blk)[(size_t)(field) * (size_t)S + (size_t)j])
        BN_PAR_FOR(S >= 2048, num_threads(nt) schedule(static), j, S, {
            double loss = ST(BN_ST_LOSS), gam = ST(BN_ST_GAMMA), sn = ST(BN_ST_SNORM);
            double a = ST(BN_ST_ALPHA), b = ST(BN_ST_BETA), as = ST(BN_ST_ALPHA_S), bs = ST(BN_ST_BETA_S);
            if (no_ref) a = b = as = bs = NAN;
            out[F_STEP][j] = tt;
            out[F_LOSS][j] = loss;
            out[F_GAMMA][j] = gam;
            out[F_WNORM][j] = ST(BN_ST_WNORM);
            out[F_WNORM_S][j] = sn;
            out[F_ALPHA][j] = a;
            out[F_BETA][j] = b;
            out[F_RHO][j] = b / a;
            out[F_ETA_EFF][j] = eta_w[j] * gam / (sn * sn);
            out[F_GNORM][j] = ST(BN_ST_GNORM);
            out[F_GGAMMA][j] = ST(BN_ST_GGAMMA);
            out[F_ALPHA_S][j] = as;
            out[F_BETA_S][j] = bs;
            out[F_RHO_S][j] = bs / as;
        });
#undef ST
        if (observer) {
            const double *seen[F_COUNT];
            for (int f = 0; f < F_COUNT; f++) seen[f] = out[f];
            if (observer(obs_user, t, seen, S))
                return bn_fail(BN_ERR_INTERRUPTED, "the step observer stopped the run at step %lld", (long long)t);
        }
        t++;
    }
    return BN_OK;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Largest t1 > t0 such that steps t0..t1-1 fill at most `slots` record slots. */
static int64_t block_end(int64_t t0, int64_t T, int64_t K, int64_t slots, int64_t max_steps)
{
    int64_t used = 0, t = t0;
    while (t <= T && t - t0 < max_steps) {
        int64_t add = bn_record_slot(t, T, K) >= 0;
        if (used + add > slots) break;
        used += add;
        t++;
    }
    return t;
}

/* w_final, gamma_final and the divergence steps from the backend: the end of
 * the run, or where it stopped. */
static bn_status download_final(bn_sim *sim)
{
    bn_backend *be = sim->be;
    /* W's d×S column-major layout is w_final's S×d row-major. */
    if (sim->basis) {
        size_t zn = (size_t)sim->S * (size_t)sim->dd;
        double *z = malloc(zn * sizeof(double) + 1);
        if (!z) return bn_fail(BN_ERR_NOMEM, "cannot allocate the final state");
        bn_status st = bn_download_f64(be, z, sim->dW, zn);
        if (!st) from_rowspace(sim, z, sim->S, sim->w_final);
        free(z);
        BN_TRY(st);
    } else {
        BN_TRY(bn_download_f64(be, sim->w_final, sim->dW, (size_t)sim->S * (size_t)sim->d));
    }
    BN_TRY(bn_download_f64(be, sim->gamma_final, sim->dgamma, (size_t)sim->S));
    BN_TRY(be->ops->download(be, sim->diverged, sim->ddiv, (size_t)sim->S * sizeof(int64_t)));
    BN_TRY(be->ops->synchronize(be));
    sim->wall = sim->wall_before + now_seconds() - sim->t_start;
    return BN_OK;
}

bn_status bn_sim_run(bn_sim *sim, bn_progress_fn progress, void *user)
{
    return bn_sim_run_observed(sim, progress, user, NULL, NULL);
}

/* The block that starts at t0: its end t1 (at most max_steps, the ring's
 * capacity, the next checkpoint and the next sharpness step) and the first
 * ring slot it records into. */
static int64_t plan_block(const bn_sim *sim, int64_t t0, int64_t K, int64_t max_steps, int64_t *slot0)
{
    int64_t T = sim->cfg.steps;
    *slot0 = -1;
    for (int64_t t = t0; t <= T && *slot0 < 0; t++) *slot0 = bn_record_slot(t, T, K);
    /* The checkpoint and sharpness limits first: block_end scans step by
     * step, and a sharpness record every 10 steps would otherwise pay for a
     * scan of up to max_steps on every block (~3 µs at S = 1). */
    int64_t limit = t0 + max_steps;
    if (sim->ckpt_hook && sim->ckpt_every > 0) {
        int64_t next = (t0 / sim->ckpt_every + 1) * sim->ckpt_every;
        if (limit > next) limit = next;
    }
    if (sim->sharp) {
        int64_t ts = bn_sharp_log_next_step(sim->sharp, t0);
        if (limit > ts) limit = ts;
    }
    return block_end(t0, T, K, sim->ring_slots / 2, limit - t0);
}

static int ckpt_due(const bn_sim *sim, int64_t t)
{
    return sim->ckpt_hook && sim->ckpt_every > 0 && t <= sim->cfg.steps && t % sim->ckpt_every == 0;
}

/* The sharpness records due at step t (timed for BN_SIM_PROFILE). */
static bn_status sharpness_at(bn_sim *sim, int64_t t)
{
    double c0 = now_seconds();
    bn_status st = bn_sharp_log_at(sim->sharp, t, sim->dW, sim->dgamma);
    sim->prof[3] += now_seconds() - c0;
    return st;
}

/* Blocks of steps with the records flowing back between them.  Blocks write
 * their records into alternate halves of the ring.  On a GPU the next block
 * is launched before the host has the previous one's records: they are copied
 * out of their half by the copy engine while the next block computes into
 * the other half, and turned into fields and observer calls meanwhile.  Only
 * where the host needs the state itself (a checkpoint, a sharpness record, a
 * stop) does it wait with nothing in flight. */
static bn_status run_blocks(bn_sim *sim, bn_progress_fn progress, void *user,
                           bn_step_observer observer, void *obs_user)
{
    sim->ran = 1;
    bn_backend *be = sim->be;
    bn_step_plan plan = {
        .n = sim->n, .d = sim->dd, .S = sim->S,
        .logistic = sim->cfg.loss == BN_LOSS_LOGISTIC,
        .Xc = sim->dXc, .y = sim->dy, .uhat = sim->duhat, .ehat = sim->dehat,
        .eta_w = sim->deta_w, .eta_gamma = sim->deta_g,
        .W = sim->dW, .gamma = sim->dgamma, .U = sim->dU, .Q = sim->dQ, .G = sim->dG,
        .stats_ring = sim->dring, .ring_slots = sim->ring_slots, .stats_scratch = sim->dscratch,
        .diverged_step = sim->ddiv, .steps = sim->cfg.steps,
        /* An observer sees every step, so the ring then holds every step. */
        .every = observer ? 1 : sim->cfg.every,
    };
    int64_t T = sim->cfg.steps, K = plan.every, H = sim->ring_slots / 2;
    size_t block_bytes = (size_t)BN_ST_COUNT * (size_t)sim->S * bn_real_size(be->precision);
    int async = be->ops->download_async && be->ops->download_wait;
    int half = 0; /* the ring half of the block in flight */
    /* Keep blocks to roughly a few GFLOP so progress and records flow. */
    double flop_step = 4.0 * (double)sim->n * (double)sim->dd * (double)sim->S;
    /* ~0.5 s of work per block on a CPU; a GPU is ~100× faster. */
    double flop_block = be->kind == BN_BACKEND_CUDA ? 2e12 : 2e10;
    int64_t max_steps = (int64_t)(flop_block / (flop_step + 1.0));
    if (max_steps > BN_BLOCK_MAX_STEPS) max_steps = BN_BLOCK_MAX_STEPS;
    if (max_steps < 1) max_steps = 1;
    /* slot0 - h·H puts the block's slots into ring half h. */
#define LAUNCH(a, b, s0, h)                                                                       \
    BN_TRY(be->ops->run_steps ? be->ops->run_steps(be, &plan, a, b, (s0) - (h) * H)              \
                              : bn_run_steps_generic(be, &plan, a, b, (s0) - (h) * H))

    sim->t_start = now_seconds();
    int64_t t0 = sim->start_step, slot0 = -1, t1;
    if (t0 > T) return download_final(sim);
    if (sim->sharp) BN_TRY(sharpness_at(sim, t0));
    t1 = plan_block(sim, t0, K, max_steps, &slot0);
    LAUNCH(t0, t1, slot0, half);
    int stop_pending = 0;
    for (;;) {
        int64_t count = 0;
        for (int64_t t = t0; t < t1; t++) count += bn_record_slot(t, T, K) >= 0;
        double c0 = now_seconds();
        const void *src = (const char *)sim->dring + (size_t)(half * H) * block_bytes;
        /* Synchronous: waits for the block.  Asynchronous: the copy starts
         * when the block is done, beside the next one. */
        if (count && async) BN_TRY(be->ops->download_async(be, sim->staging, src, (size_t)count * block_bytes));
        else if (count) BN_TRY(be->ops->download(be, sim->staging, src, (size_t)count * block_bytes));
        int64_t n0 = t1, n1 = -1, nslot0 = -1;
        int ahead = n0 <= T && !sim->sharp && !stop_pending && !ckpt_due(sim, n0);
        if (ahead) {
            n1 = plan_block(sim, n0, K, max_steps, &nslot0);
            LAUNCH(n0, n1, nslot0, 1 - half);
        }
        if (count && async) BN_TRY(be->ops->download_wait(be));
        double c1 = now_seconds();
        if (count) BN_TRY(collect_records(sim, slot0, count, t0, K, observer, obs_user));
        sim->prof[0] += c1 - c0;
        sim->prof[1] += now_seconds() - c1;
        int stop = progress && progress(user, t1 > T ? T : t1, T);
        if (t1 > T) break;
        if (stop_pending || (stop && !ahead)) {
            /* A consistent point: the state of step t1, every earlier step observed. */
            sim->start_step = t1;
            if (sim->ckpt_hook) BN_TRY(sim->ckpt_hook(sim->ckpt_user, sim, t1, 1));
            BN_TRY(download_final(sim));
            return bn_fail(BN_ERR_INTERRUPTED, "stopped at step %lld of %lld", (long long)t1, (long long)T);
        }
        if (stop) stop_pending = 1; /* after the block already running */
        if (!ahead) {
            sim->start_step = t1;
            if (ckpt_due(sim, t1)) BN_TRY(sim->ckpt_hook(sim->ckpt_user, sim, t1, 0));
            if (sim->sharp) BN_TRY(sharpness_at(sim, t1));
            n1 = plan_block(sim, n0, K, max_steps, &nslot0);
            LAUNCH(n0, n1, nslot0, 1 - half);
        }
        half = 1 - half;
        t0 = n0;
        t1 = n1;
        slot0 = nslot0;
    }
#undef LAUNCH
    sim->start_step = T + 1;
    return download_final(sim);
}

/* Records are collected record-major (a record's S values are written
 * contiguously; S×R writes would stride by R) and transposed once at the end,
 * also when the run stops early, so the records so far are readable. */
bn_status bn_sim_run_observed(bn_sim *sim, bn_progress_fn progress, void *user,
                              bn_step_observer observer, void *obs_user)
{
    bn_clear_error();
    if (sim->ran) return bn_fail(BN_ERR_ARG, "this simulation has already run; create a new one");
    size_t sr = (size_t)sim->S * (size_t)sim->R;
    int nt = host_threads(sim);
    int ok = 1;
    for (int f = 0; f < F_COUNT; f++) ok &= (sim->rec_by_slot[f] = malloc(sr * sizeof(double))) != NULL;
    /* One block's records (half the ring), page-locked where the backend can. */
    size_t staging_bytes = (size_t)(sim->ring_slots / 2) * (size_t)BN_ST_COUNT * (size_t)sim->S *
                           bn_real_size(sim->be->precision);
    if (sim->be->ops->alloc_host) {
        if (sim->be->ops->alloc_host(sim->be, staging_bytes, &sim->staging) != BN_OK) sim->staging = NULL;
    } else {
        sim->staging = malloc(staging_bytes);
    }
    sim->row = malloc((size_t)F_COUNT * (size_t)sim->S * sizeof(double));
    bn_status st = ok && sim->staging && sim->row
                       ? BN_OK
                       : bn_fail(BN_ERR_NOMEM, "cannot allocate the record buffers (%zu values)", sr * F_COUNT);
    for (int f = 0; f < F_COUNT && !st; f++) {
        double *r = sim->rec_by_slot[f];
        const double *from = sim->restored_rec ? sim->restored_rec + (size_t)f * sr : NULL;
#pragma omp parallel for num_threads(nt) schedule(static) if (sr >= 65536)
        for (size_t i = 0; i < sr; i++) r[i] = from ? from[i] : NAN;
    }
    free(sim->restored_rec);
    sim->restored_rec = NULL;
    if (!st) st = run_blocks(sim, progress, user, observer, obs_user);
    double c0 = now_seconds();
    /* R×S → S×R in 64×64 tiles, so both sides stay in cache. */
    int64_t R = sim->R, S = sim->S, TB = 64;
    for (int f = 0; f < F_COUNT && ok; f++) {
        const double *src = sim->rec_by_slot[f];
        double *dst = sim->rec[f];
#pragma omp parallel for collapse(2) num_threads(nt) schedule(static) if (sr >= 65536)
        for (int64_t r0 = 0; r0 < R; r0 += TB)
            for (int64_t j0 = 0; j0 < S; j0 += TB)
                for (int64_t r = r0; r < (r0 + TB < R ? r0 + TB : R); r++)
                    for (int64_t j = j0; j < (j0 + TB < S ? j0 + TB : S); j++)
                        dst[(size_t)j * (size_t)R + (size_t)r] = src[(size_t)r * (size_t)S + (size_t)j];
    }
    for (int f = 0; f < F_COUNT; f++) {
        free(sim->rec_by_slot[f]);
        sim->rec_by_slot[f] = NULL;
    }
    if (sim->be->ops->free_host) sim->be->ops->free_host(sim->be, sim->staging);
    else free(sim->staging);
    free(sim->row);
    sim->staging = NULL;
    sim->row = NULL;
    sim->prof[2] += now_seconds() - c0;
    if (getenv("BN_SIM_PROFILE"))
        fprintf(stderr, "bn_sim profile: %lld trajectories (coordinates %lld of %lld), run %.3f s: waiting for blocks + record downloads "
                        "%.3f s, records and observer %.3f s, final transposition %.3f s, sharpness %.3f s\n",
                (long long)sim->S, (long long)sim->dd, (long long)sim->d, sim->wall, sim->prof[0], sim->prof[1], sim->prof[2], sim->prof[3]);
    return st;
}

void bn_sim_free(bn_sim *sim)
{
    if (!sim) return;
    bn_sharp_log_free(sim->sharp);
    if (sim->be) {
        void *bufs[] = {sim->dXc, sim->dy, sim->duhat, sim->dehat, sim->deta_w, sim->deta_g,
                        sim->dW, sim->dgamma, sim->dU, sim->dQ, sim->dG, sim->dring,
                        sim->dscratch, sim->ddiv};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            if (bufs[i]) sim->be->ops->dealloc(sim->be, bufs[i]);
        bn_backend_close(sim->be);
    }
    for (int f = 0; f < F_COUNT; f++) free(sim->rec[f]);
    free(sim->restored_rec);
    free(sim->basis);
    free(sim->eta_w);
    free(sim->eta_gamma);
    free(sim->gamma0);
    free(sim->w0);
    free(sim->w_ref);
    free(sim->w_final);
    free(sim->gamma_final);
    free(sim->diverged);
    free(sim);
}

bn_status bn_sim_field(const bn_sim *sim, const char *name, const double **data, int64_t *rows,
                       int64_t *cols)
{
    for (int f = 0; f < F_COUNT; f++)
        if (strcmp(name, field_names[f]) == 0) {
            *data = sim->rec[f];
            *rows = sim->S;
            *cols = sim->R;
            return BN_OK;
        }
    return bn_fail(BN_ERR_ARG, "no record field named '%s'", name);
}

int64_t bn_sim_records(const bn_sim *sim) { return sim->R; }
int64_t bn_sim_seeds(const bn_sim *sim) { return sim->S; }
int64_t bn_sim_dim(const bn_sim *sim) { return sim->d; }
const double *bn_sim_w_final(const bn_sim *sim) { return sim->w_final; }
const double *bn_sim_gamma_final(const bn_sim *sim) { return sim->gamma_final; }
const double *bn_sim_w_ref(const bn_sim *sim) { return sim->w_ref; }
const double *bn_sim_w0(const bn_sim *sim) { return sim->w0; }
const int64_t *bn_sim_diverged_step(const bn_sim *sim) { return sim->diverged; }
const bn_ref_info *bn_sim_ref_info(const bn_sim *sim) { return &sim->ref_info; }
bn_backend_kind bn_sim_backend(const bn_sim *sim) { return sim->be->kind; }
const char *bn_sim_backend_desc(const bn_sim *sim) { return sim->be->desc; }
int bn_sim_threads(const bn_sim *sim) { return sim->be->threads; }
double bn_sim_wall_seconds(const bn_sim *sim) { return sim->wall; }
int64_t bn_sim_next_step(const bn_sim *sim) { return sim->start_step; }
int64_t bn_sim_coordinate_dim(const bn_sim *sim) { return sim->dd; }

int bn_sim_n_sharpness_arrays(const bn_sim *sim) { return bn_sharp_log_n_arrays(sim->sharp); }
bn_status bn_sim_sharpness_array(const bn_sim *sim, int i, bn_sim_array *out)
{
    return bn_sharp_log_array(sim->sharp, i, out);
}
bn_status bn_sim_sharpness_find(const bn_sim *sim, const char *name, bn_sim_array *out)
{
    for (int i = 0; i < bn_sharp_log_n_arrays(sim->sharp); i++)
        if (bn_sharp_log_array(sim->sharp, i, out) == BN_OK && strcmp(out->name, name) == 0) return BN_OK;
    memset(out, 0, sizeof *out);
    return bn_fail(BN_ERR_ARG, "no sharpness array named '%s'%s", name,
                   sim->sharp ? "" : " (sharpness is off: set sharpness_every)");
}
void bn_sim_sharpness_info(const bn_sim *sim, bn_sharpness_info *info) { bn_sharp_log_info(sim->sharp, info); }

/* ------------------------------------------------------------ checkpoints */

void bn_sim_set_ckpt_hook(bn_sim *sim, int64_t every, bn_sim_ckpt_hook hook, void *user)
{
    sim->ckpt_every = every;
    sim->ckpt_hook = hook;
    sim->ckpt_user = user;
}

void bn_sim_ckpt_config(const bn_sim *sim, bn_cfgtext *t)
{
    const bn_run_config *c = &sim->cfg;
    int64_t S = sim->S;
    bn_cfgtext_add(t, "bnspike=%s", BN_VERSION);
    bn_cfgtext_add(t, "n=%lld", (long long)sim->n);
    bn_cfgtext_add(t, "d=%lld", (long long)sim->d);
    bn_cfgtext_add(t, "coordinates=%s:%lld", sim->basis ? "rowspace" : "full", (long long)sim->dd);
    bn_cfgtext_add(t, "loss=%s", bn_loss_name(c->loss));
    bn_cfgtext_add(t, "precision=%s", bn_precision_name(c->precision));
    /* Bitwise continuation needs the same arithmetic: backend and threads. */
    bn_cfgtext_add(t, "backend=%s", bn_backend_name(sim->be->kind));
    bn_cfgtext_add(t, "threads=%d", sim->be->threads);
    bn_cfgtext_add(t, "steps=%lld", (long long)c->steps);
    bn_cfgtext_add(t, "every=%lld", (long long)c->every);
    bn_cfgtext_add(t, "seeds=%lld", (long long)S);
    bn_cfgtext_add(t, "seed=%llu", (unsigned long long)c->seed);
    bn_cfgtext_array(t, "eta_w", sim->eta_w, (size_t)S, sizeof(double));
    bn_cfgtext_array(t, "eta_gamma", sim->eta_gamma, (size_t)S, sizeof(double));
    bn_cfgtext_array(t, "gamma0", sim->gamma0, (size_t)S, sizeof(double));
    bn_cfgtext_array(t, "w0", sim->w0, (size_t)S * (size_t)sim->d, sizeof(double));
    bn_cfgtext_array(t, "w_ref", sim->w_ref, (size_t)sim->d, sizeof(double));
    bn_cfgtext_add(t, "skip_reference=%d", c->skip_reference);
    bn_cfgtext_sharpness(t, c);
}

bn_status bn_sim_ckpt_save(bn_sim *sim, bn_ckpt *c)
{
    bn_backend *be = sim->be;
    size_t rs = bn_real_size(be->precision), dS = (size_t)sim->dd * (size_t)sim->S, S = (size_t)sim->S;
    size_t sr = S * (size_t)sim->R;
    if (!sim->rec_by_slot[0]) return bn_fail(BN_ERR_ARG, "the sim can be checkpointed only while it runs");
    /* (W, γ) in the backend's own precision: the continuation sees the same bits. */
    unsigned char *buf = malloc(dS * rs + 1);
    if (!buf) return bn_fail(BN_ERR_NOMEM, "cannot stage %zu bytes of state for the checkpoint", dS * rs);
    bn_status st = bn_ckpt_put_i64(c, "sim.step", sim->start_step);
    if (!st) st = be->ops->download(be, buf, sim->dW, dS * rs);
    if (!st) st = be->ops->synchronize(be);
    if (!st) st = bn_ckpt_put(c, "sim.W", buf, dS * rs);
    if (!st) st = be->ops->download(be, buf, sim->dgamma, S * rs);
    if (!st) st = be->ops->synchronize(be);
    if (!st) st = bn_ckpt_put(c, "sim.gamma", buf, S * rs);
    if (!st) st = be->ops->download(be, sim->diverged, sim->ddiv, S * sizeof(int64_t));
    if (!st) st = be->ops->synchronize(be);
    if (!st) st = bn_ckpt_put(c, "sim.diverged", sim->diverged, S * sizeof(int64_t));
    free(buf);
    BN_TRY(st);
    for (int f = 0; f < F_COUNT; f++) BN_TRY(bn_ckpt_put(c, "sim.records", sim->rec_by_slot[f], sr * sizeof(double)));
    double wall = sim->wall_before + now_seconds() - sim->t_start;
    BN_TRY(bn_ckpt_put(c, "sim.wall", &wall, sizeof wall));
    return sim->sharp ? bn_sharp_log_ckpt_save(sim->sharp, c) : BN_OK;
}

bn_status bn_sim_ckpt_load(bn_sim *sim, bn_ckpt *c)
{
    if (sim->ran) return bn_fail(BN_ERR_ARG, "a checkpoint must be loaded before the sim runs");
    bn_backend *be = sim->be;
    size_t rs = bn_real_size(be->precision), dS = (size_t)sim->dd * (size_t)sim->S, S = (size_t)sim->S;
    size_t sr = S * (size_t)sim->R;
    int64_t step;
    BN_TRY(bn_ckpt_get_i64(c, "sim.step", &step));
    if (step < 0 || step > sim->cfg.steps + 1)
        return bn_fail(BN_ERR_FORMAT, "checkpoint '%s': step %lld is outside this run", bn_ckpt_path(c), (long long)step);
    const void *p;
    size_t bytes;
    BN_TRY(bn_ckpt_get_any(c, "sim.W", &p, &bytes));
    if (bytes != dS * rs) return bn_fail(BN_ERR_FORMAT, "checkpoint '%s': W has the wrong size", bn_ckpt_path(c));
    BN_TRY(be->ops->upload(be, sim->dW, p, bytes));
    BN_TRY(bn_ckpt_get_any(c, "sim.gamma", &p, &bytes));
    if (bytes != S * rs) return bn_fail(BN_ERR_FORMAT, "checkpoint '%s': gamma has the wrong size", bn_ckpt_path(c));
    BN_TRY(be->ops->upload(be, sim->dgamma, p, bytes));
    BN_TRY(bn_ckpt_get(c, "sim.diverged", sim->diverged, S * sizeof(int64_t)));
    BN_TRY(be->ops->upload(be, sim->ddiv, sim->diverged, S * sizeof(int64_t)));
    free(sim->restored_rec);
    sim->restored_rec = malloc((size_t)F_COUNT * sr * sizeof(double) + 1);
    if (!sim->restored_rec) return bn_fail(BN_ERR_NOMEM, "cannot allocate the restored records");
    for (int f = 0; f < F_COUNT; f++)
        BN_TRY(bn_ckpt_get(c, "sim.records", sim->restored_rec + (size_t)f * sr, sr * sizeof(double)));
    BN_TRY(bn_ckpt_get(c, "sim.wall", &sim->wall_before, sizeof sim->wall_before));
    if (sim->sharp) BN_TRY(bn_sharp_log_ckpt_load(sim->sharp, c));
    BN_TRY(be->ops->synchronize(be));
    sim->start_step = step;
    return BN_OK;
}
