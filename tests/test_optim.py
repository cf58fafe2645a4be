"""Optimizer steps of the compiled plan (the update fused into the backward pass) against
the reference optimizers of tests/reference.py applied to the reference gradient.

Every spec has train.batch == N and each `train_epoch` call sees N samples, so one call is
exactly one optimizer step. All specs share one small network with a frozen first layer,
an `lr_mult: 0.5` layer, a frozen layer in the middle (gradients must flow through it) and a
plain last layer, so every optimizer is also checked on frozen and scaled tensors.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
import pytest
import yaml

import reference as ref
from netc.graph import build_graph
from netc.runtime.model import Model
from netc.spec import load_spec_text

pytestmark = pytest.mark.compiled

N = 4
RTOL, ATOL = 1e-10, 1e-13
BIAS = "bias_init: {type: uniform, low: -0.5, high: 0.5}"

NETWORK = f"""
inputs:
  x: {{shape: [3]}}
  label: {{shape: [], dtype: int64, classes: 3}}
layers:
  - {{name: fc1, op: linear, out: 4, trainable: false, {BIAS}}}
  - {{name: act1, op: tanh}}
  - {{name: fc2, op: linear, out: 4, lr_mult: 0.5, {BIAS}}}
  - {{name: act2, op: tanh}}
  - {{name: fc3, op: linear, out: 4, trainable: false, {BIAS}}}
  - {{name: act3, op: tanh}}
  - {{name: fc4, op: linear, out: 3, {BIAS}}}
loss: {{op: cross_entropy, input: fc4, target: label}}
train: {{batch: {N}}}
"""

OPTIMIZERS = {
    "sgd": "{type: sgd, lr: 0.1}",
    "sgd_momentum": "{type: sgd, lr: 0.1, momentum: 0.9}",
    "sgd_nesterov_wd": "{type: sgd, lr: 0.1, momentum: 0.8, nesterov: true, weight_decay: 0.05}",
    "rmsprop": "{type: rmsprop, lr: 0.01, alpha: 0.9, eps: 0.000001, weight_decay: 0.05}",
    "rmsprop_momentum": "{type: rmsprop, lr: 0.01, momentum: 0.8}",
    "adam": "{type: adam, lr: 0.01, betas: [0.8, 0.95], eps: 0.000001, weight_decay: 0.05}",
}
WITH_STATE = ["sgd_momentum", "sgd_nesterov_wd", "rmsprop", "rmsprop_momentum", "adam"]


def spec_text(key: str) -> str:
    return f"netc: 1\nname: optim_{key}\n{NETWORK.strip()}\noptimizer: {OPTIMIZERS[key]}\n"


@functools.cache
def graph_of(key: str):
    return build_graph(load_spec_text(spec_text(key), f"{key}.yaml"))


@functools.cache
def parsed(key: str) -> dict:
    return yaml.safe_load(spec_text(key))


def fresh_model(key: str) -> Model:
    """A new model (training changes it) on the cached plan; seed 0 initial values."""
    return Model(graph_of(key), dtype="float64", seed=0)


@functools.cache
def arrays() -> dict:
    rng = np.random.default_rng(11)
    return {"x": rng.normal(size=(N, 3)), "label": rng.integers(0, 3, N)}


def train_once(model: Model, lr: float | None = None):
    result = model.train_epoch(model.prepare(arrays()), order=np.arange(N), lr=lr, seed=0)
    assert result.batches == 1 and not result.diverged
    return result


class ReferenceTraining:
    """The reference network trained by the reference optimizer: frozen tensors get no update,
    `lr_mult` scales the learning rate, as the spec says."""

    def __init__(self, key: str, weights: dict):
        self.spec = parsed(key)
        self.weights = dict(weights)
        self.optimizer = ref.Optimizer(self.spec["optimizer"])
        layers = {layer["name"]: layer for layer in self.spec["layers"]}
        self.trainable = {name for name in weights if layers[name.split(".")[0]].get("trainable", True)}
        self.lr_mult = {name: layers[name.split(".")[0]].get("lr_mult", 1.0) for name in weights}

    def gradients(self) -> tuple[float, dict]:
        loss, _, grads = ref.network_loss_and_gradients(self.spec, self.weights, arrays())
        return loss, {name: g for name, g in grads.items() if name in self.trainable}

    def step(self) -> float:
        loss, grads = self.gradients()
        self.weights = self.optimizer.step(self.weights, grads, self.lr_mult)
        return loss


def assert_weights_equal(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=RTOL, atol=ATOL, err_msg=name)


# ---------------------------------------------------------------------------------- the oracle itself


def test_reference_optimizers_agree_with_pytorch():
    """Where PyTorch is installed: three steps of each reference optimizer against torch.optim."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    p0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(3)]
    for key, text in OPTIMIZERS.items():
        config = yaml.safe_load(text)
        ours = ref.Optimizer(config)
        kwargs = {k: v for k, v in config.items() if k != "type"}
        tensor = torch.tensor(p0.copy(), requires_grad=True)
        theirs = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam}[config["type"]](
            [tensor], **kwargs)
        weights = {"p": p0.copy()}
        for g in grads:
            weights = ours.step(weights, {"p": g})
            tensor.grad = torch.tensor(g)
            theirs.step()
            np.testing.assert_allclose(weights["p"], tensor.detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=key)


# ---------------------------------------------------------------------------------- compiled steps vs reference


@pytest.mark.parametrize("key", list(OPTIMIZERS))
def test_one_step_matches_reference(key):
    model = fresh_model(key)
    reference = ReferenceTraining(key, model.get_weights())
    expected_loss = reference.step()
    result = train_once(model)
    assert result.loss == pytest.approx(expected_loss, rel=RTOL)
    assert model.step == 1
    assert_weights_equal(model.get_weights(), reference.weights)


@pytest.mark.parametrize("key", WITH_STATE)
def test_two_steps_carry_the_optimizer_state(key):
    """The second step uses the momentum / moments / square averages (and Adam's step count) of the first."""
    model = fresh_model(key)
    reference = ReferenceTraining(key, model.get_weights())
    for _ in range(2):
        expected_loss = reference.step()
        result = train_once(model)
        assert result.loss == pytest.approx(expected_loss, rel=RTOL)
        assert_weights_equal(model.get_weights(), reference.weights)
    assert model.step == 2
    # the state tensors themselves, in netc's slot order (frozen tensors keep zeros)
    config = parsed(key)["optimizer"]
    slots = {"sgd": ["momentum_buffer"], "rmsprop": ["square_avg", "momentum_buffer"],
             "adam": ["exp_avg", "exp_avg_sq"]}[config["type"]]
    state = model.optimizer_state()
    for name in model.get_weights():
        for i, slot in enumerate(slots[:model.slots]):
            expected = reference.optimizer.state.get(name, {}).get(slot, np.zeros_like(reference.weights[name]))
            np.testing.assert_allclose(state[f"{name}.state{i}"], expected, rtol=RTOL, atol=ATOL,
                                       err_msg=f"{name} {slot}")


def test_lr_mult_halves_that_layers_update():
    """Plain sgd: fc2 (lr_mult 0.5) moves by 0.5 * lr * g, fc4 by lr * g."""
    model = fresh_model("sgd")
    before = model.get_weights()
    _, grads = ReferenceTraining("sgd", before).gradients()
    train_once(model)
    after = model.get_weights()
    lr = 0.1
    for name, mult in [("fc2.weight", 0.5), ("fc2.bias", 0.5), ("fc4.weight", 1.0), ("fc4.bias", 1.0)]:
        np.testing.assert_allclose(before[name] - after[name], mult * lr * grads[name], rtol=1e-9, atol=ATOL,
                                   err_msg=name)


def test_frozen_layers_stay_while_the_layers_after_them_train():
    """fc1 (first) and fc3 (between two trained layers) are frozen: unchanged, not reported among the
    gradients; fc2 after fc1 still trains, with a gradient that flows back through frozen fc3."""
    model = fresh_model("sgd")
    before = model.get_weights()
    train_once(model)
    after = model.get_weights()
    for name in ("fc1.weight", "fc1.bias", "fc3.weight", "fc3.bias"):
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    for name in ("fc2.weight", "fc2.bias", "fc4.weight", "fc4.bias"):
        assert np.abs(after[name] - before[name]).max() > 1e-4, name
    assert set(model.gradients()) == {"fc2.weight", "fc2.bias", "fc4.weight", "fc4.bias"}


def test_lr_argument_overrides_the_spec():
    """train_epoch(lr=...) (what a schedule passes) replaces optimizer.lr for that epoch."""
    model = fresh_model("sgd")
    before = model.get_weights()
    _, grads = ReferenceTraining("sgd", before).gradients()
    train_once(model, lr=0.03)
    after = model.get_weights()
    np.testing.assert_allclose(before["fc4.weight"] - after["fc4.weight"], 0.03 * grads["fc4.weight"],
                               rtol=1e-9, atol=ATOL)


@pytest.mark.parametrize("key", ["sgd_momentum", "adam"])
def test_an_epoch_of_several_batches_in_the_given_order(key):
    """N + 2 samples in a shuffled order: a step on the first N, then one on the last 2 (mean over 2),
    with Adam's step count going 1, 2 inside the compiled epoch."""
    rng = np.random.default_rng(12)
    count = N + 2
    data = {"x": rng.normal(size=(count, 3)), "label": rng.integers(0, 3, count)}
    order = rng.permutation(count)
    model = fresh_model(key)
    reference = ReferenceTraining(key, model.get_weights())
    losses = []
    for rows in (order[:N], order[N:]):
        loss, _, grads = ref.network_loss_and_gradients(reference.spec, reference.weights,
                                                        {k: v[rows] for k, v in data.items()})
        grads = {name: g for name, g in grads.items() if name in reference.trainable}
        reference.weights = reference.optimizer.step(reference.weights, grads, reference.lr_mult)
        losses.append(loss)
    result = model.train_epoch(model.prepare(data), order=order, lr=None, seed=0)
    assert result.batches == 2 and model.step == 2
    assert result.loss == pytest.approx((N * losses[0] + 2 * losses[1]) / count, rel=RTOL)
    assert_weights_equal(model.get_weights(), reference.weights)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_and_rmsprop_divide_as_numpy_does(dtype):
    """Their loops divide under numpy's error model (netc.jit, `vector_division`), so that LLVM
    vectorizes them: a zero denominator (eps = 0, which a spec cannot ask for) gives nan where
    Python's model raised ZeroDivisionError; a nonzero one gives what the kernel always gave."""
    from netc.kernels.optim import adam_update, rmsprop_update

    zeros = [np.zeros(5, dtype) for _ in range(4)]
    adam_update(*zeros, 1e-3, 0.9, 0.999, 0.0, 0.0, 1)
    assert np.isnan(zeros[0]).all()
    zeros = [np.zeros(5, dtype) for _ in range(4)]
    rmsprop_update(*zeros, 1e-3, 0.99, 0.0, 0.0, 0.0)
    assert np.isnan(zeros[0]).all()

    rng = np.random.default_rng(0)
    p, g = rng.normal(size=1000).astype(dtype), rng.normal(size=1000).astype(dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    expected = p.astype(np.float64) - 1e-3 * g / (np.abs(g) + 1e-8)  # the first step: m/sqrt(v) = g/|g|
    adam_update(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
    np.testing.assert_allclose(p, expected, rtol=1e-6 if dtype == np.float32 else 1e-12)
