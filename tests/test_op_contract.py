"""The op contract: every registered op carries every part of it, the registry and the spec
language agree, and every op's numpy reference is right (finite differences in float64, and
PyTorch where it is installed). Nothing here compiles a plan.

A new op fails here until it has its sample below, so it is checked like every other."""

from __future__ import annotations

import importlib
import inspect
import typing

import numpy as np
import pytest
from reference import numeric_grad

from netc.compiler.codegen import KERNEL_MODULES
from netc.ops.base import ACTIVATION, ALIAS, CATEGORIES, EPILOGUE, INDEXED, REGISTRY, OpDef, numel, pair
from netc.spec import models

# op -> (layer mapping, input shapes without the batch, parameter shapes): one instance of each op
SAMPLES = {
    "linear": ({"op": "linear", "out": 5}, [(4,)], {"weight": (5, 4), "bias": (5,)}),
    "conv2d": ({"op": "conv2d", "filters": 3, "kernel": [3, 2], "stride": [2, 1], "padding": [1, 1]},
               [(2, 5, 6)], {"weight": (3, 2, 3, 2), "bias": (3,)}),
    "maxpool2d": ({"op": "maxpool2d", "kernel": [3, 2], "stride": [2, 1], "padding": [1, 1]}, [(2, 5, 6)], {}),
    "avgpool2d": ({"op": "avgpool2d", "kernel": [3, 2], "stride": [2, 1], "padding": [1, 1]}, [(2, 5, 6)], {}),
    "global_avgpool2d": ({"op": "global_avgpool2d"}, [(3, 4, 5)], {}),
    "batchnorm1d": ({"op": "batchnorm1d", "momentum": 0.2}, [(4,)], {"weight": (4,), "bias": (4,)}),
    "batchnorm2d": ({"op": "batchnorm2d", "eps": 1e-3}, [(3, 2, 3)], {"weight": (3,), "bias": (3,)}),
    # rows of [3, 2, 4] normalised over their last two dims [2, 4] (R = 3, D = 8)
    "layernorm": ({"op": "layernorm", "normalized": 2, "eps": 1e-3}, [(3, 2, 4)], {"weight": (2, 4), "bias": (2, 4)}),
    # OH = (5 - 3) // 2 + 1 = 2, OW = (6 - 2) // 1 + 1 = 5, K = 2 * 3 * 2 = 12
    "local2d": ({"op": "local2d", "filters": 3, "kernel": [3, 2], "stride": [2, 1]}, [(2, 5, 6)],
                {"weight": (2, 5, 3, 12), "bias": (3, 2, 5)}),
    # indices [2, 3] into a table of 7 rows of 4: [2, 3, 4]
    "embedding": ({"op": "embedding", "num": 7, "dim": 4}, [(2, 3)], {"weight": (7, 4)}),
    # a sequence of T = 4 steps of F = 3 features, H = 2 hidden units, G gates: weights [G*H, F], [G*H, H]
    "rnn": ({"op": "rnn", "hidden": 2}, [(4, 3)],
            {"weight_ih_l0": (2, 3), "weight_hh_l0": (2, 2), "bias_ih_l0": (2,), "bias_hh_l0": (2,)}),
    "lstm": ({"op": "lstm", "hidden": 2}, [(4, 3)],
             {"weight_ih_l0": (8, 3), "weight_hh_l0": (8, 2), "bias_ih_l0": (8,), "bias_hh_l0": (8,)}),
    "gru": ({"op": "gru", "hidden": 2, "sequences": True}, [(4, 3)],
            {"weight_ih_l0": (6, 3), "weight_hh_l0": (6, 2), "bias_ih_l0": (6,), "bias_hh_l0": (6,)}),
    "flatten": ({"op": "flatten"}, [(2, 3, 4)], {}),
    "reshape": ({"op": "reshape", "shape": [4, -1]}, [(2, 3, 4)], {}),
    "identity": ({"op": "identity"}, [(4,)], {}),
    "relu": ({"op": "relu"}, [(6,)], {}),
    "sigmoid": ({"op": "sigmoid"}, [(6,)], {}),
    "tanh": ({"op": "tanh"}, [(6,)], {}),
    "leaky_relu": ({"op": "leaky_relu", "negative_slope": 0.2}, [(6,)], {}),
    "elu": ({"op": "elu", "alpha": 0.7}, [(6,)], {}),
    "gelu": ({"op": "gelu"}, [(6,)], {}),
    "silu": ({"op": "silu"}, [(6,)], {}),
    "softmax": ({"op": "softmax"}, [(5,)], {}),
    "log_softmax": ({"op": "log_softmax"}, [(5,)], {}),
    "dropout": ({"op": "dropout", "p": 0.3}, [(6,)], {}),
    "add": ({"op": "add", "in": ["a", "b", "c"]}, [(2, 3), (2, 3), (2, 3)], {}),
    "mul": ({"op": "mul", "in": ["a", "b", "c"]}, [(2, 3), (2, 3), (2, 3)], {}),
    "sub": ({"op": "sub", "in": ["a", "b"]}, [(2, 3), (2, 3)], {}),
    "concat": ({"op": "concat", "in": ["a", "b"], "axis": 1}, [(2, 3, 2), (2, 1, 2)], {}),
    # three [2, 3] tensors stacked in the middle: [2, 3 (new), 3]
    "stack": ({"op": "stack", "in": ["a", "b", "c"], "axis": 1}, [(2, 3), (2, 3), (2, 3)], {}),
    # steps 1..3 of a sequence [5, 3]; the last step of one
    "slice": ({"op": "slice", "axis": 0, "start": 1, "stop": -1}, [(5, 3)], {}),
    "select": ({"op": "select", "axis": 0, "index": -1}, [(5, 3)], {}),
}
# variants whose reference takes another path
VARIANTS = [("gelu_tanh", {"op": "gelu", "approximate": "tanh"}, [(6,)], {}),
            ("batchnorm1d_sequence", {"op": "batchnorm1d", "affine": False}, [(3, 4)], {}),
            ("layernorm_plain", {"op": "layernorm", "affine": False}, [(5,)], {}),
            ("embedding_padding", {"op": "embedding", "num": 5, "dim": 3, "padding_idx": 2}, [(6,)], {"weight": (5, 3)}),
            ("lstm_sequences", {"op": "lstm", "hidden": 3, "sequences": True, "bias": False}, [(3, 2)],
             {"weight_ih_l0": (12, 2), "weight_hh_l0": (12, 3)}),
            ("gru_last", {"op": "gru", "hidden": 3, "bias": False}, [(3, 2)],
             {"weight_ih_l0": (9, 2), "weight_hh_l0": (9, 3)}),
            ("mul_pair", {"op": "mul", "in": ["a", "b"]}, [(4,), (4,)], {}),
            ("slice_channels", {"op": "slice", "axis": 1, "start": -2}, [(2, 4, 3)], {}),
            ("select_middle", {"op": "select", "axis": 1, "index": 2}, [(2, 4, 3)], {}),
            ("rnn_sequences", {"op": "rnn", "hidden": 3, "sequences": True}, [(3, 2)],
             {"weight_ih_l0": (3, 2), "weight_hh_l0": (3, 3), "bias_ih_l0": (3,), "bias_hh_l0": (3,)})]


def test_registry_and_spec_union_agree():
    union = typing.get_args(typing.get_args(models.LayerSpec)[0])
    assert [cls for cls in union] == [op.spec for op in REGISTRY.values()]
    for name, op in REGISTRY.items():
        assert typing.get_args(op.spec.model_fields["op"].annotation) == (name,), name
    schema = models.Spec.model_json_schema()
    listed = {item["properties"]["op"]["const"] for item in schema["$defs"].values()
              if "op" in item.get("properties", {}) and "const" in item["properties"]["op"]}
    assert set(REGISTRY) <= listed, "every op is in the JSON Schema"


def test_every_op_has_a_sample():
    assert set(SAMPLES) == set(REGISTRY), "add the new op to SAMPLES (and check it in test_ops.py)"


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_op_carries_its_whole_contract(name):
    op: OpDef = REGISTRY[name]
    assert op.spec.__doc__ and op.spec.__doc__.strip(), f"{name}: its spec class needs a docstring"
    for field, info in op.spec.model_fields.items():
        assert field == "op" or info.description, f"{name}.{field} has no description"
    assert set(op.categories) <= set(CATEGORIES)
    assert callable(op.infer) and callable(op.onnx) and callable(op.reference.forward)
    assert callable(op.reference.backward)
    assert len(op.labels) == 2 and all(op.labels)
    if op.is_(ALIAS):
        assert op.forward is None and op.backward is None and not op.kernels
        return
    assert callable(op.forward) and callable(op.backward), f"{name}: emitters"
    assert op.kernels, f"{name}: lists its kernels"
    for module, kernels in op.kernels.items():
        loaded = importlib.import_module(module)
        for kernel in kernels:
            assert hasattr(loaded, kernel), f"{name}: {module}.{kernel} does not exist"
            assert kernel in KERNEL_MODULES[module], f"{name}: {kernel} is not imported by plans"
    if op.is_(ACTIVATION):
        assert op.activation is not None
        layer = op.spec.model_validate(SAMPLES[name][0])
        assert op.activation.code(layer) > 0 and isinstance(op.activation.alpha(layer), float)
    if op.is_(EPILOGUE):
        assert "act" in inspect.signature(_kernel(op, 0)).parameters, f"{name}: its kernel takes an epilogue"


def _kernel(op, index):
    module, names = next(iter(op.kernels.items()))
    function = getattr(importlib.import_module(module), names[index])
    return getattr(function, "py_func", function)


def _random_case(name, layer, shapes, params, seed=0):
    """Inputs (3 samples) and parameters drawn at random; an INDEXED op reads every row of its table
    (so each gets a gradient), the padding row among them."""
    rng = np.random.default_rng(seed)
    op = REGISTRY[layer["op"]]
    validated = op.spec.model_validate(layer)
    if op.is_(INDEXED):
        rows = op.rows(validated)
        xs = [rng.permutation(np.arange(3 * numel(shape)) % rows).reshape(3, *shape) for shape in shapes]
    else:
        xs = [rng.normal(size=(3, *shape)) for shape in shapes]
    values = {p: rng.normal(size=shape) for p, shape in params.items()}
    return op, validated, xs, values


def _modes(op, layer, shapes, training: bool) -> dict:
    """The keyword arguments of a reference with a train/eval mode: the mode, and state tensors
    (running statistics made up, so that evaluation is not the identity)."""
    if not op.reference.modes:
        return {}
    rng = np.random.default_rng(5)
    state = {name: rng.uniform(0.5, 1.5, t.shape) if name == "running_var" else rng.normal(size=t.shape)
             for name, t in op.state(layer, shapes).items()}
    return {"training": training, "state": state}


MODES = [pytest.param(True, id="train"), pytest.param(False, id="eval")]



CASES = [(name, *SAMPLES[name]) for name in SAMPLES] + VARIANTS


@pytest.mark.parametrize("training", MODES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_reference_backward_matches_finite_differences(case, training):
    """Each op's numpy reference: its backward against central differences of its forward (float64),
    in training and in evaluation mode (the same for ops without one)."""
    name, layer_map, shapes, params = case
    op, layer, xs, values = _random_case(name, layer_map, shapes, params)
    if not op.reference.modes and not training:
        pytest.skip("no train/eval mode")
    modes = _modes(op, layer, shapes, training)

    def forward():
        fresh = {**modes, "state": dict(modes["state"])} if modes else {}  # a training forward updates state
        return op.reference.forward(layer, xs, values, **fresh)

    y = forward()
    dy = np.random.default_rng(1).normal(size=y.shape)  # loss = sum(dy * y): its gradient wrt y is dy
    dxs, dparams = op.reference.backward(layer, xs, y, dy, values, **modes)
    assert set(dparams) == set(values)
    assert len(dxs) == (0 if op.is_(INDEXED) else len(xs)), "no gradient flows into indices"
    loss = lambda: float(np.sum(dy * forward()))  # noqa: E731
    for x, exact in zip(xs, dxs):
        np.testing.assert_allclose(exact, numeric_grad(loss, x), rtol=1e-6, atol=1e-8)
    constant = op.constant(layer) if op.constant else {}
    for pname, exact in dparams.items():
        numeric = numeric_grad(loss, values[pname])
        if pname in constant:  # entries never trained (a padding row): zero, whatever the difference says
            assert np.all(exact[constant[pname]] == 0) and np.any(numeric[constant[pname]] != 0)
            numeric[constant[pname]] = 0.0
        np.testing.assert_allclose(exact, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_reference_output_shape_follows_the_shape_rule(case):
    name, layer_map, shapes, params = case
    op, layer, xs, values = _random_case(name, layer_map, shapes, params)
    y = op.reference.forward(layer, xs, values, **_modes(op, layer, shapes, True))
    assert y.shape[1:] == tuple(op.infer(layer, shapes))
    assert {p: tuple(s) for p, s in op.params(layer, shapes).items()} == params


def _torch_twin(name, layer, F):
    """PyTorch's function for the op (None where netc's op has no single twin)."""
    table = {
        "linear": lambda x, w, b: F.linear(x, w, b),
        "conv2d": lambda x, w, b: F.conv2d(x, w, b, stride=tuple(layer.stride), padding=tuple(layer.padding)),
        "maxpool2d": lambda x: F.max_pool2d(x, tuple(layer.kernel), tuple(layer.stride), tuple(layer.padding)),
        "avgpool2d": lambda x: F.avg_pool2d(x, tuple(layer.kernel), tuple(layer.stride), tuple(layer.padding),
                                            count_include_pad=False),
        "global_avgpool2d": lambda x: F.adaptive_avg_pool2d(x, 1),
        "local2d": lambda x, w, b=None: _torch_local2d(x, w, b, layer, F),
        "relu": F.relu, "sigmoid": F.sigmoid, "tanh": F.tanh,
        "leaky_relu": lambda x: F.leaky_relu(x, layer.negative_slope),
        "elu": lambda x: F.elu(x, layer.alpha),
        "gelu": lambda x: F.gelu(x, approximate=layer.approximate),
        "gelu_tanh": lambda x: F.gelu(x, approximate=layer.approximate),
        "silu": F.silu,
        "softmax": lambda x: F.softmax(x, dim=1), "log_softmax": lambda x: F.log_softmax(x, dim=1),
        "batchnorm1d": lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True, eps=layer.eps),
        "batchnorm2d": lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True, eps=layer.eps),
        "batchnorm1d_sequence": lambda x: F.batch_norm(x, None, None, training=True, eps=layer.eps),
        "layernorm": lambda x, w, b: F.layer_norm(x, tuple(w.shape), w, b, eps=layer.eps),
        "layernorm_plain": lambda x: F.layer_norm(x, tuple(x.shape[x.ndim - layer.normalized:]), eps=layer.eps),
        "embedding": lambda idx, w: F.embedding(idx, w),
        "embedding_padding": lambda idx, w: F.embedding(idx, w, padding_idx=layer.padding_idx),
        "mul": lambda a, b, c: a * b * c, "mul_pair": lambda a, b: a * b, "sub": lambda a, b: a - b,
        "stack": lambda a, b, c: __import__("torch").stack([a, b, c], dim=2),
        "slice": lambda x: x[:, 1:-1], "slice_channels": lambda x: x[:, :, -2:],
        "select": lambda x: x[:, -1], "select_middle": lambda x: x[:, :, 2],
    }
    return table.get(name)


def _torch_local2d(x, w, b, layer, F):
    """local2d in PyTorch (which has no LocallyConnected2d): unfold the windows, one [F, K] product per position."""
    import torch

    oh, ow, f, k = w.shape
    patches = F.unfold(x, pair(layer.kernel), stride=pair(layer.stride))  # (n, K, OH*OW), K in (c, ki, kj) order
    y = torch.einsum("nkl,lfk->nfl", patches, w.reshape(oh * ow, f, k)).reshape(len(x), f, oh, ow)
    return y if b is None else y + b


@pytest.mark.torch
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_reference_agrees_with_pytorch(case):
    """Where PyTorch is installed: each op's reference forward and backward against PyTorch's."""
    torch = pytest.importorskip("torch")
    name, layer_map, shapes, params = case
    op, layer, xs, values = _random_case(name, layer_map, shapes, params)
    twin = _torch_twin(name, layer, torch.nn.functional)
    if twin is None:
        pytest.skip(f"{name}: a view or a merge, checked by finite differences")
    arrays = xs + [values[p] for p in ("weight", "bias") if p in values]
    tensors = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]  # indices take no gradient
    out = twin(*tensors)
    y = op.reference.forward(layer, xs, values, **_modes(op, layer, shapes, True))
    np.testing.assert_allclose(out.detach().numpy(), y, rtol=1e-10, atol=1e-12)
    dy = np.random.default_rng(2).normal(size=y.shape)
    out.backward(torch.tensor(dy))
    dxs, dparams = op.reference.backward(layer, xs, y, dy, values, **_modes(op, layer, shapes, True))
    expected = list(dxs) + [dparams[p] for p in ("weight", "bias") if p in values]
    for tensor, grad in zip([t for t in tensors if t.requires_grad], expected, strict=True):
        np.testing.assert_allclose(tensor.grad.numpy(), grad, rtol=1e-10, atol=1e-12)
