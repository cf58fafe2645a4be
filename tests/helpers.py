"""Shared helpers of the spec, graph and fuzz tests: load + build a spec, get its diagnostics.

Nothing here compiles: these tests run without Numba.
"""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

from netc.errors import Diagnostic, NetcError
from netc.graph import Graph, build_graph
from netc.spec import load_spec_text

FILE = "spec.yaml"
SPECS = Path(__file__).resolve().parent.parent / "specs"
REFERENCE_SPECS = sorted(SPECS.glob("*.yaml"))


def text_of(text: str | bytes) -> str | bytes:
    """Inline specs are indented in the test source: dedent them (bytes go through as they are)."""
    return dedent(text).lstrip("\n") if isinstance(text, str) else text


def build(text: str | bytes, file: str = FILE) -> Graph:
    """Load and build a spec given as text; raises NetcError."""
    return build_graph(load_spec_text(text_of(text), file))


def diagnostics(text: str | bytes, file: str = FILE) -> list[Diagnostic]:
    """Every diagnostic of a spec that must fail to load or build."""
    try:
        graph = build(text, file)
    except NetcError as exc:
        assert exc.diagnostics, "a NetcError without diagnostics"
        return exc.diagnostics
    raise AssertionError(f"the spec is valid ({len(graph.nodes)} layers), expected errors")


def one_error(text: str | bytes, file: str = FILE) -> Diagnostic:
    """The single diagnostic of a spec with exactly one mistake."""
    found = diagnostics(text, file)
    assert len(found) == 1, "expected one error, got:\n" + "\n".join(d.format() for d in found)
    return found[0]


def check(diag: Diagnostic, code: str, fragment: str, line: int, col: int | None = None,
          path: str | None = None, hint: str | None = None, file: str = FILE) -> None:
    """Assert a diagnostic's code, message fragment, location, spec path and hint fragment."""
    shown = diag.format()
    assert diag.code == code, shown
    assert fragment in diag.message, shown
    assert diag.location.file == file, shown
    assert diag.location.line == line, shown
    if col is not None:
        assert diag.location.col == col, shown
    if path is not None:
        assert diag.path == path, shown
    if hint is not None:
        assert hint in diag.hint, shown


def codes(found: list[Diagnostic]) -> list[tuple[str, int]]:
    """(code, line) of each diagnostic, in the order reported."""
    return [(d.code, d.location.line) for d in found]


# a small valid spec, each line numbered, shared by the spec and graph tests
MLP = text_of("""
    netc: 1                                                 # 1
    name: net                                               # 2
    inputs:                                                 # 3
      x: {shape: [4]}                                       # 4
      label: {shape: [], dtype: int64, classes: 3}          # 5
    layers:                                                 # 6
      - {name: fc1, op: linear, out: 8}                     # 7
      - {name: act, op: relu}                               # 8
      - {name: fc2, op: linear, out: 3}                     # 9
    loss: {op: cross_entropy, input: fc2, target: label}    # 10
""")


def reference_cpu() -> dict[str, str]:
    """The environment that makes the libraries of every AVX2 machine compute alike (tests/test_docs.py
    says why): OpenBLAS's Haswell kernels, numpy without its AVX-512 loops. numpy warns about, and
    ignores, a feature it does not dispatch; its names change between versions, so the AVX-512 ones are
    read from numpy itself."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__
    except ImportError:  # numpy 1
        from numpy.core._multiarray_umath import __cpu_dispatch__

    wider = [name for name in __cpu_dispatch__ if "AVX512" in name or name == "X86_V4"]
    return dict(OPENBLAS_CORETYPE="Haswell", NPY_DISABLE_CPU_FEATURES=" ".join(wider))


REFERENCE_CPU = reference_cpu()
