/* test_dist: the overlapped gradient all-reduce under ranks that run at different speeds. Each
 * rank hands over the same regions (as backward does, from the end of the buffer) but polls and
 * sleeps on its own schedule, so the sums start at different moments on different ranks; every
 * rank must still start the same sums in the same order (else MPI fails with a truncated message
 * or sums the wrong floats) and end with the exact total. Then the other collectives of dist:
 * the typed broadcast of a resume position (int64 beyond 2^53 exact), the scatter and gather of
 * the streams' state in rank order, the window-end agreement on the loss and the stop reasons,
 * maxima. Run under mpiexec with 3 ranks. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
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

static void broadcasts(int rank) {
    const int64_t big = ((int64_t)1 << 53) + 1; /* no double holds it */
    dist_position_t p = {.step = -7, .epoch = -7, .cursor = -7, .optim_step = -7, .lr = -7};
    if (rank == 0)
        p = (dist_position_t){.step = big, .epoch = INT64_MAX, .cursor = 3, .optim_step = big + 2,
                              .lr = 0.1, .last_train_loss = 2.5, .last_val_loss = NAN,
                              .best_val_loss = -0.0};
    dist_bcast_position(&p);
    EXPECT_MSG(p.step == big && p.epoch == INT64_MAX && p.cursor == 3 && p.optim_step == big + 2,
               "rank %d: position %lld %lld %lld %lld", rank, (long long)p.step,
               (long long)p.epoch, (long long)p.cursor, (long long)p.optim_step);
    EXPECT(p.lr == 0.1 && p.last_train_loss == 2.5 && isnan(p.last_val_loss) &&
           p.best_val_loss == 0.0 && signbit(p.best_val_loss));
    EXPECT(dist_bcast_int(rank == 0 ? 42 : rank) == 42);
    float f[5] = {0};
    for (int i = 0; i < 5; i++) f[i] = rank == 0 ? (float)i + 0.5f : -1.0f;
    dist_bcast_floats(f, 5);
    EXPECT(f[0] == 0.5f && f[4] == 4.5f);
}

/* Element (l, s, h) of the global state: unique, exact in a float. */
static float state(int l, int s, int h) { return (float)(l * 10000 + s * 100 + h); }

static void streams(int rank, int size) {
    enum { L = 2, B = 3, H = 4 };
    const int S = size * B;
    float *all = rank == 0 ? calloc((size_t)L * S * H, sizeof(float)) : NULL;
    float mine[L * B * H];
    if (all)
        for (int l = 0; l < L; l++)
            for (int s = 0; s < S; s++)
                for (int h = 0; h < H; h++) all[(l * S + s) * H + h] = state(l, s, h);
    memset(mine, 0, sizeof mine);
    dist_scatter_streams(mine, all, L, B, H);
    int wrong = 0;
    for (int l = 0; l < L; l++)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                wrong += mine[(l * B + b) * H + h] != state(l, rank * B + b, h);
    EXPECT_MSG(wrong == 0, "rank %d: %d state values scattered wrong", rank, wrong);
    for (int i = 0; i < L * B * H; i++) mine[i] += 0.25f; /* the carried state moves on */
    if (all) memset(all, 0, sizeof(float) * (size_t)L * S * H);
    dist_gather_streams(all, mine, L, B, H);
    if (all) {
        wrong = 0;
        for (int l = 0; l < L; l++)
            for (int s = 0; s < S; s++)
                for (int h = 0; h < H; h++)
                    wrong += all[(l * S + s) * H + h] != state(l, s, h) + 0.25f;
        EXPECT_MSG(wrong == 0, "%d state values gathered wrong", wrong);
    }
    free(all);
}

static void reductions(int rank, int size) {
    /* no reason anywhere; then a signal on the last rank only; then the time limit on rank 0
     * with a signal on rank 1 */
    unsigned none = 0, sig = rank == size - 1 ? DIST_STOP_SIGNAL : 0;
    unsigned both = rank == 0 ? DIST_STOP_TIME : rank == 1 ? DIST_STOP_SIGNAL : 0;
    /* every rank passes its own clock: rank 0's (an arbitrary double, exactly) comes back */
    double clock = rank == 0 ? 12.345678901234567 : 1000.0 + rank;
    double loss = dist_window_end(rank + 0.5, &none, &clock);
    EXPECT_MSG(loss == size * size / 2.0 && none == 0, "rank %d: window end %g, stop %u", rank,
               loss, none);
    EXPECT_MSG(clock == 12.345678901234567, "rank %d: clock %.17g, expected rank 0's", rank,
               clock);
    dist_window_end(1.0, &sig, &clock);
    EXPECT_MSG(sig == DIST_STOP_SIGNAL, "rank %d: stop %u, expected a signal", rank, sig);
    dist_window_end(1.0, &both, &clock);
    EXPECT_MSG(both == (DIST_STOP_TIME | DIST_STOP_SIGNAL), "rank %d: stop %u", rank, both);
    double m[2] = {(double)rank, -(double)rank};
    dist_max_doubles(m, 2);
    EXPECT(m[0] == size - 1 && m[1] == 0);
    double t0 = dist_time(), t1 = dist_time();
    EXPECT(t1 >= t0);
}

/* The piece of the gradient sums: unchanged up to DIST_PIECE_RANKS ranks, then in proportion to
 * the rank count, never beyond one MPI count. */
static void pieces_by_ranks(void) {
    for (int p = 1; p <= DIST_PIECE_RANKS; p++) EXPECT(dist_piece(p) == DIST_PIECE);
    EXPECT(dist_piece(2 * DIST_PIECE_RANKS) == 2 * (int64_t)DIST_PIECE);
    EXPECT(dist_piece(2 * DIST_PIECE_RANKS + 1) == 2 * (int64_t)DIST_PIECE);
    EXPECT(dist_piece(512) == (int64_t)DIST_PIECE * (512 / DIST_PIECE_RANKS));
    EXPECT(dist_piece(INT_MAX) == INT_MAX);
}

int main(int argc, char **argv) {
    dist_t d;
    dist_init(&d, &argc, &argv);
    EXPECT(d.size >= 2);
    static const int64_t pieces[] = {1, 7, 64, 300, N};
    for (unsigned seed = 0; seed < 3; seed++)
        for (size_t p = 0; p < sizeof pieces / sizeof *pieces; p++)
            round_trip(d.rank, d.size, pieces[p], seed);
    broadcasts(d.rank);
    streams(d.rank, d.size);
    reductions(d.rank, d.size);
    pieces_by_ranks();
    double failed = check_report(d.rank == 0 ? "test_dist" : "test_dist (rank > 0)");
    dist_max_doubles(&failed, 1);
    dist_finalize();
    return failed != 0;
}
