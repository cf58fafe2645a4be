"""embedding: a lookup table from int64 indices to learned vectors (PyTorch's nn.Embedding, Keras's
Embedding): input [*S] of indices in [0, num) -> output [*S, dim]. `padding_idx` names a row that
starts at zero and gets no gradient (a padding token), as in PyTorch."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from netc.ops.base import INDEXED, OpDef, OpShapeError, Reference, numel, register
from netc.spec.base import Bool, Initializer, Layer, Name, NonNegFloat, NonNegInt, NormalInit, PosInt


class Embedding(Layer):
    """A table of `num` learned vectors of `dim` values, looked up by the int64 indices of an index
    input (`{shape: [T], dtype: int64, indices: N}`, N <= num): [*S] -> [*S, dim]. Weight [num, dim]."""

    op: Literal["embedding"]
    num: PosInt = Field(description="Rows of the table: indices lie in [0, num) (PyTorch's num_embeddings).")
    dim: PosInt = Field(description="Values per vector (PyTorch's embedding_dim).")
    padding_idx: NonNegInt | None = Field(
        None, description="A row that starts at zero and is never trained (a padding token), as PyTorch's.")
    share: Name | None = Field(None, description="Use the table of this earlier embedding layer (same num and dim).")
    trainable: Bool = Field(True, description="False freezes the table (pretrained vectors).")
    lr_mult: NonNegFloat = Field(1.0, description="Multiplier on the optimizer's learning rate for the table.")
    weight_init: Initializer = Field(NormalInit(type="normal", mean=0.0, std=1.0),
                                     description="Initializer of the table; default N(0, 1), as PyTorch.")


def _infer(layer, shapes):
    if layer.padding_idx is not None and layer.padding_idx >= layer.num:
        raise OpShapeError(f"padding_idx {layer.padding_idx} is not a row of a table of {layer.num}",
                           field="padding_idx", hint=f"a row index in [0, {layer.num})")
    return (*shapes[0], layer.dim)


def _params(layer, shapes):
    return {"weight": (layer.num, layer.dim)}


def _zero_padding_row(layer, values: dict) -> None:
    if layer.padding_idx is not None:
        values["weight"][layer.padding_idx] = 0.0


# ----------------------------------------------------------------------------- emitters


def _forward(e, step):
    node = step.node
    steps = numel(e.graph.shape_of(step.inputs[0]))
    e.call("embedding_forward", idx=e.indices(step.inputs[0], (steps,)),
           w=e.param(node, "weight", (node.layer.num, node.layer.dim)),
           y=e.val(step.output, (steps, node.layer.dim)))


def _backward(e, step):
    node = step.node
    if not node.trainable:
        return  # no gradient flows into indices; a frozen table needs none either
    steps = numel(e.graph.shape_of(step.inputs[0]))
    padding = -1 if node.layer.padding_idx is None else node.layer.padding_idx
    e.call("embedding_backward", idx=e.indices(step.inputs[0], (steps,)),
           dy=e.grad(step.output, (steps, node.layer.dim)),
           dw=e.pgrad(node, "weight", (node.layer.num, node.layer.dim)), acc=e.pacc(node), padding=e.size(padding))


def _onnx(ctx, node):
    ctx.add("Gather", [ctx.param(node, "weight"), node.inputs[0]], node, axis=0)


# ----------------------------------------------------------------------------- reference (numpy, float64)


def _ref_forward(layer, xs, params):
    # idx (n, *S) integers -> y (n, *S, dim)
    return params["weight"][xs[0]]


def _ref_backward(layer, xs, y, dy, params):
    # no gradient for the indices; dw[r] = sum of dy over the positions that looked up r
    dw = np.zeros_like(params["weight"])
    np.add.at(dw, xs[0].reshape(-1), dy.reshape(-1, dy.shape[-1]))
    if layer.padding_idx is not None:
        dw[layer.padding_idx] = 0.0
    return [], {"weight": dw}


EMBEDDING = register(OpDef(
    "embedding", Embedding, _infer, Reference(_ref_forward, _ref_backward), _onnx,
    ("embedding_forward (lookup)", "embedding_backward (scatter-add)"), params=_params,
    categories=frozenset({INDEXED}), kernels={"netc.kernels.embedding": ("embedding_forward", "embedding_backward")},
    forward=_forward, backward=_backward, rows=lambda layer: layer.num, initialised=_zero_padding_row,
    constant=lambda layer: {} if layer.padding_idx is None else {"weight": layer.padding_idx}))
