/* signals: a stop request recorded by an async-signal-safe handler, read by polling. */
#include "charlm/signals.h"

#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "charlm/err.h"

static const int stop_signals[] = {SIGTERM, SIGINT, SIGUSR1, SIGHUP};

static volatile sig_atomic_t first_signal; /* 0 until the first stop signal */

static void on_stop(int sig) {
    if (!first_signal) {
        first_signal = sig;
        return;
    }
    /* Ctrl-C pressed again: say that the stop is under way (write(2) is async-signal-safe; a
     * failed write changes nothing) */
    if (sig == SIGINT) {
        static const char note[] = "\ncharlm: already stopping (SIGKILL ends at once, losing the "
                                   "steps since the last checkpoint)\n";
        ssize_t n = write(STDERR_FILENO, note, sizeof note - 1);
        (void)n;
    }
}

static void stop_mask(sigset_t *set) {
    sigemptyset(set);
    for (size_t i = 0; i < sizeof stop_signals / sizeof *stop_signals; i++)
        sigaddset(set, stop_signals[i]);
}

void signals_hold(void) {
    sigset_t set;
    stop_mask(&set);
    CHARLM_CHECK(sigprocmask(SIG_BLOCK, &set, NULL) == 0);
}

static void install(int flags) {
    /* the mask keeps the handler from interrupting itself with another stop signal */
    struct sigaction sa = {.sa_handler = on_stop, .sa_flags = flags};
    stop_mask(&sa.sa_mask);
    for (size_t i = 0; i < sizeof stop_signals / sizeof *stop_signals; i++)
        CHARLM_CHECK(sigaction(stop_signals[i], &sa, NULL) == 0);
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigemptyset(&ign.sa_mask);
    CHARLM_CHECK(sigaction(SIGPIPE, &ign, NULL) == 0);
    CHARLM_CHECK(sigaction(SIGXFSZ, &ign, NULL) == 0);
    /* what signals_hold kept pending (across a re-execution too) reaches on_stop now */
    sigset_t set;
    stop_mask(&set);
    CHARLM_CHECK(sigprocmask(SIG_UNBLOCK, &set, NULL) == 0);
}

/* SA_RESTART: a signal must not fail a read or write in progress (the corpus, a checkpoint) with
 * EINTR */
void signals_install(void) { install(SA_RESTART); }

void signals_install_interrupting(void) { install(0); }

int signals_pending(void) { return first_signal; }

int signals_check(void) {
    int sig = first_signal;
    if (!sig) return CHARLM_OK;
    return err_set(CHARLM_EINTERRUPTED, "stopped by %s during start-up: nothing was written (run "
                   "the same command again)", signals_name(sig));
}

const char *signals_name(int sig) {
    static char other[32];
    switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGUSR1: return "SIGUSR1";
    case SIGHUP: return "SIGHUP";
    default: snprintf(other, sizeof other, "signal %d", sig); return other;
    }
}
