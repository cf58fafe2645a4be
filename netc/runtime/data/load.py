"""Loading a spec's `data.train` / `data.eval`: read through the source registry, then normalize.

Eval data is normalized with the train split's statistics and must name the
same `normalize` kind; `load_train_eval` raises every problem of both splits
together, as `netc validate` reports a spec.
"""

from __future__ import annotations

from netc.errors import DataError, Diagnostic
from netc.runtime.data.dataset import Dataset, NormStats, compute_stats, normalized
from netc.runtime.data.origin import CODE
from netc.runtime.data.sources import SOURCES, read_source
from netc.spec.load import LoadedSpec


def load_dataset(loaded: LoadedSpec, which: str = "train", stats: NormStats | None = None) -> Dataset:
    """Load `data.train` or `data.eval` of a spec, validated against its inputs and normalized.

    Eval data is normalized with the statistics of the train split: pass the
    train Dataset's `stats`, or leave `stats` None and they are computed here.
    """
    if which not in ("train", "eval"):
        raise ValueError(f"which must be 'train' or 'eval', not {which!r}")
    src = _data_source(loaded, which)
    kind = src.normalize
    if which == "eval":
        _check_eval_normalize(loaded, src)
    arrays, origin = read_source(loaded, src, which)
    if kind == "none":
        stats = NormStats("none")
    elif stats is None or stats.kind != kind:
        if which == "train":
            stats = compute_stats(arrays, loaded.spec.inputs, kind)
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
    """Statistics of the spec's TRAIN source (after `limit`), for `kind` (default: its `normalize`)."""
    src = _data_source(loaded, "train")
    kind = src.normalize if kind is None else kind
    if kind == "none":
        return NormStats("none")
    arrays, _ = read_source(loaded, src, "train")
    return compute_stats(arrays, loaded.spec.inputs, kind)


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
            "add `eval: {source: ...}` under data (e.g. the train source with `split: test`)",
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
