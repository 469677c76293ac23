#include "charlm/model.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "charlm/err.h"
#include "charlm/loss.h"
#include "charlm/rng.h"

void model_dims(model_dims_t *d, const model_params_t *p, int V) {
    *d = (model_dims_t){.cell = p->cell, .V = V, .E = p->embed, .H = p->hidden,
                        .layers = p->layers, .G = cell_ops(p->cell)->gates};
}

static void add_tensor(model_tensor_t *t, int *n, int64_t *off, const char *name, int64_t r,
                       int64_t c) {
    if (t) {
        model_tensor_t *x = &t[*n];
        snprintf(x->name, sizeof x->name, "%s", name);
        x->offset = *off;
        x->ndim = c ? 2 : 1;
        x->shape[0] = r;
        x->shape[1] = c;
    }
    (*n)++;
    *off += r * (c ? c : 1);
}

int64_t model_layout(const model_dims_t *d, model_tensor_t *t, int *ntensors) {
    CHARLM_CHECK(d->layers >= 1 && d->layers <= MODEL_MAX_LAYERS);
    int n = 0;
    int64_t off = 0, GH = (int64_t)d->G * d->H;
    char name[48];
    add_tensor(t, &n, &off, "embedding.weight", d->V, d->E);
    for (int l = 0; l < d->layers; l++) {
        snprintf(name, sizeof name, "rnn.weight_ih_l%d", l);
        add_tensor(t, &n, &off, name, GH, l ? d->H : d->E);
        snprintf(name, sizeof name, "rnn.weight_hh_l%d", l);
        add_tensor(t, &n, &off, name, GH, d->H);
        snprintf(name, sizeof name, "rnn.bias_ih_l%d", l);
        add_tensor(t, &n, &off, name, GH, 0);
        snprintf(name, sizeof name, "rnn.bias_hh_l%d", l);
        add_tensor(t, &n, &off, name, GH, 0);
    }
    add_tensor(t, &n, &off, "decoder.weight", d->V, d->H);
    add_tensor(t, &n, &off, "decoder.bias", d->V, 0);
    if (ntensors) *ntensors = n;
    return off;
}

double model_flops_per_char(const model_t *m) {
    double w = 0;
    for (int i = 1; i < m->ntensors; i++)
        if (m->tensors[i].ndim == 2) w += (double)m->tensors[i].shape[0] * m->tensors[i].shape[1];
    return 6.0 * w;
}

double model_flops_executed_per_char(const model_t *m, const model_acts_t *a) {
    double flops = model_flops_per_char(m);
    if (!a->proj) return flops;
    const model_dims_t *d = &m->d;
    double w_ih0 = (double)d->G * d->H * d->E;
    return flops - 6.0 * w_ih0 + 6.0 * w_ih0 * d->V / ((double)a->B * a->T);
}

void model_views(model_views_t *v, const model_t *m, float *buf) {
    const model_tensor_t *t = m->tensors;
    memset(v, 0, sizeof *v);
    v->emb = buf + t[0].offset;
    for (int l = 0; l < m->d.layers; l++) {
        v->w_ih[l] = buf + t[1 + 4 * l].offset;
        v->w_hh[l] = buf + t[2 + 4 * l].offset;
        v->b_ih[l] = buf + t[3 + 4 * l].offset;
        v->b_hh[l] = buf + t[4 + 4 * l].offset;
    }
    v->dec_w = buf + t[m->ntensors - 2].offset;
    v->dec_b = buf + t[m->ntensors - 1].offset;
}

void model_init(model_t *m, const model_dims_t *d, uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->d = *d;
    m->ops = cell_ops(d->cell);
    m->nparams = model_layout(d, m->tensors, &m->ntensors);
    m->params = xcalloc((size_t)m->nparams, sizeof(float));
    model_views(&m->p, m, m->params);
    float k = 1.0f / sqrtf((float)d->H);
    for (int i = 0; i < m->ntensors; i++) {
        const model_tensor_t *t = &m->tensors[i];
        float *w = m->params + t->offset;
        int64_t n = t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1);
        uint64_t key = rng_key(seed, RNG_INIT, (uint64_t)i, 0, 0);
        for (int64_t j = 0; j < n; j++)
            w[j] = i == 0 ? (float)rng_normal(key, (uint64_t)j)
                          : (2.0f * rng_uniform(key, (uint64_t)j) - 1.0f) * k;
    }
    if (d->cell == CELL_LSTM)
        for (int l = 0; l < d->layers; l++)
            for (int j = 0; j < d->H; j++) m->p.b_ih[l][d->H + j] = 1.0f;
}

void model_free(model_t *m) {
    free(m->params);
    memset(m, 0, sizeof *m);
}

static void *acts_calloc(model_acts_t *a, size_t n, size_t size) {
    a->bytes += n * size;
    return xcalloc(n, size);
}

void model_acts_alloc(model_acts_t *a, const model_t *m, int B, int T, int flags) {
    const model_dims_t *d = &m->d;
    size_t TB = (size_t)T * B, H = (size_t)d->H, GH = (size_t)d->G * H, V = (size_t)d->V;
    size_t wide = (size_t)(d->E > d->H ? d->E : d->H);
    memset(a, 0, sizeof *a);
    a->B = B;
    a->T = T;
    a->inputs = acts_calloc(a, TB, sizeof(int32_t));
    a->targets = acts_calloc(a, TB, sizeof(int32_t));
    if (!(flags & MODEL_ACTS_UNFOLDED) && 2 * V <= TB)
        a->proj = acts_calloc(a, V * GH, sizeof(float));
    else
        a->x = acts_calloc(a, TB * (size_t)d->E, sizeof(float));
    for (int l = 0; l < d->layers; l++) {
        a->gates[l] = acts_calloc(a, TB * GH, sizeof(float));
        a->h[l] = acts_calloc(a, TB * H + (size_t)B * H, sizeof(float));
        if (m->ops->has_c) a->c[l] = acts_calloc(a, TB * H + (size_t)B * H, sizeof(float));
        if (m->ops->has_aux) a->aux[l] = acts_calloc(a, TB * H, sizeof(float));
        if (flags & MODEL_ACTS_DROPOUT) {
            a->mask[l] = acts_calloc(a, TB * H, sizeof(float));
            a->dropped[l] = acts_calloc(a, TB * H, sizeof(float));
        }
    }
    a->logits = acts_calloc(a, TB * V, sizeof(float));
    a->gh = acts_calloc(a, (size_t)B * GH, sizeof(float));
    a->dgates = acts_calloc(a, TB * GH, sizeof(float));
    a->dgh = m->ops->has_aux ? acts_calloc(a, TB * GH, sizeof(float)) : a->dgates;
    a->dout_a = acts_calloc(a, TB * wide, sizeof(float));
    a->dout_b = acts_calloc(a, TB * wide, sizeof(float));
    a->dh = acts_calloc(a, (size_t)B * H, sizeof(float));
    a->dh_prev = acts_calloc(a, (size_t)B * H, sizeof(float));
    a->dc = acts_calloc(a, (size_t)B * H, sizeof(float));
}

void model_acts_free(model_acts_t *a) {
    free(a->inputs), free(a->targets), free(a->x), free(a->proj);
    for (int l = 0; l < MODEL_MAX_LAYERS; l++) {
        free(a->gates[l]), free(a->h[l]), free(a->c[l]), free(a->aux[l]);
        free(a->mask[l]), free(a->dropped[l]);
    }
    if (a->dgh != a->dgates) free(a->dgh);
    free(a->logits), free(a->gh), free(a->dgates), free(a->dout_a), free(a->dout_b);
    free(a->dh), free(a->dh_prev), free(a->dc);
    memset(a, 0, sizeof *a);
}

/* The output of layer l as the next layer (or the decoder) sees it: (T, B, H), after h[0]. */
static const float *layer_out(const model_acts_t *a, int l, int H) {
    return a->dropout_on ? a->dropped[l] : a->h[l] + (size_t)a->B * H;
}

/* out (rows, cols) = each row set to bias (cols) */
static void fill_rows(float *out, const float *bias, int64_t rows, int cols) {
    for (int64_t i = 0; i < rows; i++) memcpy(out + i * cols, bias, sizeof(float) * (size_t)cols);
}

/* out (cols) += column sums of in (rows, cols) */
static void add_colsum(float *out, const float *in, int64_t rows, int cols) {
    for (int64_t i = 0; i < rows; i++) {
        const float *r = in + i * cols;
        for (int j = 0; j < cols; j++) out[j] += r[j];
    }
}

static void make_dropout(float *mask /* (T, B, H) */, float *dropped /* (T, B, H) */,
                         const float *h /* (T, B, H) */, const model_dropout_t *drop, int layer,
                         int T, int B, int H) {
    float keep = 1.0f - drop->p, inv = 1.0f / keep;
    for (int b = 0; b < B; b++) {
        uint64_t key = rng_key(drop->seed, RNG_DROPOUT, (uint64_t)drop->step, (uint64_t)layer,
                               (uint64_t)(drop->first_stream + b));
        for (int t = 0; t < T; t++) {
            size_t row = ((size_t)t * B + b) * H;
            for (int j = 0; j < H; j++) {
                float s = rng_uniform(key, (uint64_t)t * H + j) < drop->p ? 0.0f : inv;
                mask[row + j] = s;
                dropped[row + j] = h[row + j] * s;
            }
        }
    }
}

double model_forward(model_acts_t *a, float *state_h, float *state_c, const model_t *m, int T,
                     const model_dropout_t *drop, float scale, int grad) {
    const model_dims_t *d = &m->d;
    const int B = a->B, H = d->H, GH = d->G * d->H, E = d->E, V = d->V;
    const int64_t TB = (int64_t)T * B;
    const size_t BH = (size_t)B * H;
    CHARLM_CHECK(T >= 1 && T <= a->T);
    a->dropout_on = drop && drop->p > 0.0f;
    CHARLM_CHECK(!a->dropout_on || a->mask[0]);

    if (a->proj) {
        fill_rows(a->proj, m->p.b_ih[0], V, GH);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, V, GH, E, 1.0f, m->p.emb, E,
                    m->p.w_ih[0], E, 1.0f, a->proj, GH);
        for (int64_t i = 0; i < TB; i++)
            memcpy(a->gates[0] + i * GH, a->proj + (int64_t)a->inputs[i] * GH,
                   sizeof(float) * (size_t)GH);
    } else {
        for (int64_t i = 0; i < TB; i++)
            memcpy(a->x + i * E, m->p.emb + (int64_t)a->inputs[i] * E, sizeof(float) * (size_t)E);
    }

    const float *X = a->x; /* (T, B, In) */
    int In = E;
    for (int l = 0; l < d->layers; l++) {
        float *gates = a->gates[l], *h = a->h[l], *c = a->c[l], *aux = a->aux[l];
        if (l > 0 || !a->proj) {
            fill_rows(gates, m->p.b_ih[l], TB, GH);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)TB, GH, In, 1.0f, X, In,
                        m->p.w_ih[l], In, 1.0f, gates, GH);
        }
        memcpy(h, state_h + l * BH, sizeof(float) * BH);
        if (c) memcpy(c, state_c + l * BH, sizeof(float) * BH);
        for (int t = 0; t < T; t++) {
            const float *hp = h + t * BH;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, GH, H, 1.0f, hp, H,
                        m->p.w_hh[l], H, 0.0f, a->gh, GH);
            m->ops->forward(gates + t * B * (size_t)GH, aux ? aux + t * BH : NULL,
                            h + (t + 1) * BH, c ? c + (t + 1) * BH : NULL, a->gh, m->p.b_hh[l],
                            hp, c ? c + t * BH : NULL, B, H);
        }
        memcpy(state_h + l * BH, h + T * BH, sizeof(float) * BH);
        if (c) memcpy(state_c + l * BH, c + T * BH, sizeof(float) * BH);
        if (a->dropout_on) make_dropout(a->mask[l], a->dropped[l], h + BH, drop, l, T, B, H);
        X = layer_out(a, l, H);
        In = H;
    }

    fill_rows(a->logits, m->p.dec_b, TB, V);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)TB, V, H, 1.0f, X, H, m->p.dec_w,
                H, 1.0f, a->logits, V);
    return loss_softmax_xent(a->logits, a->targets, TB, V, scale, grad);
}

void model_backward(float *grads, model_acts_t *a, const model_t *m, int T,
                    const model_hooks_t *hooks) {
    const model_dims_t *d = &m->d;
    const int B = a->B, H = d->H, GH = d->G * d->H, E = d->E, V = d->V;
    const int64_t TB = (int64_t)T * B;
    const size_t BH = (size_t)B * H, BGH = (size_t)B * GH;
    model_views_t g;
    model_views(&g, m, grads);
    /* the weight matrices' gradients are each one GEMM's output (beta 0); the embedding and the
     * biases are sums over rows: only they need zeroing, not the whole buffer */
    memset(g.emb, 0, sizeof(float) * (size_t)V * E);
    memset(g.dec_b, 0, sizeof(float) * (size_t)V);
    for (int l = 0; l < d->layers; l++) {
        memset(g.b_ih[l], 0, sizeof(float) * (size_t)GH);
        memset(g.b_hh[l], 0, sizeof(float) * (size_t)GH);
    }

    const float *top = layer_out(a, d->layers - 1, H);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, H, (int)TB, 1.0f, a->logits, V, top,
                H, 0.0f, g.dec_w, H);
    add_colsum(g.dec_b, a->logits, TB, V);
    if (hooks) hooks->ready(m->tensors[m->ntensors - 2].offset, hooks->ctx);
    float *dout = a->dout_a, *dx = a->dout_b; /* (T, B, H), (T, B, In) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)TB, H, V, 1.0f, a->logits, V,
                m->p.dec_w, H, 0.0f, dout, H);

    for (int l = d->layers - 1; l >= 0; l--) {
        const int In = l ? H : E;
        const float *X = l ? layer_out(a, l - 1, H) : a->x;
        const float *h = a->h[l], *c = a->c[l], *aux = a->aux[l], *gates = a->gates[l];
        if (a->dropout_on)
            for (int64_t i = 0; i < TB * H; i++) dout[i] *= a->mask[l][i];
        memset(a->dh_prev, 0, sizeof(float) * BH);
        memset(a->dc, 0, sizeof(float) * BH);
        for (int t = T - 1; t >= 0; t--) {
            const float *dot = dout + t * BH;
            for (size_t i = 0; i < BH; i++) a->dh[i] = dot[i] + a->dh_prev[i];
            float *dgt = a->dgates + t * BGH, *dght = a->dgh + t * BGH;
            m->ops->backward(dgt, dght, a->dh_prev, a->dc, a->dh, gates + t * BGH,
                             aux ? aux + t * BH : NULL, h + t * BH, c ? c + t * BH : NULL,
                             c ? c + (t + 1) * BH : NULL, B, H);
            if (t > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, H, GH, 1.0f, dght, GH,
                            m->p.w_hh[l], H, 1.0f, a->dh_prev, H);
            if (hooks) hooks->poll(hooks->ctx);
        }
        if (l == 0 && a->proj) {
            /* folded: the gradient of the (V, G*H) table is dgates summed by input id; W_ih0's,
             * b_ih0's and the embedding's follow from it */
            memset(a->proj, 0, sizeof(float) * (size_t)V * GH);
            for (int64_t i = 0; i < TB; i++) {
                float *row = a->proj + (int64_t)a->inputs[i] * GH;
                const float *src = a->dgates + i * GH;
                for (int j = 0; j < GH; j++) row[j] += src[j];
            }
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, GH, E, V, 1.0f, a->proj, GH,
                        m->p.emb, E, 0.0f, g.w_ih[0], E);
            add_colsum(g.b_ih[0], a->proj, V, GH);
        } else {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, GH, In, (int)TB, 1.0f,
                        a->dgates, GH, X, In, 0.0f, g.w_ih[l], In);
            add_colsum(g.b_ih[l], a->dgates, TB, GH);
        }
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, GH, H, (int)TB, 1.0f, a->dgh, GH, h,
                    H, 0.0f, g.w_hh[l], H);
        add_colsum(g.b_hh[l], a->dgh, TB, GH);
        if (hooks) hooks->ready(m->tensors[1 + 4 * l].offset, hooks->ctx);
        if (l == 0 && a->proj) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, V, E, GH, 1.0f, a->proj, GH,
                        m->p.w_ih[0], E, 0.0f, g.emb, E);
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)TB, In, GH, 1.0f,
                        a->dgates, GH, m->p.w_ih[l], In, 0.0f, dx, In);
            float *tmp = dout;
            dout = dx;
            dx = tmp;
        }
    }
    if (!a->proj) {
        /* dout now holds d loss / d x (T, B, E): scatter into the embedding rows */
        for (int64_t i = 0; i < TB; i++) {
            float *row = g.emb + (int64_t)a->inputs[i] * E;
            const float *src = dout + i * E;
            for (int j = 0; j < E; j++) row[j] += src[j];
        }
    }
    if (hooks) hooks->ready(0, hooks->ctx);
}
