/* The sharpness ops of backend.h (issue 3) as CUDA kernels: the GPU forms of
 * the per-column functions of bn_hvp_math.h,
 *   hvp_prepare_columns  bn_hvp_prepare_column     (state pass, per column of n)
 *   hvp_columns          bn_hvp_column             (directional pass, per column of n)
 *   power_update         bn_power_update_column    (per column of d)
 *   lanczos_extend       bn_lanczos_extend_column  (per column of d)
 *   lobpcg_update        bn_lobpcg_column          (per column of d)
 * with the CPU backend's semantics (src/cpu/cpu_hvp_impl.h): the same
 * per-element formulas (bn_hvp_coeffs, bn_hvp_qdot_elem, bn_hvp_random and the
 * loss derivatives of bn_math.h are called as they are; the few formulas that
 * bn_hvp_math_impl.h writes inline are copied term for term, marked "as in"),
 * the same masking by ctl[ACTIVE] (inactive columns are not touched), the same
 * flush-to-zero threshold, the same two-pass modified Gram-Schmidt between
 * the two Π projections, and the same coef output.
 *
 * Shape (as in cuda_columns.cu): each column is one group of TPC threads, a
 * warp for columns of ≤ 512 entries (8 columns per block of 256), a block of
 * 256 up to 8192, a block of 512 beyond; thread `lane` owns the entries
 * i = lane, lane+TPC, ..., so the element-wise updates between two sums need
 * no barrier; each sum is a per-thread partial sum, then an xor-butterfly over
 * the warp (and, for blocks, the warp totals in a fixed order), so every
 * thread of the group holds the bitwise same total and a column's result
 * depends only on its length, never on S or its position in the batch.
 * Only the order of the sums differs from the CPU (and FMA contraction), so
 * fp64 results agree with the CPU's to rounding; the pseudo-random start
 * entries are bitwise the CPU's (integer hashing and exact conversions).
 *
 * A group writes its column's scalars (hs, hg, ctl, coef, the γ-part) from
 * lane 0 after its last sum; every lane reads the scalars it needs (vg, xg,
 * ctl) before its first sum, whose barrier orders those reads before the
 * writes, so the in-place uses of sharpness.c (x = slot k+1, xg = its γ-part)
 * behave as on the CPU. */
#include "cuda_common.cuh"

namespace {

template <int TPC> __device__ __forceinline__ int64_t group_col()
{
    return TPC == 32 ? (int64_t)blockIdx.x * (kWarpBlock / 32) + (threadIdx.x >> 5) : (int64_t)blockIdx.x;
}

template <int TPC> __device__ __forceinline__ int group_lane()
{
    return TPC == 32 ? (int)(threadIdx.x & 31) : (int)threadIdx.x;
}

/* Entry i (0..d) of the pseudo-random vector (key, counter), as the CPU's
 * bn_lanczos_extend_column converts it. */
template <typename T> __device__ __forceinline__ T random_entry(uint64_t key, uint64_t counter, int64_t i)
{
    return (T)bn_hvp_random(key, counter, i);
}

/* v ← Πv = v - ŵ(ŵᵀv) over the group (as in bn_hvp_project). */
template <typename T, int TPC>
__device__ __forceinline__ void group_project(int64_t d, int lane, const T *w, T *v)
{
    T s[2] = {0, 0}; /* ww, wv */
    for (int64_t i = lane; i < d; i += TPC) {
        const T wi = w[i];
        s[0] += wi * wi;
        s[1] += wi * v[i];
    }
    group_sum<TPC>(s);
    if (s[0] > 0) {
        const T f = s[1] / s[0];
        for (int64_t i = lane; i < d; i += TPC) v[i] -= f * w[i];
    }
}

/* ------------------------------------------------------------- kernels */

/* bn_hvp_prepare_column for every column: U[:,j] → R[:,j], H2[:,j], hs[:,j]. */
template <typename T, int TPC>
__global__ void __launch_bounds__(TPC == 32 ? kWarpBlock : TPC)
    hvp_prepare_kernel(int64_t n, int64_t S, const T *__restrict__ U, const T *__restrict__ y,
                       const T *__restrict__ gamma, int logistic, T *__restrict__ R, T *__restrict__ H2,
                       T *__restrict__ hs)
{
    const int64_t col = group_col<TPC>();
    const int lane = group_lane<TPC>();
    if (col >= S) return; /* uniform over the group */
    const T *u = U + col * n;
    T *r = R + col * n, *h = H2 + col * n;

    T v1[1] = {0}; /* ‖u‖² */
    for (int64_t i = lane; i < n; i += TPC) {
        const T ui = u[i];
        v1[0] += ui * ui;
    }
    group_sum<TPC>(v1);
    const T rn = (T)n;
    const T s = bn_hm<T>::sqrt_(v1[0] / rn);
    const T g = gamma[col];
    const T g_s = g / s;

    T v2[2] = {0, 0}; /* uᵀr, Σ h u² */
    for (int64_t i = lane; i < n; i += TPC) {
        const T ui = u[i], yi = y[i];
        const T z = g_s * ui;
        T d2;
        const T ri = bn_hm<T>::loss_d1_d2(logistic, z, yi, &d2) / rn;
        const T hi = d2 / rn;
        r[i] = ri;
        h[i] = hi;
        v2[0] += ui * ri;
        v2[1] += hi * ui * ui;
    }
    group_sum<TPC>(v2);
    if (lane == 0) {
        const T ur = v2[0];
        hs[BN_HS_S * S + col] = s;
        hs[BN_HS_GAMMA * S + col] = g;
        hs[BN_HS_C * S + col] = ur / (rn * s * s);
        hs[BN_HS_UR * S + col] = ur;
        hs[BN_HS_HUU * S + col] = v2[1];
    }
}

/* bn_hvp_column for every column: Qdot[:,j] and hg[j]. */
template <typename T, int TPC>
__global__ void __launch_bounds__(TPC == 32 ? kWarpBlock : TPC)
    hvp_columns_kernel(int64_t n, int64_t S, const T *__restrict__ U, const T *__restrict__ R,
                       const T *__restrict__ H2, const T *__restrict__ hs, const T *__restrict__ Udot,
                       const T *vg, const T *aw, const T *ag, T *__restrict__ Qdot, T *hg)
{
    const int64_t col = group_col<TPC>();
    const int lane = group_lane<TPC>();
    if (col >= S) return;
    const T *u = U + col * n, *r = R + col * n, *h = H2 + col * n, *ud = Udot + col * n;
    T *q = Qdot + col * n;
    const T delta = vg[col];
    const T sw = aw ? aw[col] : (T)1, sg = ag ? ag[col] : (T)1;

    T p[3] = {0, 0, 0}; /* p_uu, p_ru, p_huu */
    for (int64_t i = lane; i < n; i += TPC) {
        const T ui = u[i], di = ud[i];
        p[0] += ui * di;
        p[1] += r[i] * di;
        p[2] += h[i] * ui * di;
    }
    group_sum<TPC>(p);
    typename bn_hm<T>::coef cf;
    const T out = bn_hm<T>::coeffs(n, hs + col, S, p[0], p[1], p[2], delta, sw, sg, &cf);
    for (int64_t i = lane; i < n; i += TPC) q[i] = bn_hm<T>::qdot(&cf, r[i], h[i], u[i], ud[i]);
    if (lane == 0) hg[col] = out;
}

/* bn_power_update_column for the active columns. */
template <typename T, int TPC>
__global__ void __launch_bounds__(TPC == 32 ? kWarpBlock : TPC)
    power_update_kernel(int64_t d, int64_t S, T *V, T *vg, const T *X, const T *xg, const T *W,
                        int project, T *ctl)
{
    const int64_t col = group_col<TPC>();
    const int lane = group_lane<TPC>();
    if (col >= S) return;
    if (ctl[BN_SC_ACTIVE * S + col] == 0) return; /* uniform: others untouched */
    T *v = V + col * d;
    const T *x = X + col * d, *w = W + col * d;
    const T nv = ctl[BN_SC_NV * S + col], sigma = ctl[BN_SC_SIGMA * S + col];
    const T vg0 = vg[col], xg0 = xg[col];

    T s4[4] = {0, 0, 0, 0}; /* vᵀx, ‖w‖², wᵀx, wᵀv */
    if (project) {
        for (int64_t i = lane; i < d; i += TPC) {
            const T vi = v[i], xi = x[i], wi = w[i];
            s4[0] += vi * xi;
            s4[1] += wi * wi;
            s4[2] += wi * xi;
            s4[3] += wi * vi;
        }
        group_sum<TPC>(s4);
    } else {
        T s1[1] = {0};
        for (int64_t i = lane; i < d; i += TPC) s1[0] += v[i] * x[i];
        group_sum<TPC>(s1);
        s4[0] = s1[0];
    }
    /* As in bn_power_update_column. */
    const T a = s4[0] + vg0 * xg0;
    const T ww = s4[1], wx = s4[2], wv = s4[3];
    const T inv = (T)1 / nv;
    const T pc = (project && ww > 0) ? (wx - sigma * wv) * inv / ww : (T)0;
    const T tiny = nv * (T)(sizeof(T) == sizeof(float) ? 1e-25 : 1e-150);
    T yy[1] = {0};
    for (int64_t i = lane; i < d; i += TPC) {
        T yi = (x[i] - sigma * v[i]) * inv - pc * w[i];
        if (yi < tiny && yi > -tiny) yi = 0;
        v[i] = yi;
        yy[0] += yi * yi;
    }
    group_sum<TPC>(yy);
    if (lane == 0) {
        const T yg = (xg0 - sigma * vg0) * inv;
        vg[col] = yg;
        ctl[BN_SC_MU * S + col] = a * inv * inv;
        ctl[BN_SC_NV * S + col] = bn_hm<T>::sqrt_(yy[0] + yg * yg);
    }
}

/* bn_lobpcg_column for the active columns (as in it: the stages of
 * bn_hvp_math.h; the γ entries, index d of the L vectors, by lane 0).  STEP:
 * every lane of the group holds the Gram sums after group_sum and computes
 * the same Rayleigh-Ritz (float64, bn_lobpcg_plan); lane 0 writes the
 * column's control state. */
template <typename T, int TPC>
__global__ void __launch_bounds__(TPC == 32 ? kWarpBlock : TPC)
    lobpcg_kernel(int stage, int64_t d, int64_t S, T *V, T *vg, T *X, T *xg, const T *W, int project, T *L,
                  double *lc, T *ctl, double tol, double tau)
{
    const int64_t col = group_col<TPC>();
    const int lane = group_lane<TPC>();
    if (col >= S) return;
    if (ctl[BN_SC_ACTIVE * S + col] == 0) return; /* uniform: others untouched */
    T *v = V + col * d, *x = X + col * d;
    const T *w = W + col * d;
    const int64_t e = d + 1;
    T *lx = L + col * 4 * e, *lax = lx + e, *lp = lx + 2 * e, *lap = lx + 3 * e;
    double *lcc = lc + col;
    const T vg0 = vg[col], xg0 = xg[col];
    if (stage == BN_LOB_SHARED) {
        T g5[5] = {0, 0, 0, 0, 0}; /* xᵀx, xᵀAx, wᵀw, wᵀx, wᵀAx (w-parts) */
        for (int64_t i = lane; i < d; i += TPC) {
            const T xi = lx[i], ai = lax[i], wi = w[i];
            g5[0] += xi * xi;
            g5[1] += xi * ai;
            g5[2] += wi * wi;
            g5[3] += wi * xi;
            g5[4] += wi * ai;
        }
        group_sum<TPC>(g5);
        group_barrier<TPC>(); /* every lane's read of ctl[ACTIVE] before lane 0's write */
        if (lane == 0) {
            const double mu = bn_lobpcg_shared_value((double)(g5[0] + lx[d] * lx[d]), (double)(g5[1] + lx[d] * lax[d]),
                                                     (double)g5[2], (double)g5[3], (double)g5[4]);
            if (bn_lobpcg_check_shared(lcc, S, mu, tol)) ctl[BN_SC_ACTIVE * S + col] = 0;
        }
        return;
    }
    if (stage == BN_LOB_PREDICT) {
        T g3[3] = {0, 0, 0}; /* vᵀv, xᵀx, vᵀx (w-parts) */
        for (int64_t i = lane; i < d; i += TPC) {
            const T vi = v[i], xi = x[i];
            g3[0] += vi * vi;
            g3[1] += xi * xi;
            g3[2] += vi * xi;
        }
        group_sum<TPC>(g3);
        double a, b;
        bn_lobpcg_predict((double)(g3[0] + vg0 * vg0), (double)(g3[1] + xg0 * xg0), (double)(g3[2] + vg0 * xg0), &a,
                          &b);
        const T ra = (T)a, rb = (T)b;
        for (int64_t i = lane; i < d; i += TPC) x[i] = bn_hm<T>::lob_predict(ra, rb, v[i], x[i]);
        group_barrier<TPC>(); /* every lane's read of xg[col] before lane 0's write */
        if (lane == 0) xg[col] = bn_hm<T>::lob_predict(ra, rb, vg0, xg0);
        return;
    }
    if (stage == BN_LOB_START) {
        if (project) group_project<T, TPC>(d, lane, w, x);
        T s2[2] = {0, 0}; /* xᵀx, xᵀAx (w-parts) */
        for (int64_t i = lane; i < d; i += TPC) {
            const T vi = v[i], xi = x[i];
            lx[i] = vi;
            lax[i] = xi;
            lp[i] = lap[i] = 0;
            s2[0] += vi * vi;
            s2[1] += vi * xi;
        }
        group_sum<TPC>(s2);
        const T xx = s2[0] + vg0 * vg0;
        const T mu = xx > 0 ? (s2[1] + vg0 * xg0) / xx : (T)NAN;
        T rr[1] = {0};
        for (int64_t i = lane; i < d; i += TPC) {
            const T ri = lax[i] - mu * lx[i];
            v[i] = ri;
            rr[0] += ri * ri;
        }
        group_sum<TPC>(rr);
        group_barrier<TPC>(); /* every lane's read of vg[col] before lane 0's write */
        if (lane == 0) {
            lx[d] = vg0;
            lax[d] = xg0;
            lp[d] = lap[d] = 0;
            const T rg = xg0 - mu * vg0;
            vg[col] = rg;
            const T nv = bn_hm<T>::sqrt_(rr[0] + rg * rg);
            ctl[BN_SC_MU * S + col] = mu;
            ctl[BN_SC_NV * S + col] = nv;
            if (bn_lobpcg_check_start(lcc, S, (double)mu, (double)nv, tol)) ctl[BN_SC_ACTIVE * S + col] = 0;
        }
    } else {
        /* Read by every lane before lane 0 writes them below (the γ
         * entries, the state), group_barrier between. */
        const int use_p = lcc[BN_LC_USEP * S] != 0;
        const T xg_ = lx[d], rg = vg0, pg = lp[d], axg = lax[d], arg = xg0, apg = lap[d]; /* (likewise) */
        T s[BN_LG_COUNT];
#pragma unroll
        for (int f = 0; f < BN_LG_COUNT; f++) s[f] = 0;
        for (int64_t i = lane; i < d; i += TPC) {
            const T xi = lx[i], ri = v[i], pi = lp[i], axi = lax[i], ari = x[i], api = lap[i], wi = w[i];
            s[BN_LG_XX] += xi * xi;
            s[BN_LG_XR] += xi * ri;
            s[BN_LG_XP] += xi * pi;
            s[BN_LG_RR] += ri * ri;
            s[BN_LG_RP] += ri * pi;
            s[BN_LG_PP] += pi * pi;
            s[BN_LG_KXX] += xi * axi;
            s[BN_LG_KXR] += xi * ari;
            s[BN_LG_KXP] += xi * api;
            s[BN_LG_KRR] += ri * ari;
            s[BN_LG_KRP] += ri * api;
            s[BN_LG_KPP] += pi * api;
            s[BN_LG_WA] += wi * ari;
            s[BN_LG_WW] += wi * wi;
        }
        group_sum<TPC>(s);
        const T tail[BN_LG_COUNT] = {xg_ * xg_, xg_ * rg,  xg_ * pg,  rg * rg,  rg * pg,  pg * pg, xg_ * axg,
                                     xg_ * arg, xg_ * apg, rg * arg, rg * apg, pg * apg, 0,       0};
#pragma unroll
        for (int f = 0; f < BN_LG_COUNT; f++) s[f] += tail[f];
        T c[BN_LG_NIN], f;
        double th2;
        const double th = bn_hm<T>::lob_plan(s, project, use_p, tau, c, &f, &th2);
        group_barrier<TPC>(); /* every lane's reads above before lane 0's writes below */
        T rr[1] = {0};
        for (int64_t i = lane; i < d; i += TPC) {
            const T ri = bn_hm<T>::lob_combine(c, v[i], x[i] - f * w[i], &lx[i], &lax[i], &lp[i], &lap[i]);
            v[i] = ri;
            rr[0] += ri * ri;
        }
        group_sum<TPC>(rr);
        if (lane == 0) {
            const T rg = bn_hm<T>::lob_combine(c, vg0, xg0, &lx[d], &lax[d], &lp[d], &lap[d]);
            vg[col] = rg;
            ctl[BN_SC_MU * S + col] = c[BN_LG_MU];
            if (bn_lobpcg_check_step(lcc, S, th, th2, (double)(rr[0] + rg * rg), tol))
                ctl[BN_SC_ACTIVE * S + col] = 0;
        }
    }
}

/* bn_lanczos_extend_column for the active columns.  X == NULL: the
 * pseudo-random vector (key seed + j, counter). */
template <typename T, int TPC>
__global__ void __launch_bounds__(TPC == 32 ? kWarpBlock : TPC)
    lanczos_extend_kernel(int64_t d, int64_t S, int64_t k, T *QW, T *QG, const T *X, const T *xg,
                          const T *W, int project, uint64_t seed, uint64_t counter, T *ctl, T *coef)
{
    const int64_t col = group_col<TPC>();
    const int lane = group_lane<TPC>();
    if (col >= S) return;
    if (ctl[BN_SC_ACTIVE * S + col] == 0) return; /* uniform: others untouched */
    const int64_t ws = d * S; /* stride between slots of the w-parts */
    T *qw = QW + col * d, *qg = QG + col;
    T *dst = qw + (k + 1) * ws;
    const T *x = X ? X + col * d : nullptr;
    const T *w = W + col * d;

    T dg; /* the γ-part of slot k+1, kept (identically) by every thread */
    if (x) {
        dg = xg[col];
        if (k >= 0) {
            const T *qk = qw + k * ws;
            const T qgk = qg[k * S];
            T a[1] = {0};
            for (int64_t i = lane; i < d; i += TPC) a[0] += qk[i] * x[i];
            group_sum<TPC>(a);
            if (lane == 0) ctl[BN_SC_ALPHA * S + col] = a[0] + qgk * dg;
        }
        if (x != dst) /* x may be slot k+1 itself: each thread copies its own entries */
            for (int64_t i = lane; i < d; i += TPC) dst[i] = x[i];
    } else {
        const uint64_t key = seed + (uint64_t)col;
        for (int64_t i = lane; i < d; i += TPC) dst[i] = random_entry<T>(key, counter, i);
        dg = random_entry<T>(key, counter, d);
    }
    if (project) group_project<T, TPC>(d, lane, w, dst);
    for (int pass = 0; pass < 2; pass++)
        for (int64_t b = 0; b <= k; b++) {
            const T *qb = qw + b * ws;
            const T qgb = qg[b * S];
            T c[1] = {0};
            for (int64_t i = lane; i < d; i += TPC) c[0] += qb[i] * dst[i];
            group_sum<TPC>(c);
            const T cb = c[0] + qgb * dg;
            for (int64_t i = lane; i < d; i += TPC) dst[i] -= cb * qb[i];
            dg -= cb * qgb;
            if (coef && lane == 0) coef[b * S + col] = pass ? coef[b * S + col] + cb : cb;
        }
    /* Again after the orthogonalization (see bn_lanczos_extend_column). */
    if (project) group_project<T, TPC>(d, lane, w, dst);
    T nn[1] = {0};
    for (int64_t i = lane; i < d; i += TPC) nn[0] += dst[i] * dst[i];
    group_sum<TPC>(nn);
    const T beta = bn_hm<T>::sqrt_(nn[0] + dg * dg);
    if (beta > 0) {
        const T inv = (T)1 / beta;
        for (int64_t i = lane; i < d; i += TPC) dst[i] *= inv;
        dg *= inv;
    }
    if (lane == 0) {
        qg[(k + 1) * S] = dg;
        ctl[BN_SC_BETA * S + col] = beta;
    }
}

/* Strided gather/scatter (backend.h copy_columns): one thread per entry
 * (grid-stride over rows·count); pure copies, so bitwise the CPU's. */
template <typename T>
__global__ void copy_columns_kernel(int64_t rows, int64_t count, const T *__restrict__ src, int64_t srs,
                                    int64_t scs, const int64_t *__restrict__ sidx, T *__restrict__ dst,
                                    int64_t drs, int64_t dcs, const int64_t *__restrict__ didx)
{
    const int64_t total = rows * count;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t k = e / rows, i = e - k * rows;
        const int64_t sk = sidx ? sidx[k] : k, dk = didx ? didx[k] : k;
        dst[i * drs + dk * dcs] = src[i * srs + sk * scs];
    }
}

/* power_square (issue 7): one thread per column runs bn_sqh_power_column, the
 * CPU's function itself.  A column's work is O(r) per product, a few hundred
 * flops, so one thread holds it; columns differ in their iteration counts,
 * and a warp waits for its slowest column.  V, Vs, Z: r×S col-major. */
/* bn_sqh_power_column of the kernel's precision. */
template <typename T>
__device__ __forceinline__ void power_square_column(int64_t r, int64_t n, const T *lam, const T *cy, const T *z, T g,
                                                    T aw, T ag, int project, int warm, uint64_t key, uint64_t counter,
                                                    T *v, T *vg, T *vs, T *vgs, double tol, int64_t maxiter, T *io,
                                                    T *coef, int coef_ready, int64_t S)
{
    if constexpr (sizeof(T) == sizeof(double))
        bn_sqh_power_column_f64(r, n, lam, cy, z, g, aw, ag, project, warm, key, counter, v, vg, vs, vgs, tol, maxiter,
                                io, coef, coef_ready, S);
    else
        bn_sqh_power_column_f32(r, n, lam, cy, z, g, aw, ag, project, warm, key, counter, v, vg, vs, vgs, tol, maxiter,
                                io, coef, coef_ready, S);
}

template <typename T>
__global__ void power_square_kernel(int64_t r, int64_t n, int64_t S, const T *__restrict__ lam,
                                    const T *__restrict__ cy, const T *__restrict__ Z, const T *__restrict__ gamma,
                                    const T *__restrict__ aw, const T *__restrict__ ag, int project, int warm,
                                    uint64_t seed, uint64_t counter, T *V, T *vg, T *Vs, T *vgs, double tol,
                                    int64_t maxiter, T *io, T *coef, int coef_ready)
{
    const int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= S) return;
    power_square_column<T>(r, n, lam, cy, Z + j * r, gamma[j], aw ? aw[j] : (T)1, ag ? ag[j] : (T)1, project, warm,
                        seed + (uint64_t)j, counter, V + j * r, vg + j, Vs + j * r, vgs + j, tol, maxiter, io + j,
                        coef ? coef + j : nullptr, coef_ready, S);
}

/* ------------------------------------------------------------ launchers */

/* Launches kernel<T, TPC> with TPC chosen by the column length `len`. */
#define BN_HVP_LAUNCH(len, S, stream, kernel, ...)                                                  \
    do {                                                                                            \
        const int tpc_ = tpc_for(len);                                                              \
        const unsigned grid_ = grid_for(tpc_, S);                                                   \
        if (tpc_ == 32) BN_LAUNCH(grid_, kWarpBlock, 0, stream, kernel<T, 32>)(__VA_ARGS__);        \
        else if (tpc_ == 256) BN_LAUNCH(grid_, 256, 0, stream, kernel<T, 256>)(__VA_ARGS__);        \
        else BN_LAUNCH(grid_, 512, 0, stream, kernel<T, 512>)(__VA_ARGS__);                         \
    } while (0)

/* The sizes a launch can take: len (n or d) and S in 1..INT_MAX (grid and
 * cuBLAS limits, as the other ops); S = 0 is nothing to do. */
bn_status check_dims(const char *op, int64_t len, int64_t S)
{
    if (len < 1 || len > INT32_MAX || S < 0 || S > INT32_MAX)
        return bn_fail(BN_ERR_ARG, "CUDA %s: length %lld and S=%lld must be in 1..%d", op, (long long)len,
                       (long long)S, INT32_MAX);
    return BN_OK;
}

} // namespace

template <typename T>
bn_status bn_cuda_hvp_prepare_columns(bn_backend *be, int64_t n, int64_t S, const void *U, const void *y,
                                      const void *gamma, int logistic, void *R, void *H2, void *hs)
{
    BN_TRY(check_dims("hvp_prepare_columns", n, S));
    if (S == 0) return BN_OK;
    cudaStream_t stream;
    BN_TRY(bn_cuda_backend_stream(be, &stream));
    BN_HVP_LAUNCH(n, S, stream, hvp_prepare_kernel, n, S, (const T *)U, (const T *)y, (const T *)gamma,
                  logistic, (T *)R, (T *)H2, (T *)hs);
    BN_CU(cudaGetLastError());
    return BN_OK;
}

template <typename T>
bn_status bn_cuda_hvp_columns(bn_backend *be, int64_t n, int64_t S, const void *U, const void *R, const void *H2,
                              const void *hs, const void *Udot, const void *vg, const void *aw, const void *ag,
                              void *Qdot, void *hg)
{
    BN_TRY(check_dims("hvp_columns", n, S));
    if (S == 0) return BN_OK;
    cudaStream_t stream;
    BN_TRY(bn_cuda_backend_stream(be, &stream));
    BN_HVP_LAUNCH(n, S, stream, hvp_columns_kernel, n, S, (const T *)U, (const T *)R, (const T *)H2,
                  (const T *)hs, (const T *)Udot, (const T *)vg, (const T *)aw, (const T *)ag, (T *)Qdot, (T *)hg);
    BN_CU(cudaGetLastError());
    return BN_OK;
}

template <typename T>
bn_status bn_cuda_power_update(bn_backend *be, int64_t d, int64_t S, void *V, void *vg, const void *X,
                               const void *xg, const void *W, int project, void *ctl)
{
    BN_TRY(check_dims("power_update", d, S));
    if (S == 0) return BN_OK;
    cudaStream_t stream;
    BN_TRY(bn_cuda_backend_stream(be, &stream));
    BN_HVP_LAUNCH(d, S, stream, power_update_kernel, d, S, (T *)V, (T *)vg, (const T *)X, (const T *)xg,
                  (const T *)W, project, (T *)ctl);
    BN_CU(cudaGetLastError());
    return BN_OK;
}

template <typename T>
bn_status bn_cuda_lobpcg_update(bn_backend *be, int stage, int64_t d, int64_t S, void *V, void *vg, void *X,
                                void *xg, const void *W, int project, void *L, double *lc, void *ctl, double tol,
                                double tau)
{
    BN_TRY(check_dims("lobpcg_update", d, S));
    if (stage < BN_LOB_START || stage > BN_LOB_SHARED)
        return bn_fail(BN_ERR_ARG, "CUDA lobpcg_update: stage %d", stage);
    if (S == 0) return BN_OK;
    cudaStream_t stream;
    BN_TRY(bn_cuda_backend_stream(be, &stream));
    BN_HVP_LAUNCH(d, S, stream, lobpcg_kernel, stage, d, S, (T *)V, (T *)vg, (T *)X, (T *)xg, (const T *)W, project,
                  (T *)L, lc, (T *)ctl, tol, tau);
    BN_CU(cudaGetLastError());
    return BN_OK;
}

template <typename T>
bn_status bn_cuda_lanczos_extend(bn_backend *be, int64_t d, int64_t S, int64_t k, void *QW, void *QG,
                                 const void *X, const void *xg, const void *W, int project, uint64_t seed,
                                 uint64_t counter, void *ctl, void *coef)
{
    BN_TRY(check_dims("lanczos_extend", d, S));
    if (k < -1) return bn_fail(BN_ERR_ARG, "CUDA lanczos_extend: k=%lld < -1", (long long)k);
    if (S == 0) return BN_OK;
    cudaStream_t stream;
    BN_TRY(bn_cuda_backend_stream(be, &stream));
    BN_HVP_LAUNCH(d, S, stream, lanczos_extend_kernel, d, S, k, (T *)QW, (T *)QG, (const T *)X, (const T *)xg,
                  (const T *)W, project, seed, counter, (T *)ctl, (T *)coef);
    BN_CU(cudaGetLastError());
    return BN_OK;
}

template <typename T>
bn_status bn_cuda_power_square(bn_backend *be, int64_t r, int64_t n, int64_t S, const void *lam, const void *cy,
                               const void *Z, const void *gamma, const void *aw, const void *ag, int project,
                               int warm, uint64_t seed, uint64_t counter, void *V, void *vg, void *Vs, void *vgs,
                               double tol, int64_t maxiter, void *io, void *coef, int coef_ready)
{
    BN_TRY(check_dims("power_square", r, S));
    if (S == 0) return BN_OK;
    cudaStream_t stream;
    BN_TRY(bn_cuda_backend_stream(be, &stream));
    const unsigned grid = (unsigned)((S + 127) / 128);
    BN_LAUNCH(grid, 128, 0, stream, power_square_kernel<T>)(r, n, S, (const T *)lam, (const T *)cy, (const T *)Z,
                                                            (const T *)gamma, (const T *)aw, (const T *)ag, project,
                                                            warm, seed, counter, (T *)V, (T *)vg, (T *)Vs, (T *)vgs,
                                                            tol, maxiter, (T *)io, (T *)coef, coef_ready);
    BN_CU(cudaGetLastError());
    return BN_OK;
}

template <typename T>
bn_status bn_cuda_copy_columns(bn_backend *be, int64_t rows, int64_t count, const void *src, int64_t srs,
                               int64_t scs, const int64_t *sidx, void *dst, int64_t drs, int64_t dcs,
                               const int64_t *didx)
{
    if (rows < 0 || count < 0 || (count > 0 && rows > INT64_MAX / count))
        return bn_fail(BN_ERR_ARG, "CUDA copy_columns: bad sizes rows=%lld count=%lld", (long long)rows,
                       (long long)count);
    if (rows == 0 || count == 0) return BN_OK;
    cudaStream_t stream;
    BN_TRY(bn_cuda_backend_stream(be, &stream));
    const int64_t total = rows * count;
    const int64_t blocks = (total + 255) / 256;
    const unsigned grid = (unsigned)(blocks < 65535 ? blocks : 65535);
    BN_LAUNCH(grid, 256, 0, stream, copy_columns_kernel<T>)(rows, count, (const T *)src, srs, scs, sidx, (T *)dst,
                                                            drs, dcs, didx);
    BN_CU(cudaGetLastError());
    return BN_OK;
}

#define BN_HVP_INSTANTIATE(T)                                                                               \
    template bn_status bn_cuda_hvp_prepare_columns<T>(bn_backend *, int64_t, int64_t, const void *,         \
                                                      const void *, const void *, int, void *, void *,      \
                                                      void *);                                              \
    template bn_status bn_cuda_hvp_columns<T>(bn_backend *, int64_t, int64_t, const void *, const void *,   \
                                              const void *, const void *, const void *, const void *,       \
                                              const void *, const void *, void *, void *);                  \
    template bn_status bn_cuda_power_update<T>(bn_backend *, int64_t, int64_t, void *, void *, const void *, \
                                               const void *, const void *, int, void *);                    \
    template bn_status bn_cuda_lobpcg_update<T>(bn_backend *, int, int64_t, int64_t, void *, void *, void *,   \
                                                void *, const void *, int, void *, double *, void *, double, \
                                                double);                                                    \
    template bn_status bn_cuda_lanczos_extend<T>(bn_backend *, int64_t, int64_t, int64_t, void *, void *,   \
                                                 const void *, const void *, const void *, int, uint64_t,   \
                                                 uint64_t, void *, void *);                 \
    template bn_status bn_cuda_copy_columns<T>(bn_backend *, int64_t, int64_t, const void *, int64_t, int64_t, \
                                               const int64_t *, void *, int64_t, int64_t, const int64_t *); \
    template bn_status bn_cuda_power_square<T>(bn_backend *, int64_t, int64_t, int64_t, const void *,        \
                                               const void *, const void *, const void *, const void *,       \
                                               const void *, int, int, uint64_t, uint64_t, void *, void *,   \
                                               void *, void *, double, int64_t, void *, void *, int);
BN_HVP_INSTANTIATE(double)
BN_HVP_INSTANTIATE(float)
