"""Early stopping (`train.early_stop`) and the checkpoints besides last.safetensors (`train.checkpoints`:
best.safetensors, epoch-N.safetensors), on xor with a scripted eval loss so the right epochs are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import netc.cli  # noqa: F401  (registers the commands)
from netc.cli.app import app
from netc.errors import SpecErrors
from netc.graph import build_graph
from netc.runtime.checkpoint import load_weights
from netc.runtime.model import EvalResult
from netc.runtime.train import Overrides, Trainer, best_epoch
from netc.spec import load_spec_text

SPECS = Path(__file__).resolve().parent.parent / "specs"
XOR = (SPECS / "xor.yaml").read_text()
TRAIN = "train: {batch: 4, epochs: 200, seed: 0}"
assert TRAIN in XOR

# the eval loss of epochs 1..: best at epoch 3 (0.4), then no improvement by more than 0.05
SCRIPT = [0.9, 0.6, 0.4, 0.38, 0.41, 0.37, 0.5, 0.2, 0.1]


def _spec(train: str):
    return load_spec_text(XOR.replace(TRAIN, train), "xor.yaml")


def _scripted(trainer: Trainer, start: int = 0) -> Trainer:
    """The trainer's eval loss follows SCRIPT (epoch by epoch), the rest of the run is real."""
    calls = iter(range(start, 100))

    def evaluate(prepared):
        return EvalResult(SCRIPT[next(calls)], 0.5, prepared["__count__"], None)

    trainer.model.evaluate = evaluate
    return trainer


def test_best_epoch_follows_kerass_rule():
    history = [{"epoch": i + 1, "eval_loss": v, "eval_accuracy": 1 - v} for i, v in enumerate(SCRIPT[:7])]
    assert best_epoch(history, "eval_loss") == 6  # 0.37
    assert best_epoch(history, "eval_loss", min_delta=0.05) == 3  # 0.38 and 0.37 are not 0.05 better than 0.4
    assert best_epoch(history, "eval_accuracy") == 6
    assert best_epoch(history + [{"epoch": 8, "eval_loss": 0.37}], "eval_loss") == 6, "the first of equals"
    assert best_epoch([{"epoch": 1, "eval_loss": None}], "eval_loss") is None


@pytest.mark.compiled
def test_stops_after_patience_epochs_without_improvement_and_keeps_the_best(tmp_path):
    spec = _spec("train: {batch: 4, epochs: 9, seed: 0, early_stop: {monitor: eval_loss, patience: 3, "
                 "min_delta: 0.05}, checkpoints: {best: eval_loss, every: 1, keep: 20}}")
    result = _scripted(Trainer(spec, run_dir=tmp_path / "run")).run()
    assert result.stopped_early == 6 and len(result.epochs) == 6, "best at 3, three epochs without: stop after 6"
    assert result.best == (6, "eval_loss", 0.37), "the best checkpoint takes any improvement (no min_delta)"
    best = load_weights(tmp_path / "run" / "best.safetensors")
    sixth, fifth = (load_weights(tmp_path / "run" / f"epoch-{e}.safetensors") for e in (6, 5))
    for key in sixth:
        np.testing.assert_array_equal(best[key], sixth[key], err_msg=key)
    assert any(not np.array_equal(best[key], fifth[key]) for key in fifth)
    assert not (tmp_path / "run" / "epoch-7.safetensors").exists()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6


@pytest.mark.compiled
def test_a_resumed_run_decides_as_the_unbroken_one(tmp_path):
    train = ("train: {batch: 4, epochs: 9, seed: 0, early_stop: {monitor: eval_loss, patience: 3, min_delta: 0.05}}")
    spec = _spec(train)
    first = _scripted(Trainer(spec, Overrides(epochs=4), run_dir=tmp_path / "run")).run()
    assert first.stopped_early is None and len(first.epochs) == 4
    resumed = _scripted(Trainer(spec, Overrides(epochs=9), run_dir=tmp_path / "run", resume=True), start=4).run()
    assert resumed.stopped_early == 6 and [r.epoch for r in resumed.epochs] == [5, 6]
    again = _scripted(Trainer(spec, Overrides(epochs=9), run_dir=tmp_path / "run", resume=True), start=6).run()
    assert again.epochs == [] and again.stopped_early == 6, "a stopped run does not train on"


@pytest.mark.compiled
def test_every_n_epochs_keeps_the_newest(tmp_path):
    spec = _spec("train: {batch: 4, epochs: 7, seed: 0, checkpoints: {every: 2, keep: 2}}")
    Trainer(spec, run_dir=tmp_path / "run").run()
    assert sorted(p.name for p in (tmp_path / "run").glob("epoch-*")) == ["epoch-4.safetensors", "epoch-6.safetensors"]
    assert not (tmp_path / "run" / "best.safetensors").exists()


@pytest.mark.compiled
def test_the_cli_names_the_best_epoch_and_the_stop(tmp_path):
    (tmp_path / "xor.yaml").write_text(XOR.replace(
        TRAIN, "train: {batch: 4, epochs: 300, seed: 0, early_stop: {monitor: train_loss, patience: 2, "
               "min_delta: 0.5}, checkpoints: {best: eval_accuracy}}"))
    result = CliRunner().invoke(app, ["train", str(tmp_path / "xor.yaml"), "--run-dir", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1] == "stopped early after epoch 3: no train_loss improvement for 2 epochs"
    assert lines[2].startswith("best: epoch ") and "(eval_accuracy " in lines[2] and lines[2].endswith(
        "%), in best.safetensors")
    assert "best.safetensors)" in lines[3]


@pytest.mark.parametrize("train, path, message", [
    ("{batch: 4, early_stop: {monitor: eval_loss}}", "train.early_stop.monitor",
     "eval_loss is recorded only with eval data, and the spec has no data.eval"),
    ("{batch: 4, checkpoints: {best: eval_accuracy}}", "train.checkpoints.best",
     "eval_accuracy is recorded only with eval data"),
    ("{batch: 4, early_stop: {monitor: val_loss}}", "train.early_stop.monitor", "'train_loss'"),
    ("{batch: 4, early_stop: {patience: 0}}", "train.early_stop.patience", "greater than 0"),
    ("{batch: 4, top_k: 2}", "train.top_k", "top-k accuracy is recorded on the eval data of a classifier, and the "
                                            "spec has no data.eval"),
])
def test_a_metric_the_run_does_not_record_is_refused(train, path, message):
    text = XOR.replace(TRAIN, f"train: {train}").replace("  eval: {source: xor}\n", "")
    with pytest.raises(SpecErrors) as info:
        build_graph(load_spec_text(text, "xor.yaml"))
    (diag,) = info.value.diagnostics
    assert diag.path == path and message in diag.message and diag.location.line == 18


def test_top_k_is_recorded_each_epoch_from_the_eval_scores(tmp_path):
    from netc.runtime.metrics import top_k_accuracy

    text = (SPECS / "digits-mlp.yaml").read_text()
    train_line = next(line for line in text.splitlines() if line.startswith("train:"))
    text = text.replace(train_line, "train: {batch: 32, epochs: 1, seed: 0, top_k: 3}")
    trainer = Trainer(load_spec_text(text, str(SPECS / "digits-mlp.yaml"), SPECS), run_dir=tmp_path / "run",
                      tier="python")
    (record,) = trainer.run().epochs
    evaluated = trainer.model.evaluate(trainer.model.prepare(trainer.eval_data.arrays))  # the same weights
    assert record.eval_top_k_accuracy == top_k_accuracy(evaluated.scores, evaluated.labels, 3)
    assert record.eval_accuracy < record.eval_top_k_accuracy < 1.0  # after one epoch: between top-1 and all


@pytest.mark.parametrize("k, edit, message", [
    (3, ("op: cross_entropy", "op: cross_entropy"), "top_k 3 exceeds the 2 classes"),
    (2, ("op: cross_entropy", "op: mse"), None),  # mse on a one-hot label still has classes
])
def test_top_k_needs_k_within_the_classes(k, edit, message):
    text = XOR.replace(TRAIN, f"train: {{batch: 4, top_k: {k}}}").replace(*edit)
    if message is None:
        assert build_graph(load_spec_text(text, "xor.yaml")).spec.train.top_k == 2
        return
    with pytest.raises(SpecErrors) as info:
        build_graph(load_spec_text(text, "xor.yaml"))
    (diag,) = info.value.diagnostics
    assert diag.path == "train.top_k" and message in diag.message and diag.location.line == 18
