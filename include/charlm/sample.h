/* sample: text generation from a model, one character at a time, streamed as UTF-8 —
 * temperature, top-k and top-p (nucleus) sampling with the counter-based generator, so that the
 * same checkpoint, options and seed give the same text byte for byte — and `charlm sample`, which
 * adds beam search (src/README.md §3), an interactive mode (a prime per line of stdin) and JSON
 * output with the log-probabilities of the prime and of what was generated. */
#ifndef CHARLM_SAMPLE_H
#define CHARLM_SAMPLE_H

#include <stdint.h>
#include <stdio.h>

#include "charlm/dist.h"
#include "charlm/model.h"
#include "charlm/vocab.h"

typedef struct {
    int64_t length;     /* characters to generate */
    double temperature; /* 0 = greedy (argmax) */
    int top_k;          /* keep the k most likely characters; 0 = all */
    double top_p;       /* keep the smallest set whose probability reaches p; 1 = all */
    uint64_t seed;
    uint64_t index;     /* which sample of a series: part of the random key */
} sample_opts_t;

/* Feeds the model the ids of prime (n_prime >= 1; not written) from a zero state, then writes
 * o->length generated characters to out as UTF-8, flushing after each. */
void sample_text(FILE *out, const model_t *m, const vocab_t *v, const int32_t *prime,
                 int64_t n_prime, const sample_opts_t *o);

/* `charlm sample CKPT [options]` (arguments after "sample"). Runs on rank 0; returns the agreed
 * exit status. */
int sample_main(int argc, char **argv, const dist_t *d);

#endif
