#include "charlm/h5io.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "charlm/err.h"

const char *h5io_status_text(h5io_status_t st) {
    switch (st) {
    case H5IO_OK: return "is fine";
    case H5IO_MISSING: return "is missing";
    case H5IO_TYPE: return "has the wrong type or shape";
    case H5IO_READ: return "is corrupt (checksum or read error)";
    }
    return "?";
}

void h5io_quiet(void) {
    static int done;
    if (done) return;
    H5dont_atexit(); /* fails, harmlessly, when HDF5 is already initialised */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    done = 1;
}

/* ---- the cause of a failure ---- */

typedef struct {
    char text[256];
    int found;
} cause_t;

/* Walked from the innermost frame outwards: keeps the first description, or the first system
 * error (HDF5's file drivers write "errno = N, error message = '...'" into theirs). */
static herr_t take_cause(unsigned n, const H5E_error2_t *e, void *data) {
    cause_t *c = data;
    (void)n;
    const char *desc = e->desc ? e->desc : "";
    const char *p = strstr(desc, "errno = ");
    if (p) {
        int no = atoi(p + 8);
        snprintf(c->text, sizeof c->text, "%s", no > 0 ? strerror(no) : desc);
        c->found = 2;
        return 1; /* a system error is the cause: stop */
    }
    if (!c->found && *desc) {
        snprintf(c->text, sizeof c->text, "%s", desc);
        c->found = 1;
    }
    return 0;
}

const char *h5io_cause(void) {
    static cause_t c;
    memset(&c, 0, sizeof c);
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, take_cause, &c);
    if (!c.found) snprintf(c.text, sizeof c.text, "HDF5 error");
    return c.text;
}

/* The name of the file that holds loc, for messages. */
static void file_name(char *out, size_t n, hid_t loc) {
    if (H5Fget_name(loc, out, n) < 0) snprintf(out, n, "(HDF5 file)");
}

/* The cause of the first failure of a sequence of HDF5 calls, kept before the calls that close
 * what was opened (each API call clears HDF5's error stack on entry). */
typedef struct {
    int failed;
    char cause[256];
} failure_t;

/* Returns ok; the first time it is 0, keeps h5io_cause() in fl. */
static int note(failure_t *fl, int ok) {
    if (!ok && !fl->failed) {
        fl->failed = 1;
        snprintf(fl->cause, sizeof fl->cause, "%s", h5io_cause());
    }
    return ok;
}

/* Records "cannot write KIND 'NAME' of FILE: CAUSE". */
static int write_failed(hid_t loc, const char *kind, const char *name, const failure_t *fl) {
    char file[1024];
    file_name(file, sizeof file, loc);
    return err_set(CHARLM_EINPUT, "cannot write %s '%s' of %s: %s", kind, name, file,
                   fl->failed ? fl->cause : "HDF5 error");
}

/* ---- files ---- */

void h5io_library_version(char *out, size_t n) {
    unsigned major = 0, minor = 0, release = 0;
    H5get_libversion(&major, &minor, &release);
    snprintf(out, n, "HDF5 %u.%u.%u", major, minor, release);
}

int h5io_is_hdf5(const char *path) {
    static const unsigned char signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    unsigned char head[8];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t got = fread(head, 1, sizeof head, f);
    fclose(f);
    return got == sizeof head && !memcmp(head, signature, sizeof head);
}

hid_t h5io_open(const char *path, const char **why) {
    h5io_quiet();
    struct stat st;
    if (stat(path, &st) != 0) {
        *why = strerror(errno);
        return -1;
    }
    if (!h5io_is_hdf5(path)) {
        *why = "not an HDF5 file";
        return -1;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) *why = "cannot be opened as HDF5 (truncated or corrupt)";
    return f;
}

hid_t h5io_create(const char *path) {
    h5io_quiet();
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST); /* attributes over 64 KiB */
    errno = 0;
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    int e = errno;
    failure_t fl = {0};
    note(&fl, f >= 0);
    H5Pclose(fapl);
    if (f < 0) err_set(CHARLM_EINPUT, "cannot create %s: %s", path, e ? strerror(e) : fl.cause);
    return f;
}

int h5io_close(hid_t f) {
    char file[1024];
    file_name(file, sizeof file, f);
    if (H5Fclose(f) < 0)
        return err_set(CHARLM_EINPUT, "cannot write %s: %s", file, h5io_cause());
    return CHARLM_OK;
}

/* ---- groups and other objects ---- */

hid_t h5io_group_create(hid_t loc, const char *name) {
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t g = H5Gcreate2(loc, name, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    failure_t fl = {0};
    note(&fl, g >= 0);
    H5Pclose(lcpl);
    if (g < 0) write_failed(loc, "group", name, &fl);
    return g;
}

h5io_status_t h5io_object_open(hid_t loc, const char *name, hid_t *obj) {
    h5io_quiet();
    *obj = -1;
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) return H5IO_MISSING;
    *obj = H5Oopen(loc, name, H5P_DEFAULT);
    return *obj >= 0 ? H5IO_OK : H5IO_READ;
}

void h5io_object_close(hid_t obj) {
    if (obj >= 0) H5Oclose(obj);
}

/* ---- attributes ---- */

int h5io_attr_write(hid_t loc, const char *name, hid_t type, size_t n, const void *v) {
    hsize_t dim = n;
    hid_t s = n ? H5Screate_simple(1, &dim, NULL) : H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, type, s, H5P_DEFAULT, H5P_DEFAULT);
    failure_t fl = {0};
    int ok = note(&fl, a >= 0 && H5Awrite(a, type, v) >= 0);
    if (a >= 0) ok = note(&fl, H5Aclose(a) >= 0) && ok;
    H5Sclose(s);
    return ok ? CHARLM_OK : write_failed(loc, "attribute", name, &fl);
}

int h5io_attr_write_i64(hid_t loc, const char *name, int64_t v) {
    return h5io_attr_write(loc, name, H5T_NATIVE_INT64, 0, &v);
}

int h5io_attr_write_f64(hid_t loc, const char *name, double v) {
    return h5io_attr_write(loc, name, H5T_NATIVE_DOUBLE, 0, &v);
}

int h5io_attr_write_str(hid_t loc, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(v) + 1);
    int rc = h5io_attr_write(loc, name, t, 0, v);
    H5Tclose(t);
    return rc;
}

int h5io_attr_write_strs(hid_t loc, const char *name, const char *const *v, size_t n) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    int rc = h5io_attr_write(loc, name, t, n, v);
    H5Tclose(t);
    return rc;
}

/* Opens scalar attribute `name` of class cls: H5IO_OK with *a and *t set (caller closes both). */
static h5io_status_t attr_open(hid_t loc, const char *name, H5T_class_t cls, hid_t *a, hid_t *t) {
    h5io_quiet();
    *a = *t = -1;
    if (H5Aexists(loc, name) <= 0) return H5IO_MISSING;
    *a = H5Aopen(loc, name, H5P_DEFAULT);
    if (*a < 0) return H5IO_READ;
    *t = H5Aget_type(*a);
    hid_t s = H5Aget_space(*a);
    int ok = *t >= 0 && s >= 0 && H5Tget_class(*t) == cls && H5Sget_simple_extent_npoints(s) == 1;
    if (s >= 0) H5Sclose(s);
    return ok ? H5IO_OK : H5IO_TYPE;
}

static void attr_close(hid_t a, hid_t t) {
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
}

static h5io_status_t attr_read_number(hid_t loc, const char *name, H5T_class_t cls, hid_t mem,
                                      void *v) {
    hid_t a, t;
    h5io_status_t st = attr_open(loc, name, cls, &a, &t);
    if (st == H5IO_OK && H5Aread(a, mem, v) < 0) st = H5IO_READ;
    attr_close(a, t);
    return st;
}

h5io_status_t h5io_attr_read_i64(hid_t loc, const char *name, int64_t *v) {
    return attr_read_number(loc, name, H5T_INTEGER, H5T_NATIVE_INT64, v);
}

h5io_status_t h5io_attr_read_f64(hid_t loc, const char *name, double *v) {
    return attr_read_number(loc, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, v);
}

h5io_status_t h5io_attr_read_str(hid_t loc, const char *name, char **out) {
    *out = NULL;
    hid_t a, t;
    h5io_status_t st = attr_open(loc, name, H5T_STRING, &a, &t);
    if (st == H5IO_OK && H5Tis_variable_str(t) > 0) {
        char *v = NULL;
        if (H5Aread(a, t, &v) < 0 || !v) st = H5IO_READ;
        else *out = xstrdup(v);
        H5free_memory(v);
    } else if (st == H5IO_OK) {
        size_t len = H5Tget_size(t);
        char *v = xcalloc(len + 1, 1);
        if (H5Aread(a, t, v) < 0) {
            free(v);
            st = H5IO_READ;
        } else {
            *out = v;
        }
    }
    attr_close(a, t);
    return st;
}

/* ---- datasets ---- */

int h5io_dset_write(hid_t loc, const char *name, hid_t memtype, hid_t filetype, int rank,
                    const hsize_t *dims, size_t chunk_elems, const void *data) {
    CHARLM_CHECK(rank >= 1 && rank <= 3 && chunk_elems >= 1);
    hsize_t chunk[3], max[3], elems = 1, n = 1;
    for (int i = rank - 1; i >= 0; i--) {
        hsize_t room = chunk_elems / elems;
        chunk[i] = dims[i] < room ? dims[i] : room;
        if (chunk[i] < 1) chunk[i] = 1;
        elems *= chunk[i];
        max[i] = i == 0 ? H5S_UNLIMITED : dims[i];
        n *= dims[i];
    }
    hid_t s = H5Screate_simple(rank, dims, max);
    hid_t p = H5Pcreate(H5P_DATASET_CREATE);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    failure_t fl = {0};
    int ok = note(&fl, H5Pset_chunk(p, rank, chunk) >= 0 && H5Pset_fletcher32(p) >= 0);
    hid_t d = ok ? H5Dcreate2(loc, name, filetype, s, lcpl, p, H5P_DEFAULT) : -1;
    ok = note(&fl,
              d >= 0 && (!n || H5Dwrite(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0));
    if (d >= 0) ok = note(&fl, H5Dclose(d) >= 0) && ok; /* the chunk cache is written here */
    H5Pclose(lcpl);
    H5Pclose(p);
    H5Sclose(s);
    return ok ? CHARLM_OK : write_failed(loc, "dataset", name, &fl);
}

h5io_status_t h5io_dset_shape(hid_t loc, const char *name, int *rank, hsize_t *dims) {
    h5io_quiet();
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) return H5IO_MISSING;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return H5IO_TYPE; /* a group, not a dataset */
    hid_t s = H5Dget_space(d);
    int r = s >= 0 ? H5Sget_simple_extent_ndims(s) : -1;
    h5io_status_t st = r >= 0 && r <= 3 ? H5IO_OK : H5IO_TYPE;
    if (st == H5IO_OK && H5Sget_simple_extent_dims(s, dims, NULL) != r) st = H5IO_READ;
    *rank = r;
    if (s >= 0) H5Sclose(s);
    H5Dclose(d);
    return st;
}

h5io_status_t h5io_dset_read(hid_t loc, const char *name, hid_t memtype, int rank,
                             const hsize_t *dims, void *data) {
    int got_rank = 0;
    hsize_t got[3] = {0, 0, 0}, n = 1;
    h5io_status_t st = h5io_dset_shape(loc, name, &got_rank, got);
    if (st != H5IO_OK) return st;
    if (got_rank != rank) return H5IO_TYPE;
    for (int i = 0; i < rank; i++) {
        if (got[i] != dims[i]) return H5IO_TYPE;
        n *= dims[i];
    }
    if (!n) return H5IO_OK;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    int ok = d >= 0 && H5Dread(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
    if (d >= 0) H5Dclose(d);
    return ok ? H5IO_OK : H5IO_READ;
}
