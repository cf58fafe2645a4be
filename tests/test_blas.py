"""netc.kernels.blas.gemm against numpy: every transpose, accumulation, column blocks, both dtypes; and
gemm_columns, which splits a product of few rows into blocks of columns."""

import numpy as np
import pytest
from numba import njit

from netc.kernels.blas import SMALL_GEMM, SMALL_ROWS, gemm, gemm_columns


@njit(cache=True)
def _gemm(trans_a, trans_b, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    gemm(trans_a, trans_b, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc)


@njit(cache=True)
def _gemm_columns(m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    gemm_columns(m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
def test_gemm_matches_numpy(dtype, trans_a, trans_b, beta):
    rng = np.random.default_rng(0)
    m, n, k = 5, 7, 3
    a = rng.normal(size=(k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.normal(size=(n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.normal(size=(m, n)).astype(dtype)
    expected = (a.T if trans_a else a) @ (b.T if trans_b else b) + beta * c
    _gemm(trans_a, trans_b, m, n, k, a, 0, a.shape[1], b, 0, b.shape[1], beta, c, 0, n)
    np.testing.assert_allclose(c, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


def test_gemm_addresses_blocks_by_offset_and_row_stride():
    """C[1:3, 2:5] = A[1:3, 1:3] @ B[2:4, 2:5]: blocks of wider matrices, nothing outside the block touched."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 6)), rng.normal(size=(5, 8))
    c = np.zeros((4, 7))
    _gemm(False, False, 2, 3, 2, a, 1 * 6 + 1, 6, b, 2 * 8 + 2, 8, 0.0, c, 1 * 7 + 2, 7)
    expected = np.zeros((4, 7))
    expected[1:3, 2:5] = a[1:3, 1:3] @ b[2:4, 2:5]
    np.testing.assert_allclose(c, expected, rtol=1e-12, atol=1e-14)


def test_gemm_refuses_mixed_dtypes_and_non_contiguous_arrays():
    a32, b64 = np.ones((2, 2), np.float32), np.ones((2, 2))
    with pytest.raises(Exception, match="gemm"):
        _gemm(False, False, 2, 2, 2, a32, 0, 2, b64, 0, 2, 0.0, b64, 0, 2)
    with pytest.raises(Exception, match="gemm"):
        _gemm(False, False, 2, 2, 2, b64[:, ::2], 0, 2, b64, 0, 2, 0.0, b64, 0, 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, n, k", [(16, 520, 128), (3, 1000, 300), (SMALL_ROWS + 1, 600, 128), (4, 40, 8)])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_gemm_columns_is_the_whole_product(dtype, m, n, k, beta):
    """Blocks of columns (a last one narrower: n = 520 against blocks of 256; 1000 against blocks of
    576) or, for more rows or a small product, one GEMM; A and B read as blocks of wider matrices at
    offsets, C written only in its block."""
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(m + 1, k + 3)).astype(dtype), rng.normal(size=(k + 2, n + 5)).astype(dtype)
    c = rng.normal(size=(m + 2, n + 4)).astype(dtype)
    expected = c.copy()
    expected[1:m + 1, 3:n + 3] = a[1:, 2:k + 2].astype(np.float64) @ b[1:k + 1, 4:n + 4] + beta * c[1:m + 1, 3:n + 3]
    _gemm_columns(m, n, k, a, 1 * (k + 3) + 2, k + 3, b, 1 * (n + 5) + 4, n + 5, beta, c, 1 * (n + 4) + 3, n + 4)
    np.testing.assert_allclose(c, expected, rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-3)
    block = (SMALL_GEMM // (m * k)) // 16 * 16
    assert (m <= SMALL_ROWS and 16 <= block < n) == ((m, n, k) in [(16, 520, 128), (3, 1000, 300)])  # which split
