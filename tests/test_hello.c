/* The seed example of char-rnn: on "hello" (vocabulary e, h, l, o) every cell learns to predict
 * e, l, l, o from h, e, l, l — the second 'l' must be told from the first by the hidden state. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "charlm/loss.h"
#include "charlm/model.h"
#include "charlm/optim.h"
#include "charlm/vocab.h"
#include "check.h"

static void learn_hello(cell_kind_t cell) {
    uint64_t bitmap[VOCAB_BITMAP_WORDS] = {0};
    const char *text = "hello";
    for (const char *p = text; *p; p++) vocab_bitmap_set(bitmap, (uint32_t)*p);
    vocab_t v;
    vocab_from_bitmap(&v, bitmap);
    EXPECT(v.size == 4);

    const double lr = 0.02;
    model_params_t mp = {.cell = cell, .layers = 1, .hidden = 16, .embed = 8};
    model_dims_t d;
    model_dims(&d, &mp, v.size);
    model_t m;
    model_init(&m, &d, 3);
    optim_params_t op = {.kind = OPTIM_ADAM, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    optim_t o;
    optim_init(&o, &op, m.nparams);
    model_acts_t a;
    model_acts_alloc(&a, &m, 1, 4, 0);
    float *grads = calloc((size_t)m.nparams, sizeof(float));
    float h[16], c[16];
    for (int t = 0; t < 4; t++) {
        a.inputs[t] = vocab_id(&v, (uint32_t)text[t]);
        a.targets[t] = vocab_id(&v, (uint32_t)text[t + 1]);
    }
    double loss = 0;
    for (int it = 0; it < 300; it++) {
        memset(h, 0, sizeof h), memset(c, 0, sizeof c);
        loss = model_forward(&a, h, c, &m, 4, NULL, 0.25f, 1) / 4;
        model_backward(grads, &a, &m, 4, NULL);
        optim_step(m.params, &o, grads, lr);
    }
    memset(h, 0, sizeof h), memset(c, 0, sizeof c);
    model_forward(&a, h, c, &m, 4, NULL, 1.0f, 0);
    char got[5] = {0};
    for (int t = 0; t < 4; t++) {
        const float *row = a.logits + t * v.size;
        int best = 0;
        for (int j = 1; j < v.size; j++) best = row[j] > row[best] ? j : best;
        got[t] = (char)v.cps[best];
    }
    printf("%s: predicts \"%s\" after \"hell\", loss %.4f\n", cell_kind_name(cell), got, loss);
    EXPECT_MSG(!strcmp(got, "ello"), "%s predicted \"%s\"", cell_kind_name(cell), got);
    EXPECT_MSG(loss < 0.05, "%s: loss %.4f", cell_kind_name(cell), loss);
    free(grads);
    model_acts_free(&a);
    optim_free(&o);
    model_free(&m);
    vocab_free(&v);
}

int main(void) {
    for (int c = CELL_RNN; c <= CELL_GRU; c++) learn_hello((cell_kind_t)c);
    return check_report("test_hello");
}
