"""`scan`: a block applied at every step of sequences, carrying its state (netc.ops.scan).

The cells netc ships as blocks (specs/digits-{rnn,lstm,gru}-cell.yaml) give the numbers of the
built-in rnn/lstm/gru layers (each checked against its numpy reference and PyTorch in
test_recurrent.py) with the same weights: loss and every gradient in float64, the last state or
every step, with and without truncated backpropagation, on both tiers. A scan with several
sequences, an embedded one (its gradient goes back into the table), dropout and a block inside
the cell, and an output that is not a state passes finite differences. The plan's source does not
grow with T. Every error of the spec language's scan has a located message.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import netc.cli  # noqa: F401  (registers every command)
from helpers import SPECS, build, check, diagnostics, one_error
from netc.cli.app import app
from netc.report.summary import fold, summarize
from netc.runtime.checkpoint import load_weights
from netc.runtime.gradcheck import gradcheck
from netc.runtime.model import Model

N = 5  # samples in a batch of the float64 comparisons (the plans' batch is 6: a partial batch)
CELLS = {"rnn": "elman", "lstm": "lstm_cell", "gru": "gru_cell"}
pytestmark = pytest.mark.compiled


def cell_spec(cell: str, sequences: bool = False, bptt: int | None = None, builtin: bool = False) -> str:
    """The shipped cell spec with batch 6; with `builtin`, its scan replaced by the built-in layer (no
    blocks). `sequences`: every step's state, flattened for the head."""
    spec = yaml.safe_load((SPECS / f"digits-{cell}-cell.yaml").read_text())
    spec["train"]["batch"] = 6
    spec.pop("data")
    rec = spec["layers"][0]
    if builtin:
        spec.pop("blocks")
        rec.pop("block")
        rec.update(op=cell, hidden=64)
    rec["sequences"] = sequences
    if bptt is not None:
        rec["bptt"] = bptt
    if sequences:
        spec["layers"].insert(1, {"name": "flat", "op": "flatten"})
    return yaml.safe_dump(spec, sort_keys=False)


def pytorch_names(name: str) -> str:
    """A cell block's tensor as the built-in layer (and PyTorch) names it: rec.ih.weight -> rec.weight_ih_l0."""
    parts = name.split(".")
    if len(parts) == 3 and parts[1] in ("ih", "hh"):
        return f"{parts[0]}.{parts[2]}_{parts[1]}_l0"
    return name


def pair(cell: str, tier: str = "python", **options) -> tuple[Model, Model]:
    """(the cell as a scan, the built-in layer) holding the same values, in float64."""
    scan = Model(build(cell_spec(cell, **options)), dtype="float64", batch=6, seed=0, tier=tier)
    builtin = Model(build(cell_spec(cell, builtin=True, **options)), dtype="float64", batch=6, seed=0, tier=tier)
    values = builtin.get_weights()
    scan.set_weights({name: values[pytorch_names(name)] for name in scan.get_weights()}, strict=True)
    return scan, builtin


def digits(count: int = N, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {"rows": rng.uniform(0, 1, (count, 8, 8)), "label": rng.integers(0, 10, count)}


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("sequences, bptt", [(False, None), (True, None), (True, 3)],
                         ids=["last", "every-step", "bptt3"])
def test_a_cell_block_gives_the_builtin_layers_loss_and_gradients(cell, sequences, bptt):
    scan, builtin = pair(cell, sequences=sequences, bptt=bptt)
    loss, grads = scan.loss_and_gradients(digits())
    want, want_grads = builtin.loss_and_gradients(digits())
    assert loss == pytest.approx(want, rel=1e-13)
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, want_grads[pytorch_names(name)], rtol=1e-10, atol=1e-13, err_msg=name)


def test_the_fused_tier_gives_the_python_tiers_bits():
    """The compiled loop (the epoch's fused source) and the Python tier agree to the bit, trained 2 epochs."""
    text = cell_spec("rnn", sequences=True, bptt=3)
    results = []
    for tier in ("python", "fused"):
        model = Model(build(text), dtype="float32", batch=6, seed=0, tier=tier)
        prepared = model.prepare(digits(20))
        for epoch in range(2):
            model.train_epoch(prepared, np.random.default_rng(epoch).permutation(20), lr=0.01)
        results.append(model.get_weights())
    for name in results[0]:
        np.testing.assert_array_equal(results[0][name], results[1][name], err_msg=name)


RICH = """\
netc: 1
name: rich
inputs:
  chars: {shape: [5], dtype: int64, indices: 7}
  extra: {shape: [5, 2]}
  label: {shape: [], dtype: int64, classes: 3}
blocks:
  mix:
    inputs: [u]
    layers:
      - {name: fc, op: linear, in: u, out: 3}
      - {name: act, op: tanh}
  cell:
    inputs: [x, e]
    state:
      h: {shape: [3], next: h_new}
    layers:
      - {name: both, op: concat, in: [x, e]}
      - {name: drop, op: dropout, p: 0.3}
      - {name: ih, op: linear, out: 3}
      - {name: hh, op: block, block: mix, in: h}
      - {name: gate_pre, op: linear, in: x, out: 3}
      - {name: gate, op: sigmoid}
      - {name: gated, op: mul, in: [gate, hh]}
      - {name: h_new, op: add, in: [ih, gated]}
      - {name: head, op: linear, in: h_new, out: 2}
    output: head
layers:
  - {name: emb, op: embedding, in: chars, num: 7, dim: 4}
  - {name: rec, op: scan, block: cell, in: [emb, extra], sequences: true}
  - {name: flat, op: flatten}
  - {name: fc, op: linear, out: 3}
loss: {op: cross_entropy, input: fc, target: label}
optimizer: {type: sgd, lr: 0.1}
train: {batch: 6, seed: 0}
"""


def test_a_scan_with_two_sequences_dropout_and_an_output_that_is_not_its_state_passes_gradcheck():
    """Gradients through time in float64 against central differences: the embedding's table gets
    the gradient of every step's input, dropout masks are drawn per step (training mode)."""
    graph = build(RICH)
    rng = np.random.default_rng(0)
    arrays = {"chars": rng.integers(0, 7, (4, 5)), "extra": rng.normal(size=(4, 5, 2)), "label": rng.integers(0, 3, 4)}
    results = gradcheck(graph, arrays, training=True, max_entries=20)
    assert {r.name for r in results} >= {"emb.weight", "rec.ih.weight", "rec.hh.fc.weight", "rec.head.weight"}
    for r in results:
        assert r.max_rel_error < 1e-6, r


def test_the_block_runs_once_per_step_in_the_plan_whatever_t():
    """T = 512 writes the same plan as T = 8 but for the loop bounds and the sizes (not 64x the code)."""
    sources = []
    for steps in (8, 512):
        text = RICH.replace("[5]", f"[{steps}]").replace("[5, 2]", f"[{steps}, 2]")
        source = Model(build(text), dtype="float64", batch=6, seed=0, tier="python").plan.source
        sources.append(source[source.index("@plan_function"):])  # a tiny plan's header inlines its kernels
    assert len(sources[0].splitlines()) == len(sources[1].splitlines())
    # forward and the epoch loop's forward; backward and the epoch loop's backward
    assert sources[1].count("for t in range(512):") == 2 and sources[1].count("for t in range(511, -1, -1):") == 2


def test_inspect_folds_a_scan_into_one_row_and_counts_every_step():
    graph = build(cell_spec("lstm"))
    scan = graph.by_name["rec"]
    assert scan.shape == (64,)
    body = [node for node in graph.nodes if node.scan == "rec"]
    assert sum(node.macs for node in body) == 8 * (8 * 256 + 64 * 256)  # 8 steps of both projections
    rows = {row.name: row for row in fold(summarize(graph).layers, summarize(graph).instances)}
    assert rows["rec"].op == "scan lstm_cell" and rows["rec"].params == 4 * 64 * (8 + 64 + 2)


# ----------------------------------------------------------------------------- errors

SCAN = """\
netc: 1
name: s
inputs:
  x: {shape: [5, 3]}
  label: {shape: [], dtype: int64, classes: 3}
blocks:
  cell:
    inputs: [x]
    state:
      h: {shape: [4], next: h_new}
    layers:
      - {name: ih, op: linear, in: x, out: 4}
      - {name: hh, op: linear, in: h, out: 4}
      - {name: h_new, op: add, in: [ih, hh]}
layers:
  - {name: rec, op: scan, block: cell, in: x}
  - {name: fc, op: linear, out: 3}
loss: {op: cross_entropy, input: fc, target: label}
"""


def test_the_error_free_scan_builds():
    graph = build(SCAN)
    assert [node.name for node in graph.nodes][:6] == ["rec.x", "rec.h", "rec.ih", "rec.hh", "rec.h_new", "rec"]


def test_a_state_whose_next_value_has_another_shape_is_located_at_the_state():
    text = SCAN.replace("{name: hh, op: linear, in: h, out: 4}", "{name: hh, op: linear, in: h, out: 4}\n"
                        "      - {name: wide, op: linear, in: h, out: 5}").replace("next: h_new", "next: wide")
    diag = one_error(text)
    check(diag, "E-SHAPE", "in scan 'rec' (cell): state 'h' is [4] but its next value 'wide' is [5]", 10,
          path="blocks.cell.state.h.next", hint="must have the state's shape")


def test_a_state_whose_next_value_is_not_a_layer():
    check(one_error(SCAN.replace("next: h_new", "next: h_nwe")), "E-REF",
          "state 'h' takes its next value from 'h_nwe', which is not a layer of the block", 10,
          path="blocks.cell.state.h.next", hint="h_new")


def test_a_state_carried_by_a_view():
    text = SCAN.replace("      - {name: h_new, op: add, in: [ih, hh]}",
                        "      - {name: h_new, op: add, in: [ih, hh]}\n      - {name: same, op: identity}"
                        ).replace("next: h_new", "next: same")
    check(one_error(text), "E-BLOCK", "state 'h' takes its next value from 'same', which computes nothing", 10,
          path="blocks.cell.state.h.next")


def test_a_state_never_read():
    text = SCAN.replace("      h: {shape: [4], next: h_new}", "      h: {shape: [4], next: h_new}\n"
                        "      c: {shape: [4], next: h_new}")
    check(one_error(text), "E-DEAD", "state 'c' is never read", 11, path="blocks.cell.state.c")


def test_a_state_named_as_an_input():
    text = SCAN.replace("      h: {shape: [4], next: h_new}", "      h: {shape: [4], next: h_new}\n"
                        "      x: {shape: [4], next: h_new}")
    found = diagnostics(text)
    assert any(d.code == "E-DUP-NAME" and "state 'x' is already an input name" in d.message for d in found)


def test_a_scan_of_a_block_without_state():
    text = SCAN.replace("    state:\n      h: {shape: [4], next: h_new}\n", "").replace(
        "{name: hh, op: linear, in: h, out: 4}", "{name: hh, op: linear, in: x, out: 4}")
    check(one_error(text), "E-BLOCK", "block 'cell' has no `state:`", 14, path="layers[0].block")


def test_a_scan_of_an_unknown_block():
    check(one_error(SCAN.replace("block: cell, in: x}", "block: cel, in: x}")), "E-BLOCK", "unknown block 'cel'", 16,
          path="layers[0].block", hint="cell")


def test_a_stateful_block_instantiated_as_a_block():
    text = SCAN.replace("op: scan, block: cell, in: x}", "op: block, block: cell, in: x}")
    check(one_error(text), "E-BLOCK", "block 'cell' carries state from step to step (h)", 16, path="layers[0].op",
          hint="`op: scan`")


def test_a_scan_inside_a_block():
    text = SCAN.replace("layers:\n  - {name: rec, op: scan, block: cell, in: x}",
                        "  outer:\n    inputs: [s]\n    layers:\n      - {name: inner, op: scan, block: cell, in: s}\n"
                        "layers:\n  - {name: rec, op: block, block: outer, in: x}")
    found = diagnostics(text)
    assert any(d.code == "E-BLOCK" and "a scan runs at the top level" in d.message and d.path ==
               "blocks.outer.layers[0].op" for d in found), [d.format() for d in found]


def test_a_scan_given_too_many_sequences():
    text = SCAN.replace("  x: {shape: [5, 3]}", "  x: {shape: [5, 3]}\n  y: {shape: [5, 3]}").replace(
        "block: cell, in: x}", "block: cell, in: [x, y]}")
    check(one_error(text), "E-ARITY", "block 'cell' takes 1 sequence(s) (x), got 2", 17, path="layers[0].in")


def test_sequences_of_different_lengths():
    text = SCAN.replace("  x: {shape: [5, 3]}", "  x: {shape: [5, 3]}\n  y: {shape: [6, 3]}").replace(
        "inputs: [x]", "inputs: [x, y]").replace("block: cell, in: x}", "block: cell, in: [x, y]}").replace(
        "{name: ih, op: linear, in: x, out: 4}", "{name: xy, op: add, in: [x, y]}\n      - {name: ih, op: linear, out: 4}")
    diag = one_error(text)
    check(diag, "E-SHAPE", "sequence 'y' has 6 steps, 'x' has 5", 18, path="layers[0].in[1]")


def test_a_scan_over_a_tensor_that_is_not_a_sequence():
    text = SCAN.replace("  x: {shape: [5, 3]}", "  x: {shape: [3]}")
    check(one_error(text), "E-SHAPE", "reads [3], not a sequence", 16, path="layers[0].in", hint="[T, ...]")


@pytest.mark.parametrize("layer, why", [
    ("{name: norm, op: batchnorm1d}", "running statistics"),
    ("{name: inner, op: rnn, hidden: 4}", "its own loop"),
])
def test_layers_that_cannot_run_one_step_at_a_time(layer, why):
    text = SCAN.replace("{name: ih, op: linear, in: x, out: 4}", f"{layer}\n      - {{name: ih, op: linear, out: 4}}")
    if "rnn" in layer:
        text = text.replace("x: {shape: [5, 3]}", "x: {shape: [5, 2, 3]}")
    diag = one_error(text)
    check(diag, "E-BLOCK", "cannot run inside a scan", 12, path="blocks.cell.layers[0]")
    assert why in diag.message and "in scan 'rec' (cell)" in diag.message


def test_unknown_keys_of_a_scan_and_a_state():
    found = diagnostics(SCAN.replace("block: cell, in: x}", "block: cell, in: x, repeat: 2}"))
    assert any("repeat" in d.message or "repeat" in d.path for d in found)
    found = diagnostics(SCAN.replace("{shape: [4], next: h_new}", "{shape: [4], next: h_new, init: zeros}"))
    assert any("init" in d.message or "init" in d.path for d in found)


LANGUAGE_MODEL = """\
netc: 1
name: lm
inputs:
  chars: {shape: [6], dtype: int64, indices: 5}
  next: {shape: [6], dtype: int64, classes: 5}
blocks:
  elman:
    inputs: [x]
    state:
      h: {shape: [4], next: h_new}
    layers:
      - {name: ih, op: linear, in: x, out: 4}
      - {name: hh, op: linear, in: h, out: 4}
      - {name: pre, op: add, in: [ih, hh]}
      - {name: h_new, op: tanh}
layers:
  - {name: emb, op: embedding, in: chars, num: 5, dim: 3}
  - {name: rec, op: scan, block: elman, in: emb, sequences: true}
  - {name: out, op: linear, out: 5}
loss: {op: cross_entropy, input: out, target: next}
optimizer: {type: sgd, lr: 0.1}
train: {batch: 6, seed: 0}
"""


def test_a_cell_block_predicting_at_every_step_gives_the_builtin_layers_numbers():
    """Many-to-many: a loss at every step of a scan's output (linear over the sequence, a label per step)."""
    builtin_text = LANGUAGE_MODEL[:LANGUAGE_MODEL.index("blocks:")] + LANGUAGE_MODEL[LANGUAGE_MODEL.index("layers:\n  - {name: emb"):]
    builtin_text = builtin_text.replace("op: scan, block: elman,", "op: rnn, hidden: 4,")
    scan = Model(build(LANGUAGE_MODEL), dtype="float64", batch=6, seed=0, tier="python")
    builtin = Model(build(builtin_text), dtype="float64", batch=6, seed=0, tier="python")
    values = builtin.get_weights()
    scan.set_weights({name: values[pytorch_names(name)] for name in scan.get_weights()}, strict=True)
    rng = np.random.default_rng(2)
    arrays = {"chars": rng.integers(0, 5, (N, 6)), "next": rng.integers(0, 5, (N, 6))}
    loss, grads = scan.loss_and_gradients(arrays)
    want, want_grads = builtin.loss_and_gradients(arrays)
    assert loss == pytest.approx(want, rel=1e-13)
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, want_grads[pytorch_names(name)], rtol=1e-10, atol=1e-13, err_msg=name)
    for r in gradcheck(build(LANGUAGE_MODEL), arrays, max_entries=12):
        assert r.max_rel_error < 1e-6, r


def test_a_scan_trains_and_resumes_bit_exactly(tmp_path):
    runner, spec = CliRunner(), str(SPECS / "digits-gru-cell.yaml")
    whole = runner.invoke(app, ["train", spec, "--epochs", "2", "--run-dir", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    first = runner.invoke(app, ["train", spec, "--epochs", "1", "--run-dir", str(tmp_path / "split")])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["train", spec, "--epochs", "2", "--run-dir", str(tmp_path / "split"), "--resume"])
    assert second.exit_code == 0, second.output
    a, b = load_weights(tmp_path / "whole" / "last.safetensors"), load_weights(tmp_path / "split" / "last.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert "eval acc" in whole.output
