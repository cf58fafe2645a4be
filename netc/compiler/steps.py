"""Lowering and fusion: graph nodes -> the steps (kernel calls) of the plan.

`lower` makes one step per node; `fuse` merges element-wise activations into
their producer's epilogue and the nll loss into the log_softmax before it.
`should_use_blas` is the one cost decision of the compiler.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netc.graph.ir import Graph, Node
from netc.jit import cores
from netc.kernels.gemm_sizes import BLAS_MIN_PRODUCT
from netc.ops.base import (ACTIVATION, ALIAS, BLAS, EPILOGUE, LOG_PROBABILITIES, MONOTONE, PARALLEL, POOL_EPILOGUE,
                           REGISTRY, STEPPED)
from netc.pool import CHUNKS_PER_CORE


@dataclass
class Step:
    kind: str  # which kernels run: an op name, "alias", or "act"
    node: Node  # the node that owns parameters/attributes
    inputs: list[str]
    output: str  # the tensor this step produces
    covers: list[str]  # spec layers implemented by this step
    act: Node | None = None  # the activation this step applies: fused into its epilogue, or itself
    pool: Node | None = None  # a 2x2 stride-2 max pool fused into a conv's epilogue (after act)
    backward: bool = True  # False when a fused loss computes this step's gradient itself
    needs_grad: bool = False  # set by mark_gradients


@dataclass
class LossStep:
    kind: str  # cross_entropy | nll_after_log_softmax | mse | mse_onehot
    input: str  # tensor the loss reads
    grad_target: str  # tensor whose gradient the loss writes
    target: str  # graph input with the targets
    covers: list[str] = field(default_factory=list)
    weight: str | None = None  # its factor's key in the hyperparameter table (several losses), else 1

    @property
    def kernel(self) -> str:
        """The loss kernel the plan calls: an nll after a log_softmax is cross_entropy of the log_softmax's input."""
        return "cross_entropy" if self.kind == "nll_after_log_softmax" else self.kind


def lower(graph: Graph) -> list[Step]:
    steps = []
    for node in graph.nodes:
        op = REGISTRY[node.op]
        kind = "alias" if op.is_(ALIAS) else "act" if op.is_(ACTIVATION) else node.op
        steps.append(Step(kind, node, list(node.inputs), node.name, [node.name],
                          act=node if kind == "act" else None))
    return steps


def fuse_activations(graph: Graph, steps: list[Step]) -> list[Step]:
    """A producer that takes an epilogue (linear, conv2d) whose only consumer is an activation whose
    derivative follows from its output -> one step with the activation (and its parameter) in the epilogue."""
    fused: list[Step] = []
    absorbed: set[str] = set()
    for step in steps:
        if step.output in absorbed:
            continue
        if REGISTRY[step.node.op].is_(EPILOGUE) and step.kind != "act" and step.output not in graph.loss_inputs:
            users = graph.consumers(step.output)
            if len(users) == 1 and _fusable_activation(users[0]):
                activation = users[0]
                step.act = activation
                step.output = activation.name
                step.covers.append(activation.name)
                absorbed.add(activation.name)
        fused.append(step)
    return fused


def _fusable_activation(node: Node) -> bool:
    op = REGISTRY[node.op]
    return op.is_(ACTIVATION) and op.activation.from_output


def _fuses_as_pool(graph: Graph, node: Node) -> bool:
    fits = REGISTRY[node.op].fuses_as_pool
    return fits is not None and fits(node.layer, graph.shape_of(node.inputs[0]))


def fuse_pooling(graph: Graph, steps: list[Step]) -> list[Step]:
    """conv (+ activation) whose only consumer is a 2x2 stride-2 max pool -> one step that pools in its
    epilogue: the conv's full-size output is never stored, and its backward gathers each pooled
    gradient straight to the conv position of the maximum (`arg`). Which producers and pools: the
    POOL_EPILOGUE category and `fuses_as_pool` of the op contract."""
    fused: list[Step] = []
    absorbed: set[str] = set()
    for step in steps:
        if step.output in absorbed:
            continue
        monotone = step.act is None or REGISTRY[step.act.op].is_(MONOTONE)  # max and act must commute
        takes_pool = step.kind != "act" and REGISTRY[step.node.op].is_(POOL_EPILOGUE)
        if takes_pool and monotone and step.output not in graph.loss_inputs:
            users = graph.consumers(step.output)
            if len(users) == 1 and _fuses_as_pool(graph, users[0]):
                step.pool = users[0]
                step.output = users[0].name
                step.covers.append(users[0].name)
                absorbed.add(users[0].name)
        fused.append(step)
    return fused


def losses_weighted(graph: Graph) -> bool:
    """Whether the losses carry weights (several losses, or one whose weight is not 1)."""
    return len(graph.losses) > 1 or graph.losses[0].weight != 1.0


def lower_losses(graph: Graph, steps: list[Step]) -> list[LossStep]:
    """One loss step per loss; weighted losses read their factors from the H arena (no recompiling)."""
    weighted = losses_weighted(graph)
    return [_lower_loss(graph, steps, loss, f"loss{i}.weight" if weighted else None)
            for i, loss in enumerate(graph.losses)]


def _lower_loss(graph: Graph, steps: list[Step], loss, weight: str | None) -> LossStep:
    """A loss step; nll after a log_softmax read by nothing else is computed as cross_entropy of the
    log_softmax's input (the same loss; its gradient softmax - onehot, with no log on the way to the
    backward pass), and the epoch loop runs the log_softmax only for evaluation's scores."""
    target_is_label = graph.spec.inputs[loss.target].dtype == "int64"
    if loss.op == "cross_entropy":
        return LossStep("cross_entropy", loss.input, loss.input, loss.target, weight=weight)
    if loss.op == "mse":
        return LossStep("mse_onehot" if target_is_label else "mse", loss.input, loss.input, loss.target, weight=weight)
    # nll: the graph checks guarantee its input is a log_softmax that nothing else reads (E-LOSS, E-DEAD)
    producer = graph.by_name[loss.input]
    assert REGISTRY[producer.op].is_(LOG_PROBABILITIES) and not graph.consumers(loss.input), "nll follows log_softmax"
    step = next(s for s in steps if s.output == loss.input)
    step.backward = False
    return LossStep("nll_after_log_softmax", loss.input, producer.inputs[0], loss.target, [producer.name], weight)


def mark_gradients(graph: Graph, steps: list[Step]) -> dict[str, bool]:
    """A tensor needs a gradient when a trainable parameter lies upstream of it. A scan's state lies
    downstream of its next value (at the step before): marked again until no state changes."""
    carried = {step.output: step.node.layer.next for step in steps if step.kind == "scan_state"}
    upstream: set[str] = set()  # states whose next value needs a gradient
    while True:
        needs = {name: False for name in graph.inputs}
        for step in steps:
            own = bool(step.node.param_shapes) and step.node.trainable and step.kind != "alias"
            needs[step.output] = own or step.output in upstream or any(needs[t] for t in step.inputs)
            for covered in step.covers:
                needs.setdefault(covered, needs[step.output])
            step.needs_grad = needs[step.output]
        more = {state for state, nxt in carried.items() if needs[nxt]} - upstream
        if not more:
            return needs
        upstream |= more


def should_use_blas(batch: int, fan_in: int, fan_out: int) -> bool:
    """The compiler's one cost decision: a BLAS call costs ~1 µs of overhead, which plain
    loops beat for tiny products (the lecture's 3-4-3-2 MLP at one sample per step)."""
    return batch * fan_in * fan_out >= BLAS_MIN_PRODUCT


def parallel_chunks(batch: int) -> int:
    """Chunks of the batch in a conv pass: CHUNKS_PER_CORE per core (see netc.pool), each with its own
    scratch and weight-gradient buffers. Fixed per plan, so the order of the gradient sums is too."""
    return max(1, min(CHUNKS_PER_CORE * cores(), batch))


def stepped_chunks(batch: int) -> int:
    """Chunks of the batch a recurrent layer runs in: one per core. Its per-step GEMMs are small, and
    smaller chunks cost more than a larger share of busy cores gains (benchmarks/RESULTS.md)."""
    return max(1, min(cores(), batch))


def busy_threads(graph: Graph, batch: int) -> int:
    """The most threads worth running a plan's parallel regions on beside busy processes: as many as a
    region has chunks (a conv pass's, else a recurrent layer's one per core); 1 without them (a plan whose
    only regions are a large linear layer's column blocks then chooses between one thread and one per core).
    More threads than cores get a larger share of busy cores, and netc's pool loses nothing to a thread
    the scheduler holds back before it takes a chunk (netc.region_pool; netc.cpuload.busy_counts)."""
    if any(REGISTRY[node.op].is_(PARALLEL) for node in graph.nodes):
        return parallel_chunks(batch)
    return stepped_chunks(batch) if has_parallel_regions(graph) else 1


def blas_parts(graph: Graph, batch: int) -> int:
    """Column blocks a large GEMM may run in (netc.kernels.dense `*_parts`, where its op's `blocks` says so):
    one per core in a plan whose BLAS runs on one thread (blas_threads), else 1."""
    return cores() if blas_threads(graph, batch) == 1 else 1


def has_parallel_regions(graph: Graph) -> bool:
    """Whether the plan runs Numba parallel regions: convolutions, pools and recurrent layers."""
    return any(REGISTRY[node.op].is_(PARALLEL) or REGISTRY[node.op].is_(STEPPED) for node in graph.nodes)


def blas_threads(graph: Graph, batch: int) -> int:
    """BLAS threads for a plan. Convolutions run in Numba parallel regions, a chunk of the
    batch per thread, whose GEMMs must run single-threaded: OpenMP and OpenBLAS
    thread pools spinning against each other cost milliseconds per switch on two cores. Plans
    without them use every core when some GEMM is large enough that splitting it pays (50 M
    multiply-adds), else one (see netc.jit.prepare_threads). Recurrent layers (STEPPED) keep one:
    their per-step GEMMs are small, and threads that meet at each of them stall when the cores
    are busy (benchmarks/RESULTS.md, "Threads under load")."""
    if has_parallel_regions(graph):
        return 1
    largest = max((batch * node.macs for node in graph.nodes if REGISTRY[node.op].is_(BLAS)), default=0)
    return cores() if largest >= 50_000_000 else 1


def should_inline_kernels(graph: Graph, batch: int) -> bool:
    """Inline every kernel into the plan when a whole step is tiny (the lecture's 3-4-3-2 MLP at
    one sample per step): call overhead then dominates, and compile time stays small."""
    return batch * graph.macs < 4096


def verify(graph: Graph, steps: list[Step]) -> None:
    """Invariants after each pass: every step reads tensors produced earlier; each layer is covered once."""
    produced = set(graph.inputs)
    covered: list[str] = []
    for step in steps:
        for tensor in step.inputs:
            assert tensor in produced, f"step {step.output} reads {tensor} before it exists"
        produced.add(step.output)
        covered.extend(step.covers)
    assert sorted(covered) == sorted(n.name for n in graph.nodes), "every layer is covered by exactly one step"

