"""The recurrent gates' float32 exp, sigmoid and tanh (netc.kernels.fastexp) against libm in float64;
float64 is libm itself. The inlined expf against glibc's, bit for bit."""

from __future__ import annotations

import platform

import numba
import numpy as np
import pytest

from netc.kernels.fastexp import _bits_of_float32, exp32, expf, gate_sigmoid, gate_tanh, libm_exp

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


@numba.njit
def _expf_against_libm(bits):
    """For each float32 bit pattern: whether the inlined expf and libm's (Numba's np.exp of a float32)
    give the same bits (both NaN counts as the same)."""
    same = np.empty(bits.size, np.bool_)
    xs = bits.view(np.float32)
    for i in range(xs.size):
        mine, theirs = expf(xs[i]), np.exp(xs[i])
        same[i] = _bits_of_float32(mine) == _bits_of_float32(theirs) or (np.isnan(mine) and np.isnan(theirs))
    return same


def _glibc_with_fma() -> bool:
    """glibc 2.27 or later (its expf as written out) on a CPU with fused multiply-adds (its __expf_fma)."""
    name, version = platform.libc_ver()
    if name != "glibc" or tuple(int(v) for v in version.split(".")[:2]) < (2, 27):
        return False
    try:
        with open("/proc/cpuinfo") as info:
            return any(line.startswith("flags") and " fma" in line for line in info)
    except OSError:
        return False


@pytest.mark.skipif(not _glibc_with_fma(), reason="libm is not glibc 2.27+ on a CPU with FMA: another expf")
def test_expf_is_glibcs_to_the_bit():
    """Every 4,093rd float32 bit pattern (over a million: both signs, subnormals, |x| >= 88 where glibc's
    own code runs, inf and NaN) and the edges around 88 and 0: the same bits as glibc's expf. (All
    2^32 patterns were compared once: none differs; benchmarks/RESULTS.md, twenty-third session.)"""
    sampled = np.arange(0, 2**32, 4093, dtype=np.uint64).astype(np.uint32)
    edges = np.array([0x42AFFFFF, 0x42B00000, 0x42B00001, 0xC2AFFFFF, 0xC2B00000, 0xC2B00001, 0x42B17217,
                      0x42B17218, 0xC2CFF1B4, 0xC2CFF1B5, 0x00000001, 0x80000001, 0x7F800000, 0xFF800000,
                      0x7FC00000, 0x3F800000, 0xBF800000], np.uint32)
    bits = np.concatenate([sampled, edges])
    same = _expf_against_libm(bits)
    assert same.all(), bits[~same][:10]


@numba.njit
def _libm_exp(x):
    return libm_exp(x)


def test_libm_exp_keeps_the_float_width():
    """float32 in, float32 out (the inlined expf); float64 in, libm's exp."""
    assert _libm_exp(np.float32(1.5)) == np.float32(np.exp(np.float32(1.5)))
    assert _libm_exp(1.5) == np.exp(1.5)
    returns = {sig.args[0]: sig.return_type for sig in (o.signature for o in _libm_exp.overloads.values())}
    assert returns == {numba.float32: numba.float32, numba.float64: numba.float64}
