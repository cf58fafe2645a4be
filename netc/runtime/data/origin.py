"""Where a split's arrays come from, and how a reader reports a problem there.

Every problem with data is a `DataError` with code E-DATA that points at the
file (and CSV row) it sits in, names the spec path (`data.train`) and gives a
hint. `Origin` carries that location through reading, binding and
normalizing; `resolve` and `missing_file` are the path handling every file
reader shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from netc.errors import DataError, Diagnostic, Location, did_you_mean
from netc.spec.load import LoadedSpec

CODE = "E-DATA"


@dataclass
class Origin:
    """Where the arrays came from, for messages."""

    desc: str
    file: str  # default file of a Location (the data file, or the spec for generated data)
    path: str  # spec path, e.g. "data.train"
    line: int = 0  # line of `file` for errors that are not about one row (the spec's data.train line)
    col: int = 0
    files: dict[str, str] = field(default_factory=dict)  # input -> its own file (npy, idx)
    rows: Callable[[int], int] | None = None  # sample index -> 1-based CSV line
    feature_name: Callable[[int], str] | None = None  # flat feature index -> CSV column name
    classes: list[str] | None = None  # class names in label order, when the source has them (images)

    @property
    def which(self) -> str:
        """"train" or "eval": the split under `data:` these arrays are read for."""
        return self.path.split(".")[1]

    def in_file(self, path: Path) -> None:
        """From now on, problems point at the data file `path` rather than the spec."""
        self.desc, self.file, self.line, self.col = str(path), str(path), 0, 0

    def loc(self, name: str | None = None, index: int | None = None) -> Location:
        file = self.files.get(name, self.file) if name is not None else self.file
        if file != self.file:
            return Location(file)
        if index is not None and self.rows is not None:
            return Location(file, self.rows(index), 1)
        return Location(file, self.line, self.col)

    def row(self, index: int) -> str:
        if self.rows is not None:
            return f"row {self.rows(index)}"
        return f"sample {index}"

    def fail(self, message: str, hint: str = "", name: str | None = None, index: int | None = None):
        raise DataError(Diagnostic(CODE, message, self.loc(name, index), self.path, hint))


def resolve(loaded: LoadedSpec, rel: str) -> Path:
    """A path of the spec, relative to the spec's folder unless absolute (`~` expanded)."""
    path = Path(rel).expanduser()
    return path if path.is_absolute() else Path(loaded.base_dir) / path


def missing_file(path: Path, origin: Origin, what: str = "file"):
    """Fail: `path` does not exist; the hint names the nearest files of its folder."""
    hint = "relative paths start at the spec's folder"
    parent = path.parent
    if parent.is_dir():
        near = sorted(p.name for p in parent.iterdir())[:200]
        if near:
            hint = did_you_mean(path.name, near, f"files in {parent}")
    else:
        hint = f"the folder {parent} does not exist; relative paths start at the spec's folder"
    raise DataError(Diagnostic(CODE, f"{what} not found: {path}", Location(str(path)), origin.path, hint))
