/* ckpt_flips: a helper of test_ckpt_bitflips.py (not a test itself). Flips single bits of a
 * checkpoint, one at a time, and reads each damaged copy with ckpt_read, as `inspect --verify`
 * and every resume do; sorts each flip into one of
 *   detected   ckpt_read failed with a message (the file is refused or skipped)
 *   same       ckpt_read succeeded and everything it read equals the original's, bit for bit
 *   CHANGED    ckpt_read succeeded with other contents: an undetected corruption
 *   ABORTED    the reading process died (signal, abort, out of memory, more than 20 s)
 *
 *   ckpt_flips CKPT WORKDIR all | SEED COUNT
 *
 * `all` flips every bit of CKPT in turn; SEED COUNT flips COUNT distinct bits drawn with the
 * seed. Each read runs in a child process (fork) on WORKDIR/flip.h5, so that a crash inside
 * HDF5 is counted instead of ending the run. Prints one line per CHANGED and ABORTED flip (bit
 * offset and what happened), a sample of the detection messages, then the counts as
 *   flips N detected D same S changed C aborted A (by the digest G)
 * where G of the D detections are the checkpoint digest's (format 3): damage nothing else saw.
 * Exit status 0 when C and A are 0, 1 when they are not, 2 on a usage or I/O error. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "charlm/checkpoint.h"
#include "charlm/err.h"
#include "charlm/rng.h"

enum { SAME = 0, DETECTED = 1, CHANGED = 2, NCLASSES = 4 };

static _Noreturn void die(const char *fmt, const char *arg) {
    fputs("ckpt_flips: ", stderr);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(2);
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot read %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    unsigned char *buf = malloc((size_t)len);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) die("cannot read %s", path);
    fclose(f);
    *n = (size_t)len;
    return buf;
}

static int same_bytes(const void *a, const void *b, size_t n) {
    return (!a && !b) || (a && b && !memcmp(a, b, n));
}

/* Whether everything ckpt_read gave for b equals a's. The info structs are compared whole:
 * ckpt_read zeroes them before filling them in, so their padding is zero in both. */
static int same_contents(const ckpt_t *a, const ckpt_t *b) {
    const model_dims_t *d = &a->info.dims;
    size_t np = (size_t)model_layout(d, NULL, NULL);
    size_t ns = (size_t)d->layers * (size_t)a->info.streams * (size_t)d->H;
    if (memcmp(&a->info, &b->info, sizeof a->info) || strcmp(a->config, b->config) ||
        a->vocab.size != b->vocab.size || a->nmoments != b->nmoments ||
        a->n_train != b->n_train || a->n_val != b->n_val)
        return 0;
    int ok = same_bytes(a->vocab.cps, b->vocab.cps, sizeof(uint32_t) * (size_t)a->vocab.size) &&
             same_bytes(a->params, b->params, sizeof(float) * np) &&
             same_bytes(a->h, b->h, sizeof(float) * ns) &&
             same_bytes(a->c, b->c, sizeof(float) * ns) &&
             same_bytes(a->train_hist, b->train_hist, sizeof(double) * 3 * (size_t)a->n_train) &&
             same_bytes(a->val_hist, b->val_hist, sizeof(double) * 2 * (size_t)a->n_val);
    for (int i = 0; i < a->nmoments && ok; i++)
        ok = same_bytes(a->moments[i], b->moments[i], sizeof(float) * np);
    return ok;
}

/* The child: writes the file with bit `bit` flipped, reads it and exits with its class; a
 * detection message goes to fd msg. */
static _Noreturn void child(const char *flip, const unsigned char *orig, size_t n, size_t bit,
                            const ckpt_t *ref, int msg) {
    alarm(20);
    FILE *f = fopen(flip, "wb");
    if (!f) _exit(3);
    for (size_t i = 0; i < n; i++)
        fputc(i == bit / 8 ? orig[i] ^ (1u << (bit % 8)) : orig[i], f);
    if (fclose(f) != 0) _exit(3);
    ckpt_t ck;
    if (ckpt_read(&ck, flip) != CHARLM_OK) {
        const char *m = err_message();
        if (write(msg, m, strlen(m)) < 0) _exit(3);
        _exit(DETECTED);
    }
    _exit(same_contents(ref, &ck) ? SAME : CHANGED);
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) die("%s", "usage: ckpt_flips CKPT WORKDIR all | SEED COUNT");
    size_t n;
    unsigned char *orig = slurp(argv[1], &n);
    ckpt_t ref;
    if (ckpt_read(&ref, argv[1]) != CHARLM_OK) die("the original does not read: %s", err_message());
    char flip[4096];
    snprintf(flip, sizeof flip, "%s/flip.h5", argv[2]);

    size_t nbits = 8 * n, count = nbits;
    size_t *bits = NULL;
    if (strcmp(argv[3], "all")) {
        if (argc != 5) die("%s", "usage: ckpt_flips CKPT WORKDIR all | SEED COUNT");
        uint64_t seed = strtoull(argv[3], NULL, 10);
        count = strtoull(argv[4], NULL, 10);
        if (count > nbits) count = nbits;
        /* a partial Fisher-Yates shuffle of the bit offsets: COUNT distinct ones */
        size_t *perm = malloc(sizeof(size_t) * nbits);
        if (!perm) die("%s", "out of memory");
        for (size_t i = 0; i < nbits; i++) perm[i] = i;
        for (size_t i = 0; i < count; i++) {
            size_t j = i + (size_t)(rng_mix(seed + i) % (nbits - i));
            size_t t = perm[i];
            perm[i] = perm[j], perm[j] = t;
        }
        bits = perm;
    }

    size_t counts[NCLASSES + 1] = {0}, shown = 0, by_digest = 0;
    for (size_t k = 0; k < count; k++) {
        size_t bit = bits ? bits[k] : k;
        int fd[2];
        if (pipe(fd) != 0) die("pipe: %s", strerror(errno));
        pid_t pid = fork();
        if (pid < 0) die("fork: %s", strerror(errno));
        if (pid == 0) {
            close(fd[0]);
            child(flip, orig, n, bit, &ref, fd[1]);
        }
        close(fd[1]);
        char msg[1024];
        ssize_t got = read(fd[0], msg, sizeof msg - 1);
        msg[got > 0 ? got : 0] = '\0';
        close(fd[0]);
        int status = 0;
        waitpid(pid, &status, 0);
        int cls = WIFEXITED(status) && WEXITSTATUS(status) <= CHANGED ? WEXITSTATUS(status)
                                                                       : NCLASSES;
        counts[cls]++;
        int digest = cls == DETECTED && strstr(msg, "digest");
        by_digest += digest;
        if (cls == CHANGED)
            printf("CHANGED byte %zu bit %zu: read back without error, contents differ\n",
                   bit / 8, bit % 8);
        else if (cls == NCLASSES)
            printf("ABORTED byte %zu bit %zu: %s %d\n", bit / 8, bit % 8,
                   WIFSIGNALED(status) ? "signal" : "exit status",
                   WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        else if (cls == DETECTED && ((shown < 8 && k >= shown * count / 8) ||
                                     (digest && by_digest == 1))) { /* spread out */
            printf("detected byte %zu bit %zu: %s\n", bit / 8, bit % 8, msg);
            shown++;
        }
        fflush(stdout);
    }
    remove(flip);
    printf("flips %zu detected %zu same %zu changed %zu aborted %zu (by the digest %zu)\n", count,
           counts[DETECTED], counts[SAME], counts[CHANGED], counts[NCLASSES], by_digest);
    ckpt_free(&ref);
    free(bits);
    free(orig);
    return counts[CHANGED] || counts[NCLASSES] ? 1 : 0;
}
