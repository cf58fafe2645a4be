"""Threads beside other processes: how many cores they keep busy, and how many threads a plan
runs its parallel regions on.

netc's parallel regions split a pass into a fixed number of chunks (a conv pass two per core, a
recurrent layer one) that the threads of netc's pool claim (netc.region_pool). The scheduler shares
each core among the threads that want it, so beside busy processes more threads get a larger share,
but also wait more for the cores: LeNet-5 beside two CPU-bound processes on two cores ran 1.85-2.1x
slower than alone on two threads and 1.9-2.0x on four in one hour, in another 1.5-2.9x and 2.7-3.8x
(before the caller spun for the others' chunks; on OpenMP's threads, where every thread had to check in
at each region's end, one thread was at times the fastest). Which is faster depends on the plan and the
machine's moment, so while other processes are busy, a model times its compiled calls on each count and
keeps the fastest (ThreadChoice). The chunks, and so the numbers, stay the same: the thread count only
says which threads run them (benchmarks/RESULTS.md, eleventh, fifteenth, twentieth and twenty-first
sessions)."""

from __future__ import annotations

import functools
import os
import threading
import time

import numpy as np

INTERVAL = 0.1  # seconds between looks at /proc/stat (which counts 10 ms ticks per core)
IDLE_EXIT = 30.0  # the watcher stops when nobody asked for this long (a new question restarts it)


def _sample(stat_path: str) -> tuple[float, float, float] | None:
    """(wall seconds, the machine's busy CPU seconds, this process's CPU seconds), or None where
    /proc/stat cannot be read (not Linux)."""
    try:
        with open(stat_path, "rb") as stat:
            fields = stat.readline().split()
        user, nice, system, _idle, _iowait, irq, softirq = (int(value) for value in fields[1:8])
    except (OSError, ValueError):
        return None
    own = os.times()  # every thread of this process
    busy = (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    return time.monotonic(), busy, own.user + own.system


def others_between(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
    """Cores kept busy by other processes between two samples: the machine's busy CPU time less
    this process's, over the wall time."""
    wall = after[0] - before[0]
    if wall <= 0:
        return 0.0
    return max(0.0, ((after[1] - before[1]) - (after[2] - before[2])) / wall)


class LoadWatcher:
    """Other processes' busy cores over the last INTERVAL, kept current by a daemon thread (a
    compiled epoch releases the GIL, so the watcher sees the load change while it runs)."""

    def __init__(self, stat_path: str = "/proc/stat"):
        self.stat_path = stat_path
        self.others = 0.0
        self.asked = time.monotonic()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def cores_busy(self) -> float:
        """Cores other processes kept busy in the last INTERVAL; 0.0 until measured, or where it
        cannot be (then netc uses every core, as without a watcher)."""
        self.asked = time.monotonic()
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._watch, name="netc-load", daemon=True)
                self.thread.start()
        return self.others

    def _watch(self) -> None:
        last = _sample(self.stat_path)
        while last is not None and time.monotonic() - self.asked < IDLE_EXIT:
            time.sleep(INTERVAL)
            now = _sample(self.stat_path)
            if now is None:
                break
            self.others = others_between(last, now)
            last = now
        self.others = 0.0


@functools.cache
def load_watcher() -> LoadWatcher:
    """The process's one watcher."""
    return LoadWatcher()


class ThreadChoice:
    """The thread count of one model's parallel regions: one per core while the other processes leave
    a core or more idle; beside busy ones, whichever of the counts it may use (one per core and, for a
    plan with conv passes, as many as their chunks: steps.busy_threads; on OpenMP's threads one thread
    too) ran its recent calls fastest per sample (the median of each one's last TRIES calls: one epoch
    beside busy processes varies by +-25%). The counts are tried TRIES times each, in turn, from the
    fewest threads up, a larger count only once the largest tried so far was the fastest; then the
    others again every RETRY calls, one at a time, as the load changes."""

    BUSY = 0.5  # cores that other processes keep busy before they count
    TRIES = 3
    RETRY = 8

    def __init__(self, quiet: int, counts: tuple[int, ...]):
        self.quiet = quiet
        self.counts = sorted({quiet, *counts})
        self.seconds_per_sample: dict[int, list[float]] = {count: [] for count in self.counts}
        self.climbed = min(2, len(self.counts))  # the counts tried so far: self.counts[:climbed]
        self.busy_calls = 0
        self.retries = 0

    def threads(self, others: float) -> int:
        tried = self.seconds_per_sample
        if len(self.counts) == 1 or others < self.BUSY:
            return self.quiet
        self.busy_calls += 1
        candidates = self.counts[:self.climbed]
        fewest = min(candidates, key=lambda threads: len(tried[threads]))  # the first of the least tried
        if len(tried[fewest]) < self.TRIES:
            return fewest
        ranked = sorted(candidates, key=lambda threads: float(np.median(tried[threads])))
        if ranked[0] == candidates[-1] and self.climbed < len(self.counts):
            self.climbed += 1
            return self.counts[self.climbed - 1]
        if self.busy_calls % self.RETRY:
            return ranked[0]
        self.retries += 1
        return ranked[1 + self.retries % (len(ranked) - 1)]  # the others in turn

    def record(self, threads: int, others: float, seconds: float, samples: int) -> None:
        """A call's time, kept when it ran beside busy processes (what the choice is about)."""
        if threads in self.seconds_per_sample and others >= self.BUSY and samples > 0:
            recent = self.seconds_per_sample[threads]
            recent.append(seconds / samples)
            del recent[:-self.TRIES]
