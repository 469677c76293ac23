#define _GNU_SOURCE /* fallocate */
#include "charlm/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "charlm/err.h"

/* Removes the levels of path whose ends are made[0..n) (as make_dirs records them), deepest
 * first; rmdir leaves a level that is not empty. */
static void remove_levels(const char *path, const size_t *made, size_t n) {
    char *buf = xstrdup(path);
    while (n > 0) {
        buf[made[--n]] = '\0';
        rmdir(buf);
    }
    free(buf);
}

/* mkdir -p of path, recording in made (room for strlen(path) + 1) the end of every level it
 * creates, *nmade of them; on failure those levels are removed again (*nmade = 0). */
static int make_dirs(const char *path, size_t *made, size_t *nmade) {
    size_t len = strlen(path);
    char *buf = xstrdup(path);
    int e = 0;
    *nmade = 0;
    for (size_t i = 1; i <= len && !e; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        buf[i] = '\0';
        if (mkdir(buf, 0777) == 0) made[(*nmade)++] = i;
        else if (errno != EEXIST) e = errno;
        buf[i] = path[i];
    }
    free(buf);
    struct stat st;
    if (!e && stat(path, &st) != 0) e = errno;
    if (!e && !S_ISDIR(st.st_mode)) e = ENOTDIR;
    if (e) {
        remove_levels(path, made, *nmade);
        *nmade = 0;
    }
    return e;
}

int fileio_make_dirs(const char *path) {
    size_t nmade, *made = xcalloc(strlen(path) + 1, sizeof *made);
    int e = make_dirs(path, made, &nmade);
    free(made);
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

/* Allocates the blocks [from, end) of fd's file with fallocate mode (0 or FALLOC_FL_KEEP_SIZE),
 * after the file-size limit allows end; a file system without fallocate is checked by its free
 * space instead. Returns 0 or an errno. */
static int allocate(int fd, off_t from, off_t end, int mode) {
    struct rlimit lim;
    if (getrlimit(RLIMIT_FSIZE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY &&
        (rlim_t)end > lim.rlim_cur)
        return EFBIG;
    if (end <= from || fallocate(fd, mode, from, end - from) == 0) return 0;
    int e = errno;
    struct statvfs fs;
    if (e == EOPNOTSUPP || e == ENOSYS)
        e = fstatvfs(fd, &fs) == 0 && (double)fs.f_bavail * fs.f_frsize < (double)(end - from)
                ? ENOSPC
                : 0;
    return e;
}

int fileio_reserve(const char *path, off_t bytes) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) return errno;
    int e = allocate(fd, 0, bytes, 0);
    /* hand the blocks back: the writer recreates the file at once */
    if (ftruncate(fd, 0) != 0 && !e) e = errno;
    close(fd);
    return e;
}

int fileio_room(int fd, off_t end) {
    struct stat st;
    if (fstat(fd, &st) != 0) return errno;
    return allocate(fd, st.st_size, end, FALLOC_FL_KEEP_SIZE);
}

void fileio_trim(int fd) {
    struct stat st;
    /* a truncation to the present size frees the blocks past it (ext4, xfs, tmpfs); where it does
     * not, they stay until the file goes: no harm */
    if (fstat(fd, &st) == 0) (void)!ftruncate(fd, st.st_size);
}

/* ---- the lock of a run directory ---- */

void fileio_host(char *out, size_t n) {
    if (gethostname(out, n) != 0 || !out[0]) snprintf(out, n, "?");
    out[n - 1] = '\0';
}

/* The holder that the lock file fd names ("HOST PID"; pid 0 when it names nobody). */
static void read_holder(fileio_holder_t *h, int fd) {
    char text[512];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    text[n > 0 ? n : 0] = '\0';
    *h = (fileio_holder_t){.pid = 0};
    if (sscanf(text, "%255s %ld", h->host, &h->pid) != 2 || h->pid <= 0) h->pid = 0;
}

/* Whether process pid of this host still runs (EPERM: it does, as another user's). */
static int alive(long pid) { return kill((pid_t)pid, 0) == 0 || errno == EPERM; }

/* Whether holder h, named by a lock file that no advisory lock guards, may be taken over: it
 * names nobody, or a process of this host that is gone. Another host's cannot be checked. */
static int stale(const fileio_holder_t *h) {
    char host[256];
    fileio_host(host, sizeof host);
    return h->pid == 0 || (!strcmp(h->host, host) && h->pid != (long)getpid() && !alive(h->pid));
}

/* Opens l->path and takes its lock: 0, EWOULDBLOCK (*prev = the holder) or an errno. The lock is
 * on the file that is at l->path once it is held: a holder that releases removes the file, so a
 * lock taken on a file it removed meanwhile is let go and taken again. */
static int lock_file(fileio_lock_t *l, fileio_holder_t *prev) {
    for (;;) {
        int created = 1, fd = open(l->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno == EEXIST) created = 0, fd = open(l->path, O_RDWR | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT) continue; /* removed between the two opens */
        if (fd < 0) return errno;
        int e = flock(fd, LOCK_EX | LOCK_NB) == 0 ? 0 : errno;
        read_holder(prev, fd);
        l->advisory = !(e == ENOLCK || e == ENOSYS || e == EOPNOTSUPP || e == EINVAL);
        if (!l->advisory) e = stale(prev) ? 0 : EWOULDBLOCK; /* no locks here: the content */
        if (e == EAGAIN) e = EWOULDBLOCK;
        struct stat mine, there;
        int moved = !e && (fstat(fd, &mine) != 0 || stat(l->path, &there) != 0 ||
                           mine.st_dev != there.st_dev || mine.st_ino != there.st_ino);
        if (!e && !moved) {
            l->fd = fd, l->held = 1;
            return 0;
        }
        if (e && e != EWOULDBLOCK && created) unlink(l->path); /* nobody else holds it */
        close(fd);
        if (e) return e;
    }
}

int fileio_lock_holder(const char *dir, fileio_holder_t *h) {
    char path[CHARLM_PATH_MAX + 8];
    *h = (fileio_holder_t){.pid = 0};
    if (snprintf(path, sizeof path, "%s/lock", dir) >= (int)sizeof path) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0; /* a holder that releases removes the file */
    read_holder(h, fd);
    /* flock(2) cannot be queried without taking it; a POSIX query sees where flock is emulated by
     * POSIX locks (NFS) */
    struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    int posix = fcntl(fd, F_GETLK, &q) == 0 && q.l_type != F_UNLCK;
    close(fd);
    char host[256];
    fileio_host(host, sizeof host);
    if (h->pid && !strcmp(h->host, host)) return alive(h->pid);
    return posix ? 1 : -1;
}

int fileio_lock(fileio_lock_t *l, fileio_holder_t *prev, const char *dir) {
    *l = (fileio_lock_t){.dir = xstrdup(dir)};
    *prev = (fileio_holder_t){.pid = 0};
    l->made = xcalloc(strlen(dir) + 1, sizeof *l->made);
    int e = snprintf(l->path, sizeof l->path, "%s/lock", dir) >= (int)sizeof l->path
                ? ENAMETOOLONG : make_dirs(dir, l->made, &l->nmade);
    l->have_dir = !e;
    if (!e) e = lock_file(l, prev);
    if (!e) {
        char text[300];
        fileio_host(text, 256);
        size_t n = strlen(text);
        n += (size_t)snprintf(text + n, sizeof text - n, " %ld\n", (long)getpid());
        errno = 0;
        if (ftruncate(l->fd, 0) != 0 || pwrite(l->fd, text, n, 0) != (ssize_t)n ||
            fsync(l->fd) != 0)
            e = errno ? errno : EIO;
    }
    if (e && e != EWOULDBLOCK) *prev = (fileio_holder_t){.pid = 0};
    if (e) fileio_unlock(l);
    return e;
}

void fileio_unlock(fileio_lock_t *l) {
    if (l->held) {
        unlink(l->path); /* while held: whoever opens it next makes a new file */
        close(l->fd);
        l->held = 0;
    }
    if (l->dir) remove_levels(l->dir, l->made, l->nmade);
    free(l->made);
    free(l->dir);
    l->made = NULL, l->dir = NULL, l->nmade = 0;
}

/* ---- memory ---- */

/* The number after `key` in the text file path (a "key value" per line, as /proc/meminfo,
 * /proc/self/status and memory.stat are), times scale; -1 when it is not there. */
static double file_field(const char *path, const char *key, double scale) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    double v = -1;
    size_t n = strlen(key);
    while (v < 0 && fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && (line[n] == ' ' || line[n] == '\t'))
            v = strtod(line + n, NULL) * scale;
    fclose(f);
    return v;
}

/* The first number in file path (a cgroup limit or usage); -1 when there is none ("max"). */
static double file_number(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    double v = -1;
    if (fscanf(f, "%lf", &v) != 1) v = -1;
    fclose(f);
    return v;
}

/* The headroom under the memory limits of the cgroup at `path` below mount point `root` and of
 * every ancestor: limit - (usage - inactive page cache), the smallest; -1 when none is set. */
static double cgroup_headroom(const char *root, const char *path, const char *limit_file,
                              const char *usage_file, const char *inactive_key) {
    char dir[CHARLM_PATH_MAX], file[CHARLM_PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s", path);
    double best = -1;
    for (;;) {
        snprintf(file, sizeof file, "%s%s/%s", root, dir, limit_file);
        double limit = file_number(file);
        if (limit >= 0 && limit < 0x1p62) { /* v1 writes "no limit" as about 2^63 */
            snprintf(file, sizeof file, "%s%s/%s", root, dir, usage_file);
            double used = file_number(file);
            snprintf(file, sizeof file, "%s%s/memory.stat", root, dir);
            double inactive = file_field(file, inactive_key, 1);
            double room = limit - (used > 0 ? used : 0) + (inactive > 0 ? inactive : 0);
            if (best < 0 || room < best) best = room > 0 ? room : 0;
        }
        char *slash = strrchr(dir, '/');
        if (!slash || !dir[0]) break;
        *slash = '\0'; /* the parent; "" is the mount's root */
    }
    return best;
}

/* The headroom under this process's cgroup memory limit (v2 or v1); -1 when there is none. */
static double cgroup_room(void) {
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return -1;
    char line[CHARLM_PATH_MAX];
    double best = -1;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *ctl = strchr(line, ':'), *path = ctl ? strchr(ctl + 1, ':') : NULL;
        if (!path) continue;
        *path++ = '\0';
        ctl++;
        double room = -1;
        if (!*ctl) /* v2: "0::PATH" */
            room = cgroup_headroom("/sys/fs/cgroup", path, "memory.max", "memory.current",
                                   "inactive_file");
        else if (strstr(ctl, "memory")) /* v1: "N:memory:PATH" (maybe among other controllers) */
            room = cgroup_headroom("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes",
                                   "memory.usage_in_bytes", "total_inactive_file");
        if (room >= 0 && (best < 0 || room < best)) best = room;
    }
    fclose(f);
    return best;
}

/* The headroom under resource limit `which` given what the process uses of it; -1: no limit. */
static double rlimit_room(int which, double used) {
    struct rlimit lim;
    if (getrlimit(which, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY || used < 0) return -1;
    double room = (double)lim.rlim_cur - used;
    return room > 0 ? room : 0;
}

fileio_mem_t fileio_mem_available(int sharers, double reserve_vm) {
    if (sharers < 1) sharers = 1;
    const double vm = file_field("/proc/self/status", "VmSize:", 1024),
                 data = file_field("/proc/self/status", "VmData:", 1024);
    const struct {
        double room;
        const char *what;
        int shared; /* by the node's processes */
    } bound[] = {
        {rlimit_room(RLIMIT_AS, vm < 0 ? vm : vm + reserve_vm), "RLIMIT_AS (ulimit -v)", 0},
        {rlimit_room(RLIMIT_DATA, data < 0 ? data : data + reserve_vm), "RLIMIT_DATA (ulimit -d)",
         0},
        {file_field("/proc/meminfo", "MemAvailable:", 1024), "MemAvailable of /proc/meminfo", 1},
        {cgroup_room(), "the cgroup's memory limit", 1},
    };
    fileio_mem_t m = {.bytes = INFINITY, .what = "no limit", .sharers = 1};
    for (size_t i = 0; i < sizeof bound / sizeof *bound; i++) {
        if (bound[i].room < 0) continue;
        double mine = bound[i].shared ? bound[i].room / sharers : bound[i].room;
        if (mine < m.bytes)
            m = (fileio_mem_t){.bytes = mine, .what = bound[i].what,
                               .sharers = bound[i].shared ? sharers : 1,
                               .reserved = bound[i].shared ? 0 : reserve_vm};
    }
    return m;
}

void fileio_bytes_text(char *out, size_t n, double bytes) {
    const char *unit[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    int u = 0;
    while (bytes >= 1024 && u < 6) bytes /= 1024, u++;
    if (u == 0) snprintf(out, n, "%.0f bytes", bytes);
    else snprintf(out, n, "%.1f %s", bytes, unit[u]);
}

void fileio_mem_text(char *out, size_t n, const fileio_mem_t *m) {
    char b[32], r[32];
    fileio_bytes_text(b, sizeof b, m->bytes);
    fileio_bytes_text(r, sizeof r, m->reserved);
    if (m->sharers > 1)
        snprintf(out, n, "%s available (%s, this process's share of %d on this node)", b, m->what,
                 m->sharers);
    else if (m->reserved > 0)
        snprintf(out, n, "%s available (%s, less %s that the libraries map)", b, m->what, r);
    else
        snprintf(out, n, "%s available (%s)", b, m->what);
}
