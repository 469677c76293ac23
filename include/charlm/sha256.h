/* sha256: the SHA-256 digest (FIPS 180-4), incremental, written as lowercase hex. Prepared
 * corpora record the digest of their source bytes with it. */
#ifndef CHARLM_SHA256_H
#define CHARLM_SHA256_H

#include <stddef.h>
#include <stdint.h>

/* A digest in progress; fill it with sha256_init, feed it with sha256_update. */
typedef struct {
    uint32_t h[8];
    uint64_t len;            /* bytes hashed so far */
    unsigned char block[64]; /* a partial block */
    size_t fill;             /* bytes in block */
} sha256_t;

void sha256_init(sha256_t *s);

/* Hashes the next n bytes of data. */
void sha256_update(sha256_t *s, const void *data, size_t n);

/* Pads and finishes the digest into hex (64 lowercase hex digits and a NUL); s is spent (call
 * sha256_init to reuse it). */
void sha256_final(sha256_t *s, char hex[65]);

/* The digest of data (n bytes) in one call. */
void sha256_hex(char hex[65], const void *data, size_t n);

#endif
