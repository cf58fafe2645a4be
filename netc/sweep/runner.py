"""The client side of a sweep: the loop that asks Optuna for trials, runs them on Dask, and records them.

    folder (claimed, or resumed) -> study (study.db) -> cluster -> workers readied -> loop -> pictures

The loop keeps one trial per worker thread in flight. A new trial's values come from Optuna
(`study.ask`), its spec is resolved and validated here (an invalid one is recorded as failed and
never shipped), and it is submitted as a Dask task (netc.sweep.worker.run_trial). Epochs come back
as Dask events: each is reported to Optuna, and where pruning may stop the trial the decision goes
back on the trial's queue. A finished trial is appended to trials.jsonl first, then told to Optuna,
so a kill between the two is repaired on resume. A trial whose worker died runs once more on
another; a second loss records it as failed. Ctrl-C (SIGINT) is taken between events: the trials in
flight are stopped, and the folder is left as a resumable one.

Progress is reported through callbacks (`on_update`, `on_trial`, `on_note`); the CLI draws them.
"""

from __future__ import annotations

import json
import queue
import secrets
import signal
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import yaml

from netc.errors import NetcError
from netc.sweep import cluster as clusters
from netc.sweep.folder import BASE, BEST, SPEC_COPY, SWEEP_COPY, SweepFolder, sweep_error
from netc.sweep.load import LoadedSweep
from netc.sweep.worker import TRIALS_DIR, TrialJob, prepare_worker, run_trial, trial_dir_name

EVENT_WAIT = 0.5  # seconds between looks at the clock (ETA, Ctrl-C) when nothing happens
SLOTS_REFRESH = 2.0  # seconds between looks at how many worker threads the cluster has


@dataclass
class Options:
    out: Path | None = None  # the sweep folder (default sweeps/<name>)
    resume: bool = False
    workers: int | None = None  # embedded cluster: worker processes (default: one per core)
    scheduler: str | None = None  # a running cluster's address instead
    tls: clusters.TlsFiles | None = None
    dashboard: bool = False
    ship: bool = False  # workers send files back even when they see the folder
    memory_limit: str | None = None  # embedded workers (Dask's "auto": the machine's memory / workers)


@dataclass
class Running:
    label: str
    values: dict
    trial: object | None  # the Optuna trial (None for the base run)
    attempt: int = 1
    submitted: float = 0.0
    worker: str = ""
    epoch: int = 0
    value: float | None = None
    spec_text: str = ""
    epochs: int = 0  # of the trial's spec


@dataclass
class Progress:
    total: int  # trials of the sweep
    metric: str
    goal: str
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: dict[str, Running] = field(default_factory=dict)
    best: dict | None = None
    base: dict | None = None
    base_pending: bool = False
    slots: int = 1
    started: float = field(default_factory=time.monotonic)
    walls: list[float] = field(default_factory=list)  # seconds each trial of this process took, submit to result

    @property
    def done(self) -> int:
        return self.complete + self.pruned + self.failed

    def eta(self) -> float | None:
        """Seconds until the last trial ends, from the mean trial so far and the slots."""
        if not self.walls:
            return None
        left = self.total - self.done + (1 if self.base_pending else 0)
        waves = max(left - len(self.running), 0) / max(self.slots, 1)
        return (waves + (1 if self.running else 0)) * sum(self.walls) / len(self.walls)

    def better(self, record: dict) -> bool:
        """Whether a trial beats the best so far; of equal values the lower trial number wins (as in the
        leaderboard), so the best does not depend on which trial finished first."""
        if record.get("status") != "complete" or record.get("value") is None:
            return False
        if self.best is None:
            return True
        sign = 1.0 if self.goal == "maximize" else -1.0
        return (sign * record["value"], -record["trial"]) > (sign * self.best["value"], -self.best["trial"])


@dataclass
class Result:
    folder: Path
    progress: Progress
    interrupted: bool = False
    seconds: float = 0.0
    workers: int = 0
    address: str = ""


def default_folder(loaded: LoadedSweep) -> Path:
    return Path("sweeps") / loaded.name


def _record_label(label: str):
    return int(label) if label.isdigit() else label


class Runner:
    """Runs one sweep. `task` is what each trial runs on a worker (tests replace it)."""

    def __init__(self, loaded: LoadedSweep, options: Options | None = None,
                 on_update: Callable[[Progress], None] | None = None,
                 on_trial: Callable[[dict, Progress], None] | None = None,
                 on_note: Callable[[str], None] | None = None, task: Callable = run_trial,
                 cluster: clusters.Cluster | None = None):
        self.loaded = loaded
        self.sweep = loaded.sweep
        self.options = options or Options()
        self.on_update = on_update or (lambda progress: None)
        self.on_trial = on_trial or (lambda record, progress: None)
        self.on_note = on_note or (lambda text: None)
        self.task = task
        self.given_cluster = cluster  # used as it is, and left running
        self.interrupted = False
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._futures: dict = {}

    # ------------------------------------------------------------------ the run
    def run(self) -> Result:
        clusters.require_dask()
        from netc.sweep.study import open_study

        folder = self._folder()
        try:
            study = open_study(folder.path, self.sweep)
            records = folder.records()
            self._repair(study, records)
            progress = self._progress(records)
            cluster = self.given_cluster or self._cluster()
            try:
                return self._run(folder, study, cluster, progress)
            finally:
                if self.given_cluster is None:
                    cluster.close()
        finally:
            folder.release()

    def _folder(self) -> SweepFolder:
        path = self.options.out or default_folder(self.loaded)
        sweep_text = Path(self.loaded.file).read_text()
        spec_text = Path(self.loaded.base.file).read_text()
        if not self.options.resume:
            info = {"name": self.loaded.name, "sweep_file": self.loaded.file, "spec_file": self.loaded.base.file,
                    "metric": {"name": self.sweep.metric.name, "goal": self.sweep.metric.direction},
                    "method": self.sweep.method, "seed": self.sweep.seed,
                    "space": {path: dim.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)
                              for path, dim in self.sweep.space.items()}}
            return SweepFolder.start(path, info, sweep_text, spec_text)
        folder = SweepFolder.resume(path)
        try:
            if _without_trials(folder.saved(SWEEP_COPY)) != _without_trials(sweep_text):
                raise sweep_error("the sweep file changed since this sweep started", self.loaded.file,
                                  "resume with the same sweep file (only `trials` may change), or start a new "
                                  "sweep in another folder (--out)")
            if yaml.safe_load(folder.saved(SPEC_COPY) or "null") != yaml.safe_load(spec_text):
                raise sweep_error(f"the base spec {self.loaded.base.file} changed since this sweep started",
                                  self.loaded.base.file, "resume with the same spec, or start a new sweep (--out)")
        except BaseException:
            folder.release()
            raise
        return folder

    def _repair(self, study, records: dict[str, dict]) -> None:
        """A trial recorded in trials.jsonl but still running in the study (killed between the two
        writes) is told to the study as recorded."""
        from netc.sweep.study import again, tell, unfinished

        for frozen in unfinished(study):
            record = records.get(str(frozen.number))
            if record is not None and record.get("status") in ("complete", "pruned", "failed"):
                tell(study, again(study, frozen, self.sweep)[0], record["status"], record.get("value"),
                     record.get("message", ""))

    def _progress(self, records: dict[str, dict]) -> Progress:
        progress = Progress(self.sweep.trial_count, self.sweep.metric.name, self.sweep.metric.direction)
        for label, record in records.items():
            if label == BASE:
                progress.base = record
                continue
            status = record.get("status")
            if status in ("complete", "pruned", "failed"):
                setattr(progress, status, getattr(progress, status) + 1)
            if progress.better(record):
                progress.best = record
        progress.base_pending = self.sweep.baseline and progress.base is None
        return progress

    def _cluster(self) -> clusters.Cluster:
        options = self.options
        if options.scheduler:
            return clusters.connect(options.scheduler, options.tls, self.on_note)
        return clusters.embedded(options.workers, options.dashboard, options.memory_limit)

    def _run(self, folder: SweepFolder, study, cluster: clusters.Cluster, progress: Progress) -> Result:
        from netc.sweep.study import unfinished

        started = time.perf_counter()
        info = folder.info
        token = info["token"]
        self.topic = f"netc-sweep-{token[:12]}-{secrets.token_hex(4)}"  # this run's: a resume starts afresh
        self.stop_event = f"{self.topic}-stop"
        self.folder, self.study, self.cluster, self.progress = folder, study, cluster, progress
        if cluster.dashboard:
            self.on_note(f"dashboard: {cluster.dashboard}")
        if cluster.local is not None:
            self._compile_kernels()
        cluster.client.run(prepare_worker)  # every worker imports netc and sets its threads, at once
        cluster.client.subscribe_topic(self.topic, lambda event: self._events.put(("event", event[1])))
        progress.slots = max(cluster.threads, 1)
        progress.started = time.monotonic()
        reruns = unfinished(study)
        for frozen in reruns:
            folder.forget(str(frozen.number))
        self._best_folder()
        self._in_study = len(study.get_trials(deepcopy=False))
        previous = self._catch_sigint()
        try:
            if progress.base_pending:
                self._submit(Running(BASE, {}, None))
            self._loop(reruns)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            if self.interrupted:
                self._stop()
            try:
                cluster.client.unsubscribe_topic(self.topic)
            except Exception:  # the cluster is gone
                pass
        self._pictures()
        return Result(folder.path, progress, self.interrupted, time.perf_counter() - started, progress.slots,
                      cluster.address)

    def _best_folder(self) -> None:
        """best/ as the records have it (a sweep killed between a trial's record and its copy to best/)."""
        best = self.progress.best
        if best is None or not best.get("run_dir"):
            return
        try:
            kept = json.loads((self.folder.path / BEST / "trial.json").read_text()).get("trial")
        except (OSError, ValueError):
            kept = None
        if kept != best["trial"]:
            self.folder.set_best(best)

    def _catch_sigint(self):
        def on_sigint(signum, frame):
            self.interrupted = True  # taken between events (never in the middle of a write)

        try:
            return signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread (the Python API in a thread): Ctrl-C is the caller's
            return None

    def _loop(self, reruns: list) -> None:
        from netc.sweep.study import again, ask

        progress = self.progress
        slots_checked = time.monotonic()
        while not self.interrupted:
            while len(self._futures) < progress.slots and (reruns or self._in_study < progress.total):
                if reruns:
                    frozen = reruns.pop(0)
                    trial, values = again(self.study, frozen, self.sweep)
                else:
                    trial = ask(self.study, self.sweep)
                    values = dict(trial.params)
                    self._in_study += 1
                self._start(Running(str(trial.number), values, trial))
            if not self._futures:
                break
            self.on_update(progress)
            try:
                kind, payload = self._events.get(timeout=EVENT_WAIT)
            except queue.Empty:
                kind = None
            if kind == "event":
                self._on_event(payload)
            elif kind == "done":
                self._on_done(payload)
            if time.monotonic() - slots_checked > SLOTS_REFRESH:
                slots_checked = time.monotonic()
                try:
                    progress.slots = max(self.cluster.threads, 1)
                except Exception:  # the scheduler is busy or gone: keep the last count
                    pass
        self.on_update(progress)

    # ------------------------------------------------------------------ trials
    def _start(self, run: Running) -> None:
        """Resolve and validate the trial's spec here; an invalid one is failed without a worker."""
        try:
            text, spec = self.loaded.trial(run.values, f"trial {run.label}")
        except NetcError as exc:
            self._finish(run, {"status": "failed", "message": " / ".join(d.message for d in exc.diagnostics),
                               "epochs": [], "seconds": 0.0, "worker": "", "host": socket.gethostname()})
            return
        run.spec_text, run.epochs = text, spec.spec.train.epochs
        self._submit(run)

    def _submit(self, run: Running) -> None:
        if not run.spec_text:
            run.spec_text, spec = self.loaded.trial(run.values, "base")
            run.epochs = spec.spec.train.epochs
        prune = self.sweep.prune if run.trial is not None else None
        reply = f"{self.topic}-{run.label}-{run.attempt}" if prune is not None else None
        job = TrialJob(label=run.label, attempt=run.attempt, values=run.values, spec_text=run.spec_text,
                       spec_file=self.loaded.base.file, base_dir=str(self.loaded.base_dir.resolve()),
                       sweep_dir=str(self.folder.path.resolve()), token=self.folder.info["token"],
                       ship=self.options.ship, topic=self.topic, metric=self.sweep.metric.name,
                       prune_from=prune.after_epochs if prune is not None else None, reply=reply,
                       stop=self.stop_event)
        run.submitted = time.monotonic()
        future = self.cluster.client.submit(self.task, job, key=f"{self.topic}-trial-{run.label}-{run.attempt}",
                                            pure=False)
        self._futures[future] = run
        self.progress.running[run.label] = run
        future.add_done_callback(lambda done: self._events.put(("done", done)))

    def _on_event(self, message: dict) -> None:
        run = self.progress.running.get(str(message.get("label")))
        if run is None or message.get("attempt") != run.attempt:
            return  # a try that was given up (its worker was lost)
        if message.get("kind") == "start":
            run.worker = message.get("worker", "")
        elif message.get("kind") == "epoch":
            run.epoch, run.value = int(message["epoch"]), message.get("value")
            self._maybe_prune(run)

    def _maybe_prune(self, run: Running) -> None:
        prune = self.sweep.prune
        if run.trial is None or prune is None:
            return
        if run.value is not None:
            run.trial.report(float(run.value), run.epoch)
        if prune.after_epochs <= run.epoch < run.epochs:  # the worker waits for this answer
            from distributed import Queue

            decision = "prune" if run.value is not None and run.trial.should_prune() else "go"
            Queue(f"{self.topic}-{run.label}-{run.attempt}", client=self.cluster.client).put(f"{run.epoch}:{decision}")

    def _on_done(self, future) -> None:
        run = self._futures.pop(future, None)
        if run is None:
            return
        if future.status == "finished":
            self._finish(run, future.result())
            return
        if future.status == "cancelled" or self.interrupted:
            self.progress.running.pop(run.label, None)
            return
        error = future.exception()
        lost = _worker_lost(error)
        if lost and run.attempt == 1:
            self.on_note(f"trial {run.label}: its worker{' ' + run.worker if run.worker else ''} was lost; "
                         "running it again on another")
            self.folder.forget(run.label)
            run.attempt, run.worker, run.epoch, run.value = 2, "", 0, None
            self._submit(run)
            return
        message = ("its worker was lost twice (killed, or out of memory?)" if lost
                   else f"{type(error).__name__}: {error}")
        self._finish(run, {"status": "failed", "message": message, "epochs": [], "seconds": 0.0,
                           "worker": run.worker, "host": ""})

    def _finish(self, run: Running, outcome: dict) -> None:
        progress = self.progress
        progress.running.pop(run.label, None)
        status = outcome.get("status", "failed")
        if status == "stopped":
            return  # stopped by Ctrl-C: still running in the study, so a resume runs it again
        label = run.label
        wall = time.monotonic() - run.submitted if run.submitted else 0.0
        if outcome.get("files") is not None:
            self.folder.keep_files(label, outcome["files"])
        run_dir = f"{TRIALS_DIR}/{trial_dir_name(label)}"
        record = {"trial": _record_label(label), "status": status, "value": outcome.get("value"),
                  "metric": self.sweep.metric.name, "params": run.values, "message": outcome.get("message", ""),
                  "epochs": outcome.get("epochs", []), "seconds": round(float(outcome.get("seconds", 0.0)), 4),
                  "wall": round(wall, 4), "worker": outcome.get("worker", run.worker), "host": outcome.get("host", ""),
                  "attempt": run.attempt, "new_plan": outcome.get("new_plan"), "tier": outcome.get("tier", ""),
                  "run_dir": run_dir if (self.folder.path / run_dir).is_dir() else None,
                  "finished": datetime.now(timezone.utc).isoformat()}
        self.folder.append(record)  # first: a kill before the study hears of it is repaired on resume
        if run.trial is not None:
            from netc.sweep.study import tell

            tell(self.study, run.trial, status, record["value"], record["message"])
            setattr(progress, status, getattr(progress, status) + 1)
            if wall:
                progress.walls.append(wall)
            if progress.better(record) and record["run_dir"]:
                progress.best = record
                self.folder.set_best(record)
        else:
            progress.base, progress.base_pending = record, False
        self.on_trial(record, progress)

    def _stop(self) -> None:
        """Ctrl-C: stop every trial in flight (a running cluster's workers at their next chunk; the
        embedded cluster is closed right after)."""
        from distributed import Event

        try:
            Event(self.stop_event, client=self.cluster.client).set()
            self.cluster.client.cancel(list(self._futures), force=True)
        except Exception:  # the cluster is going away anyway
            pass
        for run in self._futures.values():
            self.progress.running.pop(run.label, None)
        self._futures.clear()

    # ------------------------------------------------------------------ around the trials
    def _compile_kernels(self) -> None:
        """The embedded cluster's workers share this machine's kernel cache: compile what the base spec
        (and each choice of the space) needs once, here, in parallel processes, instead of in every
        worker at its first trial."""
        from netc.compiler import PYTHON, kernel_library
        from netc.graph import build_graph
        from netc.runtime.model import Model

        variants = [{}] + [{path: value} for path, dim in self.sweep.space.items() if dim.choice is not None
                           for value in dim.choice]
        entries, sources = [], set()
        for values in variants:
            try:
                _, spec = self.loaded.trial(values, "kernels", check_graph=False)
                model = Model(build_graph(spec), tier="python")
            except Exception:  # a bad variant fails as its trial, with its own message
                continue
            if model.plan.sources[PYTHON] not in sources:
                sources.add(model.plan.sources[PYTHON])
                entries.extend(model.kernels_called())
        todo = kernel_library.missing(entries)
        if todo:
            self.on_note(f"compiling netc's kernels for this machine (once): {len(todo)}")
            kernel_library.compile_missing(todo)

    def _pictures(self) -> None:
        from netc.sweep.pictures import draw_sweep

        try:
            draw_sweep(self.folder)
        except Exception as exc:  # pictures never cost a sweep its results
            self.on_note(f"could not draw the sweep's pictures: {exc}")


def _without_trials(text: str) -> str:
    try:
        data = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return text
    if isinstance(data, dict):
        data.pop("trials", None)
    return repr(data)


def _worker_lost(error) -> bool:
    """Whether a task failed because its worker went away (not because of the trial)."""
    try:
        from distributed.comm.core import CommClosedError
        from distributed.scheduler import KilledWorker
    except ImportError:  # pragma: no cover
        return False
    return isinstance(error, (KilledWorker, CommClosedError))
