/* `bnspike run` and `bnspike demo`: parse the options (the shared ones of
 * common.c plus the sharpness flags), load the data, run with the adaptive
 * recorder as the step observer (every K-th step plus every step around each
 * spike; the spike events on every step), write the outputs and print each
 * trajectory's first spike.  Everything is checked before the output folder
 * is touched, so a bad request leaves nothing behind. */
#include "common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char run_head[] =
    "usage: bnspike run DATA [options]\n"
    "\n"
    "Simulates S trajectories of full-batch gradient descent on a batch-normalized\n"
    "linear model that share one data set, finds the spike events of each on\n"
    "every step, and writes DIR/trajectories.npz and DIR/run.json.\n"
    "\n"
    "  --every K                record steps 0, K, 2K, ..., T, plus every step in a\n"
    "                           window around each spike (--window-pre/--window-post)\n"
    "                           and before a divergence (1: every step)\n"
    "  --w0 W0.npy              explicit start, shape d or S×d\n"
    "  --out DIR                output folder (bnspike-out)\n"
    "  -h, --help               this text\n"
    "\n";

static const char run_sharpness_help[] =
    "sharpness (eigenvalues of the Hessian H of L in (w, gamma) at the state of a\n"
    "step, before its update; all trajectories at once, exact HVPs, no autograd):\n"
    "  --sharpness-every K      at steps 0, K, 2K, ... and the last (0 = off): arrays\n"
    "                           sharpness = lambda_max(H), sharpness_weighted =\n"
    "                           lambda_max(P^1/2 H P^1/2), P = diag(eta_w I, eta_gamma)\n"
    "                           (hold it against 2), sharpness_sphere = the same on\n"
    "                           directions orthogonal to (w, 0), and sharpness_step:\n"
    "                           S×Rs, the records on the --every schedule and in the\n"
    "                           spike windows (sharpness_records[j] used, NaN after);\n"
    "                           sharpness_iters, sharpness_converged, sharpness_shift\n"
    "                           cover every record, at the steps sharpness_step_all\n"
    "  --sharpness power|exact  shifted power iteration, warm-started from the last\n"
    "                           record (power; for the square loss on the Hessian's\n"
    "                           O(d) form in the data's singular basis, each value\n"
    "                           checked by an exact eigenvalue count); or the dense\n"
    "                           Hessian and LAPACK, d <= 1024 (exact)\n"
    "  --sharpness-tol X        relative accuracy that stops the power iteration:\n"
    "                           the value's change, or the residual bound\n"
    "                           |r|^2/gap (1e-6)\n"
    "  --sharpness-maxiter N    Hessian-vector products per power iteration (1000)\n"
    "  --sharpness-sphere weighted|plain\n"
    "                           sharpness_sphere from P^1/2 H P^1/2 or from H (weighted)\n"
    "  --eigs k                 also the top-k eigenvalues per record (Lanczos with full\n"
    "                           reorthogonalization; exact method: LAPACK): array eigs\n"
    "  --eigs-of hessian|weighted|sphere\n"
    "                           the operator of --eigs (hessian)\n"
    "  --eigs-maxiter M         Lanczos basis size limit (0 = min(d+1, 6k+60))\n"
    "\n";

static const char run_tail[] =
    "\n"
    "Load the result in Python with: z = numpy.load('DIR/trajectories.npz')\n"
    "(record arrays are S×R: row j's first z['records'][j] columns, NaN after).\n";

enum {
    O_SH_EVERY = CO_END, O_SH_METHOD, O_SH_TOL, O_SH_MAXIT, O_SH_SPHERE, O_EIGS, O_EIGS_OF, O_EIGS_MAXIT
};

static const struct option run_extra[] = {
    {"sharpness-every", required_argument, 0, O_SH_EVERY},
    {"sharpness", required_argument, 0, O_SH_METHOD},
    {"sharpness-tol", required_argument, 0, O_SH_TOL},
    {"sharpness-maxiter", required_argument, 0, O_SH_MAXIT},
    {"sharpness-sphere", required_argument, 0, O_SH_SPHERE},
    {"eigs", required_argument, 0, O_EIGS},
    {"eigs-of", required_argument, 0, O_EIGS_OF},
    {"eigs-maxiter", required_argument, 0, O_EIGS_MAXIT},
    {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0}};

#define NOT_RUN_OPTION (-2)

/* The options that are not shared: sharpness and help.  0: handled; -1: help
 * printed; NOT_RUN_OPTION; else an exit code (message printed). */
static int run_option(int opt, const char *arg, bn_run_config *c)
{
    switch (opt) {
    case O_SH_EVERY: return cli_num_i64("run", "--sharpness-every", arg, 0, &c->sharpness_every);
    case O_SH_METHOD:
        if (strcmp(arg, "power") == 0) c->sharpness_method = BN_SHARPNESS_POWER;
        else if (strcmp(arg, "exact") == 0) c->sharpness_method = BN_SHARPNESS_EXACT;
        else return cli_usage_error("run", "--sharpness: expected power or exact, got '%s'", arg);
        return 0;
    case O_SH_TOL: {
        int rc = cli_num_double("run", "--sharpness-tol", arg, &c->sharpness_tol);
        if (!rc && !(c->sharpness_tol > 0 && c->sharpness_tol < 1))
            return cli_usage_error("run", "--sharpness-tol must be in (0, 1), got %s", arg);
        return rc;
    }
    case O_SH_MAXIT: return cli_num_i64("run", "--sharpness-maxiter", arg, 1, &c->sharpness_maxiter);
    case O_SH_SPHERE:
        if (strcmp(arg, "weighted") == 0) c->sharpness_sphere_plain = 0;
        else if (strcmp(arg, "plain") == 0) c->sharpness_sphere_plain = 1;
        else return cli_usage_error("run", "--sharpness-sphere: expected weighted or plain, got '%s'", arg);
        return 0;
    case O_EIGS: return cli_num_i64("run", "--eigs", arg, 0, &c->eigs);
    case O_EIGS_OF:
        if (strcmp(arg, "hessian") == 0) c->eigs_operator = BN_EIGS_HESSIAN;
        else if (strcmp(arg, "weighted") == 0) c->eigs_operator = BN_EIGS_WEIGHTED;
        else if (strcmp(arg, "sphere") == 0) c->eigs_operator = BN_EIGS_SPHERE;
        else return cli_usage_error("run", "--eigs-of: expected hessian, weighted or sphere, got '%s'", arg);
        return 0;
    case O_EIGS_MAXIT: return cli_num_i64("run", "--eigs-maxiter", arg, 0, &c->eigs_maxiter);
    case 'h':
        fputs(run_head, stdout);
        fputs(cli_data_help, stdout);
        fputs("\n", stdout);
        fputs(run_sharpness_help, stdout);
        fputs(cli_events_help, stdout);
        fputs(run_tail, stdout);
        return -1;
    default: return NOT_RUN_OPTION;
    }
}

/* 0: parsed; -1: help printed; else an exit code (message printed). */
static int parse_run(int argc, char **argv, cli_opts *o)
{
    struct option opts[64];
    cli_build_options(opts, 64, run_extra);
    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        int rc = cli_common_option("run", opt, optarg, o);
        if (rc > 0) return rc;
        if (rc == 0) continue;
        if (opt == ':') return cli_usage_error("run", "option %s needs a value", argv[optind - 1]);
        rc = run_option(opt, optarg, &o->cfg);
        if (rc == NOT_RUN_OPTION) return cli_usage_error("run", "unknown option '%s'", argv[optind - 1]);
        if (rc) return rc;
    }
    if (optind < argc) return cli_usage_error("run", "unexpected argument '%s'", argv[optind]);
    int rc = cli_check_data("run", o);
    if (rc) return rc;
    if (o->cfg.eigs > 0 && o->cfg.sharpness_every == 0)
        return cli_usage_error("run", "--eigs needs --sharpness-every K (the steps to compute them at)");
    return 0;
}

/* Each trajectory's first spike (events on every step, so steps, not records). */
static void print_summary(const bn_sim *sim, const bn_recorder *rec, int64_t steps, int64_t max_rows)
{
    const bn_events *ev = bn_recorder_events(rec);
    const int64_t *div = bn_sim_diverged_step(sim);
    int64_t S = bn_events_trajectories(ev);
    printf("%6s %8s %8s %11s %11s %10s %10s %8s %8s\n", "traj", "onset", "peak", "rho_onset",
           "rho_peak", "loss_pre", "loss_spk", "|w|_pre", "|w|_post");
    int64_t spiked = 0;
    for (int64_t j = 0; j < S; j++) {
        const bn_spike_event *e = bn_events_get(ev, j, 0);
        spiked += bn_events_summary(ev, j)->n_spikes > 0;
        if (j >= max_rows) continue;
        if (div[j] >= 0) printf("%6lld  diverged at step %lld\n", (long long)j, (long long)div[j]);
        else if (!e) printf("%6lld  no spike in %lld steps\n", (long long)j, (long long)steps);
        else
            printf("%6lld %8lld %8lld %11.3e %11.3e %10.4g %10.4g %8.4g %8.4g\n", (long long)j,
                   (long long)e->onset_step, (long long)e->peak_step, e->rho_onset, e->rho_peak,
                   e->loss_before, e->loss_spike, e->wnorm_onset, e->wnorm_end);
    }
    if (S > max_rows) printf("... %lld more trajectories\n", (long long)(S - max_rows));
    printf("%lld of %lld trajectories spiked\n", (long long)spiked, (long long)S);
}

/* Disk for trajectories.npz and a checkpoint (replaced atomically, so twice)
 * on the regular schedule; spike windows add to it. */
static double run_output_bytes(const cli_opts *o, int64_t d)
{
    double S = (double)o->cfg.seeds, R = (double)(o->cfg.steps / o->cfg.every + 2);
    double rows = S * R * (double)bn_sim_n_fields() * 8.0;
    double ring = S * (double)(o->ev.window_pre + 1) * (double)bn_sim_n_fields() * 8.0;
    double state = S * (double)d * 8.0;
    return 3.0 * (rows + 2.0 * state) + 2.0 * ring + (1 << 20);
}

/* Runs a parsed request end to end; shared by `run` and `demo`.  With show,
 * prints title (when given), the spike table and the files written. */
static int execute(cli_run *run, const char *title, int show)
{
    cli_opts *o = &run->o;
    bn_dataset *ds = NULL;
    bn_array w0 = {0}, ref = {0};
    bn_sim *sim = NULL;
    bn_recorder *rec = NULL;
    cli_ckpt_paths ckpt;
    int rc = cli_resume_setup("run", o, &ckpt);
    if (rc) return rc;
    bn_status st = cli_load_dataset(o, &ds);
    if (st) return cli_report("data", st);
    rc = cli_load_vectors(o, bn_dataset_d(ds), &w0, &ref);
    if (!rc) {
        bn_run_config simcfg = o->cfg;
        simcfg.every = simcfg.steps; /* the recorder keeps the records; the sim only t = 0 and T */
        st = bn_sim_create(ds, &simcfg, &sim);
        bn_recorder_config rcfg = {.every = o->cfg.every, .keep = 1, .events = o->ev};
        if (!st) st = bn_recorder_create(ds, &o->cfg, sim, &rcfg, NAN, &rec);
        if (st) rc = cli_report("run", st);
    }
    /* Only a request that passed every check may create the output folder. */
    int created = 0;
    if (!rc) rc = cli_prepare_output(o->out_dir, run_output_bytes(o, bn_dataset_d(ds)), "the outputs and checkpoints", &created);
    if (!rc) {
        if (!o->quiet)
            fprintf(stderr, "bnspike: %s n=%lld d=%lld, %lld trajectories × %lld steps, %s, %s\n",
                    bn_dataset_name(ds), (long long)bn_dataset_n(ds), (long long)bn_dataset_d(ds),
                    (long long)o->cfg.seeds, (long long)o->cfg.steps, bn_precision_name(o->cfg.precision),
                    bn_sim_backend_desc(sim));
        cli_progress prog;
        cli_progress_init(&prog, o->quiet, o->cfg.seeds);
        bn_checkpoint_config ck = cli_checkpoint_config(o, &ckpt, "command=run");
        st = bn_recorder_run_checkpointed(rec, sim, ds, cli_progress_cb, &prog, &ck);
        cli_progress_done(&prog);
        run->resumed_step = ck.resumed_step;
        if (o->resume && !o->quiet && !st)
            fprintf(stderr, "bnspike: resumed from step %lld of %s\n", (long long)ck.resumed_step, ck.resume);
        if (st == BN_ERR_INTERRUPTED && cli_stop_signal()) {
            run->partial = 1;
            run->stopped_step = bn_sim_next_step(sim);
        } else if (st) {
            rc = cli_report("run", st);
            cli_output_discard(o->out_dir, created);
        }
    }
    if (!rc) rc = cli_write_outputs(run, ds, sim, rec);
    if (!rc && run->partial) {
        fprintf(stderr, "bnspike: stopped at step %lld: wrote the partial outputs and %s; continue with the same "
                        "command plus --resume %s\n", (long long)run->stopped_step, ckpt.write, o->out_dir);
        rc = cli_signal_exit_code();
    } else if (!rc) cli_checkpoint_remove(ckpt.write);
    if (!rc && show) {
        if (title) puts(title);
        print_summary(sim, rec, o->cfg.steps, 10);
        printf("wrote %s/trajectories.npz and %s/run.json\n", o->out_dir, o->out_dir);
    }
    bn_recorder_free(rec);
    bn_sim_free(sim);
    bn_dataset_free(ds);
    bn_array_free(&w0);
    bn_array_free(&ref);
    return rc;
}

static void init_run(cli_run *run, int argc, char **argv, const char *out_dir)
{
    memset(run, 0, sizeof *run);
    cli_opts_init(&run->o, out_dir);
    run->argc = argc;
    run->argv = argv;
}

int cmd_run(int argc, char **argv)
{
    cli_run run;
    init_run(&run, argc, argv, "bnspike-out");
    int rc = parse_run(argc, argv, &run.o);
    if (rc) return rc < 0 ? 0 : rc;
    if (cli_parse_only) return 0;
    cli_signals_install();
    return execute(&run, NULL, !run.o.quiet);
}

/* The embedded default: MODEL.md's delayed-spike example on whitened data. */
#define DEMO_DATA "whitened:n=400,d=20,noise=0.5,wnorm=4,seed=1"

int cmd_demo(int argc, char **argv)
{
    cli_run run;
    init_run(&run, argc, argv, "demo-out");
    /* The demo is exactly this `run` (options in pairs), on the CPU backend. */
    char *args[] = {"demo", "--data", DEMO_DATA, "--steps", "200", "--seeds", "2",
                    "--eta-w", "0.9", "--eta-gamma", "0.05", "--gamma0", "0.1",
                    "--w0-scale", "0.5", "--w0-align", "1", "--w0-noise", "0.05",
                    "--backend", "cpu", NULL};
    int nargs = (int)(sizeof args / sizeof args[0]) - 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) run.o.out_dir = argv[++i];
        else if (strcmp(argv[i], "--quiet") == 0) run.o.quiet = 1;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("usage: bnspike demo [--out DIR] [--quiet]\n\n"
                   "Runs MODEL.md's delayed-spike example: whitened square-loss data\n"
                   "(%s),\n2 seeds, w0 = 0.5(ê + 0.05ξ), gamma0 = 0.1, eta_w = 0.9, eta_gamma = 0.05,\n"
                   "200 steps, and prints each trajectory's spike.  Same as:\n  bnspike run",
                   DEMO_DATA);
            for (int k = 1; k < nargs; k++) printf("%s%s", k > 1 && (k - 1) % 6 == 0 ? " \\\n   " : " ", args[k]);
            printf(" --out demo-out\n");
            return 0;
        } else return cli_usage_error("demo", "unknown argument '%s'", argv[i]);
    }
    const char *out_dir = run.o.out_dir;
    int quiet = run.o.quiet;
    int rc = parse_run(nargs, args, &run.o);
    if (rc) return rc < 0 ? 0 : rc;
    if (cli_parse_only) return 0;
    run.o.out_dir = out_dir;
    run.o.quiet = quiet;
    return execute(&run, "bnspike demo: delayed loss spikes on whitened square-loss data (MODEL.md example)", 1);
}
