#include "charlm/vocab.h"

#include <stdlib.h>

#include "charlm/err.h"
#include "charlm/utf8.h"

void vocab_from_bitmap(vocab_t *v, const uint64_t *bitmap) {
    int n = 0;
    for (uint32_t w = 0; w < VOCAB_BITMAP_WORDS; w++) n += __builtin_popcountll(bitmap[w]);
    v->size = n;
    v->cps = xcalloc((size_t)n, sizeof *v->cps);
    int k = 0;
    for (uint32_t w = 0; w < VOCAB_BITMAP_WORDS; w++)
        for (uint64_t bits = bitmap[w]; bits; bits &= bits - 1)
            v->cps[k++] = w * 64 + (uint32_t)__builtin_ctzll(bits);
}

int vocab_from_list(vocab_t *v, const uint32_t *cps, int n) {
    v->size = 0;
    v->cps = NULL;
    if (n < 1) return err_set(CHARLM_EINPUT, "vocabulary is empty");
    for (int i = 0; i < n; i++) {
        if (cps[i] >= VOCAB_CP_LIMIT || (cps[i] >= 0xD800 && cps[i] <= 0xDFFF))
            return err_set(CHARLM_EINPUT,
                           "vocabulary entry %d is not a Unicode scalar value (0x%X)", i,
                           (unsigned)cps[i]);
        if (i > 0 && cps[i] <= cps[i - 1])
            return err_set(CHARLM_EINPUT,
                           "vocabulary is not strictly increasing at entry %d "
                           "(U+%04X after U+%04X)",
                           i, (unsigned)cps[i], (unsigned)cps[i - 1]);
    }
    v->size = n;
    v->cps = xcalloc((size_t)n, sizeof *v->cps);
    for (int i = 0; i < n; i++) v->cps[i] = cps[i];
    return CHARLM_OK;
}

int vocab_id(const vocab_t *v, uint32_t cp) {
    int lo = 0, hi = v->size;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (v->cps[mid] < cp) lo = mid + 1;
        else hi = mid;
    }
    return lo < v->size && v->cps[lo] == cp ? lo : -1;
}

int vocab_encode(int32_t *ids, int64_t *n, const vocab_t *v, const char *text, size_t len,
                 int skip_unknown, const char *what) {
    const unsigned char *s = (const unsigned char *)text;
    *n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int k = utf8_decode(&cp, s + i, len - i);
        if (k <= 0) return err_set(CHARLM_EINPUT, "%s: invalid UTF-8 at byte %zu", what, i);
        int id = vocab_id(v, cp);
        if (id < 0 && !skip_unknown) {
            char ch[5];
            vocab_char_name(ch, cp);
            return err_set(CHARLM_EINPUT,
                           "%s: character '%s' (U+%04X) at byte %zu is not in the model's "
                           "vocabulary (--unknown skip drops such characters)",
                           what, ch, (unsigned)cp, i);
        }
        if (id >= 0) ids[(*n)++] = id;
        i += (size_t)k;
    }
    return CHARLM_OK;
}

void vocab_char_name(char out[5], uint32_t cp) {
    int n = cp < 0x20 || cp == 0x7f ? 0 : utf8_encode(out, cp);
    if (!n) out[n++] = '?';
    out[n] = '\0';
}

void vocab_free(vocab_t *v) {
    free(v->cps);
    v->cps = NULL;
    v->size = 0;
}
