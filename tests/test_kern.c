/* The recurrent-step kernels against a double-precision product, on every path this CPU runs
 * (the unsupported ones are named as skipped), at the edges of their tiles: M, K, N below, at
 * and past multiples of the register tile, the K block and the panel width, both layouts of B,
 * overwrite and accumulate.
 *
 * Tolerances, with S = sum_k |a_ik b_kj| (+ |c_ij| when accumulating) and u = 2^-24:
 *  - fp32: |error| <= (K + 2) u S, the bound of any order of fp32 summation;
 *  - bf16: against the product of the bf16-rounded inputs, the same bound; against the exact
 *    product of the fp32 inputs, that plus (2^-7 + 2^-16) S (two roundings of at most 2^-8 in
 *    each product).
 * Also: on the own paths a row's result does not depend on the rows multiplied with it (bit for
 * bit; OpenBLAS's does, it takes other kernels for other M) nor on the order the panels ran in
 * (consecutive products alternate it), CHARLM_KERN selects the path, and
 * fp32 takes the widest own kernel the CPU runs by default. */
#include <math.h>
#include <stdint.h>

#include "charlm/kern.h"
#include "check.h"

static float frand(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) / 16777216.0f - 0.5f;
}

/* max over (i, j) of |C - exact| / bound, where exact and S use A, B rounded when bf16; A is
 * (M, K), or (K, M) when transa */
static double worst(const float *C, const float *C0, const float *A, int transa, const float *w,
                    int M, int K, int N, int trans, int acc, int round, double extra) {
    double r = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double e = acc ? C0[(size_t)i * N + j] : 0, S = fabs(e);
            for (int k = 0; k < K; k++) {
                float a = transa ? A[(size_t)k * M + i] : A[(size_t)i * K + k];
                float b = trans ? w[(size_t)j * K + k] : w[(size_t)k * N + j];
                if (round) a = kern_round_bf16(a), b = kern_round_bf16(b);
                e += (double)a * b;
                S += fabs((double)a * b);
            }
            double bound = ((K + 2) * ldexp(1.0, -24) + extra) * S + 1e-30;
            double q = fabs(C[(size_t)i * N + j] - e) / bound;
            if (q > r) r = q;
        }
    return r;
}

static void check_path(kern_path_t p, kern_precision_t prec) {
    static const int Ms[] = {1, 5, 8, 9, 16, 17, 32, 33}, Ks[] = {1, 3, 17, 256, 301, 513},
                     Ns[] = {1, 5, 16, 24, 31, 33, 48, 100};
    enum { MAXM = 33, MAXK = 513, MAXN = 100 };
    kern_mat_t m;
    kern_mat_alloc(&m, p, prec, MAXM, MAXK, MAXN);
    EXPECT(kern_mat_bytes(p, prec, MAXM, MAXN, MAXK) == kern_mat_bytes(p, prec, MAXM, MAXK, MAXN));
    float *A = calloc((size_t)MAXM * MAXK, sizeof *A), *w = calloc((size_t)MAXK * MAXN, sizeof *w);
    float *C = calloc((size_t)MAXM * MAXN, sizeof *C);
    float *C0 = calloc((size_t)MAXM * MAXN, sizeof *C0);
    float *row = calloc(MAXN, sizeof *row), *again = calloc((size_t)MAXM * MAXN, sizeof *again);
    uint32_t s = 7u + (uint32_t)p;
    for (size_t i = 0; i < (size_t)MAXM * MAXK; i++) A[i] = frand(&s);
    for (size_t i = 0; i < (size_t)MAXK * MAXN; i++) w[i] = frand(&s);
    const int bf = prec == KERN_BF16;
    for (int trans = 0; trans < 2; trans++)
        for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++)
            for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++) {
                const int K = Ks[ki], N = Ns[ni];
                kern_pack(&m, w, K, N, trans);
                for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++)
                    for (int acc = 0; acc < 2; acc++) {
                        const int M = Ms[mi];
                        for (int i = 0; i < M * N; i++) C0[i] = C[i] = frand(&s);
                        kern_gemm(C, A, &m, M, acc);
                        double q = worst(C, C0, A, 0, w, M, K, N, trans, acc, bf, 0);
                        EXPECT_MSG(q <= 1, "%s %s M=%d K=%d N=%d trans=%d acc=%d: error %.3g of "
                                   "the bound", kern_path_name(p), bf ? "bf16" : "fp32", M, K, N,
                                   trans, acc, q);
                        if (bf) {
                            q = worst(C, C0, A, 0, w, M, K, N, trans, acc, 0,
                                      ldexp(1.0, -7) + ldexp(1.0, -16));
                            EXPECT_MSG(q <= 1, "%s bf16 vs fp32 M=%d K=%d N=%d: %.3g of bound",
                                       kern_path_name(p), M, K, N, q);
                        }
                        /* the same product again, its panels in the other order, gives the
                         * same bits, and so does the last row alone (OpenBLAS: not promised) */
                        if (p == KERN_BLAS) continue;
                        memcpy(again, C0, sizeof(float) * (size_t)M * N);
                        kern_gemm(again, A, &m, M, acc);
                        EXPECT_MSG(!memcmp(again, C, sizeof(float) * (size_t)M * N),
                                   "%s M=%d K=%d N=%d acc=%d: the next product differs",
                                   kern_path_name(p), M, K, N, acc);
                        memcpy(row, C0 + (size_t)(M - 1) * N, sizeof(float) * (size_t)N);
                        kern_gemm(row, A + (size_t)(M - 1) * K, &m, 1, acc);
                        EXPECT_MSG(!memcmp(row, C + (size_t)(M - 1) * N, sizeof(float) * (size_t)N),
                                   "%s M=%d K=%d N=%d: row %d alone differs", kern_path_name(p), M,
                                   K, N, M - 1);
                    }
            }
    free(A), free(w), free(C), free(C0), free(row), free(again);
    kern_mat_free(&m);
}

/* kern_matmul, the whole products of a window, on path p: every layout of both operands, M
 * past the row blocks of the bf16 products (64 rows; AMX's 256) and K past AMX's block of 512,
 * so that its sums wait in C between passes, with the bounds of check_path */
static void check_matmul(kern_path_t p, kern_precision_t prec) {
    static const int Ms[] = {1, 9, 70, 300}, Ks[] = {3, 17, 301, 600}, Ns[] = {5, 33, 100};
    enum { MAXM = 300, MAXK = 600, MAXN = 100 };
    kern_need_t need = {0};
    kern_need(&need, p, prec, MAXM, MAXN, MAXK);
    kern_mat_t m;
    kern_mat_alloc_need(&m, p, prec, &need);
    EXPECT(kern_need_bytes(&need) == (prec == KERN_FP32 ? 0.0 : (double)(need.pack + need.a + 64)));
    float *A = calloc((size_t)MAXM * MAXK, sizeof *A), *w = calloc((size_t)MAXK * MAXN, sizeof *w);
    float *C = calloc((size_t)MAXM * MAXN, sizeof *C);
    float *C0 = calloc((size_t)MAXM * MAXN, sizeof *C0);
    uint32_t s = 11u + (uint32_t)p;
    for (size_t i = 0; i < (size_t)MAXM * MAXK; i++) A[i] = frand(&s);
    for (size_t i = 0; i < (size_t)MAXK * MAXN; i++) w[i] = frand(&s);
    const int bf = prec == KERN_BF16;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++)
                for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++)
                    for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++)
                        for (int acc = 0; acc < 2; acc++) {
                            const int M = Ms[mi], K = Ks[ki], N = Ns[ni];
                            for (int i = 0; i < M * N; i++) C0[i] = C[i] = frand(&s);
                            kern_matmul(C, A, ta, w, tb, M, N, K, acc, &m);
                            double q = worst(C, C0, A, ta, w, M, K, N, tb, acc, bf, 0);
                            EXPECT_MSG(q <= 1, "matmul %s %s M=%d K=%d N=%d transa=%d transb=%d "
                                       "acc=%d: error %.3g of the bound", kern_path_name(p),
                                       bf ? "bf16" : "fp32", M, K, N, ta, tb, acc, q);
                        }
    free(A), free(w), free(C), free(C0);
    kern_mat_free(&m);
}

int main(void) {
    EXPECT(kern_round_bf16(1.0f) == 1.0f);
    EXPECT(kern_round_bf16(1.0f + 0x1p-8f) == 1.0f);                   /* tie to even */
    EXPECT(kern_round_bf16(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f);     /* tie to even, up */
    EXPECT(kern_round_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f);
    EXPECT(kern_round_bf16(-3.0f) == -3.0f);
    EXPECT(isnan(kern_round_bf16(NAN)));

    for (int prec = KERN_FP32; prec <= KERN_BF16; prec++)
        for (int p = 0; p < KERN_PATHS; p++) {
            if (!kern_path_supported((kern_path_t)p, (kern_precision_t)prec)) {
                printf("skipped: %s at %s (not on this CPU or not at this precision)\n",
                       kern_path_name((kern_path_t)p), prec ? "bf16" : "fp32");
                continue;
            }
            printf("checking %s at %s\n", kern_path_name((kern_path_t)p), prec ? "bf16" : "fp32");
            check_path((kern_path_t)p, (kern_precision_t)prec);
            check_matmul((kern_path_t)p, (kern_precision_t)prec);
        }
    EXPECT(kern_path_supported(KERN_BLAS, KERN_FP32) && kern_path_supported(KERN_BLAS, KERN_BF16));
    setenv("CHARLM_KERN", "blas", 1);
    EXPECT(kern_path_auto(KERN_FP32) == KERN_BLAS && kern_path_auto(KERN_BF16) == KERN_BLAS);
    unsetenv("CHARLM_KERN");
    EXPECT(kern_path_supported(kern_path_auto(KERN_FP32), KERN_FP32));
    EXPECT(kern_path_supported(kern_path_auto(KERN_BF16), KERN_BF16));
    /* fp32 by default: the widest own kernel the CPU runs, each faster than cblas_sgemm there */
    const kern_path_t want = kern_path_supported(KERN_AVX512, KERN_FP32) ? KERN_AVX512
                             : kern_path_supported(KERN_AVX2, KERN_FP32) ? KERN_AVX2
                                                                         : KERN_BLAS;
    EXPECT_MSG(kern_path_auto(KERN_FP32) == want, "fp32 takes %s, not %s",
               kern_path_name(kern_path_auto(KERN_FP32)), kern_path_name(want));
    return check_failures ? 1 : 0;
}
