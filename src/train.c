#include "charlm/train.h"

#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "charlm/checkpoint.h"
#include "charlm/corpus.h"
#include "charlm/err.h"
#include "charlm/log.h"
#include "charlm/model.h"
#include "charlm/optim.h"
#include "charlm/sample.h"

enum { SAMPLE_LENGTH = 300 };

/* Set by the signal handler; read only at window boundaries. */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) {
    if (sig == SIGINT) signal(SIGINT, SIG_DFL); /* a second Ctrl-C aborts at once */
    stop_signal = sig;
}

/* Where the time of a run goes (seconds, this rank). */
typedef struct {
    double forward, backward, allreduce, optimizer, eval, checkpoint;
} timers_t;

/* Back to the default actions; after a signal stop, further TERM/USR1 (a batch system repeats
 * them) are ignored so that they cannot turn exit 3 into a kill while the ranks shut down. */
static void restore_signals(int stopped) {
    signal(SIGTERM, stopped ? SIG_IGN : SIG_DFL);
    signal(SIGUSR1, stopped ? SIG_IGN : SIG_DFL);
    signal(SIGINT, SIG_DFL);
}

/* Everything one rank holds during training, allocated once in trainer_open. */
typedef struct {
    const config_t *cfg;
    const dist_t *d;
    corpus_t corpus;
    model_t model;
    optim_t opt;
    sched_params_t sched;
    float *grads;                 /* (nparams) */
    model_acts_t acts;            /* training window (B, T) */
    model_acts_t eval;            /* validation window (B, T), no dropout */
    float *state_h, *state_c;     /* (layers, B, H) carried training state */
    float *prev_h, *prev_c;       /* (layers, B, H) the state before the current window */
    float *eval_h, *eval_c;       /* (layers, B, H) validation state */
    int64_t step, cursor, epoch, total;
    double lr, last_train, last_val, best_val;
    int64_t last_val_step;
    timers_t tm;
    double rss_start;             /* peak RSS before any of the above: MPI and the libraries */
    /* rank 0 only */
    log_t log;
    char *config_text;            /* canonical INI of cfg */
    float *all_h, *all_c;         /* (layers, S, H) gathered for checkpoints */
    double *train_hist, *val_hist; /* (n, 3) step, loss, grad norm; (n, 2) step, val loss */
    int64_t n_train, n_val, cap_train, cap_val;
} trainer_t;

/* mkdir -p */
static int make_dirs(const char *path) {
    char buf[CHARLM_PATH_MAX];
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

/* Keeps only the lines of metrics.jsonl up to `step`: a resumed run recomputes the rest. */
static int truncate_metrics(const char *run_dir, int64_t step) {
    char path[CHARLM_PATH_MAX + 32], tmp[CHARLM_PATH_MAX + 40];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *in = fopen(path, "r");
    if (!in) return CHARLM_OK;
    FILE *out = fopen(tmp, "w");
    if (!out) {
        fclose(in);
        return err_set(CHARLM_EINPUT, "%s: cannot write: %s", tmp, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, in) > 0) {
        long long s;
        if (sscanf(line, "{\"step\":%lld", &s) == 1 && s > step) continue;
        fputs(line, out);
    }
    free(line);
    fclose(in);
    int bad = fflush(out) != 0 || ferror(out);
    bad |= fclose(out) != 0;
    if (bad || rename(tmp, path) != 0) {
        remove(tmp);
        return err_set(CHARLM_EINPUT, "%s: cannot rewrite: %s", path, strerror(errno));
    }
    return CHARLM_OK;
}

/* Prepares run.dir on rank 0: creates it, writes the resolved configuration to config.ini
 * through a temporary file, and sets metrics.jsonl up: on a fresh start an earlier run's file is
 * kept as metrics.jsonl.N (first free N); on resume its lines past the checkpoint are dropped. */
static int prepare_run_dir(const trainer_t *tr, int resumed) {
    const config_t *cfg = tr->cfg;
    int rc = make_dirs(cfg->run_dir);
    if (rc) return rc;
    char path[CHARLM_PATH_MAX + 32], tmp[CHARLM_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/config.ini", cfg->run_dir);
    snprintf(tmp, sizeof tmp, "%s/config.ini.tmp", cfg->run_dir);
    FILE *f = fopen(tmp, "w");
    if (!f) return err_set(CHARLM_EINPUT, "%s: cannot write: %s", tmp, strerror(errno));
    int bad = fputs(tr->config_text, f) < 0 || fflush(f) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        remove(tmp);
        return err_set(CHARLM_EINPUT, "%s: cannot write: %s", path, strerror(errno));
    }
    if (resumed) return truncate_metrics(cfg->run_dir, tr->step);
    char old[CHARLM_PATH_MAX + 32], aside[CHARLM_PATH_MAX + 48];
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


/* Checks that checkpoint ck can continue this run: same model, vocabulary, streams, window,
 * training text and optimizer kind. */
static int check_compatible(const trainer_t *tr, const ckpt_t *ck, const char *path) {
    const config_t *cfg = tr->cfg;
    const corpus_t *c = &tr->corpus;
    const ckpt_info_t *in = &ck->info;
    char msg[300];
    const struct {
        const char *key;
        long long mine, theirs;
    } same[] = {
        {"model.cell", cfg->cell, in->dims.cell},  {"model.layers", cfg->layers, in->dims.layers},
        {"model.hidden", cfg->hidden, in->dims.H}, {"model.embed", cfg->embed, in->dims.E},
        {"optim.kind", cfg->optim, in->optim},     {"train.seq", cfg->seq, in->seq},
    };
    size_t k = 0, n = sizeof same / sizeof *same;
    while (k < n && same[k].mine == same[k].theirs) k++;
    if (k == 0) {
        snprintf(msg, sizeof msg, "model.cell = %s differs from the checkpoint's %s",
                 cell_kind_name(cfg->cell), cell_kind_name(in->dims.cell));
    } else if (k == 4) {
        snprintf(msg, sizeof msg, "optim.kind = %s differs from the checkpoint's %s",
                 optim_kind_name(cfg->optim), optim_kind_name(in->optim));
    } else if (k < n) {
        snprintf(msg, sizeof msg, "%s = %lld differs from the checkpoint's %lld", same[k].key,
                 same[k].mine, same[k].theirs);
    } else if (in->streams != c->S) {
        snprintf(msg, sizeof msg,
                 "the checkpoint has %d streams, this run %d rank(s) x train.batch %d = %d "
                 "(keep ranks x train.batch = %d)",
                 in->streams, tr->d->size, c->B, c->S, in->streams);
    } else if (ck->vocab.size != c->vocab.size ||
               memcmp(ck->vocab.cps, c->vocab.cps, sizeof(uint32_t) * (size_t)c->vocab.size)) {
        snprintf(msg, sizeof msg, "the corpus vocabulary (%d characters) differs from the "
                                  "checkpoint's (%d)", c->vocab.size, ck->vocab.size);
    } else if (in->train_chars != c->ntrain) {
        snprintf(msg, sizeof msg, "the training text has %lld characters, the checkpoint's %lld",
                 (long long)c->ntrain, (long long)in->train_chars);
    } else if (ck->nmoments != tr->opt.nmoments) {
        snprintf(msg, sizeof msg, "the optimizer keeps %d moment buffers, the checkpoint %d",
                 tr->opt.nmoments, ck->nmoments);
    } else if (in->cursor >= c->windows) {
        snprintf(msg, sizeof msg, "cursor %lld is past the %lld windows of an epoch",
                 (long long)in->cursor, (long long)c->windows);
    } else {
        return CHARLM_OK;
    }
    return err_set(CHARLM_EINPUT, "cannot resume from %s: %s", path, msg);
}

/* Rank 0 picks and reads the checkpoint to resume from; every rank then receives its content.
 * Sets *resumed. Collective. */
static int resume_from(trainer_t *tr, const char *resume, int *resumed) {
    const dist_t *d = tr->d;
    const config_t *cfg = tr->cfg;
    char path[CHARLM_PATH_MAX + 64] = "";
    ckpt_t ck;
    memset(&ck, 0, sizeof ck);
    int rc = CHARLM_OK, found = 0;
    if (d->rank == 0) {
        if (!resume) {
            if (ckpt_find_latest(&ck, path, sizeof path, cfg->run_dir))
                rc = err_set(CHARLM_EINPUT,
                             "run.dir %s already holds checkpoints: continue it with --resume auto "
                             "or choose another run.dir", cfg->run_dir);
        } else if (!strcmp(resume, "auto")) {
            found = ckpt_find_latest(&ck, path, sizeof path, cfg->run_dir);
        } else {
            snprintf(path, sizeof path, "%s", resume);
            found = 1;
            rc = ckpt_read(&ck, path);
        }
        if (!rc && found) rc = check_compatible(tr, &ck, path);
    }
    if ((rc = dist_agree(d, rc))) {
        ckpt_free(&ck);
        return rc;
    }
    MPI_Bcast(&found, 1, MPI_INT, 0, MPI_COMM_WORLD);
    *resumed = found;
    if (!found) return CHARLM_OK;

    double pos[8] = {(double)ck.info.step, (double)ck.info.epoch, (double)ck.info.cursor,
                     (double)ck.info.optim_step, ck.info.lr, ck.info.last_train_loss,
                     ck.info.last_val_loss, ck.info.best_val_loss};
    MPI_Bcast(pos, 8, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    tr->step = (int64_t)pos[0], tr->epoch = (int64_t)pos[1], tr->cursor = (int64_t)pos[2];
    tr->opt.step = (int64_t)pos[3];
    tr->lr = pos[4], tr->last_train = pos[5], tr->last_val = pos[6], tr->best_val = pos[7];
    model_t *m = &tr->model;
    if (d->rank == 0) memcpy(m->params, ck.params, sizeof(float) * (size_t)m->nparams);
    MPI_Bcast(m->params, (int)m->nparams, MPI_FLOAT, 0, MPI_COMM_WORLD);
    for (int i = 0; i < tr->opt.nmoments; i++) {
        float *mom = optim_moment(&tr->opt, i);
        if (d->rank == 0) memcpy(mom, ck.moments[i], sizeof(float) * (size_t)m->nparams);
        MPI_Bcast(mom, (int)m->nparams, MPI_FLOAT, 0, MPI_COMM_WORLD);
    }
    /* (layers, S, H) -> this rank's (layers, B, H): the streams are dealt in rank order */
    const int BH = tr->corpus.B * cfg->hidden, SH = tr->corpus.S * cfg->hidden;
    for (int l = 0; l < cfg->layers; l++) {
        MPI_Scatter(ck.h ? ck.h + (size_t)l * SH : NULL, BH, MPI_FLOAT, tr->state_h + (size_t)l * BH,
                    BH, MPI_FLOAT, 0, MPI_COMM_WORLD);
        if (m->ops->has_c)
            MPI_Scatter(ck.c ? ck.c + (size_t)l * SH : NULL, BH, MPI_FLOAT,
                        tr->state_c + (size_t)l * BH, BH, MPI_FLOAT, 0, MPI_COMM_WORLD);
    }
    if (d->rank == 0) {
        /* the history becomes ours: hand the buffers over instead of copying */
        tr->train_hist = ck.train_hist, tr->n_train = tr->cap_train = ck.n_train;
        tr->val_hist = ck.val_hist, tr->n_val = tr->cap_val = ck.n_val;
        ck.train_hist = ck.val_hist = NULL;
        fprintf(stderr, "charlm: resuming from %s at step %lld (epoch %lld)\n", path,
                (long long)tr->step, (long long)tr->epoch);
    }
    ckpt_free(&ck);
    return CHARLM_OK;
}

static int trainer_open(trainer_t *tr, const config_t *cfg, const char *resume,
                        const dist_t *d) {
    memset(tr, 0, sizeof *tr);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    tr->rss_start = (double)ru.ru_maxrss * 1024.0;
    tr->cfg = cfg;
    tr->d = d;
    tr->last_train = tr->last_val = tr->best_val = NAN;
    tr->last_val_step = -1;
    corpus_params_t cp = config_corpus_params(cfg);
    int rc = corpus_load(&tr->corpus, &cp, d->rank, d->size, d->rank == 0);
    if ((rc = dist_agree(d, rc))) return rc;

    model_dims_t dims;
    model_params_t mp = config_model_params(cfg);
    model_dims(&dims, &mp, tr->corpus.vocab.size);
    model_init(&tr->model, &dims, cfg->seed);
    optim_params_t op = config_optim_params(cfg);
    optim_init(&tr->opt, &op, tr->model.nparams);
    tr->sched = config_sched_params(cfg);
    tr->grads = xcalloc((size_t)tr->model.nparams, sizeof(float));
    const int B = cfg->batch, T = cfg->seq;
    model_acts_alloc(&tr->acts, &tr->model, B, T, cfg->dropout > 0 ? MODEL_ACTS_DROPOUT : 0);
    size_t nstate = (size_t)cfg->layers * B * cfg->hidden;
    tr->state_h = xcalloc(nstate, sizeof(float));
    tr->state_c = xcalloc(nstate, sizeof(float));
    tr->prev_h = xcalloc(nstate, sizeof(float));
    tr->prev_c = xcalloc(nstate, sizeof(float));
    if (tr->corpus.nval) {
        model_acts_alloc(&tr->eval, &tr->model, B, T, 0);
        tr->eval_h = xcalloc(nstate, sizeof(float));
        tr->eval_c = xcalloc(nstate, sizeof(float));
    }
    /* train.steps, when given, is the length of the run; train.epochs sets it otherwise */
    tr->total = cfg->steps ? cfg->steps : cfg->epochs * tr->corpus.windows;
    tr->lr = cfg->lr;
    if (d->rank == 0) {
        size_t all = (size_t)cfg->layers * tr->corpus.S * cfg->hidden, len = 0;
        tr->all_h = xcalloc(all, sizeof(float));
        tr->all_c = xcalloc(all, sizeof(float));
        FILE *f = open_memstream(&tr->config_text, &len);
        CHARLM_CHECK(f != NULL);
        config_write(cfg, f);
        fclose(f);
    }
    int resumed = 0;
    if ((rc = resume_from(tr, resume, &resumed))) return rc;
    if (d->rank == 0) rc = prepare_run_dir(tr, resumed);
    if (d->rank == 0 && !rc) rc = log_open(&tr->log, cfg->run_dir);
    return dist_agree(d, rc);
}

static void trainer_close(trainer_t *tr) {
    if (tr->log.metrics) log_close(&tr->log);
    free(tr->grads);
    free(tr->state_h), free(tr->state_c), free(tr->prev_h), free(tr->prev_c);
    free(tr->eval_h), free(tr->eval_c);
    free(tr->all_h), free(tr->all_c), free(tr->config_text);
    free(tr->train_hist), free(tr->val_hist);
    model_acts_free(&tr->acts);
    if (tr->eval.B) model_acts_free(&tr->eval);
    optim_free(&tr->opt);
    model_free(&tr->model);
    corpus_free(&tr->corpus);
}

/* Appends a row of `width` doubles to a history array, growing it geometrically. */
static void hist_push(double **h, int64_t *n, int64_t *cap, int width, const double *row) {
    if (*n == *cap) {
        int64_t ncap = *cap ? 2 * *cap : 256;
        double *bigger = xcalloc((size_t)ncap * width, sizeof(double));
        if (*n) memcpy(bigger, *h, sizeof(double) * (size_t)(*n * width));
        free(*h);
        *h = bigger, *cap = ncap;
    }
    memcpy(*h + *n * width, row, sizeof(double) * (size_t)width);
    (*n)++;
}

/* Collective: gathers the streams' state on rank 0, which writes ckpt-<step>.h5 atomically,
 * drops old ones beyond checkpoint.keep, and points best.h5 at it when this step's validation is
 * the best so far. */
static int save_checkpoint(trainer_t *tr, char *path, size_t n) {
    const config_t *cfg = tr->cfg;
    const corpus_t *c = &tr->corpus;
    const int BH = c->B * cfg->hidden, SH = c->S * cfg->hidden;
    const int has_c = tr->model.ops->has_c;
    for (int l = 0; l < cfg->layers; l++) {
        MPI_Gather(tr->state_h + (size_t)l * BH, BH, MPI_FLOAT,
                   tr->all_h ? tr->all_h + (size_t)l * SH : NULL, BH, MPI_FLOAT, 0, MPI_COMM_WORLD);
        if (has_c)
            MPI_Gather(tr->state_c + (size_t)l * BH, BH, MPI_FLOAT,
                       tr->all_c ? tr->all_c + (size_t)l * SH : NULL, BH, MPI_FLOAT, 0,
                       MPI_COMM_WORLD);
    }
    int rc = CHARLM_OK;
    if (tr->d->rank == 0) {
        int best = tr->last_val_step == tr->step &&
                   (isnan(tr->best_val) || tr->last_val < tr->best_val);
        if (best) tr->best_val = tr->last_val;
        ckpt_write_t w = {
            .info = {.step = tr->step, .epoch = tr->epoch, .cursor = tr->cursor,
                     .tokens_seen = tr->step * c->S * c->T, .train_chars = c->ntrain,
                     .world_size = tr->d->size, .streams = c->S, .seq = c->T, .lr = tr->lr,
                     .last_train_loss = tr->last_train, .last_val_loss = tr->last_val,
                     .best_val_loss = tr->best_val, .dims = tr->model.d,
                     .optim = tr->opt.p.kind, .optim_step = tr->opt.step},
            .config = tr->config_text, .vocab = &c->vocab, .params = tr->model.params,
            .nmoments = tr->opt.nmoments,
            .moments = {optim_moment(&tr->opt, 0), optim_moment(&tr->opt, 1)},
            .h = tr->all_h, .c = has_c ? tr->all_c : NULL,
            .train_hist = tr->train_hist, .n_train = tr->n_train,
            .val_hist = tr->val_hist, .n_val = tr->n_val};
        ckpt_path(path, n, cfg->run_dir, tr->step);
        rc = ckpt_write(path, &w);
        if (!rc) ckpt_rotate(cfg->run_dir, cfg->ckpt_keep);
        if (!rc && best) rc = ckpt_mark_best(path, cfg->run_dir);
    }
    return dist_agree(tr->d, rc);
}

/* The window at tr->cursor: inputs and targets (T, B) from this rank's streams. */
static void load_window(trainer_t *tr) {
    const corpus_t *c = &tr->corpus;
    const int B = c->B, T = c->T;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int64_t i = tr->cursor * T + t;
            tr->acts.inputs[t * B + b] = corpus_train_id(c, b, i);
            tr->acts.targets[t * B + b] = corpus_train_id(c, b, i + 1);
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
                tr->eval.inputs[t * B + b] = in ? corpus_val_id(c, b, i) : 0;
                tr->eval.targets[t * B + b] = in ? corpus_val_id(c, b, i + 1) : -1;
            }
        sum += model_forward(&tr->eval, tr->eval_h, tr->model.ops->has_c ? tr->eval_c : NULL,
                             &tr->model, Tw, NULL, 1.0f, 0);
    }
    dist_sum_doubles(&sum, 1);
    return sum / (double)c->val_pred;
}

/* Rank 0: a sample of the model as it is now, from a newline, on stdout. */
static void print_sample(trainer_t *tr, int64_t length, double temperature) {
    const vocab_t *v = &tr->corpus.vocab;
    log_msg(&tr->log, "charlm: sample at step %lld (temperature %g):", (long long)tr->step,
            temperature);
    int32_t prime = vocab_id(v, '\n');
    if (prime < 0) prime = 0;
    sample_opts_t o = {.length = length, .temperature = temperature, .top_p = 1.0,
                       .seed = tr->cfg->seed, .index = (uint64_t)tr->step};
    sample_text(stdout, &tr->model, v, &prime, 1, &o);
    fputc('\n', stdout);
    fflush(stdout);
}

static void overlap_ready(int64_t from, void *ctx) { dist_overlap_ready(ctx, from); }
static void overlap_poll(void *ctx) { dist_overlap_poll(ctx); }

static double lap(double *t) {
    double now = MPI_Wtime(), d = now - *t;
    *t = now;
    return d;
}

/* Bytes this rank needs by design: parameters, gradients and optimizer moments, the window's
 * activations (training and validation), the carried states and its corpus shard. */
static double analytic_bytes(const trainer_t *tr) {
    const corpus_t *c = &tr->corpus;
    double floats = (double)tr->model.nparams * (2 + tr->opt.nmoments) +
                    6.0 * tr->cfg->layers * c->B * tr->cfg->hidden;
    double shard = (double)(c->B * c->L + 1) * c->train.width;
    for (int b = 0; b < c->B && c->nval; b++) shard += (double)(c->val_len[b] + 1) * c->val_ids.width;
    return 4.0 * floats + shard + (double)tr->acts.bytes + (double)tr->eval.bytes;
}

/* Collective: the end-of-run report — throughput, GFLOP/s, where the time went, peak memory —
 * on stderr and as the summary record of metrics.jsonl. */
static void report(trainer_t *tr, int64_t step0, double secs) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss = (double)ru.ru_maxrss * 1024.0, rss_max = rss;
    MPI_Reduce(&rss, &rss_max, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    /* The rank that finishes backward last waits only for the communication itself; the
     * others also wait for it: report both. */
    double wait[2] = {tr->tm.allreduce, -tr->tm.allreduce};
    MPI_Allreduce(MPI_IN_PLACE, wait, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (tr->d->rank != 0) return;
    const timers_t *t = &tr->tm;
    int64_t steps = tr->step - step0;
    if (steps == 0) {
        log_msg(&tr->log, "charlm: nothing to do: the run is at step %lld of %lld",
                (long long)tr->step, (long long)tr->total);
        return;
    }
    double train_s = t->forward + t->backward + t->allreduce + t->optimizer;
    double chars = (double)steps * tr->corpus.S * tr->corpus.T;
    double cps = chars / train_s, gflops = cps * model_flops_executed_per_char(&tr->model, &tr->acts) * 1e-9;
    double need = analytic_bytes(tr), mib = 1024.0 * 1024.0;
    log_msg(&tr->log, "charlm: %lld steps in %.1f s: %.0f chars/s, %.2f GFLOP/s", (long long)steps,
            secs, cps, gflops);
    double comm = -wait[1], waited = wait[0];
    log_msg(&tr->log,
            "charlm: time: forward %.1f%%, backward %.1f%%, all-reduce wait %.1f%% (slowest "
            "rank; %.1f%% on the rank that waited most), optimizer %.1f%% of training; "
            "validation %.1f s, checkpoints %.1f s",
            100 * t->forward / train_s, 100 * t->backward / train_s, 100 * comm / train_s,
            100 * waited / train_s, 100 * t->optimizer / train_s, t->eval, t->checkpoint);
    /* the libraries' own start-up memory (MPI, HDF5 and what it links) does not grow with the
     * model, so the ratio is given both with and without it */
    log_msg(&tr->log, "charlm: memory: peak RSS %.1f MiB (rank 0), %.1f MiB (largest rank), of "
            "which %.1f MiB before the model (MPI and the libraries); analytic need %.1f MiB per "
            "rank: peak %.2fx of it, %.2fx without the start-up part", rss / mib, rss_max / mib,
            tr->rss_start / mib, need / mib, rss_max / need, (rss_max - tr->rss_start) / need);
    if (tr->last_val_step >= 0)
        log_msg(&tr->log, "charlm: validation loss %.4f nats/char, %.4f bits/char", tr->last_val,
                tr->last_val / log(2.0));
    log_field_t f[] = {{"chars_per_s", cps},        {"gflops", gflops},
                       {"time_forward_s", t->forward}, {"time_backward_s", t->backward},
                       {"time_allreduce_s", comm}, {"time_allreduce_max_s", waited},
                       {"time_optimizer_s", t->optimizer},
                       {"time_eval_s", t->eval},    {"time_checkpoint_s", t->checkpoint},
                       {"elapsed_s", secs},         {"peak_rss_mib", rss / mib},
                       {"peak_rss_max_mib", rss_max / mib}, {"analytic_mib", need / mib},
                       {"startup_rss_mib", tr->rss_start / mib}};
    log_summary(&tr->log, tr->step, f, (int)(sizeof f / sizeof *f));
}

static void print_header(trainer_t *tr, int threads) {
    const config_t *cfg = tr->cfg;
    const corpus_t *c = &tr->corpus;
    log_msg(&tr->log,
            "charlm: %s %dx%d (embed %d), %lld parameters, vocabulary %d; train %lld chars, "
            "validation %lld chars",
            cell_kind_name(cfg->cell), cfg->layers, cfg->hidden, cfg->embed,
            (long long)tr->model.nparams, c->vocab.size, (long long)c->ntrain,
            (long long)c->nval);
    log_msg(&tr->log,
            "charlm: %d rank(s) x %d streams x %d steps = %d chars/window, %lld windows/epoch, "
            "%lld steps%s, %d BLAS thread(s) per rank",
            tr->d->size, c->B, c->T, c->S * c->T, (long long)c->windows,
            (long long)tr->total, tr->total ? "" : " (no step limit)", threads);
}

int train_run(const config_t *cfg, const char *resume, const dist_t *d) {
    /* from the start: a signal during start-up stops the run after its first window */
    stop_signal = 0;
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGUSR1, on_signal);
    signal(SIGXFSZ, SIG_IGN); /* a file-size limit fails the write instead of killing us */
    trainer_t tr;
    int rc = trainer_open(&tr, cfg, resume, d);
    if (rc) {
        restore_signals(0);
        trainer_close(&tr);
        return rc;
    }

    const int rank0 = d->rank == 0;
    const corpus_t *c = &tr.corpus;
    const int64_t chars_per_step = (int64_t)c->S * c->T;
    const size_t nstate = (size_t)cfg->layers * c->B * cfg->hidden;
    int threads = dist_blas_threads(d);
    if (rank0) print_header(&tr, threads);

    char ckpt[CHARLM_PATH_MAX + 64] = "";
    dist_overlap_t ov;
    model_hooks_t hooks = {overlap_ready, overlap_poll, &ov};
    double t0 = MPI_Wtime(), t_log = t0;
    const int64_t step0 = tr.step;
    int64_t step_log = tr.step;
    int stopped = 0;
    while (!(tr.total && tr.step >= tr.total)) {
        load_window(&tr);
        memcpy(tr.prev_h, tr.state_h, nstate * sizeof(float));
        memcpy(tr.prev_c, tr.state_c, nstate * sizeof(float));
        model_dropout_t drop = {(float)cfg->dropout, cfg->seed, tr.step, c->first_stream};
        double t = MPI_Wtime();
        double loss = model_forward(&tr.acts, tr.state_h,
                                    tr.model.ops->has_c ? tr.state_c : NULL, &tr.model, c->T,
                                    &drop, 1.0f / (float)chars_per_step, 1);
        tr.tm.forward += lap(&t);
        dist_overlap_begin(&ov, tr.grads, tr.model.nparams, DIST_PIECE);
        model_backward(tr.grads, &tr.acts, &tr.model, c->T, &hooks);
        tr.tm.backward += lap(&t);
        dist_overlap_wait(&ov);
        /* the loss, rank 0's clock and every rank's signal flag travel together, so all ranks
         * take the same decision at this window boundary */
        double red[3] = {loss, rank0 && cfg->time_limit > 0 && MPI_Wtime() - t0 >= cfg->time_limit,
                         stop_signal != 0};
        dist_sum_doubles(red, 3);
        tr.tm.allreduce += lap(&t);
        loss = red[0] / (double)chars_per_step;
        double gnorm = optim_clip(tr.grads, tr.model.nparams, cfg->clip);
        if (!isfinite(loss) || !isfinite(gnorm)) {
            /* the parameters are still those of the last good step: checkpoint them with the
             * state they had before this window */
            memcpy(tr.state_h, tr.prev_h, nstate * sizeof(float));
            memcpy(tr.state_c, tr.prev_c, nstate * sizeof(float));
            rc = save_checkpoint(&tr, ckpt, sizeof ckpt);
            if (!rc) {
                rc = err_set(CHARLM_EDIVERGED,
                             "training diverged at step %lld: loss %g, gradient norm %g; the last "
                             "good state is in %s",
                             (long long)tr.step + 1, loss, gnorm, ckpt);
                if (rank0) fprintf(stderr, "charlm: error: %s\n", err_message());
            }
            break;
        }
        tr.lr = optim_lr(&tr.sched, tr.step, tr.total);
        optim_step(tr.model.params, &tr.opt, tr.grads, tr.lr);
        tr.tm.optimizer += lap(&t);
        tr.step++;
        tr.last_train = loss;
        if (++tr.cursor == c->windows) { /* epoch wrap: streams start again from zero state */
            tr.cursor = 0;
            tr.epoch++;
            memset(tr.state_h, 0, nstate * sizeof(float));
            memset(tr.state_c, 0, nstate * sizeof(float));
        }
        stopped = red[2] > 0;
        int last = red[1] > 0 || (tr.total && tr.step >= tr.total);
        if (rank0 && (tr.step % cfg->log_every == 0 || last || stopped)) {
            double now = MPI_Wtime();
            log_train_t m = {tr.step, tr.total, tr.epoch, loss, tr.lr, gnorm, 0, now - t0, -1};
            m.chars_per_s = (double)(tr.step - step_log) * chars_per_step / (now - t_log);
            if (tr.total)
                m.eta_s = (now - t0) / (double)(tr.step - step0) * (double)(tr.total - tr.step);
            if (cfg->time_limit > 0 && (m.eta_s < 0 || m.eta_s > cfg->time_limit - (now - t0)))
                m.eta_s = fmax(cfg->time_limit - (now - t0), 0.0);
            log_train(&tr.log, &m);
            double row[3] = {(double)tr.step, loss, gnorm};
            hist_push(&tr.train_hist, &tr.n_train, &tr.cap_train, 3, row);
            t_log = now, step_log = tr.step;
        }
        if (c->nval && ((cfg->eval_every && tr.step % cfg->eval_every == 0) || last)) {
            double t_eval = MPI_Wtime();
            tr.last_val = evaluate(&tr);
            tr.last_val_step = tr.step;
            t_eval = MPI_Wtime() - t_eval;
            t_log += t_eval; /* chars/s counts training windows only */
            tr.tm.eval += t_eval;
            if (rank0) {
                log_val(&tr.log, tr.step, tr.last_val);
                if (cfg->sample_every && tr.step % cfg->sample_every == 0)
                    print_sample(&tr, cfg->sample_length, cfg->sample_temperature);
                double row[2] = {(double)tr.step, tr.last_val};
                hist_push(&tr.val_hist, &tr.n_val, &tr.cap_val, 2, row);
            }
        }
        if (last || stopped || (cfg->ckpt_every && tr.step % cfg->ckpt_every == 0)) {
            double t_ckpt = MPI_Wtime();
            if ((rc = save_checkpoint(&tr, ckpt, sizeof ckpt))) break;
            t_ckpt = MPI_Wtime() - t_ckpt;
            t_log += t_ckpt;
            tr.tm.checkpoint += t_ckpt;
        }
        if (stopped) {
            rc = CHARLM_ESTOPPED;
            if (rank0)
                log_msg(&tr.log, "charlm: stopped by a signal at step %lld; checkpoint %s "
                        "(continue with --resume auto)", (long long)tr.step, ckpt);
            break;
        }
        if (last) break;
    }
    if (!rc) report(&tr, step0, MPI_Wtime() - t0);
    if (!rc && rank0 && tr.step > step0) {
        if (ckpt[0]) log_msg(&tr.log, "charlm: checkpoint %s", ckpt);
        print_sample(&tr, SAMPLE_LENGTH, 1.0);
    }
    restore_signals(rc == CHARLM_ESTOPPED);
    trainer_close(&tr);
    return rc;
}
