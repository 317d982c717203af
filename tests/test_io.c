/* File formats and atomic writes: .npy, .npz, CSV, data set loaders.
 *
 * Fixtures are built byte by byte here (not by numpy) so the reader is
 * checked against the format itself; numpy is used only for the optional
 * cross-check in suite io_numpy. */
#include <criterion/criterion.h>

#include "bnspike.h"
#include "io_internal.h"

#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* ------------------------------------------------------------- fixtures */

static char g_dir[64];

static void make_dir(void)
{
    strcpy(g_dir, "/tmp/bnspike-io-XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir), "mkdtemp failed");
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void remove_dir(void)
{
    if (g_dir[0]) nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(io_npy, .init = make_dir, .fini = remove_dir);
TestSuite(io_npz, .init = make_dir, .fini = remove_dir);
TestSuite(io_csv, .init = make_dir, .fini = remove_dir);
TestSuite(io_load, .init = make_dir, .fini = remove_dir);
TestSuite(io_atomic, .init = make_dir, .fini = remove_dir);
TestSuite(io_numpy, .init = make_dir, .fini = remove_dir);

/* A path inside the test's directory (a few live at once). */
static const char *P(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s", path);
    cr_assert_eq(fwrite(p, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

static void write_text(const char *path, const char *s) { write_bytes(path, s, strlen(s)); }

static unsigned char *slurp(const char *path, size_t *n)
{
    unsigned char *buf;
    cr_assert_eq(bn_read_whole_file(path, &buf, n), BN_OK, "%s", bn_last_error());
    return buf;
}

/* Entries in the test directory, and how many look like temp files. */
static int count_entries(int *tmp_like)
{
    DIR *d = opendir(g_dir);
    cr_assert_not_null(d);
    int n = 0, t = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        n++;
        t += strstr(e->d_name, ".tmp.") != NULL;
    }
    closedir(d);
    if (tmp_like) *tmp_like = t;
    return n;
}

#define EXPECT_FAIL(call, status, word)                                                               \
    do {                                                                                              \
        bn_status st_ = (call);                                                                       \
        cr_assert_eq(st_, (status), "%s: got %s, expected %s (message: %s)", #call,                   \
                     bn_status_name(st_), bn_status_name(status), bn_last_error());                   \
        cr_assert_not_null(strstr(bn_last_error(), (word)), "message lacks '%s': %s", (word),         \
                           bn_last_error());                                                          \
    } while (0)

/* ---------------------------------------------------- hand-made .npy bytes */

static void put_u64(unsigned char *p, uint64_t v, int big)
{
    for (int i = 0; i < 8; i++) p[big ? 7 - i : i] = (unsigned char)(v >> (8 * i));
}
static void put_f64(unsigned char *p, double x, int big)
{
    uint64_t v;
    memcpy(&v, &x, 8);
    put_u64(p, v, big);
}
static void put_f32(unsigned char *p, float x, int big)
{
    uint32_t v;
    memcpy(&v, &x, 4);
    for (int i = 0; i < 4; i++) p[big ? 3 - i : i] = (unsigned char)(v >> (8 * i));
}

/* magic, version, header length, dict padded to 64 bytes, then data. */
static unsigned char *npy_image(int major, const char *dict, const void *data, size_t dlen, size_t *len)
{
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t total = (pre + dl + 1 + 63) / 64 * 64, hl = total - pre;
    unsigned char *b = malloc(total + dlen + 1);
    cr_assert_not_null(b);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major;
    b[7] = 0;
    if (major == 1) bn_put_le16(b + 8, (uint16_t)hl);
    else bn_put_le32(b + 8, (uint32_t)hl);
    memcpy(b + pre, dict, dl);
    memset(b + pre + dl, ' ', hl - dl - 1);
    b[total - 1] = '\n';
    if (dlen) memcpy(b + total, data, dlen);
    *len = total + dlen;
    return b;
}

static void write_npy(const char *path, int major, const char *dict, const void *data, size_t dlen)
{
    size_t n;
    unsigned char *b = npy_image(major, dict, data, dlen, &n);
    write_bytes(path, b, n);
    free(b);
}

/* ==================================================================== npy */

Test(io_npy, roundtrip_f64_c_order)
{
    double v[12] = {0.0, -0.0, 1.0, -2.5, M_PI, 1e-300, 4.9e-324, 1.7976931348623157e308,
                    -1e10, 0.1, 1.0 / 3.0, 12345.678};
    int64_t shape[2] = {3, 4};
    cr_assert_eq(bn_npy_write_f64(P("a.npy"), v, 2, shape), BN_OK, "%s", bn_last_error());

    size_t n;
    unsigned char *raw = slurp(P("a.npy"), &n);
    cr_assert_eq(memcmp(raw, "\x93NUMPY\x01\x00", 8), 0, "version 1.0 magic expected");
    size_t data_off = 10 + bn_get_le16(raw + 8);
    cr_assert_eq(data_off % 64, 0, "data should start 64-byte aligned, starts at %zu", data_off);
    cr_assert_eq(n, data_off + 12 * 8);
    cr_assert_not_null(memmem(raw, data_off, "'descr': '<f8'", 14));
    cr_assert_not_null(memmem(raw, data_off, "'shape': (3, 4)", 15));
    cr_assert_eq(raw[data_off - 1], '\n');
    free(raw);

    bn_array a;
    cr_assert_eq(bn_npy_read(P("a.npy"), &a), BN_OK, "%s", bn_last_error());
    cr_assert_eq(a.ndim, 2);
    cr_assert_eq(a.shape[0], 3);
    cr_assert_eq(a.shape[1], 4);
    cr_assert_eq(a.size, 12);
    cr_assert_eq(memcmp(a.data, v, sizeof v), 0, "values must round-trip bit for bit");
    cr_assert(signbit(a.data[1]), "-0.0 must keep its sign");
    bn_array_free(&a);
    cr_assert_null(a.data);
    cr_assert_eq(a.size, 0);
    bn_array_free(NULL);
}

Test(io_npy, roundtrip_rank0_rank1_empty)
{
    double s = -7.25, r[5] = {1, 2, 3, 4, 5};
    int64_t s5[1] = {5}, s03[2] = {0, 3};
    cr_assert_eq(bn_npy_write_f64(P("s.npy"), &s, 0, NULL), BN_OK, "%s", bn_last_error());
    cr_assert_eq(bn_npy_write_f64(P("r.npy"), r, 1, s5), BN_OK, "%s", bn_last_error());
    cr_assert_eq(bn_npy_write_f64(P("e.npy"), NULL, 2, s03), BN_OK, "%s", bn_last_error());

    bn_array a;
    cr_assert_eq(bn_npy_read(P("s.npy"), &a), BN_OK, "%s", bn_last_error());
    cr_assert_eq(a.ndim, 0);
    cr_assert_eq(a.size, 1);
    cr_assert_eq(a.data[0], -7.25);
    bn_array_free(&a);

    cr_assert_eq(bn_npy_read(P("r.npy"), &a), BN_OK, "%s", bn_last_error());
    cr_assert_eq(a.ndim, 1);
    cr_assert_eq(a.shape[0], 5);
    for (int i = 0; i < 5; i++) cr_assert_eq(a.data[i], i + 1.0);
    bn_array_free(&a);

    cr_assert_eq(bn_npy_read(P("e.npy"), &a), BN_OK, "%s", bn_last_error());
    cr_assert_eq(a.ndim, 2);
    cr_assert_eq(a.shape[0], 0);
    cr_assert_eq(a.shape[1], 3);
    cr_assert_eq(a.size, 0);
    cr_assert_not_null(a.data);
    bn_array_free(&a);
}

Test(io_npy, float32_little_endian)
{
    const float v[6] = {0.5f, -1.25f, 0.1f, 3.0e38f, 1e-45f, -0.0f};
    unsigned char d[24];
    for (int i = 0; i < 6; i++) put_f32(d + 4 * i, v[i], 0);
    write_npy(P("f.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", d, sizeof d);
    bn_array a;
    cr_assert_eq(bn_npy_read(P("f.npy"), &a), BN_OK, "%s", bn_last_error());
    cr_assert_eq(a.ndim, 2);
    cr_assert_eq(a.shape[0], 2);
    cr_assert_eq(a.shape[1], 3);
    for (int i = 0; i < 6; i++) cr_assert_eq(a.data[i], (double)v[i], "element %d", i);
    cr_assert_eq(a.data[2], 0.100000001490116119384765625, "0.1f widened exactly");
    bn_array_free(&a);
}

Test(io_npy, float32_big_endian_fortran)
{
    /* Row-major value of element (i, j) is 10*i + j; the file is column-major. */
    unsigned char d[24];
    int p = 0;
    for (int j = 0; j < 3; j++)
        for (int i = 0; i < 2; i++) put_f32(d + 4 * p++, (float)(10 * i + j), 1);
    write_npy(P("f.npy"), 1, "{'descr': '>f4', 'fortran_order': True, 'shape': (2, 3), }", d, sizeof d);
    bn_array a;
    cr_assert_eq(bn_npy_read(P("f.npy"), &a), BN_OK, "%s", bn_last_error());
    const double want[6] = {0, 1, 2, 10, 11, 12};
    for (int i = 0; i < 6; i++) cr_assert_eq(a.data[i], want[i], "element %d: %g", i, a.data[i]);
    bn_array_free(&a);
}

Test(io_npy, float64_fortran_rank3)
{
    unsigned char d[24 * 8];
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < 2; i++) put_f64(d + 8 * (i + 2 * (j + 3 * k)), 100.0 * i + 10 * j + k, 0);
    write_npy(P("f.npy"), 1, "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3, 4), }", d, sizeof d);
    bn_array a;
    cr_assert_eq(bn_npy_read(P("f.npy"), &a), BN_OK, "%s", bn_last_error());
    cr_assert_eq(a.ndim, 3);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 4; k++)
                cr_assert_eq(a.data[(i * 3 + j) * 4 + k], 100.0 * i + 10 * j + k, "at (%d,%d,%d)", i, j, k);
    bn_array_free(&a);
}

Test(io_npy, big_endian_f64_and_native_markers)
{
    unsigned char be[24], le[24];
    const double v[3] = {1.5, -M_PI, 6.02214076e23};
    for (int i = 0; i < 3; i++) {
        put_f64(be + 8 * i, v[i], 1);
        put_f64(le + 8 * i, v[i], 0);
    }
    write_npy(P("be.npy"), 1, "{'descr': '>f8', 'fortran_order': False, 'shape': (3,), }", be, 24);
    /* The test host is little-endian (x86-64/arm64), so '|' and '=' mean '<'. */
    write_npy(P("pipe.npy"), 1, "{'descr': '|f8', 'fortran_order': False, 'shape': (3,), }", le, 24);
    write_npy(P("eq.npy"), 1, "{'descr': '=f8', 'fortran_order': False, 'shape': (3,), }", le, 24);
    const char *files[3] = {"be.npy", "pipe.npy", "eq.npy"};
    for (int f = 0; f < 3; f++) {
        bn_array a;
        cr_assert_eq(bn_npy_read(P(files[f]), &a), BN_OK, "%s", bn_last_error());
        cr_assert_eq(memcmp(a.data, v, sizeof v), 0, "%s values differ", files[f]);
        bn_array_free(&a);
    }
}

Test(io_npy, versions_2_and_3_and_header_variants)
{
    unsigned char d[16];
    put_f64(d, 2.0, 0);
    put_f64(d + 8, -3.0, 0);
    /* Key order, double quotes, Python 2 long suffix and no trailing comma
     * are all legal dict spellings. */
    write_npy(P("v2.npy"), 2, "{\"shape\": (2L, 1L), \"fortran_order\": False, \"descr\": \"<f8\"}", d, 16);
    write_npy(P("v3.npy"), 3, "{'descr':'<f8','fortran_order':False,'shape':(2,1)}", d, 16);
    for (int f = 0; f < 2; f++) {
        bn_array a;
        cr_assert_eq(bn_npy_read(P(f ? "v3.npy" : "v2.npy"), &a), BN_OK, "%s", bn_last_error());
        cr_assert_eq(a.ndim, 2);
        cr_assert_eq(a.shape[0], 2);
        cr_assert_eq(a.shape[1], 1);
        cr_assert_eq(a.data[0], 2.0);
        cr_assert_eq(a.data[1], -3.0);
        bn_array_free(&a);
    }
}

Test(io_npy, missing_file)
{
    bn_array a;
    EXPECT_FAIL(bn_npy_read(P("nope.npy"), &a), BN_ERR_IO, "No such file");
    cr_assert_not_null(strstr(bn_last_error(), "nope.npy"));
    cr_assert_null(a.data);
}

Test(io_npy, truncated_preamble_and_header)
{
    bn_array a;
    write_bytes(P("t.npy"), "\x93NUM", 4);
    EXPECT_FAIL(bn_npy_read(P("t.npy"), &a), BN_ERR_FORMAT, "truncated");
    write_bytes(P("empty.npy"), "", 0);
    EXPECT_FAIL(bn_npy_read(P("empty.npy"), &a), BN_ERR_FORMAT, "truncated");
    /* Header length 1000, but only 20 bytes follow the preamble. */
    unsigned char b[30] = "\x93NUMPY\x01\x00";
    bn_put_le16(b + 8, 1000);
    memset(b + 10, ' ', 20);
    write_bytes(P("h.npy"), b, sizeof b);
    EXPECT_FAIL(bn_npy_read(P("h.npy"), &a), BN_ERR_FORMAT, "truncated");
    cr_assert_not_null(strstr(bn_last_error(), "1000"), "%s", bn_last_error());
}

Test(io_npy, data_shorter_than_header_says)
{
    unsigned char d[1000] = {0};
    write_npy(P("s.npy"), 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (64, 256), }", d, sizeof d);
    bn_array a;
    EXPECT_FAIL(bn_npy_read(P("s.npy"), &a), BN_ERR_FORMAT, "truncated");
    cr_assert_not_null(strstr(bn_last_error(), "shape (64, 256) float64 = 131072 bytes but only 1000 bytes follow"),
                       "%s", bn_last_error());
    cr_assert_null(a.data);
}

Test(io_npy, data_longer_than_header_says)
{
    unsigned char d[56] = {0};
    write_npy(P("l.npy"), 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", d, sizeof d);
    bn_array a;
    EXPECT_FAIL(bn_npy_read(P("l.npy"), &a), BN_ERR_FORMAT, "8 extra bytes");
    cr_assert_not_null(strstr(bn_last_error(), "(2, 3)"), "%s", bn_last_error());
}

Test(io_npy, unsupported_dtypes)
{
    static const struct {
        const char *descr, *word;
    } cases[] = {
        {"<i8", "signed integer"}, {"<c16", "complex"}, {"|O", "Python object"},
        {"<f2", "float32 and float64"}, {"|b1", "boolean"}, {"<U8", "unicode"},
    };
    unsigned char d[64] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dict[128];
        snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (2,), }", cases[i].descr);
        write_npy(P("d.npy"), 1, dict, d, sizeof d);
        bn_array a;
        EXPECT_FAIL(bn_npy_read(P("d.npy"), &a), BN_ERR_FORMAT, "dtype");
        char quoted[16];
        snprintf(quoted, sizeof quoted, "'%s'", cases[i].descr);
        cr_assert_not_null(strstr(bn_last_error(), quoted), "%s", bn_last_error());
        cr_assert_not_null(strstr(bn_last_error(), cases[i].word), "%s", bn_last_error());
        cr_assert_not_null(strstr(bn_last_error(), "only float32 and float64"), "%s", bn_last_error());
    }
    write_npy(P("s.npy"), 1, "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (1,), }", d, 8);
    bn_array a;
    EXPECT_FAIL(bn_npy_read(P("s.npy"), &a), BN_ERR_FORMAT, "structured dtype");
}

Test(io_npy, bad_magic_and_version)
{
    bn_array a;
    static const char not_npy[] = "NUMPY\x01\x00 this is not an npy file at all";
    write_bytes(P("m.npy"), not_npy, sizeof not_npy - 1);
    EXPECT_FAIL(bn_npy_read(P("m.npy"), &a), BN_ERR_FORMAT, "bad magic");
    static const char zip[] = "PK\x03\x04 and then some zip bytes......";
    write_bytes(P("z.npy"), zip, sizeof zip - 1);
    EXPECT_FAIL(bn_npy_read(P("z.npy"), &a), BN_ERR_FORMAT, ".npz (zip)");
    unsigned char d[8] = {0};
    size_t n;
    unsigned char *b = npy_image(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", d, 8, &n);
    b[6] = 4;
    write_bytes(P("v.npy"), b, n);
    free(b);
    EXPECT_FAIL(bn_npy_read(P("v.npy"), &a), BN_ERR_FORMAT, "version 4.0");
}

Test(io_npy, malformed_header_dicts)
{
    static const struct {
        const char *dict, *word;
    } cases[] = {
        {"{'descr': '<f8', 'fortran_order': False}", "missing key 'shape'"},
        {"{'descr': '<f8, 'fortran_order': False, 'shape': (1,), }", "expected"},
        {"{'descr': '<f8', 'fortran_order': 1, 'shape': (1,), }", "True or False"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (1, -2), }", "shape tuple"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'extra': 1}", "unexpected key 'extra'"},
        {"{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (1,)}", "twice"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", "more than 8"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", "64 bits"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }", "overflows"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (1,), } junk", "padding"},
        {"['descr', '<f8']", "'{'"},
    };
    unsigned char d[8] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_npy(P("h.npy"), 1, cases[i].dict, d, sizeof d);
        bn_array a;
        bn_status st = bn_npy_read(P("h.npy"), &a);
        cr_assert_eq(st, BN_ERR_FORMAT, "case %zu (%s): %s", i, cases[i].dict, bn_last_error());
        cr_assert_not_null(strstr(bn_last_error(), cases[i].word), "case %zu: '%s' not in: %s", i, cases[i].word,
                           bn_last_error());
        cr_assert_null(a.data);
    }
}

Test(io_npy, write_rejects_bad_arguments)
{
    int64_t neg[2] = {2, -1}, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    double x = 0;
    EXPECT_FAIL(bn_npy_write_f64(P("a.npy"), &x, 2, neg), BN_ERR_ARG, "negative");
    EXPECT_FAIL(bn_npy_write_f64(P("a.npy"), &x, 9, nine), BN_ERR_ARG, "rank 9");
    int64_t one = 1;
    EXPECT_FAIL(bn_npy_write_f64(P("a.npy"), NULL, 1, &one), BN_ERR_ARG, "NULL");
    cr_assert_eq(count_entries(NULL), 0, "nothing may be written on failure");
}

/* ==================================================================== npz */

Test(io_npz, write_then_read_several_members)
{
    double m[12], scalar = 0.125;
    for (int i = 0; i < 12; i++) m[i] = i / 7.0;
    int64_t steps[5] = {-1, 0, 42, INT64_C(9007199254740992), INT64_C(-9007199254740992)};
    int64_t s34[2] = {3, 4}, s5[1] = {5}, s0[1] = {0};
    bn_npz *z;
    cr_assert_eq(bn_npz_create(&z), BN_OK);
    cr_assert_eq(bn_npz_add_f64(z, "loss", m, 2, s34), BN_OK, "%s", bn_last_error());
    cr_assert_eq(bn_npz_add_i64(z, "diverged_step", steps, 1, s5), BN_OK, "%s", bn_last_error());
    cr_assert_eq(bn_npz_add_f64(z, "eta", &scalar, 0, NULL), BN_OK, "%s", bn_last_error());
    cr_assert_eq(bn_npz_add_f64(z, "none", NULL, 1, s0), BN_OK, "%s", bn_last_error());
    cr_assert_eq(bn_npz_write(z, P("run.npz")), BN_OK, "%s", bn_last_error());
    bn_npz_free(z);

    bn_array a;
    cr_assert_eq(bn_npz_read(P("run.npz"), "loss", &a), BN_OK, "%s", bn_last_error());
    cr_assert_eq(a.ndim, 2);
    cr_assert_eq(a.shape[0], 3);
    cr_assert_eq(a.shape[1], 4);
    cr_assert_eq(memcmp(a.data, m, sizeof m), 0);
    bn_array_free(&a);

    cr_assert_eq(bn_npz_read(P("run.npz"), "diverged_step", &a), BN_OK, "%s", bn_last_error());
    cr_assert_eq(a.ndim, 1);
    cr_assert_eq(a.size, 5);
    for (int i = 0; i < 5; i++) cr_assert_eq(a.data[i], (double)steps[i], "step %d", i);
    bn_array_free(&a);

    /* Members can be named with or without the .npy suffix. */
    cr_assert_eq(bn_npz_read(P("run.npz"), "eta.npy", &a), BN_OK, "%s", bn_last_error());
    cr_assert_eq(a.ndim, 0);
    cr_assert_eq(a.data[0], 0.125);
    bn_array_free(&a);

    cr_assert_eq(bn_npz_read(P("run.npz"), "none", &a), BN_OK, "%s", bn_last_error());
    cr_assert_eq(a.size, 0);
    cr_assert_eq(a.shape[0], 0);
    bn_array_free(&a);

    int tmp;
    cr_assert_eq(count_entries(&tmp), 1);
    cr_assert_eq(tmp, 0);
}

Test(io_npz, members_are_deflated_and_output_is_deterministic)
{
    double v[4096];
    for (int i = 0; i < 4096; i++) v[i] = (double)(i % 16); /* very compressible */
    int64_t s[1] = {4096};
    for (int k = 0; k < 2; k++) {
        bn_npz *z;
        cr_assert_eq(bn_npz_create(&z), BN_OK);
        cr_assert_eq(bn_npz_add_f64(z, "v", v, 1, s), BN_OK);
        cr_assert_eq(bn_npz_write(z, P(k ? "b.npz" : "a.npz")), BN_OK, "%s", bn_last_error());
        bn_npz_free(z);
    }
    size_t na, nb;
    unsigned char *a = slurp(P("a.npz"), &na), *b = slurp(P("b.npz"), &nb);
    cr_assert_eq(na, nb);
    cr_assert_eq(memcmp(a, b, na), 0, "same input must give the same bytes");
    cr_assert_lt(na, 4096 * 8 / 4, "deflate should shrink 32 KiB of repeating data, got %zu bytes", na);
    cr_assert_eq(bn_get_le32(a), 0x04034b50u, "local header signature");
    cr_assert_eq(bn_get_le16(a + 8), 8, "compression method 8 (deflate)");

    /* Local header and central directory agree on CRC and sizes, and the
     * CRC is that of the .npy image (header + little-endian data). */
    unsigned char hdr[BN_NPY_HEADER_MAX];
    size_t hl;
    int64_t count;
    cr_assert_eq(bn_npy_header("<f8", 1, s, hdr, &hl, &count), BN_OK);
    unsigned char le[4096 * 8];
    for (int i = 0; i < 4096; i++) put_f64(le + 8 * i, v[i], 0);
    uint32_t crc = (uint32_t)crc32(crc32(0, hdr, (uInt)hl), le, sizeof le);
    const unsigned char *cd = memmem(a, na, "PK\x01\x02", 4);
    cr_assert_not_null(cd);
    cr_assert_eq(bn_get_le32(a + 14), crc, "local header CRC");
    cr_assert_eq(bn_get_le32(cd + 16), crc, "central directory CRC");
    cr_assert_eq(bn_get_le32(a + 18), bn_get_le32(cd + 20), "compressed sizes differ");
    cr_assert_eq(bn_get_le32(a + 22), hl + sizeof le, "uncompressed size");
    cr_assert_eq(bn_get_le32(cd + 24), hl + sizeof le, "uncompressed size");
    free(a);
    free(b);
}

Test(io_npz, missing_member_lists_members)
{
    double x = 1;
    bn_npz *z;
    cr_assert_eq(bn_npz_create(&z), BN_OK);
    cr_assert_eq(bn_npz_add_f64(z, "alpha", &x, 0, NULL), BN_OK);
    cr_assert_eq(bn_npz_add_f64(z, "beta", &x, 0, NULL), BN_OK);
    EXPECT_FAIL(bn_npz_add_f64(z, "beta", &x, 0, NULL), BN_ERR_ARG, "already has a member named 'beta'");
    cr_assert_eq(bn_npz_write(z, P("r.npz")), BN_OK, "%s", bn_last_error());
    bn_npz_free(z);
    bn_array a;
    EXPECT_FAIL(bn_npz_read(P("r.npz"), "gamma", &a), BN_ERR_ARG, "no member 'gamma'");
    cr_assert_not_null(strstr(bn_last_error(), "members: alpha, beta"), "%s", bn_last_error());
    EXPECT_FAIL(bn_npz_read(P("absent.npz"), "gamma", &a), BN_ERR_IO, "No such file");
}

Test(io_npz, add_rejects_bad_arguments)
{
    bn_npz *z;
    double x = 0;
    int64_t neg = -3;
    cr_assert_eq(bn_npz_create(&z), BN_OK);
    EXPECT_FAIL(bn_npz_add_f64(z, "", &x, 0, NULL), BN_ERR_ARG, "non-empty name");
    EXPECT_FAIL(bn_npz_add_f64(z, "w", &x, 1, &neg), BN_ERR_ARG, "negative");
    EXPECT_FAIL(bn_npz_add_i64(z, "w", NULL, 0, NULL), BN_ERR_ARG, "NULL");
    bn_npz_free(z);
    bn_npz_free(NULL);
}

/* A stored (uncompressed) archive with a comment, as other zip writers make. */
Test(io_npz, reads_stored_members_written_by_others)
{
    unsigned char d[24];
    for (int i = 0; i < 3; i++) put_f64(d + 8 * i, i - 0.5, 0);
    size_t nl;
    unsigned char *npy = npy_image(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", d, 24, &nl);
    const char *name = "arr_0.npy", *comment = "made by hand";
    size_t ln = strlen(name), cl = strlen(comment);
    size_t total = 30 + ln + nl + 46 + ln + 22 + cl;
    unsigned char *zb = calloc(1, total), *p = zb;
    cr_assert_not_null(zb);
    uint32_t crc = (uint32_t)crc32(0, npy, (uInt)nl);
    bn_put_le32(p, 0x04034b50u);
    bn_put_le16(p + 4, 20);
    bn_put_le32(p + 14, crc);
    bn_put_le32(p + 18, (uint32_t)nl);
    bn_put_le32(p + 22, (uint32_t)nl);
    bn_put_le16(p + 26, (uint16_t)ln);
    memcpy(p + 30, name, ln);
    memcpy(p + 30 + ln, npy, nl);
    p += 30 + ln + nl;
    unsigned char *cd = p;
    bn_put_le32(p, 0x02014b50u);
    bn_put_le16(p + 4, 20);
    bn_put_le16(p + 6, 20);
    bn_put_le32(p + 16, crc);
    bn_put_le32(p + 20, (uint32_t)nl);
    bn_put_le32(p + 24, (uint32_t)nl);
    bn_put_le16(p + 28, (uint16_t)ln);
    memcpy(p + 46, name, ln);
    p += 46 + ln;
    bn_put_le32(p, 0x06054b50u);
    bn_put_le16(p + 8, 1);
    bn_put_le16(p + 10, 1);
    bn_put_le32(p + 12, (uint32_t)(p - cd));
    bn_put_le32(p + 16, (uint32_t)(cd - zb));
    bn_put_le16(p + 20, (uint16_t)cl);
    memcpy(p + 22, comment, cl);
    write_bytes(P("stored.npz"), zb, total);

    bn_array a;
    cr_assert_eq(bn_npz_read(P("stored.npz"), "arr_0", &a), BN_OK, "%s", bn_last_error());
    cr_assert_eq(a.size, 3);
    for (int i = 0; i < 3; i++) cr_assert_eq(a.data[i], i - 0.5);
    bn_array_free(&a);

    /* A wrong CRC in the directory is caught. */
    bn_put_le32(cd + 16, crc ^ 1u);
    write_bytes(P("badcrc.npz"), zb, total);
    EXPECT_FAIL(bn_npz_read(P("badcrc.npz"), "arr_0", &a), BN_ERR_FORMAT, "CRC-32 mismatch");
    free(zb);
    free(npy);
}

static void write_sample_npz(const char *path, int n)
{
    double *v = malloc((size_t)n * sizeof *v);
    cr_assert_not_null(v);
    for (int i = 0; i < n; i++) v[i] = sin(i * 0.01);
    int64_t s[1] = {n};
    bn_npz *z;
    cr_assert_eq(bn_npz_create(&z), BN_OK);
    cr_assert_eq(bn_npz_add_f64(z, "v", v, 1, s), BN_OK);
    cr_assert_eq(bn_npz_write(z, path), BN_OK, "%s", bn_last_error());
    bn_npz_free(z);
    free(v);
}

Test(io_npz, corrupt_and_truncated_archives)
{
    write_sample_npz(P("ok.npz"), 1000);
    size_t n;
    unsigned char *b = slurp(P("ok.npz"), &n);
    bn_array a;

    /* Cut in half: the end record is gone. */
    write_bytes(P("half.npz"), b, n / 2);
    EXPECT_FAIL(bn_npz_read(P("half.npz"), "v", &a), BN_ERR_FORMAT, "end-of-central-directory");

    /* Garbage in the middle of the deflate stream. */
    unsigned char *c = malloc(n);
    cr_assert_not_null(c);
    memcpy(c, b, n);
    size_t data = (size_t)30 + bn_get_le16(c + 26) + bn_get_le16(c + 28);
    for (size_t i = data + 40; i < data + 80; i++) c[i] ^= 0x5A;
    write_bytes(P("garbled.npz"), c, n);
    bn_status st = bn_npz_read(P("garbled.npz"), "v", &a);
    cr_assert_eq(st, BN_ERR_FORMAT, "%s", bn_last_error());
    cr_assert(strstr(bn_last_error(), "corrupt") || strstr(bn_last_error(), "truncated"), "%s", bn_last_error());

    /* End record pointing past the end of the file. */
    memcpy(c, b, n);
    bn_put_le32(c + n - 22 + 16, 0x7FFFFFF0u);
    write_bytes(P("lies.npz"), c, n);
    EXPECT_FAIL(bn_npz_read(P("lies.npz"), "v", &a), BN_ERR_FORMAT, "central directory");

    /* A .npy where an .npz is expected. */
    double x = 1;
    cr_assert_eq(bn_npy_write_f64(P("plain.npy"), &x, 0, NULL), BN_OK);
    EXPECT_FAIL(bn_npz_read(P("plain.npy"), "v", &a), BN_ERR_FORMAT, "single .npy");
    free(c);
    free(b);
}

Test(io_npz, zip64_records_when_limits_are_crossed)
{
    /* Lower the thresholds so that a few small members exercise the exact
     * code path of a > 4 GiB sweep: ZIP64 sizes, offsets and end records. */
    bn_npz_zip64_size_limit = 200;
    bn_npz_zip64_count_limit = 3;
    double big[64], small = 3.5;
    for (int i = 0; i < 64; i++) big[i] = i * 1.25;
    int64_t s[1] = {64};
    bn_npz *z;
    cr_assert_eq(bn_npz_create(&z), BN_OK);
    cr_assert_eq(bn_npz_add_f64(z, "small", &small, 0, NULL), BN_OK);
    cr_assert_eq(bn_npz_add_f64(z, "big", big, 1, s), BN_OK);
    cr_assert_eq(bn_npz_add_f64(z, "small2", &small, 0, NULL), BN_OK);
    cr_assert_eq(bn_npz_write(z, P("z64.npz")), BN_OK, "%s", bn_last_error());
    bn_npz_free(z);

    size_t n;
    unsigned char *b = slurp(P("z64.npz"), &n);
    cr_assert_eq(bn_get_le16(b + 4), 20, "small first member needs no ZIP64");
    cr_assert_not_null(memmem(b, n, "PK\x06\x06", 4), "ZIP64 end record expected");
    cr_assert_not_null(memmem(b, n, "PK\x06\x07", 4), "ZIP64 locator expected");
    cr_assert_eq(bn_get_le16(b + n - 22 + 10), 0xFFFF, "entry count is in the ZIP64 record");
    free(b);

    bn_array a;
    cr_assert_eq(bn_npz_read(P("z64.npz"), "big", &a), BN_OK, "%s", bn_last_error());
    cr_assert_eq(a.size, 64);
    cr_assert_eq(memcmp(a.data, big, sizeof big), 0);
    bn_array_free(&a);
    cr_assert_eq(bn_npz_read(P("z64.npz"), "small2", &a), BN_OK, "%s", bn_last_error());
    cr_assert_eq(a.data[0], 3.5);
    bn_array_free(&a);
}

Test(io_npz, more_than_65535_members)
{
    const int n = 70000;
    bn_npz *z;
    cr_assert_eq(bn_npz_create(&z), BN_OK);
    for (int i = 0; i < n; i++) {
        char name[32];
        double v = i;
        snprintf(name, sizeof name, "m%d", i);
        cr_assert_eq(bn_npz_add_f64(z, name, &v, 0, NULL), BN_OK, "%s", bn_last_error());
    }
    cr_assert_eq(bn_npz_write(z, P("many.npz")), BN_OK, "%s", bn_last_error());
    bn_npz_free(z);
    bn_array a;
    cr_assert_eq(bn_npz_read(P("many.npz"), "m69999", &a), BN_OK, "%s", bn_last_error());
    cr_assert_eq(a.data[0], 69999.0);
    bn_array_free(&a);
    cr_assert_eq(bn_npz_read(P("many.npz"), "m0", &a), BN_OK, "%s", bn_last_error());
    cr_assert_eq(a.data[0], 0.0);
    bn_array_free(&a);
    EXPECT_FAIL(bn_npz_read(P("many.npz"), "m70000", &a), BN_ERR_ARG, "70000 members");
}

/* ==================================================================== csv */

Test(io_csv, header_crlf_blank_lines_and_spaces)
{
    write_text(P("train.csv"), "x1, x2 ,\"y\"\r\n1.5,2,3\r\n\r\n  -4 , 5e-1 , -1 \r\n\n0x10,7,0.25\n\n");
    bn_dataset *ds;
    cr_assert_eq(bn_dataset_load_csv(P("train.csv"), &ds), BN_OK, "%s", bn_last_error());
    cr_assert_eq(bn_dataset_n(ds), 3);
    cr_assert_eq(bn_dataset_d(ds), 2);
    cr_assert_str_eq(bn_dataset_name(ds), "train.csv");
    const double X[6] = {1.5, 2, -4, 0.5, 16, 7}, y[3] = {3, -1, 0.25};
    for (int i = 0; i < 6; i++) cr_assert_eq(bn_dataset_X(ds)[i], X[i], "X[%d]", i);
    for (int i = 0; i < 3; i++) cr_assert_eq(bn_dataset_y(ds)[i], y[i], "y[%d]", i);
    bn_dataset_free(ds);
}

Test(io_csv, semicolon_and_tab_without_header)
{
    write_text(P("s.csv"), "1;2;3\n4;5;6\n");
    write_text(P("t.tsv"), "1\t2\t3\n4\t5\t6");
    const char *files[2] = {"s.csv", "t.tsv"};
    for (int f = 0; f < 2; f++) {
        bn_dataset *ds;
        cr_assert_eq(bn_dataset_load_csv(P(files[f]), &ds), BN_OK, "%s: %s", files[f], bn_last_error());
        cr_assert_eq(bn_dataset_n(ds), 2, "first line is data, not a header");
        cr_assert_eq(bn_dataset_d(ds), 2);
        cr_assert_eq(bn_dataset_X(ds)[2], 4.0);
        cr_assert_eq(bn_dataset_y(ds)[1], 6.0);
        bn_dataset_free(ds);
    }
}

Test(io_csv, ragged_rows)
{
    write_text(P("r.csv"), "a,b,c\n1,2,3\n4,5\n");
    bn_dataset *ds;
    EXPECT_FAIL(bn_dataset_load_csv(P("r.csv"), &ds), BN_ERR_FORMAT, "line 3 has 2 fields, expected 3");
    cr_assert_null(ds);
}

Test(io_csv, non_numeric_field)
{
    write_text(P("n.csv"), "1,2,3\n\n4,abc,6\n");
    bn_dataset *ds;
    EXPECT_FAIL(bn_dataset_load_csv(P("n.csv"), &ds), BN_ERR_FORMAT, "line 3, column 2: 'abc' is not a number");
    write_text(P("e.csv"), "1,2,3\n4,,6\n");
    EXPECT_FAIL(bn_dataset_load_csv(P("e.csv"), &ds), BN_ERR_FORMAT, "empty field");
}

Test(io_csv, empty_header_only_and_one_column)
{
    bn_dataset *ds;
    write_text(P("empty.csv"), "");
    EXPECT_FAIL(bn_dataset_load_csv(P("empty.csv"), &ds), BN_ERR_FORMAT, "empty");
    write_text(P("blank.csv"), "\n  \r\n\n");
    EXPECT_FAIL(bn_dataset_load_csv(P("blank.csv"), &ds), BN_ERR_FORMAT, "empty");
    write_text(P("hdr.csv"), "x,y\n");
    EXPECT_FAIL(bn_dataset_load_csv(P("hdr.csv"), &ds), BN_ERR_FORMAT, "only a header");
    write_text(P("one.csv"), "1\n2\n3\n");
    EXPECT_FAIL(bn_dataset_load_csv(P("one.csv"), &ds), BN_ERR_DATA, "at least 2");
    EXPECT_FAIL(bn_dataset_load_csv(P("missing.csv"), &ds), BN_ERR_IO, "No such file");
}

Test(io_csv, nan_rejected_by_dataset)
{
    write_text(P("nan.csv"), "1,2,3\n4,nan,6\n7,8,9\n");
    bn_dataset *ds;
    EXPECT_FAIL(bn_dataset_load_csv(P("nan.csv"), &ds), BN_ERR_DATA, "non-finite");
    cr_assert_not_null(strstr(bn_last_error(), "nan.csv"), "%s", bn_last_error());
    write_text(P("inf.csv"), "1,2,3\n4,5,inf\n");
    EXPECT_FAIL(bn_dataset_load_csv(P("inf.csv"), &ds), BN_ERR_DATA, "y has a non-finite");
}

/* Finite values whose centering overflows (a column sum past DBL_MAX, or
 * x - mean past it) are refused at load, before LAPACK sees an infinity;
 * just below the limit is accepted and centers to finite values. */
Test(io_dataset, centering_overflow_rejected)
{
    bn_dataset *ds = NULL;
    double y3[3] = {1, 2, 3}, y4[4] = {1, 2, 3, 4};
    double sum_over[4] = {1.7e308, 1.7e308, 1.7e308, 1.0};      /* sum = inf, x - x̄ finite */
    double diff_over[3] = {-1.7e308, 1.7e308, -1.7e308};        /* x̄ = -5.7e307, 1.7e308 - x̄ = inf */
    double ok[3] = {0.8e308, 0.8e308, -0.8e308};
    EXPECT_FAIL(bn_dataset_create(sum_over, y4, 4, 1, "t", &ds), BN_ERR_DATA, "overflows float64 when centered");
    cr_expect_null(ds);
    EXPECT_FAIL(bn_dataset_create(diff_over, y3, 3, 1, "t", &ds), BN_ERR_DATA, "at row 1");
    double X2[6] = {1, 1.7e308, 2, 1.7e308, 3, -1.7e308};       /* column 1 of 2 */
    EXPECT_FAIL(bn_dataset_create(X2, y3, 3, 2, "t", &ds), BN_ERR_DATA, "X column 1");
    cr_assert_eq(bn_dataset_create(ok, y3, 3, 1, "t", &ds), BN_OK, "%s", bn_last_error());
    double *xc = NULL;
    cr_assert_eq(bn_dataset_centered(ds, &xc), BN_OK);
    double mean = (0.8e308 + 0.8e308 - 0.8e308) / 3; /* naive formula: same order of sums */
    for (int i = 0; i < 3; i++) cr_expect_eq(xc[i], ok[i] - mean, "xc[%d] = %g", i, xc[i]);
    free(xc);
    bn_dataset_free(ds);
}

/* ============================================================ npy loaders */

Test(io_load, x_and_y_from_npy)
{
    /* X: float32 Fortran order written by hand; y: n×1 float64. */
    unsigned char d[8 * 4];
    int p = 0;
    for (int j = 0; j < 2; j++)
        for (int i = 0; i < 4; i++) put_f32(d + 4 * p++, (float)(i + 0.5 * j), 0);
    write_npy(P("X.npy"), 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (4, 2), }", d, sizeof d);
    double y[4] = {1, -1, 1, -1};
    int64_t s41[2] = {4, 1}, s4[1] = {4};
    cr_assert_eq(bn_npy_write_f64(P("y.npy"), y, 2, s41), BN_OK);
    cr_assert_eq(bn_npy_write_f64(P("y1.npy"), y, 1, s4), BN_OK);
    const char *ys[2] = {"y.npy", "y1.npy"};
    for (int f = 0; f < 2; f++) {
        bn_dataset *ds;
        cr_assert_eq(bn_dataset_load_npy(P("X.npy"), P(ys[f]), &ds), BN_OK, "%s", bn_last_error());
        cr_assert_eq(bn_dataset_n(ds), 4);
        cr_assert_eq(bn_dataset_d(ds), 2);
        cr_assert_str_eq(bn_dataset_name(ds), "X.npy");
        for (int i = 0; i < 4; i++) {
            cr_assert_eq(bn_dataset_X(ds)[2 * i], (double)i);
            cr_assert_eq(bn_dataset_X(ds)[2 * i + 1], i + 0.5);
            cr_assert_eq(bn_dataset_y(ds)[i], y[i]);
        }
        bn_dataset_free(ds);
    }
}

Test(io_load, x_rank_3_rejected)
{
    double v[8] = {0};
    int64_t s222[3] = {2, 2, 2}, s2[1] = {2};
    cr_assert_eq(bn_npy_write_f64(P("X.npy"), v, 3, s222), BN_OK);
    cr_assert_eq(bn_npy_write_f64(P("y.npy"), v, 1, s2), BN_OK);
    bn_dataset *ds;
    EXPECT_FAIL(bn_dataset_load_npy(P("X.npy"), P("y.npy"), &ds), BN_ERR_DATA, "rank 3");
    cr_assert_not_null(strstr(bn_last_error(), "(2, 2, 2)"), "%s", bn_last_error());
    cr_assert_null(ds);
}

Test(io_load, y_with_two_columns_rejected)
{
    double v[8] = {0};
    int64_t s42[2] = {4, 2};
    cr_assert_eq(bn_npy_write_f64(P("X.npy"), v, 2, s42), BN_OK);
    cr_assert_eq(bn_npy_write_f64(P("y.npy"), v, 2, s42), BN_OK);
    bn_dataset *ds;
    EXPECT_FAIL(bn_dataset_load_npy(P("X.npy"), P("y.npy"), &ds), BN_ERR_DATA, "rank 2, shape (4, 2)");
}

Test(io_load, row_mismatch_rejected)
{
    double v[8] = {0};
    int64_t s42[2] = {4, 2}, s3[1] = {3};
    cr_assert_eq(bn_npy_write_f64(P("X.npy"), v, 2, s42), BN_OK);
    cr_assert_eq(bn_npy_write_f64(P("y.npy"), v, 1, s3), BN_OK);
    bn_dataset *ds;
    EXPECT_FAIL(bn_dataset_load_npy(P("X.npy"), P("y.npy"), &ds), BN_ERR_DATA, "shape (4, 2)");
    cr_assert_not_null(strstr(bn_last_error(), "shape (3,)"), "%s", bn_last_error());
}

Test(io_load, nan_and_bad_files_rejected)
{
    double v[4] = {1, NAN, 3, 4}, y[2] = {1, 2};
    int64_t s22[2] = {2, 2}, s2[1] = {2};
    cr_assert_eq(bn_npy_write_f64(P("X.npy"), v, 2, s22), BN_OK);
    cr_assert_eq(bn_npy_write_f64(P("y.npy"), y, 1, s2), BN_OK);
    bn_dataset *ds;
    EXPECT_FAIL(bn_dataset_load_npy(P("X.npy"), P("y.npy"), &ds), BN_ERR_DATA, "non-finite");
    EXPECT_FAIL(bn_dataset_load_npy(P("X.npy"), P("nope.npy"), &ds), BN_ERR_IO, "nope.npy");
    /* Integer data is refused for X even though .npz members may be int64. */
    unsigned char d[32] = {0};
    write_npy(P("Xi.npy"), 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }", d, 32);
    EXPECT_FAIL(bn_dataset_load_npy(P("Xi.npy"), P("y.npy"), &ds), BN_ERR_FORMAT, "dtype");
}

/* ================================================================= atomic */

Test(io_atomic, missing_directory_fails_and_leaves_nothing)
{
    const char *msg = "hello";
    EXPECT_FAIL(bn_write_file_atomic(P("no/such/dir/out.bin"), msg, 5), BN_ERR_IO, "No such file or directory");
    cr_assert_not_null(strstr(bn_last_error(), "out.bin"), "%s", bn_last_error());
    cr_assert_eq(count_entries(NULL), 0);
    double x = 1;
    EXPECT_FAIL(bn_npy_write_f64(P("nodir/x.npy"), &x, 0, NULL), BN_ERR_IO, "x.npy");
    bn_npz *z;
    cr_assert_eq(bn_npz_create(&z), BN_OK);
    EXPECT_FAIL(bn_npz_write(z, P("nodir/x.npz")), BN_ERR_IO, "x.npz");
    bn_npz_free(z);
    cr_assert_eq(count_entries(NULL), 0);
}

Test(io_atomic, success_replaces_file_and_leaves_no_temp)
{
    write_text(P("out.txt"), "old contents that are longer than the new ones");
    cr_assert_eq(bn_write_file_atomic(P("out.txt"), "new", 3), BN_OK, "%s", bn_last_error());
    size_t n;
    unsigned char *b = slurp(P("out.txt"), &n);
    cr_assert_eq(n, 3);
    cr_assert_eq(memcmp(b, "new", 3), 0);
    free(b);
    cr_assert_eq(bn_write_file_atomic(P("zero.bin"), NULL, 0), BN_OK, "%s", bn_last_error());
    struct stat sb;
    cr_assert_eq(stat(P("zero.bin"), &sb), 0);
    cr_assert_eq(sb.st_size, 0);
    cr_assert_eq(sb.st_mode & 0777, 0644, "mode %o", (unsigned)(sb.st_mode & 0777));
    int tmp;
    cr_assert_eq(count_entries(&tmp), 2);
    cr_assert_eq(tmp, 0, "a temp file was left behind");
}

Test(io_atomic, failed_write_keeps_old_file)
{
    /* A file size limit makes write() fail half way, like a full disk. */
    write_text(P("keep.bin"), "precious");
    char *big = malloc(1 << 20);
    cr_assert_not_null(big);
    memset(big, 'x', 1 << 20);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, lim;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 65536;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    bn_status st = bn_write_file_atomic(P("keep.bin"), big, 1 << 20);
    setrlimit(RLIMIT_FSIZE, &old);
    free(big);
    cr_assert_eq(st, BN_ERR_IO, "%s", bn_last_error());
    cr_assert_not_null(strstr(bn_last_error(), "File too large"), "%s", bn_last_error());
    cr_assert_not_null(strstr(bn_last_error(), "keep.bin"), "%s", bn_last_error());
    size_t n;
    unsigned char *b = slurp(P("keep.bin"), &n);
    cr_assert_eq(n, 8);
    cr_assert_eq(memcmp(b, "precious", 8), 0, "the old file must survive");
    free(b);
    int tmp;
    cr_assert_eq(count_entries(&tmp), 1);
    cr_assert_eq(tmp, 0, "the temp file must be removed");
}

/* ============================================================= numpy check */

static int have_numpy(void) { return system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0; }

/* Runs a Python script with the test directory as argv[1]; returns its
 * stdout+stderr in a malloc'ed string and its exit status in *rc. */
static char *run_python(const char *script, int *rc)
{
    write_text(P("check.py"), script);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s 2>&1", P("check.py"), g_dir);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    cr_assert_not_null(out);
    size_t k;
    while ((k = fread(out + n, 1, cap - 1 - n, f)) > 0) {
        n += k;
        if (n + 1 == cap) {
            cap *= 2;
            out = realloc(out, cap);
            cr_assert_not_null(out);
        }
    }
    out[n] = '\0';
    *rc = pclose(f);
    return out;
}

/* Reads "name value value ..." lines printed with float.hex() back. */
static int parse_hex_line(const char *out, const char *name, double *vals, int max)
{
    char key[64];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(out, key);
    if (!p) return -1;
    p += strlen(key);
    int n = 0;
    while (n < max && *p && *p != '\n') {
        char *end;
        vals[n] = strtod(p, &end);
        if (end == p) break;
        n++;
        p = end;
    }
    return n;
}

Test(io_numpy, numpy_loads_our_npz_and_npy)
{
    if (!have_numpy()) cr_skip_test("/usr/bin/python3 has no numpy: cross-check skipped");
    double m[6], s = -0.1;
    for (int i = 0; i < 6; i++) m[i] = (i - 2) / 3.0;
    int64_t steps[3] = {-1, 7, INT64_C(1) << 40};
    int64_t s23[2] = {2, 3}, s3[1] = {3};
    bn_npz *z;
    cr_assert_eq(bn_npz_create(&z), BN_OK);
    cr_assert_eq(bn_npz_add_f64(z, "m", m, 2, s23), BN_OK);
    cr_assert_eq(bn_npz_add_i64(z, "steps", steps, 1, s3), BN_OK);
    cr_assert_eq(bn_npz_add_f64(z, "s", &s, 0, NULL), BN_OK);
    cr_assert_eq(bn_npz_write(z, P("out.npz")), BN_OK, "%s", bn_last_error());
    bn_npz_free(z);
    cr_assert_eq(bn_npy_write_f64(P("m.npy"), m, 2, s23), BN_OK);

    int rc;
    char *out = run_python(
        "import sys, numpy as np, zipfile\n"
        "d = sys.argv[1]\n"
        "z = np.load(d + '/out.npz')\n"
        "print('')\n"
        "print('files', ' '.join(sorted(z.files)))\n"
        "print('dtypes', z['m'].dtype.str, z['steps'].dtype.str, z['s'].dtype.str)\n"
        "print('shapes', z['m'].shape, z['steps'].shape, z['s'].shape)\n"
        "print('m', ' '.join(float(v).hex() for v in z['m'].ravel()))\n"
        "print('steps', ' '.join(str(int(v)) for v in z['steps']))\n"
        "print('s', float(z['s']).hex())\n"
        "print('methods', [i.compress_type for i in zipfile.ZipFile(d + '/out.npz').infolist()])\n"
        "print('testzip', zipfile.ZipFile(d + '/out.npz').testzip())\n"
        "a = np.load(d + '/m.npy')\n"
        "print('npy', a.dtype.str, a.shape, a.flags['C_CONTIGUOUS'], ' '.join(float(v).hex() for v in a.ravel()))\n"
        "print('npyvals', ' '.join(float(v).hex() for v in a.ravel()))\n",
        &rc);
    cr_assert_eq(rc, 0, "python failed:\n%s", out);
    cr_assert_not_null(strstr(out, "files m s steps"), "%s", out);
    cr_assert_not_null(strstr(out, "dtypes <f8 <i8 <f8"), "%s", out);
    cr_assert_not_null(strstr(out, "shapes (2, 3) (3,) ()"), "%s", out);
    cr_assert_not_null(strstr(out, "steps -1 7 1099511627776"), "%s", out);
    cr_assert_not_null(strstr(out, "methods [8, 8, 8]"), "%s", out);
    cr_assert_not_null(strstr(out, "testzip None"), "python's CRC check failed: %s", out);
    cr_assert_not_null(strstr(out, "npy <f8 (2, 3) True"), "%s", out);
    double got[8];
    cr_assert_eq(parse_hex_line(out, "m", got, 8), 6, "%s", out);
    for (int i = 0; i < 6; i++) cr_assert_eq(got[i], m[i], "m[%d]", i);
    cr_assert_eq(parse_hex_line(out, "npyvals", got, 8), 6, "%s", out);
    for (int i = 0; i < 6; i++) cr_assert_eq(got[i], m[i], "npy[%d]", i);
    cr_assert_eq(parse_hex_line(out, "s", got, 1), 1, "%s", out);
    cr_assert_eq(got[0], -0.1);
    free(out);
}

Test(io_numpy, we_load_numpy_written_files)
{
    if (!have_numpy()) cr_skip_test("/usr/bin/python3 has no numpy: cross-check skipped");
    int rc;
    char *out = run_python(
        "import sys, numpy as np, zipfile\n"
        "d = sys.argv[1]\n"
        "a = (np.arange(24).reshape(2, 3, 4) / 7)\n"
        "np.save(d + '/f32F.npy', np.asfortranarray(a.astype('<f4')))\n"
        "np.save(d + '/f8be.npy', a.astype('>f8'))\n"
        "np.savez(d + '/stored.npz', a=a, i=np.arange(5) - 2)\n"
        "np.savez_compressed(d + '/deflated.npz', a=a)\n"
        "with zipfile.ZipFile(d + '/z64.npz', 'w', zipfile.ZIP_DEFLATED) as zf:\n"
        "    with zf.open('a.npy', 'w', force_zip64=True) as f:\n"
        "        np.lib.format.write_array(f, a)\n"
        "print('ok')\n",
        &rc);
    cr_assert_eq(rc, 0, "python failed:\n%s", out);
    free(out);

    bn_array x;
    cr_assert_eq(bn_npy_read(P("f32F.npy"), &x), BN_OK, "%s", bn_last_error());
    cr_assert_eq(x.ndim, 3);
    for (int i = 0; i < 24; i++) cr_assert_eq(x.data[i], (double)(float)(i / 7.0), "f32F[%d]", i);
    bn_array_free(&x);
    cr_assert_eq(bn_npy_read(P("f8be.npy"), &x), BN_OK, "%s", bn_last_error());
    for (int i = 0; i < 24; i++) cr_assert_eq(x.data[i], i / 7.0, "f8be[%d]", i);
    bn_array_free(&x);
    const char *npz[3] = {"stored.npz", "deflated.npz", "z64.npz"};
    for (int f = 0; f < 3; f++) {
        cr_assert_eq(bn_npz_read(P(npz[f]), "a", &x), BN_OK, "%s: %s", npz[f], bn_last_error());
        cr_assert_eq(x.ndim, 3);
        cr_assert_eq(x.shape[2], 4);
        for (int i = 0; i < 24; i++) cr_assert_eq(x.data[i], i / 7.0, "%s a[%d]", npz[f], i);
        bn_array_free(&x);
    }
    cr_assert_eq(bn_npz_read(P("stored.npz"), "i", &x), BN_OK, "%s", bn_last_error());
    for (int i = 0; i < 5; i++) cr_assert_eq(x.data[i], i - 2.0);
    bn_array_free(&x);
}

Test(io_numpy, numpy_loads_our_zip64_archives)
{
    if (!have_numpy()) cr_skip_test("/usr/bin/python3 has no numpy: cross-check skipped");
    /* ZIP64 member fields via lowered limits ... */
    bn_npz_zip64_size_limit = 100;
    bn_npz_zip64_count_limit = 2;
    double v[40];
    for (int i = 0; i < 40; i++) v[i] = i / 3.0;
    int64_t s[1] = {40};
    bn_npz *z;
    cr_assert_eq(bn_npz_create(&z), BN_OK);
    for (int k = 0; k < 3; k++) {
        char name[16];
        snprintf(name, sizeof name, "v%d", k);
        cr_assert_eq(bn_npz_add_f64(z, name, v, 1, s), BN_OK);
    }
    cr_assert_eq(bn_npz_write(z, P("z64.npz")), BN_OK, "%s", bn_last_error());
    bn_npz_free(z);
    bn_npz_zip64_size_limit = 0xFFFFFFFFu;
    bn_npz_zip64_count_limit = 0xFFFFu;
    /* ... and a real archive past the 65535-entry limit. */
    cr_assert_eq(bn_npz_create(&z), BN_OK);
    for (int i = 0; i < 66000; i++) {
        char name[16];
        double x = i;
        snprintf(name, sizeof name, "m%d", i);
        cr_assert_eq(bn_npz_add_f64(z, name, &x, 0, NULL), BN_OK);
    }
    cr_assert_eq(bn_npz_write(z, P("many.npz")), BN_OK, "%s", bn_last_error());
    bn_npz_free(z);

    int rc;
    char *out = run_python(
        "import sys, numpy as np, zipfile\n"
        "d = sys.argv[1]\n"
        "z = np.load(d + '/z64.npz')\n"
        "assert zipfile.ZipFile(d + '/z64.npz').testzip() is None\n"
        "print('')\n"
        "print('v2', ' '.join(float(x).hex() for x in z['v2']))\n"
        "m = np.load(d + '/many.npz')\n"
        "print('many', len(m.files), int(sum(float(m['m%d' % i]) for i in range(0, 66000, 1000))), float(m['m65999']))\n",
        &rc);
    cr_assert_eq(rc, 0, "python failed:\n%s", out);
    double got[40];
    cr_assert_eq(parse_hex_line(out, "v2", got, 40), 40, "%s", out);
    for (int i = 0; i < 40; i++) cr_assert_eq(got[i], v[i], "v2[%d]", i);
    cr_assert_not_null(strstr(out, "many 66000 2145000 65999.0"), "%s", out);
    free(out);
}
