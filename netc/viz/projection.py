"""What a CNN learned, the lecture's way: input patterns reconstructed from feature maps (Zeiler &
Fergus 2014, deconvnet; Springenberg et al. 2015, guided backpropagation), occlusion sensitivity
(Zeiler & Fergus) and gradient saliency (Simonyan et al. 2014).

The data side of `netc viz reconstruct`, `netc viz occlusion` and `netc viz saliency`, without
matplotlib: arrays in, arrays out, so a notebook can draw its own figures.

    net = netc.load("specs/digits-cnn.yaml")
    proj = Projector(net, "w.safetensors", "relu2", "deconvnet")   # the compiled projection plan
    values = proj.activations(images)                  # [N, 32, 4, 4]: relu2 (conv2 + its relu)
    pictures = proj.project(images, signal)            # [N, 1, 8, 8]: a signal at relu2, projected
    pictures = reconstruct(net, "w.safetensors", images, "conv2", units)   # one unit kept per sample
    grads = input_gradients(net, "w.safetensors", images, classes)         # d score[class] / d image
    heat = saliency(net, "w.safetensors", images, classes)                 # |grads| max over channels
    occ = occlusion(net, "w.safetensors", image, label, size=3, fill=0.5, layer="conv2")

Every projection runs the network's own compiled backward (netc.compiler.projection): the
deconvnet and guided methods only swap the ReLU's backward rule; max pools route the signal
through the forward's switches and convolutions through their transposed filters, as the
paper's deconvnet does. Plans run on the Python tier (no glue to compile). `net` is a
`netc.load(...)` network or its graph; `weights` a checkpoint path or a dict of arrays named
like a state_dict (`Model.state_dict()`); `images` the samples of the image input [N, C, H, W]
(or a dict of every float input), normalized as in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from netc.ops.base import PROBABILITIES, REGISTRY, numel
from netc.viz.errors import viz_error


def _graph(net):
    """A network's graph (`netc.load(...)` gives a Network, which holds one)."""
    return getattr(net, "graph", net)


def stored_output(graph, layer: str) -> str:
    """The tensor a plan with separate pools stores for `layer`: its own, or the output of the
    activation fused into it (conv2 + relu2 store relu2 only)."""
    from netc.compiler import steps as passes

    for step in passes.fuse_activations(graph, passes.lower(graph)):
        if layer in step.covers:
            return step.output if step.node.name == layer and step.act is not None else layer
    raise KeyError(layer)


def score_tensor(graph) -> str:
    """The class scores a saliency map differentiates: the first loss's input, or, when that is a
    softmax or log_softmax, its input (the logits, as Simonyan et al. use)."""
    tensor = graph.loss_input
    node = graph.by_name.get(tensor)
    if node is not None and REGISTRY[node.op].is_(PROBABILITIES):
        tensor = node.inputs[0]
    return tensor


def image_input(graph, tensor: str) -> str:
    """The float input a projection from `tensor` reaches (the first, if several do)."""
    upstream = graph.upstream(tensor)
    found = [name for name in graph.float_inputs if name in upstream]
    if not found:
        raise viz_error(f"no float input lies upstream of '{tensor}': there is nothing to project onto")
    return found[0]


def _load_weights(model, weights) -> None:
    """Load a checkpoint (path) or a dict of arrays; refuse one that does not fit the graph."""
    from netc.runtime.checkpoint import load_weights

    values = load_weights(weights) if isinstance(weights, (str, Path)) else weights
    report = model.set_weights(values)
    if report.missing or report.mismatched:
        missing = ", ".join(report.missing + [m[0] for m in report.mismatched])
        raise viz_error(f"the weights do not fit {model.graph.spec.name} (missing or different: {missing})",
                        weights if isinstance(weights, (str, Path)) else "", "pass a checkpoint of this spec")


class Runner:
    """A network compiled with every layer's output stored (pools apart from convs), with its
    weights, on the Python tier: its forward pass over any number of samples in batches."""

    def __init__(self, net, weights, dtype: str | None = None, batch: int | None = None, projection=None):
        from netc.runtime.model import PYTHON, Model

        self.graph = _graph(net)
        self.model = Model(self.graph, dtype=dtype, batch=batch, fuse_pools=False, tier=PYTHON, projection=projection)
        _load_weights(self.model, weights)

    def arrays(self, images, source: str) -> dict[str, np.ndarray]:
        """Every float input's samples: `images` for `source` (or a dict of inputs), zeros for the rest."""
        arrays = dict(images) if isinstance(images, dict) else {source: np.asarray(images)}
        count = len(next(iter(arrays.values())))
        for name in self.graph.float_inputs:
            arrays.setdefault(name, np.zeros((count, *self.graph.inputs[name])))
        for name in self.graph.index_inputs:
            arrays.setdefault(name, np.zeros((count, *self.graph.inputs[name]), np.int64))
        return arrays

    def batches(self, arrays: dict[str, np.ndarray]) -> Iterator[tuple[int, int]]:
        """Runs the forward pass (evaluation mode) batch by batch; yields (start, n) with the batch's values
        in the arena (a projection runs its backward on it before the next)."""
        from netc.jit import prepare_threads

        model = self.model
        prepared = model.prepare(arrays)
        count = prepared["__count__"]
        module = model.module
        for start in range(0, count, model.batch):
            n = min(model.batch, count - start)
            part = {name: prepared[name][start:start + n] for name in self.graph.float_inputs + self.graph.index_inputs}
            part["__labels__"] = np.zeros(0, np.int64)
            model.stage(part, n)
            prepare_threads(model.blas_threads)
            module.forward(model.V, n, False)
            yield start, n

    def values(self, tensor: str, n: int) -> np.ndarray:
        """A copy of `tensor` [n, *shape] for the batch in the arena."""
        buffers = self.model.plan.buffers
        region = buffers.values[buffers.root(tensor)]
        flat = self.model.A[region.offset:region.offset + n * region.per_sample]
        return flat.reshape((n, *self.graph.shape_of(tensor))).copy()

    def forward(self, images, tensors: Iterable[str], source: str | None = None) -> dict[str, np.ndarray]:
        """`tensors` [N, *shape] for every sample of `images` (the image input's samples, or a dict)."""
        tensors = list(tensors)
        arrays = self.arrays(images, source or self.graph.float_inputs[0])
        out: dict[str, list] = {tensor: [] for tensor in tensors}
        for _, n in self.batches(arrays):
            for tensor in tensors:
                out[tensor].append(self.values(tensor, n))
        return {tensor: np.concatenate(parts) if parts else np.zeros((0, *self.graph.shape_of(tensor)))
                for tensor, parts in out.items()}


class Projector(Runner):
    """A network's projection plan with its weights: the forward pass, and the backward from `tensor`
    (a stored tensor: `stored_output(graph, layer)`) to the image input under `method` — "gradient"
    (the network's own backward), "deconvnet" (a ReLU passes the signal's positive part) or
    "guided" (a ReLU passes the signal where it and the forward input are both positive)."""

    def __init__(self, net, weights, tensor: str, method: str = "gradient", dtype: str | None = None,
                 batch: int | None = None):
        from netc.compiler.projection import METHODS, Projection

        if method not in METHODS:
            raise viz_error(f"unknown method '{method}'", hint=f"one of: {', '.join(METHODS)}")
        graph = _graph(net)
        try:
            super().__init__(graph, weights, dtype, batch, Projection(tensor, method))
        except ValueError as exc:  # a start that is not stored, an activation without a rule
            raise viz_error(str(exc), hint="see netc.viz.projection.missing_rules / stored_output") from None
        self.tensor, self.method = tensor, method
        self.source = image_input(graph, tensor)

    def activations(self, images) -> np.ndarray:
        """The start tensor [N, *shape] for the samples of the image input."""
        return self.forward(images, [self.tensor], self.source)[self.tensor]

    def project(self, images, signal: np.ndarray) -> np.ndarray:
        """The signal [N, *shape of the start tensor] projected to the image input: [N, *input shape]."""
        model, buffers = self.model, self.model.plan.buffers
        arrays = self.arrays(images, self.source)
        count = len(arrays[self.source])
        shape = tuple(self.graph.shape_of(self.tensor))
        signal = np.asarray(signal, np.float64)
        if signal.shape != (count, *shape):
            raise viz_error(f"the signal has shape {list(signal.shape)}; a projection from '{self.tensor}' of "
                            f"{count} samples needs {[count, *shape]}")
        start_grad = buffers.grads[buffers.root(self.tensor)]
        input_grad = buffers.grads[self.source]
        out = np.zeros((count, *self.graph.inputs[self.source]), np.float64)
        module = model.module
        for start, n in self.batches(arrays):
            model.D[start_grad.offset:start_grad.offset + n * start_grad.per_sample] = signal[start:start + n].ravel()
            module.backward(model.V, n, False)
            got = model.D[input_grad.offset:input_grad.offset + n * input_grad.per_sample]
            out[start:start + n] = got.reshape((n, *self.graph.inputs[self.source]))
        return out


def keep_units(values: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Zeiler & Fergus's signal: per sample i, the activation values[i] at units[i] = (map, y, x) only."""
    values, units = np.asarray(values), np.asarray(units, np.int64)
    signal = np.zeros(values.shape, np.float64)
    rows = np.arange(len(values))
    at = (rows, units[:, 0], units[:, 1], units[:, 2])
    signal[at] = values[at]
    return signal


def reconstruct(net, weights, images, layer: str, units, method: str = "deconvnet",
                dtype: str | None = None) -> np.ndarray:
    """Per sample i, the input pattern that activation (map, y, x) = units[i] of `layer` stands for:
    that one activation kept (the rest of the layer zeroed) and projected to the input by `method`.
    `layer` a conv layer (with its fused activation, as `netc viz patches` reads it): [N, C, H, W]."""
    graph = _graph(net)
    projector = Projector(graph, weights, stored_output(graph, layer), method, dtype)
    return projector.project(images, keep_units(projector.activations(images), units))


def _one_hot(classes, count: int, k: int) -> np.ndarray:
    classes = np.broadcast_to(np.asarray(classes, np.int64), (count,))
    bad = (classes < 0) | (classes >= k)
    if bad.any():
        raise viz_error(f"class {int(classes[bad][0])} is out of range: the scores have {k} classes (0..{k - 1})")
    signal = np.zeros((count, k), np.float64)
    signal[np.arange(count), classes] = 1.0
    return signal


def input_gradients(net, weights, images, classes, dtype: str | None = None) -> np.ndarray:
    """The gradient of each sample's class score (`classes`: one per sample, or one for all; the
    score is the logit: score_tensor) with respect to the image input: [N, *input shape]."""
    graph = _graph(net)
    tensor = score_tensor(graph)
    projector = Projector(graph, weights, tensor, "gradient", dtype)
    images = projector.arrays(images, projector.source)
    count = len(images[projector.source])
    return projector.project(images, _one_hot(classes, count, numel(graph.shape_of(tensor))))


def saliency(net, weights, images, classes, dtype: str | None = None) -> np.ndarray:
    """Simonyan et al.'s saliency map: |d score[class] / d image|, the maximum over the channels of
    an image input [C, H, W]: [N, H, W] (for other inputs, the absolute gradient)."""
    grads = np.abs(input_gradients(net, weights, images, classes, dtype))
    return grads.max(axis=1) if grads.ndim == 4 else grads


def class_probabilities(graph, scores: np.ndarray) -> tuple[np.ndarray, str]:
    """(values, what): the classes' probabilities from the first loss's input — softmax of logits,
    exp of log-probabilities, a softmax's own output — or, for an mse loss, its outputs ("score")."""
    loss = graph.losses[0]
    node = graph.by_name.get(graph.loss_input)
    scores = np.asarray(scores, np.float64)
    if node is not None and node.op == "log_softmax":
        return np.exp(scores), "probability"
    if node is not None and node.op == "softmax":
        return scores, "probability"
    if loss.op == "cross_entropy":
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True), "probability"
    return scores, "score"


@dataclass
class Occlusion:
    """Zeiler & Fergus's occlusion sensitivity of one image: a square of `size` cells set to `fill`
    at every position (tops x lefts, `stride` apart, inside the image) and what the network says."""

    size: int
    stride: int
    tops: np.ndarray  # [rows] top row of the square at each map row
    lefts: np.ndarray  # [cols]
    label: int
    what: str  # "probability", or "score" (an mse loss)
    probability: np.ndarray  # [rows, cols] probability (or score) of `label` with the square there
    baseline: float  # ... without the square
    layer: str | None = None
    tensor: str | None = None  # the tensor read for the layer (its own, or its fused activation)
    feature_map: int | None = None  # the layer's map with the strongest unit on the whole image
    activity: np.ndarray | None = None  # [rows, cols] that map's total activation with the square there
    activity_baseline: float | None = None


def occlusion(net, weights, image: np.ndarray, label: int, size: int, stride: int = 1, fill=0.0,
              layer: str | None = None, dtype: str | None = None, runner: Runner | None = None) -> Occlusion:
    """Slide a square of `size` x `size` cells, set to `fill` (a number or one per channel), over
    `image` [C, H, W] in steps of `stride` and record the probability of class `label`; with
    `layer`, also the total activation of its feature map that responds most strongly to the whole
    image (the paper's Fig. 7 b). Every occluded copy is one sample of one forward pass."""
    graph = _graph(net)
    image = np.asarray(image, np.float64)
    channels, height, width = image.shape
    if size < 1 or size > min(height, width):
        raise viz_error(f"occluder size {size} does not fit the image {height}x{width}",
                        hint=f"a size from 1 to {min(height, width)}")
    if stride < 1:
        raise viz_error(f"occluder stride {stride} must be at least 1")
    tops, lefts = np.arange(0, height - size + 1, stride), np.arange(0, width - size + 1, stride)
    fill = np.broadcast_to(np.asarray(fill, np.float64).reshape(-1, 1, 1), (channels, 1, 1))
    copies = np.repeat(image[None], len(tops) * len(lefts) + 1, axis=0)  # the last one unoccluded
    for i, top in enumerate(tops):
        for j, left in enumerate(lefts):
            copies[i * len(lefts) + j, :, top:top + size, left:left + size] = fill
    runner = runner or Runner(graph, weights, dtype)
    tensor = stored_output(graph, layer) if layer is not None else None
    source = image_input(graph, graph.loss_input)
    got = runner.forward(copies, [graph.loss_input] + ([tensor] if tensor else []), source)
    probabilities, what = class_probabilities(graph, got[graph.loss_input])
    k = probabilities.shape[1]
    if not 0 <= label < k:
        raise viz_error(f"class {label} is out of range: the scores have {k} classes (0..{k - 1})")
    p = probabilities[:, label]
    result = Occlusion(size, stride, tops, lefts, int(label), what, p[:-1].reshape(len(tops), len(lefts)),
                       float(p[-1]), layer, tensor)
    if tensor is not None:
        values = got[tensor].reshape(len(copies), graph.shape_of(tensor)[0], -1)
        strongest = int(np.argmax(values[-1].max(axis=1)))
        totals = values[:, strongest].sum(axis=1)
        result.feature_map = strongest
        result.activity = totals[:-1].reshape(len(tops), len(lefts))
        result.activity_baseline = float(totals[-1])
    return result
