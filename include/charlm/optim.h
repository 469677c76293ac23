/* optim: optimizers over the flat parameter buffer — SGD (+momentum), Adam, AdamW, RMSprop,
 * Adagrad with PyTorch's update rules — global-norm gradient clipping and the learning-rate
 * schedule. Moments use the parameter layout, so checkpoints store them by tensor name. */
#ifndef CHARLM_OPTIM_H
#define CHARLM_OPTIM_H

#include <stdint.h>

typedef enum { OPTIM_ADAM = 0, OPTIM_ADAMW, OPTIM_SGD, OPTIM_RMSPROP, OPTIM_ADAGRAD, OPTIM_KINDS } optim_kind_t;
typedef enum { SCHED_CONSTANT = 0, SCHED_STEP, SCHED_COSINE, SCHED_KINDS } sched_kind_t;
/* What the schedule anneals over: the steps of train.steps / train.epochs, or the fraction of
 * train.time_limit consumed. */
typedef enum { SCHED_OVER_STEPS = 0, SCHED_OVER_TIME, SCHED_OVERS } sched_over_t;

/* "adam", "adamw", "sgd", "rmsprop", "adagrad" and "constant", "step", "cosine": the names of the
 * kinds in config keys and checkpoints. */
extern const char *const optim_kind_names[OPTIM_KINDS];
extern const char *const sched_kind_names[SCHED_KINDS];
extern const char *const sched_over_names[SCHED_OVERS]; /* "steps", "time" */

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

/* The learning rate at update `step` when the schedule anneals over time: the warm-up still
 * counts steps; cosine then goes from lr to min_lr as `progress` (the fraction of the time budget
 * consumed, clamped to [0, 1]) goes from 0 to 1; constant and step are optim_lr's. */
double optim_lr_time(const sched_params_t *s, int64_t step, double progress);

/* ReduceLROnPlateau and early stopping on the validation loss (section [optim] and
 * train.early_stop): a validation improves when it is below best * (1 - threshold). After
 * `patience` validations in a row without improvement the learning rate's scale is multiplied by
 * factor (patience 0 = never); after early_stop of them (not reset by a reduction) the run
 * stops (0 = never). */
typedef struct {
    int64_t patience, early_stop;
    double factor, threshold;
} plateau_params_t;

/* The plateau state: saved in checkpoints so that a resume continues it. */
typedef struct {
    double scale;  /* multiplies the schedule's learning rate; starts at 1 */
    double best;   /* best validation loss so far; NAN = none yet */
    int64_t bad;   /* validations without improvement since the last improvement or reduction */
    int64_t stale; /* validations without improvement since the last improvement */
} plateau_t;

/* The state of a run that has not validated yet. */
plateau_t optim_plateau_start(void);

/* Takes validation loss `val` into *s; returns 1 when the run should stop early, else 0. */
int optim_plateau(plateau_t *s, const plateau_params_t *p, double val);

/* The exponential moving average of the parameters: ema (n) = decay * ema + (1 - decay) *
 * params (n), in float, element by element. */
void optim_ema(float *ema, const float *params, int64_t n, double decay);

/* norms (nregions): the L2 norm of grads over each region [bounds[i], bounds[i + 1]) of the
 * parameter layout, accumulated in double (bounds: nregions + 1 increasing offsets). */
void optim_norms(double *norms, const float *grads, const int64_t *bounds, int nregions);

#endif
