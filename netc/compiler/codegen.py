"""Code generation: the plan's steps become a Python module of Numba functions
whose kernel calls write every size, offset and flag out in the source (typed as
plain int64 and booleans, so one compiled kernel serves all layers).

Each op writes its own calls (its OpDef's `forward` and `backward` emitters, in
netc/ops/) through the `Emitter` below, by name: `e.call("linear_forward", x=..., w=...)`;
the names are checked against the kernel's signature. Kernel bodies are never spliced:
they live, readable, in netc/kernels/.
"""

from __future__ import annotations

import functools
import importlib
import inspect

from netc.compiler.buffers import BufferPlan, conv_scratch, kept_cols_shape
from netc.compiler.steps import LossStep, Step, should_use_blas
from netc.graph.ir import Graph
from netc.ops.base import REGISTRY, numel

# kernels every plan may call besides its ops' own: staging, the losses, the optimizers
_RUNTIME_KERNELS = {
    "netc.kernels.misc": ("stage_rows", "stage_labels", "seed_rng", "copy_rows"),
    "netc.kernels.loss": ("cross_entropy", "nll_after_log_softmax", "mse", "mse_onehot", "confusion_add"),
    "netc.kernels.optim": ("sgd_update", "rmsprop_update", "adam_update"),
}


def kernel_modules() -> dict[str, list[str]]:
    """Kernel module -> the kernels a plan imports from it: every op's, then the runtime's."""
    modules: dict[str, list[str]] = {}
    for table in [op.kernels for op in REGISTRY.values()] + [_RUNTIME_KERNELS]:
        for module, names in table.items():
            listed = modules.setdefault(module, [])
            listed.extend(name for name in names if name not in listed)
    return modules


KERNEL_MODULES = kernel_modules()


@functools.lru_cache(maxsize=None)
def kernel_parameters(kernel: str) -> tuple[str, ...]:
    """The parameter names of a kernel, in order (from its Python source)."""
    for module, names in KERNEL_MODULES.items():
        if kernel in names:
            function = getattr(importlib.import_module(module), kernel)
            return tuple(inspect.signature(getattr(function, "py_func", function)).parameters)
    raise KeyError(f"no kernel module lists {kernel!r}")


def size(value: int) -> str:
    """A size argument: written out in the source, typed as a plain int64 so that one compiled
    kernel (cached on disk) serves every layer; literal-typed sizes made Numba compile a
    specialization per call site (cold LeNet-5: ~60 s instead of ~15 s)."""
    return f"I64({int(value)})"


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

    def call(self, kernel: str, **arguments) -> None:
        """A kernel call, its arguments given by the kernel's parameter names (checked, in order).
        Written positionally: Numba cannot take more than 30 keyword arguments (CPython passes
        them as a dict)."""
        expected = kernel_parameters(kernel)
        assert tuple(arguments) == expected, f"{kernel}: arguments {tuple(arguments)}, parameters {expected}"
        self.lines.append(f"    {kernel}({', '.join(str(a) for a in arguments.values())})")

    # -- literals --------------------------------------------------------------------------
    size = staticmethod(size)

    @staticmethod
    def flag(value: bool) -> str:
        return lit(bool(value))

    @staticmethod
    def number(value: float) -> str:
        return lit(float(value))

    def act_code(self, step: Step) -> str:
        """The kernel code of the activation a step applies (0: none), as a plain int64."""
        if step.act is None:
            return size(0)
        return size(REGISTRY[step.act.op].activation.code(step.act.layer))

    def act_alpha(self, step: Step) -> str:
        """The parameter of that activation (a slope, a scale; 0.0 when it has none)."""
        if step.act is None:
            return lit(0.0)
        return lit(float(REGISTRY[step.act.op].activation.alpha(step.act.layer)))

    def use_blas(self, fan_in: int, fan_out: int) -> bool:
        return should_use_blas(self.plan.batch, fan_in, fan_out)

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
        if pname not in self.plan.params.get(node.param_owner, {}):
            return self.views.ref("P", 0, (0,))  # no bias: an empty array keeps the kernel's types
        return self._param_view("P", node, pname, dims)

    def pgrad(self, node, pname: str, dims: tuple = ()) -> str:
        if pname not in self.plan.params.get(node.param_owner, {}):
            return self.views.ref("G", 0, (0,))
        return self._param_view("G", node, pname, dims)

    def state(self, node, pname: str, slot: int) -> str:
        """An optimizer slot of a parameter (momentum, Adam's moments)."""
        return self._param_view("S", node, pname, (), slot)

    def state_tensor(self, node, name: str, dims: tuple = ()) -> str:
        """One of the op's own state tensors (running statistics, counters) in T."""
        region = self.plan.state[node.name][name]
        return self.views.ref("T", region.offset, dims or (max(region.per_sample, 1),))

    def saved(self, node, name: str) -> str:
        """Values an op's forward keeps for its backward (one batch's), in W."""
        region = self.plan.saved[(node.name, name)]
        return self.views.ref("W", region.offset, (region.per_sample,))

    # -- the memory of a parallel convolution (see buffers.conv_scratch) ----------------------
    def conv_output(self, step: Step, d: dict) -> tuple[tuple, str]:
        """A conv step's output dims, (F, OH*OW) or with a fused 2x2 max pool (F, OH/2*OW/2), and the
        view of the pool's argmax (without a pool, an empty one keeps the kernel's types)."""
        if step.pool is None:
            return (d["F"], d["OH"] * d["OW"]), self.views.ref("I", 0, (0, 0, 0))
        dims = (d["F"], (d["OH"] // 2) * (d["OW"] // 2))
        return dims, self.ints(step.output, dims)

    def conv_scratch(self, step: Step, d: dict, backward: bool = False) -> list[str]:
        """Views of W: the columns and whether they are kept for the backward, then (backward only)
        the column gradients, then buf (and dwt, dbt)."""
        layout, _ = conv_scratch(d, self.plan.batch, self.plan.chunks)
        work = self.views.ref("W", *layout["work"])
        offset = self.plan.kept_cols.get(step.output)
        cols = work if offset is None else self.views.ref("W", offset, kept_cols_shape(d, self.plan.batch,
                                                                                        self.plan.chunks))
        views = [cols, lit(offset is not None)]
        if backward:
            views.append(work)
        views += [self.views.ref("W", *layout[name]) for name in (("buf", "dwt", "dbt") if backward else ("buf",))]
        return views

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


# ---------------------------------------------------------------------------------- steps


def emit_forward(e: Emitter, step: Step) -> None:
    """A step's forward kernels, written by its op's emitter (aliases have none)."""
    emitter = REGISTRY[step.node.op].forward
    if step.kind != "alias" and emitter is not None:
        emitter(e, step)


def emit_backward(e: Emitter, step: Step) -> None:
    """Gradient of one step; assumes the gradient of its output is complete."""
    if step.kind == "alias" or not step.backward or not step.needs_grad:
        return
    REGISTRY[step.node.op].backward(e, step)


def emit_update(e: Emitter, node, optimizer) -> None:
    """The optimizer step for every tensor of one owner (lr and step are runtime arguments)."""
    for pname in node.param_shapes:
        p, grad = e.param(node, pname), e.pgrad(node, pname)
        lr = "lr" if node.lr_mult == 1.0 else f"lr * {lit(float(node.lr_mult))}"
        wd = lit(float(optimizer.weight_decay))
        if optimizer.type == "sgd":
            velocity = e.state(node, pname, 0) if optimizer.momentum else p
            e.call("sgd_update", p=p, g=grad, velocity=velocity, lr=lr, momentum=lit(float(optimizer.momentum)),
                   weight_decay=wd, nesterov=lit(optimizer.nesterov))
        elif optimizer.type == "rmsprop":
            buf = e.state(node, pname, 1) if optimizer.momentum else p
            e.call("rmsprop_update", p=p, g=grad, square_avg=e.state(node, pname, 0), buf=buf, lr=lr,
                   alpha=lit(float(optimizer.alpha)), eps=lit(float(optimizer.eps)),
                   momentum=lit(float(optimizer.momentum)), weight_decay=wd)
        else:
            beta1, beta2 = optimizer.betas
            e.call("adam_update", p=p, g=grad, m=e.state(node, pname, 0), v=e.state(node, pname, 1), lr=lr,
                   beta1=lit(float(beta1)), beta2=lit(float(beta2)), eps=lit(float(optimizer.eps)), weight_decay=wd,
                   step="step")


def emit_loss(e: Emitter, loss: LossStep, label_input: bool) -> None:
    k = numel(e.graph.shape_of(loss.input))
    scores = e.val(loss.input, (k,))
    grad = e.grad(loss.grad_target, (k,))
    e.acc(loss.grad_target)
    target = e.labels() if label_input else e.val(loss.target, (k,))
    e.line(f"return {loss.kind}({scores}, {target}, {grad}, need_grad)")
