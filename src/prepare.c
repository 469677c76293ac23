#include "charlm/prepare.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "charlm/corpus.h"
#include "charlm/err.h"
#include "charlm/fileio.h"
#include "charlm/utf8.h"
#include "charlm/vocab.h"

#define READ_CHUNK ((size_t)1 << 20) /* bytes read from a source at a time */
#define TOKEN_CHUNK ((size_t)1 << 20) /* ids per /tokens chunk and per write */
#define DEFLATE_LEVEL 1 /* 100 MB of English: 46 MB in 3.0 s CPU; level 4: 41 MB in 4.1 s */

/* ---- SHA-256 (FIPS 180-4) ---------------------------------------------------------------- */

typedef struct {
    uint32_t h[8];
    uint64_t len;             /* bytes hashed so far */
    unsigned char block[64];  /* a partial block */
    size_t fill;              /* bytes in block */
} sha256_t;

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

static inline uint32_t ror32(uint32_t x, int n) { return x >> n | x << (32 - n); }

static void sha256_block(uint32_t h[8], const unsigned char *p /* (64) */) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ w[i - 15] >> 3;
        uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ w[i - 2] >> 10;
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25)) + ((e & f) ^ (~e & g)) +
                      sha256_k[i] + w[i];
        uint32_t t2 = (ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

static void sha256_init(sha256_t *s) {
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memset(s, 0, sizeof *s);
    memcpy(s->h, h0, sizeof h0);
}

static void sha256_update(sha256_t *s, const void *data, size_t n) {
    const unsigned char *p = data;
    s->len += n;
    if (s->fill) {
        size_t k = 64 - s->fill < n ? 64 - s->fill : n;
        memcpy(s->block + s->fill, p, k);
        s->fill += k, p += k, n -= k;
        if (s->fill < 64) return;
        sha256_block(s->h, s->block);
        s->fill = 0;
    }
    for (; n >= 64; p += 64, n -= 64) sha256_block(s->h, p);
    memcpy(s->block, p, n);
    s->fill = n;
}

/* Pads, finishes the digest and writes it as hex; s is spent. */
static void sha256_final_hex(sha256_t *s, char out[65]) {
    static const unsigned char pad[64] = {0x80};
    uint64_t bits = s->len * 8;
    sha256_update(s, pad, (s->fill < 56 ? 56 : 120) - s->fill);
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_update(s, len, 8);
    for (int i = 0; i < 8; i++) snprintf(out + 8 * i, 9, "%08x", (unsigned)s->h[i]);
}

void prepare_sha256_hex(char out[65], const void *data, size_t n) {
    sha256_t s;
    sha256_init(&s);
    sha256_update(&s, data, n);
    sha256_final_hex(&s, out);
}

/* ---- HDF5 attributes ----------------------------------------------------------------------- */

static int attr_write(hid_t loc, const char *name, hid_t type, hsize_t n, const void *v) {
    hid_t s = n ? H5Screate_simple(1, &n, NULL) : H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, type, s, H5P_DEFAULT, H5P_DEFAULT);
    int ok = a >= 0 && H5Awrite(a, type, v) >= 0;
    if (a >= 0) ok = H5Aclose(a) >= 0 && ok;
    H5Sclose(s);
    return ok ? 0 : -1;
}

static int attr_i64(hid_t loc, const char *name, int64_t v) {
    return attr_write(loc, name, H5T_NATIVE_INT64, 0, &v);
}

static int attr_str(hid_t loc, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(v) + 1);
    int rc = attr_write(loc, name, t, 0, v);
    H5Tclose(t);
    return rc;
}

/* A (n) array of variable-length UTF-8 strings. */
static int attr_strings(hid_t loc, const char *name, const char *const *v, hsize_t n) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    int rc = attr_write(loc, name, t, n, v);
    H5Tclose(t);
    return rc;
}

/* ---- the second pass: encoding the sources into /tokens ----------------------------------- */

typedef struct {
    hid_t tokens;          /* /tokens of out.tmp */
    uint32_t *ids;         /* (TOKEN_CHUNK) ids not yet written */
    size_t nids;
    int64_t written;       /* ids already in /tokens */
    int32_t *id_of;        /* (ncp) code point -> id, -1 when not in the vocabulary */
    uint32_t ncp;
    unsigned char *buf;    /* (READ_CHUNK) */
    sha256_t all;          /* over every source byte, in order */
} encoder_t;

static int flush_ids(encoder_t *e) {
    hsize_t start = (hsize_t)e->written, count = e->nids;
    hid_t fs = H5Dget_space(e->tokens), ms = H5Screate_simple(1, &count, NULL);
    int ok = H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL) >= 0 &&
             H5Dwrite(e->tokens, H5T_NATIVE_UINT32, ms, fs, H5P_DEFAULT, e->ids) >= 0;
    H5Sclose(ms);
    H5Sclose(fs);
    e->written += (int64_t)e->nids;
    e->nids = 0;
    return ok ? 0 : -1;
}

/* Appends the ids of file `path` (nbytes, nchars as scanned by the first pass) and hashes its
 * bytes into e->all and, when per_file, into digest. Returns CHARLM_OK or CHARLM_EINPUT. */
static int encode_file(encoder_t *e, char digest[65], int per_file, const char *path,
                       int64_t nbytes, int64_t nchars) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(CHARLM_EINPUT, "prepare: cannot read %s: %s", path, strerror(errno));
    sha256_t one;
    sha256_init(&one);
    int64_t bytes = 0, chars = 0;
    size_t keep = 0; /* an incomplete UTF-8 sequence carried to the next read */
    int rc = CHARLM_OK, changed = 0;
    for (int eof = 0; !eof && rc == CHARLM_OK && !changed;) {
        size_t got = fread(e->buf + keep, 1, READ_CHUNK - keep, f);
        if (ferror(f)) {
            rc = err_set(CHARLM_EINPUT, "prepare: cannot read %s: %s", path, strerror(errno));
            break;
        }
        eof = feof(f);
        sha256_update(&e->all, e->buf + keep, got);
        if (per_file) sha256_update(&one, e->buf + keep, got);
        bytes += (int64_t)got;
        size_t have = keep + got, pos = 0;
        while (pos < have && rc == CHARLM_OK) {
            uint32_t cp;
            int k = e->buf[pos] < 0x80 ? (cp = e->buf[pos], 1)
                                       : utf8_decode(&cp, e->buf + pos, have - pos);
            if (k < 0 && !eof) break;
            if (k <= 0 || cp >= e->ncp || e->id_of[cp] < 0 || chars == nchars) {
                changed = 1;
                break;
            }
            e->ids[e->nids++] = (uint32_t)e->id_of[cp];
            if (e->nids == TOKEN_CHUNK && flush_ids(e) != 0)
                rc = err_set(CHARLM_EINPUT, "prepare: HDF5 error writing /tokens");
            pos += (size_t)k;
            chars++;
        }
        keep = have - pos;
        memmove(e->buf, e->buf + pos, keep);
    }
    fclose(f);
    if (rc == CHARLM_OK && (changed || bytes != nbytes || chars != nchars))
        rc = err_set(CHARLM_EINPUT, "prepare: %s changed while it was being read", path);
    if (per_file) sha256_final_hex(&one, digest);
    return rc;
}

/* ---- the output file ---------------------------------------------------------------------- */

/* /vocab (V) uint32, chunked with a checksum like every dataset of a charlm file. */
static int write_vocab(hid_t f, const vocab_t *v) {
    hsize_t n = (hsize_t)v->size;
    hid_t s = H5Screate_simple(1, &n, NULL), p = H5Pcreate(H5P_DATASET_CREATE);
    int ok = H5Pset_chunk(p, 1, &n) >= 0 && H5Pset_fletcher32(p) >= 0;
    hid_t d = ok ? H5Dcreate2(f, "vocab", H5T_STD_U32LE, s, H5P_DEFAULT, p, H5P_DEFAULT) : -1;
    ok = d >= 0 && H5Dwrite(d, H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, v->cps) >= 0;
    if (d >= 0) ok = H5Dclose(d) >= 0 && ok;
    H5Pclose(p);
    H5Sclose(s);
    return ok ? 0 : -1;
}

/* /tokens (n) of the narrowest unsigned type that holds V ids, chunked and compressed. */
static hid_t create_tokens(hid_t f, int64_t n, int V) {
    hid_t type = V <= 256 ? H5T_STD_U8LE : V <= 65536 ? H5T_STD_U16LE : H5T_STD_U32LE;
    hsize_t dim = (hsize_t)n, chunk = dim < TOKEN_CHUNK ? dim : TOKEN_CHUNK;
    hid_t s = H5Screate_simple(1, &dim, NULL), p = H5Pcreate(H5P_DATASET_CREATE);
    /* every element is written once: no fill values first */
    int ok = H5Pset_chunk(p, 1, &chunk) >= 0 && H5Pset_fill_time(p, H5D_FILL_TIME_NEVER) >= 0 &&
             (V <= 256 || H5Pset_shuffle(p) >= 0) &&
             (!H5Zfilter_avail(H5Z_FILTER_DEFLATE) || H5Pset_deflate(p, DEFLATE_LEVEL) >= 0) &&
             H5Pset_fletcher32(p) >= 0;
    hid_t d = ok ? H5Dcreate2(f, "tokens", type, s, H5P_DEFAULT, p, H5P_DEFAULT) : -1;
    H5Pclose(p);
    H5Sclose(s);
    return d;
}

/* The sources of every input, flattened in concatenation order. */
typedef struct {
    int n;
    const char **paths;  /* (n) borrowed from the corpus_src_t */
    int64_t *bytes;      /* (n) */
    int64_t *chars;      /* (n) */
    char (*sha)[65];     /* (n) hex digests */
    const char **shap;   /* (n) pointers to sha[i], for the string attribute */
} sources_t;

static void sources_init(sources_t *s, const corpus_src_t *src, int nsrc) {
    memset(s, 0, sizeof *s);
    for (int i = 0; i < nsrc; i++) s->n += src[i].nfiles;
    s->paths = xcalloc((size_t)s->n, sizeof *s->paths);
    s->bytes = xcalloc((size_t)s->n, sizeof *s->bytes);
    s->chars = xcalloc((size_t)s->n, sizeof *s->chars);
    s->sha = xcalloc((size_t)s->n, sizeof *s->sha);
    s->shap = xcalloc((size_t)s->n, sizeof *s->shap);
    int k = 0;
    for (int i = 0; i < nsrc; i++)
        for (int j = 0; j < src[i].nfiles; j++, k++) {
            s->paths[k] = src[i].paths[j];
            s->bytes[k] = src[i].nbytes[j];
            s->chars[k] = src[i].nchars[j];
            s->shap[k] = s->sha[k];
        }
}

static void sources_free(sources_t *s) {
    free(s->paths);
    free(s->bytes);
    free(s->chars);
    free(s->sha);
    free(s->shap);
}

static int write_attrs(hid_t f, const sources_t *s, int64_t n, int V, const char *sha) {
    hsize_t k = (hsize_t)s->n;
    return attr_str(f, "format", PREPARE_FORMAT) ||
           attr_i64(f, "format_version", PREPARE_FORMAT_VERSION) ||
           attr_str(f, "charlm_version", CHARLM_VERSION) || attr_i64(f, "n_tokens", n) ||
           attr_i64(f, "vocab_size", V) || attr_str(f, "sha256", sha) ||
           attr_strings(f, "source_files", s->paths, k) ||
           attr_write(f, "source_sizes", H5T_NATIVE_INT64, k, s->bytes) ||
           attr_write(f, "source_chars", H5T_NATIVE_INT64, k, s->chars) ||
           attr_strings(f, "source_sha256", s->shap, k)
               ? -1
               : 0;
}

/* Creates /vocab and /tokens in f, fills /tokens from the sources and their digests in s,
 * writes the attributes. */
static int write_corpus(hid_t f, sources_t *s, const vocab_t *v, int64_t n) {
    if (write_vocab(f, v) != 0) return err_set(CHARLM_EINPUT, "prepare: HDF5 error writing /vocab");
    encoder_t e;
    memset(&e, 0, sizeof e);
    e.tokens = create_tokens(f, n, v->size);
    if (e.tokens < 0) return err_set(CHARLM_EINPUT, "prepare: HDF5 error creating /tokens");
    e.ncp = v->cps[v->size - 1] + 1;
    e.id_of = xcalloc(e.ncp, sizeof *e.id_of);
    for (uint32_t cp = 0; cp < e.ncp; cp++) e.id_of[cp] = -1;
    for (int i = 0; i < v->size; i++) e.id_of[v->cps[i]] = i;
    e.ids = xcalloc(TOKEN_CHUNK, sizeof *e.ids);
    e.buf = xcalloc(READ_CHUNK, 1);
    sha256_init(&e.all);
    int rc = CHARLM_OK;
    /* one source: its digest is the corpus's, hashed once */
    for (int i = 0; i < s->n && rc == CHARLM_OK; i++)
        rc = encode_file(&e, s->sha[i], s->n > 1, s->paths[i], s->bytes[i], s->chars[i]);
    if (rc == CHARLM_OK && e.nids && flush_ids(&e) != 0)
        rc = err_set(CHARLM_EINPUT, "prepare: HDF5 error writing /tokens");
    CHARLM_CHECK(rc != CHARLM_OK || e.written == n);
    char sha[65];
    sha256_final_hex(&e.all, sha);
    if (s->n == 1) memcpy(s->sha[0], sha, sizeof sha);
    if (rc == CHARLM_OK && write_attrs(f, s, n, v->size, sha) != 0)
        rc = err_set(CHARLM_EINPUT, "prepare: HDF5 error writing the attributes");
    if (H5Dclose(e.tokens) < 0 && rc == CHARLM_OK)
        rc = err_set(CHARLM_EINPUT, "prepare: HDF5 error writing /tokens");
    free(e.id_of);
    free(e.ids);
    free(e.buf);
    return rc;
}

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Closes f (flushing it), makes tmp durable and renames it to out; removes tmp on failure. */
static int commit(hid_t f, const char *tmp, const char *out, int rc) {
    errno = 0;
    if (H5Fclose(f) < 0 && rc == CHARLM_OK)
        rc = err_set(CHARLM_EINPUT, "prepare: cannot write %s: %s", tmp,
                     errno ? strerror(errno) : "HDF5 error closing the file");
    if (rc == CHARLM_OK) fileio_fsync(tmp, 0);
    if (rc == CHARLM_OK && rename(tmp, out) != 0)
        rc = err_set(CHARLM_EINPUT, "prepare: cannot rename %s to %s: %s", tmp, out,
                     strerror(errno));
    if (rc != CHARLM_OK) {
        remove(tmp);
        return rc;
    }
    char dir[4096];
    fileio_dir_of(dir, sizeof dir, out);
    fileio_fsync(dir, 1); /* makes the rename durable */
    return rc;
}

int prepare_run(const char *out, const char *const *inputs, int n, int verbose) {
    CHARLM_CHECK(n >= 1);
    double t0 = seconds();
    H5E_auto2_t efunc;
    void *edata;
    H5Eget_auto2(H5E_DEFAULT, &efunc, &edata);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* our messages replace HDF5's error stack */

    /* the output first, so that an unwritable one fails before the corpus is read */
    size_t len = strlen(out);
    char *tmp = xcalloc(len + 5, 1);
    snprintf(tmp, len + 5, "%s.tmp", out);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST); /* attributes over 64 KiB */
    errno = 0;
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    int rc = CHARLM_OK;
    if (f < 0)
        rc = err_set(CHARLM_EINPUT, "prepare: cannot write %s: %s", tmp,
                     errno ? strerror(errno) : "HDF5 error creating the file");

    /* first pass: resolve, validate, collect the vocabulary */
    corpus_src_t *src = xcalloc((size_t)n, sizeof *src);
    uint64_t *bitmap = xcalloc(VOCAB_BITMAP_WORDS, sizeof *bitmap);
    int64_t total = 0, bytes = 0;
    for (int i = 0; i < n && rc == CHARLM_OK; i++) {
        rc = corpus_src_open(&src[i], bitmap, inputs[i], "prepare", verbose);
        if (rc == CHARLM_OK && src[i].h5_vocab.size)
            rc = err_set(CHARLM_EINPUT, "prepare: %s is already a prepared corpus", inputs[i]);
        total += src[i].total;
        for (int j = 0; j < src[i].nfiles; j++) bytes += src[i].nbytes[j];
    }
    vocab_t v = {0};
    sources_t s = {0};
    if (rc == CHARLM_OK) {
        vocab_from_bitmap(&v, bitmap);
        sources_init(&s, src, n);
        rc = write_corpus(f, &s, &v, total); /* second pass */
    }
    if (f >= 0) rc = commit(f, tmp, out, rc);

    struct stat st;
    if (rc == CHARLM_OK && verbose) {
        double dt = seconds() - t0, mb = 1e-6 * (double)bytes;
        fprintf(stderr,
                "charlm: prepared %s: %lld chars, vocab %d (%s), %d file%s, %.1f MB -> %.1f MB, "
                "%.2f s, %.1f MB/s\n",
                out, (long long)total, v.size,
                v.size <= 256 ? "uint8" : v.size <= 65536 ? "uint16" : "uint32", s.n,
                s.n == 1 ? "" : "s", mb, stat(out, &st) == 0 ? 1e-6 * (double)st.st_size : 0.0,
                dt, dt > 0 ? mb / dt : 0.0);
    }
    sources_free(&s);
    vocab_free(&v);
    free(bitmap);
    for (int i = 0; i < n; i++) corpus_src_close(&src[i]);
    free(src);
    free(tmp);
    H5Eset_auto2(H5E_DEFAULT, efunc, edata);
    return rc;
}

int prepare_main(int argc, char **argv, const dist_t *d) {
    const char **inputs = xcalloc((size_t)argc + 1, sizeof *inputs);
    const char *out = NULL;
    int n = 0, rc = CHARLM_OK;
    for (int i = 0; i < argc && rc == CHARLM_OK; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (i + 1 < argc) out = argv[++i];
            else rc = err_set(CHARLM_EUSAGE, "prepare: option %s needs a value", a);
        } else if (a[0] == '-') {
            rc = err_set(CHARLM_EUSAGE, "prepare: unknown option '%s'", a);
        } else {
            inputs[n++] = a;
        }
    }
    if (rc == CHARLM_OK && (n == 0 || !out))
        rc = err_set(CHARLM_EUSAGE, "prepare: %s (usage: charlm prepare CORPUS... -o OUT.h5)",
                     n == 0 ? "no corpus given" : "missing -o OUT.h5");
    if (rc == CHARLM_OK && d->rank == 0) rc = prepare_run(out, inputs, n, 1);
    free(inputs);
    return dist_agree(d, rc);
}
