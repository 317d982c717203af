/* Host-side dense linear algebra: the one place that talks to LAPACKE/CBLAS.
 *
 * Every matrix here is row-major (C order) with a tight leading dimension
 * unless an argument says otherwise, like the rest of the library.  Inputs are
 * never modified (the LAPACK routines that overwrite their input work on a
 * copy).  Every call returns a bn_status and reports failures through bn_fail:
 * BN_ERR_ARG for a bad shape, BN_ERR_NOMEM for an allocation, BN_ERR_BACKEND
 * when LAPACK itself gives up (e.g. an SVD that does not converge).
 *
 * Rank decisions ("rcond"): a singular value s_i counts as zero when
 * s_i <= rcond * s_1.  Passing rcond <= 0 selects bn_la_default_rcond(m, n) =
 * max(m, n) * DBL_EPSILON, the same default as numpy.linalg.lstsq/matrix_rank:
 * it is the size of the perturbation that rounding of the input alone can
 * cause, so anything smaller is indistinguishable from zero. */
#ifndef BN_LINALG_H
#define BN_LINALG_H

#include "internal.h"

#include <stdint.h>

double bn_la_default_rcond(int64_t m, int64_t n);

/* ---------------------------------------------------------------- products */

/* C = alpha * op(A) * op(B) + beta * C, op(A) m×k, op(B) k×n, C m×n, with
 * explicit leading dimensions (row-major).  trans_* != 0 means transpose. */
void bn_la_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                const double *A, int64_t lda, const double *B, int64_t ldb, double beta,
                double *C, int64_t ldc);
/* y = alpha * op(A) * x + beta * y, A m×n row-major (lda = n). */
void bn_la_gemv(int trans_a, int64_t m, int64_t n, double alpha, const double *A,
                const double *x, double beta, double *y);

/* Plane rotation of two vectors: (x, y) <- (c·x + s·y, c·y - s·x). */
void bn_la_rot(int64_t len, double *x, double *y, double c, double s);

/* ------------------------------------------------------ (a) least squares */

/* Minimum-norm least-squares solution X (n×nrhs) of min ‖A X - B‖_F for A m×n
 * and B m×nrhs (LAPACK dgelsd: SVD by divide and conquer, so it is exact for
 * rank-deficient A).  rank_out (may be NULL) receives the numerical rank. */
bn_status bn_la_lstsq(const double *A, int64_t m, int64_t n, const double *B, int64_t nrhs,
                      double rcond, double *X, int64_t *rank_out);

/* Singular values of A (m×n), min(m, n) of them, descending. */
bn_status bn_la_singular_values(const double *A, int64_t m, int64_t n, double *s_out);
/* Numerical rank of A under rcond (see the top of this file). */
bn_status bn_la_rank(const double *A, int64_t m, int64_t n, double rcond, int64_t *rank_out);

/* ---------------------------------------------- (b) row-space projection */

/* The row space of an m×n matrix, as an orthonormal basis V_r (r×n, its rows
 * are the right singular vectors with s_i > rcond * s_1).  One SVD at create;
 * each projection then costs two products, so many vectors are cheap. */
typedef struct bn_la_rowspace bn_la_rowspace;

bn_status bn_la_rowspace_create(const double *A, int64_t m, int64_t n, double rcond,
                                bn_la_rowspace **out);
int64_t bn_la_rowspace_rank(const bn_la_rowspace *rs);
int64_t bn_la_rowspace_dim(const bn_la_rowspace *rs); /* n: length of the vectors */
const double *bn_la_rowspace_basis(const bn_la_rowspace *rs); /* r×n row-major */
/* out = V_rᵀ V_r v for `count` vectors stored as rows of v (count×n);
 * out may be the same array as v. */
bn_status bn_la_rowspace_project(const bn_la_rowspace *rs, const double *v, int64_t count,
                                 double *out);
void bn_la_rowspace_free(bn_la_rowspace *rs);

/* ------------------------------------------------ (c) orthonormalization */

/* Thin QR of A (m×n, m >= n): Q (m×n, orthonormal columns) with the signs
 * fixed so that R = QᵀA has a positive diagonal.  The sign fix makes the
 * factorization unique, which is what turns the QR of a Gaussian matrix into
 * a Haar-distributed orthogonal matrix (Mezzadri 2007).  A column that is
 * numerically dependent on the previous ones (|R_jj| <= 64·eps·‖A‖_F) is
 * refused with BN_ERR_DATA, since its Q column would be arbitrary. */
bn_status bn_la_orthonormalize(const double *A, int64_t m, int64_t n, double *Q);

/* --------------------------------------------- (d) symmetric eigenvalues */

/* All eigenvalues of the symmetric n×n matrix A (only its upper triangle is
 * read), ascending (LAPACK dsyevd).  evecs (may be NULL): n×n row-major,
 * column k is the unit eigenvector of evals[k]. */
bn_status bn_la_sym_eigen(const double *A, int64_t n, double *evals, double *evecs);

#endif
