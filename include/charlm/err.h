/* err: status codes, the per-process error message, and invariant checks.
 *
 * Two levels of failure (src/README.md §6):
 *  - a broken invariant (a bug) aborts at once with file and line: CHARLM_CHECK, and xcalloc,
 *    xgrow and xstrdup running out of memory.
 *    Under MPI this is MPI_Abort, so no rank is left waiting in a collective.
 *  - a recoverable failure (bad input, I/O, HDF5) records one message with err_set() and
 *    returns its status up the stack; main prints it once and every rank exits with it. */
#ifndef CHARLM_ERR_H
#define CHARLM_ERR_H

#include <stddef.h>

/* Exit codes, as documented in the README. */
enum {
    CHARLM_OK = 0,
    CHARLM_EINPUT = 1,    /* bad input, configuration, file or I/O failure */
    CHARLM_EUSAGE = 2,    /* bad command line */
    CHARLM_ESTOPPED = 3,  /* stopped by a signal after writing a checkpoint */
    CHARLM_EDIVERGED = 4, /* non-finite loss or gradient */
    /* stopped by a signal during start-up, before there was a state to checkpoint: nothing was
     * written, so the same command can simply run again */
    CHARLM_EINTERRUPTED = 5,
};

/* Records the message (printf format) of the first failure of this process and returns rc.
 * Later calls before err_clear() keep the first message: it is the cause. */
int err_set(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The recorded message, or "" when none. Owned by this module. */
const char *err_message(void);

/* Forgets the recorded message. */
void err_clear(void);

/* Prints the recorded message on stderr as the one line "charlm: error: MESSAGE", first calling
 * the hook of err_before_print (log ends its live progress line there, which the line would
 * otherwise run into). */
void err_print(void);

/* Sets the function err_print calls first; NULL = none. */
void err_before_print(void (*hook)(void));

/* The names of an enum's values (cell, optimizer and schedule kinds): names[k] for 0 <= k < n,
 * else "?"; and the value named s, or -1 when none is. */
const char *err_enum_name(const char *const *names, int n, int k);
int err_enum_value(const char *const *names, int n, const char *s);

/* Aborts the process (the MPI job, when MPI is initialised) after printing file, line and msg. */
_Noreturn void err_abort(const char *file, int line, const char *msg);

#define CHARLM_CHECK(cond)                                                                   \
    do {                                                                                     \
        if (!(cond)) err_abort(__FILE__, __LINE__, "check failed: " #cond);                  \
    } while (0)

/* calloc, a growing array and strdup that abort on failure, naming the caller's file and line:
 * every buffer is allocated at start-up, so running out of memory there is fatal, not
 * recoverable. The caller owns (frees) the result. */
void *xcalloc_at(size_t n, size_t size, const char *file, int line);
char *xstrdup_at(const char *s, const char *file, int line);
/* Makes room for `need` elements of `size` bytes in the array p of *cap elements: returns p
 * when *cap >= need, else a larger zero-extended copy (p freed, *cap at least doubled). */
void *xgrow_at(void *p, size_t *cap, size_t need, size_t size, const char *file, int line);

#define xcalloc(n, size) xcalloc_at((n), (size), __FILE__, __LINE__)
#define xstrdup(s) xstrdup_at((s), __FILE__, __LINE__)
#define xgrow(p, cap, need, size) xgrow_at((p), (cap), (need), (size), __FILE__, __LINE__)

#endif
