"""The digits source: scikit-learn's 8x8 handwritten digits, and its seeded stratified split.

Only scikit-learn's shipped data file is read (sklearn itself is not
imported); it is parsed once per process.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from netc.runtime.data.binding import bind_pair
from netc.runtime.data.origin import Origin
from netc.runtime.data.sources import register_source
from netc.spec import models as m
from netc.spec.load import LoadedSpec


@register_source("digits")
def read_digits(loaded: LoadedSpec, src: m.DigitsSource, origin: Origin) -> dict[str, np.ndarray]:
    found = _digits_file()
    if isinstance(found, str):
        origin.fail(f"the digits source needs scikit-learn's data file: {found}",
                    "pip install scikit-learn (only its shipped data file is read)")
    x, y = found
    if src.split == "all":
        x, y = x.copy(), y.copy()
    else:
        train, test = digits_split(y, src.test_fraction, src.split_seed)
        rows = train if src.split == "train" else test
        x, y = x[rows], y[rows]
    origin.desc = f"digits ({src.split} split)"
    return bind_pair(x, y, loaded.spec.inputs, origin, src.source)


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


@lru_cache(maxsize=1)
def _digits_file() -> tuple[np.ndarray, np.ndarray] | str:
    """scikit-learn's digits.csv.gz as (images (1797, 64), labels), without importing sklearn; or why not."""
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
    # the cached arrays are shared by every load: read-only, so no caller can change them
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y
