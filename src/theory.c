/* Theory overlay (bnspike.h, "sweeps, events, theory"): κ's scale ‖w_LS‖_Σ,
 * whether the data is whitened, and the exact three-variable map of MODEL.md
 * iterated from a trajectory's start and fed to the same spike detector as the
 * simulation, so the two sets of events compare field by field. */
#include "events_internal.h"
#include "linalg.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

bn_status bn_kappa_scale(const bn_dataset *ds, bn_loss loss, const double *w_ls, double *out)
{
    *out = NAN;
    if (loss != BN_LOSS_SQUARE) return BN_OK;
    int64_t n = bn_dataset_n(ds), d = bn_dataset_d(ds);
    double *w = NULL, *xc = NULL, *u = malloc((size_t)n * sizeof(double) + 1);
    bn_status st = u ? BN_OK : bn_fail(BN_ERR_NOMEM, "cannot allocate %lld doubles", (long long)n);
    if (!st && !w_ls) {
        w = malloc((size_t)d * sizeof(double) + 1);
        bn_ref_info info;
        st = w ? bn_reference_direction(ds, BN_LOSS_SQUARE, w, &info)
               : bn_fail(BN_ERR_NOMEM, "cannot allocate %lld doubles", (long long)d);
        w_ls = w;
    }
    if (!st) st = bn_dataset_centered(ds, &xc);
    if (!st) {
        bn_la_gemv(0, n, d, 1.0, xc, w_ls, 0.0, u);
        double s = 0;
        for (int64_t i = 0; i < n; i++) s += u[i] * u[i];
        *out = sqrt(s / (double)n);
    }
    free(w);
    free(xc);
    free(u);
    return st;
}

/* max |Σ - I| over entries: the Gram matrix for d ≤ 2048, else 8 random probes
 * max_k ‖Σ v_k - v_k‖∞ / ‖v_k‖∞ (which is 0 only when Σ = I, almost surely). */
static bn_status sigma_deviation(const double *xc, int64_t n, int64_t d, double *dev)
{
    *dev = 0;
    if (d <= 2048) {
        double *g = malloc((size_t)d * (size_t)d * sizeof(double));
        if (!g) return bn_fail(BN_ERR_NOMEM, "cannot allocate the %lld×%lld covariance", (long long)d, (long long)d);
        bn_la_gemm(1, 0, d, d, n, 1.0 / (double)n, xc, d, xc, d, 0.0, g, d);
        for (int64_t a = 0; a < d; a++)
            for (int64_t b = 0; b < d; b++) *dev = fmax(*dev, fabs(g[a * d + b] - (a == b)));
        free(g);
        return BN_OK;
    }
    double *v = malloc((size_t)d * sizeof(double)), *u = malloc((size_t)n * sizeof(double)),
           *sv = malloc((size_t)d * sizeof(double));
    if (!v || !u || !sv) {
        free(v), free(u), free(sv);
        return bn_fail(BN_ERR_NOMEM, "cannot allocate the covariance probes");
    }
    for (int k = 0; k < 8; k++) {
        bn_rng_normal(0x5eed + (uint64_t)k, BN_STREAM_DATA_AUX, 0, d, v);
        bn_la_gemv(0, n, d, 1.0, xc, v, 0.0, u);
        bn_la_gemv(1, n, d, 1.0 / (double)n, xc, u, 0.0, sv);
        double m = 0, e = 0;
        for (int64_t i = 0; i < d; i++) {
            m = fmax(m, fabs(v[i]));
            e = fmax(e, fabs(sv[i] - v[i]));
        }
        *dev = fmax(*dev, e / m);
    }
    free(v), free(u), free(sv);
    return BN_OK;
}

bn_status bn_theory_data_compute(const bn_dataset *ds, bn_theory_data *out)
{
    return bn_theory_data_compute_b(ds, NAN, out);
}

bn_status bn_theory_data_compute_b(const bn_dataset *ds, double B, bn_theory_data *out)
{
    memset(out, 0, sizeof *out);
    int64_t n = bn_dataset_n(ds), d = bn_dataset_d(ds);
    out->B = B;
    if (isnan(B)) BN_TRY(bn_kappa_scale(ds, BN_LOSS_SQUARE, NULL, &out->B));
    const double *y = bn_dataset_y(ds);
    double my2 = 0;
    for (int64_t i = 0; i < n; i++) my2 += y[i] * y[i];
    my2 /= (double)n;
    out->lstar = 0.5 * my2 - 0.5 * out->B * out->B;
    double *xc;
    BN_TRY(bn_dataset_centered(ds, &xc));
    bn_status st = sigma_deviation(xc, n, d, &out->sigma_dev);
    free(xc);
    out->whitened = st == BN_OK && out->sigma_dev <= 1e-10;
    return st;
}

static const char *const theory_series_names[BN_THEORY_NSERIES] = {
    "alpha", "beta", "gamma", "rho", "loss", "eta_eff", "kappa", "rise_pred"};

const char *bn_theory_series_name(int i)
{
    return (i >= 0 && i < BN_THEORY_NSERIES) ? theory_series_names[i] : NULL;
}

bn_status bn_theory_run(const bn_theory_data *td, double eta_w, double eta_gamma, double alpha0,
                        double beta0, double gamma0, int64_t steps, bn_events *ev, int64_t j,
                        double *series)
{
    if (steps < 0) return bn_fail(BN_ERR_ARG, "steps must be >= 0 (got %lld)", (long long)steps);
    double B = td->B, a = alpha0, b = beta0, g = gamma0;
    for (int64_t t = 0; t <= steps; t++) {
        double N = sqrt(a * a + b * b);
        double c = a / N, s = b / N;
        bn_event_input in = {
            .rho = b / a,
            .loss = td->lstar + 0.5 * (g - B * c) * (g - B * c) + 0.5 * B * B * s * s,
            .eta_eff = eta_w * g / (N * N),
            .w_norm = N,
            .alpha_sigma = a,
            .beta_sigma = b,
            .sharpness = NAN,
            .sharpness_weighted = NAN};
        if (ev) {
            int f = bn_events_feed_flags(ev, j, t, &in, NULL);
            if (f < 0) return (bn_status)(-f);
        }
        if (!series && !isfinite(in.loss)) break; /* diverged: the detector has stopped */
        if (series) {
            double kappa, thr, pred;
            bn_kappa_rule(B, &in, &kappa, &thr, &pred);
            double *row = series + (size_t)t * BN_THEORY_NSERIES;
            double v[BN_THEORY_NSERIES] = {a, b, g, in.rho, in.loss, in.eta_eff, kappa, pred};
            memcpy(row, v, sizeof v);
        }
        /* The map (MODEL.md, Lemma 7), in the form tests/test_dynamics.c checks. */
        double N3 = N * N * N;
        double a1 = a + eta_w * g * B * b * b / N3;
        double b1 = b * fabs(1 - eta_w * g * B * a / N3);
        double g1 = g - eta_gamma * (g - B * a / N);
        a = a1;
        b = b1;
        g = g1;
    }
    return BN_OK;
}
