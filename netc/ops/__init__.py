"""Op registry; importing this package registers every op."""

from netc.ops import activation, conv, dense, merge, shape  # noqa: F401  (registration)
from netc.ops.base import REGISTRY, OpDef, OpShapeError

__all__ = ["REGISTRY", "OpDef", "OpShapeError"]
