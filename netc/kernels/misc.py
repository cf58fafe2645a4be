"""Data movement and merging: copy, add, concat, dropout, staging of batches."""

import numpy as np

from netc.jit import kernel


@kernel
def grad_pass(dy, dx, acc):
    """dx (+)= dy; both flat. The backward of identity-like ops and of each input of add."""
    for i in range(dy.size):
        dx[i] = dx[i] + dy[i] if acc else dy[i]


@kernel
def add_forward2(a, b, y):
    # all flat (n * size,)
    for i in range(y.size):
        y[i] = a[i] + b[i]


@kernel
def sub_forward(a, b, y):
    # all flat (n * size,)
    for i in range(y.size):
        y[i] = a[i] - b[i]


@kernel
def grad_negated(dy, dx, acc):
    """dx (+)= -dy; both flat. The backward of sub's second input."""
    for i in range(dy.size):
        dx[i] = dx[i] - dy[i] if acc else -dy[i]


@kernel
def add_into(a, y):
    for i in range(y.size):
        y[i] += a[i]


@kernel
def mul_forward2(a, b, y):
    # all flat; a, b the batch's rows (y may be a longer scratch)
    for i in range(a.size):
        y[i] = a[i] * b[i]


@kernel
def mul_into(a, y):
    for i in range(a.size):
        y[i] *= a[i]


@kernel
def mul_grad(dy, x, dx, acc):
    """dx (+)= dy * x: the gradient of one input of mul, x the product of the others; all flat."""
    for i in range(dy.size):
        dx[i] = dx[i] + dy[i] * x[i] if acc else dy[i] * x[i]


@kernel
def slice_forward(x, y, start):
    # x (n, A, B, C), y (n, A, L, C): y[:, :, l] = x[:, :, start + l] (slice and select)
    n, outer, length, inner = y.shape
    for s in range(n):
        for a in range(outer):
            for i in range(length):
                for c in range(inner):
                    y[s, a, i, c] = x[s, a, start + i, c]


@kernel
def slice_backward(dy, dx, start, acc):
    # dx (n, A, B, C) (+)= dy (n, A, L, C) placed at positions start .. start + L - 1 of axis B (zeros elsewhere)
    n, outer, length, inner = dy.shape
    if not acc:
        for s in range(n):
            for a in range(outer):
                for b in range(dx.shape[2]):
                    for c in range(inner):
                        dx[s, a, b, c] = 0.0
    for s in range(n):
        for a in range(outer):
            for i in range(length):
                for c in range(inner):
                    dx[s, a, start + i, c] += dy[s, a, i, c]


@kernel
def concat_forward(x, y, offset):
    # x (n, outer_x?, ...) viewed as (n, A, Bx) and y as (n, A, By): copies x into y[:, :, offset:offset+Bx]
    n, outer, inner = x.shape
    for s in range(n):
        for a in range(outer):
            for j in range(inner):
                y[s, a, offset + j] = x[s, a, j]


@kernel
def concat_backward(dy, dx, offset, acc):
    n, outer, inner = dx.shape
    for s in range(n):
        for a in range(outer):
            for j in range(inner):
                g = dy[s, a, offset + j]
                dx[s, a, j] = dx[s, a, j] + g if acc else g


@kernel
def dropout_forward(x, y, mask, p, training):
    # all flat; mask holds 0 or 1/(1-p) for the backward
    if not training or p == 0:
        for i in range(x.size):
            y[i] = x[i]
            mask[i] = 1
        return
    scale = 1 / (1 - p)
    for i in range(x.size):
        keep = np.random.random() >= p
        mask[i] = scale if keep else 0
        y[i] = x[i] * mask[i]


@kernel
def dropout_backward(dy, mask, dx, acc):
    for i in range(dy.size):
        g = dy[i] * mask[i]
        dx[i] = dx[i] + g if acc else g


@kernel
def stage_rows(src, order, start, n, dst):
    """dst[i] = src[order[start + i]] for i < n; src (N, size), dst (n, size)."""
    for i in range(n):
        row = order[start + i]
        for j in range(src.shape[1]):
            dst[i, j] = src[row, j]


@kernel
def copy_rows(src, dst, start):
    """dst[start + i] = src[i]; src (n, size), dst (N, size)."""
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[start + i, j] = src[i, j]


@kernel
def stage_labels(src, order, start, n, dst):
    for i in range(n):
        dst[i] = src[order[start + i]]


@kernel
def seed_rng(seed):
    np.random.seed(seed)
