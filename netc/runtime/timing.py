"""`netc time`: milliseconds per kernel of a plan, forward and backward, like `caffe time`.

Each step runs by one compiled function (`run` of netc.compiler.module.generate_timing_source,
told which step), called from Python in plan order on a random batch; the cost of a call that
runs no step (unboxing the view tuple, binding the views) is measured and subtracted. A full
training step is timed separately inside the compiled epoch loop, where no Python runs between
kernels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from netc import fpmode
from netc.compiler import FUSED
from netc.compiler.cache import load_module
from netc.compiler.module import TIMED_BACKWARD, TIMED_FORWARD, TIMED_LOSS, TIMED_NOTHING, generate_timing_source
from netc.graph.ir import Graph
from netc.jit import prepare_threads
from netc.runtime.gradcheck import random_batch
from netc.runtime.model import Model


@dataclass
class StepTiming:
    index: int
    covers: list[str]
    forward_ms: float  # median
    forward_p90_ms: float
    backward_ms: float | None  # None when the step has no backward
    backward_p90_ms: float | None


@dataclass
class PlanTiming:
    batch: int
    iterations: int
    steps: list[StepTiming]
    loss_ms: float
    forward_ms: float  # sums of the medians
    backward_ms: float
    train_step_ms: float  # median of whole compiled steps (forward, loss, backward, update)
    samples_per_second: float
    call_overhead_us: float


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1e3


def time_plan(graph: Graph, batch: int | None = None, iterations: int = 20, warmup: int = 3, seed: int = 0) -> PlanTiming:
    model = Model(graph, batch=batch, seed=seed, tier=FUSED)  # the compiled loop is what is timed
    batch = model.batch
    timing = load_module(generate_timing_source(model.plan))[0]
    arrays = random_batch(graph, batch, seed)
    prepared = model.prepare(arrays)
    model.stage(prepared, batch)
    prepare_threads(model.blas_threads)
    V, n = model.V, batch
    steps = model.plan.steps
    has_backward = [s.kind != "alias" and s.backward and s.needs_grad for s in steps]
    run = timing.run
    forward_t = [[] for _ in steps]
    backward_t = [[] for _ in steps]
    loss_t, overhead = [], []
    with fpmode.flushed(model.flush_denormals):  # the modes a training call runs under
        for rep in range(warmup + iterations):
            keep = rep >= warmup
            t = time.perf_counter()
            run(V, n, False, TIMED_NOTHING, 0)
            overhead.append(time.perf_counter() - t)
            for i in range(len(steps)):
                t = time.perf_counter()
                run(V, n, False, TIMED_FORWARD, i)
                if keep:
                    forward_t[i].append(time.perf_counter() - t)
            t = time.perf_counter()
            run(V, n, True, TIMED_LOSS, 0)
            if keep:
                loss_t.append(time.perf_counter() - t)
            for i in reversed(range(len(steps))):
                t = time.perf_counter()
                run(V, n, False, TIMED_BACKWARD, i)
                if keep:
                    backward_t[i].append(time.perf_counter() - t)
    call = float(np.median(overhead))

    def net(values: list[float]) -> list[float]:
        return [max(v - call, 0.0) for v in values]

    results = []
    for i, step in enumerate(steps):
        if step.kind == "alias":
            continue
        f = net(forward_t[i])
        b = net(backward_t[i]) if has_backward[i] else None
        results.append(StepTiming(i, step.covers, _p(f, 50), _p(f, 90),
                                  _p(b, 50) if b else None, _p(b, 90) if b else None))
    # whole training steps in the compiled loop
    count = batch * max(iterations, 4)
    big = random_batch(graph, count, seed + 1)
    prepared_big = model.prepare(big)
    order = np.arange(count, dtype=np.int64)
    model.train_epoch(prepared_big, order)
    epochs = []
    for _ in range(5):
        t = time.perf_counter()
        model.train_epoch(prepared_big, order)
        epochs.append(time.perf_counter() - t)
    per_step = float(np.median(epochs)) / (count // batch)
    return PlanTiming(batch, iterations, results, _p(net(loss_t), 50),
                      sum(s.forward_ms for s in results), sum(s.backward_ms or 0.0 for s in results),
                      per_step * 1e3, batch / per_step, call * 1e6)
