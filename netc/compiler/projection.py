"""Projection plans: the network's own backward pass, started from a signal at one tensor and run
down to the float inputs, with the backward rule of each ReLU chosen by a method.

    compile_graph(graph, batch, fuse_pools=False, projection=Projection("relu2", "deconvnet"))

What `netc viz reconstruct` (Zeiler & Fergus's deconvnet, guided backpropagation) and `netc viz
saliency` (the gradient of a class score) run. Not a second implementation of any op: the steps,
emitters and kernels are the training plan's, changed in three places:

- the graph is `frozen` (every layer `trainable: false`): no parameter gradients, no kept im2col
  columns, no optimizer updates;
- `mark_projection` takes the place of mark_gradients: a tensor needs a gradient when it lies on a
  path from a float input to the start tensor, the input itself included. Nothing else writes the
  start tensor's gradient: the runtime writes the signal there and calls the plan's `backward`
  (the loss is never called);
- the backward emitter writes each activation's `Activation.rules[method]` code in place of its own
  (codegen.Emitter.act_code): relu -> DECONVNET_RELU, max(dy, 0), or GUIDED_RELU, dy where dy > 0
  and the forward input > 0 (netc.kernels.activation.act_chain).

The rest is the deconvnet already: a max pool's backward routes each signal through the forward's
switches (its argmax), the deconvnet's unpooling; conv and linear layers pass it through their
transposed weights, the deconvnet's filtering; other layers through their own backward. Method
"gradient" keeps every rule: the plain gradient of <signal, start tensor> (saliency).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from netc.compiler.steps import Step
from netc.graph.ir import Graph, Node
from netc.ops.base import ACTIVATION, REGISTRY

METHODS = ("gradient", "deconvnet", "guided")


@dataclass(frozen=True)
class Projection:
    tensor: str  # where the backward starts: a stored tensor (a step's output)
    method: str = "gradient"  # one of METHODS

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown projection method {self.method!r}: one of {', '.join(METHODS)}")

    @property
    def rule(self) -> str | None:
        """The activations' rule to use (a key of Activation.rules); None: their own backward."""
        return None if self.method == "gradient" else self.method


def frozen(graph: Graph) -> Graph:
    """The same graph with every layer frozen: its plan computes no parameter gradient."""
    nodes = [replace(node, trainable=False) for node in graph.nodes]
    return Graph(graph.spec, graph.inputs, nodes, graph.loss_input, graph.loss_target)


def on_path(graph: Graph, tensor: str) -> list[Node]:
    """The layers a projection from `tensor` runs back through: upstream of it (itself included)
    and downstream of a float input, in graph order."""
    upstream = graph.upstream(tensor)
    floats = set(graph.float_inputs)
    return [node for node in graph.nodes
            if node.name in upstream and floats & graph.upstream(node.name)]


def missing_rules(graph: Graph, tensor: str, method: str) -> list[Node]:
    """The activations on the path of a projection from `tensor` that have no backward rule for
    `method` (none for "gradient")."""
    if method == "gradient":
        return []
    return [node for node in on_path(graph, tensor)
            if REGISTRY[node.op].is_(ACTIVATION) and method not in REGISTRY[node.op].activation.rules]


def mark_projection(graph: Graph, steps: list[Step], projection: Projection) -> dict[str, bool]:
    """The gradient flags of a projection plan: on a path from a float input to the start tensor.
    Refuses a start tensor no step stores and an activation without a rule for the method."""
    start = projection.tensor
    stored = {step.output for step in steps if step.kind != "alias"}
    if start not in stored:
        covering = next((step for step in steps if start in step.covers), None)
        where = f"it is computed inside the step of {' + '.join(covering.covers)}" if covering else "no layer has it"
        raise ValueError(f"cannot project from '{start}': {where}; start from a stored tensor")
    unruled = missing_rules(graph, start, projection.method)
    if unruled:
        names = ", ".join(f"'{node.name}' ({node.op})" for node in unruled)
        raise ValueError(f"{projection.method} has no backward rule for {names}")
    upstream = graph.upstream(start)
    floats = set(graph.float_inputs)
    needs = {name: name in upstream and name in floats for name in graph.inputs}
    for step in steps:
        needs[step.output] = step.output in upstream and any(needs[t] for t in step.inputs)
        for covered in step.covers:
            needs.setdefault(covered, needs[step.output])
        step.needs_grad = needs[step.output]
    return needs
