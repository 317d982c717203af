/* float64 host arrays to and from backend buffers of either precision: the
 * conversion every host-side caller of upload/download needs (sim.c, the
 * sharpness records), written once. */
#include "backend.h"

#include <stdlib.h>

bn_status bn_upload_f64(bn_backend *be, void *dst, const double *src, size_t count)
{
    if (be->precision == BN_FP64) return be->ops->upload(be, dst, src, count * sizeof(double));
    float *tmp = malloc(count * sizeof(float) + 1);
    if (!tmp) return bn_fail(BN_ERR_NOMEM, "cannot allocate %zu bytes of staging memory", count * 4);
    for (size_t i = 0; i < count; i++) tmp[i] = (float)src[i];
    bn_status st = be->ops->upload(be, dst, tmp, count * sizeof(float));
    free(tmp);
    return st;
}

bn_status bn_download_f64(bn_backend *be, double *dst, const void *src, size_t count)
{
    if (be->precision == BN_FP64) return be->ops->download(be, dst, src, count * sizeof(double));
    float *tmp = malloc(count * sizeof(float) + 1);
    if (!tmp) return bn_fail(BN_ERR_NOMEM, "cannot allocate %zu bytes of staging memory", count * 4);
    bn_status st = be->ops->download(be, tmp, src, count * sizeof(float));
    for (size_t i = 0; st == BN_OK && i < count; i++) dst[i] = (double)tmp[i];
    free(tmp);
    return st;
}
