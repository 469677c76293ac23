#include "charlm/corpus.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "charlm/err.h"
#include "charlm/fileio.h"
#include "charlm/signals.h"

/* ---- corpus_src ---- */

int corpus_src_open(corpus_src_t *src, uint64_t *bitmap, const char *spec, const char *role,
                    int note_skips) {
    memset(src, 0, sizeof *src);
    if (tokens_is_prepared(spec)) {
        int rc = tokens_open(&src->tokens, spec, role);
        if (rc != CHARLM_OK) return rc;
        for (int i = 0; i < src->tokens.vocab.size; i++)
            vocab_bitmap_set(bitmap, src->tokens.vocab.cps[i]);
        src->total = src->tokens.n;
        return CHARLM_OK;
    }
    int rc = textsrc_open(&src->text, bitmap, &spec, 1, role, note_skips ? TEXTSRC_NOTE_SKIPS : 0);
    src->total = src->text.total;
    return rc;
}

void corpus_src_set_vocab(corpus_src_t *src, const vocab_t *v) {
    if (src->tokens.path) tokens_set_vocab(&src->tokens, v);
    else textsrc_set_vocab(&src->text, v);
}

int corpus_src_read(int32_t *ids, corpus_src_t *src, int64_t first, int64_t n) {
    return src->tokens.path ? tokens_read(ids, &src->tokens, first, n)
                                 : textsrc_read(ids, &src->text, first, n);
}

void corpus_src_close(corpus_src_t *src) {
    textsrc_close(&src->text);
    tokens_close(&src->tokens);
    src->total = 0;
}

/* ---- corpus_load ---- */

/* Where stream s's validation predictions start (corpus.h: Lv_s, vstart_s). */
static int64_t val_start(int64_t s, int64_t pred, int64_t S) {
    int64_t q = pred / S, rem = pred % S;
    return s * q + (s < rem ? s : rem);
}

static int split_and_check(corpus_t *c, const corpus_params_t *cfg, const corpus_src_t *train,
                           const corpus_src_t *val, int rank, int P) {
    int64_t S = (int64_t)P * c->B, T = c->T;
    if (S > INT_MAX)
        return err_set(CHARLM_EINPUT, "%d ranks x train.batch %d = %lld streams is too many", P,
                       c->B, (long long)S);
    c->S = (int)S;
    c->first_stream = rank * c->B;
    const char *ranks = P == 1 ? "rank" : "ranks";
    if (val) {
        c->ntrain = train->total;
        c->nval = val->total;
    } else {
        /* floor(total*(1-val_frac)) with one rounding, so val_frac = 0 keeps every character;
         * the conversion truncates, which is floor for the non-negative values kept */
        double total = (double)train->total, keep = total - total * cfg->val_frac;
        c->ntrain = keep <= 0 ? 0 : keep >= total ? train->total : (int64_t)keep;
        c->nval = train->total - c->ntrain;
    }
    if (c->ntrain < S * T + 1) {
        char split[96] = "";
        if (!val && c->nval > 0)
            snprintf(split, sizeof split, " (after data.val_frac %g for validation)",
                     cfg->val_frac);
        return err_set(CHARLM_EINPUT,
                       "data.corpus %s has %lld training characters%s; %d %s x train.batch %d "
                       "x train.seq %d needs at least %lld (S*T+1)",
                       cfg->corpus, (long long)c->ntrain, split, P, ranks, c->B, c->T,
                       (long long)(S * T + 1));
    }
    int validating = val != NULL || cfg->val_frac > 0;
    if (validating && c->nval < S + 1) {
        char what[CHARLM_PATH_MAX + 64];
        if (val) snprintf(what, sizeof what, "data.val %s has", cfg->val);
        else snprintf(what, sizeof what, "data.val_frac %g leaves", cfg->val_frac);
        return err_set(CHARLM_EINPUT,
                       "%s %lld validation characters; %d %s x train.batch %d needs at least "
                       "%lld (S+1)",
                       what, (long long)c->nval, P, ranks, c->B, (long long)(S + 1));
    }
    c->L = (c->ntrain - 1) / S;
    c->windows = c->L / T;
    return CHARLM_OK;
}

/* Reads ids [first, first+n) of src into out, packed to the width the vocabulary needs, through
 * a bounded int32 buffer (4-byte ids go straight in). A shard that cannot be allocated is bad
 * input (too large a corpus for the ranks given), not a broken invariant: CHARLM_EINPUT naming
 * `what`, the bytes and what this process may allocate. */
static int read_packed(corpus_ids_t *out, corpus_src_t *src, const vocab_t *vocab, int64_t first,
                       int64_t n, const char *what) {
    enum { CHUNK = 1 << 20 };
    out->width = vocab->size <= 256 ? 1 : vocab->size <= 65536 ? 2 : 4;
    out->data = calloc((size_t)n, (size_t)out->width);
    if (!out->data) {
        char need[32], avail[300];
        fileio_bytes_text(need, sizeof need, (double)n * out->width);
        fileio_mem_t m = fileio_mem_available(1, 0);
        fileio_mem_text(avail, sizeof avail, &m);
        return err_set(CHARLM_EINPUT, "not enough memory: %s: this rank's %lld characters take "
                       "%s (%d byte%s each), %s; run more ranks or on more nodes", what,
                       (long long)n, need, out->width, out->width == 1 ? "" : "s", avail);
    }
    int32_t *buf = xcalloc(CHUNK, sizeof(int32_t));
    int rc = CHARLM_OK;
    for (int64_t done = 0; done < n; done += CHUNK) {
        int64_t k = n - done < CHUNK ? n - done : CHUNK;
        int32_t *ids = out->width == 4 ? (int32_t *)out->data + done : buf; /* (k) */
        rc = signals_check(); /* a stop asked for in start-up ends the read between chunks */
        if (rc == CHARLM_OK) rc = corpus_src_read(ids, src, first + done, k);
        if (rc != CHARLM_OK) break;
        /* one loop per width, so that each vectorises */
        if (out->width == 1)
            for (int64_t i = 0; i < k; i++) ((uint8_t *)out->data)[done + i] = (uint8_t)buf[i];
        else if (out->width == 2)
            for (int64_t i = 0; i < k; i++) ((uint16_t *)out->data)[done + i] = (uint16_t)buf[i];
    }
    free(buf);
    return rc;
}

/* Reads this rank's train ids and validation streams. */
static int read_shard(corpus_t *c, corpus_src_t *train, corpus_src_t *val) {
    int64_t B = c->B, S = c->S, s0 = c->first_stream;
    char what[CHARLM_PATH_MAX + 64];
    snprintf(what, sizeof what, "data.corpus (%lld training characters)", (long long)c->ntrain);
    int rc = read_packed(&c->train, train, &c->vocab, s0 * c->L, B * c->L + 1, what);
    if (rc != CHARLM_OK || c->nval == 0) return rc;

    int64_t pred = c->nval - 1;
    c->val_pred = pred;
    c->val_maxlen = pred / S + (pred % S != 0);
    int64_t lo = val_start(s0, pred, S), hi = val_start(s0 + B, pred, S);
    c->val_len = xcalloc((size_t)B, sizeof *c->val_len);
    c->val_off = xcalloc((size_t)B, sizeof *c->val_off);
    for (int64_t b = 0; b < B; b++) {
        int64_t st = val_start(s0 + b, pred, S);
        c->val_len[b] = val_start(s0 + b + 1, pred, S) - st;
        c->val_off[b] = st - lo;
    }
    /* without data.val, the validation split is the tail of the corpus after the train split */
    corpus_src_t *vsrc = val ? val : train;
    int64_t offset = val ? 0 : c->ntrain;
    snprintf(what, sizeof what, "the validation split of %s (%lld characters)",
             val ? "data.val" : "data.corpus", (long long)c->nval);
    return read_packed(&c->val_ids, vsrc, &c->vocab, offset + lo, hi - lo + 1, what);
}

int corpus_load(corpus_t *c, const corpus_params_t *cfg, int rank, int P, int note_skips) {
    CHARLM_CHECK(P >= 1 && rank >= 0 && rank < P && cfg->batch >= 1 && cfg->seq >= 1);
    memset(c, 0, sizeof *c);
    c->B = cfg->batch;
    c->T = cfg->seq;

    uint64_t *bitmap = xcalloc(VOCAB_BITMAP_WORDS, sizeof *bitmap);
    corpus_src_t train, val;
    memset(&val, 0, sizeof val);
    /* with data.val set, data.val_frac is ignored: the whole corpus trains */
    int have_val = cfg->val && cfg->val[0] != '\0';
    int rc = corpus_src_open(&train, bitmap, cfg->corpus, "data.corpus", note_skips);
    if (rc == CHARLM_OK && have_val)
        rc = corpus_src_open(&val, bitmap, cfg->val, "data.val", note_skips);
    if (rc == CHARLM_OK) {
        vocab_from_bitmap(&c->vocab, bitmap);
        corpus_src_set_vocab(&train, &c->vocab);
        if (have_val) corpus_src_set_vocab(&val, &c->vocab);
        rc = split_and_check(c, cfg, &train, have_val ? &val : NULL, rank, P);
    }
    free(bitmap);
    if (rc == CHARLM_OK) rc = read_shard(c, &train, have_val ? &val : NULL);
    corpus_src_close(&train);
    corpus_src_close(&val);
    if (rc != CHARLM_OK) corpus_free(c);
    return rc;
}

void corpus_free(corpus_t *c) {
    vocab_free(&c->vocab);
    free(c->train.data);
    free(c->val_len);
    free(c->val_off);
    free(c->val_ids.data);
    memset(c, 0, sizeof *c);
}
