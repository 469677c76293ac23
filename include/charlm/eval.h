/* eval: `charlm eval CKPT TEXT...` — the loss of a trained model on a text, in nats/char,
 * bits/char and perplexity, with the hidden state carried through the text. */
#ifndef CHARLM_EVAL_H
#define CHARLM_EVAL_H

#include "charlm/dist.h"

/* Arguments after "eval". Under P ranks the text is cut into P contiguous pieces (neighbours
 * share one character, so every prediction is scored once), each rank carries its state through
 * its piece in `--batch` streams, and the sums are reduced. Returns the agreed exit status. */
int eval_main(int argc, char **argv, const dist_t *d);

#endif
