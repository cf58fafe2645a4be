"""The graph IR: named tensors produced by nodes, in topological order."""

from __future__ import annotations

from dataclasses import dataclass, field

from netc.errors import path_text
from netc.ops.base import Shape, numel
from netc.spec.blocks import Instance


@dataclass
class Node:
    name: str  # also the name of the tensor it produces
    op: str
    layer: object  # the spec model
    index: int  # position in spec.layers; after them, in unrolled order, the layers of block instances
    inputs: list[str]
    shape: Shape | None = None  # output shape without batch; None when inference failed
    param_shapes: dict[str, Shape] = field(default_factory=dict)  # e.g. {"weight": (10, 500)}
    state: dict = field(default_factory=dict)  # state tensors by name: ops.base.StateTensor (running statistics)
    owner: str | None = None  # the layer whose parameters this one uses (share), or None
    trainable: bool = True
    lr_mult: float = 1.0
    macs: int = 0  # multiply-accumulates per sample
    path: tuple = ()  # where the layer is written, when not ("layers", index): ("blocks", "res", "layers", 1)
    instance: Instance | None = None  # the block instance it is part of (innermost); None at the top level
    share: str | None = None  # the layer whose parameters it asks for (`share:`, `share: true`), full name
    scan: str | None = None  # the scan whose loop runs it, once per step (netc.ops.scan); None outside any

    @property
    def param_owner(self) -> str:
        """The layer whose tensors hold this node's parameters."""
        return self.owner or self.name

    @property
    def spec_path(self) -> tuple:
        """Where the layer is written in the spec (a block's definition for a layer of an instance)."""
        return self.path or ("layers", self.index)

    @property
    def spec_path_text(self) -> str:
        """`layers[3]`, `blocks.resblock.layers[1]`: the path a diagnostic shows."""
        return path_text(self.spec_path)


@dataclass
class Graph:
    spec: object  # the Spec
    inputs: dict[str, Shape]  # graph inputs and their shapes
    nodes: list[Node]  # topological order
    loss_input: str
    loss_target: str
    instances: dict[str, Instance] = field(default_factory=dict)  # block instances by full name, in spec order

    def __post_init__(self):
        # indexes built once: lookups inside per-node loops stay O(1) on 100k-layer graphs
        self.by_name = {node.name: node for node in self.nodes}
        self._consumers: dict[str, list[Node]] = {}
        for node in self.nodes:
            for tensor in dict.fromkeys(node.inputs):  # a node reading a tensor twice is one consumer
                self._consumers.setdefault(tensor, []).append(node)

    def shape_of(self, tensor: str) -> Shape:
        if tensor in self.inputs:
            return self.inputs[tensor]
        return self.by_name[tensor].shape

    @property
    def losses(self) -> list:
        """The spec's losses; the first one (loss_input, loss_target) gives predictions and accuracy."""
        return self.spec.losses

    @property
    def loss_inputs(self) -> set[str]:
        return {loss.input for loss in self.spec.losses}

    @property
    def float_inputs(self) -> list[str]:
        """The inputs holding float features, in spec order (staged as the plan's dtype)."""
        return [name for name, inp in self.spec.inputs.items() if inp.dtype == "float32"]

    @property
    def label_input(self) -> str | None:
        """The input holding class labels (int64 with `classes`), if any."""
        return next((name for name, inp in self.spec.inputs.items() if inp.classes is not None), None)

    @property
    def label_steps(self) -> int:
        """Labels per sample: T for a label at every step of a sequence (shape [T]), else 1."""
        label = self.label_input
        return numel(self.inputs[label]) if label is not None else 1

    @property
    def index_inputs(self) -> list[str]:
        """The inputs holding int64 indices (`indices`: what an embedding reads), in spec order."""
        return [name for name, inp in self.spec.inputs.items() if inp.indices is not None]

    def consumers(self, tensor: str) -> list[Node]:
        """The nodes that read `tensor`, in topological order."""
        return list(self._consumers.get(tensor, ()))

    def upstream(self, tensor: str) -> set[str]:
        """`tensor` and every tensor it is computed from, graph inputs included."""
        seen, todo = set(), [tensor]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(self.by_name[name].inputs if name in self.by_name else ())
        return seen

    @property
    def owners(self) -> list[Node]:
        """Nodes that own parameter tensors (shared tensors appear once)."""
        return [node for node in self.nodes if node.param_shapes and node.owner is None]

    def param_count(self, trainable: bool | None = None) -> int:
        return sum(
            numel(shape)
            for node in self.owners
            if trainable is None or node.trainable == trainable
            for shape in node.param_shapes.values()
        )

    def state_count(self) -> int:
        """Elements of state tensors (kept and checkpointed, never trained)."""
        return sum(numel(t.shape) for node in self.nodes for t in node.state.values())

    @property
    def macs(self) -> int:
        return sum(node.macs for node in self.nodes)

    def verify(self) -> None:
        """Invariants every pass keeps: unique names, known inputs, topological order."""
        seen = set(self.inputs)
        for node in self.nodes:
            assert node.name not in seen, f"duplicate tensor {node.name}"
            for tensor in node.inputs:
                assert tensor in seen, f"{node.name} reads {tensor} before it is produced"
            seen.add(node.name)
