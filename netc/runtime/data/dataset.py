"""A loaded split (`Dataset`), the train split's normalization statistics (`NormStats`), and normalizing.

Statistics always come from the TRAIN split; eval data is normalized with
them. Normalizing computes in float64 and stores float32, and a value that
no longer fits float32 is reported where it sits in the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from netc.runtime.data.origin import Origin
from netc.spec import models as m

NORMALIZE_KINDS = ("none", "standard", "minmax", "max")
_NORMALIZE_CHUNK = 1 << 16  # values normalized at a time: float64 arithmetic, no float64 copy of the data


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
    classes: list[str] | None = None  # class names in label order (the images source's folders), else None

    def __len__(self) -> int:
        for array in self.arrays.values():
            return int(array.shape[0])
        return 0


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


def normalized(arrays: dict[str, np.ndarray], origin: Origin, stats: NormStats) -> Dataset:
    """The arrays normalized with `stats`, every value checked to still fit float32."""
    out = stats.apply(arrays)
    for name in stats.shift:
        if name in out:
            _check_normalized(name, arrays[name], out[name], stats, origin)
    return Dataset(out, origin.desc, stats, origin.classes)


def _check_normalized(name: str, raw: np.ndarray, x: np.ndarray, stats: NormStats, origin: Origin) -> None:
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
