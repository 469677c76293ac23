/* rng: the counter-based generator of src/README.md §1. A random number is a pure function of its
 * key — (seed, purpose, step, global stream, t, unit) — so the rank count, the batch split and a
 * resume never change it, and no generator state is saved in checkpoints. */
#ifndef CHARLM_RNG_H
#define CHARLM_RNG_H

#include <stdint.h>

/* What a random number is for: part of the key, so that streams of numbers never collide. */
enum {
    RNG_INIT = 1,
    RNG_DROPOUT = 2,
    RNG_SAMPLE = 3,
    RNG_LOCKED = 4,      /* locked (variational) dropout: one mask per stream and window */
    RNG_WEIGHT_DROP = 5, /* DropConnect on W_hh */
    RNG_EMBED_DROP = 6   /* dropout of whole embedding rows */
};

/* A strong 64-bit mixer (the splitmix64 finaliser). */
static inline uint64_t rng_mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Key of a family of numbers: fold the components one by one so that (a, b) != (b, a). */
static inline uint64_t rng_key(uint64_t seed, uint64_t purpose, uint64_t a, uint64_t b,
                               uint64_t c) {
    uint64_t k = rng_mix(seed ^ (purpose << 56));
    k = rng_mix(k ^ a);
    k = rng_mix(k ^ b);
    return rng_mix(k ^ c);
}

/* Uniform in [0, 1) with 24 random bits (exact in float), for element `i` of family `key`. */
static inline float rng_uniform(uint64_t key, uint64_t i) {
    return (float)(rng_mix(key + i * 0xd1b54a32d192ed03ull) >> 40) * (1.0f / 16777216.0f);
}

/* Standard normal for element i of family key (Box-Muller on two counter draws). */
double rng_normal(uint64_t key, uint64_t i);

#endif
