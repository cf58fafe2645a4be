"""Weight sharing and fan-out, tested like Caffe's TestSharedWeightsUpdate.

A siamese-style spec where enc_b / proj_b use enc_a's / proj_a's tensors (`share:`) is
compared with the same network without sharing whose second copies hold the same values:
the shared gradient must be the sum of the two copies' gradients, one sgd step must move
the shared tensor once by lr * that sum, and the tensor must be exposed and counted once.
enc is large enough for the BLAS path (4 * 64 * 32 = 8192 mult-adds), proj is small (loops),
so both ways of accumulating a weight gradient are covered. A second spec has tensors read
by two layers each (again one BLAS-sized, one small): their gradient is the sum of both.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import yaml

import reference as ref
from netc.graph import build_graph
from netc.runtime.gradcheck import gradcheck
from netc.runtime.model import Model
from netc.spec import load_spec_text

pytestmark = pytest.mark.compiled

N = 4
RTOL, ATOL = 1e-10, 1e-12
LR = 0.1
BIAS = "bias_init: {type: uniform, low: -0.5, high: 0.5}"

SHARED = f"""
netc: 1
name: shared
inputs:
  a: {{shape: [64]}}
  b: {{shape: [64]}}
  label: {{shape: [], dtype: int64, classes: 3}}
layers:
  - {{name: enc_a, op: linear, in: a, out: 32, {BIAS}}}
  - {{name: act_a, op: tanh}}
  - {{name: enc_b, op: linear, in: b, out: 32, share: enc_a}}
  - {{name: act_b, op: tanh}}
  - {{name: proj_a, op: linear, in: act_a, out: 4, {BIAS}}}
  - {{name: proj_b, op: linear, in: act_b, out: 4, share: proj_a}}
  - {{name: pair, op: concat, in: [proj_a, proj_b]}}
  - {{name: head, op: linear, out: 3, {BIAS}}}
loss: {{op: cross_entropy, input: head, target: label}}
optimizer: {{type: sgd, lr: {LR}}}
train: {{batch: {N}}}
"""
UNSHARED = SHARED.replace("name: shared", "name: unshared").replace(", share: enc_a", "").replace(", share: proj_a", "")
COPIES = {"enc_b": "enc_a", "proj_b": "proj_a"}  # unshared layer -> the layer it copies

FANOUT = f"""
netc: 1
name: fanout
inputs:
  x: {{shape: [6]}}
  label: {{shape: [], dtype: int64, classes: 3}}
layers:
  - {{name: h, op: linear, out: 64, {BIAS}}}
  - {{name: act, op: tanh}}
  - {{name: p, op: linear, in: act, out: 32, {BIAS}}}
  - {{name: q, op: linear, in: act, out: 32, {BIAS}}}
  - {{name: s, op: add, in: [p, q]}}
  - {{name: r, op: linear, in: s, out: 3, {BIAS}}}
  - {{name: u, op: linear, in: s, out: 3, {BIAS}}}
  - {{name: o, op: add, in: [r, u]}}
loss: {{op: cross_entropy, input: o, target: label}}
train: {{batch: {N}}}
"""


@functools.cache
def graph_of(text: str):
    return build_graph(load_spec_text(text, "t.yaml"))


@functools.cache
def shared_model() -> Model:
    """Shared by the gradient tests: never change its weights."""
    return Model(graph_of(SHARED), dtype="float64", batch=N, seed=0)


@functools.cache
def unshared_model() -> Model:
    """The same network without sharing; each copy holds the shared model's values."""
    model = Model(graph_of(UNSHARED), dtype="float64", batch=N, seed=0)
    values = shared_model().get_weights()
    for copy, original in COPIES.items():
        for pname in ("weight", "bias"):
            values[f"{copy}.{pname}"] = values[f"{original}.{pname}"]
    model.set_weights(values, strict=True)
    return model


@functools.cache
def pair_arrays() -> dict:
    rng = np.random.default_rng(21)
    return {"a": rng.normal(size=(N, 64)), "b": rng.normal(size=(N, 64)), "label": rng.integers(0, 3, N)}


@functools.cache
def fanout_arrays() -> dict:
    rng = np.random.default_rng(22)
    return {"x": rng.normal(size=(N, 6)), "label": rng.integers(0, 3, N)}


def assert_close(actual, expected, name=""):
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=name)


# ---------------------------------------------------------------------------------- sharing


def test_shared_tensor_is_exposed_and_counted_once():
    shared, unshared = shared_model(), unshared_model()
    names = {f"{layer}.{p}" for layer in ("enc_a", "proj_a", "head") for p in ("weight", "bias")}
    assert set(shared.get_weights()) == names
    assert set(shared.loss_and_gradients(pair_arrays())[1]) == names
    copies = sum(v.size for k, v in unshared.get_weights().items() if k.split(".")[0] in COPIES)
    assert graph_of(SHARED).param_count() == graph_of(UNSHARED).param_count() - copies
    assert shared.plan.buffers.param_size == graph_of(SHARED).param_count()


def test_shared_gradient_is_the_sum_of_each_uses_gradient():
    """Caffe's TestSharedWeightsUpdate: with equal values, the shared network computes the same loss
    as the unshared one, and the shared tensor's gradient is the sum of both copies' gradients."""
    shared_loss, shared = shared_model().loss_and_gradients(pair_arrays())
    unshared_loss, unshared = unshared_model().loss_and_gradients(pair_arrays())
    assert shared_loss == pytest.approx(unshared_loss, rel=RTOL)
    for copy, original in COPIES.items():
        for pname in ("weight", "bias"):
            name = f"{original}.{pname}"
            each = unshared[name], unshared[f"{copy}.{pname}"]
            assert np.abs(each[0] - each[1]).max() > 1e-6, "the two uses should contribute different gradients"
            assert_close(shared[name], each[0] + each[1], name)
    for pname in ("weight", "bias"):
        assert_close(shared[f"head.{pname}"], unshared[f"head.{pname}"], "head")


def test_shared_gradient_matches_reference():
    model = shared_model()
    expected_loss, expected_scores, expected = ref.network_loss_and_gradients(
        yaml.safe_load(SHARED), model.get_weights(), pair_arrays())
    loss, grads = model.loss_and_gradients(pair_arrays())
    assert loss == pytest.approx(expected_loss, rel=RTOL)
    for name, grad in grads.items():
        assert_close(grad, expected[name], name)


def test_one_sgd_step_moves_the_shared_tensor_once():
    """Updated once per step, by lr * (sum of both uses' gradients): not once per user."""
    model = Model(graph_of(SHARED), dtype="float64", seed=0)  # trained: not the cached one
    before = model.get_weights()
    _, unshared = unshared_model().loss_and_gradients(pair_arrays())
    result = model.train_epoch(model.prepare(pair_arrays()), order=np.arange(N), lr=None, seed=0)
    assert result.batches == 1
    after = model.get_weights()
    for copy, original in COPIES.items():
        for pname in ("weight", "bias"):
            name = f"{original}.{pname}"
            total = unshared[name] + unshared[f"{copy}.{pname}"]
            assert_close(after[name], before[name] - LR * total, name)
    for pname in ("weight", "bias"):
        assert_close(after[f"head.{pname}"], before[f"head.{pname}"] - LR * unshared[f"head.{pname}"], "head")


def test_gradcheck_shared():
    results = gradcheck(graph_of(SHARED), arrays=pair_arrays(), max_entries=12)
    worst = {r.name: r.max_rel_error for r in results}
    assert set(worst) == {f"{layer}.{p}" for layer in ("enc_a", "proj_a", "head") for p in ("weight", "bias")}
    assert max(worst.values()) < 1e-6, worst


# ---------------------------------------------------------------------------------- a tensor read by two layers


@functools.cache
def fanout_model() -> Model:
    return Model(graph_of(FANOUT), dtype="float64", batch=N, seed=0)


def test_tensor_read_by_two_layers_gets_the_sum_of_both_gradients():
    """act is read by p and q (BLAS-sized), s by r and u (small): written out with the reference ops,
    each of their gradients is the sum of what its two readers pass back."""
    model = fanout_model()
    w = model.get_weights()
    arrays = fanout_arrays()
    x = arrays["x"]
    # forward
    act = ref.tanh_forward(ref.linear_forward(x, w["h.weight"], w["h.bias"]))  # (n, 64)
    s = ref.linear_forward(act, w["p.weight"], w["p.bias"]) + ref.linear_forward(act, w["q.weight"], w["q.bias"])
    o = ref.linear_forward(s, w["r.weight"], w["r.bias"]) + ref.linear_forward(s, w["u.weight"], w["u.bias"])
    loss, do = ref.cross_entropy_loss(o, arrays["label"])  # (n, 3)
    # backward: the two readers of s, then the two readers of act
    ds_from_r, _, _ = ref.linear_backward(do, s, w["r.weight"])
    ds_from_u, _, _ = ref.linear_backward(do, s, w["u.weight"])
    ds = ds_from_r + ds_from_u  # (n, 32)
    dact_from_p, _, _ = ref.linear_backward(ds, act, w["p.weight"])
    dact_from_q, _, _ = ref.linear_backward(ds, act, w["q.weight"])
    dact = dact_from_p + dact_from_q  # (n, 64)
    _, dw_h, db_h = ref.linear_backward(ref.tanh_backward(dact, act), x, w["h.weight"])
    _, dw_p, _ = ref.linear_backward(ds, act, w["p.weight"])

    got_loss, grads = model.loss_and_gradients(arrays)
    assert got_loss == pytest.approx(loss, rel=RTOL)
    assert_close(grads["h.weight"], dw_h, "h.weight")
    assert_close(grads["h.bias"], db_h, "h.bias")
    assert_close(grads["p.weight"], dw_p, "p.weight")


def test_fanout_gradients_match_reference():
    model = fanout_model()
    expected_loss, _, expected = ref.network_loss_and_gradients(yaml.safe_load(FANOUT), model.get_weights(),
                                                                fanout_arrays())
    loss, grads = model.loss_and_gradients(fanout_arrays())
    assert loss == pytest.approx(expected_loss, rel=RTOL)
    assert set(grads) == set(expected)
    for name, grad in grads.items():
        assert_close(grad, expected[name], name)


def test_gradcheck_fanout():
    results = gradcheck(graph_of(FANOUT), arrays=fanout_arrays(), max_entries=12)
    worst = {r.name: r.max_rel_error for r in results}
    assert max(worst.values()) < 1e-6, worst
