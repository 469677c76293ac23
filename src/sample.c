#include "charlm/sample.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "charlm/checkpoint.h"
#include "charlm/err.h"
#include "charlm/rng.h"
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

void sample_text(FILE *out, const model_t *m, const vocab_t *v, const int32_t *prime,
                 int64_t n_prime, const sample_opts_t *o) {
    CHARLM_CHECK(n_prime >= 1);
    size_t nstate = (size_t)m->d.layers * m->d.H;
    float *h = xcalloc(nstate, sizeof(float)), *c = xcalloc(nstate, sizeof(float));
    float *hc = m->ops->has_c ? c : NULL;
    cand_t *cand = xcalloc((size_t)m->d.V, sizeof *cand);
    model_acts_t a;
    model_acts_alloc(&a, m, 1, 1, 0);
    a.targets[0] = -1;
    for (int64_t i = 0; i < n_prime; i++) {
        a.inputs[0] = prime[i];
        model_forward(&a, h, hc, m, 1, NULL, 1.0f, 0);
    }
    uint64_t key = rng_key(o->seed, RNG_SAMPLE, o->index, 0, 0);
    char buf[4];
    for (int64_t i = 0; i < o->length; i++) {
        int id = draw(cand, a.logits, m->d.V, o, rng_uniform(key, (uint64_t)i));
        fwrite(buf, 1, (size_t)utf8_encode(buf, v->cps[id]), out);
        fflush(out);
        a.inputs[0] = id;
        model_forward(&a, h, hc, m, 1, NULL, 1.0f, 0);
    }
    model_acts_free(&a);
    free(cand);
    free(h);
    free(c);
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
    const char *ckpt, *prime, *prime_file;
    int count, skip_unknown;
    int raw; /* --weights raw: the parameters, not their moving average */
    sample_opts_t o;
} sample_args_t;

static int parse_args(sample_args_t *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->o = (sample_opts_t){.length = 500, .temperature = 1.0, .top_p = 1.0, .seed = 1};
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
        if (i + 1 >= argc) return err_set(CHARLM_EUSAGE, "sample: option %s needs a value", k);
        const char *val = argv[++i];
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
    if (!a->ckpt) return err_set(CHARLM_EUSAGE, "sample: which checkpoint? (charlm sample CKPT ...)");
    if (a->prime && a->prime_file)
        return err_set(CHARLM_EUSAGE, "sample: give --prime or --prime-file, not both");
    return CHARLM_OK;
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
    if (!rc) {
        model_t m;
        ckpt_model(&m, &ck);
        int start_only = n == 0; /* no prime: start from a newline, as after a paragraph */
        if (start_only) {
            int nl = vocab_id(&ck.vocab, '\n');
            prime[0] = nl >= 0 ? nl : 0, n = 1;
        }
        for (int i = 0; i < a->count; i++) {
            sample_opts_t o = a->o;
            o.index = (uint64_t)i;
            if (i) fputs("\n\n", stdout);
            if (!start_only) fwrite(text, 1, len, stdout);
            sample_text(stdout, &m, &ck.vocab, prime, n, &o);
        }
        fputc('\n', stdout);
        fflush(stdout);
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
    if (!rc && d->rank == 0) rc = run(&a);
    return dist_agree(d, rc);
}
