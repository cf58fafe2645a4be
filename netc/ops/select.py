"""slice and select: a part of a tensor along one axis (steps of a sequence, a range of channels).
`slice` keeps the axis; `select` takes one index and drops it (`index: -1`, a sequence's last step).

Both copy: the tensor is seen as [outer, axis, inner] per sample and one kernel copies the chosen
range of the middle axis (netc.kernels.misc.slice_forward); the backward places the gradient back
into that range, zeros elsewhere. Negative positions count from the end, as in Python.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, Strict

from netc.ops.base import OpDef, OpShapeError, Reference, numel, register
from netc.spec.base import Layer, NonNegInt

Position = Annotated[int, Strict()]


class Slice(Layer):
    """Positions start..stop-1 along an axis (batch excluded), the axis kept: `{axis: 0, start: -4}`, a
    sequence's last 4 steps. Negative positions count from the end."""

    op: Literal["slice"]
    axis: NonNegInt = Field(0, description="Axis without the batch dimension (0: a sequence's steps).")
    start: Position = Field(0, description="First position (negative: from the end).")
    stop: Position | None = Field(None, description="One past the last position (negative: from the end); "
                                                    "default: the end.")


class Select(Layer):
    """One position along an axis (batch excluded), the axis removed: `{axis: 0, index: -1}`, a
    sequence's last step."""

    op: Literal["select"]
    axis: NonNegInt = Field(0, description="Axis without the batch dimension (0: a sequence's steps).")
    index: Position = Field(description="The position (negative: from the end).")


def _axis(layer, shape) -> int:
    if layer.axis >= len(shape):
        raise OpShapeError(f"axis {layer.axis} is out of range for an input of shape {list(shape)} "
                           f"(rank {len(shape)}, batch excluded)", field="axis",
                           hint=f"axes count from 0 without the batch: 0..{len(shape) - 1}" if shape else
                           "a scalar input has no axis to take from")
    return shape[layer.axis]


def bounds(layer, shape) -> tuple[int, int]:
    """(first position, length) the layer takes along its axis of an input of `shape`."""
    size = _axis(layer, shape)
    if layer.op == "select":
        index = layer.index + size if layer.index < 0 else layer.index
        if not 0 <= index < size:
            raise OpShapeError(f"index {layer.index} is out of range for axis {layer.axis} of size {size}",
                               field="index", hint=f"an index in {-size}..{size - 1}")
        return index, 1
    start = min(max(layer.start + size if layer.start < 0 else layer.start, 0), size)
    stop = size if layer.stop is None else layer.stop + size if layer.stop < 0 else layer.stop
    stop = min(max(stop, 0), size)
    if stop <= start:
        raise OpShapeError(f"start {layer.start}, stop {layer.stop} take nothing of axis {layer.axis} of size {size}",
                           field="start", hint=f"positions are 0..{size - 1} (or -{size}..-1 from the end)")
    return start, stop - start


def _infer(layer, shapes):
    (shape,) = shapes
    _, length = bounds(layer, shape)
    if layer.op == "select":
        return tuple(shape[:layer.axis]) + tuple(shape[layer.axis + 1:])
    return tuple(shape[:layer.axis]) + (length,) + tuple(shape[layer.axis + 1:])


def _dims(e, step) -> tuple[tuple, tuple, int]:
    """The input seen as [outer, size, inner], the output as [outer, length, inner], and the first position."""
    layer = step.node.layer
    shape = e.graph.shape_of(step.inputs[0])
    start, length = bounds(layer, shape)
    outer, inner = numel(shape[:layer.axis]), numel(shape[layer.axis + 1:])
    return (outer, shape[layer.axis], inner), (outer, length, inner), start


def _forward(e, step):
    whole, part, start = _dims(e, step)
    e.call("slice_forward", x=e.val(step.inputs[0], whole), y=e.val(step.output, part), start=e.size(start))


def _backward(e, step):
    x = step.inputs[0]
    if e.needs_grad[x]:
        whole, part, start = _dims(e, step)
        e.call("slice_backward", dy=e.grad(step.output, part), dx=e.grad(x, whole), start=e.size(start),
               acc=e.acc(x))


def _ref_forward(layer, xs, params):
    x = xs[0]
    start, length = bounds(layer, x.shape[1:])
    part = np.take(x, np.arange(start, start + length), axis=layer.axis + 1)
    return part.squeeze(layer.axis + 1) if layer.op == "select" else part


def _ref_backward(layer, xs, y, dy, params):
    x = xs[0]
    start, length = bounds(layer, x.shape[1:])
    dx = np.zeros_like(x)
    index = [slice(None)] * x.ndim
    index[layer.axis + 1] = slice(start, start + length)
    dx[tuple(index)] = np.expand_dims(dy, layer.axis + 1) if layer.op == "select" else dy
    return [dx], {}


def _onnx(ctx, node):
    layer = node.layer
    start, length = bounds(layer, ctx.graph.shape_of(node.inputs[0]))
    if layer.op == "select":
        index = ctx.initializer(f"{node.name}.index", np.array(start, np.int64))
        ctx.add("Gather", [node.inputs[0], index], node, axis=layer.axis + 1)
        return
    starts = ctx.initializer(f"{node.name}.starts", np.array([start], np.int64))
    ends = ctx.initializer(f"{node.name}.ends", np.array([start + length], np.int64))
    axes = ctx.initializer(f"{node.name}.axes", np.array([layer.axis + 1], np.int64))
    ctx.add("Slice", [node.inputs[0], starts, ends, axes], node)


_KERNELS = {"netc.kernels.misc": ("slice_forward", "slice_backward")}
_REFERENCE = Reference(_ref_forward, _ref_backward)
SLICE = register(OpDef("slice", Slice, _infer, _REFERENCE, _onnx, ("slice_forward", "slice_backward"),
                       kernels=_KERNELS, forward=_forward, backward=_backward))
SELECT = register(OpDef("select", Select, _infer, _REFERENCE, _onnx, ("slice_forward", "slice_backward"),
                        kernels=_KERNELS, forward=_forward, backward=_backward))
