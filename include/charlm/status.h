/* status: `charlm status RUN_DIR [--verify] [--json]` — what the user of a batch job asks of a
 * training that runs or has ended: step and epoch, the last training and validation losses, the
 * best validation and its step, chars/s, elapsed time and ETA, the checkpoints (and whether each
 * verifies), whether a run holds the directory now and how the last one ended (README
 * "Watching a run").
 *
 * It only reads, and never waits: the complete lines of metrics.jsonl, config.ini, the
 * checkpoints' attributes (every dataset too with --verify) and the lock file, which it never
 * takes (fileio_lock_holder). So it runs beside the writer, on the node or on a login node of a
 * shared file system, without stopping or slowing it. */
#ifndef CHARLM_STATUS_H
#define CHARLM_STATUS_H

#include "charlm/dist.h"

/* charlm status with the arguments after its name: rank 0 prints the report to stdout (text, or
 * one JSON object with --json). Returns, agreed by every rank, CHARLM_OK; CHARLM_EUSAGE for a
 * bad command line; CHARLM_EINPUT when RUN_DIR is not a run directory or a file of it cannot be
 * read, or with --verify when a checkpoint does not verify (after the report). */
int status_main(int argc, char **argv, const dist_t *d);

#endif
