/* eval: `charlm eval CKPT TEXT...` — the loss of a trained model on a text, in nats/char,
 * bits/char and perplexity, with the hidden state carried through the text; with --dynamic also
 * the loss under dynamic evaluation (src/README.md §3). Also the reading of a text under a
 * model's vocabulary that the other commands scoring a text (gradflow) share. */
#ifndef CHARLM_EVAL_H
#define CHARLM_EVAL_H

#include <stdint.h>

#include "charlm/corpus.h"
#include "charlm/dist.h"
#include "charlm/vocab.h"

/* Arguments after "eval". Under P ranks the text is cut into P contiguous pieces (neighbours
 * share one character, so every prediction is scored once), each rank carries its state through
 * its piece in `--batch` streams, and the sums are reduced. With --dynamic each rank adapts its
 * own copy of the weights on its own piece. Returns the agreed exit status. */
int eval_main(int argc, char **argv, const dist_t *d);

/* A text resolved under a model's vocabulary: the sources in order, and a vocabulary holding the
 * model's characters and every character of the text, with the map from its ids to the model's
 * (-1: unknown). */
typedef struct {
    corpus_src_t *src; /* (n) */
    int n;
    int64_t total;     /* characters of all sources */
    vocab_t wide;
    int32_t *to_model; /* (wide.size) */
} eval_text_t;

/* Opens the n specs (file, directory or glob each) as one text for a model of vocabulary
 * model_vocab. A character outside it is an error (CHARLM_EINPUT: "CMD: K character(s) of the
 * text are not in the model's vocabulary, the first ..."), unless skip_unknown: then
 * eval_text_read drops them. Errors of opening name the file (corpus_src_open). t is always
 * initialised: eval_text_free it. */
int eval_text_open(eval_text_t *t, const char *const *specs, int n, int skip_unknown,
                   const vocab_t *model_vocab, const char *cmd, int rank);

/* Model ids of characters [first, first+n) of the text, unknown ones dropped: *kept of them are
 * written to ids. Returns CHARLM_OK or the error of the read (naming the file). */
int eval_text_read(int32_t *ids /* (n) */, int64_t *kept, eval_text_t *t, int64_t first,
                   int64_t n);

void eval_text_free(eval_text_t *t);

#endif
