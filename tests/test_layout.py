"""A weight the plan stores transposed (netc.ops.dense._transposed): where the rule applies, the
kernels' transposed paths against the reference, and that nothing outside the plan can tell
(Model.param_views: weights, gradients, optimizer state and checkpoints keep the declared shape)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import reference as ref
from helpers import build
from netc.compiler import buffers, compile_graph
from netc.kernels.dense import linear_backward, linear_forward
from netc.ops.dense import LINEAR
from netc.runtime.model import Model
from tests.test_tiers import TWINS as CONV  # convs strided, padded and pooled; a batch of 7

MLP = """
netc: 1
name: layout
inputs:
  x: {shape: [64]}
  label: {shape: [], dtype: int64, classes: 10}
layers:
  - {name: fc1, op: linear, out: 128}
  - {name: relu1, op: relu}
  - {name: fc2, op: linear, out: 10}
loss: {op: cross_entropy, input: fc2, target: label}
optimizer: {type: sgd, lr: 0.1, momentum: 0.9}
train: {batch: 32, epochs: 1, seed: 0}
"""

SHARED = """
netc: 1
name: layout_shared
inputs:
  a: {shape: [64]}
  b: {shape: [64]}
  label: {shape: [], dtype: int64, classes: 2}
layers:
  - {name: enc_a, op: linear, in: a, out: 32}
  - {name: enc_b, op: linear, in: b, out: 32, share: enc_a}
  - {name: both, op: concat, in: [enc_a, enc_b]}
  - {name: head, op: linear, out: 2}
loss: {op: cross_entropy, input: head, target: label}
optimizer: {type: sgd, lr: 0.1}
train: {batch: 32, epochs: 1, seed: 0}
"""


@pytest.fixture(autouse=True)
def small_kernels(monkeypatch):
    """As on a CPU where OpenBLAS runs its SkylakeX kernels (the layout is correct on any CPU)."""
    monkeypatch.setattr(buffers, "blas_small_kernels", lambda: True)


def transposed(text: str, batch: int) -> set[str]:
    plan = compile_graph(build(text), batch)
    return {f"{owner}.{name}" for owner, regions in plan.buffers.params.items()
            for name, region in regions.items() if region.transposed}


def test_the_rule():
    """A first layer (no gradient into its input) whose product is BLAS's small kind; never a layer
    with a dx (fc2), a product of the packed kind (batch 256), or a weight another layer shares."""
    assert transposed(MLP, 32) == {"fc1.weight"}
    assert transposed(MLP, 1) == {"fc1.weight"}  # 64 * 128 multiply-adds: BLAS, small
    assert transposed(MLP, 256) == set()  # 2 M multiply-adds: OpenBLAS packs; x W^T is as fast
    assert transposed(MLP.replace("x: {shape: [64]}", "x: {shape: [3]}").replace("out: 128", "out: 4"), 32) == set()
    assert transposed(SHARED, 32) == set()


def test_never_where_blas_packs_every_product(monkeypatch):
    """OpenBLAS's AVX2 kernels (and any other BLAS) pack small products too: weights as declared."""
    monkeypatch.setattr(buffers, "blas_small_kernels", lambda: False)
    assert transposed(MLP, 32) == set()


def test_openblas_haswell_kernels_have_no_small_matrix_path():
    """What the docs pages run with (OPENBLAS_CORETYPE=Haswell, tests/test_docs.py): the rule is off."""
    code = "from netc.jit import blas_small_kernels; print(blas_small_kernels())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OPENBLAS_CORETYPE": "Haswell"})
    assert done.stdout.strip() == "False", done.stdout + done.stderr


def _data(count: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(count, 64)), "label": rng.integers(0, 10, count)}


def _declared(batch: int, dtype: str = "float64", text: str = MLP) -> Model:
    """The same spec with every weight stored as declared (the rule switched off for its plan)."""
    rule = LINEAR.transposed
    object.__setattr__(LINEAR, "transposed", None)  # OpDef is frozen
    try:
        return Model(build(text), dtype=dtype, batch=batch, seed=0, tier="python")
    finally:
        object.__setattr__(LINEAR, "transposed", rule)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_training_matches_the_declared_layout(dtype):
    """Three epochs with momentum: the same weights, optimizer state and gradients as a plan that
    stores W as declared (to rounding: BLAS may order a product's sums otherwise), all [out, in]."""
    stored = Model(build(MLP), dtype=dtype, batch=32, seed=0, tier="python")
    declared = _declared(32, dtype)
    assert stored.plan.buffers.params["fc1"]["weight"].transposed
    assert not declared.plan.buffers.params["fc1"]["weight"].transposed
    data = _data(100)
    for epoch in range(3):
        order = np.random.default_rng(epoch).permutation(100)
        for model in (stored, declared):
            model.train_epoch(model.prepare(data), order, seed=epoch)
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-13}
    for got, want in ((stored.get_weights(), declared.get_weights()),
                      (stored.optimizer_state(), declared.optimizer_state()),
                      (stored.gradients(), declared.gradients())):
        assert got.keys() == want.keys()
        for name in got:
            assert got[name].shape == want[name].shape
            assert got[name].flags.c_contiguous
            np.testing.assert_allclose(got[name], want[name], err_msg=name, **tolerance)
    assert stored.get_weights()["fc1.weight"].shape == (128, 64)


@pytest.mark.parametrize("variant", [
    {"{name: fc1, op: linear, out: 128}": "{name: fc1, op: linear, out: 128, trainable: false}"},
    {"{name: fc1, op: linear, out: 128}": "{name: fc1, op: linear, out: 128, lr_mult: 0.5, bias: false}",
     "optimizer: {type: sgd, lr: 0.1, momentum: 0.9}": "optimizer: {type: adam, lr: 0.01, weight_decay: 0.1}"},
], ids=["frozen", "lr_mult-no-bias-adam-decay"])
def test_frozen_scaled_and_decayed_weights_in_both_layouts(variant):
    """A frozen first layer stays as it was; lr_mult, weight decay and Adam's moments act on the same
    entries whichever way the weight is stored."""
    text = MLP
    for old, new in variant.items():
        text = text.replace(old, new)
    stored = Model(build(text), dtype="float64", batch=32, seed=0, tier="python")
    declared = _declared(32, text=text)
    assert stored.plan.buffers.params["fc1"]["weight"].transposed
    start = stored.get_weights()["fc1.weight"]
    data = _data(96, seed=5)
    for model in (stored, declared):
        for epoch in range(2):
            model.train_epoch(model.prepare(data), np.random.default_rng(epoch).permutation(96), seed=epoch)
    for name, value in declared.get_weights().items():
        np.testing.assert_allclose(stored.get_weights()[name], value, rtol=1e-12, atol=1e-13, err_msg=name)
    moved = not np.array_equal(stored.get_weights()["fc1.weight"], start)
    assert moved == ("trainable: false" not in text)


def test_checkpoint_moves_between_layouts():
    """Weights and optimizer state saved from a transposed plan and loaded into one of each layout:
    both continue to the same numbers, and the transposed one exactly as the original does."""
    original = Model(build(MLP), dtype="float64", batch=32, seed=0, tier="python")
    data = _data(64, seed=3)
    original.train_epoch(original.prepare(data), np.arange(64))
    weights, state = original.get_weights(), original.optimizer_state()
    again = Model(build(MLP), dtype="float64", batch=32, seed=1, tier="python")
    declared = _declared(32)
    for model in (again, declared):
        model.set_weights(weights, strict=True)
        model.set_optimizer_state(state, original.step)
    for model in (original, again, declared):
        model.train_epoch(model.prepare(data), np.arange(63, -1, -1))
    for name, value in original.get_weights().items():
        np.testing.assert_array_equal(again.get_weights()[name], value, err_msg=name)
        np.testing.assert_allclose(declared.get_weights()[name], value, rtol=1e-12, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("blas", [True, False])
@pytest.mark.parametrize("acc", [False, True])
def test_kernels_with_a_transposed_weight(blas, acc):
    """linear_forward / linear_backward given w as [in, out]: the reference's y, dx, dw (stored
    [in, out]) and db, for the BLAS and the loop paths, assigning and accumulating."""
    rng = np.random.default_rng(7)
    n, fan_in, out = 5, 6, 4
    x, w, b = rng.normal(size=(n, fan_in)), rng.normal(size=(out, fan_in)), rng.normal(size=out)
    dy = rng.normal(size=(n, out))
    w_stored = np.ascontiguousarray(w.T)
    y = np.zeros((n, out))
    linear_forward(x, w_stored, b, True, y, 0, 0.0, blas, True)
    np.testing.assert_allclose(y, ref.linear_forward(x, w, b), rtol=1e-12)
    dx, dw, db = (rng.normal(size=(n, fan_in)), rng.normal(size=(fan_in, out)), rng.normal(size=out))
    before = (dx.copy(), dw.copy(), db.copy())
    linear_backward(x, w_stored, y, dy.copy(), 0, 0.0, dx, True, acc, dw, db, True, acc, True, blas, True, False)
    want_dx, want_dw, want_db = ref.linear_backward(dy, x, w)
    np.testing.assert_allclose(dx, want_dx + (before[0] if acc else 0), rtol=1e-12)
    np.testing.assert_allclose(dw, want_dw.T + (before[1] if acc else 0), rtol=1e-12)
    np.testing.assert_allclose(db, want_db + (before[2] if acc else 0), rtol=1e-12)


def _dwt_shapes(model: Model) -> dict[str, str]:
    """Each conv's per-chunk weight-gradient scratch as the plan's source binds it."""
    lines = model.plan.sources["python"].splitlines()
    return {conv: next(line.split("(", 2)[2].split(")")[0] for line in lines if f"{conv}_dwt = fixed_view(" in line)
            for conv in ("c1", "c2")}


def test_conv_weight_gradients_are_summed_transposed_where_blas_runs_small_kernels(monkeypatch):
    """With OpenBLAS's SkylakeX kernels each chunk's weight gradient is the product cols @ G.T, [K, F]
    (faster there than G @ cols.T, [F, K], and the same bits: benchmarks/RESULTS.md); with any
    other BLAS as before. Either way the same training, to rounding, in float64."""
    rng = np.random.default_rng(3)
    data = {"img": rng.normal(size=(23, 2, 9, 9)), "y": rng.integers(0, 3, 23)}
    transposed = Model(build(CONV), dtype="float64", seed=0, tier="python")
    monkeypatch.setattr(buffers, "blas_small_kernels", lambda: False)
    declared = Model(build(CONV), dtype="float64", seed=0, tier="python")
    for model in (transposed, declared):  # the same numbers as the parallel kernels; compiled by the gradchecks too
        model.run_serial_twins()
    chunks = transposed.plan.buffers.chunks
    assert _dwt_shapes(transposed) == {"c1": f"{chunks}, 18, 4", "c2": f"{chunks}, 16, 5"}
    assert _dwt_shapes(declared) == {"c1": f"{chunks}, 4, 18", "c2": f"{chunks}, 5, 16"}
    for epoch in range(2):
        order = np.random.default_rng(epoch).permutation(23)
        for model in (transposed, declared):
            model.train_epoch(model.prepare(data), order, seed=epoch)
    moved = transposed.get_weights()["c1.weight"] - Model(build(CONV), dtype="float64", seed=0).get_weights()["c1.weight"]
    assert np.abs(moved).max() > 1e-3
    for name, value in declared.get_weights().items():
        np.testing.assert_allclose(transposed.get_weights()[name], value, rtol=1e-12, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("acc", [False, True])
def test_chunk_weight_gradients_sum_in_chunk_order_to_the_bit(transposed, acc):
    """conv_backward's per-chunk weight gradients (F, K), or (T, K, F) transposed, summed into dw a row
    at a time and written back by tiles: every element is (dw if acc else 0) + chunk 0 + chunk 1 + ...
    in float64, rounded once, as the element-by-element loop it replaced; shapes on and off the
    16 x 16 tiles, 1 to 4 chunks."""
    from numba import njit

    from netc.kernels.conv import sum_chunks

    @njit
    def call(dwt, dw, acc, transposed):
        sum_chunks(dwt, dw, acc, transposed)

    rng = np.random.default_rng(5)
    for filters, k in ((37, 21), (32, 48), (5, 75)):
        for chunks in range(1, 5):
            # the terms in order (dw first when acc): B, -B, s, ... with B ~ 2^30 and s ~ 2^-30 on every other
            # element, so that any other order of the sum gives another float32 (0 instead of s)
            count = chunks + acc
            terms = rng.normal(size=(count, filters, k))
            if count >= 3:
                big = rng.choice([-1.0, 1.0], (filters, k)) * 2.0 ** rng.integers(25, 35, (filters, k))
                cancel = rng.random((filters, k)) < 0.5
                terms[0] = np.where(cancel, big, terms[0])
                terms[1] = np.where(cancel, -big, terms[1])
                terms[2] = np.where(cancel, terms[2] * 2.0**-30, terms[2])
            terms = terms.astype(np.float32)
            dw = terms[0].copy() if acc else np.full((filters, k), np.nan, np.float32)
            parts = terms[acc:]
            expected = np.zeros((filters, k))
            for term in terms:
                expected = expected + term.astype(np.float64)
            dwt = np.ascontiguousarray(parts.transpose(0, 2, 1)) if transposed else parts.copy()
            call(dwt, dw, acc, transposed)
            np.testing.assert_array_equal(dw, expected.astype(np.float32), err_msg=f"{filters}x{k}, {chunks} chunks")


def test_inspect_plan_says_which_weight_is_stored_transposed():
    import io

    from rich.console import Console

    from netc.compiler.describe import plan_renderable

    console = Console(width=300, record=True, file=io.StringIO())
    console.print(plan_renderable(compile_graph(build(MLP), 32), show_source=False))
    text = console.export_text()
    assert "BLAS, weight stored transposed" in text and text.count("stored transposed") == 1, text
