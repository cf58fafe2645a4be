"""What `netc inspect --plan` shows: the kernels of a plan, the spec layers each covers,
the arenas and the generated source."""

from __future__ import annotations

from rich.console import Group
from rich.syntax import Syntax
from rich.table import Table

from netc.compiler import CompiledPlan
from netc.compiler.cache import cache_dir, plan_key
from netc.compiler.codegen import Emitter
from netc.compiler.steps import should_inline_kernels
from netc.ops.base import REGISTRY

def plan_renderable(plan: CompiledPlan, show_source: bool = True):
    graph = plan.graph
    kernels = Table(title=f"plan for '{graph.spec.name}' (batch {plan.buffers.batch})")
    for column in ("#", "forward", "backward", "covers", "output", "notes"):
        kernels.add_column(column)
    e = Emitter(graph, plan.buffers, plan.needs_grad, plan.views)  # what the op's notes ask (BLAS or loops)
    for i, step in enumerate(plan.steps):
        forward, backward = REGISTRY[step.node.op].labels
        notes = []
        if step.act is not None and step.kind != "act":
            notes.append(f"{step.act.op} fused in epilogue")
        if step.pool is not None:
            notes.append("2x2 max pool fused in epilogue")
        notes += REGISTRY[step.node.op].notes(e, step)
        if not step.backward:
            backward = "(in " + next(loss.kernel for loss in plan.losses if step.output == loss.input) + ")"
            notes.append("run for evaluation's scores only: training's loss reads its input")
        elif not step.needs_grad:
            backward = "(no gradient needed)"
        elif step.node.param_shapes and not step.node.trainable:
            notes.append("frozen")
        if step.node.owner:
            notes.append(f"shares {step.node.owner}")
        if step.node.scan is not None and step.kind not in ("scan_input", "scan_state"):
            notes.append(f"at every step of scan {step.node.scan}")
        kernels.add_row(str(i), forward, backward, " + ".join(step.covers), step.output, ", ".join(notes))
    b = plan.buffers
    inlined = should_inline_kernels(graph, b.batch)
    # a tiny plan and a clipped one update every tensor after the whole backward (module.Bodies.backward_body)
    last = inlined or graph.spec.optimizer.clip is not None
    when = "after every gradient" if last else "after each tensor's gradient"
    for loss, written in zip(plan.losses, graph.spec.losses):
        weight = f"x {written.weight:g}, " if loss.weight else ""
        kernels.add_row("loss", loss.kernel, "fused gradient", " + ".join(loss.covers) or "-",
                        f"d/d {loss.grad_target}", f"{weight}{graph.spec.optimizer.type} update fused {when}")
    arenas = Table(title="arenas (allocated once)")
    for column in ("arena", "elements", "holds"):
        arenas.add_column(column)
    arenas.add_row("P / G", f"{b.param_size:,}", "parameters / their gradients (shared tensors once)")
    arenas.add_row("A", f"{b.a_size:,}", f"inputs, layer outputs, per-sample arrays ops keep (dropout masks); "
                   f"{b.batch} rows each, views reuse")
    arenas.add_row("D", f"{b.d_size:,}", "gradients of the tensors that need one")
    arenas.add_row("I", f"{b.i_size:,}", f"integer arrays ops keep (max-pool argmax), {b.batch} rows each")
    arenas.add_row("T", f"{b.state_size:,}", "state tensors (running statistics): kept, checkpointed, not trained")
    arenas.add_row("W", f"{b.w_size:,}", "scratch shared by every step (im2col columns, GEMM outputs, per-chunk weight "
                   "gradients), then what ops keep from forward to backward (kept columns, batch statistics)")
    arenas.add_row("V", f"{len(plan.views.entries)} views", "made once per plan and passed to every function")
    parts = [kernels, arenas,
             "kernels: inlined into the plan (a tiny plan: calls would cost more than the work)" if inlined
             else "kernels: compiled once, cached on disk, shared by every plan",
             f"generated module: {cache_dir() / ('netc_plan_' + plan_key(plan.source) + '.py')}"]
    if show_source:
        parts.append(Syntax(plan.source, "python", word_wrap=False, line_numbers=False))
    return Group(*parts)
