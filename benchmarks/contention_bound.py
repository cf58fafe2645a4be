"""What running beside busy processes allows: the slowdown of an ideal parallel program.

netc's `--contended` slowdowns (benchmarks/run.py) say how much slower a training epoch runs beside one
CPU-bound process per core than alone. Much of that is the scheduler's doing, not the program's: Linux
shares each core among the threads that want it, so k threads beside m busy processes on c cores get
c·k/(k+m) cores at most (fair_share_slowdown), and a thread the scheduler sets aside for another's time
slice (milliseconds) holds up the end of a parallel region it has work of. This script times a program
that loses nothing else: parallel regions of pure arithmetic (no memory traffic, no serial part, chunks of
equal work) on the threads netc runs its regions on (netc.region_pool; NETC_REGION_POOL=0: Numba's OpenMP
layer, where every thread checks in at each region's end), alone on one thread per core and beside the
busy processes on 1, c and 2c threads, for regions of several lengths. A workload that keeps every core
busy alone with parallel regions of r milliseconds can read its slowdown against this program's at r,
read in the same minutes (a shared VM's share of its host moves both); one with serial parts between its
regions may do better or worse (they slow by the one-thread share alone, but each region waits for
threads to wake: LeNet-5 read 1.5-3.8x on netc's pool where this program read 2.0-2.4x, before the
caller spun for the others' chunks beside busy processes).

    .venv/bin/python benchmarks/contention_bound.py
    .venv/bin/python benchmarks/contention_bound.py --regions 0.3 3 --rounds 6
    NETC_REGION_POOL=0 .venv/bin/python benchmarks/contention_bound.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import netc  # noqa: E402,F401  (sizes Numba's pool as netc runs it, before Numba is imported)
from benchmarks.run import busy_processes, cores  # noqa: E402

REGION_MS = (0.1, 0.3, 1.0, 3.0, 30.0)  # LeNet-5's regions last 0.1-0.3 ms, the LSTM's ~1 ms, seed-cnn's conv2 ~3 ms
SECONDS = 0.3  # timed per measurement (many regions, so that whole time slices are counted)


def fair_share_slowdown(core_count: int, threads: int, busy: int) -> float:
    """The slowdown of a program that keeps all `core_count` cores busy alone and runs `threads` threads
    beside `busy` CPU-bound processes, given each runnable thread an equal share of the cores and no waits."""
    share = min(threads, core_count * threads / (threads + busy))
    return core_count / share


def _kernel():
    from numba import njit, prange

    @njit(parallel=True)
    def ideal_regions(count, chunks, iterations, out):
        """`count` parallel regions, each `chunks` chains of `iterations` multiply-adds."""
        for _ in range(count):
            for chunk in prange(chunks):
                x = out[chunk]
                for _ in range(iterations):
                    x = x * 0.9999999 + 1e-7
                out[chunk] = x

    return ideal_regions


class IdealProgram:
    """The program: parallel regions of arithmetic, their work measured in milliseconds of one core."""

    def __init__(self):
        from netc.jit import start_threads

        start_threads()  # netc's threads, as netc runs them
        self.kernel = _kernel()
        self.out = np.ones(64)
        self.iterations_per_ms = self._calibrate()

    def _calibrate(self) -> float:
        import numba

        numba.set_num_threads(1)
        self.kernel(1, 1, 10, self.out)  # compile
        iterations = 10_000_000  # ~10 ms: the best of three is one uninterrupted run
        best = min(self._seconds(1, 1, iterations) for _ in range(3))
        return iterations / (best * 1e3)

    def _seconds(self, count: int, chunks: int, iterations: int) -> float:
        start = time.perf_counter()
        self.kernel(count, chunks, iterations, self.out)
        return time.perf_counter() - start

    def rate(self, threads: int, chunks: int, region_ms: float, busy: bool = False) -> float:
        """Work done per wall second, in cores (2.0: two cores flat out), running regions of
        region_ms (on `cores()` threads alone) as `chunks` equal chunks on `threads` threads."""
        import numba

        from netc import region_pool

        numba.set_num_threads(threads)
        if region_pool.pool():  # netc's spin, as netc.jit.prepare_threads sets it
            region_pool.pool().spin_for(busy)
        work_ms = region_ms * cores()
        iterations = max(1, round(self.iterations_per_ms * work_ms / chunks))
        count = max(1, round(SECONDS * 1e3 / region_ms))
        return count * work_ms / (self._seconds(count, chunks, iterations) * 1e3)


def measure(region_ms=REGION_MS, rounds: int = 4) -> list[dict]:
    """Per region length: the ideal program's rate alone (one thread per core) and, beside one busy
    process per core, its slowdown on 1, cores and 2x cores threads (chunks: one per thread, at
    least one per core), alone and beside in turn each round; medians and ranges over the rounds."""
    program = IdealProgram()
    c = cores()
    counts = sorted({1, c, 2 * c})
    rows = []
    with busy_processes(c) as busy:
        for region in region_ms:
            alone, beside = [], {k: [] for k in counts}
            for _ in range(rounds):
                busy.pause()
                alone.append(program.rate(c, c, region))
                busy.resume()
                for k in counts:
                    beside[k].append(program.rate(k, max(k, c), region, busy=True))
            quiet = float(np.median(alone))
            rows.append({"region_ms": region, "alone_cores": quiet,
                         "slowdowns": {k: quiet / float(np.median(v)) for k, v in beside.items()},
                         "ranges": {k: [quiet / max(v), quiet / min(v)] for k, v in beside.items()}})
    return rows


def render(rows: list[dict]) -> str:
    c = cores()
    counts = sorted(rows[0]["slowdowns"])
    head = ["parallel region", "alone (cores of work)"] + [f"{k} thread{'s' if k > 1 else ''} beside" for k in counts]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"{row['region_ms']:g} ms", f"{row['alone_cores']:.2f}"]
        cells += [f"{row['slowdowns'][k]:.2f}× ({row['ranges'][k][0]:.2f}-{row['ranges'][k][1]:.2f})" for k in counts]
        lines.append("| " + " | ".join(cells) + " |")
    shares = ", ".join(f"{k} thread{'s' if k > 1 else ''} {fair_share_slowdown(c, k, c):.2f}×" for k in counts)
    lines.append(f"\nSlowdown of an ideal parallel program beside {c} busy processes on {c} cores (median, range over "
                 f"rounds); equal shares with no waits would give {shares}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", type=float, nargs="+", default=list(REGION_MS), help="region lengths, ms")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    print(render(measure(args.regions, args.rounds)))


if __name__ == "__main__":
    main()
