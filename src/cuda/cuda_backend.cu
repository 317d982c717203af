/* The CUDA backend: bn_backend_ops for fp64 and fp32 on one NVIDIA GPU.
 *
 *   products      cuBLAS (cublasDgemm/Sgemm; gemv when S = 1), column-major,
 *                 exactly the layouts of backend.h
 *   column passes kernels in cuda_columns.cu (the bn_math.h formulas)
 *   run_steps     steps t0..t1-1 without any host synchronization, replayed
 *                 from captured CUDA graphs
 *   fused path    optional (BN_CUDA_FUSED=1): one kernel runs many steps of a
 *                 small problem with Xc in shared memory (cuda_fused.cu)
 *
 * Graph scheme (why): a step is 4 launches (GEMM, forward, GEMM, update); at
 * the paper's size (n=64, d=256) each is a few microseconds of GPU work, so
 * plain launches would leave the GPU waiting on the host.  The step's shape
 * (which stats block it writes, whether it updates, which step number marks
 * a divergence) only depends on t, and t lives on the device: a 2-entry
 * control block ctrl = {t_base, slot0} in device memory, written by a 1-thread
 * kernel at the start of each run_steps call and advanced by another at the
 * end of each graph.  Every column kernel reads t = ctrl[0] + t_off and
 * derives the record slot (bn_cuda_record_slot, the rule of step.c), its
 * stats block (ring slot - slot0, or the scratch block) and update = t < T
 * by itself.  So two graphs cover every block of every run of a plan:
 *   graph K: BN_GRAPH_UNROLL consecutive steps (t_off = 0..K-1), then ctrl += K
 *   graph 1: one step, then ctrl += 1
 * run_steps launches graph K floor((t1-t0)/K) times and graph 1 for the rest;
 * the host never waits.  Unrolling K steps into one graph cuts the per-launch
 * cost K-fold; K = 16 keeps capture cheap and the remainder short.  The
 * graphs are captured on first use for a plan (its buffers and sizes) and
 * recaptured only when the plan changes.  BN_CUDA_GRAPHS=0 runs the same
 * kernels with plain launches instead (for debugging; same results).
 * A capture failure is reported on stderr and the backend falls back to plain
 * launches, so a driver/cuBLAS capture problem costs speed, not the run. */
#include "cuda_common.cuh"

extern "C" {
#include "cuda/bn_cuda_extra.h"
}

#include <atomic>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define BN_GRAPH_UNROLL 16
/* cuBLAS workspace, set explicitly so that captured GEMMs never allocate. */
#define BN_CUBLAS_WORKSPACE ((size_t)32 << 20)

namespace {

/* Process-wide counters of how steps were run (tests and benchmarks read them
 * through bn_cuda_debug_counters to see which path ran). */
std::atomic<long long> g_graph_steps{0}, g_plain_steps{0}, g_fused_steps{0}, g_captures{0};

struct cuda_ctx {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *workspace;
    int64_t *ctrl; /* device: {t_base, slot0} */
    int use_graphs;
    int use_fused;
    int num_sms;
    size_t smem_optin;
    char dev_name[128];
    /* The plan the graphs were captured for, and the graphs. */
    int have_key;
    bn_step_plan key;
    cudaGraphExec_t exec1, execk;
    /* An explicit Xcᵀ (d×n; BN_CUDA_XT=0 turns it off), so G = Xcᵀ·Q is a plain GEMM
     * instead of a transposed one: 4% faster per step on an H200 at the paper size. */
    int use_xt;
    /* record downloads beside the computation: a copy stream and its events */
    cudaStream_t copy_stream;
    cudaEvent_t ev_ready, ev_copied;
    void *xt;
    const void *xt_src;
    int64_t xt_n, xt_d;
};

inline cuda_ctx *ctx_of(bn_backend *be) { return (cuda_ctx *)be->ctx; }

/* Reads a 0/1 switch from the environment (unset = dflt). */
int env_flag(const char *name, int dflt)
{
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    return !(strcmp(v, "0") == 0 || strcmp(v, "off") == 0 || strcmp(v, "no") == 0);
}

bn_status set_device(const cuda_ctx *c)
{
    BN_CU(cudaSetDevice(c->device));
    return BN_OK;
}

/* Waits for the stream; a fault of an earlier kernel or copy shows up here. */
bn_status sync_stream(const cuda_ctx *c, const char *what)
{
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e == cudaSuccess) return BN_OK;
    (void)cudaGetLastError();
    return bn_fail(BN_ERR_BACKEND,
                   "%s:%d: cudaStreamSynchronize after %s on CUDA device %d failed: %s (%s); the "
                   "failure may come from any kernel or copy enqueued since the last synchronization",
                   __FILE__, __LINE__, what, c->device, cudaGetErrorString(e), cudaGetErrorName(e));
}

bn_status check_int_dims(int64_t n, int64_t d, int64_t S)
{
    if (n <= 0 || d <= 0 || S <= 0 || n > INT_MAX || d > INT_MAX || S > INT_MAX)
        return bn_fail(BN_ERR_ARG,
                       "CUDA backend: n=%lld, d=%lld, S=%lld must each be in 1..%d (cuBLAS 32-bit sizes)",
                       (long long)n, (long long)d, (long long)S, INT_MAX);
    return BN_OK;
}

/* ---------------------------------------------------------------- cuBLAS */

cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, int m, int nn, int k, const double *A,
                    int lda, const double *B, int ldb, double *C, int ldc)
{
    const double one = 1, zero = 0;
    return cublasDgemm(h, ta, CUBLAS_OP_N, m, nn, k, &one, A, lda, B, ldb, &zero, C, ldc);
}
cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, int m, int nn, int k, const float *A,
                    int lda, const float *B, int ldb, float *C, int ldc)
{
    const float one = 1, zero = 0;
    return cublasSgemm(h, ta, CUBLAS_OP_N, m, nn, k, &one, A, lda, B, ldb, &zero, C, ldc);
}
cublasStatus_t gemv(cublasHandle_t h, cublasOperation_t ta, int m, int nn, const double *A, int lda,
                    const double *x, double *y)
{
    const double one = 1, zero = 0;
    return cublasDgemv(h, ta, m, nn, &one, A, lda, x, 1, &zero, y, 1);
}
cublasStatus_t gemv(cublasHandle_t h, cublasOperation_t ta, int m, int nn, const float *A, int lda,
                    const float *x, float *y)
{
    const float one = 1, zero = 0;
    return cublasSgemv(h, ta, m, nn, &one, A, lda, x, 1, &zero, y, 1);
}

cublasStatus_t geam_t(cublasHandle_t h, int m, int nn, const double *A, int lda, double *C, int ldc)
{
    const double one = 1, zero = 0;
    return cublasDgeam(h, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, &one, A, lda, &zero, C, ldc, C, ldc);
}
cublasStatus_t geam_t(cublasHandle_t h, int m, int nn, const float *A, int lda, float *C, int ldc)
{
    const float one = 1, zero = 0;
    return cublasSgeam(h, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, &one, A, lda, &zero, C, ldc, C, ldc);
}

void drop_xt(cuda_ctx *c)
{
    if (c->xt) (void)cudaFree(c->xt);
    c->xt = NULL;
    c->xt_src = NULL;
}

/* With BN_CUDA_XT: Xcᵀ (d×n, ld d) for Xc, made outside any graph capture. */
template <typename T> bn_status ensure_xt(cuda_ctx *c, int64_t n, int64_t d, int64_t S, const T *Xc)
{
    if (!c->use_xt || S == 1) return BN_OK;
    if (c->xt && c->xt_src == Xc && c->xt_n == n && c->xt_d == d) return BN_OK;
    drop_xt(c);
    void *p = NULL;
    BN_CU(cudaMalloc(&p, (size_t)n * (size_t)d * sizeof(T)));
    c->xt = p;
    BN_CUBLAS(geam_t(c->blas, (int)d, (int)n, Xc, (int)n, (T *)p, (int)d));
    c->xt_src = Xc;
    c->xt_n = n;
    c->xt_d = d;
    return BN_OK;
}

/* U = Xc·W: Xc n×d (ld n), W d×S (ld d), U n×S (ld n). */
template <typename T>
bn_status enqueue_xw(cuda_ctx *c, int64_t n, int64_t d, int64_t S, const T *Xc, const T *W, T *U)
{
    if (S == 1) BN_CUBLAS(gemv(c->blas, CUBLAS_OP_N, (int)n, (int)d, Xc, (int)n, W, U));
    else BN_CUBLAS(gemm(c->blas, CUBLAS_OP_N, (int)n, (int)S, (int)d, Xc, (int)n, W, (int)d, U, (int)n));
    return BN_OK;
}

/* G = Xcᵀ·Q: Q n×S (ld n), G d×S (ld d). */
template <typename T>
bn_status enqueue_xtq(cuda_ctx *c, int64_t n, int64_t d, int64_t S, const T *Xc, const T *Q, T *G)
{
    if (S == 1) BN_CUBLAS(gemv(c->blas, CUBLAS_OP_T, (int)n, (int)d, Xc, (int)n, Q, G));
    else if (c->xt && c->xt_src == Xc && c->xt_n == n && c->xt_d == d)
        BN_CUBLAS(gemm(c->blas, CUBLAS_OP_N, (int)d, (int)S, (int)n, (const T *)c->xt, (int)d, Q, (int)n, G, (int)d));
    else BN_CUBLAS(gemm(c->blas, CUBLAS_OP_T, (int)d, (int)S, (int)n, Xc, (int)n, Q, (int)n, G, (int)d));
    return BN_OK;
}

/* One whole step of a plan: the two products and the two column passes. */
template <typename T> bn_status enqueue_step(cuda_ctx *c, const bn_step_plan *p, const bn_col_step<T> &cs)
{
    const T *Xc = (const T *)p->Xc;
    BN_TRY(enqueue_xw<T>(c, p->n, p->d, p->S, Xc, (const T *)p->W, (T *)p->U));
    BN_CU(bn_cuda_launch_forward<T>(c->stream, p->n, p->S, (const T *)p->U, (const T *)p->y,
                                    (const T *)p->uhat, (const T *)p->gamma, p->logistic, (T *)p->Q, cs));
    BN_TRY(enqueue_xtq<T>(c, p->n, p->d, p->S, Xc, (const T *)p->Q, (T *)p->G));
    BN_CU(bn_cuda_launch_update<T>(c->stream, p->d, p->S, (T *)p->W, (const T *)p->G, (const T *)p->ehat,
                                   (const T *)p->eta_w, (const T *)p->eta_gamma, (T *)p->gamma,
                                   p->diverged_step, cs));
    return BN_OK;
}

template <typename T> bn_col_step<T> direct_step(T *stats, int64_t step, int update)
{
    bn_col_step<T> cs;
    memset(&cs, 0, sizeof cs);
    cs.stats = stats;
    cs.step = step;
    cs.update = update;
    return cs;
}

template <typename T> bn_col_step<T> graph_step(const cuda_ctx *c, const bn_step_plan *p, int64_t t_off)
{
    bn_col_step<T> cs;
    memset(&cs, 0, sizeof cs);
    cs.ctrl = c->ctrl;
    cs.t_off = t_off;
    cs.steps = p->steps;
    cs.every = p->every;
    cs.ring = (T *)p->stats_ring;
    cs.scratch = (T *)p->stats_scratch;
    return cs;
}

/* ------------------------------------------------------------ graph cache */

bool same_plan(const bn_step_plan &a, const bn_step_plan &b)
{
    return a.n == b.n && a.d == b.d && a.S == b.S && a.logistic == b.logistic && a.Xc == b.Xc &&
           a.y == b.y && a.uhat == b.uhat && a.ehat == b.ehat && a.eta_w == b.eta_w &&
           a.eta_gamma == b.eta_gamma && a.W == b.W && a.gamma == b.gamma && a.U == b.U &&
           a.Q == b.Q && a.G == b.G && a.stats_ring == b.stats_ring &&
           a.ring_slots == b.ring_slots && a.stats_scratch == b.stats_scratch &&
           a.diverged_step == b.diverged_step && a.steps == b.steps && a.every == b.every;
}

void drop_graphs(cuda_ctx *c)
{
    if (c->exec1) (void)cudaGraphExecDestroy(c->exec1);
    if (c->execk) (void)cudaGraphExecDestroy(c->execk);
    c->exec1 = c->execk = NULL;
    c->have_key = 0;
}

/* Captures k steps (t_off = 0..k-1) and ctrl += k into an executable graph. */
template <typename T> bn_status capture_steps(cuda_ctx *c, const bn_step_plan *p, int k, cudaGraphExec_t *out)
{
    *out = NULL;
    BN_CU(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    bn_status st = BN_OK;
    for (int i = 0; i < k && st == BN_OK; i++) st = enqueue_step<T>(c, p, graph_step<T>(c, p, i));
    if (st == BN_OK) st = BN_CU_ST(bn_cuda_launch_advance(c->stream, c->ctrl, k));
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    if (st == BN_OK) st = bn_cu_status(e, __FILE__, __LINE__, "cudaStreamEndCapture(stream, &graph)");
    else (void)cudaGetLastError(); /* keep the first failure's message */
    if (st == BN_OK && !g) st = bn_fail(BN_ERR_BACKEND, "%s:%d: stream capture returned no graph", __FILE__, __LINE__);
    if (st == BN_OK) st = BN_CU_ST(cudaGraphInstantiate(out, g, 0));
    if (g) (void)cudaGraphDestroy(g); /* the executable graph keeps its own copy */
    if (st == BN_OK) g_captures++;
    return st;
}

/* Makes sure graph 1 (and graph K when need_k) exist for this plan. */
template <typename T> bn_status ensure_graphs(cuda_ctx *c, const bn_step_plan *p, int need_k)
{
    if (c->have_key && !same_plan(c->key, *p)) drop_graphs(c);
    if (!c->have_key) {
        /* Load every kernel (ours and cuBLAS's for these shapes) outside the
         * capture: products into the work buffers U, G and a forward pass
         * into Q and the scratch stats block, which every step overwrites
         * before reading.  The state W, γ and the divergence marks are untouched. */
        BN_CU(bn_cuda_preload_columns<T>(p->n, p->d));
        const T *Xc = (const T *)p->Xc;
        BN_TRY(ensure_xt<T>(c, p->n, p->d, p->S, Xc));
        BN_TRY(enqueue_xw<T>(c, p->n, p->d, p->S, Xc, (const T *)p->W, (T *)p->U));
        BN_CU(bn_cuda_launch_forward<T>(c->stream, p->n, p->S, (const T *)p->U, (const T *)p->y,
                                        (const T *)p->uhat, (const T *)p->gamma, p->logistic,
                                        (T *)p->Q, direct_step<T>((T *)p->stats_scratch, 0, 0)));
        BN_TRY(enqueue_xtq<T>(c, p->n, p->d, p->S, Xc, (const T *)p->Q, (T *)p->G));
        c->key = *p;
        c->have_key = 1;
    }
    if (!c->exec1) BN_TRY(capture_steps<T>(c, p, 1, &c->exec1));
    if (need_k && !c->execk) BN_TRY(capture_steps<T>(c, p, BN_GRAPH_UNROLL, &c->execk));
    return BN_OK;
}

/* ------------------------------------------------------------------- ops */

void cuda_destroy(bn_backend *be)
{
    if (!be) return;
    cuda_ctx *c = ctx_of(be);
    if (c) {
        (void)cudaSetDevice(c->device);
        if (c->stream) (void)cudaStreamSynchronize(c->stream);
        drop_graphs(c);
        drop_xt(c);
        if (c->copy_stream) (void)cudaStreamSynchronize(c->copy_stream);
        if (c->ev_ready) (void)cudaEventDestroy(c->ev_ready);
        if (c->ev_copied) (void)cudaEventDestroy(c->ev_copied);
        if (c->copy_stream) (void)cudaStreamDestroy(c->copy_stream);
        if (c->blas) (void)cublasDestroy(c->blas);
        if (c->workspace) (void)cudaFree(c->workspace);
        if (c->ctrl) (void)cudaFree(c->ctrl);
        if (c->stream) (void)cudaStreamDestroy(c->stream);
        (void)cudaGetLastError();
        free(c);
    }
    free(be);
}

bn_status cuda_alloc(bn_backend *be, size_t bytes, void **ptr)
{
    cuda_ctx *c = ctx_of(be);
    *ptr = NULL;
    BN_TRY(set_device(c));
    size_t free_b = 0, total_b = 0;
    BN_CU(cudaMemGetInfo(&free_b, &total_b));
    if (bytes > free_b)
        return bn_fail(BN_ERR_NOMEM,
                       "CUDA device %d (%s): cannot allocate %zu bytes (%.3f GiB): only %zu bytes "
                       "(%.3f GiB) free of %zu bytes (%.3f GiB)",
                       c->device, c->dev_name, bytes, (double)bytes / 1073741824.0, free_b,
                       (double)free_b / 1073741824.0, total_b, (double)total_b / 1073741824.0);
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return bn_fail(e == cudaErrorMemoryAllocation ? BN_ERR_NOMEM : BN_ERR_BACKEND,
                       "%s:%d: cudaMalloc of %zu bytes on CUDA device %d (%s) failed: %s (%s); "
                       "%zu bytes were free of %zu",
                       __FILE__, __LINE__, bytes, c->device, c->dev_name, cudaGetErrorString(e),
                       cudaGetErrorName(e), free_b, total_b);
    }
    /* Zeroed, like the CPU backend's buffers; ordered before any later use on the stream. */
    bn_status st = BN_CU_ST(cudaMemsetAsync(p, 0, bytes ? bytes : 1, c->stream));
    if (st != BN_OK) {
        (void)cudaFree(p);
        return st;
    }
    *ptr = p;
    return BN_OK;
}

void cuda_dealloc(bn_backend *be, void *ptr)
{
    if (!ptr) return;
    cuda_ctx *c = ctx_of(be);
    (void)cudaSetDevice(c->device);
    /* A graph may still refer to this buffer: drop it so none is relaunched. */
    drop_graphs(c);
    if (ptr == c->xt_src) drop_xt(c);
    /* cudaFree waits for the device; freeing never fails from the caller's
     * side, and an error here must not replace the message of a real failure. */
    (void)cudaFree(ptr);
    (void)cudaGetLastError();
}

bn_status cuda_alloc_host(bn_backend *be, size_t bytes, void **ptr)
{
    cuda_ctx *c = ctx_of(be);
    *ptr = NULL;
    BN_TRY(set_device(c));
    cudaError_t e = cudaMallocHost(ptr, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *ptr = NULL;
        return bn_fail(BN_ERR_NOMEM, "%s:%d: cudaMallocHost of %zu bytes (page-locked host memory) failed: %s",
                       __FILE__, __LINE__, bytes, cudaGetErrorString(e));
    }
    return BN_OK;
}

void cuda_free_host(bn_backend *be, void *ptr)
{
    (void)be;
    if (ptr) (void)cudaFreeHost(ptr);
    (void)cudaGetLastError();
}

/* dst ← src once the compute stream's work so far is done, on the copy
 * stream, so the compute stream goes on with the next block meanwhile. */
bn_status cuda_download_async(bn_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_ctx *c = ctx_of(be);
    BN_TRY(set_device(c));
    if (!c->copy_stream) {
        BN_CU(cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking));
        BN_CU(cudaEventCreateWithFlags(&c->ev_ready, cudaEventDisableTiming));
        BN_CU(cudaEventCreateWithFlags(&c->ev_copied, cudaEventDisableTiming));
    }
    BN_CU(cudaEventRecord(c->ev_ready, c->stream));
    BN_CU(cudaStreamWaitEvent(c->copy_stream, c->ev_ready, 0));
    BN_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->copy_stream));
    BN_CU(cudaEventRecord(c->ev_copied, c->copy_stream));
    return BN_OK;
}

bn_status cuda_download_wait(bn_backend *be)
{
    cuda_ctx *c = ctx_of(be);
    if (!c->copy_stream) return BN_OK;
    cudaError_t e = cudaEventSynchronize(c->ev_copied);
    if (e == cudaSuccess) return BN_OK;
    (void)cudaGetLastError();
    return bn_fail(BN_ERR_BACKEND,
                   "%s:%d: a record download on CUDA device %d failed: %s (%s); the failure may come from "
                   "any kernel enqueued before it",
                   __FILE__, __LINE__, c->device, cudaGetErrorString(e), cudaGetErrorName(e));
}

bn_status cuda_upload(bn_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_ctx *c = ctx_of(be);
    if (!bytes) return BN_OK;
    BN_TRY(set_device(c));
    BN_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    /* src may be freed as soon as we return. */
    return sync_stream(c, "an upload");
}

bn_status cuda_download(bn_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_ctx *c = ctx_of(be);
    if (!bytes) return BN_OK;
    BN_TRY(set_device(c));
    BN_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    return sync_stream(c, "a download");
}

bn_status cuda_synchronize(bn_backend *be)
{
    cuda_ctx *c = ctx_of(be);
    BN_TRY(set_device(c));
    return sync_stream(c, "synchronize");
}

template <typename T>
bn_status cuda_product_xw(bn_backend *be, int64_t n, int64_t d, int64_t S, const void *Xc,
                          const void *W, void *U)
{
    cuda_ctx *c = ctx_of(be);
    BN_TRY(check_int_dims(n, d, S));
    BN_TRY(set_device(c));
    return enqueue_xw<T>(c, n, d, S, (const T *)Xc, (const T *)W, (T *)U);
}

template <typename T>
bn_status cuda_product_xtq(bn_backend *be, int64_t n, int64_t d, int64_t S, const void *Xc,
                           const void *Q, void *G)
{
    cuda_ctx *c = ctx_of(be);
    BN_TRY(check_int_dims(n, d, S));
    BN_TRY(set_device(c));
    BN_TRY(ensure_xt<T>(c, n, d, S, (const T *)Xc));
    return enqueue_xtq<T>(c, n, d, S, (const T *)Xc, (const T *)Q, (T *)G);
}

template <typename T>
bn_status cuda_forward_columns(bn_backend *be, int64_t n, int64_t S, const void *U, const void *y,
                               const void *uhat, const void *gamma, int logistic, void *Q, void *stats)
{
    cuda_ctx *c = ctx_of(be);
    BN_TRY(check_int_dims(n, 1, S));
    BN_TRY(set_device(c));
    BN_CU(bn_cuda_launch_forward<T>(c->stream, n, S, (const T *)U, (const T *)y, (const T *)uhat,
                                    (const T *)gamma, logistic, (T *)Q, direct_step<T>((T *)stats, 0, 0)));
    return BN_OK;
}

template <typename T>
bn_status cuda_update_columns(bn_backend *be, int64_t d, int64_t S, void *W, const void *G,
                              const void *ehat, const void *eta_w, const void *eta_gamma, void *gamma,
                              int update, void *stats, int64_t step, int64_t *diverged_step)
{
    cuda_ctx *c = ctx_of(be);
    BN_TRY(check_int_dims(1, d, S));
    BN_TRY(set_device(c));
    BN_CU(bn_cuda_launch_update<T>(c->stream, d, S, (T *)W, (const T *)G, (const T *)ehat,
                                   (const T *)eta_w, (const T *)eta_gamma, (T *)gamma, diverged_step,
                                   direct_step<T>((T *)stats, step, update)));
    return BN_OK;
}

/* Every recorded step of t0..t1-1 must land inside the ring. */
bn_status check_run(const bn_step_plan *p, int64_t t0, int64_t t1, int64_t slot0)
{
    BN_TRY(check_int_dims(p->n, p->d, p->S));
    if (p->every <= 0 || p->steps <= 0 || t0 < 0 || t1 > p->steps + 1)
        return bn_fail(BN_ERR_ARG, "CUDA run_steps: steps %lld..%lld outside 0..%lld (every %lld)",
                       (long long)t0, (long long)t1 - 1, (long long)p->steps, (long long)p->every);
    for (int64_t t = t0; t < t1; t++) {
        const int64_t slot = bn_record_slot(t, p->steps, p->every);
        if (slot != bn_cuda_record_slot(t, p->steps, p->every))
            return bn_fail(BN_ERR_BACKEND, "CUDA run_steps: the device copy of the record schedule "
                                           "disagrees with step.c at step %lld", (long long)t);
        if (slot >= 0 && (slot - slot0 < 0 || slot - slot0 >= p->ring_slots))
            return bn_fail(BN_ERR_ARG,
                           "CUDA run_steps: step %lld records into slot %lld, outside the ring "
                           "(slot0 %lld, %lld slots)",
                           (long long)t, (long long)slot, (long long)slot0, (long long)p->ring_slots);
    }
    return BN_OK;
}

/* Plain launches, one step after the other (BN_CUDA_GRAPHS=0, or after a
 * failed capture).  Same kernels, same results as the graphs. */
template <typename T>
bn_status run_plain(cuda_ctx *c, const bn_step_plan *p, int64_t t0, int64_t t1, int64_t slot0, size_t block)
{
    for (int64_t t = t0; t < t1; t++) {
        const int64_t slot = bn_record_slot(t, p->steps, p->every);
        T *stats = slot < 0 ? (T *)p->stats_scratch : (T *)((char *)p->stats_ring + (size_t)(slot - slot0) * block);
        BN_TRY(enqueue_step<T>(c, p, direct_step<T>(stats, t, t < p->steps)));
    }
    g_plain_steps += (long long)(t1 - t0);
    return BN_OK;
}

template <typename T>
bn_status cuda_run_steps(bn_backend *be, const bn_step_plan *p, int64_t t0, int64_t t1, int64_t slot0)
{
    cuda_ctx *c = ctx_of(be);
    if (t1 <= t0) return BN_OK;
    BN_TRY(check_run(p, t0, t1, slot0));
    BN_TRY(set_device(c));
    const size_t block = (size_t)BN_ST_COUNT * (size_t)p->S * sizeof(T);

    if (c->use_fused && bn_cuda_fused_smem<T>(p->n, p->d, c->smem_optin) > 0) {
        bn_fused_args a;
        a.n = p->n;
        a.d = p->d;
        a.S = p->S;
        a.logistic = p->logistic;
        a.Xc = p->Xc;
        a.y = p->y;
        a.uhat = p->uhat;
        a.ehat = p->ehat;
        a.eta_w = p->eta_w;
        a.eta_gamma = p->eta_gamma;
        a.W = p->W;
        a.gamma = p->gamma;
        a.ring = p->stats_ring;
        a.scratch = p->stats_scratch;
        a.diverged_step = p->diverged_step;
        a.steps = p->steps;
        a.every = p->every;
        BN_CU(bn_cuda_launch_fused<T>(c->stream, a, t0, t1, slot0, c->num_sms, c->smem_optin));
        g_fused_steps += (long long)(t1 - t0);
        return BN_OK;
    }

    if (c->use_graphs) {
        bn_status st = ensure_graphs<T>(c, p, t1 - t0 >= BN_GRAPH_UNROLL);
        if (st != BN_OK) {
            /* Visible, not fatal: the same steps run with plain launches. */
            fprintf(stderr, "bnspike: CUDA graph capture failed, running steps with plain launches "
                            "from now on: %s\n", bn_last_error());
            drop_graphs(c);
            c->use_graphs = 0;
            bn_clear_error();
            return run_plain<T>(c, p, t0, t1, slot0, block);
        }
        BN_CU(bn_cuda_launch_set_ctrl(c->stream, c->ctrl, t0, slot0));
        const int64_t nk = (t1 - t0) / BN_GRAPH_UNROLL, rest = (t1 - t0) % BN_GRAPH_UNROLL;
        for (int64_t i = 0; i < nk; i++) BN_CU(cudaGraphLaunch(c->execk, c->stream));
        for (int64_t i = 0; i < rest; i++) BN_CU(cudaGraphLaunch(c->exec1, c->stream));
        g_graph_steps += (long long)(t1 - t0);
        return BN_OK;
    }
    return run_plain<T>(c, p, t0, t1, slot0, block);
}

/* Filled by name (C++17 has no designated initializers), so fields the
 * interface gains later start NULL.  The sharpness ops (issue 3) are in
 * cuda_hvp.cu. */
template <typename T> bn_backend_ops make_ops()
{
    bn_backend_ops o;
    memset(&o, 0, sizeof o);
    o.name = "cuda";
    o.destroy = cuda_destroy;
    o.alloc_host = cuda_alloc_host;
    o.free_host = cuda_free_host;
    o.download_async = cuda_download_async;
    o.download_wait = cuda_download_wait;
    o.alloc = cuda_alloc;
    o.dealloc = cuda_dealloc;
    o.upload = cuda_upload;
    o.download = cuda_download;
    o.synchronize = cuda_synchronize;
    o.product_xw = cuda_product_xw<T>;
    o.product_xtq = cuda_product_xtq<T>;
    o.forward_columns = cuda_forward_columns<T>;
    o.update_columns = cuda_update_columns<T>;
    o.run_steps = cuda_run_steps<T>;
    o.hvp_prepare_columns = bn_cuda_hvp_prepare_columns<T>;
    o.hvp_columns = bn_cuda_hvp_columns<T>;
    o.power_update = bn_cuda_power_update<T>;
    o.lanczos_extend = bn_cuda_lanczos_extend<T>;
    o.lobpcg_update = bn_cuda_lobpcg_update<T>;
    o.copy_columns = bn_cuda_copy_columns<T>;
    o.power_square = bn_cuda_power_square<T>;
    return o;
}
const bn_backend_ops cuda_ops_f64 = make_ops<double>();
const bn_backend_ops cuda_ops_f32 = make_ops<float>();

bn_status open_ctx(bn_backend *be, cuda_ctx *c, bn_precision prec)
{
    BN_TRY(set_device(c));
    cudaDeviceProp prop;
    BN_CU(cudaGetDeviceProperties(&prop, c->device));
    snprintf(c->dev_name, sizeof c->dev_name, "%.100s", prop.name);
    c->num_sms = prop.multiProcessorCount;
    c->smem_optin = prop.sharedMemPerBlockOptin;
    BN_CU(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    BN_CUBLAS(cublasCreate(&c->blas));
    BN_CUBLAS(cublasSetStream(c->blas, c->stream));
    /* After cublasSetStream, which resets the workspace to cuBLAS's own pool. */
    BN_CU(cudaMalloc(&c->workspace, BN_CUBLAS_WORKSPACE));
    BN_CUBLAS(cublasSetWorkspace(c->blas, c->workspace, BN_CUBLAS_WORKSPACE));
    BN_CUBLAS(cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_HOST));
    /* Full-precision products: no TF32 for fp32, no emulation for fp64. */
    BN_CUBLAS(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH));
    BN_CU(cudaMalloc((void **)&c->ctrl, 2 * sizeof(int64_t)));
    BN_CU(cudaMemset(c->ctrl, 0, 2 * sizeof(int64_t)));
    c->use_graphs = env_flag("BN_CUDA_GRAPHS", 1);
    c->use_fused = env_flag("BN_CUDA_FUSED", 0);
    c->use_xt = env_flag("BN_CUDA_XT", 1);
    int rt = 0, drv = 0, cbv = 0;
    (void)cudaRuntimeGetVersion(&rt);
    (void)cudaDriverGetVersion(&drv);
    (void)cublasGetVersion(c->blas, &cbv);
    snprintf(be->desc, sizeof be->desc,
             "cuda device %d: %.100s (cc %d.%d, %.1f GiB, %d SMs), %s, CUDA runtime %d.%d, driver %d.%d, "
             "cuBLAS %d%s%s",
             c->device, prop.name, prop.major, prop.minor, (double)prop.totalGlobalMem / 1073741824.0,
             prop.multiProcessorCount, prec == BN_FP32 ? "fp32" : "fp64", rt / 1000, (rt % 1000) / 10,
             drv / 1000, (drv % 1000) / 10, cbv, c->use_graphs ? "" : ", graphs off",
             c->use_fused ? ", fused small-problem path on" : "");
    if (c->use_xt) strncat(be->desc, ", explicit Xc^T", sizeof be->desc - strlen(be->desc) - 1);
    return BN_OK;
}

} // namespace

/* For the ops defined in other files (cuda_hvp.cu); declared in cuda_common.cuh. */
bn_status bn_cuda_backend_stream(bn_backend *be, cudaStream_t *stream)
{
    cuda_ctx *c = ctx_of(be);
    BN_TRY(set_device(c));
    *stream = c->stream;
    return BN_OK;
}

extern "C" bn_status bn_cuda_backend_open(bn_precision prec, int device, bn_backend **out)
{
    *out = NULL;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return bn_fail(BN_ERR_UNAVAILABLE, "no CUDA device is usable: cudaGetDeviceCount: %s (%s)",
                       cudaGetErrorString(e), cudaGetErrorName(e));
    }
    if (count <= 0) return bn_fail(BN_ERR_UNAVAILABLE, "no CUDA device is visible");
    if (device < 0 || device >= count)
        return bn_fail(BN_ERR_ARG, "CUDA device %d does not exist (%d visible: 0..%d)", device, count,
                       count - 1);
    bn_backend *be = (bn_backend *)calloc(1, sizeof *be);
    cuda_ctx *c = (cuda_ctx *)calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return bn_fail(BN_ERR_NOMEM, "cannot allocate the CUDA backend");
    }
    c->device = device;
    be->ctx = c;
    be->ops = prec == BN_FP32 ? &cuda_ops_f32 : &cuda_ops_f64;
    be->kind = BN_BACKEND_CUDA;
    be->precision = prec;
    be->threads = 1;
    be->device = device;
    bn_status st = open_ctx(be, c, prec);
    if (st != BN_OK) {
        cuda_destroy(be); /* never fails; keeps the message of st */
        return st;
    }
    *out = be;
    return BN_OK;
}

extern "C" int bn_cuda_device_count(void)
{
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return count;
}

extern "C" bn_status bn_cuda_describe(char *buf, size_t len)
{
    if (!buf || !len) return BN_OK;
    buf[0] = '\0';
    int rt = 0, drv = 0, count = 0;
    (void)cudaRuntimeGetVersion(&rt);
    (void)cudaDriverGetVersion(&drv);
    cudaError_t e = cudaGetDeviceCount(&count);
    size_t k = 0;
#define BN_PUT(...)                                                        \
    do {                                                                   \
        if (k < len) {                                                     \
            int w_ = snprintf(buf + k, len - k, __VA_ARGS__);              \
            if (w_ > 0) k += (size_t)w_;                                   \
        }                                                                  \
    } while (0)
    if (e != cudaSuccess || count <= 0) {
        if (e != cudaSuccess) (void)cudaGetLastError();
        BN_PUT("cuda: compiled in (CUDA runtime %d.%d), no device visible (%s)\n", rt / 1000,
               (rt % 1000) / 10, e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return BN_OK;
    }
    BN_PUT("cuda: compiled in (CUDA runtime %d.%d, driver %d.%d), %d device%s visible\n", rt / 1000,
           (rt % 1000) / 10, drv / 1000, (drv % 1000) / 10, count, count == 1 ? "" : "s");
    for (int i = 0; i < count; i++) {
        cudaDeviceProp prop;
        cudaError_t pe = cudaGetDeviceProperties(&prop, i);
        if (pe != cudaSuccess) {
            (void)cudaGetLastError();
            BN_PUT("  device %d: properties unavailable (%s)\n", i, cudaGetErrorString(pe));
            continue;
        }
        BN_PUT("  device %d: %s, compute capability %d.%d, %.1f GiB, %d SMs\n", i, prop.name,
               prop.major, prop.minor, (double)prop.totalGlobalMem / 1073741824.0,
               prop.multiProcessorCount);
    }
#undef BN_PUT
    return BN_OK;
}

/* Same rule as bn_record_slot (step.c), as the device computes it; for the tests. */
extern "C" int64_t bn_cuda_record_slot_host(int64_t t, int64_t steps, int64_t every)
{
    return bn_cuda_record_slot(t, steps, every);
}

/* How many steps ran through graphs, plain launches and the fused kernel, and
 * how many graphs were captured, in this process (any NULL is skipped). */
extern "C" void bn_cuda_debug_counters(long long *graph_steps, long long *plain_steps,
                                       long long *fused_steps, long long *captures)
{
    if (graph_steps) *graph_steps = g_graph_steps.load();
    if (plain_steps) *plain_steps = g_plain_steps.load();
    if (fused_steps) *fused_steps = g_fused_steps.load();
    if (captures) *captures = g_captures.load();
}
