"""Memory estimates: activations per batch and parameters + optimizer state."""

from __future__ import annotations

import os
from dataclasses import dataclass

from netc.ops.base import numel

_DTYPE_BYTES = {"float32": 4, "float64": 8}


def optimizer_slots(optimizer) -> int:
    """Per-parameter state tensors the optimizer keeps."""
    if optimizer.type == "sgd":
        return 1 if optimizer.momentum else 0
    if optimizer.type == "rmsprop":
        return 2 if optimizer.momentum else 1
    return 2  # adam: first and second moments


@dataclass(frozen=True)
class MemoryEstimate:
    activations: int  # bytes for one training step's activations and their gradients
    parameters: int  # bytes for parameters, gradients and optimizer state

    @property
    def total(self) -> int:
        return self.activations + self.parameters


def estimate(graph, batch: int) -> MemoryEstimate:
    width = _DTYPE_BYTES[graph.spec.train.dtype]
    per_sample = sum(numel(s) for s in graph.inputs.values())
    # value + gradient; a scan keeps its block's values for every step, its gradients for one (netc.ops.scan)
    steps = {node.name: graph.shape_of(node.inputs[-1])[0] for node in graph.nodes if node.op == "scan"}
    per_sample += sum(numel(node.shape) * (1 + (steps[node.scan] if node.scan is not None else 1))
                      for node in graph.nodes)
    params = graph.param_count()
    state = 2 + optimizer_slots(graph.spec.optimizer)  # value, gradient, optimizer slots
    return MemoryEstimate(per_sample * batch * width, params * state * width)


def machine_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(graph, batch: int) -> str | None:
    """A message when one training step would not fit in 80% of this machine's memory."""
    need = estimate(graph, batch).total
    have = machine_memory()
    if need > 0.8 * have:
        return (f"one training step needs about {human_bytes(need)} (batch {batch}) but this machine has "
                f"{human_bytes(have)}")
    return None


def human_bytes(count: float) -> str:
    if count >= 2 ** 1000:  # sizes from a spec are exact ints and can exceed a float
        return f"2^{int(count).bit_length() - 1} B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(count) < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} PiB"
