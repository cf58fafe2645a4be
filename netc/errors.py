"""One error family for everything a user can get wrong.

Every error carries a stable code, a location (file:line:col), the spec path
(`layers[3].out`) and an optional hint. Errors of one file are collected and
raised together as `SpecErrors`; the CLI renders them in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import difflib


@dataclass(frozen=True)
class Location:
    file: str = "<string>"
    line: int = 0  # 1-based; 0 when unknown
    col: int = 0  # 1-based; 0 when unknown

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file


@dataclass(frozen=True)
class Diagnostic:
    code: str  # stable, e.g. "E-SHAPE"
    message: str
    location: Location = field(default_factory=Location)
    path: str = ""  # spec path, e.g. "layers[3].out"
    hint: str = ""

    def format(self) -> str:
        where = f"{self.location}: " if self.location.file else ""
        at = f" (at {self.path})" if self.path else ""
        text = f"{where}error[{self.code}]: {self.message}{at}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def as_dict(self) -> dict:
        return {
            "code": self.code,
            "message": self.message,
            "file": self.location.file,
            "line": self.location.line,
            "col": self.location.col,
            "path": self.path,
            "hint": self.hint,
        }


class NetcError(Exception):
    """Base of every error netc reports to a user (never a traceback)."""

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.format() for d in self.diagnostics))


class SpecErrors(NetcError):
    """All errors found in one spec file."""


class DataError(NetcError):
    """Data that does not match the spec."""


class RunError(NetcError):
    """A training or evaluation run that cannot go on (divergence, bad checkpoint)."""


def did_you_mean(word: str, known: list[str] | tuple[str, ...], what: str = "known") -> str:
    """A hint that names the closest known word, or lists them all."""
    close = difflib.get_close_matches(str(word), list(known), n=1, cutoff=0.6)
    listing = ", ".join(sorted(known))
    if close:
        return f"did you mean '{close[0]}'? ({what}: {listing})"
    return f"{what}: {listing}"


def path_text(parts: tuple | list) -> str:
    """('layers', 3, 'out') -> 'layers[3].out'"""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """A one-line warning on stderr, once per process: for trouble netc works around (an unusable
    cache folder, a damaged cache entry) that the user should still hear about."""
    if message in _warned:
        return
    _warned.add(message)
    import sys

    print(f"netc: warning: {message}", file=sys.stderr, flush=True)
