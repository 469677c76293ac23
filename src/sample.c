#include "charlm/sample.h"

#include <math.h>
#include <stdlib.h>

#include "charlm/err.h"
#include "charlm/rng.h"
#include "charlm/utf8.h"

/* Draws an id from logits (V) at temperature t (0 = argmax) with uniform u in [0, 1). */
static int draw(const float *logits, int V, double t, float u) {
    int best = 0;
    for (int j = 1; j < V; j++) best = logits[j] > logits[best] ? j : best;
    if (t <= 0.0) return best;
    double sum = 0.0;
    for (int j = 0; j < V; j++) sum += exp((logits[j] - logits[best]) / t);
    double r = u * sum, acc = 0.0;
    for (int j = 0; j < V; j++) {
        acc += exp((logits[j] - logits[best]) / t);
        if (r < acc) return j;
    }
    return best;
}

void sample_text(FILE *out, const model_t *m, const vocab_t *v, const int32_t *prime,
                 int n_prime, int length, double temperature, uint64_t seed) {
    CHARLM_CHECK(n_prime >= 1);
    size_t nstate = (size_t)m->d.layers * m->d.H;
    float *h = xcalloc(nstate, sizeof(float)), *c = xcalloc(nstate, sizeof(float));
    float *hc = m->ops->has_c ? c : NULL;
    model_acts_t a;
    model_acts_alloc(&a, m, 1, 1, 0);
    a.targets[0] = -1;
    for (int i = 0; i < n_prime; i++) {
        a.inputs[0] = prime[i];
        model_forward(&a, h, hc, m, 1, NULL, 1.0f, 0);
    }
    uint64_t key = rng_key(seed, RNG_SAMPLE, 0, 0, 0);
    char buf[4];
    for (int i = 0; i < length; i++) {
        int id = draw(a.logits, m->d.V, temperature, rng_uniform(key, (uint64_t)i));
        fwrite(buf, 1, (size_t)utf8_encode(buf, v->cps[id]), out);
        fflush(out);
        a.inputs[0] = id;
        model_forward(&a, h, hc, m, 1, NULL, 1.0f, 0);
    }
    model_acts_free(&a);
    free(h);
    free(c);
}
