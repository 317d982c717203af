/* Checkpointed runs (bnspike.h, bn_recorder_run_checkpointed): the sim calls
 * back between blocks; each checkpoint holds the configuration, the sim's
 * state and the recorder's (with the spike detector's). */
#include "ckpt.h"
#include "recorder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    bn_recorder *rec;
    bn_checkpoint_config *ck;
    const char *config;
    uint64_t checksum;
} run_hook;

static bn_status build_config(const bn_sim *sim, const bn_recorder *rec, const char *extra, bn_cfgtext *t)
{
    bn_cfgtext_add(t, "kind=run");
    bn_sim_ckpt_config(sim, t);
    bn_recorder_ckpt_config(rec, t);
    bn_cfgtext_lines(t, extra);
    if (t->failed) return bn_fail(BN_ERR_NOMEM, "cannot describe the configuration for the checkpoint");
    return BN_OK;
}

static bn_status write_checkpoint(void *user, bn_sim *sim, int64_t step, int stopping)
{
    (void)step;
    (void)stopping;
    run_hook *h = user;
    bn_ckpt *c = NULL;
    bn_status st = bn_ckpt_create(h->config, h->checksum, &c);
    if (!st) st = bn_sim_ckpt_save(sim, c);
    if (!st) st = bn_recorder_ckpt_save(h->rec, c);
    if (!st) st = bn_ckpt_write(c, h->ck->path);
    bn_ckpt_free(c);
    if (!st) h->ck->written++;
    return st;
}

bn_status bn_recorder_run_checkpointed(bn_recorder *rec, bn_sim *sim, const bn_dataset *ds,
                                       bn_progress_fn progress, void *user, bn_checkpoint_config *ck)
{
    if (!ck || (!ck->path && !ck->resume)) return bn_recorder_run(rec, sim, progress, user);
    if (ck->every < 0) return bn_fail(BN_ERR_ARG, "checkpoint every must be >= 0 (got %lld)", (long long)ck->every);
    if (bn_sim_seeds(sim) != bn_events_trajectories(bn_recorder_events(rec)))
        return bn_fail(BN_ERR_ARG, "the recorder and the sim have different trajectory counts");
    bn_cfgtext cfg = {0};
    bn_status st = build_config(sim, rec, ck->extra, &cfg);
    run_hook h = {.rec = rec, .ck = ck, .config = cfg.s, .checksum = bn_dataset_checksum(ds)};
    ck->resumed_step = 0;
    ck->written = 0;
    if (!st && ck->resume) {
        bn_ckpt *c = NULL;
        st = bn_ckpt_open(ck->resume, cfg.s, h.checksum, &c);
        if (!st) st = bn_sim_ckpt_load(sim, c);
        if (!st) st = bn_recorder_ckpt_load(rec, c);
        bn_ckpt_free(c);
        if (!st) ck->resumed_step = bn_sim_next_step(sim);
    }
    if (!st) {
        if (ck->path) bn_sim_set_ckpt_hook(sim, ck->every, write_checkpoint, &h);
        bn_recorder_set_offset(rec, 0);
        st = bn_sim_run_observed(sim, progress, user, bn_recorder_observer, rec);
        bn_sim_set_ckpt_hook(sim, 0, NULL, NULL);
    }
    if (!st) st = bn_recorder_batch_done(rec, sim, 0);
    if (!st) st = bn_recorder_finish(rec);
    else if (st == BN_ERR_INTERRUPTED) {
        /* Partial outputs: the rows so far, events closed where the run stopped. */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", bn_last_error());
        bn_status fs = bn_recorder_batch_done(rec, sim, 0);
        if (!fs) fs = bn_recorder_finish(rec);
        if (fs) st = fs;
        else bn_fail(BN_ERR_INTERRUPTED, "%s", msg);
    }
    bn_cfgtext_free(&cfg);
    return st;
}
