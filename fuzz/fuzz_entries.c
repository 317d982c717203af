/* The readers' fuzz entry points (fuzz_common.h): compiled into each fuzz
 * target by mk/fuzz.mk and #included by tests/test_fuzz_corpus.c, so the
 * Criterion replay runs exactly what the fuzzer ran. */
#include "fuzz_common.h"
#include "io_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Data sets built from fuzzed bytes are small (the targets run with
 * -max_len), but keep the O(n·d·min(n,d)) least-squares solve cheap anyway. */
#define FUZZ_LS_MAX_CELLS 4096

static void use_dataset(bn_dataset *ds, bn_fuzz_info *info)
{
    int64_t n = bn_dataset_n(ds), d = bn_dataset_d(ds);
    if (info) {
        info->n = n;
        info->d = d;
    }
    (void)bn_dataset_checksum(ds);
    double *xc = NULL;
    if (bn_dataset_centered(ds, &xc) == BN_OK) free(xc);
    (void)bn_dataset_check_labels(ds);
    if (n * d <= FUZZ_LS_MAX_CELLS) {
        /* What `run` does first: the reference direction ê (least squares). */
        double *w = malloc((size_t)d * sizeof *w);
        if (w) {
            bn_ref_info ri;
            (void)bn_reference_direction(ds, BN_LOSS_SQUARE, w, &ri);
            free(w);
        }
    }
}

/* Builds a data set from arrays as `run --x X.npy --y y.npy` does, and uses it. */
static void dataset_from(const bn_array *X, const bn_array *y, bn_fuzz_info *info)
{
    bn_dataset *ds = NULL;
    if (bn_dataset_from_arrays(X, y, "X.npy", "y.npy", "fuzz", &ds) == BN_OK) {
        use_dataset(ds, info);
        bn_dataset_free(ds);
    }
}

/* X = a and y = its first column (a 2-D), or X = a as n×1 and y = a (a 1-D
 * or n×1): both shapes `run` accepts. */
static void use_array(const bn_array *a, bn_fuzz_info *info)
{
    if (a->ndim == 2 && a->shape[1] >= 1) {
        bn_array y = {0};
        y.ndim = 1;
        y.shape[0] = a->shape[0];
        y.size = a->shape[0];
        y.data = malloc((size_t)(a->shape[0] ? a->shape[0] : 1) * sizeof(double));
        if (!y.data) return;
        for (int64_t i = 0; i < a->shape[0]; i++) y.data[i] = a->data[i * a->shape[1]];
        dataset_from(a, &y, info);
        bn_array_free(&y);
    }
    if (a->ndim == 1 || (a->ndim == 2 && a->shape[1] == 1)) {
        bn_array X = *a; /* same data, viewed as n×1 */
        X.ndim = 2;
        X.shape[1] = 1;
        dataset_from(&X, a, info);
    }
}

bn_status bn_fuzz_npy(const uint8_t *data, size_t size, bn_fuzz_info *info)
{
    if (info) memset(info, 0, sizeof *info);
    bn_array a;
    /* Integer dtypes are accepted inside .npz archives only; parse both ways. */
    if (bn_npy_parse(data, size, "fuzz.npy", 1, &a) == BN_OK) bn_array_free(&a);
    bn_status st = bn_npy_parse(data, size, "fuzz.npy", 0, &a);
    if (st != BN_OK) return st;
    if (info) {
        info->ndim = a.ndim;
        memcpy(info->shape, a.shape, sizeof a.shape);
    }
    use_array(&a, info);
    bn_array_free(&a);
    return BN_OK;
}

bn_status bn_fuzz_npz(const uint8_t *data, size_t size, bn_fuzz_info *info)
{
    if (info) memset(info, 0, sizeof *info);
    /* The members a data set (x, y) or a run's outputs (what `plot` reads)
     * are looked up by. */
    static const char *const names[] = {"x", "y", "step", "loss", "rho", "eta_eff", "records", "w0"};
    enum { NNAMES = sizeof names / sizeof names[0] };
    bn_array a[NNAMES];
    bn_status first = BN_OK;
    char why[512] = "";
    for (int k = 0; k < NNAMES; k++) {
        bn_status st = bn_npz_parse(data, size, "fuzz.npz", names[k], &a[k]);
        if (st == BN_OK && info) info->members++;
        if (st != BN_OK && first == BN_OK) {
            first = st;
            snprintf(why, sizeof why, "%s", bn_last_error());
        }
    }
    if (info && a[0].data) {
        info->ndim = a[0].ndim;
        memcpy(info->shape, a[0].shape, sizeof a[0].shape);
    }
    if (a[0].data && a[1].data) dataset_from(&a[0], &a[1], info);
    if (a[2].data && a[2].ndim == 2) { /* plot: S×R step records, per-trajectory counts */
        int64_t S = a[2].shape[0], R = a[2].shape[1];
        double last = 0;
        for (int64_t j = 0; j < S; j++)
            for (int64_t r = 0; r < R; r++) last += a[2].data[j * R + r];
        (void)last;
    }
    for (int k = 0; k < NNAMES; k++) bn_array_free(&a[k]);
    if (info && info->members > 0) return BN_OK;
    if (first != BN_OK) bn_fail(first, "%s", why); /* the first member's error, not the last one's */
    return first;
}

bn_status bn_fuzz_csv(const uint8_t *data, size_t size, bn_fuzz_info *info)
{
    if (info) memset(info, 0, sizeof *info);
    /* The parser needs a writable buffer with one byte past the end, as
     * bn_read_whole_file gives it. */
    char *buf = malloc(size + 1);
    if (!buf) return bn_fail(BN_ERR_NOMEM, "fuzz: cannot copy %zu bytes", size);
    if (size) memcpy(buf, data, size);
    buf[size] = '\0';
    bn_dataset *ds = NULL;
    bn_status st = bn_csv_parse(buf, size, "fuzz/data.csv", &ds);
    free(buf);
    if (st == BN_OK) {
        use_dataset(ds, info);
        bn_dataset_free(ds);
    }
    return st;
}
