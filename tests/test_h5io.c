/* test_h5io: the one HDF5 layer. Groups, attributes and a chunked dataset written and read back
 * with nothing left open; the readers' statuses (missing, wrong type, wrong shape, a group where
 * a dataset is asked for); and a write that fails inside HDF5 (a file-size limit) records one
 * message naming the dataset, the file and the system error — not "HDF5 error", which is what
 * was left once the calls closing what had been opened cleared HDF5's error stack. */
#include "charlm/err.h"
#include "charlm/h5io.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static void round_trip(const char *path) {
    hid_t f = h5io_create(path);
    EXPECT(f >= 0);
    hid_t g = h5io_group_create(f, "a/b");
    EXPECT(g >= 0);
    EXPECT(h5io_attr_write_i64(g, "n", 42) == CHARLM_OK);
    EXPECT(h5io_attr_write_str(g, "s", "text") == CHARLM_OK);
    h5io_object_close(g);
    const float x[6] = {0, 1, 2, 3, 4, 5}; /* (2, 3) */
    const hsize_t dims[2] = {2, 3}, wrong[2] = {3, 2};
    EXPECT(h5io_dset_write(f, "a/x", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 2, dims, 4, x) == 0);
    EXPECT(h5io_close(f) == CHARLM_OK);

    const char *why = "";
    f = h5io_open(path, &why);
    EXPECT_MSG(f >= 0, "%s", why);
    EXPECT(h5io_object_open(f, "a/c", &g) == H5IO_MISSING && g < 0);
    EXPECT(h5io_object_open(f, "a/b", &g) == H5IO_OK);
    int64_t n = 0;
    double d = 0;
    char *s = NULL;
    EXPECT(h5io_attr_read_i64(g, "n", &n) == H5IO_OK && n == 42);
    EXPECT(h5io_attr_read_f64(g, "n", &d) == H5IO_TYPE);
    EXPECT(h5io_attr_read_i64(g, "m", &n) == H5IO_MISSING);
    EXPECT(h5io_attr_read_str(g, "s", &s) == H5IO_OK && s && !strcmp(s, "text"));
    free(s);
    h5io_object_close(g);
    float y[6] = {0};
    EXPECT(h5io_dset_read(f, "a/x", H5T_NATIVE_FLOAT, 2, dims, y) == H5IO_OK &&
           !memcmp(x, y, sizeof x));
    EXPECT(h5io_dset_read(f, "a/x", H5T_NATIVE_FLOAT, 2, wrong, y) == H5IO_TYPE);
    EXPECT(h5io_dset_read(f, "a/b", H5T_NATIVE_FLOAT, 2, dims, y) == H5IO_TYPE);
    EXPECT(h5io_dset_read(f, "a/y", H5T_NATIVE_FLOAT, 2, dims, y) == H5IO_MISSING);
    EXPECT(h5io_close(f) == CHARLM_OK);
}

/* A dataset of 4 MiB under a file-size limit of 64 KiB, in a child process that sends back the
 * status and message, closes the file (which fails too) and exits as a command does: HDF5 1.10's
 * own clean-up at exit would crash on the file whose close failed; h5io turns it off. The first
 * HDF5 call of the process must be the child's, so this runs first. */
static void failed_write(const char *path) {
    int fd[2];
    CHARLM_CHECK(pipe(fd) == 0);
    pid_t pid = fork();
    CHARLM_CHECK(pid >= 0);
    if (pid == 0) {
        close(fd[0]);
        signal(SIGXFSZ, SIG_IGN); /* the write fails with EFBIG instead */
        struct rlimit lim;
        getrlimit(RLIMIT_FSIZE, &lim);
        lim.rlim_cur = 65536;
        setrlimit(RLIMIT_FSIZE, &lim);
        enum { N = 1 << 20 };
        float *big = xcalloc(N, sizeof(float)); /* (N) */
        const hsize_t dims[1] = {N};
        hid_t f = h5io_create(path);
        int rc = f < 0 ? -1 : h5io_dset_write(f, "big", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 1, dims,
                                               1 << 18, big);
        dprintf(fd[1], "%d %s", rc, err_message());
        if (f >= 0) h5io_close(f);
        free(big);
        exit(0);
    }
    close(fd[1]);
    char msg[2048];
    size_t got = 0;
    ssize_t k;
    while (got < sizeof msg - 1 && (k = read(fd[0], msg + got, sizeof msg - 1 - got)) > 0)
        got += (size_t)k;
    msg[got] = '\0';
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    char want[1024];
    snprintf(want, sizeof want, "1 cannot write dataset 'big' of %s: %s", path, strerror(EFBIG));
    EXPECT_MSG(!strcmp(msg, want), "got \"%s\", expected \"%s\"", msg, want);
    EXPECT_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "the process whose write failed did not exit cleanly (%s %d)",
               WIFSIGNALED(status) ? "signal" : "status",
               WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

int main(void) {
    const char *base = getenv("TMPDIR");
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/charlm-test-h5io-XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(dir)) {
        perror(dir);
        return 1;
    }
    snprintf(path, sizeof path, "%s/too-large.h5", dir);
    failed_write(path);
    remove(path);
    snprintf(path, sizeof path, "%s/round-trip.h5", dir);
    round_trip(path);
    ssize_t open_ids = H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL);
    EXPECT_MSG(open_ids == 0, "%zd HDF5 objects left open", open_ids);
    remove(path);
    rmdir(dir);
    return check_report("test_h5io");
}
