/* `bnspike theory`: MODEL.md's exact three-variable map iterated from the
 * start of each trajectory (the same w0 as `bnspike run` with the same
 * options), its spike events, and with --compare the full simulation's events
 * beside them. */
#include "common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char theory_head[] =
    "usage: bnspike theory DATA [options] [--compare] [--out DIR]\n"
    "\n"
    "Iterates MODEL.md's three-variable map (the paper's Lemmas 1 and 7)\n"
    "    a' = a + eta_w g B b^2/N^3,  b' = b |1 - eta_w g B a/N^3|,\n"
    "    g' = g - eta_gamma (g - B a/N),   N = sqrt(a^2 + b^2),  B = |w_LS|_Sigma\n"
    "from each trajectory's start (alpha_Sigma, beta_Sigma of w0, gamma0: the same\n"
    "w0 as `bnspike run` with the same options) and reports the map's spikes.  The\n"
    "map is exact for whitened square-loss data (Sigma = I); on other square-loss\n"
    "data it is the whitened model in the Sigma geometry, and its difference from\n"
    "the simulation is a finding.  The loss uses Lemma 1, exact for any data.\n"
    "\n"
    "  --compare                also run the full simulation (every step) and print\n"
    "                           its spikes beside the map's, with the differences\n"
    "  --out DIR                write DIR/theory.npz (the map's alpha beta gamma rho\n"
    "                           loss eta_eff kappa rise_pred, S×records, on steps 0,\n"
    "                           K, 2K, ..., T with --every K; its events th_ev_*; with\n"
    "                           --compare the simulation's ev_*), DIR/theory.csv (one\n"
    "                           row per spike and source) and DIR/run.json\n"
    "  --every K                record interval of theory.npz (1)\n"
    "  --w0 W0.npy              explicit start, shape d or S×d\n"
    "  -h, --help               this text\n"
    "\n";

enum { O_COMPARE = CO_END };
static const struct option theory_extra[] = {
    {"compare", no_argument, 0, O_COMPARE},
    {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0}};

typedef struct {
    cli_opts o;
    int compare;
    int argc;
    char **argv;
} theory_req;

static int parse_theory(int argc, char **argv, theory_req *r)
{
    struct option opts[64];
    cli_build_options(opts, 64, theory_extra);
    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        int rc = cli_common_option("theory", opt, optarg, &r->o);
        if (rc > 0) return rc;
        if (rc == 0) continue;
        switch (opt) {
        case O_COMPARE: r->compare = 1; break;
        case 'h':
            fputs(theory_head, stdout);
            fputs(cli_data_help, stdout);
            fputs("\n", stdout);
            fputs(cli_events_help, stdout);
            return -1;
        case ':': return cli_usage_error("theory", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage_error("theory", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("theory", "unexpected argument '%s'", argv[optind]);
    if (r->o.cfg.loss != BN_LOSS_SQUARE)
        return cli_usage_error("theory", "the three-variable map is the square-loss model (got --loss %s)",
                               bn_loss_name(r->o.cfg.loss));
    if (r->o.ref && strcmp(r->o.ref, "none") == 0)
        return cli_usage_error("theory", "--ref none leaves no direction to measure alpha and beta against");
    if (r->o.ckpt_every || r->o.resume)
        return cli_usage_error("theory", "--checkpoint-every and --resume are for run and sweep (theory runs in seconds)");
    return cli_check_data("theory", &r->o);
}

typedef struct {
    bn_events *ev;
    double *alpha0, *beta0;
    int af, bf;
} start_ctx;

static int start_observer(void *user, int64_t step, const double *const *fields, int64_t S)
{
    start_ctx *c = user;
    if (step == 0)
        for (int64_t j = 0; j < S; j++) {
            c->alpha0[j] = fields[c->af][j];
            c->beta0[j] = fields[c->bf][j];
        }
    return c->ev ? bn_events_observer(c->ev, step, fields, S) : 0;
}

static int find_field(const char *name)
{
    for (int f = 0; f < bn_sim_n_fields(); f++)
        if (strcmp(bn_sim_field_name(f), name) == 0) return f;
    return -1;
}

static void print_spike(const char *src, int64_t j, int64_t k, const bn_spike_event *e)
{
    printf("%5lld %5lld %7s %7lld %7lld %7lld %11.4e %11.4e %10.5g %6s", (long long)j, (long long)k, src,
           (long long)e->onset_step, (long long)e->peak_step, (long long)e->end_step, e->rho_min, e->rho_peak,
           e->loss_ratio, e->floor_before_onset ? "yes" : "no");
}

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-300); }

static void csv_event(cli_text *t, int64_t j, int64_t k, const char *src, const bn_spike_event *e)
{
    const bn_struct_field *fl;
    int n = bn_spike_event_fields(&fl);
    cli_text_printf(t, "%lld,%lld,%s", (long long)j, (long long)k, src);
    for (int c = 0; c < n; c++) {
        cli_text_printf(t, ",");
        cli_text_num(t, bn_struct_field_get(e, &fl[c]));
    }
    cli_text_printf(t, "\n");
}

int cmd_theory(int argc, char **argv)
{
    theory_req r;
    memset(&r, 0, sizeof r);
    cli_opts_init(&r.o, NULL);
    r.argc = argc;
    r.argv = argv;
    int rc = parse_theory(argc, argv, &r);
    if (rc) return rc < 0 ? 0 : rc;
    if (cli_parse_only) return 0;

    bn_dataset *ds = NULL;
    bn_array w0 = {0}, ref = {0};
    bn_sim *sim = NULL;
    bn_events *sev = NULL, *th = NULL;
    double *alpha0 = NULL, *beta0 = NULL, *series = NULL;
    bn_status st = cli_load_dataset(&r.o, &ds);
    if (st) return cli_report("data", st);
    rc = cli_load_vectors(&r.o, bn_dataset_d(ds), &w0, &ref);
    if (rc) goto done;
    bn_run_config cfg = r.o.cfg;
    int64_t T = cfg.steps, S = cfg.seeds, K = cfg.every;
    bn_theory_data td;
    st = bn_theory_data_compute(ds, &td);
    if (st) {
        rc = cli_report("theory", st);
        goto done;
    }
    /* The start (and with --compare the whole run) from the simulation itself. */
    cfg.steps = r.compare ? T : 1;
    cfg.every = cfg.steps;
    alpha0 = malloc((size_t)S * sizeof(double));
    beta0 = malloc((size_t)S * sizeof(double));
    if (!alpha0 || !beta0) {
        fprintf(stderr, "bnspike: theory: out of memory\n");
        rc = EXIT_RUN_FAILED;
        goto done;
    }
    st = bn_sim_create(ds, &cfg, &sim);
    if (!st && r.compare) st = bn_events_create(S, &r.o.ev, cfg.precision, td.B, &sev);
    if (st) {
        rc = cli_report("theory", st);
        goto done;
    }
    start_ctx sc = {.ev = sev, .alpha0 = alpha0, .beta0 = beta0, .af = find_field("alpha_sigma"),
                    .bf = find_field("beta_sigma")};
    cli_progress prog;
    cli_progress_init(&prog, r.o.quiet || !r.compare, S);
    st = bn_sim_run_observed(sim, cli_progress_cb, &prog, start_observer, &sc);
    cli_progress_done(&prog);
    if (!st && sev) {
        bn_events_finish(sev);
        st = bn_events_attach_sharpness(sev, sim, 0);
    }
    if (!st) st = bn_events_create(S, &r.o.ev, BN_FP64, td.B, &th);
    int64_t R = T / K + 1 + (T % K != 0); /* steps 0, K, 2K, ..., T */
    if (!st && r.o.out_dir) {
        series = malloc((size_t)(T + 1) * BN_THEORY_NSERIES * sizeof(double));
        if (!series) st = BN_ERR_NOMEM;
    }
    double *out_series = NULL;
    if (!st && r.o.out_dir) {
        out_series = malloc((size_t)S * (size_t)R * BN_THEORY_NSERIES * sizeof(double) + 1);
        if (!out_series) st = BN_ERR_NOMEM;
    }
    for (int64_t j = 0; !st && j < S; j++) {
        st = bn_theory_run(&td, cfg.eta_w, cfg.eta_gamma, alpha0[j], beta0[j], cfg.gamma0, T, th, j, series);
        if (!st && series) {
            int64_t k = 0;
            for (int64_t t = 0; t <= T; t++) {
                if (!(t % K == 0 || t == T)) continue;
                for (int q = 0; q < BN_THEORY_NSERIES; q++)
                    out_series[((size_t)q * (size_t)S + (size_t)j) * (size_t)R + (size_t)k] =
                        series[(size_t)t * BN_THEORY_NSERIES + (size_t)q];
                k++;
            }
        }
    }
    if (!st) bn_events_finish(th);
    if (st) {
        free(out_series);
        rc = cli_report("theory", st);
        goto done;
    }

    if (!r.o.quiet) {
        printf("bnspike theory: %s n=%lld d=%lld, B = |w_LS|_Sigma = %.6g, max|Sigma - I| = %.2e: %s\n",
               bn_dataset_name(ds), (long long)bn_dataset_n(ds), (long long)bn_dataset_d(ds), td.B, td.sigma_dev,
               td.whitened ? "whitened, the map is exact" : "NOT whitened, the map is the whitened model only");
        printf("%5s %5s %7s %7s %7s %7s %11s %11s %10s %6s\n", "traj", "spike", "source", "onset", "peak", "end",
               "rho_min", "rho_peak", "loss_ratio", "floor");
    }
    int64_t same_count = 0, steps_same = 0, compared = 0;
    double worst_rel = 0;
    for (int64_t j = 0; j < S; j++) {
        int64_t nt = bn_events_count(th, j), ns = sev ? bn_events_count(sev, j) : 0;
        same_count += nt == ns;
        int64_t nmax = nt > ns ? nt : ns;
        for (int64_t k = 0; k < nmax; k++) {
            const bn_spike_event *a = bn_events_get(th, j, k), *b = sev ? bn_events_get(sev, j, k) : NULL;
            if (!r.o.quiet && k < 5) {
                if (a) {
                    print_spike("theory", j, k, a);
                    printf("\n");
                }
                if (b) {
                    print_spike("sim", j, k, b);
                    if (a) printf("  d(rho_peak)/rho %.1e", rel(b->rho_peak, a->rho_peak));
                    printf("\n");
                }
            }
            if (a && b) {
                compared++;
                steps_same += a->onset_step == b->onset_step && a->peak_step == b->peak_step &&
                              a->end_step == b->end_step;
                worst_rel = fmax(worst_rel, rel(b->rho_peak, a->rho_peak));
            }
        }
        if (!r.o.quiet && nmax == 0) printf("%5lld     -  no spike in %lld steps\n", (long long)j, (long long)T);
    }
    if (!r.o.quiet && sev)
        printf("theory vs simulation: same number of spikes in %lld of %lld trajectories; same onset, peak and "
               "end steps in %lld of %lld spikes; max relative difference of peak rho %.2e\n",
               (long long)same_count, (long long)S, (long long)steps_same, (long long)compared, worst_rel);

    if (r.o.out_dir) {
        rc = cli_make_dirs(r.o.out_dir);
        bn_npz *z = NULL;
        if (!rc) st = bn_npz_create(&z);
        int64_t shp[2] = {S, R}, one[1] = {R};
        int64_t *steps = malloc((size_t)R * sizeof(int64_t) + 1);
        if (!steps && !st) st = BN_ERR_NOMEM;
        if (!rc && !st) {
            int64_t k = 0;
            for (int64_t t = 0; t <= T; t++)
                if (t % K == 0 || t == T) steps[k++] = t;
            st = bn_npz_add_i64(z, "step", steps, 1, one);
        }
        for (int q = 0; !rc && !st && q < BN_THEORY_NSERIES; q++)
            st = bn_npz_add_f64(z, bn_theory_series_name(q), out_series + (size_t)q * (size_t)S * (size_t)R, 2, shp);
        if (!rc && !st) st = bn_events_add_npz(th, "th_", z);
        if (!rc && !st && sev) st = bn_events_add_npz(sev, "", z);
        double scal[1] = {td.B};
        int64_t s1[1] = {1};
        if (!rc && !st) st = bn_npz_add_f64(z, "kappa_scale", scal, 1, s1);
        char path[4200];
        snprintf(path, sizeof path, "%s/theory.npz", r.o.out_dir);
        if (!rc && !st) st = bn_npz_write(z, path);
        if (!rc && st) rc = cli_report(path, st);
        bn_npz_free(z);
        free(steps);
        if (!rc) {
            cli_text t = {0};
            const bn_struct_field *fl;
            int n = bn_spike_event_fields(&fl);
            cli_text_printf(&t, "traj,spike,source");
            for (int c = 0; c < n; c++) cli_text_printf(&t, ",%s", fl[c].name);
            cli_text_printf(&t, "\n");
            for (int64_t j = 0; j < S; j++) {
                for (int64_t k = 0; k < bn_events_count(th, j); k++) csv_event(&t, j, k, "theory", bn_events_get(th, j, k));
                for (int64_t k = 0; sev && k < bn_events_count(sev, j); k++)
                    csv_event(&t, j, k, "sim", bn_events_get(sev, j, k));
            }
            rc = cli_text_write(&t, r.o.out_dir, "theory.csv");
            cli_text_free(&t);
        }
        if (!rc) {
            json_out j;
            json_init(&j);
            json_begin_object(&j, NULL);
            cli_json_header(&j, r.argc, r.argv, "theory");
            cli_json_config(&j, &r.o.cfg);
            cli_json_events(&j, &r.o.ev, r.o.cfg.precision);
            cli_json_data(&j, &r.o, ds);
            cli_json_reference(&j, bn_sim_ref_info(sim), 0);
            json_begin_object(&j, "theory");
            json_bool(&j, "exact", td.whitened);
            json_number(&j, "sigma_max_deviation", td.sigma_dev);
            json_number(&j, "B", td.B);
            json_number(&j, "L_star", td.lstar);
            json_end_object(&j);
            json_bool(&j, "compared_with_simulation", sev != NULL);
            if (sev) {
                json_int(&j, "trajectories_with_same_spike_count", same_count);
                json_int(&j, "spikes_with_same_steps", steps_same);
                json_int(&j, "spikes_compared", compared);
                json_number(&j, "max_rel_diff_rho_peak", worst_rel);
                json_string(&j, "backend_detail", bn_sim_backend_desc(sim));
            }
            json_end_object(&j);
            cli_text t = {.buf = j.buf, .len = j.len, .cap = j.cap, .failed = j.failed};
            rc = cli_text_write(&t, r.o.out_dir, "run.json");
            json_free(&j);
        }
        if (!rc && !r.o.quiet) printf("wrote %s/theory.npz, theory.csv, run.json\n", r.o.out_dir);
    }
    free(out_series);
done:
    bn_events_free(th);
    bn_events_free(sev);
    bn_sim_free(sim);
    bn_dataset_free(ds);
    bn_array_free(&w0);
    bn_array_free(&ref);
    free(alpha0);
    free(beta0);
    free(series);
    return rc;
}
