"""Parameter initialization from the spec's initializers and a seed."""

from __future__ import annotations

import numpy as np

from netc.ops.base import REGISTRY, numel
from netc.spec.models import XavierUniform


def fans(shape: tuple) -> tuple[int, int]:
    """(fan_in, fan_out) as PyTorch computes them: [out, in, *kernel]."""
    if len(shape) < 2:
        return shape[0], shape[0]
    receptive = numel(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def sample(init, shape: tuple, rng: np.random.Generator, fan_rule=None) -> np.ndarray:
    fan_in, fan_out = (fan_rule or fans)(shape)
    kind = init.type
    if kind in ("xavier_uniform", "glorot_uniform", "xavier", "glorot"):
        bound = init.gain * np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-bound, bound, shape)
    if kind in ("xavier_normal", "glorot_normal"):
        return rng.normal(0.0, init.gain * np.sqrt(2.0 / (fan_in + fan_out)), shape)
    if kind in ("he_uniform", "kaiming_uniform", "he", "kaiming"):
        bound = np.sqrt(6.0 / fan_in)
        return rng.uniform(-bound, bound, shape)
    if kind in ("he_normal", "kaiming_normal"):
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    if kind == "uniform":
        return rng.uniform(init.low, init.high, shape)
    if kind == "normal":
        return rng.normal(init.mean, init.std, shape)
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "constant":
        return np.full(shape, init.value)
    raise ValueError(f"unknown initializer {kind}")  # the spec union makes this unreachable


def initial_values(graph, seed: int) -> dict[str, np.ndarray]:
    """{'fc1.weight': array, ...} for every owned tensor; one seeded stream per tensor, so adding a
    layer does not change the others' initial values."""
    values = {}
    default_weight = XavierUniform(type="xavier_uniform")
    for node in graph.owners:
        choose = REGISTRY[node.op].initializer
        for k, (pname, shape) in enumerate(node.param_shapes.items()):
            if choose is not None:  # the op names each tensor's initializer (recurrent layers: PyTorch's rule)
                rng = np.random.default_rng([seed, node.index, 2 + k])
                values[f"{node.name}.{pname}"] = sample(choose(node.layer, pname), shape, rng)
                continue
            rng = np.random.default_rng([seed, node.index, 0 if pname == "weight" else 1])
            if pname == "weight":
                init = node.layer.weight_init or default_weight
            else:
                init = node.layer.bias_init
                if init is None:
                    values[f"{node.name}.{pname}"] = np.zeros(shape)
                    continue
            fan_rule = REGISTRY[node.op].fans if pname == "weight" else None  # an op's own layout (local2d)
            values[f"{node.name}.{pname}"] = sample(init, shape, rng, fan_rule)
        fix = REGISTRY[node.op].initialised  # an op's own rule (an embedding's padding row starts at zero)
        if fix is not None:
            own = {pname: values[f"{node.name}.{pname}"] for pname in node.param_shapes}
            fix(node.layer, own)
    return values
