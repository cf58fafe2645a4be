"""Exponentials compiled code inlines: the recurrent gates' sigmoid and tanh, which vectorise in float32,
and glibc's expf written out (`expf`, `libm_exp`) for a softmax's rows.

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


@intrinsic
def _fma64(typingctx, a, b, c):
    """a * b + c in float64, rounded once."""
    if not all(arg == types.float64 for arg in (a, b, c)):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return types.float64(a, b, c), codegen


@intrinsic
def _bits_of_float64(typingctx, x):
    """The bit pattern of a float64, as a uint64."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.uint64(x), codegen


@intrinsic
def _float64_of_bits(typingctx, bits):
    """The float64 whose bit pattern is `bits` (a uint64)."""
    if bits != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(bits), codegen


# glibc's expf (2.27 on; sysdeps/ieee754/flt-32/e_expf.c, its FMA build, __expf_fma, which x86-64 CPUs
# with FMA run): e^x = 2^(k/32) 2^(r/32), k = round(32 x / ln 2), 2^(k/32) from a table of 32 float64s
# with k's upper bits added to the exponent, 2^(r/32) by a cubic, all in float64, rounded to float32
# once. Written out with the same constants and the same fused multiply-adds it gives glibc's results
# bit for bit (all 2^32 float32s compared once; tests/test_fastexp.py compares a million of them), without
# a call: cross_entropy's row of them runs as straight-line code (MLP 64-128-10's loss at a batch of 256,
# 10 -> 7.8 us). The table: 2^(i/32)'s bits less i << 47 (glibc's __exp2f_data.tab).
_EXPF_TABLE = np.array([
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51, 0x3fef72b83c7d517b,
    0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1, 0x3fef06fe0a31b715, 0x3feef1a7373aa9cb,
    0x3feedea64c123422, 0x3feece086061892d, 0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429,
    0x3feea47eb03a5585, 0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d, 0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069, 0x3fef5818dcfba487, 0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da, 0x3fefd0765b6e4540], dtype=np.uint64)
_EXPF_INV_LN2_N = float.fromhex("0x1.71547652b82fep+5")  # 32 / ln 2
_EXPF_SHIFT = float.fromhex("0x1.8p+52")  # adding it rounds to an integer held in the low bits
_EXPF_C0 = float.fromhex("0x1.c6af84b912394p-20")
_EXPF_C1 = float.fromhex("0x1.ebfce50fac4f3p-13")
_EXPF_C2 = float.fromhex("0x1.62e42ff0c52d6p-6")
_EXPF_TOP_88 = np.uint32(0x42a)  # |x| < 88: the top 12 bits of |x| at most this; else glibc's own path


@register_jitable
def expf(x):
    """e^x of a float32, glibc's expf to the bit; outside (-88, 88) (and for inf, NaN) glibc's expf
    itself, whose special cases those are."""
    if (np.uint32(_bits_of_float32(x)) >> np.uint32(20)) & np.uint32(0x7ff) > _EXPF_TOP_88:
        return np.exp(x)
    xd = np.float64(x)
    kd = _fma64(_EXPF_INV_LN2_N, xd, _EXPF_SHIFT)
    ki = _bits_of_float64(kd)
    kd = kd - _EXPF_SHIFT
    r = _fma64(_EXPF_INV_LN2_N, xd, -kd)
    scale = _float64_of_bits(_EXPF_TABLE[ki & np.uint64(31)] + (ki << np.uint64(47)))
    y = _fma64(_fma64(r, _EXPF_C0, _EXPF_C1), r * r, _fma64(r, _EXPF_C2, 1.0))
    return np.float32(y * scale)


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


def libm_exp(x):
    """e^x as libm gives it: glibc's expf in float32 (inlined: `expf`), exp in float64."""
    return np.exp(x)


def gate_sigmoid(x):
    """1 / (1 + e^-x)."""
    return 1.0 / (1.0 + np.exp(-x))


def gate_tanh(x):
    """tanh(x)."""
    return np.tanh(x)


@overload(libm_exp, jit_options={"fastmath": FASTMATH})
def _libm_exp(x):
    if x == types.float32:
        return lambda x: expf(x)
    return lambda x: np.exp(x)


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
