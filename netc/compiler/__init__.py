"""The compiler: a straight list of passes, the plan verified between them.

    lower -> fuse activations -> fuse 2x2 max pools into convs -> lower the loss -> mark gradients -> plan buffers -> generate source -> load (Numba)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netc.compiler import steps as passes
from netc.compiler.buffers import BufferPlan, plan_buffers
from netc.compiler.cache import load_module, module_path
from netc.compiler.codegen import ViewTable, hyper_table
from netc.compiler.module import FUSED, PYTHON, Bodies, generate_source
from netc.compiler.projection import Projection, frozen, mark_projection
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
    losses: list[LossStep]  # the first one gives predictions and accuracy
    buffers: BufferPlan
    needs_grad: dict[str, bool]
    sources: dict[str, str]  # tier -> the generated module's source (FUSED, PYTHON)
    views: ViewTable
    bodies: Bodies  # every step's kernel calls (the timing module reuses them)
    hyper: dict[str, float] = field(default_factory=dict)  # the H arena's values (codegen.hyper_table), by name
    tier: str = FUSED  # which source `module` runs
    _modules: dict = field(default_factory=dict)
    path: str = ""

    @property
    def loss(self) -> LossStep:
        """The first loss: the one predictions, scores and accuracy come from."""
        return self.losses[0]

    @property
    def source(self) -> str:
        """The fused tier's source: what `netc inspect --plan` shows."""
        return self.sources[FUSED]

    def make_views(self, arenas: dict) -> tuple:
        """The `V` tuple of the generated functions: numpy views into the arenas, made once."""
        return tuple(arenas[arena][offset:offset + _numel(shape)].reshape(shape)
                     for arena, offset, shape in self.views.entries)

    @property
    def module(self):
        """The generated module of the current tier (imported on first use; in the fused tier Numba
        compiles or loads each function on its first call)."""
        if self.tier not in self._modules:
            self._modules[self.tier], path = load_module(self.sources[self.tier])
            self.path = str(path)
        return self._modules[self.tier]

    def module_path(self, tier: str = FUSED):
        return module_path(self.sources[tier])


def compile_graph(graph: Graph, batch: int | None = None, fuse_pools: bool = True,
                  projection: Projection | None = None) -> CompiledPlan:
    """Lower a typed graph into a plan for mini-batches of up to `batch` samples. `fuse_pools=False`
    keeps every conv output in the arena (for reading activations, as `netc viz patches` does).
    `projection`: a plan whose backward projects a signal from one tensor to the inputs (see
    compiler/projection.py); it is never trained."""
    batch = batch or graph.spec.train.batch
    if projection is not None:
        graph = frozen(graph)  # no parameter gradients, no kept columns, no updates
    steps = passes.lower(graph)  # one step per layer
    passes.verify(graph, steps)
    steps = passes.fuse_activations(graph, steps)  # bias + activation into the linear/conv epilogue
    passes.verify(graph, steps)
    if fuse_pools:
        steps = passes.fuse_pooling(graph, steps)  # conv + act + 2x2 max pool in one epilogue
        passes.verify(graph, steps)
    losses = passes.lower_losses(graph, steps)  # softmax/log_softmax + loss with the p - onehot backward
    if projection is None:
        needs_grad = passes.mark_gradients(graph, steps)  # frozen prefixes get no backward at all
    else:
        needs_grad = mark_projection(graph, steps, projection)  # from the inputs to the start tensor
    buffers = plan_buffers(graph, steps, losses, needs_grad, batch)  # arenas and offsets, allocated once
    # no spec name in the source: a renamed copy of a spec (a sweep's trials) shares its compiled plan
    header = f"netc plan, batch {batch}. Generated: edits are overwritten."
    if projection is not None:
        header += f" Projection from {projection.tensor} ({projection.method})."
    sources, views, bodies = generate_source(graph, steps, losses, buffers, needs_grad, header, projection)
    return CompiledPlan(graph, steps, losses, buffers, needs_grad, sources, views, bodies, hyper_table(graph))
