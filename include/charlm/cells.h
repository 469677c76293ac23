/* cells: the element-wise step kernels of the recurrent cells (src/README.md §3), one file each
 * (cell_rnn.c, cell_lstm.c, cell_gru.c), behind one interface. The matrix products are the
 * model's: per step it computes gh = h_prev W_hh^T (B, G*H) with one GEMM and hands it here with
 * the input projection `gates` = x W_ih^T + b_ih; a kernel fuses bias, non-linearities and the
 * state update in one pass. Gate order as PyTorch: LSTM i, f, g, o; GRU r, z, n. */
#ifndef CHARLM_CELLS_H
#define CHARLM_CELLS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* The recurrent cell of a model (model.cell). */
typedef enum { CELL_RNN = 0, CELL_LSTM = 1, CELL_GRU = 2, CELL_KINDS } cell_kind_t;

/* "rnn", "lstm", "gru": cell_kind_names[k] names kind k (config keys, checkpoints). */
extern const char *const cell_kind_names[CELL_KINDS];

/* The name of kind k ("?" when k is not a kind). */
const char *cell_kind_name(cell_kind_t k);

/* The kind named s, or -1 when none is. */
int cell_kind_value(const char *s);

typedef struct {
    int gates; /* G: 1 (rnn), 4 (lstm), 3 (gru) */
    int has_c; /* keeps a cell state (lstm) */
    int has_aux; /* keeps (B, H) per step for backward: gru's W_hn h + b_hn */
    /* Forward one step. gates (B, G*H): in x W_ih^T + b_ih, out the gate activations (kept for
     * backward). aux (B, H) out (gru). h (B, H) out. c (B, H) out (lstm). gh (B, G*H) in:
     * h_prev W_hh^T. b_hh (G*H). h_prev, c_prev (B, H) in. */
    void (*forward)(float *gates, float *aux, float *h, float *c, const float *gh,
                    const float *b_hh, const float *h_prev, const float *c_prev, int B, int H);
    /* Backward one step. dgates (B, G*H) out: d loss / d (x W_ih^T + b_ih). dgh (B, G*H) out:
     * d loss / d (h_prev W_hh^T + b_hh); may alias dgates when the cell makes them equal
     * (rnn, lstm). dh_prev (B, H) out: the part of d loss / d h_prev that does not pass through
     * W_hh (gru's z path; zeros otherwise) — the caller adds dgh W_hh. dc (B, H) in: d loss / d c
     * from step t+1, out: d loss / d c_prev (lstm; ignored otherwise). dh (B, H) in: d loss / d h.
     * gates, aux, h_prev, c_prev, c: as saved by forward. */
    void (*backward)(float *dgates, float *dgh, float *dh_prev, float *dc, const float *dh,
                     const float *gates, const float *aux, const float *h_prev,
                     const float *c_prev, const float *c, int B, int H);
    /* Forward one step with the cell state layer-normalised (model.layer_norm; NULL for cells
     * without a state): as forward, but h = o*tanh(ln_w * chat + ln_b) with chat (B, H) out, c
     * normalised over its H units, and crstd (B) out, 1/its standard deviation. ln_w, ln_b (H). */
    void (*forward_ln)(float *gates, float *h, float *c, float *chat, float *crstd,
                       const float *gh, const float *b_hh, const float *c_prev,
                       const float *ln_w, const float *ln_b, int B, int H);
    /* Its backward: as backward (dgates serves as dgh too; nothing flows into h_prev but
     * through W_hh), and adds d loss / d ln_w and d loss / d ln_b into dln_w, dln_b (H). */
    void (*backward_ln)(float *dgates, float *dc, float *dln_w, float *dln_b, const float *dh,
                        const float *gates, const float *c_prev, const float *chat,
                        const float *crstd, const float *ln_w, const float *ln_b, int B, int H);
} cell_ops_t;

/* The kernels of cell kind k (static storage). */
const cell_ops_t *cell_ops(cell_kind_t k);

extern const cell_ops_t cell_rnn_ops, cell_lstm_ops, cell_gru_ops;

/* exp, sigmoid and tanh written so that the compiler vectorises the gate loops (libm's expf and
 * tanhf are scalar calls). exp: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial
 * (Cephes' expf coefficients), 2^n put into the exponent bits; relative error about 2e-7 over
 * the clamped range [-87, 88]. The gate loops carry "#pragma GCC ivdep": their gate blocks are
 * disjoint slices of one buffer, which the compiler cannot prove on its own. */
static inline float cell_exp(float x) {
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    const float shift = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float t = x * 1.44269504088896341f + shift;
    union { float f; int32_t i; } u = {t}, e;
    float n = t - shift;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    /* unsigned: a NaN input (a diverging run) must give NaN, not undefined behaviour */
    e.i = (int32_t)((uint32_t)(u.i - 0x4B400000 + 127) << 23);
    return p * e.f;
}

/* Layer normalisation's epsilon (torch.nn.LayerNorm's default). */
#define CELL_LN_EPS 1e-5f

/* Sums of H-long rows for layer normalisation, in one fixed order whatever the vector width
 * or build: lane k of CELL_LANES adds elements k, k + CELL_LANES, ..., the lanes are added in
 * order, then the tail. Independent lanes let the compiler vectorise without reassociating
 * (a plain running sum is a chain of dependent adds: about 14% of an LN-LSTM window at
 * H = 512), and the fixed order keeps results equal on every machine. */
#define CELL_LANES 16

static inline float cell_lanes_total(const float acc[CELL_LANES]) {
    float s = 0;
    for (int k = 0; k < CELL_LANES; k++) s += acc[k];
    return s;
}

/* Returns sum_j x[j] over n. */
static inline float cell_sum(const float *x, int n) {
    float acc[CELL_LANES] = {0};
    int j = 0;
    for (; j + CELL_LANES <= n; j += CELL_LANES)
        for (int k = 0; k < CELL_LANES; k++) acc[k] += x[j + k];
    float s = cell_lanes_total(acc);
    for (; j < n; j++) s += x[j];
    return s;
}

/* Returns sum_j (x[j] - a) (y[j] - a) over n. */
static inline float cell_dot_shifted(const float *x, const float *y, float a, int n) {
    float acc[CELL_LANES] = {0};
    int j = 0;
    for (; j + CELL_LANES <= n; j += CELL_LANES)
        for (int k = 0; k < CELL_LANES; k++) acc[k] += (x[j + k] - a) * (y[j + k] - a);
    float s = cell_lanes_total(acc);
    for (; j < n; j++) s += (x[j] - a) * (y[j] - a);
    return s;
}

/* The mean of x (H) into *mean; returns 1/sqrt(var + CELL_LN_EPS), var the biased variance:
 * layer normalisation's statistics (src/README.md §3). */
static inline float cell_ln_stats(const float *x, int H, float *mean) {
    float m = cell_sum(x, H) / (float)H;
    *mean = m;
    return 1.0f / sqrtf(cell_dot_shifted(x, x, m, H) / (float)H + CELL_LN_EPS);
}

static inline float cell_sigmoid(float x) { return 1.0f / (1.0f + cell_exp(-x)); }

/* tanh(x) = sign(x) (1 - e^{-2|x|}) / (1 + e^{-2|x|}): absolute error below 1e-7. */
static inline float cell_tanh(float x) {
    float a = x < 0 ? -x : x;
    float e = cell_exp(-2.0f * a);
    float t = (1.0f - e) / (1.0f + e);
    return x < 0 ? -t : t;
}

#endif
