"""The sweep folder: what a sweep leaves behind, and how it is read back.

    sweeps/<name>/
      sweep.json       the sweep's identity: token, metric, method, space (what `netc sweep show` reads)
      sweep.yaml       the sweep file as it was started (a resume must match it, `trials` aside)
      spec.yaml        the base spec as it was started (the same)
      study.db         Optuna's study (RDB storage on SQLite)
      trials.jsonl     one line per finished trial: values, metric per epoch, status, seconds, worker
      trials/0007/     each trial's run folder (spec.yaml, metrics.jsonl, last.safetensors, ...);
      trials/base/     the base spec's run (`baseline: true`)
      best/            the best trial's run folder, and trial.json (its number, values and metric)
      params.png       the metric against each spec path; parallel.png: parallel coordinates

trials.jsonl is appended to (one write per line) as trials end, so a killed sweep keeps every
trial it finished. The folder is locked while a sweep runs in it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path

from netc.errors import Diagnostic, Location, RunError
from netc.runtime.rundir import FolderInUse, guarded_write, hold_lock
from netc.sweep.worker import KEPT_OUT, TOKEN_FILE, TRIALS_DIR, trial_dir_name

TRIALS = "trials.jsonl"
SWEEP_COPY = "sweep.yaml"
SPEC_COPY = "spec.yaml"
BEST = "best"
LOCK = ".netc-sweep-lock"
BASE = "base"

def sweep_error(message: str, where: Path | str, hint: str = "") -> RunError:
    return RunError(Diagnostic("E-SWEEP", message, Location(str(where)), hint=hint))


def is_sweep_folder(path: Path) -> bool:
    return (path / TOKEN_FILE).is_file()


class SweepFolder:
    """A sweep folder, opened for a sweep (locked) or for reading."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def start(cls, path: Path, info: dict, sweep_text: str, spec_text: str) -> "SweepFolder":
        """A new sweep in `path` (created, or empty)."""
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            if is_sweep_folder(path):
                raise sweep_error("the folder already holds a sweep", path,
                                  "pass --resume to continue it, or choose another folder with --out")
            raise sweep_error("the folder is not empty and holds no sweep; netc will not write into it", path,
                              "choose a new or empty folder with --out")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise sweep_error(f"cannot create the sweep folder: {exc.strerror or exc}", path,
                              "choose a writable folder with --out") from None
        folder = cls(path)
        folder.lock()
        info = {**info, "token": secrets.token_hex(16), "created": datetime.now(timezone.utc).isoformat()}
        folder._write(SWEEP_COPY, sweep_text)
        folder._write(SPEC_COPY, spec_text)
        folder._write(TRIALS, "")
        folder._write(TOKEN_FILE, json.dumps(info, indent=2) + "\n")  # last: its presence makes it a sweep
        return folder

    @classmethod
    def resume(cls, path: Path) -> "SweepFolder":
        if not is_sweep_folder(path):
            raise sweep_error("nothing to resume: no sweep in this folder", path,
                              "start the sweep without --resume first")
        folder = cls(path)
        folder.lock()
        return folder

    def lock(self) -> None:
        try:
            self._lock = hold_lock(self.path / LOCK)
        except OSError as exc:
            raise sweep_error(f"cannot use the sweep folder: {exc.strerror or exc}", self.path) from None
        except FolderInUse as held:
            raise sweep_error(f"the sweep folder is in use by another netc sweep (PID {held.holder})", self.path,
                              "wait for it to end, or choose another folder with --out") from None

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _write(self, name: str, text: str) -> None:
        path = self.path / name
        with guarded_write(path, name):
            tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)

    # ------------------------------------------------------------------ reading
    @property
    def info(self) -> dict:
        try:
            return json.loads((self.path / TOKEN_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise sweep_error(f"cannot read {TOKEN_FILE}: {exc}", self.path / TOKEN_FILE) from None

    def saved(self, name: str) -> str:
        try:
            return (self.path / name).read_text()
        except OSError:
            return ""

    def records(self) -> dict[str, dict]:
        """The last line of each trial in trials.jsonl, by label ('0', '1', ..., 'base'); a line cut short
        by a kill is skipped."""
        out: dict[str, dict] = {}
        try:
            lines = (self.path / TRIALS).read_text().splitlines()
        except OSError:
            return out
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            out[str(record.get("trial"))] = record
        return out

    def trial_dir(self, label: str) -> Path:
        return self.path / TRIALS_DIR / trial_dir_name(label)

    # ------------------------------------------------------------------ writing
    def append(self, record: dict) -> None:
        """One line, written and flushed at once; after a line a kill cut short, on a line of its own
        (the fragment stays unreadable, and is skipped; this record is not glued to it)."""
        path = self.path / TRIALS
        with guarded_write(path, "the trial log"), open(path, "a+b") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell():
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")
            handle.write((json.dumps(record) + "\n").encode())
            handle.flush()
            os.fsync(handle.fileno())

    def keep_files(self, label: str, files: dict[str, bytes]) -> Path:
        """A trial's run folder from the files a worker shipped back."""
        folder = self.trial_dir(label)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for name, data in files.items():
            if "/" in name or name.startswith("."):
                continue  # only plain file names are written
            with guarded_write(folder / name, name):
                (folder / name).write_bytes(data)
        return folder

    def forget(self, label: str) -> None:
        """Remove what an unfinished try of a trial left (before it runs again)."""
        folder = self.trial_dir(label)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)

    def set_best(self, record: dict) -> Path:
        """best/: a copy of the trial's run folder and trial.json, swapped in whole."""
        source = self.path / record["run_dir"]
        target = self.path / BEST
        tmp = self.path / f".{BEST}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with guarded_write(target, "the best trial's folder"):
            tmp.mkdir()
            for item in sorted(source.glob("*")):
                if item.is_file() and item.name not in KEPT_OUT:
                    shutil.copy2(item, tmp / item.name)
            summary = {key: record.get(key) for key in ("trial", "params", "value", "metric", "status", "run_dir")}
            (tmp / "trial.json").write_text(json.dumps(summary, indent=2) + "\n")
            old = self.path / f".{BEST}.{os.getpid()}.old"
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        return target


def leaderboard(records: dict[str, dict], goal: str) -> list[dict]:
    """The trials in rank order: complete ones best first, then pruned ones (by their last value), then
    failed ones; the base run is left out (see `base_record`). Ties go to the lower trial number."""
    sign = -1.0 if goal == "maximize" else 1.0
    order = {"complete": 0, "pruned": 1, "failed": 2}
    trials = [r for label, r in records.items() if label != BASE]

    def key(record: dict):
        value = record.get("value")
        return (order.get(record.get("status"), 3), 0 if value is not None else 1,
                sign * value if value is not None else 0.0, int(record.get("trial", 0)))

    return sorted(trials, key=key)


def best_record(records: dict[str, dict], goal: str) -> dict | None:
    ranked = leaderboard(records, goal)
    return ranked[0] if ranked and ranked[0].get("status") == "complete" else None
