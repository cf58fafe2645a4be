"""Code generation: the plan's steps become a Python module of Numba functions
whose kernel calls write every size, offset and flag out in the source (typed as
plain int64 and booleans, so one compiled kernel serves all layers).

The source is assembled from structured calls (`Emitter.call(kernel, args)`),
never by splicing kernel bodies: kernels live, readable, in netc/kernels/.
"""

from __future__ import annotations

from netc.compiler.buffers import BufferPlan, conv_scratch, kept_cols_shape
from netc.compiler.steps import LossStep, Step, should_use_blas
from netc.graph.ir import Graph
from netc.kernels.activation import CODES
from netc.ops.base import numel
from netc.ops.conv import conv_dims

KERNEL_MODULES = {
    "netc.kernels.dense": ["linear_forward", "linear_backward"],
    "netc.kernels.conv": ["conv_forward", "conv_backward", "maxpool_forward", "maxpool_backward",
                          "avgpool_forward", "avgpool_backward"],
    "netc.kernels.activation": ["act_forward", "act_backward", "softmax_forward", "softmax_backward"],
    "netc.kernels.misc": ["grad_pass", "add_forward2", "add_into", "concat_forward", "concat_backward",
                          "dropout_forward", "dropout_backward", "stage_rows", "stage_labels", "seed_rng", "copy_rows"],
    "netc.kernels.loss": ["cross_entropy", "nll_after_log_softmax", "mse", "mse_onehot", "confusion_add"],
    "netc.kernels.optim": ["sgd_update", "rmsprop_update", "adam_update"],
}
_CONV_DIMS = ("C", "H", "W", "KH", "KW", "SH", "SW", "PH", "PW", "OH", "OW")


def size(value: int) -> str:
    """A size argument: written out in the source, typed as a plain int64 so that one compiled
    kernel (cached on disk) serves every layer; literal-typed sizes made Numba compile a
    specialization per call site (cold LeNet-5: ~60 s instead of ~15 s)."""
    return f"I64({int(value)})"


def act_code(act: str | None) -> str:
    """The activation fused into an epilogue, as a plain int64 (see lit)."""
    return size(CODES[act])


def _dims(d: dict, keys=None) -> list[str]:
    return [size(d[k]) for k in (keys or _CONV_DIMS)]


def lit(value) -> str:
    """A Python literal for the generated source. Flags are typed as plain booleans (`B(...)`),
    like sizes: Numba would otherwise compile a kernel once per combination of literal flags."""
    if isinstance(value, bool):
        return "B(True)" if value else "B(False)"
    if isinstance(value, float):
        return repr(value)
    return str(int(value))


class ViewTable:
    """Every array view the generated code uses, made once per plan (not per step):
    reshaping inside the hot loop costs a call into Numba's runtime per view.
    Entry k is (arena, offset, shape); batch views have the plan's batch as first
    dimension and the generated code slices their first n rows."""

    def __init__(self, batch: int):
        self.batch = batch
        self.entries: list[tuple[str, int, tuple]] = []
        self._index: dict[tuple, int] = {}

    def ref(self, arena: str, offset: int, shape: tuple) -> str:
        key = (arena, offset, tuple(shape))
        if key not in self._index:
            self._index[key] = len(self.entries)
            self.entries.append(key)
        return f"V[{self._index[key]}]"


class Emitter:
    """Writes one function body; knows where every tensor lives."""

    def __init__(self, graph: Graph, plan: BufferPlan, needs_grad: dict[str, bool], views: ViewTable):
        self.graph = graph
        self.plan = plan
        self.needs_grad = needs_grad
        self.views = views
        self.lines: list[str] = []
        self.written: set[str] = set()  # gradient buffers written so far (first write assigns, later ones add)

    def call(self, kernel: str, *args) -> None:
        self.lines.append(f"    {kernel}({', '.join(str(a) for a in args)})")

    def line(self, text: str) -> None:
        self.lines.append("    " + text)

    # -- views into the arenas ------------------------------------------------------------
    def _batch_view(self, arena: str, offset: int, size: int, dims: tuple) -> str:
        batch = self.plan.batch
        # the first n rows; with a batch of one, n is always 1 and the slice (a new array) is skipped
        rows = "" if batch == 1 else ("[:n]" if dims else f"[:n * {size}]")
        if not dims:  # flat, for element-wise kernels
            return f"{self.views.ref(arena, offset, (batch * size,))}{rows}"
        return f"{self.views.ref(arena, offset, (batch, *dims))}{rows}"

    def val(self, tensor: str, dims: tuple = ()) -> str:
        region = self.plan.values[self.plan.root(tensor)]
        return self._batch_view("A", region.offset, region.per_sample, dims)

    def grad(self, tensor: str, dims: tuple = ()) -> str:
        region = self.plan.grads[self.plan.root(tensor)]
        return self._batch_view("D", region.offset, region.per_sample, dims)

    def mask(self, tensor: str) -> str:
        region = self.plan.masks[tensor]
        return self._batch_view("A", region.offset, region.per_sample, ())

    def ints(self, tensor: str, dims: tuple) -> str:
        region = self.plan.ints[tensor]
        return self._batch_view("I", region.offset, region.per_sample, dims)

    def labels(self) -> str:
        return f"{self.views.ref('L', 0, (self.plan.batch,))}[:n]"

    def _param_view(self, arena: str, node, pname: str, dims: tuple, slot: int = 0) -> str:
        region = self.plan.params[node.param_owner][pname]
        offset = slot * self.plan.param_size + region.offset
        return self.views.ref(arena, offset, dims or (region.per_sample,))

    def param(self, node, pname: str, dims: tuple = ()) -> str:
        if pname not in self.plan.params[node.param_owner]:
            return self.views.ref("P", 0, (0,))  # no bias: an empty array keeps the kernel's types
        return self._param_view("P", node, pname, dims)

    def pgrad(self, node, pname: str, dims: tuple = ()) -> str:
        if pname not in self.plan.params[node.param_owner]:
            return self.views.ref("G", 0, (0,))
        return self._param_view("G", node, pname, dims)

    def state(self, node, pname: str, slot: int) -> str:
        return self._param_view("S", node, pname, (), slot)

    # -- gradient bookkeeping ------------------------------------------------------------
    def acc(self, tensor: str) -> str:
        """A false flag for the first write of a gradient buffer (assign), true afterwards (add)."""
        key = "t:" + self.plan.root(tensor)
        first = key not in self.written
        self.written.add(key)
        return lit(not first)

    def pacc(self, node) -> str:
        key = "p:" + node.param_owner
        first = key not in self.written
        self.written.add(key)
        return lit(not first)


# ---------------------------------------------------------------------------------- forward


def emit_forward(e: Emitter, step: Step) -> None:
    g, node = e.graph, step.node
    kind = step.kind
    if kind == "alias":
        return
    if kind == "linear":
        out, fan_in = node.param_shapes["weight"]
        e.call("linear_forward", e.val(step.inputs[0], (fan_in,)), e.param(node, "weight", (out, fan_in)),
               e.param(node, "bias"), lit("bias" in node.param_shapes), e.val(step.output, (out,)),
               act_code(step.act), lit(should_use_blas(e.plan.batch, fan_in, out)))
    elif kind == "conv2d":
        d = conv_dims(node, g.shape_of(step.inputs[0]))
        rows = d["C"] * d["KH"] * d["KW"]
        dims, arg = _conv_out(e, step, d)
        e.call("conv_forward", e.val(step.inputs[0], (d["C"], d["H"], d["W"])),
               e.param(node, "weight", (d["F"], rows)), e.param(node, "bias"), lit("bias" in node.param_shapes),
               e.val(step.output, dims), arg, lit(step.pool is not None), *_conv_scratch(e, step, d),
               act_code(step.act), *_dims(d))
    elif kind == "maxpool2d":
        d = conv_dims(node, g.shape_of(step.inputs[0]))
        e.call("maxpool_forward", e.val(step.inputs[0], (d["C"], d["H"], d["W"])),
               e.val(step.output, (d["C"], d["OH"], d["OW"])), e.ints(step.output, (d["C"], d["OH"], d["OW"])),
               *_dims(d))
    elif kind == "avgpool2d":
        d = conv_dims(node, g.shape_of(step.inputs[0]))
        e.call("avgpool_forward", e.val(step.inputs[0], (d["C"], d["H"], d["W"])),
               e.val(step.output, (d["C"], d["OH"], d["OW"])), *_dims(d))
    elif kind == "act":
        e.call("act_forward", e.val(step.inputs[0]), e.val(step.output), act_code(step.act))
    elif kind in ("softmax", "log_softmax"):
        f = node.shape[0]
        e.call("softmax_forward", e.val(step.inputs[0], (f,)), e.val(step.output, (f,)), lit(kind == "log_softmax"))
    elif kind == "add":
        e.call("add_forward2", e.val(step.inputs[0]), e.val(step.inputs[1]), e.val(step.output))
        for extra in step.inputs[2:]:
            e.call("add_into", e.val(extra), e.val(step.output))
    elif kind == "concat":
        for tensor, offset, dims in _concat_parts(g, step):
            e.call("concat_forward", e.val(tensor, dims), e.val(step.output, _concat_out_dims(g, step)), size(offset))
    elif kind == "dropout":
        e.call("dropout_forward", e.val(step.inputs[0]), e.val(step.output), e.mask(step.output),
               lit(float(node.layer.p)), "training")
    else:  # pragma: no cover - the registry test keeps ops and emitters in step
        raise NotImplementedError(kind)


def _conv_out(e: Emitter, step: Step, d: dict) -> tuple[tuple, str]:
    """A conv step's output dims, (F, OH*OW) or with a fused 2x2 max pool (F, OH/2*OW/2), and the
    view of the pool's argmax (without a pool, an empty one keeps the kernel's types)."""
    if step.pool is None:
        return (d["F"], d["OH"] * d["OW"]), e.views.ref("I", 0, (0, 0, 0))
    dims = (d["F"], (d["OH"] // 2) * (d["OW"] // 2))
    return dims, e.ints(step.output, dims)


def _conv_scratch(e: Emitter, step: Step, d: dict, backward: bool = False) -> list[str]:
    """A parallel conv's views of W (see buffers.conv_scratch): its columns and whether they are
    kept for the backward, then (backward only) the column gradients, then buf (and dwt, dbt)."""
    layout, _ = conv_scratch(d, e.plan.batch, e.plan.chunks)
    work = e.views.ref("W", *layout["work"])
    offset = e.plan.kept_cols.get(step.output)
    cols = work if offset is None else e.views.ref("W", offset, kept_cols_shape(d, e.plan.batch, e.plan.chunks))
    views = [cols, lit(offset is not None)]
    if backward:
        views.append(work)
    views += [e.views.ref("W", *layout[name]) for name in (("buf", "dwt", "dbt") if backward else ("buf",))]
    return views


def _concat_out_dims(g: Graph, step: Step) -> tuple:
    shape = g.shape_of(step.output)
    axis = step.node.layer.axis
    return numel(shape[:axis]), numel(shape[axis:])


def _concat_parts(g: Graph, step: Step):
    """(tensor, offset inside each outer row of the output, view dims) for each input."""
    axis = step.node.layer.axis
    offset = 0
    for tensor in step.inputs:
        shape = g.shape_of(tensor)
        dims = (numel(shape[:axis]), numel(shape[axis:]))
        yield tensor, offset, dims
        offset += dims[1]


# ---------------------------------------------------------------------------------- backward


def emit_backward(e: Emitter, step: Step) -> None:
    """Gradient of one step; assumes the gradient of its output is complete."""
    g, node = e.graph, step.node
    kind = step.kind
    if kind == "alias" or not step.backward or not step.needs_grad:
        return
    if kind == "add":  # several inputs, each with its own need for a gradient
        for tensor in step.inputs:
            if e.needs_grad[tensor]:
                e.call("grad_pass", e.grad(step.output), e.grad(tensor), e.acc(tensor))
        return
    if kind == "concat":
        for tensor, offset, dims in _concat_parts(g, step):
            if e.needs_grad[tensor]:
                e.call("concat_backward", e.grad(step.output, _concat_out_dims(g, step)), e.grad(tensor, dims),
                       size(offset), e.acc(tensor))
        return
    x = step.inputs[0]
    need_dx = e.needs_grad[x]
    if kind == "linear":
        out, fan_in = node.param_shapes["weight"]
        need_dw = node.trainable
        x_view = e.val(x, (fan_in,))
        w_view = e.param(node, "weight", (out, fan_in))
        e.call("linear_backward", x_view, w_view, e.val(step.output, (out,)), e.grad(step.output, (out,)),
               act_code(step.act), e.grad(x, (fan_in,)) if need_dx else x_view, lit(need_dx),
               e.acc(x) if need_dx else lit(False),
               e.pgrad(node, "weight", (out, fan_in)) if need_dw else w_view, e.pgrad(node, "bias"), lit(need_dw),
               e.pacc(node) if need_dw else lit(False), lit("bias" in node.param_shapes),
               lit(should_use_blas(e.plan.batch, fan_in, out)))
    elif kind == "conv2d":
        d = conv_dims(node, g.shape_of(x))
        rows = d["C"] * d["KH"] * d["KW"]
        need_dw = node.trainable
        x_view = e.val(x, (d["C"], d["H"], d["W"]))
        w_view = e.param(node, "weight", (d["F"], rows))
        dims, arg = _conv_out(e, step, d)
        e.call("conv_backward", x_view, w_view, e.val(step.output, dims), e.grad(step.output, dims), arg,
               lit(step.pool is not None), act_code(step.act),
               e.grad(x, (d["C"], d["H"], d["W"])) if need_dx else x_view, lit(need_dx),
               e.acc(x) if need_dx else lit(False),
               e.pgrad(node, "weight", (d["F"], rows)) if need_dw else w_view, e.pgrad(node, "bias"), lit(need_dw),
               e.pacc(node) if need_dw else lit(False), lit("bias" in node.param_shapes),
               *_conv_scratch(e, step, d, backward=True), *_dims(d))
    elif not need_dx:
        return  # the remaining ops have no parameters
    elif kind == "maxpool2d":
        d = conv_dims(node, g.shape_of(x))
        e.call("maxpool_backward", e.grad(step.output, (d["C"], d["OH"], d["OW"])),
               e.ints(step.output, (d["C"], d["OH"], d["OW"])), e.grad(x, (d["C"], d["H"], d["W"])), e.acc(x),
               *_dims(d, ("C", "H", "W", "OH", "OW")))
    elif kind == "avgpool2d":
        d = conv_dims(node, g.shape_of(x))
        e.call("avgpool_backward", e.grad(step.output, (d["C"], d["OH"], d["OW"])),
               e.grad(x, (d["C"], d["H"], d["W"])), e.acc(x), *_dims(d))
    elif kind == "act":
        e.call("act_backward", e.grad(step.output), e.val(step.output), e.grad(x), act_code(step.act), e.acc(x))
    elif kind in ("softmax", "log_softmax"):
        f = node.shape[0]
        e.call("softmax_backward", e.grad(step.output, (f,)), e.val(step.output, (f,)), e.grad(x, (f,)),
               lit(kind == "log_softmax"), e.acc(x))
    elif kind == "dropout":
        e.call("dropout_backward", e.grad(step.output), e.mask(step.output), e.grad(x), e.acc(x))


def emit_update(e: Emitter, node, optimizer) -> None:
    """The optimizer step for every tensor of one owner (lr and step are runtime arguments)."""
    for pname in node.param_shapes:
        p, grad = e.param(node, pname), e.pgrad(node, pname)
        lr = "lr" if node.lr_mult == 1.0 else f"lr * {lit(float(node.lr_mult))}"
        wd = lit(float(optimizer.weight_decay))
        if optimizer.type == "sgd":
            velocity = e.state(node, pname, 0) if optimizer.momentum else p
            e.call("sgd_update", p, grad, velocity, lr, lit(float(optimizer.momentum)), wd, lit(optimizer.nesterov))
        elif optimizer.type == "rmsprop":
            buf = e.state(node, pname, 1) if optimizer.momentum else p
            e.call("rmsprop_update", p, grad, e.state(node, pname, 0), buf, lr, lit(float(optimizer.alpha)),
                   lit(float(optimizer.eps)), lit(float(optimizer.momentum)), wd)
        else:
            beta1, beta2 = optimizer.betas
            e.call("adam_update", p, grad, e.state(node, pname, 0), e.state(node, pname, 1), lr,
                   lit(float(beta1)), lit(float(beta2)), lit(float(optimizer.eps)), wd, "step")


def emit_loss(e: Emitter, loss: LossStep, label_input: bool) -> None:
    k = numel(e.graph.shape_of(loss.input))
    scores = e.val(loss.input, (k,))
    grad = e.grad(loss.grad_target, (k,))
    e.acc(loss.grad_target)
    target = e.labels() if label_input else e.val(loss.target, (k,))
    e.line(f"return {loss.kind}({scores}, {target}, {grad}, need_grad)")
