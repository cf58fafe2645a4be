"""A layer's activations, read from a Model's arena after its compiled forward pass: what `netc viz`
draws and `netc predict --features` writes."""

from __future__ import annotations

from typing import Iterable

import numpy as np


def layer_activations(model, arrays: dict[str, np.ndarray], tensor: str) -> Iterable[tuple[int, np.ndarray]]:
    """(start, values [n, *shape]) of `tensor` for batches of the samples in `arrays`, read from the
    compiled forward's arena (the plan keeps every stored tensor in its own region of A)."""

    graph, plan = model.graph, model.plan
    region = plan.buffers.values[plan.buffers.root(tensor)]
    shape = graph.shape_of(tensor)
    prepared = model.prepare(arrays)
    count, labels = prepared["__count__"], prepared["__labels__"]
    for start in range(0, count, model.batch):
        stop = min(start + model.batch, count)
        part = {name: prepared[name][start:stop] for name in graph.float_inputs}
        part["__labels__"] = labels[start:stop] if len(labels) else model.label_zeros(stop - start)
        part["__count__"] = stop - start
        model.evaluate(part)  # one batch: the arena now holds this batch's activations
        values = model.A[region.offset:region.offset + (stop - start) * region.per_sample]
        yield start, values.reshape((stop - start,) + tuple(shape)).copy()


def stored_tensor(plan, layer: str) -> tuple[str, str | None]:
    """(tensor to read for `layer`, fused activation or None): a conv fused with its activation
    stores only the activation's output."""
    step = next(s for s in plan.steps if layer in s.covers)
    if step.output != layer and step.node.name == layer and step.act is not None:
        return step.output, step.act.op
    return layer, None
