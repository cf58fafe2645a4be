"""linear: y = x W^T + b."""

from netc.ops.base import OpDef, OpShapeError, register


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


LINEAR = register(OpDef("linear", 1, 1, _infer, _params, _macs))
