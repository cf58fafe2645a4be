"""Gradient clipping (`optimizer.clip`): by global norm and by value, inside the compiled step, against
a numpy reference (float64) and PyTorch's clip_grad_norm_ / clip_grad_value_ where torch is installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netc.errors import SpecErrors
from netc.graph import build_graph
from netc.runtime.model import Model
from netc.spec import load_spec_text

SPECS = Path(__file__).resolve().parent.parent / "specs"
BASE = (SPECS / "siamese.yaml").read_text()  # a shared encoder: its gradient counts once in the norm
OPTIMIZER = next(line for line in BASE.splitlines() if line.startswith("optimizer:"))


def _graph(optimizer: str):
    return build_graph(load_spec_text(BASE.replace(OPTIMIZER, optimizer), "siamese.yaml"))


def _data(graph, count: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {k: rng.integers(0, i.classes, count) if i.classes else 3.0 * rng.normal(size=(count, *i.shape))
            for k, i in graph.spec.inputs.items()}


@pytest.mark.compiled
@pytest.mark.parametrize("clip", ["{norm: 0.05}", "{value: 0.002}", "{norm: 1000.0}"])
def test_one_step_matches_the_numpy_reference(clip):
    """One SGD step on one batch: w - lr * clip(g), g the plan's own gradient (checked elsewhere)."""
    graph = _graph(f"optimizer: {{type: sgd, lr: 0.5, clip: {clip}}}")
    model = Model(graph, dtype="float64", seed=0)
    data = _data(graph, graph.spec.train.batch)
    before = model.get_weights()
    _, grads = model.loss_and_gradients(data)
    flat = np.concatenate([g.ravel() for g in grads.values()])
    if "norm" in clip:
        limit = float(clip.split()[1].rstrip("}"))
        coef = min(1.0, limit / (np.linalg.norm(flat) + 1e-6))
        clipped = {k: g * coef for k, g in grads.items()}
        assert (coef < 1.0) == (limit < 1000), "the small limit clips, the large one does not"
    else:
        clipped = {k: np.clip(g, -0.002, 0.002) for k, g in grads.items()}
        assert any(np.abs(g).max() > 0.002 for g in grads.values())
    model.train_epoch(model.prepare(data), np.arange(graph.spec.train.batch), seed=0)
    after = model.get_weights()
    for key in grads:
        np.testing.assert_allclose(after[key], before[key] - 0.5 * clipped[key], rtol=1e-12, atol=1e-14, err_msg=key)


@pytest.mark.compiled
@pytest.mark.torch
def test_five_adam_steps_with_clipping_match_pytorch():
    torch = pytest.importorskip("torch")
    graph = _graph("optimizer: {type: adam, lr: 0.01, weight_decay: 0.001, clip: {norm: 0.1}}")
    model = Model(graph, dtype="float64", seed=0)
    weights = model.get_weights()
    nn, F = torch.nn, torch.nn.functional

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc_a = nn.Linear(weights["enc_a.weight"].shape[1], weights["enc_a.weight"].shape[0])
            self.head = nn.Linear(weights["head.weight"].shape[1], weights["head.weight"].shape[0])

        def forward(self, x):
            return self.head(torch.cat([F.relu(self.enc_a(x["left"])), F.relu(self.enc_a(x["right"]))], dim=1))

    assert set(weights) == {"enc_a.weight", "enc_a.bias", "head.weight", "head.bias"}
    twin = Twin().double()
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()}, strict=True)
    batch = graph.spec.train.batch
    data = _data(graph, 5 * batch, seed=1)
    model.train_epoch(model.prepare(data), np.arange(5 * batch), seed=0)
    optimizer = torch.optim.Adam(twin.parameters(), lr=0.01, weight_decay=0.001)
    t = {k: torch.from_numpy(v) for k, v in data.items()}
    for b in range(5):
        part = {k: v[b * batch:(b + 1) * batch] for k, v in t.items()}
        optimizer.zero_grad()
        F.cross_entropy(twin(part), part["same"]).backward()
        torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.1)
        optimizer.step()
    for key, value in twin.state_dict().items():
        np.testing.assert_allclose(model.get_weights()[key], value.numpy(), rtol=1e-9, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("clip, message", [("{}", "give `norm` or `value`"), ("{norm: 1.0, value: 0.5}", "give `norm` or `value`"),
                                           ("{norm: -1.0}", "greater than 0"), ("{max: 1.0}", "")])
def test_a_bad_clip_is_located(clip, message):
    with pytest.raises(SpecErrors) as info:
        _graph(f"optimizer: {{type: sgd, lr: 0.5, clip: {clip}}}")
    (diag,) = info.value.diagnostics
    assert diag.path.startswith("optimizer.clip") and message in diag.message
    assert diag.location.line == BASE.splitlines().index(OPTIMIZER) + 1
