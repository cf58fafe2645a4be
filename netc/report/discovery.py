"""Which files `netc validate` reads: spec files found from paths, folders and globs, and YAML
files without a `netc:` key told apart, before any is parsed."""

from __future__ import annotations

import glob
import re
from pathlib import Path

SPEC_SUFFIXES = (".yaml", ".yml")


def _has_magic(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


def _spec_files_in(folder: Path) -> list[Path]:
    """*.yaml/*.yml under `folder`, recursively, skipping hidden folders (.git, .venv)."""
    found = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if any(part.startswith(".") for part in parts[:-1]):
            continue
        if path.suffix.lower() in SPEC_SUFFIXES and path.is_file():
            found.append(path)
    return found


def find_spec_files(patterns: list[str]) -> tuple[list[str], list[str]]:
    """Expand files, folders and globs into spec files (each once, in order).

    Returns (files, patterns that matched nothing). A plain path that does not
    exist is kept as a file, so that validating it reports E-FILE.
    """
    files: list[str] = []
    seen: set[Path] = set()
    unmatched: list[str] = []

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(str(path))

    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = _spec_files_in(path)
        elif _has_magic(pattern) and not path.exists():
            found = []
            for match in sorted(glob.glob(pattern, recursive=True)):
                match_path = Path(match)
                if match_path.is_dir():
                    found.extend(_spec_files_in(match_path))
                elif match_path.is_file():
                    found.append(match_path)
        else:
            found = [path]
        if not found:
            unmatched.append(pattern)
        for each in found:
            add(each)
    return files, unmatched


_SPEC_KEY = re.compile(rb"^netc(?:-sweep)?[ \t]*:", re.MULTILINE)
_SWEEP_KEY = re.compile(rb"^netc-sweep[ \t]*:", re.MULTILINE)


def is_spec_file(path: str | Path) -> bool:
    """A YAML file with a top-level `netc:` key, or a sweep file's `netc-sweep:` (a text check: a spec
    that does not parse still counts). A file that cannot be read counts too, so that validating it
    reports why."""
    try:
        return bool(_SPEC_KEY.search(Path(path).read_bytes()))
    except OSError:
        return True


def is_sweep_file(path: str | Path) -> bool:
    """A YAML file with a top-level `netc-sweep:` key (netc.sweep reads it)."""
    try:
        return bool(_SWEEP_KEY.search(Path(path).read_bytes()))
    except OSError:
        return False
