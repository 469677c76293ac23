#include "charlm/prepare.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "charlm/err.h"
#include "charlm/fileio.h"
#include "charlm/h5io.h"
#include "charlm/signals.h"
#include "charlm/textsrc.h"
#include "charlm/tokens.h"
#include "charlm/vocab.h"

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Gives the message of a failed step the command's name. */
static int as_prepare(int rc) {
    if (rc == CHARLM_OK) return rc;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", err_message());
    err_clear();
    return err_set(rc, "prepare: %s", msg);
}

/* An input that names a prepared corpus is refused; one that only looks like one (a .h5 name)
 * is refused with what is wrong with it. */
static int refuse_prepared(const char *input) {
    if (!tokens_is_prepared(input)) return CHARLM_OK;
    tokens_reader_t r;
    int rc = tokens_open(&r, input, "prepare");
    if (rc != CHARLM_OK) return rc;
    tokens_close(&r);
    return err_set(CHARLM_EINPUT, "prepare: %s is already a prepared corpus", input);
}

/* Refuses an output that is one of the n files at paths (the same file, by device and inode,
 * whatever its name): replacing it would destroy the only copy of the text. */
static int refuse_input_as_output(const char *out, const struct stat *so,
                                  const char *const *paths, int n) {
    for (int i = 0; i < n; i++) {
        struct stat si;
        if (stat(paths[i], &si) == 0 && si.st_dev == so->st_dev && si.st_ino == so->st_ino)
            return err_set(CHARLM_EINPUT,
                           "prepare: the output %s is the input %s: refusing to replace it "
                           "(choose another -o)", out, paths[i]);
    }
    return CHARLM_OK;
}

/* An existing output may be replaced only when it is a prepared corpus, or with PREPARE_FORCE. */
static int check_output(const char *out, const char *const *inputs, int n, int flags) {
    struct stat so;
    if (stat(out, &so) != 0) return CHARLM_OK; /* a new file */
    int rc = refuse_input_as_output(out, &so, inputs, n);
    if (rc != CHARLM_OK || (flags & PREPARE_FORCE)) return rc;
    tokens_reader_t r;
    int prepared = h5io_is_hdf5(out) && tokens_open(&r, out, "prepare") == CHARLM_OK;
    if (prepared) tokens_close(&r);
    err_clear();
    if (!prepared)
        return err_set(CHARLM_EINPUT,
                       "prepare: %s exists and is not a prepared corpus: refusing to replace it "
                       "(give --force to replace it)", out);
    return CHARLM_OK;
}

/* The second pass: every character of ts, in order, into /tokens of w. */
static int encode(tokens_writer_t *w, textsrc_t *ts) {
    int32_t *ids = xcalloc(TOKENS_CHUNK, sizeof *ids); /* (TOKENS_CHUNK) */
    int rc = CHARLM_OK;
    for (int64_t done = 0; done < ts->total && rc == CHARLM_OK;) {
        int64_t k = ts->total - done < (int64_t)TOKENS_CHUNK ? ts->total - done
                                                             : (int64_t)TOKENS_CHUNK;
        rc = signals_check(); /* a stop between chunks: the caller removes the file */
        if (rc == CHARLM_OK) rc = textsrc_read(ids, ts, done, k);
        if (rc == CHARLM_OK) rc = as_prepare(tokens_append(w, ids, (size_t)k));
        done += k;
    }
    free(ids);
    return rc;
}

/* The message of a failed prepare_run: a stop signal is named as such, and any failure after
 * the temporary file was made says that the output was left as it was. */
static int failed(int rc, const char *out, int made_tmp) {
    if (rc == CHARLM_EINTERRUPTED) {
        err_clear();
        return err_set(rc, "prepare: stopped by %s: %s was not written (run the same command "
                       "again)", signals_name(signals_pending()), out);
    }
    if (!made_tmp) return rc;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", err_message());
    err_clear();
    return err_set(rc, "%s; %s was not written (its temporary file is removed)", msg, out);
}

int prepare_run(const char *out, const char *const *inputs, int n, int flags) {
    CHARLM_CHECK(n >= 1);
    const int verbose = flags & PREPARE_VERBOSE;
    double t0 = seconds();
    size_t len = strlen(out);
    char *tmp = xcalloc(len + 5, 1);
    snprintf(tmp, len + 5, "%s.tmp", out);
    tokens_writer_t w;
    int rc = check_output(out, inputs, n, flags);
    /* the output first, so that an unwritable one fails before the corpus is read; from here on
     * every way out but success removes the temporary file */
    const int writing = rc == CHARLM_OK && (rc = as_prepare(tokens_create(&w, tmp))) == CHARLM_OK;

    for (int i = 0; i < n && rc == CHARLM_OK; i++) rc = refuse_prepared(inputs[i]);
    /* first pass: resolve, validate, collect the vocabulary, hash */
    uint64_t *bitmap = xcalloc(VOCAB_BITMAP_WORDS, sizeof *bitmap);
    textsrc_t ts = {0};
    if (rc == CHARLM_OK)
        rc = textsrc_open(&ts, bitmap, inputs, n, "prepare",
                          TEXTSRC_DIGEST | (verbose ? TEXTSRC_NOTE_SKIPS : 0));
    struct stat so;
    /* a directory or glob input may hold the output: compare with every file it gave */
    if (rc == CHARLM_OK && stat(out, &so) == 0)
        rc = refuse_input_as_output(out, &so, (const char *const *)ts.paths, ts.nfiles);
    vocab_t v = {0};
    if (rc == CHARLM_OK) {
        vocab_from_bitmap(&v, bitmap);
        textsrc_set_vocab(&ts, &v);
        rc = as_prepare(tokens_begin(&w, &v, ts.total));
    }
    if (rc == CHARLM_OK) rc = encode(&w, &ts);
    tokens_sources_t sources = {
        .nfiles = ts.nfiles,
        .paths = ts.paths,
        .bytes = ts.nbytes,
        .chars = ts.nchars,
        .sha256 = ts.sha256,
        .sha256_all = ts.sha256_all,
    };
    if (writing) {
        int closed = as_prepare(tokens_finish(&w, rc == CHARLM_OK ? &sources : NULL));
        if (rc == CHARLM_OK) rc = closed;
    }
    int e = 0;
    if (rc == CHARLM_OK && (e = fileio_commit(tmp, out)) != 0)
        rc = err_set(CHARLM_EINPUT, "prepare: cannot rename %s to %s: %s", tmp, out, strerror(e));
    if (rc != CHARLM_OK) {
        if (writing) remove(tmp);
        rc = failed(rc, out, writing);
    }

    if (rc == CHARLM_OK && verbose) {
        double dt = seconds() - t0, bytes = 0;
        for (int i = 0; i < ts.nfiles; i++) bytes += (double)ts.nbytes[i];
        double mb = 1e-6 * bytes;
        struct stat st;
        fprintf(stderr,
                "charlm: prepared %s: %lld chars, vocab %d (%s), %d file%s, %.1f MB -> %.1f MB, "
                "%.2f s, %.1f MB/s\n",
                out, (long long)ts.total, v.size,
                v.size <= 256 ? "uint8" : v.size <= 65536 ? "uint16" : "uint32", ts.nfiles,
                ts.nfiles == 1 ? "" : "s", mb,
                stat(out, &st) == 0 ? 1e-6 * (double)st.st_size : 0.0, dt,
                dt > 0 ? mb / dt : 0.0);
    }
    vocab_free(&v);
    textsrc_close(&ts);
    free(bitmap);
    free(tmp);
    return rc;
}

int prepare_main(int argc, char **argv, const dist_t *d) {
    const char **inputs = xcalloc((size_t)argc + 1, sizeof *inputs);
    const char *out = NULL;
    int n = 0, rc = CHARLM_OK, flags = PREPARE_VERBOSE;
    for (int i = 0; i < argc && rc == CHARLM_OK; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--force")) {
            flags |= PREPARE_FORCE;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (i + 1 < argc) out = argv[++i];
            else rc = err_set(CHARLM_EUSAGE, "prepare: option %s needs a value", a);
        } else if (a[0] == '-') {
            rc = err_set(CHARLM_EUSAGE, "prepare: unknown option '%s'", a);
        } else {
            inputs[n++] = a;
        }
    }
    if (rc == CHARLM_OK && (n == 0 || !out))
        rc = err_set(CHARLM_EUSAGE, "prepare: %s (usage: charlm prepare CORPUS... -o OUT.h5 [--force])",
                     n == 0 ? "no corpus given" : "missing -o OUT.h5");
    if (rc == CHARLM_OK && d->rank == 0) rc = prepare_run(out, inputs, n, flags);
    free(inputs);
    return dist_agree(d, rc);
}
