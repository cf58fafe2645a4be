"""Every op's compiled forward and backward against the NumPy reference (each op's own, run
layer by layer by tests/reference.py),
finite-difference gradient checks, and float32 against float64.

One tiny spec per op variant (each is one compiled plan, cached on disk and shared by
the tests below through functools.cache). The reference evaluates the same spec layer by
layer from the parsed YAML, so every test compares a whole network: forward outputs
(`Model.predict`), the mean loss and every parameter gradient (`Model.loss_and_gradients`).
"""

from __future__ import annotations

import functools
import zlib
from textwrap import dedent

import numba
import numpy as np
import pytest
import yaml

import reference as ref
from netc.compiler import compile_graph
from netc.compiler.steps import should_use_blas
from netc.errors import SpecErrors
from netc.graph import build_graph
from netc.runtime.gradcheck import gradcheck
from netc.runtime.model import Model
from netc.spec import load_spec_text

pytestmark = pytest.mark.compiled

N = 4  # samples per test batch; also the plans' batch size (gradcheck compiles for len(arrays))
RTOL, ATOL = 1e-10, 1e-12  # float64 plan vs float64 reference
BIAS = "bias_init: {type: uniform, low: -0.5, high: 0.5}"  # zero biases would hide a forward bias bug
LABEL = "label: {shape: [], dtype: int64, classes: 3}"

SPECS = {
    # linear with and without bias, relu/tanh/sigmoid fused into the linear epilogue;
    # fc1 is large enough (4 * 64 * 32 = 8192 mult-adds) for the BLAS path, the rest use loops
    "dense": """
        inputs:
          x: {shape: [64]}
          LABEL
        layers:
          - {name: fc1, op: linear, out: 32, BIAS}
          - {name: relu1, op: relu}
          - {name: fc2, op: linear, out: 6, bias: false}
          - {name: tanh2, op: tanh}
          - {name: fc3, op: linear, out: 5, BIAS}
          - {name: sig3, op: sigmoid}
          - {name: fc4, op: linear, out: 3, BIAS}
        loss: {op: cross_entropy, input: fc4, target: label}
    """,
    # a gate, sigmoid(g) * h (mul of two), and a product of three tensors, one of them used twice (its
    # gradient gathers from two places; the three-way backward forms the other inputs' product in scratch),
    # minus one of them (sub: its gradient negated into k, which also reads into the product)
    "gated": """
        inputs:
          x: {shape: [5]}
          LABEL
        layers:
          - {name: g, op: linear, in: x, out: 4, BIAS}
          - {name: gate, op: sigmoid}
          - {name: h, op: linear, in: x, out: 4, BIAS}
          - {name: gated, op: mul, in: [gate, h]}
          - {name: k, op: linear, in: x, out: 4, BIAS}
          - {name: three, op: mul, in: [gated, k, h]}
          - {name: diff, op: sub, in: [three, k]}
          - {name: fc, op: linear, out: 3, BIAS}
        loss: {op: cross_entropy, input: fc, target: label}
    """,
    # a sequence's last step (select), two of its steps (slice) and the last two units of every step
    # (slice on the feature axis): three readers of one tensor, their gradients added into it; then a
    # sequence of three steps stacked from two tensors (one of them twice) read by another rnn
    "sliced": """
        inputs:
          x: {shape: [4, 3]}
          LABEL
        layers:
          - {name: seq, op: rnn, in: x, hidden: 5, sequences: true}
          - {name: last, op: select, in: seq, axis: 0, index: -1}
          - {name: mid, op: slice, in: seq, axis: 0, start: 1, stop: 3}
          - {name: midflat, op: flatten, in: mid}
          - {name: units, op: slice, in: seq, axis: 1, start: -2}
          - {name: unitsflat, op: flatten, in: units}
          - {name: both, op: concat, in: [last, midflat, unitsflat]}
          - {name: a, op: linear, in: both, out: 2, BIAS}
          - {name: b, op: linear, in: both, out: 2, BIAS}
          - {name: steps, op: stack, in: [a, b, a]}
          - {name: again, op: rnn, in: steps, hidden: 3}
          - {name: fc, op: linear, out: 3, BIAS}
        loss: {op: cross_entropy, input: fc, target: label}
    """,
    # add of three tensors with relu after it (not fused); log_softmax read by a layer (its own
    # backward, not fused into a loss); softmax read by mse on integer labels (one-hot)
    "unfused": """
        inputs:
          x: {shape: [5]}
          LABEL
        layers:
          - {name: a, op: linear, in: x, out: 4, BIAS}
          - {name: b, op: linear, in: x, out: 4, BIAS}
          - {name: c, op: linear, in: x, out: 4, BIAS}
          - {name: total, op: add, in: [a, b, c]}
          - {name: relu, op: relu}
          - {name: fc1, op: linear, out: 4, BIAS}
          - {name: logp, op: log_softmax}
          - {name: fc2, op: linear, out: 3, BIAS}
          - {name: probs, op: softmax}
        loss: {op: mse, input: probs, target: label}
    """,
    # conv stride 2 + padding 1 (tanh fused), then a bias-free non-square kernel; H != W throughout;
    # the loss reads an identity (a view of fc)
    "conv": """
        inputs:
          x: {shape: [2, 6, 7]}
          LABEL
        layers:
          - {name: conv1, op: conv2d, filters: 3, kernel: 3, stride: 2, padding: 1, BIAS}
          - {name: tanh1, op: tanh}
          - {name: conv2, op: conv2d, filters: 2, kernel: [2, 1], bias: false}
          - {name: flat, op: flatten}
          - {name: fc, op: linear, out: 3, BIAS}
          - {name: logits, op: identity}
        loss: {op: cross_entropy, input: logits, target: label}
    """,
    # max pooling (stride != kernel, padding) with relu after it (not fused) and average pooling
    # (non-square window, stride != kernel, padding not counted) with sigmoid after it, both reading
    # one conv (its gradient sums both); a 1x1 conv with tanh fused whose output is the loss input;
    # mse on an image-shaped target
    "pool": """
        inputs:
          x: {shape: [2, 6, 7]}
          t: {shape: [2, 3, 4]}
        layers:
          - {name: conv, op: conv2d, filters: 2, kernel: 1, BIAS}
          - {name: maxpool, op: maxpool2d, in: conv, kernel: 3, stride: 2, padding: 1}
          - {name: relu, op: relu}
          - {name: avgpool, op: avgpool2d, in: conv, kernel: [3, 2], stride: [2, 2], padding: [1, 1]}
          - {name: sig, op: sigmoid}
          - {name: both, op: add, in: [relu, sig]}
          - {name: mix, op: conv2d, filters: 2, kernel: 1, BIAS}
          - {name: out, op: tanh}
        loss: {op: mse, input: out, target: t}
    """,
    # conv + relu + 2x2 max pool fused into one step; conv + sigmoid + 2x2 max pool fused on an odd
    # 3x3 output (its last row and column belong to no window)
    "convpool": """
        inputs:
          x: {shape: [2, 8, 8]}
          LABEL
        layers:
          - {name: conv1, op: conv2d, filters: 3, kernel: 3, padding: 1, BIAS}
          - {name: relu1, op: relu}
          - {name: pool1, op: maxpool2d, kernel: 2}
          - {name: conv2, op: conv2d, filters: 2, kernel: 2, BIAS}
          - {name: sig2, op: sigmoid}
          - {name: pool2, op: maxpool2d, kernel: 2, stride: 2}
          - {name: flat, op: flatten}
          - {name: fc, op: linear, out: 3, BIAS}
        loss: {op: cross_entropy, input: fc, target: label}
    """,
    # concat of images on axis 0 (channels) and axis 1 (rows, the same tensor twice),
    # then of vectors (two flatten views) on axis 0
    "concat": """
        inputs:
          x: {shape: [2, 4, 4]}
          LABEL
        layers:
          - {name: c1, op: conv2d, in: x, filters: 2, kernel: 3, padding: 1, BIAS}
          - {name: c2, op: conv2d, in: x, filters: 3, kernel: 1, BIAS}
          - {name: channels, op: concat, in: [c1, c2], axis: 0}
          - {name: rows, op: concat, in: [c1, c1], axis: 1}
          - {name: f1, op: flatten, in: channels}
          - {name: f2, op: flatten, in: rows}
          - {name: vectors, op: concat, in: [f1, f2]}
          - {name: out, op: linear, out: 3, BIAS}
        loss: {op: cross_entropy, input: out, target: label}
    """,
    # flatten of an input, dropout (the identity at eval), identity, reshape to a matrix with an
    # activation on it and back with -1; log_softmax + nll fused into one kernel (softmax - onehot)
    "shape_nll": """
        inputs:
          x: {shape: [2, 3, 4]}
          LABEL
        layers:
          - {name: flat, op: flatten}
          - {name: fc1, op: linear, out: 6, BIAS}
          - {name: drop, op: dropout, p: 0.5}
          - {name: same, op: identity}
          - {name: grid, op: reshape, shape: [2, 3]}
          - {name: tanh, op: tanh}
          - {name: back, op: reshape, shape: [-1]}
          - {name: fc2, op: linear, out: 3, BIAS}
          - {name: logp, op: log_softmax}
        loss: {op: nll, input: logp, target: label}
    """,
    # the parametrised activations: leaky_relu fused into a linear epilogue (BLAS path) and elu into a
    # conv epilogue with a fused 2x2 max pool (both monotone); gelu (exact, then tanh) as their own
    # steps, whose backward reads their input, and silu after the first; global average pooling of a map
    # into [C, 1, 1]
    "activations": """
        inputs:
          x: {shape: [2, 6, 6]}
          LABEL
        layers:
          - {name: conv1, op: conv2d, filters: 3, kernel: 3, padding: 1, BIAS}
          - {name: elu1, op: elu, alpha: 0.7}
          - {name: pool1, op: maxpool2d, kernel: 2}
          - {name: conv2, op: conv2d, filters: 4, kernel: 1, BIAS}
          - {name: gap, op: global_avgpool2d}
          - {name: flat, op: flatten}
          - {name: fc1, op: linear, out: 512, BIAS}
          - {name: leaky1, op: leaky_relu, negative_slope: 0.2}
          - {name: fc2, op: linear, out: 6, BIAS}
          - {name: gelu2, op: gelu}
          - {name: silu2, op: silu}
          - {name: fc3, op: linear, out: 5, BIAS}
          - {name: gelu3, op: gelu, approximate: tanh}
          - {name: fc4, op: linear, out: 3, BIAS}
        loss: {op: cross_entropy, input: fc4, target: label}
    """,
    # local2d (unshared weights): stride 2, non-square kernel, bias, leaky_relu fused into its epilogue,
    # reading the graph input (no dx); then a bias-free local2d and a second one sharing its weights, both
    # reading act1 (its gradient and the shared weight gradient are written once, then added to)
    "local": """
        inputs:
          x: {shape: [2, 7, 6]}
          LABEL
        layers:
          - {name: local1, op: local2d, filters: 3, kernel: [3, 2], stride: 2, BIAS}
          - {name: act1, op: leaky_relu, negative_slope: 0.2}
          - {name: local2, op: local2d, in: act1, filters: 2, kernel: [2, 1], bias: false}
          - {name: local3, op: local2d, in: act1, filters: 2, kernel: [2, 1], bias: false, share: local2}
          - {name: both, op: add, in: [local2, local3]}
          - {name: flat, op: flatten}
          - {name: fc, op: linear, out: 3, BIAS}
        loss: {op: cross_entropy, input: fc, target: label}
    """,
    # skip connections from a graph input: the FIRST input of add and of concat needs no gradient,
    # the second does (act1 and skip)
    "skip": """
        inputs:
          x: {shape: [4]}
          LABEL
        layers:
          - {name: fc1, op: linear, out: 4, BIAS}
          - {name: act1, op: tanh}
          - {name: skip, op: add, in: [x, act1]}
          - {name: both, op: concat, in: [x, skip]}
          - {name: fc2, op: linear, out: 3, BIAS}
        loss: {op: cross_entropy, input: fc2, target: label}
    """,
    # layernorm of the graph input's rows (R = 2*4 rows of D = 5, no dx), of a conv's whole [C, H, W] map
    # (normalized: 3) with relu after it (not fused: layernorm has no epilogue), and of a linear's features
    # without affine, whose input fc1 is also read by add (its gradient written once, then added to)
    "layernorm": """
        inputs:
          x: {shape: [2, 4, 5]}
          LABEL
        layers:
          - {name: ln0, op: layernorm, weight_init: {type: uniform, low: 0.5, high: 1.5}, BIAS}
          - {name: conv1, op: conv2d, filters: 3, kernel: 3, padding: 1, BIAS}
          - {name: ln1, op: layernorm, normalized: 3, eps: 0.001, BIAS,
             weight_init: {type: uniform, low: 0.5, high: 1.5}}
          - {name: relu1, op: relu}
          - {name: flat, op: flatten}
          - {name: fc1, op: linear, out: 6, BIAS}
          - {name: ln2, op: layernorm, affine: false}
          - {name: tanh2, op: tanh}
          - {name: skip, op: add, in: [fc1, tanh2]}
          - {name: fc2, op: linear, out: 3, BIAS}
        loss: {op: cross_entropy, input: fc2, target: label}
    """,
    # the recurrent cells stacked over a sequence of 3 steps: every step of a gru into an lstm (its
    # input gradient), tanh as its own step, every step of that into an rnn whose last state feeds fc
    "recurrent": """
        inputs:
          x: {shape: [3, 4]}
          LABEL
        layers:
          - {name: g, op: gru, hidden: 3, sequences: true, BIAS}
          - {name: l, op: lstm, hidden: 4, sequences: true, BIAS}
          - {name: a, op: tanh}
          - {name: r, op: rnn, hidden: 3, BIAS}
          - {name: fc, op: linear, out: 3, BIAS}
        loss: {op: cross_entropy, input: fc, target: label}
    """,
}

def case_params(names=None):
    """The spec names to parametrize over (all of them by default)."""
    return list(names or SPECS)


def spec_text(name: str) -> str:
    body = dedent(SPECS[name]).replace("BIAS", BIAS).replace("LABEL", LABEL)
    return f"netc: 1\nname: ops_{name}\n{body.strip()}\ntrain: {{batch: {N}}}\n"


@functools.cache
def graph_of(name: str):
    return build_graph(load_spec_text(spec_text(name), f"{name}.yaml"))


@functools.cache
def parsed(name: str) -> dict:
    """The spec as plain YAML data, for the reference (independent of netc's loader)."""
    return yaml.safe_load(spec_text(name))


@functools.cache
def model_of(name: str) -> Model:
    """Shared by the tests: never change its weights (seed 0, the same values gradcheck starts from)."""
    return Model(graph_of(name), dtype="float64", batch=N, seed=0)


@functools.cache
def arrays_of(name: str) -> dict:
    """N samples: inputs from N(0, 1) (no ReLU/max-pool ties), labels uniform."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    arrays = {}
    for key, inp in parsed(name)["inputs"].items():
        if inp.get("dtype") == "int64":
            arrays[key] = rng.integers(0, inp["classes"], N)
        else:
            arrays[key] = rng.normal(size=(N, *inp["shape"]))
    return arrays


def reference_of(name: str, weights: dict):
    """(loss, scores, gradients) of the NumPy reference for this spec, these weights and the case's data."""
    return ref.network_loss_and_gradients(parsed(name), weights, arrays_of(name))


def trainable_names(name: str) -> set[str]:
    graph = graph_of(name)
    return {f"{node.name}.{p}" for node in graph.owners if node.trainable for p in node.param_shapes}


# ---------------------------------------------------------------------------------- the oracle itself


@pytest.mark.parametrize("loss", ["mse", "mse_labels", "cross_entropy", "nll"])
def test_reference_losses_match_finite_differences(loss):
    rng = np.random.default_rng(2)
    y = rng.normal(size=(4, 3))
    labels = rng.integers(0, 3, 4)
    target = {"mse": rng.normal(size=(4, 3))}.get(loss, labels)
    fn = ref.LOSSES[loss.replace("_labels", "")]
    if loss == "nll":
        y = y - np.log(np.exp(y).sum(axis=1, keepdims=True))  # log-probabilities
    _, exact = fn(y, target)
    numeric = ref.numeric_grad(lambda: fn(y, target)[0], y)
    np.testing.assert_allclose(exact, numeric, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------------- the plans take the paths under test


PATHS = {
    # spec -> ({layer: fused activation}, layers that run as their own activation step, loss kernel)
    "dense": ({"fc1": "relu", "fc2": "tanh", "fc3": "sigmoid", "fc4": None}, [], "cross_entropy"),
    "unfused": ({"a": None, "b": None, "c": None, "fc1": None, "fc2": None}, ["relu"], "mse_onehot"),
    "conv": ({"conv1": "tanh", "conv2": None, "fc": None}, [], "cross_entropy"),
    "pool": ({"conv": None, "mix": "tanh"}, ["relu", "sig"], "mse"),
    "convpool": ({"conv1": "relu", "conv2": "sigmoid", "fc": None}, [], "cross_entropy"),
    "shape_nll": ({"fc1": None, "fc2": None}, ["tanh"], "nll_after_log_softmax"),
    "activations": ({"conv1": "elu", "conv2": None, "fc1": "leaky_relu", "fc2": None, "fc3": None}, ["gelu2", "silu2", "gelu3"],
                    "cross_entropy"),
    "local": ({"local1": "leaky_relu", "local2": None, "local3": None, "fc": None}, [], "cross_entropy"),
    "layernorm": ({"conv1": None, "fc1": None, "fc2": None}, ["relu1", "tanh2"], "cross_entropy"),
    "recurrent": ({"fc": None}, ["a"], "cross_entropy"),
}


@pytest.mark.parametrize("name", list(PATHS))
def test_plan_takes_the_path_under_test(name):
    """Fusion decisions, so that 'fused' and 'not fused' variants really test different kernels (no Numba here)."""
    fused, standalone, loss_kind = PATHS[name]
    plan = compile_graph(graph_of(name), N)
    by_layer = {step.node.name: step for step in plan.steps}
    for layer, act in fused.items():
        applied = by_layer[layer].act
        assert (applied.op if applied is not None else None) == act, (layer, by_layer[layer].covers)
    for layer in standalone:
        assert by_layer[layer].kind == "act", layer
    assert plan.loss.kind == loss_kind
    pooled = {layer: step.pool.name for layer, step in by_layer.items() if step.pool is not None}
    fused_pools = {"convpool": {"conv1": "pool1", "conv2": "pool2"}, "activations": {"conv1": "pool1"}}
    assert pooled == fused_pools.get(name, {})  # "pool": 3x3 windows
    if name == "dense":
        assert should_use_blas(N, 64, 32) and not should_use_blas(N, 32, 6)  # fc1 takes the BLAS path, fc2 loops


def test_log_softmax_read_by_nll_and_by_another_layer_is_refused():
    """The other reader could not lead to the loss (nll reads the log_softmax itself): the spec is refused
    as dead code, so nll is always fused with its log_softmax; a log_softmax read by a layer is covered by
    the 'unfused' spec."""
    text = spec_text("shape_nll").replace("loss:", "  - {name: extra, op: linear, in: logp, out: 2}\nloss:")
    with pytest.raises(SpecErrors) as info:
        build_graph(load_spec_text(text, "t.yaml"))
    assert [d.code for d in info.value.diagnostics] == ["E-DEAD"]


# ---------------------------------------------------------------------------------- compiled vs reference, float64


@pytest.mark.parametrize("name", list(SPECS))
def test_forward_matches_reference(name):
    model = model_of(name)
    _, expected, _ = reference_of(name, model.get_weights())
    scores = model.predict(arrays_of(name))
    np.testing.assert_allclose(scores, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", case_params())
def test_loss_and_gradients_match_reference(name):
    model = model_of(name)
    expected_loss, _, expected = reference_of(name, model.get_weights())
    loss, grads = model.loss_and_gradients(arrays_of(name))
    assert loss == pytest.approx(expected_loss, rel=RTOL)
    assert set(grads) == trainable_names(name)
    for key, grad in grads.items():
        np.testing.assert_allclose(grad, expected[key], rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.mark.parametrize("name", case_params())
def test_gradcheck(name):
    """Central differences in float64 (netc.runtime.gradcheck) on every trainable tensor."""
    results = gradcheck(graph_of(name), arrays=arrays_of(name), max_entries=12)
    assert {r.name for r in results} == trainable_names(name)
    worst = {r.name: r.max_rel_error for r in results}
    assert max(worst.values()) < 1e-6, worst


def test_dropout_is_the_identity_at_eval_and_in_loss_and_gradients():
    """predict and loss_and_gradients run dropout off: two calls give identical results."""
    model = model_of("shape_nll")
    arrays = arrays_of("shape_nll")
    np.testing.assert_array_equal(model.predict(arrays), model.predict(arrays))
    first = model.loss_and_gradients(arrays)
    second = model.loss_and_gradients(arrays)
    assert first[0] == second[0]
    for key in first[1]:
        np.testing.assert_array_equal(first[1][key], second[1][key])


def test_predict_runs_several_batches_and_a_partial_one():
    """2N + 1 samples through a batch-N plan (three batches, the last of one sample), without labels."""
    model = model_of("dense")
    x = np.random.default_rng(9).normal(size=(2 * N + 1, 64))
    expected = ref.network_forward(parsed("dense"), model.get_weights(), {"x": x})["fc4"]
    np.testing.assert_allclose(model.predict({"x": x}), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ["conv", "pool"])
def test_gradients_of_a_batch_smaller_than_the_plan(name):
    """N - 1 samples on a batch-N plan: the mean is over N - 1 and no stale row leaks in."""
    model = model_of(name)
    arrays = {key: value[:N - 1] for key, value in arrays_of(name).items()}
    expected_loss, _, expected = ref.network_loss_and_gradients(parsed(name), model.get_weights(), arrays)
    loss, grads = model.loss_and_gradients(arrays)
    assert loss == pytest.approx(expected_loss, rel=RTOL)
    for key, grad in grads.items():
        np.testing.assert_allclose(grad, expected[key], rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.mark.parametrize("chunks, group", [(3, 1), (1, 2)])
@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("name", ["conv", "convpool"])
def test_conv_chunks_groups_and_kept_columns(monkeypatch, name, keep, chunks, group):
    """The parallel conv's split of the batch against the reference values: three chunks of one
    sample GEMM each (one chunk empty for 4 or 1 samples), or one chunk of two-sample GEMMs (the
    second group's columns start at an offset, the last group may be partial); the im2col columns
    kept from forward to backward, or unrolled again. (The other tests run one chunk per core, a
    whole chunk per GEMM, and kept columns.)"""
    from netc.compiler import buffers
    from netc.ops import conv

    k, positions = {"conv": (18, 12), "convpool": (18, 64)}[name]  # conv1: K = 2*3*3, its output positions
    monkeypatch.setattr(buffers, "parallel_chunks", lambda batch: chunks)
    monkeypatch.setattr(conv, "COLS_BUDGET", group * k * positions)
    monkeypatch.setattr(conv, "KEEP_BUDGET", conv.KEEP_BUDGET if keep else 0)
    model = Model(graph_of(name), dtype="float64", batch=N, seed=0)
    assert model.plan.buffers.chunks == chunks
    assert ("W", 0, (chunks, k, group * positions)) in model.plan.views.entries  # conv1's scratch columns
    kept = sorted(layer for layer, what in model.plan.buffers.saved if what == "cols")
    assert kept == (["conv1", "conv2"] if keep else [])
    for count in (N, N - 1, 1):
        arrays = {key: value[:count] for key, value in arrays_of(name).items()}
        expected_loss, _, expected = ref.network_loss_and_gradients(parsed(name), model.get_weights(), arrays)
        loss, grads = model.loss_and_gradients(arrays)
        assert loss == pytest.approx(expected_loss, rel=RTOL)
        for key, grad in grads.items():
            np.testing.assert_allclose(grad, expected[key], rtol=RTOL, atol=ATOL, err_msg=f"{key}, {count} samples")


def _check_against_the_reference(model, name: str, dtype: str) -> None:
    """Loss and gradients (the input's too) of N, N - 1 and 1 samples against the float64 reference, to
    float32's tolerance when the model computes in float32."""
    tolerance = dict(rtol=RTOL, atol=ATOL) if dtype == "float64" else dict(rtol=1e-4, atol=1e-5)
    for count in (N, N - 1, 1):
        arrays = {key: value[:count] for key, value in arrays_of(name).items()}
        weights = {key: value.astype(np.float64) for key, value in model.get_weights().items()}
        expected_loss, _, expected = ref.network_loss_and_gradients(parsed(name), weights, arrays)
        loss, grads = model.loss_and_gradients(arrays)
        assert loss == pytest.approx(expected_loss, rel=tolerance["rtol"])
        for key, grad in grads.items():
            np.testing.assert_allclose(grad, expected[key], **tolerance, err_msg=f"{key}, {count} samples")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("chunks, columns", [(1, 1), (3, 30)])
@pytest.mark.parametrize("name", ["conv", "convpool"])
def test_convs_on_the_micro_kernel(monkeypatch, name, chunks, columns, dtype):
    """Every conv of the spec on netc's micro-kernel, forward and backward (the rule's thresholds lowered
    to 1): stride 2 and padding 1 (unrolled with bounds checks), a non-square kernel without bias, fused
    max pools after relu and sigmoid, one sample per forward group or several (30 columns), one chunk or
    three (one empty for fewer than 3 samples), tiles mostly padding (2-3 filters of a tile's rows, 12-64
    positions, k of 4-27); loss and gradients (of the input too: conv2's) against the reference."""
    from netc.compiler import buffers
    from netc.ops import conv

    monkeypatch.setattr(buffers, "parallel_chunks", lambda batch: chunks)
    monkeypatch.setattr(conv, "TILED_MIN_FILTERS", 1)
    monkeypatch.setattr(conv, "TILED_MIN_DEPTH", 1)
    monkeypatch.setattr(conv, "TILED_COLUMNS", columns)
    monkeypatch.setattr(conv, "KEEP_BUDGET", 0)  # the tiled forward keeps no columns
    model = Model(graph_of(name), dtype=dtype, batch=N, seed=0)
    source = model.plan.source
    assert "conv_forward_tiles(" in source and "conv_backward_tiles(" in source
    assert "conv_forward(" not in source and "conv_backward(" not in source
    _check_against_the_reference(model, name, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("chunks", [1, 3])
@pytest.mark.parametrize("name", ["convpool", "conv"])
def test_direct_convs_read_their_columns_in_place(monkeypatch, name, chunks, dtype):
    """Every stride-1 conv of the spec direct (the rule's filter count lowered to 1). convpool: padding 1
    (each output row computed 10 wide for 8 outputs) with relu and a fused pool, then a 2x2 kernel without
    padding whose input needs its gradient (both gathers, the bias summed once), with sigmoid and a fused
    pool; conv: a 2x1 kernel without bias or activation after a strided conv (im2col). One chunk or three
    (one empty for fewer than 3 samples); loss and gradients, the input's too, against the reference."""
    from netc.compiler import buffers
    from netc.ops import conv

    monkeypatch.setattr(buffers, "parallel_chunks", lambda batch: chunks)
    monkeypatch.setattr(conv, "DIRECT_MIN_FILTERS", 1)
    model = Model(graph_of(name), dtype=dtype, batch=N, seed=0)
    source = model.plan.source
    assert "conv_forward_direct(" in source and "conv_backward_direct(" in source
    if name == "convpool":  # and no other conv kernel
        assert not any(f"{kernel}(" in source for kernel in ("conv_forward", "conv_forward_tiles", "conv_backward",
                                                             "conv_backward_tiles"))
    _check_against_the_reference(model, name, dtype)


def test_a_strided_narrow_or_thin_conv_is_not_direct(monkeypatch):
    """The rule: stride 1, 64+ filters, k under the tiled passes' 256, output rows at least 3/4 of the padded
    image's; in a plan, conv1 of the "conv" spec (stride 2) stays on im2col, its conv2 (stride 1) does not."""
    from netc.ops import conv

    narrow = dict(C=1, H=8, W=8, KH=3, KW=3, SH=1, SW=1, PH=0, PW=0, OH=6, OW=6, F=64)
    assert conv.direct_conv(narrow)  # 6 outputs for rows of 8: 3/4
    assert not conv.direct_conv({**narrow, "KW": 4, "OW": 5})  # 5 for 8: less
    assert not conv.direct_conv({**narrow, "F": 63})
    assert not conv.direct_conv({**narrow, "C": 29})  # k = 261: the tiled passes' (long k)
    assert not conv.direct_conv({**narrow, "SW": 2, "OW": 3})
    monkeypatch.setattr(conv, "DIRECT_MIN_FILTERS", 1)
    source = compile_graph(graph_of("conv"), N).source
    assert source.count("conv_forward_direct(") == source.count("conv_forward(") > 0  # a call of each per forward


def test_the_micro_kernel_forward_gives_each_sample_the_same_bits_in_any_chunk_or_group(monkeypatch):
    """Each output is one chain of multiply-adds of its own column: which samples share a chunk, a group
    or a column panel changes no bit of the forward (float32)."""
    from netc.compiler import buffers
    from netc.ops import conv

    monkeypatch.setattr(conv, "TILED_MIN_FILTERS", 1)
    monkeypatch.setattr(conv, "TILED_MIN_DEPTH", 1)
    monkeypatch.setattr(conv, "KEEP_BUDGET", 0)
    outputs = []
    for chunks, columns in [(1, 1), (3, 30), (2, 1000)]:
        monkeypatch.setattr(buffers, "parallel_chunks", lambda batch, chunks=chunks: chunks)
        monkeypatch.setattr(conv, "TILED_COLUMNS", columns)
        model = Model(graph_of("convpool"), dtype="float32", batch=N, seed=0)
        assert "conv_forward_tiles(" in model.plan.source
        outputs.append(model.predict(arrays_of("convpool")))
    for other in outputs[1:]:
        np.testing.assert_array_equal(other, outputs[0])


def test_seed_cnns_convs_run_on_the_micro_kernel_and_inspect_says_how():
    """The rules pick the tiled passes for seed-cnn's conv2 (128 filters, k = 1600) and the direct ones for
    its conv1 (64 filters, k = 75, stride 1: no columns kept); `netc inspect --plan` says which on each row."""
    import io
    from pathlib import Path

    from rich.console import Console

    from netc.compiler.describe import plan_renderable
    from netc.spec.load import load_spec

    graph = build_graph(load_spec(str(Path(__file__).resolve().parent.parent / "specs" / "seed-cnn.yaml")))
    plan = compile_graph(graph)
    source = plan.source
    assert source.count("conv_forward_tiles(") == source.count("conv_forward_direct(") > 0  # one of each per forward
    assert source.count("conv_backward_tiles(") == source.count("conv_backward_direct(") > 0
    assert "conv_forward(" not in source and "conv1_cols" not in source
    console = Console(width=400, record=True, file=io.StringIO())
    console.print(plan_renderable(plan, show_source=False))
    rows = [line for line in console.export_text().splitlines() if "micro-kernel" in line]
    assert len(rows) == 2, rows
    assert "conv1 + relu1 + pool1" in rows[0] and "conv_forward_direct" in rows[0]
    assert "conv2 + relu2 + pool2" in rows[1] and "conv_forward_tiles" in rows[1]


# ---------------------------------------------------------------------------------- float32 vs float64


@pytest.mark.parametrize("name", ["conv"])
def test_float32_matches_float64(name):
    """The same plan compiled for float32 (what training uses): loss and gradients within ~1e-4 of float64."""
    m64 = model_of(name)
    m32 = Model(graph_of(name), dtype="float32", batch=N, seed=0)
    arrays = arrays_of(name)
    loss32, grads32 = m32.loss_and_gradients(arrays)
    loss64, grads64 = m64.loss_and_gradients(arrays)
    assert loss32 == pytest.approx(loss64, rel=1e-4)
    for key in grads64:
        assert grads32[key].dtype == np.float32
        np.testing.assert_allclose(grads32[key], grads64[key], rtol=1e-4, atol=1e-5, err_msg=key)


@numba.njit
def _two_branch_sigmoid(x, y):
    # the sigmoid as netc computed it before it was branch-free (a branch per element on z's sign,
    # which the CPU mispredicts about half the time on a network's activations)
    for i in range(x.size):
        z = x[i]
        if z >= 0:
            y[i] = 1 / (1 + np.exp(-z))
        else:
            e = np.exp(z)
            y[i] = e / (1 + e)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_branch_free_sigmoid_gives_the_two_branch_formulas_bits(dtype):
    """The same exp of -|z|, the same divisions: to the bit, in either type, ±0 and ±inf included (a NaN
    stays a NaN; its sign bit is not a number's)."""
    from netc.kernels.activation import SIGMOID, act_forward

    special = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 88.0, -88.0, 104.0, -104.0, 710.0, -746.0]
    x = np.concatenate([np.array(special), np.random.default_rng(0).normal(0, 4, 200_000)]).astype(dtype)
    got, want = np.empty_like(x), np.empty_like(x)
    act_forward(x, got, SIGMOID, 0.0)
    _two_branch_sigmoid(x, want)
    nan = np.isnan(want)
    assert nan.sum() == 1 and np.isnan(got[nan]).all()
    assert np.array_equal(got[~nan].view(np.uint8), want[~nan].view(np.uint8))
