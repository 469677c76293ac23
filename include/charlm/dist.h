/* dist: the MPI side — the world, the gradient all-reduce, reductions of metrics and the
 * collective agreement on errors, so that every rank leaves together and exactly one message is
 * printed for a failure, whichever rank met it. */
#ifndef CHARLM_DIST_H
#define CHARLM_DIST_H

#include <mpi.h>
#include <stdint.h>

typedef struct {
    int rank, size;     /* in MPI_COMM_WORLD */
    int local_size;     /* ranks on this node */
} dist_t;

/* MPI_Init and the rank facts. Errors in MPI calls abort the job (MPI_ERRORS_ARE_FATAL). */
void dist_init(dist_t *d, int *argc, char ***argv);
void dist_finalize(void);

/* Collective. Every rank passes its own status; returns the status of the lowest-ranked rank
 * that failed (CHARLM_OK when none did). That rank prints its err_message() as one line
 * "charlm: error: MSG" on stderr, so the message appears once. */
int dist_agree(const dist_t *d, int rc);

/* Gradient all-reduce overlapped with backward: dist_overlap_ready() hands over a region whose
 * gradients are final, dist_overlap_poll() lets MPI progress the sums in flight and starts more,
 * dist_overlap_wait() completes all. Regions are given from the end of the buffer towards its
 * start and summed in pieces of at most `piece` floats (DIST_PIECE in training), at most
 * DIST_IN_FLIGHT at once: MPI holds a temporary buffer for each sum in flight, and a whole
 * gradient in flight would add its size to the peak memory of every rank. Not more than 2: with
 * 4 in flight, Open MPI 4.1 over shared memory took 15 ms instead of 1 ms for some sizes
 * (scripts/allreduce_bench.c). */
#define DIST_PIECE (256 * 1024)
#define DIST_IN_FLIGHT 2
#define DIST_MAX_REGIONS 64
typedef struct {
    float *buf;
    int64_t n;                         /* floats in buf */
    int64_t piece;                     /* floats per sum, at most */
    int64_t from[DIST_MAX_REGIONS];    /* starts of the regions handed over, decreasing */
    int nregions;
    int64_t next_end;                  /* [0, next_end) is still to start */
    int pending;
    MPI_Request req[DIST_IN_FLIGHT];
} dist_overlap_t;

/* Starts a round over buf (n floats), summed in pieces of at most `piece` floats. */
void dist_overlap_begin(dist_overlap_t *o, float *buf, int64_t n, int64_t piece);
/* Marks [from, n) final and starts summing what fits in flight. */
void dist_overlap_ready(dist_overlap_t *o, int64_t from);
void dist_overlap_poll(dist_overlap_t *o);
/* Marks everything final, then sums what is left and waits for every sum. */
void dist_overlap_wait(dist_overlap_t *o);

/* In-place sum of buf (n doubles) over all ranks. */
void dist_sum_doubles(double *buf, int n);

/* Sets OpenBLAS threads to the node's cores divided by the ranks on it (at least 1), unless
 * OPENBLAS_NUM_THREADS or OMP_NUM_THREADS is set. Returns the thread count in use. */
int dist_blas_threads(const dist_t *d);

#endif
