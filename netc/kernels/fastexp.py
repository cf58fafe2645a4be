"""The recurrent gates' sigmoid and tanh, which vectorise in float32.

A loop that calls libm's `expf` or `tanhf` cannot be vectorised by LLVM (Numba links no vector
math library), and in an LSTM step those calls were most of the time: 5 of them per unit and
sample, against a GEMM that BLAS runs at full speed. In float32 these functions compute
e^x = 2^k e^r (k = round(x / ln 2), |r| <= ln 2 / 2, e^r by its Taylor polynomial of degree 7,
2^k by writing the float's exponent bits): multiplications, additions and one bit cast, so
LLVM vectorises a loop of them. They stay within a few units in the last place of libm's
results (tests/test_fastexp.py measures it); the tanh, 1 - 2 / (1 + e^2x), to about 1e-7 absolute.

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
_HALF = np.float32(0.5)
_LOW, _HIGH = np.float32(-87.0), np.float32(88.0)  # e^x a normal float32 throughout
_LOG2E = np.float32(1.4426950408889634)
_LN2_HIGH = np.float32(0.693359375)  # ln 2 in two parts (Cody and Waite): k * _LN2_HIGH is exact
_LN2_LOW = np.float32(-2.1219444005469057e-4)
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


@register_jitable(inline="always")
def exp32(x):
    """e^x of a float32, for x in [-87, 88] (clamped outside it)."""
    x = min(max(x, _LOW), _HIGH)
    k = np.floor(x * _LOG2E + _HALF)
    r = (x - k * _LN2_HIGH) - k * _LN2_LOW
    p = _ONE + r * (_ONE + r * (_C2 + r * (_C3 + r * (_C4 + r * (_C5 + r * (_C6 + r * _C7))))))
    return p * _float32_of_bits((np.int32(k) + 127) << 23)


def gate_sigmoid(x):
    """1 / (1 + e^-x)."""
    return 1.0 / (1.0 + np.exp(-x))


def gate_tanh(x):
    """tanh(x)."""
    return np.tanh(x)


@overload(gate_sigmoid, jit_options={"fastmath": FASTMATH}, inline="always")
def _gate_sigmoid(x):
    if x == types.float32:
        return lambda x: np.divide(_ONE, _ONE + exp32(-x))  # `/` checks for zero, which stops vectorising
    return lambda x: 1.0 / (1.0 + np.exp(-x))


@overload(gate_tanh, jit_options={"fastmath": FASTMATH}, inline="always")
def _gate_tanh(x):
    if x == types.float32:
        return lambda x: _ONE - np.divide(_TWO, _ONE + exp32(_TWO * x))
    return lambda x: np.tanh(x)
