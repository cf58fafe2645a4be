"""Generated modules live in the cache folder (netc.codecache) keyed by a hash of their source
and of the kernels they call, so Numba's on-disk cache works across processes: a second run of
the same plan imports the module and loads machine code, no recompiling.

A module file that does not hold exactly the source (garbled, truncated, edited) is written
again before it is imported: a plan never runs code it did not generate."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

from netc.codecache import cache_root, code_digest
from netc.errors import Diagnostic, Location, RunError, warn_once


def cache_dir() -> Path:
    path = cache_root() / "plans"
    path.mkdir(parents=True, exist_ok=True)
    return path


def plan_key(source: str) -> str:
    return hashlib.sha256((code_digest() + source).encode()).hexdigest()[:20]


def module_path(source: str) -> Path:
    """Where the module of this source lives (written or not)."""
    return cache_dir() / f"netc_plan_{plan_key(source)}.py"


def load_module(source: str):
    """Write (when missing or different) and import the generated module; returns (module, path)."""
    key = plan_key(source)
    name = f"netc_plan_{key}"
    if name in sys.modules:
        return sys.modules[name], Path(sys.modules[name].__file__)
    path = cache_dir() / f"{name}.py"
    _write_source(path, source.encode())
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module, path


def _write_source(path: Path, source: bytes) -> None:
    try:
        if path.read_bytes() == source:
            return
        warn_once(f"cache entry {path} was unreadable (it differs from the generated source); recompiling")
    except FileNotFoundError:
        pass
    except OSError as exc:
        warn_once(f"cache entry {path} was unreadable ({exc.strerror or exc}); recompiling")
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(source)
        os.replace(tmp, path)  # atomic: concurrent processes never see half a file
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RunError(Diagnostic(
            "E-CACHE", f"cannot write the generated plan {path}: {exc.strerror or exc}", Location(str(path)),
            hint="free disk space, or set NETC_CACHE_DIR to a writable folder")) from None
