"""Assembles the generated plan module: forward, loss and backward (for the Python
API and gradcheck), and the compiled epoch loop, which writes out forward, loss and
backward with the optimizer updates fused in. Every function opens by binding the views
its body uses to named locals (ViewTable.bindings)."""

from __future__ import annotations

from netc.compiler.buffers import BufferPlan
from netc.compiler.codegen import KERNEL_MODULES, Emitter, ViewTable, emit_backward, emit_forward, emit_loss, emit_update
from netc.compiler.steps import LossStep, Step, should_inline_kernels
from netc.graph.ir import Graph
from netc.ops.base import numel


def float_inputs(graph: Graph) -> list[str]:
    return [name for name, inp in graph.spec.inputs.items() if inp.dtype == "float32"]


def label_input(graph: Graph) -> str | None:
    return next((name for name, inp in graph.spec.inputs.items() if inp.dtype == "int64"), None)


def generate_source(graph: Graph, steps: list[Step], loss: LossStep, plan: BufferPlan, needs_grad: dict[str, bool],
                    header: str) -> tuple[str, ViewTable]:
    """The module's source, and the table of views its functions take as `V`."""
    views = ViewTable(plan.batch, reserved=_epoch_names(graph))
    out: list[str] = [f'"""{header}"""', "", "import numpy as np", "from numpy import bool_ as B", "from numpy import int64 as I64", "", "from netc.jit import plan_function"]
    for module, names in KERNEL_MODULES.items():
        out.append(f"from {module} import {', '.join(names)}")
    tiny = should_inline_kernels(graph, plan.batch)
    if tiny:
        out += ["", "# a tiny plan: every kernel inlined into the functions below (see should_inline_kernels)"]
        out += [f"{name} = {name}.inlined" for names in KERNEL_MODULES.values() for name in names]
    out.append("")

    def function(signature: str, body: list[str], comment: str) -> None:
        out.extend(["", "", f"# {comment}", "@plan_function", f"def {signature}:"])
        out.extend(views.bindings(body) + body or ["    pass"])

    def step_comment(e: Emitter, step: Step) -> None:
        e.line(f"# {' + '.join(step.covers)}")

    # forward
    e = Emitter(graph, plan, needs_grad, views)
    for step in steps:
        if step.kind != "alias":
            step_comment(e, step)
        emit_forward(e, step)
    function("forward(V, n, training)", e.lines, "forward pass of n samples staged in A")
    bodies = {"forward": e.lines}

    # loss
    e = Emitter(graph, plan, needs_grad, views)
    emit_loss(e, loss, label_input(graph) == loss.target)
    function("loss(V, n, need_grad)", e.lines, f"{loss.kind}: (mean loss, correct) and its gradient")
    bodies["loss"] = e.lines

    # backward: gradients only (gradcheck, the Python API) ...
    e = Emitter(graph, plan, needs_grad, views)
    e.acc(loss.grad_target)  # the loss wrote it
    for step in reversed(steps):
        before = len(e.lines)
        emit_backward(e, step)
        if len(e.lines) > before:
            e.lines.insert(before, f"    # {' + '.join(step.covers)}")
    function("backward(V, n, training)", e.lines, "gradients of every trainable parameter into G")

    # ... and, for the epoch loop, with each parameter's update fused right after its last gradient
    optimizer = graph.spec.optimizer
    remaining = {}
    for step in steps:
        if step.needs_grad and step.node.param_shapes and step.node.trainable:
            remaining[step.node.param_owner] = remaining.get(step.node.param_owner, 0) + 1
    e = Emitter(graph, plan, needs_grad, views)
    e.acc(loss.grad_target)
    for step in reversed(steps):
        before = len(e.lines)
        emit_backward(e, step)
        if len(e.lines) > before:
            e.lines.insert(before, f"    # {' + '.join(step.covers)}")
        owner = step.node.param_owner
        if owner in remaining and step.node.trainable and step.needs_grad:
            remaining[owner] -= 1
            if remaining[owner] == 0:
                e.line(f"# {optimizer.type} update of {owner}")
                emit_update(e, graph.by_name[owner], optimizer)
    bodies["backward_update"] = e.lines  # written out in the epoch loop only

    out.extend(_loops(graph, plan, loss, views, bodies))
    return "\n".join(out) + "\n", views


def _epoch_signature(graph: Graph) -> list[str]:
    xs = [f"X_{name}" for name in float_inputs(graph)]
    return ["V", *xs, "Y", "order", "count", "batch", "train", "lr", "step0", "seed", "losses", "corrects", "confusion",
            "scores_out"]


def _epoch_names(graph: Graph) -> tuple[str, ...]:
    """The epoch loop's arguments and locals, which no view may be named."""
    return (*_epoch_signature(graph), "training", "need_grad", "batches", "b", "start", "n", "value", "correct",
            "step", "scores")


def _stage(graph: Graph, e: Emitter) -> list[str]:
    lines = []
    for name in float_inputs(graph):
        rows = e.val(name, (numel(graph.inputs[name]),))
        lines.append(f"        stage_rows(X_{name}, order, start, n, {rows})")
    if label_input(graph):
        lines.append(f"        stage_labels(Y, order, start, n, {e.labels(rows=False)})")
    return lines


def _indent(lines: list[str], levels: int) -> list[str]:
    return ["    " * levels + line for line in lines]


def _loops(graph: Graph, plan: BufferPlan, loss: LossStep, views: ViewTable, bodies: dict[str, list[str]]) -> list[str]:
    """The epoch loop, with the bodies of forward, loss and backward (with the updates) written
    out in it rather than called: Numba re-optimizes and re-generates the machine code of every function
    a function calls, so each level of calls adds seconds to a cold compile (LeNet-5: ~10 s)."""
    loss_line = bodies["loss"][-1].strip()
    assert len(bodies["loss"]) == 1 and loss_line.startswith("return "), "the loss body is one return"
    e = Emitter(graph, plan, {}, views)  # the loop's own views: staging, scores, labels
    stage = _stage(graph, e)
    scores = e.val(loss.input, (numel(graph.shape_of(loss.input)),))
    has_labels = label_input(graph) is not None
    confusion = f"        confusion_add(scores, {e.labels()}, confusion)" if has_labels and loss.kind != "mse" else ""
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
        *_indent(bodies["forward"], 1),
        "        # loss",
        "        value, correct = " + loss_line[len("return "):],
        "        losses[b] = value",
        "        corrects[b] = correct",
        "        if train:",
        "            if not np.isfinite(value):",
        "                return b",
        "            step = step0 + b + 1",
        *_indent(bodies["backward_update"], 2),
        "        else:",
        f"            scores = {scores}",
        "            copy_rows(scores, scores_out, start)",
    ]
    if confusion:
        body.append("    " + confusion)
    body.append("    return batches")
    return ["", "", "# one pass over `count` samples inside compiled code: training (train=True: shuffled by `order`,",
            "# updates after every batch) or evaluation (scores and the confusion matrix [true, predicted]).",
            "# `train` is a runtime flag, so one compiled loop serves both. Returns the batches done:",
            "# fewer when the loss stops being finite (that batch's update is not applied).",
            "@plan_function", f"def epoch({', '.join(_epoch_signature(graph))}):", *views.bindings(body), *body]


def generate_timing_source(plan) -> str:
    """A companion module for `netc time`: one function per step, forward and backward, emitted
    by the same emitters in the same order as the plan (so gradient flags and views agree)."""
    graph, views = plan.graph, plan.views
    known = len(views.entries)
    out = [f'"""netc timing module for \'{graph.spec.name}\'. Generated."""', "",
           "from numpy import bool_ as B", "from numpy import int64 as I64", "", "from netc.jit import plan_function"]
    for module, names in KERNEL_MODULES.items():
        out.append(f"from {module} import {', '.join(names)}")
    out += ["", "", "@plan_function", "def noop(V, n):", "    return n"]

    def function(signature: str, body: list[str]) -> None:
        out.extend(["", "", "@plan_function", f"def {signature}:", *(views.bindings(body) + body or ["    pass"])])

    forward = Emitter(graph, plan.buffers, plan.needs_grad, views)
    for i, step in enumerate(plan.steps):
        forward.lines = []
        emit_forward(forward, step)
        function(f"fwd_{i}(V, n, training)", forward.lines)
    loss = Emitter(graph, plan.buffers, plan.needs_grad, views)
    emit_loss(loss, plan.loss, label_input(graph) == plan.loss.target)
    function("loss(V, n, need_grad)", loss.lines)
    backward = Emitter(graph, plan.buffers, plan.needs_grad, views)
    backward.acc(plan.loss.grad_target)
    for i, step in reversed(list(enumerate(plan.steps))):
        backward.lines = []
        emit_backward(backward, step)
        function(f"bwd_{i}(V, n, training)", backward.lines)
    assert len(views.entries) == known, "the timing module must use the plan's own views"
    return "\n".join(out) + "\n"
