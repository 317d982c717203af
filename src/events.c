/* Spike detection on recorded series (see bn_spike in bnspike.h). */
#include "internal.h"

#include <math.h>
#include <string.h>

bn_status bn_find_first_spike(const double *rho, const double *loss, const double *wnorm,
                              int64_t count, double min_rise, bn_spike *out)
{
    memset(out, 0, sizeof *out);
    out->onset = out->peak = out->end = -1;
    if (!(min_rise >= 1.0)) return bn_fail(BN_ERR_ARG, "min_rise must be >= 1 (got %g)", min_rise);
    int fell = 0;
    for (int64_t k = 0; k + 1 < count; k++) {
        if (!isfinite(rho[k]) || !isfinite(rho[k + 1])) { fell = 0; continue; }
        if (fabs(rho[k + 1]) < fabs(rho[k])) { fell = 1; continue; }
        if (!fell || !(fabs(rho[k + 1]) > fabs(rho[k]))) continue;
        /* A rising edge starts at k: follow it to its peak. */
        int64_t p = k + 1;
        while (p + 1 < count && isfinite(rho[p + 1]) && fabs(rho[p + 1]) > fabs(rho[p])) p++;
        if (fabs(rho[p]) >= min_rise * fabs(rho[k])) {
            /* The spike ends when ρ is back down by the same factor. */
            int64_t e = p;
            while (e + 1 < count && !(fabs(rho[e]) * min_rise <= fabs(rho[p]))) e++;
            /* The loss keeps falling while ρ is tiny: its spike runs from its
             * minimum inside the edge to its maximum before the end. */
            int64_t lo = k;
            for (int64_t i = k; i <= p; i++)
                if (loss[i] < loss[lo]) lo = i;
            double lmax = loss[lo];
            for (int64_t i = lo; i <= e; i++)
                if (loss[i] > lmax) lmax = loss[i];
            out->found = 1;
            out->onset = k;
            out->peak = p;
            out->end = e;
            out->rho_onset = rho[k];
            out->rho_peak = rho[p];
            out->loss_onset = loss[lo];
            out->loss_peak = lmax;
            out->wnorm_onset = wnorm[k];
            out->wnorm_end = wnorm[e];
            return BN_OK;
        }
        k = p - 1; /* jitter: continue after this small edge */
        fell = 0;
    }
    return BN_OK;
}
