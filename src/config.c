/* config: one table of key descriptors drives parsing (config_set), defaults (config_default)
 * and the canonical dump (config_write). INI syntax is libinih's; we feed it lines through our
 * own reader so that we know the line number of every key, reject indented continuation lines
 * instead of silently joining them, and accept values longer than inih's fixed line buffer. */
#include "charlm/config.h"

#include "charlm/err.h"

#include <errno.h>
#include <inttypes.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))


typedef enum { T_INT, T_I64, T_U64, T_DBL, T_ENUM, T_STR } ktype_t;
typedef enum { B_NONE = 0, B_INCL, B_EXCL } bound_t; /* kind of a lower/upper bound */

typedef struct {
    const char *section, *name;
    ktype_t type;
    size_t off;      /* offsetof(config_t, field) */
    const char *def; /* default, as text: config_default() applies it with the same parser */
    double lo, hi;   /* T_DBL bounds; T_INT/T_I64 minimum in lo (maximum: the type's) */
    bound_t lo_b, hi_b;
    const char *const *names; /* T_ENUM: names[i] is enum value i */
    int nnames;
    int nonempty; /* T_STR */
} key_desc_t;

/* offsetof(config_t, f), failing to compile if the field does not have the size of T. */
#define OFF(f, T)                                                                            \
    (offsetof(config_t, f) + 0 * sizeof(char[sizeof(((config_t *)0)->f) == sizeof(T) ? 1 : -1]))

#define K_INT(s, n, f, d, min)                                                               \
    {.section = s, .name = n, .type = T_INT, .off = OFF(f, int), .def = d, .lo = min,          \
     .lo_b = B_INCL}
#define K_I64(s, n, f, d, min)                                                               \
    {.section = s, .name = n, .type = T_I64, .off = OFF(f, int64_t), .def = d, .lo = min,      \
     .lo_b = B_INCL}
#define K_U64(s, n, f, d)                                                                    \
    {.section = s, .name = n, .type = T_U64, .off = OFF(f, uint64_t), .def = d}
#define K_DBL(s, n, f, d, lo_, lob, hi_, hib)                                                \
    {.section = s, .name = n, .type = T_DBL, .off = OFF(f, double), .def = d, .lo = lo_,       \
     .lo_b = lob, .hi = hi_, .hi_b = hib}
#define K_ENUM(s, n, f, d, arr)                                                              \
    {.section = s, .name = n, .type = T_ENUM, .off = OFF(f, int), .def = d, .names = arr,      \
     .nnames = COUNT(arr)}
#define K_STR(s, n, f, d, ne)                                                                \
    {.section = s, .name = n, .type = T_STR, .off = OFF(f, char[CHARLM_PATH_MAX]), .def = d,    \
     .nonempty = ne}

static const char *const bool_names[] = {"false", "true"};
/* model.dropout_kind: value 1 makes model.dropout's masks locked (model_dropout_t.locked) */
static const char *const dropout_kind_names[] = {"standard", "locked"};

/* Every key, in the order of the canonical dump (sections data, model, train, optim, eval, log,
 * sample, checkpoint, run). The defaults here are the documented ones (README, configs/). */
static const key_desc_t keys[] = {
    K_STR("data", "corpus", corpus, "", 0), /* required: checked by config_validate() */
    K_DBL("data", "val_frac", val_frac, "0.1", 0, B_INCL, 1, B_EXCL),
    K_STR("data", "val", val, "", 0),
    K_ENUM("data", "allow_changed", allow_changed, "false", bool_names),

    K_ENUM("model", "cell", cell, "lstm", cell_kind_names),
    K_INT("model", "layers", layers, "2", 1),
    K_INT("model", "hidden", hidden, "128", 1),
    K_INT("model", "embed", embed, "64", 1),
    K_DBL("model", "dropout", dropout, "0", 0, B_INCL, 1, B_EXCL),
    K_ENUM("model", "dropout_kind", dropout_kind, "standard", dropout_kind_names),
    K_DBL("model", "dropout_input", dropout_input, "0", 0, B_INCL, 1, B_EXCL),
    K_DBL("model", "dropout_embed", dropout_embed, "0", 0, B_INCL, 1, B_EXCL),
    K_DBL("model", "weight_drop", weight_drop, "0", 0, B_INCL, 1, B_EXCL),
    K_ENUM("model", "tie", tie, "false", bool_names),
    K_ENUM("model", "layer_norm", layer_norm, "false", bool_names),
    K_ENUM("model", "precision", precision, "fp32", kern_precision_names),

    K_INT("train", "batch", batch, "32", 1),
    K_INT("train", "seq", seq, "64", 1),
    K_I64("train", "steps", steps, "0", 0),
    K_I64("train", "epochs", epochs, "1", 0),
    K_DBL("train", "time_limit", time_limit, "0", 0, B_INCL, 0, B_NONE),
    K_U64("train", "seed", seed, "1234"),
    K_I64("train", "early_stop", early_stop, "0", 0),

    K_ENUM("optim", "kind", optim, "adam", optim_kind_names),
    K_DBL("optim", "lr", lr, "0.002", 0, B_EXCL, 0, B_NONE),
    K_DBL("optim", "beta1", beta1, "0.9", 0, B_INCL, 1, B_EXCL),
    K_DBL("optim", "beta2", beta2, "0.999", 0, B_INCL, 1, B_EXCL),
    K_DBL("optim", "eps", eps, "1e-8", 0, B_EXCL, 0, B_NONE),
    K_DBL("optim", "momentum", momentum, "0.9", 0, B_INCL, 1, B_EXCL),
    K_DBL("optim", "weight_decay", weight_decay, "0", 0, B_INCL, 0, B_NONE),
    K_DBL("optim", "clip", clip, "5", 0, B_INCL, 0, B_NONE), /* global-norm clip; 0 = off */
    K_ENUM("optim", "schedule", schedule, "constant", sched_kind_names),
    K_I64("optim", "warmup", warmup, "0", 0),
    K_I64("optim", "decay_every", decay_every, "0", 0),
    K_DBL("optim", "decay_rate", decay_rate, "0.5", 0, B_EXCL, 1, B_INCL),
    K_DBL("optim", "min_lr", min_lr, "0", 0, B_INCL, 0, B_NONE),
    K_ENUM("optim", "schedule_over", schedule_over, "steps", sched_over_names),
    K_I64("optim", "plateau_patience", plateau_patience, "0", 0),
    K_DBL("optim", "plateau_factor", plateau_factor, "0.25", 0, B_EXCL, 1, B_EXCL),
    K_DBL("optim", "plateau_threshold", plateau_threshold, "0", 0, B_INCL, 1, B_EXCL),
    K_DBL("optim", "ema", ema, "0", 0, B_INCL, 1, B_EXCL),
    K_I64("optim", "ema_start", ema_start, "0", 0),

    K_I64("eval", "every", eval_every, "0", 0),

    K_I64("log", "every", log_every, "10", 1),

    K_I64("sample", "every", sample_every, "0", 0),
    K_I64("sample", "length", sample_length, "200", 1),
    K_DBL("sample", "temperature", sample_temperature, "1", 0, B_INCL, 100, B_INCL),

    K_I64("checkpoint", "every", ckpt_every, "1000", 0), /* 0 = only at the end and on signals */
    K_INT("checkpoint", "keep", ckpt_keep, "3", 1),

    K_STR("run", "dir", run_dir, "runs/default", 1),
};

_Static_assert(sizeof(cell_kind_t) == sizeof(int), "enum fields are stored as int");
_Static_assert(sizeof(optim_kind_t) == sizeof(int), "enum fields are stored as int");
_Static_assert(sizeof(sched_kind_t) == sizeof(int), "enum fields are stored as int");
_Static_assert(sizeof(sched_over_t) == sizeof(int), "enum fields are stored as int");

/* ---- messages ---------------------------------------------------------------------------- */

typedef struct {
    char text[16384]; /* as err's buffer: room for a path of CHARLM_PATH_MAX and the reason */
} msg_t;

static int msg_fail(msg_t *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int msg_fail(msg_t *m, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->text, sizeof m->text, fmt, ap);
    va_end(ap);
    return CHARLM_EINPUT;
}

/* Appends to buf (size n) without overflowing it. */
static void append(char *buf, size_t n, const char *s) {
    size_t len = strlen(buf);
    if (len + 1 < n) snprintf(buf + len, n - len, "%s", s);
}

/* The longest text (bytes) that a message echoes whole: longer values are cut, so that the reason
 * after them is never lost. */
#define ECHO_MAX 60

/* text as a message shows it, in buf (n bytes, at least ECHO_MAX + 32): whole when short, else
 * its first ECHO_MAX bytes (never half a UTF-8 character) and "…(N bytes)"; '' when empty. */
static const char *shown(char *buf, size_t n, const char *text) {
    size_t len = strlen(text), cut = ECHO_MAX;
    if (!len) return "''";
    if (len <= ECHO_MAX) return text;
    while (cut > 0 && ((unsigned char)text[cut] & 0xC0) == 0x80) cut--;
    snprintf(buf, n, "%.*s\u2026(%zu bytes)", (int)cut, text, len);
    return buf;
}

/* "ORIGIN: section.key = value: must be ..." */
static int bad_value(msg_t *m, const char *origin, const key_desc_t *k, const char *value,
                     const char *reason) {
    char v[ECHO_MAX + 32];
    return msg_fail(m, "%s: %s.%s = %s: %s", origin, k->section, k->name,
                    shown(v, sizeof v, value), reason);
}

static void describe_range(char *buf, size_t n, const key_desc_t *k) {
    switch (k->type) {
    case T_DBL:
        if (k->lo_b && k->hi_b)
            snprintf(buf, n, "must be a number in %c%.17g, %.17g%c", k->lo_b == B_INCL ? '[' : '(',
                     k->lo, k->hi, k->hi_b == B_INCL ? ']' : ')');
        else if (k->lo_b)
            snprintf(buf, n, "must be a number %s %.17g", k->lo_b == B_INCL ? ">=" : ">", k->lo);
        else
            snprintf(buf, n, "must be a finite number");
        break;
    case T_INT:
    case T_I64:
        snprintf(buf, n, "must be an integer >= %.0f", k->lo);
        break;
    case T_U64:
        snprintf(buf, n, "must be an integer in [0, %" PRIu64 "]", UINT64_MAX);
        break;
    case T_ENUM:
        snprintf(buf, n, "must be one of ");
        for (int i = 0; i < k->nnames; i++) {
            if (i) append(buf, n, ", ");
            append(buf, n, k->names[i]);
        }
        break;
    case T_STR:
        snprintf(buf, n, "must not be empty");
        break;
    }
}

/* ---- parsing of one value ---------------------------------------------------------------- */

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Copies value without surrounding whitespace into buf (size n); 0 if it does not fit. */
static int trim_copy(char *buf, size_t n, const char *value) {
    while (is_space(*value)) value++;
    size_t len = strlen(value);
    while (len > 0 && is_space(value[len - 1])) len--;
    if (len + 1 > n) return 0;
    memcpy(buf, value, len);
    buf[len] = '\0';
    return 1;
}

/* Strict base-10 integer: the whole text, no fraction. 0 ok, -1 not an integer, 1 overflow. */
static int parse_i64(const char *s, int64_t *out) {
    if (!*s) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end) return -1;
    if (errno == ERANGE) return 1;
    *out = (int64_t)v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out) {
    if (!*s || *s == '-') return -1; /* strtoull would wrap "-1" around */
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end) return -1;
    if (errno == ERANGE) return 1;
    *out = (uint64_t)v;
    return 0;
}

/* Strict finite decimal double: the whole text, digits, '.', an exponent and signs only (strtod
 * would also take hexadecimal, "inf" and "nan"). Underflow to 0 or a denormal is accepted as the
 * value. */
static int parse_double(const char *s, double *out) {
    if (!*s || s[strspn(s, "0123456789.eE+-")]) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

/* A string is stored only if config_write() can write it back unchanged through inih. */
static const char *string_problem(const char *v) {
    size_t len = strlen(v);
    if (len >= CHARLM_PATH_MAX) return "is too long (at most 4095 bytes)";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c == 0x7f) return "must not contain control characters";
        if (c == ';' && i > 0 && is_space(v[i - 1]))
            return "must not contain a ';' after a space (it would start an INI comment)";
    }
    if (len > 0 && (is_space(v[0]) || is_space(v[len - 1])))
        return "must not begin or end with whitespace";
    return NULL;
}

static int set_value(config_t *cfg, const key_desc_t *k, const char *value, const char *origin,
                     msg_t *m) {
    char *p = (char *)cfg + k->off;
    char range[512];
    describe_range(range, sizeof range, k);

    if (k->type == T_STR) {
        const char *problem = string_problem(value);
        if (problem) return bad_value(m, origin, k, value, problem);
        if (k->nonempty && !*value) return bad_value(m, origin, k, value, range);
        memset(p, 0, CHARLM_PATH_MAX);
        memcpy(p, value, strlen(value));
        return CHARLM_OK;
    }

    char t[128];
    if (!trim_copy(t, sizeof t, value)) return bad_value(m, origin, k, value, range);

    switch (k->type) {
    case T_INT:
    case T_I64: {
        int64_t v = 0;
        int r = parse_i64(t, &v);
        int64_t max = k->type == T_INT ? INT_MAX : INT64_MAX;
        if (r < 0 || (r == 0 && v < (int64_t)k->lo)) return bad_value(m, origin, k, value, range);
        if (r > 0 || v > max) {
            char big[sizeof range + 64];
            snprintf(big, sizeof big, "%s and <= %" PRId64, range, max);
            return bad_value(m, origin, k, value, big);
        }
        if (k->type == T_INT) {
            int iv = (int)v;
            memcpy(p, &iv, sizeof iv);
        } else {
            memcpy(p, &v, sizeof v);
        }
        return CHARLM_OK;
    }
    case T_U64: {
        uint64_t v = 0;
        if (parse_u64(t, &v)) return bad_value(m, origin, k, value, range);
        memcpy(p, &v, sizeof v);
        return CHARLM_OK;
    }
    case T_DBL: {
        double v = 0;
        if (parse_double(t, &v)) return bad_value(m, origin, k, value, range);
        if ((k->lo_b == B_INCL && !(v >= k->lo)) || (k->lo_b == B_EXCL && !(v > k->lo)) ||
            (k->hi_b == B_INCL && !(v <= k->hi)) || (k->hi_b == B_EXCL && !(v < k->hi)))
            return bad_value(m, origin, k, value, range);
        memcpy(p, &v, sizeof v);
        return CHARLM_OK;
    }
    case T_ENUM:
        for (int i = 0; i < k->nnames; i++) {
            if (strcmp(t, k->names[i]) == 0) {
                memcpy(p, &i, sizeof i);
                return CHARLM_OK;
            }
        }
        return bad_value(m, origin, k, value, range);
    case T_STR:
        break;
    }
    return bad_value(m, origin, k, value, range);
}

/* The index in keys[] of section.name, or -1. */
static int find_key(const char *section, const char *name) {
    for (int i = 0; i < COUNT(keys); i++)
        if (!strcmp(keys[i].section, section) && !strcmp(keys[i].name, name)) return i;
    return -1;
}

/* The index in keys[] of the first key of section, or -1. */
static int find_section(const char *section) {
    for (int i = 0; i < COUNT(keys); i++)
        if (!strcmp(keys[i].section, section)) return i;
    return -1;
}

/* Applies section/name = value, or explains why not. */
static int set_kv(config_t *cfg, const char *section, const char *name, const char *value,
                  const char *origin, msg_t *m) {
    int k = find_key(section, name);
    if (k >= 0) return set_value(cfg, &keys[k], value, origin, m);
    char list[512] = "", sbuf[ECHO_MAX + 32], nbuf[ECHO_MAX + 32];
    const char *sec = shown(sbuf, sizeof sbuf, section), *nam = shown(nbuf, sizeof nbuf, name);
    if (find_section(section) >= 0) {
        for (int i = 0; i < COUNT(keys); i++) {
            if (strcmp(keys[i].section, section) != 0) continue;
            if (list[0]) append(list, sizeof list, ", ");
            append(list, sizeof list, keys[i].name);
        }
        return msg_fail(m, "%s: unknown key '%s.%s' (keys of [%s]: %s)", origin, section, nam,
                        section, list);
    }
    for (int i = 0; i < COUNT(keys); i++) {
        if (i > 0 && strcmp(keys[i].section, keys[i - 1].section) == 0) continue;
        if (list[0]) append(list, sizeof list, ", ");
        append(list, sizeof list, keys[i].section);
    }
    if (!*section)
        return msg_fail(m, "%s: key '%s' is not inside a [section] (sections: %s)", origin, nam,
                        list);
    return msg_fail(m, "%s: unknown section [%s] in key '%s.%s' (sections: %s)", origin, sec, sec,
                    nam, list);
}

/* ---- public API -------------------------------------------------------------------------- */

void config_default(config_t *cfg) {
    memset(cfg, 0, sizeof *cfg);
    msg_t m;
    for (int i = 0; i < COUNT(keys); i++) {
        int rc = set_value(cfg, &keys[i], keys[i].def, "default", &m);
        if (rc != CHARLM_OK) err_abort(__FILE__, __LINE__, m.text);
    }
}

int config_set(config_t *cfg, const char *key, const char *value, const char *origin) {
    msg_t m;
    const char *dot = strchr(key, '.');
    char buf[ECHO_MAX + 32];
    if (!dot)
        return err_set(CHARLM_EINPUT, "%s: unknown key '%s' (expected section.key)", origin,
                       shown(buf, sizeof buf, key));
    char *section = xstrdup(key);
    section[dot - key] = '\0';
    int rc = set_kv(cfg, section, dot + 1, value, origin, &m);
    free(section);
    return rc ? err_set(rc, "%s", m.text) : CHARLM_OK;
}

/* State shared by the line reader and the key handler of config_load_file(). */
typedef struct {
    FILE *f;
    const char *path;
    config_t *cfg;
    char *buf; /* getline() buffer: the current line */
    size_t cap;
    int line;       /* number of the current line (1-based) */
    int read_errno; /* a read error, or 0 */
    int err_line;   /* line of the first error we found (bad key/value, unparsable long line) */
    msg_t msg;      /* its message */
    const char *long_value; /* value of the current over-long line, handed around inih */
    int key_line[COUNT(keys)];     /* the line that set keys[i], 0 = none yet */
    int section_line[COUNT(keys)]; /* at a section's first key: the line of its [header] */
} load_t;

/* inih's value cleanup: skip leading space, cut an inline "; comment", strip trailing space. */
static char *clean_value(char *v) {
    while (is_space(*v)) v++;
    for (char *p = v; *p; p++) {
        if (*p == ';' && p > v && is_space(p[-1])) {
            *p = '\0';
            break;
        }
    }
    size_t len = strlen(v);
    while (len > 0 && is_space(v[len - 1])) v[--len] = '\0';
    return v;
}

/* Whether line s, when it is a [section] header, is its section's first in the file; else records
 * the error naming both lines. A header of an unknown section is left to on_key's message. */
static int section_once(load_t *ld, const char *s) {
    const char *end = *s == '[' ? strchr(s, ']') : NULL;
    if (!end) return 1;
    char *name = xstrdup(s + 1);
    name[end - s - 1] = '\0';
    int k = find_section(name);
    free(name);
    if (k < 0) return 1;
    if (ld->section_line[k]) {
        ld->err_line = ld->line;
        msg_fail(&ld->msg, "%s:%d: section [%s] again (it began at line %d): write each section "
                 "once", ld->path, ld->line, keys[k].section, ld->section_line[k]);
        return 0;
    }
    ld->section_line[k] = ld->line;
    return 1;
}

/* fgets-style reader for ini_parse_stream(): one whole line per call. Leading whitespace is
 * removed, so inih never takes an indented line as the continuation of the previous value (it
 * becomes a syntax error instead). A key line longer than inih's buffer is passed as
 * "name=\1" and its value kept in long_value. */
static char *read_line(char *str, int num, void *stream) {
    load_t *ld = stream;
    ld->long_value = NULL;
    if (ld->err_line) return NULL; /* stop at the first error */
    errno = 0;
    ssize_t n = getline(&ld->buf, &ld->cap, ld->f);
    if (n < 0) {
        if (ferror(ld->f)) ld->read_errno = errno ? errno : EIO;
        return NULL;
    }
    ld->line++;
    if ((size_t)n != strlen(ld->buf)) {
        ld->err_line = ld->line;
        msg_fail(&ld->msg, "%s:%d: syntax error (NUL byte in line)", ld->path, ld->line);
        return NULL;
    }
    char *s = ld->buf;
    while (*s == ' ' || *s == '\t') s++;
    if (!section_once(ld, s)) return NULL;
    size_t len = strlen(s);
    if (num > 0 && len + 1 <= (size_t)num) {
        memcpy(str, s, len + 1);
        return str;
    }
    if (num < 4) return NULL;
    if (*s == ';' || *s == '#') { /* an over-long comment */
        strcpy(str, "\n");
        return str;
    }
    char *sep = strpbrk(s, "=:");
    if (!sep || (size_t)(sep - s) + 4 > (size_t)num) {
        ld->err_line = ld->line;
        msg_fail(&ld->msg, "%s:%d: syntax error (line too long)", ld->path, ld->line);
        return NULL;
    }
    size_t nlen = (size_t)(sep - s) + 1; /* the name and its separator */
    memcpy(str, s, nlen);
    memcpy(str + nlen, "\1\n", 3);
    ld->long_value = clean_value(sep + 1);
    return str;
}

static int on_key(void *user, const char *section, const char *name, const char *value) {
    load_t *ld = user;
    if (ld->err_line) return 0;
    if (ld->long_value && strcmp(value, "\1") == 0) value = ld->long_value;
    char origin[CHARLM_PATH_MAX + 32];
    snprintf(origin, sizeof origin, "%s:%d", ld->path, ld->line);
    int k = find_key(section, name);
    if (k >= 0 && ld->key_line[k]) {
        ld->err_line = ld->line;
        msg_fail(&ld->msg, "%s: %s.%s is set again (first at line %d): set each key once",
                 origin, section, name, ld->key_line[k]);
        return 0;
    }
    if (k >= 0) ld->key_line[k] = ld->line;
    if (set_kv(ld->cfg, section, name, value, origin, &ld->msg) != CHARLM_OK) {
        ld->err_line = ld->line;
        return 0;
    }
    return 1;
}

int config_load_file(config_t *cfg, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return err_set(CHARLM_EINPUT, "%s: cannot read: %s", path, strerror(errno));
    load_t ld = {.f = f, .path = path, .cfg = cfg};
    int ret = ini_parse_stream(read_line, &ld, on_key, &ld);
    free(ld.buf);
    fclose(f);
    /* inih reports the first failing line (its own syntax errors and our handler's refusals);
     * report whichever came first. */
    if (ret > 0 && (!ld.err_line || ret < ld.err_line))
        return err_set(CHARLM_EINPUT, "%s:%d: syntax error (expected [section] or key = value)",
                       path, ret);
    if (ld.err_line) return err_set(CHARLM_EINPUT, "%s", ld.msg.text);
    if (ld.read_errno)
        return err_set(CHARLM_EINPUT, "%s: cannot read: %s", path, strerror(ld.read_errno));
    if (ret < 0) return err_set(CHARLM_EINPUT, "%s: cannot parse (inih error %d)", path, ret);
    return CHARLM_OK;
}

int config_validate(const config_t *cfg) {
    if (!cfg->corpus[0])
        return err_set(CHARLM_EINPUT,
                       "data.corpus is not set (give it in the config file or with --corpus)");
    if (cfg->layers > MODEL_MAX_LAYERS)
        return err_set(CHARLM_EINPUT, "model.layers = %d: at most %d layers are supported",
                       cfg->layers, MODEL_MAX_LAYERS);
    if (cfg->tie && cfg->embed != cfg->hidden)
        return err_set(CHARLM_EINPUT, "model.tie = true needs model.embed = model.hidden "
                                      "(they are %d and %d)", cfg->embed, cfg->hidden);
    if (cfg->steps == 0 && cfg->epochs == 0 && cfg->time_limit == 0)
        return err_set(CHARLM_EINPUT, "train.steps, train.epochs and train.time_limit are all 0: "
                                      "the run would never end (set at least one of them)");
    if (cfg->schedule == SCHED_STEP && cfg->decay_every < 1)
        return err_set(CHARLM_EINPUT, "optim.schedule = step needs optim.decay_every >= 1 "
                                      "(it is %" PRId64 ")",
                       cfg->decay_every);
    if ((cfg->plateau_patience || cfg->early_stop) && cfg->eval_every == 0)
        return err_set(CHARLM_EINPUT, "optim.plateau_patience and train.early_stop need "
                                      "eval.every >= 1 (the validations they count)");
    if (cfg->schedule_over == SCHED_OVER_TIME && cfg->time_limit == 0)
        return err_set(CHARLM_EINPUT, "optim.schedule_over = time needs train.time_limit > 0 "
                                      "(the budget the schedule anneals over)");
    if (cfg->schedule == SCHED_COSINE && cfg->min_lr > cfg->lr)
        return err_set(CHARLM_EINPUT, "optim.min_lr = %.17g is larger than optim.lr = %.17g",
                       cfg->min_lr, cfg->lr);
    return CHARLM_OK;
}

/* The shortest %.Ng text that reads back as exactly v (at most %.17g), written without an
 * exponent when it is a whole number below 1e16 ("300", not "3e+02"). */
static void format_double(char *buf, size_t n, double v) {
    int prec = 1;
    for (; prec < 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    snprintf(buf, n, "%.*g", prec, v);
    const char *e = strchr(buf, 'e');
    if (e) {
        int ex = atoi(e + 1);
        if (ex >= prec && ex < 16) {
            char alt[64];
            snprintf(alt, sizeof alt, "%.*g", ex + 1, v);
            if (strtod(alt, NULL) == v) snprintf(buf, n, "%s", alt);
        }
    }
}

void config_write(const config_t *cfg, FILE *f) {
    for (int i = 0; i < COUNT(keys); i++) {
        const key_desc_t *k = &keys[i];
        const char *p = (const char *)cfg + k->off;
        if (i == 0 || strcmp(k->section, keys[i - 1].section) != 0)
            fprintf(f, "%s[%s]\n", i ? "\n" : "", k->section);
        char buf[64];
        const char *text = buf;
        switch (k->type) {
        case T_INT: {
            int v;
            memcpy(&v, p, sizeof v);
            snprintf(buf, sizeof buf, "%d", v);
            break;
        }
        case T_I64: {
            int64_t v;
            memcpy(&v, p, sizeof v);
            snprintf(buf, sizeof buf, "%" PRId64, v);
            break;
        }
        case T_U64: {
            uint64_t v;
            memcpy(&v, p, sizeof v);
            snprintf(buf, sizeof buf, "%" PRIu64, v);
            break;
        }
        case T_DBL: {
            double v;
            memcpy(&v, p, sizeof v);
            format_double(buf, sizeof buf, v);
            break;
        }
        case T_ENUM: {
            int v;
            memcpy(&v, p, sizeof v);
            text = v >= 0 && v < k->nnames ? k->names[v] : "?";
            break;
        }
        case T_STR:
            text = p;
            break;
        }
        if (*text) fprintf(f, "%s = %s\n", k->name, text);
        else fprintf(f, "%s =\n", k->name);
    }
}

corpus_params_t config_corpus_params(const config_t *cfg) {
    return (corpus_params_t){.corpus = cfg->corpus, .val = cfg->val, .val_frac = cfg->val_frac,
                             .batch = cfg->batch, .seq = cfg->seq};
}

model_params_t config_model_params(const config_t *cfg) {
    return (model_params_t){.cell = cfg->cell, .layers = cfg->layers, .hidden = cfg->hidden,
                            .embed = cfg->embed, .tie = cfg->tie, .layer_norm = cfg->layer_norm};
}

model_dropout_t config_model_dropout(const config_t *cfg) {
    return (model_dropout_t){.p = (float)cfg->dropout, .locked = cfg->dropout_kind,
                             .p_input = (float)cfg->dropout_input,
                             .p_embed = (float)cfg->dropout_embed,
                             .p_weight = (float)cfg->weight_drop, .seed = cfg->seed};
}

optim_params_t config_optim_params(const config_t *cfg) {
    return (optim_params_t){.kind = cfg->optim, .beta1 = cfg->beta1, .beta2 = cfg->beta2,
                            .eps = cfg->eps, .momentum = cfg->momentum,
                            .weight_decay = cfg->weight_decay};
}

sched_params_t config_sched_params(const config_t *cfg) {
    return (sched_params_t){.kind = cfg->schedule, .lr = cfg->lr, .decay_rate = cfg->decay_rate,
                            .min_lr = cfg->min_lr, .warmup = cfg->warmup,
                            .decay_every = cfg->decay_every};
}

plateau_params_t config_plateau_params(const config_t *cfg) {
    return (plateau_params_t){.patience = cfg->plateau_patience, .early_stop = cfg->early_stop,
                              .factor = cfg->plateau_factor,
                              .threshold = cfg->plateau_threshold};
}

log_params_t config_log_params(const config_t *cfg) {
    return (log_params_t){.run_dir = cfg->run_dir, .every = cfg->log_every};
}
