"""A spec's layers with its blocks unrolled: the scopes checked once, the instances named.

A scope is a list of layers with the names it reads: the spec's top level (its inputs and
layers) and each block of `blocks:` (the block's inputs and layers). Each scope is checked once,
where it is written: layer names, references, arity, the block an instance names, recursion
between blocks. Then every instance is unrolled into ordinary layers, each `Placed` under its
full name, like a PyTorch module tree:

    b1 = {op: block, block: resblock}             ->  b1.conv1, b1.relu1, ..., b1 (the output)
    b1 = {op: block, block: resblock, repeat: 3}  ->  b1.0.conv1, ..., b1.2.conv1, ..., b1
    parameters                                    ->  b1.0.conv1.weight, ...

The instance's output tensor is named after the instance (an identity, a view: no copy), so the
layers after it read `in: b1`. With `share: true`, copies 1.. of a repeat use the parameters of
copy 0 through `share:` (an unrolled recurrent network).

Nothing here infers shapes: netc.graph.build turns the placed layers into nodes and reports each
error inside an instance at the line of the block's definition, naming the instance
(`Instance.context`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from netc.errors import did_you_mean, path_text
from netc.ops import REGISTRY
from netc.ops.scan import ScanInput, ScanOutput, ScanState
from netc.spec.models import BLOCK_OP, SCAN_OP, BlockLayer, ScanLayer, Spec, layer_name

# the most layers a spec may unroll into: a 100,000-layer chain is fine, a block repeated into
# millions of layers is a mistake to report, not a graph to build
MAX_LAYERS = 200_000
MAX_DEPTH = 32  # blocks inside blocks inside ...: deeper is refused, so unrolling never recurses far

# report(code, message, path, hint="", key=False): how checks hand their findings to the caller
Report = Callable[..., None]


@dataclass(frozen=True, eq=False)
class Instance:
    """One instance of a block: the layers it unrolls into are named `<name>.<layer>`
    (`<name>.<k>.<layer>` when repeated), and its output tensor is `<name>`."""

    name: str  # full name: `b1`, or `b2.inner` for an instance inside block instance b2
    block: str  # the block it instantiates
    repeat: int
    share: bool  # copies 1.. of a repeat use copy 0's parameters
    inputs: tuple[str, ...]  # the tensors it reads (full names)
    path: tuple  # the instance layer in the spec: ("layers", 3) or ("blocks", "outer", "layers", 1)
    parent: Instance | None = None  # the instance this one sits in
    scan: bool = False  # a scan (netc.ops.scan): its layers run once per step of its sequences

    @property
    def root(self) -> Instance:
        """The top-level instance this one is part of (itself when it is one)."""
        return self if self.parent is None else self.parent.root

    @property
    def context(self) -> str:
        """How an error inside it names it: `in block instance 'b1' (resblock, repeat 3, shared)`."""
        if self.scan:
            return f"in scan '{self.name}' ({self.block})"
        about = [self.block] + [f"repeat {self.repeat}"] * (self.repeat > 1) + ["shared"] * self.share
        return f"in block instance '{self.name}' ({', '.join(about)})"

    @property
    def in_scan(self) -> str | None:
        """The scan whose loop runs the layers of this instance, if any: a scan is written at the top
        level only, so it is the root."""
        return self.root.name if self.root.scan else None


@dataclass(slots=True, eq=False)
class Placed:
    """An op layer at its place in the unrolled spec."""

    name: str  # full name, also its output tensor: `fc1`, `b1.conv1`, `b1.2.conv1`
    layer: object  # the op's spec model (an identity made here for an instance's output)
    path: tuple  # where it is written: ("layers", 3) or ("blocks", "resblock", "layers", 1)
    inputs: list[str]  # full tensor names
    share: str | None = None  # full name of the layer whose parameters it uses (`share:` or `share: true`)
    instance: Instance | None = None  # the innermost instance it is part of (None: the top level)


@dataclass(frozen=True)
class Unrolled:
    layers: list[Placed]  # in spec order, instances inlined
    instances: dict[str, Instance]  # by full name, in spec order
    repeat_checks: dict[str, Instance]  # tensor -> the repeated instance whose input shape it must have


def scope_path(block: str | None) -> tuple:
    """The spec path of a scope's layer list."""
    return ("layers",) if block is None else ("blocks", block, "layers")


# --------------------------------------------------------------------------- checks, once per scope


def default_input(spec: Spec) -> str:
    """What the first layer of the spec reads unless it says otherwise: the first float input."""
    return next((n for n, inp in spec.inputs.items() if inp.dtype == "float32"), next(iter(spec.inputs)))


def check(spec: Spec, report: Report) -> bool:
    """Check every scope and the blocks' use of each other; True when the spec can be unrolled."""
    counted = _Counted(report)
    _check_scope(spec, None, list(spec.inputs), spec.layers, default_input(spec), counted)
    for name, block in spec.blocks.items():
        _check_block(spec, name, block, counted)
    if not counted.found:
        _check_recursion(spec, counted)
    if not counted.found:
        _check_size(spec, counted)
    return not counted.found


class _Counted:
    """A report that remembers whether it was called."""

    def __init__(self, report: Report):
        self.report, self.found = report, False

    def __call__(self, *args, **kwargs):
        self.found = True
        self.report(*args, **kwargs)


def _check_block(spec: Spec, name: str, block, report: Report) -> None:
    seen: dict[str, int] = {}
    for j, inp in enumerate(block.inputs):
        if inp in seen:
            report("E-DUP-NAME", f"in block '{name}': input '{inp}' is listed twice", ("blocks", name, "inputs", j),
                   "each input of a block has its own name")
        seen.setdefault(inp, j)
    for state in block.state:
        if state in seen:
            report("E-DUP-NAME", f"in block '{name}': state '{state}' is already an input name",
                   ("blocks", name, "state", state), "a state and an input need their own names", key=True)
    names = _check_scope(spec, name, block.inputs + list(block.state), block.layers, block.inputs[0], report)
    if block.output is not None and block.output not in names:
        hint = ("the output is one of the block's layers" if block.output in block.inputs
                else did_you_mean(block.output, list(names), "layers of the block"))
        report("E-REF", f"in block '{name}': output '{block.output}' is not a layer of the block",
               ("blocks", name, "output"), hint)
    for state, carried in block.state.items():
        if carried.next not in names:
            report("E-REF", f"in block '{name}': state '{state}' takes its next value from '{carried.next}', "
                   "which is not a layer of the block", ("blocks", name, "state", state, "next"),
                   did_you_mean(carried.next, list(names), "layers of the block"))


def _check_scope(spec: Spec, block: str | None, inputs: list[str], layers: list, default_input: str,
                 report: Report) -> dict[str, int]:
    """Names, references and arity of one scope's layers; returns {layer name: position}."""
    where = scope_path(block)
    about = "" if block is None else f"in block '{block}': "
    kind = "an input" if block is None else "a block input"
    inputs_set = set(inputs)
    names: dict[str, int] = {}
    duplicates: set[int] = set()
    for i, layer in enumerate(layers):
        name = layer_name(layer, i)
        if name in inputs_set:
            report("E-DUP-NAME", f"{about}layer name '{name}' is already {kind} name", where + (i, "name"),
                   "rename the layer or the input")
            duplicates.add(i)
        elif name in names:
            first = path_text(where + (names[name],))
            report("E-DUP-NAME", f"{about}duplicate layer name '{name}' (first used by {first})", where + (i, "name"),
                   "layer names must be unique")
            duplicates.add(i)
        else:
            names[name] = i
    known = list(inputs) + list(names)
    previous = default_input
    for i, layer in enumerate(layers):
        name = layer_name(layer, i)
        refs = _refs(layer, previous)
        for j, ref in enumerate(refs):
            at = where + (i, "in") if isinstance(layer.inputs, str) or layer.inputs is None else where + (i, "in", j)
            if ref not in inputs_set and ref not in names:
                report("E-REF", f"{about}unknown tensor '{ref}'", at,
                       did_you_mean(ref, known, "inputs and layers" if block is None else "block inputs and layers"))
            elif ref == name and i not in duplicates:  # a duplicate "reads itself" only through its name
                report("E-CYCLE", f"{about}layer '{name}' reads its own output", at)
        in_at = where + (i, "in") if layer.inputs is not None else where + (i,)
        if layer.op == BLOCK_OP:
            _check_instance(spec, layer, refs, where + (i,), in_at, about, report)
        elif layer.op == SCAN_OP:
            _check_scan(spec, block, layer, refs, where + (i,), in_at, about, report)
        else:
            opdef = REGISTRY[layer.op]
            if len(refs) < opdef.min_inputs or (opdef.max_inputs is not None and len(refs) > opdef.max_inputs):
                want = (f"exactly {opdef.min_inputs}" if opdef.min_inputs == opdef.max_inputs
                        else f"at least {opdef.min_inputs}")
                report("E-ARITY", f"{about}{layer.op} takes {want} input(s), got {len(refs)}", in_at,
                       "list the inputs with `in: [a, b]`" if opdef.min_inputs > 1 else "")
        previous = name
    return names


def _refs(layer, previous: str) -> list[str]:
    refs = layer.inputs if layer.inputs is not None else previous
    return [refs] if isinstance(refs, str) else list(refs)


def _named_block(spec: Spec, layer, at: tuple, about: str, report: Report, parts: str):
    """The block a layer names, or None after reporting an unknown one."""
    block = spec.blocks.get(layer.block)
    if block is None:
        report("E-BLOCK", f"{about}unknown block '{layer.block}'", at + ("block",),
               did_you_mean(layer.block, list(spec.blocks), "blocks") if spec.blocks
               else f"define it under `blocks:` {parts}")
    return block


def _check_instance(spec: Spec, layer: BlockLayer, refs: list[str], at: tuple, in_at: tuple, about: str,
                    report: Report) -> None:
    block = _named_block(spec, layer, at, about, report, "(a block has `inputs:` and `layers:`)")
    if block is None:
        return
    wanted = len(block.inputs)
    if len(refs) != wanted:
        report("E-ARITY", f"{about}block '{layer.block}' takes {wanted} input(s) ({', '.join(block.inputs)}), "
               f"got {len(refs)}", in_at, "list them in the block's order: `in: [" + ", ".join(block.inputs) + "]`"
               if wanted > 1 else "")
    if layer.repeat > 1 and wanted != 1:
        report("E-BLOCK", f"{about}block '{layer.block}' has {wanted} inputs and cannot repeat", at + ("repeat",),
               "a repeated block reads the previous copy's output: give it one input")
    if layer.share and layer.repeat == 1:
        report("E-BLOCK", f"{about}`share: true` shares parameters between repeats, and this instance has one",
               at + ("share",), "add `repeat: N`, or drop `share`")
    if block.state:
        report("E-BLOCK", f"{about}block '{layer.block}' carries state from step to step ({', '.join(block.state)})",
               at + ("op",), "run it over sequences with `op: scan`, or remove its `state:`")


def _check_scan(spec: Spec, scope: str | None, layer: ScanLayer, refs: list[str], at: tuple, in_at: tuple,
                about: str, report: Report) -> None:
    if scope is not None:
        report("E-BLOCK", f"{about}a scan runs at the top level of the spec, not inside a block", at + ("op",),
               "move the scan out of the block (scans do not nest)")
        return
    block = _named_block(spec, layer, at, about, report, "with `inputs:`, `state:` and `layers:`")
    if block is None:
        return
    if not block.state:
        report("E-BLOCK", f"block '{layer.block}' has no `state:` for a scan to carry from step to step", at + ("block",),
               "give the block a state, `state: {h: {shape: [64], next: <layer>}}`, or instantiate it with `op: block`")
    if len(refs) != len(block.inputs):
        report("E-ARITY", f"block '{layer.block}' takes {len(block.inputs)} sequence(s) ({', '.join(block.inputs)}), "
               f"got {len(refs)}", in_at, "list a sequence for each of the block's inputs: `in: ["
               + ", ".join(block.inputs) + "]`")


def _check_recursion(spec: Spec, report: Report) -> None:
    """A block that instantiates itself, directly or through others, would unroll forever; blocks
    nested deeper than MAX_DEPTH are refused too (so unrolling never recurses too deep)."""
    uses = {name: [(i, layer.block) for i, layer in enumerate(block.layers) if layer.op == BLOCK_OP]
            for name, block in spec.blocks.items()}
    depth: dict[str, int] = {}  # block -> how deep instances nest inside it (1: none), once known
    cycles = False
    for start in spec.blocks:
        if start in depth:
            continue
        path, at = [start], [0]  # the blocks being entered and, for each, the next use to follow
        on_path = {start}
        while path:
            name = path[-1]
            if at[-1] == len(uses[name]):  # every use followed: its depth is known
                depth[name] = 1 + max((depth.get(target, 0) for _, target in uses[name]), default=0)
                on_path.discard(path.pop())
                at.pop()
                continue
            i, target = uses[name][at[-1]]
            at[-1] += 1
            if target in on_path:
                cycle = path[path.index(target):] + [target]
                report("E-CYCLE", f"block '{target}' instantiates itself: {' -> '.join(cycle)}",
                       ("blocks", name, "layers", i, "block"), "a block cannot contain an instance of itself; "
                       "use `repeat: N` to stack copies")
                cycles = True
            elif target not in depth:
                path.append(target)
                at.append(0)
                on_path.add(target)
    for name in [] if cycles else spec.blocks:
        if depth[name] > MAX_DEPTH:
            report("E-BLOCK", f"block '{name}' nests instances {depth[name]} deep, more than {MAX_DEPTH}",
                   ("blocks", name), "flatten some blocks into their users", key=True)


def _check_size(spec: Spec, report: Report) -> None:
    sizes: dict[str, int] = {}  # block -> layers one copy unrolls into

    def size(layers) -> int:  # recursion as deep as blocks nest: at most MAX_DEPTH
        total = 0
        for layer in layers:
            if layer.op in (BLOCK_OP, SCAN_OP):
                if layer.block not in sizes:
                    sizes[layer.block] = size(spec.blocks[layer.block].layers)
                repeat = layer.repeat if layer.op == BLOCK_OP else 1
                total += repeat * sizes[layer.block] + 1  # + the identity naming its output, or the scan's output
            else:
                total += 1
        return total

    total = size(spec.layers)
    if total > MAX_LAYERS:
        largest = max((i for i, layer in enumerate(spec.layers) if layer.op == BLOCK_OP),
                      key=lambda i: spec.layers[i].repeat * sizes[spec.layers[i].block])
        layer = spec.layers[largest]
        report("E-BLOCK", f"the spec unrolls into {total:,} layers, more than {MAX_LAYERS:,} "
               f"(block instance '{layer_name(layer, largest)}': {layer.repeat * sizes[layer.block]:,})",
               ("layers", largest, "repeat"), "lower `repeat`")


def dead_parts(spec: Spec, report: Report) -> None:
    """Blocks never instantiated, block inputs never read, block layers that do not lead to the
    block's output: typos, as dead layers at the top level are (reported once, where written)."""
    used: set[str] = set()
    todo = [layer.block for layer in spec.layers if layer.op in (BLOCK_OP, SCAN_OP)]
    while todo:
        name = todo.pop()
        if name in used or name not in spec.blocks:
            continue
        used.add(name)
        todo.extend(layer.block for layer in spec.blocks[name].layers if layer.op == BLOCK_OP)
    for name, block in spec.blocks.items():
        if name not in used:
            report("E-DEAD", f"block '{name}' is never used", ("blocks", name),
                   "instantiate it with a layer `{op: block, block: " + name + "}`, or remove it", key=True)
            continue
        names = [layer_name(layer, i) for i, layer in enumerate(block.layers)]
        reads: dict[str, list[str]] = {}  # layer -> the tensors it reads
        previous = block.inputs[0]
        for layer, local in zip(block.layers, names):
            reads[local] = _refs(layer, previous)
            previous = local
        output = block.output if block.output is not None else names[-1]
        live, stack = set(), [output] + [carried.next for carried in block.state.values()]
        while stack:
            tensor = stack.pop()
            if tensor not in live:
                live.add(tensor)
                stack.extend(reads.get(tensor, ()))
        for i, local in enumerate(names):
            if local not in live:
                report("E-DEAD", f"in block '{name}': layer '{local}' does not lead to the block's output '{output}'",
                       ("blocks", name, "layers", i), "its output is never used")
        for j, inp in enumerate(block.inputs):
            if inp not in live:
                report("E-DEAD", f"in block '{name}': input '{inp}' is never read", ("blocks", name, "inputs", j),
                       "remove it, or read it in a layer")
        for state in block.state:
            if state not in live:
                report("E-DEAD", f"in block '{name}': state '{state}' is never read", ("blocks", name, "state", state),
                       "read it in a layer (the value carried from the step before), or remove it", key=True)


# --------------------------------------------------------------------------- unrolling


def unroll(spec: Spec) -> Unrolled:
    """Every op layer of a checked spec (`check` found nothing) at its full name, instances inlined."""
    out = Unrolled([], {}, {})
    _unroll(spec, spec.layers, None, "", {name: name for name in spec.inputs}, default_input(spec), None, None, out)
    return out


def _unroll(spec: Spec, layers: list, block: str | None, prefix: str, env: dict[str, str], default_input: str,
            instance: Instance | None, mirror: tuple[str, str] | None, out: Unrolled) -> None:
    """Place one scope's layers under `prefix`; `env` maps the scope's input names to full tensor
    names; `mirror` (from, to): a copy of a `share: true` repeat, whose layers use the parameters of
    the same layer under `to`."""
    where = scope_path(block)
    locals_ = [layer_name(layer, i) for i, layer in enumerate(layers)]
    # local name -> full tensor name; a layer may read one written after it (the graph orders them)
    full = {**env, **{local: prefix + local for local in locals_}}
    previous = default_input
    for i, layer in enumerate(layers):
        local = locals_[i]
        name = prefix + local
        refs = [full[ref] for ref in _refs(layer, previous)]
        if layer.op == BLOCK_OP:
            _unroll_instance(spec, layer, name, refs, where + (i,), instance, mirror, out)
        elif layer.op == SCAN_OP:
            _unroll_scan(spec, layer, name, refs, where + (i,), out)
        else:
            share = None
            if "share" in type(layer).model_fields and layer.share is not None:
                share = prefix + layer.share  # a layer of the same scope (an unknown one is reported by the graph)
            elif mirror is not None:
                share = mirror[1] + name[len(mirror[0]):]
            out.layers.append(Placed(name, layer, where + (i,), refs, share, instance))
        previous = local


def _unroll_instance(spec: Spec, layer: BlockLayer, name: str, refs: list[str], path: tuple,
                     parent: Instance | None, mirror: tuple[str, str] | None, out: Unrolled) -> None:
    block = spec.blocks[layer.block]
    instance = Instance(name, layer.block, layer.repeat, layer.share, tuple(refs), path, parent)
    out.instances[name] = instance
    output = block.output if block.output is not None else layer_name(block.layers[-1], len(block.layers) - 1)
    current = refs
    for k in range(layer.repeat):
        prefix = f"{name}.{k}." if layer.repeat > 1 else f"{name}."
        inner = (prefix, f"{name}.0.") if layer.share and k > 0 else mirror
        _unroll(spec, block.layers, layer.block, prefix, dict(zip(block.inputs, current)), block.inputs[0],
                instance, inner, out)
        current = [prefix + output]
        if k == 0 and layer.repeat > 1:
            out.repeat_checks[current[0]] = instance
    # the instance's output tensor: an identity (a view, no copy) named after the instance
    out.layers.append(Placed(name, REGISTRY["identity"].spec(op="identity"), path, current, None, parent))


def _unroll_scan(spec: Spec, layer: ScanLayer, name: str, refs: list[str], path: tuple, out: Unrolled) -> None:
    """A scan's pieces (netc.ops.scan): a step of each sequence (`rnn.x`), each state (`rnn.h`), the
    block's layers (`rnn.<layer>`), and the scan's output, named after the scan."""
    block = spec.blocks[layer.block]
    instance = Instance(name, layer.block, 1, False, tuple(refs), path, None, scan=True)
    out.instances[name] = instance
    prefix = f"{name}."
    for j, (inp, sequence) in enumerate(zip(block.inputs, refs)):
        at = path + (("in", j) if isinstance(layer.inputs, list) else ("in",) if layer.inputs is not None else ())
        out.layers.append(Placed(prefix + inp, ScanInput(op="scan_input", scan=name), at, [sequence], None, instance))
    states = {prefix + state: prefix + carried.next for state, carried in block.state.items()}
    for state, carried in block.state.items():
        out.layers.append(Placed(prefix + state, ScanState(op="scan_state", scan=name, shape=list(carried.shape),
                                                           next=prefix + carried.next),
                                 ("blocks", layer.block, "state", state), [], None, instance))
    env = {local: prefix + local for local in [*block.inputs, *block.state]}
    _unroll(spec, block.layers, layer.block, prefix, env, block.inputs[0], instance, None, out)
    output = prefix + (block.output if block.output is not None else layer_name(block.layers[-1], len(block.layers) - 1))
    node = ScanOutput(op="scan", block=layer.block, sequences=layer.sequences, bptt=layer.bptt, output=output,
                      states=states)
    # reads the output and each next value (so they come before it and stay live), then the first sequence (its T)
    out.layers.append(Placed(name, node, path, [*dict.fromkeys([output, *states.values()]), refs[0]], None, None))
