"""netc.kernels.blas.gemm against numpy: every transpose, accumulation, column blocks, both dtypes; and
gemm_columns, which splits a product of few rows into blocks of columns; gemm_tn, which splits a weight
gradient into blocks OpenBLAS's small-matrix kernels take."""

import os
import subprocess
import sys

import numpy as np
import pytest
from numba import njit

from netc.kernels.blas import SMALL_GEMM, SMALL_ROWS, gemm, gemm_columns, gemm_tn


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


@njit(cache=True)
def _gemm_tn(small_kernels, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    gemm_tn(small_kernels, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, n, k", [(128, 64, 256), (120, 256, 64), (127, 1001, 33), (300, 40, 100), (20, 30, 40)])
@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("small_kernels", [False, True])
def test_gemm_tn_is_the_whole_product(dtype, m, n, k, beta, small_kernels):
    """C = A^T B (+ C): in blocks (the first four shapes, 1.0-4.2 M multiply-adds, in float32 under the
    SkylakeX kernels, uneven last blocks in 127 x 1001) or whole; A and B read as blocks of wider
    matrices at offsets, C written only in its block."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(k + 2, m + 3)).astype(dtype), rng.normal(size=(k + 1, n + 5)).astype(dtype)
    c = rng.normal(size=(m + 2, n + 4)).astype(dtype)
    expected = c.copy()
    expected[1:m + 1, 3:n + 3] = a[1:k + 1, 2:m + 2].T.astype(np.float64) @ b[1:, 4:n + 4] + beta * c[1:m + 1, 3:n + 3]
    _gemm_tn(small_kernels, m, n, k, a, 1 * (m + 3) + 2, m + 3, b, 1 * (n + 5) + 4, n + 5, beta, c,
             1 * (n + 4) + 3, n + 4)
    np.testing.assert_allclose(c, expected, rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-3)


# run without the environment's OPENBLAS_CORETYPE pin: OpenBLAS picks the CPU's own kernels
_TN_BITS = """
import numpy as np
from netc.jit import blas_small_kernels
from netc.kernels.blas import gemm, gemm_tn
from numba import njit

@njit
def both(a, b, whole, blocks, beta):
    k, m = a.shape
    n = b.shape[1]
    gemm(True, False, m, n, k, a, 0, m, b, 0, n, beta, whole, 0, n)
    gemm_tn(True, m, n, k, a, 0, m, b, 0, n, beta, blocks, 0, n)

if not blas_small_kernels():
    print("no SkylakeX kernels")
    raise SystemExit(0)
rng = np.random.default_rng(4)
for m, n, k in [(128, 64, 256), (120, 256, 64), (127, 1001, 33), (300, 40, 100), (64, 128, 384), (700, 900, 13)]:
    for beta in (0.0, 1.0):
        a, b = rng.normal(size=(k, m)).astype(np.float32), rng.normal(size=(k, n)).astype(np.float32)
        c = rng.normal(size=(m, n)).astype(np.float32)
        whole, blocks = c.copy(), c.copy()
        both(a, b, whole, blocks, beta)
        assert np.array_equal(whole.view(np.uint32), blocks.view(np.uint32)), (m, n, k, beta)
print("same bits")
"""


def test_gemm_tn_blocks_give_the_whole_products_bits_under_the_skylakex_kernels():
    """Under the kernels OpenBLAS picks on an AVX-512 CPU (the environment's Haswell pin lifted), each
    block's outputs are the whole product's, bit for bit, assigning and accumulating: a plan's numbers
    do not depend on the blocks. Skipped where OpenBLAS runs other kernels."""
    env = {name: value for name, value in os.environ.items() if name not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    done = subprocess.run([sys.executable, "-c", _TN_BITS], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    if "no SkylakeX kernels" in done.stdout:
        pytest.skip("OpenBLAS runs other kernels on this CPU: gemm_tn never splits there")
    assert "same bits" in done.stdout
