/* `bnspike plot`: a valid PNG of the requested size from the fixture folders
 * (tests/fixtures/plot-run: a run; plot-sweep: a sweep), written atomically,
 * and clear failures.  Skipped where gnuplot is not installed (CI installs it:
 * scripts/install-deps.sh). */
#include <criterion/criterion.h>
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
TestSuite(plot, .init = setup, .fini = teardown);

static void need_gnuplot(void)
{
    const char *g = getenv("GNUPLOT");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "command -v '%s' >/dev/null 2>&1", g && *g ? g : "gnuplot");
    if (system(cmd) != 0) cr_skip_test("gnuplot is not installed");
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A PNG: signature, an IHDR chunk first with the given size, an IEND chunk last. */
static void expect_png(const char *path, uint32_t w, uint32_t h)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "no file %s", path);
    static unsigned char buf[1 << 22];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    cr_assert_gt(n, 57, "%s is too short (%zu bytes)", path, n);
    cr_expect_eq(memcmp(buf, "\x89PNG\r\n\x1a\n", 8), 0, "%s: not a PNG signature", path);
    cr_expect_eq(be32(buf + 8), 13u, "IHDR length");
    cr_expect_eq(memcmp(buf + 12, "IHDR", 4), 0, "first chunk is not IHDR");
    cr_expect_eq(be32(buf + 16), w, "%s: width %u, expected %u", path, be32(buf + 16), w);
    cr_expect_eq(be32(buf + 20), h, "%s: height %u, expected %u", path, be32(buf + 20), h);
    cr_expect_eq(memcmp(buf + n - 12, "\0\0\0\0IEND", 8), 0, "%s: does not end with IEND", path);
    cr_expect_gt(n, 5000, "%s: %zu bytes is suspiciously small for a figure", path, n);
}

static void count_files(const char *dir, int *n)
{
    char cmd[1200], *out = NULL;
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
    ts_run(cmd, &out);
    *n = atoi(out);
    free(out);
}

Test(plot, run_folder_figure3_png)
{
    need_gnuplot();
    char cmd[4096], *out = NULL, png[1200];
    snprintf(png, sizeof png, "%s/fig3.png", tmp);
    snprintf(cmd, sizeof cmd, "'%s' plot tests/fixtures/plot-run --traj 0,1 --size 900x700 --out '%s'", ts_cli(), png);
    int rc = ts_run(cmd, &out);
    cr_assert_eq(rc, 0, "plot failed:\n%s", out);
    cr_expect(strstr(out, "wrote") != NULL, "%s", out);
    free(out);
    expect_png(png, 900, 700);
    int nfiles;
    count_files(tmp, &nfiles);
    cr_expect_eq(nfiles, 1, "the temporary PNG was not renamed away");
}

Test(plot, sweep_folder_phase_png)
{
    need_gnuplot();
    char cmd[4096], *out = NULL, png[1200];
    snprintf(png, sizeof png, "%s/phase.png", tmp);
    snprintf(cmd, sizeof cmd,
             "'%s' plot tests/fixtures/plot-sweep --metric onset_step,loss_ratio,onset_minus_theory,spike_fraction "
             "--size 1600x450 --out '%s'", ts_cli(), png);
    int rc = ts_run(cmd, &out);
    cr_assert_eq(rc, 0, "plot failed:\n%s", out);
    cr_expect(strstr(out, "over eta_w × gamma0") != NULL, "axes: %s", out);
    free(out);
    expect_png(png, 1600, 450);
    /* The axes swapped, one metric: the default size of one panel. */
    snprintf(png, sizeof png, "%s/line.png", tmp);
    snprintf(cmd, sizeof cmd, "'%s' plot tests/fixtures/plot-sweep --x gamma0 --y eta-w --metric rho_peak --out '%s'",
             ts_cli(), png);
    rc = ts_run(cmd, &out);
    cr_assert_eq(rc, 0, "plot failed:\n%s", out);
    free(out);
    expect_png(png, 520, 460);
}

Test(plot, failures)
{
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' plot '%s'", ts_cli(), tmp);
    cr_expect_eq(ts_run(cmd, &out), 1);
    cr_expect(strstr(out, "neither trajectories.npz") != NULL, "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' plot tests/fixtures/plot-sweep --metric nope --out '%s/x.png'", ts_cli(), tmp);
    cr_expect_eq(ts_run(cmd, &out), 2);
    cr_expect(strstr(out, "--metric nope: no such column") != NULL, "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' plot tests/fixtures/plot-run --traj 7 --out '%s/x.png'", ts_cli(), tmp);
    cr_expect_eq(ts_run(cmd, &out), 2);
    cr_expect(strstr(out, "trajectory 7 does not exist") != NULL, "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' plot tests/fixtures/plot-run --size 10x10", ts_cli());
    cr_expect_eq(ts_run(cmd, &out), 2);
    free(out);
    snprintf(cmd, sizeof cmd, "GNUPLOT=/nonexistent/gnuplot '%s' plot tests/fixtures/plot-run --out '%s/x.png'", ts_cli(), tmp);
    cr_expect_eq(ts_run(cmd, &out), 1);
    cr_expect(strstr(out, "needs gnuplot") != NULL, "%s", out);
    free(out);
    int nfiles;
    count_files(tmp, &nfiles);
    cr_expect_eq(nfiles, 0, "failures left files behind");
}
