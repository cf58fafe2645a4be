"""Ops that move data without arithmetic: flatten, reshape, identity, dropout."""

from netc.ops.base import OpDef, OpShapeError, numel, register, same_as_input


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


FLATTEN = register(OpDef("flatten", 1, 1, _flatten))
RESHAPE = register(OpDef("reshape", 1, 1, _reshape))
IDENTITY = register(OpDef("identity", 1, 1, same_as_input))
DROPOUT = register(OpDef("dropout", 1, 1, same_as_input))
