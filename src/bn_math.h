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

#if defined(__CUDACC__)
#define BN_HD __host__ __device__
#else
#define BN_HD
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
