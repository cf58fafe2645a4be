"""netc.kernels.blas.gemm against numpy: every transpose, accumulation, column blocks, both dtypes."""

import numpy as np
import pytest
from numba import njit

from netc.kernels.blas import gemm


@njit(cache=True)
def _gemm(trans_a, trans_b, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    gemm(trans_a, trans_b, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc)


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
