/* Extra C entry points of the CUDA backend (src/cuda), beyond the three that
 * backend.h declares: device facts and a copy-bandwidth probe for the GPU
 * benchmark, and test hooks.  Only meaningful when BN_HAVE_CUDA is defined. */
#ifndef BN_CUDA_EXTRA_H
#define BN_CUDA_EXTRA_H

#include "bnspike.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char name[256];
    int cc_major, cc_minor;
    size_t total_mem, free_mem; /* bytes */
    int sms;
    size_t l2_bytes;
    int runtime_version, driver_version; /* 1000*major + 10*minor */
    int cublas_major, cublas_minor, cublas_patch;
} bn_cuda_info;

/* Visible devices, 0 when there is no driver or device (also in backend.h). */
int bn_cuda_device_count(void);
/* Facts about one device (creates its context). */
bn_status bn_cuda_device_info(int device, bn_cuda_info *out);
/* Device-to-device copy bandwidth, counting bytes read plus bytes written
 * (2·bytes per copy), median of `reps` timed copies of `bytes` after a warm-up. */
bn_status bn_cuda_copy_bandwidth(int device, size_t bytes, int reps, double *bytes_per_s);
/* cudaDeviceSynchronize on that device. */
bn_status bn_cuda_device_sync(int device);

/* The record schedule exactly as the device computes it (must equal bn_record_slot). */
int64_t bn_cuda_record_slot_host(int64_t t, int64_t steps, int64_t every);
/* Steps run in this process through captured graphs, plain launches and the
 * fused kernel, and the number of graph captures (NULL entries are skipped). */
void bn_cuda_debug_counters(long long *graph_steps, long long *plain_steps, long long *fused_steps,
                            long long *captures);

#ifdef __cplusplus
}
#endif
#endif
