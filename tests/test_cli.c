/* The command line as a user meets it: help, bad input, and outputs that
 * open in numpy.  Every bad input must give one clear message naming the
 * problem, a non-zero exit, and no output folder. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_support.h"

static char *tmp;
static void setup(void) { tmp = ts_tmpdir(); }
static void teardown(void)
{
    ts_rmdir(tmp);
    free(tmp);
}
TestSuite(cli, .init = setup, .fini = teardown);

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Runs `bnspike ARGS --out TMP/out`, expects exit code `rc`, a message
 * containing `needle`, and (on failure) no output folder. */
static void expect_cli(const char *args, int rc, const char *needle)
{
    char cmd[4096], out[1100], *text = NULL;
    snprintf(out, sizeof out, "%s/out", tmp);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s --quiet --out '%s'", tmp, ts_cli(), args, out);
    int got = ts_run(cmd, &text);
    cr_expect_eq(got, rc, "`bnspike %s` exited %d, expected %d; output:\n%s", args, got, rc, text);
    cr_expect(strstr(text, needle) != NULL, "`bnspike %s`: message lacks '%s':\n%s", args, needle, text);
    if (rc != 0) {
        cr_expect(!exists(out), "`bnspike %s` failed but left %s", args, out);
        /* one clear message: a single line */
        int lines = 0;
        for (char *p = text; *p; p++) lines += *p == '\n';
        cr_expect_leq(lines, 2, "`bnspike %s`: expected one message, got:\n%s", args, text);
    }
    free(text);
}

static void write_bytes(const char *name, const void *buf, size_t len)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    fwrite(buf, 1, len, f);
    fclose(f);
}

/* A v1.0 .npy header for the given descr/shape, padded to a multiple of 64. */
static size_t npy_header(char *buf, const char *descr, const char *shape)
{
    char dict[256];
    int k = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
    size_t total = 10 + (size_t)k + 1;
    size_t pad = (64 - total % 64) % 64;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    uint16_t hl = (uint16_t)(k + pad + 1);
    buf[8] = (char)(hl & 0xff);
    buf[9] = (char)(hl >> 8);
    memcpy(buf + 10, dict, (size_t)k);
    memset(buf + 10 + k, ' ', pad);
    buf[10 + k + pad] = '\n';
    return total + pad;
}

static void write_npy(const char *name, const char *descr, const char *shape, const void *data, size_t len)
{
    char buf[1 << 16];
    size_t h = npy_header(buf, descr, shape);
    memcpy(buf + h, data, len);
    write_bytes(name, buf, h + len);
}

Test(cli, help_and_version)
{
    char cmd[1200], *text;
    snprintf(cmd, sizeof cmd, "'%s' --help", ts_cli());
    cr_expect_eq(ts_run(cmd, &text), 0);
    cr_expect(strstr(text, "run") && strstr(text, "demo"), "%s", text);
    free(text);
    snprintf(cmd, sizeof cmd, "'%s' run --help", ts_cli());
    cr_expect_eq(ts_run(cmd, &text), 0);
    cr_expect(strstr(text, "--eta-w") && strstr(text, "--precision") && strstr(text, "numpy.load"), "%s", text);
    free(text);
    snprintf(cmd, sizeof cmd, "'%s' --version", ts_cli());
    cr_expect_eq(ts_run(cmd, &text), 0);
    cr_expect(strstr(text, "bnspike 0.") && strstr(text, "cpu"), "%s", text);
    free(text);
}

Test(cli, usage_errors)
{
    expect_cli("run --data whitened --bogus", 2, "unknown option '--bogus'");
    expect_cli("run --data whitened --steps 0", 2, "--steps must be >= 1");
    expect_cli("run --data whitened --steps -5", 2, "--steps must be >= 1");
    expect_cli("run --data whitened --steps abc", 2, "'abc' is not an integer");
    expect_cli("run --data whitened --eta-w nan", 2, "not a finite number");
    expect_cli("run --data whitened --loss hinge", 2, "unknown loss 'hinge'");
    expect_cli("run --data whitened --precision fp16", 2, "unknown precision");
    expect_cli("run", 2, "no data given");
    expect_cli("run --data whitened --csv a.csv", 2, "only one of");
    expect_cli("run --x X.npy", 2, "--x and --y go together");
    expect_cli("frobnicate", 2, "unknown command 'frobnicate'");
}

Test(cli, bad_settings)
{
    expect_cli("run --data whitened:n=50,d=5 --eta-w 0", 1, "eta_w must be a finite number > 0");
    expect_cli("run --data whitened:n=50,d=5 --eta-gamma -1", 1, "eta_gamma");
    expect_cli("run --data whitened:n=50,d=5 --w0-scale 0", 1, "w0_scale");
    expect_cli("run --data nosuchgen:n=5", 1, "nosuchgen");
}

Test(cli, bad_files)
{
    double x[6] = {1, 2, 3, 4, 5, 7}, y3[3] = {1, -1, 1}, y2[2] = {1, 2};
    write_npy("X.npy", "<f8", "(3, 2)", x, sizeof x);
    write_npy("y.npy", "<f8", "(3,)", y3, sizeof y3);
    write_npy("y2.npy", "<f8", "(2,)", y2, sizeof y2);
    expect_cli("run --x missing.npy --y y.npy", 1, "missing.npy");
    /* truncated: header promises 6 doubles, 3 follow */
    write_npy("Xshort.npy", "<f8", "(3, 2)", x, 24);
    expect_cli("run --x Xshort.npy --y y.npy", 1, "Xshort.npy");
    /* header that lies: says (30, 2) */
    write_npy("Xlie.npy", "<f8", "(30, 2)", x, sizeof x);
    expect_cli("run --x Xlie.npy --y y.npy", 1, "Xlie.npy");
    int64_t xi[6] = {1, 2, 3, 4, 5, 6};
    write_npy("Xint.npy", "<i8", "(3, 2)", xi, sizeof xi);
    expect_cli("run --x Xint.npy --y y.npy", 1, "<i8");
    write_npy("X3.npy", "<f8", "(1, 3, 2)", x, sizeof x);
    expect_cli("run --x X3.npy --y y.npy", 1, "X3.npy");
    expect_cli("run --x X.npy --y y2.npy", 1, "shape");
    double xn[6] = {1, 2, 3, 0.0 / 0.0, 5, 7};
    write_npy("Xnan.npy", "<f8", "(3, 2)", xn, sizeof xn);
    expect_cli("run --x Xnan.npy --y y.npy", 1, "non-finite");
    write_bytes("garbage.npy", "this is not numpy", 17);
    expect_cli("run --x garbage.npy --y y.npy", 1, "garbage.npy");
    /* labels must be ±1 for logistic */
    write_npy("yreal.npy", "<f8", "(3,)", (double[3]){0.5, 1, -1}, 24);
    expect_cli("run --x X.npy --y yreal.npy --loss logistic", 1, "labels -1 or +1");
    write_bytes("ragged.csv", "a,b,c\n1,2,3\n4,5\n", 16);
    expect_cli("run --csv ragged.csv", 1, "ragged.csv");
    write_bytes("empty.csv", "", 0);
    expect_cli("run --csv empty.csv", 1, "empty.csv");
}

Test(cli, not_separable_is_refused)
{
    /* identical points with opposite labels cannot be separated */
    double x[8] = {1, 0, 1, 0, -1, 0, -1, 0}, y[4] = {1, -1, 1, -1};
    write_npy("X.npy", "<f8", "(4, 2)", x, sizeof x);
    write_npy("y.npy", "<f8", "(4,)", y, sizeof y);
    expect_cli("run --x X.npy --y y.npy --loss logistic", 1, "separable");
}

Test(cli, run_writes_numpy_readable_outputs)
{
    expect_cli("run --data hilbert:n=32,d=48,noise=0.01 --steps 40 --every 3 --seeds 5 --precision fp32", 0, "");
    char path[1200];
    snprintf(path, sizeof path, "%s/out/trajectories.npz", tmp);
    cr_assert(exists(path));
    snprintf(path, sizeof path, "%s/out/run.json", tmp);
    cr_assert(exists(path));
    if (!ts_have_numpy()) cr_skip_test("python3-numpy not installed: cross-check skipped");
    char cmd[4096], *text;
    snprintf(cmd, sizeof cmd,
             "cd '%s/out' && /usr/bin/python3 -c \""
             "import numpy as np, json; z = np.load('trajectories.npz'); r = json.load(open('run.json'));"
             "names = ['step','loss','gamma','w_norm','w_norm_sigma','alpha','beta','rho','eta_eff','grad_norm_w','grad_gamma'];"
             "R = z['records']; Rm = int(R.max());"
             "assert R.shape == (5,) and all(z[k].shape == (5, Rm) for k in names), [z[k].shape for k in names];"
             "assert z['w_final'].shape == (5, 48) and z['w_ref'].shape == (48,) and z['gamma_final'].shape == (5,);"
             "reg = set(range(0, 40, 3)) | {40};"
             "rows = [z['step'][j, :R[j]] for j in range(5)];"
             "assert all(reg <= set(s) and (np.diff(s) > 0).all() for s in rows);"
             "assert all(np.isnan(z['step'][j, R[j]:]).all() for j in range(5));"
             "assert Rm == 15 and list(rows[0]) == sorted(reg);"
             "assert np.allclose(z['rho'], z['beta'] / z['alpha'], equal_nan=True);"
             "assert np.allclose(z['eta_eff'], z['eta_w'][:, None] * z['gamma'] / z['w_norm_sigma']**2, equal_nan=True);"
             "assert z['sum_n_spikes'].shape == (5,) and z['sum_steps_seen'].tolist() == [41] * 5;"
             "assert r['config']['precision'] == 'fp32' and r['data']['n'] == 32 and r['data']['d'] == 48;"
             "assert r['config']['seeds'] == 5 and r['records'] == Rm and len(r['git_commit']) > 0;"
             "assert r['command'] == 'run' and r['events']['window_pre'] == 20;"
             "print('numpy-ok')\"",
             tmp);
    int rc = ts_run(cmd, &text);
    cr_expect_eq(rc, 0, "numpy check failed:\n%s", text);
    cr_expect(strstr(text, "numpy-ok"), "%s", text);
    free(text);
}

Test(cli, w0_file_and_ref_file)
{
    /* d = 3: an explicit start and reference round-trip into the outputs */
    double w0[3] = {0.3, -0.2, 0.9}, ref[3] = {1, 0, 0};
    write_npy("w0.npy", "<f8", "(3,)", w0, sizeof w0);
    write_npy("ref.npy", "<f8", "(3,)", ref, sizeof ref);
    expect_cli("run --data gaussian:n=40,d=3 --w0 w0.npy --no-project --ref ref.npy --steps 5", 0, "");
    char path[1200];
    snprintf(path, sizeof path, "%s/out/trajectories.npz", tmp);
    bn_array a = {0};
    cr_assert_eq(bn_npz_read(path, "w0", &a), BN_OK, "%s", bn_last_error());
    cr_expect_eq(a.size, 3);
    for (int i = 0; i < 3; i++) cr_expect_eq(a.data[i], w0[i]);
    bn_array_free(&a);
    cr_assert_eq(bn_npz_read(path, "alpha", &a), BN_OK);
    cr_expect_float_eq(a.data[0], 0.3, 1e-15, "alpha at step 0 = w0·ref = 0.3, got %.17g", a.data[0]);
    bn_array_free(&a);
    expect_cli("run --data gaussian:n=40,d=3 --w0 ref.npy --seeds 2 --steps 5", 0, "");
    snprintf(path, sizeof path, "%s/out", tmp);
    ts_rmdir(path);
    write_npy("w0bad.npy", "<f8", "(4,)", (double[4]){1, 2, 3, 4}, 32);
    expect_cli("run --data gaussian:n=40,d=3 --w0 w0bad.npy", 1, "w0");
}

/* Reads member `name` of DIR/trajectories.npz (cr_assert on failure). */
static void read_member(const char *dir, const char *name, bn_array *a)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s/trajectories.npz", tmp, dir);
    cr_assert_eq(bn_npz_read(path, name, a), BN_OK, "%s: %s", name, bn_last_error());
}

/* `run --every 50` on the demo data: steps 0, 50, ..., 200 plus every step
 * from window-pre steps before each spike's onset to window-post steps after
 * its end, each equal to the every-step run's; the same printed spikes. */
Test(cli, run_records_spike_windows_at_full_resolution)
{
    const char *common = "run --data whitened:n=400,d=20,noise=0.5,wnorm=4,seed=1 --steps 200 --seeds 2 "
                         "--w0-scale 0.5 --w0-align 1 --w0-noise 0.05 --backend cpu --window-pre 5 --window-post 5";
    char cmd[4096], *sparse_text, *full_text;
    snprintf(cmd, sizeof cmd, "cd '%s' && ('%s' %s --every 50 --out sparse 2>/dev/null)", tmp, ts_cli(), common);
    cr_assert_eq(ts_run(cmd, &sparse_text), 0, "%s", sparse_text);
    snprintf(cmd, sizeof cmd, "cd '%s' && ('%s' %s --every 1 --out full 2>/dev/null)", tmp, ts_cli(), common);
    cr_assert_eq(ts_run(cmd, &full_text), 0, "%s", full_text);
    /* The printed table comes from the every-step events: the same either way. */
    cr_expect(strstr(sparse_text, "2 of 2 trajectories spiked"), "%s", sparse_text);
    char *a = strstr(sparse_text, "traj"), *b = strstr(full_text, "traj");
    cr_assert(a && b);
    cr_expect(strncmp(a, b, (size_t)(strstr(a, "wrote") - a)) == 0, "--every 50:\n%s\n--every 1:\n%s", a, b);
    free(sparse_text);
    free(full_text);

    bn_array rec = {0}, step = {0}, rho = {0}, loss = {0}, frho = {0}, floss = {0}, ev_traj = {0}, ev_on = {0},
             ev_end = {0};
    read_member("sparse", "records", &rec);
    read_member("sparse", "step", &step);
    read_member("sparse", "rho", &rho);
    read_member("sparse", "loss", &loss);
    read_member("sparse", "ev_traj", &ev_traj);
    read_member("sparse", "ev_onset_step", &ev_on);
    read_member("sparse", "ev_end_step", &ev_end);
    read_member("full", "rho", &frho);
    read_member("full", "loss", &floss);
    cr_assert(rec.size == 2 && step.ndim == 2 && step.shape[0] == 2 && frho.shape[1] == 201);
    cr_assert_geq(ev_traj.size, 2, "the demo data spikes in both trajectories");
    int64_t R = step.shape[1], maxrec = 0;
    for (int64_t j = 0; j < 2; j++) {
        /* The steps the recorder must keep for trajectory j, in order. */
        int64_t want[201], nwant = 0;
        int windowed = 0;
        for (int64_t s = 0; s <= 200; s++) {
            int keep = s % 50 == 0;
            for (int64_t k = 0; k < ev_traj.size; k++) {
                if ((int64_t)ev_traj.data[k] != j) continue;
                int64_t lo = (int64_t)ev_on.data[k] - 5, hi = ev_end.data[k] >= 0 ? (int64_t)ev_end.data[k] + 5 : 200;
                if (s >= lo && s <= hi) keep = windowed = 1;
            }
            if (keep) want[nwant++] = s;
        }
        cr_expect(windowed);
        cr_assert_eq((int64_t)rec.data[j], nwant, "trajectory %lld: %g records, expected %lld", (long long)j,
                     rec.data[j], (long long)nwant);
        cr_expect_lt(nwant, 100, "far fewer records than steps outside the windows");
        if (nwant > maxrec) maxrec = nwant;
        for (int64_t i = 0; i < R; i++) {
            double t = step.data[j * R + i];
            if (i >= nwant) {
                cr_expect(isnan(t) && isnan(rho.data[j * R + i]), "padding after records[%lld]", (long long)j);
                continue;
            }
            cr_expect_eq(t, (double)want[i], "trajectory %lld record %lld: step %g, expected %lld", (long long)j,
                         (long long)i, t, (long long)want[i]);
            cr_expect_eq(rho.data[j * R + i], frho.data[j * 201 + want[i]], "rho at step %lld", (long long)want[i]);
            cr_expect_eq(loss.data[j * R + i], floss.data[j * 201 + want[i]], "loss at step %lld", (long long)want[i]);
        }
        /* Around the first onset the records are consecutive steps. */
        int64_t onset = -1;
        for (int64_t k = 0; k < ev_traj.size && onset < 0; k++)
            if ((int64_t)ev_traj.data[k] == j) onset = (int64_t)ev_on.data[k];
        int64_t i0 = 0;
        while (i0 < nwant && want[i0] < onset) i0++;
        cr_assert(i0 >= 3 && i0 + 3 < nwant);
        for (int64_t i = i0 - 3; i < i0 + 3; i++)
            cr_expect_eq(step.data[j * R + i + 1] - step.data[j * R + i], 1.0, "consecutive steps around onset %lld",
                         (long long)onset);
    }
    cr_expect_eq(R, maxrec, "the arrays are as wide as the longest trajectory");
    bn_array *all[] = {&rec, &step, &rho, &loss, &frho, &floss, &ev_traj, &ev_on, &ev_end};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bn_array_free(all[i]);
}

Test(cli, demo_reports_spikes)
{
    char cmd[2048], *text;
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' demo --quiet --out demo", tmp, ts_cli());
    cr_assert_eq(ts_run(cmd, &text), 0, "%s", text);
    cr_expect(strstr(text, "2 of 2 trajectories spiked"), "%s", text);
    free(text);
    snprintf(cmd, sizeof cmd, "%s/demo/trajectories.npz", tmp);
    cr_expect(exists(cmd));
}
