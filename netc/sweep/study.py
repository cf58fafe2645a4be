"""The Optuna study of a sweep: its sampler, its pruner, and its storage in the sweep folder.

The study lives in `study.db` (Optuna's RDB storage on SQLite), so a killed sweep resumes where it
was: finished trials stay finished; a trial that was running keeps its number and values and runs
again. Only the client process opens the file (workers never talk to Optuna), so SQLite's
single-writer limit never bites, and the folder may sit on a shared file system.

Samplers by `method`:
- grid: trial n takes the n-th point of the grid in an order shuffled by the seed, put in the
  study's queue (`enqueue_trial`), so a resumed sweep runs the points the unbroken one would have
  (Optuna's GridSampler picks among the unvisited points at random when trials run in parallel);
- random: Optuna's RandomSampler, each trial's values drawn from (seed, trial number, path), so
  they do not depend on which trials ran first or in which process;
- tpe: Optuna's TPESampler (seeded, with the constant liar for trials still running). Its choices
  depend on the trials finished when it is asked, so with more than one worker a run is not
  repeatable; the other two are, to the trial.
"""

from __future__ import annotations

import itertools
import zlib
from pathlib import Path

from netc.sweep.model import Sweep
from netc.sweep.space import distributions, grid

STUDY_FILE = "study.db"
STUDY_NAME = "netc-sweep"


def _seeded_random(seed: int):
    from optuna.samplers import BaseSampler, RandomSampler

    class TrialSeededRandomSampler(BaseSampler):
        """Optuna's random sampler, drawing each value from (seed, trial number, parameter) alone."""

        def infer_relative_search_space(self, study, trial):
            return {}

        def sample_relative(self, study, trial, search_space):
            return {}

        def sample_independent(self, study, trial, param_name, param_distribution):
            draw = RandomSampler(seed=zlib.crc32(f"{seed}/{trial.number}/{param_name}".encode()))
            return draw.sample_independent(study, trial, param_name, param_distribution)

    return TrialSeededRandomSampler()


def grid_points(sweep: Sweep) -> list[dict]:
    """Every point of the grid, in an order shuffled by the seed (trial n runs point n)."""
    import numpy as np

    space = grid(sweep)
    points = [dict(zip(space, values)) for values in itertools.product(*space.values())]
    return [points[i] for i in np.random.default_rng(sweep.seed).permutation(len(points))]


def sampler(sweep: Sweep):
    from optuna.samplers import TPESampler

    if sweep.method in ("grid", "random"):  # grid: every trial's values are enqueued (see `ask`)
        return _seeded_random(sweep.seed)
    return TPESampler(seed=sweep.seed, constant_liar=True)


def pruner(sweep: Sweep):
    """Optuna's median pruner when the sweep prunes: a trial may stop from epoch `after_epochs` on
    (its step is the epoch, 1-based), once `startup_trials` trials have finished."""
    from optuna.pruners import MedianPruner, NopPruner

    if sweep.prune is None:
        return NopPruner()
    return MedianPruner(n_startup_trials=sweep.prune.startup_trials, n_warmup_steps=sweep.prune.after_epochs)


def open_study(folder: Path, sweep: Sweep):
    """The sweep's study in `folder` (created on first use, loaded when there)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(folder / STUDY_FILE).resolve()}",
                                         engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.create_study(storage=storage, study_name=STUDY_NAME, direction=sweep.metric.direction,
                               sampler=sampler(sweep), pruner=pruner(sweep), load_if_exists=True)


def ask(study, sweep: Sweep):
    """A new trial with its values drawn (every spec path of the space); on a grid, trial n gets the n-th
    point of `grid_points` (put in Optuna's queue, so the study records it like any other trial)."""
    from optuna.trial import TrialState

    # a point a killed sweep queued but never asked for is still waiting: `ask` takes it (not a second one)
    if sweep.method == "grid" and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        number = len(study.get_trials(deepcopy=False))
        study.enqueue_trial(grid_points(sweep)[number % sweep.grid_size])
    return study.ask(distributions(sweep))


def unfinished(study) -> list:
    """The trials a killed sweep left running (their numbers and values are kept), oldest first. A queued
    grid point never asked for (WAITING) is not one: the next `ask` takes it."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]


def again(study, frozen, sweep: Sweep):
    """A Trial object for a trial of the study that is still running (to report to and tell), and its
    values: those it had drawn, and the ones a kill in the middle of `ask` left undrawn, drawn now (by
    the sampler: a grid point from the queue, a random value from (seed, trial, path) as before)."""
    from optuna.trial import Trial

    trial = Trial(study, frozen._trial_id)
    values = dict(frozen.params)
    for path, distribution in distributions(sweep).items():
        if path not in values:
            values[path] = trial._suggest(path, distribution)  # Optuna's own step of Trial.suggest_*
    return trial, values


def tell(study, trial, status: str, value: float | None, message: str = "") -> None:
    """Record a trial's end: complete with its value, pruned at its last value, or failed."""
    from optuna.trial import TrialState

    if message:
        trial.set_user_attr("message", message[:2000])
    if status == "complete":
        study.tell(trial, value)
    elif status == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, state=TrialState.FAIL)
