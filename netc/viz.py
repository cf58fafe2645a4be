"""Pictures of a network and its runs: filters, top-activating input patches, training
curves, run comparisons and confusion matrices.

    plot_filters(weight, "filters.png", layer="conv1")           # a conv layer's filters as a grid
    plot_patches(loaded, "w.safetensors", "conv2", "patches.png") # what excites a layer's feature maps
    plot_curves("runs/lenet")                                      # runs/lenet/curves.png from metrics.jsonl
    plot_runs(["runs/a", "runs/b"], "compare.png")                 # several runs on one figure
    plot_confusion(result.confusion, "confusion.png")              # counts annotated

Every picture is drawn on a `matplotlib.figure.Figure` with the Agg canvas, never through
`pyplot`: nothing needs a screen, and netc never switches the backend of a notebook that
imports it (matplotlib's advice for servers). Figures have a fixed size in whole pixels
(`size` in each result), so the files are reproducible.

Errors a user can cause (unknown layer, a layer that has no filters, a checkpoint
without the tensor, a run folder without metrics) are `VizError`s with code E-VIZ.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from netc.errors import Diagnostic, Location, NetcError, did_you_mean

CODE = "E-VIZ"
DPI = 100
GAP = "#dde3ec"  # between tiles (blue-gray)
PADDING = "#f0c38e"  # cells of a receptive field outside the input (orange)


def _window_ops() -> tuple[str, ...]:
    """Ops whose geometry a receptive field composes (conv, pools)."""
    from netc.ops.base import WINDOW, ops_in

    return ops_in(WINDOW)


def _field_ops() -> tuple[str, ...]:
    """Ops a receptive field passes through: windows, and element-wise ops, which do not change it."""
    from netc.ops.base import ELEMENTWISE, ops_in

    return _window_ops() + ops_in(ELEMENTWISE)


class VizError(NetcError):
    """A picture that cannot be drawn from what the user gave."""


def _error(message: str, where: Location | str = "", hint: str = "", path: str = "") -> VizError:
    location = where if isinstance(where, Location) else Location(str(where))
    return VizError(Diagnostic(CODE, message, location, path, hint))


# ------------------------------------------------------------------------------- results


@dataclass
class Picture:
    path: Path
    size: tuple[int, int]  # (width, height) in pixels


@dataclass
class FiltersResult(Picture):
    tiles: int = 0  # filters x channels (filters for RGB tiles)
    grid: tuple[int, int] = (0, 0)  # (rows, columns) of tiles
    rgb: bool = False
    weight_shape: tuple[int, ...] = ()


@dataclass
class PatchesResult(Picture):
    layer: str = ""
    tensor: str = ""  # the tensor read: the layer's own, or the activation fused into it
    activation: str | None = None  # the fused activation when the values are post-activation
    maps: list[int] = field(default_factory=list)  # feature maps shown, strongest first
    values: np.ndarray | None = None  # [maps, per_map] activations of the shown units
    samples: np.ndarray | None = None  # [maps, per_map] sample index of each patch
    units: np.ndarray | None = None  # [maps, per_map, 2] (y, x) of each unit in the layer's output
    rf: "ReceptiveField | None" = None
    count: int = 0  # samples looked at


@dataclass
class CurvesResult(Picture):
    runs: list[str] = field(default_factory=list)  # legend names
    epochs: list[int] = field(default_factory=list)  # epochs drawn per run
    accuracy: bool = False  # whether the accuracy panel is drawn


@dataclass
class ConfusionResult(Picture):
    classes: int = 0
    annotated: bool = False


# ------------------------------------------------------------------------------- figures


def _figure(width: float, height: float, dpi: int = DPI):
    """A Figure on the Agg canvas, `width` x `height` inches rounded to whole pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width_px, height_px = max(int(round(width * dpi)), 64), max(int(round(height * dpi)), 64)
    figure = Figure(figsize=(_inches(width_px, dpi), _inches(height_px, dpi)), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure, (width_px, height_px)


def _inches(pixels: int, dpi: int) -> float:
    """Inches that Agg turns back into exactly `pixels` (it truncates inches * dpi: 0.29 * 100 < 29)."""
    inches = pixels / dpi
    while inches * dpi < pixels:
        inches = float(np.nextafter(inches, np.inf))
    return inches


# what every picture command writes, chosen by the file's suffix: formats the Agg canvas writes in
# every supported matplotlib (the CLI's help lists the same; a test keeps the two equal)
PICTURE_FORMATS = ("png", "svg", "svgz", "pdf", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")


def _save(figure, out: str | Path, size: tuple[int, int]) -> tuple[Path, tuple[int, int]]:
    out = Path(out)
    kind = out.suffix[1:].lower() or "png"
    if kind not in PICTURE_FORMATS:
        raise _error(f"cannot write a '{out.suffix}' picture", out,
                     f"use one of: {', '.join('.' + k for k in PICTURE_FORMATS)}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, format=kind, dpi=figure.dpi, facecolor="white")
    except OSError as exc:
        raise _error(f"cannot write the picture: {exc.strerror or exc}", out) from None
    return out, size


def _mosaic(tiles: np.ndarray, rows: int, cols: int, gap: int = 1) -> np.ndarray:
    """Tiles [T, h, w] or [T, h, w, 3] laid out row by row, `gap` cells of +inf between them
    (tiles may hold NaN: padding)."""
    count, h, w = tiles.shape[:3]
    extra = tiles.shape[3:]
    out = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap) + extra, np.inf, np.float64)
    for index in range(count):
        r, c = divmod(index, cols)
        top, left = gap + r * (h + gap), gap + c * (w + gap)
        out[top:top + h, left:left + w] = tiles[index]
    return out


def _normalise(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """To [0, 1] by the finite min..max of all values (NaN stays NaN); a constant maps to 0.5."""
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if high - low <= 0:
        return np.where(np.isfinite(values), 0.5, np.nan), low, high
    return (values - low) / (high - low), low, high


def _rgb(color: str) -> np.ndarray:
    return np.array([int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)])


def _show(axes, mosaic: np.ndarray, rgb: bool) -> None:
    """A mosaic in [0, 1] (gray or RGB) as an RGB image: +inf cells are gaps, NaN cells padding."""
    image = mosaic if rgb else np.repeat(mosaic[..., None], 3, axis=2)
    gaps, padding = np.isinf(image).any(axis=2), np.isnan(image).any(axis=2)
    image = np.clip(np.nan_to_num(image, nan=0.0, posinf=0.0), 0.0, 1.0)
    image[gaps] = _rgb(GAP)
    image[padding] = _rgb(PADDING)
    axes.imshow(image, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(False)


def _mosaic_figure(mosaic: np.ndarray, title: str, fontsize: int, target: int = 800, left: float = 0.25,
                   dpi: int = DPI):
    """A figure sized so that the mosaic shows at a whole number of screen pixels per cell, under a
    title that fits."""
    height, width = mosaic.shape[:2]
    scale = max(1, min(48, target // max(height, width)))
    lines = title.splitlines()
    text_width = max(len(line) for line in lines) * fontsize * 0.55 / 72 + 0.4  # about, in inches
    title_height = 0.25 + 1.5 * fontsize / 72 * len(lines)
    fig_w = max(width * scale / dpi + left + 0.25, 4.0, text_width)
    fig_h = height * scale / dpi + title_height + 0.25
    figure, size = _figure(fig_w, fig_h, dpi)
    w_in, h_in = size[0] / dpi, size[1] / dpi
    axes_w, axes_h = width * scale / dpi / w_in, height * scale / dpi / h_in
    x0 = max(left / w_in, (1 - axes_w) / 2)
    axes = figure.add_axes((x0, 0.25 / h_in, axes_w, axes_h))
    figure.text(0.5, 1 - 0.12 / h_in, title, ha="center", va="top", fontsize=fontsize)
    return figure, axes, size


# ------------------------------------------------------------------------------- filters


def plot_filters(weight: np.ndarray, out: str | Path, layer: str = "", title: str | None = None,
                 dpi: int = DPI) -> FiltersResult:
    """A conv weight [filters, channels, kh, kw] as a grid of tiles, normalised together to the
    layer's min..max (as Caffe's `vis_square`): one RGB tile per filter for 3 input channels,
    otherwise one grayscale tile per (filter, channel) — a row per filter when channels > 1."""
    weight = np.asarray(weight, np.float64)
    if weight.ndim != 4:
        raise _error(f"filters are a 4-d conv weight [filters, channels, kh, kw], got shape {list(weight.shape)}")
    filters, channels, kh, kw = weight.shape
    scaled, low, high = _normalise(weight)
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
    mosaic = _mosaic(tiles, rows, cols)
    name = layer or "filters"
    heading = title or (f"{name}: weight {list(weight.shape)} — {filters} filters"
                        + ("" if rgb or channels == 1 else f" × {channels} input channels"))
    detail = f"{'RGB' if rgb else 'gray'} tiles, one scale for the layer: black {low:.3g} … white {high:.3g}"
    if not rgb and channels > 1:
        detail += "; rows: filters, columns: input channels"
    figure, axes, size = _mosaic_figure(mosaic, f"{heading}\n{detail}", 9, dpi=dpi)
    _show(axes, mosaic, rgb)
    path, size = _save(figure, out, size)
    return FiltersResult(path, size, tiles=len(tiles), grid=(rows, cols), rgb=rgb,
                         weight_shape=tuple(weight.shape))


def _layer_node(loaded, graph, layer: str, ops: tuple[str, ...], what: str, maps: bool = False):
    """The graph node of `layer`, which must be one of `ops` (and give feature maps [C, H, W] when
    `maps`); errors point at the spec and name the layers that would do."""
    names = [node.name for node in graph.nodes]

    def fits(node) -> bool:
        return node.op in ops and (not maps or len(node.shape or ()) == 3)

    if layer not in graph.by_name:
        fitting = [n.name for n in graph.nodes if fits(n)] or names
        raise _error(f"no layer named '{layer}' in {graph.spec.name}", loaded.smap.locate(("layers",)),
                     did_you_mean(layer, fitting, what), "layers")
    node = graph.by_name[layer]
    if not fits(node):
        fitting = [n.name for n in graph.nodes if fits(n)]
        hint = f"{what}: {', '.join(fitting)}" if fitting else f"{graph.spec.name} has no {what}"
        if node.op not in ops:
            message = f"layer '{layer}' is a {node.op} layer, not {' or '.join(ops[:3])}"
        else:
            message = f"layer '{layer}' gives {list(node.shape)}, not feature maps [channels, height, width]"
        raise _error(message, loaded.smap.locate(node.spec_path), hint, f"layers[{node.index}]")
    return node


def filters_from_checkpoint(loaded, weights: str | Path, layer: str, out: str | Path, dpi: int = DPI) -> FiltersResult:
    """`netc viz filters`: the filters of conv layer `layer` as stored in a checkpoint."""
    from netc.graph import build_graph
    from netc.runtime.checkpoint import load_weights

    graph = build_graph(loaded)
    node = _layer_node(loaded, graph, layer, ("conv2d",), "conv layers")
    values = load_weights(weights)
    key = f"{node.param_owner}.weight"
    expected = tuple(node.param_shapes.get("weight") or graph.by_name[node.param_owner].param_shapes["weight"])
    if key not in values:
        held = sorted(values)
        listing = ", ".join(held[:12]) + (", ..." if len(held) > 12 else "")
        raise _error(f"the checkpoint has no tensor '{key}' for layer '{layer}'", weights,
                     f"is it a checkpoint of {graph.spec.name}? it holds: {listing or 'nothing'}")
    weight = values[key]
    if tuple(weight.shape) != expected:
        raise _error(f"checkpoint tensor '{key}' has shape {list(weight.shape)}, but {layer} in "
                     f"{graph.spec.name} needs {list(expected)}", weights,
                     "the checkpoint belongs to another version of the spec")
    shared = f" (shared from {node.param_owner})" if node.owner else ""
    filters, channels = weight.shape[:2]
    title = (f"{graph.spec.name} {layer}{shared}: weight {list(weight.shape)}"
             + ("" if channels in (1, 3) else f" — {filters} filters × {channels} input channels"))
    return plot_filters(weight, out, layer, title, dpi)


# ------------------------------------------------------------------------------- patches


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
        if node.op not in _field_ops() or len(node.inputs) != 1:
            where = loaded.smap.locate(node.spec_path) if loaded is not None else Location()
            raise _error(f"cannot trace input patches through '{node.name}' ({node.op}): a patch is defined "
                         f"only along one path of conv, pool and element-wise layers from an image input",
                         where, f"pick a conv or pool layer before any {node.op} layer",
                         f"layers[{node.index}]")
        path.append(node)
        name = node.inputs[0]
    source = name
    if len(graph.inputs[source]) != 3:
        raise _error(f"input '{source}' has shape {list(graph.inputs[source])}, not an image [channels, height, width]",
                     loaded.smap.locate(("inputs", source)) if loaded is not None else Location(),
                     "input patches need an image input [C, H, W]")
    size, jump, offset = [1, 1], [1, 1], [0, 0]
    for node in reversed(path):
        if node.op in _window_ops():
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


def layer_activations(model, arrays: dict[str, np.ndarray], tensor: str) -> Iterable[tuple[int, np.ndarray]]:
    """(start, values [n, *shape]) of `tensor` for batches of the samples in `arrays`, read from the
    compiled forward's arena (the plan keeps every stored tensor in its own region of A)."""
    from netc.compiler.module import float_inputs

    graph, plan = model.graph, model.plan
    region = plan.buffers.values[plan.buffers.root(tensor)]
    shape = graph.shape_of(tensor)
    prepared = model.prepare(arrays)
    count, labels = prepared["__count__"], prepared["__labels__"]
    for start in range(0, count, model.batch):
        stop = min(start + model.batch, count)
        part = {name: prepared[name][start:stop] for name in float_inputs(graph)}
        part["__labels__"] = labels[start:stop] if len(labels) else np.zeros(stop - start, np.int64)
        part["__count__"] = stop - start
        model.evaluate(part)  # one batch: the arena now holds this batch's activations
        values = model.A[region.offset:region.offset + (stop - start) * region.per_sample]
        yield start, values.reshape((stop - start,) + tuple(shape)).copy()


def stored_tensor(plan, layer: str) -> tuple[str, str | None]:
    """(tensor to read for `layer`, fused activation or None): a conv fused with its activation
    stores only the activation's output."""
    step = next(s for s in plan.steps if layer in s.covers)
    if step.output != layer and step.node.name == layer and step.act is not None:
        return step.output, step.act.op
    return layer, None


def plot_patches(loaded, weights: str | Path, layer: str, out: str | Path, which: str = "eval", top: int = 8,
                 per_map: int = 8, dpi: int = DPI) -> PatchesResult:
    """`netc viz patches`: for the `top` feature maps of `layer` with the largest activation over the
    data, the `per_map` input patches (receptive fields of each sample's strongest unit) that excite
    the map most — one sample per patch, as in Zeiler & Fergus's visualisations."""
    from netc.graph import build_graph
    from netc.runtime.checkpoint import load_weights
    from netc.runtime.data import load_dataset
    from netc.runtime.model import Model

    graph = build_graph(loaded)
    node = _layer_node(loaded, graph, layer, _field_ops(), "layers with feature maps", maps=True)
    rf = receptive_field(graph, layer, loaded)
    train = load_dataset(loaded, "train")
    data = train if which == "train" else load_dataset(loaded, which, train.stats)
    model = Model(graph, fuse_pools=False)  # every conv output stored, to be read
    report = model.set_weights(load_weights(weights))
    if report.missing or report.mismatched:
        missing = ", ".join(report.missing + [m[0] for m in report.mismatched])
        raise _error(f"the checkpoint does not fit {graph.spec.name} (missing or different: {missing})", weights,
                     "pass a checkpoint of this spec")
    tensor, activation = stored_tensor(model.plan, layer)
    channels = node.shape[0]
    count = len(data)
    best = np.zeros((count, channels), np.float64)  # each sample's strongest unit per map ...
    where = np.zeros((count, channels), np.int64)  # ... and its flat position
    for start, values in layer_activations(model, data.arrays, tensor):
        flat = values.reshape(len(values), channels, -1)
        where[start:start + len(values)] = flat.argmax(axis=2)
        best[start:start + len(values)] = flat.max(axis=2)
    top, per_map = min(top, channels), min(per_map, count)
    maps = np.argsort(-best.max(axis=0), kind="stable")[:top]
    samples = np.stack([np.argsort(-best[:, c], kind="stable")[:per_map] for c in maps])
    values = np.take_along_axis(best[:, maps].T, samples, axis=1)
    width = node.shape[2]
    units = np.stack([np.stack(np.divmod(where[samples[i], c], width), axis=1) for i, c in enumerate(maps)])
    images = data.arrays[rf.source]
    patches = np.stack([[read_patch(images[s], rf, int(y), int(x)) for s, (y, x) in zip(samples[i], units[i])]
                        for i in range(top)])  # [top, per_map, C, h, w]
    in_channels = patches.shape[2]
    rgb = in_channels == 3
    scaled, _, _ = _normalise(patches)
    if rgb:
        tiles = scaled.transpose(0, 1, 3, 4, 2).reshape((top * per_map,) + rf.size + (3,))
    else:
        merged = scaled.mean(axis=2)  # padding is NaN in every channel, so it stays NaN
        tiles = merged.reshape((top * per_map,) + rf.size)
    mosaic = _mosaic(tiles, top, per_map)
    values_are = f"values after the {activation} fused into {layer}" if activation else "values of the layer output"
    merged_note = "" if in_channels in (1, 3) else f"; mean of {in_channels} input channels"
    title = (f"{graph.spec.name} {layer}: top {top} of {channels} feature maps over {count} {which} samples\n"
             f"each row: the {per_map} inputs whose strongest unit excites the map most ({values_are})\n"
             f"patch = receptive field {rf.size[0]}×{rf.size[1]} (stride {rf.jump[0]}); "
             f"orange: zero padding outside the image{merged_note}")
    figure, axes, size = _mosaic_figure(mosaic, title, 8, target=640, left=1.2, dpi=dpi)
    _show(axes, mosaic, rgb)
    cell = rf.size[0] + 1
    axes.set_yticks([1 + i * cell + rf.size[0] / 2 - 0.5 for i in range(top)])
    axes.set_yticklabels([f"map {c}  max {values[i, 0]:.3g}" for i, c in enumerate(maps)], fontsize=7)
    axes.tick_params(axis="y", length=0)
    path, size = _save(figure, out, size)
    return PatchesResult(path, size, layer=layer, tensor=tensor, activation=activation, maps=[int(c) for c in maps],
                         values=values, samples=samples, units=units, rf=rf, count=count)


# ------------------------------------------------------------------------------- curves


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The epoch records of a run folder's metrics.jsonl (E-VIZ when missing, empty or damaged)."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not run_dir.is_dir():
        raise _error("run folder not found", run_dir, "pass a folder made by `netc train` (runs/<name>)")
    if not metrics.exists():
        raise _error("the run folder has no metrics.jsonl", run_dir, "pass a folder made by `netc train`")
    records = []
    for number, line in enumerate(metrics.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "epoch" not in record or "train_loss" not in record:
                raise ValueError("not an epoch record")
        except ValueError as exc:
            raise _error(f"line {number} is not an epoch record: {exc}", Location(str(metrics), number, 1)) from None
        records.append(record)
    if not records:
        raise _error("the run has no finished epoch yet", metrics, "train for at least one epoch")
    return records


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _draw_runs(runs: list[tuple[str, list[dict]]], out: str | Path, title: str, dpi: int) -> CurvesResult:
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    accuracy = any(r.get("train_accuracy") is not None or r.get("eval_accuracy") is not None
                   for _, records in runs for r in records)
    panels = 2 if accuracy else 1
    figure, size = _figure(5.0 * panels, 4.0, dpi)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    single = len(runs) == 1
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for (name, records), color in zip(runs, colors):
        marker = "o" if len(records) <= 30 else None
        for panel, (prefix, scale) in enumerate((("loss", 1.0), ("accuracy", 100.0))[:panels]):
            for split, style in (("train", "-"), ("eval", "--")):
                xs, ys = _series(records, f"{split}_{prefix}")
                if not xs:
                    continue
                line_color = ("C0" if split == "train" else "C1") if single else color
                label = split if single else None
                axes[panel].plot(xs, [y * scale for y in ys], style, color=line_color, marker=marker, markersize=3,
                                 label=label)
    for panel, label in enumerate(("loss", "accuracy (%)")[:panels]):
        ax = axes[panel]
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    if single:
        for ax in axes:
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    else:
        handles = [Line2D([], [], color=c, label=name) for (name, _), c in zip(runs, colors)]
        handles += [Line2D([], [], color="black", linestyle="-", label="train"),
                    Line2D([], [], color="black", linestyle="--", label="eval")]
        axes[-1].legend(handles=handles, fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path, size = _save(figure, out, size)
    return CurvesResult(path, size, runs=[name for name, _ in runs],
                        epochs=[len(records) for _, records in runs], accuracy=accuracy)


def plot_curves(run_dir: str | Path, out: str | Path | None = None, dpi: int = DPI) -> CurvesResult:
    """Loss and accuracy per epoch, train and eval, of one run (default: <run_dir>/curves.png)."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    name = _spec_name(run_dir)
    title = f"{name} ({run_dir.name})" if name and name != run_dir.name else run_dir.name
    return _draw_runs([(run_dir.name, records)], out or run_dir / "curves.png",
                      f"{title}: {len(records)} epoch{'s' if len(records) != 1 else ''}", dpi)


def _spec_name(run_dir: Path) -> str | None:
    """The network's name from the run's spec.yaml, when readable."""
    import yaml

    try:
        data = yaml.safe_load((run_dir / "spec.yaml").read_text())
        return str(data["name"]) if isinstance(data, dict) and "name" in data else None
    except (OSError, yaml.YAMLError):
        return None


def plot_runs(run_dirs: list[str | Path], out: str | Path, dpi: int = DPI) -> CurvesResult:
    """Several runs on one figure: a colour per run (legend: the folder names), train solid, eval dashed."""
    if not run_dirs:
        raise _error("no run folders given", hint="pass one or more folders made by `netc train`")
    paths = [Path(p) for p in run_dirs]
    names = [p.name for p in paths]
    names = [str(p) if names.count(p.name) > 1 else p.name for p in paths]  # same folder name: full path
    runs = [(name, read_metrics(path)) for name, path in zip(names, paths)]
    return _draw_runs(runs, out, f"{len(runs)} runs" if len(runs) > 1 else runs[0][0], dpi)


def save_run_curves(run_dir: str | Path) -> Path | None:
    """curves.png in a run folder at the end of `netc train`; a failure only costs the picture."""
    try:
        return plot_curves(run_dir).path
    except Exception:  # noqa: BLE001 - never lose a finished run to a plotting problem
        return None


# ------------------------------------------------------------------------------- confusion


def plot_confusion(confusion: np.ndarray, out: str | Path, title: str = "confusion matrix",
                   class_names: list[str] | None = None, dpi: int = DPI) -> ConfusionResult:
    """The confusion matrix [true, predicted] as a picture; counts written in every cell up to 30 classes."""
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise _error(f"a confusion matrix is square, got shape {list(confusion.shape)}")
    classes = confusion.shape[0]
    names = class_names or [str(i) for i in range(classes)]
    side = min(max(2.5 + 0.45 * classes, 4.0), 14.0)
    figure, size = _figure(side + 1.0, side, dpi)
    axes = figure.add_subplot()
    image = axes.imshow(confusion, cmap="Blues", interpolation="nearest", vmin=0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    annotated = classes <= 30
    if annotated:
        peak = confusion.max() if confusion.size else 0
        font = max(5, min(11, int(110 / max(classes, 1))))
        for i in range(classes):
            for j in range(classes):
                value = int(confusion[i, j])
                color = "white" if peak and value > peak / 2 else ("#9aa5b1" if value == 0 else "black")
                axes.text(j, i, str(value), ha="center", va="center", fontsize=font, color=color)
    ticks = np.arange(classes)
    step = max(1, classes // 30)
    axes.set_xticks(ticks[::step], [names[i] for i in ticks[::step]], fontsize=8)
    axes.set_yticks(ticks[::step], [names[i] for i in ticks[::step]], fontsize=8)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    total = int(confusion.sum())
    right = int(np.trace(confusion))
    accuracy = f", accuracy {100 * right / total:.2f}%" if total else ""
    axes.set_title(f"{title}\n{total} samples{accuracy}", fontsize=9)
    figure.tight_layout()
    path, size = _save(figure, out, size)
    return ConfusionResult(path, size, classes=classes, annotated=annotated)


def confusion_picture(loaded, result, split: str, out: str | Path, dpi: int = DPI) -> ConfusionResult:
    """`netc eval --plot`: the confusion matrix of an `EvalResult`, titled with the spec and split."""
    if result.confusion is None:
        raise _error(f"the {loaded.spec.loss.op} loss has no predicted classes, so there is no confusion matrix",
                     loaded.smap.locate(("loss",)), "drop --plot, or use a classification loss "
                     "(cross_entropy or nll)", "loss")
    return plot_confusion(result.confusion, out, f"{loaded.spec.name}: {split} split", dpi=dpi)
