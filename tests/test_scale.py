"""Specs with tens of thousands of layers: right answers, no recursion limit, no quadratic passes.

Nothing here is timed (benchmarks/spec_scale.py measures); a quadratic pass or a
recursion per layer shows up as a test that takes minutes or raises RecursionError.
"""

from __future__ import annotations

import io
import random
import re

import pytest
from typer.testing import CliRunner

from helpers import REFERENCE_SPECS, SPECS
from netc import report
from netc.cli.app import app
from netc.errors import SpecErrors
from netc.graph import build_graph
from netc.report.table import _LayerTable
from netc.spec import load_spec, load_spec_text, yamlload

runner = CliRunner(env={"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None, "COLUMNS": None})

WIDTH, CLASSES = 16, 10
HEADER = f"""\
netc: 1
name: chain
inputs:
  x: {{shape: [{WIDTH}]}}
  label: {{shape: [], dtype: int64, classes: {CLASSES}}}
layers:
"""


def chain(layers: int) -> str:
    """linear/relu alternating with default names and inputs, then a linear to the classes."""
    lines = [f"  - {{op: linear, out: {WIDTH}}}" if i % 2 == 0 else "  - {op: relu}" for i in range(layers - 1)]
    lines.append(f"  - {{op: linear, out: {CLASSES}}}")
    return HEADER + "\n".join(lines) + f"\nloss: {{op: cross_entropy, input: linear{layers - 1}, target: label}}\n"


def chain_params(layers: int) -> int:
    return (layers // 2) * (WIDTH * WIDTH + WIDTH) + WIDTH * CLASSES + CLASSES


def test_20k_layer_chain_validates_and_inspects(tmp_path):
    layers = 20_000
    path = tmp_path / "chain.yaml"
    path.write_text(chain(layers))

    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "1 spec: 1 valid, 0 invalid" in result.stdout

    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    rows = [line for line in lines if re.match(r"(linear|relu)\d+ ", line)]
    assert len(rows) == layers
    assert rows[0].split()[:4] == ["linear0", "linear", "x", "[16]"]
    assert rows[-1].split()[:4] == ["linear19999", "linear", "linear19998", "[10]"]
    shapes_at = lines[1].index("output shape")  # the header
    assert all(row[shapes_at] == "[" for row in rows)  # aligned
    total = next(line for line in lines if line.startswith("Total params:"))
    assert f"{chain_params(layers):,}" in total


def test_layers_listed_in_reverse_are_ordered():
    """Each layer reads one listed after it: the topological order is the reverse of the spec's."""
    layers = 10_000
    lines = [f"  - {{name: l{i}, op: relu, in: l{i - 1}}}" for i in range(layers - 1, 0, -1)]
    lines.append(f"  - {{name: l0, op: linear, in: x, out: {CLASSES}}}")
    text = HEADER + "\n".join(lines) + f"\nloss: {{op: cross_entropy, input: l{layers - 1}, target: label}}\n"
    graph = build_graph(load_spec_text(text))
    assert [node.name for node in graph.nodes] == [f"l{i}" for i in range(layers)]
    assert graph.nodes[0].index == layers - 1  # spec positions are kept


def test_long_cycle_is_reported_in_full():
    layers = 5_000
    lines = [f"  - {{name: l0, op: relu, in: l{layers - 1}}}"]
    lines += [f"  - {{name: l{i}, op: relu}}" for i in range(1, layers)]
    text = HEADER + "\n".join(lines) + f"\nloss: {{op: cross_entropy, input: l{layers - 1}, target: label}}\n"
    with pytest.raises(SpecErrors) as info:
        build_graph(load_spec_text(text, "cycle.yaml"))
    (diag,) = info.value.diagnostics
    assert diag.code == "E-CYCLE"
    expected = ["l0"] + [f"l{i}" for i in range(layers - 1, 0, -1)] + ["l0"]
    assert diag.message == "cycle: " + " -> ".join(expected)
    assert (diag.path, diag.location.line) == ("layers[0].in", 7)


class _CountingList(list):
    def __init__(self, items):
        super().__init__(items)
        self.scans = 0

    def __iter__(self):
        self.scans += 1
        return super().__iter__()


@pytest.mark.parametrize("spec", ["residual.yaml", "siamese.yaml", "lenet.yaml"])
def test_consumers_come_from_an_index(spec):
    graph = build_graph(load_spec(SPECS / spec))
    naive = {tensor: [node.name for node in graph.nodes if tensor in node.inputs]
             for tensor in list(graph.inputs) + [node.name for node in graph.nodes]}
    graph.nodes = _CountingList(graph.nodes)
    assert {tensor: [node.name for node in graph.consumers(tensor)] for tensor in naive} == naive
    assert graph.nodes.scans == 0  # no scan of every node per query


@pytest.mark.parametrize("spec", [path.name for path in REFERENCE_SPECS] + ["chain"])
def test_layer_table_written_directly_matches_rich(spec):
    """Where nothing wraps, the table is written line by line: byte for byte what rich's Table writes."""
    from rich.console import Console

    loaded = load_spec_text(chain(41)) if spec == "chain" else load_spec(SPECS / spec)
    table = _LayerTable(report.summarize(build_graph(loaded, check_memory_for_batch=False)))

    def printed(renderable, width, color):
        console = Console(file=io.StringIO(), width=width, force_terminal=color is not None, color_system=color,
                          highlight=False)
        console.print(renderable)
        return console.file.getvalue()

    for color in (None, "standard", "truecolor"):
        assert printed(table, 200, color) == printed(table.rich_table(), 200, color)
    assert table.width <= 200  # so the lines above were written directly, not by rich
    assert printed(table, 60, "standard") == printed(table.rich_table(), 60, "standard")  # narrow: rich


# --------------------------------------------------------------------------- the two YAML parsers


def _outcome(loader_class, text: str):
    try:
        data, smap = yamlload._compose(loader_class(text), "f.yaml")
    except SpecErrors as exc:
        return "error", [d.format() for d in exc.diagnostics]
    except yamlload._Unlike:
        return "left to the pure-Python path",
    return "ok", _typed(data), smap.value_at, smap.key_at


def _typed(value):
    """The data with every scalar's type, so that 1, 1.0 and True differ."""
    if isinstance(value, dict):
        return [(_typed(k), _typed(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return type(value).__name__, value


_NOISE = list(":-[]{},#&*!|>'\"%@` \n.0123456789aex_~?") + ["é", "→", "中", "😀", "\u00a0", "ŷ‖²"]


def _mutations(count: int) -> list[str]:
    texts = [path.read_text() for path in REFERENCE_SPECS]
    lines = sorted({line for text in texts for line in text.splitlines()})
    rng = random.Random(0)
    out = list(texts)
    while len(out) < count:
        split = rng.choice(texts).split("\n")
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(split))
            kind = rng.random()
            if kind < 0.3:
                split.insert(i, rng.choice(lines))
            elif kind < 0.5:
                del split[i]
            else:
                at = rng.randrange(len(split[i]) + 1)
                split[i] = split[i][:at] + "".join(rng.choices(_NOISE, k=rng.randint(1, 3))) + split[i][at + 1:]
        out.append("\n".join(split))
    return out


@pytest.mark.skipif(yamlload._FastLoader is None, reason="PyYAML without libyaml")
def test_libyaml_path_reads_what_the_pure_python_path_reads():
    """Where the fast path succeeds, the pure-Python parser gives the same data and marks."""
    agreed = 0
    for text in _mutations(400):
        if yamlload._UNLIKE.search(text):
            continue
        fast = _outcome(yamlload._FastLoader, text)
        if fast[0] == "ok":
            assert _outcome(yamlload._Loader, text) == fast, text
            agreed += 1
    assert agreed > 50


@pytest.mark.parametrize("text, code, where", [
    ("a: {b: c?}\n", "E-YAML", (1, 9)),  # libyaml takes `c?` as a scalar, PyYAML refuses it
    ("a: >#\n  x\n", "E-YAML", (1, 5)),  # libyaml takes a comment right after the header
    ("netc: 1\nname:\n", "E-VALUE", (2, 6)),  # an omitted value: libyaml puts it on the next line
])
def test_where_the_parsers_differ_pure_python_decides(text, code, where):
    with pytest.raises(SpecErrors) as info:
        load_spec_text(text, "f.yaml")
    diag = info.value.diagnostics[0]
    assert (diag.code, (diag.location.line, diag.location.col)) == (code, where), diag.format()
