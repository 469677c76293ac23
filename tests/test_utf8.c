/* test_utf8: strict decoding and encoding — round trips at every encoding-length boundary, the
 * RFC 3629 rejections (overlongs, surrogates, > U+10FFFF, stray and missing continuation bytes),
 * truncation (-1) versus invalidity (0), and exhaustive agreement of decode with encode. */
#include "charlm/utf8.h"

#include "check.h"

#include <stdint.h>
#include <string.h>

/* Decodes the n bytes of s, expecting the return value want (and, when want > 0, code point cp). */
static void expect_decode(const char *s, size_t n, int want, uint32_t cp) {
    uint32_t got = 0xFFFFFFFFu;
    int k = utf8_decode(&got, (const unsigned char *)s, n);
    EXPECT_MSG(k == want, "decode of %zu bytes starting 0x%02X: returned %d, want %d", n,
               n ? (unsigned char)s[0] : 0u, k, want);
    if (want > 0 && k == want) EXPECT_MSG(got == cp, "decoded U+%04X, want U+%04X", got, cp);
}

static void boundaries(void) {
    static const struct {
        uint32_t cp;
        int len;
    } cases[] = {{0, 1},      {0x7F, 1},    {0x80, 2},     {0x7FF, 2},
                 {0x800, 3},  {0xD7FF, 3},  {0xE000, 3},   {0xFFFF, 3},
                 {0x10000, 4}, {0x10FFFF, 4}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[8] = {0};
        int len = utf8_encode(buf, cases[i].cp);
        EXPECT_MSG(len == cases[i].len, "encode U+%04X gave %d bytes, want %d", cases[i].cp, len,
                   cases[i].len);
        if (len != cases[i].len) continue;
        expect_decode(buf, (size_t)len, len, cases[i].cp);
        /* trailing bytes beyond the sequence are not consumed */
        buf[len] = 'x';
        expect_decode(buf, (size_t)len + 1, len, cases[i].cp);
        /* every proper prefix of a multi-byte sequence is "truncated", not "invalid" */
        for (int p = 1; p < len; p++) expect_decode(buf, (size_t)p, -1, 0);
    }
    EXPECT(utf8_encode((char[4]){0}, 0xD800) == 0);
    EXPECT(utf8_encode((char[4]){0}, 0xDFFF) == 0);
    EXPECT(utf8_encode((char[4]){0}, 0x110000) == 0);
    EXPECT(utf8_encode((char[4]){0}, 0xFFFFFFFFu) == 0);
}

static void rejections(void) {
    expect_decode("\xC0\x80", 2, 0, 0);         /* overlong U+0000 */
    expect_decode("\xC1\xBF", 2, 0, 0);         /* overlong U+007F */
    expect_decode("\xE0\x80\x80", 3, 0, 0);     /* overlong U+0000 */
    expect_decode("\xE0\x9F\xBF", 3, 0, 0);     /* overlong U+07FF */
    expect_decode("\xF0\x80\x80\x80", 4, 0, 0); /* overlong U+0000 */
    expect_decode("\xF0\x8F\xBF\xBF", 4, 0, 0); /* overlong U+FFFF */
    expect_decode("\xED\xA0\x80", 3, 0, 0);     /* U+D800 */
    expect_decode("\xED\xBF\xBF", 3, 0, 0);     /* U+DFFF */
    expect_decode("\xF4\x90\x80\x80", 4, 0, 0); /* U+110000 */
    expect_decode("\xF5\x80\x80\x80", 4, 0, 0);
    expect_decode("\xFF", 1, 0, 0);
    expect_decode("\x80", 1, 0, 0); /* stray continuation bytes */
    expect_decode("\xBF", 1, 0, 0);
    expect_decode("\xC3\x41", 2, 0, 0); /* continuation missing, not truncated */
    expect_decode("\xE2\x28\xA1", 3, 0, 0);
    expect_decode("\xE2\x82\x28", 3, 0, 0);
    expect_decode("\xF0\x9F\x98\x41", 4, 0, 0);
    /* a prefix that is already invalid is invalid, not truncated */
    expect_decode("\xE0\x80", 2, 0, 0);
    expect_decode("\xED\xA0", 2, 0, 0);
    expect_decode("\xF4\x90", 2, 0, 0);
    /* truncated: valid so far */
    expect_decode("", 0, -1, 0);
    expect_decode("\xC3", 1, -1, 0);
    expect_decode("\xE2\x82", 2, -1, 0);
    expect_decode("\xF0\x9F\x98", 3, -1, 0);
    expect_decode("\xE2\x82\xAC", 3, 3, 0x20AC);
    expect_decode("\xF0\x9F\x98\x80", 4, 4, 0x1F600);
}

/* Every scalar value round-trips; every 1-, 2- and 3-byte input that decodes is the canonical
 * encoding of what it decodes to, and the counts of valid sequences are those of RFC 3629. */
static void exhaustive(void) {
    int bad = 0;
    for (uint32_t cp = 0; cp < 0x110000 && bad < 5; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        char buf[4];
        uint32_t back;
        int len = utf8_encode(buf, cp);
        if (len < 1 || utf8_decode(&back, (const unsigned char *)buf, (size_t)len) != len ||
            back != cp) {
            EXPECT_MSG(0, "U+%04X does not round-trip", cp);
            bad++;
        }
    }
    long valid[4] = {0};
    for (uint32_t x = 0; x < (1u << 24) && bad < 5; x++) {
        unsigned char s[3] = {(unsigned char)(x >> 16), (unsigned char)(x >> 8), (unsigned char)x};
        uint32_t cp;
        int k = utf8_decode(&cp, s, 3);
        if (k <= 0) continue;
        char enc[4];
        if (utf8_encode(enc, cp) != k || memcmp(enc, s, (size_t)k) != 0) {
            EXPECT_MSG(0, "%02X %02X %02X decodes to non-canonical U+%04X", s[0], s[1], s[2], cp);
            bad++;
        }
        /* count each sequence once: by its own bytes, ignoring what follows */
        if ((k == 1 && (x & 0xFFFF) == 0) || (k == 2 && (x & 0xFF) == 0) || k == 3) valid[k]++;
    }
    EXPECT_MSG(valid[1] == 0x80, "%ld valid 1-byte sequences", valid[1]);
    EXPECT_MSG(valid[2] == 0x800 - 0x80, "%ld valid 2-byte sequences", valid[2]);
    EXPECT_MSG(valid[3] == 0x10000 - 0x800 - 0x800, "%ld valid 3-byte sequences", valid[3]);
}

int main(void) {
    boundaries();
    rejections();
    exhaustive();
    return check_report("test_utf8");
}
