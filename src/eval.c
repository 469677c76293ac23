#include "charlm/eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "charlm/checkpoint.h"
#include "charlm/corpus.h"
#include "charlm/err.h"

enum { EVAL_T = 128 };

typedef struct {
    const char *ckpt;
    const char **texts; /* (ntexts) file, directory or glob each */
    int ntexts, json, skip_unknown, batch;
    int raw; /* --weights raw: the parameters, not their moving average */
} eval_args_t;

static int parse_args(eval_args_t *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->batch = 1;
    a->texts = (const char **)xcalloc((size_t)argc + 1, sizeof(char *));
    for (int i = 0; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "--json")) {
            a->json = 1;
        } else if (!strcmp(k, "--unknown") && i + 1 < argc) {
            const char *v = argv[++i];
            if (strcmp(v, "skip") && strcmp(v, "error"))
                return err_set(CHARLM_EUSAGE, "eval: --unknown %s: expected skip or error", v);
            a->skip_unknown = !strcmp(v, "skip");
        } else if (!strcmp(k, "--weights") && i + 1 < argc) {
            const char *v = argv[++i];
            if (strcmp(v, "ema") && strcmp(v, "raw"))
                return err_set(CHARLM_EUSAGE, "eval: --weights %s: expected ema or raw", v);
            a->raw = !strcmp(v, "raw");
        } else if (!strcmp(k, "--batch") && i + 1 < argc) {
            char *end;
            long b = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || b < 1 || b > 1 << 20)
                return err_set(CHARLM_EUSAGE, "eval: --batch %s: expected an integer in [1, %d]",
                               argv[i], 1 << 20);
            a->batch = (int)b;
        } else if (k[0] == '-') {
            return err_set(CHARLM_EUSAGE, "eval: unknown option '%s'", k);
        } else if (!a->ckpt) {
            a->ckpt = k;
        } else {
            a->texts[a->ntexts++] = k;
        }
    }
    if (!a->ckpt || !a->ntexts)
        return err_set(CHARLM_EUSAGE, "eval: usage: charlm eval CKPT TEXT... [--json] "
                                      "[--unknown skip|error] [--batch B] [--weights ema|raw]");
    return CHARLM_OK;
}

/* The text, resolved: the sources in order, and a vocabulary that holds the model's characters
 * and every character of the text, with the map from its ids to the model's (-1: unknown). */
typedef struct {
    corpus_src_t *src; /* (ntexts) */
    int n;
    int64_t total;
    vocab_t wide;
    int32_t *to_model; /* (wide.size) */
} text_t;

static void text_free(text_t *t) {
    for (int i = 0; i < t->n; i++) corpus_src_close(&t->src[i]);
    free(t->src);
    vocab_free(&t->wide);
    free(t->to_model);
    memset(t, 0, sizeof *t);
}

static int text_open(text_t *t, const eval_args_t *a, const vocab_t *model_vocab, int rank) {
    memset(t, 0, sizeof *t);
    t->src = xcalloc((size_t)a->ntexts, sizeof *t->src);
    uint64_t *seen = xcalloc(VOCAB_BITMAP_WORDS, sizeof(uint64_t));
    int rc = CHARLM_OK;
    for (; t->n < a->ntexts && !rc; t->n++) {
        rc = corpus_src_open(&t->src[t->n], seen, a->texts[t->n], "eval", rank == 0);
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
    if (!rc && nunknown && !a->skip_unknown) {
        char ch[5];
        vocab_char_name(ch, unknown);
        rc = err_set(CHARLM_EINPUT,
                     "eval: %d character(s) of the text are not in the model's vocabulary, the "
                     "first '%s' (U+%04X) (--unknown skip drops them)",
                     nunknown, ch, (unsigned)unknown);
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

/* Model ids of characters [first, first+n) of the text (unknown ones dropped); *kept of them. */
static int text_read(int32_t *ids /* (n) */, int64_t *kept, text_t *t, int64_t first,
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

/* Summed loss over the predictions of ids (n), cut into B contiguous streams carried through
 * windows of EVAL_T steps from a zero state; *count gets the number of predictions. */
static double score(const model_t *m, const int32_t *ids, int64_t n, int B, int64_t *count) {
    model_acts_t a;
    model_acts_alloc(&a, m, B, EVAL_T, 0);
    size_t nstate = (size_t)m->d.layers * B * m->d.H;
    float *h = xcalloc(nstate, sizeof(float)), *c = xcalloc(nstate, sizeof(float));
    int64_t preds = n > 0 ? n - 1 : 0, per = preds / B, extra = preds % B;
    double sum = 0.0;
    for (int64_t pos = 0; pos < per + (extra > 0); pos += EVAL_T) {
        int64_t left = per + (extra > 0) - pos;
        int T = (int)(left < EVAL_T ? left : EVAL_T);
        for (int b = 0; b < B; b++) {
            int64_t start = b * per + (b < extra ? b : extra), len = per + (b < extra);
            for (int t = 0; t < T; t++) {
                int64_t i = pos + t;
                a.inputs[t * B + b] = i < len ? ids[start + i] : 0;
                a.targets[t * B + b] = i < len ? ids[start + i + 1] : -1;
            }
        }
        sum += model_forward(&a, h, m->ops->has_c ? c : NULL, m, T, NULL, 1.0f, 0);
    }
    free(h);
    free(c);
    model_acts_free(&a);
    *count = preds;
    return sum;
}

static int run(const eval_args_t *a, const dist_t *d) {
    ckpt_t ck;
    int rc = ckpt_read(&ck, a->ckpt);
    if ((rc = dist_agree(d, rc))) return rc;
    if (a->raw) ckpt_drop_ema(&ck);
    text_t t;
    rc = text_open(&t, a, &ck.vocab, d->rank);
    if (!rc && t.total < 2)
        rc = err_set(CHARLM_EINPUT, "eval: the text has %lld character(s); at least 2 are needed",
                     (long long)t.total);
    if ((rc = dist_agree(d, rc))) {
        text_free(&t);
        ckpt_free(&ck);
        return rc;
    }
    /* rank r scores predictions [r (N-1)/P, (r+1) (N-1)/P): characters up to one past that */
    int64_t preds = t.total - 1;
    int64_t lo = preds * d->rank / d->size, hi = preds * (d->rank + 1) / d->size;
    int64_t n = hi - lo + 1, kept = 0;
    /* the windows of --batch streams, the model's copy and the ids, before any is allocated */
    rc = dist_agree(d, model_window_fits(&ck.info.dims, a->batch, EVAL_T,
                                         4.0 * (model_nparams(&ck.info.dims) + (double)n),
                                         d->local_size, "eval: --batch"));
    if (rc) {
        text_free(&t);
        ckpt_free(&ck);
        return rc;
    }
    int32_t *ids = xcalloc((size_t)n, sizeof(int32_t));
    rc = dist_agree(d, text_read(ids, &kept, &t, lo, n));
    if (!rc) {
        model_t m;
        ckpt_model(&m, &ck);
        int64_t count = 0;
        double sums[2];
        sums[0] = score(&m, ids, kept, a->batch, &count);
        sums[1] = (double)count;
        dist_sum_doubles(sums, 2);
        model_free(&m);
        double loss = sums[0] / sums[1];
        if (d->rank == 0 && a->json)
            printf("{\"loss\":%.9g,\"bpc\":%.9g,\"perplexity\":%.9g,\"chars\":%lld,"
                   "\"predictions\":%lld}\n",
                   loss, loss / log(2.0), exp(loss), (long long)t.total, (long long)sums[1]);
        else if (d->rank == 0)
            printf("loss %.6f nats/char, %.6f bits/char, perplexity %.4f over %lld characters "
                   "(%lld predictions)\n",
                   loss, loss / log(2.0), exp(loss), (long long)t.total, (long long)sums[1]);
    }
    free(ids);
    text_free(&t);
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
