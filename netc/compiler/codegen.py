"""Code generation: the plan's steps become a Python module of Numba functions
whose kernel calls write every size, offset and flag out in the source (typed as
plain int64 and booleans, so one compiled kernel serves all layers).

Each op writes its own calls (its OpDef's `forward` and `backward` emitters, in
netc/ops/) through the `Emitter` below, by name: `e.call("linear_forward", x=..., w=...)`;
the names are checked against the kernel's signature and written out as keywords. The arrays
are named after what they hold (`conv1_weight`, `pool1_out`, `flat_grad`): each function binds
the views it uses once at its top, `conv1_weight = V[4]  # P: conv1.weight [20, 25]` (ViewTable).
Kernel bodies are never spliced: they live, readable, in netc/kernels/.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import itertools
import keyword
import re

from netc.compiler.buffers import BufferPlan, Region
from netc.compiler.steps import LossStep, Step, losses_weighted, should_use_blas
from netc.graph.ir import Graph
from netc.ops.base import REGISTRY, numel

# kernels every plan may call besides its ops' own: staging, the losses, the optimizers
_RUNTIME_KERNELS = {
    "netc.kernels.misc": ("stage_rows", "stage_labels", "seed_rng", "copy_rows"),
    "netc.kernels.scan": ("to_time_major", "from_time_major", "seed_step_grad", "scatter_step_grad", "zero_fill"),
    "netc.kernels.loss": ("cross_entropy", "mse", "mse_onehot", "scale_gradient",
                          "weighted_total", "confusion_add"),
    "netc.kernels.optim": ("sgd_update", "rmsprop_update", "adam_update", "clip_grad_norm", "clip_grad_value"),
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


# what each arena holds: the name and description of a view given none (see ViewTable.ref)
_ARENA_HOLDS = {"P": ("param", "parameters"), "G": ("param_grad", "parameter gradients"),
                "S": ("slot", "optimizer state"), "A": ("value", "values"), "D": ("grad", "gradients"),
                "I": ("ints", "integers"), "W": ("scratch", "scratch"), "L": ("labels", "labels"),
                "T": ("state", "state tensors"), "H": ("hyper", "hyperparameters")}
_BATCH_ARENAS = "ADIL"  # views with the batch as first dimension

# names the generated module uses besides the views: its imports, functions and their arguments
_RESERVED = {name for names in KERNEL_MODULES.values() for name in names} | {
    "np", "B", "I64", "plan_function", "min", "range", "V", "n", "training", "need_grad",
    "forward", "loss", "backward", "epoch", "noop", "t"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

def hyper_table(graph: Graph) -> dict[str, float]:
    """The hyperparameters a plan reads at run time from its H arena (float64), in order: the
    optimizer's (momentum, weight decay, nesterov as 0/1, alpha, eps, betas), each owner's lr_mult,
    and the ops' own (`OpDef.hyper`: a dropout's p). The source names only their index, so a
    spec that changes one of them reuses the compiled plan; the learning rate is an argument of
    the epoch loop (one per batch)."""
    optimizer = graph.spec.optimizer
    table = {"momentum": float(getattr(optimizer, "momentum", 0.0)), "weight_decay": float(optimizer.weight_decay),
             "nesterov": float(bool(getattr(optimizer, "nesterov", False))),
             "alpha": float(getattr(optimizer, "alpha", 0.0)), "eps": float(getattr(optimizer, "eps", 0.0))}
    betas = getattr(optimizer, "betas", (0.0, 0.0))
    table.update(beta1=float(betas[0]), beta2=float(betas[1]))
    if optimizer.clip is not None:
        table["clip"] = float(optimizer.clip.norm if optimizer.clip.norm is not None else optimizer.clip.value)
    if losses_weighted(graph):
        table.update({f"loss{i}.weight": float(loss.weight) for i, loss in enumerate(graph.losses)})
    for node in graph.owners:
        table[f"{node.name}.lr_mult"] = float(node.lr_mult)
    for node in graph.nodes:
        op = REGISTRY[node.op]
        if op.hyper is not None:
            table.update({f"{node.name}.{name}": float(value) for name, value in op.hyper(node.layer).items()})
    return table


# the optimizer slots of each parameter (in S), named as the update kernels name them
_SLOTS = {"sgd": ("velocity",), "rmsprop": ("square_avg", "buf"), "adam": ("m", "v")}


# Keyword calls up to this many arguments (see Emitter.call); a call is wrapped at _WIDTH characters
# (the epoch loop indents the bodies by up to 8 more).
MAX_KEYWORDS = 30
_WIDTH = 112


def _wrap(head: str, items: list[str]) -> list[str]:
    """`head(a, b, ...)` as lines of about _WIDTH characters, continued under the first item;
    a head starting with `#` makes every line a comment."""
    opening = f"    {head}("
    pad = ("    #" if head.startswith("#") else "") + " " * (len(opening) - (5 if head.startswith("#") else 0))
    lines, line = [], opening
    for i, item in enumerate(items):
        piece = item + (", " if i < len(items) - 1 else ")")
        if line not in (opening, pad) and len(line) + len(piece.rstrip()) > _WIDTH:
            lines.append(line.rstrip())
            line = pad
        line += piece
    lines.append(line)
    return lines


class ViewTable:
    """Every array view the generated code uses, made once per plan (not per step):
    reshaping inside the hot loop costs a call into Numba's runtime per view.
    Entry k is (arena, offset, shape); batch views have the plan's batch as first
    dimension and the generated code slices their first n rows.

    Each view gets a name in the generated code, made from what it holds (`fc1_weight`,
    `conv1_out`, `flat_grad`) and unique in the plan; a function binds the names it uses at
    its top, with what they hold and their shape (`fc1_weight = V[5]  # P: fc1.weight [500, 800]`).
    One entry may hold different things in turn (arena offsets are reused): each gets its own name."""

    def __init__(self, batch: int, reserved: tuple[str, ...] = (), hyper: tuple[str, ...] = ()):
        self.batch = batch
        self.hyper = {name: k for k, name in enumerate(hyper)}  # hyperparameter -> its index in H
        self.entries: list[tuple[str, int, tuple]] = []
        self._index: dict[tuple, int] = {}
        self.names: dict[str, tuple[int, str]] = {}  # name -> (entry, what it holds)
        self._named: dict[tuple[int, str], str] = {}  # (entry, what it holds) -> name
        self.reserved = set(_RESERVED) | set(reserved)  # the generated module's other names

    def ref(self, arena: str, offset: int, shape: tuple, name: str | None = None, about: str | None = None) -> str:
        """The name of a view: `name` (made unique) for the entry (arena, offset, shape) holding `about`."""
        key = (arena, offset, tuple(shape))
        if key not in self._index:
            self._index[key] = len(self.entries)
            self.entries.append(key)
        k = self._index[key]
        about = about or _ARENA_HOLDS[arena][1]
        if (k, about) not in self._named:
            base = (name or _ARENA_HOLDS[arena][0]).replace(".", "_")  # a block instance's `res.0.fc1` -> res_0_fc1
            # a tensor seen in another shape is told apart by it: `pool1_out` [64, 20, 144], `pool1_out_20x12x12`
            dims = "x".join(str(size) for size in (shape[1:] if arena in _BATCH_ARENAS else shape)) or "0"
            candidates = itertools.chain([base, f"{base}_{dims}"], (f"{base}_{dims}_{i}" for i in itertools.count(2)))
            unique = next(c for c in candidates if c not in self.names and c not in self.reserved
                          and not keyword.iskeyword(c))
            self._named[(k, about)] = unique
            self.names[unique] = (k, about)
        return self._named[(k, about)]

    def _binding(self, name: str) -> str:
        """`name = fixed_view(V[k], (4, 3))`: compiled, a view whose shape the compiler knows (see
        netc.jit.fixed_view); a 0-d view stays V[k]."""
        k = self.names[name][0]
        shape = self.entries[k][2]
        if not shape:
            return f"{name} = V[{k}]"
        dims = ", ".join(str(size) for size in shape) + ("," if len(shape) == 1 else "")
        return f"{name} = fixed_view(V[{k}], ({dims}))"

    def bindings(self, lines: list[str], indent: str = "    ") -> list[str]:
        """`name = fixed_view(V[k], shape)  # arena: what it holds [shape]` for every view name the
        code lines use (comments aside), in order of first use."""
        used: dict[str, None] = {}
        for line in lines:
            for word in _IDENTIFIER.findall(line.split("#", 1)[0]):
                if word in self.names:
                    used[word] = None
        heads = [self._binding(name) for name in used]
        width = max((len(head) for head in heads), default=0)
        out = []
        for head, name in zip(heads, used):
            k, about = self.names[name]
            arena, _, shape = self.entries[k]
            out.append(f"{indent}{head.ljust(width)}  # {arena}: {about} {list(shape)}")
        return out


class Emitter:
    """Writes one function body; knows where every tensor lives."""

    def __init__(self, graph: Graph, plan: BufferPlan, needs_grad: dict[str, bool], views: ViewTable,
                 rule: str | None = None):
        self.graph = graph
        self.plan = plan
        self.needs_grad = needs_grad
        self.views = views
        self.rule = rule  # a projection's backward: the activations' rule (Activation.rules), e.g. "deconvnet"
        self.lines: list[str] = []
        self.written: set[str] = set()  # gradient buffers written so far (first write assigns, later ones add)

    def call(self, kernel: str, **arguments) -> None:
        """A kernel call, its arguments given by the kernel's parameter names (checked, in order).
        Written with keywords: Numba matches them at compile time, and the plan's machine code is the
        same as with positional arguments (same compile time). CPython passes more than 15 keyword
        arguments as a dict (CALL_FUNCTION_EX), which Numba 0.68 turns back into a call (checked with
        conv_backward's 33 and 34); a kernel of more than MAX_KEYWORDS parameters is still written positionally,
        under a comment naming them, as older Numba releases may not."""
        expected = kernel_parameters(kernel)
        assert tuple(arguments) == expected, f"{kernel}: arguments {tuple(arguments)}, parameters {expected}"
        if len(arguments) <= MAX_KEYWORDS:
            self.lines += _wrap(kernel, [f"{name}={value}" for name, value in arguments.items()])
        else:
            self.lines += _wrap(f"# {kernel}", list(arguments))
            self.lines += _wrap(kernel, [str(value) for value in arguments.values()])

    # -- literals --------------------------------------------------------------------------
    size = staticmethod(size)

    @staticmethod
    def flag(value: bool) -> str:
        return lit(bool(value))

    @staticmethod
    def number(value: float) -> str:
        return lit(float(value))

    def hyper(self, name: str) -> str:
        """A hyperparameter read at run time from H (see hyper_table): `hyper[3]`."""
        view = self.views.ref("H", 0, (max(len(self.views.hyper), 1),), "hyper", "hyperparameters")
        return f"{view}[{self.views.hyper[name]}]"

    def hypers(self, names: list[str]) -> str:
        """Consecutive hyperparameters as one slice of H: `hyper[3:6]`."""
        view = self.views.ref("H", 0, (max(len(self.views.hyper), 1),), "hyper", "hyperparameters")
        first = self.views.hyper[names[0]]
        assert [self.views.hyper[name] for name in names] == list(range(first, first + len(names))), names
        return f"{view}[{first}:{first + len(names)}]"

    def act_code(self, step: Step) -> str:
        """The kernel code of the activation a step applies (0: none), as a plain int64."""
        if step.act is None:
            return size(0)
        activation = REGISTRY[step.act.op].activation
        if self.rule is not None:  # a projection's backward (compiler/projection.py checked the rule exists)
            return size(activation.rules[self.rule])
        return size(activation.code(step.act.layer))

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
    # Each view is named after what it holds (ViewTable.ref): `conv1_out`, `flat_grad`, `fc1_weight`.
    def _batch_view(self, arena: str, offset: int, size: int, dims: tuple, name: str | None = None,
                    about: str | None = None, region: Region | None = None) -> str:
        batch = self.plan.batch
        # the first n rows; with a batch of one, n is always 1 and the slice (a new array) is skipped
        rows = "" if batch == 1 else ("[:n]" if dims else f"[:n * {size}]")
        if region is not None and region.slots:  # a scan's tensor: this step's rows (the loop's `t`)
            step = "t" if not region.shift else f"t + {region.shift}"
            return f"{self._slot_view(arena, region, dims, name, about)}[{step}]{rows}"
        if not dims:  # flat, for element-wise kernels
            return f"{self.views.ref(arena, offset, (batch * size,), name, about)}{rows}"
        return f"{self.views.ref(arena, offset, (batch, *dims), name, about)}{rows}"

    def _slot_view(self, arena: str, region: Region, dims: tuple, name: str | None, about: str | None) -> str:
        """Every step of a scan's tensor, time-major: (slots, batch, *dims), or (slots, batch * size) flat."""
        shape = (region.slots, self.plan.batch, *dims) if dims else (region.slots, self.plan.batch * region.per_sample)
        return self.views.ref(arena, region.offset, shape, f"{name}_steps", f"{about} at every step")

    def _tensor_about(self, tensor: str, gradient: bool = False) -> str:
        """`input image`, `fc1 output`, `gradient of fc1`; `flat output (a view of pool2)` for an alias."""
        if gradient:
            about = f"gradient of {tensor}"
        else:
            about = f"input {tensor}" if tensor in self.graph.inputs else f"{tensor} output"
        root = self.plan.root(tensor)
        return about if root == tensor else f"{about} (a view of {root})"

    def val(self, tensor: str, dims: tuple = ()) -> str:
        region = self.plan.values[self.plan.root(tensor)]
        name = (f"{tensor}_in" if tensor in self.graph.inputs else f"{tensor}_out") + ("" if dims else "_flat")
        return self._batch_view("A", region.offset, region.per_sample, dims, name, self._tensor_about(tensor), region)

    def slots(self, tensor: str, dims: tuple = ()) -> str:
        """A scan's tensor at every step (see netc.ops.scan): (slots, batch, *dims)."""
        region = self.plan.values[self.plan.root(tensor)]
        return self._slot_view("A", region, dims, f"{tensor}_out", self._tensor_about(tensor))

    def slot(self, tensor: str, index: str) -> str:
        """One slot of a scan's tensor, every row of the batch, flat."""
        return f"{self.slots(tensor)}[{index}]"

    def grad(self, tensor: str, dims: tuple = ()) -> str:
        region = self.plan.grads[self.plan.root(tensor)]
        name = f"{tensor}_grad" + ("" if dims else "_flat")
        return self._batch_view("D", region.offset, region.per_sample, dims, name, self._tensor_about(tensor, True))

    def step_rows(self, tensor: str, steps: int, width: int, gradient: bool = False) -> str:
        """A tensor of `steps` rows of `width` per sample (a sequence [T, F]) seen as one matrix
        [n * steps, width]: what applies the same weights at every step (linear over a sequence, a
        loss at every step) runs one GEMM, or one loop, over every step of every sample."""
        region = (self.plan.grads if gradient else self.plan.values)[self.plan.root(tensor)]
        name = f"{tensor}_grad_rows" if gradient else f"{tensor}_in_rows" if tensor in self.graph.inputs \
            else f"{tensor}_out_rows"
        rows = "" if self.plan.batch == 1 else f"[:n * {steps}]"
        if region.slots:  # inside a scan's block: this step's rows
            view = self.views.ref("A", region.offset, (region.slots, self.plan.batch * steps, width), f"{name}_steps",
                                  f"{self._tensor_about(tensor)} at every step")
            return f"{view}[{'t' if not region.shift else f't + {region.shift}'}]{rows}"
        view = self.views.ref("D" if gradient else "A", region.offset, (self.plan.batch * steps, width), name,
                              self._tensor_about(tensor, gradient))
        return f"{view}{rows}"

    def indices(self, tensor: str, dims: tuple = ()) -> str:
        """An index input as staged in I (int32), [n, *dims]."""
        region = self.plan.indices[tensor]
        return self._batch_view("I", region.offset, region.per_sample, dims, f"{tensor}_in",
                                f"input {tensor} (indices)")

    def labels(self, rows: bool = True, steps: int = 1) -> str:
        """The labels staged for the batch (its first n rows, or all of them with rows=False). Labels at
        every step (`steps` > 1): one row per step of every sample, [n * steps], as the loss reads them;
        with rows=False [batch, steps], as they are staged."""
        label = self.graph.label_input or "label"
        about = f"input {label} (labels)"
        if steps > 1:
            if not rows:
                return self.views.ref("L", 0, (self.plan.batch, steps), f"{label}_in", about)
            view = self.views.ref("L", 0, (self.plan.batch * steps,), f"{label}_in_rows", about)
            return view if self.plan.batch == 1 else f"{view}[:n * {steps}]"
        view = self.views.ref("L", 0, (self.plan.batch,), f"{label}_in", about)
        return f"{view}[:n]" if rows else view

    def _param_view(self, arena: str, node, pname: str, dims: tuple, slot: int = 0, name: str | None = None,
                    about: str | None = None) -> str:
        region = self.plan.params[node.param_owner][pname]
        offset = slot * self.plan.param_size + region.offset
        if region.transposed and dims:  # stored [in, out]: the kernel is told so (stored_transposed)
            dims, about = dims[::-1], f"{about}, stored transposed"
        return self.views.ref(arena, offset, dims or (region.per_sample,), name, about)

    def stored_transposed(self, node, pname: str) -> bool:
        """Whether the plan stores this 2-D parameter transposed (OpDef.transposed)."""
        region = self.plan.params.get(node.param_owner, {}).get(pname)
        return region is not None and region.transposed

    def _param_name(self, node, pname: str, dims: tuple) -> str:
        """`fc1_weight`; `fc1_weight_flat` when a tensor of several dimensions is seen flat."""
        flat = not dims and len(node.param_shapes[pname]) > 1
        return f"{node.param_owner}_{pname}" + ("_flat" if flat else "")

    def param(self, node, pname: str, dims: tuple = ()) -> str:
        if pname not in self.plan.params.get(node.param_owner, {}):
            # no bias: an empty array keeps the kernel's types
            return self.views.ref("P", 0, (0,), f"no_{pname}", f"empty (no {pname})")
        return self._param_view("P", node, pname, dims, 0, self._param_name(node, pname, dims),
                                f"{node.param_owner}.{pname}")

    def pgrad(self, node, pname: str, dims: tuple = ()) -> str:
        if pname not in self.plan.params.get(node.param_owner, {}):
            return self.views.ref("G", 0, (0,), f"no_{pname}_grad", f"empty (no {pname})")
        return self._param_view("G", node, pname, dims, 0, self._param_name(node, pname, dims) + "_grad",
                                f"gradient of {node.param_owner}.{pname}")

    def state(self, node, pname: str, slot: int) -> str:
        """An optimizer slot of a parameter (momentum, Adam's moments)."""
        optimizer = self.graph.spec.optimizer.type
        slots = _SLOTS.get(optimizer, ())
        slot_name = slots[slot] if slot < len(slots) else f"slot{slot}"
        return self._param_view("S", node, pname, (), slot, f"{node.param_owner}_{pname}_{slot_name}",
                                f"{optimizer} {slot_name} of {node.param_owner}.{pname}")

    def state_tensor(self, node, name: str, dims: tuple = ()) -> str:
        """One of the op's own state tensors (running statistics, counters) in T."""
        region = self.plan.state[node.name][name]
        return self.views.ref("T", region.offset, dims or (max(region.per_sample, 1),), f"{node.name}_{name}",
                              f"{node.name}.{name}")

    def saved(self, node, name: str, dims: tuple = (), about: str | None = None) -> str:
        """An array the op of `node` keeps from forward to backward (its OpDef's `saved`): batch
        rows (in A or I) seen as [n, *dims] (flat without dims), or one batch's worth in W (flat, or
        shaped `dims`)."""
        arena, region = self.plan.saved[(node.name, name)]
        about = f"{node.name} {about or name}, kept from forward to backward"
        if arena in _BATCH_ARENAS:
            return self._batch_view(arena, region.offset, region.per_sample, dims, f"{node.name}_{name}", about,
                                    region)
        return self.views.ref(arena, region.offset, dims or (region.per_sample,), f"{node.name}_{name}", about)

    def has_saved(self, node, name: str) -> bool:
        return (node.name, name) in self.plan.saved

    def scratch(self, offset: int, shape: tuple, name: str, about: str) -> str:
        """A view of the scratch all steps share (W from offset 0; the op's `scratch` sized it)."""
        return self.views.ref("W", offset, shape, name, about)

    def empty(self, arena: str, shape: tuple, name: str, about: str) -> str:
        """An empty array of an arena's type: keeps a kernel's types where an argument is unused."""
        return self.views.ref(arena, 0, shape, name, f"empty ({about})")

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

    def written_param(self, node) -> bool:
        """Whether a step written so far wrote the node's parameter gradients."""
        return "p:" + node.param_owner in self.written


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
    """The optimizer step for every tensor of one owner. The learning rate and step are arguments of
    the loop, the other hyperparameters are read from H: none of their values is in the source (only
    whether momentum is used, which decides the optimizer's slots)."""
    for pname in node.param_shapes:
        p, grad = e.param(node, pname), e.pgrad(node, pname)
        lr = f"lr * {e.hyper(f'{node.name}.lr_mult')}"
        wd = e.hyper("weight_decay")
        if optimizer.type == "sgd":
            velocity = e.state(node, pname, 0) if optimizer.momentum else p
            e.call("sgd_update", p=p, g=grad, velocity=velocity, lr=lr, momentum=e.hyper("momentum"),
                   weight_decay=wd, nesterov=f"{e.hyper('nesterov')} != 0.0")
        elif optimizer.type == "rmsprop":
            buf = e.state(node, pname, 1) if optimizer.momentum else p
            e.call("rmsprop_update", p=p, g=grad, square_avg=e.state(node, pname, 0), buf=buf, lr=lr,
                   alpha=e.hyper("alpha"), eps=e.hyper("eps"), momentum=e.hyper("momentum"), weight_decay=wd)
        else:
            e.call("adam_update", p=p, g=grad, m=e.state(node, pname, 0), v=e.state(node, pname, 1), lr=lr,
                   beta1=e.hyper("beta1"), beta2=e.hyper("beta2"), eps=e.hyper("eps"), weight_decay=wd,
                   step="step")


def emit_clip(e: Emitter, optimizer) -> None:
    """Gradient clipping over every parameter gradient, between the backward pass and the updates."""
    grads = e.views.ref("G", 0, (max(e.plan.param_size, 1),), "param_grads", "every parameter gradient")
    if optimizer.clip.norm is not None:
        e.call("clip_grad_norm", g=grads, max_norm=e.hyper("clip"))
    else:
        e.call("clip_grad_value", g=grads, value=e.hyper("clip"))


def loss_value(i: int) -> str:
    """The local holding loss i's value (the epoch loop stores each in `parts`)."""
    return f"loss_{i}"


def loss_operands(e: Emitter, loss: LossStep) -> tuple[str, str, str]:
    """(scores, their gradient, targets) as a loss kernel reads them: a row per sample, or with a label
    at every step one row per step of every sample ([n * T, C] scores, [n * T] labels), so the kernel
    averages over every step of every sample (PyTorch's cross_entropy on the flattened steps)."""
    steps = e.graph.label_steps if loss.target == e.graph.label_input else 1
    if steps > 1:
        classes = numel(e.graph.shape_of(loss.input)) // steps
        return (e.step_rows(loss.input, steps, classes), e.step_rows(loss.grad_target, steps, classes, True),
                e.labels(steps=steps))
    k = numel(e.graph.shape_of(loss.input))
    target = e.labels() if loss.target == e.graph.label_input else e.val(loss.target, (k,))
    return e.val(loss.input, (k,)), e.grad(loss.grad_target, (k,)), target


def loss_logits(e: Emitter, loss: LossStep) -> str:
    """The input of the log_softmax an nll fuses with, shaped as loss_operands shapes its scores: the
    loss is cross_entropy of it (the same loss, its gradient softmax - onehot with no log on the way)."""
    steps = e.graph.label_steps if loss.target == e.graph.label_input else 1
    k = numel(e.graph.shape_of(loss.input))
    return e.step_rows(loss.grad_target, steps, k // steps) if steps > 1 else e.val(loss.grad_target, (k,))


def emit_loss(e: Emitter, losses: list[LossStep]) -> None:
    """The losses' kernel calls, ending in `return <total>, <correct>`: one call for a single loss.
    For several, each loss writes its gradient and scales it by its weight (H), or, where an earlier
    loss's gradient went (the same buffer: an nll fused into its log_softmax and an mse on the logits,
    a loss on a view of another's input), adds its weight times its gradient; then the weighted total
    and the first one's correct count. (Scaling in a kernel of its own keeps the bits the same in both
    tiers: a multiply inside the loss kernel is re-associated differently once inlined.)"""
    calls = []
    for loss in losses:
        scores, grad, target = loss_operands(e, loss)
        if loss.kind == "nll_after_log_softmax":  # nll(log_softmax(z)) is cross_entropy(z): computed from z
            scores = loss_logits(e, loss)
        adds = e.acc(loss.grad_target) != lit(False)
        weight = e.hyper(loss.weight) if adds else e.number(1.0)
        calls.append((f"{loss.kernel}({scores}, {target}, {grad}, need_grad, {weight}, {lit(adds)})", grad, loss, adds))
    if len(losses) == 1 and losses[0].weight is None:
        e.line(f"return {calls[0][0]}")
        return
    for i, (call, grad, loss, adds) in enumerate(calls):
        e.line(f"{loss_value(i)}, {'correct' if i == 0 else f'correct_{i}'} = {call}")
        if not adds:
            e.line("if need_grad:")
            e.line(f"    scale_gradient({grad}, {e.hyper(loss.weight)})")
    # the sum in a kernel: written in the glue, Numba may fuse it into FMAs that the Python tier does not do
    values = ", ".join(loss_value(i) for i in range(len(calls)))
    e.line(f"return weighted_total(({values},), {e.hypers([loss.weight for loss in losses])}), correct")
