/* Library-internal side of the spike detector (bnspike.h, "sweeps, events,
 * theory"): what one step changed, for the adaptive recorder. */
#ifndef BN_EVENTS_INTERNAL_H
#define BN_EVENTS_INTERNAL_H


#include "internal.h"

enum {
    BN_EVF_CAND_START = 1, /* a rising edge opened; its onset is the previous step */
    BN_EVF_CAND_DROP = 2,  /* it ended below min_rise: jitter, forgotten          */
    BN_EVF_CONFIRMED = 4,  /* it reached min_rise: a spike                         */
    BN_EVF_CLOSED = 8,     /* a spike's window closed (end reached or superseded)  */
    BN_EVF_DIVERGED = 16   /* this step is the first non-finite one                */
};

/* bn_events_feed, returning the BN_EVF_* flags of the step, or -status on a bad
 * call (error set).  *onset (optional) receives the open edge's onset step or -1. */
int bn_events_feed_flags(bn_events *ev, int64_t j, int64_t step, const bn_event_input *in,
                         int64_t *onset);
/* Whether trajectory j is inside an open rising edge (confirmed or not). */
int bn_events_edge_open(const bn_events *ev, int64_t j);

/* Field indices of the sim's record fields that the detector reads (-1: absent). */
typedef struct {
    int rho, loss, eta_eff, w_norm, alpha_sigma, beta_sigma, sharpness, sharpness_weighted;
} bn_event_fields;
void bn_event_fields_lookup(bn_event_fields *f, int use_rho_sigma);
void bn_event_input_from_fields(const bn_event_fields *f, const double *const *fields, int64_t j,
                                bn_event_input *in);

/* The κ rule of one state: κ, its threshold 2cosθ/cos2θ and the predicted
 * one-step factor of ρ (NaN where unknown). */
void bn_kappa_rule(double kappa_scale, const bn_event_input *in, double *kappa, double *threshold,
                   double *rise_pred);

/* bn_events_finish for trajectories j0 .. j0+count-1 only (a sweep's batch). */
void bn_events_finish_range(bn_events *ev, int64_t j0, int64_t count);

/* bn_theory_data_compute with κ's scale B already known (NaN: compute it). */
bn_status bn_theory_data_compute_b(const bn_dataset *ds, double B, bn_theory_data *out);

#endif
