/* test_dist: the overlapped gradient all-reduce under ranks that run at different speeds. Each
 * rank hands over the same regions (as backward does, from the end of the buffer) but polls and
 * sleeps on its own schedule, so the sums start at different moments on different ranks; every
 * rank must still start the same sums in the same order (else MPI fails with a truncated message
 * or sums the wrong floats) and end with the exact total. Run under mpiexec with 3 ranks. */
#include <mpi.h>
#include <stdlib.h>
#include <time.h>

#include "charlm/dist.h"
#include "check.h"

#define N 1000

static float value(int rank, int i) { return (float)((rank + 1) * (i % 97)); }

static void round_trip(int rank, int size, int64_t piece, unsigned seed) {
    static float buf[N];
    for (int i = 0; i < N; i++) buf[i] = value(rank, i);
    /* region starts as a model hands them over: decreasing, one repeated, the last one 0 */
    static const int64_t from[] = {990, 700, 700, 699, 420, 64, 1};
    dist_overlap_t o;
    dist_overlap_begin(&o, buf, N, piece);
    srand(seed * 31u + (unsigned)rank);
    for (size_t k = 0; k < sizeof from / sizeof *from; k++) {
        dist_overlap_ready(&o, from[k]);
        int polls = rand() % 4;
        for (int p = 0; p < polls; p++) {
            struct timespec nap = {0, (rand() % 3000) * 1000L};
            nanosleep(&nap, NULL);
            dist_overlap_poll(&o);
        }
    }
    dist_overlap_wait(&o);
    int wrong = 0;
    for (int i = 0; i < N; i++) {
        float want = 0;
        for (int r = 0; r < size; r++) want += value(r, i);
        wrong += buf[i] != want;
    }
    EXPECT_MSG(wrong == 0, "rank %d, pieces of %lld: %d of %d sums wrong", rank, (long long)piece,
               wrong, N);
}

int main(int argc, char **argv) {
    dist_t d;
    dist_init(&d, &argc, &argv);
    EXPECT(d.size >= 2);
    static const int64_t pieces[] = {1, 7, 64, 300, N};
    for (unsigned seed = 0; seed < 3; seed++)
        for (size_t p = 0; p < sizeof pieces / sizeof *pieces; p++)
            round_trip(d.rank, d.size, pieces[p], seed);
    int failed = check_report(d.rank == 0 ? "test_dist" : "test_dist (rank > 0)");
    MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    dist_finalize();
    return failed;
}
