/* prepare: `charlm prepare CORPUS... -o OUT.h5` encodes a text corpus once into a prepared
 * corpus, which `charlm train` (data.corpus / data.val = OUT.h5) reads by hyperslab: each rank
 * reads only its shard, and no rank scans the text.
 *
 * Prepared corpus (HDF5), format_version 1:
 *   /         attrs: format = "charlm-corpus", format_version = 1 (int64), charlm_version,
 *             n_tokens (int64), vocab_size (int64), sha256 (hex digest of the concatenated
 *             source bytes), source_files (variable-length UTF-8 strings, concatenation order),
 *             source_sizes (int64, bytes), source_chars (int64, code points), source_sha256 (hex)
 *   /tokens   (n_tokens) uint8 when V <= 256, uint16 when V <= 65536, else uint32: the
 *             vocabulary id of every character; chunks of 1 Mi ids, shuffle + deflate + fletcher32
 *   /vocab    (V) uint32: the code points in id order (strictly increasing, as vocab_t)
 * A reader needs format, format_version, /tokens and /vocab; the rest describes the sources. */
#ifndef CHARLM_PREPARE_H
#define CHARLM_PREPARE_H

#include <stddef.h>

#include "charlm/dist.h"

#define PREPARE_FORMAT "charlm-corpus"
#define PREPARE_FORMAT_VERSION 1

/* Encodes the concatenation of inputs[0..n) (each a file, directory or glob resolved as
 * data.corpus is, taken in the order given) into the prepared corpus `out`: a first streaming
 * pass validates the UTF-8 and collects the vocabulary, a second writes the ids while hashing the
 * bytes. Memory is fixed (a few MiB), whatever the corpus size. Writes out.tmp and renames it
 * over out. With verbose, prints a one-line summary on stderr. Errors (CHARLM_EINPUT, err_set,
 * naming the file): those of corpus_src_open, an input that is already a prepared corpus, an
 * output that cannot be written, a file that changed between the passes. */
int prepare_run(const char *out, const char *const *inputs, int n, int verbose);

/* `charlm prepare` with the arguments after the command name. Rank 0 does the work; every rank
 * returns the status they agreed on (CHARLM_EUSAGE for a bad command line). */
int prepare_main(int argc, char **argv, const dist_t *d);

/* The SHA-256 digest of data (n bytes) as 64 lowercase hex digits and a NUL. */
void prepare_sha256_hex(char out[65], const void *data, size_t n);

#endif
