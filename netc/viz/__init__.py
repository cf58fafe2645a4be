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
(`size` in each result), so the files are reproducible. matplotlib is imported only when a
picture is drawn.

Errors a user can cause (unknown layer, a layer that has no filters, a checkpoint
without the tensor, a run folder without metrics) are `VizError`s with code E-VIZ.

Modules: drawing apart from the data it draws.

    errors      VizError (E-VIZ)
    figures     Agg figures, tile mosaics, writing a picture by its suffix (PICTURE_FORMATS)
    layers      finding the layer a picture is of, with errors that point at the spec
    fields      receptive fields, input patches and activations: data only, no matplotlib
    filters     a conv layer's filters
    patches     the input patches that excite a layer's feature maps
    curves      training curves of one or more runs
    confusion   the confusion matrix of an evaluation
"""

from netc.viz.confusion import ConfusionResult, confusion_picture, plot_confusion
from netc.viz.curves import CurvesResult, plot_curves, plot_runs, read_metrics, save_run_curves
from netc.viz.errors import CODE, VizError
from netc.viz.fields import (
    ReceptiveField,
    StrongestPatches,
    layer_activations,
    read_patch,
    receptive_field,
    stored_tensor,
    strongest_patches,
)
from netc.viz.figures import DPI, PICTURE_FORMATS, Picture
from netc.viz.filters import FiltersResult, filters_from_checkpoint, plot_filters
from netc.viz.patches import PatchesResult, plot_patches

__all__ = [
    "CODE", "DPI", "PICTURE_FORMATS",
    "ConfusionResult", "CurvesResult", "FiltersResult", "PatchesResult", "Picture", "ReceptiveField",
    "StrongestPatches", "VizError",
    "confusion_picture", "filters_from_checkpoint", "layer_activations", "plot_confusion", "plot_curves",
    "plot_filters", "plot_patches", "plot_runs", "read_metrics", "read_patch", "receptive_field",
    "save_run_curves", "stored_tensor", "strongest_patches",
]
