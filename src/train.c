/* train: the training loop (DESIGN.md §1). train_run reads as the data flow of a run: open the
 * trainer (corpus shard, model, optimizer, buffers, resume, run directory), then one window after
 * another — train_window — each followed by maybe_log, maybe_eval, maybe_checkpoint and
 * maybe_stop. Every MPI exchange goes through dist. */
#include "charlm/train.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "charlm/checkpoint.h"
#include "charlm/corpus.h"
#include "charlm/err.h"
#include "charlm/fileio.h"
#include "charlm/log.h"
#include "charlm/model.h"
#include "charlm/optim.h"
#include "charlm/sample.h"

/* Set by the signal handler; read only at window boundaries. */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) {
    if (sig == SIGINT) signal(SIGINT, SIG_DFL); /* a second Ctrl-C aborts at once */
    stop_signal = sig;
}

/* From the start of train_run: a signal during start-up stops the run after its first window. */
static void catch_signals(void) {
    stop_signal = 0;
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGUSR1, on_signal);
    signal(SIGXFSZ, SIG_IGN); /* a file-size limit fails the write instead of killing us */
}

/* Back to the default actions; after a signal stop, further TERM/USR1 (a batch system repeats
 * them) are ignored so that they cannot turn exit 3 into a kill while the ranks shut down. */
static void restore_signals(int stopped) {
    signal(SIGTERM, stopped ? SIG_IGN : SIG_DFL);
    signal(SIGUSR1, stopped ? SIG_IGN : SIG_DFL);
    signal(SIGINT, SIG_DFL);
}

/* Where the time of a run goes (seconds, this rank). */
typedef struct {
    double forward, backward, allreduce, optimizer, eval, checkpoint;
} timers_t;

/* What one rank holds by design, in bytes, by part: computed before anything is allocated (in
 * double, so that no configuration overflows it) for the memory check, and shown by the
 * end-of-run report next to the peak RSS. */
typedef struct {
    double params; /* parameters, gradients and optimizer moments; rank 0, resuming: the
                      checkpoint's copy of parameters and moments too */
    double acts;   /* the activations of a training window and of a validation window */
    double states; /* carried, previous and validation states; rank 0: every stream's, for
                      checkpoints (twice when resuming: the checkpoint's) */
    double shard;  /* this rank's corpus ids */
} need_t;

/* Everything one rank holds during training, allocated once in trainer_open. */
typedef struct {
    const config_t *cfg;
    const dist_t *d;
    corpus_t corpus;
    model_t model;
    optim_t opt;
    sched_params_t sched;
    float *grads;                 /* (nparams) */
    dist_overlap_t ov;            /* the all-reduce of grads, overlapped with backward */
    model_acts_t acts;            /* training window (B, T) */
    model_acts_t eval;            /* validation window (B, T), no dropout */
    int64_t window_chars;         /* S * T: the predictions of a window over all ranks */
    size_t nstate;                /* layers * B * H */
    float *state_h, *state_c;     /* (layers, B, H) carried training state */
    float *prev_h, *prev_c;       /* (layers, B, H) the state before the current window */
    float *eval_h, *eval_c;       /* (layers, B, H) validation state */
    int64_t step, cursor, epoch, total;
    double lr, last_train, last_val, best_val;
    int64_t last_val_step;
    /* clocks: the start of this process's part of the run, and of the current log interval */
    int64_t step0, step_log;
    double t0, t_log;
    timers_t tm;
    double rss_start;             /* peak RSS before any of the above: MPI and the libraries */
    need_t need;                  /* what this rank holds by design (train_need) */
    char ckpt[CHARLM_PATH_MAX + 64]; /* the newest checkpoint written ("" = none yet) */
    /* rank 0 only */
    fileio_lock_t lock;           /* run.dir/lock, held from the start to trainer_close */
    log_t log;
    char *config_text;            /* canonical INI of cfg */
    float *all_h, *all_c;         /* (layers, S, H) gathered for checkpoints */
    double *train_hist, *val_hist; /* (n, 3) step, loss, grad norm; (n, 2) step, val loss */
    int64_t n_train, n_val;
    size_t cap_train, cap_val;    /* rows allocated */
} trainer_t;

/* What a window ends with: the same on every rank. */
typedef struct {
    double loss;   /* mean over the window's S*T predictions, nats/char */
    double gnorm;  /* global gradient norm, before clipping */
    int last;      /* the run ends after this window: train.steps, train.epochs or time_limit */
    int signalled; /* a stop signal reached some rank */
} window_t;

/* Peak resident memory of this process so far, in bytes. */
static double peak_rss(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss * 1024.0;
}

/* ---- start-up ---------------------------------------------------------------------------- */

/* One key that a checkpoint must share with this run; names[] prints an enum's values. */
typedef struct {
    const char *key;
    long long mine, theirs;
    const char *const *names; /* (nnames) names[v] for value v; NULL: printed as a number */
    int nnames;
} same_key_t;

static void key_text(char *out, size_t n, const same_key_t *k, long long v) {
    if (k->names && v >= 0 && v < k->nnames) snprintf(out, n, "%s", k->names[v]);
    else snprintf(out, n, "%lld", v);
}

/* Where vocabularies a and b differ: 0 when they are the same, else 1 or 2 with *cp the first
 * code point (in increasing order) that only a, or only b, has. */
static int vocab_difference(uint32_t *cp, const vocab_t *a, const vocab_t *b) {
    int i = 0, j = 0;
    while (i < a->size && j < b->size && a->cps[i] == b->cps[j]) i++, j++;
    if (i == a->size && j == b->size) return 0;
    int only_a = j == b->size || (i < a->size && a->cps[i] < b->cps[j]);
    *cp = only_a ? a->cps[i] : b->cps[j];
    return only_a ? 1 : 2;
}

/* Checks that checkpoint ck can continue this run: same model, vocabulary, streams, window,
 * training text and optimizer kind. */
static int check_compatible(const trainer_t *tr, const ckpt_t *ck, const char *path) {
    const config_t *cfg = tr->cfg;
    const corpus_t *c = &tr->corpus;
    const ckpt_info_t *in = &ck->info;
    const same_key_t same[] = {
        {.key = "model.cell", .mine = cfg->cell, .theirs = in->dims.cell,
         .names = cell_kind_names, .nnames = CELL_KINDS},
        {.key = "model.layers", .mine = cfg->layers, .theirs = in->dims.layers},
        {.key = "model.hidden", .mine = cfg->hidden, .theirs = in->dims.H},
        {.key = "model.embed", .mine = cfg->embed, .theirs = in->dims.E},
        {.key = "optim.kind", .mine = cfg->optim, .theirs = in->optim,
         .names = optim_kind_names, .nnames = OPTIM_KINDS},
        {.key = "train.seq", .mine = cfg->seq, .theirs = in->seq},
    };
    char msg[300];
    uint32_t cp = 0;
    int only = 0;
    size_t k = 0, n = sizeof same / sizeof *same;
    while (k < n && same[k].mine == same[k].theirs) k++;
    if (k < n) {
        char mine[64], theirs[64];
        key_text(mine, sizeof mine, &same[k], same[k].mine);
        key_text(theirs, sizeof theirs, &same[k], same[k].theirs);
        snprintf(msg, sizeof msg, "%s = %s differs from the checkpoint's %s", same[k].key, mine,
                 theirs);
    } else if (in->streams != c->S) {
        snprintf(msg, sizeof msg,
                 "the checkpoint has %d streams, this run %d rank(s) x train.batch %d = %d "
                 "(keep ranks x train.batch = %d)",
                 in->streams, tr->d->size, c->B, c->S, in->streams);
    } else if ((only = vocab_difference(&cp, &c->vocab, &ck->vocab))) {
        char ch[5];
        vocab_char_name(ch, cp);
        snprintf(msg, sizeof msg, "the corpus vocabulary (%d characters) differs from the "
                 "checkpoint's (%d): '%s' (U+%04X) is in the %s only", c->vocab.size,
                 ck->vocab.size, ch, (unsigned)cp, only == 1 ? "corpus" : "checkpoint");
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

/* Rank 0: picks and reads the checkpoint to resume from into ck (path into path, n bytes), and
 * checks it. Returns CHARLM_OK with *found, or CHARLM_EINPUT. */
static int pick_checkpoint(ckpt_t *ck, char *path, size_t n, int *found, const trainer_t *tr,
                           const char *resume) {
    const char *run_dir = tr->cfg->run_dir;
    int rc = CHARLM_OK;
    *found = 0;
    if (!resume) {
        if (ckpt_find_latest(ck, path, n, run_dir))
            rc = err_set(CHARLM_EINPUT,
                         "run.dir %s already holds checkpoints: continue it with --resume auto "
                         "or choose another run.dir", run_dir);
    } else if (!strcmp(resume, "auto")) {
        *found = ckpt_find_latest(ck, path, n, run_dir);
    } else {
        snprintf(path, n, "%s", resume);
        *found = 1;
        rc = ckpt_read(ck, path);
    }
    if (!rc && *found) rc = check_compatible(tr, ck, path);
    return rc;
}

/* Collective: rank 0 picks and reads the checkpoint to resume from; every rank then receives its
 * position, parameters, optimizer moments and its streams' state. Sets *resumed. */
static int resume_from(trainer_t *tr, const char *resume, int *resumed) {
    const dist_t *d = tr->d;
    char path[CHARLM_PATH_MAX + 64] = "";
    ckpt_t ck = {0};
    int found = 0, rc = CHARLM_OK;
    if (d->rank == 0) rc = pick_checkpoint(&ck, path, sizeof path, &found, tr, resume);
    if (!(rc = dist_agree(d, rc))) *resumed = dist_bcast_int(found);
    if (rc || !*resumed) {
        ckpt_free(&ck);
        return rc;
    }
    dist_position_t at = {.step = ck.info.step, .epoch = ck.info.epoch,
                          .cursor = ck.info.cursor, .optim_step = ck.info.optim_step,
                          .lr = ck.info.lr, .last_train_loss = ck.info.last_train_loss,
                          .last_val_loss = ck.info.last_val_loss,
                          .best_val_loss = ck.info.best_val_loss};
    dist_bcast_position(&at);
    tr->step = at.step, tr->epoch = at.epoch, tr->cursor = at.cursor;
    tr->opt.step = at.optim_step;
    tr->lr = at.lr, tr->last_train = at.last_train_loss, tr->last_val = at.last_val_loss;
    tr->best_val = at.best_val_loss;

    model_t *m = &tr->model;
    if (d->rank == 0) memcpy(m->params, ck.params, sizeof(float) * (size_t)m->nparams);
    dist_bcast_floats(m->params, m->nparams);
    for (int i = 0; i < tr->opt.nmoments; i++) {
        float *mom = optim_moment(&tr->opt, i);
        if (d->rank == 0) memcpy(mom, ck.moments[i], sizeof(float) * (size_t)m->nparams);
        dist_bcast_floats(mom, m->nparams);
    }
    const int L = m->d.layers, B = tr->corpus.B, H = m->d.H;
    dist_scatter_streams(tr->state_h, ck.h, L, B, H);
    if (m->ops->has_c) dist_scatter_streams(tr->state_c, ck.c, L, B, H);
    if (d->rank == 0) {
        /* the history becomes ours: hand the buffers over instead of copying */
        tr->train_hist = ck.train_hist, tr->n_train = ck.n_train;
        tr->val_hist = ck.val_hist, tr->n_val = ck.n_val;
        tr->cap_train = (size_t)ck.n_train, tr->cap_val = (size_t)ck.n_val;
        ck.train_hist = ck.val_hist = NULL;
        fprintf(stderr, "charlm: resuming from %s at step %lld (epoch %lld)\n", path,
                (long long)tr->step, (long long)tr->epoch);
    }
    ckpt_free(&ck);
    return CHARLM_OK;
}

/* The model of the configuration, its optimizer, schedule and gradient buffer. */
static void build_model(trainer_t *tr) {
    const config_t *cfg = tr->cfg;
    model_params_t mp = config_model_params(cfg);
    model_dims_t dims;
    model_dims(&dims, &mp, tr->corpus.vocab.size);
    model_init(&tr->model, &dims, cfg->seed);
    optim_params_t op = config_optim_params(cfg);
    optim_init(&tr->opt, &op, tr->model.nparams);
    tr->sched = config_sched_params(cfg);
    tr->lr = cfg->lr;
    tr->grads = xcalloc((size_t)tr->model.nparams, sizeof(float));
}

/* The activations of a training and a validation window and the carried states; on rank 0 the
 * gathered states of all streams and the canonical configuration text for checkpoints. */
static void alloc_buffers(trainer_t *tr) {
    const config_t *cfg = tr->cfg;
    const corpus_t *c = &tr->corpus;
    model_acts_alloc(&tr->acts, &tr->model, c->B, c->T,
                     cfg->dropout > 0 ? MODEL_ACTS_DROPOUT : 0);
    tr->nstate = (size_t)cfg->layers * c->B * cfg->hidden;
    tr->state_h = xcalloc(tr->nstate, sizeof(float));
    tr->state_c = xcalloc(tr->nstate, sizeof(float));
    tr->prev_h = xcalloc(tr->nstate, sizeof(float));
    tr->prev_c = xcalloc(tr->nstate, sizeof(float));
    if (c->nval) {
        model_acts_alloc(&tr->eval, &tr->model, c->B, c->T, 0);
        tr->eval_h = xcalloc(tr->nstate, sizeof(float));
        tr->eval_c = xcalloc(tr->nstate, sizeof(float));
    }
    if (tr->d->rank == 0) {
        size_t all = (size_t)cfg->layers * c->S * cfg->hidden, len = 0;
        tr->all_h = xcalloc(all, sizeof(float));
        tr->all_c = xcalloc(all, sizeof(float));
        FILE *f = open_memstream(&tr->config_text, &len);
        CHARLM_CHECK(f != NULL);
        config_write(cfg, f);
        fclose(f);
    }
}

/* Rank 0, before anything in run.dir is read or written: takes its lock (creating the
 * directory), so that no second training can share the directory; it is held until
 * trainer_close. A lock that a dead run left is taken over, with a note. */
static int lock_run_dir(trainer_t *tr) {
    const char *dir = tr->cfg->run_dir;
    fileio_lock_t *l = &tr->lock;
    fileio_holder_t prev;
    int e = fileio_lock(l, &prev, dir);
    if (e == EWOULDBLOCK) {
        char who[300] = "a process that has not written its name yet";
        if (prev.pid) snprintf(who, sizeof who, "host %s, pid %ld", prev.host, prev.pid);
        return err_set(CHARLM_EINPUT, "run.dir %s is in use by another training (%s, holding %s)"
                       ": wait for it to end or choose another run.dir%s", dir, who, l->path,
                       l->advisory ? "" : " (this file system has no locks: if that run is "
                                          "gone, remove the file)");
    }
    if (e)
        return err_set(CHARLM_EINPUT, "run.dir: cannot create %s: %s",
                       l->have_dir ? l->path : dir, strerror(e));
    if (prev.pid) {
        char host[256];
        fileio_host(host, sizeof host);
        fprintf(stderr, "charlm: note: took over %s from pid %ld on host %s, %s\n", l->path,
                prev.pid, prev.host, strcmp(host, prev.host) ? "whose lock was released"
                                                             : "which is gone");
    }
    return CHARLM_OK;
}

/* What this rank needs by design (need_t), from the configuration and the corpus shard, before
 * the model exists; rank 0 holds the gathered states, and when resuming the checkpoint's copy. */
static need_t train_need(const trainer_t *tr, int resuming) {
    const config_t *cfg = tr->cfg;
    const corpus_t *c = &tr->corpus;
    model_params_t mp = config_model_params(cfg);
    optim_params_t op = config_optim_params(cfg);
    model_dims_t d;
    model_dims(&d, &mp, c->vocab.size);
    const int rank0 = tr->d->rank == 0, moments = optim_nmoments(&op);
    const double P = model_nparams(&d), state = (double)d.layers * c->B * d.H,
                 all = (double)d.layers * c->S * d.H;
    const int drop = cfg->dropout > 0 ? MODEL_ACTS_DROPOUT : 0;
    need_t n = {.params = 4.0 * P * (2 + moments),
                .acts = model_acts_bytes(&d, c->B, c->T, drop),
                .states = 4.0 * state * (c->nval ? 6 : 4),
                .shard = (double)(c->B * c->L + 1) * c->train.width};
    if (c->nval) n.acts += model_acts_bytes(&d, c->B, c->T, 0);
    for (int b = 0; b < c->B && c->nval; b++)
        n.shard += (double)(c->val_len[b] + 1) * c->val_ids.width;
    if (rank0) n.states += 4.0 * 2 * all * (resuming ? 2 : 1);
    if (rank0 && resuming) n.params += 4.0 * P * (1 + moments);
    return n;
}

static double need_total(const need_t *n) { return n->params + n->acts + n->states + n->shard; }

/* Before any buffer of the model is allocated: whether what this rank needs (need_t) fits what it
 * may still allocate; CHARLM_EINPUT naming the keys of the largest part and the bytes otherwise.
 * The shard is allocated already, so it is counted on both sides. */
static int check_memory(const trainer_t *tr, int resuming) {
    const config_t *cfg = tr->cfg;
    const corpus_t *c = &tr->corpus;
    need_t n = train_need(tr, resuming);
    fileio_mem_t m = fileio_mem_available(tr->d->local_size, MODEL_LIB_VM);
    double total = need_total(&n);
    m.bytes += n.shard;
    if (total <= m.bytes) return CHARLM_OK;
    char keys[400], t[5][32], avail[300];
    const double part[4] = {n.params, n.acts, n.states, n.shard};
    int big = 0;
    for (int i = 1; i < 4; i++) big = part[i] > part[big] ? i : big;
    if (big == 0)
        snprintf(keys, sizeof keys, "model.layers = %d, model.hidden = %d, model.embed = %d with "
                 "%d characters and optim.kind = %s: parameters, gradients and optimizer moments",
                 cfg->layers, cfg->hidden, cfg->embed, c->vocab.size, optim_kind_name(cfg->optim));
    else if (big == 1)
        snprintf(keys, sizeof keys, "train.batch = %d x train.seq = %d with model.layers = %d, "
                 "model.hidden = %d, model.embed = %d and %d characters: the activations of a "
                 "window", c->B, c->T, cfg->layers, cfg->hidden, cfg->embed, c->vocab.size);
    else if (big == 2)
        snprintf(keys, sizeof keys, "train.batch = %d with model.layers = %d, model.hidden = %d: "
                 "the carried states", c->B, cfg->layers, cfg->hidden);
    else
        snprintf(keys, sizeof keys, "data.corpus (%lld training characters): this rank's shard",
                 (long long)c->ntrain);
    fileio_bytes_text(t[0], sizeof t[0], total);
    for (int i = 0; i < 4; i++) fileio_bytes_text(t[i + 1], sizeof t[i + 1], part[i]);
    fileio_mem_text(avail, sizeof avail, &m);
    return err_set(CHARLM_EINPUT, "not enough memory: %s take %s; in all %s per rank (parameters "
                   "%s, activations %s, states %s, corpus shard %s), %s", keys, t[big + 1], t[0],
                   t[1], t[2], t[3], t[4], avail);
}

/* Rank 0: writes the resolved configuration to run.dir/config.ini (a durable replacement) and
 * opens metrics.jsonl (log keeps an earlier run's file aside on a fresh start, drops its lines
 * past the checkpoint on resume). run.dir exists: its lock is in it. */
static int prepare_run_dir(trainer_t *tr, int resumed) {
    char path[CHARLM_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/config.ini", tr->cfg->run_dir);
    int e = fileio_write_atomic(path, tr->config_text, strlen(tr->config_text));
    if (e) return err_set(CHARLM_EINPUT, "%s: cannot write: %s", path, strerror(e));
    log_params_t lp = config_log_params(tr->cfg);
    return log_open(&tr->log, &lp, resumed, tr->step);
}

/* Collective: everything a rank needs to train, resumed from a checkpoint when resume says so:
 * the corpus shard, the memory check, run.dir locked (nothing in it is read or written before),
 * then the model and its buffers, the checkpoint and run.dir's files. On failure (the same
 * status on every rank) trainer_close still frees what was allocated and releases the lock. */
static int trainer_open(trainer_t *tr, const config_t *cfg, const char *resume,
                        const dist_t *d) {
    *tr = (trainer_t){.cfg = cfg, .d = d, .rss_start = peak_rss(), .last_train = NAN,
                      .last_val = NAN, .best_val = NAN, .last_val_step = -1};
    corpus_params_t cp = config_corpus_params(cfg);
    int rc = dist_agree(d, corpus_load(&tr->corpus, &cp, d->rank, d->size, d->rank == 0));
    if (rc || (rc = dist_agree(d, check_memory(tr, resume != NULL))) ||
        (rc = dist_agree(d, d->rank == 0 ? lock_run_dir(tr) : CHARLM_OK)))
        return rc;
    build_model(tr);
    alloc_buffers(tr);
    /* train.steps, when given, is the length of the run; train.epochs sets it otherwise */
    tr->total = cfg->steps ? cfg->steps : cfg->epochs * tr->corpus.windows;
    tr->window_chars = (int64_t)tr->corpus.S * tr->corpus.T;
    int resumed = 0;
    if ((rc = resume_from(tr, resume, &resumed))) return rc;
    tr->need = train_need(tr, resumed);
    if (d->rank == 0) rc = prepare_run_dir(tr, resumed);
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
    fileio_unlock(&tr->lock);
}

/* ---- checkpoints --------------------------------------------------------------------------- */

/* Collective: gathers the streams' state on rank 0, which writes ckpt-<step>.h5 atomically (its
 * path into tr->ckpt), drops old ones beyond checkpoint.keep, and points best.h5 at it when this
 * step's validation is the best so far. */
static int save_checkpoint(trainer_t *tr) {
    const config_t *cfg = tr->cfg;
    const corpus_t *c = &tr->corpus;
    const int has_c = tr->model.ops->has_c, L = tr->model.d.layers, H = tr->model.d.H;
    dist_gather_streams(tr->all_h, tr->state_h, L, c->B, H);
    if (has_c) dist_gather_streams(tr->all_c, tr->state_c, L, c->B, H);
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
        ckpt_path(tr->ckpt, sizeof tr->ckpt, cfg->run_dir, tr->step);
        rc = ckpt_write(tr->ckpt, &w);
        if (!rc) ckpt_rotate(cfg->run_dir, cfg->ckpt_keep);
        if (!rc && best) rc = ckpt_mark_best(tr->ckpt, cfg->run_dir);
    }
    return dist_agree(tr->d, rc);
}

/* ---- one window -------------------------------------------------------------------------- */

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

static void overlap_ready(int64_t from, void *ctx) { dist_overlap_ready(ctx, from); }
static void overlap_poll(void *ctx) { dist_overlap_poll(ctx); }

/* Seconds since *t, and *t set to now. */
static double lap(double *t) {
    double now = dist_time(), d = now - *t;
    *t = now;
    return d;
}

/* Collective, after a window whose loss or gradient is not finite: the parameters are still those
 * of the last good step, so they are checkpointed with the state from before the window. Returns
 * CHARLM_EDIVERGED (message printed once), or the checkpoint's failure. */
static int diverged(trainer_t *tr, const window_t *w) {
    memcpy(tr->state_h, tr->prev_h, tr->nstate * sizeof(float));
    memcpy(tr->state_c, tr->prev_c, tr->nstate * sizeof(float));
    int rc = save_checkpoint(tr);
    if (rc) return rc;
    rc = err_set(CHARLM_EDIVERGED,
                 "training diverged at step %lld: loss %g, gradient norm %g; the last good state "
                 "is in %s", (long long)tr->step + 1, w->loss, w->gnorm, tr->ckpt);
    if (tr->d->rank == 0) fprintf(stderr, "charlm: error: %s\n", err_message());
    return rc;
}

/* Collective: one optimizer step of truncated BPTT — the window at the cursor forward and
 * backward from the carried state, the gradients summed over the ranks while backward runs, the
 * loss summed and the stop decision taken together in one all-reduce, clipping, the divergence
 * check, the step, and the cursor moved on (at the epoch's end every stream restarts from zero
 * state). Fills *w; returns CHARLM_OK, or the status of diverged(). */
static int train_window(trainer_t *tr, window_t *w) {
    const config_t *cfg = tr->cfg;
    const corpus_t *c = &tr->corpus;
    model_t *m = &tr->model;
    float *state_c = m->ops->has_c ? tr->state_c : NULL;

    load_window(tr);
    memcpy(tr->prev_h, tr->state_h, tr->nstate * sizeof(float));
    memcpy(tr->prev_c, tr->state_c, tr->nstate * sizeof(float));
    model_dropout_t drop = {.p = (float)cfg->dropout, .seed = cfg->seed, .step = tr->step,
                            .first_stream = c->first_stream};
    double t = dist_time();
    double loss = model_forward(&tr->acts, tr->state_h, state_c, m, c->T, &drop,
                                1.0f / (float)tr->window_chars, 1);
    tr->tm.forward += lap(&t);

    model_hooks_t hooks = {.ready = overlap_ready, .poll = overlap_poll, .ctx = &tr->ov};
    dist_overlap_begin(&tr->ov, tr->grads, m->nparams, DIST_PIECE);
    model_backward(tr->grads, &tr->acts, m, c->T, &hooks);
    tr->tm.backward += lap(&t);
    dist_overlap_wait(&tr->ov);
    /* rank 0's clock decides the time limit, every rank's flag a signal */
    unsigned stop = (tr->d->rank == 0 && cfg->time_limit > 0 &&
                     dist_time() - tr->t0 >= cfg->time_limit ? DIST_STOP_TIME : 0) |
                    (stop_signal ? DIST_STOP_SIGNAL : 0);
    loss = dist_window_end(loss, &stop);
    tr->tm.allreduce += lap(&t);

    *w = (window_t){.loss = loss / (double)tr->window_chars,
                    .gnorm = optim_clip(tr->grads, m->nparams, cfg->clip)};
    if (!isfinite(w->loss) || !isfinite(w->gnorm)) return diverged(tr, w);
    tr->lr = optim_lr(&tr->sched, tr->step, tr->total);
    optim_step(m->params, &tr->opt, tr->grads, tr->lr);
    tr->tm.optimizer += lap(&t);

    tr->step++;
    tr->last_train = w->loss;
    if (++tr->cursor == c->windows) {
        tr->cursor = 0;
        tr->epoch++;
        memset(tr->state_h, 0, tr->nstate * sizeof(float));
        memset(tr->state_c, 0, tr->nstate * sizeof(float));
    }
    w->signalled = (stop & DIST_STOP_SIGNAL) != 0;
    w->last = (stop & DIST_STOP_TIME) || (tr->total && tr->step >= tr->total);
    return CHARLM_OK;
}

/* ---- after a window ---------------------------------------------------------------------- */

/* Appends a row of `width` doubles to a history array of *n rows (*cap allocated). */
static void hist_push(double **h, int64_t *n, size_t *cap, int width, const double *row) {
    *h = xgrow(*h, cap, (size_t)*n + 1, sizeof(double) * (size_t)width);
    memcpy(*h + *n * width, row, sizeof(double) * (size_t)width);
    (*n)++;
}

/* Rank 0, every log.every steps and at the end of a run: the progress line, its metrics.jsonl
 * record and a row of the training history. */
static void maybe_log(trainer_t *tr, const window_t *w) {
    if (tr->d->rank != 0 || !(tr->step % tr->log.p.every == 0 || w->last || w->signalled)) return;
    const double limit = tr->cfg->time_limit, now = dist_time(), elapsed = now - tr->t0;
    log_train_t m = {.step = tr->step, .total_steps = tr->total, .epoch = tr->epoch,
                     .train_loss = w->loss, .lr = tr->lr, .grad_norm = w->gnorm,
                     .chars_per_s = (double)(tr->step - tr->step_log) * tr->window_chars /
                                    (now - tr->t_log),
                     .elapsed_s = elapsed, .eta_s = -1};
    if (tr->total)
        m.eta_s = elapsed / (double)(tr->step - tr->step0) * (double)(tr->total - tr->step);
    if (limit > 0 && (m.eta_s < 0 || m.eta_s > limit - elapsed))
        m.eta_s = fmax(limit - elapsed, 0.0);
    log_train(&tr->log, &m);
    double row[3] = {(double)tr->step, w->loss, w->gnorm};
    hist_push(&tr->train_hist, &tr->n_train, &tr->cap_train, 3, row);
    tr->t_log = now, tr->step_log = tr->step;
}

/* Collective: mean loss (nats/char) over every prediction of the validation split, the state
 * carried from window to window from zero. */
static double evaluate(trainer_t *tr) {
    const corpus_t *c = &tr->corpus;
    const int B = c->B, T = c->T;
    memset(tr->eval_h, 0, tr->nstate * sizeof(float));
    memset(tr->eval_c, 0, tr->nstate * sizeof(float));
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

/* Rank 0: a sample of the model as it is now (sample.length characters at sample.temperature),
 * from a newline, on stdout. */
static void print_sample(trainer_t *tr) {
    const config_t *cfg = tr->cfg;
    const vocab_t *v = &tr->corpus.vocab;
    log_msg(&tr->log, "charlm: sample at step %lld (temperature %g):", (long long)tr->step,
            cfg->sample_temperature);
    int32_t prime = vocab_id(v, '\n');
    if (prime < 0) prime = 0;
    sample_opts_t o = {.length = cfg->sample_length, .temperature = cfg->sample_temperature,
                       .top_p = 1.0, .seed = cfg->seed, .index = (uint64_t)tr->step};
    sample_text(stdout, &tr->model, v, &prime, 1, &o);
    fputc('\n', stdout);
    fflush(stdout);
}

/* Collective, every eval.every steps and at the end of a run (when there is a validation split):
 * the validation loss; rank 0 logs it, records it and, every sample.every steps, prints a
 * sample. Its time is not training time. */
static void maybe_eval(trainer_t *tr, const window_t *w) {
    const config_t *cfg = tr->cfg;
    if (!tr->corpus.nval || !((cfg->eval_every && tr->step % cfg->eval_every == 0) || w->last))
        return;
    double t = dist_time();
    tr->last_val = evaluate(tr);
    tr->last_val_step = tr->step;
    t = dist_time() - t;
    tr->t_log += t; /* chars/s counts training windows only */
    tr->tm.eval += t;
    if (tr->d->rank != 0) return;
    log_val(&tr->log, tr->step, tr->last_val);
    if (cfg->sample_every && tr->step % cfg->sample_every == 0) print_sample(tr);
    double row[2] = {(double)tr->step, tr->last_val};
    hist_push(&tr->val_hist, &tr->n_val, &tr->cap_val, 2, row);
}

/* Collective, every checkpoint.every steps, at the end of a run and on a stop signal: a
 * checkpoint. Its time is not training time. */
static int maybe_checkpoint(trainer_t *tr, const window_t *w) {
    const int64_t every = tr->cfg->ckpt_every;
    if (!(w->last || w->signalled || (every && tr->step % every == 0))) return CHARLM_OK;
    double t = dist_time();
    int rc = save_checkpoint(tr);
    t = dist_time() - t;
    tr->t_log += t;
    tr->tm.checkpoint += t;
    return rc;
}

/* Whether the run ends after this window: on a stop signal (*rc = CHARLM_ESTOPPED, and rank 0
 * says where to continue) or at its step, epoch or time limit. */
static int maybe_stop(trainer_t *tr, const window_t *w, int *rc) {
    if (w->signalled) {
        *rc = CHARLM_ESTOPPED;
        if (tr->d->rank == 0)
            log_msg(&tr->log, "charlm: stopped by a signal at step %lld; checkpoint %s "
                    "(continue with --resume auto)", (long long)tr->step, tr->ckpt);
    }
    return w->signalled || w->last;
}

/* ---- the end of a run -------------------------------------------------------------------- */

/* Collective: the end-of-run report — throughput, GFLOP/s, where the time went, peak memory —
 * on stderr and as the summary record of metrics.jsonl. */
static void report(trainer_t *tr, double secs) {
    double rss = peak_rss();
    /* The rank that finishes backward last waits only for the communication itself; the
     * others also wait for it: report both, with the largest rank's memory. */
    double most[3] = {rss, tr->tm.allreduce, -tr->tm.allreduce};
    dist_max_doubles(most, 3);
    if (tr->d->rank != 0) return;
    const timers_t *t = &tr->tm;
    int64_t steps = tr->step - tr->step0;
    if (steps == 0) {
        log_msg(&tr->log, "charlm: nothing to do: the run is at step %lld of %lld",
                (long long)tr->step, (long long)tr->total);
        return;
    }
    double rss_max = most[0], waited = most[1], comm = -most[2];
    double train_s = t->forward + t->backward + t->allreduce + t->optimizer;
    double chars = (double)steps * tr->corpus.S * tr->corpus.T;
    double cps = chars / train_s,
           gflops = cps * model_flops_executed_per_char(&tr->model, &tr->acts) * 1e-9;
    double need = need_total(&tr->need), mib = 1024.0 * 1024.0;
    log_msg(&tr->log, "charlm: %lld steps in %.1f s: %.0f chars/s, %.2f GFLOP/s", (long long)steps,
            secs, cps, gflops);
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
    catch_signals();
    trainer_t tr;
    int rc = trainer_open(&tr, cfg, resume, d);
    if (!rc) {
        int threads = dist_blas_threads(d);
        if (d->rank == 0) print_header(&tr, threads);
        tr.t0 = tr.t_log = dist_time();
        tr.step0 = tr.step_log = tr.step;
        while (!(tr.total && tr.step >= tr.total)) {
            window_t w;
            if ((rc = train_window(&tr, &w))) break;
            maybe_log(&tr, &w);
            maybe_eval(&tr, &w);
            if ((rc = maybe_checkpoint(&tr, &w)) || maybe_stop(&tr, &w, &rc)) break;
        }
    }
    if (!rc) report(&tr, dist_time() - tr.t0);
    if (!rc && d->rank == 0 && tr.step > tr.step0) {
        if (tr.ckpt[0]) log_msg(&tr.log, "charlm: checkpoint %s", tr.ckpt);
        print_sample(&tr);
    }
    restore_signals(rc == CHARLM_ESTOPPED);
    trainer_close(&tr);
    return rc;
}
