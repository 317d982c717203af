/* Sharpness records of a run (issue 3): the schedule, the per-record calls
 * into the engine (sharpness.c) and the record arrays of bnspike.h. */
#include "sharpness.h"
#include "ckpt.h"
#include "linalg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Host memory the exact method may use for dense Hessians at once. */
#define BN_DENSE_BUDGET ((size_t)512 << 20)
#define BN_EXACT_MAX_D 1024

enum { K_PLAIN, K_WEIGHTED, K_SPHERE, K_COUNT };

enum {
    A_STEP, A_LAM0, A_LAM1, A_LAM2, A_ITERS, A_CONV, A_SHIFT, A_EIGS, A_EIG_ITERS, A_EIG_CONV,
    A_COUNT
};
static const char *const array_names[A_COUNT] = {
    "sharpness_step", "sharpness", "sharpness_weighted", "sharpness_sphere", "sharpness_iters",
    "sharpness_converged", "sharpness_shift", "eigs", "eigs_iters", "eigs_converged"};

struct bn_sharp_log {
    bn_backend *be;
    bn_sharp *eng;
    int64_t n, d, S, T, K, Rs, k;
    int method, ops[K_COUNT], eig_op;
    double *eta_w, *eta_g;
    int64_t *steps;                 /* Rs */
    double *lam[K_COUNT];           /* S×Rs each */
    int64_t *iters, *conv;          /* S×Rs×3 */
    double *shift;                  /* S×Rs×3 */
    double *eigs;                   /* S×Rs×k */
    int64_t *eig_iters, *eig_conv;  /* S×Rs */
    /* scratch, S (or S×k) each */
    double *t_lam, *t_shift, *t_eigs;
    double *t_ceil; /* the sphere's ceiling: its unprojected operator's λ_max (converged; else NaN) */
    int64_t *t_iters, *t_conv;
    bn_sharpness_info info;
    /* Reduced basis (issue 7): the engine works in the r-dimensional row space
     * of Xc (see reduced_setup); 0 = off, the engine works in R^d. */
    int64_t r;
    int64_t nrec; /* records written: slots 0..nrec-1 */
    int share;    /* the sphere iteration starts from its unprojected operator's vector */
    int ceiling;  /* ... and stops at that operator's λ_max (bn_sharp_power_bounded) */
    void *Vb, *Xr, *XrT, *Wr; /* backend: V_r (r×d col-major), Xr = Xc·V_rᵀ (n×r) and Xrᵀ (r×n),
                               * V_r·W (r×S); all through product_xw */
    /* The run's state arrives in the basis already (the simulation steps in
     * the same row-space coordinates): no V_r·W per record. */
    int w_in_basis;
    /* Square loss (issue 7): XrᵀXr = diag(λ) in the singular basis, and
     * c_y = Xrᵀy (backend, r each): the engine's structured products. */
    int square;
    void *sq_lam, *sq_cy;
};

bn_status bn_sharp_validate(const bn_run_config *c, int64_t d)
{
    if (c->sharpness_every < 0)
        return bn_fail(BN_ERR_ARG, "sharpness_every must be >= 0 (got %lld)", (long long)c->sharpness_every);
    if (c->sharpness_every == 0) {
        if (c->eigs > 0)
            return bn_fail(BN_ERR_ARG, "eigs needs sharpness records: set sharpness_every (--sharpness-every K)");
        return BN_OK;
    }
    if (c->sharpness_method != BN_SHARPNESS_POWER && c->sharpness_method != BN_SHARPNESS_EXACT)
        return bn_fail(BN_ERR_ARG, "unknown sharpness method %d", c->sharpness_method);
    if (!isfinite(c->sharpness_tol) || c->sharpness_tol <= 0 || c->sharpness_tol >= 1)
        return bn_fail(BN_ERR_ARG, "sharpness_tol must be in (0, 1) (got %g)", c->sharpness_tol);
    if (c->sharpness_maxiter < 1)
        return bn_fail(BN_ERR_ARG, "sharpness_maxiter must be >= 1 (got %lld)", (long long)c->sharpness_maxiter);
    if (c->eigs < 0 || c->eigs > d + 1)
        return bn_fail(BN_ERR_ARG, "eigs must be between 0 and d+1 = %lld (got %lld)", (long long)(d + 1),
                       (long long)c->eigs);
    if (c->eigs_operator < BN_EIGS_HESSIAN || c->eigs_operator > BN_EIGS_SPHERE)
        return bn_fail(BN_ERR_ARG, "unknown eigs operator %d", c->eigs_operator);
    if (c->eigs_maxiter < 0)
        return bn_fail(BN_ERR_ARG, "eigs_maxiter must be >= 0 (got %lld)", (long long)c->eigs_maxiter);
    if (c->eigs > 0 && c->eigs_maxiter > 0 && c->eigs_maxiter < c->eigs)
        return bn_fail(BN_ERR_ARG, "eigs_maxiter (%lld) must be at least eigs (%lld)",
                       (long long)c->eigs_maxiter, (long long)c->eigs);
    if (c->sharpness_method == BN_SHARPNESS_EXACT && d > BN_EXACT_MAX_D)
        return bn_fail(BN_ERR_ARG,
                       "the exact sharpness method builds the dense (d+1)×(d+1) Hessian and is "
                       "limited to d <= %d (d = %lld); use the power method",
                       BN_EXACT_MAX_D, (long long)d);
    return BN_OK;
}

void bn_sharp_log_free(bn_sharp_log *lg)
{
    if (!lg) return;
    bn_sharp_free(lg->eng);
    void *bufs[] = {lg->Vb, lg->Xr, lg->XrT, lg->Wr, lg->sq_lam, lg->sq_cy};
    for (int i = 0; i < 6; i++)
        if (bufs[i]) lg->be->ops->dealloc(lg->be, bufs[i]);
    for (int k = 0; k < K_COUNT; k++) free(lg->lam[k]);
    free(lg->steps);
    free(lg->iters);
    free(lg->conv);
    free(lg->shift);
    free(lg->eigs);
    free(lg->eig_iters);
    free(lg->eig_conv);
    free(lg->t_lam);
    free(lg->t_ceil);
    free(lg->t_shift);
    free(lg->t_eigs);
    free(lg->t_iters);
    free(lg->t_conv);
    free(lg->eta_w);
    free(lg->eta_g);
    free(lg);
}

/* The rank of Xc and, per trajectory, whether w0 lies in its row space
 * (GD never changes w's null-space part).  Only Lanczos needs them. */
static bn_status rowspace_facts(const bn_run_config *c, const double *xc, int64_t n, int64_t d,
                                const double *w0, int64_t rank_hint, int64_t *rank,
                                unsigned char *inrow)
{
    int64_t S = c->seeds;
    for (int64_t j = 0; j < S; j++) inrow[j] = 1;
    *rank = rank_hint;
    if (*rank <= 0) BN_TRY(bn_la_rank(xc, n, d, -1.0, rank));
    if (c->project_w0 || *rank >= d) return BN_OK;
    bn_la_rowspace *rs = NULL;
    BN_TRY(bn_la_rowspace_create(xc, n, d, 0.0, &rs));
    double *pw = malloc((size_t)d * sizeof(double));
    bn_status st = pw ? BN_OK : bn_fail(BN_ERR_NOMEM, "cannot allocate %lld doubles", (long long)d);
    for (int64_t j = 0; st == BN_OK && j < S; j++) {
        st = bn_la_rowspace_project(rs, w0 + j * d, 1, pw);
        double e = 0, wn = 0;
        for (int64_t i = 0; i < d; i++) {
            e += (w0[j * d + i] - pw[i]) * (w0[j * d + i] - pw[i]);
            wn += w0[j * d + i] * w0[j * d + i];
        }
        inrow[j] = e <= 1e-20 * wn;
    }
    free(pw);
    bn_la_rowspace_free(rs);
    return st;
}

/* The square loss's data in the basis (issue 7), from xr = Xc·V_rᵀ (n×r
 * row-major): λ_k = ‖Xr[:,k]‖² (the singular values squared: V_r holds right
 * singular vectors, so the off-diagonal of XrᵀXr is rounding) and c_y = Xrᵀy.
 * Nothing for the other losses. */
static bn_status square_data(bn_sharp_log *lg, const double *xr, const double *y, int64_t n, int64_t r)
{
    if (!lg->square) return BN_OK;
    bn_backend *be = lg->be;
    double *sl = malloc(2 * (size_t)r * sizeof(double));
    if (!sl) return bn_fail(BN_ERR_NOMEM, "cannot allocate the reduced data");
    double *scy = sl + r;
    for (int64_t k = 0; k < r; k++) {
        double a = 0, b = 0;
        for (int64_t i = 0; i < n; i++) {
            a += xr[i * r + k] * xr[i * r + k];
            b += xr[i * r + k] * y[i];
        }
        sl[k] = a;
        scy[k] = b;
    }
    size_t rs = bn_real_size(be->precision);
    bn_status st = be->ops->alloc(be, (size_t)r * rs, &lg->sq_lam);
    if (st == BN_OK) st = be->ops->alloc(be, (size_t)r * rs, &lg->sq_cy);
    if (st == BN_OK) st = bn_upload_f64(be, lg->sq_lam, sl, (size_t)r);
    if (st == BN_OK) st = bn_upload_f64(be, lg->sq_cy, scy, (size_t)r);
    free(sl);
    return st;
}

/* The reduced basis (issue 7).  Every operator of sharpness.h is block
 * diagonal: it acts on E = rowspace(Xc) ⊕ γ (through u = Xc·w) and vanishes on
 * null(Xc) × {0}; PROJECT keeps this when ŵ ∈ rowspace(Xc).  With an
 * orthonormal basis V_r (r×d) of the row space, the engine then runs on the
 * data Xr = Xc·V_rᵀ (n×r) and the state V_r·w, in r+1 dimensions instead of
 * d+1: the same nonzero eigenvalues (to rounding: the directions dropped by the
 * numerical rank have s_i ≤ max(n,d)·ε·s_1), plus d - r exact zeros.  Used for
 * the power method when r < d, every w0 lies in the row space (GD keeps it
 * there: its updates are Xcᵀq) and the SVD is cheap (≤ ~1e9 flops). */
static bn_status reduced_setup(bn_sharp_log *lg, const double *xc, const double *y, int64_t n, int64_t d,
                               int64_t r, const double *basis)
{
    bn_backend *be = lg->be;
    size_t rs = bn_real_size(be->precision);
    int64_t S = lg->S;
    double *xr = malloc((size_t)(n * r) * sizeof(double));
    if (!xr) return bn_fail(BN_ERR_NOMEM, "cannot allocate the reduced data");
    /* xr row-major n×r: xr[i r + k] = Σ_l xc[i d + l]·V[k d + l] */
    bn_la_gemm(0, 1, n, r, d, 1.0, xc, d, basis, d, 0.0, xr, r);
    /* col-major copies: Xr (n×r), Xrᵀ (r×n) and V_r (r×d) */
    size_t nr = (size_t)(n * r), dr = (size_t)(d * r);
    double *cm = malloc((2 * nr + dr) * sizeof(double));
    bn_status st = cm ? BN_OK : bn_fail(BN_ERR_NOMEM, "cannot allocate the reduced data");
    double *xrc = cm, *xrt = cm + nr, *vrc = cm + 2 * nr;
    for (int64_t i = 0; st == BN_OK && i < n; i++)
        for (int64_t k = 0; k < r; k++) {
            xrc[i + k * n] = xr[i * r + k];
            xrt[k + i * r] = xr[i * r + k];
        }
    for (int64_t k = 0; st == BN_OK && k < r; k++)
        for (int64_t l = 0; l < d; l++) vrc[k + l * r] = basis[k * d + l];
    if (st == BN_OK) st = square_data(lg, xr, y, n, r);
    free(xr);
    if (st == BN_OK) st = be->ops->alloc(be, nr * rs, &lg->Xr);
    if (st == BN_OK) st = be->ops->alloc(be, nr * rs, &lg->XrT);
    if (st == BN_OK) st = be->ops->alloc(be, dr * rs, &lg->Vb);
    if (st == BN_OK) st = be->ops->alloc(be, (size_t)(r * S) * rs, &lg->Wr);
    const double *src[3] = {xrc, xrt, vrc};
    void *dst[3] = {lg->Xr, lg->XrT, lg->Vb};
    size_t cnt[3] = {nr, nr, dr};
    for (int q = 0; q < 3 && st == BN_OK; q++) st = bn_upload_f64(be, dst[q], src[q], cnt[q]);
    free(cm);
    if (st == BN_OK) lg->r = r;
    return st;
}

bn_status bn_sharp_log_create(bn_backend *be, const bn_run_config *c, int64_t n, int64_t d,
                              const void *Xc, const void *y, const double *eta_w,
                              const double *eta_gamma, const bn_sharp_log_host *h, bn_sharp_log **out)
{
    const double *xc_host = h->xc, *w0_host = h->w0;
    int64_t rank_hint = h->rank_hint;
    *out = NULL;
    BN_TRY(bn_sharp_validate(c, d));
    bn_sharp_log *lg = calloc(1, sizeof *lg);
    if (!lg) return bn_fail(BN_ERR_NOMEM, "cannot allocate the sharpness records");
    lg->be = be;
    lg->n = n;
    lg->d = d;
    lg->S = c->seeds;
    lg->T = c->steps;
    lg->K = c->sharpness_every;
    lg->Rs = bn_record_count(c->steps, c->sharpness_every);
    lg->k = c->eigs;
    lg->method = c->sharpness_method;
    int sphere = BN_SOP_PROJECT | (c->sharpness_sphere_plain ? 0 : BN_SOP_WEIGHTED);
    lg->ops[K_PLAIN] = 0;
    lg->ops[K_WEIGHTED] = BN_SOP_WEIGHTED;
    lg->ops[K_SPHERE] = sphere;
    lg->eig_op = c->eigs_operator == BN_EIGS_HESSIAN ? 0
                 : c->eigs_operator == BN_EIGS_WEIGHTED ? BN_SOP_WEIGHTED : sphere;
    int64_t S = lg->S, Rs = lg->Rs, k = lg->k > 0 ? lg->k : 1;
    size_t sr = (size_t)S * (size_t)Rs;
    int ok = 1;
    for (int q = 0; q < K_COUNT && ok; q++) ok = (lg->lam[q] = malloc(sr * sizeof(double))) != NULL;
    ok = ok && (lg->steps = malloc((size_t)Rs * sizeof(int64_t))) && (lg->iters = calloc(sr * 3, sizeof(int64_t))) &&
         (lg->conv = calloc(sr * 3, sizeof(int64_t))) && (lg->shift = calloc(sr * 3, sizeof(double))) &&
         (lg->t_lam = malloc((size_t)S * sizeof(double))) && (lg->t_ceil = malloc((size_t)S * sizeof(double))) &&
         (lg->t_shift = malloc((size_t)S * sizeof(double))) &&
         (lg->t_eigs = malloc((size_t)(S * k) * sizeof(double))) &&
         (lg->t_iters = malloc((size_t)S * sizeof(int64_t))) && (lg->t_conv = malloc((size_t)S * sizeof(int64_t))) &&
         (lg->eta_w = malloc((size_t)S * sizeof(double))) && (lg->eta_g = malloc((size_t)S * sizeof(double)));
    if (ok && lg->k > 0)
        ok = (lg->eigs = malloc(sr * (size_t)lg->k * sizeof(double))) && (lg->eig_iters = calloc(sr, sizeof(int64_t))) &&
             (lg->eig_conv = calloc(sr, sizeof(int64_t)));
    if (!ok) {
        bn_sharp_log_free(lg);
        return bn_fail(BN_ERR_NOMEM, "cannot allocate the sharpness records (%lld seeds × %lld records)",
                       (long long)S, (long long)Rs);
    }
    memcpy(lg->eta_w, eta_w, (size_t)S * sizeof(double));
    memcpy(lg->eta_g, eta_gamma, (size_t)S * sizeof(double));
    for (int q = 0; q < K_COUNT; q++)
        for (size_t i = 0; i < sr; i++) lg->lam[q][i] = NAN;
    if (lg->k > 0)
        for (size_t i = 0; i < sr * (size_t)lg->k; i++) lg->eigs[i] = NAN;
    for (int64_t t = 0, r = 0; t <= lg->T; t++)
        if (bn_record_slot(t, lg->T, lg->K) >= 0) lg->steps[r++] = t;

    int64_t lmax = 0;
    if (lg->k > 0 && lg->method == BN_SHARPNESS_POWER) {
        int64_t dim = d + 1;
        lmax = c->eigs_maxiter > 0 ? c->eigs_maxiter : 6 * lg->k + 60;
        if (lmax > dim) lmax = dim;
    }
    int64_t rank = 0;
    unsigned char *inrow = NULL;
    bn_status st = BN_OK;
    double mn = (double)(n < d ? n : d), mx = (double)(n < d ? d : n);
    /* BN_SHARP_FULL, BN_SHARP_NO_COMPACT, BN_SHARP_NO_SHARE and
     * BN_SHARP_NO_CEILING (set: the engine in R^d; every column in the batch
     * until the last converges; the sphere iteration from its own previous
     * vector; no ceiling for it), and BN_SHARP_PLAIN_POWER (the shifted
     * power iteration instead of LOBPCG on the general path): the previous
     * algorithm, for side-by-side benchmarks (bench_sharpness --runs) and tests. */
    /* The square loss's structured products need the singular basis, so for
     * it the basis is used also when n ≥ d (then a rotation of R^d:
     * BN_SHARP_GENERAL=1 keeps the general HVPs, for benchmarks and tests). */
    lg->square = c->loss == BN_LOSS_SQUARE && lg->method == BN_SHARPNESS_POWER && getenv("BN_SHARP_GENERAL") == NULL &&
                 be->ops->power_square != NULL;
    int try_reduce = lg->method == BN_SHARPNESS_POWER && (n < d || lg->square) && mn * mn * mx <= 1e9 &&
                     getenv("BN_SHARP_FULL") == NULL;
    if (h->basis) {
        /* The run steps in these coordinates (w = V_rᵀz, sim.c): every w lies in
         * the row space, and the engine works in the same basis, on the run's
         * own data buffer Xc (already Xc·V_rᵀ) and its host copy h->xr. */
        lg->w_in_basis = 1;
        st = square_data(lg, h->xr, h->y, n, h->basis_rank);
        if (st == BN_OK) lg->r = h->basis_rank;
        try_reduce = 0;
    }
    if (st == BN_OK && (lmax > 0 || try_reduce)) {
        inrow = malloc((size_t)S);
        st = inrow ? rowspace_facts(c, xc_host, n, d, w0_host, rank_hint, &rank, inrow)
                   : bn_fail(BN_ERR_NOMEM, "cannot allocate %lld flags", (long long)S);
    }
    if (st == BN_OK && try_reduce) {
        int all_in = 1;
        for (int64_t j = 0; j < S; j++) all_in &= inrow[j] != 0;
        bn_la_rowspace *rsp = NULL;
        if (all_in) st = bn_la_rowspace_create(xc_host, n, d, 0.0, &rsp);
        if (st == BN_OK && rsp && bn_la_rowspace_rank(rsp) >= 1 && (bn_la_rowspace_rank(rsp) < d || lg->square))
            st = reduced_setup(lg, xc_host, h->y, n, d, bn_la_rowspace_rank(rsp), bn_la_rowspace_basis(rsp));
        bn_la_rowspace_free(rsp);
    }
    bn_sharp_setup su = {
        .n = n, .d = d, .S = S, .logistic = c->loss == BN_LOSS_LOGISTIC, .Xc = Xc, .y = y,
        .eta_w = eta_w, .eta_gamma = eta_gamma, .seed = c->seed, .tol = c->sharpness_tol,
        .maxiter = c->sharpness_maxiter, .lanczos_max = lmax, .rank = rank, .w_in_rowspace = inrow,
        .no_compact = getenv("BN_SHARP_NO_COMPACT") != NULL, .plain_power = getenv("BN_SHARP_PLAIN_POWER") != NULL};
    if (lg->r > 0) {
        /* The engine in the row space: data Xr, dimension r, full rank, and
         * every w (V_r·w) in its row space. */
        su.d = lg->r;
        su.Xc = lg->w_in_basis ? Xc : lg->Xr;
        su.XcT = lg->XrT; /* NULL with w_in_basis: the run's Xc has the backend's transpose */
        su.rank = lg->r;
        su.w_in_rowspace = NULL;
        su.sq_lam = lg->sq_lam;
        su.sq_cy = lg->sq_cy;
        if (su.lanczos_max > lg->r + 1) su.lanczos_max = lg->r + 1;
        lmax = su.lanczos_max;
    }
    if (st == BN_OK) st = bn_sharp_create(be, &su, &lg->eng);
    free(inrow);
    if (st != BN_OK) {
        bn_sharp_log_free(lg);
        return st;
    }
    lg->share = getenv("BN_SHARP_NO_SHARE") == NULL;
    lg->ceiling = getenv("BN_SHARP_NO_CEILING") == NULL;
    lg->info.records = Rs;
    lg->info.tol_effective = bn_sharp_tol_effective(lg->eng);
    lg->info.eigs_maxiter = lmax;
    *out = lg;
    return BN_OK;
}

int64_t bn_sharp_log_next_step(const bn_sharp_log *lg, int64_t t)
{
    int64_t nx = (t / lg->K + 1) * lg->K;
    if (nx > lg->T) nx = t < lg->T ? lg->T : lg->T + 1;
    return nx;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The exact method: dense Hessians in groups that fit BN_DENSE_BUDGET. */
static bn_status record_exact(bn_sharp_log *lg, int64_t r, const void *W)
{
    int64_t S = lg->S, d = lg->d, D = d + 1, Rs = lg->Rs;
    size_t per = (size_t)(D * D) * sizeof(double);
    int64_t G = (int64_t)(BN_DENSE_BUDGET / per);
    if (G < 1) G = 1;
    if (G > S) G = S;
    double *H = malloc((size_t)G * per), *w = malloc((size_t)(d * S) * sizeof(double));
    double *ev = malloc((size_t)D * sizeof(double));
    bn_status st = (H && w && ev) ? BN_OK : bn_fail(BN_ERR_NOMEM, "exact sharpness: cannot allocate %lld dense Hessians",
                                                     (long long)G);
    if (st == BN_OK) st = bn_download_f64(lg->be, w, W, (size_t)(d * S));
    for (int64_t j0 = 0; st == BN_OK && j0 < S; j0 += G) {
        int64_t j1 = j0 + G < S ? j0 + G : S;
        st = bn_sharp_dense_hessian(lg->eng, j0, j1, H);
        for (int64_t j = j0; st == BN_OK && j < j1; j++) {
            const double *Hj = H + (size_t)(j - j0) * (size_t)(D * D);
            int finite = 1;
            for (int64_t i = 0; i < D * D && finite; i++) finite = isfinite(Hj[i]);
            size_t at = (size_t)j * (size_t)Rs + (size_t)r;
            for (int q = 0; q < K_COUNT + 1 && st == BN_OK; q++) {
                if (q == K_COUNT && lg->k == 0) break;
                int op = q < K_COUNT ? lg->ops[q] : lg->eig_op;
                int64_t cnt = 0;
                if (finite)
                    st = bn_sharp_dense_eigs(Hj, d, w + j * d, lg->eta_w[j], lg->eta_g[j], op, ev, &cnt);
                if (st != BN_OK) break;
                if (q < K_COUNT) {
                    lg->lam[q][at] = finite ? ev[0] : NAN;
                    lg->iters[at * 3 + (size_t)q] = D;
                    lg->conv[at * 3 + (size_t)q] = finite;
                    lg->shift[at * 3 + (size_t)q] = 0;
                } else {
                    for (int64_t i = 0; i < lg->k; i++) lg->eigs[at * (size_t)lg->k + (size_t)i] = finite && i < cnt ? ev[i] : NAN;
                    lg->eig_iters[at] = D;
                    lg->eig_conv[at] = finite;
                }
            }
        }
    }
    free(H);
    free(w);
    free(ev);
    return st;
}

/* The top k of the values e[0..k) (descending, NaN past the reduced
 * dimension) together with `zeros` exact zeros; a NaN first value (a
 * non-finite state) stays. */
static void merge_zeros(double *e, int64_t k, int64_t zeros)
{
    if (!isfinite(e[0])) return;
    int64_t nf = 0;
    while (nf < k && isfinite(e[nf])) nf++;
    double tmp[64];
    double *out = k <= 64 ? tmp : malloc((size_t)k * sizeof(double));
    if (!out) return;
    int64_t a = 0, z = zeros;
    for (int64_t i = 0; i < k; i++) {
        if (a < nf && (e[a] >= 0 || z == 0)) out[i] = e[a++];
        else if (z > 0) { out[i] = 0; z--; }
        else out[i] = NAN;
    }
    memcpy(e, out, (size_t)k * sizeof(double));
    if (out != tmp) free(out);
}

bn_status bn_sharp_log_at(bn_sharp_log *lg, int64_t t, const void *W, const void *gamma)
{
    int64_t r = bn_record_slot(t, lg->T, lg->K);
    if (r < 0) return BN_OK;
    double t0 = now_seconds();
    int64_t S = lg->S, Rs = lg->Rs;
    if (lg->w_in_basis) {
        BN_TRY(bn_sharp_set_state(lg->eng, W, gamma));
    } else if (lg->r > 0) {
        BN_TRY(lg->be->ops->product_xw(lg->be, lg->r, lg->d, S, lg->Vb, W, lg->Wr));
        BN_TRY(bn_sharp_set_state(lg->eng, lg->Wr, gamma));
    } else {
        BN_TRY(bn_sharp_set_state(lg->eng, W, gamma));
    }
    /* With the reduced basis, the d - r exact zeros outside it. */
    int64_t zeros = lg->r > 0 ? lg->d - lg->r : 0;
    if (lg->method == BN_SHARPNESS_EXACT) {
        BN_TRY(record_exact(lg, r, W));
    } else {
        for (int q = 0; q < K_COUNT; q++) {
            if (q == K_SPHERE && lg->share) {
                /* The sphere operator Π A Π starts from A's vector of this
                 * record (A = P^½HP^½, or H for the plain sphere), projected:
                 * its eigenvalues interlace A's, and when A's top eigenvector
                 * u is nearly ⊥ ŵ, Πu is nearly the sphere's top one; when it
                 * is not, the iteration proceeds from Πu as from any start.
                 * A's converged λ_max (t_ceil) is the sphere's ceiling. */
                BN_TRY(bn_sharp_power_warm_from(lg->eng, lg->ops[K_SPHERE], lg->ops[K_SPHERE] & ~BN_SOP_PROJECT));
            }
            int bounded = q == K_SPHERE && lg->share && lg->ceiling;
            BN_TRY(bn_sharp_power_bounded(lg->eng, lg->ops[q], bounded ? lg->t_ceil : NULL, lg->t_lam,
                                          lg->t_shift, lg->t_iters, lg->t_conv));
            if (lg->ops[q] == (lg->ops[K_SPHERE] & ~BN_SOP_PROJECT))
                for (int64_t j = 0; j < S; j++) lg->t_ceil[j] = lg->t_conv[j] ? lg->t_lam[j] : NAN;
            for (int64_t j = 0; j < S && zeros > 0; j++)
                if (lg->t_lam[j] < 0) lg->t_lam[j] = 0; /* (NaN stays) */
            for (int64_t j = 0; j < S; j++) {
                size_t at = (size_t)j * (size_t)Rs + (size_t)r;
                lg->lam[q][at] = lg->t_lam[j];
                lg->iters[at * 3 + (size_t)q] = lg->t_iters[j];
                lg->conv[at * 3 + (size_t)q] = lg->t_conv[j];
                lg->shift[at * 3 + (size_t)q] = lg->t_shift[j];
                lg->info.not_converged += !lg->t_conv[j] && isfinite(lg->t_lam[j]);
                lg->info.shifted += lg->t_shift[j] != 0;
            }
            if (bn_sharp_uses_lobpcg(lg->eng)) lg->info.lobpcg += S;
            if (bn_sharp_is_square(lg->eng)) {
                lg->info.structured += S;
                lg->info.corrected += bn_sharp_last_corrected(lg->eng);
                lg->info.bisected += bn_sharp_last_bisected(lg->eng);
            }
        }
        if (lg->k > 0) {
            BN_TRY(bn_sharp_lanczos(lg->eng, lg->eig_op, lg->k, lg->t_eigs, lg->t_iters, lg->t_conv));
            for (int64_t j = 0; j < S && zeros > 0; j++) merge_zeros(lg->t_eigs + j * lg->k, lg->k, zeros);
            for (int64_t j = 0; j < S; j++) {
                size_t at = (size_t)j * (size_t)Rs + (size_t)r;
                memcpy(lg->eigs + at * (size_t)lg->k, lg->t_eigs + j * lg->k, (size_t)lg->k * sizeof(double));
                lg->eig_iters[at] = lg->t_iters[j];
                lg->eig_conv[at] = lg->t_conv[j];
                lg->info.eigs_not_converged += !lg->t_conv[j] && isfinite(lg->t_eigs[j * lg->k]);
            }
        }
    }
    lg->info.seconds += now_seconds() - t0;
    lg->nrec = r + 1;
    return BN_OK;
}

int bn_sharp_log_n_arrays(const bn_sharp_log *lg) { return lg ? (lg->k > 0 ? A_COUNT : A_EIGS) : 0; }

bn_status bn_sharp_log_array(const bn_sharp_log *lg, int i, bn_sim_array *o)
{
    memset(o, 0, sizeof *o);
    if (!lg || i < 0 || i >= bn_sharp_log_n_arrays(lg))
        return bn_fail(BN_ERR_ARG, "no sharpness array %d", i);
    o->name = array_names[i];
    o->shape[0] = lg->S;
    o->shape[1] = lg->Rs;
    o->ndim = 2;
    switch (i) {
    case A_STEP: o->ndim = 1; o->shape[0] = lg->Rs; o->shape[1] = 0; o->i64 = lg->steps; break;
    case A_LAM0: case A_LAM1: case A_LAM2: o->f64 = lg->lam[i - A_LAM0]; break;
    case A_ITERS: o->ndim = 3; o->shape[2] = K_COUNT; o->i64 = lg->iters; break;
    case A_CONV: o->ndim = 3; o->shape[2] = K_COUNT; o->i64 = lg->conv; break;
    case A_SHIFT: o->ndim = 3; o->shape[2] = K_COUNT; o->f64 = lg->shift; break;
    case A_EIGS: o->ndim = 3; o->shape[2] = lg->k; o->f64 = lg->eigs; break;
    case A_EIG_ITERS: o->i64 = lg->eig_iters; break;
    default: o->i64 = lg->eig_conv; break;
    }
    return BN_OK;
}

void bn_sharp_log_info(const bn_sharp_log *lg, bn_sharpness_info *info)
{
    if (!lg) {
        memset(info, 0, sizeof *info);
        return;
    }
    *info = lg->info;
}

/* ------------------------------------------------------------ checkpoints */

int64_t bn_sharp_log_engine_dim(const bn_sharp_log *lg) { return lg->r > 0 ? lg->r : lg->d; }

/* One S×Rs×w array (row-major by trajectory), the first nrec records of each
 * trajectory, packed S×nrec×w. */
static bn_status put_packed(const bn_sharp_log *lg, bn_ckpt *c, const char *tag, const void *a, size_t w,
                            size_t elem)
{
    size_t S = (size_t)lg->S, Rs = (size_t)lg->Rs, nr = (size_t)lg->nrec;
    size_t row = nr * w * elem;
    char *buf = malloc(S * row + 1);
    if (!buf) return bn_fail(BN_ERR_NOMEM, "cannot allocate the sharpness checkpoint buffer");
    for (size_t j = 0; j < S; j++) memcpy(buf + j * row, (const char *)a + j * Rs * w * elem, row);
    bn_status st = bn_ckpt_put(c, tag, buf, S * row);
    free(buf);
    return st;
}

static bn_status get_packed(bn_sharp_log *lg, bn_ckpt *c, const char *tag, void *a, size_t w, size_t elem)
{
    size_t S = (size_t)lg->S, Rs = (size_t)lg->Rs, nr = (size_t)lg->nrec;
    size_t row = nr * w * elem;
    const void *p = NULL;
    size_t bytes = 0;
    BN_TRY(bn_ckpt_get_any(c, tag, &p, &bytes));
    if (bytes != S * row)
        return bn_fail(BN_ERR_FORMAT, "checkpoint '%s': section '%s' has %zu bytes, expected %zu", bn_ckpt_path(c),
                       tag, bytes, S * row);
    for (size_t j = 0; j < S; j++) memcpy((char *)a + j * Rs * w * elem, (const char *)p + j * row, row);
    return BN_OK;
}

bn_status bn_sharp_log_ckpt_save(const bn_sharp_log *lg, bn_ckpt *c)
{
    int64_t head[6] = {lg->S, lg->Rs, lg->k, lg->method, lg->r, lg->nrec};
    BN_TRY(bn_ckpt_put(c, "sharp.head", head, sizeof head));
    BN_TRY(bn_ckpt_put(c, "sharp.info", &lg->info, sizeof lg->info));
    for (int q = 0; q < K_COUNT; q++) BN_TRY(put_packed(lg, c, "sharp.lam", lg->lam[q], 1, sizeof(double)));
    BN_TRY(put_packed(lg, c, "sharp.iters", lg->iters, K_COUNT, sizeof(int64_t)));
    BN_TRY(put_packed(lg, c, "sharp.conv", lg->conv, K_COUNT, sizeof(int64_t)));
    BN_TRY(put_packed(lg, c, "sharp.shift", lg->shift, K_COUNT, sizeof(double)));
    if (lg->k > 0) {
        BN_TRY(put_packed(lg, c, "sharp.eigs", lg->eigs, (size_t)lg->k, sizeof(double)));
        BN_TRY(put_packed(lg, c, "sharp.eig_iters", lg->eig_iters, 1, sizeof(int64_t)));
        BN_TRY(put_packed(lg, c, "sharp.eig_conv", lg->eig_conv, 1, sizeof(int64_t)));
    }
    return bn_sharp_ckpt_save(lg->eng, c);
}

bn_status bn_sharp_log_ckpt_load(bn_sharp_log *lg, bn_ckpt *c)
{
    int64_t head[6];
    BN_TRY(bn_ckpt_get(c, "sharp.head", head, sizeof head));
    if (head[0] != lg->S || head[1] != lg->Rs || head[2] != lg->k || head[3] != lg->method || head[4] != lg->r ||
        head[5] < 0 || head[5] > lg->Rs)
        return bn_fail(BN_ERR_FORMAT,
                       "checkpoint '%s': sharpness records of S=%lld, %lld records, eigs %lld, method %lld, basis "
                       "%lld; this run has %lld, %lld, %lld, %d, %lld",
                       bn_ckpt_path(c), (long long)head[0], (long long)head[1], (long long)head[2],
                       (long long)head[3], (long long)head[4], (long long)lg->S, (long long)lg->Rs,
                       (long long)lg->k, lg->method, (long long)lg->r);
    lg->nrec = head[5];
    BN_TRY(bn_ckpt_get(c, "sharp.info", &lg->info, sizeof lg->info));
    for (int q = 0; q < K_COUNT; q++) BN_TRY(get_packed(lg, c, "sharp.lam", lg->lam[q], 1, sizeof(double)));
    BN_TRY(get_packed(lg, c, "sharp.iters", lg->iters, K_COUNT, sizeof(int64_t)));
    BN_TRY(get_packed(lg, c, "sharp.conv", lg->conv, K_COUNT, sizeof(int64_t)));
    BN_TRY(get_packed(lg, c, "sharp.shift", lg->shift, K_COUNT, sizeof(double)));
    if (lg->k > 0) {
        BN_TRY(get_packed(lg, c, "sharp.eigs", lg->eigs, (size_t)lg->k, sizeof(double)));
        BN_TRY(get_packed(lg, c, "sharp.eig_iters", lg->eig_iters, 1, sizeof(int64_t)));
        BN_TRY(get_packed(lg, c, "sharp.eig_conv", lg->eig_conv, 1, sizeof(int64_t)));
    }
    return bn_sharp_ckpt_load(lg->eng, c);
}
