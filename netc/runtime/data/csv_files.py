"""The csv source: one sample per row, a label column and feature columns (optionally gzipped).

numpy's C parser reads the table; only when it fails, or a message needs a
row's line or a cell as written, is the file read again with Python's csv
module to point at the exact row and column. (The module is not named csv
so that it never stands in for the standard library's.)
"""

from __future__ import annotations

import csv
import gzip
import io
import warnings
import zlib
from pathlib import Path

import numpy as np

from netc.errors import DataError, Diagnostic, Location, did_you_mean
from netc.runtime.data.binding import bind_pair
from netc.runtime.data.origin import CODE, Origin, missing_file, resolve
from netc.runtime.data.sources import register_source
from netc.spec import models as m
from netc.spec.load import LoadedSpec

_CSV_ENCODING = "utf-8-sig"  # UTF-8, dropping the byte-order mark spreadsheet programs write before the header


@register_source("csv")
def read_csv(loaded: LoadedSpec, src: m.CsvSource, origin: Origin) -> dict[str, np.ndarray]:
    path = resolve(loaded, src.path)
    origin.in_file(path)
    if not path.is_file():
        missing_file(path, origin)
    names = _header(path, src, origin)
    table = _table(path, src, names, origin)
    label_col = _label_column(loaded, src, origin, names, table.shape[1])
    lines = _LazyLines(path, src)
    origin.rows = lines
    feature_cols = [c for c in range(table.shape[1]) if c != label_col]

    def col_name(j: int) -> str:
        c = feature_cols[j]
        return f"column '{names[c]}'" if names else f"column {c}"

    origin.feature_name = col_name
    labels = _labels(loaded, src, origin, table[:, label_col], names, label_col)
    features = np.ascontiguousarray(table[:, feature_cols])
    return bind_pair(features, labels, loaded.spec.inputs, origin, src.source)


def _fail_at(origin: Origin, line: int, message: str, hint: str, col: int = 1):
    """Fail at a line (0: the whole file) and column of the CSV."""
    raise DataError(Diagnostic(CODE, message, Location(origin.file, line, col), origin.path, hint))


def _header(path: Path, src: m.CsvSource, origin: Origin) -> list[str] | None:
    """The column names of the header row (None without one), after checking the file has a first row."""
    try:
        with _open_text(path) as handle:
            first = next(csv.reader(handle, delimiter=src.delimiter), None)
    except UnicodeDecodeError:
        _fail_at(origin, 0, f"{path} is not UTF-8 text", "save the CSV as UTF-8")
    except (OSError, EOFError, zlib.error, csv.Error) as exc:
        _fail_at(origin, 0, f"cannot read {path}: {exc}", "check the file")
    if first is None:
        origin.fail(f"{path} is empty", "the CSV needs one sample per row")
    return [cell.strip() for cell in first] if src.header else None


def _table(path: Path, src: m.CsvSource, names: list[str] | None, origin: Origin) -> np.ndarray:
    """The data rows as a float64 (rows, columns) table of at least two columns, `limit` rows at most."""
    # fast path: numpy's C parser; on failure, find the exact cell
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _open_text(path) as handle:
                # numpy reads a plain file faster by name than through a text handle
                source = handle if _is_gzip(path) else str(path)
                table = np.loadtxt(source, delimiter=src.delimiter, skiprows=1 if src.header else 0,
                                   dtype=np.float64, ndmin=2, comments=None, quotechar='"', max_rows=src.limit,
                                   encoding=_CSV_ENCODING)
    except (ValueError, UnicodeDecodeError, EOFError, OSError, zlib.error):
        _find_error(path, src, names, origin)
        raise  # pragma: no cover - _find_error always raises
    if table.shape[0] == 0:
        origin.fail(f"{path} has no data rows" + (" (only a header)" if src.header else ""),
                    "the CSV needs one sample per row")
    ncols = table.shape[1]
    if names is not None and len(names) != ncols:
        _fail_at(origin, 1, f"the header has {len(names)} columns but the data rows have {ncols}",
                 "every row needs one value per header column")
    if ncols < 2:
        origin.fail(f"{path} has {ncols} column; a CSV source needs feature columns and a label column",
                    f"check the delimiter (now '{src.delimiter}')")
    return table


def _label_column(loaded: LoadedSpec, src: m.CsvSource, origin: Origin, names: list[str] | None,
                  ncols: int) -> int:
    """The index of the column `label` names (a header name, an index, or -1 for the last)."""

    def spec_error(message: str, hint: str):
        raise DataError(Diagnostic(CODE, message, loaded.smap.locate(("data", origin.which, "label")),
                                   f"{origin.path}.label", hint))

    label = src.label
    if isinstance(label, str):
        if names is None:
            spec_error(f"label names column '{label}' but the CSV has no header (header: false)",
                       "give the label column as an index (0-based; -1 for the last), or set header: true")
        if label not in names:
            spec_error(f"{origin.file} has no column '{label}'", did_you_mean(label, names, "columns"))
        return names.index(label)
    label_col = label if label >= 0 else ncols + label
    if not 0 <= label_col < ncols:
        spec_error(f"label column {label} is outside the {ncols} columns of {origin.file}",
                   f"an index 0..{ncols - 1}, or -1 for the last column")
    return label_col


def _labels(loaded: LoadedSpec, src: m.CsvSource, origin: Origin, y: np.ndarray, names: list[str] | None,
            label_col: int) -> np.ndarray:
    """The label column as int64, each value checked to be an integer as written."""
    # beyond 2**53 a float no longer holds the integer written (and past int64 the cast wraps): such
    # labels, like non-integers, are reported as the file spells them
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(y) & (y == np.round(y)) & (np.abs(y) < 2.0 ** 53)
    if not whole.all():
        i = int(np.argmin(whole))
        line = origin.rows(i)
        column = f"'{names[label_col]}'" if names else str(label_col)
        ints = [inp for inp in loaded.spec.inputs.values() if inp.dtype == "int64"]
        classes = f"0..{ints[0].classes - 1}" if len(ints) == 1 else "0..classes-1"
        integral = bool(np.isfinite(y[i]) and y[i] == np.round(y[i]))
        problem = f"far outside the class indices {classes}" if integral else "not an integer class index"
        written = _cell(Path(origin.file), src, i, label_col)
        _fail_at(origin, line, f"row {line}: label column {column} holds {written!r}, {problem}",
                 f"labels are class indices {classes}")
    return y.astype(np.int64)


# --------------------------------------------------------------------------- reading the text again


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as probe:
        return probe.read(2) == b"\x1f\x8b"


def _open_text(path: Path):
    if _is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=_CSV_ENCODING, newline="")
    return path.open("r", encoding=_CSV_ENCODING, newline="")


def _rows(handle, src: m.CsvSource):
    """(1-based line, cells) of each data row: the header and blank lines skipped, as numpy does."""
    reader = csv.reader(handle, delimiter=src.delimiter)
    if src.header:
        next(reader, None)
    start = reader.line_num + 1
    for row in reader:
        line, start = start, reader.line_num + 1
        if row:
            yield line, row


def _cell(path: Path, src: m.CsvSource, index: int, col: int) -> str:
    """The text of sample `index`'s cell in column `col`, as written in the file (read only for a message)."""
    with _open_text(path) as handle:
        for k, (_, row) in enumerate(_rows(handle, src)):
            if k == index:
                return row[col].strip()
    return "?"  # pragma: no cover - the index comes from the parsed table


class _LazyLines:
    """Sample index -> 1-based line of a CSV (blank lines skipped, as numpy does); read only when asked."""

    def __init__(self, path: Path, src: m.CsvSource):
        self.path, self.src, self.lines = path, src, None

    def __call__(self, index: int) -> int:
        if self.lines is None:
            with _open_text(self.path) as handle:
                self.lines = [line for line, _ in _rows(handle, self.src)]
        return self.lines[index] if index < len(self.lines) else index + 1 + int(self.src.header)


def _find_error(path: Path, src: m.CsvSource, names: list[str] | None, origin: Origin) -> None:
    """Fail at the first row of a wrong width or cell that is not a number (numpy's parser said there is one)."""
    expected = len(names) if names is not None else None
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle, delimiter=src.delimiter)
            if src.header:
                next(reader, None)
            start = reader.line_num + 1
            seen = 0
            for row in reader:
                line = start
                start = reader.line_num + 1
                if not row:
                    continue
                if src.limit is not None and seen >= src.limit:
                    break
                seen += 1
                if expected is None:
                    expected = len(row)
                if len(row) != expected:
                    against = "the header has" if names is not None else "the first row has"
                    width = f"{len(row)} column" + ("" if len(row) == 1 else "s")
                    _fail_at(origin, line, f"row {line} has {width} but {against} {expected}",
                             f"check the delimiter ('{src.delimiter}') and quoting of row {line}")
                for c, cell in enumerate(row):
                    try:
                        float(cell)
                    except ValueError:
                        column = f"column '{names[c]}' ({c})" if names is not None else f"column {c}"
                        shown = repr(cell) if cell.strip() else "an empty cell"
                        col = sum(len(prev) + 1 for prev in row[:c]) + 1
                        _fail_at(origin, line, f"row {line}, {column}: cannot read {shown} as a number",
                                 "every cell must be a number (the label column an integer class index)", col)
    except UnicodeDecodeError:
        _fail_at(origin, 0, f"{path} is not UTF-8 text", "save the CSV as UTF-8")
    except (OSError, EOFError, zlib.error, csv.Error) as exc:
        _fail_at(origin, 0, f"cannot read {path}: {exc}", "check the file")
    _fail_at(origin, 0, f"cannot read {path} as numbers",
             "check the delimiter, quoting and that every cell is a number")
