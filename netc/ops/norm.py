"""batchnorm1d and batchnorm2d (PyTorch's BatchNorm1d/2d): normalise each channel by the batch's
statistics while training, by running statistics in evaluation. Their running statistics are
state tensors (`bn1.running_mean`, `bn1.running_var`, `bn1.num_batches_tracked`): checkpointed
under PyTorch's names, never trained; gamma and beta (`weight`, `bias`) are parameters.

layernorm (PyTorch's LayerNorm): normalise each sample over its trailing dims by its own
statistics, the same in training and evaluation (no state); `weight` and `bias` are shaped like
the normalised dims."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, Strict

from netc.ops.base import TRAIN_MODE, OpDef, OpShapeError, Reference, Saved, StateTensor, numel, register
from netc.spec.base import Bool, ConstantInit, Initializer, Layer, NonNegFloat, PosFloat, PosInt, ZerosInit


class _BatchNorm(Layer):
    eps: PosFloat = Field(1e-5, description="Added to the variance before its square root.")
    momentum: Annotated[float, Strict(), Field(ge=0.0, le=1.0)] = Field(
        0.1, description="Weight of the new batch in the running statistics (PyTorch's momentum).")
    affine: Bool = Field(True, description="Learn a per-channel scale (weight, gamma) and shift (bias, beta).")
    trainable: Bool = Field(True, description="False freezes gamma and beta (the running statistics still update).")
    lr_mult: NonNegFloat = Field(1.0, description="Multiplier on the optimizer's learning rate for gamma and beta.")
    weight_init: Initializer = Field(ConstantInit(type="constant", value=1.0),
                                     description="Initializer of gamma; default ones.")
    bias_init: Initializer = Field(ZerosInit(type="zeros"), description="Initializer of beta; default zeros.")


class BatchNorm1d(_BatchNorm):
    """Batch normalization of features [C] or sequences [C, L], per channel C."""

    op: Literal["batchnorm1d"]


class BatchNorm2d(_BatchNorm):
    """Batch normalization of feature maps [C, H, W], per channel C."""

    op: Literal["batchnorm2d"]


def _infer(layer, shapes):
    (shape,) = shapes
    ranks = (1, 2) if layer.op == "batchnorm1d" else (3,)
    if len(shape) not in ranks:
        wanted = "[C] or [C, L]" if layer.op == "batchnorm1d" else "[C, H, W]"
        raise OpShapeError(f"normalises {wanted}, got {list(shape)}",
                           hint="batchnorm1d for features and sequences, batchnorm2d for feature maps")
    return shape


def _check_batch(layer, shapes, batch: int):
    """Batch statistics need more than one value per channel, as PyTorch refuses otherwise."""
    if batch * numel(shapes[0][1:]) <= 1:
        return OpShapeError(
            f"a training batch of {batch} gives one value per channel: batch statistics need more "
            "(PyTorch refuses it too)", hint="train with batches of 2 or more samples, or use no batch norm here")
    return None


def _params(layer, shapes):
    channels = shapes[0][0]
    return {"weight": (channels,), "bias": (channels,)} if layer.affine else {}


def _state(layer, shapes):
    channels = shapes[0][0]
    return {"running_mean": StateTensor((channels,), 0.0), "running_var": StateTensor((channels,), 1.0),
            "num_batches_tracked": StateTensor((), 0.0, "int64")}


def _saved(layer, shapes, facts):
    channels = shapes[0][0]  # one mean and 1/std per channel, whatever the batch
    return {"mean": Saved(channels), "invstd": Saved(channels)}


def _view(shape) -> tuple:
    """(C, S): the channel axis and everything after it."""
    return shape[0], numel(shape[1:])


def _forward(e, step):
    node = step.node
    dims = _view(e.graph.shape_of(step.inputs[0]))
    affine = "weight" in node.param_shapes
    e.call("batchnorm_forward", x=e.val(step.inputs[0], dims), y=e.val(step.output, dims),
           gamma=e.param(node, "weight"), beta=e.param(node, "bias"), affine=e.flag(affine),
           mean=e.saved(node, "mean"), invstd=e.saved(node, "invstd"),
           running_mean=e.state_tensor(node, "running_mean"), running_var=e.state_tensor(node, "running_var"),
           counter=e.state_tensor(node, "num_batches_tracked"), momentum=e.number(node.layer.momentum),
           eps=e.number(node.layer.eps), training="training")


def _backward(e, step):
    node, x = step.node, step.inputs[0]
    dims = _view(e.graph.shape_of(x))
    affine = "weight" in node.param_shapes
    need_dx, need_dw = e.needs_grad[x], affine and node.trainable
    x_view = e.val(x, dims)
    e.call("batchnorm_backward", x=x_view, dy=e.grad(step.output, dims), dx=e.grad(x, dims) if need_dx else x_view,
           gamma=e.param(node, "weight"), dgamma=e.pgrad(node, "weight"), dbeta=e.pgrad(node, "bias"),
           affine=e.flag(affine), mean=e.saved(node, "mean"), invstd=e.saved(node, "invstd"), training="training",
           need_dx=e.flag(need_dx), acc_dx=e.acc(x) if need_dx else e.flag(False), need_dw=e.flag(need_dw),
           acc_dw=e.pacc(node) if need_dw else e.flag(False))


def _onnx(ctx, node):
    """Inference mode: the running statistics, as `torch.onnx.export` of an eval-mode module writes it."""
    channels = ctx.shape_of(node.inputs[0])[0]
    if "weight" in node.param_shapes:
        scale, shift = ctx.param(node, "weight"), ctx.param(node, "bias")
    else:
        scale = ctx.initializer(f"{node.name}.ones", np.ones(channels, np.float32))
        shift = ctx.initializer(f"{node.name}.zeros", np.zeros(channels, np.float32))
    inputs = [node.inputs[0], scale, shift, ctx.state(node, "running_mean"), ctx.state(node, "running_var")]
    ctx.add("BatchNormalization", inputs, node, epsilon=float(node.layer.eps))


# ----------------------------------------------------------------------------- reference (numpy, float64)


def _axes(x) -> tuple:
    """Every axis but the channel axis (1)."""
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v, x):
    """A (C,) vector shaped to broadcast over x (n, C, ...)."""
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def _ref_forward(layer, xs, params, training=True, state=None):
    """Training: batch statistics, and `state` (running_mean, running_var, num_batches_tracked) updated
    in place; evaluation: the running statistics."""
    x = xs[0]
    if training:
        mean, var = x.mean(axis=_axes(x)), x.var(axis=_axes(x))
        if state is not None:
            count = x.size // x.shape[1]
            state["running_mean"] = (1 - layer.momentum) * state["running_mean"] + layer.momentum * mean
            unbiased = var * count / max(count - 1, 1)
            state["running_var"] = (1 - layer.momentum) * state["running_var"] + layer.momentum * unbiased
            state["num_batches_tracked"] = state["num_batches_tracked"] + 1
    else:
        mean, var = state["running_mean"], state["running_var"]
    y = (x - _per_channel(mean, x)) / np.sqrt(_per_channel(var, x) + layer.eps)
    if "weight" in params:
        y = y * _per_channel(params["weight"], x) + _per_channel(params["bias"], x)
    return y


def _ref_backward(layer, xs, y, dy, params, training=True, state=None):
    x = xs[0]
    axes = _axes(x)
    mean = x.mean(axis=axes) if training else state["running_mean"]
    var = x.var(axis=axes) if training else state["running_var"]
    invstd = _per_channel(1.0 / np.sqrt(var + layer.eps), x)
    xhat = (x - _per_channel(mean, x)) * invstd
    gamma = _per_channel(params["weight"], x) if "weight" in params else 1.0
    grads = {"weight": (dy * xhat).sum(axis=axes), "bias": dy.sum(axis=axes)} if "weight" in params else {}
    dxhat = dy * gamma
    if not training:
        return [dxhat * invstd], grads
    count = x.size // x.shape[1]
    dx = invstd / count * (count * dxhat - dxhat.sum(axis=axes, keepdims=True)
                           - xhat * (dxhat * xhat).sum(axis=axes, keepdims=True))
    return [dx], grads


_KERNELS = {"netc.kernels.norm": ("batchnorm_forward", "batchnorm_backward")}


def _batchnorm(name, spec) -> OpDef:
    return register(OpDef(
        name, spec, _infer, Reference(_ref_forward, _ref_backward, modes=True), _onnx,
        ("batchnorm_forward", "batchnorm_backward"), params=_params, state=_state, saved=_saved,
        categories=frozenset({TRAIN_MODE}), kernels=_KERNELS, forward=_forward, backward=_backward,
        check_batch=_check_batch))


BATCHNORM1D = _batchnorm("batchnorm1d", BatchNorm1d)
BATCHNORM2D = _batchnorm("batchnorm2d", BatchNorm2d)


# ============================================================================= layernorm


class LayerNorm(Layer):
    """Layer normalization (PyTorch's LayerNorm): each sample normalised over its last `normalized`
    dims by its own mean and variance, the same in training and evaluation."""

    op: Literal["layernorm"]
    normalized: PosInt = Field(1, description="How many trailing dims to normalise over: 1 (the last) by default, "
                                              "3 for a whole [C, H, W] map. PyTorch's normalized_shape is those dims.")
    eps: PosFloat = Field(1e-5, description="Added to the variance before its square root.")
    affine: Bool = Field(True, description="Learn a scale (weight) and shift (bias) per normalised element, "
                                           "shaped like the normalised dims (PyTorch's elementwise_affine).")
    trainable: Bool = Field(True, description="False freezes the weight and bias.")
    lr_mult: NonNegFloat = Field(1.0, description="Multiplier on the optimizer's learning rate for weight and bias.")
    weight_init: Initializer = Field(ConstantInit(type="constant", value=1.0),
                                     description="Initializer of the weight; default ones.")
    bias_init: Initializer = Field(ZerosInit(type="zeros"), description="Initializer of the bias; default zeros.")


def _ln_infer(layer, shapes):
    (shape,) = shapes
    if layer.normalized > len(shape):
        raise OpShapeError(f"normalises the last {layer.normalized} dims of a rank-{len(shape)} input {list(shape)}",
                           field="normalized", hint=f"normalized: {len(shape)} at most (the whole sample)")
    return shape


def _ln_split(layer, shape) -> tuple:
    """(R, D): the rows (leading, not normalised dims) of one sample, and the elements each normalises."""
    cut = len(shape) - layer.normalized
    return numel(shape[:cut]), numel(shape[cut:])


def _ln_normalised(layer, shape) -> tuple:
    """The normalised dims of one sample: PyTorch's normalized_shape, and the shape of weight and bias."""
    return tuple(shape[len(shape) - layer.normalized:])


def _ln_params(layer, shapes):
    normalised = _ln_normalised(layer, shapes[0])
    return {"weight": normalised, "bias": normalised} if layer.affine else {}


def _ln_saved(layer, shapes, facts):
    rows, _ = _ln_split(layer, shapes[0])  # one mean and 1/std per row of every sample
    return {"mean": Saved(facts.batch * rows), "invstd": Saved(facts.batch * rows)}


def _ln_forward(e, step):
    node = step.node
    dims = _ln_split(node.layer, e.graph.shape_of(step.inputs[0]))
    e.call("layernorm_forward", x=e.val(step.inputs[0], dims), y=e.val(step.output, dims),
           gamma=e.param(node, "weight"), beta=e.param(node, "bias"), affine=e.flag("weight" in node.param_shapes),
           mean=e.saved(node, "mean"), invstd=e.saved(node, "invstd"), eps=e.number(node.layer.eps))


def _ln_backward(e, step):
    node, x = step.node, step.inputs[0]
    dims = _ln_split(node.layer, e.graph.shape_of(x))
    affine = "weight" in node.param_shapes
    need_dx, need_dw = e.needs_grad[x], affine and node.trainable
    x_view = e.val(x, dims)
    e.call("layernorm_backward", x=x_view, dy=e.grad(step.output, dims), dx=e.grad(x, dims) if need_dx else x_view,
           gamma=e.param(node, "weight"), dgamma=e.pgrad(node, "weight"), dbeta=e.pgrad(node, "bias"),
           affine=e.flag(affine), mean=e.saved(node, "mean"), invstd=e.saved(node, "invstd"),
           need_dx=e.flag(need_dx), acc_dx=e.acc(x) if need_dx else e.flag(False), need_dw=e.flag(need_dw),
           acc_dw=e.pacc(node) if need_dw else e.flag(False))


def _ln_onnx(ctx, node):
    """LayerNormalization (opset 17): `axis` is the first normalised axis of [N, *shape], counted from the end."""
    ctx.need_opset(17, node, "ONNX has LayerNormalization from opset 17")
    if "weight" in node.param_shapes:
        inputs = [node.inputs[0], ctx.param(node, "weight"), ctx.param(node, "bias")]
    else:  # Scale is not optional in ONNX; B is
        ones = np.ones(_ln_normalised(node.layer, ctx.shape_of(node.inputs[0])), np.float32)
        inputs = [node.inputs[0], ctx.initializer(f"{node.name}.ones", ones)]
    ctx.add("LayerNormalization", inputs, node, axis=-int(node.layer.normalized), epsilon=float(node.layer.eps))


def _ln_axes(layer, x) -> tuple:
    """The normalised axes of x (n, *shape): its last `normalized`."""
    return tuple(range(x.ndim - layer.normalized, x.ndim))


def _ln_ref_forward(layer, xs, params):
    x = xs[0]
    axes = _ln_axes(layer, x)
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + layer.eps)
    if "weight" in params:
        y = y * params["weight"] + params["bias"]  # (*normalised) broadcasts over the leading axes
    return y


def _ln_ref_backward(layer, xs, y, dy, params):
    x = xs[0]
    axes = _ln_axes(layer, x)
    leading = tuple(range(x.ndim - layer.normalized))  # the batch and the rows: what weight and bias sum over
    invstd = 1.0 / np.sqrt(x.var(axis=axes, keepdims=True) + layer.eps)
    xhat = (x - x.mean(axis=axes, keepdims=True)) * invstd
    grads = {"weight": (dy * xhat).sum(axis=leading), "bias": dy.sum(axis=leading)} if "weight" in params else {}
    dxhat = dy * params["weight"] if "weight" in params else dy
    dx = invstd * (dxhat - dxhat.mean(axis=axes, keepdims=True) - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True))
    return [dx], grads


LAYERNORM = register(OpDef(
    "layernorm", LayerNorm, _ln_infer, Reference(_ln_ref_forward, _ln_ref_backward), _ln_onnx,
    ("layernorm_forward", "layernorm_backward"), params=_ln_params, saved=_ln_saved,
    kernels={"netc.kernels.norm": ("layernorm_forward", "layernorm_backward")}, forward=_ln_forward,
    backward=_ln_backward))
