"""A compiled network with its memory: the object behind `netc train` and the Python API.

Arenas (see compiler/buffers.py) are allocated once here; parameters are exposed as
named numpy views shaped like a PyTorch state_dict (`fc1.weight` [out, in]).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numba
import numpy as np

from netc import fpmode, region_pool
from netc.compiler import FUSED, PYTHON, CompiledPlan, compile_graph
from netc.compiler import background as fused_compile
from netc.compiler.steps import blas_threads, busy_threads, cores, has_parallel_regions
from netc.cpuload import ThreadChoice, busy_counts, load_watcher, packing, placement
from netc.errors import DataError, Diagnostic, Location
from netc.graph.ir import Graph
from netc.graph.memory import optimizer_slots
from netc.jit import blas_thread_count, prepare_threads, thread_count
from netc.ops.base import numel
from netc.runtime.init import initial_values


@dataclass
class EpochResult:
    loss: float  # mean over the samples seen
    accuracy: float | None  # None when the loss has no classes
    batches: int
    diverged: bool  # the loss stopped being finite; the failing batch was not applied
    losses: list[float] = field(default_factory=list)  # each loss's own mean (unweighted), in spec order


@dataclass
class EvalResult:
    loss: float
    accuracy: float | None
    count: int
    confusion: np.ndarray | None  # [true, predicted]
    scores: np.ndarray = field(repr=False, default=None)
    labels: np.ndarray | None = field(repr=False, default=None)  # the class of each sample, when there are classes
    losses: list[float] = field(default_factory=list)  # each loss's own mean (unweighted), in spec order


@dataclass
class LoadReport:
    matched: list[str]
    missing: list[str]  # in the model, not in the values
    unexpected: list[str]  # in the values, not in the model
    mismatched: list[tuple[str, tuple, tuple]]  # name, model shape, given shape


TIERS = ("auto", FUSED, PYTHON)
CACHE_LINE = 64  # bytes


def zeros_aligned(size: int, dtype) -> np.ndarray:
    """np.zeros(size, dtype) starting on a cache line: the plan's regions that start on one at their
    offsets (netc.ops.conv.conv_scratch) then do too, and a vector load of a row never spans two lines
    (netc.kernels.tiles.micro_tile_gathered loads one vector per multiply-add: 1.6x slower misaligned)."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.zeros(size + CACHE_LINE // itemsize, dtype)
    skip = (-raw.ctypes.data % CACHE_LINE) // itemsize
    return raw[skip:skip + size]


class Model:
    """A spec's graph compiled for one dtype and a maximum batch size.

    `tier`: FUSED runs the plan's functions compiled by Numba (the first run of a plan compiles them:
    seconds); PYTHON runs the same functions as Python over the compiled kernels (starts at once;
    as fast as fused for batches of real size, slower for tiny steps); "auto" takes the fused tier
    when it was compiled on this machine, else starts on the Python tier and, with `background`,
    compiles the fused epoch loop in another process and moves to it once it is ready. The tiers
    give the same numbers to the bit."""

    def __init__(self, graph: Graph, dtype: str | None = None, batch: int | None = None, seed: int | None = None,
                 fuse_pools: bool = True, tier: str = "auto", background: bool = False, projection=None):
        assert tier in TIERS, tier
        self.graph = graph
        self.dtype = np.dtype(dtype or graph.spec.train.dtype)
        self.batch = batch or graph.spec.train.batch
        # projection (netc.compiler.projection): a plan that projects a signal back to the inputs, never trained
        self.plan: CompiledPlan = compile_graph(graph, self.batch, fuse_pools, projection)
        self._auto = tier == "auto"
        self._fused_path = self.plan.module_path(FUSED)
        if self._auto:
            tier = FUSED if fused_compile.ready(self._fused_path, self.dtype.name) else PYTHON
        self.plan.tier = tier
        self._background = background and self._auto and tier == PYTHON and fused_compile.enabled()
        self._compiling = None  # the background compile of the fused tier, once started
        # parallel kernels not compiled on this machine yet: the Python tier runs their serial twins
        # (same numbers, half the compile) until the background process has compiled them
        self._waiting: list = []
        self.blas_threads = blas_threads(graph, self.batch)  # set before every compiled call (see prepare_threads)
        # the threads of its parallel regions beside busy processes (NETC_THREADS fixes them): as many as a conv
        # pass's chunks, or timed (netc.cpuload.busy_counts). NETC_REGION_POOL is checked here, not inside a compile.
        pool = numba.config.NUMBA_NUM_THREADS
        quiet = min(cores(), pool)
        counts = busy_counts(quiet, min(pool, busy_threads(graph, self.batch)), region_pool.wanted())
        regions = has_parallel_regions(graph) or bool(self.plan.buffers.blocks)  # a large linear's blocks
        self.thread_choice = ThreadChoice(quiet, counts) if regions and thread_count() is None else None
        self._packing = packing()  # NETC_PACK read (and checked) once per model
        # subnormals flushed while its compiled code runs (netc.fpmode) where every thread that computes takes
        # the caller's bits: netc's region pool, not Numba's own layer, and no OpenBLAS helper threads
        self.flush_denormals = (graph.spec.train.denormals == "flush" and fpmode.supported()
                                and (region_pool.wanted() or not regions) and blas_thread_count(self.blas_threads) == 1)
        b = self.plan.buffers
        self.slots = optimizer_slots(graph.spec.optimizer)
        self.P = zeros_aligned(b.param_size, self.dtype)
        self.G = zeros_aligned(b.param_size, self.dtype)
        self.S = zeros_aligned(max(self.slots, 1) * b.param_size, self.dtype)
        self.A = zeros_aligned(b.a_size, self.dtype)
        self.D = zeros_aligned(max(b.d_size, 1), self.dtype)
        self.I = np.zeros(max(b.i_size, 1), np.int32)
        self.W = zeros_aligned(b.w_size, self.dtype)
        self.L = np.zeros(self.batch * graph.label_steps, np.int64)  # a label per sample, or per step of each
        self.T = np.zeros(max(b.state_size, 1), self.dtype)  # state tensors: running statistics, counters
        self.H = np.array(list(self.plan.hyper.values()) or [0.0], np.float64)  # hyperparameters (data, not source)
        self.V = self.plan.make_views({"P": self.P, "G": self.G, "S": self.S, "A": self.A, "D": self.D,
                                       "I": self.I, "W": self.W, "L": self.L, "T": self.T, "H": self.H})
        self.step = 0  # optimizer steps taken (Adam's bias correction)
        self._sizes: tuple[tuple[int, int], np.ndarray] = ((-1, -1), np.zeros(0, np.int64))  # see _batch_sizes
        values = initial_values(graph, graph.spec.train.seed if seed is None else seed)
        values.update({f"{node.name}.{name}": np.full(tensor.shape, tensor.initial)
                       for node in graph.nodes for name, tensor in node.state.items()})
        self.set_weights(values, strict=True)

    # ------------------------------------------------------------------ parameters
    def param_views(self, arena: np.ndarray) -> dict[str, np.ndarray]:
        """Named views (`fc1.weight`, shaped as PyTorch) into an arena with the parameter layout (P, G or a slot of S).
        A parameter the plan stores transposed is seen through a transposed view: reading, writing and
        copying it (`view.copy()`: C order) all see the declared shape."""
        views = {}
        for node in self.graph.owners:
            for pname, shape in node.param_shapes.items():
                region = self.plan.buffers.params[node.name][pname]
                stored = arena[region.offset:region.offset + region.per_sample]
                views[f"{node.name}.{pname}"] = stored.reshape(shape[::-1]).T if region.transposed else stored.reshape(shape)
        return views

    def state_views(self) -> dict[str, np.ndarray]:
        """Named views (`bn1.running_mean`, shaped as PyTorch) of the state tensors in T."""
        views = {}
        for node, tensors in self.plan.buffers.state.items():
            for name, region in tensors.items():
                shape = self.graph.by_name[node].state[name].shape
                views[f"{node}.{name}"] = self.T[region.offset:region.offset + region.per_sample].reshape(shape)
        return views

    def _state_tensor(self, name: str):
        node, tensor = name.rsplit(".", 1)
        return self.graph.by_name[node].state[tensor]

    def get_weights(self) -> dict[str, np.ndarray]:
        """Copies of every parameter tensor, named like a PyTorch state_dict."""
        return {name: view.copy() for name, view in self.param_views(self.P).items()}

    def get_state(self) -> dict[str, np.ndarray]:
        """Copies of every state tensor (running statistics as the plan's dtype, counters as int64)."""
        return {name: view.astype(np.int64) if self._state_tensor(name).dtype == "int64" else view.copy()
                for name, view in self.state_views().items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and state under PyTorch's names: what a checkpoint holds, and what
        `module.load_state_dict(..., strict=True)` takes."""
        return {**self.get_weights(), **self.get_state()}

    def set_weights(self, values: dict[str, np.ndarray], strict: bool = False) -> LoadReport:
        """Load matching tensors (parameters and state) by name and shape; report what matched."""
        views = {**self.param_views(self.P), **self.state_views()}
        report = LoadReport([], [], [], [])
        for name, view in views.items():
            if name not in values:
                report.missing.append(name)
            elif tuple(np.shape(values[name])) != view.shape:
                report.mismatched.append((name, view.shape, tuple(np.shape(values[name]))))
            else:
                view[...] = values[name]
                report.matched.append(name)
        report.unexpected = [name for name in values if name not in views]
        if strict and (report.missing or report.unexpected or report.mismatched):
            raise ValueError(f"weights do not match the model: {report}")
        return report

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """Optimizer slots as named tensors (`fc1.weight.state0`), for checkpoints and resume."""
        state = {}
        size = self.plan.buffers.param_size
        for slot in range(self.slots):
            for name, view in self.param_views(self.S[slot * size:(slot + 1) * size]).items():
                state[f"{name}.state{slot}"] = view.copy()
        return state

    def set_optimizer_state(self, state: dict[str, np.ndarray], step: int) -> None:
        size = self.plan.buffers.param_size
        for slot in range(self.slots):
            for name, view in self.param_views(self.S[slot * size:(slot + 1) * size]).items():
                view[...] = state[f"{name}.state{slot}"]
        self.step = int(step)

    def gradients(self) -> dict[str, np.ndarray]:
        """The last computed gradient of every trainable tensor."""
        trainable = {f"{n.name}.{p}" for n in self.graph.owners if n.trainable for p in n.param_shapes}
        return {name: view.copy() for name, view in self.param_views(self.G).items() if name in trainable}

    # ------------------------------------------------------------------ data
    def prepare(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Float inputs as (N, features) arrays of the plan's dtype, labels as int64."""
        prepared = {}
        count = None
        for name in self.graph.float_inputs:
            if name not in arrays:
                raise DataError(Diagnostic("E-DATA", f"no data for input '{name}'", Location("<data>"),
                                           hint=f"provide arrays for: {', '.join(self.graph.inputs)}"))
            x = np.asarray(arrays[name])
            size = numel(self.graph.inputs[name])
            if x.ndim == 0 or x[0].size != size:
                raise DataError(Diagnostic("E-DATA", f"input '{name}' expects samples of shape "
                                           f"{list(self.graph.inputs[name])}, got array of shape {list(x.shape)}",
                                           Location("<data>")))
            prepared[name] = np.ascontiguousarray(x.reshape(len(x), size), dtype=self.dtype)
            count = len(x) if count is None else count
        for name in self.graph.index_inputs:
            prepared[name] = self._index_array(name, arrays)
            count = len(prepared[name]) if count is None else count
        label = self.graph.label_input
        if label is not None:
            y = np.asarray(arrays.get(label, np.zeros(0)))
            if self.graph.label_steps > 1 and len(y):  # a label at every step: [N, T]
                y = y.reshape(len(y), self.graph.label_steps)
            prepared["__labels__"] = np.ascontiguousarray(y, dtype=np.int64)
        else:
            prepared["__labels__"] = np.zeros(0, np.int64)
        prepared["__count__"] = count
        return prepared

    def _index_array(self, name: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """An index input as (N, positions) int64, every index checked to lie in [0, indices)."""
        if name not in arrays:
            raise DataError(Diagnostic("E-DATA", f"no data for input '{name}'", Location("<data>"),
                                       hint=f"provide arrays for: {', '.join(self.graph.inputs)}"))
        x = np.asarray(arrays[name])
        size, limit = numel(self.graph.inputs[name]), self.graph.spec.inputs[name].indices
        if x.ndim == 0 or x[0].size != size or x.dtype.kind not in "iub":
            raise DataError(Diagnostic("E-DATA", f"input '{name}' expects integer indices of shape "
                                       f"{list(self.graph.inputs[name])} per sample, got a {x.dtype} array of shape "
                                       f"{list(x.shape)}", Location("<data>")))
        flat = np.ascontiguousarray(x.reshape(len(x), size), dtype=np.int64)
        bad = (flat < 0) | (flat >= limit)
        if bad.any():
            row = int(np.argmax(bad.any(axis=1)))
            raise DataError(Diagnostic("E-DATA", f"sample {row}: index {int(flat[row][bad[row]][0])} of input "
                                       f"'{name}' is outside [0, {limit})", Location("<data>"),
                                       hint=f"inputs.{name}.indices is {limit}"))
        return flat

    def _xs(self, prepared) -> list[np.ndarray]:
        return [prepared[name] for name in self.graph.float_inputs + self.graph.index_inputs]

    # ------------------------------------------------------------------ compiled entry points
    @property
    def tier(self) -> str:
        return self.plan.tier

    @property
    def compiles_in_background(self) -> bool:
        """Whether the fused tier is being (or will be, at the first epoch) compiled by another process."""
        return self.plan.tier == PYTHON and (self._background or
                                             (self._compiling is not None and self._compiling.poll() is None))

    def _upgrade(self) -> None:
        """Move from serial twins to the parallel kernels, and to the fused tier, once each is compiled
        (by our background process or another run)."""
        if self.plan.tier != PYTHON or not self._auto:
            return
        if self._waiting:
            from netc.compiler import kernel_library

            ended = self._compiling is not None and self._compiling.poll() is not None
            if ended or not kernel_library.missing(self._waiting):
                # compiled, or the background compile is gone (failed, killed, never started): the
                # parallel kernels compile here on their first call if they must
                self._waiting = []
        if self._compiling is not None and self._compiling.poll() is None:
            return  # still compiling
        if fused_compile.ready(self._fused_path, self.dtype.name):
            self.plan.tier = FUSED
            self._compiling = None

    @property
    def module(self):
        """The plan's module of the current tier, with this model's kernels bound (see _bind_kernels)."""
        if self.plan.tier == PYTHON:
            self._bind_kernels()
        return self.plan.module

    def _bind_kernels(self) -> None:
        """The Python tier's module calls the parallel kernels, or their serial twins while those are
        compiled elsewhere (set on every call: models of one plan in a process share its module)."""
        from netc.compiler import kernel_library

        serial = {name for _, name, _ in self._waiting}
        namespace = vars(self.plan.module)
        for kernel in kernel_library.parallel_kernels():
            name = kernel.py_func.__name__
            namespace[name] = kernel.serial if name in serial else kernel

    def _samples(self, count: int) -> dict:
        """`count` samples of zeros, prepared: what warm-ups run (only the types matter)."""
        prepared = {name: np.zeros((count, numel(self.graph.inputs[name])), self.dtype)
                    for name in self.graph.float_inputs}
        prepared.update({name: np.zeros((count, numel(self.graph.inputs[name])), np.int64)
                         for name in self.graph.index_inputs})
        prepared["__labels__"] = self.label_zeros(count if self.graph.label_input else 0)
        prepared["__count__"] = count
        return prepared

    def label_zeros(self, count: int) -> np.ndarray:
        """Labels of `count` samples, all 0, shaped as the plan stages them: [N], or [N, T] with a label at
        every step (predictions and warm-ups, whose loss nobody reads)."""
        steps = self.graph.label_steps
        return np.zeros((count, steps) if steps > 1 else count, np.int64)

    def run_serial_twins(self) -> None:
        """On the Python tier, run the serial twins of the parallel kernels this machine has not
        compiled yet (the same numbers; half the compile, as a parallel region compiles twice), until
        they are compiled (a new model, or this one at its next epoch, looks again): for short runs on
        a few samples, which the cores would not speed up (a gradient check in float64 compiled an
        LSTM's two parallel kernels for 10.6 s of its 13.6)."""
        if self.plan.tier == PYTHON:
            from netc.compiler import kernel_library

            _, self._waiting = kernel_library.serial_twins(self.kernels_called())

    def warm_up(self, on_compile: Callable[[int], None] | None = None) -> bool:
        """Make the plan ready to run, doing no work; True when something was compiled. Fused tier:
        compile (or load from the on-disk cache) the epoch loop. Python tier: compile the kernels
        this machine has not compiled yet, in parallel processes (netc.compiler.kernel_library),
        telling `on_compile(how many)` first."""
        if self.plan.tier == PYTHON:
            from netc.compiler import kernel_library

            entries = self.kernels_called()
            if self._background and not fused_compile.failed(self._fused_path, self.dtype.name):
                # a new plan: the fused loop and the parallel kernels follow in the background
                entries, self._waiting = kernel_library.serial_twins(entries)
            todo = kernel_library.missing(entries)
            if todo:
                if on_compile is not None:
                    on_compile(len(todo))
                kernel_library.compile_missing(todo)
            return bool(todo)
        self._epoch(self._samples(0), np.zeros(0, np.int64), True, 0.0, 0)
        return sum(self.plan.module.epoch.stats.cache_misses.values()) > 0

    def kernels_called(self) -> list:
        """(module, kernel, argument types) of every kernel call of a training and an evaluation batch."""
        from netc.compiler import kernel_library

        one = self._samples(1)
        k = numel(self.graph.shape_of(self.plan.loss.input))
        classes = k // self.graph.label_steps if self.has_accuracy() else 1  # [T, C] scores: C
        calls = [self._epoch_args(one, np.zeros(1, np.int64), True, 0.0, 0),
                 self._epoch_args(one, np.zeros(1, np.int64), False, 0.0, 0,
                                  np.zeros((classes, classes), np.int64), np.zeros((1, k), self.dtype))]
        return kernel_library.needed(self.plan.sources[PYTHON], calls)

    def _epoch_args(self, prepared: dict, order: np.ndarray, train: bool, lr, seed: int,
                    confusion: np.ndarray | None = None, scores: np.ndarray | None = None) -> tuple:
        """The arguments of the plan's epoch loop (see compiler/module.py: _epoch_signature)."""
        count = prepared["__count__"]
        batches = (count + self.batch - 1) // self.batch
        losses = np.zeros(max(batches, 1))
        parts = np.zeros((max(batches, 1), len(self.plan.losses)))
        corrects = np.zeros(max(batches, 1), np.int64)
        if confusion is None:
            confusion = np.zeros((1, 1), np.int64)
        if scores is None:
            scores = np.zeros((0, numel(self.graph.shape_of(self.plan.loss.input))), self.dtype)
        return (self.V, *self._xs(prepared), prepared["__labels__"], np.ascontiguousarray(order, np.int64), count,
                self.batch, train, self._rates(lr, batches), self.step, seed, losses, parts, corrects, confusion, scores)

    def _epoch(self, prepared: dict, order: np.ndarray, train: bool, lr, seed: int,
               confusion: np.ndarray | None = None, scores: np.ndarray | None = None):
        """Run the plan's epoch loop; returns (batches done, per-batch mean losses, per-batch correct counts,
        per-batch mean of each loss)."""
        count = prepared["__count__"]
        batches = (count + self.batch - 1) // self.batch
        args = self._epoch_args(prepared, order, train, lr, seed, confusion, scores)
        losses, parts, corrects = args[-5], args[-4], args[-3]
        choice = self.thread_choice
        others = load_watcher().cores_busy() if choice else 0.0
        threads = choice.threads(others) if choice else None
        prepare_threads(self.blas_threads, threads, others >= ThreadChoice.BUSY)
        self._upgrade()
        pool = region_pool.pool()
        if choice and pool and self._packing:
            beside = load_watcher().runnable_others() if others >= ThreadChoice.BUSY else 0.0
            packed = placement().enter(threads, beside, pool.worker_ids())
        else:
            packed = None
        started = time.perf_counter()
        try:
            with fpmode.flushed(self.flush_denormals):
                done = self.module.epoch(*args)
        finally:
            placement().leave(packed)
        if choice:
            choice.record(threads, others, time.perf_counter() - started, count)
        if self._background and count and self.plan.tier == PYTHON:
            # after a call that ran the kernels: on a cold cache they are compiled (and cached) by now,
            # so the other process loads them rather than compiling them a second time
            self._compiling = fused_compile.start(self._fused_path, self.plan.sources[FUSED], self.dtype.name, args,
                                                  self._waiting)
            if self._compiling is None:  # no background compile: the parallel kernels compile here when called
                self._waiting = []
            self._background = False  # one try per model
        return done, losses[:batches], corrects[:batches], parts[:batches]

    def _batch_sizes(self, count: int, batches: int) -> np.ndarray:
        """The samples in each of the first `batches` batches of `count`; kept (read-only) for the next
        epoch, which has the same count as a rule (8 us of seed-mlp's 1.1 ms epoch of 10,000 batches)."""
        if self._sizes[0] != (count, batches):
            sizes = np.minimum(self.batch, count - np.arange(batches) * self.batch)
            sizes.flags.writeable = False
            self._sizes = ((count, batches), sizes)
        return self._sizes[1]

    @staticmethod
    def _rates(lr, batches: int) -> np.ndarray:
        """One learning rate per batch: a number for all of them, or an array of `batches` (a schedule)."""
        rates = np.asarray(lr, np.float64)
        if rates.ndim == 0:
            return np.full(max(batches, 1), float(rates))
        if len(rates) < batches:
            raise ValueError(f"{len(rates)} learning rates for {batches} batches")
        return np.ascontiguousarray(rates)

    def _checked_order(self, prepared: dict, order, count: int) -> np.ndarray:
        """`order` as the epoch loop reads it: `count` row numbers of the prepared arrays. The compiled loop
        does not check its indices (a short order or a row past the end would read outside the arrays)."""
        order = np.ascontiguousarray(order, np.int64)
        arrays = self._xs(prepared) or [prepared.get("__labels__", np.zeros(0))]
        rows = len(arrays[0])
        if order.ndim != 1 or len(order) != count:
            raise ValueError(f"order has shape {list(order.shape)}; the epoch needs {count} row numbers, one a sample")
        if count and (order.min() < 0 or order.max() >= rows):
            raise ValueError(f"order has row numbers outside [0, {rows}) (the prepared arrays have {rows} rows)")
        return order

    def train_epoch(self, prepared: dict, order: np.ndarray, lr=None, seed: int = 0) -> EpochResult:
        """One pass over the samples in `order`, updating after every batch (all inside compiled code).
        `lr`: the spec's by default, a number, or one per batch (a schedule: no recompiling)."""
        count = prepared["__count__"]
        order = self._checked_order(prepared, order, count)
        lr = self.graph.spec.optimizer.lr if lr is None else lr
        done, losses, corrects, parts = self._epoch(prepared, order, True, lr, seed)
        self.step += done
        diverged = done < len(losses)
        if diverged:
            return EpochResult(float(losses[done]), None, done, True)
        sizes = self._batch_sizes(count, done)
        mean = float(np.sum(losses * sizes) / max(count, 1))
        accuracy = float(corrects.sum() / self.scored(count)) if self.has_accuracy() and count else None
        return EpochResult(mean, accuracy, done, False, self._means(parts, sizes, count, mean))

    def evaluate(self, prepared: dict) -> EvalResult:
        """Loss, accuracy, confusion matrix and scores over every sample (dropout off, no updates)."""
        count = prepared["__count__"]
        k = numel(self.graph.shape_of(self.plan.loss.input))
        classes = k // self.graph.label_steps if self.has_accuracy() else 1  # [T, C] scores: C
        confusion = np.zeros((classes, classes), np.int64)
        scores = np.zeros((count, k), self.dtype)
        done, losses, corrects, parts = self._epoch(prepared, np.arange(count, dtype=np.int64), False, 0.0, 0,
                                                    confusion, scores)
        sizes = self._batch_sizes(count, done)
        loss = float(np.sum(losses * sizes) / max(count, 1))
        accuracy = float(corrects.sum() / self.scored(count)) if self.has_accuracy() and count else None
        labels = prepared["__labels__"] if self.has_accuracy() else None
        return EvalResult(loss, accuracy, count, confusion if self.has_accuracy() else None, scores, labels,
                          self._means(parts, sizes, count, loss))

    def _means(self, parts: np.ndarray, sizes: np.ndarray, count: int, mean: float) -> list[float]:
        """Each loss's mean over the samples, from its per-batch means. With one loss and no weight the
        per-batch means are the epoch's own (emit_loss: the plan returns the loss's value), so `mean`,
        the epoch's, is that loss's: the same sum of the same numbers, taken once."""
        if len(self.plan.losses) == 1 and self.plan.losses[0].weight is None:
            return [mean]
        return [float(v) for v in (parts * sizes[:, None]).sum(axis=0) / max(count, 1)]

    def scored(self, count: int) -> int:
        """Predictions that `count` samples make: one each, or one at every step (labels [T])."""
        return count * self.graph.label_steps

    def has_accuracy(self) -> bool:
        """Whether the loss has classes (cross_entropy, nll, mse on labels), so accuracy means something."""
        return self.plan.loss.kind != "mse"

    def predict(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Outputs of the layer the loss reads (logits, log-probabilities, ...) for every sample."""
        prepared = self.prepare(arrays)
        if not len(prepared["__labels__"]) and self.graph.label_input:
            prepared["__labels__"] = self.label_zeros(prepared["__count__"])
        return self.evaluate(prepared).scores

    def loss_and_gradients(self, arrays: dict[str, np.ndarray], training: bool = False,
                           seed: int = 0) -> tuple[float, dict[str, np.ndarray]]:
        """Mean loss on one batch (up to `batch` samples) and the gradient of every trainable tensor.
        Evaluation mode by default (dropout off, batch norm on running statistics); `training=True`
        uses batch statistics (and updates the running ones: snapshot `T` around it to undo that)
        and draws dropout masks from `seed`."""
        prepared = self.prepare(arrays)
        n = prepared["__count__"]
        if n > self.batch:
            raise ValueError(f"{n} samples exceed the plan's batch of {self.batch}; compile with batch={n}")
        self.stage(prepared, n)
        prepare_threads(self.blas_threads)
        m = self.module
        m.seed_rng(seed)
        with fpmode.flushed(self.flush_denormals):
            m.forward(self.V, n, training)
            value, _ = m.loss(self.V, n, True)
            m.backward(self.V, n, training)
        return float(value), self.gradients()

    def stage(self, prepared: dict, n: int) -> None:
        """Copy the first n samples of prepared data into the plan's input buffers (for direct calls)."""
        values = self.plan.buffers.values
        for name in self.graph.float_inputs:
            region = values[name]
            self.A[region.offset:region.offset + n * region.per_sample] = prepared[name][:n].ravel()
        for name in self.graph.index_inputs:
            region = self.plan.buffers.indices[name]
            self.I[region.offset:region.offset + n * region.per_sample] = prepared[name][:n].ravel()
        labels = prepared["__labels__"]
        if len(labels):
            self.L[:n * self.graph.label_steps] = labels[:n].ravel()
