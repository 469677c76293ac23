/* Vanilla RNN: h = tanh(x W_ih^T + b_ih + h_prev W_hh^T + b_hh). */
#include "charlm/cells.h"

static void rnn_forward(float *gates, float *aux, float *h, float *c, const float *gh,
                        const float *b_hh, const float *h_prev, const float *c_prev, int B,
                        int H) {
    (void)aux, (void)c, (void)h_prev, (void)c_prev;
    for (int b = 0; b < B; b++) {
        float *g = gates + (size_t)b * H;
        const float *r = gh + (size_t)b * H;
        float *hb = h + (size_t)b * H;
        #pragma GCC ivdep
        for (int j = 0; j < H; j++) {
            float a = cell_tanh(g[j] + r[j] + b_hh[j]);
            g[j] = a;
            hb[j] = a;
        }
    }
}

static void rnn_backward(float *dgates, float *dgh, float *dh_prev, float *dc, const float *dh,
                         const float *gates, const float *aux, const float *h_prev,
                         const float *c_prev, const float *c, int B, int H) {
    (void)dgh, (void)dc, (void)aux, (void)h_prev, (void)c_prev, (void)c;
    #pragma GCC ivdep
    for (size_t i = 0; i < (size_t)B * H; i++) {
        float a = gates[i];
        dgates[i] = dh[i] * (1.0f - a * a);
        dh_prev[i] = 0.0f;
    }
}

const cell_ops_t cell_rnn_ops = {.gates = 1, .has_c = 0, .has_aux = 0, .forward = rnn_forward,
                                 .backward = rnn_backward};
