/* `bnspike sweep` under mpirun (built with `make MPI=1`, which defines
 * BN_HAVE_MPI; without it this file is empty).
 *
 * Rank r of P runs shard r/P of the sweep (the same contiguous slices as
 * --shard r/P) on CUDA device (--device + local rank) % devices where a device
 * is present, and writes it to OUT/.mpi-shards/r-of-P.  After a barrier the
 * ranks agree on success (MPI_Allreduce): if any rank failed, every rank
 * removes its shard folder and all exit non-zero; otherwise rank 0 merges the
 * shards into OUT with the code of `bnspike merge`, removes the shard folders
 * and tells the others the result.  OUT must be on a file system every rank
 * sees (the cluster's shared scratch). */
#ifdef BN_HAVE_MPI
#include "cli.h"
#include "shard.h"

#include <mpi.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef BN_HAVE_CUDA
#include "backend.h" /* bn_cuda_device_count */
#endif

int cli_mpi_launched(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", NULL};
    for (int i = 0; vars[i]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

static void remove_tree(const char *path)
{
    if (access(path, F_OK) == 0) nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* OUT/.mpi-shards, once it is empty. */
static void remove_parent(const char *out)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/.mpi-shards", out);
    rmdir(dir);
}

int cli_mpi_sweep(int argc, char **argv)
{
    int rank = 0, size = 1, local = 0;
    if (MPI_Init(NULL, NULL) != MPI_SUCCESS) {
        fprintf(stderr, "bnspike sweep: MPI_Init failed\n");
        return EXIT_RUN_FAILED;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_rank(node, &local);
        MPI_Comm_free(&node);
    }
    if (size == 1) {
        int rc1 = cli_sweep_main(argc, argv, NULL);
        MPI_Finalize();
        return rc1;
    }

    cli_mpi_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.rank = rank;
    plan.size = size;
    plan.local_rank = local;
#ifdef BN_HAVE_CUDA
    plan.ndev = bn_cuda_device_count();
#endif
    int rc = cli_sweep_main(argc, argv, &plan);

    /* Everyone has finished (or failed); agree on the outcome. */
    MPI_Barrier(MPI_COMM_WORLD);
    int mine[2] = {rc != 0, rc == 0 && !plan.wrote}, all[2] = {0, 0};
    MPI_Allreduce(mine, all, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (all[0] || all[1]) {
        /* Some rank failed (or printed --help): nothing is merged, no shard
         * folder is left behind. */
        if (plan.shard_dir[0]) remove_tree(plan.shard_dir);
        MPI_Barrier(MPI_COMM_WORLD);
        if (rank == 0 && plan.out_dir[0]) remove_parent(plan.out_dir);
        if (rank == 0 && all[0])
            fprintf(stderr, "bnspike sweep: %d of %d MPI ranks failed (messages above); nothing was merged\n",
                    all[0], size);
        MPI_Finalize();
        if (all[0]) return rc ? rc : EXIT_RUN_FAILED;
        return rc;
    }
    int merged = 0;
    if (rank == 0) {
        char **dirs = malloc((size_t)size * sizeof *dirs);
        char *names = malloc((size_t)size * 4200);
        if (!dirs || !names) {
            fprintf(stderr, "bnspike sweep: out of memory\n");
            merged = EXIT_RUN_FAILED;
        } else {
            for (int r = 0; r < size; r++) {
                dirs[r] = names + (size_t)r * 4200;
                cli_mpi_shard_dir(dirs[r], 4200, plan.out_dir, r, size);
            }
            char how[64];
            snprintf(how, sizeof how, "mpirun (%d ranks)", size);
            merged = cli_merge_dirs(plan.out_dir, dirs, size, argc, argv, how, 1);
            if (merged == 0) {
                for (int r = 0; r < size; r++) remove_tree(dirs[r]);
                remove_parent(plan.out_dir);
                if (!plan.quiet)
                    printf("%d MPI ranks ran shards 0..%d; rank 0 merged them into %s (the outputs of the whole "
                           "sweep; run.json: merged_from)\n",
                           size, size - 1, plan.out_dir);
            } else {
                fprintf(stderr, "bnspike sweep: the merge failed; the shards are kept in %s/.mpi-shards\n",
                        plan.out_dir);
            }
        }
        free(dirs);
        free(names);
    }
    MPI_Bcast(&merged, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Finalize();
    return merged;
}
#else
/* Without MPI this file compiles to nothing (an empty unit is not ISO C). */
typedef int bn_mpi_sweep_unused;
#endif
