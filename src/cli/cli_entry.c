/* The bnspike executable's entry point (the command line is bnspike_main). */
#include "cli.h"

#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
#ifndef BN_HAVE_MPI
    /* OpenBLAS starts its thread pool when it is loaded, one thread per core,
     * and the idle threads spin for a while: on two cores a --threads 2 run
     * of the paper case took 0.136 s instead of 0.060 s (issue 7), and they
     * do nothing for us, since the library sets the thread count of each
     * BLAS call itself (linalg.c).  So, unless the user chose a count, the
     * process starts again with OPENBLAS_NUM_THREADS=1 before OpenBLAS is
     * loaded; and with OPENBLAS_CORETYPE when OpenBLAS did not recognize the
     * CPU and took its slow fallback kernels (bn_blas_kernels_suggested).
     * (Not under MPI, whose launcher owns the process.) */
    int again = 0;
    if (!getenv("OPENBLAS_NUM_THREADS") && setenv("OPENBLAS_NUM_THREADS", "1", 1) == 0) again = 1;
    if (bn_blas_kernels_setenv()) again = 1;
    if (again) execv("/proc/self/exe", argv); /* only returns on failure: go on as we are */
#endif
    return bnspike_main(argc, argv);
}
