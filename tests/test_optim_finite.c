/* test_optim_finite: what training's divergence check stands on.
 *
 * - optim_step says whether what it wrote is finite: an infinite learning rate, or an infinity
 *   planted in a gradient, a parameter or a moment, makes it return 0, at any place in the
 *   buffer (the vectorised body and the scalar tail alike), for every optimizer kind (SGD with
 *   and without momentum); a sane update returns 1.
 * - digest: a single flipped bit anywhere in a buffer changes the digest; feeding the same
 *   bytes in pieces of any size gives the digest of the whole; the hex text reads back. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "charlm/digest.h"
#include "charlm/err.h"
#include "charlm/optim.h"
#include "charlm/rng.h"

#include "check.h"

#define N 203 /* not a multiple of any vector width: the loops' scalar tails run too */

static void fill(float *x, int n, uint64_t key, float scale) {
    for (int i = 0; i < n; i++) x[i] = scale * (2.0f * rng_uniform(key, (uint64_t)i) - 1.0f);
}

/* An update with one infinity planted at `at` (-1: none) in the gradient (where 0), the
 * parameters (1) or the first moment (2), after a first sane update: optim_step's verdict. */
static int finite_with_inf(optim_kind_t kind, double momentum, int where, int at, double lr) {
    optim_params_t op = {.kind = kind, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8,
                         .momentum = momentum, .weight_decay = 0.01};
    optim_t o;
    optim_init(&o, &op, N);
    float p[N], g[N];
    fill(p, N, 7, 1.0f);
    fill(g, N, 8, 1.0f);
    EXPECT(optim_step(p, &o, g, 0.001) == 1); /* moments no longer zero */
    if (where == 0 && at >= 0) g[at] = INFINITY;
    if (where == 1 && at >= 0) p[at] = -INFINITY;
    if (where == 2 && at >= 0 && o.nmoments) o.m[at] = INFINITY;
    int ok = optim_step(p, &o, g, lr);
    optim_free(&o);
    return ok;
}

static void finiteness(void) {
    const struct {
        optim_kind_t kind;
        double momentum;
    } kinds[] = {{OPTIM_ADAM, 0}, {OPTIM_ADAMW, 0}, {OPTIM_SGD, 0}, {OPTIM_SGD, 0.9},
                 {OPTIM_RMSPROP, 0}, {OPTIM_ADAGRAD, 0}};
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        optim_kind_t kind = kinds[k].kind;
        double mu = kinds[k].momentum;
        const char *name = optim_kind_name(kind);
        EXPECT_MSG(finite_with_inf(kind, mu, 0, -1, 0.01) == 1, "%s: a sane update", name);
        EXPECT_MSG(finite_with_inf(kind, mu, 0, -1, 1e39) == 0, "%s: lr 1e39 (inf in float)",
                   name);
        const int places[] = {0, 17, N - 1};
        for (int w = 0; w < 3; w++)
            for (int i = 0; i < 3; i++) {
                if (w == 2 && kind == OPTIM_SGD && mu == 0) continue; /* no moment */
                EXPECT_MSG(finite_with_inf(kind, mu, w, places[i], 0.01) == 0,
                           "%s (momentum %g): an infinity in %s[%d] not reported", name, mu,
                           w == 0 ? "grads" : w == 1 ? "params" : "moment", places[i]);
            }
    }
}

static void digest_checks(void) {
    unsigned char buf[301];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)rng_mix(i);
    const uint64_t whole = digest_bytes(buf, sizeof buf);
    int missed = 0;
    for (size_t bit = 0; bit < 8 * sizeof buf; bit++) {
        buf[bit / 8] ^= (unsigned char)(1u << bit % 8);
        missed += digest_bytes(buf, sizeof buf) == whole;
        buf[bit / 8] ^= (unsigned char)(1u << bit % 8);
    }
    EXPECT_MSG(missed == 0, "%d single-bit flips left the digest unchanged", missed);
    EXPECT(digest_bytes(buf, sizeof buf - 1) != whole); /* the length counts */
    for (size_t piece = 1; piece < 70; piece += 3) {
        digest_t d;
        digest_init(&d);
        for (size_t at = 0; at < sizeof buf; at += piece)
            digest_update(&d, buf + at, at + piece < sizeof buf ? piece : sizeof buf - at);
        EXPECT_MSG(digest_final(&d) == whole, "pieces of %zu bytes", piece);
    }
    char hex[17];
    uint64_t back = 0;
    digest_hex(hex, whole);
    EXPECT(strlen(hex) == 16 && digest_parse_hex(&back, hex) == 0 && back == whole);
    EXPECT(digest_parse_hex(&back, "0123456789abcdeg") == -1);
    EXPECT(digest_parse_hex(&back, "0123456789abcde") == -1);
}

int main(void) {
    finiteness();
    digest_checks();
    return check_report("test_optim_finite");
}
