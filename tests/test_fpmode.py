"""Subnormals flushed to zero while netc's compiled code runs (netc.fpmode): on the calling thread for the
call only, on every thread of netc's region pool that runs a row of it, and per spec (`train.denormals`)."""

import numba
import numpy as np
import pytest
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from netc import fpmode, region_pool
from netc.jit import start_threads
from netc.runtime.model import Model

from helpers import build, one_error

pytestmark = pytest.mark.skipif(not fpmode.supported(), reason="flushing subnormals is set up on Linux x86-64")

SUBNORMAL_PRODUCT = (np.float32(1e-30), np.float32(1e-10))  # 1e-40: below float32's smallest normal, 1.2e-38


def test_flushed_sets_the_bits_for_the_block_and_restores_the_thread_s_own():
    a, b = SUBNORMAL_PRODUCT
    before = fpmode.mxcsr()
    assert before & fpmode.FLUSH == 0 and a * b > 0  # IEEE gradual underflow outside
    with fpmode.flushed():
        assert fpmode.mxcsr() & fpmode.FLUSH == fpmode.FLUSH
        assert a * b == 0  # flushed
        assert np.float32(1e-40) * np.float32(1) == 0  # a subnormal operand read as zero
    assert fpmode.mxcsr() & fpmode.FLUSH == 0 and a * b > 0
    with pytest.raises(KeyboardInterrupt):
        with fpmode.flushed():
            raise KeyboardInterrupt
    assert fpmode.mxcsr() & fpmode.FLUSH == 0
    with fpmode.flushed(False):  # the modes as they were (the sticky exception flags aside)
        assert fpmode.mxcsr() & ~region_pool.EXCEPTION_FLAGS == before & ~region_pool.EXCEPTION_FLAGS


@intrinsic
def _thread_id(typingctx):
    """The running thread's kernel id (syscall gettid)."""
    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        call = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64], var_arg=True), "syscall")
        return builder.call(call, [i64(186)])
    return types.int64(), codegen


@njit(parallel=True, nogil=True)
def _rows_modes(modes, threads, products, a, b, repeat):
    for row in prange(modes.size):
        total = 0.0
        for i in range(repeat):  # long enough that the workers claim rows too
            total += 1.0 / (i + 1)
        modes[row] = fpmode.read_mxcsr()
        threads[row] = _thread_id()
        products[row] = a * b + np.float32(0 * total)


@pytest.mark.skipif(not region_pool.wanted(), reason="netc's pool runs on Linux x86-64")
def test_every_row_of_a_region_runs_under_its_caller_s_bits_on_any_thread():
    start_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        rows = 64
        for flush in (True, False, True, False):
            seen = set()
            for _ in range(200):  # until a worker has run some of the rows (the caller may take them all)
                modes, threads = np.zeros(rows, np.int64), np.zeros(rows, np.int64)
                products = np.zeros(rows, np.float32)
                with fpmode.flushed(flush):
                    _rows_modes(modes, threads, products, *SUBNORMAL_PRODUCT, 20_000)
                assert np.all((modes & fpmode.FLUSH) == (fpmode.FLUSH if flush else 0)), (flush, modes)
                assert np.all(products == 0) if flush else np.all(products > 0)
                seen |= set(threads.tolist())
                if len(seen) > 1 or numba.get_num_threads() < 2:
                    break
            assert len(seen) > 1 or numba.get_num_threads() < 2, "no worker ran a row"
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


SPEC = """
netc: 1
name: tiny
inputs:
  x: {shape: [2]}
  y: {shape: [1]}
layers:
  - {name: fc, op: linear, out: 1}
loss: {op: mse, input: fc, target: y}
train: {batch: 4%s}
"""


@pytest.mark.parametrize("denormals, flushed", [("", True), (", denormals: flush", True), (", denormals: keep", False)])
def test_a_model_flushes_subnormals_as_its_spec_says(denormals, flushed):
    model = Model(build(SPEC % denormals), tier="python")
    assert model.flush_denormals is flushed
    model.set_weights({"fc.weight": np.full((1, 2), 1e-30, np.float32), "fc.bias": np.zeros(1, np.float32)})
    x = np.array([[1e-10, 0], [0, 1e-10], [1, 1], [0, 0]], np.float32)
    out = model.predict({"x": x, "y": np.zeros((4, 1), np.float32)})[:, 0]
    expected = [0, 0, 2e-30, 0] if flushed else [1e-40, 1e-40, 2e-30, 0]
    np.testing.assert_array_equal(out, np.array(expected, np.float32))
    assert fpmode.mxcsr() & fpmode.FLUSH == 0  # the caller's own bits back after the call


def test_a_denormals_setting_that_is_neither_flush_nor_keep_is_an_error():
    diagnostic = one_error(SPEC % ", denormals: fast")
    assert diagnostic.path == "train.denormals" and "'flush'" in diagnostic.message + (diagnostic.hint or "")
