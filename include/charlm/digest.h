/* digest: a fast 64-bit digest of byte streams, to detect accidental damage to what a file holds
 * (the contents of a checkpoint) and to fingerprint data (the corpus streams). Not
 * cryptographic. A change confined to one 8-byte word of the stream (every single-byte change,
 * so every flipped bit) always changes the digest; any other change goes unnoticed with a
 * probability of about 2^-64. The value does not depend on how the stream is split into
 * digest_update calls, and is the same on every host (the words are read little-endian). */
#ifndef CHARLM_DIGEST_H
#define CHARLM_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#define DIGEST_BLOCK 32 /* bytes folded in at a time: four 8-byte lanes */

typedef struct {
    uint64_t lane[4];
    uint64_t total;                      /* bytes fed so far */
    unsigned char pending[DIGEST_BLOCK]; /* total % DIGEST_BLOCK bytes not yet folded in */
} digest_t;

void digest_init(digest_t *d);
/* Feeds n bytes of data. */
void digest_update(digest_t *d, const void *data, size_t n);
/* Feeds v as 8 little-endian bytes. */
void digest_u64(digest_t *d, uint64_t v);
/* The digest of everything fed so far; d is unchanged (more may be fed). */
uint64_t digest_final(const digest_t *d);

/* The digest of n bytes of data. */
uint64_t digest_bytes(const void *data, size_t n);

/* v as 16 lower-case hex digits (out: 17 bytes); back from exactly 16 hex digits: 0 or -1. */
void digest_hex(char out[17], uint64_t v);
int digest_parse_hex(uint64_t *v, const char *s);

#endif
