/* check.h: what the C tests share. A failed check prints file, line and the expression and makes
 * the test exit non-zero at the end (tests keep going to show every failure). A test that needs
 * files makes its own temporary directory (tmpdir_make); check_report removes it when every
 * check passed and names it otherwise, for a look at what was left. */
#ifndef CHARLM_TEST_CHECK_H
#define CHARLM_TEST_CHECK_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int check_failures;

#define EXPECT(cond)                                                                    \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond);       \
            check_failures++;                                                           \
        }                                                                               \
    } while (0)

#define EXPECT_MSG(cond, ...)                                                           \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: expected %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                               \
            fputc('\n', stderr);                                                        \
            check_failures++;                                                           \
        }                                                                               \
    } while (0)

/* ---- the test's temporary directory ---- */

#define PATH_LEN 4200 /* room for tmpdir and a relative path */

static char tmpdir[512]; /* "" until tmpdir_make */

/* Creates $TMPDIR/charlm-test-NAME-XXXXXX (TMPDIR unset: /tmp); exits when it cannot. */
static inline void tmpdir_make(const char *name) {
    const char *base = getenv("TMPDIR");
    int len = snprintf(tmpdir, sizeof tmpdir, "%s/charlm-test-%s-XXXXXX",
                       base && *base ? base : "/tmp", name);
    if (len >= (int)sizeof tmpdir || !mkdtemp(tmpdir)) {
        perror(tmpdir);
        exit(1);
    }
}

/* out (PATH_LEN bytes) = tmpdir/rel; returns out. */
static inline const char *tmp_path(char *out, const char *rel) {
    snprintf(out, PATH_LEN, "%s/%s", tmpdir, rel);
    return out;
}

/* Writes n bytes of data to tmpdir/rel (replacing it); exits when it cannot. */
static inline void write_bytes(const char *rel, const void *data, size_t n) {
    char p[PATH_LEN];
    FILE *f = fopen(tmp_path(p, rel), "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        perror(p);
        exit(1);
    }
}

static inline void write_text(const char *rel, const char *s) { write_bytes(rel, s, strlen(s)); }

static inline void make_dir(const char *rel) {
    char p[PATH_LEN];
    if (mkdir(tmp_path(p, rel), 0755) != 0) {
        perror(p);
        exit(1);
    }
}

/* The whole of tmpdir/rel, NUL-terminated, in a malloc'd buffer; *n gets its size. */
static inline char *read_all(const char *rel, size_t *n) {
    char p[PATH_LEN];
    FILE *f = fopen(tmp_path(p, rel), "rb");
    if (!f) {
        perror(p);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc(*n + 1);
    if (!s || fread(s, 1, *n, f) != *n) exit(1);
    s[*n] = '\0';
    fclose(f);
    return s;
}

/* rm -r path (symlinks removed, not followed). */
static inline void remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (!S_ISDIR(st.st_mode)) {
        unlink(path);
        return;
    }
    DIR *d = opendir(path);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char sub[PATH_LEN];
        if (snprintf(sub, sizeof sub, "%s/%s", path, de->d_name) < (int)sizeof sub)
            remove_tree(sub);
    }
    if (d) closedir(d);
    rmdir(path);
}

/* Returns the process exit status: 0 when every check passed. The temporary directory goes
 * when they did. */
static inline int check_report(const char *name) {
    if (check_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, check_failures);
        if (tmpdir[0]) fprintf(stderr, "%s: its files are in %s\n", name, tmpdir);
        return 1;
    }
    if (tmpdir[0]) remove_tree(tmpdir);
    printf("%s: all checks passed\n", name);
    return 0;
}

#endif
