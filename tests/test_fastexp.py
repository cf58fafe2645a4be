"""The recurrent gates' float32 exp, sigmoid and tanh (netc.kernels.fastexp) against libm in float64;
float64 is libm itself."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from netc.kernels.fastexp import exp32, gate_sigmoid, gate_tanh

pytestmark = pytest.mark.compiled


@numba.njit
def _apply(x, which):
    y = np.empty_like(x)
    for i in range(x.size):
        y[i] = exp32(x[i]) if which == 0 else gate_sigmoid(x[i]) if which == 1 else gate_tanh(x[i])
    return y


def _ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Distance in units in the last place of float32 at the true value."""
    return np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)


def test_exp32_is_within_a_few_ulps_of_libm_over_its_whole_range():
    x = np.linspace(-87, 88, 200_001).astype(np.float32)
    got = _apply(x, 0)
    assert got.dtype == np.float32
    assert _ulps(got, np.exp(x.astype(np.float64))).max() <= 4
    # outside the range: clamped, never inf, 0 or a wrong sign
    far = _apply(np.array([-1e4, -100, 100, 1e4], np.float32), 0)
    assert np.all(np.isfinite(far)) and np.all(far > 0) and far[2] > 1e38


def test_float32_sigmoid_and_tanh_are_close_to_libm():
    x = np.linspace(-30, 30, 120_001).astype(np.float32)
    wide = x.astype(np.float64)
    sigmoid = _apply(x, 1)
    assert sigmoid.dtype == np.float32
    expected = 1 / (1 + np.exp(-wide))
    assert _ulps(sigmoid, expected)[expected > 1e-30].max() <= 4
    tanh = _apply(x, 2)
    assert np.abs(tanh - np.tanh(wide)).max() <= 2e-7  # absolute: 1 - 2/(1 + e^2x) near 0
    assert tanh.min() >= -1 and tanh.max() <= 1 and _apply(np.array([0], np.float32), 2)[0] == 0


def test_float64_is_libm():
    """To the last bit or two (NumPy's own exp, the reference here, is not libm's)."""
    x = np.linspace(-30, 30, 10_001)
    np.testing.assert_allclose(_apply(x, 1), 1.0 / (1.0 + np.exp(-x)), rtol=5e-16, atol=0)
    np.testing.assert_allclose(_apply(x, 2), np.tanh(x), rtol=5e-16, atol=1e-300)
