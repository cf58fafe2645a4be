"""From a sweep's space to what Optuna samples, and from sampled values to a trial's spec.

- `distributions(sweep)`: each spec path's Optuna distribution (Optuna is imported here, on use);
- `grid(sweep)`: the grid sampler's search space (every value of each path);
- `probes(sweep)`: the value sets `netc validate` tries (each path's ends or choices in turn, and
  every combination of them when there are few);
- `trial_spec(loaded, params)`: the base spec's data with `fixed` and the trial's values set, as
  YAML text and a validated spec; a spec the values make invalid raises SpecErrors.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import yaml

from netc.errors import Diagnostic, Location, NetcError, SpecErrors
from netc.spec.load import LoadedSpec, load_spec_text
from netc.sweep.model import Dimension, Sweep
from netc.sweep.paths import PathError, with_values

MAX_COMBINATIONS = 64  # `netc validate` tries every combination of the probed values up to this many


def distribution(dim: Dimension):
    """The Optuna distribution of one dimension."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if dim.choice is not None:
        return CategoricalDistribution(list(dim.choice))
    if dim.integer is not None:
        return IntDistribution(dim.integer[0], dim.integer[1], log=dim.log, step=dim.step or 1)
    if dim.loguniform is not None:
        return FloatDistribution(dim.loguniform[0], dim.loguniform[1], log=True)
    return FloatDistribution(dim.uniform[0], dim.uniform[1], step=dim.step)


def distributions(sweep: Sweep) -> dict:
    return {path: distribution(dim) for path, dim in sweep.space.items()}


def grid(sweep: Sweep) -> dict[str, list]:
    return {path: dim.grid() for path, dim in sweep.space.items()}


def probes(sweep: Sweep, leave_out: set[str] = frozenset()) -> list[tuple[str | None, dict]]:
    """(the path varied, or None for a combination; values) to validate. First each path alone at each of
    its ends or choices (the other fields as the base spec has them, so a problem found is that path's),
    then every combination of them when there are at most MAX_COMBINATIONS."""
    corners = {path: dim.corners() for path, dim in sweep.space.items() if path not in leave_out}
    out: list[tuple[str | None, dict]] = [(path, {path: value}) for path, values in corners.items()
                                          for value in values]
    count = 1
    for values in corners.values():
        count *= len(values)
    if len(corners) > 1 and count <= MAX_COMBINATIONS:
        out.extend((None, dict(zip(corners, combination))) for combination in itertools.product(*corners.values()))
    return out


def value_text(value) -> str:
    """A value as the leaderboard and messages show it: floats with 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def values_text(values: dict) -> str:
    """'optimizer.lr=0.001, layers[fc1].out=64'"""
    return ", ".join(f"{path}={value_text(value)}" for path, value in values.items())


def trial_data(base_data: dict, fixed: dict, values: dict) -> dict:
    """The base spec's data with the fixed values and the trial's values set (raises PathError)."""
    return with_values(base_data, {**fixed, **values})


def trial_spec(base_data: dict, fixed: dict, values: dict, file: str, base_dir: Path,
               check_graph: bool = True) -> tuple[str, LoadedSpec]:
    """The spec of one trial as YAML text (what the worker loads and the trial folder keeps) and
    loaded; with `check_graph`, its graph is built and its data.augment checked as `netc validate`
    does. Raises SpecErrors (every problem, each message naming the trial's values)."""
    try:
        data = trial_data(base_data, fixed, values)
    except PathError as exc:
        raise SpecErrors(Diagnostic("E-SWEEP-PATH", exc.message, Location(file), hint=exc.hint)) from None
    text = yaml.safe_dump(data, sort_keys=False)
    loaded = load_spec_text(text, file, base_dir)
    if check_graph:
        from netc.graph import build_graph
        from netc.runtime.data.augment import check_augment

        found = []
        for check in (build_graph, check_augment):
            try:
                check(loaded)
            except NetcError as exc:
                found.extend(exc.diagnostics)
        if found:
            raise SpecErrors(found)
    return text, loaded
