/* gradflow: `charlm gradflow CKPT --corpus TEXT...` — how far back in time the gradient of one
 * step's loss reaches (src/README.md §3 "Gradient flow"): the mean norm ||dL_t / dh_{t-k}|| of the
 * gradient of the loss at step t with respect to each layer's hidden state k steps earlier, for
 * k = 0 .. K, over windows of real text. K may exceed the window length the model was trained
 * with: the measurement back-propagates through K + 1 steps whatever train.seq was. */
#ifndef CHARLM_GRADFLOW_H
#define CHARLM_GRADFLOW_H

#include "charlm/dist.h"

/* Arguments after "gradflow". The text is cut into S = P x --batch contiguous streams (rank r
 * holds streams r*B .. r*B+B-1), each read in --windows windows of K + 1 steps with the state
 * carried from one to the next; the sums are reduced over the ranks. Prints the table on rank 0
 * and, with --json FILE, writes it there. Returns the agreed exit status. */
int gradflow_main(int argc, char **argv, const dist_t *d);

#endif
