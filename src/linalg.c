/* Dense linear algebra on LAPACKE/CBLAS; see linalg.h.  This is the only
 * translation unit that includes lapacke.h or cblas.h, so a change of LAPACK
 * provider touches one file. */
#include "linalg.h"

#include <cblas.h>
#include <float.h>
#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct bn_la_rowspace {
    int64_t rank, dim;
    double *basis; /* rank×dim row-major, orthonormal rows */
};

double bn_la_default_rcond(int64_t m, int64_t n)
{
    return (double)(m > n ? m : n) * DBL_EPSILON;
}

static double resolve_rcond(double rcond, int64_t m, int64_t n)
{
    return rcond > 0 ? rcond : bn_la_default_rcond(m, n);
}

extern char *openblas_get_corename(void);

const char *bn_blas_kernels_suggested(void)
{
    if (getenv("OPENBLAS_CORETYPE")) return NULL;
    const char *core = openblas_get_corename();
    /* OpenBLAS's names of the Intel cores before Haswell: its fallbacks. */
    static const char *const older[] = {"Katmai", "Coppermine", "Northwood", "Prescott", "Banias", "Atom",
                                        "Core2", "Penryn", "Dunnington", "Nehalem", "Sandybridge"};
    int old = 0;
    for (size_t i = 0; core && i < sizeof older / sizeof older[0]; i++) old |= strcmp(core, older[i]) == 0;
    if (!old) return NULL;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

int bn_blas_kernels_setenv(void)
{
    const char *kernels = bn_blas_kernels_suggested();
    return kernels && setenv("OPENBLAS_CORETYPE", kernels, 1) == 0;
}

/* LAPACK indexes with (32-bit) lapack_int: refuse what it cannot address. */
static bn_status check_dims(const char *what, int64_t m, int64_t n)
{
    if (m < 1 || n < 1 || m > INT_MAX || n > INT_MAX)
        return bn_fail(BN_ERR_ARG, "%s: matrix shape %lld×%lld is empty or too large for LAPACK",
                       what, (long long)m, (long long)n);
    return BN_OK;
}

/* Every BLAS and LAPACK call runs on a fixed number of OpenBLAS threads: one,
 * or LA_BIG_THREADS for a call of more than LA_BIG_FLOPS.  OpenBLAS splits
 * its work by its thread count (by default the number of cores), and the
 * rounding follows the split: on this machine the hilbert data set, the
 * row-space basis and with them whole trajectories differed between
 * OPENBLAS_NUM_THREADS=1 and 2 (issue 7, found while comparing runs).  A seed
 * must give the same numbers on a 2-core CI runner and a 16-core laptop (of
 * one CPU family: OpenBLAS's kernels differ between families).  The count
 * depends on the call's size only; large set-ups (n=4096, d=8192: a
 * least-squares solve of 1e12 flops, 88 s on one thread) keep several
 * threads, oversubscribed on smaller machines.  The steps use the
 * deterministic GEMM (cpu/det_gemm.c).  The caller's setting is restored, so
 * a benchmark's own BLAS calls keep their threads. */
#define LA_BIG_FLOPS 2e9
#define LA_BIG_THREADS 8

static int la_threads_enter(double flops)
{
    int nt = openblas_get_num_threads(), want = flops > LA_BIG_FLOPS ? LA_BIG_THREADS : 1;
    if (nt != want) openblas_set_num_threads(want);
    return nt;
}

static void la_threads_leave(int nt)
{
    if (openblas_get_num_threads() != nt) openblas_set_num_threads(nt);
}

/* stmt, a BLAS/LAPACK call of about `flops` operations, on the fixed count. */
#define LA_FIXED(flops, stmt)                          \
    do {                                               \
        int la_nt_ = la_threads_enter((double)(flops)); \
        stmt;                                          \
        la_threads_leave(la_nt_);                      \
    } while (0)

static double *alloc_doubles(int64_t a, int64_t b)
{
    size_t count = bn_mul_size((size_t)a, (size_t)b);
    if (!count || !bn_mul_size(count, sizeof(double))) return NULL;
    return malloc(count * sizeof(double));
}

/* LAPACKE returns a negative info for a bad argument or a failed internal
 * allocation (its row-major wrappers transpose into scratch memory), and a
 * positive one when the algorithm itself did not converge. */
static bn_status lapack_status(const char *routine, lapack_int info)
{
    if (info == 0) return BN_OK;
    if (info == LAPACK_WORK_MEMORY_ERROR || info == LAPACK_TRANSPOSE_MEMORY_ERROR)
        return bn_fail(BN_ERR_NOMEM, "%s: LAPACK could not allocate its workspace", routine);
    if (info < 0)
        return bn_fail(BN_ERR_BACKEND, "%s: LAPACK rejected argument %d", routine, (int)-info);
    return bn_fail(BN_ERR_BACKEND, "%s: LAPACK did not converge (info = %d)", routine, (int)info);
}

void bn_la_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                const double *A, int64_t lda, const double *B, int64_t ldb, double beta,
                double *C, int64_t ldc)
{
    double flops = 2.0 * (double)m * (double)n * (double)k;
    LA_FIXED(flops, cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, A, (int)lda, B,
                                (int)ldb, beta, C, (int)ldc));
}

void bn_la_gemv(int trans_a, int64_t m, int64_t n, double alpha, const double *A,
                const double *x, double beta, double *y)
{
    LA_FIXED(0, cblas_dgemv(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, (int)m, (int)n, alpha, A, (int)n, x,
                            1, beta, y, 1));
}

void bn_la_rot(int64_t len, double *x, double *y, double c, double s)
{
    LA_FIXED(0, cblas_drot((int)len, x, 1, y, 1, c, s));
}

bn_status bn_la_lstsq(const double *A, int64_t m, int64_t n, const double *B, int64_t nrhs,
                      double rcond, double *X, int64_t *rank_out)
{
    BN_TRY(check_dims("least squares", m, n));
    if (nrhs < 1 || nrhs > INT_MAX)
        return bn_fail(BN_ERR_ARG, "least squares: %lld right-hand sides", (long long)nrhs);
    /* dgelsd overwrites A, and B must have max(m, n) rows: it returns the
     * n-row solution in the same array. */
    int64_t rows_b = m > n ? m : n;
    int64_t k = m < n ? m : n;
    double *a = alloc_doubles(m, n);
    double *b = alloc_doubles(rows_b, nrhs);
    double *s = alloc_doubles(k, 1);
    bn_status st = BN_OK;
    if (!a || !b || !s) {
        st = bn_fail(BN_ERR_NOMEM, "least squares: cannot allocate %lld×%lld work arrays",
                     (long long)m, (long long)n);
        goto done;
    }
    memcpy(a, A, (size_t)m * (size_t)n * sizeof(double));
    memcpy(b, B, (size_t)m * (size_t)nrhs * sizeof(double));
    if (rows_b > m) memset(b + m * nrhs, 0, (size_t)(rows_b - m) * (size_t)nrhs * sizeof(double));
    lapack_int rank = 0;
    lapack_int info = 0;
    double flops = 4.0 * (double)m * (double)n * (double)(m < n ? m : n);
    LA_FIXED(flops, info = LAPACKE_dgelsd(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)n, (lapack_int)nrhs, a,
                                          (lapack_int)n, b, (lapack_int)nrhs, s, resolve_rcond(rcond, m, n), &rank));
    st = lapack_status("least squares (dgelsd)", info);
    if (st != BN_OK) goto done;
    memcpy(X, b, (size_t)n * (size_t)nrhs * sizeof(double));
    if (rank_out) *rank_out = rank;
done:
    free(a);
    free(b);
    free(s);
    return st;
}

/* SVD of a copy of A; vt (k×n row-major, k = min(m, n)) is filled when not
 * NULL.  Divide and conquer (dgesdd): with vectors, dgesvd's QR iteration
 * spent 75% of an n=2048, d=4096 run's 88 s set-up applying plane rotations
 * (dlasr, one at a time); dgesdd does that work in matrix products. */
static bn_status svd(const char *what, const double *A, int64_t m, int64_t n, double *s,
                     double *vt)
{
    BN_TRY(check_dims(what, m, n));
    int64_t k = m < n ? m : n;
    double *a = alloc_doubles(m, n);
    double *u = vt ? alloc_doubles(m, k) : NULL;
    bn_status st = BN_OK;
    if (!a || (vt && !u)) {
        st = bn_fail(BN_ERR_NOMEM, "%s: cannot allocate the SVD work arrays", what);
        goto done;
    }
    memcpy(a, A, (size_t)m * (size_t)n * sizeof(double));
    double unused = 0;
    lapack_int info = 0;
    double flops = 4.0 * (double)m * (double)n * (double)k;
    /* LAPACKE checks ldu and ldvt even for 'N' */
    LA_FIXED(flops, info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, vt ? 'S' : 'N', (lapack_int)m, (lapack_int)n, a,
                                          (lapack_int)n, s, vt ? u : &unused, (lapack_int)k, vt ? vt : &unused,
                                          (lapack_int)n));
    st = lapack_status(what, info);
done:
    free(a);
    free(u);
    return st;
}

static int64_t rank_of(const double *s, int64_t k, double tol_rel)
{
    int64_t r = 0;
    while (r < k && s[r] > tol_rel * s[0]) r++;
    return r;
}

bn_status bn_la_singular_values(const double *A, int64_t m, int64_t n, double *s_out)
{
    return svd("singular values (dgesdd)", A, m, n, s_out, NULL);
}

bn_status bn_la_rank(const double *A, int64_t m, int64_t n, double rcond, int64_t *rank_out)
{
    BN_TRY(check_dims("rank", m, n));
    int64_t k = m < n ? m : n;
    double *s = alloc_doubles(k, 1);
    if (!s) return bn_fail(BN_ERR_NOMEM, "rank: cannot allocate %lld singular values", (long long)k);
    bn_status st = bn_la_singular_values(A, m, n, s);
    if (st == BN_OK) *rank_out = rank_of(s, k, resolve_rcond(rcond, m, n));
    free(s);
    return st;
}

bn_status bn_la_rowspace_create(const double *A, int64_t m, int64_t n, double rcond,
                                bn_la_rowspace **out)
{
    *out = NULL;
    BN_TRY(check_dims("row space", m, n));
    int64_t k = m < n ? m : n;
    double *s = alloc_doubles(k, 1);
    double *vt = alloc_doubles(k, n);
    bn_la_rowspace *rs = calloc(1, sizeof *rs);
    bn_status st = BN_OK;
    if (!s || !vt || !rs) {
        st = bn_fail(BN_ERR_NOMEM, "row space: cannot allocate the %lld×%lld basis", (long long)k,
                     (long long)n);
        goto fail;
    }
    st = svd("row space (dgesdd)", A, m, n, s, vt);
    if (st != BN_OK) goto fail;
    rs->rank = rank_of(s, k, resolve_rcond(rcond, m, n));
    rs->dim = n;
    /* vt's first `rank` rows are the basis; keep them in place (the tail is
     * just unused memory, cheaper than a copy for the usual full-rank case). */
    rs->basis = vt;
    free(s);
    *out = rs;
    return BN_OK;
fail:
    free(s);
    free(vt);
    free(rs);
    return st;
}

int64_t bn_la_rowspace_rank(const bn_la_rowspace *rs) { return rs->rank; }
int64_t bn_la_rowspace_dim(const bn_la_rowspace *rs) { return rs->dim; }
const double *bn_la_rowspace_basis(const bn_la_rowspace *rs) { return rs->basis; }

bn_status bn_la_rowspace_project(const bn_la_rowspace *rs, const double *v, int64_t count,
                                 double *out)
{
    if (count < 1) return bn_fail(BN_ERR_ARG, "row space projection of %lld vectors", (long long)count);
    int64_t r = rs->rank, n = rs->dim;
    if (r == 0) {
        memset(out, 0, (size_t)count * (size_t)n * sizeof(double));
        return BN_OK;
    }
    /* coef = v V_rᵀ (count×r) first, so out may alias v. */
    double *coef = alloc_doubles(count, r);
    if (!coef) return bn_fail(BN_ERR_NOMEM, "row space projection: cannot allocate %lld×%lld",
                              (long long)count, (long long)r);
    bn_la_gemm(0, 1, count, r, n, 1.0, v, n, rs->basis, n, 0.0, coef, r);
    bn_la_gemm(0, 0, count, n, r, 1.0, coef, r, rs->basis, n, 0.0, out, n);
    free(coef);
    return BN_OK;
}

void bn_la_rowspace_free(bn_la_rowspace *rs)
{
    if (!rs) return;
    free(rs->basis);
    free(rs);
}

bn_status bn_la_orthonormalize(const double *A, int64_t m, int64_t n, double *Q)
{
    BN_TRY(check_dims("orthonormalize", m, n));
    if (m < n)
        return bn_fail(BN_ERR_ARG, "orthonormalize: %lld columns cannot be orthonormal in %lld dimensions",
                       (long long)n, (long long)m);
    double *tau = alloc_doubles(n, 1);
    double *rdiag = alloc_doubles(n, 1);
    if (!tau || !rdiag) {
        free(tau);
        free(rdiag);
        return bn_fail(BN_ERR_NOMEM, "orthonormalize: cannot allocate %lld reflectors", (long long)n);
    }
    double fro = 0;
    for (int64_t i = 0; i < m * n; i++) fro += A[i] * A[i];
    fro = sqrt(fro);
    memcpy(Q, A, (size_t)m * (size_t)n * sizeof(double));
    lapack_int info = 0;
    double flops = 2.0 * (double)m * (double)n * (double)n;
    LA_FIXED(flops, info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)n, Q, (lapack_int)n, tau));
    bn_status st = lapack_status("orthonormalize (dgeqrf)", info);
    if (st != BN_OK) goto done;
    for (int64_t j = 0; j < n; j++) {
        rdiag[j] = Q[j * n + j];
        if (!(fabs(rdiag[j]) > 64 * DBL_EPSILON * fro)) {
            st = bn_fail(BN_ERR_DATA, "orthonormalize: column %lld is numerically dependent on the "
                         "previous ones (|R_jj| = %.3g, ‖A‖_F = %.3g)", (long long)j, fabs(rdiag[j]), fro);
            goto done;
        }
    }
    LA_FIXED(flops, info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)n, (lapack_int)n, Q,
                                          (lapack_int)n, tau));
    st = lapack_status("orthonormalize (dorgqr)", info);
    if (st != BN_OK) goto done;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++)
            if (rdiag[j] < 0) Q[i * n + j] = -Q[i * n + j];
done:
    free(tau);
    free(rdiag);
    return st;
}

bn_status bn_la_sym_eigen(const double *A, int64_t n, double *evals, double *evecs)
{
    BN_TRY(check_dims("symmetric eigenvalues", n, n));
    double *a = evecs ? evecs : alloc_doubles(n, n);
    if (!a) return bn_fail(BN_ERR_NOMEM, "symmetric eigenvalues: cannot allocate %lld×%lld",
                           (long long)n, (long long)n);
    if (a != A) memcpy(a, A, (size_t)n * (size_t)n * sizeof(double));
    lapack_int info = 0;
    double flops = 9.0 * (double)n * (double)n * (double)n;
    LA_FIXED(flops, info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, evecs ? 'V' : 'N', 'U', (lapack_int)n, a, (lapack_int)n,
                                          evals));
    bn_status st = lapack_status("symmetric eigenvalues (dsyevd)", info);
    if (!evecs) free(a);
    return st;
}
