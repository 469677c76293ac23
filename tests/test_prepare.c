/* test_prepare: `charlm prepare` and training from its output. SHA-256 against the FIPS 180-4
 * vectors; a prepared corpus of ASCII + Korean text from a directory and a file (uint8 /tokens
 * that decode back to the text, /vocab, every attribute); uint16 and uint32 ids; a corpus of
 * more than one read buffer and one /tokens chunk; corpus_load from the .h5 giving exactly the
 * shards of the text for two ranks (val_frac, data.val prepared or text, vocabularies that need
 * remapping); and the errors: prepare's inputs and output, and .h5 files that are not usable
 * charlm corpora. */
#include "charlm/config.h"
#include "charlm/corpus.h"
#include "charlm/err.h"
#include "charlm/prepare.h"
#include "charlm/sha256.h"
#include "charlm/tokens.h"
#include "charlm/utf8.h"
#include "charlm/vocab.h"

#include "check.h"

#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* corpus_load with the parameters a configuration gives. */
static int load_cfg(corpus_t *c, const config_t *cfg, int rank, int P, int note_skips) {
    corpus_params_t p = config_corpus_params(cfg);
    return corpus_load(c, &p, rank, P, note_skips);
}

static int exists(const char *rel) {
    char p[PATH_LEN];
    struct stat st;
    return stat(tmp_path(p, rel), &st) == 0;
}

static int has(const char *needle) { return strstr(err_message(), needle) != NULL; }

/* Prepares inputs (paths relative to tmpdir) into out, expecting success. */
static int prepare_ok(const char *out, const char *const *rel, int n) {
    char paths[4][PATH_LEN], o[PATH_LEN];
    const char *in[4];
    for (int i = 0; i < n; i++) in[i] = tmp_path(paths[i], rel[i]);
    int rc = prepare_run(tmp_path(o, out), in, n, 0);
    EXPECT_MSG(rc == CHARLM_OK, "prepare %s: %s", out, err_message());
    err_clear();
    return rc == CHARLM_OK;
}

/* ---- reading a prepared corpus back with the HDF5 API ---- */

static int64_t attr_i64(hid_t f, const char *name) {
    int64_t v = -1;
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    EXPECT_MSG(a >= 0 && H5Aread(a, H5T_NATIVE_INT64, &v) >= 0, "attribute %s", name);
    if (a >= 0) H5Aclose(a);
    return v;
}

/* A fixed-length string attribute into out (n bytes). */
static void attr_str(char *out, size_t n, hid_t f, const char *name) {
    memset(out, 0, n);
    hid_t a = H5Aopen(f, name, H5P_DEFAULT), t = a >= 0 ? H5Aget_type(a) : -1;
    EXPECT_MSG(t >= 0 && H5Tget_size(t) < n && H5Aread(a, t, out) >= 0, "attribute %s", name);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
}

/* Element i of the variable-length string array attribute `name` (k elements) into out. */
static void attr_strings_at(char *out, size_t n, hid_t f, const char *name, int k, int i) {
    char **v = calloc((size_t)k, sizeof *v);
    hid_t a = H5Aopen(f, name, H5P_DEFAULT), s = a >= 0 ? H5Aget_space(a) : -1;
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    EXPECT_MSG(s >= 0 && H5Sget_simple_extent_npoints(s) == k && H5Aread(a, t, v) >= 0,
               "attribute %s", name);
    snprintf(out, n, "%s", v[i] ? v[i] : "");
    for (int j = 0; j < k; j++) H5free_memory(v[j]);
    H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    if (a >= 0) H5Aclose(a);
    free(v);
}

/* The 1-D dataset `name` as uint32 (malloc'd); *n gets its length, *type its file type (closed
 * by the caller). */
static uint32_t *dset_u32(hid_t f, const char *name, int64_t *n, hid_t *type) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT), s = H5Dget_space(d);
    hsize_t dim = 0;
    H5Sget_simple_extent_dims(s, &dim, NULL);
    uint32_t *v = calloc(dim + 1, sizeof *v);
    EXPECT_MSG(H5Dread(d, H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0, "read /%s",
               name);
    *n = (int64_t)dim;
    *type = H5Dget_type(d);
    H5Sclose(s);
    H5Dclose(d);
    return v;
}

/* Checks /tokens (of file type want) and /vocab decode back to text (n bytes); *V gets V. */
static void check_decodes(hid_t f, hid_t want, const char *text, size_t n, int *V) {
    int64_t ntok, nv;
    hid_t ttype, vtype;
    uint32_t *tok = dset_u32(f, "tokens", &ntok, &ttype);
    uint32_t *cps = dset_u32(f, "vocab", &nv, &vtype);
    EXPECT(H5Tequal(ttype, want) > 0 && H5Tequal(vtype, H5T_STD_U32LE) > 0);
    int sorted = nv > 0;
    for (int64_t i = 1; i < nv; i++) sorted &= cps[i] > cps[i - 1];
    EXPECT_MSG(sorted, "/vocab is not strictly increasing");
    char *back = calloc((size_t)ntok * 4 + 1, 1), *o = back;
    int64_t bad = 0;
    for (int64_t i = 0; i < ntok; i++) {
        if (tok[i] >= (uint32_t)nv) bad++;
        else o += utf8_encode(o, cps[tok[i]]);
    }
    EXPECT_MSG(bad == 0 && (size_t)(o - back) == n && memcmp(back, text, n) == 0,
               "/tokens do not decode back to the text (%lld bad ids, %zu of %zu bytes)",
               (long long)bad, (size_t)(o - back), n);
    EXPECT(attr_i64(f, "n_tokens") == ntok && attr_i64(f, "vocab_size") == nv);
    *V = (int)nv;
    H5Tclose(ttype);
    H5Tclose(vtype);
    free(back);
    free(tok);
    free(cps);
}

/* ---- tests ---- */

static void test_sha256(void) {
    static const struct {
        const char *in, *hex;
    } vec[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqr"
         "lmnopqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    };
    char hex[65];
    for (size_t i = 0; i < sizeof vec / sizeof *vec; i++) {
        sha256_hex(hex, vec[i].in, strlen(vec[i].in));
        EXPECT_MSG(strcmp(hex, vec[i].hex) == 0, "sha256(\"%s\") = %s", vec[i].in, hex);
    }
    char *million = malloc(1000000);
    memset(million, 'a', 1000000);
    sha256_hex(hex, million, 1000000);
    EXPECT_MSG(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
               "sha256(a x 1e6) = %s", hex);
    /* the same bytes in pieces of every size from 0 to 130 (partial blocks, several blocks) */
    sha256_t st;
    sha256_init(&st);
    for (size_t done = 0, i = 0, k; done < 1000000; done += k, i++) {
        k = i % 131; /* 0 too: an empty update changes nothing */
        if (k > 1000000 - done) k = 1000000 - done;
        sha256_update(&st, million + done, k);
    }
    char pieces[65];
    sha256_final(&st, pieces);
    EXPECT_MSG(!strcmp(pieces, hex), "sha256 in pieces = %s", pieces);
    free(million);
}

/* A directory of two files and a file, concatenated in argument order (the directory sorted). */
static void test_format(void) {
    static const char *a = "안녕하세요, world!\n", *b = "Hello, 세계.\n", *c = "끝: the end\n";
    char p[PATH_LEN];
    mkdir(tmp_path(p, "src"), 0755);
    write_text("src/b.txt", b);
    write_text("src/a.txt", a);
    write_text("c.txt", c);
    write_text("small.h5.tmp", "a stale temporary file from an earlier run");
    if (!prepare_ok("small.h5", (const char *[]){"src", "c.txt"}, 2)) return;
    EXPECT(exists("small.h5") && !exists("small.h5.tmp"));

    char text[256], want[65], got[PATH_LEN];
    snprintf(text, sizeof text, "%s%s%s", a, b, c);
    hid_t f = H5Fopen(tmp_path(p, "small.h5"), H5F_ACC_RDONLY, H5P_DEFAULT);
    EXPECT(f >= 0);
    if (f < 0) return;
    int V;
    check_decodes(f, H5T_STD_U8LE, text, strlen(text), &V);
    /* the distinct code points of the text: 16 ASCII, 7 Hangul */
    EXPECT_MSG(V == 23, "V = %d", V);
    attr_str(got, sizeof got, f, "format");
    EXPECT(!strcmp(got, "charlm-corpus") && attr_i64(f, "format_version") == 1);
    attr_str(got, sizeof got, f, "sha256");
    sha256_hex(want, text, strlen(text));
    EXPECT_MSG(!strcmp(got, want), "sha256 %s, want %s", got, want);

    const char *order[3] = {"src/a.txt", "src/b.txt", "c.txt"}, *body[3] = {a, b, c};
    int64_t sizes[3], chars[3];
    hid_t as = H5Aopen(f, "source_sizes", H5P_DEFAULT);
    hid_t ac = H5Aopen(f, "source_chars", H5P_DEFAULT);
    EXPECT(H5Aread(as, H5T_NATIVE_INT64, sizes) >= 0 && H5Aread(ac, H5T_NATIVE_INT64, chars) >= 0);
    H5Aclose(as);
    H5Aclose(ac);
    for (int i = 0; i < 3; i++) {
        attr_strings_at(got, sizeof got, f, "source_files", 3, i);
        EXPECT_MSG(!strcmp(got, tmp_path(p, order[i])), "source_files[%d] = %s", i, got);
        attr_strings_at(got, sizeof got, f, "source_sha256", 3, i);
        sha256_hex(want, body[i], strlen(body[i]));
        EXPECT_MSG(!strcmp(got, want), "source_sha256[%d] = %s", i, got);
        EXPECT(sizes[i] == (int64_t)strlen(body[i]));
    }
    EXPECT(chars[0] == 14 && chars[1] == 11 && chars[2] == 11);
    H5Fclose(f);

    /* preparing again replaces the file */
    write_text("c.txt", "x");
    if (prepare_ok("small.h5", (const char *[]){"c.txt"}, 1)) {
        f = H5Fopen(tmp_path(p, "small.h5"), H5F_ACC_RDONLY, H5P_DEFAULT);
        EXPECT(attr_i64(f, "n_tokens") == 1);
        attr_strings_at(got, sizeof got, f, "source_sha256", 1, 0);
        EXPECT(!strcmp(got, "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"));
        H5Fclose(f);
    }
}

/* Wider vocabularies: 300 Hangul syllables take uint16 ids, 70000 code points uint32. */
static void test_wide(void) {
    static const struct {
        uint32_t first, n, step;
    } cases[] = {{0xAC00, 300, 7}, {0x10000, 70000, 13}};
    for (int c = 0; c < 2; c++) {
        uint32_t n = cases[c].n;
        char *s = calloc((size_t)n * 2 * 4 + 1, 1), *o = s;
        for (int rep = 0; rep < 2; rep++)
            for (uint32_t i = 0; i < n; i++)
                o += utf8_encode(o, cases[c].first + i * cases[c].step % n);
        write_text("wide.txt", s);
        if (prepare_ok("wide.h5", (const char *[]){"wide.txt"}, 1)) {
            char p[PATH_LEN];
            hid_t f = H5Fopen(tmp_path(p, "wide.h5"), H5F_ACC_RDONLY, H5P_DEFAULT);
            int V;
            check_decodes(f, c == 0 ? H5T_STD_U16LE : H5T_STD_U32LE, s, strlen(s), &V);
            EXPECT_MSG(V == (int)n, "V = %d, want %u", V, (unsigned)n);
            H5Fclose(f);
        }
        free(s);
    }
}

/* More than one 1 MiB read buffer (multi-byte characters across its edges) and more than one
 * 1 Mi-id chunk of /tokens. */
static void test_big(void) {
    enum { N = 1300000 };
    static const uint32_t alphabet[] = {'a', 'b', ' ', '\n', 0xE9, 0xAC00, 0xD55C, 0x1F600};
    char *s = malloc((size_t)N * 4 + 1), *o = s;
    uint32_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 1664525u + 1013904223u;
        o += utf8_encode(o, alphabet[(x >> 16) % 8]);
    }
    *o = '\0';
    size_t n = (size_t)(o - s);
    write_bytes("big.txt", s, n);
    if (prepare_ok("big.h5", (const char *[]){"big.txt"}, 1)) {
        char p[PATH_LEN], got[80], want[65];
        hid_t f = H5Fopen(tmp_path(p, "big.h5"), H5F_ACC_RDONLY, H5P_DEFAULT);
        int V;
        check_decodes(f, H5T_STD_U8LE, s, n, &V);
        EXPECT(V == 8 && attr_i64(f, "n_tokens") == N);
        attr_str(got, sizeof got, f, "sha256");
        sha256_hex(want, s, n);
        EXPECT_MSG(!strcmp(got, want), "sha256 %s, want %s", got, want);
        hid_t d = H5Dopen2(f, "tokens", H5P_DEFAULT), pl = H5Dget_create_plist(d);
        hsize_t chunk = 0;
        EXPECT(H5Pget_chunk(pl, 1, &chunk) == 1 && chunk == 1 << 20);
        EXPECT(H5Pget_nfilters(pl) >= 2); /* deflate and fletcher32 */
        H5Pclose(pl);
        H5Dclose(d);
        H5Fclose(f);
    }
    free(s);
}

/* The tokens reader on big.h5 (more than one chunk): it keeps the file open (reads go on after
 * the file is removed), reads hyperslabs inside and across chunks, and maps token values to the
 * ids of a larger vocabulary or names a character missing from a smaller one. */
static void test_reader(void) {
    size_t n;
    char *text = read_all("big.txt", &n), *copy = read_all("big.h5", &n), p[PATH_LEN];
    write_bytes("reader.h5", copy, n);
    free(copy);
    int64_t N = 0;
    uint32_t *cps = malloc(strlen(text) * sizeof *cps);
    for (const char *t = text; *t; N++) t += utf8_decode(&cps[N], (const unsigned char *)t, 4);
    free(text);
    tokens_reader_t r;
    int rc = tokens_open(&r, tmp_path(p, "reader.h5"), "data.corpus");
    EXPECT_MSG(rc == CHARLM_OK, "tokens_open: %s", err_message());
    err_clear();
    if (rc != CHARLM_OK) {
        free(cps);
        return;
    }
    EXPECT(r.n == N && r.vocab.size == 8 && H5Fget_obj_count(r.file, H5F_OBJ_FILE) == 1);
    EXPECT(remove(p) == 0);
    /* the file's own vocabulary, then one with two more characters before and between its own */
    vocab_t wide;
    EXPECT(vocab_from_list(&wide, (const uint32_t[]){'\t', '\n', ' ', 'a', 'b', 'c', 0xE9,
                                                      0xAC00, 0xD55C, 0x1F600}, 10) == CHARLM_OK);
    static const int64_t ranges[][2] = {
        {0, 3}, {(1 << 20) - 5, 10}, {12345, 1 << 20}, {1300000 - 7, 7}, {(1 << 20), 1}, {7, 1}};
    int32_t *ids = malloc(((size_t)1 << 20) * sizeof *ids);
    for (int pass = 0; pass < 2; pass++) {
        const vocab_t *v = pass ? &wide : &r.vocab;
        tokens_set_vocab(&r, v);
        for (size_t i = 0; i < sizeof ranges / sizeof *ranges; i++) {
            int64_t first = ranges[i][0], k = ranges[i][1], bad = 0;
            rc = tokens_read(ids, &r, first, k);
            EXPECT_MSG(rc == CHARLM_OK, "read [%lld, +%lld): %s", (long long)first, (long long)k,
                       err_message());
            for (int64_t j = 0; j < k && rc == CHARLM_OK; j++)
                bad += ids[j] != vocab_id(v, cps[first + j]);
            EXPECT_MSG(bad == 0, "vocabulary %d: [%lld, +%lld): %lld ids differ", v->size,
                       (long long)first, (long long)k, (long long)bad);
            err_clear();
        }
    }
    /* without U+1F600 */
    vocab_t narrow;
    EXPECT(vocab_from_list(&narrow, wide.cps, 9) == CHARLM_OK);
    tokens_set_vocab(&r, &narrow);
    EXPECT(tokens_read(ids, &r, 0, 1 << 20) == CHARLM_EINPUT);
    EXPECT_MSG(has("reader.h5: character U+1F600 (token ") && has("is not in the vocabulary"),
               "%s", err_message());
    err_clear();
    tokens_close(&r);
    EXPECT(r.path == NULL && r.map == NULL && r.vocab.cps == NULL);
    tokens_close(&r); /* twice is safe */
    vocab_free(&wide);
    vocab_free(&narrow);
    free(ids);
    free(cps);
}

static config_t base_config(const char *corpus_rel, const char *val_rel) {
    config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    tmp_path(cfg.corpus, corpus_rel);
    if (val_rel) tmp_path(cfg.val, val_rel);
    cfg.val_frac = 0.1;
    cfg.batch = 3;
    cfg.seq = 7;
    return cfg;
}

/* corpus_load of `h5` and of `text` agree on every rank of P = 2, field by field. */
static void expect_same_shards(const char *what, const config_t *text, const config_t *h5) {
    for (int r = 0; r < 2; r++) {
        corpus_t a, b;
        int ra = load_cfg(&a, text, r, 2, 0), rb = load_cfg(&b, h5, r, 2, 0);
        EXPECT_MSG(ra == CHARLM_OK && rb == CHARLM_OK, "%s rank %d: %s", what, r, err_message());
        err_clear();
        if (ra != CHARLM_OK || rb != CHARLM_OK) continue;
        EXPECT_MSG(a.vocab.size == b.vocab.size &&
                       !memcmp(a.vocab.cps, b.vocab.cps, (size_t)a.vocab.size * sizeof(uint32_t)),
                   "%s: vocabularies differ", what);
        EXPECT_MSG(a.S == b.S && a.B == b.B && a.T == b.T && a.first_stream == b.first_stream &&
                       a.ntrain == b.ntrain && a.L == b.L && a.windows == b.windows &&
                       a.nval == b.nval && a.val_pred == b.val_pred &&
                       a.val_maxlen == b.val_maxlen,
                   "%s rank %d: layouts differ", what, r);
        if (a.L != b.L) continue;
        int64_t diff = 0;
        for (int64_t i = 0; i <= a.B * a.L; i++)
            diff += corpus_ids_get(&a.train, i) != corpus_ids_get(&b.train, i);
        EXPECT_MSG(diff == 0, "%s rank %d: train ids differ", what, r);
        for (int s = 0; s < a.B && a.nval == b.nval && a.nval; s++) {
            diff = a.val_len[s] != b.val_len[s];
            for (int64_t i = 0; !diff && i <= a.val_len[s]; i++)
                diff += corpus_val_id(&a, s, i) != corpus_val_id(&b, s, i);
            EXPECT_MSG(diff == 0, "%s rank %d: validation stream %d differs", what, r, s);
        }
        corpus_free(&a);
        corpus_free(&b);
    }
}

static void test_load(void) {
    /* 3000 characters; 'Ω' only in the validation file */
    enum { N = 3000, NV = 400 };
    static const uint32_t alphabet[] = {'a', 'b', 'c', ' ', '\n', ',', 0xE9, 0xAC00, 0x1F600, 'Z'};
    char *s = malloc(N * 4 + 1), *o = s;
    uint32_t x = 7;
    for (int i = 0; i < N + NV; i++) {
        if (i == N) {
            *o = '\0';
            write_text("load.txt", s);
            o = s;
        }
        x = x * 1664525u + 1013904223u;
        o += utf8_encode(o, i == N + 17 ? 0x3A9 : alphabet[(x >> 16) % 10]);
    }
    *o = '\0';
    write_text("val.txt", s);
    free(s);
    if (!prepare_ok("load.h5", (const char *[]){"load.txt"}, 1) ||
        !prepare_ok("val.h5", (const char *[]){"val.txt"}, 1))
        return;

    config_t text = base_config("load.txt", NULL), h5 = base_config("load.h5", NULL);
    expect_same_shards("val_frac 0.1", &text, &h5);
    /* the vocabulary of a prepared corpus alone is its /vocab, as is */
    corpus_t c;
    if (load_cfg(&c, &h5, 1, 2, 0) == CHARLM_OK) {
        char p[PATH_LEN];
        hid_t f = H5Fopen(tmp_path(p, "load.h5"), H5F_ACC_RDONLY, H5P_DEFAULT);
        int64_t nv;
        hid_t t;
        uint32_t *cps = dset_u32(f, "vocab", &nv, &t);
        EXPECT(nv == c.vocab.size && !memcmp(cps, c.vocab.cps, (size_t)nv * sizeof *cps));
        free(cps);
        H5Tclose(t);
        H5Fclose(f);
        corpus_free(&c);
    }
    text.val_frac = h5.val_frac = 0;
    expect_same_shards("val_frac 0", &text, &h5);

    /* data.val: both prepared (vocabularies differ: 'Ω' remaps load.h5's ids), or mixed */
    text = base_config("load.txt", "val.txt");
    h5 = base_config("load.h5", "val.h5");
    expect_same_shards("data.val prepared", &text, &h5);
    h5 = base_config("load.h5", "val.txt");
    expect_same_shards("prepared corpus, text data.val", &text, &h5);
    h5 = base_config("load.txt", "val.h5");
    expect_same_shards("text corpus, prepared data.val", &text, &h5);

    /* the same file without the .h5 name is recognised by its signature */
    size_t n;
    char *bytes = read_all("load.h5", &n);
    write_bytes("load.bin", bytes, n);
    free(bytes);
    text = base_config("load.txt", NULL);
    h5 = base_config("load.bin", NULL);
    expect_same_shards("HDF5 signature", &text, &h5);
}

/* prepare_run expecting CHARLM_EINPUT with both needles in the message and no output left. */
static void prepare_fails(const char *out, const char *in, const char *n1, const char *n2) {
    char o[PATH_LEN], i[PATH_LEN], tmp[PATH_LEN + 8];
    tmp_path(o, out);
    const char *inputs[1] = {in[0] == '/' ? in : tmp_path(i, in)};
    int rc = prepare_run(o, inputs, 1, 0);
    EXPECT_MSG(rc == CHARLM_EINPUT, "prepare %s -o %s returned %d", in, out, rc);
    EXPECT_MSG(has(n1) && has(n2), "message \"%s\" lacks \"%s\" / \"%s\"", err_message(), n1, n2);
    snprintf(tmp, sizeof tmp, "%s.tmp", o);
    struct stat st;
    EXPECT_MSG(stat(o, &st) != 0 && stat(tmp, &st) != 0, "%s or its .tmp left behind", o);
    err_clear();
}

/* corpus_src_open of rel as data.corpus, expecting CHARLM_EINPUT naming the file and needle. */
static void open_fails(const char *rel, const char *needle) {
    char p[PATH_LEN];
    uint64_t *bitmap = calloc(VOCAB_BITMAP_WORDS, sizeof *bitmap);
    corpus_src_t src;
    int rc = corpus_src_open(&src, bitmap, tmp_path(p, rel), "data.corpus", 0);
    EXPECT_MSG(rc == CHARLM_EINPUT, "corpus_src_open(%s) returned %d", rel, rc);
    EXPECT_MSG(has("data.corpus: ") && has(rel) && has(needle), "message \"%s\" lacks \"%s\"",
               err_message(), needle);
    EXPECT(src.text.nfiles == 0 && src.text.paths == NULL && src.tokens.path == NULL &&
           src.tokens.vocab.cps == NULL);
    free(bitmap);
    err_clear();
}

/* A copy of small.h5 as rel, opened read-write for damaging. */
static hid_t damaged_copy(const char *rel) {
    size_t n;
    char *bytes = read_all("small.h5", &n), p[PATH_LEN];
    write_bytes(rel, bytes, n);
    free(bytes);
    return H5Fopen(tmp_path(p, rel), H5F_ACC_RDWR, H5P_DEFAULT);
}

static void test_errors(void) {
    char p[PATH_LEN];
    /* prepare: inputs and output */
    prepare_fails("e.h5", "missing.txt", "no such file or directory", "missing.txt");
    write_bytes("bad.txt", "ok \xC3\x28 not", 8);
    prepare_fails("e.h5", "bad.txt", "bad.txt: invalid UTF-8 at byte 3", "");
    write_text("ok.txt", "fine text");
    prepare_fails("no-such-dir/e.h5", "ok.txt", "cannot create", "no-such-dir/e.h5.tmp");
    prepare_fails("e.h5", "load.h5", "load.h5 is already a prepared corpus", "");

    /* .h5 files that are not usable corpora */
    write_text("text.h5", "plain text in a .h5 name");
    open_fails("text.h5", "not an HDF5 file");
    hid_t f = H5Fcreate(tmp_path(p, "empty.h5"), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    open_fails("empty.h5", "not a charlm corpus (no string attribute 'format'");

    f = damaged_copy("ckpt.h5");
    hid_t a = H5Aopen(f, "format", H5P_DEFAULT), t = H5Aget_type(a);
    char fmt[64] = "charlm"; /* a checkpoint's format */
    H5Awrite(a, t, fmt);
    H5Tclose(t);
    H5Aclose(a);
    H5Fclose(f);
    open_fails("ckpt.h5", "not a charlm corpus (format is 'charlm': a checkpoint)");

    /* format as a variable-length string (as h5py writes one) is as good */
    f = damaged_copy("vlen.h5");
    H5Adelete(f, "format");
    t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    hid_t scalar = H5Screate(H5S_SCALAR);
    a = H5Acreate2(f, "format", t, scalar, H5P_DEFAULT, H5P_DEFAULT);
    const char *vlen = "charlm-corpus";
    EXPECT(H5Awrite(a, t, &vlen) >= 0);
    H5Aclose(a);
    H5Sclose(scalar);
    H5Tclose(t);
    H5Fclose(f);
    uint64_t *bitmap = calloc(VOCAB_BITMAP_WORDS, sizeof *bitmap);
    corpus_src_t src;
    int rc = corpus_src_open(&src, bitmap, tmp_path(p, "vlen.h5"), "data.corpus", 0);
    EXPECT_MSG(rc == CHARLM_OK && src.total == 1, "vlen format: %s", err_message());
    err_clear();
    corpus_src_close(&src);

    f = damaged_copy("v2.h5");
    int64_t two = 2;
    a = H5Aopen(f, "format_version", H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &two);
    H5Aclose(a);
    H5Fclose(f);
    open_fails("v2.h5", "format_version 2 is not supported");

    f = damaged_copy("notokens.h5");
    H5Ldelete(f, "tokens", H5P_DEFAULT);
    H5Fclose(f);
    open_fails("notokens.h5", "bad charlm corpus (dataset /tokens is missing)");

    f = damaged_copy("novocab.h5");
    H5Ldelete(f, "vocab", H5P_DEFAULT);
    H5Fclose(f);
    open_fails("novocab.h5", "bad charlm corpus (dataset /vocab is missing)");

    /* a token value outside /vocab is found when the range holding it is read (small.h5 now
     * holds the one character "x") */
    f = damaged_copy("badtoken.h5");
    hid_t d = H5Dopen2(f, "tokens", H5P_DEFAULT), s = H5Dget_space(d), m = H5Screate(H5S_SCALAR);
    hsize_t at = 0;
    uint8_t big = 200;
    H5Sselect_elements(s, H5S_SELECT_SET, 1, &at);
    EXPECT(H5Dwrite(d, H5T_NATIVE_UINT8, m, s, H5P_DEFAULT, &big) >= 0);
    H5Sclose(m);
    H5Sclose(s);
    H5Dclose(d);
    H5Fclose(f);
    memset(bitmap, 0, VOCAB_BITMAP_WORDS * sizeof *bitmap);
    vocab_t v;
    int32_t id;
    EXPECT(corpus_src_open(&src, bitmap, tmp_path(p, "badtoken.h5"), "data.corpus", 0) ==
           CHARLM_OK);
    vocab_from_bitmap(&v, bitmap);
    corpus_src_set_vocab(&src, &v);
    EXPECT(src.total == 1 && corpus_src_read(&id, &src, 0, 1) == CHARLM_EINPUT);
    EXPECT_MSG(has("badtoken.h5: bad charlm corpus (token 0 is 200, not below vocab_size 1)"),
               "%s", err_message());
    err_clear();
    corpus_src_close(&src);
    vocab_free(&v);
    free(bitmap);
}

int main(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* the damaged files are meant to fail */
    tmpdir_make("prepare");
    test_sha256();
    test_format();
    test_wide();
    test_big();
    test_reader();
    test_load();
    test_errors();
    /* every file, dataset, attribute and type that was opened has been closed */
    ssize_t open_ids = H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL);
    EXPECT_MSG(open_ids == 0, "%zd HDF5 objects left open", open_ids);
    return check_report("test_prepare");
}
