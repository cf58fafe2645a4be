"""conv2d as im2col + BLAS GEMM, split over the cores by chunks of the batch; max/avg pooling.

Geometry args: C, H, W input; KH, KW kernel; SH, SW stride; PH, PW padding; OH, OW output.
Layouts: x (n, C, H, W); w (F, K) with K = C*KH*KW; y, dy (n, F, P) with P = OH*OW.

Each conv pass is one parallel region: chunk t of the batch (samples t*chunk .. (t+1)*chunk; two
chunks per core, netc.pool) runs on one thread with its own scratch, `buf` (T, F, G*P): it unrolls
G samples at a time into columns and makes one GEMM of them (BLAS single-threaded inside). The
columns `cols` are either kept from forward to backward, (T, K, chunk*P) per conv (`kept`: the
backward's weight gradient reads them instead of unrolling the input again), or scratch (T, K, G*P)
shared by every conv. Weight gradients go to per-chunk buffers `dwt` (T, F, K), `dbt` (T, F), summed in
a fixed order once per step, so results do not depend on which thread ran what.

conv_forward_tiles and conv_backward_tiles run a conv with many filters and a long k on netc's own
micro-kernel (netc.kernels.tiles) instead: no im2col matrix and no OpenBLAS, the operands packed once
into the panels the micro-kernel reads (netc.ops.conv.tiled_conv says which convs).
conv_forward_direct and conv_backward_direct run a stride-1 conv with many filters and a short k (a
network's first conv) on it with no unrolling at all: the micro-kernel reads the padded image in place
(netc.ops.conv.direct_conv).
"""

import numpy as np
from numba import prange, uint64

from netc.jit import helper, kernel, parallel_kernel
from netc.kernels.activation import NONE, RELU, act_chain, act_value
from netc.kernels.blas import gemm, gemm_tn
from netc.kernels.gemm_sizes import ROW_TILE_COLUMNS, ROW_TILE_ROWS, TILE_COLUMNS, TILE_ROWS
from netc.kernels.tiles import (fold_rows, micro_tile, micro_tile_gathered, micro_tile_rows, micro_tile_shifted,
                                pack_columns, pack_rows, unroll_panel, unroll_transposed, window_table)

@helper
def im2col(x, s, cols, p0, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    # sample s of x -> columns p0 .. p0 + OH*OW of cols (K, *): row (c, ki, kj), column (oi, oj); padding reads 0.
    # Indices are cast to unsigned (all are >= 0 where used): a signed index makes Numba wrap negative ones
    # around, a branch per element that kept these copies from vectorising (2.5-3.7x slower, same bits).
    k = 0
    for c in range(C):
        for ki in range(KH):
            for kj in range(KW):
                for oi in range(OH):
                    ii = oi * SH - PH + ki
                    col = p0 + oi * OW
                    if ii < 0 or ii >= H:
                        for oj in range(OW):
                            cols[k, uint64(col + oj)] = 0.0
                    elif SW == 1 and PW == 0:  # a contiguous run of the input row
                        for oj in range(OW):
                            cols[k, uint64(col + oj)] = x[s, c, ii, uint64(oj + kj)]
                    else:
                        for oj in range(OW):
                            jj = oj * SW - PW + kj
                            cols[k, uint64(col + oj)] = x[s, c, ii, uint64(jj)] if 0 <= jj < W else 0.0
                k += 1


@helper
def col2im_add(cols, k0, count, p0, dx, s, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    # the transpose of im2col: rows r < count of cols, k = k0 + r, columns p0 .. p0 + OH*OW, summed into
    # sample s of dx k by k (unsigned indices as in im2col; each element of dx receives its terms in k order,
    # whichever rows a call gets). Stride 1: a channel's rows at a time by fold_rows, each row of dx summed
    # in vector registers (seed-cnn's conv2: 0.44 -> 0.20 ms per 8 samples for 48 rows a call, the same bits)
    if SH == 1 and SW == 1:
        flat = dx.reshape(-1)
        window, ldc = KH * KW, cols.shape[1]
        r = 0
        while r < count:
            c, rest = (k0 + r) // window, (k0 + r) % window
            run = min(count - r, window - rest)
            fold_rows(flat, (s * C + c) * H * W, cols, r * ldc + p0, ldc, run, rest // KW, rest % KW, KW, H, W, OH, OW,
                      PH, PW)
            r += run
        return
    for r in range(count):
        c, rest = (k0 + r) // (KH * KW), (k0 + r) % (KH * KW)
        ki, kj = rest // KW, rest % KW
        for oi in range(OH):
            ii = oi * SH - PH + ki
            col = p0 + oi * OW
            if ii < 0 or ii >= H:
                continue
            if SW == 1 and PW == 0:
                for oj in range(OW):
                    dx[s, c, ii, uint64(oj + kj)] += cols[r, uint64(col + oj)]
            else:
                for oj in range(OW):
                    jj = oj * SW - PW + kj
                    if 0 <= jj < W:
                        dx[s, c, ii, uint64(jj)] += cols[r, uint64(col + oj)]


@parallel_kernel
def conv_forward(x, w, b, has_bias, y, arg, pooled, cols, kept, buf, act, alpha, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    # y = act(w @ im2col(x) + b), y (n, F, P); chunk t of the batch on core t (the loop body is the parallel
    # region itself: a chunk kernel called from it would be optimized twice, costing seconds of compile).
    # pooled: a 2x2 stride-2 max pool fused into the epilogue, y (n, F, OH//2 * OW//2) and arg (same shape)
    # the conv position of each maximum; max and act commute, as only non-decreasing activations fuse with a pool.
    n = x.shape[0]
    chunks = cols.shape[0]
    filters, k = w.shape[0], w.shape[1]
    positions = OH * OW
    width = buf.shape[2]  # G samples' columns
    group = width // positions
    chunk = (n + chunks - 1) // chunks
    for t in prange(chunks):
        end = min(n, (t + 1) * chunk)
        for s0 in range(t * chunk, end, group):
            g = min(group, end - s0)
            c0 = (s0 - t * chunk) * positions if kept else 0  # the group's first column
            for j in range(g):
                im2col(x, s0 + j, cols[t], c0 + j * positions, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW)
            gemm(False, False, filters, g * positions, k, w, 0, k, cols[t], c0, cols.shape[2], 0.0, buf[t], 0, width)
            for j in range(g):  # epilogue: (max pool,) bias + activation into each sample's rows of y
                conv_epilogue(buf, t, j * positions, y, arg, s0 + j, filters, b, has_bias, pooled, act, alpha, OH, OW, OW)


@helper
def conv_epilogue(buf, t, column, y, arg, s, filters, b, has_bias, pooled, act, alpha, OH, OW, stride):
    # sample s of y from buf[t] (a row per filter), its output row oi at column + oi*stride (stride OW: the
    # rows adjacent; a direct conv's rows are the image's width apart): bias + activation, or with `pooled`
    # the 2x2 max pool first (max and act commute: only non-decreasing activations fuse with a pool); arg
    # holds each maximum's position in the conv's output, oi*OW + oj, whatever the stride
    positions = OH * OW
    pooled_w = OW // 2
    for f in range(filters):
        bias = b[f] if has_bias else 0.0
        if not pooled:
            for oi in range(OH if stride != OW else 1):
                row = column + oi * stride
                out = oi * OW
                if act == RELU:  # loops of their own: vectorised (see dense.bias_act)
                    for p in range(OW if stride != OW else positions):
                        v = buf[t, f, uint64(row + p)] + bias
                        y[s, f, out + p] = v if v > 0 else v * 0
                elif act == NONE:  # (a conv before a batch norm: 2x faster than through act_value)
                    for p in range(OW if stride != OW else positions):
                        y[s, f, out + p] = buf[t, f, uint64(row + p)] + bias
                else:
                    for p in range(OW if stride != OW else positions):
                        y[s, f, out + p] = act_value(buf[t, f, uint64(row + p)] + bias, act, alpha)
            continue
        for qi in range(OH // 2):
            for qj in range(pooled_w):
                p = 2 * qi * OW + 2 * qj  # the window's top-left position
                r = column + 2 * qi * stride + 2 * qj  # and where buf holds it
                best, where = buf[t, f, uint64(r)], p
                if buf[t, f, uint64(r + 1)] > best:
                    best, where = buf[t, f, uint64(r + 1)], p + 1
                if buf[t, f, uint64(r + stride)] > best:
                    best, where = buf[t, f, uint64(r + stride)], p + OW
                if buf[t, f, uint64(r + stride + 1)] > best:
                    best, where = buf[t, f, uint64(r + stride + 1)], p + OW + 1
                v = best + bias
                y[s, f, qi * pooled_w + qj] = (v if v > 0 else v * 0) if act == RELU else act_value(v, act, alpha)
                arg[s, f, qi * pooled_w + qj] = where


@parallel_kernel
def conv_forward_tiles(x, w, b, has_bias, y, arg, pooled, wpanels, panel, buf, act, alpha, C, H, W, KH, KW, SH, SW,
                       PH, PW, OH, OW):
    # conv_forward on netc's micro-kernel (netc.kernels.tiles) instead of im2col + OpenBLAS: w packed once
    # into wpanels (ceil(F / ROWS), K, ROWS); chunk t unrolls G samples' columns a panel at a time into
    # panel[t] (K, COLUMNS) and multiplies it by every row panel of w while it is in cache, into buf[t]
    # (rows padded to ROWS, G*P columns to COLUMNS); then conv_forward's epilogue. For convs with many
    # filters and a long k (seed-cnn's conv2: 1.29-1.33x faster on one core, benchmarks/microkernel.py);
    # the chunks' outputs differ from OpenBLAS's sums in the last bits, and are the same on every CPU.
    n = x.shape[0]
    chunks = panel.shape[0]
    filters, k = w.shape[0], w.shape[1]
    positions = OH * OW
    rows, width = buf.shape[1], buf.shape[2]
    group = width // positions
    chunk = (n + chunks - 1) // chunks
    pack_rows(w, filters, k, wpanels)
    table = np.empty((3, k), np.int64)
    window_table(table, C, H, W, KH, KW)
    for t in prange(chunks):
        corners = np.empty((3, TILE_COLUMNS), np.int64)
        end = min(n, (t + 1) * chunk)
        for s0 in range(t * chunk, end, group):
            g = min(group, end - s0)
            columns = g * positions
            for jp in range((columns + TILE_COLUMNS - 1) // TILE_COLUMNS):
                unroll_panel(x, s0, columns, jp, panel[t], corners, table, C, H, W, SH, SW, PH, PW, OH, OW)
                for ip in range(wpanels.shape[0]):
                    micro_tile(wpanels, ip * k * TILE_ROWS, panel, t * k * TILE_COLUMNS, buf,
                               (t * rows + ip * TILE_ROWS) * width + jp * TILE_COLUMNS, width, k, False)
            for j in range(g):
                conv_epilogue(buf, t, j * positions, y, arg, s0 + j, filters, b, has_bias, pooled, act, alpha, OH, OW, OW)


@parallel_kernel
def conv_backward(x, w, y, dy, arg, pooled, act, alpha, dx, need_dx, acc_dx, dw, db, need_dw, acc_dw, has_bias,
                  cols, kept, dcols, buf, dwt, small_kernels, dbt, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    # x (n, C, H, W)  w, dw (F, K)  y, dy (n, F, P)  dx (n, C, H, W): weight gradients per chunk into dwt,
    # dbt, then summed in chunk order; input gradients straight into dx (the chunks own disjoint samples).
    # pooled: y, dy, arg are the fused max pool's (see conv_forward); each gradient goes to its maximum.
    # dcols (T, K, G*P): the column gradients (scratch; may be cols itself when cols are not kept)
    # small_kernels: OpenBLAS runs its SkylakeX kernels (BufferPlan.blas_small_kernels). Then dwt holds each
    # chunk's weight gradient transposed, (T, K, F): the product cols @ G.T, which they ran faster than
    # G @ cols.T, to the same bits; and the column gradients run in blocks of their small-matrix kernels
    # (blas.gemm_tn: LeNet-5's conv2, [150, 16] by [16, 1024] a chunk, 45 -> 22 us), to the same bits.
    n = x.shape[0]
    chunks = cols.shape[0]
    filters, k = w.shape[0], w.shape[1]
    positions = OH * OW
    pooled_positions = (OH // 2) * (OW // 2)
    width = buf.shape[2]
    group = width // positions
    chunk = (n + chunks - 1) // chunks
    for t in prange(chunks):
        for f in range(filters):
            dbt[t, f] = 0.0
        for i in range(dwt.shape[1]):
            for j in range(dwt.shape[2]):
                dwt[t, i, j] = 0.0
        end = min(n, (t + 1) * chunk)
        for s0 in range(t * chunk, end, group):
            g = min(group, end - s0)
            for j in range(g):  # the activation's gradient, gathered into buf (F, G*P)
                gather_gradient(buf, t, j * positions, dy, y, arg, s0 + j, filters, pooled, act, alpha, positions,
                                pooled_positions, dbt)
            if need_dw:  # dW += G (F, gP) @ cols.T (gP, K)
                c0 = (s0 - t * chunk) * positions if kept else 0
                if not kept:
                    for j in range(g):
                        im2col(x, s0 + j, cols[t], j * positions, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW)
                if small_kernels:  # dW.T (K, F) += cols (K, gP) @ G.T
                    gemm(False, True, k, filters, g * positions, cols[t], c0, cols.shape[2], buf[t], 0, width, 1.0,
                         dwt[t], 0, filters)
                else:
                    gemm(False, True, filters, k, g * positions, buf[t], 0, width, cols[t], c0, cols.shape[2], 1.0,
                         dwt[t], 0, k)
            if need_dx:  # column gradients W.T (K, F) @ G (F, gP), folded back into the image
                gemm_tn(small_kernels, k, g * positions, filters, w, 0, k, buf[t], 0, width, 0.0, dcols[t], 0, width)
                for j in range(g):
                    if not acc_dx:
                        for c in range(C):
                            for i in range(H):
                                for jj in range(W):
                                    dx[s0 + j, c, i, jj] = 0.0
                    col2im_add(dcols[t], 0, k, j * positions, dx, s0 + j, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW)
    if need_dw:
        sum_chunks(dwt, dw, acc_dw, small_kernels)
        if has_bias:
            sum_bias_chunks(dbt, db, acc_dw)


@helper
def gather_gradient(buf, t, column, dy, y, arg, s, filters, pooled, act, alpha, positions, pooled_positions, dbt):
    # sample s's gradient before the activation (and the fused pool: each to its maximum) into the columns
    # column .. column + P of buf[t] (a row per filter); its sum per filter added to dbt[t]
    for f in range(filters):
        total = 0.0
        if pooled:
            for p in range(positions):
                buf[t, f, uint64(column + p)] = 0.0
        if act == RELU:  # a loop of its own, free of act_chain's branches: 1.6 -> 1.1 ms for
            # seed-cnn's conv1 backward (dy * 1 or dy * 0, as act_chain: the same bits)
            for q in range(pooled_positions if pooled else positions):
                grad = dy[s, f, q]
                grad = grad if y[s, f, q] > 0 else grad * 0
                buf[t, f, uint64(column + (arg[s, f, q] if pooled else q))] = grad
                total += grad
        else:
            for q in range(pooled_positions if pooled else positions):
                grad = dy[s, f, q]
                if act != 0:
                    grad = act_chain(grad, y[s, f, q], act, alpha)
                buf[t, f, uint64(column + (arg[s, f, q] if pooled else q))] = grad
                total += grad
        dbt[t, f] += total


@helper
def pack_pooled_gradient(gbuf, t, arg, s0, g, filters, positions, OH, OW, panels, rows):
    """A group's gradient through a fused 2x2 max pool, its nonzero terms only: each window's, at its
    maximum. For filter f (panel f // ROWS, lane f % ROWS) its g * (OH // 2) * (OW // 2) terms in the
    order the dense chain over the group's columns (j*P + p) meets them: by sample, then by output row
    (a window's maximum lies in its top or bottom row), then by column. Their values (from gbuf[t]) go
    to panels[t] as pack_rows lays out a's rows, and where each one's row of the transposed im2col
    panel starts (its column times COLUMNS) to rows, laid out the same; the filters past F are zero."""
    pooled_w = OW // 2
    depth = g * (OH // 2) * pooled_w
    for panel in range(panels.shape[1]):
        for lane in range(TILE_ROWS):
            f = panel * TILE_ROWS + lane
            if f >= filters:
                for i in range(depth):
                    panels[t, panel, i, lane] = 0.0
                    rows[panel, i, lane] = 0
                continue
            i = 0
            for j in range(g):
                s = s0 + j
                for qi in range(OH // 2):
                    bottom = (2 * qi + 1) * OW  # where the window's bottom row starts
                    for lower in range(2):  # the windows whose maximum is in the top row, then the bottom one
                        for qj in range(pooled_w):
                            # every window written, the slot kept only for those of this row: no branch
                            # to mispredict (a slot past the last takes the last write: capacity > depth)
                            p = arg[s, f, qi * pooled_w + qj]
                            column = j * positions + p
                            panels[t, panel, i, lane] = gbuf[t, f, column]
                            rows[panel, i, lane] = column * TILE_COLUMNS
                            i += (p >= bottom) == (lower == 1)


@parallel_kernel
def conv_backward_tiles(x, w, y, dy, arg, pooled, act, alpha, dx, need_dx, acc_dx, dw, db, need_dw, acc_dw, has_bias,
                        gbuf, gpanels, xpanel, dwt, wtpanels, gcolumns, dblock, dbt, C, H, W, KH, KW, SH, SW, PH, PW,
                        OH, OW):
    # conv_backward on netc's micro-kernel (netc.kernels.tiles), G samples at a time: their gradient
    # (F, G*P) gathered into gbuf[t]; the weight gradient dW (F, K) += G @ im2col(x).T as tiles of filters
    # by k, G's rows packed into gpanels[t] and a panel of the transposed im2col matrix unrolled from x
    # into xpanel[t] (G*P, COLUMNS), into dwt[t] (F and K padded), summed over the chunks in chunk order;
    # the column gradients W.T @ G (K, G*P) as tiles of k by positions (W packed once per pass into
    # wtpanels, G's columns into gcolumns[t]), a few panels of ROWS rows of k at a time into dblock[t] and
    # folded back into dx at once by col2im_add (each element of dx summed k by k, as in conv_backward).
    n = x.shape[0]
    chunks = gbuf.shape[0]
    filters, k = w.shape[0], w.shape[1]
    positions = OH * OW
    pooled_positions = (OH // 2) * (OW // 2)
    capacity = gbuf.shape[2]  # columns of a group
    group = capacity // positions
    filter_rows, k_columns = dwt.shape[1], dwt.shape[2]
    filter_panels, column_panels, width = gpanels.shape[1], gcolumns.shape[1], dblock.shape[2]
    block_rows = dblock.shape[1]  # rows of k folded into dx at once
    block_panels = block_rows // TILE_ROWS
    chunk = (n + chunks - 1) // chunks
    table = np.empty((3, k_columns), np.int64)
    window_table(table, C, H, W, KH, KW)
    if need_dx:
        pack_columns(w, k, filters, wtpanels)
    for t in prange(chunks):
        for f in range(filters):
            dbt[t, f] = 0.0
        # pack_pooled_gradient's offsets (a slot past the last: it writes one there)
        depth_cap = group * pooled_positions + 1 if pooled and need_dw else 0
        terms = np.empty((filter_panels, depth_cap, TILE_ROWS), np.int32)
        first = True
        end = min(n, (t + 1) * chunk)
        for s0 in range(t * chunk, end, group):
            g = min(group, end - s0)
            columns = g * positions
            for j in range(g):
                gather_gradient(gbuf, t, j * positions, dy, y, arg, s0 + j, filters, pooled, act, alpha, positions,
                                pooled_positions, dbt)
            if need_dw and pooled:  # a quarter of the terms: each window's maximum's
                pack_pooled_gradient(gbuf, t, arg, s0, g, filters, positions, OH, OW, gpanels, terms)
                depth = g * pooled_positions
                for jp in range(k_columns // TILE_COLUMNS):
                    unroll_transposed(x, s0, g, jp, xpanel[t], table, C, H, W, SH, SW, PH, PW, OH, OW)
                    for ip in range(filter_panels):
                        micro_tile_gathered(gpanels, (t * filter_panels + ip) * capacity * TILE_ROWS, xpanel,
                                            t * capacity * TILE_COLUMNS, terms, ip * terms.shape[1] * TILE_ROWS, dwt,
                                            (t * filter_rows + ip * TILE_ROWS) * k_columns + jp * TILE_COLUMNS,
                                            k_columns, depth, not first)
                first = False
            elif need_dw:
                pack_rows(gbuf[t], filters, columns, gpanels[t])
                for jp in range(k_columns // TILE_COLUMNS):
                    unroll_transposed(x, s0, g, jp, xpanel[t], table, C, H, W, SH, SW, PH, PW, OH, OW)
                    for ip in range(filter_panels):
                        micro_tile(gpanels, (t * filter_panels + ip) * capacity * TILE_ROWS, xpanel,
                                   t * capacity * TILE_COLUMNS, dwt,
                                   (t * filter_rows + ip * TILE_ROWS) * k_columns + jp * TILE_COLUMNS, k_columns,
                                   columns, not first)
                first = False
            if need_dx:
                pack_columns(gbuf[t], columns, filters, gcolumns[t])
                if not acc_dx:
                    for j in range(g):
                        for c in range(C):
                            for i in range(H):
                                for jj in range(W):
                                    dx[s0 + j, c, i, jj] = 0.0
                for first_panel in range(0, wtpanels.shape[0], block_panels):
                    last_panel = min(first_panel + block_panels, wtpanels.shape[0])
                    for ip in range(first_panel, last_panel):
                        block_row = (t * block_rows + (ip - first_panel) * TILE_ROWS) * width
                        for jp in range((columns + TILE_COLUMNS - 1) // TILE_COLUMNS):
                            micro_tile(wtpanels, ip * filters * TILE_ROWS, gcolumns,
                                       (t * column_panels + jp) * filters * TILE_COLUMNS, dblock,
                                       block_row + jp * TILE_COLUMNS, width, filters, False)
                    k0 = first_panel * TILE_ROWS
                    for j in range(g):
                        col2im_add(dblock[t], k0, min(last_panel * TILE_ROWS, k) - k0, j * positions, dx, s0 + j, C, H,
                                   W, KH, KW, SH, SW, PH, PW, OH, OW)
        if first and need_dw:  # an empty chunk adds nothing
            for f in range(filters):
                for kk in range(k):
                    dwt[t, f, kk] = 0.0
    if need_dw:  # a long sum: the chunks' threads share its rows (seed-cnn's conv2 0.26 ms on one)
        for part in prange(chunks):
            first_row, last_row = sum_band(part, chunks, filters)
            sum_chunks(dwt[:, :filters, :k], dw, acc_dw, False, first_row, last_row)
        if has_bias:
            sum_bias_chunks(dbt, db, acc_dw)


@helper
def direct_offsets(offsets, C, KH, KW, Hp, Wp):
    """offsets[k] for k = (c, ki, kj): where the window's cell k lies from its corner in a padded sample
    (C, Hp, Wp); entries past C*KH*KW repeat the last (the padding rows of a tile read real cells)."""
    last = C * KH * KW - 1
    for kk in range(offsets.size):
        q = min(kk, last)
        c, rest = q // (KH * KW), q % (KH * KW)
        offsets[kk] = (c * Hp + rest // KW) * Wp + rest % KW


@helper
def copy_padded(x, s, xpad, t, C, H, W, PH, PW):
    """Sample s of x into xpad[t] as (C, H + 2PH, W + 2PW), its borders left as they are (zeros)."""
    Hp, Wp = H + 2 * PH, W + 2 * PW
    for c in range(C):
        for i in range(H):
            row = (c * Hp + i + PH) * Wp + PW
            for j in range(W):
                xpad[t, uint64(row + j)] = x[s, c, i, j]


@parallel_kernel
def conv_forward_direct(x, w, b, has_bias, y, arg, pooled, wpanels, xpad, buf, act, alpha, C, H, W, KH, KW, PH, PW,
                        OH, OW):
    # A stride-1 conv with a short k (few input channels: a network's first conv) on netc's micro-kernel,
    # with no im2col: each sample is copied with its padding into xpad[t] (C, Hp, Wp), and each output row
    # computed Wp wide (its last KW - 1 outputs are windows running off the row, never read), so that row
    # k = (c, ki, kj) of a column panel is the padded image itself from offset (c*Hp + ki)*Wp + kj on, read
    # in place by micro_tile_shifted. buf[t] (F padded to ROWS, OH*Wp padded to COLUMNS) then goes through
    # conv_forward's epilogue, rows Wp apart. seed-cnn's conv1 (64 filters, k = 75): the im2col of 58,800
    # cells a sample was as slow as its GEMM. Each output is one chain of multiply-adds in k order.
    n = x.shape[0]
    chunks = xpad.shape[0]
    filters, k = w.shape[0], w.shape[1]
    Hp, Wp = H + 2 * PH, W + 2 * PW
    rows, width = buf.shape[1], buf.shape[2]
    chunk = (n + chunks - 1) // chunks
    pack_rows(w, filters, k, wpanels)
    offsets = np.empty(k, np.int64)
    direct_offsets(offsets, C, KH, KW, Hp, Wp)
    for t in prange(chunks):
        for i in range(xpad.shape[1]):
            xpad[t, i] = 0.0
        for s in range(t * chunk, min(n, (t + 1) * chunk)):
            copy_padded(x, s, xpad, t, C, H, W, PH, PW)
            for jp in range(width // TILE_COLUMNS):
                for ip in range(wpanels.shape[0]):
                    micro_tile_shifted(wpanels, ip * k * TILE_ROWS, xpad, t * xpad.shape[1] + jp * TILE_COLUMNS,
                                       offsets, buf, (t * rows + ip * TILE_ROWS) * width + jp * TILE_COLUMNS, width, k)
            conv_epilogue(buf, t, 0, y, arg, s, filters, b, has_bias, pooled, act, alpha, OH, OW, Wp)


@helper
def gather_gradient_transposed(gpanels, t, dy, y, arg, s, filters, pooled, act, alpha, positions, pooled_positions,
                               dbt, sums):
    # gather_gradient's values into gpanels[t] (ceil(F / width), P, width), G.T in panels of `width` filters,
    # where micro_tile_rows reads them (no transpose of G); with `sums`, each filter's sum added to dbt[t]
    # as gather_gradient adds it
    width = gpanels.shape[3]
    for panel in range(gpanels.shape[1]):  # a pool's gradient fills a quarter; the filters past F are padding
        if pooled or (panel + 1) * width > filters:
            for p in range(positions):
                for j in range(width):
                    gpanels[t, panel, p, j] = 0.0
    for f in range(filters):
        panel, j = f // width, f % width
        total = 0.0
        for q in range(pooled_positions if pooled else positions):
            grad = dy[s, f, q]
            if act == RELU:
                grad = grad if y[s, f, q] > 0 else grad * 0
            elif act != 0:
                grad = act_chain(grad, y[s, f, q], act, alpha)
            gpanels[t, panel, uint64(arg[s, f, q] if pooled else q), j] = grad
            total += grad
        if sums:
            dbt[t, f] += total


@parallel_kernel
def conv_backward_direct(x, w, y, dy, arg, pooled, act, alpha, dx, need_dx, acc_dx, dw, db, need_dw, acc_dw, has_bias,
                         xpad, gbuf, gpanels, dwt, dcols, dbt, C, H, W, KH, KW, PH, PW, OH, OW):
    # conv_backward of conv_forward_direct, a sample at a time. The weight gradient, transposed: dW.T (K, F)
    # += im2col(x) @ G.T, as tiles of k by filters (micro_tile_rows: 64 filters a tile on AVX-512), the rows
    # of k read in place from the padded sample in xpad[t] an output row at a time, against G.T gathered
    # straight into panels, gpanels[t] (P, width); into dwt[t] (K and F padded): one chain of multiply-adds
    # per weight over the chunk's samples and positions in order, summed over the chunks in chunk order.
    # The input's gradient, where needed, as conv_backward's: G gathered into gbuf[t] (F, P), W.T @ G into
    # dcols[t] (K, P) by a GEMM, folded back into dx by col2im_add.
    n = x.shape[0]
    chunks = xpad.shape[0]
    filters, k = w.shape[0], w.shape[1]
    positions = OH * OW
    pooled_positions = (OH // 2) * (OW // 2)
    Hp, Wp = H + 2 * PH, W + 2 * PW
    k_rows, f_columns = dwt.shape[1], dwt.shape[2]
    f_panels = gpanels.shape[1]
    chunk = (n + chunks - 1) // chunks
    offsets = np.empty(k_rows, np.int64)
    direct_offsets(offsets, C, KH, KW, Hp, Wp)
    for t in prange(chunks):
        for f in range(filters):
            dbt[t, f] = 0.0
        for i in range(k_rows):
            for j in range(f_columns):
                dwt[t, i, j] = 0.0
        for i in range(xpad.shape[1]):
            xpad[t, i] = 0.0
        for s in range(t * chunk, min(n, (t + 1) * chunk)):
            if need_dx:
                gather_gradient(gbuf, t, 0, dy, y, arg, s, filters, pooled, act, alpha, positions, pooled_positions,
                                dbt)
            if need_dw:
                gather_gradient_transposed(gpanels, t, dy, y, arg, s, filters, pooled, act, alpha, positions,
                                           pooled_positions, dbt, not need_dx)
                copy_padded(x, s, xpad, t, C, H, W, PH, PW)
                for ip in range(k_rows // ROW_TILE_ROWS):
                    for jp in range(f_panels):
                        for oi in range(OH):
                            micro_tile_rows(xpad, t * xpad.shape[1] + oi * Wp, offsets, ip * ROW_TILE_ROWS, gpanels,
                                            ((t * f_panels + jp) * positions + oi * OW) * ROW_TILE_COLUMNS, dwt,
                                            (t * k_rows + ip * ROW_TILE_ROWS) * f_columns + jp * ROW_TILE_COLUMNS,
                                            f_columns, OW)
            if need_dx:
                gemm(True, False, k, positions, filters, w, 0, k, gbuf[t], 0, positions, 0.0, dcols[t], 0, positions)
                if not acc_dx:
                    for c in range(C):
                        for i in range(H):
                            for jj in range(W):
                                dx[s, c, i, jj] = 0.0
                col2im_add(dcols[t], 0, k, 0, dx, s, C, H, W, KH, KW, 1, 1, PH, PW, OH, OW)
    if need_dw:
        sum_chunks(dwt[:, :k, :filters], dw, acc_dw, True)
        if has_bias:
            sum_bias_chunks(dbt, db, acc_dw)


@helper
def sum_band(part, parts, rows):
    """Rows (first, last) of part `part` of `parts` bands of `rows`, each a multiple of 16 rows long (sum_chunks)."""
    band = -(-rows // (16 * parts)) * 16
    return min(rows, part * band), min(rows, (part + 1) * band)


@helper
def sum_bias_chunks(dbt, db, acc):
    # db (F,) = (db if acc else 0) + dbt[0] + dbt[1] + ..., each in chunk order
    for f in range(dbt.shape[1]):
        total = db[f] if acc else 0.0
        for t in range(dbt.shape[0]):
            total += dbt[t, f]
        db[f] = total


@helper
def sum_chunks(dwt, dw, acc, transposed, first=0, last=-1):
    # dw (F, K) = (dw if acc else 0) + dwt[0] + dwt[1] + ..., each element summed in chunk order in float64,
    # a row at a time (the sums vectorise); transposed: dwt (T, K, F), whose row sums go back into dwt[0]
    # (scratch) and then into dw by 16 x 16 tiles (seed-cnn's conv2: 0.65 -> 0.16 ms a step, the same bits).
    # Rows first .. last of dwt only (first a multiple of 16; last -1: to the end), so that threads can
    # share the rows (sum_band)
    chunks, rows, width = dwt.shape
    rows = rows if last < 0 else last
    row = np.empty(width)
    for r in range(first, rows):
        for i in range(width):
            row[i] = (dw[i, r] if transposed else dw[r, i]) if acc else 0.0
        for t in range(chunks):
            for i in range(width):
                row[i] += dwt[t, r, i]
        if transposed:
            for i in range(width):
                dwt[0, r, i] = row[i]
        else:
            for i in range(width):
                dw[r, i] = row[i]
    if not transposed:
        return
    for r0 in range(first, rows, 16):
        for f0 in range(0, width, 16):
            if r0 + 16 <= rows and f0 + 16 <= width:  # constant trip counts: unrolled
                for f in range(16):
                    for r in range(16):
                        dw[f0 + f, r0 + r] = dwt[0, r0 + r, f0 + f]
            else:
                for f in range(f0, min(f0 + 16, width)):
                    for r in range(r0, min(r0 + 16, rows)):
                        dw[f, r] = dwt[0, r, f]


@kernel
def maxpool_forward(x, y, arg, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    # x (n, C, H, W)  y (n, C, OH, OW)  arg (n, C, OH, OW): flat index into (H, W) of each maximum.
    # Serial: a pass is ~1% of a conv's work, and a parallel region costs seconds of cold compile.
    n = x.shape[0]
    halving = KH == 2 and KW == 2 and SH == 2 and SW == 2 and PH == 0 and PW == 0
    for s in range(n):
        for c in range(C):
            for oi in range(OH):
                if halving:  # the common 2x2 / 2 window, unrolled (10x faster than the general loop)
                    for oj in range(OW):
                        i, j = 2 * oi, 2 * oj
                        best, where = x[s, c, i, j], i * W + j
                        if x[s, c, i, j + 1] > best:
                            best, where = x[s, c, i, j + 1], i * W + j + 1
                        if x[s, c, i + 1, j] > best:
                            best, where = x[s, c, i + 1, j], (i + 1) * W + j
                        if x[s, c, i + 1, j + 1] > best:
                            best, where = x[s, c, i + 1, j + 1], (i + 1) * W + j + 1
                        y[s, c, oi, oj] = best
                        arg[s, c, oi, oj] = where
                    continue
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
    for s in range(n):
        for c in range(C):
            if not acc:
                for i in range(H):
                    for j in range(W):
                        dx[s, c, i, j] = 0.0
            for oi in range(OH):
                for oj in range(OW):
                    where = arg[s, c, oi, oj]
                    dx[s, c, where // W, where % W] += dy[s, c, oi, oj]


@kernel
def avgpool_forward(x, y, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    # x (n, C, H, W)  y (n, C, OH, OW); padding cells are not counted
    for s in range(x.shape[0]):
        for c in range(C):
            for oi in range(OH):
                i0 = max(oi * SH - PH, 0)
                i1 = min(oi * SH - PH + KH, H)
                for oj in range(OW):
                    j0 = max(oj * SW - PW, 0)
                    j1 = min(oj * SW - PW + KW, W)
                    total = 0.0
                    for ii in range(i0, i1):
                        for jj in range(j0, j1):
                            total += x[s, c, ii, jj]
                    y[s, c, oi, oj] = total / ((i1 - i0) * (j1 - j0))


@kernel
def avgpool_backward(dy, dx, acc, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW):
    for s in range(dy.shape[0]):
        for c in range(C):
            if not acc:
                for i in range(H):
                    for j in range(W):
                        dx[s, c, i, j] = 0.0
            for oi in range(OH):
                i0 = max(oi * SH - PH, 0)
                i1 = min(oi * SH - PH + KH, H)
                for oj in range(OW):
                    j0 = max(oj * SW - PW, 0)
                    j1 = min(oj * SW - PW + KW, W)
                    share = dy[s, c, oi, oj] / ((i1 - i0) * (j1 - j0))
                    for ii in range(i0, i1):
                        for jj in range(j0, j1):
                            dx[s, c, ii, jj] += share
