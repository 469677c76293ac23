#include "charlm/sample.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "charlm/checkpoint.h"
#include "charlm/err.h"
#include "charlm/rng.h"
#include "charlm/signals.h"
#include "charlm/utf8.h"

typedef struct {
    int id;
    float p;
} cand_t;

static int by_p_desc(const void *a, const void *b) {
    float x = ((const cand_t *)a)->p, y = ((const cand_t *)b)->p;
    if (x != y) return x < y ? 1 : -1;
    return ((const cand_t *)a)->id - ((const cand_t *)b)->id; /* ties: stable by id */
}

/* Draws an id from logits (V) under o's temperature, top-k and top-p with uniform u in [0, 1).
 * cand (V) is scratch. */
static int draw(cand_t *cand, const float *logits, int V, const sample_opts_t *o, float u) {
    int best = 0;
    for (int j = 1; j < V; j++) best = logits[j] > logits[best] ? j : best;
    if (o->temperature <= 0.0) return best;
    double sum = 0.0;
    for (int j = 0; j < V; j++) {
        cand[j].id = j;
        cand[j].p = (float)exp((logits[j] - logits[best]) / o->temperature);
        sum += cand[j].p;
    }
    int n = V;
    if ((o->top_k > 0 && o->top_k < V) || o->top_p < 1.0) {
        qsort(cand, (size_t)V, sizeof *cand, by_p_desc);
        if (o->top_k > 0 && o->top_k < n) n = o->top_k;
        if (o->top_p < 1.0) {
            double acc = 0.0;
            int keep = 0;
            while (keep < n && acc < o->top_p * sum) acc += cand[keep++].p;
            n = keep > 0 ? keep : 1;
        }
        sum = 0.0;
        for (int j = 0; j < n; j++) sum += cand[j].p;
    }
    double r = u * sum, acc = 0.0;
    for (int j = 0; j < n; j++) {
        acc += cand[j].p;
        if (r < acc) return cand[j].id;
    }
    return cand[n - 1].id;
}

/* The model stepped one character at a time for one stream (B = T = 1): the one forward path of
 * sampling, beam search and scoring, so that they agree to the bit. */
typedef struct {
    const model_t *m;
    size_t nstate;  /* layers * H */
    float *h, *c;   /* (layers, H) the state after the characters fed; c lstm only */
    model_acts_t a; /* a.logits (V): the next character's, once one was fed */
    int ready;      /* a character was fed since the reset: a.logits is a prediction */
} stepper_t;

static void stepper_init(stepper_t *st, const model_t *m) {
    st->m = m;
    st->nstate = (size_t)m->d.layers * m->d.H;
    st->h = xcalloc(st->nstate, sizeof(float));
    st->c = xcalloc(st->nstate, sizeof(float));
    model_acts_alloc(&st->a, m, 1, 1, 0);
    st->a.targets[0] = -1;
    st->ready = 0;
}

static void stepper_reset(stepper_t *st) {
    memset(st->h, 0, st->nstate * sizeof(float));
    memset(st->c, 0, st->nstate * sizeof(float));
    st->ready = 0;
}

/* Feeds id from the state h, c (layers, H), which it replaces; leaves the prediction in
 * a->logits. */
static void step(model_acts_t *a, float *h, float *c, const model_t *m, int32_t id) {
    a->inputs[0] = id;
    model_forward(a, h, m->ops->has_c ? c : NULL, m, 1, NULL, 1.0f, 0);
}

static void stepper_feed(stepper_t *st, int32_t id) {
    step(&st->a, st->h, st->c, st->m, id);
    st->ready = 1;
}

static void stepper_free(stepper_t *st) {
    model_acts_free(&st->a);
    free(st->h);
    free(st->c);
}

/* log sum_j exp(x[j]) over x (V), in double: lp[j] = x[j] - this is the model's log-probability. */
static double log_sum_exp(const float *x, int V) {
    float mx = x[0];
    for (int j = 1; j < V; j++) mx = x[j] > mx ? x[j] : mx;
    double s = 0.0;
    for (int j = 0; j < V; j++) s += exp((double)x[j] - mx);
    return mx + log(s);
}

/* A text as ids with each one's log-probability (NAN where the model predicted nothing). */
typedef struct {
    int32_t *ids;
    double *lp;
    int64_t n;
    size_t cap_ids, cap_lp;
} seq_t;

static void seq_push(seq_t *s, int32_t id, double lp) {
    s->ids = xgrow(s->ids, &s->cap_ids, (size_t)s->n + 1, sizeof *s->ids);
    s->lp = xgrow(s->lp, &s->cap_lp, (size_t)s->n + 1, sizeof *s->lp);
    s->ids[s->n] = id, s->lp[s->n] = lp;
    s->n++;
}

static void seq_free(seq_t *s) {
    free(s->ids);
    free(s->lp);
    *s = (seq_t){0};
}

static void put_id(FILE *out, const vocab_t *v, int32_t id) {
    char buf[4];
    fwrite(buf, 1, (size_t)utf8_encode(buf, v->cps[id]), out);
}

/* Draws o->length characters from st (ready): each streamed to out (UTF-8, flushed) when out is
 * not NULL and appended to rec when rec is not NULL. With `stoppable` a stop signal ends it
 * early. cand (V) is scratch. */
static void generate(stepper_t *st, const vocab_t *v, const sample_opts_t *o, cand_t *cand,
                     FILE *out, seq_t *rec, int stoppable) {
    uint64_t key = rng_key(o->seed, RNG_SAMPLE, o->index, 0, 0);
    for (int64_t i = 0; i < o->length && !(stoppable && signals_pending()); i++) {
        const float *logits = st->a.logits; /* (V) */
        int id = draw(cand, logits, st->m->d.V, o, rng_uniform(key, (uint64_t)i));
        if (rec) seq_push(rec, id, logits[id] - log_sum_exp(logits, st->m->d.V));
        if (out) {
            put_id(out, v, id);
            fflush(out);
        }
        stepper_feed(st, id);
    }
}

void sample_text(FILE *out, const model_t *m, const vocab_t *v, const int32_t *prime,
                 int64_t n_prime, const sample_opts_t *o) {
    CHARLM_CHECK(n_prime >= 1);
    stepper_t st;
    stepper_init(&st, m);
    cand_t *cand = xcalloc((size_t)m->d.V, sizeof *cand);
    for (int64_t i = 0; i < n_prime; i++) stepper_feed(&st, prime[i]);
    generate(&st, v, o, cand, out, NULL, 0);
    free(cand);
    stepper_free(&st);
}

/* ---- beam search --------------------------------------------------------------------------- */

typedef struct {
    int width;    /* N >= 1 hypotheses kept */
    int32_t stop; /* the id that ends a hypothesis; -1 = none */
    double alpha; /* score = (sum of log-probabilities) / length^alpha */
} beam_opts_t;

/* One extension of a hypothesis: of slot `parent` of the step before, by `id`. */
typedef struct {
    double sum; /* log-probability of the whole hypothesis */
    double lp;  /* of id */
    int32_t parent, id;
} link_t;

/* A hypothesis of the final ranking: ended by the stop id at step `len` - 1 (link), or alive at
 * the end (slot `slot` of the last step). */
typedef struct {
    double score;
    int64_t len, order; /* order: when it was found, for ties */
    link_t link;
    int slot;
} hyp_t;

/* Candidates: higher sum first; ties to the extension of the higher-ranked hypothesis, then to
 * the smaller id. */
static int by_sum_desc(const void *a, const void *b) {
    const link_t *x = a, *y = b;
    if (x->sum != y->sum) return x->sum < y->sum ? 1 : -1;
    if (x->parent != y->parent) return x->parent - y->parent;
    return x->id - y->id;
}

/* Final ranking: higher score first; ties to the one found first. */
static int by_score_desc(const void *a, const void *b) {
    const hyp_t *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? 1 : -1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static double beam_score(double sum, int64_t len, double alpha) {
    return len > 0 ? sum / pow((double)len, alpha) : 0.0;
}

/* Inserts h into the ranking top (*n of at most cap entries, best first) if it belongs there. */
static void keep_best(hyp_t *top, int *n, int cap, const hyp_t *h) {
    int k = *n < cap ? (*n)++ : cap;
    while (k > 0 && by_score_desc(h, &top[k - 1]) < 0) {
        if (k < cap) top[k] = top[k - 1];
        k--;
    }
    if (k < cap) top[k] = *h;
}

/* Beam search of `length` characters after st's state (ready; not changed): writes the best
 * `count` (<= width) hypotheses, best first, into best[] (ids and log-probabilities, appended to
 * each seq_t, which must be empty) and their scores into score[]; returns how many there are.
 * A stop signal (when stoppable) abandons the search: it returns 0. */
static int beam_search(seq_t *best, double *score, int count, const stepper_t *st,
                       int64_t length, const beam_opts_t *b, int stoppable) {
    const model_t *m = st->m;
    const int V = m->d.V, N = b->width;
    const size_t ns = st->nstate;
    float *h = xcalloc(2 * (size_t)N * ns, sizeof(float)); /* (2, N, layers*H) two steps' slots */
    float *c = xcalloc(2 * (size_t)N * ns, sizeof(float)); /* (2, N, layers*H) */
    double *lse = xcalloc(2 * (size_t)N, sizeof(double));  /* (2, N) of each slot's logits */
    float *logits = xcalloc(2 * (size_t)N * V, sizeof(float)); /* (2, N, V) */
    link_t *cand = xcalloc((size_t)N * V, sizeof *cand);       /* (N*V) */
    hyp_t *top = xcalloc((size_t)count + 1, sizeof *top);      /* (count) the ranking so far */
    link_t *links = NULL; /* (steps, N): slot k after step t extends links[t*N+k].parent */
    size_t cap = 0;
    int alive = 1, cur = 0, ntop = 0;
    int64_t steps = 0, order = 0;
    memcpy(h, st->h, ns * sizeof(float));
    memcpy(c, st->c, ns * sizeof(float));
    memcpy(logits, st->a.logits, (size_t)V * sizeof(float));
    lse[0] = log_sum_exp(logits, V);
    double *sums = xcalloc(2 * (size_t)N, sizeof(double)); /* (2, N) */
    model_acts_t a;
    model_acts_alloc(&a, m, 1, 1, 0);
    a.targets[0] = -1;
    for (; steps < length && alive > 0; steps++) {
        if (stoppable && signals_pending()) break;
        int nc = 0;
        for (int k = 0; k < alive; k++) {
            const float *x = logits + ((size_t)cur * N + k) * V; /* (V) */
            for (int j = 0; j < V; j++) {
                link_t l = {.lp = x[j] - lse[cur * N + k], .parent = k, .id = j};
                l.sum = sums[cur * N + k] + l.lp;
                if (j != b->stop) {
                    cand[nc++] = l;
                    continue;
                }
                hyp_t done = {.score = beam_score(l.sum, steps + 1, b->alpha), .len = steps + 1,
                              .order = order++, .link = l, .slot = -1};
                keep_best(top, &ntop, count, &done);
            }
        }
        qsort(cand, (size_t)nc, sizeof *cand, by_sum_desc);
        int next = nc < N ? nc : N, nxt = cur ^ 1;
        links = xgrow(links, &cap, (size_t)(steps + 1) * N, sizeof *links);
        for (int k = 0; k < next; k++) {
            const link_t *l = &cand[k];
            links[steps * N + k] = *l;
            float *hk = h + ((size_t)nxt * N + k) * ns, *ck = c + ((size_t)nxt * N + k) * ns;
            memcpy(hk, h + ((size_t)cur * N + l->parent) * ns, ns * sizeof(float));
            memcpy(ck, c + ((size_t)cur * N + l->parent) * ns, ns * sizeof(float));
            sums[nxt * N + k] = l->sum;
            if (steps + 1 == length) continue; /* the last step's predictions are not needed */
            step(&a, hk, ck, m, l->id);
            memcpy(logits + ((size_t)nxt * N + k) * V, a.logits, (size_t)V * sizeof(float));
            lse[nxt * N + k] = log_sum_exp(a.logits, V);
        }
        alive = next, cur = nxt;
    }
    int n = 0;
    if (!(stoppable && signals_pending())) {
        for (int k = 0; k < alive; k++) {
            hyp_t end = {.score = beam_score(sums[cur * N + k], steps, b->alpha), .len = steps,
                         .order = order++, .slot = k};
            keep_best(top, &ntop, count, &end);
        }
        n = ntop;
    }
    for (int i = 0; i < n; i++) {
        const hyp_t *t = &top[i];
        int64_t len = t->len;
        for (int64_t s = 0; s < len; s++) seq_push(&best[i], 0, 0.0);
        int k = t->slot;
        if (k < 0) { /* ended by the stop id */
            best[i].ids[len - 1] = t->link.id, best[i].lp[len - 1] = t->link.lp;
            k = t->link.parent, len--;
        }
        for (int64_t s = len - 1; s >= 0; s--) {
            const link_t *l = &links[s * N + k];
            best[i].ids[s] = l->id, best[i].lp[s] = l->lp;
            k = l->parent;
        }
        score[i] = t->score;
    }
    model_acts_free(&a);
    free(links), free(top), free(cand), free(logits), free(lse), free(sums), free(c), free(h);
    return n;
}

/* Reads a whole (prime) file into a NUL-terminated buffer owned by the caller. */
static int read_file(char **out, size_t *len, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(CHARLM_EINPUT, "--prime-file %s: %s", path, strerror(errno));
    size_t cap = 0, n = 0, k;
    char *buf = NULL;
    do { /* xgrow zero-extends: the text stays NUL-terminated */
        buf = xgrow(buf, &cap, n + 4096 + 1, 1);
        n += k = fread(buf + n, 1, cap - n - 1, f);
    } while (k > 0);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return err_set(CHARLM_EINPUT, "--prime-file %s: read error", path);
    }
    *out = buf, *len = n;
    return CHARLM_OK;
}

/* Parses a number option value; returns CHARLM_EUSAGE naming the option when it is not one
 * within [lo, hi]. */
static int parse_num(double *v, const char *opt, const char *s, double lo, double hi) {
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    if (errno || end == s || *end || !(*v >= lo && *v <= hi))
        return err_set(CHARLM_EUSAGE, "sample: %s %s: expected a number in [%g, %g]", opt, s, lo,
                       hi);
    return CHARLM_OK;
}

/* Parses an integer option value exactly — decimal digits only: no sign, fraction or exponent,
 * and no detour through a double, which would round a seed above 2^53. Returns CHARLM_EUSAGE
 * naming the option when it is not an integer within [lo, hi]. */
static int parse_uint(uint64_t *v, const char *opt, const char *s, uint64_t lo, uint64_t hi) {
    char *end = NULL;
    errno = 0;
    if (*s >= '0' && *s <= '9') *v = strtoull(s, &end, 10);
    if (!end || errno || *end || *v < lo || *v > hi)
        return err_set(CHARLM_EUSAGE, "sample: %s %s: expected an integer in [%" PRIu64
                       ", %" PRIu64 "]", opt, s, lo, hi);
    return CHARLM_OK;
}

typedef struct {
    const char *ckpt, *prime, *prime_file, *beam_stop;
    int count, skip_unknown, interactive, keep_state, json, logprobs;
    const char *drawing; /* the first of --temperature, --top-k, --top-p, --seed given */
    beam_opts_t beam;    /* width 0 = sample */
    int alpha_given;
    int raw; /* --weights raw: the parameters, not their moving average */
    sample_opts_t o;
} sample_args_t;

/* The code point of a --beam-stop value: one character, or the escapes \n and \t; -1 if none. */
static int64_t stop_cp(const char *s) {
    if (!strcmp(s, "\\n")) return '\n';
    if (!strcmp(s, "\\t")) return '\t';
    uint32_t cp;
    size_t n = strlen(s);
    return n > 0 && utf8_decode(&cp, (const unsigned char *)s, n) == (int)n ? (int64_t)cp : -1;
}

/* Options with no value. */
static int parse_flag(sample_args_t *a, const char *k) {
    if (!strcmp(k, "--interactive")) a->interactive = 1;
    else if (!strcmp(k, "--keep-state")) a->keep_state = 1;
    else if (!strcmp(k, "--json")) a->json = 1;
    else if (!strcmp(k, "--logprobs")) a->logprobs = 1;
    else return 0;
    return 1;
}

/* The combinations of options that mean nothing, each refused with one line. */
static int check_args(const sample_args_t *a) {
    if (!a->ckpt) return err_set(CHARLM_EUSAGE, "sample: which checkpoint? (charlm sample CKPT ...)");
    if (a->prime && a->prime_file)
        return err_set(CHARLM_EUSAGE, "sample: give --prime or --prime-file, not both");
    if (a->interactive && (a->prime || a->prime_file))
        return err_set(CHARLM_EUSAGE, "sample: --interactive reads its primes from stdin, one a "
                       "line: --prime and --prime-file do not apply");
    if (a->interactive && a->count > 1)
        return err_set(CHARLM_EUSAGE, "sample: --interactive gives one continuation a line: "
                       "--count does not apply");
    if (a->keep_state && !a->interactive)
        return err_set(CHARLM_EUSAGE, "sample: --keep-state carries the state from one line to "
                       "the next of --interactive, which is not given");
    if (a->logprobs && !a->json)
        return err_set(CHARLM_EUSAGE, "sample: --logprobs adds a field to --json output, which "
                       "is not given");
    if (a->beam.width && a->drawing)
        return err_set(CHARLM_EUSAGE, "sample: --beam with %s: a beam search draws nothing, so "
                       "--temperature, --top-k, --top-p and --seed do not apply", a->drawing);
    if (!a->beam.width && (a->beam_stop || a->alpha_given))
        return err_set(CHARLM_EUSAGE, "sample: %s needs --beam",
                       a->beam_stop ? "--beam-stop" : "--length-norm");
    if (a->alpha_given && !a->beam_stop)
        return err_set(CHARLM_EUSAGE, "sample: --length-norm needs --beam-stop (without a stop "
                       "character every hypothesis has --length characters: normalising changes "
                       "no ranking)");
    if (a->beam.width && a->count > a->beam.width)
        return err_set(CHARLM_EUSAGE, "sample: --count %d with --beam %d: the search keeps only "
                       "%d hypotheses", a->count, a->beam.width, a->beam.width);
    return CHARLM_OK;
}

static int parse_args(sample_args_t *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->o = (sample_opts_t){.length = 500, .temperature = 1.0, .top_p = 1.0, .seed = 1};
    a->beam = (beam_opts_t){.width = 0, .stop = -1, .alpha = 1.0};
    a->count = 1;
    for (int i = 0; i < argc; i++) {
        const char *k = argv[i];
        uint64_t u = 0;
        int rc = CHARLM_OK;
        if (k[0] != '-') {
            if (a->ckpt) return err_set(CHARLM_EUSAGE, "sample: unexpected argument '%s'", k);
            a->ckpt = k;
            continue;
        }
        if (parse_flag(a, k)) continue;
        if (i + 1 >= argc) return err_set(CHARLM_EUSAGE, "sample: option %s needs a value", k);
        const char *val = argv[++i];
        int draws = !strcmp(k, "--temperature") || !strcmp(k, "--top-k") ||
                    !strcmp(k, "--top-p") || !strcmp(k, "--seed");
        if (draws && !a->drawing) a->drawing = k;
        /* on a parse failure the field takes a value that is never used: rc is returned */
        if (!strcmp(k, "--prime")) {
            a->prime = val;
        } else if (!strcmp(k, "--prime-file")) {
            a->prime_file = val;
        } else if (!strcmp(k, "--length")) {
            rc = parse_uint(&u, k, val, 0, 1000000000000);
            a->o.length = (int64_t)u;
        } else if (!strcmp(k, "--temperature")) {
            rc = parse_num(&a->o.temperature, k, val, 0, 100);
        } else if (!strcmp(k, "--top-k")) {
            rc = parse_uint(&u, k, val, 0, 1 << 30);
            a->o.top_k = (int)u;
        } else if (!strcmp(k, "--top-p")) {
            rc = parse_num(&a->o.top_p, k, val, 1e-9, 1);
        } else if (!strcmp(k, "--seed")) {
            rc = parse_uint(&a->o.seed, k, val, 0, UINT64_MAX);
        } else if (!strcmp(k, "--count")) {
            rc = parse_uint(&u, k, val, 1, 1000000);
            a->count = (int)u;
        } else if (!strcmp(k, "--beam")) {
            rc = parse_uint(&u, k, val, 1, 10000);
            a->beam.width = (int)u;
        } else if (!strcmp(k, "--beam-stop")) {
            if (stop_cp(val) < 0)
                return err_set(CHARLM_EUSAGE, "sample: --beam-stop '%s': expected one character "
                               "(or \\n, \\t)", val);
            a->beam_stop = val;
        } else if (!strcmp(k, "--length-norm")) {
            rc = parse_num(&a->beam.alpha, k, val, 0, 10);
            a->alpha_given = 1;
        } else if (!strcmp(k, "--weights")) {
            if (strcmp(val, "ema") && strcmp(val, "raw"))
                return err_set(CHARLM_EUSAGE, "sample: --weights %s: expected ema or raw", val);
            a->raw = !strcmp(val, "raw");
        } else if (!strcmp(k, "--unknown")) {
            if (strcmp(val, "skip") && strcmp(val, "error"))
                return err_set(CHARLM_EUSAGE, "sample: --unknown %s: expected skip or error", val);
            a->skip_unknown = !strcmp(val, "skip");
        } else {
            return err_set(CHARLM_EUSAGE, "sample: unknown option '%s'", k);
        }
        if (rc) return rc;
    }
    return check_args(a);
}

/* ---- output -------------------------------------------------------------------------------- */

/* Writes cp escaped for a JSON string. */
static void json_cp(FILE *f, uint32_t cp) {
    static const char short_esc[] = {['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r',
                                     ['\t'] = 't', ['"'] = '"', ['\\'] = '\\'};
    char buf[4];
    if (cp < sizeof short_esc && short_esc[cp]) fprintf(f, "\\%c", short_esc[cp]);
    else if (cp < 0x20) fprintf(f, "\\u%04x", (unsigned)cp);
    else fwrite(buf, 1, (size_t)utf8_encode(buf, cp), f);
}

/* Writes "name":"TEXT" for UTF-8 text (len bytes, valid: vocab_encode checked it). */
static void json_text(FILE *f, const char *name, const char *text, size_t len) {
    fprintf(f, "\"%s\":\"", name);
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int k = utf8_decode(&cp, (const unsigned char *)text + i, len - i);
        CHARLM_CHECK(k > 0);
        json_cp(f, cp);
        i += (size_t)k;
    }
    fputc('"', f);
}

/* Writes "name":[...] of log-probabilities (17 significant digits: they round-trip); NAN and
 * infinities are null. */
static void json_lps(FILE *f, const char *name, const double *lp, int64_t n) {
    fprintf(f, ",\"%s\":[", name);
    for (int64_t i = 0; i < n; i++) {
        if (isfinite(lp[i])) fprintf(f, "%s%.17g", i ? "," : "", lp[i]);
        else fprintf(f, "%snull", i ? "," : "");
    }
    fputc(']', f);
}

/* One JSON object (a line): the prime as given, the generated text, the beam score when there
 * is one (beam not NULL), and with --logprobs the log-probabilities of the prime's characters as
 * fed and of the generated ones. */
static void json_sample(FILE *f, const sample_args_t *a, const vocab_t *v, const char *prime,
                        size_t len, const seq_t *fed, const seq_t *gen, const double *beam) {
    fputc('{', f);
    json_text(f, "prime", prime ? prime : "", prime ? len : 0);
    fputs(",\"text\":\"", f);
    for (int64_t i = 0; i < gen->n; i++) json_cp(f, v->cps[gen->ids[i]]);
    fputc('"', f);
    if (beam) {
        double sum = 0.0;
        for (int64_t i = 0; i < gen->n; i++) sum += gen->lp[i];
        fprintf(f, ",\"score\":%.17g,\"logprob\":%.17g", *beam, sum);
    }
    if (a->logprobs) {
        json_lps(f, "prime_logprobs", fed->lp, fed->n);
        json_lps(f, "logprobs", gen->lp, gen->n);
    }
    fputs("}\n", f);
}

/* ---- the command --------------------------------------------------------------------------- */

/* What a run of the command holds: the model stepped, and the buffers of one prime. */
typedef struct {
    const sample_args_t *a;
    const vocab_t *v;
    stepper_t st;
    cand_t *cand;    /* (V) */
    seq_t fed;       /* the prime's ids as fed, with their log-probabilities */
    seq_t *gen;      /* (count) what was generated */
    double *score;   /* (count) beam scores */
    int32_t newline; /* the start of a text without a prime */
} session_t;

/* Feeds st the prime ids (n), recording each character's log-probability (NAN for the first of
 * a fresh state). Without any, a fresh state starts after a newline, which is not recorded. */
static void feed_prime(session_t *s, const int32_t *ids, int64_t n) {
    s->fed.n = 0;
    for (int64_t i = 0; i < n; i++) {
        const float *x = s->st.a.logits;
        seq_push(&s->fed, ids[i], s->st.ready ? x[ids[i]] - log_sum_exp(x, s->v->size) : NAN);
        stepper_feed(&s->st, ids[i]);
    }
    if (!s->st.ready) stepper_feed(&s->st, s->newline);
}

/* The continuations of one prime (text as given, len bytes; its ids, n) on stdout, as
 * `index` of a series: the prime echoed first when echo (text not NULL), each sample's text
 * streamed as it is drawn unless --json. With keep, st ends in the state after the prime and
 * the (first) continuation, else it is reset. Returns 0, or 1 when a stop signal cut it short (stoppable). */
static int continue_prime(session_t *s, const char *text, size_t len, const int32_t *ids,
                          int64_t n, uint64_t index, int echo, int keep, int stoppable) {
    const sample_args_t *a = s->a;
    int count = a->count;
    for (int i = 0; i < count; i++) s->gen[i].n = 0;
    if (a->beam.width) {
        feed_prime(s, ids, n);
        count = beam_search(s->gen, s->score, count, &s->st, a->o.length, &a->beam, stoppable);
        if (stoppable && signals_pending()) return 1;
        for (int i = 0; i < count; i++) {
            if (a->json) {
                json_sample(stdout, a, s->v, text, len, &s->fed, &s->gen[i], &s->score[i]);
                continue;
            }
            if (i) fputs("\n\n", stdout);
            if (echo && text) fwrite(text, 1, len, stdout);
            for (int64_t j = 0; j < s->gen[i].n; j++) put_id(stdout, s->v, s->gen[i].ids[j]);
        }
        if (keep)
            for (int64_t j = 0; j < s->gen[0].n; j++) stepper_feed(&s->st, s->gen[0].ids[j]);
    } else {
        for (int i = 0; i < count; i++) {
            sample_opts_t o = a->o;
            o.index = index + (uint64_t)i;
            if (i) stepper_reset(&s->st);
            feed_prime(s, ids, n);
            if (!a->json && i) fputs("\n\n", stdout);
            if (!a->json && echo && text) fwrite(text, 1, len, stdout);
            generate(&s->st, s->v, &o, s->cand, a->json ? NULL : stdout, &s->gen[i], stoppable);
            if (stoppable && signals_pending()) return 1;
            if (a->json) json_sample(stdout, a, s->v, text, len, &s->fed, &s->gen[i], NULL);
        }
    }
    if (!keep) stepper_reset(&s->st);
    return 0;
}

/* Number of code points of UTF-8 text up to the first invalid byte. */
static int64_t count_cps(const char *text, size_t len) {
    int64_t n = 0;
    uint32_t cp;
    int k;
    for (size_t i = 0; i < len && (k = utf8_decode(&cp, (const unsigned char *)text + i,
                                                     len - i)) > 0; i += (size_t)k)
        n++;
    return n;
}

/* --interactive: a prime per line of stdin (its newline, and a \r before it, removed), each
 * continuation streamed and ended with a newline. EOF, a stop signal or a closed stdout end it
 * with CHARLM_OK; a line that vocab_encode refuses ends it with its error under --unknown error,
 * and is skipped with one line on stderr under --unknown skip. */
static int interactive(session_t *s) {
    const sample_args_t *a = s->a;
    char *line = NULL, what[48];
    size_t cap = 0, icap = 0;
    int32_t *ids = NULL;
    int rc = CHARLM_OK;
    ssize_t got;
    for (uint64_t no = 1; !signals_pending() && (got = getline(&line, &cap, stdin)) >= 0; no++) {
        size_t len = (size_t)got;
        if (len && line[len - 1] == '\n') len--;
        if (len && line[len - 1] == '\r') len--;
        ids = xgrow(ids, &icap, len + 1, sizeof *ids);
        int64_t n = 0;
        snprintf(what, sizeof what, "stdin line %" PRIu64, no);
        rc = vocab_encode(ids, &n, s->v, line, len, a->skip_unknown, what);
        if (rc && !a->skip_unknown) break;
        if (rc) { /* invalid UTF-8: nothing of the line can be trusted */
            fprintf(stderr, "charlm: %s (line skipped)\n", err_message());
            err_clear();
            rc = CHARLM_OK;
            continue;
        }
        int64_t dropped = count_cps(line, len) - n;
        if (dropped)
            fprintf(stderr, "charlm: %s: dropped %" PRId64 " character%s outside the model's "
                    "vocabulary (--unknown skip)\n", what, dropped, dropped > 1 ? "s" : "");
        int cut = continue_prime(s, line, len, ids, n, no - 1, 0, a->keep_state, 1);
        if (!a->json) fputc('\n', stdout);
        if (fflush(stdout) != 0 || ferror(stdout) || cut) break;
    }
    free(ids);
    free(line);
    return rc;
}

static int run(const sample_args_t *a) {
    ckpt_t ck;
    int rc = ckpt_read(&ck, a->ckpt);
    if (rc) return rc;
    if (a->raw) ckpt_drop_ema(&ck);
    char *text = NULL;
    size_t len = 0;
    if (a->prime_file) rc = read_file(&text, &len, a->prime_file);
    else if (a->prime) text = xstrdup(a->prime), len = strlen(a->prime);
    int32_t *prime = xcalloc(len + 1, sizeof(int32_t));
    int64_t n = 0;
    /* messages name the option, and the file with its byte offset */
    char *what = a->prime_file ? xcalloc(strlen(a->prime_file) + 16, 1) : xstrdup("--prime");
    if (a->prime_file) sprintf(what, "--prime-file %s", a->prime_file);
    if (!rc && text) rc = vocab_encode(prime, &n, &ck.vocab, text, len, a->skip_unknown, what);
    free(what);
    sample_args_t args = *a;
    if (!rc && a->beam_stop) {
        int64_t cp = stop_cp(a->beam_stop);
        args.beam.stop = vocab_id(&ck.vocab, (uint32_t)cp);
        char ch[5];
        vocab_char_name(ch, (uint32_t)cp);
        if (args.beam.stop < 0)
            rc = err_set(CHARLM_EINPUT, "sample: --beam-stop '%s' (U+%04X) is not in the "
                         "model's vocabulary", ch, (unsigned)cp);
    }
    if (!rc) {
        model_t m;
        ckpt_model(&m, &ck);
        session_t s = {.a = &args, .v = &ck.vocab};
        stepper_init(&s.st, &m);
        s.cand = xcalloc((size_t)m.d.V, sizeof *s.cand);
        s.gen = xcalloc((size_t)a->count, sizeof *s.gen);
        s.score = xcalloc((size_t)a->count, sizeof *s.score);
        int nl = vocab_id(&ck.vocab, '\n');
        s.newline = nl >= 0 ? nl : 0;
        if (a->interactive) {
            rc = interactive(&s);
        } else {
            continue_prime(&s, text, len, prime, n, 0, n > 0, 0, 0);
            if (!a->json) fputc('\n', stdout);
        }
        fflush(stdout);
        for (int i = 0; i < a->count; i++) seq_free(&s.gen[i]);
        seq_free(&s.fed);
        free(s.gen), free(s.score), free(s.cand);
        stepper_free(&s.st);
        model_free(&m);
    }
    free(prime);
    free(text);
    ckpt_free(&ck);
    return rc;
}

int sample_main(int argc, char **argv, const dist_t *d) {
    sample_args_t a;
    int rc = parse_args(&a, argc, argv);
    /* Ctrl-C (and the other stop signals) end an interactive session cleanly, also while it
     * waits for a line */
    if (!rc && a.interactive) signals_install_interrupting();
    if (!rc && d->rank == 0) rc = run(&a);
    return dist_agree(d, rc);
}
