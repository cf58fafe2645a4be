"""Spec loading: YAML safety, located errors, did-you-mean hints, validation of values.

Every error test asserts the code, a fragment of the message, the line (and the
column where it means something) and the spec path. The YAML comments number
the lines of the inline specs.
"""

from __future__ import annotations

import time

import pytest

from helpers import FILE, MLP, check, codes, diagnostics, one_error, text_of
from netc.errors import SpecErrors
from netc.spec import load_spec, load_spec_text
from netc.spec.yamlload import MAX_BYTES, MAX_DEPTH, MAX_NODES



def edit(old: str, new: str, text: str = MLP) -> str:
    """MLP with one fragment replaced (the line numbers stay the same)."""
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_the_base_spec_is_valid():
    loaded = load_spec_text(MLP, FILE)
    assert loaded.spec.name == "net"
    assert [layer.op for layer in loaded.spec.layers] == ["linear", "relu", "linear"]
    assert loaded.smap.locate(("layers", 1, "op")).line == 8


# --------------------------------------------------------------------------- YAML syntax and encoding


def test_invalid_yaml_unclosed_flow_sequence():
    text = """
        netc: 1
        name: net
        inputs:
          x: {shape: [4}
    """
    check(one_error(text), "E-YAML", "expected ',' or ']', but got '}'", line=4, col=16, path="")


def test_invalid_yaml_bad_indentation():
    text = """
        netc: 1
        name: net
          bad: 1
    """
    check(one_error(text), "E-YAML", "mapping values are not allowed here", line=3, col=6)


def test_invalid_yaml_tab_indentation():
    check(one_error("netc: 1\n\tname: net\n"), "E-YAML", "'\\t' that cannot start any token", line=2, col=1)


def test_several_documents_are_refused():
    check(one_error("netc: 1\n---\nnetc: 1\n"), "E-YAML", "expected a single document", line=2, col=1)


def test_undefined_alias():
    check(one_error("netc: 1\nname: *nope\n"), "E-YAML", "undefined alias 'nope'", line=2, col=7)


def test_a_tagged_value_that_does_not_parse_is_located():
    """`!!bool maybe` made PyYAML's constructor raise a KeyError (a traceback before)."""
    check(one_error("netc: 1\nname: !!bool maybe\n"), "E-YAML", "cannot read value: 'maybe'", line=2, col=7,
          path="name")


@pytest.mark.parametrize("text", ["", "\n\n   \n", "# only a comment\n", b""])
def test_empty_file(text):
    check(one_error(text), "E-YAML", "the file is empty", line=1, col=1, hint="netc: 1")


def test_non_utf8_bytes_are_located():
    d = one_error(b"netc: 1\nname: \xe9t\xe9\n")
    check(d, "E-YAML", "not UTF-8 text (byte 14)", line=2, col=7, hint="UTF-8")


def test_utf8_bom_is_accepted():
    loaded = load_spec_text(b"\xef\xbb\xbf" + MLP.encode(), FILE)
    assert loaded.spec.name == "net"


@pytest.mark.parametrize("char", ["\x00", "\x07", "\ud800"])
def test_control_characters_are_located(char):
    check(one_error(f"netc: 1\nname: a{char}b\n"), "E-YAML", "unacceptable character", line=2, col=8)


# --------------------------------------------------------------------------- YAML safety


def test_duplicate_top_level_key_names_the_first_line():
    text = """
        netc: 1
        name: a
        description: x
        name: b
    """
    check(one_error(text), "E-YAML-DUP", "duplicate key 'name' (first defined at line 2)", line=4, col=1,
          path="name", hint="silently keep the last")


def test_duplicate_key_inside_a_layer():
    d = one_error(edit("out: 8}", "out: 8, out: 9}"))
    check(d, "E-YAML-DUP", "duplicate key 'out' (first defined at line 7)", line=7, col=37, path="layers[0].out")


def test_python_tags_never_build_objects(tmp_path):
    marker = tmp_path / "pwned"
    text = f'netc: 1\nname: !!python/object/apply:os.system ["touch {marker}"]\n'
    d = one_error(text)
    check(d, "E-YAML-TAG", "tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed",
          line=2, col=7, path="name", hint="plain YAML")
    assert not marker.exists()


@pytest.mark.parametrize("value, tag", [
    ("!!python/name:os.system", "python/name:os.system"),
    ("!!binary aGVsbG8=", "binary"),
    ("!!set {a, b}", "set"),
    ("!include other.yaml", "!include"),
])
def test_other_tags_are_refused(value, tag):
    check(one_error(f"netc: 1\nname: {value}\n"), "E-YAML-TAG", tag, line=2, col=7, path="name")


def test_merge_keys_are_refused():
    text = """
        netc: 1
        name: net
        layers:
          - &base {name: fc1, op: linear, out: 8}
          - {<<: *base, name: fc2}
    """
    check(one_error(text), "E-YAML-TAG", "merge keys (<<) are not supported", line=5, col=6, path="layers[1]",
          hint="write the keys out")


def test_plain_aliases_are_accepted():
    text = edit("{name: fc1, op: linear, out: 8}",
                "{name: fc1, op: linear, out: 8, weight_init: &init {type: uniform, low: -0.1, high: 0.1}}")
    text = edit("{name: fc2, op: linear, out: 3}", "{name: fc2, op: linear, out: 3, weight_init: *init}", text)
    spec = load_spec_text(text, FILE).spec
    assert spec.layers[0].weight_init == spec.layers[2].weight_init
    assert spec.layers[2].weight_init.low == -0.1


def test_dates_and_markers_stay_text():
    # SafeLoader would build a datetime or refuse a special tag: a spec keeps the text as written
    text = edit("name: net", "name: net\ndescription: 2024-01-01")
    assert load_spec_text(text, FILE).spec.description == "2024-01-01"
    check(one_error(edit("name: net", "name: 2024-01-01")), "E-VALUE", "a name uses letters", line=2, col=7,
          path="name")


def test_numeric_keys_are_keys_not_indices():
    d = one_error(MLP + "1: one\n")
    check(d, "E-UNKNOWN-KEY", "unknown key '1'", line=11, col=1, path="1")


def test_alias_bomb_is_refused_quickly():
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    previous = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
        previous = name
    text = "\n".join(lines) + "\n"  # 9^9 strings once expanded
    start = time.perf_counter()
    d = one_error(text)
    assert time.perf_counter() - start < 5.0
    assert d.code == "E-YAML-LIMIT", d.format()
    assert f"more than {MAX_NODES} nodes" in d.message
    assert 1 <= d.location.line <= len(lines)
    assert "aliases" in d.hint


def test_deep_flow_nesting_is_refused_at_the_first_level_too_deep():
    depth = MAX_DEPTH + 20
    d = one_error("netc: 1\nx: " + "[" * depth + "]" * depth + "\n")
    # "x: " is 3 columns; the 65th "[" is one level too deep
    check(d, "E-YAML-LIMIT", f"nesting deeper than {MAX_DEPTH} levels", line=2, col=3 + MAX_DEPTH + 1)


def test_nesting_at_the_limit_is_accepted_by_the_yaml_loader():
    found = diagnostics("netc: 1\nx: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n")
    assert "E-YAML-LIMIT" not in {d.code for d in found}  # parsed fine; only the spec model complains
    assert ("E-UNKNOWN-KEY", 2) in codes(found)


def test_deep_block_nesting_is_refused():
    text = "netc: 1\na:\n" + "".join("  " * i + "b:\n" for i in range(1, MAX_DEPTH + 5))
    check(one_error(text), "E-YAML-LIMIT", "nesting deeper", line=MAX_DEPTH + 2, col=2 * MAX_DEPTH + 1)


def test_deep_nesting_through_an_alias_is_refused():
    half = MAX_DEPTH // 2 + 8
    text = "a: &a " + "[" * half + "]" * half + "\nb: " + "[" * half + "*a" + "]" * half + "\n"
    d = one_error(text)
    check(d, "E-YAML-LIMIT", "nesting deeper", line=1)  # the anchored node, reached through b
    assert d.path.startswith("b[0][0]") and d.path.endswith("...")


def test_nesting_far_beyond_the_limit_is_refused_quickly():
    start = time.perf_counter()
    d = one_error("x: " + "[" * 200_000 + "]" * 200_000)
    assert time.perf_counter() - start < 3.0
    check(d, "E-YAML-LIMIT", "nesting deeper", line=1, col=3 + MAX_DEPTH + 1)


@pytest.mark.parametrize("as_bytes", [False, True])
def test_oversized_file_is_refused_before_parsing(as_bytes):
    text = "netc: 1\nname: " + "a" * MAX_BYTES + "\n"
    start = time.perf_counter()
    d = one_error(text.encode() if as_bytes else text)
    assert time.perf_counter() - start < 1.0
    check(d, "E-YAML-LIMIT", "larger than 4 MiB", line=1)


def test_huge_integer_is_an_error_not_a_crash():
    check(one_error("netc: 1\nname: " + "1" * 5000 + "\n"), "E-YAML", "cannot read value", line=2, col=7,
          path="name")


# --------------------------------------------------------------------------- version and top level


def test_missing_version():
    text = MLP.replace("netc: 1 ", "# no version")  # line 1 is a comment: the mapping starts on line 2
    check(one_error(text), "E-VERSION", "missing the format version 'netc'", line=2, col=1, path="netc",
          hint="netc: 1")


@pytest.mark.parametrize("value, shown", [("2", "2"), ("'1'", "'1'"), ("1.0", "1.0"), ("true", "True"),
                                          ("[1]", "[1]")])
def test_wrong_version(value, shown):
    d = one_error(edit("netc: 1 ", f"netc: {value} "))
    check(d, "E-VERSION", f"format version {shown} is not supported", line=1, col=7, path="netc",
          hint="format version 1")


@pytest.mark.parametrize("text", ["- netc: 1\n- name: net\n", "42\n", "just text\n"])
def test_spec_not_a_mapping(text):
    check(one_error(text), "E-SPEC", "a spec is a YAML mapping", line=1, col=1, hint="netc: 1")


# --------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize("old, new, line, col, path, hint", [
    ("", "optimzer: {type: sgd}\n", 11, 1, "optimzer", "did you mean 'optimizer'?"),
    ("x: {shape: [4]}", "x: {shape: [4], dtpye: float32}", 4, 19, "inputs.x.dtpye", "did you mean 'dtype'?"),
    ("{name: act, op: relu}", "{name: act, op: relu, inplace: 1}", 8, 27, "layers[1].inplace",
     "known keys: in, name, op"),
    ("out: 8}", "out: 8, bais: false}", 7, 37, "layers[0].bais", "did you mean 'bias'?"),
    ("target: label}", "target: label, wieght: 1}", 10, 54, "loss.wieght", "did you mean 'weight'"),
    ("", "optimizer: {type: sgd, lr: 0.1, momentun: 0.9}\n", 11, 33, "optimizer.momentun",
     "did you mean 'momentum'?"),
    ("", "train: {batch: 4, epoch: 2}\n", 11, 19, "train.epoch", "did you mean 'epochs'?"),
    ("", "data:\n  train: {source: xor, nn: 3}\n", 12, 24, "data.train.nn", "did you mean 'n'?"),
    ("out: 8}", "out: 8, weight_init: {type: uniform, hihg: 1.0}}", 7, 66, "layers[0].weight_init.hihg",
     "did you mean 'high'?"),
    ("", "init: {checkpoint: a.safetensors, layer: [fc1]}\n", 11, 35, "init.layer", "did you mean 'layers'?"),
])
def test_unknown_key_points_at_the_key(old, new, line, col, path, hint):
    text = edit(old, new) if old else MLP + new
    key = path.rsplit(".", 1)[-1]
    check(one_error(text), "E-UNKNOWN-KEY", f"unknown key '{key}'", line=line, col=col, path=path, hint=hint)


# --------------------------------------------------------------------------- missing keys


def test_missing_top_level_keys_are_all_reported():
    found = diagnostics("netc: 1\nname: net\n")
    assert [(d.code, d.path) for d in found] == [("E-MISSING", "inputs"), ("E-MISSING", "layers"),
                                                 ("E-MISSING", "loss")]
    check(found[1], "E-MISSING", "missing required key 'layers'", line=1, hint="Layers in order")


@pytest.mark.parametrize("old, new, line, col, path, key, hint", [
    ("{name: fc1, op: linear, out: 8}", "{name: fc1, op: linear}", 7, 5, "layers[0].out", "out",
     "Number of output features"),
    ("{name: act, op: relu}", "{name: act}", 8, 5, "layers[1]", "op", "op is one of: add, avgpool2d"),
    ("input: fc2, target: label}", "input: fc2}", 10, 7, "loss.target", "target", "targets"),
    ("{op: cross_entropy, input", "{input", 10, 7, "loss", "op", "op is one of: cross_entropy, mse, nll"),
    ("x: {shape: [4]}", "x: {dtype: float32}", 4, 6, "inputs.x.shape", "shape", "without the batch"),
    ("out: 8}", "out: 8, weight_init: {value: 0.5}}", 7, 50, "layers[0].weight_init", "type",
     "type is one of: constant"),
    ("out: 8}", "out: 8, weight_init: {type: constant}}", 7, 50, "layers[0].weight_init.value", "value",
     "The value"),
])
def test_missing_required_key(old, new, line, col, path, key, hint):
    check(one_error(edit(old, new)), "E-MISSING", f"missing required key '{key}'", line=line, col=col,
          path=path, hint=hint)


def test_missing_optimizer_type_and_data_source():
    found = diagnostics(MLP + "optimizer: {lr: 0.1}\ndata:\n  train: {path: x.npz}\n")
    check(found[0], "E-MISSING", "missing required key 'type'", line=11, col=12, path="optimizer",
          hint="type is one of: adam, rmsprop, sgd")
    check(found[1], "E-MISSING", "missing required key 'source'", line=13, col=10, path="data.train",
          hint="mnist-idx")
    assert len(found) == 2


# --------------------------------------------------------------------------- unknown tags (op, type, source)


@pytest.mark.parametrize("old, new, code, line, col, path, message, hint", [
    ("op: relu", "op: rleu", "E-UNKNOWN-OP", 8, 21, "layers[1].op", "unknown op 'rleu'", "did you mean 'relu'?"),
    ("op: linear, out: 8", "op: Linear, out: 8", "E-UNKNOWN-OP", 7, 21, "layers[0].op", "unknown op 'Linear'",
     "did you mean 'linear'?"),
    ("op: relu", "op: attention", "E-UNKNOWN-OP", 8, 21, "layers[1].op", "unknown op 'attention'",
     "known ops: add, avgpool2d, batchnorm1d, batchnorm2d, block, concat, conv2d"),
    ("op: cross_entropy", "op: cross_entropi", "E-UNKNOWN-OP", 10, 12, "loss.op", "unknown op 'cross_entropi'",
     "did you mean 'cross_entropy'?"),
    ("out: 8}", "out: 8, weight_init: {type: hee}}", "E-UNKNOWN-TYPE", 7, 57, "layers[0].weight_init.type",
     "unknown type 'hee'", "did you mean 'he'?"),
    ("out: 8}", "out: 8, weight_init: xavier_unifrom}", "E-UNKNOWN-TYPE", 7, 50, "layers[0].weight_init.type",
     "unknown type 'xavier_unifrom'", "did you mean 'xavier_uniform'?"),
])
def test_unknown_tag_value(old, new, code, line, col, path, message, hint):
    check(one_error(edit(old, new)), code, message, line=line, col=col, path=path, hint=hint)


def test_unknown_optimizer_type():
    check(one_error(MLP + "optimizer: {type: adm, lr: 0.1}\n"), "E-UNKNOWN-TYPE", "unknown type 'adm'",
          line=11, col=19, path="optimizer.type", hint="did you mean 'adam'? (known types: adam, rmsprop, sgd)")


@pytest.mark.parametrize("source, hint", [("xro", "did you mean 'xor'?"), ("mnist", "did you mean 'mnist-idx'?")])
def test_unknown_data_source(source, hint):
    d = one_error(MLP + f"data:\n  train: {{source: {source}}}\n")
    check(d, "E-UNKNOWN-SOURCE", f"unknown source '{source}'", line=12, col=19, path="data.train.source",
          hint=hint)


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("old, new, line, col, path, message", [
    ("out: 8}", "out: -8}", 7, 34, "layers[0].out", "greater than 0 (got -8)"),
    ("out: 8}", "out: 0}", 7, 34, "layers[0].out", "greater than 0 (got 0)"),
    ("out: 8}", "out: '8'}", 7, 34, "layers[0].out", "valid integer (got '8')"),
    ("out: 8}", "out: 8.0}", 7, 34, "layers[0].out", "valid integer (got 8.0)"),
    ("out: 8}", "out: true}", 7, 34, "layers[0].out", "valid integer (got True)"),
    ("out: 8}", "out: 8, bias: maybe}", 7, 43, "layers[0].bias", "valid boolean (got 'maybe')"),
    ("{name: act, op: relu}", "{name: act, op: dropout, p: 1.0}", 8, 33, "layers[1].p", "less than 1 (got 1.0)"),
    ("{name: act, op: relu}", "{name: act, op: dropout, p: -0.1}", 8, 33, "layers[1].p",
     "greater than or equal to 0"),
    ("out: 8}", "out: 8, weight_init: {type: uniform, low: 0.1, high: 0.1}}", 7, 50, "layers[0].weight_init",
     "high must be greater than low"),
    ("out: 8}", "out: 8, weight_init: {type: normal, std: .nan}}", 7, 70, "layers[0].weight_init.std",
     "finite number"),
    ("out: 8}", "out: 8, lr_mult: .inf}", 7, 46, "layers[0].lr_mult", "finite number"),
    ("label: {shape: [], dtype: int64, classes: 3}", "label: {shape: [], dtype: int64}", 5, 10, "inputs.label",
     "an int64 input needs `classes`"),
    ("label: {shape: [], dtype: int64, classes: 3}", "label: {shape: [2, 2], dtype: int64, classes: 3}", 5, 10,
     "inputs.label", "has shape [] (one class index per sample) or [T]"),
    ("x: {shape: [4]}", "x: {shape: [4], classes: 3}", 4, 6, "inputs.x", "only for int64"),
    ("x: {shape: [4]}", "x: {shape: [-4]}", 4, 15, "inputs.x.shape[0]", "greater than 0 (got -4)"),
    ("x: {shape: [4]}", "x: {shape: [4], dtype: float16}", 4, 26, "inputs.x.dtype", "'float32' or 'int64'"),
    ("name: net", "name: 2fast", 2, 7, "name", "a name uses letters, digits and _"),
    ("{name: act,", "{name: act-1,", 8, 12, "layers[1].name", "a name uses letters"),
    ("op: relu}", "op: relu, in: []}", 8, 31, "layers[1].in", "valid string"),
])
def test_bad_value(old, new, line, col, path, message):
    check(one_error(edit(old, new)), "E-VALUE", message, line=line, col=col, path=path)


@pytest.mark.parametrize("extra, line, col, path, message", [
    ("optimizer: {type: sgd, lr: 0}\n", 11, 28, "optimizer.lr", "greater than 0"),
    ("optimizer: {type: adam, lr: .inf}\n", 11, 29, "optimizer.lr", "finite number"),
    ("optimizer: {type: sgd, momentum: 1.0}\n", 11, 34, "optimizer.momentum", "less than 1"),
    ("train: {batch: 0}\n", 11, 16, "train.batch", "greater than 0"),
    ("train: {batch: 4, dtype: float16}\n", 11, 26, "train.dtype", "'float32' or 'float64'"),
    ("data:\n  train: {source: xor, n: -1}\n", 12, 27, "data.train.n", "greater than 0"),
])
def test_bad_value_in_settings(extra, line, col, path, message):
    check(one_error(MLP + extra), "E-VALUE", message, line=line, col=col, path=path)


def test_empty_layers_and_inputs():
    text = """
        netc: 1
        name: net
        inputs: {}
        layers: []
        loss: {op: mse, input: a, target: b}
    """
    found = diagnostics(text)
    check(found[0], "E-VALUE", "at least 1 item", line=3, col=9, path="inputs")
    check(found[1], "E-VALUE", "at least 1 item", line=4, col=9, path="layers")
    assert len(found) == 2


def test_a_layer_that_is_not_a_mapping():
    check(one_error(edit("{name: act, op: relu}", "relu")), "E-VALUE", "valid dictionary", line=8, col=5,
          path="layers[1]")


# --------------------------------------------------------------------------- several errors, shorthand, files


def test_several_errors_are_reported_together():
    text = """
        netc: 1
        name: net
        inputs:
          x: {shape: [4], dtpye: float32}
          label: {shape: [], dtype: int64, classes: 3}
        layers:
          - {name: fc1, op: linear, out: -8}
          - {name: act, op: rleu}
          - {name: fc2, op: linear, out: 3, weight_init: hee}
        loss: {op: cross_entropy, input: fc2, target: label}
        optimizer: {type: adm}
    """
    found = diagnostics(text)
    assert sorted(codes(found), key=lambda c: c[1]) == [
        ("E-UNKNOWN-KEY", 4), ("E-VALUE", 7), ("E-UNKNOWN-OP", 8), ("E-UNKNOWN-TYPE", 9), ("E-UNKNOWN-TYPE", 11)]
    by_path = {d.path: d for d in found}
    check(by_path["inputs.x.dtpye"], "E-UNKNOWN-KEY", "dtpye", line=4, col=19)
    check(by_path["layers[0].out"], "E-VALUE", "greater than 0", line=7, col=34)
    check(by_path["layers[1].op"], "E-UNKNOWN-OP", "rleu", line=8, col=21)
    check(by_path["layers[2].weight_init.type"], "E-UNKNOWN-TYPE", "hee", line=9, col=50)
    check(by_path["optimizer.type"], "E-UNKNOWN-TYPE", "adm", line=11, col=19)


@pytest.mark.parametrize("short, kind", [("he", "HeUniform"), ("kaiming_normal", "HeNormal"),
                                         ("glorot", "XavierUniform"), ("zeros", "ZerosInit")])
def test_initializer_shorthand_is_accepted(short, kind):
    text = edit("out: 8}", f"out: 8, weight_init: {short}, bias_init: zeros}}")
    layer = load_spec_text(text, FILE).spec.layers[0]
    assert type(layer.weight_init).__name__ == kind
    assert layer.weight_init.type == short
    assert layer.bias_init.type == "zeros"
    longhand = edit("out: 8}", f"out: 8, weight_init: {{type: {short}}}, bias_init: {{type: zeros}}}}")
    assert load_spec_text(longhand, FILE).spec.layers[0] == layer


def test_defaults_are_filled():
    spec = load_spec_text(MLP, FILE).spec
    assert spec.optimizer.type == "sgd" and spec.train.batch == 32 and spec.data is None
    assert spec.inputs["x"].dtype == "float32" and spec.layers[0].bias is True


def test_diagnostic_format_is_file_line_col():
    d = one_error(edit("op: relu", "op: rleu"))
    assert d.format().startswith("spec.yaml:8:21: error[E-UNKNOWN-OP]: unknown op 'rleu' (at layers[1].op)\n"
                                 "  hint: did you mean 'relu'?")
    assert d.as_dict()["line"] == 8 and d.as_dict()["path"] == "layers[1].op"


def test_load_spec_names_the_file(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(edit("op: relu", "op: rleu"))
    with pytest.raises(SpecErrors) as caught:
        load_spec(path)
    (d,) = caught.value.diagnostics
    check(d, "E-UNKNOWN-OP", "rleu", line=8, col=21, file=str(path))
    path.write_text(MLP)
    assert load_spec(path).base_dir == tmp_path


def test_load_spec_missing_file(tmp_path):
    with pytest.raises(SpecErrors) as caught:
        load_spec(tmp_path / "nope.yaml")
    (d,) = caught.value.diagnostics
    assert d.code == "E-FILE" and "cannot read spec" in d.message
    assert d.location.file == str(tmp_path / "nope.yaml")
