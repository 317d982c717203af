/* Preparation of a run that needs host-side linear algebra: the reference
 * direction and the start w0.  Kept apart from the driver so sim.c only
 * orchestrates. */
#ifndef BN_SIM_SETUP_H
#define BN_SIM_SETUP_H

#include "internal.h"
#include "linalg.h"

/* w_ref (d) from cfg->w_ref or bn_reference_direction; ehat = w_ref/‖w_ref‖ (d);
 * uhat = Xc·ehat/‖Xc·ehat‖ (n).  With cfg->skip_reference all three are zero.
 * xc: n×d row-major centered data. */
bn_status bn_setup_reference(const bn_dataset *ds, const bn_run_config *cfg, const double *xc,
                             double *w_ref, bn_ref_info *info, double *ehat, double *uhat);
/* Projects each row of w0 (S×d) on the row space rs of the data. */
bn_status bn_setup_project_rowspace(const bn_la_rowspace *rs, double *w0, int64_t S);
/* Refuses a start with Xc·w0 = 0 (the model is undefined there). */
bn_status bn_setup_check_w0(const double *xc, int64_t n, int64_t d, const double *w0, int64_t S);

#endif
