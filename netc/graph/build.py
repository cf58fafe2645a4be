"""Spec -> typed Graph: names, references, order, sharing, shapes, loss checks.

Every check appends to one list of diagnostics; the whole list is raised once
at the end, so a user sees every error of a file together.
"""

from __future__ import annotations

import heapq

from netc.errors import Diagnostic, SpecErrors, did_you_mean, path_text
from netc.graph.ir import Graph, Node
from netc.graph.memory import check_memory
from netc.ops import REGISTRY, OpShapeError
from netc.ops.base import ALIAS, INDEXED, LOG_PROBABILITIES, PARALLEL, PROBABILITIES, STEPPED, PlanFacts, ops_in
from netc.spec import blocks
from netc.spec.load import LoadedSpec


class _Collector:
    def __init__(self, loaded: LoadedSpec):
        self.smap = loaded.smap
        self.diagnostics: list[Diagnostic] = []
        self._seen: set[tuple] = set()  # (instance, code, path) of the errors inside block instances

    def add(self, code: str, message: str, path: tuple, hint: str = "", key: bool = False) -> None:
        self.diagnostics.append(Diagnostic(code, message, self.smap.locate(path, key=key), path_text(path), hint))

    def at(self, node: Node, code: str, message: str, field: tuple = (), hint: str = "") -> None:
        """An error of a node, located where its layer is written plus `field`. Inside a block
        instance, the message names the instance, and the copies of a repeat, which share that
        place, report it once."""
        path = node.spec_path + field
        if node.instance is not None:
            seen = (node.instance.root.name, code, path)
            if seen in self._seen:
                return
            self._seen.add(seen)
            message = f"{node.instance.context}: {message}"
        self.add(code, message, path, hint)


def build_graph(loaded: LoadedSpec, check_memory_for_batch: bool = True) -> Graph:
    """Build and type-check the graph of a loaded spec. Raises SpecErrors with every problem found."""
    spec = loaded.spec
    errors = _Collector(loaded)
    inputs = {name: tuple(inp.shape) for name, inp in spec.inputs.items()}
    unrolled = _unroll(spec, errors)
    nodes = _make_nodes(unrolled, len(spec.layers)) if unrolled is not None else []
    ordered = _topological_order(nodes, inputs, errors)
    if ordered is not None:
        ordered = _scans_contiguous(ordered)
        by_name = {node.name: node for node in ordered}  # one index for every pass below
        _resolve_shares(ordered, by_name, errors)
        _infer_shapes(ordered, by_name, inputs, spec.inputs, unrolled.repeat_checks, errors)
        _check_scans(ordered, by_name, inputs, errors)
        _check_losses(spec, by_name, inputs, unrolled.instances, errors)
        _check_monitors(spec, errors)
        _check_reachability(spec, ordered, by_name, inputs, errors)
        blocks.dead_parts(spec, errors.add)
        shape_of = lambda ref: inputs[ref] if ref in inputs else by_name[ref].shape  # noqa: E731
        for problem, node in batch_problems(ordered, shape_of, spec.train.batch):
            field = (problem.field,) if problem.field else ()
            errors.at(node, problem.code, f"{node.op} '{node.name}': {problem.message}", field, problem.hint)
    if errors.diagnostics:
        raise SpecErrors(errors.diagnostics)
    graph = Graph(spec, inputs, ordered, spec.losses[0].input, spec.losses[0].target, unrolled.instances)
    graph.verify()
    if check_memory_for_batch:
        problem = check_memory(graph, spec.train.batch)
        if problem:
            errors.add("E-MEMORY", problem, ("train", "batch"),
                       "lower train.batch or make the layers smaller")
            raise SpecErrors(errors.diagnostics)
    return graph


def _field(layer, name: str, default):
    """The layer's field `name`, or `default` when its op has no such field: getattr(layer, name,
    default) does the same but costs ~4 us per miss on a pydantic model, 20k misses in a 10k-layer spec."""
    return getattr(layer, name) if name in type(layer).model_fields else default


def _unroll(spec, errors: _Collector) -> blocks.Unrolled | None:
    """Check names and references of the top level and of every block, then unroll the block
    instances into ordinary layers (netc.spec.blocks); None after an error."""
    if not blocks.check(spec, errors.add):
        return None
    return blocks.unroll(spec)


def _make_nodes(unrolled: blocks.Unrolled, top_level: int) -> list[Node]:
    """A node per placed layer: a top-level layer keeps its position in spec.layers as index, the
    layers of block instances are numbered after them (an index seeds a layer's initial values)."""
    nodes: list[Node] = []
    inner = top_level
    for placed in unrolled.layers:
        layer = placed.layer
        if placed.instance is None:  # a layer of the top level: ("layers", i)
            index, path = placed.path[1], ()
        else:
            index, path, inner = inner, placed.path, inner + 1
        nodes.append(Node(placed.name, layer.op, layer, index, placed.inputs,
                          trainable=_field(layer, "trainable", True), lr_mult=_field(layer, "lr_mult", 1.0),
                          path=path, instance=placed.instance, share=placed.share,
                          scan=placed.instance.in_scan if placed.instance is not None else None))
    return nodes


def _scans_contiguous(ordered: list[Node]) -> list[Node]:
    """Each scan's pieces right before its output, in the order its loop needs them: the steps of its
    sequences, its states, its block's layers (netc.ops.scan). Nothing outside a scan reads inside it,
    so moving them there keeps the order topological."""
    members: dict[str, list[Node]] = {}
    for node in ordered:
        if node.scan is not None:
            members.setdefault(node.scan, []).append(node)
    if not members:
        return ordered
    out = []
    for node in ordered:
        if node.scan is not None:
            continue
        if node.op == "scan":  # stable: the block keeps its topological order
            out += sorted(members[node.name], key=lambda n: (n.op != "scan_input", n.op != "scan_state"))
        out.append(node)
    return out


def _check_scans(nodes: list[Node], by_name: dict[str, Node], inputs, errors: _Collector) -> None:
    """What a scan's loop needs: sequences of one length, each state's next value computed in the
    block with the state's shape, and layers that work one step at a time. The block's mult-adds
    count every step."""
    def length(piece: Node) -> int | None:  # T of the sequence a scan_input steps through
        ref = piece.inputs[0]
        shape = inputs[ref] if ref in inputs else by_name[ref].shape
        return shape[0] if piece.shape is not None else None

    for scan in (node for node in nodes if node.op == "scan" and node.shape is not None):
        pieces = [node for node in nodes if node.scan == scan.name]
        context = pieces[0].instance.context
        sequences = [node for node in pieces if node.op == "scan_input"]
        first = sequences[0]
        for node in sequences[1:]:
            if length(node) is not None and length(node) != length(first):
                errors.at(node, "E-SHAPE", f"sequence '{node.inputs[0]}' has {length(node)} steps, "
                          f"'{first.inputs[0]}' has {length(first)}", (), "a scan steps through sequences of one length")
        for state in (node for node in pieces if node.op == "scan_state"):
            nxt = by_name[state.layer.next]
            local, nxt_local = state.name[len(scan.name) + 1:], nxt.name[len(scan.name) + 1:]
            at = ("blocks", scan.layer.block, "state", local, "next")
            if REGISTRY[nxt.op].is_(ALIAS):  # (blocks.py checked that `next` names a layer of the block)
                errors.add("E-BLOCK", f"{context}: state '{local}' takes its next value from '{nxt_local}', "
                           f"which computes nothing ({nxt.op})", at,
                           "name a layer that computes the new value (a view of another tensor cannot carry it)")
            elif nxt.shape is not None and nxt.shape != state.shape:
                errors.add("E-SHAPE", f"{context}: state '{local}' is {list(state.shape)} but its next value "
                           f"'{nxt_local}' is {list(nxt.shape)}", at,
                           "the layer giving a state's next value must have the state's shape")
        for node in pieces:
            if node.op in ("scan_input", "scan_state") or node.shape is None:
                continue
            why = _not_per_step(node, by_name)
            if why:
                errors.at(node, "E-BLOCK", f"{node.op} '{node.name}' cannot run inside a scan: {why}", (),
                          "keep it outside the scan's block")
            node.macs *= length(first) or 1


def _not_per_step(node: Node, by_name: dict[str, Node]) -> str:
    """Why an op cannot run at each step of a scan's loop ("" when it can)."""
    op = REGISTRY[node.op]
    if op.is_(PARALLEL) or op.is_(STEPPED):
        return "it runs its own loop over the batch or the steps"
    if node.state:
        return "it keeps running statistics over whole batches"
    shapes = [by_name[ref].shape for ref in node.inputs]  # a block's layers read only the block's tensors
    if all(shape is not None for shape in shapes):
        saved = op.saved(node.layer, shapes, PlanFacts(2, 1))
        if any(not kept.rows for kept in saved.values()):
            return "it keeps one batch's worth of values for its backward, not one per step"
    return ""


def _topological_order(nodes: list[Node], inputs, errors: _Collector) -> list[Node] | None:
    """Kahn's order, keeping spec order among ready nodes; a cycle is named in full.

    A heap of ready spec positions gives the first ready node in spec order in O(log N), and each
    node counts the tensors it still waits for, so the whole order is O(N log N) (no rescans).
    """
    if errors.diagnostics or not nodes:
        return None
    waiting_for = [len(set(node.inputs) - inputs.keys()) for node in nodes]  # distinct layers still to order
    readers: dict[str, list[int]] = {}  # tensor -> positions of the nodes that read it (each once)
    for position, node in enumerate(nodes):
        for ref in dict.fromkeys(node.inputs):
            readers.setdefault(ref, []).append(position)
    ready = [position for position, count in enumerate(waiting_for) if count == 0]  # ascending: a heap
    ordered: list[Node] = []
    while ready:
        node = nodes[heapq.heappop(ready)]
        ordered.append(node)
        for position in readers.get(node.name, ()):
            waiting_for[position] -= 1
            if waiting_for[position] == 0:
                heapq.heappush(ready, position)
    if len(ordered) < len(nodes):
        done = {node.name for node in ordered}
        pending = [node for node in nodes if node.name not in done]
        by_name = {node.name: node for node in nodes}
        cycle = _find_cycle(pending, by_name)
        top = next((k for k, name in enumerate(cycle) if by_name[name].instance is None), 0)
        cycle = cycle[top:] + cycle[:top]  # told from a layer of the top level where there is one
        first = by_name[cycle[0]]
        errors.at(first, "E-CYCLE", "cycle: " + " -> ".join(cycle + [cycle[0]]), ("in",),
                  "a layer cannot depend on its own output; check the `in:` of these layers")
        return None
    return ordered


def _find_cycle(pending: list[Node], by_name) -> list[str]:
    """Follow the first still-waiting input from the first pending node until a name repeats."""
    waiting = {n.name for n in pending}
    current = pending[0].name
    step_of: dict[str, int] = {}  # name -> its position on the path (a dict: no O(N) `in path` scans)
    path: list[str] = []
    while current not in step_of:
        step_of[current] = len(path)
        path.append(current)
        current = next(ref for ref in by_name[current].inputs if ref in waiting)
    return path[step_of[current]:]


def _resolve_shares(nodes: list[Node], by_name: dict[str, Node], errors: _Collector) -> None:
    """The first user owns a tensor; a sharer points at the owner (chains collapse)."""
    position = {node.name: i for i, node in enumerate(nodes)}
    for node in nodes:
        target = node.share
        if target is None or "share" not in type(node.layer).model_fields:
            continue  # a layer without `share:` in a `share: true` copy: _infer_shapes refuses its parameters
        written = node.layer.share  # as the spec says it: a name in the layer's own scope
        where = ("share",) if written is not None else ()  # else `share: true` of the instance
        if target == node.name:
            errors.at(node, "E-SHARE", f"layer '{node.name}' shares with itself", where)
            continue
        if target not in by_name:
            scope = target[:len(target) - len(written)]  # `b1.0.` for a layer of a block instance, else ``
            errors.at(node, "E-SHARE", f"layer '{node.name}' shares with unknown layer '{written}'", where,
                      did_you_mean(written, [n.name[len(scope):] for n in nodes if n.op == node.op and n is not node
                                             and n.name.startswith(scope) and "." not in n.name[len(scope):]],
                                   f"{node.op} layers" + (" of the block" if scope else "")))
            continue
        owner = by_name[target]
        if owner.op != node.op:
            errors.at(node, "E-SHARE", f"layer '{node.name}' ({node.op}) cannot share with '{owner.name}' ({owner.op})",
                      where, "shared layers must have the same op")
            continue
        if position[target] > position[node.name]:
            errors.at(node, "E-SHARE", f"layer '{node.name}' shares with '{target}', which runs after it", where,
                      f"the first user owns a shared tensor: put `share: {node.name}` on '{target}' instead")
            continue
        while owner.owner is not None:
            owner = by_name[owner.owner]
        node.owner = owner.name
        if node.layer.trainable != owner.layer.trainable or node.layer.lr_mult != owner.layer.lr_mult:
            errors.at(node, "E-SHARE", f"layer '{node.name}' shares with '{owner.name}' but sets a different "
                      "trainable/lr_mult", where, "a shared tensor is trained once: set trainable/lr_mult on the owner")
        node.trainable, node.lr_mult = owner.trainable, owner.lr_mult


def _index_problem(node: Node, input_specs: dict) -> tuple[str, str, str] | None:
    """(code, message, hint) when a layer reads integers it should not, or floats where it needs
    indices: labels are only the loss's; index inputs are only INDEXED ops' (an embedding)."""
    opdef = REGISTRY[node.op]
    for ref in node.inputs:
        inp = input_specs.get(ref)
        if inp is not None and inp.classes is not None:
            return ("E-TYPE", f"{node.op} '{node.name}' reads the integer label input '{ref}'",
                    "labels are only read by the loss; feed a float input")
        if inp is not None and inp.indices is not None and not opdef.is_(INDEXED):
            return ("E-TYPE", f"{node.op} '{node.name}' reads the index input '{ref}'",
                    f"index inputs are read by {' or '.join(ops_in(INDEXED))} layers, which turn indices into vectors")
    if opdef.is_(INDEXED):
        ref = node.inputs[0]
        inp = input_specs.get(ref)
        if inp is None or inp.indices is None:
            return ("E-TYPE", f"{node.op} '{node.name}' reads '{ref}', which holds floats, not indices",
                    f"read an index input, e.g. `tokens: {{shape: [8], dtype: int64, indices: {opdef.rows(node.layer)}}}`")
        if inp.indices > opdef.rows(node.layer):
            return ("E-SHAPE", f"{node.op} '{node.name}' has {opdef.rows(node.layer)} rows but input '{ref}' holds "
                    f"indices up to {inp.indices - 1}", f"raise the layer's rows or lower `inputs.{ref}.indices`")
    return None


def _infer_shapes(nodes: list[Node], by_name: dict[str, Node], inputs, input_specs: dict,
                  repeat_checks: dict[str, blocks.Instance], errors: _Collector) -> None:
    shapes = dict(inputs)
    for node in nodes:
        in_shapes = [shapes.get(ref) for ref in node.inputs]
        if any(s is None for s in in_shapes):
            continue  # an earlier error; do not report its consequences
        problem = _index_problem(node, input_specs)
        if problem:
            code, message, hint = problem
            errors.at(node, code, message, ("in",) if node.layer.inputs is not None else (), hint)
            continue
        opdef = REGISTRY[node.op]
        try:
            node.shape = tuple(opdef.infer(node.layer, in_shapes))
            node.param_shapes = {k: tuple(v) for k, v in opdef.params(node.layer, in_shapes).items()}
            node.macs = opdef.macs(node.layer, in_shapes, node.shape)
            node.state = opdef.state(node.layer, in_shapes)
        except OpShapeError as exc:
            about = "" if node.op == "scan_input" else f"{node.op} '{node.name}': "  # the scan names itself
            errors.at(node, exc.code, about + exc.message, (exc.field,) if exc.field else (), exc.hint)
            continue
        if node.owner is not None:
            owner = by_name[node.owner]
            if owner.shape is not None and owner.param_shapes != node.param_shapes:
                errors.at(node, "E-SHARE", f"layer '{node.name}' shares with '{owner.name}' but their parameters "
                          f"differ: {_shapes_text(node.param_shapes)} vs {_shapes_text(owner.param_shapes)}",
                          ("share",) if node.layer.share is not None else (),
                          "shared layers need the same input size and settings")
                continue  # its output shape follows from a mistake: do not check its readers against it
        elif node.share is not None and node.param_shapes and "share" not in type(node.layer).model_fields:
            errors.at(node, "E-SHARE", f"{node.op} '{node.name}' cannot use the parameters of '{node.share}': "
                      f"{node.op} has no `share:`", (), "`share: true` repeats a block whose parameters are in "
                      f"layers that share ({', '.join(_SHARING_OPS)}); drop `share: true` to give each copy its own")
            continue
        instance = repeat_checks.get(node.name)
        if instance is not None and node.shape != shapes[instance.inputs[0]]:
            context = f"{instance.parent.context}: " if instance.parent is not None else ""
            errors.add("E-SHAPE", f"{context}block instance '{instance.name}' repeats '{instance.block}' "
                       f"{instance.repeat} times, but its output {list(node.shape)} differs from its input "
                       f"{list(shapes[instance.inputs[0]])}", instance.path + ("repeat",),
                       "each copy reads the previous copy's output: the block must keep its input's shape")
            continue  # the next copies would only repeat the consequences
        shapes[node.name] = node.shape


_SHARING_OPS = [name for name, op in REGISTRY.items() if "share" in op.spec.model_fields]


def _shapes_text(params: dict) -> str:
    return ", ".join(f"{k} {list(v)}" for k, v in params.items())


def batch_problems(nodes: list[Node], shape_of, batch: int) -> list[tuple[OpShapeError, Node]]:
    """What a training batch of `batch` samples rules out (batch norm needs two values per channel)."""
    problems = []
    for node in nodes:
        check = REGISTRY[node.op].check_batch
        if check is not None and node.shape is not None:
            found = check(node.layer, [shape_of(ref) for ref in node.inputs], batch)
            if found is not None:
                problems.append((found, node))
    return problems


def loss_path(spec, index: int) -> tuple:
    """The spec path of loss `index`: `loss` for a single loss, `loss[i]` in a list."""
    return ("loss", index) if isinstance(spec.loss, list) else ("loss",)


def _check_losses(spec, by_name: dict[str, Node], inputs, instances: dict, errors: _Collector) -> None:
    for i, loss in enumerate(spec.losses):
        _check_loss(loss, loss_path(spec, i), spec, by_name, inputs, instances, errors)
    labels: dict[str, int] = {}
    read: dict[str, int] = {}
    for i, loss in enumerate(spec.losses):
        path = loss_path(spec, i)
        if loss.input in read:
            errors.add("E-LOSS", f"losses {read[loss.input]} and {i} both read '{loss.input}'", path + ("input",),
                       "give each loss its own head (a layer), or keep one of them")
        read.setdefault(loss.input, i)
        target = spec.inputs.get(loss.target)
        if target is not None and target.classes is not None:
            labels.setdefault(loss.target, i)
    if len(labels) > 1:
        first, second = list(labels)[:2]
        errors.add("E-LOSS", f"the losses read two label inputs ('{first}' and '{second}'); a plan stages one "
                   "label per sample", loss_path(spec, labels[second]) + ("target",),
                   f"read '{first}' in every classification loss, or feed the other one as one-hot floats to mse")


def _check_loss(loss, at: tuple, spec, by_name: dict[str, Node], inputs, instances: dict,
                errors: _Collector) -> None:
    if loss.input not in by_name:
        if loss.input in inputs:
            hint = "the loss reads a layer's output"
        else:  # the layers of the top level: a loss cannot read inside a block instance
            hint = did_you_mean(loss.input, [name for name, node in by_name.items() if node.instance is None], "layers")
        errors.add("E-REF", f"loss input '{loss.input}' is not a layer", at + ("input",), hint)
        return
    if loss.target not in spec.inputs:
        errors.add("E-REF", f"loss target '{loss.target}' is not an input", at + ("target",),
                   did_you_mean(loss.target, list(spec.inputs), "inputs"))
        return
    shape = by_name[loss.input].shape
    if shape is None:
        return
    target = spec.inputs[loss.target]
    if target.indices is not None:
        errors.add("E-LOSS", f"loss target '{loss.target}' is an index input (`indices`), not a target",
                   at + ("target",), "a class label is `{shape: [], dtype: int64, classes: N}`")
        return
    if loss.op in ("cross_entropy", "nll"):
        if target.dtype != "int64":
            errors.add("E-LOSS", f"{loss.op} needs an int64 label target, '{loss.target}' is {target.dtype}",
                       at + ("target",), "declare the label as `{shape: [], dtype: int64, classes: N}`")
        else:
            _check_scores(loss, at, shape, target, errors)
        made_by = _producer(by_name, instances, loss.input)
        producer = REGISTRY[made_by.op]
        if loss.op == "nll" and not producer.is_(LOG_PROBABILITIES):
            errors.add("E-LOSS", f"nll reads log-probabilities but '{loss.input}' is a {_made_by_text(made_by)}",
                       at + ("input",), "add `{op: log_softmax}` before the loss, or use cross_entropy on logits")
        if loss.op == "cross_entropy" and producer.is_(PROBABILITIES):
            errors.add("E-LOSS", f"cross_entropy applies softmax itself but '{loss.input}' is a "
                       f"{_made_by_text(made_by)}", at + ("input",),
                       "feed the logits (the layer before), or use nll after log_softmax")
    else:  # mse
        if target.dtype == "int64" and target.shape:
            errors.add("E-LOSS", f"mse reads one label per sample, but target '{loss.target}' has a label at each "
                       f"of {target.shape[0]} steps", at + ("target",),
                       "use cross_entropy for a label at every step (mean over every step of every sample)")
        elif target.dtype == "int64":
            if len(shape) != 1 or shape[0] != target.classes:
                errors.add("E-LOSS", f"mse with integer target '{loss.target}' ({target.classes} classes, "
                           f"one-hot encoded) needs input shape [{target.classes}], got {list(shape)}",
                           at + ("input",))
        elif tuple(target.shape) != shape:
            errors.add("E-LOSS", f"mse input '{loss.input}' has shape {list(shape)} but target "
                       f"'{loss.target}' has {list(target.shape)}", at + ("target",))


def _check_scores(loss, at: tuple, shape: tuple, target, errors: _Collector) -> None:
    """A classifier's scores against its labels: [C] for a label per sample (shape []), [T, C] for a label
    at each of T steps (shape [T]): a loss at every step of a sequence."""
    classes = target.classes
    if target.shape:  # a label at every step
        steps = target.shape[0]
        if len(shape) != 2 or shape[0] != steps:
            per = "one score vector per sample" if len(shape) == 1 else f"{shape[0]} steps" if len(shape) == 2 else ""
            errors.add("E-LOSS", f"{loss.op} input '{loss.input}' has shape {list(shape)}"
                       + (f" ({per})" if per else "") + f" but target '{loss.target}' has a label at each of "
                       f"{steps} steps", at + ("input",),
                       f"score every step: [{steps}, {classes}] (a recurrent layer with `sequences: true`, then a "
                       "linear); or declare the target {shape: []} for one label per sample")
        elif shape[1] != classes:
            errors.add("E-LOSS", f"{loss.op} input '{loss.input}' has shape {list(shape)} but target "
                       f"'{loss.target}' has {classes} classes", at + ("input",),
                       f"the last layer should produce [{steps}, {classes}] values (one per class at every step)")
    elif len(shape) != 1 or shape[0] != classes:
        hint = f"the last layer should produce [{classes}] values (one per class)"
        if len(shape) == 2 and shape[1] == classes:
            hint = (f"a label at every step is declared `{{shape: [{shape[0]}], dtype: int64, classes: {classes}}}`; "
                    "for one per sample, score one step (`{op: select, index: -1}`) or the last state")
        errors.add("E-LOSS", f"{loss.op} input '{loss.input}' has shape {list(shape)} but target "
                   f"'{loss.target}' has {classes} classes", at + ("input",), hint)


def _producer(by_name: dict[str, Node], instances: dict, tensor: str) -> Node:
    """The node that computes `tensor`: for a block instance's output, the block's output layer."""
    node = by_name[tensor]
    while node.name in instances:  # the identity that names an instance's output
        node = by_name[node.inputs[0]]
    return node


def _made_by_text(node: Node) -> str:
    return node.op if node.instance is None else f"{node.op} (layer '{node.name}')"


def _check_monitors(spec, errors: _Collector) -> None:
    """The metrics early stopping, best checkpoints and a plateau schedule watch must be ones a run records."""
    train = spec.train
    watched = [(("train", "early_stop", "monitor"), train.early_stop.monitor)] if train.early_stop else []
    if train.checkpoints is not None and train.checkpoints.best is not None:
        watched.append((("train", "checkpoints", "best"), train.checkpoints.best))
    schedule = getattr(spec.optimizer, "schedule", None)
    if schedule is not None and schedule.type == "plateau":
        watched.append((("optimizer", "schedule", "monitor"), schedule.monitor))
    has_eval = spec.data is not None and spec.data.eval is not None
    first = spec.losses[0]  # accuracy is the first loss's
    target = spec.inputs.get(first.target)
    has_accuracy = first.op != "mse" or (target is not None and target.classes is not None)
    if train.top_k is not None:
        classes = target.classes if target is not None else None
        if not has_accuracy or not has_eval:
            errors.add("E-TRAIN", "top-k accuracy is recorded on the eval data of a classifier"
                       + ("" if has_eval else ", and the spec has no data.eval"), ("train", "top_k"),
                       "add `data: {eval: ...}`" if has_accuracy else "it needs a loss with classes")
        elif classes is not None and train.top_k > classes:
            errors.add("E-TRAIN", f"top_k {train.top_k} exceeds the {classes} classes", ("train", "top_k"),
                       f"choose a k below {classes}")
    for path, metric in watched:
        if metric.startswith("eval_") and not has_eval:
            errors.add("E-TRAIN", f"{metric} is recorded only with eval data, and the spec has no data.eval",
                       path, "add `data: {eval: ...}`, or watch " + metric.replace("eval_", "train_"))
        elif metric.endswith("_accuracy") and not has_accuracy:
            errors.add("E-TRAIN", f"{metric} needs class labels, but the loss is mse on a float target",
                       path, "watch " + metric.replace("_accuracy", "_loss"))


def _check_reachability(spec, nodes: list[Node], by_name: dict[str, Node], inputs, errors: _Collector) -> None:
    """Every layer feeds the loss and every input is used: dead parts are typos, not intent."""
    if any(loss.input not in by_name or loss.target not in inputs for loss in spec.losses):
        return
    if any(d.code == "E-TYPE" for d in errors.diagnostics):
        return  # a layer reads the wrong tensor: what it meant to read would be reported as dead
    live = set()
    stack = [loss.input for loss in spec.losses]
    while stack:
        name = stack.pop()
        if name in live:
            continue
        live.add(name)
        if name in by_name:
            stack.extend(by_name[name].inputs)
    live.update(loss.target for loss in spec.losses)
    read = " and ".join(f"'{loss.input}'" for loss in spec.losses)
    for node in nodes:
        if node.name not in live and node.instance is None:  # a block's own dead layers: blocks.dead_parts
            errors.add("E-DEAD", f"layer '{node.name}' does not lead to the loss", ("layers", node.index),
                       f"its output is never used; the loss{'es' if len(spec.losses) > 1 else ''} read{'' if len(spec.losses) > 1 else 's'} {read}")
    for name in inputs:
        if name not in live:
            errors.add("E-DEAD", f"input '{name}' is never used", ("inputs", name), key=True)
