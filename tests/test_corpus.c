/* test_corpus: vocabulary of code points, resolving data.corpus (file, directory, glob; sorted
 * order, non-text files skipped, symlinks taken once), UTF-8 errors with file and byte offset
 * (also across the streaming buffer boundary), and corpus_load's split, stream layout and shards
 * checked against the definitions in corpus.h for two ranks loaded in one process. */
#include "charlm/config.h"
#include "charlm/corpus.h"
#include "charlm/err.h"
#include "charlm/utf8.h"
#include "charlm/vocab.h"

#include "check.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* corpus_load with the parameters a configuration gives. */
static int load_cfg(corpus_t *c, const config_t *cfg, int rank, int P, int note_skips) {
    corpus_params_t p = config_corpus_params(cfg);
    return corpus_load(c, &p, rank, P, note_skips);
}

static void make_symlink(const char *target, const char *rel) {
    char p[PATH_LEN];
    tmp_path(p, rel);
    if (symlink(target, p) != 0) {
        perror(p);
        exit(1);
    }
}

/* UTF-8 of n code points, in a malloc'd string. */
static char *encode_all(const uint32_t *cps, int64_t n) {
    char *s = calloc((size_t)(4 * n + 1), 1), *o = s;
    for (int64_t i = 0; i < n; i++) o += utf8_encode(o, cps[i]);
    return s;
}

static int has(const char *needle) { return strstr(err_message(), needle) != NULL; }

/* Opens spec, expecting success; the vocabulary is built from what it saw and set on src. */
static int open_ok(corpus_src_t *src, vocab_t *v, const char *spec) {
    uint64_t *bitmap = calloc(VOCAB_BITMAP_WORDS, sizeof *bitmap);
    int rc = corpus_src_open(src, bitmap, spec, "data.corpus", 0);
    EXPECT_MSG(rc == CHARLM_OK, "corpus_src_open(%s): %s", spec, err_message());
    vocab_from_bitmap(v, bitmap);
    if (rc == CHARLM_OK) corpus_src_set_vocab(src, v);
    free(bitmap);
    err_clear();
    return rc == CHARLM_OK;
}

/* Opens spec, expecting CHARLM_EINPUT with a message containing both needles. */
static void open_fails(const char *spec, const char *needle1, const char *needle2) {
    uint64_t *bitmap = calloc(VOCAB_BITMAP_WORDS, sizeof *bitmap);
    corpus_src_t src;
    int rc = corpus_src_open(&src, bitmap, spec, "data.corpus", 0);
    EXPECT_MSG(rc == CHARLM_EINPUT, "corpus_src_open(%s) returned %d", spec, rc);
    EXPECT_MSG(has(needle1) && has(needle2), "message \"%s\" lacks \"%s\" / \"%s\"", err_message(),
               needle1, needle2);
    EXPECT(src.text.nfiles == 0 && src.text.paths == NULL && src.total == 0);
    free(bitmap);
    err_clear();
}

/* The text of the whole source, decoded back through the vocabulary. */
static char *read_back(corpus_src_t *src, const vocab_t *v) {
    int32_t *ids = calloc((size_t)src->total, sizeof *ids);
    int rc = corpus_src_read(ids, src, 0, src->total);
    EXPECT_MSG(rc == CHARLM_OK, "corpus_src_read: %s", err_message());
    uint32_t *cps = calloc((size_t)src->total, sizeof *cps);
    for (int64_t i = 0; i < src->total; i++) cps[i] = ids[i] >= 0 ? v->cps[ids[i]] : '?';
    char *s = encode_all(cps, src->total);
    free(cps);
    free(ids);
    return s;
}

static void test_vocab(void) {
    char p[PATH_LEN];
    corpus_src_t src;
    vocab_t v;
    write_text("hello.txt", "hello");
    tmp_path(p, "hello.txt");
    if (open_ok(&src, &v, p)) {
        EXPECT(src.text.nfiles == 1 && src.total == 5 && src.text.nbytes[0] == 5);
        EXPECT(v.size == 4 && v.cps[0] == 'e' && v.cps[1] == 'h' && v.cps[2] == 'l' &&
               v.cps[3] == 'o');
        EXPECT(vocab_id(&v, 'o') == 3 && vocab_id(&v, 'e') == 0 && vocab_id(&v, 'z') == -1 &&
               vocab_id(&v, 'a') == -1);
        int32_t ids[5];
        EXPECT(corpus_src_read(ids, &src, 0, 5) == CHARLM_OK);
        EXPECT(ids[0] == 1 && ids[1] == 0 && ids[2] == 2 && ids[3] == 2 && ids[4] == 3);
        corpus_src_close(&src);
        vocab_free(&v);
    }

    write_text("hangul.txt", "가나다 é");
    tmp_path(p, "hangul.txt");
    if (open_ok(&src, &v, p)) {
        EXPECT(src.total == 5 && src.text.nbytes[0] == 12);
        static const uint32_t want[] = {0x20, 0xE9, 0xAC00, 0xB098, 0xB2E4};
        EXPECT(v.size == 5 && memcmp(v.cps, want, sizeof want) == 0);
        int32_t ids[5];
        EXPECT(corpus_src_read(ids, &src, 0, 5) == CHARLM_OK);
        EXPECT(ids[0] == 2 && ids[1] == 3 && ids[2] == 4 && ids[3] == 0 && ids[4] == 1);
        EXPECT(corpus_src_read(ids, &src, 2, 3) == CHARLM_OK);
        EXPECT(ids[0] == 4 && ids[1] == 0 && ids[2] == 1);
        corpus_src_close(&src);
        vocab_free(&v);

        /* a vocabulary without 'é' (e.g. a checkpoint's): reading names the character */
        vocab_t small;
        EXPECT(vocab_from_list(&small, (const uint32_t[]){0x20, 0xAC00, 0xB098, 0xB2E4}, 4) ==
               CHARLM_OK);
        EXPECT(open_ok(&src, &v, p));
        corpus_src_set_vocab(&src, &small);
        EXPECT(corpus_src_read(ids, &src, 0, 5) == CHARLM_EINPUT);
        EXPECT_MSG(has("U+00E9") && has("hangul.txt") && has("byte 10"), "%s", err_message());
        err_clear();
        corpus_src_close(&src);
        vocab_free(&small);
        vocab_free(&v);
    }

    vocab_t bad;
    EXPECT(vocab_from_list(&bad, (const uint32_t[]){'a', 'c', 'b'}, 3) == CHARLM_EINPUT);
    EXPECT(bad.size == 0 && bad.cps == NULL);
    EXPECT(vocab_from_list(&bad, (const uint32_t[]){'a', 'a'}, 2) == CHARLM_EINPUT);
    EXPECT(vocab_from_list(&bad, (const uint32_t[]){'a', 0xD800}, 2) == CHARLM_EINPUT);
    EXPECT(vocab_from_list(&bad, (const uint32_t[]){'a', 0x110000}, 2) == CHARLM_EINPUT);
    err_clear();
}

static void test_resolve(void) {
    char p[PATH_LEN];
    corpus_src_t src;
    vocab_t v;
    make_dir("d");
    write_text("d/b.txt", "world");
    write_text("d/a.txt", "hello ");
    write_bytes("d/c.bin", "xx\0yy", 5);
    write_text("d/.hidden", "QQQ");
    make_symlink("a.txt", "d/z-link");  /* sorts after its target */
    make_symlink("b.txt", "d/a0-link"); /* sorts before its target: the first path is kept */
    make_symlink("nowhere", "d/dangling");
    make_dir("d/sub");
    write_text("d/sub/inner.txt", "SUB");
    tmp_path(p, "d");
    if (open_ok(&src, &v, p)) {
        EXPECT_MSG(src.text.nfiles == 2, "%d files", src.text.nfiles);
        EXPECT(src.total == 11);
        EXPECT(src.text.nfiles == 2 && strstr(src.text.paths[0], "/d/a.txt") &&
               strstr(src.text.paths[1], "a0-link"));
        char *text = read_back(&src, &v);
        EXPECT_MSG(strcmp(text, "hello world") == 0, "read \"%s\"", text);
        free(text);
        EXPECT(vocab_id(&v, 'x') < 0 && vocab_id(&v, 'Q') < 0 && vocab_id(&v, 'S') < 0);
        corpus_src_close(&src);
        vocab_free(&v);
    }

    tmp_path(p, "d/*.txt");
    if (open_ok(&src, &v, p)) {
        EXPECT(src.text.nfiles == 2 && src.total == 11);
        char *text = read_back(&src, &v);
        EXPECT_MSG(strcmp(text, "hello world") == 0, "read \"%s\"", text);
        free(text);
        corpus_src_close(&src);
        vocab_free(&v);
    }

    tmp_path(p, "d/*.none");
    open_fails(p, "data.corpus", "no file matches");
    tmp_path(p, "d/c.bin");
    open_fails(p, "c.bin", "not a text file");
    make_dir("bin");
    write_bytes("bin/x.dat", "\0\1\2", 3);
    tmp_path(p, "bin");
    open_fails(p, "no text files", "1 non-text file");
    make_dir("nothing");
    tmp_path(p, "nothing");
    open_fails(p, "data.corpus", "no files");
    tmp_path(p, "missing.txt");
    open_fails(p, "data.corpus: no such file or directory", "missing.txt");
    write_text("empty.txt", "");
    tmp_path(p, "empty.txt");
    open_fails(p, "empty.txt", "empty");
}

static void test_utf8_errors(void) {
    char p[PATH_LEN];
    write_bytes("bad5.txt", "abcde\xC0\x80xyz", 10);
    tmp_path(p, "bad5.txt");
    open_fails(p, "bad5.txt: invalid UTF-8", "byte 5");
    write_bytes("trunc.txt", "abc\xE2\x82", 5);
    tmp_path(p, "trunc.txt");
    open_fails(p, "trunc.txt", "byte 3");
    write_bytes("surrogate.txt", "ab\xED\xA0\x80", 5);
    tmp_path(p, "surrogate.txt");
    open_fails(p, "surrogate.txt", "byte 2");

    /* sequences straddling the 1 MiB and 2 MiB marks (the reader's buffer boundaries) */
    size_t n = ((size_t)2 << 20) + 100, mib = (size_t)1 << 20;
    char *big = malloc(n);
    memset(big, 'a', n);
    memcpy(big + mib - 1, "\xC3\xA9", 2);
    memcpy(big + 2 * mib - 2, "\xF0\x9F\x98\x80", 4);
    write_bytes("big.txt", big, n);
    tmp_path(p, "big.txt");
    corpus_src_t src;
    vocab_t v;
    if (open_ok(&src, &v, p)) {
        EXPECT_MSG(src.total == (int64_t)n - 1 - 3, "%lld chars", (long long)src.total);
        EXPECT(v.size == 3);
        int32_t ids[4];
        int64_t e = (int64_t)mib - 2; /* 'a', 'é', 'a', 'a' */
        EXPECT(corpus_src_read(ids, &src, e, 4) == CHARLM_OK);
        EXPECT(ids[0] == 0 && ids[1] == 1 && ids[2] == 0 && ids[3] == 0);
        int64_t g = (int64_t)(2 * mib - 2) - 1; /* the emoji's index: one 'é' before it */
        EXPECT(corpus_src_read(ids, &src, g - 1, 3) == CHARLM_OK);
        EXPECT(ids[0] == 0 && ids[1] == 2 && ids[2] == 0);
        corpus_src_close(&src);
        vocab_free(&v);
    }
    big[mib + 50] = (char)0xFF;
    write_bytes("bigbad.txt", big, n);
    tmp_path(p, "bigbad.txt");
    char want[64];
    snprintf(want, sizeof want, "byte %zu", mib + 50);
    open_fails(p, "bigbad.txt", want);
    memset(big + 2 * mib - 2, 'a', 4);
    big[mib + 50] = 'a';
    big[n - 2] = (char)0xF0; /* a 4-byte sequence cut off by the end of the file */
    big[n - 1] = (char)0x9F;
    write_bytes("bigtrunc.txt", big, n);
    tmp_path(p, "bigtrunc.txt");
    snprintf(want, sizeof want, "byte %zu", n - 2);
    open_fails(p, "bigtrunc.txt", want);
    free(big);
}

/* A deterministic mixed-script text of n code points. */
static void gen_text(uint32_t *cps, int64_t n, uint32_t seed) {
    static const uint32_t alphabet[] = {'a', 'b', 'c', ' ', '\n', ',', 0xE9, 0xAC00, 0x1F600, 'Z'};
    uint32_t x = seed;
    for (int64_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        cps[i] = alphabet[(x >> 16) % (sizeof alphabet / sizeof alphabet[0])];
    }
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* ids of cps under the vocabulary of the union of a and b (computed without vocab.c). */
static void expected_ids(int32_t *ids, const uint32_t *cps, int64_t n, const uint32_t *all,
                         int64_t nall, int *V) {
    uint32_t *sorted = malloc((size_t)nall * sizeof *sorted);
    memcpy(sorted, all, (size_t)nall * sizeof *sorted);
    qsort(sorted, (size_t)nall, sizeof *sorted, cmp_u32);
    int64_t u = 0;
    for (int64_t i = 0; i < nall; i++)
        if (u == 0 || sorted[i] != sorted[u - 1]) sorted[u++] = sorted[i];
    *V = (int)u;
    for (int64_t i = 0; i < n; i++) {
        uint32_t *hit = bsearch(&cps[i], sorted, (size_t)u, sizeof *sorted, cmp_u32);
        ids[i] = hit ? (int32_t)(hit - sorted) : -1;
    }
    free(sorted);
}

static config_t base_config(const char *corpus_rel) {
    config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    tmp_path(cfg.corpus, corpus_rel);
    cfg.val_frac = 0.1;
    cfg.batch = 3;
    cfg.seq = 7;
    return cfg;
}

/* Checks both ranks' shards of a P=2 load against the whole id sequence `all` (train split
 * first, then validation). */
static void check_shards(corpus_t c[2], const int32_t *all, int64_t ntrain, int64_t nval, int V) {
    int64_t S = 6, B = 3, T = 7, L = (ntrain - 1) / S, pred = nval - 1;
    int32_t *inputs = calloc((size_t)nval, sizeof *inputs);
    int32_t *targets = calloc((size_t)nval, sizeof *targets);
    int64_t k = 0;
    for (int r = 0; r < 2; r++) {
        corpus_t *cr = &c[r];
        EXPECT(cr->S == S && cr->B == B && cr->T == T && cr->first_stream == r * B);
        EXPECT(cr->vocab.size == V);
        EXPECT_MSG(cr->ntrain == ntrain && cr->nval == nval, "ntrain %lld nval %lld",
                   (long long)cr->ntrain, (long long)cr->nval);
        EXPECT(cr->L == L && cr->windows == L / T);
        for (int64_t b = 0; b < B; b++) {
            int64_t s = r * B + b, bad = 0;
            for (int64_t j = 0; j <= L; j++)
                bad += corpus_train_id(cr, (int)b, j) != all[s * L + j];
            EXPECT_MSG(bad == 0, "rank %d stream %lld: %lld train ids differ", r, (long long)s,
                       (long long)bad);
        }
        if (nval == 0) {
            EXPECT(cr->val_ids.data == NULL && cr->val_pred == 0);
            continue;
        }
        EXPECT(cr->val_pred == pred && cr->val_maxlen == pred / S + (pred % S != 0));
        for (int64_t b = 0; b < B; b++) {
            int64_t s = r * B + b;
            int64_t lv = pred / S + (s < pred % S);
            int64_t start = s * (pred / S) + (s < pred % S ? s : pred % S), bad = 0;
            EXPECT(cr->val_len[b] == lv);
            for (int64_t j = 0; j <= lv && cr->val_len[b] == lv; j++)
                bad += corpus_val_id(cr, (int)b, j) != all[ntrain + start + j];
            EXPECT_MSG(bad == 0, "rank %d val stream %lld: %lld ids differ", r, (long long)s,
                       (long long)bad);
            for (int64_t j = 0; j < cr->val_len[b] && k < nval; j++, k++) {
                inputs[k] = corpus_val_id(cr, (int)b, j);
                targets[k] = corpus_val_id(cr, (int)b, j + 1);
            }
        }
    }
    /* concatenated over streams and ranks, the predictions are the split's, each once */
    if (nval == 0) pred = 0;
    EXPECT_MSG(k == pred, "%lld predictions, want %lld", (long long)k, (long long)pred);
    int64_t bad = 0;
    for (int64_t j = 0; j < pred && j < k; j++)
        bad += inputs[j] != all[ntrain + j] || targets[j] != all[ntrain + j + 1];
    EXPECT_MSG(bad == 0, "%lld validation predictions differ", (long long)bad);
    free(inputs);
    free(targets);
}

static void test_load(void) {
    /* 3000 characters in two files of a directory (the split falls inside the second) */
    enum { N = 3000, SPLIT = 1234 };
    uint32_t *cps = malloc(N * sizeof *cps);
    gen_text(cps, N, 7);
    make_dir("load");
    char *s1 = encode_all(cps, SPLIT), *s2 = encode_all(cps + SPLIT, N - SPLIT);
    write_text("load/part1.txt", s1);
    write_text("load/part2.txt", s2);
    free(s1);
    free(s2);
    int32_t *all = malloc(N * sizeof *all);
    int V;
    expected_ids(all, cps, N, cps, N, &V);

    config_t cfg = base_config("load");
    corpus_t c[2];
    for (int r = 0; r < 2; r++) {
        int rc = load_cfg(&c[r], &cfg, r, 2, 0);
        EXPECT_MSG(rc == CHARLM_OK, "corpus_load rank %d: %s", r, err_message());
    }
    /* floor(3000 * 0.9) = 2700; L = 2699/6 = 449; 299 predictions: 5 streams of 50, one of 49 */
    check_shards(c, all, 2700, 300, V);
    EXPECT(c[0].L == 449 && c[0].windows == 64 && c[0].val_maxlen == 50 && c[1].val_len[2] == 49);

    /* one rank with all six streams holds exactly the two ranks' shards */
    config_t one = cfg;
    one.batch = 6;
    corpus_t c1;
    EXPECT(load_cfg(&c1, &one, 0, 1, 0) == CHARLM_OK);
    EXPECT(c1.S == 6 && c1.L == c[0].L);
    int64_t differ = 0;
    for (int64_t i = 0; i <= 3 * c1.L; i++)
        differ += (corpus_ids_get(&c1.train, i) != corpus_ids_get(&c[0].train, i)) +
                  (corpus_ids_get(&c1.train, 3 * c1.L + i) != corpus_ids_get(&c[1].train, i));
    EXPECT(differ == 0);
    corpus_free(&c1);
    for (int r = 0; r < 2; r++) corpus_free(&c[r]);

    /* val_frac = 0: everything trains, no validation */
    cfg.val_frac = 0;
    for (int r = 0; r < 2; r++) EXPECT(load_cfg(&c[r], &cfg, r, 2, 0) == CHARLM_OK);
    check_shards(c, all, N, 0, V);
    for (int r = 0; r < 2; r++) corpus_free(&c[r]);

    /* data.val: the whole corpus trains, val_frac is ignored, the vocabulary covers both */
    enum { NV = 200 };
    uint32_t *both = malloc((N + NV) * sizeof *both);
    memcpy(both, cps, N * sizeof *cps);
    gen_text(both + N, NV, 99);
    both[N + 17] = 0x3A9; /* 'Ω' appears only in the validation file */
    char *sv = encode_all(both + N, NV);
    write_text("val.txt", sv);
    free(sv);
    int32_t *allv = malloc((N + NV) * sizeof *allv);
    expected_ids(allv, both, N + NV, both, N + NV, &V);
    cfg.val_frac = 0.1;
    tmp_path(cfg.val, "val.txt");
    for (int r = 0; r < 2; r++) {
        int rc = load_cfg(&c[r], &cfg, r, 2, 0);
        EXPECT_MSG(rc == CHARLM_OK, "corpus_load with data.val rank %d: %s", r, err_message());
    }
    check_shards(c, allv, N, NV, V);
    EXPECT(vocab_id(&c[0].vocab, 0x3A9) >= 0);
    for (int r = 0; r < 2; r++) corpus_free(&c[r]);

    /* validation too short: S+1 = 7 characters needed */
    write_text("val2.txt", "ab");
    tmp_path(cfg.val, "val2.txt");
    EXPECT(load_cfg(&c[0], &cfg, 0, 2, 0) == CHARLM_EINPUT);
    EXPECT_MSG(has("data.val") && has("val2.txt") && has("needs at least 7"), "%s",
               err_message());
    err_clear();
    cfg.val[0] = '\0';
    cfg.val_frac = 0.001; /* 3 validation characters */
    EXPECT(load_cfg(&c[0], &cfg, 0, 2, 0) == CHARLM_EINPUT);
    EXPECT_MSG(has("data.val_frac") && has(" 3 validation") && has("needs at least 7"), "%s",
               err_message());
    err_clear();

    /* train split too short: 2 ranks x 2 x 8 needs 33 */
    write_text("short.txt", "hello world");
    cfg = base_config("short.txt");
    cfg.val_frac = 0;
    cfg.batch = 2;
    cfg.seq = 8;
    EXPECT(load_cfg(&c[1], &cfg, 1, 2, 0) == CHARLM_EINPUT);
    EXPECT_MSG(has("short.txt") && has("has 11 training characters") &&
                   has("2 ranks x train.batch 2 x train.seq 8 needs at least 33"),
               "%s", err_message());
    EXPECT(c[1].train.data == NULL && c[1].vocab.cps == NULL);
    err_clear();
    /* exactly S*T+1 = 11 characters is enough: one window per epoch */
    cfg.batch = 1;
    cfg.seq = 5;
    EXPECT(load_cfg(&c[1], &cfg, 1, 2, 0) == CHARLM_OK);
    /* rank 1 holds stream 1 = ids [5, 10] = " world"; ' ' is id 0 and 'd' id 1 */
    EXPECT(c[1].L == 5 && c[1].windows == 1 && corpus_train_id(&c[1], 0, 0) == 0 &&
           corpus_train_id(&c[1], 0, 5) == 1);
    corpus_free(&c[1]);
    /* a missing corpus is reported by corpus_load as by corpus_src_open */
    cfg = base_config("no-such-dir");
    EXPECT(load_cfg(&c[0], &cfg, 0, 2, 0) == CHARLM_EINPUT);
    EXPECT_MSG(has("data.corpus: no such file or directory") && has("no-such-dir"), "%s",
               err_message());
    err_clear();

    free(both);
    free(allv);
    free(all);
    free(cps);
}

/* A shard stores ids in 1, 2 or 4 bytes by vocabulary size; each width gives back every id. */
static void test_id_widths(void) {
    const int sizes[3] = {200, 3000, 70000}, widths[3] = {1, 2, 4};
    for (int w = 0; w < 3; w++) {
        int64_t n = 3 * (int64_t)sizes[w];
        uint32_t *cps = malloc(sizeof *cps * (size_t)n);
        for (int64_t i = 0; i < n; i++) /* every code point of the range at least once */
            cps[i] = 0x20000 + (uint32_t)((i * 7919) % sizes[w]); /* no surrogates in range */
        char *text = encode_all(cps, n), name[32];
        snprintf(name, sizeof name, "width%d.txt", widths[w]);
        write_text(name, text);
        config_t cfg;
        config_default(&cfg);
        tmp_path(cfg.corpus, name);
        cfg.val_frac = 0.1;
        cfg.batch = 2;
        cfg.seq = 8;
        corpus_t c;
        EXPECT(load_cfg(&c, &cfg, 0, 1, 0) == CHARLM_OK);
        EXPECT_MSG(c.train.width == widths[w] && c.val_ids.width == widths[w],
                   "vocabulary %d: width %d", c.vocab.size, c.train.width);
        int64_t bad = 0;
        for (int b = 0; b < 2; b++)
            for (int64_t i = 0; i <= c.L; i++)
                bad += c.vocab.cps[corpus_train_id(&c, b, i)] != cps[b * c.L + i];
        for (int b = 0; b < 2; b++)
            for (int64_t i = 0; i <= c.val_len[b]; i++)
                bad += c.vocab.cps[corpus_val_id(&c, b, i)] != cps[c.ntrain + c.val_off[b] + i];
        EXPECT_MSG(bad == 0, "width %d: %lld ids differ", widths[w], (long long)bad);
        corpus_free(&c);
        free(text);
        free(cps);
    }
}

int main(void) {
    tmpdir_make("corpus");
    test_vocab();
    test_resolve();
    test_utf8_errors();
    test_load();
    test_id_widths();
    return check_report("test_corpus");
}
