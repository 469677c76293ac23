#include "charlm/rng.h"

#include <math.h>

double rng_normal(uint64_t key, uint64_t i) {
    uint64_t a = rng_mix(key + (2 * i) * 0xd1b54a32d192ed03ull);
    uint64_t b = rng_mix(key + (2 * i + 1) * 0xd1b54a32d192ed03ull);
    /* 53-bit uniforms; u1 in (0, 1] so the log is finite */
    double u1 = ((double)(a >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(b >> 11) * (1.0 / 9007199254740992.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
