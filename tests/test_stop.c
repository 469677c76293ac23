/* test_stop: the stop signals of a training run (signals.h). Any number of SIGTERM, SIGINT,
 * SIGUSR1 and SIGHUP leave the process running with the first one recorded, through handlers
 * that stay installed (no SA_RESETHAND) and restart interrupted calls; SIGPIPE and SIGXFSZ are
 * ignored; signals_check turns a pending stop into CHARLM_EINTERRUPTED with one line naming the
 * signal. And the corpus loader polls it between blocks: SIGTERM arriving once the loader has
 * read 2 MiB of a 24 MiB corpus — a text, and the same prepared by `charlm prepare` — makes
 * corpus_load return CHARLM_EINTERRUPTED instead of reading on to the end. */
#include "charlm/corpus.h"
#include "charlm/err.h"
#include "charlm/prepare.h"
#include "charlm/signals.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static void test_handlers(void) {
    EXPECT(signals_pending() == 0 && signals_check() == CHARLM_OK);
    signals_install();
    const int stops[] = {SIGTERM, SIGTERM, SIGUSR1, SIGHUP, SIGTERM, SIGUSR1, SIGHUP};
    for (size_t i = 0; i < sizeof stops / sizeof *stops; i++) raise(stops[i]);
    raise(SIGPIPE);
    raise(SIGXFSZ);
    EXPECT(signals_pending() == SIGTERM);
    err_clear();
    EXPECT(signals_check() == CHARLM_EINTERRUPTED);
    EXPECT_MSG(strstr(err_message(), "stopped by SIGTERM during start-up: nothing was written"),
               "%s", err_message());
    err_clear();
    const int caught[] = {SIGTERM, SIGINT, SIGUSR1, SIGHUP};
    for (size_t i = 0; i < sizeof caught / sizeof *caught; i++) {
        struct sigaction sa;
        sigaction(caught[i], NULL, &sa);
        EXPECT_MSG(sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN &&
                       (sa.sa_flags & SA_RESTART) && !(sa.sa_flags & SA_RESETHAND),
                   "%s", signals_name(caught[i]));
    }
    EXPECT(!strcmp(signals_name(SIGUSR1), "SIGUSR1") && !strcmp(signals_name(SIGHUP), "SIGHUP"));
}

/* Bytes this process has read so far (/proc/self/io rchar), -1 when unknown. */
static long long bytes_read(void) {
    FILE *f = fopen("/proc/self/io", "r");
    long long n = -1;
    char key[32];
    long long v;
    while (f && fscanf(f, "%31s %lld", key, &v) == 2)
        if (!strcmp(key, "rchar:")) n = v;
    if (f) fclose(f);
    return n;
}

static long long read_before; /* rchar before corpus_load */

/* Sends SIGTERM to the process once the loader has read 2 MiB. */
static void *stop_while_loading(void *arg) {
    (void)arg;
    const struct timespec tick = {.tv_nsec = 100000};
    while (bytes_read() - read_before < (2 << 20)) nanosleep(&tick, NULL);
    kill(getpid(), SIGTERM);
    return NULL;
}

/* In a child process (the stop flag cannot be taken back): corpus_load of the 24 MiB corpus at
 * path with SIGTERM arriving while it reads. Exit status 0 when it returned CHARLM_EINTERRUPTED. */
static int load_stopped(const char *path) {
    signals_install();
    corpus_params_t p = {.corpus = path, .val = "", .val_frac = 0.1, .batch = 2, .seq = 16};
    corpus_t c;
    pthread_t t;
    read_before = bytes_read();
    CHARLM_CHECK(read_before >= 0 && pthread_create(&t, NULL, stop_while_loading, NULL) == 0);
    int rc = corpus_load(&c, &p, 0, 1, 0);
    pthread_join(t, NULL);
    if (rc == CHARLM_OK) corpus_free(&c);
    fprintf(stderr, "corpus_load of %s with SIGTERM after 2 MiB read: status %d (%s), %lld bytes "
            "read\n", path, rc, err_message(), bytes_read() - read_before);
    return rc == CHARLM_EINTERRUPTED && strstr(err_message(), "stopped by SIGTERM") ? 0 : 1;
}

static void expect_stopped(const char *path) {
    pid_t pid = fork();
    CHARLM_CHECK(pid >= 0);
    if (pid == 0) _exit(load_stopped(path));
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "corpus_load of %s read on after SIGTERM: it must return signals_check() between "
               "blocks (child status %d)", path, status);
}

static void test_corpus_polls(void) {
    char text[] = "/tmp/charlm-test-stop-XXXXXX", prepared[sizeof text + 3];
    int fd = mkstemp(text);
    CHARLM_CHECK(fd >= 0);
    FILE *f = fdopen(fd, "w");
    CHARLM_CHECK(f != NULL);
    /* random letters: a prepared corpus is compressed, and a repeated line would shrink to
     * nothing */
    static const char letters[] = "abcdefghijklmnopqrstuvwxyz \n";
    uint64_t x = 1;
    for (size_t n = 0; n < (24u << 20); n++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        fputc(letters[(x >> 33) % (sizeof letters - 1)], f);
    }
    CHARLM_CHECK(fclose(f) == 0);
    expect_stopped(text);
    snprintf(prepared, sizeof prepared, "%s.h5", text);
    const char *inputs[] = {text};
    EXPECT_MSG(prepare_run(prepared, inputs, 1, 0) == CHARLM_OK, "%s", err_message());
    expect_stopped(prepared);
    remove(text);
    remove(prepared);
}

int main(void) {
    test_corpus_polls();
    test_handlers();
    return check_report("test_stop");
}
