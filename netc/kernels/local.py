"""local2d: a locally connected layer, a convolution whose weights are not shared across positions.

Layouts: x (n, C, H, W); w (OH, OW, F, K) with K = C*KH*KW in (c, ki, kj) order, the weights of
output position (i, j) are a linear layer's [F, K] over that position's patch; b (F*OH*OW,) flat
(an absent bias is an empty array of the same type); y, dy (n, F, OH, OW). No padding ('valid').

Plain loops: each weight is read once per sample (a position's product is a small [F, K] by [K, n]
GEMM), so the layer is bound by reading its weights; a BLAS path per position would pay only for
large batches. First writes of dx, dw, db assign (acc_* false), later ones add.
"""

from netc.jit import kernel
from netc.kernels.activation import act_chain, act_value


@kernel
def local_forward(x, w, b, has_bias, y, act, alpha, KH, KW, SH, SW):
    # y[s, f, i, j] = act(sum_k w[i, j, f, k] * patch(s, i, j)[k] + b[f, i, j])
    # x (n, C, H, W)  w (OH, OW, F, K)  b (F*OH*OW,)  y (n, F, OH, OW)
    n, channels = x.shape[0], x.shape[1]
    out_h, out_w, filters = w.shape[0], w.shape[1], w.shape[2]
    for s in range(n):
        for i in range(out_h):
            for j in range(out_w):
                top, left = i * SH, j * SW
                for f in range(filters):
                    z = b[(f * out_h + i) * out_w + j] if has_bias else 0.0
                    k = 0
                    for c in range(channels):
                        for ki in range(KH):
                            for kj in range(KW):
                                z += w[i, j, f, k] * x[s, c, top + ki, left + kj]
                                k += 1
                    y[s, f, i, j] = act_value(z, act, alpha)


@kernel
def local_backward(x, w, y, dy, act, alpha, dx, need_dx, acc_dx, dw, db, need_dw, acc_dw, has_bias, KH, KW, SH,
                   SW):
    # x (n, C, H, W)  w, dw (OH, OW, F, K)  y, dy (n, F, OH, OW)  dx (n, C, H, W)  db (F*OH*OW,)
    # acc_*: add to the gradient, not assign. dy becomes the gradient before the activation (in place).
    n, channels = x.shape[0], x.shape[1]
    out_h, out_w, filters = w.shape[0], w.shape[1], w.shape[2]
    if act != 0:
        for s in range(n):
            for f in range(filters):
                for i in range(out_h):
                    for j in range(out_w):
                        dy[s, f, i, j] = act_chain(dy[s, f, i, j], y[s, f, i, j], act, alpha)
    if need_dw:
        for i in range(out_h):
            for j in range(out_w):
                top, left = i * SH, j * SW
                for f in range(filters):
                    if has_bias:
                        total = 0.0
                        for s in range(n):
                            total += dy[s, f, i, j]
                        at = (f * out_h + i) * out_w + j
                        db[at] = db[at] + total if acc_dw else total
                    k = 0
                    for c in range(channels):
                        for ki in range(KH):
                            for kj in range(KW):
                                total = 0.0
                                for s in range(n):
                                    total += dy[s, f, i, j] * x[s, c, top + ki, left + kj]
                                dw[i, j, f, k] = dw[i, j, f, k] + total if acc_dw else total
                                k += 1
    if need_dx:
        if not acc_dx:  # windows overlap (stride < kernel) or skip cells (stride > kernel): clear, then add
            dx[:] = 0.0
        for s in range(n):
            for i in range(out_h):
                for j in range(out_w):
                    top, left = i * SH, j * SW
                    for f in range(filters):
                        g = dy[s, f, i, j]
                        k = 0
                        for c in range(channels):
                            for ki in range(KH):
                                for kj in range(KW):
                                    dx[s, c, top + ki, left + kj] += g * w[i, j, f, k]
                                    k += 1
