"""A loss at every step (many-to-many): linear over a sequence [T, F], label inputs of shape [T],
cross_entropy and nll averaged over every step of every sample, the text source's shifted targets,
and the located errors of the shapes that do not fit. The spec and graph tests compile nothing;
the `compiled` ones compare the plan with the numpy reference, finite differences and PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from helpers import check, one_error, text_of

import reference as ref
from netc.errors import DataError
from netc.graph import build_graph
from netc.runtime.data import load_dataset
from netc.runtime.data.text import encode
from netc.runtime.gradcheck import gradcheck
from netc.runtime.model import Model
from netc.spec import load_spec_text

N = 5  # samples of the compiled tests (a plan of 8: a partial batch too)

# an LSTM scores every step of a window of indices: the language model's shape, small
STEPS = text_of("""
    netc: 1                                                       # 1
    name: steps                                                   # 2
    inputs:                                                       # 3
      chars: {shape: [6], dtype: int64, indices: 7}               # 4
      next: {shape: [6], dtype: int64, classes: 5}                # 5
    layers:                                                       # 6
      - {name: emb, op: embedding, in: chars, num: 7, dim: 3}     # 7
      - {name: lstm, op: lstm, hidden: 4, sequences: true}        # 8
      - {name: out, op: linear, out: 5}                           # 9
    loss: {op: cross_entropy, input: out, target: next}           # 10
    train: {batch: 8}                                             # 11
""")

# linear over a float sequence [T, F], a tanh fused into the first one's epilogue, then a classifier
# at every step; `BIAS` toggles the biases
DENSE = text_of("""
    netc: 1
    name: dense_steps
    inputs:
      x: {shape: [4, 6]}
      y: {shape: [4], dtype: int64, classes: 3}
    layers:
      - {name: fc1, op: linear, out: 5, bias: BIAS}
      - {name: act, op: tanh}
      - {name: fc2, op: linear, out: 3, bias: BIAS}
    loss: {op: cross_entropy, input: fc2, target: y}
    train: {batch: 8}
""")


def edit(old: str, new: str, text: str = STEPS) -> str:
    assert old in text, old
    return text.replace(old, new)


def batch(text: str, seed: int = 0) -> dict:
    """N samples of the spec's inputs: floats from N(0, 1), indices and labels uniform."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, inp in yaml.safe_load(text)["inputs"].items():
        if "classes" in inp or "indices" in inp:
            arrays[name] = rng.integers(0, inp.get("classes", inp.get("indices")), (N, *inp["shape"]))
        else:
            arrays[name] = rng.normal(size=(N, *inp["shape"]))
    return arrays


def model_of(text: str, seed: int = 0) -> Model:
    """A float64 model whose biases are random too (initialised to zero, they would test nothing)."""
    model = Model(build_graph(load_spec_text(text, "s.yaml")), dtype="float64", batch=8, seed=seed)
    rng = np.random.default_rng(seed + 1)
    weights = model.get_weights()
    for name in weights:
        if "bias" in name:
            weights[name] = rng.normal(0.0, 0.5, weights[name].shape)
    model.set_weights(weights)
    return model


# ---------------------------------------------------------------------------------- spec and graph


def test_linear_over_a_sequence_shapes_parameters_and_mult_adds():
    graph = build_graph(load_spec_text(edit("BIAS", "true", DENSE), "s.yaml"))
    fc1, fc2 = graph.by_name["fc1"], graph.by_name["fc2"]
    assert fc1.shape == (4, 5) and fc2.shape == (4, 3)
    assert fc1.param_shapes == {"weight": (5, 6), "bias": (5,)}  # the same weight at every step
    assert fc1.macs == 4 * 6 * 5 and fc2.macs == 4 * 5 * 3  # T * F * out
    assert graph.label_steps == 4


def test_linear_on_rank_three_is_still_refused_with_the_flatten_hint():
    text = edit("x: {shape: [4, 6]}", "x: {shape: [2, 4, 6]}", edit("BIAS", "true", DENSE))
    d = one_error(text)
    check(d, "E-SHAPE", "linear 'fc1': needs a flat input [features] or a sequence [T, features], got [2, 4, 6]", line=7, col=5,
          path="layers[0]", hint="`{op: flatten}`")


def test_labels_at_every_step_and_scores_of_another_length():
    d = one_error(edit("next: {shape: [6]", "next: {shape: [5]"))
    check(d, "E-LOSS", "cross_entropy input 'out' has shape [6, 5] (6 steps) but target 'next' has a label at "
          "each of 5 steps", line=10, col=34, path="loss.input", hint="score every step: [5, 5]")


def test_labels_at_every_step_and_one_score_vector_per_sample():
    d = one_error(edit("sequences: true", "sequences: false"))
    check(d, "E-LOSS", "cross_entropy input 'out' has shape [5] (one score vector per sample) but target 'next' "
          "has a label at each of 6 steps", line=10, col=34, path="loss.input", hint="`sequences: true`")


def test_labels_at_every_step_and_scores_of_other_classes():
    d = one_error(edit("out: 5}", "out: 4}"))
    check(d, "E-LOSS", "cross_entropy input 'out' has shape [6, 4] but target 'next' has 5 classes", line=10,
          col=34, path="loss.input", hint="[6, 5]")


def test_scores_at_every_step_and_one_label_per_sample_hint_the_shape_of_labels_per_step():
    d = one_error(edit("next: {shape: [6]", "next: {shape: []"))
    check(d, "E-LOSS", "cross_entropy input 'out' has shape [6, 5] but target 'next' has 5 classes", line=10,
          col=34, path="loss.input", hint="{shape: [6], dtype: int64, classes: 5}")


def test_mse_refuses_labels_at_every_step():
    d = one_error(edit("op: cross_entropy", "op: mse"))
    check(d, "E-LOSS", "mse reads one label per sample, but target 'next' has a label at each of 6 steps",
          line=10, col=37, path="loss.target", hint="cross_entropy")


def test_a_label_input_of_rank_two_is_refused():
    d = one_error(edit("next: {shape: [6]", "next: {shape: [6, 2]"))
    check(d, "E-VALUE", "an int64 label input has shape [] (one class index per sample) or [T] (one per step of "
          "a sequence)", line=5, col=9, path="inputs.next")


def test_nll_after_log_softmax_at_every_step_is_accepted():
    text = edit("loss: {op: cross_entropy, input: out", "  - {name: logp, op: log_softmax}\n"
                "loss: {op: nll, input: logp")
    graph = build_graph(load_spec_text(text, "s.yaml"))
    assert graph.by_name["logp"].shape == (6, 5)


# ---------------------------------------------------------------------------------- the text source


def text_spec(tmp_path, labels: str, window: int = 4):
    """A character model scoring the window's last len(labels) steps (a slice), labels of shape `labels`."""
    text = "hello, world\nhello again\n"
    (tmp_path / "t.txt").write_text(text)
    classes = len(set(text))
    spec = f"""netc: 1
name: chars
inputs:
  chars: {{shape: [{window}], dtype: int64, indices: {classes}}}
  next: {{shape: {labels}, dtype: int64, classes: {classes}}}
layers:
  - {{name: emb, op: embedding, in: chars, num: {classes}, dim: 3}}
  - {{name: lstm, op: lstm, hidden: 4, sequences: true}}
  - {{name: last, op: slice, start: -{yaml.safe_load(labels)[0]}}}
  - {{name: out, op: linear, out: {classes}}}
loss: {{op: cross_entropy, input: out, target: next}}
data:
  train: {{source: text, path: t.txt, stride: 3}}
"""
    (tmp_path / "chars.yaml").write_text(spec)
    return load_spec_text(spec, file=str(tmp_path / "chars.yaml"), base_dir=tmp_path), text


def test_the_text_source_gives_the_next_character_after_every_position(tmp_path):
    loaded, text = text_spec(tmp_path, "[4]")
    data = load_dataset(loaded, "train")
    codes = encode(text, sorted(set(text)))
    starts = np.arange(0, len(text) - 4, 3)
    np.testing.assert_array_equal(data.arrays["chars"], codes[starts[:, None] + np.arange(4)])
    np.testing.assert_array_equal(data.arrays["next"], codes[starts[:, None] + np.arange(1, 5)])  # shifted by one
    np.testing.assert_array_equal(data.arrays["next"][:, :-1], data.arrays["chars"][:, 1:])
    assert data.arrays["next"].shape == (len(starts), 4)


def test_the_text_source_refuses_labels_of_another_length(tmp_path):
    """[2] fits the spec (the last two steps are scored) but not the text source: the next character
    after the window, or after each of its positions."""
    loaded, _ = text_spec(tmp_path, "[2]")
    build_graph(loaded)  # a valid spec
    with pytest.raises(DataError) as info:
        load_dataset(loaded, "train")
    (d,) = info.value.diagnostics
    assert d.code == "E-DATA" and d.path == "data.train", d.format()
    assert d.location.file.endswith("chars.yaml") and d.location.line == 13, d.format()
    assert "label input 'next' has shape [2]: the text source gives the next character after the window " \
           "(shape []) or after each of its 4 positions (shape [4])" in d.message
    assert "[] or [4]" in d.hint


# ---------------------------------------------------------------------------------- compiled, float64


@pytest.mark.compiled
@pytest.mark.parametrize("bias", ["true", "false"])
def test_linear_over_a_sequence_matches_the_reference(bias):
    """Forward, loss and every gradient of linear over [T, F] (a tanh fused into its epilogue) with a
    loss at every step, against the numpy reference."""
    text = edit("BIAS", bias, DENSE)
    model, arrays = model_of(text), batch(text)
    weights = model.get_weights()
    loss, scores, expected = ref.network_loss_and_gradients(yaml.safe_load(text), weights, arrays)
    np.testing.assert_allclose(model.predict(arrays), scores, rtol=1e-10, atol=1e-12)
    got, grads = model.loss_and_gradients(arrays)
    assert got == pytest.approx(loss, rel=1e-10)
    assert set(grads) == set(expected)
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, expected[name], rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.compiled
def test_linear_reference_backward_matches_finite_differences():
    rng = np.random.default_rng(3)
    x, w, b, dy = rng.normal(size=(3, 4, 5)), rng.normal(size=(2, 5)), rng.normal(size=2), rng.normal(size=(3, 4, 2))
    params = {"weight": w, "bias": b}
    layer = {"op": "linear", "out": 2}
    (dx,), grads = ref.op_backward(layer, [x], dy, params)
    value = lambda: float((ref.op_forward(layer, [x], params) * dy).sum())  # noqa: E731
    np.testing.assert_allclose(dx, ref.numeric_grad(value, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grads["weight"], ref.numeric_grad(value, w), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grads["bias"], ref.numeric_grad(value, b), rtol=1e-6, atol=1e-8)


@pytest.mark.compiled
@pytest.mark.parametrize("loss", ["cross_entropy", "nll"])
def test_gradcheck_of_a_loss_at_every_step(loss):
    text = STEPS if loss == "cross_entropy" else edit(
        "loss: {op: cross_entropy, input: out", "  - {name: logp, op: log_softmax}\nloss: {op: nll, input: logp")
    graph = build_graph(load_spec_text(text, "s.yaml"))
    results = gradcheck(graph, count=N, max_entries=12)
    assert {r.name for r in results} == {"emb.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0",
                                         "lstm.bias_hh_l0", "out.weight", "out.bias"}
    worst = {r.name: r.max_rel_error for r in results}
    assert max(worst.values()) < 1e-6, worst


@pytest.mark.compiled
def test_accuracy_and_confusion_count_every_step():
    model, arrays = model_of(STEPS), batch(STEPS)
    result = model.evaluate(model.prepare(arrays))
    scores = result.scores.reshape(N, 6, 5)
    predicted = scores.argmax(axis=-1)
    assert result.accuracy == pytest.approx((predicted == arrays["next"]).mean())
    expected = np.zeros((5, 5), np.int64)
    np.add.at(expected, (arrays["next"].ravel(), predicted.ravel()), 1)
    np.testing.assert_array_equal(result.confusion, expected)  # N * T predictions
    loss, _, _ = ref.network_loss_and_gradients(yaml.safe_load(STEPS), model.get_weights(), arrays)
    assert result.loss == pytest.approx(loss, rel=1e-10)  # the mean over every step of every sample


@pytest.mark.compiled
def test_lstm_linear_and_cross_entropy_at_every_step_match_pytorch():
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    model, arrays = model_of(STEPS), batch(STEPS)
    weights = model.get_weights()
    emb, lstm, fc = torch.nn.Embedding(7, 3), torch.nn.LSTM(3, 4, batch_first=True), torch.nn.Linear(4, 5)
    for name, module in (("emb", emb), ("lstm", lstm), ("out", fc)):
        module.double().load_state_dict({k.split(".", 1)[1]: torch.from_numpy(v) for k, v in weights.items()
                                         if k.startswith(name + ".")}, strict=True)
    logits = fc(lstm(emb(torch.from_numpy(arrays["chars"])))[0])  # [N, T, C]
    loss = functional.cross_entropy(logits.reshape(-1, 5), torch.from_numpy(arrays["next"]).reshape(-1))
    loss.backward()
    got, grads = model.loss_and_gradients(arrays)
    assert got == pytest.approx(loss.item(), rel=1e-10)
    np.testing.assert_allclose(model.predict(arrays), logits.detach().numpy().reshape(N, -1), rtol=1e-10, atol=1e-12)
    expected = {f"{name}.{k}": p.grad.numpy() for name, module in (("emb", emb), ("lstm", lstm), ("out", fc))
                for k, p in module.named_parameters()}
    assert set(grads) == set(expected)
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, expected[name], rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.compiled
def test_a_model_with_a_loss_at_every_step_trains_evaluates_and_samples(tmp_path):
    """The periodic text of tests/test_text.py, every position scored: it is learnt, `netc eval` counts
    every step (the confusion matrix holds N * T predictions) and `netc sample` continues from the last."""
    import json

    from typer.testing import CliRunner

    from netc.cli.app import app
    from netc.runtime.train import Overrides, Trainer

    (tmp_path / "p.txt").write_text("abcd\n" * 300)
    text = f"""netc: 1
name: chars
inputs:
  chars: {{shape: [6], dtype: int64, indices: 5}}
  next: {{shape: [6], dtype: int64, classes: 5}}
layers:
  - {{name: emb, op: embedding, in: chars, num: 5, dim: 8}}
  - {{name: lstm, op: lstm, hidden: 16, sequences: true}}
  - {{name: out, op: linear, out: 5}}
loss: {{op: cross_entropy, input: out, target: next}}
optimizer: {{type: adam, lr: 0.02}}
train: {{batch: 32, epochs: 3, seed: 0}}
data:
  train: {{source: text, path: p.txt}}
"""
    spec_file = tmp_path / "chars.yaml"
    spec_file.write_text(text)
    result = Trainer(load_spec_text(text, file=str(spec_file), base_dir=tmp_path), Overrides(),
                     run_dir=tmp_path / "run").run()
    assert result.epochs[-1].train_accuracy > 0.99
    weights = str(result.run_dir / "last.safetensors")
    runner = CliRunner()
    figures = json.loads(runner.invoke(app, ["eval", str(spec_file), "--weights", weights, "--split", "train",
                                             "-f", "json"]).stdout)
    assert sum(map(sum, figures["confusion"])) == figures["count"] * 6  # every step of every window
    assert figures["bits_per_character"] == pytest.approx(figures["loss"] / np.log(2), rel=1e-12)
    assert figures["bits_per_character"] < 0.1
    greedy = runner.invoke(app, ["sample", str(spec_file), "--weights", weights, "--prompt", "ab", "--length", "12",
                                 "--temperature", "0"])
    assert greedy.exit_code == 0, greedy.output
    assert greedy.stdout.startswith("abcd\nabcd\nabcd")
