/* optim: optimizers over the flat parameter buffer — SGD (+momentum), Adam, AdamW, RMSprop,
 * Adagrad with PyTorch's update rules — global-norm gradient clipping and the learning-rate
 * schedule. Moments use the parameter layout, so checkpoints store them by tensor name. */
#ifndef CHARLM_OPTIM_H
#define CHARLM_OPTIM_H

#include <stdint.h>

#include "charlm/config.h"

typedef struct {
    optim_kind_t kind;
    int64_t n;      /* floats in the parameter layout */
    int64_t step;   /* updates taken so far (Adam bias correction) */
    int nmoments;   /* 0, 1 or 2 */
    float *m;       /* (n) first moment / momentum buffer / square average / sum of squares */
    float *v;       /* (n) Adam's second moment */
    double beta1, beta2, eps, momentum, weight_decay;
} optim_t;

/* Allocates the moments the kind needs (zeroed). */
void optim_init(optim_t *o, const config_t *cfg, int64_t n);
void optim_free(optim_t *o);

/* Names of the moment buffers ("m", "v") for checkpoints; NULL past nmoments. */
const char *optim_moment_name(const optim_t *o, int i);
float *optim_moment(const optim_t *o, int i);

/* One update of params (n) from grads (n) at learning rate lr; increments o->step. */
void optim_step(float *params, optim_t *o, const float *grads, double lr);

/* Returns the global L2 norm of grads (n) (accumulated in double); when clip > 0 and the norm
 * exceeds it, scales grads by clip / norm. */
double optim_clip(float *grads, int64_t n, double clip);

/* The learning rate at update `step` (0-based) of `total` (0 = unknown) under cfg's schedule:
 * linear warm-up over optim.warmup steps, then constant, step (x decay_rate every decay_every)
 * or cosine from optim.lr down to optim.min_lr at `total`. */
double optim_lr(const config_t *cfg, int64_t step, int64_t total);

#endif
