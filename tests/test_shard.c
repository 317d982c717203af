/* Distributed sweeps without MPI: `bnspike sweep --shard i/N` runs a slice of
 * the trajectories bitwise as the whole sweep does, and `bnspike merge`
 * reassembles the shards into exactly the whole sweep's outputs (tables byte
 * for byte, every trajectories.npz array bit for bit, records re-padded to
 * the global width).  merge refuses missing, duplicate and foreign shards
 * with one clear message and writes nothing.  (The MPI driver is checked by
 * tests/mpi_check.sh, `make test-mpi`.) */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test_support.h"

static char *tmp;
static void setup(void) { tmp = ts_tmpdir(); }
static void teardown(void)
{
    ts_rmdir(tmp);
    free(tmp);
}
TestSuite(shard, .init = setup, .fini = teardown);

/* 7 η_w × 2 γ0 × 2 seeds = 28 trajectories with adaptive records and
 * sharpness (record counts differ per trajectory). */
#define SWEEP_ARGS                                                                                     \
    "--data whitened:n=60,d=8,noise=0.5,wnorm=4,seed=1 --w0-scale 0.5 --w0-align 1 --w0-noise 0.05 " \
    "--steps 60 --seeds 2 --grid eta-w=0.5,1,2,3,4,5,6 --grid gamma0=0.1,0.3 --save-trajectories "   \
    "--every 10 --sharpness-every 5 --threads 1 --quiet"
/* 7 trajectories, the theory overlay, no saved trajectories. */
#define SMALL_ARGS                                                                                     \
    "--data whitened:n=60,d=8,noise=0.5,wnorm=4,seed=1 --w0-scale 0.5 --w0-align 1 --w0-noise 0.05 " \
    "--steps 60 --seeds 1 --grid eta-w=0.5,1,2,3,4,5,6 --threads 1 --quiet"

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    cr_assert(fread(b, 1, (size_t)n, f) == (size_t)n);
    b[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void expect_same_file(const char *a, const char *b)
{
    size_t la, lb;
    char *x = slurp(a, &la), *y = slurp(b, &lb);
    int same = la == lb && memcmp(x, y, la) == 0;
    if (!same) {
        size_t i = 0;
        while (i < la && i < lb && x[i] == y[i]) i++;
        cr_expect(same, "%s and %s differ (%zu vs %zu bytes, first difference at byte %zu)", a, b, la, lb, i);
    }
    free(x);
    free(y);
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *last_out;
static int sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    free(last_out);
    last_out = NULL;
    return ts_run(cmd, &last_out);
}

static void run_ok(const char *what, int rc)
{
    cr_assert_eq(rc, 0, "%s failed (%d): %s", what, rc, last_out ? last_out : "");
}

/* Arrays of trajectories.npz through the library's reader (float64). */
static void expect_same_array(const char *a, const char *b, const char *name)
{
    bn_array x = {0}, y = {0};
    cr_assert_eq(bn_npz_read(a, name, &x), BN_OK, "%s[%s]: %s", a, name, bn_last_error());
    cr_assert_eq(bn_npz_read(b, name, &y), BN_OK, "%s[%s]: %s", b, name, bn_last_error());
    cr_expect_eq(x.ndim, y.ndim, "%s: rank", name);
    for (int d = 0; d < x.ndim; d++) cr_expect_eq(x.shape[d], y.shape[d], "%s: shape[%d]", name, d);
    int64_t bad = -1;
    for (int64_t i = 0; i < x.size && i < y.size && bad < 0; i++)
        if (memcmp(&x.data[i], &y.data[i], sizeof(double)) != 0 && !(isnan(x.data[i]) && isnan(y.data[i]))) bad = i;
    cr_expect_eq(bad, -1, "%s differs at element %lld", name, (long long)bad);
    bn_array_free(&x);
    bn_array_free(&y);
}

static void expect_same_outputs(const char *whole, const char *merged, int npz, int sharp)
{
    static const char *const files[] = {"summary.csv", "events.csv", "theory-events.csv", "summary.json"};
    char a[4200], b[4200];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(a, sizeof a, "%s/%s", whole, files[i]);
        snprintf(b, sizeof b, "%s/%s", merged, files[i]);
        expect_same_file(a, b);
    }
    if (!npz) return;
    snprintf(a, sizeof a, "%s/trajectories.npz", whole);
    snprintf(b, sizeof b, "%s/trajectories.npz", merged);
    static const char *const arrays[] = {"rho", "loss", "step", "records", "sharpness", "sharpness_step",
                                         "sharpness_records", "ev_traj", "ev_onset_step", "sum_n_spikes",
                                         "th_ev_traj", "th_ev_peak_step", "w0", "w_final", "w_ref", "seed_id",
                                         "grid_index", "eta_w", "gamma0", "diverged_step", "kappa_scale"};
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++)
        if (sharp || strncmp(arrays[i], "sharpness", 9) != 0) expect_same_array(a, b, arrays[i]);
    /* Every member, dtype included, with numpy (the independent oracle). */
    if (ts_have_numpy()) {
        int rc = sh("/usr/bin/python3 -c \"import sys, numpy as np\n"
                    "a, b = np.load(sys.argv[1]), np.load(sys.argv[2])\n"
                    "assert sorted(a.files) == sorted(b.files), set(a.files) ^ set(b.files)\n"
                    "for k in a.files:\n"
                    "    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k\n"
                    "    assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == 'f'), k\n"
                    "print(len(a.files))\" '%s' '%s'",
                    a, b);
        cr_expect_eq(rc, 0, "numpy: the merged trajectories.npz differs: %s", last_out);
    }
    /* The archive itself: same members, same order, same bytes. */
    expect_same_file(a, b);
}

Test(shard, two_shards_merged_equal_whole)
{
    run_ok("whole sweep", sh("'%s' sweep " SWEEP_ARGS " --out '%s/whole'", ts_cli(), tmp));
    for (int i = 0; i < 2; i++)
        run_ok("shard", sh("'%s' sweep " SWEEP_ARGS " --shard %d/2 --out '%s/s%d'", ts_cli(), i, tmp, i));
    run_ok("merge", sh("'%s' merge '%s/merged' '%s/s0' '%s/s1'", ts_cli(), tmp, tmp, tmp));
    cr_expect(strstr(last_out, "merged 2 shards (28 trajectories)"), "merge says: %s", last_out);
    char w[4200], m[4200];
    snprintf(w, sizeof w, "%s/whole", tmp);
    snprintf(m, sizeof m, "%s/merged", tmp);
    expect_same_outputs(w, m, 1, 1);
    /* run.json: merged from 2 shards, the whole sweep's totals and command. */
    cr_expect_eq(sh("grep -q '\"merged_from\"' '%s/merged/run.json' && grep -q '\"shards\": 2' '%s/merged/run.json'",
                    tmp, tmp), 0, "run.json does not say merged from 2 shards");
    cr_expect_eq(sh("/usr/bin/python3 -c \"import json,sys; a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2]));"
                    "assert a['totals']==b['totals'] and a['config']==b['config'] and a['data']==b['data'];"
                    "assert 'shard' not in b['sweep'] and b['sweep']['trajectories']==28;"
                    "assert '--shard' not in b['command_line']\" '%s/whole/run.json' '%s/merged/run.json'",
                    tmp, tmp), 0, "run.json: %s", last_out);
}

Test(shard, three_uneven_shards_any_order)
{
    /* 7 trajectories in 3 shards (2 + 2 + 3), the shards with --batch 2
     * (batch boundaries elsewhere than in the whole sweep), merged from a
     * shuffled list of folders. */
    run_ok("whole sweep", sh("'%s' sweep " SMALL_ARGS " --save-trajectories --out '%s/whole'", ts_cli(), tmp));
    for (int i = 0; i < 3; i++)
        run_ok("shard", sh("'%s' sweep " SMALL_ARGS " --save-trajectories --batch 2 --shard %d/3 --out '%s/s%d'",
                           ts_cli(), i, tmp, i));
    /* A shard's rows carry their global trajectory index. */
    cr_expect_eq(sh("test \"$(cut -d, -f1 '%s/s2/summary.csv' | tr '\\n' ' ')\" = 'traj 4 5 6 '", tmp), 0,
                 "shard 2/3 should hold trajectories 4, 5, 6");
    cr_expect_eq(sh("grep -A4 '\"shard\"' '%s/s1/run.json' | tr -d ' \\n' | grep -q "
                    "'\"index\":1,\"count\":3,\"first\":2,\"trajectories\":2'", tmp),
                 0, "shard 1/3's run.json: %s", last_out);
    run_ok("merge", sh("'%s' merge --quiet '%s/m' '%s/s2' '%s/s0' '%s/s1'", ts_cli(), tmp, tmp, tmp, tmp));
    char w[4200], m[4200];
    snprintf(w, sizeof w, "%s/whole", tmp);
    snprintf(m, sizeof m, "%s/m", tmp);
    expect_same_outputs(w, m, 1, 0);
}

Test(shard, one_shard_is_the_whole)
{
    run_ok("whole", sh("'%s' sweep " SMALL_ARGS " --no-theory --out '%s/whole'", ts_cli(), tmp));
    run_ok("shard", sh("'%s' sweep " SMALL_ARGS " --no-theory --shard 0/1 --out '%s/s0'", ts_cli(), tmp));
    run_ok("merge", sh("'%s' merge '%s/m' '%s/s0'", ts_cli(), tmp, tmp));
    char a[4200], b[4200];
    static const char *const files[] = {"summary.csv", "events.csv", "summary.json"};
    for (int i = 0; i < 3; i++) {
        snprintf(a, sizeof a, "%s/whole/%s", tmp, files[i]);
        snprintf(b, sizeof b, "%s/m/%s", tmp, files[i]);
        expect_same_file(a, b);
    }
    snprintf(b, sizeof b, "%s/m/theory-events.csv", tmp);
    cr_expect(!exists(b), "--no-theory: no theory-events.csv");
}

/* merge refuses with one message, exit 1, and leaves OUT unwritten. */
static void expect_refused(const char *dirs, const char *needle)
{
    int rc = sh("'%s' merge '%s/out' %s", ts_cli(), tmp, dirs);
    cr_expect_eq(rc, 1, "merge %s: exit %d, expected 1: %s", dirs, rc, last_out);
    cr_expect(strstr(last_out, needle), "merge %s: expected a message with '%s', got: %s", dirs, needle, last_out);
    int lines = 0;
    for (const char *p = last_out; *p; p++) lines += *p == '\n';
    cr_expect_eq(lines, 1, "one message line, got: %s", last_out);
    char out[4200];
    snprintf(out, sizeof out, "%s/out", tmp);
    cr_expect(!exists(out), "merge %s: wrote %s although it refused", dirs, out);
}

Test(shard, merge_refuses_bad_shards)
{
    for (int i = 0; i < 3; i++)
        run_ok("shard", sh("'%s' sweep " SMALL_ARGS " --shard %d/3 --out '%s/s%d'", ts_cli(), i, tmp, i));
    run_ok("other", sh("'%s' sweep " SMALL_ARGS " --eta-gamma 0.07 --shard 1/3 --out '%s/other1'", ts_cli(), tmp));
    run_ok("other N", sh("'%s' sweep " SMALL_ARGS " --shard 1/2 --out '%s/half1'", ts_cli(), tmp));
    run_ok("other data", sh("'%s' sweep --data whitened:n=60,d=8,noise=0.5,wnorm=4,seed=2 --w0-scale 0.5 "
                            "--w0-align 1 --w0-noise 0.05 --steps 60 --seeds 1 --grid eta-w=0.5,1,2,3,4,5,6 "
                            "--threads 1 --quiet --shard 2/3 --out '%s/data2'", ts_cli(), tmp));
    run_ok("whole", sh("'%s' sweep " SMALL_ARGS " --out '%s/whole'", ts_cli(), tmp));
    char d[8192];
    snprintf(d, sizeof d, "'%s/s0' '%s/s2'", tmp, tmp);
    expect_refused(d, "shard 1 (of 0..2)");
    snprintf(d, sizeof d, "'%s/s0' '%s/s1' '%s/s1' '%s/s2'", tmp, tmp, tmp, tmp);
    expect_refused(d, "are both shard 1/3");
    snprintf(d, sizeof d, "'%s/s0' '%s/other1' '%s/s2'", tmp, tmp, tmp);
    expect_refused(d, "not shards of the same sweep: config.eta_gamma");
    snprintf(d, sizeof d, "'%s/s0' '%s/s1' '%s/data2'", tmp, tmp, tmp);
    expect_refused(d, "not shards of the same sweep: data.");
    snprintf(d, sizeof d, "'%s/s0' '%s/half1' '%s/s2'", tmp, tmp, tmp);
    expect_refused(d, "not the same sharding");
    snprintf(d, sizeof d, "'%s/s0' '%s/s1' '%s/whole'", tmp, tmp, tmp);
    expect_refused(d, "is a whole sweep, not a shard");
    snprintf(d, sizeof d, "'%s/s0' '%s/s1' '%s/nothing'", tmp, tmp, tmp);
    expect_refused(d, "nothing");
    /* A damaged shard: a row missing from summary.csv, a truncated npz. */
    run_ok("copy", sh("cp -r '%s/s1' '%s/cut1' && sed -i '$d' '%s/cut1/summary.csv'", tmp, tmp, tmp));
    snprintf(d, sizeof d, "'%s/s0' '%s/cut1' '%s/s2'", tmp, tmp, tmp);
    expect_refused(d, "1 rows, expected 2");
    run_ok("saved shards", sh("for i in 0 1; do '%s' sweep " SMALL_ARGS " --save-trajectories --shard $i/2 "
                              "--out '%s/t'$i || exit 1; done && head -c 3000 '%s/t1/trajectories.npz' > '%s/x' && "
                              "mv '%s/x' '%s/t1/trajectories.npz'",
                              ts_cli(), tmp, tmp, tmp, tmp, tmp));
    snprintf(d, sizeof d, "'%s/t0' '%s/t1'", tmp, tmp);
    expect_refused(d, "trajectories.npz");
    /* OUT may not be one of the shards. */
    int rc = sh("'%s' merge '%s/s0' '%s/s0' '%s/s1' '%s/s2'", ts_cli(), tmp, tmp, tmp, tmp);
    cr_expect_eq(rc, 1, "merging into a shard folder: %s", last_out);
    cr_expect(strstr(last_out, "is one of the shard folders"), "%s", last_out);
}

Test(shard, option_errors)
{
    static const struct {
        const char *arg, *msg;
    } bad[] = {
        {"2/2", "the shard index I must be 0 .. N-1 = 1"},
        {"-1/2", "expected I/N"},
        {"1/0", "the number of shards N must be"},
        {"1", "expected I/N"},
        {"a/3", "expected I/N"},
        {"1/3x", "expected I/N"},
        {"0/8", "8 shards of 7 trajectories"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = sh("'%s' sweep " SMALL_ARGS " --shard '%s' --out '%s/q'", ts_cli(), bad[i].arg, tmp);
        cr_expect_eq(rc, 2, "--shard %s: exit %d: %s", bad[i].arg, rc, last_out);
        cr_expect(strstr(last_out, bad[i].msg), "--shard %s: expected '%s' in: %s", bad[i].arg, bad[i].msg, last_out);
    }
    char q[4200];
    snprintf(q, sizeof q, "%s/q", tmp);
    cr_expect(!exists(q), "a refused --shard wrote outputs");
    cr_expect_eq(sh("'%s' merge '%s/out'", ts_cli(), tmp), 2, "merge without shards: %s", last_out);
    cr_expect(strstr(last_out, "expected OUT and at least one SHARD_DIR"), "%s", last_out);
    cr_expect_eq(sh("'%s' merge --bogus a b", ts_cli()), 2, "merge --bogus: %s", last_out);
    cr_expect_eq(sh("'%s' merge --help", ts_cli()), 0, "merge --help");
    cr_expect(strstr(last_out, "usage: bnspike merge OUT SHARD_DIR..."), "%s", last_out);
    cr_expect_eq(sh("'%s' sweep --help", ts_cli()), 0, "sweep --help");
    cr_expect(strstr(last_out, "--shard I/N"), "sweep --help lacks --shard");
    cr_expect_eq(sh("'%s' --help", ts_cli()), 0, "--help");
    cr_expect(strstr(last_out, "merge"), "bnspike --help lacks merge");
}
