/* bench_kernel: the recurrent step's products of one window, kern (every path this CPU runs)
 * against cblas_sgemm, alternating in one process so that a busy machine slows both alike.
 *
 * Usage: build/bench_kernel [REPS [B [T [WHAT]]]]  (defaults: 9 32 64 all; one OpenBLAS thread)
 *        WHAT: products, matmul, windows or all
 *
 * For each shape (H, G) of the benchmark's works it times one window of T steps, forward (C (B,
 * G*H) = h W_hh^T: kern_pack of W_hh^T, then T products) and backward (C (B, H) += dgh W_hh:
 * kern_pack of W_hh, then T products), the packing included, against T cblas_sgemm calls of the
 * same product, REPS times alternately, and prints the median GFLOP/s of each (2 B H G*H per
 * product), their ratio to cblas_sgemm and to an sgemm of 2048^3 measured in the same run (the
 * ceiling of scripts/bench.sh's "of peak" column on one core). Then whole training windows
 * (model_forward + model_backward, 2 layers, E = H, V = 65, B streams x T steps) of the benchmark's
 * works, alternating the kern path of this CPU (fp32, and bf16) with cblas_sgemm for the recurrent
 * products, as chars/s of one rank and the GFLOP/s it executes (model_flops_executed_per_char).
 * "matmul": the whole products of those windows (kern_matmul: X W^T, dY^T X, dY W over B T rows) on
 * every bf16 path against cblas_sgemm in fp32. Built with oneDNN (CMake finds Debian's
 * libdnnl-dev), the products are also run with oneDNN's matmul, fp32 and bf16 (bf16 weights and A,
 * fp32 results), its weights reordered once per window into the layout it chooses, as kern packs
 * them (one OpenMP thread). Every product row gives the largest difference from cblas_sgemm's
 * result over the largest element of that result ("err"). Times are the thread's CPU time, not
 * wall-clock time, so that the other processes of a shared machine count less (they still share the
 * caches). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 199309L
#endif
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "charlm/kern.h"
#include "charlm/model.h"
#include "charlm/rng.h"

#if CHARLM_BENCH_DNNL
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#endif

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

enum { PATH_SGEMM = -1, PATH_ONEDNN = -2 };

#if CHARLM_BENCH_DNNL
/* oneDNN's matmul for one product shape: the weights reordered (packed) once per window, A
 * converted to bf16 per step when bf16 */
typedef struct {
    dnnl_engine_t eng;
    dnnl_stream_t st;
    dnnl_primitive_t mm, wre, are; /* the matmul, the weights' reorder, A's (bf16 only) */
    dnnl_memory_t wsrc, w, asrc, a, c;
    int bf16, K;
} onednn_t;

static void dnnl_ok(dnnl_status_t s, const char *what) {
    if (s == dnnl_success) return;
    fprintf(stderr, "bench_kernel: oneDNN %s: status %d\n", what, (int)s);
    exit(1);
}
#define DN(call) dnnl_ok(call, #call)

static void onednn_init(onednn_t *o, int bf16, int B, int K, int N, int trans, int acc) {
    memset(o, 0, sizeof *o);
    o->bf16 = bf16, o->K = K;
    const dnnl_data_type_t dt = bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_dims_t ad = {B, K}, wd = {K, N}, cd = {B, N};
    dnnl_memory_desc_t a_f32, a_md, w_plain, w_any, c_md;
    DN(dnnl_engine_create(&o->eng, dnnl_cpu, 0));
    DN(dnnl_stream_create(&o->st, o->eng, dnnl_stream_default_flags));
    DN(dnnl_memory_desc_init_by_tag(&a_f32, 2, ad, dnnl_f32, dnnl_ab));
    DN(dnnl_memory_desc_init_by_tag(&a_md, 2, ad, dt, dnnl_ab));
    /* B = w^T of w (N, K) when trans: dims (K, N), N the outer one */
    DN(dnnl_memory_desc_init_by_tag(&w_plain, 2, wd, dnnl_f32, trans ? dnnl_ba : dnnl_ab));
    DN(dnnl_memory_desc_init_by_tag(&w_any, 2, wd, dt, dnnl_format_tag_any));
    DN(dnnl_memory_desc_init_by_tag(&c_md, 2, cd, dnnl_f32, dnnl_ab));
    dnnl_matmul_desc_t md;
    DN(dnnl_matmul_desc_init(&md, &a_md, &w_any, NULL, &c_md));
    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t po;
    DN(dnnl_primitive_attr_create(&attr));
    DN(dnnl_post_ops_create(&po));
    if (acc) DN(dnnl_post_ops_append_sum(po, 1.0f));
    DN(dnnl_primitive_attr_set_post_ops(attr, po));
    dnnl_primitive_desc_t pd, rpd;
    DN(dnnl_primitive_desc_create(&pd, &md, attr, o->eng, NULL));
    const dnnl_memory_desc_t *w_md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    DN(dnnl_primitive_create(&o->mm, pd));
    DN(dnnl_memory_create(&o->w, w_md, o->eng, DNNL_MEMORY_ALLOCATE));
    DN(dnnl_memory_create(&o->wsrc, &w_plain, o->eng, DNNL_MEMORY_NONE));
    DN(dnnl_reorder_primitive_desc_create(&rpd, &w_plain, o->eng, w_md, o->eng, NULL));
    DN(dnnl_primitive_create(&o->wre, rpd));
    DN(dnnl_primitive_desc_destroy(rpd));
    DN(dnnl_memory_create(&o->asrc, &a_f32, o->eng, DNNL_MEMORY_NONE));
    DN(dnnl_memory_create(&o->c, &c_md, o->eng, DNNL_MEMORY_NONE));
    if (bf16) {
        DN(dnnl_memory_create(&o->a, &a_md, o->eng, DNNL_MEMORY_ALLOCATE));
        DN(dnnl_reorder_primitive_desc_create(&rpd, &a_f32, o->eng, &a_md, o->eng, NULL));
        DN(dnnl_primitive_create(&o->are, rpd));
        DN(dnnl_primitive_desc_destroy(rpd));
    }
    DN(dnnl_primitive_desc_destroy(pd));
    DN(dnnl_post_ops_destroy(po));
    DN(dnnl_primitive_attr_destroy(attr));
}

static void onednn_free(onednn_t *o) {
    dnnl_primitive_t p[] = {o->mm, o->wre, o->are};
    dnnl_memory_t m[] = {o->wsrc, o->w, o->asrc, o->a, o->c};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++)
        if (p[i]) DN(dnnl_primitive_destroy(p[i]));
    for (size_t i = 0; i < sizeof m / sizeof *m; i++)
        if (m[i]) DN(dnnl_memory_destroy(m[i]));
    DN(dnnl_stream_destroy(o->st));
    DN(dnnl_engine_destroy(o->eng));
}

static void onednn_run(onednn_t *o, dnnl_primitive_t p, int n, const dnnl_exec_arg_t *args) {
    DN(dnnl_primitive_execute(p, o->st, n, args));
}

/* the window of window() below, with oneDNN */
static void onednn_window(onednn_t *o, float *C, const float *A, const float *w, int B, int T) {
    DN(dnnl_memory_set_data_handle(o->wsrc, (void *)w));
    onednn_run(o, o->wre, 2, (dnnl_exec_arg_t[]){{DNNL_ARG_FROM, o->wsrc}, {DNNL_ARG_TO, o->w}});
    DN(dnnl_memory_set_data_handle(o->c, C));
    for (int t = 0; t < T; t++) {
        DN(dnnl_memory_set_data_handle(o->asrc, (void *)(A + (size_t)(t % 2) * B * o->K)));
        if (o->bf16)
            onednn_run(o, o->are, 2,
                       (dnnl_exec_arg_t[]){{DNNL_ARG_FROM, o->asrc}, {DNNL_ARG_TO, o->a}});
        onednn_run(o, o->mm, 3,
                   (dnnl_exec_arg_t[]){{DNNL_ARG_SRC, o->bf16 ? o->a : o->asrc},
                                       {DNNL_ARG_WEIGHTS, o->w}, {DNNL_ARG_DST, o->c}});
    }
    DN(dnnl_stream_wait(o->st));
}
#else
typedef struct onednn onednn_t;
#endif

/* a product shape of the table and its buffers */
typedef struct {
    int B, T, K, N, trans, acc, reps, H, G;
    double peak;
    const float *w /* (N, K) trans or (K, N) */, *A /* (2, B, K) */;
    float *C /* (B, N) */, *ref /* (B, N) */;
} product_t;

/* One window of pr's T products into pr->C, B packed first where the path packs: seconds.
 * path: a kern path (m), PATH_SGEMM (cblas_sgemm) or PATH_ONEDNN (dn). */
static double window(const product_t *pr, int path, kern_mat_t *m, onednn_t *dn) {
    const int B = pr->B, K = pr->K, N = pr->N, trans = pr->trans, acc = pr->acc;
    const float *A = pr->A;
    double t0 = now();
    if (path >= 0) {
        kern_pack(m, pr->w, K, N, trans);
        for (int t = 0; t < pr->T; t++) kern_gemm(pr->C, A + (size_t)(t % 2) * B * K, m, B, acc);
    } else if (path == PATH_SGEMM) {
        for (int t = 0; t < pr->T; t++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, trans ? CblasTrans : CblasNoTrans, B, N, K,
                        1.0f, A + (size_t)(t % 2) * B * K, K, pr->w, trans ? K : N,
                        acc ? 1.0f : 0.0f, pr->C, N);
    } else {
#if CHARLM_BENCH_DNNL
        onednn_window(dn, pr->C, A, pr->w, B, pr->T);
#else
        (void)dn;
#endif
    }
    return now() - t0;
}

/* One row of the products table: a path against cblas_sgemm, alternating, medians of reps
 * windows; err compares one window's result from zero with cblas_sgemm's. */
static void product_row(const product_t *pr, const char *name, int path, kern_mat_t *m,
                        onednn_t *dn) {
    const size_t n = (size_t)pr->B * pr->N;
    double *tk = malloc(sizeof(double) * pr->reps), *tb = malloc(sizeof(double) * pr->reps);
    memset(pr->C, 0, sizeof(float) * n);
    window(pr, PATH_SGEMM, m, dn);
    memcpy(pr->ref, pr->C, sizeof(float) * n);
    memset(pr->C, 0, sizeof(float) * n);
    window(pr, path, m, dn);
    double diff = 0, big = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)pr->C[i] - pr->ref[i]), r = fabs((double)pr->ref[i]);
        diff = d > diff ? d : diff, big = r > big ? r : big;
    }
    for (int r = 0; r < pr->reps; r++) {
        tk[r] = window(pr, path, m, dn);
        tb[r] = window(pr, PATH_SGEMM, m, dn);
    }
    const double flops = 2.0 * pr->B * (double)pr->K * pr->N * pr->T;
    const double gk = flops / median(tk, pr->reps) * 1e-9, gb = flops / median(tb, pr->reps) * 1e-9;
    printf("%-6d %-3d %-9s %-11s %10.1f %10.1f %7.2fx %7.1f%% %9.1e\n", pr->H, pr->G,
           pr->acc ? "backward" : "forward", name, gk, gb, gk / gb, 100 * gk / pr->peak,
           big > 0 ? diff / big : diff);
    free(tk), free(tb);
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

/* the (H, G) of the benchmark's works: LSTM 2x128, LSTM, GRU and RNN 2x512, LSTM 2x1024 */
static const int shapes[][2] = {{128, 4}, {512, 4}, {512, 3}, {512, 1}, {1024, 4}};

/* a whole product of a window (kern_matmul) and its operands */
typedef struct {
    const char *name;
    int M, N, K, transa, transb;
} matmul_t;

static double matmul_once(const matmul_t *mm, float *C, const float *A, const float *Bm, int path,
                          kern_mat_t *m) {
    double t0 = now();
    if (path >= 0)
        kern_matmul(C, A, mm->transa, Bm, mm->transb, mm->M, mm->N, mm->K, 0, m);
    else
        cblas_sgemm(CblasRowMajor, mm->transa ? CblasTrans : CblasNoTrans,
                    mm->transb ? CblasTrans : CblasNoTrans, mm->M, mm->N, mm->K, 1.0f, A,
                    mm->transa ? mm->M : mm->K, Bm, mm->transb ? mm->K : mm->N, 0.0f, C, mm->N);
    return now() - t0;
}

/* The whole products of the benchmark's works (rows = B T of one rank, E = H): the input
 * projection X W^T, the weight gradient dY^T X and dX = dY W, on every bf16 path of this CPU
 * against cblas_sgemm in fp32, alternating; the operands rounded on every call as in training. */
static void bench_matmul(int reps, int rows, double peak) {
    printf("\nwhole products (kern_matmul), %d rows, medians of %d\n", rows, reps);
    printf("%-6s %-3s %-9s %-11s %10s %10s %8s %8s\n", "H", "G", "product", "path", "GFLOP/s",
           "sgemm", "ratio", "of peak");
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int H = shapes[s][0], GH = shapes[s][1] * H;
        const matmul_t mms[] = {{"X W^T", rows, GH, H, 0, 1},
                                {"dY^T X", GH, H, rows, 1, 0},
                                {"dY W", rows, H, GH, 0, 0}};
        /* every operand and result is at most (max(rows, H), GH): W (GH, H) too */
        const size_t big = (size_t)(rows > H ? rows : H) * GH;
        float *A = malloc(sizeof(float) * big), *Bm = malloc(sizeof(float) * big),
              *C = malloc(sizeof(float) * big);
        fill(A, big, 5), fill(Bm, big, 6);
        for (size_t k = 0; k < sizeof mms / sizeof *mms; k++) {
            const matmul_t *mm = &mms[k];
            for (int p = 0; p < KERN_PATHS; p++) {
                if (!kern_path_supported((kern_path_t)p, KERN_BF16)) continue;
                kern_need_t need = {0, 0};
                kern_need(&need, (kern_path_t)p, KERN_BF16, mm->M, mm->N, mm->K);
                kern_mat_t m;
                kern_mat_alloc_need(&m, (kern_path_t)p, KERN_BF16, &need);
                double *tk = malloc(sizeof(double) * reps), *tb = malloc(sizeof(double) * reps);
                matmul_once(mm, C, A, Bm, p, &m);
                for (int r = 0; r < reps; r++) {
                    tk[r] = matmul_once(mm, C, A, Bm, p, &m);
                    tb[r] = matmul_once(mm, C, A, Bm, PATH_SGEMM, &m);
                }
                const double flops = 2.0 * mm->M * (double)mm->N * mm->K;
                const double gk = flops / median(tk, reps) * 1e-9,
                             gb = flops / median(tb, reps) * 1e-9;
                char name[32];
                snprintf(name, sizeof name, "%s-bf16", kern_path_name((kern_path_t)p));
                printf("%-6d %-3d %-9s %-11s %10.1f %10.1f %7.2fx %7.1f%%\n", H, shapes[s][1],
                       mm->name, name, gk, gb, gk / gb, 100 * gk / peak);
                free(tk), free(tb);
                kern_mat_free(&m);
            }
        }
        free(A), free(Bm), free(C);
    }
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
              windows = !strcmp(what, "windows") || !strcmp(what, "all"),
              matmuls = !strcmp(what, "matmul") || !strcmp(what, "all");
    if (reps < 1 || B < 1 || T < 1 || !(products || windows || matmuls)) {
        fprintf(stderr, "usage: bench_kernel [REPS [B [T [products|matmul|windows|all]]]]\n");
        return 2;
    }
    openblas_set_num_threads(1);
#if CHARLM_BENCH_DNNL
    omp_set_num_threads(1);
#endif
    double peak = peak_gflops();
    printf("sgemm 2048^3, 1 thread: %.1f GFLOP/s; B=%d T=%d, medians of %d windows\n", peak, B, T,
           reps);
    if (products)
        printf("%-6s %-3s %-9s %-11s %10s %10s %8s %8s %9s\n", "H", "G", "pass", "path",
               "GFLOP/s", "sgemm", "ratio", "of peak", "err");
    for (size_t s = 0; products && s < sizeof shapes / sizeof *shapes; s++) {
        const int H = shapes[s][0], GH = shapes[s][1] * H;
        float *w = malloc(sizeof(float) * (size_t)GH * H),
              *A = malloc(sizeof(float) * 2 * (size_t)B * GH),
              *C = calloc((size_t)B * GH, sizeof(float)),
              *ref = malloc(sizeof(float) * (size_t)B * GH);
        fill(w, (size_t)GH * H, 3), fill(A, 2 * (size_t)B * GH, 4);
        for (int back = 0; back < 2; back++) {
            product_t pr = {.B = B, .T = T, .K = back ? GH : H, .N = back ? H : GH,
                            .trans = !back, .acc = back, .reps = reps, .H = H,
                            .G = shapes[s][1], .peak = peak, .w = w, .A = A, .C = C, .ref = ref};
            for (int prec = KERN_FP32; prec <= KERN_BF16; prec++)
                for (int p = 0; p < KERN_PATHS; p++) {
                    if (p == KERN_BLAS && prec == KERN_FP32) continue;
                    if (!kern_path_supported((kern_path_t)p, (kern_precision_t)prec)) continue;
                    kern_mat_t m;
                    kern_mat_alloc(&m, (kern_path_t)p, (kern_precision_t)prec, B, pr.K, pr.N);
                    char name[32];
                    snprintf(name, sizeof name, "%s%s", kern_path_name((kern_path_t)p),
                             p == KERN_BLAS ? "-bf16" : "");
                    product_row(&pr, name, p, &m, NULL);
                    kern_mat_free(&m);
                }
#if CHARLM_BENCH_DNNL
            for (int bf16 = 0; bf16 < 2; bf16++) {
                onednn_t o;
                onednn_init(&o, bf16, B, pr.K, pr.N, pr.trans, pr.acc);
                product_row(&pr, bf16 ? "onednn-bf16" : "onednn", PATH_ONEDNN, NULL, &o);
                onednn_free(&o);
            }
#endif
        }
        free(w), free(A), free(C), free(ref);
    }
    if (matmuls) bench_matmul(reps, B * T, peak);
    if (windows) bench_windows(reps, B, T, peak);
    return 0;
}
