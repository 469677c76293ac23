# shellcheck shell=bash
# blas_kernels.sh — sourced by bench.sh and ttq_compare.sh, which give a run beside charlm (the
# PyTorch reference, the sgemm peak) the OpenBLAS kernels charlm takes on this CPU.
#
# charlm_blas_kernels BIN prints the kernel set BIN names on the BLAS line of its --version
# ("BLAS: OpenBLAS 0.3.21, kernels SkylakeX ..."), e.g. SkylakeX, and nothing when it names none.
charlm_blas_kernels() {
    "$1" --version 2>/dev/null | sed -n 's/^BLAS: .*, kernels \([A-Za-z0-9]*\).*/\1/p'
}
