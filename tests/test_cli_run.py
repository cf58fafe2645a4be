"""The compiling commands through the real CLI app: train, eval, gradcheck, time, inspect --plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import netc.cli  # noqa: F401  (registers every command)
from netc.cli.app import app
from netc.graph import build_graph
from netc.runtime.gradcheck import gradcheck
from netc.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
runner = CliRunner(env={"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None, "COLUMNS": "200"})
pytestmark = pytest.mark.compiled


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("spec", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_reference_spec_passes_gradcheck_in_float64(spec):
    results = gradcheck(build_graph(load_spec(spec)), max_entries=6)
    assert results, "every reference spec has trainable tensors"
    for r in results:
        assert r.max_rel_error < 1e-6, r


def test_train_then_eval_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("train", SPECS / "xor.yaml", "--epochs", "150", "--seed", "0")
    assert result.exit_code == 0, result.output
    assert "epoch 150" in result.stdout and "run folder: runs/xor" in result.stdout
    assert "eval accuracy 100.00%" in result.stdout
    weights = tmp_path / "runs" / "xor" / "last.safetensors"
    assert weights.exists() and (tmp_path / "runs" / "xor" / "metrics.jsonl").exists()

    table = invoke("eval", SPECS / "xor.yaml", "--weights", weights)
    assert table.exit_code == 0, table.output
    assert "accuracy 100.00%" in table.stdout and "confusion matrix" in table.stdout
    data = json.loads(invoke("eval", SPECS / "xor.yaml", "--weights", weights, "--format", "json").stdout)
    assert data["accuracy"] == 1.0 and data["confusion"] == [[2, 0], [0, 2]] and data["count"] == 4
    assert data["per_class"] == [{"class": i, "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2} for i in (0, 1)]
    assert data["macro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0} and "per class" in table.stdout


def test_train_errors_are_rendered_without_a_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("train", SPECS / "seed-cnn.yaml")  # a spec without data
    assert result.exit_code == 1
    assert "error[E-DATA]" in result.output and "Traceback" not in result.output
    missing = invoke("eval", SPECS / "xor.yaml", "--weights", tmp_path / "nope.safetensors")
    assert missing.exit_code == 1 and "error[E-CHECKPOINT]: checkpoint not found" in missing.output
    resume = invoke("train", SPECS / "xor.yaml", "--resume")
    assert resume.exit_code == 1 and "nothing to resume" in resume.output


def test_init_reports_what_matched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("train", SPECS / "digits-mlp.yaml", "--epochs", "1").exit_code == 0
    result = invoke("train", SPECS / "finetune.yaml", "--epochs", "1", "--init", "runs/digits_mlp/last.safetensors")
    assert result.exit_code == 0, result.output
    assert "init: loaded 4 tensors (fc1.weight, fc1.bias, fc2.weight, fc2.bias)" in result.stdout
    assert "kept initial values: head.weight, head.bias" in result.stdout
    assert "ignored (not in this model): fc3.bias, fc3.weight" in result.stdout
    assert result.stdout.index("init: loaded") < result.stdout.index("epoch   1")  # reported before training


def test_gradcheck_command_passes_and_fails_on_tolerance():
    ok = invoke("gradcheck", SPECS / "siamese.yaml", "--entries", "4")
    assert ok.exit_code == 0, ok.output
    assert "enc_a.weight" in ok.stdout and "ok" in ok.stdout
    strict = invoke("gradcheck", SPECS / "siamese.yaml", "--entries", "4", "--tolerance", "0", "--format", "json")
    assert strict.exit_code == 1
    data = json.loads(strict.stdout)
    assert data["ok"] is False and {t["tensor"] for t in data["tensors"]} == {
        "enc_a.weight", "enc_a.bias", "head.weight", "head.bias"}


def test_time_reports_every_kernel(tmp_path):
    result = invoke("time", SPECS / "digits-cnn.yaml", "--iterations", "2", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    covered = [layer for step in data["steps"] for layer in step["covers"]]
    assert ["conv1", "relu1", "pool1"] == data["steps"][0]["covers"]  # relu and the 2x2 max pool fused into the conv
    assert "fc2" in covered and "flat" not in covered  # flatten is a view: no kernel
    assert data["batch"] == 32 and data["samples_per_second"] > 0
    assert all(step["forward_ms"] >= 0 for step in data["steps"])
    table = invoke("time", SPECS / "xor.yaml", "--iterations", "2")
    assert table.exit_code == 0 and "hidden + act" in table.stdout and "samples/s" in table.stdout


def test_inspect_plan_shows_kernels_and_source():
    result = invoke("inspect", SPECS / "finetune.yaml", "--plan")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "fc1 + relu1" in out and "(no gradient needed)" in out  # a frozen prefix gets no backward
    assert "linear_backward" in out and "@plan_function" in out and "def epoch(" in out
    seed_mlp = invoke("inspect", SPECS / "seed-mlp.yaml", "--plan").stdout
    assert "(in cross_entropy)" in seed_mlp  # log_softmax + nll computed as cross_entropy of the logits
    assert "run for evaluation's scores only" in seed_mlp


def test_per_class_figures_are_scikit_learns():
    """netc eval's precision, recall and F1 per class and their macro averages, from a confusion matrix
    with a class never predicted and a class never present."""
    from sklearn.metrics import precision_recall_fscore_support

    from netc.runtime.metrics import per_class

    true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    pred = np.array([0, 1, 0, 1, 0, 2, 2, 1, 0, 0])
    confusion = np.zeros((5, 5), np.int64)
    np.add.at(confusion, (true, pred), 1)
    figures = per_class(confusion)
    p, r, f, s = precision_recall_fscore_support(true, pred, labels=range(5), zero_division=0)
    got = figures["classes"]
    np.testing.assert_allclose([c["precision"] for c in got], p)
    np.testing.assert_allclose([c["recall"] for c in got], r)
    np.testing.assert_allclose([c["f1"] for c in got], f)
    assert [c["support"] for c in got] == list(s)
    mp, mr, mf, _ = precision_recall_fscore_support(true, pred, labels=range(5), zero_division=0, average="macro")
    assert figures["macro"] == pytest.approx({"precision": mp, "recall": mr, "f1": mf})


def test_top_k_accuracy_is_scikit_learns():
    from sklearn.metrics import top_k_accuracy_score

    from netc.runtime.metrics import top_k_accuracy

    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=(200, 7)), rng.integers(0, 7, 200)
    for k in (1, 2, 5):
        assert top_k_accuracy(scores, labels, k) == pytest.approx(
            top_k_accuracy_score(labels, scores, k=k, labels=range(7)))
    assert top_k_accuracy(scores, labels, 7) == 1.0, "every class is among all of them"


def test_eval_reports_top_k_and_refuses_it_without_classes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("train", SPECS / "digits-mlp.yaml", "--epochs", "2", "--run-dir", "run", "-q").exit_code == 0
    data = json.loads(invoke("eval", SPECS / "digits-mlp.yaml", "--weights", "run/last.safetensors", "--top-k", "3",
                             "--format", "json").stdout)
    assert data["top_k"]["k"] == 3 and data["accuracy"] <= data["top_k"]["accuracy"] <= 1.0
    table = invoke("eval", SPECS / "digits-mlp.yaml", "--weights", "run/last.safetensors", "--top-k", "3")
    assert f"top-3 accuracy {100 * data['top_k']['accuracy']:.2f}%" in table.stdout
    bad = invoke("eval", SPECS / "digits-mlp.yaml", "--weights", "run/last.safetensors", "--top-k", "0")
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    # a regression (mse on a float target) has no classes to rank
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "reg.npz", x=rng.normal(size=(16, 2)), t=rng.normal(size=(16, 1)))
    (tmp_path / "reg.yaml").write_text(
        "netc: 1\nname: reg\ninputs:\n  x: {shape: [2]}\n  t: {shape: [1]}\nlayers:\n"
        "  - {name: fc, op: linear, in: x, out: 1}\nloss: {op: mse, input: fc, target: t}\n"
        "train: {batch: 8, epochs: 1}\ndata:\n  train: {source: npz, path: reg.npz}\n"
        "  eval: {source: npz, path: reg.npz}\n")
    assert invoke("train", tmp_path / "reg.yaml", "--run-dir", "reg-run", "-q").exit_code == 0
    regression = invoke("eval", tmp_path / "reg.yaml", "--weights", "reg-run/last.safetensors", "--top-k", "2")
    assert regression.exit_code == 2 and "top-k accuracy needs classes" in " ".join(regression.output.split())
