/* The command line as a user meets it: help, bad input, and outputs that
 * open in numpy.  Every bad input must give one clear message naming the
 * problem, a non-zero exit, and no output folder. */
#include <criterion/criterion.h>
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
             "assert all(z[k].shape == (5, 15) for k in names), [z[k].shape for k in names];"
             "assert z['w_final'].shape == (5, 48) and z['w_ref'].shape == (48,) and z['gamma_final'].shape == (5,);"
             "assert list(z['step'][0]) == list(range(0, 40, 3)) + [40];"
             "assert np.allclose(z['rho'], z['beta'] / z['alpha']);"
             "assert np.allclose(z['eta_eff'], z['eta_w'][:, None] * z['gamma'] / z['w_norm_sigma']**2);"
             "assert r['config']['precision'] == 'fp32' and r['data']['n'] == 32 and r['data']['d'] == 48;"
             "assert r['config']['seeds'] == 5 and r['records'] == 15 and len(r['git_commit']) > 0;"
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
