"""`netc viz occlusion` and `netc viz saliency`: where in an input the network's decision sits.

Occlusion (Zeiler & Fergus 2014, Fig. 7): a gray square slid over the image, the probability of the
true class (and the total activation of a layer's strongest feature map) recorded at every position.
Saliency (Simonyan et al. 2014): the gradient of a class score with respect to the input, its
absolute value's maximum over the channels. The arrays come from netc.viz.projection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netc.ops.base import FILTERS, WINDOW, ops_in
from netc.viz.errors import viz_error
from netc.viz.figures import DPI, Picture, new_figure, save
from netc.viz.layers import layer_node
from netc.viz.projection import Occlusion, Runner, class_probabilities, image_input, occlusion, saliency, score_tensor

FILLS = ("gray", "mean")  # what the occluding square holds: the middle of the data's range, or its mean


@dataclass
class Chosen:
    """Samples of one split picked by index, with what the pictures need about the network."""

    graph: object
    source: str  # the image input
    which: str
    count: int  # samples in the split
    samples: list[int]
    images: np.ndarray  # [k, C, H, W]
    labels: np.ndarray  # [k]
    data: np.ndarray = field(repr=False, default=None)  # every image of the split (for the fill)

    @property
    def span(self) -> tuple[float, float]:
        """The split's value range: what the pictures scale the inputs by (one scale for all of them)."""
        return float(self.data.min()), float(self.data.max())


def choose_samples(loaded, which: str, samples: list[int]) -> Chosen:
    """The samples at `samples` of the `which` split (normalized as in training), checked: a
    classifier with an image input [C, H, W], indices in range."""
    from netc.graph import build_graph
    from netc.runtime.data import load_dataset

    graph = build_graph(loaded)
    label = graph.label_input
    if label is None or graph.losses[0].target != label:
        raise viz_error(f"{graph.spec.name} has no class labels for its first loss, so there is no true class to "
                        "explain", loaded.smap.locate(("loss",)), "these pictures need a classifier (int64 labels "
                        "with `classes`)")
    source = image_input(graph, score_tensor(graph))
    if len(graph.inputs[source]) != 3:
        raise viz_error(f"input '{source}' has shape {list(graph.inputs[source])}, not an image "
                        "[channels, height, width]", loaded.smap.locate(("inputs", source)),
                        "these pictures are heat maps over an image input")
    train = load_dataset(loaded, "train")
    data = train if which == "train" else load_dataset(loaded, which, train.stats)
    count = len(data)
    for s in samples:
        if not 0 <= s < count:
            raise viz_error(f"sample {s} is out of range: the {which} data has {count} samples (0..{count - 1})",
                            loaded.smap.locate(("data", which)), "pass --sample values in that range")
    images = data.arrays[source]
    return Chosen(graph, source, which, count, list(samples), images[samples], data.arrays[label][samples], images)


def _show_image(axes, image: np.ndarray, low: float, high: float) -> None:
    """An input [C, H, W] scaled from the data's range low..high: RGB for 3 channels, else gray (the mean)."""
    scaled = np.clip((image - low) / (high - low), 0, 1) if high > low else np.full(image.shape, 0.5)
    if scaled.shape[0] == 3:
        axes.imshow(scaled.transpose(1, 2, 0), interpolation="nearest")
    else:
        axes.imshow(scaled.mean(axis=0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")


def _text_width(text: str, fontsize: int) -> float:
    """About the inches a title's longest line takes (as figures.mosaic_figure reckons)."""
    return max(len(line) for line in text.splitlines()) * fontsize * 0.55 / 72 + 0.4


def _bare(axes) -> None:
    axes.set_xticks([])
    axes.set_yticks([])


# --------------------------------------------------------------------------------------- saliency


@dataclass
class SaliencyResult(Picture):
    samples: list[int] = field(default_factory=list)
    classes: list[int] = field(default_factory=list)  # the class each map is of
    predicted: list[int] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)  # of `classes`
    score: str = ""  # the tensor differentiated (the logits)
    maps: np.ndarray | None = None  # [k, H, W]


def plot_saliency(loaded, weights: str | Path, out: str | Path, samples: list[int], which: str = "eval",
                  klass: int | None = None, dpi: int = DPI) -> SaliencyResult:
    """`netc viz saliency`: each sample (a column) above its saliency map for its true class (or `klass`)."""
    chosen = choose_samples(loaded, which, samples)
    graph = chosen.graph
    runner = Runner(graph, weights)
    scores = runner.forward(chosen.images, [graph.loss_input], chosen.source)[graph.loss_input]
    probabilities, what = class_probabilities(graph, scores)
    k = probabilities.shape[1]
    if klass is not None and not 0 <= klass < k:
        raise viz_error(f"class {klass} is out of range: {graph.spec.name} has {k} classes (0..{k - 1})")
    classes = chosen.labels if klass is None else np.full(len(samples), klass)
    maps = saliency(graph, weights, chosen.images, classes)
    predicted = probabilities.argmax(axis=1)
    tensor = score_tensor(graph)
    cols = len(samples)
    target = "their true class" if klass is None else f"class {klass}"
    title = (f"{graph.spec.name}: saliency of {cols} {which} samples for {target}\n"
             f"|d {tensor}[class] / d {chosen.source}|, the largest over the channels;\n"
             f"each map scaled to its own maximum (black 0, white the maximum)")
    width = max(1.7 * cols + 0.4, _text_width(title, 9))
    figure, size = new_figure(width, 4.6, dpi)
    axes = figure.subplots(2, cols, squeeze=False)
    side = (1.7 * cols + 0.4) / width  # the panels' share of the width, centred
    figure.subplots_adjust(left=(1 - side) / 2 + 0.02, right=(1 + side) / 2 - 0.02, top=0.74, bottom=0.03,
                           wspace=0.08, hspace=0.32)
    for j, (s, image, heat) in enumerate(zip(samples, chosen.images, maps)):
        _show_image(axes[0, j], image, *chosen.span)
        c = int(classes[j])
        axes[0, j].set_title(f"#{s}: label {int(chosen.labels[j])}\npredicted {int(predicted[j])}", fontsize=8)
        peak = float(heat.max())
        axes[1, j].imshow(heat, cmap="hot", vmin=0, vmax=peak if peak > 0 else 1, interpolation="nearest")
        axes[1, j].set_title(f"class {c}: {what} {probabilities[j, c]:.2f}\nmax |grad| {peak:.3g}", fontsize=8)
        _bare(axes[0, j])
        _bare(axes[1, j])
    figure.text(0.5, 0.985, title, ha="center", va="top", fontsize=9)
    path, size = save(figure, out, size)
    return SaliencyResult(path, size, samples=list(samples), classes=[int(c) for c in classes],
                          predicted=[int(p) for p in predicted],
                          probabilities=[float(probabilities[j, int(c)]) for j, c in enumerate(classes)],
                          score=tensor, maps=maps)


# --------------------------------------------------------------------------------------- occlusion


@dataclass
class OcclusionResult(Picture):
    samples: list[int] = field(default_factory=list)
    maps: list[Occlusion] = field(default_factory=list)
    fill: np.ndarray | None = None  # the square's value per channel


def fill_value(images: np.ndarray, fill: str) -> np.ndarray:
    """The occluder's value per channel over a split's images [N, C, H, W]: "gray", the middle of
    each channel's range; "mean", each channel's mean."""
    if fill == "mean":
        return images.mean(axis=(0, 2, 3))
    return (images.min(axis=(0, 2, 3)) + images.max(axis=(0, 2, 3))) / 2


def _heat(axes, figure, values: np.ndarray, occ: Occlusion, shape, cmap: str, vmin=None, vmax=None) -> None:
    """An occlusion map drawn over the image's frame: each cell at the centre of its square."""
    height, width = shape
    half = (occ.size - 1) / 2
    extent = (occ.lefts[0] + half - occ.stride / 2, occ.lefts[-1] + half + occ.stride / 2,
              occ.tops[-1] + half + occ.stride / 2, occ.tops[0] + half - occ.stride / 2)
    image = axes.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest")
    axes.set_xlim(-0.5, width - 0.5)
    axes.set_ylim(height - 0.5, -0.5)
    bar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.03)
    bar.ax.tick_params(labelsize=6)
    _bare(axes)


def plot_occlusion(loaded, weights: str | Path, out: str | Path, samples: list[int], size: int, stride: int = 1,
                   which: str = "eval", fill: str = "gray", layer: str | None = None,
                   dpi: int = DPI) -> OcclusionResult:
    """`netc viz occlusion`: per sample (a row), the image, the probability of its true class with the
    square at each position, and (with `layer`) the total activation of the layer's feature map that
    responds most strongly to the whole image."""
    if fill not in FILLS:
        raise viz_error(f"unknown fill '{fill}'", hint=f"one of: {', '.join(FILLS)}")
    chosen = choose_samples(loaded, which, samples)
    graph = chosen.graph
    if layer is not None:
        layer_node(loaded, graph, layer, ops_in(FILTERS) + ops_in(WINDOW), "conv or pool layers", maps=True)
    channels, height, width = graph.inputs[chosen.source]
    if size > min(height, width):
        raise viz_error(f"occluder size {size} is larger than the image {height}x{width}",
                        loaded.smap.locate(("inputs", chosen.source)), f"a --size from 1 to {min(height, width)}")
    value = fill_value(chosen.data, fill)
    runner = Runner(graph, weights)
    maps = [occlusion(graph, weights, image, int(label), size, stride, value, layer, runner=runner)
            for image, label in zip(chosen.images, chosen.labels)]
    cols = 3 if layer else 2
    rows = len(samples)
    fills = ", ".join(f"{v:.3g}" for v in value)
    title = (f"{graph.spec.name}: occlusion of {rows} {which} samples by a {size}×{size} square ({fill} {fills}), "
             f"stride {stride}\n"
             f"middle: the true class's probability with the square at each place (a cell per place, at the "
             f"square's centre)\n"
             + (f"right: the total activation of {layer}'s map with the strongest unit on the whole image; "
                if layer else "") + "orange: the square's size")
    panels = 2.3 * cols + 0.4
    width = max(panels, _text_width(title, 8))
    height = 2.0 * rows + 1.15
    figure, size_px = new_figure(width, height, dpi)
    axes = figure.subplots(rows, cols, squeeze=False)
    side = panels / width
    figure.subplots_adjust(left=(1 - side) / 2 + 0.03 * side, right=(1 + side) / 2 - 0.05 * side,
                           top=1 - 1.0 / height, bottom=0.02, wspace=0.35, hspace=0.45)
    from matplotlib.patches import Rectangle

    for i, (s, image, occ) in enumerate(zip(samples, chosen.images, maps)):
        _show_image(axes[i, 0], image, *chosen.span)
        axes[i, 0].add_patch(Rectangle((-0.5, -0.5), size, size, fill=False, edgecolor="#ff7f0e", linewidth=1.2))
        axes[i, 0].set_title(f"#{s}: label {occ.label}", fontsize=8)
        _bare(axes[i, 0])
        probability = occ.what == "probability"
        _heat(axes[i, 1], figure, occ.probability, occ, (height, width), "viridis", *((0.0, 1.0) if probability
                                                                                     else (None, None)))
        axes[i, 1].set_title(f"{'p' if probability else 'score'}(class {occ.label}): {occ.baseline:.2f} whole,\n"
                             f"{occ.probability.min():.2f} lowest", fontsize=8)
        if layer:
            _heat(axes[i, 2], figure, occ.activity, occ, (height, width), "magma")
            axes[i, 2].set_title(f"{layer} map {occ.feature_map} total:\n{occ.activity_baseline:.3g} whole",
                                 fontsize=8)
    figure.text(0.5, 1 - 0.08 / height, title, ha="center", va="top", fontsize=8)
    path, size_px = save(figure, out, size_px)
    return OcclusionResult(path, size_px, samples=list(samples), maps=maps, fill=value)
