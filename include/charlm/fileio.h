/* fileio: the small pieces of durable file replacement that checkpoints and prepared corpora
 * share: the directory of a path, fsync of a file or of a directory (so that a rename into it
 * survives a crash), and a check that a file of a given size can be written at all; the lock of a
 * run directory; and what the system still lets this process allocate (read from /proc and
 * /sys, so that a configuration too large is refused before anything is allocated). */
#ifndef CHARLM_FILEIO_H
#define CHARLM_FILEIO_H

#include <stddef.h>
#include <stdint.h>
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

/* Makes sure that the file open at fd can grow to `end` bytes without a write failing: the
 * blocks from its present size up to end are allocated now, its size unchanged (fallocate with
 * FALLOC_FL_KEEP_SIZE: counts free space and quotas), and end is within the file-size limit. For
 * a writer whose library does not survive a failed write (HDF5 1.10): it asks for the room of
 * each piece before writing it, and stops cleanly on a full disk. Returns 0 or an errno (ENOSPC,
 * EDQUOT, EFBIG, ...); a file system without fallocate is checked by its free space. */
int fileio_room(int fd, off_t end);

/* Gives back the blocks fileio_room allocated past the end of fd's file (best effort). */
void fileio_trim(int fd);

/* ---- the lock of a run directory ---- */

/* Who holds (or held) a lock, as its file names them. */
typedef struct {
    char host[256];
    long pid; /* 0: the file names nobody */
} fileio_holder_t;

/* A zeroed fileio_lock_t is one not held. */
typedef struct {
    int held;
    int fd;                         /* the open lock file, when held */
    int advisory;                   /* the kernel holds it (flock); 0: this file system has no
                                       locks and the file's content alone stands for it */
    int have_dir;                   /* dir exists: a failure to lock was the lock file's */
    char path[CHARLM_PATH_MAX + 8]; /* DIR/lock */
    char *dir;                      /* DIR, owned */
    size_t *made;                   /* (nmade) ends in dir of the levels fileio_lock created */
    size_t nmade;
} fileio_lock_t;

/* Takes the exclusive lock of directory dir, creating it and its missing parents: the file
 * dir/lock, held with flock(2) until fileio_unlock (the kernel releases it when the process dies,
 * however it dies) and holding "HOST PID" of the holder. Where the file system refuses advisory
 * locks (ENOLCK, ENOSYS, EOPNOTSUPP: NFS without a lock manager, Lustre without -o flock), the
 * content alone stands for the lock: a holder on this host that is gone is taken over, any other
 * holder refuses. Returns 0 with the lock held and *prev the holder that the file still named
 * (one that died without releasing it: prev->pid 0 when there was none); EWOULDBLOCK with *prev
 * the holder (pid 0 when it has not written its name yet); or the errno of a failure, with the
 * levels of dir it created removed again. */
int fileio_lock(fileio_lock_t *l, fileio_holder_t *prev, const char *dir);

/* Releases l (nothing when it is not held): removes the lock file, then the levels of dir that
 * fileio_lock created which are empty (a run that failed at start-up leaves no directory). */
void fileio_unlock(fileio_lock_t *l);

/* Whether a process holds the lock of directory dir now, told without taking the lock or waiting
 * (the holder is never disturbed): 1 it does, *h naming it; 0 nobody does (no lock file, or one
 * whose holder on this host is gone: *h names it, pid 0 when no file); -1 it cannot be told from
 * this host: the file names a process of another host and no lock of that host is visible here
 * (fcntl F_GETLK, which sees the locks of NFS clients), or names nobody yet (*h pid 0). */
int fileio_lock_holder(const char *dir, fileio_holder_t *h);

/* This host's name, as lock files name it, into out (n bytes). */
void fileio_host(char *out, size_t n);

/* ---- memory ---- */

/* What this process may still allocate. */
typedef struct {
    double bytes;     /* the smallest of the bounds below */
    const char *what; /* the bound that sets it: "RLIMIT_AS (ulimit -v)", "RLIMIT_DATA (ulimit
                         -d)", "MemAvailable of /proc/meminfo" or "the cgroup's memory limit" */
    int sharers;      /* the processes of the node that share the bound, bytes being this one's
                         share (1: the bound is this process's own) */
    double reserved;  /* the address space kept for the libraries under this bound */
} fileio_mem_t;

/* The bytes this process may still allocate, the smallest of: the headroom under RLIMIT_AS and
 * RLIMIT_DATA (its own) once reserve_vm more bytes of address space are mapped (what libraries
 * map at first use and mostly never touch: MODEL_LIB_VM); its share of MemAvailable
 * (/proc/meminfo) and of the headroom under the memory limit of its cgroup and the cgroup's
 * ancestors (v2 memory.max, v1 memory.limit_in_bytes; inactive page cache counted as free),
 * which `sharers` processes of the node share. A bound that cannot be read is no bound; with
 * none, bytes is infinite. */
fileio_mem_t fileio_mem_available(int sharers, double reserve_vm);

/* bytes as text for a message ("812.0 MiB", "36.3 GiB") into out (n bytes). */
void fileio_bytes_text(char *out, size_t n, double bytes);

/* "X available (WHAT)" for m into out (n bytes), WHAT saying the share or the reserve. */
void fileio_mem_text(char *out, size_t n, const fileio_mem_t *m);

#endif
