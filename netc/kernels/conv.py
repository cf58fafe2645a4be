"""conv2d by im2col + GEMM per sample, and max/avg pooling.

Geometry args: C, H, W input; KH, KW kernel; SH, SW stride; PH, PW padding; OH, OW output.
"""

import numpy as np

from netc.jit import kernel
from netc.kernels.activation import act_grad_from_output, act_value


@kernel
def im2row(x, cols, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    # x (n, C, H, W) -> cols (n*OH*OW, C*KH*KW): one row per output position of every sample; padding is zero
    n = x.shape[0]
    inside = PH == 0 and PW == 0  # no padding: every window lies inside the image, no bounds checks
    for s in range(n):
        for oi in range(OH):
            for oj in range(OW):
                row = (s * OH + oi) * OW + oj
                i0 = oi * SH - PH
                j0 = oj * SW - PW
                r = 0
                for c in range(C):
                    for ki in range(KH):
                        ii = i0 + ki
                        if inside:
                            for kj in range(KW):
                                cols[row, r + kj] = x[s, c, ii, j0 + kj]
                        else:
                            for kj in range(KW):
                                jj = j0 + kj
                                cols[row, r + kj] = x[s, c, ii, jj] if 0 <= ii < H and 0 <= jj < W else 0
                        r += KW


@kernel
def row2im_add(cols, dx, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    # cols (n*OH*OW, C*KH*KW) scattered and summed into dx (n, C, H, W)
    n = dx.shape[0]
    inside = PH == 0 and PW == 0
    for s in range(n):
        for oi in range(OH):
            for oj in range(OW):
                row = (s * OH + oi) * OW + oj
                i0 = oi * SH - PH
                j0 = oj * SW - PW
                r = 0
                for c in range(C):
                    for ki in range(KH):
                        ii = i0 + ki
                        if inside:
                            for kj in range(KW):
                                dx[s, c, ii, j0 + kj] += cols[row, r + kj]
                        elif 0 <= ii < H:
                            for kj in range(KW):
                                jj = j0 + kj
                                if 0 <= jj < W:
                                    dx[s, c, ii, jj] += cols[row, r + kj]
                        r += KW


@kernel
def conv_forward(x, w, b, has_bias, y, cols, yt, act, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    # x (n, C, H, W)  w (F, C*KH*KW)  b (F,)  y (n, F, OH*OW)
    # cols (n*OH*OW, C*KH*KW), yt (n*OH*OW, F): the whole batch in one GEMM, yt = cols @ w.T
    n = x.shape[0]
    filters = w.shape[0]
    positions = OH * OW
    im2row(x, cols, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW)
    np.dot(cols, w.T, yt)
    for s in range(n):
        for p in range(positions):
            row = s * positions + p
            for f in range(filters):
                z = yt[row, f] + b[f] if has_bias else yt[row, f]
                y[s, f, p] = act_value(z, act)


@kernel
def conv_backward(x, w, y, dy, act, dx, need_dx, acc_dx, dw, db, need_dw, acc_dw, has_bias, cols, dyt, tmp_w,
                  C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    # x (n, C, H, W)  w, dw, tmp_w (F, C*KH*KW)  y, dy (n, F, OH*OW)  dx (n, C, H, W)
    # cols (n*OH*OW, C*KH*KW) holds im2row(x), then the column gradients; dyt (n*OH*OW, F)
    n = x.shape[0]
    filters = w.shape[0]
    positions = OH * OW
    for s in range(n):  # activation backward fused into the transposed copy of the gradient
        for f in range(filters):
            for p in range(positions):
                g = dy[s, f, p] * act_grad_from_output(y[s, f, p], act) if act != 0 else dy[s, f, p]
                dyt[s * positions + p, f] = g
    if need_dw:
        if has_bias:
            for f in range(filters):
                total = 0.0
                for row in range(n * positions):
                    total += dyt[row, f]
                db[f] = db[f] + total if acc_dw else total
        im2row(x, cols, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW)
        if acc_dw:
            np.dot(dyt.T, cols, tmp_w)
            dw += tmp_w
        else:
            np.dot(dyt.T, cols, dw)
    if need_dx:
        np.dot(dyt, w, cols)
        if not acc_dx:
            dx[:] = 0
        row2im_add(cols, dx, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW)


@kernel
def maxpool_forward(x, y, arg, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    # x (n, C, H, W)  y (n, C, OH, OW)  arg (n, C, OH, OW): flat index into (H, W) of each maximum
    n = x.shape[0]
    for s in range(n):
        for c in range(C):
            for oi in range(OH):
                i0 = max(oi * SH - PH, 0)
                i1 = min(oi * SH - PH + KH, H)
                for oj in range(OW):
                    j0 = max(oj * SW - PW, 0)
                    j1 = min(oj * SW - PW + KW, W)
                    best = x[s, c, i0, j0]  # the first cell of the window inside the image
                    where = i0 * W + j0
                    for ii in range(i0, i1):
                        for jj in range(j0, j1):
                            if x[s, c, ii, jj] > best:
                                best = x[s, c, ii, jj]
                                where = ii * W + jj
                    y[s, c, oi, oj] = best
                    arg[s, c, oi, oj] = where


@kernel
def maxpool_backward(dy, arg, dx, acc, C, H, W, OH, OW):
    # dy, arg (n, C, OH, OW)  dx (n, C, H, W): each output's gradient goes to its maximum
    n = dy.shape[0]
    if not acc:
        dx[:n] = 0
    for s in range(n):
        for c in range(C):
            for oi in range(OH):
                for oj in range(OW):
                    where = arg[s, c, oi, oj]
                    dx[s, c, where // W, where % W] += dy[s, c, oi, oj]


@kernel
def avgpool_forward(x, y, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    # x (n, C, H, W)  y (n, C, OH, OW); padding cells are not counted
    n = x.shape[0]
    for s in range(n):
        for c in range(C):
            for oi in range(OH):
                for oj in range(OW):
                    total = 0.0
                    count = 0
                    for ki in range(KH):
                        ii = oi * SH - PH + ki
                        if ii < 0 or ii >= H:
                            continue
                        for kj in range(KW):
                            jj = oj * SW - PW + kj
                            if 0 <= jj < W:
                                total += x[s, c, ii, jj]
                                count += 1
                    y[s, c, oi, oj] = total / count


@kernel
def avgpool_backward(dy, dx, acc, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    n = dy.shape[0]
    if not acc:
        dx[:n] = 0
    for s in range(n):
        for c in range(C):
            for oi in range(OH):
                for oj in range(OW):
                    i0 = max(oi * SH - PH, 0)
                    i1 = min(oi * SH - PH + KH, H)
                    j0 = max(oj * SW - PW, 0)
                    j1 = min(oj * SW - PW + KW, W)
                    share = dy[s, c, oi, oj] / ((i1 - i0) * (j1 - j0))
                    for ii in range(i0, i1):
                        for jj in range(j0, j1):
                            dx[s, c, ii, jj] += share
