/* train: the training loop (src/README.md §1). train_run reads as the data flow of a run: open the
 * trainer (corpus shard, model, optimizer, buffers, resume, run directory), then one window after
 * another — train_window — each followed by maybe_log, maybe_eval, maybe_checkpoint and
 * maybe_stop. Every MPI exchange goes through dist. */
#include "charlm/train.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "charlm/checkpoint.h"
#include "charlm/corpus.h"
#include "charlm/digest.h"
#include "charlm/err.h"
#include "charlm/fileio.h"
#include "charlm/log.h"
#include "charlm/model.h"
#include "charlm/optim.h"
#include "charlm/sample.h"
#include "charlm/signals.h"

/* Where the time of a run goes (seconds, this rank). */
typedef struct {
    double forward, backward, allreduce, optimizer, eval, checkpoint;
} timers_t;

/* Where the run is at the start of a window: what a checkpoint records besides the tensors, so
 * that a divergence can go back to it. */
typedef struct {
    int64_t step, epoch, cursor, last_val_step, n_train, n_val;
    double lr, last_train, last_val, best_val;
    plateau_t plateau;
} mark_t;

/* Windows between snapshots of the run (take_snapshot): a divergence trains at most this many
 * again (replay_to), and every step pays 1/SNAPSHOT_EVERY of a copy of the parameters and
 * moments. */
#define SNAPSHOT_EVERY 32
/* A window's mean loss above this many nats per character is divergence even while finite: the
 * uniform guess costs ln V (at most 21 nats), a learning model stays within a few times that, and
 * a loss this large means parameters blown up by the last update (as a non-finite one does, but
 * without an overflow the float arithmetic may or may not reach) */
#define DIVERGED_LOSS 1e4
/* The learning rates of recent steps kept for replay_to: more than the steps a replay can go
 * back over. */
#define NLRS (2 * SNAPSHOT_EVERY)

/* What one rank holds by design, in bytes, by part: computed before anything is allocated (in
 * double, so that no configuration overflows it) for the memory check, and shown by the
 * end-of-run report next to the peak RSS. */
typedef struct {
    double params; /* parameters, gradients, optimizer moments and their snapshot; rank 0,
                      resuming: the checkpoint's copy of parameters and moments too */
    double acts;   /* the activations of a training window and of a validation window */
    double states; /* carried, previous, snapshot and validation states; rank 0: every stream's, for
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
    plateau_params_t plateau_p;
    plateau_t plateau;            /* its scale multiplies the schedule's lr */
    float *ema;                   /* (nparams) moving average of the parameters; NULL = off */
    model_t ema_model;            /* the model's views over ema (owns nothing): validation,
                                     samples; = model when the average is off */
    int64_t parts[MODEL_MAX_LAYERS + 3]; /* offsets: embedding, each layer, decoder, the end */
    int nparts;                   /* layers + 2: the regions of the gradient-norm record */
    /* rank 0's training seconds of the run before this process (the checkpoint's), and the clock
     * that train.time_limit bounds and the time-based schedule follows, agreed at the end of the
     * last window — this process's seconds, plus elapsed0 when optim.schedule_over = time, whose
     * budget is the run's across its resumes */
    double elapsed0, clock;
    /* the learning rate each recent step used (by step % NLRS): a replay trains with them, as
     * neither the clock nor the validations that moved the plateau scale come again */
    double lrs[NLRS];
    float *grads;                 /* (nparams) */
    dist_overlap_t ov;            /* the all-reduce of grads, overlapped with backward */
    model_acts_t acts;            /* training window (B, T) */
    model_acts_t eval;            /* validation window (B, T), no dropout */
    int64_t window_chars;         /* S * T: the predictions of a window over all ranks */
    size_t nstate;                /* layers * B * H */
    float *state_h, *state_c;     /* (layers, B, H) carried training state */
    float *prev_h, *prev_c;       /* (layers, B, H) the state before the current window */
    /* The way back from a divergence (diverged): where the run was before the current window
     * [0] and before the previous one [1], and a snapshot of the run before a recent window
     * whose loss was finite, taken every SNAPSHOT_EVERY steps, from which replay_to trains the
     * windows up to a later step again. */
    mark_t mark[2];
    struct {
        int taken;                            /* 0 until the first window's loss is finite */
        mark_t at;                            /* the position: before window at.step + 1 */
        int64_t optim_step;
        float *params;                        /* (nparams) */
        float *moments[OPTIM_MAX_MOMENTS];    /* (nparams) each, nmoments of them */
        float *ema;                           /* (nparams) when the average is on */
        float *h, *c;                         /* (layers, B, H) */
    } snap;
    int replaying;                /* replay_to is training windows again */
    float *eval_h, *eval_c;       /* (layers, B, H) validation state */
    int64_t step, cursor, epoch, total;
    double lr, last_train, last_val, best_val;
    int64_t last_val_step;
    const char *stop;             /* why the run ended: "steps", "time limit", "early stop" */
    /* clocks: the start of this process's part of the run, and of the current log interval */
    int64_t step0, step_log;
    double t0, t_log;
    timers_t tm;
    double rss_start;             /* peak RSS before any of the above: MPI and the libraries */
    need_t need;                  /* what this rank holds by design (train_need) */
    char ckpt[CHARLM_PATH_MAX + 64]; /* the newest checkpoint written ("" = none yet) */
    /* rank 0 only */
    uint64_t run_id[2];           /* the run's identity (checkpoint.h) */
    uint64_t train_fp, val_fp;    /* fingerprints of the data (fingerprint_data) */
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
    int clipped;   /* optim.clip scaled the gradient */
    double parts[MODEL_MAX_LAYERS + 2]; /* rank 0, on a logged step: the norm of each part */
    int last;      /* the run ends after this window: train.steps, train.epochs or time_limit */
    int timed_out; /* ... because of train.time_limit */
    int early;     /* the run ends after this window's validation: train.early_stop */
    int signalled; /* a stop signal reached some rank */
    int failed;    /* rank 0 could not write metrics.jsonl (tr->log.error says why) */
} window_t;

/* Rank 0: whether the window that ends at `step` is logged (maybe_log). */
static int log_due(const trainer_t *tr, int64_t step, const window_t *w) {
    return step % tr->log.p.every == 0 || w->last || w->signalled || w->failed;
}

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

static const char *const off_on[] = {"false", "true"};

static void key_text(char *out, size_t n, const same_key_t *k, long long v) {
    if (k->names && v >= 0 && v < k->nnames) snprintf(out, n, "%s", k->names[v]);
    else snprintf(out, n, "%lld", v);
}

/* A fingerprint as 16 hex digits, "none" for 0 (out: 17 bytes). */
static void fp_text(char *out, uint64_t fp) {
    if (fp) digest_hex(out, fp);
    else snprintf(out, 17, "none");
}

/* "the training data differs from the checkpoint's: fingerprint X here, Y in the checkpoint". */
static void data_differs(char *msg, size_t n, const char *what, uint64_t mine, uint64_t theirs) {
    char a[17], b[17];
    fp_text(a, mine);
    fp_text(b, theirs);
    snprintf(msg, n, "the %s data differs from the checkpoint's: fingerprint %s here, %s in the "
             "checkpoint", what, a, b);
}

/* Rank 0: whether the data differs from what checkpoint ck was trained on (its length, or
 * either fingerprint, which checkpoints of format 3 record); the difference in msg. */
static int data_changed(const trainer_t *tr, const ckpt_t *ck, char *msg, size_t n) {
    const ckpt_info_t *in = &ck->info;
    if (in->train_chars != tr->corpus.ntrain)
        snprintf(msg, n, "the training text has %lld characters, the checkpoint's %lld",
                 (long long)tr->corpus.ntrain, (long long)in->train_chars);
    else if (ck->version >= 3 && in->train_fp != tr->train_fp)
        data_differs(msg, n, "training", tr->train_fp, in->train_fp);
    else if (ck->version >= 3 && in->val_fp != tr->val_fp)
        data_differs(msg, n, "validation", tr->val_fp, in->val_fp);
    else
        return 0;
    return 1;
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

/* Whether checkpoint ck cannot continue this run: the first difference of model, vocabulary,
 * streams, window, optimizer kind and data (unless data.allow_changed) in msg (n bytes) and 1,
 * or 0 when there is none. */
static int incompatible(const trainer_t *tr, const ckpt_t *ck, char *msg, size_t msg_size) {
    const config_t *cfg = tr->cfg;
    const corpus_t *c = &tr->corpus;
    const ckpt_info_t *in = &ck->info;
    const same_key_t same[] = {
        {.key = "model.cell", .mine = cfg->cell, .theirs = in->dims.cell,
         .names = cell_kind_names, .nnames = CELL_KINDS},
        {.key = "model.layers", .mine = cfg->layers, .theirs = in->dims.layers},
        {.key = "model.hidden", .mine = cfg->hidden, .theirs = in->dims.H},
        {.key = "model.embed", .mine = cfg->embed, .theirs = in->dims.E},
        {.key = "model.tie", .mine = cfg->tie, .theirs = in->dims.tie, .names = off_on,
         .nnames = 2},
        {.key = "model.layer_norm", .mine = cfg->layer_norm, .theirs = in->dims.ln,
         .names = off_on, .nnames = 2},
        {.key = "optim.kind", .mine = cfg->optim, .theirs = in->optim,
         .names = optim_kind_names, .nnames = OPTIM_KINDS},
        {.key = "train.seq", .mine = cfg->seq, .theirs = in->seq},
    };
    uint32_t cp = 0;
    int only = 0;
    size_t k = 0, n = sizeof same / sizeof *same;
    while (k < n && same[k].mine == same[k].theirs) k++;
    if (k < n) {
        char mine[64], theirs[64];
        key_text(mine, sizeof mine, &same[k], same[k].mine);
        key_text(theirs, sizeof theirs, &same[k], same[k].theirs);
        snprintf(msg, msg_size, "%s = %s differs from the checkpoint's %s", same[k].key, mine,
                 theirs);
    } else if (in->streams != c->S) {
        snprintf(msg, msg_size,
                 "the checkpoint has %d streams, this run %d rank(s) x train.batch %d = %d "
                 "(keep ranks x train.batch = %d)",
                 in->streams, tr->d->size, c->B, c->S, in->streams);
    } else if ((only = vocab_difference(&cp, &c->vocab, &ck->vocab))) {
        char ch[5];
        vocab_char_name(ch, cp);
        snprintf(msg, msg_size, "the corpus vocabulary (%d characters) differs from the "
                 "checkpoint's (%d): '%s' (U+%04X) is in the %s only", c->vocab.size,
                 ck->vocab.size, ch, (unsigned)cp, only == 1 ? "corpus" : "checkpoint");
    } else if (!cfg->allow_changed && data_changed(tr, ck, msg, msg_size)) {
        size_t len = strlen(msg);
        snprintf(msg + len, msg_size - len, " (set data.allow_changed=true to resume anyway)");
    } else if (ck->nmoments != tr->opt.nmoments) {
        snprintf(msg, msg_size, "the optimizer keeps %d moment buffers, the checkpoint %d",
                 tr->opt.nmoments, ck->nmoments);
    } else if (in->cursor >= c->windows) {
        snprintf(msg, msg_size, "cursor %lld is past the %lld windows of an epoch",
                 (long long)in->cursor, (long long)c->windows);
    } else {
        return 0;
    }
    return 1;
}

/* Checks that checkpoint ck can continue this run (incompatible). */
static int check_compatible(const trainer_t *tr, const ckpt_t *ck, const char *path) {
    char msg[400];
    return incompatible(tr, ck, msg, sizeof msg)
               ? err_set(CHARLM_EINPUT, "cannot resume from %s: %s", path, msg)
               : CHARLM_OK;
}

/* ckpt_find_latest's test for --resume auto: "PATH: REASON" when ck cannot continue the run. */
static int accept_compatible(const ckpt_t *ck, const char *path, void *tr) {
    char msg[400];
    return incompatible(tr, ck, msg, sizeof msg) ? err_set(CHARLM_EINPUT, "%s: %s", path, msg)
                                                 : CHARLM_OK;
}

static int has_run_id(const ckpt_t *ck) { return ck->info.run_id[0] || ck->info.run_id[1]; }

/* Whether the file at path is in the directory dir (the same directory, however named). */
static int is_in_dir(const char *path, const char *dir) {
    char parent[CHARLM_PATH_MAX];
    fileio_dir_of(parent, sizeof parent, path);
    struct stat a, b;
    return stat(parent, &a) == 0 && stat(dir, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

/* Rank 0, resuming from a checkpoint named on the command line: run.dir must hold no checkpoint
 * or the same run's, since continuing there prunes its checkpoints, re-points best.h5 and cuts
 * its metrics. The run is the same when the run ids agree; a checkpoint of format 1 or 2 has
 * none, and is then of run.dir's run only when it lies in run.dir/checkpoints. */
static int check_same_run(const trainer_t *tr, const ckpt_t *ck, const char *path) {
    const char *run_dir = tr->cfg->run_dir;
    char newest[CHARLM_PATH_MAX + 64], dir[CHARLM_PATH_MAX + 16], why[CHARLM_PATH_MAX + 200] = "";
    snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
    ckpt_t mine;
    int rc = CHARLM_OK;
    if (ckpt_find_latest(&mine, newest, sizeof newest, run_dir, NULL, NULL)) {
        if (has_run_id(ck) && has_run_id(&mine)) {
            if (memcmp(ck->info.run_id, mine.info.run_id, sizeof mine.info.run_id)) {
                char a[33], b[33];
                digest_hex(a, mine.info.run_id[0]), digest_hex(a + 16, mine.info.run_id[1]);
                digest_hex(b, ck->info.run_id[0]), digest_hex(b + 16, ck->info.run_id[1]);
                snprintf(why, sizeof why, "%s is of run %s, the checkpoint of run %s", newest, a,
                         b);
            }
        } else if (!is_in_dir(path, dir)) {
            snprintf(why, sizeof why, "%s and the checkpoint cannot be told to be of the same "
                     "run (format_version 1 and 2 record no run id)", newest);
        }
    } else if (ckpt_count(run_dir) > 0) {
        snprintf(why, sizeof why, "none of its checkpoints reads, so their run is unknown");
    }
    if (*why)
        rc = err_set(CHARLM_EINPUT, "cannot resume from %s into run.dir %s: it holds another "
                     "run (%s); continuing there would replace its checkpoints and metrics: "
                     "choose an empty run.dir, or continue that run with --resume auto", path,
                     run_dir, why);
    ckpt_free(&mine);
    return rc;
}

/* Rank 0: picks and reads the checkpoint to resume from into ck (path into path, n bytes), and
 * checks it: with --resume auto the newest of run.dir that reads and is compatible, older ones
 * standing in for newer ones that are not; a file named by --resume must read, be compatible
 * and, when run.dir holds checkpoints, be of their run. Returns CHARLM_OK with *found, or
 * CHARLM_EINPUT. */
static int pick_checkpoint(ckpt_t *ck, char *path, size_t n, int *found, const trainer_t *tr,
                           const char *resume) {
    const char *run_dir = tr->cfg->run_dir;
    int rc = CHARLM_OK;
    *found = 0;
    if (!resume) {
        if (ckpt_find_latest(ck, path, n, run_dir, NULL, NULL))
            rc = err_set(CHARLM_EINPUT,
                         "run.dir %s already holds checkpoints: continue it with --resume auto "
                         "or choose another run.dir", run_dir);
    } else if (!strcmp(resume, "auto")) {
        int got = ckpt_find_latest(ck, path, n, run_dir, accept_compatible, (void *)tr);
        *found = got > 0;
        if (got < 0) { /* every one that reads is refused: the newest's reason */
            char why[2048];
            snprintf(why, sizeof why, "%s", err_message());
            err_clear();
            rc = err_set(CHARLM_EINPUT, "cannot resume from %s", why);
        }
    } else {
        snprintf(path, n, "%s", resume);
        *found = 1;
        rc = ckpt_read(ck, path);
        if (!rc) rc = check_compatible(tr, ck, path);
        if (!rc) rc = check_same_run(tr, ck, path);
    }
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
    const plateau_t *pl = &ck.info.plateau;
    dist_position_t at = {.step = ck.info.step, .epoch = ck.info.epoch,
                          .cursor = ck.info.cursor, .optim_step = ck.info.optim_step,
                          .lr = ck.info.lr, .last_train_loss = ck.info.last_train_loss,
                          .last_val_loss = ck.info.last_val_loss,
                          .best_val_loss = ck.info.best_val_loss,
                          .elapsed_s = ck.info.elapsed_s, .lr_scale = pl->scale,
                          .plateau_best = pl->best, .plateau_bad = pl->bad,
                          .plateau_stale = pl->stale};
    dist_bcast_position(&at);
    tr->step = at.step, tr->epoch = at.epoch, tr->cursor = at.cursor;
    tr->opt.step = at.optim_step;
    tr->lr = at.lr, tr->last_train = at.last_train_loss, tr->last_val = at.last_val_loss;
    tr->best_val = at.best_val_loss;
    tr->plateau = (plateau_t){.scale = at.lr_scale, .best = at.plateau_best,
                              .bad = at.plateau_bad, .stale = at.plateau_stale};
    tr->elapsed0 = at.elapsed_s;
    if (tr->cfg->schedule_over == SCHED_OVER_TIME) tr->clock = at.elapsed_s;

    model_t *m = &tr->model;
    if (d->rank == 0) memcpy(m->params, ck.params, sizeof(float) * (size_t)m->nparams);
    dist_bcast_floats(m->params, m->nparams);
    for (int i = 0; i < tr->opt.nmoments; i++) {
        float *mom = optim_moment(&tr->opt, i);
        if (d->rank == 0) memcpy(mom, ck.moments[i], sizeof(float) * (size_t)m->nparams);
        dist_bcast_floats(mom, m->nparams);
    }
    /* the average goes on from the checkpoint's, or starts from the parameters it holds */
    int have_ema = dist_bcast_int(ck.ema != NULL);
    if (tr->ema && have_ema) {
        if (d->rank == 0) memcpy(tr->ema, ck.ema, sizeof(float) * (size_t)m->nparams);
        dist_bcast_floats(tr->ema, m->nparams);
    } else if (tr->ema) {
        memcpy(tr->ema, m->params, sizeof(float) * (size_t)m->nparams);
        if (d->rank == 0)
            fprintf(stderr, "charlm: note: %s has no moving average of the weights: optim.ema "
                    "starts from its parameters\n", path);
    }
    const int L = m->d.layers, B = tr->corpus.B, H = m->d.H;
    dist_scatter_streams(tr->state_h, ck.h, L, B, H);
    if (m->ops->has_c) dist_scatter_streams(tr->state_c, ck.c, L, B, H);
    if (d->rank == 0) {
        char msg[400];
        if (data_changed(tr, &ck, msg, sizeof msg))
            fprintf(stderr, "charlm: warning: resuming from %s with changed data "
                    "(data.allow_changed): %s\n", path, msg);
        if (has_run_id(&ck)) memcpy(tr->run_id, ck.info.run_id, sizeof tr->run_id);
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
    tr->plateau_p = config_plateau_params(cfg);
    tr->plateau = optim_plateau_start();
    tr->lr = cfg->lr;
    const size_t np = (size_t)tr->model.nparams;
    tr->grads = xcalloc(np, sizeof(float));
    tr->snap.params = xcalloc(np, sizeof(float));
    for (int i = 0; i < tr->opt.nmoments; i++) tr->snap.moments[i] = xcalloc(np, sizeof(float));
    tr->ema_model = tr->model;
    if (cfg->ema > 0) {
        tr->ema = xcalloc(np, sizeof(float));
        tr->snap.ema = xcalloc(np, sizeof(float));
        memcpy(tr->ema, tr->model.params, np * sizeof(float));
        tr->ema_model.params = tr->ema;
        model_views(&tr->ema_model.p, &tr->ema_model, tr->ema);
    }
    /* the parts of the gradient-norm record: the embedding, each layer's tensors, the decoder's
     * (its bias alone when tied: the weight is the embedding's) */
    const model_dims_t *md = &tr->model.d;
    tr->nparts = md->layers + 2;
    tr->parts[0] = 0;
    for (int l = 0; l < md->layers; l++)
        tr->parts[1 + l] = tr->model.tensors[model_tensor_index(md, MODEL_T_W_IH, l)].offset;
    const int dec = model_tensor_index(md, md->tie ? MODEL_T_DEC_B : MODEL_T_DEC_W, 0);
    tr->parts[md->layers + 1] = tr->model.tensors[dec].offset;
    tr->parts[md->layers + 2] = tr->model.nparams;
}

/* model_acts_alloc's flags of a training window (validation runs in fp32, without dropout). */
static int train_acts_flags(const config_t *cfg) {
    model_dropout_t drop = config_model_dropout(cfg);
    return model_dropout_flags(&drop) | (cfg->precision == KERN_BF16 ? MODEL_ACTS_BF16 : 0);
}

/* The activations of a training and a validation window and the carried states; on rank 0 the
 * gathered states of all streams and the canonical configuration text for checkpoints. */
static void alloc_buffers(trainer_t *tr) {
    const config_t *cfg = tr->cfg;
    const corpus_t *c = &tr->corpus;
    model_acts_alloc(&tr->acts, &tr->model, c->B, c->T, train_acts_flags(cfg));
    tr->nstate = (size_t)cfg->layers * c->B * cfg->hidden;
    tr->state_h = xcalloc(tr->nstate, sizeof(float));
    tr->state_c = xcalloc(tr->nstate, sizeof(float));
    tr->prev_h = xcalloc(tr->nstate, sizeof(float));
    tr->prev_c = xcalloc(tr->nstate, sizeof(float));
    tr->snap.h = xcalloc(tr->nstate, sizeof(float));
    tr->snap.c = xcalloc(tr->nstate, sizeof(float));
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

/* Collective: the fingerprints of the training and validation data — a digest of each global
 * stream's ids, this rank's B of them gathered on rank 0 in stream order and combined there. They
 * depend on the text and on the S streams, not on how the streams are dealt to the ranks. */
static void fingerprint_data(trainer_t *tr) {
    const corpus_t *c = &tr->corpus;
    const int B = c->B;
    const size_t wt = (size_t)c->train.width, wv = (size_t)c->val_ids.width;
    uint64_t *mine = xcalloc(2 * (size_t)B, sizeof(uint64_t)); /* (2, B) train, validation */
    uint64_t *all = tr->d->rank == 0 ? xcalloc(2 * (size_t)c->S, sizeof(uint64_t)) : NULL;
    for (int b = 0; b < B; b++) {
        mine[b] = digest_bytes((const char *)c->train.data + (size_t)(b * c->L) * wt,
                               (size_t)(c->L + 1) * wt);
        if (c->nval)
            mine[B + b] = digest_bytes((const char *)c->val_ids.data + (size_t)c->val_off[b] * wv,
                                       (size_t)(c->val_len[b] + 1) * wv);
    }
    dist_gather_u64(all, mine, 2 * B); /* (ranks, 2, B) */
    if (all) {
        digest_t dt, dv;
        digest_init(&dt), digest_init(&dv);
        for (int s = 0; s < c->S; s++) {
            digest_u64(&dt, all[2 * (s / B) * B + s % B]);
            digest_u64(&dv, all[(2 * (s / B) + 1) * B + s % B]);
        }
        tr->train_fp = digest_final(&dt);
        tr->val_fp = c->nval ? digest_final(&dv) : 0;
    }
    free(mine), free(all);
}

/* A new run id: 128 random bits from the system, or, should it have none to give, a digest of
 * the clock, the process and an address. */
static void new_run_id(uint64_t id[2]) {
    FILE *f = fopen("/dev/urandom", "rb");
    size_t got = f ? fread(id, sizeof(uint64_t), 2, f) : 0;
    if (f) fclose(f);
    if (got == 2) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const uint64_t seed[] = {(uint64_t)ts.tv_sec, (uint64_t)ts.tv_nsec, (uint64_t)getpid(),
                             (uint64_t)(uintptr_t)&ts};
    id[0] = digest_bytes(seed, sizeof seed);
    id[1] = digest_bytes(id, sizeof id[0]);
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
    const int rank0 = tr->d->rank == 0, moments = optim_nmoments(&op), ema = cfg->ema > 0;
    const double P = model_nparams(&d), state = (double)d.layers * c->B * d.H,
                 all = (double)d.layers * c->S * d.H;
    const int flags = train_acts_flags(cfg);
    /* parameters, gradients, moments, the moving average and the snapshot of parameters, moments
     * and average (the way back from a divergence); carried, previous, snapshot and validation
     * states, h and c */
    need_t n = {.params = 4.0 * P * (3 + 2 * moments + 2 * ema),
                .acts = model_acts_bytes(&d, c->B, c->T, flags),
                .states = 4.0 * state * (c->nval ? 8 : 6),
                .shard = (double)(c->B * c->L + 1) * c->train.width};
    if (c->nval) n.acts += model_acts_bytes(&d, c->B, c->T, 0);
    for (int b = 0; b < c->B && c->nval; b++)
        n.shard += (double)(c->val_len[b] + 1) * c->val_ids.width;
    if (rank0) n.states += 4.0 * 2 * all * (resuming ? 2 : 1);
    if (rank0 && resuming) n.params += 4.0 * P * (1 + moments + ema);
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
                      .last_val = NAN, .best_val = NAN, .last_val_step = -1, .stop = "steps"};
    corpus_params_t cp = config_corpus_params(cfg);
    int rc = corpus_load(&tr->corpus, &cp, d->rank, d->size, d->rank == 0);
    if ((rc = dist_agree(d, rc ? rc : signals_check())) ||
        (rc = dist_agree(d, check_memory(tr, resume != NULL))) ||
        (rc = dist_agree(d, d->rank == 0 ? lock_run_dir(tr) : CHARLM_OK)))
        return rc;
    build_model(tr);
    alloc_buffers(tr);
    fingerprint_data(tr);
    if (d->rank == 0) new_run_id(tr->run_id); /* a fresh start's; a resume keeps its own */
    /* train.steps, when given, is the length of the run; train.epochs sets it otherwise */
    tr->total = cfg->steps ? cfg->steps : cfg->epochs * tr->corpus.windows;
    tr->window_chars = (int64_t)tr->corpus.S * tr->corpus.T;
    int resumed = 0;
    if ((rc = resume_from(tr, resume, &resumed))) return rc;
    /* a stop signal from here on is taken at the end of the first window, with a checkpoint */
    if ((rc = dist_agree(d, signals_check()))) return rc;
    tr->need = train_need(tr, resumed);
    if (d->rank == 0) rc = prepare_run_dir(tr, resumed);
    return dist_agree(d, rc);
}

static void trainer_close(trainer_t *tr) {
    if (tr->d->rank == 0) log_close(&tr->log);
    free(tr->grads);
    free(tr->state_h), free(tr->state_c), free(tr->prev_h), free(tr->prev_c);
    free(tr->snap.params), free(tr->snap.h), free(tr->snap.c);
    free(tr->ema), free(tr->snap.ema);
    for (int i = 0; i < OPTIM_MAX_MOMENTS; i++) free(tr->snap.moments[i]);
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

/* Rank 0: the training seconds of the run so far, over its resumes. */
static double run_seconds(const trainer_t *tr) { return tr->elapsed0 + dist_time() - tr->t0; }

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
                     .optim = tr->opt.p.kind, .optim_step = tr->opt.step,
                     .run_id = {tr->run_id[0], tr->run_id[1]}, .train_fp = tr->train_fp,
                     .val_fp = tr->val_fp, .elapsed_s = run_seconds(tr),
                     .plateau = tr->plateau},
            .config = tr->config_text, .vocab = &c->vocab, .params = tr->model.params,
            .nmoments = tr->opt.nmoments,
            .moments = {optim_moment(&tr->opt, 0), optim_moment(&tr->opt, 1)}, .ema = tr->ema,
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

static mark_t mark_of(const trainer_t *tr) {
    return (mark_t){.step = tr->step, .epoch = tr->epoch, .cursor = tr->cursor,
                    .last_val_step = tr->last_val_step, .n_train = tr->n_train,
                    .n_val = tr->n_val, .lr = tr->lr, .last_train = tr->last_train,
                    .last_val = tr->last_val, .best_val = tr->best_val,
                    .plateau = tr->plateau};
}

static void go_back_to(trainer_t *tr, const mark_t *m) {
    tr->step = m->step, tr->epoch = m->epoch, tr->cursor = m->cursor;
    tr->last_val_step = m->last_val_step, tr->n_train = m->n_train, tr->n_val = m->n_val;
    tr->lr = m->lr, tr->last_train = m->last_train, tr->last_val = m->last_val;
    tr->best_val = m->best_val;
    tr->plateau = m->plateau;
}

/* Keeps the run as it was before the current window, whose loss and gradient are finite (so
 * its parameters are good): parameters, moments, optimizer step, carried state and position. */
static void take_snapshot(trainer_t *tr) {
    const size_t np = (size_t)tr->model.nparams;
    memcpy(tr->snap.params, tr->model.params, np * sizeof(float));
    for (int i = 0; i < tr->opt.nmoments; i++)
        memcpy(tr->snap.moments[i], optim_moment(&tr->opt, i), np * sizeof(float));
    if (tr->ema) memcpy(tr->snap.ema, tr->ema, np * sizeof(float));
    memcpy(tr->snap.h, tr->prev_h, tr->nstate * sizeof(float));
    memcpy(tr->snap.c, tr->prev_c, tr->nstate * sizeof(float));
    tr->snap.optim_step = tr->opt.step;
    tr->snap.at = tr->mark[0];
    tr->snap.taken = 1;
}

static int train_window(trainer_t *tr, window_t *w);

/* Collective: the parameters, moments, optimizer step, carried state and position the run had
 * after `step` (from the snapshot's step on): the snapshot, then its windows trained again —
 * the same computation on the same data, so the same values, bit for bit. */
static void replay_to(trainer_t *tr, int64_t step) {
    const size_t np = (size_t)tr->model.nparams;
    CHARLM_CHECK(tr->snap.taken && tr->snap.at.step <= step && step - tr->snap.at.step < NLRS);
    memcpy(tr->model.params, tr->snap.params, np * sizeof(float));
    for (int i = 0; i < tr->opt.nmoments; i++)
        memcpy(optim_moment(&tr->opt, i), tr->snap.moments[i], np * sizeof(float));
    if (tr->ema) memcpy(tr->ema, tr->snap.ema, np * sizeof(float));
    memcpy(tr->state_h, tr->snap.h, tr->nstate * sizeof(float));
    memcpy(tr->state_c, tr->snap.c, tr->nstate * sizeof(float));
    tr->opt.step = tr->snap.optim_step;
    go_back_to(tr, &tr->snap.at);
    tr->replaying = 1;
    while (tr->step < step) {
        window_t w;
        CHARLM_CHECK(train_window(tr, &w) == CHARLM_OK); /* it did not diverge the first time */
    }
    tr->replaying = 0;
}

/* Collective, when a step went bad: its update made a parameter or optimizer moment non-finite
 * (the update of this window: bad_window 0), or this window's loss or gradient is not finite,
 * which condemns the parameters of the previous update (bad_window 1). The run goes back to
 * where it was before the update that went bad — parameters, moments, carried state, position,
 * losses, history — and checkpoints that state: the one a checkpoint of that step would have
 * held, all finite, and its window's loss was finite. metrics.jsonl is cut back to it as a
 * resume would. A bad first window of this process has no earlier state here: nothing is
 * written. Returns CHARLM_EDIVERGED (message printed once), or the checkpoint's failure. */
static int diverged(trainer_t *tr, const window_t *w, int bad_window) {
    const int rank0 = tr->d->rank == 0;
    int rc;
    CHARLM_CHECK(!tr->replaying);
    if (!tr->snap.taken) {
        rc = err_set(CHARLM_EDIVERGED, "training diverged at step %lld: loss %g, gradient norm "
                     "%g from the state it started from; no earlier state to keep",
                     (long long)tr->step + 1, w->loss, w->gnorm);
        if (rank0) err_print();
        return rc;
    }
    const mark_t to = tr->mark[bad_window];
    const int64_t bad_step = to.step + 1;
    /* a checkpoint of the condemned parameters would be the newest: --resume auto takes it */
    char condemned[sizeof tr->ckpt];
    ckpt_path(condemned, sizeof condemned, tr->cfg->run_dir, bad_step);
    if (rank0 && bad_window && !strcmp(tr->ckpt, condemned)) remove(condemned);
    replay_to(tr, to.step);
    go_back_to(tr, &to);
    if ((rc = save_checkpoint(tr))) return rc;
    if (rank0) {
        log_params_t lp = config_log_params(tr->cfg);
        log_close(&tr->log);
        rc = log_open(&tr->log, &lp, 1, tr->step);
    }
    if ((rc = dist_agree(tr->d, rc))) return rc;
    if (bad_window)
        rc = err_set(CHARLM_EDIVERGED, "training diverged at step %lld: after its update the loss "
                     "of step %lld is %g%s, the gradient norm %g; the last good state is in %s",
                     (long long)bad_step, (long long)bad_step + 1, w->loss,
                     isfinite(w->loss) && w->loss > DIVERGED_LOSS ? " nats/char" : "", w->gnorm,
                     tr->ckpt);
    else
        rc = err_set(CHARLM_EDIVERGED, "training diverged at step %lld: its update made "
                     "parameters or optimizer moments non-finite (loss %g, gradient norm %g); the "
                     "last good state is in %s", (long long)bad_step, w->loss, w->gnorm,
                     tr->ckpt);
    if (rank0) err_print();
    return rc;
}

/* Collective: one optimizer step of truncated BPTT — the window at the cursor forward and
 * backward from the carried state, the gradients summed over the ranks while backward runs, the
 * loss summed and the stop decision taken together in one all-reduce, clipping, the divergence
 * checks (of the loss and gradient, and of what the update writes), the step, and the cursor
 * moved on (at the epoch's end every stream restarts from zero state). Fills *w; returns
 * CHARLM_OK, or the status of diverged(). */
static int train_window(trainer_t *tr, window_t *w) {
    const config_t *cfg = tr->cfg;
    const corpus_t *c = &tr->corpus;
    model_t *m = &tr->model;
    float *state_c = m->ops->has_c ? tr->state_c : NULL;

    load_window(tr);
    tr->mark[1] = tr->mark[0];
    tr->mark[0] = mark_of(tr);
    memcpy(tr->prev_h, tr->state_h, tr->nstate * sizeof(float));
    memcpy(tr->prev_c, tr->state_c, tr->nstate * sizeof(float));
    model_dropout_t drop = config_model_dropout(cfg);
    drop.step = tr->step;
    drop.first_stream = c->first_stream;
    double t = dist_time();
    double loss = model_forward(&tr->acts, tr->state_h, state_c, m, c->T, &drop,
                                1.0f / (float)tr->window_chars, 1);
    tr->tm.forward += lap(&t);

    model_hooks_t hooks = {.ready = overlap_ready, .poll = overlap_poll, .ctx = &tr->ov};
    dist_overlap_begin(&tr->ov, tr->grads, m->nparams, dist_piece(tr->d->size));
    model_backward(tr->grads, &tr->acts, m, c->T, &hooks);
    tr->tm.backward += lap(&t);
    dist_overlap_wait(&tr->ov);
    /* rank 0's clock decides the time limit and is the time-based schedule's, every rank's flag
     * a signal, rank 0's log a failed metrics write */
    const int timed = cfg->schedule_over == SCHED_OVER_TIME;
    double clock = (timed ? tr->elapsed0 : 0.0) + dist_time() - tr->t0;
    unsigned stop = (tr->d->rank == 0 && cfg->time_limit > 0 && clock >= cfg->time_limit
                         ? DIST_STOP_TIME : 0) |
                    (signals_pending() ? DIST_STOP_SIGNAL : 0) |
                    (tr->log.error[0] ? DIST_STOP_FAILED : 0);
    loss = dist_window_end(loss, &stop, &clock);
    tr->tm.allreduce += lap(&t);

    *w = (window_t){.loss = loss / (double)tr->window_chars,
                    .signalled = (stop & DIST_STOP_SIGNAL) != 0,
                    .failed = (stop & DIST_STOP_FAILED) != 0,
                    .timed_out = (stop & DIST_STOP_TIME) != 0};
    w->last = w->timed_out || (tr->total && tr->step + 1 >= tr->total);
    /* the norm of each part only where it is recorded: rank 0, on a step it logs */
    if (tr->d->rank == 0 && log_due(tr, tr->step + 1, w))
        optim_norms(w->parts, tr->grads, tr->parts, tr->nparts);
    w->gnorm = optim_clip(tr->grads, m->nparams, cfg->clip);
    w->clipped = cfg->clip > 0 && w->gnorm > cfg->clip;
    if (!isfinite(w->loss) || w->loss > DIVERGED_LOSS || !isfinite(w->gnorm))
        return diverged(tr, w, 1);
    if (!tr->replaying && (!tr->snap.taken || tr->step % SNAPSHOT_EVERY == 0)) take_snapshot(tr);
    tr->clock = clock;
    double lr = timed ? optim_lr_time(&tr->sched, tr->step, clock / cfg->time_limit)
                      : optim_lr(&tr->sched, tr->step, tr->total);
    tr->lr = tr->replaying ? tr->lrs[tr->step % NLRS] : lr * tr->plateau.scale;
    tr->lrs[tr->step % NLRS] = tr->lr;
    /* every rank updates the same parameters with the same summed gradients: the verdict is
     * the same everywhere without a message */
    if (!optim_step(m->params, &tr->opt, tr->grads, tr->lr)) return diverged(tr, w, 0);
    if (tr->ema && tr->step < cfg->ema_start)
        memcpy(tr->ema, m->params, sizeof(float) * (size_t)m->nparams);
    else if (tr->ema)
        optim_ema(tr->ema, m->params, m->nparams, cfg->ema);
    tr->tm.optimizer += lap(&t);

    tr->step++;
    tr->last_train = w->loss;
    if (++tr->cursor == c->windows) {
        tr->cursor = 0;
        tr->epoch++;
        memset(tr->state_h, 0, tr->nstate * sizeof(float));
        memset(tr->state_c, 0, tr->nstate * sizeof(float));
    }
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
 * record (a failed write is kept in tr->log.error and stops the run after the next window) and
 * a row of the training history. */
static void maybe_log(trainer_t *tr, const window_t *w) {
    if (tr->d->rank != 0 || !log_due(tr, tr->step, w)) return;
    const double limit = tr->cfg->time_limit, now = dist_time(), elapsed = now - tr->t0;
    const double before = tr->cfg->schedule_over == SCHED_OVER_TIME ? tr->elapsed0 : 0.0;
    log_train_t m = {.step = tr->step, .total_steps = tr->total, .epoch = tr->epoch,
                     .train_loss = w->loss, .lr = tr->lr, .grad_norm = w->gnorm,
                     .chars_per_s = (double)(tr->step - tr->step_log) * tr->window_chars /
                                    (now - tr->t_log),
                     .elapsed_s = elapsed, .eta_s = -1, .part_norms = w->parts,
                     .nparts = tr->nparts, .clipped = w->clipped,
                     .timed = tr->cfg->schedule_over == SCHED_OVER_TIME,
                     .progress = tr->clock / limit};
    if (tr->total)
        m.eta_s = elapsed / (double)(tr->step - tr->step0) * (double)(tr->total - tr->step);
    if (limit > 0 && (m.eta_s < 0 || m.eta_s > limit - before - elapsed))
        m.eta_s = fmax(limit - before - elapsed, 0.0);
    log_train(&tr->log, &m);
    double row[3] = {(double)tr->step, w->loss, w->gnorm};
    hist_push(&tr->train_hist, &tr->n_train, &tr->cap_train, 3, row);
    tr->t_log = now, tr->step_log = tr->step;
}

/* Collective: mean loss (nats/char) over every prediction of the validation split, the state
 * carried from window to window from zero; of the moving average when optim.ema is on. */
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
                             &tr->ema_model, Tw, NULL, 1.0f, 0);
    }
    dist_sum_doubles(&sum, 1);
    return sum / (double)c->val_pred;
}

/* Rank 0: a sample of the model as it is now (sample.length characters at sample.temperature;
 * the moving average when optim.ema is on), from a newline, on stdout — unless a write there
 * failed before (a closed pipe). */
static void print_sample(trainer_t *tr) {
    const config_t *cfg = tr->cfg;
    const vocab_t *v = &tr->corpus.vocab;
    FILE *out = log_out(&tr->log);
    if (!out) return;
    log_msg(&tr->log, "charlm: sample at step %lld (temperature %g):", (long long)tr->step,
            cfg->sample_temperature);
    int32_t prime = vocab_id(v, '\n');
    if (prime < 0) prime = 0;
    sample_opts_t o = {.length = cfg->sample_length, .temperature = cfg->sample_temperature,
                       .top_p = 1.0, .seed = cfg->seed, .index = (uint64_t)tr->step};
    sample_text(out, &tr->ema_model, v, &prime, 1, &o);
    fputc('\n', out);
    log_out_done(&tr->log);
}

/* Collective, every eval.every steps and at the end of a run (when there is a validation split):
 * the validation loss, which the plateau state takes in at every eval.every steps (the same on
 * every rank: the loss is reduced), setting w->early when train.early_stop ends the run; rank 0
 * logs it, records it and, every sample.every steps, prints a sample. Its time is not training
 * time. */
static void maybe_eval(trainer_t *tr, window_t *w) {
    const config_t *cfg = tr->cfg;
    if (!tr->corpus.nval || !((cfg->eval_every && tr->step % cfg->eval_every == 0) || w->last))
        return;
    double t = dist_time();
    tr->last_val = evaluate(tr);
    tr->last_val_step = tr->step;
    /* only the validations of the cadence: the one that ends a stopped run is not made by
     * the uninterrupted run, which its resumption must continue exactly */
    if (cfg->eval_every && tr->step % cfg->eval_every == 0)
        w->early = optim_plateau(&tr->plateau, &tr->plateau_p, tr->last_val);
    t = dist_time() - t;
    tr->t_log += t; /* chars/s counts training windows only */
    tr->tm.eval += t;
    if (tr->d->rank != 0) return;
    log_val(&tr->log, tr->step, tr->last_val, run_seconds(tr));
    if (cfg->sample_every && tr->step % cfg->sample_every == 0) print_sample(tr);
    double row[2] = {(double)tr->step, tr->last_val};
    hist_push(&tr->val_hist, &tr->n_val, &tr->cap_val, 2, row);
}

/* Collective, every checkpoint.every steps, at the end of a run and on a stop signal: a
 * checkpoint. Its time is not training time. */
static int maybe_checkpoint(trainer_t *tr, const window_t *w) {
    const int64_t every = tr->cfg->ckpt_every;
    if (!(w->last || w->early || w->signalled || (every && tr->step % every == 0)))
        return CHARLM_OK;
    double t = dist_time();
    int rc = save_checkpoint(tr);
    t = dist_time() - t;
    tr->t_log += t;
    tr->tm.checkpoint += t;
    return rc;
}

/* Collective: CHARLM_EINPUT on every rank when rank 0 could not write metrics.jsonl, its line
 * naming the file and the cause printed once; else CHARLM_OK. */
static int agree_log(trainer_t *tr) {
    int rc = CHARLM_OK;
    if (tr->log.error[0]) {
        err_clear(); /* the line of a checkpoint that failed on the way is printed already */
        rc = err_set(CHARLM_EINPUT, "%s", tr->log.error);
    }
    return dist_agree(tr->d, rc);
}

/* Collective, after a window whose end told every rank that rank 0 could not write metrics.jsonl:
 * a checkpoint, if one can be written (a failure prints its own line), then the metrics failure
 * (CHARLM_EINPUT) and where to continue. */
static int stop_failed(trainer_t *tr) {
    int ck = save_checkpoint(tr), rc = agree_log(tr);
    if (tr->d->rank != 0) return rc;
    if (!ck)
        log_msg(&tr->log, "charlm: stopped at step %lld; checkpoint %s (continue with --resume "
                "auto once the file can be written)", (long long)tr->step, tr->ckpt);
    else
        log_msg(&tr->log, "charlm: stopped at step %lld without a checkpoint (continue from the "
                "newest valid one with --resume auto once there is room)", (long long)tr->step);
    return rc;
}

/* Whether the run ends after this window: on a stop signal (*rc = CHARLM_ESTOPPED, and rank 0
 * says where to continue), at its step, epoch or time limit, or by train.early_stop (the reason
 * in tr->stop). */
static int maybe_stop(trainer_t *tr, const window_t *w, int *rc) {
    if (w->signalled) {
        *rc = CHARLM_ESTOPPED;
        if (tr->d->rank == 0)
            log_msg(&tr->log, "charlm: stopped by a signal at step %lld; checkpoint %s "
                    "(continue with --resume auto)", (long long)tr->step, tr->ckpt);
    } else if (w->early) {
        tr->stop = "early stop";
        if (tr->d->rank == 0)
            log_msg(&tr->log, "charlm: early stop at step %lld: %lld validations without "
                    "improvement on %.6f (train.early_stop)", (long long)tr->step,
                    (long long)tr->plateau.stale, tr->plateau.best);
    } else if (w->timed_out) {
        tr->stop = "time limit";
    }
    return w->signalled || w->last || w->early;
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
    if (steps == 0 && tr->total && tr->step >= tr->total) {
        log_msg(&tr->log, "charlm: nothing to do: the run is at step %lld of %lld",
                (long long)tr->step, (long long)tr->total);
        log_summary(&tr->log, tr->step, "steps", &(log_field_t){"exit", CHARLM_OK}, 1);
        return;
    }
    if (steps == 0) {
        log_msg(&tr->log, "charlm: nothing to do: the run has used its train.time_limit = %g s "
                "(%.1f s; optim.schedule_over = time)", tr->cfg->time_limit, tr->elapsed0);
        log_summary(&tr->log, tr->step, "time limit", &(log_field_t){"exit", CHARLM_OK}, 1);
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
                       {"startup_rss_mib", tr->rss_start / mib}, {"exit", CHARLM_OK}};
    log_summary(&tr->log, tr->step, tr->stop, f, (int)(sizeof f / sizeof *f));
}

/* Rank 0, at the end of a run that did not finish once metrics.jsonl was open: the end record
 * {"step","summary":true,"exit":RC} ("signal":N too when a signal stopped it) — how the run ended,
 * for `charlm status` (a finished run's summary carries "exit":0). */
static void record_end(trainer_t *tr, int rc) {
    log_field_t f[] = {{"exit", rc}, {"signal", signals_pending()}};
    const char *stop = rc == CHARLM_ESTOPPED    ? "signal"
                       : rc == CHARLM_EDIVERGED ? "diverged"
                                                : "error";
    log_summary(&tr->log, tr->step, stop, f, rc == CHARLM_ESTOPPED && f[1].value ? 2 : 1);
}

/* What decides how this rank's sums round, into out (n bytes): its recurrent-product path and
 * precision and OpenBLAS's kernel set, as the header line shows them and check_numerics
 * compares them. */
static void numerics(const trainer_t *tr, char *out, size_t n) {
    snprintf(out, n, "recurrent products %s %s, OpenBLAS kernels %s",
             kern_path_name(tr->acts.whh.path), kern_precision_names[tr->acts.whh.prec],
             dist_blas_kernel_set());
}

static void print_header(trainer_t *tr, int threads, const char *what) {
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
            "%lld steps%s, %d BLAS thread(s) per rank; %s",
            tr->d->size, c->B, c->T, c->S * c->T, (long long)c->windows,
            (long long)tr->total, tr->total ? "" : " (no step limit)", threads, what);
}

/* Collective. what: this rank's numerics() text. Rank 0 warns when a rank's sums round
 * otherwise than its own: another OpenBLAS
 * kernel set (a node whose environment lacks the OPENBLAS_CORETYPE of the first, or a CPU of
 * another kind) or another recurrent-product path. Training still agrees across ranks (they
 * all apply the same all-reduced gradient), but the run no longer repeats bit for bit when its
 * ranks are placed otherwise, which resume checks and rank-count comparisons rely on. */
static void check_numerics(const char *what) {
    char host[DIST_TEXT], their_what[DIST_TEXT], their_host[DIST_TEXT];
    fileio_host(host, sizeof host);
    int r = dist_first_unlike(what, host, their_what, their_host);
    if (r > 0)
        fprintf(stderr, "charlm: warning: rank %d (host %s) computes with %s, rank 0 (host %s) "
                "with %s: their sums round differently, so this run will not repeat bit for bit "
                "with its ranks placed otherwise; give every rank the same environment (Open "
                "MPI: mpirun -x OPENBLAS_CORETYPE)\n", r, their_host, their_what, host, what);
}

int train_run(const config_t *cfg, const char *resume, const dist_t *d) {
    trainer_t tr;
    int rc = trainer_open(&tr, cfg, resume, d);
    if (!rc) {
        int threads = dist_blas_threads(d);
        char what[DIST_TEXT];
        numerics(&tr, what, sizeof what);
        check_numerics(what);
        if (d->rank == 0) print_header(&tr, threads, what);
        tr.t0 = tr.t_log = dist_time();
        tr.step0 = tr.step_log = tr.step;
        /* a schedule over time whose budget the run has used up (the checkpoint's seconds, the
         * same on every rank) has nothing left to train */
        const int spent = cfg->schedule_over == SCHED_OVER_TIME && tr.elapsed0 >= cfg->time_limit;
        while (!(tr.total && tr.step >= tr.total) && !spent) {
            window_t w;
            if ((rc = train_window(&tr, &w))) break;
            maybe_log(&tr, &w);
            maybe_eval(&tr, &w);
            if (w.failed) {
                rc = stop_failed(&tr);
                break;
            }
            if ((rc = maybe_checkpoint(&tr, &w)) || maybe_stop(&tr, &w, &rc)) break;
        }
    }
    if (!rc) report(&tr, dist_time() - tr.t0);
    /* a metrics record that could not be written in the last window, at a signal's stop or in
     * the summary: the checkpoint is written, the metrics are not complete */
    if ((!rc || rc == CHARLM_ESTOPPED) && agree_log(&tr)) {
        if (!rc && d->rank == 0 && tr.ckpt[0])
            log_msg(&tr.log, "charlm: the run finished at step %lld: checkpoint %s",
                    (long long)tr.step, tr.ckpt);
        rc = CHARLM_EINPUT;
    }
    if (!rc && d->rank == 0 && tr.step > tr.step0) {
        if (tr.ckpt[0]) log_msg(&tr.log, "charlm: checkpoint %s", tr.ckpt);
        print_sample(&tr);
    }
    /* a stop during start-up keeps its promise that nothing was written */
    if (rc && rc != CHARLM_EINTERRUPTED && d->rank == 0) record_end(&tr, rc);
    trainer_close(&tr);
    return rc;
}
