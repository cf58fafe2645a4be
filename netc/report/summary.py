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
  parameters are value + gradient + the optimizer's state tensors.
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

    @property
    def counted(self) -> bool:
        """Whether this row's params count toward the total (owners only)."""
        return self.shares is None


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

    @property
    def total_bytes(self) -> int:
        return self.activation_bytes + self.parameter_bytes

    @property
    def has_sharing(self) -> bool:
        return any(row.shares for row in self.layers)


def summarize(graph, batch: int | None = None) -> Summary:
    """Rows and totals of a typed graph; `batch` defaults to the spec's train.batch."""
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
        )
        for node in graph.nodes
    )
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
    )


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
    if summary.has_sharing:
        notes.append("(params) in parentheses use the tensors of the layer in 'shared with'; they are counted once.")
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
        for row in summary.layers
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
            }
            for row in summary.layers
        ],
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


def to_json(summary: Summary) -> str:
    return json.dumps(summary_dict(summary), indent=2)
