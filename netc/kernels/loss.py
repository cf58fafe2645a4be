"""Losses, averaged over the batch. Each returns (mean loss, correct predictions) and,
when need_grad, writes the gradient of the mean loss into its input's gradient buffer, times
`weight` (1.0: as it is; a weighted loss's own buffer is scaled after, by scale_gradient), or adds
`weight` times it there (`acc`: another loss of the spec wrote that buffer first)."""

import numpy as np

from netc.jit import helper, kernel
from netc.kernels.fastexp import libm_exp


@helper
def _argmax_row(z, s):
    best = 0
    for j in range(1, z.shape[1]):
        if z[s, j] > z[s, best]:
            best = j
    return best


@helper
def _put(d, s, j, g, weight, acc):
    # the loss's share of the gradient: weight 1.0 leaves g as it is (a single loss's plan)
    if acc:
        d[s, j] += g * weight
    else:
        d[s, j] = g * weight


@kernel(vector_division=True)
def cross_entropy(z, labels, dz, need_grad, weight, acc):
    # z (n, K) logits, labels (n,) int64, dz (n, K): softmax(z) - onehot, over n
    # Without acc, dz holds each row's exponentials between the two passes: the same values as
    # computing them again (half the exps of a step of a small classifier), so the same numbers.
    # The row's maximum and its first index in one pass (max(m, v) keeps m unless v > m, as
    # _argmax_row does); numpy's division model (norm >= 1 and n >= 1 never divide by zero) lets
    # the gradient's divisions vectorise, to the same bits.
    n, k = z.shape
    total = 0.0
    correct = 0
    keep = need_grad and not acc
    for s in range(n):
        m = z[s, 0]
        best = 0
        for j in range(1, k):
            if z[s, j] > m:
                m = z[s, j]
                best = j
        norm = 0.0
        for j in range(k):
            e = libm_exp(z[s, j] - m)
            if keep:
                dz[s, j] = e
            norm += e
        label = labels[s]
        total += m + np.log(norm) - z[s, label]
        if best == label:
            correct += 1
        if keep:  # a loop of its own, with no call in it: it vectorises
            for j in range(k):
                dz[s, j] = (dz[s, j] / norm - (1.0 if j == label else 0.0)) / n * weight
        elif need_grad:
            for j in range(k):
                p = libm_exp(z[s, j] - m) / norm
                _put(dz, s, j, (p - (1.0 if j == label else 0.0)) / n, weight, acc)
    return total / n, correct


@kernel
def mse(y, t, dy, need_grad, weight, acc):
    # y, t (n, F): loss = mean over samples of 1/2 * sum_j (y - t)^2; no accuracy
    n, f = y.shape
    total = 0.0
    for s in range(n):
        for j in range(f):
            d = y[s, j] - t[s, j]
            total += 0.5 * d * d
            if need_grad:
                _put(dy, s, j, d / n, weight, acc)
    return total / n, 0


@kernel
def mse_onehot(y, labels, dy, need_grad, weight, acc):
    # y (n, K), integer labels one-hot encoded
    n, k = y.shape
    total = 0.0
    correct = 0
    for s in range(n):
        label = labels[s]
        if _argmax_row(y, s) == label:
            correct += 1
        for j in range(k):
            d = y[s, j] - (1.0 if j == label else 0.0)
            total += 0.5 * d * d
            if need_grad:
                _put(dy, s, j, d / n, weight, acc)
    return total / n, correct


@kernel
def confusion_add(scores, labels, confusion):
    # confusion[true, predicted] += 1 for each row of scores (n, K)
    for s in range(scores.shape[0]):
        confusion[labels[s], _argmax_row(scores, s)] += 1


@kernel
def scale_gradient(dz, factor):
    """Multiply a loss's gradient by the loss's weight (a spec with several weighted losses)."""
    n, k = dz.shape
    for s in range(n):
        for j in range(k):
            dz[s, j] *= factor


@kernel
def weighted_total(values, weights):
    """The weighted sum of the losses' values (a tuple) with their weights (a slice of H)."""
    total = 0.0
    for i in range(len(values)):
        total += weights[i] * values[i]
    return total
