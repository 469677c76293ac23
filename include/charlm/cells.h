/* cells: the element-wise step kernels of the recurrent cells (DESIGN.md §3), one file each
 * (cell_rnn.c, cell_lstm.c, cell_gru.c), behind one interface. The matrix products are the
 * model's: per step it computes gh = h_prev W_hh^T (B, G*H) with one GEMM and hands it here with
 * the input projection `gates` = x W_ih^T + b_ih; a kernel fuses bias, non-linearities and the
 * state update in one pass. Gate order as PyTorch: LSTM i, f, g, o; GRU r, z, n. */
#ifndef CHARLM_CELLS_H
#define CHARLM_CELLS_H

#include "charlm/config.h"

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
} cell_ops_t;

/* The kernels of cell kind k (static storage). */
const cell_ops_t *cell_ops(cell_kind_t k);

extern const cell_ops_t cell_rnn_ops, cell_lstm_ops, cell_gru_ops;

static inline float cell_sigmoid(float x) { return 1.0f / (1.0f + __builtin_expf(-x)); }

#endif
