/* status: `charlm status` (status.h). Reads metrics.jsonl as log writes it — one flat JSON object
 * per line, its first field "step"; training lines carry train_loss, validation lines val_loss,
 * the end-of-run record "summary":true and "exit" (and "signal" after a stop by a signal) — plus
 * config.ini for the run's length and the checkpoints' attributes. */
#include "charlm/status.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "charlm/checkpoint.h"
#include "charlm/config.h"
#include "charlm/err.h"
#include "charlm/fileio.h"
#include "charlm/log.h"
#include "charlm/signals.h"

/* What metrics.jsonl says. NAN / -1 = not there. */
typedef struct {
    int present;                      /* the file exists */
    int64_t step, epoch;              /* of the last training line (-1: none) */
    double train_loss, chars_per_s, elapsed_s;
    int64_t val_step, best_step;      /* -1: no validation yet */
    double val_loss, best_val;
    int ended;                        /* the last record is an end-of-run record */
    int64_t end_step;
    int exit_code, signal;            /* of that record; signal 0 = not known */
    double age_s;                     /* since the file was last written */
} metrics_t;

/* The number after "key": in the record line (NAN for null); 0 when the key is absent. */
static int field(const char *line, const char *key, double *v) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p) return 0;
    p += strlen(pat);
    *v = strncmp(p, "null", 4) ? strtod(p, NULL) : NAN;
    return 1;
}

/* Takes one complete record of metrics.jsonl into m. */
static void take_record(metrics_t *m, const char *line) {
    double step = 0, v;
    field(line, "step", &step);
    if (field(line, "summary", &v)) {
        /* a summary without "exit" is a finished run's of a charlm before the end records */
        double code = 0, sig = 0;
        field(line, "exit", &code);
        field(line, "signal", &sig);
        m->ended = 1, m->end_step = (int64_t)step;
        m->exit_code = (int)code, m->signal = (int)sig;
        field(line, "elapsed_s", &m->elapsed_s); /* a finished run's: the whole run's */
    } else if (field(line, "val_loss", &v)) {
        m->val_step = (int64_t)step, m->val_loss = v;
        if (isfinite(v) && (isnan(m->best_val) || v < m->best_val))
            m->best_val = v, m->best_step = (int64_t)step;
    } else if (field(line, "train_loss", &m->train_loss)) {
        double epoch = 0;
        field(line, "epoch", &epoch);
        m->step = (int64_t)step, m->epoch = (int64_t)epoch, m->ended = 0;
        if (!field(line, "chars_per_s", &m->chars_per_s)) m->chars_per_s = NAN;
        if (!field(line, "elapsed_s", &m->elapsed_s)) m->elapsed_s = NAN;
    }
}

/* Reads run_dir/metrics.jsonl into m: its complete lines (a last line without its newline is a
 * record being written). Returns CHARLM_OK (also when there is no file: m->present 0) or
 * CHARLM_EINPUT naming the file and the line or the cause. */
static int read_metrics(metrics_t *m, const char *run_dir) {
    *m = (metrics_t){.step = -1, .epoch = -1, .train_loss = NAN, .chars_per_s = NAN,
                     .elapsed_s = NAN, .val_step = -1, .best_step = -1, .val_loss = NAN,
                     .best_val = NAN, .end_step = -1, .age_s = NAN};
    char path[CHARLM_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    FILE *f = fopen(path, "r");
    if (!f) return errno == ENOENT ? CHARLM_OK
                                   : err_set(CHARLM_EINPUT, "%s: cannot read: %s", path,
                                             strerror(errno));
    m->present = 1;
    struct stat st;
    if (fstat(fileno(f), &st) == 0) m->age_s = difftime(time(NULL), st.st_mtime);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = CHARLM_OK;
    errno = 0;
    for (long n = 1; !rc && (len = getline(&line, &cap, f)) > 0 && line[len - 1] == '\n'; n++) {
        if (strncmp(line, "{\"step\":", 8) || (size_t)len != strlen(line))
            rc = err_set(CHARLM_EINPUT, "%s:%ld: not a metrics record of charlm", path, n);
        else take_record(m, line);
    }
    if (!rc && ferror(f))
        rc = err_set(CHARLM_EINPUT, "%s: cannot read: %s", path, strerror(errno ? errno : EIO));
    free(line);
    fclose(f);
    return rc;
}

/* One checkpoint file as status shows it. */
typedef struct {
    char path[CHARLM_PATH_MAX + 40];
    int ok;           /* its attributes (or, verified, all of it) read back */
    int64_t step;
    char error[1024]; /* why not, when !ok */
    ckpt_info_t info;
} ckfile_t;

/* The ckpt-*.h5 files of run_dir, newest first, then best.h5; each read (attributes, or all with
 * verify). A file removed between listing and reading (rotation) is left out. */
static ckfile_t *read_checkpoints(const char *run_dir, int verify, int *n) {
    int count = 0;
    int64_t *steps = ckpt_steps(run_dir, &count);
    ckfile_t *cks = xcalloc((size_t)count + 1, sizeof *cks);
    *n = 0;
    for (int i = 0; i <= count; i++) {
        ckfile_t *c = &cks[*n];
        if (i < count) ckpt_path(c->path, sizeof c->path, run_dir, steps[i]);
        else snprintf(c->path, sizeof c->path, "%s/checkpoints/best.h5", run_dir);
        struct stat st;
        if (stat(c->path, &st) != 0) continue;
        ckpt_t ck;
        c->ok = ckpt_read_header(&ck, c->path, verify) == CHARLM_OK;
        if (!c->ok && stat(c->path, &st) != 0) { /* rotated away meanwhile */
            err_clear();
            continue;
        }
        if (c->ok) c->info = ck.info, c->step = ck.info.step;
        else snprintf(c->error, sizeof c->error, "%s", err_message());
        err_clear();
        ckpt_free(&ck);
        (*n)++;
    }
    free(steps);
    return cks;
}

/* Everything the report shows. */
typedef struct {
    const char *run_dir;
    metrics_t m;
    int held;               /* fileio_lock_holder: 1, 0, -1 */
    fileio_holder_t holder;
    int64_t step, total;    /* total 0 = unknown */
    double eta_s;           /* < 0 = unknown */
    ckfile_t *cks;
    int ncks, verify;
} report_t;

/* The run's length in steps and the time left before its time limit, from config.ini and the
 * newest checkpoint that read (its corpus size gives the windows of an epoch). */
static void plan(report_t *r) {
    config_t cfg;
    config_default(&cfg);
    char path[CHARLM_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/config.ini", r->run_dir);
    struct stat st;
    int have_cfg = stat(path, &st) == 0 && config_load_file(&cfg, path) == CHARLM_OK;
    err_clear(); /* a config.ini this charlm cannot read leaves the length unknown */
    const ckpt_info_t *in = NULL;
    for (int i = 0; i < r->ncks && !in; i++)
        if (r->cks[i].ok) in = &r->cks[i].info;
    r->step = r->m.step >= 0 ? r->m.step : in ? in->step : -1;
    r->total = 0, r->eta_s = -1;
    if (!have_cfg) return;
    int64_t window = in ? (int64_t)in->streams * in->seq : 0;
    if (cfg.steps) r->total = cfg.steps;
    else if (cfg.epochs && in && window > 0)
        r->total = cfg.epochs * ((in->train_chars - 1) / in->streams / in->seq);
    if (r->held != 1 || r->m.ended || r->step < 0) return;
    double left = -1;
    if (r->total && window > 0 && r->m.chars_per_s > 0)
        left = (double)(r->total - r->step) * (double)window / r->m.chars_per_s;
    if (cfg.time_limit > 0 && isfinite(r->m.elapsed_s)) {
        double t = fmax(cfg.time_limit - r->m.elapsed_s, 0);
        left = left < 0 ? t : fmin(left, t);
    }
    r->eta_s = left;
}

/* How the last run ended, in words; "" when there is no end record. */
static void end_text(char *out, size_t n, const metrics_t *m) {
    const char *sig = m->signal ? signals_name(m->signal) : "a signal";
    if (!m->ended) snprintf(out, n, "%s", "");
    else if (m->exit_code == CHARLM_OK) snprintf(out, n, "finished (exit 0)");
    else if (m->exit_code == CHARLM_ESTOPPED)
        snprintf(out, n, "stopped by %s, checkpoint written (exit 3)", sig);
    else if (m->exit_code == CHARLM_EDIVERGED)
        snprintf(out, n, "diverged; the checkpoint holds the last good state (exit 4)");
    else if (m->exit_code == CHARLM_EINPUT)
        snprintf(out, n, "failed: bad input or an I/O error, see the job's log (exit 1)");
    else snprintf(out, n, "exit %d", m->exit_code);
}

/* The state of the directory in words. */
static void state_text(char *out, size_t n, const report_t *r) {
    const fileio_holder_t *h = &r->holder;
    if (r->held == 1) snprintf(out, n, "running: pid %ld on %s holds the directory", h->pid, h->host);
    else if (r->held < 0 && h->pid)
        snprintf(out, n, "cannot tell from here: the lock names pid %ld on %s, another host",
                 h->pid, h->host);
    else if (r->held < 0) snprintf(out, n, "cannot tell: the lock file names nobody yet");
    else if (!r->m.ended && r->m.step >= 0)
        snprintf(out, n, "not running, and the run left no end record: it was killed (SIGKILL, "
                 "out of memory, a node failure) after step %" PRId64, r->m.step);
    else snprintf(out, n, "not running");
}

static void print_loss(FILE *f, const char *what, double loss, int64_t step) {
    if (step < 0) fprintf(f, "%-18s none yet\n", what);
    else fprintf(f, "%-18s %.4f (%.4f bits/char) at step %" PRId64 "\n", what, loss,
                 loss / log(2.0), step);
}

static void print_text(FILE *f, const report_t *r) {
    const metrics_t *m = &r->m;
    char buf[CHARLM_PATH_MAX + 256], a[32], b[32];
    fprintf(f, "%-18s %s\n", "run directory", r->run_dir);
    state_text(buf, sizeof buf, r);
    fprintf(f, "%-18s %s\n", "state", buf);
    if (r->step < 0) fprintf(f, "%-18s none yet\n", "step");
    else if (r->total) fprintf(f, "%-18s %" PRId64 " of %" PRId64 " (%" PRId64 "%%)\n", "step",
                               r->step, r->total, r->step * 100 / r->total);
    else fprintf(f, "%-18s %" PRId64 "\n", "step", r->step);
    if (m->epoch >= 0) fprintf(f, "%-18s %" PRId64 "\n", "epoch", m->epoch);
    if (m->step >= 0)
        fprintf(f, "%-18s %.4f at step %" PRId64 "\n", "train loss", m->train_loss, m->step);
    print_loss(f, "validation loss", m->val_loss, m->val_step);
    print_loss(f, "best validation", m->best_val, m->best_step);
    if (m->step >= 0) {
        log_fmt_rate(a, sizeof a, m->chars_per_s);
        fprintf(f, "%-18s %s chars/s\n", "speed", a);
        log_fmt_duration(a, sizeof a, m->elapsed_s);
        log_fmt_duration(b, sizeof b, m->age_s);
        fprintf(f, "%-18s %s; last record %s ago\n", "elapsed", a, b);
    }
    if (r->held == 1) {
        log_fmt_duration(a, sizeof a, r->eta_s);
        fprintf(f, "%-18s %s\n", "ETA", a);
    }
    end_text(buf, sizeof buf, m);
    if (m->ended) fprintf(f, "%-18s %s at step %" PRId64 "\n", "ended", buf, m->end_step);
    else fprintf(f, "%-18s %s\n", "ended", r->held == 1 ? "not yet" : "no end record");
    if (!r->ncks) fprintf(f, "%-18s none\n", "checkpoints");
    for (int i = 0; i < r->ncks; i++) {
        const ckfile_t *c = &r->cks[i];
        const char *name = strrchr(c->path, '/') + 1;
        if (c->ok)
            fprintf(f, "%-18s %-18s step %" PRId64 "%s\n", i ? "" : "checkpoints", name,
                    c->step, r->verify ? ", verified" : "");
        else fprintf(f, "%-18s %-18s BAD: %s\n", i ? "" : "checkpoints", name, c->error);
    }
}

/* s as a JSON string. */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

/* ,"key":v — null for NaN, infinities and (is_int) negative counts meaning "none". */
static void json_num(FILE *f, const char *key, double v, int is_int) {
    fprintf(f, ",\"%s\":", key);
    if (!isfinite(v) || (is_int && v < 0)) fputs("null", f);
    else if (is_int) fprintf(f, "%.0f", v);
    else fprintf(f, "%.9g", v);
}

static void print_json(FILE *f, const report_t *r) {
    const metrics_t *m = &r->m;
    char buf[CHARLM_PATH_MAX + 256];
    fputs("{\"run_dir\":", f);
    json_str(f, r->run_dir);
    fprintf(f, ",\"running\":%s,\"holder\":", r->held == 1 ? "true" : r->held ? "null" : "false");
    if (r->holder.pid) {
        fputs("{\"host\":", f);
        json_str(f, r->holder.host);
        fprintf(f, ",\"pid\":%ld}", r->holder.pid);
    } else {
        fputs("null", f);
    }
    state_text(buf, sizeof buf, r);
    fputs(",\"state\":", f);
    json_str(f, buf);
    json_num(f, "step", (double)r->step, 1);
    json_num(f, "total_steps", r->total ? (double)r->total : -1, 1);
    json_num(f, "epoch", (double)m->epoch, 1);
    json_num(f, "train_loss", m->train_loss, 0);
    json_num(f, "train_step", (double)m->step, 1);
    json_num(f, "val_loss", m->val_step >= 0 ? m->val_loss : NAN, 0);
    json_num(f, "val_step", (double)m->val_step, 1);
    json_num(f, "best_val_loss", m->best_val, 0);
    json_num(f, "best_val_step", (double)m->best_step, 1);
    json_num(f, "chars_per_s", m->chars_per_s, 0);
    json_num(f, "elapsed_s", m->elapsed_s, 0);
    json_num(f, "eta_s", r->eta_s >= 0 ? r->eta_s : NAN, 0);
    json_num(f, "last_record_age_s", m->age_s, 0);
    fputs(",\"ended\":", f);
    if (m->ended) {
        end_text(buf, sizeof buf, m);
        fprintf(f, "{\"step\":%" PRId64 ",\"exit\":%d,\"signal\":", m->end_step, m->exit_code);
        if (m->signal) json_str(f, signals_name(m->signal));
        else fputs("null", f);
        fputs(",\"reason\":", f);
        json_str(f, buf);
        fputc('}', f);
    } else {
        fputs("null", f);
    }
    fprintf(f, ",\"verified\":%s,\"checkpoints\":[", r->verify ? "true" : "false");
    for (int i = 0; i < r->ncks; i++) {
        const ckfile_t *c = &r->cks[i];
        fputs(i ? ",{\"path\":" : "{\"path\":", f);
        json_str(f, c->path);
        fprintf(f, ",\"ok\":%s", c->ok ? "true" : "false");
        json_num(f, "step", c->ok ? (double)c->step : -1, 1);
        fputs(",\"error\":", f);
        if (c->ok) fputs("null", f);
        else json_str(f, c->error);
        fputc('}', f);
    }
    fputs("]}\n", f);
}

/* Rank 0's part: reads and prints. */
static int status_run(const char *run_dir, int verify, int json) {
    struct stat st;
    if (stat(run_dir, &st) != 0)
        return err_set(CHARLM_EINPUT, "status: %s: %s", run_dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return err_set(CHARLM_EINPUT, "status: %s is not a directory (give the run.dir of a "
                       "training)", run_dir);
    report_t r = {.run_dir = run_dir, .verify = verify};
    int rc = read_metrics(&r.m, run_dir);
    if (rc) return rc;
    r.held = fileio_lock_holder(run_dir, &r.holder);
    r.cks = read_checkpoints(run_dir, verify, &r.ncks);
    char cfg[CHARLM_PATH_MAX + 16];
    snprintf(cfg, sizeof cfg, "%s/config.ini", run_dir);
    if (!r.m.present && !r.ncks && !r.holder.pid && stat(cfg, &st) != 0) {
        free(r.cks);
        return err_set(CHARLM_EINPUT, "status: %s is not a run directory of charlm (no "
                       "metrics.jsonl, config.ini, lock or checkpoints in it)", run_dir);
    }
    plan(&r);
    if (json) print_json(stdout, &r);
    else print_text(stdout, &r);
    if (fflush(stdout) != 0) rc = err_set(CHARLM_EINPUT, "status: cannot write the report: %s",
                                          strerror(errno));
    for (int i = 0; i < r.ncks && !rc; i++)
        if (!r.cks[i].ok && verify) rc = err_set(CHARLM_EINPUT, "%s", r.cks[i].error);
    free(r.cks);
    return rc;
}

int status_main(int argc, char **argv, const dist_t *d) {
    const char *dir = NULL;
    int verify = 0, json = 0, rc = CHARLM_OK;
    for (int i = 0; i < argc && !rc; i++) {
        if (!strcmp(argv[i], "--verify")) verify = 1;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] != '-' && !dir) dir = argv[i];
        else rc = err_set(CHARLM_EUSAGE, "status: unexpected argument '%.60s' (charlm status "
                          "RUN_DIR [--verify] [--json])", argv[i]);
    }
    if (!rc && !dir)
        rc = err_set(CHARLM_EUSAGE, "status: which run directory? (charlm status RUN_DIR "
                     "[--verify] [--json])");
    if (!rc && d->rank == 0) rc = status_run(dir, verify, json);
    return dist_agree(d, rc);
}
