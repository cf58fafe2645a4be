"""Element-wise activations and the softmax family."""

from netc.ops.base import OpDef, OpShapeError, register, same_as_input


def _feature_vector(layer, shapes):
    if len(shapes[0]) != 1:
        raise OpShapeError(
            f"works over a feature vector, got {list(shapes[0])}",
            hint="add `{op: flatten}` before this layer",
        )
    return shapes[0]


RELU = register(OpDef("relu", 1, 1, same_as_input, elementwise=True))
SIGMOID = register(OpDef("sigmoid", 1, 1, same_as_input, elementwise=True))
TANH = register(OpDef("tanh", 1, 1, same_as_input, elementwise=True))
SOFTMAX = register(OpDef("softmax", 1, 1, _feature_vector))
LOG_SOFTMAX = register(OpDef("log_softmax", 1, 1, _feature_vector))
