/* GRU, PyTorch gate order r, z, n: n = tanh(x W_in^T + b_in + r*(h_prev W_hn^T + b_hn)),
 * h = (1-z)*n + z*h_prev. The reset gate multiplies the recurrent product, so the gradient
 * with respect to that product differs from the one with respect to the input projection. */
#include "charlm/cells.h"

static void gru_forward(float *gates, float *aux, float *h, float *c, const float *gh,
                        const float *b_hh, const float *h_prev, const float *c_prev, int B,
                        int H) {
    (void)c, (void)c_prev;
    for (int b = 0; b < B; b++) {
        float *gr = gates + (size_t)b * 3 * H, *gz = gr + H, *gn = gz + H;
        const float *rr = gh + (size_t)b * 3 * H, *rz = rr + H, *rn = rz + H;
        const float *br = b_hh, *bz = br + H, *bn = bz + H;
        const float *hp = h_prev + (size_t)b * H;
        float *hn = aux + (size_t)b * H, *hb = h + (size_t)b * H;
        #pragma GCC ivdep
        for (int j = 0; j < H; j++) {
            float r = cell_sigmoid(gr[j] + rr[j] + br[j]);
            float z = cell_sigmoid(gz[j] + rz[j] + bz[j]);
            float q = rn[j] + bn[j];
            float n = cell_tanh(gn[j] + r * q);
            gr[j] = r, gz[j] = z, gn[j] = n;
            hn[j] = q;
            hb[j] = (1.0f - z) * n + z * hp[j];
        }
    }
}

static void gru_backward(float *dgates, float *dgh, float *dh_prev, float *dc, const float *dh,
                         const float *gates, const float *aux, const float *h_prev,
                         const float *c_prev, const float *c, int B, int H) {
    (void)dc, (void)c_prev, (void)c;
    for (int b = 0; b < B; b++) {
        const float *gr = gates + (size_t)b * 3 * H, *gz = gr + H, *gn = gz + H;
        float *dr = dgates + (size_t)b * 3 * H, *dz = dr + H, *dn = dz + H;
        float *er = dgh + (size_t)b * 3 * H, *ez = er + H, *en = ez + H;
        const float *hn = aux + (size_t)b * H, *hp = h_prev + (size_t)b * H;
        const float *dhb = dh + (size_t)b * H;
        float *dhp = dh_prev + (size_t)b * H;
        #pragma GCC ivdep
        for (int j = 0; j < H; j++) {
            float r = gr[j], z = gz[j], n = gn[j], d = dhb[j];
            float da = d * (1.0f - z) * (1.0f - n * n); /* d loss / d (pre-tanh of n) */
            float dzz = d * (hp[j] - n) * z * (1.0f - z);
            float drr = da * hn[j] * r * (1.0f - r);
            dr[j] = drr, dz[j] = dzz, dn[j] = da;
            er[j] = drr, ez[j] = dzz, en[j] = da * r;
            dhp[j] = d * z;
        }
    }
}

const cell_ops_t cell_gru_ops = {.gates = 3, .has_c = 0, .has_aux = 1, .forward = gru_forward,
                                 .backward = gru_backward};
