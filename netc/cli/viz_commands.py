"""Commands that draw pictures and export models: `viz filters`, `viz patches`, `plot`, `export`.

matplotlib, the compiler and onnx are imported inside the commands, so `netc validate` never pays for them.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from netc.cli.app import app, command, handle_errors, stdout_console
from netc.spec import load_spec

viz = typer.Typer(
    name="viz",
    help="Pictures of a trained network: its filters, and the input patches its feature maps respond to.",
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
