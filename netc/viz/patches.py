"""`netc viz patches`: the input patches the strongest feature maps of a layer respond to, as one
picture (netc.viz.fields finds them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netc.viz.fields import ReceptiveField, strongest_patches
from netc.viz.figures import DPI, Picture, mosaic_figure, normalise, save, show_mosaic, tile_mosaic


@dataclass
class PatchesResult(Picture):
    layer: str = ""
    tensor: str = ""  # the tensor read: the layer's own, or the activation fused into it
    activation: str | None = None  # the fused activation when the values are post-activation
    maps: list[int] = field(default_factory=list)  # feature maps shown, strongest first
    values: np.ndarray | None = None  # [maps, per_map] activations of the shown units
    samples: np.ndarray | None = None  # [maps, per_map] sample index of each patch
    units: np.ndarray | None = None  # [maps, per_map, 2] (y, x) of each unit in the layer's output
    rf: ReceptiveField | None = None
    count: int = 0  # samples looked at


def plot_patches(loaded, weights: str | Path, layer: str, out: str | Path, which: str = "eval", top: int = 8,
                 per_map: int = 8, dpi: int = DPI) -> PatchesResult:
    """`netc viz patches`: for the `top` feature maps of `layer` with the largest activation over the
    data, the `per_map` input patches (receptive fields of each sample's strongest unit) that excite
    the map most — one sample per patch, as in Zeiler & Fergus's visualisations."""
    found = strongest_patches(loaded, weights, layer, which, top, per_map)
    rf, maps, values, patches = found.rf, found.maps, found.values, found.patches
    top, per_map = found.samples.shape  # as asked, or fewer when the layer or the data has fewer
    in_channels = patches.shape[2]
    rgb = in_channels == 3
    scaled, _, _ = normalise(patches)
    if rgb:
        tiles = scaled.transpose(0, 1, 3, 4, 2).reshape((top * per_map,) + rf.size + (3,))
    else:
        merged = scaled.mean(axis=2)  # padding is NaN in every channel, so it stays NaN
        tiles = merged.reshape((top * per_map,) + rf.size)
    mosaic = tile_mosaic(tiles, top, per_map)
    activation = found.activation
    values_are = f"values after the {activation} fused into {layer}" if activation else "values of the layer output"
    merged_note = "" if in_channels in (1, 3) else f"; mean of {in_channels} input channels"
    title = (f"{found.spec_name} {layer}: top {top} of {found.channels} feature maps over {found.count} {which} "
             f"samples\n"
             f"each row: the {per_map} inputs whose strongest unit excites the map most ({values_are})\n"
             f"patch = receptive field {rf.size[0]}×{rf.size[1]} (stride {rf.jump[0]}); "
             f"orange: zero padding outside the image{merged_note}")
    figure, axes, size = mosaic_figure(mosaic, title, 8, target=640, left=1.2, dpi=dpi)
    show_mosaic(axes, mosaic, rgb)
    cell = rf.size[0] + 1
    axes.set_yticks([1 + i * cell + rf.size[0] / 2 - 0.5 for i in range(top)])
    axes.set_yticklabels([f"map {c}  max {values[i, 0]:.3g}" for i, c in enumerate(maps)], fontsize=7)
    axes.tick_params(axis="y", length=0)
    path, size = save(figure, out, size)
    return PatchesResult(path, size, layer=layer, tensor=found.tensor, activation=activation,
                         maps=[int(c) for c in maps], values=values, samples=found.samples, units=found.units, rf=rf,
                         count=found.count)
