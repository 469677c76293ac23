/* train: the training loop of `charlm train` (DESIGN.md §1) — corpus shard, model, optimizer,
 * windows of truncated BPTT with carried state, gradient all-reduce, validation, logging. */
#ifndef CHARLM_TRAIN_H
#define CHARLM_TRAIN_H

#include "charlm/config.h"
#include "charlm/dist.h"

/* Collective: every rank calls it with the same cfg. Returns the exit status, the same on every
 * rank (CHARLM_OK, CHARLM_EINPUT after printing the error once, CHARLM_EDIVERGED). */
int train_run(const config_t *cfg, const dist_t *d);

#endif
