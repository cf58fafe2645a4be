"""Compiled code calls glibc's exp, log and pow without their error-number wrappers.

LLVM lowers float64 np.exp, np.log and ** to calls of libm's exp, log and pow. In glibc each is a
wrapper: it calls the function (__ieee754_exp, ...), then checks the result to set errno, which
compiled code never reads. perf of seed-mlp's step: the wrappers 7% of its samples (exp 5.9%, log
1.3%), on its chain of latencies. glibc still exports the functions themselves under their old
names, __exp_finite, __log_finite, __pow_finite (version GLIBC_2.15, kept for binaries built with
-ffinite-math-only): the JIT's names are bound to those where they exist. The value is the same
number (the wrapper returns the function's value unchanged; tests/test_libm.py compares both).
float32 expf and logf have no wrapper since glibc 2.27.
"""

import ctypes

import llvmlite.binding as llvm
from numba.core.registry import cpu_target

from netc.interrupts import compiling

# the JIT's name -> glibc's function without the wrapper
UNWRAPPED = {"exp": "__exp_finite", "log": "__log_finite", "pow": "__pow_finite"}
VERSION = b"GLIBC_2.15"


def unwrapped_functions() -> dict[str, int]:
    """Addresses of glibc's unwrapped functions by the JIT's name; empty where libm is not glibc's."""
    try:  # glibc's soname (ctypes.util.find_library would run ldconfig at every start)
        libc, libm = ctypes.CDLL(None), ctypes.CDLL("libm.so.6")
        dlvsym = libc.dlvsym
    except (OSError, AttributeError, TypeError):  # not glibc (no libm.so.6, no dlvsym), or not POSIX
        return {}
    dlvsym.restype, dlvsym.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    found = {name: dlvsym(libm._handle, symbol.encode(), VERSION) for name, symbol in UNWRAPPED.items()}
    return {name: address for name, address in found.items() if address}


def bind() -> dict[str, int]:
    """Points the JIT's exp, log and pow at the unwrapped functions; returns what was bound."""
    found = unwrapped_functions()
    if not found:
        return {}
    with compiling():  # Ctrl-C held while LLVM's code generator is set up (as in netc.compiled.machine_tag)
        cpu_target.target_context  # noqa: B018 (Numba binds the math names to its helper library's as it starts)
    for name, address in found.items():
        llvm.add_symbol(name, address)
    return found


BOUND = bind()
