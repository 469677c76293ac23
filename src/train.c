#include "charlm/train.h"

#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "charlm/corpus.h"
#include "charlm/err.h"
#include "charlm/log.h"
#include "charlm/model.h"
#include "charlm/optim.h"
#include "charlm/sample.h"

enum { SAMPLE_LENGTH = 300 };

/* Everything one rank holds during training, allocated once in trainer_open. */
typedef struct {
    const config_t *cfg;
    const dist_t *d;
    corpus_t corpus;
    model_t model;
    optim_t opt;
    float *grads;          /* (nparams) */
    model_acts_t acts;     /* training window (B, T) */
    model_acts_t eval;     /* validation window (B, T), no dropout */
    float *state_h, *state_c;   /* (layers, B, H) carried training state */
    float *eval_h, *eval_c;     /* (layers, B, H) validation state */
    int64_t step, cursor, epoch, total;
    log_t log;             /* rank 0 only */
} trainer_t;

/* mkdir -p */
static int make_dirs(const char *path) {
    char buf[CONFIG_PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char keep = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return err_set(CHARLM_EINPUT, "run.dir: cannot create %s: %s", buf,
                               strerror(errno));
            *p = keep;
            if (!keep) break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return err_set(CHARLM_EINPUT, "run.dir: %s is not a directory", path);
    return CHARLM_OK;
}

/* Writes the resolved configuration to <run.dir>/config.ini through a temporary file, so a
 * failure leaves no half-written file; an earlier run's metrics.jsonl is kept under the first
 * free name metrics.jsonl.N instead of being appended to. */
static int prepare_run_dir(const config_t *cfg) {
    int rc = make_dirs(cfg->run_dir);
    if (rc) return rc;
    char path[CONFIG_PATH_MAX + 32], tmp[CONFIG_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/config.ini", cfg->run_dir);
    snprintf(tmp, sizeof tmp, "%s/config.ini.tmp", cfg->run_dir);
    FILE *f = fopen(tmp, "w");
    if (!f) return err_set(CHARLM_EINPUT, "%s: cannot write: %s", tmp, strerror(errno));
    config_write(cfg, f);
    if (fflush(f) != 0 || ferror(f)) {
        fclose(f);
        remove(tmp);
        return err_set(CHARLM_EINPUT, "%s: write failed: %s", tmp, strerror(errno));
    }
    fclose(f);
    if (rename(tmp, path) != 0)
        return err_set(CHARLM_EINPUT, "%s: cannot rename: %s", path, strerror(errno));
    char old[CONFIG_PATH_MAX + 32], aside[CONFIG_PATH_MAX + 48];
    snprintf(old, sizeof old, "%s/metrics.jsonl", cfg->run_dir);
    struct stat st;
    if (stat(old, &st) == 0) {
        for (int i = 1;; i++) {
            snprintf(aside, sizeof aside, "%s.%d", old, i);
            if (stat(aside, &st) != 0) break;
        }
        if (rename(old, aside) != 0)
            return err_set(CHARLM_EINPUT, "%s: cannot move aside: %s", old, strerror(errno));
    }
    return CHARLM_OK;
}

static int64_t min_nonzero(int64_t a, int64_t b) { return !a ? b : !b ? a : a < b ? a : b; }

static int trainer_open(trainer_t *tr, const config_t *cfg, const dist_t *d) {
    memset(tr, 0, sizeof *tr);
    tr->cfg = cfg;
    tr->d = d;
    int rc = corpus_load(&tr->corpus, cfg, d->rank, d->size, d->rank == 0);
    if ((rc = dist_agree(d, rc))) return rc;
    if (d->rank == 0) rc = prepare_run_dir(cfg);
    if (d->rank == 0 && !rc) rc = log_open(&tr->log, cfg->run_dir);
    if ((rc = dist_agree(d, rc))) return rc;

    model_dims_t dims;
    model_dims(&dims, cfg, tr->corpus.vocab.size);
    model_init(&tr->model, &dims, cfg->seed);
    optim_init(&tr->opt, cfg, tr->model.nparams);
    tr->grads = xcalloc((size_t)tr->model.nparams, sizeof(float));
    const int B = cfg->batch, T = cfg->seq;
    model_acts_alloc(&tr->acts, &tr->model, B, T, cfg->dropout > 0);
    size_t nstate = (size_t)cfg->layers * B * cfg->hidden;
    tr->state_h = xcalloc(nstate, sizeof(float));
    tr->state_c = xcalloc(nstate, sizeof(float));
    if (tr->corpus.nval) {
        model_acts_alloc(&tr->eval, &tr->model, B, T, 0);
        tr->eval_h = xcalloc(nstate, sizeof(float));
        tr->eval_c = xcalloc(nstate, sizeof(float));
    }
    tr->total = min_nonzero(cfg->steps, cfg->epochs * tr->corpus.windows);
    return CHARLM_OK;
}

static void trainer_close(trainer_t *tr) {
    if (tr->d->rank == 0 && tr->log.metrics) log_close(&tr->log);
    free(tr->grads);
    free(tr->state_h), free(tr->state_c), free(tr->eval_h), free(tr->eval_c);
    model_acts_free(&tr->acts);
    if (tr->eval.B) model_acts_free(&tr->eval);
    optim_free(&tr->opt);
    model_free(&tr->model);
    corpus_free(&tr->corpus);
}

/* The window at tr->cursor: inputs and targets (T, B) from this rank's streams. */
static void load_window(trainer_t *tr) {
    const corpus_t *c = &tr->corpus;
    const int B = c->B, T = c->T;
    for (int b = 0; b < B; b++) {
        const int32_t *s = c->train + b * c->L + tr->cursor * T;
        for (int t = 0; t < T; t++) {
            tr->acts.inputs[t * B + b] = s[t];
            tr->acts.targets[t * B + b] = s[t + 1];
        }
    }
}

/* Collective: mean loss (nats/char) over every prediction of the validation split, the state
 * carried from window to window from zero. */
static double evaluate(trainer_t *tr) {
    const corpus_t *c = &tr->corpus;
    const int B = c->B, T = c->T;
    size_t nstate = (size_t)tr->cfg->layers * B * tr->cfg->hidden;
    memset(tr->eval_h, 0, nstate * sizeof(float));
    memset(tr->eval_c, 0, nstate * sizeof(float));
    double sum = 0.0;
    for (int64_t pos = 0; pos < c->val_maxlen; pos += T) {
        int Tw = (int)(c->val_maxlen - pos < T ? c->val_maxlen - pos : T);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < Tw; t++) {
                int64_t i = pos + t;
                int in = i < c->val_len[b];
                tr->eval.inputs[t * B + b] = in ? c->val[b][i] : 0;
                tr->eval.targets[t * B + b] = in ? c->val[b][i + 1] : -1;
            }
        sum += model_forward(&tr->eval, tr->eval_h, tr->model.ops->has_c ? tr->eval_c : NULL,
                             &tr->model, Tw, NULL, 1.0f, 0);
    }
    dist_sum_doubles(&sum, 1);
    return sum / (double)c->val_pred;
}

static void print_header(trainer_t *tr, int threads) {
    const config_t *cfg = tr->cfg;
    const corpus_t *c = &tr->corpus;
    log_msg(&tr->log,
            "charlm: %s %dx%d (embed %d), %lld parameters, vocabulary %d; train %lld chars, "
            "validation %lld chars",
            config_cell_name(cfg->cell), cfg->layers, cfg->hidden, cfg->embed,
            (long long)tr->model.nparams, c->vocab.size, (long long)c->ntrain,
            (long long)c->nval);
    log_msg(&tr->log,
            "charlm: %d rank(s) x %d streams x %d steps = %d chars/window, %lld windows/epoch, "
            "%lld steps%s, %d BLAS thread(s) per rank",
            tr->d->size, c->B, c->T, c->S * c->T, (long long)c->windows,
            (long long)tr->total, tr->total ? "" : " (no step limit)", threads);
}

int train_run(const config_t *cfg, const dist_t *d) {
    trainer_t tr;
    int rc = trainer_open(&tr, cfg, d);
    if (rc) {
        trainer_close(&tr);
        return rc;
    }
    const int rank0 = d->rank == 0;
    const corpus_t *c = &tr.corpus;
    const int64_t chars_per_step = (int64_t)c->S * c->T;
    const size_t nstate = (size_t)cfg->layers * c->B * cfg->hidden;
    int threads = dist_blas_threads(d);
    if (rank0) print_header(&tr, threads);

    double t0 = MPI_Wtime(), t_log = t0, eval_secs = 0;
    int64_t step_log = 0;
    int have_val = 0;
    double last_val = NAN;
    for (;;) {
        if (tr.total && tr.step >= tr.total) break;
        load_window(&tr);
        memset(tr.grads, 0, sizeof(float) * (size_t)tr.model.nparams);
        model_dropout_t drop = {(float)cfg->dropout, cfg->seed, tr.step, c->first_stream};
        double loss = model_forward(&tr.acts, tr.state_h,
                                    tr.model.ops->has_c ? tr.state_c : NULL, &tr.model, c->T,
                                    &drop, 1.0f / (float)chars_per_step, 1);
        model_backward(tr.grads, &tr.acts, &tr.model, c->T);
        dist_sum_floats(tr.grads, tr.model.nparams);
        /* the loss and rank 0's clock travel together: every rank sees the same stop decision */
        double red[2] = {loss, rank0 && cfg->time_limit > 0 && MPI_Wtime() - t0 >= cfg->time_limit};
        dist_sum_doubles(red, 2);
        loss = red[0] / (double)chars_per_step;
        double gnorm = optim_clip(tr.grads, tr.model.nparams, cfg->clip);
        if (!isfinite(loss) || !isfinite(gnorm)) {
            rc = err_set(CHARLM_EDIVERGED,
                         "training diverged at step %lld: loss %g, gradient norm %g",
                         (long long)tr.step + 1, loss, gnorm);
            if (rank0) fprintf(stderr, "charlm: error: %s\n", err_message());
            break;
        }
        double lr = optim_lr(cfg, tr.step, tr.total);
        optim_step(tr.model.params, &tr.opt, tr.grads, lr);
        tr.step++;
        if (++tr.cursor == c->windows) { /* epoch wrap: streams start again from zero state */
            tr.cursor = 0;
            tr.epoch++;
            memset(tr.state_h, 0, nstate * sizeof(float));
            memset(tr.state_c, 0, nstate * sizeof(float));
        }
        int last = red[1] > 0 || (tr.total && tr.step >= tr.total);
        if (rank0 && (tr.step % cfg->log_every == 0 || last)) {
            double now = MPI_Wtime();
            log_train_t m = {tr.step, tr.total, tr.epoch, loss, lr, gnorm, 0, now - t0, -1};
            m.chars_per_s = (double)(tr.step - step_log) * chars_per_step / (now - t_log);
            if (tr.total) m.eta_s = (now - t0) / (double)tr.step * (double)(tr.total - tr.step);
            log_train(&tr.log, &m);
            t_log = now, step_log = tr.step;
        }
        if (c->nval && ((cfg->eval_every && tr.step % cfg->eval_every == 0) || last)) {
            double t_eval = MPI_Wtime();
            last_val = evaluate(&tr);
            t_eval = MPI_Wtime() - t_eval;
            t_log += t_eval; /* chars/s counts training windows only */
            eval_secs += t_eval;
            have_val = 1;
            if (rank0) log_val(&tr.log, tr.step, last_val);
        }
        if (last) break;
    }
    if (!rc && rank0) {
        double secs = MPI_Wtime() - t0;
        log_msg(&tr.log, "charlm: %lld steps in %.1f s (%.0f chars/s; validation %.1f s)",
                (long long)tr.step, secs, (double)tr.step * chars_per_step / (secs - eval_secs),
                eval_secs);
        if (have_val)
            log_msg(&tr.log, "charlm: validation loss %.4f nats/char, %.4f bits/char",
                    last_val, last_val / log(2.0));
        log_msg(&tr.log, "charlm: sample (temperature 1):");
        int32_t prime = vocab_id(&c->vocab, '\n');
        if (prime < 0) prime = 0;
        sample_text(stdout, &tr.model, &c->vocab, &prime, 1, SAMPLE_LENGTH, 1.0, cfg->seed);
        fputc('\n', stdout);
        fflush(stdout);
    }
    trainer_close(&tr);
    return rc;
}
