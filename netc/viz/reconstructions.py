"""`netc viz reconstruct`: for the strongest feature maps of a conv layer, the input patterns their
strongest activations stand for (Zeiler & Fergus 2014), beside the input patches that caused them.

The lecture's four steps: train a CNN, run many examples forward, find the patches that activate a
feature map most (`netc viz patches`), and reconstruct the input pattern from the feature map: keep
only that one activation, zero the rest of the layer, and project it back to the input through the
layers below (netc.viz.projection, on the plan's own backward with the method's ReLU rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netc.ops.base import FILTERS, ops_in
from netc.viz.errors import viz_error
from netc.viz.fields import ReceptiveField, rank_maps, read_patch, receptive_field
from netc.viz.figures import DPI, Picture, mosaic_figure, normalise, save, show_mosaic, tile_mosaic
from netc.viz.layers import layer_node
from netc.viz.projection import Projector, keep_units, stored_output

# what each method does at a ReLU, for titles and help
METHOD_RULES = {
    "deconvnet": "deconvnet (a ReLU passes the signal's positive part)",
    "guided": "guided backpropagation (a ReLU passes the signal where it and the forward input are positive)",
    "gradient": "gradient (the network's own backward)",
}


@dataclass
class Reconstructions:
    """Per shown feature map (a row) and strongest activation (a column): the sample, the unit, its
    input patch and the reconstruction, both cropped to the unit's receptive field."""

    spec_name: str
    layer: str
    tensor: str  # the tensor projected from: the layer's own, or the activation fused into it
    activation: str | None  # that fused activation
    method: str
    channels: int  # feature maps of the layer
    count: int  # samples looked at
    maps: np.ndarray  # [top]
    values: np.ndarray  # [top, per_map] the kept activations
    samples: np.ndarray  # [top, per_map]
    units: np.ndarray  # [top, per_map, 2] (y, x) in the layer's output
    patches: np.ndarray  # [top, per_map, C, h, w] input cells, NaN outside the image
    reconstructions: np.ndarray  # [top, per_map, C, h, w] the projections, cropped alike
    full: np.ndarray = field(repr=False, default=None)  # [top, per_map, C, H, W] the projections, whole
    rf: ReceptiveField | None = None


def check_method(loaded, graph, layer: str, tensor: str, method: str) -> None:
    """A method with its own ReLU rule needs one at every activation from the layer's own down (sigmoid,
    tanh ... have none): the first that lacks one is named, with where it is in the spec."""
    from netc.compiler.projection import missing_rules

    unruled = missing_rules(graph, tensor, method)
    if unruled:
        node = unruled[-1]  # the nearest to the layer
        where = f"{layer}'s own activation '{node.name}'" if node.name == tensor else f"'{node.name}' below {layer}"
        hint = "use --method gradient" + ("" if node.name == tensor else f", or pick a conv layer before '{node.name}'")
        raise viz_error(f"the {method} method has a backward rule for relu only, and {where} is a {node.op} layer",
                        loaded.smap.locate(node.spec_path), hint, node.spec_path_text)


def top_reconstructions(loaded, weights: str | Path, layer: str, method: str = "deconvnet", which: str = "eval",
                        top: int = 8, per_map: int = 6, maps: list[int] | None = None) -> Reconstructions:
    """The `top` feature maps of conv layer `layer` with the largest activation over the data (or the
    given `maps`), each with its `per_map` strongest activations (one per sample, as `netc viz
    patches` finds them), each projected alone to the input by `method`."""
    from netc.graph import build_graph
    from netc.runtime.data import load_dataset

    graph = build_graph(loaded)
    node = layer_node(loaded, graph, layer, ops_in(FILTERS), "conv layers", maps=True)
    rf = receptive_field(graph, layer, loaded)
    tensor = stored_output(graph, layer)
    check_method(loaded, graph, layer, tensor, method)
    channels = node.shape[0]
    for c in maps or ():
        if not 0 <= c < channels:
            raise viz_error(f"feature map {c} is out of range: {layer} has {channels} maps (0..{channels - 1})",
                            loaded.smap.locate(node.spec_path), "pass --map values in that range",
                            node.spec_path_text)
    train = load_dataset(loaded, "train")
    data = train if which == "train" else load_dataset(loaded, which, train.stats)
    projector = Projector(graph, weights, tensor, method)
    images = data.arrays[rf.source]
    count = len(images)

    def activations():
        arrays = projector.arrays(images, rf.source)
        for start, n in projector.batches(arrays):
            yield start, projector.values(tensor, n)

    maps, values, samples, units = rank_maps(activations(), count, node.shape, top, per_map, maps)
    top, per_map = samples.shape
    chosen = images[samples.ravel()]
    kept = np.concatenate([np.repeat(maps, per_map)[:, None], units.reshape(-1, 2)], axis=1)  # (map, y, x) each
    signal = keep_units(projector.activations(chosen), kept)
    full = projector.project(chosen, signal)  # [top * per_map, C, H, W]
    ys, xs = units.reshape(-1, 2).T
    patches = np.stack([read_patch(image, rf, int(y), int(x)) for image, y, x in zip(chosen, ys, xs)])
    crops = np.stack([read_patch(r, rf, int(y), int(x)) for r, y, x in zip(full, ys, xs)])
    shape = (top, per_map) + patches.shape[1:]
    activation = graph.by_name[tensor].op if tensor != layer else None
    return Reconstructions(graph.spec.name, layer, tensor, activation, method, channels,
                           count, maps, values, samples, units, patches.reshape(shape), crops.reshape(shape),
                           full.reshape((top, per_map) + full.shape[1:]), rf)


@dataclass
class ReconstructResult(Picture):
    found: Reconstructions | None = None


def _signed(values: np.ndarray) -> np.ndarray:
    """Each map's reconstructions to [0, 1] with one scale: 0 is mid-gray, the largest |value| of the map
    black or white (NaN stays NaN)."""
    out = np.empty_like(values)
    for i, row in enumerate(values):
        finite = np.abs(row[np.isfinite(row)])
        peak = float(finite.max()) if finite.size else 0.0
        out[i] = 0.5 + 0.5 * row / peak if peak > 0 else np.where(np.isfinite(row), 0.5, np.nan)
    return out


def _tiles(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """[rows, k, C, h, w] in [0, 1] -> tiles [rows * k, h, w(, 3)]: RGB for 3 channels, else the mean."""
    rows, k, channels, h, w = values.shape
    if channels == 3:
        return values.transpose(0, 1, 3, 4, 2).reshape(rows * k, h, w, 3), True
    return values.mean(axis=2).reshape(rows * k, h, w), False


def plot_reconstructions(loaded, weights: str | Path, layer: str, out: str | Path, method: str = "deconvnet",
                         which: str = "eval", top: int = 8, per_map: int = 6, maps: list[int] | None = None,
                         dpi: int = DPI) -> ReconstructResult:
    """`netc viz reconstruct`: one row per feature map — its `per_map` reconstructions (left, one
    shared scale per map, gray = 0) beside the input patches that produced them (right)."""
    found = top_reconstructions(loaded, weights, layer, method, which, top, per_map, maps)
    rf, top, per_map = found.rf, *found.samples.shape
    recon, rgb = _tiles(_signed(found.reconstructions))
    patches, _ = _tiles(normalise(found.patches)[0])
    blank = np.full((top, 1) + recon.shape[1:], np.inf)  # a gap tile between the two halves
    rows = np.concatenate([recon.reshape((top, per_map) + recon.shape[1:]), blank,
                           patches.reshape((top, per_map) + patches.shape[1:])], axis=1)
    mosaic = tile_mosaic(rows.reshape((-1,) + recon.shape[1:]), top, 2 * per_map + 1)
    channels = found.patches.shape[2]
    merged = "" if channels in (1, 3) else f"; mean of {channels} input channels"
    after = f" (after the fused {found.activation})" if found.activation else ""
    title = (f"{found.spec_name} {layer}{after}: {method} reconstructions of the top {top} of {found.channels} "
             f"feature maps over {found.count} {which} samples\n"
             f"each row: the map's {per_map} strongest activations (one per sample), each kept alone and "
             f"projected to the input (left; one scale per map, gray = 0),\n"
             f"beside the input patches that produced them (right); receptive field {rf.size[0]}×{rf.size[1]}, "
             f"orange: outside the image{merged}")
    figure, axes, size = mosaic_figure(mosaic, title, 8, target=720, left=1.2, dpi=dpi)
    show_mosaic(axes, mosaic, rgb)
    cell = rf.size[0] + 1
    axes.set_yticks([1 + i * cell + rf.size[0] / 2 - 0.5 for i in range(top)])
    axes.set_yticklabels([f"map {c}  max {found.values[i, 0]:.3g}" for i, c in enumerate(found.maps)], fontsize=7)
    axes.tick_params(axis="y", length=0)
    path, size = save(figure, out, size)
    return ReconstructResult(path, size, found=found)
