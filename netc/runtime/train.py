"""The training run: data, model, epochs, evaluation, run folder, checkpoints, resume.

An epoch runs in compiled code in fixed chunks of batches, so progress can be shown and
Ctrl-C honoured between chunks while the result stays independent of timing: the chunk
layout, the shuffling (seed, epoch) and the dropout stream (seed, epoch, chunk) are
all fixed, so a resumed run ends with the same weights as an unbroken one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml
from pydantic import ValidationError

from netc.errors import RunError
from netc.graph import build_graph
from netc.graph.build import batch_problems
from netc.runtime.checkpoint import NORMALIZATION, load_state, load_weights, save_checkpoint, save_normalization
from netc.runtime.data import load_dataset, load_train_eval
from netc.runtime.data.augment import AUGMENT_STREAM, augment
from netc.runtime.metrics import top_k_accuracy
from netc.runtime.model import EpochResult, EvalResult, LoadReport, Model
from netc.runtime.rundir import RunFolder, guarded_write, is_run_folder, latest_run_dir, run_error
from netc.runtime.schedule import rates
from netc.spec.load import LoadedSpec
from netc.spec.models import Spec

CHUNK_SAMPLES = 4096  # samples per compiled call: progress and Ctrl-C granularity


@dataclass
class Overrides:
    epochs: int | None = None
    lr: float | None = None
    batch: int | None = None
    seed: int | None = None


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float | None
    eval_loss: float | None
    eval_accuracy: float | None
    seconds: float
    samples_per_second: float
    lr: float = 0.0  # the learning rate of the epoch's last step (optimizer.schedule)
    losses: dict[str, float] | None = None  # several losses: each one's mean, as "train_<input>", "eval_<input>"
    eval_top_k_accuracy: float | None = None  # with train.top_k


@dataclass
class RunResult:
    run_dir: Path
    epochs: list[EpochRecord] = field(default_factory=list)
    init_report: LoadReport | None = None
    interrupted: bool = False
    start_epoch: int = 0
    already_finished: bool = False  # --resume of a run that had done all its epochs
    best: tuple[int, str, float] | None = None  # (epoch, metric, value) of best.safetensors
    stopped_early: int | None = None  # the epoch after which early stopping ended the run


def apply_overrides(loaded: LoadedSpec, overrides: Overrides) -> LoadedSpec:
    spec = loaded.spec
    train = {k: v for k, v in (("epochs", overrides.epochs), ("batch", overrides.batch),
                               ("seed", overrides.seed)) if v is not None}
    update = {"train": spec.train.model_copy(update=train)}
    if overrides.lr is not None:
        update["optimizer"] = spec.optimizer.model_copy(update={"lr": overrides.lr})
    return dataclasses.replace(loaded, spec=spec.model_copy(update=update))


def resolved_spec_text(loaded: LoadedSpec) -> str:
    data = loaded.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False)


class Trainer:
    """Trains one spec; `on_progress(epoch, batches_done, batches_total, loss, accuracy, samples_per_s)`,
    `on_epoch(record)`, `on_init(load_report)` and `on_resume(run_dir, epoch, epochs)` let the CLI
    draw progress, and `on_finish(run_dir)` runs when the epochs end, finished or interrupted (the CLI
    draws curves.png there; it must not raise, so that it never costs a run). `tier` is the Model's
    ("auto", "fused" or "python"; the numbers are the same in every tier). The run folder is claimed
    and locked here, after the data has loaded, and released when `run()` returns (or the process ends)."""

    def __init__(self, loaded: LoadedSpec, overrides: Overrides | None = None, runs_root: Path = Path("runs"),
                 run_dir: Path | None = None, resume: bool = False, init: str | None = None,
                 on_progress: Callable | None = None, on_epoch: Callable | None = None,
                 on_init: Callable | None = None, on_resume: Callable | None = None, force: bool = False,
                 on_finish: Callable[[Path], object] | None = None, tier: str = "auto"):
        self.loaded = apply_overrides(loaded, overrides or Overrides())
        self.spec = self.loaded.spec
        self.graph = build_graph(self.loaded)
        self.train_data, self.eval_data = load_train_eval(self.loaded)  # every data error at once
        self._check_last_batch()
        self.resume = resume
        self.init = init
        self.on_progress = on_progress or (lambda *args: None)
        self.on_epoch = on_epoch or (lambda record: None)
        self.on_init = on_init or (lambda report: None)
        self.on_resume = on_resume or (lambda *args: None)
        self.on_finish = on_finish or (lambda run_dir: None)
        # "auto": the fused plan when it is compiled, else the Python tier while it compiles (Model)
        self.model = Model(self.graph, tier=tier, background=True)
        self.interrupted = False
        self._resumed_spec: str | None = None  # written with the resumed run's first checkpoint
        self.folder = self._claim_run_dir(runs_root, run_dir, force)
        self.run_dir = self.folder.path
        if resume and (overrides is None or overrides.epochs is None):
            self._keep_the_runs_epochs()

    def _check_last_batch(self) -> None:
        """An epoch's last batch may be smaller than the others: refuse one that batch norm cannot train on."""
        last = len(self.train_data) % self.spec.train.batch
        if not last:
            return
        for problem, node in batch_problems(self.graph.nodes, self.graph.shape_of, last):
            raise run_error(f"the last batch of every epoch holds {last} sample(s) ({len(self.train_data)} samples, "
                             f"batch {self.spec.train.batch}): {node.op} '{node.name}': {problem.message}",
                             self.loaded.file, "choose a batch size that leaves more than one sample over, "
                             "or set data.train.limit")

    def _keep_the_runs_epochs(self) -> None:
        """A resumed run trains to the epoch count it was started with (`--epochs` may change it)."""
        try:
            saved = yaml.safe_load((self.run_dir / "spec.yaml").read_text())
            epochs = int(saved["train"]["epochs"])
        except (OSError, yaml.YAMLError, TypeError, KeyError, ValueError):
            return  # _restore reports a missing or changed spec
        if epochs != self.spec.train.epochs:
            self.loaded = apply_overrides(self.loaded, Overrides(epochs=epochs))
            self.spec = self.loaded.spec

    def _claim_run_dir(self, root: Path, run_dir: Path | None, force: bool) -> RunFolder:
        if self.resume:
            found = run_dir or latest_run_dir(root, self.spec.name)
            folder = RunFolder.existing(found) if found is not None and is_run_folder(found) else None
            if folder is None or not (found / "last.safetensors").exists():
                if folder is not None:
                    folder.release()
                raise run_error("nothing to resume: no checkpoint found", str(found or root / self.spec.name),
                                 "start a run without --resume first")
            return folder
        if run_dir is not None:
            return RunFolder.given(run_dir, self.spec.name, force)
        return RunFolder.new_numbered(root, self.spec.name)

    # ------------------------------------------------------------------ the run
    def run(self) -> RunResult:
        try:
            return self._run()
        finally:
            self.folder.release()

    def _run(self) -> RunResult:
        result = RunResult(self.run_dir)
        spec_text = resolved_spec_text(self.loaded)
        start_epoch, start_chunk = 0, 0
        if self.resume:
            start_epoch, start_chunk = self._restore(spec_text)
            self.on_resume(self.run_dir, start_epoch, self.spec.train.epochs)
            if start_epoch >= self.spec.train.epochs:
                result.start_epoch, result.already_finished = start_epoch, True
                return result
        else:
            result.init_report = self._load_init()
            if result.init_report is not None:
                self.on_init(result.init_report)
            with guarded_write(self.run_dir / "spec.yaml", "the resolved spec"):
                (self.run_dir / "spec.yaml").write_text(spec_text)
            with guarded_write(self.run_dir / "metrics.jsonl", "the metrics"):
                (self.run_dir / "metrics.jsonl").write_text("")
            stats = self.train_data.stats
            if stats is not None and stats.kind != "none":  # predict normalizes new inputs with them
                with guarded_write(self.run_dir / NORMALIZATION, "the normalization statistics"):
                    save_normalization(self.run_dir / NORMALIZATION, stats)
            if self.train_data.classes is not None:  # an images source: what each label means, for predict
                with guarded_write(self.run_dir / "classes.json", "the class list"):
                    (self.run_dir / "classes.json").write_text(json.dumps(self.train_data.classes) + "\n")
        result.start_epoch = start_epoch
        train = self.model.prepare(self.train_data.arrays)
        evaluation = self.model.prepare(self.eval_data.arrays) if self.eval_data is not None else None
        # Ctrl-C ends the run at a chunk boundary; Python installs handlers only in the main thread (a run
        # in another thread, e.g. a sweep's trial on a Dask worker, is stopped through `interrupted`)
        handles = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGINT)
        if handles:
            signal.signal(signal.SIGINT, self._on_interrupt)
        history = self._history()  # the epochs before this process (a resumed run's), as metrics.jsonl has them
        try:
            for epoch in range(start_epoch, self.spec.train.epochs):
                if self._stop_epoch(history) is not None:  # a resumed run that had stopped early
                    break
                record = self._epoch(epoch, train, evaluation, start_chunk if epoch == start_epoch else 0, history)
                if record is None:  # interrupted: a checkpoint was saved mid-epoch
                    result.interrupted = True
                    break
                result.epochs.append(record)
                history.append(dataclasses.asdict(record))
                self._extra_checkpoints(history)
                self.on_epoch(record)
                if self.interrupted:
                    result.interrupted = epoch + 1 < self.spec.train.epochs
                    break
            result.stopped_early = self._stop_epoch(history)
        finally:
            if handles:
                signal.signal(signal.SIGINT, previous)
        checkpoints = self.spec.train.checkpoints
        if checkpoints is not None and checkpoints.best is not None:
            epoch = best_epoch(history, checkpoints.best)
            if epoch is not None:
                result.best = (epoch, checkpoints.best, history[epoch - 1][checkpoints.best])
        self.on_finish(self.run_dir)
        return result

    # ------------------------------------------------------------------ early stopping, more checkpoints
    def _history(self) -> list[dict]:
        path = self.run_dir / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def _stop_epoch(self, history: list[dict]) -> int | None:
        """The epoch after which early stopping ends the run (None: go on). From the metrics alone, so a
        resumed run decides as the unbroken one would."""
        rule = self.spec.train.early_stop
        if rule is None or not history:
            return None
        best = best_epoch(history, rule.monitor, rule.min_delta)
        last = history[-1]["epoch"]
        return last if best is not None and last - best >= rule.patience else None

    def _extra_checkpoints(self, history: list[dict]) -> None:
        """best.safetensors when this epoch is the best so far; epoch-N.safetensors every N epochs."""
        checkpoints = self.spec.train.checkpoints
        if checkpoints is None:
            return
        epoch = history[-1]["epoch"]
        if checkpoints.best is not None and best_epoch(history, checkpoints.best) == epoch:
            with guarded_write(self.run_dir / "best.safetensors", "the best checkpoint"):
                save_checkpoint(self.run_dir / "best.safetensors", self.model.state_dict())
        if checkpoints.every is not None and epoch % checkpoints.every == 0:
            path = self.run_dir / f"epoch-{epoch}.safetensors"
            with guarded_write(path, "a checkpoint"):
                save_checkpoint(path, self.model.state_dict())
            written = sorted((int(p.stem.split("-")[1]), p) for p in self.run_dir.glob("epoch-*.safetensors")
                             if p.stem.split("-")[1].isdigit())
            for _, old in written[:-checkpoints.keep]:
                old.unlink(missing_ok=True)

    def _on_interrupt(self, signum, frame) -> None:
        self.interrupted = True  # honoured at the next chunk boundary

    def _chunks(self, count: int) -> list[tuple[int, int]]:
        batch = self.spec.train.batch
        per_chunk = max(1, CHUNK_SAMPLES // batch) * batch
        return [(start, min(start + per_chunk, count)) for start in range(0, count, per_chunk)]

    def _order(self, epoch: int, count: int) -> np.ndarray:
        if not self.spec.train.shuffle:
            return np.arange(count, dtype=np.int64)
        return np.random.default_rng([self.spec.train.seed, epoch]).permutation(count).astype(np.int64)

    def _epoch(self, epoch: int, train: dict, evaluation: dict | None, first_chunk: int,
               history: list[dict]) -> EpochRecord | None:
        count = train["__count__"]
        order = self._order(epoch, count)
        chunks = self._chunks(count)
        batch = self.spec.train.batch
        total_batches = (count + batch - 1) // batch
        loss_sum = correct_sum = seen = 0.0
        part_sums = np.zeros(len(self.spec.losses))
        started = time.perf_counter()
        lr = self.spec.optimizer.lr
        for index in range(first_chunk, len(chunks)):
            start, stop = chunks[index]
            part = dict(train)
            part["__count__"] = stop - start
            # one rate per batch, from where the chunk starts in the run: a resumed run gets the same ones
            lrs = rates(self.spec.optimizer, epoch, start // batch, (stop - start + batch - 1) // batch, total_batches,
                        history)
            lr = float(lrs[-1])
            rows = order[start:stop]
            if self.spec.data.augment is not None:  # the chunk's samples, changed anew (seeded by chunk)
                part, rows = self._augmented(rows, epoch, index), np.arange(stop - start, dtype=np.int64)
            result = self.model.train_epoch(part, rows, lr=lrs, seed=_chunk_seed(self.spec.train.seed, epoch, index))
            self._check_finite(result, epoch, start)
            n = stop - start
            loss_sum += result.loss * n
            part_sums += np.asarray(result.losses) * n
            correct_sum += (result.accuracy or 0.0) * n
            seen += n
            rate = seen / max(time.perf_counter() - started, 1e-9)
            self.on_progress(epoch, (stop + batch - 1) // batch, total_batches, loss_sum / seen,
                             correct_sum / seen if result.accuracy is not None else None, rate)
            if self.interrupted and index + 1 < len(chunks):
                self._save(epoch, index + 1)
                return None
        seconds = time.perf_counter() - started
        evaluated = self.model.evaluate(evaluation) if evaluation is not None else None
        record = EpochRecord(
            epoch + 1, loss_sum / seen, correct_sum / seen if self.model.has_accuracy() else None,
            evaluated.loss if evaluated else None, evaluated.accuracy if evaluated else None,
            seconds, seen / max(seconds, 1e-9), lr, self._each_loss(part_sums / seen, evaluated),
            self._top_k(evaluated))
        metrics = self.run_dir / "metrics.jsonl"
        before = metrics.stat().st_size
        try:
            with guarded_write(metrics, "the metrics"), open(metrics, "a") as handle:
                handle.write(json.dumps(dataclasses.asdict(record)) + "\n")
            self._save(epoch + 1, 0)
        except RunError:
            with contextlib.suppress(OSError):  # the epoch's line goes with its checkpoint
                os.truncate(metrics, before)
            raise
        return record

    def _top_k(self, evaluated: EvalResult | None) -> float | None:
        k = self.spec.train.top_k
        if k is None or evaluated is None or evaluated.labels is None:
            return None
        return top_k_accuracy(evaluated.scores, evaluated.labels, k)

    def _each_loss(self, train: np.ndarray, evaluated: EvalResult | None) -> dict[str, float] | None:
        """Each loss's own mean by the layer it reads, when the spec has several."""
        losses = self.spec.losses
        if len(losses) == 1:
            return None
        out = {f"train_{loss.input}": float(value) for loss, value in zip(losses, train)}
        if evaluated is not None:
            out.update({f"eval_{loss.input}": value for loss, value in zip(losses, evaluated.losses)})
        return out

    def _augmented(self, rows: np.ndarray, epoch: int, chunk: int) -> dict:
        """The training samples `rows` (in their shuffled order), augmented and prepared; the draws
        depend only on (seed, epoch, chunk), so a run resumed mid-epoch sees the same samples."""
        arrays = {name: values[rows] for name, values in self.train_data.arrays.items()}
        rng = np.random.default_rng([self.spec.train.seed, epoch, chunk, AUGMENT_STREAM])
        only_targets = frozenset(loss.target for loss in self.spec.losses if not self.graph.consumers(loss.target))
        return self.model.prepare(augment(arrays, self.spec.data.augment, self.spec.inputs, rng, only_targets))

    def _check_finite(self, result: EpochResult, epoch: int, start: int) -> None:
        if not result.diverged:
            return
        batch_index = start // self.spec.train.batch + result.batches + 1
        kept = self.run_dir / "last.safetensors"
        where = f"the last good checkpoint is {kept}" if kept.exists() else "no checkpoint was written yet"
        raise run_error(
            f"training diverged: the loss became {result.loss} at epoch {epoch + 1}, batch {batch_index}; "
            f"stopped before applying that update ({where})", str(self.run_dir),
            "lower the learning rate (--lr), normalise the data, or use a smaller init")

    # ------------------------------------------------------------------ checkpoints
    def _save(self, epoch: int, chunk: int) -> None:
        progress = {"epoch": epoch, "chunk": chunk, "step": self.model.step}
        with guarded_write(self.run_dir / "last.safetensors", "the checkpoint"):
            save_checkpoint(self.run_dir / "last.safetensors", self.model.state_dict(),
                            self.model.optimizer_state(), progress)
        if self._resumed_spec is not None:  # the new epoch count, once the resumed run has a checkpoint
            with guarded_write(self.run_dir / "spec.yaml", "the resolved spec"):
                (self.run_dir / "spec.yaml").write_text(self._resumed_spec)
            self._resumed_spec = None

    def _restore(self, spec_text: str) -> tuple[int, int]:
        saved = (self.run_dir / "spec.yaml").read_text() if (self.run_dir / "spec.yaml").exists() else ""
        if _without_epochs(saved) != _without_epochs(spec_text):
            raise run_error("the spec (or an override) changed since this run started", str(self.run_dir),
                             "resume with the same spec and options (only --epochs may change)")
        weights, state, progress = load_state(self.run_dir / "last.safetensors")
        self._truncate_metrics(int(progress["epoch"]))
        self.model.set_weights(weights, strict=True)
        self.model.set_optimizer_state(state, progress["step"])
        self._resumed_spec = spec_text if spec_text != saved else None
        return int(progress["epoch"]), int(progress["chunk"])

    def _truncate_metrics(self, epochs_done: int) -> None:
        """Drop metric lines of epochs after the checkpoint (a kill between the two writes), so the
        resumed run's metrics.jsonl reads like an unbroken run's."""
        path = self.run_dir / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        kept = [line for line in lines if json.loads(line)["epoch"] <= epochs_done]
        if len(kept) < len(lines):
            with guarded_write(path, "the metrics"):
                path.write_text("".join(line + "\n" for line in kept))

    def _load_init(self) -> LoadReport | None:
        source = self.init
        if source is None and self.spec.init is not None:
            source = str(self.loaded.base_dir / self.spec.init.checkpoint)
        if source is None:
            return None
        values = load_weights(source)
        if self.init is None and self.spec.init.layers is not None:
            keep = tuple(self.spec.init.layers)
            # a layer's tensors, or every tensor of a block instance (`res` keeps res.0.fc1.weight, ...)
            values = {k: v for k, v in values.items()
                      if k.rsplit(".", 1)[0] in keep or k.startswith(tuple(f"{name}." for name in keep))}
        report = self.model.set_weights(values)
        if not report.matched:
            if report.mismatched:
                shapes = "; ".join(f"{name}: checkpoint {list(got)} vs model {list(want)}"
                                   for name, want, got in report.mismatched)
                raise run_error(f"no tensor of the checkpoint fits the model: the names match but the shapes "
                                 f"differ ({shapes})", source,
                                 "was the checkpoint trained with other layer sizes? load it into a spec with "
                                 "the same shapes, or pick the layers that fit with init.layers")
            raise run_error("no tensor of the checkpoint matches the model", source,
                             f"the model has: {', '.join(report.missing)}")
        return report


def _chunk_seed(seed: int, epoch: int, chunk: int) -> int:
    return int(np.random.default_rng([seed, epoch, chunk]).integers(0, 2**31 - 1))


def _without_epochs(text: str) -> str:
    """The resolved spec as data, its epoch count left out, read through today's spec language: a run
    folder written before a field with a default was added (a loss's `weight`) compares equal."""
    if not text:
        return ""
    data = yaml.safe_load(text)
    try:
        data = Spec.model_validate(data).model_dump(mode="json", by_alias=True, exclude_none=True)
    except (ValidationError, TypeError):
        pass  # not a spec this netc reads: compared as written (and so found changed)
    if isinstance(data, dict):
        data.get("train", {}).pop("epochs", None)
    return json.dumps(data, sort_keys=True)


def best_epoch(history: list[dict], metric: str, min_delta: float = 0.0) -> int | None:
    """The epoch of the best value of `metric` (losses lowest, accuracies highest); a later value
    counts as better only by more than `min_delta` (Keras's rule); the first of equals wins."""
    lower = metric.endswith("_loss")
    best = None
    for record in history:
        value = record.get(metric)
        if value is None:
            continue
        if best is None or (value < best[1] - min_delta if lower else value > best[1] + min_delta):
            best = (record["epoch"], value)
    return None if best is None else best[0]


def evaluate_checkpoint(loaded: LoadedSpec, weights: str | Path, which: str = "eval") -> EvalResult:
    graph = build_graph(loaded)
    train = load_dataset(loaded, "train") if which == "eval" else None
    data = load_dataset(loaded, which, train.stats if train is not None else None)
    model = Model(graph, tier="auto")  # the fused loop when compiled, else the Python tier: no compile to wait for
    report = model.set_weights(load_weights(weights))
    if report.missing or report.mismatched:
        missing = ", ".join(report.missing + [m[0] for m in report.mismatched])
        raise run_error(f"the checkpoint does not fit the spec (missing or different: {missing})", str(weights))
    return model.evaluate(model.prepare(data.arrays))
