"""The fused tier of a plan, compiled in a process of its own while the run starts on the Python tier.

`start(...)` writes the epoch loop's argument types (Numba types, pickled) next to the fused module
and starts `python -m netc.compiler.background <module> <dtype>`, which compiles the parallel
kernels the run is waiting for (it runs their serial twins meanwhile), imports the module,
compiles its `epoch` for exactly those types (Numba writes the machine code to its disk cache) and
then writes the marker `ready(...)` looks for. A run swaps to the fused tier at its next epoch once
the marker is there; the next run of the same plan starts on it. Both tiers run the same kernels in
the same order and give the same numbers to the bit (tests/test_tiers.py).

Nothing here is needed for correctness: a failed or killed compile leaves no marker, and the
plan stays on (or starts again from) the Python tier.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

from netc.compiled import compile_lock, machine_tag

BACKGROUND_ENV = "NETC_BACKGROUND_COMPILE"  # "0": never start a background compile


def _beside(module_path: Path, dtype: str, suffix: str) -> Path:
    """`netc_plan_<key>.<dtype>.<machine>.<suffix>` next to the module `netc_plan_<key>.py`."""
    return module_path.with_name(f"{module_path.stem}.{dtype}.{machine_tag()}.{suffix}")


def ready(module_path: Path, dtype: str) -> bool:
    """Whether the fused epoch loop of this module and dtype was compiled on this machine."""
    return _beside(module_path, dtype, "fused").exists()


def failed(module_path: Path, dtype: str) -> bool:
    """Whether a background compile of this loop failed before (its error is in the `.log` beside it):
    not tried again on every run; `netc cache clear` forgets it."""
    return _beside(module_path, dtype, "failed").exists()


def enabled() -> bool:
    return os.environ.get(BACKGROUND_ENV, "1") != "0"


def start(module_path: Path, source: str, dtype: str, args: tuple, kernels: list = ()) -> subprocess.Popen | None:
    """Start compiling the fused epoch for the types of `args`; None when it cannot start (a
    read-only cache, no process to spare): the run goes on on the Python tier. `kernels`
    (kernel_library entries) are compiled and marked ready first: the parallel kernels whose
    serial twins the Python tier runs meanwhile."""
    from numba import typeof

    from netc.codecache import cache_root

    if failed(module_path, dtype):
        return None

    try:
        module_path.parent.mkdir(parents=True, exist_ok=True)
        if not module_path.exists() or module_path.read_text() != source:
            tmp = module_path.with_name(f"{module_path.name}.{os.getpid()}.tmp")
            tmp.write_text(source)
            os.replace(tmp, module_path)
        types = _beside(module_path, dtype, "types")
        tmp = types.with_name(f"{types.name}.{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps({"types": tuple(typeof(a) for a in args), "kernels": list(kernels)}))
        os.replace(tmp, types)
        env = {**os.environ, "NETC_CACHE_DIR": str(cache_root())}  # the cache this process reads
        with open(_beside(module_path, dtype, "log"), "wb") as log:
            return subprocess.Popen([sys.executable, "-m", "netc.compiler.background", str(module_path), dtype],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    env=env, start_new_session=True)  # a Ctrl-C of the run does not stop it
    except Exception:  # it is only a speed-up: whatever stops it, the run goes on on the Python tier
        return None


def _compile(module_path: Path, dtype: str) -> None:
    from netc.compiler import kernel_library
    from netc.compiler.cache import load_module

    try:
        job = pickle.loads(_beside(module_path, dtype, "types").read_bytes())
        kernel_library.compile_entries(job["kernels"])  # the Python tier moves to them when marked ready
        with compile_lock(_beside(module_path, dtype, "lock"), wait=True):  # two runs of one plan: one compile
            if ready(module_path, dtype):
                return
            module, _ = load_module(module_path.read_text())
            module.epoch.compile(job["types"])
            _mark_fused(module_path, dtype)
    except Exception:
        _beside(module_path, dtype, "failed").write_text("see the .log beside this file\n")
        raise


def _mark_fused(module_path: Path, dtype: str) -> None:
    from netc import codecache

    if codecache.save_failures:  # compiled but not kept (a full disk): nothing for the next run to load
        return
    marker = _beside(module_path, dtype, "fused")
    tmp = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
    tmp.write_text("compiled\n")
    os.replace(tmp, marker)


if __name__ == "__main__":
    _compile(Path(sys.argv[1]), sys.argv[2])
