/* log: progress display on stderr, samples' stream, and metrics.jsonl (its rotation, truncation
 * on resume and records). Only rank 0 calls it. */

#include "charlm/log.h"

#include "charlm/err.h"
#include "charlm/fileio.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define LN2 0.69314718055994530942

/* Keeps only the lines of path up to `step` (a line's step is its first field), through
 * path.tmp and fileio_commit, so that a crash leaves the old file or the new one. */
static int truncate_after(const char *path, int64_t step) {
    FILE *in = fopen(path, "r");
    if (!in) return errno == ENOENT ? CHARLM_OK
                                    : err_set(CHARLM_EINPUT, "%s: cannot read: %s", path,
                                              strerror(errno));
    size_t n = strlen(path) + sizeof ".tmp";
    char *tmp = xcalloc(n, 1);
    snprintf(tmp, n, "%s.tmp", path);
    int rc = CHARLM_OK;
    FILE *out = fopen(tmp, "w");
    if (!out) {
        rc = err_set(CHARLM_EINPUT, "%s: cannot write: %s", tmp, strerror(errno));
    } else {
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        /* a last line without its newline is a record cut short (a crash while writing it) */
        while ((len = getline(&line, &cap, in)) > 0 && line[len - 1] == '\n') {
            long long s;
            if (sscanf(line, "{\"step\":%lld", &s) == 1 && s > step) continue;
            fputs(line, out);
        }
        free(line);
        errno = 0;
        int e = fflush(out) != 0 || ferror(out) ? (errno ? errno : EIO) : 0;
        if (fclose(out) != 0 && !e) e = errno;
        if (e) remove(tmp);
        else e = fileio_commit(tmp, path);
        if (e) rc = err_set(CHARLM_EINPUT, "%s: cannot rewrite: %s", path, strerror(e));
    }
    fclose(in);
    free(tmp);
    return rc;
}

/* Renames path to path.N, the first N that does not exist, if path exists. */
static int move_aside(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return CHARLM_OK;
    size_t n = strlen(path) + 24;
    char *aside = xcalloc(n, 1);
    for (int i = 1;; i++) {
        snprintf(aside, n, "%s.%d", path, i);
        if (stat(aside, &st) != 0) break;
    }
    int rc = CHARLM_OK;
    if (rename(path, aside) != 0)
        rc = err_set(CHARLM_EINPUT, "%s: cannot move aside: %s", path, strerror(errno));
    free(aside);
    return rc;
}

static log_t *open_log; /* the log whose live line an error line must end first */
static void end_open_live(void);

int log_open(log_t *lg, const log_params_t *p, int resumed, int64_t step) {
    *lg = (log_t){.p = *p, .tty = isatty(fileno(stderr))};
    size_t n = strlen(p->run_dir) + sizeof "/metrics.jsonl";
    char *path = xcalloc(n, 1);
    snprintf(path, n, "%s/metrics.jsonl", p->run_dir);
    int rc = resumed ? truncate_after(path, step) : move_aside(path);
    struct stat st;
    if (!rc && (!(lg->metrics = fopen(path, "a")) || fstat(fileno(lg->metrics), &st) != 0))
        rc = err_set(CHARLM_EINPUT, "%s: cannot open for writing: %s", path, strerror(errno));
    if (rc) {
        if (lg->metrics) fclose(lg->metrics);
        lg->metrics = NULL;
        free(path);
        return rc;
    }
    /* unbuffered: a record is one write, and after a failed one nothing is left to write later */
    setvbuf(lg->metrics, NULL, _IONBF, 0);
    lg->path = path;
    lg->bytes = (long long)st.st_size;
    open_log = lg;
    err_before_print(end_open_live);
    return CHARLM_OK;
}

void log_fmt_duration(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) {
        snprintf(buf, n, "?");
        return;
    }
    if (s > 1e9) s = 1e9;
    long t = lround(s);
    if (t < 60) snprintf(buf, n, "%lds", t);
    else if (t < 3600) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else if (t < 86400) snprintf(buf, n, "%ldh%02ldm", t / 3600, t % 3600 / 60);
    else snprintf(buf, n, "%ldd%02ldh", t / 86400, t % 86400 / 3600);
}

void log_fmt_rate(char *buf, size_t n, double r) {
    if (!isfinite(r) || r < 0) snprintf(buf, n, "?");
    else if (r < 1e3) snprintf(buf, n, "%.0f", r);
    else if (r < 1e6) snprintf(buf, n, "%.1fk", r / 1e3);
    else snprintf(buf, n, "%.2fM", r / 1e6);
}

/* A metrics.jsonl record being built: written in one piece, so that a failure leaves no part. */
typedef struct {
    char s[2048];
    size_t n;
} record_t;

static __attribute__((format(printf, 2, 3))) void rec_add(record_t *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(r->s + r->n, sizeof r->s - r->n, fmt, ap);
    va_end(ap);
    CHARLM_CHECK(k >= 0 && (size_t)k < sizeof r->s - r->n);
    r->n += (size_t)k;
}

/* A JSON number: 9 significant digits, null for NaN and infinities (not valid JSON). */
static void rec_num(record_t *r, const char *name, double v) {
    if (isfinite(v)) rec_add(r, ",\"%s\":%.9g", name, v);
    else rec_add(r, ",\"%s\":null", name);
}

/* Closes record r and appends it to metrics.jsonl. A failed write is cut back to the last
 * complete line (a partial one would join the resumed run's first record) and ends the metrics,
 * lg->error saying why. */
static void metrics_write(log_t *lg, record_t *r, int64_t step) {
    if (!lg->metrics) return;
    rec_add(r, "}\n");
    errno = 0;
    if (fwrite(r->s, 1, r->n, lg->metrics) == r->n && fflush(lg->metrics) == 0) {
        lg->bytes += (long long)r->n;
        return;
    }
    int e = errno ? errno : EIO;
    /* should this fail too, the resumed run's truncation drops the partial line */
    int cut = ftruncate(fileno(lg->metrics), (off_t)lg->bytes);
    (void)cut;
    fclose(lg->metrics);
    lg->metrics = NULL;
    snprintf(lg->error, sizeof lg->error, "%s: cannot write the record of step %" PRId64 ": %s",
             lg->path, step, strerror(e));
}

/* After writing to f (stderr or stdout): a failed write there ends the output to it. */
static void check_stream(FILE *f, int *dead) {
    if (fflush(f) != 0 || ferror(f)) *dead = 1;
}

/* Width of the terminal on stderr, 0 if unknown. */
static int term_width(void) {
#ifdef TIOCGWINSZ
    struct winsize ws;
    if (ioctl(fileno(stderr), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
#endif
    return 0;
}

/* Ends the live line, keeping it on screen. */
static void end_live(log_t *lg) {
    if (lg->live && !lg->err_dead) {
        fputc('\n', stderr);
        check_stream(stderr, &lg->err_dead);
    }
    lg->live = 0;
}

static void end_open_live(void) {
    if (open_log) end_live(open_log);
}

/* The fields of a progress line, in the order shown. */
enum { F_STEP, F_EPOCH, F_LOSS, F_LR, F_RATE, F_ELAPSED, F_ETA, F_N };

/* Joins the non-empty fields (F_N) with " | " into line (n bytes); returns its length. */
static size_t join_fields(char *line, size_t n, char f[F_N][64]) {
    size_t len = 0;
    line[0] = '\0';
    for (int k = 0; k < F_N; k++)
        if (f[k][0] && len < n)
            len += (size_t)snprintf(line + len, n - len, "%s%s", len ? " | " : "", f[k]);
    return len < n ? len : n - 1;
}

void log_train(log_t *lg, const log_train_t *m) {
    char f[F_N][64] = {{0}}, line[F_N * 64], rate[32];
    if (m->total_steps > 0) {
        int64_t pct = m->step >= m->total_steps ? 100 : m->step * 100 / m->total_steps;
        snprintf(f[F_STEP], sizeof f[F_STEP], "step %" PRId64 "/%" PRId64 " (%" PRId64 "%%)",
                 m->step, m->total_steps, pct);
    } else {
        snprintf(f[F_STEP], sizeof f[F_STEP], "step %" PRId64, m->step);
    }
    snprintf(f[F_EPOCH], sizeof f[F_EPOCH], "epoch %" PRId64, m->epoch);
    snprintf(f[F_LOSS], sizeof f[F_LOSS], "loss %.4f", m->train_loss);
    snprintf(f[F_LR], sizeof f[F_LR], "lr %.2e", m->lr);
    log_fmt_rate(rate, sizeof rate, m->chars_per_s);
    snprintf(f[F_RATE], sizeof f[F_RATE], "%s chars/s", rate);
    if (!lg->tty) { /* a log file has no clock beside it */
        memcpy(f[F_ELAPSED], "elapsed ", 8);
        log_fmt_duration(f[F_ELAPSED] + 8, sizeof f[F_ELAPSED] - 8, m->elapsed_s);
    }
    if (m->eta_s >= 0) {
        memcpy(f[F_ETA], "ETA ", 4);
        log_fmt_duration(f[F_ETA] + 4, sizeof f[F_ETA] - 4, m->eta_s);
    }
    size_t len = join_fields(line, sizeof line, f);

    if (!lg->err_dead && lg->tty) {
        /* A line wider than the terminal would wrap, and "\r" would return only to its last row:
         * whole fields go, the least telling first, then, on a very narrow terminal, the end of
         * the line. One column stays free, so that no terminal wraps at the last one. */
        static const int drop[] = {F_EPOCH, F_LR, F_RATE, F_ETA, F_LOSS};
        int w = term_width();
        for (size_t k = 0; w > 1 && len > (size_t)(w - 1) && k < sizeof drop / sizeof *drop; k++) {
            f[drop[k]][0] = '\0';
            len = join_fields(line, sizeof line, f);
        }
        if (w > 1 && len > (size_t)(w - 1)) line[w - 1] = '\0';
        fprintf(stderr, "\r\033[K%s", line);
        lg->live = 1;
        check_stream(stderr, &lg->err_dead);
    } else if (!lg->err_dead) {
        fprintf(stderr, "%s\n", line);
        check_stream(stderr, &lg->err_dead);
    }

    record_t r = {.n = 0};
    rec_add(&r, "{\"step\":%" PRId64 ",\"epoch\":%" PRId64, m->step, m->epoch);
    rec_num(&r, "train_loss", m->train_loss);
    rec_num(&r, "lr", m->lr);
    rec_num(&r, "grad_norm", m->grad_norm);
    rec_num(&r, "chars_per_s", m->chars_per_s);
    rec_num(&r, "elapsed_s", m->elapsed_s);
    if (m->nparts > 0) {
        rec_add(&r, ",\"grad_norm_layers\":[");
        for (int i = 0; i < m->nparts; i++) {
            if (isfinite(m->part_norms[i])) rec_add(&r, "%s%.9g", i ? "," : "", m->part_norms[i]);
            else rec_add(&r, "%snull", i ? "," : "");
        }
        rec_add(&r, "],\"clipped\":%s", m->clipped ? "true" : "false");
    }
    if (m->timed) rec_num(&r, "progress", m->progress);
    metrics_write(lg, &r, m->step);
}


void log_val(log_t *lg, int64_t step, double val_loss, double elapsed_s) {
    double bpc = val_loss / LN2;
    end_live(lg);
    if (!lg->err_dead) {
        fprintf(stderr, "step %" PRId64 " | val loss %.4f nats/char | %.4f bits/char\n", step,
                val_loss, bpc);
        check_stream(stderr, &lg->err_dead);
    }
    record_t r = {.n = 0};
    rec_add(&r, "{\"step\":%" PRId64, step);
    rec_num(&r, "val_loss", val_loss);
    rec_num(&r, "val_bpc", bpc);
    rec_num(&r, "elapsed_s", elapsed_s);
    metrics_write(lg, &r, step);
}

void log_summary(log_t *lg, int64_t step, const char *stop, const log_field_t *fields, int n) {
    record_t r = {.n = 0};
    rec_add(&r, "{\"step\":%" PRId64 ",\"summary\":true,\"stop\":\"%s\"", step, stop);
    for (int i = 0; i < n; i++) rec_num(&r, fields[i].key, fields[i].value);
    metrics_write(lg, &r, step);
}

FILE *log_out(log_t *lg) { return lg->out_dead ? NULL : stdout; }

void log_out_done(log_t *lg) { check_stream(stdout, &lg->out_dead); }

void log_msg(log_t *lg, const char *fmt, ...) {
    if (lg->err_dead) return;
    if (lg->live) fputs("\r\033[K", stderr);
    lg->live = 0;
    /* one line whether or not fmt ends with a newline (computed before vfprintf: placating a
     * false -Wformat-overflow of GCC 12 with -fsanitize=undefined) */
    size_t len = strlen(fmt);
    int add_nl = len == 0 || fmt[len - 1] != '\n';
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (add_nl) fputc('\n', stderr);
    check_stream(stderr, &lg->err_dead);
}

void log_close(log_t *lg) {
    end_live(lg);
    if (open_log == lg) {
        open_log = NULL;
        err_before_print(NULL);
    }
    if (lg->metrics) fclose(lg->metrics);
    lg->metrics = NULL;
    free(lg->path);
    lg->path = NULL;
}
