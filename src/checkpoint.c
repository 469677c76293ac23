#include "charlm/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "charlm/err.h"
#include "charlm/fileio.h"

/* at most this many elements per chunk: HDF5 holds a chunk and its checksummed copy while it
 * writes, so the chunk size is what a checkpoint adds to peak memory */
#define CHUNK_ELEMS (1 << 18)
#define MAX_PATH 4200

/* ---- writing ------------------------------------------------------------------------------ */

static int attr_write(hid_t loc, const char *name, hid_t type, const void *v) {
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, type, s, H5P_DEFAULT, H5P_DEFAULT);
    int ok = a >= 0 && H5Awrite(a, type, v) >= 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(s);
    return ok ? 0 : -1;
}

static int attr_i64(hid_t loc, const char *name, int64_t v) {
    return attr_write(loc, name, H5T_NATIVE_INT64, &v);
}

static int attr_f64(hid_t loc, const char *name, double v) {
    return attr_write(loc, name, H5T_NATIVE_DOUBLE, &v);
}

static int attr_str(hid_t loc, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(v) + 1);
    int rc = attr_write(loc, name, t, v);
    H5Tclose(t);
    return rc;
}

/* Writes a chunked, fletcher32-checksummed dataset of `rank` dims (outermost dims shrunk until a
 * chunk holds at most CHUNK_ELEMS elements). */
static int dset_write(hid_t loc, const char *name, hid_t memtype, hid_t filetype, int rank,
                      const hsize_t *dims, const void *data) {
    hsize_t chunk[3], max[3];
    hsize_t elems = 1;
    for (int i = rank - 1; i >= 0; i--) {
        hsize_t room = CHUNK_ELEMS / elems;
        chunk[i] = dims[i] < room ? dims[i] : room;
        if (chunk[i] < 1) chunk[i] = 1;
        elems *= chunk[i];
        max[i] = i == 0 ? H5S_UNLIMITED : dims[i]; /* allows zero-row datasets (metrics) */
    }
    hid_t s = H5Screate_simple(rank, dims, max);
    hid_t p = H5Pcreate(H5P_DATASET_CREATE);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    int ok = H5Pset_chunk(p, rank, chunk) >= 0 && H5Pset_fletcher32(p) >= 0;
    hid_t d = ok ? H5Dcreate2(loc, name, filetype, s, lcpl, p, H5P_DEFAULT) : -1;
    ok = d >= 0;
    hsize_t n = 1;
    for (int i = 0; i < rank; i++) n *= dims[i];
    if (ok && n) ok = H5Dwrite(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
    if (d >= 0) H5Dclose(d);
    H5Pclose(lcpl);
    H5Pclose(p);
    H5Sclose(s);
    return ok ? 0 : -1;
}

static hid_t group_create(hid_t loc, const char *name) {
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t g = H5Gcreate2(loc, name, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    return g;
}

/* Writes the tensors of buf (parameter layout) into group `prefix` of f. */
static int write_tensors(hid_t f, const char *prefix, const model_tensor_t *tensors, int n,
                         const float *buf) {
    char name[128];
    for (int i = 0; i < n; i++) {
        const model_tensor_t *t = &tensors[i];
        hsize_t dims[2] = {(hsize_t)t->shape[0], (hsize_t)t->shape[1]};
        snprintf(name, sizeof name, "%.60s/%.47s", prefix, t->name);
        if (dset_write(f, name, H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, t->ndim, dims,
                       buf + t->offset) < 0)
            return -1;
    }
    return 0;
}

static int write_contents(hid_t f, const ckpt_write_t *w) {
    const ckpt_info_t *in = &w->info;
    const model_dims_t *md = &in->dims;
    model_tensor_t tensors[MODEL_MAX_TENSORS];
    int nt = 0;
    model_layout(md, tensors, &nt);
    if (attr_str(f, "format", "charlm") < 0 || attr_i64(f, "format_version", CKPT_FORMAT_VERSION) < 0 ||
        attr_str(f, "charlm_version", CHARLM_VERSION) < 0 || attr_i64(f, "step", in->step) < 0 ||
        attr_i64(f, "epoch", in->epoch) < 0 || attr_i64(f, "cursor", in->cursor) < 0 ||
        attr_i64(f, "tokens_seen", in->tokens_seen) < 0 ||
        attr_i64(f, "world_size", in->world_size) < 0 || attr_i64(f, "streams", in->streams) < 0 ||
        attr_i64(f, "seq", in->seq) < 0 || attr_i64(f, "train_chars", in->train_chars) < 0 ||
        attr_f64(f, "lr", in->lr) < 0 || attr_f64(f, "last_train_loss", in->last_train_loss) < 0 ||
        attr_f64(f, "last_val_loss", in->last_val_loss) < 0 ||
        attr_f64(f, "best_val_loss", in->best_val_loss) < 0 || attr_str(f, "config", w->config) < 0)
        return -1;
    hsize_t dv[1] = {(hsize_t)w->vocab->size};
    if (dset_write(f, "vocab", H5T_NATIVE_UINT32, H5T_STD_U32LE, 1, dv, w->vocab->cps) < 0)
        return -1;

    hid_t g = group_create(f, "model");
    int bad = g < 0 || attr_str(g, "cell", cell_kind_name(md->cell)) < 0 ||
              attr_i64(g, "layers", md->layers) < 0 || attr_i64(g, "hidden", md->H) < 0 ||
              attr_i64(g, "embed", md->E) < 0 || attr_i64(g, "vocab_size", md->V) < 0;
    if (g >= 0) H5Gclose(g);
    if (bad || write_tensors(f, "model", tensors, nt, w->params) < 0) return -1;

    g = group_create(f, "optimizer");
    bad = g < 0 || attr_str(g, "kind", optim_kind_name(in->optim)) < 0 ||
          attr_i64(g, "step", in->optim_step) < 0;
    if (g >= 0) H5Gclose(g);
    if (bad) return -1;
    for (int i = 0; i < w->nmoments; i++) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "optimizer/%s", optim_moment_name(in->optim, i));
        if (write_tensors(f, prefix, tensors, nt, w->moments[i]) < 0) return -1;
    }

    hsize_t ds[3] = {(hsize_t)md->layers, (hsize_t)in->streams, (hsize_t)md->H};
    if (dset_write(f, "state/h", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 3, ds, w->h) < 0) return -1;
    if (w->c && dset_write(f, "state/c", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 3, ds, w->c) < 0)
        return -1;
    hsize_t one[1] = {1};
    if (dset_write(f, "state/cursor", H5T_NATIVE_INT64, H5T_STD_I64LE, 1, one, &in->cursor) < 0)
        return -1;
    hid_t cur = H5Dopen2(f, "state/cursor", H5P_DEFAULT);
    bad = cur < 0 || attr_i64(cur, "epoch", in->epoch) < 0;
    if (cur >= 0) H5Dclose(cur);
    if (bad) return -1;

    hsize_t dt[2] = {(hsize_t)w->n_train, 3}, dvh[2] = {(hsize_t)w->n_val, 2};
    if (dset_write(f, "metrics/train", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 2, dt, w->train_hist) < 0 ||
        dset_write(f, "metrics/val", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 2, dvh, w->val_hist) < 0)
        return -1;
    return 0;
}

/* An upper bound on the size of w's file: the raw bytes of every dataset, plus HDF5's metadata:
 * about 3 KiB per chunked dataset (object header, chunk index node; 4 KiB allowed), a checksum and
 * index entry per chunk, and the superblock, groups and attributes (64 KiB allowed). Tight
 * enough that a disk with room for the file is not refused. */
static off_t size_bound(const ckpt_write_t *w) {
    const model_dims_t *md = &w->info.dims;
    int ntensors = 0;
    int64_t nparams = model_layout(md, NULL, &ntensors);
    double data = 4.0 * (double)nparams * (1 + w->nmoments) +
                  4.0 * (w->c ? 2 : 1) * md->layers * w->info.streams * md->H +
                  8.0 * (3.0 * (double)w->n_train + 2.0 * (double)w->n_val) +
                  4.0 * w->vocab->size + 8.0 + (double)strlen(w->config);
    double datasets = ntensors * (1 + w->nmoments) + 6;
    double chunks = datasets + data / (4.0 * CHUNK_ELEMS);
    return (off_t)(data + 4096.0 * datasets + 64.0 * chunks + 65536.0);
}

int ckpt_write(const char *path, const ckpt_write_t *w) {
    char tmp[MAX_PATH + 8], dir[MAX_PATH];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    fileio_dir_of(dir, sizeof dir, path);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return err_set(CHARLM_EINPUT, "cannot create checkpoint directory %s: %s", dir,
                       strerror(errno));
    /* HDF5 writes the file itself (no copy of the model in memory); a full disk or a file-size
     * limit is found before it starts, since HDF5 1.10 does not survive a failed write */
    int e = fileio_reserve(tmp, size_bound(w));
    int ok = 0;
    if (!e) {
        hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        ok = f >= 0 && write_contents(f, w) == 0;
        if (f >= 0 && H5Fclose(f) < 0) ok = 0;
        if (ok && fileio_fsync(tmp, 0) != 0) e = errno;
    }
    if (!e && ok && rename(tmp, path) != 0) e = errno;
    if (e || !ok) {
        remove(tmp);
        if (e) return err_set(CHARLM_EINPUT, "cannot write checkpoint %s: %s", path, strerror(e));
        return err_set(CHARLM_EINPUT, "cannot write checkpoint %s: HDF5 error", path);
    }
    fileio_fsync(dir, 1); /* makes the rename durable */
    return CHARLM_OK;
}

/* ---- reading ------------------------------------------------------------------------------ */

typedef struct {
    const char *path;
    hid_t f;
} reader_t;

static int bad(const reader_t *r, const char *what) {
    return err_set(CHARLM_EINPUT, "%s: %s", r->path, what);
}

static int attr_read(const reader_t *r, hid_t loc, const char *name, hid_t type, void *v) {
    char msg[160];
    if (H5Aexists(loc, name) <= 0) {
        snprintf(msg, sizeof msg, "attribute '%s' is missing", name);
        return bad(r, msg);
    }
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    int ok = a >= 0 && H5Aread(a, type, v) >= 0;
    if (a >= 0) H5Aclose(a);
    if (!ok) {
        snprintf(msg, sizeof msg, "attribute '%s' cannot be read", name);
        return bad(r, msg);
    }
    return CHARLM_OK;
}

static int attr_get_i64(const reader_t *r, hid_t loc, const char *name, int64_t *v) {
    return attr_read(r, loc, name, H5T_NATIVE_INT64, v);
}

static int attr_get_int(const reader_t *r, hid_t loc, const char *name, int *v) {
    int64_t x = 0;
    int rc = attr_get_i64(r, loc, name, &x);
    if (!rc && (x < 0 || x > INT32_MAX)) {
        char msg[160];
        snprintf(msg, sizeof msg, "attribute '%s' = %" PRId64 " is out of range", name, x);
        return bad(r, msg);
    }
    *v = (int)x;
    return rc;
}

/* Reads a string attribute into a new buffer (*out, owned by the caller). */
static int attr_get_str(const reader_t *r, hid_t loc, const char *name, char **out) {
    char msg[160];
    *out = NULL;
    if (H5Aexists(loc, name) <= 0) {
        snprintf(msg, sizeof msg, "attribute '%s' is missing", name);
        return bad(r, msg);
    }
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t t = a >= 0 ? H5Aget_type(a) : -1;
    int ok = t >= 0 && H5Tget_class(t) == H5T_STRING && !H5Tis_variable_str(t);
    size_t n = ok ? H5Tget_size(t) : 0;
    char *s = ok ? xcalloc(n + 1, 1) : NULL;
    ok = ok && H5Aread(a, t, s) >= 0;
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    if (!ok) {
        free(s);
        snprintf(msg, sizeof msg, "attribute '%s' is not a readable string", name);
        return bad(r, msg);
    }
    *out = s;
    return CHARLM_OK;
}

/* Reads dataset `name`, which must have exactly `rank` dims equal to dims, into data. Reading
 * verifies the fletcher32 checksum of every chunk. */
static int dset_read(const reader_t *r, const char *name, hid_t memtype, int rank,
                     const hsize_t *dims, void *data) {
    char msg[300];
    if (H5Lexists(r->f, name, H5P_DEFAULT) <= 0) {
        snprintf(msg, sizeof msg, "dataset '%s' is missing", name);
        return bad(r, msg);
    }
    hid_t d = H5Dopen2(r->f, name, H5P_DEFAULT);
    hid_t s = d >= 0 ? H5Dget_space(d) : -1;
    hsize_t got[3] = {0, 0, 0};
    int ok = s >= 0 && H5Sget_simple_extent_ndims(s) == rank &&
             H5Sget_simple_extent_dims(s, got, NULL) == rank;
    for (int i = 0; ok && i < rank; i++) ok = got[i] == dims[i];
    if (s >= 0) H5Sclose(s);
    if (!ok) {
        if (d >= 0) H5Dclose(d);
        snprintf(msg, sizeof msg, "dataset '%s' has the wrong shape", name);
        return bad(r, msg);
    }
    hsize_t n = 1;
    for (int i = 0; i < rank; i++) n *= dims[i];
    ok = !n || H5Dread(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
    H5Dclose(d);
    if (!ok) {
        snprintf(msg, sizeof msg, "dataset '%s' is corrupt (checksum or read error)", name);
        return bad(r, msg);
    }
    return CHARLM_OK;
}

/* Rows of a 2-D history dataset (it may have any number of rows). */
static int64_t dset_rows(const reader_t *r, const char *name) {
    hid_t d = H5Lexists(r->f, name, H5P_DEFAULT) > 0 ? H5Dopen2(r->f, name, H5P_DEFAULT) : -1;
    if (d < 0) return -1;
    hid_t s = H5Dget_space(d);
    hsize_t dims[2] = {0, 0};
    int rank = H5Sget_simple_extent_dims(s, dims, NULL);
    H5Sclose(s);
    H5Dclose(d);
    return rank == 2 ? (int64_t)dims[0] : -1;
}

static int read_tensors(const reader_t *r, const char *prefix, const model_tensor_t *t, int n,
                        float *buf) {
    char name[128];
    for (int i = 0; i < n; i++) {
        hsize_t dims[2] = {(hsize_t)t[i].shape[0], (hsize_t)t[i].shape[1]};
        snprintf(name, sizeof name, "%.60s/%.47s", prefix, t[i].name);
        int rc = dset_read(r, name, H5T_NATIVE_FLOAT, t[i].ndim, dims, buf + t[i].offset);
        if (rc) return rc;
    }
    return CHARLM_OK;
}


/* Reads the root and group attributes into ck->info and ck->config. */
static int read_info(const reader_t *r, ckpt_t *ck) {
    ckpt_info_t *in = &ck->info;
    char *format = NULL;
    int rc = attr_get_str(r, r->f, "format", &format);
    if (!rc && strcmp(format, "charlm")) rc = bad(r, "not a charlm checkpoint (format attribute)");
    free(format);
    if (rc) return rc;
    int64_t version = 0;
    if ((rc = attr_get_i64(r, r->f, "format_version", &version))) return rc;
    if (version != CKPT_FORMAT_VERSION) {
        char msg[160];
        snprintf(msg, sizeof msg, "format_version %" PRId64 " is not supported (this charlm reads %d)",
                 version, CKPT_FORMAT_VERSION);
        return bad(r, msg);
    }
    if ((rc = attr_get_i64(r, r->f, "step", &in->step)) ||
        (rc = attr_get_i64(r, r->f, "epoch", &in->epoch)) ||
        (rc = attr_get_i64(r, r->f, "cursor", &in->cursor)) ||
        (rc = attr_get_i64(r, r->f, "tokens_seen", &in->tokens_seen)) ||
        (rc = attr_get_i64(r, r->f, "train_chars", &in->train_chars)) ||
        (rc = attr_get_int(r, r->f, "world_size", &in->world_size)) ||
        (rc = attr_get_int(r, r->f, "streams", &in->streams)) ||
        (rc = attr_get_int(r, r->f, "seq", &in->seq)) ||
        (rc = attr_read(r, r->f, "lr", H5T_NATIVE_DOUBLE, &in->lr)) ||
        (rc = attr_read(r, r->f, "last_train_loss", H5T_NATIVE_DOUBLE, &in->last_train_loss)) ||
        (rc = attr_read(r, r->f, "last_val_loss", H5T_NATIVE_DOUBLE, &in->last_val_loss)) ||
        (rc = attr_read(r, r->f, "best_val_loss", H5T_NATIVE_DOUBLE, &in->best_val_loss)) ||
        (rc = attr_get_str(r, r->f, "config", &ck->config)))
        return rc;
    if (H5Lexists(r->f, "model", H5P_DEFAULT) <= 0) return bad(r, "group 'model' is missing");
    if (H5Lexists(r->f, "optimizer", H5P_DEFAULT) <= 0)
        return bad(r, "group 'optimizer' is missing");
    model_dims_t *md = &in->dims;
    hid_t g = H5Gopen2(r->f, "model", H5P_DEFAULT);
    char *cell = NULL;
    rc = attr_get_str(r, g, "cell", &cell);
    if (!rc) rc = attr_get_int(r, g, "layers", &md->layers);
    if (!rc) rc = attr_get_int(r, g, "hidden", &md->H);
    if (!rc) rc = attr_get_int(r, g, "embed", &md->E);
    if (!rc) rc = attr_get_int(r, g, "vocab_size", &md->V);
    int k = cell ? cell_kind_value(cell) : -1;
    if (!rc && k < 0) rc = bad(r, "unknown cell in model attributes");
    free(cell);
    H5Gclose(g);
    if (rc) return rc;
    if (md->layers < 1 || md->layers > MODEL_MAX_LAYERS || md->H < 1 || md->E < 1 ||
        md->V < 1 || in->streams < 1)
        return bad(r, "model or stream sizes out of range");
    md->cell = (cell_kind_t)k;
    md->G = cell_ops(md->cell)->gates;
    g = H5Gopen2(r->f, "optimizer", H5P_DEFAULT);
    char *kind = NULL;
    rc = attr_get_str(r, g, "kind", &kind);
    if (!rc) rc = attr_get_i64(r, g, "step", &in->optim_step);
    k = kind ? optim_kind_value(kind) : -1;
    if (!rc && k < 0) rc = bad(r, "unknown optimizer kind");
    free(kind);
    H5Gclose(g);
    in->optim = (optim_kind_t)k;
    return rc;
}

static int read_all(const reader_t *r, ckpt_t *ck) {
    int rc = read_info(r, ck);
    if (rc) return rc;
    const ckpt_info_t *in = &ck->info;
    const model_dims_t *md = &in->dims;
    model_tensor_t t[MODEL_MAX_TENSORS];
    int nt = 0;
    ck->nparams = model_layout(md, t, &nt);
    uint32_t *cps = xcalloc((size_t)md->V, sizeof(uint32_t));
    hsize_t dv[1] = {(hsize_t)md->V};
    rc = dset_read(r, "vocab", H5T_NATIVE_UINT32, 1, dv, cps);
    if (!rc && vocab_from_list(&ck->vocab, cps, md->V)) {
        err_clear();
        rc = bad(r, "dataset 'vocab' is not a sorted list of code points");
    }
    free(cps);
    if (rc) return rc;
    ck->params = xcalloc((size_t)ck->nparams, sizeof(float));
    if ((rc = read_tensors(r, "model", t, nt, ck->params))) return rc;
    for (int i = 0; i < OPTIM_MAX_MOMENTS && optim_moment_name(in->optim, i); i++) {
        char g[32];
        snprintf(g, sizeof g, "optimizer/%s", optim_moment_name(in->optim, i));
        if (H5Lexists(r->f, g, H5P_DEFAULT) <= 0) break;
        ck->moments[i] = xcalloc((size_t)ck->nparams, sizeof(float));
        ck->nmoments = i + 1;
        if ((rc = read_tensors(r, g, t, nt, ck->moments[i]))) return rc;
    }
    size_t nstate = (size_t)md->layers * in->streams * md->H;
    hsize_t ds[3] = {(hsize_t)md->layers, (hsize_t)in->streams, (hsize_t)md->H};
    ck->h = xcalloc(nstate, sizeof(float));
    if ((rc = dset_read(r, "state/h", H5T_NATIVE_FLOAT, 3, ds, ck->h))) return rc;
    if (cell_ops(md->cell)->has_c) {
        ck->c = xcalloc(nstate, sizeof(float));
        if ((rc = dset_read(r, "state/c", H5T_NATIVE_FLOAT, 3, ds, ck->c))) return rc;
    }
    int64_t cursor = -1;
    hsize_t one[1] = {1};
    if ((rc = dset_read(r, "state/cursor", H5T_NATIVE_INT64, 1, one, &cursor))) return rc;
    if (cursor != in->cursor) return bad(r, "dataset 'state/cursor' disagrees with the cursor attribute");
    ck->n_train = dset_rows(r, "metrics/train");
    ck->n_val = dset_rows(r, "metrics/val");
    if (ck->n_train < 0 || ck->n_val < 0) return bad(r, "dataset 'metrics/train' or 'metrics/val' is missing");
    ck->train_hist = xcalloc((size_t)ck->n_train * 3, sizeof(double));
    ck->val_hist = xcalloc((size_t)ck->n_val * 2, sizeof(double));
    hsize_t dt[2] = {(hsize_t)ck->n_train, 3}, dvh[2] = {(hsize_t)ck->n_val, 2};
    if ((rc = dset_read(r, "metrics/train", H5T_NATIVE_DOUBLE, 2, dt, ck->train_hist)) ||
        (rc = dset_read(r, "metrics/val", H5T_NATIVE_DOUBLE, 2, dvh, ck->val_hist)))
        return rc;
    return CHARLM_OK;
}

/* Opens path read-only, with one clear message for a missing file or one that is not HDF5. */
static int open_file(reader_t *r, const char *path) {
    r->path = path;
    r->f = -1;
    struct stat st;
    if (stat(path, &st) != 0)
        return err_set(CHARLM_EINPUT, "%s: cannot open checkpoint: %s", path, strerror(errno));
#if H5_VERSION_GE(1, 12, 0)
    int is_hdf5 = H5Fis_accessible(path, H5P_DEFAULT) > 0;
#else
    int is_hdf5 = H5Fis_hdf5(path) > 0;
#endif
    if (!is_hdf5)
        return bad(r, "not an HDF5 file (truncated or not a checkpoint)");
    r->f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (r->f < 0) return bad(r, "cannot be opened as HDF5 (truncated or corrupt)");
    return CHARLM_OK;
}

int ckpt_read(ckpt_t *ck, const char *path) {
    memset(ck, 0, sizeof *ck);
    reader_t r;
    int rc = open_file(&r, path);
    if (!rc) rc = read_all(&r, ck);
    if (r.f >= 0 && H5Fclose(r.f) < 0 && !rc) rc = bad(&r, "error closing the file");
    if (rc) ckpt_free(ck);
    return rc;
}

void ckpt_free(ckpt_t *ck) {
    free(ck->config);
    vocab_free(&ck->vocab);
    free(ck->params);
    free(ck->moments[0]), free(ck->moments[1]);
    free(ck->h), free(ck->c);
    free(ck->train_hist), free(ck->val_hist);
    memset(ck, 0, sizeof *ck);
}

void ckpt_model(model_t *m, const ckpt_t *ck) {
    model_init(m, &ck->info.dims, 0);
    CHARLM_CHECK(m->nparams == ck->nparams);
    memcpy(m->params, ck->params, sizeof(float) * (size_t)m->nparams);
}

/* ---- the run directory -------------------------------------------------------------------- */

void ckpt_path(char *out, size_t n, const char *run_dir, int64_t step) {
    snprintf(out, n, "%s/checkpoints/ckpt-%08" PRId64 ".h5", run_dir, step);
}

/* Steps of the ckpt-<step>.h5 files of run_dir/checkpoints, newest first; *n of them. */
static int64_t *list_steps(const char *run_dir, int *n) {
    char dir[MAX_PATH];
    snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    int cap = 16;
    int64_t *steps = xcalloc((size_t)cap, sizeof(int64_t));
    struct dirent *e;
    while ((e = readdir(d))) {
        long long s;
        char tail[8];
        if (sscanf(e->d_name, "ckpt-%lld.h%7s", &s, tail) != 2 || strcmp(tail, "5") || s < 0)
            continue;
        if (*n == cap) {
            int64_t *bigger = xcalloc((size_t)cap * 2, sizeof(int64_t));
            memcpy(bigger, steps, sizeof(int64_t) * (size_t)cap);
            free(steps);
            steps = bigger;
            cap *= 2;
        }
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

int ckpt_find_latest(ckpt_t *ck, char *out, size_t n, const char *run_dir) {
    int count = 0, found = 0;
    memset(ck, 0, sizeof *ck);
    int64_t *steps = list_steps(run_dir, &count);
    for (int i = 0; i < count && !found; i++) {
        ckpt_path(out, n, run_dir, steps[i]);
        if (ckpt_read(ck, out) == CHARLM_OK) {
            found = 1;
        } else {
            fprintf(stderr, "charlm: warning: skipping %s\n", err_message());
            err_clear();
        }
    }
    free(steps);
    return found;
}

void ckpt_rotate(const char *run_dir, int keep) {
    int count = 0;
    int64_t *steps = list_steps(run_dir, &count);
    char path[MAX_PATH];
    for (int i = keep; i < count; i++) {
        ckpt_path(path, sizeof path, run_dir, steps[i]);
        remove(path);
    }
    free(steps);
}

int ckpt_mark_best(const char *path, const char *run_dir) {
    char best[MAX_PATH], tmp[MAX_PATH + 8];
    snprintf(best, sizeof best, "%s/checkpoints/best.h5", run_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", best);
    remove(tmp);
    if (link(path, tmp) != 0) {
        /* file systems without hard links: copy */
        FILE *in = fopen(path, "rb"), *out = in ? fopen(tmp, "wb") : NULL;
        char buf[1 << 16];
        size_t k;
        int ok = in && out;
        while (ok && (k = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, k, out) == k;
        ok = ok && !ferror(in);
        if (out && fclose(out) != 0) ok = 0;
        if (in) fclose(in);
        if (!ok) {
            remove(tmp);
            return err_set(CHARLM_EINPUT, "cannot write %s: %s", best, strerror(errno));
        }
        fileio_fsync(tmp, 0);
    }
    if (rename(tmp, best) != 0) {
        remove(tmp);
        return err_set(CHARLM_EINPUT, "cannot write %s: %s", best, strerror(errno));
    }
    return CHARLM_OK;
}

/* ---- inspect ------------------------------------------------------------------------------ */

static void print_loss(FILE *out, const char *what, double v) {
    if (isnan(v)) fprintf(out, "%-18s none\n", what);
    else fprintf(out, "%-18s %.6f nats/char (%.6f bits/char)\n", what, v, v / log(2.0));
}

int ckpt_inspect(FILE *out, const char *path, int verify) {
    ckpt_t ck;
    memset(&ck, 0, sizeof ck);
    reader_t r;
    int rc = open_file(&r, path);
    if (!rc) rc = verify ? read_all(&r, &ck) : read_info(&r, &ck);
    if (r.f >= 0) H5Fclose(r.f);
    if (!rc) {
        const ckpt_info_t *in = &ck.info;
        const model_dims_t *md = &in->dims;
        int64_t nparams = model_layout(md, NULL, NULL);
        fprintf(out, "%-18s %s\n", "file", path);
        fprintf(out, "%-18s %d\n", "format_version", CKPT_FORMAT_VERSION);
        fprintf(out, "%-18s %" PRId64 "\n", "step", in->step);
        fprintf(out, "%-18s %" PRId64 " (window %" PRId64 " of the epoch)\n", "epoch", in->epoch,
                in->cursor);
        fprintf(out, "%-18s %" PRId64 "\n", "tokens_seen", in->tokens_seen);
        fprintf(out, "%-18s %s, %d layers x %d hidden, embed %d, vocabulary %d\n", "model",
                cell_kind_name(md->cell), md->layers, md->H, md->E, md->V);
        fprintf(out, "%-18s %" PRId64 "\n", "parameters", nparams);
        fprintf(out, "%-18s %s, step %" PRId64 ", lr %.6g\n", "optimizer",
                optim_kind_name(in->optim), in->optim_step, in->lr);
        fprintf(out, "%-18s %d (written by %d ranks), window %d\n", "streams", in->streams,
                in->world_size, in->seq);
        print_loss(out, "train loss", in->last_train_loss);
        print_loss(out, "validation loss", in->last_val_loss);
        print_loss(out, "best validation", in->best_val_loss);
        if (verify) fprintf(out, "%-18s every dataset read, checksums good\n", "verify");
        fprintf(out, "config:\n%s", ck.config);
    }
    ckpt_free(&ck);
    return rc;
}
