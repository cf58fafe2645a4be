"""Subnormal floats flushed to zero while netc's compiled code runs (x86-64: MXCSR's FTZ and DAZ bits).

On x86 an instruction that reads or makes a subnormal (|x| < 1.2e-38 in float32) takes a microcode
assist of ~100 cycles. A recurrent net's gradients shrink through time into that range as it
trains: the benchmark RNN (benchmarks/specs/rnn.yaml) ran 217-220 k steps/s from its first weights,
172-175 k from those of a few hundred epochs later, and 206-213 k from those with the bits set
(benchmarks/RESULTS.md, twenty-sixth session). TensorFlow's CPU runtime runs its kernels with them set
(ScopedFlushDenormal); PyTorch keeps subnormals unless told otherwise (torch.set_flush_denormal). A
spec chooses with `train.denormals`: flush (the default) or keep (IEEE gradual underflow).

The bits belong to a thread. `flushed` sets them on the calling thread for one compiled call and
then restores its own (numpy, the user's code, keep theirs); netc's region pool runs each row of a
region under its caller's bits (netc.region_pool), so a row gives the same numbers on whichever
thread claims it. Where Numba's own threading layer ran the regions its workers would keep theirs,
so a model flushes only where netc's pool runs its regions (Model); OpenBLAS's helper threads, used
by plans with no parallel region and a GEMM of 50 M+ multiply-adds (steps.blas_threads), keep theirs
too, so such a plan keeps subnormals as well."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import sys
from contextlib import contextmanager

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

FLUSH_TO_ZERO = 0x8000  # results that would be subnormal are 0
DENORMALS_ARE_ZERO = 0x0040  # subnormal operands are read as 0
FLUSH = FLUSH_TO_ZERO | DENORMALS_ARE_ZERO


class _Environment(ctypes.Structure):
    """glibc's fenv_t on x86-64: the x87 environment (28 bytes), then MXCSR."""

    _fields_ = [("x87", ctypes.c_uint8 * 28), ("mxcsr", ctypes.c_uint32)]


def _libm():
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        lib.fegetenv.argtypes = lib.fesetenv.argtypes = [ctypes.POINTER(_Environment)]
        return lib
    except (OSError, AttributeError):
        return None


_lib = _libm()


def supported() -> bool:
    """Whether this machine's threads can flush (Linux x86-64, the platform of netc's region pool)."""
    return _lib is not None


def mxcsr() -> int:
    """The calling thread's MXCSR (tests)."""
    environment = _Environment()
    _lib.fegetenv(ctypes.byref(environment))
    return int(environment.mxcsr)


@contextmanager
def flushed(enabled: bool = True):
    """Subnormals flushed to zero on the calling thread for the block, when `enabled` (and supported);
    the thread's own bits back after it, whatever it raised."""
    if not enabled or _lib is None:
        yield
        return
    environment = _Environment()
    _lib.fegetenv(ctypes.byref(environment))
    before = environment.mxcsr
    environment.mxcsr = before | FLUSH
    _lib.fesetenv(ctypes.byref(environment))
    try:
        yield
    finally:
        _lib.fegetenv(ctypes.byref(environment))
        environment.mxcsr = (environment.mxcsr & ~FLUSH) | (before & FLUSH)
        _lib.fesetenv(ctypes.byref(environment))


# ---------------------------------------------------------------------------- compiled code's side


def _slot_call(builder, name, slot):
    fnty = ir.FunctionType(ir.VoidType(), [ir.PointerType(ir.IntType(8))])
    builder.call(cgutils.get_or_insert_function(builder.module, fnty, name),
                 [builder.bitcast(slot, ir.PointerType(ir.IntType(8)))])


@intrinsic
def read_mxcsr(typingctx):
    """The running thread's MXCSR (stmxcsr)."""
    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        _slot_call(builder, "llvm.x86.sse.stmxcsr", slot)
        return builder.zext(builder.load(slot), ir.IntType(64))
    return types.int64(), codegen


@intrinsic
def write_mxcsr(typingctx, value):
    """Set the running thread's MXCSR (ldmxcsr)."""
    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        builder.store(builder.trunc(args[0], ir.IntType(32)), slot)
        _slot_call(builder, "llvm.x86.sse.ldmxcsr", slot)
        return context.get_dummy_value()
    return types.void(types.int64), codegen
