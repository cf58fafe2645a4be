"""Binding a source's arrays to the spec's inputs, and checking them against each input.

A (features, labels) source binds its features to the spec's single float
input (reshaped to its shape when the element count matches) and its labels
to its single int64 input (`bind_pair`). Whatever the source, every input's
array is then checked: one entry per sample, the same count for all
(`same_length`), and numbers of the input's shape and kind (`validate`).
"""

from __future__ import annotations

import numpy as np

from netc.runtime.data.origin import Origin
from netc.spec import models as m

_MULTI_HINT = (
    "use source 'npz' (arrays named after the inputs, or mapped with `keys`) or 'npy' "
    "(one .npy file per input) to feed several inputs"
)


def bind_pair(x: np.ndarray, y: np.ndarray, inputs: dict[str, m.InputSpec], origin: Origin,
              source: str) -> dict[str, np.ndarray]:
    """{float input: x, int64 input: y}; x reshaped to the input's shape when the element count matches."""
    floats = [n for n, i in inputs.items() if i.dtype == "float32"]
    ints = [n for n, i in inputs.items() if i.classes is not None]
    indexed = [n for n, i in inputs.items() if i.indices is not None]
    if indexed:
        origin.fail(f"the {source} source gives one feature array and one label array, but the spec has "
                    f"index input{'s' if len(indexed) > 1 else ''} {', '.join(indexed)}", _MULTI_HINT)
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


def same_length(arrays: dict[str, np.ndarray], origin: Origin) -> dict[str, np.ndarray]:
    """The arrays, checked to hold one entry per sample, the same (non-zero) number of samples each."""
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


def validate(arrays: dict[str, np.ndarray], inputs: dict[str, m.InputSpec], origin: Origin):
    """Each input's array checked and converted: float32 C-contiguous features, int64 (N,) labels,
    int64 (N, *shape) indices."""
    out = {}
    for name, inp in inputs.items():
        if inp.indices is not None:
            out[name] = _check_indices(name, arrays[name], inp, origin)
        elif inp.dtype == "int64":
            out[name] = _check_labels(name, arrays[name], inp, origin)
        else:
            out[name] = _check_features(name, arrays[name], inp, origin)
    return out


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


def _check_features(name: str, a: np.ndarray, inp: m.InputSpec, origin: Origin) -> np.ndarray:
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


def _check_labels(name: str, a: np.ndarray, inp: m.InputSpec, origin: Origin) -> np.ndarray:
    if inp.shape:  # a label at every step: [N, T]
        if a.shape[1:] != tuple(inp.shape):
            origin.fail(f"label input '{name}' takes a class index at each of {inp.shape[0]} steps per sample (array "
                        f"shape [N, {inp.shape[0]}]) but {origin.desc} has shape {list(a.shape)}",
                        f"set `inputs.{name}.shape` to match the data, or store [N, {inp.shape[0]}] labels", name)
    elif a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1 + len(inp.shape):
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
        i = int(np.argmax(bad.reshape(len(a), -1).any(axis=1)))
        value = a[i][bad[i]].flat[0] if a.ndim > 1 else a[i]
        origin.fail(f"{origin.row(i)}: label {int(value)} is outside [0, {classes}) "
                    f"(inputs.{name}.classes is {classes})",
                    f"labels are class indices 0..{classes - 1}; fix the data or raise inputs.{name}.classes",
                    name, i)
    return np.ascontiguousarray(a, dtype=np.int64)


def _check_indices(name: str, a: np.ndarray, inp: m.InputSpec, origin: Origin) -> np.ndarray:
    want, found = tuple(inp.shape), a.shape[1:]
    if not _fits(found, want):
        origin.fail(f"index input '{name}' expects samples of shape {list(want)} but {origin.desc} has shape "
                    f"{list(found)} (array {list(a.shape)})", f"set `inputs.{name}.shape` to {list(found)}", name)
    if a.dtype.kind not in "biu":
        origin.fail(f"index input '{name}' needs integer indices but {origin.desc} holds {a.dtype} data",
                    "store the indices as integers, e.g. tokens.astype(np.int64)", name)
    n, limit = a.shape[0], inp.indices
    flat = a.reshape(n, -1)
    bad = (flat < 0) | (flat >= limit)
    if bad.any():
        i = int(np.argmax(bad.any(axis=1)))
        j = int(np.argmax(bad[i]))
        origin.fail(f"{origin.row(i)}: index {int(flat[i, j])} (position {j}) of input '{name}' is outside "
                    f"[0, {limit}) (inputs.{name}.indices is {limit})",
                    f"indices are rows of the table 0..{limit - 1}; fix the data or raise inputs.{name}.indices "
                    "(and the embedding's num)", name, i)
    return np.ascontiguousarray(a.reshape((n,) + want), dtype=np.int64)
