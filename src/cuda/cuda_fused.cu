/* The fused small-problem path (opt-in: BN_CUDA_FUSED=1): one kernel runs
 * steps t0..t1-1 of every trajectory with Xc in shared memory.
 *
 * Columns are independent, so each block owns a tile of C = warps·8 columns
 * for the whole launch and needs no grid-wide synchronization: it loads Xc,
 * y, û, ê and its W tile into shared memory once, then every step touches
 * global memory only to write the records of recorded steps (and a
 * divergence mark); W and γ are written back at the end.  Each warp owns 8
 * columns of the tile:
 *   U pass   u = Xc·w: a lane holds 2 rows × 8 columns of accumulators over k
 *   forward  per column, the formulas of bn_forward_column (bn_math.h scalar
 *            functions), u kept in registers (4 rows per lane: n ≤ 128)
 *   w stats  ‖w‖², wᵀê, then ‖w - aê‖² from the old w
 *   G pass   g = Xcᵀ·q: a lane holds 2 k's × 8 columns; ‖g‖² and the update
 *            w -= η_w g happen as g is formed, so G is never stored
 *   end      γ update and the divergence rule of bn_update_column
 * The per-column sums use the same per-lane order and xor butterfly as the
 * column kernels (TPC = 32), so the only difference from the cuBLAS path is
 * the order inside the two products.
 * Shared-memory strides are odd (in elements) so that lane-strided accesses
 * hit distinct banks; the broadcast reads need no padding. */
#include "cuda_common.cuh"

namespace {

constexpr int kRC = 8;       /* columns per warp                            */
constexpr int kRM = 2;       /* rows per lane in one chunk of the U pass    */
constexpr int kKM = 2;       /* k's per lane in one chunk of the G pass     */
constexpr int kNR = 4;       /* rows per lane held in registers: n ≤ 128    */
constexpr int kMaxWarps = 8;
constexpr int kMaxN = 32 * kNR;

struct fused_layout {
    int ldx, ldw, ldu; /* strides of Xs (n×d, col-major), Ws (d×C), Us (n×C), row-major tiles */
    int warps, C;
    size_t off_w, off_u, off_y, off_uh, off_eh, off_col, off_div, bytes;
};

inline size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

template <typename T> fused_layout make_layout(int64_t n, int64_t d, int warps)
{
    fused_layout L;
    L.warps = warps;
    L.C = warps * kRC;
    L.ldx = (int)(n | 1);
    L.ldw = L.C + 1;
    L.ldu = L.C + 1;
    size_t o = (size_t)L.ldx * (size_t)d * sizeof(T);
    L.off_w = o;
    o += (size_t)d * (size_t)L.ldw * sizeof(T);
    L.off_u = o;
    o += (size_t)n * (size_t)L.ldu * sizeof(T);
    L.off_y = o;
    o += (size_t)n * sizeof(T);
    L.off_uh = o;
    o += (size_t)n * sizeof(T);
    L.off_eh = o;
    o += (size_t)d * sizeof(T);
    L.off_col = o;
    o += 8 * (size_t)L.C * sizeof(T); /* γ, η_w, η_γ, loss, ∂γL, ‖w‖², a, ‖w-aê‖² per column */
    o = align_up(o, 16);
    L.off_div = o;
    o += (size_t)L.C * sizeof(int64_t);
    L.bytes = align_up(o, 16);
    return L;
}

/* The widest tile that fits, narrowed while that would leave SMs idle. */
template <typename T> bool choose_layout(int64_t n, int64_t d, int64_t S, int num_sms, size_t smem_optin,
                                         fused_layout *out)
{
    if (n < 1 || n > kMaxN || d < 1 || d > (1 << 20)) return false;
    int w = kMaxWarps;
    while (w >= 1 && make_layout<T>(n, d, w).bytes > smem_optin) w--;
    if (w < 1) return false;
    while (w > 1 && num_sms > 0 && (S + (int64_t)w * kRC - 1) / ((int64_t)w * kRC) < num_sms) w--;
    *out = make_layout<T>(n, d, w);
    return true;
}

template <typename T> __device__ __forceinline__ void warp_sum(T &v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
}

template <typename T>
__global__ void __launch_bounds__(kMaxWarps * 32, 1)
    fused_kernel(const bn_fused_args a, int64_t t0, int64_t t1, int64_t slot0, const fused_layout L)
{
    BN_DYNAMIC_SMEM(smem);
    T *Xs = (T *)smem;
    T *Ws = (T *)(smem + L.off_w);
    T *Us = (T *)(smem + L.off_u);
    T *ys = (T *)(smem + L.off_y);
    T *uhs = (T *)(smem + L.off_uh);
    T *ehs = (T *)(smem + L.off_eh);
    T *colv = (T *)(smem + L.off_col);
    int64_t *dv = (int64_t *)(smem + L.off_div);
    const int C = L.C;
    T *gam = colv, *ew = colv + C, *eg = colv + 2 * C, *lossv = colv + 3 * C, *ggam = colv + 4 * C,
      *wwv = colv + 5 * C, *av = colv + 6 * C, *bbv = colv + 7 * C;

    const int n = (int)a.n, d = (int)a.d;
    const int64_t S = a.S;
    const int ldx = L.ldx, ldw = L.ldw, ldu = L.ldu;
    const int64_t col0 = (int64_t)blockIdx.x * C;
    const int tid = (int)threadIdx.x, nth = (int)blockDim.x;
    const T *Xc = (const T *)a.Xc;
    T *W = (T *)a.W;
    T *gamma = (T *)a.gamma;

    /* Load once: Xc (col-major, ld n) → Xs (ld ldx); W's columns → Ws[k][c]. */
    for (int64_t e = tid; e < (int64_t)n * d; e += nth) {
        const int i = (int)(e % n), k = (int)(e / n);
        Xs[i + (int64_t)k * ldx] = Xc[e];
    }
    for (int64_t e = tid; e < (int64_t)C * d; e += nth) {
        const int cl = (int)(e / d), k = (int)(e % d);
        const int64_t j = col0 + cl;
        Ws[(int64_t)k * ldw + cl] = j < S ? W[j * d + k] : (T)0;
    }
    for (int i = tid; i < n; i += nth) {
        ys[i] = ((const T *)a.y)[i];
        uhs[i] = ((const T *)a.uhat)[i];
    }
    for (int k = tid; k < d; k += nth) ehs[k] = ((const T *)a.ehat)[k];
    for (int cl = tid; cl < C; cl += nth) {
        const int64_t j = col0 + cl;
        const bool ok = j < S;
        gam[cl] = ok ? gamma[j] : (T)0;
        ew[cl] = ok ? ((const T *)a.eta_w)[j] : (T)0;
        eg[cl] = ok ? ((const T *)a.eta_gamma)[j] : (T)0;
        dv[cl] = ok ? a.diverged_step[j] : 0;
    }
    __syncthreads();

    const int warp = tid >> 5, lane = tid & 31;
    const int wc = warp * kRC;
    const T rn = (T)n;
    const T sqrt_n = bn_m<T>::sqrt_(rn);
    T *ring = (T *)a.ring;

    for (int64_t t = t0; t < t1; t++) {
        const int64_t slot = bn_cuda_record_slot(t, a.steps, a.every);
        T *st = slot < 0 ? nullptr : ring + (size_t)(slot - slot0) * (size_t)BN_ST_COUNT * (size_t)S;
        const bool update = t < a.steps;

        /* U pass: Us[i][c] = Σ_k Xs[i,k]·Ws[k][c] for this warp's 8 columns. */
        for (int i0 = 0; i0 < n; i0 += 32 * kRM) {
            T acc[kRM][kRC];
#pragma unroll
            for (int m = 0; m < kRM; m++)
#pragma unroll
                for (int c = 0; c < kRC; c++) acc[m][c] = 0;
            for (int k = 0; k < d; k++) {
                T x[kRM];
#pragma unroll
                for (int m = 0; m < kRM; m++) {
                    const int i = i0 + lane + 32 * m;
                    x[m] = i < n ? Xs[i + (int64_t)k * ldx] : (T)0;
                }
                const T *wr = Ws + (int64_t)k * ldw + wc;
#pragma unroll
                for (int c = 0; c < kRC; c++) {
                    const T wv = wr[c];
#pragma unroll
                    for (int m = 0; m < kRM; m++) acc[m][c] += x[m] * wv;
                }
            }
#pragma unroll
            for (int m = 0; m < kRM; m++) {
                const int i = i0 + lane + 32 * m;
                if (i < n)
#pragma unroll
                    for (int c = 0; c < kRC; c++) Us[i * ldu + wc + c] = acc[m][c];
            }
        }
        __syncwarp();

        /* Forward pass per column (bn_forward_column); q replaces u in Us. */
        for (int c = 0; c < kRC; c++) {
            const int cl = wc + c;
            const int64_t j = col0 + cl;
            if (j >= S) break; /* warp-uniform: the same for every lane */
            T u[kNR], r[kNR];
            T ss = 0, al = 0;
#pragma unroll
            for (int m = 0; m < kNR; m++) {
                const int i = lane + 32 * m;
                u[m] = i < n ? Us[i * ldu + cl] : (T)0;
                r[m] = 0;
                if (i < n) {
                    ss += u[m] * u[m];
                    al += u[m] * uhs[i];
                }
            }
            warp_sum(ss);
            warp_sum(al);
            const T s = bn_m<T>::sqrt_(ss / rn);
            const T g_s = gam[cl] / s;
            T loss = 0, dot = 0, bres = 0;
#pragma unroll
            for (int m = 0; m < kNR; m++) {
                const int i = lane + 32 * m;
                if (i < n) {
                    const T z = g_s * u[m];
                    T d1;
                    loss += bn_m<T>::loss_value_d1(a.logistic, z, ys[i], &d1);
                    r[m] = d1 / rn;
                    dot += u[m] * r[m];
                    const T e = u[m] - al * uhs[i];
                    bres += e * e;
                }
            }
            warp_sum(loss);
            warp_sum(dot);
            warp_sum(bres);
            const T cc = dot / (rn * s * s);
#pragma unroll
            for (int m = 0; m < kNR; m++) {
                const int i = lane + 32 * m;
                if (i < n) Us[i * ldu + cl] = bn_m<T>::grad_q(g_s, r[m], cc, u[m]);
            }
            if (lane == 0) {
                lossv[cl] = loss / rn;
                ggam[cl] = dot / s;
                if (st) {
                    st[BN_ST_LOSS * S + j] = loss / rn;
                    st[BN_ST_GAMMA * S + j] = gam[cl];
                    st[BN_ST_SNORM * S + j] = s;
                    st[BN_ST_GGAMMA * S + j] = dot / s;
                    st[BN_ST_ALPHA_S * S + j] = al / sqrt_n;
                    st[BN_ST_BETA_S * S + j] = bn_m<T>::sqrt_(bres) / sqrt_n;
                }
            }
        }

        /* Statistics of the old w, per column. */
        for (int c = 0; c < kRC; c++) {
            const int cl = wc + c;
            const int64_t j = col0 + cl;
            if (j >= S) break;
            T ww = 0, al = 0;
            for (int k = lane; k < d; k += 32) {
                const T wk = Ws[(int64_t)k * ldw + cl];
                ww += wk * wk;
                al += wk * ehs[k];
            }
            warp_sum(ww);
            warp_sum(al);
            T bb = 0;
            for (int k = lane; k < d; k += 32) {
                const T e = Ws[(int64_t)k * ldw + cl] - al * ehs[k];
                bb += e * e;
            }
            warp_sum(bb);
            if (lane == 0) {
                wwv[cl] = ww;
                av[cl] = al;
                bbv[cl] = bb;
            }
        }
        __syncwarp();

        /* G pass: g = Xsᵀ q per column; ‖g‖² and w -= η_w g as g is formed. */
        T ggp[kRC];
#pragma unroll
        for (int c = 0; c < kRC; c++) ggp[c] = 0;
        for (int k0 = 0; k0 < d; k0 += 32 * kKM) {
            T acc[kKM][kRC];
#pragma unroll
            for (int m = 0; m < kKM; m++)
#pragma unroll
                for (int c = 0; c < kRC; c++) acc[m][c] = 0;
            for (int i = 0; i < n; i++) {
                T x[kKM];
#pragma unroll
                for (int m = 0; m < kKM; m++) {
                    const int k = k0 + lane + 32 * m;
                    x[m] = k < d ? Xs[i + (int64_t)k * ldx] : (T)0;
                }
                const T *qr = Us + i * ldu + wc;
#pragma unroll
                for (int c = 0; c < kRC; c++) {
                    const T qv = qr[c];
#pragma unroll
                    for (int m = 0; m < kKM; m++) acc[m][c] += x[m] * qv;
                }
            }
#pragma unroll
            for (int m = 0; m < kKM; m++) {
                const int k = k0 + lane + 32 * m;
                if (k < d)
#pragma unroll
                    for (int c = 0; c < kRC; c++) {
                        const T g = acc[m][c];
                        ggp[c] += g * g;
                        if (update) {
                            T *wp = Ws + (int64_t)k * ldw + wc + c;
                            *wp = *wp - ew[wc + c] * g;
                        }
                    }
            }
        }

        /* End of the step per column: records, γ, divergence (bn_update_column). */
#pragma unroll
        for (int c = 0; c < kRC; c++) {
            const int cl = wc + c;
            const int64_t j = col0 + cl;
            T gg = ggp[c];
            warp_sum(gg); /* every lane takes part; the result is used only for valid columns */
            if (lane == 0 && j < S) {
                if (st) {
                    st[BN_ST_WNORM * S + j] = bn_m<T>::sqrt_(wwv[cl]);
                    st[BN_ST_ALPHA * S + j] = av[cl];
                    st[BN_ST_BETA * S + j] = bn_m<T>::sqrt_(bbv[cl]);
                    st[BN_ST_GNORM * S + j] = bn_m<T>::sqrt_(gg);
                }
                const T gamma_t = gam[cl];
                if (update) gam[cl] = gamma_t - eg[cl] * ggam[cl];
                const bool bad = !(isfinite(lossv[cl]) && isfinite(gamma_t) && isfinite(wwv[cl]) && isfinite(gg));
                if (bad && dv[cl] < 0) {
                    dv[cl] = t;
                    a.diverged_step[j] = t;
                }
            }
        }
        __syncwarp();
    }

    __syncthreads();
    for (int64_t e = tid; e < (int64_t)C * d; e += nth) {
        const int cl = (int)(e / d), k = (int)(e % d);
        const int64_t j = col0 + cl;
        if (j < S) W[j * d + k] = Ws[(int64_t)k * ldw + cl];
    }
    for (int cl = tid; cl < C; cl += nth) {
        const int64_t j = col0 + cl;
        if (j < S) gamma[j] = gam[cl];
    }
}

} // namespace

template <typename T> size_t bn_cuda_fused_smem(int64_t n, int64_t d, size_t smem_optin)
{
    fused_layout L;
    return choose_layout<T>(n, d, 1 << 30, 0, smem_optin, &L) ? L.bytes : 0;
}

template <typename T>
cudaError_t bn_cuda_launch_fused(cudaStream_t stream, const bn_fused_args &a, int64_t t0, int64_t t1,
                                 int64_t slot0, int num_sms, size_t smem_optin)
{
    fused_layout L;
    if (!choose_layout<T>(a.n, a.d, a.S, num_sms, smem_optin, &L)) return cudaErrorInvalidValue;
    cudaError_t e = cudaFuncSetAttribute(fused_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)L.bytes);
    if (e != cudaSuccess) return e;
    const int64_t blocks = (a.S + L.C - 1) / L.C;
    BN_LAUNCH((unsigned)blocks, L.warps * 32, L.bytes, stream, fused_kernel<T>)(a, t0, t1, slot0, L);
    return cudaGetLastError();
}

template size_t bn_cuda_fused_smem<double>(int64_t, int64_t, size_t);
template size_t bn_cuda_fused_smem<float>(int64_t, int64_t, size_t);
template cudaError_t bn_cuda_launch_fused<double>(cudaStream_t, const bn_fused_args &, int64_t, int64_t,
                                                  int64_t, int, size_t);
template cudaError_t bn_cuda_launch_fused<float>(cudaStream_t, const bn_fused_args &, int64_t, int64_t,
                                                 int64_t, int, size_t);
