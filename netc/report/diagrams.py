"""Drawings of the graph as text for other tools: Graphviz DOT and Mermaid.

Inputs are ellipses/stadiums, layers boxes, the loss a diamond/hexagon. Every edge carries
the shape of the tensor it moves; a layer that shares weights has a dashed edge to the
owner; frozen layers are grey.
"""

from __future__ import annotations

from netc.report.summary import InputRow, LayerRow, Summary, count_text, input_shape_text, shape_text

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
    out.append(f"  {loss_id} [shape=diamond, fillcolor=\"{_LOSS_FILL}\", label={_dot_label(_loss_lines(summary))}];")
    for row in summary.layers:
        for ref in row.inputs:
            out.append(f"  {_dot_id(ref)} -> {_dot_id(row.name)} [label={_dot_label([shape_text(shapes[ref])])}];")
    for read in _loss_inputs(summary):
        out.append(f"  {_dot_id(read)} -> {loss_id} [label={_dot_label([shape_text(shapes[read])])}];")
    for target in _loss_targets(summary):
        out.append(f"  {_dot_id(target)} -> {loss_id} [label={_dot_label(['target'])}];")
    for row in summary.layers:
        if row.shares:
            out.append(f"  {_dot_id(row.name)} -> {_dot_id(row.shares)} [style=dashed, color=\"#888888\", "
                       f"fontcolor=\"#888888\", constraint=false, label={_dot_label(['shares weights'])}];")
    out.append("}")
    return "\n".join(out) + "\n"


def _loss_lines(summary: Summary) -> list[str]:
    """The loss node's label: its op, or each weighted loss of several."""
    if len(summary.losses) == 1:
        return [summary.losses[0].op]
    return [f"{row.weight:g} × {row.op}({row.input})" for row in summary.losses]


def _loss_inputs(summary: Summary) -> list[str]:
    return [row.input for row in summary.losses]


def _loss_targets(summary: Summary) -> list[str]:
    return list(dict.fromkeys(row.target for row in summary.losses))  # a shared label: one edge


def _mm_text(lines: list[str]) -> str:
    # inside "..." mermaid reads entity codes; a double quote must be one
    return '"' + "<br/>".join(line.replace('"', "#quot;") for line in lines) + '"'


def to_mermaid(summary: Summary) -> str:
    """Mermaid flowchart text (GitHub renders ```mermaid blocks)."""
    # ids carry a prefix: a layer named `end` or `loss` must not clash with mermaid or the loss node
    # and no dots: a block's layers (`res.0.fc1`) would end mermaid's node ids
    ids = {row.name: f"in_{row.name}" for row in summary.inputs}
    ids.update({row.name: "l_" + row.name.replace(".", "_dot_") for row in summary.layers})
    shapes = {row.name: row.shape for row in summary.inputs}
    shapes.update({row.name: row.shape for row in summary.layers})
    out = ["flowchart TD"]
    for row in summary.inputs:
        out.append(f"  {ids[row.name]}([{_mm_text(_input_lines(row))}])")
    for row in summary.layers:
        out.append(f"  {ids[row.name]}[{_mm_text(_layer_lines(row))}]")
    out.append(f"  loss_{{{{{_mm_text(_loss_lines(summary))}}}}}")
    for row in summary.layers:
        for ref in row.inputs:
            out.append(f"  {ids[ref]} -->|{_mm_text([shape_text(shapes[ref])])}| {ids[row.name]}")
    for read in _loss_inputs(summary):
        out.append(f"  {ids[read]} -->|{_mm_text([shape_text(shapes[read])])}| loss_")
    for target in _loss_targets(summary):
        out.append(f"  {ids[target]} -->|{_mm_text(['target'])}| loss_")
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
