/* Distributed sweeps: `bnspike sweep --shard i/N`, `bnspike merge` and the
 * MPI driver (mpi_sweep.c, compiled only with BN_HAVE_MPI). */
#ifndef BN_CLI_SHARD_H
#define BN_CLI_SHARD_H

#include <stddef.h>
#include <stdint.h>

/* Shard i of N of `total` trajectories: the contiguous slice [first, end). */
static inline int64_t cli_shard_first(int64_t total, int64_t i, int64_t n)
{
    /* total <= 2^31 and n <= total, so the product fits. */
    return total * i / n;
}

/* What cmd_sweep needs from the MPI driver, and what it hands back. */
typedef struct {
    int rank, size, local_rank;
    int ndev;             /* CUDA devices visible (0: none or no CUDA build)          */
    char out_dir[4096];   /* filled by the sweep: the user's --out (the merge target) */
    char shard_dir[4200]; /* filled by the sweep: where this rank wrote its shard      */
    int wrote;            /* set when the shard's outputs were all written             */
    int quiet;            /* filled by the sweep: --quiet                              */
} cli_mpi_plan;

/* The sweep command; mpi is NULL outside MPI (or with one rank). */
int cli_sweep_main(int argc, char **argv, cli_mpi_plan *mpi);

/* Folder under OUT where MPI rank r of P writes its shard. */
void cli_mpi_shard_dir(char *buf, size_t cap, const char *out, int rank, int size);

/* Merges the shard folders dirs[0..n) into out (see cmd_merge.c): checks that
 * they are the N shards of one sweep, then writes every output atomically.
 * argc/argv: the command line recorded in run.json's merged_from; how:
 * "bnspike merge" or "mpirun".  Returns 0 or an exit code (message printed). */
int cli_merge_dirs(const char *out, char *const *dirs, int n, int argc, char **argv, const char *how,
                   int quiet);

int cmd_merge(int argc, char **argv);

#ifdef BN_HAVE_MPI
/* Whether the process was started by an MPI launcher (mpirun, srun). */
int cli_mpi_launched(void);
/* `bnspike sweep` under mpirun: rank r runs shard r/P, rank 0 merges. */
int cli_mpi_sweep(int argc, char **argv);
#endif

#endif
