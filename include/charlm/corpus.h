/* corpus: the text corpus — resolving data.corpus (a file, a directory or a glob; several files
 * are concatenated in sorted path order, non-text files skipped with one note), strict UTF-8
 * validation with file and byte offset in errors, the vocabulary, the train/validation split and
 * the global stream layout of DESIGN.md §1, and this rank's shard of it.
 *
 * Prepared corpora. data.corpus or data.val may name one prepared corpus file (`charlm prepare`,
 * format in prepare.h): a name ending in ".h5" or a file starting with the HDF5 signature. Its
 * /vocab and the length of /tokens stand for the scan of a text, and reading a range reads only
 * that hyperslab of /tokens. The vocabulary is the union over data.corpus and data.val whatever
 * their kind, so a prepared corpus may be paired with a text or another prepared corpus: when
 * the union is larger than a file's /vocab, its token values are mapped to the union's ids as
 * they are read. With data.corpus prepared and no data.val, the vocabulary is its /vocab as is.
 *
 * Stream layout. The train split has N characters (ids 0..N-1). With S = P*B global streams,
 * L = (N-1)/S; stream s reads ids [s*L, s*L + L] (L inputs and their L next-character targets,
 * so neighbouring streams share one id). Windows per epoch W = L / T; window w of stream s has
 * inputs ids[s*L + w*T + t] and targets ids[s*L + w*T + t + 1], t < T. Rank r owns streams
 * r*B .. r*B+B-1 and so holds only ids [r*B*L, (r+1)*B*L] of the train split.
 *
 * Validation. The validation split has Nv characters and so Nv-1 predictions; they are dealt
 * to the same S streams, stream s getting Lv_s = (Nv-1)/S + (s < (Nv-1)%S) predictions starting
 * at vstart_s = s*((Nv-1)/S) + min(s, (Nv-1)%S). Every prediction of the split is scored once. */
#ifndef CHARLM_CORPUS_H
#define CHARLM_CORPUS_H

#include <stdint.h>

#include "charlm/vocab.h"

typedef struct {
    int nfiles;
    char **paths;     /* (nfiles) owned, sorted */
    int64_t *nbytes;  /* (nfiles) */
    int64_t *nchars;  /* (nfiles) code points per file */
    int64_t total;    /* sum of nchars */
    vocab_t h5_vocab; /* a prepared corpus (paths[0]): its /vocab, token value k being code point
                         h5_vocab.cps[k]; size 0 for text */
} corpus_src_t;

/* Resolves spec (file | directory | glob pattern) to its text files, scans each once in bounded
 * memory, validates UTF-8 and ORs every code point into bitmap (VOCAB_BITMAP_WORDS words).
 * `role` names the config key for messages ("data.corpus" / "data.val"). When note_skips is set,
 * one line "charlm: note: skipped K non-text files ..." goes to stderr for skipped files.
 * A file is "not text" when its first 8 KiB contain a NUL byte. Symlinks to a file already
 * listed are taken once. A spec naming a prepared corpus (see above) is opened instead: one
 * file, h5_vocab set and ORed into bitmap, total = its token count, nbytes[0] = its file size.
 * Errors (CHARLM_EINPUT, with err_set): nothing matches, a file cannot be read, an explicitly
 * named file is not text, no text file remains, invalid UTF-8 ("FILE: invalid UTF-8 at byte
 * OFFSET"), an empty corpus; for a prepared corpus "ROLE: FILE: not a charlm corpus (WHY)" or
 * "ROLE: FILE: bad charlm corpus (WHAT)". */
int corpus_src_open(corpus_src_t *src, uint64_t *bitmap, const char *spec, const char *role,
                    int note_skips);

/* Decodes characters [first, first+n) of the concatenated source into vocabulary ids, reading
 * only the files that hold them (of a prepared corpus, only that hyperslab of /tokens). Returns
 * CHARLM_OK or CHARLM_EINPUT (I/O or HDF5 error, a token value outside the file's /vocab, or a
 * character outside the vocabulary, named with its code point). */
int corpus_src_read(int32_t *ids /* (n) */, const corpus_src_t *src, const vocab_t *vocab,
                    int64_t first, int64_t n);

void corpus_src_close(corpus_src_t *src);

/* Token ids as a rank holds them: 1, 2 or 4 bytes each, the fewest that fit the vocabulary, so a
 * shard of a corpus with at most 256 distinct characters costs one byte per character. */
typedef struct {
    void *data;
    int width; /* bytes per id */
} corpus_ids_t;

static inline int32_t corpus_ids_get(const corpus_ids_t *v, int64_t i) {
    switch (v->width) {
    case 1: return ((const uint8_t *)v->data)[i];
    case 2: return ((const uint16_t *)v->data)[i];
    default: return ((const int32_t *)v->data)[i];
    }
}

typedef struct {
    vocab_t vocab;
    int S, B, T;            /* global streams, streams per rank, window length */
    int first_stream;       /* rank*B */
    /* train split */
    int64_t ntrain;         /* N */
    int64_t L;              /* characters per stream */
    int64_t windows;        /* W, windows per epoch */
    corpus_ids_t train;     /* (B*L + 1) this rank's ids: stream b starts at id b*L */
    /* validation split (nval == 0: no validation) */
    int64_t nval;           /* Nv characters */
    int64_t val_pred;       /* Nv - 1 predictions in total */
    int64_t *val_len;       /* (B) Lv_s of this rank's streams */
    int64_t val_maxlen;     /* max over all S streams of Lv_s (the same on every rank) */
    int64_t *val_off;       /* (B) where stream b's Lv_b + 1 ids start in val_ids */
    corpus_ids_t val_ids;   /* this rank's validation ids */
} corpus_t;

/* Id i (0 <= i <= L) of this rank's training stream b. */
static inline int32_t corpus_train_id(const corpus_t *c, int b, int64_t i) {
    return corpus_ids_get(&c->train, b * c->L + i);
}

/* Id i (0 <= i <= Lv_b) of this rank's validation stream b. */
static inline int32_t corpus_val_id(const corpus_t *c, int b, int64_t i) {
    return corpus_ids_get(&c->val_ids, c->val_off[b] + i);
}

/* What to load (section [data] and the stream layout of [train]); the strings are borrowed. */
typedef struct {
    const char *corpus;   /* data.corpus: file, directory, glob or prepared .h5 (required) */
    const char *val;      /* data.val: a separate validation text; "" = the tail of the corpus */
    double val_frac;      /* data.val_frac: the last fraction of the corpus for validation */
    int batch, seq;       /* train.batch B (streams per rank), train.seq T (window length) */
} corpus_params_t;

/* Loads the corpus of p for rank `rank` of P: resolves and scans data.corpus (and data.val),
 * builds the vocabulary from both, splits, lays out the streams and reads this rank's shard.
 * note_skips as in corpus_src_open (pass rank == 0). Errors (CHARLM_EINPUT, with err_set, the same
 * on every rank for the same input): those of corpus_src_open; a train split shorter than S*T+1
 * ("data.corpus PATH has N training characters; P ranks x train.batch B x train.seq T needs at
 * least S*T+1"); a validation split too short (fewer than S+1 characters when validation is on). */
int corpus_load(corpus_t *c, const corpus_params_t *p, int rank, int P, int note_skips);

void corpus_free(corpus_t *c);

#endif
