"""netc's kernels, compiled once per machine, by two processes at once.

A kernel is compiled by Numba for the argument types it is called with and cached on disk
(netc.codecache); a plan on the Python tier would compile each one on its first call, one after
another. Instead, `needed(...)` runs the plan's Python-tier epoch loop once with recorders in place
of the kernels, which gives every (kernel, argument types) the plan will call; those this machine
has not compiled yet are compiled by two processes at once (`compile_missing`), and the plan then
loads them all from the cache. Markers (netc.compiled) say which are compiled, so a warm start
spawns nothing.
"""

from __future__ import annotations

import functools
import importlib
import os
import pickle
import queue
import subprocess
import sys
import threading

from netc.compiled import Entry, compile_entries, dispatcher, mark_ready, missing  # noqa: F401  (re-exported)
from netc.compiler.codegen import KERNEL_MODULES, kernel_parameters

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


def is_parallel(entry: Entry) -> bool:
    return bool(dispatcher(entry).targetoptions.get("parallel"))


@functools.lru_cache(maxsize=1)
def parallel_kernels() -> tuple:
    """Every parallel kernel's dispatcher (each has a `.serial` twin)."""
    found = []
    for module, names in KERNEL_MODULES.items():
        for name in names:
            kernel = getattr(importlib.import_module(module), name)
            if getattr(kernel, "targetoptions", {}).get("parallel"):
                found.append(kernel)
    return tuple(found)


def serial_twins(entries: list[Entry]) -> tuple[list[Entry], list[Entry]]:
    """`entries` with every parallel kernel this machine has not compiled yet replaced by its serial
    twin (same numbers, half the compile: netc.jit.parallel_kernel), and the parallel entries replaced."""
    waiting = [entry for entry in missing(entries) if is_parallel(entry)]
    # a kernel is run as its twin or not at all (the plan's module binds it by name): only kernels none
    # of whose signatures are compiled yet
    ready = {entry[1] for entry in entries if is_parallel(entry) and entry not in waiting}
    waiting = [entry for entry in waiting if entry[1] not in ready]
    twins = [(module, f"{name}.serial", types) for module, name, types in waiting]
    return [entry for entry in entries if entry not in waiting] + twins, waiting


def _group(entries: list[Entry]) -> list[list[Entry]]:
    """Entries by kernel: one process compiles every signature of a kernel, as two processes saving
    to one kernel's cache index at once could lose an entry."""
    groups: dict[tuple[str, str], list[Entry]] = {}
    for entry in entries:
        groups.setdefault((entry[0], entry[1]), []).append(entry)
    return list(groups.values())


def _cost(entry: Entry) -> int:
    """Rough compile cost, for handing out the largest kernels first: the size of the kernel's bytecode
    and of the compiled functions it calls (measured on digits-cnn: conv_backward 1,828 bytes 1.4 s,
    linear_forward 566 + 1,040 of its activations 1.0 s, stage_rows 152 bytes 0.1 s), twice for a
    parallel kernel (Numba compiles a prange region twice)."""
    function = dispatcher(entry).py_func
    return _bytecode_size(function) * (2 if is_parallel(entry) else 1)


def _bytecode_size(function, seen: set | None = None) -> int:
    """Bytes of `function`'s bytecode and of every Numba-compiled function it names, each counted once."""
    seen = set() if seen is None else seen
    seen.add(function)
    size = len(function.__code__.co_code)
    for name in function.__code__.co_names:
        called = getattr(function.__globals__.get(name), "py_func", None)
        if called is not None and called not in seen:
            size += _bytecode_size(called, seen)
    return size


def start_early() -> None:
    """On a cache where this netc has compiled no kernel yet (its first run on this machine), start the
    compile workers now, before the plan says what they will compile: they import Numba and the
    kernels meanwhile (~0.5 s), while this process reads the spec and builds the plan."""
    from netc.compiled import any_ready

    if _early or any_ready():
        return
    try:
        _early.extend(_start_workers(PROCESSES))
    except OSError:  # no process to spare: compile_missing tries again
        pass


def stop_early() -> None:
    """Let early workers that got no job leave (they exit when their stdin closes)."""
    while _early:
        worker = _early.pop()
        _send(worker, None)
        worker.stdout.close()


_early: list[subprocess.Popen] = []  # started by start_early, waiting for a job
_leaving: list[subprocess.Popen] = []  # done with their jobs, exiting (reaped by the next _start_workers)


def _start_workers(count: int) -> list[subprocess.Popen]:
    from netc.codecache import cache_root

    _leaving[:] = [worker for worker in _leaving if worker.poll() is None]
    env = {**os.environ, "NETC_CACHE_DIR": str(cache_root())}
    return [subprocess.Popen([sys.executable, "-m", "netc.compiled"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env=env) for _ in range(count)]


def _send(worker: subprocess.Popen, job: list[Entry] | None) -> bool:
    """Hand a worker a job and wait until it is compiled (None: no more jobs, it leaves); False when
    the worker died (what it had stays unmarked and compiles on its first call)."""
    try:
        if job is None:
            worker.stdin.close()
            return True
        data = pickle.dumps(job)
        worker.stdin.write(len(data).to_bytes(8, "little") + data)
        worker.stdin.flush()
        return worker.stdout.readline() == b"done\n"
    except OSError:
        return False


def _feed(worker: subprocess.Popen, jobs: queue.SimpleQueue) -> None:
    """Give a worker the next job each time it finishes one, until none is left: the two workers
    finish together, whatever each kernel's compile costs on this machine."""
    while True:
        try:
            job = jobs.get_nowait()
        except queue.Empty:
            break
        if not _send(worker, job):
            break
    _send(worker, None)  # it leaves by itself: nobody waits for its exit
    worker.stdout.close()
    _leaving.append(worker)


def compile_missing(entries: list[Entry], on_progress=None) -> list[Entry]:
    """Compile `entries` into the disk cache in PROCESSES processes at once, largest first, each
    process taking the next kernel when it is done with one, and mark them ready; returns those still
    not ready. A process that fails, or cannot start, leaves its entries unmarked: they compile on
    their first call instead. `on_progress(done, total)` is called as entries finish."""
    groups = sorted(_group(entries), key=lambda g: sum(map(_cost, g)), reverse=True)
    jobs: queue.SimpleQueue = queue.SimpleQueue()
    for group in groups:
        jobs.put(group)
    count = min(PROCESSES, len(groups))
    workers = [_early.pop() for _ in range(min(len(_early), count))]
    stop_early()
    try:
        workers += _start_workers(count - len(workers))
    except OSError:  # no process to spare: what no worker takes compiles when first called
        pass
    feeders = [threading.Thread(target=_feed, args=(worker, jobs), daemon=True) for worker in workers]
    for feeder in feeders:
        feeder.start()
    for feeder in feeders:
        while feeder.is_alive():
            if on_progress is not None:
                on_progress(len(entries) - len(missing(entries)), len(entries))
            feeder.join(0.2)
    left = missing(entries)
    if on_progress is not None:
        on_progress(len(entries) - len(left), len(entries))
    return left
