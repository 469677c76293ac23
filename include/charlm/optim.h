/* optim: optimizers over the flat parameter buffer — SGD (+momentum), Adam, AdamW, RMSprop,
 * Adagrad with PyTorch's update rules — global-norm gradient clipping and the learning-rate
 * schedule. Moments use the parameter layout, so checkpoints store them by tensor name. */
#ifndef CHARLM_OPTIM_H
#define CHARLM_OPTIM_H

#include <stdint.h>

typedef enum { OPTIM_ADAM = 0, OPTIM_ADAMW, OPTIM_SGD, OPTIM_RMSPROP, OPTIM_ADAGRAD, OPTIM_KINDS } optim_kind_t;
typedef enum { SCHED_CONSTANT = 0, SCHED_STEP, SCHED_COSINE, SCHED_KINDS } sched_kind_t;

/* "adam", "adamw", "sgd", "rmsprop", "adagrad" and "constant", "step", "cosine": the names of the
 * kinds in config keys and checkpoints. */
extern const char *const optim_kind_names[OPTIM_KINDS];
extern const char *const sched_kind_names[SCHED_KINDS];

/* The name of a kind ("?" when it is not one); the kind named s, or -1 when none is. */
const char *optim_kind_name(optim_kind_t k);
const char *sched_kind_name(sched_kind_t k);
int optim_kind_value(const char *s);

#define OPTIM_MAX_MOMENTS 2

/* The optimizer's constants (section [optim] of the configuration). */
typedef struct {
    optim_kind_t kind;
    double beta1, beta2, eps; /* Adam's; RMSprop's smoothing constant is beta2 */
    double momentum;          /* SGD; 0 = plain SGD */
    double weight_decay;      /* L2, decoupled for AdamW */
} optim_params_t;

/* The learning-rate schedule: linear warm-up over `warmup` steps, then constant, step
 * (x decay_rate every decay_every steps) or cosine from lr down to min_lr at the last step. */
typedef struct {
    sched_kind_t kind;
    double lr, decay_rate, min_lr;
    int64_t warmup, decay_every;
} sched_params_t;

typedef struct {
    optim_params_t p;
    int64_t n;      /* floats in the parameter layout */
    int64_t step;   /* updates taken so far (Adam bias correction) */
    int nmoments;   /* 0 .. OPTIM_MAX_MOMENTS */
    float *m;       /* (n) first moment / momentum buffer / square average / sum of squares */
    float *v;       /* (n) Adam's second moment */
} optim_t;

/* The number of moment buffers optimizer p keeps (0, 1 or 2). */
int optim_nmoments(const optim_params_t *p);

/* Allocates the moments p's kind needs (zeroed); o owns them (optim_free). */
void optim_init(optim_t *o, const optim_params_t *p, int64_t n);
void optim_free(optim_t *o);

/* The name of moment buffer i of an optimizer of kind k, as checkpoints store it: PyTorch's
 * state key ("exp_avg", "exp_avg_sq" for adam and adamw, "momentum_buffer" for sgd, "square_avg"
 * for rmsprop, "sum" for adagrad); NULL past the kind's buffers (sgd has its one even when its
 * momentum is 0 and it keeps none). */
const char *optim_moment_name(optim_kind_t k, int i);
/* Moment buffer i of o (n floats, parameter layout), NULL past o->nmoments. */
float *optim_moment(const optim_t *o, int i);

/* One update of params (n) from grads (n) at learning rate lr; increments o->step. Returns 1
 * when every parameter and moment it wrote is finite, 0 when one is an infinity or NaN: the
 * check is folded into the update's one pass over the buffers, so it reads nothing more. */
int optim_step(float *params, optim_t *o, const float *grads, double lr);

/* Returns the global L2 norm of grads (n) (accumulated in double); when clip > 0 and the norm
 * exceeds it, scales grads by clip / norm. */
double optim_clip(float *grads, int64_t n, double clip);

/* The learning rate at update `step` (0-based) of `total` (0 = unknown) under schedule s. */
double optim_lr(const sched_params_t *s, int64_t step, int64_t total);

#endif
