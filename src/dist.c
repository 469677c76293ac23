#define _GNU_SOURCE /* sched_getaffinity: the cores this rank may use (cgroups, SLURM) */
#include "charlm/dist.h"

#include <sched.h>
#include <cblas.h>
#include <limits.h>
#include <stddef.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

static int world_size(void) {
    int n;
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    return n;
}

int dist_agree(const dist_t *d, int rc) {
    int mine = rc != CHARLM_OK ? d->rank : d->size, first = d->size;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == d->size) return CHARLM_OK;
    if (first == d->rank) err_print();
    MPI_Bcast(&rc, 1, MPI_INT, first, MPI_COMM_WORLD);
    return rc;
}

int64_t dist_piece(int nranks) {
    int64_t piece = (int64_t)DIST_PIECE * (nranks > DIST_PIECE_RANKS ? nranks / DIST_PIECE_RANKS : 1);
    return piece < INT_MAX ? piece : INT_MAX;
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

double dist_time(void) { return MPI_Wtime(); }

int dist_bcast_int(int v) {
    MPI_Bcast(&v, 1, MPI_INT, 0, MPI_COMM_WORLD);
    return v;
}

void dist_bcast_floats(float *buf, int64_t n) {
    /* MPI counts are int: a larger buffer goes in pieces of at most 2^30 floats */
    const int64_t piece = (int64_t)1 << 30;
    for (int64_t at = 0; at < n; at += piece)
        MPI_Bcast(buf + at, (int)(n - at < piece ? n - at : piece), MPI_FLOAT, 0, MPI_COMM_WORLD);
}

_Static_assert(offsetof(dist_position_t, plateau_stale) == offsetof(dist_position_t, step) +
                   5 * sizeof(int64_t) &&
               offsetof(dist_position_t, plateau_best) == offsetof(dist_position_t, lr) +
                   6 * sizeof(double),
               "dist_bcast_position sends 6 int64 and 7 doubles, each run contiguous");

void dist_bcast_position(dist_position_t *p) {
    int len[2] = {6, 7};
    MPI_Aint off[2] = {offsetof(dist_position_t, step), offsetof(dist_position_t, lr)};
    MPI_Datatype types[2] = {MPI_INT64_T, MPI_DOUBLE}, t;
    MPI_Type_create_struct(2, len, off, types, &t);
    MPI_Type_commit(&t);
    MPI_Bcast(p, 1, t, 0, MPI_COMM_WORLD);
    MPI_Type_free(&t);
}

/* One layer at a time: each layer's (S, H) block is the ranks' (B, H) blocks in rank order. */
void dist_scatter_streams(float *mine, const float *all, int layers, int B, int H) {
    const size_t BH = (size_t)B * H, SH = BH * (size_t)world_size();
    for (int l = 0; l < layers; l++)
        MPI_Scatter(all ? all + l * SH : NULL, (int)BH, MPI_FLOAT, mine + l * BH, (int)BH,
                    MPI_FLOAT, 0, MPI_COMM_WORLD);
}

void dist_gather_streams(float *all, const float *mine, int layers, int B, int H) {
    const size_t BH = (size_t)B * H, SH = BH * (size_t)world_size();
    for (int l = 0; l < layers; l++)
        MPI_Gather(mine + l * BH, (int)BH, MPI_FLOAT, all ? all + l * SH : NULL, (int)BH,
                   MPI_FLOAT, 0, MPI_COMM_WORLD);
}

void dist_gather_u64(uint64_t *all, const uint64_t *mine, int n) {
    MPI_Gather(mine, n, MPI_UINT64_T, all, n, MPI_UINT64_T, 0, MPI_COMM_WORLD);
}

void dist_sum_doubles(double *buf, int n) {
    MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

void dist_max_doubles(double *buf, int n) {
    MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
}

double dist_window_end(double loss, unsigned *stop, double *clock) {
    CHARLM_CHECK(*stop < 1u << DIST_STOP_REASONS);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    /* each reason travels as a count of the ranks that have it: a sum of doubles, exact, in the
     * same all-reduce as the loss; rank 0's clock as a sum with the others' zeros, exact too */
    double red[2 + DIST_STOP_REASONS] = {loss, rank == 0 ? *clock : 0.0};
    for (int i = 0; i < DIST_STOP_REASONS; i++) red[2 + i] = *stop >> i & 1u;
    dist_sum_doubles(red, 2 + DIST_STOP_REASONS);
    *stop = 0;
    for (int i = 0; i < DIST_STOP_REASONS; i++)
        if (red[2 + i] > 0) *stop |= 1u << i;
    *clock = red[1];
    return red[0];
}

void dist_blas_kernels(char **argv) {
#if CHARLM_HAVE_OPENBLAS && (defined(__x86_64__) || defined(__i386__))
    /* the cores of OpenBLAS's DYNAMIC_ARCH list whose kernels use neither AVX2 nor AVX-512 */
    static const char *const older[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem",
                                        "Atom", "Sandybridge", "Katmai", "Coppermine",
                                        "Northwood", "Banias", "Opteron", "Barcelona", "Bobcat"};
    if (getenv("OPENBLAS_CORETYPE")) return;
    const char *core = openblas_get_corename(), *want = NULL;
    int old = 0;
    for (size_t i = 0; i < sizeof older / sizeof *older; i++)
        old |= core && !strcasecmp(core, older[i]);
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bf16")) want = "COOPERLAKE";
    else if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        want = "SKYLAKEX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) want = "HASWELL";
    if (!old || !want || setenv("OPENBLAS_CORETYPE", want, 1) != 0) return;
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE"); /* the exec failed: go on with what OpenBLAS chose */
#else
    (void)argv;
#endif
}

int dist_first_unlike(const char *what, const char *who, char *other_what, char *other_who) {
    int rank, n;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    char mine[2 * DIST_TEXT] = {0}; /* what, then who, each NUL-padded */
    snprintf(mine, DIST_TEXT, "%s", what);
    snprintf(mine + DIST_TEXT, DIST_TEXT, "%s", who);
    char *all = NULL;
    if (rank == 0) all = xcalloc((size_t)n, sizeof mine);
    MPI_Gather(mine, (int)sizeof mine, MPI_CHAR, all, (int)sizeof mine, MPI_CHAR, 0,
               MPI_COMM_WORLD);
    int first = -1;
    for (int r = 1; rank == 0 && r < n && first < 0; r++) {
        const char *theirs = all + (size_t)r * sizeof mine;
        if (memcmp(theirs, mine, DIST_TEXT) != 0) {
            first = r;
            memcpy(other_what, theirs, DIST_TEXT);
            memcpy(other_who, theirs + DIST_TEXT, DIST_TEXT);
        }
    }
    free(all);
    return first;
}

const char *dist_blas_kernel_set(void) {
#if CHARLM_HAVE_OPENBLAS
    return openblas_get_corename();
#else
    return "unknown (not OpenBLAS)";
#endif
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

void dist_libraries(char *out, size_t n) {
    char mpi[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(mpi, &len);
    mpi[strcspn(mpi, "\n")] = '\0'; /* Open MPI appends its repository and date lines */
#if CHARLM_HAVE_OPENBLAS
    snprintf(out, n, "MPI: %s\nBLAS: %s, kernels %s", mpi, openblas_get_config(),
             dist_blas_kernel_set());
#else
    snprintf(out, n, "MPI: %s\nBLAS: a CBLAS other than OpenBLAS (kernel set not known)", mpi);
#endif
}
