/* Reference direction and start of a run (see sim_setup.h). */
#include "sim_setup.h"
#include "linalg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double norm2(const double *v, int64_t len)
{
    double s = 0;
    for (int64_t i = 0; i < len; i++) s += v[i] * v[i];
    return sqrt(s);
}

bn_status bn_setup_reference(const bn_dataset *ds, const bn_run_config *cfg, const double *xc,
                             double *w_ref, bn_ref_info *info, double *ehat, double *uhat)
{
    int64_t n = bn_dataset_n(ds), d = bn_dataset_d(ds);
    memset(info, 0, sizeof *info);
    memset(w_ref, 0, (size_t)d * sizeof(double));
    memset(ehat, 0, (size_t)d * sizeof(double));
    memset(uhat, 0, (size_t)n * sizeof(double));
    if (cfg->skip_reference) return BN_OK;
    if (cfg->w_ref) {
        memcpy(w_ref, cfg->w_ref, (size_t)d * sizeof(double));
        info->kind = cfg->loss == BN_LOSS_LOGISTIC;
        info->residual = info->kkt_violation = NAN;
    } else {
        BN_TRY(bn_reference_direction(ds, cfg->loss, w_ref, info));
    }
    double nrm = norm2(w_ref, d);
    if (!(nrm > 0) || !isfinite(nrm))
        return bn_fail(BN_ERR_DATA, "the reference direction is zero or not finite (norm %g)", nrm);
    for (int64_t i = 0; i < d; i++) ehat[i] = w_ref[i] / nrm;
    bn_la_gemv(0, n, d, 1.0, xc, ehat, 0.0, uhat);
    double un = norm2(uhat, n);
    if (!(un > 0))
        return bn_fail(BN_ERR_DATA, "the reference direction is orthogonal to every centered sample (Xc·w_ref = 0)");
    for (int64_t i = 0; i < n; i++) uhat[i] /= un;
    return BN_OK;
}

bn_status bn_setup_project_rowspace(const bn_la_rowspace *rs, double *w0, int64_t S)
{
    int64_t d = bn_la_rowspace_dim(rs);
    /* Full rank: the row space is all of R^d and projecting would only round.
     * One row at a time: a batched BLAS product would round a row differently
     * depending on S, and seed s must start the same alone or in a batch. */
    bn_status st = BN_OK;
    if (bn_la_rowspace_rank(rs) < d)
        for (int64_t j = 0; j < S && st == BN_OK; j++)
            st = bn_la_rowspace_project(rs, w0 + j * d, 1, w0 + j * d);
    return st;
}

bn_status bn_setup_check_w0(const double *xc, int64_t n, int64_t d, const double *w0, int64_t S)
{
    for (int64_t j = 0; j < S; j++)
        for (int64_t i = 0; i < d; i++)
            if (!isfinite(w0[j * d + i]))
                return bn_fail(BN_ERR_ARG, "w0 of trajectory %lld has a non-finite entry at %lld",
                               (long long)j, (long long)i);
    /* U0 = W0·Xcᵀ (S×n) in one product: a loop over S would be O(S·n·d) serial. */
    double *u = malloc((size_t)n * (size_t)S * sizeof(double) + 1);
    if (!u) return bn_fail(BN_ERR_NOMEM, "cannot allocate %lld×%lld doubles", (long long)S, (long long)n);
    bn_la_gemm(0, 1, S, n, d, 1.0, w0, d, xc, d, 0.0, u, n);
    bn_status st = BN_OK;
    for (int64_t j = 0; j < S && st == BN_OK; j++)
        if (!(norm2(u + j * n, n) > 0))
            st = bn_fail(BN_ERR_ARG,
                         "w0 of trajectory %lld is orthogonal to the centered data (Xc·w0 = 0): the "
                         "batch-normalized model is undefined there", (long long)j);
    free(u);
    return st;
}
