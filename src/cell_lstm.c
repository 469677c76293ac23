/* LSTM, PyTorch gate order i, f, g, o: c = f*c_prev + i*g, h = o*tanh(c). */
#include "charlm/cells.h"

static void lstm_forward(float *gates, float *aux, float *h, float *c, const float *gh,
                         const float *b_hh, const float *h_prev, const float *c_prev, int B,
                         int H) {
    (void)aux, (void)h_prev;
    for (int b = 0; b < B; b++) {
        float *gi = gates + (size_t)b * 4 * H, *gf = gi + H, *gg = gf + H, *go = gg + H;
        const float *ri = gh + (size_t)b * 4 * H, *rf = ri + H, *rg = rf + H, *ro = rg + H;
        const float *bi = b_hh, *bf = bi + H, *bg = bf + H, *bo = bg + H;
        const float *cp = c_prev + (size_t)b * H;
        float *cb = c + (size_t)b * H, *hb = h + (size_t)b * H;
        #pragma GCC ivdep
        for (int j = 0; j < H; j++) {
            float i = cell_sigmoid(gi[j] + ri[j] + bi[j]);
            float f = cell_sigmoid(gf[j] + rf[j] + bf[j]);
            float g = cell_tanh(gg[j] + rg[j] + bg[j]);
            float o = cell_sigmoid(go[j] + ro[j] + bo[j]);
            float cn = f * cp[j] + i * g;
            gi[j] = i, gf[j] = f, gg[j] = g, go[j] = o;
            cb[j] = cn;
            hb[j] = o * cell_tanh(cn);
        }
    }
}

static void lstm_backward(float *dgates, float *dgh, float *dh_prev, float *dc, const float *dh,
                          const float *gates, const float *aux, const float *h_prev,
                          const float *c_prev, const float *c, int B, int H) {
    (void)dgh, (void)aux, (void)h_prev;
    for (int b = 0; b < B; b++) {
        const float *gi = gates + (size_t)b * 4 * H, *gf = gi + H, *gg = gf + H, *go = gg + H;
        float *di = dgates + (size_t)b * 4 * H, *df = di + H, *dg = df + H, *dout = dg + H;
        const float *cp = c_prev + (size_t)b * H, *cb = c + (size_t)b * H;
        const float *dhb = dh + (size_t)b * H;
        float *dcb = dc + (size_t)b * H, *dhp = dh_prev + (size_t)b * H;
        #pragma GCC ivdep
        for (int j = 0; j < H; j++) {
            float i = gi[j], f = gf[j], g = gg[j], o = go[j];
            float tc = cell_tanh(cb[j]);
            float dcn = dhb[j] * o * (1.0f - tc * tc) + dcb[j];
            dout[j] = dhb[j] * tc * o * (1.0f - o);
            di[j] = dcn * g * i * (1.0f - i);
            df[j] = dcn * cp[j] * f * (1.0f - f);
            dg[j] = dcn * i * (1.0f - g * g);
            dcb[j] = dcn * f;
            dhp[j] = 0.0f;
        }
    }
}

const cell_ops_t cell_lstm_ops = {4, 1, 0, lstm_forward, lstm_backward};
