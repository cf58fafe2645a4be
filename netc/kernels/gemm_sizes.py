"""Where OpenBLAS's speed changes with a product's size (m*n*k multiply-adds), for the compiler and
the ops to decide on without importing Numba (netc.kernels.blas uses them in compiled code)."""

# below this, plain loops beat a BLAS call (~1 us of overhead): the lecture's 3-4-3-2 MLP at one
# sample per step (netc.compiler.steps.should_use_blas)
BLAS_MIN_PRODUCT = 8192

# at or below this OpenBLAS runs a product with its small-matrix kernels (SkylakeX), which skip
# packing the operands. Measured for an LSTM step, [16, 128] @ [128, 512]: 61 GFLOP/s in blocks of
# 256 columns against 30 whole; [32, 512] @ [512, 128]: 62 against 45; from 64 rows on, blocks gained
# nothing (128 rows: 71 against 80); with OpenBLAS's AVX2 kernels, within 5% either way. There,
# x @ W^T (W stored [out, in]) ran at half the rate of x @ W with W stored [in, out]: [32, 64] by
# [64, 128], 9.1 against 4.3 us (netc.ops.dense stores such a weight transposed).
SMALL_GEMM = 1 << 19
