"""dropout: while training, zeroes each element with probability p and scales the rest by
1/(1-p) (inverted dropout, as PyTorch); in evaluation the identity."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, Strict

from netc.ops.base import ELEMENTWISE, TRAIN_MODE, OpDef, Reference, Saved, numel, register, same_as_input
from netc.spec.base import Layer


class Dropout(Layer):
    """Zeroes each element with probability p while training, scales the rest by 1/(1-p)."""

    op: Literal["dropout"]
    p: Annotated[float, Strict(), Field(ge=0.0, lt=1.0)] = Field(0.5, description="Drop probability.")


def _saved(layer, shapes, facts):
    return {"mask": Saved(numel(shapes[0]), rows=True)}  # 0 or 1/(1-p) per element: the backward's factor


def _forward(e, step):
    e.call("dropout_forward", x=e.val(step.inputs[0]), y=e.val(step.output), mask=e.saved(step.node, "mask"),
           p=e.hyper(f"{step.node.name}.p"), training="training")


def _backward(e, step):
    x = step.inputs[0]
    if e.needs_grad[x]:
        e.call("dropout_backward", dy=e.grad(step.output), mask=e.saved(step.node, "mask"), dx=e.grad(x),
               acc=e.acc(x))


def _ref_forward(layer, xs, params, mask=None):
    """Evaluation (mask None): the identity; training: x * mask, mask already holding 0 or 1/(1-p)."""
    return xs[0].copy() if mask is None else xs[0] * mask


def _ref_backward(layer, xs, y, dy, params, mask=None):
    return [dy.copy() if mask is None else dy * mask], {}


DROPOUT = register(OpDef(
    "dropout", Dropout, same_as_input, Reference(_ref_forward, _ref_backward),
    lambda ctx, node: ctx.add("Identity", node.inputs, node), ("dropout_forward", "dropout_backward"),
    categories=frozenset({ELEMENTWISE, TRAIN_MODE}), saved=_saved, hyper=lambda layer: {"p": layer.p},
    kernels={"netc.kernels.misc": ("dropout_forward", "dropout_backward")}, forward=_forward, backward=_backward))
