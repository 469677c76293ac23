/* signals: the stop signals of `charlm train` and `charlm prepare` (README "Signals"). SIGTERM,
 * SIGINT, SIGUSR1 and SIGHUP only record that a stop was asked for — any number of them, at any
 * moment — and the command acts on the request where it can stop cleanly: at the end of a
 * training window (all ranks agree on it there), at the agreements between the stages of
 * start-up, between the blocks of a corpus being read, and between the chunks prepare writes
 * (it removes its temporary file). SIGPIPE and SIGXFSZ are ignored: a closed log pipe or a file-size
 * limit then fails the write, which its writer handles, instead of killing the run. Layer 1, so
 * that any loop of start-up may poll. */
#ifndef CHARLM_SIGNALS_H
#define CHARLM_SIGNALS_H

/* Blocks the stop signals: those that arrive stay pending until signals_install. Call it first
 * in main, before dist_blas_kernels: a re-execution resets handlers to the default action (which
 * kills) but keeps the blocked mask and the pending signals, so a stop sent in between is not
 * lost and kills nothing. */
void signals_hold(void);

/* Installs the handlers with sigaction (kept after each delivery, SA_RESTART), then unblocks the
 * stop signals (a signal held by signals_hold is delivered then). Call it early in main, before
 * MPI_Init: Open MPI's launcher forwards TERM, INT, USR1 and HUP to the ranks at any time, and
 * MPI_Init keeps handlers installed before it. A repeated SIGINT (Ctrl-C twice) writes one note
 * that the stop is under way; it does not abort. */
void signals_install(void);

/* signals_install, except that a stop signal interrupts a blocking read or write (EINTR) instead
 * of restarting it: for `charlm sample --interactive`, whose wait for a line on a terminal must
 * end on Ctrl-C. */
void signals_install_interrupting(void);

/* The first stop signal that arrived since signals_install (SIGTERM, SIGINT, SIGUSR1 or SIGHUP),
 * 0 when none. One read of a sig_atomic_t: cheap enough for every block of a loop. */
int signals_pending(void);

/* CHARLM_OK when no stop signal arrived; else CHARLM_EINTERRUPTED with err_set "stopped by SIGTERM
 * during start-up: nothing was written (run the same command again)". For start-up, where there
 * is no state to checkpoint yet: the corpus loader returns it between blocks, train before each
 * agreement of start-up. */
int signals_check(void);

/* "SIGTERM", "SIGINT", "SIGUSR1", "SIGHUP"; "signal N" for any other. */
const char *signals_name(int sig);

#endif
