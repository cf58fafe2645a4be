"""conv2d, maxpool2d, avgpool2d, global_avgpool2d: sliding windows over [C, H, W] inputs."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from netc.kernels.gemm_sizes import ROW_TILE_COLUMNS, ROW_TILE_ROWS, TILE_COLUMNS, TILE_ROWS
from netc.ops.base import (EPILOGUE, FILTERS, PARALLEL, POOL_EPILOGUE, WINDOW, OpDef, OpShapeError, Reference, Saved,
                           conv_out, need_rank, numel, pair, register)
from netc.spec.base import Layer, NonNegInt, Pair, ParamLayer, PosInt

_Padding = NonNegInt | Annotated[list[NonNegInt], Field(min_length=2, max_length=2)]


class Conv2d(ParamLayer):
    """2-D convolution (cross-correlation) over [C, H, W]; W shaped [filters, C, kh, kw]."""

    op: Literal["conv2d"]
    filters: PosInt = Field(description="Number of output channels.")
    kernel: PosInt | Pair = Field(description="Kernel size: k or [kh, kw].")
    stride: PosInt | Pair = Field(1, description="Stride: s or [sh, sw].")
    padding: _Padding = Field(0, description="Zero padding on each side: p or [ph, pw].")


class _Pool(Layer):
    kernel: PosInt | Pair = Field(description="Window size: k or [kh, kw].")
    stride: PosInt | Pair | None = Field(None, description="Stride; defaults to the kernel size.")
    padding: _Padding = Field(0, description="Padding on each side (ignored cells never win a max / count in an average).")


class MaxPool2d(_Pool):
    """Max pooling over [C, H, W]."""

    op: Literal["maxpool2d"]


class AvgPool2d(_Pool):
    """Average pooling over [C, H, W] (padding cells are not counted)."""

    op: Literal["avgpool2d"]


class GlobalAvgPool2d(Layer):
    """The mean of each channel over its whole map: [C, H, W] -> [C, 1, 1] (PyTorch's AdaptiveAvgPool2d(1))."""

    op: Literal["global_avgpool2d"]


def conv_geometry(layer, shape) -> tuple[int, int, int, int, int, int]:
    """(kh, kw, sh, sw, ph, pw) of a window op reading `shape` [C, H, W]."""
    if layer.op == "global_avgpool2d":
        _, h, w = shape
        return h, w, h, w, 0, 0
    kh, kw = pair(layer.kernel)
    stride = layer.stride if layer.stride is not None else layer.kernel
    sh, sw = pair(stride)
    ph, pw = pair(layer.padding)
    return kh, kw, sh, sw, ph, pw


def conv_dims(node, in_shape) -> dict:
    """Every size a conv/pool kernel needs, by the names the kernels use."""
    return layer_dims(node.layer, in_shape)


def layer_dims(layer, in_shape) -> dict:
    c, h, w = in_shape
    kh, kw, sh, sw, ph, pw = conv_geometry(layer, in_shape)
    oh, ow = conv_out(h, kh, sh, ph), conv_out(w, kw, sw, pw)
    dims = dict(C=c, H=h, W=w, KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw, OH=oh, OW=ow)
    if layer.op == "conv2d":
        dims["F"] = layer.filters
    return dims


_DIMS = ("C", "H", "W", "KH", "KW", "SH", "SW", "PH", "PW", "OH", "OW")
_DIRECT_SIZES = ("C", "H", "W", "KH", "KW", "PH", "PW", "OH", "OW")  # stride 1


def _sizes(e, d: dict, keys=_DIMS) -> dict:
    return {k: e.size(d[k]) for k in keys}


# ----------------------------------------------------------------------------- shape rules


def _window_out(layer, shape, what):
    need_rank(shape, 3, "conv and pool layers read [channels, height, width]")
    _, h, w = shape
    kh, kw, sh, sw, ph, pw = conv_geometry(layer, shape)
    if kh > h + 2 * ph or kw > w + 2 * pw:
        raise OpShapeError(
            f"kernel {kh}x{kw} is larger than its input {h}x{w} (padding {ph}x{pw})",
            field="kernel",
            hint="use a smaller kernel, add padding, or remove a pooling layer before this one",
        )
    if what != "conv2d" and (ph * 2 > kh or pw * 2 > kw):
        raise OpShapeError(f"padding {ph}x{pw} is more than half the window {kh}x{kw}", field="padding")
    return conv_out(h, kh, sh, ph), conv_out(w, kw, sw, pw)


def _conv_infer(layer, shapes):
    (shape,) = shapes
    oh, ow = _window_out(layer, shape, "conv2d")
    return (layer.filters, oh, ow)


def _conv_params(layer, shapes):
    kh, kw = pair(layer.kernel)
    params = {"weight": (layer.filters, shapes[0][0], kh, kw)}
    if layer.bias:
        params["bias"] = (layer.filters,)
    return params


def _conv_macs(layer, shapes, out):
    kh, kw = pair(layer.kernel)
    return out[0] * out[1] * out[2] * shapes[0][0] * kh * kw


def _pool_infer(layer, shapes):
    (shape,) = shapes
    oh, ow = _window_out(layer, shape, layer.op)
    return (shape[0], oh, ow)


# ----------------------------------------------------------------------------- memory
# A conv runs in a Numba parallel region, its batch in two chunks per core (see netc/kernels/conv.py, netc/pool.py).

COLS_BUDGET = 1 << 16  # im2col elements per chunk and GEMM (256 KiB in float32: the GEMM's operands stay in L2)


def conv_group(k: int, positions: int, batch: int, chunks: int) -> int:
    """Samples per GEMM in a conv chunk: as many as fit COLS_BUDGET (at least one), split evenly
    over the chunk. Wider GEMMs run nearer BLAS peak alone, but the columns they read, the output
    they write and the epilogue that reads it back then leave the core's L2. On the 2-core AVX-512
    VM (2 MiB L2 per core), same-run benchmarks: a budget of 1 M elements (LeNet-5's conv1 26
    samples per GEMM, seed-cnn's conv2 6) ran LeNet-5 at 1.40x PyTorch, 64 K (LeNet-5's convs 3
    and 4 samples, seed-cnn's 1) at 1.88-2.07x (benchmarks/RESULTS.md, "Conv working sets")."""
    chunk = -(-batch // chunks)
    fit = max(1, min(chunk, COLS_BUDGET // (k * positions)))
    groups = -(-chunk // fit)
    return -(-chunk // groups)


KEEP_BUDGET = 1 << 21  # im2col elements each conv may keep from forward to backward (8 MiB in float32)


def keep_columns(k: int, positions: int, batch: int, chunks: int) -> bool:
    """Keep a conv's im2col columns from forward to backward (its weight gradient reads them,
    rather than unrolling the input again: LeNet-5 went from 12,465 to 15,216 samples/s) when
    they fit KEEP_BUDGET. Larger convs unroll twice into shared scratch that stays in cache:
    keeping seed-cnn's conv2 columns (20 MiB) made it slower, 0.65x PyTorch against 0.85-0.94x."""
    return chunks * -(-batch // chunks) * k * positions <= KEEP_BUDGET


def kept_cols_shape(d: dict, batch: int, chunks: int) -> tuple:
    """(T, K, chunk*P): every sample's im2col columns, by chunk."""
    return chunks, d["C"] * d["KH"] * d["KW"], -(-batch // chunks) * d["OH"] * d["OW"]


REGION_ALIGN = 16  # elements: 64 bytes of float32 (a cache line), 128 of float64


def conv_scratch(d: dict, batch: int, chunks: int, dw_transposed: bool = False,
                 tiled: bool = False, direct: bool = False) -> tuple[dict[str, tuple[int, tuple]], int]:
    """The shared scratch of a parallel conv: name -> (offset, shape), and its size. Per chunk:
    im2col columns (or their gradients) and the GEMM output / gathered gradient for G samples at
    a time, and the chunk's weight and bias gradients ([F, K], or [K, F] when `dw_transposed`).
    `tiled` (netc's micro-kernel, see tiled_conv): instead, besides the bias gradients, for the forward
    the weights in row panels ("wpanels", shared), a column panel per chunk ("panel") and the padded
    GEMM output ("tiles"); for the backward, per chunk a group's gradient ("gbuf"), its rows and its
    columns in panels ("gpanels", "gcolumns"), a panel of the transposed im2col matrix ("xpanel"), the
    padded weight gradients ("dwtiles"), a block of column gradients ("dblock"), and W.T in row panels
    ("wtpanels", shared). `direct` (see direct_conv): the weights in row panels, per chunk a padded sample
    ("xpad"), the GEMM output of a sample, rows the padded image's width apart ("tiles"), its gradient
    ("gbuf"), G.T in panels ("gpanels"), the padded transposed weight gradients ("dwtiles") and the column
    gradients ("dcols")."""
    k, positions, filters = d["C"] * d["KH"] * d["KW"], d["OH"] * d["OW"], d["F"]
    if direct:
        row_panels = -(-filters // TILE_ROWS)
        padded_w = d["W"] + 2 * d["PW"]
        column_panels = -(-d["OH"] * padded_w // TILE_COLUMNS)
        reach = ((d["C"] - 1) * (d["H"] + 2 * d["PH"]) + d["KH"] - 1) * padded_w + d["KW"] - 1  # the last k's offset
        regions = [("dbt", (chunks, filters)), ("wpanels", (row_panels, k, TILE_ROWS)),
                   ("xpad", (chunks, reach + column_panels * TILE_COLUMNS)),
                   ("tiles", (chunks, row_panels * TILE_ROWS, column_panels * TILE_COLUMNS)),
                   ("gbuf", (chunks, filters, positions)),
                   ("gpanels", (chunks, -(-filters // ROW_TILE_COLUMNS), positions, ROW_TILE_COLUMNS)),
                   ("dwtiles", (chunks, -(-k // ROW_TILE_ROWS) * ROW_TILE_ROWS,
                                -(-filters // ROW_TILE_COLUMNS) * ROW_TILE_COLUMNS)),
                   ("dcols", (chunks, k, positions))]
    elif not tiled:
        width = conv_group(k, positions, batch, chunks) * positions
        regions = [("work", (chunks, k, width)), ("buf", (chunks, filters, width)),
                   ("dwt", (chunks, k, filters) if dw_transposed else (chunks, filters, k)), ("dbt", (chunks, filters))]
    else:
        panels = -(-filters // TILE_ROWS)
        group_columns = tiled_group(positions, batch, chunks) * positions
        column_panels = -(-group_columns // TILE_COLUMNS)
        regions = [("dbt", (chunks, filters)), ("wpanels", (panels, k, TILE_ROWS)),
                   ("panel", (chunks, k, TILE_COLUMNS)),
                   ("tiles", (chunks, panels * TILE_ROWS, column_panels * TILE_COLUMNS)),
                   ("gbuf", (chunks, filters, group_columns)), ("gpanels", (chunks, panels, group_columns, TILE_ROWS)),
                   ("xpanel", (chunks, group_columns, TILE_COLUMNS)),
                   ("dwtiles", (chunks, panels * TILE_ROWS, -(-k // TILE_COLUMNS) * TILE_COLUMNS)),
                   ("wtpanels", (-(-k // TILE_ROWS), filters, TILE_ROWS)),
                   ("gcolumns", (chunks, column_panels, filters, TILE_COLUMNS)),
                   ("dblock", (chunks, FOLD_PANELS * TILE_ROWS, column_panels * TILE_COLUMNS))]
    layout, offset = {}, 0
    for name, shape in regions:  # each on a cache line where the arena starts on one (Model's zeros_aligned)
        layout[name] = (offset, shape)
        offset += -(-numel(shape) // REGION_ALIGN) * REGION_ALIGN
    return layout, offset


# netc's micro-kernel (netc.kernels.tiles) runs a conv's passes when its filters fill the tiles' rows and
# its k is long enough for the unrolling of each panel to pay off; the forward measured on one core of the
# AVX-512 VM (benchmarks/microkernel.py): seed-cnn's conv2 (128 filters, k = 1600) 1.29-1.33x faster than
# im2col + OpenBLAS, its conv1 (64, k = 75) 0.93-0.98x, LeNet-5's conv2 (16, k = 150) 0.79-0.82x.
TILED_MIN_FILTERS = 64
TILED_MIN_DEPTH = 256
TILED_COLUMNS = 1024  # a chunk's samples unrolled per group: about this many columns (seed-cnn's conv2: 10 samples)
# the column gradients of a tiled conv's backward are folded into dx this many row panels at a time: a call
# of col2im_add over 48 rows of k ran seed-cnn's conv2 fold in 0.20 ms per 8 samples, over 8 rows in 0.36
FOLD_PANELS = -(-48 // TILE_ROWS)


def tiled_conv(d: dict, kept: bool) -> bool:
    """Whether a conv's passes run on netc's micro-kernel: many filters, a long k, and columns not
    kept for the backward (the micro-kernel's panels are no im2col matrix the backward could read)."""
    return (d["F"] >= TILED_MIN_FILTERS and d["C"] * d["KH"] * d["KW"] >= TILED_MIN_DEPTH and not kept
            and not direct_conv(d))


# A conv with many filters but a short k (a network's first conv: 3 channels, 5 x 5) spends as long on
# im2col as on its GEMM; the micro-kernel reads its columns in place instead, from the padded image
# (conv_forward_direct), at the cost of computing each output row as wide as the padded image: at most a
# quarter more (seed-cnn's conv1: 32 columns for 28 outputs).
DIRECT_MIN_FILTERS = 64


def direct_conv(d: dict) -> bool:
    """Whether a conv runs direct (conv_forward_direct, conv_backward_direct): stride 1, many filters, a
    k too short for the tiled passes, and output rows that fill at least 3/4 of the padded image's."""
    return (d["SH"] == d["SW"] == 1 and d["F"] >= DIRECT_MIN_FILTERS
            and d["C"] * d["KH"] * d["KW"] < TILED_MIN_DEPTH and 4 * d["OW"] >= 3 * (d["W"] + 2 * d["PW"]))


def tiled_group(positions: int, batch: int, chunks: int) -> int:
    """Samples per group in a tiled conv's passes: TILED_COLUMNS columns' worth, at least one, at most a chunk."""
    return max(1, min(-(-batch // chunks), TILED_COLUMNS // positions))


def _conv_scratch(layer, shapes, facts):
    d = layer_dims(layer, shapes[0])
    tiled = tiled_conv(d, _keeps_columns(d, facts))
    return conv_scratch(d, facts.batch, facts.chunks, tiled=tiled, direct=direct_conv(d))[1]


def _keeps_columns(d: dict, facts) -> bool:
    return (facts.trains and not direct_conv(d)
            and keep_columns(d["C"] * d["KH"] * d["KW"], d["OH"] * d["OW"], facts.batch, facts.chunks))


def _conv_saved(layer, shapes, facts):
    """The im2col columns a training conv keeps from forward to backward, when they fit."""
    d = layer_dims(layer, shapes[0])
    if not _keeps_columns(d, facts):
        return {}
    return {"cols": Saved(numel(kept_cols_shape(d, facts.batch, facts.chunks)))}


def _maxpool_saved(layer, shapes, facts):
    return {"argmax": Saved(numel(_pool_infer(layer, shapes)), rows=True, ints=True)}  # flat index of each maximum


def _halving(layer, in_shape) -> bool:
    """A 2x2 stride-2 max pool without padding: the one a conv can run in its epilogue."""
    return conv_geometry(layer, in_shape) == (2, 2, 2, 2, 0, 0)


def _conv_views(e, step, d, backward=False) -> list[str]:
    """The conv kernels' memory: its columns (kept from forward to backward, or scratch) and whether
    they are kept, then (backward only) the column gradients, then buf (and dwt, dbt)."""
    layout, _ = conv_scratch(d, e.plan.batch, e.plan.chunks, e.plan.blas_small_kernels)
    conv = step.node.name

    def scratch(region: str, name: str, about: str) -> str:
        return e.scratch(*layout[region], f"{conv}_{name}", f"{about} of {conv} (scratch, per chunk)")

    kept = e.has_saved(step.node, "cols")
    if kept:
        cols = e.saved(step.node, "cols", kept_cols_shape(d, e.plan.batch, e.plan.chunks), "im2col columns")
    else:
        cols = scratch("work", "cols", "im2col columns")
    views = [cols, e.flag(kept)]
    if backward:
        views += [scratch("work", "dcols", "column gradients"), scratch("buf", "buf", "GEMM buffer"),
                  scratch("dwt", "dwt", "weight gradients"), scratch("dbt", "dbt", "bias gradients")]
    else:
        views.append(scratch("buf", "buf", "GEMM buffer"))
    return views


def _micro_kernel_views(e, node, d, direct=False):
    """region, about -> a view of that region of the scratch of a conv on the micro-kernel, tiled or direct
    (conv_scratch)."""
    layout, _ = conv_scratch(d, e.plan.batch, e.plan.chunks, tiled=not direct, direct=direct)

    def view(region: str, about: str) -> str:
        return e.scratch(*layout[region], f"{node.name}_{region}", f"{about} of {node.name} (scratch)")
    return view


def _conv_output(e, step, d) -> tuple[tuple, str]:
    """A conv step's output dims, (F, OH*OW) or with a fused 2x2 max pool (F, OH/2*OW/2), and the
    view of the pool's argmax (without a pool, an empty one keeps the kernel's types)."""
    if step.pool is None:
        return (d["F"], d["OH"] * d["OW"]), e.empty("I", (0, 0, 0), "no_argmax", "no pool")
    dims = (d["F"], (d["OH"] // 2) * (d["OW"] // 2))
    return dims, e.saved(step.pool, "argmax", dims)


def _conv_notes(e, step):
    notes = [f"{e.plan.chunks} parallel chunks of the batch"]
    d = conv_dims(step.node, e.graph.shape_of(step.inputs[0]))
    if direct_conv(d):
        notes.append("on netc's micro-kernel, its columns read in place (conv_forward_direct, conv_backward_direct),"
                     " not im2col + GEMM")
    elif tiled_conv(d, e.has_saved(step.node, "cols")):
        notes.append("on netc's micro-kernel (conv_forward_tiles, conv_backward_tiles), not im2col + GEMM")
    return notes


# ----------------------------------------------------------------------------- emitters


def _conv_forward(e, step):
    node = step.node
    d = conv_dims(node, e.graph.shape_of(step.inputs[0]))
    rows = d["C"] * d["KH"] * d["KW"]
    dims, arg = _conv_output(e, step, d)
    if direct_conv(d):
        scratch = _micro_kernel_views(e, node, d, direct=True)
        e.call("conv_forward_direct", x=e.val(step.inputs[0], (d["C"], d["H"], d["W"])),
               w=e.param(node, "weight", (d["F"], rows)), b=e.param(node, "bias"),
               has_bias=e.flag("bias" in node.param_shapes), y=e.val(step.output, dims), arg=arg,
               pooled=e.flag(step.pool is not None), wpanels=scratch("wpanels", "weights in row panels"),
               xpad=scratch("xpad", "a padded sample per chunk"), buf=scratch("tiles", "micro-tile outputs per chunk"),
               act=e.act_code(step), alpha=e.act_alpha(step), **_sizes(e, d, _DIRECT_SIZES))
        return
    if tiled_conv(d, e.has_saved(node, "cols")):
        scratch = _micro_kernel_views(e, node, d)
        e.call("conv_forward_tiles", x=e.val(step.inputs[0], (d["C"], d["H"], d["W"])),
               w=e.param(node, "weight", (d["F"], rows)), b=e.param(node, "bias"),
               has_bias=e.flag("bias" in node.param_shapes), y=e.val(step.output, dims), arg=arg,
               pooled=e.flag(step.pool is not None), wpanels=scratch("wpanels", "weights in row panels"),
               panel=scratch("panel", "a column panel per chunk"), buf=scratch("tiles", "micro-tile outputs per chunk"),
               act=e.act_code(step), alpha=e.act_alpha(step), **_sizes(e, d))
        return
    cols, kept, buf = _conv_views(e, step, d)
    e.call("conv_forward", x=e.val(step.inputs[0], (d["C"], d["H"], d["W"])),
           w=e.param(node, "weight", (d["F"], rows)), b=e.param(node, "bias"),
           has_bias=e.flag("bias" in node.param_shapes), y=e.val(step.output, dims), arg=arg,
           pooled=e.flag(step.pool is not None), cols=cols, kept=kept, buf=buf, act=e.act_code(step),
           alpha=e.act_alpha(step), **_sizes(e, d))


def _conv_backward(e, step):
    node, x = step.node, step.inputs[0]
    d = conv_dims(node, e.graph.shape_of(x))
    rows = d["C"] * d["KH"] * d["KW"]
    need_dx, need_dw = e.needs_grad[x], node.trainable
    x_view = e.val(x, (d["C"], d["H"], d["W"]))
    w_view = e.param(node, "weight", (d["F"], rows))
    dims, arg = _conv_output(e, step, d)
    common = dict(x=x_view, w=w_view, y=e.val(step.output, dims), dy=e.grad(step.output, dims), arg=arg,
                  pooled=e.flag(step.pool is not None), act=e.act_code(step), alpha=e.act_alpha(step),
                  dx=e.grad(x, (d["C"], d["H"], d["W"])) if need_dx else x_view, need_dx=e.flag(need_dx),
                  acc_dx=e.acc(x) if need_dx else e.flag(False),
                  dw=e.pgrad(node, "weight", (d["F"], rows)) if need_dw else w_view, db=e.pgrad(node, "bias"),
                  need_dw=e.flag(need_dw), acc_dw=e.pacc(node) if need_dw else e.flag(False),
                  has_bias=e.flag("bias" in node.param_shapes))
    if direct_conv(d):
        scratch = _micro_kernel_views(e, node, d, direct=True)
        e.call("conv_backward_direct", **common, xpad=scratch("xpad", "a padded sample per chunk"),
               gbuf=scratch("gbuf", "a sample's gradient per chunk"), gpanels=scratch("gpanels", "G.T in panels"),
               dwt=scratch("dwtiles", "weight gradients per chunk"), dcols=scratch("dcols", "column gradients per chunk"),
               dbt=scratch("dbt", "bias gradients per chunk"), **_sizes(e, d, _DIRECT_SIZES))
        return
    if tiled_conv(d, e.has_saved(node, "cols")):
        scratch = _micro_kernel_views(e, node, d)
        e.call("conv_backward_tiles", **common, gbuf=scratch("gbuf", "a group's gradient per chunk"),
               gpanels=scratch("gpanels", "the gradient's rows in panels"),
               xpanel=scratch("xpanel", "a panel of the transposed im2col matrix per chunk"),
               dwt=scratch("dwtiles", "weight gradients per chunk"), wtpanels=scratch("wtpanels", "W.T in row panels"),
               gcolumns=scratch("gcolumns", "the gradient's columns in panels"),
               dblock=scratch("dblock", "a block of column gradients per chunk"),
               dbt=scratch("dbt", "bias gradients per chunk"),
               **_sizes(e, d))
        return
    cols, kept, dcols, buf, dwt, dbt = _conv_views(e, step, d, backward=True)
    e.call("conv_backward", **common, cols=cols, kept=kept, dcols=dcols, buf=buf, dwt=dwt,
           small_kernels=e.flag(e.plan.blas_small_kernels), dbt=dbt, **_sizes(e, d))


def _maxpool_forward(e, step):
    d = conv_dims(step.node, e.graph.shape_of(step.inputs[0]))
    out = (d["C"], d["OH"], d["OW"])
    e.call("maxpool_forward", x=e.val(step.inputs[0], (d["C"], d["H"], d["W"])), y=e.val(step.output, out),
           arg=e.saved(step.node, "argmax", out), **_sizes(e, d))


def _maxpool_backward(e, step):
    x = step.inputs[0]
    if not e.needs_grad[x]:
        return
    d = conv_dims(step.node, e.graph.shape_of(x))
    out = (d["C"], d["OH"], d["OW"])
    e.call("maxpool_backward", dy=e.grad(step.output, out), arg=e.saved(step.node, "argmax", out),
           dx=e.grad(x, (d["C"], d["H"], d["W"])), acc=e.acc(x), **_sizes(e, d, ("C", "H", "W", "OH", "OW")))


def _avgpool_forward(e, step):
    d = conv_dims(step.node, e.graph.shape_of(step.inputs[0]))
    e.call("avgpool_forward", x=e.val(step.inputs[0], (d["C"], d["H"], d["W"])),
           y=e.val(step.output, (d["C"], d["OH"], d["OW"])), **_sizes(e, d))


def _avgpool_backward(e, step):
    x = step.inputs[0]
    if not e.needs_grad[x]:
        return
    d = conv_dims(step.node, e.graph.shape_of(x))
    e.call("avgpool_backward", dy=e.grad(step.output, (d["C"], d["OH"], d["OW"])),
           dx=e.grad(x, (d["C"], d["H"], d["W"])), acc=e.acc(x), **_sizes(e, d))


# ----------------------------------------------------------------------------- ONNX


def _window_attributes(ctx, node) -> dict:
    kh, kw, sh, sw, ph, pw = conv_geometry(node.layer, ctx.shape_of(node.inputs[0]))
    return dict(kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw])


def _conv_onnx(ctx, node):
    inputs = [node.inputs[0], ctx.param(node, "weight")] + ([ctx.param(node, "bias")] if "bias" in node.param_shapes else [])
    ctx.add("Conv", inputs, node, **_window_attributes(ctx, node))


def _maxpool_onnx(ctx, node):
    ctx.add("MaxPool", node.inputs, node, **_window_attributes(ctx, node))


def _avgpool_onnx(ctx, node):
    ctx.add("AveragePool", node.inputs, node, count_include_pad=0, **_window_attributes(ctx, node))


def _global_avgpool_onnx(ctx, node):
    ctx.add("GlobalAveragePool", node.inputs, node)


# ----------------------------------------------------------------------------- references (numpy, float64)


def _ref_geometry(layer, x_shape):
    """(kh, kw, sh, sw, ph, pw, oh, ow) of the layer on a batch of shape x_shape (n, C, H, W)."""
    _, _, h, w = x_shape
    if layer.op == "global_avgpool2d":
        return h, w, h, w, 0, 0, 1, 1
    kh, kw = pair(layer.kernel)
    sh, sw = pair(layer.kernel if layer.stride is None else layer.stride)
    ph, pw = pair(layer.padding)
    return kh, kw, sh, sw, ph, pw, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def _conv_ref_forward(layer, xs, params):
    # x (n, C, H, W)  w (F, C, KH, KW)  b (F,)  ->  y (n, F, OH, OW)
    x, w = xs[0], params["weight"]
    kh, kw, sh, sw, ph, pw, oh, ow = _ref_geometry(layer, x.shape)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.zeros((len(x), w.shape[0], oh, ow))
    for i in range(oh):
        for j in range(ow):
            y[:, :, i, j] = np.einsum("nckl,fckl->nf", xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw], w)
    return y + params["bias"][None, :, None, None] if "bias" in params else y


def _conv_ref_backward(layer, xs, y, dy, params):
    # dy (n, F, OH, OW) -> dx (n, C, H, W), dw (F, C, KH, KW), db (F,)
    x, w = xs[0], params["weight"]
    kh, kw, sh, sw, ph, pw, oh, ow = _ref_geometry(layer, x.shape)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(oh):
        for j in range(ow):
            rows, cols = slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw)
            dw += np.einsum("nf,nckl->fckl", dy[:, :, i, j], xp[:, :, rows, cols])
            dxp[:, :, rows, cols] += np.einsum("nf,fckl->nckl", dy[:, :, i, j], w)
    grads = {"weight": dw}
    if "bias" in params:
        grads["bias"] = dy.sum(axis=(0, 2, 3))
    return [dxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]], grads


def _windows(layer, x, fill):
    """Each output position's window of the padded input: yields (i, j, window (n, C, KH, KW), slices)."""
    kh, kw, sh, sw, ph, pw, oh, ow = _ref_geometry(layer, x.shape)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    for i in range(oh):
        for j in range(ow):
            rows, cols = slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw)
            yield i, j, xp[:, :, rows, cols], (rows, cols)


def _maxpool_ref_forward(layer, xs, params):
    x = xs[0]
    *_, oh, ow = _ref_geometry(layer, x.shape)
    y = np.zeros(x.shape[:2] + (oh, ow))
    for i, j, window, _ in _windows(layer, x, -np.inf):  # padding never wins
        y[:, :, i, j] = window.max(axis=(2, 3))
    return y


def _maxpool_ref_backward(layer, xs, y, dy, params):
    # each output's gradient goes to its window's maximum (the first in row-major order on a tie)
    x = xs[0]
    kh, kw, sh, sw, ph, pw, oh, ow = _ref_geometry(layer, x.shape)
    dxp = np.zeros(x.shape[:2] + (x.shape[2] + 2 * ph, x.shape[3] + 2 * pw))
    for i, j, window, (rows, cols) in _windows(layer, x, -np.inf):
        flat = window.reshape(window.shape[0], window.shape[1], -1).argmax(axis=2)  # (n, C)
        wi, wj = np.unravel_index(flat, (kh, kw))
        n_idx, c_idx = np.indices(flat.shape)
        np.add.at(dxp, (n_idx, c_idx, rows.start + wi, cols.start + wj), dy[:, :, i, j])
    return [dxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]], {}


def _avg_counts(layer, x_shape):
    """(OH, OW): real (non-padding) cells under each window (PyTorch count_include_pad=False)."""
    real = np.ones((1, 1) + tuple(x_shape[2:]))
    *_, oh, ow = _ref_geometry(layer, x_shape)
    counts = np.zeros((oh, ow))
    for i, j, window, _ in _windows(layer, real, 0.0):
        counts[i, j] = window.sum()
    return counts


def _avgpool_ref_forward(layer, xs, params):
    x = xs[0]
    counts = _avg_counts(layer, x.shape)
    y = np.zeros(x.shape[:2] + counts.shape)
    for i, j, window, _ in _windows(layer, x, 0.0):
        y[:, :, i, j] = window.sum(axis=(2, 3)) / counts[i, j]
    return y


def _avgpool_ref_backward(layer, xs, y, dy, params):
    x = xs[0]
    kh, kw, sh, sw, ph, pw, oh, ow = _ref_geometry(layer, x.shape)
    counts = _avg_counts(layer, x.shape)
    dxp = np.zeros(x.shape[:2] + (x.shape[2] + 2 * ph, x.shape[3] + 2 * pw))
    for i, j, _, (rows, cols) in _windows(layer, x, 0.0):
        dxp[:, :, rows, cols] += (dy[:, :, i, j] / counts[i, j])[:, :, None, None]
    return [dxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]], {}  # what landed on padding is dropped


# ----------------------------------------------------------------------------- the ops

_CONV_KERNELS = {"netc.kernels.conv": ("conv_forward", "conv_forward_tiles", "conv_forward_direct", "conv_backward",
                                       "conv_backward_tiles", "conv_backward_direct")}
_AVG_KERNELS = {"netc.kernels.conv": ("avgpool_forward", "avgpool_backward")}

CONV2D = register(OpDef(
    "conv2d", Conv2d, _conv_infer, Reference(_conv_ref_forward, _conv_ref_backward), _conv_onnx,
    ("conv_forward (im2col + GEMM)", "conv_backward"), params=_conv_params, macs=_conv_macs,
    categories=frozenset({EPILOGUE, WINDOW, FILTERS, POOL_EPILOGUE, PARALLEL}), kernels=_CONV_KERNELS,
    forward=_conv_forward, backward=_conv_backward, saved=_conv_saved, scratch=_conv_scratch, notes=_conv_notes))
MAXPOOL2D = register(OpDef(
    "maxpool2d", MaxPool2d, _pool_infer, Reference(_maxpool_ref_forward, _maxpool_ref_backward), _maxpool_onnx,
    ("maxpool_forward", "maxpool_backward"), categories=frozenset({WINDOW}),
    kernels={"netc.kernels.conv": ("maxpool_forward", "maxpool_backward")}, forward=_maxpool_forward,
    backward=_maxpool_backward, saved=_maxpool_saved, fuses_as_pool=_halving))
AVGPOOL2D = register(OpDef(
    "avgpool2d", AvgPool2d, _pool_infer, Reference(_avgpool_ref_forward, _avgpool_ref_backward), _avgpool_onnx,
    ("avgpool_forward", "avgpool_backward"), categories=frozenset({WINDOW}), kernels=_AVG_KERNELS,
    forward=_avgpool_forward, backward=_avgpool_backward))
# the average pool's kernels with the whole map as its window
GLOBAL_AVGPOOL2D = register(OpDef(
    "global_avgpool2d", GlobalAvgPool2d, _pool_infer, Reference(_avgpool_ref_forward, _avgpool_ref_backward),
    _global_avgpool_onnx, ("avgpool_forward (whole map)", "avgpool_backward"), categories=frozenset({WINDOW}),
    kernels=_AVG_KERNELS, forward=_avgpool_forward, backward=_avgpool_backward))
