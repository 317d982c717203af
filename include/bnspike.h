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
    double residual;      /* LS: ‖Xc w - y‖/‖y‖;  SVM: 1 - min margin (≤ 0 ok)  */
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
} bn_run_config;

void bn_run_config_default(bn_run_config *cfg);

typedef struct bn_sim bn_sim;

/* Progress: called from the driver thread between steps; return non-zero to stop. */
typedef int (*bn_progress_fn)(void *user, int64_t step, int64_t steps);

bn_status bn_sim_create(const bn_dataset *ds, const bn_run_config *cfg, bn_sim **out);
bn_status bn_sim_run(bn_sim *sim, bn_progress_fn progress, void *user);
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

/* Backends compiled into this build, and what each sees (one line each). */
bn_status bn_backends_describe(char *buf, size_t len);

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
