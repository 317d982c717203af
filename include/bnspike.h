/* bnspike — full-batch gradient descent on batch-normalized linear models.
 *
 * Public API.  Every call that can fail returns a bn_status; the detail of the
 * last failure on the calling thread is in bn_last_error().  Handles are
 * opaque, created and freed in pairs; freeing NULL is a no-op.  The library
 * never exits the process.
 *
 * Array conventions: matrices handed to or returned by the library are
 * row-major (C order) unless a comment says otherwise, because that is what
 * numpy writes by default.  X is n×d (one sample per row), y has n entries.
 */
#ifndef BNSPIKE_H
#define BNSPIKE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BN_VERSION "0.1.0"

typedef enum {
    BN_OK = 0,
    BN_ERR_ARG,           /* an argument is out of range or inconsistent    */
    BN_ERR_IO,            /* a file could not be opened, read or written    */
    BN_ERR_FORMAT,        /* a file's content is malformed                  */
    BN_ERR_NOMEM,         /* an allocation failed (host or device)          */
    BN_ERR_DATA,          /* data is unusable (NaN/Inf, bad labels, rank)   */
    BN_ERR_NOT_SEPARABLE, /* classification data admits no max-margin w     */
    BN_ERR_BACKEND,       /* a BLAS/CUDA call failed                        */
    BN_ERR_UNAVAILABLE,   /* backend not compiled in or no device present   */
    BN_ERR_INTERRUPTED    /* the progress callback asked to stop            */
} bn_status;

const char *bn_status_name(bn_status st);
/* Human-readable detail of the last failure on this thread ("" if none). */
const char *bn_last_error(void);

typedef enum { BN_LOSS_SQUARE = 0, BN_LOSS_LOGISTIC = 1 } bn_loss;
typedef enum { BN_FP64 = 0, BN_FP32 = 1 } bn_precision;
typedef enum { BN_BACKEND_AUTO = 0, BN_BACKEND_CPU = 1, BN_BACKEND_CUDA = 2 } bn_backend_kind;

const char *bn_loss_name(bn_loss l);
const char *bn_precision_name(bn_precision p);
const char *bn_backend_name(bn_backend_kind b);
bn_status bn_parse_loss(const char *s, bn_loss *out);
bn_status bn_parse_precision(const char *s, bn_precision *out);
bn_status bn_parse_backend(const char *s, bn_backend_kind *out);

/* ------------------------------------------------------------------ data */

typedef struct bn_dataset bn_dataset;

/* Copies X (n×d, row-major) and y (n).  Rejects NaN/Inf. */
bn_status bn_dataset_create(const double *X, const double *y, int64_t n, int64_t d,
                            const char *name, bn_dataset **out);
/* X.npy (n×d, float32/float64, C or Fortran order) and y.npy (n or n×1). */
bn_status bn_dataset_load_npy(const char *x_path, const char *y_path, bn_dataset **out);
/* CSV: numeric columns, last column is y, optional header line. */
bn_status bn_dataset_load_csv(const char *path, bn_dataset **out);
/* Generator spec "NAME:key=value,...": whitened, hilbert, gaussian,
 * active-margin.  The loss decides regression targets or ±1 labels. */
bn_status bn_dataset_generate(const char *spec, bn_loss loss, bn_dataset **out);
void bn_dataset_free(bn_dataset *ds);

int64_t bn_dataset_n(const bn_dataset *ds);
int64_t bn_dataset_d(const bn_dataset *ds);
const double *bn_dataset_X(const bn_dataset *ds); /* n×d row-major */
const double *bn_dataset_y(const bn_dataset *ds);
const char *bn_dataset_name(const bn_dataset *ds);
/* FNV-1a 64 over the float64 bytes of X then y: identifies the data in run.json. */
uint64_t bn_dataset_checksum(const bn_dataset *ds);
/* Centered copy Xc = X - 1·mean(X)ᵀ, n×d row-major, caller frees with free(). */
bn_status bn_dataset_centered(const bn_dataset *ds, double **xc_out);
/* Checks that every label is exactly -1 or +1. */
bn_status bn_dataset_check_labels(const bn_dataset *ds);

/* ------------------------------------------------------- reference direction */

typedef struct {
    int kind;             /* 0 = least squares, 1 = hard-margin SVM            */
    double residual;      /* LS: ‖Xc w - y_c‖/‖y_c‖;  SVM: 1 - min margin (≤ 0 ok) */
    double kkt_violation; /* SVM: max KKT violation; LS: ‖Xcᵀ(Xc w - y)‖ rel.   */
    int64_t n_support;    /* SVM: samples with margin ≈ 1 (active)             */
    int all_active;       /* SVM: every sample is a support vector (Assumption 3)*/
    int64_t rank;         /* numerical rank of Xc                              */
} bn_ref_info;

/* Least squares (min-norm solution of min ‖Xc w - y‖) for square loss;
 * hard-margin SVM on centered data, no bias, for logistic loss.  w_out: d. */
bn_status bn_reference_direction(const bn_dataset *ds, bn_loss loss, double *w_out,
                                 bn_ref_info *info);

/* --------------------------------------------------------------- simulation */

typedef struct {
    bn_loss loss;
    bn_precision precision;
    bn_backend_kind backend;
    int threads;      /* 0 = library default                                   */
    int device;       /* CUDA device ordinal                                   */
    int64_t steps;    /* number of GD updates T (records cover t = 0..T)       */
    int64_t every;    /* record every K-th step (plus step 0 and step T)       */
    int64_t seeds;    /* S trajectories                                        */
    uint64_t seed;    /* trajectory j uses seed id seed + j                    */
    /* Scalar settings, used where the per-trajectory array is NULL. */
    double eta_w, eta_gamma, gamma0, w0_scale;
    /* Random start: w0 = w0_scale · (w0_align · ê + w0_noise · ξ), ξ ~ N(0, I_d),
     * projected on the row space of Xc when project_w0 is set. */
    double w0_align, w0_noise;
    int project_w0;
    /* Optional per-trajectory settings, length S each. */
    const double *eta_w_per, *eta_gamma_per, *gamma0_per, *w0_scale_per;
    /* Optional explicit start: w0_rows × d row-major, w0_rows = 1 or S. */
    const double *w0;
    int64_t w0_rows;
    /* Optional reference direction (d).  NULL = computed by bn_reference_direction. */
    const double *w_ref;
    /* Skip the reference direction (alpha, beta, rho are NaN): for benchmarks on
     * shapes where the LS/SVM solve would dominate. */
    int skip_reference;

    /* Sharpness (issue 3): eigenvalues of the Hessian H of L in (w, γ) at the
     * state (w_t, γ_t) of steps 0, K, 2K, ... and T, before that step's update.
     * 0 = off.  See src/sharpness.h for the algorithms. */
    int64_t sharpness_every;
    int sharpness_method;        /* bn_sharpness_method (power)                      */
    double sharpness_tol;        /* relative change (or LOBPCG's residual bound
                                    ‖r‖²/gap relative to 0.1·tol) that stops the
                                    power iteration; Ritz residual / scale for
                                    Lanczos (1e-6)                                   */
    int64_t sharpness_maxiter;   /* HVPs per power iteration (1000)                   */
    /* sharpness_sphere: 0 = λ_max(Π P^½HP^½ Π) (default: the one held against 2),
     * 1 = λ_max(Π H Π), both on range(Π), Π = I - (ŵ,0)(ŵ,0)ᵀ. */
    int sharpness_sphere_plain;
    int64_t eigs;                /* top-k eigenvalues by Lanczos per record (0 = none) */
    int eigs_operator;           /* bn_eigs_operator (hessian)                       */
    int64_t eigs_maxiter;        /* Lanczos basis size limit (0 = min(dim, 6k+60))   */
} bn_run_config;

typedef enum { BN_SHARPNESS_POWER = 0, BN_SHARPNESS_EXACT = 1 } bn_sharpness_method;
/* Which operator --eigs describes: H, P^½HP^½, or the sphere operator of
 * sharpness_sphere (weighted or plain as configured). */
typedef enum { BN_EIGS_HESSIAN = 0, BN_EIGS_WEIGHTED = 1, BN_EIGS_SPHERE = 2 } bn_eigs_operator;

void bn_run_config_default(bn_run_config *cfg);

typedef struct bn_sim bn_sim;

/* Progress: called from the driver thread between steps; return non-zero to stop. */
typedef int (*bn_progress_fn)(void *user, int64_t step, int64_t steps);

bn_status bn_sim_create(const bn_dataset *ds, const bn_run_config *cfg, bn_sim **out);
bn_status bn_sim_run(bn_sim *sim, bn_progress_fn progress, void *user);
/* Like bn_sim_run, and calls observer once per step t = 0..T, in order, with
 * that step's record fields (fields[f] holds S values of bn_sim_field_name(f)),
 * whatever --every is: event detectors and adaptive recorders see every step.
 * Return non-zero from it to stop the run (BN_ERR_INTERRUPTED). */
typedef int (*bn_step_observer)(void *user, int64_t step, const double *const *fields, int64_t S);
bn_status bn_sim_run_observed(bn_sim *sim, bn_progress_fn progress, void *user,
                              bn_step_observer observer, void *obs_user);
void bn_sim_free(bn_sim *sim);

/* Record arrays after bn_sim_run.  Each is S×R row-major float64.
 * Names: step loss gamma w_norm w_norm_sigma alpha beta rho eta_eff
 * grad_norm_w grad_gamma alpha_sigma beta_sigma rho_sigma. */
int bn_sim_n_fields(void);
const char *bn_sim_field_name(int i);
bn_status bn_sim_field(const bn_sim *sim, const char *name, const double **data,
                       int64_t *rows, int64_t *cols);
int64_t bn_sim_records(const bn_sim *sim);
int64_t bn_sim_seeds(const bn_sim *sim);
int64_t bn_sim_dim(const bn_sim *sim);
const double *bn_sim_w_final(const bn_sim *sim);     /* S×d row-major */
const double *bn_sim_gamma_final(const bn_sim *sim); /* S */
const double *bn_sim_w_ref(const bn_sim *sim);       /* d */
const double *bn_sim_w0(const bn_sim *sim);          /* S×d, the start actually used */
/* First step whose state holds a NaN/Inf, -1 if none (S entries). */
const int64_t *bn_sim_diverged_step(const bn_sim *sim);
const bn_ref_info *bn_sim_ref_info(const bn_sim *sim);
bn_backend_kind bn_sim_backend(const bn_sim *sim);
const char *bn_sim_backend_desc(const bn_sim *sim);
int bn_sim_threads(const bn_sim *sim);
double bn_sim_wall_seconds(const bn_sim *sim);
/* The step the run continues from: 0 before it ran (or its checkpoint step after
 * a resume), the step where it stopped when interrupted, T + 1 when done. */
int64_t bn_sim_next_step(const bn_sim *sim);
/* The length of the vectors the backend steps: rank(Xc) when the run works
 * in row-space coordinates (n < d, w0 projected, no sharpness; the record
 * fields and w_final are the same quantities), else d. */
int64_t bn_sim_coordinate_dim(const bn_sim *sim);

/* Sharpness records (cfg.sharpness_every > 0), at Rs sharpness steps:
 *   sharpness_step       int64 Rs        the step t of each sharpness record
 *   sharpness            f64 S×Rs        λ_max(H)
 *   sharpness_weighted   f64 S×Rs        λ_max(P^½ H P^½), P = diag(η_w I, η_γ)
 *   sharpness_sphere     f64 S×Rs        λ_max on range(Π) (see sharpness_sphere_plain)
 *   sharpness_iters      int64 S×Rs×3    HVPs used, kinds (sharpness, weighted, sphere)
 *   sharpness_converged  int64 S×Rs×3    1 = converged (exact method: always 1)
 *   sharpness_shift      f64 S×Rs×3      final shift σ of the power iteration (0 = none)
 *   eigs                 f64 S×Rs×k      top-k eigenvalues, descending (cfg.eigs > 0)
 *   eigs_iters           int64 S×Rs      Lanczos steps (HVPs)
 *   eigs_converged       int64 S×Rs      1 = all k converged */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[3];
    const double *f64; /* exactly one of f64 / i64 is set */
    const int64_t *i64;
} bn_sim_array;

int bn_sim_n_sharpness_arrays(const bn_sim *sim); /* 0 when sharpness is off */
bn_status bn_sim_sharpness_array(const bn_sim *sim, int i, bn_sim_array *out);
bn_status bn_sim_sharpness_find(const bn_sim *sim, const char *name, bn_sim_array *out);

typedef struct {
    int64_t records;          /* Rs                                             */
    double tol_effective;     /* the tolerance used (raised to the precision)   */
    int64_t eigs_maxiter;     /* Lanczos basis size limit used                  */
    int64_t not_converged;    /* power iterations that hit the limit (all kinds) */
    int64_t eigs_not_converged;
    int64_t shifted;          /* power iterations that needed a shift           */
    double seconds;           /* wall time spent on sharpness                   */
    /* Square loss (issue 7): power iterations run on the structured Hessian
     * (no matrix products), each checked by an exact eigenvalue count. */
    int64_t structured;       /* power iterations on the structured Hessian     */
    int64_t corrected;        /* of those, where the count found a larger
                                 eigenvalue (then found on the count: inverse
                                 iteration and bisection)                       */
    int64_t bisected;         /* of those, not converged after 4 products and
                                 finished on the count                          */
    int64_t lobpcg;           /* iterations by LOBPCG (the general path, issue 7) */
} bn_sharpness_info;

/* Zeros when sharpness is off. */
void bn_sim_sharpness_info(const bn_sim *sim, bn_sharpness_info *info);

/* ------------------------------------------------------------ spike events */

/* The first spike of one recorded trajectory.  A spike is a rising edge of ρ
 * (ρ_{k+1} > ρ_k on consecutive records) that follows a falling record and
 * multiplies ρ by at least min_rise from its onset to its peak; this skips the
 * rounding jitter of ρ at the precision floor.  Indices are record indices. */
typedef struct {
    int found;
    int64_t onset, peak, end;   /* record indices: edge start, max ρ, and the first
                                   record after the peak with ρ ≤ ρ_peak/min_rise  */
    double rho_onset, rho_peak; /* ρ at onset (the minimum before the edge) and peak  */
    double loss_onset, loss_peak; /* the loss keeps falling while ρ is tiny, so: its
                                     minimum over onset..peak, and its maximum from
                                     there to the end                               */
    double wnorm_onset, wnorm_end;
} bn_spike;

#define BN_SPIKE_MIN_RISE 10.0
bn_status bn_find_first_spike(const double *rho, const double *loss, const double *wnorm,
                              int64_t count, double min_rise, bn_spike *out);

/* ------------------------------------- sweeps, events, theory (issue 5) */

/* Spike events, detected on every step of a trajectory (not only on recorded
 * steps) by a streaming detector fed one step at a time.  Definitions, with
 * r_t = |ρ_t| (ρ = β/α, Euclidean; ρ_Σ with use_rho_sigma) and u the unit
 * roundoff of the run's precision (2^-53 fp64, 2^-24 fp32):
 *   rising step t     r_{t+1} > r_t (MODEL.md's Rising Edge); falling otherwise.
 *   rising edge       a maximal run of rising steps a, a+1, ..., p-1 whose first
 *                     step follows a falling step (r_a ≤ r_{a-1}); an edge at
 *                     t = 0 follows no falling phase and is never a spike.
 *   spike             a rising edge with r_p ≥ min_rise · r_a.  Shorter edges are
 *                     rounding jitter (ρ at the precision floor) or noise.
 *   onset             a, the edge's first step (its local minimum of ρ).
 *   peak              p, the edge's last step: the maximum of ρ on the edge.
 *   end               the first step after p with r ≤ r_p / end_factor (the
 *                     spike has been undone by the falling phase); -1 if the run
 *                     ended, diverged or the next spike was confirmed first.
 *   rho_min           min r over the falling phase before the onset: from the
 *                     previous spike's peak (or step 0) to the onset.
 *   floor_before_onset  rho_min ≤ floor_factor · u: ρ reached the precision
 *                     floor (MODEL.md, "Precision matters") and the onset and
 *                     peak steps depend on the precision.
 *   loss_before       min of the loss over [onset, peak] (the loss keeps falling
 *                     while ρ is tiny); loss_spike: max of the loss from there
 *                     until the spike ends (end, the next confirmed spike, or the
 *                     run's end); loss_ratio = loss_spike / loss_before.
 *   kappa             κ = η_eff · ‖w_LS‖_Σ (square loss; NaN for logistic), with
 *                     the angle θ in the Σ geometry (cos θ = α_Σ/‖w‖_Σ):
 *   kappa_threshold   2 cos θ / cos 2θ: the edge starts when κ exceeds it.
 *   rise_pred         |1 - κ cos θ| / (1 + κ sin²θ / cos θ): the one-step factor
 *                     ρ_{t+1}/ρ_t that the whitened reduced model predicts;
 *   rise_obs          the observed ρ_{t+1}/ρ_t.  Equal on whitened data.
 *   pred_onset        the last step ≤ peak (and after the previous spike's peak)
 *                     at which rise_pred went from ≤ 1 to > 1: the onset the κ
 *                     rule predicts from the simulated state (-1: none).  Equal
 *                     to the onset on whitened data.
 *   sharpness_onset   λ_max(H) ("sharpness") and λ_max(P^½HP^½) ("sharpness_
 *                     weighted") at the last sharpness record ≤ onset (NaN, step
 *                     -1 when the run records no sharpness): from the sim's
 *                     sharpness arrays after the run (bn_events_attach_sharpness),
 *                     or from record fields of those names if a sim has them.
 *   diverged          the loss became non-finite (first such step; the sim's loss
 *                     is NaN as soon as w or γ is); detection stops there and an
 *                     open spike closes with its peak at the last finite step.
 * A step where ρ is not finite but the state is (no reference, α = 0) breaks
 * any edge: an unconfirmed edge is dropped, a confirmed one peaks before it. */
typedef struct {
    double min_rise;      /* 10   */
    double end_factor;    /* 10   */
    double floor_factor;  /* 100: the fp64 floor measured on whitened data is
                             ≈5u, fp32's ≈1-2u; at 100u rounding is ~5% of ρ.
                             Below ~1000u an onset where ρ barely turns (rise
                             factor within ~u/ρ_min of 1) can still move by one
                             step between precisions or backends; the peak and
                             end do not (measured on the demo data)             */
    int use_rho_sigma;    /* 0: detect on rho; 1: on rho_sigma                  */
    int64_t window_pre;   /* adaptive recording: steps kept before an onset (20) */
    int64_t window_post;  /* and after a spike's end (20)                        */
} bn_event_params;

void bn_event_params_default(bn_event_params *p);
/* BN_ERR_ARG with a message when a parameter is out of range. */
bn_status bn_event_params_check(const bn_event_params *p);
/* 2^-53 for fp64, 2^-24 for fp32. */
double bn_unit_roundoff(bn_precision p);

/* One spike.  Steps are GD step indices t (records cover t = 0..T). */
typedef struct {
    int64_t onset_step, peak_step, end_step; /* end -1: not reached             */
    int64_t confirm_step;                    /* step at which r ≥ min_rise·r_onset */
    double rho_onset, rho_peak, rho_end;     /* |ρ| at those steps (end: NaN)    */
    double rho_min;                          /* falling phase before the onset    */
    int64_t rho_min_step;
    int floor_before_onset;
    double loss_onset;                       /* the loss at the onset step        */
    double loss_before, loss_spike, loss_ratio;
    int64_t loss_before_step, loss_spike_step;
    double eta_eff_onset, kappa_onset, kappa_threshold_onset, kappa_peak;
    double rise_pred_onset, rise_obs_onset;
    int64_t pred_onset_step;                 /* κ rule's onset (see above)        */
    double wnorm_onset, wnorm_end;           /* ‖w‖ at onset, at end (or last seen) */
    double sharpness_onset, sharpness_weighted_onset;
    int64_t sharpness_step;                  /* step those were measured at (-1)  */
} bn_spike_event;

/* Per-trajectory summary, over every step seen. */
typedef struct {
    int64_t n_spikes;
    int diverged;
    int64_t diverged_step;      /* -1 if never                                   */
    int floor_reached;          /* r ≤ floor_factor·u at some step               */
    int64_t floor_step;         /* the first such step (-1)                      */
    double rho_min_run;         /* min r over the run, and its step              */
    int64_t rho_min_run_step;
    double kappa_max;           /* max κ over the run (NaN for logistic)         */
    int64_t kappa_max_step;
    int edge_at_end;            /* the run ended inside a confirmed rising edge  */
    int64_t steps_seen;
    double loss_final, rho_final; /* at the last step seen                       */
} bn_traj_summary;

/* Self-description of bn_spike_event and bn_traj_summary for writers (CSV,
 * JSON, npz): name, type, offset and a one-line definition of each member. */
typedef enum { BN_SF_F64 = 0, BN_SF_I64 = 1, BN_SF_INT = 2 } bn_struct_field_type;
typedef struct {
    const char *name;
    bn_struct_field_type type;
    size_t offset;
    const char *doc;
} bn_struct_field;
int bn_spike_event_fields(const bn_struct_field **out); /* returns the count */
int bn_traj_summary_fields(const bn_struct_field **out);
double bn_struct_field_get(const void *obj, const bn_struct_field *f); /* as a double */

/* One step of one trajectory, as the detector reads it.  NaN marks what is
 * unknown: without alpha_sigma/beta_sigma or kappa_scale there is no κ rule,
 * without sharpness no sharpness at onset. */
typedef struct {
    double rho, loss, eta_eff, w_norm;
    double alpha_sigma, beta_sigma;
    double sharpness, sharpness_weighted;
} bn_event_input;

typedef struct bn_events bn_events;

/* A detector for S trajectories.  kappa_scale = ‖w_LS‖_Σ (bn_kappa_scale) or
 * NaN; precision sets u for the floor. */
bn_status bn_events_create(int64_t S, const bn_event_params *p, bn_precision precision,
                           double kappa_scale, bn_events **out);
void bn_events_free(bn_events *ev);
/* Feeds step `step` of trajectory j; each trajectory's steps must be fed in
 * order 0, 1, 2, ... (the first step fed may be any step, then consecutive). */
bn_status bn_events_feed(bn_events *ev, int64_t j, int64_t step, const bn_event_input *in);
/* A bn_step_observer (user = the bn_events) for bn_sim_run_observed: reads the
 * fields by name (rho or rho_sigma, loss, eta_eff, w_norm, alpha_sigma,
 * beta_sigma, and sharpness / sharpness_weighted when the sim has them). */
int bn_events_observer(void *user, int64_t step, const double *const *fields, int64_t S);
/* Closes what is still open at the end of the run (a spike at the last step). */
void bn_events_finish(bn_events *ev);
int64_t bn_events_trajectories(const bn_events *ev);
int64_t bn_events_count(const bn_events *ev, int64_t j);
const bn_spike_event *bn_events_get(const bn_events *ev, int64_t j, int64_t k);
const bn_traj_summary *bn_events_summary(const bn_events *ev, int64_t j);

/* Fills sharpness_onset, sharpness_weighted_onset and sharpness_step of the
 * spikes of trajectories offset .. offset+S-1 from a finished sim's sharpness
 * arrays (cfg.sharpness_every > 0): the last sharpness record at or before
 * each onset.  No-op when the sim has no sharpness.  bn_recorder_run and
 * bn_sweep_run call it; call it yourself after bn_events_observer runs. */
bn_status bn_events_attach_sharpness(bn_events *ev, const bn_sim *sim, int64_t offset);

/* Offline: events of S series of `count` consecutive steps starting at step0
 * (row-major S×count each; NULL for an unknown field, except rho and loss). */
typedef struct {
    const double *rho, *loss, *eta_eff, *w_norm, *alpha_sigma, *beta_sigma;
    const double *sharpness, *sharpness_weighted;
} bn_event_series;
bn_status bn_events_from_series(const bn_event_series *s, int64_t S, int64_t count, int64_t step0,
                                const bn_event_params *p, bn_precision precision,
                                double kappa_scale, bn_events **out);

/* κ's scale ‖w_LS‖_Σ = ‖Xc w_LS‖/√n, w_LS the min-norm least-squares solution
 * (computed when w_ls is NULL).  NaN for logistic loss. */
bn_status bn_kappa_scale(const bn_dataset *ds, bn_loss loss, const double *w_ls, double *out);

/* Theory: the exact three-variable map of MODEL.md (Lemmas 1 and 7), exact for
 * whitened square-loss data, in the Σ geometry for any square-loss data:
 *   α' = α + η_w γ B β²/N³,  β' = β |1 - η_w γ B α/N³|,  γ' = γ - η_γ (γ - B α/N),
 * N = √(α²+β²) (= ‖w‖_Σ), B = ‖w_LS‖_Σ; loss L* + ½(γ - B cos θ)² + ½ B² sin²θ
 * with L* = ½ mean(y²) - ½ B² (exact for any square-loss data). */
typedef struct {
    double B;          /* ‖w_LS‖_Σ                                            */
    double lstar;      /* ½ mean(y²) - ½ B²                                     */
    double sigma_dev;  /* max |Σ - I| over entries                             */
    int whitened;      /* sigma_dev ≤ 1e-10: the map is exact                   */
} bn_theory_data;
bn_status bn_theory_data_compute(const bn_dataset *ds, bn_theory_data *out);
/* Iterates the map for `steps` steps from (α_Σ0, β_Σ0, γ0) and feeds every state
 * t = 0..steps to trajectory j of ev (NULL: none).  series (optional, NULL or
 * (steps+1)×BN_THEORY_NSERIES row-major) receives per step: α, β, γ, ρ, loss,
 * η_eff, κ, rise_pred. */
enum { BN_THEORY_NSERIES = 8 };
const char *bn_theory_series_name(int i);
bn_status bn_theory_run(const bn_theory_data *td, double eta_w, double eta_gamma, double alpha0,
                        double beta0, double gamma0, int64_t steps, bn_events *ev, int64_t j,
                        double *series);

/* Adaptive recording: records steps 0, K, 2K, ..., T of every trajectory and
 * every step inside a window around each spike — from window_pre steps before
 * its onset to window_post steps after its end (or the run's end), and the
 * window_pre steps before a divergence — at full resolution, whatever K is.
 * Sharpness (cfg.sharpness_every = K' > 0): the sim's sharpness records are
 * kept on the regular schedule (steps that are multiples of K, and T) and
 * inside the windows, so with K' < K the sharpness is at rate 1/K' around
 * spikes and 1/K elsewhere; they come back as "sharpness_step" and the sim's
 * 2-D sharpness arrays ("sharpness", "sharpness_weighted", "sharpness_sphere"),
 * S×Rs_max each, padded with NaN, "sharpness_records" (S) the counts.  (The
 * sim computes every K'-th step regardless; only what is kept is adaptive.)
 * It runs the event detector too (bn_recorder_events), with sharpness at
 * onset attached.  keep = 0 runs only the detector. */
typedef struct bn_recorder bn_recorder;
struct bn_npz; /* bn_npz, see "file output" */
typedef struct {
    int64_t every;      /* K (≥ 1)                                               */
    int keep;           /* keep rows (0: events only)                            */
    bn_event_params events;
    int threads;        /* OpenMP threads of the per-step pass (0: the run's
                           cfg.threads, itself 0 = all cores)                    */
} bn_recorder_config;
/* For a sim created from (ds, cfg): S, T and the precision come from cfg.
 * kappa_scale: NaN computes it from ds (square loss) using the sim's reference
 * when that is the least-squares one. */
bn_status bn_recorder_create(const bn_dataset *ds, const bn_run_config *cfg, const bn_sim *sim,
                             const bn_recorder_config *rc, double kappa_scale, bn_recorder **out);
/* bn_sim_run_observed with the recorder as observer, then bn_recorder_finish. */
bn_status bn_recorder_run(bn_recorder *rec, bn_sim *sim, bn_progress_fn progress, void *user);

/* Checkpoints (long runs on shared machines): the full state of a run or sweep
 * (parameters, step, records so far, spike-detector and recorder state,
 * random-number positions, sharpness warm starts) in one file, replaced
 * atomically.  A run resumed from it continues bitwise identically to one that
 * was never stopped (same backend, precision and thread count, which are part
 * of the configuration it checks).  The checkpoint records the configuration
 * and the data checksum; a resume with anything different is refused with a
 * message naming the first difference. */
typedef struct {
    const char *path;   /* checkpoint file to write (NULL: none)                    */
    int64_t every;      /* write one every `every` steps (0: only when stopped)      */
    const char *resume; /* checkpoint to continue from (NULL: start at step 0)      */
    const char *extra;  /* the caller's own settings as "key=value\n" lines, checked
                           on resume like the library's (NULL: none)               */
    int64_t resumed_step; /* out: the step the run continued from (0: fresh)       */
    int64_t written;      /* out: checkpoints written                              */
} bn_checkpoint_config;
/* bn_recorder_run with checkpoints.  When the progress callback stops the run
 * (BN_ERR_INTERRUPTED), a checkpoint of that point is written (when ck->path
 * is set) and the recorder is finished, so its partial rows can be saved. */
bn_status bn_recorder_run_checkpointed(bn_recorder *rec, bn_sim *sim, const bn_dataset *ds,
                                       bn_progress_fn progress, void *user, bn_checkpoint_config *ck);
/* The observer itself (user = bn_recorder) and the end-of-run call, for callers
 * that drive bn_sim_run_observed themselves. */
int bn_recorder_observer(void *user, int64_t step, const double *const *fields, int64_t S);
bn_status bn_recorder_finish(bn_recorder *rec);
void bn_recorder_free(bn_recorder *rec);
const bn_events *bn_recorder_events(const bn_recorder *rec);
/* After finish: field `name` (the sim's field names) as S×Rmax row-major,
 * trajectory j's rows sorted by step in its first records[j] columns, NaN
 * after; like bn_sim_field.  Also the sharpness arrays above (S×Rs_max). */
bn_status bn_recorder_field(const bn_recorder *rec, const char *name, const double **data,
                            int64_t *rows, int64_t *cols);
const int64_t *bn_recorder_counts(const bn_recorder *rec); /* S: records[j] */
int64_t bn_recorder_max_records(const bn_recorder *rec);
/* Adds every field (S×Rmax), "records" (S), the adaptive sharpness arrays
 * (when the sim had sharpness), "kappa_scale" (1) and the events table to z: ev_traj (E) and ev_<member> (E) for each bn_spike_event member,
 * sum_<member> (S) for each bn_traj_summary member. */
bn_status bn_recorder_add_npz(const bn_recorder *rec, struct bn_npz *z);
/* Adds the events table of ev to z as above (without the fields), each name
 * preceded by prefix ("" or e.g. "th_"). */
bn_status bn_events_add_npz(const bn_events *ev, const char *prefix, struct bn_npz *z);

/* Sweeps: trajectories with per-trajectory settings and seed ids, run as
 * batches of up to `batch` columns on one backend, with events (every step),
 * theory (square loss) and optional adaptive recording. */
typedef struct {
    int64_t count;                          /* trajectories                      */
    const double *eta_w, *eta_gamma, *gamma0, *w0_scale; /* count each, NULL = cfg scalar */
    const uint64_t *seed_id;                /* count: ξ of w0 (NULL: cfg.seed + j) */
    int64_t batch;                          /* columns per batch (0 = auto)      */
    int theory;                             /* iterate the map (square loss)     */
    bn_recorder_config rec;                 /* every, keep, event params         */
    /* Checkpoints (NULL: none): written after every batch, every `every` steps
     * inside one, and when stopped; a resumed sweep skips finished batches. */
    bn_checkpoint_config *checkpoint;
} bn_sweep_spec;

typedef struct bn_sweep bn_sweep;
/* Progress over the whole sweep: done / total steps×batches (sum of batch
 * steps); non-zero stops it. */
typedef int (*bn_sweep_progress_fn)(void *user, int64_t done, int64_t total, int64_t batch_cols);
/* base: everything but the per-trajectory settings (base->w0 must be NULL).
 * When the progress callback stops the sweep, it returns BN_ERR_INTERRUPTED
 * and still fills *out with the partial sweep (trajectories seen up to the
 * stop; bn_sweep_trajectories_done), which the caller frees. */
bn_status bn_sweep_run(const bn_dataset *ds, const bn_run_config *base, const bn_sweep_spec *spec,
                       bn_sweep_progress_fn progress, void *user, bn_sweep **out);
void bn_sweep_free(bn_sweep *sw);
const bn_events *bn_sweep_events(const bn_sweep *sw);
/* The sweep's recorder (all trajectories): bn_recorder_field, _counts, _add_npz. */
const bn_recorder *bn_sweep_recorder(const bn_sweep *sw);
const bn_events *bn_sweep_theory(const bn_sweep *sw);      /* NULL without theory */
const bn_theory_data *bn_sweep_theory_data(const bn_sweep *sw); /* NULL without */
double bn_sweep_kappa_scale(const bn_sweep *sw);
const bn_ref_info *bn_sweep_ref_info(const bn_sweep *sw);
const double *bn_sweep_w_ref(const bn_sweep *sw);             /* d */
const double *bn_sweep_w0(const bn_sweep *sw);                /* count×d, as used */
const double *bn_sweep_w_final(const bn_sweep *sw);           /* count×d */
const double *bn_sweep_gamma_final(const bn_sweep *sw);       /* count */
const int64_t *bn_sweep_diverged_step(const bn_sweep *sw);    /* count (sim's) */
/* The start of each trajectory as the sim recorded it at t = 0 (count each). */
const double *bn_sweep_alpha0_sigma(const bn_sweep *sw);
const double *bn_sweep_beta0_sigma(const bn_sweep *sw);
int64_t bn_sweep_batches(const bn_sweep *sw);
/* Trajectories whose every step ran (all of them unless the sweep was stopped). */
int64_t bn_sweep_trajectories_done(const bn_sweep *sw);
int64_t bn_sweep_batch_size(const bn_sweep *sw);
const char *bn_sweep_backend_desc(const bn_sweep *sw);
bn_backend_kind bn_sweep_backend(const bn_sweep *sw);
int bn_sweep_threads(const bn_sweep *sw);
double bn_sweep_wall_seconds(const bn_sweep *sw);
/* With rec.keep: the recorded trajectories (as bn_recorder_*). */
bn_status bn_sweep_field(const bn_sweep *sw, const char *name, const double **data, int64_t *rows,
                         int64_t *cols);
const int64_t *bn_sweep_record_counts(const bn_sweep *sw);
int bn_sweep_n_fields(const bn_sweep *sw);
const char *bn_sweep_field_name(const bn_sweep *sw, int i);

/* "12.3 MiB": bytes in binary units, for messages. */
void bn_format_bytes(double bytes, char *buf, size_t cap);

/* Backends compiled into this build, and what each sees (one line each). */
bn_status bn_backends_describe(char *buf, size_t len);

/* The host linear algebra (data set-up, reference solves) runs on OpenBLAS,
 * which picks its kernels when it is loaded.  Debian 12's OpenBLAS 0.3.21 does
 * not know CPUs newer than Cooper Lake and falls back to its SSE3 (Prescott)
 * kernels there, 2.5–4× slower (issue 7: a Sapphire Rapids VM).  This returns
 * the kernel set the CPU can run ("SkylakeX" with AVX-512 F/BW/VL/DQ,
 * "Haswell" with AVX2 and FMA) when OpenBLAS chose an older one, NULL when its
 * choice is fine or OPENBLAS_CORETYPE is already set.  OpenBLAS reads
 * OPENBLAS_CORETYPE only when it starts, so a program sets it and re-executes
 * itself (the CLI and the benchmarks do). */
const char *bn_blas_kernels_suggested(void);
/* Sets OPENBLAS_CORETYPE to bn_blas_kernels_suggested() when that is not
 * NULL; returns 1 when it did, and the program should re-execute itself. */
int bn_blas_kernels_setenv(void);

/* ------------------------------------------------------------- file output */

typedef struct bn_npz bn_npz;

/* An .npz being assembled in memory; bn_npz_write saves it atomically
 * (temp file in the same folder, fsync, rename). */
bn_status bn_npz_create(bn_npz **out);
bn_status bn_npz_add_f64(bn_npz *z, const char *name, const double *data, int ndim,
                         const int64_t *shape);
bn_status bn_npz_add_i64(bn_npz *z, const char *name, const int64_t *data, int ndim,
                         const int64_t *shape);
bn_status bn_npz_write(const bn_npz *z, const char *path);
void bn_npz_free(bn_npz *z);

/* An array read from .npy, converted to float64, row-major. */
typedef struct {
    double *data;
    int ndim;
    int64_t shape[8];
    int64_t size;
} bn_array;

bn_status bn_npy_read(const char *path, bn_array *out);
/* Reads one member "name" (without .npy) of an .npz (stored or deflated). */
bn_status bn_npz_read(const char *path, const char *name, bn_array *out);
bn_status bn_npy_write_f64(const char *path, const double *data, int ndim, const int64_t *shape);
void bn_array_free(bn_array *a);

/* Writes buf to path atomically: path.tmp.XXXXXX in the same folder, fsync, rename. */
bn_status bn_write_file_atomic(const char *path, const void *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
