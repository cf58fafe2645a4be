"""Batch normalization over (n, C, S) views: S is 1 for feature vectors, L for sequences, H*W for maps."""

import numpy as np

from netc.jit import kernel


@kernel
def batchnorm_forward(x, y, gamma, beta, affine, mean, invstd, running_mean, running_var, counter, momentum, eps,
                      training):
    # x, y (n, C, S)  gamma, beta (C,) (empty without affine)  mean, invstd (C,): the statistics used,
    # kept for the backward. Training: the batch's (biased variance), and the running ones updated as
    # PyTorch does (unbiased variance, `momentum` the weight of the new value); evaluation: the running ones.
    n, c, s = x.shape
    m = n * s
    if training:
        for ch in range(c):
            total = 0.0
            for i in range(n):
                for j in range(s):
                    total += x[i, ch, j]
            mu = total / m
            squares = 0.0
            for i in range(n):
                for j in range(s):
                    d = x[i, ch, j] - mu
                    squares += d * d
            mean[ch] = mu
            invstd[ch] = 1.0 / np.sqrt(squares / m + eps)
            unbiased = squares / (m - 1) if m > 1 else squares
            running_mean[ch] = (1.0 - momentum) * running_mean[ch] + momentum * mu
            running_var[ch] = (1.0 - momentum) * running_var[ch] + momentum * unbiased
        counter[0] += 1
    else:
        for ch in range(c):
            mean[ch] = running_mean[ch]
            invstd[ch] = 1.0 / np.sqrt(running_var[ch] + eps)
    for i in range(n):
        for ch in range(c):
            scale = invstd[ch] * gamma[ch] if affine else invstd[ch]
            shift = beta[ch] - mean[ch] * scale if affine else -mean[ch] * scale
            for j in range(s):
                y[i, ch, j] = x[i, ch, j] * scale + shift


@kernel
def batchnorm_backward(x, dy, dx, gamma, dgamma, dbeta, affine, mean, invstd, training, need_dx, acc_dx, need_dw,
                       acc_dw):
    # x, dy, dx (n, C, S)  gamma, dgamma, dbeta (C,)  mean, invstd (C,) as the forward used them.
    # Training: the batch statistics depend on x too, so dx = g/std/m (m dy - sum dy - xhat sum dy xhat);
    # evaluation: an affine map, dx = g/std dy.
    n, c, s = x.shape
    m = n * s
    for ch in range(c):
        sum_dy = 0.0
        sum_dy_xhat = 0.0
        for i in range(n):
            for j in range(s):
                sum_dy += dy[i, ch, j]
                sum_dy_xhat += dy[i, ch, j] * (x[i, ch, j] - mean[ch]) * invstd[ch]
        if need_dw and affine:
            dgamma[ch] = dgamma[ch] + sum_dy_xhat if acc_dw else sum_dy_xhat
            dbeta[ch] = dbeta[ch] + sum_dy if acc_dw else sum_dy
        if need_dx:
            g = gamma[ch] * invstd[ch] if affine else invstd[ch]
            for i in range(n):
                for j in range(s):
                    if training:
                        xhat = (x[i, ch, j] - mean[ch]) * invstd[ch]
                        value = g * (dy[i, ch, j] - (sum_dy + xhat * sum_dy_xhat) / m)
                    else:
                        value = g * dy[i, ch, j]
                    dx[i, ch, j] = dx[i, ch, j] + value if acc_dx else value
