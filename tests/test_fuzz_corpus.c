/* The fuzz corpora (tests/fuzz_corpus/<target>/, seeds and the regress/
 * inputs libFuzzer found) replayed through the same entry points as the
 * fuzz targets (fuzz/fuzz_entries.c, compiled here by gcc without
 * libFuzzer): every input must be either accepted or refused with a message,
 * without crashing (the ASan build, `make asan`, also catches leaks and
 * overruns).  Seeds named ok-* must be accepted and bad-* refused; a few
 * have their shapes checked.
 *
 * The CLI corpus is not replayed here: bnspike_main lives in the CLI objects,
 * which this binary does not link.  `make fuzz-replay` (and every `make
 * fuzz`, which starts from the whole corpus) runs it through fuzz_cli. */
#include <criterion/criterion.h>

#include "../fuzz/fuzz_entries.c"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CORPUS "tests/fuzz_corpus"

typedef bn_status (*fuzz_entry)(const uint8_t *, size_t, bn_fuzz_info *);

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    cr_assert_geq(n, 0);
    rewind(f);
    unsigned char *buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n, "short read of %s", path);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

typedef struct {
    int files, ok_seeds, bad_seeds, regress;
} replay_count;

/* Runs one input; checks the outcome contract and the ok-/bad- naming. */
static bn_status replay_one(fuzz_entry fn, const char *path, const char *base, bn_fuzz_info *info)
{
    size_t len;
    unsigned char *buf = slurp(path, &len);
    bn_clear_error();
    bn_status st = fn(buf, len, info);
    free(buf);
    if (st != BN_OK)
        cr_expect(bn_last_error()[0] != '\0', "%s: refused (%s) without a message", path, bn_status_name(st));
    if (strncmp(base, "ok-", 3) == 0)
        cr_expect_eq(st, BN_OK, "%s: a valid seed was refused: %s", path, bn_last_error());
    if (strncmp(base, "bad-", 4) == 0) cr_expect_neq(st, BN_OK, "%s: an invalid seed was accepted", path);
    return st;
}

static void replay_dir(fuzz_entry fn, const char *dir, int in_regress, replay_count *c)
{
    DIR *d = opendir(dir);
    if (!d) {
        cr_assert(in_regress, "no corpus folder %s (run from the repository root)", dir);
        return; /* regress/ exists only once the fuzzer has found something */
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        cr_assert_eq(stat(path, &sb), 0, "stat %s", path);
        if (S_ISDIR(sb.st_mode)) {
            if (!in_regress && strcmp(e->d_name, "regress") == 0) replay_dir(fn, path, 1, c);
            continue;
        }
        bn_fuzz_info info;
        replay_one(fn, path, e->d_name, &info);
        c->files++;
        c->regress += in_regress;
        c->ok_seeds += !in_regress && strncmp(e->d_name, "ok-", 3) == 0;
        c->bad_seeds += !in_regress && strncmp(e->d_name, "bad-", 4) == 0;
    }
    closedir(d);
}

static void replay_target(const char *target, fuzz_entry fn, int min_ok, int min_bad)
{
    char dir[256];
    snprintf(dir, sizeof dir, CORPUS "/%s", target);
    replay_count c = {0};
    replay_dir(fn, dir, 0, &c);
    cr_assert_geq(c.ok_seeds, min_ok, "%s: only %d valid (ok-*) seeds", dir, c.ok_seeds);
    cr_assert_geq(c.bad_seeds, min_bad, "%s: only %d invalid (bad-*) seeds", dir, c.bad_seeds);
    cr_log_info("%s: replayed %d files (%d from regress/)", dir, c.files, c.regress);
}

static bn_fuzz_info run_seed(fuzz_entry fn, const char *target, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, CORPUS "/%s/%s", target, name);
    bn_fuzz_info info;
    bn_status st = replay_one(fn, path, name, &info);
    cr_assert_eq(st, BN_OK, "%s: %s", path, bn_last_error());
    return info;
}

static void expect_shape(const bn_fuzz_info *info, const char *name, int ndim, int64_t s0, int64_t s1,
                         int64_t s2)
{
    const int64_t want[3] = {s0, s1, s2};
    cr_expect_eq(info->ndim, ndim, "%s: rank %d, expected %d", name, info->ndim, ndim);
    for (int k = 0; k < ndim && k < 3; k++)
        cr_expect_eq(info->shape[k], want[k], "%s: axis %d has %lld, expected %lld", name, k,
                     (long long)info->shape[k], (long long)want[k]);
}

static void expect_data(const bn_fuzz_info *info, const char *name, int64_t n, int64_t d)
{
    cr_expect(info->n == n && info->d == d, "%s: data set %lldx%lld, expected %lldx%lld", name,
              (long long)info->n, (long long)info->d, (long long)n, (long long)d);
}

Test(fuzz_corpus, npy)
{
    replay_target("npy", bn_fuzz_npy, 8, 8);
    bn_fuzz_info i;
    i = run_seed(bn_fuzz_npy, "npy", "ok-f8-c-5x3.npy");
    expect_shape(&i, "ok-f8-c-5x3", 2, 5, 3, 0);
    expect_data(&i, "ok-f8-c-5x3", 5, 3);
    i = run_seed(bn_fuzz_npy, "npy", "ok-f4be-fortran-2x3x2.npy");
    expect_shape(&i, "ok-f4be-fortran-2x3x2", 3, 2, 3, 2);
    expect_data(&i, "ok-f4be-fortran-2x3x2", 0, 0); /* rank 3: no data set */
    i = run_seed(bn_fuzz_npy, "npy", "ok-f8be-6.npy");
    expect_shape(&i, "ok-f8be-6", 1, 6, 0, 0);
    expect_data(&i, "ok-f8be-6", 6, 1);
    i = run_seed(bn_fuzz_npy, "npy", "ok-f8-scalar.npy");
    expect_shape(&i, "ok-f8-scalar", 0, 0, 0, 0);
    i = run_seed(bn_fuzz_npy, "npy", "ok-f8-nonfinite-3x2.npy");
    expect_shape(&i, "ok-f8-nonfinite-3x2", 2, 3, 2, 0);
    expect_data(&i, "ok-f8-nonfinite-3x2", 0, 0); /* NaN/inf: the data set is refused */
}

Test(fuzz_corpus, npy_fortran_order_is_transposed_back)
{
    /* ok-f4-fortran-4x2.npy holds arange(8).reshape(4, 2) in Fortran order. */
    size_t len;
    unsigned char *buf = slurp(CORPUS "/npy/ok-f4-fortran-4x2.npy", &len);
    bn_array a;
    cr_assert_eq(bn_npy_parse(buf, len, "f", 0, &a), BN_OK, "%s", bn_last_error());
    free(buf);
    cr_assert_eq(a.ndim, 2);
    cr_assert(a.shape[0] == 4 && a.shape[1] == 2);
    for (int k = 0; k < 8; k++) cr_expect_eq(a.data[k], (double)k, "element %d is %g", k, a.data[k]);
    bn_array_free(&a);
}

Test(fuzz_corpus, npz)
{
    replay_target("npz", bn_fuzz_npz, 3, 4);
    static const char *const xy[] = {"ok-stored-x6x2-y6.npz", "ok-deflated-x6x2-y6.npz"};
    for (int k = 0; k < 2; k++) {
        bn_fuzz_info i = run_seed(bn_fuzz_npz, "npz", xy[k]);
        expect_shape(&i, xy[k], 2, 6, 2, 0);
        expect_data(&i, xy[k], 6, 2);
        cr_expect_eq(i.members, 2, "%s: %d members read", xy[k], i.members);
    }
    bn_fuzz_info i = run_seed(bn_fuzz_npz, "npz", "ok-zip64-x2x2-y2.npz");
    expect_data(&i, "ok-zip64-x2x2-y2", 2, 2);
    i = run_seed(bn_fuzz_npz, "npz", "ok-zip64-end-x3x1-y3.npz"); /* ZIP64 end record + locator */
    expect_data(&i, "ok-zip64-end-x3x1-y3", 3, 1);
    i = run_seed(bn_fuzz_npz, "npz", "ok-run-step2x5.npz");
    cr_expect_eq(i.members, 5, "ok-run-step2x5: %d members read", i.members);
}

Test(fuzz_corpus, csv)
{
    replay_target("csv", bn_fuzz_csv, 4, 6);
    static const struct {
        const char *name;
        int64_t n, d;
    } want[] = {
        {"ok-header-comma-4x3.csv", 4, 3},   {"ok-noheader-semicolon-3x2.csv", 3, 2},
        {"ok-tab-bom-crlf-3x1.csv", 3, 1},   {"ok-quoted-blank-3x2.csv", 3, 2},
        {"ok-labels-pm1-4x2.csv", 4, 2},
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        bn_fuzz_info i = run_seed(bn_fuzz_csv, "csv", want[k].name);
        expect_data(&i, want[k].name, want[k].n, want[k].d);
    }
}

Test(fuzz_corpus, cli_corpus_is_well_formed)
{
    /* Replayed by `make fuzz-replay`; here only its shape: the first byte
     * picks the command ('0'..'7', fuzz/fuzz_cli.c). */
    DIR *d = opendir(CORPUS "/cli");
    cr_assert_not_null(d, "no " CORPUS "/cli");
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "ok-", 3) != 0 && strncmp(e->d_name, "bad-", 4) != 0) continue;
        char path[512];
        snprintf(path, sizeof path, CORPUS "/cli/%s", e->d_name);
        size_t len;
        unsigned char *buf = slurp(path, &len);
        cr_expect(len >= 1 && buf[0] >= '0' && buf[0] <= '7', "%s: first byte is not a command digit", path);
        free(buf);
        n++;
    }
    closedir(d);
    cr_assert_geq(n, 8, "only %d CLI seeds", n);
}

Test(fuzz_corpus, npy_int64_beyond_2p53_is_refused)
{
    /* int64 members (in .npz) must convert exactly: 2^53 + 1 rounds to 2^53
     * as a double, so it is refused, while ±2^53 itself is accepted. */
    static const char hdr[] = "{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }";
    const int64_t vals[] = {(INT64_C(1) << 53) + 1, -(INT64_C(1) << 53) - 1, INT64_C(1) << 53, -(INT64_C(1) << 53)};
    for (int k = 0; k < 4; k++) {
        unsigned char buf[10 + 64 + 8];
        size_t hl = 64;
        memcpy(buf, "\x93NUMPY\x01\x00", 8);
        bn_put_le16(buf + 8, (uint16_t)hl);
        memset(buf + 10, ' ', hl);
        memcpy(buf + 10, hdr, sizeof hdr - 1);
        buf[10 + hl - 1] = '\n';
        bn_put_le64(buf + 10 + hl, (uint64_t)vals[k]);
        bn_array a;
        bn_status st = bn_npy_parse(buf, sizeof buf, "i8", 1, &a);
        if (k < 2) {
            cr_expect_eq(st, BN_ERR_DATA, "%lld accepted as %.17g", (long long)vals[k], a.data ? a.data[0] : 0.0);
        } else {
            cr_expect_eq(st, BN_OK, "%lld refused: %s", (long long)vals[k], bn_last_error());
            if (st == BN_OK) cr_expect_eq(a.data[0], (double)vals[k]);
        }
        bn_array_free(&a);
    }
}
