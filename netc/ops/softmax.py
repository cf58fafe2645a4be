"""softmax and log_softmax over a feature vector [F]."""

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
    if len(shapes[0]) != 1:
        raise OpShapeError(
            f"works over a feature vector, got {list(shapes[0])}",
            hint="add `{op: flatten}` before this layer",
        )
    return shapes[0]


def _forward(e, step):
    f = step.node.shape[0]
    e.call("softmax_forward", x=e.val(step.inputs[0], (f,)), y=e.val(step.output, (f,)),
           log=e.flag(step.node.op == "log_softmax"))


def _backward(e, step):
    x = step.inputs[0]
    if not e.needs_grad[x]:
        return
    f = step.node.shape[0]
    e.call("softmax_backward", dy=e.grad(step.output, (f,)), y=e.val(step.output, (f,)), dx=e.grad(x, (f,)),
           log=e.flag(step.node.op == "log_softmax"), acc=e.acc(x))


def _onnx(name):
    return lambda ctx, node: ctx.add(name, node.inputs, node, axis=1)


def _softmax(x):
    # x (n, F) -> rows summing to 1
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


_SOFTMAX = Reference(lambda layer, xs, params: _softmax(xs[0]),
                     # dx_j = y_j (dy_j - sum_k dy_k y_k)
                     lambda layer, xs, y, dy, params: ([y * (dy - (dy * y).sum(axis=1, keepdims=True))], {}))
_LOG_SOFTMAX = Reference(lambda layer, xs, params: np.log(_softmax(xs[0])),
                         # dx_j = dy_j - softmax_j sum_k dy_k
                         lambda layer, xs, y, dy, params: ([dy - np.exp(y) * dy.sum(axis=1, keepdims=True)], {}))
_KERNELS = {"netc.kernels.activation": ("softmax_forward", "softmax_backward")}

SOFTMAX = register(OpDef("softmax", Softmax, _feature_vector, _SOFTMAX, _onnx("Softmax"),
                         ("softmax_forward", "softmax_backward"), kernels=_KERNELS, forward=_forward,
                         backward=_backward, categories=frozenset({PROBABILITIES})))
LOG_SOFTMAX = register(OpDef("log_softmax", LogSoftmax, _feature_vector, _LOG_SOFTMAX, _onnx("LogSoftmax"),
                             ("softmax_forward(log)", "softmax_backward(log)"), kernels=_KERNELS, forward=_forward,
                             backward=_backward, categories=frozenset({PROBABILITIES, LOG_PROBABILITIES})))
