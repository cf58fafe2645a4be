"""The op registry; importing this package registers every op, in the order the spec language lists them."""

from netc.ops import dense, conv, local, embedding, norm, shape, activation, softmax, dropout, merge, recurrent, select, scan  # noqa: F401  (registration)
from netc.ops.base import REGISTRY, OpDef, OpShapeError

__all__ = ["REGISTRY", "OpDef", "OpShapeError"]
