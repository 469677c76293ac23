#include "charlm/digest.h"

#include <string.h>

#include "charlm/rng.h"

/* Odd constants, so that multiplying by them is a bijection of 64-bit words. */
#define K_WORD 0x9e3779b97f4a7c15ull
#define K_LANE 0xd1b54a32d192ed03ull

static uint64_t rotl(uint64_t x, int r) { return x << r | x >> (64 - r); }

static uint64_t load_le(const unsigned char *p) {
    uint64_t w;
    memcpy(&w, p, sizeof w);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    return w;
}

/* Each step is a bijection of the lane for a fixed word and of the word for a fixed lane, so
 * two streams that differ in one word leave different lanes, whatever follows. */
static void fold(uint64_t lane[4], const unsigned char *block) {
    for (int i = 0; i < 4; i++)
        lane[i] = rotl(lane[i] ^ load_le(block + 8 * i) * K_WORD, 29) * K_LANE;
}

void digest_init(digest_t *d) {
    memset(d, 0, sizeof *d);
    for (int i = 0; i < 4; i++) d->lane[i] = rng_mix((uint64_t)i + 1);
}

void digest_update(digest_t *d, const void *data, size_t n) {
    if (n == 0) return; /* data may then be NULL (an empty history): memcpy must not see it */
    const unsigned char *p = data;
    size_t have = (size_t)(d->total % DIGEST_BLOCK);
    d->total += n;
    if (have) {
        size_t take = DIGEST_BLOCK - have < n ? DIGEST_BLOCK - have : n;
        memcpy(d->pending + have, p, take);
        p += take, n -= take, have += take;
        if (have < DIGEST_BLOCK) return;
        fold(d->lane, d->pending);
    }
    for (; n >= DIGEST_BLOCK; p += DIGEST_BLOCK, n -= DIGEST_BLOCK) fold(d->lane, p);
    memcpy(d->pending, p, n);
}

void digest_u64(digest_t *d, uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> 8 * i);
    digest_update(d, b, sizeof b);
}

uint64_t digest_final(const digest_t *d) {
    uint64_t lane[4];
    memcpy(lane, d->lane, sizeof lane);
    size_t have = (size_t)(d->total % DIGEST_BLOCK);
    if (have) { /* the last partial block, zero-padded: the length below tells it apart */
        unsigned char block[DIGEST_BLOCK] = {0};
        memcpy(block, d->pending, have);
        fold(lane, block);
    }
    /* rng_mix is a bijection: a difference in the length or in any one lane stays */
    uint64_t h = rng_mix(d->total);
    for (int i = 0; i < 4; i++) h = rng_mix(h ^ lane[i]);
    return h;
}

uint64_t digest_bytes(const void *data, size_t n) {
    digest_t d;
    digest_init(&d);
    digest_update(&d, data, n);
    return digest_final(&d);
}

void digest_hex(char out[17], uint64_t v) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) out[i] = hex[v >> (60 - 4 * i) & 15];
    out[16] = '\0';
}

int digest_parse_hex(uint64_t *v, const char *s) {
    uint64_t x = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int k = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (k < 0) return -1;
        x = x << 4 | (uint64_t)k;
    }
    if (s[16]) return -1;
    *v = x;
    return 0;
}
