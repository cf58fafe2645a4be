"""Several weighted losses (`loss: [...]`): the gradient of the weighted sum (finite differences in
float64, a numpy reference, PyTorch where installed), each loss reported per epoch, weights read as
data (no recompiling), and the spec errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from netc.graph import build_graph
from netc.runtime.gradcheck import gradcheck
from netc.runtime.model import Model
from netc.spec import load_spec_text
from tests.helpers import check, one_error

# a classifier head and an auxiliary head on the hidden layer (nll after log_softmax), and an mse
# reconstruction head on a float target: three kinds of loss kernel, three weights
SPEC = """\
netc: 1
name: heads
inputs:
  x: {shape: [3]}
  y: {shape: [], dtype: int64, classes: 3}
layers:
  - {name: hidden, op: linear, in: x, out: 6}
  - {name: act, op: tanh}
  - {name: out, op: linear, out: 3}
  - {name: aux, op: linear, in: hidden, out: 3}
  - {name: aux_logp, op: log_softmax}
  - {name: recon, op: linear, in: act, out: 3}
loss:
  - {op: cross_entropy, input: out, target: y}
  - {op: nll, input: aux_logp, target: y, weight: 0.3}
  - {op: mse, input: recon, target: x, weight: 0.5}
optimizer: {type: sgd, lr: 0.1}
train: {batch: 5, epochs: 2, seed: 0, dtype: float64}
data: {train: {source: blobs, n: 40, classes: 3, features: 3}}
"""


def _graph(text: str = SPEC):
    return build_graph(load_spec_text(text, "heads.yaml"))


def _batch(count: int = 5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(count, 3)), "y": rng.integers(0, 3, count)}


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _reference(w: dict, data: dict) -> tuple[float, list[float]]:
    """The three losses written out in numpy from the spec (each a mean over the batch)."""
    x, y = data["x"], data["y"]
    hidden = x @ w["hidden.weight"].T + w["hidden.bias"]
    act = np.tanh(hidden)
    out = act @ w["out.weight"].T + w["out.bias"]
    aux = hidden @ w["aux.weight"].T + w["aux.bias"]
    recon = act @ w["recon.weight"].T + w["recon.bias"]
    rows = np.arange(len(y))
    ce = -_log_softmax(out)[rows, y].mean()
    nll = -_log_softmax(aux)[rows, y].mean()
    mse = 0.5 * ((recon - x) ** 2).sum(axis=1).mean()  # the lecture's ½‖y − ŷ‖² per sample
    return ce + 0.3 * nll + 0.5 * mse, [ce, nll, mse]


def test_the_total_is_the_weighted_sum_of_the_numpy_losses():
    model = Model(_graph(), dtype="float64")
    data = _batch()
    value, _ = model.loss_and_gradients(data)
    total, parts = _reference(model.get_weights(), data)
    assert value == pytest.approx(total, rel=1e-12)
    result = model.evaluate(model.prepare(data))
    np.testing.assert_allclose(result.losses, parts, rtol=1e-12)
    assert result.loss == pytest.approx(total, rel=1e-12)


def test_gradients_match_finite_differences_in_float64():
    for tensor in gradcheck(_graph(), count=5, max_entries=12):
        assert tensor.max_rel_error < 1e-6, tensor


def test_gradients_match_the_numpy_reference_by_central_differences_of_it():
    """The plan's gradient of the weighted sum against central differences of the numpy reference
    (independent of the plan's own forward)."""
    model = Model(_graph(), dtype="float64")
    data = _batch(seed=3)
    _, grads = model.loss_and_gradients(data)
    w = model.get_weights()
    for name, grad in grads.items():
        flat = w[name].reshape(-1)
        for i in range(0, flat.size, max(1, flat.size // 5)):
            keep = flat[i]
            flat[i] = keep + 1e-6
            up = _reference(w, data)[0]
            flat[i] = keep - 1e-6
            down = _reference(w, data)[0]
            flat[i] = keep
            assert grad.reshape(-1)[i] == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-9), (name, i)


@pytest.mark.torch
def test_gradients_match_pytorch():
    torch = pytest.importorskip("torch")
    model = Model(_graph(), dtype="float64")
    data = _batch(seed=1)
    value, grads = model.loss_and_gradients(data)
    w = {k: torch.tensor(v, requires_grad=True) for k, v in model.get_weights().items()}
    x, y = torch.tensor(data["x"]), torch.tensor(data["y"])
    F = torch.nn.functional
    hidden = F.linear(x, w["hidden.weight"], w["hidden.bias"])
    act = torch.tanh(hidden)
    out = F.linear(act, w["out.weight"], w["out.bias"])
    aux = F.log_softmax(F.linear(hidden, w["aux.weight"], w["aux.bias"]), dim=1)
    recon = F.linear(act, w["recon.weight"], w["recon.bias"])
    total = F.cross_entropy(out, y) + 0.3 * F.nll_loss(aux, y) + 0.5 * 0.5 * ((recon - x) ** 2).sum(1).mean()
    total.backward()
    assert value == pytest.approx(total.item(), rel=1e-12)
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, w[name].grad.numpy(), rtol=1e-10, atol=1e-13, err_msg=name)


def test_an_epoch_reports_each_loss_and_their_weighted_mean():
    model = Model(_graph(), dtype="float64")
    data = _batch(count=12, seed=2)
    prepared = model.prepare(data)
    before = model.get_weights()
    result = model.train_epoch(prepared, np.arange(12))
    assert len(result.losses) == 3 and result.batches == 3
    # the first batch's losses are measured before any update: check the epoch's first batch alone
    first = Model(_graph(), dtype="float64")
    first.set_weights(before)
    one = first.train_epoch(first.prepare({k: v[:5] for k, v in data.items()}), np.arange(5))
    total, parts = _reference(before, {k: v[:5] for k, v in data.items()})
    np.testing.assert_allclose(one.losses, parts, rtol=1e-12)
    assert one.loss == pytest.approx(total, rel=1e-12)
    assert result.loss == pytest.approx(np.dot([1.0, 0.3, 0.5], result.losses), rel=1e-12)


def test_weights_are_data_a_changed_weight_reuses_the_plan():
    a, b = _graph(), _graph(SPEC.replace("weight: 0.3", "weight: 0.7"))
    plan_a, plan_b = Model(a).plan, Model(b).plan
    assert plan_a.sources == plan_b.sources
    assert plan_a.hyper["loss1.weight"] == 0.3 and plan_b.hyper["loss1.weight"] == 0.7


def test_a_single_loss_keeps_the_plain_plan():
    text = SPEC.split("loss:\n")[0] + "loss: {op: cross_entropy, input: out, target: y}\n" + \
        SPEC.split("weight: 0.5}\n")[1]
    text = text.replace("  - {name: aux, op: linear, in: hidden, out: 3}\n  - {name: aux_logp, op: log_softmax}\n"
                        "  - {name: recon, op: linear, in: act, out: 3}\n", "")
    plan = Model(_graph(text)).plan
    assert "scale_gradient(" not in plan.source.split("def loss")[1]
    assert not any(key.startswith("loss") for key in plan.hyper)


def test_training_writes_each_loss_to_the_metrics(tmp_path):
    from netc.runtime.train import Trainer

    text = SPEC.replace("data: {train: {source: blobs, n: 40, classes: 3, features: 3}}",
                        "data: {train: {source: blobs, n: 40, classes: 3, features: 3},\n"
                        "       eval: {source: blobs, n: 20, classes: 3, features: 3, seed: 1}}")
    loaded = load_spec_text(text, str(tmp_path / "heads.yaml"), tmp_path)
    result = Trainer(loaded, run_dir=tmp_path / "run", tier="python").run()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 == len(result.epochs)
    for line in lines:
        losses = line["losses"]
        assert set(losses) == {f"{split}_{name}" for split in ("train", "eval") for name in ("out", "aux_logp", "recon")}
        for split in ("train", "eval"):
            weighted = losses[f"{split}_out"] + 0.3 * losses[f"{split}_aux_logp"] + 0.5 * losses[f"{split}_recon"]
            assert line[f"{split}_loss"] == pytest.approx(weighted, rel=1e-9)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("weight", ["", ", weight: 0.3"])
def test_an_epochs_means_follow_its_own_batch_sizes_and_one_loss_reports_its_own_mean(weight):
    """The batch sizes kept from one epoch are not those of the next with another count (12 samples in
    batches of 5, 5, 2, then 7 in 5, 2): each epoch's mean is the numpy reference's. A single loss's own
    mean (EpochResult.losses) is unweighted; the epoch's loss is its weighted total."""
    text = SPEC.split("loss:\n")[0] + f"loss: {{op: cross_entropy, input: out, target: y{weight}}}\n" + \
        SPEC.split("weight: 0.5}\n")[1]
    text = text.replace("  - {name: aux, op: linear, in: hidden, out: 3}\n  - {name: aux_logp, op: log_softmax}\n"
                        "  - {name: recon, op: linear, in: act, out: 3}\n", "")
    scale = 0.3 if weight else 1.0
    model = Model(_graph(text), dtype="float64")
    for count in (12, 7, 12):
        data = _batch(count=count, seed=count)
        result = model.evaluate(model.prepare(data))
        w = model.get_weights()
        out = np.tanh(data["x"] @ w["hidden.weight"].T + w["hidden.bias"]) @ w["out.weight"].T + w["out.bias"]
        expected = -_log_softmax(out)[np.arange(count), data["y"]].mean()
        assert result.losses == pytest.approx([expected], rel=1e-12)
        assert result.loss == pytest.approx(scale * expected, rel=1e-12)
        trained = model.train_epoch(model.prepare(data), np.arange(count))
        assert trained.batches == -(-count // 5)
        assert trained.loss == (trained.losses[0] if not weight else pytest.approx(0.3 * trained.losses[0], rel=1e-12))


def test_two_losses_reading_one_layer():
    text = SPEC.replace("{op: nll, input: aux_logp, target: y, weight: 0.3}", "{op: cross_entropy, input: out, target: y}")
    text = text.replace("  - {name: aux, op: linear, in: hidden, out: 3}\n  - {name: aux_logp, op: log_softmax}\n", "")
    check(one_error(text, "heads.yaml"), "E-LOSS", "losses 0 and 1 both read 'out'", line=13, path="loss[1].input",
          hint="its own head", file="heads.yaml")


def test_two_label_inputs():
    text = SPEC.replace("  y: {shape: [], dtype: int64, classes: 3}\n",
                        "  y: {shape: [], dtype: int64, classes: 3}\n  z: {shape: [], dtype: int64, classes: 3}\n")
    text = text.replace("{op: nll, input: aux_logp, target: y,", "{op: nll, input: aux_logp, target: z,")
    check(one_error(text, "heads.yaml"), "E-LOSS", "two label inputs ('y' and 'z')", line=16, path="loss[1].target",
          hint="read 'y' in every classification loss", file="heads.yaml")


def test_an_error_in_one_loss_of_the_list_points_at_it():
    text = SPEC.replace("{op: mse, input: recon, target: x, weight: 0.5}", "{op: mse, input: recon, target: x, weight: -1.0}")
    check(one_error(text, "heads.yaml"), "E-VALUE", "greater than or equal to 0", line=16, path="loss[2].weight",
          file="heads.yaml")
    text = SPEC.replace("input: recon, target: x", "input: recn, target: x")
    check(one_error(text, "heads.yaml"), "E-REF", "loss input 'recn' is not a layer", line=16, path="loss[2].input",
          hint="did you mean 'recon'?", file="heads.yaml")


def test_an_empty_loss_list():
    text = SPEC.split("loss:\n")[0] + "loss: []\n" + SPEC.split("weight: 0.5}\n")[1]
    check(one_error(text, "heads.yaml"), "E-VALUE", "at least 1 item", line=13, path="loss", file="heads.yaml")


def test_a_head_no_loss_reads_is_dead():
    text = SPEC.replace("  - {op: mse, input: recon, target: x, weight: 0.5}\n", "")
    check(one_error(text, "heads.yaml"), "E-DEAD", "layer 'recon' does not lead to the loss", line=12,
          hint="the losses read 'out' and 'aux_logp'", file="heads.yaml")


def test_the_cli_shows_each_loss_in_the_epoch_line(tmp_path):
    from typer.testing import CliRunner

    import netc.cli  # noqa: F401  (registers the commands)
    from netc.cli.app import app

    spec = Path(__file__).resolve().parent.parent / "specs" / "digits-aux.yaml"
    result = CliRunner().invoke(app, ["train", str(spec), "--epochs", "1", "--run-dir", str(tmp_path / "run"),
                                      "--tier", "python"])
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("epoch   1")]
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    shown = f"(fc2 {record['losses']['train_fc2']:.4f}, aux {record['losses']['train_aux']:.4f})"
    assert shown in line, line
    assert "Loss: cross_entropy(fc2, label) + 0.3 × cross_entropy(aux, label)." in \
        CliRunner().invoke(app, ["inspect", str(spec)]).output


def test_a_run_folder_from_before_a_defaulted_field_resumes(tmp_path):
    """spec.yaml of a run started before `loss.weight` (and `blocks:`) existed lacks them: the resumed
    spec, with their defaults, is the same spec."""
    from netc.runtime.train import Overrides, Trainer
    from netc.spec import load_spec

    xor = Path(__file__).resolve().parent.parent / "specs" / "xor.yaml"
    Trainer(load_spec(xor), Overrides(epochs=2), run_dir=tmp_path / "run", tier="python").run()
    saved = tmp_path / "run" / "spec.yaml"
    old = saved.read_text().replace("  weight: 1.0\n", "").replace("blocks: {}\n", "")
    assert "weight: 1.0" not in old and "blocks:" not in old and old != saved.read_text()
    saved.write_text(old)
    result = Trainer(load_spec(xor), Overrides(epochs=3), run_dir=tmp_path / "run", resume=True,
                     tier="python").run()
    assert result.start_epoch == 2 and [r.epoch for r in result.epochs] == [3]


SHARED_BUFFER = """\
netc: 1
name: shared
inputs:
  x: {shape: [3]}
  t: {shape: [3]}
  y: {shape: [], dtype: int64, classes: 3}
layers:
  - {name: z, op: linear, in: x, out: 3}
  - {name: logp, op: log_softmax}
  - {name: h, op: identity, in: z}
loss:
  - {op: nll, input: logp, target: y}
  - {op: mse, input: z, target: t, weight: 0.1}
  - {op: mse, input: h, target: t, weight: 0.7}
train: {batch: 4, dtype: float64}
"""


def test_losses_whose_gradients_meet_in_one_buffer_add_up():
    """nll fused into its log_softmax writes d/dz, mse on z writes d/dz, and mse on a view of z writes
    the same buffer: each after the first adds its weighted share (written over, the first was lost)."""
    graph = build_graph(load_spec_text(SHARED_BUFFER, "shared.yaml"))
    model = Model(graph, dtype="float64")
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(4, 3)), "t": rng.normal(size=(4, 3)), "y": rng.integers(0, 3, 4)}
    _, grads = model.loss_and_gradients(data)
    w, b = model.get_weights()["z.weight"], model.get_weights()["z.bias"]
    z = data["x"] @ w.T + b
    p = np.exp(_log_softmax(z))
    dz = (p - np.eye(3)[data["y"]]) / 4 + (0.1 + 0.7) * (z - data["t"]) / 4
    np.testing.assert_allclose(grads["z.weight"], dz.T @ data["x"], rtol=1e-12)
    np.testing.assert_allclose(grads["z.bias"], dz.sum(axis=0), rtol=1e-12)
    for tensor in gradcheck(graph, data, max_entries=12):
        assert tensor.max_rel_error < 1e-6, tensor


NLL = """\
netc: 1
name: classifier
inputs:
  x: {shape: [4]}
  y: {shape: [], dtype: int64, classes: 3}
layers:
  - {name: hidden, op: linear, in: x, out: 5}
  - {name: act, op: sigmoid}
  - {name: logits, op: linear, out: 3}
LOSS
optimizer: {type: sgd, lr: 0.5, momentum: 0.9}
train: {batch: 4, epochs: 1, seed: 0}
data: {train: {source: blobs, n: 40, classes: 3, features: 4}}
"""


@pytest.mark.compiled
@pytest.mark.parametrize("tier", ["fused", "python"])
def test_nll_after_log_softmax_trains_as_cross_entropy_on_the_logits_and_scores_log_probabilities(tier):
    """The fused nll is computed as cross_entropy of the log_softmax's input (its gradient with no log
    on the way to the backward pass): training gives the same numbers to the bit; the log_softmax
    runs for evaluation, whose scores are the log-probabilities."""
    nll = NLL.replace("LOSS", "  - {name: logp, op: log_softmax}\nloss: {op: nll, input: logp, target: y}")
    ce = NLL.replace("LOSS", "loss: {op: cross_entropy, input: logits, target: y}")
    models = [Model(build_graph(load_spec_text(text, "c.yaml")), tier=tier) for text in (nll, ce)]
    rng = np.random.default_rng(3)
    data = {"x": rng.normal(size=(22, 4)).astype(np.float32), "y": rng.integers(0, 3, 22)}
    results = []
    for model in models:
        prepared = model.prepare(data)
        results.append([model.train_epoch(prepared, rng_order) for rng_order in
                        (np.random.default_rng(s).permutation(22) for s in range(3))])
    assert [r.loss for r in results[0]] == [r.loss for r in results[1]]
    for name, value in models[0].get_weights().items():
        np.testing.assert_array_equal(value, models[1].get_weights()[name], err_msg=name)
    scored = [model.evaluate(model.prepare(data)) for model in models]
    assert scored[0].loss == scored[1].loss and scored[0].accuracy == scored[1].accuracy
    logits = scored[1].scores.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.testing.assert_allclose(scored[0].scores, shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)),
                               atol=1e-6)


def test_cross_entropy_counts_the_first_largest_logit_as_the_prediction():
    """A row's prediction is its first largest logit (found in the pass that finds the maximum); a NaN
    after the first logit is never the prediction. Loss and gradient against a float64 numpy reference."""
    from netc.kernels.loss import cross_entropy

    z = np.array([[1, 3, 3, 0], [2, 2, 1, 1], [0, 0, 0, 5], [-1, -2, -3, -1], [4, np.nan, 1, 0]], np.float32)
    labels = np.array([1, 1, 3, 3, 0])
    dz = np.zeros_like(z)
    loss, correct = cross_entropy(z, labels, dz, False, 1.0, False)
    assert correct == 3  # rows 0, 2 and 4; rows 1 and 3 predict their first tied logit, index 0
    rows = np.arange(4)
    z64 = z[:4].astype(np.float64)
    shifted = z64 - z64.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss, correct = cross_entropy(z[:4], labels[:4], dz[:4], True, 1.0, False)
    assert correct == 2 and loss == pytest.approx(-logp[rows, labels[:4]].mean(), rel=1e-6)
    expected = np.exp(logp)
    expected[rows, labels[:4]] -= 1
    np.testing.assert_allclose(dz[:4], expected / 4, rtol=1e-5, atol=1e-7)
