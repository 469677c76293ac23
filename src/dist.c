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

void dist_overlap_begin(dist_overlap_t *o, float *buf, int64_t n, int64_t piece) {
    CHARLM_CHECK(piece > 0 && piece <= INT_MAX);
    o->buf = buf;
    o->n = n;
    o->piece = piece;
    o->nregions = 0;
    o->next_end = n;
    o->pending = 0;
}

/* Starts pieces of the handed-over regions while there is room in flight. Every rank must start
 * the same sums in the same order, whatever its timing: a piece is cut from the end of its region
 * and never crosses a region's start. */
static void start_pieces(dist_overlap_t *o) {
    int k = 0;
    while (o->pending < DIST_IN_FLIGHT) {
        while (k < o->nregions && o->from[k] >= o->next_end) k++;
        if (k == o->nregions) return; /* the rest is not final yet */
        int64_t start = o->next_end - o->from[k] > o->piece ? o->next_end - o->piece
                                                               : o->from[k];
        MPI_Iallreduce(MPI_IN_PLACE, o->buf + start, (int)(o->next_end - start), MPI_FLOAT,
                       MPI_SUM, MPI_COMM_WORLD, &o->req[o->pending++]);
        o->next_end = start;
    }
}

/* Drops the finished requests (MPI_REQUEST_NULL) from req[]. */
static void retire(dist_overlap_t *o) {
    int k = 0;
    for (int i = 0; i < o->pending; i++)
        if (o->req[i] != MPI_REQUEST_NULL) o->req[k++] = o->req[i];
    o->pending = k;
}

void dist_overlap_ready(dist_overlap_t *o, int64_t from) {
    int64_t last = o->nregions ? o->from[o->nregions - 1] : o->n;
    CHARLM_CHECK(from >= 0 && from <= last && o->nregions < DIST_MAX_REGIONS);
    if (from == last) return;
    o->from[o->nregions++] = from;
    start_pieces(o);
}

void dist_overlap_poll(dist_overlap_t *o) {
    if (!o->pending) return;
    int outcount, idx[DIST_IN_FLIGHT];
    MPI_Testsome(o->pending, o->req, &outcount, idx, MPI_STATUSES_IGNORE);
    if (outcount > 0) {
        retire(o);
        start_pieces(o);
    }
}

void dist_overlap_wait(dist_overlap_t *o) {
    dist_overlap_ready(o, 0);
    while (o->pending) {
        int idx;
        MPI_Waitany(o->pending, o->req, &idx, MPI_STATUS_IGNORE);
        retire(o);
        start_pieces(o);
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
