"""Compiled code calls glibc's exp, log and pow without their errno wrappers (netc.libm): the same numbers;
without glibc nothing is bound."""

import ctypes
import platform

import llvmlite.binding as llvm
import numpy as np
import pytest
from numba import njit

import netc.jit  # noqa: F401  (binds the names, as every netc process does)
from netc import libm

GLIBC = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's libm only")

SPECIAL = [0.0, -0.0, 5e-324, -5e-324, 1e-310, -1e-310, 1e-300, -1e-300, 2.0 ** -54, -(2.0 ** -54), 0.5, -0.5, 1.0,
           -1.0, 700.0, -700.0, 709.78, 709.79, -708.39, -745.13, -745.14, 746.0, -746.0, 1e4, -1e4, 1e308, -1e308,
           np.inf, -np.inf, np.nan, -np.nan]


def _function(address):
    return ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double)(address)


def _bits(values) -> np.ndarray:
    return np.array(values, dtype=np.float64).view(np.uint64)


@GLIBC
def test_every_unwrapped_function_is_found_and_bound_for_compiled_code():
    @njit
    def uses_them(x):
        return np.exp(x) + np.log(x) + x ** 1.5

    uses_them(2.0)  # Numba's target has started: its own bindings were made, and netc's after them
    assert set(libm.BOUND) == set(libm.UNWRAPPED)
    for name, address in libm.BOUND.items():
        assert llvm.address_of_symbol(name) == address, name


@GLIBC
@pytest.mark.parametrize("name", ["exp", "log"])
def test_an_unwrapped_function_gives_the_wrapped_ones_numbers(name):
    wrapped = getattr(ctypes.CDLL("libm.so.6"), name)
    wrapped.restype, wrapped.argtypes = ctypes.c_double, [ctypes.c_double]
    unwrapped = _function(libm.BOUND[name])
    rng = np.random.default_rng(0)
    values = SPECIAL + list(rng.uniform(-800, 800, 20_000)) + list(rng.lognormal(0, 30, 20_000))
    np.testing.assert_array_equal(_bits([unwrapped(v) for v in values]), _bits([wrapped(v) for v in values]))


@GLIBC
def test_unwrapped_pow_gives_the_wrapped_ones_numbers():
    wrapped = ctypes.CDLL("libm.so.6").pow
    wrapped.restype, wrapped.argtypes = ctypes.c_double, [ctypes.c_double, ctypes.c_double]
    unwrapped = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double, ctypes.c_double)(libm.BOUND["pow"])
    rng = np.random.default_rng(1)
    exponents = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, 1 / 3, 1024.0, -1075.0, np.inf, -np.inf, np.nan]
    pairs = [(x, y) for x in SPECIAL for y in exponents]
    pairs += list(zip(rng.uniform(-50, 50, 5000), rng.normal(0, 40, 5000)))
    np.testing.assert_array_equal(_bits([unwrapped(x, y) for x, y in pairs]), _bits([wrapped(x, y) for x, y in pairs]))


@GLIBC
def test_compiled_code_computes_what_libm_does():
    @njit
    def exp_log(x, out):
        for i in range(x.size):
            out[0, i] = np.exp(x[i])
            out[1, i] = np.log(x[i])

    x = np.array(SPECIAL + list(np.random.default_rng(2).uniform(-800, 800, 1000)))
    out = np.empty((2, x.size))
    exp_log(x, out)
    m = ctypes.CDLL("libm.so.6")
    for row, name in enumerate(["exp", "log"]):
        f = getattr(m, name)
        f.restype, f.argtypes = ctypes.c_double, [ctypes.c_double]
        np.testing.assert_array_equal(out[row].view(np.uint64), _bits([f(v) for v in x]))


@pytest.mark.parametrize("error", [OSError("no libm.so.6"), AttributeError("no dlvsym"), TypeError("not POSIX")])
def test_without_glibc_nothing_is_bound(monkeypatch, error):
    """Where libm.so.6 or dlvsym is missing (musl, macOS) the JIT keeps Numba's bindings."""
    def refuse(*args, **kwargs):
        raise error

    monkeypatch.setattr(libm.ctypes, "CDLL", refuse)
    assert libm.unwrapped_functions() == {}
    before = {name: llvm.address_of_symbol(name) for name in libm.UNWRAPPED}
    assert libm.bind() == {}
    assert {name: llvm.address_of_symbol(name) for name in libm.UNWRAPPED} == before
