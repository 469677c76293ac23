#include "charlm/gradflow.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "charlm/checkpoint.h"
#include "charlm/err.h"
#include "charlm/eval.h"
#include "charlm/fileio.h"

enum { GRADFLOW_BATCH = 8, GRADFLOW_WINDOWS = 16, GRADFLOW_MAX_LAG = 1 << 16 };

typedef struct {
    const char *ckpt, *json;
    const char **texts; /* (ntexts) --corpus: file, directory or glob each */
    int ntexts, skip_unknown, batch, windows;
    int max_lag; /* K; 0 = twice the checkpoint's train.seq */
} gradflow_args_t;

#define GRADFLOW_USAGE                                                                          \
    "usage: charlm gradflow CKPT --corpus TEXT... [--max-lag K] [--batch B] [--windows W] "   \
    "[--json FILE] [--unknown skip|error]"

/* The integer after option k, in [lo, hi], into *v. */
static int parse_int(int *v, const char *k, const char *s, long lo, long hi) {
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (*end || end == s || errno || x < lo || x > hi)
        return err_set(CHARLM_EUSAGE, "gradflow: %s %s: expected an integer in [%ld, %ld]", k, s,
                       lo, hi);
    *v = (int)x;
    return CHARLM_OK;
}

static int parse_args(gradflow_args_t *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->batch = GRADFLOW_BATCH;
    a->windows = GRADFLOW_WINDOWS;
    a->texts = (const char **)xcalloc((size_t)argc + 1, sizeof(char *));
    for (int i = 0; i < argc; i++) {
        const char *k = argv[i];
        int rc = CHARLM_OK, valued = i + 1 < argc;
        if (!strcmp(k, "--corpus") && valued) {
            a->texts[a->ntexts++] = argv[++i];
        } else if (!strcmp(k, "--json") && valued) {
            a->json = argv[++i];
        } else if (!strcmp(k, "--unknown") && valued) {
            const char *s = argv[++i];
            if (strcmp(s, "skip") && strcmp(s, "error"))
                return err_set(CHARLM_EUSAGE, "gradflow: --unknown %s: expected skip or error",
                               s);
            a->skip_unknown = !strcmp(s, "skip");
        } else if (!strcmp(k, "--max-lag") && valued) {
            rc = parse_int(&a->max_lag, k, argv[++i], 1, GRADFLOW_MAX_LAG);
        } else if (!strcmp(k, "--batch") && valued) {
            rc = parse_int(&a->batch, k, argv[++i], 1, 1 << 16);
        } else if (!strcmp(k, "--windows") && valued) {
            rc = parse_int(&a->windows, k, argv[++i], 1, 1 << 20);
        } else if (k[0] == '-') {
            return err_set(CHARLM_EUSAGE, "gradflow: unknown option '%s' (%s)", k,
                           GRADFLOW_USAGE);
        } else if (!a->ckpt) {
            a->ckpt = k;
        } else {
            return err_set(CHARLM_EUSAGE, "gradflow: unexpected argument '%s' (the text is "
                           "given with --corpus)", k);
        }
        if (rc) return rc;
    }
    if (!a->ckpt || !a->ntexts) return err_set(CHARLM_EUSAGE, "gradflow: %s", GRADFLOW_USAGE);
    return CHARLM_OK;
}

/* The sums of a measurement, reduced over the ranks as one array of doubles. */
typedef struct {
    int layers, K;
    double *norm;  /* (layers, K+1) summed ||dL_t / dh_{t-k}|| of layer l at lag k */
    double loss;   /* summed loss at the scored steps t */
    double count;  /* scored (stream, window) pairs */
} flow_t;

/* Measures flow over this rank's B streams: stream b reads ids[b] (lens[b] of them), cut into
 * windows of K+1 steps carried from one to the next from a zero state. Only the window's last
 * step is scored, so backward from its loss leaves dL_t / dh_{t-k} at step K - k. */
static void measure(flow_t *f, const model_t *m, int32_t *const *ids, const int64_t *lens, int B,
                    int windows) {
    const int K = f->K, T = K + 1, H = m->d.H;
    model_acts_t a;
    model_acts_alloc(&a, m, B, T, MODEL_ACTS_DH_STEPS);
    size_t nstate = (size_t)m->d.layers * B * H;
    float *h = xcalloc(nstate, sizeof(float)), *c = xcalloc(nstate, sizeof(float));
    float *grads = xcalloc((size_t)m->nparams, sizeof(float));
    for (int w = 0; w < windows; w++) {
        int scored = 0;
        for (int b = 0; b < B; b++) {
            /* a stream shortened by --unknown skip runs out of windows: padding, not scored */
            int live = (int64_t)(w + 1) * T + 1 <= lens[b];
            const int32_t *x = ids[b] + (int64_t)w * T;
            for (int t = 0; t < T; t++) {
                a.inputs[t * B + b] = live ? x[t] : 0;
                a.targets[t * B + b] = live && t == K ? x[t + 1] : -1;
            }
            scored += live;
        }
        if (!scored) break;
        f->loss += model_forward(&a, h, m->ops->has_c ? c : NULL, m, T, NULL, 1.0f, 1);
        model_backward(grads, &a, m, T, NULL);
        f->count += scored;
        for (int l = 0; l < m->d.layers; l++)
            for (int k = 0; k <= K; k++)
                for (int b = 0; b < B; b++) {
                    const float *g = a.dh_steps[l] + ((size_t)(K - k) * B + b) * H;
                    double s = 0;
                    for (int i = 0; i < H; i++) s += (double)g[i] * g[i];
                    f->norm[l * (K + 1) + k] += sqrt(s); /* 0 for a stream not scored */
                }
    }
    free(h);
    free(c);
    free(grads);
    model_acts_free(&a);
}

/* The table (and JSON) of the reduced sums f: means over f->count. */
static void print_table(FILE *out, const flow_t *f, const ckpt_t *ck, int windows, int S) {
    const model_dims_t *d = &ck->info.dims;
    fprintf(out, "gradflow: %s, %d layer(s) x %d, trained with windows of %d steps; windows of %d "
            "steps scored at the last (%.6f nats/char), %.0f of them (%d streams x up to %d)\n",
            cell_kind_name(d->cell), d->layers, d->H, ck->info.seq, f->K + 1,
            f->loss / f->count, f->count, S, windows);
    fprintf(out, "%6s", "k");
    for (int l = 0; l < f->layers; l++) fprintf(out, "  ||dL_t/dh_{t-k}|| l%-2d", l);
    fprintf(out, "\n");
    for (int k = 0; k <= f->K; k++) {
        fprintf(out, "%6d", k);
        for (int l = 0; l < f->layers; l++)
            fprintf(out, "  %22.6e", f->norm[l * (f->K + 1) + k] / f->count);
        fprintf(out, "\n");
    }
}

static void print_json(FILE *out, const flow_t *f, const ckpt_t *ck) {
    const model_dims_t *d = &ck->info.dims;
    fprintf(out, "{\"cell\":\"%s\",\"layers\":%d,\"hidden\":%d,\"embed\":%d,\"vocab_size\":%d,"
            "\"train_seq\":%d,\"step\":%lld,\"max_lag\":%d,\"samples\":%.0f,\"loss\":%.9g,"
            "\"norm\":[",
            cell_kind_name(d->cell), d->layers, d->H, d->E, d->V, ck->info.seq,
            (long long)ck->info.step, f->K, f->count, f->loss / f->count);
    for (int l = 0; l < f->layers; l++) {
        fprintf(out, "%s[", l ? "," : "");
        for (int k = 0; k <= f->K; k++)
            fprintf(out, "%s%.9g", k ? "," : "", f->norm[l * (f->K + 1) + k] / f->count);
        fprintf(out, "]");
    }
    fprintf(out, "]}\n");
}

/* Writes the JSON of f to path (rank 0). Returns CHARLM_OK or CHARLM_EINPUT naming the file. */
static int write_json(const char *path, const flow_t *f, const ckpt_t *ck) {
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    CHARLM_CHECK(mem);
    print_json(mem, f, ck);
    fclose(mem);
    int e = fileio_write_atomic(path, buf, len);
    free(buf);
    return e ? err_set(CHARLM_EINPUT, "gradflow: --json %s: cannot write: %s", path, strerror(e))
             : CHARLM_OK;
}

static int run(const gradflow_args_t *a, const dist_t *d) {
    ckpt_t ck;
    int rc = dist_agree(d, ckpt_read(&ck, a->ckpt));
    if (rc) return rc;
    const int K = a->max_lag ? a->max_lag : 2 * ck.info.seq, T = K + 1, B = a->batch;
    const int S = d->size * B;
    eval_text_t t;
    rc = eval_text_open(&t, a->texts, a->ntexts, a->skip_unknown, &ck.vocab, "gradflow",
                        d->rank);
    /* S streams of L predictions each; every stream needs one window of K+1 steps and the
     * target after it */
    const int64_t L = rc ? 0 : (t.total - 1) / S;
    if (!rc && L < T)
        rc = err_set(CHARLM_EINPUT, "gradflow: the text has %lld character(s); %d stream(s) "
                     "(%d rank(s) x --batch %d) of one window of --max-lag %d + 1 steps need at "
                     "least %lld", (long long)t.total, S, d->size, B, K,
                     (long long)S * T + 1);
    const int windows = rc ? 0 : (int)(L / T < a->windows ? L / T : a->windows);
    const int64_t n = (int64_t)windows * T + 1; /* characters per stream */
    const double nparams = model_nparams(&ck.info.dims);
    if (!rc)
        rc = model_window_fits(&ck.info.dims, B, T,
                               4.0 * (2 * nparams + (double)B * n +
                                      (double)ck.info.dims.layers * T * B * ck.info.dims.H),
                               d->local_size, "gradflow: --batch");
    if ((rc = dist_agree(d, rc))) {
        eval_text_free(&t);
        ckpt_free(&ck);
        return rc;
    }
    int32_t **ids = xcalloc((size_t)B, sizeof *ids);
    int64_t *lens = xcalloc((size_t)B, sizeof *lens);
    for (int b = 0; b < B && !rc; b++) {
        ids[b] = xcalloc((size_t)n, sizeof(int32_t));
        rc = eval_text_read(ids[b], &lens[b], &t, (int64_t)(d->rank * B + b) * L, n);
    }
    rc = dist_agree(d, rc);
    flow_t f = {.layers = ck.info.dims.layers, .K = K};
    const int nsums = f.layers * T + 2;
    double *sums = xcalloc((size_t)nsums, sizeof(double));
    f.norm = sums;
    if (!rc) {
        model_t m;
        ckpt_model(&m, &ck);
        measure(&f, &m, ids, lens, B, windows);
        model_free(&m);
        sums[nsums - 2] = f.loss;
        sums[nsums - 1] = f.count;
        dist_sum_doubles(sums, nsums);
        f.loss = sums[nsums - 2];
        f.count = sums[nsums - 1];
        if (!f.count)
            rc = err_set(CHARLM_EINPUT, "gradflow: no window of %d steps is left once the "
                         "unknown characters are dropped", T);
        if (!rc && d->rank == 0) {
            print_table(stdout, &f, &ck, windows, S);
            if (a->json) rc = write_json(a->json, &f, &ck);
        }
        rc = dist_agree(d, rc);
    }
    free(sums);
    for (int b = 0; b < B; b++) free(ids[b]);
    free(ids);
    free(lens);
    eval_text_free(&t);
    ckpt_free(&ck);
    return rc;
}

int gradflow_main(int argc, char **argv, const dist_t *d) {
    gradflow_args_t a;
    int rc = dist_agree(d, parse_args(&a, argc, argv));
    dist_blas_threads(d);
    if (!rc) rc = run(&a, d);
    free((void *)a.texts);
    return rc;
}
