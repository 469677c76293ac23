/* LSTM, PyTorch gate order i, f, g, o: c = f*c_prev + i*g, h = o*tanh(c); with layer
 * normalisation of the state, h = o*tanh(ln_w * LN(c) + ln_b) (src/README.md §3). */
#include "charlm/cells.h"

/* The gates of one stream (4H: in the input projection, out the activations) and its new cell
 * state c (H), from the recurrent product r (4H), b_hh and the previous state cp. */
static void lstm_cell(float *g /* (4H) */, float *c /* (H) */, const float *r /* (4H) */,
                      const float *b_hh /* (4H) */, const float *cp /* (H) */, int H) {
    float *gi = g, *gf = gi + H, *gg = gf + H, *go = gg + H;
    const float *ri = r, *rf = ri + H, *rg = rf + H, *ro = rg + H;
    const float *bi = b_hh, *bf = bi + H, *bg = bf + H, *bo = bg + H;
    #pragma GCC ivdep
    for (int j = 0; j < H; j++) {
        float i = cell_sigmoid(gi[j] + ri[j] + bi[j]);
        float f = cell_sigmoid(gf[j] + rf[j] + bf[j]);
        float gv = cell_tanh(gg[j] + rg[j] + bg[j]);
        float o = cell_sigmoid(go[j] + ro[j] + bo[j]);
        gi[j] = i, gf[j] = f, gg[j] = gv, go[j] = o;
        c[j] = f * cp[j] + i * gv;
    }
}

/* Backward of lstm_cell from dcn (H) = d loss / d c: the gradients of the i, f, g blocks into
 * dg (4H; the o block is the caller's) and d loss / d cp into dc (H). */
static void lstm_cell_backward(float *dg /* (4H) */, float *dc /* (H) */,
                               const float *dcn /* (H), may alias dg's i block */,
                               const float *g /* (4H) */, const float *cp /* (H) */, int H) {
    const float *gi = g, *gf = gi + H, *gg = gf + H;
    float *di = dg, *df = di + H, *dgg = df + H;
    #pragma GCC ivdep
    for (int j = 0; j < H; j++) {
        float i = gi[j], f = gf[j], gv = gg[j], d = dcn[j];
        di[j] = d * gv * i * (1.0f - i);
        df[j] = d * cp[j] * f * (1.0f - f);
        dgg[j] = d * i * (1.0f - gv * gv);
        dc[j] = d * f;
    }
}

static void lstm_forward(float *gates, float *aux, float *h, float *c, const float *gh,
                         const float *b_hh, const float *h_prev, const float *c_prev, int B,
                         int H) {
    (void)aux, (void)h_prev;
    for (int b = 0; b < B; b++) {
        float *g = gates + (size_t)b * 4 * H, *go = g + 3 * H;
        float *cb = c + (size_t)b * H, *hb = h + (size_t)b * H;
        lstm_cell(g, cb, gh + (size_t)b * 4 * H, b_hh, c_prev + (size_t)b * H, H);
        #pragma GCC ivdep
        for (int j = 0; j < H; j++) hb[j] = go[j] * cell_tanh(cb[j]);
    }
}

static void lstm_backward(float *dgates, float *dgh, float *dh_prev, float *dc, const float *dh,
                          const float *gates, const float *aux, const float *h_prev,
                          const float *c_prev, const float *c, int B, int H) {
    (void)dgh, (void)aux, (void)h_prev;
    for (int b = 0; b < B; b++) {
        const float *g = gates + (size_t)b * 4 * H, *go = g + 3 * H;
        float *dg = dgates + (size_t)b * 4 * H, *dout = dg + 3 * H;
        const float *cb = c + (size_t)b * H, *dhb = dh + (size_t)b * H;
        float *dcb = dc + (size_t)b * H, *dhp = dh_prev + (size_t)b * H;
        /* d loss / d c into the i block, which lstm_cell_backward reads before it writes */
        #pragma GCC ivdep
        for (int j = 0; j < H; j++) {
            float o = go[j], tc = cell_tanh(cb[j]);
            dg[j] = dhb[j] * o * (1.0f - tc * tc) + dcb[j];
            dout[j] = dhb[j] * tc * o * (1.0f - o);
            dhp[j] = 0.0f;
        }
        lstm_cell_backward(dg, dcb, dg, g, c_prev + (size_t)b * H, H);
    }
}

static void lstm_forward_ln(float *gates, float *h, float *c, float *chat, float *crstd,
                            const float *gh, const float *b_hh, const float *c_prev,
                            const float *ln_w, const float *ln_b, int B, int H) {
    for (int b = 0; b < B; b++) {
        float *g = gates + (size_t)b * 4 * H, *go = g + 3 * H;
        float *cb = c + (size_t)b * H, *hb = h + (size_t)b * H, *ch = chat + (size_t)b * H;
        lstm_cell(g, cb, gh + (size_t)b * 4 * H, b_hh, c_prev + (size_t)b * H, H);
        float mean, rs = cell_ln_stats(cb, H, &mean);
        crstd[b] = rs;
        #pragma GCC ivdep
        for (int j = 0; j < H; j++) {
            ch[j] = (cb[j] - mean) * rs;
            hb[j] = go[j] * cell_tanh(ln_w[j] * ch[j] + ln_b[j]);
        }
    }
}

static void lstm_backward_ln(float *dgates, float *dc, float *dln_w, float *dln_b,
                             const float *dh, const float *gates, const float *c_prev,
                             const float *chat, const float *crstd, const float *ln_w,
                             const float *ln_b, int B, int H) {
    for (int b = 0; b < B; b++) {
        const float *g = gates + (size_t)b * 4 * H, *go = g + 3 * H;
        const float *ch = chat + (size_t)b * H, *dhb = dh + (size_t)b * H;
        float *dg = dgates + (size_t)b * 4 * H, *dout = dg + 3 * H, *dcb = dc + (size_t)b * H;
        /* d loss / d chat into the i block first */
        #pragma GCC ivdep
        for (int j = 0; j < H; j++) {
            float o = go[j], tu = cell_tanh(ln_w[j] * ch[j] + ln_b[j]);
            float du = dhb[j] * o * (1.0f - tu * tu);
            dout[j] = dhb[j] * tu * o * (1.0f - o);
            dln_w[j] += du * ch[j];
            dln_b[j] += du;
            dg[j] = du * ln_w[j];
        }
        float m1 = cell_sum(dg, H) / (float)H, m2 = cell_dot_shifted(dg, ch, 0.0f, H) / (float)H;
        #pragma GCC ivdep
        for (int j = 0; j < H; j++) dg[j] = crstd[b] * (dg[j] - m1 - ch[j] * m2) + dcb[j];
        lstm_cell_backward(dg, dcb, dg, g, c_prev + (size_t)b * H, H);
    }
}

const cell_ops_t cell_lstm_ops = {.gates = 4, .has_c = 1, .has_aux = 0, .forward = lstm_forward,
                                  .backward = lstm_backward, .forward_ln = lstm_forward_ln,
                                  .backward_ln = lstm_backward_ln};
