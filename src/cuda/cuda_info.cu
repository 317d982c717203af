/* Device facts and a copy-bandwidth probe (bn_cuda_extra.h), so the GPU
 * benchmark is plain C and needs no CUDA headers. */
#include "cuda_common.cuh"

extern "C" {
#include "cuda/bn_cuda_extra.h"
}

#include <algorithm>
#include <string.h>
#include <vector>

extern "C" bn_status bn_cuda_device_info(int device, bn_cuda_info *out)
{
    memset(out, 0, sizeof *out);
    BN_CU(cudaSetDevice(device));
    cudaDeviceProp prop;
    BN_CU(cudaGetDeviceProperties(&prop, device));
    snprintf(out->name, sizeof out->name, "%.200s", prop.name);
    out->cc_major = prop.major;
    out->cc_minor = prop.minor;
    out->sms = prop.multiProcessorCount;
    out->l2_bytes = (size_t)prop.l2CacheSize;
    BN_CU(cudaMemGetInfo(&out->free_mem, &out->total_mem));
    BN_CU(cudaRuntimeGetVersion(&out->runtime_version));
    BN_CU(cudaDriverGetVersion(&out->driver_version));
    BN_CUBLAS(cublasGetProperty(MAJOR_VERSION, &out->cublas_major));
    BN_CUBLAS(cublasGetProperty(MINOR_VERSION, &out->cublas_minor));
    BN_CUBLAS(cublasGetProperty(PATCH_LEVEL, &out->cublas_patch));
    return BN_OK;
}

namespace {
struct copy_bufs {
    void *a = nullptr, *b = nullptr;
    cudaEvent_t e0 = nullptr, e1 = nullptr;
    cudaStream_t s = nullptr;
    ~copy_bufs()
    {
        if (a) (void)cudaFree(a);
        if (b) (void)cudaFree(b);
        if (e0) (void)cudaEventDestroy(e0);
        if (e1) (void)cudaEventDestroy(e1);
        if (s) (void)cudaStreamDestroy(s);
    }
};
} // namespace

extern "C" bn_status bn_cuda_copy_bandwidth(int device, size_t bytes, int reps, double *bytes_per_s)
{
    *bytes_per_s = 0;
    if (reps < 1) reps = 1;
    BN_CU(cudaSetDevice(device));
    copy_bufs c;
    BN_CU(cudaStreamCreateWithFlags(&c.s, cudaStreamNonBlocking));
    BN_CU(cudaMalloc(&c.a, bytes));
    BN_CU(cudaMalloc(&c.b, bytes));
    BN_CU(cudaMemsetAsync(c.a, 1, bytes, c.s));
    BN_CU(cudaMemsetAsync(c.b, 2, bytes, c.s));
    BN_CU(cudaEventCreate(&c.e0));
    BN_CU(cudaEventCreate(&c.e1));
    BN_CU(cudaMemcpyAsync(c.b, c.a, bytes, cudaMemcpyDeviceToDevice, c.s)); /* warm-up */
    std::vector<float> ms;
    for (int r = 0; r < reps; r++) {
        BN_CU(cudaEventRecord(c.e0, c.s));
        BN_CU(cudaMemcpyAsync((r & 1) ? c.a : c.b, (r & 1) ? c.b : c.a, bytes, cudaMemcpyDeviceToDevice, c.s));
        BN_CU(cudaEventRecord(c.e1, c.s));
        BN_CU(cudaEventSynchronize(c.e1));
        float t = 0;
        BN_CU(cudaEventElapsedTime(&t, c.e0, c.e1));
        ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    const double med = ms[ms.size() / 2] * 1e-3;
    if (!(med > 0)) return bn_fail(BN_ERR_BACKEND, "copy-bandwidth probe: elapsed time %g s", med);
    *bytes_per_s = 2.0 * (double)bytes / med;
    return BN_OK;
}

extern "C" bn_status bn_cuda_device_sync(int device)
{
    BN_CU(cudaSetDevice(device));
    BN_CU(cudaDeviceSynchronize());
    return BN_OK;
}
