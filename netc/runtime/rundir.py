"""The run folder: claimed atomically, locked for the run's lifetime, marked as netc's.

- A new numbered folder (`runs/<name>`, `runs/<name>-2`, ...) is claimed with an exclusive
  `mkdir`, so runs started together get distinct folders.
- A run holds an exclusive `flock` on `<folder>/.netc-lock` while it lives; the kernel drops
  it when the process ends however it ends, so a killed run leaves no stale lock. A second
  run into a held folder is refused, naming the holder's PID.
- `<folder>/.netc-run` marks a folder netc made. A non-empty folder without it is the user's:
  refused unless `force`, and even then no file netc writes may already be there.
- Every write goes through `guarded_write`, so a full disk, a file-size limit or a read-only
  folder is a located error instead of a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from netc.errors import Diagnostic, Location, RunError

MARKER = ".netc-run"
LOCK = ".netc-lock"
RUN_FILES = ("spec.yaml", "metrics.jsonl", "curves.png", "last.safetensors", "last.state.safetensors", "best.safetensors",
             "classes.json", "normalization.safetensors")

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, folders are still claimed atomically
    fcntl = None


def run_error(message: str, where: Path | str, hint: str = "") -> RunError:
    return RunError(Diagnostic("E-RUN", message, Location(str(where)), hint=hint))


def is_run_folder(folder: Path) -> bool:
    """Made by netc: marked (or being marked by a run holding its lock), or (runs from before the
    marker) a spec next to a checkpoint."""
    return (folder / MARKER).is_file() or (folder / LOCK).is_file() or ((folder / "spec.yaml").is_file() and (folder / "last.safetensors").is_file())


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


@contextlib.contextmanager
def guarded_write(path: Path, what: str = ""):
    """Turn a failed write (disk full, file too large, read-only) into an E-RUN error."""
    try:
        yield
    except OSError as exc:
        raise run_error(f"cannot write {what or path.name} ({path}): {_why(exc)}", path,
                        "free disk space or raise the file-size limit, or choose a writable --run-dir; "
                        "files written before (the last checkpoint) are intact") from None


class FolderInUse(Exception):
    """Another process holds a folder's lock file; `holder` is the PID it wrote there."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


def hold_lock(path: Path):
    """The lock file at `path`, opened, locked (flock, released when the file is closed or the process
    ends) and holding this process's PID; FolderInUse when another process holds it; OSError when it
    cannot be opened. Run folders and sweep folders share it."""
    handle = open(path, "a+")
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise FolderInUse(holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


class RunFolder:
    """A claimed run folder, locked until `release()` (or the end of the process)."""

    def __init__(self, path: Path):
        self.path = path
        self._handle = None

    @classmethod
    def new_numbered(cls, root: Path, name: str) -> "RunFolder":
        """root/name, or root/name-2, -3, ...: the first that this process creates."""
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise run_error(f"cannot create the runs folder {root}: {_why(exc)}", root,
                            "choose a writable folder with --run-dir") from None
        index = 1
        while True:
            candidate = root / (name if index == 1 else f"{name}-{index}")
            try:
                candidate.mkdir()
            except FileExistsError:
                index += 1
                continue
            except OSError as exc:
                raise run_error(f"cannot create the run folder {candidate}: {_why(exc)}", candidate,
                                "choose a writable folder with --run-dir") from None
            folder = cls(candidate)
            folder._lock_and_mark(name)
            return folder

    @classmethod
    def given(cls, path: Path, spec_name: str, force: bool = False) -> "RunFolder":
        """A folder named by --run-dir for a new run: created, empty, or an unfinished netc run."""
        if path.exists() and not path.is_dir():
            raise run_error("the run folder is a file", path, "choose a folder with --run-dir")
        if path.is_dir() and not is_run_folder(path) and any(path.iterdir()):
            if not force:
                raise run_error("the folder is not empty and is not a netc run folder; netc will not write "
                                "into it", path, "choose a new or empty --run-dir, or pass --force to add "
                                "the run's files to this folder")
            taken = [name for name in (*RUN_FILES, MARKER) if (path / name).exists()]
            if taken:
                raise run_error(f"--force: the folder already holds {', '.join(taken)}, which netc did not "
                                "write and will not overwrite", path, "move those files or choose another --run-dir")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise run_error(f"cannot create the run folder: {_why(exc)}", path,
                            "choose a writable folder with --run-dir") from None
        folder = cls(path)
        folder._lock_and_mark(spec_name)
        if (path / "last.safetensors").exists():
            folder.release()
            raise run_error("the run folder already holds a run", path,
                            "pass --resume to continue it, or choose another --run-dir")
        return folder

    @classmethod
    def existing(cls, path: Path) -> "RunFolder":
        """A run folder to resume."""
        folder = cls(path)
        folder._lock()
        return folder

    # ------------------------------------------------------------------ lock and marker
    def _lock_and_mark(self, spec_name: str) -> None:
        self._lock()
        marker = self.path / MARKER
        if not marker.exists():
            text = json.dumps({"netc": _version(), "spec": spec_name, "created": datetime.now(timezone.utc).isoformat()})
            with guarded_write(marker, "the run folder's marker"):
                marker.write_text(text + "\n")

    def _lock(self) -> None:
        try:
            self._handle = hold_lock(self.path / LOCK)
        except OSError as exc:
            raise run_error(f"cannot use the run folder: {_why(exc)}", self.path,
                            "choose a writable folder with --run-dir") from None
        except FolderInUse as held:
            raise run_error(f"the run folder is in use by another netc run (PID {held.holder})", self.path,
                            "wait for that run to end, or choose another --run-dir") from None

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor drops the flock
            self._handle = None


def latest_run_dir(root: Path, name: str) -> Path | None:
    """The most recently checkpointed run of a spec: root/name or root/name-<n>."""
    numbered = re.compile(re.escape(name) + r"-\d+")
    candidates = [root / name, *(p for p in root.glob(f"{name}-*") if numbered.fullmatch(p.name))]
    runs = [p for p in candidates if (p / "last.safetensors").exists()]
    return max(runs, key=lambda p: (p / "last.safetensors").stat().st_mtime) if runs else None


def _version() -> str:
    from netc import __version__

    return __version__
