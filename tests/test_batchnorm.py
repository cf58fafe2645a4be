"""Batch normalization and tensor roles: state tensors (running statistics) kept, checkpointed under
PyTorch's names and never trained; an explicit train/eval mode; gradients checked in both modes."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from textwrap import dedent

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import netc.cli  # noqa: F401  (registers every command)
import reference as ref
from netc.cli.app import app
from netc.errors import SpecErrors
from netc.graph import build_graph
from netc.runtime.checkpoint import load_weights
from netc.runtime.gradcheck import gradcheck
from netc.runtime.model import Model
from netc.spec import load_spec_text

pytestmark = pytest.mark.compiled
ROOT = Path(__file__).resolve().parents[1]
N = 6
SPEC = dedent("""
    netc: 1
    name: bn
    inputs:
      x: {shape: [2, 5, 5]}
      label: {shape: [], dtype: int64, classes: 3}
    layers:
      - {name: conv1, op: conv2d, filters: 3, kernel: 3, bias_init: {type: uniform, low: -0.5, high: 0.5}}
      - {name: bn1, op: batchnorm2d, momentum: 0.2}
      - {name: relu1, op: relu}
      - {name: flat, op: flatten}
      - {name: fc1, op: linear, out: 6}
      - {name: bn2, op: batchnorm1d, affine: false, eps: 0.001}
      - {name: drop, op: dropout, p: 0.3}
      - {name: fc2, op: linear, out: 3}
    loss: {op: cross_entropy, input: fc2, target: label}
    optimizer: {type: adam, lr: 0.01}
    train: {batch: 6}
""").lstrip()
runner = CliRunner(env={"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None, "COLUMNS": None})


@functools.cache
def graph():
    return build_graph(load_spec_text(SPEC, "bn.yaml"))


def arrays(seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(N, 2, 5, 5)), "label": rng.integers(0, 3, N)}


def parsed() -> dict:
    return yaml.safe_load(SPEC)


def test_state_tensors_have_their_own_role():
    model = Model(graph(), dtype="float64", batch=N)
    state = model.get_state()
    assert set(state) == {f"{bn}.{t}" for bn in ("bn1", "bn2") for t in ("running_mean", "running_var",
                                                                          "num_batches_tracked")}
    assert state["bn1.num_batches_tracked"].dtype == np.int64 and state["bn1.num_batches_tracked"].shape == ()
    assert (state["bn1.running_var"] == 1).all() and (state["bn1.running_mean"] == 0).all()
    assert "bn2.weight" not in model.get_weights(), "affine: false has no parameters"
    assert set(model.get_weights()) >= {"bn1.weight", "bn1.bias"}
    assert not any("running" in name for name in model.optimizer_state()), "the optimizer never sees state"
    assert graph().state_count() == 3 + 3 + 1 + 6 + 6 + 1


def test_training_mode_matches_the_reference_and_updates_the_running_statistics():
    model = Model(graph(), dtype="float64", batch=N)
    weights = model.state_dict()
    states: dict = {}
    loss, scores, grads = ref.network_loss_and_gradients(parsed_without_dropout(), weights, arrays(), True, states)
    no_dropout = Model(build_graph(load_spec_text(SPEC.replace("p: 0.3", "p: 0.0"), "bn.yaml")), dtype="float64",
                       batch=N)
    no_dropout.set_weights(weights, strict=True)
    got, got_grads = no_dropout.loss_and_gradients(arrays(), training=True)
    assert got == pytest.approx(loss, rel=1e-10)
    for name, grad in grads.items():
        np.testing.assert_allclose(got_grads[name], grad, rtol=1e-8, atol=1e-10, err_msg=name)
    state = no_dropout.get_state()
    for bn in ("bn1", "bn2"):
        for tensor in ("running_mean", "running_var"):
            np.testing.assert_allclose(state[f"{bn}.{tensor}"], states[bn][tensor], rtol=1e-10, atol=1e-12)
        assert state[f"{bn}.num_batches_tracked"] == 1


def parsed_without_dropout() -> dict:
    spec = parsed()
    spec["layers"] = [layer if layer["op"] != "dropout" else {**layer, "p": 0.0} for layer in spec["layers"]]
    return spec


def test_evaluation_mode_uses_the_running_statistics():
    model = Model(graph(), dtype="float64", batch=N)
    rng = np.random.default_rng(9)
    for name, view in model.state_views().items():
        if "running" in name:
            view[...] = rng.uniform(0.5, 1.5, view.shape)
    weights = model.state_dict()
    loss, scores, grads = ref.network_loss_and_gradients(parsed(), weights, arrays())
    got, got_grads = model.loss_and_gradients(arrays())
    assert got == pytest.approx(loss, rel=1e-10)
    np.testing.assert_allclose(model.predict(arrays()), scores, rtol=1e-9, atol=1e-12)
    for name, grad in grads.items():
        np.testing.assert_allclose(got_grads[name], grad, rtol=1e-8, atol=1e-10, err_msg=name)
    after = model.get_state()
    assert all(np.array_equal(after[k], weights[k]) for k in after), "evaluation changes no state"


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_gradcheck_in_both_modes(training):
    """In training mode the running statistics a forward updates are restored between evaluations,
    and dropout draws the same masks each time."""
    results = gradcheck(graph(), count=N, max_entries=8, training=training)
    assert {r.name for r in results} >= {"bn1.weight", "bn1.bias", "conv1.weight", "fc1.weight"}
    for r in results:
        assert r.max_rel_error < 1e-6, r


def test_one_value_per_channel_is_refused(tmp_path):
    one = SPEC.replace("train: {batch: 6}", "train: {batch: 1}").replace("batchnorm2d", "batchnorm1d")
    one = one.replace("{name: bn1, op: batchnorm1d, momentum: 0.2}", "{name: bn1, op: identity}")
    with pytest.raises(SpecErrors) as info:
        build_graph(load_spec_text(one, "one.yaml"))
    (diag,) = info.value.diagnostics
    assert diag.code == "E-SHAPE" and "batchnorm1d 'bn2': a training batch of 1 gives one value per channel" in \
        diag.message and diag.location.line == 12
    maps = SPEC.replace("train: {batch: 6}", "train: {batch: 1}").replace(
        "{name: bn2, op: batchnorm1d, affine: false, eps: 0.001}", "{name: bn2, op: identity}")
    build_graph(load_spec_text(maps, "maps.yaml"))  # batchnorm2d on 3x3 maps: 9 values per channel

    spec = tmp_path / "last.yaml"  # 9 samples in batches of 4: the last batch holds one
    spec.write_text(SPEC.replace("train: {batch: 6}", "train: {batch: 4}").replace(
        "x: {shape: [2, 5, 5]}", "x: {shape: [2]}").replace(
        "{name: conv1, op: conv2d, filters: 3, kernel: 3, bias_init: {type: uniform, low: -0.5, high: 0.5}}",
        "{name: conv1, op: linear, out: 4}").replace("{name: bn1, op: batchnorm2d, momentum: 0.2}",
                                                     "{name: bn1, op: identity}") + "data:\n  train: {source: xor, n: 9}\n")
    result = runner.invoke(app, ["train", str(spec), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "error[E-RUN]: the last batch of every epoch holds 1 sample(s) (9 samples, batch 4)" in result.output
    assert not (tmp_path / "run").exists(), "refused before a run folder is made"


def test_checkpoints_hold_the_state_under_pytorch_names(tmp_path):
    result = runner.invoke(app, ["train", str(ROOT / "specs" / "digits-cnn-bn.yaml"), "--epochs", "1",
                                 "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    saved = load_weights(tmp_path / "run" / "last.safetensors")
    batches = -(-1437 // 32)
    assert saved["bn1.num_batches_tracked"].dtype == np.int64 and int(saved["bn1.num_batches_tracked"]) == batches
    assert not np.allclose(saved["bn1.running_mean"], 0.0) and not np.allclose(saved["bn1.running_var"], 1.0)
    inspected = runner.invoke(app, ["inspect", str(ROOT / "specs" / "digits-cnn-bn.yaml"), "-f", "json"])
    totals = json.loads(inspected.stdout)["totals"]
    assert totals["state"] == (16 + 32 + 64) * 2 + 3
    table = runner.invoke(app, ["inspect", str(ROOT / "specs" / "digits-cnn-bn.yaml")]).stdout
    assert "state" in table.splitlines()[1] and "State (not trained):" in table

    evaluated = runner.invoke(app, ["eval", str(ROOT / "specs" / "digits-cnn-bn.yaml"), "--weights",
                                    str(tmp_path / "run" / "last.safetensors"), "-f", "json"])
    assert evaluated.exit_code == 0 and json.loads(evaluated.stdout)["accuracy"] > 0.8


def test_digits_cnn_bn_loads_into_pytorch_with_strict_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from netc.spec import load_spec

    loaded = load_spec(ROOT / "specs" / "digits-cnn-bn.yaml")
    model = Model(build_graph(loaded), dtype="float32")
    rng = np.random.default_rng(0)
    for name, view in model.state_views().items():
        if "running" in name:
            view[...] = rng.uniform(0.5, 1.5, view.shape)
    from safetensors.numpy import save_file

    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    nn = torch.nn
    module = nn.Sequential()
    module.add_module("conv1", nn.Conv2d(1, 16, 3, padding=1, bias=False))
    module.add_module("bn1", nn.BatchNorm2d(16))
    module.add_module("relu1", nn.ReLU())
    module.add_module("conv2", nn.Conv2d(16, 32, 3, padding=1, bias=False))
    module.add_module("bn2", nn.BatchNorm2d(32))
    module.add_module("relu2", nn.ReLU())
    module.add_module("pool1", nn.MaxPool2d(2))
    module.add_module("conv3", nn.Conv2d(32, 64, 3, padding=1, bias=False))
    module.add_module("bn3", nn.BatchNorm2d(64))
    module.add_module("relu3", nn.ReLU())
    module.add_module("gap", nn.AdaptiveAvgPool2d(1))
    module.add_module("flat", nn.Flatten())
    module.add_module("fc", nn.Linear(64, 10))
    module.load_state_dict(safetensors_torch.load_file(str(tmp_path / "w.safetensors")), strict=True)
    module.eval()
    x = np.random.default_rng(1).uniform(0, 1, (5, 1, 8, 8)).astype(np.float32)
    expected = module(torch.tensor(x)).detach().numpy()
    got = model.predict({"image": x, "label": np.zeros(5, np.int64)})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_batchnorm_exports_to_onnx(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from netc.export_onnx import onnx_model

    model = Model(graph(), dtype="float32", batch=N)
    rng = np.random.default_rng(4)
    for name, view in model.state_views().items():
        if "running" in name:
            view[...] = rng.uniform(0.5, 1.5, view.shape)
    proto = onnx_model(graph(), model.state_dict())
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = arrays()["x"].astype(np.float32)
    (got,) = session.run(None, {"x": x})
    np.testing.assert_allclose(got, model.predict({"x": x, "label": np.zeros(N, np.int64)}), rtol=1e-4, atol=1e-5)


def test_a_spec_with_batchnorm_trains_and_resumes_bit_exactly(tmp_path):
    spec = ROOT / "specs" / "digits-cnn-bn.yaml"
    whole = runner.invoke(app, ["train", str(spec), "--epochs", "2", "--run-dir", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    first = runner.invoke(app, ["train", str(spec), "--epochs", "1", "--run-dir", str(tmp_path / "split")])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["train", str(spec), "--epochs", "2", "--run-dir", str(tmp_path / "split"),
                                 "--resume"])
    assert second.exit_code == 0, second.output
    a, b = load_weights(tmp_path / "whole" / "last.safetensors"), load_weights(tmp_path / "split" / "last.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), "state and weights bit-exact"

