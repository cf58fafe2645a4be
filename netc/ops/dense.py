"""linear: y = x W^T + b, W shaped [out, in] (as PyTorch); an activation may fuse into its epilogue."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from netc.ops.base import BLAS, EPILOGUE, OpDef, OpShapeError, Reference, register
from netc.spec.base import ParamLayer, PosInt


class Linear(ParamLayer):
    """Fully connected: y = x W^T + b, W shaped [out, in] (as PyTorch)."""

    op: Literal["linear"]
    out: PosInt = Field(description="Number of output features.")


def _infer(layer, shapes):
    (shape,) = shapes
    if len(shape) != 1:
        raise OpShapeError(
            f"needs a flat input [features], got {list(shape)}",
            hint="add `{op: flatten}` before this layer",
        )
    return (layer.out,)


def _params(layer, shapes):
    params = {"weight": (layer.out, shapes[0][0])}
    if layer.bias:
        params["bias"] = (layer.out,)
    return params


def _macs(layer, shapes, out):
    return shapes[0][0] * layer.out


# ----------------------------------------------------------------------------- emitters


def _forward(e, step):
    node = step.node
    out, fan_in = node.param_shapes["weight"]
    e.call("linear_forward", x=e.val(step.inputs[0], (fan_in,)), w=e.param(node, "weight", (out, fan_in)),
           b=e.param(node, "bias"), has_bias=e.flag("bias" in node.param_shapes), y=e.val(step.output, (out,)),
           act=e.act_code(step), alpha=e.act_alpha(step), blas=e.flag(e.use_blas(fan_in, out)))


def _backward(e, step):
    node, x = step.node, step.inputs[0]
    out, fan_in = node.param_shapes["weight"]
    need_dx, need_dw = e.needs_grad[x], node.trainable
    x_view, w_view = e.val(x, (fan_in,)), e.param(node, "weight", (out, fan_in))
    e.call("linear_backward", x=x_view, w=w_view, y=e.val(step.output, (out,)), dy=e.grad(step.output, (out,)),
           act=e.act_code(step), alpha=e.act_alpha(step),
           dx=e.grad(x, (fan_in,)) if need_dx else x_view, need_dx=e.flag(need_dx),
           acc_dx=e.acc(x) if need_dx else e.flag(False),
           dw=e.pgrad(node, "weight", (out, fan_in)) if need_dw else w_view, db=e.pgrad(node, "bias"),
           need_dw=e.flag(need_dw), acc_dw=e.pacc(node) if need_dw else e.flag(False),
           has_bias=e.flag("bias" in node.param_shapes), blas=e.flag(e.use_blas(fan_in, out)))


def _notes(e, step):
    out, fan_in = step.node.param_shapes["weight"]
    return ["BLAS" if e.use_blas(fan_in, out) else "loops"]


def _onnx(ctx, node):
    inputs = [node.inputs[0], ctx.param(node, "weight")] + ([ctx.param(node, "bias")] if "bias" in node.param_shapes else [])
    ctx.add("Gemm", inputs, node, transB=1)


# ----------------------------------------------------------------------------- reference


def _ref_forward(layer, xs, params):
    # x (n, I)  w (O, I)  b (O,) or absent  ->  y (n, O)
    y = xs[0] @ params["weight"].T
    return y + params["bias"] if "bias" in params else y


def _ref_backward(layer, xs, y, dy, params):
    # dy (n, O) -> dx (n, I), dw (O, I), db (O,)
    grads = {"weight": dy.T @ xs[0]}
    if "bias" in params:
        grads["bias"] = dy.sum(axis=0)
    return [dy @ params["weight"]], grads


LINEAR = register(OpDef(
    "linear", Linear, _infer, Reference(_ref_forward, _ref_backward), _onnx,
    ("linear_forward", "linear_backward"), params=_params, macs=_macs, categories=frozenset({EPILOGUE, BLAS}),
    kernels={"netc.kernels.dense": ("linear_forward", "linear_backward")}, forward=_forward, backward=_backward,
    notes=_notes))
