/* test_fileio: room for a writer (fileio_room allocates blocks past the end without changing
 * the size, refuses an end past the file-size limit with EFBIG; fileio_trim gives the blocks
 * back), and the lock of a run directory — taken on a directory it creates (with its parents),
 * refused while held (naming the holder), released by removing the file and the levels it
 * created that are empty; a lock file that names a dead process, or another host, without an
 * advisory lock on it is taken over and its holder handed back. */

#include "charlm/err.h"
#include "charlm/fileio.h"

#include "check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

static void test_lock(void) {
    char top[4200], dir[4300], lockfile[4400], host[256], want[300];
    snprintf(top, sizeof top, "%s/a", tmpdir);
    snprintf(dir, sizeof dir, "%s/b/run", top);
    snprintf(lockfile, sizeof lockfile, "%s/lock", dir);
    fileio_host(host, sizeof host);

    fileio_lock_t l, again;
    fileio_holder_t prev;
    EXPECT(fileio_lock(&l, &prev, dir) == 0);
    EXPECT(l.held && l.advisory && prev.pid == 0);
    FILE *f = fopen(lockfile, "r");
    char text[300] = "";
    EXPECT(f && fgets(text, sizeof text, f));
    if (f) fclose(f);
    snprintf(want, sizeof want, "%s %ld\n", host, (long)getpid());
    EXPECT_MSG(!strcmp(text, want), "the lock file says '%s', expected '%s'", text, want);

    /* another open file description of the same file conflicts, even in this process */
    EXPECT(fileio_lock(&again, &prev, dir) == EWOULDBLOCK);
    EXPECT(!again.held && prev.pid == (long)getpid() && !strcmp(prev.host, host));
    EXPECT(exists(lockfile)); /* the refused lock took nothing away */

    /* released with nothing else in dir: the file and every level the lock created go */
    fileio_unlock(&l);
    EXPECT(!exists(lockfile) && !exists(top));
    fileio_unlock(&l); /* twice is nothing */

    /* a directory with a run's files stays */
    EXPECT(fileio_lock(&l, &prev, dir) == 0);
    char other[4400];
    snprintf(other, sizeof other, "%s/config.ini", dir);
    write_file(other, "[run]\n");
    fileio_unlock(&l);
    EXPECT(exists(other) && !exists(lockfile));

    /* a lock file left by a process of this host that is gone (SIGKILL leaves it) */
    pid_t child = fork();
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0);
    snprintf(text, sizeof text, "%s %ld\n", host, (long)child);
    write_file(lockfile, text);
    EXPECT(fileio_lock(&l, &prev, dir) == 0);
    EXPECT(prev.pid == (long)child && !strcmp(prev.host, host));
    fileio_unlock(&l);

    /* another host's, with no advisory lock on it: that host's run is gone too */
    write_file(lockfile, "elsewhere 12345\n");
    EXPECT(fileio_lock(&l, &prev, dir) == 0);
    EXPECT(prev.pid == 12345 && !strcmp(prev.host, "elsewhere"));
    fileio_unlock(&l);

    /* a file that names nobody */
    write_file(lockfile, "garbage\n");
    EXPECT(fileio_lock(&l, &prev, dir) == 0 && prev.pid == 0);
    fileio_unlock(&l);
    remove(other);

    /* the directory cannot be made: the errno, nothing left behind */
    char blocker[4200], below[4300];
    snprintf(blocker, sizeof blocker, "%s/file", tmpdir);
    write_file(blocker, "not a directory");
    snprintf(below, sizeof below, "%s/sub", blocker);
    EXPECT(fileio_lock(&l, &prev, below) == ENOTDIR && !l.held && !l.have_dir);
    fileio_unlock(&l);
    remove(blocker);

    /* the lock file cannot be made: have_dir says which failed */
    if (geteuid() != 0) {
        char ro[4200];
        snprintf(ro, sizeof ro, "%s/ro", tmpdir);
        mkdir(ro, 0555);
        EXPECT(fileio_lock(&l, &prev, ro) == EACCES && l.have_dir);
        fileio_unlock(&l);
        EXPECT(exists(ro)); /* it was not made by the lock */
        rmdir(ro);
    }
    rmdir(dir);
    snprintf(dir, sizeof dir, "%s/b", top);
    rmdir(dir);
    rmdir(top);
}

static void test_room(void) {
    char path[4200];
    snprintf(path, sizeof path, "%s/room", tmpdir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHARLM_CHECK(fd >= 0);
    CHARLM_CHECK(write(fd, "x", 1) == 1);
    struct stat st;
    EXPECT(fileio_room(fd, 8 << 20) == 0);
    fstat(fd, &st);
    EXPECT_MSG(st.st_size == 1, "fileio_room changed the size to %lld", (long long)st.st_size);
    /* a file system without fallocate passes on its free space instead: no blocks to see */
    int allocated = (long long)st.st_blocks * 512 >= (8 << 20) - 4096;
    fileio_trim(fd);
    fstat(fd, &st);
    if (allocated)
        EXPECT_MSG((long long)st.st_blocks * 512 <= 65536, "fileio_trim left %lld bytes",
                   (long long)st.st_blocks * 512);
    else
        fprintf(stderr, "test_fileio: no fallocate on %s: the blocks are not checked\n", tmpdir);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 1 << 20;
    CHARLM_CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    EXPECT(fileio_room(fd, 1 << 20) == 0);
    EXPECT(fileio_room(fd, (1 << 20) + 1) == EFBIG);
    setrlimit(RLIMIT_FSIZE, &old);
    close(fd);
    remove(path);
}

int main(void) {
    tmpdir_make("fileio");
    test_room();
    test_lock();
    DIR *d = opendir(tmpdir); /* every level the locks created is gone again */
    int entries = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        entries += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    if (d) closedir(d);
    EXPECT_MSG(entries == 0, "%s is not empty at the end", tmpdir);
    return check_report("test_fileio");
}
