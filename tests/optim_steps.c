/* optim_steps: a helper of test_optim_torch.py (not a test itself). Runs STEPS updates of one
 * optimizer and learning-rate schedule on a parameter vector, as train.c does at every window:
 * optim_clip on the gradients, lr = optim_lr(schedule, step, total) with step 0-based, then
 * optim_step. Writes the parameters after every update, for comparison with torch.optim.
 *
 *   optim_steps IN OUT n=N steps=STEPS [KEY=VALUE ...]
 *
 * Keys (default in brackets): kind=adam|adamw|sgd|rmsprop|adagrad [adam], lr [0.01],
 * beta1 [0.9], beta2 [0.999], eps [1e-8], momentum [0], weight_decay [0], clip [0 = off],
 * schedule=constant|step|cosine [constant], warmup [0], decay_every [0], decay_rate [0.5],
 * min_lr [0], total [steps; 0 = unknown].
 *
 * IN: float32 (native byte order), the N initial parameters followed by STEPS x N gradients.
 * OUT: for every update, float64 lr, float64 gradient norm (optim_clip's return, before
 * clipping), then the N float32 parameters after the update.
 * Exit status 0, or 1 with one message on stderr. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "charlm/err.h"
#include "charlm/optim.h"

static _Noreturn void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("optim_steps: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static double parse_num(const char *key, const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno) die("%s = '%s': expected a number", key, s);
    return v;
}

static int parse_name(const char *key, const char *s, const char *const *names, int n) {
    for (int k = 0; k < n; k++)
        if (!strcmp(names[k], s)) return k;
    die("%s = '%s': not a known name", key, s);
}

int main(int argc, char **argv) {
    if (argc < 3) die("usage: optim_steps IN OUT n=N steps=STEPS [KEY=VALUE ...]");
    optim_params_t op = {.kind = OPTIM_ADAM, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    sched_params_t sp = {.kind = SCHED_CONSTANT, .lr = 0.01, .decay_rate = 0.5};
    double n = 0, steps = 0, clip = 0, total = -1, warmup = 0, decay_every = 0;
    const struct {
        const char *key;
        double *v;
    } nums[] = {
        {"n", &n},
        {"steps", &steps},
        {"lr", &sp.lr},
        {"beta1", &op.beta1},
        {"beta2", &op.beta2},
        {"eps", &op.eps},
        {"momentum", &op.momentum},
        {"weight_decay", &op.weight_decay},
        {"clip", &clip},
        {"warmup", &warmup},
        {"decay_every", &decay_every},
        {"decay_rate", &sp.decay_rate},
        {"min_lr", &sp.min_lr},
        {"total", &total},
    };
    for (int a = 3; a < argc; a++) {
        char *eq = strchr(argv[a], '=');
        if (!eq) die("argument '%s': expected KEY=VALUE", argv[a]);
        *eq = '\0';
        const char *key = argv[a], *val = eq + 1;
        size_t k = 0, nk = sizeof nums / sizeof *nums;
        while (k < nk && strcmp(nums[k].key, key)) k++;
        if (k < nk)
            *nums[k].v = parse_num(key, val);
        else if (!strcmp(key, "kind"))
            op.kind = (optim_kind_t)parse_name(key, val, optim_kind_names, OPTIM_KINDS);
        else if (!strcmp(key, "schedule"))
            sp.kind = (sched_kind_t)parse_name(key, val, sched_kind_names, SCHED_KINDS);
        else
            die("unknown key '%s'", key);
    }
    if (n < 1 || steps < 1) die("n and steps must be at least 1");
    const int64_t N = (int64_t)n, S = (int64_t)steps;
    sp.warmup = (int64_t)warmup, sp.decay_every = (int64_t)decay_every;
    if (total < 0) total = steps;

    FILE *in = fopen(argv[1], "rb");
    if (!in) die("cannot read %s: %s", argv[1], strerror(errno));
    float *params = xcalloc((size_t)N, sizeof(float));         /* (N) */
    float *grads = xcalloc((size_t)(S * N), sizeof(float));    /* (STEPS, N) */
    if (fread(params, sizeof(float), (size_t)N, in) != (size_t)N ||
        fread(grads, sizeof(float), (size_t)(S * N), in) != (size_t)(S * N) || fgetc(in) != EOF)
        die("%s: expected exactly (1 + steps) x n float32 values", argv[1]);
    fclose(in);
    FILE *out = fopen(argv[2], "wb");
    if (!out) die("cannot write %s: %s", argv[2], strerror(errno));

    optim_t o;
    optim_init(&o, &op, N);
    for (int64_t s = 0; s < S; s++) {
        float *g = grads + s * N;
        double norm = optim_clip(g, N, clip), lr = optim_lr(&sp, s, (int64_t)total);
        optim_step(params, &o, g, lr);
        const double rec[2] = {lr, norm};
        if (fwrite(rec, sizeof(double), 2, out) != 2 ||
            fwrite(params, sizeof(float), (size_t)N, out) != (size_t)N)
            die("cannot write %s: %s", argv[2], strerror(errno));
    }
    if (fclose(out) != 0) die("cannot write %s: %s", argv[2], strerror(errno));
    optim_free(&o);
    free(grads), free(params);
    return 0;
}
