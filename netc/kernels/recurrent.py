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
    hh             (>= n, G*H) forward scratch: a GRU's h_(t-1) W_hh^T (the other cells add it to gates)
    w_hh_t         (H, G*H)   forward scratch: W_hh^T
    da_ih, da_hh   (>= n, T*G*H) backward scratch: gradients of the gates' pre-activations from
                   the input side and the hidden side (they differ only in a GRU's n gate: for the
                   other cells da_hh is da_ih itself, written once)
    dh, dc         (>= n, H) backward scratch: the gradient flowing into h_(t-1), c_(t-1)
    dwt_ih, dwt_hh (chunks, G*H, F), (chunks, G*H, H) backward scratch: each chunk's weight gradients

The batch runs in `chunks` parts, one per core, each part the whole sequence (a Numba parallel
region per pass: the cores meet once, not at every step, which stalled when other processes held
the cores). Weight gradients are each chunk's, summed in chunk order, so the numbers do not depend
on which core finished first. A batch too small to share runs as one chunk through the serial twins
(`*_one`), which start no parallel region.

Matrix products are BLAS GEMMs (netc.kernels.blas) over a chunk's samples: x W_ih^T once for every
step, h_(t-1) W_hh^T per step (a block of hs addressed by its row stride T*H, against W_hh^T in
blocks of columns small enough for OpenBLAS's unpacked small-matrix kernels: `gemm_columns`; an LSTM
or RNN adds it into the step's block of gates, as BLAS's beta = 1: one rounding, as a + b), and in
the backward dx, dW_ih and dW_hh once (one GEMM over every sample and step of the chunk each) and
the gradient into h_(t-1) per step.

The gate loops are written to vectorise: over slices indexed from 0 (offset indices kept Numba's
negative-index checks, which stop LLVM), one nonlinearity per loop in the forward (a short body lets
the CPU overlap iterations), the biases added to every step's input side at once. In float32 the
sigmoids and tanh are `sigmoid32`/`tanh32` (netc.kernels.fastexp: arithmetic only, so a loop of
them vectorises; within a few ulp of libm's); float64 keeps libm's exp and tanh, which the float64
gradchecks rely on.
"""

import numpy as np
from numba import prange

from netc.jit import parallel_kernel
from netc.kernels.blas import gemm, gemm_columns
from netc.kernels.fastexp import gate_sigmoid, gate_tanh

RNN, LSTM, GRU = 0, 1, 2


@parallel_kernel
def recurrent_forward(x, w_ih, w_hh, b_ih, b_hh, has_bias, hs, gates, cs, hh, w_hh_t, y, cell, steps, sequences,
                      chunks):
    n = x.shape[0]
    gh, fan_in = w_ih.shape
    hidden = w_hh.shape[1]
    zero = np.zeros(1, hs.dtype)[0]
    one = np.ones(1, hs.dtype)[0]
    both = 2 * hidden if cell == GRU else gh  # biases added on the input side (a GRU's b_hn: hidden side)
    chunk = (n + chunks - 1) // chunks
    for j in range(hidden):  # w_hh^T (H, GH): each step's product without transposes, in blocks of columns
        for k in range(gh):  # (written row by row: 4x faster than column by column)
            w_hh_t[j, k] = w_hh[k, j]
    for part in prange(chunks):  # samples lo..hi, the whole sequence: the cores meet once per pass
        lo = min(n, part * chunk)
        hi = min(n, lo + chunk)
        m = hi - lo
        if m > 0:
            # gates (m*T, GH) = x (m*T, F) @ w_ih^T: the input side of every step at once
            gemm(False, True, m * steps, gh, fan_in, x, lo * steps * fan_in, fan_in, w_ih, 0, fan_in, 0.0,
                 gates, lo * steps * gh, gh)
        if has_bias:
            for s in range(lo, hi):
                for t in range(steps):
                    row = gates[s, t * gh:(t + 1) * gh]
                    for k in range(both):
                        row[k] += b_ih[k] + b_hh[k]
                    for k in range(both, gh):
                        row[k] += b_ih[k]
        for t in range(steps):
            base = t * gh
            if cell != GRU:  # gates_t (m, GH; row stride T*GH) += h_(t-1) (m, H; row stride T*H) @ w_hh^T
                if t > 0 and m > 0:
                    gemm_columns(m, gh, hidden, hs, lo * steps * hidden + (t - 1) * hidden, steps * hidden, w_hh_t, 0,
                                 gh, 1.0, gates, lo * steps * gh + base, steps * gh)
            else:  # a GRU's n gate needs the hidden side apart: hh (m, GH) = h_(t-1) @ w_hh^T (+ b_hn)
                if t > 0 and m > 0:
                    gemm_columns(m, gh, hidden, hs, lo * steps * hidden + (t - 1) * hidden, steps * hidden, w_hh_t, 0,
                                 gh, 0.0, hh, lo * gh, gh)
                elif t == 0:
                    for s in range(lo, hi):
                        for k in range(gh):
                            hh[s, k] = zero
                if has_bias:
                    for s in range(lo, hi):
                        for j in range(hidden):
                            hh[s, 2 * hidden + j] += b_hh[2 * hidden + j]
            now = t * hidden
            before = max(t - 1, 0) * hidden  # read at t = 0 too, and not used there
            first = t == 0
            for s in range(lo, hi):
                a = gates[s, base:base + gh]
                c_before = cs[s, before:before + hidden]
                h_before = hs[s, before:before + hidden]
                c_now = cs[s, now:now + hidden]
                h_now = hs[s, now:now + hidden]
                # the gates first, one nonlinearity per loop (a short loop body: the CPU overlaps its
                # iterations; one loop of all five ran ~25% slower), each over slices indexed from 0
                if cell == LSTM:  # the hidden side is in a already (above)
                    a_if = a[:2 * hidden]
                    for k in range(2 * hidden):
                        a_if[k] = gate_sigmoid(a_if[k])
                    a_g = a[2 * hidden:3 * hidden]
                    for j in range(hidden):
                        a_g[j] = gate_tanh(a_g[j])
                    a_o = a[3 * hidden:]
                    for j in range(hidden):
                        a_o[j] = gate_sigmoid(a_o[j])
                    a_i, a_f = a[:hidden], a[hidden:2 * hidden]
                    for j in range(hidden):  # c and h in loops of their own: together LLVM left them scalar
                        c_now[j] = a_f[j] * (zero if first else c_before[j]) + a_i[j] * a_g[j]
                    for j in range(hidden):
                        h_now[j] = a_o[j] * gate_tanh(c_now[j])
                elif cell == GRU:  # n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h = (1 - z) n + z h_prev
                    b = hh[s, :gh]
                    a_rz, b_rz = a[:2 * hidden], b[:2 * hidden]
                    for k in range(2 * hidden):
                        a_rz[k] = gate_sigmoid(a_rz[k] + b_rz[k])
                    a_r, a_z, a_n, b_n = a[:hidden], a[hidden:2 * hidden], a[2 * hidden:], b[2 * hidden:]
                    for j in range(hidden):
                        a_n[j] = gate_tanh(a_n[j] + a_r[j] * b_n[j])
                    for j in range(hidden):
                        c_now[j] = b_n[j]
                        h_now[j] = (one - a_z[j]) * a_n[j] + a_z[j] * (zero if first else h_before[j])
                else:  # the hidden side is in a already
                    for j in range(hidden):
                        a[j] = gate_tanh(a[j])
                    for j in range(hidden):
                        h_now[j] = a[j]
        last = (steps - 1) * hidden
        for s in range(lo, hi):
            if sequences:
                for k in range(steps * hidden):
                    y[s, k] = hs[s, k]
            else:
                for j in range(hidden):
                    y[s, j] = hs[s, last + j]


@parallel_kernel
def recurrent_backward(x, w_ih, w_hh, hs, gates, cs, dy, dx, need_dx, acc_dx, dw_ih, dw_hh, db_ih, db_hh, has_bias,
                       need_dw, acc_dw, da_ih, da_hh, dh, dc, dwt_ih, dwt_hh, cell, steps, sequences, window, chunks):
    # window: truncated backpropagation through time, gradients cut between windows of that many steps
    # (the steps themselves for the whole sequence)
    n = x.shape[0]
    gh, fan_in = w_ih.shape
    hidden = w_hh.shape[1]
    zero = np.zeros(1, hs.dtype)[0]
    one = np.ones(1, hs.dtype)[0]
    chunk = (n + chunks - 1) // chunks
    hidden_side = da_hh if cell == GRU else da_ih  # the gates' gradients from the hidden side
    totals = np.zeros((chunks, 2, gh))  # the biases' gradients of each chunk, summed in float64
    for part in prange(chunks):  # samples lo..hi, every step: the cores meet once per pass
        lo = min(n, part * chunk)
        hi = min(n, lo + chunk)
        m = hi - lo
        total_ih = totals[part, 0]
        total_hh = totals[part, 1]
        for s in range(lo, hi):
            for j in range(hidden):
                dh[s, j] = zero
                dc[s, j] = zero
        for t in range(steps - 1, -1, -1):
            if (t + 1) % window == 0:  # the last step of a window: nothing flows in from the next one
                for s in range(lo, hi):
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
            for s in range(lo, hi):
                a = gates[s, base:base + gh]
                d_in = da_ih[s, base:base + gh]
                d_hid = da_hh[s, base:base + gh]  # a GRU's only: the other cells' equal d_in
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
                        d_in[j] = g_c * g * i * (one - i)
                        d_in[hidden + j] = g_c * (zero if first else c_before[j]) * f * (one - f)
                        d_in[2 * hidden + j] = g_c * i * (one - g * g)
                        d_in[3 * hidden + j] = g_h * tc * o * (one - o)
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
                        d_h[j] = zero
                if has_bias and need_dw:
                    for k in range(gh):
                        total_ih[k] += d_in[k]
                    if cell == GRU:
                        for k in range(gh):
                            total_hh[k] += d_hid[k]
            if t > 0 and m > 0:  # dh (m, H) += da_hh_t (m, GH; row stride T*GH) @ w_hh
                gemm_columns(m, hidden, gh, hidden_side, lo * steps * gh + base, steps * gh, w_hh, 0, hidden, 1.0, dh,
                             lo * hidden, hidden)
        if m > 0 and need_dx:  # dx (m*T, F) (+)= da_ih (m*T, GH) @ w_ih
            gemm(False, False, m * steps, fan_in, gh, da_ih, lo * steps * gh, gh, w_ih, 0, fan_in,
                 1.0 if acc_dx else 0.0, dx, lo * steps * fan_in, fan_in)
        if m > 0 and need_dw:
            # dwt_ih (GH, F) = da_ih (m*T, GH)^T @ x (m*T, F), this chunk's share
            gemm(True, False, gh, fan_in, m * steps, da_ih, lo * steps * gh, gh, x, lo * steps * fan_in, fan_in, 0.0,
                 dwt_ih[part], 0, fan_in)
            # dwt_hh (GH, H) = sum over t > 0 of da_hh_t^T @ h_(t-1): one GEMM over the chunk's rows, row r of
            # da_hh (sample s, step t) against row r - 1 of hs (step t - 1 of the same sample); rows of step 0
            # would meet the previous sample's last step, so they are zeroed first (after every other use)
            for s in range(lo, hi):
                for k in range(gh):
                    hidden_side[s, k] = zero
            gemm(True, False, gh, hidden, m * steps - 1, hidden_side, (lo * steps + 1) * gh, gh, hs, lo * steps * hidden,
                 hidden, 0.0, dwt_hh[part], 0, hidden)
        elif need_dw:  # an empty chunk (a last batch smaller than the chunks) adds nothing
            for k in range(gh):
                for i in range(fan_in):
                    dwt_ih[part, k, i] = zero
                for i in range(hidden):
                    dwt_hh[part, k, i] = zero
    if need_dw:  # the chunks' shares summed in chunk order, one flat loop per share (they vectorise)
        sum_ih, sum_hh = dw_ih.reshape(gh * fan_in), dw_hh.reshape(gh * hidden)
        for part in range(chunks):
            keep = acc_dw or part > 0
            share_ih, share_hh = dwt_ih[part].reshape(gh * fan_in), dwt_hh[part].reshape(gh * hidden)
            for i in range(gh * fan_in):
                sum_ih[i] = (sum_ih[i] if keep else zero) + share_ih[i]
            for i in range(gh * hidden):
                sum_hh[i] = (sum_hh[i] if keep else zero) + share_hh[i]
        if has_bias:
            for k in range(gh):
                bias_ih = 0.0
                bias_hh = 0.0
                for part in range(chunks):
                    bias_ih += totals[part, 0, k]
                    bias_hh += totals[part, 1 if cell == GRU else 0, k]
                db_ih[k] = (db_ih[k] if acc_dw else zero) + bias_ih
                db_hh[k] = (db_hh[k] if acc_dw else zero) + bias_hh


# a batch run as one chunk: the serial twins, which start no parallel region (netc.ops.recurrent.chunks_for)
recurrent_forward_one = recurrent_forward.serial
recurrent_backward_one = recurrent_backward.serial
