/* bench_kernel: the recurrent step's products of one window, kern (every path this CPU runs)
 * against cblas_sgemm, alternating in one process so that a busy machine slows both alike.
 *
 * Usage: build/bench_kernel [REPS [B [T [WHAT]]]]  (defaults: 9 32 64 all; one OpenBLAS thread)
 *        WHAT: products, windows or all
 *
 * For each shape (H, G) of the benchmark's works it times one window of T steps, forward
 * (C (B, G*H) = h W_hh^T: kern_pack of W_hh^T, then T products) and backward (C (B, H) +=
 * dgh W_hh: kern_pack of W_hh, then T products), the packing included, against T cblas_sgemm
 * calls of the same product, REPS times alternately, and prints the median GFLOP/s of each
 * (2 B H G*H per product), their ratio to cblas_sgemm and to an sgemm of 2048^3 measured in the
 * same run (the ceiling of scripts/bench.sh's "of peak" column on one core). Then whole
 * training windows (model_forward + model_backward, 2 layers, E = H, V = 65, B streams x T
 * steps) of the benchmark's works, alternating the kern path of this CPU (fp32, and bf16) with
 * cblas_sgemm for the recurrent products, as chars/s of one rank and the GFLOP/s it executes
 * (model_flops_executed_per_char). Times are the
 * thread's CPU time, not wall-clock time, so that the other processes of a shared machine count
 * less (they still share the caches). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 199309L
#endif
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "charlm/kern.h"
#include "charlm/model.h"
#include "charlm/rng.h"

void openblas_set_num_threads(int num_threads);

/* the CPU time of this thread, seconds */
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void fill(float *x, size_t n, unsigned s) {
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
    }
}

/* one window: seconds; path < 0 = cblas_sgemm */
static double window(int path, kern_mat_t *m, float *C, const float *A, const float *w, int B,
                     int T, int K, int N, int trans, int acc) {
    double t0 = now();
    if (path >= 0) {
        kern_pack(m, w, K, N, trans);
        for (int t = 0; t < T; t++) kern_gemm(C, A + (size_t)(t % 2) * B * K, m, B, acc);
    } else {
        for (int t = 0; t < T; t++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, trans ? CblasTrans : CblasNoTrans, B, N, K,
                        1.0f, A + (size_t)(t % 2) * B * K, K, w, trans ? K : N, acc ? 1.0f : 0.0f,
                        C, N);
    }
    return now() - t0;
}

static double peak_gflops(void) {
    const int n = 2048;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n),
          *c = malloc(sizeof(float) * n * n);
    fill(a, (size_t)n * n, 1), fill(b, (size_t)n * n, 2);
    double best = 0;
    for (int r = 0; r < 4; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c,
                    n);
        double g = 2.0 * n * n * (double)n / (now() - t0) * 1e-9;
        if (r && g > best) best = g;
    }
    free(a), free(b), free(c);
    return best;
}

/* one training window of m on a: CPU seconds */
static double train_window(model_acts_t *a, const model_t *m, float *grads, float *sh, float *sc,
                           int T) {
    double t0 = now();
    model_forward(a, sh, m->ops->has_c ? sc : NULL, m, T, NULL, 1.0f, 1);
    model_backward(grads, a, m, T, NULL);
    return now() - t0;
}

/* The benchmark's works as whole windows: the CPU's kern paths (fp32, bf16) against blas. */
static void bench_windows(int reps, int B, int T, double peak) {
    static const struct { cell_kind_t cell; int H; } works[] = {
        {CELL_LSTM, 512}, {CELL_GRU, 512}, {CELL_RNN, 512}, {CELL_LSTM, 128}, {CELL_LSTM, 1024}};
    printf("\nwhole windows (forward + backward, 2 layers, E = H, V = 65), medians of %d\n", reps);
    printf("%-11s %-15s %10s %10s %8s %8s\n", "work", "products", "chars/s", "GFLOP/s", "vs blas",
           "of peak");
    for (size_t w = 0; w < sizeof works / sizeof *works; w++) {
        model_params_t mp = {.cell = works[w].cell, .layers = 2, .hidden = works[w].H,
                             .embed = works[w].H};
        model_dims_t d;
        model_dims(&d, &mp, 65);
        model_t m;
        model_init(&m, &d, 1);
        const size_t ns = (size_t)2 * B * d.H;
        float *grads = malloc(sizeof(float) * (size_t)m.nparams), *sh = calloc(ns, sizeof(float)),
              *sc = calloc(ns, sizeof(float));
        /* [0] = cblas_sgemm, [1] = this CPU's fp32 path, [2] = its bf16 path */
        static const char *const env[3] = {"blas", NULL, NULL};
        const int flags[3] = {0, 0, MODEL_ACTS_BF16};
        model_acts_t a[3];
        double *t[3];
        for (int k = 0; k < 3; k++) {
            if (env[k]) setenv("CHARLM_KERN", env[k], 1);
            else unsetenv("CHARLM_KERN");
            model_acts_alloc(&a[k], &m, B, T, flags[k]);
            for (int i = 0; i < B * T; i++) {
                a[k].inputs[i] = (int32_t)(rng_mix(7u * i + 1) % 65);
                a[k].targets[i] = (int32_t)(rng_mix(13u * i + 2) % 65);
            }
            t[k] = malloc(sizeof(double) * reps);
            train_window(&a[k], &m, grads, sh, sc, T);
        }
        unsetenv("CHARLM_KERN");
        for (int r = 0; r < reps; r++)
            for (int k = 0; k < 3; k++) t[k][r] = train_window(&a[k], &m, grads, sh, sc, T);
        const double fpc = model_flops_executed_per_char(&m, &a[0]), base = median(t[0], reps);
        char work[32];
        snprintf(work, sizeof work, "%s 2x%d", cell_kind_name(works[w].cell), works[w].H);
        for (int k = 0; k < 3; k++) {
            double sec = k ? median(t[k], reps) : base, cps = B * (double)T / sec;
            char name[40];
            snprintf(name, sizeof name, "%s%s", kern_path_name(a[k].whh.path),
                     k == 2 ? " bf16" : "");
            printf("%-11s %-15s %10.0f %10.1f %7.2fx %7.1f%%\n", work, name, cps, cps * fpc * 1e-9,
                   base / sec, 100 * cps * fpc * 1e-9 / peak);
            free(t[k]);
            model_acts_free(&a[k]);
        }
        free(grads), free(sh), free(sc);
        model_free(&m);
    }
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 9, B = argc > 2 ? atoi(argv[2]) : 32,
        T = argc > 3 ? atoi(argv[3]) : 64;
    const char *what = argc > 4 ? argv[4] : "all";
    const int products = !strcmp(what, "products") || !strcmp(what, "all"),
              windows = !strcmp(what, "windows") || !strcmp(what, "all");
    if (reps < 1 || B < 1 || T < 1 || !(products || windows)) {
        fprintf(stderr, "usage: bench_kernel [REPS [B [T [products|windows|all]]]]\n");
        return 2;
    }
    openblas_set_num_threads(1);
    static const int shapes[][2] = {{128, 4}, {512, 4}, {512, 3}, {512, 1}, {1024, 4}};
    double peak = peak_gflops();
    printf("sgemm 2048^3, 1 thread: %.1f GFLOP/s; B=%d T=%d, medians of %d windows\n", peak, B, T,
           reps);
    if (products)
        printf("%-6s %-3s %-9s %-11s %10s %10s %8s %8s\n", "H", "G", "pass", "path", "GFLOP/s",
               "sgemm", "ratio", "of peak");
    for (size_t s = 0; products && s < sizeof shapes / sizeof *shapes; s++) {
        const int H = shapes[s][0], GH = shapes[s][1] * H;
        float *w = malloc(sizeof(float) * (size_t)GH * H),
              *A = malloc(sizeof(float) * 2 * (size_t)B * GH),
              *C = calloc((size_t)B * GH, sizeof(float));
        fill(w, (size_t)GH * H, 3), fill(A, 2 * (size_t)B * GH, 4);
        for (int back = 0; back < 2; back++) {
            const int K = back ? GH : H, N = back ? H : GH;
            const double flops = 2.0 * B * (double)K * N * T;
            for (int prec = KERN_FP32; prec <= KERN_BF16; prec++)
                for (int p = 0; p < KERN_PATHS; p++) {
                    if (p == KERN_BLAS && prec == KERN_FP32) continue;
                    if (!kern_path_supported((kern_path_t)p, (kern_precision_t)prec)) continue;
                    kern_mat_t m;
                    kern_mat_alloc(&m, (kern_path_t)p, (kern_precision_t)prec, B, K, N);
                    double *tk = malloc(sizeof(double) * reps), *tb = malloc(sizeof(double) * reps);
                    window(p, &m, C, A, w, B, T, K, N, !back, back);
                    window(-1, &m, C, A, w, B, T, K, N, !back, back);
                    for (int r = 0; r < reps; r++) {
                        tk[r] = window(p, &m, C, A, w, B, T, K, N, !back, back);
                        tb[r] = window(-1, &m, C, A, w, B, T, K, N, !back, back);
                    }
                    double gk = flops / median(tk, reps) * 1e-9;
                    double gb = flops / median(tb, reps) * 1e-9;
                    char name[32];
                    snprintf(name, sizeof name, "%s%s", kern_path_name((kern_path_t)p),
                             p == KERN_BLAS ? "-bf16" : "");
                    printf("%-6d %-3d %-9s %-11s %10.1f %10.1f %7.2fx %7.1f%%\n", H, shapes[s][1],
                           back ? "backward" : "forward", name, gk, gb, gk / gb, 100 * gk / peak);
                    free(tk), free(tb);
                    kern_mat_free(&m);
                }
        }
        free(w), free(A), free(C);
    }
    if (windows) bench_windows(reps, B, T, peak);
    return 0;
}
