/* Deterministic GEMM: C = A·B where every C[i,j] is the fixed FMA chain over
 * p = 0..k-1 (contract in det_gemm.h).
 *
 * Why it is deterministic by construction: every kernel keeps C[i,j] in ONE
 * accumulator lane (or, across k-blocks, stores it to C and reloads it, which
 * does not change its bits) and updates it with exactly one FMA per p, in
 * increasing p, starting from +0.  Nothing ever adds two partial sums, so no
 * blocking over m, n or k, no thread split and no choice of SIMD width can
 * change a single bit.  The accumulators start at +0 and the first step is a
 * real FMA (fma(a, b, +0) is +0 when a·b is -0, whereas a plain multiply
 * would give -0).  FMAs are explicit intrinsics or fma()/fmaf(): the code
 * never relies on compiler contraction (-std=c11 already implies
 * -ffp-contract=off in GCC).
 *
 * Layout of the file.  Part 1 (below) holds the ISA selection, the blocking
 * plan, the OpenMP driver and the public functions.  The kernels are written
 * once, in part 2 at the end, and instantiated five times by including this
 * same file again with BN_DG_TEMPLATE_PASS defined: {AVX-512F, AVX2+FMA} ×
 * {f64, f32} with __attribute__((target(...))) on each function (the Makefile
 * builds every file with the same flags and no -march), plus the portable
 * scalar version for both types.
 *
 * Design (AVX-512, the path this project's machines take):
 *   microkernel  MR×NR = 3 vectors × 8 columns = 24×8 (f64) / 48×8 (f32):
 *                24 zmm accumulators, 3 A loads + 8 B broadcasts (from
 *                memory) per 24 FMAs.  AVX2 (16 registers): 2 vectors × 6
 *                columns = 8×6 (f64) / 16×6 (f32), 12 accumulators.
 *   one column   (n = 1, and a lone last column) uses up to 8 vectors of
 *                rows (64 doubles) against the same column, so 8 independent
 *                chains hide the FMA latency: a GEMV at load speed.
 *   m tail       the last vector of a row panel uses masked loads/stores
 *                (AVX-512 k-masks, AVX vmaskmov); there is no scalar tail.
 *   n tail       kernels exist for every column count 1..NR.
 *   k blocking   kc <= 2 KiB of elements (256 f64, 512 f32): a packed A panel
 *                and the kc×NR slice of B stay close to the core; the partial
 *                sums go to C between k-blocks (bits unchanged).
 *   A packing    when a tile has more than NR columns and A's columns are
 *                more than 4 KiB apart (tall Xc), A's mc×kc block is copied
 *                into MR-row panels (contiguous, p-major) in a per-thread
 *                scratch buffer grown once (no malloc per call once warm);
 *                mc×kc <= 512 KiB so the block stays in L2.  Otherwise the
 *                kernel reads A in place (as fast, and no copy).  B is never
 *                packed (its columns are already contiguous in p).
 *   prefetch     the kernel prefetches the next column panel of B while the
 *                first row panel runs (B streams from L3/DRAM when S is
 *                large), a few lines per cache line of p.
 *   streamed A   when A is bigger than the caches (> 4 MiB, tall Xc), the
 *                packing of the next k-block is pipelined with the compute
 *                of the current one (two buffers): a slice of columns is
 *                packed before each kernel call, from lines the kernels
 *                prefetched two calls earlier, so DRAM reads overlap the FMAs
 *                and stay a few KiB ahead (A's power-of-two strides would
 *                make a whole prefetched block evict itself).
 *   threads      OpenMP over 2-D tiles (mc rows × nc columns), static
 *                schedule.  The split goes along n when n >= m (A, the shared
 *                operand, is then the small one) and along m otherwise
 *                (S = 1 or 32 against a tall Xc), with a tile count that is a
 *                multiple of the team size.  Small products (< 2^17 FMAs) and
 *                calls from inside a parallel region run serially. */
#ifndef BN_DG_TEMPLATE_PASS

#include "det_gemm.h"

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tuning constants (bytes, so that f32 gets twice the elements). */
#define DG_KC_BYTES 2048            /* k-block: 256 doubles / 512 floats       */
#define DG_ABLOCK_BYTES (512 << 10) /* packed A block mc×kc: half of a 1 MiB L2 */
#define DG_PAR_MIN_FMAS (1 << 17)   /* below this, a fork/join costs too much */
#define DG_STREAM_BYTES (4 << 20)   /* A bigger than this comes from DRAM     */
#define DG_PACK_MIN_STRIDE 4096     /* pack A only if its columns are further apart */
#define DG_PACK_LAG 2               /* slices between prefetch and pipelined pack */

/* A software-prefetch cursor over a column-strided region (`cols` columns of
 * `lines` cache lines, `stride` bytes apart).  The kernels advance it by
 * `per_chunk` lines each time they cross a cache line of B (every 64 bytes of
 * p), so memory traffic for data needed LATER (the next column panel of B,
 * the next block of A) is spread evenly over the FMAs instead of arriving in
 * bursts that would stall them. */
typedef struct {
    uintptr_t col;   /* first line of the current column (an address: it  */
                     /* runs past the end, where a pointer may not)        */
    int64_t stride;  /* bytes between columns                             */
    int64_t lines;   /* lines per column                                  */
    int64_t line;    /* next line in the current column                   */
    int64_t cols;    /* columns left, the current one included            */
    int64_t per_chunk;
} dg_pf;

static inline __attribute__((always_inline)) void dg_pf_step(dg_pf *f)
{
    for (int64_t q = 0; q < f->per_chunk && f->cols > 0; q++) {
        _mm_prefetch((const char *)(f->col + (uintptr_t)f->line * 64), _MM_HINT_T1);
        if (++f->line == f->lines) {
            f->line = 0;
            f->col += (uintptr_t)f->stride;
            f->cols--;
        }
    }
}

/* Cursor over `cols` columns of `bytes` bytes each, starting at p, `stride`
 * bytes apart, to be consumed in `chunks` steps. */
static void dg_pf_init(dg_pf *f, const void *p, int64_t bytes, int64_t cols, int64_t stride,
                       int64_t chunks)
{
    const uintptr_t a = (uintptr_t)p;
    f->col = a & ~(uintptr_t)63;
    f->lines = (int64_t)(((a & 63) + (uintptr_t)bytes + 63) / 64);
    f->stride = stride;
    f->line = 0;
    f->cols = bytes > 0 ? cols : 0;
    f->per_chunk = chunks > 0 ? (f->lines * f->cols + chunks - 1) / chunks : 0;
}

/* Packing of the NEXT A block done piecewise by block() while it computes
 * the current one: before each kernel call after the first `lag` ones,
 * columns [q, q + cpc) of the rows×kc block at src (col-major, lda) go into
 * dst (layout of pack()); the rest at the end.  The prefetch cursor runs
 * `lag` slices ahead of it. */
typedef struct {
    const void *src;
    int64_t lda, rows, kc;
    int64_t q, cpc, lag;
    void *dst;
} dg_packjob;

/* A (type, ISA) instance: block() computes one tile for one k-block;
 * pack() (NULL: never pack) lays out columns [q0, q1) of an A block for it.
 * pfa, pj (may be NULL): a cursor over memory to prefetch, and a packing job
 * to advance, while computing. */
typedef void (*dg_block_fn)(int64_t mr, int64_t nc, int64_t kc, const void *a, int64_t lda,
                            int packed, const void *b, int64_t ldb, void *c, int64_t ldc,
                            int first, dg_pf *pfa, dg_packjob *pj);
typedef void (*dg_pack_fn)(int64_t mr, int64_t kc, int64_t q0, int64_t q1, const void *a,
                           int64_t lda, void *dst);
typedef struct {
    dg_block_fn block;
    dg_pack_fn pack;
    int vl; /* elements per vector                                   */
    int mr; /* rows of a register panel (packed panel height)       */
    int nr; /* columns of the register block                        */
} dg_ops;

/* -------------------------------------------------- kernel instances (part 2) */

#define BN_DG_TEMPLATE_PASS 1

/* AVX-512F, f64: 8 lanes, __mmask8 tails. */
#define DG_T double
#define DG_SFX avx512_f64
#define DG_SIMD 1
#define DG_TARGET __attribute__((target("avx512f,fma")))
#define DG_V __m512d
#define DG_VL 8
#define DG_MV 3
#define DG_NR 8
#define DG_WMV 8
#define DG_MASK_T __mmask8
#define DG_MKMASK(rem) ((__mmask8)((1u << (rem)) - 1u))
#define DG_ZERO() _mm512_setzero_pd()
#define DG_LOAD(p) _mm512_loadu_pd(p)
#define DG_LOADM(p, m) _mm512_maskz_loadu_pd((m), (p))
#define DG_STORE(p, v) _mm512_storeu_pd((p), (v))
#define DG_STOREM(p, m, v) _mm512_mask_storeu_pd((p), (m), (v))
#define DG_BCAST(p) _mm512_set1_pd(*(p))
#define DG_FMA(a, b, c) _mm512_fmadd_pd((a), (b), (c))
#include "det_gemm.c"

/* AVX-512F, f32: 16 lanes, __mmask16 tails. */
#define DG_T float
#define DG_SFX avx512_f32
#define DG_SIMD 1
#define DG_TARGET __attribute__((target("avx512f,fma")))
#define DG_V __m512
#define DG_VL 16
#define DG_MV 3
#define DG_NR 8
#define DG_WMV 8
#define DG_MASK_T __mmask16
#define DG_MKMASK(rem) ((__mmask16)((1u << (rem)) - 1u))
#define DG_ZERO() _mm512_setzero_ps()
#define DG_LOAD(p) _mm512_loadu_ps(p)
#define DG_LOADM(p, m) _mm512_maskz_loadu_ps((m), (p))
#define DG_STORE(p, v) _mm512_storeu_ps((p), (v))
#define DG_STOREM(p, m, v) _mm512_mask_storeu_ps((p), (m), (v))
#define DG_BCAST(p) _mm512_set1_ps(*(p))
#define DG_FMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#include "det_gemm.c"

/* AVX2 + FMA, f64: 4 lanes; tails with vmaskmovpd (lane mask = all-ones). */
#define DG_T double
#define DG_SFX avx2_f64
#define DG_SIMD 1
#define DG_TARGET __attribute__((target("avx2,fma")))
#define DG_V __m256d
#define DG_VL 4
#define DG_MV 2
#define DG_NR 6
#define DG_WMV 8
#define DG_MASK_T __m256i
#define DG_MKMASK(rem)                                                                     \
    _mm256_cmpgt_epi64(_mm256_set1_epi64x(rem), _mm256_setr_epi64x(0, 1, 2, 3))
#define DG_ZERO() _mm256_setzero_pd()
#define DG_LOAD(p) _mm256_loadu_pd(p)
#define DG_LOADM(p, m) _mm256_maskload_pd((p), (m))
#define DG_STORE(p, v) _mm256_storeu_pd((p), (v))
#define DG_STOREM(p, m, v) _mm256_maskstore_pd((p), (m), (v))
#define DG_BCAST(p) _mm256_broadcast_sd(p)
#define DG_FMA(a, b, c) _mm256_fmadd_pd((a), (b), (c))
#include "det_gemm.c"

/* AVX2 + FMA, f32: 8 lanes. */
#define DG_T float
#define DG_SFX avx2_f32
#define DG_SIMD 1
#define DG_TARGET __attribute__((target("avx2,fma")))
#define DG_V __m256
#define DG_VL 8
#define DG_MV 2
#define DG_NR 6
#define DG_WMV 8
#define DG_MASK_T __m256i
#define DG_MKMASK(rem)                                                                     \
    _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define DG_ZERO() _mm256_setzero_ps()
#define DG_LOAD(p) _mm256_loadu_ps(p)
#define DG_LOADM(p, m) _mm256_maskload_ps((p), (m))
#define DG_STORE(p, v) _mm256_storeu_ps((p), (v))
#define DG_STOREM(p, m, v) _mm256_maskstore_ps((p), (m), (v))
#define DG_BCAST(p) _mm256_broadcast_ss(p)
#define DG_FMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#include "det_gemm.c"

/* Portable: fma()/fmaf() from <math.h> (a library call on a CPU without FMA,
 * correctly rounded either way). */
#define DG_T double
#define DG_SFX generic_f64
#define DG_SIMD 0
#define DG_SFMA fma
#include "det_gemm.c"

#define DG_T float
#define DG_SFX generic_f32
#define DG_SIMD 0
#define DG_SFMA fmaf
#include "det_gemm.c"

#undef BN_DG_TEMPLATE_PASS

/* Generic: rows in groups of 4, one column at a time (see part 2). */
static const dg_ops dg_ops_f64[BN_DG_ISA_COUNT] = {
    [BN_DG_ISA_GENERIC] = {dg_block_generic_f64, NULL, 1, 4, 1},
    [BN_DG_ISA_AVX2] = {dg_block_avx2_f64, dg_pack_avx2_f64, 4, 2 * 4, 6},
    [BN_DG_ISA_AVX512] = {dg_block_avx512_f64, dg_pack_avx512_f64, 8, 3 * 8, 8},
};
static const dg_ops dg_ops_f32[BN_DG_ISA_COUNT] = {
    [BN_DG_ISA_GENERIC] = {dg_block_generic_f32, NULL, 1, 4, 1},
    [BN_DG_ISA_AVX2] = {dg_block_avx2_f32, dg_pack_avx2_f32, 8, 2 * 8, 6},
    [BN_DG_ISA_AVX512] = {dg_block_avx512_f32, dg_pack_avx512_f32, 16, 3 * 16, 8},
};

/* ------------------------------------------------------------ ISA selection */

static const char *const dg_isa_names[BN_DG_ISA_COUNT] = {"generic", "avx2", "avx512"};

static pthread_once_t dg_once = PTHREAD_ONCE_INIT;
static atomic_int dg_isa_cur = BN_DG_ISA_GENERIC;

int bn_det_gemm_isa_supported(bn_dg_isa isa)
{
    __builtin_cpu_init();
    switch (isa) {
    case BN_DG_ISA_GENERIC:
        return 1;
    case BN_DG_ISA_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case BN_DG_ISA_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
    default:
        return 0;
    }
}

const char *bn_det_gemm_isa_name(bn_dg_isa isa)
{
    return (unsigned)isa < BN_DG_ISA_COUNT ? dg_isa_names[isa] : "?";
}

static bn_dg_isa dg_best_upto(bn_dg_isa isa)
{
    while (isa > BN_DG_ISA_GENERIC && !bn_det_gemm_isa_supported(isa)) isa = (bn_dg_isa)(isa - 1);
    return isa;
}

/* Once per process: the best path, or BN_DET_GEMM_ISA's. */
static void dg_init(void)
{
    bn_dg_isa isa = dg_best_upto(BN_DG_ISA_AVX512);
    const char *env = getenv("BN_DET_GEMM_ISA");
    if (env && *env) {
        int want = -1;
        for (int i = 0; i < BN_DG_ISA_COUNT; i++)
            if (strcmp(env, dg_isa_names[i]) == 0) want = i;
        if (want < 0)
            fprintf(stderr, "bnspike: BN_DET_GEMM_ISA=%s is not one of avx512|avx2|generic; using %s\n",
                    env, dg_isa_names[isa]);
        else if (!bn_det_gemm_isa_supported((bn_dg_isa)want))
            fprintf(stderr, "bnspike: BN_DET_GEMM_ISA=%s: this CPU lacks it; using %s\n", env,
                    dg_isa_names[isa = dg_best_upto((bn_dg_isa)want)]);
        else
            isa = (bn_dg_isa)want;
    }
    atomic_store(&dg_isa_cur, (int)isa);
}

bn_dg_isa bn_det_gemm_isa(void)
{
    pthread_once(&dg_once, dg_init);
    return (bn_dg_isa)atomic_load_explicit(&dg_isa_cur, memory_order_relaxed);
}

int bn_det_gemm_set_isa(bn_dg_isa isa)
{
    if ((unsigned)isa >= BN_DG_ISA_COUNT || !bn_det_gemm_isa_supported(isa)) return 0;
    pthread_once(&dg_once, dg_init); /* so a later first call cannot undo this */
    atomic_store(&dg_isa_cur, (int)isa);
    return 1;
}

/* --------------------------------------------------------------- the driver */

/* Per-thread packing scratch, grown (never shrunk) so that steady-state calls
 * do not allocate.  The thread-local pointer is the fast path; a pthread key
 * with a destructor frees the buffer when a thread exits (libgomp retires
 * pool threads when a later team is smaller). */
static _Thread_local void *dg_scratch_buf;
static _Thread_local size_t dg_scratch_cap;
static pthread_key_t dg_scratch_key;
static pthread_once_t dg_scratch_once = PTHREAD_ONCE_INIT;
static int dg_scratch_key_ok;

static void dg_scratch_free(void *p) { free(p); }
static void dg_scratch_key_init(void)
{
    dg_scratch_key_ok = pthread_key_create(&dg_scratch_key, dg_scratch_free) == 0;
}

static void *dg_scratch(size_t bytes)
{
    if (bytes > dg_scratch_cap) {
        pthread_once(&dg_scratch_once, dg_scratch_key_init);
        if (!dg_scratch_key_ok) return NULL; /* the caller then works on A in place */
        size_t cap = (bytes + 4095) & ~(size_t)4095;
        void *p = aligned_alloc(64, cap);
        if (!p || pthread_setspecific(dg_scratch_key, p) != 0) {
            free(p);
            return NULL;
        }
        free(dg_scratch_buf);
        dg_scratch_buf = p;
        dg_scratch_cap = cap;
    }
    return dg_scratch_buf;
}

static int64_t dg_cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t dg_rup(int64_t a, int64_t b) { return dg_cdiv(a, b) * b; }

/* How one call is cut: k into nkb blocks of kc, the rows into nmb blocks of
 * mc, the columns into nnb blocks of nc; tile t = (t % nmb, t / nmb). */
typedef struct {
    int64_t kc, nkb, mc, nmb, nc, nnb;
    int nt; /* OpenMP team size, 1 = serial */
} dg_plan;

static void dg_make_plan(dg_plan *pl, const dg_ops *o, size_t es, int64_t m, int64_t n,
                         int64_t k, int threads)
{
    const int64_t kc_max = DG_KC_BYTES / (int64_t)es;
    pl->nkb = dg_cdiv(k, kc_max);
    pl->kc = dg_cdiv(k, pl->nkb); /* near-equal blocks: no stub k-block      */
    int64_t mc_max = DG_ABLOCK_BYTES / ((int64_t)es * pl->kc) / o->mr * o->mr;
    if (mc_max < o->mr) mc_max = o->mr;
    int64_t nmb = dg_cdiv(m, mc_max), nnb = 1;

    int nt = 1;
    if (threads > 1 && !omp_in_parallel() && (double)m * (double)n * (double)k >= DG_PAR_MIN_FMAS)
        nt = threads;
    if (nt > 1) {
        /* Split along n when A (m×k, read by every column block) is the
         * smaller operand, else along m (B, k×n, is then re-read); either way
         * a multiple of nt tiles so the static schedule is balanced. */
        const int64_t npan_n = dg_cdiv(n, o->nr), npan_m = dg_cdiv(m, o->vl);
        if (n >= m && npan_n >= nt)
            nnb = nt;
        else if (npan_m >= nt)
            nmb = dg_rup(nmb, nt);
        else if (npan_n >= nt)
            nnb = nt;
    }
    /* Round block sizes to whole panels; to whole vectors for small blocks
     * and for a team (rounding 2048 rows to multiples of 24 would give one
     * thread 5 blocks and the other 4). */
    int64_t mc = dg_cdiv(m, nmb);
    mc = dg_rup(mc, nt == 1 && mc >= 4 * o->mr ? o->mr : o->vl);
    pl->mc = mc;
    pl->nmb = dg_cdiv(m, mc);
    pl->nc = dg_rup(dg_cdiv(n, nnb), o->nr);
    pl->nnb = dg_cdiv(n, pl->nc);
    const int64_t tiles = pl->nmb * pl->nnb;
    pl->nt = nt > 1 && tiles > 1 ? (int)(tiles < nt ? tiles : nt) : 1;
}

/* Packing A pays when the block is swept by more than one column panel AND
 * its columns are more than a page apart: then every step p of the kernel
 * would touch another page, and with power-of-two strides all the columns
 * fall into the same few cache sets.  With short strides (A = Xc with 64 or
 * 256 rows) the kernel reads A in place as fast as from a packed copy, and
 * the copy would cost 10-20% at n = 32. */
static int dg_wants_pack(const dg_ops *o, size_t es, int64_t cols, int64_t lda)
{
    return o->pack && cols > o->nr && lda * (int64_t)es > DG_PACK_MIN_STRIDE;
}

/* One tile: all k-blocks of C[i0:i0+rows, j0:j0+cols] (elements of size es). */
static void dg_tile(const dg_ops *o, size_t es, const dg_plan *pl, int64_t t, int64_t m,
                    int64_t n, int64_t k, const char *A, int64_t lda, const char *B,
                    int64_t ldb, char *C, int64_t ldc)
{
    const int64_t mb = t % pl->nmb, nb = t / pl->nmb;
    const int64_t i0 = mb * pl->mc, j0 = nb * pl->nc;
    const int64_t rows = m - i0 < pl->mc ? m - i0 : pl->mc;
    const int64_t cols = n - j0 < pl->nc ? n - j0 : pl->nc;
    const int64_t bsz = dg_rup(rows, o->mr) * pl->kc; /* elements of one packed block */
    /* When A streams from DRAM (too big for the caches), the packing of the
     * next k-block is pipelined with the compute of this one (two buffers):
     * a slice of columns is packed before each kernel call, and the kernels
     * prefetch the following slice a few lines at a time.  The reads of A
     * then overlap the FMAs, and only a slice or two is in flight, so A's
     * (often power-of-two) stride cannot make them evict each other. */
    const int stream = (double)m * (double)k * (double)es > DG_STREAM_BYTES && pl->nkb > 1;
    char *buf = NULL;
    if (dg_wants_pack(o, es, cols, lda)) buf = dg_scratch((size_t)(stream ? 2 : 1) * (size_t)bsz * es);
    if (!buf) {
        for (int64_t kb = 0; kb < pl->nkb; kb++) {
            const int64_t p0 = kb * pl->kc;
            const int64_t kc = k - p0 < pl->kc ? k - p0 : pl->kc;
            o->block(rows, cols, kc, A + (size_t)(i0 + p0 * lda) * es, lda, 0,
                     B + (size_t)(p0 + j0 * ldb) * es, ldb, C + (size_t)(i0 + j0 * ldc) * es,
                     ldc, kb == 0, NULL, NULL);
        }
        return;
    }
    const int64_t calls = dg_cdiv(cols, o->nr) * dg_cdiv(rows, o->mr); /* kernel calls per block */
    const int64_t lpp = 64 / (int64_t)es;                                /* elements per line */
    for (int64_t kb = 0; kb < pl->nkb; kb++) {
        const int64_t p0 = kb * pl->kc;
        const int64_t kc = k - p0 < pl->kc ? k - p0 : pl->kc;
        char *cur = buf + (size_t)((stream ? kb & 1 : 0) * bsz) * es;
        if (kb == 0 || !stream) o->pack(rows, kc, 0, kc, A + (size_t)(i0 + p0 * lda) * es, lda, cur);
        dg_packjob job, *pj = NULL;
        dg_pf nexta, *pfa = NULL;
        if (stream && kb + 1 < pl->nkb) {
            const int64_t np = p0 + kc, nk = k - np < pl->kc ? k - np : pl->kc;
            job.src = A + (size_t)(i0 + np * lda) * es;
            job.lda = lda;
            job.rows = rows;
            job.kc = nk;
            job.q = 0;
            job.cpc = dg_cdiv(nk, calls);
            job.lag = DG_PACK_LAG;
            job.dst = buf + (size_t)(((kb + 1) & 1) * bsz) * es;
            pj = &job;
            /* One slice of lines per kernel call, from the first slice on. */
            dg_pf_init(&nexta, job.src, rows * (int64_t)es, job.cpc * dg_cdiv(nk, job.cpc),
                       lda * (int64_t)es, dg_cdiv(nk, job.cpc) * dg_cdiv(kc, lpp));
            nexta.cols = nk; /* (the last slice may be narrower) */
            pfa = &nexta;
        }
        o->block(rows, cols, kc, cur, 0, 1, B + (size_t)(p0 + j0 * ldb) * es, ldb,
                 C + (size_t)(i0 + j0 * ldc) * es, ldc, kb == 0, pfa, pj);
    }
}

static void dg_gemm(const dg_ops *ops, size_t es, int64_t m, int64_t n, int64_t k,
                    const void *A, int64_t lda, const void *B, int64_t ldb, void *C,
                    int64_t ldc, int threads)
{
    if (m <= 0 || n <= 0) return;
    char *c = C;
    if (k <= 0) { /* the empty chain: +0 */
        for (int64_t j = 0; j < n; j++) memset(c + (size_t)(j * ldc) * es, 0, (size_t)m * es);
        return;
    }
    const dg_ops *o = &ops[bn_det_gemm_isa()];
    /* Fast path for small serial calls: one tile, one k-block, no packing,
     * none of the plan's integer divisions (they cost as much as a tiny
     * product). */
    const int64_t kc_max = DG_KC_BYTES / (int64_t)es;
    if (k <= kc_max && (double)m * (double)k * (double)es <= DG_ABLOCK_BYTES &&
        (threads <= 1 || (double)m * (double)n * (double)k < DG_PAR_MIN_FMAS) &&
        !dg_wants_pack(o, es, n, lda)) {
        o->block(m, n, k, A, lda, 0, B, ldb, C, ldc, 1, NULL, NULL);
        return;
    }
    dg_plan pl;
    dg_make_plan(&pl, o, es, m, n, k, threads);
    const int64_t tiles = pl.nmb * pl.nnb;
    if (pl.nt <= 1) { /* no OpenMP runtime call at all on the serial path */
        for (int64_t t = 0; t < tiles; t++)
            dg_tile(o, es, &pl, t, m, n, k, A, lda, B, ldb, c, ldc);
        return;
    }
#pragma omp parallel for num_threads(pl.nt) schedule(static)
    for (int64_t t = 0; t < tiles; t++)
        dg_tile(o, es, &pl, t, m, n, k, A, lda, B, ldb, c, ldc);
}

void bn_det_gemm_f64(int64_t m, int64_t n, int64_t k, const double *A, int64_t lda,
                     const double *B, int64_t ldb, double *C, int64_t ldc, int threads)
{
    dg_gemm(dg_ops_f64, sizeof(double), m, n, k, A, lda, B, ldb, C, ldc, threads);
}

void bn_det_gemm_f32(int64_t m, int64_t n, int64_t k, const float *A, int64_t lda,
                     const float *B, int64_t ldb, float *C, int64_t ldc, int threads)
{
    dg_gemm(dg_ops_f32, sizeof(float), m, n, k, A, lda, B, ldb, C, ldc, threads);
}

#else /* BN_DG_TEMPLATE_PASS ================================================= */

/* Part 2: the kernels of one (type, ISA) instance.  Parameters (macros, all
 * undefined again at the end): DG_T element type, DG_SFX name suffix,
 * DG_SIMD; for SIMD: DG_TARGET, DG_V vector type with DG_VL lanes, DG_MV
 * vectors × DG_NR columns in the register block, DG_WMV vectors in the
 * one-column kernel, DG_MASK_T/DG_MKMASK tail masks and the load/store/
 * broadcast/FMA operations; for the portable version DG_SFMA (fma or fmaf). */

#define DG_CAT2(a, b) a##_##b
#define DG_CAT(a, b) DG_CAT2(a, b)
#define DG_FN(name) DG_CAT(name, DG_SFX)

#if DG_SIMD

#define DG_MR (DG_MV * DG_VL)
#define DG_LINE ((int64_t)(64 / sizeof(DG_T))) /* elements per cache line */

/* The register-blocked microkernel, inlined with constant mv (vectors of
 * rows), nr (columns) and masked (is the last vector partial), so that the
 * accumulator array lives in registers.
 *   a: the A panel, rows [0, mv·VL) (the last vector masked with `mask`);
 *      step p is at a + p·as (as = lda when unpacked, MR when packed).
 *   b: B[0, 0] of the nr columns, col-major ldb.  c: C[0, 0], col-major ldc.
 *   first: the chains start at +0; else they continue from the values in C.
 * Each lane of acc[i][j] is one element's chain: one FMA per p. */
static inline __attribute__((always_inline)) DG_TARGET void
DG_FN(dg_kern)(const int mv, const int nr, const int masked, const int64_t kc, const DG_T *a,
               const int64_t as, const DG_T *b, const int64_t ldb, DG_T *c, const int64_t ldc,
               const DG_MASK_T mask, const int first, dg_pf *pfb, dg_pf *pfa)
{
    DG_V acc[DG_WMV][DG_NR];
    const DG_T *bj[DG_NR];
#pragma GCC unroll 8
    for (int j = 0; j < nr; j++) bj[j] = b + j * ldb;
    if (first) {
#pragma GCC unroll 8
        for (int j = 0; j < nr; j++)
#pragma GCC unroll 8
            for (int i = 0; i < mv; i++) acc[i][j] = DG_ZERO();
    } else {
#pragma GCC unroll 8
        for (int j = 0; j < nr; j++)
#pragma GCC unroll 8
            for (int i = 0; i < mv; i++)
                acc[i][j] = (masked && i == mv - 1) ? DG_LOADM(c + i * DG_VL + j * ldc, mask)
                                                    : DG_LOAD(c + i * DG_VL + j * ldc);
    }
    /* One step p: MV vectors of A, NR broadcasts of B, MV×NR FMAs. */
#define DG_STEP(p)                                                                         \
    do {                                                                                   \
        DG_V av[DG_WMV];                                                                   \
        _Pragma("GCC unroll 8") for (int i = 0; i < mv; i++) av[i] =                       \
            (masked && i == mv - 1) ? DG_LOADM(a + i * DG_VL, mask) : DG_LOAD(a + i * DG_VL); \
        _Pragma("GCC unroll 8") for (int j = 0; j < nr; j++) {                             \
            const DG_V bv = DG_BCAST(bj[j] + (p));                                         \
            _Pragma("GCC unroll 8") for (int i = 0; i < mv; i++) acc[i][j] =               \
                DG_FMA(av[i], bv, acc[i][j]);                                              \
        }                                                                                  \
        a += as;                                                                           \
    } while (0)
    /* Without prefetching, a plain loop.  With it, p goes in chunks of one
     * cache line of B and each chunk advances the prefetch cursors (next B
     * panel, next A block) by a few lines; the chunking costs a few percent,
     * so it is used only when there is something to prefetch. */
    if (!pfb && !pfa) {
        for (int64_t p = 0; p < kc; p++) DG_STEP(p);
    } else {
        for (int64_t p = 0, pe; p < kc; p = pe) {
            pe = p + DG_LINE < kc ? p + DG_LINE : kc;
            if (pfb) dg_pf_step(pfb);
            if (pfa) dg_pf_step(pfa);
            for (; p < pe; p++) DG_STEP(p);
        }
    }
#undef DG_STEP
    /* Make c opaque here so that the column addresses of C are recomputed
     * for the stores instead of being kept live (and spilled) across the
     * loop since the loads above. */
    __asm__("" : "+r"(c));
#pragma GCC unroll 8
    for (int j = 0; j < nr; j++)
#pragma GCC unroll 8
        for (int i = 0; i < mv; i++) {
            if (masked && i == mv - 1)
                DG_STOREM(c + i * DG_VL + j * ldc, mask, acc[i][j]);
            else
                DG_STORE(c + i * DG_VL + j * ldc, acc[i][j]);
        }
}

/* Every (MV, NR, masked) the blocks need becomes its own small function
 * dg_k_MV_NR_MSK_<sfx> (one inlined copy of the kernel each), reached through
 * the table dg_ktab_<sfx>[MV][NR][MSK]: MV = 1..DG_MV with NR = 1..DG_NR, and
 * the one-column strips MV = DG_MV+1..DG_WMV with NR = 1.  rem: lanes of the
 * last vector in use (the mask is built inside, out of the loop). */
#define DG_KNAME(MV, NR, MSK) DG_FN(DG_CAT(DG_CAT(DG_CAT(dg_k, MV), NR), MSK))
#define DG_KARGS                                                                           \
    int64_t kc, const DG_T *a, int64_t as, const DG_T *b, int64_t ldb, DG_T *c, int64_t ldc, \
        int rem, int first, dg_pf *pfb, dg_pf *pfa
typedef void (*DG_FN(dg_kfn))(DG_KARGS);
#define DG_DEFK(MV, NR, MSK)                                                               \
    static DG_TARGET void DG_KNAME(MV, NR, MSK)(DG_KARGS)                                  \
    {                                                                                      \
        DG_FN(dg_kern)(MV, NR, MSK, kc, a, as, b, ldb, c, ldc, DG_MKMASK(rem), first, pfb, pfa); \
    }
#define DG_DEFK2(MV, NR) DG_DEFK(MV, NR, 0) DG_DEFK(MV, NR, 1)
#define DG_ENT2(MV, NR)                                                                    \
    [MV][NR][0] = DG_KNAME(MV, NR, 0), [MV][NR][1] = DG_KNAME(MV, NR, 1),
#if DG_NR == 8
#define DG_DEFROW(MV)                                                                      \
    DG_DEFK2(MV, 1) DG_DEFK2(MV, 2) DG_DEFK2(MV, 3) DG_DEFK2(MV, 4) DG_DEFK2(MV, 5)        \
    DG_DEFK2(MV, 6) DG_DEFK2(MV, 7) DG_DEFK2(MV, 8)
#define DG_ENTROW(MV)                                                                      \
    DG_ENT2(MV, 1) DG_ENT2(MV, 2) DG_ENT2(MV, 3) DG_ENT2(MV, 4) DG_ENT2(MV, 5)             \
    DG_ENT2(MV, 6) DG_ENT2(MV, 7) DG_ENT2(MV, 8)
#elif DG_NR == 6
#define DG_DEFROW(MV)                                                                      \
    DG_DEFK2(MV, 1) DG_DEFK2(MV, 2) DG_DEFK2(MV, 3) DG_DEFK2(MV, 4) DG_DEFK2(MV, 5)        \
    DG_DEFK2(MV, 6)
#define DG_ENTROW(MV)                                                                      \
    DG_ENT2(MV, 1) DG_ENT2(MV, 2) DG_ENT2(MV, 3) DG_ENT2(MV, 4) DG_ENT2(MV, 5)             \
    DG_ENT2(MV, 6)
#else
#error "DG_NR must be 6 or 8"
#endif
#if DG_MV == 3 && DG_WMV == 8
DG_DEFROW(1) DG_DEFROW(2) DG_DEFROW(3)
DG_DEFK2(4, 1) DG_DEFK2(5, 1) DG_DEFK2(6, 1) DG_DEFK2(7, 1) DG_DEFK2(8, 1)
static const DG_FN(dg_kfn) DG_FN(dg_ktab)[DG_WMV + 1][DG_NR + 1][2] = {
    DG_ENTROW(1) DG_ENTROW(2) DG_ENTROW(3)
    DG_ENT2(4, 1) DG_ENT2(5, 1) DG_ENT2(6, 1) DG_ENT2(7, 1) DG_ENT2(8, 1)};
#elif DG_MV == 2 && DG_WMV == 8
DG_DEFROW(1) DG_DEFROW(2)
DG_DEFK2(3, 1) DG_DEFK2(4, 1) DG_DEFK2(5, 1) DG_DEFK2(6, 1) DG_DEFK2(7, 1) DG_DEFK2(8, 1)
static const DG_FN(dg_kfn) DG_FN(dg_ktab)[DG_WMV + 1][DG_NR + 1][2] = {
    DG_ENTROW(1) DG_ENTROW(2)
    DG_ENT2(3, 1) DG_ENT2(4, 1) DG_ENT2(5, 1) DG_ENT2(6, 1) DG_ENT2(7, 1) DG_ENT2(8, 1)};
#else
#error "unsupported (DG_MV, DG_WMV)"
#endif

/* Packs columns [q0, q1) of the mr×kc block of A (col-major, lda) into
 * panels of MR rows: panel r (rows r·MR ..) is kc groups of MR elements,
 * p-major, at dst + r·MR·kc.  A short last panel leaves its unused rows
 * unset; the kernel masks them out.  Column by column, so A is read
 * sequentially within each column. */
static DG_TARGET void DG_FN(dg_pack)(int64_t mr, int64_t kc, int64_t q0, int64_t q1,
                                     const void *av, int64_t lda, void *dv)
{
    const DG_T *A = av;
    DG_T *D = dv;
    for (int64_t p = q0; p < q1; p++) {
        const DG_T *src = A + p * lda;
        for (int64_t i = 0; i < mr; i += DG_MR) {
            DG_T *d = D + i * kc + p * DG_MR;
            const int64_t rows = mr - i < DG_MR ? mr - i : DG_MR;
            if (rows == DG_MR) {
#pragma GCC unroll 4
                for (int v = 0; v < DG_MV; v++) DG_STORE(d + v * DG_VL, DG_LOAD(src + i + v * DG_VL));
            } else {
                int64_t r = 0;
                for (; r + DG_VL <= rows; r += DG_VL) DG_STORE(d + r, DG_LOAD(src + i + r));
                if (r < rows) {
                    const DG_MASK_T mask = DG_MKMASK((int)(rows - r));
                    DG_STOREM(d + r, mask, DG_LOADM(src + i + r, mask));
                }
            }
        }
    }
}

/* Advances a packing job by one slice (all of it when `all`); the first
 * pj->lag calls only count down, so the slices packed have been prefetched
 * that many kernel calls earlier. */
static DG_TARGET void DG_FN(dg_pack_step)(dg_packjob *pj, int all)
{
    if (!pj || pj->q >= pj->kc) return;
    if (!all && pj->lag > 0) {
        pj->lag--;
        return;
    }
    const int64_t q1 = all || pj->kc - pj->q < pj->cpc ? pj->kc : pj->q + pj->cpc;
    DG_FN(dg_pack)(pj->rows, pj->kc, pj->q, q1, pj->src, pj->lda, pj->dst);
    pj->q = q1;
}

/* One tile for one k-block: C[0:mr, 0:nc] = (first ? 0 : C) + A·B chains.
 * A: mr×kc, col-major with lda, or (packed) MR-row panels from pack() below.
 * B: kc×nc col-major (ldb).  C: mr×nc col-major (ldc).
 * Column panels outside, row panels inside: the kc×NR slice of B stays in L1
 * while the A panels stream through it.  pfa: prefetch cursor handed to the
 * kernels; pj: a packing job advanced one slice before each kernel call. */
static DG_TARGET void DG_FN(dg_block)(int64_t mr, int64_t nc, int64_t kc, const void *av,
                                      int64_t lda, int packed, const void *bv, int64_t ldb,
                                      void *cv, int64_t ldc, int first, dg_pf *pfa,
                                      dg_packjob *pj)
{
    const DG_T *A = av, *B = bv;
    DG_T *C = cv;
    const int64_t chunks = (kc + DG_LINE - 1) / DG_LINE; /* per kernel call */
    for (int64_t j = 0; j < nc; j += DG_NR) {
        const int nr = (int)(nc - j < DG_NR ? nc - j : DG_NR);
        const DG_T *bp = B + j * ldb;
        if (nr == 1 && !packed) {
            /* One column (a GEMV): strips of DG_WMV vectors give enough
             * independent chains to run at load speed. */
            for (int64_t i = 0; i < mr; i += DG_WMV * DG_VL) {
                const int rows = (int)(mr - i < DG_WMV * DG_VL ? mr - i : DG_WMV * DG_VL);
                const int mv = (rows + DG_VL - 1) / DG_VL, rem = rows - (mv - 1) * DG_VL;
                DG_FN(dg_ktab)[mv][1][rem != DG_VL](kc, A + i, lda, bp, ldb, C + i + j * ldc, ldc,
                                                     rem, first, NULL, pfa);
            }
            continue;
        }
        for (int64_t i = 0; i < mr; i += DG_MR) {
            const int rows = (int)(mr - i < DG_MR ? mr - i : DG_MR);
            const int mv = (rows + DG_VL - 1) / DG_VL, rem = rows - (mv - 1) * DG_VL;
            const DG_T *ap = packed ? A + i * kc : A + i;
            const int64_t as = packed ? DG_MR : lda;
            /* The first row panel of each column panel prefetches the next
             * panel of B (which may come from L3 or DRAM when n is large). */
            dg_pf nextb, *pfb = NULL;
            if (i == 0 && nc - j > DG_NR) {
                const int64_t npf = nc - j - DG_NR < DG_NR ? nc - j - DG_NR : DG_NR;
                dg_pf_init(&nextb, bp + DG_NR * ldb, kc * (int64_t)sizeof(DG_T), npf,
                           ldb * (int64_t)sizeof(DG_T), chunks);
                pfb = &nextb;
            }
            DG_FN(dg_pack_step)(pj, 0);
            DG_FN(dg_ktab)[mv][nr][rem != DG_VL](kc, ap, as, bp, ldb, C + i + j * ldc, ldc, rem,
                                                 first, pfb, pfa);
        }
    }
    DG_FN(dg_pack_step)(pj, 1); /* whatever the slices did not cover */
}

#undef DG_MR
#undef DG_LINE
#undef DG_KNAME
#undef DG_KARGS
#undef DG_DEFK
#undef DG_DEFK2
#undef DG_ENT2
#undef DG_DEFROW
#undef DG_ENTROW
#undef DG_TARGET
#undef DG_V
#undef DG_VL
#undef DG_MV
#undef DG_NR
#undef DG_WMV
#undef DG_MASK_T
#undef DG_MKMASK
#undef DG_ZERO
#undef DG_LOAD
#undef DG_LOADM
#undef DG_STORE
#undef DG_STOREM
#undef DG_BCAST
#undef DG_FMA

#else /* portable */

/* The reference shape of the contract, 4 rows at a time so that the column of
 * B is loaded once per p.  A: mr×kc col-major (never packed), B: kc×nc, C:
 * mr×nc, all col-major; first as in the SIMD block. */
static void DG_FN(dg_block)(int64_t mr, int64_t nc, int64_t kc, const void *av, int64_t lda,
                            int packed, const void *bv, int64_t ldb, void *cv, int64_t ldc,
                            int first, dg_pf *pfa, dg_packjob *pj)
{
    const DG_T *A = av, *B = bv;
    DG_T *C = cv;
    (void)packed; /* never packed: the generic ops have no pack() */
    (void)pfa;
    (void)pj;
    for (int64_t j = 0; j < nc; j++) {
        const DG_T *bj = B + j * ldb;
        DG_T *cj = C + j * ldc;
        for (int64_t i = 0; i < mr; i += 4) {
            const int rows = (int)(mr - i < 4 ? mr - i : 4);
            DG_T acc[4] = {0, 0, 0, 0};
            if (!first)
                for (int r = 0; r < rows; r++) acc[r] = cj[i + r];
            const DG_T *ap = A + i;
            for (int64_t p = 0; p < kc; p++, ap += lda) {
                const DG_T bp = bj[p];
                for (int r = 0; r < rows; r++) acc[r] = DG_SFMA(ap[r], bp, acc[r]);
            }
            for (int r = 0; r < rows; r++) cj[i + r] = acc[r];
        }
    }
}

#undef DG_SFMA

#endif /* DG_SIMD */

#undef DG_T
#undef DG_SFX
#undef DG_SIMD
#undef DG_CAT2
#undef DG_CAT
#undef DG_FN

#endif /* BN_DG_TEMPLATE_PASS */
