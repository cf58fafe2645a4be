"""Pictures of a network and its runs: filters, top-activating input patches, input patterns
reconstructed from feature maps, occlusion and saliency maps, training curves, run comparisons
and confusion matrices.

    plot_filters(weight, "filters.png", layer="conv1")           # a conv layer's filters as a grid
    plot_patches(loaded, "w.safetensors", "conv2", "patches.png") # what excites a layer's feature maps
    plot_reconstructions(loaded, "w.safetensors", "conv2", "r.png")  # ... and the pattern each activation stands for
    plot_occlusion(loaded, "w.safetensors", "o.png", [0, 1], size=3) # p(true class) as a square hides each place
    plot_saliency(loaded, "w.safetensors", "s.png", [0, 1])          # |d class score / d input|
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

    errors           VizError (E-VIZ)
    figures          Agg figures, tile mosaics, writing a picture by its suffix (PICTURE_FORMATS)
    layers           finding the layer a picture is of, with errors that point at the spec
    fields           receptive fields, input patches and activations: data only, no matplotlib
    filters          a conv layer's filters
    patches          the input patches that excite a layer's feature maps
    projection       signals projected to the input (deconvnet, guided, gradient), occlusion: arrays only
    reconstructions  the strongest activations' input patterns, beside their patches
    sensitivity      occlusion and saliency maps
    curves           training curves of one or more runs
    confusion        the confusion matrix of an evaluation
"""

# every public name and the module it lives in: imported on first use (PEP 562), so importing one
# module of netc.viz (the curves painter imports netc.viz.curves) does not import the compiler
_EXPORTS = {
    **dict.fromkeys(('ConfusionResult', 'confusion_picture', 'plot_confusion'), 'confusion'),
    **dict.fromkeys(('CurvesResult', 'plot_curves', 'plot_runs', 'read_metrics', 'save_run_curves'), 'curves'),
    **dict.fromkeys(('CODE', 'VizError'), 'errors'),
    **dict.fromkeys(('ReceptiveField', 'StrongestPatches', 'layer_activations', 'read_patch',
        'receptive_field', 'stored_tensor', 'strongest_patches'), 'fields'),
    **dict.fromkeys(('DPI', 'PICTURE_FORMATS', 'Picture'), 'figures'),
    **dict.fromkeys(('FiltersResult', 'filters_from_checkpoint', 'plot_filters'), 'filters'),
    **dict.fromkeys(('PatchesResult', 'plot_patches'), 'patches'),
    **dict.fromkeys(('Occlusion', 'Projector', 'Runner', 'class_probabilities', 'input_gradients',
        'keep_units', 'occlusion', 'reconstruct', 'saliency', 'score_tensor', 'stored_output'), 'projection'),
    **dict.fromkeys(('Reconstructions', 'ReconstructResult', 'plot_reconstructions', 'top_reconstructions'),
                    'reconstructions'),
    **dict.fromkeys(('OcclusionResult', 'SaliencyResult', 'plot_occlusion', 'plot_saliency'), 'sensitivity'),
}

__all__ = [
    "CODE", "DPI", "PICTURE_FORMATS",
    "ConfusionResult", "CurvesResult", "FiltersResult", "Occlusion", "OcclusionResult", "PatchesResult", "Picture",
    "Projector", "ReceptiveField", "ReconstructResult", "Reconstructions", "Runner", "SaliencyResult",
    "StrongestPatches", "VizError",
    "class_probabilities", "confusion_picture", "filters_from_checkpoint", "input_gradients", "keep_units",
    "layer_activations", "occlusion", "plot_confusion", "plot_curves", "plot_filters", "plot_occlusion",
    "plot_patches", "plot_reconstructions", "plot_runs", "plot_saliency", "read_metrics", "read_patch",
    "receptive_field", "reconstruct", "saliency", "save_run_curves", "score_tensor", "stored_output",
    "stored_tensor", "strongest_patches", "top_reconstructions",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(f"netc.viz.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'netc.viz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
