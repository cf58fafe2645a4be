"""Buffer planning: one arena per kind of storage, offsets fixed at compile time.

- P/G: parameters and their gradients (same layout; sharers point at the owner); a 2-D parameter
  may be stored transposed where its op runs faster so (OpDef.transposed; Region.transposed);
- S: optimizer state, `slots` copies of the P layout;
- A/D: activations and their gradients, `batch` rows per tensor; views
  (flatten, reshape, identity) reuse their input's region; per-sample arrays an op
  keeps for its backward (a dropout mask) sit after its output;
- I: integer storage, `batch` rows per array (index inputs, staged; a max pool's argmax);
- T: state tensors (running statistics, counters): kept and checkpointed, never trained;
- W: per-step scratch (a conv's im2col columns, GEMM outputs, per-chunk weight
  gradients), reused by every step; after it, the other arrays ops keep from forward
  to backward (a conv's columns within KEEP_BUDGET, a batch norm's mean and 1/std).
What each op keeps and the scratch it needs come from its OpDef (`saved`, `scratch`).
Nothing is allocated per step: the runtime allocates the arenas once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netc.compiler.steps import LossStep, Step, blas_parts, parallel_chunks, stepped_chunks
from netc.graph.ir import Graph
from netc.jit import blas_small_kernels
from netc.ops.base import REGISTRY, PlanFacts, numel
from netc.ops.scan import scan_steps


@dataclass
class Region:
    offset: int
    per_sample: int  # elements per sample (batch-row arrays) or in all
    slots: int = 0  # a scan's tensor: this many time-major slots of `batch` rows (netc.ops.scan), else 0
    shift: int = 0  # the slot of step t is t + shift (1 for a state's next value: slot 0 holds the zeros)
    transposed: bool = False  # a parameter stored as its declared shape's transpose (OpDef.transposed)


@dataclass
class BufferPlan:
    batch: int
    chunks: int = 1  # parallel chunks of the batch in a conv pass (CHUNKS_PER_CORE per core)
    stepped_chunks: int = 1  # chunks of the batch a recurrent layer runs in (one per core)
    blas_parts: int = 1  # column blocks of a large GEMM in a plan whose BLAS runs on one thread (one per core)
    blas_small_kernels: bool = False  # OpenBLAS runs its SkylakeX family of kernels (netc.jit.blas_small_kernels)
    blocks: dict[str, int] = field(default_factory=dict)  # a step's node -> column blocks of its GEMMs (OpDef.blocks)
    params: dict[str, dict[str, Region]] = field(default_factory=dict)  # owner -> {"weight": Region}
    param_size: int = 0
    values: dict[str, Region] = field(default_factory=dict)  # tensor -> region in A (after alias resolution)
    indices: dict[str, Region] = field(default_factory=dict)  # index input -> region in I
    grads: dict[str, Region] = field(default_factory=dict)  # tensor -> region in D
    a_size: int = 0
    d_size: int = 0
    i_size: int = 0
    w_size: int = 0
    alias_root: dict[str, str] = field(default_factory=dict)
    state: dict[str, dict[str, Region]] = field(default_factory=dict)  # layer -> {"running_mean": Region} in T
    state_size: int = 0
    saved: dict[tuple[str, str], tuple[str, Region]] = field(default_factory=dict)  # (layer, name) -> (arena, region)

    def root(self, tensor: str) -> str:
        while tensor in self.alias_root:
            tensor = self.alias_root[tensor]
        return tensor


def _stored_transposed(graph: Graph, owner, needs_grad: dict[str, bool], plan: BufferPlan) -> tuple:
    """The parameters of `owner` its op stores transposed in this plan: none when another layer shares
    them (its op would read them too) or inside a scan."""
    opdef = REGISTRY[owner.op]
    if opdef.transposed is None or owner.scan is not None or any(node.owner == owner.name for node in graph.nodes):
        return ()
    facts = PlanFacts(plan.batch, plan.chunks, owner.trainable, bool(needs_grad.get(owner.inputs[0])),
                      plan.blas_small_kernels, plan.stepped_chunks)
    names = opdef.transposed(owner.layer, [graph.shape_of(t) for t in owner.inputs], facts)
    assert all(len(owner.param_shapes[name]) == 2 for name in names), names
    return names


def _blocks(graph: Graph, steps: list[Step], plan: BufferPlan) -> dict[str, int]:
    """The steps whose GEMMs run in column blocks on the cores, and in how many (OpDef.blocks). None inside a
    scan: its steps' GEMMs are small, and threads that meet at every step stall beside busy processes."""
    facts = PlanFacts(plan.batch, plan.chunks, blas_small_kernels=plan.blas_small_kernels,
                      stepped_chunks=plan.stepped_chunks, blas_parts=plan.blas_parts)
    blocks = {}
    for step in steps:
        opdef = REGISTRY[step.node.op]
        if step.kind == step.node.op and opdef.blocks is not None and step.node.scan is None:
            count = opdef.blocks(step.node.layer, [graph.shape_of(t) for t in step.inputs], facts)
            if count > 1:
                blocks[step.node.name] = count
    return blocks


def plan_buffers(graph: Graph, steps: list[Step], losses: list[LossStep], needs_grad: dict[str, bool], batch: int) -> BufferPlan:
    plan = BufferPlan(batch, parallel_chunks(batch), stepped_chunks(batch), blas_parts(graph, batch),
                      blas_small_kernels())
    plan.blocks = _blocks(graph, steps, plan)
    # parameters, in graph order of their owners
    offset = 0
    for node in graph.owners:
        plan.params[node.name] = {}
        transposed = _stored_transposed(graph, node, needs_grad, plan)
        for pname, shape in node.param_shapes.items():
            plan.params[node.name][pname] = Region(offset, numel(shape), transposed=pname in transposed)
            offset += numel(shape)
    plan.param_size = offset
    offset = 0
    for node in graph.nodes:  # state tensors: never shared, never trained
        for name, tensor in node.state.items():
            plan.state.setdefault(node.name, {})[name] = Region(offset, numel(tensor.shape))
            offset += numel(tensor.shape)
    plan.state_size = offset

    def take_a(size: int, slots: int = 0, shift: int = 0) -> Region:
        region = Region(plan.a_size, size, slots, shift)
        plan.a_size += size * batch * max(slots, 1)
        return region

    # a scan's tensors are kept for every step: T slots, T + 1 for a state's next value (netc.ops.scan)
    lengths = {node.name: scan_steps(graph, node) for node in graph.nodes if node.op == "scan"}
    carried = {node.layer.next: node for node in graph.nodes if node.op == "scan_state"}

    def slots_of(step: Step) -> tuple[int, int]:
        scan = step.node.scan
        if scan is None or step.kind == "scan_state":
            return 0, 0
        return (lengths[scan] + 1, 1) if step.output in carried else (lengths[scan], 0)

    def covered(step: Step):  # the step's nodes with what each keeps, in the order they run
        facts = PlanFacts(batch, plan.chunks, step.needs_grad and step.node.trainable,
                          blas_small_kernels=plan.blas_small_kernels, stepped_chunks=plan.stepped_chunks)
        for node in (step.node, step.act, step.pool):
            if node is not None:
                shapes = [graph.shape_of(t) for t in node.inputs]
                yield node, REGISTRY[node.op].saved(node.layer, shapes, facts), shapes, facts

    kept_in_w = []
    index_inputs = set(graph.index_inputs)
    for name, shape in graph.inputs.items():
        if name in index_inputs:
            plan.indices[name] = Region(plan.i_size, numel(shape))
            plan.i_size += numel(shape) * batch
        else:
            plan.values[name] = take_a(numel(shape))
    for step in steps:
        if step.kind == "alias":
            plan.alias_root[step.output] = step.inputs[0]
            continue
        if step.kind == "scan_state":  # the storage of its next value, one step behind (after the loop below)
            continue
        slots, shift = slots_of(step)
        plan.values[step.output] = take_a(numel(graph.shape_of(step.output)), slots, shift)
        kept_slots = lengths[step.node.scan] if step.node.scan is not None else 0
        for node, saved, _, _ in covered(step):
            for name, kept in saved.items():
                if not kept.rows:
                    assert not kept_slots, "graph.build refuses ops that keep one batch's worth inside a scan"
                    kept_in_w.append(((node.name, name), kept.elements))
                elif kept.ints:
                    plan.saved[(node.name, name)] = ("I", Region(plan.i_size, kept.elements, kept_slots))
                    plan.i_size += kept.elements * batch * max(kept_slots, 1)
                else:
                    plan.saved[(node.name, name)] = ("A", take_a(kept.elements, kept_slots))
    for step in steps:
        if step.kind == "scan_state":
            carrier = plan.values[plan.root(step.node.layer.next)]
            plan.values[step.output] = Region(carrier.offset, carrier.per_sample, carrier.slots, 0)
    # gradients of the tensors that need one (by storage root); an input needs one only in a projection
    for tensor in [*graph.inputs, *(step.output for step in steps)]:
        root = plan.root(tensor)
        if needs_grad.get(tensor) and root not in plan.grads:
            plan.grads[root] = Region(plan.d_size, numel(graph.shape_of(root)))
            plan.d_size += numel(graph.shape_of(root)) * batch
    for loss in losses:
        root = plan.root(loss.grad_target)
        if root not in plan.grads:  # the loss writes it even when nothing upstream trains
            plan.grads[root] = Region(plan.d_size, numel(graph.shape_of(root)))
            plan.d_size += numel(graph.shape_of(root)) * batch
    scratch = [REGISTRY[node.op].scratch(node.layer, shapes, facts)
               for step in steps if step.kind != "alias" for node, _, shapes, facts in covered(step)]
    plan.w_size = max(scratch + [1])
    for key, elements in kept_in_w:  # one batch's worth each, after the shared scratch
        plan.saved[key] = ("W", Region(plan.w_size, elements))
        plan.w_size += elements
    return plan
