/* `bnspike run`: parse the options into a run request, load the data, run,
 * write the outputs.  Everything is checked before the output folder is
 * touched, so a bad request leaves nothing behind. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char run_help[] =
    "usage: bnspike run DATA [options]\n"
    "\n"
    "Simulates S trajectories of full-batch gradient descent on a batch-normalized\n"
    "linear model that share one data set, and writes DIR/trajectories.npz and\n"
    "DIR/run.json.\n"
    "\n"
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
    "  --steps T                number of GD updates; records cover t=0..T (1000)\n"
    "start:\n"
    "  --seeds S                trajectories, each with its own random w0 (1)\n"
    "  --seed N                 trajectory j uses seed id N+j (0)\n"
    "  --w0-scale C             w0 = C·(A·ê + B·ξ), ξ ~ N(0, I_d) (1)\n"
    "  --w0-align A             weight of the reference direction ê in w0 (0)\n"
    "  --w0-noise B             weight of the random part ξ (1)\n"
    "  --w0 W0.npy              explicit start, shape d or S×d\n"
    "  --no-project             keep w0 as given (default: project it on the row\n"
    "                           space of the centered data, as the paper assumes)\n"
    "  --ref W.npy|none         reference direction (default: least squares for\n"
    "                           square loss, hard-margin SVM for logistic)\n"
    "execution and output:\n"
    "  --precision fp64|fp32    (fp64)\n"
    "  --backend auto|cpu|cuda  (auto: CUDA when a device is present)\n"
    "  --device N               CUDA device ordinal (0)\n"
    "  --threads N              CPU threads (all cores)\n"
    "  --every K                record step 0, every K-th step and the last (1)\n"
    "  --out DIR                output folder (bnspike-out)\n"
    "  --quiet                  no progress line\n"
    "  -h, --help               this text\n"
    "sharpness (eigenvalues of the Hessian H of L in (w, gamma) at the state of a\n"
    "step, before its update; all trajectories at once, exact HVPs, no autograd):\n"
    "  --sharpness-every K      at steps 0, K, 2K, ... and the last (0 = off): arrays\n"
    "                           sharpness = lambda_max(H), sharpness_weighted =\n"
    "                           lambda_max(P^1/2 H P^1/2), P = diag(eta_w I, eta_gamma)\n"
    "                           (hold it against 2), sharpness_sphere = the same on\n"
    "                           directions orthogonal to (w, 0), sharpness_iters,\n"
    "                           sharpness_converged, sharpness_shift, sharpness_step\n"
    "  --sharpness power|exact  shifted power iteration, warm-started from the last\n"
    "                           record (power); or the dense Hessian and LAPACK,\n"
    "                           d <= 1024 (exact)\n"
    "  --sharpness-tol X        relative change that stops the power iteration (1e-6)\n"
    "  --sharpness-maxiter N    Hessian-vector products per power iteration (1000)\n"
    "  --sharpness-sphere weighted|plain\n"
    "                           sharpness_sphere from P^1/2 H P^1/2 or from H (weighted)\n"
    "  --eigs k                 also the top-k eigenvalues per record (Lanczos with full\n"
    "                           reorthogonalization; exact method: LAPACK): array eigs\n"
    "  --eigs-of hessian|weighted|sphere\n"
    "                           the operator of --eigs (hessian)\n"
    "  --eigs-maxiter M         Lanczos basis size limit (0 = min(d+1, 6k+60))\n"
    "\n"
    "Load the result in Python with: z = numpy.load('DIR/trajectories.npz')\n";

enum {
    O_X = 256, O_Y, O_CSV, O_DATA, O_LOSS, O_ETA_W, O_ETA_G, O_GAMMA0, O_STEPS, O_SEEDS, O_SEED,
    O_W0_SCALE, O_W0_ALIGN, O_W0_NOISE, O_W0, O_NO_PROJECT, O_REF, O_PREC, O_BACKEND, O_DEVICE,
    O_THREADS, O_EVERY, O_OUT, O_QUIET, O_SH_EVERY, O_SH_METHOD, O_SH_TOL, O_SH_MAXIT, O_SH_SPHERE,
    O_EIGS, O_EIGS_OF, O_EIGS_MAXIT
};

static const struct option run_options[] = {
    {"x", required_argument, 0, O_X},
    {"y", required_argument, 0, O_Y},
    {"csv", required_argument, 0, O_CSV},
    {"data", required_argument, 0, O_DATA},
    {"loss", required_argument, 0, O_LOSS},
    {"eta-w", required_argument, 0, O_ETA_W},
    {"eta-gamma", required_argument, 0, O_ETA_G},
    {"gamma0", required_argument, 0, O_GAMMA0},
    {"steps", required_argument, 0, O_STEPS},
    {"seeds", required_argument, 0, O_SEEDS},
    {"seed", required_argument, 0, O_SEED},
    {"w0-scale", required_argument, 0, O_W0_SCALE},
    {"w0-align", required_argument, 0, O_W0_ALIGN},
    {"w0-noise", required_argument, 0, O_W0_NOISE},
    {"w0", required_argument, 0, O_W0},
    {"no-project", no_argument, 0, O_NO_PROJECT},
    {"ref", required_argument, 0, O_REF},
    {"precision", required_argument, 0, O_PREC},
    {"backend", required_argument, 0, O_BACKEND},
    {"device", required_argument, 0, O_DEVICE},
    {"threads", required_argument, 0, O_THREADS},
    {"every", required_argument, 0, O_EVERY},
    {"out", required_argument, 0, O_OUT},
    {"quiet", no_argument, 0, O_QUIET},
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

typedef struct {
    const char *x, *y, *csv, *data, *w0, *ref;
    int seeds_given;
} data_args;

static int parse_run_options(int argc, char **argv, cli_run *run, data_args *da)
{
    bn_run_config *c = &run->cfg;
    int64_t v;
    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, ":h", run_options, NULL)) != -1) {
        int rc = 0;
        switch (opt) {
        case O_X: da->x = optarg; break;
        case O_Y: da->y = optarg; break;
        case O_CSV: da->csv = optarg; break;
        case O_DATA: da->data = optarg; break;
        case O_W0: da->w0 = optarg; break;
        case O_REF: da->ref = optarg; break;
        case O_LOSS:
            if (bn_parse_loss(optarg, &c->loss)) return cli_usage_error("run", "--loss: %s", bn_last_error());
            break;
        case O_PREC:
            if (bn_parse_precision(optarg, &c->precision))
                return cli_usage_error("run", "--precision: %s", bn_last_error());
            break;
        case O_BACKEND:
            if (bn_parse_backend(optarg, &c->backend))
                return cli_usage_error("run", "--backend: %s", bn_last_error());
            break;
        case O_ETA_W: rc = cli_parse_double("--eta-w", optarg, &c->eta_w); break;
        case O_ETA_G: rc = cli_parse_double("--eta-gamma", optarg, &c->eta_gamma); break;
        case O_GAMMA0: rc = cli_parse_double("--gamma0", optarg, &c->gamma0); break;
        case O_W0_SCALE: rc = cli_parse_double("--w0-scale", optarg, &c->w0_scale); break;
        case O_W0_ALIGN: rc = cli_parse_double("--w0-align", optarg, &c->w0_align); break;
        case O_W0_NOISE: rc = cli_parse_double("--w0-noise", optarg, &c->w0_noise); break;
        case O_STEPS: rc = cli_parse_i64("--steps", optarg, 1, &c->steps); break;
        case O_EVERY: rc = cli_parse_i64("--every", optarg, 1, &c->every); break;
        case O_SEEDS:
            rc = cli_parse_i64("--seeds", optarg, 1, &c->seeds);
            da->seeds_given = 1;
            break;
        case O_SEED:
            rc = cli_parse_i64("--seed", optarg, 0, &v);
            c->seed = (uint64_t)v;
            break;
        case O_DEVICE:
            rc = cli_parse_i64("--device", optarg, 0, &v);
            c->device = (int)v;
            break;
        case O_THREADS:
            rc = cli_parse_i64("--threads", optarg, 1, &v);
            if (!rc && v > 4096) return cli_usage_error("run", "--threads: %lld is more than 4096", (long long)v);
            c->threads = (int)v;
            break;
        case O_NO_PROJECT: c->project_w0 = 0; break;
        case O_SH_EVERY: rc = cli_parse_i64("--sharpness-every", optarg, 0, &c->sharpness_every); break;
        case O_SH_METHOD:
            if (strcmp(optarg, "power") == 0) c->sharpness_method = BN_SHARPNESS_POWER;
            else if (strcmp(optarg, "exact") == 0) c->sharpness_method = BN_SHARPNESS_EXACT;
            else return cli_usage_error("run", "--sharpness: expected power or exact, got '%s'", optarg);
            break;
        case O_SH_TOL:
            rc = cli_parse_double("--sharpness-tol", optarg, &c->sharpness_tol);
            if (!rc && !(c->sharpness_tol > 0 && c->sharpness_tol < 1))
                return cli_usage_error("run", "--sharpness-tol must be in (0, 1), got %s", optarg);
            break;
        case O_SH_MAXIT: rc = cli_parse_i64("--sharpness-maxiter", optarg, 1, &c->sharpness_maxiter); break;
        case O_SH_SPHERE:
            if (strcmp(optarg, "weighted") == 0) c->sharpness_sphere_plain = 0;
            else if (strcmp(optarg, "plain") == 0) c->sharpness_sphere_plain = 1;
            else return cli_usage_error("run", "--sharpness-sphere: expected weighted or plain, got '%s'", optarg);
            break;
        case O_EIGS: rc = cli_parse_i64("--eigs", optarg, 0, &c->eigs); break;
        case O_EIGS_OF:
            if (strcmp(optarg, "hessian") == 0) c->eigs_operator = BN_EIGS_HESSIAN;
            else if (strcmp(optarg, "weighted") == 0) c->eigs_operator = BN_EIGS_WEIGHTED;
            else if (strcmp(optarg, "sphere") == 0) c->eigs_operator = BN_EIGS_SPHERE;
            else return cli_usage_error("run", "--eigs-of: expected hessian, weighted or sphere, got '%s'", optarg);
            break;
        case O_EIGS_MAXIT: rc = cli_parse_i64("--eigs-maxiter", optarg, 0, &c->eigs_maxiter); break;
        case O_OUT: run->out_dir = optarg; break;
        case O_QUIET: run->quiet = 1; break;
        case 'h': fputs(run_help, stdout); return -1;
        case ':': return cli_usage_error("run", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage_error("run", "unknown option '%s'", argv[optind - 1]);
        }
        if (rc) return rc;
    }
    if (optind < argc) return cli_usage_error("run", "unexpected argument '%s'", argv[optind]);
    int sources = (da->x || da->y) + (da->csv != NULL) + (da->data != NULL);
    if (sources == 0)
        return cli_usage_error("run", "no data given: use --x X.npy --y Y.npy, --csv FILE or --data NAME");
    if (sources > 1) return cli_usage_error("run", "give only one of --x/--y, --csv and --data");
    if ((da->x != NULL) != (da->y != NULL)) return cli_usage_error("run", "--x and --y go together");
    if (c->eigs > 0 && c->sharpness_every == 0)
        return cli_usage_error("run", "--eigs needs --sharpness-every K (the steps to compute them at)");
    return 0;
}

static bn_status load_data(const data_args *da, bn_loss loss, bn_dataset **ds)
{
    if (da->x) return bn_dataset_load_npy(da->x, da->y, ds);
    if (da->csv) return bn_dataset_load_csv(da->csv, ds);
    return bn_dataset_generate(da->data, loss, ds);
}

/* Reads --w0 (d or S×d) and --ref (d); arrays stay alive until the run ends. */
static int load_vectors(const data_args *da, cli_run *run, int64_t d, bn_array *w0, bn_array *ref)
{
    bn_run_config *c = &run->cfg;
    if (da->w0) {
        bn_status st = bn_npy_read(da->w0, w0);
        if (st) return cli_report("--w0", st);
        int64_t rows = w0->ndim == 1 ? 1 : w0->shape[0];
        int64_t cols = w0->ndim == 1 ? w0->shape[0] : (w0->ndim == 2 ? w0->shape[1] : -1);
        if (w0->ndim < 1 || w0->ndim > 2 || cols != d) {
            fprintf(stderr, "bnspike: --w0 %s: expected shape (%lld,) or (S, %lld), got a %d-d array\n",
                    da->w0, (long long)d, (long long)d, w0->ndim);
            return EXIT_RUN_FAILED;
        }
        if (!da->seeds_given && rows > 1) c->seeds = rows;
        if (rows != 1 && rows != c->seeds) {
            fprintf(stderr, "bnspike: --w0 %s has %lld rows but --seeds is %lld\n", da->w0,
                    (long long)rows, (long long)c->seeds);
            return EXIT_RUN_FAILED;
        }
        c->w0 = w0->data;
        c->w0_rows = rows;
    }
    if (da->ref && strcmp(da->ref, "none") == 0) {
        c->skip_reference = 1;
    } else if (da->ref) {
        bn_status st = bn_npy_read(da->ref, ref);
        if (st) return cli_report("--ref", st);
        if (ref->size != d || ref->ndim > 2) {
            fprintf(stderr, "bnspike: --ref %s: expected %lld entries (d), got %lld\n", da->ref,
                    (long long)d, (long long)ref->size);
            return EXIT_RUN_FAILED;
        }
        c->w_ref = ref->data;
    }
    return 0;
}

/* Runs a parsed request end to end; shared by `run` and `demo`. */
static int execute(cli_run *run, const data_args *da, bn_sim **sim_out, bn_dataset **ds_out)
{
    bn_dataset *ds = NULL;
    bn_array w0 = {0}, ref = {0};
    bn_sim *sim = NULL;
    int rc = 0;
    bn_status st = load_data(da, run->cfg.loss, &ds);
    if (st) return cli_report("data", st);
    rc = load_vectors(da, run, bn_dataset_d(ds), &w0, &ref);
    if (!rc) {
        st = bn_sim_create(ds, &run->cfg, &sim);
        if (st) rc = cli_report("run", st);
    }
    if (!rc) {
        if (!run->quiet)
            fprintf(stderr, "bnspike: %s n=%lld d=%lld, %lld trajectories × %lld steps, %s, %s\n",
                    bn_dataset_name(ds), (long long)bn_dataset_n(ds), (long long)bn_dataset_d(ds),
                    (long long)run->cfg.seeds, (long long)run->cfg.steps,
                    bn_precision_name(run->cfg.precision), bn_sim_backend_desc(sim));
        cli_progress prog;
        cli_progress_init(&prog, run->quiet, run->cfg.seeds);
        st = bn_sim_run(sim, cli_progress_cb, &prog);
        cli_progress_done(&prog);
        if (st) rc = cli_report("run", st);
    }
    if (!rc) rc = cli_write_outputs(run, ds, sim);
    bn_array_free(&w0);
    bn_array_free(&ref);
    if (rc || !sim_out) {
        bn_sim_free(sim);
        bn_dataset_free(ds);
        return rc;
    }
    *sim_out = sim;
    *ds_out = ds;
    return 0;
}

static void init_run(cli_run *run, int argc, char **argv)
{
    memset(run, 0, sizeof *run);
    bn_run_config_default(&run->cfg);
    run->out_dir = "bnspike-out";
    run->argc = argc;
    run->argv = argv;
}

static void print_summary(const bn_sim *sim, int64_t max_rows)
{
    const double *rho, *loss, *wn, *step;
    int64_t S, R;
    bn_sim_field(sim, "rho", &rho, &S, &R);
    bn_sim_field(sim, "loss", &loss, &S, &R);
    bn_sim_field(sim, "w_norm", &wn, &S, &R);
    bn_sim_field(sim, "step", &step, &S, &R);
    const int64_t *div = bn_sim_diverged_step(sim);
    printf("%6s %8s %8s %11s %11s %10s %10s %8s %8s\n", "traj", "onset", "peak", "rho_onset",
           "rho_peak", "loss_pre", "loss_spk", "|w|_pre", "|w|_post");
    int64_t spikes = 0;
    for (int64_t j = 0; j < S; j++) {
        bn_spike sp;
        bn_find_first_spike(rho + j * R, loss + j * R, wn + j * R, R, BN_SPIKE_MIN_RISE, &sp);
        spikes += sp.found;
        if (j >= max_rows) continue;
        if (div[j] >= 0) printf("%6lld  diverged at step %lld\n", (long long)j, (long long)div[j]);
        else if (!sp.found) printf("%6lld  no spike in %lld records\n", (long long)j, (long long)R);
        else
            printf("%6lld %8.0f %8.0f %11.3e %11.3e %10.4g %10.4g %8.4g %8.4g\n", (long long)j,
                   step[j * R + sp.onset], step[j * R + sp.peak], sp.rho_onset, sp.rho_peak,
                   sp.loss_onset, sp.loss_peak, sp.wnorm_onset, sp.wnorm_end);
    }
    if (S > max_rows) printf("... %lld more trajectories\n", (long long)(S - max_rows));
    printf("%lld of %lld trajectories spiked\n", (long long)spikes, (long long)S);
}

int cmd_run(int argc, char **argv)
{
    cli_run run;
    data_args da = {0};
    init_run(&run, argc, argv);
    int rc = parse_run_options(argc, argv, &run, &da);
    if (rc) return rc < 0 ? 0 : rc;
    char desc[1200];
    if (da.data) snprintf(desc, sizeof desc, "generator %s", da.data);
    else if (da.csv) snprintf(desc, sizeof desc, "csv %s", da.csv);
    else snprintf(desc, sizeof desc, "npy %s %s", da.x, da.y);
    run.data_desc = desc;
    bn_sim *sim = NULL;
    bn_dataset *ds = NULL;
    rc = execute(&run, &da, &sim, &ds);
    if (rc) return rc;
    if (!run.quiet) {
        print_summary(sim, 10);
        printf("wrote %s/trajectories.npz and %s/run.json\n", run.out_dir, run.out_dir);
    }
    bn_sim_free(sim);
    bn_dataset_free(ds);
    return 0;
}

/* The embedded default: MODEL.md's delayed-spike example on whitened data. */
#define DEMO_DATA "whitened:n=400,d=20,noise=0.5,wnorm=4,seed=1"

int cmd_demo(int argc, char **argv)
{
    cli_run run;
    data_args da = {0};
    init_run(&run, argc, argv);
    run.out_dir = "demo-out";
    run.cfg.steps = 200;
    run.cfg.seeds = 2;
    run.cfg.eta_w = 0.9;
    run.cfg.eta_gamma = 0.05;
    run.cfg.gamma0 = 0.1;
    run.cfg.w0_scale = 0.5;
    run.cfg.w0_align = 1.0;
    run.cfg.w0_noise = 0.05;
    run.cfg.backend = BN_BACKEND_CPU;
    da.data = DEMO_DATA;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) run.out_dir = argv[++i];
        else if (strcmp(argv[i], "--quiet") == 0) run.quiet = 1;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("usage: bnspike demo [--out DIR] [--quiet]\n\n"
                   "Runs MODEL.md's delayed-spike example: whitened square-loss data\n"
                   "(%s),\n2 seeds, w0 = 0.5(ê + 0.05ξ), gamma0 = 0.1, eta_w = 0.9, eta_gamma = 0.05,\n"
                   "200 steps, and prints each trajectory's spike.  Same as:\n"
                   "  bnspike run --data %s --steps 200 --seeds 2 \\\n"
                   "    --w0-scale 0.5 --w0-align 1 --w0-noise 0.05 --out demo-out\n",
                   DEMO_DATA, DEMO_DATA);
            return 0;
        } else return cli_usage_error("demo", "unknown argument '%s'", argv[i]);
    }
    run.data_desc = "generator " DEMO_DATA;
    bn_sim *sim = NULL;
    bn_dataset *ds = NULL;
    int rc = execute(&run, &da, &sim, &ds);
    if (rc) return rc;
    printf("bnspike demo: delayed loss spikes on whitened square-loss data (MODEL.md example)\n");
    print_summary(sim, 10);
    printf("wrote %s/trajectories.npz and %s/run.json\n", run.out_dir, run.out_dir);
    bn_sim_free(sim);
    bn_dataset_free(ds);
    return 0;
}
