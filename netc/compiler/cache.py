"""Generated modules live in a cache folder keyed by a hash of their source and of
the kernels they call, so Numba's on-disk cache (`cache=True`) works across processes:
a second run of the same plan imports the module and loads machine code, no recompiling."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from functools import lru_cache
from pathlib import Path

import numba

import netc


def cache_dir() -> Path:
    root = os.environ.get("NETC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "netc")
    path = Path(root) / "plans"
    path.mkdir(parents=True, exist_ok=True)
    return path


@lru_cache(maxsize=1)
def kernels_digest() -> str:
    """Numba's cache does not follow calls into other modules: key plans on the kernels' source too."""
    digest = hashlib.sha256(f"{netc.__version__} numba {numba.__version__}".encode())
    folder = Path(__file__).resolve().parent.parent / "kernels"
    for path in sorted(folder.glob("*.py")) + [folder.parent / "jit.py"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def plan_key(source: str) -> str:
    return hashlib.sha256((kernels_digest() + source).encode()).hexdigest()[:20]


def load_module(source: str):
    """Write (once) and import the generated module; returns (module, path)."""
    key = plan_key(source)
    name = f"netc_plan_{key}"
    if name in sys.modules:
        return sys.modules[name], Path(sys.modules[name].__file__)
    path = cache_dir() / f"{name}.py"
    if not path.exists() or path.read_text() != source:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source)
        os.replace(tmp, path)  # atomic: concurrent test workers never see half a file
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module, path
