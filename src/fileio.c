#define _GNU_SOURCE /* fallocate */
#include "charlm/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

void fileio_dir_of(char *out, size_t n, const char *path) {
    snprintf(out, n, "%s", path);
    char *slash = strrchr(out, '/');
    if (!slash) snprintf(out, n, ".");
    else if (slash == out) slash[1] = '\0';
    else *slash = '\0';
}

int fileio_fsync(const char *path, int directory) {
    int fd = open(path, directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int fileio_reserve(const char *path, off_t bytes) {
    struct rlimit lim;
    if (getrlimit(RLIMIT_FSIZE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY &&
        (rlim_t)bytes > lim.rlim_cur)
        return EFBIG;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) return errno;
    int e = 0;
    if (bytes > 0 && fallocate(fd, 0, 0, bytes) != 0) {
        e = errno;
        struct statvfs fs;
        if (e == EOPNOTSUPP || e == ENOSYS)
            e = fstatvfs(fd, &fs) == 0 && (double)fs.f_bavail * fs.f_frsize < (double)bytes ? ENOSPC
                                                                                          : 0;
    }
    /* hand the blocks back: the writer recreates the file at once */
    if (ftruncate(fd, 0) != 0 && !e) e = errno;
    close(fd);
    return e;
}
