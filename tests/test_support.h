/* Shared helpers of the test suite: random problems from the project's own
 * counter-based RNG, a naive per-sample reference of the model, and a way to
 * evaluate one gradient through any backend. */
#ifndef BN_TEST_SUPPORT_H
#define BN_TEST_SUPPORT_H

#include "backend.h"
#include "bnspike.h"

/* A random problem: centered Xc (n×d row-major), y (real or ±1), w, gamma. */
typedef struct {
    int64_t n, d;
    double *xc, *y, *w;
    double gamma;
} ts_problem;

void ts_problem_make(ts_problem *p, int64_t n, int64_t d, int logistic, uint64_t seed);
void ts_problem_free(ts_problem *p);

/* L(w, γ) by the per-sample definition of MODEL.md, in long double. */
double ts_naive_loss(const ts_problem *p, const double *w, double gamma, int logistic);
/* ∇_w L and ∂_γ L by the per-sample chain rule (no one-product shortcut). */
void ts_naive_grad(const ts_problem *p, int logistic, double *gw, double *ggamma);

/* One gradient through the backend's primitives for S copies of the problem
 * with different w columns (W: S×d row-major, gammas: S).  Outputs G: S×d,
 * stats: BN_ST_COUNT×S (float64). */
bn_status ts_backend_gradient(bn_backend_kind kind, bn_precision prec, const ts_problem *p,
                              int logistic, int64_t S, const double *W, const double *gammas,
                              double *G, double *stats);

/* Independent references computed here from the data (not via the library):
 * X minus its column means (n×d row-major, caller frees), the Euclidean norm,
 * and B = ‖Xcᵀy/n‖ of MODEL.md. */
double *ts_center(const double *X, int64_t n, int64_t d);
double ts_norm(const double *v, int64_t len);
double ts_b_norm(const bn_dataset *ds);

double ts_rel_err(const double *a, const double *b, int64_t len); /* ‖a-b‖∞ / ‖b‖∞ */
double ts_max_abs(const double *a, int64_t len);

/* MODEL.md's delayed-spike example (the demo): data spec and settings. */
#define TS_DEMO_SPEC "whitened:n=400,d=20,noise=0.5,wnorm=4,seed=1"
void ts_demo_config(bn_run_config *c, bn_backend_kind backend);

/* Path of the bnspike CLI under test (BNSPIKE_CLI, else build/bnspike). */
const char *ts_cli(void);
/* Runs a shell command, returns its exit status; stderr+stdout go to *out (malloc'ed). */
int ts_run(const char *cmd, char **out);
/* A fresh temp folder (mkdtemp) and its recursive removal. */
char *ts_tmpdir(void);
void ts_rmdir(const char *path);
/* Whether /usr/bin/python3 can import numpy (the independent oracle). */
int ts_have_numpy(void);

/* float64 host arrays to/from backend buffers of the backend's precision, and
 * a backend buffer of count reals; each asserts success (Criterion). */
void ts_up(bn_backend *be, void *dst, const double *src, size_t count);
void ts_down(bn_backend *be, double *dst, const void *src, size_t count);
void *ts_dev(bn_backend *be, size_t count);

#endif
