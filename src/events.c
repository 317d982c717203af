/* Spike detection on recorded series (see bn_spike in bnspike.h). */
#include "events_internal.h"
#include "ckpt.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bn_status bn_find_first_spike(const double *rho, const double *loss, const double *wnorm,
                              int64_t count, double min_rise, bn_spike *out)
{
    memset(out, 0, sizeof *out);
    out->onset = out->peak = out->end = -1;
    if (!(min_rise >= 1.0)) return bn_fail(BN_ERR_ARG, "min_rise must be >= 1 (got %g)", min_rise);
    int fell = 0;
    for (int64_t k = 0; k + 1 < count; k++) {
        if (!isfinite(rho[k]) || !isfinite(rho[k + 1])) { fell = 0; continue; }
        if (fabs(rho[k + 1]) < fabs(rho[k])) { fell = 1; continue; }
        if (!fell || !(fabs(rho[k + 1]) > fabs(rho[k]))) continue;
        /* A rising edge starts at k: follow it to its peak. */
        int64_t p = k + 1;
        while (p + 1 < count && isfinite(rho[p + 1]) && fabs(rho[p + 1]) > fabs(rho[p])) p++;
        if (fabs(rho[p]) >= min_rise * fabs(rho[k])) {
            /* The spike ends when ρ is back down by the same factor. */
            int64_t e = p;
            while (e + 1 < count && !(fabs(rho[e]) * min_rise <= fabs(rho[p]))) e++;
            /* The loss keeps falling while ρ is tiny: its spike runs from its
             * minimum inside the edge to its maximum before the end. */
            int64_t lo = k;
            for (int64_t i = k; i <= p; i++)
                if (loss[i] < loss[lo]) lo = i;
            double lmax = loss[lo];
            for (int64_t i = lo; i <= e; i++)
                if (loss[i] > lmax) lmax = loss[i];
            out->found = 1;
            out->onset = k;
            out->peak = p;
            out->end = e;
            out->rho_onset = rho[k];
            out->rho_peak = rho[p];
            out->loss_onset = loss[lo];
            out->loss_peak = lmax;
            out->wnorm_onset = wnorm[k];
            out->wnorm_end = wnorm[e];
            return BN_OK;
        }
        k = p - 1; /* jitter: continue after this small edge */
        fell = 0;
    }
    return BN_OK;
}

/* ------------------------------------------------------------------------
 * The streaming detector (definitions in bnspike.h, "sweeps, events, theory").
 * One state per trajectory, O(1) work per step; events are appended when their
 * rising edge ends (or at the end of the run). */

void bn_event_params_default(bn_event_params *p)
{
    memset(p, 0, sizeof *p);
    p->min_rise = 10.0;
    p->end_factor = 10.0;
    p->floor_factor = 100.0;
    p->use_rho_sigma = 0;
    p->window_pre = 20;
    p->window_post = 20;
}

bn_status bn_event_params_check(const bn_event_params *p)
{
    if (!(p->min_rise > 1.0) || !isfinite(p->min_rise))
        return bn_fail(BN_ERR_ARG, "min_rise must be a finite number > 1 (got %g)", p->min_rise);
    if (!(p->end_factor >= 1.0) || !isfinite(p->end_factor))
        return bn_fail(BN_ERR_ARG, "end_factor must be a finite number >= 1 (got %g)", p->end_factor);
    if (!(p->floor_factor >= 0.0) || !isfinite(p->floor_factor))
        return bn_fail(BN_ERR_ARG, "floor_factor must be a finite number >= 0 (got %g)", p->floor_factor);
    if (p->window_pre < 0 || p->window_post < 0)
        return bn_fail(BN_ERR_ARG, "event windows must be >= 0 (got %lld, %lld)",
                       (long long)p->window_pre, (long long)p->window_post);
    return BN_OK;
}

double bn_unit_roundoff(bn_precision p) { return p == BN_FP32 ? 0x1p-24 : 0x1p-53; }

void bn_kappa_rule(double kappa_scale, const bn_event_input *in, double *kappa, double *threshold,
                   double *rise_pred)
{
    double k = in->eta_eff * kappa_scale;
    double N = hypot(in->alpha_sigma, in->beta_sigma);
    double c = in->alpha_sigma / N, s = in->beta_sigma / N;
    *kappa = k;
    *threshold = 2.0 * c / (c * c - s * s);
    *rise_pred = fabs(1.0 - k * c) / (1.0 + k * s * s / c);
}

typedef struct {
    int started, done;           /* a step was fed / diverged (no more steps)          */
    int64_t last_step;
    double prev_r;               /* r at the previous step (NaN: not finite)           */
    bn_event_input prev_in;      /* the previous step's input                          */
    int prev_fell;               /* the step into the previous one was falling         */
    double prev_pred;            /* rise_pred at the previous step                     */
    int64_t pred_up;             /* last step where rise_pred went from <= 1 to > 1    */
    int64_t last_peak;           /* peak step of the last spike (-1)                   */
    double fall_min;             /* min r since the last spike's peak (or the start)   */
    int64_t fall_min_step;
    /* the open rising edge */
    int edge, confirmed;
    bn_spike_event cur;
    double lmin, lmax;           /* loss min on [onset, peak] and max after it         */
    int64_t lmin_step, lmax_step;
    /* the last spike, after its peak, until it closes */
    int post;
    double post_lmax;
    int64_t post_lmax_step;
    /* last finite sharpness */
    double sh, shw;
    int64_t sh_step;
    bn_traj_summary sum;
    bn_spike_event *ev;
    int64_t n, cap;
} traj_state;

struct bn_events {
    int64_t S;
    bn_event_params p;
    double floor, kscale;
    traj_state *t;
    bn_event_fields fidx; /* for the observer */
    int fidx_ready;
};

bn_status bn_events_create(int64_t S, const bn_event_params *p, bn_precision precision,
                           double kappa_scale, bn_events **out)
{
    *out = NULL;
    if (S <= 0) return bn_fail(BN_ERR_ARG, "the detector needs at least one trajectory (got %lld)", (long long)S);
    BN_TRY(bn_event_params_check(p));
    bn_events *ev = calloc(1, sizeof *ev);
    if (ev) ev->t = calloc((size_t)S, sizeof *ev->t);
    if (!ev || !ev->t) {
        free(ev);
        return bn_fail(BN_ERR_NOMEM, "cannot allocate the spike detector for %lld trajectories", (long long)S);
    }
    ev->S = S;
    ev->p = *p;
    ev->floor = p->floor_factor * bn_unit_roundoff(precision);
    ev->kscale = kappa_scale;
    for (int64_t j = 0; j < S; j++) {
        traj_state *t = &ev->t[j];
        t->fall_min = INFINITY;
        t->fall_min_step = -1;
        t->prev_r = NAN;
        t->prev_pred = NAN;
        t->pred_up = t->last_peak = -1;
        t->sh = t->shw = NAN;
        t->sh_step = -1;
        t->sum.diverged_step = t->sum.floor_step = t->sum.rho_min_run_step = -1;
        t->sum.kappa_max_step = -1;
        t->sum.rho_min_run = t->sum.kappa_max = t->sum.loss_final = t->sum.rho_final = NAN;
    }
    *out = ev;
    return BN_OK;
}

void bn_events_free(bn_events *ev)
{
    if (!ev) return;
    for (int64_t j = 0; j < ev->S; j++) free(ev->t[j].ev);
    free(ev->t);
    free(ev);
}

static int push_event(traj_state *t, const bn_spike_event *e)
{
    if (t->n == t->cap) {
        int64_t cap = t->cap ? 2 * t->cap : 4;
        bn_spike_event *p = realloc(t->ev, (size_t)cap * sizeof *p);
        if (!p) return -1;
        t->ev = p;
        t->cap = cap;
    }
    t->ev[t->n++] = *e;
    t->sum.n_spikes = t->n;
    return 0;
}

/* Closes the spike after its peak: its end (or -1) and its loss maximum. */
static void close_post(traj_state *t, int64_t end_step, double rho_end, double wnorm_end)
{
    bn_spike_event *e = &t->ev[t->n - 1];
    e->end_step = end_step;
    e->rho_end = rho_end;
    e->wnorm_end = wnorm_end;
    e->loss_spike = t->post_lmax;
    e->loss_spike_step = t->post_lmax_step;
    e->loss_ratio = e->loss_spike / e->loss_before;
    t->post = 0;
}

/* The open confirmed edge peaked at the previous step: append it as a spike. */
static int finish_edge(traj_state *t)
{
    bn_spike_event *c = &t->cur;
    c->end_step = -1;
    c->rho_end = NAN;
    c->loss_before = t->lmin;
    c->loss_before_step = t->lmin_step;
    c->loss_spike = t->lmax;
    c->loss_spike_step = t->lmax_step;
    c->loss_ratio = t->lmax / t->lmin;
    c->pred_onset_step = t->pred_up > t->last_peak ? t->pred_up : -1;
    t->last_peak = c->peak_step;
    if (push_event(t, c)) return -1;
    t->post = 1;
    t->post_lmax = t->lmax;
    t->post_lmax_step = t->lmax_step;
    t->edge = t->confirmed = 0;
    /* A new falling phase starts after the peak. */
    t->fall_min = INFINITY;
    t->fall_min_step = -1;
    return 0;
}

int bn_events_edge_open(const bn_events *ev, int64_t j) { return ev->t[j].edge; }

int bn_events_feed_flags(bn_events *ev, int64_t j, int64_t step, const bn_event_input *in,
                         int64_t *onset)
{
    if (j < 0 || j >= ev->S)
        return -(int)bn_fail(BN_ERR_ARG, "trajectory %lld is out of range (S = %lld)", (long long)j,
                             (long long)ev->S);
    traj_state *t = &ev->t[j];
    if (t->done) return 0;
    if (t->started && step != t->last_step + 1)
        return -(int)bn_fail(BN_ERR_ARG, "trajectory %lld: step %lld fed after step %lld (steps must be "
                             "consecutive)", (long long)j, (long long)step, (long long)t->last_step);
    int flags = 0;
    int first = !t->started;
    t->started = 1;
    t->last_step = step;
    t->sum.steps_seen++;

    if (!isfinite(in->loss)) {
        /* Divergence: close what is open and stop. */
        if (t->edge && t->confirmed) {
            if (t->post) close_post(t, -1, NAN, t->prev_in.w_norm);
            if (finish_edge(t)) goto nomem;
        }
        if (t->post) close_post(t, -1, NAN, t->prev_in.w_norm);
        t->edge = t->confirmed = 0;
        t->sum.diverged = 1;
        t->sum.diverged_step = step;
        t->done = 1;
        if (onset) *onset = -1;
        return BN_EVF_DIVERGED;
    }

    double r = fabs(in->rho);
    int rfin = isfinite(r);
    double kappa, thr, pred;
    bn_kappa_rule(ev->kscale, in, &kappa, &thr, &pred);

    /* Edge logic on the step prev → now. */
    int have_pair = !first && rfin && isfinite(t->prev_r);
    int rising = have_pair && r > t->prev_r;
    if (t->edge && !rising) {
        /* The open edge ended at the previous step (its peak). */
        if (t->confirmed) {
            if (t->post) {
                close_post(t, -1, NAN, t->prev_in.w_norm);
                flags |= BN_EVF_CLOSED;
            }
            if (finish_edge(t)) goto nomem;
        } else {
            t->edge = 0;
            flags |= BN_EVF_CAND_DROP;
        }
    }
    if (t->post) {
        /* After the last spike's peak: its loss maximum and its end. */
        if (in->loss > t->post_lmax) {
            t->post_lmax = in->loss;
            t->post_lmax_step = step;
        }
        const bn_spike_event *e = &t->ev[t->n - 1];
        if (rfin && r * ev->p.end_factor <= e->rho_peak) {
            close_post(t, step, r, in->w_norm);
            flags |= BN_EVF_CLOSED;
        }
    }
    if (rising && !t->edge && t->prev_fell) {
        /* A rising edge opens at the previous step. */
        bn_spike_event *c = &t->cur;
        const bn_event_input *o = &t->prev_in;
        memset(c, 0, sizeof *c);
        c->onset_step = step - 1;
        c->peak_step = step;
        c->end_step = -1;
        c->confirm_step = -1;
        c->rho_onset = t->prev_r;
        c->rho_peak = r;
        c->rho_min = t->fall_min;
        c->rho_min_step = t->fall_min_step;
        c->floor_before_onset = t->fall_min <= ev->floor;
        c->loss_onset = o->loss;
        c->eta_eff_onset = o->eta_eff;
        bn_kappa_rule(ev->kscale, o, &c->kappa_onset, &c->kappa_threshold_onset, &c->rise_pred_onset);
        c->kappa_peak = kappa;
        c->rise_obs_onset = r / t->prev_r;
        c->wnorm_onset = o->w_norm;
        c->wnorm_end = in->w_norm;
        c->sharpness_onset = t->sh;
        c->sharpness_weighted_onset = t->shw;
        c->sharpness_step = t->sh_step;
        t->lmin = o->loss;
        t->lmin_step = step - 1;
        t->lmax = o->loss;
        t->lmax_step = step - 1;
        t->edge = 1;
        t->confirmed = 0;
        flags |= BN_EVF_CAND_START;
    } else if (rising && t->edge) {
        t->cur.peak_step = step;
        t->cur.rho_peak = r;
        t->cur.kappa_peak = kappa;
        t->cur.wnorm_end = in->w_norm;
    }
    if (t->edge) {
        /* The loss over [onset, peak]: its minimum, then the maximum after it. */
        if (in->loss < t->lmin) {
            t->lmin = t->lmax = in->loss;
            t->lmin_step = t->lmax_step = step;
        } else if (in->loss > t->lmax) {
            t->lmax = in->loss;
            t->lmax_step = step;
        }
        if (!t->confirmed && r >= ev->p.min_rise * t->cur.rho_onset) {
            if (t->post) {
                close_post(t, -1, NAN, in->w_norm);
                flags |= BN_EVF_CLOSED;
            }
            t->confirmed = 1;
            t->cur.confirm_step = step;
            flags |= BN_EVF_CONFIRMED;
        }
    }

    /* Trackers that include this step. */
    if (rfin) {
        if (r < t->fall_min) {
            t->fall_min = r;
            t->fall_min_step = step;
        }
        if (!(r >= t->sum.rho_min_run)) {
            t->sum.rho_min_run = r;
            t->sum.rho_min_run_step = step;
        }
        if (r <= ev->floor && !t->sum.floor_reached) {
            t->sum.floor_reached = 1;
            t->sum.floor_step = step;
        }
    }
    if (isfinite(kappa) && !(kappa <= t->sum.kappa_max)) {
        t->sum.kappa_max = kappa;
        t->sum.kappa_max_step = step;
    }
    if (pred > 1.0 && t->prev_pred <= 1.0) t->pred_up = step;
    t->prev_pred = pred;
    if (isfinite(in->sharpness) || isfinite(in->sharpness_weighted)) {
        t->sh = in->sharpness;
        t->shw = in->sharpness_weighted;
        t->sh_step = step;
    }
    t->prev_fell = have_pair ? !rising : 0;
    t->prev_r = rfin ? r : NAN;
    t->prev_in = *in;
    t->sum.loss_final = in->loss;
    t->sum.rho_final = in->rho;
    if (onset) *onset = t->edge ? t->cur.onset_step : -1;
    return flags;
nomem:
    return -(int)bn_fail(BN_ERR_NOMEM, "cannot grow the event list of trajectory %lld", (long long)j);
}

bn_status bn_events_feed(bn_events *ev, int64_t j, int64_t step, const bn_event_input *in)
{
    int f = bn_events_feed_flags(ev, j, step, in, NULL);
    return f < 0 ? (bn_status)(-f) : BN_OK;
}

void bn_events_finish(bn_events *ev)
{
    for (int64_t j = 0; j < ev->S; j++) {
        traj_state *t = &ev->t[j];
        if (t->done) continue;
        if (t->edge && t->confirmed) {
            if (t->post) close_post(t, -1, NAN, t->prev_in.w_norm);
            t->sum.edge_at_end = 1;
            if (finish_edge(t)) continue; /* out of memory: the spike is lost */
        }
        if (t->post) close_post(t, -1, NAN, t->prev_in.w_norm);
        t->edge = t->confirmed = 0;
        t->done = 1;
    }
}

int64_t bn_events_trajectories(const bn_events *ev) { return ev->S; }
int64_t bn_events_count(const bn_events *ev, int64_t j) { return (j >= 0 && j < ev->S) ? ev->t[j].n : 0; }
const bn_spike_event *bn_events_get(const bn_events *ev, int64_t j, int64_t k)
{
    if (j < 0 || j >= ev->S || k < 0 || k >= ev->t[j].n) return NULL;
    return &ev->t[j].ev[k];
}
const bn_traj_summary *bn_events_summary(const bn_events *ev, int64_t j)
{
    return (j >= 0 && j < ev->S) ? &ev->t[j].sum : NULL;
}

void bn_event_fields_lookup(bn_event_fields *f, int use_rho_sigma)
{
    int *slots[] = {&f->rho, &f->loss, &f->eta_eff, &f->w_norm, &f->alpha_sigma, &f->beta_sigma,
                    &f->sharpness, &f->sharpness_weighted};
    const char *names[] = {use_rho_sigma ? "rho_sigma" : "rho", "loss", "eta_eff", "w_norm",
                           "alpha_sigma", "beta_sigma", "sharpness", "sharpness_weighted"};
    for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++) {
        *slots[i] = -1;
        for (int k = 0; k < bn_sim_n_fields(); k++)
            if (strcmp(bn_sim_field_name(k), names[i]) == 0) *slots[i] = k;
    }
}

static double fval(const double *const *fields, int idx, int64_t j) { return idx >= 0 ? fields[idx][j] : NAN; }

void bn_event_input_from_fields(const bn_event_fields *f, const double *const *fields, int64_t j,
                                bn_event_input *in)
{
    in->rho = fval(fields, f->rho, j);
    in->loss = fval(fields, f->loss, j);
    in->eta_eff = fval(fields, f->eta_eff, j);
    in->w_norm = fval(fields, f->w_norm, j);
    in->alpha_sigma = fval(fields, f->alpha_sigma, j);
    in->beta_sigma = fval(fields, f->beta_sigma, j);
    in->sharpness = fval(fields, f->sharpness, j);
    in->sharpness_weighted = fval(fields, f->sharpness_weighted, j);
}

int bn_events_observer(void *user, int64_t step, const double *const *fields, int64_t S)
{
    bn_events *ev = user;
    if (!ev->fidx_ready) {
        bn_event_fields_lookup(&ev->fidx, ev->p.use_rho_sigma);
        ev->fidx_ready = 1;
    }
    if (S > ev->S) {
        bn_fail(BN_ERR_ARG, "the detector has %lld trajectories, the sim %lld", (long long)ev->S, (long long)S);
        return 1;
    }
    int fail = 0;
    BN_PAR_FOR(S >= 512, schedule(static) reduction(min : fail), j, S, {
        bn_event_input in;
        bn_event_input_from_fields(&ev->fidx, fields, j, &in);
        int f = bn_events_feed_flags(ev, j, step, &in, NULL);
        if (f < fail) fail = f;
    });
    if (fail) {
        bn_fail((bn_status)(-fail), "the spike detector failed at step %lld (%s)", (long long)step,
                bn_status_name((bn_status)(-fail)));
        return 1;
    }
    return 0;
}

static double sval(const double *a, int64_t i) { return a ? a[i] : NAN; }

bn_status bn_events_from_series(const bn_event_series *s, int64_t S, int64_t count, int64_t step0,
                                const bn_event_params *p, bn_precision precision,
                                double kappa_scale, bn_events **out)
{
    *out = NULL;
    if (!s->rho || !s->loss) return bn_fail(BN_ERR_ARG, "event series need rho and loss");
    if (count < 0) return bn_fail(BN_ERR_ARG, "negative series length %lld", (long long)count);
    bn_events *ev;
    BN_TRY(bn_events_create(S, p, precision, kappa_scale, &ev));
    for (int64_t j = 0; j < S; j++)
        for (int64_t k = 0; k < count; k++) {
            int64_t i = j * count + k;
            bn_event_input in = {
                .rho = s->rho[i], .loss = s->loss[i],
                .eta_eff = sval(s->eta_eff, i), .w_norm = sval(s->w_norm, i),
                .alpha_sigma = sval(s->alpha_sigma, i), .beta_sigma = sval(s->beta_sigma, i),
                .sharpness = sval(s->sharpness, i), .sharpness_weighted = sval(s->sharpness_weighted, i)};
            int f = bn_events_feed_flags(ev, j, step0 + k, &in, NULL);
            if (f < 0) {
                bn_events_free(ev);
                return (bn_status)(-f);
            }
        }
    bn_events_finish(ev);
    *out = ev;
    return BN_OK;
}

/* ------------------------------------------------------ self-description */

#define EVF(m, t, doc) {#m, t, offsetof(bn_spike_event, m), doc}
static const bn_struct_field spike_fields[] = {
    EVF(onset_step, BN_SF_I64, "first step of the rising edge (rho_{t+1} > rho_t after a falling step)"),
    EVF(peak_step, BN_SF_I64, "last step of the edge: max rho"),
    EVF(end_step, BN_SF_I64, "first step after the peak with rho <= rho_peak/end_factor (-1: not reached)"),
    EVF(confirm_step, BN_SF_I64, "step at which rho reached min_rise x rho_onset"),
    EVF(rho_onset, BN_SF_F64, "|rho| at the onset"),
    EVF(rho_peak, BN_SF_F64, "|rho| at the peak"),
    EVF(rho_end, BN_SF_F64, "|rho| at the end (nan: not reached)"),
    EVF(rho_min, BN_SF_F64, "min |rho| over the falling phase before the onset"),
    EVF(rho_min_step, BN_SF_I64, "its step"),
    EVF(floor_before_onset, BN_SF_INT, "1: rho_min <= floor_factor x unit roundoff (onset depends on precision)"),
    EVF(loss_onset, BN_SF_F64, "loss at the onset step"),
    EVF(loss_before, BN_SF_F64, "min loss over [onset, peak]"),
    EVF(loss_spike, BN_SF_F64, "max loss from loss_before_step until the spike ends"),
    EVF(loss_ratio, BN_SF_F64, "loss_spike / loss_before"),
    EVF(loss_before_step, BN_SF_I64, "step of loss_before"),
    EVF(loss_spike_step, BN_SF_I64, "step of loss_spike"),
    EVF(eta_eff_onset, BN_SF_F64, "eta_eff = eta_w gamma / |w|_Sigma^2 at the onset"),
    EVF(kappa_onset, BN_SF_F64, "kappa = eta_eff |w_LS|_Sigma at the onset (square loss)"),
    EVF(kappa_threshold_onset, BN_SF_F64, "2 cos(theta) / cos(2 theta) at the onset (Sigma geometry)"),
    EVF(kappa_peak, BN_SF_F64, "kappa at the peak"),
    EVF(rise_pred_onset, BN_SF_F64, "|1 - kappa cos| / (1 + kappa sin^2/cos) at the onset: predicted rho ratio"),
    EVF(rise_obs_onset, BN_SF_F64, "observed rho_{onset+1} / rho_onset"),
    EVF(pred_onset_step, BN_SF_I64, "last step <= peak where the kappa rule switched to predicting a rise (-1)"),
    EVF(wnorm_onset, BN_SF_F64, "|w| at the onset"),
    EVF(wnorm_end, BN_SF_F64, "|w| at the end (or the last step of the spike's window)"),
    EVF(sharpness_onset, BN_SF_F64, "lambda_max(H) at the last sharpness record <= onset (nan: none)"),
    EVF(sharpness_weighted_onset, BN_SF_F64, "lambda_max(P^1/2 H P^1/2) there"),
    EVF(sharpness_step, BN_SF_I64, "step of that sharpness record (-1: none)"),
};
#undef EVF

#define SUF(m, t, doc) {#m, t, offsetof(bn_traj_summary, m), doc}
static const bn_struct_field summary_fields[] = {
    SUF(n_spikes, BN_SF_I64, "number of spikes"),
    SUF(diverged, BN_SF_INT, "1: the loss became non-finite"),
    SUF(diverged_step, BN_SF_I64, "first non-finite step (-1)"),
    SUF(floor_reached, BN_SF_INT, "1: |rho| <= floor_factor x unit roundoff at some step"),
    SUF(floor_step, BN_SF_I64, "first such step (-1)"),
    SUF(rho_min_run, BN_SF_F64, "min |rho| over the run"),
    SUF(rho_min_run_step, BN_SF_I64, "its step"),
    SUF(kappa_max, BN_SF_F64, "max kappa over the run"),
    SUF(kappa_max_step, BN_SF_I64, "its step"),
    SUF(edge_at_end, BN_SF_INT, "1: the run ended inside a spike's rising edge"),
    SUF(steps_seen, BN_SF_I64, "steps fed to the detector"),
    SUF(loss_final, BN_SF_F64, "loss at the last step"),
    SUF(rho_final, BN_SF_F64, "rho at the last step"),
};
#undef SUF

int bn_spike_event_fields(const bn_struct_field **out)
{
    *out = spike_fields;
    return (int)(sizeof spike_fields / sizeof spike_fields[0]);
}

int bn_traj_summary_fields(const bn_struct_field **out)
{
    *out = summary_fields;
    return (int)(sizeof summary_fields / sizeof summary_fields[0]);
}

double bn_struct_field_get(const void *obj, const bn_struct_field *f)
{
    const char *p = (const char *)obj + f->offset;
    switch (f->type) {
    case BN_SF_F64: { double v; memcpy(&v, p, sizeof v); return v; }
    case BN_SF_I64: { int64_t v; memcpy(&v, p, sizeof v); return (double)v; }
    default: { int v; memcpy(&v, p, sizeof v); return (double)v; }
    }
}

/* ev_traj (E) and ev_<member> (E) for every spike; sum_<member> (S) for every
 * trajectory summary member. */
bn_status bn_events_add_npz(const bn_events *ev, const char *prefix, bn_npz *z)
{
    int64_t E = 0, S = ev->S;
    for (int64_t j = 0; j < S; j++) E += ev->t[j].n;
    size_t cnt = (size_t)(E > S ? E : S) + 1;
    double *f = malloc(cnt * sizeof(double));
    int64_t *iv = malloc(cnt * sizeof(int64_t));
    bn_status st = (f && iv) ? BN_OK : bn_fail(BN_ERR_NOMEM, "cannot allocate the events table");
    int64_t shp[1] = {E};
    if (!st) {
        int64_t k = 0;
        for (int64_t j = 0; j < S; j++)
            for (int64_t e = 0; e < ev->t[j].n; e++) iv[k++] = j;
        char name[96];
        snprintf(name, sizeof name, "%sev_traj", prefix);
        st = bn_npz_add_i64(z, name, iv, 1, shp);
    }
    const bn_struct_field *fl;
    int nfl = bn_spike_event_fields(&fl);
    for (int c = 0; !st && c < nfl; c++) {
        char name[96];
        snprintf(name, sizeof name, "%sev_%s", prefix, fl[c].name);
        int64_t k = 0;
        for (int64_t j = 0; j < S; j++)
            for (int64_t e = 0; e < ev->t[j].n; e++, k++) {
                double v = bn_struct_field_get(&ev->t[j].ev[e], &fl[c]);
                if (fl[c].type == BN_SF_F64) f[k] = v;
                else iv[k] = (int64_t)v;
            }
        st = fl[c].type == BN_SF_F64 ? bn_npz_add_f64(z, name, f, 1, shp) : bn_npz_add_i64(z, name, iv, 1, shp);
    }
    nfl = bn_traj_summary_fields(&fl);
    shp[0] = S;
    for (int c = 0; !st && c < nfl; c++) {
        char name[96];
        snprintf(name, sizeof name, "%ssum_%s", prefix, fl[c].name);
        for (int64_t j = 0; j < S; j++) {
            double v = bn_struct_field_get(&ev->t[j].sum, &fl[c]);
            if (fl[c].type == BN_SF_F64) f[j] = v;
            else iv[j] = (int64_t)v;
        }
        st = fl[c].type == BN_SF_F64 ? bn_npz_add_f64(z, name, f, 1, shp) : bn_npz_add_i64(z, name, iv, 1, shp);
    }
    free(f);
    free(iv);
    return st;
}

/* ------------------------------------------------- sharpness after a run */

void bn_events_finish_range(bn_events *ev, int64_t j0, int64_t count)
{
    bn_events full = *ev;
    if (j0 < 0 || count <= 0 || j0 + count > ev->S) return;
    full.t = ev->t + j0;
    full.S = count;
    bn_events_finish(&full);
}

bn_status bn_events_attach_sharpness(bn_events *ev, const bn_sim *sim, int64_t offset)
{
    if (bn_sim_n_sharpness_arrays(sim) == 0) return BN_OK;
    bn_sim_array st, sh, shw;
    if (bn_sim_sharpness_find(sim, "sharpness_step", &st) != BN_OK || !st.i64) return BN_OK;
    int have_sh = bn_sim_sharpness_find(sim, "sharpness", &sh) == BN_OK && sh.f64 && sh.ndim == 2;
    int have_w = bn_sim_sharpness_find(sim, "sharpness_weighted", &shw) == BN_OK && shw.f64 && shw.ndim == 2;
    int64_t S = bn_sim_seeds(sim), Rs = st.shape[0];
    if (offset < 0 || offset + S > ev->S)
        return bn_fail(BN_ERR_ARG, "the detector holds %lld trajectories; the sim's %lld do not fit at %lld",
                       (long long)ev->S, (long long)S, (long long)offset);
    for (int64_t j = 0; j < S; j++) {
        traj_state *t = &ev->t[offset + j];
        for (int64_t k = 0; k < t->n; k++) {
            bn_spike_event *e = &t->ev[k];
            /* The last sharpness record at or before the onset with a value. */
            int64_t r = -1;
            for (int64_t q = 0; q < Rs && st.i64[q] <= e->onset_step; q++)
                if ((have_sh && isfinite(sh.f64[j * Rs + q])) || (have_w && isfinite(shw.f64[j * Rs + q]))) r = q;
            if (r < 0) continue;
            e->sharpness_step = st.i64[r];
            e->sharpness_onset = have_sh ? sh.f64[j * Rs + r] : NAN;
            e->sharpness_weighted_onset = have_w ? shw.f64[j * Rs + r] : NAN;
        }
    }
    return BN_OK;
}

/* ------------------------------------------------------------ checkpoints */

bn_status bn_events_ckpt_save(const bn_events *ev, bn_ckpt *c)
{
    int64_t head[3] = {ev->S, (int64_t)sizeof(traj_state), (int64_t)sizeof(bn_spike_event)};
    BN_TRY(bn_ckpt_put(c, "events.head", head, sizeof head));
    /* The per-trajectory states are plain values except the event list's
     * pointer, which the loader replaces. */
    BN_TRY(bn_ckpt_put(c, "events.traj", ev->t, (size_t)ev->S * sizeof *ev->t));
    int64_t total = 0;
    for (int64_t j = 0; j < ev->S; j++) total += ev->t[j].n;
    bn_spike_event *all = malloc((size_t)(total ? total : 1) * sizeof *all);
    if (!all) return bn_fail(BN_ERR_NOMEM, "cannot stage %lld spike events for the checkpoint", (long long)total);
    for (int64_t j = 0, k = 0; j < ev->S; k += ev->t[j].n, j++)
        if (ev->t[j].n) memcpy(all + k, ev->t[j].ev, (size_t)ev->t[j].n * sizeof *all);
    bn_status st = bn_ckpt_put(c, "events.list", all, (size_t)total * sizeof *all);
    free(all);
    return st;
}

bn_status bn_events_ckpt_load(bn_events *ev, bn_ckpt *c)
{
    int64_t head[3];
    BN_TRY(bn_ckpt_get(c, "events.head", head, sizeof head));
    if (head[0] != ev->S || head[1] != (int64_t)sizeof(traj_state) || head[2] != (int64_t)sizeof(bn_spike_event))
        return bn_fail(BN_ERR_FORMAT, "checkpoint '%s': the spike detector's state does not fit this run "
                                      "(%lld trajectories; this run has %lld)",
                       bn_ckpt_path(c), (long long)head[0], (long long)ev->S);
    traj_state *saved = malloc((size_t)ev->S * sizeof *saved);
    if (!saved) return bn_fail(BN_ERR_NOMEM, "cannot allocate the detector state");
    bn_status st = bn_ckpt_get(c, "events.traj", saved, (size_t)ev->S * sizeof *saved);
    const void *list = NULL;
    size_t bytes = 0;
    if (!st) st = bn_ckpt_get_any(c, "events.list", &list, &bytes);
    int64_t total = 0;
    for (int64_t j = 0; !st && j < ev->S; j++) {
        if (saved[j].n < 0 || saved[j].n > (int64_t)(bytes / sizeof(bn_spike_event)) - total)
            st = bn_fail(BN_ERR_FORMAT, "checkpoint '%s': inconsistent spike event counts", bn_ckpt_path(c));
        else total += saved[j].n;
    }
    if (!st && (size_t)total * sizeof(bn_spike_event) != bytes)
        st = bn_fail(BN_ERR_FORMAT, "checkpoint '%s': inconsistent spike event counts", bn_ckpt_path(c));
    const bn_spike_event *src = list;
    for (int64_t j = 0; !st && j < ev->S; j++) {
        traj_state *t = &ev->t[j];
        free(t->ev);
        *t = saved[j];
        t->ev = NULL;
        t->cap = 0;
        int64_t n = t->n;
        t->n = 0;
        for (int64_t k = 0; k < n && !st; k++)
            if (push_event(t, src + k)) st = bn_fail(BN_ERR_NOMEM, "cannot restore the spike events");
        src += n;
    }
    free(saved);
    return st;
}

void bn_events_ckpt_config(const bn_events *ev, bn_cfgtext *t)
{
    bn_cfgtext_add(t, "events.min_rise=%.17g", ev->p.min_rise);
    bn_cfgtext_add(t, "events.end_factor=%.17g", ev->p.end_factor);
    bn_cfgtext_add(t, "events.floor=%.17g", ev->floor);
    bn_cfgtext_add(t, "events.use_rho_sigma=%d", ev->p.use_rho_sigma);
    bn_cfgtext_add(t, "events.kappa_scale=%.17g", ev->kscale);
}
