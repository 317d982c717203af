/* The output folder of a run: trajectories.npz (all record arrays, final
 * state, settings) and run.json (configuration, data identity, provenance).
 * Each file is written to a temp name and renamed, so a crash or a full disk
 * never leaves a half-written file under the final name. */
#include "cli.h"
#include "json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#if __has_include("git_commit.h")
#include "git_commit.h"
#endif
#ifndef BN_GIT_COMMIT
#define BN_GIT_COMMIT "unknown"
#endif

static int make_dirs(const char *path)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) {
        fprintf(stderr, "bnspike: output folder name is too long\n");
        return EXIT_RUN_FAILED;
    }
    for (char *p = tmp + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(tmp, 0777) != 0 && errno != EEXIST) {
                fprintf(stderr, "bnspike: cannot create output folder %s: %s\n", tmp, strerror(errno));
                return EXIT_RUN_FAILED;
            }
            *p = c;
            if (c == '\0') break;
        }
    }
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "bnspike: output path %s exists and is not a folder\n", path);
        return EXIT_RUN_FAILED;
    }
    return 0;
}

static bn_status add_settings(bn_npz *z, const bn_run_config *c, int64_t S)
{
    double *v = malloc((size_t)S * 3 * sizeof(double));
    int64_t *ids = malloc((size_t)S * sizeof(int64_t));
    if (!v || !ids) {
        free(v);
        free(ids);
        return BN_ERR_NOMEM;
    }
    for (int64_t j = 0; j < S; j++) {
        v[j] = c->eta_w_per ? c->eta_w_per[j] : c->eta_w;
        v[S + j] = c->eta_gamma_per ? c->eta_gamma_per[j] : c->eta_gamma;
        v[2 * S + j] = c->gamma0_per ? c->gamma0_per[j] : c->gamma0;
        ids[j] = (int64_t)(c->seed + (uint64_t)j);
    }
    int64_t shp[1] = {S};
    bn_status st = bn_npz_add_f64(z, "eta_w", v, 1, shp);
    if (!st) st = bn_npz_add_f64(z, "eta_gamma", v + S, 1, shp);
    if (!st) st = bn_npz_add_f64(z, "gamma0", v + 2 * S, 1, shp);
    if (!st) st = bn_npz_add_i64(z, "seed_id", ids, 1, shp);
    free(v);
    free(ids);
    return st;
}

static bn_status write_npz(const char *path, const bn_run_config *cfg, const bn_sim *sim)
{
    bn_npz *z = NULL;
    bn_status st = bn_npz_create(&z);
    int64_t S = bn_sim_seeds(sim), d = bn_sim_dim(sim);
    for (int f = 0; st == BN_OK && f < bn_sim_n_fields(); f++) {
        const double *data;
        int64_t shp[2];
        st = bn_sim_field(sim, bn_sim_field_name(f), &data, &shp[0], &shp[1]);
        if (!st) st = bn_npz_add_f64(z, bn_sim_field_name(f), data, 2, shp);
    }
    int64_t sd[2] = {S, d}, s1[1] = {S}, d1[1] = {d};
    if (!st) st = bn_npz_add_f64(z, "w_final", bn_sim_w_final(sim), 2, sd);
    if (!st) st = bn_npz_add_f64(z, "gamma_final", bn_sim_gamma_final(sim), 1, s1);
    if (!st) st = bn_npz_add_f64(z, "w_ref", bn_sim_w_ref(sim), 1, d1);
    if (!st) st = bn_npz_add_f64(z, "w0", bn_sim_w0(sim), 2, sd);
    if (!st) st = bn_npz_add_i64(z, "diverged_step", bn_sim_diverged_step(sim), 1, s1);
    if (!st) st = add_settings(z, cfg, S);
    for (int i = 0; !st && i < bn_sim_n_sharpness_arrays(sim); i++) { /* issue 3 */
        bn_sim_array a;
        st = bn_sim_sharpness_array(sim, i, &a);
        if (!st) st = a.f64 ? bn_npz_add_f64(z, a.name, a.f64, a.ndim, a.shape)
                            : bn_npz_add_i64(z, a.name, a.i64, a.ndim, a.shape);
    }
    if (!st) st = bn_npz_write(z, path);
    bn_npz_free(z);
    return st;
}

static void json_config(json_out *j, const bn_run_config *c)
{
    json_begin_object(j, "config");
    json_string(j, "loss", bn_loss_name(c->loss));
    json_string(j, "precision", bn_precision_name(c->precision));
    json_string(j, "backend_requested", bn_backend_name(c->backend));
    json_int(j, "steps", c->steps);
    json_int(j, "every", c->every);
    json_int(j, "seeds", c->seeds);
    json_int(j, "seed", (int64_t)c->seed);
    json_number(j, "eta_w", c->eta_w);
    json_number(j, "eta_gamma", c->eta_gamma);
    json_number(j, "gamma0", c->gamma0);
    if (c->w0) {
        json_string(j, "w0", "explicit (--w0)");
    } else {
        json_number(j, "w0_scale", c->w0_scale);
        json_number(j, "w0_align", c->w0_align);
        json_number(j, "w0_noise", c->w0_noise);
    }
    json_bool(j, "w0_projected_on_row_space", c->project_w0);
    json_string(j, "reference", c->skip_reference ? "none" : c->w_ref ? "given (--ref)"
                                : c->loss == BN_LOSS_SQUARE ? "least squares (min-norm)"
                                                            : "hard-margin SVM (centered, no bias)");
    json_end_object(j);
}

/* Sharpness settings and outcome (issue 3); absent when sharpness is off. */
static void json_sharpness(json_out *j, const bn_run_config *c, const bn_sim *sim)
{
    if (c->sharpness_every <= 0) return;
    bn_sharpness_info info;
    bn_sim_sharpness_info(sim, &info);
    int exact = c->sharpness_method == BN_SHARPNESS_EXACT;
    json_begin_object(j, "sharpness");
    json_int(j, "every", c->sharpness_every);
    json_int(j, "records", info.records);
    json_string(j, "method", exact ? "exact (dense Hessian from d+1 HVPs, LAPACK dsyevd)"
                                   : "power (shifted, warm-started, batched)");
    json_string(j, "state", "(w_t, gamma_t) of the recorded step, before its update");
    json_begin_array(j, "kinds");
    json_string(j, NULL, "sharpness: lambda_max(H), H the (d+1)x(d+1) Hessian in (w, gamma)");
    json_string(j, NULL, "sharpness_weighted: lambda_max(P^1/2 H P^1/2), P = diag(eta_w I, eta_gamma)");
    json_string(j, NULL, c->sharpness_sphere_plain
                             ? "sharpness_sphere: lambda_max(Pi H Pi) on range(Pi), Pi = I - (w/|w|,0)(w/|w|,0)^T"
                             : "sharpness_sphere: lambda_max(Pi P^1/2 H P^1/2 Pi) on range(Pi), Pi = I - (w/|w|,0)(w/|w|,0)^T");
    json_end_array(j);
    json_string(j, "sphere", c->sharpness_sphere_plain ? "plain" : "weighted");
    if (!exact) {
        json_number(j, "tol", c->sharpness_tol);
        json_number(j, "tol_effective", info.tol_effective);
        json_int(j, "maxiter", c->sharpness_maxiter);
        json_string(j, "shift", "iterate on H - sigma I; when the Rayleigh quotient settles below sigma "
                                "(dominant negative eigenvalue), sigma becomes it and the column restarts; "
                                "reported value = largest Rayleigh quotient (a lower bound of lambda_max)");
        json_int(j, "not_converged", info.not_converged);
        json_int(j, "shifted", info.shifted);
    }
    if (c->eigs > 0) {
        json_int(j, "eigs", c->eigs);
        json_string(j, "eigs_of", c->eigs_operator == BN_EIGS_HESSIAN ? "hessian"
                                  : c->eigs_operator == BN_EIGS_WEIGHTED ? "weighted" : "sphere");
        if (!exact) {
            json_string(j, "eigs_method", "Lanczos, full reorthogonalization, restarts after breakdown");
            json_int(j, "eigs_maxiter", info.eigs_maxiter);
            json_int(j, "eigs_not_converged", info.eigs_not_converged);
        }
    }
    json_number(j, "seconds", info.seconds);
    json_end_object(j);
}

static void json_reference(json_out *j, const bn_ref_info *r, int skipped)
{
    json_begin_object(j, "reference_info");
    if (skipped) {
        json_bool(j, "computed", 0);
    } else {
        json_string(j, "kind", r->kind ? "svm" : "least_squares");
        json_number(j, "residual", r->residual);
        json_number(j, "kkt_violation", r->kkt_violation);
        json_int(j, "rank", r->rank);
        if (r->kind) {
            json_int(j, "n_support", r->n_support);
            json_bool(j, "all_active", r->all_active);
        }
    }
    json_end_object(j);
}

static bn_status write_json(const char *path, const cli_run *run, const bn_dataset *ds,
                            const bn_sim *sim)
{
    json_out j;
    json_init(&j);
    json_begin_object(&j, NULL);
    json_string(&j, "tool", "bnspike");
    json_string(&j, "version", BN_VERSION);
    json_string(&j, "git_commit", BN_GIT_COMMIT);
    char when[64];
    time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    json_string(&j, "finished_utc", when);
    json_begin_array(&j, "command_line");
    json_string(&j, NULL, "bnspike");
    for (int i = 0; i < run->argc; i++) json_string(&j, NULL, run->argv[i]);
    json_end_array(&j);
    json_config(&j, &run->cfg);
    json_begin_object(&j, "data");
    json_string(&j, "source", run->data_desc);
    json_string(&j, "name", bn_dataset_name(ds));
    json_int(&j, "n", bn_dataset_n(ds));
    json_int(&j, "d", bn_dataset_d(ds));
    char sum[32];
    snprintf(sum, sizeof sum, "%016llx", (unsigned long long)bn_dataset_checksum(ds));
    json_string(&j, "checksum_fnv1a64", sum);
    json_end_object(&j);
    json_reference(&j, bn_sim_ref_info(sim), run->cfg.skip_reference);
    json_sharpness(&j, &run->cfg, sim);
    json_string(&j, "backend", bn_backend_name(bn_sim_backend(sim)));
    json_string(&j, "backend_detail", bn_sim_backend_desc(sim));
    json_int(&j, "threads", bn_sim_threads(sim));
    json_int(&j, "records", bn_sim_records(sim));
    int64_t ndiv = 0;
    for (int64_t s = 0; s < bn_sim_seeds(sim); s++) ndiv += bn_sim_diverged_step(sim)[s] >= 0;
    json_int(&j, "diverged_trajectories", ndiv);
    json_number(&j, "wall_seconds", bn_sim_wall_seconds(sim));
    json_bool(&j, "partial", 0);
    json_end_object(&j);
    bn_status st = j.failed ? BN_ERR_NOMEM : bn_write_file_atomic(path, j.buf, j.len);
    json_free(&j);
    return st;
}

int cli_write_outputs(const cli_run *run, const bn_dataset *ds, const bn_sim *sim)
{
    int rc = make_dirs(run->out_dir);
    if (rc) return rc;
    char path[4200];
    snprintf(path, sizeof path, "%s/trajectories.npz", run->out_dir);
    bn_status st = write_npz(path, &run->cfg, sim);
    if (st) return cli_report(path, st);
    snprintf(path, sizeof path, "%s/run.json", run->out_dir);
    st = write_json(path, run, ds, sim);
    if (st) return cli_report(path, st);
    return 0;
}
