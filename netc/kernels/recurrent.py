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
backward dx, dW_ih and dW_hh once (one GEMM over every sample and step each) and the gradient
into h_(t-1) per step.

The gate loops are written to vectorise: one loop per cell, no branch inside, the biases added to
every step's input side at once. In float32 the sigmoids and tanh are `sigmoid32`/`tanh32`
(netc.kernels.fastexp: arithmetic only, so a loop of them vectorises; within a few ulp of libm's);
float64 keeps libm's exp and tanh, which the float64 gradchecks rely on.
"""

import numpy as np

from netc.jit import kernel
from netc.kernels.blas import gemm
from netc.kernels.fastexp import gate_sigmoid, gate_tanh

RNN, LSTM, GRU = 0, 1, 2


@kernel
def recurrent_forward(x, w_ih, w_hh, b_ih, b_hh, has_bias, hs, gates, cs, hh, y, cell, steps, sequences):
    n = x.shape[0]
    gh, fan_in = w_ih.shape
    hidden = w_hh.shape[1]
    zero = np.zeros(1, hs.dtype)[0]
    one = np.ones(1, hs.dtype)[0]
    # gates (n*T, GH) = x (n*T, F) @ w_ih^T: the input side of every step at once, with the biases that
    # add to it (all but a GRU's b_hn, which r multiplies: that one goes to the hidden side below)
    gemm(False, True, n * steps, gh, fan_in, x, 0, fan_in, w_ih, 0, fan_in, 0.0, gates, 0, gh)
    both = 2 * hidden if cell == GRU else gh
    if has_bias:
        for s in range(n):
            for t in range(steps):
                for k in range(both):
                    gates[s, t * gh + k] += b_ih[k] + b_hh[k]
                for k in range(both, gh):
                    gates[s, t * gh + k] += b_ih[k]
    for t in range(steps):
        if t > 0:  # hh (n, GH) = h_(t-1) (n, H; row stride T*H) @ w_hh^T
            gemm(False, True, n, gh, hidden, hs, (t - 1) * hidden, steps * hidden, w_hh, 0, hidden, 0.0, hh, 0, gh)
        else:
            for s in range(n):
                for k in range(gh):
                    hh[s, k] = zero
        if cell == GRU and has_bias:
            for s in range(n):
                for j in range(hidden):
                    hh[s, 2 * hidden + j] += b_hh[2 * hidden + j]
        base = t * gh
        now = t * hidden
        before = max(t - 1, 0) * hidden  # read at t = 0 too, and not used there
        first = t == 0
        for s in range(n):
            # rows of this sample and step as slices: loops over them index from 0, which LLVM
            # vectorises (offset indices into the 2-D arrays kept Numba's negative-index checks)
            a = gates[s, base:base + gh]
            b = hh[s, :gh]
            c_before = cs[s, before:before + hidden]
            h_before = hs[s, before:before + hidden]
            c_now = cs[s, now:now + hidden]
            h_now = hs[s, now:now + hidden]
            if cell == LSTM:
                for j in range(hidden):
                    i = gate_sigmoid(a[j] + b[j])
                    f = gate_sigmoid(a[hidden + j] + b[hidden + j])
                    g = gate_tanh(a[2 * hidden + j] + b[2 * hidden + j])
                    o = gate_sigmoid(a[3 * hidden + j] + b[3 * hidden + j])
                    c = f * (zero if first else c_before[j]) + i * g
                    a[j] = i
                    a[hidden + j] = f
                    a[2 * hidden + j] = g
                    a[3 * hidden + j] = o
                    c_now[j] = c
                    h_now[j] = o * gate_tanh(c)
            elif cell == GRU:  # n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h = (1 - z) n + z h_prev
                for j in range(hidden):
                    r = gate_sigmoid(a[j] + b[j])
                    z = gate_sigmoid(a[hidden + j] + b[hidden + j])
                    hn = b[2 * hidden + j]
                    nn = gate_tanh(a[2 * hidden + j] + r * hn)
                    a[j] = r
                    a[hidden + j] = z
                    a[2 * hidden + j] = nn
                    c_now[j] = hn
                    h_now[j] = (one - z) * nn + z * (zero if first else h_before[j])
            else:
                for j in range(hidden):
                    h = gate_tanh(a[j] + b[j])
                    a[j] = h
                    h_now[j] = h
    last = (steps - 1) * hidden
    for s in range(n):
        if sequences:
            for k in range(steps * hidden):
                y[s, k] = hs[s, k]
        else:
            for j in range(hidden):
                y[s, j] = hs[s, last + j]


@kernel
def recurrent_backward(x, w_ih, w_hh, hs, gates, cs, dy, dx, need_dx, acc_dx, dw_ih, dw_hh, db_ih, db_hh, has_bias,
                       need_dw, acc_dw, da_ih, da_hh, dh, dc, cell, steps, sequences, window):
    # window: truncated backpropagation through time, gradients cut between windows of that many steps
    # (the steps themselves for the whole sequence)
    n = x.shape[0]
    gh, fan_in = w_ih.shape
    hidden = w_hh.shape[1]
    zero = np.zeros(1, hs.dtype)[0]
    one = np.ones(1, hs.dtype)[0]
    for s in range(n):
        for j in range(hidden):
            dh[s, j] = zero
            dc[s, j] = zero
    for t in range(steps - 1, -1, -1):
        if (t + 1) % window == 0:  # the last step of a window: nothing flows in from the next one
            for s in range(n):
                for j in range(hidden):
                    dh[s, j] = zero
                    dc[s, j] = zero
        base = t * gh
        now = t * hidden
        before = max(t - 1, 0) * hidden
        first = t == 0
        # the output's gradient at step t: every step's with `sequences`, else only the last step's
        out = now if sequences else 0
        fed = sequences or t == steps - 1
        for s in range(n):
            a = gates[s, base:base + gh]
            d_in = da_ih[s, base:base + gh]
            d_hid = da_hh[s, base:base + gh]
            g_out = dy[s, out:out + hidden]
            d_h = dh[s, :hidden]
            d_c = dc[s, :hidden]
            c_before = cs[s, before:before + hidden]
            h_before = hs[s, before:before + hidden]
            c_now = cs[s, now:now + hidden]
            if cell == LSTM:
                for j in range(hidden):
                    g_h = d_h[j] + (g_out[j] if fed else zero)  # into h_t: the output's, then step t + 1's
                    i = a[j]
                    f = a[hidden + j]
                    g = a[2 * hidden + j]
                    o = a[3 * hidden + j]
                    tc = gate_tanh(c_now[j])
                    g_c = d_c[j] + g_h * o * (one - tc * tc)
                    dai = g_c * g * i * (one - i)
                    daf = g_c * (zero if first else c_before[j]) * f * (one - f)
                    dag = g_c * i * (one - g * g)
                    dao = g_h * tc * o * (one - o)
                    d_in[j] = dai
                    d_in[hidden + j] = daf
                    d_in[2 * hidden + j] = dag
                    d_in[3 * hidden + j] = dao
                    d_hid[j] = dai
                    d_hid[hidden + j] = daf
                    d_hid[2 * hidden + j] = dag
                    d_hid[3 * hidden + j] = dao
                    d_c[j] = g_c * f
                    d_h[j] = zero
            elif cell == GRU:
                for j in range(hidden):
                    g_h = d_h[j] + (g_out[j] if fed else zero)
                    r = a[j]
                    z = a[hidden + j]
                    nn = a[2 * hidden + j]
                    hn = c_now[j]
                    dan = g_h * (one - z) * (one - nn * nn)
                    daz = g_h * ((zero if first else h_before[j]) - nn) * z * (one - z)
                    dar = dan * hn * r * (one - r)
                    d_in[j] = dar
                    d_in[hidden + j] = daz
                    d_in[2 * hidden + j] = dan
                    d_hid[j] = dar
                    d_hid[hidden + j] = daz
                    d_hid[2 * hidden + j] = dan * r
                    d_h[j] = g_h * z  # h_t = ... + z h_(t-1)
            else:
                for j in range(hidden):
                    g_h = d_h[j] + (g_out[j] if fed else zero)
                    h = a[j]
                    da = g_h * (one - h * h)
                    d_in[j] = da
                    d_hid[j] = da
                    d_h[j] = zero
        if t > 0:  # dh (n, H) += da_hh_t (n, GH; row stride T*GH) @ w_hh
            gemm(False, False, n, hidden, gh, da_hh, base, steps * gh, w_hh, 0, hidden, 1.0, dh, 0, hidden)
    if need_dw:
        if not acc_dw:
            for k in range(gh):
                for i in range(fan_in):
                    dw_ih[k, i] = zero
                for i in range(hidden):
                    dw_hh[k, i] = zero
                if has_bias:
                    db_ih[k] = zero
                    db_hh[k] = zero
        if has_bias:  # summed over samples and steps in float64, in a fixed order
            total_ih = np.zeros(gh)
            total_hh = np.zeros(gh)
            for s in range(n):
                for t in range(steps):
                    for k in range(gh):
                        total_ih[k] += da_ih[s, t * gh + k]
                        total_hh[k] += da_hh[s, t * gh + k]
            for k in range(gh):
                db_ih[k] += total_ih[k]
                db_hh[k] += total_hh[k]
        # dw_ih (GH, F) += da_ih (n*T, GH)^T @ x (n*T, F)
        gemm(True, False, gh, fan_in, n * steps, da_ih, 0, gh, x, 0, fan_in, 1.0, dw_ih, 0, fan_in)
        # dw_hh (GH, H) += sum over t > 0 of da_hh_t^T @ h_(t-1): one GEMM over the rows of every sample and
        # step, row r of da_hh (sample s, step t) against row r - 1 of hs (step t - 1 of the same sample);
        # rows of step 0 meet the previous sample's last step, so they are zeroed first (the biases'
        # gradients, above, have used them)
        for s in range(n):
            for k in range(gh):
                da_hh[s, k] = zero
        gemm(True, False, gh, hidden, n * steps - 1, da_hh, gh, gh, hs, 0, hidden, 1.0, dw_hh, 0, hidden)
    if need_dx:  # dx (n*T, F) (+)= da_ih (n*T, GH) @ w_ih
        gemm(False, False, n * steps, fan_in, gh, da_ih, 0, gh, w_ih, 0, fan_in, 1.0 if acc_dx else 0.0, dx, 0, fan_in)
