"""Buffer planning: one arena per kind of storage, offsets fixed at compile time.

- P/G: parameters and their gradients (same layout; sharers point at the owner);
- S: optimizer state, `slots` copies of the P layout;
- A/D: activations and their gradients, `batch` rows per tensor; views
  (flatten, reshape, identity) reuse their input's region;
- I: integer storage (max-pool argmax);
- T: state tensors (running statistics, counters): kept and checkpointed, never trained;
- W: per-step scratch (im2col columns, GEMM outputs, per-chunk weight
  gradients of the parallel convolutions), reused by every step; after it, the
  im2col columns each trainable conv keeps from its forward to its backward
  (each within steps.KEEP_BUDGET), and the per-batch values other ops keep for
  their backward (a batch norm's batch mean and 1/std).
Nothing is allocated per step: the runtime allocates the arenas once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netc.compiler.steps import LossStep, Step, conv_group, keep_columns, parallel_chunks
from netc.graph.ir import Graph
from netc.ops.base import REGISTRY, numel
from netc.ops.conv import conv_dims


@dataclass
class Region:
    offset: int
    per_sample: int  # elements per sample (activation arenas) or total (parameters)


@dataclass
class BufferPlan:
    batch: int
    chunks: int = 1  # parallel chunks of the batch in a conv pass (one per core)
    params: dict[str, dict[str, Region]] = field(default_factory=dict)  # owner -> {"weight": Region}
    param_size: int = 0
    values: dict[str, Region] = field(default_factory=dict)  # tensor -> region in A (after alias resolution)
    grads: dict[str, Region] = field(default_factory=dict)  # tensor -> region in D
    ints: dict[str, Region] = field(default_factory=dict)  # tensor -> region in I (argmax)
    masks: dict[str, Region] = field(default_factory=dict)  # dropout masks in A
    a_size: int = 0
    d_size: int = 0
    i_size: int = 0
    w_size: int = 0
    alias_root: dict[str, str] = field(default_factory=dict)
    kept_cols: dict[str, int] = field(default_factory=dict)  # conv step output -> offset in W of its columns
    state: dict[str, dict[str, Region]] = field(default_factory=dict)  # layer -> {"running_mean": Region} in T
    state_size: int = 0
    saved: dict[tuple[str, str], Region] = field(default_factory=dict)  # (layer, name) -> region in W

    def root(self, tensor: str) -> str:
        while tensor in self.alias_root:
            tensor = self.alias_root[tensor]
        return tensor


def plan_buffers(graph: Graph, steps: list[Step], loss: LossStep, needs_grad: dict[str, bool], batch: int) -> BufferPlan:
    plan = BufferPlan(batch, parallel_chunks(batch))
    # parameters, in graph order of their owners
    offset = 0
    for node in graph.owners:
        plan.params[node.name] = {}
        for pname, shape in node.param_shapes.items():
            plan.params[node.name][pname] = Region(offset, numel(shape))
            offset += numel(shape)
    plan.param_size = offset
    offset = 0
    for node in graph.nodes:  # state tensors: never shared, never trained
        for name, tensor in node.state.items():
            plan.state.setdefault(node.name, {})[name] = Region(offset, numel(tensor.shape))
            offset += numel(tensor.shape)
    plan.state_size = offset

    def take_a(size: int) -> Region:
        region = Region(plan.a_size, size)
        plan.a_size += size * batch
        return region

    for name, shape in graph.inputs.items():
        plan.values[name] = take_a(numel(shape))
    for step in steps:
        if step.kind == "alias":
            plan.alias_root[step.output] = step.inputs[0]
            continue
        plan.values[step.output] = take_a(numel(graph.shape_of(step.output)))
        if step.kind == "dropout":
            plan.masks[step.output] = take_a(numel(graph.shape_of(step.output)))
        if step.kind == "maxpool2d" or step.pool is not None:  # argmax of each pooled output
            size = numel(graph.shape_of(step.output))
            plan.ints[step.output] = Region(plan.i_size, size)
            plan.i_size += size * batch
    # gradients of the tensors that need one (by storage root)
    for step in steps:
        root = plan.root(step.output)
        if needs_grad.get(step.output) and root not in plan.grads:
            plan.grads[root] = Region(plan.d_size, numel(graph.shape_of(root)))
            plan.d_size += numel(graph.shape_of(root)) * batch
    root = plan.root(loss.grad_target)
    if root not in plan.grads:  # the loss writes it even when nothing upstream trains
        plan.grads[root] = Region(plan.d_size, numel(graph.shape_of(root)))
        plan.d_size += numel(graph.shape_of(root)) * batch
    plan.w_size = max([_scratch(graph, step, plan) for step in steps] + [1])
    for step in steps:  # columns kept from forward to backward, one region per conv that trains
        if step.kind == "conv2d" and step.needs_grad and step.node.trainable:
            d = conv_dims(step.node, graph.shape_of(step.inputs[0]))
            k, positions = d["C"] * d["KH"] * d["KW"], d["OH"] * d["OW"]
            if keep_columns(k, positions, batch, plan.chunks):
                plan.kept_cols[step.output] = plan.w_size
                plan.w_size += numel(kept_cols_shape(d, batch, plan.chunks))
    for step in steps:  # what an op's forward keeps for its backward (one batch's worth)
        node = step.node
        for name, size in REGISTRY[node.op].saved(node.layer, [graph.shape_of(t) for t in node.inputs], batch).items():
            plan.saved[(node.name, name)] = Region(plan.w_size, size)
            plan.w_size += size
    return plan


def kept_cols_shape(d: dict, batch: int, chunks: int) -> tuple:
    """(T, K, chunk*P): every sample's im2col columns, by chunk."""
    return chunks, d["C"] * d["KH"] * d["KW"], -(-batch // chunks) * d["OH"] * d["OW"]


def conv_scratch(d: dict, batch: int, chunks: int) -> tuple[dict[str, tuple[int, tuple]], int]:
    """The shared scratch of a parallel conv (see netc/kernels/conv.py): name -> (offset in W,
    shape), and its size. Per chunk: im2col columns (or their gradients) and the GEMM output /
    gathered gradient for G samples at a time, and the chunk's weight and bias gradients."""
    k, positions, filters = d["C"] * d["KH"] * d["KW"], d["OH"] * d["OW"], d["F"]
    width = conv_group(k, positions, batch, chunks) * positions
    layout, offset = {}, 0
    for name, shape in (("work", (chunks, k, width)), ("buf", (chunks, filters, width)),
                        ("dwt", (chunks, filters, k)), ("dbt", (chunks, filters))):
        layout[name] = (offset, shape)
        offset += numel(shape)
    return layout, offset


def _scratch(graph: Graph, step: Step, plan: BufferPlan) -> int:
    """Scratch elements a step needs (laid out from offset 0 of W)."""
    if step.kind == "conv2d":
        d = conv_dims(step.node, graph.shape_of(step.inputs[0]))
        return conv_scratch(d, plan.batch, plan.chunks)[1]
    return 0
