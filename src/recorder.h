/* Library-internal side of the adaptive recorder (bnspike.h, bn_recorder). */
#ifndef BN_RECORDER_INTERNAL_H
#define BN_RECORDER_INTERNAL_H

#include "events_internal.h"

/* A recorder for S trajectories of T steps; kappa_scale as for the detector.
 * The observer maps column c of each call to trajectory offset + c, so one
 * recorder serves a sweep's batches (bn_recorder_set_offset between them). */
bn_status bn_recorder_create_raw(int64_t S, int64_t T, bn_precision precision, double kappa_scale,
                                 const bn_recorder_config *rc, bn_recorder **out);
void bn_recorder_set_offset(bn_recorder *rec, int64_t offset);
bn_events *bn_recorder_events_mut(bn_recorder *rec);
/* After a sim of the recorder's columns offset .. offset+S-1 has run: closes
 * their events, attaches sharpness at onset and keeps their sharpness records
 * on the regular schedule and inside the spike windows. */
bn_status bn_recorder_batch_done(bn_recorder *rec, const bn_sim *sim, int64_t offset);

#endif
