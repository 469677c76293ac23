#include "charlm/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "charlm/digest.h"
#include "charlm/err.h"
#include "charlm/fileio.h"
#include "charlm/h5io.h"

/* content_digest hashes the arrays' bytes as this host holds them: little-endian, as the files */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "checkpoint digests are little-endian");

/* at most this many elements per chunk: HDF5 holds a chunk and its checksummed copy while it
 * writes, so the chunk size is what a checkpoint adds to peak memory */
#define CHUNK_ELEMS (1 << 18)
/* room for run_dir (CHARLM_PATH_MAX) + "/checkpoints/ckpt-<step>.h5.tmp" */
#define RUN_PATH (CHARLM_PATH_MAX + 64)

/* ---- the attributes, one table for writing and reading ------------------------------------ */

/* A numeric attribute of group `group` ("" = the root) and the member of ckpt_info_t it holds:
 * exactly one of i64, i32 (read back with a range check) and f64 is set. A file of a format
 * before `since` does not have it (0: every format has it). */
typedef struct {
    const char *group, *name;
    int64_t *i64;
    int *i32;
    double *f64;
    int since;
} field_t;

#define NFIELDS 22

/* Fills f with the numeric attributes of the root, /model and /optimizer, pointing into *in. The
 * string attributes (format, charlm_version, config, cell, kind), format_version and the epoch
 * of /state/cursor are written and read by name. */
static void info_fields(ckpt_info_t *in, field_t f[NFIELDS]) {
    model_dims_t *md = &in->dims;
    const field_t t[] = {
        {"", "step", .i64 = &in->step},
        {"", "epoch", .i64 = &in->epoch},
        {"", "cursor", .i64 = &in->cursor},
        {"", "tokens_seen", .i64 = &in->tokens_seen},
        {"", "train_chars", .i64 = &in->train_chars},
        {"", "world_size", .i32 = &in->world_size},
        {"", "streams", .i32 = &in->streams},
        {"", "seq", .i32 = &in->seq},
        {"", "lr", .f64 = &in->lr},
        {"", "last_train_loss", .f64 = &in->last_train_loss},
        {"", "last_val_loss", .f64 = &in->last_val_loss},
        {"", "best_val_loss", .f64 = &in->best_val_loss},
        {"model", "layers", .i32 = &md->layers},
        {"model", "hidden", .i32 = &md->H},
        {"model", "embed", .i32 = &md->E},
        {"model", "vocab_size", .i32 = &md->V},
        {"optimizer", "step", .i64 = &in->optim_step},
        {"", "elapsed_s", .f64 = &in->elapsed_s, .since = 4},
        {"", "lr_scale", .f64 = &in->plateau.scale, .since = 4},
        {"", "plateau_best", .f64 = &in->plateau.best, .since = 4},
        {"", "plateau_bad", .i64 = &in->plateau.bad, .since = 4},
        {"", "plateau_stale", .i64 = &in->plateau.stale, .since = 4},
    };
    _Static_assert(sizeof t / sizeof *t == NFIELDS, "NFIELDS is the size of the table");
    memcpy(f, t, sizeof t);
}

/* The root attributes format 3 adds: the run's identity, the data fingerprints and the digest. */
static const char *const v3_attrs[] = {"run_id", "train_fingerprint", "val_fingerprint", "digest"};
#define NV3 ((int)(sizeof v3_attrs / sizeof *v3_attrs))

/* The digest of everything ckpt_read hands back, w holding it (the reader builds a w over what
 * it read): the format, every field of w->info, the configuration, vocabulary, tensors, moment
 * buffers, state and history, each array preceded by its length. */
static uint64_t content_digest(const ckpt_write_t *w, int version) {
    ckpt_info_t in = w->info;
    field_t f[NFIELDS];
    info_fields(&in, f);
    const model_dims_t *md = &in.dims;
    const int64_t nparams = model_layout(md, NULL, NULL);
    const int64_t nstate = (int64_t)md->layers * in.streams * md->H;
    digest_t d;
    digest_init(&d);
    static const char tag[] = "charlm checkpoint";
    digest_update(&d, tag, sizeof tag);
    digest_u64(&d, (uint64_t)version);
    for (int i = 0; i < NFIELDS; i++) {
        if (f[i].since > version) continue;
        uint64_t v;
        if (f[i].f64) memcpy(&v, f[i].f64, sizeof v);
        else v = (uint64_t)(f[i].i64 ? *f[i].i64 : *f[i].i32);
        digest_u64(&d, v);
    }
    const uint64_t ids[] = {(uint64_t)md->cell, (uint64_t)in.optim, in.run_id[0], in.run_id[1],
                            in.train_fp, in.val_fp, strlen(w->config), (uint64_t)md->V};
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) digest_u64(&d, ids[i]);
    /* the options of the architecture, only when one is on: older files' digests stay valid */
    if (md->tie || md->ln) digest_u64(&d, (uint64_t)md->tie | (uint64_t)md->ln << 1);
    digest_update(&d, w->config, strlen(w->config));
    digest_update(&d, w->vocab->cps, sizeof(uint32_t) * (size_t)md->V);
    digest_update(&d, w->params, sizeof(float) * (size_t)nparams);
    digest_u64(&d, (uint64_t)w->nmoments);
    for (int i = 0; i < w->nmoments; i++)
        digest_update(&d, w->moments[i], sizeof(float) * (size_t)nparams);
    if (version >= 4) {
        digest_u64(&d, w->ema != NULL);
        if (w->ema) digest_update(&d, w->ema, sizeof(float) * (size_t)nparams);
    }
    digest_update(&d, w->h, sizeof(float) * (size_t)nstate);
    digest_u64(&d, w->c != NULL);
    if (w->c) digest_update(&d, w->c, sizeof(float) * (size_t)nstate);
    digest_u64(&d, (uint64_t)w->n_train);
    digest_update(&d, w->train_hist, sizeof(double) * 3 * (size_t)w->n_train);
    digest_u64(&d, (uint64_t)w->n_val);
    digest_update(&d, w->val_hist, sizeof(double) * 2 * (size_t)w->n_val);
    return digest_final(&d);
}

/* The run id as 32 hex digits (out: 33 bytes). */
static void run_id_hex(char *out, const uint64_t id[2]) {
    digest_hex(out, id[0]);
    digest_hex(out + 16, id[1]);
}

/* The name of moment buffer i of kind k in a file of format `version`. */
static const char *moment_name(int version, optim_kind_t k, int i) {
    static const char *const v1[OPTIM_MAX_MOMENTS] = {"m", "v"};
    const char *name = optim_moment_name(k, i);
    return version == 1 && name ? v1[i] : name;
}

/* ---- writing ------------------------------------------------------------------------------ */

static int write_fields(hid_t loc, const char *group, const field_t *f) {
    int rc = CHARLM_OK;
    for (int i = 0; i < NFIELDS && !rc; i++) {
        if (strcmp(f[i].group, group)) continue;
        rc = f[i].f64 ? h5io_attr_write_f64(loc, f[i].name, *f[i].f64)
                      : h5io_attr_write_i64(loc, f[i].name, f[i].i64 ? *f[i].i64 : *f[i].i32);
    }
    return rc;
}

/* Creates group `name` of f with the string attribute key = value and its numeric fields. */
static int write_group(hid_t f, const char *name, const char *key, const char *value,
                       const field_t *fields) {
    hid_t g = h5io_group_create(f, name);
    if (g < 0) return CHARLM_EINPUT;
    int rc = h5io_attr_write_str(g, key, value);
    if (!rc) rc = write_fields(g, name, fields);
    h5io_object_close(g);
    return rc;
}

/* The architecture's options among the /model attributes, written only when on (an older file
 * has none: they are off). */
typedef struct {
    const char *name;
    int *value;
} model_flag_t;

static int model_flags(model_dims_t *md, model_flag_t out[2]) {
    out[0] = (model_flag_t){"tie", &md->tie};
    out[1] = (model_flag_t){"layer_norm", &md->ln};
    return 2;
}

static int write_model_flags(hid_t f, model_dims_t md) {
    model_flag_t fl[2];
    int n = model_flags(&md, fl), rc = CHARLM_OK;
    hid_t g;
    if (h5io_object_open(f, "model", &g) != H5IO_OK) return CHARLM_EINPUT;
    for (int i = 0; i < n && !rc; i++)
        if (*fl[i].value) rc = h5io_attr_write_i64(g, fl[i].name, *fl[i].value);
    h5io_object_close(g);
    return rc;
}

/* Writes the tensors of buf (parameter layout) into group `group` of f. */
static int write_tensors(hid_t f, const char *group, const model_tensor_t *t, int n,
                         const float *buf) {
    char name[128];
    int rc = CHARLM_OK;
    for (int i = 0; i < n && !rc; i++) {
        hsize_t dims[2] = {(hsize_t)t[i].shape[0], (hsize_t)t[i].shape[1]};
        snprintf(name, sizeof name, "%.60s/%.47s", group, t[i].name);
        rc = h5io_dset_write(f, name, H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, t[i].ndim, dims,
                             CHUNK_ELEMS, buf + t[i].offset);
    }
    return rc;
}

static int write_contents(hid_t f, const ckpt_write_t *w) {
    ckpt_info_t in = w->info; /* the fields point into this copy */
    field_t fields[NFIELDS];
    info_fields(&in, fields);
    const model_dims_t *md = &in.dims;
    CHARLM_CHECK(w->vocab->size == md->V && w->nmoments >= 0 &&
                 w->nmoments <= OPTIM_MAX_MOMENTS && !w->c == !cell_ops(md->cell)->has_c);
    model_tensor_t t[MODEL_MAX_TENSORS];
    int nt = 0;
    model_layout(md, t, &nt);

    char v3[NV3][33];
    run_id_hex(v3[0], in.run_id);
    digest_hex(v3[1], in.train_fp);
    digest_hex(v3[2], in.val_fp);
    digest_hex(v3[3], content_digest(w, CKPT_FORMAT_VERSION));
    int rc = h5io_attr_write_str(f, "format", "charlm");
    if (!rc) rc = h5io_attr_write_i64(f, "format_version", CKPT_FORMAT_VERSION);
    if (!rc) rc = h5io_attr_write_str(f, "charlm_version", CHARLM_VERSION);
    if (!rc) rc = h5io_attr_write_str(f, "config", w->config);
    for (int i = 0; i < NV3 && !rc; i++) rc = h5io_attr_write_str(f, v3_attrs[i], v3[i]);
    if (!rc) rc = write_fields(f, "", fields);
    hsize_t dv[1] = {(hsize_t)md->V};
    if (!rc) rc = h5io_dset_write(f, "vocab", H5T_NATIVE_UINT32, H5T_STD_U32LE, 1, dv,
                                  CHUNK_ELEMS, w->vocab->cps);

    if (!rc) rc = write_group(f, "model", "cell", cell_kind_name(md->cell), fields);
    if (!rc) rc = write_model_flags(f, *md);
    if (!rc) rc = write_tensors(f, "model", t, nt, w->params);
    if (!rc) rc = write_group(f, "optimizer", "kind", optim_kind_name(in.optim), fields);
    for (int i = 0; i < w->nmoments && !rc; i++) {
        const char *name = optim_moment_name(in.optim, i);
        CHARLM_CHECK(name != NULL);
        char group[64];
        snprintf(group, sizeof group, "optimizer/%s", name);
        rc = write_tensors(f, group, t, nt, w->moments[i]);
    }
    if (!rc && w->ema) rc = write_tensors(f, "ema", t, nt, w->ema);

    hsize_t ds[3] = {(hsize_t)md->layers, (hsize_t)in.streams, (hsize_t)md->H};
    if (!rc) rc = h5io_dset_write(f, "state/h", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 3, ds,
                                  CHUNK_ELEMS, w->h);
    if (!rc && w->c)
        rc = h5io_dset_write(f, "state/c", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 3, ds, CHUNK_ELEMS,
                             w->c);
    hsize_t one[1] = {1};
    if (!rc) rc = h5io_dset_write(f, "state/cursor", H5T_NATIVE_INT64, H5T_STD_I64LE, 1, one,
                                  CHUNK_ELEMS, &in.cursor);
    hid_t cur = -1;
    if (!rc && h5io_object_open(f, "state/cursor", &cur) != H5IO_OK)
        rc = err_set(CHARLM_EINPUT, "cannot write dataset 'state/cursor': %s", h5io_cause());
    if (!rc) rc = h5io_attr_write_i64(cur, "epoch", in.epoch);
    h5io_object_close(cur);

    hsize_t dt[2] = {(hsize_t)w->n_train, 3}, dvh[2] = {(hsize_t)w->n_val, 2};
    if (!rc) rc = h5io_dset_write(f, "metrics/train", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 2, dt,
                                  CHUNK_ELEMS, w->train_hist);
    if (!rc) rc = h5io_dset_write(f, "metrics/val", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 2, dvh,
                                  CHUNK_ELEMS, w->val_hist);
    return rc;
}

/* An upper bound on the size of w's file: the raw bytes of every dataset, plus HDF5's metadata:
 * about 3 KiB per chunked dataset (object header, chunk index node; 4 KiB allowed), a checksum and
 * index entry per chunk, and the superblock, groups and attributes (64 KiB allowed). Tight
 * enough that a disk with room for the file is not refused. */
static off_t size_bound(const ckpt_write_t *w) {
    const model_dims_t *md = &w->info.dims;
    int ntensors = 0;
    int64_t nparams = model_layout(md, NULL, &ntensors);
    const int copies = 1 + w->nmoments + (w->ema != NULL);
    double data = 4.0 * (double)nparams * copies +
                  4.0 * (w->c ? 2 : 1) * md->layers * w->info.streams * md->H +
                  8.0 * (3.0 * (double)w->n_train + 2.0 * (double)w->n_val) +
                  4.0 * md->V + 8.0 + (double)strlen(w->config);
    double datasets = ntensors * copies + 6;
    double chunks = datasets + data / (4.0 * CHUNK_ELEMS);
    return (off_t)(data + 4096.0 * datasets + 64.0 * chunks + 65536.0);
}

/* Records the failure recorded by h5io ("cannot write dataset 'X' of PATH.tmp: CAUSE") as the
 * checkpoint's one line: "cannot write checkpoint PATH: dataset 'X' of PATH.tmp: CAUSE". */
static int write_failed(const char *path) {
    static const char prefix[] = "cannot write ";
    char inner[1024];
    const char *m = err_message();
    if (!strncmp(m, prefix, sizeof prefix - 1)) m += sizeof prefix - 1;
    snprintf(inner, sizeof inner, "%s", *m ? m : "HDF5 error");
    err_clear();
    return err_set(CHARLM_EINPUT, "cannot write checkpoint %s: %s", path, inner);
}

int ckpt_write(const char *path, const ckpt_write_t *w) {
    size_t n = strlen(path) + sizeof ".tmp";
    char *tmp = xcalloc(n, 1), *dir = xcalloc(n, 1);
    snprintf(tmp, n, "%s.tmp", path);
    fileio_dir_of(dir, n, path);
    int rc = CHARLM_OK, e = fileio_make_dirs(dir);
    if (e) {
        rc = err_set(CHARLM_EINPUT, "cannot create checkpoint directory %s: %s", dir,
                     strerror(e));
    } else if ((e = fileio_reserve(tmp, size_bound(w)))) {
        /* HDF5 writes the file itself (no copy of the model in memory); a full disk or a
         * file-size limit is found before it starts, since HDF5 1.10 does not survive a failed
         * write */
        rc = err_set(CHARLM_EINPUT, "cannot write checkpoint %s: %s", path, strerror(e));
    } else {
        hid_t f = h5io_create(tmp);
        rc = f < 0 ? CHARLM_EINPUT : write_contents(f, w);
        if (f >= 0 && h5io_close(f) && !rc) rc = CHARLM_EINPUT;
        if (rc) rc = write_failed(path);
        else if ((e = fileio_commit(tmp, path)))
            rc = err_set(CHARLM_EINPUT, "cannot write checkpoint %s: %s", path, strerror(e));
    }
    if (rc) remove(tmp);
    free(tmp);
    free(dir);
    return rc;
}

/* ---- reading ------------------------------------------------------------------------------ */

typedef struct {
    const char *path;
    hid_t f;
    int version; /* format_version of the file, once read_info has checked it */
    double size; /* bytes of the file: no dataset holds more values than that (none compressed) */
} reader_t;

static int bad(const reader_t *r, const char *what) {
    return err_set(CHARLM_EINPUT, "%s: %s", r->path, what);
}

/* CHARLM_OK for H5IO_OK, else records "PATH: KIND 'NAME' is missing" (has the wrong shape, is
 * corrupt, ...) and returns CHARLM_EINPUT. */
static int check(const reader_t *r, h5io_status_t st, const char *kind, const char *name) {
    if (st == H5IO_OK) return CHARLM_OK;
    const char *why = h5io_status_text(st);
    if (st == H5IO_TYPE)
        why = strcmp(kind, "dataset") ? "has the wrong type" : "has the wrong shape";
    return err_set(CHARLM_EINPUT, "%s: %s '%s' %s", r->path, kind, name, why);
}

/* Whether loc has attribute `name`, and the bytes its type and extent declare (0 when it cannot
 * be opened: the reader then says why). Static helpers on HDF5 itself: h5io's string reader
 * allocates what the type declares, and the metadata that declares it is outside fletcher32. */
static int has_attr(hid_t loc, const char *name) { return H5Aexists(loc, name) > 0; }

static double attr_bytes(hid_t loc, const char *name) {
    hid_t a = has_attr(loc, name) ? H5Aopen(loc, name, H5P_DEFAULT) : -1;
    if (a < 0) return 0;
    double n = (double)H5Aget_storage_size(a);
    H5Aclose(a);
    return n;
}

static int get_str(const reader_t *r, hid_t loc, const char *name, char **out) {
    if (attr_bytes(loc, name) > r->size)
        return err_set(CHARLM_EINPUT, "%s: attribute '%s' declares more bytes than the file has "
                       "(corrupt metadata)", r->path, name);
    return check(r, h5io_attr_read_str(loc, name, out), "attribute", name);
}

static int get_i64(const reader_t *r, hid_t loc, const char *name, int64_t *v) {
    return check(r, h5io_attr_read_i64(loc, name, v), "attribute", name);
}

/* Reads the root attribute `name` of `words` x 16 hex digits into v[words]. */
static int get_hex(const reader_t *r, const char *name, uint64_t *v, int words) {
    char *s = NULL;
    int rc = get_str(r, r->f, name, &s);
    for (int i = 0; i < words && !rc; i++) {
        char word[17] = "";
        if (strlen(s) == 16 * (size_t)words) memcpy(word, s + 16 * i, 16);
        if (digest_parse_hex(&v[i], word))
            rc = err_set(CHARLM_EINPUT, "%s: attribute '%s' = \"%.80s\" is not %d hex digits",
                         r->path, name, s, 16 * words);
    }
    free(s);
    return rc;
}

/* Checks that dataset `name` has exactly the shape dims (rank of them), and that its values, of
 * elem bytes each, fit in the file: before a buffer is allocated for it, so that damaged
 * metadata (an attribute or a dataspace) is refused instead of asking for any amount of memory. */
static int check_shape(const reader_t *r, const char *name, int rank, const hsize_t *dims,
                       size_t elem) {
    int got_rank = 0;
    hsize_t got[3] = {0, 0, 0};
    h5io_status_t st = h5io_dset_shape(r->f, name, &got_rank, got);
    if (st == H5IO_OK && got_rank != rank) st = H5IO_TYPE;
    double bytes = (double)elem;
    for (int i = 0; i < rank && st == H5IO_OK; i++) {
        if (got[i] != dims[i]) st = H5IO_TYPE;
        bytes *= (double)dims[i];
    }
    if (st == H5IO_OK && bytes > r->size)
        return err_set(CHARLM_EINPUT, "%s: dataset '%s' holds %.0f bytes, more than the file's "
                       "%.0f (corrupt metadata)", r->path, name, bytes, r->size);
    return check(r, st, "dataset", name);
}

/* Reads dataset `name` of shape dims into data, allocated by the caller once check_shape said
 * the shape is right. */
static int get_dset(const reader_t *r, const char *name, hid_t memtype, int rank,
                    const hsize_t *dims, void *data) {
    return check(r, h5io_dset_read(r->f, name, memtype, rank, dims, data), "dataset", name);
}

static int read_fields(const reader_t *r, hid_t loc, const char *group, const field_t *f) {
    int rc = CHARLM_OK;
    for (int i = 0; i < NFIELDS && !rc; i++) {
        if (strcmp(f[i].group, group) || f[i].since > r->version) continue;
        const char *name = f[i].name;
        int64_t x = 0;
        if (f[i].f64) {
            rc = check(r, h5io_attr_read_f64(loc, name, f[i].f64), "attribute", name);
        } else if (f[i].i64) {
            rc = get_i64(r, loc, name, f[i].i64);
        } else if (!(rc = get_i64(r, loc, name, &x))) {
            if (x < 0 || x > INT32_MAX)
                rc = err_set(CHARLM_EINPUT, "%s: attribute '%s' = %" PRId64 " is out of range",
                             r->path, name, x);
            *f[i].i32 = (int)x;
        }
    }
    return rc;
}

/* Opens group `name`, reads its numeric fields and its string attribute `key` as a kind
 * (value_of returns -1 for a name that is none). */
static int read_group(const reader_t *r, const char *name, const char *key,
                      int (*value_of)(const char *), int *kind, const field_t *fields) {
    hid_t g;
    int rc = check(r, h5io_object_open(r->f, name, &g), "group", name);
    if (rc) return rc;
    char *s = NULL;
    rc = get_str(r, g, key, &s);
    if (!rc) rc = read_fields(r, g, name, fields);
    *kind = s ? value_of(s) : -1;
    if (!rc && *kind < 0)
        rc = err_set(CHARLM_EINPUT, "%s: attribute '%s' of group '%s' = \"%s\" is unknown",
                     r->path, key, name, s);
    free(s);
    h5io_object_close(g);
    return rc;
}

/* The options of the architecture (write_model_flags): 0 or 1 each, 0 when absent. */
static int read_model_flags(const reader_t *r, model_dims_t *md) {
    model_flag_t fl[2];
    int n = model_flags(md, fl);
    hid_t g = -1;
    int rc = check(r, h5io_object_open(r->f, "model", &g), "group", "model");
    for (int i = 0; i < n && !rc; i++) {
        int64_t v = 0;
        if (has_attr(g, fl[i].name)) rc = get_i64(r, g, fl[i].name, &v);
        if (!rc && v != 0 && v != 1)
            rc = err_set(CHARLM_EINPUT, "%s: attribute '%s' of group 'model' = %" PRId64
                         " is neither 0 nor 1", r->path, fl[i].name, v);
        *fl[i].value = (int)v;
    }
    if (g >= 0) h5io_object_close(g);
    return rc;
}

/* The identity and fingerprints of format 3; a file of an earlier format must have none of the
 * attributes format 3 adds. */
static int read_identity(const reader_t *r, ckpt_info_t *in) {
    if (r->version < 3) {
        for (int i = 0; i < NV3; i++)
            if (has_attr(r->f, v3_attrs[i]))
                return err_set(CHARLM_EINPUT, "%s: format_version %d, yet it has attribute '%s' "
                               "of format 3: corrupt", r->path, r->version, v3_attrs[i]);
        return CHARLM_OK;
    }
    int rc = get_hex(r, "run_id", in->run_id, 2);
    if (!rc) rc = get_hex(r, "train_fingerprint", &in->train_fp, 1);
    if (!rc) rc = get_hex(r, "val_fingerprint", &in->val_fp, 1);
    return rc;
}

/* Reads the attributes into ck->info and ck->config, and r->version. */
static int read_info(reader_t *r, ckpt_t *ck) {
    ckpt_info_t *in = &ck->info;
    field_t fields[NFIELDS];
    info_fields(in, fields);
    char *format = NULL;
    int rc = get_str(r, r->f, "format", &format);
    if (!rc && strcmp(format, "charlm")) rc = bad(r, "not a charlm checkpoint (format attribute)");
    free(format);
    int64_t version = 0;
    if (!rc) rc = get_i64(r, r->f, "format_version", &version);
    if (!rc && (version < 1 || version > CKPT_FORMAT_VERSION))
        rc = err_set(CHARLM_EINPUT,
                     "%s: format_version %" PRId64 " is not supported (this charlm reads 1 to %d)",
                     r->path, version, CKPT_FORMAT_VERSION);
    r->version = ck->version = (int)version;
    if (version < 4) in->plateau = optim_plateau_start(); /* what format 4 reads otherwise */
    if (!rc) rc = get_str(r, r->f, "config", &ck->config);
    if (!rc) rc = read_identity(r, in);
    if (!rc) rc = read_fields(r, r->f, "", fields);
    int cell = -1, kind = -1;
    if (!rc) rc = read_group(r, "model", "cell", cell_kind_value, &cell, fields);
    if (!rc) rc = read_group(r, "optimizer", "kind", optim_kind_value, &kind, fields);
    model_dims_t *md = &in->dims;
    if (!rc) rc = read_model_flags(r, md);
    if (rc) return rc;
    if (md->layers < 1 || md->layers > MODEL_MAX_LAYERS || md->H < 1 || md->E < 1 ||
        md->V < 1 || in->streams < 1 || (md->tie && md->E != md->H))
        return bad(r, "model or stream sizes out of range");
    md->cell = (cell_kind_t)cell;
    md->G = cell_ops(md->cell)->gates;
    in->optim = (optim_kind_t)kind;
    /* no tensor or state may need more floats than the file has bytes: that also keeps
     * model_layout's products from overflowing */
    const double V = md->V, E = md->E, H = md->H, G = md->G;
    const double most = fmax(fmax(V * E, V * H), fmax(G * H * fmax(E, H), md->layers * H *
                                                                            (double)in->streams));
    if (4.0 * most > r->size)
        return err_set(CHARLM_EINPUT, "%s: the sizes of the attributes (vocab_size %d, embed %d, "
                       "hidden %d, layers %d, streams %d) need more data than the file's %.0f "
                       "bytes (corrupt metadata)", r->path, md->V, md->E, md->H, md->layers,
                       in->streams, r->size);
    return CHARLM_OK;
}

/* Reads the tensors of group `group` into a new buffer *out of the parameter layout (nparams),
 * once every tensor's shape has been checked. */
static int read_tensors(const reader_t *r, const char *group, const model_tensor_t *t, int n,
                        int64_t nparams, float **out) {
    char name[128];
    hsize_t dims[MODEL_MAX_TENSORS][2];
    int rc = CHARLM_OK;
    for (int pass = 0; pass < 2 && !rc; pass++) {
        if (pass == 1) *out = xcalloc((size_t)nparams, sizeof(float));
        for (int i = 0; i < n && !rc; i++) {
            dims[i][0] = (hsize_t)t[i].shape[0], dims[i][1] = (hsize_t)t[i].shape[1];
            snprintf(name, sizeof name, "%.60s/%.47s", group, t[i].name);
            rc = pass == 0 ? check_shape(r, name, t[i].ndim, dims[i], sizeof(float))
                           : get_dset(r, name, H5T_NATIVE_FLOAT, t[i].ndim, dims[i],
                                      *out + t[i].offset);
        }
    }
    return rc;
}

/* Reads dataset `name`, which must have the shape dims (rank of them; elem bytes a value), into
 * a new buffer *out, once the shape is checked. */
static int read_array(const reader_t *r, const char *name, hid_t memtype, size_t elem, int rank,
                      const hsize_t *dims, void **out) {
    int rc = check_shape(r, name, rank, dims, elem);
    if (rc) return rc;
    size_t n = 1;
    for (int i = 0; i < rank; i++) n *= (size_t)dims[i];
    *out = xcalloc(n, elem);
    return get_dset(r, name, memtype, rank, dims, *out);
}

/* Reads the (n, cols) history `name`, of any number of rows, into a new buffer *out. */
static int read_history(const reader_t *r, const char *name, hsize_t cols, double **out,
                        int64_t *n) {
    int rank = 0;
    hsize_t dims[3] = {0, 0, 0};
    h5io_status_t st = h5io_dset_shape(r->f, name, &rank, dims);
    if (st == H5IO_OK && (rank != 2 || dims[1] != cols)) st = H5IO_TYPE;
    if (st != H5IO_OK) return check(r, st, "dataset", name);
    *n = (int64_t)dims[0];
    return read_array(r, name, H5T_NATIVE_DOUBLE, sizeof(double), 2, dims, (void **)out);
}

/* The digest of what ck holds (content_digest over a view of it). */
static uint64_t read_digest(const ckpt_t *ck) {
    ckpt_write_t view = {.info = ck->info, .config = ck->config, .vocab = &ck->vocab,
                         .params = ck->params, .nmoments = ck->nmoments, .ema = ck->ema,
                         .h = ck->h, .c = ck->c,
                         .train_hist = ck->train_hist, .val_hist = ck->val_hist,
                         .n_train = ck->n_train, .n_val = ck->n_val};
    memcpy(view.moments, ck->moments, sizeof view.moments);
    return content_digest(&view, ck->version);
}

static int read_all(reader_t *r, ckpt_t *ck) {
    int rc = read_info(r, ck);
    if (rc) return rc;
    const ckpt_info_t *in = &ck->info;
    const model_dims_t *md = &in->dims;
    model_tensor_t t[MODEL_MAX_TENSORS];
    int nt = 0;
    int64_t nparams = model_layout(md, t, &nt);
    uint32_t *cps = NULL;
    hsize_t dv[1] = {(hsize_t)md->V};
    rc = read_array(r, "vocab", H5T_NATIVE_UINT32, sizeof(uint32_t), 1, dv, (void **)&cps);
    if (!rc && vocab_from_list(&ck->vocab, cps, md->V)) {
        err_clear();
        rc = bad(r, "dataset 'vocab' is not a sorted list of code points");
    }
    free(cps);
    if (rc || (rc = read_tensors(r, "model", t, nt, nparams, &ck->params))) return rc;
    /* the buffers the file has: sgd without momentum keeps none */
    const char *name;
    for (int i = 0; !rc && (name = moment_name(r->version, in->optim, i)); i++) {
        char group[64];
        snprintf(group, sizeof group, "optimizer/%s", name);
        hid_t g;
        if (h5io_object_open(r->f, group, &g) == H5IO_MISSING) break;
        h5io_object_close(g);
        ck->nmoments = i + 1;
        rc = read_tensors(r, group, t, nt, nparams, &ck->moments[i]);
    }
    hid_t g;
    if (!rc && r->version >= 4 && h5io_object_open(r->f, "ema", &g) != H5IO_MISSING) {
        h5io_object_close(g);
        rc = read_tensors(r, "ema", t, nt, nparams, &ck->ema);
    }
    if (rc) return rc;
    hsize_t ds[3] = {(hsize_t)md->layers, (hsize_t)in->streams, (hsize_t)md->H};
    if ((rc = read_array(r, "state/h", H5T_NATIVE_FLOAT, sizeof(float), 3, ds, (void **)&ck->h)))
        return rc;
    if (cell_ops(md->cell)->has_c &&
        (rc = read_array(r, "state/c", H5T_NATIVE_FLOAT, sizeof(float), 3, ds, (void **)&ck->c)))
        return rc;
    int64_t cursor = -1, epoch = -1;
    hsize_t one[1] = {1};
    hid_t cur;
    if ((rc = check_shape(r, "state/cursor", 1, one, sizeof cursor)) ||
        (rc = get_dset(r, "state/cursor", H5T_NATIVE_INT64, 1, one, &cursor)))
        return rc;
    if ((rc = check(r, h5io_object_open(r->f, "state/cursor", &cur), "dataset", "state/cursor")))
        return rc;
    rc = get_i64(r, cur, "epoch", &epoch);
    h5io_object_close(cur);
    if (rc) return rc;
    if (cursor != in->cursor || epoch != in->epoch)
        return bad(r, "dataset 'state/cursor' disagrees with the cursor or epoch attribute");
    if ((rc = read_history(r, "metrics/train", 3, &ck->train_hist, &ck->n_train)) ||
        (rc = read_history(r, "metrics/val", 2, &ck->val_hist, &ck->n_val)))
        return rc;
    uint64_t stored = 0, got = 0;
    if (r->version >= 3 && !(rc = get_hex(r, "digest", &stored, 1)) &&
        (got = read_digest(ck)) != stored) {
        char want[17], have[17];
        digest_hex(want, stored);
        digest_hex(have, got);
        rc = err_set(CHARLM_EINPUT, "%s: what was read does not match the digest attribute (%s "
                     "stored, %s read): the file is corrupt", r->path, want, have);
    }
    return rc;
}

/* Opens path read-only, with one clear message for a missing file or one that is not HDF5. */
static int reader_open(reader_t *r, const char *path) {
    const char *why = "";
    struct stat st;
    *r = (reader_t){.path = path, .f = h5io_open(path, &why),
                    .size = stat(path, &st) == 0 ? (double)st.st_size : 0};
    return r->f < 0 ? err_set(CHARLM_EINPUT, "%s: cannot open checkpoint: %s", path, why)
                    : CHARLM_OK;
}

/* Closes r's file; a failure there is an error of the reading only when nothing else was. */
static int reader_close(reader_t *r, int rc) {
    if (r->f < 0) return rc;
    if (h5io_close(r->f) && !rc) {
        err_clear(); /* h5io_close words it as a failed write */
        rc = bad(r, "error closing the file");
    }
    r->f = -1;
    return rc;
}

int ckpt_read_header(ckpt_t *ck, const char *path, int verify) {
    memset(ck, 0, sizeof *ck);
    reader_t r;
    int rc = reader_open(&r, path);
    if (!rc) rc = verify ? read_all(&r, ck) : read_info(&r, ck);
    rc = reader_close(&r, rc);
    if (rc) ckpt_free(ck);
    return rc;
}

int ckpt_read(ckpt_t *ck, const char *path) { return ckpt_read_header(ck, path, 1); }

void ckpt_free(ckpt_t *ck) {
    free(ck->config);
    vocab_free(&ck->vocab);
    free(ck->params);
    for (int i = 0; i < OPTIM_MAX_MOMENTS; i++) free(ck->moments[i]);
    free(ck->ema);
    free(ck->h), free(ck->c);
    free(ck->train_hist), free(ck->val_hist);
    memset(ck, 0, sizeof *ck);
}

void ckpt_model(model_t *m, const ckpt_t *ck) {
    model_init(m, &ck->info.dims, 0);
    memcpy(m->params, ck->ema ? ck->ema : ck->params, sizeof(float) * (size_t)m->nparams);
}

void ckpt_drop_ema(ckpt_t *ck) {
    free(ck->ema);
    ck->ema = NULL;
}

/* ---- the run directory -------------------------------------------------------------------- */

void ckpt_path(char *out, size_t n, const char *run_dir, int64_t step) {
    snprintf(out, n, "%s/checkpoints/ckpt-%08" PRId64 ".h5", run_dir, step);
}

int64_t *ckpt_steps(const char *run_dir, int *n) {
    char dir[RUN_PATH];
    snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    size_t cap = 0;
    int64_t *steps = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long s;
        char tail[8];
        if (sscanf(e->d_name, "ckpt-%lld.h%7s", &s, tail) != 2 || strcmp(tail, "5") || s < 0)
            continue;
        steps = xgrow(steps, &cap, (size_t)*n + 1, sizeof(int64_t));
        steps[(*n)++] = s;
    }
    closedir(d);
    for (int i = 1; i < *n; i++) /* insertion sort, newest first: a handful of files */
        for (int j = i; j > 0 && steps[j] > steps[j - 1]; j--) {
            int64_t x = steps[j];
            steps[j] = steps[j - 1];
            steps[j - 1] = x;
        }
    return steps;
}

int ckpt_find_latest(ckpt_t *ck, char *out, size_t n, const char *run_dir, ckpt_accept_t accept,
                     void *ctx) {
    int count = 0, found = 0, nrefused = 0;
    memset(ck, 0, sizeof *ck);
    int64_t *steps = ckpt_steps(run_dir, &count);
    /* the refusals are told only when an older checkpoint is taken: when none is, the newest
     * refusal is the error, and the others would repeat it */
    char **refused = xcalloc((size_t)count + 1, sizeof(char *));
    for (int i = 0; i < count && !found; i++) {
        ckpt_path(out, n, run_dir, steps[i]);
        if (ckpt_read(ck, out) != CHARLM_OK) {
            fprintf(stderr, "charlm: warning: skipping %s\n", err_message());
        } else if (accept && accept(ck, out, ctx) != CHARLM_OK) {
            refused[nrefused++] = xstrdup(err_message());
            ckpt_free(ck);
        } else {
            found = 1;
        }
        if (!found) err_clear();
    }
    for (int i = 0; i < nrefused; i++) {
        if (found) fprintf(stderr, "charlm: warning: skipping %s\n", refused[i]);
        else if (i == 0) err_set(CHARLM_EINPUT, "%s", refused[0]);
        free(refused[i]);
    }
    free(refused);
    free(steps);
    return found ? 1 : nrefused ? -1 : 0;
}

int ckpt_count(const char *run_dir) {
    int count = 0;
    free(ckpt_steps(run_dir, &count));
    return count;
}

void ckpt_rotate(const char *run_dir, int keep) {
    int count = 0;
    int64_t *steps = ckpt_steps(run_dir, &count);
    char path[RUN_PATH];
    for (int i = keep; i < count; i++) {
        ckpt_path(path, sizeof path, run_dir, steps[i]);
        remove(path);
    }
    free(steps);
}

/* Copies the file src to dst (created or truncated). Returns 0 or an errno (dst then removed). */
static int copy_file(const char *src, const char *dst) {
    FILE *in = fopen(src, "rb"), *out = in ? fopen(dst, "wb") : NULL;
    char buf[1 << 16];
    size_t k;
    int e = in && out ? 0 : errno;
    while (!e && (k = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, k, out) != k) e = errno ? errno : EIO;
    if (!e && ferror(in)) e = errno ? errno : EIO;
    if (out && fclose(out) != 0 && !e) e = errno;
    if (in) fclose(in);
    if (e) remove(dst);
    return e;
}

int ckpt_mark_best(const char *path, const char *run_dir) {
    char best[RUN_PATH], tmp[RUN_PATH + 8];
    snprintf(best, sizeof best, "%s/checkpoints/best.h5", run_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", best);
    remove(tmp);
    int e = link(path, tmp) != 0 ? copy_file(path, tmp) : 0; /* no hard links here: a copy */
    if (!e) e = fileio_commit(tmp, best);
    return e ? err_set(CHARLM_EINPUT, "cannot write %s: %s", best, strerror(e)) : CHARLM_OK;
}

/* ---- inspect ------------------------------------------------------------------------------ */

static void print_loss(FILE *out, const char *what, double v) {
    if (isnan(v)) fprintf(out, "%-18s none\n", what);
    else fprintf(out, "%-18s %.6f nats/char (%.6f bits/char)\n", what, v, v / log(2.0));
}

int ckpt_inspect(FILE *out, const char *path, int verify) {
    ckpt_t ck;
    int rc = ckpt_read_header(&ck, path, verify);
    if (!rc) {
        const ckpt_info_t *in = &ck.info;
        const model_dims_t *md = &in->dims;
        fprintf(out, "%-18s %s\n", "file", path);
        fprintf(out, "%-18s %d\n", "format_version", ck.version);
        fprintf(out, "%-18s %" PRId64 "\n", "step", in->step);
        fprintf(out, "%-18s %" PRId64 " (window %" PRId64 " of the epoch)\n", "epoch", in->epoch,
                in->cursor);
        fprintf(out, "%-18s %" PRId64 "\n", "tokens_seen", in->tokens_seen);
        fprintf(out, "%-18s %s, %d layers x %d hidden, embed %d, vocabulary %d%s%s\n", "model",
                cell_kind_name(md->cell), md->layers, md->H, md->E, md->V,
                md->tie ? ", tied" : "", md->ln ? ", layer norm" : "");
        fprintf(out, "%-18s %" PRId64 "\n", "parameters", model_layout(md, NULL, NULL));
        fprintf(out, "%-18s %s, step %" PRId64 ", lr %.6g\n", "optimizer",
                optim_kind_name(in->optim), in->optim_step, in->lr);
        fprintf(out, "%-18s %d (written by %d ranks), window %d\n", "streams", in->streams,
                in->world_size, in->seq);
        if (ck.version >= 3) {
            char id[33], tfp[17], vfp[17];
            run_id_hex(id, in->run_id);
            digest_hex(tfp, in->train_fp);
            digest_hex(vfp, in->val_fp);
            fprintf(out, "%-18s %s\n", "run id", id);
            fprintf(out, "%-18s training %s, validation %s\n", "data fingerprints", tfp,
                    in->val_fp ? vfp : "none");
        }
        if (ck.version >= 4)
            fprintf(out, "%-18s %.1f s of training; lr scale %.6g (plateau: %" PRId64 " bad, %"
                    PRId64 " stale)%s\n", "schedule", in->elapsed_s, in->plateau.scale,
                    in->plateau.bad, in->plateau.stale,
                    verify ? (ck.ema ? "; moving average of the weights" : "") : "");
        print_loss(out, "train loss", in->last_train_loss);
        print_loss(out, "validation loss", in->last_val_loss);
        print_loss(out, "best validation", in->best_val_loss);
        if (verify)
            fprintf(out, "%-18s every dataset read, checksums good%s\n", "verify",
                    ck.version >= 3 ? ", digest of the contents good" : "");
        fprintf(out, "config:\n%s", ck.config);
    }
    ckpt_free(&ck);
    return rc;
}
