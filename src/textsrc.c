#include "charlm/textsrc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "charlm/err.h"
#include "charlm/sha256.h"
#include "charlm/signals.h"
#include "charlm/utf8.h"

#define TEXT_PROBE ((size_t)8 << 10) /* a NUL in this many leading bytes marks a non-text file */

/* ---- resolving a spec to its candidate files ---- */

typedef struct {
    char *path;
    dev_t dev;
    ino_t ino;
    int dup; /* the same file as an earlier path (symlink or hard link) */
} entry_t;

typedef struct {
    entry_t *v;
    size_t n, cap;
} entries_t;

static void entries_add(entries_t *e, const char *path, const struct stat *st) {
    e->v = xgrow(e->v, &e->cap, e->n + 1, sizeof *e->v);
    e->v[e->n++] = (entry_t){.path = xstrdup(path), .dev = st->st_dev, .ino = st->st_ino};
}

static void entries_free(entries_t *e) {
    for (size_t i = 0; i < e->n; i++) free(e->v[i].path);
    free(e->v);
    memset(e, 0, sizeof *e);
}

static int cmp_path(const void *a, const void *b) {
    return strcmp(((const entry_t *)a)->path, ((const entry_t *)b)->path);
}

/* Orders by file identity, then by position in path order, so the first path of a file wins. */
static int cmp_identity(const void *a, const void *b) {
    const entry_t *x = *(entry_t *const *)a, *y = *(entry_t *const *)b;
    if (x->dev != y->dev) return x->dev < y->dev ? -1 : 1;
    if (x->ino != y->ino) return x->ino < y->ino ? -1 : 1;
    return x < y ? -1 : x > y;
}

static void sort_and_mark_duplicates(entries_t *e) {
    qsort(e->v, e->n, sizeof *e->v, cmp_path);
    entry_t **by_id = xcalloc(e->n, sizeof *by_id);
    for (size_t i = 0; i < e->n; i++) by_id[i] = &e->v[i];
    qsort(by_id, e->n, sizeof *by_id, cmp_identity);
    for (size_t i = 1; i < e->n; i++)
        if (by_id[i]->dev == by_id[i - 1]->dev && by_id[i]->ino == by_id[i - 1]->ino)
            by_id[i]->dup = 1;
    free(by_id);
}

/* The regular files directly inside dir (not recursive). Hidden entries (".name") are left out,
 * as a shell glob would: they are editor and system droppings, not corpus text. */
static int list_directory(entries_t *e, const char *dir, const char *role) {
    DIR *d = opendir(dir);
    if (!d) return err_set(CHARLM_EINPUT, "%s: cannot read %s: %s", role, dir, strerror(errno));
    size_t dlen = strlen(dir);
    int slash = dlen > 0 && dir[dlen - 1] == '/';
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') continue;
        size_t nlen = strlen(de->d_name), k = dlen;
        char *path = xcalloc(dlen + nlen + 2, 1);
        memcpy(path, dir, dlen);
        if (!slash) path[k++] = '/';
        memcpy(path + k, de->d_name, nlen);
        struct stat st;
        /* stat follows symlinks: a link to a regular file is a file, a dangling one is nothing */
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) entries_add(e, path, &st);
        free(path);
    }
    closedir(d);
    if (e->n == 0) return err_set(CHARLM_EINPUT, "%s: no files in directory %s", role, dir);
    return CHARLM_OK;
}

static int list_glob(entries_t *e, const char *pattern, const char *role) {
    glob_t g;
    /* without GLOB_ERR unreadable directories are passed over, so the only failures are
     * GLOB_NOMATCH (reported below as no match) and GLOB_NOSPACE */
    int rc = glob(pattern, 0, NULL, &g);
    if (rc == GLOB_NOSPACE) err_abort(__FILE__, __LINE__, "out of memory");
    for (size_t i = 0; rc == 0 && i < g.gl_pathc; i++) {
        struct stat st;
        if (stat(g.gl_pathv[i], &st) == 0 && S_ISREG(st.st_mode))
            entries_add(e, g.gl_pathv[i], &st);
    }
    globfree(&g);
    if (e->n == 0) return err_set(CHARLM_EINPUT, "%s: no file matches %s", role, pattern);
    return CHARLM_OK;
}

/* Fills e with the candidate files of spec, sorted, duplicates marked; *named is set when spec
 * names one file. */
static int resolve(entries_t *e, int *named, const char *spec, const char *role) {
    *named = 0;
    if (spec[0] == '\0') return err_set(CHARLM_EINPUT, "%s is not set", role);
    struct stat st;
    int rc;
    if (stat(spec, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            rc = list_directory(e, spec, role);
        } else if (!S_ISREG(st.st_mode)) {
            rc = err_set(CHARLM_EINPUT, "%s: not a regular file or directory: %s", role, spec);
        } else {
            *named = 1;
            entries_add(e, spec, &st);
            rc = CHARLM_OK;
        }
    } else if (errno != ENOENT) {
        rc = err_set(CHARLM_EINPUT, "%s: cannot read %s: %s", role, spec, strerror(errno));
    } else if (strpbrk(spec, "*?[")) {
        rc = list_glob(e, spec, role);
    } else {
        rc = err_set(CHARLM_EINPUT, "%s: no such file or directory: %s", role, spec);
    }
    if (rc == CHARLM_OK) sort_and_mark_duplicates(e);
    return rc;
}

/* ---- the cursor: one open file, a buffer, and the source index of the next character ---- */

static int read_error(const textsrc_t *ts, int f) {
    return err_set(CHARLM_EINPUT, "%s: cannot read %s: %s", ts->role, ts->paths[f],
                   strerror(errno));
}

static void cursor_close(textsrc_t *ts) {
    if (ts->open) close(ts->fd);
    free(ts->buf);
    ts->open = 0;
    ts->buf = NULL;
    ts->pos = ts->have = 0;
}

static int64_t mtime_ns(const struct stat *st) {
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* Opens file f at `byte`, the first byte of character `at`. With `scanned`, the file must be as
 * the scan saw it; otherwise (the scan itself) its modification time is recorded. */
static int cursor_open(textsrc_t *ts, int f, int64_t byte, int64_t at, int scanned) {
    if (!ts->open || ts->file != f) {
        cursor_close(ts);
        ts->fd = open(ts->paths[f], O_RDONLY);
        if (ts->fd < 0) return read_error(ts, f);
        ts->open = 1;
        ts->file = f;
        struct stat st;
        if (fstat(ts->fd, &st) != 0) return read_error(ts, f);
        if (!scanned) ts->mtime[f] = mtime_ns(&st);
        else if (st.st_size != ts->nbytes[f] || mtime_ns(&st) != ts->mtime[f])
            return err_set(CHARLM_EINPUT, "%s: file changed since it was scanned", ts->paths[f]);
    }
    if (!ts->buf) ts->buf = xcalloc(TEXTSRC_BLOCK, 1);
    if (lseek(ts->fd, (off_t)byte, SEEK_SET) < 0) return read_error(ts, f);
    ts->base = byte;
    ts->at = at;
    ts->pos = ts->have = 0;
    ts->eof = 0;
    return CHARLM_OK;
}

/* Refills the buffer (its unread tail, an incomplete sequence, moved to the front) up to
 * TEXTSRC_BLOCK bytes or the end of the file; *got gets the count of new bytes. */
static int cursor_fill(textsrc_t *ts, size_t *got) {
    /* a block is the unit of work while a corpus loads: a stop asked for in start-up ends it */
    int rc = signals_check();
    if (rc != CHARLM_OK) return rc;
    size_t keep = ts->have - ts->pos;
    memmove(ts->buf, ts->buf + ts->pos, keep);
    ts->base += (int64_t)ts->pos;
    ts->pos = 0;
    ts->have = keep;
    while (ts->have < TEXTSRC_BLOCK && !ts->eof) {
        ssize_t k = read(ts->fd, ts->buf + ts->have, TEXTSRC_BLOCK - ts->have);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return read_error(ts, ts->file);
        if (k == 0) ts->eof = 1;
        ts->have += (size_t)k;
    }
    *got = ts->have - keep;
    return CHARLM_OK;
}

/* What decode does with each character. */
typedef enum { DECODE_SKIP, DECODE_IDS, DECODE_SCAN } decode_mode_t;

static int invalid_utf8(const textsrc_t *ts, size_t pos) {
    return err_set(CHARLM_EINPUT, "%s: invalid UTF-8 at byte %lld", ts->paths[ts->file],
                   (long long)(ts->base + (int64_t)pos));
}

static int not_in_vocab(const textsrc_t *ts, uint32_t cp, size_t pos) {
    return err_set(CHARLM_EINPUT, "%s: character U+%04X at byte %lld is not in the vocabulary",
                   ts->paths[ts->file], (unsigned)cp, (long long)(ts->base + (int64_t)pos));
}

/* Decodes up to n characters from the buffered bytes: their ids into ids (DECODE_IDS), their code
 * points into bitmap (DECODE_SCAN), or nothing (DECODE_SKIP). Stops early where the buffer holds
 * no complete sequence. Returns the count decoded, or -1 with the error recorded. Runs of ASCII
 * take a loop of their own: they are most of most text. */
static inline int64_t decode(textsrc_t *ts, int32_t *ids, uint64_t *bitmap, int64_t n,
                             decode_mode_t mode) {
    const unsigned char *s = ts->buf;
    const int32_t *id_of = ts->id_of;
    size_t pos = ts->pos, have = ts->have;
    int64_t k = 0;
    unsigned char ascii[0x80] = {0}; /* the ASCII code points seen (DECODE_SCAN) */
    while (k < n && pos < have) {
        if (s[pos] < 0x80) {
            size_t run = have - pos, i = 0;
            if ((int64_t)run > n - k) run = (size_t)(n - k);
            const unsigned char *p = s + pos;
            if (mode == DECODE_IDS) {
                int32_t bad = 0, *out = ids + k;
                for (; i < run && p[i] < 0x80; i++) bad |= (out[i] = id_of[p[i]]);
                if (bad < 0)
                    for (size_t j = 0; j < i; j++)
                        if (out[j] < 0) return not_in_vocab(ts, p[j], pos + j), -1;
            } else if (mode == DECODE_SCAN) {
                for (; i < run && p[i] < 0x80; i++) ascii[p[i]] = 1;
            } else {
                while (i < run && p[i] < 0x80) i++;
            }
            pos += i;
            k += (int64_t)i;
            continue;
        }
        uint32_t cp;
        int len = utf8_decode(&cp, s + pos, have - pos);
        if (len < 0 && !ts->eof) break; /* the rest of the sequence is in the next read */
        if (len <= 0) return invalid_utf8(ts, pos), -1;
        if (mode == DECODE_IDS) {
            int32_t id = cp < ts->nid ? id_of[cp] : -1;
            if (id < 0) return not_in_vocab(ts, cp, pos), -1;
            ids[k] = id;
        } else if (mode == DECODE_SCAN) {
            vocab_bitmap_set(bitmap, cp);
        }
        pos += (size_t)len;
        k++;
    }
    if (mode == DECODE_SCAN)
        for (uint32_t c = 0; c < 0x80; c++)
            if (ascii[c]) vocab_bitmap_set(bitmap, c);
    ts->pos = pos;
    return k;
}

/* Decodes the next n characters of the source (within its length) from the cursor into ids, or
 * skips them when ids is NULL, opening the following files as it reaches their starts. */
static int cursor_run(textsrc_t *ts, int32_t *ids, int64_t n) {
    while (n > 0) {
        if (ts->at == ts->start[ts->file + 1]) { /* the end of this file */
            int rc = cursor_open(ts, ts->file + 1, 0, ts->at, 1);
            if (rc != CHARLM_OK) return rc;
            continue;
        }
        int64_t want = ts->start[ts->file + 1] - ts->at;
        if (want > n) want = n;
        int64_t k = ids ? decode(ts, ids, NULL, want, DECODE_IDS)
                        : decode(ts, NULL, NULL, want, DECODE_SKIP);
        if (k < 0) return CHARLM_EINPUT;
        ts->at += k;
        n -= k;
        if (ids) ids += k;
        if (k == want) continue;
        if (ts->eof) /* fewer characters than the scan counted */
            return err_set(CHARLM_EINPUT, "%s: file changed since it was scanned",
                           ts->paths[ts->file]);
        size_t got;
        int rc = cursor_fill(ts, &got);
        if (rc != CHARLM_OK) return rc;
        ts->nread += (int64_t)got;
    }
    return CHARLM_OK;
}

/* The last block that starts at or before character `at` (of two at the same character, the
 * later: a file holding no characters is passed over). */
static const textsrc_block_t *block_of(const textsrc_t *ts, int64_t at) {
    size_t lo = 0, hi = ts->nblocks; /* blocks[0].at = 0 <= at */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (ts->blocks[mid].at <= at) lo = mid;
        else hi = mid;
    }
    return &ts->blocks[lo];
}

/* Puts the cursor at character `first`: from where it stands when that is on the way (same file,
 * at or after the block of first), else from the block of first. */
static int cursor_seek(textsrc_t *ts, int64_t first) {
    const textsrc_block_t *b = block_of(ts, first);
    int on_the_way = ts->open && ts->file == b->file && ts->at >= b->at && ts->at <= first;
    if (!on_the_way) {
        int rc = cursor_open(ts, b->file, b->byte, b->at, 1);
        if (rc != CHARLM_OK) return rc;
    }
    return cursor_run(ts, NULL, first - ts->at);
}

/* ---- the scan ---- */

static void add_block(textsrc_t *ts) {
    ts->blocks = xgrow(ts->blocks, &ts->cap_blocks, ts->nblocks + 1, sizeof *ts->blocks);
    ts->blocks[ts->nblocks++] =
        (textsrc_block_t){.at = ts->at, .byte = ts->base + (int64_t)ts->pos, .file = ts->file};
}

/* Room for one more file in every per-file array (they share one capacity). */
static void grow_files(textsrc_t *ts, int digest) {
    size_t need = (size_t)ts->nfiles + 1, cap = ts->cap_files;
#define GROW(a) (cap = ts->cap_files, (a) = xgrow((a), &cap, need, sizeof *(a)))
    GROW(ts->paths);
    GROW(ts->nbytes);
    GROW(ts->nchars);
    GROW(ts->mtime);
    if (digest) GROW(ts->sha256);
#undef GROW
    ts->cap_files = cap;
    ts->start = xgrow(ts->start, &ts->cap_start, need + 1, sizeof *ts->start);
}

/* Scans the file at index ts->nfiles (its path set) from the cursor: 1 = text (counted, its
 * blocks added, code points ORed into bitmap, bytes hashed into all), 0 = not text, or minus the
 * status of the failure recorded (an I/O or UTF-8 error, a stop signal). */
static int scan_file(textsrc_t *ts, uint64_t *bitmap, sha256_t *all) {
    int f = ts->nfiles;
    sha256_t one;
    sha256_init(&one);
    size_t got, nblocks = ts->nblocks;
    int rc = cursor_open(ts, f, 0, ts->total, 0);
    if (rc == CHARLM_OK) rc = cursor_fill(ts, &got);
    if (rc != CHARLM_OK) return -rc;
    if (memchr(ts->buf, 0, ts->have < TEXT_PROBE ? ts->have : TEXT_PROBE)) return 0;
    for (;;) {
        if (all) {
            sha256_update(all, ts->buf + ts->have - got, got);
            sha256_update(&one, ts->buf + ts->have - got, got);
        }
        if (ts->pos < ts->have) add_block(ts);
        int64_t k = decode(ts, NULL, bitmap, INT64_MAX, DECODE_SCAN);
        if (k < 0) {
            rc = CHARLM_EINPUT;
            break;
        }
        ts->at += k;
        if (ts->eof) {
            ts->nbytes[f] = ts->base + (int64_t)ts->have;
            ts->nchars[f] = ts->at - ts->total;
            if (all) sha256_final(&one, ts->sha256[f]);
            return 1;
        }
        if ((rc = cursor_fill(ts, &got)) != CHARLM_OK) break;
    }
    ts->nblocks = nblocks;
    return -rc;
}

/* Resolves and scans one spec, appending its text files to ts. */
static int open_spec(textsrc_t *ts, uint64_t *bitmap, sha256_t *all, const char *spec,
                     int flags) {
    const char *role = ts->role;
    entries_t e = {0};
    int named;
    int rc = resolve(&e, &named, spec, role);
    size_t skipped = 0;
    const char *first_skipped = NULL;
    int64_t total0 = ts->total;
    int nfiles0 = ts->nfiles;
    for (size_t i = 0; i < e.n && rc == CHARLM_OK; i++) {
        if (e.v[i].dup) continue;
        grow_files(ts, all != NULL);
        int f = ts->nfiles;
        ts->paths[f] = xstrdup(e.v[i].path);
        int text = scan_file(ts, bitmap, all);
        cursor_close(ts);
        if (text == 1) {
            ts->total += ts->nchars[f];
            ts->start[++ts->nfiles] = ts->total;
            continue;
        }
        free(ts->paths[f]);
        ts->paths[f] = NULL;
        if (text < 0)
            rc = -text;
        else if (named)
            rc = err_set(CHARLM_EINPUT, "%s: %s is not a text file (NUL byte in its first 8 KiB)",
                         role, e.v[i].path);
        else if (!skipped++)
            first_skipped = e.v[i].path;
    }
    if (rc == CHARLM_OK && ts->nfiles == nfiles0)
        rc = err_set(CHARLM_EINPUT, "%s: no text files in %s (%zu non-text file%s skipped)", role,
                     spec, skipped, skipped == 1 ? "" : "s");
    if (rc == CHARLM_OK && (flags & TEXTSRC_NOTE_SKIPS) && skipped)
        fprintf(stderr, "charlm: note: %s: skipped %zu non-text file%s (e.g. %s)\n", role, skipped,
                skipped == 1 ? "" : "s", first_skipped);
    if (rc == CHARLM_OK && ts->total == total0)
        rc = err_set(CHARLM_EINPUT, "%s: %s is empty (0 characters)", role, spec);
    entries_free(&e);
    return rc;
}

int textsrc_open(textsrc_t *ts, uint64_t *bitmap, const char *const *specs, int nspecs,
                 const char *role, int flags) {
    CHARLM_CHECK(nspecs >= 1);
    memset(ts, 0, sizeof *ts);
    ts->role = xstrdup(role);
    grow_files(ts, flags & TEXTSRC_DIGEST);
    ts->start[0] = 0;
    sha256_t all;
    sha256_init(&all);
    int rc = CHARLM_OK;
    for (int i = 0; i < nspecs && rc == CHARLM_OK; i++)
        rc = open_spec(ts, bitmap, flags & TEXTSRC_DIGEST ? &all : NULL, specs[i], flags);
    if (rc != CHARLM_OK) {
        textsrc_close(ts);
        return rc;
    }
    if (flags & TEXTSRC_DIGEST) sha256_final(&all, ts->sha256_all);
    return CHARLM_OK;
}

void textsrc_set_vocab(textsrc_t *ts, const vocab_t *v) {
    /* ASCII is always in the table: the ASCII loop of decode looks up without a bound check */
    size_t n = v->size ? (size_t)v->cps[v->size - 1] + 1 : 0;
    if (n < 0x80) n = 0x80;
    free(ts->id_of);
    ts->id_of = xcalloc(n, sizeof *ts->id_of);
    ts->nid = n;
    for (size_t cp = 0; cp < n; cp++) ts->id_of[cp] = -1;
    for (int i = 0; i < v->size; i++) ts->id_of[v->cps[i]] = i;
}

int textsrc_read(int32_t *ids, textsrc_t *ts, int64_t first, int64_t n) {
    CHARLM_CHECK(ts->id_of && first >= 0 && n >= 0 && first + n <= ts->total);
    if (n == 0) return CHARLM_OK;
    int rc = ts->open && ts->at == first ? CHARLM_OK : cursor_seek(ts, first);
    if (rc == CHARLM_OK) rc = cursor_run(ts, ids, n);
    /* a failed cursor starts afresh; one at the end of the source lets its file go */
    if (rc != CHARLM_OK || ts->at == ts->total) cursor_close(ts);
    return rc;
}

void textsrc_close(textsrc_t *ts) {
    cursor_close(ts);
    for (int i = 0; i < ts->nfiles; i++) free(ts->paths[i]);
    free(ts->paths);
    free(ts->nbytes);
    free(ts->nchars);
    free(ts->start);
    free(ts->sha256);
    free(ts->role);
    free(ts->mtime);
    free(ts->blocks);
    free(ts->id_of);
    memset(ts, 0, sizeof *ts);
}
