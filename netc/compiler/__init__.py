"""The compiler: a straight list of passes, the plan verified between them.

    lower -> fuse activations -> fuse 2x2 max pools into convs -> lower the loss -> mark gradients -> plan buffers -> generate source -> load (Numba)
"""

from __future__ import annotations

from dataclasses import dataclass

from netc.compiler import steps as passes
from netc.compiler.buffers import BufferPlan, plan_buffers
from netc.compiler.cache import load_module
from netc.compiler.codegen import ViewTable
from netc.compiler.module import Bodies, generate_source
from netc.compiler.steps import LossStep, Step
from netc.graph.ir import Graph


def _numel(shape) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


@dataclass
class CompiledPlan:
    graph: Graph
    steps: list[Step]
    loss: LossStep
    buffers: BufferPlan
    needs_grad: dict[str, bool]
    source: str
    views: ViewTable
    bodies: Bodies  # every step's kernel calls (the timing module reuses them)
    _module: object = None
    path: str = ""

    def make_views(self, arenas: dict) -> tuple:
        """The `V` tuple of the generated functions: numpy views into the arenas, made once."""
        return tuple(arenas[arena][offset:offset + _numel(shape)].reshape(shape)
                     for arena, offset, shape in self.views.entries)

    @property
    def module(self):
        """The generated module (imported on first use; Numba compiles or loads each function on first call)."""
        if self._module is None:
            self._module, path = load_module(self.source)
            self.path = str(path)
        return self._module


def compile_graph(graph: Graph, batch: int | None = None, fuse_pools: bool = True) -> CompiledPlan:
    """Lower a typed graph into a plan for mini-batches of up to `batch` samples. `fuse_pools=False`
    keeps every conv output in the arena (for reading activations, as `netc viz patches` does)."""
    batch = batch or graph.spec.train.batch
    steps = passes.lower(graph)  # one step per layer
    passes.verify(graph, steps)
    steps = passes.fuse_activations(graph, steps)  # bias + activation into the linear/conv epilogue
    passes.verify(graph, steps)
    if fuse_pools:
        steps = passes.fuse_pooling(graph, steps)  # conv + act + 2x2 max pool in one epilogue
        passes.verify(graph, steps)
    loss = passes.lower_loss(graph, steps)  # softmax/log_softmax + loss with the p - onehot backward
    needs_grad = passes.mark_gradients(graph, steps)  # frozen prefixes get no backward at all
    buffers = plan_buffers(graph, steps, loss, needs_grad, batch)  # arenas and offsets, allocated once
    header = f"netc plan for '{graph.spec.name}', batch {batch}. Generated: edits are overwritten."
    source, views, bodies = generate_source(graph, steps, loss, buffers, needs_grad, header)
    return CompiledPlan(graph, steps, loss, buffers, needs_grad, source, views, bodies)
