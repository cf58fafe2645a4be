"""Recurrent layers (PyTorch's nn.RNN with tanh, nn.LSTM, nn.GRU; one layer, one direction, zero
initial state), run as a loop over the time steps: the plan calls one kernel per layer whatever
the sequence length T, so a longer sequence compiles no slower.

`cell`: 0 Elman RNN (G = 1 gate), 1 LSTM (G = 4: i, f, g, o), 2 GRU (G = 3: r, z, n), PyTorch's
gate order. Layouts (row-major, one row per sample; n the batch, F features, H hidden units):

    x, dx          (n, T*F)   step t of sample s at x[s, t*F:(t+1)*F]
    w_ih, dw_ih    (G*H, F)   w_hh, dw_hh (G*H, H)   b_ih, b_hh (G*H,) (empty without bias)
    hs             (n, T*H)   kept: the hidden state after each step
    gates          (n, T*G*H) kept: each gate after its nonlinearity
    cs             (n, T*H)   kept: LSTM the cell state c_t; GRU W_hn h_(t-1) + b_hn; RNN unused
    y, dy          (n, T*H) with `sequences` (every step's state), (n, H) without (the last one)
    hh             (>= n, G*H) forward scratch: h_(t-1) W_hh^T
    da_ih, da_hh   (>= n, T*G*H) backward scratch: gradients of the gates' pre-activations from
                   the input side and the hidden side (they differ only in a GRU's n gate)
    dh, dc         (>= n, H) backward scratch: the gradient flowing into h_(t-1), c_(t-1)

Matrix products are BLAS GEMMs (netc.kernels.blas.gemm) over the whole batch: x W_ih^T once for
every step, h_(t-1) W_hh^T per step (a block of hs addressed by its row stride T*H), and in the
backward dx, dW_ih once, dW_hh and the gradient into h_(t-1) per step.
"""

import numpy as np

from netc.jit import kernel
from netc.kernels.blas import gemm

RNN, LSTM, GRU = 0, 1, 2


@kernel
def recurrent_forward(x, w_ih, w_hh, b_ih, b_hh, has_bias, hs, gates, cs, hh, y, cell, steps, sequences):
    n = x.shape[0]
    gh, fan_in = w_ih.shape
    hidden = w_hh.shape[1]
    # gates (n*T, GH) = x (n*T, F) @ w_ih^T: the input side of every step at once
    gemm(False, True, n * steps, gh, fan_in, x, 0, fan_in, w_ih, 0, fan_in, 0.0, gates, 0, gh)
    for t in range(steps):
        if t > 0:  # hh (n, GH) = h_(t-1) (n, H; row stride T*H) @ w_hh^T
            gemm(False, True, n, gh, hidden, hs, (t - 1) * hidden, steps * hidden, w_hh, 0, hidden, 0.0, hh, 0, gh)
        for s in range(n):
            base = t * gh
            for j in range(hidden):
                # pre-activations of gate k of unit j: input side a_i[k], hidden side a_h[k]
                if cell == RNN:
                    a = gates[s, base + j] + (hh[s, j] if t > 0 else 0.0)
                    if has_bias:
                        a += b_ih[j] + b_hh[j]
                    h = np.tanh(a)
                    gates[s, base + j] = h
                elif cell == LSTM:
                    ai = gates[s, base + j]
                    af = gates[s, base + hidden + j]
                    ag = gates[s, base + 2 * hidden + j]
                    ao = gates[s, base + 3 * hidden + j]
                    if t > 0:
                        ai += hh[s, j]
                        af += hh[s, hidden + j]
                        ag += hh[s, 2 * hidden + j]
                        ao += hh[s, 3 * hidden + j]
                    if has_bias:
                        ai += b_ih[j] + b_hh[j]
                        af += b_ih[hidden + j] + b_hh[hidden + j]
                        ag += b_ih[2 * hidden + j] + b_hh[2 * hidden + j]
                        ao += b_ih[3 * hidden + j] + b_hh[3 * hidden + j]
                    i = 1.0 / (1.0 + np.exp(-ai))
                    f = 1.0 / (1.0 + np.exp(-af))
                    g = np.tanh(ag)
                    o = 1.0 / (1.0 + np.exp(-ao))
                    c_prev = cs[s, (t - 1) * hidden + j] if t > 0 else 0.0
                    c = f * c_prev + i * g
                    h = o * np.tanh(c)
                    gates[s, base + j] = i
                    gates[s, base + hidden + j] = f
                    gates[s, base + 2 * hidden + j] = g
                    gates[s, base + 3 * hidden + j] = o
                    cs[s, t * hidden + j] = c
                else:  # GRU: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h = (1 - z) n + z h_prev
                    ar = gates[s, base + j]
                    az = gates[s, base + hidden + j]
                    an = gates[s, base + 2 * hidden + j]
                    hn = 0.0
                    if t > 0:
                        ar += hh[s, j]
                        az += hh[s, hidden + j]
                        hn = hh[s, 2 * hidden + j]
                    if has_bias:
                        ar += b_ih[j] + b_hh[j]
                        az += b_ih[hidden + j] + b_hh[hidden + j]
                        an += b_ih[2 * hidden + j]
                        hn += b_hh[2 * hidden + j]
                    r = 1.0 / (1.0 + np.exp(-ar))
                    z = 1.0 / (1.0 + np.exp(-az))
                    nn = np.tanh(an + r * hn)
                    h_prev = hs[s, (t - 1) * hidden + j] if t > 0 else 0.0
                    h = (1.0 - z) * nn + z * h_prev
                    gates[s, base + j] = r
                    gates[s, base + hidden + j] = z
                    gates[s, base + 2 * hidden + j] = nn
                    cs[s, t * hidden + j] = hn
                hs[s, t * hidden + j] = h
                if sequences:
                    y[s, t * hidden + j] = h
                elif t == steps - 1:
                    y[s, j] = h


@kernel
def recurrent_backward(x, w_ih, w_hh, hs, gates, cs, dy, dx, need_dx, acc_dx, dw_ih, dw_hh, db_ih, db_hh, has_bias,
                       need_dw, acc_dw, da_ih, da_hh, dh, dc, cell, steps, sequences):
    n = x.shape[0]
    gh, fan_in = w_ih.shape
    hidden = w_hh.shape[1]
    for s in range(n):
        for j in range(hidden):
            dh[s, j] = 0.0
            dc[s, j] = 0.0
    for t in range(steps - 1, -1, -1):
        base = t * gh
        for s in range(n):
            for j in range(hidden):
                # the gradient into h_t: from the output at step t, and from step t + 1 (in dh)
                g_h = dh[s, j]
                if sequences:
                    g_h += dy[s, t * hidden + j]
                elif t == steps - 1:
                    g_h += dy[s, j]
                if cell == RNN:
                    h = gates[s, base + j]
                    da = g_h * (1.0 - h * h)
                    da_ih[s, base + j] = da
                    da_hh[s, base + j] = da
                    dh[s, j] = 0.0
                elif cell == LSTM:
                    i = gates[s, base + j]
                    f = gates[s, base + hidden + j]
                    g = gates[s, base + 2 * hidden + j]
                    o = gates[s, base + 3 * hidden + j]
                    c = cs[s, t * hidden + j]
                    c_prev = cs[s, (t - 1) * hidden + j] if t > 0 else 0.0
                    tc = np.tanh(c)
                    g_c = dc[s, j] + g_h * o * (1.0 - tc * tc)
                    dai = g_c * g * i * (1.0 - i)
                    daf = g_c * c_prev * f * (1.0 - f)
                    dag = g_c * i * (1.0 - g * g)
                    dao = g_h * tc * o * (1.0 - o)
                    da_ih[s, base + j] = dai
                    da_ih[s, base + hidden + j] = daf
                    da_ih[s, base + 2 * hidden + j] = dag
                    da_ih[s, base + 3 * hidden + j] = dao
                    da_hh[s, base + j] = dai
                    da_hh[s, base + hidden + j] = daf
                    da_hh[s, base + 2 * hidden + j] = dag
                    da_hh[s, base + 3 * hidden + j] = dao
                    dc[s, j] = g_c * f
                    dh[s, j] = 0.0
                else:  # GRU
                    r = gates[s, base + j]
                    z = gates[s, base + hidden + j]
                    nn = gates[s, base + 2 * hidden + j]
                    hn = cs[s, t * hidden + j]
                    h_prev = hs[s, (t - 1) * hidden + j] if t > 0 else 0.0
                    dan = g_h * (1.0 - z) * (1.0 - nn * nn)
                    daz = g_h * (h_prev - nn) * z * (1.0 - z)
                    dar = dan * hn * r * (1.0 - r)
                    da_ih[s, base + j] = dar
                    da_ih[s, base + hidden + j] = daz
                    da_ih[s, base + 2 * hidden + j] = dan
                    da_hh[s, base + j] = dar
                    da_hh[s, base + hidden + j] = daz
                    da_hh[s, base + 2 * hidden + j] = dan * r
                    dh[s, j] = g_h * z  # h_t = ... + z h_(t-1)
        if t > 0:  # dh (n, H) += da_hh_t (n, GH; row stride T*GH) @ w_hh
            gemm(False, False, n, hidden, gh, da_hh, base, steps * gh, w_hh, 0, hidden, 1.0, dh, 0, hidden)
    if need_dw:
        if not acc_dw:
            for k in range(gh):
                for i in range(fan_in):
                    dw_ih[k, i] = 0.0
                for i in range(hidden):
                    dw_hh[k, i] = 0.0
                if has_bias:
                    db_ih[k] = 0.0
                    db_hh[k] = 0.0
        # dw_ih (GH, F) += da_ih (n*T, GH)^T @ x (n*T, F)
        gemm(True, False, gh, fan_in, n * steps, da_ih, 0, gh, x, 0, fan_in, 1.0, dw_ih, 0, fan_in)
        for t in range(1, steps):  # dw_hh (GH, H) += da_hh_t^T @ h_(t-1)
            gemm(True, False, gh, hidden, n, da_hh, t * gh, steps * gh, hs, (t - 1) * hidden, steps * hidden, 1.0,
                 dw_hh, 0, hidden)
        if has_bias:
            for k in range(gh):
                total_ih = 0.0
                total_hh = 0.0
                for s in range(n):
                    for t in range(steps):
                        total_ih += da_ih[s, t * gh + k]
                        total_hh += da_hh[s, t * gh + k]
                db_ih[k] += total_ih
                db_hh[k] += total_hh
    if need_dx:  # dx (n*T, F) (+)= da_ih (n*T, GH) @ w_ih
        gemm(False, False, n * steps, fan_in, gh, da_ih, 0, gh, w_ih, 0, fan_in, 1.0 if acc_dx else 0.0, dx, 0, fan_in)
