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

# OpenBLAS's SkylakeX kernels take a product of up to SMALL_PERMIT multiply-adds unpacked (its
# sgemm_small_kernel_permit: 100^3, and for C = A^T B in BLAS's column-major terms no more than 1,200
# outputs) and pack the operands of a larger one. A weight gradient, dy^T x (A^T B, k the batch's
# rows), of 1-8 M multiply-adds ran 1.03-2.6x faster (one thread) as blocks of C of at most SMALL_GEMM
# each, which those kernels take unpacked (netc.kernels.blas.gemm_tn); above 8 M, mixed (0.96-1.44x).
# The same bits up to TN_BLOCKS_DEPTH rows: each output is one chain of multiply-adds over k in both
# kernels, but the packed one splits a k of more than ~450 in two and adds the halves (GEMM_Q).
# (C = A B in blocks was bit-exact only for some shapes: [33, 100] by [100, 1000] differs whatever
# the blocks.) benchmarks/RESULTS.md, twenty-third session.
SMALL_PERMIT = 1_000_000
TN_BLOCKS_WORK = 1 << 23
TN_BLOCKS_DEPTH = 384


def _vector_lanes() -> int:
    """float32 lanes of the host's vector registers, from /proc/cpuinfo: 16 with AVX-512, else 8."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return 16 if " avx512f" in line else 8
    except OSError:
        pass
    return 8


# netc's own GEMM micro-kernel (netc.kernels.tiles): a tile of TILE_ROWS x TILE_COLUMNS outputs held in
# TILE_ROWS * TILE_VECTORS vector registers (24 of AVX-512's 32, 12 of AVX2's 16). The shape sets only
# the speed: every output is one chain of multiply-adds in k order, the same bits for any shape.
TILE_LANES = _vector_lanes()
TILE_ROWS, TILE_VECTORS = (8, 3) if TILE_LANES == 16 else (6, 2)
TILE_COLUMNS = TILE_VECTORS * TILE_LANES

# micro_tile_rows's tile (a direct conv's weight gradient, k by filters): a row of 64 filters in AVX-512's
# registers (6 x 4 vectors: 24 accumulators), so that 64 filters fill a tile's columns, not 96 of them
# (seed-cnn's conv1: 0.51 against 0.80 ms for 16 samples); AVX2's 16 registers keep the usual tile.
ROW_TILE_ROWS, ROW_TILE_COLUMNS = (6, 4 * TILE_LANES) if TILE_LANES == 16 else (TILE_ROWS, TILE_COLUMNS)
