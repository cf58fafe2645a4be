"""netc's kernels, compiled once per machine, by two processes at once.

A kernel is compiled by Numba for the argument types it is called with and cached on disk
(netc.codecache); a plan on the Python tier would compile each one on its first call, one after
another. Instead, `needed(...)` runs the plan's Python-tier epoch loop once with recorders in place
of the kernels, which gives every (kernel, argument types) the plan will call; those this machine
has not compiled yet are compiled by two processes at once (`compile_missing`), and the plan then
loads them all from the cache. A marker per entry (`numba/<key>/ready/<machine>/`) says which are
compiled, so a warm start spawns nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from netc.compiler.codegen import KERNEL_MODULES, kernel_parameters

Entry = tuple[str, str, tuple]  # (kernel module, kernel name, Numba argument types)
PROCESSES = 2
# what a recorder hands back in place of a kernel whose result the plan uses: the loss kernels'
# (mean loss, correct), and the weighted total of several losses; other kernels' results are unused
_RESULTS = {"weighted_total": 0.0}


def needed(python_source: str, calls: list[tuple]) -> list[Entry]:
    """Every (module, kernel, types) the Python-tier module of `python_source` calls when its `epoch`
    runs with each argument tuple of `calls` (a batch of each mode is enough: the types do not
    depend on the values). The kernels themselves never run."""
    from numba import typeof

    namespace: dict = {"__name__": "netc_plan_recording"}
    exec(compile(python_source, "<netc plan, recording>", "exec"), namespace)
    found: dict[tuple, Entry] = {}

    def recorder(module: str, name: str):
        parameters = kernel_parameters(name)

        def record(*args, **named):  # the plan calls kernels with keywords: put them in the kernel's order
            values = list(args) + [named[p] for p in parameters[len(args):]]
            entry = (module, name, tuple(typeof(a) for a in values))
            found.setdefault((module, name, str(entry[2])), entry)
            return _RESULTS.get(name, (0.0, 0))
        return record

    for module, names in KERNEL_MODULES.items():
        for name in names:
            namespace[name] = recorder(module, name)
    for args in calls:
        namespace["epoch"](*args)
    return list(found.values())


def _ready_dir() -> Path:
    from netc.codecache import numba_cache_dir
    from netc.compiler.background import machine_tag

    return numba_cache_dir() / "ready" / machine_tag()


def _marker(entry: Entry) -> str:
    module, name, types = entry
    return hashlib.sha256(f"{module}.{name}{types}".encode()).hexdigest()[:24]


def missing(entries: list[Entry]) -> list[Entry]:
    folder = _ready_dir()
    return [entry for entry in entries if not (folder / _marker(entry)).exists()]


def mark_ready(entries: list[Entry]) -> None:
    """Record entries as compiled on this machine (they are in Numba's disk cache)."""
    folder = _ready_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            (folder / _marker(entry)).touch()
    except OSError:  # a cache we cannot write: the next start only checks again
        pass


def _group(entries: list[Entry]) -> list[list[Entry]]:
    """Entries by kernel: one process compiles every signature of a kernel, as two processes saving
    to one kernel's cache index at once could lose an entry."""
    groups: dict[tuple[str, str], list[Entry]] = {}
    for entry in entries:
        groups.setdefault((entry[0], entry[1]), []).append(entry)
    return list(groups.values())


def _cost(entry: Entry) -> int:
    """Rough compile cost: a parallel kernel (a prange region, compiled twice by Numba) costs most."""
    dispatcher = getattr(importlib.import_module(entry[0]), entry[1])
    return 6 if dispatcher.targetoptions.get("parallel") else 1


def compile_missing(entries: list[Entry], on_progress=None) -> list[Entry]:
    """Compile `entries` into the disk cache in PROCESSES processes at once (largest first, each to the
    least loaded process) and mark them ready; returns those still not ready. A process that fails,
    or cannot start, leaves its entries unmarked: they compile on their first call instead.
    `on_progress(done, total)` is called as entries finish."""
    from netc.codecache import cache_root

    groups = _group(entries)
    shares: list[list[Entry]] = [[] for _ in range(min(PROCESSES, len(groups)))]
    loads = [0] * len(shares)
    for group in sorted(groups, key=lambda g: sum(map(_cost, g)), reverse=True):
        i = loads.index(min(loads))
        shares[i].extend(group)
        loads[i] += sum(map(_cost, group))
    env = {**os.environ, "NETC_CACHE_DIR": str(cache_root())}
    workers = []
    try:
        with tempfile.TemporaryDirectory(prefix="netc-kernels-") as folder:
            for i, share in enumerate(shares):
                job = Path(folder) / f"job{i}.pickle"
                job.write_bytes(pickle.dumps(share))
                workers.append(subprocess.Popen([sys.executable, "-m", "netc.compiler.kernel_library", str(job)],
                                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL, env=env))
            while any(worker.poll() is None for worker in workers):
                if on_progress is not None:
                    on_progress(len(entries) - len(missing(entries)), len(entries))
                time.sleep(0.2)
    except OSError:  # no temporary folder or no process to spare: the kernels compile when first called
        for worker in workers:
            worker.wait()
    left = missing(entries)
    if on_progress is not None:
        on_progress(len(entries) - len(left), len(entries))
    return left


def _compile(job: Path) -> None:
    from netc import codecache

    for entry in pickle.loads(job.read_bytes()):
        module, name, types = entry
        getattr(importlib.import_module(module), name).compile(types)
        if codecache.save_failures == 0:  # marked only once the machine code is in the cache
            mark_ready([entry])


if __name__ == "__main__":
    _compile(Path(sys.argv[1]))
