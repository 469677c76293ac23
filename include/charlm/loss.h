/* loss: fused softmax cross-entropy over rows of logits. */
#ifndef CHARLM_LOSS_H
#define CHARLM_LOSS_H

#include <stdint.h>

/* Returns the sum over rows with targets[i] >= 0 of -log softmax(logits[i])[targets[i]]
 * (accumulated in double). When grad is set, overwrites logits with the gradient of
 * scale * that sum: scale * (softmax - onehot), and zero for ignored rows. */
double loss_softmax_xent(float *logits /* (N, V) */, const int32_t *targets /* (N) */, int64_t N,
                         int V, float scale, int grad);

#endif
