"""Commands that draw pictures and export models: `viz filters`, `viz patches`, `viz reconstruct`,
`viz occlusion`, `viz saliency`, `plot`, `export`.

matplotlib, the compiler and onnx are imported inside the commands, so `netc validate` never pays for them.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from netc.cli.app import app, command, handle_errors, stdout_console
from netc.spec import load_spec

viz = typer.Typer(
    name="viz",
    help="Pictures of a trained network: its filters, the input patches its feature maps respond to, the input "
         "patterns they stand for, and where in an input its decision sits (occlusion, saliency).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(viz, name="viz")


def viz_command(name: str, **kwargs):
    """Register a `netc viz` subcommand with the error handling of every netc command."""

    def register(func):
        viz.command(name, **kwargs)(handle_errors(func))
        return func

    return register


# netc.viz.PICTURE_FORMATS, without importing numpy and matplotlib for --help (a test keeps them equal)
PICTURE_FORMATS = ".png, .svg, .svgz, .pdf, .eps, .ps, .jpg/.jpeg, .tif/.tiff, .webp"
Picture = Annotated[Path, typer.Option("--output", "-o", help=f"The picture to write ({PICTURE_FORMATS}).")]
ONNX_OPSET = 21  # netc.export_onnx.DEFAULT_OPSET, without importing the exporter for --help


class Split(str, Enum):
    eval = "eval"
    train = "train"


class Method(str, Enum):  # netc.compiler.projection.METHODS
    deconvnet = "deconvnet"
    guided = "guided"
    gradient = "gradient"


class Fill(str, Enum):  # netc.viz.sensitivity.FILLS
    gray = "gray"
    mean = "mean"


Samples = Annotated[Optional[list[int]], typer.Option("--sample", "-s", help="A sample of the data, by index; "
                                                      "repeat for several (default: the first four).",
                                                      show_default=False)]


def _shape(shape: list) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _done(path: Path, size: tuple[int, int], what: str) -> None:
    stdout_console().print(f"wrote {path} ({size[0]}x{size[1]} px): {what}", soft_wrap=True, markup=False)


@viz_command("filters")
def filters(
    spec: Annotated[Path, typer.Argument(help="The spec the weights belong to.")],
    weights: Annotated[Path, typer.Option(help="A checkpoint (.safetensors).")],
    layer: Annotated[str, typer.Option(help="A conv2d layer.")],
    output: Picture = Path("filters.png"),
) -> None:
    """A conv layer's filters as a normalised grid: RGB tiles for 3 input channels, else one gray tile per channel."""
    from netc.viz import filters_from_checkpoint

    result = filters_from_checkpoint(load_spec(spec), weights, layer, output)
    kind = "RGB" if result.rgb else "grayscale"
    _done(result.path, result.size, f"{result.tiles} {kind} tiles ({result.grid[0]}x{result.grid[1]}) of {layer} "
          f"{list(result.weight_shape)}")


@viz_command("patches")
def patches(
    spec: Annotated[Path, typer.Argument(help="The spec the weights belong to.")],
    weights: Annotated[Path, typer.Option(help="A checkpoint (.safetensors).")],
    layer: Annotated[str, typer.Option(help="A conv or pool layer (or the activation after one).")],
    data: Annotated[Split, typer.Option(help="Which data to look through: eval or train.")] = Split.eval,
    top: Annotated[int, typer.Option(min=1, help="Feature maps shown: those with the largest activation.")] = 8,
    per_map: Annotated[int, typer.Option(min=1, help="Input patches shown per feature map.")] = 8,
    output: Picture = Path("patches.png"),
) -> None:
    """For the strongest feature maps of a layer, the input patches (receptive fields) that activate them most."""
    from netc.viz import plot_patches

    result = plot_patches(load_spec(spec), weights, layer, output, data.value, top, per_map)
    rf = result.rf
    values = f"after the fused {result.activation}" if result.activation else "layer output"
    _done(result.path, result.size, f"maps {', '.join(map(str, result.maps))} of {layer} ({values}); "
          f"{result.values.shape[1]} patches of {rf.size[0]}x{rf.size[1]} each from {result.count} "
          f"{data.value} samples")


@viz_command("reconstruct")
def reconstruct(
    spec: Annotated[Path, typer.Argument(help="The spec the weights belong to.")],
    weights: Annotated[Path, typer.Option(help="A checkpoint (.safetensors).")],
    layer: Annotated[str, typer.Option(help="A conv2d layer (read after its fused activation, as viz patches does).")],
    method: Annotated[Method, typer.Option(help="deconvnet: a ReLU passes the signal's positive part (Zeiler & "
                                                "Fergus); guided: where the signal and the forward input are both "
                                                "positive; gradient: the network's own backward.")] = Method.deconvnet,
    data: Annotated[Split, typer.Option(help="Which data to look through: eval or train.")] = Split.eval,
    top: Annotated[int, typer.Option(min=1, help="Feature maps shown: those with the largest activation.")] = 8,
    per_map: Annotated[int, typer.Option(min=1, help="Strongest activations (one per sample) reconstructed per "
                                                     "map.")] = 6,
    maps: Annotated[Optional[list[int]], typer.Option("--map", help="A feature map to show instead of the top ones; "
                                                                    "repeat for several.", show_default=False)] = None,
    output: Picture = Path("reconstruct.png"),
) -> None:
    """The input patterns behind the strongest activations of a conv layer's feature maps, beside their patches.

    Each activation is kept alone (the rest of the layer zeroed) and projected back to the input through the
    layers below (Zeiler & Fergus 2014)."""
    from netc.viz import plot_reconstructions

    result = plot_reconstructions(load_spec(spec), weights, layer, output, method.value, data.value, top, per_map, maps)
    found = result.found
    values = f"after the fused {found.activation}" if found.activation else "layer output"
    _done(result.path, result.size, f"{method.value} reconstructions of maps {', '.join(map(str, found.maps))} of "
          f"{layer} ({values}); {found.samples.shape[1]} per map beside their {found.rf.size[0]}x{found.rf.size[1]} "
          f"patches, from {found.count} {data.value} samples")


@viz_command("occlusion")
def occlusion(
    spec: Annotated[Path, typer.Argument(help="The spec the weights belong to.")],
    weights: Annotated[Path, typer.Option(help="A checkpoint (.safetensors).")],
    sample: Samples = None,
    size: Annotated[int, typer.Option(min=1, help="Side of the occluding square, in input cells.")] = 3,
    stride: Annotated[int, typer.Option(min=1, help="Step between the square's positions.")] = 1,
    fill: Annotated[Fill, typer.Option(help="The square's value: gray (the middle of each channel's range in the "
                                            "data) or mean (each channel's mean).")] = Fill.gray,
    layer: Annotated[Optional[str], typer.Option(help="Also map the total activation of this conv or pool layer's "
                                                      "strongest feature map.")] = None,
    data: Annotated[Split, typer.Option(help="Which data the samples come from: eval or train.")] = Split.eval,
    output: Picture = Path("occlusion.png"),
) -> None:
    """Slide a square over inputs and map the probability of the true class at each position (Zeiler & Fergus)."""
    from netc.viz import plot_occlusion

    samples = sample if sample else [0, 1, 2, 3]
    result = plot_occlusion(load_spec(spec), weights, output, samples, size, stride, data.value, fill.value, layer)
    lows = ", ".join(f"#{s} {occ.baseline:.2f}->{occ.probability.min():.2f}" for s, occ in zip(samples, result.maps))
    _done(result.path, result.size, f"{size}x{size} square, stride {stride}, {fill.value} fill; p(true class) whole "
          f"-> lowest: {lows}")


@viz_command("saliency")
def saliency(
    spec: Annotated[Path, typer.Argument(help="The spec the weights belong to.")],
    weights: Annotated[Path, typer.Option(help="A checkpoint (.safetensors).")],
    sample: Samples = None,
    klass: Annotated[Optional[int], typer.Option("--class", min=0, help="The class whose score is differentiated "
                                                                       "(default: each sample's true class).",
                                                 show_default=False)] = None,
    data: Annotated[Split, typer.Option(help="Which data the samples come from: eval or train.")] = Split.eval,
    output: Picture = Path("saliency.png"),
) -> None:
    """The gradient of a class score with respect to the input, as heat maps beside the inputs (Simonyan et al.)."""
    from netc.viz import plot_saliency

    samples = sample if sample else [0, 1, 2, 3]
    result = plot_saliency(load_spec(spec), weights, output, samples, data.value, klass)
    listing = ", ".join(f"#{s} class {c} (predicted {p})" for s, c, p in zip(samples, result.classes, result.predicted))
    _done(result.path, result.size, f"|d {result.score}[class] / d input| of {listing}")


@command("plot")
def plot(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (made by `netc train`).", show_default=False)],
    output: Picture = Path("compare.png"),
) -> None:
    """Loss and accuracy per epoch of one or more runs on one figure (legend: the run folder names)."""
    from netc.viz import plot_runs

    result = plot_runs(runs, output)
    listing = ", ".join(f"{name} ({epochs} epochs)" for name, epochs in zip(result.runs, result.epochs))
    _done(result.path, result.size, listing)


@command("export")
def export(
    spec: Annotated[Path, typer.Argument(help="The spec the weights belong to.")],
    weights: Annotated[Path, typer.Option(help="A checkpoint (.safetensors).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The ONNX file to write.")] = Path("model.onnx"),
    opset: Annotated[int, typer.Option(help="ONNX opset version (the default is what onnxruntime >= 1.18 runs).",
                                       show_default=True)] = ONNX_OPSET,
) -> None:
    """Export the network with a checkpoint's weights to ONNX; the output is the tensor the loss reads."""
    from netc.export_onnx import export_onnx

    result = export_onnx(load_spec(spec), weights, output, opset)
    out = stdout_console()
    inputs = ", ".join(f"{name} {_shape(shape)}" for name, shape in result.inputs.items())
    out.print(f"wrote {result.path}: opset {result.opset}, {result.nodes} nodes, {len(result.initializers)} "
              f"initializers; inputs {inputs} -> {result.output} {_shape(result.output_shape)}",
              soft_wrap=True, markup=False)
    if result.ignored:
        out.print(f"  not exported (not in this spec): {', '.join(result.ignored)}", soft_wrap=True)
