"""The data a spec names, loaded as plain numpy arrays matched to the spec's inputs.

    ds = load_dataset(loaded, "train")            # Dataset(arrays={"image": (N,1,8,8) f32, "label": (N,) i64})
    ev = load_dataset(loaded, "eval", ds.stats)   # normalized with the TRAIN split's statistics
    ds, ev = load_train_eval(loaded)              # both, every error of either raised together

Sources that produce (features, labels) — xor, spirals, blobs, digits, csv,
mnist-idx — bind the features to the spec's single float input (reshaped to its
shape when the element count matches) and the labels to its single int64
input. npz binds arrays by input name (or by `keys`), npy by its `arrays`
mapping. Paths are relative to the spec's folder (`LoadedSpec.base_dir`).

Everything that can be wrong with data is reported as a `DataError` with code
E-DATA, the file (and CSV row) where it sits, the spec path (`data.train`) and
a hint — never a traceback. Files are checked against their own headers
(npy, npz, idx) before anything is allocated.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import math
import tokenize
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from netc.errors import DataError, Diagnostic, Location, did_you_mean
from netc.spec import models as m
from netc.spec.load import LoadedSpec

CODE = "E-DATA"
NORMALIZE_KINDS = ("none", "standard", "minmax", "max")
_NORMALIZE_CHUNK = 1 << 16  # values normalized at a time: float64 arithmetic, no float64 copy of the data

_MULTI_HINT = (
    "use source 'npz' (arrays named after the inputs, or mapped with `keys`) or 'npy' "
    "(one .npy file per input) to feed several inputs"
)


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class NormStats:
    """Normalization statistics of the TRAIN split, per float input.

    A normalized value is (x - shift) / scale; `shift` and `scale` are float64
    arrays of the input's shape (standard, minmax) or scalars (max). Kind
    "none" has no entries and changes nothing.
    """

    kind: str
    shift: dict[str, np.ndarray] = field(default_factory=dict)
    scale: dict[str, np.ndarray] = field(default_factory=dict)

    def apply(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """New float32 arrays for the inputs this holds statistics for; the rest pass through.

        The arithmetic is float64: near float32's limit, x - shift and the
        scale itself (a span of -3e38..3e38) overflow float32 but not float64.
        A result beyond float32 becomes inf; `load_dataset` reports it.
        """
        out = dict(arrays)
        for name, shift in self.shift.items():
            if name not in out:
                continue
            x = np.asarray(out[name])
            result = np.empty(x.shape, dtype=np.float32)
            rows = max(1, _NORMALIZE_CHUNK // max(1, math.prod(x.shape[1:])))
            with np.errstate(over="ignore"):
                for start in range(0, len(x), rows):
                    part = x[start:start + rows].astype(np.float64)
                    part -= shift
                    part /= self.scale[name]
                    result[start:start + rows] = part
            out[name] = result
        return out


@dataclass
class Dataset:
    """Arrays bound to the spec's inputs: name -> (N, *input.shape).

    float inputs are float32 C-contiguous; int64 label inputs are int64 of shape (N,).
    """

    arrays: dict[str, np.ndarray]
    source: str  # a short description for messages, e.g. "digits (train split)" or a file path
    stats: NormStats | None = None  # the normalization applied (pass to load_dataset(..., "eval"))

    def __len__(self) -> int:
        for array in self.arrays.values():
            return int(array.shape[0])
        return 0


def load_dataset(loaded: LoadedSpec, which: str = "train", stats: NormStats | None = None) -> Dataset:
    """Load `data.train` or `data.eval` of a spec, validated against its inputs and normalized.

    Eval data is normalized with the statistics of the train split: pass the
    train Dataset's `stats`, or leave `stats` None and they are computed here.
    """
    if which not in ("train", "eval"):
        raise ValueError(f"which must be 'train' or 'eval', not {which!r}")
    src = _source(loaded, which)
    kind = src.normalize
    if which == "eval":
        _check_eval_normalize(loaded, src)
    arrays, origin = _read(loaded, src, which)
    if kind == "none":
        stats = NormStats("none")
    elif stats is None or stats.kind != kind:
        if which == "train":
            stats = compute_stats(arrays, loaded.spec.inputs, kind)
        else:
            stats = normalization_stats(loaded, kind)
    return _normalized(arrays, origin, stats)


def load_train_eval(loaded: LoadedSpec) -> tuple[Dataset, Dataset | None]:
    """`data.train` and (when the spec has one) `data.eval`, eval normalized with train's statistics.

    Every DataError of both splits is raised together in one DataError, as
    `netc validate` reports a spec. When train cannot be loaded, eval's own
    checks (its normalize, its files) still run; only its normalization,
    which needs train's statistics, is skipped.
    """
    problems: list[Diagnostic] = []
    train = _collect(problems, load_dataset, loaded, "train")
    data = loaded.spec.data
    evaluation = None
    if data is not None and data.eval is not None:
        before = len(problems)
        _collect(problems, _check_eval_normalize, loaded, data.eval)
        read = _collect(problems, _read, loaded, data.eval, "eval")
        if train is not None and len(problems) == before:
            evaluation = _collect(problems, _normalized, *read, train.stats)
    if problems:
        raise DataError(problems)
    return train, evaluation


def _collect(problems: list[Diagnostic], fn, *args):
    """fn(*args), or None with its DataError's diagnostics added to `problems`."""
    try:
        return fn(*args)
    except DataError as exc:
        problems.extend(exc.diagnostics)
        return None


def _check_eval_normalize(loaded: LoadedSpec, src) -> None:
    train_kind = loaded.spec.data.train.normalize
    if src.normalize != train_kind:
        raise DataError(Diagnostic(
            CODE,
            f"data.eval is normalized with '{src.normalize}' but data.train with '{train_kind}'; "
            "evaluation data must be normalized like the training data",
            loaded.smap.locate(("data", "eval", "normalize")), "data.eval.normalize",
            f"set `normalize: {train_kind}` on data.eval (it reuses the train split's statistics)",
        ))


def _normalized(arrays: dict[str, np.ndarray], origin: _Origin, stats: NormStats) -> Dataset:
    """The arrays normalized with `stats`, every value checked to still fit float32."""
    out = stats.apply(arrays)
    for name in stats.shift:
        if name in out:
            _check_normalized(name, arrays[name], out[name], stats, origin)
    return Dataset(out, origin.desc, stats)


def _check_normalized(name: str, raw: np.ndarray, x: np.ndarray, stats: NormStats, origin: _Origin) -> None:
    """Fail on the first value whose normalized form is beyond float32 (inf), else training "diverges" later."""
    n = len(x)
    flat = x.reshape(n, -1)
    good = np.isfinite(flat).all(axis=1)
    if good.all():
        return
    i = int(np.argmin(good))
    j = int(np.flatnonzero(~np.isfinite(flat[i]))[0])
    value = float(raw.reshape(n, -1)[i, j])
    shift = float(np.broadcast_to(stats.shift[name], x.shape[1:]).reshape(-1)[j])
    scale = float(np.broadcast_to(stats.scale[name], x.shape[1:]).reshape(-1)[j])
    what = origin.feature_name(j) if origin.feature_name else f"feature {j}"
    others = ", ".join(k for k in NORMALIZE_KINDS if k != stats.kind)
    origin.fail(f"{origin.row(i)}: {what} of input '{name}' is {value:g}, which `normalize: {stats.kind}` "
                f"with the train split's statistics (shift {shift:g}, scale {scale:g}) turns into "
                f"{(value - shift) / scale:g}, beyond float32 (±3.4e38)",
                f"rescale {what} in the data (e.g. a unit that keeps it near the train split's range), "
                f"or use another normalization ({others})", name, i)


def normalization_stats(loaded: LoadedSpec, kind: str | None = None) -> NormStats:
    """Statistics of the spec's TRAIN source (after `limit`), for `kind` (default: its `normalize`)."""
    src = _source(loaded, "train")
    kind = src.normalize if kind is None else kind
    if kind == "none":
        return NormStats("none")
    arrays, _ = _read(loaded, src, "train")
    return compute_stats(arrays, loaded.spec.inputs, kind)


def compute_stats(arrays: dict[str, np.ndarray], inputs: dict[str, m.InputSpec], kind: str) -> NormStats:
    """Per-feature (standard, minmax) or global (max) statistics of the float inputs' arrays."""
    if kind not in NORMALIZE_KINDS:
        raise ValueError(f"unknown normalization {kind!r}; one of {', '.join(NORMALIZE_KINDS)}")
    if kind == "none":
        return NormStats("none")
    shift: dict[str, np.ndarray] = {}
    scale: dict[str, np.ndarray] = {}
    for name, inp in inputs.items():
        if inp.dtype != "float32" or name not in arrays:
            continue
        x = arrays[name]
        if kind == "standard":
            mean = x.mean(axis=0, dtype=np.float64)
            std = x.std(axis=0, dtype=np.float64)
            # constant features (std 0, or rounding noise around it) are only centred
            std = np.where(std <= 1e-7 * np.maximum(1.0, np.abs(mean)), 1.0, std)
            shift[name], scale[name] = mean, std
        elif kind == "minmax":
            low = x.min(axis=0).astype(np.float64)
            span = x.max(axis=0).astype(np.float64) - low
            shift[name], scale[name] = low, np.where(span > 0, span, 1.0)
        else:  # max
            peak = float(np.max(np.abs(x))) if x.size else 0.0
            shift[name], scale[name] = np.float64(0.0), np.float64(peak if peak > 0 else 1.0)
    return NormStats(kind, shift, scale)


def read_idx(path: str | Path, spec_path: str = "data") -> np.ndarray:
    """An idx file (MNIST's format, optionally gzipped) as an array of its header's shape and type."""
    path = Path(path)
    raw = _read_bytes(path, spec_path)
    loc = Location(str(path))

    def bad(message: str, hint: str) -> DataError:
        return DataError(Diagnostic(CODE, message, loc, spec_path, hint))

    if len(raw) < 4:
        raise bad(f"idx file is truncated: {len(raw)} bytes, shorter than the 4-byte magic number",
                  "download the file again")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise bad(f"not an idx file: the magic number is 0x{raw[:4].hex()}, expected 0x0000TTNN "
                  "(TT the type code 08/09/0b/0c/0d/0e, NN the number of dimensions)",
                  "is this an MNIST-style idx file (gunzipped or ending in .gz)?")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise bad(f"idx file is truncated: its header announces {ndim} dimensions ({header} bytes) "
                  f"but the file has {len(raw)} bytes", "download the file again")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    # exact Python integers: a damaged header's dimensions can multiply past int64
    count = math.prod(dims)
    need, have = count * dtype.itemsize, len(raw) - header
    shape = "x".join(str(d) for d in dims)
    if have < need:
        raise bad(f"idx file is truncated: its header says {count} values of {dtype.name} (shape {shape}, "
                  f"{need} bytes) but the file holds {have} bytes ({have // dtype.itemsize} values) "
                  f"after its {header}-byte header", "download the file again")
    if have > need:
        raise bad(f"idx file has {have - need} bytes after the {count} values (shape {shape}) its header "
                  "announces", "the file is damaged or not an idx file; download it again")
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def digits_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded stratified split: (train indices, test indices), each sorted, disjoint, covering all.

    The test split holds round(N * test_fraction) samples, spread over the
    classes in proportion to their sizes (largest remainders get the rest).
    """
    labels = np.asarray(labels)
    n = len(labels)
    n_test = min(max(int(round(n * test_fraction)), 1), n - 1)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (n_test / n)
    take = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n_test - int(take.sum())]] += 1
    rng = np.random.default_rng(seed)
    test = []
    for cls, k in zip(classes, take):
        members = np.flatnonzero(labels == cls)
        test.append(rng.permutation(members)[:k])
    test_idx = np.sort(np.concatenate(test))
    mask = np.ones(n, dtype=bool)
    mask[test_idx] = False
    return np.flatnonzero(mask), test_idx


# --------------------------------------------------------------------------- where data comes from


@dataclass
class _Origin:
    """Where the arrays came from, for messages."""

    desc: str
    file: str  # default file of a Location (the data file, or the spec for generated data)
    path: str  # spec path, e.g. "data.train"
    line: int = 0  # line of `file` for errors that are not about one row (the spec's data.train line)
    col: int = 0
    files: dict[str, str] = field(default_factory=dict)  # input -> its own file (npy, idx)
    rows: Callable[[int], int] | None = None  # sample index -> 1-based CSV line
    feature_name: Callable[[int], str] | None = None  # flat feature index -> CSV column name

    def loc(self, name: str | None = None, index: int | None = None) -> Location:
        file = self.files.get(name, self.file) if name is not None else self.file
        if file != self.file:
            return Location(file)
        if index is not None and self.rows is not None:
            return Location(file, self.rows(index), 1)
        return Location(file, self.line, self.col)

    def row(self, index: int) -> str:
        if self.rows is not None:
            return f"row {self.rows(index)}"
        return f"sample {index}"

    def fail(self, message: str, hint: str = "", name: str | None = None, index: int | None = None):
        raise DataError(Diagnostic(CODE, message, self.loc(name, index), self.path, hint))


def _source(loaded: LoadedSpec, which: str):
    data = loaded.spec.data
    if data is None:
        raise DataError(Diagnostic(
            CODE, "the spec has no data section", loaded.smap.locate(()), "data",
            "add `data: {train: {source: ...}, eval: {source: ...}}` (sources: xor, spirals, blobs, "
            "digits, npz, npy, csv, mnist-idx)",
        ))
    src = getattr(data, which)
    if src is None:
        raise DataError(Diagnostic(
            CODE, "the spec has no data.eval", loaded.smap.locate(("data",)), "data.eval",
            "add `eval: {source: ...}` under data (e.g. the train source with `split: test`)",
        ))
    return src


def _read(loaded: LoadedSpec, src, which: str) -> tuple[dict[str, np.ndarray], _Origin]:
    """The source's arrays bound to the inputs, limited and validated (not normalized)."""
    path = f"data.{which}"
    spec_loc = loaded.smap.locate(("data", which))
    origin = _Origin(src.source, spec_loc.file, path, spec_loc.line, spec_loc.col)
    inputs = loaded.spec.inputs
    if isinstance(src, (m.NpzSource, m.NpySource)):
        arrays = _read_npz(loaded, src, origin) if isinstance(src, m.NpzSource) else _read_npy(loaded, src, origin)
    else:
        if isinstance(src, m.XorSource):
            x, y = _xor(src)
            origin.desc = f"xor ({src.n} samples)"
        elif isinstance(src, m.SpiralsSource):
            x, y = _spirals(src)
            origin.desc = f"spirals ({src.classes} classes)"
        elif isinstance(src, m.BlobsSource):
            x, y = _blobs(src)
            origin.desc = f"blobs ({src.classes} classes)"
        elif isinstance(src, m.DigitsSource):
            x, y = _digits(src, origin)
            origin.desc = f"digits ({src.split} split)"
        elif isinstance(src, m.CsvSource):
            x, y = _read_csv(loaded, src, origin)
        elif isinstance(src, m.IdxSource):
            x, y = _read_idx_pair(loaded, src, origin)
        else:  # pragma: no cover - the spec models list every source
            raise TypeError(f"unknown data source {src!r}")
        arrays = _bind_pair(x, y, inputs, origin, src.source)
    arrays = _same_length(arrays, origin)
    if src.limit is not None:
        arrays = {name: a[: src.limit] for name, a in arrays.items()}
    return _validate(arrays, inputs, origin), origin


def _bind_pair(x: np.ndarray, y: np.ndarray, inputs: dict[str, m.InputSpec], origin: _Origin,
               source: str) -> dict[str, np.ndarray]:
    floats = [n for n, i in inputs.items() if i.dtype == "float32"]
    ints = [n for n, i in inputs.items() if i.dtype == "int64"]
    if len(floats) != 1 or len(ints) > 1:
        parts = []
        if len(floats) != 1:
            parts.append(f"{len(floats)} float inputs" + (f" ({', '.join(floats)})" if floats else ""))
        if len(ints) > 1:
            parts.append(f"{len(ints)} int64 inputs ({', '.join(ints)})")
        origin.fail(f"the {source} source gives one feature array and one label array, but the spec has "
                    f"{' and '.join(parts)}", _MULTI_HINT if floats else
                    "add a float32 input for the features, e.g. `x: {shape: [...]}`")
    name = floats[0]
    want = tuple(inputs[name].shape)
    found = x.shape[1:]
    if found != want:
        if _count(found) != _count(want):
            origin.fail(f"input '{name}' expects samples of shape {list(want)} ({_count(want)} values) but "
                        f"{origin.desc} gives samples of shape {list(found)} ({_count(found)} values)",
                        f"set `inputs.{name}.shape` to {list(found)} (or any shape of {_count(found)} values)",
                        name)
        x = x.reshape((x.shape[0],) + want)
    out = {name: x}
    if ints:
        out[ints[0]] = y
    return out


def _same_length(arrays: dict[str, np.ndarray], origin: _Origin) -> dict[str, np.ndarray]:
    for name, a in arrays.items():
        if a.ndim == 0:
            origin.fail(f"the array for input '{name}' is a single value, not one entry per sample",
                        "store an array whose first dimension is the sample", name)
    lengths = {name: int(a.shape[0]) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"{name} {n}" for name, n in lengths.items())
        origin.fail(f"the arrays have different numbers of samples ({listing})",
                    "every input needs one entry per sample, in the same order")
    if not lengths or next(iter(lengths.values())) == 0:
        origin.fail(f"{origin.desc} holds no samples", "the data is empty; check the file or the source's options")
    return arrays


# --------------------------------------------------------------------------- checks and conversions


def _count(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def _fits(found: tuple, want: tuple) -> bool:
    """Whether samples of shape `found` may be reshaped to `want` without reordering meaning."""
    if found == want:
        return True
    if _count(found) != _count(want):
        return False
    squeeze_found = tuple(d for d in found if d != 1)
    squeeze_want = tuple(d for d in want if d != 1)
    # same dims up to size-1 axes, or flattening/unflattening row-major
    return squeeze_found == squeeze_want or len(squeeze_found) <= 1 or len(squeeze_want) <= 1


def _validate(arrays: dict[str, np.ndarray], inputs: dict[str, m.InputSpec], origin: _Origin):
    out = {}
    for name, inp in inputs.items():
        if inp.dtype == "int64":
            out[name] = _check_labels(name, arrays[name], inp, origin)
        else:
            out[name] = _check_features(name, arrays[name], inp, origin)
    return out


def _check_features(name: str, a: np.ndarray, inp: m.InputSpec, origin: _Origin) -> np.ndarray:
    if a.dtype.kind not in "biuf":
        origin.fail(f"input '{name}' needs numbers but {origin.desc} holds {a.dtype} data for it",
                    "store the features as a numeric (float or integer) array", name)
    want, found = tuple(inp.shape), a.shape[1:]
    if not _fits(found, want):
        hint = f"set `inputs.{name}.shape` to {list(found)}, or reshape the data"
        if sorted(found) == sorted(want):
            hint = (f"the axes are in another order: transpose the array (e.g. channels-last -> "
                    f"channels-first: np.moveaxis(x, -1, 1)), or set `inputs.{name}.shape` to {list(found)}")
        origin.fail(f"input '{name}' expects samples of shape {list(want)} but {origin.desc} has shape "
                    f"{list(found)} (array {list(a.shape)})", hint, name)
    n = a.shape[0]
    with np.errstate(all="ignore"):  # values beyond float32 become inf, reported below
        x = np.array(a.reshape((n,) + want), dtype=np.float32, order="C", copy=True)
        flat = x.reshape(n, -1)
        good = np.isfinite(flat).all(axis=1)
    if not good.all():
        i = int(np.argmin(good))
        j = int(np.flatnonzero(~np.isfinite(flat[i]))[0])
        value = a.reshape(n, -1)[i, j]
        what = origin.feature_name(j) if origin.feature_name else f"feature {j}"
        origin.fail(f"{origin.row(i)}: {what} of input '{name}' is {float(value)!r}, not a finite float32 number",
                    "remove or impute NaN/inf values (and values beyond ±3.4e38) before training", name, i)
    return x


def _check_labels(name: str, a: np.ndarray, inp: m.InputSpec, origin: _Origin) -> np.ndarray:
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        origin.fail(f"label input '{name}' takes one class index per sample (array shape [N]) but "
                    f"{origin.desc} has shape {list(a.shape)}",
                    "one-hot labels? store np.argmax(onehot, axis=1) instead", name)
    if a.dtype.kind == "f":
        origin.fail(f"label input '{name}' needs integer class indices but {origin.desc} holds {a.dtype} data",
                    "store the labels as integers, e.g. labels.astype(np.int64)", name)
    if a.dtype.kind not in "biu":
        origin.fail(f"label input '{name}' needs integer class indices but {origin.desc} holds {a.dtype} data",
                    "store the labels as integers 0..classes-1", name)
    classes = inp.classes
    bad = (a < 0) | (a >= classes)
    if bad.any():
        i = int(np.argmax(bad))
        origin.fail(f"{origin.row(i)}: label {int(a[i])} is outside [0, {classes}) "
                    f"(inputs.{name}.classes is {classes})",
                    f"labels are class indices 0..{classes - 1}; fix the data or raise inputs.{name}.classes",
                    name, i)
    return np.ascontiguousarray(a, dtype=np.int64)


# --------------------------------------------------------------------------- generated sources


_XOR_CORNERS = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
_XOR_LABELS = np.array([0, 1, 1, 0], dtype=np.int64)


def _xor(src: m.XorSource) -> tuple[np.ndarray, np.ndarray]:
    """n samples cycling through the four corners; Gaussian noise of std `noise` (none by default)."""
    corner = np.arange(src.n) % 4
    x = _XOR_CORNERS[corner].copy()
    if src.noise > 0:
        x += np.random.default_rng(src.seed).normal(0.0, src.noise, x.shape)
    return x, _XOR_LABELS[corner]


def _spirals(src: m.SpiralsSource) -> tuple[np.ndarray, np.ndarray]:
    """Arm k: radius r from 0 to 1, angle 2*pi*k/classes + 4r + noise (samples cycle through the arms)."""
    rng = np.random.default_rng(src.seed)
    labels = np.arange(src.n, dtype=np.int64) % src.classes
    radius = np.empty(src.n)
    for k in range(src.classes):
        members = np.flatnonzero(labels == k)
        radius[members] = np.linspace(0.0, 1.0, len(members)) if len(members) > 1 else 0.5
    angle = 2.0 * np.pi * labels / src.classes + 4.0 * radius + rng.normal(0.0, 1.0, src.n) * src.noise
    x = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1)
    return x, labels


def _blobs(src: m.BlobsSource) -> tuple[np.ndarray, np.ndarray]:
    """Centers uniform in [-10, 10]^features (seeded); samples cycle through the blobs."""
    rng = np.random.default_rng(src.seed)
    centers = rng.uniform(-10.0, 10.0, (src.classes, src.features))
    labels = np.arange(src.n, dtype=np.int64) % src.classes
    x = centers[labels] + rng.normal(0.0, src.std, (src.n, src.features))
    return x, labels


@lru_cache(maxsize=1)
def _digits_file() -> tuple[np.ndarray, np.ndarray] | str:
    """scikit-learn's digits.csv.gz as (images (1797, 64), labels), without importing sklearn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return "scikit-learn is not installed"
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            break
    else:
        return "scikit-learn's datasets/data/digits.csv.gz was not found"
    table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    x, y = table[:, :-1], table[:, -1].astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _digits(src: m.DigitsSource, origin: _Origin) -> tuple[np.ndarray, np.ndarray]:
    found = _digits_file()
    if isinstance(found, str):
        origin.fail(f"the digits source needs scikit-learn's data file: {found}",
                    "pip install scikit-learn (only its shipped data file is read)")
    x, y = found
    if src.split == "all":
        return x.copy(), y.copy()
    train, test = digits_split(y, src.test_fraction, src.split_seed)
    rows = train if src.split == "train" else test
    return x[rows], y[rows]


# --------------------------------------------------------------------------- files


def _resolve(loaded: LoadedSpec, rel: str) -> Path:
    path = Path(rel).expanduser()
    return path if path.is_absolute() else Path(loaded.base_dir) / path


def _missing(path: Path, origin: _Origin, what: str = "file"):
    hint = "relative paths start at the spec's folder"
    parent = path.parent
    if parent.is_dir():
        near = sorted(p.name for p in parent.iterdir())[:200]
        if near:
            hint = did_you_mean(path.name, near, f"files in {parent}")
    else:
        hint = f"the folder {parent} does not exist; relative paths start at the spec's folder"
    raise DataError(Diagnostic(CODE, f"{what} not found: {path}", Location(str(path)), origin.path, hint))


def _read_bytes(path: Path, spec_path: str) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(Diagnostic(CODE, f"cannot read {path}: {exc.strerror or exc}", Location(str(path)),
                                   spec_path, "check the path and the file's permissions")) from None
    if raw[:2] == b"\x1f\x8b":  # gzip, whatever the name says
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(Diagnostic(CODE, f"{path} is a damaged or truncated gzip file ({exc})",
                                       Location(str(path)), spec_path, "download the file again")) from None
    return raw


_DAMAGED_HINT = "the file was cut short or damaged (an interrupted download or copy?)"


def _npy_problem(handle, total: int, holder: str) -> str | None:
    """What is wrong with the .npy bytes in `handle` (`total` bytes), judged from the header alone; None if sound.

    np.load allocates the header's shape before it reads, so a truncated file
    whose header claims terabytes fails with MemoryError; a garbled header
    fails inside numpy's header parser. Bytes that are not .npy at all are left
    to np.load, which tells an .npz archive or pickled data apart.
    """
    fmt = np.lib.format
    if handle.read(len(fmt.MAGIC_PREFIX)) != fmt.MAGIC_PREFIX:
        return None
    handle.seek(0)
    try:
        version = fmt.read_magic(handle)
        if version not in ((1, 0), (2, 0), (3, 0)):
            return f"has an unknown .npy format version {version[0]}.{version[1]}"
        # version 3.0 is 2.0 with a UTF-8 header: the same layout, and shape and dtype read the same
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read_header(handle)
    except (ValueError, SyntaxError, tokenize.TokenError) as exc:
        return f"has a damaged .npy header ({exc.args[0] if exc.args else type(exc).__name__})"
    if any(d < 0 for d in shape):
        return f"has a damaged .npy header (negative dimension in shape {list(shape)})"
    if dtype.hasobject:
        return None  # pickled data: np.load refuses it (allow_pickle=False)
    header = handle.tell()
    need, have = math.prod(shape) * dtype.itemsize, total - header  # exact: a damaged shape can pass int64
    if have < need:
        return (f"is truncated: its header says shape {list(shape)} of {dtype} ({need} bytes), "
                f"{holder} holds {have} bytes after its {header}-byte header")
    return None


def _read_npz(loaded: LoadedSpec, src: m.NpzSource, origin: _Origin) -> dict[str, np.ndarray]:
    path = _resolve(loaded, src.path)
    origin.desc, origin.file, origin.line, origin.col = str(path), str(path), 0, 0
    if not path.is_file():
        _missing(path, origin)
    inputs = loaded.spec.inputs
    keys = dict(src.keys or {})
    for name in keys:
        if name not in inputs:
            raise DataError(Diagnostic(CODE, f"keys names '{name}', which is not an input of the spec",
                                       loaded.smap.locate(("data", origin.path.split(".")[1], "keys", name)),
                                       f"{origin.path}.keys.{name}", did_you_mean(name, list(inputs), "inputs")))
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        origin.fail(f"cannot read {path} as an .npz archive: {exc}",
                    "write it with np.savez(path, name=array, ...); object (pickled) arrays are refused")
    if isinstance(npz, np.ndarray):
        origin.fail(f"{path} is a .npy file, not an .npz archive", "use `source: npy` with `arrays: {input: path}`")
    with npz, zipfile.ZipFile(path) as archive:
        available = list(npz.files)
        out = {}
        for name in inputs:
            key = keys.get(name, name)
            if key not in available:
                listing = ", ".join(available) if available else "none"
                hint = did_you_mean(key, available, "arrays in the file") if available else "the archive is empty"
                if name not in keys:
                    hint += f"; or map the input to an array with `keys: {{{name}: <array name>}}`"
                origin.fail(f"{path} has no array '{key}' for input '{name}' (arrays in the file: {listing})",
                            hint, name)
            hint = "write it with np.savez(path, name=array, ...); object (pickled) arrays are refused"
            try:
                # npz[key] reads member `key` if the archive has one, else `key`.npy (as numpy does)
                member = archive.getinfo(key if key in archive.namelist() else key + ".npy")
                with archive.open(member) as handle:
                    problem = _npy_problem(handle, member.file_size, f"the archive member {member.filename}")
                if problem:
                    origin.fail(f"array '{key}' of {path} {problem}",
                                f"{_DAMAGED_HINT}; write it again with np.savez(path, name=array, ...)", name)
                out[name] = npz[key]
            except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
                origin.fail(f"cannot read array '{key}' of {path}: {exc}", hint, name)
            if not isinstance(out[name], np.ndarray):  # numpy hands back a member that is not .npy as bytes
                origin.fail(f"array '{key}' of {path} is not a .npy array (the member starts with "
                            f"{out[name][:8]!r})", "write the archive with np.savez(path, name=array, ...)", name)
    return out


def _read_npy(loaded: LoadedSpec, src: m.NpySource, origin: _Origin) -> dict[str, np.ndarray]:
    inputs = loaded.spec.inputs
    which = origin.path.split(".")[1]
    for name in src.arrays:
        if name not in inputs:
            raise DataError(Diagnostic(CODE, f"arrays names '{name}', which is not an input of the spec",
                                       loaded.smap.locate(("data", which, "arrays", name)),
                                       f"{origin.path}.arrays.{name}", did_you_mean(name, list(inputs), "inputs")))
    for name in inputs:
        if name not in src.arrays:
            raise DataError(Diagnostic(CODE, f"the npy source gives no array for input '{name}'",
                                       loaded.smap.locate(("data", which, "arrays")), f"{origin.path}.arrays",
                                       f"add `{name}: <file>.npy` under arrays"))
    paths = {name: _resolve(loaded, rel) for name, rel in src.arrays.items()}
    origin.desc = ", ".join(str(p) for p in paths.values())
    origin.files = {name: str(p) for name, p in paths.items()}
    out = {}
    for name in inputs:
        path = paths[name]
        if not path.is_file():
            _missing(path, origin)
        hint = "write it with np.save(path, array); object (pickled) arrays are refused"
        try:
            with path.open("rb") as handle:
                problem = _npy_problem(handle, path.stat().st_size, "the file")
            if problem:
                origin.fail(f"{path} {problem}", f"{_DAMAGED_HINT}; write it again with np.save(path, array)", name)
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            origin.fail(f"cannot read {path} as a .npy file: {exc}", hint, name)
        if not isinstance(array, np.ndarray):
            array.close()
            origin.fail(f"{path} is an .npz archive, not a .npy file",
                        "use `source: npz` with its `path`", name)
        out[name] = array
    # messages about one input name its own file
    origin.desc = origin.desc if len(paths) > 1 else str(next(iter(paths.values())))
    return out


def _read_idx_pair(loaded: LoadedSpec, src: m.IdxSource, origin: _Origin) -> tuple[np.ndarray, np.ndarray]:
    folder = _resolve(loaded, src.path)
    origin.desc = f"{folder} ({src.split} split)"
    if not folder.is_dir():
        raise DataError(Diagnostic(CODE, f"folder not found: {folder}", Location(str(folder)), origin.path,
                                   "path is the folder holding the idx files, relative to the spec's folder"))
    prefix = "train" if src.split == "train" else "t10k"

    def find(kind: str, nd: int) -> Path:
        names = [f"{prefix}-{kind}-idx{nd}-ubyte", f"{prefix}-{kind}.idx{nd}-ubyte"]
        for name in names:
            for suffix in ("", ".gz"):
                if (folder / (name + suffix)).is_file():
                    return folder / (name + suffix)
        present = sorted(p.name for p in folder.iterdir())
        raise DataError(Diagnostic(
            CODE, f"no {names[0]} (or {names[0]}.gz) in {folder}", Location(str(folder / names[0])), origin.path,
            f"files in the folder: {', '.join(present[:20]) or 'none'}" + (" ..." if len(present) > 20 else ""),
        ))

    images_path, labels_path = find("images", 3), find("labels", 1)
    images, labels = read_idx(images_path, origin.path), read_idx(labels_path, origin.path)
    if images.ndim < 2:
        raise DataError(Diagnostic(CODE, f"an images file holds an array of samples (2 or more dimensions) but "
                                         f"{images_path} has shape {list(images.shape)}", Location(str(images_path)),
                                   origin.path, "is this the labels file?"))
    if labels.ndim != 1:
        raise DataError(Diagnostic(CODE, f"a labels file holds one dimension (one label per sample) but "
                                         f"{labels_path} has shape {list(labels.shape)}", Location(str(labels_path)),
                                   origin.path, "is this the images file?"))
    if len(images) != len(labels):
        raise DataError(Diagnostic(CODE, f"{images_path} has {len(images)} images but {labels_path} has "
                                         f"{len(labels)} labels", Location(str(labels_path)), origin.path,
                                   "the images and labels files must belong to the same split"))
    floats = [n for n, i in loaded.spec.inputs.items() if i.dtype == "float32"]
    ints = [n for n, i in loaded.spec.inputs.items() if i.dtype == "int64"]
    if floats:
        origin.files[floats[0]] = str(images_path)
    if ints:
        origin.files[ints[0]] = str(labels_path)
    if src.limit is not None:  # spare converting samples that are not used
        images, labels = images[: src.limit], labels[: src.limit]
    return images, labels


def _read_csv(loaded: LoadedSpec, src: m.CsvSource, origin: _Origin) -> tuple[np.ndarray, np.ndarray]:
    path = _resolve(loaded, src.path)
    file = str(path)
    origin.desc, origin.file, origin.line, origin.col = file, file, 0, 0
    if not path.is_file():
        _missing(path, origin)
    which = origin.path.split(".")[1]

    def spec_error(message: str, hint: str):
        raise DataError(Diagnostic(CODE, message, loaded.smap.locate(("data", which, "label")),
                                   f"{origin.path}.label", hint))

    def fail_at(line: int, message: str, hint: str, col: int = 1):
        raise DataError(Diagnostic(CODE, message, Location(file, line, col), origin.path, hint))

    # the header (or first row) names the columns
    names: list[str] | None = None
    try:
        with _open_text(path) as handle:
            first = next(csv.reader(handle, delimiter=src.delimiter), None)
    except UnicodeDecodeError:
        fail_at(0, f"{path} is not UTF-8 text", "save the CSV as UTF-8")
    except (OSError, EOFError, zlib.error, csv.Error) as exc:
        fail_at(0, f"cannot read {path}: {exc}", "check the file")
    if first is None:
        origin.fail(f"{path} is empty", "the CSV needs one sample per row")
    if src.header:
        names = [cell.strip() for cell in first]

    # fast path: numpy's C parser; on failure, find the exact cell
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _open_text(path) as handle:
                # numpy reads a plain file faster by name than through a text handle
                source = handle if _is_gzip(path) else str(path)
                table = np.loadtxt(source, delimiter=src.delimiter, skiprows=1 if src.header else 0,
                                   dtype=np.float64, ndmin=2, comments=None, quotechar='"', max_rows=src.limit,
                                   encoding=_CSV_ENCODING)
    except (ValueError, UnicodeDecodeError, EOFError, OSError, zlib.error):
        _csv_find_error(path, src, names, fail_at)
        raise  # pragma: no cover - _csv_find_error always raises
    n = table.shape[0]
    if n == 0:
        origin.fail(f"{path} has no data rows" + (" (only a header)" if src.header else ""),
                    "the CSV needs one sample per row")
    ncols = table.shape[1]
    if names is not None and len(names) != ncols:
        fail_at(1, f"the header has {len(names)} columns but the data rows have {ncols}",
                "every row needs one value per header column")
    if ncols < 2:
        origin.fail(f"{path} has {ncols} column; a CSV source needs feature columns and a label column",
                    f"check the delimiter (now '{src.delimiter}')")

    # which column is the label
    label = src.label
    if isinstance(label, str):
        if names is None:
            spec_error(f"label names column '{label}' but the CSV has no header (header: false)",
                       "give the label column as an index (0-based; -1 for the last), or set header: true")
        if label not in names:
            spec_error(f"{path} has no column '{label}'", did_you_mean(label, names, "columns"))
        label_col = names.index(label)
    else:
        label_col = label if label >= 0 else ncols + label
        if not 0 <= label_col < ncols:
            spec_error(f"label column {label} is outside the {ncols} columns of {path}",
                       f"an index 0..{ncols - 1}, or -1 for the last column")

    lines = _LazyLines(path, src)
    origin.rows = lines
    feature_cols = [c for c in range(ncols) if c != label_col]

    def col_name(j: int) -> str:
        c = feature_cols[j]
        return f"column '{names[c]}'" if names else f"column {c}"

    origin.feature_name = col_name
    y = table[:, label_col]
    # beyond 2**53 a float no longer holds the integer written (and past int64 the cast wraps): such
    # labels, like non-integers, are reported as the file spells them
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(y) & (y == np.round(y)) & (np.abs(y) < 2.0 ** 53)
    if not whole.all():
        i = int(np.argmin(whole))
        column = f"'{names[label_col]}'" if names else str(label_col)
        ints = [inp for inp in loaded.spec.inputs.values() if inp.dtype == "int64"]
        classes = f"0..{ints[0].classes - 1}" if len(ints) == 1 else "0..classes-1"
        integral = bool(np.isfinite(y[i]) and y[i] == np.round(y[i]))
        problem = f"far outside the class indices {classes}" if integral else "not an integer class index"
        fail_at(lines(i), f"row {lines(i)}: label column {column} holds {_csv_cell(path, src, i, label_col)!r}, "
                f"{problem}", f"labels are class indices {classes}")
    labels = y.astype(np.int64)
    features = np.ascontiguousarray(table[:, feature_cols])
    return features, labels


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as probe:
        return probe.read(2) == b"\x1f\x8b"


_CSV_ENCODING = "utf-8-sig"  # UTF-8, dropping the byte-order mark spreadsheet programs write before the header


def _open_text(path: Path):
    if _is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=_CSV_ENCODING, newline="")
    return path.open("r", encoding=_CSV_ENCODING, newline="")


def _csv_rows(handle, src: m.CsvSource):
    """(1-based line, cells) of each data row: the header and blank lines skipped, as numpy does."""
    reader = csv.reader(handle, delimiter=src.delimiter)
    if src.header:
        next(reader, None)
    start = reader.line_num + 1
    for row in reader:
        line, start = start, reader.line_num + 1
        if row:
            yield line, row


def _csv_cell(path: Path, src: m.CsvSource, index: int, col: int) -> str:
    """The text of sample `index`'s cell in column `col`, as written in the file (read only for a message)."""
    with _open_text(path) as handle:
        for k, (_, row) in enumerate(_csv_rows(handle, src)):
            if k == index:
                return row[col].strip()
    return "?"  # pragma: no cover - the index comes from the parsed table


class _LazyLines:
    """Sample index -> 1-based line of a CSV (blank lines skipped, as numpy does); read only when asked."""

    def __init__(self, path: Path, src: m.CsvSource):
        self.path, self.src, self.lines = path, src, None

    def __call__(self, index: int) -> int:
        if self.lines is None:
            with _open_text(self.path) as handle:
                self.lines = [line for line, _ in _csv_rows(handle, self.src)]
        return self.lines[index] if index < len(self.lines) else index + 1 + int(self.src.header)


def _csv_find_error(path: Path, src: m.CsvSource, names, fail_at) -> None:
    """Scan the CSV row by row for the first row of a wrong width or a cell that is not a number."""
    expected = len(names) if names is not None else None
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle, delimiter=src.delimiter)
            if src.header:
                next(reader, None)
            start = reader.line_num + 1
            seen = 0
            for row in reader:
                line = start
                start = reader.line_num + 1
                if not row:
                    continue
                if src.limit is not None and seen >= src.limit:
                    break
                seen += 1
                if expected is None:
                    expected = len(row)
                if len(row) != expected:
                    against = "the header has" if names is not None else "the first row has"
                    width = f"{len(row)} column" + ("" if len(row) == 1 else "s")
                    fail_at(line, f"row {line} has {width} but {against} {expected}",
                            f"check the delimiter ('{src.delimiter}') and quoting of row {line}")
                for c, cell in enumerate(row):
                    try:
                        float(cell)
                    except ValueError:
                        column = f"column '{names[c]}' ({c})" if names is not None else f"column {c}"
                        shown = repr(cell) if cell.strip() else "an empty cell"
                        col = sum(len(prev) + 1 for prev in row[:c]) + 1
                        fail_at(line, f"row {line}, {column}: cannot read {shown} as a number",
                                "every cell must be a number (the label column an integer class index)", col)
    except UnicodeDecodeError:
        fail_at(0, f"{path} is not UTF-8 text", "save the CSV as UTF-8")
    except (OSError, EOFError, zlib.error, csv.Error) as exc:
        fail_at(0, f"cannot read {path}: {exc}", "check the file")
    fail_at(0, f"cannot read {path} as numbers", "check the delimiter, quoting and that every cell is a number")


_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
