/* plateau_steps: a helper of test_ema_sched.py (not a test itself). Feeds validation losses to
 * optim_plateau, as train.c does at every validation of the eval.every cadence, and prints the
 * learning-rate scale after each and whether the run would stop early, for comparison with
 * torch.optim.lr_scheduler.ReduceLROnPlateau.
 *
 *   plateau_steps PATIENCE FACTOR THRESHOLD EARLY_STOP LOSS...
 *
 * Prints one line "SCALE STOP" per loss (SCALE with 17 significant digits, STOP 0 or 1).
 * Exit status 0, or 1 with one message on stderr. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "charlm/optim.h"

static double number(const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno) {
        fprintf(stderr, "plateau_steps: '%s' is not a number\n", s);
        exit(1);
    }
    return v;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fputs("plateau_steps: usage: plateau_steps PATIENCE FACTOR THRESHOLD EARLY_STOP LOSS...\n",
              stderr);
        return 1;
    }
    plateau_params_t p = {.patience = (int64_t)number(argv[1]), .factor = number(argv[2]),
                          .threshold = number(argv[3]), .early_stop = (int64_t)number(argv[4])};
    plateau_t s = optim_plateau_start();
    for (int i = 5; i < argc; i++) {
        int stop = optim_plateau(&s, &p, number(argv[i]));
        printf("%.17g %d\n", s.scale, stop);
    }
    return 0;
}
