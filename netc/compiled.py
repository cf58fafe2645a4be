"""Which kernels this machine has compiled, and the worker that compiles them.

A kernel is compiled by Numba for the argument types it is called with and kept in Numba's disk
cache (netc.codecache). A marker per (kernel, types) (`numba/<key>/ready/<machine>/<hash>`) says
that its machine code is there, so a start needs only a stat per kernel to know what is left to
compile, and spawns nothing when the answer is nothing. A lock per kernel (`numba/<key>/locks/`)
keeps two processes from compiling it at once (`compile_entries`).

`python -m netc.compiled` compiles the jobs (lists of entries) it reads on its stdin, one after
another (netc.compiler.kernel_library runs two at once, sometimes started before it knows the
entries: a worker gets Numba ready meanwhile).
This module imports only Numba and the kernels, not the compiler: a worker starts in ~0.25 s
instead of ~0.6 s.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import pickle
import sys
from pathlib import Path

Entry = tuple[str, str, tuple]  # (kernel module, kernel name, Numba argument types); name "k.serial": a twin


@functools.lru_cache(maxsize=1)
def machine_tag() -> str:
    """A short hash of the CPU Numba compiles for (its triple, name and features): a cache folder
    shared by machines of other CPUs does not mark code as ready that Numba would not load."""
    from numba.core.registry import cpu_target

    from netc.interrupts import compiling
    from netc.kernels.gemm_sizes import TILE_LANES

    with compiling():  # the first call sets up LLVM's code generator
        machine = (sys.version_info[:2], cpu_target.target_context.codegen().magic_tuple())  # Numba's files are per Python
    machine += (TILE_LANES,)  # the micro-kernel's tile shape, which netc's cache keys hold too (netc.codecache)
    return hashlib.sha256(repr(machine).encode()).hexdigest()[:8]


def dispatcher(entry: Entry):
    """The compiled function an entry names (a kernel, or a parallel kernel's `.serial` twin)."""
    module, name, _ = entry
    found = importlib.import_module(module)
    for part in name.split("."):
        found = getattr(found, part)
    return found


def _ready_dir() -> Path:
    from netc.codecache import numba_cache_dir

    return numba_cache_dir() / "ready" / machine_tag()


def _marker(entry: Entry) -> str:
    module, name, types = entry
    return hashlib.sha256(f"{module}.{name}{types}".encode()).hexdigest()[:24]


def any_ready() -> bool:
    """Whether this netc has compiled any kernel into this cache (on any machine)."""
    from netc.codecache import numba_cache_dir

    return (numba_cache_dir() / "ready").exists()


def missing(entries: list[Entry]) -> list[Entry]:
    """The entries not compiled on this machine yet."""
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


@contextlib.contextmanager
def compile_lock(path: Path, wait: bool):
    """Hold the lock file `path` while this process compiles what it guards; yields False when another
    process holds it and `wait` is false. Without a lock to take (a file system without flock, a cache
    we cannot write) it yields True: compiling twice costs only time."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except (ImportError, OSError):
        yield True
        return
    with handle:  # closing the file drops the lock, as does the process's end
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        except OSError:
            yield True
            return
        yield True


def kernel_lock_path(entry: Entry) -> Path:
    """The lock of an entry's kernel: one per compiled function, so per cache index."""
    from netc.codecache import numba_cache_dir

    return numba_cache_dir() / "locks" / f"{entry[0]}.{entry[1]}.lock"


def compile_entries(entries: list[Entry]) -> int:
    """Compile (or load from the disk cache) each entry not yet marked ready, mark it ready once its
    machine code is in the cache, and return how many this process compiled. Two processes at once
    (two runs, two test workers) do not compile a kernel twice, nor save into its cache index together
    (which could lose an entry): each holds the kernel's lock while it compiles, takes first the
    kernels no other process holds, then waits for the others, which are usually ready by then."""
    from netc import codecache

    compiled, left = 0, list(entries)
    for wait in (False, True):
        busy = []
        for entry in left:
            with compile_lock(kernel_lock_path(entry), wait) as held:
                if not held:
                    busy.append(entry)
                elif missing([entry]):
                    dispatcher(entry).compile(entry[2])
                    compiled += 1
                    if codecache.save_failures == 0:
                        mark_ready([entry])
        left = busy
    return compiled


def _worker() -> None:
    """Get ready (import the kernels, start Numba's compiler), then compile each job that comes on
    stdin (8 bytes of length, then the pickled entries), answering "done" to each, until stdin closes."""
    import os
    import pkgutil

    # answers go to a private copy of stdout; whatever else writes to fd 1 (Numba's debug output, a
    # kernel's print) goes to stderr, so it cannot be taken for an answer
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    import netc.kernels

    for module in pkgutil.iter_modules(netc.kernels.__path__):
        importlib.import_module(f"netc.kernels.{module.name}")
    machine_tag()
    _start_numbas_compiler()
    jobs = sys.stdin.buffer
    while len(head := jobs.read(8)) == 8:
        compile_entries(pickle.loads(jobs.read(int.from_bytes(head, "little"))))
        answers.write(b"done\n")
        answers.flush()
    os._exit(0)  # every cache file is written and closed by now; tearing Numba down would cost ~0.3 s


def _start_numbas_compiler() -> None:
    """Compile a trivial function: Numba's first compile in a process sets up LLVM and its pipeline
    (~0.1 s), which this does while the process that started the worker still builds its plan."""
    from numba import njit, types

    njit(lambda x: x + 1).compile((types.int64,))


if __name__ == "__main__":
    _worker()
