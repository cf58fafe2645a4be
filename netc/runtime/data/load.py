"""Loading a spec's `data.train` / `data.eval`: read through the source registry, then normalize.

Eval data is normalized with the train split's statistics and must name the
same `normalize` kind; `load_train_eval` raises every problem of both splits
(and of `data.augment`) together, as `netc validate` reports a spec.

With `eval: {from_train: fraction}` the train source is split (`split`):
"train" is the kept part and "eval" the held-out part, and the statistics
come from the kept part only, wherever they are computed.
"""

from __future__ import annotations

from netc.errors import DataError, Diagnostic
from netc.runtime.data.augment import check_augment
from netc.runtime.data.dataset import Dataset, NormStats, compute_stats, normalized
from netc.runtime.data.origin import CODE, Origin
from netc.runtime.data.sources import SOURCES, read_source
from netc.runtime.data.split import split_train
from netc.spec import models as m
from netc.spec.load import LoadedSpec


def load_dataset(loaded: LoadedSpec, which: str = "train", stats: NormStats | None = None) -> Dataset:
    """Load `data.train` or `data.eval` of a spec, validated against its inputs and normalized.

    Eval data is normalized with the statistics of the train split: pass the
    train Dataset's `stats`, or leave `stats` None and they are computed here.
    """
    if which not in ("train", "eval"):
        raise ValueError(f"which must be 'train' or 'eval', not {which!r}")
    src = _data_source(loaded, which)
    kind = loaded.spec.data.train.normalize  # eval's is checked to be the same
    if _held_out(loaded):
        (kept, kept_origin), held = _read_split(loaded)
        arrays, origin = (kept, kept_origin) if which == "train" else held
        train_arrays = kept
    else:
        if which == "eval":
            _check_eval_normalize(loaded, src)
        arrays, origin = read_source(loaded, src, which)
        train_arrays = arrays if which == "train" else None
    if kind == "none":
        stats = NormStats("none")
    elif stats is None or stats.kind != kind:
        if train_arrays is not None:
            stats = compute_stats(train_arrays, loaded.spec.inputs, kind)
        else:
            stats = normalization_stats(loaded, kind)
    return normalized(arrays, origin, stats)


def load_train_eval(loaded: LoadedSpec) -> tuple[Dataset, Dataset | None]:
    """`data.train` and (when the spec has one) `data.eval`, eval normalized with train's statistics.

    Every DataError of both splits is raised together in one DataError, as
    `netc validate` reports a spec. When train cannot be loaded, eval's own
    checks (its normalize, its files) still run; only its normalization,
    which needs train's statistics, is skipped.
    """
    problems: list[Diagnostic] = []
    _collect(problems, check_augment, loaded)
    if _held_out(loaded):  # one read of the train source gives both parts
        parts = _collect(problems, _read_split, loaded)
        train = evaluation = None
        if parts is not None:
            (kept, kept_origin), held = parts
            stats = compute_stats(kept, loaded.spec.inputs, loaded.spec.data.train.normalize)
            train = _collect(problems, normalized, kept, kept_origin, stats)
            evaluation = _collect(problems, normalized, *held, stats)
        if problems:
            raise DataError(problems)
        return train, evaluation
    train = _collect(problems, load_dataset, loaded, "train")
    data = loaded.spec.data
    evaluation = None
    if data is not None and data.eval is not None:
        before = len(problems)
        _collect(problems, _check_eval_normalize, loaded, data.eval)
        read = _collect(problems, read_source, loaded, data.eval, "eval")
        if train is not None and len(problems) == before:
            evaluation = _collect(problems, normalized, *read, train.stats)
    if problems:
        raise DataError(problems)
    return train, evaluation


def normalization_stats(loaded: LoadedSpec, kind: str | None = None) -> NormStats:
    """Statistics of the spec's TRAIN source (after `limit`; without the samples held out by
    `eval: {from_train}`), for `kind` (default: its `normalize`)."""
    src = _data_source(loaded, "train")
    kind = src.normalize if kind is None else kind
    if kind == "none":
        return NormStats("none")
    if _held_out(loaded):
        (arrays, _), _ = _read_split(loaded)
    else:
        arrays, _ = read_source(loaded, src, "train")
    return compute_stats(arrays, loaded.spec.inputs, kind)


def _held_out(loaded: LoadedSpec) -> bool:
    """Whether data.eval is `{from_train: fraction}`."""
    data = loaded.spec.data
    return data is not None and isinstance(data.eval, m.FromTrain)


def _read_split(loaded: LoadedSpec) -> tuple[tuple[dict, Origin], tuple[dict, Origin]]:
    """The train source read once and split: ((kept arrays, origin), (held-out arrays, origin)), not normalized."""
    return split_train(loaded, *read_source(loaded, loaded.spec.data.train, "train"))


def _data_source(loaded: LoadedSpec, which: str):
    """The spec's source model for `data.train` / `data.eval`, or a DataError when the spec has none."""
    data = loaded.spec.data
    if data is None:
        raise DataError(Diagnostic(
            CODE, "the spec has no data section", loaded.smap.locate(()), "data",
            f"add `data: {{train: {{source: ...}}, eval: {{source: ...}}}}` (sources: {', '.join(SOURCES)})",
        ))
    src = getattr(data, which)
    if src is None:
        raise DataError(Diagnostic(
            CODE, "the spec has no data.eval", loaded.smap.locate(("data",)), "data.eval",
            "add `eval: {source: ...}` under data (e.g. the train source with `split: test`), "
            "or `eval: {from_train: 0.1}` to hold out part of the train data",
        ))
    return src


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


def _collect(problems: list[Diagnostic], fn, *args):
    """fn(*args), or None with its DataError's diagnostics added to `problems`."""
    try:
        return fn(*args)
    except DataError as exc:
        problems.extend(exc.diagnostics)
        return None
