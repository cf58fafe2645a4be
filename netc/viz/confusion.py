"""The confusion matrix of an evaluation as a picture (`netc eval --plot`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netc.viz.errors import viz_error
from netc.viz.figures import DPI, Picture, new_figure, save


@dataclass
class ConfusionResult(Picture):
    classes: int = 0
    annotated: bool = False


def plot_confusion(confusion: np.ndarray, out: str | Path, title: str = "confusion matrix",
                   class_names: list[str] | None = None, dpi: int = DPI) -> ConfusionResult:
    """The confusion matrix [true, predicted] as a picture; counts written in every cell up to 30 classes."""
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise viz_error(f"a confusion matrix is square, got shape {list(confusion.shape)}")
    classes = confusion.shape[0]
    names = class_names or [str(i) for i in range(classes)]
    side = min(max(2.5 + 0.45 * classes, 4.0), 14.0)
    figure, size = new_figure(side + 1.0, side, dpi)
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
    path, size = save(figure, out, size)
    return ConfusionResult(path, size, classes=classes, annotated=annotated)


def confusion_picture(loaded, result, split: str, out: str | Path, dpi: int = DPI) -> ConfusionResult:
    """`netc eval --plot`: the confusion matrix of an `EvalResult`, titled with the spec and split."""
    if result.confusion is None:
        raise viz_error(f"the {loaded.spec.losses[0].op} loss has no predicted classes, so there is no confusion matrix",
                     loaded.smap.locate(("loss",)), "drop --plot, or use a classification loss "
                     "(cross_entropy or nll)", "loss")
    return plot_confusion(result.confusion, out, f"{loaded.spec.name}: {split} split", dpi=dpi)
