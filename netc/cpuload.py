"""Threads beside other processes: how many cores they keep busy, and how many threads a plan
runs its parallel regions on.

netc's parallel regions split a pass into a fixed number of chunks (a conv pass two per core, a
recurrent layer one) that the threads of netc's pool claim (netc.region_pool). The scheduler shares
each core among the threads that want it, so beside busy processes more threads get a larger share,
and on netc's pool a thread held back stalls no chunk it has not taken: a plan with conv passes runs
one thread per chunk there (busy_counts). Where fewer threads might be faster (a large linear layer's
blocks; Numba's OpenMP layer, where every thread checks in at each region's end), a model times its
compiled calls on each count and keeps the fastest (ThreadChoice). The chunks, and so the numbers, stay
the same: the thread count only says which threads run them (benchmarks/RESULTS.md, eleventh,
fifteenth, twentieth, twenty-first and twenty-seventh sessions)."""

from __future__ import annotations

import functools
import math
import os
import threading
import time

import numpy as np

from netc.errors import Diagnostic, Location, NetcError

INTERVAL = 0.1  # seconds between looks at /proc/stat (which counts 10 ms ticks per core)
RUNNABLE_SAMPLES = 5  # looks whose median counts other processes' runnable threads (0.5 s)
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


def _runnable_others(stat_path: str) -> int | None:
    """Threads of other processes that run or wait for a core now: /proc/stat's procs_running less this
    process's own (state R in /proc/self/task), or None where they cannot be read. Unlike the busy cores,
    the count does not move when the scheduler shares the cores differently: two busy processes keep two
    cores busy, or one when netc's threads hold the other (Placement)."""
    try:
        with open(stat_path, "rb") as stat:
            line = next(line for line in stat if line.startswith(b"procs_running"))
        running = int(line.split()[1])
        own = 0
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/stat", "rb") as stat:
                    own += stat.read().rsplit(b") ", 1)[1][:1] == b"R"
            except OSError:  # a thread that ended meanwhile
                pass
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return max(0, running - own)


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
        self.runnable: list[int] = []  # other processes' runnable threads, the last RUNNABLE_SAMPLES looks
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

    def runnable_others(self) -> float:
        """Other processes' threads that wanted a core, the median of the last looks (0.0 until measured)."""
        recent = list(self.runnable)
        return float(np.median(recent)) if recent else 0.0

    def _watch(self) -> None:
        last = _sample(self.stat_path)
        while last is not None and time.monotonic() - self.asked < IDLE_EXIT:
            time.sleep(INTERVAL)
            now = _sample(self.stat_path)
            if now is None:
                break
            self.others = others_between(last, now)
            runnable = _runnable_others(self.stat_path)
            self.runnable = (self.runnable + [runnable])[-RUNNABLE_SAMPLES:] if runnable is not None else []
            last = now
        self.others = 0.0
        self.runnable = []


@functools.cache
def load_watcher() -> LoadWatcher:
    """The process's one watcher."""
    return LoadWatcher()


class ThreadChoice:
    """The thread count of one model's parallel regions: `quiet` (one per core) while the other processes
    leave a core or more idle; beside busy ones, the one count of `counts` (busy_counts), or whichever of
    them ran its recent calls fastest per sample (the median of each one's last TRIES calls: one epoch
    beside busy processes varies by +-25%). The counts are tried TRIES times each, in turn, from the
    fewest threads up, a larger count only once the largest tried so far was the fastest; then the
    others again every RETRY calls, one at a time, as the load changes."""

    BUSY = 0.5  # cores that other processes keep busy before they count
    TRIES = 3
    RETRY = 8

    def __init__(self, quiet: int, counts: tuple[int, ...]):
        self.quiet = quiet
        self.counts = sorted(set(counts))
        self.seconds_per_sample: dict[int, list[float]] = {count: [] for count in self.counts}
        self.climbed = min(2, len(self.counts))  # the counts tried so far: self.counts[:climbed]
        self.busy_calls = 0
        self.retries = 0

    def threads(self, others: float) -> int:
        tried = self.seconds_per_sample
        if others < self.BUSY:
            return self.quiet
        if len(self.counts) == 1:
            return self.counts[0]
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


def busy_counts(quiet: int, chunks: int, on_pool: bool) -> tuple[int, ...]:
    """The thread counts a plan may run its regions on beside busy processes, given one per core (`quiet`)
    and a region's most chunks (netc.compiler.steps.busy_threads). On netc's pool, a plan with more chunks
    than cores (conv passes: two per core) runs one thread per chunk: more threads than cores get a larger
    share of the busy cores, and a thread the scheduler holds back holds up no chunk it has not taken.
    Timed against one per core, which beside two busy processes on two cores packs onto one (Placement),
    the choice followed where the scheduler had put the busy processes: alone on its core two threads were
    as fast as four, beside one of them 1.5-1.7x slower, and the next rounds of four threads slowed too
    (LeNet-5 1.47-2.49x slower than alone, median 1.84x; four threads throughout 1.30-2.34x, medians
    1.44-1.66x; seed-cnn 1.74-2.45x against 1.71-1.83x: benchmarks/RESULTS.md, twenty-seventh session).
    Otherwise (fewer chunks than cores: a large linear layer's blocks) one per core and the chunks' count
    are timed, and on Numba's OpenMP layer, whose every thread checks in at a region's end, one thread too."""
    if on_pool and chunks > quiet:
        return (chunks,)
    return tuple(sorted({quiet, chunks} | (set() if on_pool else {1})))


def packed_cores(cores: int, threads: int, others: float) -> int:
    """Cores a plan's `threads` region threads are given to themselves beside `others` runnable threads of
    other processes: their share of the machine (each runnable thread an equal share: cores * threads /
    (threads + others)), rounded up; every core while nothing else runs, or where the share is all."""
    busy = round(others)
    if busy < 1:
        return cores
    return max(1, min(cores, math.ceil(cores * threads / (threads + busy) - 1e-9)))


class Placement:
    """The CPUs a model's parallel regions run on beside busy processes. Two threads on two cores, each
    beside a busy process, wait for each other at every region's end, the worker woken while a busy process
    holds its core: the LSTM ran 2.5-2.6x slower than alone. On one core of their own they take turns
    and wait for nobody, and the scheduler moves the busy processes to the other core: 1.85x (LeNet-5 1.65x
    against 2.13x). A plan's threads are packed onto as many CPUs as their share of the machine
    (packed_cores), where that is fewer than the process may use: beside one busy process two threads'
    share is 1.33 cores, and one core of their own was slower (the LSTM 1.82x against 1.55x). Around each
    compiled call: the pool's workers stay packed while the load lasts (they run regions only), the
    calling thread only for the call, so that no thread the program starts afterwards inherits the mask
    (benchmarks/RESULTS.md, twenty-fifth session)."""

    def __init__(self):
        self.allowed: list[int] | None = None  # the process's CPUs, as first seen
        self.packed: list[int] | None = None  # the CPUs the workers are held to, while packed

    def enter(self, threads: int, others: float, workers: list[int]):
        """Pack the calling thread and `workers` (native thread ids) for a call of `threads` region threads
        beside `others` runnable threads of other processes; returns the caller's mask to restore after
        the call (None: unchanged, also where the caller may not run on the packed CPUs)."""
        if self.allowed is None:
            self.allowed = sorted(os.sched_getaffinity(0))
        count = packed_cores(len(self.allowed), threads, others)
        if count >= len(self.allowed):
            if self.packed is not None:
                self._set(workers, self.allowed)
                self.packed = None
            return None
        if self.packed is None or len(self.packed) != count:
            # starting from the core the caller runs on: two processes packing at once rarely pick the same
            cpu = _current_cpu()
            here = self.allowed.index(cpu) if cpu in self.allowed else 0
            self.packed = [self.allowed[(here + i) % len(self.allowed)] for i in range(count)]
            self._set(workers, self.packed)
        try:
            before = os.sched_getaffinity(0)
            os.sched_setaffinity(0, self.packed)
        except OSError:  # a caller held to other CPUs (a cpuset): it runs where it may
            return None
        return before

    @staticmethod
    def leave(before) -> None:
        if before is not None:
            os.sched_setaffinity(0, before)

    @staticmethod
    def _set(workers: list[int], cpus: list[int]) -> None:
        for worker in workers:
            try:
                os.sched_setaffinity(worker, cpus)
            except OSError:  # a worker gone (a pool closed by a test): nothing to place
                pass


def _current_cpu() -> int:
    """The CPU the calling thread last ran on (field 39 of /proc/thread-self/stat), -1 where unknown."""
    try:
        with open("/proc/thread-self/stat", "rb") as stat:
            return int(stat.read().rsplit(b") ", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return -1


def packing() -> bool:
    """Whether region threads are packed beside busy processes: where threads can be held to CPUs (Linux),
    unless NETC_PACK=0 (any other value than 0 or 1 is an error)."""
    text = os.environ.get("NETC_PACK", "").strip()
    if text not in ("", "0", "1"):
        raise NetcError(Diagnostic("E-ENV", f"NETC_PACK={text!r} is neither 0 nor 1", Location("NETC_PACK"),
                                   hint="NETC_PACK=0 leaves netc's threads on every core beside busy processes; "
                                   "unset it to pack them onto their share of the cores"))
    return text != "0" and hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity")


@functools.cache
def placement() -> Placement:
    """The process's one placement (its workers are the process's pool's)."""
    return Placement()
