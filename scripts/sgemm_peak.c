/* sgemm_peak: the cblas_sgemm throughput of this machine, the ceiling for charlm's GEMM work.
 *
 * Usage: sgemm_peak [N [SECONDS [THREADS]]]      (defaults: 2048 3 1)
 *
 * Multiplies two random N x N single-precision matrices (C = A B, row-major, no transpose)
 * again and again for at least SECONDS seconds after one untimed warm-up product, with THREADS
 * OpenBLAS threads, and prints the best repetition as one line:
 *     SGEMM n=2048 threads=1 reps=17 best_gflops=101.23 median_gflops=100.87
 * counting 2 N^3 floating-point operations per product. Running for a fixed time (rather than
 * a fixed count) keeps two copies started together overlapping until both end, so their sum
 * is the throughput of two cores busy at once.
 *
 * Build: cc -O2 -o sgemm_peak sgemm_peak.c $(pkg-config --cflags --libs openblas)
 */
#define _POSIX_C_SOURCE 199309L
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* OpenBLAS's own (non-CBLAS) entry point; declared here in case cblas.h does not. */
void openblas_set_num_threads(int num_threads);

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 2048;
    double seconds = argc > 2 ? atof(argv[2]) : 3.0;
    int threads = argc > 3 ? atoi(argv[3]) : 1;
    if (n <= 0 || seconds < 0 || threads <= 0) {
        fprintf(stderr, "usage: sgemm_peak [N [SECONDS [THREADS]]]\n");
        return 2;
    }
    openblas_set_num_threads(threads);

    size_t nn = (size_t)n * (size_t)n;
    float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b), *c = malloc(nn * sizeof *c);
    enum { MAX_REPS = 10000 };
    double *rate = malloc(MAX_REPS * sizeof *rate);
    if (!a || !b || !c || !rate) {
        fprintf(stderr, "sgemm_peak: out of memory for n=%d\n", n);
        return 1;
    }
    unsigned s = 12345u;
    for (size_t i = 0; i < nn; i++) {
        s = s * 1664525u + 1013904223u;
        a[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
        s = s * 1664525u + 1013904223u;
        b[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
    }

    double flops = 2.0 * (double)n * (double)n * (double)n;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    int reps = 0;
    double start = now();
    do {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f,
                    c, n);
        rate[reps++] = flops / (now() - t0) * 1e-9;
    } while (reps < MAX_REPS && (reps < 3 || now() - start < seconds));

    qsort(rate, (size_t)reps, sizeof *rate, cmp_double);
    printf("SGEMM n=%d threads=%d reps=%d best_gflops=%.2f median_gflops=%.2f check=%g\n", n,
           threads, reps, rate[reps - 1], rate[reps / 2], (double)c[nn / 2]);
    free(a);
    free(b);
    free(c);
    free(rate);
    return 0;
}
