/* dist: the MPI side, and the only module that calls MPI (err's MPI_Abort aside) — the world,
 * the clock, the gradient all-reduce, the broadcasts of a resumed run, the scatter and gather of
 * the streams' carried state, reductions of metrics, the once-per-window agreement on the loss
 * and on stopping, and the collective agreement on errors, so that every rank leaves together and
 * exactly one message is printed for a failure, whichever rank met it. Every function but
 * dist_time, the dist_blas_* ones and dist_libraries is collective: every rank calls it, in the
 * same order. */
#ifndef CHARLM_DIST_H
#define CHARLM_DIST_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int rank, size;     /* in MPI_COMM_WORLD */
    int local_size;     /* ranks on this node */
} dist_t;

/* When OpenBLAS took kernels below what this CPU runs — it names an older core for a CPU it does
 * not know yet (Debian's 0.3.21 takes its SSE3 "Prescott" kernels on recent Xeons, a third of
 * the speed) — re-executes this program (/proc/self/exe, argv) with OPENBLAS_CORETYPE set from
 * the CPU's features: COOPERLAKE with AVX512-BF16, SKYLAKEX with AVX-512, HASWELL with AVX2 and
 * FMA. Returns without doing anything when OPENBLAS_CORETYPE is set (the user's choice, or the
 * re-executed process), when OpenBLAS's choice is not an older core, or when the exec fails.
 * Call it first in main, before any signal handler or MPI: a launcher's rank keeps its pid. */
void dist_blas_kernels(char **argv);

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
 * start and summed in pieces of at most `piece` floats (dist_piece() in training), at most
 * DIST_IN_FLIGHT at once: MPI holds a temporary buffer for each sum in flight, and a whole
 * gradient in flight would add its size to the peak memory of every rank. Not more than 2: with
 * 4 in flight, Open MPI 4.1 over shared memory took 15 ms instead of 1 ms for some sizes
 * (scripts/allreduce_bench.c). */
#define DIST_PIECE (256 * 1024)
#define DIST_PIECE_RANKS 8
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

/* The piece of the gradient sums over nranks ranks: DIST_PIECE up to DIST_PIECE_RANKS ranks,
 * beyond them DIST_PIECE * (nranks / DIST_PIECE_RANKS), at most INT_MAX (one MPI count). A ring
 * all-reduce pays 2(P-1) latencies per sum but moves about twice a piece's bytes whatever P, so a
 * fixed piece lets latency dominate at hundreds of ranks; a piece in proportion to P keeps each
 * sum's latency at the share of its transfer it has at DIST_PIECE_RANKS ranks
 * (scripts/scaling_projection.py). Runs of up to DIST_PIECE_RANKS ranks are unchanged. */
int64_t dist_piece(int nranks);
/* Starts a round over buf (n floats), summed in pieces of at most `piece` floats. */
void dist_overlap_begin(dist_overlap_t *o, float *buf, int64_t n, int64_t piece);
/* Marks [from, n) final and starts summing what fits in flight. */
void dist_overlap_ready(dist_overlap_t *o, int64_t from);
void dist_overlap_poll(dist_overlap_t *o);
/* Marks everything final, then sums what is left and waits for every sum. */
void dist_overlap_wait(dist_overlap_t *o);

/* Seconds on this process's wall clock (MPI_Wtime), for intervals: clocks of different ranks
 * are not compared. */
double dist_time(void);

/* Returns rank 0's v on every rank. */
int dist_bcast_int(int v);

/* buf (n floats) on every rank becomes rank 0's; n may exceed INT_MAX. */
void dist_bcast_floats(float *buf, int64_t n);

/* Where a resumed run continues: the facts of the checkpoint that rank 0 read. */
typedef struct {
    int64_t step, epoch, cursor, optim_step, plateau_bad, plateau_stale;
    double lr, last_train_loss, last_val_loss, best_val_loss; /* NAN = none yet */
    double elapsed_s, lr_scale, plateau_best;                 /* optim.h's plateau_t */
} dist_position_t;

/* *p on every rank becomes rank 0's, in one broadcast that keeps every field's type (an int64
 * beyond 2^53 is not rounded through a double). */
void dist_bcast_position(dist_position_t *p);

/* The carried state of the global streams: all (layers, S, H) on rank 0 <-> mine (layers, B, H)
 * on each rank, S = ranks * B, rank r holding streams r*B .. r*B+B-1 of every layer
 * (src/README.md §1). all is used on rank 0 only (NULL elsewhere). Scatter reads all and writes mine on every
 * rank; gather reads mine and writes all. */
void dist_scatter_streams(float *mine, const float *all, int layers, int B, int H);
void dist_gather_streams(float *all, const float *mine, int layers, int B, int H);

/* Gathers n values from every rank on rank 0: all (ranks x n, rank 0 only; NULL elsewhere)
 * holds rank r's mine at all[r * n]. */
void dist_gather_u64(uint64_t *all, const uint64_t *mine, int n);

/* In-place sum of buf (n doubles) over all ranks. */
void dist_sum_doubles(double *buf, int n);

/* In-place maximum of buf (n doubles) over all ranks, on every rank. */
void dist_max_doubles(double *buf, int n);

/* Reasons to stop after a window, as bits: a rank that has one stops every rank. FAILED: a
 * failure outside any collective (rank 0's metrics.jsonl write). */
enum { DIST_STOP_TIME = 1u << 0, DIST_STOP_SIGNAL = 1u << 1, DIST_STOP_FAILED = 1u << 2 };
#define DIST_STOP_REASONS 3

/* The end of a training window: returns the sum of loss over the ranks, turns *stop (this
 * rank's DIST_STOP_* bits) into the union of every rank's, so that all ranks take the same
 * decision, and *clock into rank 0's value (the training time the time-based schedule follows;
 * the other ranks' values are ignored). One all-reduce for all three: its latency across nodes
 * is paid every window. */
double dist_window_end(double loss, unsigned *stop, double *clock);

/* The texts dist_first_unlike compares and hands back: at most DIST_TEXT - 1 bytes each. */
#define DIST_TEXT 128

/* Collective. Each rank passes what (a description of its own, e.g. how its sums round) and who
 * (where it runs); on rank 0, returns the lowest rank whose what differs from rank 0's and
 * copies that rank's what and who into other_what and other_who (DIST_TEXT bytes each), or
 * returns -1 when every rank's equals rank 0's. Returns -1 on the other ranks. Longer texts
 * are compared and returned cut to DIST_TEXT - 1 bytes. */
int dist_first_unlike(const char *what, const char *who, char *other_what, char *other_who);

/* The name of the kernel set OpenBLAS chose at start-up (openblas_get_corename), or "unknown
 * (not OpenBLAS)" for another CBLAS. A static string; not collective. */
const char *dist_blas_kernel_set(void);

/* Sets OpenBLAS threads to the node's cores divided by the ranks on it (at least 1), unless
 * OPENBLAS_NUM_THREADS or OMP_NUM_THREADS is set. Returns the thread count in use. */
int dist_blas_threads(const dist_t *d);

/* The libraries this process runs with, for `charlm --version`, into out (n bytes): "MPI: " and
 * the first line of MPI_Get_library_version, then "\nBLAS: " and OpenBLAS's build configuration
 * and the kernel set it chose for this CPU at start-up (openblas_get_config, _get_corename), or
 * "a CBLAS other than OpenBLAS". Not collective; callable before dist_init. */
void dist_libraries(char *out, size_t n);

#endif
