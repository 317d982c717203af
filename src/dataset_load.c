/* Data sets from a pair of .npy files: X (n×d) and y (n or n×1). */
#include "io_internal.h"

#include <stdio.h>

bn_status bn_dataset_from_arrays(const bn_array *X, const bn_array *y, const char *x_what, const char *y_what,
                                 const char *name, bn_dataset **out)
{
    char xs[200], ys[200];
    *out = NULL;
    bn_npy_shape_str(xs, sizeof xs, X->ndim, X->shape);
    bn_npy_shape_str(ys, sizeof ys, y->ndim, y->shape);
    bn_status st;
    if (X->ndim != 2) {
        st = bn_fail(BN_ERR_DATA, "%s: X must be 2-D (n samples × d features), but it has rank %d, shape %s",
                     x_what, X->ndim, xs);
    } else if (!(y->ndim == 1 || (y->ndim == 2 && y->shape[1] == 1))) {
        st = bn_fail(BN_ERR_DATA, "%s: y must be 1-D (n) or n×1, but it has rank %d, shape %s", y_what, y->ndim,
                     ys);
    } else if (y->shape[0] != X->shape[0]) {
        st = bn_fail(BN_ERR_DATA, "X (%s) has shape %s but y (%s) has shape %s: the numbers of samples differ "
                     "(%lld vs %lld)", x_what, xs, y_what, ys, (long long)X->shape[0], (long long)y->shape[0]);
    } else {
        st = bn_dataset_create(X->data, y->data, X->shape[0], X->shape[1], name, out);
        if (st != BN_OK) { /* say which files; copy first, bn_fail overwrites the text */
            char why[512];
            snprintf(why, sizeof why, "%s", bn_last_error());
            bn_fail(st, "%s / %s: %s", x_what, y_what, why);
        }
    }
    return st;
}

bn_status bn_dataset_load_npy(const char *x_path, const char *y_path, bn_dataset **out)
{
    if (!out) return bn_fail(BN_ERR_ARG, "bn_dataset_load_npy: out is NULL");
    *out = NULL;
    if (!x_path || !y_path) return bn_fail(BN_ERR_ARG, "bn_dataset_load_npy: X or y path is NULL");
    bn_array X = {0}, y = {0};
    bn_status st = bn_npy_read(x_path, &X);
    if (st == BN_OK) st = bn_npy_read(y_path, &y);
    if (st == BN_OK) st = bn_dataset_from_arrays(&X, &y, x_path, y_path, bn_path_basename(x_path), out);
    bn_array_free(&X);
    bn_array_free(&y);
    return st;
}
