"""linear: y = x W^T + b, W shaped [out, in] (as PyTorch); an activation may fuse into its epilogue.

Over a sequence [T, F] it applies the same weights at every step ([T, out]: PyTorch's nn.Linear and
Keras's Dense on the last axis), so a recurrent layer's every state can be scored (a loss at every
step). Inputs of higher rank are refused: a conv's [C, H, W] must be flattened on purpose, not
silently read as positions."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from netc.kernels.gemm_sizes import BLAS_MIN_PRODUCT, SMALL_GEMM
from netc.ops.base import BLAS, EPILOGUE, OpDef, OpShapeError, Reference, numel, register
from netc.spec.base import ParamLayer, PosInt


class Linear(ParamLayer):
    """Fully connected: y = x W^T + b, W shaped [out, in] (as PyTorch)."""

    op: Literal["linear"]
    out: PosInt = Field(description="Number of output features.")


def _infer(layer, shapes):
    (shape,) = shapes
    if len(shape) not in (1, 2):
        raise OpShapeError(
            f"needs a flat input [features] or a sequence [T, features], got {list(shape)}",
            hint="add `{op: flatten}` before this layer",
        )
    return (*shape[:-1], layer.out)


def _params(layer, shapes):
    params = {"weight": (layer.out, shapes[0][-1])}
    if layer.bias:
        params["bias"] = (layer.out,)
    return params


def _macs(layer, shapes, out):
    return numel(shapes[0]) * layer.out


def _steps(e, step) -> int:
    """Rows per sample: T for a sequence [T, F], else 1."""
    shape = e.graph.shape_of(step.inputs[0])
    return shape[0] if len(shape) == 2 else 1


def _transposed(layer, shapes, facts):
    """W stored [in, out] where x W^T is a product for OpenBLAS's small-matrix kernels and no gradient
    flows into x (a first layer): there x @ W runs at about twice the rate of x @ W^T (SkylakeX:
    [32, 64] by [64, 128] 4.3 against 9.1 us), and the weight gradient, x^T dy instead of dy^T x,
    costs the same; with a dx, dy @ W would pay it back. OpenBLAS's AVX2 (Haswell) kernels pack
    every product, and there the transposed layout was slower (an MLP step 47 -> 55 us): kept as
    declared, as are the weights of tiny layers (the kernels' loops)."""
    rows = facts.batch * (shapes[0][0] if len(shapes[0]) == 2 else 1)
    product = rows * shapes[0][-1] * layer.out
    small = facts.blas_small_kernels and BLAS_MIN_PRODUCT <= product <= SMALL_GEMM
    return ("weight",) if small and not facts.input_grads else ()


# ----------------------------------------------------------------------------- emitters


def _rows(e, step, tensor, width, gradient=False):
    """[n, width] rows, or a sequence's [n * T, width]: one GEMM over every step of every sample."""
    steps = _steps(e, step)
    if steps == 1:
        return e.grad(tensor, (width,)) if gradient else e.val(tensor, (width,))
    return e.step_rows(tensor, steps, width, gradient)


def _blas(e, step, fan_in, out):
    # a GEMM of n * T rows costs what one of n rows with T times the fan-in does
    return e.flag(e.use_blas(fan_in * _steps(e, step), out))


# multiply-adds of a product from which it runs in column blocks on the cores: seed-cnn's fc1 (13 M) in 2
# blocks 0.29 -> 0.14 ms (forward), 0.45 -> 0.23 ms (backward); an MLP 784-256-128-10's fc1 at a batch of 128
# (26 M) 1.37x faster a step. Smaller products stay whole: each block adds a parallel region, whose start
# waits for a thread to wake, and beside busy processes for a core (LeNet-5's fc1, 3 M: 48 -> 31 us forward
# alone; an MLP 64-128-10's fc1 at 256, 2.1 M: 1.09x faster alone, 2x slower on two threads beside busy
# processes; benchmarks/RESULTS.md, eighteenth and twenty-second sessions)
PARTS_WORK = 8_000_000
assert PARTS_WORK > SMALL_GEMM  # so no weight in blocks is stored transposed (_transposed: products <= SMALL_GEMM)


def _blocks(layer, shapes, facts):
    """The column blocks the layer's GEMMs run in (netc.kernels.dense `*_parts`), one per core where the
    plan's BLAS runs on one thread, or 1. Only under OpenBLAS's SkylakeX kernels, and only where every
    block is a packed product (above SMALL_GEMM): there each output is the same dot product as in the
    whole GEMM, the same bits (under the Haswell kernels, and the small-matrix ones, blocks' edges are
    summed otherwise)."""
    parts, out, fan_in = facts.blas_parts, layer.out, shapes[0][-1]
    rows = facts.batch * (shapes[0][0] if len(shapes[0]) == 2 else 1)
    if parts == 1 or not facts.blas_small_kernels or rows * fan_in * out < PARTS_WORK:
        return 1

    def last_block(columns: int) -> int:  # the narrowest
        return columns - (parts - 1) * -(-columns // parts)

    # the forward splits the outputs, the backward the inputs
    smallest = min(rows * last_block(out) * fan_in, rows * last_block(fan_in) * out)
    return parts if smallest > SMALL_GEMM else 1


def _parts(e, step) -> int:
    """The planner's choice for this step (BufferPlan.blocks)."""
    return e.plan.blocks.get(step.node.name, 1)


def _forward(e, step):
    node = step.node
    out, fan_in = node.param_shapes["weight"]
    parts = _parts(e, step)
    if parts > 1:
        e.call("linear_forward_parts", x=_rows(e, step, step.inputs[0], fan_in),
               w=e.param(node, "weight", (out, fan_in)), b=e.param(node, "bias"),
               has_bias=e.flag("bias" in node.param_shapes), y=_rows(e, step, step.output, out), act=e.act_code(step),
               alpha=e.act_alpha(step), parts=e.size(parts))
        return
    e.call("linear_forward", x=_rows(e, step, step.inputs[0], fan_in), w=e.param(node, "weight", (out, fan_in)),
           b=e.param(node, "bias"), has_bias=e.flag("bias" in node.param_shapes), y=_rows(e, step, step.output, out),
           act=e.act_code(step), alpha=e.act_alpha(step), blas=_blas(e, step, fan_in, out),
           transposed=e.flag(e.stored_transposed(node, "weight")))


def _backward(e, step):
    node, x = step.node, step.inputs[0]
    out, fan_in = node.param_shapes["weight"]
    need_dx, need_dw = e.needs_grad[x], node.trainable
    x_view, w_view = _rows(e, step, x, fan_in), e.param(node, "weight", (out, fan_in))
    args = dict(x=x_view, w=w_view, y=_rows(e, step, step.output, out),
                dy=_rows(e, step, step.output, out, gradient=True), act=e.act_code(step), alpha=e.act_alpha(step),
                dx=_rows(e, step, x, fan_in, gradient=True) if need_dx else x_view, need_dx=e.flag(need_dx),
                acc_dx=e.acc(x) if need_dx else e.flag(False),
                dw=e.pgrad(node, "weight", (out, fan_in)) if need_dw else w_view, db=e.pgrad(node, "bias"),
                need_dw=e.flag(need_dw), acc_dw=e.pacc(node) if need_dw else e.flag(False),
                has_bias=e.flag("bias" in node.param_shapes))
    parts = _parts(e, step)
    if parts > 1:
        e.call("linear_backward_parts", **args, parts=e.size(parts))
    else:
        e.call("linear_backward", **args, blas=_blas(e, step, fan_in, out),
               transposed=e.flag(e.stored_transposed(node, "weight")), small_kernels=e.flag(e.plan.blas_small_kernels))


def _notes(e, step):
    out, fan_in = step.node.param_shapes["weight"]
    parts = _parts(e, step)
    notes = [f"BLAS in {parts} column blocks, one per core" if parts > 1
             else "BLAS" if e.use_blas(fan_in * _steps(e, step), out) else "loops"]
    return notes + (["weight stored transposed"] if e.stored_transposed(step.node, "weight") else [])


def _onnx(ctx, node):
    weight = ctx.param(node, "weight")
    bias = [ctx.param(node, "bias")] if "bias" in node.param_shapes else []
    if len(ctx.shape_of(node.inputs[0])) == 1:
        ctx.add("Gemm", [node.inputs[0], weight, *bias], node, transB=1)
        return
    # a sequence [N, T, F]: Gemm takes only matrices; MatMul broadcasts over the steps
    w_t = ctx.initializer(f"{node.param_owner}.weight_T", np.asarray(ctx.weights[f"{node.param_owner}.weight"],
                                                                     np.float32).T)
    if not bias:
        ctx.add("MatMul", [node.inputs[0], w_t], node)
        return
    product = f"{node.name}.matmul"
    ctx.nodes.append(ctx.helper.make_node("MatMul", [node.inputs[0], w_t], [product], name=product))
    ctx.add("Add", [product, *bias], node)


# ----------------------------------------------------------------------------- reference


def _ref_forward(layer, xs, params):
    # x (n, I) or (n, T, I)  w (O, I)  b (O,) or absent  ->  y (n, O) or (n, T, O): the same weights at every step
    y = xs[0] @ params["weight"].T
    return y + params["bias"] if "bias" in params else y


def _ref_backward(layer, xs, y, dy, params):
    # dy (n, O) or (n, T, O) -> dx like x, dw (O, I), db (O,): summed over the samples and their steps
    x = xs[0].reshape(-1, xs[0].shape[-1])
    rows = dy.reshape(-1, dy.shape[-1])
    grads = {"weight": rows.T @ x}
    if "bias" in params:
        grads["bias"] = rows.sum(axis=0)
    return [dy @ params["weight"]], grads


LINEAR = register(OpDef(
    "linear", Linear, _infer, Reference(_ref_forward, _ref_backward), _onnx,
    ("linear_forward", "linear_backward"), params=_params, macs=_macs, categories=frozenset({EPILOGUE, BLAS}),
    kernels={"netc.kernels.dense": ("linear_forward", "linear_backward", "linear_forward_parts",
                                    "linear_backward_parts")}, forward=_forward, backward=_backward,
    notes=_notes, transposed=_transposed, blocks=_blocks))
