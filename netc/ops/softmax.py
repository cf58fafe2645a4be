"""softmax and log_softmax over a feature vector [F], or over the features of every step of a sequence
[T, F] (each step normalised on its own: the last axis, as PyTorch's dim=-1), so nll can take a label at
every step."""

from __future__ import annotations

from typing import Literal

import numpy as np

from netc.ops.base import LOG_PROBABILITIES, PROBABILITIES, OpDef, OpShapeError, Reference, register
from netc.spec.base import Layer


class Softmax(Layer):
    """exp(x_i) / sum_j exp(x_j) over the feature dimension."""

    op: Literal["softmax"]


class LogSoftmax(Layer):
    """log(softmax(x)) over the feature dimension."""

    op: Literal["log_softmax"]


def _feature_vector(layer, shapes):
    if len(shapes[0]) not in (1, 2):
        raise OpShapeError(
            f"works over a feature vector, got {list(shapes[0])}",
            hint="add `{op: flatten}` before this layer",
        )
    return shapes[0]


def _rows(e, step, tensor, gradient=False):
    """[n, F] rows, or a sequence's [n * T, F]: the kernels normalise each row on its own."""
    shape = step.node.shape
    if len(shape) == 1:
        return e.grad(tensor, shape) if gradient else e.val(tensor, shape)
    return e.step_rows(tensor, shape[0], shape[1], gradient)


def _forward(e, step):
    e.call("softmax_forward", x=_rows(e, step, step.inputs[0]), y=_rows(e, step, step.output),
           log=e.flag(step.node.op == "log_softmax"))


def _backward(e, step):
    x = step.inputs[0]
    if not e.needs_grad[x]:
        return
    e.call("softmax_backward", dy=_rows(e, step, step.output, True), y=_rows(e, step, step.output),
           dx=_rows(e, step, x, True), log=e.flag(step.node.op == "log_softmax"), acc=e.acc(x))


def _onnx(name):
    # the features' axis: 1 of [N, F], 2 of [N, T, F]
    return lambda ctx, node: ctx.add(name, node.inputs, node, axis=len(node.shape))


def _softmax(x):
    # x (n, F) or (n, T, F) -> each row of F summing to 1
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


_SOFTMAX = Reference(lambda layer, xs, params: _softmax(xs[0]),
                     # dx_j = y_j (dy_j - sum_k dy_k y_k)
                     lambda layer, xs, y, dy, params: ([y * (dy - (dy * y).sum(axis=-1, keepdims=True))], {}))
_LOG_SOFTMAX = Reference(lambda layer, xs, params: np.log(_softmax(xs[0])),
                         # dx_j = dy_j - softmax_j sum_k dy_k
                         lambda layer, xs, y, dy, params: ([dy - np.exp(y) * dy.sum(axis=-1, keepdims=True)], {}))
_KERNELS = {"netc.kernels.activation": ("softmax_forward", "softmax_backward")}

SOFTMAX = register(OpDef("softmax", Softmax, _feature_vector, _SOFTMAX, _onnx("Softmax"),
                         ("softmax_forward", "softmax_backward"), kernels=_KERNELS, forward=_forward,
                         backward=_backward, categories=frozenset({PROBABILITIES})))
LOG_SOFTMAX = register(OpDef("log_softmax", LogSoftmax, _feature_vector, _LOG_SOFTMAX, _onnx("LogSoftmax"),
                             ("softmax_forward(log)", "softmax_backward(log)"), kernels=_KERNELS, forward=_forward,
                             backward=_backward, categories=frozenset({PROBABILITIES, LOG_PROBABILITIES})))
