/* The backend interface: the few primitives one GD step needs, as a table of
 * function pointers plus a context.  The driver (sim.c) and everything else
 * backend-independent calls BLAS or CUDA only through this table.
 *
 * Buffers are opaque device pointers ("device" is host memory for the CPU)
 * holding the backend's precision (double for fp64, float for fp32).
 * Matrix layouts, all column-major:
 *   Xc: n×d (ld n)   W, G: d×S (ld d)   U, Q: n×S (ld n)
 *   stats blocks: BN_ST_COUNT×S, field-major (see bn_math.h) */
#ifndef BN_BACKEND_H
#define BN_BACKEND_H

#include "internal.h"
#include "bn_math.h"
#include "bn_hvp_math.h"
#include "bn_sqh_math.h"

typedef struct bn_backend bn_backend;

/* Everything one run of steps touches; built once by the driver. */
typedef struct {
    int64_t n, d, S;
    int logistic;
    const void *Xc, *y;          /* n×d, n                                    */
    const void *uhat, *ehat;     /* n (Xc w_ref/‖Xc w_ref‖), d (w_ref/‖w_ref‖); zeros=none */
    const void *eta_w, *eta_gamma; /* S each                                  */
    void *W, *gamma;             /* state: d×S, S                            */
    void *U, *Q, *G;             /* work: n×S, n×S, d×S                      */
    void *stats_ring;            /* ring_slots blocks of BN_ST_COUNT×S        */
    int64_t ring_slots;
    void *stats_scratch;         /* one block, for steps not recorded         */
    int64_t *diverged_step;      /* device, S entries, -1 = finite so far     */
    int64_t steps, every;        /* T and K of the run                        */
} bn_step_plan;

typedef struct bn_backend_ops {
    const char *name;
    void (*destroy)(bn_backend *be);
    bn_status (*alloc)(bn_backend *be, size_t bytes, void **ptr);
    void (*dealloc)(bn_backend *be, void *ptr);
    bn_status (*upload)(bn_backend *be, void *dst, const void *src, size_t bytes);
    bn_status (*download)(bn_backend *be, void *dst, const void *src, size_t bytes);
    bn_status (*synchronize)(bn_backend *be);

    /* U = Xc·W.  Xc: n×d, W: d×S, U: n×S. */
    bn_status (*product_xw)(bn_backend *be, int64_t n, int64_t d, int64_t S,
                            const void *Xc, const void *W, void *U);
    /* G = Xcᵀ·Q.  Xc: n×d, Q: n×S, G: d×S. */
    bn_status (*product_xtq)(bn_backend *be, int64_t n, int64_t d, int64_t S,
                             const void *Xc, const void *Q, void *G);
    /* Per column j: bn_forward_column on U[:,j] → Q[:,j], stats[:,j]. */
    bn_status (*forward_columns)(bn_backend *be, int64_t n, int64_t S, const void *U,
                                 const void *y, const void *uhat, const void *gamma,
                                 int logistic, void *Q, void *stats);
    /* Per column j: bn_update_column on W[:,j], G[:,j]; marks diverged_step[j] = step
     * the first time column j is not finite. */
    bn_status (*update_columns)(bn_backend *be, int64_t d, int64_t S, void *W, const void *G,
                                const void *ehat, const void *eta_w, const void *eta_gamma,
                                void *gamma, int update, void *stats, int64_t step,
                                int64_t *diverged_step);

    /* Optional (all three or none): page-locked host memory, and a download
     * that starts once the work enqueued so far is done and runs beside the
     * work enqueued after it (a copy engine); download_wait blocks until it
     * has landed.  At most one download is in flight.  The driver uses them
     * to copy a block's records while the next block computes. */
    bn_status (*alloc_host)(bn_backend *be, size_t bytes, void **ptr);
    void (*free_host)(bn_backend *be, void *ptr);
    bn_status (*download_async)(bn_backend *be, void *dst, const void *src, size_t bytes);
    bn_status (*download_wait)(bn_backend *be);

    /* Optional (NULL = the generic loop in step.c): run steps t0..t1-1 of the
     * plan, writing the stats of recorded step t into ring slot
     * bn_record_slot(t) - slot0.  A backend fills this to fuse or capture steps. */
    bn_status (*run_steps)(bn_backend *be, const bn_step_plan *plan, int64_t t0, int64_t t1,
                           int64_t slot0);

    /* ---------------------------------------------------- sharpness (issue 3)
     * Optional: a backend that lacks them leaves all four NULL, and sharpness
     * is refused with BN_ERR_UNAVAILABLE (sharpness.c).  Each applies one
     * bn_hvp_math.h function to every column j (columns independent); layouts
     * as above, hs: BN_HS_COUNT×S and ctl: BN_SC_COUNT×S, field-major.
     * One HVP = product_xw (Udot = Xc·V) + hvp_columns + product_xtq (Xcᵀ·Qdot). */
    /* bn_hvp_prepare_column(U[:,j], y, gamma[j]) → R[:,j], H2[:,j] (n×S), hs[:,j]. */
    bn_status (*hvp_prepare_columns)(bn_backend *be, int64_t n, int64_t S, const void *U,
                                     const void *y, const void *gamma, int logistic, void *R,
                                     void *H2, void *hs);
    /* hg[j] = bn_hvp_column(U, R, H2, hs of column j, Udot[:,j], vg[j], aw[j], ag[j],
     * → Qdot[:,j]); aw, ag: S each, NULL = all ones. */
    bn_status (*hvp_columns)(bn_backend *be, int64_t n, int64_t S, const void *U, const void *R,
                             const void *H2, const void *hs, const void *Udot, const void *vg,
                             const void *aw, const void *ag, void *Qdot, void *hg);
    /* For columns with ctl[BN_SC_ACTIVE·S + j] != 0: bn_power_update_column(V[:,j], vg[j],
     * X[:,j], xg[j], W[:,j], project, ctl + j); other columns untouched. */
    bn_status (*power_update)(bn_backend *be, int64_t d, int64_t S, void *V, void *vg,
                              const void *X, const void *xg, const void *W, int project,
                              void *ctl);
    /* For active columns: bn_lanczos_extend_column(k, QW + j·d, QG + j, X ? X[:,j] : NULL,
     * xg + j, W[:,j], project, key = seed + j, counter, ctl + j, coef ? coef + j : NULL).
     * QW: slots of d×S (slot i at QW + i·d·S), QG: slots of S, coef: (k+1)×S or NULL. */
    bn_status (*lanczos_extend)(bn_backend *be, int64_t d, int64_t S, int64_t k, void *QW,
                                void *QG, const void *X, const void *xg, const void *W,
                                int project, uint64_t seed, uint64_t counter, void *ctl,
                                void *coef);
    /* Optional (issue 7; NULL = the general path's λ_max by the shifted power
     * iteration): for active columns, bn_lobpcg_column(stage, V[:,j], vg + j,
     * X[:,j], xg + j, W[:,j], project, L + j·4(d+1), lc + j, ctl + j, S, tol,
     * tau).  V, X, W: d×S; vg, xg: S; L: 4(d+1)×S col-major; lc:
     * BN_LC_COUNT×S float64, field-major.  START projects X in place for
     * project (STEP uses x - f·w); a column that stops clears its
     * ctl[ACTIVE]. */
    bn_status (*lobpcg_update)(bn_backend *be, int stage, int64_t d, int64_t S, void *V, void *vg, void *X,
                               void *xg, const void *W, int project, void *L, double *lc, void *ctl, double tol,
                               double tau);
    /* Optional (issue 7; NULL = the power iteration keeps every column in its
     * batch): strided gather/scatter of `count` columns of `rows` reals,
     *   dst[i·drs + dk·dcs] = src[i·srs + sk·scs]  for i < rows, k < count,
     * sk = sidx ? sidx[k] : k, dk = didx ? didx[k] : k (sidx, didx: backend
     * buffers of count int64).  src and dst must not overlap. */
    bn_status (*copy_columns)(bn_backend *be, int64_t rows, int64_t count, const void *src,
                              int64_t srs, int64_t scs, const int64_t *sidx, void *dst,
                              int64_t drs, int64_t dcs, const int64_t *didx);
    /* Optional (issue 7; NULL = the general HVPs above): for every column j the
     * whole power iteration bn_sqh_power_column on the square loss's Hessian in
     * the data's singular basis, O(r) per product (bn_sqh_math.h), with key
     * seed + j.  lam, cy: r (diag of AᵀA, Aᵀy); Z: r×S state; gamma: S; aw, ag:
     * S (√η_w, √η_γ) or NULL = ones; V, vg: previous vectors in (warm), last
     * vectors out (r×S, S); Vs, vgs: the record's start vectors, written;
     * io: BN_SQ_COUNT×S field-major; coef: BN_SQC_COUNT×S field-major, the
     * state's coefficients, read when coef_ready, else written. */
    bn_status (*power_square)(bn_backend *be, int64_t r, int64_t n, int64_t S, const void *lam,
                              const void *cy, const void *Z, const void *gamma, const void *aw,
                              const void *ag, int project, int warm, uint64_t seed, uint64_t counter,
                              void *V, void *vg, void *Vs, void *vgs, double tol, int64_t maxiter,
                              void *io, void *coef, int coef_ready);
} bn_backend_ops;

struct bn_backend {
    const bn_backend_ops *ops;
    bn_backend_kind kind;
    bn_precision precision;
    int threads;
    int device;
    void *ctx;
    char desc[256];
};

static inline size_t bn_real_size(bn_precision p) { return p == BN_FP32 ? sizeof(float) : sizeof(double); }

/* backend_transfer.c: count float64 host values to/from a buffer of the
 * backend's precision (converted through a staging copy for fp32). */
bn_status bn_upload_f64(bn_backend *be, void *dst, const double *src, size_t count);
bn_status bn_download_f64(bn_backend *be, double *dst, const void *src, size_t count);

/* backend_registry.c: the one place that knows which backends were compiled in. */
bn_status bn_backend_open(bn_backend_kind kind, bn_precision prec, int threads, int device,
                          bn_backend **out);
void bn_backend_close(bn_backend *be);

/* Constructors of the compiled-in backends. */
bn_status bn_cpu_backend_open(bn_precision prec, int threads, bn_backend **out);
#ifdef BN_HAVE_CUDA
bn_status bn_cuda_backend_open(bn_precision prec, int device, bn_backend **out);
int bn_cuda_device_count(void);
bn_status bn_cuda_describe(char *buf, size_t len);
#endif

/* step.c: which record slot step t fills, or -1 when t is not recorded. */
int64_t bn_record_slot(int64_t t, int64_t steps, int64_t every);
int64_t bn_record_count(int64_t steps, int64_t every);
/* The generic step loop over the primitive ops (t0 ≤ t < t1). */
bn_status bn_run_steps_generic(bn_backend *be, const bn_step_plan *plan, int64_t t0,
                               int64_t t1, int64_t slot0);

#endif
