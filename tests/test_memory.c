/* test_memory: the memory a configuration needs, computed before anything is allocated —
 * model_nparams is model_layout's count and model_acts_bytes what model_acts_alloc allocates, for
 * every cell, with and without dropout and the folded embedding; both stay finite where size_t
 * or int64 arithmetic would wrap — and what may still be allocated: fileio_mem_available under
 * an address-space limit, and model_window_fits refusing a window that does not fit in it with
 * one message naming the option, the bytes and the bound. */

#include "charlm/err.h"
#include "charlm/fileio.h"
#include "charlm/model.h"

#include "check.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static void test_counts(void) {
    const cell_kind_t cells[] = {CELL_RNN, CELL_LSTM, CELL_GRU};
    const int flags[] = {0, MODEL_ACTS_DROPOUT, MODEL_ACTS_UNFOLDED,
                         MODEL_ACTS_DROPOUT | MODEL_ACTS_UNFOLDED};
    const int BT[][2] = {{1, 1}, {4, 16}, {32, 64}}; /* folded only at 32 x 64 */
    for (int c = 0; c < 3; c++)
        for (int layers = 1; layers <= 3; layers++) {
            model_params_t p = {.cell = cells[c], .layers = layers, .hidden = 9,
                                .embed = 5 + layers};
            model_dims_t d;
            model_dims(&d, &p, 37);
            model_t m;
            model_init(&m, &d, 1);
            EXPECT_MSG(model_nparams(&d) == (double)m.nparams, "%s x%d: %.0f != %lld",
                       cell_kind_name(cells[c]), layers, model_nparams(&d),
                       (long long)m.nparams);
            for (int f = 0; f < 4; f++)
                for (int k = 0; k < 3; k++) {
                    model_acts_t a;
                    model_acts_alloc(&a, &m, BT[k][0], BT[k][1], flags[f]);
                    double want = model_acts_bytes(&d, BT[k][0], BT[k][1], flags[f]);
                    EXPECT_MSG(want == (double)a.bytes, "%s x%d flags %d B %d T %d: %.0f != %zu",
                               cell_kind_name(cells[c]), layers, flags[f], BT[k][0], BT[k][1],
                               want, a.bytes);
                    model_acts_free(&a);
                }
            model_free(&m);
        }
    /* beyond every integer type: counted, not wrapped */
    model_params_t p = {.cell = CELL_LSTM, .layers = MODEL_MAX_LAYERS, .hidden = INT_MAX,
                        .embed = INT_MAX};
    model_dims_t d;
    model_dims(&d, &p, 1000);
    double n = model_nparams(&d), big = model_acts_bytes(&d, INT_MAX, INT_MAX, 0);
    EXPECT_MSG(isfinite(n) && n > 16.0 * 8 * (double)INT_MAX * INT_MAX, "%g", n);
    EXPECT_MSG(isfinite(big) && big > 4.0 * (double)INT_MAX * INT_MAX * 1000, "%g", big);
}

static void test_available(void) {
    fileio_mem_t free_mem = fileio_mem_available(1, 0);
    EXPECT_MSG(free_mem.bytes > 0 && free_mem.what, "%g %s", free_mem.bytes, free_mem.what);
    fileio_mem_t quarter = fileio_mem_available(4, 0);
    if (quarter.sharers == 4)
        EXPECT_MSG(quarter.bytes < free_mem.bytes, "a share of 4: %g of %g", quarter.bytes,
                   free_mem.bytes);

    /* an address-space limit 1 GiB above what is mapped now */
    struct rlimit old;
    getrlimit(RLIMIT_AS, &old);
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double vm = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmSize:", 7)) vm = strtod(line + 7, NULL) * 1024;
    if (f) fclose(f);
    const double GiB = 1024.0 * 1024 * 1024;
    struct rlimit lim = {.rlim_cur = (rlim_t)(vm + GiB), .rlim_max = old.rlim_max};
    if (vm <= 0 || setrlimit(RLIMIT_AS, &lim) != 0) {
        fprintf(stderr, "test_memory: no RLIMIT_AS check (VmSize %g)\n", vm);
        return;
    }
    fileio_mem_t m = fileio_mem_available(2, MODEL_LIB_VM);
    EXPECT_MSG(!strcmp(m.what, "RLIMIT_AS (ulimit -v)") && m.sharers == 1 &&
                   m.reserved == MODEL_LIB_VM,
               "%s", m.what);
    EXPECT_MSG(fabs(m.bytes - (GiB - MODEL_LIB_VM)) < 16.0 * 1024 * 1024, "%g", m.bytes);
    char text[300];
    fileio_mem_text(text, sizeof text, &m);
    EXPECT_MSG(strstr(text, "available (RLIMIT_AS (ulimit -v), less 160.0 MiB that the "
                            "libraries map)"),
               "%s", text);

    model_params_t p = {.cell = CELL_LSTM, .layers = 2, .hidden = 128, .embed = 64};
    model_dims_t d;
    model_dims(&d, &p, 80);
    err_clear();
    EXPECT_MSG(model_window_fits(&d, 64, 128, 1e6, 1, "eval: --batch") == CHARLM_OK, "%s",
               err_message());
    EXPECT(model_window_fits(&d, 100000, 128, 1e6, 1, "eval: --batch") == CHARLM_EINPUT);
    const char *msg = err_message();
    EXPECT_MSG(strstr(msg, "eval: --batch 100000: not enough memory: windows of 100000 "
                           "streams x 128 steps need ") == msg &&
                   strstr(msg, " GiB (activations ") && strstr(msg, "RLIMIT_AS"),
               "%s", msg);
    err_clear();
    setrlimit(RLIMIT_AS, &old);
}

int main(void) {
    test_counts();
    test_available();
    return check_report("test_memory");
}
