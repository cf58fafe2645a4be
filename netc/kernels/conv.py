"""conv2d by im2col + GEMM per sample, and max/avg pooling.

Geometry args: C, H, W input; KH, KW kernel; SH, SW stride; PH, PW padding; OH, OW output.
"""

import numpy as np

from netc.jit import kernel
from netc.kernels.activation import act_grad_from_output, act_value


@kernel
def im2col(x, col, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    # x (C, H, W) -> col (C*KH*KW, OH*OW); padding cells are zero
    for c in range(C):
        for ki in range(KH):
            for kj in range(KW):
                row = (c * KH + ki) * KW + kj
                for oi in range(OH):
                    ii = oi * SH - PH + ki
                    for oj in range(OW):
                        jj = oj * SW - PW + kj
                        if 0 <= ii < H and 0 <= jj < W:
                            col[row, oi * OW + oj] = x[c, ii, jj]
                        else:
                            col[row, oi * OW + oj] = 0


@kernel
def col2im_add(col, dx, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    # col (C*KH*KW, OH*OW) scattered and summed into dx (C, H, W)
    for c in range(C):
        for ki in range(KH):
            for kj in range(KW):
                row = (c * KH + ki) * KW + kj
                for oi in range(OH):
                    ii = oi * SH - PH + ki
                    if ii < 0 or ii >= H:
                        continue
                    for oj in range(OW):
                        jj = oj * SW - PW + kj
                        if 0 <= jj < W:
                            dx[c, ii, jj] += col[row, oi * OW + oj]


@kernel
def conv_forward(x, w, b, has_bias, y, col, act, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    # x (n, C, H, W)  w (F, C*KH*KW)  b (F,)  y (n, F, OH*OW)  col (C*KH*KW, OH*OW)
    n = x.shape[0]
    filters = w.shape[0]
    for s in range(n):
        im2col(x[s], col, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW)
        ys = y[s]
        np.dot(w, col, ys)
        for f in range(filters):
            for p in range(OH * OW):
                z = ys[f, p] + b[f] if has_bias else ys[f, p]
                ys[f, p] = act_value(z, act)


@kernel
def conv_backward(x, w, y, dy, act, dx, need_dx, acc_dx, dw, db, need_dw, acc_dw, has_bias, col, dcol, tmp_w,
                  C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    # x (n, C, H, W)  w, dw, tmp_w (F, C*KH*KW)  y, dy (n, F, OH*OW)  dx (n, C, H, W)  col, dcol (C*KH*KW, OH*OW)
    n = x.shape[0]
    filters = w.shape[0]
    if act != 0:
        for s in range(n):
            for f in range(filters):
                for p in range(OH * OW):
                    dy[s, f, p] *= act_grad_from_output(y[s, f, p], act)
    if need_dw:
        if not acc_dw:
            dw[:] = 0
            if has_bias:
                db[:] = 0
    for s in range(n):
        dys = dy[s]
        if need_dw:
            im2col(x[s], col, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW)
            np.dot(dys, col.T, tmp_w)
            dw += tmp_w
            if has_bias:
                for f in range(filters):
                    total = 0.0
                    for p in range(OH * OW):
                        total += dys[f, p]
                    db[f] += total
        if need_dx:
            np.dot(w.T, dys, dcol)
            if not acc_dx:
                dx[s] = 0
            col2im_add(dcol, dx[s], C, H, W, KH, KW, SH, SW, PH, PW, OH, OW)


@kernel
def maxpool_forward(x, y, arg, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    # x (n, C, H, W)  y (n, C, OH, OW)  arg (n, C, OH, OW): flat index into (H, W) of each maximum
    n = x.shape[0]
    for s in range(n):
        for c in range(C):
            for oi in range(OH):
                for oj in range(OW):
                    best = -np.inf
                    where = -1
                    for ki in range(KH):
                        ii = oi * SH - PH + ki
                        if ii < 0 or ii >= H:
                            continue
                        for kj in range(KW):
                            jj = oj * SW - PW + kj
                            if 0 <= jj < W and (where < 0 or x[s, c, ii, jj] > best):
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
