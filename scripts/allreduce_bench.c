/* allreduce_bench.c — time the gradient all-reduce alone: an in-place sum of N floats over all
 * ranks, as charlm sums a model's gradient every window, repeated; prints the median time and
 * the bandwidths for the README's scaling section (scripts/bench.sh runs it). With PIECE > 0 the
 * buffer is summed as charlm does it (src/dist.c): MPI_Iallreduce of at most PIECE floats, at most
 * 2 in flight; with PIECE = 0, one MPI_Allreduce of the whole buffer.
 *
 *     mpicc -O2 -o allreduce_bench scripts/allreduce_bench.c
 *     mpirun -np 2 ./allreduce_bench N [REPS [PIECE]]
 *
 * Output (rank 0): "ALLREDUCE ranks=P floats=N piece=K median_ms=... algbw_GBps=... busbw_GBps=..."
 * algbw = bytes / time; busbw = algbw * 2 (P - 1) / P, the traffic each rank's link carries in a
 * ring all-reduce (the usual figure for comparing with a link's bandwidth). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#define IN_FLIGHT 2 /* as DIST_IN_FLIGHT in include/charlm/dist.h */

/* buf (n floats) summed over all ranks in pieces of at most `piece` floats (0 = whole) */
static void sum_all(float *buf, long n, long piece) {
    if (piece <= 0) {
        MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        return;
    }
    MPI_Request req[IN_FLIGHT];
    int pending = 0;
    for (long end = n; end > 0 || pending;) {
        while (end > 0 && pending < IN_FLIGHT) {
            long start = end > piece ? end - piece : 0;
            MPI_Iallreduce(MPI_IN_PLACE, buf + start, (int)(end - start), MPI_FLOAT, MPI_SUM,
                           MPI_COMM_WORLD, &req[pending++]);
            end = start;
        }
        int idx;
        MPI_Waitany(pending, req, &idx, MPI_STATUS_IGNORE);
        req[idx] = req[--pending];
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long n = argc > 1 ? atol(argv[1]) : 0;
    int reps = argc > 2 ? atoi(argv[2]) : 30;
    long piece = argc > 3 ? atol(argv[3]) : 0;
    if (n <= 0 || n > 1L << 30 || reps < 1 || piece < 0) {
        if (rank == 0)
            fprintf(stderr, "usage: allreduce_bench N [REPS [PIECE]]  (N floats, 1..2^30)\n");
        MPI_Finalize();
        return 2;
    }
    float *buf = malloc(sizeof(float) * (size_t)n); /* (N) */
    double *t = malloc(sizeof(double) * (size_t)reps);
    if (!buf || !t) {
        fprintf(stderr, "allreduce_bench: out of memory\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    for (long i = 0; i < n; i++) buf[i] = 1e-3f * (float)(i % 1000);
    for (int w = 0; w < 3; w++) /* warm-up: connections, buffers */
        sum_all(buf, n, piece);
    for (int r = 0; r < reps; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        sum_all(buf, n, piece);
        double dt = MPI_Wtime() - t0;
        /* the slowest rank's time is the collective's time */
        MPI_Allreduce(&dt, &t[r], 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    double med = t[reps / 2], bytes = 4.0 * (double)n;
    double algbw = bytes / med * 1e-9, busbw = algbw * 2.0 * (size - 1) / size;
    if (rank == 0)
        printf("ALLREDUCE ranks=%d floats=%ld piece=%ld median_ms=%.3f algbw_GBps=%.2f "
               "busbw_GBps=%.2f reps=%d\n",
               size, n, piece, med * 1e3, algbw, busbw, reps);
    free(buf);
    free(t);
    MPI_Finalize();
    return 0;
}
