"""What a layer's units see and how strongly they respond: receptive fields, input patches and
activations read from the compiled forward pass.

The data side of `netc viz patches`, without matplotlib: it can be computed, checked and tested
on its own (netc.viz.patches draws it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netc.errors import Location
from netc.ops.base import ELEMENTWISE, WINDOW, ops_in
from netc.runtime.activations import layer_activations, stored_tensor  # noqa: F401  (read here)
from netc.viz.errors import viz_error
from netc.viz.layers import layer_node


def window_ops() -> tuple[str, ...]:
    """Ops whose geometry a receptive field composes (conv, pools)."""
    return ops_in(WINDOW)


def field_ops() -> tuple[str, ...]:
    """Ops a receptive field passes through: windows, and element-wise ops, which do not change it."""
    return window_ops() + ops_in(ELEMENTWISE)


@dataclass(frozen=True)
class ReceptiveField:
    """Which input cells a unit (y, x) of a layer sees: rows `offset[0] + y * jump[0]` onwards,
    `size[0]` of them (cells outside the input are padding), likewise for columns."""

    source: str  # the graph input at the start of the path
    size: tuple[int, int]
    jump: tuple[int, int]
    offset: tuple[int, int]
    path: tuple[str, ...]  # layers from the input to the layer

    def window(self, y: int, x: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), bottom/right exclusive, in input coordinates (may lie outside)."""
        top, left = self.offset[0] + y * self.jump[0], self.offset[1] + x * self.jump[1]
        return top, left, top + self.size[0], left + self.size[1]


def receptive_field(graph, layer: str, loaded=None) -> ReceptiveField:
    """Compose kernel, stride and padding of the conv/pool layers between an image input and `layer`."""
    from netc.ops.conv import conv_geometry

    path = []
    name = layer
    while name not in graph.inputs:
        node = graph.by_name[name]
        if node.op not in field_ops() or len(node.inputs) != 1:
            where = loaded.smap.locate(node.spec_path) if loaded is not None else Location()
            raise viz_error(f"cannot trace input patches through '{node.name}' ({node.op}): a patch is defined "
                            f"only along one path of conv, pool and element-wise layers from an image input",
                            where, f"pick a conv or pool layer before any {node.op} layer",
                            node.spec_path_text)
        path.append(node)
        name = node.inputs[0]
    source = name
    if len(graph.inputs[source]) != 3:
        raise viz_error(f"input '{source}' has shape {list(graph.inputs[source])}, not an image "
                        f"[channels, height, width]",
                        loaded.smap.locate(("inputs", source)) if loaded is not None else Location(),
                        "input patches need an image input [C, H, W]")
    size, jump, offset = [1, 1], [1, 1], [0, 0]
    for node in reversed(path):
        if node.op in window_ops():
            kh, kw, sh, sw, ph, pw = conv_geometry(node.layer, graph.shape_of(node.inputs[0]))
            for axis, (k, s, p) in enumerate(((kh, sh, ph), (kw, sw, pw))):
                size[axis] += (k - 1) * jump[axis]
                offset[axis] -= p * jump[axis]
                jump[axis] *= s
    return ReceptiveField(source, tuple(size), tuple(jump), tuple(offset), tuple(n.name for n in reversed(path)))


def read_patch(image: np.ndarray, rf: ReceptiveField, y: int, x: int) -> np.ndarray:
    """The input cells [C, size_h, size_w] unit (y, x) sees; cells outside the image are NaN (padding)."""
    channels, height, width = image.shape
    top, left, bottom, right = rf.window(y, x)
    patch = np.full((channels, rf.size[0], rf.size[1]), np.nan, np.float64)
    t, l, b, r = max(top, 0), max(left, 0), min(bottom, height), min(right, width)
    if t < b and l < r:
        patch[:, t - top:b - top, l - left:r - left] = image[:, t:b, l:r]
    return patch


def rank_maps(batches: Iterable[tuple[int, np.ndarray]], count: int, shape: tuple, top: int, per_map: int,
              maps: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(maps [top], values [top, per_map], samples [top, per_map], units [top, per_map, 2]) from a layer's
    activations [n, C, H, W] in batches (start, values) over `count` samples: the `top` feature maps
    with the largest activation (or the given `maps`, in their order), each with the `per_map`
    samples whose strongest unit in it is strongest, that unit's value and (y, x)."""
    channels, width = shape[0], shape[2]
    best = np.zeros((count, channels), np.float64)  # each sample's strongest unit per map ...
    where = np.zeros((count, channels), np.int64)  # ... and its flat position
    for start, values in batches:
        flat = values.reshape(len(values), channels, -1)
        where[start:start + len(values)] = flat.argmax(axis=2)
        best[start:start + len(values)] = flat.max(axis=2)
    per_map = min(per_map, count)
    if maps is None:
        maps = np.argsort(-best.max(axis=0), kind="stable")[:min(top, channels)]
    maps = np.asarray(list(maps), np.int64)
    samples = np.stack([np.argsort(-best[:, c], kind="stable")[:per_map] for c in maps])
    values = np.take_along_axis(best[:, maps].T, samples, axis=1)
    units = np.stack([np.stack(np.divmod(where[samples[i], c], width), axis=1) for i, c in enumerate(maps)])
    return maps, values, samples, units


@dataclass
class StrongestPatches:
    """For the strongest feature maps of a layer, the input patches that excite each map most."""

    spec_name: str
    layer: str
    tensor: str  # the tensor read: the layer's own, or the activation fused into it
    activation: str | None  # the fused activation when the values are post-activation
    channels: int  # feature maps of the layer
    count: int  # samples looked at
    maps: np.ndarray  # [top] feature maps shown, strongest first
    values: np.ndarray  # [top, per_map] activations of the shown units
    samples: np.ndarray  # [top, per_map] sample index of each patch
    units: np.ndarray  # [top, per_map, 2] (y, x) of each unit in the layer's output
    patches: np.ndarray  # [top, per_map, C, h, w] input cells, NaN outside the image
    rf: ReceptiveField


def strongest_patches(loaded, weights: str | Path, layer: str, which: str = "eval", top: int = 8,
                      per_map: int = 8) -> StrongestPatches:
    """The `top` feature maps of `layer` with the largest activation over the data, and for each the
    `per_map` input patches (receptive fields of each sample's strongest unit) that excite it most —
    one sample per patch, as in Zeiler & Fergus's visualisations."""
    from netc.graph import build_graph
    from netc.runtime.checkpoint import load_weights
    from netc.runtime.data import load_dataset
    from netc.runtime.model import Model

    graph = build_graph(loaded)
    node = layer_node(loaded, graph, layer, field_ops(), "layers with feature maps", maps=True)
    rf = receptive_field(graph, layer, loaded)
    train = load_dataset(loaded, "train")
    data = train if which == "train" else load_dataset(loaded, which, train.stats)
    model = Model(graph, fuse_pools=False)  # every conv output stored, to be read
    report = model.set_weights(load_weights(weights))
    if report.missing or report.mismatched:
        missing = ", ".join(report.missing + [m[0] for m in report.mismatched])
        raise viz_error(f"the checkpoint does not fit {graph.spec.name} (missing or different: {missing})", weights,
                        "pass a checkpoint of this spec")
    tensor, activation = stored_tensor(model.plan, layer)
    channels = node.shape[0]
    count = len(data)
    maps, values, samples, units = rank_maps(layer_activations(model, data.arrays, tensor), count, node.shape, top,
                                             per_map)
    top = len(maps)
    images = data.arrays[rf.source]
    patches = np.stack([[read_patch(images[s], rf, int(y), int(x)) for s, (y, x) in zip(samples[i], units[i])]
                        for i in range(top)])  # [top, per_map, C, h, w]
    return StrongestPatches(graph.spec.name, layer, tensor, activation, channels, count, maps, values, samples,
                            units, patches, rf)
