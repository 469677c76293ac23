/* check.h: the few assertions the C tests share. A failed check prints file, line and the
 * expression and makes the test exit non-zero at the end (tests keep going to show every failure). */
#ifndef CHARLM_TEST_CHECK_H
#define CHARLM_TEST_CHECK_H

#include <stdio.h>

static int check_failures;

#define EXPECT(cond)                                                                    \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond);       \
            check_failures++;                                                           \
        }                                                                               \
    } while (0)

#define EXPECT_MSG(cond, ...)                                                           \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: expected %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                               \
            fputc('\n', stderr);                                                        \
            check_failures++;                                                           \
        }                                                                               \
    } while (0)

/* Returns the process exit status: 0 when every check passed. */
static inline int check_report(const char *name) {
    if (check_failures) fprintf(stderr, "%s: %d check(s) failed\n", name, check_failures);
    else printf("%s: all checks passed\n", name);
    return check_failures ? 1 : 0;
}

#endif
