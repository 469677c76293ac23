#include "charlm/corpus.h"

#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <hdf5.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "charlm/err.h"
#include "charlm/fileio.h"
#include "charlm/prepare.h"
#include "charlm/utf8.h"

#define READ_CHUNK ((size_t)1 << 20) /* streaming buffer: memory does not grow with the corpus */
#define TEXT_PROBE ((size_t)8 << 10) /* a NUL in this many leading bytes marks a non-text file */

/* ---- streaming UTF-8 reader: one file, one code point at a time, with byte offsets ---- */

typedef struct {
    FILE *f;
    const char *path;
    const char *role;   /* config key for messages, or NULL */
    unsigned char *buf; /* (READ_CHUNK) */
    size_t pos, have;   /* next byte, bytes in buf */
    int64_t base;       /* file offset of buf[0] */
    int64_t at;         /* file offset of the last code point returned */
    int eof;
} reader_t;

static int reader_io_error(const reader_t *r) {
    return err_set(CHARLM_EINPUT, "%s%scannot read %s: %s", r->role ? r->role : "",
                   r->role ? ": " : "", r->path, strerror(errno));
}

static int reader_fill(reader_t *r) {
    size_t keep = r->have - r->pos; /* an incomplete sequence (< 4 bytes) carried over */
    memmove(r->buf, r->buf + r->pos, keep);
    r->base += (int64_t)r->pos;
    r->pos = 0;
    size_t got = fread(r->buf + keep, 1, READ_CHUNK - keep, r->f);
    r->have = keep + got;
    if (ferror(r->f)) return reader_io_error(r);
    r->eof = feof(r->f);
    return CHARLM_OK;
}

/* Opens path and reads its first chunk, so that the caller can probe the leading bytes. */
static int reader_open(reader_t *r, unsigned char *buf, const char *path, const char *role) {
    memset(r, 0, sizeof *r);
    r->buf = buf;
    r->path = path;
    r->role = role;
    r->f = fopen(path, "rb");
    if (!r->f) return reader_io_error(r);
    return reader_fill(r);
}

static void reader_close(reader_t *r) {
    if (r->f) fclose(r->f);
    r->f = NULL;
}

/* 1: a code point in *cp (its offset in r->at); 0: end of file; -1: error recorded. */
static int reader_next(reader_t *r, uint32_t *cp) {
    for (;;) {
        if (r->pos < r->have) {
            const unsigned char *s = r->buf + r->pos;
            int k = s[0] < 0x80 ? (*cp = s[0], 1) : utf8_decode(cp, s, r->have - r->pos);
            if (k > 0) {
                r->at = r->base + (int64_t)r->pos;
                r->pos += (size_t)k;
                return 1;
            }
            if (k == 0 || r->eof) {
                err_set(CHARLM_EINPUT, "%s: invalid UTF-8 at byte %lld", r->path,
                        (long long)(r->base + (int64_t)r->pos));
                return -1;
            }
        } else if (r->eof) {
            return 0;
        }
        if (reader_fill(r) != CHARLM_OK) return -1;
    }
}

/* ---- resolving a spec to its candidate files ---- */

typedef struct {
    char *path;
    dev_t dev;
    ino_t ino;
    int dup; /* the same file as an earlier path (symlink or hard link) */
} entry_t;

typedef struct {
    entry_t *v;
    size_t n, cap;
} entries_t;

static void entries_add(entries_t *e, const char *path, const struct stat *st) {
    if (e->n == e->cap) {
        size_t cap = e->cap ? 2 * e->cap : 64;
        entry_t *v = xcalloc(cap, sizeof *v);
        if (e->n) memcpy(v, e->v, e->n * sizeof *v);
        free(e->v);
        e->v = v;
        e->cap = cap;
    }
    e->v[e->n++] = (entry_t){xstrdup(path), st->st_dev, st->st_ino, 0};
}

static void entries_free(entries_t *e) {
    for (size_t i = 0; i < e->n; i++) free(e->v[i].path);
    free(e->v);
    memset(e, 0, sizeof *e);
}

static int cmp_path(const void *a, const void *b) {
    return strcmp(((const entry_t *)a)->path, ((const entry_t *)b)->path);
}

/* Orders by file identity, then by position in path order, so the first path of a file wins. */
static int cmp_identity(const void *a, const void *b) {
    const entry_t *x = *(entry_t *const *)a, *y = *(entry_t *const *)b;
    if (x->dev != y->dev) return x->dev < y->dev ? -1 : 1;
    if (x->ino != y->ino) return x->ino < y->ino ? -1 : 1;
    return x < y ? -1 : x > y;
}

static void sort_and_mark_duplicates(entries_t *e) {
    qsort(e->v, e->n, sizeof *e->v, cmp_path);
    entry_t **by_id = xcalloc(e->n, sizeof *by_id);
    for (size_t i = 0; i < e->n; i++) by_id[i] = &e->v[i];
    qsort(by_id, e->n, sizeof *by_id, cmp_identity);
    for (size_t i = 1; i < e->n; i++)
        if (by_id[i]->dev == by_id[i - 1]->dev && by_id[i]->ino == by_id[i - 1]->ino)
            by_id[i]->dup = 1;
    free(by_id);
}

/* The regular files directly inside dir (not recursive). Hidden entries (".name") are left out,
 * as a shell glob would: they are editor and system droppings, not corpus text. */
static int list_directory(entries_t *e, const char *dir, const char *role) {
    DIR *d = opendir(dir);
    if (!d) return err_set(CHARLM_EINPUT, "%s: cannot read %s: %s", role, dir, strerror(errno));
    size_t dlen = strlen(dir);
    int slash = dlen > 0 && dir[dlen - 1] == '/';
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') continue;
        size_t nlen = strlen(de->d_name), k = dlen;
        char *path = xcalloc(dlen + nlen + 2, 1);
        memcpy(path, dir, dlen);
        if (!slash) path[k++] = '/';
        memcpy(path + k, de->d_name, nlen);
        struct stat st;
        /* stat follows symlinks: a link to a regular file is a file, a dangling one is nothing */
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) entries_add(e, path, &st);
        free(path);
    }
    closedir(d);
    if (e->n == 0) return err_set(CHARLM_EINPUT, "%s: no files in directory %s", role, dir);
    return CHARLM_OK;
}

static int list_glob(entries_t *e, const char *pattern, const char *role) {
    glob_t g;
    /* without GLOB_ERR unreadable directories are passed over, so the only failures are
     * GLOB_NOMATCH (reported below as no match) and GLOB_NOSPACE */
    int rc = glob(pattern, 0, NULL, &g);
    if (rc == GLOB_NOSPACE) err_abort(__FILE__, __LINE__, "out of memory");
    for (size_t i = 0; rc == 0 && i < g.gl_pathc; i++) {
        struct stat st;
        if (stat(g.gl_pathv[i], &st) == 0 && S_ISREG(st.st_mode))
            entries_add(e, g.gl_pathv[i], &st);
    }
    globfree(&g);
    if (e->n == 0) return err_set(CHARLM_EINPUT, "%s: no file matches %s", role, pattern);
    return CHARLM_OK;
}

/* Fills e with the candidate files of spec; *explicit_file is set when spec names one file. */
static int resolve(entries_t *e, int *explicit_file, const char *spec, const char *role) {
    *explicit_file = 0;
    if (spec[0] == '\0') return err_set(CHARLM_EINPUT, "%s is not set", role);
    struct stat st;
    if (stat(spec, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return list_directory(e, spec, role);
        if (!S_ISREG(st.st_mode))
            return err_set(CHARLM_EINPUT, "%s: not a regular file or directory: %s", role, spec);
        *explicit_file = 1;
        entries_add(e, spec, &st);
        return CHARLM_OK;
    }
    if (errno != ENOENT)
        return err_set(CHARLM_EINPUT, "%s: cannot read %s: %s", role, spec, strerror(errno));
    if (strpbrk(spec, "*?[")) return list_glob(e, spec, role);
    return err_set(CHARLM_EINPUT, "%s: no such file or directory: %s", role, spec);
}

/* ---- prepared corpora (charlm prepare; format in prepare.h) ---- */

/* HDF5 prints its error stack unless told not to; our messages name the file instead. */
typedef struct {
    H5E_auto2_t func;
    void *data;
} h5_quiet_t;

static h5_quiet_t h5_quiet(void) {
    h5_quiet_t q;
    H5Eget_auto2(H5E_DEFAULT, &q.func, &q.data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return q;
}

static void h5_restore(h5_quiet_t q) { H5Eset_auto2(H5E_DEFAULT, q.func, q.data); }

/* A file to open as a prepared corpus: named *.h5, or starting with the HDF5 signature. */
static int is_prepared(const char *path) {
    static const unsigned char signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    size_t n = strlen(path);
    if (n >= 3 && !strcmp(path + n - 3, ".h5")) return 1;
    unsigned char head[8];
    FILE *f = fopen(path, "rb");
    if (!f) return 0; /* the text path reports it */
    size_t got = fread(head, 1, sizeof head, f);
    fclose(f);
    return got == sizeof head && !memcmp(head, signature, sizeof head);
}

/* Records "ROLE: PATH: WHAT" (CHARLM_EINPUT). */
__attribute__((format(printf, 3, 4))) static int prepared_fail(const char *role,
                                                                const char *path,
                                                                const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return err_set(CHARLM_EINPUT, "%s: %s: %s", role, path, what);
}

/* The scalar string attribute `name` of loc (fixed or variable length) into out (n bytes).
 * Returns 0, or -1 when it is missing or not a string. */
static int attr_string(hid_t loc, const char *name, char *out, size_t n) {
    hid_t a = H5Aexists(loc, name) > 0 ? H5Aopen(loc, name, H5P_DEFAULT) : -1;
    hid_t t = a >= 0 ? H5Aget_type(a) : -1, s = a >= 0 ? H5Aget_space(a) : -1;
    int ok = t >= 0 && s >= 0 && H5Tget_class(t) == H5T_STRING &&
             H5Sget_simple_extent_npoints(s) == 1;
    if (ok && H5Tis_variable_str(t) > 0) {
        char *v = NULL;
        ok = H5Aread(a, t, &v) >= 0 && v;
        if (ok) snprintf(out, n, "%s", v);
        H5free_memory(v);
    } else if (ok) {
        size_t len = H5Tget_size(t);
        char *v = xcalloc(len + 1, 1);
        ok = H5Aread(a, t, v) >= 0;
        if (ok) snprintf(out, n, "%s", v);
        free(v);
    }
    if (s >= 0) H5Sclose(s);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return ok ? 0 : -1;
}

/* The scalar integer attribute `name` of loc. Returns 0, or -1 when missing or not an integer. */
static int attr_int64(hid_t loc, const char *name, int64_t *v) {
    hid_t a = H5Aexists(loc, name) > 0 ? H5Aopen(loc, name, H5P_DEFAULT) : -1;
    hid_t t = a >= 0 ? H5Aget_type(a) : -1, s = a >= 0 ? H5Aget_space(a) : -1;
    int ok = t >= 0 && s >= 0 && H5Tget_class(t) == H5T_INTEGER &&
             H5Sget_simple_extent_npoints(s) == 1 && H5Aread(a, H5T_NATIVE_INT64, v) >= 0;
    if (s >= 0) H5Sclose(s);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return ok ? 0 : -1;
}

/* Opens /name, which must be a 1-D dataset of unsigned integers of at most 32 bits; *len gets
 * its length. Returns the dataset, or -1 with the error recorded. */
static hid_t open_ids(hid_t f, const char *name, int64_t *len, const char *role,
                      const char *path) {
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0) {
        prepared_fail(role, path, "bad charlm corpus (dataset /%s is missing)", name);
        return -1;
    }
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    hid_t t = d >= 0 ? H5Dget_type(d) : -1, s = d >= 0 ? H5Dget_space(d) : -1;
    hsize_t dim = 0;
    int ok = t >= 0 && s >= 0 && H5Tget_class(t) == H5T_INTEGER &&
             H5Tget_sign(t) == H5T_SGN_NONE && H5Tget_size(t) <= 4 &&
             H5Sget_simple_extent_ndims(s) == 1 && H5Sget_simple_extent_dims(s, &dim, NULL) == 1;
    if (s >= 0) H5Sclose(s);
    if (t >= 0) H5Tclose(t);
    if (!ok) {
        if (d >= 0) H5Dclose(d);
        prepared_fail(role, path, "bad charlm corpus (/%s is not a 1-D uint8, uint16 or uint32 "
                                  "dataset)", name);
        return -1;
    }
    *len = (int64_t)dim;
    return d;
}

/* Checks the format of an open prepared corpus and reads its vocabulary and token count. */
static int prepared_check(vocab_t *v, int64_t *ntokens, hid_t f, const char *role,
                          const char *path) {
    char format[64];
    int64_t version, nv;
    if (attr_string(f, "format", format, sizeof format) != 0)
        return prepared_fail(role, path, "not a charlm corpus (no string attribute 'format'; "
                                         "make one with charlm prepare)");
    if (strcmp(format, PREPARE_FORMAT) != 0)
        return prepared_fail(role, path, "not a charlm corpus (format is '%s'%s)", format,
                             strcmp(format, "charlm") ? "" : ": a checkpoint");
    if (attr_int64(f, "format_version", &version) != 0)
        return prepared_fail(role, path, "bad charlm corpus (attribute format_version is missing)");
    if (version != PREPARE_FORMAT_VERSION)
        return prepared_fail(role, path, "charlm corpus format_version %lld is not supported "
                             "(this charlm reads %d: prepare it again)",
                             (long long)version, PREPARE_FORMAT_VERSION);
    hid_t d = open_ids(f, "vocab", &nv, role, path);
    if (d < 0) return CHARLM_EINPUT;
    if (nv < 1 || nv > (int64_t)VOCAB_CP_LIMIT) {
        H5Dclose(d);
        return prepared_fail(role, path, "bad charlm corpus (/vocab has %lld entries)",
                             (long long)nv);
    }
    uint32_t *cps = xcalloc((size_t)nv, sizeof *cps); /* (nv) */
    int ok = H5Dread(d, H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, cps) >= 0;
    H5Dclose(d);
    int rc = ok ? vocab_from_list(v, cps, (int)nv) : CHARLM_EINPUT;
    free(cps);
    if (rc != CHARLM_OK) {
        char why[256];
        snprintf(why, sizeof why, "%s", ok ? err_message() : "checksum or read error");
        err_clear();
        return prepared_fail(role, path, "bad charlm corpus (/vocab: %s)", why);
    }
    d = open_ids(f, "tokens", ntokens, role, path);
    if (d < 0) return CHARLM_EINPUT;
    H5Dclose(d);
    if (*ntokens == 0)
        return err_set(CHARLM_EINPUT, "%s: %s is empty (0 characters)", role, path);
    return CHARLM_OK;
}

/* corpus_src_open for a prepared corpus: src gets one file, its token count and h5_vocab. */
static int prepared_open(corpus_src_t *src, uint64_t *bitmap, const char *path,
                         const char *role) {
    struct stat st;
    if (stat(path, &st) != 0)
        return prepared_fail(role, path, "cannot read: %s", strerror(errno));
    h5_quiet_t q = h5_quiet();
#if H5_VERSION_GE(1, 12, 0)
    int is_hdf5 = H5Fis_accessible(path, H5P_DEFAULT) > 0;
#else
    int is_hdf5 = H5Fis_hdf5(path) > 0;
#endif
    int rc;
    hid_t f = -1;
    if (!is_hdf5)
        rc = prepared_fail(role, path, "not an HDF5 file (a .h5 corpus comes from charlm prepare)");
    else if ((f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT)) < 0)
        rc = prepared_fail(role, path, "cannot be opened as HDF5 (truncated or corrupt)");
    else
        rc = prepared_check(&src->h5_vocab, &src->total, f, role, path);
    if (f >= 0) H5Fclose(f);
    h5_restore(q);
    if (rc != CHARLM_OK) {
        vocab_free(&src->h5_vocab);
        src->total = 0;
        return rc;
    }
    src->nfiles = 1;
    src->paths = xcalloc(1, sizeof *src->paths);
    src->nbytes = xcalloc(1, sizeof *src->nbytes);
    src->nchars = xcalloc(1, sizeof *src->nchars);
    src->paths[0] = xstrdup(path);
    src->nbytes[0] = (int64_t)st.st_size;
    src->nchars[0] = src->total;
    for (int i = 0; i < src->h5_vocab.size; i++) vocab_bitmap_set(bitmap, src->h5_vocab.cps[i]);
    return CHARLM_OK;
}

/* corpus_src_read for a prepared corpus: the hyperslab [first, first+n) of /tokens, its values
 * mapped through the file's /vocab to vocab's ids. */
static int prepared_read(int32_t *ids /* (n) */, const corpus_src_t *src, const vocab_t *vocab,
                         int64_t first, int64_t n) {
    const vocab_t *own = &src->h5_vocab;
    const char *path = src->paths[0];
    int32_t *map = xcalloc((size_t)own->size, sizeof *map); /* (own V) value -> id, -1: none */
    for (int k = 0; k < own->size; k++) map[k] = vocab_id(vocab, own->cps[k]);
    h5_quiet_t q = h5_quiet();
    hsize_t start = (hsize_t)first, count = (hsize_t)n;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = f >= 0 ? H5Dopen2(f, "tokens", H5P_DEFAULT) : -1;
    hid_t fs = d >= 0 ? H5Dget_space(d) : -1, ms = H5Screate_simple(1, &count, NULL);
    int ok = fs >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL) >= 0 &&
             H5Dread(d, H5T_NATIVE_INT32, ms, fs, H5P_DEFAULT, ids) >= 0;
    H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (d >= 0) H5Dclose(d);
    if (f >= 0) H5Fclose(f);
    h5_restore(q);
    int rc = ok ? CHARLM_OK
                : err_set(CHARLM_EINPUT,
                          "%s: cannot read /tokens [%lld, %lld) (file changed, truncated or "
                          "corrupt: checksum error)",
                          path, (long long)first, (long long)(first + n));
    for (int64_t i = 0; i < n && rc == CHARLM_OK; i++) {
        int32_t k = ids[i];
        if (k < 0 || k >= own->size)
            rc = err_set(CHARLM_EINPUT,
                         "%s: bad charlm corpus (token %lld is %lld, not below vocab_size %d)",
                         path, (long long)(first + i), (long long)k, own->size);
        else if (map[k] < 0)
            rc = err_set(CHARLM_EINPUT,
                         "%s: character U+%04X (token %lld) is not in the vocabulary", path, (unsigned)own->cps[k], (long long)(first + i));
        else
            ids[i] = map[k];
    }
    free(map);
    return rc;
}

/* ---- corpus_src ---- */

/* Scans one file: 1 = text (nchars, nbytes set, code points ORed into bitmap), 0 = not text,
 * -1 = error recorded. */
static int scan_file(int64_t *nchars, int64_t *nbytes, uint64_t *bitmap, unsigned char *buf,
                     const char *path, const char *role) {
    reader_t r;
    if (reader_open(&r, buf, path, role) != CHARLM_OK) {
        reader_close(&r);
        return -1;
    }
    if (memchr(r.buf, 0, r.have < TEXT_PROBE ? r.have : TEXT_PROBE)) {
        reader_close(&r);
        return 0;
    }
    int64_t n = 0;
    uint32_t cp;
    int k;
    while ((k = reader_next(&r, &cp)) == 1) {
        vocab_bitmap_set(bitmap, cp);
        n++;
    }
    *nchars = n;
    *nbytes = r.base + (int64_t)r.have;
    reader_close(&r);
    return k == 0 ? 1 : -1;
}

int corpus_src_open(corpus_src_t *src, uint64_t *bitmap, const char *spec, const char *role,
                    int note_skips) {
    memset(src, 0, sizeof *src);
    entries_t e = {0};
    int explicit_file;
    int rc = resolve(&e, &explicit_file, spec, role);
    if (rc != CHARLM_OK) {
        entries_free(&e);
        return rc;
    }
    if (explicit_file && is_prepared(e.v[0].path)) {
        rc = prepared_open(src, bitmap, e.v[0].path, role);
        entries_free(&e);
        return rc;
    }
    sort_and_mark_duplicates(&e);

    src->paths = xcalloc(e.n, sizeof *src->paths);
    src->nbytes = xcalloc(e.n, sizeof *src->nbytes);
    src->nchars = xcalloc(e.n, sizeof *src->nchars);
    unsigned char *buf = xcalloc(READ_CHUNK, 1);
    size_t skipped = 0;
    const char *first_skipped = NULL;
    for (size_t i = 0; i < e.n && rc == CHARLM_OK; i++) {
        if (e.v[i].dup) continue;
        int f = src->nfiles;
        int text = scan_file(&src->nchars[f], &src->nbytes[f], bitmap, buf, e.v[i].path, role);
        if (text < 0) {
            rc = CHARLM_EINPUT;
        } else if (text == 0 && explicit_file) {
            rc = err_set(CHARLM_EINPUT, "%s: %s is not a text file (NUL byte in its first 8 KiB)",
                         role, e.v[i].path);
        } else if (text == 0) {
            if (!skipped++) first_skipped = e.v[i].path;
        } else {
            src->paths[f] = xstrdup(e.v[i].path);
            src->total += src->nchars[f];
            src->nfiles++;
        }
    }
    free(buf);
    if (rc == CHARLM_OK && src->nfiles == 0)
        rc = err_set(CHARLM_EINPUT, "%s: no text files in %s (%zu non-text file%s skipped)", role,
                     spec, skipped, skipped == 1 ? "" : "s");
    if (rc == CHARLM_OK && note_skips && skipped)
        fprintf(stderr, "charlm: note: %s: skipped %zu non-text file%s (e.g. %s)\n", role, skipped,
                skipped == 1 ? "" : "s", first_skipped);
    if (rc == CHARLM_OK && src->total == 0)
        rc = err_set(CHARLM_EINPUT, "%s: %s is empty (0 characters)", role, spec);
    entries_free(&e);
    if (rc != CHARLM_OK) corpus_src_close(src);
    return rc;
}

int corpus_src_read(int32_t *ids, const corpus_src_t *src, const vocab_t *vocab, int64_t first,
                    int64_t n) {
    CHARLM_CHECK(first >= 0 && n >= 0 && first + n <= src->total);
    if (src->h5_vocab.size) return n > 0 ? prepared_read(ids, src, vocab, first, n) : CHARLM_OK;
    unsigned char *buf = xcalloc(READ_CHUNK, 1);
    int rc = CHARLM_OK;
    int64_t start = 0; /* index of the first character of file f */
    for (int f = 0; f < src->nfiles && n > 0 && rc == CHARLM_OK; start += src->nchars[f], f++) {
        if (start + src->nchars[f] <= first) continue;
        int64_t skip = first - start, take = start + src->nchars[f] - first;
        if (take > n) take = n;
        reader_t r;
        rc = reader_open(&r, buf, src->paths[f], NULL);
        uint32_t cp;
        for (int64_t i = 0; rc == CHARLM_OK && i < skip + take; i++) {
            int k = reader_next(&r, &cp);
            if (k != 1) {
                rc = k < 0 ? CHARLM_EINPUT
                           : err_set(CHARLM_EINPUT, "%s: file changed since it was scanned",
                                     src->paths[f]);
            } else if (i >= skip) {
                int id = vocab_id(vocab, cp);
                if (id < 0)
                    rc = err_set(CHARLM_EINPUT,
                                 "%s: character U+%04X at byte %lld is not in the vocabulary",
                                 src->paths[f], (unsigned)cp, (long long)r.at);
                *ids++ = id;
            }
        }
        reader_close(&r);
        first += take;
        n -= take;
    }
    free(buf);
    return rc;
}

void corpus_src_close(corpus_src_t *src) {
    for (int i = 0; i < src->nfiles; i++) free(src->paths[i]);
    free(src->paths);
    free(src->nbytes);
    free(src->nchars);
    vocab_free(&src->h5_vocab);
    memset(src, 0, sizeof *src);
}

/* ---- corpus_load ---- */

/* Where stream s's validation predictions start (corpus.h: Lv_s, vstart_s). */
static int64_t val_start(int64_t s, int64_t pred, int64_t S) {
    int64_t q = pred / S, rem = pred % S;
    return s * q + (s < rem ? s : rem);
}

static int split_and_check(corpus_t *c, const corpus_params_t *cfg, const corpus_src_t *train,
                           const corpus_src_t *val, int rank, int P) {
    int64_t S = (int64_t)P * c->B, T = c->T;
    if (S > INT_MAX)
        return err_set(CHARLM_EINPUT, "%d ranks x train.batch %d = %lld streams is too many", P,
                       c->B, (long long)S);
    c->S = (int)S;
    c->first_stream = rank * c->B;
    const char *ranks = P == 1 ? "rank" : "ranks";
    if (val) {
        c->ntrain = train->total;
        c->nval = val->total;
    } else {
        /* floor(total*(1-val_frac)) with one rounding, so val_frac = 0 keeps every character;
         * the conversion truncates, which is floor for the non-negative values kept */
        double total = (double)train->total, keep = total - total * cfg->val_frac;
        c->ntrain = keep <= 0 ? 0 : keep >= total ? train->total : (int64_t)keep;
        c->nval = train->total - c->ntrain;
    }
    if (c->ntrain < S * T + 1) {
        char split[96] = "";
        if (!val && c->nval > 0)
            snprintf(split, sizeof split, " (after data.val_frac %g for validation)",
                     cfg->val_frac);
        return err_set(CHARLM_EINPUT,
                       "data.corpus %s has %lld training characters%s; %d %s x train.batch %d "
                       "x train.seq %d needs at least %lld (S*T+1)",
                       cfg->corpus, (long long)c->ntrain, split, P, ranks, c->B, c->T,
                       (long long)(S * T + 1));
    }
    int validating = val != NULL || cfg->val_frac > 0;
    if (validating && c->nval < S + 1) {
        char what[CHARLM_PATH_MAX + 64];
        if (val) snprintf(what, sizeof what, "data.val %s has", cfg->val);
        else snprintf(what, sizeof what, "data.val_frac %g leaves", cfg->val_frac);
        return err_set(CHARLM_EINPUT,
                       "%s %lld validation characters; %d %s x train.batch %d needs at least "
                       "%lld (S+1)",
                       what, (long long)c->nval, P, ranks, c->B, (long long)(S + 1));
    }
    c->L = (c->ntrain - 1) / S;
    c->windows = c->L / T;
    return CHARLM_OK;
}

/* Reads ids [first, first+n) of src into out, packed to the width the vocabulary needs, through
 * a bounded int32 buffer. */
static int read_packed(corpus_ids_t *out, const corpus_src_t *src, const vocab_t *vocab,
                       int64_t first, int64_t n) {
    enum { CHUNK = 1 << 20 };
    out->width = vocab->size <= 256 ? 1 : vocab->size <= 65536 ? 2 : 4;
    out->data = xcalloc((size_t)n, (size_t)out->width);
    int32_t *buf = xcalloc(CHUNK, sizeof(int32_t));
    int rc = CHARLM_OK;
    for (int64_t done = 0; done < n && rc == CHARLM_OK; done += CHUNK) {
        int64_t k = n - done < CHUNK ? n - done : CHUNK;
        rc = corpus_src_read(buf, src, vocab, first + done, k);
        for (int64_t i = 0; i < k && rc == CHARLM_OK; i++) {
            if (out->width == 1) ((uint8_t *)out->data)[done + i] = (uint8_t)buf[i];
            else if (out->width == 2) ((uint16_t *)out->data)[done + i] = (uint16_t)buf[i];
            else ((int32_t *)out->data)[done + i] = buf[i];
        }
    }
    free(buf);
    return rc;
}

/* Reads this rank's train ids and validation streams. */
static int read_shard(corpus_t *c, const corpus_src_t *train, const corpus_src_t *val) {
    int64_t B = c->B, S = c->S, s0 = c->first_stream;
    int rc = read_packed(&c->train, train, &c->vocab, s0 * c->L, B * c->L + 1);
    if (rc != CHARLM_OK || c->nval == 0) return rc;

    int64_t pred = c->nval - 1;
    c->val_pred = pred;
    c->val_maxlen = pred / S + (pred % S != 0);
    int64_t lo = val_start(s0, pred, S), hi = val_start(s0 + B, pred, S);
    c->val_len = xcalloc((size_t)B, sizeof *c->val_len);
    c->val_off = xcalloc((size_t)B, sizeof *c->val_off);
    for (int64_t b = 0; b < B; b++) {
        int64_t st = val_start(s0 + b, pred, S);
        c->val_len[b] = val_start(s0 + b + 1, pred, S) - st;
        c->val_off[b] = st - lo;
    }
    /* without data.val, the validation split is the tail of the corpus after the train split */
    const corpus_src_t *vsrc = val ? val : train;
    int64_t offset = val ? 0 : c->ntrain;
    return read_packed(&c->val_ids, vsrc, &c->vocab, offset + lo, hi - lo + 1);
}

int corpus_load(corpus_t *c, const corpus_params_t *cfg, int rank, int P, int note_skips) {
    CHARLM_CHECK(P >= 1 && rank >= 0 && rank < P && cfg->batch >= 1 && cfg->seq >= 1);
    memset(c, 0, sizeof *c);
    c->B = cfg->batch;
    c->T = cfg->seq;

    uint64_t *bitmap = xcalloc(VOCAB_BITMAP_WORDS, sizeof *bitmap);
    corpus_src_t train, val;
    memset(&val, 0, sizeof val);
    /* with data.val set, data.val_frac is ignored: the whole corpus trains */
    int have_val = cfg->val && cfg->val[0] != '\0';
    int rc = corpus_src_open(&train, bitmap, cfg->corpus, "data.corpus", note_skips);
    if (rc == CHARLM_OK && have_val)
        rc = corpus_src_open(&val, bitmap, cfg->val, "data.val", note_skips);
    if (rc == CHARLM_OK) {
        vocab_from_bitmap(&c->vocab, bitmap);
        rc = split_and_check(c, cfg, &train, have_val ? &val : NULL, rank, P);
    }
    free(bitmap);
    if (rc == CHARLM_OK) rc = read_shard(c, &train, have_val ? &val : NULL);
    corpus_src_close(&train);
    corpus_src_close(&val);
    if (rc != CHARLM_OK) corpus_free(c);
    return rc;
}

void corpus_free(corpus_t *c) {
    vocab_free(&c->vocab);
    free(c->train.data);
    free(c->val_len);
    free(c->val_off);
    free(c->val_ids.data);
    memset(c, 0, sizeof *c);
}
