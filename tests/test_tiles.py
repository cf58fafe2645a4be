"""netc's GEMM micro-kernel (netc.kernels.tiles): a tile against exact products, its fused multiply-adds in
k order, the packing of weights and of an image's columns, and the fold of column gradients back into the
image, against numpy."""

import numpy as np
import pytest
from numba import njit

from netc.kernels.conv import col2im_add
from netc.kernels.gemm_sizes import TILE_COLUMNS as COLUMNS, TILE_ROWS as ROWS
from netc.kernels.tiles import (micro_tile, micro_tile_gathered, pack_columns, pack_rows, unroll_panel,
                                unroll_transposed, window_table)


@njit
def _tile(a, b, c, c_off, ldc, depth, accumulate=False):
    micro_tile(a, 0, b, 0, c, c_off, ldc, depth, accumulate)


@njit
def _gathered(a, b, rows, c, depth, accumulate):
    micro_tile_gathered(a, 0, b, 0, rows, 0, c, 0, COLUMNS, depth, accumulate)


@njit
def _pack(w, packed):
    pack_rows(w, w.shape[0], w.shape[1], packed)


@njit
def _pack_columns(m, columns, packed):
    pack_columns(m, columns, m.shape[0], packed)


@njit
def _unroll_transposed(x, s0, g, panel, packed, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    table = np.empty((3, -(-(C * KH * KW) // COLUMNS) * COLUMNS), np.int64)
    window_table(table, C, H, W, KH, KW)
    unroll_transposed(x, s0, g, panel, packed, table, C, H, W, SH, SW, PH, PW, OH, OW)


@njit
def _col2im_add(cols, k0, count, dx, s, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    col2im_add(cols, k0, count, 0, dx, s, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW)


@njit
def _unroll(x, s0, columns, panel, packed, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    corners = np.empty((3, COLUMNS), np.int64)
    table = np.empty((3, C * KH * KW), np.int64)
    window_table(table, C, H, W, KH, KW)
    unroll_panel(x, s0, columns, panel, packed, corners, table, C, H, W, SH, SW, PH, PW, OH, OW)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("depth", [0, 1, 37])
def test_a_tile_is_the_product_of_its_panels(dtype, depth):
    """Small whole numbers, whose products and sums are exact in both types: the tile is the product to
    the bit, stored at its offset and row stride, and nothing else of c is touched (depth 0: zeros)."""
    rng = np.random.default_rng(depth)
    a = rng.integers(-8, 9, (depth, ROWS)).astype(dtype)
    b = rng.integers(-8, 9, (depth, COLUMNS)).astype(dtype)
    ldc = COLUMNS + 5
    c = np.full((ROWS + 2, ldc), 7.5, dtype)
    _tile(a, b, c, ldc + 3, ldc, depth)  # the tile's corner at row 1, column 3
    expected = np.full_like(c, 7.5)
    expected[1:1 + ROWS, 3:3 + COLUMNS] = a.T.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_array_equal(c, expected)


def test_an_accumulating_tile_adds_its_product_to_what_c_holds():
    rng = np.random.default_rng(5)
    a, b = rng.integers(-8, 9, (9, ROWS)).astype(np.float64), rng.integers(-8, 9, (9, COLUMNS)).astype(np.float64)
    c = rng.integers(-8, 9, (ROWS, COLUMNS)).astype(np.float64)
    expected = c + a.T @ b
    _tile(a, b, c, 0, COLUMNS, 9, True)
    np.testing.assert_array_equal(c, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_tile_sums_by_fused_multiply_adds_in_k_order(dtype):
    """k = 0 puts -(1 + 2u) in the accumulator, k = 1 adds (1 + u)^2 = 1 + 2u + u^2 (u = 2^-12 in float32,
    2^-27 in float64): fused, the exact product lands and leaves u^2; a rounded product (1 + 2u, the tie
    to even in float32) would leave 0, and k = 1 first would leave 0 too."""
    u = 2.0 ** (-12 if dtype == np.float32 else -27)
    a = np.zeros((2, ROWS), dtype)
    b = np.zeros((2, COLUMNS), dtype)
    a[0, :], b[0, :] = -(1 + 2 * u), 1
    a[1, :], b[1, :] = 1 + u, 1 + u
    c = np.zeros((ROWS, COLUMNS), dtype)
    _tile(a, b, c, 0, COLUMNS, 2)
    assert (c == dtype(u * u)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("accumulate", [False, True])
def test_a_gathered_tile_reads_a_row_of_b_of_its_own_for_each_row(dtype, accumulate):
    """Row i at step k multiplies a[k, i] by b's row rows[k, i] (a flat offset, int32): against numpy with
    small whole numbers (exact), stored or added to what c holds; depth 0 leaves c's values (added: + 0)."""
    rng = np.random.default_rng(11)
    for depth in (0, 1, 23):
        a = rng.integers(-8, 9, (depth, ROWS)).astype(dtype)
        b = rng.integers(-8, 9, (40, COLUMNS)).astype(dtype)
        picked = rng.integers(0, 40, (depth, ROWS))
        c = rng.integers(-8, 9, (ROWS, COLUMNS)).astype(dtype)
        expected = np.einsum("ki,kij->ij", a.astype(np.float64), b[picked].astype(np.float64))
        if accumulate:
            expected += c
        _gathered(a, b, (picked * COLUMNS).astype(np.int32), c, depth, accumulate)
        np.testing.assert_array_equal(c, expected if depth or accumulate else np.zeros_like(c))


def test_weights_packed_in_row_panels():
    w = np.arange(3 * ROWS * 5 + 0.0).reshape(-1, 5)[:2 * ROWS + 3]  # two whole panels and 3 rows of a third
    packed = np.full((3, 5, ROWS), np.nan)
    _pack(w, packed)
    padded = np.vstack([w, np.zeros((ROWS - 3, 5))])
    np.testing.assert_array_equal(packed, padded.reshape(3, ROWS, 5).transpose(0, 2, 1))


def test_a_matrix_packed_in_column_panels():
    m = np.arange(5 * 23.0).reshape(5, 23)
    packed = np.full((3, 5, 10), np.nan)
    _pack_columns(m, 23, packed)
    padded = np.hstack([m, np.zeros((5, 7))])
    np.testing.assert_array_equal(packed, padded.reshape(5, 3, 10).transpose(1, 0, 2))


def _im2col(x, KH, KW, SH, SW, PH, PW):
    # (n, k, positions) by numpy's sliding windows over the zero-padded image
    n, C = x.shape[:2]
    padded = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (KH, KW), axis=(2, 3))[:, :, ::SH, ::SW]
    return windows.transpose(0, 1, 4, 5, 2, 3).reshape(n, C * KH * KW, -1)


# (C, H, W, KH, KW) with the stride and padding (SH, SW, PH, PW): window rows shorter and longer than a run of
# copy_run (split into runs), strided and padded windows (copied cell by cell at the borders)
GEOMETRIES = {"plain": ((9, 7, 6, 3, 2), (1, 1, 0, 0)), "strided-padded": ((9, 7, 6, 3, 2), (2, 1, 1, 2)),
              "long-rows": ((2, 5, 14, 2, 11), (1, 1, 0, 0)), "long-rows-padded": ((2, 5, 14, 2, 11), (1, 1, 1, 3)),
              "wide-outputs": ((3, 6, 21, 3, 3), (1, 1, 0, 0))}


@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_an_image_unrolled_into_transposed_panels(geometry):
    """Each panel is COLUMNS rows of the im2col matrix of samples 1 and 2, transposed (a row per sample
    and position; k past the last repeating it); rows past the samples' are not touched."""
    (C, H, W, KH, KW), (SH, SW, PH, PW) = geometry
    n = 3  # k = 54 in the first two: a whole panel and part of another
    OH, OW = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    x = np.random.default_rng(1).normal(size=(n, C, H, W))
    cols = _im2col(x, KH, KW, SH, SW, PH, PW)[1:3]  # (2, k, positions)
    rows = np.concatenate([cols[0].T, cols[1].T])  # (2 * positions, k)
    for panel in range(-(-(C * KH * KW) // COLUMNS)):
        packed = np.full((2 * OH * OW + 3, COLUMNS), np.nan)
        _unroll_transposed(x, 1, 2, panel, packed, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW)
        index = np.minimum(np.arange(panel * COLUMNS, (panel + 1) * COLUMNS), C * KH * KW - 1)
        np.testing.assert_array_equal(packed[:2 * OH * OW], rows[:, index])
        assert np.isnan(packed[2 * OH * OW:]).all()


@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_an_image_unrolled_into_column_panels(geometry):
    """Each panel is the columns of the im2col matrix of the samples from s0 (numpy's sliding windows over
    the zero-padded image), the panel past the last real column repeating it."""
    (C, H, W, KH, KW), (SH, SW, PH, PW) = geometry
    n = 3
    OH, OW = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    x = np.random.default_rng(0).normal(size=(n, C, H, W))
    padded = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (KH, KW), axis=(2, 3))[:, :, ::SH, ::SW]
    cols = windows.transpose(1, 4, 5, 0, 2, 3).reshape(C * KH * KW, n, OH * OW)  # (k, sample, position)
    s0, count = 1, 2
    columns = count * OH * OW
    wanted = cols[:, s0:s0 + count].reshape(C * KH * KW, columns)
    for panel in range(-(-columns // COLUMNS)):
        packed = np.full((C * KH * KW, COLUMNS), np.nan)
        _unroll(x, s0, columns, panel, packed, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW)
        index = np.minimum(np.arange(panel * COLUMNS, (panel + 1) * COLUMNS), columns - 1)
        np.testing.assert_array_equal(packed, wanted[:, index])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block", [None, 5])
@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_column_gradients_folded_back_into_the_image(geometry, block, dtype):
    """col2im_add is the transpose of im2col: each column's cell added where it came from (padding
    dropped), rows k0 .. k0 + count of the columns at a time (half of k, or 5 rows: calls that start and
    end inside a channel's window), onto what dx holds; each cell of dx gets its terms one by one in k
    order, so the sums are those of numpy adding the rows in turn, to the bit (stride 1 sums whole rows
    of dx in vector registers, fold_rows; a stride of 2 cell by cell)."""
    (C, H, W, KH, KW), (SH, SW, PH, PW) = geometry
    OH, OW = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    rng = np.random.default_rng(2)
    k = C * KH * KW
    cols = rng.normal(size=(k, OH * OW)).astype(dtype)
    dx = rng.normal(size=(2, C, H, W)).astype(dtype)
    padded = np.zeros((C, H + 2 * PH, W + 2 * PW), dtype)
    padded[:, PH:PH + H, PW:PW + W] = dx[1]
    for kk in range(k):
        c, ki, kj = kk // (KH * KW), kk % (KH * KW) // KW, kk % KW
        padded[c, ki:ki + SH * OH:SH, kj:kj + SW * OW:SW] += cols[kk].reshape(OH, OW)
    wanted = dx.copy()
    wanted[1] = padded[:, PH:PH + H, PW:PW + W]
    starts = [0, k // 2] if block is None else list(range(0, k, block))
    for k0, k1 in zip(starts, starts[1:] + [k]):
        _col2im_add(cols[k0:k1].copy(), k0, k1 - k0, dx, 1, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW)
    np.testing.assert_array_equal(dx, wanted)
