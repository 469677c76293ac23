#define _GNU_SOURCE /* syscall: the AMX permission (arch_prctl) */
#include "charlm/kern.h"

#include <cblas.h>
#include <cpuid.h>
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "charlm/err.h"

/* Panels of B's columns, NR = 32 wide for AVX-512 (two zmm registers per row of an 8-row tile)
 * and NR256 = 16 for AVX2 (two ymm per row: a 6-row tile holds 12 of the 16 ymm registers, the
 * panel's row and A's broadcast the rest). K is cut into blocks of KC (KC256) so that the block
 * of a panel the micro-kernel streams (32 KB, 16 KB) stays in L1 while every row block of A
 * passes over it. */
enum { NR = 32, KC = 256, MR512 = 8, NR256 = 16, KC256 = 256, MR256 = 6 };

/* AMX: every tile register 16 rows of 64 bytes — a C tile 16 x 16 fp32, an A tile 16 rows x 16
 * bf16 pairs, a B tile 16 pairs x 16 columns (the left or right half of a 32-column bf16
 * panel, 128 bytes a row). K is padded with zeros to whole tiles of 16 pairs. */
enum { AMX_ROWS = 16, AMX_PAIRS = 16 };

const char *const kern_precision_names[KERN_PRECISIONS] = {"fp32", "bf16"};

static const char *const path_names[KERN_PATHS] = {"blas", "avx2", "avx512", "avx512bf16",
                                                   "amx"};

const char *kern_path_name(kern_path_t p) { return err_enum_name(path_names, KERN_PATHS, (int)p); }

/* Whether the CPU has AMX-TILE and AMX-BF16 and the kernel lets this process use the tile data
 * (Linux asks each process to request it, arch_prctl ARCH_REQ_XCOMP_PERM; the permission lasts
 * until exec). Asked once. */
static int amx_usable(void) {
    static int usable = -1;
    if (usable >= 0) return usable;
    usable = 0;
#if defined(__linux__) && defined(SYS_arch_prctl)
    enum { AMX_BF16_BIT = 22, AMX_TILE_BIT = 24, ARCH_REQ_XCOMP_PERM = 0x1023, XTILEDATA = 18 };
    unsigned a, b, c, d;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> AMX_BF16_BIT & 1) &&
        (d >> AMX_TILE_BIT & 1))
        usable = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XTILEDATA) == 0;
#endif
    return usable;
}

int kern_path_supported(kern_path_t p, kern_precision_t prec) {
    __builtin_cpu_init();
    switch (p) {
    case KERN_BLAS: return 1;
    case KERN_AVX2:
        return prec == KERN_FP32 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case KERN_AVX512: return prec == KERN_FP32 && __builtin_cpu_supports("avx512f");
    case KERN_AVX512_BF16: /* the packing interleaves bf16 with AVX512BW's vpermw */
        return prec == KERN_BF16 && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
    case KERN_AMX_BF16: /* A's rows are rounded with AVX512-BF16 */
        return kern_path_supported(KERN_AVX512_BF16, prec) && amx_usable();
    case KERN_PATHS: break;
    }
    return 0;
}

/* whether this CPU runs path p at either precision */
static int path_runs(kern_path_t p) {
    return kern_path_supported(p, KERN_FP32) || kern_path_supported(p, KERN_BF16);
}

/* The path CHARLM_KERN names: -1 when it is unset or empty, KERN_PATHS when it names no path
 * this CPU runs. */
static int env_path(const char **env) {
    *env = getenv("CHARLM_KERN");
    if (!*env || !**env) return -1;
    int p = err_enum_value(path_names, KERN_PATHS, *env);
    return p < 0 || !path_runs((kern_path_t)p) ? KERN_PATHS : p;
}

int kern_env_check(void) {
    const char *env;
    if (env_path(&env) != KERN_PATHS) return CHARLM_OK;
    char runs[96] = "";
    for (int p = 0; p < KERN_PATHS; p++)
        if (path_runs((kern_path_t)p))
            snprintf(runs + strlen(runs), sizeof runs - strlen(runs), "%s%s", *runs ? ", " : "",
                     path_names[p]);
    const int known = err_enum_value(path_names, KERN_PATHS, env) >= 0;
    return err_set(CHARLM_EINPUT, "CHARLM_KERN=%.40s%s: %s (this CPU runs %s)", env,
                   strlen(env) > 40 ? "\u2026" : "",
                   known ? "a kernel path this CPU cannot run" : "not a kernel path", runs);
}

kern_path_t kern_path_auto(kern_precision_t prec) {
    const char *env;
    const int p = env_path(&env);
    if (p == KERN_PATHS)
        err_abort(__FILE__, __LINE__, "CHARLM_KERN names no path: kern_env_check was not called");
    if (p >= 0 && kern_path_supported((kern_path_t)p, prec)) return (kern_path_t)p;
    /* unset, or a path of the other precision: these products take the default */
    static const kern_path_t best[] = {KERN_AMX_BF16, KERN_AVX512_BF16, KERN_AVX512, KERN_AVX2};
    for (size_t i = 0; i < sizeof best / sizeof *best; i++)
        if (kern_path_supported(best[i], prec)) return best[i];
    return KERN_BLAS;
}

/* ---- bfloat16 ---- */

/* The bf16 bits nearest x, ties to even; NaN stays a (quiet) NaN. */
static uint16_t bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float kern_round_bf16(float x) {
    uint32_t u = (uint32_t)bf16_bits(x) << 16;
    float r;
    memcpy(&r, &u, sizeof r);
    return r;
}

/* x (n) rounded to bf16 values, as floats */
static void round_floats(float *out, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = kern_round_bf16(x[i]);
}

/* ---- packing ---- */

/* the panel width of path p's fp32 packing */
static int panel_width(kern_path_t p) { return p == KERN_AVX2 ? NR256 : NR; }
static int panels(int N, int nr) { return (N + nr - 1) / nr; }
static int pairs(int K) { return (K + 1) / 2; }
static int round_up(int n, int m) { return (n + m - 1) / m * m; }
static int bf16_path(kern_path_t p) { return p == KERN_AVX512_BF16 || p == KERN_AMX_BF16; }
/* the pairs of k a bf16 path's panels and rounded rows hold: whole tiles for AMX */
static int pairs_for(kern_path_t p, int K) {
    return p == KERN_AMX_BF16 ? round_up(pairs(K), AMX_PAIRS) : pairs(K);
}

/* B's element (k, n) */
static float b_at(const float *w, int K, int N, int trans, int k, int n) {
    return trans ? w[(size_t)n * K + k] : w[(size_t)k * N + n];
}

/* fp32 panels of width nr: panel p holds (k, j) = B(k, nr p + j) at (p K + k) nr + j, zeros
 * past N. */
static void pack_fp32(float *pack, const float *w, int K, int N, int trans, int nr) {
    for (int p = 0; p < panels(N, nr); p++) {
        float *P = pack + (size_t)p * K * nr;
        for (int k = 0; k < K; k++)
            for (int j = 0; j < nr; j++) {
                int n = p * nr + j;
                P[(size_t)k * nr + j] = n < N ? b_at(w, K, N, trans, k, n) : 0.0f;
            }
    }
}

/* Two rows' 16 values as 16 bf16 pairs, dword l = (lo[l], hi[l]): the pairs along k that
 * vdpbf16ps and TDPBF16PS multiply. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static inline __m512i
pairs16(__m512 lo, __m512 hi) {
    static const uint16_t interleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,
                                            21, 6, 22, 7, 23, 8,  24, 9,  25, 10, 26,
                                            11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(hi, lo); /* lo in bf16 0-15, hi 16-31 */
    return _mm512_permutexvar_epi16(_mm512_loadu_si512(interleave), both);
}

/* the mask of the first n (clamped to 0..16) lanes */
static __mmask16 lanes(int n) {
    return n >= 16 ? 0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1);
}

/* Rows k and k + 1 of a matrix with rows ld floats apart, the columns in mask from col on, as
 * 16 bf16 pairs; zeros for rows at or past K. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static inline __m512i
row_pairs16(const float *col, size_t ld, int k, int K, __mmask16 mask) {
    const float *r = col + (size_t)k * ld;
    const __m512 zero = _mm512_setzero_ps();
    return pairs16(k < K ? _mm512_maskz_loadu_ps(mask, r) : zero,
                   k + 1 < K ? _mm512_maskz_loadu_ps(mask, r + ld) : zero);
}

/* bf16 panels of K2 >= pairs(K) pairs along k: panel p holds (q, j, e) = B(2q + e, 32p + j) at
 * p*K2*64 + q*64 + 2j + e, zeros past K and N: vdpbf16ps's lane j sums e = 0, 1, and each half
 * of a row is a row of an AMX B tile. Rounded by the CPU's conversion (to nearest, ties to
 * even; it reads subnormal inputs as zero). */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void
pack_bf16(uint16_t *pack, const float *w, int K, int N, int trans, int K2) {
    for (int p = 0; p < panels(N, NR); p++) {
        uint16_t *P = pack + (size_t)p * K2 * 2 * NR;
        if (!trans) { /* B = w (K, N): rows 2q and 2q + 1, 16 columns at a time */
            for (int q = 0; q < K2; q++)
                for (int h = 0; h < 2; h++) {
                    const int n0 = p * NR + 16 * h;
                    _mm512_store_si512(P + (size_t)q * 2 * NR + 32 * h,
                                       row_pairs16(w + n0, N, 2 * q, K, lanes(N - n0)));
                }
            continue;
        }
        /* B = w^T, w (N, K): a row of w is a column of B, whose pairs along k are adjacent */
        const __m512i rows = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8,
                                                                 7, 6, 5, 4, 3, 2, 1, 0),
                                                _mm512_set1_epi32(NR));
        for (int j = 0; j < NR; j++) {
            const int n = p * NR + j;
            for (int q0 = 0; q0 < K2; q0 += 16) {
                __m512i v = _mm512_setzero_si512();
                if (n < N) {
                    const float *r = w + (size_t)n * K + 2 * q0;
                    const int left = K - 2 * q0;
                    const __m512 lo = _mm512_maskz_loadu_ps(lanes(left), r),
                                 hi = _mm512_maskz_loadu_ps(lanes(left - 16), r + 16);
                    v = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
                }
                _mm512_mask_i32scatter_epi32((int *)P + (size_t)q0 * NR + j, lanes(K2 - q0), rows,
                                             v, 4);
            }
        }
    }
}

static size_t align64(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

/* The bytes of the panels of B (K, N) on path p at prec. */
static size_t pack_size(kern_path_t p, kern_precision_t prec, int K, int N) {
    const int W = panel_width(p);
    const size_t Np = (size_t)panels(N, W) * W, K2 = (size_t)pairs_for(p, K) * 2;
    if (bf16_path(p)) return K2 * Np * sizeof(uint16_t);
    if (p != KERN_BLAS) return (size_t)K * Np * sizeof(float);
    return prec == KERN_BF16 ? (size_t)K * (size_t)N * sizeof(float) : 0;
}

/* The bytes of A (M, K) rounded on path p at prec (none at fp32). */
static size_t a_size(kern_path_t p, kern_precision_t prec, int M, int K) {
    /* AMX multiplies whole tiles of 16 rows: the rows past M are read, never stored */
    const size_t rows = (size_t)(p == KERN_AMX_BF16 ? round_up(M, AMX_ROWS) : M);
    if (bf16_path(p)) return rows * (size_t)pairs_for(p, K) * 2 * sizeof(uint16_t);
    return p == KERN_BLAS && prec == KERN_BF16 ? rows * (size_t)K * sizeof(float) : 0;
}

/* Grows *n to the aligned sizes of A (M, K) and of B (K, N)'s panels on path p at prec. */
static void grow(kern_need_t *n, kern_path_t p, kern_precision_t prec, int M, int N, int K) {
    const size_t pack = align64(pack_size(p, prec, K, N)), a = align64(a_size(p, prec, M, K));
    if (pack > n->pack) n->pack = pack;
    if (a > n->a) n->a = a;
}

/* what a kern_mat_t of kern_mat_alloc holds: B of either shape, A of max_m rows */
static kern_need_t mat_layout(kern_path_t p, kern_precision_t prec, int max_m, int k0, int n0) {
    kern_need_t n = {0};
    grow(&n, p, prec, max_m, n0, k0);
    grow(&n, p, prec, max_m, k0, n0);
    return n;
}

double kern_mat_bytes(kern_path_t p, kern_precision_t prec, int max_m, int k0, int n0) {
    const kern_need_t n = mat_layout(p, prec, max_m, k0, n0);
    return kern_need_bytes(&n);
}

/* m's memory: pack bytes of panels, then a of rounded rows (both multiples of 64) */
static void mat_memory(kern_mat_t *m, size_t pack, size_t a) {
    m->pack_bytes = pack, m->a_bytes = a;
    if (!pack && !a) return;
    m->mem = xcalloc(pack + a + 64, 1);
    char *base = (char *)(((uintptr_t)m->mem + 63) & ~(uintptr_t)63);
    m->pack = pack ? base : NULL;
    m->a = a ? base + pack : NULL;
}

void kern_mat_alloc(kern_mat_t *m, kern_path_t p, kern_precision_t prec, int max_m, int k0,
                    int n0) {
    CHARLM_CHECK(kern_path_supported(p, prec) && max_m >= 1 && k0 >= 1 && n0 >= 1);
    *m = (kern_mat_t){.path = p, .prec = prec, .max_m = max_m, .k0 = k0, .n0 = n0};
    const kern_need_t n = mat_layout(p, prec, max_m, k0, n0);
    mat_memory(m, n.pack, n.a);
}

void kern_need(kern_need_t *n, kern_path_t p, kern_precision_t prec, int M, int N, int K) {
    if (prec != KERN_FP32) grow(n, p, prec, M, N, K);
}

double kern_need_bytes(const kern_need_t *n) {
    return n->pack + n->a ? (double)(n->pack + n->a + 64) : 0.0;
}

void kern_mat_alloc_need(kern_mat_t *m, kern_path_t p, kern_precision_t prec,
                         const kern_need_t *n) {
    CHARLM_CHECK(kern_path_supported(p, prec));
    *m = (kern_mat_t){.path = p, .prec = prec};
    mat_memory(m, n->pack, n->a);
}

void kern_mat_free(kern_mat_t *m) {
    free(m->mem);
    memset(m, 0, sizeof *m);
}

void kern_pack(kern_mat_t *m, const float *w, int K, int N, int trans) {
    CHARLM_CHECK(K >= 1 && N >= 1 &&
                 ((K <= m->k0 && N <= m->n0) || (K <= m->n0 && N <= m->k0)));
    m->K = K, m->N = N, m->trans = trans, m->w = w, m->reverse = 0;
    if (bf16_path(m->path)) {
        pack_bf16(m->pack, w, K, N, trans, pairs_for(m->path, K));
    } else if (m->path != KERN_BLAS) {
        pack_fp32(m->pack, w, K, N, trans, panel_width(m->path));
    } else if (m->prec == KERN_BF16) {
        round_floats(m->pack, w, (size_t)K * N);
    }
}

/* ---- micro-kernels: C tile (mr, nr) (+)= A rows (mr, kc) x a panel block (kc, 32) ----
 * Rows past mr re-read A's last row and are not stored, so one register tile serves every
 * edge. */

/* C's first mr rows and nr columns (+)= the zmm tile c */
__attribute__((target("avx512f"))) static inline void store_tile512(float *C, int ldc,
                                                                   __m512 c[MR512][2], int mr,
                                                                   int nr, int acc) {
    __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? 0xffff : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
    for (int i = 0; i < mr; i++) {
        float *r = C + (size_t)i * ldc;
        if (acc) {
            c[i][0] = _mm512_add_ps(c[i][0], _mm512_maskz_loadu_ps(m0, r));
            c[i][1] = _mm512_add_ps(c[i][1], _mm512_maskz_loadu_ps(m1, r + 16));
        }
        _mm512_mask_storeu_ps(r, m0, c[i][0]);
        _mm512_mask_storeu_ps(r + 16, m1, c[i][1]);
    }
}

__attribute__((target("avx512f"))) static void tile_avx512(float *C, int ldc, const float *A,
                                                          int lda, const float *P, int kc,
                                                          int mr, int nr, int acc) {
    const float *a[MR512];
    for (int i = 0; i < MR512; i++) a[i] = A + (size_t)(i < mr ? i : mr - 1) * lda;
    __m512 c[MR512][2];
    #pragma GCC unroll 8
    for (int i = 0; i < MR512; i++) c[i][0] = c[i][1] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(P + (size_t)k * NR);
        __m512 b1 = _mm512_load_ps(P + (size_t)k * NR + 16);
        #pragma GCC unroll 8
        for (int i = 0; i < MR512; i++) {
            __m512 x = _mm512_set1_ps(a[i][k]);
            c[i][0] = _mm512_fmadd_ps(x, b0, c[i][0]);
            c[i][1] = _mm512_fmadd_ps(x, b1, c[i][1]);
        }
    }
    store_tile512(C, ldc, c, mr, nr, acc);
}

/* AVX2: a tile of R rows (R = 6, or 4 for the rows a 6-row tile would leave as 2) by a panel of
 * NR256 = 16 columns: 2R ymm accumulators, the panel's row and A's broadcast in the rest. R is a
 * constant in each caller, so that the accumulators stay in registers. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
tile_avx2_rows(float *C, int ldc, const float *A, int lda, const float *P, int kc, int mr, int nr,
               int acc, const int R) {
    const float *a[MR256];
    for (int i = 0; i < R; i++) a[i] = A + (size_t)(i < mr ? i : mr - 1) * lda;
    __m256 c[MR256][2];
    #pragma GCC unroll 6
    for (int i = 0; i < R; i++) c[i][0] = c[i][1] = _mm256_setzero_ps();
    for (int k = 0; k < kc; k++) {
        const float *b = P + (size_t)k * NR256;
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        #pragma GCC unroll 6
        for (int i = 0; i < R; i++) {
            __m256 x = _mm256_broadcast_ss(a[i] + k);
            c[i][0] = _mm256_fmadd_ps(x, b0, c[i][0]);
            c[i][1] = _mm256_fmadd_ps(x, b1, c[i][1]);
        }
    }
    #pragma GCC unroll 6
    for (int i = 0; i < R; i++) {
        if (i >= mr) break;
        float t[NR256], *r = C + (size_t)i * ldc, *d = nr == NR256 ? r : t;
        if (acc && nr == NR256) {
            c[i][0] = _mm256_add_ps(c[i][0], _mm256_loadu_ps(r));
            c[i][1] = _mm256_add_ps(c[i][1], _mm256_loadu_ps(r + 8));
        }
        _mm256_storeu_ps(d, c[i][0]);
        _mm256_storeu_ps(d + 8, c[i][1]);
        if (nr < NR256)
            for (int j = 0; j < nr; j++) r[j] = acc ? r[j] + t[j] : t[j];
    }
}

__attribute__((target("avx2,fma"))) static void tile_avx2(float *C, int ldc, const float *A,
                                                          int lda, const float *P, int kc,
                                                          int mr, int nr, int acc) {
    if (mr > 4)
        tile_avx2_rows(C, ldc, A, lda, P, kc, mr, nr, acc, 6);
    else
        tile_avx2_rows(C, ldc, A, lda, P, kc, mr, nr, acc, 4);
}

/* bf16: A as bf16 pairs, pair q of row i at A + i rs + q ps (in bf16: rows of pairs, rs = 2 K2
 * and ps = 2, or pairs of rows, rs = 2 and ps = 2 M), a panel block of kc2 pairs of rows. */
__attribute__((target("avx512f,avx512bf16"))) static void tile_bf16(float *C, int ldc,
                                                                    const uint16_t *A, size_t rs,
                                                                    size_t ps, const uint16_t *P,
                                                                    int kc2, int mr, int nr,
                                                                    int acc) {
    const uint16_t *a[MR512];
    for (int i = 0; i < MR512; i++) a[i] = A + (size_t)(i < mr ? i : mr - 1) * rs;
    __m512 c[MR512][2];
    #pragma GCC unroll 8
    for (int i = 0; i < MR512; i++) c[i][0] = c[i][1] = _mm512_setzero_ps();
    for (int q = 0; q < kc2; q++) {
        __m512bh b0 = (__m512bh)_mm512_load_si512(P + (size_t)q * 2 * NR);
        __m512bh b1 = (__m512bh)_mm512_load_si512(P + (size_t)q * 2 * NR + NR);
        #pragma GCC unroll 8
        for (int i = 0; i < MR512; i++) {
            int32_t pair;
            memcpy(&pair, a[i] + (size_t)q * ps, sizeof pair);
            __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
            c[i][0] = _mm512_dpbf16_ps(c[i][0], x, b0);
            c[i][1] = _mm512_dpbf16_ps(c[i][1], x, b1);
        }
    }
    store_tile512(C, ldc, c, mr, nr, acc);
}

/* ---- drivers ---- */

static int imin(int a, int b) { return a < b ? a : b; }

/* Panel n of np in the order of a product whose panels run backwards when reverse. kern_gemm
 * alternates the direction from one product to the next, so that a step starts on the panels
 * the step before took last, still in L2 when B is not much larger than L2 (W_hh of an LSTM
 * 512 layer: 4 MB in fp32, 2 MB in bf16, against 2 MB of L2 on the Xeon measured: its per-step
 * AMX products forward 1.15-1.24x faster at H = 512, fp32 with GRU's 3 MB 1.07-1.10x; beyond,
 * at H = 1024, 1.00-1.05x; bench_kernel products). Each panel's sums are the same either way. */
static int panel_at(int n, int np, int reverse) { return reverse ? np - 1 - n : n; }

static void gemm_fp32(float *C, const float *A, const kern_mat_t *m, int M, int acc) {
    const int K = m->K, N = m->N, avx2 = m->path == KERN_AVX2;
    const int W = avx2 ? NR256 : NR, KB = avx2 ? KC256 : KC, MR = avx2 ? MR256 : MR512;
    const float *pack = m->pack;
    for (int n = 0, np = panels(N, W); n < np; n++) {
        const int p = panel_at(n, np, m->reverse), nr = imin(W, N - p * W);
        for (int k0 = 0; k0 < K; k0 += KB) {
            const int kc = imin(KB, K - k0), add = acc || k0 > 0;
            const float *P = pack + ((size_t)p * K + (size_t)k0) * W;
            float *Cp = C + (size_t)p * W;
            for (int i = 0, mr; i < M; i += mr) {
                float *Ci = Cp + (size_t)i * N;
                const float *Ai = A + (size_t)i * K + k0;
                mr = imin(MR, M - i);
                if (!avx2) {
                    tile_avx512(Ci, N, Ai, K, P, kc, mr, nr, add);
                } else {
                    if (M - i == 8) mr = 4; /* two 4-row tiles, not 6 + 2 */
                    tile_avx2(Ci, N, Ai, K, P, kc, mr, nr, add);
                }
            }
        }
    }
}

/* A (M, K) rounded to bf16 pairs, rows K2 pairs apart, zeros past K. */
__attribute__((target("avx512f,avx512bf16"))) static void round_rows_bf16(uint16_t *out,
                                                                          const float *A, int M,
                                                                          int K, int K2) {
    const int ld = 2 * K2;
    for (int i = 0; i < M; i++) {
        const float *r = A + (size_t)i * K;
        uint16_t *o = out + (size_t)i * ld;
        int k = 0;
        for (; k + 16 <= K; k += 16)
            _mm256_storeu_si256((__m256i *)(o + k),
                                (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(r + k)));
        for (; k < K; k++) o[k] = bf16_bits(r[k]);
        for (; k < ld; k++) o[k] = 0;
    }
}

/* A (K, M) rounded to bf16 pairs as A^T's rows, K2 pairs apart, zeros past K: column i of A
 * becomes row i. Blocks of 16 columns by 16 pairs: each pair of A's rows as one dword per column
 * into a 16 x 16 block in L1, which is written out transposed, 16 dwords a row. (The CPU's
 * scatter, a dword at a time to 16 rows, took a fifth of an LSTM 2x128 window on Zen 4.) */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void
round_cols_bf16(uint16_t *out, const float *A, int M, int K, int K2) {
    int32_t block[16][16] __attribute__((aligned(64)));
    for (int i0 = 0; i0 < M; i0 += 16) {
        const int mi = imin(16, M - i0);
        for (int q0 = 0; q0 < K2; q0 += 16) {
            const int nq = imin(16, K2 - q0);
            for (int q = 0; q < nq; q++)
                _mm512_store_si512(block[q], row_pairs16(A + i0, M, 2 * (q0 + q), K, lanes(mi)));
            for (int i = 0; i < mi; i++) {
                int32_t *o = (int32_t *)out + (size_t)(i0 + i) * K2 + q0;
                for (int q = 0; q < nq; q++) o[q] = block[q][i];
            }
        }
    }
}

/* A (K, M) rounded to bf16 as pairs of its rows: dword i of pair row q = (A(2q, i), A(2q + 1, i)),
 * rows M dwords apart, zeros past K: A^T's pairs along k without a transposition, for
 * tile_bf16 (AMX's tiles need A^T's rows, round_cols_bf16). */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void
round_pairs_bf16(uint16_t *out, const float *A, int M, int K, int K2) {
    for (int q = 0; q < K2; q++) {
        int32_t *o = (int32_t *)out + (size_t)q * M;
        for (int i0 = 0; i0 < M; i0 += 16) {
            const __mmask16 mi = lanes(M - i0);
            _mm512_mask_storeu_epi32(o + i0, mi, row_pairs16(A + i0, M, 2 * q, K, mi));
        }
    }
}

/* Rows of A a row block of the bf16 products keeps in L2 while it passes over every panel. */
enum { MC_BF16 = 64 };

/* C (M, N) (+)= a (M rows of K2 pairs; rows of pairs, or pairs of rows when kmajor) x the bf16
 * panels pack (K2 pairs, N columns). Per block of MC_BF16 rows: each panel, its k blocks in
 * order, every row tile of the block. */
static void product_bf16(float *C, const uint16_t *a, int kmajor, const uint16_t *pack, int M,
                         int N, int K2, int acc, int reverse) {
    const size_t rs = kmajor ? 2 : (size_t)K2 * 2, ps = kmajor ? (size_t)M * 2 : 2;
    for (int i0 = 0; i0 < M; i0 += MC_BF16) {
        const int i1 = imin(M, i0 + MC_BF16);
        for (int n = 0, np = panels(N, NR); n < np; n++) {
            const int p = panel_at(n, np, reverse), nr = imin(NR, N - p * NR);
            for (int q0 = 0; q0 < K2; q0 += KC / 2) {
                const int kc2 = imin(KC / 2, K2 - q0), add = acc || q0 > 0;
                const uint16_t *P = pack + (size_t)p * K2 * 2 * NR + (size_t)q0 * 2 * NR;
                for (int i = i0; i < i1; i += MR512)
                    tile_bf16(C + (size_t)i * N + (size_t)p * NR, N, a + i * rs + q0 * ps, rs,
                              ps, P, kc2, imin(MR512, i1 - i), nr, add);
            }
        }
    }
}

/* AMX: tiles 0-3 hold a 32 x 32 block of C (rows 16r.., columns 16c.. in tile 2r + c), 4-5 the
 * block's two row tiles of A, 6-7 the panel's two column tiles of B; the block stays in the
 * tiles over the whole of K, so that each output element's sum over k runs in one order fixed
 * by K. Blocks at an edge go through a 32 x 32 scratch, read back past M and N from nowhere. */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config_t;

__attribute__((target("amx-tile"))) static void amx_configure(void) {
    amx_config_t cfg = {.palette = 1};
    for (int t = 0; t < 8; t++) cfg.rows[t] = AMX_ROWS, cfg.colsb[t] = 64;
    _tile_loadconfig(&cfg);
}

/* The 32 x 32 block of C at (i, 32p): rows < mr and columns < nr of it exist; its A rows are
 * a (ld pairs apart) and its panel P (K2 pairs). With mr <= 16 the lower row tile is skipped.
 * The tile numbers are instruction operands, so each tile's load and products are spelled out. */
__attribute__((target("amx-tile,amx-bf16"))) static void block_amx(float *C, int ldc,
                                                                  const uint16_t *a, int ld,
                                                                  const uint16_t *P, int K2,
                                                                  int mr, int nr, int acc) {
    float edge[2 * AMX_ROWS][NR];
    const int whole = mr == 2 * AMX_ROWS && nr == NR, two = mr > AMX_ROWS;
    char *out = whole ? (char *)C : (char *)edge;
    const size_t ldo = whole ? (size_t)ldc * sizeof(float) : sizeof edge[0],
                 lda = (size_t)ld * 4, ldb = 2 * NR * sizeof(uint16_t); /* bytes a row */
    if (acc && !whole)
        for (int i = 0; i < mr; i++) memcpy(edge[i], C + (size_t)i * ldc, sizeof(float) * nr);
    if (acc) {
        _tile_loadd(0, out, ldo);
        _tile_loadd(1, out + 64, ldo);
        if (two) {
            _tile_loadd(2, out + 16 * ldo, ldo);
            _tile_loadd(3, out + 16 * ldo + 64, ldo);
        }
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (int q = 0; q < K2; q += AMX_PAIRS) {
        const char *r = (const char *)(a + (size_t)q * 2), *b = (const char *)(P + q * 2 * NR);
        _tile_loadd(4, r, lda);
        _tile_loadd(6, b, ldb);
        _tile_loadd(7, b + 64, ldb);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        if (two) {
            _tile_loadd(5, r + AMX_ROWS * lda, lda);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
    }
    _tile_stored(0, out, ldo);
    _tile_stored(1, out + 64, ldo);
    if (two) {
        _tile_stored(2, out + 16 * ldo, ldo);
        _tile_stored(3, out + 16 * ldo + 64, ldo);
    }
    if (!whole)
        for (int i = 0; i < mr; i++) memcpy(C + (size_t)i * ldc, edge[i], sizeof(float) * nr);
}

/* Pairs of k and rows of A one pass of the AMX products keeps near the tile unit: a panel's
 * KC_AMX pairs (32 KB) stay in L1 while every 32-row block of MC_AMX rows (256 KB of A, in L2)
 * takes its product with them; unblocked, the panels and A streamed from beyond L2 and the
 * whole products ran 1.2-1.45x slower (bench_kernel matmul). Each block's sums over k still
 * run in k's order: between the passes C waits in memory as the fp32 the tiles held. */
enum { KC_AMX = 256, MC_AMX = 256 };

/* C (M, N) (+)= a (M rows, padded to whole tiles, of K2 pairs) x the bf16 panels pack */
__attribute__((target("amx-tile"))) static void product_amx(float *C, const uint16_t *a,
                                                           const uint16_t *pack, int M, int N,
                                                           int K2, int acc, int reverse) {
    amx_configure();
    /* One block of 32 rows (a recurrent step's) takes the whole of K at once: its A is small
     * enough for L2 anyway, and passes over k would each run the panels past L2 and break
     * panel_at's alternation (the per-step products were 1.18-1.34x slower with them at
     * H = 1024, 1.23-1.25x in the backward at H = 512). */
    const int KB = M <= 2 * AMX_ROWS ? K2 : KC_AMX;
    for (int q0 = 0; q0 < K2; q0 += KB) {
        const int kc = imin(KB, K2 - q0), add = acc || q0 > 0;
        for (int i0 = 0; i0 < M; i0 += MC_AMX) {
            const int i1 = imin(M, i0 + MC_AMX);
            for (int n = 0, np = panels(N, NR); n < np; n++) {
                const int p = panel_at(n, np, reverse);
                for (int i = i0; i < i1; i += 2 * AMX_ROWS)
                    block_amx(C + (size_t)i * N + (size_t)p * NR, N,
                              a + (size_t)i * K2 * 2 + (size_t)q0 * 2, K2,
                              pack + (size_t)p * K2 * 2 * NR + (size_t)q0 * 2 * NR, kc,
                              imin(2 * AMX_ROWS, i1 - i), imin(NR, N - p * NR), add);
            }
        }
    }
    _tile_release();
}

/* C (M, N) (+)= op(A) B on a bf16 path, B the panels in m: op(A) rounded into m's rows first
 * (A^T as pairs of A's rows for vdpbf16ps, transposed for AMX's tiles). */
static void gemm_bf16(float *C, const float *A, int transa, const kern_mat_t *m, int M, int acc) {
    const int K = m->K, K2 = pairs_for(m->path, K), amx = m->path == KERN_AMX_BF16;
    const int kmajor = transa && !amx;
    if (!transa)
        round_rows_bf16(m->a, A, M, K, K2);
    else if (kmajor)
        round_pairs_bf16(m->a, A, M, K, K2);
    else
        round_cols_bf16(m->a, A, M, K, K2);
    if (amx)
        product_amx(C, m->a, m->pack, M, m->N, K2, acc, m->reverse);
    else
        product_bf16(C, m->a, kmajor, m->pack, M, m->N, K2, acc, m->reverse);
}

void kern_gemm(float *C, const float *A, kern_mat_t *m, int M, int accumulate) {
    CHARLM_CHECK(m->K >= 1 && M >= 1 && M <= m->max_m);
    const int K = m->K, N = m->N;
    switch (m->path) {
    case KERN_AVX512:
    case KERN_AVX2: gemm_fp32(C, A, m, M, accumulate); m->reverse ^= 1; return;
    case KERN_AVX512_BF16:
    case KERN_AMX_BF16: gemm_bf16(C, A, 0, m, M, accumulate); m->reverse ^= 1; return;
    case KERN_BLAS: break;
    case KERN_PATHS: CHARLM_CHECK(0);
    }
    const float *w = m->w;
    if (m->prec == KERN_BF16) {
        round_floats(m->a, A, (size_t)M * K);
        A = m->a, w = m->pack;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, m->trans ? CblasTrans : CblasNoTrans, M, N, K, 1.0f,
                A, K, w, m->trans ? K : N, accumulate ? 1.0f : 0.0f, C, N);
}

void kern_matmul(float *C, const float *A, int transa, const float *B, int transb, int M, int N,
                 int K, int accumulate, kern_mat_t *m) {
    CHARLM_CHECK(M >= 1 && N >= 1 && K >= 1);
    const CBLAS_TRANSPOSE ta = transa ? CblasTrans : CblasNoTrans,
                          tb = transb ? CblasTrans : CblasNoTrans;
    const int lda = transa ? M : K, ldb = transb ? K : N;
    const float beta = accumulate ? 1.0f : 0.0f;
    if (m->prec == KERN_FP32) {
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, N);
        return;
    }
    const kern_path_t p = m->path;
    CHARLM_CHECK(pack_size(p, m->prec, K, N) <= m->pack_bytes &&
                 a_size(p, m->prec, M, K) <= m->a_bytes);
    m->K = K, m->N = N, m->trans = transb, m->w = B, m->reverse = 0;
    if (bf16_path(p)) {
        pack_bf16(m->pack, B, K, N, transb, pairs_for(p, K));
        gemm_bf16(C, A, transa, m, M, accumulate);
        return;
    }
    /* no bf16 unit: the rounded values through cblas_sgemm, in its order of summation */
    round_floats(m->a, A, (size_t)M * K);
    round_floats(m->pack, B, (size_t)K * N);
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, 1.0f, m->a, lda, m->pack, ldb, beta, C, N);
}
