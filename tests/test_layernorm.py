"""layernorm (PyTorch's LayerNorm) beyond the op contract and tests/test_ops.py's `layernorm` spec:
its shape rule and tensors, batches smaller than the plan (its saved statistics are per sample),
no train/eval mode, and PyTorch parity (nn.LayerNorm: loss, gradients, Adam steps, state_dict).

Also dropout in training mode against the numpy reference with the mask the plan drew: elsewhere
only evaluation mode (the identity) is compared, since a mask cannot be matched across libraries."""

from __future__ import annotations

import functools
from textwrap import dedent

import numpy as np
import pytest
import yaml

import reference as ref
from netc.compiler import compile_graph
from netc.errors import SpecErrors
from netc.graph import build_graph
from netc.ops import REGISTRY
from netc.ops.base import TRAIN_MODE, PlanFacts, Saved
from netc.runtime.model import Model
from netc.spec import load_spec_text

N = 8
RTOL, ATOL = 1e-10, 1e-12  # float64 plan vs float64 reference

# the rows of an image (normalized: 1, R = C*H rows of W), a conv's whole [C, H, W] map (normalized: 3)
# with relu after it, the features of a linear (eps 1e-3, default ones/zeros init); Adam
SPEC = dedent("""
    netc: 1
    name: ln
    inputs:
      img: {shape: [2, 6, 5]}
      label: {shape: [], dtype: int64, classes: 4}
    layers:
      - {name: ln_rows, op: layernorm, weight_init: {type: uniform, low: 0.5, high: 1.5},
         bias_init: {type: uniform, low: -0.2, high: 0.2}}
      - {name: conv1, op: conv2d, filters: 3, kernel: 3, padding: 1, bias_init: {type: normal, std: 0.1}}
      - {name: ln1, op: layernorm, normalized: 3, weight_init: {type: uniform, low: 0.5, high: 1.5},
         bias_init: {type: uniform, low: -0.2, high: 0.2}}
      - {name: relu1, op: relu}
      - {name: flat, op: flatten}
      - {name: fc1, op: linear, out: 16, bias_init: {type: uniform, low: -0.2, high: 0.2}}
      - {name: ln2, op: layernorm, eps: 0.001}
      - {name: tanh2, op: tanh}
      - {name: fc2, op: linear, out: 4}
    loss: {op: cross_entropy, input: fc2, target: label}
    optimizer: {type: adam, lr: 0.01}
    train: {batch: 8, seed: 0}
""").lstrip()


@functools.cache
def graph():
    return build_graph(load_spec_text(SPEC, "ln.yaml"))


def arrays(count: int = N, seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    return {"img": rng.normal(size=(count, 2, 6, 5)), "label": rng.integers(0, 4, count)}


# ---------------------------------------------------------------------------------- no Numba


def _validate(layer: str, shape: str):
    text = dedent(f"""
        netc: 1
        name: t
        inputs:
          x: {{shape: {shape}}}
          label: {{shape: [], dtype: int64, classes: 3}}
        layers:
          - {layer}
          - {{name: flat, op: flatten}}
          - {{name: fc, op: linear, out: 3}}
        loss: {{op: cross_entropy, input: fc, target: label}}
    """).lstrip()
    return build_graph(load_spec_text(text, "t.yaml"))


def test_shape_rule_tensors_and_saved_values():
    g = _validate("{name: ln, op: layernorm, normalized: 2}", "[3, 4, 5]")
    node = g.by_name["ln"]
    assert g.shape_of("ln") == (3, 4, 5)
    assert node.param_shapes == {"weight": (4, 5), "bias": (4, 5)}, "PyTorch's normalized_shape"
    assert node.state == {}
    assert not REGISTRY["layernorm"].is_(TRAIN_MODE)
    # one mean and one 1/std per row (3 per sample) of every sample of the batch
    saved = REGISTRY["layernorm"].saved(node.layer, [(3, 4, 5)], PlanFacts(batch=7, chunks=1))
    assert saved == {"mean": Saved(21), "invstd": Saved(21)}
    assert _validate("{name: ln, op: layernorm, affine: false}", "[6]").by_name["ln"].param_shapes == {}
    plan = compile_graph(graph(), N)  # no Numba: the plan's saved regions in W
    assert plan.buffers.saved[("ln_rows", "mean")][1].per_sample == N * 2 * 6
    assert plan.buffers.saved[("ln1", "invstd")][0] == "W"  # one batch's worth, after the shared scratch
    assert plan.buffers.saved[("ln1", "invstd")][1].per_sample == N


def test_normalising_more_dims_than_the_input_has_is_located():
    with pytest.raises(SpecErrors) as info:
        _validate("{name: ln, op: layernorm, normalized: 3}", "[4, 5]")
    (diag,) = info.value.diagnostics
    assert diag.code == "E-SHAPE" and diag.path == "layers[0].normalized"
    assert diag.message == "layernorm 'ln': normalises the last 3 dims of a rank-2 input [4, 5]"
    assert diag.hint == "normalized: 2 at most (the whole sample)"


# ---------------------------------------------------------------------------------- compiled, float64


@functools.cache
def model64() -> Model:
    """Shared: never change its weights."""
    return Model(graph(), dtype="float64", batch=N, seed=0)


@pytest.mark.compiled
@pytest.mark.parametrize("count", [N, N - 3, 1])
def test_full_and_partial_batches_match_the_reference(count):
    """Each sample's statistics come from its own rows: a partial batch reads and writes only its own."""
    model = model64()
    data = arrays(count, seed=count)
    expected_loss, expected_scores, expected = ref.network_loss_and_gradients(yaml.safe_load(SPEC),
                                                                              model.get_weights(), data)
    loss, grads = model.loss_and_gradients(data)
    assert loss == pytest.approx(expected_loss, rel=RTOL)
    assert set(grads) == set(expected)
    for key, grad in grads.items():
        np.testing.assert_allclose(grad, expected[key], rtol=RTOL, atol=ATOL, err_msg=f"{key}, {count} samples")
    np.testing.assert_allclose(model.predict(data), expected_scores, rtol=RTOL, atol=ATOL)


@pytest.mark.compiled
def test_training_and_evaluation_are_the_same():
    model = model64()
    data = arrays(seed=4)
    loss, grads = model.loss_and_gradients(data, training=False)
    loss_t, grads_t = model.loss_and_gradients(data, training=True, seed=1)
    assert loss == loss_t
    for key in grads:
        np.testing.assert_array_equal(grads[key], grads_t[key])


# ---------------------------------------------------------------------------------- PyTorch


def _hand_module(nn):
    """SPEC written with torch's modules."""
    import torch

    class HandLayerNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_rows = nn.LayerNorm(5)
            self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
            self.ln1 = nn.LayerNorm([3, 6, 5])
            self.fc1 = nn.Linear(90, 16)
            self.ln2 = nn.LayerNorm(16, eps=1e-3)
            self.fc2 = nn.Linear(16, 4)

        def forward(self, img):
            x = torch.relu(self.ln1(self.conv1(self.ln_rows(img))))
            return self.fc2(torch.tanh(self.ln2(self.fc1(x.flatten(1)))))

    return HandLayerNorm()


@pytest.mark.torch
@pytest.mark.compiled
def test_matches_torch_layernorm_modules():
    """float32: the loss and every gradient of one batch, then three Adam steps (the last batch partial)
    against torch.optim.Adam, then the loss and gradients of the trained weights; the state_dict loads
    into nn.LayerNorm with strict=True."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    torch.set_num_threads(2)
    model = Model(graph(), dtype="float32", batch=N, seed=0)
    module = _hand_module(torch.nn)
    weights = model.state_dict()
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()}, strict=True)

    def torch_loss_and_gradients(data):
        module.zero_grad(set_to_none=True)
        out = module(torch.from_numpy(data["img"].astype(np.float32)))
        loss = F.cross_entropy(out, torch.from_numpy(data["label"]))
        loss.backward()
        return loss.item(), {k: p.grad.numpy().copy() for k, p in module.named_parameters()}, out.detach().numpy()

    def check(data, when):
        loss, grads = model.loss_and_gradients(data)
        t_loss, t_grads, t_out = torch_loss_and_gradients(data)
        assert loss == pytest.approx(t_loss, rel=1e-4), when
        assert set(grads) == set(t_grads)
        for key in sorted(t_grads):
            assert np.abs(t_grads[key]).max() > 0, f"{key}: a zero gradient tests nothing"
            np.testing.assert_allclose(grads[key], t_grads[key], rtol=1e-4, atol=1e-5, err_msg=f"{key} {when}")
        np.testing.assert_allclose(model.predict(data), t_out, rtol=1e-4, atol=1e-5, err_msg=when)

    check(arrays(seed=1), "at the start")

    count = 3 * N - 3
    data = arrays(count, seed=5)
    order = np.random.default_rng(6).permutation(count)
    result = model.train_epoch(model.prepare(data), order=order, seed=0)
    assert result.batches == 3 and not result.diverged
    opt = graph().spec.optimizer
    optimizer = torch.optim.Adam(module.parameters(), lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps,
                                 weight_decay=opt.weight_decay)
    losses = []
    for b in range(3):
        idx = order[b * N:(b + 1) * N]
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(module(torch.from_numpy(data["img"][idx].astype(np.float32))),
                               torch.from_numpy(data["label"][idx]))
        loss.backward()
        optimizer.step()
        losses.append(loss.item() * len(idx))
    assert result.loss == pytest.approx(sum(losses) / count, rel=1e-4)
    trained = model.get_weights()
    for key, value in module.state_dict().items():
        assert np.abs(trained[key] - weights[key]).max() > 1e-3, f"{key} barely moved: the steps test nothing"
        np.testing.assert_allclose(trained[key], value.numpy(), rtol=1e-4, atol=1e-5, err_msg=f"{key} after 3 steps")

    check(arrays(seed=7), "after 3 steps")


# ---------------------------------------------------------------------------------- dropout, training mode

DROPOUT = dedent("""
    netc: 1
    name: drop
    inputs:
      x: {shape: [10]}
      label: {shape: [], dtype: int64, classes: 3}
    layers:
      - {name: fc1, op: linear, out: 64, bias_init: {type: uniform, low: -0.5, high: 0.5}}
      - {name: drop, op: dropout, p: 0.4}
      - {name: fc2, op: linear, out: 3, bias_init: {type: uniform, low: -0.5, high: 0.5}}
    loss: {op: cross_entropy, input: fc2, target: label}
    train: {batch: 8}
""").lstrip()


def _region(model: Model, region, n: int) -> np.ndarray:
    """A copy of the first n samples of a region of A, one row per sample."""
    return model.A[region.offset:region.offset + n * region.per_sample].reshape(n, region.per_sample).copy()


def _mask(model: Model, n: int) -> np.ndarray:
    """The mask the plan's dropout drew in its last forward (0 or 1/(1-p) per element)."""
    arena, region = model.plan.buffers.saved[("drop", "mask")]
    assert arena == "A"
    return _region(model, region, n)


def _reference_with_mask(weights: dict, data: dict, mask: np.ndarray):
    """(loss, fc2's output, gradients): the op references layer by layer, dropout with the given mask."""
    spec = yaml.safe_load(DROPOUT)
    layers = {layer["name"]: (REGISTRY[layer["op"]], REGISTRY[layer["op"]].spec.model_validate(layer))
              for layer in spec["layers"]}
    params = {name: {p: weights[f"{name}.{p}"] for p in ("weight", "bias")} for name in ("fc1", "fc2")}
    (fc1, l1), (drop, ld), (fc2, l2) = layers["fc1"], layers["drop"], layers["fc2"]
    x = data["x"]
    h = fc1.reference.forward(l1, [x], params["fc1"])
    d = drop.reference.forward(ld, [h], {}, mask=mask)
    z = fc2.reference.forward(l2, [d], params["fc2"])
    loss, dz = ref.cross_entropy_loss(z, data["label"])
    (dd,), g2 = fc2.reference.backward(l2, [d], z, dz, params["fc2"])
    (dh,), _ = drop.reference.backward(ld, [h], d, dd, {}, mask=mask)
    _, g1 = fc1.reference.backward(l1, [x], h, dh, params["fc1"])
    grads = {f"fc1.{k}": v for k, v in g1.items()} | {f"fc2.{k}": v for k, v in g2.items()}
    return loss, z, grads


@pytest.mark.compiled
def test_dropout_train_mode_matches_the_reference():
    """The mask the plan drew (Numba's np.random, seeded by `seed`) holds 0 and 1/(1-p) at a rate near p;
    the same seed draws it again, another seed another one; with that mask, the numpy reference gives the
    same outputs, loss and gradients. In evaluation the mask is all ones."""
    model = Model(build_graph(load_spec_text(DROPOUT, "drop.yaml")), dtype="float64", batch=N, seed=0)
    rng = np.random.default_rng(8)
    data = {"x": rng.normal(size=(N, 10)), "label": rng.integers(0, 3, N)}
    p = 0.4

    loss, grads = model.loss_and_gradients(data, training=True, seed=3)
    mask = _mask(model, N)
    scores = _region(model, model.plan.buffers.values[model.plan.buffers.root("fc2")], N)
    assert mask.shape == (N, 64)
    assert set(np.unique(mask)) == {0.0, 1 / (1 - p)}
    assert abs(np.mean(mask == 0) - p) < 0.08  # 512 draws: p's standard error is ~0.022

    expected_loss, expected_scores, expected = _reference_with_mask(model.get_weights(), data, mask)
    assert loss == pytest.approx(expected_loss, rel=RTOL)
    np.testing.assert_allclose(scores, expected_scores, rtol=RTOL, atol=ATOL)
    assert set(grads) == set(expected)
    for key, grad in grads.items():
        np.testing.assert_allclose(grad, expected[key], rtol=RTOL, atol=ATOL, err_msg=key)

    again, grads_again = model.loss_and_gradients(data, training=True, seed=3)
    np.testing.assert_array_equal(_mask(model, N), mask)
    assert again == loss and all(np.array_equal(grads_again[k], grads[k]) for k in grads)
    model.loss_and_gradients(data, training=True, seed=4)
    other = _mask(model, N)
    assert not np.array_equal(other, mask) and abs(np.mean(other == 0) - p) < 0.08

    evaluation, _ = model.loss_and_gradients(data, training=False)
    assert (_mask(model, N) == 1).all()
    assert evaluation == pytest.approx(_reference_with_mask(model.get_weights(), data, np.ones_like(mask))[0],
                                       rel=RTOL)
