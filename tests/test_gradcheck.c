/* Finite-difference check of model_backward for every cell: 2 layers, through the embedding and
 * the decoder, over a window of several steps with a non-zero carried-in state, with and without
 * dropout (masks are a pure function of their key, so the loss stays a deterministic function of
 * the parameters) of every kind — standard and locked on the layers' outputs, locked on the
 * embedding output, whole embedding rows, DropConnect on W_hh — with the decoder tied to the
 * embedding, with layer normalisation, and with all of them at once; with some positions
 * unscored (target -1), and both with the embedding folded into layer 0 (V = 7 <= B*T/2) and
 * unfolded; and that backward's hooks announce each part of the gradient once it is final, in
 * layout order from the end. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "charlm/err.h"
#include "charlm/model.h"
#include "charlm/rng.h"
#include "check.h"

enum { V = 7, E5 = 5, H = 6, LAYERS = 2, B = 3, T = 5 };

/* One case: the dropouts (seed, step, first stream are the test's), tying, layer norm. */
typedef struct {
    model_dropout_t drop;
    int unfolded, tie, ln;
} case_t;

static double loss_at(model_acts_t *a, const model_t *m, const float *h0, const float *c0,
                      const model_dropout_t *drop, float *sh, float *sc) {
    memcpy(sh, h0, sizeof(float) * LAYERS * B * H);
    memcpy(sc, c0, sizeof(float) * LAYERS * B * H);
    return model_forward(a, sh, m->ops->has_c ? sc : NULL, m, T, drop, 1.0f, 0);
}

/* (loss(p_i + eps) - loss(p_i - eps)) / 2 eps */
static double central(model_acts_t *a, model_t *m, const float *h0, const float *c0,
                      const model_dropout_t *drop, float *sh, float *sc, int64_t i, float eps) {
    float keep = m->params[i];
    m->params[i] = keep + eps;
    double lp = loss_at(a, m, h0, c0, drop, sh, sc);
    m->params[i] = keep - eps;
    double lm = loss_at(a, m, h0, c0, drop, sh, sc);
    m->params[i] = keep;
    return (lp - lm) / (2.0 * (double)eps);
}

/* Records each ready(from) with a copy of the gradient buffer at that moment. */
typedef struct {
    const float *grads;
    int64_t n;
    int calls, polls;
    int64_t from[MODEL_MAX_TENSORS];
    float *seen[MODEL_MAX_TENSORS];
} hook_log_t;

static void log_ready(int64_t from, void *ctx) {
    hook_log_t *h = ctx;
    CHARLM_CHECK(h->calls < MODEL_MAX_TENSORS);
    h->from[h->calls] = from;
    h->seen[h->calls] = malloc(sizeof(float) * (size_t)h->n);
    memcpy(h->seen[h->calls], h->grads, sizeof(float) * (size_t)h->n);
    h->calls++;
}

static void log_poll(void *ctx) { ((hook_log_t *)ctx)->polls++; }

/* The announcements come for the decoder, each layer from the top, the embedding, in that
 * order, and what each says is final does not change afterwards; poll comes every step. */
static void check_hooks(hook_log_t *h, const model_t *m, const float *grads, const char *name) {
    const model_dims_t *d = &m->d;
    int64_t want[MODEL_MAX_TENSORS];
    int n = 0;
    want[n++] = m->tensors[model_tensor_index(d, d->tie ? MODEL_T_DEC_B : MODEL_T_DEC_W, 0)].offset;
    for (int l = d->layers - 1; l >= 0; l--)
        want[n++] = m->tensors[model_tensor_index(d, MODEL_T_W_IH, l)].offset;
    want[n++] = m->tensors[model_tensor_index(d, MODEL_T_EMB, 0)].offset;
    EXPECT_MSG(h->calls == n, "%s: %d ready calls, want %d", name, h->calls, n);
    for (int k = 0; k < h->calls && k < n; k++) {
        EXPECT_MSG(h->from[k] == want[k], "%s: ready call %d from %lld, want %lld", name, k,
                   (long long)h->from[k], (long long)want[k]);
        int64_t from = h->from[k];
        EXPECT_MSG(!memcmp(h->seen[k] + from, grads + from, sizeof(float) * (size_t)(h->n - from)),
                   "%s: gradients after offset %lld changed after ready", name, (long long)from);
    }
    EXPECT_MSG(h->polls == d->layers * T, "%s: %d polls", name, h->polls);
    for (int k = 0; k < h->calls; k++) free(h->seen[k]);
}

static void check_cell(cell_kind_t cell, case_t k) {
    model_params_t mp = {.cell = cell, .layers = LAYERS, .hidden = H, .embed = k.tie ? H : E5,
                         .tie = k.tie, .layer_norm = k.ln};
    model_dims_t d;
    model_dims(&d, &mp, V);
    model_t m;
    model_init(&m, &d, 42);
    model_dropout_t drop = k.drop;
    drop.seed = 7, drop.step = 3, drop.first_stream = 11;
    model_acts_t a;
    model_acts_alloc(&a, &m, B, T,
                     model_dropout_flags(&drop) | (k.unfolded ? MODEL_ACTS_UNFOLDED : 0));
    const int unfolded = k.unfolded || drop.p_input > 0;
    EXPECT(unfolded == (a.proj == NULL));
    char name[160];
    snprintf(name, sizeof name, "%s dropout %.1f%s input %.1f embed %.1f weight %.1f%s%s %s",
             cell_kind_name(cell), drop.p, drop.locked ? " locked" : "", drop.p_input,
             drop.p_embed, drop.p_weight, k.tie ? " tied" : "", k.ln ? " layer-norm" : "",
             unfolded ? "unfolded" : "folded");

    float h0[LAYERS * B * H], c0[LAYERS * B * H], sh[LAYERS * B * H], sc[LAYERS * B * H];
    uint64_t key = rng_key(99, 0, cell, 0, 0);
    for (int i = 0; i < LAYERS * B * H; i++) {
        h0[i] = 0.8f * (2.0f * rng_uniform(key, i) - 1.0f);
        c0[i] = 1.5f * (2.0f * rng_uniform(key, 1000 + i) - 1.0f);
    }
    for (int i = 0; i < T * B; i++) {
        a.inputs[i] = (int32_t)(rng_mix(key + 7 * i) % V);
        a.targets[i] = i % 7 == 4 ? -1 : (int32_t)(rng_mix(key + 13 * i) % V);
    }

    /* model_backward overwrites every element: garbage in grads must not survive */
    float *grads = malloc(sizeof(float) * (size_t)m.nparams);
    for (int64_t i = 0; i < m.nparams; i++) grads[i] = 1e3f;
    memcpy(sh, h0, sizeof sh);
    memcpy(sc, c0, sizeof sc);
    double base = model_forward(&a, sh, m.ops->has_c ? sc : NULL, &m, T, &drop, 1.0f, 1);
    hook_log_t log = {.grads = grads, .n = m.nparams};
    model_hooks_t hooks = {log_ready, log_poll, &log};
    model_backward(grads, &a, &m, T, &hooks);
    EXPECT(isfinite(base) && base > 0);
    check_hooks(&log, &m, grads, name);

    double diff2 = 0, sum2 = 0, worst = 0;
    int64_t worst_i = -1;
    for (int64_t i = 0; i < m.nparams; i++) {
        /* layer normalisation over 6 units curves the loss so much that the central
         * difference's eps^2 term reaches 1e-2: its cases cancel it (Richardson) */
        double num = central(&a, &m, h0, c0, &drop, sh, sc, i, 1e-2f);
        if (k.ln) num = (4.0 * central(&a, &m, h0, c0, &drop, sh, sc, i, 5e-3f) - num) / 3.0;
        double ana = grads[i];
        diff2 += (num - ana) * (num - ana);
        sum2 += (num + ana) * (num + ana);
        double err = fabs(num - ana) / (fabs(num) + fabs(ana) + 1e-2);
        if (err > worst) worst = err, worst_i = i;
    }
    double rel = sqrt(diff2) / sqrt(sum2);
    printf("%s: %lld parameters, relative error %.2e, worst element %.2e (#%lld)\n", name,
           (long long)m.nparams, rel, worst, (long long)worst_i);
    EXPECT_MSG(rel < 1e-3, "%s: relative gradient error %.3e", name, rel);
    EXPECT_MSG(worst < 1e-2, "%s: parameter %lld off by %.3e", name, (long long)worst_i, worst);
    /* every tensor receives gradient: catches a layer or bias left out of backward */
    for (int t = 0; t < m.ntensors; t++) {
        const model_tensor_t *x = &m.tensors[t];
        int64_t n = x->shape[0] * (x->ndim == 2 ? x->shape[1] : 1);
        double s = 0;
        for (int64_t i = 0; i < n; i++) s += fabs(grads[x->offset + i]);
        EXPECT_MSG(s > 0, "%s: no gradient reaches %s", name, x->name);
    }
    free(grads);
    model_acts_free(&a);
    model_free(&m);
}

int main(void) {
    const model_dropout_t none = {0}, standard = {.p = 0.3f}, locked = {.p = 0.3f, .locked = 1},
                          input = {.p_input = 0.3f}, rows = {.p_embed = 0.3f},
                          weight = {.p_weight = 0.3f},
                          all = {.p = 0.3f, .locked = 1, .p_input = 0.2f, .p_embed = 0.3f,
                                 .p_weight = 0.3f};
    for (int c = CELL_RNN; c <= CELL_GRU; c++) {
        for (int unfolded = 0; unfolded <= 1; unfolded++) {
            const case_t cases[] = {
                {none, unfolded, 0, 0},   {standard, unfolded, 0, 0}, {locked, unfolded, 0, 0},
                {rows, unfolded, 0, 0},   {weight, unfolded, 0, 0},   {none, unfolded, 1, 0},
                {none, unfolded, 0, 1},   {standard, unfolded, 1, 1},
            };
            for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
                check_cell((cell_kind_t)c, cases[i]);
        }
        check_cell((cell_kind_t)c, (case_t){input, 0, 0, 0});
        check_cell((cell_kind_t)c, (case_t){all, 0, 1, 1});
    }
    return check_report("test_gradcheck");
}
