"""`data.eval: {from_train: fraction}`: evaluation samples held out from the train source.

The split is taken after the train source's `limit`, seeded, and (with
`stratify`, the default, and a label input) stratified by class: each class
gives its share of the held-out samples. Sizes follow scikit-learn's
train_test_split: ceil(N * fraction) held out, the rest kept for training.
Both parts keep the source's sample order.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from netc.errors import DataError, Diagnostic
from netc.runtime.data.origin import CODE, Origin
from netc.spec import models as m
from netc.spec.load import LoadedSpec


def split_indices(n: int, fraction: float, seed: int,
                  labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out): sorted, disjoint indices covering range(n); stratified by `labels` when given.

    Stratified, each class gives round-ish(count * held / n) samples: the floors,
    then one more to the classes with the largest remainders (as digits_split).
    """
    held = held_count(n, fraction)
    rng = np.random.default_rng(seed)
    if labels is None:
        chosen = rng.permutation(n)[:held]
    else:
        classes, counts = np.unique(labels, return_counts=True)
        quota = counts * (held / n)
        take = np.floor(quota).astype(np.int64)
        order = np.argsort(-(quota - take), kind="stable")
        take[order[: held - int(take.sum())]] += 1
        chosen = np.concatenate([rng.permutation(np.flatnonzero(labels == cls))[:k]
                                 for cls, k in zip(classes, take)])
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def held_count(n: int, fraction: float) -> int:
    """ceil(n * fraction), as scikit-learn; the tolerance keeps 0.1 * 30 at 3 (it is 3.0000000000000004)."""
    return math.ceil(n * fraction - 1e-9)


def split_train(loaded: LoadedSpec, arrays: dict[str, np.ndarray],
                origin: Origin) -> tuple[tuple[dict, Origin], tuple[dict, Origin]]:
    """The train source's arrays split by `data.eval`: ((kept arrays, origin), (held-out arrays, origin)).

    Each origin maps a part's sample index back to the source's row, so a later
    error (normalizing) still names the right CSV row.
    """
    rule: m.FromTrain = loaded.spec.data.eval
    n = len(next(iter(arrays.values())))
    labels = _stratify_labels(loaded, rule, arrays)
    _check_sizes(loaded, rule, n, labels)
    kept, held = split_indices(n, rule.from_train, rule.seed, labels)
    share = f"{rule.from_train * 100:.4g}%"
    return (_part(arrays, origin, kept, f"{origin.desc}, {share} held out (seed {rule.seed})"),
            _part(arrays, origin, held, f"{origin.desc}, the {share} held out (seed {rule.seed})"))


def _part(arrays: dict[str, np.ndarray], origin: Origin, rows: np.ndarray, desc: str) -> tuple[dict, Origin]:
    source_row = origin.rows
    part = dataclasses.replace(origin, desc=desc, files=dict(origin.files),
                               rows=(lambda i: source_row(int(rows[i]))) if source_row is not None else None)
    return {name: np.ascontiguousarray(a[rows]) for name, a in arrays.items()}, part


def label_input(spec: m.Spec) -> str | None:
    """The label input a split is stratified by: the first loss's target when it is one, else the first."""
    labels = [name for name, inp in spec.inputs.items() if inp.classes is not None]
    target = spec.losses[0].target
    return target if target in labels else (labels[0] if labels else None)


def _stratify_labels(loaded: LoadedSpec, rule: m.FromTrain, arrays: dict) -> np.ndarray | None:
    if not rule.stratify:
        return None
    name = label_input(loaded.spec)
    if name is not None and not loaded.spec.inputs[name].shape:
        return arrays[name]
    # the default (stratify unset) falls back to a plain split; asking for it without labels is a mistake
    if name is not None and "stratify" in rule.model_fields_set:  # a label at every step: no class per sample
        _fail(loaded, ("data", "eval", "stratify"),
              f"data.eval asks for a stratified split (`stratify: true`) but label input '{name}' has a label at "
              "every step, not one class per sample", "set `stratify: false` for a plain seeded split")
    if "stratify" in rule.model_fields_set:
        _fail(loaded, ("data", "eval", "stratify"),
              "data.eval asks for a stratified split (`stratify: true`) but the spec has no label input "
              "(an int64 input with `classes`) to stratify by",
              "set `stratify: false` for a plain seeded split")
    return None


def _check_sizes(loaded: LoadedSpec, rule: m.FromTrain, n: int, labels: np.ndarray | None) -> None:
    held = held_count(n, rule.from_train)
    if held == 0 or held == n:
        part = "evaluation" if held == 0 else "training"
        _fail(loaded, ("data", "eval", "from_train"),
              f"holding out {rule.from_train:g} of the {n} training samples leaves {part} no samples "
              f"({held} held out, {n - held} kept)",
              "choose a fraction that leaves samples on both sides, or more training data (data.train.limit)")
    if labels is None:
        return
    classes, counts = np.unique(labels, return_counts=True)
    alone = classes[counts < 2]
    if len(alone):
        more = f" (and {len(alone) - 1} more class{'es' if len(alone) > 2 else ''})" if len(alone) > 1 else ""
        _fail(loaded, ("data", "eval", "from_train"),
              f"a stratified split needs at least 2 samples of each class, but class {int(alone[0])} has 1 "
              f"among the {n} training samples{more}",
              "set `stratify: false` under data.eval for a plain seeded split, or use more training data")


def _fail(loaded: LoadedSpec, where: tuple, message: str, hint: str):
    raise DataError(Diagnostic(CODE, message, loaded.smap.locate(where), ".".join(where), hint))
