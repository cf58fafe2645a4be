"""Ops that move no data: flatten, reshape, identity. Their outputs are views of their inputs
(category ALIAS): no kernel runs and gradients flow through the same memory."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, Strict

from netc.ops.base import ALIAS, ELEMENTWISE, OpDef, OpShapeError, Reference, numel, register, same_as_input
from netc.spec.base import Layer


class Flatten(Layer):
    """Flattens everything but the batch dimension."""

    op: Literal["flatten"]


class Reshape(Layer):
    """Reshapes (batch dimension excluded); one entry may be -1."""

    op: Literal["reshape"]
    shape: Annotated[list[Annotated[int, Strict(), Field(ge=-1)]], Field(min_length=1)] = Field(
        description="Target shape without the batch dimension."
    )


class Identity(Layer):
    """Passes its input through."""

    op: Literal["identity"]


def _flatten(layer, shapes):
    return (numel(shapes[0]),)


def _reshape(layer, shapes):
    total = numel(shapes[0])
    target = list(layer.shape)
    if target.count(-1) > 1:
        raise OpShapeError("allows at most one -1", field="shape")
    if 0 in target:
        raise OpShapeError("sizes must be positive (or one -1)", field="shape")
    known = numel(tuple(s for s in target if s != -1))
    if -1 in target:
        if total % known:
            raise OpShapeError(f"cannot reshape {list(shapes[0])} ({total} values) into {target}", field="shape")
        target[target.index(-1)] = total // known
    if numel(tuple(target)) != total:
        raise OpShapeError(
            f"cannot reshape {list(shapes[0])} ({total} values) into {target} ({numel(tuple(target))} values)",
            field="shape",
        )
    return tuple(target)


def _reshape_onnx(ctx, node):
    import numpy as np

    shape = ctx.initializer(f"{node.name}.shape", np.array([0, *node.shape], np.int64))  # 0: keep the batch
    ctx.add("Reshape", [node.inputs[0], shape], node)


# a view: the reference reshapes, its backward reshapes the gradient back
_VIEW = Reference(lambda layer, xs, params: xs[0].reshape(len(xs[0]), *_ref_shape(layer, xs[0])),
                  lambda layer, xs, y, dy, params: ([dy.reshape(xs[0].shape)], {}))


def _ref_shape(layer, x) -> tuple:
    if layer.op == "reshape":
        return tuple(layer.shape)
    if layer.op == "flatten":
        return (-1,)
    return x.shape[1:]


_LABELS = ("(view, no kernel)", "(view)")
FLATTEN = register(OpDef("flatten", Flatten, _flatten, _VIEW,
                         lambda ctx, node: ctx.add("Flatten", node.inputs, node, axis=1), _LABELS,
                         categories=frozenset({ALIAS})))
RESHAPE = register(OpDef("reshape", Reshape, _reshape, _VIEW, _reshape_onnx, _LABELS, categories=frozenset({ALIAS})))
IDENTITY = register(OpDef("identity", Identity, same_as_input, _VIEW,
                          lambda ctx, node: ctx.add("Identity", node.inputs, node), _LABELS,
                          categories=frozenset({ALIAS, ELEMENTWISE})))
