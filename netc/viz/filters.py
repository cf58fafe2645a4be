"""`netc viz filters`: the filters of a conv layer as a grid of tiles."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netc.ops.base import FILTERS, ops_in
from netc.viz.errors import viz_error
from netc.viz.figures import DPI, Picture, mosaic_figure, normalise, save, show_mosaic, tile_mosaic
from netc.viz.layers import layer_node


@dataclass
class FiltersResult(Picture):
    tiles: int = 0  # filters x channels (filters for RGB tiles)
    grid: tuple[int, int] = (0, 0)  # (rows, columns) of tiles
    rgb: bool = False
    weight_shape: tuple[int, ...] = ()


def plot_filters(weight: np.ndarray, out: str | Path, layer: str = "", title: str | None = None,
                 dpi: int = DPI) -> FiltersResult:
    """A conv weight [filters, channels, kh, kw] as a grid of tiles, normalised together to the
    layer's min..max (as Caffe's `vis_square`): one RGB tile per filter for 3 input channels,
    otherwise one grayscale tile per (filter, channel) — a row per filter when channels > 1."""
    weight = np.asarray(weight, np.float64)
    if weight.ndim != 4:
        raise viz_error(f"filters are a 4-d conv weight [filters, channels, kh, kw], got shape {list(weight.shape)}")
    filters, channels, kh, kw = weight.shape
    scaled, low, high = normalise(weight)
    rgb = channels == 3
    if rgb:
        tiles = scaled.transpose(0, 2, 3, 1)  # [F, kh, kw, 3]
        cols = math.ceil(math.sqrt(filters))
        rows = math.ceil(filters / cols)
    elif channels == 1:
        tiles = scaled[:, 0]
        cols = math.ceil(math.sqrt(filters))
        rows = math.ceil(filters / cols)
    else:
        tiles = scaled.reshape(filters * channels, kh, kw)
        rows, cols = filters, channels
    mosaic = tile_mosaic(tiles, rows, cols)
    name = layer or "filters"
    heading = title or (f"{name}: weight {list(weight.shape)} — {filters} filters"
                        + ("" if rgb or channels == 1 else f" × {channels} input channels"))
    detail = f"{'RGB' if rgb else 'gray'} tiles, one scale for the layer: black {low:.3g} … white {high:.3g}"
    if not rgb and channels > 1:
        detail += "; rows: filters, columns: input channels"
    figure, axes, size = mosaic_figure(mosaic, f"{heading}\n{detail}", 9, dpi=dpi)
    show_mosaic(axes, mosaic, rgb)
    path, size = save(figure, out, size)
    return FiltersResult(path, size, tiles=len(tiles), grid=(rows, cols), rgb=rgb,
                         weight_shape=tuple(weight.shape))


def filters_from_checkpoint(loaded, weights: str | Path, layer: str, out: str | Path, dpi: int = DPI) -> FiltersResult:
    """`netc viz filters`: the filters of conv layer `layer` as stored in a checkpoint."""
    from netc.graph import build_graph
    from netc.runtime.checkpoint import load_weights

    graph = build_graph(loaded)
    node = layer_node(loaded, graph, layer, ops_in(FILTERS), "conv layers")
    values = load_weights(weights)
    key = f"{node.param_owner}.weight"
    expected = tuple(node.param_shapes.get("weight") or graph.by_name[node.param_owner].param_shapes["weight"])
    if key not in values:
        held = sorted(values)
        listing = ", ".join(held[:12]) + (", ..." if len(held) > 12 else "")
        raise viz_error(f"the checkpoint has no tensor '{key}' for layer '{layer}'", weights,
                        f"is it a checkpoint of {graph.spec.name}? it holds: {listing or 'nothing'}")
    weight = values[key]
    if tuple(weight.shape) != expected:
        raise viz_error(f"checkpoint tensor '{key}' has shape {list(weight.shape)}, but {layer} in "
                        f"{graph.spec.name} needs {list(expected)}", weights,
                        "the checkpoint belongs to another version of the spec")
    shared = f" (shared from {node.param_owner})" if node.owner else ""
    filters, channels = weight.shape[:2]
    title = (f"{graph.spec.name} {layer}{shared}: weight {list(weight.shape)}"
             + ("" if channels in (1, 3) else f" — {filters} filters × {channels} input channels"))
    return plot_filters(weight, out, layer, title, dpi)
