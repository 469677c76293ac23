/* model.precision = bf16 (MODEL_ACTS_BF16) against fp32, for every cell, 2 layers, over a window
 * from a non-zero carried state, on each bf16 path this CPU runs (AMX's tile products,
 * avx512bf16's vdpbf16ps, and the rounded cblas_sgemm every CPU runs, each forced with
 * CHARLM_KERN):
 *  - the loss within 1e-3 relative of fp32's and every tensor's gradient within 2e-2 (relative
 *    norm): bf16 keeps 8 significant bits (a relative rounding of 2^-8 = 3.9e-3 per operand), in
 *    every product (measured on Zen 4: 1.3e-5 to 1.8e-5 and 3.4e-3 to 5.5e-3);
 *  - but not equal to fp32's: the precision does take effect;
 *  - also in the whole products (input projections, weight gradients, decoder): one step from a
 *    zero state, where the recurrent product is exactly zero in either precision, the gradients
 *    still differ from fp32's by more than 1e-4 (measured: 4.2e-3 to 5.2e-3; equal, bit for bit,
 *    when only the recurrent products were rounded);
 *  - every two paths ten times closer to each other than either is to fp32: they round the same
 *    operands and differ only in the order of fp32 sums (measured with OpenBLAS's Haswell,
 *    Cooperlake, SkylakeX and Prescott kernels, before the whole products were rounded too: loss
 *    2e-10 to 3e-9 and gradients 1.3e-7 to 1.0e-5 apart, against 5e-6 to 9e-6 and 1.1e-3 to
 *    2.7e-3 from fp32; since, on Zen 4 with Cooperlake kernels: 2e-10 to 1.2e-9 and 7.7e-8 to
 *    1.1e-7 against 1.3e-5 to 1.8e-5 and 3.4e-3 to 5.5e-3), where a path that did not round
 *    would be as far from the others as from fp32;
 *  - a second pass gives the same bits (what bit-exact resume needs). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "charlm/model.h"
#include "charlm/rng.h"
#include "check.h"

enum { V = 11, E = 16, H = 40, LAYERS = 2, B = 5, T = 12, NS = LAYERS * B * H };

/* the bf16 paths, each checked where this CPU runs it */
enum { PATHS = 3 };
static const kern_path_t want[PATHS] = {KERN_AMX_BF16, KERN_AVX512_BF16, KERN_BLAS};

typedef struct {
    double loss;
    float *grads;
} pass_t;

/* loss and gradients of one window of m with flags, T steps from (h0, c0), on the path
 * CHARLM_KERN names */
static pass_t run(const model_t *m, int flags, const float *h0, const float *c0, uint64_t key,
                  int steps) {
    model_acts_t a;
    model_acts_alloc(&a, m, B, T, flags);
    for (int i = 0; i < T * B; i++) {
        a.inputs[i] = (int32_t)(rng_mix(key + 7 * i) % V);
        a.targets[i] = (int32_t)(rng_mix(key + 13 * i) % V);
    }
    float sh[NS], sc[NS];
    memcpy(sh, h0, sizeof sh);
    memcpy(sc, c0, sizeof sc);
    pass_t p = {.grads = malloc(sizeof(float) * (size_t)m->nparams)};
    p.loss = model_forward(&a, sh, m->ops->has_c ? sc : NULL, m, steps, NULL, 1.0f, 1);
    model_backward(p.grads, &a, m, steps, NULL);
    model_acts_free(&a);
    return p;
}

/* the largest over tensors of ||x - y|| / ||y|| */
static double grad_diff(const model_t *m, const float *x, const float *y) {
    double worst = 0;
    for (int t = 0; t < m->ntensors; t++) {
        const model_tensor_t *k = &m->tensors[t];
        int64_t n = k->shape[0] * (k->ndim == 2 ? k->shape[1] : 1);
        double d2 = 0, y2 = 0;
        for (int64_t i = k->offset; i < k->offset + n; i++) {
            d2 += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
            y2 += (double)y[i] * y[i];
        }
        double r = sqrt(d2) / (sqrt(y2) + 1e-30);
        if (r > worst) worst = r;
    }
    return worst;
}

static void check_cell(cell_kind_t cell) {
    model_params_t mp = {.cell = cell, .layers = LAYERS, .hidden = H, .embed = E};
    model_dims_t d;
    model_dims(&d, &mp, V);
    model_t m;
    model_init(&m, &d, 5);
    float h0[NS], c0[NS];
    uint64_t key = rng_key(17, 0, cell, 0, 0);
    for (int i = 0; i < NS; i++) {
        h0[i] = 0.8f * (2.0f * rng_uniform(key, i) - 1.0f);
        c0[i] = 1.5f * (2.0f * rng_uniform(key, 1000 + i) - 1.0f);
    }
    const char *name = cell_kind_name(cell);
    unsetenv("CHARLM_KERN");
    pass_t f = run(&m, 0, h0, c0, key, T);
    static const float zero[NS];
    pass_t f1 = run(&m, 0, zero, zero, key, 1);
    pass_t paths[PATHS];
    double from_fp32[PATHS][2]; /* (path, loss | gradients) */
    kern_path_t ran[PATHS];
    int n = 0;
    for (int k = 0; k < PATHS; k++) {
        if (!kern_path_supported(want[k], KERN_BF16)) {
            printf("%s: skipped bf16 path %s (not on this CPU)\n", name, kern_path_name(want[k]));
            continue;
        }
        setenv("CHARLM_KERN", kern_path_name(want[k]), 1);
        pass_t b = run(&m, MODEL_ACTS_BF16, h0, c0, key, T);
        pass_t again = run(&m, MODEL_ACTS_BF16, h0, c0, key, T);
        pass_t one = run(&m, MODEL_ACTS_BF16, zero, zero, key, 1);
        double d1 = grad_diff(&m, one.grads, f1.grads);
        printf("%s bf16 %s, one step from zero: gradients %.2e from fp32\n", name,
               kern_path_name(want[k]), d1);
        EXPECT_MSG(d1 > 1e-4 && d1 <= 2e-2, "%s %s, one step from zero: gradients %.2e from "
                   "fp32: the whole products are not in bf16", name, kern_path_name(want[k]), d1);
        free(one.grads);
        double dl = fabs(b.loss - f.loss) / f.loss, dg = grad_diff(&m, b.grads, f.grads);
        printf("%s bf16 %s: loss %.6f (fp32 %.6f, relative %.2e), gradients %.2e\n", name,
               kern_path_name(want[k]), b.loss, f.loss, dl, dg);
        EXPECT_MSG(dl <= 1e-3 && dg <= 2e-2, "%s %s: loss %.2e, gradients %.2e from fp32", name,
                   kern_path_name(want[k]), dl, dg);
        EXPECT_MSG(dl > 0, "%s %s: the loss equals fp32's", name, kern_path_name(want[k]));
        EXPECT_MSG(again.loss == b.loss &&
                   !memcmp(again.grads, b.grads, sizeof(float) * (size_t)m.nparams),
                   "%s %s: a second pass differs", name, kern_path_name(want[k]));
        free(again.grads);
        from_fp32[n][0] = dl, from_fp32[n][1] = dg;
        ran[n] = want[k];
        paths[n++] = b;
    }
    unsetenv("CHARLM_KERN");
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double dl = fabs(paths[i].loss - paths[j].loss) / paths[j].loss,
                   dg = grad_diff(&m, paths[i].grads, paths[j].grads);
            double near_l = fmin(from_fp32[i][0], from_fp32[j][0]) / 10,
                   near_g = fmin(from_fp32[i][1], from_fp32[j][1]) / 10;
            const char *pi = kern_path_name(ran[i]), *pj = kern_path_name(ran[j]);
            printf("%s: bf16 %s and %s apart: loss %.2e (at most %.2e), gradients %.2e (at most "
                   "%.2e)\n", name, pi, pj, dl, near_l, dg, near_g);
            EXPECT_MSG(dl <= near_l && dg <= near_g,
                       "%s: bf16 %s and %s apart: loss %.2e, gradients %.2e, not ten times "
                       "closer than to fp32", name, pi, pj, dl, dg);
        }
    for (int k = 0; k < n; k++) free(paths[k].grads);
    free(f.grads), free(f1.grads);
    model_free(&m);
}

/* A vocabulary wider than the window's rows and the gates (as CJK text's): the embedding is not
 * folded and the decoder's products are the largest, whose rounded operands the activations'
 * scratch must hold (kern_matmul aborts when it does not). */
static void check_wide_vocab(void) {
    enum { WIDE_V = 300 };
    model_params_t mp = {.cell = CELL_LSTM, .layers = LAYERS, .hidden = H, .embed = E};
    model_dims_t d;
    model_dims(&d, &mp, WIDE_V);
    model_t m;
    model_init(&m, &d, 9);
    static const float zero[NS];
    unsetenv("CHARLM_KERN");
    pass_t f = run(&m, 0, zero, zero, 3, T);
    for (int k = 0; k < PATHS; k++) {
        if (!kern_path_supported(want[k], KERN_BF16)) continue;
        setenv("CHARLM_KERN", kern_path_name(want[k]), 1);
        pass_t b = run(&m, MODEL_ACTS_BF16, zero, zero, 3, T);
        double dl = fabs(b.loss - f.loss) / f.loss, dg = grad_diff(&m, b.grads, f.grads);
        printf("V = %d, bf16 %s: loss %.2e, gradients %.2e from fp32\n", WIDE_V,
               kern_path_name(want[k]), dl, dg);
        EXPECT_MSG(dl > 0 && dl <= 1e-3 && dg <= 2e-2, "V = %d %s: loss %.2e, gradients %.2e",
                   WIDE_V, kern_path_name(want[k]), dl, dg);
        free(b.grads);
    }
    unsetenv("CHARLM_KERN");
    free(f.grads);
    model_free(&m);
}

int main(void) {
    for (int c = 0; c < CELL_KINDS; c++) check_cell((cell_kind_t)c);
    check_wide_vocab();
    return check_failures ? 1 : 0;
}
