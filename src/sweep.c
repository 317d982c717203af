/* Sweeps (bnspike.h, bn_sweep_run): many trajectories with their own settings
 * and seed ids, run as batches in which different settings sit side by side as
 * the columns of one bn_sim.  Every step of every column goes through the
 * recorder (spike detector + optional adaptive rows); the three-variable map
 * runs from each column's recorded start afterwards.
 *
 * Starts: w0 = w0_scale·(w0_align·ê + w0_noise·ξ), ξ from the Philox stream of
 * the trajectory's seed id, built here exactly as the sim builds it (same
 * formula, same operation order) and handed over as an explicit start, so a
 * sweep trajectory equals `bnspike run --seed <id>` with the same settings;
 * the sim then projects it on the row space of Xc as usual.  The reference
 * direction is computed once and handed to every batch. */
#include "ckpt.h"
#include "recorder.h"
#include "rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bn_sweep {
    int64_t count, d, batch, batches;
    bn_recorder *rec;
    bn_events *theory;
    bn_theory_data td;
    int have_td;
    double kscale;
    bn_ref_info ref_info;
    double *w_ref, *w0, *w_final, *gamma_final, *alpha0, *beta0;
    int64_t *diverged;
    char backend_desc[256];
    bn_backend_kind backend;
    int threads;
    double wall;
    int64_t done;        /* trajectories finished (batches before the current one) */
};

typedef struct {
    bn_sweep *sw;
    const bn_sweep_spec *spec;
    const char *config;   /* checkpoint configuration text */
    uint64_t checksum;
    int64_t j0, batch_index, steps, total;
    int64_t cols;
    int alpha_f, beta_f;
    bn_sweep_progress_fn progress;
    void *user;
} run_ctx;

static int sweep_observer(void *user, int64_t step, const double *const *fields, int64_t S)
{
    run_ctx *c = user;
    if (step == 0)
        for (int64_t j = 0; j < S; j++) {
            c->sw->alpha0[c->j0 + j] = c->alpha_f >= 0 ? fields[c->alpha_f][j] : NAN;
            c->sw->beta0[c->j0 + j] = c->beta_f >= 0 ? fields[c->beta_f][j] : NAN;
        }
    return bn_recorder_observer(c->sw->rec, step, fields, S);
}

static int sweep_progress(void *user, int64_t step, int64_t steps)
{
    (void)steps;
    run_ctx *c = user;
    return c->progress ? c->progress(c->user, c->batch_index * c->steps + step, c->total, c->cols) : 0;
}

void bn_sweep_free(bn_sweep *sw)
{
    if (!sw) return;
    bn_recorder_free(sw->rec);
    bn_events_free(sw->theory);
    free(sw->w_ref);
    free(sw->w0);
    free(sw->w_final);
    free(sw->gamma_final);
    free(sw->alpha0);
    free(sw->beta0);
    free(sw->diverged);
    free(sw);
}

static double per(const double *a, double scalar, int64_t j) { return a ? a[j] : scalar; }

static int field_index(const char *name)
{
    for (int f = 0; f < bn_sim_n_fields(); f++)
        if (strcmp(bn_sim_field_name(f), name) == 0) return f;
    return -1;
}

/* Reference direction (as bn_setup_reference computes it), ê and κ's scale. */
static bn_status setup_reference(bn_sweep *sw, const bn_dataset *ds, const bn_run_config *base,
                                 double *ehat)
{
    int64_t d = sw->d;
    memset(&sw->ref_info, 0, sizeof sw->ref_info);
    if (base->skip_reference) {
        memset(ehat, 0, (size_t)d * sizeof(double));
    } else {
        if (base->w_ref) {
            memcpy(sw->w_ref, base->w_ref, (size_t)d * sizeof(double));
            sw->ref_info.kind = base->loss == BN_LOSS_LOGISTIC;
            sw->ref_info.residual = sw->ref_info.kkt_violation = NAN;
        } else {
            BN_TRY(bn_reference_direction(ds, base->loss, sw->w_ref, &sw->ref_info));
        }
        double s = 0;
        for (int64_t i = 0; i < d; i++) s += sw->w_ref[i] * sw->w_ref[i];
        double nrm = sqrt(s);
        if (!(nrm > 0) || !isfinite(nrm))
            return bn_fail(BN_ERR_DATA, "the reference direction is zero or not finite (norm %g)", nrm);
        for (int64_t i = 0; i < d; i++) ehat[i] = sw->w_ref[i] / nrm;
    }
    const double *w_ls = (!base->skip_reference && !base->w_ref) ? sw->w_ref : NULL;
    return bn_kappa_scale(ds, base->loss, w_ls, &sw->kscale);
}

static int64_t auto_batch(int64_t count, int64_t n, int64_t d)
{
    /* W, G (d each), U, Q (n each) and the per-step statistics of a column,
     * with the device/host budget of one batch at 1 GiB. */
    double per_col = 8.0 * (2.0 * (double)n + 2.0 * (double)d + 64.0);
    int64_t b = (int64_t)((double)(1 << 30) / per_col);
    if (b < 1) b = 1;
    return b < count ? b : count;
}

/* ------------------------------------------------------------ checkpoints */

static void sweep_config(const bn_sweep *sw, const bn_run_config *base, const bn_sweep_spec *spec,
                         const char *extra, bn_cfgtext *t)
{
    int64_t n = sw->count;
    bn_cfgtext_add(t, "kind=sweep");
    bn_cfgtext_add(t, "bnspike=%s", BN_VERSION);
    bn_cfgtext_add(t, "d=%lld", (long long)sw->d);
    bn_cfgtext_add(t, "loss=%s", bn_loss_name(base->loss));
    bn_cfgtext_add(t, "precision=%s", bn_precision_name(base->precision));
    bn_cfgtext_add(t, "backend=%s", bn_backend_name(base->backend));
    bn_cfgtext_add(t, "threads=%d", base->threads);
    bn_cfgtext_add(t, "steps=%lld", (long long)base->steps);
    bn_cfgtext_add(t, "seed=%llu", (unsigned long long)base->seed);
    bn_cfgtext_add(t, "trajectories=%lld", (long long)n);
    bn_cfgtext_add(t, "batch=%lld", (long long)sw->batch);
    bn_cfgtext_add(t, "eta_w=%.17g", base->eta_w);
    bn_cfgtext_add(t, "eta_gamma=%.17g", base->eta_gamma);
    bn_cfgtext_add(t, "gamma0=%.17g", base->gamma0);
    bn_cfgtext_add(t, "w0_scale=%.17g", base->w0_scale);
    bn_cfgtext_array(t, "eta_w_per", spec->eta_w, (size_t)n, sizeof(double));
    bn_cfgtext_array(t, "eta_gamma_per", spec->eta_gamma, (size_t)n, sizeof(double));
    bn_cfgtext_array(t, "gamma0_per", spec->gamma0, (size_t)n, sizeof(double));
    bn_cfgtext_array(t, "w0_scale_per", spec->w0_scale, (size_t)n, sizeof(double));
    bn_cfgtext_array(t, "seed_id", spec->seed_id, (size_t)n, sizeof(uint64_t));
    bn_cfgtext_add(t, "w0_align=%.17g", base->w0_align);
    bn_cfgtext_add(t, "w0_noise=%.17g", base->w0_noise);
    bn_cfgtext_add(t, "project_w0=%d", base->project_w0);
    bn_cfgtext_add(t, "skip_reference=%d", base->skip_reference);
    bn_cfgtext_array(t, "w_ref", sw->w_ref, (size_t)sw->d, sizeof(double));
    bn_cfgtext_add(t, "theory=%d", sw->theory != NULL);
    bn_cfgtext_sharpness(t, base);
    bn_recorder_ckpt_config(sw->rec, t);
    bn_cfgtext_lines(t, extra);
}

/* The per-trajectory arrays of the sweep (count each; w0, w_final count×d). */
static bn_status sweep_arrays_io(bn_sweep *sw, bn_ckpt *c, int load)
{
    size_t n = (size_t)sw->count, nd = n * (size_t)sw->d;
    struct { const char *tag; void *p; size_t bytes; } a[] = {
        {"sweep.w0", sw->w0, nd * sizeof(double)},
        {"sweep.w_final", sw->w_final, nd * sizeof(double)},
        {"sweep.gamma_final", sw->gamma_final, n * sizeof(double)},
        {"sweep.alpha0", sw->alpha0, n * sizeof(double)},
        {"sweep.beta0", sw->beta0, n * sizeof(double)},
        {"sweep.diverged", sw->diverged, n * sizeof(int64_t)},
        {"sweep.backend", sw->backend_desc, sizeof sw->backend_desc},
    };
    for (size_t k = 0; k < sizeof a / sizeof a[0]; k++)
        BN_TRY(load ? bn_ckpt_get(c, a[k].tag, a[k].p, a[k].bytes) : bn_ckpt_put(c, a[k].tag, a[k].p, a[k].bytes));
    int64_t small[3] = {sw->backend, sw->threads, sw->done};
    double wall = sw->wall;
    if (!load) {
        BN_TRY(bn_ckpt_put(c, "sweep.misc", small, sizeof small));
        return bn_ckpt_put(c, "sweep.wall", &wall, sizeof wall);
    }
    BN_TRY(bn_ckpt_get(c, "sweep.misc", small, sizeof small));
    BN_TRY(bn_ckpt_get(c, "sweep.wall", &sw->wall, sizeof sw->wall));
    sw->backend = (bn_backend_kind)small[0];
    sw->threads = (int)small[1];
    sw->done = small[2];
    return BN_OK;
}

/* Sweep state, then (mid-batch) the running sim's. */
static bn_status sweep_ckpt_write(run_ctx *ctx, int64_t next_batch, bn_sim *sim)
{
    bn_sweep *sw = ctx->sw;
    bn_ckpt *c = NULL;
    bn_status st = bn_ckpt_create(ctx->config, ctx->checksum, &c);
    if (!st) st = bn_ckpt_put_i64(c, "sweep.next_batch", next_batch);
    if (!st) st = sweep_arrays_io(sw, c, 0);
    if (!st) st = bn_recorder_ckpt_save(sw->rec, c);
    if (!st && sw->theory) st = bn_events_ckpt_save(sw->theory, c);
    if (!st && sim) st = bn_sim_ckpt_save(sim, c);
    if (!st) st = bn_ckpt_write(c, ctx->spec->checkpoint->path);
    bn_ckpt_free(c);
    if (!st) ctx->spec->checkpoint->written++;
    return st;
}

static bn_status sweep_ckpt_hook(void *user, bn_sim *sim, int64_t step, int stopping)
{
    (void)step;
    (void)stopping;
    run_ctx *ctx = user;
    return sweep_ckpt_write(ctx, ctx->batch_index, sim);
}

static bn_status sweep_ckpt_load(bn_sweep *sw, bn_ckpt *c, int64_t *next_batch)
{
    BN_TRY(bn_ckpt_get_i64(c, "sweep.next_batch", next_batch));
    if (*next_batch < 0 || *next_batch >= sw->batches)
        return bn_fail(BN_ERR_FORMAT, "checkpoint '%s': batch %lld is outside this sweep", bn_ckpt_path(c),
                       (long long)*next_batch);
    BN_TRY(sweep_arrays_io(sw, c, 1));
    BN_TRY(bn_recorder_ckpt_load(sw->rec, c));
    if (sw->theory) BN_TRY(bn_events_ckpt_load(sw->theory, c));
    return BN_OK;
}

bn_status bn_sweep_run(const bn_dataset *ds, const bn_run_config *base, const bn_sweep_spec *spec,
                       bn_sweep_progress_fn progress, void *user, bn_sweep **out)
{
    *out = NULL;
    bn_clear_error();
    if (spec->count < 1) return bn_fail(BN_ERR_ARG, "a sweep needs at least one trajectory");
    if (base->w0) return bn_fail(BN_ERR_ARG, "a sweep builds its starts itself: base->w0 must be NULL");
    if (base->steps < 1) return bn_fail(BN_ERR_ARG, "steps must be > 0 (got %lld)", (long long)base->steps);
    if (spec->batch < 0) return bn_fail(BN_ERR_ARG, "batch must be >= 0 (got %lld)", (long long)spec->batch);
    BN_TRY(bn_event_params_check(&spec->rec.events));
    if (base->loss == BN_LOSS_LOGISTIC) BN_TRY(bn_dataset_check_labels(ds));

    int64_t count = spec->count, d = bn_dataset_d(ds), T = base->steps;
    bn_sweep *sw = calloc(1, sizeof *sw);
    if (!sw) return bn_fail(BN_ERR_NOMEM, "cannot allocate the sweep");
    sw->count = count;
    sw->d = d;
    sw->kscale = NAN;
    size_t cd = (size_t)count * (size_t)d;
    sw->w_ref = calloc((size_t)d, sizeof(double));
    sw->w0 = malloc(cd * sizeof(double) + 1);
    sw->w_final = malloc(cd * sizeof(double) + 1);
    sw->gamma_final = malloc((size_t)count * sizeof(double));
    sw->alpha0 = malloc((size_t)count * sizeof(double));
    sw->beta0 = malloc((size_t)count * sizeof(double));
    sw->diverged = malloc((size_t)count * sizeof(int64_t));
    double *ehat = calloc((size_t)d, sizeof(double));
    double *xi = malloc((size_t)d * sizeof(double));
    bn_status st = BN_OK;
    if (!sw->w_ref || !sw->w0 || !sw->w_final || !sw->gamma_final || !sw->alpha0 || !sw->beta0 ||
        !sw->diverged || !ehat || !xi)
        st = bn_fail(BN_ERR_NOMEM, "cannot allocate a sweep of %lld trajectories (d = %lld)",
                     (long long)count, (long long)d);
    if (!st) st = setup_reference(sw, ds, base, ehat);
    if (!st) {
        for (int64_t j = 0; j < count; j++) {
            double *w = sw->w0 + (size_t)j * (size_t)d;
            double scale = per(spec->w0_scale, base->w0_scale, j);
            uint64_t id = spec->seed_id ? spec->seed_id[j] : base->seed + (uint64_t)j;
            bn_rng_normal(id, BN_STREAM_W0, 0, d, xi);
            for (int64_t i = 0; i < d; i++) w[i] = scale * (base->w0_align * ehat[i] + base->w0_noise * xi[i]);
            if (!isfinite(scale) || scale <= 0)
                st = bn_fail(BN_ERR_ARG, "w0_scale must be a finite number > 0 (got %g)", scale);
        }
    }
    free(ehat);
    free(xi);
    if (!st && spec->theory && base->loss == BN_LOSS_SQUARE && !base->skip_reference) {
        st = bn_theory_data_compute_b(ds, sw->kscale, &sw->td);
        if (!st) {
            sw->have_td = 1;
            st = bn_events_create(count, &spec->rec.events, BN_FP64, sw->td.B, &sw->theory);
        }
    }
    bn_recorder_config rc = spec->rec;
    if (!rc.threads) rc.threads = base->threads;
    if (!st) st = bn_recorder_create_raw(count, T, base->precision, sw->kscale, &rc, &sw->rec);
    if (st) {
        bn_sweep_free(sw);
        return st;
    }

    sw->batch = spec->batch ? (spec->batch < count ? spec->batch : count) : auto_batch(count, bn_dataset_n(ds), d);
    sw->batches = (count + sw->batch - 1) / sw->batch;
    run_ctx ctx = {.sw = sw, .spec = spec, .steps = T, .total = sw->batches * T, .progress = progress,
                   .user = user, .alpha_f = field_index("alpha_sigma"), .beta_f = field_index("beta_sigma"),
                   .checksum = bn_dataset_checksum(ds)};
    bn_checkpoint_config *ck = spec->checkpoint;
    if (ck && !ck->path && !ck->resume) ck = NULL;
    bn_cfgtext cfgtext = {0};
    bn_ckpt *resume = NULL; /* open until the interrupted batch's sim has loaded its part */
    int64_t b_first = 0;
    if (ck) {
        ck->resumed_step = ck->written = 0;
        sweep_config(sw, base, spec, ck->extra, &cfgtext);
        ctx.config = cfgtext.s;
        if (cfgtext.failed) st = bn_fail(BN_ERR_NOMEM, "cannot describe the sweep for its checkpoint");
        if (!st && ck->resume) {
            st = bn_ckpt_open(ck->resume, cfgtext.s, ctx.checksum, &resume);
            if (!st) st = sweep_ckpt_load(sw, resume, &b_first);
            if (!st && !bn_ckpt_next_is(resume, "sim.step")) {
                bn_ckpt_free(resume);
                resume = NULL;
            }
            ck->resumed_step = b_first * T;
        }
    }
    for (int64_t b = b_first; b < sw->batches && !st; b++) {
        int64_t j0 = b * sw->batch, S = count - j0 < sw->batch ? count - j0 : sw->batch;
        bn_run_config cfg = *base;
        cfg.seeds = S;
        cfg.seed = base->seed + (uint64_t)j0; /* only seeds sharpness start vectors */
        cfg.eta_w_per = spec->eta_w ? spec->eta_w + j0 : NULL;
        cfg.eta_gamma_per = spec->eta_gamma ? spec->eta_gamma + j0 : NULL;
        cfg.gamma0_per = spec->gamma0 ? spec->gamma0 + j0 : NULL;
        cfg.w0_scale_per = NULL;
        cfg.w0 = sw->w0 + (size_t)j0 * (size_t)d;
        cfg.w0_rows = S;
        if (!base->skip_reference) cfg.w_ref = sw->w_ref;
        cfg.every = T; /* the recorder keeps the records; the sim only steps 0 and T */
        bn_sim *sim = NULL;
        st = bn_sim_create(ds, &cfg, &sim);
        if (st) break;
        if (sw->backend_desc[0] && (bn_sim_backend(sim) != sw->backend || bn_sim_threads(sim) != sw->threads))
            st = bn_fail(BN_ERR_ARG, "the checkpoint's batches ran on %s with %d threads, this sweep runs on %s "
                                     "with %d: the results would not be bitwise those of one sweep",
                         bn_backend_name(sw->backend), sw->threads, bn_backend_name(bn_sim_backend(sim)),
                         bn_sim_threads(sim));
        if (resume && !st) {
            st = bn_sim_ckpt_load(sim, resume);
            if (!st) ck->resumed_step = b * T + bn_sim_next_step(sim);
            bn_ckpt_free(resume);
            resume = NULL;
        }
        ctx.j0 = j0;
        ctx.batch_index = b;
        ctx.cols = S;
        bn_recorder_set_offset(sw->rec, j0);
        if (ck && ck->path) bn_sim_set_ckpt_hook(sim, ck->every, sweep_ckpt_hook, &ctx);
        if (!st) st = bn_sim_run_observed(sim, sweep_progress, &ctx, sweep_observer, &ctx);
        int stopped = st == BN_ERR_INTERRUPTED;
        if (!st || stopped) {
            bn_status bs = bn_recorder_batch_done(sw->rec, sim, j0);
            if (bs) st = bs;
        }
        if (!st || stopped) {
            /* The start as used (projected), the final state (or where it stopped). */
            memcpy(sw->w0 + (size_t)j0 * (size_t)d, bn_sim_w0(sim), (size_t)S * (size_t)d * sizeof(double));
            memcpy(sw->w_final + (size_t)j0 * (size_t)d, bn_sim_w_final(sim), (size_t)S * (size_t)d * sizeof(double));
            memcpy(sw->gamma_final + j0, bn_sim_gamma_final(sim), (size_t)S * sizeof(double));
            memcpy(sw->diverged + j0, bn_sim_diverged_step(sim), (size_t)S * sizeof(int64_t));
            if (!sw->backend_desc[0]) {
                snprintf(sw->backend_desc, sizeof sw->backend_desc, "%s", bn_sim_backend_desc(sim));
                sw->backend = bn_sim_backend(sim);
                sw->threads = bn_sim_threads(sim);
            }
            sw->wall += bn_sim_wall_seconds(sim);
        }
        bn_sim_free(sim);
        if (stopped) break;
        if (!st && sw->theory) {
            int failed = 0;
#pragma omp parallel for schedule(dynamic, 16) reduction(| : failed)
            for (int64_t j = j0; j < j0 + S; j++)
                failed |= bn_theory_run(&sw->td, per(spec->eta_w, base->eta_w, j),
                                        per(spec->eta_gamma, base->eta_gamma, j), sw->alpha0[j],
                                        sw->beta0[j], per(spec->gamma0, base->gamma0, j), T, sw->theory,
                                        j, NULL) != BN_OK;
            if (failed) st = bn_fail(BN_ERR_NOMEM, "the theory overlay ran out of memory");
        }
        if (!st) sw->done = j0 + S;
        /* A finished batch is never recomputed: checkpoint it (not after the last). */
        if (!st && ck && ck->path && b + 1 < sw->batches) st = sweep_ckpt_write(&ctx, b + 1, NULL);
    }
    bn_ckpt_free(resume);
    bn_cfgtext_free(&cfgtext);
    int interrupted = st == BN_ERR_INTERRUPTED;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", bn_last_error());
    if (!st || interrupted) {
        bn_status fs = bn_recorder_finish(sw->rec);
        if (fs) st = fs, interrupted = 0;
    }
    if ((!st || interrupted) && sw->theory) bn_events_finish(sw->theory);
    if (st && !interrupted) {
        bn_sweep_free(sw);
        return st;
    }
    *out = sw;
    if (interrupted) return bn_fail(BN_ERR_INTERRUPTED, "%s", msg);
    *out = sw;
    return BN_OK;
}

const bn_events *bn_sweep_events(const bn_sweep *sw) { return bn_recorder_events(sw->rec); }
const bn_recorder *bn_sweep_recorder(const bn_sweep *sw) { return sw->rec; }
const bn_events *bn_sweep_theory(const bn_sweep *sw) { return sw->theory; }
const bn_theory_data *bn_sweep_theory_data(const bn_sweep *sw) { return sw->have_td ? &sw->td : NULL; }
double bn_sweep_kappa_scale(const bn_sweep *sw) { return sw->kscale; }
const bn_ref_info *bn_sweep_ref_info(const bn_sweep *sw) { return &sw->ref_info; }
const double *bn_sweep_w_ref(const bn_sweep *sw) { return sw->w_ref; }
const double *bn_sweep_w0(const bn_sweep *sw) { return sw->w0; }
const double *bn_sweep_w_final(const bn_sweep *sw) { return sw->w_final; }
const double *bn_sweep_gamma_final(const bn_sweep *sw) { return sw->gamma_final; }
const int64_t *bn_sweep_diverged_step(const bn_sweep *sw) { return sw->diverged; }
const double *bn_sweep_alpha0_sigma(const bn_sweep *sw) { return sw->alpha0; }
const double *bn_sweep_beta0_sigma(const bn_sweep *sw) { return sw->beta0; }
int64_t bn_sweep_batches(const bn_sweep *sw) { return sw->batches; }
int64_t bn_sweep_trajectories_done(const bn_sweep *sw) { return sw->done; }
int64_t bn_sweep_batch_size(const bn_sweep *sw) { return sw->batch; }
const char *bn_sweep_backend_desc(const bn_sweep *sw) { return sw->backend_desc; }
bn_backend_kind bn_sweep_backend(const bn_sweep *sw) { return sw->backend; }
int bn_sweep_threads(const bn_sweep *sw) { return sw->threads; }
double bn_sweep_wall_seconds(const bn_sweep *sw) { return sw->wall; }
bn_status bn_sweep_field(const bn_sweep *sw, const char *name, const double **data, int64_t *rows,
                         int64_t *cols)
{
    return bn_recorder_field(sw->rec, name, data, rows, cols);
}
const int64_t *bn_sweep_record_counts(const bn_sweep *sw) { return bn_recorder_counts(sw->rec); }
int bn_sweep_n_fields(const bn_sweep *sw)
{
    (void)sw;
    return bn_sim_n_fields();
}
const char *bn_sweep_field_name(const bn_sweep *sw, int i)
{
    (void)sw;
    return bn_sim_field_name(i);
}
