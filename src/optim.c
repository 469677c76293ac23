#include "charlm/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "charlm/err.h"

const char *const optim_kind_names[OPTIM_KINDS] = {"adam", "adamw", "sgd", "rmsprop", "adagrad"};
const char *const sched_kind_names[SCHED_KINDS] = {"constant", "step", "cosine"};
const char *const sched_over_names[SCHED_OVERS] = {"steps", "time"};

const char *optim_kind_name(optim_kind_t k) {
    return err_enum_name(optim_kind_names, OPTIM_KINDS, (int)k);
}

const char *sched_kind_name(sched_kind_t k) {
    return err_enum_name(sched_kind_names, SCHED_KINDS, (int)k);
}

int optim_kind_value(const char *s) { return err_enum_value(optim_kind_names, OPTIM_KINDS, s); }

int optim_nmoments(const optim_params_t *p) {
    switch (p->kind) {
    case OPTIM_ADAM:
    case OPTIM_ADAMW: return 2;
    case OPTIM_SGD: return p->momentum > 0 ? 1 : 0;
    case OPTIM_RMSPROP:
    case OPTIM_ADAGRAD: return 1;
    case OPTIM_KINDS: break;
    }
    err_abort(__FILE__, __LINE__, "unknown optimizer kind");
}

void optim_init(optim_t *o, const optim_params_t *p, int64_t n) {
    memset(o, 0, sizeof *o);
    o->p = *p;
    o->n = n;
    o->nmoments = optim_nmoments(p);
    if (o->nmoments >= 1) o->m = xcalloc((size_t)n, sizeof(float));
    if (o->nmoments >= 2) o->v = xcalloc((size_t)n, sizeof(float));
}

void optim_free(optim_t *o) {
    free(o->m);
    free(o->v);
    memset(o, 0, sizeof *o);
}

const char *optim_moment_name(optim_kind_t k, int i) {
    /* PyTorch's keys of optimizer.state[param], so that each buffer maps onto torch.optim's */
    static const char *const names[OPTIM_KINDS][OPTIM_MAX_MOMENTS] = {
        [OPTIM_ADAM] = {"exp_avg", "exp_avg_sq"},
        [OPTIM_ADAMW] = {"exp_avg", "exp_avg_sq"},
        [OPTIM_SGD] = {"momentum_buffer"},
        [OPTIM_RMSPROP] = {"square_avg"},
        [OPTIM_ADAGRAD] = {"sum"},
    };
    return (unsigned)k < OPTIM_KINDS && i >= 0 && i < OPTIM_MAX_MOMENTS ? names[k][i] : NULL;
}

float *optim_moment(const optim_t *o, int i) { return i == 0 ? o->m : i == 1 ? o->v : NULL; }

/* Bit 31 set when x is an infinity or NaN (its exponent all ones: adding one to the exponent
 * carries into the sign bit). ORed over a loop it vectorises, where isfinite() would not. */
static inline uint32_t nonfinite(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x7f800000u) + 0x00800000u;
}

int optim_step(float *params, optim_t *o, const float *grads, double lr) {
    const int64_t n = o->n;
    const optim_params_t *op = &o->p;
    const float wd = (float)op->weight_decay, flr = (float)lr;
    float *restrict p = params, *restrict m = o->m, *restrict v = o->v;
    const float *restrict g = grads;
    /* a moment that is infinite can leave the parameter finite (Adam's and RMSprop's
     * denominators), so the moments are checked too */
    uint32_t bad = 0;
    o->step++;
    switch (op->kind) {
    case OPTIM_ADAM:
    case OPTIM_ADAMW: {
        /* 1 - beta rounded once from the double, as PyTorch does: 1.0f - (float)0.999 is off by
         * 1.3e-5 relative, and every update with it */
        const float b1 = (float)op->beta1, b2 = (float)op->beta2, eps = (float)op->eps;
        const float c1 = (float)(1.0 - op->beta1), c2 = (float)(1.0 - op->beta2);
        const double bc1 = 1.0 - pow(op->beta1, (double)o->step);
        const double bc2 = 1.0 - pow(op->beta2, (double)o->step);
        const float step_size = (float)(lr / bc1), inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
        /* L2 decay folds into the gradient (Adam), decoupled decay shrinks the weight (AdamW) */
        const float l2 = op->kind == OPTIM_ADAM ? wd : 0.0f;
        const float shrink = op->kind == OPTIM_ADAMW ? 1.0f - flr * wd : 1.0f;
        for (int64_t i = 0; i < n; i++) {
            float gi = g[i] + l2 * p[i];
            float mi = m[i] = b1 * m[i] + c1 * gi;
            float vi = v[i] = b2 * v[i] + c2 * gi * gi;
            float pi = p[i] = shrink * p[i] - step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
            bad |= nonfinite(pi) | nonfinite(vi); /* an infinite mi makes pi so */
        }
        break;
    }
    case OPTIM_SGD: {
        const float mu = (float)op->momentum;
        const int first = o->step == 1; /* the first buffer is the gradient itself */
        for (int64_t i = 0; i < n; i++) {
            float gi = g[i] + wd * p[i];
            if (m) gi = m[i] = first ? gi : mu * m[i] + gi;
            float pi = p[i] -= flr * gi; /* an infinite buffer makes the parameter so */
            bad |= nonfinite(pi);
        }
        break;
    }
    case OPTIM_RMSPROP: {
        /* PyTorch's alpha (smoothing constant) is optim.beta2 here */
        const float a = (float)op->beta2, ca = (float)(1.0 - op->beta2), eps = (float)op->eps;
        for (int64_t i = 0; i < n; i++) {
            float gi = g[i] + wd * p[i];
            float s = m[i] = a * m[i] + ca * gi * gi;
            float pi = p[i] -= flr * gi / (sqrtf(s) + eps);
            bad |= nonfinite(pi) | nonfinite(s);
        }
        break;
    }
    case OPTIM_ADAGRAD: {
        const float eps = (float)op->eps;
        for (int64_t i = 0; i < n; i++) {
            float gi = g[i] + wd * p[i];
            float s = m[i] += gi * gi;
            float pi = p[i] -= flr * gi / (sqrtf(s) + eps);
            bad |= nonfinite(pi) | nonfinite(s);
        }
        break;
    }
    case OPTIM_KINDS: err_abort(__FILE__, __LINE__, "unknown optimizer kind");
    }
    return !(bad >> 31);
}

/* The sum of squares of x (n), in double: eight partial sums in a fixed order, vectorised, and
 * the same result on every run. */
static double sum_squares(const float *x, int64_t n) {
    double part[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) part[k] += (double)x[i + k] * x[i + k];
    double ss = 0.0;
    for (; i < n; i++) ss += (double)x[i] * x[i];
    for (int k = 0; k < 8; k++) ss += part[k];
    return ss;
}

double optim_clip(float *grads, int64_t n, double clip) {
    double norm = sqrt(sum_squares(grads, n));
    if (clip > 0.0 && norm > clip) {
        float s = (float)(clip / (norm + 1e-6));
        for (int64_t i = 0; i < n; i++) grads[i] *= s;
    }
    return norm;
}

/* Cosine from lr (p = 0) to min_lr (p >= 1). */
static double cosine(const sched_params_t *s, double p) {
    if (p > 1.0) p = 1.0;
    return s->min_lr + 0.5 * (s->lr - s->min_lr) * (1.0 + cos(3.141592653589793 * p));
}

double optim_lr(const sched_params_t *s, int64_t step, int64_t total) {
    if (s->warmup > 0 && step < s->warmup) return s->lr * (double)(step + 1) / (double)s->warmup;
    switch (s->kind) {
    case SCHED_CONSTANT: return s->lr;
    case SCHED_STEP: return s->lr * pow(s->decay_rate, (double)(step / s->decay_every));
    case SCHED_COSINE: {
        int64_t span = total - s->warmup;
        if (total <= 0 || span <= 0) return s->lr;
        return cosine(s, (double)(step - s->warmup) / (double)span);
    }
    case SCHED_KINDS: break;
    }
    err_abort(__FILE__, __LINE__, "unknown schedule");
}

double optim_lr_time(const sched_params_t *s, int64_t step, double progress) {
    if (s->kind != SCHED_COSINE || (s->warmup > 0 && step < s->warmup))
        return optim_lr(s, step, 0);
    return cosine(s, progress < 0.0 ? 0.0 : progress);
}

plateau_t optim_plateau_start(void) { return (plateau_t){.scale = 1.0, .best = NAN}; }

int optim_plateau(plateau_t *s, const plateau_params_t *p, double val) {
    if (isnan(s->best) || val < s->best * (1.0 - p->threshold)) {
        s->best = val;
        s->bad = s->stale = 0;
        return 0;
    }
    s->stale++;
    if (p->patience > 0 && ++s->bad >= p->patience) {
        s->scale *= p->factor;
        s->bad = 0;
    }
    return p->early_stop > 0 && s->stale >= p->early_stop;
}

void optim_ema(float *ema, const float *params, int64_t n, double decay) {
    const float d = (float)decay, c = (float)(1.0 - decay);
    float *restrict e = ema;
    const float *restrict p = params;
    for (int64_t i = 0; i < n; i++) e[i] = d * e[i] + c * p[i];
}

void optim_norms(double *norms, const float *grads, const int64_t *bounds, int nregions) {
    for (int r = 0; r < nregions; r++)
        norms[r] = sqrt(sum_squares(grads + bounds[r], bounds[r + 1] - bounds[r]));
}
