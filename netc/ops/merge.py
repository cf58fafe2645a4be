"""Ops with several inputs: add, concat."""

from netc.ops.base import OpDef, OpShapeError, register


def _add(layer, shapes):
    first = shapes[0]
    for other in shapes[1:]:
        if other != first:
            listed = " and ".join(str(list(s)) for s in shapes)
            raise OpShapeError(f"got {listed}", field="in", hint="every input of add must have the same shape")
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


ADD = register(OpDef("add", 2, None, _add))
CONCAT = register(OpDef("concat", 2, None, _concat))
