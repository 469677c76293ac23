#define _GNU_SOURCE /* sched_getaffinity: the cores this rank may use (cgroups, SLURM) */
#include "charlm/dist.h"

#include <sched.h>
#include <cblas.h>
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "charlm/err.h"

void dist_init(dist_t *d, int *argc, char ***argv) {
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &local);
    MPI_Comm_size(local, &d->local_size);
    MPI_Comm_free(&local);
}

void dist_finalize(void) { MPI_Finalize(); }

int dist_agree(const dist_t *d, int rc) {
    int mine = rc != CHARLM_OK ? d->rank : d->size, first = d->size;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == d->size) return CHARLM_OK;
    if (first == d->rank) {
        fprintf(stderr, "charlm: error: %s\n", err_message());
        fflush(stderr);
    }
    MPI_Bcast(&rc, 1, MPI_INT, first, MPI_COMM_WORLD);
    return rc;
}

void dist_sum_floats(float *buf, int64_t n) {
    /* MPI counts are int: reduce in slices for parameter buffers beyond 2^31 floats */
    for (int64_t off = 0; off < n; off += INT_MAX / 2) {
        int64_t k = n - off < INT_MAX / 2 ? n - off : INT_MAX / 2;
        MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
}

void dist_sum_doubles(double *buf, int n) {
    MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

int dist_blas_threads(const dist_t *d) {
#if CHARLM_HAVE_OPENBLAS
    if (!getenv("OPENBLAS_NUM_THREADS") && !getenv("OMP_NUM_THREADS")) {
        /* A rank bound to a core set (mpirun --bind-to, srun --cpu-bind) uses that set; an
         * unbound one shares the node's cores with the other ranks on it. */
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        cpu_set_t set;
        long mine = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : online;
        long per = mine < online ? mine : online / (d->local_size > 0 ? d->local_size : 1);
        openblas_set_num_threads(per > 1 ? (int)per : 1);
    }
    return openblas_get_num_threads();
#else
    (void)d;
    return 1;
#endif
}
