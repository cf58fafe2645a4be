"""ONNX export (netc/export_onnx.py, `netc export`): every reference spec and a spec with every op
round-trip through onnxruntime to the numbers `Model.predict` gives. Skipped without onnxruntime
(`pip install 'netc[onnx]'`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from typer.testing import CliRunner  # noqa: E402

import netc.cli  # noqa: E402,F401  (registers every command on the app)
from netc.cli.app import app  # noqa: E402
from netc.errors import NetcError  # noqa: E402
from netc.export_onnx import DEFAULT_OPSET, export_onnx  # noqa: E402
from netc.graph import build_graph  # noqa: E402
from netc.runtime.checkpoint import save_checkpoint  # noqa: E402
from netc.runtime.model import Model  # noqa: E402
from netc.spec import load_spec, load_spec_text  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
pytestmark = pytest.mark.compiled
runner = CliRunner(env={"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None, "COLUMNS": "200"})

EVERY_OP = """
netc: 1
name: every_op
inputs:
  img: {shape: [2, 9, 9]}
  vec: {shape: [6]}
  y: {shape: [], dtype: int64, classes: 4}
layers:
  - {name: c1, op: conv2d, in: img, filters: 3, kernel: 3, stride: 2, padding: 1}
  - {name: c1s, op: conv2d, in: img, filters: 3, kernel: 3, stride: 2, padding: 1, share: c1}
  - {name: a1, op: sigmoid}
  - {name: sum3, op: add, in: [c1, a1, c1s]}
  - {name: mp, op: maxpool2d, kernel: 3, stride: 2, padding: 1}
  - {name: ap, op: avgpool2d, in: sum3, kernel: 3, stride: 2, padding: 1}
  - {name: cat, op: concat, in: [mp, ap], axis: 1}
  - {name: r, op: reshape, shape: [6, -1]}
  - {name: flat, op: flatten}
  - {name: same, op: identity}
  - {name: act, op: relu}
  - {name: fv, op: linear, in: vec, out: 6, bias: false}
  - {name: t, op: tanh}
  - {name: cat2, op: concat, in: [act, t]}
  - {name: two, op: add, in: [cat2, cat2]}
  - {name: drop, op: dropout, p: 0.3}
  - {name: fc, op: linear, out: 4}
  - {name: sm, op: softmax}
  - {name: fc2, op: linear, out: 4}
  - {name: logp, op: log_softmax}
loss: {op: nll, input: logp, target: y}
"""


def _random_weights(model: Model, seed: int) -> dict[str, np.ndarray]:
    """The model's initial weights with random biases (initialised to zero, they would test nothing)."""
    rng = np.random.default_rng(seed)
    weights = model.get_weights()
    for name, value in weights.items():
        if name.endswith(".bias"):
            weights[name] = rng.normal(0.0, 0.1, value.shape).astype(value.dtype)
    model.set_weights(weights)
    return weights


def _round_trip(loaded, tmp_path: Path, count: int = 7):
    graph = build_graph(loaded)
    model = Model(graph)
    checkpoint = tmp_path / "w.safetensors"
    save_checkpoint(checkpoint, _random_weights(model, 1))
    result = export_onnx(loaded, checkpoint, tmp_path / "model.onnx")
    proto = onnx.load(str(result.path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == DEFAULT_OPSET
    rng = np.random.default_rng(0)
    floats = [name for name, inp in loaded.spec.inputs.items() if inp.dtype == "float32"]
    arrays = {name: rng.normal(size=(count, *graph.inputs[name])).astype(np.float32) for name in floats}
    assert [i.name for i in proto.graph.input] == floats
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert [o.name for o in proto.graph.output] == [graph.loss_input]
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, arrays)
    want = model.predict(arrays)
    assert got.shape == (count, *graph.shape_of(graph.loss_input))
    # predict gives each sample's scores as one row (a sequence's steps side by side)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=2e-4,
                               atol=2e-5 * max(1.0, float(np.abs(want).max())))
    return proto, result


@pytest.mark.parametrize("name", ["seed-mlp", "lenet", "siamese", "residual", "digits-cnn"])
def test_reference_specs_round_trip_through_onnxruntime(name, tmp_path):
    proto, result = _round_trip(load_spec(SPECS / f"{name}.yaml"), tmp_path)
    if name == "siamese":  # the shared encoder is one initializer read by both Gemms
        gemms = [n for n in proto.graph.node if n.op_type == "Gemm"]
        assert [n.input[1] for n in gemms] == ["enc_a.weight", "enc_a.weight", "head.weight"]
        assert "enc_b.weight" not in result.initializers


def test_every_op_round_trips(tmp_path):
    proto, _ = _round_trip(load_spec_text(EVERY_OP, "every_op.yaml"), tmp_path, count=5)
    ops = {n.op_type for n in proto.graph.node}
    assert ops == {"Conv", "Sigmoid", "Sum", "MaxPool", "AveragePool", "Concat", "Reshape", "Flatten", "Identity",
                   "Relu", "Gemm", "Tanh", "Add", "Softmax", "LogSoftmax"}
    average = next(n for n in proto.graph.node if n.op_type == "AveragePool")
    assert onnx.helper.get_attribute_value(next(a for a in average.attribute if a.name == "count_include_pad")) == 0


LOCAL = """
netc: 1
name: local
inputs:
  img: {shape: [2, 9, 8]}
  y: {shape: [], dtype: int64, classes: 4}
layers:
  - {name: l1, op: local2d, filters: 3, kernel: [3, 2], stride: 2}
  - {name: a1, op: relu}
  - {name: l2, op: local2d, in: a1, filters: 2, kernel: 2, bias: false}
  - {name: l3, op: local2d, in: a1, filters: 2, kernel: 2, bias: false, share: l2}
  - {name: both, op: add, in: [l2, l3]}
  - {name: flat, op: flatten}
  - {name: fc, op: linear, out: 4}
loss: {op: cross_entropy, input: fc, target: y}
"""


def test_local2d_round_trips(tmp_path):
    """local2d has no ONNX op: Conv with one-hot filters unfolds the windows, Einsum applies each position's
    weights, Add its biases; the one-hot filters of one geometry and a shared layer's weights are written once."""
    proto, result = _round_trip(load_spec_text(LOCAL, "local.yaml"), tmp_path, count=5)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Conv") == 3 and ops.count("Einsum") == 3 and ops.count("Add") == 2
    assert sorted(result.initializers) == ["fc.bias", "fc.weight", "l1.bias", "l1.weight", "l2.weight",
                                           "local2d.unfold.2x3x2", "local2d.unfold.3x2x2"]


def test_export_refuses_a_checkpoint_of_another_spec(tmp_path):
    xor = load_spec(SPECS / "xor.yaml")
    weights = Model(build_graph(xor)).get_weights()
    save_checkpoint(tmp_path / "xor.safetensors", weights)
    with pytest.raises(NetcError) as info:
        export_onnx(load_spec(SPECS / "residual.yaml"), tmp_path / "xor.safetensors", tmp_path / "m.onnx")
    diag = info.value.diagnostics[0]
    assert diag.code == "E-EXPORT" and "missing stem.weight" in diag.message
    weights["out.weight"] = np.zeros((3, 8), np.float32)
    save_checkpoint(tmp_path / "bad.safetensors", weights)
    with pytest.raises(NetcError, match=r"out.weight \[3, 8\] \(needs \[2, 8\]\)"):
        export_onnx(xor, tmp_path / "bad.safetensors", tmp_path / "m.onnx")
    with pytest.raises(NetcError, match="opset 7 is outside"):
        export_onnx(xor, tmp_path / "xor.safetensors", tmp_path / "m.onnx", opset=7)
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export(tmp_path):
    spec = SPECS / "xor.yaml"
    save_checkpoint(tmp_path / "w.safetensors", Model(build_graph(load_spec(spec))).get_weights())
    out = tmp_path / "xor.onnx"
    result = runner.invoke(app, ["export", str(spec), "--weights", str(tmp_path / "w.safetensors"), "-o", str(out),
                                 "--opset", "18"])
    assert result.exit_code == 0, result.output
    assert "opset 18" in result.stdout and "-> out [N, 2]" in result.stdout
    assert onnx.load(str(out)).opset_import[0].version == 18
    result = runner.invoke(app, ["export", str(SPECS / "lenet.yaml"), "--weights", str(tmp_path / "w.safetensors"),
                                 "-o", str(tmp_path / "lenet.onnx")])
    assert result.exit_code == 1
    assert "error[E-EXPORT]: the checkpoint does not fit lenet" in result.stderr


# the parametrised activations and global average pooling: leaky_relu fused into a linear epilogue,
# elu into a conv epilogue with a 2x2 max pool after it, gelu exact and tanh as their own steps (fc2 and
# fc3 start large: the gelus read |x| ~ 1-3, where the exact and tanh forms differ by up to 5e-4); silu as
# Sigmoid and Mul (ONNX has Swish only from opset 24)
NEW_OPS = """
netc: 1
name: new_ops
inputs:
  img: {shape: [2, 8, 8]}
  y: {shape: [], dtype: int64, classes: 4}
layers:
  - {name: c1, op: conv2d, filters: 3, kernel: 3, padding: 1}
  - {name: e1, op: elu, alpha: 0.7}
  - {name: p1, op: maxpool2d, kernel: 2}
  - {name: c2, op: conv2d, filters: 5, kernel: 3, padding: 1}
  - {name: gap, op: global_avgpool2d}
  - {name: flat, op: flatten}
  - {name: fc1, op: linear, out: 12}
  - {name: lr1, op: leaky_relu, negative_slope: 0.2}
  - {name: fc2, op: linear, out: 10, weight_init: {type: normal, std: 4.0}}
  - {name: g_tanh, op: gelu, approximate: tanh}
  - {name: fc3, op: linear, out: 8, weight_init: {type: normal, std: 1.0}}
  - {name: g_exact, op: gelu}
  - {name: sw, op: silu}
  - {name: fc4, op: linear, out: 4}
loss: {op: cross_entropy, input: fc4, target: y}
"""


def _attribute(node, name):
    return onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == name))


def test_new_activations_and_global_avgpool_round_trip(tmp_path):
    from netc.compiler import compile_graph

    loaded = load_spec_text(NEW_OPS, "new_ops.yaml")
    # Model.predict runs the fused plan: elu (+ the 2x2 max pool) in c1's epilogue, leaky_relu in fc1's,
    # the two gelus as their own steps; ONNX has one node per layer
    steps = {step.node.name: step for step in compile_graph(build_graph(loaded), 4).steps}
    assert steps["c1"].act.op == "elu" and steps["c1"].pool.name == "p1"
    assert steps["fc1"].act.op == "leaky_relu"
    assert steps["g_tanh"].kind == "act" and steps["g_exact"].kind == "act" and steps["sw"].kind == "act"
    proto, _ = _round_trip(loaded, tmp_path)
    by_name = {n.name: n for n in proto.graph.node}
    assert [n.op_type for n in proto.graph.node] == ["Conv", "Elu", "MaxPool", "Conv", "GlobalAveragePool", "Flatten",
                                                     "Gemm", "LeakyRelu", "Gemm", "Gelu", "Gemm", "Gelu", "Sigmoid",
                                                     "Mul", "Gemm"]
    assert list(by_name["sw"].input) == ["g_exact", "sw.sigmoid"]
    assert _attribute(by_name["e1"], "alpha") == pytest.approx(0.7)
    assert _attribute(by_name["lr1"], "alpha") == pytest.approx(0.2)
    assert _attribute(by_name["g_tanh"], "approximate") == b"tanh"
    assert _attribute(by_name["g_exact"], "approximate") == b"none"


def test_gelu_needs_opset_20(tmp_path):
    loaded = load_spec_text(NEW_OPS, "new_ops.yaml")
    checkpoint = tmp_path / "w.safetensors"
    save_checkpoint(checkpoint, _random_weights(Model(build_graph(loaded)), 1))
    # 20 is the first opset with Gelu: it exports and runs
    result = export_onnx(loaded, checkpoint, tmp_path / "m20.onnx", opset=20)
    assert onnx.load(str(result.path)).opset_import[0].version == 20
    ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    # 19 names the first gelu layer and the opset it needs, and writes nothing
    with pytest.raises(NetcError) as info:
        export_onnx(loaded, checkpoint, tmp_path / "m19.onnx", opset=19)
    (diag,) = info.value.diagnostics
    assert diag.code == "E-EXPORT"
    assert diag.message == "layer 'g_tanh' (gelu) needs opset 20 or later: ONNX has Gelu from opset 20"
    assert diag.path == "layers[9]" and "--opset 21" in diag.hint
    assert not (tmp_path / "m19.onnx").exists()
    spec = tmp_path / "new_ops.yaml"
    spec.write_text(NEW_OPS.lstrip("\n"), encoding="utf-8")
    result = runner.invoke(app, ["export", str(spec), "--weights", str(checkpoint), "-o", str(tmp_path / "cli.onnx"),
                                 "--opset", "19"])
    assert result.exit_code == 1
    assert ("error[E-EXPORT]: layer 'g_tanh' (gelu) needs opset 20 or later: ONNX has Gelu from opset 20 "
            "(at layers[9])") in result.stderr
    assert "hint: export with --opset 21" in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "cli.onnx").exists()


# layernorm -> LayerNormalization (opset 17) with axis = -normalized: the rows of a map (axis -1), a whole
# [C, H, W] map without affine (axis -3, a Scale of ones), the features of a linear
LAYERNORM = """
netc: 1
name: layernorm
inputs:
  img: {shape: [2, 6, 5]}
  y: {shape: [], dtype: int64, classes: 4}
layers:
  - {name: ln0, op: layernorm, weight_init: {type: uniform, low: 0.5, high: 1.5}}
  - {name: c1, op: conv2d, filters: 3, kernel: 3, padding: 1}
  - {name: ln1, op: layernorm, normalized: 3, affine: false, eps: 0.001}
  - {name: flat, op: flatten}
  - {name: fc1, op: linear, out: 8}
  - {name: ln2, op: layernorm}
  - {name: fc2, op: linear, out: 4}
loss: {op: cross_entropy, input: fc2, target: y}
"""


def test_layernorm_round_trips_and_needs_opset_17(tmp_path):
    loaded = load_spec_text(LAYERNORM, "layernorm.yaml")
    proto, result = _round_trip(loaded, tmp_path)
    norms = {n.name: n for n in proto.graph.node if n.op_type == "LayerNormalization"}
    assert {name: _attribute(node, "axis") for name, node in norms.items()} == {"ln0": -1, "ln1": -3, "ln2": -1}
    assert _attribute(norms["ln1"], "epsilon") == pytest.approx(0.001)
    assert list(norms["ln0"].input) == ["img", "ln0.weight", "ln0.bias"]
    assert list(norms["ln1"].input) == ["c1", "ln1.ones"]
    assert "ln1.ones" in result.initializers
    with pytest.raises(NetcError) as info:
        export_onnx(loaded, tmp_path / "w.safetensors", tmp_path / "m16.onnx", opset=16)
    (diag,) = info.value.diagnostics
    assert diag.message == ("layer 'ln0' (layernorm) needs opset 17 or later: "
                            "ONNX has LayerNormalization from opset 17") and diag.path == "layers[0]"
    assert not (tmp_path / "m16.onnx").exists()


RECURRENT = """
netc: 1
name: recurrent
inputs:
  seq: {shape: [5, 3]}
  y: {shape: [], dtype: int64, classes: 4}
layers:
  - {name: g, op: gru, hidden: 4, sequences: true}
  - {name: l, op: lstm, hidden: 4, sequences: true}
  - {name: l2, op: lstm, in: g, hidden: 4, sequences: true, share: l}
  - {name: both, op: add, in: [l, l2]}
  - {name: r, op: rnn, hidden: 3}
  - {name: fc, op: linear, out: 4}
loss: {op: cross_entropy, input: fc, target: y}
"""


def test_recurrent_layers_round_trip(tmp_path):
    """ONNX's GRU, LSTM and RNN, their gates reordered from PyTorch's; a shared layer reads its owner's
    (reordered) initializers, written once."""
    proto, result = _round_trip(load_spec_text(RECURRENT, "recurrent.yaml"), tmp_path)
    cells = [n for n in proto.graph.node if n.op_type in ("GRU", "LSTM", "RNN")]
    assert [n.op_type for n in cells] == ["GRU", "LSTM", "LSTM", "RNN"]
    assert list(cells[1].input[1:]) == list(cells[2].input[1:]) == ["l.onnx_W", "l.onnx_R", "l.onnx_B"]
    assert _attribute(cells[0], "linear_before_reset") == 1
    assert "l2.onnx_W" not in result.initializers


GATED = """
netc: 1
name: gated
inputs:
  x: {shape: [6]}
  y: {shape: [], dtype: int64, classes: 3}
layers:
  - {name: g, op: linear, in: x, out: 4}
  - {name: gate, op: sigmoid}
  - {name: h, op: linear, in: x, out: 4}
  - {name: gated, op: mul, in: [gate, h]}
  - {name: three, op: mul, in: [gated, h, gate]}
  - {name: diff, op: sub, in: [three, h]}
  - {name: fc, op: linear, out: 3}
loss: {op: cross_entropy, input: fc, target: y}
"""


def test_mul_round_trips(tmp_path):
    """mul of two inputs is one Mul; of three, a chain of two; sub is Sub."""
    proto, _ = _round_trip(load_spec_text(GATED, "gated.yaml"), tmp_path, count=5)
    assert [n.op_type for n in proto.graph.node].count("Mul") == 3
    assert [n.op_type for n in proto.graph.node].count("Sub") == 1


PICKED = """
netc: 1
name: picked
inputs:
  x: {shape: [5, 3]}
  y: {shape: [], dtype: int64, classes: 3}
layers:
  - {name: seq, op: gru, hidden: 4, sequences: true}
  - {name: last, op: select, in: seq, index: -1}
  - {name: mid, op: slice, in: seq, start: 1, stop: -1}
  - {name: flat, op: flatten, in: mid}
  - {name: both, op: concat, in: [last, flat]}
  - {name: fc, op: linear, out: 3}
  - {name: fc2, op: linear, in: both, out: 3}
  - {name: pair, op: stack, in: [fc, fc2], axis: 1}
  - {name: flat2, op: flatten}
  - {name: out, op: linear, out: 3}
loss: {op: cross_entropy, input: out, target: y}
"""


def test_select_slice_and_stack_round_trip(tmp_path):
    """select is a Gather of one index (the axis dropped), slice a Slice, stack Unsqueezes and a Concat."""
    proto, _ = _round_trip(load_spec_text(PICKED, "picked.yaml"), tmp_path, count=5)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Gather") == 1 and ops.count("Slice") == 1 and ops.count("Unsqueeze") == 2


@pytest.mark.parametrize("name", ["digits-lstm-cell", "digits-gru-cell"])
def test_a_scan_of_a_cell_is_one_onnx_scan(name, tmp_path):
    """The cell's layers in the Scan's body; the last state's output taken from the stacked steps."""
    proto, _ = _round_trip(load_spec(SPECS / f"{name}.yaml"), tmp_path)
    assert [n.op_type for n in proto.graph.node].count("Scan") == 1


def test_a_scan_of_every_step_with_two_sequences_round_trips(tmp_path):
    """Every step's output [N, T, ...] of a scan reading two sequences, its output not its state."""
    text = """\
netc: 1
name: two
inputs:
  a: {shape: [6, 3]}
  b: {shape: [6, 2]}
  y: {shape: [], dtype: int64, classes: 3}
blocks:
  cell:
    inputs: [x, e]
    state:
      h: {shape: [4], next: h_new}
    layers:
      - {name: both, op: concat, in: [x, e]}
      - {name: ih, op: linear, out: 4}
      - {name: hh, op: linear, in: h, out: 4}
      - {name: pre, op: add, in: [ih, hh]}
      - {name: h_new, op: tanh}
      - {name: head, op: linear, in: h_new, out: 2}
    output: head
layers:
  - {name: rec, op: scan, block: cell, in: [a, b], sequences: true}
  - {name: flat, op: flatten}
  - {name: fc, op: linear, out: 3}
loss: {op: cross_entropy, input: fc, target: y}
"""
    proto, _ = _round_trip(load_spec_text(text, "two.yaml"), tmp_path)
    assert [n.op_type for n in proto.graph.node].count("Scan") == 1


SEQUENCE_HEADS = """
netc: 1
name: sequence_heads
inputs:
  x: {shape: [5, 6]}
  y: {shape: [5], dtype: int64, classes: 3}
layers:
  - {name: fc1, op: linear, out: 4}
  - {name: act, op: tanh}
  - {name: fc2, op: linear, out: 3, bias: false}
  - {name: logp, op: log_softmax}
loss: {op: nll, input: logp, target: y}
"""


def test_linear_and_log_softmax_over_a_sequence_round_trip(tmp_path):
    """linear over [T, F] is MatMul (+ Add for the bias): Gemm takes only matrices; log_softmax
    normalises each step (axis 2 of [N, T, F])."""
    proto, result = _round_trip(load_spec_text(SEQUENCE_HEADS, "heads.yaml"), tmp_path)
    assert [n.op_type for n in proto.graph.node] == ["MatMul", "Add", "Tanh", "MatMul", "LogSoftmax"]
    assert _attribute(proto.graph.node[-1], "axis") == 2
    x = np.random.default_rng(0).normal(size=(7, 5, 6)).astype(np.float32)
    (got,) = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(np.exp(got).sum(axis=-1), 1.0, rtol=1e-5)  # every step a distribution
