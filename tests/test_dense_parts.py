"""A large linear layer in a plan whose BLAS runs on one thread runs its GEMMs in blocks of columns, one per
core (netc.kernels.dense `*_parts`), where OpenBLAS's SkylakeX kernels give the unsplit GEMM's bits:
the layer's reference values, its gradients by finite differences, the unsplit kernels' bits, on any
thread count. Plan tests set the BLAS kernels' family (buffers.blas_small_kernels) they need."""

import numpy as np
import pytest

import reference as ref
from helpers import SPECS, build
from netc.compiler import buffers, compile_graph
from netc.graph import build_graph
from netc.jit import blas_small_kernels
from netc.kernels.activation import NONE, RELU, SIGMOID
from netc.kernels.dense import linear_backward, linear_backward_parts, linear_forward, linear_forward_parts
from netc.runtime.gradcheck import gradcheck
from netc.spec import load_spec

ACTS = {NONE: (lambda z: z, lambda y: np.ones_like(y)),
        RELU: (lambda z: np.maximum(z, 0), lambda y: (y > 0).astype(y.dtype)),
        SIGMOID: (lambda z: 1 / (1 + np.exp(-z)), lambda y: y * (1 - y))}


def _layer(dtype, n=6, fan_in=37, out=11, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape in ((n, fan_in), (out, fan_in), (out,), (n, out))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parts", [1, 2, 3])
@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("acc", [False, True])
def test_the_parts_kernels_compute_the_layer(dtype, parts, act, acc):
    """y = act(x W^T + b), and dx, dW, db (added to what they hold with acc), blocks of uneven widths
    (37 inputs and 11 outputs in 2 or 3 blocks); the serial twin gives the same bits."""
    x, w, b, dy = _layer(dtype)
    forward, slope = ACTS[act]
    tolerance = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    y = np.zeros((6, 11), dtype)
    linear_forward_parts(x, w, b, True, y, act, 0.0, parts)
    np.testing.assert_allclose(y, forward(ref.linear_forward(x.astype(np.float64), w, b)), **tolerance)

    def backward(kernel):
        dx, dw, db = np.ones_like(x), np.ones_like(w), np.ones_like(b)  # what acc adds to
        kernel(x, w, y, dy.copy(), act, 0.0, dx, True, acc, dw, db, True, acc, True, parts)
        return dx, dw, db

    got = backward(linear_backward_parts)
    want = ref.linear_backward(dy.astype(np.float64) * slope(y.astype(np.float64)), x.astype(np.float64), w)
    for name, value, expected in zip(("dx", "dw", "db"), got, want):
        np.testing.assert_allclose(value, expected + (1 if acc else 0), err_msg=name, **tolerance)
    for value, twin in zip(got, backward(linear_backward_parts.serial)):
        assert np.array_equal(value, twin)


def test_the_parts_kernels_leave_out_what_is_not_needed():
    """No dx asked: dx untouched; no bias: db untouched and y without one."""
    x, w, b, dy = _layer(np.float64)
    y = np.zeros((6, 11))
    linear_forward_parts(x, w, b, False, y, NONE, 0.0, 2)
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-12)
    dx, dw, db = np.full_like(x, 7.0), np.zeros_like(w), np.full_like(b, 7.0)
    linear_backward_parts(x, w, y, dy, NONE, 0.0, dx, False, False, dw, db, True, False, False, 2)
    assert (dx == 7.0).all() and (db == 7.0).all()
    np.testing.assert_allclose(dw, dy.T @ x, rtol=1e-12)


def test_blocks_of_a_large_product_give_the_unsplit_kernels_numbers():
    """seed-cnn's fc1 ([32, 3200] by [3200, 128]): each output is one BLAS dot product over the same k
    whichever block holds it, so under OpenBLAS's SkylakeX kernels (the benchmark machine's) the bits
    are the unsplit ones; under its Haswell kernels a block's edges may be summed otherwise (close)."""
    x, w, b, dy = _layer(np.float32, n=32, fan_in=3200, out=128, seed=1)
    same = np.array_equal if blas_small_kernels() else (lambda a, c: np.allclose(a, c, rtol=1e-5, atol=1e-3))
    whole, split = np.zeros((32, 128), np.float32), np.zeros((32, 128), np.float32)
    linear_forward(x, w, b, True, whole, RELU, 0.0, True, False)
    linear_forward_parts(x, w, b, True, split, RELU, 0.0, 2)
    assert same(whole, split)

    def gradients(parts):  # 0: the unsplit kernel
        dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)
        if parts:
            linear_backward_parts(x, w, whole, dy.copy(), RELU, 0.0, dx, True, False, dw, db, True, False, True, parts)
        else:
            linear_backward(x, w, whole, dy.copy(), RELU, 0.0, dx, True, False, dw, db, True, False, True, True, False,
                            blas_small_kernels())
        return dx, dw, db

    for a, c in zip(gradients(0), gradients(2)):
        assert same(a, c)


def _uses_parts(graph, batch) -> tuple[bool, bool]:
    source = compile_graph(graph, batch).source
    return "linear_forward_parts(" in source, "linear_backward_parts(" in source


MLP = """
    netc: 1
    name: net
    inputs: {{x: {{shape: [{fan_in}]}}, label: {{shape: [], dtype: int64, classes: 10}}}}
    layers:
      - {{name: fc1, op: linear, out: 128}}
      - {{name: fc2, op: linear, out: 10}}
    loss: {{op: cross_entropy, input: fc2, target: label}}
    optimizer: {{type: sgd, lr: 0.1}}
    train: {{batch: 32}}
    """


def test_a_large_layer_runs_in_blocks_where_blas_runs_on_one_thread(monkeypatch):
    """seed-cnn's fc1 (13 M multiply-adds a batch of 32) in one block per core, its fc2 (41 k) whole,
    and at a batch of 8 (3.3 M, below PARTS_WORK) whole; an MLP's alike (13 M), but not where the plan's
    BLAS runs on every core itself (a GEMM of 50 M+). Whole on one core, and under OpenBLAS's Haswell
    kernels (a block's edges summed otherwise)."""
    monkeypatch.setenv("NETC_THREADS", "2")
    monkeypatch.setattr(buffers, "blas_small_kernels", lambda: True)
    cnn = build_graph(load_spec(SPECS / "seed-cnn.yaml"))
    assert _uses_parts(cnn, 32) == (True, True)
    source = compile_graph(cnn, 32).source
    assert source.count("linear_forward_parts(") == 2 and "parts=I64(2)" in source  # forward, and the epoch's
    assert "linear_forward(x=relu3_out" in source  # fc2
    assert _uses_parts(cnn, 8) == (False, False)  # 3.3 M: below PARTS_WORK
    mlp = build(MLP.format(fan_in=3200))
    assert _uses_parts(mlp, 32) == (True, True)  # 13 M
    assert compile_graph(mlp, 32).buffers.blocks == {"fc1": 2}
    assert _uses_parts(mlp, 8) == (False, False)  # 3.3 M
    assert _uses_parts(mlp, 128) == (False, False)  # 52 M: BLAS on both cores (steps.blas_threads)
    monkeypatch.setattr(buffers, "blas_small_kernels", lambda: False)
    assert _uses_parts(cnn, 32) == (False, False)
    assert _uses_parts(mlp, 32) == (False, False)
    monkeypatch.setattr(buffers, "blas_small_kernels", lambda: True)
    monkeypatch.setenv("NETC_THREADS", "1")
    assert _uses_parts(cnn, 32) == (False, False)
    assert _uses_parts(mlp, 32) == (False, False)


def test_a_plan_in_blocks_chooses_its_threads_beside_busy_processes(monkeypatch):
    """An MLP whose only parallel regions are a linear layer's blocks times one thread against one per
    core beside busy processes (netc.cpuload.ThreadChoice), as a conv plan times its counts; a plan with
    no regions at all has nothing to choose."""
    from netc.runtime.model import Model

    monkeypatch.delenv("NETC_THREADS", raising=False)
    monkeypatch.setattr(buffers, "blas_small_kernels", lambda: True)
    mlp = build(MLP.format(fan_in=3200))
    model = Model(mlp, batch=32, tier="python")
    if model.plan.buffers.blas_parts == 1:
        pytest.skip("one core: no blocks")
    assert model.plan.buffers.blocks == {"fc1": model.plan.buffers.blas_parts}
    assert model.thread_choice is not None and model.thread_choice.counts == [1, model.plan.buffers.blas_parts]
    assert Model(mlp, batch=8, tier="python").thread_choice is None


def test_an_mlp_in_blocks_trains_to_the_whole_plans_bits(monkeypatch):
    """Two epochs of an MLP whose fc1 runs in blocks and of the same plan on one core (whole): the same
    weights to the bit under OpenBLAS's SkylakeX kernels, close under its Haswell ones."""
    from netc.runtime.model import Model

    same = np.array_equal if blas_small_kernels() else (lambda a, c: np.allclose(a, c, rtol=1e-5, atol=1e-6))
    monkeypatch.setattr(buffers, "blas_small_kernels", lambda: True)  # the plan splits on either family
    graph = build(MLP.format(fan_in=3200))
    rng = np.random.default_rng(0)
    data = {"x": rng.standard_normal((256, 3200)).astype(np.float32), "label": rng.integers(0, 10, 256)}

    def train(threads: str) -> dict:
        monkeypatch.setenv("NETC_THREADS", threads)
        model = Model(graph, batch=32, tier="python")
        assert bool(model.plan.buffers.blocks) == (threads != "1")
        prepared = model.prepare(data)
        order = np.arange(256, dtype=np.int64)
        for _ in range(2):
            model.train_epoch(prepared, order)
        return model.get_weights()

    whole, blocks = train("1"), train("2")
    assert all(same(whole[name], blocks[name]) for name in whole)


def test_a_block_too_small_for_packed_kernels_keeps_the_layer_whole(monkeypatch):
    """Every block must be a packed product (above SMALL_GEMM), where it gives the whole GEMM's bits:
    8.4 M multiply-adds over 2 blocks of [32, 4096] by [4096, 32] are, split 32 ways not."""
    monkeypatch.setattr(buffers, "blas_small_kernels", lambda: True)
    spec = """
        netc: 1
        name: net
        inputs: {{image: {{shape: [4, 32, 32]}}, label: {{shape: [], dtype: int64, classes: 10}}}}
        layers:
          - {{name: conv, op: conv2d, filters: 4, kernel: 1}}
          - {{name: flat, op: flatten}}
          - {{name: fc1, op: linear, out: {out}}}
          - {{name: fc2, op: linear, out: 10}}
        loss: {{op: cross_entropy, input: fc2, target: label}}
        optimizer: {{type: sgd, lr: 0.1}}
        train: {{batch: 32}}
        """
    monkeypatch.setattr(buffers, "blas_parts", lambda graph, batch: 2)
    assert _uses_parts(build(spec.format(out=64)), 32) == (True, True)
    monkeypatch.setattr(buffers, "blas_parts", lambda graph, batch: 32)  # 32 cores
    assert _uses_parts(build(spec.format(out=64)), 32) == (False, False)


def test_gradients_of_a_layer_in_blocks_match_finite_differences(monkeypatch):
    """float64 central differences through a conv net whose fc1 runs in blocks (the threshold lowered
    to make it; fc2 is small enough for the kernels' loops)."""
    import netc.ops.dense

    monkeypatch.setenv("NETC_THREADS", "2")
    monkeypatch.setattr(buffers, "blas_small_kernels", lambda: True)
    monkeypatch.setattr(netc.ops.dense, "PARTS_WORK", 1)
    monkeypatch.setattr(netc.ops.dense, "SMALL_GEMM", 1)
    graph = build("""
        netc: 1
        name: net
        inputs: {image: {shape: [2, 10, 10]}, label: {shape: [], dtype: int64, classes: 3}}
        layers:
          - {name: conv, op: conv2d, filters: 3, kernel: 3}
          - {name: flat, op: flatten}
          - {name: fc1, op: linear, out: 16}
          - {name: act, op: sigmoid}
          - {name: fc2, op: linear, out: 3}
        loss: {op: cross_entropy, input: fc2, target: label}
        optimizer: {type: sgd, lr: 0.1}
        train: {batch: 4}
        """)
    assert _uses_parts(graph, 4) == (True, True)
    checks = gradcheck(graph, count=4, max_entries=20)
    assert {c.name for c in checks} >= {"fc1.weight", "fc1.bias", "fc2.weight", "conv.weight"}
    for check in checks:
        assert check.checked > 0 and check.max_rel_error < 1e-6, check
