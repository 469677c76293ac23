/* h5io: the one HDF5 layer under checkpoints and prepared corpora (src/README.md §4, §5) —
 * opening with one "is this an HDF5 file" check, HDF5's error stack silenced once and its
 * innermost cause captured for our messages, scalar and array attributes, and chunked datasets
 * with the fletcher32 checksum.
 *
 * Writers record a message naming the file and the object (err_set) and return CHARLM_EINPUT.
 * Readers return an h5io_status_t and record nothing, so that each format phrases the problem in
 * its own terms ("bad charlm corpus (...)", "PATH: dataset 'state/h' is corrupt"). */
#ifndef CHARLM_H5IO_H
#define CHARLM_H5IO_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

/* Why a read failed. */
typedef enum {
    H5IO_OK = 0,
    H5IO_MISSING, /* no such attribute or dataset */
    H5IO_TYPE,    /* present, but of another type, class or shape than asked for */
    H5IO_READ,    /* present, but the read failed: a checksum or I/O error */
} h5io_status_t;

/* "is missing", "has the wrong type or shape", "is corrupt (checksum or read error)". */
const char *h5io_status_text(h5io_status_t st);

/* Turns off HDF5's printing of its error stack for this process, and its clean-up at exit
 * (idempotent; every h5io entry point calls it, so callers need not). Call it before any other
 * HDF5 call — main does, first of all — so that the clean-up is off: after a write failed (a full
 * disk), HDF5 1.10's clean-up at exit flushes the failed file again and crashes in
 * H5F__close_cb; every file charlm writes is closed (or given up and removed) by its writer. */
void h5io_quiet(void);

/* The innermost cause of the last HDF5 failure, e.g. "No space left on device" when HDF5 saw a
 * system error, else HDF5's own description; "HDF5 error" when the stack is empty. The text is
 * in a static buffer, valid until the next call. */
const char *h5io_cause(void);

/* "HDF5 X.Y.Z" of the library this process runs with (H5get_libversion), into out (n bytes). */
void h5io_library_version(char *out, size_t n);

/* Whether path names an HDF5 file (signature check): 1 yes, 0 no or unreadable. */
int h5io_is_hdf5(const char *path);

/* Opens path read-only. Returns the file, or -1 (missing file, not HDF5, damaged superblock);
 * *why then says which in a few words ("not an HDF5 file", "cannot be opened as HDF5 (truncated
 * or corrupt)", or strerror of the failed stat). Records nothing. */
hid_t h5io_open(const char *path, const char **why);

/* Creates path (truncating it) with the library bounds that allow attributes over 64 KiB.
 * Returns the file, or -1 with "cannot create PATH: CAUSE" recorded. */
hid_t h5io_create(const char *path);

/* Closes f, flushing it. Returns CHARLM_OK, or CHARLM_EINPUT with "cannot write PATH: CAUSE"
 * recorded (a failed flush: a full disk, a file-size limit). */
int h5io_close(hid_t f);

/* ---- groups and other objects ---- */

/* Creates group `name` of loc (missing parents too). Returns it (h5io_object_close), or -1 with
 * "cannot write group 'NAME' of FILE: CAUSE" recorded. */
hid_t h5io_group_create(hid_t loc, const char *name);

/* Opens the group or dataset `name` of loc, e.g. for its attributes: H5IO_OK with *obj set (the
 * caller closes it: h5io_object_close), H5IO_MISSING, or H5IO_READ (present, cannot be opened).
 * Records nothing. */
h5io_status_t h5io_object_open(hid_t loc, const char *name, hid_t *obj);
void h5io_object_close(hid_t obj);

/* ---- attributes: writers record "cannot write attribute 'NAME' of FILE: CAUSE" ---- */

/* An attribute of n elements of type (n = 0: a scalar) from v. */
int h5io_attr_write(hid_t loc, const char *name, hid_t type, size_t n, const void *v);
int h5io_attr_write_i64(hid_t loc, const char *name, int64_t v);
int h5io_attr_write_f64(hid_t loc, const char *name, double v);
/* A fixed-length string attribute. */
int h5io_attr_write_str(hid_t loc, const char *name, const char *v);
/* An array of n variable-length UTF-8 strings. */
int h5io_attr_write_strs(hid_t loc, const char *name, const char *const *v, size_t n);

/* A scalar integer attribute (of any integer type) as int64. */
h5io_status_t h5io_attr_read_i64(hid_t loc, const char *name, int64_t *v);
/* A scalar floating-point attribute as double. */
h5io_status_t h5io_attr_read_f64(hid_t loc, const char *name, double *v);
/* A scalar string attribute (fixed or variable length) into a new buffer (*out, caller frees). */
h5io_status_t h5io_attr_read_str(hid_t loc, const char *name, char **out);

/* ---- datasets ---- */

/* Creates dataset `name` (intermediate groups too) of `rank` <= 3 dims, chunked with at most
 * chunk_elems elements per chunk (the outermost dims shrink first; the first is extendable, so
 * a zero-row dataset is allowed), with the fletcher32 checksum, and writes data (memtype) into
 * it. Records "cannot write dataset 'NAME' of FILE: CAUSE" on failure. */
int h5io_dset_write(hid_t loc, const char *name, hid_t memtype, hid_t filetype, int rank,
                    const hsize_t *dims, size_t chunk_elems, const void *data);

/* The rank and dims (room for 3) of dataset `name`; H5IO_TYPE when its rank exceeds 3. */
h5io_status_t h5io_dset_shape(hid_t loc, const char *name, int *rank, hsize_t *dims);

/* Reads dataset `name`, which must have exactly `rank` dims equal to dims, into data as memtype.
 * Reading verifies the checksum of every chunk. */
h5io_status_t h5io_dset_read(hid_t loc, const char *name, hid_t memtype, int rank,
                             const hsize_t *dims, void *data);

#endif
