"""Assembles the generated plan module: forward, loss and backward (for the Python
API and gradcheck), and the compiled epoch loop, which writes out forward, loss and
backward with the optimizer updates fused in. Every function opens by binding the views
its body uses to named locals (ViewTable.bindings)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from netc.compiler.buffers import BufferPlan
from netc.compiler.codegen import (KERNEL_MODULES, Emitter, ViewTable, emit_backward, emit_clip, emit_forward, emit_loss,
                                   emit_update, hyper_table, loss_operands, loss_value)
from netc.compiler.steps import LossStep, Step, should_inline_kernels
from netc.graph.ir import Graph
from netc.ops import scan
from netc.ops.base import numel

# the two tiers of a plan: its functions compiled by Numba (the fused epoch loop), or the same
# functions run as Python over the compiled kernels (starts at once; see netc.runtime.model)
FUSED, PYTHON = "fused", "python"


def in_loop(step: Step) -> bool:
    """Whether a step runs inside its scan's loop (the block's layers; not the scan's own pieces)."""
    return step.node.scan is not None and step.kind not in ("scan_input", "scan_state")


@dataclass
class ScanLoop:
    """A scan's loop: its steps lie between `first` (its first input) and the scan's own step."""

    first: int
    steps: int  # T
    before: list[str]  # before its backward loop: the block's parameter gradients zeroed


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
    scans: dict[int, ScanLoop] = field(default_factory=dict)  # a scan's step index -> its loop

    def comment(self, steps: list[Step], i: int) -> str:
        return f"    # {' + '.join(steps[i].covers)}"

    def forward_body(self, steps: list[Step], scored_only_in_evaluation: bool = False) -> list[str]:
        """In step order; a scan's block inside its loop over the steps. `scored_only_in_evaluation`
        (the epoch loop): a log_softmax whose nll is computed from its input (steps.Step.backward False)
        runs only when `train` is off, for the scores; training reads nothing it writes, and its exps
        and log were ~9% of seed-mlp's step."""
        lines, i = [], 0
        while i < len(steps):
            if in_loop(steps[i]):
                end = next(j for j in range(i, len(steps)) if not in_loop(steps[j]))
                loop = self.scans[end]  # the scan's own step follows its block
                inner = [line for j in range(i, end)
                         for line in self._forward_lines(steps, j, scored_only_in_evaluation)]
                lines += [f"    for t in range({loop.steps}):  # scan {steps[end].output}: its block at step t",
                          *_indent(inner or ["    pass"], 1)]
                i = end
                continue
            lines += self._forward_lines(steps, i, scored_only_in_evaluation)
            i += 1
        return lines

    def _forward_lines(self, steps: list[Step], i: int, scored_only_in_evaluation: bool = False) -> list[str]:
        lines = self.forward[i]
        if scored_only_in_evaluation and not steps[i].backward and lines:
            lines = ["    if not train:  # only the scores read it: the loss is computed from its input",
                     *_indent(lines, 1)]
        return ([self.comment(steps, i)] if steps[i].kind != "alias" else []) + lines

    def scan_backward(self, steps: list[Step], i: int) -> list[str]:
        """A scan's backward: its steps in reverse, each seeded, its block's backward, its inputs'
        gradients into their sequences (netc.ops.scan)."""
        loop = self.scans[i]
        inner = [line for j in range(i, loop.first - 1, -1) if self.backward[j]
                 for line in (self.comment(steps, j), *self.backward[j])]
        if not inner:
            return []
        return [*loop.before, f"    for t in range({loop.steps - 1}, -1, -1):  # scan {steps[i].output}, backwards",
                *_indent(inner, 1)]

    def backward_body(self, steps: list[Step], with_updates: bool, updates_last: bool = False) -> list[str]:
        """In reverse step order; `with_updates`: each parameter's update right after its last
        gradient (the epoch loop), else gradients only (gradcheck, the Python API). `updates_last`: the
        updates after every gradient, in the same order (as with clipping). In a tiny plan an update
        read its gradient straight after the scalar stores that wrote it, with vector loads, which waited
        for the stores to reach the cache (a failed store-to-load forward): seed-mlp's step ran 1-5%
        faster with the updates last. No number changes: no step reads a parameter after its update."""
        lines, i = [], len(steps) - 1
        last = self.clip or updates_last
        while i >= 0:
            if i in self.scans:
                lines += self.scan_backward(steps, i)
                i = self.scans[i].first  # its updates follow the loop
            elif self.backward[i]:
                lines += [self.comment(steps, i), *self.backward[i]]
            if with_updates and not last:
                lines += self.updates.get(i, [])
            i -= 1
        if with_updates and last:
            lines += self.clip  # clipping needs every gradient first
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
        if step.kind in ("scan_input", "scan_state"):
            scan.forward_before(e, step.node)
        elif step.kind == "scan":
            scan.forward_after(e, step.node)
        else:
            emit_forward(e, step)
        forward.append(e.lines)
    first = {}  # scan -> the index of its first step
    for i, step in enumerate(steps):
        if step.node.scan is not None:
            first.setdefault(step.node.scan, i)
    loops = {}
    e = Emitter(graph, plan, needs_grad, views)
    emit_loss(e, losses)
    loss_lines = e.lines
    e = Emitter(graph, plan, needs_grad, views, rule=projection.rule if projection is not None else None)
    for written in [loss.grad_target for loss in losses] if projection is None else [projection.tensor]:
        e.acc(written)  # the loss wrote it (a projection's runtime: the signal)
    backward: list[list[str]] = [[] for _ in steps]
    for i in reversed(range(len(steps))):
        e.lines = []
        step = steps[i]
        if step.kind == "scan":
            begin = first[step.output]
            assert all(s.node.scan == step.output for s in steps[begin:i]), "a scan's steps are contiguous"
            owners = [node for node in graph.owners if node.scan == step.output and node.trainable]
            if step.needs_grad:
                scan.backward_before(e, step.node, owners)
            loops[i] = ScanLoop(begin, scan.scan_steps(graph, step.node), e.lines)
            e.lines = []
            if step.needs_grad:
                scan.seed_gradients(e, step.node)
        elif step.kind == "scan_input":
            scan.scatter_input_gradient(e, step.node)
        else:
            emit_backward(e, step)
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
                at = first[steps[i].node.scan] if steps[i].node.scan is not None else i  # after a scan's loop
                updates[at] = updates.get(at, []) + e.lines
    clip: list[str] = []
    if optimizer.clip is not None:
        e = Emitter(graph, plan, needs_grad, views)
        e.line(f"# gradient clipping ({'norm' if optimizer.clip.norm is not None else 'value'})")
        emit_clip(e, optimizer)
        clip = e.lines
    return Bodies(forward, loss_lines, backward, updates, clip, loops)


def _header(header: str, tiny: bool, tier: str) -> list[str]:
    """The module's imports. The fused tier compiles its functions (`plan_function`; a tiny plan's
    `tiny_plan_function` inlines every kernel into them); the Python tier runs the same functions as
    Python over the compiled kernels (`python_glue`), so it starts without compiling any glue."""
    glue = ("python_glue as plan_function" if tier != FUSED else
            "tiny_plan_function as plan_function" if tiny else "plan_function")
    out = [f'"""{header}"""', "", "import numpy as np", "from numpy import bool_ as B", "from numpy import int64 as I64",
           "", f"from netc.jit import fixed_view, {glue}"]
    for module, names in KERNEL_MODULES.items():
        out.append(f"from {module} import {', '.join(names)}")
    if tiny and tier == FUSED:
        out += ["", "# a tiny plan: LLVM inlines every kernel into the functions below (see should_inline_kernels)"]
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
    tiny = should_inline_kernels(graph, plan.batch)
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
        *_indent(bodies.forward_body(steps, scored_only_in_evaluation=True), 1),
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
        *_indent(bodies.backward_body(steps, with_updates=True, updates_last=tiny), 2),
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


TIMED_NOTHING, TIMED_FORWARD, TIMED_LOSS, TIMED_BACKWARD = 0, 1, 2, 3  # `run`'s parts (netc time)


def generate_timing_source(plan) -> str:
    """A companion module for `netc time`: `run(V, n, flag, part, index)` runs one step's forward or
    backward, or the loss, with the plan's own step bodies (so gradient flags and views agree), or
    nothing (part 0: the cost of the call itself). One function, as the fused epoch is: a function per
    step would each compile the view tuple's unboxing and link its kernels again (2-4 s each; digits-cnn's
    13 took 35 s)."""
    graph, views = plan.graph, plan.views
    bodies, steps = plan.bodies, plan.steps
    looped = {i: bodies.scans[end] for end in bodies.scans for i in range(bodies.scans[end].first, end + 1)}

    def loop(i: int, lines: list[str], backwards: bool) -> list[str]:  # a step of a scan runs at every step
        if not lines or i not in looped:
            return lines
        steps_t = looped[i].steps
        head = f"    for t in range({steps_t - 1}, -1, -1):" if backwards else f"    for t in range({steps_t}):"
        return [head, *_indent(lines, 1)]

    def branches(bodies_by_index: dict[int, list[str]]) -> list[str]:
        out = []
        for i, body in bodies_by_index.items():
            out += [f"        {'if' if not out else 'elif'} index == {i}:", *(_indent(body, 2) or ["            pass"])]
        return out or ["        pass"]

    forward = {i: loop(i, lines, False) if in_loop(steps[i]) else lines for i, lines in enumerate(bodies.forward)}
    backward = {i: (bodies.scans[i].before if i in bodies.scans else []) + loop(i, bodies.backward[i], True)
                for i in reversed(range(len(steps)))}
    # the loss's result is the epoch's to use; here it is dropped, so that `run` returns one type
    loss = [re.sub(r"^(\s*)return ", r"\1loss_result = ", line) for line in bodies.loss]
    every = [line for body in [*forward.values(), loss, *backward.values()] for line in body]
    out = [f'"""netc timing module for \'{graph.spec.name}\'. Generated."""', "",
           "from numpy import bool_ as B", "from numpy import int64 as I64", "",
           "from netc.jit import fixed_view, plan_function"]
    for module, names in KERNEL_MODULES.items():
        out.append(f"from {module} import {', '.join(names)}")
    out += ["", "", "@plan_function", "def run(V, n, flag, part, index):", *views.bindings(every),
            "    training = flag  # the forward's and backward's flag", "    need_grad = flag  # the loss's",
            f"    if part == {TIMED_FORWARD}:", *branches(forward),
            f"    elif part == {TIMED_LOSS}:", *(_indent(loss, 1) or ["        pass"]),
            f"    elif part == {TIMED_BACKWARD}:", *branches(backward),
            "    return n"]
    return "\n".join(out) + "\n"
