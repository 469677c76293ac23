/* train: the training loop of `charlm train` (src/README.md §1) — corpus shard, model, optimizer,
 * windows of truncated BPTT with carried state, gradient all-reduce, validation, logging,
 * checkpoints, resume and stopping on signals. */
#ifndef CHARLM_TRAIN_H
#define CHARLM_TRAIN_H

#include "charlm/config.h"
#include "charlm/dist.h"

/* Collective: every rank calls it with the same arguments. resume is NULL (fresh start; refused
 * when run.dir already holds checkpoints), "auto" (the newest valid checkpoint of run.dir, or a
 * fresh start when there is none) or a checkpoint path. Returns the exit status, the same on every
 * rank: CHARLM_OK, CHARLM_EINPUT (its message printed once; also when rank 0 could not write
 * metrics.jsonl, after a checkpoint when one could be written), CHARLM_ESTOPPED (a signal; a
 * checkpoint was written), CHARLM_EINTERRUPTED (a signal during start-up; nothing was written)
 * or CHARLM_EDIVERGED (a checkpoint of the last good state was written). */
int train_run(const config_t *cfg, const char *resume, const dist_t *d);

#endif
