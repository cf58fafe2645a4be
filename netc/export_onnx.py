"""Export a spec and its trained weights to ONNX (`netc export`), for onnxruntime and friends.

    model = onnx_model(graph, load_weights("runs/lenet/last.safetensors"))   # an onnx.ModelProto
    export_onnx(load_spec("specs/lenet.yaml"), "runs/lenet/last.safetensors", "lenet.onnx")

The ONNX graph computes what `Model.predict` returns: the tensor the loss reads
(logits for cross_entropy, log-probabilities for nll, ...), for a dynamic batch `N`.
Inputs are the spec's float inputs under their own names, [N, *shape], float32;
tensors keep netc's layout (NCHW, row-major flatten). Each op's mapping lives with the op
(netc/ops/<family>.py, `OpDef.onnx`), written through `OnnxContext`: linear -> Gemm, conv2d -> Conv,
leaky_relu -> LeakyRelu, gelu -> Gelu (opset 20 and later), batchnorm2d -> BatchNormalization with
the running statistics, local2d -> Conv with one-hot filters + Einsum, and so on.

Shared layers read the owner's initializers. Weights are exported
as float32 whatever the plan's dtype. `onnx` is an optional dependency, imported lazily:
`pip install 'netc[onnx]'`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netc.errors import Diagnostic, Location, NetcError

CODE = "E-EXPORT"
DEFAULT_OPSET = 21  # what onnxruntime >= 1.18 (the floor of the `onnx` extra) runs
MIN_OPSET = 13  # Softmax/LogSoftmax over one axis, Reshape with a shape input
INSTALL_HINT = "pip install 'netc[onnx]'   (or: pip install onnx onnxruntime)"


class ExportError(NetcError):
    """A network or checkpoint that cannot be exported."""


def _error(message: str, where: Location | str = "", hint: str = "", path: str = "") -> ExportError:
    location = where if isinstance(where, Location) else Location(str(where))
    return ExportError(Diagnostic(CODE, message, location, path, hint))


def _onnx():
    try:
        import onnx
    except ImportError:
        raise _error("exporting to ONNX needs the 'onnx' package, which is not installed",
                     hint=INSTALL_HINT) from None
    return onnx


@dataclass
class ExportResult:
    path: Path
    opset: int
    inputs: dict[str, list]  # name -> shape with "N" for the batch
    output: str
    output_shape: list
    nodes: int
    initializers: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # checkpoint tensors the model does not use


def check_weights(graph, weights: dict[str, np.ndarray], where: str = "<weights>") -> list[str]:
    """Every parameter tensor of the graph must be in `weights` with its shape; returns the names of
    tensors in `weights` that the graph does not use."""
    wanted = {f"{node.name}.{p}": tuple(shape) for node in graph.owners for p, shape in node.param_shapes.items()}
    wanted.update({f"{node.name}.{name}": tuple(t.shape) for node in graph.nodes for name, t in node.state.items()})
    missing = [name for name in wanted if name not in weights]
    different = [f"{name} {list(np.shape(weights[name]))} (needs {list(shape)})"
                 for name, shape in wanted.items() if name in weights and tuple(np.shape(weights[name])) != shape]
    if missing or different:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if different:
            parts.append(f"different shape: {', '.join(different)}")
        raise _error(f"the checkpoint does not fit {graph.spec.name}: {'; '.join(parts)}", where,
                     "pass a checkpoint written by `netc train` of this spec (runs/<name>/last.safetensors)")
    return sorted(name for name in weights if name not in wanted)


def _needed(graph, output: str) -> set[str]:
    """Tensors the output depends on."""
    needed, pending = set(), [output]
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed.add(name)
        if name in graph.by_name:
            pending.extend(graph.by_name[name].inputs)
    return needed


class OnnxContext:
    """What an op's `onnx` mapping writes with (netc/ops/): the nodes, the initializers (parameters
    of sharers read the owner's tensor, each written once) and the opset."""

    def __init__(self, graph, weights: dict[str, np.ndarray], opset: int, helper, numpy_helper, locate=None):
        self.graph, self.weights, self.opset = graph, weights, opset
        self.locate = locate or (lambda path: Location(graph.spec.name))  # spec path -> file:line:col
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self._made: set[str] = set()

    def shape_of(self, tensor: str):
        return self.graph.shape_of(tensor)

    def initializer(self, name: str, array: np.ndarray) -> str:
        if name not in self._made:
            self._made.add(name)
            # np.array, not np.ascontiguousarray: that makes a scalar (select's Gather index) one-dimensional
            self.initializers.append(self.numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def param(self, node, pname: str) -> str:
        key = f"{node.param_owner}.{pname}"
        return self.initializer(key, np.asarray(self.weights[key], np.float32))

    def state(self, node, name: str) -> str:
        """One of the node's state tensors (running statistics), from the checkpoint."""
        key = f"{node.name}.{name}"
        return self.initializer(key, np.asarray(self.weights[key], np.float32))

    def inner(self) -> OnnxContext:
        """A context for a subgraph (a scan's body): its own nodes, the initializers of this one."""
        inner = OnnxContext(self.graph, self.weights, self.opset, self.helper, self.numpy_helper, self.locate)
        inner.initializers, inner._made = self.initializers, self._made
        return inner

    def add(self, op_type: str, inputs: list[str], node, **attributes) -> None:
        """One ONNX node computing the netc node's output."""
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [node.name], name=node.name, **attributes))

    def need_opset(self, opset: int, node, why: str) -> None:
        if self.opset < opset:
            raise _error(f"layer '{node.name}' ({node.op}) needs opset {opset} or later: {why}",
                         self.locate(node.spec_path), f"export with --opset {max(opset, DEFAULT_OPSET)}",
                         node.spec_path_text)


def onnx_model(graph, weights: dict[str, np.ndarray], opset: int = DEFAULT_OPSET, where: str = "<weights>",
               locate=None):
    """The graph as an `onnx.ModelProto` with `weights` as initializers (checked by onnx.checker);
    `locate` (spec path -> Location) points errors at the spec file."""
    from netc import __version__
    from netc.ops import REGISTRY

    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    latest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= latest:
        raise _error(f"opset {opset} is outside what netc exports ({MIN_OPSET}..{latest} with onnx {onnx.__version__})",
                     hint=f"the default is {DEFAULT_OPSET}")
    check_weights(graph, weights, where)
    output = graph.loss_input
    needed = _needed(graph, output)

    ctx = OnnxContext(graph, weights, opset, helper, numpy_helper, locate)
    for node in graph.nodes:
        if node.name in needed and node.scan is None:  # a scan's block is written inside its Scan
            REGISTRY[node.op].onnx(ctx, node)
    nodes, initializers = ctx.nodes, ctx.initializers

    def value(name: str, shape, kind=TensorProto.FLOAT) -> object:
        return helper.make_tensor_value_info(name, kind, ["N", *shape])

    inputs = [value(name, graph.inputs[name]) for name in graph.float_inputs]
    inputs += [value(name, graph.inputs[name], TensorProto.INT64) for name in graph.index_inputs]
    outputs = [value(output, graph.shape_of(output))]
    body = helper.make_graph(nodes, graph.spec.name, inputs, outputs, initializers)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(body, opset_imports=opsets, producer_name="netc", producer_version=__version__,
                              doc_string=graph.spec.description or graph.spec.name)
    model.ir_version = helper.find_min_ir_version_for(opsets)  # older runtimes refuse newer IR versions
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:  # a netc bug, not the user's
        raise _error(f"the exported graph does not pass onnx.checker: {exc}", graph.spec.name,
                     "report this with the spec") from None
    return model


def export_onnx(loaded, weights: str | Path, out: str | Path, opset: int = DEFAULT_OPSET) -> ExportResult:
    """`netc export`: build the spec's graph, load the checkpoint, write `out` (.onnx)."""
    from netc.graph import build_graph
    from netc.runtime.checkpoint import load_weights

    _onnx()  # the missing package is the first thing to say
    graph = build_graph(loaded)
    values = load_weights(weights)
    ignored = check_weights(graph, values, str(weights))
    model = onnx_model(graph, values, opset, str(weights), loaded.smap.locate)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(model.SerializeToString())
        tmp.replace(out)
    except OSError as exc:
        raise _error(f"cannot write the model: {exc.strerror or exc}", out) from None
    output = graph.loss_input
    inputs = {name: ["N", *graph.inputs[name]] for name in graph.float_inputs + graph.index_inputs}
    return ExportResult(out, opset, inputs, output,
                        ["N", *graph.shape_of(output)], len(model.graph.node),
                        [i.name for i in model.graph.initializer], ignored)
