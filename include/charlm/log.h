/* log: what rank 0 shows and records — the progress display on stderr (one live line redrawn in
 * place on a terminal; plain lines when stderr is not a terminal, as in batch logs), samples on
 * stdout, and <run.dir>/metrics.jsonl (one JSON object per line), which log owns: begun afresh,
 * an earlier run's file kept aside, on a fresh start; cut back to the checkpoint's step on
 * resume; appended to while the run lasts. Other ranks call nothing here.
 *
 * Failures. A write to stderr or stdout that fails (a closed pipe — SIGPIPE is ignored — or a
 * hung-up terminal) ends the output to that stream and nothing else: training goes on. A write
 * to metrics.jsonl that fails (a full disk, a file-size limit) is cut back to the last complete
 * line and ends the metrics; lg->error then says "PATH: cannot write the record of step S: CAUSE"
 * and the caller stops the run. */
#ifndef CHARLM_LOG_H
#define CHARLM_LOG_H

#include <stdint.h>
#include <stdio.h>

#include "charlm/fileio.h"

typedef struct {
    const char *run_dir; /* where metrics.jsonl is (borrowed) */
    int64_t every;       /* a training line every N steps, >= 1 (and at the end of a run) */
} log_params_t;

typedef struct {
    log_params_t p;
    FILE *metrics;   /* metrics.jsonl, opened for append, unbuffered; NULL once a write failed */
    char *path;      /* its path (owned) */
    long long bytes; /* its length: complete lines only */
    char error[CHARLM_PATH_MAX + 128]; /* why metrics.jsonl could not be written; "" = it could */
    int tty;         /* stderr is a terminal */
    int live;        /* a live line is on screen and must be cleared before other output */
    int err_dead, out_dead; /* a write to stderr / stdout failed: nothing more goes there */
} log_t;

typedef struct {
    int64_t step, total_steps; /* total 0 = unknown */
    int64_t epoch;
    double train_loss, lr, grad_norm, chars_per_s, elapsed_s;
    double eta_s; /* < 0 = unknown */
    /* the gradient norm of each part of the model, before clipping: the embedding, each
     * recurrent layer, the decoder (nparts of them; 0 = not recorded) */
    const double *part_norms;
    int nparts;
    int clipped;     /* optim.clip scaled this step's gradient */
    int timed;       /* optim.schedule_over = time: progress is recorded */
    double progress; /* the fraction of train.time_limit consumed, which the lr follows */
} log_train_t;

/* Opens <p->run_dir>/metrics.jsonl for append (p is copied). On a fresh start (resumed 0) an
 * earlier run's file is first moved aside to metrics.jsonl.N, the first free N; on resume at
 * `step` the lines of later steps are first dropped (the resumed run writes them again) by a
 * durable replacement of the file. Returns CHARLM_OK or CHARLM_EINPUT naming the path and the
 * cause. */
int log_open(log_t *lg, const log_params_t *p, int resumed, int64_t step);

/* Shows a progress line and appends {"step","epoch","train_loss","lr","grad_norm","chars_per_s",
 * "elapsed_s"} to metrics.jsonl, then "grad_norm_layers":[...] and "clipped":true|false when
 * m->nparts > 0, and "progress" when m->timed. Floating values are written with 9 significant
 * digits (round-trip for float32), so runs can be compared exactly. */
void log_train(log_t *lg, const log_train_t *m);

/* Prints a validation line and appends {"step","val_loss","val_bpc","elapsed_s"} to
 * metrics.jsonl; elapsed_s is the run's wall time when the validation ended (what a loss
 * against time curve plots; the train lines' elapsed_s is taken before it). */
void log_val(log_t *lg, int64_t step, double val_loss, double elapsed_s);

typedef struct {
    const char *key;
    double value;
} log_field_t;

/* Appends the end-of-run record {"step":step,"summary":true,"stop":STOP,KEY:VALUE...} to
 * metrics.jsonl; stop says why the run ended ("steps", "time limit", "early stop"; "signal",
 * "diverged", "error" for a run that did not finish). */
void log_summary(log_t *lg, int64_t step, const char *stop, const log_field_t *fields, int n);

/* The progress line's formats, into buf (n bytes): a duration "12s", "3m12s", "2h05m", "3d04h"
 * ("?" when s is negative or not finite) and a rate "812", "41.2k", "1.23M" ("?" likewise). */
void log_fmt_duration(char *buf, size_t n, double s);
void log_fmt_rate(char *buf, size_t n, double r);

/* Prints a free-form message line (clearing the live line first). */
void log_msg(log_t *lg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Where a sample goes: stdout, or NULL when an earlier write there failed (the caller skips the
 * sample). */
FILE *log_out(log_t *lg);

/* After writing to log_out(): flushes stdout; a failure ends the output there. */
void log_out_done(log_t *lg);

/* Ends the live line and closes metrics.jsonl (written through at every record). A zeroed log_t
 * (log_open not called, or failed) is closed as well. */
void log_close(log_t *lg);

#endif
