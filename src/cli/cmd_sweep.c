/* `bnspike sweep`: a grid over eta-w, eta-gamma, gamma0 and w0-scale times
 * --seeds S, run as large batches (the settings side by side as the columns of
 * one batch), with spike events on every step, the theory overlay (square
 * loss) and optional adaptive trajectories.  Outputs: summary.csv,
 * summary.json, events.csv (theory-events.csv), run.json and, with
 * --save-trajectories, trajectories.npz. */
#include "common.h"
#include "shard.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char sweep_head[] =
    "usage: bnspike sweep DATA --grid NAME=VALUES [--grid ...] [options]\n"
    "\n"
    "Runs every combination of the --grid values times --seeds S seeds as large\n"
    "batches (different settings side by side as the columns of one batch), finds\n"
    "the spike events of every trajectory on every step, and writes one row per\n"
    "trajectory.  Example (MODEL.md's whitened demo data):\n"
    "  bnspike sweep --data whitened:n=400,d=20,noise=0.5,wnorm=4,seed=1 \\\n"
    "    --w0-scale 0.5 --w0-align 1 --w0-noise 0.05 --steps 400 --seeds 2 \\\n"
    "    --grid eta-w=log:0.1:3:25 --grid gamma0=lin:0.05:1:20 --out sweep-demo\n"
    "\n"
    "grid:\n"
    "  --grid NAME=VALUES       NAME: eta-w, eta-gamma, gamma0 or w0-scale; VALUES:\n"
    "                           a list 0.1,0.2,0.5 | lin:A:B:N | log:A:B:N (N values\n"
    "                           from A to B, evenly or geometrically spaced).\n"
    "                           Repeat for more axes (each name at most once); the\n"
    "                           first is the slowest-varying.  Trajectory\n"
    "                           j = grid_index·S + s uses seed id --seed + s, so every\n"
    "                           grid point sees the same S starts ξ.  Settings not\n"
    "                           on the grid come from --eta-w etc.\n"
    "  --batch N                trajectories per batch (0 = as many as fit in about\n"
    "                           1 GiB: usually all of them) (0)\n"
    "  --save-trajectories      also write trajectories.npz: steps 0, K, 2K, ..., T\n"
    "                           (--every K) plus every step inside a window around\n"
    "                           each spike (--window-pre/--window-post), per\n"
    "                           trajectory; records[j] says how many columns of\n"
    "                           row j are used (NaN after)\n"
    "  --every K                the regular record interval of --save-trajectories (1)\n"
    "  --no-theory              skip the theory overlay (square loss)\n"
    "  --sharpness-every K      measure the sharpness every K steps (0 = off):\n"
    "                           sharpness_onset columns, and with\n"
    "                           --save-trajectories the sharpness records on the\n"
    "                           --every schedule and every K steps in the spike\n"
    "                           windows (see bnspike run --help) (0)\n"
    "  --sharpness power|exact  its method (power)\n"
    "  --shard I/N              run only shard I of N (0 <= I < N): the contiguous\n"
    "                           slice of trajectories [I·M/N, (I+1)·M/N) of the\n"
    "                           M = grid points × seeds, each as in the whole\n"
    "                           sweep (bitwise on the CPU backend); the outputs\n"
    "                           hold the slice (traj = global index) and run.json\n"
    "                           says which shard it is.  `bnspike merge OUT DIR...`\n"
    "                           joins the N shard folders into the whole sweep's\n"
    "                           outputs (Slurm job arrays; a `make MPI=1` build\n"
    "                           under mpirun does all of this by itself: see\n"
    "                           docs/sweeps.md)\n"
    "  --out DIR                output folder (bnspike-sweep)\n"
    "  -h, --help               this text\n"
    "\n";

static const char sweep_tail[] =
    "\n"
    "theory overlay (square loss): each trajectory's start (alpha_Sigma, beta_Sigma,\n"
    "gamma0 at t = 0) is iterated through MODEL.md's three-variable map with\n"
    "B = |w_LS|_Sigma, and the map's events go in the th_* columns.  They equal the\n"
    "simulation's on whitened data (th_exact = 1) while rho stays above the\n"
    "precision floor; elsewhere the difference is the finding.\n"
    "\n"
    "outputs (DIR):\n"
    "  summary.csv      one row per trajectory: traj, grid_index, seed, the four\n"
    "                   settings, the trajectory summary (n_spikes, diverged, floor,\n"
    "                   rho_min, kappa_max, ...), its first spike (the event columns\n"
    "                   above), its largest spike by loss ratio (big_*), and the\n"
    "                   theory's first spike (th_*).  Missing: nan, steps -1.\n"
    "  events.csv       one row per spike (traj, event, the event columns);\n"
    "                   theory-events.csv the same for the map\n"
    "  summary.json     the same rows with every spike, plus column definitions\n"
    "  run.json         configuration, grid, data, reference, backend, timing\n"
    "  trajectories.npz with --save-trajectories (see above)\n";

enum { O_GRID = CO_END, O_BATCH, O_SAVE, O_NO_THEORY, O_SHARP_EVERY, O_SHARP, O_SHARD };

static const struct option sweep_extra[] = {
    {"grid", required_argument, 0, O_GRID},
    {"batch", required_argument, 0, O_BATCH},
    {"save-trajectories", no_argument, 0, O_SAVE},
    {"no-theory", no_argument, 0, O_NO_THEORY},
    {"sharpness-every", required_argument, 0, O_SHARP_EVERY},
    {"sharpness", required_argument, 0, O_SHARP},
    {"shard", required_argument, 0, O_SHARD},
    {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0}};

enum { P_ETA_W, P_ETA_G, P_GAMMA0, P_W0_SCALE, P_COUNT };
static const char *const param_names[P_COUNT] = {"eta_w", "eta_gamma", "gamma0", "w0_scale"};

#define MAX_AXES 4
#define MAX_AXIS_VALUES 1000000

typedef struct {
    int param;
    const char *spec;
    double *v;
    int64_t n;
} grid_axis;

typedef struct {
    cli_opts o;
    grid_axis axis[MAX_AXES];
    int naxes;
    int64_t batch;
    int save, theory;
    int64_t shard_i, shard_n; /* --shard I/N (shard_n = 0: the whole sweep) */
    int quiet_help;           /* MPI ranks other than 0 print no --help */
    int argc;
    char **argv;
} sweep_req;

static int param_of(const char *name, size_t len)
{
    static const char *const aliases[][2] = {{"eta-w", "eta_w"}, {"eta-gamma", "eta_gamma"},
                                             {"gamma0", "gamma0"}, {"w0-scale", "w0_scale"}};
    for (int p = 0; p < P_COUNT; p++)
        for (int a = 0; a < 2; a++)
            if (strlen(aliases[p][a]) == len && strncmp(name, aliases[p][a], len) == 0) return p;
    return -1;
}

static int parse_axis(const char *arg, grid_axis *ax)
{
    const char *eq = strchr(arg, '=');
    if (!eq) return cli_usage_error("sweep", "--grid %s: expected NAME=VALUES", arg);
    ax->param = param_of(arg, (size_t)(eq - arg));
    if (ax->param < 0)
        return cli_usage_error("sweep", "--grid %s: unknown name '%.*s' (eta-w, eta-gamma, gamma0, w0-scale)",
                               arg, (int)(eq - arg), arg);
    ax->spec = eq + 1;
    const char *s = eq + 1;
    if (strncmp(s, "lin:", 4) == 0 || strncmp(s, "log:", 4) == 0) {
        int lg = s[1] == 'o';
        char *end;
        double a = strtod(s + 4, &end);
        if (*end != ':') return cli_usage_error("sweep", "--grid %s: expected %s:A:B:N", arg, lg ? "log" : "lin");
        double b = strtod(end + 1, &end);
        if (*end != ':') return cli_usage_error("sweep", "--grid %s: expected %s:A:B:N", arg, lg ? "log" : "lin");
        long long n = strtoll(end + 1, &end, 10);
        if (*end || n < 1 || n > MAX_AXIS_VALUES || !isfinite(a) || !isfinite(b))
            return cli_usage_error("sweep", "--grid %s: expected %s:A:B:N with finite A, B and 1 <= N <= %d", arg,
                                   lg ? "log" : "lin", MAX_AXIS_VALUES);
        if (lg && !(a > 0 && b > 0)) return cli_usage_error("sweep", "--grid %s: log spacing needs A, B > 0", arg);
        ax->n = n;
        ax->v = malloc((size_t)n * sizeof(double));
        if (!ax->v) return cli_usage_error("sweep", "--grid %s: out of memory", arg);
        for (long long i = 0; i < n; i++) {
            double f = n > 1 ? (double)i / (double)(n - 1) : 0.0;
            ax->v[i] = lg ? exp(log(a) + f * (log(b) - log(a))) : a + f * (b - a);
        }
        ax->v[0] = a;
        if (n > 1) ax->v[n - 1] = b;
        return 0;
    }
    int64_t n = 1;
    for (const char *p = s; *p; p++) n += *p == ',';
    if (n > MAX_AXIS_VALUES) return cli_usage_error("sweep", "--grid %s: more than %d values", arg, MAX_AXIS_VALUES);
    ax->v = malloc((size_t)n * sizeof(double));
    if (!ax->v) return cli_usage_error("sweep", "--grid %s: out of memory", arg);
    ax->n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || (*end && *end != ',') || !isfinite(v))
            return cli_usage_error("sweep", "--grid %s: '%s' is not a list of finite numbers", arg, s);
        ax->v[ax->n++] = v;
        if (!*end) break;
        p = end + 1;
    }
    return 0;
}

/* --shard I/N */
static int parse_shard(const char *arg, sweep_req *r)
{
    char *end;
    const char *p = arg;
    while (*p == ' ') p++;
    long long i = -1, n = -1;
    if (*p >= '0' && *p <= '9') i = strtoll(p, &end, 10);
    else end = (char *)p;
    if (i >= 0 && *end == '/' && end[1] >= '0' && end[1] <= '9') n = strtoll(end + 1, &end, 10);
    if (i < 0 || n < 0 || *end)
        return cli_usage_error("sweep", "--shard %s: expected I/N, e.g. --shard 0/4 for the first of 4 shards", arg);
    if (n < 1 || n > ((int64_t)1 << 31))
        return cli_usage_error("sweep", "--shard %s: the number of shards N must be 1 .. 2^31", arg);
    if (i >= n)
        return cli_usage_error("sweep", "--shard %s: the shard index I must be 0 .. N-1 = %lld (shards count from 0)",
                               arg, n - 1);
    r->shard_i = i;
    r->shard_n = n;
    return 0;
}

static int parse_sweep(int argc, char **argv, sweep_req *r)
{
    struct option opts[64];
    cli_build_options(opts, 64, sweep_extra);
    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        int rc = cli_common_option("sweep", opt, optarg, &r->o);
        if (rc > 0) return rc;
        if (rc == 0) continue;
        rc = 0;
        int64_t v;
        switch (opt) {
        case O_GRID:
            if (r->naxes == MAX_AXES) return cli_usage_error("sweep", "at most %d --grid axes", MAX_AXES);
            free(r->axis[r->naxes].v);
            r->axis[r->naxes].v = NULL;
            rc = parse_axis(optarg, &r->axis[r->naxes]);
            if (rc) return rc;
            for (int a = 0; a < r->naxes; a++)
                if (r->axis[a].param == r->axis[r->naxes].param)
                    return cli_usage_error("sweep", "--grid %s: %s is already on the grid", optarg,
                                           param_names[r->axis[a].param]);
            r->naxes++;
            break;
        case O_BATCH:
            rc = cli_num_i64("sweep", "--batch", optarg, 0, &v);
            r->batch = v;
            break;
        case O_SAVE: r->save = 1; break;
        case O_SHARP_EVERY:
            rc = cli_num_i64("sweep", "--sharpness-every", optarg, 0, &r->o.cfg.sharpness_every);
            break;
        case O_SHARP:
            if (strcmp(optarg, "power") == 0) r->o.cfg.sharpness_method = BN_SHARPNESS_POWER;
            else if (strcmp(optarg, "exact") == 0) r->o.cfg.sharpness_method = BN_SHARPNESS_EXACT;
            else return cli_usage_error("sweep", "--sharpness: '%s' is not power or exact", optarg);
            break;
        case O_NO_THEORY: r->theory = 0; break;
        case O_SHARD: rc = parse_shard(optarg, r); break;
        case 'h':
            if (r->quiet_help) return -1;
            fputs(sweep_head, stdout);
            fputs(cli_data_help, stdout);
            fputs("\n", stdout);
            fputs(cli_events_help, stdout);
            fputs(sweep_tail, stdout);
            return -1;
        case ':': return cli_usage_error("sweep", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage_error("sweep", "unknown option '%s'", argv[optind - 1]);
        }
        if (rc) return rc;
    }
    if (optind < argc) return cli_usage_error("sweep", "unexpected argument '%s'", argv[optind]);
    if (r->o.w0) return cli_usage_error("sweep", "--w0 is not available here: sweeps build w0 from --w0-scale/--w0-align/--w0-noise");
    return cli_check_data("sweep", &r->o);
}

/* ------------------------------------------------------------- outputs */

/* Settings and seed ids cover the whole sweep (count trajectories); the run
 * and the outputs cover the slice [first, first + n) (a shard, else all). */
typedef struct {
    const sweep_req *r;
    const bn_sweep *sw;
    int64_t count, S, G;
    int64_t first, n;
    double *set[P_COUNT];
    uint64_t *seed_id;
    int partial;              /* stopped by a signal: rows cover what ran */
    int64_t resumed_step;     /* with --resume: batch steps done before   */
} sweep_out;

/* No spike: steps -1, numbers and flags nan. */
static double missing(const bn_struct_field *f) { return f->type == BN_SF_I64 ? -1 : NAN; }

static const bn_spike_event *biggest(const bn_events *ev, int64_t j)
{
    const bn_spike_event *b = NULL;
    for (int64_t k = 0; k < bn_events_count(ev, j); k++) {
        const bn_spike_event *e = bn_events_get(ev, j, k);
        if (!b || e->loss_ratio > b->loss_ratio) b = e;
    }
    return b;
}

static const char *const big_cols[] = {"onset_step", "peak_step", "rho_peak", "loss_before", "loss_spike", "loss_ratio"};
static const char *const th_cols[] = {"onset_step", "peak_step", "end_step", "rho_onset", "rho_min", "rho_peak",
                                      "loss_before", "loss_spike", "loss_ratio", "kappa_onset"};

static const bn_struct_field *event_field(const char *name)
{
    const bn_struct_field *fl;
    int n = bn_spike_event_fields(&fl);
    for (int i = 0; i < n; i++)
        if (strcmp(fl[i].name, name) == 0) return &fl[i];
    return NULL;
}

/* One summary.csv line: the header when hdr, else the slice's trajectory j
 * (global index first + j). */
static void summary_line(cli_text *t, int hdr, const sweep_out *so, int64_t j)
{
    int first = 1;
    char name[96];
#define COL(NAME, VAL)                                   \
    do {                                                 \
        if (!first) cli_text_printf(t, ",");             \
        first = 0;                                       \
        if (hdr) cli_text_printf(t, "%s", (NAME));       \
        else cli_text_num(t, (VAL));                     \
    } while (0)
    const bn_events *ev = bn_sweep_events(so->sw), *th = bn_sweep_theory(so->sw);
    int64_t g = so->first + j;
    COL("traj", (double)g);
    COL("grid_index", (double)(g / so->S));
    COL("seed", (double)so->seed_id[g]);
    for (int p = 0; p < P_COUNT; p++) COL(param_names[p], so->set[p][g]);
    const bn_struct_field *fl;
    int nfl = bn_traj_summary_fields(&fl);
    const bn_traj_summary *sum = hdr ? NULL : bn_events_summary(ev, j);
    for (int c = 0; c < nfl; c++) COL(fl[c].name, bn_struct_field_get(sum, &fl[c]));
    COL("rho_min_run_over_u", sum->rho_min_run / bn_unit_roundoff(so->r->o.cfg.precision));
    nfl = bn_spike_event_fields(&fl);
    const bn_spike_event *e = hdr ? NULL : bn_events_get(ev, j, 0);
    for (int c = 0; c < nfl; c++) COL(fl[c].name, e ? bn_struct_field_get(e, &fl[c]) : missing(&fl[c]));
    e = hdr ? NULL : biggest(ev, j);
    for (size_t c = 0; c < sizeof big_cols / sizeof big_cols[0]; c++) {
        const bn_struct_field *f = event_field(big_cols[c]);
        snprintf(name, sizeof name, "big_%s", big_cols[c]);
        COL(name, e ? bn_struct_field_get(e, f) : missing(f));
    }
    if (th) {
        COL("th_exact", (double)bn_sweep_theory_data(so->sw)->whitened);
        COL("th_n_spikes", (double)bn_events_count(th, j));
        e = hdr ? NULL : bn_events_get(th, j, 0);
        for (size_t c = 0; c < sizeof th_cols / sizeof th_cols[0]; c++) {
            const bn_struct_field *f = event_field(th_cols[c]);
            snprintf(name, sizeof name, "th_%s", th_cols[c]);
            COL(name, e ? bn_struct_field_get(e, f) : missing(f));
        }
    }
#undef COL
    cli_text_printf(t, "\n");
}

static void events_csv(cli_text *t, const bn_events *ev, int64_t first)
{
    const bn_struct_field *fl;
    int nfl = bn_spike_event_fields(&fl);
    cli_text_printf(t, "traj,event");
    for (int c = 0; c < nfl; c++) cli_text_printf(t, ",%s", fl[c].name);
    cli_text_printf(t, "\n");
    for (int64_t j = 0; j < bn_events_trajectories(ev); j++)
        for (int64_t k = 0; k < bn_events_count(ev, j); k++) {
            cli_text_printf(t, "%lld,%lld", (long long)(first + j), (long long)k);
            for (int c = 0; c < nfl; c++) {
                cli_text_printf(t, ",");
                cli_text_num(t, bn_struct_field_get(bn_events_get(ev, j, k), &fl[c]));
            }
            cli_text_printf(t, "\n");
        }
}

/* summary.json's rows are written compactly (one line per trajectory):
 * pretty-printing 10^5 rows with their spikes would double the file. */
static void cj_num(cli_text *t, double v)
{
    if (isfinite(v)) cli_text_num(t, v);
    else cli_text_printf(t, "null");
}

static void cj_struct(cli_text *t, const char *key, const void *obj, const bn_struct_field *fl, int n)
{
    if (key) cli_text_printf(t, "\"%s\":", key);
    cli_text_printf(t, "{");
    for (int c = 0; c < n; c++) {
        cli_text_printf(t, "%s\"%s\":", c ? "," : "", fl[c].name);
        cj_num(t, bn_struct_field_get(obj, &fl[c]));
    }
    cli_text_printf(t, "}");
}

static void cj_spikes(cli_text *t, const char *key, const bn_events *ev, int64_t j)
{
    const bn_struct_field *fe, *fs;
    int ne = bn_spike_event_fields(&fe), ns = bn_traj_summary_fields(&fs);
    cli_text_printf(t, ",\"%s\":{", key);
    cj_struct(t, "summary", bn_events_summary(ev, j), fs, ns);
    cli_text_printf(t, ",\"spikes\":[");
    for (int64_t k = 0; k < bn_events_count(ev, j); k++) {
        if (k) cli_text_printf(t, ",");
        cj_struct(t, NULL, bn_events_get(ev, j, k), fe, ne);
    }
    cli_text_printf(t, "]}");
}

static void json_docs(json_out *j)
{
    const bn_struct_field *fl;
    json_begin_object(j, "definitions");
    int n = bn_traj_summary_fields(&fl);
    for (int c = 0; c < n; c++) json_string(j, fl[c].name, fl[c].doc);
    json_string(j, "rho_min_run_over_u", "rho_min_run / unit roundoff of the precision");
    n = bn_spike_event_fields(&fl);
    for (int c = 0; c < n; c++) json_string(j, fl[c].name, fl[c].doc);
    json_string(j, "big_*", "the trajectory's spike with the largest loss_ratio");
    json_string(j, "th_*", "the first spike of the three-variable map from the same start");
    json_string(j, "th_exact", "1: the data is whitened (max|Sigma - I| <= 1e-10): the map is exact");
    json_end_object(j);
}

static void json_grid(json_out *j, const sweep_req *r)
{
    json_begin_array(j, "grid");
    for (int a = 0; a < r->naxes; a++) {
        json_begin_object(j, NULL);
        json_string(j, "name", param_names[r->axis[a].param]);
        json_string(j, "spec", r->axis[a].spec);
        json_begin_array(j, "values");
        for (int64_t i = 0; i < r->axis[a].n; i++) json_number(j, NULL, r->axis[a].v[i]);
        json_end_array(j);
        json_end_object(j);
    }
    json_end_array(j);
}

static int write_summary_json(const sweep_out *so)
{
    /* The head (definitions, grid) through the pretty writer, the rows compact. */
    json_out j;
    json_init(&j);
    json_begin_object(&j, NULL);
    json_docs(&j);
    json_grid(&j, so->r);
    json_int(&j, "seeds", so->S);
    json_end_object(&j);
    cli_text t = {0};
    /* Reopen the object: drop the closing brace and append the rows. */
    size_t cut = j.len;
    while (cut > 0 && j.buf[cut - 1] != '}') cut--;
    if (j.failed || cut == 0) t.failed = 1;
    else {
        size_t e = cut - 1; /* the closing brace, and the whitespace before it */
        while (e > 0 && (j.buf[e - 1] == ' ' || j.buf[e - 1] == '\n')) e--;
        cli_text_printf(&t, "%.*s,\n  \"rows\": [\n", (int)e, j.buf);
    }
    json_free(&j);
    const bn_events *ev = bn_sweep_events(so->sw), *th = bn_sweep_theory(so->sw);
    for (int64_t r = 0; r < so->n; r++) {
        int64_t g = so->first + r;
        cli_text_printf(&t, "%s{\"traj\":%lld,\"grid_index\":%lld,\"seed\":%llu", r ? ",\n" : "", (long long)g,
                        (long long)(g / so->S), (unsigned long long)so->seed_id[g]);
        for (int p = 0; p < P_COUNT; p++) {
            cli_text_printf(&t, ",\"%s\":", param_names[p]);
            cj_num(&t, so->set[p][g]);
        }
        cj_spikes(&t, "events", ev, r);
        if (th) cj_spikes(&t, "theory", th, r);
        cli_text_printf(&t, "}");
    }
    cli_text_printf(&t, "\n  ]\n}\n");
    int rc = cli_text_write(&t, so->r->o.out_dir, "summary.json");
    cli_text_free(&t);
    return rc;
}

/* Counts over the sweep's trajectories, for run.json and the report. */
typedef struct {
    int64_t spiked, spikes, diverged, floor;
} sweep_totals;

static void count_totals(const sweep_out *so, sweep_totals *tot)
{
    const bn_events *ev = bn_sweep_events(so->sw);
    memset(tot, 0, sizeof *tot);
    for (int64_t t = 0; t < so->n; t++) {
        const bn_traj_summary *s = bn_events_summary(ev, t);
        tot->spiked += s->n_spikes > 0;
        tot->spikes += s->n_spikes;
        tot->diverged += s->diverged;
        tot->floor += s->floor_reached;
    }
}

static int write_run_json(const sweep_out *so, const bn_dataset *ds, double wall_total)
{
    const sweep_req *r = so->r;
    const bn_sweep *sw = so->sw;
    json_out j;
    json_init(&j);
    json_begin_object(&j, NULL);
    cli_json_header(&j, r->argc, r->argv, "sweep");
    cli_json_config(&j, &r->o.cfg);
    json_begin_object(&j, "sweep");
    json_grid(&j, r);
    json_int(&j, "grid_points", so->G);
    json_int(&j, "seeds_per_point", so->S);
    json_int(&j, "trajectories", so->count);
    json_string(&j, "order", "traj = grid_index*seeds + s, grid_index row-major over the axes (last fastest)");
    json_int(&j, "batch_size", bn_sweep_batch_size(sw));
    json_int(&j, "batches", bn_sweep_batches(sw));
    json_bool(&j, "save_trajectories", r->save);
    json_int(&j, "every", r->o.cfg.every);
    if (r->shard_n) {
        /* What `bnspike merge` needs: which slice of the sweep this is. */
        json_begin_object(&j, "shard");
        json_int(&j, "index", r->shard_i);
        json_int(&j, "count", r->shard_n);
        json_int(&j, "first", so->first);
        json_int(&j, "trajectories", so->n);
        json_end_object(&j);
    }
    json_end_object(&j);
    cli_json_events(&j, &r->o.ev, r->o.cfg.precision);
    cli_json_data(&j, &r->o, ds);
    cli_json_reference(&j, bn_sweep_ref_info(sw), r->o.cfg.skip_reference);
    json_number(&j, "kappa_scale", bn_sweep_kappa_scale(sw));
    json_begin_object(&j, "theory");
    const bn_theory_data *td = bn_sweep_theory_data(sw);
    json_bool(&j, "computed", td != NULL);
    if (td) {
        json_bool(&j, "exact", td->whitened);
        json_number(&j, "sigma_max_deviation", td->sigma_dev);
        json_number(&j, "B", td->B);
        json_number(&j, "L_star", td->lstar);
    }
    json_end_object(&j);
    sweep_totals tot;
    count_totals(so, &tot);
    json_begin_object(&j, "totals");
    json_int(&j, "trajectories_with_spikes", tot.spiked);
    json_int(&j, "spikes", tot.spikes);
    json_int(&j, "diverged_trajectories", tot.diverged);
    json_int(&j, "floor_reached_trajectories", tot.floor);
    json_end_object(&j);
    json_string(&j, "backend", bn_backend_name(bn_sweep_backend(sw)));
    json_string(&j, "backend_detail", bn_sweep_backend_desc(sw));
    json_int(&j, "threads", bn_sweep_threads(sw));
    json_number(&j, "sim_wall_seconds", bn_sweep_wall_seconds(sw));
    json_number(&j, "wall_seconds", wall_total);
    json_begin_array(&j, "outputs");
    json_string(&j, NULL, "summary.csv");
    json_string(&j, NULL, "summary.json");
    json_string(&j, NULL, "events.csv");
    if (bn_sweep_theory(sw)) json_string(&j, NULL, "theory-events.csv");
    if (r->save) json_string(&j, NULL, "trajectories.npz");
    json_end_array(&j);
    json_bool(&j, "partial", so->partial);
    json_int(&j, "trajectories_done", bn_sweep_trajectories_done(sw));
    if (r->o.resume) json_int(&j, "resumed_at_batch_step", so->resumed_step);
    json_end_object(&j);
    cli_text t = {.buf = j.buf, .len = j.len, .cap = j.cap, .failed = j.failed};
    int rc = cli_text_write(&t, r->o.out_dir, "run.json");
    json_free(&j);
    return rc;
}

static int write_npz(const sweep_out *so, int64_t d)
{
    const bn_sweep *sw = so->sw;
    bn_npz *z = NULL;
    bn_status st = bn_npz_create(&z);
    int64_t count = so->n, first = so->first;
    /* Record fields, records, adaptive sharpness, kappa_scale, ev_* and sum_*. */
    if (!st) st = bn_recorder_add_npz(bn_sweep_recorder(sw), z);
    int64_t s1[1] = {count};
    for (int p = 0; !st && p < P_COUNT; p++) st = bn_npz_add_f64(z, param_names[p], so->set[p] + first, 1, s1);
    int64_t *ids = malloc((size_t)count * 2 * sizeof(int64_t));
    if (!ids && !st) st = BN_ERR_NOMEM;
    if (!st) {
        for (int64_t j = 0; j < count; j++) {
            ids[j] = (int64_t)so->seed_id[first + j];
            ids[count + j] = (first + j) / so->S;
        }
        st = bn_npz_add_i64(z, "seed_id", ids, 1, s1);
        if (!st) st = bn_npz_add_i64(z, "grid_index", ids + count, 1, s1);
    }
    free(ids);
    int64_t sd[2] = {count, d}, d1[1] = {d};
    if (!st) st = bn_npz_add_f64(z, "w0", bn_sweep_w0(sw), 2, sd);
    if (!st) st = bn_npz_add_f64(z, "w_final", bn_sweep_w_final(sw), 2, sd);
    if (!st) st = bn_npz_add_f64(z, "w_ref", bn_sweep_w_ref(sw), 1, d1);
    if (!st && bn_sweep_theory(sw)) st = bn_events_add_npz(bn_sweep_theory(sw), "th_", z);
    if (!st) st = bn_npz_add_i64(z, "diverged_step", bn_sweep_diverged_step(sw), 1, s1);
    if (!st) st = bn_npz_add_f64(z, "gamma_final", bn_sweep_gamma_final(sw), 1, s1);
    char path[4200];
    snprintf(path, sizeof path, "%s/trajectories.npz", so->r->o.out_dir);
    if (!st) st = bn_npz_write(z, path);
    bn_npz_free(z);
    return st ? cli_report(path, st) : 0;
}

/* Disk for the outputs (summary rows; with --save-trajectories the records on
 * the regular schedule) and a checkpoint (replaced atomically, so twice). */
static double sweep_output_bytes(const sweep_req *r, int64_t n, int64_t d)
{
    double rows = r->save ? (double)n * (double)(r->o.cfg.steps / r->o.cfg.every + 2) * (double)bn_sim_n_fields() * 8.0 : 0;
    double state = (double)n * (double)d * 8.0 * 3.0;
    double summary = (double)n * 2048.0;
    return 3.0 * rows + 2.0 * state + summary + (1 << 20);
}

static int sweep_progress(void *user, int64_t done, int64_t total, int64_t cols)
{
    cli_progress *p = user;
    p->seeds = cols;
    return cli_progress_cb(p, done, total);
}

static void print_report(const sweep_out *so)
{
    const bn_events *ev = bn_sweep_events(so->sw), *th = bn_sweep_theory(so->sw);
    sweep_totals tot;
    count_totals(so, &tot);
    int64_t agree = 0;
    for (int64_t t = 0; th && t < so->n; t++) {
        const bn_spike_event *a = bn_events_get(ev, t, 0), *b = bn_events_get(th, t, 0);
        agree += (!a && !b) || (a && b && a->onset_step == b->onset_step && a->peak_step == b->peak_step);
    }
    if (so->r->shard_n)
        printf("shard %lld/%lld: trajectories %lld..%lld of %lld (%lld settings × %lld seeds) in %lld batch%s of up to %lld on %s\n",
               (long long)so->r->shard_i, (long long)so->r->shard_n, (long long)so->first,
               (long long)(so->first + so->n - 1), (long long)so->count, (long long)so->G, (long long)so->S,
               (long long)bn_sweep_batches(so->sw), bn_sweep_batches(so->sw) == 1 ? "" : "es",
               (long long)bn_sweep_batch_size(so->sw), bn_sweep_backend_desc(so->sw));
    else
        printf("%lld trajectories (%lld settings × %lld seeds) in %lld batch%s of up to %lld on %s\n",
               (long long)so->count, (long long)so->G, (long long)so->S, (long long)bn_sweep_batches(so->sw),
               bn_sweep_batches(so->sw) == 1 ? "" : "es", (long long)bn_sweep_batch_size(so->sw),
               bn_sweep_backend_desc(so->sw));
    printf("  %lld spiked, %lld diverged, %lld reached the %s precision floor\n", (long long)tot.spiked,
           (long long)tot.diverged, (long long)tot.floor, bn_precision_name(so->r->o.cfg.precision));
    if (th)
        printf("  theory (%s): first spike's onset and peak steps agree with the simulation in %lld of %lld\n",
               bn_sweep_theory_data(so->sw)->whitened ? "exact: whitened data" : "NOT exact: data not whitened",
               (long long)agree, (long long)so->n);
    printf("wrote %s/summary.csv, events.csv, summary.json, run.json%s\n", so->r->o.out_dir,
           so->r->save ? ", trajectories.npz" : "");
}

int cmd_sweep(int argc, char **argv)
{
#ifdef BN_HAVE_MPI
    if (!cli_parse_only && cli_mpi_launched()) return cli_mpi_sweep(argc, argv);
#endif
    if (!cli_parse_only) cli_signals_install();
    return cli_sweep_main(argc, argv, NULL);
}

void cli_mpi_shard_dir(char *buf, size_t cap, const char *out, int rank, int size)
{
    snprintf(buf, cap, "%s/.mpi-shards/%d-of-%d", out, rank, size);
}

/* Under MPI with P > 1 ranks: rank r runs shard r/P into a private folder
 * under --out, on CUDA device (--device + local rank) % devices. */
static int apply_mpi_plan(sweep_req *r, cli_mpi_plan *mpi)
{
    if (r->shard_n)
        return cli_usage_error("sweep", "--shard does not combine with mpirun -np %d (the ranks are the shards)",
                               mpi->size);
    r->shard_i = mpi->rank;
    r->shard_n = mpi->size;
    if (snprintf(mpi->out_dir, sizeof mpi->out_dir, "%s", r->o.out_dir) >= (int)sizeof mpi->out_dir)
        return cli_usage_error("sweep", "--out: the folder name is too long");
    cli_mpi_shard_dir(mpi->shard_dir, sizeof mpi->shard_dir, mpi->out_dir, mpi->rank, mpi->size);
    r->o.out_dir = mpi->shard_dir;
    mpi->quiet = r->o.quiet;
    if (mpi->rank != 0) r->o.quiet = 1;
    if (mpi->ndev > 0) r->o.cfg.device = (int)(((int64_t)r->o.cfg.device + mpi->local_rank) % mpi->ndev);
    return 0;
}

int cli_sweep_main(int argc, char **argv, cli_mpi_plan *mpi)
{
    sweep_req r;
    memset(&r, 0, sizeof r);
    cli_opts_init(&r.o, "bnspike-sweep");
    r.theory = 1;
    r.argc = argc;
    r.argv = argv;
    r.quiet_help = mpi && mpi->rank != 0;
    int rc = parse_sweep(argc, argv, &r);
    if (!rc && mpi && mpi->size > 1) rc = apply_mpi_plan(&r, mpi);
    sweep_out so = {.r = &r};
    bn_dataset *ds = NULL;
    bn_array w0 = {0}, ref = {0};
    bn_sweep *sw = NULL;
    if (rc) goto done;

    so.S = r.o.cfg.seeds;
    so.G = 1;
    for (int a = 0; a < r.naxes; a++) {
        if (so.G > INT64_MAX / r.axis[a].n) {
            rc = cli_usage_error("sweep", "the grid is too large");
            goto done;
        }
        so.G *= r.axis[a].n;
    }
    if (so.G > INT64_MAX / so.S || so.G * so.S > ((int64_t)1 << 31)) {
        rc = cli_usage_error("sweep", "%lld settings × %lld seeds is too many trajectories", (long long)so.G,
                             (long long)so.S);
        goto done;
    }
    so.count = so.G * so.S;
    so.first = 0;
    so.n = so.count;
    if (r.shard_n) {
        if (r.shard_n > so.count) {
            rc = cli_usage_error("sweep", "%lld shards of %lld trajectories: every shard needs at least one (N <= %lld)",
                                 (long long)r.shard_n, (long long)so.count, (long long)so.count);
            goto done;
        }
        so.first = cli_shard_first(so.count, r.shard_i, r.shard_n);
        so.n = cli_shard_first(so.count, r.shard_i + 1, r.shard_n) - so.first;
    }
    if (cli_parse_only) goto done;
    for (int p = 0; p < P_COUNT; p++) so.set[p] = malloc((size_t)so.count * sizeof(double));
    so.seed_id = malloc((size_t)so.count * sizeof(uint64_t));
    if (!so.set[0] || !so.set[1] || !so.set[2] || !so.set[3] || !so.seed_id) {
        fprintf(stderr, "bnspike: out of memory for %lld trajectories\n", (long long)so.count);
        rc = EXIT_RUN_FAILED;
        goto done;
    }
    const double base[P_COUNT] = {r.o.cfg.eta_w, r.o.cfg.eta_gamma, r.o.cfg.gamma0, r.o.cfg.w0_scale};
    for (int64_t g = 0; g < so.G; g++) {
        double v[P_COUNT];
        memcpy(v, base, sizeof v);
        int64_t rest = g;
        for (int a = r.naxes - 1; a >= 0; a--) {
            v[r.axis[a].param] = r.axis[a].v[rest % r.axis[a].n];
            rest /= r.axis[a].n;
        }
        for (int64_t s = 0; s < so.S; s++) {
            int64_t j = g * so.S + s;
            for (int p = 0; p < P_COUNT; p++) so.set[p][j] = v[p];
            so.seed_id[j] = r.o.cfg.seed + (uint64_t)s;
        }
    }

    cli_ckpt_paths ckpt;
    if ((r.o.resume || r.o.ckpt_every) && mpi && mpi->size > 1) {
        rc = cli_usage_error("sweep", "--checkpoint-every/--resume do not combine with mpirun; run shards "
                                      "(--shard i/N, one checkpoint each) instead");
        goto done;
    }
    rc = cli_resume_setup("sweep", &r.o, &ckpt);
    if (rc) goto done;
    bn_status st = cli_load_dataset(&r.o, &ds);
    if (st) {
        rc = cli_report("data", st);
        goto done;
    }
    rc = cli_load_vectors(&r.o, bn_dataset_d(ds), &w0, &ref);
    if (rc) goto done;
    /* The slice [first, first + n).  bn_sweep_run keys the sharpness start
     * vectors of trajectory j by base seed + j (cfg.seed = base->seed + j0 per
     * batch, + the column): shifting the base seed by first keeps every
     * trajectory's key, so a shard's trajectory is bitwise the whole sweep's.
     * (The w0 draws use the explicit seed ids.) */
    bn_run_config base_cfg = r.o.cfg;
    base_cfg.seeds = so.n;
    base_cfg.seed = r.o.cfg.seed + (uint64_t)so.first;
    const int64_t f0 = so.first;
    bn_sweep_spec spec = {
        .count = so.n, .eta_w = so.set[P_ETA_W] + f0, .eta_gamma = so.set[P_ETA_G] + f0,
        .gamma0 = so.set[P_GAMMA0] + f0, .w0_scale = so.set[P_W0_SCALE] + f0, .seed_id = so.seed_id + f0,
        .batch = r.batch, .theory = r.theory,
        .rec = {.every = r.o.cfg.every, .keep = r.save, .events = r.o.ev}};
    if (!r.o.quiet) {
        fprintf(stderr, "bnspike sweep: %s n=%lld d=%lld, %lld settings × %lld seeds = %lld trajectories × %lld steps, %s\n",
                bn_dataset_name(ds), (long long)bn_dataset_n(ds), (long long)bn_dataset_d(ds), (long long)so.G,
                (long long)so.S, (long long)so.count, (long long)r.o.cfg.steps, bn_precision_name(r.o.cfg.precision));
        if (r.shard_n)
            fprintf(stderr, "bnspike sweep: shard %lld/%lld: trajectories %lld..%lld (%lld)%s\n", (long long)r.shard_i,
                    (long long)r.shard_n, (long long)so.first, (long long)(so.first + so.n - 1), (long long)so.n,
                    mpi && mpi->size > 1 ? " (MPI rank 0; the other ranks run the other shards)" : "");
    }
    /* Everything is checked: only now may the output folder appear. */
    int created = 0;
    rc = cli_prepare_output(r.o.out_dir, sweep_output_bytes(&r, so.n, bn_dataset_d(ds)),
                            "the outputs and checkpoints", &created);
    if (rc) goto done;
    bn_checkpoint_config ck = cli_checkpoint_config(&r.o, &ckpt, "command=sweep");
    spec.checkpoint = &ck;
    cli_progress prog;
    cli_progress_init(&prog, r.o.quiet, so.n);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    st = bn_sweep_run(ds, &base_cfg, &spec, sweep_progress, &prog, &sw);
    cli_progress_done(&prog);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    so.resumed_step = ck.resumed_step;
    if (st == BN_ERR_INTERRUPTED && sw && cli_stop_signal()) {
        so.partial = 1;
    } else if (st) {
        rc = cli_report("sweep", st);
        cli_output_discard(r.o.out_dir, created);
        goto done;
    }
    if (r.o.resume && !r.o.quiet && sw)
        fprintf(stderr, "bnspike sweep: resumed after %lld of %lld batch steps\n", (long long)ck.resumed_step,
                (long long)(bn_sweep_batches(sw) * r.o.cfg.steps));
    so.sw = sw;
    cli_text t = {0};
    summary_line(&t, 1, &so, 0);
    for (int64_t j = 0; j < so.n; j++) summary_line(&t, 0, &so, j);
    rc = cli_text_write(&t, r.o.out_dir, "summary.csv");
    cli_text_free(&t);
    if (!rc) {
        events_csv(&t, bn_sweep_events(sw), so.first);
        rc = cli_text_write(&t, r.o.out_dir, "events.csv");
        cli_text_free(&t);
    }
    if (!rc && bn_sweep_theory(sw)) {
        events_csv(&t, bn_sweep_theory(sw), so.first);
        rc = cli_text_write(&t, r.o.out_dir, "theory-events.csv");
        cli_text_free(&t);
    }
    if (!rc) rc = write_summary_json(&so);
    if (!rc && r.save) rc = write_npz(&so, bn_dataset_d(ds));
    double wall = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (!rc) rc = write_run_json(&so, ds, wall);
    if (!rc && so.partial) {
        fprintf(stderr, "bnspike sweep: stopped (%lld of %lld trajectories done): wrote the partial outputs and %s; "
                        "continue with the same command plus --resume %s\n",
                (long long)bn_sweep_trajectories_done(sw), (long long)so.n, ckpt.write, r.o.out_dir);
        rc = cli_signal_exit_code();
        goto done;
    }
    if (!rc) cli_checkpoint_remove(ckpt.write);
    if (!rc && mpi) mpi->wrote = 1;
    if (!rc && !r.o.quiet && !(mpi && mpi->size > 1)) print_report(&so);
done:
    bn_sweep_free(sw);
    bn_dataset_free(ds);
    bn_array_free(&w0);
    bn_array_free(&ref);
    for (int p = 0; p < P_COUNT; p++) free(so.set[p]);
    free(so.seed_id);
    for (int a = 0; a < MAX_AXES; a++) free(r.axis[a].v);
    return rc < 0 ? 0 : rc;
}
