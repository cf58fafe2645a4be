"""What runs on a Dask worker: one trial, from its spec's text to its outcome.

`run_trial(job)` trains the trial's spec with netc's own Trainer, in the worker process, so what the
process compiled and loaded stays for the next trial: kernels, plan modules (kept by their source,
which holds no hyperparameters, so trials that differ only in lr, momentum, decay or dropout share
one plan), the data sets netc caches. Each trial runs on one thread (Numba's and BLAS's), so trials
on the cores of a machine do not compete, and never starts netc's background compile of the fused
loop: a plan compiled before on this machine runs fused, any other on the Python tier (same
numbers).

The client hears of each epoch through a Dask event topic (`Worker.log_event`), and, once pruning
may stop the trial, waits for its decision on a Dask queue named for the trial. A Dask event stops
every trial of the sweep at its next chunk (Ctrl-C of a sweep on a running cluster).

A worker that sees the sweep folder (it reads the folder's token there) writes the trial's run
folder in place; one that does not trains in a temporary folder and ships the files back with the
outcome. Nothing here imports Optuna.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TRIALS_DIR = "trials"
TOKEN_FILE = "sweep.json"
DECISION_TIMEOUT = 120.0  # seconds a trial waits for the client's prune decision before going on
STOP_CHECK_SECONDS = 1.0  # how often a running trial asks whether the sweep was stopped
KEPT_OUT = (".netc-lock", ".netc-run")  # run-folder bookkeeping, not shipped


@dataclass(frozen=True)
class TrialJob:
    """Everything a worker needs to run a trial (plain data: it is pickled to the worker)."""

    label: str  # the trial number as text, or "base"
    attempt: int  # 1, or 2 when a worker died under the first
    values: dict  # spec path -> value (empty for the base run)
    spec_text: str  # the trial's resolved spec
    spec_file: str  # the base spec's path, for messages
    base_dir: str  # where relative data paths resolve (absolute)
    sweep_dir: str  # the sweep folder as the client sees it (absolute)
    token: str  # the folder's token: a worker that reads it there shares the folder
    ship: bool  # send the files back even when the folder is shared
    topic: str  # the Dask event topic epochs are reported on
    metric: str  # the metrics.jsonl key the trial is judged by
    prune_from: int | None = None  # from this epoch on, wait for the client's decision after each epoch
    reply: str | None = None  # the Dask queue the decisions come on
    stop: str | None = None  # the Dask event that stops every trial


def trial_dir_name(label: str) -> str:
    return label if not label.isdigit() else f"{int(label):04d}"


def prepare_worker() -> dict:
    """Ready this worker process for trials (run once per worker by the client, and again by every
    trial): one thread for Numba and BLAS, no background compiles, netc's training code imported.
    Returns what the process has, for the client's log."""
    os.environ["NETC_BLAS_THREADS"] = "1"  # netc.jit.prepare_threads sets BLAS to this before each call
    os.environ["NETC_BACKGROUND_COMPILE"] = "0"  # no compile processes competing with the trials
    import numba

    numba.set_num_threads(1)  # for this thread (a worker may run tasks on several)
    from netc.runtime import train  # noqa: F401  (imported once per worker, not per trial)

    return {"pid": os.getpid(), "host": socket.gethostname(), "numba_threads": numba.get_num_threads()}


def _plan_modules() -> set[str]:
    return {name for name in sys.modules if name.startswith("netc_plan_")}


def _sees_folder(job: TrialJob) -> bool:
    import json

    try:
        return json.loads((Path(job.sweep_dir) / TOKEN_FILE).read_text()).get("token") == job.token
    except (OSError, ValueError, AttributeError):
        return False


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and value == value and abs(value) != float("inf")


class _Channel:
    """The trial's line to the client: epoch events out, prune decisions and the stop flag in. Outside a
    Dask worker (a direct call) it is silent."""

    def __init__(self, job: TrialJob):
        self.job = job
        try:
            from distributed import get_worker

            self.worker = get_worker()
        except (ImportError, ValueError):
            self.worker = None
        self._checked = time.monotonic()

    @property
    def address(self) -> str:
        return self.worker.address if self.worker is not None else ""

    def emit(self, kind: str, **fields) -> None:
        if self.worker is not None:
            self.worker.log_event(self.job.topic, {"kind": kind, "label": self.job.label,
                                                   "attempt": self.job.attempt, **fields})

    def decision(self, epoch: int) -> str:
        """'prune' or 'go', as the client decided for `epoch` (answers for earlier epochs that came too late
        are passed over)."""
        if self.worker is None or self.job.reply is None:
            return "go"
        from distributed import Queue

        deadline = time.monotonic() + DECISION_TIMEOUT
        try:
            while time.monotonic() < deadline:
                answer = str(Queue(self.job.reply).get(timeout=max(deadline - time.monotonic(), 0.001)))
                about, _, decision = answer.partition(":")
                if about == str(epoch):
                    return decision
        except Exception:  # no answer (the client is gone): go on, the outcome is still recorded
            pass
        return "go"

    def stopped(self) -> bool:
        """Whether the sweep was stopped (asked at most every STOP_CHECK_SECONDS)."""
        if self.worker is None or self.job.stop is None:
            return False
        now = time.monotonic()
        if now - self._checked < STOP_CHECK_SECONDS:
            return False
        self._checked = now
        from distributed import Event

        try:
            return Event(self.job.stop).is_set()
        except Exception:
            return False


def run_trial(job: TrialJob) -> dict:
    """Train one trial; never raises for what the trial does (a diverging run, a bad data file, running
    out of memory, any exception): the outcome says `failed` with the message. Only the loss of the
    worker itself reaches the client as an error (and the trial is retried elsewhere)."""
    started = time.perf_counter()
    prepare_worker()
    channel = _Channel(job)
    channel.emit("start", worker=channel.address, host=socket.gethostname())
    shared = not job.ship and _sees_folder(job)
    if shared:
        run_dir = Path(job.sweep_dir) / TRIALS_DIR / trial_dir_name(job.label)
        if run_dir.exists():  # an earlier attempt's files (a killed sweep, a lost worker)
            shutil.rmtree(run_dir)
    else:
        run_dir = Path(tempfile.mkdtemp(prefix=f"netc-trial-{job.label}-")) / "run"
    plans_before = _plan_modules()
    outcome = {"label": job.label, "attempt": job.attempt, "status": "complete", "value": None, "epochs": [],
               "message": "", "seconds": 0.0, "worker": channel.address, "host": socket.gethostname(),
               "pid": os.getpid(), "files": None, "shared": shared, "new_plan": False, "tier": ""}
    holder: dict = {}

    def on_epoch(record) -> None:
        fields = dataclasses.asdict(record)
        outcome["epochs"].append(fields)
        channel.emit("epoch", epoch=record.epoch, value=fields.get(job.metric))
        trainer = holder["trainer"]
        if channel.stopped():
            trainer.interrupted, holder["why"] = True, "stopped"
        elif job.prune_from is not None and job.prune_from <= record.epoch < trainer.spec.train.epochs:
            if channel.decision(record.epoch) == "prune":
                trainer.interrupted, holder["why"] = True, "pruned"

    def on_progress(*args) -> None:
        if channel.stopped():
            holder["trainer"].interrupted, holder["why"] = True, "stopped"

    try:
        from netc.errors import NetcError
        from netc.runtime.train import Trainer
        from netc.spec import load_spec_text

        try:
            loaded = load_spec_text(job.spec_text, f"{job.spec_file} (trial {job.label})", Path(job.base_dir))
            trainer = holder["trainer"] = Trainer(loaded, run_dir=run_dir, on_epoch=on_epoch, on_progress=on_progress,
                                                  tier="auto")
            outcome["tier"] = trainer.model.tier
            result = trainer.run()
            if result.interrupted or holder.get("why"):
                outcome["status"] = holder.get("why", "stopped")
            last = outcome["epochs"][-1] if outcome["epochs"] else {}
            value = last.get(job.metric)
            if outcome["status"] == "complete" and not _finite(value):
                outcome["status"] = "failed"
                outcome["message"] = f"{job.metric} was not recorded (got {value!r})"
            outcome["value"] = value if _finite(value) else None
        except NetcError as exc:
            outcome["status"], outcome["message"] = "failed", " / ".join(d.message for d in exc.diagnostics)
        except MemoryError:
            outcome["status"], outcome["message"] = "failed", "out of memory (MemoryError)"
        except Exception as exc:  # deliberately broad: any exception of a trial is its failure, not the sweep's
            outcome["status"], outcome["message"] = "failed", f"{type(exc).__name__}: {exc}"
        outcome["new_plan"] = bool(_plan_modules() - plans_before)
        if not shared:
            outcome["files"] = {path.name: path.read_bytes() for path in sorted(run_dir.glob("*"))
                                if path.is_file() and path.name not in KEPT_OUT} if run_dir.is_dir() else {}
    finally:
        if not shared:
            shutil.rmtree(run_dir.parent, ignore_errors=True)
    outcome["seconds"] = time.perf_counter() - started
    return outcome
