"""A conv forward pass on netc's GEMM micro-kernel (netc.kernels.tiles), against im2col + OpenBLAS, one core.

The micro-kernel's rate and what a conv pass gets from it, the measurement behind
netc.ops.conv.tiled_conv (benchmarks/RESULTS.md, thirteenth session): the weights packed once per
pass, the input unrolled one column panel at a time straight into the layout the micro-kernel reads,
each panel multiplied by every row panel of the weights while it sits in L2. "tiles alone" is the same
pass without the unrolling (the micro-kernel's own rate). Both paths write a GEMM buffer that a plain
copy (netc's epilogue adds bias and activation there) moves into the output.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/microkernel.py

(The AVX2 figures in RESULTS.md came from this script's first version, which built the micro-kernel
itself and could take the AVX2 tile shape on any CPU.)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netc.kernels.blas import gemm  # noqa: E402
from netc.kernels.conv import im2col  # noqa: E402
from netc.kernels.gemm_sizes import TILE_COLUMNS as NR, TILE_LANES, TILE_ROWS as MR  # noqa: E402
from netc.kernels.tiles import micro_tile, pack_rows, unroll_panel, window_table  # noqa: E402


@njit(fastmath={"nsz"})
def store_outputs(buf, y, s0, g, positions):
    # the epilogue's stand-in (netc's adds the bias and the activation here): buf (F, >= g*P) -> y[s0:s0+g]
    for j in range(g):
        for f in range(y.shape[1]):
            for p in range(positions):
                y[s0 + j, f, p] = buf[f, j * positions + p]


@njit(fastmath={"nsz"})
def forward_own(x, wp, y, bp, buf, corners, table, group, C, H, W, KH, KW, OH, OW, unroll=True):
    # y (n, F, P) = w @ im2col(x): a group of samples' columns a panel at a time, the micro-tiles stored
    # straight into buf (rows padded to MR, columns to NR), then the epilogue
    n = x.shape[0]
    positions = OH * OW
    depth, width = wp.shape[1], buf.shape[1]
    for s0 in range(0, n, group):
        g = min(group, n - s0)
        for jp in range(-(-(g * positions) // NR)):  # a panel unrolled, then every row panel of w against it (in L2)
            if unroll:
                unroll_panel(x, s0, g * positions, jp, bp, corners, table, C, H, W, 1, 1, 0, 0, OH, OW)
            for ip in range(wp.shape[0]):
                micro_tile(wp, ip * depth * MR, bp, 0, buf, ip * MR * width + jp * NR, width, depth, False)
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


@njit
def _window_table(table, C, H, W, kernel):
    window_table(table, C, H, W, kernel, kernel)


@njit
def _pack(w, wp):
    pack_rows(w, w.shape[0], w.shape[1], wp)


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
    corners = np.zeros((3, NR), np.int64)
    table = np.zeros((3, k), np.int64)
    _window_table(table, C, H, W, KH)
    cols = np.zeros((k, positions), np.float32)
    y_own, y_blas = np.zeros((n, F, positions), np.float32), np.zeros((n, F, positions), np.float32)
    flops = 2.0 * n * F * positions * k
    t_own = _median_seconds(lambda: (_pack(w, wp), forward_own(x, wp, y_own, bp, buf, corners, table, group, C, H, W, KH, KH, OH, OW)))
    error_own = np.abs(y_own - _reference(x, w, KH)).max()
    t_tiles = _median_seconds(lambda: forward_own(x, wp, y_own, bp, buf, corners, table, group, C, H, W, KH, KH, OH, OW, False))
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
    print(f"vectors of {TILE_LANES} float32, tiles of {MR} x {NR}, one core")
    for _ in range(3):
        measure("seed-cnn conv2 forward (a chunk of 16)", 16, 64, 14, 128, 5, 8)
        measure("seed-cnn conv1 forward (a chunk of 16)", 16, 3, 32, 64, 5, 2)
        measure("LeNet-5 conv2 forward (a chunk of 32)", 32, 6, 14, 16, 5, 8)


if __name__ == "__main__":
    main()
