/* The data set object: X (n×d row-major), y, a name and a checksum. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bn_dataset {
    int64_t n, d;
    double *X, *y;
    char name[256];
    uint64_t checksum;
};

static uint64_t fnv1a(uint64_t h, const void *p, size_t len)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++) {
        h ^= b[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* Column sums accumulated exactly as bn_dataset_centered does. */
static void column_means(const double *X, int64_t n, int64_t d, double *mean)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) mean[j] += X[i * d + j];
    for (int64_t j = 0; j < d; j++) mean[j] /= (double)n;
}

/* Finite entries can still overflow when centered (a column sum, or x - mean
 * for values near ±1.8e308).  Everything downstream -- LAPACK's least squares
 * and SVD included -- takes the centered data, and LAPACK given an infinity
 * misbehaves (xerbla messages, garbage), so such data is refused here, once,
 * with the arithmetic bn_dataset_centered will use. */
static bn_status check_centering(const double *X, int64_t n, int64_t d)
{
    double *mean = calloc((size_t)d, sizeof *mean);
    if (!mean) return bn_fail(BN_ERR_NOMEM, "cannot allocate the column means");
    column_means(X, n, d, mean);
    int64_t bad = -1; /* the first entry, row-major, that centers to a non-finite value */
    for (int64_t t = 0; t < n * d && bad < 0; t++)
        if (!isfinite(X[t] - mean[t % d])) bad = t;
    free(mean);
    if (bad < 0) return BN_OK;
    return bn_fail(BN_ERR_DATA, "X column %lld overflows float64 when centered (value %g at row %lld); rescale the data",
                   (long long)(bad % d), X[bad], (long long)(bad / d));
}

bn_status bn_dataset_create(const double *X, const double *y, int64_t n, int64_t d,
                            const char *name, bn_dataset **out)
{
    *out = NULL;
    if (n < 2) return bn_fail(BN_ERR_DATA, "data needs at least 2 samples (got n=%lld)", (long long)n);
    if (d < 1) return bn_fail(BN_ERR_DATA, "data needs at least 1 feature (got d=%lld)", (long long)d);
    size_t nx = bn_mul_size((size_t)n, (size_t)d);
    if (!nx || !bn_mul_size(nx, sizeof(double)))
        return bn_fail(BN_ERR_ARG, "data shape %lld×%lld is too large", (long long)n, (long long)d);
    for (size_t i = 0; i < nx; i++)
        if (!isfinite(X[i]))
            return bn_fail(BN_ERR_DATA, "X has a non-finite value (%g) at row %lld, column %lld",
                           X[i], (long long)(i / (size_t)d), (long long)(i % (size_t)d));
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(y[i]))
            return bn_fail(BN_ERR_DATA, "y has a non-finite value (%g) at row %lld", y[i], (long long)i);
    BN_TRY(check_centering(X, n, d));
    bn_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) return bn_fail(BN_ERR_NOMEM, "cannot allocate the data set");
    ds->X = malloc(nx * sizeof(double));
    ds->y = malloc((size_t)n * sizeof(double));
    if (!ds->X || !ds->y) {
        bn_dataset_free(ds);
        return bn_fail(BN_ERR_NOMEM, "cannot allocate %zu bytes for the data set", nx * sizeof(double));
    }
    memcpy(ds->X, X, nx * sizeof(double));
    memcpy(ds->y, y, (size_t)n * sizeof(double));
    ds->n = n;
    ds->d = d;
    snprintf(ds->name, sizeof ds->name, "%s", name ? name : "data");
    uint64_t h = 1469598103934665603ULL;
    h = fnv1a(h, ds->X, nx * sizeof(double));
    ds->checksum = fnv1a(h, ds->y, (size_t)n * sizeof(double));
    *out = ds;
    return BN_OK;
}

void bn_dataset_free(bn_dataset *ds)
{
    if (!ds) return;
    free(ds->X);
    free(ds->y);
    free(ds);
}

int64_t bn_dataset_n(const bn_dataset *ds) { return ds->n; }
int64_t bn_dataset_d(const bn_dataset *ds) { return ds->d; }
const double *bn_dataset_X(const bn_dataset *ds) { return ds->X; }
const double *bn_dataset_y(const bn_dataset *ds) { return ds->y; }
const char *bn_dataset_name(const bn_dataset *ds) { return ds->name; }
uint64_t bn_dataset_checksum(const bn_dataset *ds) { return ds->checksum; }

bn_status bn_dataset_centered(const bn_dataset *ds, double **xc_out)
{
    int64_t n = ds->n, d = ds->d;
    double *xc = malloc((size_t)n * (size_t)d * sizeof(double));
    double *mean = calloc((size_t)d, sizeof(double));
    if (!xc || !mean) {
        free(xc);
        free(mean);
        return bn_fail(BN_ERR_NOMEM, "cannot allocate the centered data");
    }
    column_means(ds->X, n, d, mean);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) xc[i * d + j] = ds->X[i * d + j] - mean[j];
    free(mean);
    *xc_out = xc;
    return BN_OK;
}

bn_status bn_dataset_check_labels(const bn_dataset *ds)
{
    for (int64_t i = 0; i < ds->n; i++)
        if (ds->y[i] != 1.0 && ds->y[i] != -1.0)
            return bn_fail(BN_ERR_DATA,
                           "logistic loss needs labels -1 or +1, but y[%lld] = %g",
                           (long long)i, ds->y[i]);
    return BN_OK;
}
