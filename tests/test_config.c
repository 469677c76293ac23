/* test_config: defaults, INI loading, every kind of bad key/value, syntax errors with line
 * numbers, --set overrides, the canonical dump round trip, cross-key validation; and the
 * metrics.jsonl lines written by log. */

#include "charlm/config.h"
#include "charlm/err.h"
#include "charlm/log.h"

#include "check.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int ntmp;

/* Writes text to a fresh file in tmpdir and returns its path (static storage, rotating). */
static const char *write_tmp(const char *text) {
    static char paths[8][4200];
    char *p = paths[ntmp % 8];
    snprintf(p, sizeof paths[0], "%s/c%d.ini", tmpdir, ntmp);
    ntmp++;
    FILE *f = fopen(p, "w");
    if (!f) {
        perror(p);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
    return p;
}

/* Reads a whole file into a malloc'd string. */
static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *s = malloc(cap);
    size_t r;
    while ((r = fread(s + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 >= cap) s = realloc(s, cap *= 2);
    }
    s[n] = '\0';
    fclose(f);
    return s;
}

static char *dump(const config_t *cfg) {
    char path[4200];
    snprintf(path, sizeof path, "%s/dump%d.ini", tmpdir, ntmp++);
    FILE *f = fopen(path, "w");
    config_write(cfg, f);
    fclose(f);
    return slurp(path);
}

static int contains(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

static void test_defaults(void) {
    config_t c;
    config_default(&c);
    EXPECT(strcmp(c.corpus, "") == 0);
    EXPECT(c.val_frac == 0.1);
    EXPECT(strcmp(c.val, "") == 0);
    EXPECT(c.cell == CELL_LSTM);
    EXPECT(c.precision == KERN_FP32);
    EXPECT(c.layers == 2 && c.hidden == 128 && c.embed == 64);
    EXPECT(c.dropout == 0.0 && c.dropout_kind == 0 && c.dropout_input == 0.0);
    EXPECT(c.dropout_embed == 0.0 && c.weight_drop == 0.0 && !c.tie && !c.layer_norm);
    EXPECT(c.batch == 32 && c.seq == 64);
    EXPECT(c.steps == 0 && c.epochs == 1 && c.time_limit == 0.0);
    EXPECT(c.seed == 1234);
    EXPECT(c.optim == OPTIM_ADAM);
    EXPECT(c.lr == 2e-3 && c.beta1 == 0.9 && c.beta2 == 0.999 && c.eps == 1e-8);
    EXPECT(c.momentum == 0.9 && c.weight_decay == 0.0 && c.clip == 5.0);
    EXPECT(c.schedule == SCHED_CONSTANT);
    EXPECT(c.warmup == 0 && c.decay_every == 0 && c.decay_rate == 0.5 && c.min_lr == 0.0);
    EXPECT(c.eval_every == 0 && c.log_every == 10);
    EXPECT(strcmp(c.run_dir, "runs/default") == 0);
    EXPECT(strcmp(cell_kind_name(CELL_GRU), "gru") == 0);
    EXPECT(strcmp(optim_kind_name(OPTIM_ADAMW), "adamw") == 0);
    EXPECT(strcmp(sched_kind_name(SCHED_COSINE), "cosine") == 0);
}

static void test_load(void) {
    const char *p = write_tmp("; a comment\n"
                              "# another comment\n"
                              "[data]\n"
                              "corpus = /some/where/text.txt ; inline comment\n"
                              "val_frac=0.05\n"
                              "\n"
                              "[model]\n"
                              "cell = gru\r\n"
                              "  layers = 3\n"
                              "hidden = 512\n"
                              "dropout = 0.25\n"
                              "[train]\n"
                              "steps = 10000000000\n"
                              "seed = 18446744073709551615\n"
                              "time_limit = 1.5e3\n"
                              "[optim]\n"
                              "kind = rmsprop\n"
                              "lr = 3e-4\n"
                              "schedule = cosine\n"
                              "[run]\n"
                              "dir = runs/x\n");
    config_t c;
    config_default(&c);
    err_clear();
    int rc = config_load_file(&c, p);
    EXPECT_MSG(rc == CHARLM_OK, "%s", err_message());
    EXPECT(strcmp(c.corpus, "/some/where/text.txt") == 0);
    EXPECT(c.val_frac == 0.05);
    EXPECT(c.cell == CELL_GRU && c.layers == 3 && c.hidden == 512 && c.dropout == 0.25);
    EXPECT(c.embed == 64); /* untouched default */
    EXPECT(c.steps == 10000000000LL);
    EXPECT(c.seed == UINT64_MAX);
    EXPECT(c.time_limit == 1500.0);
    EXPECT(c.optim == OPTIM_RMSPROP && c.lr == 3e-4 && c.schedule == SCHED_COSINE);
    EXPECT(strcmp(c.run_dir, "runs/x") == 0);

    /* --set after the file wins */
    rc = config_set(&c, "model.hidden", "32", "--set");
    EXPECT(rc == CHARLM_OK && c.hidden == 32);
    rc = config_set(&c, "data.corpus", "other file.txt", "--set");
    EXPECT(rc == CHARLM_OK && strcmp(c.corpus, "other file.txt") == 0);
    rc = config_set(&c, "optim.lr", " 1e-3 ", "--set"); /* surrounding space in a number is fine */
    EXPECT(rc == CHARLM_OK && c.lr == 1e-3);
    EXPECT(config_validate(&c) == CHARLM_OK);
}

/* A bad --set must fail with the key, the value and the origin in the message, and leave the
 * configuration unchanged. */
static void expect_bad_set(const char *key, const char *value, const char *also) {
    config_t c, before;
    config_default(&c);
    before = c;
    err_clear();
    int rc = config_set(&c, key, value, "--set");
    const char *m = err_message();
    EXPECT_MSG(rc == CHARLM_EINPUT, "%s = '%s' accepted", key, value);
    EXPECT_MSG(contains(m, key), "'%s' does not name %s", m, key);
    EXPECT_MSG(contains(m, "--set"), "'%s' does not name the origin", m);
    if (*value && strchr(value, '\n') == NULL)
        EXPECT_MSG(contains(m, value), "'%s' does not show the value '%s'", m, value);
    if (also) EXPECT_MSG(contains(m, also), "'%s' does not contain '%s'", m, also);
    EXPECT_MSG(memcmp(&c, &before, sizeof c) == 0, "%s = '%s' changed the config", key, value);
    err_clear();
}

static void test_bad_values(void) {
    expect_bad_set("model.hidden", "abc", ">= 1");
    expect_bad_set("train.seq", "1.5", ">= 1");
    expect_bad_set("train.seq", "0", ">= 1");
    expect_bad_set("model.hidden", "0", ">= 1");
    expect_bad_set("model.layers", "0", ">= 1");
    expect_bad_set("model.embed", "-3", ">= 1");
    expect_bad_set("model.hidden", "12abc", NULL);
    expect_bad_set("model.hidden", "", NULL);
    expect_bad_set("model.hidden", "99999999999", "2147483647");
    expect_bad_set("train.batch", "0x10", NULL);
    expect_bad_set("train.steps", "-1", ">= 0");
    expect_bad_set("train.steps", "99999999999999999999", NULL);
    expect_bad_set("train.seed", "-1", NULL);
    expect_bad_set("train.seed", "18446744073709551616", NULL);
    expect_bad_set("optim.lr", "-1", "> 0");
    expect_bad_set("optim.lr", "0", "> 0");
    expect_bad_set("optim.lr", "nan", NULL);
    expect_bad_set("optim.lr", "inf", NULL);
    expect_bad_set("optim.lr", "1e-3x", NULL);
    expect_bad_set("optim.lr", "1e999", NULL);
    expect_bad_set("model.dropout", "1.0", "[0, 1)");
    expect_bad_set("model.dropout", "-0.1", "[0, 1)");
    expect_bad_set("data.val_frac", "1", "[0, 1)");
    expect_bad_set("optim.beta2", "1", NULL);
    expect_bad_set("optim.eps", "0", NULL);
    expect_bad_set("optim.decay_rate", "0", "(0, 1]");
    expect_bad_set("optim.decay_rate", "1.5", "(0, 1]");
    expect_bad_set("train.time_limit", "-5", NULL);
    expect_bad_set("log.every", "0", ">= 1");
    expect_bad_set("model.cell", "tree", "rnn, lstm, gru");
    expect_bad_set("model.cell", "LSTM", NULL);
    expect_bad_set("model.precision", "fp16", "fp32, bf16");
    expect_bad_set("optim.kind", "adam2", "adagrad");
    expect_bad_set("optim.schedule", "linear", "cosine");
    expect_bad_set("run.dir", "", "empty");
    expect_bad_set("data.corpus", "a\nb", NULL);
    expect_bad_set("data.corpus", " lead", NULL);
    expect_bad_set("data.corpus", "x ;y", NULL);
    /* numbers are decimal: strtod's hexadecimal and its infinities and NaNs are refused */
    expect_bad_set("optim.lr", "0x10", "> 0");
    expect_bad_set("optim.lr", "0x1p-4", NULL);
    expect_bad_set("optim.clip", "0X5", NULL);
    expect_bad_set("optim.lr", "infinity", NULL);
    expect_bad_set("optim.lr", "-INF", NULL);
    expect_bad_set("optim.lr", "nan(1)", NULL);
    expect_bad_set("train.time_limit", "1,5", NULL);

    /* edge values that are valid */
    config_t c;
    config_default(&c);
    err_clear();
    EXPECT(config_set(&c, "train.seed", "0", "--set") == CHARLM_OK && c.seed == 0);
    EXPECT(config_set(&c, "model.dropout", "0.999", "--set") == CHARLM_OK);
    EXPECT(config_set(&c, "model.precision", "bf16", "--set") == CHARLM_OK &&
           c.precision == KERN_BF16);
    EXPECT(config_set(&c, "data.val_frac", "0", "--set") == CHARLM_OK && c.val_frac == 0);
    EXPECT(config_set(&c, "optim.decay_rate", "1", "--set") == CHARLM_OK);
    EXPECT(config_set(&c, "model.hidden", "+7", "--set") == CHARLM_OK && c.hidden == 7);
    EXPECT(config_set(&c, "model.hidden", "2147483647", "--set") == CHARLM_OK);
    EXPECT(config_set(&c, "data.val", "", "--set") == CHARLM_OK);
    EXPECT(config_set(&c, "optim.lr", "1E-3", "--set") == CHARLM_OK && c.lr == 1e-3);
    EXPECT(config_set(&c, "optim.lr", "+.5", "--set") == CHARLM_OK && c.lr == 0.5);
    EXPECT(config_set(&c, "optim.clip", "2.", "--set") == CHARLM_OK && c.clip == 2.0);
    EXPECT_MSG(err_message()[0] == '\0', "%s", err_message());

    /* unknown keys and sections */
    err_clear();
    EXPECT(config_set(&c, "model.hiden", "3", "--set") == CHARLM_EINPUT);
    EXPECT_MSG(contains(err_message(), "--set: unknown key 'model.hiden'"), "%s", err_message());
    err_clear();
    EXPECT(config_set(&c, "foo.bar", "3", "--set") == CHARLM_EINPUT);
    EXPECT_MSG(contains(err_message(), "unknown section [foo]") &&
                   contains(err_message(), "foo.bar"),
               "%s", err_message());
    err_clear();
    EXPECT(config_set(&c, "hidden", "3", "--set") == CHARLM_EINPUT);
    EXPECT_MSG(contains(err_message(), "'hidden'"), "%s", err_message());
    err_clear();
}

/* Loading text must fail with a message containing every needle. */
static void expect_bad_file(const char *text, const char *n1, const char *n2) {
    const char *p = write_tmp(text);
    config_t c;
    config_default(&c);
    err_clear();
    int rc = config_load_file(&c, p);
    const char *m = err_message();
    EXPECT_MSG(rc == CHARLM_EINPUT, "accepted: %s", text);
    EXPECT_MSG(strncmp(m, p, strlen(p)) == 0, "'%s' does not start with the path %s", m, p);
    if (n1) EXPECT_MSG(contains(m, n1), "'%s' does not contain '%s'", m, n1);
    if (n2) EXPECT_MSG(contains(m, n2), "'%s' does not contain '%s'", m, n2);
    err_clear();
}

static void test_bad_files(void) {
    expect_bad_file("[model]\nhiden = 3\n", ":2: unknown key 'model.hiden'", NULL);
    expect_bad_file("[data]\ncorpus = x\n[foo]\nbar = 1\n", ":4: unknown section [foo]", "foo.bar");
    expect_bad_file("layers = 3\n", ":1:", "layers");
    expect_bad_file("[model]\nhidden = 0\n", ":2: model.hidden = 0: must be an integer >= 1", NULL);
    expect_bad_file("[optim]\nlr = -1\n", ":2: optim.lr = -1", NULL);
    expect_bad_file("[data]\ncorpus = x\nthis is not a key\n", ":3: syntax error", NULL);
    expect_bad_file("[data\ncorpus = x\n", ":1: syntax error", NULL);
    /* an indented line is not silently joined to the previous value */
    expect_bad_file("[data]\ncorpus = a\n   b\n", ":3: syntax error", NULL);
    /* the first error wins, whichever kind it is */
    expect_bad_file("[model]\nhidden = 0\n???\n", ":2: model.hidden", NULL);
    expect_bad_file("[model]\n???\nhidden = 0\n", ":2: syntax error", NULL);
    /* missing file */
    char missing[4200];
    snprintf(missing, sizeof missing, "%s/no-such.ini", tmpdir);
    config_t c;
    config_default(&c);
    err_clear();
    EXPECT(config_load_file(&c, missing) == CHARLM_EINPUT);
    EXPECT_MSG(contains(err_message(), missing) && contains(err_message(), "cannot read") &&
                   contains(err_message(), "No such file"),
               "%s", err_message());
    err_clear();
    /* a directory */
    EXPECT(config_load_file(&c, tmpdir) == CHARLM_EINPUT);
    EXPECT_MSG(contains(err_message(), "cannot read"), "%s", err_message());
    err_clear();
}

static void test_long_lines(void) {
    char path[1200], text[4000];
    memset(path, 0, sizeof path);
    path[0] = '/';
    for (int i = 1; i < 1000; i++) path[i] = (i % 10 == 0) ? '/' : (char)('a' + i % 26);
    snprintf(text, sizeof text,
             "; %s\n[data]\ncorpus = %s ; comment\n[model]\nhidden = 7\n", path + 1, path);
    const char *p = write_tmp(text);
    config_t c;
    config_default(&c);
    err_clear();
    EXPECT_MSG(config_load_file(&c, p) == CHARLM_OK, "%s", err_message());
    EXPECT(strcmp(c.corpus, path) == 0);
    EXPECT(c.hidden == 7);
    err_clear();
}

static void test_round_trip(void) {
    config_t a;
    config_default(&a);
    char longpath[700];
    memset(longpath, 'p', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = '\0';
    longpath[0] = '/';
    struct {
        const char *k, *v;
    } sets[] = {
        {"data.corpus", longpath},      {"data.val_frac", "0.1"},      {"data.val", "v a l.txt"},
        {"model.cell", "rnn"},          {"model.dropout", "0.3333333333333333"},
        {"train.steps", "123456789012"}, {"train.seed", "18446744073709551615"},
        {"train.time_limit", "0.1"},   {"optim.kind", "adagrad"},     {"optim.lr", "3e-4"},
        {"optim.eps", "1e-300"},        {"optim.beta2", "0.99999999999999989"},
        {"optim.clip", "4.9406564584124654e-324"}, {"optim.schedule", "step"},
        {"optim.decay_every", "1000"},  {"eval.every", "200"},         {"run.dir", "runs/rt"},
    };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        int rc = config_set(&a, sets[i].k, sets[i].v, "--set");
        EXPECT_MSG(rc == CHARLM_OK, "%s", err_message());
    }
    err_clear();
    char *d1 = dump(&a);
    EXPECT(contains(d1, "[data]\ncorpus = /ppp"));
    EXPECT(contains(d1, "val_frac = 0.1\n"));
    EXPECT(contains(d1, "\n\n[model]\ncell = rnn\n"));
    EXPECT(contains(d1, "lr = 0.0003\n"));
    EXPECT(contains(d1, "seed = 18446744073709551615\n"));
    const char *order[] = {"[data]", "[model]", "[train]", "[optim]", "[eval]", "[log]", "[run]"};
    const char *prev = d1;
    for (int i = 0; i < 7; i++) {
        const char *q = strstr(d1, order[i]);
        EXPECT_MSG(q && q >= prev, "section %s out of order", order[i]);
        if (q) prev = q;
    }
    const char *p = write_tmp(d1);
    config_t b;
    config_default(&b);
    /* start b from different values so that every key must come from the file */
    config_set(&b, "model.hidden", "999", "--set");
    config_set(&b, "optim.kind", "sgd", "--set");
    int rc = config_load_file(&b, p);
    EXPECT_MSG(rc == CHARLM_OK, "%s", err_message());
    char *d2 = dump(&b);
    EXPECT_MSG(strcmp(d1, d2) == 0, "dumps differ:\n%s\n---\n%s", d1, d2);
    EXPECT(memcmp(&a, &b, sizeof a) == 0); /* identical values, bit for bit */
    free(d1);
    free(d2);

    /* the defaults round-trip too */
    config_default(&a);
    d1 = dump(&a);
    p = write_tmp(d1);
    config_default(&b);
    config_set(&b, "run.dir", "elsewhere", "--set");
    EXPECT_MSG(config_load_file(&b, p) == CHARLM_OK, "%s", err_message());
    d2 = dump(&b);
    EXPECT(strcmp(d1, d2) == 0);
    EXPECT(contains(d1, "val =\n"));
    free(d1);
    free(d2);
    err_clear();
}

static void test_validate(void) {
    config_t c;
    config_default(&c);
    err_clear();
    EXPECT(config_validate(&c) == CHARLM_EINPUT);
    EXPECT_MSG(contains(err_message(), "data.corpus is not set"), "%s", err_message());
    err_clear();
    config_set(&c, "data.corpus", "x.txt", "--set");
    EXPECT(config_validate(&c) == CHARLM_OK);
    config_set(&c, "train.epochs", "0", "--set");
    EXPECT(config_validate(&c) == CHARLM_EINPUT);
    EXPECT_MSG(contains(err_message(), "train.steps") && contains(err_message(), "train.epochs") &&
                   contains(err_message(), "train.time_limit"),
               "%s", err_message());
    err_clear();
    config_set(&c, "train.time_limit", "60", "--set");
    EXPECT(config_validate(&c) == CHARLM_OK);
    config_set(&c, "optim.schedule", "step", "--set");
    EXPECT(config_validate(&c) == CHARLM_EINPUT);
    EXPECT_MSG(contains(err_message(), "optim.schedule") &&
                   contains(err_message(), "optim.decay_every"),
               "%s", err_message());
    err_clear();
    config_set(&c, "optim.decay_every", "100", "--set");
    EXPECT_MSG(config_validate(&c) == CHARLM_OK, "%s", err_message());
    err_clear();
    /* tying needs the embedding as wide as the decoder's input */
    config_set(&c, "model.tie", "true", "--set");
    EXPECT(config_validate(&c) == CHARLM_EINPUT);
    EXPECT_MSG(contains(err_message(), "model.tie") && contains(err_message(), "model.embed") &&
                   contains(err_message(), "model.hidden") && contains(err_message(), "64") &&
                   contains(err_message(), "128"),
               "%s", err_message());
    err_clear();
    config_set(&c, "model.embed", "128", "--set");
    EXPECT_MSG(config_validate(&c) == CHARLM_OK, "%s", err_message());
    model_dropout_t d = config_model_dropout(&c);
    EXPECT(d.p == 0 && !d.locked && model_dropout_flags(&d) == 0);
    config_set(&c, "model.dropout_kind", "locked", "--set");
    config_set(&c, "model.weight_drop", "0.5", "--set");
    EXPECT(config_set(&c, "model.dropout_embed", "1", "--set") == CHARLM_EINPUT);
    err_clear();
    d = config_model_dropout(&c);
    EXPECT(d.locked == 1 && d.p_weight == 0.5f && d.seed == 1234);
    EXPECT(model_dropout_flags(&d) == MODEL_ACTS_WEIGHT_DROP);
    err_clear();
}

/* A key or a section given twice in one file is an error naming both lines (it was last-wins). */
static void test_duplicates(void) {
    expect_bad_file("[model]\nhidden = 8\nlayers = 1\nhidden = 16\n",
                    ":4: model.hidden is set again (first at line 2)", NULL);
    expect_bad_file("[data]\ncorpus = a\n[model]\nhidden = 8\n[data]\nval = b\n",
                    ":5: section [data] again (it began at line 1)", NULL);
    /* the same key name in two sections is two keys */
    const char *p = write_tmp("[eval]\nevery = 5\n[log]\nevery = 7\n[checkpoint]\nevery = 9\n");
    config_t c;
    config_default(&c);
    err_clear();
    EXPECT_MSG(config_load_file(&c, p) == CHARLM_OK, "%s", err_message());
    EXPECT(c.eval_every == 5 && c.log_every == 7 && c.ckpt_every == 9);
    /* across files (several --config) a later file replaces a key: that is not a duplicate */
    p = write_tmp("[model]\nhidden = 32\n");
    EXPECT_MSG(config_load_file(&c, p) == CHARLM_OK && c.hidden == 32, "%s", err_message());
    err_clear();
}

/* A message about a long value or key shows its start and its length, and keeps the reason. */
static void test_long_values(void) {
    char value[5001];
    memset(value, 'a', 5000);
    value[0] = '/';
    value[5000] = '\0';
    config_t c;
    config_default(&c);
    err_clear();
    EXPECT(config_set(&c, "data.corpus", value, "--set") == CHARLM_EINPUT);
    const char *m = err_message();
    EXPECT_MSG(contains(m, "--set: data.corpus = /aaa") && contains(m, "\u2026(5000 bytes)") &&
                   contains(m, "is too long (at most 4095 bytes)") && strlen(m) < 200,
               "%s", m);
    err_clear();
    /* cut before a character, not inside it: 'é' is 2 bytes, 61 of them do not fit in 60 */
    char wide[2 * 61 + 1] = "";
    for (int i = 0; i < 61; i++) strcat(wide, "\xc3\xa9");
    EXPECT(config_set(&c, "model.hidden", wide, "--set") == CHARLM_EINPUT);
    EXPECT_MSG(contains(err_message(), "= \xc3\xa9") &&
                   contains(err_message(), "\xc3\xa9\u2026(122 bytes): must be an integer"),
               "%s", err_message());
    err_clear();
    memset(value, 'k', 5000);
    memcpy(value, "model.", 6);
    EXPECT(config_set(&c, value, "1", "--set") == CHARLM_EINPUT);
    EXPECT_MSG(contains(err_message(), "unknown key 'model.kkk") &&
                   contains(err_message(), "(4994 bytes)' (keys of [model]: cell"),
               "%s", err_message());
    err_clear();
    /* a file's value: origin with line, the start of the value, the reason */
    char *text = malloc(6000);
    snprintf(text, 6000, "[optim]\nlr = 1%s\n", value + 6);
    const char *p = write_tmp(text);
    free(text);
    EXPECT(config_load_file(&c, p) == CHARLM_EINPUT);
    EXPECT_MSG(contains(err_message(), ":2: optim.lr = 1kkk") &&
                   contains(err_message(), "(4995 bytes): must be a number > 0"),
               "%s", err_message());
    err_clear();
    /* err keeps a message that names a path of CHARLM_PATH_MAX bytes, and its reason */
    char path[CHARLM_PATH_MAX];
    size_t dirlen = strlen(tmpdir);
    memcpy(path, tmpdir, dirlen);
    path[dirlen] = '/';
    memset(path + dirlen + 1, 'x', sizeof path - dirlen - 2);
    path[sizeof path - 1] = '\0';
    EXPECT(config_load_file(&c, path) == CHARLM_EINPUT);
    EXPECT_MSG(contains(err_message(), path) && contains(err_message(), "cannot read: "),
               "the reason is lost: ...%s", err_message() + strlen(err_message()) - 40);
    err_clear();
}

/* The shipped configs load and validate. */
static void test_shipped(void) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", __FILE__);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    const char *names[] = {"demo.ini", "tinyshakespeare.ini"};
    for (int i = 0; i < 2; i++) {
        char path[8300];
        snprintf(path, sizeof path, "%s/../configs/%s", dir, names[i]);
        config_t c;
        config_default(&c);
        err_clear();
        EXPECT_MSG(config_load_file(&c, path) == CHARLM_OK, "%s", err_message());
        EXPECT_MSG(config_validate(&c) == CHARLM_OK, "%s: %s", path, err_message());
        err_clear();
    }
}

static void test_log(void) {
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/run", tmpdir);
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "%s/metrics.jsonl", dir);
    log_t lg;
    err_clear();
    log_params_t lp = {.run_dir = dir, .every = 10};
    EXPECT(log_open(&lg, &lp, 0, 0) == CHARLM_EINPUT); /* the directory does not exist */
    EXPECT_MSG(contains(err_message(), cmd), "%s", err_message());
    err_clear();
    snprintf(dir, sizeof dir, "%s", tmpdir);
    EXPECT_MSG(log_open(&lg, &lp, 0, 0) == CHARLM_OK, "%s", err_message());
    log_train_t m = {.step = 120, .total_steps = 2000, .epoch = 0, .train_loss = 2.3141,
                     .lr = 0.002, .grad_norm = 1.2345678, .chars_per_s = 41234.5,
                     .elapsed_s = 12.5, .eta_s = 192};
    log_train(&lg, &m);
    m.step = 121;
    m.train_loss = NAN;
    m.grad_norm = INFINITY;
    m.eta_s = -1;
    m.total_steps = 0;
    log_train(&lg, &m);
    log_msg(&lg, "checkpoint %s", "ckpt-121.h5");
    log_val(&lg, 200, 1.8123, 12.5);
    log_close(&lg);
    snprintf(cmd, sizeof cmd, "%s/metrics.jsonl", tmpdir);
    char *s = slurp(cmd);
    EXPECT(s != NULL);
    if (s) {
        EXPECT_MSG(contains(s, "{\"step\":120,\"epoch\":0,\"train_loss\":2.3141,\"lr\":0.002,"
                               "\"grad_norm\":1.2345678,\"chars_per_s\":41234.5,"
                               "\"elapsed_s\":12.5}\n"),
                   "%s", s);
        EXPECT_MSG(contains(s, "{\"step\":121,\"epoch\":0,\"train_loss\":null,\"lr\":0.002,"
                               "\"grad_norm\":null,"),
                   "%s", s);
        EXPECT_MSG(contains(s, "{\"step\":200,\"val_loss\":1.8123,\"val_bpc\":2.61459622,"
                               "\"elapsed_s\":12.5}\n"),
                   "%s", s);
        free(s);
    }
}

int main(void) {
    tmpdir_make("config");
    test_defaults();
    test_load();
    test_bad_values();
    test_bad_files();
    test_long_lines();
    test_round_trip();
    test_validate();
    test_duplicates();
    test_long_values();
    test_shipped();
    test_log();
    return check_report("test_config");
}
