/* dist: the MPI side — the world, the gradient all-reduce, reductions of metrics and the
 * collective agreement on errors, so that every rank leaves together and exactly one message is
 * printed for a failure, whichever rank met it. */
#ifndef CHARLM_DIST_H
#define CHARLM_DIST_H

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

/* In-place sum of buf (n floats) over all ranks. */
void dist_sum_floats(float *buf, int64_t n);

/* In-place sum of buf (n doubles) over all ranks. */
void dist_sum_doubles(double *buf, int n);

/* Sets OpenBLAS threads to the node's cores divided by the ranks on it (at least 1), unless
 * OPENBLAS_NUM_THREADS or OMP_NUM_THREADS is set. Returns the thread count in use. */
int dist_blas_threads(const dist_t *d);

#endif
