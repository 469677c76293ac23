/* prepare: `charlm prepare CORPUS... -o OUT.h5` encodes a text corpus once into a prepared
 * corpus (format in tokens.h), which `charlm train` (data.corpus / data.val = OUT.h5) reads by
 * hyperslab: each rank reads only its shard, and no rank scans the text. */
#ifndef CHARLM_PREPARE_H
#define CHARLM_PREPARE_H

#include "charlm/dist.h"

/* Encodes the concatenation of inputs[0..n) (each a file, directory or glob resolved as
 * data.corpus is, taken in the order given) into the prepared corpus `out`: a first streaming
 * pass (textsrc_open) validates the UTF-8, collects the vocabulary and hashes the bytes, a second
 * (textsrc_read) writes the ids. Memory is fixed (a few MiB), whatever the corpus size. Writes
 * out.tmp and commits it over out (fileio_commit). flags: PREPARE_VERBOSE prints a one-line
 * summary on stderr; PREPARE_FORCE lets out replace an existing file that is not a prepared
 * corpus. Errors (CHARLM_EINPUT, err_set, naming the file): those of textsrc_open, an input that
 * is already a prepared corpus, an output that is one of the inputs (never replaced, whatever
 * the flags), an existing output that is not a prepared corpus (without PREPARE_FORCE), an
 * output that cannot be written, a file that changed between the passes. */
enum { PREPARE_VERBOSE = 1, PREPARE_FORCE = 2 };
int prepare_run(const char *out, const char *const *inputs, int n, int flags);

/* `charlm prepare` with the arguments after the command name. Rank 0 does the work; every rank
 * returns the status they agreed on (CHARLM_EUSAGE for a bad command line). */
int prepare_main(int argc, char **argv, const dist_t *d);

#endif
