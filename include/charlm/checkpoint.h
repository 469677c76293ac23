/* checkpoint: HDF5 checkpoints (src/README.md §4) — atomic writing, reading with every checksum
 * verified, rotation, best.h5, finding the newest valid one, and `inspect`. All HDF5 access goes
 * through h5io, the atomic replace through fileio.
 *
 * Layout of ckpt-<step>.h5, format_version 2:
 *   /                 attrs format="charlm", format_version=2, charlm_version, step, epoch,
 *                     cursor, tokens_seen, world_size, streams, seq, train_chars, lr,
 *                     last_train_loss, last_val_loss, best_val_loss, config (canonical INI)
 *   /vocab            uint32 (V) code points in id order
 *   /model            attrs cell, layers, hidden, embed, vocab_size
 *   /model/NAME       float32, one per tensor, PyTorch names (model.h)
 *   /optimizer        attrs kind, step
 *   /optimizer/M/NAME float32 buffer M of tensor NAME, shaped like /model/NAME. M is PyTorch's
 *                     state key (optim_moment_name): exp_avg and exp_avg_sq (adam, adamw),
 *                     momentum_buffer (sgd with momentum; none without), square_avg (rmsprop),
 *                     sum (adagrad)
 *   /state/h, /state/c  float32 (layers, S, H) hidden (and LSTM cell) state of every global stream
 *   /state/cursor     int64 (1) window index inside the epoch; attr epoch
 *   /metrics/train    float64 (n, 3) step, train_loss, grad_norm of every log line
 *   /metrics/val      float64 (n, 2) step, val_loss
 * Every dataset is chunked with the fletcher32 checksum filter.
 *
 * Format version 1 (charlm 0.1.0 before the names above) differs only in M: "m" for the first
 * buffer of every kind and "v" for Adam's second. The version says which names a file uses;
 * ckpt_read reads both versions, ckpt_write writes version 2. */
#ifndef CHARLM_CHECKPOINT_H
#define CHARLM_CHECKPOINT_H

#include <stdint.h>
#include <stdio.h>

#include "charlm/model.h"
#include "charlm/optim.h"
#include "charlm/vocab.h"

#define CKPT_FORMAT_VERSION 2 /* written; 1 and 2 are read */

/* The scalar facts of a checkpoint (root and group attributes): what is written is what is
 * read back. */
typedef struct {
    int64_t step, epoch, cursor, tokens_seen, train_chars;
    int world_size, streams, seq;
    double lr, last_train_loss, last_val_loss, best_val_loss; /* NAN = none yet */
    model_dims_t dims;       /* the architecture and vocabulary size (/model attributes) */
    optim_kind_t optim;      /* /optimizer attributes */
    int64_t optim_step;
} ckpt_info_t;

/* What ckpt_write stores; nothing is owned. The tensors follow model_layout(&info.dims). */
typedef struct {
    ckpt_info_t info;
    const char *config;      /* canonical INI text */
    const vocab_t *vocab;    /* (info.dims.V) */
    const float *params;     /* (nparams) parameter layout */
    int nmoments;            /* optim_nmoments of the run's optimizer */
    const float *moments[OPTIM_MAX_MOMENTS]; /* (nparams) each, parameter layout */
    const float *h, *c;      /* (layers, S, H); c NULL unless lstm */
    const double *train_hist; /* (n_train, 3) */
    const double *val_hist;   /* (n_val, 2) */
    int64_t n_train, n_val;
} ckpt_write_t;

/* A checkpoint read back; every array owned (ckpt_free). */
typedef struct {
    ckpt_info_t info;
    char *config;
    vocab_t vocab;            /* (info.dims.V) */
    float *params;            /* (nparams = model_layout(&info.dims)) parameter layout */
    int nmoments;             /* the buffers present in /optimizer */
    float *moments[OPTIM_MAX_MOMENTS]; /* (nparams) each, parameter layout */
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

/* Reads every dataset of path (so every fletcher32 checksum is verified) into ck. Returns
 * CHARLM_OK, or CHARLM_EINPUT naming the file and the dataset or attribute that is missing,
 * corrupt or of a newer format; ck is then freed. */
int ckpt_read(ckpt_t *ck, const char *path);
void ckpt_free(ckpt_t *ck);

/* Builds the model stored in ck (allocated: model_free). */
void ckpt_model(model_t *m, const ckpt_t *ck);

/* The path of checkpoint `step` in run_dir: run_dir/checkpoints/ckpt-<step, 8 digits>.h5. */
void ckpt_path(char *out, size_t n, const char *run_dir, int64_t step);

/* Finds the newest checkpoint of run_dir/checkpoints that reads back whole, printing one
 * "charlm: warning: skipping PATH: REASON" line for each newer one that does not. Returns 1 with
 * it read into ck (owned by the caller: ckpt_free) and its path copied to out (n bytes); returns
 * 0 when there is none (ck empty). */
int ckpt_find_latest(ckpt_t *ck, char *out, size_t n, const char *run_dir);

/* Deletes all but the newest `keep` ckpt-*.h5 of run_dir/checkpoints (best.h5 is separate). */
void ckpt_rotate(const char *run_dir, int keep);

/* Makes run_dir/checkpoints/best.h5 the checkpoint at path (a hard link; a copy where links are
 * not supported), atomically. Returns CHARLM_OK or CHARLM_EINPUT. */
int ckpt_mark_best(const char *path, const char *run_dir);

/* `charlm inspect`: prints the facts of the checkpoint at path to out; with verify, reads every
 * dataset first. Returns CHARLM_OK or CHARLM_EINPUT naming what is wrong. */
int ckpt_inspect(FILE *out, const char *path, int verify);

#endif
