#include "charlm/err.h"

#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char err_buf[16384]; /* a message may name a path of CHARLM_PATH_MAX bytes and more */
static int err_have;

int err_set(int rc, const char *fmt, ...) {
    if (!err_have) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err_buf, sizeof err_buf, fmt, ap);
        va_end(ap);
        err_have = 1;
    }
    return rc;
}

const char *err_message(void) { return err_have ? err_buf : ""; }

void err_clear(void) {
    err_have = 0;
    err_buf[0] = '\0';
}

static void (*print_hook)(void);

void err_before_print(void (*hook)(void)) { print_hook = hook; }

void err_print(void) {
    if (print_hook) print_hook();
    fprintf(stderr, "charlm: error: %s\n", err_message());
    fflush(stderr);
}

const char *err_enum_name(const char *const *names, int n, int k) {
    return k >= 0 && k < n ? names[k] : "?";
}

int err_enum_value(const char *const *names, int n, const char *s) {
    for (int k = 0; k < n; k++)
        if (!strcmp(names[k], s)) return k;
    return -1;
}

_Noreturn void err_abort(const char *file, int line, const char *msg) {
    fprintf(stderr, "charlm: internal error at %s:%d: %s\n", file, line, msg);
    fflush(stderr);
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin) MPI_Abort(MPI_COMM_WORLD, 70);
    abort();
}

void *xcalloc_at(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) err_abort(file, line, "out of memory");
    return p;
}

char *xstrdup_at(const char *s, const char *file, int line) {
    size_t n = strlen(s) + 1;
    char *p = xcalloc_at(n, 1, file, line);
    memcpy(p, s, n);
    return p;
}

void *xgrow_at(void *p, size_t *cap, size_t need, size_t size, const char *file, int line) {
    if (need <= *cap) return p;
    size_t ncap = *cap ? 2 * *cap : 16;
    while (ncap < need) ncap *= 2;
    void *q = xcalloc_at(ncap, size, file, line);
    if (*cap) memcpy(q, p, *cap * size);
    free(p);
    *cap = ncap;
    return q;
}
