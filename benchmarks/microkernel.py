"""A conv forward pass on a GEMM micro-kernel of netc's own, against netc's im2col + OpenBLAS, one core.

What #12's "convolutions at 70% of the 2-core SGEMM rate" would need (benchmarks/RESULTS.md,
thirteenth session): seed-cnn spends a quarter of its step around its GEMMs rather than in them,
in im2col (the input unrolled into columns) and in OpenBLAS packing both operands again on every
per-sample call. This prototype measures the other way: a register-blocked micro-kernel written as
LLVM IR through a Numba intrinsic (MR x NR accumulators held in vector registers, one fused
multiply-add chain per output element in k order), the weights packed once per pass, and the input
unrolled one column panel at a time straight into the layout the micro-kernel reads, each panel then
multiplied by every row panel of the weights while it sits in L2. "tiles alone" is the same pass
without the unrolling (the micro-kernel's own rate). Both paths write a GEMM buffer that a plain
copy (netc's epilogue adds bias and activation there) moves into the output. Not used by netc's
plans: they still call OpenBLAS (whose sums, and so every CNN's figures, would change).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/microkernel.py [--avx2]

`--avx2` uses the tile shape chosen for AVX2 CPUs (8-lane vectors, 6 x 16) on any CPU.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from llvmlite import ir
from llvmlite import binding as llvm
from numba import njit, types, uint64
from numba.core import cgutils
from numba.extending import intrinsic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netc.kernels.blas import gemm  # noqa: E402
from netc.kernels.conv import im2col  # noqa: E402

AVX512 = "+avx512f" in llvm.get_host_cpu_features().flatten() and "--avx2" not in sys.argv
VEC = 16 if AVX512 else 8  # float32 lanes of a vector register
MR, NV = (8, 3) if AVX512 else (6, 2)  # a tile: MR rows (broadcast) x NV vectors; 24 or 12 accumulators
NR = NV * VEC


@intrinsic
def micro_tile(typingctx, a, a_off, b, b_off, c, c_off, ldc, depth):
    """c[0:MR, 0:NR] (row stride ldc) = sum over k < depth of a[k, 0:MR] (outer) b[k, 0:NR], where a and b
    are packed panels (depth x MR and depth x NR, contiguous, from a_off and b_off): each element one
    chain of fused multiply-adds in k order, from zero."""
    sig = types.void(a, a_off, b, b_off, c, c_off, ldc, depth)

    def codegen(context, builder, signature, args):
        f32, i64 = ir.FloatType(), ir.IntType(64)
        vec = ir.VectorType(f32, VEC)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3), f"llvm.fma.v{VEC}f32")
        tys = signature.args

        def at(index, offset):
            data = context.make_array(tys[index])(context, builder, args[index]).data
            return builder.gep(data, [context.cast(builder, args[offset], tys[offset], types.intp)])

        a_ptr, b_ptr, c_ptr = at(0, 1), at(2, 3), at(4, 5)
        ldc_ = context.cast(builder, args[6], tys[6], types.intp)
        depth_ = context.cast(builder, args[7], tys[7], types.intp)
        zero = ir.Constant(vec, None)
        lanes = ir.Constant(ir.VectorType(ir.IntType(32), VEC), [0] * VEC)
        before = builder.block
        loop, done = builder.append_basic_block("tile.loop"), builder.append_basic_block("tile.done")
        builder.cbranch(builder.icmp_signed(">", depth_, ir.Constant(i64, 0)), loop, done)
        builder.position_at_end(loop)
        k = builder.phi(i64)
        acc = [[builder.phi(vec) for _ in range(NV)] for _ in range(MR)]
        bs = [builder.load(builder.bitcast(builder.gep(b_ptr, [builder.add(builder.mul(k, ir.Constant(i64, NR)),
                                                                                 ir.Constant(i64, j * VEC))]),
                                           vec.as_pointer()), align=4) for j in range(NV)]
        new = []
        for i in range(MR):
            scalar = builder.load(builder.gep(a_ptr, [builder.add(builder.mul(k, ir.Constant(i64, MR)), ir.Constant(i64, i))]))
            splat = builder.shuffle_vector(builder.insert_element(ir.Constant(vec, ir.Undefined), scalar,
                                                                  ir.Constant(ir.IntType(32), 0)),
                                           ir.Constant(vec, ir.Undefined), lanes)
            new.append([builder.call(fma, [splat, bs[j], acc[i][j]]) for j in range(NV)])
        k_next = builder.add(k, ir.Constant(i64, 1))
        last = builder.block
        builder.cbranch(builder.icmp_signed("<", k_next, depth_), loop, done)
        k.add_incoming(ir.Constant(i64, 0), before)
        k.add_incoming(k_next, last)
        for i in range(MR):
            for j in range(NV):
                acc[i][j].add_incoming(zero, before)
                acc[i][j].add_incoming(new[i][j], last)
        builder.position_at_end(done)
        sums = []
        for i in range(MR):
            for j in range(NV):
                total = builder.phi(vec)
                total.add_incoming(zero, before)
                total.add_incoming(new[i][j], last)
                sums.append(total)
        for i in range(MR):
            for j in range(NV):
                where = builder.add(builder.mul(ldc_, ir.Constant(i64, i)), ir.Constant(i64, j * VEC))
                builder.store(sums[i * NV + j], builder.bitcast(builder.gep(c_ptr, [where]), vec.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(fastmath={"nsz"})
def pack_weights(w, wp):
    # w (F, K) -> wp (ceil(F / MR), K, MR): row panels, zero rows past F
    filters, k = w.shape
    for panel in range(wp.shape[0]):
        for kk in range(k):
            for i in range(MR):
                f = panel * MR + i
                wp[panel, kk, i] = w[f, kk] if f < filters else 0.0


@njit(fastmath={"nsz"})
def unroll_panel(x, s0, g, panel, bp, base, C, H, W, KH, KW, OH, OW):
    # columns panel*NR .. +NR of the im2col matrix of samples s0 .. s0+g of x (stride 1, no padding) ->
    # bp (K, NR), column p = (sample, oi, oj); columns past g*P repeat the last real one (their outputs
    # are never stored). Each row is a gather through `base` (NR,), the flat offset of each column's
    # window in x, written contiguously.
    positions = OH * OW
    columns = g * positions
    xf = x.reshape(-1)
    for j in range(NR):
        p = min(panel * NR + j, columns - 1)
        s = s0 + p // positions
        base[j] = ((s * C) * H + (p % positions) // OW) * W + p % OW
    kk = 0
    for c in range(C):
        for ki in range(KH):
            for kj in range(KW):
                offset = (c * H + ki) * W + kj
                for j in range(NR):
                    bp[kk, j] = xf[uint64(base[j] + offset)]
                kk += 1


@njit(fastmath={"nsz"})
def store_outputs(buf, y, s0, g, positions):
    # the epilogue's stand-in (netc's adds the bias and the activation here): buf (F, >= g*P) -> y[s0:s0+g]
    for j in range(g):
        for f in range(y.shape[1]):
            for p in range(positions):
                y[s0 + j, f, p] = buf[f, j * positions + p]


@njit(fastmath={"nsz"})
def forward_own(x, wp, y, bp, buf, base, group, C, H, W, KH, KW, OH, OW, unroll=True):
    # y (n, F, P) = w @ im2col(x): a group of samples' columns a panel at a time, the micro-tiles stored
    # straight into buf (rows padded to MR, columns to NR), then the epilogue
    n = x.shape[0]
    positions = OH * OW
    depth, width = wp.shape[1], buf.shape[1]
    for s0 in range(0, n, group):
        g = min(group, n - s0)
        for jp in range(-(-(g * positions) // NR)):  # a panel unrolled, then every row panel of w against it (in L2)
            if unroll:
                unroll_panel(x, s0, g, jp, bp, base, C, H, W, KH, KW, OH, OW)
            for ip in range(wp.shape[0]):
                micro_tile(wp, ip * depth * MR, bp, 0, buf, ip * MR * width + jp * NR, width, depth)
        store_outputs(buf, y, s0, g, positions)


@njit(fastmath={"nsz"})
def forward_openblas(x, w, y, cols, buf, C, H, W, KH, KW, OH, OW):
    # netc's path: each sample unrolled into columns, one OpenBLAS GEMM per sample into buf, the epilogue
    filters, k = w.shape
    positions = OH * OW
    for s in range(x.shape[0]):
        im2col(x, s, cols, 0, C, H, W, KH, KW, 1, 1, 0, 0, OH, OW)
        gemm(False, False, filters, positions, k, w, 0, k, cols, 0, positions, 0.0, buf, 0, positions)
        store_outputs(buf, y, s, 1, positions)


def _median_seconds(fn, repeats: int = 21) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _reference(x, w, kernel):
    # the convolution in float64: (n, F, P)
    n, channels = x.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), (kernel, kernel), axis=(2, 3))
    cols = windows.transpose(0, 1, 4, 5, 2, 3).reshape(n, channels * kernel * kernel, -1)
    return np.einsum("fk,skp->sfp", w.astype(np.float64), cols)


def measure(name: str, n: int, C: int, H: int, F: int, KH: int, group: int) -> None:
    rng = np.random.default_rng(0)
    W = H
    OH = OW = H - KH + 1
    k, positions = C * KH * KH, OH * OW
    x = rng.standard_normal((n, C, H, W), dtype=np.float32)
    w = (rng.standard_normal((F, k)) / np.sqrt(k)).astype(np.float32)
    wp = np.zeros((-(-F // MR), k, MR), np.float32)
    bp = np.zeros((k, NR), np.float32)  # one column panel
    panels = -(-group * positions // NR)
    buf = np.zeros((-(-F // MR) * MR, panels * NR), np.float32)
    buf_blas = np.zeros((F, positions), np.float32)
    base = np.zeros(NR, np.int64)
    cols = np.zeros((k, positions), np.float32)
    y_own, y_blas = np.zeros((n, F, positions), np.float32), np.zeros((n, F, positions), np.float32)
    flops = 2.0 * n * F * positions * k
    t_own = _median_seconds(lambda: (pack_weights(w, wp), forward_own(x, wp, y_own, bp, buf, base, group, C, H, W, KH, KH, OH, OW)))
    error_own = np.abs(y_own - _reference(x, w, KH)).max()
    t_tiles = _median_seconds(lambda: forward_own(x, wp, y_own, bp, buf, base, group, C, H, W, KH, KH, OH, OW, False))
    t_blas = _median_seconds(lambda: forward_openblas(x, w, y_blas, cols, buf_blas, C, H, W, KH, KH, OH, OW))
    reference = _reference(x, w, KH)
    scale = np.abs(reference).max()
    print(f"{name}: {n} samples, F={F} K={k} P={positions}, columns of {group} samples at a time | "
          f"own {t_own * 1e3:.3f} ms = {flops / t_own / 1e9:.0f} GFLOP/s (max error {error_own / scale:.1e}) | "
          f"tiles alone {flops / t_tiles / 1e9:.0f} GFLOP/s | im2col + OpenBLAS {t_blas * 1e3:.3f} ms = {flops / t_blas / 1e9:.0f} GFLOP/s "
          f"(max error {np.abs(y_blas - reference).max() / scale:.1e}) | {t_blas / t_own:.2f}x")


def main() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")  # one core each (netc's conv chunks call BLAS single-threaded)
    print(f"vectors of {VEC} float32 ({'AVX-512' if AVX512 else 'AVX2'}), tiles of {MR} x {NR}, one core")
    for _ in range(3):
        measure("seed-cnn conv2 forward (a chunk of 16)", 16, 64, 14, 128, 5, 8)
        measure("seed-cnn conv1 forward (a chunk of 16)", 16, 3, 32, 64, 5, 2)
        measure("LeNet-5 conv2 forward (a chunk of 32)", 32, 6, 14, 16, 5, 8)


if __name__ == "__main__":
    main()
