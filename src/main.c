/* charlm command line (usage()): `charlm train | inspect | sample | eval | gradflow | prepare |
 * status`. Starts MPI, hands the arguments after the command's name to it — train's are the
 * configuration file and overrides, loaded and validated here on every rank; the others parse
 * their own — and exits with the status every rank agreed on (README "Exit codes"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "charlm/checkpoint.h"
#include "charlm/config.h"
#include "charlm/dist.h"
#include "charlm/err.h"
#include "charlm/eval.h"
#include "charlm/gradflow.h"
#include "charlm/h5io.h"
#include "charlm/kern.h"
#include "charlm/prepare.h"
#include "charlm/sample.h"
#include "charlm/signals.h"
#include "charlm/status.h"
#include "charlm/train.h"

static void usage(FILE *f) {
    fputs("usage: charlm train [--config FILE] [--set section.key=value]... [--resume auto|CKPT]\n"
          "                    [options]\n"
          "       charlm inspect CKPT [--verify]\n"
          "       charlm sample CKPT [--prime TEXT | --prime-file FILE] [--length N]\n"
          "                    [--temperature T] [--top-k K] [--top-p P] [--seed S] [--count N]\n"
          "                    [--unknown skip|error] [--beam N [--beam-stop C]\n"
          "                    [--length-norm A]] [--interactive [--keep-state]]\n"
          "                    [--json [--logprobs]] [--weights ema|raw]\n"
          "       charlm eval CKPT TEXT... [--json] [--unknown skip|error] [--batch B]\n"
          "                    [--dynamic [--dynamic-lr LR] [--dynamic-decay D]\n"
          "                    [--dynamic-seq T] [--per-window]] [--weights ema|raw]\n"
          "       charlm gradflow CKPT --corpus TEXT... [--max-lag K] [--batch B]\n"
          "                    [--windows W] [--json FILE] [--unknown skip|error]\n"
          "       charlm prepare CORPUS... -o OUT.h5 [--force]\n"
          "       charlm status RUN_DIR [--verify] [--json]\n"
          "       charlm --version | --help\n"
          "\n"
          "train options (each is a shorthand for --set KEY=VALUE):\n"
          "  -c, --config FILE     INI configuration, applied before every override; several\n"
          "                        are applied in order, a later file's keys replacing an\n"
          "                        earlier one's\n"
          "  --resume auto|CKPT    continue from the newest valid checkpoint of run.dir (a fresh\n"
          "                        start when there is none), or from the checkpoint CKPT\n"
          "  --corpus PATH         data.corpus: text file, directory, glob or prepared .h5\n"
          "  --val PATH            data.val: separate validation text\n"
          "  --cell rnn|lstm|gru   model.cell\n"
          "  --layers N            model.layers\n"
          "  --hidden N            model.hidden\n"
          "  --embed N             model.embed\n"
          "  --dropout P           model.dropout\n"
          "  -b, --batch N         train.batch (streams per rank)\n"
          "  -t, --seq N           train.seq (window length)\n"
          "  -n, --steps N         train.steps\n"
          "  --epochs N            train.epochs\n"
          "  --time-limit S        train.time_limit (seconds)\n"
          "  --seed N              train.seed\n"
          "  --optim KIND          optim.kind\n"
          "  --lr X                optim.lr\n"
          "  --eval-every N        eval.every\n"
          "  --log-every N         log.every\n"
          "  -o, --run-dir DIR     run.dir\n"
          "\n"
          "exit codes: 0 done, 1 bad input, 2 usage, 3 stopped by a signal (checkpoint written),\n"
          "            4 diverged, 5 stopped by a signal during start-up (nothing written)\n",
          f);
}

static const struct {
    const char *flag, *alias, *key;
} shorthands[] = {
    {"--corpus", NULL, "data.corpus"},   {"--val", NULL, "data.val"},
    {"--cell", NULL, "model.cell"},      {"--layers", NULL, "model.layers"},
    {"--hidden", NULL, "model.hidden"},  {"--embed", NULL, "model.embed"},
    {"--dropout", NULL, "model.dropout"}, {"--batch", "-b", "train.batch"},
    {"--seq", "-t", "train.seq"},        {"--steps", "-n", "train.steps"},
    {"--epochs", NULL, "train.epochs"},  {"--time-limit", NULL, "train.time_limit"},
    {"--seed", NULL, "train.seed"},      {"--optim", NULL, "optim.kind"},
    {"--lr", NULL, "optim.lr"},          {"--eval-every", NULL, "eval.every"},
    {"--log-every", NULL, "log.every"},  {"--run-dir", "-o", "run.dir"},
};

/* The configuration key of shorthand option a, or NULL. */
static const char *shorthand_key(const char *a) {
    for (size_t k = 0; k < sizeof shorthands / sizeof *shorthands; k++)
        if (!strcmp(a, shorthands[k].flag) ||
            (shorthands[k].alias && !strcmp(a, shorthands[k].alias)))
            return shorthands[k].key;
    return NULL;
}

/* Parses `train` arguments into cfg: the config files first, in command-line order (a later
 * file's keys replace an earlier one's), then every override in command-line order. Returns
 * CHARLM_OK, CHARLM_EUSAGE (with err_set) or CHARLM_EINPUT. */
static int parse_train(config_t *cfg, const char **resume, int argc, char **argv) {
    *resume = NULL;
    config_default(cfg);
    for (int pass = 0; pass < 3; pass++) {
        for (int i = 0; i < argc; i++) {
            const char *a = argv[i], *key = shorthand_key(a);
            int config = !strcmp(a, "-c") || !strcmp(a, "--config"), set = !strcmp(a, "--set");
            if (!key && !config && !set && strcmp(a, "--resume"))
                return err_set(CHARLM_EUSAGE, "unknown option '%.60s%s' (see charlm --help)", a,
                               strlen(a) > 60 ? "\u2026" : "");
            if (i + 1 >= argc) return err_set(CHARLM_EUSAGE, "option %s needs a value", a);
            const char *val = argv[++i];
            if (pass == 0 && !strcmp(a, "--resume")) *resume = val;
            if (pass == 0 && set && !strchr(val, '='))
                return err_set(CHARLM_EUSAGE, "--set %.60s%s: expected section.key=value", val,
                               strlen(val) > 60 ? "\u2026" : "");
            int rc = CHARLM_OK;
            if (pass == 1 && config) {
                rc = config_load_file(cfg, val);
            } else if (pass == 2 && set) {
                char *kv = xstrdup(val), *eq = strchr(kv, '=');
                *eq = '\0';
                rc = config_set(cfg, kv, eq + 1, a);
                free(kv);
            } else if (pass == 2 && key) {
                rc = config_set(cfg, key, val, a);
            }
            if (rc) return rc;
        }
    }
    return config_validate(cfg);
}

static int cmd_train(int argc, char **argv, const dist_t *d) {
    static config_t cfg;
    const char *resume;
    int rc = parse_train(&cfg, &resume, argc, argv);
    rc = dist_agree(d, rc ? rc : signals_check());
    if (rc == CHARLM_EUSAGE && d->rank == 0)
        fputs("usage: charlm train --config FILE [--set section.key=value]... (charlm --help)\n",
              stderr);
    return rc ? rc : train_run(&cfg, resume, d);
}

/* charlm inspect CKPT [--verify]: rank 0 reads, every rank returns its status. */
static int cmd_inspect(int argc, char **argv, const dist_t *d) {
    const char *path = NULL;
    int verify = 0, rc = CHARLM_OK;
    for (int i = 0; i < argc && !rc; i++) {
        if (!strcmp(argv[i], "--verify")) verify = 1;
        else if (argv[i][0] != '-' && !path) path = argv[i];
        else rc = err_set(CHARLM_EUSAGE, "inspect: unexpected argument '%s'", argv[i]);
    }
    if (!rc && !path)
        rc = err_set(CHARLM_EUSAGE, "inspect: which checkpoint? (charlm inspect CKPT [--verify])");
    if (!rc && d->rank == 0) rc = ckpt_inspect(stdout, path, verify);
    return dist_agree(d, rc);
}

/* The subcommands: each gets the arguments after its name and returns the agreed exit status;
 * those that run a model first have CHARLM_KERN checked. */
static const struct {
    const char *name;
    int (*run)(int argc, char **argv, const dist_t *d);
    int runs_model;
} commands[] = {
    {"train", cmd_train, 1},
    {"inspect", cmd_inspect, 0},
    {"sample", sample_main, 1},
    {"eval", eval_main, 1},
    {"gradflow", gradflow_main, 1},
    {"prepare", prepare_main, 0},
    {"status", status_main, 0},
};

/* charlm --version: the version and the libraries this binary runs with (the BLAS kernel set is
 * the one OpenBLAS chose for this CPU at start-up). */
static void print_version(void) {
    char libs[1024], hdf5[64];
    dist_libraries(libs, sizeof libs);
    h5io_library_version(hdf5, sizeof hdf5);
    printf("charlm %s\n%s\n%s\n", CHARLM_VERSION, hdf5, libs);
}

int main(int argc, char **argv) {
    /* a training run takes its stop signals from the first instruction on (the re-execution
     * and MPI_Init included), and so does prepare, which must remove its temporary file; the
     * other commands keep the default actions: they write nothing that a kill would leave half
     * done */
    int stops = argc > 1 && (!strcmp(argv[1], "train") || !strcmp(argv[1], "prepare"));
    if (stops) signals_hold();
    dist_blas_kernels(argv); /* may re-execute this program: before anything else */
    if (stops) signals_install();
    dist_t d;
    dist_init(&d, &argc, &argv);
    h5io_quiet(); /* our messages name the file and dataset instead */
    int rc = CHARLM_OK;
    const char *cmd = argc > 1 ? argv[1] : "";
    size_t i = 0, n = sizeof commands / sizeof *commands;
    while (i < n && strcmp(cmd, commands[i].name)) i++;
    if (i < n) {
        if (commands[i].runs_model) rc = dist_agree(&d, kern_env_check());
        if (!rc) rc = commands[i].run(argc - 2, argv + 2, &d);
    } else if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        if (d.rank == 0) usage(stdout);
    } else if (!strcmp(cmd, "--version")) {
        if (d.rank == 0) print_version();
    } else {
        rc = err_set(CHARLM_EUSAGE, argc > 1 ? "unknown command '%s'" : "no command given%s",
                     argc > 1 ? cmd : "");
        rc = dist_agree(&d, rc);
        if (d.rank == 0) usage(stderr);
    }
    dist_finalize();
    return rc;
}
