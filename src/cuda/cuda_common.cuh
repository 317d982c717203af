/* Shared by the CUDA backend's translation units: the C headers of the
 * library (with C linkage), the checking macros, and the per-precision
 * adapters over bn_math.h.
 *
 * Every cuda* / cublas* call goes through BN_CU / BN_CUBLAS (or their _ST
 * expression forms): on failure they record file, line, the call text and
 * CUDA's error string with bn_fail(BN_ERR_BACKEND, ...) and return that
 * status.  Nothing here ever exits the process. */
#ifndef BN_CUDA_COMMON_CUH
#define BN_CUDA_COMMON_CUH

/* The C++ forms of these headers must come first: backend.h includes them again
 * inside the extern "C" block below, where the include guards make that a no-op. */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "backend.h"
}

/* Kernel launch and dynamic shared memory, as macros so that the same sources
 * also build against the host emulator in src/cuda/emu (which defines them). */
#ifndef BN_LAUNCH
#define BN_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define BN_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

/* Status of one CUDA runtime / cuBLAS call: BN_OK, or the failure recorded
 * with bn_fail (file, line, the call's text, CUDA's error string).  An
 * allocation failure is BN_ERR_NOMEM, everything else BN_ERR_BACKEND. */
static inline bn_status bn_cu_status(cudaError_t e, const char *file, int line, const char *call)
{
    if (e == cudaSuccess) return BN_OK;
    (void)cudaGetLastError(); /* clear a non-sticky error so later calls can run */
    return bn_fail(e == cudaErrorMemoryAllocation ? BN_ERR_NOMEM : BN_ERR_BACKEND,
                   "%s:%d: %s failed: %s (%s)", file, line, call, cudaGetErrorString(e),
                   cudaGetErrorName(e));
}

static inline bn_status bn_cublas_status(cublasStatus_t s, const char *file, int line, const char *call)
{
    if (s == CUBLAS_STATUS_SUCCESS) return BN_OK;
    return bn_fail(BN_ERR_BACKEND, "%s:%d: %s failed: %s (cuBLAS status %d)", file, line, call,
                   cublasGetStatusString(s), (int)s);
}

/* As expressions (for code that must clean up before returning) ... */
#define BN_CU_ST(call) bn_cu_status((call), __FILE__, __LINE__, #call)
#define BN_CUBLAS_ST(call) bn_cublas_status((call), __FILE__, __LINE__, #call)
/* ... and as statements that return the failure from the enclosing function. */
#define BN_CU(call) BN_TRY(BN_CU_ST(call))
#define BN_CUBLAS(call) BN_TRY(BN_CUBLAS_ST(call))

/* The record schedule of step.c (bn_record_slot), callable on the device so a
 * captured step graph can find its stats block by itself.  It must stay equal
 * to bn_record_slot; tests/test_cuda.c checks that through
 * bn_cuda_record_slot_host(). */
__host__ __device__ static inline int64_t bn_cuda_record_slot(int64_t t, int64_t steps, int64_t every)
{
    if (t % every == 0) return t / every;
    if (t == steps) return steps / every + 1;
    return -1;
}

/* How a column kernel finds its step, its stats block and whether it updates.
 * Direct mode (ctrl == NULL): the values below are given by the host.
 * Graph mode: step t = ctrl[0] + t_off, where ctrl = {t_base, slot0} lives in
 * device memory and is set/advanced by tiny kernels on the same stream, so
 * one captured graph serves every step (see cuda_backend.cu). */
template <typename T> struct bn_col_step {
    const int64_t *ctrl;
    int64_t t_off;
    int64_t steps, every;
    T *ring, *scratch;
    T *stats;
    int64_t step;
    int update;
};

/* Per-precision adapters over bn_math.h, so one kernel text serves both. */
template <typename T> struct bn_m;
template <> struct bn_m<double> {
    __host__ __device__ static double loss_value_d1(int lg, double z, double y, double *d1) { return bn_loss_value_d1_f64(lg, z, y, d1); }
    __host__ __device__ static double grad_q(double g_s, double r, double c, double u) { return bn_grad_q_elem_f64(g_s, r, c, u); }
    __host__ __device__ static double sqrt_(double x) { return sqrt(x); }
};
template <> struct bn_m<float> {
    __host__ __device__ static float loss_value_d1(int lg, float z, float y, float *d1) { return bn_loss_value_d1_f32(lg, z, y, d1); }
    __host__ __device__ static float grad_q(float g_s, float r, float c, float u) { return bn_grad_q_elem_f32(g_s, r, c, u); }
    __host__ __device__ static float sqrt_(float x) { return sqrtf(x); }
};

/* Adapters over bn_hvp_math.h (and the loss derivatives of bn_math.h) for the
 * sharpness kernels (cuda_hvp.cu): one kernel text for both precisions. */
template <typename T> struct bn_hm;
template <> struct bn_hm<double> {
    typedef bn_hvp_coef_f64 coef;
    __host__ __device__ static double loss_d1_d2(int lg, double z, double y, double *d2) { return bn_loss_d1_d2_f64(lg, z, y, d2); }
    __host__ __device__ static double coeffs(int64_t n, const double *hs, int64_t S, double p_uu, double p_ru,
                                             double p_huu, double delta, double aw, double ag, coef *cf)
    {
        return bn_hvp_coeffs_f64(n, hs, S, p_uu, p_ru, p_huu, delta, aw, ag, cf);
    }
    __host__ __device__ static double qdot(const coef *cf, double r, double h, double u, double ud)
    {
        return bn_hvp_qdot_elem_f64(cf, r, h, u, ud);
    }
    __host__ __device__ static double lob_combine(const double *c, double r, double ar, double *x, double *ax, double *p, double *ap)
    {
        return bn_lobpcg_combine_entry_f64(c, r, ar, x, ax, p, ap);
    }
    __host__ __device__ static double lob_predict(double a, double b, double v, double x) { return bn_lobpcg_predict_entry_f64(a, b, v, x); }
    __host__ __device__ static double lob_plan(const double *gr, int project, int use_p, double tau, double *c,
                                               double *f, double *th2)
    {
        return bn_lobpcg_plan_f64(gr, project, use_p, tau, c, f, th2);
    }
    __host__ __device__ static double sqrt_(double x) { return sqrt(x); }
};
template <> struct bn_hm<float> {
    typedef bn_hvp_coef_f32 coef;
    __host__ __device__ static float loss_d1_d2(int lg, float z, float y, float *d2) { return bn_loss_d1_d2_f32(lg, z, y, d2); }
    __host__ __device__ static float coeffs(int64_t n, const float *hs, int64_t S, float p_uu, float p_ru,
                                            float p_huu, float delta, float aw, float ag, coef *cf)
    {
        return bn_hvp_coeffs_f32(n, hs, S, p_uu, p_ru, p_huu, delta, aw, ag, cf);
    }
    __host__ __device__ static float qdot(const coef *cf, float r, float h, float u, float ud)
    {
        return bn_hvp_qdot_elem_f32(cf, r, h, u, ud);
    }
    __host__ __device__ static float lob_combine(const float *c, float r, float ar, float *x, float *ax, float *p, float *ap)
    {
        return bn_lobpcg_combine_entry_f32(c, r, ar, x, ax, p, ap);
    }
    __host__ __device__ static float lob_predict(float a, float b, float v, float x) { return bn_lobpcg_predict_entry_f32(a, b, v, x); }
    __host__ __device__ static double lob_plan(const float *gr, int project, int use_p, double tau, float *c,
                                               float *f, double *th2)
    {
        return bn_lobpcg_plan_f32(gr, project, use_p, tau, c, f, th2);
    }
    __host__ __device__ static float sqrt_(float x) { return sqrtf(x); }
};

/* Launchers of the column kernels (cuda_columns.cu), enqueued on `stream`.
 * Each returns cudaGetLastError() after its launch: a bad configuration shows
 * up at once, a fault inside a kernel at the next synchronizing call. */
template <typename T>
cudaError_t bn_cuda_launch_forward(cudaStream_t stream, int64_t n, int64_t S, const T *U, const T *y,
                                   const T *uhat, const T *gamma, int logistic, T *Q,
                                   const bn_col_step<T> &cs);
template <typename T>
cudaError_t bn_cuda_launch_update(cudaStream_t stream, int64_t d, int64_t S, T *W, const T *G,
                                  const T *ehat, const T *eta_w, const T *eta_gamma, T *gamma,
                                  int64_t *diverged_step, const bn_col_step<T> &cs);
/* Loads the column kernels for these lengths (and the two control kernels)
 * ahead of a stream capture, so no module loading happens inside one. */
template <typename T> cudaError_t bn_cuda_preload_columns(int64_t n, int64_t d);
/* ctrl = {t_base, slot0}; advance: ctrl[0] += k. */
cudaError_t bn_cuda_launch_set_ctrl(cudaStream_t stream, int64_t *ctrl, int64_t t_base, int64_t slot0);
cudaError_t bn_cuda_launch_advance(cudaStream_t stream, int64_t *ctrl, int64_t k);

/* The sharpness ops of backend.h (issue 3), defined in cuda_hvp.cu with the
 * signatures of bn_backend_ops (T = double for fp64, float for fp32). */
template <typename T>
bn_status bn_cuda_hvp_prepare_columns(bn_backend *be, int64_t n, int64_t S, const void *U, const void *y,
                                      const void *gamma, int logistic, void *R, void *H2, void *hs);
template <typename T>
bn_status bn_cuda_hvp_columns(bn_backend *be, int64_t n, int64_t S, const void *U, const void *R, const void *H2,
                              const void *hs, const void *Udot, const void *vg, const void *aw, const void *ag,
                              void *Qdot, void *hg);
template <typename T>
bn_status bn_cuda_power_update(bn_backend *be, int64_t d, int64_t S, void *V, void *vg, const void *X,
                               const void *xg, const void *W, int project, void *ctl);
template <typename T>
bn_status bn_cuda_lobpcg_update(bn_backend *be, int stage, int64_t d, int64_t S, void *V, void *vg, void *X,
                                void *xg, const void *W, int project, void *L, double *lc, void *ctl, double tol,
                                double tau);
template <typename T>
bn_status bn_cuda_lanczos_extend(bn_backend *be, int64_t d, int64_t S, int64_t k, void *QW, void *QG,
                                 const void *X, const void *xg, const void *W, int project, uint64_t seed,
                                 uint64_t counter, void *ctl, void *coef);
template <typename T>
bn_status bn_cuda_copy_columns(bn_backend *be, int64_t rows, int64_t count, const void *src, int64_t srs,
                               int64_t scs, const int64_t *sidx, void *dst, int64_t drs, int64_t dcs,
                               const int64_t *didx);
template <typename T>
bn_status bn_cuda_power_square(bn_backend *be, int64_t r, int64_t n, int64_t S, const void *lam, const void *cy,
                               const void *Z, const void *gamma, const void *aw, const void *ag, int project,
                               int warm, uint64_t seed, uint64_t counter, void *V, void *vg, void *Vs, void *vgs,
                               double tol, int64_t maxiter, void *io, void *coef, int coef_ready);
/* Makes the backend's device current and gives its stream (cuda_backend.cu):
 * what an op defined outside cuda_backend.cu needs of the backend's context. */
bn_status bn_cuda_backend_stream(bn_backend *be, cudaStream_t *stream);

/* The fused small-problem path (cuda_fused.cu). */
typedef struct {
    int64_t n, d, S;
    int logistic;
    const void *Xc, *y, *uhat, *ehat, *eta_w, *eta_gamma;
    void *W, *gamma, *ring, *scratch;
    int64_t *diverged_step;
    int64_t steps, every;
} bn_fused_args;
/* Shared memory the fused kernel needs for this shape, 0 if it cannot run it. */
template <typename T> size_t bn_cuda_fused_smem(int64_t n, int64_t d, size_t smem_optin);
template <typename T>
cudaError_t bn_cuda_launch_fused(cudaStream_t stream, const bn_fused_args &a, int64_t t0, int64_t t1,
                                 int64_t slot0, int num_sms, size_t smem_optin);

/* ---- column-group reductions shared by every column kernel (one tree, so a
 * column of a given length is summed in the same order by every kernel) ---- */
/* Group size for a column of `len` entries: a warp for short columns (the
 * paper's n=64, d=256), a block for long ones. */
static inline int tpc_for(int64_t len) { return len <= 512 ? 32 : (len <= 8192 ? 256 : 512); }
static constexpr int kWarpBlock = 256; /* threads per block when TPC = 32: 8 columns per block */

/* Sums NV values over the TPC threads of a column group; every thread of the
 * group gets the same total (xor butterfly: both partners add the same two
 * operands, and fp addition is commutative). */
template <int TPC, int NV, typename T> __device__ __forceinline__ void group_sum(T (&v)[NV])
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
#pragma unroll
        for (int k = 0; k < NV; k++) v[k] += __shfl_xor_sync(0xffffffffu, v[k], o);
    if constexpr (TPC > 32) {
        constexpr int NW = TPC / 32;
        __shared__ T red[NV][NW];
        const int w = (int)(threadIdx.x >> 5);
        if ((threadIdx.x & 31) == 0)
#pragma unroll
            for (int k = 0; k < NV; k++) red[k][w] = v[k];
        __syncthreads();
#pragma unroll
        for (int k = 0; k < NV; k++) {
            T s = red[k][0];
            for (int i = 1; i < NW; i++) s += red[k][i];
            v[k] = s;
        }
        __syncthreads(); /* the next call may overwrite red */
    }
}

/* A barrier with memory ordering among the TPC threads of one column's
 * group (group_sum's shuffles order no memory accesses). */
template <int TPC> __device__ __forceinline__ void group_barrier()
{
    if constexpr (TPC > 32)
        __syncthreads();
    else
        __syncwarp();
}

/* Blocks for S columns of group size tpc: 8 columns per block for warps. */
static inline unsigned grid_for(int tpc, int64_t S)
{
    return (unsigned)(tpc == 32 ? (S + kWarpBlock / 32 - 1) / (kWarpBlock / 32) : S);
}

#endif
