#include "test_support.h"
#include <criterion/criterion.h>

#include "rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The tests compare the CLI's outputs with the library's, bitwise, and the CLI
 * restarts itself on OpenBLAS's best kernels for this CPU
 * (bn_blas_kernels_suggested, cli_entry.c): so does this program, before
 * Criterion's main (glibc passes main's arguments to constructors). */
__attribute__((constructor)) static void ts_same_blas_kernels_as_cli(int argc, char **argv)
{
    (void)argc;
    if (argv && bn_blas_kernels_setenv()) execv("/proc/self/exe", argv);
}

void ts_problem_make(ts_problem *p, int64_t n, int64_t d, int logistic, uint64_t seed)
{
    p->n = n;
    p->d = d;
    p->xc = malloc((size_t)(n * d) * sizeof(double));
    p->y = malloc((size_t)n * sizeof(double));
    p->w = malloc((size_t)d * sizeof(double));
    bn_rng_normal(seed, BN_STREAM_DATA_X, 0, n * d, p->xc);
    for (int64_t j = 0; j < d; j++) {
        double m = 0;
        for (int64_t i = 0; i < n; i++) m += p->xc[i * d + j];
        for (int64_t i = 0; i < n; i++) p->xc[i * d + j] -= m / (double)n;
    }
    bn_rng_normal(seed, BN_STREAM_DATA_Y, 0, n, p->y);
    if (logistic)
        for (int64_t i = 0; i < n; i++) p->y[i] = p->y[i] >= 0 ? 1.0 : -1.0;
    bn_rng_normal(seed, BN_STREAM_DATA_AUX, 0, d, p->w);
    p->gamma = 0.7;
}

void ts_problem_free(ts_problem *p)
{
    free(p->xc);
    free(p->y);
    free(p->w);
}

static long double u_of(const ts_problem *p, const double *w, int64_t i)
{
    long double s = 0;
    for (int64_t k = 0; k < p->d; k++) s += (long double)p->xc[i * p->d + k] * w[k];
    return s;
}

static long double sigma_norm(const ts_problem *p, const double *w)
{
    long double ss = 0;
    for (int64_t i = 0; i < p->n; i++) {
        long double u = u_of(p, w, i);
        ss += u * u;
    }
    return sqrtl(ss / p->n);
}

static long double ell(long double z, long double y, int logistic)
{
    if (!logistic) return 0.5L * (z - y) * (z - y);
    long double t = -y * z;
    return (t > 0 ? t : 0) + log1pl(expl(-fabsl(t)));
}

static long double ell_d1(long double z, long double y, int logistic)
{
    if (!logistic) return z - y;
    return -y / (1.0L + expl(y * z));
}

double ts_naive_loss(const ts_problem *p, const double *w, double gamma, int logistic)
{
    long double s = sigma_norm(p, w), L = 0;
    for (int64_t i = 0; i < p->n; i++) L += ell(gamma * u_of(p, w, i) / s, p->y[i], logistic);
    return (double)(L / p->n);
}

/* ∂z_i/∂w = γ x̃_i/s - γ u_i Σw/s³ with Σw = Xcᵀu/n; summed sample by sample. */
void ts_naive_grad(const ts_problem *p, int logistic, double *gw, double *ggamma)
{
    int64_t n = p->n, d = p->d;
    long double s = sigma_norm(p, p->w);
    long double *sw = calloc((size_t)d, sizeof(long double));
    long double *acc = calloc((size_t)d, sizeof(long double));
    long double gg = 0;
    for (int64_t i = 0; i < n; i++) {
        long double u = u_of(p, p->w, i);
        for (int64_t k = 0; k < d; k++) sw[k] += p->xc[i * d + k] * u / n;
    }
    for (int64_t i = 0; i < n; i++) {
        long double u = u_of(p, p->w, i);
        long double z = p->gamma * u / s;
        long double l1 = ell_d1(z, p->y[i], logistic);
        for (int64_t k = 0; k < d; k++)
            acc[k] += l1 * (p->gamma * p->xc[i * d + k] / s - p->gamma * u * sw[k] / (s * s * s));
        gg += l1 * u / s;
    }
    for (int64_t k = 0; k < d; k++) gw[k] = (double)(acc[k] / n);
    *ggamma = (double)(gg / n);
    free(sw);
    free(acc);
}

static bn_status upload_any(bn_backend *be, void *dst, const double *src, size_t count)
{
    if (be->precision == BN_FP64) return be->ops->upload(be, dst, src, count * sizeof(double));
    float *t = malloc(count * sizeof(float));
    for (size_t i = 0; i < count; i++) t[i] = (float)src[i];
    bn_status st = be->ops->upload(be, dst, t, count * sizeof(float));
    free(t);
    return st;
}

static bn_status download_any(bn_backend *be, double *dst, const void *src, size_t count)
{
    if (be->precision == BN_FP64) return be->ops->download(be, dst, src, count * sizeof(double));
    float *t = malloc(count * sizeof(float));
    bn_status st = be->ops->download(be, t, src, count * sizeof(float));
    for (size_t i = 0; i < count; i++) dst[i] = t[i];
    free(t);
    return st;
}

bn_status ts_backend_gradient(bn_backend_kind kind, bn_precision prec, const ts_problem *p,
                              int logistic, int64_t S, const double *W, const double *gammas,
                              double *G, double *stats)
{
    bn_backend *be = NULL;
    BN_TRY(bn_backend_open(kind, prec, 1, 0, &be));
    int64_t n = p->n, d = p->d;
    size_t rs = bn_real_size(prec);
    void *dX, *dy, *duh, *deh, *dW, *dU, *dQ, *dG, *dgam, *dst, *deta;
    int64_t *ddiv;
    be->ops->alloc(be, (size_t)(n * d) * rs, &dX);
    be->ops->alloc(be, (size_t)n * rs, &dy);
    be->ops->alloc(be, (size_t)n * rs, &duh);
    be->ops->alloc(be, (size_t)d * rs, &deh);
    be->ops->alloc(be, (size_t)(d * S) * rs, &dW);
    be->ops->alloc(be, (size_t)(d * S) * rs, &dG);
    be->ops->alloc(be, (size_t)(n * S) * rs, &dU);
    be->ops->alloc(be, (size_t)(n * S) * rs, &dQ);
    be->ops->alloc(be, (size_t)S * rs, &dgam);
    be->ops->alloc(be, (size_t)S * rs, &deta);
    be->ops->alloc(be, (size_t)(BN_ST_COUNT * S) * rs, &dst);
    be->ops->alloc(be, (size_t)S * sizeof(int64_t), (void **)&ddiv);
    double *xcm = malloc((size_t)(n * d) * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < d; k++) xcm[i + k * n] = p->xc[i * d + k];
    double *zeros = calloc((size_t)(n > d ? n : d) + (size_t)S, sizeof(double));
    upload_any(be, dX, xcm, (size_t)(n * d));
    upload_any(be, dy, p->y, (size_t)n);
    upload_any(be, duh, zeros, (size_t)n);
    upload_any(be, deh, zeros, (size_t)d);
    upload_any(be, dW, W, (size_t)(d * S)); /* S×d row-major = d×S col-major */
    upload_any(be, dgam, gammas, (size_t)S);
    upload_any(be, deta, zeros, (size_t)S);
    int64_t *div = malloc((size_t)S * sizeof(int64_t));
    for (int64_t j = 0; j < S; j++) div[j] = -1;
    be->ops->upload(be, ddiv, div, (size_t)S * sizeof(int64_t));
    bn_status st = be->ops->product_xw(be, n, d, S, dX, dW, dU);
    if (!st) st = be->ops->forward_columns(be, n, S, dU, dy, duh, dgam, logistic, dQ, dst);
    if (!st) st = be->ops->product_xtq(be, n, d, S, dX, dQ, dG);
    if (!st) st = be->ops->update_columns(be, d, S, dW, dG, deh, deta, deta, dgam, 0, dst, 0, ddiv);
    if (!st) st = download_any(be, G, dG, (size_t)(d * S));
    if (!st) st = download_any(be, stats, dst, (size_t)(BN_ST_COUNT * S));
    void *bufs[] = {dX, dy, duh, deh, dW, dU, dQ, dG, dgam, dst, deta, ddiv};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->ops->dealloc(be, bufs[i]);
    bn_backend_close(be);
    free(xcm);
    free(zeros);
    free(div);
    return st;
}

double *ts_center(const double *X, int64_t n, int64_t d)
{
    double *xc = malloc((size_t)(n * d) * sizeof(double));
    if (!xc) return NULL;
    for (int64_t j = 0; j < d; j++) {
        double mean = 0;
        for (int64_t i = 0; i < n; i++) mean += X[i * d + j];
        mean /= (double)n;
        for (int64_t i = 0; i < n; i++) xc[i * d + j] = X[i * d + j] - mean;
    }
    return xc;
}

double ts_norm(const double *v, int64_t len)
{
    double s = 0;
    for (int64_t i = 0; i < len; i++) s += v[i] * v[i];
    return sqrt(s);
}

double ts_b_norm(const bn_dataset *ds)
{
    int64_t n = bn_dataset_n(ds), d = bn_dataset_d(ds);
    const double *y = bn_dataset_y(ds);
    double *xc = ts_center(bn_dataset_X(ds), n, d);
    double B = 0;
    for (int64_t k = 0; k < d; k++) {
        double b = 0;
        for (int64_t i = 0; i < n; i++) b += xc[i * d + k] * y[i] / (double)n;
        B += b * b;
    }
    free(xc);
    return sqrt(B);
}

double ts_max_abs(const double *a, int64_t len)
{
    double m = 0;
    for (int64_t i = 0; i < len; i++)
        if (fabs(a[i]) > m || isnan(a[i])) m = isnan(a[i]) ? INFINITY : fabs(a[i]);
    return m;
}

double ts_rel_err(const double *a, const double *b, int64_t len)
{
    double m = 0;
    for (int64_t i = 0; i < len; i++) {
        double e = fabs(a[i] - b[i]);
        if (e > m || isnan(e)) m = isnan(e) ? INFINITY : e;
    }
    double s = ts_max_abs(b, len);
    return s > 0 ? m / s : m;
}

void ts_demo_config(bn_run_config *c, bn_backend_kind backend)
{
    bn_run_config_default(c);
    c->backend = backend;
    c->threads = 1;
    c->eta_w = 0.9;
    c->eta_gamma = 0.05;
    c->gamma0 = 0.1;
    c->w0_scale = 0.5;
    c->w0_align = 1.0;
    c->w0_noise = 0.05;
}

const char *ts_cli(void)
{
    /* Absolute, because the CLI tests run it from inside temp folders. */
    static char path[4096];
    const char *c = getenv("BNSPIKE_CLI");
    if (!realpath(c && *c ? c : "build/bnspike", path)) snprintf(path, sizeof path, "%s", c ? c : "build/bnspike");
    return path;
}

int ts_run(const char *cmd, char **out)
{
    char full[8192];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *f = popen(full, "r");
    if (!f) return -1;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t k;
    while ((k = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += k;
        if (cap - len < 2) buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    int status = pclose(f);
    if (out) *out = buf;
    else free(buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

char *ts_tmpdir(void)
{
    char *t = strdup("/tmp/bnspike-test-XXXXXX");
    return mkdtemp(t);
}

void ts_rmdir(const char *path)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", path);
}

int ts_have_numpy(void)
{
    return system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

/* Host float64 arrays to and from backend buffers of either precision, and a
 * backend buffer of count reals (asserting success). */
void ts_up(bn_backend *be, void *dst, const double *src, size_t count)
{
    if (be->precision == BN_FP64) {
        cr_assert_eq(be->ops->upload(be, dst, src, count * sizeof(double)), BN_OK);
        return;
    }
    float *t = malloc(count * sizeof(float) + 4);
    for (size_t i = 0; i < count; i++) t[i] = (float)src[i];
    cr_assert_eq(be->ops->upload(be, dst, t, count * sizeof(float)), BN_OK);
    free(t);
}

void ts_down(bn_backend *be, double *dst, const void *src, size_t count)
{
    if (be->precision == BN_FP64) {
        cr_assert_eq(be->ops->download(be, dst, src, count * sizeof(double)), BN_OK);
        return;
    }
    float *t = malloc(count * sizeof(float) + 4);
    cr_assert_eq(be->ops->download(be, t, src, count * sizeof(float)), BN_OK);
    for (size_t i = 0; i < count; i++) dst[i] = t[i];
    free(t);
}

void *ts_dev(bn_backend *be, size_t count)
{
    void *p = NULL;
    cr_assert_eq(be->ops->alloc(be, (count ? count : 1) * bn_real_size(be->precision), &p), BN_OK);
    return p;
}
