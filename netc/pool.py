"""The size of Numba's thread pool: twice the cores this process may run on.

A conv pass splits the batch into CHUNKS_PER_CORE chunks per core. Alone on the machine, one thread
per core runs them (two chunks each); beside busy processes the scheduler shares each core between
the threads that want it, and a pool of twice the cores' threads then gets a larger share of the
machine: seed-cnn beside two CPU-bound processes on two cores ran 1,270-1,350 samples/s on four
threads against 1,150-1,230 on two (benchmarks/RESULTS.md, fifteenth session; netc.cpuload chooses
the count by timing). Numba reads NUMBA_NUM_THREADS once, as it is imported, and refuses another value
after its threads have started, so netc sets it before Numba is imported (netc/__init__.py) and for
good (Numba re-reads the environment at each compile); a value the user set is kept, and so is the
pool of a process that imported Numba before netc."""

from __future__ import annotations

import os
import sys

CHUNKS_PER_CORE = 2


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def size_numba_pool() -> None:
    """NUMBA_NUM_THREADS = CHUNKS_PER_CORE x the cores, unless the user set it or Numba is already imported."""
    if "NUMBA_NUM_THREADS" in os.environ or "numba" in sys.modules:
        return
    os.environ["NUMBA_NUM_THREADS"] = str(CHUNKS_PER_CORE * available_cores())
