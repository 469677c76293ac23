/* kern: the per-step recurrent product C (M, N) = A (M, K) B of a window — h_prev W_hh^T
 * forward, dgh W_hh backward — with B packed once per window into the panels its register-tiled
 * micro-kernel streams (src/README.md §3). OpenBLAS re-packs B on every call, which for M = B
 * streams (32 rows) costs as much as the product; here the packing is paid once for T steps.
 *
 * The path is chosen at run time from the CPU's features (kern_path_auto): AVX-512, else
 * AVX2 + FMA, else cblas_sgemm; precision bf16 rounds B and A to bfloat16 and multiplies them with
 * AMX's tile products (TDPBF16PS), else AVX512-BF16's vdpbf16ps, accumulating in fp32 (on a CPU
 * with neither: cblas_sgemm of the rounded values, the same products in another summation
 * order). The own paths sum each output element over k in an order fixed by K alone, on one
 * thread: results are deterministic, and a row's result does not depend on how many rows are
 * multiplied with it (OpenBLAS's does).
 *
 * kern_matmul serves a window's whole products (the TB-row input projections, weight gradients
 * and dX, the decoder): cblas_sgemm at fp32, which runs them near the cores' peak; at bf16 both
 * operands rounded and packed per call, on the same tile kernels. */
#ifndef CHARLM_KERN_H
#define CHARLM_KERN_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    KERN_BLAS,
    KERN_AVX2,
    KERN_AVX512,
    KERN_AVX512_BF16,
    KERN_AMX_BF16,
    KERN_PATHS
} kern_path_t;

typedef enum { KERN_FP32 = 0, KERN_BF16 = 1, KERN_PRECISIONS } kern_precision_t;

/* "fp32", "bf16": the values of model.precision */
extern const char *const kern_precision_names[KERN_PRECISIONS];

/* "blas", "avx2", "avx512", "avx512bf16", "amx" */
const char *kern_path_name(kern_path_t p);

/* Whether this CPU can run path p at precision prec (KERN_BLAS: always; KERN_AVX512_BF16 and
 * KERN_AMX_BF16 only for bf16, the others only for fp32 but KERN_BLAS, which serves both). AMX
 * needs the Linux kernel's leave to use the tile registers, asked for once here
 * (arch_prctl ARCH_REQ_XCOMP_PERM); refused, AMX counts as not supported. */
int kern_path_supported(kern_path_t p, kern_precision_t prec);

/* Whether the environment variable CHARLM_KERN, when set, names a path this CPU runs at either
 * precision: CHARLM_OK, else CHARLM_EINPUT with err_set naming the value and the paths this CPU
 * runs. Called once at start-up by every command that multiplies; kern_path_auto relies on it. */
int kern_env_check(void);

/* The path for precision prec: the one CHARLM_KERN names when it runs at prec, else the fastest
 * supported as measured (amx, else avx512bf16 for bf16; avx512, else avx2 for fp32; else blas):
 * a path of the other precision forces only the products it can run (bf16 training validates
 * in fp32). Aborts when CHARLM_KERN would not pass kern_env_check. */
kern_path_t kern_path_auto(kern_precision_t prec);

/* One B operand packed for a path, with the scratch of its products; allocated once. */
typedef struct {
    kern_path_t path;
    kern_precision_t prec;
    int max_m, k0, n0;     /* rows of A; B of shape (k0, n0) or (n0, k0) */
    size_t pack_bytes, a_bytes; /* what pack and a hold */
    int K, N, trans;       /* of the packed B (kern_pack) */
    int reverse;           /* kern_gemm's next product runs the panels backwards */
    const float *w;        /* the matrix packed (KERN_BLAS fp32 multiplies it directly) */
    void *pack;  /* the panels: fp32, bf16 pairs (the bf16 paths), or w rounded (bf16 BLAS) */
    void *a;     /* bf16 only: A rounded, (max_m, max(k0, n0) + 1) bf16 or fp32; AMX pads it
                  * to whole tiles, (max_m to 16, k to 32); kern_matmul: op(A) rounded, as
                  * rows of pairs along k or (op(A) = A^T, not AMX) pairs of A's rows */
    void *mem;   /* owned: pack and a, 64-byte aligned inside */
} kern_mat_t;

/* The bytes kern_mat_alloc allocates for these arguments. */
double kern_mat_bytes(kern_path_t p, kern_precision_t prec, int max_m, int k0, int n0);

/* Allocates m for B operands of shape (k0, n0) or (n0, k0) — a W_hh forward and backward — and
 * products of up to max_m rows, on path p (which must be supported at prec). */
void kern_mat_alloc(kern_mat_t *m, kern_path_t p, kern_precision_t prec, int max_m, int k0,
                    int n0);

void kern_mat_free(kern_mat_t *m);

/* Packs B (K, N) into m: B = w^T of w (N, K) when trans, else B = w (K, N); w row-major and
 * contiguous, read now (and by later KERN_BLAS fp32 products: keep it unchanged until then). */
void kern_pack(kern_mat_t *m, const float *w /* (N, K) trans or (K, N) */, int K, int N,
               int trans);

/* C = A B (accumulate 0) or C += A B (accumulate 1), with B the last packed into m. Consecutive
 * calls take B's panels in alternate orders, for the cache; the bits do not depend on it. */
void kern_gemm(float *C /* (M, N) */, const float *A /* (M, K) */, kern_mat_t *m, int M,
               int accumulate);

/* The largest operands of the whole products (kern_matmul) one kern_mat_t is to serve: the bytes
 * of op(B)'s panels and of op(A)'s rounded rows. */
typedef struct {
    size_t pack, a;
} kern_need_t;

/* Grows *n to serve a product of op(A) (M, K) and op(B) (K, N) on path p at precision prec
 * (nothing at fp32, which multiplies the operands as they are). */
void kern_need(kern_need_t *n, kern_path_t p, kern_precision_t prec, int M, int N, int K);

/* The bytes kern_mat_alloc_need allocates for n. */
double kern_need_bytes(const kern_need_t *n);

/* Allocates m for the whole products that n was grown for, on path p (supported at prec). */
void kern_mat_alloc_need(kern_mat_t *m, kern_path_t p, kern_precision_t prec,
                         const kern_need_t *n);

/* C = op(A) op(B) (accumulate 0) or C += op(A) op(B) (accumulate 1), op(A) = A^T when transa,
 * op(B) = B^T when transb, every matrix row-major and contiguous. fp32: cblas_sgemm. bf16: both
 * operands rounded to bfloat16 into m (which kern_need must have grown for this shape), their
 * products summed in fp32 on m's path: the tile kernels of kern_gemm, or cblas_sgemm of the
 * rounded values. Replaces what m held packed: not for a kern_mat_t that kern_gemm uses. */
void kern_matmul(float *C /* (M, N) */, const float *A /* (M, K), or (K, M) when transa */,
                 int transa, const float *B /* (K, N), or (N, K) when transb */, int transb,
                 int M, int N, int K, int accumulate, kern_mat_t *m);

/* x rounded to the nearest bfloat16 (ties to even), as a float. */
float kern_round_bf16(float x);

#endif
