/* Checkpoint and resume (issue 6): a run stopped at any step and continued
 * from its checkpoint equals the uninterrupted run bit for bit; checkpoints of
 * another configuration, other data, or damaged files are refused with a
 * message that names the problem. */
#include "test_support.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    bn_dataset *ds;
    bn_sim *sim;
    bn_recorder *rec;
} run_objs;

static void make_run(run_objs *r, const bn_run_config *cfg, const bn_dataset *ds)
{
    bn_run_config c = *cfg;
    c.every = c.steps; /* as the CLI: the recorder keeps the records */
    cr_assert_eq(bn_sim_create(ds, &c, &r->sim), BN_OK, "%s", bn_last_error());
    bn_recorder_config rc = {.every = cfg->every, .keep = 1};
    bn_event_params_default(&rc.events);
    cr_assert_eq(bn_recorder_create(ds, cfg, r->sim, &rc, NAN, &r->rec), BN_OK, "%s", bn_last_error());
}

static void free_run(run_objs *r)
{
    bn_recorder_free(r->rec);
    bn_sim_free(r->sim);
}

static int stop_at(void *user, int64_t step, int64_t steps)
{
    (void)steps;
    return step >= *(const int64_t *)user;
}

/* Every record array, the events and the final state must be identical bits. */
static void assert_same_run(const run_objs *a, const run_objs *b)
{
    for (int f = 0; f < bn_sim_n_fields(); f++) {
        const double *x, *y;
        int64_t r1, c1, r2, c2;
        const char *name = bn_sim_field_name(f);
        cr_assert_eq(bn_recorder_field(a->rec, name, &x, &r1, &c1), BN_OK);
        cr_assert_eq(bn_recorder_field(b->rec, name, &y, &r2, &c2), BN_OK);
        cr_assert(r1 == r2 && c1 == c2, "%s: shape %lldx%lld vs %lldx%lld", name, (long long)r1, (long long)c1,
                  (long long)r2, (long long)c2);
        cr_assert(memcmp(x, y, (size_t)(r1 * c1) * sizeof(double)) == 0, "%s differs after the resume", name);
    }
    const bn_events *ea = bn_recorder_events(a->rec), *eb = bn_recorder_events(b->rec);
    int64_t S = bn_sim_seeds(a->sim);
    for (int64_t j = 0; j < S; j++) {
        cr_assert_eq(bn_events_count(ea, j), bn_events_count(eb, j));
        for (int64_t k = 0; k < bn_events_count(ea, j); k++)
            cr_assert(memcmp(bn_events_get(ea, j, k), bn_events_get(eb, j, k), sizeof(bn_spike_event)) == 0,
                      "event %lld of trajectory %lld differs", (long long)k, (long long)j);
        cr_assert(memcmp(bn_events_summary(ea, j), bn_events_summary(eb, j), sizeof(bn_traj_summary)) == 0);
    }
    cr_assert_eq(bn_sim_n_sharpness_arrays(a->sim), bn_sim_n_sharpness_arrays(b->sim));
    for (int i = 0; i < bn_sim_n_sharpness_arrays(a->sim); i++) {
        bn_sim_array x, y;
        cr_assert_eq(bn_sim_sharpness_array(a->sim, i, &x), BN_OK);
        cr_assert_eq(bn_sim_sharpness_array(b->sim, i, &y), BN_OK);
        int64_t len = x.shape[0] * (x.ndim > 1 ? x.shape[1] : 1) * (x.ndim > 2 ? x.shape[2] : 1);
        cr_assert(memcmp(x.f64 ? (const void *)x.f64 : (const void *)x.i64,
                         y.f64 ? (const void *)y.f64 : (const void *)y.i64, (size_t)len * 8) == 0,
                  "sharpness array %s differs after the resume", x.name);
    }
    int64_t d = bn_sim_dim(a->sim);
    cr_assert(memcmp(bn_sim_w_final(a->sim), bn_sim_w_final(b->sim), (size_t)(S * d) * sizeof(double)) == 0);
    cr_assert(memcmp(bn_sim_gamma_final(a->sim), bn_sim_gamma_final(b->sim), (size_t)S * sizeof(double)) == 0);
    cr_assert(memcmp(bn_sim_diverged_step(a->sim), bn_sim_diverged_step(b->sim), (size_t)S * sizeof(int64_t)) == 0);
}

static bn_backend_kind g_backend = BN_BACKEND_CPU;
static int64_t g_sharpness_every = 0;

static void demo_setup(bn_run_config *cfg, bn_dataset **ds, bn_precision prec)
{
    ts_demo_config(cfg, g_backend);
    cfg->steps = 150;
    cfg->every = 7;
    cfg->seeds = 3;
    cfg->precision = prec;
    cfg->threads = 1;
    cfg->sharpness_every = g_sharpness_every;
    cr_assert_eq(bn_dataset_generate(TS_DEMO_SPEC, cfg->loss, ds), BN_OK);
}

/* Stops at `stop`, resumes into fresh objects, compares with the whole run. */
static void stop_and_resume(bn_precision prec, int64_t every, int64_t stop)
{
    bn_run_config cfg;
    bn_dataset *ds;
    demo_setup(&cfg, &ds, prec);
    char *dir = ts_tmpdir(), path[512];
    snprintf(path, sizeof path, "%s/ck.bnck", dir);

    run_objs whole, first, second;
    make_run(&whole, &cfg, ds);
    cr_assert_eq(bn_recorder_run(whole.rec, whole.sim, NULL, NULL), BN_OK, "%s", bn_last_error());

    make_run(&first, &cfg, ds);
    bn_checkpoint_config ck = {.path = path, .every = every, .extra = "test=1"};
    bn_status st = bn_recorder_run_checkpointed(first.rec, first.sim, ds, stop_at, &stop, &ck);
    cr_assert_eq(st, BN_ERR_INTERRUPTED, "%s", bn_last_error());
    cr_assert_geq(ck.written, 1);
    int64_t stopped = bn_sim_next_step(first.sim);
    cr_assert_geq(stopped, stop);

    make_run(&second, &cfg, ds);
    bn_checkpoint_config ck2 = {.path = path, .every = every, .resume = path, .extra = "test=1"};
    st = bn_recorder_run_checkpointed(second.rec, second.sim, ds, NULL, NULL, &ck2);
    cr_assert_eq(st, BN_OK, "%s", bn_last_error());
    cr_assert_eq(ck2.resumed_step, stopped);
    assert_same_run(&whole, &second);

    free_run(&whole);
    free_run(&first);
    free_run(&second);
    bn_dataset_free(ds);
    ts_rmdir(dir);
    free(dir);
}

/* The demo spikes between steps 15 and 45: stops before, inside and after. */
Test(checkpoint, resume_fp64_before_spike) { stop_and_resume(BN_FP64, 5, 10); }
Test(checkpoint, resume_fp64_inside_edge) { stop_and_resume(BN_FP64, 3, 24); }
Test(checkpoint, resume_fp64_after_spike) { stop_and_resume(BN_FP64, 45, 90); }
Test(checkpoint, resume_fp32_inside_edge) { stop_and_resume(BN_FP32, 4, 30); }

/* With sharpness records: the warm starts and records so far come back too. */
Test(checkpoint, resume_with_sharpness)
{
    g_sharpness_every = 5;
    stop_and_resume(BN_FP64, 10, 27);
    stop_and_resume(BN_FP32, 7, 40);
    g_sharpness_every = 0;
}

#ifdef BN_HAVE_CUDA
#include "cuda/bn_cuda_extra.h"
#endif
/* The same on the GPU: (W, γ) go back in the backend's own precision. */
static void require_gpu(void)
{
#ifdef BN_HAVE_CUDA
    if (bn_cuda_device_count() > 0) return;
#endif
    cr_skip_test("skipped: no CUDA device");
}
Test(cuda, checkpoint_resume_bitwise)
{
    require_gpu();
    g_backend = BN_BACKEND_CUDA;
    stop_and_resume(BN_FP64, 3, 24);
    stop_and_resume(BN_FP32, 10, 40);
    g_sharpness_every = 5;
    stop_and_resume(BN_FP64, 10, 27);
    g_sharpness_every = 0;
    g_backend = BN_BACKEND_CPU;
}

/* A chain of three stops, each resumed from the previous checkpoint. */
Test(checkpoint, three_stops_chain)
{
    bn_run_config cfg;
    bn_dataset *ds;
    demo_setup(&cfg, &ds, BN_FP64);
    char *dir = ts_tmpdir(), path[512];
    snprintf(path, sizeof path, "%s/ck.bnck", dir);
    run_objs whole;
    make_run(&whole, &cfg, ds);
    cr_assert_eq(bn_recorder_run(whole.rec, whole.sim, NULL, NULL), BN_OK);
    int64_t stops[] = {17, 33, 101};
    run_objs r[4];
    for (int k = 0; k < 4; k++) {
        make_run(&r[k], &cfg, ds);
        bn_checkpoint_config ck = {.path = path, .every = 10, .resume = k ? path : NULL};
        bn_status st = bn_recorder_run_checkpointed(r[k].rec, r[k].sim, ds, k < 3 ? stop_at : NULL,
                                                    k < 3 ? &stops[k] : NULL, &ck);
        cr_assert_eq(st, k < 3 ? BN_ERR_INTERRUPTED : BN_OK, "leg %d: %s", k, bn_last_error());
    }
    assert_same_run(&whole, &r[3]);
    free_run(&whole);
    for (int k = 0; k < 4; k++) free_run(&r[k]);
    bn_dataset_free(ds);
    ts_rmdir(dir);
    free(dir);
}

/* Writes a checkpoint at step 20 of the demo; returns its folder. */
static char *checkpoint_at_20(char *path, size_t cap)
{
    bn_run_config cfg;
    bn_dataset *ds;
    demo_setup(&cfg, &ds, BN_FP64);
    char *dir = ts_tmpdir();
    snprintf(path, cap, "%s/ck.bnck", dir);
    run_objs r;
    make_run(&r, &cfg, ds);
    int64_t stop = 20;
    bn_checkpoint_config ck = {.path = path, .every = 10, .extra = "test=1"};
    cr_assert_eq(bn_recorder_run_checkpointed(r.rec, r.sim, ds, stop_at, &stop, &ck), BN_ERR_INTERRUPTED);
    free_run(&r);
    bn_dataset_free(ds);
    return dir;
}

/* Resumes from path with cfg/data changed by `change`; returns the status. */
static bn_status try_resume(const char *path, int change, const char *extra)
{
    bn_run_config cfg;
    bn_dataset *ds;
    demo_setup(&cfg, &ds, BN_FP64);
    if (change == 1) cfg.eta_w = 0.8;
    if (change == 2) {
        bn_dataset_free(ds);
        cr_assert_eq(bn_dataset_generate("whitened:n=400,d=20,noise=0.5,wnorm=4,seed=2", cfg.loss, &ds), BN_OK);
    }
    if (change == 3) cfg.steps = 151;
    run_objs r;
    make_run(&r, &cfg, ds);
    bn_checkpoint_config ck = {.path = path, .resume = path, .extra = extra};
    bn_status st = bn_recorder_run_checkpointed(r.rec, r.sim, ds, NULL, NULL, &ck);
    free_run(&r);
    bn_dataset_free(ds);
    return st;
}

Test(checkpoint, refuses_other_configuration)
{
    char path[512];
    char *dir = checkpoint_at_20(path, sizeof path);
    cr_assert_eq(try_resume(path, 1, "test=1"), BN_ERR_ARG);
    cr_assert(strstr(bn_last_error(), "different configuration") && strstr(bn_last_error(), "eta_w"),
              "message: %s", bn_last_error());
    cr_assert_eq(try_resume(path, 3, "test=1"), BN_ERR_ARG);
    cr_assert(strstr(bn_last_error(), "steps=150") && strstr(bn_last_error(), "steps=151"), "message: %s",
              bn_last_error());
    cr_assert_eq(try_resume(path, 0, "test=2"), BN_ERR_ARG);
    cr_assert(strstr(bn_last_error(), "test=2"), "message: %s", bn_last_error());
    cr_assert_eq(try_resume(path, 2, "test=1"), BN_ERR_ARG);
    cr_assert(strstr(bn_last_error(), "different data"), "message: %s", bn_last_error());
    cr_assert_eq(try_resume(path, 0, "test=1"), BN_OK, "%s", bn_last_error()); /* the control */
    ts_rmdir(dir);
    free(dir);
}

static void rewrite(const char *path, long offset, int truncate_to)
{
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    if (truncate_to) {
        fclose(f);
        cr_assert_eq(truncate(path, truncate_to), 0);
        return;
    }
    fseek(f, offset, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, offset, SEEK_SET);
    fputc(ch ^ 0x40, f);
    fclose(f);
}

Test(checkpoint, refuses_damaged_files)
{
    char path[512];
    char *dir = checkpoint_at_20(path, sizeof path);
    char copy[1200];
    snprintf(copy, sizeof copy, "cp %s %s.orig", path, path);
    cr_assert_eq(system(copy), 0);
    rewrite(path, 4000, 0); /* a flipped bit inside the state */
    cr_assert_eq(try_resume(path, 0, "test=1"), BN_ERR_FORMAT);
    cr_assert(strstr(bn_last_error(), "corrupt"), "message: %s", bn_last_error());
    snprintf(copy, sizeof copy, "cp %s.orig %s", path, path);
    cr_assert_eq(system(copy), 0);
    rewrite(path, 0, 3000); /* cut short, as by a full disk without the atomic rename */
    cr_assert_eq(try_resume(path, 0, "test=1"), BN_ERR_FORMAT);
    cr_assert(strstr(bn_last_error(), "corrupt"), "message: %s", bn_last_error());
    rewrite(path, 0, 10); /* not even a header */
    cr_assert_eq(try_resume(path, 0, "test=1"), BN_ERR_FORMAT);
    cr_assert(strstr(bn_last_error(), "not a bnspike checkpoint"), "message: %s", bn_last_error());
    snprintf(copy, sizeof copy, "cp %s.orig %s", path, path);
    cr_assert_eq(system(copy), 0);
    cr_assert_eq(try_resume(path, 0, "test=1"), BN_OK, "%s", bn_last_error());
    ts_rmdir(dir);
    free(dir);
}

/* ------------------------------------------------------- the command line */

#define RUN_ARGS                                                                                   \
    "--data whitened:n=400,d=20,noise=0.5,wnorm=4,seed=1 --steps 2000 --seeds 256 --every 10 "    \
    "--w0-scale 0.5 --w0-align 1 --w0-noise 0.05 --backend cpu --threads 1"

/* kill -9 at three random points, resuming each time: every output file the
 * same bytes as an uninterrupted run (tests/kill_resume.sh). */
static void kill9_three_times(const char *mode, const char *args)
{
    char *dir = ts_tmpdir(), cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd, "bash tests/kill_resume.sh %s %s %s %s", ts_cli(), mode, dir, args);
    int rc = ts_run(cmd, &out);
    cr_assert_eq(rc, 0, "kill_resume.sh: %s", out);
    cr_assert(strstr(out, "identical after 3 kills"), "%s", out);
    free(out);
    ts_rmdir(dir);
    free(dir);
}

Test(checkpoint, cli_kill9_three_times_run, .timeout = 300) { kill9_three_times("run", RUN_ARGS); }

/* SIGINT: exit 130, valid partial outputs marked partial, a checkpoint; the
 * resumed run's outputs equal the uninterrupted run's. */
Test(checkpoint, cli_sigint_partial_then_resume, .timeout = 300)
{
    char *dir = ts_tmpdir(), cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "%s run " RUN_ARGS " --quiet --out %s/ref >/dev/null && "
             "(%s run " RUN_ARGS " --out %s/int --checkpoint-every 500 & p=$!; sleep 0.6; kill -INT $p; wait $p; "
             "echo \"exit=$?\")",
             ts_cli(), dir, ts_cli(), dir);
    cr_assert_eq(ts_run(cmd, &out), 0, "%s", out);
    cr_assert(strstr(out, "exit=130"), "expected exit 130: %s", out);
    cr_assert(strstr(out, "--resume"), "the message should say how to continue: %s", out);
    free(out);
    if (ts_have_numpy()) {
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 -c \"import json,numpy as np; j=json.load(open('%s/int/run.json')); "
                 "z=np.load('%s/int/trajectories.npz'); assert j['partial'] is True, j; "
                 "t=j['stopped_at_step']; assert 0 < t < 2000, t; "
                 "assert np.nanmax(z['step']) < t, (np.nanmax(z['step']), t); print('partial ok', t)\"",
                 dir, dir);
        cr_assert_eq(ts_run(cmd, &out), 0, "%s", out);
        free(out);
    }
    snprintf(cmd, sizeof cmd, "%s run " RUN_ARGS " --quiet --resume %s/int && cmp %s/ref/trajectories.npz %s/int/trajectories.npz "
             "&& test ! -e %s/int/checkpoint.bnck && grep -q '\"partial\": false' %s/int/run.json",
             ts_cli(), dir, dir, dir, dir, dir);
    cr_assert_eq(ts_run(cmd, &out), 0, "%s", out);
    free(out);
    ts_rmdir(dir);
    free(dir);
}

Test(checkpoint, cli_resume_refusals)
{
    char *dir = ts_tmpdir(), cmd[4096], *out = NULL;
    /* Nothing to resume from. */
    snprintf(cmd, sizeof cmd, "%s run " RUN_ARGS " --steps 50 --quiet --resume %s/none", ts_cli(), dir);
    int rc = ts_run(cmd, &out);
    cr_assert(rc != 0 && strstr(out, "no checkpoint there"), "rc %d: %s", rc, out);
    free(out);
    /* A checkpoint of 2000 steps, resumed as 2500: refused, naming steps. */
    snprintf(cmd, sizeof cmd,
             "%s run " RUN_ARGS " --out %s/a --checkpoint-every 100 & p=$!; sleep 0.5; kill -TERM $p; wait $p; "
             "echo \"exit=$?\"",
             ts_cli(), dir);
    cr_assert_eq(ts_run(cmd, &out), 0, "%s", out);
    cr_assert(strstr(out, "exit=143"), "expected exit 143 after SIGTERM: %s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s run " RUN_ARGS " --steps 2500 --quiet --resume %s/a", ts_cli(), dir);
    rc = ts_run(cmd, &out);
    cr_assert(rc == 1 && strstr(out, "different configuration") && strstr(out, "steps=2000"), "rc %d: %s", rc, out);
    free(out);
    ts_rmdir(dir);
    free(dir);
}

/* Resource refusals come before anything is allocated or written. */
#if defined(__SANITIZE_ADDRESS__)
#define TS_ASAN 1 /* ASan maps terabytes of shadow memory: no ulimit -v */
#else
#define TS_ASAN 0
#endif
Test(checkpoint, cli_memory_and_disk_refusals, .timeout = 120)
{
    char *dir = ts_tmpdir(), cmd[4096], *out = NULL;
    int rc;
    if (TS_ASAN) {
        fprintf(stderr, "[note] cli_memory_and_disk_refusals: the ulimit -v check is skipped under ASan\n");
        goto disk;
    }
    /* ~9 GiB of records under a 3 GiB address-space limit. */
    snprintf(cmd, sizeof cmd,
             "ulimit -v 3000000; %s run --data whitened:n=400,d=20,seed=1 --steps 2000 --seeds 20000 --every 1 "
             "--backend cpu --quiet --out %s/mem",
             ts_cli(), dir);
    rc = ts_run(cmd, &out);
    cr_assert(rc == 1 && strstr(out, "of host memory") && strstr(out, "ulimit -v"), "rc %d: %s", rc, out);
    free(out);
disk:
    /* A file-size limit: the write fails with a message, no file is left. */
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/fs && echo keep > %s/fs/trajectories.npz && (ulimit -f 1000; %s run " RUN_ARGS
             " --quiet --out %s/fs) 2>&1; echo \"exit=$?\"; cat %s/fs/trajectories.npz; ls -A %s/fs",
             dir, dir, ts_cli(), dir, dir, dir);
    cr_assert_eq(ts_run(cmd, &out), 0, "%s", out);
    cr_assert(strstr(out, "exit=1") && strstr(out, "File too large"), "%s", out);
    cr_assert(strstr(out, "keep"), "the previous output must survive: %s", out);
    cr_assert(!strstr(out, ".tmp."), "no temporary file may be left: %s", out);
    free(out);
    /* A 1 MiB file system: refused up front from its free space. */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/tiny && mount -t tmpfs -o size=1m tmpfs %s/tiny 2>/dev/null", dir, dir);
    if (ts_run(cmd, &out) == 0) {
        free(out);
        snprintf(cmd, sizeof cmd, "%s run " RUN_ARGS " --quiet --out %s/tiny 2>&1; echo \"exit=$?\"; ls -A %s/tiny; umount %s/tiny",
                 ts_cli(), dir, dir, dir);
        ts_run(cmd, &out);
        cr_assert(strstr(out, "not enough disk space") && strstr(out, "exit=1"), "%s", out);
        cr_assert(!strstr(out, "trajectories.npz"), "nothing may be written: %s", out);
    } else {
        fprintf(stderr, "[note] cli_memory_and_disk_refusals: cannot mount a tmpfs here (not root?): disk-space refusal not checked\n");
    }
    free(out);
    ts_rmdir(dir);
    free(dir);
}

/* ------------------------------------------------------------------ sweeps */

static int sweep_stop_at(void *user, int64_t done, int64_t total, int64_t cols)
{
    (void)total;
    (void)cols;
    return done >= *(const int64_t *)user;
}

static bn_status run_sweep(const bn_dataset *ds, int64_t stop, bn_checkpoint_config *ck, bn_sweep **out)
{
    bn_run_config base;
    ts_demo_config(&base, BN_BACKEND_CPU);
    base.steps = 120;
    base.threads = 1;
    base.seeds = 1;
    static const double eta[7] = {0.9, 0.7, 1.1, 0.5, 0.9, 1.3, 0.8};
    bn_sweep_spec spec = {.count = 7, .eta_w = eta, .batch = 3, .theory = 1, .checkpoint = ck};
    spec.rec.every = 9;
    spec.rec.keep = 1;
    bn_event_params_default(&spec.rec.events);
    return bn_sweep_run(ds, &base, &spec, stop >= 0 ? sweep_stop_at : NULL, &stop, out);
}

static void assert_same_sweep(const bn_sweep *a, const bn_sweep *b)
{
    for (int f = 0; f < bn_sweep_n_fields(a); f++) {
        const double *x, *y;
        int64_t r1, c1, r2, c2;
        const char *name = bn_sweep_field_name(a, f);
        cr_assert_eq(bn_sweep_field(a, name, &x, &r1, &c1), BN_OK);
        cr_assert_eq(bn_sweep_field(b, name, &y, &r2, &c2), BN_OK);
        cr_assert(r1 == r2 && c1 == c2 && memcmp(x, y, (size_t)(r1 * c1) * sizeof(double)) == 0, "%s differs", name);
    }
    const bn_events *th[2] = {bn_sweep_theory(a), bn_sweep_theory(b)}, *ev[2] = {bn_sweep_events(a), bn_sweep_events(b)};
    for (int k = 0; k < 2; k++) {
        const bn_events *p = k ? th[0] : ev[0], *q = k ? th[1] : ev[1];
        for (int64_t j = 0; j < 7; j++) {
            cr_assert_eq(bn_events_count(p, j), bn_events_count(q, j));
            for (int64_t e = 0; e < bn_events_count(p, j); e++)
                cr_assert(memcmp(bn_events_get(p, j, e), bn_events_get(q, j, e), sizeof(bn_spike_event)) == 0);
            cr_assert(memcmp(bn_events_summary(p, j), bn_events_summary(q, j), sizeof(bn_traj_summary)) == 0);
        }
    }
    cr_assert(memcmp(bn_sweep_w_final(a), bn_sweep_w_final(b), 7 * 20 * sizeof(double)) == 0);
    cr_assert(memcmp(bn_sweep_w0(a), bn_sweep_w0(b), 7 * 20 * sizeof(double)) == 0);
    cr_assert(memcmp(bn_sweep_alpha0_sigma(a), bn_sweep_alpha0_sigma(b), 7 * sizeof(double)) == 0);
}

/* Stops inside the second batch, then at the third's start; resumes each time. */
Test(checkpoint, sweep_resume_bitwise)
{
    bn_dataset *ds;
    cr_assert_eq(bn_dataset_generate(TS_DEMO_SPEC, BN_LOSS_SQUARE, &ds), BN_OK);
    bn_sweep *whole = NULL, *part = NULL, *rest = NULL, *final = NULL;
    cr_assert_eq(run_sweep(ds, -1, NULL, &whole), BN_OK, "%s", bn_last_error());
    char *dir = ts_tmpdir(), path[512];
    snprintf(path, sizeof path, "%s/sw.bnck", dir);
    bn_checkpoint_config ck = {.path = path, .every = 25};
    cr_assert_eq(run_sweep(ds, 121 + 50, &ck, &part), BN_ERR_INTERRUPTED, "%s", bn_last_error());
    cr_assert_not_null(part, "a stopped sweep returns its partial results");
    cr_assert_eq(bn_sweep_trajectories_done(part), 3);
    bn_checkpoint_config ck2 = {.path = path, .every = 25, .resume = path};
    cr_assert_eq(run_sweep(ds, 2 * 120 + 3, &ck2, &rest), BN_ERR_INTERRUPTED, "%s", bn_last_error());
    cr_assert_eq(ck2.resumed_step, 120 + 75, "resumed at %lld", (long long)ck2.resumed_step);
    bn_checkpoint_config ck3 = {.path = path, .every = 25, .resume = path};
    cr_assert_eq(run_sweep(ds, -1, &ck3, &final), BN_OK, "%s", bn_last_error());
    cr_assert_eq(bn_sweep_trajectories_done(final), 7);
    assert_same_sweep(whole, final);
    bn_sweep_free(whole);
    bn_sweep_free(part);
    bn_sweep_free(rest);
    bn_sweep_free(final);
    bn_dataset_free(ds);
    ts_rmdir(dir);
    free(dir);
}

#define SWEEP_ARGS                                                                                 \
    "--data whitened:n=400,d=20,noise=0.5,wnorm=4,seed=1 --w0-scale 0.5 --w0-align 1 "            \
    "--w0-noise 0.05 --steps 5000 --seeds 8 --grid eta-w=log:0.3:2:16 --batch 32 --every 25 "      \
    "--save-trajectories --backend cpu --threads 1"

/* A sweep the same way (summary, events, theory events, summary.json,
 * trajectories.npz). */
Test(checkpoint, cli_kill9_three_times_sweep, .timeout = 300) { kill9_three_times("sweep", SWEEP_ARGS); }

/* SIGTERM in the second batch: partial outputs hold the finished batch. */
Test(checkpoint, cli_sigterm_sweep_partial, .timeout = 300)
{
    char *dir = ts_tmpdir(), cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "%s sweep " SWEEP_ARGS " --out %s/s --checkpoint-every 100 & p=$!; "
             "while [ ! -e %s/s/checkpoint.bnck ]; do sleep 0.05; done; sleep 0.2; kill -TERM $p; wait $p; "
             "echo \"exit=$?\"; grep -c . %s/s/summary.csv; grep '\"partial\"' %s/s/run.json",
             ts_cli(), dir, dir, dir, dir);
    cr_assert_eq(ts_run(cmd, &out), 0, "%s", out);
    cr_assert(strstr(out, "exit=143") && strstr(out, "\"partial\": true") && strstr(out, "\n129\n"), "%s", out);
    free(out);
    ts_rmdir(dir);
    free(dir);
}
