"""local2d: a locally connected layer over [C, H, W] (Keras's LocallyConnected2D, padding 'valid'):
a convolution whose weights are not shared across output positions; an activation may fuse into
its epilogue."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from netc.ops.base import EPILOGUE, OpDef, OpShapeError, Reference, conv_out, need_rank, pair, register
from netc.spec.base import Pair, ParamLayer, PosInt


class Local2d(ParamLayer):
    """Locally connected 2-D layer over [C, H, W] -> [filters, OH, OW], no padding: each output
    position (i, j) has its own weights, a linear layer over its window. Weight [OH, OW, filters,
    C*kh*kw], the window flattened in (c, ki, kj) order (PyTorch's `F.unfold`, ONNX's one-hot Conv);
    bias [filters, OH, OW], one per output unit (as Keras). Parameters: OH*OW*filters*(C*kh*kw + 1)."""

    op: Literal["local2d"]
    filters: PosInt = Field(description="Number of output channels (units per output position).")
    kernel: PosInt | Pair = Field(description="Window size: k or [kh, kw].")
    stride: PosInt | Pair = Field(1, description="Stride: s or [sh, sw].")


def local_dims(layer, in_shape) -> dict:
    """Every size of a local2d layer reading `in_shape` [C, H, W], by the names the kernels use."""
    c, h, w = in_shape
    kh, kw = pair(layer.kernel)
    sh, sw = pair(layer.stride)
    return dict(C=c, H=h, W=w, KH=kh, KW=kw, SH=sh, SW=sw, OH=conv_out(h, kh, sh, 0), OW=conv_out(w, kw, sw, 0),
                F=layer.filters, K=c * kh * kw)


# ----------------------------------------------------------------------------- shape rule, parameters


def _infer(layer, shapes):
    (shape,) = shapes
    need_rank(shape, 3, "local2d reads [channels, height, width]")
    d = local_dims(layer, shape)
    if d["KH"] > d["H"] or d["KW"] > d["W"]:
        raise OpShapeError(
            f"kernel {d['KH']}x{d['KW']} is larger than its input {d['H']}x{d['W']} (local2d has no padding)",
            field="kernel", hint="use a smaller kernel or remove a pooling layer before this one")
    return (d["F"], d["OH"], d["OW"])


def _params(layer, shapes):
    d = local_dims(layer, shapes[0])
    params = {"weight": (d["OH"], d["OW"], d["F"], d["K"])}
    if layer.bias:
        params["bias"] = (d["F"], d["OH"], d["OW"])
    return params


def _macs(layer, shapes, out):
    d = local_dims(layer, shapes[0])
    return d["OH"] * d["OW"] * d["F"] * d["K"]


# ----------------------------------------------------------------------------- emitters


def _geometry(e, d: dict) -> dict:
    return {k: e.size(d[k]) for k in ("KH", "KW", "SH", "SW")}


def _forward(e, step):
    node = step.node
    d = local_dims(node.layer, e.graph.shape_of(step.inputs[0]))
    e.call("local_forward", x=e.val(step.inputs[0], (d["C"], d["H"], d["W"])),
           w=e.param(node, "weight", (d["OH"], d["OW"], d["F"], d["K"])), b=e.param(node, "bias"),
           has_bias=e.flag("bias" in node.param_shapes), y=e.val(step.output, (d["F"], d["OH"], d["OW"])),
           act=e.act_code(step), alpha=e.act_alpha(step), **_geometry(e, d))


def _backward(e, step):
    node, x = step.node, step.inputs[0]
    d = local_dims(node.layer, e.graph.shape_of(x))
    need_dx, need_dw = e.needs_grad[x], node.trainable
    x_dims, y_dims, w_dims = (d["C"], d["H"], d["W"]), (d["F"], d["OH"], d["OW"]), (d["OH"], d["OW"], d["F"], d["K"])
    x_view, w_view = e.val(x, x_dims), e.param(node, "weight", w_dims)
    e.call("local_backward", x=x_view, w=w_view, y=e.val(step.output, y_dims), dy=e.grad(step.output, y_dims),
           act=e.act_code(step), alpha=e.act_alpha(step),
           dx=e.grad(x, x_dims) if need_dx else x_view, need_dx=e.flag(need_dx),
           acc_dx=e.acc(x) if need_dx else e.flag(False),
           dw=e.pgrad(node, "weight", w_dims) if need_dw else w_view, db=e.pgrad(node, "bias"),
           need_dw=e.flag(need_dw), acc_dw=e.pacc(node) if need_dw else e.flag(False),
           has_bias=e.flag("bias" in node.param_shapes), **_geometry(e, d))


# ----------------------------------------------------------------------------- ONNX


def unfold_kernel(channels: int, kh: int, kw: int) -> np.ndarray:
    """[C*kh*kw, C, kh, kw] one-hot filters: a Conv with them copies each window into channels,
    k = (c, ki, kj) row-major (PyTorch's F.unfold)."""
    eye = np.eye(channels * kh * kw, dtype=np.float32)
    return eye.reshape(channels * kh * kw, channels, kh, kw)


def _onnx(ctx, node):
    # patches = Conv(x, one-hot) [N, K, OH, OW]; y = Einsum(patches, weight [OH, OW, F, K]) (+ bias [F, OH, OW])
    d = local_dims(node.layer, ctx.shape_of(node.inputs[0]))
    unfold = ctx.initializer(f"local2d.unfold.{d['C']}x{d['KH']}x{d['KW']}", unfold_kernel(d["C"], d["KH"], d["KW"]))
    patches, product = f"{node.name}.patches", f"{node.name}.product"
    has_bias = "bias" in node.param_shapes
    ctx.nodes.append(ctx.helper.make_node("Conv", [node.inputs[0], unfold], [patches], name=patches,
                                          kernel_shape=[d["KH"], d["KW"]], strides=[d["SH"], d["SW"]]))
    einsum_out = product if has_bias else node.name
    ctx.nodes.append(ctx.helper.make_node("Einsum", [patches, ctx.param(node, "weight")], [einsum_out],
                                          name=einsum_out, equation="nkij,ijfk->nfij"))
    if has_bias:
        ctx.add("Add", [product, ctx.param(node, "bias")], node)


# ----------------------------------------------------------------------------- reference (numpy, float64)


def _patches(layer, x):
    """Yields (i, j, rows, cols, patch (n, K)): each output position's window, flattened (c, ki, kj)."""
    d = local_dims(layer, x.shape[1:])
    for i in range(d["OH"]):
        for j in range(d["OW"]):
            rows = slice(i * d["SH"], i * d["SH"] + d["KH"])
            cols = slice(j * d["SW"], j * d["SW"] + d["KW"])
            yield i, j, rows, cols, x[:, :, rows, cols].reshape(len(x), -1)


def _ref_forward(layer, xs, params):
    # x (n, C, H, W)  w (OH, OW, F, K)  b (F, OH, OW)  ->  y (n, F, OH, OW)
    x, w = xs[0], params["weight"]
    y = np.zeros((len(x), w.shape[2], w.shape[0], w.shape[1]))
    for i, j, _, _, patch in _patches(layer, x):
        y[:, :, i, j] = patch @ w[i, j].T  # (n, K) @ (K, F)
    return y + params["bias"] if "bias" in params else y


def _ref_backward(layer, xs, y, dy, params):
    # dy (n, F, OH, OW) -> dx (n, C, H, W), dw (OH, OW, F, K), db (F, OH, OW)
    x, w = xs[0], params["weight"]
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for i, j, rows, cols, patch in _patches(layer, x):
        dw[i, j] = dy[:, :, i, j].T @ patch  # (F, n) @ (n, K)
        dx[:, :, rows, cols] += (dy[:, :, i, j] @ w[i, j]).reshape(len(x), x.shape[1], rows.stop - rows.start,
                                                                   cols.stop - cols.start)
    grads = {"weight": dw}
    if "bias" in params:
        grads["bias"] = dy.sum(axis=0)
    return [dx], grads


LOCAL2D = register(OpDef(
    "local2d", Local2d, _infer, Reference(_ref_forward, _ref_backward), _onnx,
    ("local_forward (loops)", "local_backward"), params=_params, macs=_macs, categories=frozenset({EPILOGUE}),
    kernels={"netc.kernels.local": ("local_forward", "local_backward")}, forward=_forward, backward=_backward,
    fans=lambda shape: (shape[3], shape[2])))  # weight [OH, OW, F, C*KH*KW]: fan_in C*KH*KW, fan_out F
