/* Shared pieces of the run-like commands (see common.h). */
#include "common.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#if __has_include("git_commit.h")
#include "git_commit.h"
#endif
#ifndef BN_GIT_COMMIT
#define BN_GIT_COMMIT "unknown"
#endif

const char cli_data_help[] =
    "data (exactly one):\n"
    "  --x X.npy --y Y.npy      X: n×d, y: n (float64/float32, C or Fortran order)\n"
    "  --csv FILE               numeric CSV, last column is y, optional header line\n"
    "  --data NAME[:k=v,...]    generated: whitened, hilbert, gaussian, active-margin\n"
    "                           keys n, d, noise, seed and the generator's own, e.g.\n"
    "                           --data hilbert:n=64,d=256,noise=0.01\n"
    "model and optimizer:\n"
    "  --loss square|logistic   (square)\n"
    "  --eta-w X                step size of w (0.9)\n"
    "  --eta-gamma X            step size of gamma (0.05)\n"
    "  --gamma0 X               initial gamma (0.1)\n"
    "  --steps T                number of GD updates; steps t = 0..T (1000)\n"
    "start:\n"
    "  --seeds S                trajectories (per setting), each with its own\n"
    "                           random w0 (1)\n"
    "  --seed N                 seed ids N .. N+S-1 (0)\n"
    "  --w0-scale C             w0 = C·(A·ê + B·ξ), ξ ~ N(0, I_d) (1)\n"
    "  --w0-align A             weight of the reference direction ê in w0 (0)\n"
    "  --w0-noise B             weight of the random part ξ (1)\n"
    "  --no-project             keep w0 as built (default: project it on the row\n"
    "                           space of the centered data, as the paper assumes)\n"
    "  --ref W.npy|none         reference direction (default: least squares for\n"
    "                           square loss, hard-margin SVM for logistic)\n"
    "execution:\n"
    "  --precision fp64|fp32    (fp64)\n"
    "  --backend auto|cpu|cuda  (auto: CUDA when a device is present)\n"
    "  --device N               CUDA device ordinal (0)\n"
    "  --threads N              CPU threads (all cores)\n"
    "  --quiet                  no progress line\n"
    "long runs (run, sweep):\n"
    "  --checkpoint-every N     write OUT/checkpoint.bnck every N steps (atomically);\n"
    "                           SIGINT/SIGTERM always write one, plus partial outputs\n"
    "                           marked \"partial\" in run.json, and exit 130/143\n"
    "  --resume DIR             continue the stopped or killed run whose outputs are\n"
    "                           in DIR (the same command line plus --resume DIR); the\n"
    "                           result is bitwise that of an uninterrupted run.  A\n"
    "                           checkpoint of another configuration or data is refused\n";

const char cli_events_help[] =
    "spike events (computed on every step; r_t = |rho_t|, u = unit roundoff:\n"
    "2^-53 fp64, 2^-24 fp32):\n"
    "  rising step t: r_{t+1} > r_t; falling otherwise.  A rising edge is a run\n"
    "  of rising steps that follows a falling step; it is a SPIKE when its last\n"
    "  value is >= min-rise × its first (shorter edges are rounding jitter).\n"
    "    onset_step    the edge's first step (a local minimum of rho)\n"
    "    peak_step     its last step (max rho); end_step: first step after the\n"
    "                  peak with rho <= rho_peak/end-factor (-1: not reached)\n"
    "    rho_min       min rho over the falling phase before the onset;\n"
    "                  floor_before_onset = rho_min <= floor-factor·u: the onset\n"
    "                  and peak then depend on the precision (MODEL.md)\n"
    "    loss_before   min loss over [onset, peak]; loss_spike: max loss after it\n"
    "                  until the spike ends; loss_ratio = loss_spike/loss_before\n"
    "    kappa_onset   eta_eff·|w_LS|_Sigma at the onset (square loss), with\n"
    "                  kappa_threshold_onset = 2cos(th)/cos(2th) (Sigma geometry)\n"
    "    rise_pred_onset  |1-kappa cos|/(1+kappa sin^2/cos): the rho ratio the\n"
    "                  whitened map predicts; rise_obs_onset: the observed one\n"
    "    pred_onset_step  last step <= peak where that rule switched to a rise\n"
    "    sharpness_onset  last recorded sharpness at or before the onset\n"
    "    diverged, diverged_step  the loss became non-finite\n"
    "  --min-rise X             spike threshold on r_peak/r_onset (10)\n"
    "  --end-factor X           end of a spike: r <= r_peak/X (10)\n"
    "  --floor-factor X         precision floor: r <= X·u (100)\n"
    "  --event-rho rho|rho_sigma  the series events are detected on (rho)\n"
    "  --window-pre N           adaptive recording: steps kept before an onset (20)\n"
    "  --window-post N          and after a spike's end (20)\n";

static const struct option common_options[] = {
    {"x", required_argument, 0, CO_X},
    {"y", required_argument, 0, CO_Y},
    {"csv", required_argument, 0, CO_CSV},
    {"data", required_argument, 0, CO_DATA},
    {"loss", required_argument, 0, CO_LOSS},
    {"eta-w", required_argument, 0, CO_ETA_W},
    {"eta-gamma", required_argument, 0, CO_ETA_G},
    {"gamma0", required_argument, 0, CO_GAMMA0},
    {"steps", required_argument, 0, CO_STEPS},
    {"seeds", required_argument, 0, CO_SEEDS},
    {"seed", required_argument, 0, CO_SEED},
    {"w0-scale", required_argument, 0, CO_W0_SCALE},
    {"w0-align", required_argument, 0, CO_W0_ALIGN},
    {"w0-noise", required_argument, 0, CO_W0_NOISE},
    {"w0", required_argument, 0, CO_W0},
    {"no-project", no_argument, 0, CO_NO_PROJECT},
    {"ref", required_argument, 0, CO_REF},
    {"precision", required_argument, 0, CO_PREC},
    {"backend", required_argument, 0, CO_BACKEND},
    {"device", required_argument, 0, CO_DEVICE},
    {"threads", required_argument, 0, CO_THREADS},
    {"every", required_argument, 0, CO_EVERY},
    {"out", required_argument, 0, CO_OUT},
    {"quiet", no_argument, 0, CO_QUIET},
    {"min-rise", required_argument, 0, CO_MIN_RISE},
    {"end-factor", required_argument, 0, CO_END_FACTOR},
    {"floor-factor", required_argument, 0, CO_FLOOR_FACTOR},
    {"event-rho", required_argument, 0, CO_EVENT_RHO},
    {"window-pre", required_argument, 0, CO_WINDOW_PRE},
    {"window-post", required_argument, 0, CO_WINDOW_POST},
    {"checkpoint-every", required_argument, 0, CO_CKPT_EVERY},
    {"resume", required_argument, 0, CO_RESUME},
};

void cli_opts_init(cli_opts *o, const char *default_out)
{
    memset(o, 0, sizeof *o);
    bn_run_config_default(&o->cfg);
    bn_event_params_default(&o->ev);
    o->out_dir = default_out;
}

size_t cli_build_options(struct option *dst, size_t cap, const struct option *extra)
{
    size_t k = 0, nc = sizeof common_options / sizeof common_options[0];
    for (size_t i = 0; i < nc && k + 1 < cap; i++) dst[k++] = common_options[i];
    for (const struct option *e = extra; e && e->name && k + 1 < cap; e++) dst[k++] = *e;
    memset(&dst[k], 0, sizeof dst[k]);
    return k;
}

int cli_num_i64(const char *cmd, const char *opt, const char *s, int64_t lo, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno) return cli_usage_error(cmd, "%s: '%s' is not an integer", opt, s);
    if (v < lo) return cli_usage_error(cmd, "%s must be >= %lld (got %lld)", opt, (long long)lo, v);
    *out = v;
    return 0;
}

int cli_num_double(const char *cmd, const char *opt, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v))
        return cli_usage_error(cmd, "%s: '%s' is not a finite number", opt, s);
    *out = v;
    return 0;
}

int cli_common_option(const char *cmd, int opt, const char *arg, cli_opts *o)
{
    bn_run_config *c = &o->cfg;
    int64_t v;
    int rc = 0;
    switch (opt) {
    case CO_X: o->x = arg; break;
    case CO_Y: o->y = arg; break;
    case CO_CSV: o->csv = arg; break;
    case CO_DATA: o->data = arg; break;
    case CO_W0: o->w0 = arg; break;
    case CO_REF: o->ref = arg; break;
    case CO_LOSS:
        if (bn_parse_loss(arg, &c->loss)) return cli_usage_error(cmd, "--loss: %s", bn_last_error());
        break;
    case CO_PREC:
        if (bn_parse_precision(arg, &c->precision)) return cli_usage_error(cmd, "--precision: %s", bn_last_error());
        break;
    case CO_BACKEND:
        if (bn_parse_backend(arg, &c->backend)) return cli_usage_error(cmd, "--backend: %s", bn_last_error());
        break;
    case CO_ETA_W: rc = cli_num_double(cmd, "--eta-w", arg, &c->eta_w); break;
    case CO_ETA_G: rc = cli_num_double(cmd, "--eta-gamma", arg, &c->eta_gamma); break;
    case CO_GAMMA0: rc = cli_num_double(cmd, "--gamma0", arg, &c->gamma0); break;
    case CO_W0_SCALE: rc = cli_num_double(cmd, "--w0-scale", arg, &c->w0_scale); break;
    case CO_W0_ALIGN: rc = cli_num_double(cmd, "--w0-align", arg, &c->w0_align); break;
    case CO_W0_NOISE: rc = cli_num_double(cmd, "--w0-noise", arg, &c->w0_noise); break;
    case CO_STEPS: rc = cli_num_i64(cmd, "--steps", arg, 1, &c->steps); break;
    case CO_EVERY:
        rc = cli_num_i64(cmd, "--every", arg, 1, &c->every);
        o->every_given = 1;
        break;
    case CO_SEEDS:
        rc = cli_num_i64(cmd, "--seeds", arg, 1, &c->seeds);
        o->seeds_given = 1;
        break;
    case CO_SEED:
        rc = cli_num_i64(cmd, "--seed", arg, 0, &v);
        c->seed = (uint64_t)v;
        break;
    case CO_DEVICE:
        rc = cli_num_i64(cmd, "--device", arg, 0, &v);
        if (!rc && v > 1023) return cli_usage_error(cmd, "--device: %lld is not a device ordinal (0..1023)", (long long)v);
        c->device = (int)v;
        break;
    case CO_THREADS:
        rc = cli_num_i64(cmd, "--threads", arg, 1, &v);
        if (!rc && v > 4096) return cli_usage_error(cmd, "--threads: %lld is more than 4096", (long long)v);
        c->threads = (int)v;
        break;
    case CO_NO_PROJECT: c->project_w0 = 0; break;
    case CO_OUT:
        o->out_dir = arg;
        o->out_given = 1;
        break;
    case CO_CKPT_EVERY: return cli_num_i64(cmd, "--checkpoint-every", arg, 1, &o->ckpt_every);
    case CO_RESUME: o->resume = arg; break;
    case CO_QUIET: o->quiet = 1; break;
    case CO_MIN_RISE:
        rc = cli_num_double(cmd, "--min-rise", arg, &o->ev.min_rise);
        if (!rc && !(o->ev.min_rise > 1)) return cli_usage_error(cmd, "--min-rise must be > 1 (got %s)", arg);
        break;
    case CO_END_FACTOR:
        rc = cli_num_double(cmd, "--end-factor", arg, &o->ev.end_factor);
        if (!rc && !(o->ev.end_factor >= 1)) return cli_usage_error(cmd, "--end-factor must be >= 1 (got %s)", arg);
        break;
    case CO_FLOOR_FACTOR:
        rc = cli_num_double(cmd, "--floor-factor", arg, &o->ev.floor_factor);
        if (!rc && !(o->ev.floor_factor >= 0)) return cli_usage_error(cmd, "--floor-factor must be >= 0 (got %s)", arg);
        break;
    case CO_EVENT_RHO:
        if (strcmp(arg, "rho") == 0) o->ev.use_rho_sigma = 0;
        else if (strcmp(arg, "rho_sigma") == 0 || strcmp(arg, "rho-sigma") == 0) o->ev.use_rho_sigma = 1;
        else return cli_usage_error(cmd, "--event-rho: '%s' is not rho or rho_sigma", arg);
        break;
    case CO_WINDOW_PRE: rc = cli_num_i64(cmd, "--window-pre", arg, 0, &o->ev.window_pre); break;
    case CO_WINDOW_POST: rc = cli_num_i64(cmd, "--window-post", arg, 0, &o->ev.window_post); break;
    default: return -1;
    }
    return rc;
}

int cli_check_data(const char *cmd, cli_opts *o)
{
    int sources = (o->x || o->y) + (o->csv != NULL) + (o->data != NULL);
    if (sources == 0)
        return cli_usage_error(cmd, "no data given: use --x X.npy --y Y.npy, --csv FILE or --data NAME");
    if (sources > 1) return cli_usage_error(cmd, "give only one of --x/--y, --csv and --data");
    if ((o->x != NULL) != (o->y != NULL)) return cli_usage_error(cmd, "--x and --y go together");
    if (o->data) snprintf(o->data_desc, sizeof o->data_desc, "generator %s", o->data);
    else if (o->csv) snprintf(o->data_desc, sizeof o->data_desc, "csv %s", o->csv);
    else snprintf(o->data_desc, sizeof o->data_desc, "npy %s %s", o->x, o->y);
    return 0;
}

bn_status cli_load_dataset(const cli_opts *o, bn_dataset **ds)
{
    if (o->x) return bn_dataset_load_npy(o->x, o->y, ds);
    if (o->csv) return bn_dataset_load_csv(o->csv, ds);
    return bn_dataset_generate(o->data, o->cfg.loss, ds);
}

int cli_load_vectors(cli_opts *o, int64_t d, bn_array *w0, bn_array *ref)
{
    bn_run_config *c = &o->cfg;
    if (o->w0) {
        bn_status st = bn_npy_read(o->w0, w0);
        if (st) return cli_report("--w0", st);
        int64_t rows = w0->ndim == 1 ? 1 : w0->shape[0];
        int64_t cols = w0->ndim == 1 ? w0->shape[0] : (w0->ndim == 2 ? w0->shape[1] : -1);
        if (w0->ndim < 1 || w0->ndim > 2 || cols != d) {
            fprintf(stderr, "bnspike: --w0 %s: expected shape (%lld,) or (S, %lld), got a %d-d array\n",
                    o->w0, (long long)d, (long long)d, w0->ndim);
            return EXIT_RUN_FAILED;
        }
        if (!o->seeds_given && rows > 1) c->seeds = rows;
        if (rows != 1 && rows != c->seeds) {
            fprintf(stderr, "bnspike: --w0 %s has %lld rows but --seeds is %lld\n", o->w0,
                    (long long)rows, (long long)c->seeds);
            return EXIT_RUN_FAILED;
        }
        c->w0 = w0->data;
        c->w0_rows = rows;
    }
    if (o->ref && strcmp(o->ref, "none") == 0) {
        c->skip_reference = 1;
    } else if (o->ref) {
        bn_status st = bn_npy_read(o->ref, ref);
        if (st) return cli_report("--ref", st);
        if (ref->size != d || ref->ndim > 2) {
            fprintf(stderr, "bnspike: --ref %s: expected %lld entries (d), got %lld\n", o->ref,
                    (long long)d, (long long)ref->size);
            return EXIT_RUN_FAILED;
        }
        c->w_ref = ref->data;
    }
    return 0;
}

int cli_make_dirs(const char *path)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) {
        fprintf(stderr, "bnspike: output folder name is too long\n");
        return EXIT_RUN_FAILED;
    }
    for (char *p = tmp + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char ch = *p;
            *p = '\0';
            if (mkdir(tmp, 0777) != 0 && errno != EEXIST) {
                fprintf(stderr, "bnspike: cannot create output folder %s: %s\n", tmp, strerror(errno));
                return EXIT_RUN_FAILED;
            }
            *p = ch;
            if (ch == '\0') break;
        }
    }
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "bnspike: output path %s exists and is not a folder\n", path);
        return EXIT_RUN_FAILED;
    }
    return 0;
}

void cli_text_printf(cli_text *t, const char *fmt, ...)
{
    if (t->failed) return;
    for (;;) {
        size_t room = t->cap - t->len;
        va_list ap;
        va_start(ap, fmt);
        int k = t->buf ? vsnprintf(t->buf + t->len, room, fmt, ap) : -2;
        va_end(ap);
        if (k >= 0 && (size_t)k < room) {
            t->len += (size_t)k;
            return;
        }
        if (k == -1) { /* an encoding error: nothing sensible to add */
            t->failed = 1;
            return;
        }
        size_t need = t->len + (k > 0 ? (size_t)k : 0) + 1;
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < need) cap *= 2;
        if (cap == t->cap) cap *= 2;
        char *b = realloc(t->buf, cap);
        if (!b) {
            t->failed = 1;
            return;
        }
        t->buf = b;
        t->cap = cap;
    }
}

void cli_text_free(cli_text *t)
{
    free(t->buf);
    memset(t, 0, sizeof *t);
}

void cli_text_num(cli_text *t, double v)
{
    if (isnan(v)) cli_text_printf(t, "nan");
    else if (isinf(v)) cli_text_printf(t, v > 0 ? "inf" : "-inf");
    else if (v == floor(v) && fabs(v) < 1e15) cli_text_printf(t, "%.0f", v);
    else {
        /* %.15g when it reads back as v (short and exact), else %.17g. */
        char b[40];
        snprintf(b, sizeof b, "%.15g", v);
        if (strtod(b, NULL) != v) snprintf(b, sizeof b, "%.17g", v);
        cli_text_printf(t, "%s", b);
    }
}

int cli_text_write(const cli_text *t, const char *dir, const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (t->failed) {
        fprintf(stderr, "bnspike: %s: out of memory while assembling the file\n", path);
        return EXIT_RUN_FAILED;
    }
    bn_status st = bn_write_file_atomic(path, t->buf ? t->buf : "", t->len);
    return st ? cli_report(path, st) : 0;
}

void cli_json_header(json_out *j, int argc, char **argv, const char *cmd)
{
    json_string(j, "tool", "bnspike");
    json_string(j, "command", cmd);
    json_string(j, "version", BN_VERSION);
    json_string(j, "git_commit", BN_GIT_COMMIT);
    char when[64];
    time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    json_string(j, "finished_utc", when);
    json_begin_array(j, "command_line");
    json_string(j, NULL, "bnspike");
    for (int i = 0; i < argc; i++) json_string(j, NULL, argv[i]);
    json_end_array(j);
}

void cli_json_config(json_out *j, const bn_run_config *c)
{
    json_begin_object(j, "config");
    json_string(j, "loss", bn_loss_name(c->loss));
    json_string(j, "precision", bn_precision_name(c->precision));
    json_string(j, "backend_requested", bn_backend_name(c->backend));
    json_int(j, "steps", c->steps);
    json_int(j, "every", c->every);
    json_int(j, "seeds", c->seeds);
    json_int(j, "seed", (int64_t)c->seed);
    json_number(j, "eta_w", c->eta_w);
    json_number(j, "eta_gamma", c->eta_gamma);
    json_number(j, "gamma0", c->gamma0);
    if (c->w0) {
        json_string(j, "w0", "explicit (--w0)");
    } else {
        json_number(j, "w0_scale", c->w0_scale);
        json_number(j, "w0_align", c->w0_align);
        json_number(j, "w0_noise", c->w0_noise);
    }
    json_bool(j, "w0_projected_on_row_space", c->project_w0);
    json_string(j, "reference", c->skip_reference ? "none" : c->w_ref ? "given (--ref)"
                                : c->loss == BN_LOSS_SQUARE ? "least squares (min-norm)"
                                                            : "hard-margin SVM (centered, no bias)");
    json_end_object(j);
}

void cli_json_data(json_out *j, const cli_opts *o, const bn_dataset *ds)
{
    json_begin_object(j, "data");
    json_string(j, "source", o->data_desc);
    json_string(j, "name", bn_dataset_name(ds));
    json_int(j, "n", bn_dataset_n(ds));
    json_int(j, "d", bn_dataset_d(ds));
    char sum[32];
    snprintf(sum, sizeof sum, "%016llx", (unsigned long long)bn_dataset_checksum(ds));
    json_string(j, "checksum_fnv1a64", sum);
    json_end_object(j);
}

void cli_json_reference(json_out *j, const bn_ref_info *r, int skipped)
{
    json_begin_object(j, "reference_info");
    if (skipped) {
        json_bool(j, "computed", 0);
    } else {
        json_string(j, "kind", r->kind ? "svm" : "least_squares");
        json_number(j, "residual", r->residual);
        json_number(j, "kkt_violation", r->kkt_violation);
        json_int(j, "rank", r->rank);
        if (r->kind) {
            json_int(j, "n_support", r->n_support);
            json_bool(j, "all_active", r->all_active);
        }
    }
    json_end_object(j);
}

void cli_json_events(json_out *j, const bn_event_params *p, bn_precision prec)
{
    json_begin_object(j, "events");
    json_string(j, "series", p->use_rho_sigma ? "rho_sigma" : "rho");
    json_number(j, "min_rise", p->min_rise);
    json_number(j, "end_factor", p->end_factor);
    json_number(j, "floor_factor", p->floor_factor);
    json_number(j, "unit_roundoff", bn_unit_roundoff(prec));
    json_number(j, "floor", p->floor_factor * bn_unit_roundoff(prec));
    json_int(j, "window_pre", p->window_pre);
    json_int(j, "window_post", p->window_post);
    json_string(j, "definitions", "see `bnspike sweep --help` and include/bnspike.h");
    json_end_object(j);
}
