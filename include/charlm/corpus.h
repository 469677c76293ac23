/* corpus: the corpus of a run — data.corpus (and data.val) as a text (textsrc: a file, a
 * directory or a glob, scanned once) or a prepared corpus (tokens), the vocabulary, the
 * train/validation split and the global stream layout of DESIGN.md §1, and this rank's shard.
 *
 * Prepared corpora. data.corpus or data.val may name one prepared corpus file (`charlm prepare`,
 * format in tokens.h): a name ending in ".h5" or a file starting with the HDF5 signature. Its
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
 * at vstart_s = s*((Nv-1)/S) + min(s, (Nv-1)%S). Every prediction of the split is scored once.
 *
 * Cost. Each rank scans a text once (its vocabulary and length; O(corpus)) and then decodes only
 * the bytes of its shard and of its validation part, plus at most one textsrc block for each
 * (a prepared corpus: only those hyperslabs). */
#ifndef CHARLM_CORPUS_H
#define CHARLM_CORPUS_H

#include <stdint.h>

#include "charlm/textsrc.h"
#include "charlm/tokens.h"
#include "charlm/vocab.h"

/* One source of characters, read by range: a text or a prepared corpus. */
typedef struct {
    textsrc_t text;         /* a text: text.nfiles > 0 */
    tokens_reader_t tokens; /* or a prepared corpus: tokens.path set */
    int64_t total;          /* characters */
} corpus_src_t;

/* Opens spec as a prepared corpus when it names one (see above), else as a text (textsrc_open:
 * resolved, scanned, UTF-8 validated), ORing its code points into bitmap (VOCAB_BITMAP_WORDS
 * words). `role` names the config key for messages ("data.corpus" / "data.val"); with
 * note_skips, skipped non-text files get one note on stderr. Errors (CHARLM_EINPUT, with
 * err_set; src is then empty): those of textsrc_open and tokens_open. */
int corpus_src_open(corpus_src_t *src, uint64_t *bitmap, const char *spec, const char *role,
                    int note_skips);

/* Sets the vocabulary whose ids corpus_src_read returns (v may go after the call). */
void corpus_src_set_vocab(corpus_src_t *src, const vocab_t *v);

/* Reads the ids of characters [first, first+n) of src (textsrc_read / tokens_read): reads that
 * follow one another cost what they return. Returns CHARLM_OK or CHARLM_EINPUT (I/O or HDF5
 * error, a file changed since the scan, a token value outside the file's /vocab, a character
 * outside the vocabulary, named with its code point). */
int corpus_src_read(int32_t *ids /* (n) */, corpus_src_t *src, int64_t first, int64_t n);

/* Frees src; a zeroed corpus_src_t is empty too (closing either is safe). */
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
