"""The summary of a typed graph as data: rows, totals and their text cells, shared by every renderer.

Pure functions over `netc.graph.Graph`, so that `netc inspect`, the Python API and the
renderers (netc.report.table, netc.report.diagrams) show the same numbers.

Conventions (stated in every rendering that shows them):
- shapes exclude the batch dimension;
- a tensor shared by several layers (`share:`) is counted once, under its owner;
- mult-adds are the multiply-accumulates of linear/conv weights per sample
  (bias additions, activations and pooling are not counted), as torchinfo's
  "Mult-Adds";
- memory is `netc.graph.memory.estimate`: activations are every input and layer
  output plus its gradient for one training step of `batch` samples;
  parameters are value + gradient + the optimizer's state tensors;
- a block instance is one row (its layers' params, state and mult-adds summed) unless the
  summary is expanded; `layers` and the JSON always hold every layer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from netc.graph.memory import check_memory, estimate, human_bytes, optimizer_slots
from netc.ops.base import Shape, numel

MULT_ADDS_CONVENTION = (
    "multiply-accumulates of linear/conv weights per sample (bias, activations and pooling not counted), as torchinfo"
)


# --------------------------------------------------------------------------- summary data


@dataclass(frozen=True)
class InputRow:
    name: str
    shape: Shape
    dtype: str  # float32 or int64
    classes: int | None  # for int64 label inputs
    indices: int | None = None  # for int64 index inputs (what an embedding reads)


@dataclass(frozen=True)
class LayerRow:
    name: str
    op: str
    inputs: tuple[str, ...]
    shape: Shape  # output, without batch
    param_shapes: dict[str, Shape]
    params: int  # elements of the tensors this layer uses
    shares: str | None  # the owner whose tensors this layer uses; its params are not counted again
    shared_by: tuple[str, ...]  # layers that use this layer's tensors
    trainable: bool | None  # None when the layer has no parameters
    lr_mult: float
    mult_adds: int  # per sample
    state: int = 0  # elements of state tensors (running statistics): kept, checkpointed, never trained
    part_of: str | None = None  # the (top-level) block instance whose layers include this one

    @property
    def counted(self) -> bool:
        """Whether this row's params count toward the total (owners only)."""
        return self.shares is None


@dataclass(frozen=True)
class InstanceRow:
    """A block instance of the top level (`{op: block}`): its output is the layer row of its name."""

    name: str
    block: str
    repeat: int
    share: bool
    inputs: tuple[str, ...] = ()  # the tensors it reads
    scan: bool = False  # a scan (`{op: scan}`): its block runs at every step of its sequences

    @property
    def op_text(self) -> str:
        """`block resblock`, `block resblock x3`, `block step x4 shared`, `scan lstm_cell` (ASCII, as the
        table's `lr x0.1`)."""
        if self.scan:
            return f"scan {self.block}"
        return f"block {self.block}" + f" x{self.repeat}" * (self.repeat > 1) + " shared" * self.share


@dataclass(frozen=True)
class LossRow:
    op: str
    input: str
    target: str
    weight: float


@dataclass(frozen=True)
class Summary:
    name: str
    description: str
    inputs: tuple[InputRow, ...]
    layers: tuple[LayerRow, ...]
    losses: tuple[LossRow, ...]  # the first one gives predictions and accuracy
    total_params: int  # shared tensors counted once
    trainable_params: int
    frozen_params: int
    state_count: int  # elements of state tensors (running statistics), not parameters
    mult_adds: int  # per sample
    batch: int
    dtype: str
    optimizer: str
    optimizer_slots: int
    activation_bytes: int
    parameter_bytes: int  # parameters + gradients + optimizer state
    memory_warning: str | None = None  # set when one training step would not fit this machine
    instances: tuple[InstanceRow, ...] = ()  # the block instances of the top level, in spec order
    expanded: bool = False  # tables show every layer of a block instance, not one row per instance

    @property
    def total_bytes(self) -> int:
        return self.activation_bytes + self.parameter_bytes

    @property
    def has_sharing(self) -> bool:
        return any(row.shares for row in self.layers)

    @property
    def folded(self) -> bool:
        """Whether tables show block instances as one row each."""
        return bool(self.instances) and not self.expanded

    @property
    def shown_layers(self) -> tuple[LayerRow, ...]:
        """The layer rows a table shows: every layer, or each block instance folded into one row."""
        return fold(self.layers, self.instances) if self.folded else self.layers


def summarize(graph, batch: int | None = None, expand: bool = False) -> Summary:
    """Rows and totals of a typed graph; `batch` defaults to the spec's train.batch; `expand`:
    tables show every layer of a block instance (else one row per instance)."""
    spec = graph.spec
    batch = batch if batch is not None else spec.train.batch
    shared_by: dict[str, list[str]] = {}
    for node in graph.nodes:
        if node.owner is not None:
            shared_by.setdefault(node.owner, []).append(node.name)
    inputs = tuple(
        InputRow(name, tuple(inp.shape), inp.dtype, inp.classes, inp.indices) for name, inp in spec.inputs.items()
    )
    layers = tuple(
        LayerRow(
            name=node.name,
            op=node.op,
            inputs=tuple(node.inputs),
            shape=tuple(node.shape),
            param_shapes=dict(node.param_shapes),
            params=sum(numel(shape) for shape in node.param_shapes.values()),
            shares=node.owner,
            shared_by=tuple(shared_by.get(node.name, ())),
            trainable=node.trainable if node.param_shapes else None,
            lr_mult=node.lr_mult,
            mult_adds=node.macs,
            state=sum(numel(t.shape) for t in node.state.values()),
            part_of=node.instance.root.name if node.instance is not None else None,
        )
        for node in graph.nodes
    )
    instances = tuple(InstanceRow(inst.name, inst.block, inst.repeat, inst.share, inst.inputs, inst.scan)
                      for inst in graph.instances.values() if inst.parent is None)
    memory = estimate(graph, batch)
    return Summary(
        name=spec.name,
        description=spec.description.strip(),
        inputs=inputs,
        layers=layers,
        losses=tuple(LossRow(loss.op, loss.input, loss.target, loss.weight) for loss in spec.losses),
        total_params=graph.param_count(),
        trainable_params=graph.param_count(trainable=True),
        frozen_params=graph.param_count(trainable=False),
        state_count=graph.state_count(),
        mult_adds=graph.macs,
        batch=batch,
        dtype=spec.train.dtype,
        optimizer=spec.optimizer.type,
        optimizer_slots=optimizer_slots(spec.optimizer),
        activation_bytes=memory.activations,
        parameter_bytes=memory.parameters,
        memory_warning=check_memory(graph, batch),
        instances=instances,
        expanded=expand,
    )


def fold(layers: tuple[LayerRow, ...], instances: tuple[InstanceRow, ...]) -> tuple[LayerRow, ...]:
    """The rows with each block instance as one: named as the instance (its output tensor), op
    `block <name> xN`, the instance's inputs, its output shape, its layers' params (each tensor
    once), state and mult-adds summed, in the place of its output."""
    by_name = {instance.name: instance for instance in instances}
    parts: dict[str, list[LayerRow]] = {}
    for row in layers:
        if row.part_of is not None:
            parts.setdefault(row.part_of, []).append(row)
    rows = []
    for row in layers:
        if row.part_of is not None:
            continue
        instance = by_name.get(row.name)
        if instance is None:
            rows.append(row)
            continue
        inside = parts.get(row.name, [])
        owners = [part for part in inside if part.param_shapes and part.counted]
        modes = {(part.trainable, part.lr_mult) for part in owners}
        # one mode: that one; none (no parameters): blank; mixed: trainable (--expand tells them apart)
        trainable, lr_mult = modes.pop() if len(modes) == 1 else ((None, 1.0) if not modes else (True, 1.0))
        rows.append(LayerRow(
            name=row.name, op=instance.op_text, inputs=instance.inputs, shape=row.shape, param_shapes={},
            params=sum(part.params for part in owners), shares=None, shared_by=(), trainable=trainable,
            lr_mult=lr_mult, mult_adds=sum(part.mult_adds for part in inside),
            state=sum(part.state for part in inside)))
    return tuple(rows)


# --------------------------------------------------------------------------- small text helpers


def shape_text(shape: Shape) -> str:
    return "[" + ", ".join(str(size) for size in shape) + "]"


def count_text(count: int) -> str:
    return f"{count:,}"


def si_text(count: int) -> str:
    """2293000 -> '2.29 M' (decimal units, as torchinfo)."""
    if count >= 10**15:  # exact ints from a spec may not fit a float
        digits = str(int(count))
        return f"{digits[0]}.{digits[1:3]}e{len(digits) - 1}"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(count) >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count:.0f}"


def input_kind(row: InputRow) -> str:
    return "label" if row.classes is not None else "indices" if row.indices is not None else "input"


def input_shape_text(row: InputRow) -> str:
    if row.indices is not None:
        return shape_text(row.shape) + f" (indices < {row.indices})"
    return shape_text(row.shape) + (f" ({row.classes} classes)" if row.classes is not None else "")


def trainable_text(row: LayerRow) -> str:
    if row.trainable is None:
        return ""
    if not row.trainable:
        return "no (frozen)"
    return "yes" if row.lr_mult == 1.0 else f"yes (lr x{row.lr_mult:g})"


def params_text(row: LayerRow) -> str:
    if not row.params:
        return "--"
    return count_text(row.params) if row.counted else f"({count_text(row.params)})"


def shared_text(row: LayerRow) -> str:
    if row.shares:
        return f"uses {row.shares}"
    if row.shared_by:
        return "used by " + ", ".join(row.shared_by)
    return ""


def mult_adds_text(row: LayerRow) -> str:
    return count_text(row.mult_adds) if row.mult_adds else "--"


def totals_lines(summary: Summary) -> list[tuple[str, str, str]]:
    """(label, value, short note) lines shown under the table; `footnotes` explain them."""
    slots = summary.optimizer_slots
    return [
        ("Total params", count_text(summary.total_params),
         "shared tensors counted once" if summary.has_sharing else ""),
        ("Trainable params", count_text(summary.trainable_params), ""),
        ("Frozen params", count_text(summary.frozen_params), "trainable: false" if summary.frozen_params else ""),
        *([("State (not trained)", count_text(summary.state_count), "running statistics, checkpointed")]
          if summary.state_count else []),
        ("Mult-adds per sample", f"{si_text(summary.mult_adds)} ({count_text(summary.mult_adds)})",
         f"x{summary.batch} = {si_text(summary.mult_adds * summary.batch)} per batch"),
        ("Activation memory", human_bytes(summary.activation_bytes),
         f"batch {summary.batch}: outputs + gradients"),
        ("Params + grads + optimizer", human_bytes(summary.parameter_bytes),
         f"{summary.optimizer}: {slots} state tensor{'s' if slots != 1 else ''} per param"),
        ("Training memory (est.)", human_bytes(summary.total_bytes), f"batch {summary.batch}, {summary.dtype}"),
    ]


def footnotes(summary: Summary) -> list[str]:
    notes = [f"Loss: {loss_text(summary)}. Shapes exclude the batch dimension."]
    if summary.has_sharing and not (summary.folded and all(row.part_of for row in summary.layers if row.shares)):
        notes.append("(params) in parentheses use the tensors of the layer in 'shared with'; they are counted once.")
    if summary.folded:
        notes.append("A block instance is one row: its layers' params (a shared tensor once) and mult-adds summed; "
                     "`netc inspect --expand` shows its layers.")
    notes.append(f"Mult-adds: {MULT_ADDS_CONVENTION}.")
    notes.append("Memory: every input and layer output plus its gradient for one training step, "
                 "and parameters with their gradients and optimizer state (netc.graph.memory.estimate).")
    if summary.memory_warning:
        notes.append(f"Warning: {summary.memory_warning}")
    return notes


COLUMNS = ("layer", "op", "inputs", "output shape", "params", "shared with", "trainable", "mult-adds")
STATE_COLUMN = "state"  # after "params", in specs with state tensors only


def layer_columns(summary: Summary) -> tuple[str, ...]:
    if not summary.state_count:
        return COLUMNS
    at = COLUMNS.index("params") + 1
    return COLUMNS[:at] + (STATE_COLUMN,) + COLUMNS[at:]


def table_rows(summary: Summary) -> list[tuple[str, ...]]:
    """One text row per input and layer, in the order of layer_columns(summary)."""
    with_state = bool(summary.state_count)
    rows = [(row.name, input_kind(row), "", input_shape_text(row), "", *([""] if with_state else []), "", "", "")
            for row in summary.inputs]
    rows += [
        (row.name, row.op, ", ".join(row.inputs), shape_text(row.shape), params_text(row),
         *([count_text(row.state) if row.state else "--"] if with_state else []), shared_text(row),
         trainable_text(row), mult_adds_text(row))
        for row in summary.shown_layers
    ]
    return rows


def loss_text(summary: Summary) -> str:
    """`cross_entropy(fc2, label)`; several losses as their weighted sum."""
    def one(row: LossRow) -> str:
        factor = "" if row.weight == 1.0 else f"{row.weight:g} × "
        return f"{factor}{row.op}({row.input}, {row.target})"

    return " + ".join(one(row) for row in summary.losses)


# --------------------------------------------------------------------------- as JSON


def summary_dict(summary: Summary) -> dict:
    """Plain data for `--format json`."""
    return {
        "name": summary.name,
        "description": summary.description,
        "inputs": [
            {"name": row.name, "shape": list(row.shape), "dtype": row.dtype, "classes": row.classes,
             **({"indices": row.indices} if row.indices is not None else {})}
            for row in summary.inputs
        ],
        "layers": [
            {
                "name": row.name,
                "op": row.op,
                "inputs": list(row.inputs),
                "output_shape": list(row.shape),
                "param_shapes": {key: list(shape) for key, shape in row.param_shapes.items()},
                "params": row.params,
                "counted": row.counted,
                "shares": row.shares,
                "shared_by": list(row.shared_by),
                "trainable": row.trainable,
                "lr_mult": row.lr_mult,
                "mult_adds": row.mult_adds,
                "state": row.state,
                **({"part_of": row.part_of} if row.part_of is not None else {}),
            }
            for row in summary.layers
        ],
        **({"blocks": _instances_dict(summary)} if summary.instances else {}),
        "losses": [{"op": row.op, "input": row.input, "target": row.target, "weight": row.weight}
                   for row in summary.losses],
        "totals": {
            "params": summary.total_params,
            "trainable_params": summary.trainable_params,
            "frozen_params": summary.frozen_params,
            "state": summary.state_count,
            "mult_adds_per_sample": summary.mult_adds,
        },
        "memory": {
            "batch": summary.batch,
            "dtype": summary.dtype,
            "optimizer": summary.optimizer,
            "optimizer_slots": summary.optimizer_slots,
            "activation_bytes": summary.activation_bytes,
            "parameter_bytes": summary.parameter_bytes,
            "total_bytes": summary.total_bytes,
            "warning": summary.memory_warning,
        },
        "conventions": {
            "shapes": "without the batch dimension",
            "params": "a shared tensor is counted once, under its owner",
            "mult_adds": MULT_ADDS_CONVENTION,
        },
    }


def _instances_dict(summary: Summary) -> list[dict]:
    """Each block instance of the top level as its folded row shows it, with its layers' names."""
    rows = {row.name: row for row in fold(summary.layers, summary.instances)}
    members: dict[str, list[str]] = {}
    for row in summary.layers:
        if row.part_of is not None:
            members.setdefault(row.part_of, []).append(row.name)
    return [
        {"name": instance.name, "block": instance.block, "repeat": instance.repeat, "share": instance.share,
         "scan": instance.scan,
         "inputs": list(instance.inputs), "output_shape": list(rows[instance.name].shape),
         "params": rows[instance.name].params, "mult_adds": rows[instance.name].mult_adds,
         "state": rows[instance.name].state, "layers": members.get(instance.name, []) + [instance.name]}
        for instance in summary.instances
    ]


def to_json(summary: Summary) -> str:
    return json.dumps(summary_dict(summary), indent=2)
