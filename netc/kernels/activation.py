"""Element-wise activations, applied in place in producers' epilogues, and softmax."""

import math

import numpy as np

from netc.jit import helper, kernel

# the codes of netc/ops/activation.py (each op's `Activation.code`); 0 is "no activation"
NONE, RELU, SIGMOID, TANH, LEAKY_RELU, ELU, GELU, GELU_TANH, SILU = 0, 1, 2, 3, 4, 5, 6, 7, 8
# backward rules of a projection plan (netc.compiler.projection), not ops: a ReLU's backward in
# Zeiler & Fergus's deconvnet (the positive part of the signal) and in guided backpropagation
# (where both the forward input and the signal are positive); see act_chain
DECONVNET_RELU, GUIDED_RELU = 9, 10
_SQRT_2_OVER_PI = 0.7978845608028654
_GELU_CUBIC = 0.044715


@helper
def act_value(z, act, alpha):
    """act(z); alpha is the activation's parameter (leaky_relu's slope, elu's alpha). Small on
    purpose, so that it inlines into the epilogue loops; the parametrised activations are apart."""
    if act == NONE:
        return z
    if act == RELU:
        return z if z > 0 else z * 0
    if act == SIGMOID:
        return _sigmoid(z)
    if act == TANH:
        return np.tanh(z)
    return _act_parametrised(z, act, alpha)


@helper
def _act_parametrised(z, act, alpha):
    if act == LEAKY_RELU:
        return z if z > 0 else z * alpha
    if act == ELU:
        return z if z > 0 else alpha * np.expm1(z)
    if act == GELU:
        return 0.5 * z * (1 + math.erf(z * 0.7071067811865476))
    if act == GELU_TANH:
        return 0.5 * z * (1 + np.tanh(_SQRT_2_OVER_PI * (z + _GELU_CUBIC * z * z * z)))
    if act == SILU:
        return z * _sigmoid(z)
    return z * 1.0


@helper
def _sigmoid(z):
    # branch-free: the sign of z is a coin flip on a network's activations, and a mispredicted branch
    # cost seed-mlp ~10% of its step; np.divide skips the zero check of `/` (1 + e >= 1): the same bits
    e = np.exp(-abs(z))  # never overflows
    return np.divide(1.0 if z >= 0 else e, 1.0 + e)


@helper
def act_grad(v, act, alpha):
    """d act / dz. For the activations that may fuse into an epilogue, v is the output y = act(z)
    (all the backward keeps); for gelu, whose derivative needs z, v is the input z."""
    if act == RELU:
        return 1 if v > 0 else 0
    if act == SIGMOID:
        return v * (1 - v)
    if act == TANH:
        return 1 - v * v
    if act == LEAKY_RELU:  # y > 0 exactly when z > 0 (slope >= 0); at 0, the slope (as PyTorch)
        return 1 if v > 0 else alpha
    if act == ELU:  # y = alpha (e^z - 1) for z <= 0, so dy/dz = alpha e^z = y + alpha
        return 1 if v > 0 else v + alpha
    if act == GELU:  # Phi(z) + z phi(z)
        return 0.5 * (1 + math.erf(v * 0.7071067811865476)) + v * 0.3989422804014327 * np.exp(-0.5 * v * v)
    if act == GELU_TANH:
        inner = _SQRT_2_OVER_PI * (v + _GELU_CUBIC * v * v * v)
        t = np.tanh(inner)
        return 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * v * v)
    if act == SILU:  # s(z) (1 + z (1 - s(z))), from the input z
        s = _sigmoid(v)
        return s * (1 + v * (1 - s))
    return 1


@helper
def act_chain(dy, v, act, alpha):
    """The gradient before the activation from the one after it: dy * act'(z), v as in act_grad.
    The projection rules gate by the signal's sign instead (they are not derivatives):
    deconvnet max(dy, 0); guided dy where dy > 0 and the ReLU's output v > 0 (so its input too)."""
    if act <= SILU:
        return dy * act_grad(v, act, alpha)
    if act == DECONVNET_RELU:
        return dy if dy > 0 else dy * 0
    return dy if dy > 0 and v > 0 else dy * 0  # GUIDED_RELU


@kernel
def act_forward(x, y, act, alpha):
    """y = act(x); x, y flat (size,)."""
    for i in range(x.size):
        y[i] = act_value(x[i], act, alpha)


@kernel
def act_backward(dy, v, dx, act, alpha, acc):
    """dx (+)= dy * act'(z); all flat; v as in act_grad (the output, or gelu's input)."""
    for i in range(dy.size):
        # the ReLU with a constant code: LLVM then gives it a loop of its own, which vectorises (a loop
        # that can reach every activation's branch does not); the same act_chain, the same numbers
        g = act_chain(dy[i], v[i], RELU, alpha) if act == RELU else act_chain(dy[i], v[i], act, alpha)
        if acc:
            dx[i] += g
        else:
            dx[i] = g


@kernel
def softmax_forward(x, y, log):
    """Row-wise softmax (log=False) or log-softmax (log=True); x, y (n, F)."""
    n, f = x.shape
    for s in range(n):
        m = x[s, 0]
        for j in range(1, f):
            if x[s, j] > m:
                m = x[s, j]
        total = 0.0
        for j in range(f):
            e = np.exp(x[s, j] - m)
            if not log:  # kept in y for the division: each exp computed once
                y[s, j] = e
            total += e
        if log:
            lse = m + np.log(total)
            for j in range(f):
                y[s, j] = x[s, j] - lse
        else:
            for j in range(f):
                y[s, j] = y[s, j] / total


@kernel
def softmax_backward(dy, y, dx, log, acc):
    """Backward of softmax / log-softmax from its output y; all (n, F)."""
    n, f = y.shape
    for s in range(n):
        if log:
            total = 0.0
            for j in range(f):
                total += dy[s, j]
            for j in range(f):
                g = dy[s, j] - np.exp(y[s, j]) * total
                dx[s, j] = dx[s, j] + g if acc else g
        else:
            dot = 0.0
            for j in range(f):
                dot += dy[s, j] * y[s, j]
            for j in range(f):
                g = y[s, j] * (dy[s, j] - dot)
                dx[s, j] = dx[s, j] + g if acc else g
