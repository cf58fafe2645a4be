"""The op contract and its registry: one `OpDef` per spec op, keyed by the same name.

An op module (netc/ops/<family>.py) is the single home of everything about its ops:

- `spec`: the pydantic layer class (`op: Literal[...]`), from which netc.spec builds the language;
- `infer`, `params`, `macs`: shape rule, parameter shapes (PyTorch layout), multiply-adds;
- `categories`: what passes ask about it (see the constants below), defined once;
- `activation`: for activations, the kernel code and the parameter the epilogue carries;
- `kernels`, `forward`, `backward`, `labels`: the compiled kernels it calls, the emitters that
  write those calls into a plan (structured calls on the compiler's Emitter), and what
  `netc inspect --plan` calls them;
- `onnx`: the ONNX nodes it exports to;
- `reference`: a plain float64 numpy forward and backward, the oracle of the tests.

The compiler, export, viz and the tests ask the registry; no list of op names lives elsewhere.
Shape helpers are small and shared (ONNX `shape_inference.h` style).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

Shape = tuple[int, ...]

# categories (tinygrad's GroupOp): what an op is, asked by the passes that care
ALIAS = "alias"  # its output is a view of its input: no kernel, no gradient step
ACTIVATION = "activation"  # element-wise, one input; may fuse into a producer's epilogue
EPILOGUE = "epilogue"  # takes a fused activation (and, conv2d, a 2x2 max pool) in its epilogue
ELEMENTWISE = "elementwise"  # one input, output[i] depends on input[i] only: receptive fields pass through
MONOTONE = "monotone"  # non-decreasing: commutes with max pooling
TRAIN_MODE = "train_mode"  # behaves differently while training (dropout, batch norm)
WINDOW = "window"  # a sliding window over [C, H, W]: receptive fields compose through it
FILTERS = "filters"  # its "weight" is a bank of 2-D filters [out, in, kh, kw] shared across positions: drawable
POOL_EPILOGUE = "pool_epilogue"  # takes a following max pool that `fuses_as_pool` into its epilogue (conv2d)
PARALLEL = "parallel"  # runs in Numba parallel regions, a chunk of the batch per core: BLAS must stay single-threaded
BLAS = "blas"  # one GEMM over the batch: BLAS may split a large one over the cores
STEPPED = "stepped"  # a loop over time steps with a small GEMM in each: BLAS must stay single-threaded
INDEXED = "indexed"  # reads an int64 index input (no gradient flows into it): `rows` says how many it can look up
PROBABILITIES = "probabilities"  # gives (log-)probabilities: cross_entropy, which applies softmax itself, refuses them
LOG_PROBABILITIES = "log_probabilities"  # gives log-probabilities: what nll reads (and fuses with)
CATEGORIES = (ALIAS, ACTIVATION, EPILOGUE, ELEMENTWISE, MONOTONE, TRAIN_MODE, WINDOW, FILTERS, POOL_EPILOGUE,
              PARALLEL, BLAS, STEPPED, INDEXED, PROBABILITIES, LOG_PROBABILITIES)


class OpShapeError(Exception):
    """A shape rule failed; `field` names the spec key to point at."""

    def __init__(self, message: str, field: str | None = None, hint: str = "", code: str = "E-SHAPE"):
        super().__init__(message)
        self.message = message
        self.field = field
        self.hint = hint
        self.code = code


@dataclass(frozen=True)
class Activation:
    """How an activation runs inside the shared activation kernels.

    `code(layer)` selects its branch in netc.kernels.activation; `alpha(layer)` is its one
    parameter (a slope, a scale; 0.0 when it has none). `from_output`: its derivative is a
    function of its output alone, so it may fuse into an epilogue that keeps only the output;
    otherwise (gelu) it runs as its own step and its backward reads the input. `rules`: the kernel
    code of its backward under each projection method other than the gradient (netc.compiler.projection:
    relu's deconvnet and guided rules); a projection by a method it has no rule for is refused."""

    code: Callable
    alpha: Callable = lambda layer: 0.0
    from_output: bool = True
    rules: dict = field(default_factory=dict)  # method -> kernel code of the backward, {"deconvnet": 9}


@dataclass(frozen=True)
class StateTensor:
    """A tensor an op keeps and checkpoints but never trains (role "state": running statistics,
    counters), named as PyTorch names it (`bn1.running_mean`)."""

    shape: Shape
    initial: float = 0.0
    dtype: str = "float"  # "float": the plan's dtype; "int64": stored as a float, checkpointed as int64


@dataclass(frozen=True)
class PlanFacts:
    """What the buffer planner tells an op about the plan it is part of."""

    batch: int
    chunks: int  # parallel chunks of the batch in a PARALLEL op (netc.pool.CHUNKS_PER_CORE per core)
    trains: bool = True  # the step computes this op's parameter gradients
    input_grads: bool = True  # something upstream needs the gradient of the op's (first) input
    blas_small_kernels: bool = False  # BLAS runs small products unpacked, at a rate that depends on the layout
    stepped_chunks: int = 1  # chunks of the batch a STEPPED (recurrent) op runs in (one per core)
    blas_parts: int = 1  # column blocks a large GEMM may run in: one per core where BLAS runs on one thread


@dataclass(frozen=True)
class Saved:
    """An array an op's forward keeps for its backward. `rows`: `elements` per sample, one row per
    sample of the batch (a dropout mask; with `ints`, a max pool's argmax); otherwise `elements` in
    all, one batch's worth (a batch norm's mean and 1/std; a conv's kept im2col columns)."""

    elements: int
    rows: bool = False
    ints: bool = False


@dataclass(frozen=True)
class Reference:
    """Plain numpy, float64, written to be read: `forward(layer, xs, params) -> y` and
    `backward(layer, xs, y, dy, params) -> (dxs, dparams)`. `layer` is the validated layer (its
    spec class, defaults filled in), `params` its tensors by name ("weight"), batches first.
    Independent of the compiler and its kernels: the oracle of tests/reference.py.

    Ops with a train/eval mode (`modes`) also take `training` and `state` (their state tensors by
    name) as keyword arguments; a training forward updates `state` in place, as the plan does."""

    forward: Callable
    backward: Callable
    modes: bool = False


def _no_params(layer, shapes) -> dict:
    return {}


def _no_macs(layer, shapes, out) -> int:
    return 0


def _nothing(layer, shapes) -> dict:
    return {}


def _no_saved(layer, shapes, facts) -> dict:
    return {}


def _no_scratch(layer, shapes, facts) -> int:
    return 0


def _no_notes(e, step) -> list:
    return []


@dataclass(frozen=True)
class OpDef:
    name: str
    spec: type  # the pydantic layer class
    infer: Callable  # (layer, [in_shape, ...]) -> out_shape
    reference: Reference
    onnx: Callable  # (OnnxContext, node) -> None: adds the node's ONNX nodes
    labels: tuple[str, str]  # forward and backward as `inspect --plan` names them
    min_inputs: int = 1
    max_inputs: int | None = 1  # None: no upper bound
    params: Callable = _no_params  # -> {"weight": shape, "bias": shape}: role parameter (trained)
    state: Callable = _nothing  # -> {"running_mean": StateTensor}: role state (kept, checkpointed, not trained)
    saved: Callable = _no_saved  # (layer, shapes, PlanFacts) -> {"mean": Saved}: what the forward keeps for the backward
    scratch: Callable = _no_scratch  # (layer, shapes, PlanFacts) -> elements of scratch shared by every step
    macs: Callable = _no_macs  # multiply-accumulates per sample
    categories: frozenset = frozenset()
    activation: Activation | None = None
    kernels: dict = field(default_factory=dict)  # kernel module -> names its emitters call
    forward: Callable | None = None  # (emitter, step) -> None; None for aliases
    backward: Callable | None = None  # (emitter, step) -> None
    check_batch: Callable | None = None  # (layer, in_shapes, batch) -> OpShapeError | None: what a batch size rules out
    fans: Callable | None = None  # weight shape -> (fan_in, fan_out) where PyTorch's [out, in, *kernel] rule does not fit
    fuses_as_pool: Callable | None = None  # (layer, in_shape) -> True: runs in a POOL_EPILOGUE producer's epilogue
    notes: Callable = _no_notes  # (emitter, step) -> what `netc inspect --plan` says of a step ("BLAS")
    rows: Callable | None = None  # INDEXED ops: layer -> the rows of its table (indices must lie below)
    initialised: Callable | None = None  # (layer, {"weight": array}) -> None: fixes initial values in place
    constant: Callable | None = None  # layer -> {"weight": index}: entries never trained (a padding row); gradcheck skips them
    hyper: Callable | None = None  # layer -> {"p": 0.25}: hyperparameters its emitters read from H (e.hyper), not the source
    initializer: Callable | None = None  # (layer, tensor name) -> Initializer: an op's own choice per tensor (rnn: U(±1/sqrt(H)))
    # (layer, shapes, PlanFacts) -> names of 2-D parameters the plan stores transposed (its emitters and
    # kernels read them so; every API sees the declared shape: Model.param_views). Unshared owners only.
    transposed: Callable | None = None
    # (layer, shapes, PlanFacts) -> the column blocks its GEMMs run in, one per core, in one parallel region
    # each (1: whole); the buffer planner asks once per step (BufferPlan.blocks)
    blocks: Callable | None = None

    def is_(self, category: str) -> bool:
        return category in self.categories


class _Registry(dict):
    """The ops a spec can name, in the order the language lists them. Looking one up by name also
    finds the compiler's internal ops (INTERNAL: the pieces a `scan` unrolls into), which the
    language, the schema and the op-contract tests never list."""

    def __missing__(self, name: str) -> OpDef:
        return INTERNAL[name]


REGISTRY: dict[str, OpDef] = _Registry()
INTERNAL: dict[str, OpDef] = {}


def register(op: OpDef, internal: bool = False) -> OpDef:
    table = INTERNAL if internal else REGISTRY
    assert op.name not in REGISTRY and op.name not in INTERNAL, op.name
    unknown = set(op.categories) - set(CATEGORIES)
    assert not unknown, f"{op.name}: unknown categories {unknown}"
    table[op.name] = op
    return op


def ops_in(category: str) -> tuple[str, ...]:
    """Names of the ops in a category, in registry order."""
    return tuple(name for name, op in REGISTRY.items() if category in op.categories)


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


def need_rank(shape: Shape, rank: int, hint: str = "") -> None:
    if len(shape) != rank:
        raise OpShapeError(f"needs a rank-{rank} input, got {list(shape)}", hint=hint)


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a sliding window (floor mode, as PyTorch and Caffe's conv)."""
    return (size + 2 * padding - kernel) // stride + 1
