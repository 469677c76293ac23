#include "charlm/tokens.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "charlm/err.h"
#include "charlm/fileio.h"
#include "charlm/h5io.h"

#define DEFLATE_LEVEL 1 /* 100 MB of English: 46 MB in 3.0 s CPU; level 4: 41 MB in 4.1 s */
/* the chunk cache of a reader: two chunks of the widest ids, so that a read starting inside a
 * chunk left by the read before does not decompress it again */
/* what HDF5 may hold in its metadata cache and write at close, beyond the piece being written:
 * room asked for ahead of every piece — the object headers, and the chunk index, which grows with
 * the chunks (tens of bytes each) */
#define ROOM_SLACK ((int64_t)1 << 20)
#define ROOM_PER_CHUNK 256
#define READ_CACHE_BYTES (2 * TOKENS_CHUNK * sizeof(uint32_t))

int tokens_is_prepared(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    size_t n = strlen(path);
    return (n >= 3 && !strcmp(path + n - 3, ".h5")) || h5io_is_hdf5(path);
}

/* ---- reader ---- */

/* Records "ROLE: PATH: WHAT" (CHARLM_EINPUT). */
__attribute__((format(printf, 3, 4))) static int open_failed(const char *role, const char *path,
                                                              const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return err_set(CHARLM_EINPUT, "%s: %s: %s", role, path, what);
}

/* Opens /name, which must be a 1-D dataset of unsigned integers of at most 32 bits, with access
 * list dapl; *len gets its length. Returns the dataset, or -1 with the error recorded. */
static hid_t open_ids(hid_t f, const char *name, hid_t dapl, int64_t *len, const char *role,
                      const char *path) {
    int rank = 0;
    hsize_t dims[3] = {0, 0, 0};
    h5io_status_t st = h5io_dset_shape(f, name, &rank, dims);
    if (st == H5IO_MISSING) {
        open_failed(role, path, "bad charlm corpus (dataset /%s is missing)", name);
        return -1;
    }
    hid_t d = st == H5IO_OK && rank == 1 ? H5Dopen2(f, name, dapl) : -1;
    hid_t t = d >= 0 ? H5Dget_type(d) : -1;
    int ok = t >= 0 && H5Tget_class(t) == H5T_INTEGER && H5Tget_sign(t) == H5T_SGN_NONE &&
             H5Tget_size(t) <= 4;
    if (t >= 0) H5Tclose(t);
    if (!ok) {
        if (d >= 0) H5Dclose(d);
        open_failed(role, path,
                    "bad charlm corpus (/%s is not a 1-D uint8, uint16 or uint32 dataset)", name);
        return -1;
    }
    *len = (int64_t)dims[0];
    return d;
}

/* The /vocab of an open prepared corpus into r->vocab. */
static int read_vocab(tokens_reader_t *r, const char *role) {
    int64_t nv;
    hid_t d = open_ids(r->file, "vocab", H5P_DEFAULT, &nv, role, r->path);
    if (d < 0) return CHARLM_EINPUT;
    H5Dclose(d);
    if (nv < 1 || nv > (int64_t)VOCAB_CP_LIMIT)
        return open_failed(role, r->path, "bad charlm corpus (/vocab has %lld entries)",
                           (long long)nv);
    hsize_t dim = (hsize_t)nv;
    uint32_t *cps = xcalloc((size_t)nv, sizeof *cps); /* (nv) */
    int ok = h5io_dset_read(r->file, "vocab", H5T_NATIVE_UINT32, 1, &dim, cps) == H5IO_OK;
    int rc = ok ? vocab_from_list(&r->vocab, cps, (int)nv) : CHARLM_EINPUT;
    free(cps);
    if (rc == CHARLM_OK) return rc;
    char why[256];
    snprintf(why, sizeof why, "%s", ok ? err_message() : "checksum or read error");
    err_clear();
    return open_failed(role, r->path, "bad charlm corpus (/vocab: %s)", why);
}

/* Checks the format of the open file and opens /vocab and /tokens. */
static int check_format(tokens_reader_t *r, const char *role) {
    char *format = NULL;
    if (h5io_attr_read_str(r->file, "format", &format) != H5IO_OK)
        return open_failed(role, r->path, "not a charlm corpus (no string attribute 'format'; "
                                          "make one with charlm prepare)");
    int other = strcmp(format, TOKENS_FORMAT) != 0;
    int rc = other ? open_failed(role, r->path, "not a charlm corpus (format is '%s'%s)", format,
                                 strcmp(format, "charlm") ? "" : ": a checkpoint")
                   : CHARLM_OK;
    free(format);
    if (rc != CHARLM_OK) return rc;
    int64_t version;
    if (h5io_attr_read_i64(r->file, "format_version", &version) != H5IO_OK)
        return open_failed(role, r->path,
                           "bad charlm corpus (attribute format_version is missing)");
    if (version != TOKENS_FORMAT_VERSION)
        return open_failed(role, r->path,
                           "charlm corpus format_version %lld is not supported (this charlm "
                           "reads %d: prepare it again)",
                           (long long)version, TOKENS_FORMAT_VERSION);
    if ((rc = read_vocab(r, role)) != CHARLM_OK) return rc;
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    H5Pset_chunk_cache(dapl, H5D_CHUNK_CACHE_NSLOTS_DEFAULT, READ_CACHE_BYTES,
                       H5D_CHUNK_CACHE_W0_DEFAULT);
    r->tokens = open_ids(r->file, "tokens", dapl, &r->n, role, r->path);
    H5Pclose(dapl);
    if (r->tokens < 0) return CHARLM_EINPUT;
    if (r->n == 0) return err_set(CHARLM_EINPUT, "%s: %s is empty (0 characters)", role, r->path);
    return CHARLM_OK;
}

int tokens_open(tokens_reader_t *r, const char *path, const char *role) {
    memset(r, 0, sizeof *r);
    r->file = r->tokens = -1;
    r->path = xstrdup(path);
    struct stat st;
    const char *why;
    int rc;
    if (stat(path, &st) != 0)
        rc = open_failed(role, path, "cannot read: %s", strerror(errno));
    else if (!h5io_is_hdf5(path))
        rc = open_failed(role, path, "not an HDF5 file (a .h5 corpus comes from charlm prepare)");
    else if ((r->file = h5io_open(path, &why)) < 0)
        rc = open_failed(role, path, "%s", why);
    else
        rc = check_format(r, role);
    if (rc != CHARLM_OK) tokens_close(r);
    return rc;
}

void tokens_set_vocab(tokens_reader_t *r, const vocab_t *v) {
    free(r->map);
    r->map = xcalloc((size_t)r->vocab.size, sizeof *r->map);
    for (int k = 0; k < r->vocab.size; k++) r->map[k] = vocab_id(v, r->vocab.cps[k]);
}

int tokens_read(int32_t *ids, tokens_reader_t *r, int64_t first, int64_t n) {
    CHARLM_CHECK(r->map && first >= 0 && n >= 0 && first + n <= r->n);
    if (n == 0) return CHARLM_OK;
    hsize_t start = (hsize_t)first, count = (hsize_t)n;
    hid_t fs = H5Dget_space(r->tokens), ms = H5Screate_simple(1, &count, NULL);
    int ok = fs >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL) >= 0 &&
             H5Dread(r->tokens, H5T_NATIVE_INT32, ms, fs, H5P_DEFAULT, ids) >= 0;
    H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (!ok)
        return err_set(CHARLM_EINPUT,
                       "%s: cannot read /tokens [%lld, %lld) (file changed, truncated or "
                       "corrupt: checksum error)",
                       r->path, (long long)first, (long long)(first + n));
    const int V = r->vocab.size;
    for (int64_t i = 0; i < n; i++) {
        int32_t k = ids[i];
        if (k < 0 || k >= V)
            return err_set(CHARLM_EINPUT,
                           "%s: bad charlm corpus (token %lld is %lld, not below vocab_size %d)",
                           r->path, (long long)(first + i), (long long)k, V);
        if (r->map[k] < 0)
            return err_set(CHARLM_EINPUT,
                           "%s: character U+%04X (token %lld) is not in the vocabulary", r->path,
                           (unsigned)r->vocab.cps[k], (long long)(first + i));
        ids[i] = r->map[k];
    }
    return CHARLM_OK;
}

void tokens_close(tokens_reader_t *r) {
    if (r->path && r->tokens >= 0) H5Dclose(r->tokens);
    if (r->path && r->file >= 0) H5Fclose(r->file);
    free(r->path);
    vocab_free(&r->vocab);
    free(r->map);
    memset(r, 0, sizeof *r);
}

/* ---- writer ---- */

/* Records "cannot write WHAT of PATH: CAUSE" (CHARLM_EINPUT). */
static int write_failed(const tokens_writer_t *w, const char *what) {
    return err_set(CHARLM_EINPUT, "cannot write %s of %s: %s", what, w->path, h5io_cause());
}

/* Room for `bytes` more than the file holds now, plus what HDF5 may keep in its metadata cache
 * and write at close. */
static int ahead(tokens_writer_t *w, int64_t bytes) {
    struct stat st;
    int64_t index = (w->n / (int64_t)TOKENS_CHUNK + 1) * ROOM_PER_CHUNK;
    int e = fstat(w->room, &st) != 0
                ? errno
                : fileio_room(w->room, st.st_size + bytes + ROOM_SLACK + index);
    return e ? err_set(CHARLM_EINPUT, "cannot write %s: %s", w->path, strerror(e)) : CHARLM_OK;
}

int tokens_create(tokens_writer_t *w, const char *path) {
    memset(w, 0, sizeof *w);
    w->tokens = -1;
    w->path = xstrdup(path);
    w->file = h5io_create(path);
    w->room = w->file >= 0 ? open(path, O_WRONLY) : -1;
    if (w->file >= 0 && w->room < 0) {
        int rc = err_set(CHARLM_EINPUT, "cannot create %s: %s", path, strerror(errno));
        tokens_finish(w, NULL);
        remove(path);
        return rc;
    }
    if (w->file < 0) tokens_finish(w, NULL); /* frees the path: the writer is closed */
    return w->file >= 0 ? CHARLM_OK : CHARLM_EINPUT;
}

int tokens_begin(tokens_writer_t *w, const vocab_t *v, int64_t n) {
    CHARLM_CHECK(w->file >= 0 && w->tokens < 0 && n >= 1 && v->size >= 1);
    hsize_t nv = (hsize_t)v->size;
    int rc = ahead(w, 4 * (int64_t)nv);
    if (rc == CHARLM_OK) rc = h5io_dset_write(w->file, "vocab", H5T_NATIVE_UINT32, H5T_STD_U32LE, 1, &nv, nv,
                             v->cps);
    if (rc != CHARLM_OK) return rc;
    const int V = v->size;
    hid_t type = V <= 256 ? H5T_STD_U8LE : V <= 65536 ? H5T_STD_U16LE : H5T_STD_U32LE;
    hsize_t dim = (hsize_t)n, chunk = dim < TOKENS_CHUNK ? dim : TOKENS_CHUNK;
    hid_t s = H5Screate_simple(1, &dim, NULL), p = H5Pcreate(H5P_DATASET_CREATE);
    /* every element is written once: no fill values first */
    int ok = H5Pset_chunk(p, 1, &chunk) >= 0 && H5Pset_fill_time(p, H5D_FILL_TIME_NEVER) >= 0 &&
             (V <= 256 || H5Pset_shuffle(p) >= 0) &&
             (!H5Zfilter_avail(H5Z_FILTER_DEFLATE) || H5Pset_deflate(p, DEFLATE_LEVEL) >= 0) &&
             H5Pset_fletcher32(p) >= 0;
    w->tokens = ok ? H5Dcreate2(w->file, "tokens", type, s, H5P_DEFAULT, p, H5P_DEFAULT) : -1;
    /* the cause first: the calls that close clear HDF5's error stack */
    rc = w->tokens < 0 ? write_failed(w, "/tokens") : CHARLM_OK;
    H5Pclose(p);
    H5Sclose(s);
    if (rc != CHARLM_OK) return rc;
    w->n = n;
    w->vocab_size = V;
    w->buf = xcalloc(TOKENS_CHUNK, sizeof *w->buf);
    return CHARLM_OK;
}

/* Writes the buffered ids after those already in /tokens. */
static int flush(tokens_writer_t *w) {
    hsize_t start = (hsize_t)w->written, count = w->nbuf;
    /* deflate's worst case (zlib's deflateBound: 5 bytes per 16 KiB stored block), the checksum
     * and the chunk's index entry */
    int64_t bytes = (int64_t)count * (w->vocab_size <= 256 ? 1 : w->vocab_size <= 65536 ? 2 : 4);
    int rc = ahead(w, bytes + bytes / 16384 * 5 + 1024);
    if (rc != CHARLM_OK) return rc;
    hid_t fs = H5Dget_space(w->tokens), ms = H5Screate_simple(1, &count, NULL);
    int ok = H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL) >= 0 &&
             H5Dwrite(w->tokens, H5T_NATIVE_UINT32, ms, fs, H5P_DEFAULT, w->buf) >= 0;
    rc = ok ? CHARLM_OK : write_failed(w, "/tokens"); /* before the closes clear the cause */
    H5Sclose(ms);
    H5Sclose(fs);
    w->written += (int64_t)w->nbuf;
    w->nbuf = 0;
    return rc;
}

int tokens_append(tokens_writer_t *w, const int32_t *ids, size_t k) {
    CHARLM_CHECK(w->written + (int64_t)(w->nbuf + k) <= w->n);
    for (size_t i = 0; i < k; i++) {
        w->buf[w->nbuf++] = (uint32_t)ids[i];
        if (w->nbuf == TOKENS_CHUNK) {
            int rc = flush(w);
            if (rc != CHARLM_OK) return rc;
        }
    }
    return CHARLM_OK;
}

static int write_attrs(hid_t f, const tokens_sources_t *s, int64_t n, int V) {
    size_t k = (size_t)s->nfiles;
    const char **sha = xcalloc(k, sizeof *sha); /* (k) the digests as strings */
    for (size_t i = 0; i < k; i++) sha[i] = s->sha256[i];
    int rc = CHARLM_OK;
    if (!rc) rc = h5io_attr_write_str(f, "format", TOKENS_FORMAT);
    if (!rc) rc = h5io_attr_write_i64(f, "format_version", TOKENS_FORMAT_VERSION);
    if (!rc) rc = h5io_attr_write_str(f, "charlm_version", CHARLM_VERSION);
    if (!rc) rc = h5io_attr_write_i64(f, "n_tokens", n);
    if (!rc) rc = h5io_attr_write_i64(f, "vocab_size", V);
    if (!rc) rc = h5io_attr_write_str(f, "sha256", s->sha256_all);
    if (!rc)
        rc = h5io_attr_write_strs(f, "source_files", (const char *const *)s->paths, k);
    if (!rc) rc = h5io_attr_write(f, "source_sizes", H5T_NATIVE_INT64, k, s->bytes);
    if (!rc) rc = h5io_attr_write(f, "source_chars", H5T_NATIVE_INT64, k, s->chars);
    if (!rc) rc = h5io_attr_write_strs(f, "source_sha256", sha, k);
    free(sha);
    return rc;
}

int tokens_finish(tokens_writer_t *w, const tokens_sources_t *src) {
    int rc = CHARLM_OK;
    if (src) {
        if (w->nbuf) rc = flush(w);
        CHARLM_CHECK(rc != CHARLM_OK || w->written == w->n);
        int64_t attrs = 0;
        for (int i = 0; i < src->nfiles; i++) attrs += (int64_t)strlen(src->paths[i]) + 256;
        if (rc == CHARLM_OK) rc = ahead(w, attrs);
        if (rc == CHARLM_OK) rc = write_attrs(w->file, src, w->n, w->vocab_size);
    }
    if (w->tokens >= 0 && H5Dclose(w->tokens) < 0 && rc == CHARLM_OK && src)
        rc = write_failed(w, "/tokens");
    if (w->file >= 0) {
        int closed = h5io_close(w->file);
        if (rc == CHARLM_OK && src) rc = closed;
    }
    if (w->room >= 0) {
        if (rc == CHARLM_OK) fileio_trim(w->room);
        close(w->room);
    }
    free(w->path);
    free(w->buf);
    memset(w, 0, sizeof *w);
    w->file = w->tokens = w->room = -1;
    return rc;
}
