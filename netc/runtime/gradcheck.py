"""Central finite differences in float64 against the compiled backward pass."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from netc.graph.ir import Graph
from netc.ops.base import REGISTRY
from netc.runtime.model import Model


@dataclass
class TensorCheck:
    name: str  # e.g. "fc1.weight"
    layer: str
    checked: int  # entries compared
    size: int
    max_rel_error: float
    max_abs_error: float


def random_batch(graph: Graph, count: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs drawn from N(0, 1), labels uniform over the classes, indices uniform over [0, indices)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, inp in graph.spec.inputs.items():
        if inp.classes is not None:
            arrays[name] = rng.integers(0, inp.classes, (count, *inp.shape))  # [] or a label per step [T]
        elif inp.indices is not None:
            arrays[name] = rng.integers(0, inp.indices, (count, *inp.shape))
        else:
            arrays[name] = rng.normal(size=(count, *inp.shape))
    return arrays


def relative_error(numeric: float, exact: float) -> float:
    """|a - b| / (|a| + |b|), the denominator floored at 1e-3 so that round-off on tiny
    gradients (about 1e-10 absolute in float64) does not read as a large relative error."""
    return abs(numeric - exact) / max(abs(numeric) + abs(exact), 1e-3)


def gradcheck(graph: Graph, arrays: dict[str, np.ndarray] | None = None, count: int = 4, eps: float = 1e-6,
              max_entries: int = 30, seed: int = 0, tolerance: float = 1e-6,
              training: bool = False) -> list[TensorCheck]:
    """Compare the analytic gradient of every trainable tensor with central differences
    (sampling `max_entries` entries of large tensors).

    An entry above `tolerance` is measured again with steps 10x and 100x smaller: a step
    that crosses a ReLU or max-pool kink does not survive that, a wrong gradient does. Then with
    one 10x larger: a loss averaged over many rows (a loss at every step of a sequence) has
    gradients small enough (~1e-4) that the loss's round-off (~1e-15) divided by a step of 1e-6
    shows; a wrong gradient fails at every step.

    `training`: in training mode (batch norm on batch statistics, dropout masks drawn from
    `seed`, the same for every evaluation); the state a training forward updates (running
    statistics) is restored after every evaluation, so each sees the same network."""
    if arrays is None:
        arrays = random_batch(graph, count, seed)
    count = len(next(iter(arrays.values())))
    model = Model(_untruncated(graph), dtype="float64", batch=count, seed=seed)
    model.run_serial_twins()  # a few samples: one core does, and compiles half as long
    evaluate = _evaluator(model, arrays, training, seed)
    _, analytic = evaluate()
    weights = model.param_views(model.P)
    rng = np.random.default_rng(seed + 1)
    results = []
    for name, grad in analytic.items():
        view = weights[name]  # perturbed through the view: a parameter stored transposed has no flat view
        entries = _trained_entries(graph, name, view.shape)
        picks = entries if entries.size <= max_entries else rng.choice(entries, max_entries, replace=False)
        worst_rel = worst_abs = 0.0
        for i in picks:
            exact = grad.reshape(-1)[i]
            for step in (eps, eps / 10, eps / 100, eps * 10):
                numeric = _central_difference(evaluate, view, np.unravel_index(i, view.shape), step)
                if relative_error(numeric, exact) <= tolerance:
                    break
            worst_rel = max(worst_rel, relative_error(numeric, exact))
            worst_abs = max(worst_abs, abs(numeric - exact))
        results.append(TensorCheck(name, name.rsplit(".", 1)[0], len(picks), view.size, worst_rel, worst_abs))
    return results


def _untruncated(graph: Graph) -> Graph:
    """The graph with truncated backpropagation through time (`bptt`) lifted: truncation cuts the
    gradient on purpose, and what the check checks is the derivative."""
    if not any(getattr(node.layer, "bptt", None) for node in graph.nodes):
        return graph
    nodes = [replace(node, layer=node.layer.model_copy(update={"bptt": None})) if getattr(node.layer, "bptt", None)
             else node for node in graph.nodes]
    return replace(graph, nodes=nodes)


def _trained_entries(graph: Graph, name: str, shape: tuple) -> np.ndarray:
    """Flat indices of a tensor's entries, less those its op keeps constant (an embedding's padding
    row: its finite difference is not zero, but by definition it gets no gradient)."""
    owner, pname = name.rsplit(".", 1)
    node = graph.by_name[owner]
    entries = np.arange(int(np.prod(shape, dtype=np.int64))).reshape(shape)
    constant = REGISTRY[node.op].constant
    if constant is None or pname not in constant(node.layer):
        return entries.reshape(-1)
    keep = np.ones(shape, bool)
    keep[constant(node.layer)[pname]] = False
    return entries[keep]


def _evaluator(model: Model, arrays, training: bool, seed: int):
    """(loss, gradients) of the model as it stands, leaving its state tensors as they were."""

    def evaluate():
        state = model.T.copy()
        try:
            return model.loss_and_gradients(arrays, training=training, seed=seed)
        finally:
            model.T[...] = state

    return evaluate


def _central_difference(evaluate, tensor: np.ndarray, index: tuple, step: float) -> float:
    saved = tensor[index]
    tensor[index] = saved + step
    up, _ = evaluate()
    tensor[index] = saved - step
    down, _ = evaluate()
    tensor[index] = saved
    return (up - down) / (2 * step)
