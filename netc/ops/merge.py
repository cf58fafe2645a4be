"""Ops with several inputs: add, sub, mul, concat, stack."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from netc.ops.base import OpDef, OpShapeError, Reference, numel, register
from netc.spec.base import Layer, NonNegInt


class Add(Layer):
    """Element-wise sum of two or more tensors of the same shape."""

    op: Literal["add"]


class Sub(Layer):
    """Element-wise difference of two tensors of the same shape: the first minus the second."""

    op: Literal["sub"]


class Mul(Layer):
    """Element-wise product of two or more tensors of the same shape: a gate, sigmoid(a) * b."""

    op: Literal["mul"]


class Concat(Layer):
    """Concatenation of two or more tensors along a feature axis."""

    op: Literal["concat"]
    axis: NonNegInt = Field(0, description="Axis without the batch dimension (0 = channels/features).")


class Stack(Layer):
    """Two or more tensors of the same shape stacked along a new axis: [T, F] steps from T tensors [F]."""

    op: Literal["stack"]
    axis: NonNegInt = Field(0, description="Where the new axis goes (batch excluded): 0 makes it the first.")


def _same_shape(layer, shapes):
    """The inputs' common shape (add, mul, stack take tensors of one shape: no broadcasting)."""
    first = shapes[0]
    for other in shapes[1:]:
        if other != first:
            listed = " and ".join(str(list(s)) for s in shapes)
            raise OpShapeError(f"got {listed}", field="in",
                               hint=f"every input of {layer.op} must have the same shape (no broadcasting)")
    return first


def _concat(layer, shapes):
    rank = len(shapes[0])
    axis = layer.axis
    if axis >= rank:
        raise OpShapeError(f"axis {axis} is out of range for inputs of rank {rank}", field="axis")
    for other in shapes[1:]:
        same_rest = len(other) == rank and all(a == b for i, (a, b) in enumerate(zip(other, shapes[0])) if i != axis)
        if not same_rest:
            listed = " and ".join(str(list(s)) for s in shapes)
            raise OpShapeError(
                f"on axis {axis} got {listed}", field="in",
                hint=f"inputs must agree on every axis but {axis}",
            )
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return tuple(out)


def _stack(layer, shapes):
    first = _same_shape(layer, shapes)
    if layer.axis > len(first):
        raise OpShapeError(f"axis {layer.axis} is out of range for inputs of rank {len(first)} (the new axis goes "
                           f"at 0..{len(first)})", field="axis")
    return tuple(first[:layer.axis]) + (len(shapes),) + tuple(first[layer.axis:])


# ----------------------------------------------------------------------------- emitters


def _add_forward(e, step):
    e.call("add_forward2", a=e.val(step.inputs[0]), b=e.val(step.inputs[1]), y=e.val(step.output))
    for extra in step.inputs[2:]:
        e.call("add_into", a=e.val(extra), y=e.val(step.output))


def _add_backward(e, step):
    for tensor in step.inputs:  # each input with its own need for a gradient
        if e.needs_grad[tensor]:
            e.call("grad_pass", dy=e.grad(step.output), dx=e.grad(tensor), acc=e.acc(tensor))


def _sub_forward(e, step):
    a, b = step.inputs
    e.call("sub_forward", a=e.val(a), b=e.val(b), y=e.val(step.output))


def _sub_backward(e, step):
    a, b = step.inputs
    if e.needs_grad[a]:
        e.call("grad_pass", dy=e.grad(step.output), dx=e.grad(a), acc=e.acc(a))
    if e.needs_grad[b]:
        e.call("grad_negated", dy=e.grad(step.output), dx=e.grad(b), acc=e.acc(b))


def _mul_forward(e, step):
    e.call("mul_forward2", a=e.val(step.inputs[0]), b=e.val(step.inputs[1]), y=e.val(step.output))
    for extra in step.inputs[2:]:
        e.call("mul_into", a=e.val(extra), y=e.val(step.output))


def _mul_backward(e, step):
    """d input k = dy * the product of the other inputs (their forward values, kept in A); with three
    or more inputs that product is formed in the scratch first."""
    size = numel(e.graph.shape_of(step.output))
    for k, tensor in enumerate(step.inputs):
        if not e.needs_grad[tensor]:
            continue
        others = step.inputs[:k] + step.inputs[k + 1:]
        other = e.val(others[0])
        if len(others) > 1:
            other = e.scratch(0, (e.plan.batch * size,), f"{step.output}_others", f"{step.output}: the other inputs' "
                              "product")
            e.call("mul_forward2", a=e.val(others[0]), b=e.val(others[1]), y=other)
            for extra in others[2:]:
                e.call("mul_into", a=e.val(extra), y=other)
        e.call("mul_grad", dy=e.grad(step.output), x=other, dx=e.grad(tensor), acc=e.acc(tensor))


def _mul_scratch(layer, shapes, facts):
    return facts.batch * numel(shapes[0]) if len(shapes) > 2 else 0


def _mul_reference(layer, xs, params):
    y = xs[0].copy()
    for x in xs[1:]:
        y = y * x
    return y


def _mul_reference_backward(layer, xs, y, dy, params):
    grads = []
    for k in range(len(xs)):
        g = dy.copy()
        for j, x in enumerate(xs):
            if j != k:
                g = g * x
        grads.append(g)
    return grads, {}


def _concat_out_dims(e, step) -> tuple:
    shape = e.graph.shape_of(step.output)
    axis = step.node.layer.axis
    return numel(shape[:axis]), numel(shape[axis:])


def _concat_parts(e, step):
    """(tensor, offset inside each outer row of the output, view dims) for each input."""
    axis = step.node.layer.axis
    offset = 0
    for tensor in step.inputs:
        shape = e.graph.shape_of(tensor)
        dims = (numel(shape[:axis]), numel(shape[axis:]))
        yield tensor, offset, dims
        offset += dims[1]


def _concat_forward(e, step):
    for tensor, offset, dims in _concat_parts(e, step):
        e.call("concat_forward", x=e.val(tensor, dims), y=e.val(step.output, _concat_out_dims(e, step)),
               offset=e.size(offset))


def _concat_backward(e, step):
    for tensor, offset, dims in _concat_parts(e, step):
        if e.needs_grad[tensor]:
            e.call("concat_backward", dy=e.grad(step.output, _concat_out_dims(e, step)), dx=e.grad(tensor, dims),
                   offset=e.size(offset), acc=e.acc(tensor))


def _stack_parts(e, step):
    """Stacking is concatenating each input, seen as [outer, 1, inner], along the new axis: the
    output seen as [outer, N * inner], input i at offset i * inner."""
    shape = e.graph.shape_of(step.inputs[0])
    axis = step.node.layer.axis
    outer, inner = numel(shape[:axis]), numel(shape[axis:])
    out = (outer, len(step.inputs) * inner)
    for i, tensor in enumerate(step.inputs):
        yield tensor, (outer, inner), out, i * inner


def _stack_forward(e, step):
    for tensor, dims, out, offset in _stack_parts(e, step):
        e.call("concat_forward", x=e.val(tensor, dims), y=e.val(step.output, out), offset=e.size(offset))


def _stack_backward(e, step):
    for tensor, dims, out, offset in _stack_parts(e, step):
        if e.needs_grad[tensor]:
            e.call("concat_backward", dy=e.grad(step.output, out), dx=e.grad(tensor, dims), offset=e.size(offset),
                   acc=e.acc(tensor))


def _stack_onnx(ctx, node):
    axes = ctx.initializer(f"netc.axis{node.layer.axis + 1}", np.array([node.layer.axis + 1], np.int64))
    parts = []
    for i, tensor in enumerate(node.inputs):
        part = f"{node.name}.part{i}"
        ctx.nodes.append(ctx.helper.make_node("Unsqueeze", [tensor, axes], [part], name=part))
        parts.append(part)
    ctx.add("Concat", parts, node, axis=node.layer.axis + 1)


def _stack_ref_backward(layer, xs, y, dy, params):
    return [np.take(dy, i, axis=layer.axis + 1) for i in range(len(xs))], {}


def _add_onnx(ctx, node):
    ctx.add("Add" if len(node.inputs) == 2 else "Sum", node.inputs, node)


def _mul_onnx(ctx, node):
    if len(node.inputs) == 2:
        ctx.add("Mul", node.inputs, node)
        return
    partial = node.inputs[0]
    for i, tensor in enumerate(node.inputs[1:-1], 1):
        product = f"{node.name}.product{i}"
        ctx.nodes.append(ctx.helper.make_node("Mul", [partial, tensor], [product], name=product))
        partial = product
    ctx.add("Mul", [partial, node.inputs[-1]], node)


def _concat_onnx(ctx, node):
    ctx.add("Concat", node.inputs, node, axis=node.layer.axis + 1)


def _concat_ref_backward(layer, xs, y, dy, params):
    axis = layer.axis + 1  # counted without the batch dimension
    return np.split(dy, np.cumsum([x.shape[axis] for x in xs])[:-1], axis=axis), {}


_MISC = "netc.kernels.misc"
ADD = register(OpDef(
    "add", Add, _same_shape, Reference(lambda layer, xs, params: sum(xs[1:], xs[0].copy()),
                                lambda layer, xs, y, dy, params: ([dy.copy() for _ in xs], {})),
    _add_onnx, ("add_forward2", "grad_pass"), min_inputs=2, max_inputs=None,
    kernels={_MISC: ("add_forward2", "add_into", "grad_pass")}, forward=_add_forward, backward=_add_backward))
SUB = register(OpDef(
    "sub", Sub, _same_shape, Reference(lambda layer, xs, params: xs[0] - xs[1],
                                lambda layer, xs, y, dy, params: ([dy.copy(), -dy], {})),
    lambda ctx, node: ctx.add("Sub", node.inputs, node), ("sub_forward", "grad_negated"), min_inputs=2,
    max_inputs=2, kernels={_MISC: ("sub_forward", "grad_pass", "grad_negated")}, forward=_sub_forward,
    backward=_sub_backward))
STACK = register(OpDef(
    "stack", Stack, _stack,
    Reference(lambda layer, xs, params: np.stack(xs, axis=layer.axis + 1), _stack_ref_backward),
    _stack_onnx, ("concat_forward", "concat_backward"), min_inputs=2, max_inputs=None,
    kernels={_MISC: ("concat_forward", "concat_backward")}, forward=_stack_forward, backward=_stack_backward))
MUL = register(OpDef(
    "mul", Mul, _same_shape, Reference(_mul_reference, _mul_reference_backward), _mul_onnx, ("mul_forward2", "mul_grad"),
    min_inputs=2, max_inputs=None, scratch=_mul_scratch,
    kernels={_MISC: ("mul_forward2", "mul_into", "mul_grad")}, forward=_mul_forward, backward=_mul_backward))
CONCAT = register(OpDef(
    "concat", Concat, _concat,
    Reference(lambda layer, xs, params: np.concatenate(xs, axis=layer.axis + 1), _concat_ref_backward),
    _concat_onnx, ("concat_forward", "concat_backward"), min_inputs=2, max_inputs=None,
    kernels={_MISC: ("concat_forward", "concat_backward")}, forward=_concat_forward, backward=_concat_backward))
