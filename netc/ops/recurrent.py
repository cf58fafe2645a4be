"""rnn, lstm, gru: recurrent layers over a sequence [T, F] (PyTorch's nn.RNN with tanh, nn.LSTM,
nn.GRU with batch_first=True: one layer, one direction, zero initial state).

The plan calls one kernel per layer and direction (netc/kernels/recurrent.py), which loops over
the time steps: nothing is unrolled, so T = 1000 compiles as fast as T = 1. The backward is
backpropagation through time over what the forward kept (each step's hidden state, gates and,
for an LSTM, cell state).

Parameters are named and laid out as PyTorch's (`lstm1.weight_ih_l0` [G*H, F], `weight_hh_l0`
[G*H, H], `bias_ih_l0`, `bias_hh_l0` [G*H]; gates stacked in PyTorch's order: LSTM i, f, g, o;
GRU r, z, n), so a checkpoint loads into nn.LSTM(F, H, batch_first=True) with strict=True. Each
starts as PyTorch's: U(-1/sqrt(H), 1/sqrt(H)), unless `weight_init` / `bias_init` say otherwise.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from netc.ops.base import STEPPED, OpDef, OpShapeError, Reference, Saved, register
from netc.spec.base import Bool, Initializer, Layer, Name, NonNegFloat, PosInt, UniformInit

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
CELL = {"rnn": 0, "lstm": 1, "gru": 2}  # the kernels' codes (netc.kernels.recurrent RNN, LSTM, GRU)


class _Recurrent(Layer):
    hidden: PosInt = Field(description="Hidden units H: the size of the state (PyTorch's hidden_size).")
    sequences: Bool = Field(False, description="True: the state after every step, [T, hidden] (many-to-many); "
                                               "false: the last step's state, [hidden] (many-to-one).")
    bias: Bool = Field(True, description="Whether the layer has the biases bias_ih_l0 and bias_hh_l0.")
    bptt: PosInt | None = Field(
        None, description="Truncated backpropagation through time: gradients flow back through at most this many "
                          "steps, in windows of bptt steps from the start (as a sequence trained in chunks with the "
                          "state detached between them); default: the whole sequence.")
    share: Name | None = Field(
        None, description="Use the parameters of this earlier layer (same op and shapes) instead of new ones.")
    trainable: Bool = Field(True, description="False freezes the parameters (transfer learning).")
    lr_mult: NonNegFloat = Field(1.0, description="Multiplier on the optimizer's learning rate for this layer.")
    weight_init: Initializer | None = Field(
        None, description="Initializer of weight_ih_l0 and weight_hh_l0; default U(-1/sqrt(hidden), 1/sqrt(hidden)) "
                          "(PyTorch's).")
    bias_init: Initializer | None = Field(
        None, description="Initializer of bias_ih_l0 and bias_hh_l0; default U(-1/sqrt(hidden), 1/sqrt(hidden)) "
                          "(PyTorch's).")


class Rnn(_Recurrent):
    """Elman RNN (PyTorch's nn.RNN, tanh): h_t = tanh(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh) over a
    sequence [T, F], from h_(-1) = 0."""

    op: Literal["rnn"]


class Lstm(_Recurrent):
    """LSTM (PyTorch's nn.LSTM) over a sequence [T, F]: gates i, f, g, o; c_t = f c_(t-1) + i g,
    h_t = o tanh(c_t), from zero state."""

    op: Literal["lstm"]


class Gru(_Recurrent):
    """GRU (PyTorch's nn.GRU) over a sequence [T, F]: gates r, z, n; n = tanh(W_in x + b_in +
    r (W_hn h + b_hn)), h_t = (1 - z) n + z h_(t-1), from zero state."""

    op: Literal["gru"]


def _infer(layer, shapes):
    (shape,) = shapes
    if len(shape) != 2:
        raise OpShapeError(f"reads a sequence [T, F] (steps, features), got {list(shape)}",
                           hint="declare the input as {shape: [T, F]}, or reshape to it first "
                                "(`{op: reshape, shape: [T, -1]}`)")
    steps, _ = shape
    return (steps, layer.hidden) if layer.sequences else (layer.hidden,)


def _gh(layer) -> int:
    return GATES[layer.op] * layer.hidden


def _params(layer, shapes):
    fan_in = shapes[0][1]
    params = {"weight_ih_l0": (_gh(layer), fan_in), "weight_hh_l0": (_gh(layer), layer.hidden)}
    if layer.bias:
        params.update(bias_ih_l0=(_gh(layer),), bias_hh_l0=(_gh(layer),))
    return params


def _initializer(layer, pname):
    """PyTorch's default for every tensor of its recurrent layers: U(-k, k), k = 1/sqrt(hidden)."""
    chosen = layer.weight_init if pname.startswith("weight") else layer.bias_init
    if chosen is not None:
        return chosen
    bound = 1.0 / float(np.sqrt(layer.hidden))
    return UniformInit(type="uniform", low=-bound, high=bound)


def _macs(layer, shapes, out):
    steps, fan_in = shapes[0]
    return steps * _gh(layer) * (fan_in + layer.hidden)


def _saved(layer, shapes, facts):
    steps = shapes[0][0]
    return {"h": Saved(steps * layer.hidden, rows=True), "gates": Saved(steps * _gh(layer), rows=True),
            "c": Saved(steps * layer.hidden, rows=True)}


def _backward_scratch(layer, steps: int, fan_in: int, batch: int, chunks: int) -> dict[str, tuple[int, tuple]]:
    """The backward's scratch, name -> (offset, shape): the gates' gradients of every step (a second
    side for a GRU, whose n gate differs between them), the gradients flowing into h and c, and each
    chunk's share of the weight gradients."""
    gh, hidden = _gh(layer), layer.hidden
    shapes = {"da_ih": (batch, steps * gh), "da_hh": (batch, steps * gh) if layer.op == "gru" else (0,),
              "dh": (batch, hidden), "dc": (batch, hidden), "dwt_ih": (chunks, gh, fan_in),
              "dwt_hh": (chunks, gh, hidden)}
    layout, offset = {}, 0
    for name, shape in shapes.items():
        layout[name] = (offset, shape)
        offset += int(np.prod(shape))
    return layout


# multiply-adds of a forward pass below which the batch runs as one chunk, on one core: starting a
# parallel region costs ~50 us a call (the RNN of benchmarks/run.py, one sample per step, ran 10x slower)
SHARED_WORK = 2_000_000


def chunks_for(layer, shapes, batch: int, chunks: int) -> int:
    """Chunks of the batch a recurrent layer runs in (one per core, each the whole sequence), or 1."""
    return chunks if batch * _macs(layer, shapes, None) >= SHARED_WORK else 1


def _scratch(layer, shapes, facts):
    """Forward: h W_hh^T for the batch, and W_hh^T; backward: see _backward_scratch."""
    steps, fan_in = shapes[0]
    chunks = chunks_for(layer, shapes, facts.batch, facts.stepped_chunks)
    offset, shape = list(_backward_scratch(layer, steps, fan_in, facts.batch, chunks).values())[-1]
    return max((facts.batch + layer.hidden) * _gh(layer), offset + int(np.prod(shape)))


# ----------------------------------------------------------------------------- emitters


def _dims(e, step):
    steps, fan_in = e.graph.shape_of(step.inputs[0])
    return steps, fan_in, step.node.layer.hidden, _gh(step.node.layer)


def _chunks(e, step) -> int:
    return chunks_for(step.node.layer, [e.graph.shape_of(step.inputs[0])], e.plan.batch, e.plan.stepped_chunks)


def _kernel(name: str, chunks: int) -> str:
    """The parallel kernel, or for one chunk its serial twin (no parallel region to start)."""
    return name if chunks > 1 else f"{name}_one"


def _weights(e, node, fan_in, hidden, gh):
    return dict(w_ih=e.param(node, "weight_ih_l0", (gh, fan_in)), w_hh=e.param(node, "weight_hh_l0", (gh, hidden)))


def _forward(e, step):
    node = step.node
    steps, fan_in, hidden, gh = _dims(e, step)
    out = steps * hidden if node.layer.sequences else hidden
    batch, chunks = e.plan.batch, _chunks(e, step)
    e.call(_kernel("recurrent_forward", chunks), x=e.val(step.inputs[0], (steps * fan_in,)),
           **_weights(e, node, fan_in, hidden, gh),
           b_ih=e.param(node, "bias_ih_l0"), b_hh=e.param(node, "bias_hh_l0"),
           has_bias=e.flag("bias_ih_l0" in node.param_shapes),
           hs=e.saved(node, "h", (steps * hidden,)), gates=e.saved(node, "gates", (steps * gh,)),
           cs=e.saved(node, "c", (steps * hidden,), "cell state (lstm) or W_hn h + b_hn (gru)"),
           hh=e.scratch(0, (batch, gh), f"{node.name}_hh", f"{node.name} h W_hh^T of one step"),
           w_hh_t=e.scratch(batch * gh, (hidden, gh), f"{node.name}_w_hh_t", f"{node.name} W_hh^T"),
           y=e.val(step.output, (out,)), cell=e.size(CELL[node.op]), steps=e.size(steps),
           sequences=e.flag(node.layer.sequences), chunks=e.size(chunks))


_ABOUT = {"da_ih": "gate gradients, input side", "da_hh": "gate gradients, hidden side (gru)",
          "dh": "gradient into h_(t-1)", "dc": "gradient into c_(t-1)", "dwt_ih": "each chunk's weight_ih gradient",
          "dwt_hh": "each chunk's weight_hh gradient"}


def _backward(e, step):
    node, x = step.node, step.inputs[0]
    steps, fan_in, hidden, gh = _dims(e, step)
    out = steps * hidden if node.layer.sequences else hidden
    batch, chunks = e.plan.batch, _chunks(e, step)
    need_dx, need_dw = e.needs_grad[x], node.trainable
    x_view = e.val(x, (steps * fan_in,))
    weights = _weights(e, node, fan_in, hidden, gh)
    layout = _backward_scratch(node.layer, steps, fan_in, batch, chunks)
    scratch = {name: e.scratch(offset, shape, f"{node.name}_{name}", f"{node.name} {_ABOUT[name]}")
               for name, (offset, shape) in layout.items() if name != "da_hh" or node.op == "gru"}
    scratch.setdefault("da_hh", scratch["da_ih"])  # other cells' gates have one gradient: written once
    scratch = {name: scratch[name] for name in layout}  # in the kernel's order
    e.call(_kernel("recurrent_backward", chunks), x=x_view, **weights,
           hs=e.saved(node, "h", (steps * hidden,)), gates=e.saved(node, "gates", (steps * gh,)),
           cs=e.saved(node, "c", (steps * hidden,), "cell state (lstm) or W_hn h + b_hn (gru)"),
           dy=e.grad(step.output, (out,)), dx=e.grad(x, (steps * fan_in,)) if need_dx else x_view,
           need_dx=e.flag(need_dx), acc_dx=e.acc(x) if need_dx else e.flag(False),
           dw_ih=e.pgrad(node, "weight_ih_l0", (gh, fan_in)) if need_dw else weights["w_ih"],
           dw_hh=e.pgrad(node, "weight_hh_l0", (gh, hidden)) if need_dw else weights["w_hh"],
           db_ih=e.pgrad(node, "bias_ih_l0"), db_hh=e.pgrad(node, "bias_hh_l0"),
           has_bias=e.flag("bias_ih_l0" in node.param_shapes), need_dw=e.flag(need_dw),
           acc_dw=e.pacc(node) if need_dw else e.flag(False),
           **scratch, cell=e.size(CELL[node.op]), steps=e.size(steps), sequences=e.flag(node.layer.sequences),
           window=e.size(node.layer.bptt or steps), chunks=e.size(chunks))


def _notes(e, step):
    steps = e.graph.shape_of(step.inputs[0])[0]
    bptt = step.node.layer.bptt
    chunks = _chunks(e, step)
    return [f"loop over {steps} steps, BLAS" + (f", gradients through {bptt} steps" if bptt and bptt < steps else "")
            + (f", {chunks} parallel chunks of the batch" if chunks > 1 else "")]


# ----------------------------------------------------------------------------- ONNX


# ONNX stacks the gates in its own order: LSTM i, o, f, c (PyTorch i, f, g, o); GRU z, r, h
# (PyTorch r, z, n). Each entry: PyTorch's gate index at ONNX's position.
_ONNX_ORDER = {"rnn": (0,), "lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}
_ONNX_OP = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def _onnx(ctx, node):
    """ONNX's RNN/LSTM/GRU, layout 0 ([T, N, F] in, Y [T, 1, N, H] and Y_h [1, N, H] out): netc's
    [N, T, F] is transposed in; every step's Y transposed back to [N, T, H], or the last state Y_h
    squeezed to [N, H]. W, R, B are the parameters with their gates in ONNX's order."""
    layer = node.layer
    hidden = layer.hidden
    order = _ONNX_ORDER[layer.op]

    def onnx_gates(pname):  # [G*H, ...] in PyTorch's gate order -> ONNX's
        value = np.asarray(ctx.weights[f"{node.param_owner}.{pname}"], np.float32)
        return np.concatenate([value[k * hidden:(k + 1) * hidden] for k in order], axis=0)

    owner, make = node.param_owner, ctx.helper.make_node
    inputs = [f"{node.name}.steps_first",
              ctx.initializer(f"{owner}.onnx_W", onnx_gates("weight_ih_l0")[None]),
              ctx.initializer(f"{owner}.onnx_R", onnx_gates("weight_hh_l0")[None])]
    if "bias_ih_l0" in node.param_shapes:
        bias = np.concatenate([onnx_gates("bias_ih_l0"), onnx_gates("bias_hh_l0")])[None]
        inputs.append(ctx.initializer(f"{owner}.onnx_B", bias))
    attributes = {"hidden_size": int(hidden)}
    if layer.op == "gru":
        attributes["linear_before_reset"] = 1  # PyTorch's n gate: r * (W_hn h + b_hn)
    if layer.op == "rnn":
        attributes["activations"] = ["Tanh"]
    ctx.nodes.append(make("Transpose", [node.inputs[0]], [inputs[0]], name=inputs[0], perm=[1, 0, 2]))
    every, last = f"{node.name}.Y", f"{node.name}.Y_h"
    ctx.nodes.append(make(_ONNX_OP[layer.op], inputs, [every, last], name=f"{node.name}.{_ONNX_OP[layer.op]}",
                          **attributes))
    if layer.sequences:
        batch_first = f"{node.name}.Y_batch_first"
        ctx.nodes.append(make("Transpose", [every], [batch_first], name=batch_first, perm=[2, 0, 1, 3]))
        axes = ctx.initializer("netc.axis2", np.array([2], np.int64))
        ctx.add("Squeeze", [batch_first, axes], node)  # [N, T, 1, H] -> [N, T, H]
    else:
        axes = ctx.initializer("netc.axis0", np.array([0], np.int64))
        ctx.add("Squeeze", [last, axes], node)  # [1, N, H] -> [N, H]


# ----------------------------------------------------------------------------- reference (numpy, float64)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _run(layer, x, params):
    """Every step's values: x (n, T, F) -> dict of (n, T, ...) arrays, gates after their nonlinearity."""
    n, steps, _ = x.shape
    hidden = layer.hidden
    w_ih, w_hh = params["weight_ih_l0"], params["weight_hh_l0"]
    zeros = np.zeros(_gh(layer))
    b_ih, b_hh = params.get("bias_ih_l0", zeros), params.get("bias_hh_l0", zeros)
    h, c = np.zeros((n, hidden)), np.zeros((n, hidden))
    kept = {"h": [], "c": [], "gates": [], "hn": []}
    for t in range(steps):
        xi = x[:, t] @ w_ih.T + b_ih  # (n, G*H)
        hi = h @ w_hh.T + b_hh
        if layer.op == "rnn":
            h = np.tanh(xi + hi)
            gates = h[:, None]
        elif layer.op == "lstm":
            a = (xi + hi).reshape(n, 4, hidden)
            i, f, g, o = _sigmoid(a[:, 0]), _sigmoid(a[:, 1]), np.tanh(a[:, 2]), _sigmoid(a[:, 3])
            c = f * c + i * g
            h = o * np.tanh(c)
            gates = np.stack([i, f, g, o], axis=1)
        else:
            xr, xz, xn = xi.reshape(n, 3, hidden).transpose(1, 0, 2)
            hr, hz, hn = hi.reshape(n, 3, hidden).transpose(1, 0, 2)
            r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
            new = np.tanh(xn + r * hn)
            h = (1 - z) * new + z * h
            gates = np.stack([r, z, new], axis=1)
            kept["hn"].append(hn)
        kept["h"].append(h)
        kept["c"].append(c)
        kept["gates"].append(gates)
    return {key: np.stack(values, axis=1) for key, values in kept.items() if values}


def _ref_forward(layer, xs, params):
    # x (n, T, F) -> y (n, T, H) with sequences, (n, H) without
    hs = _run(layer, xs[0], params)["h"]
    return hs if layer.sequences else hs[:, -1]


def _ref_backward(layer, xs, y, dy, params):
    """Backpropagation through time, step T-1 down to 0."""
    x = xs[0]
    n, steps, _ = x.shape
    hidden = layer.hidden
    kept = _run(layer, x, params)
    w_ih, w_hh = params["weight_ih_l0"], params["weight_hh_l0"]
    dys = dy if layer.sequences else np.concatenate([np.zeros((n, steps - 1, hidden)), dy[:, None]], axis=1)
    dx = np.zeros_like(x)
    dw_ih, dw_hh = np.zeros_like(w_ih), np.zeros_like(w_hh)
    db_ih, db_hh = np.zeros(_gh(layer)), np.zeros(_gh(layer))
    dh_next, dc_next = np.zeros((n, hidden)), np.zeros((n, hidden))
    window = layer.bptt or steps
    for t in reversed(range(steps)):
        if (t + 1) % window == 0:  # the last step of a window: nothing flows in from the next window
            dh_next, dc_next = np.zeros((n, hidden)), np.zeros((n, hidden))
        dh = dys[:, t] + dh_next
        h_prev = kept["h"][:, t - 1] if t > 0 else np.zeros((n, hidden))
        gates = kept["gates"][:, t]
        direct = 0.0
        if layer.op == "rnn":
            da_ih = dh * (1 - gates[:, 0] ** 2)
            da_hh = da_ih
        elif layer.op == "lstm":
            i, f, g, o = gates[:, 0], gates[:, 1], gates[:, 2], gates[:, 3]
            c = kept["c"][:, t]
            c_prev = kept["c"][:, t - 1] if t > 0 else np.zeros((n, hidden))
            dc = dc_next + dh * o * (1 - np.tanh(c) ** 2)
            da_ih = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g ** 2),
                                    dh * np.tanh(c) * o * (1 - o)], axis=1)
            da_hh = da_ih
            dc_next = dc * f
        else:
            r, z, new = gates[:, 0], gates[:, 1], gates[:, 2]
            hn = kept["hn"][:, t]
            dan = dh * (1 - z) * (1 - new ** 2)
            daz = dh * (h_prev - new) * z * (1 - z)
            dar = dan * hn * r * (1 - r)
            da_ih = np.concatenate([dar, daz, dan], axis=1)
            da_hh = np.concatenate([dar, daz, dan * r], axis=1)
            direct = dh * z
        dx[:, t] = da_ih @ w_ih
        dw_ih += da_ih.T @ x[:, t]
        dw_hh += da_hh.T @ h_prev
        db_ih += da_ih.sum(axis=0)
        db_hh += da_hh.sum(axis=0)
        dh_next = da_hh @ w_hh + direct
    grads = {"weight_ih_l0": dw_ih, "weight_hh_l0": dw_hh}
    if "bias_ih_l0" in params:
        grads.update(bias_ih_l0=db_ih, bias_hh_l0=db_hh)
    return [dx], grads


_KERNELS = {"netc.kernels.recurrent": ("recurrent_forward", "recurrent_backward", "recurrent_forward_one",
                                       "recurrent_backward_one")}


def _recurrent(name, spec) -> OpDef:
    return register(OpDef(
        name, spec, _infer, Reference(_ref_forward, _ref_backward), _onnx,
        (f"recurrent_forward ({name}, loop over steps)", f"recurrent_backward ({name}, through time)"),
        params=_params, saved=_saved, scratch=_scratch, macs=_macs, kernels=_KERNELS, forward=_forward,
        backward=_backward, notes=_notes, initializer=_initializer,
        # a GEMM per time step, each too small to split: two BLAS threads synchronised on every one of
        # them, and beside two busy processes the LSTM of benchmarks/run.py (T=32 H=128 batch 32) ran
        # 6.2x slower with two threads, 2.0x with one. The cores share the batch instead (chunks).
        categories=frozenset({STEPPED})))


RNN = _recurrent("rnn", Rnn)
LSTM = _recurrent("lstm", Lstm)
GRU = _recurrent("gru", Gru)
