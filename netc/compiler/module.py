"""Assembles the generated plan module: forward, loss, backward (with and without
the fused optimizer updates) and the compiled epoch loops."""

from __future__ import annotations

from netc.compiler.buffers import BufferPlan
from netc.compiler.codegen import KERNEL_MODULES, Emitter, emit_backward, emit_forward, emit_loss, emit_update
from netc.compiler.steps import LossStep, Step
from netc.graph.ir import Graph
from netc.ops.base import numel


def float_inputs(graph: Graph) -> list[str]:
    return [name for name, inp in graph.spec.inputs.items() if inp.dtype == "float32"]


def label_input(graph: Graph) -> str | None:
    return next((name for name, inp in graph.spec.inputs.items() if inp.dtype == "int64"), None)


def generate_source(graph: Graph, steps: list[Step], loss: LossStep, plan: BufferPlan, needs_grad: dict[str, bool],
                    header: str) -> str:
    out: list[str] = [f'"""{header}"""', "", "import numpy as np", "", "from netc.jit import plan_function"]
    for module, names in KERNEL_MODULES.items():
        out.append(f"from {module} import {', '.join(names)}")
    out.append("")

    def function(signature: str, body: list[str], comment: str) -> None:
        out.extend(["", "", f"# {comment}", "@plan_function", f"def {signature}:"])
        out.extend(body or ["    pass"])

    def step_comment(e: Emitter, step: Step) -> None:
        e.line(f"# {' + '.join(step.covers)}")

    # forward
    e = Emitter(graph, plan, needs_grad)
    for step in steps:
        if step.kind != "alias":
            step_comment(e, step)
        emit_forward(e, step)
    function("forward(P, A, I, W, n, training)", e.lines, "forward pass of n samples staged in A")

    # loss
    e = Emitter(graph, plan, needs_grad)
    emit_loss(e, loss, label_input(graph) == loss.target)
    function("loss(A, D, L, n, need_grad)", e.lines, f"{loss.kind}: (mean loss, correct) and its gradient")

    # backward: gradients only (gradcheck, the Python API) ...
    e = Emitter(graph, plan, needs_grad)
    e.acc(loss.grad_target)  # the loss wrote it
    for step in reversed(steps):
        before = len(e.lines)
        emit_backward(e, step)
        if len(e.lines) > before:
            e.lines.insert(before, f"    # {' + '.join(step.covers)}")
    function("backward(P, G, A, D, I, W, n)", e.lines, "gradients of every trainable parameter into G")

    # ... and with each parameter's update fused right after its last gradient contribution
    optimizer = graph.spec.optimizer
    remaining = {}
    for step in steps:
        if step.needs_grad and step.node.param_shapes and step.node.trainable and step.kind in ("linear", "conv2d"):
            remaining[step.node.param_owner] = remaining.get(step.node.param_owner, 0) + 1
    e = Emitter(graph, plan, needs_grad)
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
    function("backward_update(P, G, S, A, D, I, W, n, lr, step)", e.lines,
             f"backward pass with the {optimizer.type} update of each tensor fused after its gradient")

    out.extend(_loops(graph, plan, loss))
    return "\n".join(out) + "\n"


def _stage(graph: Graph, plan: BufferPlan, order: str) -> list[str]:
    lines = []
    for name in float_inputs(graph):
        region = plan.values[name]
        size = numel(graph.inputs[name])
        lines.append(f"        stage_rows(X_{name}, {order}, start, n, A[{region.offset}:{region.offset} + n * {size}]"
                     f".reshape((n, {size})))")
    if label_input(graph):
        lines.append(f"        stage_labels(Y, {order}, start, n, L)")
    return lines


def _loops(graph: Graph, plan: BufferPlan, loss: LossStep) -> list[str]:
    xs = ", ".join(f"X_{name}" for name in float_inputs(graph))
    k = numel(graph.shape_of(loss.input))
    region = plan.values[plan.root(loss.input)]
    scores = f"A[{region.offset}:{region.offset} + n * {k}].reshape((n, {k}))"
    has_labels = label_input(graph) is not None
    lines = [
        "", "", "# one epoch of training inside compiled code; returns the number of batches done",
        "# (fewer when the loss stops being finite: that batch's update is not applied)",
        "@plan_function",
        f"def train_epoch(P, G, S, A, D, I, W, L, {xs}, Y, order, count, batch, lr, step0, seed, losses, corrects):",
        "    seed_rng(seed)",
        "    batches = (count + batch - 1) // batch",
        "    for b in range(batches):",
        "        start = b * batch",
        "        n = min(batch, count - start)",
        *_stage(graph, plan, "order"),
        "        forward(P, A, I, W, n, True)",
        "        value, correct = loss(A, D, L, n, True)",
        "        losses[b] = value",
        "        corrects[b] = correct",
        "        if not np.isfinite(value):",
        "            return b",
        "        backward_update(P, G, S, A, D, I, W, n, lr, step0 + b + 1)",
        "    return batches",
        "", "",
        "# evaluation: summed loss, correct count, confusion matrix [true, predicted], scores of every sample",
        "@plan_function",
        f"def eval_epoch(P, A, D, I, W, L, {xs}, Y, order, count, batch, confusion, scores_out):",
        "    total = 0.0",
        "    right = 0",
        "    for start in range(0, count, batch):",
        "        n = min(batch, count - start)",
        *_stage(graph, plan, "order"),
        "        forward(P, A, I, W, n, False)",
        "        value, correct = loss(A, D, L, n, False)",
        "        total += value * n",
        "        right += correct",
        f"        scores = {scores}",
        "        scores_out[start:start + n] = scores",
    ]
    if has_labels and loss.kind != "mse":
        lines.append("        confusion_add(scores, L[:n], confusion)")
    lines.append("    return total, right")
    return lines
