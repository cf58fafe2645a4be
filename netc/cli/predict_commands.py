"""`netc predict`: a checkpoint's predictions on image files, folders of images and array files, or a
layer's activations (`--features`), as a table or written to a file (netc.runtime.predict computes them).

The compiler and Pillow are imported inside the command, so `netc validate` never pays for them.
Everything is computed before a file is written, and the file is written whole (a temporary file
renamed into place): an error leaves nothing behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from netc.cli.app import command, stdout_console
from netc.errors import Diagnostic, Location, RunError
from netc.spec import load_spec

OUT_SUFFIXES = (".csv", ".json")


@command("predict")
def predict(
    spec: Annotated[Path, typer.Argument(help="The spec the weights belong to.")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files, folders of images (every image below, sorted), "
                                                      ".npy/.npz/.csv files.", show_default=False)],
    weights: Annotated[Path, typer.Option(help="A checkpoint (.safetensors).")],
    top_k: Annotated[int, typer.Option(min=1, help="Classes shown per input (at most the class count).")] = 3,
    out: Annotated[Optional[Path], typer.Option(help="Write the predictions to this .csv or .json file instead of "
                                                     "a table (with --features: the .npz file, default "
                                                     "features.npz).")] = None,
    features: Annotated[Optional[str], typer.Option(help="Write this layer's activations (an .npz file: "
                                                         "`features` [N, ...] and `inputs`, their names) instead "
                                                         "of predictions.")] = None,
) -> None:
    """Predict with a checkpoint: each input's top classes and their probabilities (a classifier) or its
    outputs (a regression); inputs are normalized with the statistics of the spec's train split."""
    if features is not None:
        out = out or Path("features.npz")
        if out.suffix.lower() != ".npz":
            raise typer.BadParameter(f"with --features the file is an .npz archive, not {out.name}",
                                     param_hint="--out")
    elif out is not None and out.suffix.lower() not in OUT_SUFFIXES:
        raise typer.BadParameter(f"the predictions go to a .csv or .json file, not {out.name}", param_hint="--out")

    import numpy as np

    from netc.runtime.predict import Predictor, read_inputs

    loaded = load_spec(spec)
    given = read_inputs(loaded, inputs)
    predictor = Predictor(loaded, weights)
    console = stdout_console()
    if features is not None:
        found = predictor.features(given.x, features)
        buffer = io.BytesIO()
        np.savez(buffer, features=found.values, inputs=np.array(given.names))
        _write(out, buffer.getvalue())
        what = f"after the {found.activation} fused into it" if found.activation else "its output"
        console.print(f"wrote {out}: features of {features} ({what}) {list(found.values.shape[1:])} for "
                      f"{_count(len(given.names))}", soft_wrap=True, markup=False)
        return
    result = predictor.predict(given.x)
    if result.classes is None:
        records = [{"input": name, "output": value.tolist()} for name, value in zip(given.names, result.outputs)]
    else:
        order, scores = result.top_k(top_k)
        score = "probability" if result.probabilities is not None else "score"
        records = [{"input": name, "top": [{"class": result.classes[c], "index": int(c), score: float(p)}
                                           for c, p in zip(row, values)]}
                   for name, row, values in zip(given.names, order, scores)]
    if out is None:
        console.print(_table(loaded.spec.name, records))
        return
    _write(out, (_csv(records) if out.suffix.lower() == ".csv" else json.dumps(records, indent=2) + "\n").encode())
    what = f"top {len(records[0]['top'])} classes" if result.classes is not None else "outputs"
    console.print(f"wrote {out}: {what} of {_count(len(records))}", soft_wrap=True, markup=False)


def _count(inputs: int) -> str:
    return f"{inputs} input" + ("" if inputs == 1 else "s")


def _table(name: str, records: list[dict]) -> Table:
    """One row per input: its top classes with their probabilities, or its outputs."""
    if "output" in records[0]:
        table = Table(title=f"{name}: outputs")
        table.add_column("input")
        table.add_column("output")
        for record in records:
            table.add_row(Text(record["input"]), Text(_values(record["output"])))
        return table
    k = len(records[0]["top"])
    probability = "probability" in records[0]["top"][0]
    table = Table(title=f"{name}: top {k} classes" + ("" if probability else " (scores)"))
    table.add_column("input")
    for rank in range(1, k + 1):
        table.add_column(f"top {rank}")
    for record in records:
        cells = [f"{t['class']} ({100 * t['probability']:.2f}%)" if probability else f"{t['class']} ({t['score']:.4g})"
                 for t in record["top"]]
        table.add_row(Text(record["input"]), *map(Text, cells))  # Text: a file name is not markup
    return table


def _values(output, limit: int = 8) -> str:
    flat = [float(v) for v in _flatten(output)]
    shown = ", ".join(f"{v:.4g}" for v in flat[:limit])
    return f"[{shown}{', ...' if len(flat) > limit else ''}]"


def _flatten(value):
    if isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


def _csv(records: list[dict]) -> str:
    """Long form for a classifier (input, rank, class, index, probability), one column per output for a regression."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    if "output" in records[0]:
        width = len(list(_flatten(records[0]["output"])))
        writer.writerow(["input", *(f"output_{j}" for j in range(width))])
        for record in records:
            writer.writerow([record["input"], *(repr(float(v)) for v in _flatten(record["output"]))])
        return text.getvalue()
    score = "probability" if "probability" in records[0]["top"][0] else "score"
    writer.writerow(["input", "rank", "class", "index", score])
    for record in records:
        for rank, top in enumerate(record["top"], 1):
            writer.writerow([record["input"], rank, top["class"], top["index"], repr(top[score])])
    return text.getvalue()


def _write(path: Path, data: bytes) -> None:
    """Write the whole file under a temporary name, then rename it into place."""
    temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_bytes(data)
        os.replace(temp, path)
    except OSError as exc:
        raise RunError(Diagnostic("E-PREDICT", f"cannot write {path}: {exc.strerror or exc}", Location(str(path)),
                                  hint="check that the folder exists and is writable")) from None
    finally:
        temp.unlink(missing_ok=True)
