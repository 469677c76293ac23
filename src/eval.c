#include "charlm/eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "charlm/checkpoint.h"
#include "charlm/corpus.h"
#include "charlm/err.h"

enum { EVAL_T = 128 };

/* Dynamic evaluation's defaults (src/README.md §3): windows shorter than the static pass's, so
 * that the weights follow the text more closely, and a step size that improved the loss of the
 * models of README "charlm eval --dynamic". */
#define EVAL_DYN_SEQ 32
#define EVAL_DYN_LR 0.03

typedef struct {
    const char *ckpt;
    const char **texts; /* (ntexts) file, directory or glob each */
    int ntexts, json, skip_unknown, batch;
    int dynamic, dyn_seq, per_window;
    double dyn_lr, dyn_decay;
    int raw; /* --weights raw: the parameters, not their moving average */
} eval_args_t;

/* Parses the number after option k into *v: an integer in [lo, hi] when integer, else a finite
 * real in [lo, hi]. */
static int parse_number(double *v, const char *k, const char *s, double lo, double hi,
                        int integer) {
    char *end;
    *v = integer ? (double)strtol(s, &end, 10) : strtod(s, &end);
    if (*end || end == s || !isfinite(*v) || *v < lo || *v > hi)
        return err_set(CHARLM_EUSAGE, "eval: %s %s: expected %s in [%.15g, %.15g]", k, s,
                       integer ? "an integer" : "a number", lo, hi);
    return CHARLM_OK;
}

static int parse_args(eval_args_t *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->batch = 1;
    a->dyn_seq = EVAL_DYN_SEQ;
    a->dyn_lr = EVAL_DYN_LR;
    a->texts = (const char **)xcalloc((size_t)argc + 1, sizeof(char *));
    for (int i = 0; i < argc; i++) {
        const char *k = argv[i];
        double v = 0;
        int rc = CHARLM_OK, valued = i + 1 < argc;
        if (!strcmp(k, "--json")) {
            a->json = 1;
        } else if (!strcmp(k, "--dynamic")) {
            a->dynamic = 1;
        } else if (!strcmp(k, "--per-window")) {
            a->per_window = 1;
        } else if (!strcmp(k, "--unknown") && valued) {
            const char *s = argv[++i];
            if (strcmp(s, "skip") && strcmp(s, "error"))
                return err_set(CHARLM_EUSAGE, "eval: --unknown %s: expected skip or error", s);
            a->skip_unknown = !strcmp(s, "skip");
        } else if (!strcmp(k, "--weights") && valued) {
            const char *s = argv[++i];
            if (strcmp(s, "ema") && strcmp(s, "raw"))
                return err_set(CHARLM_EUSAGE, "eval: --weights %s: expected ema or raw", s);
            a->raw = !strcmp(s, "raw");
        } else if (!strcmp(k, "--batch") && valued) {
            rc = parse_number(&v, k, argv[++i], 1, 1 << 20, 1);
            a->batch = (int)v;
        } else if (!strcmp(k, "--dynamic-lr") && valued) {
            rc = parse_number(&a->dyn_lr, k, argv[++i], 0, 1e6, 0);
        } else if (!strcmp(k, "--dynamic-decay") && valued) {
            rc = parse_number(&a->dyn_decay, k, argv[++i], 0, 1, 0);
        } else if (!strcmp(k, "--dynamic-seq") && valued) {
            rc = parse_number(&v, k, argv[++i], 1, 1 << 16, 1);
            a->dyn_seq = (int)v;
        } else if (k[0] == '-') {
            return err_set(CHARLM_EUSAGE, "eval: unknown option '%s'", k);
        } else if (!a->ckpt) {
            a->ckpt = k;
        } else {
            a->texts[a->ntexts++] = k;
        }
        if (rc) return rc;
    }
    if (!a->ckpt || !a->ntexts)
        return err_set(CHARLM_EUSAGE, "eval: usage: charlm eval CKPT TEXT... [--json] "
                                      "[--unknown skip|error] [--batch B] [--weights ema|raw] "
                                      "[--dynamic [--dynamic-lr LR] [--dynamic-decay D] "
                                      "[--dynamic-seq T] [--per-window]]");
    if (a->per_window && !(a->dynamic && a->json))
        return err_set(CHARLM_EUSAGE, "eval: --per-window needs --dynamic and --json");
    return CHARLM_OK;
}

void eval_text_free(eval_text_t *t) {
    for (int i = 0; i < t->n; i++) corpus_src_close(&t->src[i]);
    free(t->src);
    vocab_free(&t->wide);
    free(t->to_model);
    memset(t, 0, sizeof *t);
}

int eval_text_open(eval_text_t *t, const char *const *specs, int n, int skip_unknown,
                   const vocab_t *model_vocab, const char *cmd, int rank) {
    memset(t, 0, sizeof *t);
    t->src = xcalloc((size_t)n, sizeof *t->src);
    uint64_t *seen = xcalloc(VOCAB_BITMAP_WORDS, sizeof(uint64_t));
    int rc = CHARLM_OK;
    for (; t->n < n && !rc; t->n++) {
        rc = corpus_src_open(&t->src[t->n], seen, specs[t->n], cmd, rank == 0);
        t->total += rc ? 0 : t->src[t->n].total;
    }
    if (rc) t->n--; /* the failed one holds nothing */
    uint32_t unknown = 0;
    int nunknown = 0;
    for (uint32_t w = 0; !rc && w < VOCAB_BITMAP_WORDS; w++)
        for (uint64_t bits = seen[w]; bits; bits &= bits - 1) {
            uint32_t cp = w * 64 + (uint32_t)__builtin_ctzll(bits);
            if (vocab_id(model_vocab, cp) < 0 && nunknown++ == 0) unknown = cp;
        }
    if (!rc && nunknown && !skip_unknown) {
        char ch[5];
        vocab_char_name(ch, unknown);
        rc = err_set(CHARLM_EINPUT,
                     "%s: %d character(s) of the text are not in the model's vocabulary, the "
                     "first '%s' (U+%04X) (--unknown skip drops them)",
                     cmd, nunknown, ch, (unsigned)unknown);
    }
    if (!rc) {
        for (int i = 0; i < model_vocab->size; i++) vocab_bitmap_set(seen, model_vocab->cps[i]);
        vocab_from_bitmap(&t->wide, seen);
        t->to_model = xcalloc((size_t)t->wide.size, sizeof(int32_t));
        for (int i = 0; i < t->wide.size; i++)
            t->to_model[i] = vocab_id(model_vocab, t->wide.cps[i]);
        for (int i = 0; i < t->n; i++) corpus_src_set_vocab(&t->src[i], &t->wide);
    }
    free(seen);
    return rc;
}

int eval_text_read(int32_t *ids /* (n) */, int64_t *kept, eval_text_t *t, int64_t first,
                   int64_t n) {
    int64_t done = 0, base = 0;
    for (int i = 0; i < t->n && done < n; base += t->src[i].total, i++) {
        int64_t lo = first + done - base;
        if (lo >= t->src[i].total) continue;
        int64_t k = t->src[i].total - lo < n - done ? t->src[i].total - lo : n - done;
        int rc = corpus_src_read(ids + done, &t->src[i], lo, k);
        if (rc) return rc;
        done += k;
    }
    *kept = 0;
    for (int64_t i = 0; i < n; i++)
        if (t->to_model[ids[i]] >= 0) ids[(*kept)++] = t->to_model[ids[i]];
    return CHARLM_OK;
}

/* What a scoring pass adds up. */
typedef struct {
    double loss[2];  /* summed loss: the checkpoint's weights, the adapted weights (--dynamic) */
    int64_t preds;
    int64_t nwin;    /* windows */
    double *win;     /* (nwin, 2) --per-window: the mean loss of each window, both ways */
} score_t;

/* One step of dynamic evaluation after a window has been scored (Krause et al. 2018): adapted +=
 * decay * (orig - adapted) - lr * grads, both terms of the weights before the step, orig being
 * the checkpoint's. */
static void dynamic_step(float *adapted /* (n) */, const float *grads /* (n) */,
                         const float *orig /* (n) */, double lr, double decay, int64_t n) {
    const float l = (float)lr, k = (float)decay;
    for (int64_t i = 0; i < n; i++) adapted[i] += k * (orig[i] - adapted[i]) - l * grads[i];
}

/* Scores the predictions of ids (n), cut into B contiguous streams carried through windows of T
 * steps from a zero state, into s. With adapted (a copy of m), also under dynamic evaluation:
 * each window is scored by adapted first, and only then is adapted moved by one SGD step on the
 * gradient of that window's mean loss, so no prediction is scored by weights that have seen it.
 * With win, s->win gets the windows' mean losses (allocated: the caller frees it). */
static void score(score_t *s, const model_t *m, model_t *adapted, const eval_args_t *ea,
                  const int32_t *ids, int64_t n, int T, int win) {
    const int B = ea->batch;
    model_acts_t a;
    model_acts_alloc(&a, m, B, T, 0);
    size_t nstate = (size_t)m->d.layers * B * m->d.H;
    float *h[2], *c[2];
    for (int i = 0; i < 2; i++)
        h[i] = xcalloc(nstate, sizeof(float)), c[i] = xcalloc(nstate, sizeof(float));
    float *grads = adapted ? xcalloc((size_t)m->nparams, sizeof(float)) : NULL;
    int64_t preds = n > 0 ? n - 1 : 0, per = preds / B, extra = preds % B;
    int64_t steps = per + (extra > 0);
    memset(s, 0, sizeof *s);
    s->preds = preds;
    s->nwin = (steps + T - 1) / T;
    s->win = win ? xcalloc((size_t)s->nwin * 2, sizeof(double)) : NULL;
    for (int64_t pos = 0, w = 0; pos < steps; pos += T, w++) {
        int64_t left = steps - pos, scored = 0;
        int t_len = (int)(left < T ? left : T);
        for (int b = 0; b < B; b++) {
            int64_t start = b * per + (b < extra ? b : extra), len = per + (b < extra);
            for (int t = 0; t < t_len; t++) {
                int64_t i = pos + t;
                a.inputs[t * B + b] = i < len ? ids[start + i] : 0;
                a.targets[t * B + b] = i < len ? ids[start + i + 1] : -1;
                scored += i < len;
            }
        }
        double l[2] = {model_forward(&a, h[0], m->ops->has_c ? c[0] : NULL, m, t_len, NULL, 1.0f,
                                     0), 0.0};
        if (adapted) {
            l[1] = model_forward(&a, h[1], m->ops->has_c ? c[1] : NULL, adapted, t_len, NULL,
                                 1.0f / (float)scored, 1);
            model_backward(grads, &a, adapted, t_len, NULL);
            dynamic_step(adapted->params, grads, m->params, ea->dyn_lr, ea->dyn_decay,
                         m->nparams);
        }
        for (int i = 0; i < 2; i++) {
            s->loss[i] += l[i];
            if (s->win) s->win[2 * w + i] = l[i] / (double)scored;
        }
    }
    for (int i = 0; i < 2; i++) free(h[i]), free(c[i]);
    free(grads);
    model_acts_free(&a);
}

/* Prints the result of the whole text (sums reduced over the ranks: loss[0], loss[1], preds) on
 * rank 0, as text or JSON; win holds rank 0's windows. */
static void report(const eval_args_t *a, const double *sums, int64_t chars, const score_t *s,
                   int T) {
    const double loss = sums[0] / sums[2], dyn = sums[1] / sums[2], ln2 = log(2.0);
    if (a->json) {
        printf("{\"loss\":%.9g,\"bpc\":%.9g,\"perplexity\":%.9g,\"chars\":%lld,"
               "\"predictions\":%lld",
               loss, loss / ln2, exp(loss), (long long)chars, (long long)sums[2]);
        if (a->dynamic) {
            printf(",\"dynamic\":{\"loss\":%.9g,\"bpc\":%.9g,\"perplexity\":%.9g,\"lr\":%.9g,"
                   "\"decay\":%.9g,\"seq\":%d}",
                   dyn, dyn / ln2, exp(dyn), a->dyn_lr, a->dyn_decay, T);
        }
        for (int i = 0; s->win && i < 2; i++) {
            printf(",\"%s\":[", i ? "window_dynamic" : "window_static");
            for (int64_t w = 0; w < s->nwin; w++)
                printf("%s%.9g", w ? "," : "", s->win[2 * w + i]);
            printf("]");
        }
        printf("}\n");
        return;
    }
    printf("loss %.6f nats/char, %.6f bits/char, perplexity %.4f over %lld characters "
           "(%lld predictions)\n",
           loss, loss / ln2, exp(loss), (long long)chars, (long long)sums[2]);
    if (a->dynamic)
        printf("dynamic loss %.6f nats/char, %.6f bits/char, perplexity %.4f (SGD lr %g, decay "
               "%g, windows of %d)\n",
               dyn, dyn / ln2, exp(dyn), a->dyn_lr, a->dyn_decay, T);
}

static int run(const eval_args_t *a, const dist_t *d) {
    ckpt_t ck;
    int rc = ckpt_read(&ck, a->ckpt);
    if ((rc = dist_agree(d, rc))) return rc;
    if (a->raw) ckpt_drop_ema(&ck);
    eval_text_t t;
    rc = eval_text_open(&t, a->texts, a->ntexts, a->skip_unknown, &ck.vocab, "eval", d->rank);
    if (!rc && t.total < 2)
        rc = err_set(CHARLM_EINPUT, "eval: the text has %lld character(s); at least 2 are needed",
                     (long long)t.total);
    if ((rc = dist_agree(d, rc))) {
        eval_text_free(&t);
        ckpt_free(&ck);
        return rc;
    }
    /* rank r scores predictions [r (N-1)/P, (r+1) (N-1)/P): characters up to one past that */
    int64_t preds = t.total - 1;
    int64_t lo = preds * d->rank / d->size, hi = preds * (d->rank + 1) / d->size;
    int64_t n = hi - lo + 1, kept = 0;
    const int T = a->dynamic ? a->dyn_seq : EVAL_T;
    /* the windows of --batch streams, the model's copies (with --dynamic the adapted one and its
     * gradient too) and the ids, before any is allocated */
    const double copies = a->dynamic ? 3.0 : 1.0;
    rc = dist_agree(d, model_window_fits(&ck.info.dims, a->batch, T,
                                         4.0 * (copies * model_nparams(&ck.info.dims) +
                                                (double)n),
                                         d->local_size, "eval: --batch"));
    if (rc) {
        eval_text_free(&t);
        ckpt_free(&ck);
        return rc;
    }
    int32_t *ids = xcalloc((size_t)n, sizeof(int32_t));
    rc = dist_agree(d, eval_text_read(ids, &kept, &t, lo, n));
    if (!rc) {
        model_t m, adapted;
        ckpt_model(&m, &ck);
        if (a->dynamic) ckpt_model(&adapted, &ck);
        score_t s;
        score(&s, &m, a->dynamic ? &adapted : NULL, a, ids, kept, T,
              a->per_window && d->rank == 0);
        double sums[3] = {s.loss[0], s.loss[1], (double)s.preds};
        dist_sum_doubles(sums, 3);
        if (d->rank == 0) report(a, sums, t.total, &s, T);
        free(s.win);
        if (a->dynamic) model_free(&adapted);
        model_free(&m);
    }
    free(ids);
    eval_text_free(&t);
    ckpt_free(&ck);
    return rc;
}

int eval_main(int argc, char **argv, const dist_t *d) {
    eval_args_t a;
    int rc = dist_agree(d, parse_args(&a, argc, argv));
    dist_blas_threads(d);
    if (!rc) rc = run(&a, d);
    free((void *)a.texts);
    return rc;
}
