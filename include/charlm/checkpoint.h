/* checkpoint: HDF5 checkpoints (src/README.md §4) — atomic writing, reading with every checksum
 * verified, rotation, best.h5, finding the newest valid one, and `inspect`. All HDF5 access goes
 * through h5io, the atomic replace through fileio.
 *
 * Layout of ckpt-<step>.h5, format_version 4:
 *   /                 attrs format="charlm", format_version=4, charlm_version, step, epoch,
 *                     cursor, tokens_seen, world_size, streams, seq, train_chars, lr,
 *                     last_train_loss, last_val_loss, best_val_loss, config (canonical INI),
 *                     run_id (32 hex digits), train_fingerprint, val_fingerprint and digest
 *                     (16 hex digits each); elapsed_s (training seconds of the run so far),
 *                     lr_scale, plateau_best, plateau_bad, plateau_stale (the plateau state,
 *                     optim.h)
 *   /vocab            uint32 (V) code points in id order
 *   /model            attrs cell, layers, hidden, embed, vocab_size
 *   /model/NAME       float32, one per tensor, PyTorch names (model.h)
 *   /optimizer        attrs kind, step
 *   /optimizer/M/NAME float32 buffer M of tensor NAME, shaped like /model/NAME. M is PyTorch's
 *                     state key (optim_moment_name): exp_avg and exp_avg_sq (adam, adamw),
 *                     momentum_buffer (sgd with momentum; none without), square_avg (rmsprop),
 *                     sum (adagrad)
 *   /ema/NAME         float32, the moving average of /model/NAME (optim.ema > 0 only)
 *   /state/h, /state/c  float32 (layers, S, H) hidden (and LSTM cell) state of every global stream
 *   /state/cursor     int64 (1) window index inside the epoch; attr epoch
 *   /metrics/train    float64 (n, 3) step, train_loss, grad_norm of every log line
 *   /metrics/val      float64 (n, 2) step, val_loss
 * Every dataset is chunked with the fletcher32 checksum filter. fletcher32 covers the chunks of
 * the datasets only, not HDF5's metadata (object headers, heaps, chunk indexes): a flipped bit
 * there can change what is read — an attribute's value, a dataset's shape, where its chunks are.
 * So the digest attribute is a digest (digest.h) of everything ckpt_read hands back, in a fixed
 * order (content_digest in checkpoint.c): every attribute value above but charlm_version, the
 * vocabulary, every tensor, moment buffer, state and history row and their counts. ckpt_read
 * recomputes it from what it read and refuses the file when the two differ; before allocating
 * anything it checks the sizes the attributes and dataset shapes give against each other and
 * against the file's size.
 *
 * Format 3 is format 4 without elapsed_s, the plateau state and /ema (read as 0 seconds, scale
 * 1, no best, no average); its digest covers what format 3 has. Formats 1 and 2 have no run_id,
 * fingerprints or digest: their integrity is what fletcher32 gives. Version 2 is version 3
 * without those attributes; version 1 (charlm 0.1.0 before the names above) also differs in M:
 * "m" for the first buffer of every kind and "v" for Adam's second. The version says which names
 * a file uses; ckpt_read reads all four, ckpt_write writes version 4. A file claiming version 1
 * or 2 that has any of the version-3 attributes is refused as corrupt (a flipped bit in
 * format_version would otherwise turn the digest off). */
#ifndef CHARLM_CHECKPOINT_H
#define CHARLM_CHECKPOINT_H

#include <stdint.h>
#include <stdio.h>

#include "charlm/model.h"
#include "charlm/optim.h"
#include "charlm/vocab.h"

#define CKPT_FORMAT_VERSION 4 /* written; 1 to 4 are read */

/* The scalar facts of a checkpoint (root and group attributes): what is written is what is
 * read back. */
typedef struct {
    int64_t step, epoch, cursor, tokens_seen, train_chars;
    int world_size, streams, seq;
    double lr, last_train_loss, last_val_loss, best_val_loss; /* NAN = none yet */
    model_dims_t dims;       /* the architecture and vocabulary size (/model attributes) */
    optim_kind_t optim;      /* /optimizer attributes */
    int64_t optim_step;
    /* The run's identity: random at its fresh start, kept across resumes; {0, 0} = none (a
     * checkpoint of format 1 or 2). */
    uint64_t run_id[2];
    /* Fingerprints of the training and validation data the run saw: a digest of each global
     * stream's ids, combined in stream order; 0 = none (format 1 or 2; no validation split). */
    uint64_t train_fp, val_fp;
    /* Format 4: rank 0's training seconds over the whole run (the clock of optim.schedule_over =
     * time), and the plateau state (scale 1, best NAN before format 4). */
    double elapsed_s;
    plateau_t plateau;
} ckpt_info_t;

/* What ckpt_write stores; nothing is owned. The tensors follow model_layout(&info.dims). */
typedef struct {
    ckpt_info_t info;
    const char *config;      /* canonical INI text */
    const vocab_t *vocab;    /* (info.dims.V) */
    const float *params;     /* (nparams) parameter layout */
    int nmoments;            /* optim_nmoments of the run's optimizer */
    const float *moments[OPTIM_MAX_MOMENTS]; /* (nparams) each, parameter layout */
    const float *ema;        /* (nparams) the moving average of params; NULL = none */
    const float *h, *c;      /* (layers, S, H); c NULL unless lstm */
    const double *train_hist; /* (n_train, 3) */
    const double *val_hist;   /* (n_val, 2) */
    int64_t n_train, n_val;
} ckpt_write_t;

/* A checkpoint read back; every array owned (ckpt_free). */
typedef struct {
    ckpt_info_t info;
    int version;              /* format_version of the file */
    char *config;
    vocab_t vocab;            /* (info.dims.V) */
    float *params;            /* (nparams = model_layout(&info.dims)) parameter layout */
    int nmoments;             /* the buffers present in /optimizer */
    float *moments[OPTIM_MAX_MOMENTS]; /* (nparams) each, parameter layout */
    float *ema;               /* (nparams) the moving average of params; NULL = none */
    float *h, *c;             /* (layers, S, H); c NULL unless lstm */
    double *train_hist, *val_hist;
    int64_t n_train, n_val;
} ckpt_t;

/* Writes w to `path` atomically: to PATH.tmp once the space for it is known to be there
 * (fileio_reserve), then fileio_commit (fsync, rename to PATH, fsync of the directory); creates
 * the directory when missing. Holds no copy of the model: the memory it needs is HDF5's buffer
 * for one chunk. On failure removes PATH.tmp, leaves any existing PATH untouched and returns
 * CHARLM_EINPUT with one line "cannot write checkpoint PATH: ..." giving the cause (e.g. "No
 * space left on device") and, for a failure inside HDF5, the dataset or attribute. */
int ckpt_write(const char *path, const ckpt_write_t *w);

/* Reads every dataset of path (so every fletcher32 checksum is verified) into ck and, for format
 * 3, checks the digest of all of it. Returns CHARLM_OK, or CHARLM_EINPUT naming the file and the
 * dataset or attribute that is missing, corrupt, out of proportion to the file or of a newer
 * format, or saying that the contents do not match the digest; ck is then freed. */
int ckpt_read(ckpt_t *ck, const char *path);
void ckpt_free(ckpt_t *ck);

/* ckpt_read with verify; without, the attributes only (info, version and config: no dataset is
 * read, the arrays stay NULL), as a reader beside a running training reads its checkpoints'
 * headers. Same returns as ckpt_read. */
int ckpt_read_header(ckpt_t *ck, const char *path, int verify);

/* Builds the model stored in ck (allocated: model_free): with the moving average of the
 * parameters when ck has one (what validation chose best.h5 by), else the parameters. */
void ckpt_model(model_t *m, const ckpt_t *ck);

/* Frees ck's moving average, so that ckpt_model builds the trained parameters themselves (the
 * --raw of eval and sample). */
void ckpt_drop_ema(ckpt_t *ck);

/* The path of checkpoint `step` in run_dir: run_dir/checkpoints/ckpt-<step, 8 digits>.h5. */
void ckpt_path(char *out, size_t n, const char *run_dir, int64_t step);

/* Whether a checkpoint read back whole can be used: CHARLM_OK, or CHARLM_EINPUT with the reason
 * recorded (err_set). */
typedef int (*ckpt_accept_t)(const ckpt_t *ck, const char *path, void *ctx);

/* Finds the newest checkpoint of run_dir/checkpoints that reads back whole and that accept takes
 * (every one that reads, when accept is NULL). Prints one "charlm: warning: skipping PATH:
 * REASON" line for each newer one that does not read, and for each newer one accept refused once
 * an older one is taken. Returns 1 with it read into ck (owned by the caller: ckpt_free) and its
 * path copied to out (n bytes); 0 when none reads (ck empty); -1 when some read but accept
 * refused every one: the refusal of the newest is then the recorded error (ck empty). */
int ckpt_find_latest(ckpt_t *ck, char *out, size_t n, const char *run_dir, ckpt_accept_t accept,
                     void *ctx);

/* The steps of the ckpt-<step>.h5 files of run_dir/checkpoints, newest first, in a new array
 * (the caller frees it; NULL when none), their number in *n. Names only: no file is opened. */
int64_t *ckpt_steps(const char *run_dir, int *n);

/* The number of ckpt-*.h5 files in run_dir/checkpoints, whether they read or not. */
int ckpt_count(const char *run_dir);

/* Deletes all but the newest `keep` ckpt-*.h5 of run_dir/checkpoints (best.h5 is separate). */
void ckpt_rotate(const char *run_dir, int keep);

/* Makes run_dir/checkpoints/best.h5 the checkpoint at path (a hard link; a copy where links are
 * not supported), atomically. Returns CHARLM_OK or CHARLM_EINPUT. */
int ckpt_mark_best(const char *path, const char *run_dir);

/* `charlm inspect`: prints the facts of the checkpoint at path to out; with verify, reads every
 * dataset first. Returns CHARLM_OK or CHARLM_EINPUT naming what is wrong. */
int ckpt_inspect(FILE *out, const char *path, int verify);

#endif
