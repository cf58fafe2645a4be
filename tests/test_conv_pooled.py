"""A tiled conv's weight gradient through its fused 2x2 max pool (netc.kernels.conv.pack_pooled_gradient,
netc.kernels.tiles.micro_tile_gathered): only each window's maximum carries a gradient, and the tiles walk
those terms alone, in the order the dense chain over every position meets them. The same bits as the dense
chain: the backward of the unpooled gradient (zero but at each maximum), which walks every position."""

import numpy as np
import pytest
from helpers import MLP, build
from numba import njit

from netc.kernels.activation import RELU, SIGMOID
from netc.kernels.conv import conv_backward_tiles, conv_forward_tiles, pack_pooled_gradient
from netc.kernels.gemm_sizes import TILE_COLUMNS, TILE_ROWS
from netc.ops.conv import FOLD_PANELS
from netc.runtime.model import Model


def _scratch(chunks, filters, k, group_columns, dtype):
    panels, k_columns = -(-filters // TILE_ROWS), -(-k // TILE_COLUMNS) * TILE_COLUMNS
    column_panels = -(-group_columns // TILE_COLUMNS)
    shapes = [(chunks, filters, group_columns), (chunks, panels, group_columns, TILE_ROWS),
              (chunks, group_columns, TILE_COLUMNS), (chunks, panels * TILE_ROWS, k_columns),
              (-(-k // TILE_ROWS), filters, TILE_ROWS), (chunks, column_panels, filters, TILE_COLUMNS),
              (chunks, FOLD_PANELS * TILE_ROWS, column_panels * TILE_COLUMNS), (chunks, filters)]
    return [np.zeros(shape, dtype) for shape in shapes]


def _backward(x, w, y, dy, arg, pooled, act, acc_dw, chunks, group, C, H, KH, OH):
    """dx and dw (accumulated onto 0.5 with acc_dw) of conv_backward_tiles, bias gradient included."""
    F, k = w.shape
    dx, dw, db = np.zeros_like(x), np.full((F, k), 0.5, x.dtype), np.zeros(F, x.dtype)
    conv_backward_tiles(x, w, y, dy, arg, pooled, act, 0.0, dx, True, False, dw, db, True, acc_dw, True,
                        *_scratch(chunks, F, k, group * OH * OH, x.dtype), C, H, H, KH, KH, 1, 1, 0, 0, OH, OH)
    return dx, dw


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", [RELU, SIGMOID])
@pytest.mark.parametrize("n, C, H, F, KH, chunks, group", [
    (8, 64, 14, 128, 5, 1, 3),  # seed-cnn's conv2, in groups of 3
    (7, 5, 13, 20, 3, 2, 3),  # odd output rows: the last one never pooled
])
def test_the_pooled_weight_gradient_is_the_dense_chain_to_the_bit(n, C, H, F, KH, chunks, group, act, dtype):
    rng = np.random.default_rng(3)
    OH = H - KH + 1
    k, pooled = C * KH * KH, (OH // 2) ** 2
    x = rng.standard_normal((n, C, H, H)).astype(dtype)
    w = (rng.standard_normal((F, k)) * 0.1).astype(dtype)
    y, arg = np.zeros((n, F, pooled), dtype), np.zeros((n, F, pooled), np.int64)
    panels = -(-F // TILE_ROWS)
    column_panels = -(-(group * OH * OH) // TILE_COLUMNS)
    conv_forward_tiles(x, w, np.zeros(F, dtype), False, y, arg, True, np.zeros((panels, k, TILE_ROWS), dtype),
                       np.zeros((chunks, k, TILE_COLUMNS), dtype),
                       np.zeros((chunks, panels * TILE_ROWS, column_panels * TILE_COLUMNS), dtype), act, 0.0,
                       C, H, H, KH, KH, 1, 1, 0, 0, OH, OH)
    assert (arg // OH % 2 == 1).any() and (arg // OH % 2 == 0).any()  # maxima in both rows of the windows
    dy = rng.standard_normal((n, F, pooled)).astype(dtype)
    y_full, dy_full = np.ones((n, F, OH * OH), dtype), np.zeros((n, F, OH * OH), dtype)
    np.put_along_axis(y_full, arg, y, axis=2)  # the activation's derivative reads y at each maximum
    np.put_along_axis(dy_full, arg, dy, axis=2)
    for acc_dw in (False, True):
        dx, dw = _backward(x, w, y, dy, arg, True, act, acc_dw, chunks, group, C, H, KH, OH)
        dense_dx, dense_dw = _backward(x, w, y_full, dy_full, arg, False, act, acc_dw, chunks, group, C, H, KH, OH)
        np.testing.assert_array_equal(dw, dense_dw)
        np.testing.assert_array_equal(dx, dense_dx)


@njit
def _pack_pooled(gbuf, arg, g, filters, positions, OH, OW, panels, rows):
    pack_pooled_gradient(gbuf, 0, arg, 0, g, filters, positions, OH, OW, panels, rows)


def test_pooled_terms_are_packed_by_sample_then_position():
    """Each filter's terms in column order (sample, then position: a window's bottom-row maximum after the
    top-row ones of the windows beside it), their values from the gathered gradient, offsets in COLUMNS;
    the filters past F are zero."""
    OH = OW = 4
    positions, filters, g = OH * OW, TILE_ROWS + 2, 2
    arg = np.array([[[4, 3, 8, 14]] * filters, [[0, 7, 9, 10]] * filters])  # (g, F, 4 windows)
    gbuf = np.arange(filters * g * positions, dtype=np.float32).reshape(1, filters, g * positions)
    panels = np.full((1, 2, g * positions, TILE_ROWS), np.nan, np.float32)
    rows = np.full((2, g * 4 + 1, TILE_ROWS), -1, np.int32)
    _pack_pooled(gbuf, arg, g, filters, positions, OH, OW, panels, rows)
    columns = np.array([3, 4, 8, 14, 16 + 0, 16 + 7, 16 + 9, 16 + 10])  # window 1's maximum before 0's
    for f in range(filters):
        np.testing.assert_array_equal(rows[f // TILE_ROWS, :8, f % TILE_ROWS], columns * TILE_COLUMNS)
        np.testing.assert_array_equal(panels[0, f // TILE_ROWS, :8, f % TILE_ROWS], gbuf[0, f, columns])
    assert (panels[0, 1, :8, 2:] == 0).all() and (rows[1, :8, 2:] == 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_arenas_and_conv_scratch_regions_start_on_cache_lines(dtype):
    """A gathered tile loads a row of the unrolled panel per multiply-add, 1.6x slower when the rows
    straddle cache lines: the model's arenas start on a line (zeroed, the size asked), and each region of
    a conv's scratch at a multiple of 64 bytes from its arena's start."""
    from netc.ops.conv import conv_scratch
    from netc.runtime.model import CACHE_LINE, zeros_aligned

    for size in (1, 17, 100_003):
        arena = zeros_aligned(size, dtype)
        assert arena.ctypes.data % CACHE_LINE == 0 and arena.shape == (size,) and not arena.any()
    model = Model(build(MLP), dtype=np.dtype(dtype).name, batch=4, seed=0)
    for arena in (model.P, model.G, model.S, model.A, model.D, model.W):
        assert arena.ctypes.data % CACHE_LINE == 0
    d = dict(C=3, H=9, W=9, KH=3, KW=3, SH=1, SW=1, PH=0, PW=0, OH=7, OW=7, F=5)
    for kind in ({}, {"tiled": True}, {"direct": True}):
        layout, size = conv_scratch(d, 5, 3, **kind)
        assert all(offset * np.dtype(dtype).itemsize % CACHE_LINE == 0 for offset, _ in layout.values())
        assert size >= max(offset + int(np.prod(shape)) for offset, shape in layout.values())
