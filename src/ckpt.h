/* Checkpoint files (issue 6): the full state of a run or sweep, written
 * atomically and read back strictly in the order it was written.
 *
 * Layout (little-endian):
 *   "BNSPIKE-CKPT" u32 format   u64 data checksum   u64 section count
 *   sections: char tag[24] (NUL-padded)  u64 bytes  payload (zero-padded to 8)
 *   u64 FNV-1a 64 of everything before it
 * The first section is always "config": the configuration as "key=value\n"
 * lines, compared line by line on resume so a refusal names what differs.
 * Modules save their state as consecutive sections (bn_sim_ckpt_save, ...) and
 * load them back in the same order; a tag or size that does not match what the
 * loader expects is a format error, never a silent misread. */
#ifndef BN_CKPT_H
#define BN_CKPT_H

#include "internal.h"

#include <stddef.h>
#include <stdint.h>

#define BN_CKPT_FORMAT 1u

typedef struct bn_ckpt bn_ckpt;

/* A checkpoint being assembled in memory. */
bn_status bn_ckpt_create(const char *config_text, uint64_t data_checksum, bn_ckpt **out);
bn_status bn_ckpt_put(bn_ckpt *c, const char *tag, const void *data, size_t bytes);
bn_status bn_ckpt_put_i64(bn_ckpt *c, const char *tag, int64_t v);
/* Writes it to path atomically (temp file in the same folder, fsync, rename). */
bn_status bn_ckpt_write(const bn_ckpt *c, const char *path);

/* Reads and verifies a checkpoint file (magic, format, length, checksum),
 * then checks that it was written for this configuration and data. */
bn_status bn_ckpt_open(const char *path, const char *config_text, uint64_t data_checksum,
                       bn_ckpt **out);
/* The next section: its tag must be `tag` and its size exactly `bytes`. */
bn_status bn_ckpt_get(bn_ckpt *c, const char *tag, void *data, size_t bytes);
bn_status bn_ckpt_get_i64(bn_ckpt *c, const char *tag, int64_t *v);
/* The next section, of any size: a pointer into the checkpoint (valid until
 * bn_ckpt_free) and its size. */
bn_status bn_ckpt_get_any(bn_ckpt *c, const char *tag, const void **data, size_t *bytes);
/* Whether the next section is `tag` (for optional sections). */
int bn_ckpt_next_is(const bn_ckpt *c, const char *tag);
const char *bn_ckpt_path(const bn_ckpt *c);
void bn_ckpt_free(bn_ckpt *c);

/* FNV-1a 64, for configuration lines that summarize arrays. */
uint64_t bn_fnv1a64(uint64_t h, const void *p, size_t len);
#define BN_FNV_OFFSET 0xcbf29ce484222325ULL

/* A growable "key=value\n" text for bn_ckpt_create. */
typedef struct bn_cfgtext {
    char *s;
    size_t len, cap;
    int failed;
} bn_cfgtext;
void bn_cfgtext_add(bn_cfgtext *t, const char *fmt, ...) BN_PRINTF(2, 3);
/* key=<count>:<fnv of the bytes> for an array (or key=none). */
void bn_cfgtext_array(bn_cfgtext *t, const char *key, const void *p, size_t count, size_t elem);
/* The caller's own "key=value\n" lines (NULL or "" adds nothing). */
void bn_cfgtext_lines(bn_cfgtext *t, const char *lines);
void bn_cfgtext_free(bn_cfgtext *t);
/* The sharpness settings of cfg (sharpness_every, and the rest when it is on). */
void bn_cfgtext_sharpness(bn_cfgtext *t, const bn_run_config *cfg);

/* Each module's share of a checkpoint: its state as consecutive sections,
 * loaded back into an object created with the same configuration. */
bn_status bn_events_ckpt_save(const bn_events *ev, bn_ckpt *c);
bn_status bn_events_ckpt_load(bn_events *ev, bn_ckpt *c);
bn_status bn_recorder_ckpt_save(const bn_recorder *rec, bn_ckpt *c);
bn_status bn_recorder_ckpt_load(bn_recorder *rec, bn_ckpt *c);
/* The sim's state between two blocks: the next step, (W, γ) in the backend's
 * precision, divergence steps, records so far, sharpness records and wall time. */
bn_status bn_sim_ckpt_save(bn_sim *sim, bn_ckpt *c);
/* Before bn_sim_run*: the run continues from the saved step. */
bn_status bn_sim_ckpt_load(bn_sim *sim, bn_ckpt *c);
/* The sim's configuration as "key=value" lines (per-trajectory arrays as hashes). */
void bn_sim_ckpt_config(const bn_sim *sim, bn_cfgtext *t);
void bn_recorder_ckpt_config(const bn_recorder *rec, bn_cfgtext *t);
void bn_events_ckpt_config(const bn_events *ev, bn_cfgtext *t);
/* Called between blocks at every multiple of `every` steps (0: never) and,
 * with stopping = 1, when the progress callback stopped the run: a
 * consistent point to save at.  A non-OK status stops the run. */
typedef bn_status (*bn_sim_ckpt_hook)(void *user, bn_sim *sim, int64_t step, int stopping);
void bn_sim_set_ckpt_hook(bn_sim *sim, int64_t every, bn_sim_ckpt_hook hook, void *user);

#endif
