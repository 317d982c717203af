/* The two per-column passes of a step as CUDA kernels: the GPU forms of
 * bn_forward_column and bn_update_column (bn_math.h), with the same stats
 * fields, the same per-element formulas (the bn_math.h scalar functions) and
 * the same divergence rule.  Only the order of the sums differs from the CPU:
 * each column is summed by a group of TPC threads (a warp, or a whole block
 * for long columns), each thread over i = lane, lane+TPC, ..., then a
 * butterfly (xor-shuffle) tree, so
 *   - every thread of the group ends with the bitwise same total, and
 *   - a column's result depends only on its length (which fixes TPC), never
 *     on S or on the column's position in the batch. */
#include "cuda_common.cuh"

namespace {


/* Step, stats block and update flag of this launch (see bn_col_step). */
template <typename T>
__device__ __forceinline__ void resolve_step(const bn_col_step<T> &cs, int64_t S, T *&stats,
                                             int64_t &step, int &update)
{
    if (!cs.ctrl) {
        stats = cs.stats;
        step = cs.step;
        update = cs.update;
        return;
    }
    const int64_t t = cs.ctrl[0] + cs.t_off;
    const int64_t slot = bn_cuda_record_slot(t, cs.steps, cs.every);
    stats = slot < 0 ? cs.scratch
                     : cs.ring + (size_t)(slot - cs.ctrl[1]) * (size_t)BN_ST_COUNT * (size_t)S;
    step = t;
    update = t < cs.steps;
}

/* bn_forward_column for every column: u = U[:,j] → Q[:,j], stats[:,j]. */
template <typename T, int TPC>
__global__ void __launch_bounds__(TPC == 32 ? kWarpBlock : TPC)
    forward_kernel(int64_t n, int64_t S, const T *__restrict__ U, const T *__restrict__ y,
                   const T *__restrict__ uhat, const T *__restrict__ gamma, int logistic,
                   T *__restrict__ Q, const bn_col_step<T> cs)
{
    const int64_t col = TPC == 32 ? (int64_t)blockIdx.x * (kWarpBlock / 32) + (threadIdx.x >> 5)
                                  : (int64_t)blockIdx.x;
    const int lane = TPC == 32 ? (int)(threadIdx.x & 31) : (int)threadIdx.x;
    if (col >= S) return; /* uniform over the group: a whole warp, or never for TPC > 32 */
    T *stats;
    int64_t step;
    int update;
    resolve_step(cs, S, stats, step, update);
    (void)step;
    (void)update;
    const T *u = U + col * n;
    T *q = Q + col * n;

    T v2[2] = {0, 0}; /* ‖u‖², uᵀû */
    for (int64_t i = lane; i < n; i += TPC) {
        const T ui = u[i];
        v2[0] += ui * ui;
        v2[1] += ui * uhat[i];
    }
    group_sum<TPC>(v2);
    const T a = v2[1];
    const T rn = (T)n;
    const T s = bn_m<T>::sqrt_(v2[0] / rn);
    const T g_s = gamma[col] / s;

    T v3[3] = {0, 0, 0}; /* Σℓ, uᵀr, ‖u - a·û‖² */
    for (int64_t i = lane; i < n; i += TPC) {
        const T ui = u[i], yi = y[i];
        const T z = g_s * ui;
        v3[0] += bn_m<T>::loss_value(logistic, z, yi);
        const T r = bn_m<T>::loss_d1(logistic, z, yi) / rn;
        v3[1] += ui * r;
        q[i] = r;
        const T e = ui - a * uhat[i];
        v3[2] += e * e;
    }
    group_sum<TPC>(v3);
    const T c = v3[1] / (rn * s * s);
    /* The same thread wrote q[i] above: no barrier needed. */
    for (int64_t i = lane; i < n; i += TPC) q[i] = bn_m<T>::grad_q(g_s, q[i], c, u[i]);

    if (lane == 0) {
        const T sqrt_n = bn_m<T>::sqrt_(rn);
        stats[BN_ST_LOSS * S + col] = v3[0] / rn;
        stats[BN_ST_GAMMA * S + col] = gamma[col];
        stats[BN_ST_SNORM * S + col] = s;
        stats[BN_ST_GGAMMA * S + col] = v3[1] / s;
        stats[BN_ST_ALPHA_S * S + col] = a / sqrt_n;
        stats[BN_ST_BETA_S * S + col] = bn_m<T>::sqrt_(v3[2]) / sqrt_n;
    }
}

/* bn_update_column for every column, and the divergence mark. */
template <typename T, int TPC>
__global__ void __launch_bounds__(TPC == 32 ? kWarpBlock : TPC)
    update_kernel(int64_t d, int64_t S, T *__restrict__ W, const T *__restrict__ G,
                  const T *__restrict__ ehat, const T *__restrict__ eta_w,
                  const T *__restrict__ eta_gamma, T *__restrict__ gamma,
                  int64_t *__restrict__ diverged_step, const bn_col_step<T> cs)
{
    const int64_t col = TPC == 32 ? (int64_t)blockIdx.x * (kWarpBlock / 32) + (threadIdx.x >> 5)
                                  : (int64_t)blockIdx.x;
    const int lane = TPC == 32 ? (int)(threadIdx.x & 31) : (int)threadIdx.x;
    if (col >= S) return;
    T *stats;
    int64_t step;
    int update;
    resolve_step(cs, S, stats, step, update);
    T *w = W + col * d;
    const T *g = G + col * d;

    T v3[3] = {0, 0, 0}; /* ‖w‖², wᵀê, ‖g‖² */
    for (int64_t i = lane; i < d; i += TPC) {
        const T wi = w[i], gi = g[i];
        v3[0] += wi * wi;
        v3[1] += wi * ehat[i];
        v3[2] += gi * gi;
    }
    group_sum<TPC>(v3);
    const T a = v3[1];
    const T ew = eta_w[col];
    T v1[1] = {0}; /* ‖w - a·ê‖², from the old w */
    for (int64_t i = lane; i < d; i += TPC) {
        const T wi = w[i];
        const T e = wi - a * ehat[i];
        v1[0] += e * e;
        if (update) w[i] = wi - ew * g[i];
    }
    group_sum<TPC>(v1);

    if (lane == 0) {
        stats[BN_ST_WNORM * S + col] = bn_m<T>::sqrt_(v3[0]);
        stats[BN_ST_ALPHA * S + col] = a;
        stats[BN_ST_BETA * S + col] = bn_m<T>::sqrt_(v1[0]);
        stats[BN_ST_GNORM * S + col] = bn_m<T>::sqrt_(v3[2]);
        const T gamma_t = gamma[col];
        if (update) gamma[col] = gamma_t - eta_gamma[col] * stats[BN_ST_GGAMMA * S + col];
        /* Judge state t only, as bn_update_column does. */
        const bool bad = !(isfinite(stats[BN_ST_LOSS * S + col]) && isfinite(gamma_t) &&
                           isfinite(v3[0]) && isfinite(v3[2]));
        if (bad && diverged_step[col] < 0) diverged_step[col] = step;
    }
}

__global__ void set_ctrl_kernel(int64_t *ctrl, int64_t t_base, int64_t slot0)
{
    ctrl[0] = t_base;
    ctrl[1] = slot0;
}

__global__ void advance_kernel(int64_t *ctrl, int64_t k) { ctrl[0] += k; }

} // namespace

template <typename T>
cudaError_t bn_cuda_launch_forward(cudaStream_t stream, int64_t n, int64_t S, const T *U, const T *y,
                                   const T *uhat, const T *gamma, int logistic, T *Q,
                                   const bn_col_step<T> &cs)
{
    const int tpc = tpc_for(n);
    const unsigned grid = grid_for(tpc, S);
    if (tpc == 32)
        BN_LAUNCH(grid, kWarpBlock, 0, stream, forward_kernel<T, 32>)(n, S, U, y, uhat, gamma, logistic, Q, cs);
    else if (tpc == 256)
        BN_LAUNCH(grid, 256, 0, stream, forward_kernel<T, 256>)(n, S, U, y, uhat, gamma, logistic, Q, cs);
    else
        BN_LAUNCH(grid, 512, 0, stream, forward_kernel<T, 512>)(n, S, U, y, uhat, gamma, logistic, Q, cs);
    return cudaGetLastError();
}

template <typename T>
cudaError_t bn_cuda_launch_update(cudaStream_t stream, int64_t d, int64_t S, T *W, const T *G,
                                  const T *ehat, const T *eta_w, const T *eta_gamma, T *gamma,
                                  int64_t *diverged_step, const bn_col_step<T> &cs)
{
    const int tpc = tpc_for(d);
    const unsigned grid = grid_for(tpc, S);
    if (tpc == 32)
        BN_LAUNCH(grid, kWarpBlock, 0, stream, update_kernel<T, 32>)(d, S, W, G, ehat, eta_w, eta_gamma, gamma,
                                                              diverged_step, cs);
    else if (tpc == 256)
        BN_LAUNCH(grid, 256, 0, stream, update_kernel<T, 256>)(d, S, W, G, ehat, eta_w, eta_gamma, gamma,
                                                        diverged_step, cs);
    else
        BN_LAUNCH(grid, 512, 0, stream, update_kernel<T, 512>)(d, S, W, G, ehat, eta_w, eta_gamma, gamma,
                                                          diverged_step, cs);
    return cudaGetLastError();
}

cudaError_t bn_cuda_launch_set_ctrl(cudaStream_t stream, int64_t *ctrl, int64_t t_base, int64_t slot0)
{
    BN_LAUNCH(1, 1, 0, stream, set_ctrl_kernel)(ctrl, t_base, slot0);
    return cudaGetLastError();
}

cudaError_t bn_cuda_launch_advance(cudaStream_t stream, int64_t *ctrl, int64_t k)
{
    BN_LAUNCH(1, 1, 0, stream, advance_kernel)(ctrl, k);
    return cudaGetLastError();
}

template <typename T> cudaError_t bn_cuda_preload_columns(int64_t n, int64_t d)
{
    cudaFuncAttributes fa;
    cudaError_t e = cudaFuncGetAttributes(&fa, set_ctrl_kernel);
    if (e == cudaSuccess) e = cudaFuncGetAttributes(&fa, advance_kernel);
    if (e != cudaSuccess) return e;
    const int tn = tpc_for(n), td = tpc_for(d);
    e = tn == 32 ? cudaFuncGetAttributes(&fa, forward_kernel<T, 32>)
        : tn == 256 ? cudaFuncGetAttributes(&fa, forward_kernel<T, 256>)
                    : cudaFuncGetAttributes(&fa, forward_kernel<T, 512>);
    if (e != cudaSuccess) return e;
    return td == 32 ? cudaFuncGetAttributes(&fa, update_kernel<T, 32>)
           : td == 256 ? cudaFuncGetAttributes(&fa, update_kernel<T, 256>)
                       : cudaFuncGetAttributes(&fa, update_kernel<T, 512>);
}

template cudaError_t bn_cuda_preload_columns<double>(int64_t, int64_t);
template cudaError_t bn_cuda_preload_columns<float>(int64_t, int64_t);
template cudaError_t bn_cuda_launch_forward<double>(cudaStream_t, int64_t, int64_t, const double *,
                                                    const double *, const double *, const double *,
                                                    int, double *, const bn_col_step<double> &);
template cudaError_t bn_cuda_launch_forward<float>(cudaStream_t, int64_t, int64_t, const float *,
                                                   const float *, const float *, const float *, int,
                                                   float *, const bn_col_step<float> &);
template cudaError_t bn_cuda_launch_update<double>(cudaStream_t, int64_t, int64_t, double *,
                                                   const double *, const double *, const double *,
                                                   const double *, double *, int64_t *,
                                                   const bn_col_step<double> &);
template cudaError_t bn_cuda_launch_update<float>(cudaStream_t, int64_t, int64_t, float *,
                                                  const float *, const float *, const float *,
                                                  const float *, float *, int64_t *,
                                                  const bn_col_step<float> &);
