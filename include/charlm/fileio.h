/* fileio: the small pieces of durable file replacement that checkpoints and prepared corpora
 * share: the directory of a path, and fsync of a file or of a directory (so that a rename into
 * it survives a crash). */
#ifndef CHARLM_FILEIO_H
#define CHARLM_FILEIO_H

#include <stddef.h>

/* The directory part of path into out (n bytes): "." when path has none, "/" for the root. */
void fileio_dir_of(char *out, size_t n, const char *path);

/* fsync of the file (directory = 0) or directory (directory = 1) at path; returns 0 or -1. */
int fileio_fsync(const char *path, int directory);

#endif
