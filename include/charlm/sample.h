/* sample: text generation from a model, one character at a time, streamed as UTF-8. */
#ifndef CHARLM_SAMPLE_H
#define CHARLM_SAMPLE_H

#include <stdint.h>
#include <stdio.h>

#include "charlm/model.h"
#include "charlm/vocab.h"

/* Writes `length` characters drawn at `temperature` (0 = greedy) to out, flushing as it goes,
 * after feeding the model the ids of prime (n_prime >= 1; the prime itself is not written).
 * Draws come from the counter-based generator keyed by seed, so output is reproducible. */
void sample_text(FILE *out, const model_t *m, const vocab_t *v, const int32_t *prime,
                 int n_prime, int length, double temperature, uint64_t seed);

#endif
