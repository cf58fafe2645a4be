"""The spec-side CLI (validate, inspect, schema), driven through the real typer app.

Nothing here compiles a plan: these tests run without Numba doing any work.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netc.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
SPEC_FILES = sorted(SPECS.glob("*.yaml"))

# no colors and no terminal, whatever the CI environment says
runner = CliRunner(env={"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None, "COLUMNS": None})

BROKEN = """\
netc: 1
name: broken
inputs:
  x: {shape: [4]}
  y: {shape: [], dtype: int64, classes: 3}
layers:
  - {name: fc1, op: linear, out: 8, bais: false}
  - {name: act, op: rellu}
  - {name: fc2, op: linear, out: 3}
loss: {op: cross_entropy, input: fc2, target: y}
"""

BAD_SHAPE = """\
netc: 1
name: bad_shape
inputs:
  x: {shape: [4]}
  y: {shape: [], dtype: int64, classes: 3}
layers:
  - {name: fc1, op: linear, out: 8}
  - {name: s, op: add, in: [fc1, x]}
  - {name: fc2, op: linear, out: 3}
loss: {op: cross_entropy, input: fc2, target: y}
"""


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def position(text: str, needle: str) -> tuple[int, int]:
    """1-based line and column of the first `needle` in `text`."""
    offset = text.index(needle)
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col


@pytest.fixture
def broken_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "broken.yaml").write_text(BROKEN)
    (folder / "shape.yaml").write_text(BAD_SHAPE)
    (folder / "good.yaml").write_text((SPECS / "xor.yaml").read_text())
    return folder


# --------------------------------------------------------------------------- the app


def test_version_and_help():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("netc ")
    result = invoke("--help")
    assert result.exit_code == 0
    for name in ("validate", "inspect", "schema"):
        assert name in result.stdout


def test_spec_commands_do_not_import_numba():
    code = "import sys, netc.cli; sys.exit('numba' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# --------------------------------------------------------------------------- inspect


def test_inspect_lenet_table():
    result = invoke("inspect", SPECS / "lenet.yaml")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for header in ("layer", "op", "inputs", "output shape", "params", "shared with", "trainable", "mult-adds"):
        assert header in out
    assert "431,080" in out
    assert "2,293,000" in out and "2.29 M" in out
    assert "[20, 24, 24]" in out and "[50, 4, 4]" in out
    assert "400,500" in out  # fc1: 800*500 + 500
    assert "torchinfo" in out  # the mult-adds convention is stated
    assert "Activation memory" in out and "batch 64" in out


@pytest.mark.parametrize("spec, params", [("seed-mlp.yaml", "39"), ("seed-cnn.yaml", "620,810"),
                                          ("lenet.yaml", "431,080")])
def test_inspect_param_totals(spec, params):
    result = invoke("inspect", SPECS / spec)
    assert result.exit_code == 0, result.output
    assert re.search(rf"Total params:\s+{params}\b", result.stdout)


def test_inspect_siamese_counts_shared_tensor_once():
    result = invoke("inspect", SPECS / "siamese.yaml")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert re.search(r"Total params:\s+2,210\b", out)
    assert "uses enc_a" in out and "used by enc_b" in out
    assert "(2,080)" in out  # the sharer's params, shown but not counted

    data = json.loads(invoke("inspect", SPECS / "siamese.yaml", "--format", "json").stdout)
    assert data["totals"]["params"] == 2210
    rows = {row["name"]: row for row in data["layers"]}
    assert rows["enc_b"]["shares"] == "enc_a" and rows["enc_b"]["counted"] is False
    assert rows["enc_a"]["shared_by"] == ["enc_b"]
    assert sum(row["params"] for row in data["layers"] if row["counted"]) == 2210


def test_inspect_finetune_shows_frozen_params():
    result = invoke("inspect", SPECS / "finetune.yaml")
    assert result.exit_code == 0, result.output
    assert re.search(r"Frozen params:\s+49,536\b", result.stdout)
    assert re.search(r"Trainable params:\s+1,290\b", result.stdout)
    assert "no (frozen)" in result.stdout

    data = json.loads(invoke("inspect", SPECS / "finetune.yaml", "-f", "json").stdout)
    assert data["totals"] == {"params": 50826, "trainable_params": 1290, "frozen_params": 49536,
                              "state": 0, "mult_adds_per_sample": 50432}
    assert {row["name"]: row["trainable"] for row in data["layers"]} == {
        "fc1": False, "relu1": None, "fc2": False, "relu2": None, "head": True}


def test_inspect_json_lenet():
    result = invoke("inspect", SPECS / "lenet.yaml", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["name"] == "lenet"
    assert data["totals"]["params"] == 431080
    assert data["totals"]["mult_adds_per_sample"] == 2293000
    assert [row["name"] for row in data["inputs"]] == ["image", "label"]
    conv1 = data["layers"][0]
    assert conv1["output_shape"] == [20, 24, 24]
    assert conv1["param_shapes"] == {"weight": [20, 1, 5, 5], "bias": [20]}
    assert data["memory"]["batch"] == 64
    assert data["memory"]["total_bytes"] == data["memory"]["activation_bytes"] + data["memory"]["parameter_bytes"]
    assert data["losses"] == [{"op": "cross_entropy", "input": "fc2", "target": "label", "weight": 1.0}]


def test_inspect_batch_scales_activation_memory():
    one = json.loads(invoke("inspect", SPECS / "lenet.yaml", "-f", "json", "--batch", "1").stdout)["memory"]
    eight = json.loads(invoke("inspect", SPECS / "lenet.yaml", "-f", "json", "-b", "8").stdout)["memory"]
    assert eight["activation_bytes"] == 8 * one["activation_bytes"]
    assert eight["parameter_bytes"] == one["parameter_bytes"]
    assert invoke("inspect", SPECS / "lenet.yaml", "--batch", "0").exit_code == 2


def test_inspect_markdown():
    result = invoke("inspect", SPECS / "siamese.yaml", "--format", "markdown")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "| layer | op | inputs | output shape | params | shared with | trainable | mult-adds |" in out
    assert "| enc_b | linear | right | [32] | (2,080) | uses enc_a | yes | 2,048 |" in out
    assert "**Total params:** 2,210" in out


def test_inspect_dot():
    out = invoke("inspect", SPECS / "lenet.yaml", "-f", "dot").stdout
    assert out.startswith('digraph "lenet" {') and out.rstrip().endswith("}")
    assert '"conv1" [label="conv1: conv2d\\n[20, 24, 24]\\n520 params"];' in out
    assert '"image" -> "conv1" [label="[1, 28, 28]"];' in out
    assert '"fc2" -> "(loss)"' in out and '"label" -> "(loss)"' in out
    assert out.count("{") == out.count("}")

    siamese = invoke("inspect", SPECS / "siamese.yaml", "-f", "dot").stdout
    assert "shares enc_a" in siamese
    assert re.search(r'"enc_b" -> "enc_a" \[style=dashed', siamese)

    finetune = invoke("inspect", SPECS / "finetune.yaml", "-f", "dot").stdout
    fc1 = next(line for line in finetune.splitlines() if line.strip().startswith('"fc1" ['))
    assert "frozen" in fc1 and "#d9d9d9" in fc1


def test_inspect_mermaid():
    out = invoke("inspect", SPECS / "lenet.yaml", "-f", "mermaid").stdout
    assert out.startswith("flowchart TD")
    assert 'l_conv1["conv1: conv2d<br/>[20, 24, 24]<br/>520 params"]' in out
    assert 'in_image -->|"[1, 28, 28]"| l_conv1' in out

    siamese = invoke("inspect", SPECS / "siamese.yaml", "-f", "mermaid").stdout
    assert "l_enc_b -.->" in siamese and "l_enc_a" in siamese
    assert "class l_enc_b shared" in siamese

    finetune = invoke("inspect", SPECS / "finetune.yaml", "-f", "mermaid").stdout
    assert "class l_fc1,l_fc2 frozen" in finetune
    assert "classDef frozen" in finetune


def test_inspect_reports_spec_errors_without_traceback(tmp_path):
    spec = tmp_path / "shape.yaml"
    spec.write_text(BAD_SHAPE)
    result = invoke("inspect", spec)
    assert result.exit_code == 1
    line, col = position(BAD_SHAPE, "[fc1, x]")
    assert f"{spec}:{line}:{col}: error[E-SHAPE]:" in result.stderr
    assert "hint:" in result.stderr
    assert "Traceback" not in result.output


def test_inspect_missing_file():
    result = invoke("inspect", "no/such/spec.yaml")
    assert result.exit_code == 1
    assert "error[E-FILE]" in result.stderr
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- validate


def test_validate_all_reference_specs():
    result = invoke("validate", SPECS)
    assert result.exit_code == 0, result.output
    count = len(SPEC_FILES)
    assert f"{count} specs: {count} valid, 0 invalid" in result.stdout


def test_validate_many_arguments_and_verbose():
    result = invoke("validate", SPECS / "lenet.yaml", SPECS / "xor.yaml", SPECS / "lenet.yaml", "-v")
    assert result.exit_code == 0, result.output
    assert "2 specs: 2 valid, 0 invalid" in result.stdout  # the repeated file is checked once
    assert "ok" in result.stdout and "lenet.yaml" in result.stdout


def test_validate_text_reports_every_error(broken_dir):
    result = invoke("validate", broken_dir)
    assert result.exit_code == 1
    broken, shape = broken_dir / "broken.yaml", broken_dir / "shape.yaml"
    line, col = position(BROKEN, "bais")
    assert f"{broken}:{line}:{col}: error[E-UNKNOWN-KEY]: unknown key 'bais'" in result.stderr
    assert "did you mean 'bias'?" in result.stderr
    line, col = position(BROKEN, "rellu")
    assert f"{broken}:{line}:{col}: error[E-UNKNOWN-OP]" in result.stderr
    line, col = position(BAD_SHAPE, "[fc1, x]")
    assert f"{shape}:{line}:{col}: error[E-SHAPE]" in result.stderr
    assert "3 specs: 1 valid, 2 invalid (3 errors)" in result.stdout
    assert "Traceback" not in result.output


def test_validate_json(broken_dir):
    result = invoke("validate", broken_dir, "--format", "json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["summary"] == {"specs": 3, "valid": 1, "invalid": 2, "errors": 3,
                               "text": "3 specs: 1 valid, 2 invalid (3 errors)"}
    files = {Path(entry["file"]).name: entry for entry in data["files"]}
    assert files["good.yaml"]["valid"] is True and files["good.yaml"]["errors"] == []
    errors = files["broken.yaml"]["errors"]
    assert [e["code"] for e in errors] == ["E-UNKNOWN-KEY", "E-UNKNOWN-OP"]
    assert (errors[0]["line"], errors[0]["col"]) == position(BROKEN, "bais")
    assert errors[0]["path"] == "layers[0].bais"
    assert "bias" in errors[0]["hint"]


def test_validate_github_annotations(broken_dir):
    result = invoke("validate", broken_dir, "--format", "github")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    annotations = [line for line in lines if line.startswith("::error ")]
    assert len(annotations) == 3
    line, col = position(BROKEN, "bais")
    assert any(a.startswith(f"::error file={broken_dir / 'broken.yaml'},line={line},col={col},title=E-UNKNOWN-KEY::"
                            "unknown key 'bais'") for a in annotations)
    assert all("\n" not in a for a in annotations)  # multi-line text is %0A-escaped
    assert "%0Ahint: " in annotations[0]
    assert lines[-1] == "3 specs: 1 valid, 2 invalid (3 errors)"


def test_validate_quoted_glob(broken_dir):
    result = invoke("validate", str(broken_dir / "*.yaml"), "-f", "json")
    assert json.loads(result.stdout)["summary"]["specs"] == 3


def test_validate_nothing_matched(tmp_path):
    result = invoke("validate", str(tmp_path / "*.yaml"))
    assert result.exit_code == 2
    assert "no spec files" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert invoke("validate", empty).exit_code == 2


def test_validate_missing_file_is_an_error(tmp_path):
    result = invoke("validate", SPECS / "xor.yaml", tmp_path / "missing.yaml")
    assert result.exit_code == 1
    assert "error[E-FILE]" in result.stderr
    assert "2 specs: 1 valid, 1 invalid (1 error)" in result.stdout


def test_validate_hundred_specs_in_one_run(tmp_path):
    """100 mutated copies of the reference specs (every tenth broken), in nested folders."""
    texts = [path.read_text() for path in SPEC_FILES]
    for i in range(100):
        text = texts[i % len(texts)]
        text = re.sub(r"^name: (\w+)", rf"name: \1_{i}", text, count=1, flags=re.M)
        text = re.sub(r"epochs: \d+", f"epochs: {1 + i % 7}", text)
        if i % 10 == 3:
            text += "epoch: 5\n"  # a typo: unknown top-level key
        folder = tmp_path / f"group{i % 4}" / ("deep" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"spec{i:03}.yml").write_text(text)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "skip.yaml").write_text("not: a spec\n")

    result = invoke("validate", tmp_path)
    assert result.exit_code == 1
    assert "100 specs: 90 valid, 10 invalid (10 errors)" in result.stdout
    assert result.stderr.count("error[E-UNKNOWN-KEY]: unknown key 'epoch'") == 10


# --------------------------------------------------------------------------- schema


def _op_definitions(schema: dict) -> set[str]:
    ops = set()
    for definition in schema["$defs"].values():
        op = definition.get("properties", {}).get("op", {})
        if "const" in op:
            ops.add(op["const"])
    return ops


def test_schema_stdout_and_file(tmp_path):
    result = invoke("schema")
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("http://json-schema.org/")
    assert {"linear", "conv2d", "maxpool2d", "add"} <= _op_definitions(schema)
    assert "Linear" in schema["$defs"] and "Conv2d" in schema["$defs"]
    assert schema["$defs"]["Linear"]["additionalProperties"] is False
    assert "in" in schema["$defs"]["Linear"]["properties"]  # aliases, as written in a spec
    assert result.stdout.startswith('{\n  "$schema"')  # indent 2

    target = tmp_path / "netc.schema.json"
    result = invoke("schema", "-o", target)
    assert result.exit_code == 0, result.output
    assert target.read_text() == invoke("schema").stdout


def test_schema_unwritable_output(tmp_path):
    result = invoke("schema", "--output", tmp_path / "missing-dir" / "s.json")
    assert result.exit_code == 1
    assert "error[E-FILE]" in result.stderr


def test_only_specs_skips_yaml_without_a_netc_key(tmp_path):
    """What the pre-commit hook runs over every staged YAML file of a repository."""
    (tmp_path / "ci.yml").write_text("on: [push]\njobs: {}\n")
    (tmp_path / "broken.yaml").write_text("netc: 1\nname: b\ninputs: {x: {shape: [2]}}\nlayers:\n  - {op: rleu}\n")
    (tmp_path / "good.yaml").write_text((SPECS / "xor.yaml").read_text())
    strict = runner.invoke(app, ["validate", str(tmp_path)])
    assert strict.exit_code == 1 and "ci.yml" in strict.output  # without the flag, every YAML is a spec
    result = runner.invoke(app, ["validate", "--only-specs", "-v", str(tmp_path)])
    assert result.exit_code == 1
    assert "unknown op 'rleu'" in result.output
    assert f"skipped {tmp_path / 'ci.yml'} (no 'netc:' key)" in result.output
    assert "2 specs: 1 valid, 1 invalid (2 errors); 1 YAML file without 'netc:' skipped" in result.output
    only_other = runner.invoke(app, ["validate", "--only-specs", str(tmp_path / "ci.yml")])
    assert only_other.exit_code == 0, only_other.output
    assert "0 specs: 0 valid, 0 invalid; 1 YAML file without 'netc:' skipped" in only_other.output
    data = json.loads(runner.invoke(app, ["validate", "--only-specs", "-f", "json", str(tmp_path)]).stdout)
    assert data["skipped"] == [str(tmp_path / "ci.yml")] and data["summary"]["specs"] == 2
