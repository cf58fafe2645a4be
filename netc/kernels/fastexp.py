"""The recurrent gates' sigmoid and tanh, which vectorise in float32.

A loop that calls libm's `expf` or `tanhf` cannot be vectorised by LLVM (Numba links no vector
math library), and in an LSTM step those calls were most of the time: 5 of them per unit and
sample, against a GEMM that BLAS runs at full speed. In float32 these functions compute
e^x = 2^k e^r (k = round(x / ln 2), |r| <= ln 2 / 2, e^r by its Taylor polynomial of degree 7,
2^k by writing the float's exponent bits): fused multiply-adds and bit casts, so LLVM
vectorises a loop of them. k is rounded by adding 1.5 * 2^23, which leaves k in the sum's low
bits (no floor, no conversion), and the polynomial is evaluated with explicit fused
multiply-adds (`fastmath` would allow LLVM to reorder sums elsewhere, which netc's determinism
rules out): half the instructions and half the latency of separate multiplies and adds. They
stay within a few units in the last place of libm's results (tests/test_fastexp.py measures
it); the tanh, 1 - 2 / (1 + e^2x), to about 1e-7 absolute.

In float64 they are libm's `1 / (1 + exp(-x))` and `tanh(x)`, which the float64 gradient checks
compare against finite differences.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload, register_jitable

from netc.jit import FASTMATH

_ONE = np.float32(1.0)
_TWO = np.float32(2.0)
_LOW, _HIGH = np.float32(-87.0), np.float32(88.0)  # e^x a normal float32 throughout
_LOG2E = np.float32(1.4426950408889634)
_ROUND = np.float32(1.5 * 2**23)  # x + _ROUND rounds x to an integer held in the sum's low mantissa bits
_ROUND_BITS = np.int32(0x4B400000)  # the bits of _ROUND
_MINUS_LN2_HIGH = np.float32(-0.693359375)  # ln 2 in two parts (Cody and Waite): k * ln2_high is exact
_MINUS_LN2_LOW = np.float32(2.1219444005469057e-4)
_C2, _C3, _C4 = np.float32(1 / 2), np.float32(1 / 6), np.float32(1 / 24)
_C5, _C6, _C7 = np.float32(1 / 120), np.float32(1 / 720), np.float32(1 / 5040)


@intrinsic
def _float32_of_bits(typingctx, bits):
    """The float32 whose bit pattern is the low 32 bits of the integer `bits`."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], types.int32)
        return builder.bitcast(value, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _bits_of_float32(typingctx, x):
    """The bit pattern of a float32, as an int32."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(x), codegen


@intrinsic
def fma32(typingctx, a, b, c):
    """a * b + c rounded once (LLVM's fma: one instruction on every x86 CPU with AVX2, where it
    vectorises; elsewhere libm's fmaf, the same result, slower)."""
    if not all(arg == types.float32 for arg in (a, b, c)):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return types.float32(a, b, c), codegen


# exp32 and the gates are small functions LLVM inlines into each loop that calls them (then vectorises
# the loop); inlined by Numba instead (`inline="always"`), each call was typed again: the recurrent
# kernels compiled 12% longer (27.2 -> 23.9 s for the eight signatures), to the same code and speed.
@register_jitable
def exp32(x):
    """e^x in float32 (of x rounded to float32), for x in [-87, 88] (clamped outside it)."""
    x = min(max(np.float32(x), _LOW), _HIGH)
    rounded = fma32(x, _LOG2E, _ROUND)
    k = rounded - _ROUND  # round(x / ln 2), exactly
    r = fma32(k, _MINUS_LN2_LOW, fma32(k, _MINUS_LN2_HIGH, x))
    p = fma32(fma32(fma32(r, _C7, _C6), r, _C5), r, _C4)
    p = fma32(fma32(fma32(fma32(p, r, _C3), r, _C2), r, _ONE), r, _ONE)
    return p * _float32_of_bits((_bits_of_float32(rounded) - _ROUND_BITS + 127) << 23)


def gate_sigmoid(x):
    """1 / (1 + e^-x)."""
    return 1.0 / (1.0 + np.exp(-x))


def gate_tanh(x):
    """tanh(x)."""
    return np.tanh(x)


@overload(gate_sigmoid, jit_options={"fastmath": FASTMATH})
def _gate_sigmoid(x):
    if x == types.float32:
        return lambda x: np.divide(_ONE, _ONE + exp32(-x))  # `/` checks for zero, which stops vectorising
    return lambda x: 1.0 / (1.0 + np.exp(-x))


@overload(gate_tanh, jit_options={"fastmath": FASTMATH})
def _gate_tanh(x):
    if x == types.float32:
        return lambda x: _ONE - np.divide(_TWO, _ONE + exp32(_TWO * x))
    return lambda x: np.tanh(x)
