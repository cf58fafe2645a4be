"""Element-wise activations, applied in place in producers' epilogues, and softmax."""

import numpy as np

from netc.jit import kernel

NONE, RELU, SIGMOID, TANH = 0, 1, 2, 3
CODES = {None: NONE, "relu": RELU, "sigmoid": SIGMOID, "tanh": TANH}


@kernel
def act_value(z, act):
    if act == RELU:
        return z if z > 0 else z * 0
    if act == SIGMOID:
        # two branches keep exp from overflowing
        if z >= 0:
            return 1 / (1 + np.exp(-z))
        e = np.exp(z)
        return e / (1 + e)
    if act == TANH:
        return np.tanh(z)
    return z


@kernel
def act_grad_from_output(y, act):
    """d act / dz written in terms of the output y = act(z)."""
    if act == RELU:
        return 1 if y > 0 else 0
    if act == SIGMOID:
        return y * (1 - y)
    if act == TANH:
        return 1 - y * y
    return 1


@kernel
def act_forward(x, y, act):
    """y = act(x); x, y flat (size,)."""
    for i in range(x.size):
        y[i] = act_value(x[i], act)


@kernel
def act_inplace(y, act):
    """y = act(y); y flat."""
    if act == NONE:
        return
    for i in range(y.size):
        y[i] = act_value(y[i], act)


@kernel
def act_backward_inplace(dy, y, act):
    """dy *= act'(z), with y = act(z); both flat. Fuses the activation's backward into the incoming gradient."""
    if act == NONE:
        return
    for i in range(dy.size):
        dy[i] *= act_grad_from_output(y[i], act)


@kernel
def act_backward(dy, y, dx, act, acc):
    """dx (+)= dy * act'(z); all flat."""
    for i in range(dy.size):
        g = dy[i] * act_grad_from_output(y[i], act)
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
            total += np.exp(x[s, j] - m)
        if log:
            lse = m + np.log(total)
            for j in range(f):
                y[s, j] = x[s, j] - lse
        else:
            for j in range(f):
                y[s, j] = np.exp(x[s, j] - m) / total


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
