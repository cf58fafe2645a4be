"""Predictions of a trained network on new inputs: arrays in, arrays out (what `netc predict` runs).

    predictor = Predictor(load_spec("digits-images.yaml"), "runs/digits_images/last.safetensors")
    inputs = read_inputs(predictor.loaded, ["seven.png", "more-digits/", "batch.npy"])
    result = predictor.predict(inputs.x)        # outputs, probabilities, class names
    best, p = result.top_k(3)                   # [N, 3] class indices and their probabilities
    feats = predictor.features(inputs.x, "relu3").values   # a layer's activations [N, 64]

Inputs are given as the data files hold them (pixel values 0..255, raw CSV
numbers) and normalized here with the statistics of the spec's train split
(the run folder's normalization.safetensors beside the checkpoint, else
computed from the train data), so a prediction sees what training saw (pass `normalized=True` for arrays
that already are, e.g. `Network.data()`).

`read_inputs` matches files to the spec's one float input:
- image files (IMAGE_SUFFIXES), and folders of them (every image below,
  sorted by path), converted as the images source does (`load_image`);
- .npy, and .npz (the array named like the input, or the archive's only
  array): an array of the input's shape is one sample, else its first axis
  counts samples (bound and checked as the data sources do);
- .csv: one sample per row, a first row that is not all numbers is a header;
  as many columns as the input has values, or one more: a label column,
  dropped (the spec's csv source's `label` column when it has one, else the
  last, as that source's default).

A classifier's probabilities are the softmax of its logits (cross_entropy)
or exp of its log-probabilities (nll); class names come from `classes.json`
beside the checkpoint (the images source writes it into the run folder),
else they are the indices. A regression's outputs are given in the units of
its target data (the target's normalization undone). A layer's activations
are read from the compiled forward pass's memory, as `netc viz patches`
reads them.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netc.errors import DataError, Diagnostic, Location, RunError, did_you_mean
from netc.graph import build_graph
from netc.ops.base import numel
from netc.runtime.checkpoint import NORMALIZATION, load_normalization, load_weights
from netc.runtime.data import NormStats, image_files, load_image, normalization_stats
from netc.runtime.data.binding import validate
from netc.runtime.data.images import IMAGE_SUFFIXES
from netc.runtime.data.origin import CODE as DATA_CODE
from netc.runtime.data.origin import Origin
from netc.runtime.model import Model
from netc.spec import models as m
from netc.spec.load import LoadedSpec

CODE = "E-PREDICT"
ARRAY_SUFFIXES = (".npy", ".npz", ".csv")


def predict_error(message: str, where: Path | str = "", hint: str = "", path: str = "") -> RunError:
    return RunError(Diagnostic(CODE, message, Location(str(where)), path, hint))


# --------------------------------------------------------------------------- reading inputs


@dataclass
class Inputs:
    """Samples for the spec's float input, as the files hold them (not normalized), and a name for each."""

    x: np.ndarray  # [N, *input shape] float32
    names: list[str]  # one per sample: its file, or `file[i]` for the samples of a file holding several


def float_input(loaded: LoadedSpec) -> str:
    """The float input the network reads (a float loss target, a regression's, is not fed); an error for
    networks that read several inputs or index inputs (those take the Python API's dict of arrays)."""
    inputs, targets = loaded.spec.inputs, {loss.target for loss in loaded.spec.losses}
    floats = [n for n, i in inputs.items() if i.dtype == "float32"]
    fed = [n for n in floats if n not in targets] or floats  # or floats: an autoencoder's input is its target
    indexed = [n for n, i in inputs.items() if i.indices is not None]
    if len(fed) != 1 or indexed:
        listing = ", ".join(f"{n} {list(i.shape)} {i.dtype}" for n, i in inputs.items())
        raise predict_error(f"predict reads files for one float input, but the inputs of {loaded.spec.name} are "
                            f"{listing}", loaded.smap.locate(("inputs",)), "use the Python API "
                            "(netc.runtime.predict.Predictor) with a dict of arrays by input name", "inputs")
    return fed[0]


def read_inputs(loaded: LoadedSpec, paths: list[str | Path]) -> Inputs:
    """The samples of image files, folders of images and .npy/.npz/.csv files, in the order given."""
    name = float_input(loaded)
    parts, names = [], []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = image_files(path)
            if not found:
                raise DataError(Diagnostic(DATA_CODE, f"the folder {path} holds no images", Location(str(path)),
                                           hint=f"images are files ending in {', '.join(IMAGE_SUFFIXES)} "
                                                "(in the folder or below it; hidden files are skipped)"))
            for file in found:
                parts.append(_image(loaded, name, file)[None])
                names.append(str(file))
        elif not path.is_file():
            near = sorted(p.name for p in path.parent.iterdir()) if path.parent.is_dir() else []
            hint = did_you_mean(path.name, near, f"files in {path.parent}") if near else \
                f"the folder {path.parent} does not exist or is empty"
            raise DataError(Diagnostic(DATA_CODE, f"input not found: {path}", Location(str(path)), hint=hint))
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            parts.append(_image(loaded, name, path)[None])
            names.append(str(path))
        elif path.suffix.lower() in ARRAY_SUFFIXES:
            x = _array_file(loaded, name, path)
            parts.append(x)
            names += [str(path)] if len(x) == 1 else [f"{path}[{i}]" for i in range(len(x))]
        else:
            raise DataError(Diagnostic(DATA_CODE, f"cannot predict on {path}: not an image, .npy, .npz or .csv file",
                                       Location(str(path)), hint=f"inputs are images ({', '.join(IMAGE_SUFFIXES)}), "
                                       "folders of images, or .npy/.npz/.csv files"))
    if not parts:
        raise DataError(Diagnostic(DATA_CODE, "no inputs given", hint="name image files, folders or array files"))
    return Inputs(np.concatenate(parts), names)


def _image(loaded: LoadedSpec, name: str, path: Path) -> np.ndarray:
    shape = loaded.spec.inputs[name].shape
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise DataError(Diagnostic(DATA_CODE, f"{path} is an image, but input '{name}' of {loaded.spec.name} has "
                                              f"shape {list(shape)}, not an image [C, H, W] with C 1 or 3",
                                   Location(str(path)), f"inputs.{name}",
                                   "give this network arrays (.npy, .npz or .csv) of its input's shape"))
    return load_image(path, shape)


def _array_file(loaded: LoadedSpec, name: str, path: Path) -> np.ndarray:
    """The file's samples [N, *shape] float32."""
    inp = loaded.spec.inputs[name]
    suffix = path.suffix.lower()
    if suffix == ".csv":
        a = _csv_table(loaded, path, numel(tuple(inp.shape)))
    else:
        a = _numpy_file(path, name, suffix)
    if a.shape == tuple(inp.shape):  # one sample, written without the sample axis
        a = a[None]
    if a.ndim == 0 or len(a) == 0:
        raise DataError(Diagnostic(DATA_CODE, f"{path} holds no samples (array of shape {list(a.shape)})",
                                   Location(str(path)), hint=f"store samples of shape {list(inp.shape)}"))
    # bound and checked as the data sources bind theirs: shape (up to size-1 axes), numbers, finite
    origin = Origin(str(path), str(path), f"inputs.{name}")
    return validate({name: a}, {name: inp}, origin)[name]


def _numpy_file(path: Path, name: str, suffix: str) -> np.ndarray:
    hint = "write it with np.save(path, array) or np.savez(path, name=array); object (pickled) arrays are refused"
    try:
        loaded = np.load(path, allow_pickle=False)
        if suffix == ".npy" or isinstance(loaded, np.ndarray):
            return np.asarray(loaded)
        with loaded:
            keys = list(loaded.files)
            key = name if name in keys else keys[0] if len(keys) == 1 else None
            if key is None:
                raise DataError(Diagnostic(DATA_CODE, f"{path} has no array '{name}' (arrays: "
                                                      f"{', '.join(keys) or 'none'})", Location(str(path)),
                                           hint=did_you_mean(name, keys, "arrays in the file") if keys else
                                           "the archive is empty"))
            return loaded[key]
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(Diagnostic(DATA_CODE, f"cannot read {path}: {exc}", Location(str(path)), hint=hint)) from None


def _csv_table(loaded: LoadedSpec, path: Path, size: int) -> np.ndarray:
    """The rows of a CSV as [N, size] float64, a header row and a label column dropped (see the module doc)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: drops a spreadsheet's byte-order mark
            reader = csv.reader(handle)
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(Diagnostic(DATA_CODE, f"cannot read {path} as CSV: {exc}", Location(str(path)),
                                   hint="save it as UTF-8 text, one sample per row")) from None
    header = None
    if rows and not all(_is_number(cell) for cell in rows[0][1]):
        header = [cell.strip() for cell in rows.pop(0)[1]]
    if not rows:
        raise DataError(Diagnostic(DATA_CODE, f"{path} has no rows of numbers", Location(str(path)),
                                   hint="one sample per row, comma-separated"))
    width = len(rows[0][1])
    keep = list(range(width))
    if width == size + 1:
        keep.remove(_label_column(loaded, header, width))
    elif width != size:
        raise DataError(Diagnostic(DATA_CODE, f"{path} has {width} columns, but the input takes {size} values per "
                                              "sample", Location(str(path), rows[0][0], 1),
                                   hint=f"one row per sample: {size} numbers, or {size + 1} with a label column"))
    table = np.empty((len(rows), size), np.float64)
    for i, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(Diagnostic(DATA_CODE, f"row has {len(row)} columns, the first has {width}",
                                       Location(str(path), line, 1), hint="every row holds one sample"))
        for j, col in enumerate(keep):
            if not _is_number(row[col]):
                raise DataError(Diagnostic(DATA_CODE, f"column {col + 1} is {row[col]!r}, not a number",
                                           Location(str(path), line, col + 1), hint="every value is a number"))
            table[i, j] = float(row[col])
    return table


def _label_column(loaded: LoadedSpec, header: list[str] | None, width: int) -> int:
    """The column to drop: the spec's csv source's `label` (by name or index) when it has one, else the last."""
    data = loaded.spec.data
    src = data.train if data is not None else None
    if isinstance(src, m.CsvSource):
        if isinstance(src.label, str) and header and src.label in header:
            return header.index(src.label)
        if isinstance(src.label, int) and 0 <= src.label < width:
            return src.label
    return width - 1


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------- predicting


@dataclass
class Prediction:
    """What the network says about N inputs."""

    outputs: np.ndarray  # [N, *shape] the values of the layer the loss reads (logits, log-probabilities,
    #                      a regression's outputs in the units of its target data)
    probabilities: np.ndarray | None  # [N, classes] of a cross_entropy or nll classifier ([N, T, classes] with
    #                                   a label at every step), else None
    classes: list[str] | None  # class names of a classifier (classes.json, else "0", "1", ...); None: regression

    @property
    def scores(self) -> np.ndarray:
        """[N, classes] what classes are ranked by: probabilities, or the outputs (a classifier trained with mse)."""
        return self.probabilities if self.probabilities is not None else self.outputs.reshape(len(self.outputs), -1)

    def top_k(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """([N, k] class indices, [N, k] their scores), best first; k is clamped to the class count."""
        if self.classes is None:
            raise ValueError("a regression has no classes to rank")
        scores = self.scores
        k = max(1, min(k, scores.shape[1]))
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # ties: the lower class index first
        return order, np.take_along_axis(scores, order, axis=1)


@dataclass
class Features:
    """A layer's activations for N inputs."""

    values: np.ndarray  # [N, *the layer's shape]
    layer: str
    tensor: str  # the tensor read: the layer's own, or the activation fused into it
    activation: str | None  # the activation fused into the layer, whose output `values` are; None: the layer's own


class Predictor:
    """A spec's network with a checkpoint's weights, and the train split's normalization.

    Errors come before anything runs: a missing or unreadable checkpoint
    (E-CHECKPOINT), one that does not fit the spec (E-RUN), train data that
    cannot be read for the statistics (E-DATA). `stats` skips reading it
    (e.g. a Dataset's `stats`); a spec without data is not normalized."""

    def __init__(self, loaded: LoadedSpec, weights: str | Path, stats: NormStats | None = None, tier: str = "auto"):
        self.loaded = loaded
        self.weights = Path(weights)
        self.graph = build_graph(loaded)
        values = load_weights(self.weights)
        saved = self.weights.parent / NORMALIZATION  # the run's own, else computed from the train data
        if stats is None and saved.exists():
            stats = load_normalization(saved)
        if stats is None:
            stats = normalization_stats(loaded) if loaded.spec.data is not None else NormStats("none")
        self.stats = stats
        # every layer's output kept in its own region (no pool fused into a conv), so features can read it
        self.model = Model(self.graph, tier=tier, fuse_pools=False)
        report = self.model.set_weights(values)
        if report.missing or report.mismatched:
            misfit = ", ".join(report.missing + [name for name, _, _ in report.mismatched])
            raise RunError(Diagnostic("E-RUN", f"the checkpoint does not fit {loaded.spec.name} (missing or of "
                                               f"another shape: {misfit})", Location(str(self.weights)),
                                      hint="pass a checkpoint trained from this spec, e.g. "
                                           f"runs/{loaded.spec.name}/last.safetensors"))
        self.kind = self.model.plan.loss.kind  # cross_entropy | nll_after_log_softmax | mse | mse_onehot
        self.classes = class_names(self.weights, self.class_count()) if self.kind != "mse" else None

    def class_count(self) -> int:
        """Classes of the scores: all of them, or the last axis of [T, C] scores (a label at every step)."""
        shape = self.graph.shape_of(self.model.plan.loss.input)
        return shape[-1] if self.graph.label_steps > 1 else numel(shape)

    def _arrays(self, x, normalized: bool) -> dict[str, np.ndarray]:
        """{input: array} normalized, a float loss target the caller did not give filled with zeros (the
        plan stages every float input; the target only enters the loss, which predictions ignore)."""
        arrays = dict(x) if isinstance(x, dict) else {float_input(self.loaded): np.asarray(x)}
        arrays = arrays if normalized else self.stats.apply(arrays)
        count = len(next(iter(arrays.values())))
        for name in self.graph.float_inputs:
            arrays.setdefault(name, np.zeros((count,) + tuple(self.graph.inputs[name]), np.float32))
        return arrays

    def predict(self, x: np.ndarray | dict[str, np.ndarray], normalized: bool = False) -> Prediction:
        """Outputs (and a classifier's probabilities) for samples of the float input ([N, *shape]) or
        a dict of arrays by input name; `normalized`: already normalized with the train statistics."""
        outputs = self.model.predict(self._arrays(x, normalized))
        outputs = outputs.reshape((len(outputs),) + tuple(self.graph.shape_of(self.model.plan.loss.input)))
        probabilities = None
        if self.kind == "cross_entropy":  # over the classes: the last axis ([N, C], or [N, T, C] at every step)
            z = outputs.astype(np.float64)
            z = np.exp(z - z.max(axis=-1, keepdims=True))  # shifted: no overflow
            probabilities = z / z.sum(axis=-1, keepdims=True)
        elif self.kind == "nll_after_log_softmax":
            probabilities = np.exp(outputs.astype(np.float64))
        elif self.kind == "mse":
            outputs = self._in_target_units(outputs)
        return Prediction(outputs, probabilities, self.classes)

    def _in_target_units(self, outputs: np.ndarray) -> np.ndarray:
        """A regression's outputs in the units of its data: training compared them with the target
        normalized by the train statistics, so undo that normalization."""
        target = self.model.plan.loss.target
        if target not in self.stats.shift:
            return outputs
        restored = outputs * self.stats.scale[target] + self.stats.shift[target]
        return restored.astype(outputs.dtype)

    def features(self, x: np.ndarray | dict[str, np.ndarray], layer: str, normalized: bool = False) -> Features:
        """The activations of `layer` [N, *its shape] (evaluation mode: dropout off, batch norm on its
        running statistics). A layer with an activation fused into it stores only the activation's
        output: that is what is returned, and `activation` names it."""
        from netc.runtime.activations import layer_activations, stored_tensor

        if layer not in self.graph.by_name:
            names = [node.name for node in self.graph.nodes]
            raise predict_error(f"no layer named '{layer}' in {self.loaded.spec.name}",
                                self.loaded.smap.locate(("layers",)), did_you_mean(layer, names, "layers"), "layers")
        tensor, activation = stored_tensor(self.model.plan, layer)
        parts = [values for _, values in layer_activations(self.model, self._arrays(x, normalized), tensor)]
        shape = (0,) + tuple(self.graph.shape_of(tensor))
        values = np.concatenate(parts) if parts else np.zeros(shape, self.model.dtype)
        return Features(values, layer, tensor, activation)


def class_names(weights: Path, count: int) -> list[str]:
    """The class names in `classes.json` beside the checkpoint (a JSON list of strings, as the run folder
    holds it), or the class indices "0", "1", ... without one."""
    path = Path(weights).with_name("classes.json")
    if not path.is_file():
        return [str(i) for i in range(count)]
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise predict_error(f"cannot read {path}: {exc}", path, "it holds the class names as a JSON list of "
                            "strings; delete it to show class indices") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) != count:
        raise predict_error(f"{path} does not name the network's {count} classes (a JSON list of {count} strings)",
                            path, "is the checkpoint in the run folder of another spec? delete the file to show "
                            "class indices")
    return names
