"""Summaries of a typed graph and results of spec validation, as data and as text.

Pure functions over `netc.graph.Graph`: the CLI (`netc inspect`, `netc validate`)
only picks a renderer, and the Python API can call the same ones.

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

import contextlib
import gc
import glob
import re
import json
from dataclasses import dataclass
from pathlib import Path

from netc.errors import Diagnostic, NetcError
from netc.graph.memory import check_memory, estimate, human_bytes, optimizer_slots
from netc.ops.base import Shape, numel

MULT_ADDS_CONVENTION = (
    "multiply-accumulates of linear/conv weights per sample (bias, activations and pooling not counted), as torchinfo"
)
SPEC_SUFFIXES = (".yaml", ".yml")


# --------------------------------------------------------------------------- summary data


@dataclass(frozen=True)
class InputRow:
    name: str
    shape: Shape
    dtype: str  # float32 or int64
    classes: int | None  # for int64 label inputs


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
class Summary:
    name: str
    description: str
    inputs: tuple[InputRow, ...]
    layers: tuple[LayerRow, ...]
    loss_op: str
    loss_input: str
    loss_target: str
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
        InputRow(name, tuple(inp.shape), inp.dtype, inp.classes) for name, inp in spec.inputs.items()
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
        loss_op=spec.loss.op,
        loss_input=spec.loss.input,
        loss_target=spec.loss.target,
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
    return "label" if row.dtype == "int64" else "input"


def input_shape_text(row: InputRow) -> str:
    return shape_text(row.shape) + (f" ({row.classes} classes)" if row.dtype == "int64" else "")


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
    return f"{summary.loss_op}({summary.loss_input}, {summary.loss_target})"


# --------------------------------------------------------------------------- renderings


def summary_dict(summary: Summary) -> dict:
    """Plain data for `--format json`."""
    return {
        "name": summary.name,
        "description": summary.description,
        "inputs": [
            {"name": row.name, "shape": list(row.shape), "dtype": row.dtype, "classes": row.classes}
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
        "loss": {"op": summary.loss_op, "input": summary.loss_input, "target": summary.loss_target},
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


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|") if text else " "


def to_markdown(summary: Summary) -> str:
    lines = [f"### {summary.name}", ""]
    if summary.description:
        lines += [summary.description, ""]
    lines.append("| " + " | ".join(layer_columns(summary)) + " |")
    right = set(_RIGHT)
    lines.append("|" + "|".join("---:" if col in right else "---" for col in layer_columns(summary)) + "|")
    for row in table_rows(summary):
        lines.append("| " + " | ".join(_md_cell(cell) for cell in row) + " |")
    lines.append("")
    for label, value, note in totals_lines(summary):
        lines.append(f"- **{label}:** {value}" + (f" ({note})" if note else ""))
    for note in footnotes(summary):
        lines += ["", note]
    return "\n".join(lines) + "\n"


# Graph drawings: inputs are ellipses/stadiums, layers boxes, the loss a diamond/hexagon.
# Every edge carries the shape of the tensor it moves; a layer that shares weights
# has a dashed edge to the owner; frozen layers are grey.

_INPUT_FILL = "#dbeafe"
_FROZEN_FILL = "#d9d9d9"
_LOSS_FILL = "#fde68a"


def _layer_lines(row: LayerRow) -> list[str]:
    lines = [f"{row.name}: {row.op}", shape_text(row.shape)]
    if row.params:
        lines.append(f"{count_text(row.params)} params" + (f", shares {row.shares}" if row.shares else ""))
    if row.trainable is False:
        lines.append("frozen")
    return lines


def _input_lines(row: InputRow) -> list[str]:
    return [row.name, input_shape_text(row)]


def _dot_label(lines: list[str]) -> str:
    escaped = [line.replace("\\", "\\\\").replace('"', '\\"') for line in lines]
    return '"' + "\\n".join(escaped) + '"'


def _dot_id(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(summary: Summary) -> str:
    """Graphviz DOT text (render with `dot -Tsvg`)."""
    shapes = {row.name: row.shape for row in summary.inputs}
    shapes.update({row.name: row.shape for row in summary.layers})
    loss_id = _dot_id("(loss)")
    out = [
        f"digraph {_dot_id(summary.name)} {{",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for row in summary.inputs:
        out.append(f"  {_dot_id(row.name)} [shape=ellipse, fillcolor=\"{_INPUT_FILL}\", "
                   f"label={_dot_label(_input_lines(row))}];")
    for row in summary.layers:
        attrs = [f"label={_dot_label(_layer_lines(row))}"]
        if row.trainable is False:
            attrs.append(f'fillcolor="{_FROZEN_FILL}", fontcolor="#555555"')
        if row.shares:
            attrs.append('style="rounded,filled,dashed"')
        out.append(f"  {_dot_id(row.name)} [{', '.join(attrs)}];")
    out.append(f"  {loss_id} [shape=diamond, fillcolor=\"{_LOSS_FILL}\", label={_dot_label([summary.loss_op])}];")
    for row in summary.layers:
        for ref in row.inputs:
            out.append(f"  {_dot_id(ref)} -> {_dot_id(row.name)} [label={_dot_label([shape_text(shapes[ref])])}];")
    out.append(f"  {_dot_id(summary.loss_input)} -> {loss_id} "
               f"[label={_dot_label([shape_text(shapes[summary.loss_input])])}];")
    out.append(f"  {_dot_id(summary.loss_target)} -> {loss_id} [label={_dot_label(['target'])}];")
    for row in summary.layers:
        if row.shares:
            out.append(f"  {_dot_id(row.name)} -> {_dot_id(row.shares)} [style=dashed, color=\"#888888\", "
                       f"fontcolor=\"#888888\", constraint=false, label={_dot_label(['shares weights'])}];")
    out.append("}")
    return "\n".join(out) + "\n"


def _mm_text(lines: list[str]) -> str:
    # inside "..." mermaid reads entity codes; a double quote must be one
    return '"' + "<br/>".join(line.replace('"', "#quot;") for line in lines) + '"'


def to_mermaid(summary: Summary) -> str:
    """Mermaid flowchart text (GitHub renders ```mermaid blocks)."""
    # ids carry a prefix: a layer named `end` or `loss` must not clash with mermaid or the loss node
    ids = {row.name: f"in_{row.name}" for row in summary.inputs}
    ids.update({row.name: f"l_{row.name}" for row in summary.layers})
    shapes = {row.name: row.shape for row in summary.inputs}
    shapes.update({row.name: row.shape for row in summary.layers})
    out = ["flowchart TD"]
    for row in summary.inputs:
        out.append(f"  {ids[row.name]}([{_mm_text(_input_lines(row))}])")
    for row in summary.layers:
        out.append(f"  {ids[row.name]}[{_mm_text(_layer_lines(row))}]")
    out.append(f"  loss_{{{{{_mm_text([summary.loss_op])}}}}}")
    for row in summary.layers:
        for ref in row.inputs:
            out.append(f"  {ids[ref]} -->|{_mm_text([shape_text(shapes[ref])])}| {ids[row.name]}")
    out.append(f"  {ids[summary.loss_input]} -->|{_mm_text([shape_text(shapes[summary.loss_input])])}| loss_")
    out.append(f"  {ids[summary.loss_target]} -->|{_mm_text(['target'])}| loss_")
    for row in summary.layers:
        if row.shares:
            out.append(f"  {ids[row.name]} -.->|{_mm_text(['shares weights'])}| {ids[row.shares]}")
    out.append(f"  classDef input fill:{_INPUT_FILL},stroke:#3b82f6")
    out.append(f"  classDef loss fill:{_LOSS_FILL},stroke:#b45309")
    out.append(f"  classDef frozen fill:{_FROZEN_FILL},stroke:#777777,color:#444444")
    out.append("  classDef shared stroke-dasharray:5 5")
    out.append("  class " + ",".join(ids[row.name] for row in summary.inputs) + " input")
    out.append("  class loss_ loss")
    frozen = [ids[row.name] for row in summary.layers if row.trainable is False]
    if frozen:
        out.append("  class " + ",".join(frozen) + " frozen")
    shared = [ids[row.name] for row in summary.layers if row.shares]
    if shared:
        out.append("  class " + ",".join(shared) + " shared")
    return "\n".join(out) + "\n"


def summary_renderable(summary: Summary):
    """A rich renderable: the layer table, then the totals."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    totals = Table.grid(padding=(0, 2))
    totals.add_column(style="bold", no_wrap=True)
    totals.add_column(justify="right", no_wrap=True)
    totals.add_column(style="dim")
    for label, value, note in totals_lines(summary):
        totals.add_row(Text(label + ":"), Text(value), Text(note))
    notes = [Text(note, style="yellow" if note.startswith("Warning") else "dim") for note in footnotes(summary)]
    return Group(_LayerTable(summary), Text(""), totals, Text(""), *notes)


_RIGHT = ("params", STATE_COLUMN, "mult-adds")
_WRAPS = ("inputs", "output shape", "shared with", "trainable")  # on a narrow terminal


class _LayerTable:
    """The layer table: rich's Table, or the same lines written directly when nothing wraps.

    rich's Table lays out about a row per millisecond, minutes for a 100k-layer spec. When every
    cell fits on one line (always when piped) its layout is simple and written here: columns as
    wide as their widest cell, one space of padding between cells (none at the edges), a space as
    divider, a rule under the header and a blank line after the inputs. Otherwise (a narrow
    terminal) rich's Table lays it out. tests/test_scale.py compares the two.
    """

    def __init__(self, summary: Summary):
        self.title = f"netc: {summary.name}"
        self.columns = layer_columns(summary)
        self.rows = table_rows(summary)
        self.styles = ["cyan"] * len(summary.inputs) + ["dim" if row.trainable is False else ""
                                                         for row in summary.layers]
        self.inputs = len(summary.inputs)
        self.pads = [1] * (len(self.columns) - 1) + [0]  # right padding; collapsed between cells, none at the edge
        columns = [list(cells) for cells in zip(self.columns, *self.rows)]  # the header first
        self.widths = [max(map(len, cells)) for cells in columns]  # the widest text, without padding
        self.words = [max(map(len, " ".join(cells).split())) for cells in columns]  # the longest word
        # ASCII text: a character is a terminal cell, so len() is the width rich measures
        self.ascii = self.title.isascii() and all("".join(cells).isascii() for cells in columns)
        self.width = sum(self.widths) + sum(self.pads) + len(self.columns) - 1  # dividers

    def rich_table(self):
        """The same table laid out by rich's Table, which wraps cells to fit a narrow terminal."""
        from rich import box
        from rich.table import Table
        from rich.text import Text

        table = Table(title=self.title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                      show_edge=False, pad_edge=False, collapse_padding=True)
        for col in self.columns:
            wraps = col in _WRAPS
            table.add_column(col, justify="right" if col in _RIGHT else "left", overflow="fold", no_wrap=not wraps,
                             min_width=min(len(col), 9) if wraps else None)
        for row, style in zip(self.rows, self.styles):
            table.add_row(*(Text(cell) for cell in row), style=style)
        if self.inputs:
            table.rows[self.inputs - 1].end_section = True
        return table

    def _fits(self, options) -> bool:
        """Whether rich's Table would draw this without wrapping a cell, in its Unicode box."""
        return (self.ascii and self.width <= options.max_width and len(self.title) <= self.width
                and not options.ascii_only and not options.legacy_windows)

    def __rich_measure__(self, console, options):
        from rich.measure import Measurement

        if not self._fits(options):
            return Measurement.get(console, options, self.rich_table())
        minimum = [max(word, min(len(col), 9) if col in _WRAPS else 0) + pad
                   for word, col, pad in zip(self.words, self.columns, self.pads)]
        return Measurement(sum(minimum) + len(self.columns) - 1, self.width)

    def __rich_console__(self, console, options):
        from rich.segment import Segment

        if not self._fits(options):
            yield self.rich_table()
            return
        line = Segment.line()
        yield Segment(self.title.ljust(self.width), console.get_style("table.title"))
        yield line
        yield from self._row(console, self.columns, "bold")
        yield line
        yield Segment("\u2500" * self.width)
        yield line
        for index, (row, style) in enumerate(zip(self.rows, self.styles)):
            yield from self._row(console, row, style)
            yield line
            if index == self.inputs - 1 and index < len(self.rows) - 1:  # the end of the inputs section
                yield Segment(" " * self.width)
                yield line

    def _row(self, console, cells, style: str):
        """A row as rich's Table writes it: each cell and its padding in the row's style, plain dividers."""
        from rich.segment import Segment

        texts = [cell.rjust(width) if col in _RIGHT else cell.ljust(width)
                 for cell, col, width in zip(cells, self.columns, self.widths)]
        if console.color_system is None:  # no styles are written: the row as one segment is the same text
            yield Segment(" ".join(text + " " * pad for text, pad in zip(texts, self.pads)))
            return
        style = console.get_style(style) if style else None
        for i, (text, pad) in enumerate(zip(texts, self.pads)):
            if i:
                yield Segment(" ")  # the divider
            yield Segment(text, style)
            if pad:
                yield Segment(" " * pad, style)


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class FileResult:
    file: str
    diagnostics: tuple[Diagnostic, ...]

    @property
    def valid(self) -> bool:
        return not self.diagnostics


def _has_magic(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


def _spec_files_in(folder: Path) -> list[Path]:
    """*.yaml/*.yml under `folder`, recursively, skipping hidden folders (.git, .venv)."""
    found = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if any(part.startswith(".") for part in parts[:-1]):
            continue
        if path.suffix.lower() in SPEC_SUFFIXES and path.is_file():
            found.append(path)
    return found


def find_spec_files(patterns: list[str]) -> tuple[list[str], list[str]]:
    """Expand files, folders and globs into spec files (each once, in order).

    Returns (files, patterns that matched nothing). A plain path that does not
    exist is kept as a file, so that validating it reports E-FILE.
    """
    files: list[str] = []
    seen: set[Path] = set()
    unmatched: list[str] = []

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(str(path))

    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = _spec_files_in(path)
        elif _has_magic(pattern) and not path.exists():
            found = []
            for match in sorted(glob.glob(pattern, recursive=True)):
                match_path = Path(match)
                if match_path.is_dir():
                    found.extend(_spec_files_in(match_path))
                elif match_path.is_file():
                    found.append(match_path)
        else:
            found = [path]
        if not found:
            unmatched.append(pattern)
        for each in found:
            add(each)
    return files, unmatched


@contextlib.contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector while one spec is read and reported.

    A spec makes many objects and almost no garbage cycles (a dozen, whatever its size), but each
    full collection walks every live object: with it on, a 100k-layer spec takes ~2x as long per layer
    as a 1k-layer one. The collector runs again as before when the block ends.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def validate_file(path: str | Path) -> FileResult:
    """Load a spec and build its graph; every error found, never an exception."""
    from netc.graph import build_graph
    from netc.spec import load_spec

    try:
        with gc_paused():
            build_graph(load_spec(path))
    except NetcError as exc:
        return FileResult(str(path), tuple(exc.diagnostics))
    return FileResult(str(path), ())


_SPEC_KEY = re.compile(rb"^netc[ \t]*:", re.MULTILINE)


def is_spec_file(path: str | Path) -> bool:
    """A YAML file with a top-level `netc:` key (a text check: a spec that does not parse still counts).
    A file that cannot be read counts too, so that validating it reports why."""
    try:
        return bool(_SPEC_KEY.search(Path(path).read_bytes()))
    except OSError:
        return True


def validation_summary(results: list[FileResult], skipped: int = 0) -> str:
    """'9 specs: 8 valid, 1 invalid (3 errors)', and '; 2 YAML files without netc: skipped'"""
    total = len(results)
    invalid = sum(not r.valid for r in results)
    errors = sum(len(r.diagnostics) for r in results)
    text = f"{total} spec{'s' if total != 1 else ''}: {total - invalid} valid, {invalid} invalid"
    if errors:
        text += f" ({errors} error{'s' if errors != 1 else ''})"
    if skipped:
        text += f"; {skipped} YAML file{'s' if skipped != 1 else ''} without 'netc:' skipped"
    return text


def validation_dict(results: list[FileResult], skipped: list[str] | None = None) -> dict:
    invalid = sum(not r.valid for r in results)
    skipped = skipped or []
    return {
        "skipped": skipped,
        "files": [
            {"file": r.file, "valid": r.valid, "errors": [d.as_dict() for d in r.diagnostics]} for r in results
        ],
        "summary": {
            "specs": len(results),
            "valid": len(results) - invalid,
            "invalid": invalid,
            "errors": sum(len(r.diagnostics) for r in results),
            "text": validation_summary(results, len(skipped)),
        },
    }


def _gh_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_property(text: str) -> str:
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotation(diag: Diagnostic) -> str:
    """A GitHub Actions workflow command: `::error file=F,line=L,col=C,title=CODE::message`."""
    props = [f"file={_gh_property(diag.location.file)}"]
    if diag.location.line:
        props.append(f"line={diag.location.line}")
        if diag.location.col:
            props.append(f"col={diag.location.col}")
    props.append(f"title={_gh_property(diag.code)}")
    message = diag.message + (f" (at {diag.path})" if diag.path else "")
    if diag.hint:
        message += f"\nhint: {diag.hint}"
    return f"::error {','.join(props)}::{_gh_data(message)}"


def spec_schema() -> dict:
    """The JSON Schema of a spec, generated from `netc.spec.models.Spec` (for editors)."""
    from netc.spec.models import FORMAT_VERSION, Spec

    schema = Spec.model_json_schema()
    return {
        # pydantic emits only draft-07 keywords ($defs is reached by plain JSON pointers), and
        # yaml-language-server / VS Code YAML fully support draft-07, not yet 2020-12
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": f"netc spec (format version {FORMAT_VERSION})",
        **{key: value for key, value in schema.items() if key != "title"},
    }
