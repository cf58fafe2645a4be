"""Optimizer updates (PyTorch semantics), applied to one parameter tensor as soon as its gradient is final.
All arrays flat; `state` slices are zero-initialised."""

import numpy as np

from netc.jit import kernel


@kernel
def sgd_update(p, g, velocity, lr, momentum, weight_decay, nesterov):
    for i in range(p.size):
        d = g[i] + weight_decay * p[i]
        if momentum != 0:
            velocity[i] = momentum * velocity[i] + d
            d = d + momentum * velocity[i] if nesterov else velocity[i]
        p[i] -= lr * d


@kernel(vector_division=True)
def rmsprop_update(p, g, square_avg, buf, lr, alpha, eps, momentum, weight_decay):
    for i in range(p.size):
        d = g[i] + weight_decay * p[i]
        square_avg[i] = alpha * square_avg[i] + (1 - alpha) * d * d
        avg = np.sqrt(square_avg[i]) + eps
        if momentum != 0:
            buf[i] = momentum * buf[i] + d / avg
            p[i] -= lr * buf[i]
        else:
            p[i] -= lr * d / avg


@kernel(vector_division=True)
def adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    correction1 = 1 - beta1**step
    correction2 = 1 - beta2**step
    step_size = lr / correction1
    root2 = np.sqrt(correction2)
    for i in range(p.size):
        d = g[i] + weight_decay * p[i]
        m[i] = beta1 * m[i] + (1 - beta1) * d
        v[i] = beta2 * v[i] + (1 - beta2) * d * d
        p[i] -= step_size * m[i] / (np.sqrt(v[i]) / root2 + eps)


@kernel
def clip_grad_norm(g, max_norm):
    """Every parameter gradient (G, flat) scaled by min(1, max_norm / (‖g‖₂ + 1e-6)), PyTorch's
    clip_grad_norm_ over all parameters (a shared tensor once: it has one gradient)."""
    total = 0.0
    for i in range(g.size):
        total += g[i] * g[i]
    coef = max_norm / (np.sqrt(total) + 1e-6)
    if coef < 1.0:
        for i in range(g.size):
            g[i] *= coef


@kernel
def clip_grad_value(g, value):
    """Every parameter gradient clamped to [-value, value] (PyTorch's clip_grad_value_)."""
    for i in range(g.size):
        if g[i] > value:
            g[i] = value
        elif g[i] < -value:
            g[i] = -value
