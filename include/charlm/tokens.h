/* tokens: the prepared-corpus format — its layout, its writer (`charlm prepare`) and its reader
 * (data.corpus / data.val naming a prepared corpus), on h5io.
 *
 * Prepared corpus (HDF5), format_version 1:
 *   /         attrs: format = "charlm-corpus", format_version = 1 (int64), charlm_version,
 *             n_tokens (int64), vocab_size (int64), sha256 (hex digest of the concatenated
 *             source bytes), source_files (variable-length UTF-8 strings, concatenation order),
 *             source_sizes (int64, bytes), source_chars (int64, code points), source_sha256 (hex)
 *   /tokens   (n_tokens) uint8 when V <= 256, uint16 when V <= 65536, else uint32: the
 *             vocabulary id of every character; chunks of 1 Mi ids, shuffle (V > 256) + deflate +
 *             fletcher32
 *   /vocab    (V) uint32: the code points in id order (strictly increasing, as vocab_t)
 * A reader needs format, format_version, /tokens and /vocab; the rest describes the sources. */
#ifndef CHARLM_TOKENS_H
#define CHARLM_TOKENS_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "charlm/vocab.h"

#define TOKENS_FORMAT "charlm-corpus"
#define TOKENS_FORMAT_VERSION 1
#define TOKENS_CHUNK ((size_t)1 << 20) /* ids per /tokens chunk */

/* Whether path names a regular file to be read as a prepared corpus: its name ends in ".h5" or
 * it starts with the HDF5 signature. */
int tokens_is_prepared(const char *path);

/* ---- reader: the file, /tokens and the id map stay open from tokens_open to tokens_close ---- */

typedef struct {
    char *path;         /* owned; NULL when closed (a zeroed reader is closed) */
    hid_t file, tokens; /* valid while path is set */
    int64_t n;          /* ids in /tokens */
    vocab_t vocab;      /* /vocab: token value k is code point vocab.cps[k] */
    int32_t *map;       /* (vocab.size) token value -> id of the run's vocabulary, -1: none;
                           NULL until tokens_set_vocab */
} tokens_reader_t;

/* Opens the prepared corpus at path and checks its format; `role` names the config key for
 * messages. Errors (CHARLM_EINPUT, with err_set; r is then closed): "ROLE: PATH: not a charlm
 * corpus (WHY)" (not HDF5, no or another format attribute), "ROLE: PATH: bad charlm corpus
 * (WHAT)" (missing or malformed /tokens, /vocab, format_version), "ROLE: PATH is empty". */
int tokens_open(tokens_reader_t *r, const char *path, const char *role);

/* Maps the file's token values to the ids of v (the run's vocabulary, which may be larger than
 * the file's when another source adds characters); v may go after the call. */
void tokens_set_vocab(tokens_reader_t *r, const vocab_t *v);

/* Reads the hyperslab [first, first+n) of /tokens as ids of the vocabulary of tokens_set_vocab.
 * Returns CHARLM_OK or CHARLM_EINPUT: an HDF5 read or checksum error, a token value not below
 * the file's vocab_size, a character outside the run's vocabulary (named with its code point). */
int tokens_read(int32_t *ids /* (n) */, tokens_reader_t *r, int64_t first, int64_t n);

/* Closes what is open and frees everything; r is then zeroed (closing twice is safe). */
void tokens_close(tokens_reader_t *r);

/* ---- writer ---- */

typedef struct {
    hid_t file, tokens;
    char *path;     /* owned */
    int64_t n;      /* ids /tokens holds */
    int vocab_size; /* V */
    int64_t written;
    uint32_t *buf;  /* (TOKENS_CHUNK) ids not yet written */
    size_t nbuf;
    int room;       /* a second descriptor of the file, for fileio_room; -1 when closed */
} tokens_writer_t;

/* What the attributes record of the sources, in concatenation order (all borrowed, as a
 * textsrc_t opened with TEXTSRC_DIGEST holds them). */
typedef struct {
    int nfiles;
    char *const *paths;     /* (nfiles) */
    const int64_t *bytes;   /* (nfiles) */
    const int64_t *chars;   /* (nfiles) */
    char (*sha256)[65];     /* (nfiles) hex digests */
    const char *sha256_all; /* hex digest of all their bytes in order */
} tokens_sources_t;

/* Creates (truncates) path for a prepared corpus; the caller commits it (fileio_commit) after
 * tokens_finish. Errors (CHARLM_EINPUT): "cannot create PATH: CAUSE". The writer asks the file
 * system for the room of every piece before HDF5 writes it (fileio_room), so that a full disk, a
 * quota or a file-size limit fails the call that would pass it ("cannot write PATH: No space
 * left on device") and never a write inside HDF5. */
int tokens_create(tokens_writer_t *w, const char *path);

/* Writes /vocab (v) and creates /tokens for n >= 1 ids of v. */
int tokens_begin(tokens_writer_t *w, const vocab_t *v, int64_t n);

/* Appends ids[0..k) to /tokens (buffered: written a chunk at a time). */
int tokens_append(tokens_writer_t *w, const int32_t *ids /* (k) */, size_t k);

/* With src: writes what is buffered (all n ids must have come) and the attributes, and closes
 * the file, flushing it. With src NULL: closes what is open, for a failed run. Returns CHARLM_OK
 * or CHARLM_EINPUT ("cannot write /tokens of PATH: CAUSE", "cannot write PATH: CAUSE", ...). */
int tokens_finish(tokens_writer_t *w, const tokens_sources_t *src);

#endif
