/* Synthetic data sets: bn_dataset_generate(spec, loss, out).
 *
 * A spec is "NAME" or "NAME:key=value,key=value,...".  Keys every generator
 * takes: n (samples), d (features), noise, seed (uint64, default 0).  X is
 * returned row-major n×d; the library centers it itself, so generators only
 * make sure that whatever they promise holds for the centered Xc.  Regression
 * targets are built from Xc w_true (not X w_true): the model has no bias and
 * its outputs always sum to zero, so a constant offset in y could never be
 * fitted and would only raise the loss floor.  Labels are sign(·) with
 * sign(0) = +1.  Keys that only matter for the other loss are accepted and
 * ignored; the data set's name lists exactly the values that were used.
 *
 * whitened   n=400 d=20 noise=0.5 wnorm=1          (square; logistic allowed)
 *   Xc with exactly Σ = Xcᵀ Xc / n = I_d, so needs n-1 >= d (centering costs
 *   one dimension).  A Gaussian n×d matrix is centered and orthonormalized by
 *   QR, centered and orthonormalized once more (the second pass removes the
 *   rounding-level column means the first leaves), and scaled by sqrt(n).
 *   square: y = Xc w_true + noise·ε, w_true Gaussian with ‖w_true‖ = wnorm.
 *   logistic: y = sign(Xc w_true) (noise unused).
 *
 * hilbert    n=64 d=256 noise=0.01 ynoise=0 scale=auto wnorm=1   (Section 6)
 *   H_ij = 1/(i+j+1) (i < n, j < d), X = c · Q_n H Q_d + noise·G with Haar
 *   orthogonal Q_n (n×n), Q_d (d×d) and G Gaussian.  scale=auto takes
 *   c = sqrt(n·d)/‖H‖_F, so c·Q_n H Q_d has mean square 1 over all entries:
 *   the columns have unit mean square on average (the rotation mixes them, so
 *   each one is only close to 1); scale=<c> sets c directly.  The noise is
 *   what keeps the instance from being numerically rank ~20: it is the
 *   paper's "poorly conditioned, small margin" knob.  d > n is allowed.
 *   square: y = Xc w_true + ynoise·ε (‖w_true‖ = wnorm).
 *   logistic: y = sign(Xc w_true): separable through the origin after
 *   centering by construction (w_true separates), unless some Xc w_true is
 *   exactly 0.  With d >= n-1 and Xc of rank n-1 any labels are separable.
 *
 * gaussian   n=200 d=50 noise=0.1 margin=0.1 wnorm=1
 *   square: X ~ N(0,1) entrywise, y = Xc w_true + noise·ε.
 *   logistic: linearly separable labels with margin.  Along ŵ = w_true/‖w_true‖
 *   each sample gets a coordinate s_i drawn from N(0,1) restricted to
 *   |s| >= margin (rejection, deterministic in the seed); the rest of x_i is
 *   the Gaussian part orthogonal to ŵ, centered.  To keep the margin after
 *   centering, the positive s are scaled by sqrt(N/P) and the negative ones by
 *   sqrt(P/N) (P, N: sums of |s| per side), which makes Σ s_i = 0, and then
 *   all s by max(1, margin/min|s|).  So |⟨x̃_i, ŵ⟩| >= margin exactly (up to
 *   rounding) and y = sign(s).  margin must lie in [0, 3]; noise is unused.
 *
 * active-margin  n=64 d=256 margin=1 noise=1       (logistic only)
 *   The paper's Assumption 3: every sample is a support vector of the
 *   hard-margin SVM on the centered data (no bias).  With a random unit u,
 *   alternating labels y_i = +1, -1, ... (n must be even) and
 *       x̃_i = y_i · margin · u + v_i,   v_i ⟂ u,   Σ_{y_i=+1} v_i = Σ_{y_i=-1} v_i = 0,
 *   (v_i: noise·Gaussian, projected off u, each class's mean removed):
 *     - the rows sum to zero, so centering leaves X unchanged;
 *     - w* = u/margin gives y_i⟨w*, x̃_i⟩ = 1 for every i;
 *     - w* = Σ λ_i y_i x̃_i with λ_i = 1/(n·margin²) > 0 for all i, since
 *       Σ y_i x̃_i = n·margin·u + Σ y_i v_i and Σ y_i v_i = 0.
 *   Primal feasibility, dual feasibility, stationarity and complementary
 *   slackness hold, so w* is the (unique) max-margin solution, every margin is
 *   active and every multiplier strictly positive; its geometric margin is
 *   `margin`.  Works for any d >= 1.  Balanced classes are not a convenience
 *   here but a necessity: Σ_i y_i (y_i⟨w, x̃_i⟩) = ⟨w, Σ_i x̃_i⟩ = 0, so all
 *   margins can equal 1 only if Σ y_i = 0.
 *
 * Random numbers: Philox with key = seed; features on BN_STREAM_DATA_X,
 * target noise on BN_STREAM_DATA_Y, rotations on BN_STREAM_DATA_ROT, and
 * w_true / u / the s_i of gaussian-logistic on BN_STREAM_DATA_AUX.  The draws
 * are a pure function of the seed, so a spec gives bit-identical data on a
 * given build; whitened and hilbert also go through LAPACK/BLAS (QR,
 * products), whose last bits may differ between BLAS builds or CPUs, so
 * across machines they agree to rounding (the checksum shows which). */
#include "internal.h"
#include "linalg.h"
#include "rng.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t n, d;
    double noise, ynoise, wnorm, margin, scale; /* scale <= 0 means auto */
    uint64_t seed;
} gen_params;

typedef bn_status (*gen_fn)(const gen_params *p, bn_loss loss, double *X, double *y);

typedef struct {
    const char *name;
    const char *keys; /* the valid keys, in the order the name lists them */
    gen_params defaults;
    gen_fn make;
} generator;

enum { KEY_COUNT = 8 };

/* ------------------------------------------------------------- helpers */

static double *alloc_doubles(int64_t a, int64_t b)
{
    size_t count = bn_mul_size((size_t)a, (size_t)b);
    if (!count || !bn_mul_size(count, sizeof(double))) return NULL;
    return malloc(count * sizeof(double));
}

static void center_columns(double *X, int64_t n, int64_t d)
{
    for (int64_t j = 0; j < d; j++) {
        double mean = 0;
        for (int64_t i = 0; i < n; i++) mean += X[i * d + j];
        mean /= (double)n;
        for (int64_t i = 0; i < n; i++) X[i * d + j] -= mean;
    }
}

static double norm2(const double *v, int64_t len)
{
    double s = 0;
    for (int64_t i = 0; i < len; i++) s += v[i] * v[i];
    return sqrt(s);
}

/* w_true: Gaussian direction (AUX stream, values 0..d-1) scaled to `length`. */
static void random_direction(uint64_t seed, int64_t d, double length, double *w)
{
    bn_rng_normal(seed, BN_STREAM_DATA_AUX, 0, d, w);
    double nw = norm2(w, d);
    for (int64_t j = 0; j < d; j++) w[j] *= length / nw;
}

/* Haar-random orthogonal k×k from values k0.. of the rotation stream. */
static bn_status haar_orthogonal(uint64_t seed, uint64_t k0, int64_t k, double *Q)
{
    double *G = alloc_doubles(k, k);
    if (!G) return bn_fail(BN_ERR_NOMEM, "cannot allocate a %lld×%lld rotation", (long long)k, (long long)k);
    bn_rng_normal(seed, BN_STREAM_DATA_ROT, k0, k * k, G);
    bn_status st = bn_la_orthonormalize(G, k, k, Q);
    free(G);
    return st;
}

/* Targets from a copy of X centered here: y = Xc w_true (+ noise·ε) for
 * square loss, sign(Xc w_true) for logistic. */
static bn_status make_targets(const gen_params *p, bn_loss loss, const double *X, double noise,
                              double *y)
{
    int64_t n = p->n, d = p->d;
    double *xc = alloc_doubles(n, d);
    double *w = alloc_doubles(d, 1);
    double *eps = alloc_doubles(n, 1);
    bn_status st = BN_OK;
    if (!xc || !w || !eps) {
        st = bn_fail(BN_ERR_NOMEM, "cannot allocate the targets of a %lld×%lld data set",
                     (long long)n, (long long)d);
        goto done;
    }
    memcpy(xc, X, (size_t)n * (size_t)d * sizeof(double));
    center_columns(xc, n, d);
    random_direction(p->seed, d, p->wnorm, w);
    bn_la_gemv(0, n, d, 1.0, xc, w, 0.0, y);
    if (loss == BN_LOSS_LOGISTIC) {
        for (int64_t i = 0; i < n; i++) y[i] = y[i] >= 0 ? 1.0 : -1.0;
    } else {
        bn_rng_normal(p->seed, BN_STREAM_DATA_Y, 0, n, eps);
        for (int64_t i = 0; i < n; i++) y[i] += noise * eps[i];
    }
done:
    free(xc);
    free(w);
    free(eps);
    return st;
}

/* ---------------------------------------------------------- generators */

static bn_status gen_whitened(const gen_params *p, bn_loss loss, double *X, double *y)
{
    int64_t n = p->n, d = p->d;
    double *G = alloc_doubles(n, d);
    if (!G) return bn_fail(BN_ERR_NOMEM, "cannot allocate a %lld×%lld matrix", (long long)n, (long long)d);
    bn_rng_normal(p->seed, BN_STREAM_DATA_X, 0, n * d, G);
    center_columns(G, n, d);
    bn_status st = bn_la_orthonormalize(G, n, d, X);
    if (st == BN_OK) {
        center_columns(X, n, d);
        st = bn_la_orthonormalize(X, n, d, G);
    }
    if (st == BN_OK) {
        double root_n = sqrt((double)n);
        for (int64_t i = 0; i < n * d; i++) X[i] = root_n * G[i];
        st = make_targets(p, loss, X, p->noise, y);
    }
    free(G);
    return st;
}

static bn_status gen_hilbert(const gen_params *p, bn_loss loss, double *X, double *y)
{
    int64_t n = p->n, d = p->d;
    double *H = alloc_doubles(n, d);
    double *T = alloc_doubles(n, d);
    double *Qn = alloc_doubles(n, n);
    double *Qd = alloc_doubles(d, d);
    bn_status st = BN_OK;
    if (!H || !T || !Qn || !Qd) {
        st = bn_fail(BN_ERR_NOMEM, "cannot allocate the %lld×%lld Hilbert data", (long long)n, (long long)d);
        goto done;
    }
    double fro2 = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) {
            H[i * d + j] = 1.0 / (double)(i + j + 1);
            fro2 += H[i * d + j] * H[i * d + j];
        }
    double c = p->scale > 0 ? p->scale : sqrt((double)n * (double)d / fro2);
    st = haar_orthogonal(p->seed, 0, n, Qn);
    if (st == BN_OK) st = haar_orthogonal(p->seed, (uint64_t)(n * n), d, Qd);
    if (st != BN_OK) goto done;
    bn_la_gemm(0, 0, n, d, d, 1.0, H, d, Qd, d, 0.0, T, d);
    bn_la_gemm(0, 0, n, d, n, c, Qn, n, T, d, 0.0, X, d);
    bn_rng_normal(p->seed, BN_STREAM_DATA_X, 0, n * d, T);
    for (int64_t i = 0; i < n * d; i++) X[i] += p->noise * T[i];
    st = make_targets(p, loss, X, p->ynoise, y);
done:
    free(H);
    free(T);
    free(Qn);
    free(Qd);
    return st;
}

/* The coordinates s_i along ŵ for gaussian-logistic; see the top comment. */
static bn_status separable_coordinates(const gen_params *p, double *s)
{
    int64_t n = p->n;
    uint64_t k = (uint64_t)p->d; /* AUX values 0..d-1 are w_true */
    /* At margin 3 one draw in 370 is kept; this cap is never reached in
     * practice and only guards against a loop that cannot end. */
    uint64_t k_max = k + (uint64_t)n * 1000000u;
    for (int64_t i = 0; i < n; i++) {
        do {
            if (k >= k_max)
                return bn_fail(BN_ERR_ARG, "gaussian: margin=%g rejects too many draws", p->margin);
            bn_rng_normal(p->seed, BN_STREAM_DATA_AUX, k++, 1, &s[i]);
        } while (fabs(s[i]) < p->margin);
    }
    double pos = 0, neg = 0;
    int any_pos = 0, any_neg = 0;
    for (int64_t i = 0; i < n; i++) {
        if (s[i] > 0) any_pos = 1;
        else any_neg = 1;
    }
    if (!any_pos || !any_neg) s[n - 1] = -s[n - 1]; /* one class would be empty */
    for (int64_t i = 0; i < n; i++) {
        if (s[i] > 0) pos += s[i];
        else neg -= s[i];
    }
    if (!(pos > 0) || !(neg > 0)) /* only if draws are exactly 0, i.e. never */
        return bn_fail(BN_ERR_DATA, "gaussian: could not draw both classes");
    double up = sqrt(neg / pos), down = sqrt(pos / neg), smallest = INFINITY;
    for (int64_t i = 0; i < n; i++) {
        s[i] *= s[i] > 0 ? up : down;
        if (fabs(s[i]) < smallest) smallest = fabs(s[i]);
    }
    double grow = smallest < p->margin ? p->margin / smallest : 1.0;
    for (int64_t i = 0; i < n; i++) s[i] *= grow;
    return BN_OK;
}

static bn_status gen_gaussian(const gen_params *p, bn_loss loss, double *X, double *y)
{
    int64_t n = p->n, d = p->d;
    bn_rng_normal(p->seed, BN_STREAM_DATA_X, 0, n * d, X);
    if (loss == BN_LOSS_SQUARE) return make_targets(p, loss, X, p->noise, y);

    double *w = alloc_doubles(d, 1);
    double *s = alloc_doubles(n, 1);
    bn_status st = BN_OK;
    if (!w || !s) {
        st = bn_fail(BN_ERR_NOMEM, "cannot allocate the gaussian labels");
        goto done;
    }
    random_direction(p->seed, d, 1.0, w);
    for (int64_t i = 0; i < n; i++) { /* keep only the part orthogonal to ŵ */
        double *x = X + i * d, along = 0;
        for (int64_t j = 0; j < d; j++) along += x[j] * w[j];
        for (int64_t j = 0; j < d; j++) x[j] -= along * w[j];
    }
    center_columns(X, n, d);
    st = separable_coordinates(p, s);
    if (st != BN_OK) goto done;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < d; j++) X[i * d + j] += s[i] * w[j];
        y[i] = s[i] > 0 ? 1.0 : -1.0;
    }
done:
    free(w);
    free(s);
    return st;
}

static bn_status gen_active_margin(const gen_params *p, bn_loss loss, double *X, double *y)
{
    (void)loss;
    int64_t n = p->n, d = p->d;
    double *u = alloc_doubles(d, 1);
    if (!u) return bn_fail(BN_ERR_NOMEM, "cannot allocate the active-margin direction");
    random_direction(p->seed, d, 1.0, u);
    bn_rng_normal(p->seed, BN_STREAM_DATA_X, 0, n * d, X);
    for (int64_t i = 0; i < n; i++) {
        y[i] = i % 2 == 0 ? 1.0 : -1.0;
        double *v = X + i * d, along = 0;
        for (int64_t j = 0; j < d; j++) along += v[j] * u[j];
        for (int64_t j = 0; j < d; j++) v[j] = p->noise * (v[j] - along * u[j]);
    }
    /* Remove each class's mean (classes are the even and the odd rows). */
    for (int parity = 0; parity < 2; parity++)
        for (int64_t j = 0; j < d; j++) {
            double mean = 0;
            for (int64_t i = parity; i < n; i += 2) mean += X[i * d + j];
            mean /= (double)(n / 2);
            for (int64_t i = parity; i < n; i += 2) X[i * d + j] -= mean;
        }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) X[i * d + j] += y[i] * p->margin * u[j];
    free(u);
    return BN_OK;
}

/* ------------------------------------------------------------ the table */

static const generator generators[] = {
    {"whitened", "n,d,noise,wnorm,seed",
     {.n = 400, .d = 20, .noise = 0.5, .wnorm = 1}, gen_whitened},
    {"hilbert", "n,d,noise,ynoise,scale,wnorm,seed",
     {.n = 64, .d = 256, .noise = 0.01, .ynoise = 0, .scale = 0, .wnorm = 1}, gen_hilbert},
    {"gaussian", "n,d,noise,margin,wnorm,seed",
     {.n = 200, .d = 50, .noise = 0.1, .margin = 0.1, .wnorm = 1}, gen_gaussian},
    {"active-margin", "n,d,margin,noise,seed",
     {.n = 64, .d = 256, .margin = 1, .noise = 1}, gen_active_margin},
};
enum { N_GENERATORS = sizeof generators / sizeof generators[0] };

static const char generator_names[] = "whitened, hilbert, gaussian, active-margin";

/* --------------------------------------------------------------- parsing */

/* Is `key` (len bytes) one of the comma-separated words of `list`? */
static int key_in_list(const char *key, size_t len, const char *list)
{
    for (const char *w = list; *w;) {
        size_t wl = strcspn(w, ",");
        if (wl == len && strncmp(w, key, len) == 0) return 1;
        w += wl + (w[wl] == ',');
    }
    return 0;
}

static bn_status bad_value(const char *spec, const generator *g, const char *key,
                           const char *value, const char *expected)
{
    return bn_fail(BN_ERR_ARG,
                   "generator spec '%s': key %s needs %s, got '%s' (valid keys for %s: %s)",
                   spec, key, expected, value, g->name, g->keys);
}

static int parse_int(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno) return 0;
    *out = v;
    return 1;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9') return 0; /* strtoull would accept "-1" */
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno) return 0;
    *out = v;
    return 1;
}

static int parse_real(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

static bn_status set_key(const char *spec, const generator *g, const char *key,
                         const char *value, gen_params *p)
{
    if (strcmp(key, "n") == 0 || strcmp(key, "d") == 0) {
        int64_t v;
        int is_n = key[0] == 'n';
        if (!parse_int(value, &v) || v < (is_n ? 2 : 1) || v > 2147483647)
            return bad_value(spec, g, key, value,
                             is_n ? "an integer >= 2 (samples)" : "an integer >= 1 (features)");
        *(is_n ? &p->n : &p->d) = v;
    } else if (strcmp(key, "seed") == 0) {
        if (!parse_u64(value, &p->seed))
            return bad_value(spec, g, key, value, "an unsigned 64-bit integer");
    } else if (strcmp(key, "scale") == 0) {
        if (strcmp(value, "auto") == 0) p->scale = 0;
        else if (!parse_real(value, &p->scale) || !(p->scale > 0))
            return bad_value(spec, g, key, value, "'auto' or a number > 0");
    } else {
        /* noise, ynoise, wnorm, margin: the key was already checked against g->keys */
        double v;
        int positive = strcmp(key, "wnorm") == 0; /* a zero w_true would make y pure noise */
        if (!parse_real(value, &v) || v < 0 || (positive && v == 0))
            return bad_value(spec, g, key, value, positive ? "a number > 0" : "a number >= 0");
        if (strcmp(key, "noise") == 0) p->noise = v;
        else if (strcmp(key, "ynoise") == 0) p->ynoise = v;
        else if (positive) p->wnorm = v;
        else p->margin = v;
    }
    return BN_OK;
}

static void trim(char **s)
{
    while (**s == ' ' || **s == '\t') (*s)++;
    char *e = *s + strlen(*s);
    while (e > *s && (e[-1] == ' ' || e[-1] == '\t')) *--e = '\0';
}

/* Splits "NAME:k=v,..." into the generator and its parameters. */
static bn_status parse_spec(const char *spec, const generator **g_out, gen_params *p)
{
    size_t name_len = strcspn(spec, ":");
    const generator *g = NULL;
    for (int i = 0; i < N_GENERATORS; i++)
        if (strlen(generators[i].name) == name_len && strncmp(spec, generators[i].name, name_len) == 0)
            g = &generators[i];
    if (!g)
        return bn_fail(BN_ERR_ARG, "unknown generator '%.*s' in spec '%s' (valid: %s)",
                       (int)name_len, spec, spec, generator_names);
    *g_out = g;
    *p = g->defaults;
    if (spec[name_len] == '\0') return BN_OK;

    char *copy = strdup(spec + name_len + 1);
    if (!copy) return bn_fail(BN_ERR_NOMEM, "cannot copy the generator spec");
    char seen[KEY_COUNT][16];
    int n_seen = 0;
    bn_status st = BN_OK;
    for (char *item = copy, *next; item && st == BN_OK; item = next) {
        next = strchr(item, ',');
        if (next) *next++ = '\0';
        char *eq = strchr(item, '=');
        if (!eq) {
            trim(&item);
            st = bn_fail(BN_ERR_ARG, "generator spec '%s': item '%s' is not key=value (valid keys for %s: %s)",
                         spec, item, g->name, g->keys);
            break;
        }
        *eq = '\0';
        char *key = item, *value = eq + 1;
        trim(&key);
        trim(&value);
        if (!key_in_list(key, strlen(key), g->keys)) {
            st = bn_fail(BN_ERR_ARG, "generator spec '%s': unknown key '%s' for %s (valid keys: %s)",
                         spec, key, g->name, g->keys);
            break;
        }
        for (int i = 0; i < n_seen; i++)
            if (strcmp(seen[i], key) == 0)
                st = bn_fail(BN_ERR_ARG, "generator spec '%s': key %s is given twice", spec, key);
        if (st != BN_OK) break;
        snprintf(seen[n_seen++], sizeof seen[0], "%s", key); /* valid keys are short and < KEY_COUNT */
        st = set_key(spec, g, key, value, p);
    }
    free(copy);
    return st;
}

/* Checks that need several keys or the loss. */
static bn_status check_params(const char *spec, const generator *g, const gen_params *p, bn_loss loss)
{
    if (strcmp(g->name, "whitened") == 0 && p->n - 1 < p->d)
        return bn_fail(BN_ERR_ARG,
                       "generator spec '%s': whitened data needs n-1 >= d (centering leaves rank n-1), "
                       "got n=%lld, d=%lld", spec, (long long)p->n, (long long)p->d);
    if (strcmp(g->name, "gaussian") == 0 && loss == BN_LOSS_LOGISTIC && p->margin > 3)
        return bn_fail(BN_ERR_ARG, "generator spec '%s': key margin needs a number in [0, 3] "
                       "(in standard deviations of the features), got %g", spec, p->margin);
    if (strcmp(g->name, "active-margin") == 0) {
        if (loss != BN_LOSS_LOGISTIC)
            return bn_fail(BN_ERR_ARG, "generator spec '%s': active-margin makes ±1 labels for "
                           "the logistic loss; it has no regression targets", spec);
        if (p->n % 2)
            return bn_fail(BN_ERR_ARG, "generator spec '%s': active-margin needs an even n (every "
                           "margin can be active only with balanced classes), got n=%lld",
                           spec, (long long)p->n);
        if (!(p->margin > 0))
            return bn_fail(BN_ERR_ARG, "generator spec '%s': key margin needs a number > 0 for "
                           "active-margin, got %g", spec, p->margin);
    }
    return BN_OK;
}

/* Does this generator use `key` under this loss?  (Others are accepted but
 * left out of the name, so the name says exactly what made the data.) */
static int key_used(const generator *g, const char *key, bn_loss loss)
{
    int square = loss == BN_LOSS_SQUARE;
    if (strcmp(key, "margin") == 0) return !square;
    if (strcmp(key, "wnorm") == 0 || strcmp(key, "ynoise") == 0) return square;
    if (strcmp(key, "noise") == 0)
        return square || strcmp(g->name, "hilbert") == 0 || strcmp(g->name, "active-margin") == 0;
    return 1;
}

/* The spec with every value that was used, for the data set's name. */
static void canonical_name(const generator *g, const gen_params *p, bn_loss loss, char *buf, size_t len)
{
    size_t at = (size_t)snprintf(buf, len, "%s:n=%lld,d=%lld", g->name, (long long)p->n, (long long)p->d);
    for (const char *w = g->keys; *w && at < len;) {
        size_t wl = strcspn(w, ",");
        char key[16];
        snprintf(key, sizeof key, "%.*s", (int)wl, w);
        w += wl + (w[wl] == ',');
        if (!key_used(g, key, loss) || strcmp(key, "n") == 0 || strcmp(key, "d") == 0) continue;
        char value[64];
        if (strcmp(key, "seed") == 0) snprintf(value, sizeof value, "%llu", (unsigned long long)p->seed);
        else if (strcmp(key, "scale") == 0 && p->scale <= 0) snprintf(value, sizeof value, "auto");
        else {
            double v = strcmp(key, "noise") == 0    ? p->noise
                       : strcmp(key, "ynoise") == 0 ? p->ynoise
                       : strcmp(key, "wnorm") == 0  ? p->wnorm
                       : strcmp(key, "margin") == 0 ? p->margin
                                                    : p->scale;
            /* the shortest form that reads back as the same double */
            snprintf(value, sizeof value, "%.15g", v);
            if (strtod(value, NULL) != v) snprintf(value, sizeof value, "%.17g", v);
        }
        at += (size_t)snprintf(buf + at, len - at, ",%s=%s", key, value);
    }
}

bn_status bn_dataset_generate(const char *spec, bn_loss loss, bn_dataset **out)
{
    if (!out) return bn_fail(BN_ERR_ARG, "bn_dataset_generate: out is NULL");
    *out = NULL;
    if (!spec || !*spec)
        return bn_fail(BN_ERR_ARG, "empty generator spec (valid generators: %s)", generator_names);
    if (loss != BN_LOSS_SQUARE && loss != BN_LOSS_LOGISTIC)
        return bn_fail(BN_ERR_ARG, "bn_dataset_generate: unknown loss %d", (int)loss);
    const generator *g = NULL;
    gen_params p;
    BN_TRY(parse_spec(spec, &g, &p));
    BN_TRY(check_params(spec, g, &p, loss));

    double *X = alloc_doubles(p.n, p.d);
    double *y = alloc_doubles(p.n, 1);
    bn_status st = BN_OK;
    if (!X || !y)
        st = bn_fail(BN_ERR_NOMEM, "cannot allocate a %lld×%lld data set", (long long)p.n, (long long)p.d);
    if (st == BN_OK) st = g->make(&p, loss, X, y);
    if (st == BN_OK) {
        char name[256];
        canonical_name(g, &p, loss, name, sizeof name);
        st = bn_dataset_create(X, y, p.n, p.d, name, out);
    }
    free(X);
    free(y);
    return st;
}
