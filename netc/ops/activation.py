"""Element-wise activations. Each runs in the shared activation kernels (netc.kernels.activation)
by its `Activation.code`, with its one parameter as `alpha`; those whose derivative is a function
of their output fuse into a linear/conv epilogue (compiler pass fuse_activations)."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from netc.ops.base import (ACTIVATION, ELEMENTWISE, MONOTONE, REGISTRY, Activation, OpDef, Reference, register,
                           same_as_input)
from netc.spec.base import Layer, NonNegFloat, PosFloat

_KERNELS = {"netc.kernels.activation": ("act_forward", "act_backward")}


class Relu(Layer):
    """max(x, 0)."""

    op: Literal["relu"]


class Sigmoid(Layer):
    """1 / (1 + exp(-x))."""

    op: Literal["sigmoid"]


class Tanh(Layer):
    """tanh(x)."""

    op: Literal["tanh"]


class LeakyRelu(Layer):
    """x for x > 0, negative_slope * x otherwise (PyTorch's LeakyReLU)."""

    op: Literal["leaky_relu"]
    negative_slope: NonNegFloat = Field(0.01, description="Slope for negative inputs (>= 0).")


class Elu(Layer):
    """x for x > 0, alpha * (exp(x) - 1) otherwise (PyTorch's ELU)."""

    op: Literal["elu"]
    alpha: PosFloat = Field(1.0, description="Scale of the negative part.")


class Gelu(Layer):
    """x * Phi(x), Phi the standard normal CDF (PyTorch's GELU); `approximate: tanh` uses
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    op: Literal["gelu"]
    approximate: Literal["none", "tanh"] = Field("none", description="none (exact, with erf) or tanh.")


class Silu(Layer):
    """x * sigmoid(x) (PyTorch's SiLU, Keras's swish)."""

    op: Literal["silu"]


# ----------------------------------------------------------------------------- emitters (shared)


def _forward(e, step):
    """A standalone activation step (one not fused into its producer)."""
    e.call("act_forward", x=e.val(step.inputs[0]), y=e.val(step.output), act=e.act_code(step), alpha=e.act_alpha(step))


def _backward(e, step):
    x = step.inputs[0]
    if not e.needs_grad[x]:
        return
    v = e.val(step.output) if REGISTRY[step.node.op].activation.from_output else e.val(x)
    e.call("act_backward", dy=e.grad(step.output), v=v, dx=e.grad(x), act=e.act_code(step),
           alpha=e.act_alpha(step), acc=e.acc(x))


def _onnx_simple(name: str, **attributes):
    def export(ctx, node):
        ctx.add(name, node.inputs, node, **{k: f(node.layer) for k, f in attributes.items()})
    return export


def _onnx_gelu(ctx, node):
    ctx.need_opset(20, node, "ONNX has Gelu from opset 20")
    ctx.add("Gelu", node.inputs, node, approximate=node.layer.approximate)


def _onnx_silu(ctx, node):
    # ONNX has Swish only from opset 24: x * Sigmoid(x), which every runtime runs
    gate = f"{node.name}.sigmoid"
    ctx.nodes.append(ctx.helper.make_node("Sigmoid", node.inputs, [gate], name=gate))
    ctx.add("Mul", [node.inputs[0], gate], node)


# ----------------------------------------------------------------------------- references (numpy, float64)


def _elementwise(value, derivative_from):
    """A Reference from y = value(layer, x) and dy/dx = derivative_from(layer, x, y)."""
    return Reference(lambda layer, xs, params: value(layer, xs[0]),
                     lambda layer, xs, y, dy, params: ([dy * derivative_from(layer, xs[0], y)], {}))


def _sigmoid(layer, x):
    return 1.0 / (1.0 + np.exp(-x))


def _gelu(layer, x):
    if layer.approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _gelu_grad(layer, x, y):
    if layer.approximate == "tanh":
        c = math.sqrt(2.0 / math.pi)
        t = np.tanh(c * (x + 0.044715 * x ** 3))
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * x * x)
    return 0.5 * (1.0 + _erf(x / math.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


_erf = np.vectorize(math.erf, otypes=[np.float64])

_RELU = _elementwise(lambda layer, x: np.maximum(x, 0.0), lambda layer, x, y: (x > 0).astype(np.float64))
_SIGMOID = _elementwise(_sigmoid, lambda layer, x, y: y * (1.0 - y))
_TANH = _elementwise(lambda layer, x: np.tanh(x), lambda layer, x, y: 1.0 - y * y)
_LEAKY = _elementwise(lambda layer, x: np.where(x > 0, x, x * layer.negative_slope),
                      lambda layer, x, y: np.where(x > 0, 1.0, layer.negative_slope))
_ELU = _elementwise(lambda layer, x: np.where(x > 0, x, layer.alpha * np.expm1(np.minimum(x, 0.0))),
                    lambda layer, x, y: np.where(x > 0, 1.0, layer.alpha * np.exp(np.minimum(x, 0.0))))
_GELU = _elementwise(_gelu, _gelu_grad)
_SILU = _elementwise(lambda layer, x: x * _sigmoid(layer, x),
                     lambda layer, x, y: _sigmoid(layer, x) * (1.0 + x * (1.0 - _sigmoid(layer, x))))


# ----------------------------------------------------------------------------- the ops


def _activation(name, spec, code, reference, onnx, *, alpha=lambda layer: 0.0, monotone=True,
                from_output=True, rules=None) -> OpDef:
    categories = {ACTIVATION, ELEMENTWISE} | ({MONOTONE} if monotone else set())
    code = code if callable(code) else (lambda layer, fixed=code: fixed)
    return register(OpDef(
        name, spec, same_as_input, reference, onnx, (f"act_forward({name})", f"act_backward({name})"),
        categories=frozenset(categories), activation=Activation(code, alpha, from_output, dict(rules or {})),
        kernels=_KERNELS, forward=_forward, backward=_backward))


# the codes are the branches of netc.kernels.activation (NONE=0, RELU=1, ...); relu's backward has two more
# in a projection plan (DECONVNET_RELU=9, GUIDED_RELU=10: netc.compiler.projection)
RELU = _activation("relu", Relu, 1, _RELU, _onnx_simple("Relu"), rules={"deconvnet": 9, "guided": 10})
SIGMOID = _activation("sigmoid", Sigmoid, 2, _SIGMOID, _onnx_simple("Sigmoid"))
TANH = _activation("tanh", Tanh, 3, _TANH, _onnx_simple("Tanh"))
LEAKY_RELU = _activation("leaky_relu", LeakyRelu, 4, _LEAKY,
                         _onnx_simple("LeakyRelu", alpha=lambda layer: float(layer.negative_slope)),
                         alpha=lambda layer: float(layer.negative_slope))
ELU = _activation("elu", Elu, 5, _ELU, _onnx_simple("Elu", alpha=lambda layer: float(layer.alpha)),
                  alpha=lambda layer: float(layer.alpha))
# gelu's derivative needs its input, so it never fuses into an epilogue; exact (6) and tanh (7) forms
GELU = _activation("gelu", Gelu, lambda layer: 7 if layer.approximate == "tanh" else 6, _GELU, _onnx_gelu,
                   monotone=False, from_output=False)
# silu's derivative needs its input too, and it dips below zero before rising: its own step, not monotone
SILU = _activation("silu", Silu, 8, _SILU, _onnx_silu, monotone=False, from_output=False)
