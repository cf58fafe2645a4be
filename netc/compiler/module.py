"""Assembles the generated plan module: forward, loss and backward (for the Python
API and gradcheck), and the compiled epoch loop, which writes out forward, loss and
backward with the optimizer updates fused in. Every function opens by binding the views
its body uses to named locals (ViewTable.bindings)."""

from __future__ import annotations

from dataclasses import dataclass

from netc.compiler.buffers import BufferPlan
from netc.compiler.codegen import (KERNEL_MODULES, Emitter, ViewTable, emit_backward, emit_clip, emit_forward, emit_loss,
                                   emit_update, hyper_table, loss_operands, loss_value)
from netc.compiler.steps import LossStep, Step, should_inline_kernels
from netc.graph.ir import Graph
from netc.ops.base import numel

# the two tiers of a plan: its functions compiled by Numba (the fused epoch loop), or the same
# functions run as Python over the compiled kernels (starts at once; see netc.runtime.model)
FUSED, PYTHON = "fused", "python"


@dataclass
class Bodies:
    """Every step's kernel calls, written once by its op's emitters. The plan's functions (forward,
    backward, the epoch loop) and the timing module's per-step functions are put together from
    them, so all of them run the same calls with the same gradient flags."""

    forward: list[list[str]]  # per step, in step order
    loss: list[str]  # the loss kernels' calls, ending in `return <total>, <correct>`
    backward: list[list[str]]  # per step (same index; empty when it has no gradient to compute)
    updates: dict[int, list[str]]  # step index -> the optimizer updates written after its backward
    clip: list[str]  # gradient clipping, when the optimizer has it: then every update waits for it

    def comment(self, steps: list[Step], i: int) -> str:
        return f"    # {' + '.join(steps[i].covers)}"

    def forward_body(self, steps: list[Step]) -> list[str]:
        lines = []
        for i, step in enumerate(steps):
            if step.kind != "alias":
                lines.append(self.comment(steps, i))
            lines += self.forward[i]
        return lines

    def backward_body(self, steps: list[Step], with_updates: bool) -> list[str]:
        """In reverse step order; `with_updates`: each parameter's update right after its last
        gradient (the epoch loop), else gradients only (gradcheck, the Python API)."""
        lines = []
        for i in reversed(range(len(steps))):
            if self.backward[i]:
                lines += [self.comment(steps, i), *self.backward[i]]
            if with_updates and not self.clip:
                lines += self.updates.get(i, [])
        if with_updates and self.clip:  # clipping needs every gradient first
            lines += self.clip
            for i in reversed(range(len(steps))):
                lines += self.updates.get(i, [])
        return lines


def emit_bodies(graph: Graph, steps: list[Step], losses: list[LossStep], plan: BufferPlan,
                needs_grad: dict[str, bool], views: ViewTable, projection=None) -> Bodies:
    """`projection` (compiler/projection.py): the backward starts from the signal the runtime writes
    into its start tensor's gradient, with its method's activation rules."""
    e = Emitter(graph, plan, needs_grad, views)
    forward = []
    for step in steps:
        e.lines = []
        emit_forward(e, step)
        forward.append(e.lines)
    e = Emitter(graph, plan, needs_grad, views)
    emit_loss(e, losses)
    loss_lines = e.lines
    e = Emitter(graph, plan, needs_grad, views, rule=projection.rule if projection is not None else None)
    for written in [loss.grad_target for loss in losses] if projection is None else [projection.tensor]:
        e.acc(written)  # the loss wrote it (a projection's runtime: the signal)
    backward: list[list[str]] = [[] for _ in steps]
    for i in reversed(range(len(steps))):
        e.lines = []
        emit_backward(e, steps[i])
        backward[i] = e.lines
    # each owner's update goes after the last (in backward order) step that adds to its gradients
    optimizer = graph.spec.optimizer
    remaining: dict[str, int] = {}
    for step in steps:
        if step.needs_grad and step.node.param_shapes and step.node.trainable:
            remaining[step.node.param_owner] = remaining.get(step.node.param_owner, 0) + 1
    updates: dict[int, list[str]] = {}
    for i in reversed(range(len(steps))):
        owner = steps[i].node.param_owner
        if owner in remaining and steps[i].node.trainable and steps[i].needs_grad:
            remaining[owner] -= 1
            if remaining[owner] == 0:
                e = Emitter(graph, plan, needs_grad, views)
                e.line(f"# {optimizer.type} update of {owner}")
                emit_update(e, graph.by_name[owner], optimizer)
                updates[i] = e.lines
    clip: list[str] = []
    if optimizer.clip is not None:
        e = Emitter(graph, plan, needs_grad, views)
        e.line(f"# gradient clipping ({'norm' if optimizer.clip.norm is not None else 'value'})")
        emit_clip(e, optimizer)
        clip = e.lines
    return Bodies(forward, loss_lines, backward, updates, clip)


def _header(header: str, tiny: bool, tier: str) -> list[str]:
    """The module's imports. The fused tier compiles its functions (`plan_function`), inlining every
    kernel into a tiny plan; the Python tier runs the same functions as Python over the compiled
    kernels (`python_glue`), so it starts without compiling any glue."""
    glue = "plan_function" if tier == FUSED else "python_glue as plan_function"
    out = [f'"""{header}"""', "", "import numpy as np", "from numpy import bool_ as B", "from numpy import int64 as I64",
           "", f"from netc.jit import fixed_view, {glue}"]
    for module, names in KERNEL_MODULES.items():
        out.append(f"from {module} import {', '.join(names)}")
    if tiny and tier == FUSED:
        out += ["", "# a tiny plan: every kernel inlined into the functions below (see should_inline_kernels)"]
        out += [f"{name} = {name}.inlined" for names in KERNEL_MODULES.values() for name in names]
    out.append("")
    return out


def generate_source(graph: Graph, steps: list[Step], losses: list[LossStep], plan: BufferPlan,
                    needs_grad: dict[str, bool], header: str,
                    projection=None) -> tuple[dict[str, str], ViewTable, Bodies]:
    """The module's source for each tier ({FUSED: ..., PYTHON: ...}: the same functions, compiled or
    run as Python), the table of views its functions take as `V`, and the steps' bodies."""
    views = ViewTable(plan.batch, reserved=_epoch_names(graph), hyper=tuple(hyper_table(graph)))
    out: list[str] = []

    def function(signature: str, body: list[str], comment: str) -> None:
        out.extend(["", "", f"# {comment}", "@plan_function", f"def {signature}:"])
        out.extend(views.bindings(body) + body or ["    pass"])

    bodies = emit_bodies(graph, steps, losses, plan, needs_grad, views, projection)
    function("forward(V, n, training)", bodies.forward_body(steps), "forward pass of n samples staged in A")
    kinds = " + ".join(loss.kind for loss in losses)
    function("loss(V, n, need_grad)", bodies.loss, f"{kinds}: (mean loss, correct) and the gradient")
    function("backward(V, n, training)", bodies.backward_body(steps, with_updates=False),
             "gradients of every trainable parameter into G" if projection is None else
             f"the signal in the gradient of {projection.tensor} projected to the inputs ({projection.method})")
    out.extend(_loops(graph, plan, losses, views, steps, bodies))
    tiny = should_inline_kernels(graph, plan.batch)
    sources = {tier: "\n".join(_header(f"{header} {tier.capitalize()} tier.", tiny, tier) + out) + "\n"
               for tier in (FUSED, PYTHON)}
    return sources, views, bodies


def _epoch_signature(graph: Graph) -> list[str]:
    xs = [f"X_{name}" for name in graph.float_inputs + graph.index_inputs]
    return ["V", *xs, "Y", "order", "count", "batch", "train", "lrs", "step0", "seed", "losses", "parts", "corrects",
            "confusion", "scores_out"]


def _epoch_names(graph: Graph) -> tuple[str, ...]:
    """The epoch loop's arguments and locals, which no view may be named."""
    values = [name for i in range(len(graph.losses)) for name in (loss_value(i), f"correct_{i}")]
    return (*_epoch_signature(graph), "training", "need_grad", "batches", "b", "start", "n", "value", "correct",
            "step", "lr", "scores", *values)


def _stage(graph: Graph, e: Emitter) -> list[str]:
    lines = []
    for name in graph.float_inputs:
        rows = e.val(name, (numel(graph.inputs[name]),))
        lines.append(f"        stage_rows(X_{name}, order, start, n, {rows})")
    for name in graph.index_inputs:
        rows = e.indices(name, (numel(graph.inputs[name]),))
        lines.append(f"        stage_rows(X_{name}, order, start, n, {rows})")
    if graph.label_input and graph.label_steps > 1:  # a label at every step: Y is [N, T]
        lines.append(f"        stage_rows(Y, order, start, n, {e.labels(rows=False, steps=graph.label_steps)})")
    elif graph.label_input:
        lines.append(f"        stage_labels(Y, order, start, n, {e.labels(rows=False)})")
    return lines


def _indent(lines: list[str], levels: int) -> list[str]:
    return ["    " * levels + line for line in lines]


def _loops(graph: Graph, plan: BufferPlan, losses: list[LossStep], views: ViewTable, steps: list[Step],
           bodies: Bodies) -> list[str]:
    """The epoch loop, with the bodies of forward, loss and backward (with the updates) written
    out in it rather than called: Numba re-optimizes and re-generates the machine code of every function
    a function calls, so each level of calls adds seconds to a cold compile (LeNet-5: ~10 s).
    `parts[b, i]` keeps each loss's own value when there are several."""
    loss_line = bodies.loss[-1].strip()
    assert loss_line.startswith("return "), "the loss body ends in its return"
    several = len(bodies.loss) > 1
    parts = [f"        parts[b, {i}] = {loss_value(i) if several else 'value'}" for i in range(len(losses))]
    loss = losses[0]
    e = Emitter(graph, plan, {}, views)  # the loop's own views: staging, scores, labels
    stage = _stage(graph, e)
    scores = e.val(loss.input, (numel(graph.shape_of(loss.input)),))
    has_labels = graph.label_input is not None
    if loss.target == graph.label_input and graph.label_steps > 1:  # every step counts: one row per step
        scored, _, labels = loss_operands(e, loss)
        confusion = f"        confusion_add({scored}, {labels}, confusion)"
    else:
        confusion = (f"        confusion_add(scores, {e.labels()}, confusion)" if has_labels and loss.kind != "mse"
                     else "")
    body = [
        "    seed_rng(seed)",
        "    training = train",
        "    need_grad = train",
        "    batches = (count + batch - 1) // batch",
        "    for b in range(batches):",
        "        start = b * batch",
        "        n = min(batch, count - start)",
        *stage,
        "        # forward",
        *_indent(bodies.forward_body(steps), 1),
        "        # loss",
        *_indent(bodies.loss[:-1], 1),
        "        value, correct = " + loss_line[len("return "):],
        "        losses[b] = value",
        *parts,
        "        corrects[b] = correct",
        "        if train:",
        "            if not np.isfinite(value):",
        "                return b",
        "            step = step0 + b + 1",
        "            lr = lrs[b]",
        *_indent(bodies.backward_body(steps, with_updates=True), 2),
        "        else:",
        f"            scores = {scores}",
        "            copy_rows(scores, scores_out, start)",
    ]
    if confusion:
        body.append("    " + confusion)
    body.append("    return batches")
    return ["", "", "# one pass over `count` samples inside compiled code: training (train=True: shuffled by `order`,",
            "# updates after every batch at learning rate lrs[b]) or evaluation (scores and the confusion matrix",
            "# [true, predicted]).",
            "# `train` is a runtime flag, so one compiled loop serves both. Returns the batches done:",
            "# fewer when the loss stops being finite (that batch's update is not applied).",
            "@plan_function", f"def epoch({', '.join(_epoch_signature(graph))}):", *views.bindings(body), *body]


def generate_timing_source(plan) -> str:
    """A companion module for `netc time`: one function per step, forward and backward, with the
    plan's own step bodies (so gradient flags and views agree)."""
    graph, views = plan.graph, plan.views
    out = [f'"""netc timing module for \'{graph.spec.name}\'. Generated."""', "",
           "from numpy import bool_ as B", "from numpy import int64 as I64", "",
           "from netc.jit import fixed_view, plan_function"]
    for module, names in KERNEL_MODULES.items():
        out.append(f"from {module} import {', '.join(names)}")
    out += ["", "", "@plan_function", "def noop(V, n):", "    return n"]

    def function(signature: str, body: list[str]) -> None:
        out.extend(["", "", "@plan_function", f"def {signature}:", *(views.bindings(body) + body or ["    pass"])])

    for i, lines in enumerate(plan.bodies.forward):
        function(f"fwd_{i}(V, n, training)", lines)
    function("loss(V, n, need_grad)", plan.bodies.loss)
    for i in reversed(range(len(plan.steps))):
        function(f"bwd_{i}(V, n, training)", plan.bodies.backward[i])
    return "\n".join(out) + "\n"
