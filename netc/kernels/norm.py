"""Batch normalization over (n, C, S) views: S is 1 for feature vectors, L for sequences, H*W for maps.
Layer normalization over (n, R, D) views: each of a sample's R rows normalised over its D elements."""

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


@kernel
def layernorm_forward(x, y, gamma, beta, affine, mean, invstd, eps):
    # x, y (n, R, D)  gamma, beta (D,) (empty without affine)  mean, invstd (>= n*R,): row r of sample i
    # at i*R + r, kept for the backward. Biased variance, as PyTorch; no running statistics.
    n, r, d = x.shape
    for i in range(n):
        for row in range(r):
            total = 0.0
            for j in range(d):
                total += x[i, row, j]
            mu = total / d
            squares = 0.0
            for j in range(d):
                diff = x[i, row, j] - mu
                squares += diff * diff
            inv = 1.0 / np.sqrt(squares / d + eps)
            k = i * r + row
            mean[k] = mu
            invstd[k] = inv
            for j in range(d):
                xhat = (x[i, row, j] - mu) * inv
                y[i, row, j] = xhat * gamma[j] + beta[j] if affine else xhat


@kernel
def layernorm_backward(x, dy, dx, gamma, dgamma, dbeta, affine, mean, invstd, need_dx, acc_dx, need_dw, acc_dw):
    # x, dy, dx (n, R, D)  gamma, dgamma, dbeta (D,)  mean, invstd (>= n*R,) as the forward kept them.
    # Per row, with g = dy * gamma: dx = invstd (g - mean(g) - xhat mean(g xhat));
    # dgamma = sum over samples and rows of dy xhat, dbeta of dy.
    n, r, d = x.shape
    if need_dw and affine and not acc_dw:
        for j in range(d):
            dgamma[j] = 0.0
            dbeta[j] = 0.0
    for i in range(n):
        for row in range(r):
            k = i * r + row
            mu, inv = mean[k], invstd[k]
            sum_g = 0.0
            sum_g_xhat = 0.0
            for j in range(d):
                xhat = (x[i, row, j] - mu) * inv
                g = dy[i, row, j] * gamma[j] if affine else dy[i, row, j]
                sum_g += g
                sum_g_xhat += g * xhat
                if need_dw and affine:
                    dgamma[j] += dy[i, row, j] * xhat
                    dbeta[j] += dy[i, row, j]
            if need_dx:
                mean_g, mean_g_xhat = sum_g / d, sum_g_xhat / d
                for j in range(d):
                    xhat = (x[i, row, j] - mu) * inv
                    g = dy[i, row, j] * gamma[j] if affine else dy[i, row, j]
                    value = inv * (g - mean_g - xhat * mean_g_xhat)
                    dx[i, row, j] = dx[i, row, j] + value if acc_dx else value
