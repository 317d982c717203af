/* A serial stand-in for <omp.h>, used by the fuzz build (mk/fuzz.mk) only
 * when clang has no OpenMP runtime (libomp-dev): the pragmas are then
 * ignored and these report one thread. */
#ifndef BN_OMP_STUB_H
#define BN_OMP_STUB_H

#include <time.h>

static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_procs(void) { return 1; }
static inline int omp_in_parallel(void) { return 0; }
static inline void omp_set_num_threads(int n) { (void)n; }
static inline int omp_get_dynamic(void) { return 0; }
static inline void omp_set_dynamic(int d) { (void)d; }
static inline double omp_get_wtime(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
