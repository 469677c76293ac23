#include "charlm/fileio.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
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
