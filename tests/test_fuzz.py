"""Property tests: whatever the input, loading + building a spec gives a valid graph or
located errors, never a traceback.

(a) random bytes, (b) reference specs mutated as data (keys deleted, renamed, added,
values replaced, layers duplicated or shuffled, ops changed) and dumped back to YAML,
(c) random text lines and line edits of the reference specs.
"""

from __future__ import annotations

import copy
import re

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from helpers import REFERENCE_SPECS
from netc.errors import NetcError
from netc.graph import build_graph
from netc.ops import REGISTRY
from netc.spec import load_spec_text

FILE = "fuzz.yaml"
_BASE = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def examples(count: int) -> settings:
    """Modest example counts: the whole file runs in well under 20 s."""
    return settings(_BASE, max_examples=count)


DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when present: dumping is not under test

SPEC_TEXTS = [path.read_text() for path in REFERENCE_SPECS]
SPEC_DATA = [yaml.safe_load(text) for text in SPEC_TEXTS]
SPEC_LINES = sorted({line for text in SPEC_TEXTS for line in text.splitlines()})

# words that make a mutation likely to reach the deeper checks (graph, shapes, loss)
WORDS = sorted(set(REGISTRY) | {
    "linear1", "Linear", "cross_entropy", "mse", "nll", "sgd", "adam", "he", "zeros", "uniform", "xor", "digits",
    "image", "label", "pixels", "x", "fc1", "fc2", "conv1", "pool1", "flat", "relu1", "head", "enc_a", "left",
    "int64", "float32", "", "-1", "1e400", "~", "<<", "*a",
})
KEYS = ["in", "share", "out", "op", "type", "name", "kernel", "stride", "padding", "filters", "shape", "dtype",
        "classes", "trainable", "lr_mult", "axis", "p", "input", "target", "weight_init", "source", "batch", "netc"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70), st.integers(), st.floats(), st.sampled_from(WORDS),
    st.text(max_size=10),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6),
                                                                 inner, max_size=4),
    max_leaves=8,
)


_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")  # what YAML counts as a line break


def _line_count(text: str | bytes) -> int:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return len(_BREAKS.split(text))


def assert_valid_or_located(text: str | bytes) -> None:
    """The property: a valid graph, or NetcError whose every diagnostic is located in the file."""
    try:
        graph = build_graph(load_spec_text(text, FILE))
    except NetcError as exc:
        assert exc.diagnostics
        event(exc.diagnostics[0].code)  # shown by pytest --hypothesis-show-statistics
        lines = _line_count(text) + 1  # an error at the end of the file sits on the line after the last break
        for d in exc.diagnostics:
            shown = d.format()
            assert d.code.startswith("E-") and d.message, shown
            assert d.location.file == FILE, shown
            assert 1 <= d.location.line <= lines and d.location.col >= 1, shown
    else:
        event("valid")
        graph.verify()
        assert all(node.shape is not None for node in graph.nodes)


# --------------------------------------------------------------------------- (a) random bytes


@examples(250)
@given(st.binary(max_size=400))
def test_random_bytes(raw):
    assert_valid_or_located(raw)


@examples(150)
@given(st.sampled_from(SPEC_TEXTS), st.binary(min_size=1, max_size=40), st.floats(0, 1))
def test_random_bytes_inside_a_reference_spec(text, raw, where):
    data = text.encode()
    cut = int(where * len(data))
    assert_valid_or_located(data[:cut] + raw + data[cut:])


# --------------------------------------------------------------------------- (b) mutated spec data


def _paths(node, path=()):
    """Every path into the data (the root included)."""
    yield path
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, path + (key,))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _paths(child, path + (i,))


def _at(node, path):
    for part in path:
        node = node[part]
    return node


def _names(data) -> list[str]:
    """Tensor names a mutation can wire to: the spec's inputs and layers, and one that does not exist."""
    names = ["nope"]
    if isinstance(data.get("inputs"), dict):
        names += [str(name) for name in data["inputs"]]
    if isinstance(data.get("layers"), list):
        names += [str(layer["name"]) for layer in data["layers"] if isinstance(layer, dict) and "name" in layer]
    return names


def _mutate(data, draw) -> None:
    """One random mutation, in place. The version key is left alone (tests of its own cover it) so that
    mutations reach the layers, the graph and the loss."""
    # hypothesis favours the first choices of a list: plausible edits first, deep paths first
    kind = draw(st.sampled_from(["rewire", "resize", "op", "duplicate", "shuffle", "delete", "replace", "rename",
                                 "insert"]))
    paths = sorted((p for p in _paths(data) if p and p[0] != "netc"), key=len, reverse=True)
    layer_paths = [p for p in paths if p[0] == "layers"]
    if not paths:
        return
    path = draw(st.sampled_from(layer_paths) | st.sampled_from(paths) if layer_paths else st.sampled_from(paths))
    mappings = [p for p in [()] + paths if isinstance(_at(data, p), dict) and _at(data, p)]
    layers = data.get("layers") if isinstance(data, dict) else None
    layer_dicts = [layer for layer in layers if isinstance(layer, dict)] if isinstance(layers, list) else []
    if kind == "delete":
        del _at(data, path[:-1])[path[-1]]
    elif kind == "replace":
        _at(data, path[:-1])[path[-1]] = draw(values)
    elif kind == "rename" and mappings:
        mapping = _at(data, draw(st.sampled_from(mappings)))
        key = draw(st.sampled_from(sorted(mapping, key=str)))
        if key != "netc":
            new = draw(st.sampled_from(KEYS) | st.text(min_size=1, max_size=8) | st.just(f"{key}s"))
            mapping[new] = mapping.pop(key)
    elif kind == "insert" and mappings:
        mapping = _at(data, draw(st.sampled_from(mappings)))
        key = draw(st.sampled_from(KEYS) | st.text(max_size=8))
        if key != "netc":
            mapping[key] = draw(values)
    elif kind == "duplicate" and isinstance(layers, list) and layers:
        layers.insert(draw(st.integers(0, len(layers))), copy.deepcopy(draw(st.sampled_from(layers))))
    elif kind == "shuffle" and isinstance(layers, list):
        layers[:] = draw(st.permutations(layers))
    elif kind == "op" and layer_dicts:
        draw(st.sampled_from(layer_dicts))["op"] = draw(st.sampled_from(sorted(REGISTRY) + ["relu6", "Conv2d"]))
    elif kind == "rewire":  # plausible wiring: reaches E-REF, E-CYCLE, E-SHARE, E-TYPE, E-DEAD, E-LOSS
        names = st.sampled_from(_names(data))
        if isinstance(data.get("loss"), dict) and draw(st.booleans()):
            data["loss"][draw(st.sampled_from(["input", "target"]))] = draw(names)
        elif layer_dicts:
            key = draw(st.sampled_from(["in", "in", "share"]))
            wire = draw(names | st.lists(names, min_size=1, max_size=3)) if key == "in" else draw(names)
            draw(st.sampled_from(layer_dicts))[key] = wire
    elif kind == "resize":  # plausible sizes: reaches E-SHAPE, E-SHARE, E-LOSS, E-MEMORY
        ints = [p for p in paths if type(_at(data, p)) is int]
        if ints:
            target = draw(st.sampled_from(ints))
            _at(data, target[:-1])[target[-1]] = draw(st.integers(1, 40) | st.sampled_from([10**6, 10**12]))


@examples(250)
@given(st.sampled_from(range(len(SPEC_DATA))), st.integers(1, 4), st.data())
def test_mutated_reference_specs(index, count, data):
    spec = copy.deepcopy(SPEC_DATA[index])
    for _ in range(count):
        _mutate(spec, data.draw)
    assert_valid_or_located(yaml.dump(spec, Dumper=DUMPER, sort_keys=False))


def test_unmutated_reference_specs_are_valid():
    for text in SPEC_TEXTS:
        build_graph(load_spec_text(yaml.dump(yaml.safe_load(text), Dumper=DUMPER, sort_keys=False), FILE)).verify()


# --------------------------------------------------------------------------- (c) random text lines

YAML_CHARS = st.characters(exclude_categories=["Cs"]) | st.sampled_from(list(" :-[]{},&*!|>'\"#%@`\t\n?"))
random_line = st.one_of(
    st.sampled_from(SPEC_LINES),
    st.text(YAML_CHARS, max_size=30),
    st.builds(lambda indent, line: " " * indent + line, st.integers(0, 8), st.sampled_from(SPEC_LINES)),
)


@examples(250)
@given(st.booleans(), st.lists(random_line, max_size=25))
def test_random_text_lines(versioned, lines):
    assert_valid_or_located(("netc: 1\n" if versioned else "") + "\n".join(lines))


@examples(250)
@given(st.sampled_from(SPEC_TEXTS), st.lists(st.tuples(st.sampled_from(["drop", "copy", "insert", "cut"]),
                                                       st.floats(0, 1), random_line), min_size=1, max_size=4))
def test_line_edits_of_reference_specs(text, edits):
    lines = text.splitlines()
    for kind, where, line in edits:
        at = min(int(where * len(lines)), max(len(lines) - 1, 0))
        if kind == "drop" and lines:
            del lines[at]
        elif kind == "copy" and lines:
            lines.insert(at, lines[at])
        elif kind == "insert":
            lines.insert(at, line)
        elif kind == "cut":
            lines = lines[:at]
    assert_valid_or_located("\n".join(lines) + "\n")
