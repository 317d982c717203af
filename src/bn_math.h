/* Per-element and per-column math of the BN-linear model (MODEL.md), written
 * once as static inline functions that the C compiler and nvcc both include,
 * so what the CPU tests cover is what the GPU kernels run.
 *
 * fp32 and fp64 come from the same text: bn_math_impl.h is included twice
 * with REAL set to float and double.  Names carry the suffix _f32 / _f64. */
#ifndef BN_MATH_H
#define BN_MATH_H

#include <math.h>
#include <stdint.h>

/* restrict in C, __restrict__ in C++ (nvcc, and the host emulator's g++). */
#if defined(__cplusplus)
#define BN_RESTRICT __restrict__
#else
#define BN_RESTRICT restrict
#endif

#if defined(__CUDACC__)
#define BN_HD __host__ __device__
#define BN_COLUMN_INLINE
#else
#define BN_HD
/* The column passes are inlined into the CPU backend's per-ISA clones, so
 * they are compiled (and vectorized) for each instruction set. */
#define BN_COLUMN_INLINE __attribute__((always_inline))
#endif

/* Per-column statistics written by the two column passes of one step.
 * Layout in memory: stats[field * S + column], so each field is contiguous. */
enum {
    BN_ST_LOSS = 0, /* L(w_t, γ_t)                                   */
    BN_ST_GAMMA,    /* γ_t                                            */
    BN_ST_SNORM,    /* s = ‖Xc w‖/√n = ‖w‖_Σ                          */
    BN_ST_GGAMMA,   /* ∂_γ L = uᵀr/s                                  */
    BN_ST_ALPHA_S,  /* ⟨w, w_ref⟩_Σ / ‖w_ref‖_Σ                             */
    BN_ST_BETA_S,   /* ‖w - α_Σ ê_Σ‖_Σ from the residual vector       */
    BN_ST_WNORM,    /* ‖w_t‖                                          */
    BN_ST_ALPHA,    /* ⟨w, ê⟩                                         */
    BN_ST_BETA,     /* ‖w - α ê‖ from the residual vector             */
    BN_ST_GNORM,    /* ‖∇_w L‖                                        */
    BN_ST_COUNT
};

/* Partial sums per column reduction (see bn_lane_total): BN_LANE_LOOP(len,
 * body) runs body with i = element index and k = its lane (i mod BN_LANES):
 * full groups first, then the tail, so the group loop has a fixed trip count. */
#define BN_LANES 8
#define BN_LANE_LOOP(len, ...)                                                   \
    do {                                                                         \
        int64_t bn_full_ = (len) - (len) % BN_LANES;                             \
        for (int64_t bn_i0_ = 0; bn_i0_ < bn_full_; bn_i0_ += BN_LANES)          \
            for (int k = 0; k < BN_LANES; k++) {                                 \
                int64_t i = bn_i0_ + k;                                          \
                __VA_ARGS__                                                      \
            }                                                                    \
        for (int k = 0; bn_full_ + k < (len); k++) {                             \
            int64_t i = bn_full_ + k;                                            \
            __VA_ARGS__                                                          \
        }                                                                        \
    } while (0)

#define REAL double
#define BN_SFX(name) name##_f64
#define R_SQRT sqrt
#define R_EXP exp
#define R_LOG1P log1p
#define R_FABS fabs
#include "bn_math_impl.h"
#undef REAL
#undef BN_SFX
#undef R_SQRT
#undef R_EXP
#undef R_LOG1P
#undef R_FABS

#define REAL float
#define BN_SFX(name) name##_f32
#define R_SQRT sqrtf
#define R_EXP expf
#define R_LOG1P log1pf
#define R_FABS fabsf
#include "bn_math_impl.h"
#undef REAL
#undef BN_SFX
#undef R_SQRT
#undef R_EXP
#undef R_LOG1P
#undef R_FABS

#endif
