/* The sharpness engine (issue 3): HVP, shifted power iteration, Lanczos and
 * the dense Hessian, batched over the S columns of a run.  See sharpness.h. */
#include "sharpness.h"
#include "ckpt.h"
#include "linalg.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Counter bases of the pseudo-random vectors (bn_hvp_random), one per use. */
#define CNT_POWER 0x100u   /* + op                 */
#define CNT_LANCZOS 0x1000u /* + 0x10000·op + step */

/* The per-column buffers one power iteration touches, for a batch of m
 * columns: the full batch (the engine's own buffers, m = S) or a compacted
 * one (issue 7: only the columns still iterating, gathered by copy_columns).
 * Field-major blocks (hs, ctl, vg, ...) have stride m. */
typedef struct {
    void *V, *vg, *Vs, *vgs, *U, *R, *H2, *hs, *aw, *ag, *W, *ctl;
    void *L; /* LOBPCG: 4(d+1) reals per column (bn_hvp_math.h), NULL until needed */
} pw_set;

struct bn_sharp {
    bn_backend *be;
    bn_sharp_setup su;
    size_t rs;          /* bytes per real */
    double eps;         /* unit roundoff of the backend precision */
    double tol;         /* effective tolerance */
    double *eta_w, *eta_g; /* host copies, S each */
    /* backend buffers */
    void *U, *R, *H2, *hs, *Udot, *Qdot, *X, *xg, *ctl, *aw, *ag, *Vsave, *vgsave;
    void *V[BN_SOP_COUNT], *vg[BN_SOP_COUNT];
    void *QW, *QG, *coef;
    int64_t qslots;
    /* LOBPCG (issue 7): the block L of the full batch and the control state
     * lc (BN_LC_COUNT×S float64, bn_hvp_math.h), made on first use; lobpcg:
     * the general path uses it. */
    void *L, *lc;
    int lobpcg;
    /* Per operator, LOBPCG's history between records: the vector of the
     * record before the last (Vp, vgp; pinit: it exists), for PREDICT; fresh:
     * V holds another operator's vector of this record (warm_from), which is
     * no history; gap: each column's last Ritz gap (NaN: none), the START's
     * gap rule. */
    void *Vp[BN_SOP_COUNT], *vgp[BN_SOP_COUNT];
    int pinit[BN_SOP_COUNT], fresh[BN_SOP_COUNT];
    double *gap[BN_SOP_COUNT];
    /* fresh_src: the operator warm_from copied V[op] from; l_owner: the
     * operator whose final (x, Ax) sh->L holds (-1: none), for SHARED. */
    int fresh_src[BN_SOP_COUNT];
    int l_owner;
    /* host */
    double *hctl;       /* BN_SC_COUNT×S */
    void *stage;        /* conversion staging, max(d, BN_SC_COUNT)·S reals */
    double *sigma[BN_SOP_COUNT];
    int vinit[BN_SOP_COUNT];
    unsigned char *inrow; /* S: w in the row space of Xc */
    const void *W, *gamma;
    int hvp_ready;      /* U, R, H2, hs hold the state of W, gamma (made on first need) */
    /* The square loss in the data's singular basis (issue 7; su.sq_lam set and
     * the backend has power_square): each column's power iteration runs whole
     * on the backend at O(d) per product; sqio: BN_SQ_COUNT×S; sqcoef:
     * BN_SQC_COUNT×S, the state's coefficients, shared by the operators of a
     * record (sqcoef_ready: they hold the state of W, gamma). */
    int square;
    void *sqio, *sqcoef;
    int sqcoef_ready;
    int64_t last_fixed;    /* columns the certificate corrected in the last power call */
    int64_t last_bisected; /* columns capped and finished by bisection in it */
    /* Compaction of the power iteration (issue 7): two batches of the columns
     * still iterating, and two device index buffers (S int64 each). */
    pw_set cset[2];
    void *idx[2];
    int64_t compactions;
};

/* ------------------------------------------------------------- transfers */

static bn_status up(bn_sharp *sh, void *dst, const double *src, size_t count)
{
    bn_backend *be = sh->be;
    if (be->precision == BN_FP64) return be->ops->upload(be, dst, src, count * sizeof(double));
    float *t = (float *)sh->stage;
    for (size_t i = 0; i < count; i++) t[i] = (float)src[i];
    return be->ops->upload(be, dst, t, count * sizeof(float));
}

static bn_status down(bn_sharp *sh, double *dst, const void *src, size_t count)
{
    bn_backend *be = sh->be;
    if (be->precision == BN_FP64) return be->ops->download(be, dst, src, count * sizeof(double));
    float *t = (float *)sh->stage;
    BN_TRY(be->ops->download(be, t, src, count * sizeof(float)));
    for (size_t i = 0; i < count; i++) dst[i] = (double)t[i];
    return BN_OK;
}

static void *at(bn_sharp *sh, void *base, size_t elems) { return (char *)base + elems * sh->rs; }

/* ctl fields [f0, f1) between host and backend. */
static bn_status ctl_up(bn_sharp *sh, int f0, int f1)
{
    size_t S = (size_t)sh->su.S;
    return up(sh, at(sh, sh->ctl, (size_t)f0 * S), sh->hctl + (size_t)f0 * S, (size_t)(f1 - f0) * S);
}

static bn_status ctl_down(bn_sharp *sh, int f0, int f1)
{
    size_t S = (size_t)sh->su.S;
    return down(sh, sh->hctl + (size_t)f0 * S, at(sh, sh->ctl, (size_t)f0 * S), (size_t)(f1 - f0) * S);
}

static double *hc(bn_sharp *sh, int field) { return sh->hctl + (size_t)field * (size_t)sh->su.S; }

/* ------------------------------------------------------------- lifecycle */

static void pw_set_free(bn_sharp *sh, pw_set *s);

static bn_status dalloc(bn_sharp *sh, size_t count, void **p)
{
    size_t bytes = bn_mul_size(count ? count : 1, sh->rs);
    if (!bytes) return bn_fail(BN_ERR_ARG, "sharpness: buffer of %zu elements is too large", count);
    return sh->be->ops->alloc(sh->be, bytes, p);
}

bn_status bn_sharp_create(bn_backend *be, const bn_sharp_setup *su, bn_sharp **out)
{
    *out = NULL;
    const bn_backend_ops *o = be->ops;
    if (!o->hvp_prepare_columns || !o->hvp_columns || !o->power_update || !o->lanczos_extend)
        return bn_fail(BN_ERR_UNAVAILABLE,
                       "the %s backend does not implement the sharpness operations (Hessian-vector "
                       "products); use --backend cpu for sharpness",
                       o->name);
    if (su->n < 2 || su->d < 1 || su->S < 1 || su->maxiter < 1 || !(su->tol > 0) || su->lanczos_max < 0)
        return bn_fail(BN_ERR_ARG, "sharpness: bad setup (n=%lld d=%lld S=%lld maxiter=%lld tol=%g)",
                       (long long)su->n, (long long)su->d, (long long)su->S,
                       (long long)su->maxiter, su->tol);
    bn_sharp *sh = calloc(1, sizeof *sh);
    if (!sh) return bn_fail(BN_ERR_NOMEM, "cannot allocate the sharpness engine");
    sh->l_owner = -1;
    sh->be = be;
    sh->su = *su;
    sh->rs = bn_real_size(be->precision);
    sh->eps = be->precision == BN_FP32 ? (double)FLT_EPSILON / 2 : DBL_EPSILON / 2;
    double floor_tol = 4.0 * sh->eps * sqrt((double)(su->d + 1));
    sh->tol = su->tol > floor_tol ? su->tol : floor_tol;
    size_t n = (size_t)su->n, d = (size_t)su->d, S = (size_t)su->S;
    sh->eta_w = malloc(S * sizeof(double));
    sh->eta_g = malloc(S * sizeof(double));
    sh->hctl = calloc((size_t)BN_SC_COUNT * S, sizeof(double));
    size_t stage = (d > BN_SC_COUNT ? d : BN_SC_COUNT) * S;
    if ((size_t)su->lanczos_max + 1 > d && (size_t)su->lanczos_max + 1 > BN_SC_COUNT) stage = ((size_t)su->lanczos_max + 1) * S;
    sh->stage = malloc(stage * sizeof(double));
    bn_status st = BN_OK;
    if (!sh->eta_w || !sh->eta_g || !sh->hctl || !sh->stage)
        st = bn_fail(BN_ERR_NOMEM, "cannot allocate the sharpness engine");
    for (int op = 0; op < BN_SOP_COUNT && st == BN_OK; op++) {
        if (!(sh->sigma[op] = calloc(S, sizeof(double))) || !(sh->gap[op] = malloc(S * sizeof(double))))
            st = bn_fail(BN_ERR_NOMEM, "cannot allocate the sharpness engine");
        for (size_t j = 0; st == BN_OK && j < S; j++) sh->gap[op][j] = NAN;
    }
    if (st == BN_OK && !(sh->inrow = malloc(S))) st = bn_fail(BN_ERR_NOMEM, "cannot allocate the sharpness engine");
    if (st == BN_OK) {
        memcpy(sh->eta_w, su->eta_w, S * sizeof(double));
        memcpy(sh->eta_g, su->eta_gamma, S * sizeof(double));
        for (size_t j = 0; j < S; j++) sh->inrow[j] = su->w_in_rowspace ? su->w_in_rowspace[j] != 0 : 1;
        sh->su.w_in_rowspace = NULL; /* not kept: the copy above is */
        if (sh->su.rank > (int64_t)d) sh->su.rank = (int64_t)d;
    }
    if (st == BN_OK) st = dalloc(sh, n * S, &sh->U);
    if (st == BN_OK) st = dalloc(sh, n * S, &sh->R);
    if (st == BN_OK) st = dalloc(sh, n * S, &sh->H2);
    if (st == BN_OK) st = dalloc(sh, (size_t)BN_HS_COUNT * S, &sh->hs);
    if (st == BN_OK) st = dalloc(sh, n * S, &sh->Udot);
    if (st == BN_OK) st = dalloc(sh, n * S, &sh->Qdot);
    if (st == BN_OK) st = dalloc(sh, d * S, &sh->X);
    if (st == BN_OK) st = dalloc(sh, S, &sh->xg);
    if (st == BN_OK) st = dalloc(sh, (size_t)BN_SC_COUNT * S, &sh->ctl);
    if (st == BN_OK) st = dalloc(sh, S, &sh->aw);
    if (st == BN_OK) st = dalloc(sh, S, &sh->ag);
    if (st == BN_OK) st = dalloc(sh, d * S, &sh->Vsave);
    if (st == BN_OK) st = dalloc(sh, S, &sh->vgsave);
    sh->square = su->sq_lam && su->sq_cy && !su->logistic && o->power_square;
    sh->lobpcg = o->lobpcg_update && o->copy_columns && !su->plain_power;
    if (st == BN_OK && sh->square) st = dalloc(sh, (size_t)BN_SQ_COUNT * S, &sh->sqio);
    if (st == BN_OK && sh->square) st = dalloc(sh, (size_t)BN_SQC_COUNT * S, &sh->sqcoef);
    if (o->copy_columns)
        for (int i = 0; i < 2 && st == BN_OK; i++) st = o->alloc(be, S * sizeof(int64_t), &sh->idx[i]);
    if (st == BN_OK) {
        double *tmp = malloc(S * sizeof(double));
        if (!tmp) st = bn_fail(BN_ERR_NOMEM, "cannot allocate the sharpness engine");
        for (size_t j = 0; st == BN_OK && j < S; j++) tmp[j] = sqrt(sh->eta_w[j]);
        if (st == BN_OK) st = up(sh, sh->aw, tmp, S);
        for (size_t j = 0; st == BN_OK && j < S; j++) tmp[j] = sqrt(sh->eta_g[j]);
        if (st == BN_OK) st = up(sh, sh->ag, tmp, S);
        free(tmp);
    }
    if (st == BN_OK && su->lanczos_max > 0) {
        sh->qslots = su->lanczos_max + 1;
        size_t cnt = bn_mul_size(bn_mul_size((size_t)sh->qslots, d), S);
        if (!cnt || cnt > ((size_t)8 << 30) / sh->rs)
            st = bn_fail(BN_ERR_ARG,
                         "the Lanczos basis (%lld vectors × d=%lld × S=%lld) needs more than 8 GiB; "
                         "lower --eigs-maxiter or the number of seeds",
                         (long long)sh->qslots, (long long)d, (long long)S);
        if (st == BN_OK) st = dalloc(sh, cnt, &sh->QW);
        if (st == BN_OK) st = dalloc(sh, (size_t)sh->qslots * S, &sh->QG);
        if (st == BN_OK) st = dalloc(sh, (size_t)sh->qslots * S, &sh->coef);
    }
    if (st != BN_OK) {
        bn_sharp_free(sh);
        return st;
    }
    *out = sh;
    return BN_OK;
}

void bn_sharp_free(bn_sharp *sh)
{
    if (!sh) return;
    void *bufs[] = {sh->U, sh->R, sh->H2, sh->hs, sh->Udot, sh->Qdot, sh->X, sh->xg, sh->ctl,
                    sh->aw, sh->ag, sh->Vsave, sh->vgsave, sh->QW, sh->QG, sh->coef, sh->sqio, sh->sqcoef, sh->L,
                    sh->lc};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) sh->be->ops->dealloc(sh->be, bufs[i]);
    for (int i = 0; i < 2; i++) {
        pw_set_free(sh, &sh->cset[i]);
        if (sh->idx[i]) sh->be->ops->dealloc(sh->be, sh->idx[i]);
    }
    for (int op = 0; op < BN_SOP_COUNT; op++) {
        if (sh->V[op]) sh->be->ops->dealloc(sh->be, sh->V[op]);
        if (sh->vg[op]) sh->be->ops->dealloc(sh->be, sh->vg[op]);
        if (sh->Vp[op]) sh->be->ops->dealloc(sh->be, sh->Vp[op]);
        if (sh->vgp[op]) sh->be->ops->dealloc(sh->be, sh->vgp[op]);
        free(sh->sigma[op]);
        free(sh->gap[op]);
    }
    free(sh->eta_w);
    free(sh->eta_g);
    free(sh->inrow);
    free(sh->hctl);
    free(sh->stage);
    free(sh);
}

double bn_sharp_tol_effective(const bn_sharp *sh) { return sh->tol; }

int64_t bn_sharp_compactions(const bn_sharp *sh) { return sh->compactions; }

int64_t bn_sharp_dim(const bn_sharp *sh, int op) { return sh->su.d + ((op & BN_SOP_PROJECT) ? 0 : 1); }

/* ------------------------------------------------------------------ HVP */

bn_status bn_sharp_set_state(bn_sharp *sh, const void *W, const void *gamma)
{
    sh->W = W;
    sh->gamma = gamma;
    sh->hvp_ready = 0;
    sh->sqcoef_ready = 0;
    sh->l_owner = -1; /* L's (x, Ax) belong to the old state */
    return BN_OK;
}

/* The state pass of the general HVP (U = Xc·W, then R, H2, hs), made when a
 * general product first needs it after bn_sharp_set_state: a record served
 * by power_square alone never pays for it. */
static bn_status hvp_state(bn_sharp *sh)
{
    bn_backend *be = sh->be;
    const bn_sharp_setup *su = &sh->su;
    if (!sh->W) return bn_fail(BN_ERR_ARG, "sharpness: no state set");
    if (sh->hvp_ready) return BN_OK;
    BN_TRY(be->ops->product_xw(be, su->n, su->d, su->S, su->Xc, sh->W, sh->U));
    BN_TRY(be->ops->hvp_prepare_columns(be, su->n, su->S, sh->U, su->y, sh->gamma, su->logistic, sh->R,
                                        sh->H2, sh->hs));
    sh->hvp_ready = 1;
    return BN_OK;
}

int bn_sharp_is_square(const bn_sharp *sh) { return sh->square; }

int bn_sharp_uses_lobpcg(const bn_sharp *sh) { return !sh->square && sh->lobpcg; }

int64_t bn_sharp_last_corrected(const bn_sharp *sh) { return sh->square ? sh->last_fixed : 0; }

int64_t bn_sharp_last_bisected(const bn_sharp *sh) { return sh->square ? sh->last_bisected : 0; }

/* X = Xcᵀ·Q (m columns): through the explicit transpose when the setup has
 * one (a backend may cache the transpose of one matrix only, which the run's
 * own Xc keeps), else product_xtq. */
static bn_status product_t(bn_sharp *sh, int64_t m, const void *Q, void *X)
{
    const bn_sharp_setup *su = &sh->su;
    if (su->XcT) return sh->be->ops->product_xw(sh->be, su->d, su->n, m, su->XcT, Q, X);
    return sh->be->ops->product_xtq(sh->be, su->n, su->d, m, su->Xc, Q, X);
}

bn_status bn_sharp_apply(bn_sharp *sh, int op, const void *V, const void *vg, void *X, void *xg)
{
    bn_backend *be = sh->be;
    const bn_sharp_setup *su = &sh->su;
    int wt = (op & BN_SOP_WEIGHTED) != 0;
    BN_TRY(hvp_state(sh));
    BN_TRY(be->ops->product_xw(be, su->n, su->d, su->S, su->Xc, V, sh->Udot));
    BN_TRY(be->ops->hvp_columns(be, su->n, su->S, sh->U, sh->R, sh->H2, sh->hs, sh->Udot, vg,
                                wt ? sh->aw : NULL, wt ? sh->ag : NULL, sh->Qdot, xg));
    return product_t(sh, su->S, sh->Qdot, X);
}

/* ------------------------------------------------------- power iteration */

/* Per-column bookkeeping of one power iteration. */
typedef struct {
    bn_power_state pc;
    int active;
} pw_col;

static bn_status ensure_vec(bn_sharp *sh, int op)
{
    size_t d = (size_t)sh->su.d, S = (size_t)sh->su.S;
    if (!sh->V[op]) BN_TRY(dalloc(sh, d * S, &sh->V[op]));
    if (!sh->vg[op]) BN_TRY(dalloc(sh, S, &sh->vg[op]));
    return BN_OK;
}

/* (dV, dvg) ← (sV, svg): S warm vectors, d×S and S, as they are. */
static bn_status copy_vec(bn_sharp *sh, void *dV, void *dvg, const void *sV, const void *svg)
{
    bn_backend *be = sh->be;
    int64_t d = sh->su.d, S = sh->su.S;
    BN_TRY(be->ops->copy_columns(be, d, S, sV, 1, d, NULL, dV, 1, d, NULL));
    return be->ops->copy_columns(be, 1, S, svg, 1, 1, NULL, dvg, 1, 1, NULL);
}

/* V ← unit vector for the columns whose ctl[ACTIVE] is set: the projected,
 * normalized warm vector, or (no warm vector, or a degenerate one) the
 * pseudo-random one.  Then Vsave ← V for save (the power iteration's
 * restarts; LOBPCG needs none). */
static bn_status power_start(bn_sharp *sh, int op, int save)
{
    bn_backend *be = sh->be;
    const bn_sharp_setup *su = &sh->su;
    int64_t S = su->S, d = su->d;
    int proj = (op & BN_SOP_PROJECT) != 0;
    double *act = hc(sh, BN_SC_ACTIVE);
    for (int64_t j = 0; j < S; j++) act[j] = 1;
    BN_TRY(ctl_up(sh, BN_SC_ACTIVE, BN_SC_ACTIVE + 1));
    if (sh->vinit[op]) {
        BN_TRY(be->ops->lanczos_extend(be, d, S, -1, sh->V[op], sh->vg[op], sh->V[op], sh->vg[op],
                                       sh->W, proj, su->seed, 0, sh->ctl, NULL));
        BN_TRY(ctl_down(sh, BN_SC_BETA, BN_SC_BETA + 1));
        const double *beta = hc(sh, BN_SC_BETA);
        int any = 0;
        for (int64_t j = 0; j < S; j++) {
            act[j] = !(isfinite(beta[j]) && beta[j] > 0);
            any |= (int)act[j];
        }
        if (any) {
            BN_TRY(ctl_up(sh, BN_SC_ACTIVE, BN_SC_ACTIVE + 1));
            BN_TRY(be->ops->lanczos_extend(be, d, S, -1, sh->V[op], sh->vg[op], NULL, NULL, sh->W,
                                           proj, su->seed, CNT_POWER + (uint64_t)op, sh->ctl, NULL));
            for (int64_t j = 0; j < S; j++) act[j] = 1;
            BN_TRY(ctl_up(sh, BN_SC_ACTIVE, BN_SC_ACTIVE + 1));
        }
    } else {
        BN_TRY(be->ops->lanczos_extend(be, d, S, -1, sh->V[op], sh->vg[op], NULL, NULL, sh->W, proj,
                                       su->seed, CNT_POWER + (uint64_t)op, sh->ctl, NULL));
        sh->vinit[op] = 1;
    }
    if (!save) return BN_OK;
    return be->ops->lanczos_extend(be, d, S, -1, sh->Vsave, sh->vgsave, sh->V[op], sh->vg[op],
                                   sh->W, 0, su->seed, 0, sh->ctl, NULL);
}

bn_status bn_sharp_power_iteration(bn_sharp *sh, int op)
{
    bn_backend *be = sh->be;
    const bn_sharp_setup *su = &sh->su;
    BN_TRY(bn_sharp_apply(sh, op, sh->V[op], sh->vg[op], sh->X, sh->xg));
    BN_TRY(be->ops->power_update(be, su->d, su->S, sh->V[op], sh->vg[op], sh->X, sh->xg, sh->W,
                                 (op & BN_SOP_PROJECT) != 0, sh->ctl));
    return ctl_down(sh, BN_SC_NV, BN_SC_MU + 1);
}

bn_status bn_sharp_power_warm_from(bn_sharp *sh, int dst, int src)
{
    bn_backend *be = sh->be;
    const bn_sharp_setup *su = &sh->su;
    if (dst < 0 || dst >= BN_SOP_COUNT || src < 0 || src >= BN_SOP_COUNT || dst == src)
        return bn_fail(BN_ERR_ARG, "sharpness: bad operators %d, %d", dst, src);
    if (!sh->vinit[src]) return BN_OK;
    if (!sh->W) return bn_fail(BN_ERR_ARG, "sharpness: no state set");
    BN_TRY(ensure_vec(sh, dst));
    if (sh->square && be->ops->copy_columns) {
        /* power_square projects and normalizes its start itself. */
        BN_TRY(copy_vec(sh, sh->V[dst], sh->vg[dst], sh->V[src], sh->vg[src]));
        sh->vinit[dst] = 1;
        return BN_OK;
    }
    for (int64_t j = 0; j < su->S; j++) hc(sh, BN_SC_ACTIVE)[j] = 1;
    BN_TRY(ctl_up(sh, BN_SC_ACTIVE, BN_SC_ACTIVE + 1));
    BN_TRY(be->ops->lanczos_extend(be, su->d, su->S, -1, sh->V[dst], sh->vg[dst], sh->V[src], sh->vg[src], sh->W, 0,
                                   su->seed, 0, sh->ctl, NULL));
    sh->vinit[dst] = 1;
    sh->fresh[dst] = 1;
    sh->fresh_src[dst] = src;
    return BN_OK;
}

bn_status bn_sharp_power_prepare(bn_sharp *sh, int op)
{
    if (op < 0 || op >= BN_SOP_COUNT) return bn_fail(BN_ERR_ARG, "sharpness: bad operator %d", op);
    if (!sh->W) return bn_fail(BN_ERR_ARG, "sharpness: no state set");
    BN_TRY(ensure_vec(sh, op));
    BN_TRY(power_start(sh, op, 1));
    int64_t S = sh->su.S;
    for (int64_t j = 0; j < S; j++) {
        hc(sh, BN_SC_ACTIVE)[j] = 1;
        hc(sh, BN_SC_SIGMA)[j] = sh->sigma[op][j];
        hc(sh, BN_SC_NV)[j] = 1;
    }
    return ctl_up(sh, BN_SC_ACTIVE, BN_SC_NV + 1);
}

static void pw_set_full(bn_sharp *sh, int op, pw_set *s)
{
    *s = (pw_set){.V = sh->V[op], .vg = sh->vg[op], .Vs = sh->Vsave, .vgs = sh->vgsave, .U = sh->U,
                  .R = sh->R, .H2 = sh->H2, .hs = sh->hs, .aw = sh->aw, .ag = sh->ag,
                  .W = (void *)sh->W, .ctl = sh->ctl, .L = sh->L};
}

static bn_status pw_set_alloc(bn_sharp *sh, pw_set *s)
{
    size_t n = (size_t)sh->su.n, d = (size_t)sh->su.d, S = (size_t)sh->su.S;
    if (s->V) return BN_OK;
    BN_TRY(dalloc(sh, d * S, &s->V));
    BN_TRY(dalloc(sh, S, &s->vg));
    BN_TRY(dalloc(sh, d * S, &s->Vs));
    BN_TRY(dalloc(sh, S, &s->vgs));
    BN_TRY(dalloc(sh, n * S, &s->U));
    BN_TRY(dalloc(sh, n * S, &s->R));
    BN_TRY(dalloc(sh, n * S, &s->H2));
    BN_TRY(dalloc(sh, (size_t)BN_HS_COUNT * S, &s->hs));
    BN_TRY(dalloc(sh, S, &s->aw));
    BN_TRY(dalloc(sh, S, &s->ag));
    BN_TRY(dalloc(sh, d * S, &s->W));
    BN_TRY(dalloc(sh, (size_t)BN_SC_COUNT * S, &s->ctl));
    return BN_OK;
}

static void pw_set_free(bn_sharp *sh, pw_set *s)
{
    void *b[] = {s->V, s->vg, s->Vs, s->vgs, s->U, s->R, s->H2, s->hs, s->aw, s->ag, s->W, s->ctl, s->L};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
        if (b[i]) sh->be->ops->dealloc(sh->be, b[i]);
    memset(s, 0, sizeof *s);
}

/* The compacted batch's vectors (m columns of cur) back to their own columns
 * map[0..m) of the engine's V and vg for operator op: their warm starts. */
static bn_status send_home(bn_sharp *sh, int op, int64_t d, const pw_set *cur, const int64_t *map, int64_t m)
{
    bn_backend *be = sh->be;
    BN_TRY(be->ops->upload(be, sh->idx[0], map, (size_t)m * sizeof(int64_t)));
    BN_TRY(be->ops->copy_columns(be, d, m, cur->V, 1, d, NULL, sh->V[op], 1, d, (const int64_t *)sh->idx[0]));
    return be->ops->copy_columns(be, 1, m, cur->vg, 1, 1, NULL, sh->vg[op], 1, 1, (const int64_t *)sh->idx[0]);
}

/* dst (count columns) ← the columns idx of src (m columns): every buffer of
 * the set, but the restart vectors Vs, vgs for lob (LOBPCG has none). */
static bn_status pw_set_gather(bn_sharp *sh, const pw_set *src, int64_t m, const int64_t *idx, int64_t count,
                               int lob, pw_set *dst)
{
    bn_backend *be = sh->be;
    bn_status (*cp)(bn_backend *, int64_t, int64_t, const void *, int64_t, int64_t, const int64_t *, void *,
                    int64_t, int64_t, const int64_t *) = be->ops->copy_columns;
    int64_t n = sh->su.n, d = sh->su.d;
    /* column-major: rows r, leading dimension r */
    BN_TRY(cp(be, d, count, src->V, 1, d, idx, dst->V, 1, d, NULL));
    if (!lob) BN_TRY(cp(be, d, count, src->Vs, 1, d, idx, dst->Vs, 1, d, NULL));
    BN_TRY(cp(be, d, count, src->W, 1, d, idx, dst->W, 1, d, NULL));
    BN_TRY(cp(be, n, count, src->U, 1, n, idx, dst->U, 1, n, NULL));
    BN_TRY(cp(be, n, count, src->R, 1, n, idx, dst->R, 1, n, NULL));
    BN_TRY(cp(be, n, count, src->H2, 1, n, idx, dst->H2, 1, n, NULL));
    if (src->L && dst->L) BN_TRY(cp(be, 4 * (d + 1), count, src->L, 1, 4 * (d + 1), idx, dst->L, 1, 4 * (d + 1), NULL));
    /* field-major: F fields of stride m → stride count */
    BN_TRY(cp(be, BN_HS_COUNT, count, src->hs, m, 1, idx, dst->hs, count, 1, NULL));
    BN_TRY(cp(be, BN_SC_COUNT, count, src->ctl, m, 1, idx, dst->ctl, count, 1, NULL));
    BN_TRY(cp(be, 1, count, src->vg, m, 1, idx, dst->vg, count, 1, NULL));
    if (!lob) BN_TRY(cp(be, 1, count, src->vgs, m, 1, idx, dst->vgs, count, 1, NULL));
    BN_TRY(cp(be, 1, count, src->aw, m, 1, idx, dst->aw, count, 1, NULL));
    return cp(be, 1, count, src->ag, m, 1, idx, dst->ag, count, 1, NULL);
}

/* One power iteration on the m columns of set s: HVP, power_update, the
 * download of ctl[NV], ctl[MU] (stride m) to the host control block. */
/* (X, xg) ← A (V, vg) for the m columns of set s (PROJECT not applied). */
static bn_status pw_set_product(bn_sharp *sh, int op, const pw_set *s, int64_t m)
{
    bn_backend *be = sh->be;
    const bn_sharp_setup *su = &sh->su;
    int wt = (op & BN_SOP_WEIGHTED) != 0;
    BN_TRY(be->ops->product_xw(be, su->n, su->d, m, su->Xc, s->V, sh->Udot));
    BN_TRY(be->ops->hvp_columns(be, su->n, m, s->U, s->R, s->H2, s->hs, sh->Udot, s->vg, wt ? s->aw : NULL,
                                wt ? s->ag : NULL, sh->Qdot, sh->xg));
    return product_t(sh, m, sh->Qdot, sh->X);
}

static bn_status pw_set_iteration(bn_sharp *sh, int op, const pw_set *s, int64_t m)
{
    bn_backend *be = sh->be;
    const bn_sharp_setup *su = &sh->su;
    BN_TRY(pw_set_product(sh, op, s, m));
    BN_TRY(be->ops->power_update(be, su->d, m, s->V, s->vg, sh->X, sh->xg, s->W, (op & BN_SOP_PROJECT) != 0,
                                 s->ctl));
    return down(sh, sh->hctl + (size_t)BN_SC_NV * (size_t)m, at(sh, s->ctl, (size_t)BN_SC_NV * (size_t)m),
                2 * (size_t)m);
}

/* The L blocks of a compacted batch (m columns of cur) back to their own
 * columns map[0..m) of sh->L (LOBPCG's send_home). */
static bn_status lob_send_home(bn_sharp *sh, const pw_set *cur, const int64_t *map, int64_t m)
{
    bn_backend *be = sh->be;
    int64_t e4 = 4 * (sh->su.d + 1);
    BN_TRY(be->ops->upload(be, sh->idx[0], map, (size_t)m * sizeof(int64_t)));
    return be->ops->copy_columns(be, e4, m, cur->L, 1, e4, NULL, sh->L, 1, e4, (const int64_t *)sh->idx[0]);
}

/* Whether a batch of m columns with cnt still active is worth compacting:
 * at least an eighth (and one column) has stopped. */
static int worth_compacting(int64_t cnt, int64_t m) { return cnt <= m - (m / 8 > 1 ? m / 8 : 1); }

/* Compaction (issue 7): the working batch *cur (*m columns, the engine's
 * columns map[0..*m)) becomes its columns keep[0..cnt), gathered into the
 * other compacted set; map, *m and *cur_id follow.  A compacted batch's
 * columns first go home: their warm vectors (power iteration) or their L
 * blocks (lob, LOBPCG). */
static bn_status compact_batch(bn_sharp *sh, int op, int lob, pw_set *cur, int *cur_id, int64_t *map, int64_t *m,
                               const int64_t *keep, int64_t cnt)
{
    bn_backend *be = sh->be;
    pw_set *dst = &sh->cset[*cur_id == 0 ? 1 : 0];
    BN_TRY(pw_set_alloc(sh, dst));
    if (lob && !dst->L) BN_TRY(dalloc(sh, (size_t)(4 * (sh->su.d + 1)) * (size_t)sh->su.S, &dst->L));
    if (*cur_id >= 0) BN_TRY(lob ? lob_send_home(sh, cur, map, *m) : send_home(sh, op, sh->su.d, cur, map, *m));
    BN_TRY(be->ops->upload(be, sh->idx[1], keep, (size_t)cnt * sizeof(int64_t)));
    BN_TRY(pw_set_gather(sh, cur, *m, (const int64_t *)sh->idx[1], cnt, lob, dst));
    for (int64_t k = 0; k < cnt; k++) map[k] = map[keep[k]];
    *m = cnt;
    *cur = *dst;
    *cur_id = *cur_id == 0 ? 1 : 0;
    sh->compactions++;
    return BN_OK;
}

/* bn_sharp_power with power_square: the same start vectors as power_start, the
 * same shifts and stopping rule (bn_power_control), each column's whole
 * iteration, its start included, in one backend call. */
static bn_status power_square(bn_sharp *sh, int op, const double *ceil, double *lam, double *shift, int64_t *iters,
                              int64_t *conv)
{
    bn_backend *be = sh->be;
    const bn_sharp_setup *su = &sh->su;
    int64_t S = su->S;
    int wt = (op & BN_SOP_WEIGHTED) != 0;
    BN_TRY(ensure_vec(sh, op));
    double *io = sh->hctl; /* BN_SC_COUNT×S ≥ BN_SQ_COUNT×S */
    memcpy(io + (size_t)BN_SQ_SIGMA * (size_t)S, sh->sigma[op], (size_t)S * sizeof(double));
    for (int64_t j = 0; j < S; j++) io[(size_t)BN_SQ_CEIL * (size_t)S + (size_t)j] = ceil ? ceil[j] : NAN;
    BN_TRY(up(sh, sh->sqio, io, 2 * (size_t)S)); /* SIGMA, CEIL */
    BN_TRY(be->ops->power_square(be, su->d, su->n, S, su->sq_lam, su->sq_cy, sh->W, sh->gamma, wt ? sh->aw : NULL,
                                 wt ? sh->ag : NULL, (op & BN_SOP_PROJECT) != 0, sh->vinit[op], su->seed,
                                 CNT_POWER + (uint64_t)op, sh->V[op], sh->vg[op], sh->Vsave, sh->vgsave, sh->tol,
                                 su->maxiter, sh->sqio, sh->sqcoef, sh->sqcoef_ready));
    sh->vinit[op] = 1;
    sh->sqcoef_ready = 1;
    BN_TRY(down(sh, io, sh->sqio, (size_t)BN_SQ_COUNT * (size_t)S));
    sh->last_fixed = sh->last_bisected = 0;
    for (int64_t j = 0; j < S; j++) {
        sh->sigma[op][j] = shift[j] = io[BN_SQ_SIGMA * S + j];
        lam[j] = io[BN_SQ_LAM * S + j];
        iters[j] = (int64_t)io[BN_SQ_ITERS * S + j];
        conv[j] = io[BN_SQ_CONV * S + j] != 0;
        sh->last_fixed += io[BN_SQ_FIXED * S + j] == 1;
        sh->last_bisected += io[BN_SQ_FIXED * S + j] == 2;
    }
    return BN_OK;
}


/* ---------------------------------------------------------------- LOBPCG */

/* One LOBPCG stage (bn_hvp_math.h) on the m columns of set s. */
static bn_status lob_stage(bn_sharp *sh, int op, int stage, const pw_set *s, int64_t m, double tau)
{
    bn_backend *be = sh->be;
    return be->ops->lobpcg_update(be, stage, sh->su.d, m, s->V, s->vg, sh->X, sh->xg, s->W,
                                  (op & BN_SOP_PROJECT) != 0, s->L, (double *)sh->lc, s->ctl, sh->tol, tau);
}

/* The warm starts of operator op: every column's x, the first vector of its
 * block in sh->L (w-part into V[op], γ into vg[op]). */
static bn_status lob_x_home(bn_sharp *sh, int op)
{
    bn_backend *be = sh->be;
    int64_t d = sh->su.d, S = sh->su.S, e4 = 4 * (d + 1);
    BN_TRY(be->ops->copy_columns(be, d, S, sh->L, 1, e4, NULL, sh->V[op], 1, d, NULL));
    return be->ops->copy_columns(be, 1, S, at(sh, sh->L, (size_t)d), 1, e4, NULL, sh->vg[op], 1, 1, NULL);
}

/* The control state lc (BN_LC_COUNT fields of stride m) of the working
 * batch's m columns, the engine's columns map[0..m), into the host's copy
 * hl (stride S, by engine column); tmp: BN_LC_COUNT×m. */
static bn_status lob_control_down(bn_sharp *sh, const int64_t *map, int64_t m, double *hl, double *tmp)
{
    size_t S = (size_t)sh->su.S, M = (size_t)m;
    BN_TRY(sh->be->ops->download(sh->be, tmp, sh->lc, (size_t)BN_LC_COUNT * M * sizeof(double)));
    for (size_t f = 0; f < BN_LC_COUNT; f++)
        for (size_t k = 0; k < M; k++) hl[f * S + (size_t)map[k]] = tmp[f * M + k];
    return BN_OK;
}

/* ... and back, for the columns map[0..m) of a new working batch. */
static bn_status lob_control_up(bn_sharp *sh, const int64_t *map, int64_t m, const double *hl, double *tmp)
{
    size_t S = (size_t)sh->su.S, M = (size_t)m;
    for (size_t f = 0; f < BN_LC_COUNT; f++)
        for (size_t k = 0; k < M; k++) tmp[f * M + k] = hl[f * S + (size_t)map[k]];
    return sh->be->ops->upload(sh->be, sh->lc, tmp, (size_t)BN_LC_COUNT * M * sizeof(double));
}

/* The columns of LOBPCG's working batch (m columns of cur) still active:
 * their ACTIVE flags into act, their positions into keep[0..*cnt). */
static bn_status lob_active(bn_sharp *sh, const pw_set *cur, int64_t m, double *act, int64_t *keep, int64_t *cnt)
{
    BN_TRY(down(sh, act, at(sh, cur->ctl, (size_t)BN_SC_ACTIVE * (size_t)m), (size_t)m));
    *cnt = 0;
    for (int64_t k = 0; k < m; k++)
        if (act[k] != 0) keep[(*cnt)++] = k;
    return BN_OK;
}

/* compact_batch for LOBPCG: the control state lc goes to the host copy hl
 * and comes back for the new batch. */
static bn_status lob_compact(bn_sharp *sh, int op, pw_set *cur, int *cur_id, int64_t *map, int64_t *m,
                             const int64_t *keep, int64_t cnt, double *hl, double *tmp)
{
    BN_TRY(lob_control_down(sh, map, *m, hl, tmp));
    BN_TRY(compact_batch(sh, op, 1, cur, cur_id, map, m, keep, cnt));
    return lob_control_up(sh, map, *m, hl, tmp);
}

/* The start of operator op's next LOBPCG from its history (bn_hvp_math.h,
 * PREDICT): V[op] ← the extrapolation of its last two records' vectors, and
 * Vp[op] ← the last one, by computing into Vp and swapping the buffers.  The
 * first time, Vp ← V only; a vector from warm_from is not op's own and
 * starts the history afresh. */
static bn_status lob_predict(bn_sharp *sh, int op)
{
    bn_backend *be = sh->be;
    int64_t S = sh->su.S, d = sh->su.d;
    int fresh = sh->fresh[op];
    sh->fresh[op] = 0;
    if (!sh->vinit[op] || fresh) {
        sh->pinit[op] = 0;
        return BN_OK;
    }
    if (!sh->Vp[op]) BN_TRY(dalloc(sh, (size_t)(d * S), &sh->Vp[op]));
    if (!sh->vgp[op]) BN_TRY(dalloc(sh, (size_t)S, &sh->vgp[op]));
    if (!sh->pinit[op]) {
        BN_TRY(copy_vec(sh, sh->Vp[op], sh->vgp[op], sh->V[op], sh->vg[op]));
        sh->pinit[op] = 1;
        return BN_OK;
    }
    for (int64_t j = 0; j < S; j++) hc(sh, BN_SC_ACTIVE)[j] = 1;
    BN_TRY(ctl_up(sh, BN_SC_ACTIVE, BN_SC_ACTIVE + 1));
    BN_TRY(be->ops->lobpcg_update(be, BN_LOB_PREDICT, d, S, sh->V[op], sh->vg[op], sh->Vp[op], sh->vgp[op], sh->W,
                                  0, sh->L, (double *)sh->lc, sh->ctl, sh->tol, 0));
    void *t = sh->V[op];
    sh->V[op] = sh->Vp[op];
    sh->Vp[op] = t;
    t = sh->vg[op];
    sh->vg[op] = sh->vgp[op];
    sh->vgp[op] = t;
    return BN_OK;
}

/* bn_sharp_power_bounded on the general path by LOBPCG (sharpness.h): the
 * same start vectors (power_start) and compaction as the power iteration;
 * no shift (the Ritz value is the largest on its subspace whatever the sign
 * of the rest of the spectrum), the shift output is 0.  Each column's
 * Rayleigh-Ritz and stopping rule run on the backend (bn_hvp_math.h); the
 * host reads back the ACTIVE flags per iteration and the control state at a
 * compaction and at the end. */
static bn_status power_lobpcg(bn_sharp *sh, int op, const double *ceil, double *lam, double *shift, int64_t *iters,
                              int64_t *conv)
{
    const bn_sharp_setup *su = &sh->su;
    bn_backend *be = sh->be;
    int64_t S = su->S, d = su->d;
    BN_TRY(hvp_state(sh));
    BN_TRY(ensure_vec(sh, op));
    if (!sh->L) BN_TRY(dalloc(sh, (size_t)(4 * (d + 1)) * (size_t)S, &sh->L));
    if (!sh->lc) BN_TRY(be->ops->alloc(be, (size_t)BN_LC_COUNT * (size_t)S * sizeof(double), &sh->lc));
    int64_t *map = malloc((size_t)S * sizeof(int64_t)), *keep = malloc((size_t)S * sizeof(int64_t));
    double *hl = malloc((size_t)BN_LC_COUNT * (size_t)S * sizeof(double));
    double *tmp = malloc((size_t)BN_LC_COUNT * (size_t)S * sizeof(double));
    if (!map || !keep || !hl || !tmp) {
        free(map);
        free(keep);
        free(hl);
        free(tmp);
        return bn_fail(BN_ERR_NOMEM, "cannot allocate the LOBPCG iteration");
    }
    /* Dropping threshold of bn_lobpcg_ritz: the basis may amplify rounding by
     * at most 1/√tau (1e5 in fp64; 40 in fp32, where tol is ≥ 4e-6). */
    const double tau = fmax(1e-10, 1e4 * sh->eps);
    /* START's gap rule assumes a start near the top eigenvector, which op's
     * own history is; another operator's vector (the sphere's Π·x of
     * P^½HP^½) may lie near a lower one of op with a small residual: on the
     * paper case the rule then cost the sphere up to 1.7e-6 of accuracy. */
    const int own = !sh->fresh[op];
    /* SHARED: op = Π A Π started from A's vector of this record, and sh->L
     * still holds A's final x and Ax, so Πx's value needs no product; with
     * a ceiling (A's λ_max) it may end the column (sharpness.h). */
    const int shared = !own && ceil && (op & BN_SOP_PROJECT) && sh->fresh_src[op] == (op & ~BN_SOP_PROJECT) &&
                       sh->l_owner == sh->fresh_src[op];
    sh->l_owner = -1;
    for (int64_t j = 0; j < S; j++) {
        map[j] = j;
        shift[j] = 0;
        const double init[BN_LC_COUNT] = {[BN_LC_THETA] = NAN, [BN_LC_BEST] = -INFINITY,
                                          [BN_LC_CEIL] = ceil ? ceil[j] : NAN, [BN_LC_LAM] = NAN,
                                          [BN_LC_GAP] = own ? sh->gap[op][j] : NAN};
        for (int f = 0; f < BN_LC_COUNT; f++) hl[(size_t)f * (size_t)S + (size_t)j] = init[f];
    }
    /* (before the working set takes V[op]: PREDICT swaps it) */
    bn_status st = lob_predict(sh, op);
    pw_set cur;
    pw_set_full(sh, op, &cur);
    int cur_id = -1;
    int64_t m = S, it = 0;
    int can_compact = !su->no_compact && S > 1;
    /* power_start leaves ctl[ACTIVE] = 1 for every column. */
    if (st == BN_OK) st = power_start(sh, op, 0);
    if (st == BN_OK) st = lob_control_up(sh, map, m, hl, tmp);
    double *act = sh->hctl; /* ctl[ACTIVE] of the working batch */
    int64_t cnt = m;
    if (st == BN_OK && shared) {
        st = lob_stage(sh, op, BN_LOB_SHARED, &cur, m, tau);
        if (st == BN_OK) st = lob_active(sh, &cur, m, act, keep, &cnt);
        if (st == BN_OK && cnt > 0 && can_compact && worth_compacting(cnt, m))
            st = lob_compact(sh, op, &cur, &cur_id, map, &m, keep, cnt, hl, tmp);
    }
    if (st == BN_OK && cnt > 0) {
        st = pw_set_product(sh, op, &cur, m);
        if (st == BN_OK) st = lob_stage(sh, op, BN_LOB_START, &cur, m, tau);
        it = 1;
    }
    while (st == BN_OK && cnt > 0) {
        if ((st = lob_active(sh, &cur, m, act, keep, &cnt)) != BN_OK) break;
        /* (all columns share maxiter: capped ⇒ every active one is) */
        if (cnt == 0 || it >= su->maxiter) break;
        if (can_compact && worth_compacting(cnt, m) &&
            (st = lob_compact(sh, op, &cur, &cur_id, map, &m, keep, cnt, hl, tmp)) != BN_OK)
            break;
        st = pw_set_product(sh, op, &cur, m);
        if (st == BN_OK) st = lob_stage(sh, op, BN_LOB_STEP, &cur, m, tau);
        it++;
    }
    if (st == BN_OK) st = lob_control_down(sh, map, m, hl, tmp);
    if (st == BN_OK && cur_id >= 0) st = lob_send_home(sh, &cur, map, m);
    /* The warm starts of the next record. */
    if (st == BN_OK) st = lob_x_home(sh, op);
    if (st == BN_OK) sh->l_owner = op;
    for (int64_t j = 0; j < S; j++) {
        conv[j] = hl[BN_LC_CONV * S + j] != 0;
        iters[j] = (int64_t)hl[BN_LC_IT * S + j];
        lam[j] = hl[BN_LC_LAM * S + j];
        if (st == BN_OK) sh->gap[op][j] = hl[BN_LC_GAP * S + j];
    }
    /* The columns still iterating at the cap (act: the last flags of the
     * batch): the best lower bound found. */
    for (int64_t k = 0; st == BN_OK && k < m; k++)
        if (act[k] != 0) lam[map[k]] = hl[BN_LC_BEST * S + map[k]];
    free(map);
    free(keep);
    free(hl);
    free(tmp);
    return st;
}

bn_status bn_sharp_power(bn_sharp *sh, int op, double *lam, double *shift, int64_t *iters,
                         int64_t *conv)
{
    return bn_sharp_power_bounded(sh, op, NULL, lam, shift, iters, conv);
}

bn_status bn_sharp_power_bounded(bn_sharp *sh, int op, const double *ceil, double *lam, double *shift,
                                 int64_t *iters, int64_t *conv)
{
    if (op >= 0 && op < BN_SOP_COUNT && sh->W && sh->square) return power_square(sh, op, ceil, lam, shift, iters, conv);
    if (op >= 0 && op < BN_SOP_COUNT && sh->W && sh->lobpcg) return power_lobpcg(sh, op, ceil, lam, shift, iters, conv);
    bn_backend *be = sh->be;
    const bn_sharp_setup *su = &sh->su;
    int64_t S = su->S, d = su->d;
    if (op < 0 || op >= BN_SOP_COUNT) return bn_fail(BN_ERR_ARG, "sharpness: bad operator %d", op);
    BN_TRY(hvp_state(sh));
    BN_TRY(ensure_vec(sh, op));
    pw_col *col = malloc((size_t)S * sizeof *col);
    char *restart = malloc((size_t)S);
    int64_t *map = malloc((size_t)S * sizeof(int64_t)), *keep = malloc((size_t)S * sizeof(int64_t));
    double *nvj = malloc((size_t)S * sizeof(double));
    if (!col || !restart || !map || !keep || !nvj) {
        free(col);
        free(restart);
        free(map);
        free(keep);
        free(nvj);
        return bn_fail(BN_ERR_NOMEM, "cannot allocate the power iteration");
    }
    bn_status st = bn_sharp_power_prepare(sh, op);
    double *sig = sh->sigma[op];
    for (int64_t j = 0; j < S; j++) {
        col[j] = (pw_col){.pc = bn_power_state_init(), .active = 1};
        lam[j] = NAN;
        conv[j] = 0;
        map[j] = j;
        nvj[j] = 1;
    }
    /* The working batch: the full one, then, as columns converge, compacted
     * ones (ping-pong between sh->cset[0] and [1]) holding the m columns
     * map[0..m-1] that still iterate.  A column's arithmetic does not depend
     * on its position or on the batch size (backend.h), so compaction changes
     * the cost, not the results. */
    pw_set cur;
    pw_set_full(sh, op, &cur);
    int cur_id = -1;
    int can_compact = be->ops->copy_columns != NULL && !su->no_compact && S > 1;
    int64_t m = S, nactive = S;
    const double tol = sh->tol;
    for (int64_t it = 0; st == BN_OK && it < su->maxiter && nactive > 0; it++) {
        st = pw_set_iteration(sh, op, &cur, m);
        if (st != BN_OK) break;
        const double *nv = sh->hctl + (size_t)BN_SC_NV * (size_t)m, *mu = sh->hctl + (size_t)BN_SC_MU * (size_t)m;
        int any_restart = 0, changed = 0;
        for (int64_t k = 0; k < m; k++) {
            restart[k] = 0;
            int64_t j = map[k];
            pw_col *c = &col[j];
            if (!c->active) continue;
            nvj[j] = nv[k];
            int cv = 0, act;
            /* the stopping rule's scale (sharpness.h) */
            double slack = ceil ? 0.5 * tol * fmax(fabs(ceil[j]), fabs(ceil[j] - sig[j])) : 0;
            if (ceil && bn_power_ceiling(&c->pc, mu[k], sig[j], ceil[j], slack)) {
                act = BN_PW_DONE;
                lam[j] = c->pc.best;
                cv = 1;
            } else {
                act = bn_power_control(&c->pc, mu[k], nv[k], &sig[j], tol, &lam[j], &cv);
            }
            if (act == BN_PW_DONE) {
                conv[j] = cv;
                c->active = 0;
            } else if (act == BN_PW_RESTART) {
                restart[k] = 1;
                any_restart = 1;
            }
        }
        nactive = 0;
        for (int64_t k = 0; k < m; k++) nactive += col[map[k]].active;
        double *act = sh->hctl + (size_t)BN_SC_ACTIVE * (size_t)m;
        if (any_restart) {
            /* V ← Vsave for the shifted columns only. */
            for (int64_t k = 0; k < m; k++) act[k] = restart[k];
            st = up(sh, at(sh, cur.ctl, (size_t)BN_SC_ACTIVE * (size_t)m), act, (size_t)m);
            if (st == BN_OK)
                st = be->ops->lanczos_extend(be, d, m, -1, cur.V, cur.vg, cur.Vs, cur.vgs, cur.W, 0, su->seed, 0,
                                             cur.ctl, NULL);
            for (int64_t k = 0; k < m; k++)
                if (restart[k]) nvj[map[k]] = 1;
            changed = 1;
        }
        if (st == BN_OK && can_compact && nactive > 0 && worth_compacting(nactive, m)) {
            int64_t cnt = 0;
            for (int64_t k = 0; k < m; k++)
                if (col[map[k]].active) keep[cnt++] = k;
            if ((st = compact_batch(sh, op, 0, &cur, &cur_id, map, &m, keep, cnt)) != BN_OK) break;
            changed = 1;
        }
        act = sh->hctl + (size_t)BN_SC_ACTIVE * (size_t)m;
        for (int64_t k = 0; k < m; k++) {
            double a = col[map[k]].active;
            if (act[k] != a) changed = 1;
            act[k] = a;
        }
        /* NV came down with MU; SIGMA changed only for restarted columns. */
        if (st == BN_OK && changed && nactive > 0) {
            double *hs_ = sh->hctl + (size_t)BN_SC_SIGMA * (size_t)m, *hn = sh->hctl + (size_t)BN_SC_NV * (size_t)m;
            for (int64_t k = 0; k < m; k++) {
                hs_[k] = sig[map[k]];
                hn[k] = nvj[map[k]];
            }
            st = up(sh, cur.ctl, sh->hctl, (size_t)(BN_SC_NV + 1) * (size_t)m);
        }
    }
    if (st == BN_OK && cur_id >= 0) {
        /* The last batch's vectors go home. */
        st = send_home(sh, op, d, &cur, map, m);
    }
    for (int64_t j = 0; j < S; j++) {
        if (col[j].active) lam[j] = col[j].pc.best; /* the best lower bound found */
        iters[j] = col[j].pc.it;
        shift[j] = sig[j];
    }
    free(col);
    free(restart);
    free(map);
    free(keep);
    free(nvj);
    return st;
}

/* --------------------------------------------------------------- Lanczos */

typedef struct {
    double *G;            /* m_max×m_max: G[i·m_max + k] = q_iᵀAq_k, i ≤ k      */
    double *beta;         /* m_max: β_k, norm of the new vector of step k        */
    int64_t mmax;
    double *closed;       /* eigenvalues of closed blocks                     */
    int64_t nclosed;
    int64_t block0;       /* first index of the open block                    */
    int64_t nblocks;
    int64_t dimE, zeros;  /* dimension of E, exact zeros outside it          */
    double tscale;        /* max |α|, β seen                                  */
    int active;
} lz_col;

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* Eigenvalues (ascending) and, if z != NULL, eigenvectors (row-major, column
 * i = vector i) of the open block's Rayleigh-Ritz matrix: rows/columns
 * block0 .. block0+b-1 of G (upper triangle, mirrored).  G is used rather than
 * the tridiagonal (α, β): with full reorthogonalization the two agree to
 * rounding in most cases, but not when 0 is an eigenvalue of high
 * multiplicity inside a gap of the spectrum (as here: null(Xc)), where the
 * removed coefficients grow and the tridiagonal Ritz values go wrong. */
static bn_status block_eig(const lz_col *c, int64_t b, double *evals, double *z, double *work)
{
    const int64_t o = c->block0, mm = c->mmax;
    for (int64_t i = 0; i < b; i++)
        for (int64_t k = i; k < b; k++) work[i * b + k] = work[k * b + i] = c->G[(o + i) * mm + (o + k)];
    return bn_la_sym_eigen(work, b, evals, z);
}

/* Convergence of one column after m steps (T is m×m, block-diagonal over the
 * blocks; β_{m-1} couples the open block to the next vector).  Candidates:
 * the closed blocks' eigenvalues and the zeros outside E (exact), and the open
 * block's Ritz values with residual bounds |β_{m-1}·s_last|.  Writes the top
 * k to out (descending, NaN past the dimension). */
static bn_status lz_check(lz_col *c, int64_t m, int64_t k, int64_t dim, double tol, int exhausted,
                          double *out, int *ok, double *buf)
{
    int64_t b = m - c->block0;
    double *ev = buf, *z = buf + m, *work = z + b * b, *vals = work + b * b, *res = vals + m + k + 1;
    double *open = res + m + k + 1; /* 1: a Ritz value of the open block */
    int64_t nv = 0;
    for (int64_t i = 0; i < c->nclosed; i++) {
        vals[nv] = c->closed[i];
        open[nv] = 0;
        res[nv++] = 0;
    }
    double bl = exhausted ? 0 : fabs(c->beta[m - 1]);
    if (b > 0) {
        BN_TRY(block_eig(c, b, ev, z, work));
        for (int64_t i = 0; i < b; i++) {
            vals[nv] = ev[i];
            open[nv] = 1;
            res[nv++] = bl * fabs(z[(b - 1) * b + i]);
        }
    }
    /* The exact zeros outside E.  Rounding leaks the basis slowly into that
     * zero eigenspace, so some may already be among the Ritz values: those
     * within the tie distance of 0 are taken as such zeros and set to 0 (a
     * genuine eigenvalue of E that small is then reported as 0: an error below
     * the tie).  More zeros than k never matter; a basis of the whole space
     * holds them all. */
    double sc0 = 0;
    for (int64_t i = 0; i < nv; i++) sc0 = fmax(sc0, fabs(vals[i]));
    int64_t nz = m >= dim ? 0 : (c->zeros < k ? c->zeros : k);
    for (int64_t i = 0; i < nv && nz > 0; i++)
        if (fabs(vals[i]) <= 10 * tol * sc0) {
            vals[i] = 0;
            nz--;
        }
    for (int64_t i = 0; i < nz; i++) {
        vals[nv] = 0;
        open[nv] = 0;
        res[nv++] = 0;
    }
    /* (value, residual, open) triples, descending by value: insertion sort (small) */
    for (int64_t i = 1; i < nv; i++) {
        double v = vals[i], r = res[i], o = open[i];
        int64_t p = i - 1;
        while (p >= 0 && vals[p] < v) {
            vals[p + 1] = vals[p];
            res[p + 1] = res[p];
            open[p + 1] = open[p];
            p--;
        }
        vals[p + 1] = v;
        res[p + 1] = r;
        open[p + 1] = o;
    }
    double scale = 0;
    for (int64_t i = 0; i < nv; i++) scale = fmax(scale, fabs(vals[i]));
    if (scale == 0) scale = DBL_MIN;
    int64_t kk = k < dim ? k : dim;
    int good = nv >= kk;
    int64_t jopen = 0, jother = 0;
    for (int64_t i = 0; good && i < kk; i++) {
        good = res[i] <= tol * scale;
        jopen += open[i] != 0;
        jother += open[i] == 0;
    }
    if (good && !exhausted && b > 0 && jother > 0) {
        /* Exact values (zeros, closed blocks) sit among the top k: the open
         * block's next Ritz value must be converged too, or an eigenvalue of E
         * above them may still be hidden (θ_i only bounds λ_i from below). */
        if (jopen < b) good = bl * fabs(z[(b - 1) * b + (b - 1 - jopen)]) <= tol * scale;
        /* A tie between the open block's top and a closed value in the top k
         * is a repeated eigenvalue whose further copies may still come. */
        double tie = 10 * tol * scale, top_open = ev[b - 1];
        if (good && c->nblocks > 1 && top_open >= vals[kk - 1] - tie)
            for (int64_t i = 0; i < c->nclosed; i++)
                if (fabs(c->closed[i] - top_open) <= tie) good = 0;
    }
    *ok = good || exhausted;
    for (int64_t i = 0; i < k; i++) out[i] = i < nv && i < dim ? vals[i] : NAN;
    return BN_OK;
}

/* Closes the open block: its eigenvalues join the closed list. */
static bn_status lz_close(lz_col *c, int64_t m, double *buf)
{
    int64_t b = m - c->block0;
    if (b <= 0) return BN_OK;
    BN_TRY(block_eig(c, b, c->closed + c->nclosed, NULL, buf));
    c->nclosed += b;
    c->block0 = m;
    c->nblocks++;
    return BN_OK;
}

/* Slot k+1 ← a unit vector of E orthogonal to slots 0..k (k = -1: none), for
 * the columns with ctl[ACTIVE] set: Π·A·x for the pseudo-random x (key,
 * counter), through Vsave.  ctl[BETA] receives the norm of the unit vector
 * Π·A·x/‖Π·A·x‖ after the orthogonalization (≈ 0: E is exhausted), and 0 when
 * Π·A·x = 0 itself.  One HVP. */
static bn_status lz_new_vector(bn_sharp *sh, int op, int64_t k, uint64_t counter, double *beta0)
{
    bn_backend *be = sh->be;
    const bn_sharp_setup *su = &sh->su;
    int64_t S = su->S, d = su->d;
    int proj = (op & BN_SOP_PROJECT) != 0;
    BN_TRY(be->ops->lanczos_extend(be, d, S, -1, sh->Vsave, sh->vgsave, NULL, NULL, sh->W, proj, su->seed,
                                   counter, sh->ctl, NULL));
    BN_TRY(bn_sharp_apply(sh, op, sh->Vsave, sh->vgsave, sh->X, sh->xg));
    BN_TRY(be->ops->lanczos_extend(be, d, S, -1, sh->Vsave, sh->vgsave, sh->X, sh->xg, sh->W, proj, su->seed,
                                   0, sh->ctl, NULL));
    BN_TRY(ctl_down(sh, BN_SC_BETA, BN_SC_BETA + 1));
    memcpy(beta0, hc(sh, BN_SC_BETA), (size_t)S * sizeof(double));
    return be->ops->lanczos_extend(be, d, S, k, sh->QW, sh->QG, sh->Vsave, sh->vgsave, sh->W, proj, su->seed, 0,
                                   sh->ctl, NULL);
}

bn_status bn_sharp_lanczos(bn_sharp *sh, int op, int64_t k, double *eigs, int64_t *iters,
                           int64_t *conv)
{
    const bn_sharp_setup *su = &sh->su;
    bn_backend *be = sh->be;
    int64_t S = su->S, d = su->d;
    int proj = (op & BN_SOP_PROJECT) != 0;
    int64_t dim = bn_sharp_dim(sh, op);
    if (op < 0 || op >= BN_SOP_COUNT || k < 1) return bn_fail(BN_ERR_ARG, "lanczos: bad operator or k");
    if (!sh->QW) return bn_fail(BN_ERR_ARG, "lanczos: the engine was created without a basis");
    if (!sh->W) return bn_fail(BN_ERR_ARG, "sharpness: no state set");
    int64_t mmax = sh->qslots - 1;
    if (mmax > dim) mmax = dim;
    size_t dS = (size_t)d * (size_t)S;
    lz_col *col = calloc((size_t)S, sizeof *col);
    size_t per = (size_t)(mmax * mmax) + (size_t)(2 * mmax) + 1;
    double *store = calloc((size_t)S * per, sizeof(double));
    double *hcoef = malloc((size_t)(mmax + 1) * (size_t)S * sizeof(double));
    /* check buffer: ev m, z b², work b², vals, res and open m+k+1 each */
    double *buf = malloc(((size_t)(2 * mmax * mmax) + (size_t)(4 * mmax) + 3 * (size_t)k + 6) * sizeof(double));
    double *beta0 = malloc((size_t)S * sizeof(double));
    char *restart = malloc((size_t)S);
    if (!col || !store || !buf || !restart || !beta0 || !hcoef) {
        free(col);
        free(store);
        free(hcoef);
        free(buf);
        free(beta0);
        free(restart);
        return bn_fail(BN_ERR_NOMEM, "cannot allocate the Lanczos bookkeeping");
    }
    const double tol = sh->tol;
    const double bthr = fmax(1e-2 * tol, 30 * sh->eps); /* β below this·scale: breakdown */
    const double exhaust = 10 * sqrt(sh->eps);           /* a new unit vector this short: E is spanned */
    double *act = hc(sh, BN_SC_ACTIVE);
    const double *alpha = hc(sh, BN_SC_ALPHA), *beta = hc(sh, BN_SC_BETA); /* α: finiteness only */
    for (int64_t j = 0; j < S; j++) {
        lz_col *c = &col[j];
        c->G = store + (size_t)j * per;
        c->beta = c->G + mmax * mmax;
        c->closed = c->beta + mmax;
        c->mmax = mmax;
        c->nblocks = 1;
        c->active = 1;
        c->dimE = dim;
        if (su->rank > 0) {
            /* E = Π P^½ (rowspace ⊕ γ): P^½ drops γ when η_γ = 0, Π drops ŵ
             * when w is in the row space. */
            int wt = (op & BN_SOP_WEIGHTED) != 0;
            c->dimE = su->rank + !(wt && sh->eta_g[j] == 0) - (proj && sh->inrow[j]);
            if (c->dimE > dim) c->dimE = dim;
        }
        c->zeros = dim - c->dimE;
        act[j] = 1;
        iters[j] = 0;
        conv[j] = 0;
        for (int64_t i = 0; i < k; i++) eigs[j * k + i] = NAN;
    }
    uint64_t cbase = CNT_LANCZOS + 0x10000u * (uint64_t)op;
    bn_status st = ctl_up(sh, BN_SC_ACTIVE, BN_SC_ACTIVE + 1);
    if (st == BN_OK) st = lz_new_vector(sh, op, -1, cbase, beta0);
    if (st == BN_OK) st = ctl_down(sh, BN_SC_BETA, BN_SC_BETA + 1);
    int64_t nactive = 0;
    for (int64_t j = 0; st == BN_OK && j < S; j++) {
        lz_col *c = &col[j];
        if (!isfinite(beta0[j]) || !isfinite(beta[j])) {
            c->active = 0; /* a non-finite state: NaN */
        } else if (beta0[j] == 0 || c->dimE == 0) {
            /* A·x = 0: the operator vanishes on E, every eigenvalue is 0. */
            c->active = 0;
            conv[j] = 1;
            for (int64_t i = 0; i < k; i++) eigs[j * k + i] = i < dim ? 0 : NAN;
        }
        act[j] = c->active;
        nactive += c->active;
    }
    if (st == BN_OK && nactive < S) st = ctl_up(sh, BN_SC_ACTIVE, BN_SC_ACTIVE + 1);
    for (int64_t s = 0; st == BN_OK && s < mmax && nactive > 0; s++) {
        void *qs = at(sh, sh->QW, (size_t)s * dS), *qgs = at(sh, sh->QG, (size_t)s * (size_t)S);
        st = bn_sharp_apply(sh, op, qs, qgs, sh->X, sh->xg);
        if (st == BN_OK)
            st = be->ops->lanczos_extend(be, d, S, s, sh->QW, sh->QG, sh->X, sh->xg, sh->W, proj, su->seed, 0,
                                         sh->ctl, sh->coef);
        if (st == BN_OK) st = ctl_down(sh, BN_SC_ALPHA, BN_SC_BETA + 1);
        if (st == BN_OK) st = down(sh, hcoef, sh->coef, (size_t)(s + 1) * (size_t)S);
        if (st != BN_OK) break;
        int64_t m = s + 1;
        int any_restart = 0;
        for (int64_t j = 0; j < S; j++) {
            restart[j] = 0;
            lz_col *c = &col[j];
            if (!c->active) continue;
            iters[j] = m + c->nblocks; /* HVPs: one per step and one per (re)start vector */
            double a = alpha[j], bb = beta[j];
            if (!isfinite(a) || !isfinite(bb)) {
                c->active = 0;
                for (int64_t i = 0; i < k; i++) eigs[j * k + i] = NAN;
                continue;
            }
            for (int64_t i = c->block0; i <= s; i++) c->G[i * mmax + s] = hcoef[(size_t)i * (size_t)S + (size_t)j];
            c->beta[s] = bb;
            c->tscale = fmax(c->tscale, fmax(fabs(c->G[s * mmax + s]), bb));
            /* m = dim E does not prove that E is spanned: rounding leaks the
             * basis into the zero eigenspace (0 is often interior to the
             * spectrum, where Lanczos amplifies such components), so only the
             * whole space, or a failed restart, counts as exhausted. */
            int exhausted = m >= dim;
            int brk = !exhausted && bb <= bthr * c->tscale;
            if (brk) {
                c->beta[s] = 0;
                if ((st = lz_close(c, m, buf)) != BN_OK) break;
                if (m < mmax) {
                    restart[j] = 1;
                    any_restart = 1;
                    continue; /* checked once the restart tells whether E is spanned */
                }
            }
            int check = exhausted || brk || m == mmax || (m >= k && (m <= 24 || m % 4 == 0));
            if (!check) continue;
            int ok = 0;
            if ((st = lz_check(c, m, k, dim, tol, exhausted, eigs + j * k, &ok, buf)) != BN_OK) break;
            if (ok) {
                conv[j] = 1;
                c->active = 0;
            }
        }
        if (st != BN_OK) break;
        if (any_restart) {
            /* A new block: the next vector of E, orthogonal to the basis, in slot m. */
            for (int64_t j = 0; j < S; j++) act[j] = restart[j];
            st = ctl_up(sh, BN_SC_ACTIVE, BN_SC_ACTIVE + 1);
            if (st == BN_OK) st = lz_new_vector(sh, op, s, cbase + (uint64_t)m, beta0);
            if (st == BN_OK) st = ctl_down(sh, BN_SC_BETA, BN_SC_BETA + 1);
            for (int64_t j = 0; st == BN_OK && j < S; j++) {
                if (!restart[j]) continue;
                lz_col *c = &col[j];
                /* Spanned: every eigenvalue of E is in the closed blocks.  Else
                 * the new block is explored before the next check. */
                if (beta0[j] > 0 && beta[j] > exhaust) continue;
                int ok = 0;
                st = lz_check(c, m, k, dim, tol, 1, eigs + j * k, &ok, buf);
                conv[j] = 1;
                c->active = 0;
            }
        }
        nactive = 0;
        for (int64_t j = 0; j < S; j++) {
            nactive += col[j].active;
            act[j] = col[j].active;
        }
        if (st == BN_OK && nactive > 0) st = ctl_up(sh, BN_SC_ACTIVE, BN_SC_ACTIVE + 1);
    }
    free(col);
    free(store);
    free(hcoef);
    free(buf);
    free(beta0);
    free(restart);
    return st;
}

/* ------------------------------------------------------------ dense path */

bn_status bn_sharp_dense_hessian(bn_sharp *sh, int64_t j0, int64_t j1, double *H)
{
    const bn_sharp_setup *su = &sh->su;
    int64_t S = su->S, d = su->d, D = d + 1;
    if (j0 < 0 || j1 > S || j0 >= j1) return bn_fail(BN_ERR_ARG, "dense Hessian: bad column range");
    if (!sh->W) return bn_fail(BN_ERR_ARG, "sharpness: no state set");
    int64_t G = j1 - j0;
    size_t dS = (size_t)d * (size_t)S;
    double *E = calloc(dS, sizeof(double)), *eg = calloc((size_t)S, sizeof(double));
    double *X = malloc(dS * sizeof(double)), *xg = malloc((size_t)S * sizeof(double));
    void *dE = NULL, *deg = NULL;
    bn_status st = (E && eg && X && xg) ? BN_OK : bn_fail(BN_ERR_NOMEM, "dense Hessian: no memory");
    if (st == BN_OK) st = dalloc(sh, dS, &dE);
    if (st == BN_OK) st = dalloc(sh, (size_t)S, &deg);
    for (int64_t i = 0; st == BN_OK && i < D; i++) {
        for (int64_t j = 0; j < S; j++) {
            if (i > 0 && i - 1 < d) E[(size_t)j * (size_t)d + (size_t)(i - 1)] = 0;
            if (i < d) E[(size_t)j * (size_t)d + (size_t)i] = 1;
            eg[j] = i == d;
        }
        st = up(sh, dE, E, dS);
        if (st == BN_OK) st = up(sh, deg, eg, (size_t)S);
        if (st == BN_OK) st = bn_sharp_apply(sh, 0, dE, deg, sh->X, sh->xg);
        if (st == BN_OK) st = down(sh, X + (size_t)j0 * (size_t)d, at(sh, sh->X, (size_t)j0 * (size_t)d), (size_t)(G * d));
        if (st == BN_OK) st = down(sh, xg, sh->xg, (size_t)S);
        for (int64_t g = 0; st == BN_OK && g < G; g++) {
            double *Hg = H + (size_t)g * (size_t)(D * D);
            const double *x = X + (size_t)(j0 + g) * (size_t)d;
            for (int64_t r = 0; r < d; r++) Hg[r * D + i] = x[r];
            Hg[d * D + i] = xg[j0 + g];
        }
    }
    if (dE) sh->be->ops->dealloc(sh->be, dE);
    if (deg) sh->be->ops->dealloc(sh->be, deg);
    free(E);
    free(eg);
    free(X);
    free(xg);
    return st;
}

bn_status bn_sharp_dense_eigs(const double *H, int64_t d, const double *w, double eta_w,
                              double eta_gamma, int op, double *evals, int64_t *count)
{
    int64_t D = d + 1;
    double *M = malloc((size_t)(D * D) * sizeof(double));
    double *hv = malloc((size_t)D * 2 * sizeof(double));
    if (!M || !hv) {
        free(M);
        free(hv);
        return bn_fail(BN_ERR_NOMEM, "dense eigenvalues: no memory");
    }
    double pw = (op & BN_SOP_WEIGHTED) ? sqrt(eta_w) : 1, pg = (op & BN_SOP_WEIGHTED) ? sqrt(eta_gamma) : 1;
    for (int64_t a = 0; a < D; a++)
        for (int64_t b = 0; b < D; b++) {
            double s = 0.5 * (H[a * D + b] + H[b * D + a]);
            M[a * D + b] = s * (a < d ? pw : pg) * (b < d ? pw : pg);
        }
    bn_status st;
    if (op & BN_SOP_PROJECT) {
        /* Householder Q = I - τhhᵀ maps e = (ŵ, 0) to ∓e_0; the trailing
         * d×d block of QMQ is the operator on range(Π) in an orthonormal basis. */
        double *h = hv, *p = hv + D, nw = 0;
        for (int64_t i = 0; i < d; i++) nw += w[i] * w[i];
        nw = sqrt(nw);
        for (int64_t i = 0; i < d; i++) h[i] = w[i] / nw;
        h[d] = 0;
        h[0] += h[0] >= 0 ? 1 : -1;
        double hh = 0;
        for (int64_t i = 0; i < D; i++) hh += h[i] * h[i];
        double tau = 2 / hh, K = 0;
        for (int64_t a = 0; a < D; a++) {
            double s = 0;
            for (int64_t b = 0; b < D; b++) s += M[a * D + b] * h[b];
            p[a] = tau * s;
            K += h[a] * p[a];
        }
        K *= tau / 2;
        for (int64_t a = 0; a < D; a++) p[a] -= K * h[a];
        for (int64_t a = 0; a < D; a++)
            for (int64_t b = 0; b < D; b++) M[a * D + b] -= h[a] * p[b] + p[a] * h[b];
        /* trailing block, packed */
        for (int64_t a = 1; a < D; a++)
            for (int64_t b = 1; b < D; b++) M[(a - 1) * d + (b - 1)] = M[a * D + b];
        st = bn_la_sym_eigen(M, d, evals, NULL);
        *count = d;
    } else {
        st = bn_la_sym_eigen(M, D, evals, NULL);
        *count = D;
    }
    if (st == BN_OK) qsort(evals, (size_t)*count, sizeof(double), cmp_desc);
    free(M);
    free(hv);
    return st;
}

/* ------------------------------------------------------------ checkpoints */

/* Section tag ← the backend buffer src (bytes, via the host buffer buf). */
static bn_status ckpt_put_dev(const bn_sharp *sh, bn_ckpt *c, const char *tag, void *buf, const void *src,
                              size_t bytes)
{
    BN_TRY(sh->be->ops->download(sh->be, buf, src, bytes));
    return bn_ckpt_put(c, tag, buf, bytes);
}

/* The backend buffer dst ← section tag (bytes, via buf). */
static bn_status ckpt_get_dev(bn_sharp *sh, bn_ckpt *c, const char *tag, void *buf, void *dst, size_t bytes)
{
    BN_TRY(bn_ckpt_get(c, tag, buf, bytes));
    return sh->be->ops->upload(sh->be, dst, buf, bytes);
}

/* The warm-start state (issue 6): per operator the shift σ, whether a warm
 * vector exists and, if so, that vector (V d×S, vg S) as the backend holds it
 * (its precision, bitwise); LOBPCG's history alike (the gaps; the vector
 * before, Vp and vgp, when pinit).  Everything else of the engine is either
 * configuration or scratch that each call rebuilds. */
bn_status bn_sharp_ckpt_save(const bn_sharp *sh, bn_ckpt *c)
{
    size_t d = (size_t)sh->su.d, S = (size_t)sh->su.S;
    int64_t dims[3] = {(int64_t)d, (int64_t)S, (int64_t)sh->rs};
    BN_TRY(bn_ckpt_put(c, "sharp.eng.dims", dims, sizeof dims));
    int64_t vinit[BN_SOP_COUNT], pinit[BN_SOP_COUNT];
    for (int op = 0; op < BN_SOP_COUNT; op++) {
        vinit[op] = sh->vinit[op] && sh->V[op] && sh->vg[op];
        pinit[op] = vinit[op] && sh->pinit[op] && sh->Vp[op] && sh->vgp[op];
    }
    BN_TRY(bn_ckpt_put(c, "sharp.eng.vinit", vinit, sizeof vinit));
    BN_TRY(bn_ckpt_put(c, "sharp.eng.pinit", pinit, sizeof pinit));
    void *buf = malloc(d * S * sh->rs + 1);
    if (!buf) return bn_fail(BN_ERR_NOMEM, "cannot allocate the sharpness checkpoint buffer");
    bn_status st = BN_OK;
    for (int op = 0; op < BN_SOP_COUNT && st == BN_OK; op++) {
        st = bn_ckpt_put(c, "sharp.eng.sigma", sh->sigma[op], S * sizeof(double));
        if (st == BN_OK) st = bn_ckpt_put(c, "sharp.eng.gap", sh->gap[op], S * sizeof(double));
        if (st != BN_OK || !vinit[op]) continue;
        st = ckpt_put_dev(sh, c, "sharp.eng.V", buf, sh->V[op], d * S * sh->rs);
        if (st == BN_OK) st = ckpt_put_dev(sh, c, "sharp.eng.vg", buf, sh->vg[op], S * sh->rs);
        if (st != BN_OK || !pinit[op]) continue;
        st = ckpt_put_dev(sh, c, "sharp.eng.Vp", buf, sh->Vp[op], d * S * sh->rs);
        if (st == BN_OK) st = ckpt_put_dev(sh, c, "sharp.eng.vgp", buf, sh->vgp[op], S * sh->rs);
    }
    free(buf);
    return st;
}

bn_status bn_sharp_ckpt_load(bn_sharp *sh, bn_ckpt *c)
{
    size_t d = (size_t)sh->su.d, S = (size_t)sh->su.S;
    int64_t dims[3];
    BN_TRY(bn_ckpt_get(c, "sharp.eng.dims", dims, sizeof dims));
    if (dims[0] != (int64_t)d || dims[1] != (int64_t)S || dims[2] != (int64_t)sh->rs)
        return bn_fail(BN_ERR_FORMAT,
                       "checkpoint '%s': the sharpness engine was saved with dimension %lld, S=%lld, %lld-byte "
                       "reals; this run has %lld, %lld, %lld",
                       bn_ckpt_path(c), (long long)dims[0], (long long)dims[1], (long long)dims[2], (long long)d,
                       (long long)S, (long long)sh->rs);
    int64_t vinit[BN_SOP_COUNT], pinit[BN_SOP_COUNT];
    BN_TRY(bn_ckpt_get(c, "sharp.eng.vinit", vinit, sizeof vinit));
    /* A checkpoint from before LOBPCG's history (issue 7) has neither pinit
     * nor the gaps: it resumes without them, as a fresh history would. */
    const int history = bn_ckpt_next_is(c, "sharp.eng.pinit");
    for (int op = 0; op < BN_SOP_COUNT; op++) pinit[op] = 0;
    if (history) BN_TRY(bn_ckpt_get(c, "sharp.eng.pinit", pinit, sizeof pinit));
    sh->l_owner = -1;
    void *buf = malloc(d * S * sh->rs + 1);
    if (!buf) return bn_fail(BN_ERR_NOMEM, "cannot allocate the sharpness checkpoint buffer");
    bn_status st = BN_OK;
    for (int op = 0; op < BN_SOP_COUNT && st == BN_OK; op++) {
        st = bn_ckpt_get(c, "sharp.eng.sigma", sh->sigma[op], S * sizeof(double));
        for (size_t j = 0; j < S; j++) sh->gap[op][j] = NAN;
        if (st == BN_OK && history) st = bn_ckpt_get(c, "sharp.eng.gap", sh->gap[op], S * sizeof(double));
        sh->vinit[op] = sh->pinit[op] = sh->fresh[op] = 0;
        if (st != BN_OK || !vinit[op]) continue;
        st = ensure_vec(sh, op);
        if (st == BN_OK) st = ckpt_get_dev(sh, c, "sharp.eng.V", buf, sh->V[op], d * S * sh->rs);
        if (st == BN_OK) st = ckpt_get_dev(sh, c, "sharp.eng.vg", buf, sh->vg[op], S * sh->rs);
        if (st == BN_OK) sh->vinit[op] = 1;
        if (st != BN_OK || !pinit[op]) continue;
        if (!sh->Vp[op]) st = dalloc(sh, d * S, &sh->Vp[op]);
        if (st == BN_OK && !sh->vgp[op]) st = dalloc(sh, S, &sh->vgp[op]);
        if (st == BN_OK) st = ckpt_get_dev(sh, c, "sharp.eng.Vp", buf, sh->Vp[op], d * S * sh->rs);
        if (st == BN_OK) st = ckpt_get_dev(sh, c, "sharp.eng.vgp", buf, sh->vgp[op], S * sh->rs);
        if (st == BN_OK) sh->pinit[op] = 1;
    }
    free(buf);
    return st;
}
