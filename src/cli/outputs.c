/* The output folder of a run: trajectories.npz (the adaptive records, the
 * spike events, the final state, the settings) and run.json (configuration,
 * events, data identity, provenance).  Each file is written to a temp name
 * and renamed, so a crash or a full disk never leaves a half-written file
 * under the final name. */
#include "common.h"

#include <stdlib.h>
#include <string.h>

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

/* The sim's sharpness arrays that the recorder does not keep adaptively: the
 * 3-D ones and eigs* cover every sharpness record of the sim, whose steps go
 * in as sharpness_step_all (the recorder's sharpness_step is per trajectory). */
static bn_status add_sim_sharpness(bn_npz *z, const bn_sim *sim, const bn_recorder *rec)
{
    bn_status st = BN_OK;
    for (int i = 0; !st && i < bn_sim_n_sharpness_arrays(sim); i++) {
        bn_sim_array a;
        const double *kept;
        int64_t rows, cols;
        st = bn_sim_sharpness_array(sim, i, &a);
        if (st) break;
        const char *name = a.name;
        if (bn_recorder_field(rec, a.name, &kept, &rows, &cols) == BN_OK) {
            if (strcmp(a.name, "sharpness_step") != 0) continue;
            name = "sharpness_step_all";
        }
        st = a.f64 ? bn_npz_add_f64(z, name, a.f64, a.ndim, a.shape) : bn_npz_add_i64(z, name, a.i64, a.ndim, a.shape);
    }
    return st;
}

static bn_status write_npz(const char *path, const bn_run_config *cfg, const bn_sim *sim, const bn_recorder *rec)
{
    bn_npz *z = NULL;
    bn_status st = bn_npz_create(&z);
    int64_t S = bn_sim_seeds(sim), d = bn_sim_dim(sim);
    /* Record fields (S×Rmax, NaN after records[j]), records, adaptive
     * sharpness, kappa_scale, ev_* and sum_*. */
    if (!st) st = bn_recorder_add_npz(rec, z);
    int64_t sd[2] = {S, d}, s1[1] = {S}, d1[1] = {d};
    if (!st) st = bn_npz_add_f64(z, "w_final", bn_sim_w_final(sim), 2, sd);
    if (!st) st = bn_npz_add_f64(z, "gamma_final", bn_sim_gamma_final(sim), 1, s1);
    if (!st) st = bn_npz_add_f64(z, "w_ref", bn_sim_w_ref(sim), 1, d1);
    if (!st) st = bn_npz_add_f64(z, "w0", bn_sim_w0(sim), 2, sd);
    if (!st) st = bn_npz_add_i64(z, "diverged_step", bn_sim_diverged_step(sim), 1, s1);
    if (!st) st = add_settings(z, cfg, S);
    if (!st) st = add_sim_sharpness(z, sim, rec);
    if (!st) st = bn_npz_write(z, path);
    bn_npz_free(z);
    return st;
}

/* Sharpness settings and outcome (issue 3); absent when sharpness is off. */
static void json_sharpness(json_out *j, const bn_run_config *c, const bn_sim *sim, const bn_recorder *rec)
{
    if (c->sharpness_every <= 0) return;
    bn_sharpness_info info;
    bn_sim_sharpness_info(sim, &info);
    int exact = c->sharpness_method == BN_SHARPNESS_EXACT;
    json_begin_object(j, "sharpness");
    json_int(j, "every", c->sharpness_every);
    json_int(j, "records", info.records);
    const double *kept;
    int64_t rows, cols;
    if (bn_recorder_field(rec, "sharpness_step", &kept, &rows, &cols) == BN_OK)
        json_int(j, "records_kept_max", cols); /* the adaptive ones: on the --every schedule and in the windows */
    json_string(j, "method", exact                  ? "exact (dense Hessian from d+1 HVPs, LAPACK dsyevd)"
                             : info.structured > 0 ? "power (shifted, warm-started; square loss: the Hessian's "
                                                     "diagonal-plus-rank-3 form in the singular basis, no matrix "
                                                     "products, every value certified by an eigenvalue count)"
                             : info.lobpcg > 0     ? "LOBPCG (one vector, warm-started, batched: each iteration one "
                                                     "product and the largest Ritz value on span{x, r, p}; no shift)"
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
        json_string(j, "shift",
                    info.lobpcg > 0 && info.structured == 0
                        ? "none: LOBPCG's Ritz value is the largest on its subspace whatever the rest of the "
                          "spectrum; reported value = largest Ritz value (a lower bound of lambda_max)"
                        : "iterate on H - sigma I; when the Rayleigh quotient settles below sigma "
                          "(dominant negative eigenvalue), sigma moves halfway to it and the column restarts; "
                          "reported value = largest Rayleigh quotient (a lower bound of lambda_max)");
        json_string(j, "sphere_start", "the sphere iteration starts from the unprojected operator's vector of the "
                                       "same record, projected, and stops once its Rayleigh quotient is within "
                                       "tol/2 of that operator's lambda_max, an upper bound (interlacing)");
        json_int(j, "not_converged", info.not_converged);
        json_int(j, "shifted", info.shifted);
        json_int(j, "structured", info.structured);
        if (info.structured > 0)
            json_string(j, "certificate", "square loss: every value is checked by an exact count of the "
                                          "eigenvalues above it (Sylvester inertia of the diagonal-plus-low-rank "
                                          "Hessian); where one is found, inverse iteration and bisection on the "
                                          "count give it, as they do for a column not converged after 4 products "
                                          "(tol >= 1e-7)");
        json_int(j, "corrected", info.corrected);
        json_int(j, "bisected", info.bisected);
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

static bn_status write_json(const char *path, const cli_run *run, const bn_dataset *ds, const bn_sim *sim,
                            const bn_recorder *rec)
{
    const cli_opts *o = &run->o;
    json_out j;
    json_init(&j);
    json_begin_object(&j, NULL);
    cli_json_header(&j, run->argc, run->argv, "run");
    cli_json_config(&j, &o->cfg);
    cli_json_events(&j, &o->ev, o->cfg.precision);
    cli_json_data(&j, o, ds);
    cli_json_reference(&j, bn_sim_ref_info(sim), o->cfg.skip_reference);
    json_sharpness(&j, &o->cfg, sim, rec);
    json_string(&j, "backend", bn_backend_name(bn_sim_backend(sim)));
    json_string(&j, "backend_detail", bn_sim_backend_desc(sim));
    json_int(&j, "threads", bn_sim_threads(sim));
    json_int(&j, "coordinate_dim", bn_sim_coordinate_dim(sim));
    json_int(&j, "records", bn_recorder_max_records(rec));
    json_string(&j, "recording", "steps 0, every, 2 every, ..., steps, plus every step from window_pre steps "
                                 "before each spike's onset to window_post steps after its end and the "
                                 "window_pre steps before a divergence; records[j] columns of row j, NaN after");
    const bn_events *ev = bn_recorder_events(rec);
    int64_t S = bn_sim_seeds(sim), spiked = 0, spikes = 0, ndiv = 0;
    for (int64_t s = 0; s < S; s++) {
        spiked += bn_events_summary(ev, s)->n_spikes > 0;
        spikes += bn_events_summary(ev, s)->n_spikes;
        ndiv += bn_sim_diverged_step(sim)[s] >= 0;
    }
    json_int(&j, "trajectories_with_spikes", spiked);
    json_int(&j, "spikes", spikes);
    json_int(&j, "diverged_trajectories", ndiv);
    json_number(&j, "wall_seconds", bn_sim_wall_seconds(sim));
    json_bool(&j, "partial", run->partial);
    if (run->partial) json_int(&j, "stopped_at_step", run->stopped_step);
    if (run->o.resume) json_int(&j, "resumed_at_step", run->resumed_step);
    json_end_object(&j);
    bn_status st = j.failed ? BN_ERR_NOMEM : bn_write_file_atomic(path, j.buf, j.len);
    json_free(&j);
    return st;
}

int cli_write_outputs(const cli_run *run, const bn_dataset *ds, const bn_sim *sim, const bn_recorder *rec)
{
    int rc = cli_make_dirs(run->o.out_dir);
    if (rc) return rc;
    char path[4200];
    snprintf(path, sizeof path, "%s/trajectories.npz", run->o.out_dir);
    bn_status st = write_npz(path, &run->o.cfg, sim, rec);
    if (st) return cli_report(path, st);
    snprintf(path, sizeof path, "%s/run.json", run->o.out_dir);
    st = write_json(path, run, ds, sim, rec);
    if (st) return cli_report(path, st);
    return 0;
}
