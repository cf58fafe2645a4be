"""Recurrent layers (rnn, lstm, gru: PyTorch's nn.RNN, nn.LSTM, nn.GRU) beyond the op contract:
sequence inputs and their shape errors, PyTorch's parameter names and initialisation, the compiled
loop (forward and backpropagation through time) against the numpy reference in float64 on full
and partial batches, gradcheck for each cell, a plan whose source does not grow with T, and, where
installed, PyTorch (outputs, loss, gradients, five optimizer steps, load_state_dict(strict=True))
and onnxruntime."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
import yaml
from rich.console import Console

import reference as ref
from helpers import check, one_error
from netc.compiler import compile_graph
from netc.compiler.describe import plan_renderable
from netc.graph import build_graph
from netc.ops import REGISTRY
from netc.runtime.gradcheck import gradcheck
from netc.runtime.init import initial_values
from netc.runtime.model import Model
from netc.spec import load_spec_text

N = 6
RTOL, ATOL = 1e-10, 1e-12  # float64 plan vs float64 reference
CELLS = ["rnn", "lstm", "gru"]
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def spec_text(cell: str, sequences: bool = False, steps: int = 5, features: int = 3, hidden: int = 4,
              optimizer: str = "{type: sgd, lr: 0.1}", extra: str = "") -> str:
    """x [T, F] -> one recurrent layer -> (flatten) -> linear head -> cross entropy over 3 classes."""
    return f"""\
netc: 1
name: {cell}
inputs:
  x: {{shape: [{steps}, {features}]}}
  label: {{shape: [], dtype: int64, classes: 3}}
layers:
  - {{name: rec, op: {cell}, hidden: {hidden}, sequences: {str(sequences).lower()}{extra}}}
  - {{name: flat, op: flatten}}
  - {{name: fc, op: linear, out: 3}}
loss: {{op: cross_entropy, input: fc, target: label}}
optimizer: {optimizer}
train: {{batch: {N}, seed: 0}}
"""


# three cells stacked: every step of a gru into an lstm (its input gradient is checked) and into a
# second lstm sharing its parameters (their gradients add up), every step of their sum into an rnn
# whose last state feeds the head
STACKED = """\
netc: 1
name: stacked
inputs:
  x: {shape: [4, 3]}
  label: {shape: [], dtype: int64, classes: 3}
layers:
  - {name: g, op: gru, hidden: 5, sequences: true}
  - {name: l, op: lstm, hidden: 4, sequences: true}
  - {name: l2, op: lstm, in: g, hidden: 4, sequences: true, share: l}
  - {name: both, op: add, in: [l, l2]}
  - {name: r, op: rnn, hidden: 3, bias: false}
  - {name: fc, op: linear, out: 3}
loss: {op: cross_entropy, input: fc, target: label}
optimizer: {type: sgd, lr: 0.1}
train: {batch: 6, seed: 0}
"""


def graph_of(text: str):
    return build_graph(load_spec_text(text, "rec.yaml"))


def arrays(graph, count: int, seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(count, *graph.inputs["x"])), "label": rng.integers(0, 3, count)}


def moved(weights: dict, seed: int = 9) -> dict:
    """The weights moved off their initial values (biases too), so every term counts."""
    rng = np.random.default_rng(seed)
    return {k: v + 0.2 * rng.normal(size=v.shape) for k, v in weights.items()}


# ---------------------------------------------------------------------------------- no Numba


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("sequences", [False, True])
def test_shapes_and_pytorch_parameter_names(cell, sequences):
    graph = graph_of(spec_text(cell, sequences, steps=7, features=3, hidden=4))
    node = graph.by_name["rec"]
    g = GATES[cell] * 4
    assert graph.shape_of("rec") == ((7, 4) if sequences else (4,))
    assert dict(node.param_shapes) == {"weight_ih_l0": (g, 3), "weight_hh_l0": (g, 4), "bias_ih_l0": (g,),
                                       "bias_hh_l0": (g,)}
    assert REGISTRY[cell].macs(node.layer, [(7, 3)], None) == 7 * g * (3 + 4)


def test_bias_false_drops_both_biases():
    graph = graph_of(spec_text("gru", extra=", bias: false"))
    assert set(graph.by_name["rec"].param_shapes) == {"weight_ih_l0", "weight_hh_l0"}


@pytest.mark.parametrize("cell", CELLS)
def test_every_tensor_starts_as_pytorchs_uniform(cell):
    graph = graph_of(spec_text(cell, hidden=16, features=9))
    values = initial_values(graph, seed=0)
    bound = 1 / np.sqrt(16)
    for pname in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        value = values[f"rec.{pname}"]
        assert np.abs(value).max() <= bound and np.abs(value).max() > 0.8 * bound, pname
    assert not np.allclose(values["rec.bias_ih_l0"], values["rec.bias_hh_l0"]), "one stream per tensor"
    chosen = initial_values(graph_of(spec_text(cell, extra=", weight_init: {type: constant, value: 0.5}, "
                                                            "bias_init: zeros")), seed=0)
    assert np.all(chosen["rec.weight_hh_l0"] == 0.5) and np.all(chosen["rec.bias_ih_l0"] == 0)


@pytest.mark.parametrize("shape", ["[15]", "[2, 8, 8]"])
def test_an_input_that_is_not_a_sequence_is_a_located_error(shape):
    text = spec_text("lstm").replace("x: {shape: [5, 3]}", f"x: {{shape: {shape}}}")
    diag = one_error(text)
    check(diag, "E-SHAPE", "reads a sequence [T, F] (steps, features), got", line=7)
    assert "lstm 'rec'" in diag.format() and "reshape" in diag.hint


def test_bad_fields_are_located():
    diag = one_error(spec_text("gru", hidden=0))
    assert diag.code == "E-VALUE" and "greater than 0" in diag.message and diag.path == "layers[0].hidden"
    assert diag.location.line == 7
    unknown = one_error(spec_text("rnn", extra=", nonlinearity: relu"))
    assert unknown.location.line == 7 and "nonlinearity" in unknown.path


def _plan_skeleton(steps: int) -> tuple[str, int]:
    plan = compile_graph(graph_of(spec_text("lstm", False, steps=steps)), N)  # the head's size is fixed
    skeleton = re.sub(r"\s+", " ", re.sub(r"\d+", "#", plan.source))  # sizes and line breaks aside
    return skeleton, len(re.findall(r"recurrent_forward(_one)?\(", plan.source))  # one chunk: the serial twin


def test_the_plan_is_a_loop_whose_source_does_not_grow_with_the_sequence():
    """T = 8 and T = 1000 give the same plan source apart from sizes: one kernel call per layer
    and pass, the time loop inside it; nothing unrolled."""
    short, calls = _plan_skeleton(8)
    long, calls_long = _plan_skeleton(1000)
    assert short == long
    assert calls == calls_long and 1 <= calls <= 3  # forward in the train, eval and predict paths


# ---------------------------------------------------------------------------------- reference vs PyTorch


def _torch_module(cell: str, features: int, hidden: int, bias: bool = True):
    torch = pytest.importorskip("torch")
    kinds = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
    return kinds[cell](features, hidden, batch_first=True, bias=bias).double()


@pytest.mark.torch
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("sequences", [False, True])
def test_reference_matches_pytorchs_layer(cell, sequences):
    torch = pytest.importorskip("torch")
    module = _torch_module(cell, 3, 4)
    layer = REGISTRY[cell].spec.model_validate({"op": cell, "hidden": 4, "sequences": sequences})
    params = {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}
    x = np.random.default_rng(0).normal(size=(5, 7, 3))
    tx = torch.tensor(x, requires_grad=True)
    out = module(tx)[0]
    _reference_is(cell, layer, params, x, tx, out if sequences else out[:, -1], module)


def _reference_is(cell, layer, params, x, tx, out, module):
    """The numpy reference's output and gradients (input, every parameter) are PyTorch's `out`'s."""
    import torch

    y = REGISTRY[cell].reference.forward(layer, [x], params)
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-10, atol=1e-12)
    dy = np.random.default_rng(1).normal(size=y.shape)
    out.backward(torch.tensor(dy))
    dxs, grads = REGISTRY[cell].reference.backward(layer, [x], y, dy, params)
    np.testing.assert_allclose(dxs[0], tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    for name, parameter in module.named_parameters():
        np.testing.assert_allclose(grads[name], parameter.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


# ---------------------------------------------------------------------------------- compiled


def _compare(text: str, count: int):
    graph = graph_of(text)
    model = Model(graph, dtype="float64", batch=N, seed=0)
    weights = moved(model.get_weights())
    model.set_weights(weights)
    data = arrays(graph, count)
    expected_loss, expected_scores, expected = ref.network_loss_and_gradients(yaml.safe_load(text), weights, data)
    loss, grads = model.loss_and_gradients(data)
    assert loss == pytest.approx(expected_loss, rel=RTOL)
    assert set(grads) == set(expected)
    for key, grad in grads.items():
        np.testing.assert_allclose(grad, expected[key], rtol=RTOL, atol=ATOL, err_msg=key)
    np.testing.assert_allclose(model.predict(data), expected_scores, rtol=RTOL, atol=ATOL)


@pytest.mark.compiled
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("sequences", [False, True])
@pytest.mark.parametrize("count", [N, N - 2])
def test_compiled_loop_matches_the_reference(cell, sequences, count):
    _compare(spec_text(cell, sequences), count)


@pytest.mark.compiled
@pytest.mark.parametrize("count", [N, 1])
def test_stacked_cells_pass_gradients_through_their_inputs(count):
    _compare(STACKED, count)


@pytest.mark.compiled
@pytest.mark.parametrize("text", [spec_text("lstm"), spec_text("rnn", True), STACKED], ids=["lstm", "rnn", "stacked"])
def test_chunks_of_the_batch_on_parallel_cores(monkeypatch, text):
    """A batch large enough to share runs in chunks, each the whole sequence on its own core, whose
    weight gradients add up in chunk order: three chunks against the reference, on full and partial
    batches (for 4 or 1 samples a chunk is empty). (The other tests' batches are too small to share.)"""
    from netc.compiler import buffers
    from netc.ops import recurrent

    monkeypatch.setattr(buffers, "stepped_chunks", lambda batch: 3)
    monkeypatch.setattr(recurrent, "SHARED_WORK", 0)
    graph = graph_of(text)
    model = Model(graph, dtype="float64", batch=N, seed=0)
    assert "recurrent_backward(" in model.plan.source and "_one(" not in model.plan.source
    console = Console(width=400, record=True)
    console.print(plan_renderable(model.plan, show_source=False))
    assert "3 parallel chunks of the batch" in console.export_text()  # inspect --plan says so
    weights = moved(model.get_weights())
    model.set_weights(weights)
    for count in (N, N - 2, 1):
        data = arrays(graph, count)
        expected_loss, _, expected = ref.network_loss_and_gradients(yaml.safe_load(text), weights, data)
        loss, grads = model.loss_and_gradients(data)
        assert loss == pytest.approx(expected_loss, rel=RTOL)
        for key, grad in grads.items():
            np.testing.assert_allclose(grad, expected[key], rtol=RTOL, atol=ATOL, err_msg=f"{key}, {count} samples")


@pytest.mark.compiled
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_through_time(cell):
    checks = gradcheck(graph_of(spec_text(cell, sequences=cell == "gru", steps=6)), count=4, max_entries=60)
    assert {c.name for c in checks} >= {f"rec.{p}" for p in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0",
                                                             "bias_hh_l0")}
    assert all(c.max_rel_error < 1e-6 for c in checks), checks


@pytest.mark.compiled
def test_gradcheck_of_stacked_cells():
    checks = gradcheck(graph_of(STACKED), count=3, max_entries=40)
    assert all(c.max_rel_error < 1e-6 for c in checks), checks


TOKENS = """\
netc: 1
name: tokens
inputs:
  tokens: {shape: [7], dtype: int64, indices: 10}
  label: {shape: [], dtype: int64, classes: 3}
layers:
  - {name: emb, op: embedding, in: tokens, num: 10, dim: 4}
  - {name: rec, op: gru, hidden: 5}
  - {name: fc, op: linear, out: 3}
loss: {op: cross_entropy, input: fc, target: label}
optimizer: {type: sgd, lr: 0.1}
train: {batch: 6, seed: 0}
"""


@pytest.mark.compiled
def test_a_sequence_of_tokens_through_an_embedding():
    """An embedding's output [T, dim] is a sequence: the gradient flows back into the table."""
    graph = graph_of(TOKENS)
    assert graph.shape_of("emb") == (7, 4) and graph.shape_of("rec") == (5,)
    model = Model(graph, dtype="float64", batch=N, seed=0)
    weights = moved(model.get_weights())
    model.set_weights(weights)
    rng = np.random.default_rng(2)
    data = {"tokens": rng.integers(0, 10, (N, 7)), "label": rng.integers(0, 3, N)}
    expected_loss, _, expected = ref.network_loss_and_gradients(yaml.safe_load(TOKENS), weights, data)
    loss, grads = model.loss_and_gradients(data)
    assert loss == pytest.approx(expected_loss, rel=RTOL)
    for key, grad in grads.items():
        np.testing.assert_allclose(grad, expected[key], rtol=RTOL, atol=ATOL, err_msg=key)
    assert np.abs(grads["emb.weight"]).max() > 0


@pytest.mark.compiled
def test_float32_agrees_with_float64():
    text = spec_text("lstm", True)
    graph = graph_of(text)
    weights = moved(Model(graph, dtype="float64", batch=N, seed=0).get_weights())
    data = arrays(graph, N)
    results = {}
    for dtype in ("float32", "float64"):
        model = Model(graph, dtype=dtype, batch=N, seed=0)
        model.set_weights(weights)
        results[dtype] = model.loss_and_gradients(data)
    assert results["float32"][0] == pytest.approx(results["float64"][0], rel=1e-5)
    for key, grad in results["float64"][1].items():
        np.testing.assert_allclose(results["float32"][1][key], grad, rtol=1e-3, atol=1e-5, err_msg=key)


@pytest.mark.compiled
def test_data_that_is_not_the_declared_sequence_is_refused():
    from netc.errors import DataError

    graph = graph_of(spec_text("gru"))  # x: [5, 3]
    model = Model(graph, seed=0)
    with pytest.raises(DataError) as info:
        model.prepare({"x": np.zeros((4, 4, 4)), "label": np.zeros(4, np.int64)})
    assert "input 'x' expects samples of shape [5, 3]" in info.value.diagnostics[0].message
    model.prepare({"x": np.zeros((4, 15)), "label": np.zeros(4, np.int64)})  # the same values, flat: reshaped


@pytest.mark.compiled
def test_a_frozen_layer_stays_and_passes_gradients_on():
    graph = graph_of(STACKED.replace("hidden: 4, sequences: true}", "hidden: 4, sequences: true, trainable: false}")
                     .replace("share: l}", "share: l, trainable: false}"))  # l and its sharer l2
    model = Model(graph, seed=0)
    before = model.get_weights()
    result = model.train_epoch(model.prepare(arrays(graph, 3 * N)), order=np.arange(3 * N), seed=0)
    assert result.batches == 3 and not result.diverged
    after = model.get_weights()
    for key in before:
        frozen = key.startswith("l.")
        assert np.array_equal(before[key], after[key]) == frozen, key  # g, below the frozen l, still learns


# ---------------------------------------------------------------------------------- PyTorch


def _twin(cell: str, sequences: bool, weights: dict):
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.rec = _torch_module(cell, 3, 4)
            self.fc = nn.Linear(5 * 4 if sequences else 4, 3).double()

        def forward(self, x):
            out = self.rec(x)[0]
            return self.fc(out.reshape(len(x), -1) if sequences else out[:, -1])

    module = Twin()
    module.load_state_dict({k: torch.tensor(v) for k, v in weights.items()}, strict=True)
    return module


@pytest.mark.compiled
@pytest.mark.torch
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("optimizer", ["{type: sgd, lr: 0.1, momentum: 0.9}", "{type: adam, lr: 0.01}"])
def test_loss_gradients_and_five_steps_match_pytorch(cell, optimizer):
    torch = pytest.importorskip("torch")
    sequences = cell != "lstm"
    graph = graph_of(spec_text(cell, sequences, optimizer=optimizer))
    model = Model(graph, dtype="float64", batch=N, seed=0)
    weights = moved(model.get_weights())
    model.set_weights(weights)
    module = _twin(cell, sequences, weights)  # the checkpoint's names load with strict=True
    data = arrays(graph, 5 * N, seed=4)
    x, label = torch.tensor(data["x"]), torch.tensor(data["label"])

    loss, grads = model.loss_and_gradients({k: v[:N] for k, v in data.items()})
    t_loss = torch.nn.functional.cross_entropy(module(x[:N]), label[:N])
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-10)
    for name, parameter in module.named_parameters():
        np.testing.assert_allclose(grads[name], parameter.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)

    order = np.arange(5 * N)
    result = model.train_epoch(model.prepare(data), order=order, seed=0)
    assert result.batches == 5 and not result.diverged
    opt = graph.spec.optimizer
    if opt.type == "sgd":
        t_opt = torch.optim.SGD(module.parameters(), lr=opt.lr, momentum=opt.momentum)
    else:
        t_opt = torch.optim.Adam(module.parameters(), lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps)
    for b in range(5):
        t_opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(module(x[b * N:(b + 1) * N]), label[b * N:(b + 1) * N]).backward()
        t_opt.step()
    trained = model.get_weights()
    for key, value in module.state_dict().items():
        np.testing.assert_allclose(trained[key], value.numpy(), rtol=1e-8, atol=1e-10, err_msg=f"{key} after 5 steps")


# ---------------------------------------------------------------------------------- ONNX


@functools.cache
def _ort():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


@pytest.mark.compiled
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("sequences", [False, True])
def test_onnx_export_round_trips_through_onnxruntime(cell, sequences, tmp_path):
    ort = _ort()
    import onnx

    from netc.export_onnx import export_onnx
    from netc.runtime.checkpoint import save_checkpoint

    text = spec_text(cell, sequences)
    loaded = load_spec_text(text, "rec.yaml")
    graph = build_graph(loaded)
    model = Model(graph, seed=0)
    weights = {k: v.astype(np.float32) for k, v in moved(model.get_weights()).items()}
    model.set_weights(weights)
    save_checkpoint(tmp_path / "w.safetensors", weights)
    result = export_onnx(loaded, tmp_path / "w.safetensors", tmp_path / "m.onnx")
    proto = onnx.load(str(result.path))
    recurrent = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell]
    after = "Transpose" if sequences else "Squeeze"
    assert [n.op_type for n in proto.graph.node][:3] == ["Transpose", recurrent, after]
    x = np.random.default_rng(0).normal(size=(7, 5, 3)).astype(np.float32)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x})
    np.testing.assert_allclose(got, model.predict({"x": x}), rtol=2e-4, atol=2e-5)


# ---------------------------------------------------------------------------------- truncated BPTT


@pytest.mark.torch
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("sequences", [False, True])
def test_truncated_bptt_is_pytorchs_chunks_with_the_state_detached(cell, sequences):
    """bptt: 3 over 7 steps is PyTorch running the sequence in chunks of 3, 3 and 1 steps, the state
    carried into each chunk but detached from the graph."""
    torch = pytest.importorskip("torch")
    module = _torch_module(cell, 3, 4)
    layer = REGISTRY[cell].spec.model_validate({"op": cell, "hidden": 4, "sequences": sequences, "bptt": 3})
    params = {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}
    x = np.random.default_rng(0).normal(size=(5, 7, 3))
    tx = torch.tensor(x, requires_grad=True)
    state, outs = None, []
    for start in range(0, 7, 3):
        out, state = module(tx[:, start:start + 3], state)
        outs.append(out)
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
    out = torch.cat(outs, dim=1)
    _reference_is(cell, layer, params, x, tx, out if sequences else out[:, -1], module)  # the forward unchanged


@pytest.mark.compiled
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("sequences", [False, True])
def test_truncated_bptt_compiled_matches_the_reference(cell, sequences):
    _compare(spec_text(cell, sequences, steps=7, extra=", bptt: 3"), N)


@pytest.mark.compiled
def test_a_window_as_long_as_the_sequence_is_the_whole_backpropagation():
    full, truncated, whole = (Model(graph_of(spec_text("lstm", True, steps=5, extra=extra)), dtype="float64",
                                    batch=N, seed=0) for extra in ("", ", bptt: 2", ", bptt: 5"))
    data = arrays(full.graph, N)
    weights = moved(full.get_weights())
    results = []
    for model in (full, truncated, whole):
        model.set_weights(weights)
        results.append(model.loss_and_gradients(data))
    assert results[2][0] == results[0][0] and results[1][0] == results[0][0]  # the forward is the same
    for key in results[0][1]:
        np.testing.assert_array_equal(results[2][1][key], results[0][1][key], err_msg=key)
    assert not np.allclose(results[1][1]["rec.weight_hh_l0"], results[0][1]["rec.weight_hh_l0"])


def test_bptt_below_one_is_a_located_error():
    text = spec_text("gru", extra=", bptt: 0")
    line = text.splitlines().index(next(l for l in text.splitlines() if "bptt" in l)) + 1
    check(one_error(text), "E-VALUE", "greater than 0", line, text.splitlines()[line - 1].index("bptt: 0") + 7,
          path="layers[0].bptt", hint="Truncated backpropagation through time")


@pytest.mark.compiled
def test_gradcheck_checks_the_whole_gradient_of_a_truncated_layer():
    """Truncation cuts the gradient on purpose; gradcheck checks the derivative, untruncated."""
    graph = graph_of(spec_text("lstm", True, steps=6, extra=", bptt: 2"))
    results = gradcheck(graph, count=3)
    assert results and all(r.max_rel_error < 1e-6 for r in results), results
    assert graph.by_name["rec"].layer.bptt == 2  # the caller's graph is left as it was


# ---------------------------------------------------------------------------------- select / slice of sequences


def _picked(layer: str) -> str:
    return f"""\
netc: 1
name: picked
inputs:
  x: {{shape: [5, 3]}}
  label: {{shape: [], dtype: int64, classes: 3}}
layers:
  - {{name: seq, op: gru, hidden: 4, sequences: true}}
  - {layer}
  - {{name: flat, op: flatten}}
  - {{name: fc, op: linear, out: 3}}
loss: {{op: cross_entropy, input: fc, target: label}}
"""


@pytest.mark.parametrize("layer, code, fragment, field", [
    ("{name: p, op: select, index: 5}", "E-SHAPE", "index 5 is out of range for axis 0 of size 5", "index"),
    ("{name: p, op: select, index: -6}", "E-SHAPE", "index -6 is out of range for axis 0 of size 5", "index"),
    ("{name: p, op: select, axis: 2, index: 0}", "E-SHAPE", "axis 2 is out of range for an input of shape [5, 4]",
     "axis"),
    ("{name: p, op: slice, start: 3, stop: 3}", "E-SHAPE", "start 3, stop 3 take nothing of axis 0 of size 5", "start"),
    ("{name: p, op: select}", "E-MISSING", "missing required key 'index'", "index"),
])
def test_select_and_slice_out_of_range_are_located_errors(layer, code, fragment, field):
    text = _picked(layer)
    line = text.splitlines().index(f"  - {layer}") + 1
    diag = one_error(text)
    assert diag.code == code and fragment in diag.message, diag.format()
    assert diag.location.line == line and diag.path == f"layers[1].{field}" and diag.hint, diag.format()
    if code == "E-SHAPE":  # the column of the field's value
        assert text.splitlines()[line - 1][diag.location.col - 1:].startswith(str(layer.split(f"{field}: ")[1][:1])), \
            diag.format()


def test_select_takes_the_last_step_of_a_sequence():
    graph = graph_of(_picked("{name: p, op: select, index: -1}"))
    assert graph.shape_of("p") == (4,)
    graph = graph_of(_picked("{name: p, op: slice, start: -3}"))
    assert graph.shape_of("p") == (3, 4)
