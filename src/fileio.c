#define _GNU_SOURCE /* fallocate */
#include "charlm/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "charlm/err.h"

int fileio_make_dirs(const char *path) {
    size_t len = strlen(path);
    char *buf = xstrdup(path);
    size_t *made = xcalloc(len + 1, sizeof *made); /* ends of the levels this call created */
    size_t nmade = 0;
    int e = 0;
    for (size_t i = 1; i <= len && !e; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        buf[i] = '\0';
        if (mkdir(buf, 0777) == 0) made[nmade++] = i;
        else if (errno != EEXIST) e = errno;
        buf[i] = path[i];
    }
    struct stat st;
    if (!e && stat(path, &st) != 0) e = errno;
    if (!e && !S_ISDIR(st.st_mode)) e = ENOTDIR;
    /* a failure leaves nothing behind: the levels created here go again, deepest first */
    while (e && nmade > 0) {
        buf[made[--nmade]] = '\0';
        rmdir(buf);
    }
    free(made);
    free(buf);
    return e;
}

int fileio_commit(const char *tmp, const char *path) {
    int e = fileio_fsync(tmp, 0) != 0 ? errno : 0;
    if (!e && rename(tmp, path) != 0) e = errno;
    if (e) {
        remove(tmp);
        return e;
    }
    size_t n = strlen(path) + 2;
    char *dir = xcalloc(n, 1);
    fileio_dir_of(dir, n, path);
    fileio_fsync(dir, 1); /* makes the rename durable; a directory that cannot be synced is not
                             an error of the file */
    free(dir);
    return 0;
}

int fileio_write_atomic(const char *path, const void *data, size_t n) {
    size_t len = strlen(path) + sizeof ".tmp";
    char *tmp = xcalloc(len, 1);
    snprintf(tmp, len, "%s.tmp", path);
    int e = 0;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        e = errno;
    } else {
        if (fwrite(data, 1, n, f) != n || fflush(f) != 0) e = errno ? errno : EIO;
        if (fclose(f) != 0 && !e) e = errno;
        if (e) remove(tmp);
    }
    if (!e) e = fileio_commit(tmp, path);
    free(tmp);
    return e;
}

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
