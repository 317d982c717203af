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

/* Elements per lane kept in registers by warp-group kernels (tpc_for gives
 * warp groups to columns of length ≤ 512 = 32·16): the smallest of 2, 4, 8,
 * 16 that holds the column, so short columns do not pay registers (and
 * occupancy) for long ones. */
static inline int cache_for(int64_t len) { return len <= 64 ? 2 : len <= 128 ? 4 : len <= 256 ? 8 : 16; }
/* Loads each thread issues before it adds, on longer columns: one thread's
 * loads are independent, so a batch of them overlaps the memory latency. */
constexpr int kBatch = 8;


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

/* Visits i = lane, lane + TPC, lane + 2·TPC, ... < len, NB at a time: first
 * load(k, i) for all NB (independent loads, so their latencies overlap),
 * then use(k, i) in the plain loop's order, so every sum adds the same terms
 * in the same order whatever NB is. */
template <int TPC, int NB, typename Load, typename Use>
__device__ __forceinline__ void batched_pass(int lane, int64_t len, Load load, Use use)
{
    for (int64_t i0 = lane; i0 < len; i0 += (int64_t)NB * TPC) {
#pragma unroll
        for (int k = 0; k < NB; k++)
            if (i0 + (int64_t)k * TPC < len) load(k, i0 + (int64_t)k * TPC);
#pragma unroll
        for (int k = 0; k < NB; k++)
            if (i0 + (int64_t)k * TPC < len) use(k, i0 + (int64_t)k * TPC);
    }
}

/* bn_forward_column for every column: u = U[:,j] → Q[:,j], stats[:,j].
 * CACHE > 0 (warp groups, n ≤ 32·CACHE): one batch holds a lane's whole share
 * of the column, so u and r stay in registers between the passes: U is read
 * once and Q written once, instead of three and two passes over memory. */
template <typename T, int TPC, int CACHE>
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
    constexpr int NB = CACHE > 0 ? CACHE : kBatch;
    constexpr bool kept = CACHE > 0;
    T ub[NB], hb[NB], yb[NB], rb[NB];

    T v2[2] = {0, 0}; /* ‖u‖², uᵀû */
    batched_pass<TPC, NB>(
        lane, n, [&](int k, int64_t i) { ub[k] = u[i], hb[k] = uhat[i]; },
        [&](int k, int64_t) { v2[0] += ub[k] * ub[k], v2[1] += ub[k] * hb[k]; });
    group_sum<TPC>(v2);
    const T a = v2[1];
    const T rn = (T)n;
    const T s = bn_m<T>::sqrt_(v2[0] / rn);
    const T g_s = gamma[col] / s;

    T v3[3] = {0, 0, 0}; /* Σℓ, uᵀr, ‖u - a·û‖² */
    batched_pass<TPC, NB>(
        lane, n,
        [&](int k, int64_t i) {
            if (!kept) ub[k] = u[i], hb[k] = uhat[i];
            yb[k] = y[i];
        },
        [&](int k, int64_t i) {
            const T z = g_s * ub[k];
            T d1;
            v3[0] += bn_m<T>::loss_value_d1(logistic, z, yb[k], &d1);
            const T r = d1 / rn;
            v3[1] += ub[k] * r;
            if (kept) rb[k] = r;
            else q[i] = r;
            const T e = ub[k] - a * hb[k];
            v3[2] += e * e;
        });
    group_sum<TPC>(v3);
    const T c = v3[1] / (rn * s * s);
    /* The same thread wrote q[i] above: no barrier needed. */
    batched_pass<TPC, NB>(
        lane, n,
        [&](int k, int64_t i) {
            if (!kept) ub[k] = u[i], rb[k] = q[i];
        },
        [&](int k, int64_t i) { q[i] = bn_m<T>::grad_q(g_s, rb[k], c, ub[k]); });

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

/* bn_update_column for every column, and the divergence mark.  CACHE as for
 * the forward pass: w and g stay in registers, so W and G are read once. */
template <typename T, int TPC, int CACHE>
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
    constexpr int NB = CACHE > 0 ? CACHE : kBatch;
    constexpr bool kept = CACHE > 0;
    T wb[NB], gb[NB], eb[NB];

    T v3[3] = {0, 0, 0}; /* ‖w‖², wᵀê, ‖g‖² */
    batched_pass<TPC, NB>(
        lane, d, [&](int k, int64_t i) { wb[k] = w[i], gb[k] = g[i], eb[k] = ehat[i]; },
        [&](int k, int64_t) {
            v3[0] += wb[k] * wb[k];
            v3[1] += wb[k] * eb[k];
            v3[2] += gb[k] * gb[k];
        });
    group_sum<TPC>(v3);
    const T a = v3[1];
    const T ew = eta_w[col];
    T v1[1] = {0}; /* ‖w - a·ê‖², from the old w */
    batched_pass<TPC, NB>(
        lane, d,
        [&](int k, int64_t i) {
            if (!kept) wb[k] = w[i], gb[k] = g[i], eb[k] = ehat[i];
        },
        [&](int k, int64_t i) {
            const T e = wb[k] - a * eb[k];
            v1[0] += e * e;
            if (update) w[i] = wb[k] - ew * gb[k];
        });
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
    if (tpc == 32) {
        const int nc = cache_for(n);
        if (nc == 2) BN_LAUNCH(grid, kWarpBlock, 0, stream, forward_kernel<T, 32, 2>)(n, S, U, y, uhat, gamma, logistic, Q, cs);
        else if (nc == 4) BN_LAUNCH(grid, kWarpBlock, 0, stream, forward_kernel<T, 32, 4>)(n, S, U, y, uhat, gamma, logistic, Q, cs);
        else if (nc == 8) BN_LAUNCH(grid, kWarpBlock, 0, stream, forward_kernel<T, 32, 8>)(n, S, U, y, uhat, gamma, logistic, Q, cs);
        else BN_LAUNCH(grid, kWarpBlock, 0, stream, forward_kernel<T, 32, 16>)(n, S, U, y, uhat, gamma, logistic, Q, cs);
    } else if (tpc == 256)
        BN_LAUNCH(grid, 256, 0, stream, forward_kernel<T, 256, 0>)(n, S, U, y, uhat, gamma, logistic, Q, cs);
    else
        BN_LAUNCH(grid, 512, 0, stream, forward_kernel<T, 512, 0>)(n, S, U, y, uhat, gamma, logistic, Q, cs);
    return cudaGetLastError();
}

template <typename T>
cudaError_t bn_cuda_launch_update(cudaStream_t stream, int64_t d, int64_t S, T *W, const T *G,
                                  const T *ehat, const T *eta_w, const T *eta_gamma, T *gamma,
                                  int64_t *diverged_step, const bn_col_step<T> &cs)
{
    const int tpc = tpc_for(d);
    const unsigned grid = grid_for(tpc, S);
#define BN_UPDATE_ARGS d, S, W, G, ehat, eta_w, eta_gamma, gamma, diverged_step, cs
    if (tpc == 32) {
        const int nc = cache_for(d);
        if (nc == 2) BN_LAUNCH(grid, kWarpBlock, 0, stream, update_kernel<T, 32, 2>)(BN_UPDATE_ARGS);
        else if (nc == 4) BN_LAUNCH(grid, kWarpBlock, 0, stream, update_kernel<T, 32, 4>)(BN_UPDATE_ARGS);
        else if (nc == 8) BN_LAUNCH(grid, kWarpBlock, 0, stream, update_kernel<T, 32, 8>)(BN_UPDATE_ARGS);
        else BN_LAUNCH(grid, kWarpBlock, 0, stream, update_kernel<T, 32, 16>)(BN_UPDATE_ARGS);
    } else if (tpc == 256)
        BN_LAUNCH(grid, 256, 0, stream, update_kernel<T, 256, 0>)(d, S, W, G, ehat, eta_w, eta_gamma, gamma,
                                                           diverged_step, cs);
    else
        BN_LAUNCH(grid, 512, 0, stream, update_kernel<T, 512, 0>)(d, S, W, G, ehat, eta_w, eta_gamma, gamma,
                                                             diverged_step, cs);
#undef BN_UPDATE_ARGS
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
    e = tn == 32 ? cudaFuncGetAttributes(&fa, forward_kernel<T, 32, 16>)
        : tn == 256 ? cudaFuncGetAttributes(&fa, forward_kernel<T, 256, 0>)
                    : cudaFuncGetAttributes(&fa, forward_kernel<T, 512, 0>);
    if (e != cudaSuccess) return e;
    return td == 32 ? cudaFuncGetAttributes(&fa, update_kernel<T, 32, 16>)
           : td == 256 ? cudaFuncGetAttributes(&fa, update_kernel<T, 256, 0>)
                       : cudaFuncGetAttributes(&fa, update_kernel<T, 512, 0>);
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
