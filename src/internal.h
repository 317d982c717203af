/* Library-internal helpers shared by every translation unit. */
#ifndef BN_INTERNAL_H
#define BN_INTERNAL_H

#include "bnspike.h"

#include <stdarg.h>

#if defined(__GNUC__)
#define BN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define BN_PRINTF(a, b)
#endif

/* Records the detail of a failure for bn_last_error() and returns st, so a
 * failing call reads: return bn_fail(BN_ERR_ARG, "steps must be > 0 (got %d)", t); */
bn_status bn_fail(bn_status st, const char *fmt, ...) BN_PRINTF(2, 3);
void bn_clear_error(void);

/* Overflow-checked n*m for allocation sizes; returns 0 on overflow. */
size_t bn_mul_size(size_t a, size_t b);

#define BN_TRY(expr)                        \
    do {                                    \
        bn_status bn_try_st_ = (expr);      \
        if (bn_try_st_ != BN_OK) return bn_try_st_; \
    } while (0)

/* for (int64_t var = 0; var < count; var++) body: an OpenMP parallel loop
 * with `clauses` when cond holds, else a plain loop that does not enter the
 * OpenMP runtime at all.  An `omp parallel ... if (0)` region still costs
 * libgomp a futex wake: measured about 4 syscalls per GD step at S=1, as
 * long as the step itself. */
#define BN_PRAGMA(x) _Pragma(#x)
#define BN_PAR_FOR(cond, clauses, var, count, ...)                                        \
    do {                                                                                  \
        if (cond) {                                                                       \
            BN_PRAGMA(omp parallel for clauses)                                           \
            for (int64_t var = 0; var < (count); var++) __VA_ARGS__                       \
        } else {                                                                          \
            for (int64_t var = 0; var < (count); var++) __VA_ARGS__                       \
        }                                                                                 \
    } while (0)

#endif
