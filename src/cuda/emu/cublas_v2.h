/* Host emulation of the few cuBLAS calls src/cuda makes (see cuda_runtime.h
 * beside this file).  Products are plain loops in the working precision,
 * enqueued on the handle's stream (so they are recorded during a capture,
 * with their scalars by value, as with CUBLAS_POINTER_MODE_HOST). */
#ifndef BN_EMU_CUBLAS_V2_H
#define BN_EMU_CUBLAS_V2_H

#include "cuda_runtime.h"

enum cublasStatus_t {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cublasPointerMode_t { CUBLAS_POINTER_MODE_HOST = 0, CUBLAS_POINTER_MODE_DEVICE = 1 };
enum cublasMath_t { CUBLAS_DEFAULT_MATH = 0, CUBLAS_PEDANTIC_MATH = 2 };
enum libraryPropertyType { MAJOR_VERSION = 0, MINOR_VERSION = 1, PATCH_LEVEL = 2 };

struct cublasContext {
    cudaStream_t stream = nullptr;
    void *workspace = nullptr;
    size_t workspace_bytes = 0;
    cublasPointerMode_t mode = CUBLAS_POINTER_MODE_HOST;
};
typedef cublasContext *cublasHandle_t;

inline const char *cublasGetStatusString(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}
inline cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    *h = new cublasContext();
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    h->stream = s;
    h->workspace = nullptr; /* like cuBLAS: back to the default pool */
    h->workspace_bytes = 0;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *w, size_t bytes)
{
    h->workspace = w;
    h->workspace_bytes = bytes;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetPointerMode(cublasHandle_t h, cublasPointerMode_t m)
{
    h->mode = m;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasGetVersion(cublasHandle_t, int *v)
{
    *v = 130000;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasGetProperty(libraryPropertyType t, int *v)
{
    *v = t == MAJOR_VERSION ? 13 : 0;
    return CUBLAS_STATUS_SUCCESS;
}

namespace bn_emu {
template <typename T>
cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                    const T *alpha, const T *A, int lda, const T *B, int ldb, const T *beta, T *C, int ldc)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (h->mode != CUBLAS_POINTER_MODE_HOST) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m < 0 || n < 0 || k < 0 || lda < (ta == CUBLAS_OP_N ? (m > 1 ? m : 1) : (k > 1 ? k : 1)) ||
        ldb < (tb == CUBLAS_OP_N ? (k > 1 ? k : 1) : (n > 1 ? n : 1)) || ldc < (m > 1 ? m : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    const T al = *alpha, be = *beta;
    enqueue(h->stream, [=]() {
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                T acc = 0;
                for (int p = 0; p < k; p++) {
                    const T a = ta == CUBLAS_OP_N ? A[i + (size_t)p * lda] : A[p + (size_t)i * lda];
                    const T b = tb == CUBLAS_OP_N ? B[p + (size_t)j * ldb] : B[j + (size_t)p * ldb];
                    acc += a * b;
                }
                T *c = C + i + (size_t)j * ldc;
                *c = be == (T)0 ? al * acc : al * acc + be * *c;
            }
    });
    return CUBLAS_STATUS_SUCCESS;
}
template <typename T>
cublasStatus_t gemv(cublasHandle_t h, cublasOperation_t ta, int m, int n, const T *alpha, const T *A, int lda,
                    const T *x, int incx, const T *beta, T *y, int incy)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (h->mode != CUBLAS_POINTER_MODE_HOST) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m < 0 || n < 0 || lda < (m > 1 ? m : 1) || incx != 1 || incy != 1) return CUBLAS_STATUS_INVALID_VALUE;
    const T al = *alpha, be = *beta;
    enqueue(h->stream, [=]() {
        const int len = ta == CUBLAS_OP_N ? m : n, inner = ta == CUBLAS_OP_N ? n : m;
        for (int i = 0; i < len; i++) {
            T acc = 0;
            for (int p = 0; p < inner; p++)
                acc += (ta == CUBLAS_OP_N ? A[i + (size_t)p * lda] : A[p + (size_t)i * lda]) * x[p];
            y[i] = be == (T)0 ? al * acc : al * acc + be * y[i];
        }
    });
    return CUBLAS_STATUS_SUCCESS;
}
/* C = α·op(A) + β·op(B); the emulator supports what bnspike uses: β = 0. */
template <typename T>
cublasStatus_t geam(cublasHandle_t h, cublasOperation_t ta, int m, int n, const T *alpha, const T *A, int lda,
                    const T *beta, T *C, int ldc)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (*beta != (T)0 || m < 0 || n < 0 || ldc < (m > 1 ? m : 1)) return CUBLAS_STATUS_NOT_SUPPORTED;
    const T al = *alpha;
    enqueue(h->stream, [=]() {
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++)
                C[i + (size_t)j * ldc] = al * (ta == CUBLAS_OP_N ? A[i + (size_t)j * lda] : A[j + (size_t)i * lda]);
    });
    return CUBLAS_STATUS_SUCCESS;
}
} // namespace bn_emu

inline cublasStatus_t cublasDgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                  int k, const double *al, const double *A, int lda, const double *B, int ldb,
                                  const double *be, double *C, int ldc)
{
    return bn_emu::gemm(h, ta, tb, m, n, k, al, A, lda, B, ldb, be, C, ldc);
}
inline cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                  int k, const float *al, const float *A, int lda, const float *B, int ldb,
                                  const float *be, float *C, int ldc)
{
    return bn_emu::gemm(h, ta, tb, m, n, k, al, A, lda, B, ldb, be, C, ldc);
}
inline cublasStatus_t cublasDgemv(cublasHandle_t h, cublasOperation_t ta, int m, int n, const double *al,
                                  const double *A, int lda, const double *x, int incx, const double *be,
                                  double *y, int incy)
{
    return bn_emu::gemv(h, ta, m, n, al, A, lda, x, incx, be, y, incy);
}
inline cublasStatus_t cublasSgemv(cublasHandle_t h, cublasOperation_t ta, int m, int n, const float *al,
                                  const float *A, int lda, const float *x, int incx, const float *be, float *y,
                                  int incy)
{
    return bn_emu::gemv(h, ta, m, n, al, A, lda, x, incx, be, y, incy);
}
inline cublasStatus_t cublasDgeam(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t, int m, int n,
                                  const double *al, const double *A, int lda, const double *be, const double *,
                                  int, double *C, int ldc)
{
    return bn_emu::geam(h, ta, m, n, al, A, lda, be, C, ldc);
}
inline cublasStatus_t cublasSgeam(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t, int m, int n,
                                  const float *al, const float *A, int lda, const float *be, const float *, int,
                                  float *C, int ldc)
{
    return bn_emu::geam(h, ta, m, n, al, A, lda, be, C, ldc);
}

#endif
