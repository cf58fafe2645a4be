"""linear: y = act(x W^T + b). `blas` picks BLAS GEMMs (large) or plain loops (tiny layers, where a BLAS call costs more than the work).
`transposed`: the plan stores W transposed, w (I, O), where that makes the products faster (netc.ops.dense).

In a plan with parallel regions BLAS runs on one thread (netc.compiler.steps.blas_threads), and in
one without them too below 50 M multiply-adds a GEMM, and a large layer's GEMMs left the other cores
idle: seed-cnn's fc1 ([32, 3200] by [3200, 128]) took 0.74 ms a step on one core. The `*_parts`
kernels run each product as `parts` GEMMs over blocks of its output's columns, one per core, in one
parallel region. Under OpenBLAS's AVX-512 (SkylakeX) kernels each output of a packed product is the
same dot product over k in a block as in the whole, the same bits; its AVX2 (Haswell) and small-matrix
kernels sum a block's edges otherwise, so plans split only where the numbers stay (netc.ops.dense._blocks)."""

import numpy as np
from numba import prange

from netc.jit import helper, kernel, parallel_kernel
from netc.kernels.activation import NONE, RELU, act_chain, act_value
from netc.kernels.blas import gemm, gemm_tn


@kernel
def linear_forward(x, w, b, has_bias, y, act, alpha, blas, transposed):
    # x (n, I)  w (O, I), or (I, O) when transposed  b (O,)  y (n, O)
    n, fan_in = x.shape
    out = y.shape[1]
    if blas:
        if transposed:
            gemm(False, False, n, out, fan_in, x, 0, fan_in, w, 0, out, 0.0, y, 0, out)
        else:
            gemm(False, True, n, out, fan_in, x, 0, fan_in, w, 0, fan_in, 0.0, y, 0, out)
        bias_act(y, b, has_bias, act, alpha)
    else:  # the activation applied to z before it is stored (rounded to y's type)
        for s in range(n):
            for o in range(out):
                z = b[o] if has_bias else 0.0
                for i in range(fan_in):
                    z += x[s, i] * (w[i, o] if transposed else w[o, i])
                if act == NONE:
                    y[s, o] = z
                elif act == RELU:
                    y[s, o] = z if z > 0 else z * 0
                else:
                    y[s, o] = act_value(z, act, alpha)


@helper
def bias_act(y, b, add_bias, act, alpha):
    """y = act(y + b) in place, y (n, O). The common epilogues (none, relu) have loops of their own:
    a loop that can reach the other activations' code is not vectorised (2-3x slower epilogues)."""
    n, out = y.shape
    if act == NONE:
        if add_bias:
            for s in range(n):
                for o in range(out):
                    y[s, o] += b[o]
    elif act == RELU:
        for s in range(n):
            for o in range(out):
                z = y[s, o] + b[o] if add_bias else y[s, o]
                y[s, o] = z if z > 0 else z * 0
    else:
        for s in range(n):
            for o in range(out):
                z = y[s, o] + b[o] if add_bias else y[s, o]
                y[s, o] = act_value(z, act, alpha)


@kernel
def linear_backward(x, w, y, dy, act, alpha, dx, need_dx, acc_dx, dw, db, need_dw, acc_dw, has_bias, blas,
                    transposed, small_kernels):
    # x (n, I)  w, dw (O, I), or (I, O) when transposed  y, dy (n, O)  dx (n, I)  db (O,); acc_*: add to the
    # gradient, not assign; small_kernels: OpenBLAS's SkylakeX kernels, the weight gradient in their blocks (gemm_tn)
    n, fan_in = x.shape
    out = dy.shape[1]
    through_act(dy, y, act, alpha)
    if need_dw:
        if has_bias:
            bias_gradient(dy, db, acc_dw, blas)
        if blas and transposed:  # dw^T (+)= x.T @ dy
            gemm_tn(small_kernels, fan_in, out, n, x, 0, fan_in, dy, 0, out, 1.0 if acc_dw else 0.0, dw, 0, out)
        elif blas:  # dw (+)= dy.T @ x
            gemm_tn(small_kernels, out, fan_in, n, dy, 0, out, x, 0, fan_in, 1.0 if acc_dw else 0.0, dw, 0, fan_in)
        else:
            for o in range(out):
                for i in range(fan_in):
                    total = 0.0
                    for s in range(n):
                        total += dy[s, o] * x[s, i]
                    if transposed:
                        dw[i, o] = dw[i, o] + total if acc_dw else total
                    else:
                        dw[o, i] = dw[o, i] + total if acc_dw else total
    if need_dx:
        if blas and transposed:  # dx (+)= dy @ (w^T)^T
            gemm(False, True, n, fan_in, out, dy, 0, out, w, 0, out, 1.0 if acc_dx else 0.0, dx, 0, fan_in)
        elif blas:  # dx (+)= dy @ w
            gemm(False, False, n, fan_in, out, dy, 0, out, w, 0, fan_in, 1.0 if acc_dx else 0.0, dx, 0, fan_in)
        else:
            for s in range(n):
                for i in range(fan_in):
                    total = 0.0
                    for o in range(out):
                        total += dy[s, o] * (w[i, o] if transposed else w[o, i])
                    dx[s, i] = dx[s, i] + total if acc_dx else total


@helper
def through_act(dy, y, act, alpha):
    """dy = dL/dz from dL/dy in place, z the activation's input (y its output)."""
    n, out = dy.shape
    if act != 0:
        for s in range(n):
            for o in range(out):  # the ReLU's code a constant: vectorised (see activation.act_backward)
                dy[s, o] = act_chain(dy[s, o], y[s, o], RELU, alpha) if act == RELU else \
                    act_chain(dy[s, o], y[s, o], act, alpha)


@helper
def bias_gradient(dy, db, acc_dw, vectorised):
    """db (+)= the sum of dy's rows, each output's sum in sample order."""
    n, out = dy.shape
    if vectorised:  # all outputs at once (a tiny layer keeps the loop below: no allocation)
        totals = np.zeros(out)
        for s in range(n):
            for o in range(out):
                totals[o] += dy[s, o]
        for o in range(out):
            db[o] = db[o] + totals[o] if acc_dw else totals[o]
    else:
        for o in range(out):
            total = 0.0
            for s in range(n):
                total += dy[s, o]
            db[o] = db[o] + total if acc_dw else total


@parallel_kernel
def linear_forward_parts(x, w, b, has_bias, y, act, alpha, parts):
    # linear_forward's BLAS product, w (O, I), as `parts` GEMMs over blocks of y's columns
    n, fan_in = x.shape
    out = y.shape[1]
    width = (out + parts - 1) // parts
    for part in prange(parts):
        first = min(out, part * width)
        last = min(out, first + width)
        if last > first:  # y[:, first:last] = x @ w[first:last]^T
            gemm(False, True, n, last - first, fan_in, x, 0, fan_in, w, first * fan_in, fan_in, 0.0, y, first, out)
    bias_act(y, b, has_bias, act, alpha)


@parallel_kernel
def linear_backward_parts(x, w, y, dy, act, alpha, dx, need_dx, acc_dx, dw, db, need_dw, acc_dw, has_bias, parts):
    # linear_backward's BLAS products, w (O, I), as `parts` pairs of GEMMs over blocks of x's columns
    n, fan_in = x.shape
    out = dy.shape[1]
    through_act(dy, y, act, alpha)
    if need_dw and has_bias:
        bias_gradient(dy, db, acc_dw, True)
    width = (fan_in + parts - 1) // parts
    for part in prange(parts):
        first = min(fan_in, part * width)
        last = min(fan_in, first + width)
        if last > first and need_dw:  # dw[:, first:last] (+)= dy^T @ x[:, first:last]
            gemm_tn(True, out, last - first, n, dy, 0, out, x, first, fan_in, 1.0 if acc_dw else 0.0, dw, first,
                    fan_in)  # the plan splits only under the SkylakeX kernels (netc.ops.dense._blocks)
        if last > first and need_dx:  # dx[:, first:last] (+)= dy @ w[:, first:last]
            gemm(False, False, n, last - first, out, dy, 0, out, w, first, fan_in, 1.0 if acc_dx else 0.0, dx, first,
                 fan_in)
