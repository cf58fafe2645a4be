"""The sweep file, format version 1: what `netc sweep` searches and how, as pydantic models.

    netc-sweep: 1
    spec: specs/digits-mlp.yaml          # the base spec (relative to this file)
    metric: {name: eval_accuracy, goal: maximize}
    method: tpe                          # grid | random | tpe (Optuna's samplers)
    trials: 32
    space:                               # spec path -> the values it takes
      optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}
      layers[fc1].out: {choice: [32, 64, 128, 256]}
    prune: {after_epochs: 3}             # Optuna's median pruner on the per-epoch metric

This module is the single source of truth for the format: the JSON Schema (`netc sweep schema`)
is generated from it, and the loader (netc.sweep.load) reports its errors located in the file.
Nothing here imports Dask or Optuna: `netc validate` reads sweep files without them.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field, JsonValue, Strict, model_validator

from netc.spec.base import Bool, Float, Model, Name, NonNegInt, PosFloat, PosInt, Text
from netc.sweep.paths import PathSyntaxError, parse_path

FORMAT_VERSION = 1
VERSION_KEY = "netc-sweep"

# the numbers a run records each epoch (metrics.jsonl keys) that a sweep can optimise
MetricName = Literal["eval_accuracy", "eval_loss", "train_accuracy", "train_loss", "eval_top_k_accuracy"]
Goal = Literal["maximize", "minimize"]
Method = Literal["grid", "random", "tpe"]
Choice = Annotated[Union[Annotated[bool, Strict()], Annotated[int, Strict()], Float, Text], Field(union_mode="smart")]
Bounds = Annotated[list[Float], Field(min_length=2, max_length=2)]
IntBounds = Annotated[list[Annotated[int, Strict()]], Field(min_length=2, max_length=2)]
KINDS = ("uniform", "loguniform", "int", "choice")


def default_goal(metric: str) -> Goal:
    """Accuracies go up, losses go down."""
    return "minimize" if metric.endswith("_loss") else "maximize"


class Metric(Model):
    """The number each trial is judged by: its value at the trial's last epoch."""

    name: MetricName = Field(description="An epoch metric (a metrics.jsonl key); eval_* needs data.eval in the spec.")
    goal: Goal | None = Field(None, description="maximize or minimize (default: minimize a loss, maximize an "
                                                "accuracy).")

    @property
    def direction(self) -> Goal:
        return self.goal or default_goal(self.name)


class Dimension(Model):
    """The values one spec field takes: give one of `uniform`, `loguniform`, `int` or `choice`.
    Write floats with a dot (`1.0e-4`): YAML reads `1e-4` as text."""

    uniform: Bounds | None = Field(None, description="[low, high]: a float drawn evenly between them (with `step`: "
                                                     "low, low + step, ... up to high).")
    loguniform: Annotated[list[PosFloat], Field(min_length=2, max_length=2)] | None = Field(
        None, description="[low, high], both above 0: a float drawn evenly on a log scale (learning rates, decays).")
    integer: IntBounds | None = Field(None, alias="int", description="[low, high]: an integer from low to high, both "
                                                                       "included (with `step`, `log`).")
    choice: Annotated[list[Choice], Field(min_length=1)] | None = Field(
        None, description="The values to choose from: numbers, strings or booleans.")
    step: Union[Annotated[int, Strict(), Field(gt=0)], PosFloat] | None = Field(
        None, description="uniform and int: the spacing of the values (int: default 1).")
    log: Bool = Field(False, description="int: draw on a log scale (low at least 1; not with step).")

    @model_validator(mode="after")
    def _one_kind(self):
        given = [kind for kind in KINDS if self.values_of(kind) is not None]
        if len(given) != 1:
            got = f" (got {', '.join(given)})" if given else ""
            raise ValueError(f"give exactly one of {', '.join(KINDS)}{got}")
        kind = given[0]
        low_high = self.values_of(kind) if kind != "choice" else None
        if low_high is not None and not low_high[0] < low_high[1]:
            raise ValueError(f"{kind}: low must be below high (got {low_high})")
        if self.step is not None and kind not in ("uniform", "int"):
            raise ValueError("`step` is for uniform and int")
        if kind == "int" and self.step is not None and not isinstance(self.step, int):
            raise ValueError(f"int: `step` is an integer (got {self.step!r})")
        if self.log and kind != "int":
            raise ValueError("`log` is for int (use loguniform for floats)")
        if self.log and (self.step is not None or self.integer[0] < 1):
            raise ValueError("int with `log`: low is at least 1, and no `step`")
        if kind == "choice":
            seen = [repr(v) for v in self.choice]
            twice = sorted({v for v in seen if seen.count(v) > 1})
            if twice:
                raise ValueError(f"choice: {', '.join(twice)} given twice")
        return self

    def values_of(self, kind: str):
        return self.integer if kind == "int" else getattr(self, kind)

    @property
    def kind(self) -> str:
        return next(kind for kind in KINDS if self.values_of(kind) is not None)

    def grid(self) -> list | None:
        """Every value, in order, when there are finitely many (choice, int, uniform with step); else None."""
        if self.choice is not None:
            return list(self.choice)
        if self.integer is not None:
            low, high = self.integer
            return list(range(low, high + 1, self.step or 1))
        if self.uniform is not None and self.step is not None:
            low, high = self.uniform
            count = int(math.floor((high - low) / self.step + 1e-9)) + 1
            return [round(low + i * self.step, 12) for i in range(count)]
        return None

    def corners(self) -> list:
        """The values `netc validate` tries: every choice, else the two ends."""
        if self.choice is not None:
            return list(self.choice)
        low, high = self.values_of(self.kind)
        return [low, high]

    def describe(self) -> str:
        """`loguniform [0.0001, 0.1]`, `choice [32, 64]`, `int [1, 8] step 2`."""
        text = f"{self.kind} {list(self.values_of(self.kind))}"
        if self.step is not None:
            text += f" step {self.step}"
        if self.log:
            text += " log"
        return text


def _spec_path(text: str) -> str:
    try:
        parse_path(text)
    except PathSyntaxError as exc:
        raise ValueError(f"not a spec path: {exc}") from None
    return text


SpecPath = Annotated[str, Strict(), AfterValidator(_spec_path),
                     Field(description="A spec path: `optimizer.lr`, `train.batch`, `layers[fc1].out` (the layer "
                                       "named fc1), `layers[0].out` (by index).")]


class Prune(Model):
    """Stop trials early that do worse than the median of earlier trials at the same epoch (Optuna's
    MedianPruner on the per-epoch metric)."""

    after_epochs: PosInt = Field(description="The first epoch at which a trial may be stopped.")
    startup_trials: NonNegInt = Field(5, description="Trials that finish before any is stopped.")


class Sweep(Model):
    """A netc sweep file, format version 1: a search over the fields of a base spec."""

    netc_sweep: Literal[1] = Field(alias=VERSION_KEY, description="Format version of the sweep file.")
    name: Name | None = Field(None, description="Name of the sweep (default: the file's name); its folder is "
                                                "sweeps/<name>.")
    description: Text = Field("", description="Free text.")
    spec: Text = Field(description="The base spec (relative to this file); each trial changes the fields of `space`.")
    metric: Metric = Field(description="The number each trial is judged by.")
    method: Method = Field("tpe", description="grid (every combination, in a seeded order), random or tpe (Optuna's "
                                              "Tree-structured Parzen Estimator).")
    trials: PosInt | None = Field(None, description="How many trials (grid: at most, and by default, the grid's size).")
    seed: NonNegInt = Field(0, description="Seed of the sampler (grid order, random draws, TPE).")
    space: Annotated[dict[SpecPath, Dimension], Field(min_length=1)] = Field(
        description="Spec path -> the values it takes.")
    fixed: dict[SpecPath, JsonValue] = Field(default_factory=dict, description="Spec path -> a value every trial "
                                             "(and the base run) uses, e.g. `train.epochs: 10`.")
    prune: Prune | None = Field(None, description="Stop trials early that do worse than the median.")
    baseline: Bool = Field(True, description="Also train the base spec (with `fixed`) once, to compare the best "
                                             "trial with.")

    @model_validator(mode="after")
    def _method(self):
        both = sorted(set(self.space) & set(self.fixed))
        if both:
            raise ValueError(f"{', '.join(both)} is in both space and fixed")
        if self.method == "grid":
            endless = [path for path, dim in self.space.items() if dim.grid() is None]
            if endless:
                raise ValueError(f"grid needs finitely many values: {', '.join(endless)} has a continuous range "
                                 "(use choice, int, or uniform with a step)")
            size = self.grid_size
            if self.trials is not None and self.trials > size:
                raise ValueError(f"the grid has {size} points; trials is {self.trials} (leave trials out to run "
                                 "every point)")
        elif self.trials is None:
            raise ValueError(f"`trials` is needed with method {self.method} (how many to run)")
        return self

    @property
    def grid_size(self) -> int:
        size = 1
        for dim in self.space.values():
            size *= len(dim.grid() or [])
        return size

    @property
    def trial_count(self) -> int:
        return self.trials if self.trials is not None else self.grid_size


def sweep_schema() -> dict:
    """The JSON Schema of a sweep file (for editors), generated from `Sweep`."""
    schema = Sweep.model_json_schema(by_alias=True)
    return {"$schema": "http://json-schema.org/draft-07/schema#",
            "title": f"netc sweep file (format version {FORMAT_VERSION})",
            **{key: value for key, value in schema.items() if key != "title"}}
