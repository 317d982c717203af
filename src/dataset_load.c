/* Data sets from a pair of .npy files: X (n×d) and y (n or n×1). */
#include "io_internal.h"

#include <stdio.h>

bn_status bn_dataset_load_npy(const char *x_path, const char *y_path, bn_dataset **out)
{
    if (!out) return bn_fail(BN_ERR_ARG, "bn_dataset_load_npy: out is NULL");
    *out = NULL;
    if (!x_path || !y_path) return bn_fail(BN_ERR_ARG, "bn_dataset_load_npy: X or y path is NULL");
    bn_array X = {0}, y = {0};
    char xs[200], ys[200];
    bn_status st = bn_npy_read(x_path, &X);
    if (st == BN_OK) st = bn_npy_read(y_path, &y);
    if (st != BN_OK) goto done;

    bn_npy_shape_str(xs, sizeof xs, X.ndim, X.shape);
    bn_npy_shape_str(ys, sizeof ys, y.ndim, y.shape);
    if (X.ndim != 2) {
        st = bn_fail(BN_ERR_DATA, "%s: X must be 2-D (n samples × d features), but it has rank %d, shape %s",
                     x_path, X.ndim, xs);
    } else if (!(y.ndim == 1 || (y.ndim == 2 && y.shape[1] == 1))) {
        st = bn_fail(BN_ERR_DATA, "%s: y must be 1-D (n) or n×1, but it has rank %d, shape %s", y_path, y.ndim, ys);
    } else if (y.shape[0] != X.shape[0]) {
        st = bn_fail(BN_ERR_DATA, "X (%s) has shape %s but y (%s) has shape %s: the numbers of samples differ "
                     "(%lld vs %lld)", x_path, xs, y_path, ys, (long long)X.shape[0], (long long)y.shape[0]);
    } else {
        st = bn_dataset_create(X.data, y.data, X.shape[0], X.shape[1], bn_path_basename(x_path), out);
        if (st != BN_OK) { /* say which files; copy first, bn_fail overwrites the text */
            char why[512];
            snprintf(why, sizeof why, "%s", bn_last_error());
            bn_fail(st, "%s / %s: %s", x_path, y_path, why);
        }
    }
done:
    bn_array_free(&X);
    bn_array_free(&y);
    return st;
}
