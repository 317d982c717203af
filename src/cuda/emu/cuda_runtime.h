/* A host emulator of the small part of the CUDA runtime that src/cuda uses,
 * so the CUDA backend's own sources (kernels, graph capture, stream order,
 * launch checks) can be compiled with g++ and run on a machine without a GPU.
 * It is a test tool, not a backend: see run_emu_tests.sh beside this file.
 *
 * What it models:
 *   - kernels: every CUDA thread is a fiber (ucontext) of one host thread;
 *     blocks run one after the other; __syncthreads/__syncwarp are barriers
 *     over the block/warp, __shfl_xor_sync exchanges through the warp; a
 *     barrier that can never complete (divergent barrier) aborts with a message
 *   - launch checks: block size 1..1024, dynamic shared memory above 48 KiB
 *     only after cudaFuncSetAttribute, and never above the opt-in limit
 *   - shared memory starts as 0xFF bytes (NaN) so a read before a write shows
 *   - cudaMalloc'd memory starts as 0xFF bytes too
 *   - streams run their work at once, except while captured: then launches,
 *     copies and cuBLAS calls are recorded (arguments by value) and replayed by
 *     cudaGraphLaunch; "unsafe" calls during a capture (cudaMalloc, sync copies,
 *     synchronizations) fail with cudaErrorStreamCaptureUnsupported, as in
 *     cudaStreamCaptureModeThreadLocal
 * What it does not model: concurrency between streams, memory errors (use the
 * sanitizers of the host compiler), performance. */
#ifndef BN_EMU_CUDA_RUNTIME_H
#define BN_EMU_CUDA_RUNTIME_H

#define BN_CUDA_EMU 1

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <tuple>
#include <type_traits>
#include <ucontext.h>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static

enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevice = 101,
    cudaErrorNoDevice = 100,
    cudaErrorIllegalState = 401,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
};

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
};
enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
#define cudaStreamNonBlocking 0x01

struct cudaDeviceProp {
    char name[256];
    int major, minor;
    size_t totalGlobalMem;
    int multiProcessorCount;
    size_t sharedMemPerBlockOptin;
    int l2CacheSize;
};
struct cudaFuncAttributes {
    int maxThreadsPerBlock;
    size_t sharedSizeBytes;
};

namespace bn_emu {

struct uint3_ {
    unsigned x, y, z;
};

struct Stream {
    bool capturing = false;
    bool invalidated = false;
    std::vector<std::function<void()>> cap;
};
struct Graph {
    std::vector<std::function<void()>> ops;
};
struct Event {
    double t = 0;
};

inline cudaError_t g_last_error = cudaSuccess;
inline Stream g_legacy_stream;
inline std::vector<Stream *> g_streams;
inline std::map<void *, size_t> g_allocs;
inline size_t g_used = 0;
inline std::map<const void *, int> g_smem_limit;
inline int g_device = 0;

inline int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}
inline int device_count() { return env_int("BN_EMU_DEVICES", 1); }
inline size_t total_mem() { return (size_t)env_int("BN_EMU_MEM_GIB", 16) << 30; }
constexpr size_t kSmemOptin = 232448; /* an H100/H200's per-block opt-in limit */
constexpr size_t kSmemDefault = 48 << 10;

inline cudaError_t fail(cudaError_t e)
{
    g_last_error = e;
    return e;
}

/* An "unsafe" call while any stream captures: invalidate, as ThreadLocal mode does. */
inline bool capture_violation()
{
    bool any = false;
    for (Stream *s : g_streams)
        if (s->capturing) {
            s->invalidated = true;
            any = true;
        }
    return any;
}

inline Stream *stream_of(Stream *s) { return s ? s : &g_legacy_stream; }

inline void enqueue(Stream *s, std::function<void()> op)
{
    Stream *st = stream_of(s);
    if (st->capturing) st->cap.push_back(std::move(op));
    else op();
}

/* ------------------------------------------------------------ fibers */

struct Fiber {
    ucontext_t ctx;
    int state; /* 0 runnable, 1 at a warp barrier, 2 at a block barrier, 3 exited */
    uint3_ tid;
    unsigned char xbuf[16];
};

struct Exec {
    std::vector<Fiber> f;
    std::vector<char *> stacks;
    ucontext_t sched;
    int cur = 0;
    uint3_ bid{0, 0, 0}, bdim{1, 1, 1}, gdim{1, 1, 1};
    const std::function<void()> *body = nullptr;
    std::vector<unsigned char> dyn;
};
inline Exec g_exec;
constexpr size_t kStack = 256 << 10;

inline Fiber &me() { return g_exec.f[(size_t)g_exec.cur]; }

inline void fiber_entry()
{
    (*g_exec.body)();
    me().state = 3; /* returns to uc_link = the scheduler */
}

inline void yield_to_scheduler() { swapcontext(&me().ctx, &g_exec.sched); }

inline void dump_and_abort(const char *why)
{
    fprintf(stderr, "bn_emu: %s in block %u (blockDim %u)\n", why, g_exec.bid.x, g_exec.bdim.x);
    for (size_t i = 0; i < g_exec.f.size(); i++)
        fprintf(stderr, "  thread %zu state %d\n", i, g_exec.f[i].state);
    abort();
}

inline void run_block(unsigned nthreads)
{
    Exec &E = g_exec;
    E.f.resize(nthreads);
    while (E.stacks.size() < nthreads) E.stacks.push_back((char *)malloc(kStack));
    for (unsigned i = 0; i < nthreads; i++) {
        Fiber &F = E.f[i];
        F.state = 0;
        F.tid = {i, 0, 0};
        getcontext(&F.ctx);
        F.ctx.uc_stack.ss_sp = E.stacks[i];
        F.ctx.uc_stack.ss_size = kStack;
        F.ctx.uc_link = &E.sched;
        makecontext(&F.ctx, fiber_entry, 0);
    }
    for (;;) {
        for (unsigned i = 0; i < nthreads; i++)
            if (E.f[i].state == 0) {
                E.cur = (int)i;
                swapcontext(&E.sched, &E.f[i].ctx);
            }
        bool all_exited = true, released = false;
        for (unsigned i = 0; i < nthreads; i++) all_exited &= E.f[i].state == 3;
        if (all_exited) return;
        for (unsigned w = 0; w < nthreads; w += 32) {
            const unsigned end = w + 32 < nthreads ? w + 32 : nthreads;
            bool ready = true, some = false;
            for (unsigned i = w; i < end; i++) {
                ready &= E.f[i].state == 1 || E.f[i].state == 3;
                some |= E.f[i].state == 1;
            }
            if (ready && some) {
                for (unsigned i = w; i < end; i++)
                    if (E.f[i].state == 1) E.f[i].state = 0;
                released = true;
            }
        }
        bool bready = true, bsome = false;
        for (unsigned i = 0; i < nthreads; i++) {
            bready &= E.f[i].state == 2 || E.f[i].state == 3;
            bsome |= E.f[i].state == 2;
        }
        if (bready && bsome) {
            for (unsigned i = 0; i < nthreads; i++)
                if (E.f[i].state == 2) E.f[i].state = 0;
            released = true;
        }
        if (!released) dump_and_abort("deadlock: a barrier that not every live thread reaches");
    }
}

inline void run_grid(unsigned grid, unsigned block, size_t smem, const std::function<void()> &body)
{
    Exec &E = g_exec;
    E.body = &body;
    E.gdim = {grid, 1, 1};
    E.bdim = {block, 1, 1};
    E.dyn.assign(smem ? smem : 16, 0xFF);
    for (unsigned b = 0; b < grid; b++) {
        E.bid = {b, 0, 0};
        memset(E.dyn.data(), 0xFF, E.dyn.size());
        run_block(block);
    }
}

struct Launch {
    unsigned grid, block;
    size_t smem;
    Stream *stream;
};

template <typename F> struct Bound {
    Launch L;
    F *k;
    template <typename... A> void operator()(A &&...a) const
    {
        if (L.block < 1 || L.block > 1024 || L.grid < 1) {
            fail(cudaErrorInvalidConfiguration);
            return;
        }
        size_t limit = kSmemDefault;
        auto it = g_smem_limit.find((const void *)k);
        if (it != g_smem_limit.end()) limit = (size_t)it->second;
        if (L.smem > limit) {
            fprintf(stderr, "bn_emu: launch with %zu bytes of dynamic shared memory, limit %zu\n", L.smem, limit);
            fail(cudaErrorInvalidValue);
            return;
        }
        auto args = std::make_tuple(std::decay_t<A>(a)...);
        F *kk = k;
        Launch l = L;
        enqueue(L.stream, [kk, args, l]() {
            std::function<void()> body = [kk, &args]() { std::apply(kk, args); };
            run_grid(l.grid, l.block, l.smem, body);
        });
    }
};

} // namespace bn_emu

typedef bn_emu::Stream *cudaStream_t;
typedef bn_emu::Graph *cudaGraph_t;
typedef bn_emu::Graph *cudaGraphExec_t;
typedef bn_emu::Event *cudaEvent_t;

#define threadIdx (::bn_emu::me().tid)
#define blockIdx (::bn_emu::g_exec.bid)
#define blockDim (::bn_emu::g_exec.bdim)
#define gridDim (::bn_emu::g_exec.gdim)

#define BN_LAUNCH(grid, block, smem, stream, ...) \
    (::bn_emu::Bound<std::remove_pointer_t<decltype(&__VA_ARGS__)>>{ \
        ::bn_emu::Launch{(unsigned)(grid), (unsigned)(block), (size_t)(smem), (stream)}, &__VA_ARGS__})
#define BN_DYNAMIC_SMEM(name) unsigned char *name = ::bn_emu::g_exec.dyn.data()

inline void __syncthreads()
{
    bn_emu::me().state = 2;
    bn_emu::yield_to_scheduler();
}
inline void __syncwarp(unsigned mask = 0xffffffffu)
{
    (void)mask;
    bn_emu::me().state = 1;
    bn_emu::yield_to_scheduler();
}
template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32)
{
    static_assert(sizeof(T) <= 16, "shuffle of a large type");
    (void)mask;
    (void)width;
    bn_emu::Exec &E = bn_emu::g_exec;
    const unsigned self = (unsigned)E.cur;
    memcpy(E.f[self].xbuf, &v, sizeof v);
    __syncwarp();
    const unsigned partner = (self & ~31u) | ((self & 31u) ^ (unsigned)lane_mask);
    if (partner >= E.f.size() || E.f[partner].state == 3)
        bn_emu::dump_and_abort("__shfl_xor_sync from a lane that does not exist or has exited");
    T r;
    memcpy(&r, E.f[partner].xbuf, sizeof r);
    __syncwarp();
    return r;
}

/* ------------------------------------------------------- runtime calls */

inline const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorIllegalState: return "illegal state";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    }
    return "unknown error";
}
inline const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    }
    return "cudaErrorUnknown";
}
inline cudaError_t cudaGetLastError()
{
    cudaError_t e = bn_emu::g_last_error;
    bn_emu::g_last_error = cudaSuccess;
    return e;
}
inline cudaError_t cudaGetDeviceCount(int *c)
{
    *c = bn_emu::device_count();
    return *c > 0 ? cudaSuccess : bn_emu::fail(cudaErrorNoDevice);
}
inline cudaError_t cudaSetDevice(int d)
{
    if (d < 0 || d >= bn_emu::device_count()) return bn_emu::fail(cudaErrorInvalidDevice);
    bn_emu::g_device = d;
    return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d)
{
    if (d < 0 || d >= bn_emu::device_count()) return bn_emu::fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "bn_emu host emulator %d", d);
    p->major = 9;
    p->minor = 0;
    p->totalGlobalMem = bn_emu::total_mem();
    p->multiProcessorCount = bn_emu::env_int("BN_EMU_SMS", 4);
    p->sharedMemPerBlockOptin = bn_emu::kSmemOptin;
    p->l2CacheSize = 50 << 20;
    return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}
inline cudaError_t cudaDriverGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(size_t *fr, size_t *tot)
{
    *tot = bn_emu::total_mem();
    *fr = *tot - bn_emu::g_used;
    return cudaSuccess;
}
inline cudaError_t cudaMalloc(void **p, size_t bytes)
{
    *p = nullptr;
    if (bn_emu::capture_violation()) return bn_emu::fail(cudaErrorStreamCaptureUnsupported);
    if (bytes > bn_emu::total_mem() - bn_emu::g_used) return bn_emu::fail(cudaErrorMemoryAllocation);
    size_t sz = (bytes + 255) / 256 * 256;
    *p = aligned_alloc(256, sz ? sz : 256);
    if (!*p) return bn_emu::fail(cudaErrorMemoryAllocation);
    memset(*p, 0xFF, sz ? sz : 256);
    bn_emu::g_allocs[*p] = bytes;
    bn_emu::g_used += bytes;
    return cudaSuccess;
}
template <typename T> inline cudaError_t cudaMalloc(T **p, size_t bytes) { return cudaMalloc((void **)p, bytes); }
inline cudaError_t cudaFree(void *p)
{
    if (!p) return cudaSuccess;
    if (bn_emu::capture_violation()) return bn_emu::fail(cudaErrorStreamCaptureUnsupported);
    auto it = bn_emu::g_allocs.find(p);
    if (it == bn_emu::g_allocs.end()) {
        fprintf(stderr, "bn_emu: cudaFree of %p, which cudaMalloc did not return\n", p);
        abort();
    }
    bn_emu::g_used -= it->second;
    bn_emu::g_allocs.erase(it);
    free(p);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind, cudaStream_t s)
{
    bn_emu::enqueue(s, [=]() { memmove(dst, src, bytes); });
    return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind)
{
    if (bn_emu::capture_violation()) return bn_emu::fail(cudaErrorStreamCaptureUnsupported);
    memmove(dst, src, bytes);
    return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void *dst, int v, size_t bytes, cudaStream_t s)
{
    bn_emu::enqueue(s, [=]() { memset(dst, v, bytes); });
    return cudaSuccess;
}
inline cudaError_t cudaMemset(void *dst, int v, size_t bytes)
{
    if (bn_emu::capture_violation()) return bn_emu::fail(cudaErrorStreamCaptureUnsupported);
    memset(dst, v, bytes);
    return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned)
{
    *s = new bn_emu::Stream();
    bn_emu::g_streams.push_back(*s);
    return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    for (size_t i = 0; i < bn_emu::g_streams.size(); i++)
        if (bn_emu::g_streams[i] == s) bn_emu::g_streams.erase(bn_emu::g_streams.begin() + (long)i);
    delete s;
    return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    if (bn_emu::stream_of(s)->capturing || bn_emu::capture_violation())
        return bn_emu::fail(cudaErrorStreamCaptureUnsupported);
    return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize()
{
    if (bn_emu::capture_violation()) return bn_emu::fail(cudaErrorStreamCaptureUnsupported);
    return cudaSuccess;
}
inline cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode)
{
    if (!s) return bn_emu::fail(cudaErrorStreamCaptureUnsupported); /* the legacy stream */
    if (s->capturing) return bn_emu::fail(cudaErrorIllegalState);
    s->capturing = true;
    s->invalidated = false;
    s->cap.clear();
    return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
    *g = nullptr;
    if (!s || !s->capturing) return bn_emu::fail(cudaErrorIllegalState);
    s->capturing = false;
    if (s->invalidated) {
        s->cap.clear();
        return bn_emu::fail(cudaErrorStreamCaptureInvalidated);
    }
    *g = new bn_emu::Graph{std::move(s->cap)};
    s->cap.clear();
    return cudaSuccess;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long flags = 0)
{
    (void)flags;
    *e = new bn_emu::Graph{g->ops};
    return cudaSuccess;
}
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s)
{
    bn_emu::enqueue(s, [e]() {
        for (auto &op : e->ops) op();
    });
    return cudaSuccess;
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t g)
{
    delete g;
    return cudaSuccess;
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e)
{
    delete e;
    return cudaSuccess;
}
template <typename F> inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *a, F *)
{
    a->maxThreadsPerBlock = 1024;
    a->sharedSizeBytes = 0;
    return cudaSuccess;
}
template <typename F> inline cudaError_t cudaFuncSetAttribute(F *f, cudaFuncAttribute, int value)
{
    if (value < 0 || (size_t)value > bn_emu::kSmemOptin) return bn_emu::fail(cudaErrorInvalidValue);
    bn_emu::g_smem_limit[(const void *)f] = value;
    return cudaSuccess;
}
inline double bn_emu_now()
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
inline cudaError_t cudaEventCreate(cudaEvent_t *e)
{
    *e = new bn_emu::Event();
    return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    delete e;
    return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    bn_emu::enqueue(s, [e]() { e->t = bn_emu_now(); });
    return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
/* Every stream runs its work when it is enqueued, in issue order, so waiting
 * on an event recorded earlier is already satisfied. */
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
#define cudaEventDisableTiming 2u
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned) { return cudaEventCreate(e); }
inline cudaError_t cudaMallocHost(void **p, size_t bytes)
{
    *p = malloc(bytes ? bytes : 1);
    return *p ? cudaSuccess : bn_emu::fail(cudaErrorMemoryAllocation);
}
inline cudaError_t cudaFreeHost(void *p)
{
    free(p);
    return cudaSuccess;
}
inline cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    *ms = (float)((b->t - a->t) * 1e3);
    return cudaSuccess;
}

#endif
