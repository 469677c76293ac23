#include "charlm/model.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "charlm/err.h"
#include "charlm/fileio.h"
#include "charlm/loss.h"
#include "charlm/rng.h"

void model_dims(model_dims_t *d, const model_params_t *p, int V) {
    *d = (model_dims_t){.cell = p->cell, .V = V, .E = p->embed, .H = p->hidden,
                        .layers = p->layers, .G = cell_ops(p->cell)->gates, .tie = p->tie,
                        .ln = p->layer_norm};
}

/* The state_dict name of each kind, a format of the layer index. */
static const char *const tensor_names[] = {
    [MODEL_T_EMB] = "embedding.weight",      [MODEL_T_W_IH] = "rnn.weight_ih_l%d",
    [MODEL_T_W_HH] = "rnn.weight_hh_l%d",    [MODEL_T_B_IH] = "rnn.bias_ih_l%d",
    [MODEL_T_B_HH] = "rnn.bias_hh_l%d",      [MODEL_T_LN_IH] = "rnn.ln_weight_ih_l%d",
    [MODEL_T_LN_HH] = "rnn.ln_weight_hh_l%d", [MODEL_T_LN_C_W] = "rnn.ln_weight_c_l%d",
    [MODEL_T_LN_C_B] = "rnn.ln_bias_c_l%d",  [MODEL_T_DEC_W] = "decoder.weight",
    [MODEL_T_DEC_B] = "decoder.bias",
};

/* The tensors of one layer: the four weights and biases, the two gains of layer normalisation,
 * and for a cell with a state the state's gain and bias. */
static int per_layer(const model_dims_t *d) {
    return MODEL_T_B_HH - MODEL_T_W_IH + 1 +
           (d->ln ? 2 + 2 * cell_ops(d->cell)->has_c : 0);
}

/* Whether d has tensors of kind k. */
static int has_kind(const model_dims_t *d, model_tensor_kind_t k) {
    if (k == MODEL_T_LN_IH || k == MODEL_T_LN_HH) return d->ln;
    if (k == MODEL_T_LN_C_W || k == MODEL_T_LN_C_B) return d->ln && cell_ops(d->cell)->has_c;
    return k != MODEL_T_DEC_W || !d->tie;
}

int model_tensor_index(const model_dims_t *d, model_tensor_kind_t k, int l) {
    /* without layer normalisation and tying the kinds' values up to B_HH are the indices of a
     * one-layer model; each further layer puts its tensors before the decoder's */
    if (k == MODEL_T_EMB || (k == MODEL_T_DEC_W && d->tie)) return MODEL_T_EMB;
    const int decoder = MODEL_T_W_IH + per_layer(d) * d->layers;
    if (k == MODEL_T_DEC_W) return decoder;
    if (k == MODEL_T_DEC_B) return decoder + !d->tie;
    CHARLM_CHECK(l >= 0 && l < d->layers && has_kind(d, k));
    return k + per_layer(d) * l;
}

/* In_l: the width of layer l's input. */
static int layer_in(const model_dims_t *d, int l) { return l ? d->H : d->E; }

static int64_t tensor_numel(const model_tensor_t *t) {
    return t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1);
}

/* Names and shapes entry (k, l) of the table t; model_layout assigns the offsets. */
static void name_tensor(model_tensor_t *t, const model_dims_t *d, model_tensor_kind_t k, int l,
                        int64_t rows, int64_t cols) {
    if (!has_kind(d, k)) return;
    model_tensor_t *x = &t[model_tensor_index(d, k, l)];
    snprintf(x->name, sizeof x->name, tensor_names[k], l);
    x->ndim = cols ? 2 : 1;
    x->shape[0] = rows;
    x->shape[1] = cols;
}

int64_t model_layout(const model_dims_t *d, model_tensor_t *t, int *ntensors) {
    CHARLM_CHECK(d->layers >= 1 && d->layers <= MODEL_MAX_LAYERS);
    CHARLM_CHECK(!d->tie || d->E == d->H);
    model_tensor_t scratch[MODEL_MAX_TENSORS];
    if (!t) t = scratch;
    const int64_t GH = (int64_t)d->G * d->H;
    name_tensor(t, d, MODEL_T_EMB, 0, d->V, d->E);
    for (int l = 0; l < d->layers; l++) {
        name_tensor(t, d, MODEL_T_W_IH, l, GH, layer_in(d, l));
        name_tensor(t, d, MODEL_T_W_HH, l, GH, d->H);
        name_tensor(t, d, MODEL_T_B_IH, l, GH, 0);
        name_tensor(t, d, MODEL_T_B_HH, l, GH, 0);
        name_tensor(t, d, MODEL_T_LN_IH, l, GH, 0);
        name_tensor(t, d, MODEL_T_LN_HH, l, GH, 0);
        name_tensor(t, d, MODEL_T_LN_C_W, l, d->H, 0);
        name_tensor(t, d, MODEL_T_LN_C_B, l, d->H, 0);
    }
    name_tensor(t, d, MODEL_T_DEC_W, 0, d->V, d->H);
    name_tensor(t, d, MODEL_T_DEC_B, 0, d->V, 0);
    const int n = model_tensor_index(d, MODEL_T_DEC_B, 0) + 1;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        t[i].offset = off;
        off += tensor_numel(&t[i]);
    }
    if (ntensors) *ntensors = n;
    return off;
}

static const model_tensor_t *tensor(const model_t *m, model_tensor_kind_t k, int l) {
    return &m->tensors[model_tensor_index(&m->d, k, l)];
}

double model_flops_per_char(const model_t *m) {
    double w = 0;
    for (int l = 0; l < m->d.layers; l++)
        w += (double)tensor_numel(tensor(m, MODEL_T_W_IH, l)) +
             (double)tensor_numel(tensor(m, MODEL_T_W_HH, l));
    w += (double)tensor_numel(tensor(m, MODEL_T_DEC_W, 0));
    return 6.0 * w;
}

void model_views(model_views_t *v, const model_t *m, float *buf) {
    memset(v, 0, sizeof *v);
    v->emb = buf + tensor(m, MODEL_T_EMB, 0)->offset;
    for (int l = 0; l < m->d.layers; l++) {
        v->w_ih[l] = buf + tensor(m, MODEL_T_W_IH, l)->offset;
        v->w_hh[l] = buf + tensor(m, MODEL_T_W_HH, l)->offset;
        v->b_ih[l] = buf + tensor(m, MODEL_T_B_IH, l)->offset;
        v->b_hh[l] = buf + tensor(m, MODEL_T_B_HH, l)->offset;
        if (!m->d.ln) continue;
        v->ln_ih[l] = buf + tensor(m, MODEL_T_LN_IH, l)->offset;
        v->ln_hh[l] = buf + tensor(m, MODEL_T_LN_HH, l)->offset;
        if (!m->ops->has_c) continue;
        v->ln_c_w[l] = buf + tensor(m, MODEL_T_LN_C_W, l)->offset;
        v->ln_c_b[l] = buf + tensor(m, MODEL_T_LN_C_B, l)->offset;
    }
    v->dec_w = buf + tensor(m, MODEL_T_DEC_W, 0)->offset;
    v->dec_b = buf + tensor(m, MODEL_T_DEC_B, 0)->offset;
}

void model_init(model_t *m, const model_dims_t *d, uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->d = *d;
    m->ops = cell_ops(d->cell);
    m->nparams = model_layout(d, m->tensors, &m->ntensors);
    m->params = xcalloc((size_t)m->nparams, sizeof(float));
    model_views(&m->p, m, m->params);
    float k = 1.0f / sqrtf((float)d->H);
    /* tied, the embedding is the decoder's weight and starts as one */
    const int normal = d->tie ? -1 : model_tensor_index(d, MODEL_T_EMB, 0);
    for (int i = 0; i < m->ntensors; i++) {
        const model_tensor_t *t = &m->tensors[i];
        float *w = m->params + t->offset;
        int64_t n = tensor_numel(t);
        uint64_t key = rng_key(seed, RNG_INIT, (uint64_t)i, 0, 0);
        for (int64_t j = 0; j < n; j++)
            w[j] = i == normal ? (float)rng_normal(key, (uint64_t)j)
                               : (2.0f * rng_uniform(key, (uint64_t)j) - 1.0f) * k;
    }
    const int GH = d->G * d->H;
    for (int l = 0; l < d->layers; l++) {
        if (d->cell == CELL_LSTM)
            for (int j = 0; j < d->H; j++) m->p.b_ih[l][d->H + j] = 1.0f;
        for (int j = 0; d->ln && j < GH; j++) m->p.ln_ih[l][j] = m->p.ln_hh[l][j] = 1.0f;
        for (int j = 0; m->p.ln_c_w[l] && j < d->H; j++)
            m->p.ln_c_w[l][j] = 1.0f, m->p.ln_c_b[l][j] = 0.0f;
    }
}

void model_free(model_t *m) {
    free(m->params);
    memset(m, 0, sizeof *m);
}

double model_nparams(const model_dims_t *d) {
    const double GH = (double)d->G * d->H;
    const double ln = d->ln ? 2 * GH + 2.0 * d->H * cell_ops(d->cell)->has_c : 0;
    double n = (double)d->V * d->E + (d->tie ? 0 : (double)d->V * d->H) + d->V;
    for (int l = 0; l < d->layers; l++) n += GH * ((double)layer_in(d, l) + d->H + 2) + ln;
    return n;
}

/* The buffers of a window are laid out once, by acts_plan: without alloc it only adds up their
 * bytes (counts in double, so that a configuration too large for size_t is measured instead of
 * wrapped around), with alloc it also allocates them (after model_acts_bytes said they fit, so
 * every count is exact). */
typedef struct {
    int alloc;
    double bytes;
} acts_plan_t;

static void *acts_calloc(acts_plan_t *p, double n, size_t size) {
    p->bytes += n * (double)size;
    return p->alloc ? xcalloc((size_t)n, size) : NULL;
}

/* ---- kernels ---- */

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

/* Y = X W^T + b over N rows; the product through mm (kern_matmul: bf16 rounds X and W). */
static void matmul_forward(float *Y /* (N, OC) */, const float *X /* (N, In) */,
                           const float *W /* (OC, In) */, const float *b /* (OC) */, int64_t N,
                           int In, int OC, kern_mat_t *mm) {
    fill_rows(Y, b, N, OC);
    kern_matmul(Y, X, 0, W, 1, (int)N, OC, In, 1, mm);
}

static void announce(const model_hooks_t *hooks, int64_t from) {
    if (hooks) hooks->ready(from, hooks->ctx);
}

/* Backward of matmul_forward: dW = dY^T X, db = the column sums of dY (both overwritten); then
 * announces them with hooks->ready(from) (hooks may be NULL) before dX = dY W, which is skipped
 * when dX is NULL, so that their all-reduce overlaps the dX product. */
static void matmul_backward(float *dX /* (N, In) or NULL */, float *dW /* (OC, In) */,
                            float *db /* (OC) */, const float *dY /* (N, OC) */,
                            const float *X /* (N, In) */, const float *W /* (OC, In) */,
                            int64_t N, int In, int OC, const model_hooks_t *hooks, int64_t from,
                            kern_mat_t *mm) {
    kern_matmul(dW, dY, 1, X, 0, OC, In, (int)N, 0, mm);
    memset(db, 0, sizeof(float) * (size_t)OC);
    add_colsum(db, dY, N, OC);
    announce(hooks, from);
    if (dX) kern_matmul(dX, dY, 0, W, 0, (int)N, In, OC, 0, mm);
}

/* The inverted-dropout scale of an element: 0 with probability p, else 1/(1-p). */
static float drop_scale(uint64_t key, uint64_t i, float p) {
    return rng_uniform(key, i) < p ? 0.0f : 1.0f / (1.0f - p);
}

/* The dropout scales of W units for each of B streams at T steps, at rate p, for mask `layer`
 * (a layer, or MODEL_MAX_LAYERS for the embedding output): standard, element t*W + j of key
 * (seed, RNG_DROPOUT, step, layer, global stream); locked, one mask per stream for the whole
 * window, element j of key (seed, RNG_LOCKED, step, layer, global stream). */
static void dropout_mask(float *mask /* (T, B, W) */, const model_dropout_t *drop, float p,
                         int locked, int layer, int T, int B, int W) {
    for (int b = 0; b < B; b++) {
        uint64_t key = rng_key(drop->seed, locked ? RNG_LOCKED : RNG_DROPOUT,
                               (uint64_t)drop->step, (uint64_t)layer,
                               (uint64_t)(drop->first_stream + b));
        for (int t = 0; t < T; t++) {
            float *row = mask + ((size_t)t * B + b) * W;
            if (locked && t > 0) {
                memcpy(row, mask + (size_t)b * W, sizeof(float) * (size_t)W);
                continue;
            }
            for (int j = 0; j < W; j++) row[j] = drop_scale(key, (uint64_t)t * W + j, p);
        }
    }
}

/* The masks of the whole model at this step, the same on every rank and stream: one per
 * weight `layer` of n elements, key (seed, purpose, step, layer). */
static void weight_mask(float *mask /* (n) */, const model_dropout_t *drop, float p, int purpose,
                        int layer, int64_t n) {
    uint64_t key = rng_key(drop->seed, (uint64_t)purpose, (uint64_t)drop->step, (uint64_t)layer, 0);
    for (int64_t i = 0; i < n; i++) mask[i] = drop_scale(key, (uint64_t)i, p);
}

/* y = x * mask over n elements; in place when y == x. Also the backward of it, d x from d y. */
static void scale_by(float *y /* (n) */, const float *x /* (n) */, const float *mask /* (n) */,
                     int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * mask[i];
}

/* y += x over n elements. */
static void add_into(float *y /* (n) */, const float *x /* (n) */, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

/* out = table with row v scaled by s[v]; in place when out == table. */
static void scale_rows(float *out /* (V, cols) */, const float *table /* (V, cols) */,
                       const float *s /* (V) */, int V, int cols) {
    for (int v = 0; v < V; v++)
        for (int j = 0; j < cols; j++) out[(size_t)v * cols + j] = table[(size_t)v * cols + j] * s[v];
}

int model_dropout_flags(const model_dropout_t *drop) {
    if (!drop) return 0;
    return (drop->p > 0 ? MODEL_ACTS_DROPOUT : 0) |
           (drop->p_input > 0 ? MODEL_ACTS_DROPOUT_INPUT : 0) |
           (drop->p_embed > 0 ? MODEL_ACTS_DROPOUT_EMBED : 0) |
           (drop->p_weight > 0 ? MODEL_ACTS_WEIGHT_DROP : 0);
}

/* ---- layer normalisation ----
 * Each row of G*H values is normalised per gate block of H: xhat = (x - mean) / sqrt(var + eps)
 * (cell_ln_stats), y = gain * xhat + bias. */

/* y = gain * LN(x) + bias (bias NULL: none) over N rows of G blocks of H; in place when y == x.
 * Keeps xhat and 1/std for ln_backward. */
static void ln_forward(float *y /* (N, G*H) */, float *xhat /* (N, G*H) */, float *rstd /* (N, G) */,
                       const float *x /* (N, G*H) */, const float *gain /* (G*H) */,
                       const float *bias /* (G*H) or NULL */, int64_t N, int G, int H) {
    for (int64_t r = 0; r < N * G; r++) {
        const float *xr = x + r * H;
        float *yr = y + r * H, *xh = xhat + r * H;
        const float *gr = gain + (r % G) * H, *br = bias ? bias + (r % G) * H : NULL;
        float mean, rs = cell_ln_stats(xr, H, &mean);
        rstd[r] = rs;
        for (int j = 0; j < H; j++) {
            xh[j] = (xr[j] - mean) * rs;
            yr[j] = gr[j] * xh[j] + (br ? br[j] : 0.0f);
        }
    }
}

/* Backward of ln_forward in place: dy -> d x over N rows; adds sum dy * xhat to dgain and
 * sum dy to dbias (when not NULL). */
static void ln_backward(float *d /* (N, G*H) */, float *dgain /* (G*H) */,
                        float *dbias /* (G*H) or NULL */, const float *xhat /* (N, G*H) */,
                        const float *rstd /* (N, G) */, const float *gain /* (G*H) */, int64_t N,
                        int G, int H) {
    for (int64_t r = 0; r < N * G; r++) {
        float *dr = d + r * H;
        const float *xh = xhat + r * H, *gr = gain + (r % G) * H;
        float *dg = dgain + (r % G) * H, *db = dbias ? dbias + (r % G) * H : NULL;
        if (db)
            for (int j = 0; j < H; j++) db[j] += dr[j];
        for (int j = 0; j < H; j++) {
            dg[j] += dr[j] * xh[j];
            dr[j] *= gr[j];
        }
        float m1 = cell_sum(dr, H) / (float)H, m2 = cell_dot_shifted(dr, xh, 0.0f, H) / (float)H;
        for (int j = 0; j < H; j++) dr[j] = rstd[r] * (dr[j] - m1 - xh[j] * m2);
    }
}

/* ---- the embedding ----
 * The inputs are one-hot, so layer 0's input projection W_ih0 emb[id] + b_ih0 is row id of the
 * (V, G*H) table emb W_ih0^T + b_ih0. Folded, embed_forward computes that table (layer 0's
 * matmul over the V embedding rows instead of the T*B embedded inputs) and gathers layer 0's
 * projected gates from it; embed_backward sums their gradient by input id into the table's
 * gradient and runs the matmul's backward over V rows. Unfolded, the embedding is a lookup into
 * x and layer_forward projects x. Exactly one of a->x, a->proj is allocated: a->x is layer 0's
 * input, NULL when folded. */

/* out row i = table row ids[i] */
static void gather_rows(float *out /* (N, cols) */, const float *table /* (V, cols) */,
                        const int32_t *ids /* (N) */, int64_t N, int cols) {
    for (int64_t i = 0; i < N; i++)
        memcpy(out + i * cols, table + (int64_t)ids[i] * cols, sizeof(float) * (size_t)cols);
}

/* table row ids[i] += src row i */
static void scatter_add_rows(float *table /* (V, cols) */, const float *src /* (N, cols) */,
                             const int32_t *ids /* (N) */, int64_t N, int cols) {
    for (int64_t i = 0; i < N; i++) {
        float *row = table + (int64_t)ids[i] * cols;
        const float *r = src + i * cols;
        for (int j = 0; j < cols; j++) row[j] += r[j];
    }
}

/* Whether windows of TB rows fold the embedding into layer 0 (model_acts_alloc). Dropout on the
 * embedded inputs needs them, so it does not fold. */
static int embed_folds(const model_dims_t *d, double TB, int flags) {
    return !(flags & (MODEL_ACTS_UNFOLDED | MODEL_ACTS_DROPOUT_INPUT)) && 2.0 * d->V <= TB;
}

static void embed_alloc(model_acts_t *a, acts_plan_t *p, const model_dims_t *d, double TB,
                        int flags) {
    const double V = d->V, GH = (double)d->G * d->H;
    if (embed_folds(d, TB, flags)) {
        a->proj = acts_calloc(p, V * GH, sizeof(float));
        if (d->ln) {
            a->xhat_ih[0] = acts_calloc(p, V * GH, sizeof(float));
            a->rstd_ih[0] = acts_calloc(p, V * d->G, sizeof(float));
        }
    } else {
        a->x = acts_calloc(p, TB * d->E, sizeof(float));
    }
    if (flags & MODEL_ACTS_DROPOUT_INPUT) a->mask_in = acts_calloc(p, TB * d->E, sizeof(float));
    if (flags & MODEL_ACTS_DROPOUT_EMBED) {
        a->row_mask = acts_calloc(p, V, sizeof(float));
        a->emb_drop = acts_calloc(p, V * d->E, sizeof(float));
    }
}

/* The nominal FLOPs per character `nominal` as the embedding of a executes them. */
static double embed_flops_executed(double nominal, const model_dims_t *d, const model_acts_t *a) {
    if (!a->proj) return nominal;
    double w_ih0 = (double)d->G * d->H * d->E;
    return nominal - 6.0 * w_ih0 + 6.0 * w_ih0 * d->V / ((double)a->B * a->T);
}

/* Layer normalisation of one layer's input projection: the gain and where it keeps its xhat and
 * 1/std; all NULL without it. zeros: the bias of the bare product, which it normalises before
 * it adds the layer's b_ih. */
typedef struct {
    const float *gain;   /* (G*H) */
    float *xhat, *rstd;  /* (rows, G*H), (rows, G) */
    const float *zeros;  /* (G*H) */
    float *dscratch;     /* (G*H) */
} ln_proj_t;

static ln_proj_t ln_proj(const model_acts_t *a, const model_views_t *p, int l) {
    return (ln_proj_t){.gain = p->ln_ih[l], .xhat = a->xhat_ih[l], .rstd = a->rstd_ih[l],
                       .zeros = a->zeros, .dscratch = a->dscratch};
}

/* Y = X W^T + b over N rows, or with ln->gain gain * LN(X W^T) + b. */
static void proj_forward(float *Y /* (N, G*H) */, const float *X /* (N, In) */,
                         const float *W /* (G*H, In) */, const float *b /* (G*H) */,
                         const ln_proj_t *ln, int64_t N, int In, int G, int H, kern_mat_t *mm) {
    if (!ln->gain) {
        matmul_forward(Y, X, W, b, N, In, G * H, mm);
        return;
    }
    matmul_forward(Y, X, W, ln->zeros, N, In, G * H, mm);
    ln_forward(Y, ln->xhat, ln->rstd, Y, ln->gain, b, N, G, H);
}

/* Backward of proj_forward from dY (overwritten), as matmul_backward; with ln->gain it first
 * writes d gain into dgain and db, then runs matmul_backward on d (X W^T). */
static void proj_backward(float *dX /* (N, In) or NULL */, float *dW /* (G*H, In) */,
                          float *db /* (G*H) */, float *dgain /* (G*H) */,
                          float *dY /* (N, G*H) */, const float *X /* (N, In) */,
                          const float *W /* (G*H, In) */, const ln_proj_t *ln, int64_t N, int In,
                          int G, int H, const model_hooks_t *hooks, int64_t from,
                          kern_mat_t *mm) {
    const int GH = G * H;
    if (ln->gain) {
        memset(dgain, 0, sizeof(float) * (size_t)GH);
        memset(db, 0, sizeof(float) * (size_t)GH);
        ln_backward(dY, dgain, db, ln->xhat, ln->rstd, ln->gain, N, G, H);
        db = ln->dscratch;
    }
    matmul_backward(dX, dW, db, dY, X, W, N, In, GH, hooks, from, mm);
}

/* Unfolded (proj NULL): x = the embedding rows of the inputs. Folded (x NULL): proj = the
 * table, gates0 = its rows of the inputs (layer 0's input projection). */
static void embed_forward(float *x /* (T, B, E) or NULL */, float *proj /* (V, G*H) or NULL */,
                          float *gates0 /* (T, B, G*H) */, const int32_t *inputs /* (T, B) */,
                          const float *emb /* (V, E) */, const float *w_ih0 /* (G*H, E) */,
                          const float *b_ih0 /* (G*H) */, const ln_proj_t *ln, int64_t TB, int V,
                          int E, int G, int H, kern_mat_t *mm) {
    if (proj) {
        proj_forward(proj, emb, w_ih0, b_ih0, ln, V, E, G, H, mm);
        gather_rows(gates0, proj, inputs, TB, G * H);
    } else {
        gather_rows(x, emb, inputs, TB, E);
    }
}

/* Backward of embed_forward into demb. Unfolded: from dx, d loss / d x; layer_backward has done
 * W_ih0's and b_ih0's gradients. Folded: from dgates0, d loss / d gates0; writes dw_ih0 and
 * db_ih0 (and dln_ih0), announced with hooks->ready(from), and leaves the table's gradient in
 * proj. */
static void embed_backward(float *demb /* (V, E) */, float *dw_ih0 /* (G*H, E) */,
                           float *db_ih0 /* (G*H) */, float *dln_ih0 /* (G*H) ln */,
                           float *proj /* (V, G*H) or NULL */,
                           const float *dx /* (T, B, E) unfolded */,
                           const float *dgates0 /* (T, B, G*H) folded */,
                           const int32_t *inputs /* (T, B) */, const float *emb /* (V, E) */,
                           const float *w_ih0 /* (G*H, E) */, const ln_proj_t *ln, int64_t TB,
                           int V, int E, int G, int H, const model_hooks_t *hooks, int64_t from,
                           kern_mat_t *mm) {
    const int GH = G * H;
    if (proj) {
        memset(proj, 0, sizeof(float) * (size_t)V * GH);
        scatter_add_rows(proj, dgates0, inputs, TB, GH);
        proj_backward(demb, dw_ih0, db_ih0, dln_ih0, proj, emb, w_ih0, ln, V, E, G, H, hooks,
                      from, mm);
    } else {
        memset(demb, 0, sizeof(float) * (size_t)V * E);
        scatter_add_rows(demb, dx, inputs, TB, E);
    }
}

double model_flops_executed_per_char(const model_t *m, const model_acts_t *a) {
    return embed_flops_executed(model_flops_per_char(m), &m->d, a);
}

/* Lays out the buffers of a (see acts_plan_t). */
static void acts_plan(model_acts_t *a, acts_plan_t *p, const model_dims_t *d, int B, int T,
                      int flags) {
    const cell_ops_t *ops = cell_ops(d->cell);
    const double TB = (double)T * B, H = d->H, GH = (double)d->G * H, V = d->V;
    const double wide = d->E > d->H ? d->E : d->H;
    memset(a, 0, sizeof *a);
    a->B = B;
    a->T = T;
    a->inputs = acts_calloc(p, TB, sizeof(int32_t));
    a->targets = acts_calloc(p, TB, sizeof(int32_t));
    embed_alloc(a, p, d, TB, flags);
    for (int l = 0; l < d->layers; l++) {
        a->gates[l] = acts_calloc(p, TB * GH, sizeof(float));
        a->h[l] = acts_calloc(p, TB * H + B * H, sizeof(float));
        if (ops->has_c) a->c[l] = acts_calloc(p, TB * H + B * H, sizeof(float));
        if (ops->has_aux) a->aux[l] = acts_calloc(p, TB * H, sizeof(float));
        if (flags & MODEL_ACTS_DH_STEPS) a->dh_steps[l] = acts_calloc(p, TB * H, sizeof(float));
        if (flags & MODEL_ACTS_DROPOUT) {
            a->mask[l] = acts_calloc(p, TB * H, sizeof(float));
            a->dropped[l] = acts_calloc(p, TB * H, sizeof(float));
        }
        if (flags & MODEL_ACTS_WEIGHT_DROP) {
            a->whh_mask[l] = acts_calloc(p, GH * H, sizeof(float));
            a->whh_drop[l] = acts_calloc(p, GH * H, sizeof(float));
        }
        if (d->ln) {
            if (l || !embed_folds(d, TB, flags)) {
                a->xhat_ih[l] = acts_calloc(p, TB * GH, sizeof(float));
                a->rstd_ih[l] = acts_calloc(p, TB * d->G, sizeof(float));
            }
            a->xhat_hh[l] = acts_calloc(p, TB * GH, sizeof(float));
            a->rstd_hh[l] = acts_calloc(p, TB * d->G, sizeof(float));
            if (ops->has_c) {
                a->chat[l] = acts_calloc(p, TB * H, sizeof(float));
                a->crstd[l] = acts_calloc(p, TB, sizeof(float));
            }
        }
    }
    if (d->ln) {
        a->zeros = acts_calloc(p, GH, sizeof(float));
        a->dscratch = acts_calloc(p, GH, sizeof(float));
    }
    if (d->tie) a->ddec = acts_calloc(p, V * H, sizeof(float));
    a->logits = acts_calloc(p, TB * V, sizeof(float));
    a->gh = acts_calloc(p, B * GH, sizeof(float));
    a->dgates = acts_calloc(p, TB * GH, sizeof(float));
    /* a separate d (h W_hh^T) where it differs from d (x W_ih^T): gru, or normalised apart */
    a->dgh = ops->has_aux || d->ln ? acts_calloc(p, TB * GH, sizeof(float)) : a->dgates;
    a->dout_a = acts_calloc(p, TB * wide, sizeof(float));
    a->dout_b = acts_calloc(p, TB * wide, sizeof(float));
    a->dh = acts_calloc(p, B * H, sizeof(float));
    a->dh_prev = acts_calloc(p, B * H, sizeof(float));
    a->dc = acts_calloc(p, B * H, sizeof(float));
    const kern_precision_t prec = flags & MODEL_ACTS_BF16 ? KERN_BF16 : KERN_FP32;
    const kern_path_t path = T > 1 || prec == KERN_BF16 ? kern_path_auto(prec) : KERN_BLAS;
    if ((int64_t)d->G * d->H > INT_MAX) {
        /* beyond the kernel's int sizes, and beyond any memory: counted as its floats, so that
         * the memory check refuses it before anything is allocated */
        CHARLM_CHECK(!p->alloc);
        p->bytes += 4.0 * d->H * ((double)d->G * d->H);
        return;
    }
    p->bytes += kern_mat_bytes(path, prec, B, d->H, d->G * d->H);
    if (p->alloc) kern_mat_alloc(&a->whh, path, prec, B, d->H, d->G * d->H);
    /* the whole products' rounded operands (bf16), at their largest: the input projections, the
     * weight gradients and the dX products of the layers and the decoder (the folded
     * embedding's are V-row ones, smaller) */
    kern_need_t need = {0};
    const int rows = (int)TB, gh = d->G * d->H, in = (int)wide, V_ = d->V;
    kern_need(&need, path, prec, rows, gh, in);      /* X W_ih^T */
    kern_need(&need, path, prec, gh, in, rows);      /* dW_ih, dW_hh */
    kern_need(&need, path, prec, rows, in, gh);      /* dX */
    kern_need(&need, path, prec, rows, V_, d->H);    /* logits */
    kern_need(&need, path, prec, V_, d->H, rows);    /* dW_dec */
    kern_need(&need, path, prec, rows, d->H, V_);    /* the decoder's dX */
    p->bytes += kern_need_bytes(&need);
    if (p->alloc) kern_mat_alloc_need(&a->mm, path, prec, &need);
}

double model_acts_bytes(const model_dims_t *d, int B, int T, int flags) {
    model_acts_t scratch;
    acts_plan_t p = {.alloc = 0};
    acts_plan(&scratch, &p, d, B, T, flags);
    return p.bytes;
}

int model_window_fits(const model_dims_t *d, int B, int T, double extra, int sharers,
                      const char *option) {
    const double acts = model_acts_bytes(d, B, T, 0), state = 2.0 * 4 * d->layers * B * d->H,
                 total = acts + state + extra;
    fileio_mem_t m = fileio_mem_available(sharers, MODEL_LIB_VM);
    if (total <= m.bytes) return CHARLM_OK;
    char t[4][32], avail[300];
    fileio_bytes_text(t[0], sizeof t[0], total);
    fileio_bytes_text(t[1], sizeof t[1], acts);
    fileio_bytes_text(t[2], sizeof t[2], state);
    fileio_bytes_text(t[3], sizeof t[3], extra);
    fileio_mem_text(avail, sizeof avail, &m);
    return err_set(CHARLM_EINPUT, "%s %d: not enough memory: windows of %d streams x %d steps "
                   "need %s (activations %s, carried state %s, and %s more), %s", option, B, B, T,
                   t[0], t[1], t[2], t[3], avail);
}

void model_acts_alloc(model_acts_t *a, const model_t *m, int B, int T, int flags) {
    acts_plan_t p = {.alloc = 1};
    acts_plan(a, &p, &m->d, B, T, flags);
    a->bytes = (size_t)p.bytes;
}

void model_acts_free(model_acts_t *a) {
    free(a->inputs), free(a->targets), free(a->x), free(a->proj);
    free(a->mask_in), free(a->row_mask), free(a->emb_drop), free(a->ddec);
    free(a->zeros), free(a->dscratch);
    for (int l = 0; l < MODEL_MAX_LAYERS; l++) {
        free(a->gates[l]), free(a->h[l]), free(a->c[l]), free(a->aux[l]);
        free(a->mask[l]), free(a->dropped[l]), free(a->whh_mask[l]), free(a->whh_drop[l]);
        free(a->dh_steps[l]);
        free(a->xhat_ih[l]), free(a->rstd_ih[l]), free(a->xhat_hh[l]), free(a->rstd_hh[l]);
        free(a->chat[l]), free(a->crstd[l]);
    }
    if (a->dgh != a->dgates) free(a->dgh);
    free(a->logits), free(a->gh), free(a->dgates), free(a->dout_a), free(a->dout_b);
    free(a->dh), free(a->dh_prev), free(a->dc);
    kern_mat_free(&a->whh);
    kern_mat_free(&a->mm);
    memset(a, 0, sizeof *a);
}

/* ---- the recurrent layers and the decoder ---- */

/* The output of layer l as the next layer (or the decoder) sees it: (T, B, H), after h[0]. */
static const float *layer_out(const model_acts_t *a, int l, int H) {
    return a->dropout_on ? a->dropped[l] : a->h[l] + (size_t)a->B * H;
}

/* The input of layer l: (T, B, In_l); for layer 0 NULL when embed_forward has done its input
 * projection (folded). */
static const float *layer_input(const model_acts_t *a, int l, int H) {
    return l ? layer_out(a, l - 1, H) : a->x;
}

/* W_hh of layer l as the last forward used it: DropConnect's masked copy or the parameter. */
static const float *layer_w_hh(const model_acts_t *a, const model_views_t *p, int l) {
    return a->weight_drop_on ? a->whh_drop[l] : p->w_hh[l];
}

/* Layer normalisation of one layer's recurrent product and cell state (all NULL without it):
 * the parameters, and per step the normalised values and 1/std kept for backward. */
typedef struct {
    const float *g_hh;                         /* (G*H) */
    const float *g_c, *b_c;                    /* (H) lstm */
    float *xhat_hh, *rstd_hh, *chat, *crstd;   /* (T, B, G*H), (T, B, G), (T, B, H), (T, B) */
} ln_rec_t;

static ln_rec_t ln_rec(const model_acts_t *a, const model_views_t *p, int l) {
    return (ln_rec_t){.g_hh = p->ln_hh[l], .g_c = p->ln_c_w[l], .b_c = p->ln_c_b[l],
                      .xhat_hh = a->xhat_hh[l], .rstd_hh = a->rstd_hh[l], .chat = a->chat[l],
                      .crstd = a->crstd[l]};
}

/* One recurrent layer over T steps from the carried state (state_h, state_c), which it replaces
 * with the state after step T. gates: out the gate activations; in, when X is NULL, the input
 * projection (ln_proj_t), which is otherwise computed here. h[0], c[0] = the carried state.
 * whh: packed here with W_hh^T once for the T steps' products. */
static void layer_forward(float *gates /* (T, B, G*H) */, float *aux /* (T, B, H) gru */,
                          float *h /* (T+1, B, H) */, float *c /* (T+1, B, H) lstm */,
                          float *gh /* (B, G*H) scratch */, kern_mat_t *whh,
                          float *state_h /* (B, H) */,
                          float *state_c /* (B, H) lstm */,
                          const float *X /* (T, B, In) or NULL */,
                          const float *w_ih /* (G*H, In) */, const float *b_ih /* (G*H) */,
                          const float *w_hh /* (G*H, H) */, const float *b_hh /* (G*H) */,
                          const ln_proj_t *lnp, const ln_rec_t *ln, const cell_ops_t *ops, int T,
                          int B, int In, int H, kern_mat_t *mm) {
    const int G = ops->gates, GH = G * H;
    const size_t BH = (size_t)B * H;
    if (X) proj_forward(gates, X, w_ih, b_ih, lnp, (int64_t)T * B, In, G, H, mm);
    memcpy(h, state_h, sizeof(float) * BH);
    if (c) memcpy(c, state_c, sizeof(float) * BH);
    kern_pack(whh, w_hh, H, GH, 1); /* B = W_hh^T */
    for (int t = 0; t < T; t++) {
        const float *hp = h + t * BH;
        kern_gemm(gh, hp, whh, B, 0);
        float *gt = gates + t * B * (size_t)GH, *ht = h + (t + 1) * BH;
        if (ln->g_hh)
            ln_forward(gh, ln->xhat_hh + t * B * (size_t)GH, ln->rstd_hh + (size_t)t * B * G, gh,
                       ln->g_hh, NULL, B, G, H);
        if (ln->g_c)
            ops->forward_ln(gt, ht, c + (t + 1) * BH, ln->chat + t * BH, ln->crstd + (size_t)t * B,
                            gh, b_hh, c + t * BH, ln->g_c, ln->b_c, B, H);
        else
            ops->forward(gt, aux ? aux + t * BH : NULL, ht, c ? c + (t + 1) * BH : NULL, gh, b_hh,
                         hp, c ? c + t * BH : NULL, B, H);
    }
    memcpy(state_h, h + T * BH, sizeof(float) * BH);
    if (c) memcpy(state_c, c + T * BH, sizeof(float) * BH);
}

/* The gradients of layer l's layer-normalisation parameters (all NULL without it). */
typedef struct {
    float *g_ih, *g_hh, *g_c, *b_c;
} ln_grads_t;

/* Backward of layer_forward from dout = d loss / d h[1..T] (none flows into the carried-in
 * state); hooks->poll between steps. Leaves dgates (d loss / d the input projection's output)
 * and dgh, and, when dh_steps is given, the total d loss / d h[t+1] of every step t in it.
 * Writes dw_hh, db_hh (with whh_mask: dw_hh masked as DropConnect's W_hh was), and the
 * ln gradients but dg->g_ih; when X is given also dw_ih, db_ih, dg->g_ih, announced with
 * hooks->ready(from), then dX. When X is NULL, embed_backward takes dgates on. whh: packed here
 * with W_hh. */
static void layer_backward(float *dX /* (T, B, In) */, float *dw_ih /* (G*H, In) */,
                           float *db_ih /* (G*H) */, float *dw_hh /* (G*H, H) */,
                           float *db_hh /* (G*H) */, const ln_grads_t *dg,
                           float *dgates /* (T, B, G*H) */,
                           float *dgh /* (T, B, G*H); = dgates but for gru and ln */,
                           float *dh /* (B, H) */, float *dh_prev /* (B, H) */,
                           float *dc /* (B, H) */, float *dh_steps /* (T, B, H) or NULL */,
                           kern_mat_t *whh,
                           const float *dout /* (T, B, H) */,
                           const float *X /* (T, B, In) or NULL */,
                           const float *w_ih /* (G*H, In) */, const float *w_hh /* (G*H, H) */,
                           const float *whh_mask /* (G*H, H) or NULL */,
                           const float *gates /* (T, B, G*H) */, const float *aux /* (T, B, H) */,
                           const float *h /* (T+1, B, H) */, const float *c /* (T+1, B, H) */,
                           const ln_proj_t *lnp, const ln_rec_t *ln, const cell_ops_t *ops, int T,
                           int B, int In, int H, const model_hooks_t *hooks, int64_t from,
                           kern_mat_t *mm) {
    const int G = ops->gates, GH = G * H;
    const int64_t TB = (int64_t)T * B;
    const size_t BH = (size_t)B * H, BGH = (size_t)B * GH;
    memset(dh_prev, 0, sizeof(float) * BH);
    memset(dc, 0, sizeof(float) * BH);
    kern_pack(whh, w_hh, GH, H, 0);
    if (ln->g_hh) {
        memset(dg->g_hh, 0, sizeof(float) * (size_t)GH);
        memset(db_hh, 0, sizeof(float) * (size_t)GH);
    }
    if (ln->g_c) {
        memset(dg->g_c, 0, sizeof(float) * (size_t)H);
        memset(dg->b_c, 0, sizeof(float) * (size_t)H);
    }
    for (int t = T - 1; t >= 0; t--) {
        const float *dot = dout + t * BH;
        for (size_t i = 0; i < BH; i++) dh[i] = dot[i] + dh_prev[i];
        if (dh_steps) memcpy(dh_steps + t * BH, dh, sizeof(float) * BH);
        float *dgt = dgates + t * BGH, *dght = dgh + t * BGH;
        if (ln->g_c) {
            ops->backward_ln(dgt, dc, dg->g_c, dg->b_c, dh, gates + t * BGH, c + t * BH,
                             ln->chat + t * BH, ln->crstd + (size_t)t * B, ln->g_c, ln->b_c, B, H);
            memset(dh_prev, 0, sizeof(float) * BH);
        } else {
            ops->backward(dgt, dght, dh_prev, dc, dh, gates + t * BGH, aux ? aux + t * BH : NULL,
                          h + t * BH, c ? c + t * BH : NULL, c ? c + (t + 1) * BH : NULL, B, H);
        }
        if (ln->g_hh) {
            /* the cells whose two gradients are equal wrote dgates only */
            if (!ops->has_aux) memcpy(dght, dgt, sizeof(float) * BGH);
            ln_backward(dght, dg->g_hh, db_hh, ln->xhat_hh + t * BGH,
                        ln->rstd_hh + (size_t)t * B * G, ln->g_hh, B, G, H);
        }
        if (t > 0) kern_gemm(dh_prev, dght, whh, B, 1);
        if (hooks) hooks->poll(hooks->ctx);
    }
    /* W_hh's product was with h[0..T-1], the states each step started from */
    matmul_backward(NULL, dw_hh, ln->g_hh ? lnp->dscratch : db_hh, dgh, h, w_hh, TB, H, GH, NULL,
                    0, mm);
    if (whh_mask) scale_by(dw_hh, dw_hh, whh_mask, (int64_t)GH * H);
    if (X)
        proj_backward(dX, dw_ih, db_ih, dg->g_ih, dgates, X, w_ih, lnp, TB, In, G, H, hooks,
                      from, mm);
}

/* logits = X dec_w^T + dec_b; returns loss_softmax_xent of them, which with grad leaves
 * d (scale * loss) / d logits in logits. */
static double decoder_forward(float *logits /* (T, B, V) */, const float *X /* (T, B, H) */,
                              const float *dec_w /* (V, H) */, const float *dec_b /* (V) */,
                              const int32_t *targets /* (T, B) */, int64_t TB, int V, int H,
                              float scale, int grad, kern_mat_t *mm) {
    matmul_forward(logits, X, dec_w, dec_b, TB, H, V, mm);
    return loss_softmax_xent(logits, targets, TB, V, scale, grad);
}

/* Backward of decoder_forward from its d loss / d logits: the decoder's gradients, announced
 * with hooks->ready(from), then dX. */
static void decoder_backward(float *dX /* (T, B, H) */, float *ddec_w /* (V, H) */,
                             float *ddec_b /* (V) */, const float *dlogits /* (T, B, V) */,
                             const float *X /* (T, B, H) */, const float *dec_w /* (V, H) */,
                             int64_t TB, int V, int H, const model_hooks_t *hooks, int64_t from,
                             kern_mat_t *mm) {
    matmul_backward(dX, ddec_w, ddec_b, dlogits, X, dec_w, TB, H, V, hooks, from, mm);
}

/* ---- the passes ---- */

/* The dropouts of drop that apply, with their buffers: which the last forward applied is
 * recorded in a for backward. Draws the masks of the embedding rows (into a->emb_drop) and of
 * the embedded inputs. Returns the embedding as the lookup sees it. */
static const float *dropout_begin(model_acts_t *a, const model_t *m, const model_dropout_t *drop,
                                  int T) {
    const model_dims_t *d = &m->d;
    a->dropout_on = drop && drop->p > 0.0f;
    a->input_drop_on = drop && drop->p_input > 0.0f;
    a->embed_drop_on = drop && drop->p_embed > 0.0f;
    a->weight_drop_on = drop && drop->p_weight > 0.0f;
    CHARLM_CHECK(!a->dropout_on || a->mask[0]);
    CHARLM_CHECK(!a->input_drop_on || a->mask_in);
    CHARLM_CHECK(!a->embed_drop_on || a->row_mask);
    CHARLM_CHECK(!a->weight_drop_on || a->whh_mask[0]);
    if (a->input_drop_on)
        dropout_mask(a->mask_in, drop, drop->p_input, 1, MODEL_MAX_LAYERS, T, a->B, d->E);
    if (!a->embed_drop_on) return m->p.emb;
    weight_mask(a->row_mask, drop, drop->p_embed, RNG_EMBED_DROP, 0, d->V);
    scale_rows(a->emb_drop, m->p.emb, a->row_mask, d->V, d->E);
    return a->emb_drop;
}

double model_forward(model_acts_t *a, float *state_h, float *state_c, const model_t *m, int T,
                     const model_dropout_t *drop, float scale, int grad) {
    const model_dims_t *d = &m->d;
    const model_views_t *p = &m->p;
    const int B = a->B, H = d->H;
    const int64_t TB = (int64_t)T * B, GHH = (int64_t)d->G * H * H;
    const size_t BH = (size_t)B * H;
    CHARLM_CHECK(T >= 1 && T <= a->T);
    const float *emb = dropout_begin(a, m, drop, T);

    const ln_proj_t lnp0 = ln_proj(a, p, 0);
    embed_forward(a->x, a->proj, a->gates[0], a->inputs, emb, p->w_ih[0], p->b_ih[0], &lnp0, TB,
                  d->V, d->E, d->G, H, &a->mm);
    if (a->input_drop_on) scale_by(a->x, a->x, a->mask_in, TB * d->E);
    for (int l = 0; l < d->layers; l++) {
        if (a->weight_drop_on) {
            weight_mask(a->whh_mask[l], drop, drop->p_weight, RNG_WEIGHT_DROP, l, GHH);
            scale_by(a->whh_drop[l], p->w_hh[l], a->whh_mask[l], GHH);
        }
        const ln_proj_t lnp = ln_proj(a, p, l);
        const ln_rec_t ln = ln_rec(a, p, l);
        layer_forward(a->gates[l], a->aux[l], a->h[l], a->c[l], a->gh, &a->whh,
                      state_h + l * BH, state_c ? state_c + l * BH : NULL, layer_input(a, l, H),
                      p->w_ih[l], p->b_ih[l], layer_w_hh(a, p, l), p->b_hh[l], &lnp, &ln, m->ops,
                      T, B, layer_in(d, l), H, &a->mm);
        if (a->dropout_on) {
            dropout_mask(a->mask[l], drop, drop->p, drop->locked, l, T, B, H);
            scale_by(a->dropped[l], a->h[l] + BH, a->mask[l], TB * H);
        }
    }
    return decoder_forward(a->logits, layer_out(a, d->layers - 1, H), p->dec_w, p->dec_b,
                           a->targets, TB, d->V, H, scale, grad, &a->mm);
}

static int64_t tensor_offset(const model_t *m, model_tensor_kind_t k, int l) {
    return tensor(m, k, l)->offset;
}

void model_backward(float *grads, model_acts_t *a, const model_t *m, int T,
                    const model_hooks_t *hooks) {
    const model_dims_t *d = &m->d;
    const model_views_t *p = &m->p;
    const int B = a->B, H = d->H;
    const int64_t TB = (int64_t)T * B;
    model_views_t g;
    model_views(&g, m, grads);

    float *dout = a->dout_a, *dx = a->dout_b; /* (T, B, H), (T, B, In): down the stack */
    /* tied, the decoder's part of d emb waits in a->ddec until the embedding's is done */
    decoder_backward(dout, d->tie ? a->ddec : g.dec_w, g.dec_b, a->logits,
                     layer_out(a, d->layers - 1, H), p->dec_w, TB, d->V, H, hooks,
                     tensor_offset(m, d->tie ? MODEL_T_DEC_B : MODEL_T_DEC_W, 0), &a->mm);
    for (int l = d->layers - 1; l >= 0; l--) {
        if (a->dropout_on) scale_by(dout, dout, a->mask[l], TB * H);
        const ln_proj_t lnp = ln_proj(a, p, l);
        const ln_rec_t ln = ln_rec(a, p, l);
        const ln_grads_t lng = {g.ln_ih[l], g.ln_hh[l], g.ln_c_w[l], g.ln_c_b[l]};
        layer_backward(dx, g.w_ih[l], g.b_ih[l], g.w_hh[l], g.b_hh[l], &lng, a->dgates, a->dgh,
                       a->dh, a->dh_prev, a->dc, a->dh_steps[l], &a->whh, dout,
                       layer_input(a, l, H), p->w_ih[l], layer_w_hh(a, p, l),
                       a->weight_drop_on ? a->whh_mask[l] : NULL,
                       a->gates[l], a->aux[l], a->h[l], a->c[l], &lnp, &ln, m->ops, T, B,
                       layer_in(d, l), H, hooks, tensor_offset(m, MODEL_T_W_IH, l), &a->mm);
        float *tmp = dout;
        dout = dx;
        dx = tmp;
    }
    if (a->input_drop_on) scale_by(dout, dout, a->mask_in, TB * d->E);
    const ln_proj_t lnp0 = ln_proj(a, p, 0);
    embed_backward(g.emb, g.w_ih[0], g.b_ih[0], g.ln_ih[0], a->proj, dout, a->dgates, a->inputs,
                   a->embed_drop_on ? a->emb_drop : p->emb, p->w_ih[0], &lnp0, TB, d->V, d->E,
                   d->G, H, hooks, tensor_offset(m, MODEL_T_W_IH, 0), &a->mm);
    if (a->embed_drop_on) scale_rows(g.emb, g.emb, a->row_mask, d->V, d->E);
    if (d->tie) add_into(g.emb, a->ddec, (int64_t)d->V * H);
    announce(hooks, tensor_offset(m, MODEL_T_EMB, 0));
}
