/* The only file that knows which backends were compiled in. */
#include "backend.h"

#include <stdio.h>
#include <string.h>

bn_status bn_backend_open(bn_backend_kind kind, bn_precision prec, int threads, int device,
                          bn_backend **out)
{
    *out = NULL;
    switch (kind) {
    case BN_BACKEND_CPU:
        return bn_cpu_backend_open(prec, threads, out);
    case BN_BACKEND_CUDA:
#ifdef BN_HAVE_CUDA
        return bn_cuda_backend_open(prec, device, out);
#else
        (void)device;
        return bn_fail(BN_ERR_UNAVAILABLE,
                       "the CUDA backend was not compiled into this build (rebuild with nvcc present, CUDA=1)");
#endif
    case BN_BACKEND_AUTO:
    default:
#ifdef BN_HAVE_CUDA
        if (bn_cuda_device_count() > 0) return bn_cuda_backend_open(prec, device, out);
        {
            /* The library prints nothing: the choice goes into the description
             * that the CLI shows (unless --quiet) and run.json records. */
            bn_status st = bn_cpu_backend_open(prec, threads, out);
            if (st == BN_OK) {
                size_t len = strlen((*out)->desc);
                snprintf((*out)->desc + len, sizeof (*out)->desc - len, "; auto: no CUDA device visible");
            }
            return st;
        }
#else
        return bn_cpu_backend_open(prec, threads, out);
#endif
    }
}

void bn_backend_close(bn_backend *be)
{
    if (be) be->ops->destroy(be);
}

bn_status bn_backends_describe(char *buf, size_t len)
{
    int k = snprintf(buf, len, "cpu: compiled in (OpenBLAS + OpenMP), always available\n");
    if (k < 0 || (size_t)k >= len) return BN_OK;
#ifdef BN_HAVE_CUDA
    return bn_cuda_describe(buf + k, len - (size_t)k);
#else
    snprintf(buf + k, len - (size_t)k, "cuda: not compiled in\n");
    return BN_OK;
#endif
}
