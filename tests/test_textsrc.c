/* test_textsrc: the text reader's cursor and block index. A text of a few MiB with multi-byte
 * characters across every block boundary: the blocks start at characters and count them;
 * reads of ranges that start and end inside such a character's block, forwards, backwards and
 * across files (an empty one among them), give the ids of the text; a read costs its bytes plus
 * at most a block, and a sequential pass reads every byte once. Errors after a seek name the
 * file and the absolute byte offset (invalid UTF-8, a character outside the vocabulary); a file
 * that changed between the scan and a read is refused; digests and the order of several specs. */
#include "charlm/err.h"
#include "charlm/sha256.h"
#include "charlm/textsrc.h"
#include "charlm/utf8.h"
#include "charlm/vocab.h"

#include "check.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int has(const char *needle) { return strstr(err_message(), needle) != NULL; }

/* A deterministic text of n code points, 1 to 4 bytes each, into cps; its UTF-8 (malloc'd) is
 * returned, *nbytes its length. */
static char *gen_text(uint32_t *cps, int64_t n, uint32_t seed, size_t *nbytes) {
    static const uint32_t alphabet[] = {'a', 'b', ' ', '\n', 0xE9, 0x3A9, 0xAC00, 0xD55C,
                                        0x1F600, 'z', 'q', '.'};
    char *s = malloc((size_t)n * 4 + 1), *o = s;
    uint32_t x = seed;
    for (int64_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        cps[i] = alphabet[(x >> 16) % (sizeof alphabet / sizeof alphabet[0])];
        o += utf8_encode(o, cps[i]);
    }
    *nbytes = (size_t)(o - s);
    return s;
}

/* Opens specs (relative to tmpdir) as a textsrc, expecting success, with its own vocabulary. */
static int open_ok(textsrc_t *ts, vocab_t *v, const char *const *rel, int n, int flags) {
    char paths[4][PATH_LEN];
    const char *specs[4];
    for (int i = 0; i < n; i++) specs[i] = tmp_path(paths[i], rel[i]);
    uint64_t *bitmap = calloc(VOCAB_BITMAP_WORDS, sizeof *bitmap);
    int rc = textsrc_open(ts, bitmap, specs, n, "data.corpus", flags);
    EXPECT_MSG(rc == CHARLM_OK, "textsrc_open(%s): %s", rel[0], err_message());
    vocab_from_bitmap(v, bitmap);
    free(bitmap);
    err_clear();
    if (rc == CHARLM_OK) textsrc_set_vocab(ts, v);
    return rc == CHARLM_OK;
}

/* Reads [first, first+n) and compares with the ids of cps; returns the bytes the read cost. */
static int64_t expect_range(textsrc_t *ts, const vocab_t *v, const uint32_t *cps, int64_t first,
                            int64_t n) {
    int32_t *ids = calloc((size_t)n + 1, sizeof *ids);
    int64_t before = ts->nread;
    int rc = textsrc_read(ids, ts, first, n);
    EXPECT_MSG(rc == CHARLM_OK, "read [%lld, +%lld): %s", (long long)first, (long long)n,
               err_message());
    int64_t bad = 0;
    for (int64_t i = 0; i < n && rc == CHARLM_OK; i++) bad += ids[i] != vocab_id(v, cps[first + i]);
    EXPECT_MSG(bad == 0, "read [%lld, +%lld): %lld ids differ", (long long)first, (long long)n,
               (long long)bad);
    err_clear();
    free(ids);
    return ts->nread - before;
}

/* The index of the character that holds byte b of the text (cps, n characters). */
static int64_t char_at_byte(const uint32_t *cps, int64_t n, int64_t b) {
    int64_t at = 0;
    char tmp[4];
    for (int64_t i = 0; i < n; i++) {
        at += utf8_encode(tmp, cps[i]);
        if (at > b) return i;
    }
    return n;
}

static void test_blocks(void) {
    enum { N = 1500000 }; /* about 3.6 MiB: four blocks */
    uint32_t *cps = malloc(N * sizeof *cps);
    size_t nbytes;
    char *text = gen_text(cps, N, 5, &nbytes);
    write_bytes("big.txt", text, nbytes);
    textsrc_t ts;
    vocab_t v;
    if (!open_ok(&ts, &v, (const char *[]){"big.txt"}, 1, 0)) return;
    const int64_t B = (int64_t)TEXTSRC_BLOCK;
    EXPECT(ts.nfiles == 1 && ts.total == N && ts.nbytes[0] == (int64_t)nbytes);
    EXPECT_MSG(ts.nblocks == (nbytes + TEXTSRC_BLOCK - 1) / TEXTSRC_BLOCK, "%zu blocks",
               ts.nblocks);
    /* each block starts at a character, knows which one, and follows the one before by a
     * buffer of bytes less the incomplete sequence carried over (0 to 3 bytes) */
    int straddles = 0;
    for (size_t k = 0; k < ts.nblocks; k++) {
        const textsrc_block_t *b = &ts.blocks[k];
        int lead = ((unsigned char)text[b->byte] & 0xC0) != 0x80;
        int64_t step = k ? b->byte - ts.blocks[k - 1].byte : B;
        EXPECT_MSG(b->file == 0 && lead && step > B - 4 && step <= B && (k || b->byte == 0),
                   "block %zu at byte %lld", k, (long long)b->byte);
        EXPECT_MSG(b->at == char_at_byte(cps, N, b->byte), "block %zu: character %lld", k,
                   (long long)b->at);
        straddles += step != B;
    }
    EXPECT_MSG(straddles >= 1, "no character straddles a buffer's end (change the seed)");

    /* ranges starting and ending at and around the first character of each block: a seek costs
     * a buffer, two when the range runs past its end */
    for (size_t k = 1; k < ts.nblocks; k++) {
        int64_t c = ts.blocks[k].at;
        for (int64_t d = -2; d <= 2; d++) {
            int64_t cost = expect_range(&ts, &v, cps, c + d, 3);
            EXPECT_MSG(cost <= 2 * B, "a 3-character read cost %lld bytes", (long long)cost);
            expect_range(&ts, &v, cps, c - 5, 5 + d + 1); /* ends at c + d */
        }
    }
    /* a read at the end costs one block, not the file */
    textsrc_close(&ts);
    vocab_free(&v);
    if (!open_ok(&ts, &v, (const char *[]){"big.txt"}, 1, 0)) return;
    int64_t cost = expect_range(&ts, &v, cps, N - 10, 10);
    EXPECT_MSG(cost <= B, "the last 10 characters cost %lld bytes", (long long)cost);
    /* backwards, then forwards from there */
    expect_range(&ts, &v, cps, 1000, 20000);
    expect_range(&ts, &v, cps, 21000, 5);
    expect_range(&ts, &v, cps, 700000, 790000);
    expect_range(&ts, &v, cps, 3, 1);
    textsrc_close(&ts);
    vocab_free(&v);

    /* a sequential pass in odd-sized pieces reads every byte once */
    if (!open_ok(&ts, &v, (const char *[]){"big.txt"}, 1, 0)) return;
    for (int64_t first = 0; first < N; first += 77777)
        expect_range(&ts, &v, cps, first, first + 77777 <= N ? 77777 : N - first);
    EXPECT_MSG(ts.nread == (int64_t)nbytes, "a pass read %lld of %zu bytes", (long long)ts.nread,
               nbytes);
    EXPECT(!ts.open); /* at the end of the source the cursor lets its file go */
    textsrc_close(&ts);
    vocab_free(&v);
    free(text);
    free(cps);
}

/* Several files (an empty one among them) read as one text, and several specs in their order. */
static void test_files(void) {
    enum { N = 600000, CUT1 = 250000, CUT2 = 400000 };
    uint32_t *cps = malloc(N * sizeof *cps);
    size_t nbytes;
    char *text = gen_text(cps, N, 11, &nbytes);
    char *cut1 = text, *cut2 = text;
    char tmp[4];
    for (int64_t i = 0; i < CUT1; i++) cut1 += utf8_encode(tmp, cps[i]);
    cut2 = cut1;
    for (int64_t i = CUT1; i < CUT2; i++) cut2 += utf8_encode(tmp, cps[i]);
    make_dir("parts");
    write_bytes("parts/1.txt", text, (size_t)(cut1 - text));
    write_bytes("parts/2-empty.txt", "", 0);
    write_bytes("parts/3.txt", cut1, (size_t)(cut2 - cut1));
    write_bytes("parts/4.txt", cut2, nbytes - (size_t)(cut2 - text));
    textsrc_t ts;
    vocab_t v;
    if (open_ok(&ts, &v, (const char *[]){"parts"}, 1, TEXTSRC_DIGEST)) {
        EXPECT(ts.nfiles == 4 && ts.total == N && ts.nchars[1] == 0);
        EXPECT(ts.start[0] == 0 && ts.start[1] == CUT1 && ts.start[2] == CUT1 &&
               ts.start[3] == CUT2 && ts.start[4] == N);
        static const int64_t firsts[] = {CUT1 - 3, CUT1, CUT2 - 1, 0, CUT2, N - 1, CUT1 - 1};
        for (size_t i = 0; i < sizeof firsts / sizeof *firsts; i++)
            expect_range(&ts, &v, cps, firsts[i], N - firsts[i] < 7 ? N - firsts[i] : 7);
        expect_range(&ts, &v, cps, 5, N - 5);
        char want[65];
        sha256_hex(want, text, nbytes);
        EXPECT_MSG(!strcmp(ts.sha256_all, want), "digest %s, want %s", ts.sha256_all, want);
        sha256_hex(want, cut1, (size_t)(cut2 - cut1));
        EXPECT(!strcmp(ts.sha256[2], want));
        sha256_hex(want, "", 0);
        EXPECT(!strcmp(ts.sha256[1], want));
        textsrc_close(&ts);
        vocab_free(&v);
    }
    /* specs are concatenated in the order given, each sorted within */
    if (open_ok(&ts, &v, (const char *[]){"parts/4.txt", "parts/[13].txt"}, 2, 0)) {
        EXPECT(ts.nfiles == 3 && ts.total == N);
        EXPECT(ts.nfiles == 3 && strstr(ts.paths[0], "4.txt") && strstr(ts.paths[1], "1.txt") &&
               strstr(ts.paths[2], "3.txt"));
        EXPECT(ts.sha256 == NULL && ts.sha256_all[0] == '\0');
        uint32_t *order = malloc(N * sizeof *order);
        memcpy(order, cps + CUT2, (N - CUT2) * sizeof *order);
        memcpy(order + N - CUT2, cps, CUT2 * sizeof *order);
        expect_range(&ts, &v, order, 0, N);
        expect_range(&ts, &v, order, N - CUT2 - 2, 4);
        free(order);
        textsrc_close(&ts);
        vocab_free(&v);
    }
    free(text);
    free(cps);
}

/* Rewrites byte `at` of tmpdir/rel, keeping its size and modification time, so that the change
 * goes unnoticed by the check on opening and only decoding can find it. */
static void poke_unnoticed(const char *rel, int64_t at, unsigned char byte) {
    char p[PATH_LEN];
    struct stat st;
    tmp_path(p, rel);
    EXPECT(stat(p, &st) == 0);
    FILE *f = fopen(p, "r+b");
    EXPECT(f && fseek(f, (long)at, SEEK_SET) == 0 && fputc(byte, f) == byte && fclose(f) == 0);
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    EXPECT(utimensat(AT_FDCWD, p, times, 0) == 0);
}

static void test_errors(void) {
    const int64_t B = (int64_t)TEXTSRC_BLOCK;
    size_t n = (size_t)(3 * B);
    char *s = malloc(n + 1); /* n + 1: one case writes a byte more */
    memset(s, 'a', n + 1);
    memcpy(s + 2 * B + 100, "\xC3\xA9", 2); /* one 'é' in the third block */
    write_bytes("errors.txt", s, n);
    textsrc_t ts;
    vocab_t v;
    int32_t ids[8];
    char want[96];
    /* invalid UTF-8 found after a seek is named with its offset in the file */
    if (open_ok(&ts, &v, (const char *[]){"errors.txt"}, 1, 0)) {
        poke_unnoticed("errors.txt", 2 * B + 5000, 0xFF);
        /* after the 'é', character i is at byte i + 1 */
        EXPECT(textsrc_read(ids, &ts, 2 * B + 4989, 8) == CHARLM_OK);
        EXPECT(textsrc_read(ids, &ts, 2 * B + 4999, 1) == CHARLM_EINPUT);
        snprintf(want, sizeof want, "errors.txt: invalid UTF-8 at byte %lld",
                 (long long)(2 * B + 5000));
        EXPECT_MSG(has(want), "%s", err_message());
        EXPECT_MSG(ts.nread <= 2 * B, "%lld bytes read", (long long)ts.nread);
        err_clear();
        textsrc_close(&ts);
        vocab_free(&v);
        poke_unnoticed("errors.txt", 2 * B + 5000, 'a');
    }
    /* a character outside the vocabulary, after a seek, with its byte offset */
    if (open_ok(&ts, &v, (const char *[]){"errors.txt"}, 1, 0)) {
        vocab_t ascii;
        EXPECT(vocab_from_list(&ascii, (const uint32_t[]){'a'}, 1) == CHARLM_OK);
        textsrc_set_vocab(&ts, &ascii);
        EXPECT(textsrc_read(ids, &ts, 2 * B + 50, 8) == CHARLM_OK);
        EXPECT(textsrc_read(ids, &ts, 2 * B + 98, 4) == CHARLM_EINPUT);
        snprintf(want, sizeof want, "errors.txt: character U+00E9 at byte %lld",
                 (long long)(2 * B + 100));
        EXPECT_MSG(has(want) && has("not in the vocabulary"), "%s", err_message());
        err_clear();
        vocab_free(&ascii);
        textsrc_close(&ts);
        vocab_free(&v);
    }
    /* a file that changed between the scan and the read: grown, shrunk, or touched */
    for (int how = 0; how < 3; how++) {
        write_bytes("errors.txt", s, n);
        if (!open_ok(&ts, &v, (const char *[]){"errors.txt"}, 1, 0)) continue;
        char p[PATH_LEN];
        struct stat st;
        if (how == 0) write_bytes("errors.txt", s, n + 1);
        if (how == 1) write_bytes("errors.txt", s, n - 1);
        if (how == 2 && stat(tmp_path(p, "errors.txt"), &st) == 0) {
            struct timespec later[2] = {{.tv_nsec = UTIME_OMIT}, st.st_mtim};
            later[1].tv_sec += 10;
            EXPECT(utimensat(AT_FDCWD, p, later, 0) == 0);
        }
        EXPECT_MSG(textsrc_read(ids, &ts, B, 8) == CHARLM_EINPUT, "change %d unnoticed", how);
        EXPECT_MSG(has("errors.txt: file changed since it was scanned"), "%s", err_message());
        err_clear();
        textsrc_close(&ts);
        vocab_free(&v);
    }
    free(s);
}

int main(void) {
    tmpdir_make("textsrc");
    test_blocks();
    test_files();
    test_errors();
    return check_report("test_textsrc");
}
