/* Pieces shared by the commands that take run-like options (run, sweep,
 * theory): the data / model / start /
 * execution / event options, number parsing that names the command, output
 * folders, a growable text buffer and the common parts of run.json. */
#ifndef BN_CLI_COMMON_H
#define BN_CLI_COMMON_H

#include "cli.h"
#include "json.h"

#include <getopt.h>

/* Option codes of the shared options (commands number theirs from CO_END). */
enum {
    CO_X = 1000, CO_Y, CO_CSV, CO_DATA, CO_LOSS, CO_ETA_W, CO_ETA_G, CO_GAMMA0, CO_STEPS, CO_SEEDS,
    CO_SEED, CO_W0_SCALE, CO_W0_ALIGN, CO_W0_NOISE, CO_W0, CO_NO_PROJECT, CO_REF, CO_PREC,
    CO_BACKEND, CO_DEVICE, CO_THREADS, CO_EVERY, CO_OUT, CO_QUIET, CO_MIN_RISE, CO_END_FACTOR,
    CO_FLOOR_FACTOR, CO_EVENT_RHO, CO_WINDOW_PRE, CO_WINDOW_POST, CO_CKPT_EVERY, CO_RESUME, CO_END
};

typedef struct {
    bn_run_config cfg;
    bn_event_params ev;
    const char *x, *y, *csv, *data, *w0, *ref;
    int seeds_given, every_given;
    const char *out_dir;
    int out_given;
    int quiet;
    int64_t ckpt_every;  /* --checkpoint-every N (0: only when stopped by a signal) */
    const char *resume;  /* --resume DIR                                          */
    char data_desc[1200];
} cli_opts;

void cli_opts_init(cli_opts *o, const char *default_out);
/* dst receives the shared options, then `extra` (terminated by a zero entry),
 * then the terminator; returns the count written (without the terminator). */
size_t cli_build_options(struct option *dst, size_t cap, const struct option *extra);
/* Handles one shared option: 0 when handled, -1 when `opt` is not a shared
 * option, else an exit code (usage error already printed). */
int cli_common_option(const char *cmd, int opt, const char *arg, cli_opts *o);
/* After parsing: exactly one data source; fills data_desc. */
int cli_check_data(const char *cmd, cli_opts *o);
bn_status cli_load_dataset(const cli_opts *o, bn_dataset **ds);
/* --w0 (d or S×d) and --ref (d or "none") into o->cfg; arrays live until freed. */
int cli_load_vectors(cli_opts *o, int64_t d, bn_array *w0, bn_array *ref);

int cli_num_i64(const char *cmd, const char *opt, const char *s, int64_t lo, int64_t *out);
int cli_num_double(const char *cmd, const char *opt, const char *s, double *out);

/* mkdir -p; prints the problem and returns EXIT_RUN_FAILED on failure. */
int cli_make_dirs(const char *path);

/* A growable text buffer. */
typedef struct {
    char *buf;
    size_t len, cap;
    int failed;
} cli_text;
void cli_text_printf(cli_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cli_text_free(cli_text *t);
/* A CSV number: %.17g, "nan"/"inf"/"-inf" for the others. */
void cli_text_num(cli_text *t, double v);
/* Writes t atomically to dir/name; reports and returns EXIT_RUN_FAILED on failure. */
int cli_text_write(const cli_text *t, const char *dir, const char *name);

/* run.json pieces: tool, version, git commit, time and command line; the data
 * object; the reference diagnostics; the event parameters. */
void cli_json_header(json_out *j, int argc, char **argv, const char *cmd);
void cli_json_data(json_out *j, const cli_opts *o, const bn_dataset *ds);
void cli_json_reference(json_out *j, const bn_ref_info *r, int skipped);
void cli_json_events(json_out *j, const bn_event_params *p, bn_precision prec);
void cli_json_config(json_out *j, const bn_run_config *c);

/* The event definitions and flags, for --help texts. */
extern const char cli_events_help[];
/* The shared option lines for --help texts. */
extern const char cli_data_help[];

/* A `run` (or `demo`) request: the options plus the command line for run.json. */
typedef struct {
    cli_opts o;
    int argc;
    char **argv;
    int partial;          /* stopped by a signal: the outputs cover steps so far */
    int64_t stopped_step, resumed_step;
} cli_run;

/* Checkpoints and resource checks shared by run and sweep (checkpoint.c). */
/* Where a command writes its checkpoint (OUT/checkpoint.bnck) and, with
 * --resume DIR, reads one (DIR/checkpoint.bnck; "" without --resume). */
typedef struct {
    char write[4200], read[4200];
} cli_ckpt_paths;
/* Fills p; with --resume DIR the output folder defaults to DIR and the
 * checkpoint must exist there.  Returns 0 or an exit code (message printed). */
int cli_resume_setup(const char *cmd, cli_opts *o, cli_ckpt_paths *p);
/* The library's checkpoint settings for these paths and options. */
bn_checkpoint_config cli_checkpoint_config(const cli_opts *o, const cli_ckpt_paths *p, const char *extra);
/* Creates the output folder, checks that it is writable and that its file
 * system has room for about `bytes` of outputs (plus checkpoints); 0 or an
 * exit code (message printed, nothing written). */
int cli_prepare_output(const char *dir, double bytes, const char *what, int *created);
/* After a failed request: removes the output folder if this run created it
 * and it is still empty, so a failure leaves nothing behind. */
void cli_output_discard(const char *dir, int created);
/* Removes a finished run's checkpoint (its outputs are complete). */
void cli_checkpoint_remove(const char *path);

/* Writes trajectories.npz (the recorder's adaptive records and events, the
 * sim's final state) and run.json into o.out_dir (created if needed), each
 * file atomically. */
int cli_write_outputs(const cli_run *run, const bn_dataset *ds, const bn_sim *sim, const bn_recorder *rec);

int cmd_sweep(int argc, char **argv);
int cmd_theory(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_data(int argc, char **argv);

#endif
