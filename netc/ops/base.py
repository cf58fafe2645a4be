"""The op registry: one `OpDef` per spec op, keyed by the same name.

An OpDef holds the op's shape rule, its parameter shapes (PyTorch layout),
its multiply-accumulate count and, for the compiler, its kernel emitters.
Shape helpers are small and shared (ONNX `shape_inference.h` style).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

Shape = tuple[int, ...]


class OpShapeError(Exception):
    """A shape rule failed; `field` names the spec key to point at."""

    def __init__(self, message: str, field: str | None = None, hint: str = "", code: str = "E-SHAPE"):
        super().__init__(message)
        self.message = message
        self.field = field
        self.hint = hint
        self.code = code


@dataclass(frozen=True)
class OpDef:
    name: str
    min_inputs: int
    max_inputs: int | None  # None: no upper bound
    infer: Callable  # (layer, [in_shape, ...]) -> out_shape
    params: Callable = lambda layer, shapes: {}  # -> {"weight": shape, "bias": shape}
    macs: Callable = lambda layer, shapes, out: 0  # multiply-accumulates per sample
    elementwise: bool = False  # an activation that can fuse into its producer


REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    assert op.name not in REGISTRY, op.name
    REGISTRY[op.name] = op
    return op


def numel(shape: Shape) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


def pair(value) -> tuple[int, int]:
    """k or [kh, kw] -> (kh, kw)."""
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def same_as_input(layer, shapes: list[Shape]) -> Shape:
    return shapes[0]


def need_rank(shape: Shape, rank: int, what: str, hint: str = "") -> None:
    if len(shape) != rank:
        raise OpShapeError(f"needs a rank-{rank} input, got {list(shape)}", hint=hint)


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a sliding window (floor mode, as PyTorch and Caffe's conv)."""
    return (size + 2 * padding - kernel) // stride + 1
