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

/* Gradient all-reduce overlapped with backward: each dist_overlap_ready() starts a non-blocking
 * in-place sum of a region, dist_overlap_poll() lets MPI progress them, dist_overlap_wait()
 * completes all. Regions are given from the end of the buffer towards its start. */
#define DIST_MAX_PENDING 40
typedef struct {
    float *buf;
    int64_t n;         /* floats in buf */
    int64_t next_end;  /* regions [from, next_end) still to start */
    int pending;
    MPI_Request req[DIST_MAX_PENDING];
} dist_overlap_t;

/* Starts a round over buf (n floats). */
void dist_overlap_begin(dist_overlap_t *o, float *buf, int64_t n);
/* Starts summing [from, next_end): those floats are final. */
void dist_overlap_ready(dist_overlap_t *o, int64_t from);
void dist_overlap_poll(dist_overlap_t *o);
/* Starts whatever is left, then waits for every sum. */
void dist_overlap_wait(dist_overlap_t *o);

/* In-place sum of buf (n doubles) over all ranks. */
void dist_sum_doubles(double *buf, int n);

/* Sets OpenBLAS threads to the node's cores divided by the ranks on it (at least 1), unless
 * OPENBLAS_NUM_THREADS or OMP_NUM_THREADS is set. Returns the thread count in use. */
int dist_blas_threads(const dist_t *d);

#endif
