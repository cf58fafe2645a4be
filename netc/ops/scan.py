"""The pieces a `scan` layer unrolls into (internal ops: no spec names them directly).

A scan `{name: rnn, op: scan, block: cell, in: rows}` of a block with inputs [x] and `state:
{h: {shape: [64], next: h_new}}` becomes, in the graph,

    rnn.x      scan_input   a step of the sequence `rows` [T, F] -> [F]
    rnn.h      scan_state   the state entering a step (zeros before the first)     -> [64]
    rnn.<layer> ...         the block's layers, run once per step
    rnn        scan         the block's output at every step [T, ...] or at the last [...]

The compiler writes the block's layers inside one loop over the steps (netc.compiler.module), so
an RNN of 1,000 steps compiles no slower than one of 8. Every tensor of the block is stored for
every step, time-major (steps, batch, ...): each kernel sees the usual contiguous rows of a step.
A state reads the storage of its `next` layer one step behind: that layer's storage has T + 1
slots, slot 0 the zeros before the first step, so carrying the state copies nothing.

Backpropagation through time runs the steps backwards: at each step the gradient of each carried
tensor is seeded with what the next step sent back through its state (cut between windows of
`bptt` steps) plus what the scan's output received, then the block's backward runs, and the
gradients of the step's inputs go back into their sequences. The block's parameter gradients add
up over the steps.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from netc.ops.base import REGISTRY, OpDef, OpShapeError, Reference, numel, register
from netc.spec.base import Layer


class ScanInput(Layer):
    """A step of one sequence a scan reads."""

    op: Literal["scan_input"]
    scan: str


class ScanState(Layer):
    """A tensor carried from one step to the next: the value `next` had at the step before."""

    op: Literal["scan_state"]
    scan: str
    shape: list[int]
    next: str  # full name of the layer giving its next value


class ScanOutput(Layer):
    """The scan's result: the block's `output` at every step (`sequences`) or at the last."""

    op: Literal["scan"]
    block: str
    sequences: bool
    bptt: int | None
    output: str  # full name of the block's output layer
    states: dict[str, str]  # state -> the layer giving its next value (full names)


def scan_steps(graph, scan) -> int:
    """T, the steps of a scan node (its last input is its first sequence)."""
    return graph.shape_of(scan.inputs[-1])[0]


def _infer_input(layer, shapes):
    (shape,) = shapes
    if len(shape) < 2:
        raise OpShapeError(f"reads {list(shape)}, not a sequence",
                           hint="a scan reads sequences [T, ...]: T steps of the block's input")
    return tuple(shape[1:])


def _infer_state(layer, shapes):
    return tuple(layer.shape)


def _infer_output(layer, shapes):
    steps = shapes[-1][0]
    return (steps, *shapes[0]) if layer.sequences else tuple(shapes[0])


def _nothing(e, step) -> None:
    """The loop's pieces are written by the functions below, where the loop needs them."""


def _alone(*args, **kwargs):
    raise NotImplementedError("a scan's pieces have no reference of their own: tests/test_scan.py compares "
                              "the cells written as blocks with the built-in recurrent layers")


def _onnx_piece(ctx, node):
    raise AssertionError("a scan's pieces export inside its ONNX Scan (see _onnx_scan)")


def _onnx_scan(ctx, scan):
    """One ONNX `Scan` over the sequences' axis 1 (batch first): its body graph holds the block's layers
    (each op's own mapping), reads the states and one step of each sequence, and gives the next values
    and the block's output at that step; the states start as zeros [N, ...]. The parameters stay
    initializers of the outer graph, which the body reads by name. The last step's output is taken
    from the stacked outputs (Gather on axis 1)."""
    from onnx import TensorProto

    graph, helper, layer = ctx.graph, ctx.helper, scan.layer
    pieces = [node for node in graph.nodes if node.scan == scan.name]
    sequences = [node for node in pieces if node.op == "scan_input"]
    states = [node for node in pieces if node.op == "scan_state"]
    body = ctx.inner()
    for node in pieces:
        if node.op not in ("scan_input", "scan_state"):
            REGISTRY[node.op].onnx(body, node)
    outputs = []  # the body's outputs need names of their own: a next value may also be the output
    for i, tensor in enumerate([*(state.layer.next for state in states), layer.output]):
        name = f"{scan.name}.out{i}"
        body.nodes.append(helper.make_node("Identity", [tensor], [name], name=name))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *graph.shape_of(tensor)]))
    inputs = [helper.make_tensor_value_info(node.name, TensorProto.FLOAT, ["N", *node.shape])
              for node in [*states, *sequences]]
    loop = helper.make_graph(body.nodes, f"{scan.name}.body", inputs, outputs)
    initial = []
    for state in states:  # zeros [N, *shape], N from the first sequence
        batch = f"{state.name}.batch"
        ctx.nodes.append(helper.make_node("Shape", [sequences[0].inputs[0]], [batch], name=batch, start=0, end=1))
        size = ctx.initializer(f"{state.name}.size", np.array(state.shape, np.int64))
        shape = f"{state.name}.shape"
        ctx.nodes.append(helper.make_node("Concat", [batch, size], [shape], name=shape, axis=0))
        zeros = f"{state.name}.zeros"
        ctx.nodes.append(helper.make_node("ConstantOfShape", [shape], [zeros], name=zeros,
                                          value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])))
        initial.append(zeros)
    finals = [f"{state.name}.final" for state in states]
    every = scan.name if layer.sequences else f"{scan.name}.steps"
    ctx.nodes.append(helper.make_node(
        "Scan", initial + [node.inputs[0] for node in sequences], finals + [every], name=f"{scan.name}.scan",
        body=loop, num_scan_inputs=len(sequences), scan_input_axes=[1] * len(sequences), scan_output_axes=[1]))
    if not layer.sequences:
        last = ctx.initializer(f"{scan.name}.last", np.array(scan_steps(graph, scan) - 1, np.int64))
        ctx.add("Gather", [every, last], scan, axis=1)


_KERNELS = {"netc.kernels.scan": ("to_time_major", "from_time_major", "seed_step_grad", "scatter_step_grad",
                                  "zero_fill")}
for _name, _spec, _infer, _inputs, _labels, _onnx in (
        ("scan_input", ScanInput, _infer_input, (1, 1), ("to time-major", "gradient into the sequence"), _onnx_piece),
        ("scan_state", ScanState, _infer_state, (0, 0), ("state", "state gradient"), _onnx_piece),
        ("scan", ScanOutput, _infer_output, (2, None), ("from time-major", "seed step gradients"), _onnx_scan)):
    register(OpDef(_name, _spec, _infer, Reference(_alone, _alone), _onnx, _labels, min_inputs=_inputs[0],
                   max_inputs=_inputs[1], kernels=_KERNELS, forward=_nothing, backward=_nothing), internal=True)


# ----------------------------------------------------------------------------- the loop's pieces
# Each writes its kernel calls through the compiler's Emitter (netc.compiler.codegen); the loop
# variable is `t`.


def forward_before(e, node) -> None:
    """Before the loop: a sequence into time-major storage (scan_input), or a state's zeros."""
    steps = scan_steps(e.graph, e.graph.by_name[node.scan])
    if node.op == "scan_input":
        k = numel(node.shape)
        e.call("to_time_major", x=e.val(node.inputs[0], (steps, k)), y=e.slots(node.name, (k,)), n="n")
    else:
        e.call("zero_fill", x=e.slot(node.name, "0"))


def forward_after(e, scan) -> None:
    """After the loop: the block's output at every step, or the last, back to batch-major rows."""
    steps, output = scan_steps(e.graph, scan), scan.layer.output
    k = numel(e.graph.shape_of(output))
    shift = e.plan.values[e.plan.root(output)].shift
    first = shift if scan.layer.sequences else shift + steps - 1
    e.call("from_time_major", x=e.slots(output, (k,)), first=e.size(first),
           y=e.val(scan.name, (steps if scan.layer.sequences else 1, k)), n="n")


def backward_before(e, scan, owners) -> None:
    """Before the backward loop: the block's parameter gradients start from zero (each step adds)."""
    for owner in owners:
        if not e.written_param(owner):
            for pname in owner.param_shapes:
                e.call("zero_fill", x=e.pgrad(owner, pname))
        e.pacc(owner)  # every step adds


def seed_gradients(e, scan) -> None:
    """At the top of each backward step: the gradient of every carried tensor and of the block's
    output, from the step after (through the state; cut at the start of each `bptt` window) and
    from the scan's output."""
    steps, layer = scan_steps(e.graph, scan), scan.layer
    carried = {nxt: state for state, nxt in layer.states.items()}
    for tensor in dict.fromkeys([*layer.states.values(), layer.output]):
        if not e.needs_grad.get(tensor):
            continue
        k = numel(e.graph.shape_of(tensor))
        dx = e.grad(tensor, (k,))
        state = carried.get(tensor)
        carry_on = state is not None and e.needs_grad.get(state)
        window = f" and (t + 1) % {layer.bptt} != 0" if layer.bptt else ""
        dy_on = tensor == layer.output and e.needs_grad.get(scan.name)
        if dy_on:
            dy = e.grad(scan.name, (steps if layer.sequences else 1, k))
        else:
            dy = e.empty("D", (1, 1, 1), "no_dy", "no gradient from the output")
        e.call("seed_step_grad", dx=dx, carry=e.grad(state, (k,)) if carry_on else dx,
               carry_on=f"B(t < {steps - 1}{window})" if carry_on else e.flag(False), dy=dy,
               t="t" if layer.sequences else e.size(0),
               dy_on=(e.flag(True) if layer.sequences else f"B(t == {steps - 1})") if dy_on else e.flag(False))
        e.acc(tensor)  # seeded: the block's own readers of it add to it


def scatter_input_gradient(e, node) -> None:
    """At the end of each backward step: the gradient of the step's input into its sequence's."""
    sequence = node.inputs[0]
    if not e.needs_grad.get(sequence):
        return
    steps = scan_steps(e.graph, e.graph.by_name[node.scan])
    k = numel(node.shape)
    e.call("scatter_step_grad", dx=e.grad(node.name, (k,)), dy=e.grad(sequence, (steps, k)), t="t",
           acc=e.acc(sequence))
