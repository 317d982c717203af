/* Adaptive recording (bnspike.h, bn_recorder): the regular schedule 0, K, 2K,
 * ..., T plus every step inside a window around each spike, decided on the fly
 * by the streaming detector, which sees every step through the sim's observer.
 *
 * The onset of a spike is only known once its rising edge has risen by
 * min_rise, possibly many steps later.  So each trajectory keeps
 *   - a ring of its last window_pre + 1 steps, and
 *   - while a rising edge is open but not yet a spike, a pending list of its
 *     steps from window_pre steps before the onset on;
 * a confirmed spike moves the pending steps to the record and switches the
 * trajectory to full resolution until window_post steps after the spike's end;
 * an edge that ends below min_rise (rounding jitter) drops its pending steps.
 * Rows can thus arrive out of order (a pending step older than a regular one
 * already kept); finish sorts each trajectory's rows by step and removes
 * duplicates. */
#include "recorder.h"
#include "ckpt.h"
#include "resources.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest pending list (steps of one unconfirmed edge) kept per trajectory; an
 * edge that takes longer to confirm keeps only its last steps at full
 * resolution (the regular schedule still covers the rest). */
#define PENDING_MAX ((int64_t)1 << 16)
#define BN_RECORDER_MAX_FIELDS 64

typedef struct {
    double *v;    /* rows of nf doubles */
    int64_t n, cap;
} rowvec;

typedef struct {
    rowvec kept, pending;
    double *ring;  /* (pre+1) rows */
    int64_t ring_n, ring_head;
    int full;      /* inside a confirmed spike's window */
    int64_t post_left;
} traj_rec;

#define MAX_SHARP 8

struct bn_recorder {
    int64_t S, T, K, offset;
    /* adaptive sharpness (from the sims' sharpness arrays, after each run) */
    int nsh;                      /* 2-D float64 sharpness arrays kept        */
    char sh_names[MAX_SHARP][48];
    rowvec *sh_rows;              /* per trajectory: rows of step + nsh values */
    double **sh_out;              /* sharpness_step, then each name: S×Rsmax  */
    int64_t *sh_counts, Rsmax;
    int keep, nf, step_field;
    int64_t pre, post;
    bn_events *ev;
    bn_event_fields fidx;
    traj_rec *tr;
    int threads; /* OpenMP threads for the per-step pass (0: all)  */
    int finished, failed;
    double kscale;
    double **out;
    int64_t *counts, Rmax;
};

static int rv_push(rowvec *r, const double *row, int nf)
{
    if (r->n == r->cap) {
        int64_t cap = r->cap ? 2 * r->cap : 16;
        double *p = realloc(r->v, (size_t)cap * (size_t)nf * sizeof(double));
        if (!p) return -1;
        r->v = p;
        r->cap = cap;
    }
    memcpy(r->v + (size_t)r->n * (size_t)nf, row, (size_t)nf * sizeof(double));
    r->n++;
    return 0;
}

bn_status bn_recorder_create_raw(int64_t S, int64_t T, bn_precision precision, double kappa_scale,
                                 const bn_recorder_config *rc, bn_recorder **out)
{
    *out = NULL;
    if (rc->every < 1) return bn_fail(BN_ERR_ARG, "every must be >= 1 (got %lld)", (long long)rc->every);
    if (T < 1) return bn_fail(BN_ERR_ARG, "steps must be >= 1 (got %lld)", (long long)T);
    if (rc->keep) {
        /* Rows on the regular schedule, twice (rows, then the arrays), and the history. */
        double nf = (double)bn_sim_n_fields();
        double bytes = 8.0 * nf * (double)S * (2.0 * (double)(T / rc->every + 2) + (double)(rc->events.window_pre + 1));
        char what[160];
        snprintf(what, sizeof what, "recording %lld trajectories × %lld steps every %lld", (long long)S,
                 (long long)T, (long long)rc->every);
        BN_TRY(bn_check_host_memory(bytes, what));
    }
    bn_recorder *r = calloc(1, sizeof *r);
    if (!r) return bn_fail(BN_ERR_NOMEM, "cannot allocate the recorder");
    r->S = S;
    r->T = T;
    r->K = rc->every;
    r->keep = rc->keep;
    r->nf = bn_sim_n_fields();
    if (r->nf > BN_RECORDER_MAX_FIELDS) {
        free(r);
        return bn_fail(BN_ERR_ARG, "the sim has %d record fields; the recorder handles %d", bn_sim_n_fields(),
                       BN_RECORDER_MAX_FIELDS);
    }
    r->threads = rc->threads;
    r->pre = rc->events.window_pre;
    r->post = rc->events.window_post;
    r->kscale = kappa_scale;
    r->step_field = -1;
    for (int f = 0; f < r->nf; f++)
        if (strcmp(bn_sim_field_name(f), "step") == 0) r->step_field = f;
    bn_event_fields_lookup(&r->fidx, rc->events.use_rho_sigma);
    bn_status st = bn_events_create(S, &rc->events, precision, kappa_scale, &r->ev);
    if (!st && r->keep) {
        r->tr = calloc((size_t)S, sizeof *r->tr);
        if (!r->tr) st = bn_fail(BN_ERR_NOMEM, "cannot allocate the recorder");
        for (int64_t j = 0; !st && j < S; j++) {
            r->tr[j].ring = malloc((size_t)(r->pre + 1) * (size_t)r->nf * sizeof(double));
            if (!r->tr[j].ring)
                st = bn_fail(BN_ERR_NOMEM, "cannot allocate the recorder's history (%lld trajectories × %lld steps)",
                             (long long)S, (long long)(r->pre + 1));
        }
    }
    if (st) {
        bn_recorder_free(r);
        return st;
    }
    *out = r;
    return BN_OK;
}

bn_status bn_recorder_create(const bn_dataset *ds, const bn_run_config *cfg, const bn_sim *sim,
                             const bn_recorder_config *rc, double kappa_scale, bn_recorder **out)
{
    *out = NULL;
    if (isnan(kappa_scale) && cfg->loss == BN_LOSS_SQUARE) {
        /* The sim's reference is the least-squares solution unless one was given. */
        const double *w_ls = (sim && !cfg->w_ref && !cfg->skip_reference) ? bn_sim_w_ref(sim) : NULL;
        BN_TRY(bn_kappa_scale(ds, cfg->loss, w_ls, &kappa_scale));
    }
    bn_recorder_config c = *rc;
    if (!c.threads) c.threads = cfg->threads;
    return bn_recorder_create_raw(cfg->seeds, cfg->steps, cfg->precision, kappa_scale, &c, out);
}

void bn_recorder_set_offset(bn_recorder *rec, int64_t offset) { rec->offset = offset; }
bn_events *bn_recorder_events_mut(bn_recorder *rec) { return rec->ev; }
const bn_events *bn_recorder_events(const bn_recorder *rec) { return rec->ev; }

void bn_recorder_free(bn_recorder *rec)
{
    if (!rec) return;
    bn_events_free(rec->ev);
    if (rec->tr)
        for (int64_t j = 0; j < rec->S; j++) {
            free(rec->tr[j].kept.v);
            free(rec->tr[j].pending.v);
            free(rec->tr[j].ring);
        }
    free(rec->tr);
    if (rec->out)
        for (int f = 0; f < rec->nf; f++) free(rec->out[f]);
    free(rec->out);
    free(rec->counts);
    if (rec->sh_rows)
        for (int64_t j = 0; j < rec->S; j++) free(rec->sh_rows[j].v);
    free(rec->sh_rows);
    if (rec->sh_out)
        for (int f = 0; f <= rec->nsh; f++) free(rec->sh_out[f]);
    free(rec->sh_out);
    free(rec->sh_counts);
    free(rec);
}

/* The ring's rows with step >= from, oldest first, appended to dst. */
static int ring_to(const bn_recorder *r, const traj_rec *t, double from, rowvec *dst)
{
    int64_t cap = r->pre + 1;
    for (int64_t i = 0; i < t->ring_n; i++) {
        int64_t slot = (t->ring_head - t->ring_n + i + cap) % cap;
        const double *row = t->ring + (size_t)slot * (size_t)r->nf;
        if (r->step_field >= 0 && row[r->step_field] < from) continue;
        if (rv_push(dst, row, r->nf)) return -1;
    }
    return 0;
}

static void ring_push(const bn_recorder *r, traj_rec *t, const double *row)
{
    int64_t cap = r->pre + 1;
    memcpy(t->ring + (size_t)t->ring_head * (size_t)r->nf, row, (size_t)r->nf * sizeof(double));
    t->ring_head = (t->ring_head + 1) % cap;
    if (t->ring_n < cap) t->ring_n++;
}

/* One step of trajectory j (column c of this call): 0, or -status of the
 * detector, or ERR_GROW when a row list could not grow.  Touches only
 * trajectory j's state, so columns run in parallel. */
#define ERR_GROW (-1000)
static int record_step(bn_recorder *r, int64_t j, int64_t step, const double *const *fields, int64_t c,
                       double *row)
{
    bn_event_input in;
    bn_event_input_from_fields(&r->fidx, fields, c, &in);
    int64_t onset = -1;
    int flags = bn_events_feed_flags(r->ev, j, step, &in, &onset);
    if (flags < 0) return flags;
    if (!r->keep) return 0;
    traj_rec *t = &r->tr[j];
    int nf = r->nf;
    for (int f = 0; f < nf; f++) row[f] = fields[f][c];
    if (flags & BN_EVF_CAND_START) {
        t->pending.n = 0;
        if (ring_to(r, t, (double)(onset - r->pre), &t->pending)) return ERR_GROW;
    }
    if (flags & BN_EVF_CAND_DROP) t->pending.n = 0;
    if (flags & BN_EVF_CLOSED) {
        t->full = 0;
        t->post_left = r->post + 1; /* this step (the end) and window_post more */
    }
    if (flags & BN_EVF_CONFIRMED) {
        for (int64_t i = 0; i < t->pending.n; i++)
            if (rv_push(&t->kept, t->pending.v + (size_t)i * (size_t)nf, nf)) return ERR_GROW;
        t->pending.n = 0;
        t->full = 1;
    }
    if (flags & BN_EVF_DIVERGED)
        if (ring_to(r, t, (double)(step - r->pre), &t->kept)) return ERR_GROW;
    int regular = step % r->K == 0 || step == r->T;
    if (regular || t->full || t->post_left > 0 || (flags & BN_EVF_DIVERGED))
        if (rv_push(&t->kept, row, nf)) return ERR_GROW;
    if (!t->full && t->post_left > 0) t->post_left--;
    if (!t->full && bn_events_edge_open(r->ev, j)) {
        if (t->pending.n >= PENDING_MAX) {
            /* Keep the newer half. */
            int64_t half = t->pending.n / 2;
            memmove(t->pending.v, t->pending.v + (size_t)half * (size_t)nf,
                    (size_t)(t->pending.n - half) * (size_t)nf * sizeof(double));
            t->pending.n -= half;
        }
        if (rv_push(&t->pending, row, nf)) return ERR_GROW;
    }
    ring_push(r, t, row);
    return 0;
}

int bn_recorder_observer(void *user, int64_t step, const double *const *fields, int64_t S)
{
    bn_recorder *r = user;
    if (r->offset + S > r->S) {
        bn_fail(BN_ERR_ARG, "the recorder holds %lld trajectories; columns %lld..%lld do not fit",
                (long long)r->S, (long long)r->offset, (long long)(r->offset + S - 1));
        r->failed = 1;
        return 1;
    }
    /* The columns are independent: spread them over the cores (on a GPU run
     * this per-step pass is the host's share of the work). */
    int fail = 0;
    int nt = r->threads > 0 ? r->threads : omp_get_max_threads();
    BN_PAR_FOR(S >= 512, num_threads(nt) schedule(static) reduction(min : fail), c, S, {
        double row[BN_RECORDER_MAX_FIELDS];
        int rc = record_step(r, r->offset + c, step, fields, c, row);
        if (rc < fail) fail = rc;
    });
    if (fail) {
        if (fail == ERR_GROW) bn_fail(BN_ERR_NOMEM, "cannot grow the recorded rows at step %lld", (long long)step);
        else bn_fail((bn_status)(-fail), "the spike detector failed at step %lld (%s)", (long long)step,
                     bn_status_name((bn_status)(-fail)));
        r->failed = 1;
        return 1;
    }
    return 0;
}

/* Whether step s of trajectory j lies in one of its spike windows or the
 * window before its divergence. */
static int in_window(const bn_recorder *r, int64_t j, int64_t s)
{
    const bn_events *ev = r->ev;
    for (int64_t k = 0; k < bn_events_count(ev, j); k++) {
        const bn_spike_event *e = bn_events_get(ev, j, k);
        int64_t hi = e->end_step >= 0 ? e->end_step + r->post : r->T;
        if (s >= e->onset_step - r->pre && s <= hi) return 1;
    }
    const bn_traj_summary *sum = bn_events_summary(ev, j);
    return sum->diverged && s >= sum->diverged_step - r->pre && s <= sum->diverged_step;
}

bn_status bn_recorder_batch_done(bn_recorder *r, const bn_sim *sim, int64_t offset)
{
    int64_t S = bn_sim_seeds(sim);
    bn_events_finish_range(r->ev, offset, S);
    BN_TRY(bn_events_attach_sharpness(r->ev, sim, offset));
    if (!r->keep || bn_sim_n_sharpness_arrays(sim) == 0) return BN_OK;
    bn_sim_array st, arr[MAX_SHARP];
    if (bn_sim_sharpness_find(sim, "sharpness_step", &st) != BN_OK || !st.i64) return BN_OK;
    int64_t Rs = st.shape[0];
    if (!r->sh_rows) {
        r->sh_rows = calloc((size_t)r->S, sizeof *r->sh_rows);
        if (!r->sh_rows) return bn_fail(BN_ERR_NOMEM, "cannot allocate the sharpness records");
        for (int i = 0; i < bn_sim_n_sharpness_arrays(sim) && r->nsh < MAX_SHARP; i++) {
            bn_sim_array a;
            if (bn_sim_sharpness_array(sim, i, &a) == BN_OK && a.ndim == 2 && a.f64 && a.shape[1] == Rs)
                snprintf(r->sh_names[r->nsh++], sizeof r->sh_names[0], "%s", a.name);
        }
    }
    for (int q = 0; q < r->nsh; q++)
        if (bn_sim_sharpness_find(sim, r->sh_names[q], &arr[q]) != BN_OK || !arr[q].f64 || arr[q].shape[1] != Rs)
            return bn_fail(BN_ERR_ARG, "sharpness array %s differs between batches", r->sh_names[q]);
    double row[MAX_SHARP + 1];
    for (int64_t j = 0; j < S; j++) {
        int64_t g = offset + j;
        for (int64_t k = 0; k < Rs; k++) {
            int64_t step = st.i64[k];
            if (!(step % r->K == 0 || step == r->T || in_window(r, g, step))) continue;
            row[0] = (double)step;
            for (int q = 0; q < r->nsh; q++) row[1 + q] = arr[q].f64[j * Rs + k];
            if (rv_push(&r->sh_rows[g], row, r->nsh + 1))
                return bn_fail(BN_ERR_NOMEM, "cannot grow the sharpness records of trajectory %lld", (long long)g);
        }
    }
    return BN_OK;
}

static bn_status finish_sharpness(bn_recorder *r)
{
    if (!r->sh_rows) return BN_OK;
    int w = r->nsh + 1;
    r->sh_counts = calloc((size_t)r->S, sizeof(int64_t));
    r->sh_out = calloc((size_t)w, sizeof(double *));
    if (!r->sh_counts || !r->sh_out) return bn_fail(BN_ERR_NOMEM, "cannot allocate the sharpness arrays");
    r->Rsmax = 0;
    for (int64_t j = 0; j < r->S; j++) {
        r->sh_counts[j] = r->sh_rows[j].n;
        if (r->sh_rows[j].n > r->Rsmax) r->Rsmax = r->sh_rows[j].n;
    }
    size_t total = (size_t)r->S * (size_t)(r->Rsmax ? r->Rsmax : 1);
    for (int f = 0; f < w; f++) {
        r->sh_out[f] = malloc(total * sizeof(double));
        if (!r->sh_out[f]) return bn_fail(BN_ERR_NOMEM, "cannot allocate the sharpness arrays");
        for (size_t i = 0; i < total; i++) r->sh_out[f][i] = NAN;
    }
    for (int64_t j = 0; j < r->S; j++)
        for (int64_t i = 0; i < r->sh_rows[j].n; i++)
            for (int f = 0; f < w; f++)
                r->sh_out[f][(size_t)j * (size_t)r->Rsmax + (size_t)i] = r->sh_rows[j].v[(size_t)i * (size_t)w + (size_t)f];
    return BN_OK;
}

static int cmp_rows(const void *a, const void *b, void *ctx)
{
    int sf = *(const int *)ctx;
    double x = ((const double *)a)[sf], y = ((const double *)b)[sf];
    return (x > y) - (x < y);
}

bn_status bn_recorder_finish(bn_recorder *r)
{
    if (r->finished) return BN_OK;
    r->finished = 1;
    bn_events_finish(r->ev);
    if (!r->keep) return BN_OK;
    BN_TRY(finish_sharpness(r));
    int nf = r->nf;
    r->counts = calloc((size_t)r->S, sizeof(int64_t));
    r->out = calloc((size_t)nf, sizeof(double *));
    if (!r->counts || !r->out) return bn_fail(BN_ERR_NOMEM, "cannot allocate the recorded arrays");
    r->Rmax = 0;
    for (int64_t j = 0; j < r->S; j++) {
        rowvec *k = &r->tr[j].kept;
        if (r->step_field >= 0 && k->n > 1) {
            /* Mostly sorted already; qsort is fine at these sizes.  Stable
             * order does not matter: rows with equal steps are identical. */
            qsort_r(k->v, (size_t)k->n, (size_t)nf * sizeof(double), cmp_rows, &r->step_field);
            int64_t w = 1;
            for (int64_t i = 1; i < k->n; i++) {
                const double *prev = k->v + (size_t)(w - 1) * (size_t)nf, *cur = k->v + (size_t)i * (size_t)nf;
                if (cur[r->step_field] == prev[r->step_field]) continue;
                if (w != i) memmove(k->v + (size_t)w * (size_t)nf, cur, (size_t)nf * sizeof(double));
                w++;
            }
            k->n = w;
        }
        r->counts[j] = k->n;
        if (k->n > r->Rmax) r->Rmax = k->n;
    }
    size_t total = (size_t)r->S * (size_t)(r->Rmax ? r->Rmax : 1);
    for (int f = 0; f < nf; f++) {
        r->out[f] = malloc(total * sizeof(double));
        if (!r->out[f]) return bn_fail(BN_ERR_NOMEM, "cannot allocate the recorded arrays (%zu values)", total);
        for (size_t i = 0; i < total; i++) r->out[f][i] = NAN;
    }
    for (int64_t j = 0; j < r->S; j++) {
        rowvec *k = &r->tr[j].kept;
        for (int64_t i = 0; i < k->n; i++)
            for (int f = 0; f < nf; f++)
                r->out[f][(size_t)j * (size_t)r->Rmax + (size_t)i] = k->v[(size_t)i * (size_t)nf + (size_t)f];
        free(k->v);
        k->v = NULL;
        k->n = k->cap = 0;
        free(r->tr[j].pending.v);
        r->tr[j].pending.v = NULL;
        r->tr[j].pending.n = r->tr[j].pending.cap = 0;
    }
    return BN_OK;
}

bn_status bn_recorder_run(bn_recorder *rec, bn_sim *sim, bn_progress_fn progress, void *user)
{
    if (bn_sim_seeds(sim) != rec->S)
        return bn_fail(BN_ERR_ARG, "the recorder was made for %lld trajectories, the sim has %lld",
                       (long long)rec->S, (long long)bn_sim_seeds(sim));
    bn_recorder_set_offset(rec, 0);
    bn_status st = bn_sim_run_observed(sim, progress, user, bn_recorder_observer, rec);
    if (!st) st = bn_recorder_batch_done(rec, sim, 0);
    if (st) return st;
    return bn_recorder_finish(rec);
}

bn_status bn_recorder_field(const bn_recorder *rec, const char *name, const double **data,
                            int64_t *rows, int64_t *cols)
{
    if (!rec->keep || !rec->finished || !rec->out)
        return bn_fail(BN_ERR_ARG, "the recorder keeps no rows (keep = 0) or has not finished");
    for (int f = 0; f < rec->nf; f++)
        if (strcmp(bn_sim_field_name(f), name) == 0) {
            *data = rec->out[f];
            *rows = rec->S;
            *cols = rec->Rmax;
            return BN_OK;
        }
    for (int f = 0; rec->sh_out && f <= rec->nsh; f++)
        if (strcmp(f ? rec->sh_names[f - 1] : "sharpness_step", name) == 0) {
            *data = rec->sh_out[f];
            *rows = rec->S;
            *cols = rec->Rsmax;
            return BN_OK;
        }
    return bn_fail(BN_ERR_ARG, "no record field named '%s'", name);
}

const int64_t *bn_recorder_counts(const bn_recorder *rec) { return rec->counts; }
int64_t bn_recorder_max_records(const bn_recorder *rec) { return rec->Rmax; }

bn_status bn_recorder_add_npz(const bn_recorder *rec, bn_npz *z)
{
    if (rec->keep) {
        if (!rec->out) return bn_fail(BN_ERR_ARG, "bn_recorder_add_npz: the recorder has not finished");
        int64_t shp[2] = {rec->S, rec->Rmax};
        for (int f = 0; f < rec->nf; f++) BN_TRY(bn_npz_add_f64(z, bn_sim_field_name(f), rec->out[f], 2, shp));
        int64_t s1[1] = {rec->S};
        BN_TRY(bn_npz_add_i64(z, "records", rec->counts, 1, s1));
        if (rec->sh_out) {
            int64_t ss[2] = {rec->S, rec->Rsmax};
            for (int f = 0; f <= rec->nsh; f++)
                BN_TRY(bn_npz_add_f64(z, f ? rec->sh_names[f - 1] : "sharpness_step", rec->sh_out[f], 2, ss));
            BN_TRY(bn_npz_add_i64(z, "sharpness_records", rec->sh_counts, 1, s1));
        }
    }
    int64_t one[1] = {1};
    BN_TRY(bn_npz_add_f64(z, "kappa_scale", &rec->kscale, 1, one));
    return bn_events_add_npz(rec->ev, "", z);
}

/* ------------------------------------------------------------ checkpoints */

void bn_recorder_ckpt_config(const bn_recorder *r, bn_cfgtext *t)
{
    bn_cfgtext_add(t, "recorder.trajectories=%lld", (long long)r->S);
    bn_cfgtext_add(t, "recorder.every=%lld", (long long)r->K);
    bn_cfgtext_add(t, "recorder.keep=%d", r->keep);
    bn_cfgtext_add(t, "recorder.window_pre=%lld", (long long)r->pre);
    bn_cfgtext_add(t, "recorder.window_post=%lld", (long long)r->post);
    bn_cfgtext_add(t, "recorder.kappa_scale=%.17g", r->kscale);
    bn_events_ckpt_config(r->ev, t);
}

/* Row lists of every trajectory, one section of counts and one of rows. */
static bn_status put_rowvecs(bn_ckpt *c, const char *tag_n, const char *tag_v, const rowvec *base,
                             size_t stride, int64_t S, int width)
{
    int64_t *n = malloc((size_t)S * sizeof(int64_t) + 1), total = 0;
    if (!n) return bn_fail(BN_ERR_NOMEM, "cannot stage the recorder for the checkpoint");
    for (int64_t j = 0; j < S; j++) {
        const rowvec *v = (const rowvec *)((const char *)base + (size_t)j * stride);
        n[j] = v->n;
        total += v->n;
    }
    double *all = malloc((size_t)total * (size_t)width * sizeof(double) + 1);
    bn_status st = all ? BN_OK : bn_fail(BN_ERR_NOMEM, "cannot stage %lld recorded rows", (long long)total);
    for (int64_t j = 0, k = 0; !st && j < S; j++) {
        const rowvec *v = (const rowvec *)((const char *)base + (size_t)j * stride);
        if (v->n) memcpy(all + (size_t)k * (size_t)width, v->v, (size_t)v->n * (size_t)width * sizeof(double));
        k += v->n;
    }
    if (!st) st = bn_ckpt_put(c, tag_n, n, (size_t)S * sizeof(int64_t));
    if (!st) st = bn_ckpt_put(c, tag_v, all, (size_t)total * (size_t)width * sizeof(double));
    free(n);
    free(all);
    return st;
}

static bn_status get_rowvecs(bn_ckpt *c, const char *tag_n, const char *tag_v, rowvec *base, size_t stride,
                             int64_t S, int width)
{
    const void *pn, *pv;
    size_t bn, bv;
    BN_TRY(bn_ckpt_get_any(c, tag_n, &pn, &bn));
    BN_TRY(bn_ckpt_get_any(c, tag_v, &pv, &bv));
    const int64_t *n = pn;
    const double *rows = pv;
    size_t total = 0, have = bv / ((size_t)width * sizeof(double));
    if (bn != (size_t)S * sizeof(int64_t))
        return bn_fail(BN_ERR_FORMAT, "checkpoint '%s': section %s has the wrong size", bn_ckpt_path(c), tag_n);
    for (int64_t j = 0; j < S; j++) {
        if (n[j] < 0 || (size_t)n[j] > have - total)
            return bn_fail(BN_ERR_FORMAT, "checkpoint '%s': inconsistent row counts in %s", bn_ckpt_path(c), tag_n);
        total += (size_t)n[j];
    }
    if (total * (size_t)width * sizeof(double) != bv)
        return bn_fail(BN_ERR_FORMAT, "checkpoint '%s': inconsistent row counts in %s", bn_ckpt_path(c), tag_n);
    for (int64_t j = 0; j < S; j++) {
        rowvec *v = (rowvec *)((char *)base + (size_t)j * stride);
        v->n = 0;
        for (int64_t i = 0; i < n[j]; i++)
            if (rv_push(v, rows + (size_t)i * (size_t)width, width))
                return bn_fail(BN_ERR_NOMEM, "cannot restore the recorded rows");
        rows += (size_t)n[j] * (size_t)width;
    }
    return BN_OK;
}

bn_status bn_recorder_ckpt_save(const bn_recorder *r, bn_ckpt *c)
{
    if (r->finished) return bn_fail(BN_ERR_ARG, "a finished recorder cannot be checkpointed");
    int64_t head[4] = {r->S, r->nf, r->keep, r->nsh};
    BN_TRY(bn_ckpt_put(c, "recorder.head", head, sizeof head));
    if (r->keep) {
        int64_t S = r->S, cap = r->pre + 1;
        int64_t *small = malloc((size_t)S * 4 * sizeof(int64_t));
        double *ring = malloc((size_t)S * (size_t)cap * (size_t)r->nf * sizeof(double));
        bn_status st = small && ring ? BN_OK : bn_fail(BN_ERR_NOMEM, "cannot stage the recorder for the checkpoint");
        for (int64_t j = 0; !st && j < S; j++) {
            const traj_rec *t = &r->tr[j];
            small[4 * j] = t->ring_n;
            small[4 * j + 1] = t->ring_head;
            small[4 * j + 2] = t->full;
            small[4 * j + 3] = t->post_left;
            memcpy(ring + (size_t)j * (size_t)cap * (size_t)r->nf, t->ring, (size_t)cap * (size_t)r->nf * sizeof(double));
        }
        if (!st) st = bn_ckpt_put(c, "recorder.traj", small, (size_t)S * 4 * sizeof(int64_t));
        if (!st) st = bn_ckpt_put(c, "recorder.ring", ring, (size_t)S * (size_t)cap * (size_t)r->nf * sizeof(double));
        free(small);
        free(ring);
        BN_TRY(st);
        BN_TRY(put_rowvecs(c, "recorder.kept_n", "recorder.kept", &r->tr[0].kept, sizeof(traj_rec), S, r->nf));
        BN_TRY(put_rowvecs(c, "recorder.pending_n", "recorder.pending", &r->tr[0].pending, sizeof(traj_rec), S, r->nf));
        BN_TRY(bn_ckpt_put(c, "recorder.sh_names", r->sh_names, sizeof r->sh_names));
        if (r->sh_rows)
            BN_TRY(put_rowvecs(c, "recorder.sh_n", "recorder.sh", r->sh_rows, sizeof(rowvec), S, r->nsh + 1));
    }
    return bn_events_ckpt_save(r->ev, c);
}

bn_status bn_recorder_ckpt_load(bn_recorder *r, bn_ckpt *c)
{
    int64_t head[4];
    BN_TRY(bn_ckpt_get(c, "recorder.head", head, sizeof head));
    if (head[0] != r->S || head[1] != r->nf || head[2] != r->keep || head[3] < 0 || head[3] > MAX_SHARP)
        return bn_fail(BN_ERR_FORMAT, "checkpoint '%s': the recorder's state does not fit this run", bn_ckpt_path(c));
    if (r->keep) {
        int64_t S = r->S, cap = r->pre + 1;
        const void *ps, *pr;
        size_t bs, br;
        BN_TRY(bn_ckpt_get_any(c, "recorder.traj", &ps, &bs));
        BN_TRY(bn_ckpt_get_any(c, "recorder.ring", &pr, &br));
        if (bs != (size_t)S * 4 * sizeof(int64_t) || br != (size_t)S * (size_t)cap * (size_t)r->nf * sizeof(double))
            return bn_fail(BN_ERR_FORMAT, "checkpoint '%s': the recorder's history has the wrong size", bn_ckpt_path(c));
        const int64_t *small = ps;
        for (int64_t j = 0; j < S; j++) {
            traj_rec *t = &r->tr[j];
            t->ring_n = small[4 * j];
            t->ring_head = small[4 * j + 1];
            t->full = (int)small[4 * j + 2];
            t->post_left = small[4 * j + 3];
            if (t->ring_n < 0 || t->ring_n > cap || t->ring_head < 0 || t->ring_head >= cap)
                return bn_fail(BN_ERR_FORMAT, "checkpoint '%s': bad recorder history", bn_ckpt_path(c));
            memcpy(t->ring, (const double *)pr + (size_t)j * (size_t)cap * (size_t)r->nf,
                   (size_t)cap * (size_t)r->nf * sizeof(double));
        }
        BN_TRY(get_rowvecs(c, "recorder.kept_n", "recorder.kept", &r->tr[0].kept, sizeof(traj_rec), S, r->nf));
        BN_TRY(get_rowvecs(c, "recorder.pending_n", "recorder.pending", &r->tr[0].pending, sizeof(traj_rec), S, r->nf));
        BN_TRY(bn_ckpt_get(c, "recorder.sh_names", r->sh_names, sizeof r->sh_names));
        r->nsh = (int)head[3];
        if (bn_ckpt_next_is(c, "recorder.sh_n")) {
            if (!r->sh_rows) r->sh_rows = calloc((size_t)S, sizeof *r->sh_rows);
            if (!r->sh_rows) return bn_fail(BN_ERR_NOMEM, "cannot allocate the sharpness records");
            BN_TRY(get_rowvecs(c, "recorder.sh_n", "recorder.sh", r->sh_rows, sizeof(rowvec), S, r->nsh + 1));
        }
    }
    return bn_events_ckpt_load(r->ev, c);
}
