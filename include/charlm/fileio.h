/* fileio: the small pieces of durable file replacement that checkpoints and prepared corpora
 * share: the directory of a path, fsync of a file or of a directory (so that a rename into it
 * survives a crash), and a check that a file of a given size can be written at all. */
#ifndef CHARLM_FILEIO_H
#define CHARLM_FILEIO_H

#include <stddef.h>
#include <sys/types.h>

/* The longest path charlm takes (configuration values, run directories), NUL included; buffers
 * for a path with a suffix add room for it. */
#define CHARLM_PATH_MAX 4096

/* mkdir -p: creates path and its missing parents. Returns 0, or the errno of the first failure
 * (ENOTDIR when path or a parent exists and is not a directory), with every level this call
 * created removed again. */
int fileio_make_dirs(const char *path);

/* The last step of every durable replacement (checkpoints, prepared corpora, config.ini): fsyncs
 * the complete file tmp, renames it over path and fsyncs the directory, so that after a crash
 * path is either the old file or the new one, whole. Returns 0, or an errno with tmp removed and
 * any existing path untouched. */
int fileio_commit(const char *tmp, const char *path);

/* Replaces path with the n bytes of data durably: writes path.tmp, then fileio_commit. Returns
 * 0 or an errno (path.tmp removed). */
int fileio_write_atomic(const char *path, const void *data, size_t n);

/* The directory part of path into out (n bytes): "." when path has none, "/" for the root. */
void fileio_dir_of(char *out, size_t n, const char *path);

/* fsync of the file (directory = 0) or directory (directory = 1) at path; returns 0 or -1. */
int fileio_fsync(const char *path, int directory);

/* Checks that `bytes` can be written to a new file at path before HDF5 writes it (HDF5 1.10
 * does not survive a write failing half-way: a failed flush leaves a file that crashes the library
 * at exit). Creates or truncates path, asks the file system for the blocks (fallocate: counts free
 * space and quotas) and compares against the file-size limit, then leaves path empty for the
 * writer, which truncates it again. Returns 0 or an errno (ENOSPC, EDQUOT, EFBIG, ...). A file
 * system without fallocate is checked by its free space instead. */
int fileio_reserve(const char *path, off_t bytes);

#endif
