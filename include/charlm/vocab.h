/* vocab: the vocabulary — the sorted set of Unicode code points of the corpus; id = rank in
 * that order. Built from a code-point bitmap (so ranks can OR-reduce what they saw). */
#ifndef CHARLM_VOCAB_H
#define CHARLM_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#define VOCAB_CP_LIMIT 0x110000u                 /* code points are < this */
#define VOCAB_BITMAP_WORDS (VOCAB_CP_LIMIT / 64) /* uint64_t words of a code-point bitmap */

typedef struct {
    int size;       /* V */
    uint32_t *cps;  /* (V) code points in increasing order; owned */
} vocab_t;

/* Marks code point cp in bitmap (VOCAB_BITMAP_WORDS words). */
static inline void vocab_bitmap_set(uint64_t *bitmap, uint32_t cp) {
    bitmap[cp >> 6] |= (uint64_t)1 << (cp & 63);
}

/* Builds the vocabulary of every code point set in bitmap. */
void vocab_from_bitmap(vocab_t *v, const uint64_t *bitmap);

/* Builds the vocabulary from an explicit sorted list (e.g. read from a checkpoint).
 * Returns CHARLM_OK, or CHARLM_EINPUT when cps is not strictly increasing or out of range. */
int vocab_from_list(vocab_t *v, const uint32_t *cps, int n);

/* The id of code point cp, or -1 when it is not in the vocabulary. */
int vocab_id(const vocab_t *v, uint32_t cp);

/* Encodes UTF-8 text (len bytes) into ids (room for len ids); *n gets their count. A character
 * outside the vocabulary is dropped when skip_unknown is set; otherwise it is an error
 * (CHARLM_EINPUT, err_set) naming `what`, the character, its code point and byte offset, as is
 * invalid UTF-8. */
int vocab_encode(int32_t *ids, int64_t *n, const vocab_t *v, const char *text, size_t len,
                 int skip_unknown, const char *what);

/* Writes cp as UTF-8 for a message into out (NUL-terminated; '?' for control characters). */
void vocab_char_name(char out[5], uint32_t cp);

void vocab_free(vocab_t *v);

#endif
