"""What every picture shares: a Figure on the Agg canvas of a whole number of pixels, mosaics of
tiles, and writing the file by its suffix.

Never through `pyplot`: nothing needs a screen, and netc never switches the backend of a notebook
that imports it. matplotlib is imported inside the functions, so importing netc.viz stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netc.viz.errors import viz_error

DPI = 100
GAP = "#dde3ec"  # between tiles (blue-gray)
PADDING = "#f0c38e"  # cells of a receptive field outside the input (orange)

# what every picture command writes, chosen by the file's suffix: formats the Agg canvas writes in
# every supported matplotlib (the CLI's help lists the same; a test keeps the two equal)
PICTURE_FORMATS = ("png", "svg", "svgz", "pdf", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")


@dataclass
class Picture:
    path: Path
    size: tuple[int, int]  # (width, height) in pixels


def new_figure(width: float, height: float, dpi: int = DPI):
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


def save(figure, out: str | Path, size: tuple[int, int]) -> tuple[Path, tuple[int, int]]:
    out = Path(out)
    kind = out.suffix[1:].lower() or "png"
    if kind not in PICTURE_FORMATS:
        raise viz_error(f"cannot write a '{out.suffix}' picture", out,
                        f"use one of: {', '.join('.' + k for k in PICTURE_FORMATS)}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, format=kind, dpi=figure.dpi, facecolor="white")
    except OSError as exc:
        raise viz_error(f"cannot write the picture: {exc.strerror or exc}", out) from None
    return out, size


def tile_mosaic(tiles: np.ndarray, rows: int, cols: int, gap: int = 1) -> np.ndarray:
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


def normalise(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """To [0, 1] by the finite min..max of all values (NaN stays NaN); a constant maps to 0.5."""
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if high - low <= 0:
        return np.where(np.isfinite(values), 0.5, np.nan), low, high
    return (values - low) / (high - low), low, high


def _rgb(color: str) -> np.ndarray:
    return np.array([int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)])


def show_mosaic(axes, mosaic: np.ndarray, rgb: bool) -> None:
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


def mosaic_figure(mosaic: np.ndarray, title: str, fontsize: int, target: int = 800, left: float = 0.25,
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
    figure, size = new_figure(fig_w, fig_h, dpi)
    w_in, h_in = size[0] / dpi, size[1] / dpi
    axes_w, axes_h = width * scale / dpi / w_in, height * scale / dpi / h_in
    x0 = max(left / w_in, (1 - axes_w) / 2)
    axes = figure.add_axes((x0, 0.25 / h_in, axes_w, axes_h))
    figure.text(0.5, 1 - 0.12 / h_in, title, ha="center", va="top", fontsize=fontsize)
    return figure, axes, size
