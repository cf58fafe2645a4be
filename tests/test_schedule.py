"""Learning-rate schedules (`optimizer.schedule`): each rate against PyTorch's schedulers (where torch is
installed) and Caffe's formulas, located errors, the rates reaching the compiled loop one per batch,
and a run resumed mid-schedule matching an unbroken one to the bit."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from netc.errors import SpecErrors
from netc.runtime.checkpoint import load_weights
from netc.runtime.schedule import rate, rates
from netc.runtime.train import Overrides, Trainer
from netc.spec import load_spec_text
from netc.spec.models import Sgd

SPECS = Path(__file__).resolve().parent.parent / "specs"
XOR = (SPECS / "xor.yaml").read_text()
assert "optimizer: {type: adam, lr: 0.05}" in XOR


def _optimizer(schedule: dict, lr: float = 0.1) -> Sgd:
    return Sgd.model_validate({"type": "sgd", "lr": lr, "schedule": schedule})


# (schedule, PyTorch scheduler factory): each compared for 40 steps of the scheduler
CASES = {
    "step": ({"type": "step", "step_size": 7, "gamma": 0.5},
             lambda S, o: S.StepLR(o, step_size=7, gamma=0.5)),
    "multistep": ({"type": "multistep", "milestones": [3, 10, 25], "gamma": 0.3},
                  lambda S, o: S.MultiStepLR(o, milestones=[3, 10, 25], gamma=0.3)),
    "exponential": ({"type": "exponential", "gamma": 0.9},
                    lambda S, o: S.ExponentialLR(o, gamma=0.9)),
    "cosine": ({"type": "cosine", "period": 30, "eta_min": 0.001},
               lambda S, o: S.CosineAnnealingLR(o, T_max=30, eta_min=0.001)),
    "cosine-restarts": ({"type": "cosine", "period": 5, "restarts": True, "t_mult": 2, "eta_min": 0.01},
                        lambda S, o: S.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=0.01)),
    "poly": ({"type": "poly", "total": 25, "power": 2.0},
             lambda S, o: S.PolynomialLR(o, total_iters=25, power=2.0)),
    "step-warmup": ({"type": "step", "step_size": 10, "gamma": 0.5, "warmup": {"length": 6, "start": 0.25}},
                    lambda S, o: S.ChainedScheduler([S.LinearLR(o, start_factor=0.25, total_iters=6),
                                                     S.StepLR(o, step_size=10, gamma=0.5)])),
    "exponential-warmup": ({"type": "exponential", "gamma": 0.95, "warmup": {"length": 4}},
                           lambda S, o: S.ChainedScheduler([S.LinearLR(o, start_factor=0.1, total_iters=4),
                                                            S.ExponentialLR(o, gamma=0.95)])),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", list(CASES))
def test_rates_match_pytorch_schedulers(name):
    torch = pytest.importorskip("torch")
    schedule, make = CASES[name]
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = make(torch.optim.lr_scheduler, optimizer)
    ours = _optimizer(schedule)
    for t in range(40):
        assert rate(ours, t) == pytest.approx(scheduler.get_last_lr()[0], rel=1e-12, abs=1e-15), t
        optimizer.step()
        scheduler.step()


def test_caffe_inv_and_poly_and_the_warmup_formula():
    inv = _optimizer({"type": "inv", "gamma": 1e-4, "power": 0.75}, lr=0.01)  # LeNet's solver
    for t in (0, 1, 100, 10000):
        assert rate(inv, t) == pytest.approx(0.01 * (1 + 1e-4 * t) ** -0.75, rel=1e-14)
    poly = _optimizer({"type": "poly", "total": 100, "power": 0.5})
    assert [rate(poly, t) for t in (0, 75, 100, 150)] == pytest.approx([0.1, 0.05, 0.0, 0.0])
    cosine = _optimizer({"type": "cosine", "period": 10, "warmup": {"length": 4, "start": 0.5}})
    assert rate(cosine, 2) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.2)) * 0.75)


def test_per_epoch_and_per_step_rates_of_a_chunk():
    per_epoch = _optimizer({"type": "step", "step_size": 2, "gamma": 0.5})
    assert list(rates(per_epoch, 3, 5, 4, 10)) == [0.05] * 4  # epoch 3: one decay so far
    per_step = _optimizer({"type": "exponential", "gamma": 0.5, "per": "step"})
    assert list(rates(per_step, 1, 2, 3, 4)) == pytest.approx([0.1 * 0.5 ** t for t in (6, 7, 8)])
    assert list(rates(Sgd(type="sgd", lr=0.2), 5, 0, 2, 9)) == [0.2, 0.2]


@pytest.mark.parametrize("replace, path, message", [
    ("optimizer: {type: adam, lr: 0.05, schedule: {type: cosine_annealing, period: 3}}",
     "optimizer.schedule.type", "unknown"),
    ("optimizer: {type: adam, lr: 0.05, schedule: {type: step}}", "optimizer.schedule.step_size", "missing"),
    ("optimizer: {type: adam, lr: 0.05, schedule: {type: step, step_size: 2, every: 3}}",
     "optimizer.schedule.every", ""),
    ("optimizer: {type: adam, lr: 0.05, schedule: {type: cosine, period: 3, warmup: {length: 0}}}",
     "optimizer.schedule.warmup.length", "greater than 0"),
])
def test_bad_schedules_are_located(replace, path, message):
    with pytest.raises(SpecErrors) as info:
        load_spec_text(XOR.replace("optimizer: {type: adam, lr: 0.05}", replace), "xor.yaml")
    (diag,) = info.value.diagnostics
    assert diag.path == path and message in diag.message.lower()
    assert diag.location.line == 17 and diag.location.col > 1


SCHEDULED = XOR.replace("optimizer: {type: adam, lr: 0.05}",
                        "optimizer: {type: sgd, lr: 0.5, momentum: 0.9, "
                        "schedule: {type: cosine, period: 40, per: step, warmup: {length: 5}}}")


@pytest.mark.compiled
def test_a_resumed_run_continues_the_schedule_to_the_bit(tmp_path):
    loaded = load_spec_text(SCHEDULED, "xor.yaml")
    whole = Trainer(loaded, Overrides(epochs=6), run_dir=tmp_path / "whole").run()
    Trainer(loaded, Overrides(epochs=2), run_dir=tmp_path / "parts").run()
    resumed = Trainer(loaded, Overrides(epochs=6), run_dir=tmp_path / "parts", resume=True).run()
    assert [r.lr for r in resumed.epochs] == [r.lr for r in whole.epochs[2:]]
    assert loaded.spec.train.batch == 4, "xor's 4 samples: one step per epoch"
    assert whole.epochs[-1].lr == pytest.approx(rate(loaded.spec.optimizer, 6 - 1))
    assert len({r.lr for r in whole.epochs}) == 6, "the rate changes every epoch"
    a, b = load_weights(tmp_path / "whole" / "last.safetensors"), load_weights(tmp_path / "parts" / "last.safetensors")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    lines = (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    assert '"lr": ' in lines[0]


PLATEAU_SCRIPT = [1.0, 0.8, 0.79, 0.795, 0.8, 0.81, 0.6, 0.6, 0.61, 0.62, 0.63, 0.64, 0.65, 0.5, 0.7, 0.7, 0.7]


@pytest.mark.torch
@pytest.mark.parametrize("monitor, sign", [("eval_loss", 1.0), ("eval_accuracy", -1.0)])
def test_plateau_matches_pytorchs_reduce_on_plateau(monitor, sign):
    """The rate of each epoch after a scripted metric sequence, against ReduceLROnPlateau stepped with it."""
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min" if sign > 0 else "max", factor=0.5, patience=2, threshold=0.01, cooldown=1,
        min_lr=0.02)
    ours = _optimizer({"type": "plateau", "monitor": monitor, "factor": 0.5, "patience": 2, "threshold": 0.01,
                       "cooldown": 1, "min_lr": 0.02})
    history = []
    for epoch, value in enumerate(PLATEAU_SCRIPT):
        assert rate(ours, epoch, history) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12), epoch
        history.append({"epoch": epoch + 1, monitor: sign * value})
        scheduler.step(sign * value)
    assert optimizer.param_groups[0]["lr"] < 0.05, "the script reduces the rate more than once"


def test_plateau_rates_follow_the_metrics_they_are_given():
    plateau = _optimizer({"type": "plateau", "monitor": "train_loss", "patience": 0})
    history = [{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 1.0}, {"epoch": 3, "train_loss": 0.5}]
    assert [rate(plateau, t, history) for t in range(4)] == pytest.approx([0.1, 0.1, 0.01, 0.01])
    assert list(rates(plateau, 2, 0, 3, 10, history)) == pytest.approx([0.01] * 3)


@pytest.mark.compiled
def test_a_plateau_run_resumes_to_the_bit(tmp_path):
    text = XOR.replace("optimizer: {type: adam, lr: 0.05}",
                       "optimizer: {type: sgd, lr: 0.5, schedule: {type: plateau, monitor: train_loss, patience: 0, "
                       "threshold: 0.5, factor: 0.5}}")
    loaded = load_spec_text(text, "xor.yaml")
    whole = Trainer(loaded, Overrides(epochs=5), run_dir=tmp_path / "whole").run()
    losses = [r.train_loss for r in whole.epochs]
    assert all(later > 0.5 * earlier for earlier, later in zip(losses, losses[1:])), "no epoch gains 50%"
    # epoch 1 sets the best; from epoch 2 on, each epoch without a 50% gain halves the next epoch's rate
    assert [r.lr for r in whole.epochs] == pytest.approx([0.5, 0.5, 0.25, 0.125, 0.0625])
    Trainer(loaded, Overrides(epochs=2), run_dir=tmp_path / "parts").run()
    Trainer(loaded, Overrides(epochs=5), run_dir=tmp_path / "parts", resume=True).run()
    a, b = load_weights(tmp_path / "whole" / "last.safetensors"), load_weights(tmp_path / "parts" / "last.safetensors")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
