/* config: the run configuration — INI files (parsed with libinih), `--set section.key=value`
 * overrides, validation with messages naming the key, and the canonical dump written to
 * <run.dir>/config.ini. Every key has a default; see config_default(). */
#ifndef CHARLM_CONFIG_H
#define CHARLM_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "charlm/corpus.h"
#include "charlm/fileio.h"
#include "charlm/log.h"
#include "charlm/model.h"
#include "charlm/optim.h"


typedef struct {
    /* [data] */
    char corpus[CHARLM_PATH_MAX]; /* file, directory or glob (required) */
    double val_frac;              /* last fraction of the corpus used for validation, [0, 1) */
    char val[CHARLM_PATH_MAX];    /* separate validation file/dir/glob; "" = use val_frac */
    int allow_changed;            /* 1: a resume may continue on other data than the checkpoint's */
    /* [model] */
    cell_kind_t cell;
    int layers, hidden, embed; /* >= 1 each */
    double dropout;            /* [0, 1) */
    int dropout_kind;          /* 0 standard, 1 locked (one mask per stream and window) */
    double dropout_input;      /* locked dropout of the embedding output, [0, 1) */
    double dropout_embed;      /* dropout of whole embedding rows, [0, 1) */
    double weight_drop;        /* DropConnect on W_hh, [0, 1) */
    int tie;                   /* 1: decoder.weight is embedding.weight (embed = hidden) */
    int layer_norm;            /* 1: layer-normalised cells */
    kern_precision_t precision; /* of the per-step recurrent products (kern.h) */
    /* [train] */
    int batch;         /* streams per rank, >= 1 */
    int seq;           /* window length T, >= 1 */
    int64_t steps;     /* optimizer steps; 0 = no step limit */
    int64_t epochs;    /* passes over the train split; 0 = no epoch limit */
    double time_limit; /* seconds of training; 0 = none */
    uint64_t seed;
    int64_t early_stop; /* stop after N validations without improvement; 0 = never */
    /* [optim] */
    optim_kind_t optim;
    double lr, beta1, beta2, eps, momentum, weight_decay, clip;
    sched_kind_t schedule;
    int64_t warmup;      /* linear warm-up steps */
    int64_t decay_every; /* step schedule: multiply lr by decay_rate every decay_every steps */
    double decay_rate;   /* step schedule factor, (0, 1] */
    double min_lr;       /* cosine schedule floor */
    sched_over_t schedule_over; /* steps, or time: cosine over the fraction of time_limit */
    int64_t plateau_patience;   /* validations without improvement before lr *= factor; 0 = off */
    double plateau_factor;      /* (0, 1) */
    double plateau_threshold;   /* relative improvement that counts, [0, 1) */
    double ema;                 /* decay of the parameters' moving average, [0, 1); 0 = off */
    int64_t ema_start;          /* steps before the average starts (it copies the parameters) */
    /* [eval] */
    int64_t eval_every; /* validation every N steps (0 = only at the end) */
    /* [log] */
    int64_t log_every; /* training log line every N steps, >= 1 */
    /* [sample] */
    int64_t sample_every;      /* print a sample at every validation step divisible by it; 0 = off */
    int64_t sample_length;     /* characters */
    double sample_temperature; /* 0 = greedy */
    /* [checkpoint] */
    int64_t ckpt_every; /* checkpoint every N steps (0 = only at the end and on a signal) */
    int ckpt_keep;      /* newest checkpoints kept, >= 1 */
    /* [run] */
    char run_dir[CHARLM_PATH_MAX];
} config_t;

/* Fills *cfg with the defaults (documented in the README and configs/). */
void config_default(config_t *cfg);

/* Applies one key ("section.key") with its textual value. `origin` names where it came from
 * ("configs/demo.ini:12" or "--set") for the error message. Returns CHARLM_OK, or CHARLM_EINPUT
 * with err_set() naming origin, key and value for an unknown section/key or an unparsable or
 * out-of-range value. */
int config_set(config_t *cfg, const char *key, const char *value, const char *origin);

/* Parses an INI file and applies every key in it. Returns CHARLM_OK or CHARLM_EINPUT (missing or
 * unreadable file, syntax error with line number, or a config_set() error). */
int config_load_file(config_t *cfg, const char *path);

/* Cross-key checks once everything is applied (e.g. data.corpus set, steps/epochs/time_limit not
 * all zero). Returns CHARLM_OK or CHARLM_EINPUT naming the keys. */
int config_validate(const config_t *cfg);

/* Writes the canonical INI text of every key to f, in the order of config.c's key table
 * (sections data, model, train, optim, eval, log, sample, checkpoint, run). */
void config_write(const config_t *cfg, FILE *f);

/* Each module's parameters as cfg sets them (strings borrowed from cfg). */
corpus_params_t config_corpus_params(const config_t *cfg);
model_params_t config_model_params(const config_t *cfg);
/* The dropouts of [model] and train.seed; the caller sets step and first_stream. */
model_dropout_t config_model_dropout(const config_t *cfg);
optim_params_t config_optim_params(const config_t *cfg);
sched_params_t config_sched_params(const config_t *cfg);
plateau_params_t config_plateau_params(const config_t *cfg);
log_params_t config_log_params(const config_t *cfg);

#endif
