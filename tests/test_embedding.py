"""embedding (PyTorch's nn.Embedding) beyond the op contract: index inputs in the spec language and
their checks, the compiled lookup and scatter-add against the numpy reference (float64, with a
shared table, a padding row and a scalar index input), gradcheck, bad index data refused with its
file and row, and parity with PyTorch (loss, gradients, five Adam steps, load_state_dict) and
onnxruntime where they are installed."""

from __future__ import annotations

import functools
from pathlib import Path
from textwrap import dedent

import numpy as np
import pytest
import yaml

import reference as ref
from netc.errors import DataError, SpecErrors
from netc.graph import build_graph
from netc.report import input_kind, input_shape_text, summarize
from netc.runtime.checkpoint import save_checkpoint
from netc.runtime.gradcheck import gradcheck
from netc.runtime.model import Model
from netc.spec import load_spec_text

N = 8
RTOL, ATOL = 1e-10, 1e-12  # float64 plan vs float64 reference

# words: a table of 12 vectors of 5 with a padding row, read by two index inputs (ctx_words shares it:
# its gradient is the sum of both lookups); users: a scalar index per sample -> one vector [3]
SPEC = dedent("""
    netc: 1
    name: emb
    inputs:
      tokens: {shape: [6], dtype: int64, indices: 12}
      context: {shape: [2, 3], dtype: int64, indices: 10}
      user: {shape: [], dtype: int64, indices: 4}
      label: {shape: [], dtype: int64, classes: 3}
    layers:
      - {name: words, op: embedding, in: tokens, num: 12, dim: 5, padding_idx: 0}
      - {name: ctx_words, op: embedding, in: context, num: 12, dim: 5, padding_idx: 0, share: words}
      - {name: users, op: embedding, in: user, num: 4, dim: 3}
      - {name: flat_w, op: flatten, in: words}
      - {name: flat_c, op: flatten, in: ctx_words}
      - {name: both, op: concat, in: [flat_w, flat_c, users]}
      - {name: fc1, op: linear, out: 8, bias_init: {type: uniform, low: -0.2, high: 0.2}}
      - {name: act, op: tanh}
      - {name: fc2, op: linear, out: 3}
    loss: {op: cross_entropy, input: fc2, target: label}
    optimizer: {type: adam, lr: 0.05, weight_decay: 0.01}
    train: {batch: 8, seed: 0}
""").lstrip()


@functools.cache
def graph():
    return build_graph(load_spec_text(SPEC, "emb.yaml"))


def arrays(count: int = N, seed: int = 3) -> dict:
    """Random indices; every sample looks up the padding row 0 at least once."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 12, (count, 6))
    tokens[:, 0] = 0
    return {"tokens": tokens, "context": rng.integers(0, 10, (count, 2, 3)), "user": rng.integers(0, 4, count),
            "label": rng.integers(0, 3, count)}


# ---------------------------------------------------------------------------------- no Numba


def _errors(replace: str, by: str):
    assert replace in SPEC
    with pytest.raises(SpecErrors) as info:
        build_graph(load_spec_text(SPEC.replace(replace, by), "emb.yaml"))
    return info.value.diagnostics


@pytest.mark.parametrize("replace, by, code, path, message", [
    ("tokens: {shape: [6], dtype: int64, indices: 12}", "tokens: {shape: [6]}", "E-TYPE", "layers[0].in",
     "embedding 'words' reads 'tokens', which holds floats, not indices"),
    ("{name: fc2, op: linear, out: 3}", "{name: fc2, op: linear, in: user, out: 3}", "E-TYPE", "layers[8].in",
     "linear 'fc2' reads the index input 'user'"),
    ("num: 4, dim: 3}", "num: 3, dim: 3}", "E-SHAPE", "layers[2].in",
     "embedding 'users' has 3 rows but input 'user' holds indices up to 3"),
    ("num: 12, dim: 5, padding_idx: 0}", "num: 12, dim: 5, padding_idx: 12}", "E-SHAPE", "layers[0].padding_idx",
     "embedding 'words': padding_idx 12 is not a row of a table of 12"),
    ("target: label}", "target: user}", "E-LOSS", "loss.target",
     "loss target 'user' is an index input (`indices`), not a target"),
])
def test_index_inputs_are_checked_where_they_are_read(replace, by, code, path, message):
    diagnostics = _errors(replace, by)
    found = [(d.code, d.path, d.message) for d in diagnostics]
    assert (code, path, message) in found, found
    diag = next(d for d in diagnostics if d.message == message)
    assert diag.location.line > 0 and diag.hint, "located, with a hint"


@pytest.mark.parametrize("declared, message", [
    ("{shape: [6], dtype: int64}", "an int64 input needs `classes` (a label: the number of classes) or `indices`"),
    ("{shape: [6], indices: 12}", "`indices` is only for int64 index inputs"),
    ("{shape: [], dtype: int64, indices: 12, classes: 3}", "a label (`classes`) or an index input (`indices`), not both"),
    ("{shape: [6], dtype: int64, indices: 0}", "greater than or equal to 1"),
])
def test_an_index_input_declares_its_range(declared, message):
    with pytest.raises(SpecErrors) as info:
        load_spec_text(SPEC.replace("{shape: [6], dtype: int64, indices: 12}", declared), "emb.yaml")
    (diag,) = info.value.diagnostics
    assert message in diag.message and diag.path.startswith("inputs.tokens")
    assert (diag.location.line, diag.location.col) > (3, 0)


def test_inspect_counts_the_table_once_and_the_lookup_as_no_multiply_adds():
    summary = summarize(graph())
    rows = {row.name: row for row in summary.layers}
    assert rows["words"].params == 12 * 5 and rows["words"].shares is None and rows["words"].shared_by == ("ctx_words",)
    assert rows["ctx_words"].shares == "words" and not rows["ctx_words"].counted
    assert rows["users"].params == 4 * 3 and rows["users"].mult_adds == 0
    assert rows["words"].shape == (6, 5) and rows["ctx_words"].shape == (2, 3, 5) and rows["users"].shape == (3,)
    fc1 = (6 * 5 + 2 * 3 * 5 + 3) * 8 + 8
    assert summary.total_params == 60 + 12 + fc1 + 8 * 3 + 3
    inputs = {row.name: (input_kind(row), input_shape_text(row)) for row in summary.inputs}
    assert inputs == {"tokens": ("indices", "[6] (indices < 12)"), "context": ("indices", "[2, 3] (indices < 10)"),
                      "user": ("indices", "[] (indices < 4)"), "label": ("label", "[] (3 classes)")}


def test_the_padding_row_starts_at_zero():
    weights = Model(graph(), dtype="float64", seed=0).get_weights()
    assert np.all(weights["words.weight"][0] == 0) and np.all(weights["words.weight"][1:] != 0)
    assert abs(float(weights["words.weight"][1:].std()) - 1.0) < 0.3, "N(0, 1), as PyTorch"


# ---------------------------------------------------------------------------------- compiled


@pytest.mark.compiled
@pytest.mark.parametrize("count", [N, N - 3])
def test_lookup_and_scatter_add_match_the_reference(count):
    """The compiled plan (float64) against the op references layer by layer, on a full and a partial
    batch: the shared table's gradient sums both lookups, the padding row gets none."""
    model = Model(graph(), dtype="float64", batch=N, seed=0)
    weights = model.get_weights()
    rng = np.random.default_rng(9)
    weights = {k: v + (0.1 * rng.normal(size=v.shape) if k.endswith("bias") else 0) for k, v in weights.items()}
    model.set_weights(weights)
    data = arrays(count)
    expected_loss, expected_scores, expected = ref.network_loss_and_gradients(yaml.safe_load(SPEC), weights, data)
    loss, grads = model.loss_and_gradients(data)
    assert loss == pytest.approx(expected_loss, rel=RTOL)
    assert set(grads) == set(expected) == {"words.weight", "users.weight", "fc1.weight", "fc1.bias", "fc2.weight",
                                           "fc2.bias"}
    for key, grad in grads.items():
        np.testing.assert_allclose(grad, expected[key], rtol=RTOL, atol=ATOL, err_msg=key)
    assert np.all(grads["words.weight"][0] == 0) and np.abs(grads["words.weight"][1:]).max() > 0
    np.testing.assert_allclose(model.predict(data), expected_scores, rtol=RTOL, atol=ATOL)


@pytest.mark.compiled
def test_gradcheck_skips_only_the_padding_row():
    checks = {c.name: c for c in gradcheck(graph(), count=5, max_entries=100)}
    assert all(c.max_rel_error < 1e-6 for c in checks.values()), checks
    assert checks["words.weight"].checked == 11 * 5, "every entry but the padding row's"
    assert checks["users.weight"].checked == 4 * 3


@pytest.mark.compiled
def test_training_leaves_the_padding_row_at_zero_and_moves_the_rest():
    model = Model(graph(), seed=0)
    before = model.get_weights()["words.weight"]
    data = arrays(3 * N, seed=4)
    result = model.train_epoch(model.prepare(data), order=np.arange(3 * N), seed=0)
    assert result.batches == 3 and not result.diverged
    after = model.get_weights()["words.weight"]
    assert np.all(after[0] == 0), "Adam with weight decay leaves a row without gradient where it was"
    assert np.abs(after[1:] - before[1:]).max() > 1e-3


@pytest.mark.compiled
def test_index_arrays_outside_the_table_are_refused_by_the_python_api():
    model = Model(graph(), seed=0)
    data = arrays(4)
    data["context"][2, 1, 0] = 10  # inputs.context.indices is 10
    with pytest.raises(DataError) as info:
        model.prepare(data)
    (diag,) = info.value.diagnostics
    assert diag.message == "sample 2: index 10 of input 'context' is outside [0, 10)"
    data["context"] = data["context"].astype(np.float32)
    with pytest.raises(DataError, match="expects integer indices of shape"):
        model.prepare(data)


def _write_spec(tmp_path: Path, data: dict, epochs: int = 1) -> Path:
    np.savez(tmp_path / "train.npz", **data)
    text = SPEC.replace("train: {batch: 8, seed: 0}", f"train: {{batch: 8, seed: 0, epochs: {epochs}}}")
    text += "data:\n  train: {source: npz, path: train.npz}\n"
    (tmp_path / "emb.yaml").write_text(text)
    return tmp_path / "emb.yaml"


@pytest.mark.compiled
def test_bad_index_data_names_the_file_and_the_sample(tmp_path):
    from typer.testing import CliRunner

    import netc.cli  # noqa: F401  (registers the commands)
    from netc.cli.app import app

    data = arrays(20)
    data["tokens"][13, 4] = 12
    spec = _write_spec(tmp_path, data)
    result = CliRunner().invoke(app, ["train", str(spec), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert f"{tmp_path / 'train.npz'}" in text and "error[E-DATA]" in text
    assert "sample 13: index 12 (position 4) of input 'tokens' is outside [0, 12)" in text
    assert "hint:" in text and not (tmp_path / "run" / "checkpoint.safetensors").exists()


@pytest.mark.compiled
def test_netc_train_learns_from_index_data(tmp_path):
    """A learnable task on npz data through the CLI: the label is the user's id mod 3 plus the first context token."""
    from typer.testing import CliRunner

    import netc.cli  # noqa: F401
    from netc.cli.app import app

    data = arrays(400, seed=5)
    data["label"] = (data["user"] + data["context"][:, 0, 0]) % 3
    spec = _write_spec(tmp_path, data, epochs=15)
    result = CliRunner().invoke(app, ["train", str(spec), "--run-dir", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    records = [yaml.safe_load(line) for line in lines]
    accuracy = [r["train_accuracy"] for r in records if "train_accuracy" in r]
    assert accuracy[-1] > 0.9 > accuracy[0], accuracy


# ---------------------------------------------------------------------------------- PyTorch, onnxruntime


@pytest.mark.compiled
@pytest.mark.torch
def test_loss_gradients_five_adam_steps_and_state_dict_match_pytorch(tmp_path):
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.words = nn.Embedding(12, 5, padding_idx=0)
            self.users = nn.Embedding(4, 3)
            self.fc1 = nn.Linear(6 * 5 + 2 * 3 * 5 + 3, 8)
            self.fc2 = nn.Linear(8, 3)

        def forward(self, x):
            both = torch.cat([self.words(x["tokens"]).flatten(1), self.words(x["context"]).flatten(1),
                              self.users(x["user"])], dim=1)
            return self.fc2(torch.tanh(self.fc1(both)))

    model = Model(graph(), dtype="float32", batch=N, seed=0)
    weights = model.get_weights()
    twin = Twin()
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()}, strict=True)
    to_torch = lambda data: {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in data.items()}  # noqa: E731
    close = functools.partial(np.testing.assert_allclose, rtol=2e-5, atol=2e-6)

    data = arrays(N, seed=6)
    loss, grads = model.loss_and_gradients(data)
    t = to_torch(data)
    t_loss = F.cross_entropy(twin(t), t["label"])
    t_loss.backward()
    close(loss, t_loss.item())
    for name, p in twin.named_parameters():
        close(grads[name], p.grad.numpy(), err_msg=name)

    count = 5 * N - 3  # five steps, the last on a partial batch
    data = arrays(count, seed=7)
    order = np.random.default_rng(8).permutation(count)
    result = model.train_epoch(model.prepare(data), order=order, seed=0)
    assert result.batches == 5 and model.step == 5
    optimizer = torch.optim.Adam(twin.parameters(), lr=0.05, weight_decay=0.01)
    t = to_torch(data)
    for b in range(5):
        idx = torch.from_numpy(order[b * N:(b + 1) * N])
        batch = {k: v[idx] for k, v in t.items()}
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(twin(batch), batch["label"]).backward()
        optimizer.step()
    trained = model.get_weights()
    for name, value in twin.state_dict().items():
        assert np.abs(trained[name] - weights[name]).max() > 1e-3, f"{name} barely moved"
        close(trained[name], value.numpy(), err_msg=f"{name} after 5 steps")
    assert np.all(trained["words.weight"][0] == 0)

    safetensors_torch = pytest.importorskip("safetensors.torch")
    save_checkpoint(tmp_path / "emb.safetensors", trained)
    fresh = Twin()
    loaded = fresh.load_state_dict(safetensors_torch.load_file(str(tmp_path / "emb.safetensors")), strict=True)
    assert not loaded.missing_keys and not loaded.unexpected_keys
    check = arrays(N, seed=9)
    with torch.no_grad():
        close(model.predict(check), fresh(to_torch(check)).numpy())


@pytest.mark.compiled
def test_onnx_export_gathers_and_round_trips(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from netc.export_onnx import export_onnx

    loaded = load_spec_text(SPEC, "emb.yaml")
    model = Model(build_graph(loaded), seed=0)
    save_checkpoint(tmp_path / "w.safetensors", model.get_weights())
    result = export_onnx(loaded, tmp_path / "w.safetensors", tmp_path / "emb.onnx")
    proto = onnx.load(str(result.path))
    onnx.checker.check_model(proto, full_check=True)
    gathers = [n for n in proto.graph.node if n.op_type == "Gather"]
    assert [list(n.input) for n in gathers] == [["words.weight", "tokens"], ["words.weight", "context"],
                                                ["users.weight", "user"]]
    kinds = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
    assert kinds == {"tokens": onnx.TensorProto.INT64, "context": onnx.TensorProto.INT64,
                     "user": onnx.TensorProto.INT64}
    data = arrays(5, seed=10)
    feeds = {name: data[name].astype(np.int64) for name in kinds}
    (got,) = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(got, model.predict(data), rtol=2e-4, atol=2e-5)
