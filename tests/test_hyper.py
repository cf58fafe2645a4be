"""Hyperparameters are data, not source: the optimizer's (momentum, weight decay, nesterov, alpha,
eps, betas), each layer's lr_mult and a dropout's p live in the plan's H arena, and the learning rate
is an argument of the loop, one per batch. A spec that changes only them reuses the compiled plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netc.compiler import FUSED, compile_graph
from netc.graph import build_graph
from netc.runtime.model import Model
from netc.spec import load_spec_text

SPECS = Path(__file__).resolve().parent.parent / "specs"
BASE = (SPECS / "digits-mlp.yaml").read_text()
assert "optimizer: {type: adam, lr: 0.001}" in BASE and "p: 0.2" in BASE and "out: 128, weight_init: he}" in BASE

VARIANTS = {
    "adam": ("optimizer: {type: adam, lr: 0.001}",
             ["optimizer: {type: adam, lr: 0.01, betas: [0.8, 0.95], eps: 1.0e-6, weight_decay: 0.01}"]),
    "sgd": ("optimizer: {type: sgd, lr: 0.1, momentum: 0.9}",
            ["optimizer: {type: sgd, lr: 0.05, momentum: 0.5, nesterov: true, weight_decay: 0.001}"]),
    "rmsprop": ("optimizer: {type: rmsprop, lr: 0.01, momentum: 0.5}",
                ["optimizer: {type: rmsprop, lr: 0.02, alpha: 0.9, eps: 1.0e-5, momentum: 0.8}"]),
}


def _graph(optimizer: str, p: float = 0.2, lr_mult: float | None = None):
    text = BASE.replace("optimizer: {type: adam, lr: 0.001}", optimizer).replace("p: 0.2", f"p: {p}")
    if lr_mult is not None:
        text = text.replace("out: 128, weight_init: he}", f"out: 128, weight_init: he, lr_mult: {lr_mult}}}")
    return build_graph(load_spec_text(text, "digits-mlp.yaml"))


@pytest.mark.parametrize("kind", list(VARIANTS))
def test_other_hyperparameters_give_the_same_source(kind):
    """The plan (and so its cache key) is the same; only the H arena's values differ."""
    first, others = VARIANTS[kind]
    plan = compile_graph(_graph(first))
    for other in others:
        changed = compile_graph(_graph(other, p=0.4, lr_mult=0.5))
        assert changed.sources == plan.sources
        assert changed.hyper != plan.hyper
        assert changed.hyper["drop.p"] == 0.4 and changed.hyper["fc2.lr_mult"] == 0.5
    assert "0.9" not in plan.source.split("def forward", 1)[1], "no hyperparameter value in the functions"


def test_momentum_on_or_off_changes_the_optimizer_state_and_so_the_source():
    with_momentum = compile_graph(_graph("optimizer: {type: sgd, lr: 0.1, momentum: 0.9}"))
    without = compile_graph(_graph("optimizer: {type: sgd, lr: 0.1}"))
    assert with_momentum.sources != without.sources


@pytest.mark.compiled
def test_changing_hyperparameters_compiles_nothing_and_uses_the_new_values():
    """One compile of the fused loop for two specs with other hyperparameters; their runs differ
    (the values are read at run time) and each matches a model built for it alone."""
    first = Model(_graph("optimizer: {type: sgd, lr: 0.1, momentum: 0.9}"), seed=0, tier=FUSED)
    second = Model(_graph("optimizer: {type: sgd, lr: 0.05, momentum: 0.5, nesterov: true, weight_decay: 0.01}",
                          p=0.5, lr_mult=0.25), seed=0, tier=FUSED)
    assert first.plan.module is second.plan.module, "one generated module"
    rng = np.random.default_rng(0)
    data = {"pixels": rng.normal(size=(96, 64)), "label": rng.integers(0, 10, 96)}
    order = np.arange(96)
    first.train_epoch(first.prepare(data), order, seed=3)
    compiled = dict(first.plan.module.epoch.stats.cache_misses) | dict(first.plan.module.epoch.stats.cache_hits)
    second.train_epoch(second.prepare(data), order, seed=3)
    after = dict(second.plan.module.epoch.stats.cache_misses) | dict(second.plan.module.epoch.stats.cache_hits)
    assert len(first.plan.module.epoch.overloads) == 1 and after == compiled, "no second compile"
    a, b = first.get_weights(), second.get_weights()
    assert not np.allclose(a["fc1.weight"], b["fc1.weight"])
    # the second spec's numbers are its own: the same as the Python tier of a model of it alone
    alone = Model(second.graph, seed=0, tier="python")
    alone.train_epoch(alone.prepare(data), order, seed=3)
    for key, value in alone.get_weights().items():
        np.testing.assert_array_equal(b[key], value, err_msg=key)


@pytest.mark.compiled
def test_one_learning_rate_per_batch():
    """A schedule needs no recompiling: three batches at three rates are three one-batch epochs."""
    graph = _graph("optimizer: {type: sgd, lr: 0.1, momentum: 0.9}", p=0.0)
    rng = np.random.default_rng(1)
    data = {"pixels": rng.normal(size=(96, 64)), "label": rng.integers(0, 10, 96)}
    rates = [0.3, 0.1, 0.01]
    scheduled = Model(graph, seed=0, tier="python")
    scheduled.train_epoch(scheduled.prepare(data), np.arange(96), lr=np.array(rates), seed=0)
    stepped = Model(graph, seed=0, tier="python")
    prepared = stepped.prepare(data)
    for b, rate in enumerate(rates):
        part = {key: value[32 * b:32 * (b + 1)] for key, value in prepared.items() if key != "__count__"}
        part["__count__"] = 32
        stepped.train_epoch(part, np.arange(32), lr=rate, seed=0)
    for key, value in stepped.get_weights().items():
        np.testing.assert_array_equal(scheduled.get_weights()[key], value, err_msg=key)
    with pytest.raises(ValueError, match="2 learning rates for 3 batches"):
        scheduled.train_epoch(scheduled.prepare(data), np.arange(96), lr=np.array([0.1, 0.2]))


def test_a_renamed_copy_of_a_spec_shares_the_plan():
    """A sweep's trials are copies of one spec under other names: one plan, compiled once."""
    text = BASE.replace("name: digits_mlp", "name: trial_7")
    assert text != BASE
    renamed = compile_graph(build_graph(load_spec_text(text, "trial-7.yaml")))
    assert renamed.sources == compile_graph(_graph("optimizer: {type: adam, lr: 0.001}")).sources
