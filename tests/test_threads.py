"""The thread policy: NETC_THREADS, and OpenMP threads that sleep rather than spin between
parallel regions (netc.jit.start_threads; measured in benchmarks/run.py --contended)."""

import os
import subprocess
import sys
import time

import numba
import pytest

from netc.compiler.steps import blas_threads, cores, parallel_chunks, stepped_chunks
from netc.errors import NetcError
from netc.graph import build_graph
from netc.jit import thread_count
from netc.spec import load_spec, load_spec_text

from helpers import SPECS


@pytest.mark.parametrize("text, expected", [("", None), ("1", 1), (" 3 ", 3)])
def test_netc_threads_is_read(monkeypatch, text, expected):
    monkeypatch.setenv("NETC_THREADS", text)
    assert thread_count() == expected


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5"])
def test_netc_threads_that_is_not_a_count_is_an_error(monkeypatch, text):
    monkeypatch.setenv("NETC_THREADS", text)
    with pytest.raises(NetcError) as caught:
        thread_count()
    diagnostic = caught.value.diagnostics[0]
    assert diagnostic.code == "E-ENV" and repr(text.strip()) in diagnostic.message
    assert "NETC_THREADS=2" in diagnostic.hint


def test_netc_threads_sets_the_chunks_of_a_conv_pass(monkeypatch):
    """Two chunks per thread in a conv pass (netc.pool), one in a recurrent layer's; at most a sample each."""
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.setenv("NETC_THREADS", "1")
    assert cores() == 1 and parallel_chunks(64) == 2 and stepped_chunks(64) == 1
    monkeypatch.setenv("NETC_THREADS", "3")
    assert cores() == 3 and parallel_chunks(64) == 6 and parallel_chunks(5) == 5 and stepped_chunks(2) == 2
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")  # Numba starts no more threads than this
    assert cores() == 2 and parallel_chunks(64) == 4


_POOL = "import netc.jit, numba; print(numba.config.NUMBA_NUM_THREADS)"


def _numba_pool(code: str, **env: str) -> int:
    environment = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"} | env
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                            timeout=120, check=True)
    return int(result.stdout)


def test_numba_starts_two_threads_per_core_unless_told_otherwise():
    """netc sizes Numba's pool before Numba is imported; a NUMBA_NUM_THREADS the user set is kept, and so
    is the pool of a process that imported Numba first (Numba refuses a change after its threads start)."""
    from netc.pool import CHUNKS_PER_CORE, available_cores

    assert CHUNKS_PER_CORE == 2
    assert _numba_pool(_POOL) == 2 * available_cores()
    assert _numba_pool(_POOL, NUMBA_NUM_THREADS="3") == 3
    assert _numba_pool("import numba; " + _POOL) == available_cores()


WIDE_MLP = """
netc: 1
name: wide
inputs:
  x: {shape: [2048]}
  y: {shape: [], dtype: int64, classes: 10}
layers:
  - {name: fc1, op: linear, in: x, out: 2048}
  - {name: fc2, op: linear, out: 10}
loss: {op: cross_entropy, input: fc2, target: y}
optimizer: {type: sgd, lr: 0.1}
train: {batch: 32}
"""


def test_blas_splits_a_large_gemm_but_never_a_recurrent_layers(monkeypatch):
    """A plan with a GEMM of 50 M+ multiply-adds gets every core's BLAS thread; a recurrent layer's
    per-step GEMMs keep one, whatever the layer's total work (benchmarks/specs/lstm.yaml: 84 M)."""
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.setenv("NETC_THREADS", "2")
    wide = build_graph(load_spec_text(WIDE_MLP, "wide.yaml"))
    assert blas_threads(wide, 32) == 2 and blas_threads(wide, 4) == 1
    lstm = build_graph(load_spec(SPECS.parent / "benchmarks" / "specs" / "lstm.yaml"))
    assert 32 * sum(node.macs for node in lstm.nodes) >= 50_000_000
    assert blas_threads(lstm, 32) == 1


@pytest.mark.parametrize("variable, text, message", [
    ("NETC_THREADS", "many", "NETC_THREADS='many' is not a thread count"),
    ("NETC_REGION_POOL", "yes", "NETC_REGION_POOL='yes' is neither 0 nor 1"),
    ("NETC_PACK", "on", "NETC_PACK='on' is neither 0 nor 1"),
    ("NETC_BLAS_THREADS", "all", "NETC_BLAS_THREADS='all' is not a thread count"),
])
def test_a_run_with_a_bad_thread_setting_stops_before_it_writes_anything(tmp_path, variable, text, message):
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "netc.cli", "train", str(SPECS / "xor.yaml"), "--epochs", "1",
                             "--run-dir", str(run_dir), "-q"], capture_output=True, text=True,
                            env=dict(os.environ, **{variable: text}), timeout=120)
    assert result.returncode != 0
    assert f"{variable}: error[E-ENV]: {message}" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()


_POLICY = """
import os
from netc.jit import prepare_threads
prepare_threads(1)
print("after:", os.environ.get("OMP_WAIT_POLICY"), os.environ.get("GOMP_SPINCOUNT"))
"""


def _openmp_settings(env: dict) -> tuple[str, str, str]:
    """(the wait policy and the spin count libgomp says it read as it loaded, the two variables as
    left in the environment)."""
    env = dict(env, OMP_DISPLAY_ENV="VERBOSE")  # VERBOSE: libgomp shows GOMP_SPINCOUNT too
    result = subprocess.run([sys.executable, "-c", _POLICY], capture_output=True, text=True, env=env, timeout=120,
                            check=True)
    shown = [line.strip() for line in result.stderr.splitlines()]
    policy = next(line for line in shown if line.startswith("OMP_WAIT_POLICY"))
    spin = next(line for line in shown if line.startswith("GOMP_SPINCOUNT"))
    return policy, spin, result.stdout.strip()


def _without_openmp_settings() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}


def test_openmp_threads_spin_briefly_and_the_environment_is_left_as_it_was():
    """SPIN_COUNT busy-waits at a region's end, then sleep (libgomp's default spins 300,000; it shows
    the policy it was not given as PASSIVE)."""
    from netc.jit import SPIN_COUNT

    assert _openmp_settings(_without_openmp_settings()) == (
        "OMP_WAIT_POLICY = 'PASSIVE'", f"GOMP_SPINCOUNT = '{SPIN_COUNT}'", "after: None None")


def test_a_wait_policy_or_spin_count_the_user_chose_is_kept():
    env = _without_openmp_settings()
    assert _openmp_settings(dict(env, OMP_WAIT_POLICY="ACTIVE")) == (
        "OMP_WAIT_POLICY = 'ACTIVE'", "GOMP_SPINCOUNT = '30000000000'", "after: ACTIVE None")
    assert _openmp_settings(dict(env, OMP_WAIT_POLICY="PASSIVE")) == (
        "OMP_WAIT_POLICY = 'PASSIVE'", "GOMP_SPINCOUNT = '0'", "after: PASSIVE None")
    assert _openmp_settings(dict(env, GOMP_SPINCOUNT="123")) == (
        "OMP_WAIT_POLICY = 'PASSIVE'", "GOMP_SPINCOUNT = '123'", "after: None 123")


# ---------------------------------------------------------------- threads beside busy processes

def test_the_watcher_measures_other_processes_busy_cores(tmp_path, monkeypatch):
    """/proc/stat's busy ticks (user, nice, system, irq, softirq; not idle, iowait or steal) less this
    process's own CPU time, over the wall time; nothing where the file cannot be read."""
    from netc import cpuload

    stat = tmp_path / "stat"
    stat.write_text("cpu  300 0 100 5000 7 0 0 900 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    monkeypatch.setattr(os, "sysconf", lambda name: 100)
    monkeypatch.setattr(os, "times", lambda: os.times_result((1.5, 0.5, 0.0, 0.0, 0.0)))
    _, busy, own = cpuload._sample(str(stat))
    assert (busy, own) == (4.0, 2.0)
    # 1.5 s of the machine's busy time in 1 s, 0.5 of it ours: one core's worth of others
    assert cpuload.others_between((10.0, 4.0, 2.0), (11.0, 5.5, 2.5)) == 1.0
    assert cpuload.others_between((10.0, 4.0, 2.0), (10.5, 4.5, 2.5)) == 0.0  # all of it ours
    assert cpuload.others_between((10.0, 4.0, 2.0), (10.0, 4.0, 2.0)) == 0.0
    assert cpuload._sample(str(tmp_path / "missing")) is None
    stat.write_text("intr 1 2 3\n")
    assert cpuload._sample(str(stat)) is None
    watcher = cpuload.LoadWatcher(str(tmp_path / "missing"))
    assert watcher.cores_busy() == 0.0
    watcher.thread.join(timeout=5)
    assert not watcher.thread.is_alive() and watcher.cores_busy() == 0.0


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="the load is read from Linux's /proc/stat")
def test_the_watcher_sees_a_busy_process():
    from netc.cpuload import INTERVAL, LoadWatcher

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        watcher = LoadWatcher()
        watcher.cores_busy()
        time.sleep(0.5)
        seen = [watcher.cores_busy()]
        for _ in range(10):
            time.sleep(INTERVAL)
            seen.append(watcher.cores_busy())
        assert max(seen) >= 0.5, seen  # the busy process's core (this process sleeps meanwhile)
    finally:
        busy.kill()
        busy.wait()


def _choose(choice, seconds: dict[int, list[float]], calls: int) -> list[int]:
    """`calls` busy calls of a ThreadChoice, each recording the next time of the count it chose."""
    picks = []
    for _ in range(calls):
        picks.append(choice.threads(1.5))
        times = seconds[picks[-1]]
        choice.record(picks[-1], 1.5, times.pop(0) if len(times) > 1 else times[0], 100)
    return picks


def test_beside_busy_processes_a_model_keeps_the_faster_thread_count():
    from netc.cpuload import ThreadChoice

    tries, retry = ThreadChoice.TRIES, ThreadChoice.RETRY
    choice = ThreadChoice(2, (1, 2, 4))
    assert choice.threads(0.2) == 2  # quiet: one thread per core, nothing recorded
    choice.record(2, 0.2, 9.0, 100)
    assert choice.seconds_per_sample == {1: [], 2: [], 4: []}
    # one thread faster on the median, not on every call: four threads are never tried
    seconds = {1: [1.0, 1.2, 5.0, 1.0], 2: [3.0, 0.5, 2.0, 2.0], 4: [0.1]}
    picks = _choose(choice, seconds, 2 * retry)
    assert picks[:2 * tries] == [1, 2] * tries and 4 not in picks
    assert picks[retry - 1] == picks[2 * retry - 1] == 2  # the other again every RETRY-th busy call
    assert picks[2 * tries:].count(1) == len(picks) - 2 * tries - 2

    # two threads fastest: four are tried next, and kept when faster still
    choice = ThreadChoice(2, (1, 2, 4))
    seconds = {1: [2.0], 2: [1.0], 4: [0.9, 0.8, 3.0, 0.8]}
    picks = _choose(choice, seconds, 3 * retry)
    assert picks[:3 * tries] == [1, 2] * tries + [4] * tries
    assert sorted(picks[n * retry - 1] for n in (2, 3)) == [1, 2]  # the others in turn
    assert picks[3 * tries:].count(4) == len(picks) - 3 * tries - 2
    for _ in range(tries):
        choice.record(1, 1.5, 0.5, 100)  # the load changed: one thread is faster now
    picks = [choice.threads(1.5) for _ in range(retry)]
    assert picks.count(1) == retry - 1

    assert ThreadChoice(1, (1,)).threads(2.0) == 1  # one core: nothing to choose
    assert ThreadChoice(2, (4,)).threads(2.0) == 4 and ThreadChoice(2, (4,)).threads(0.2) == 2  # one count beside them
    choice.record(3, 1.5, 1.0, 100)  # a count it does not choose from is not kept
    assert 3 not in choice.seconds_per_sample


def test_the_thread_count_changes_no_number(monkeypatch):
    """A conv pass has a fixed number of chunks per plan (two per core); one thread runs them one after
    another: the weights after an epoch are the same bits on one thread, two and four."""
    import numba
    import numpy as np

    from netc.cpuload import ThreadChoice
    from netc.runtime.data import load_train_eval
    from netc.runtime.model import Model

    monkeypatch.delenv("NETC_THREADS", raising=False)
    loaded = load_spec(SPECS / "digits-cnn.yaml")
    train, _ = load_train_eval(loaded)
    weights = []
    for threads in (1, 2, 4):
        monkeypatch.setattr(ThreadChoice, "threads", lambda self, others, n=threads: n)
        model = Model(build_graph(loaded), seed=0, batch=32)
        assert model.thread_choice is not None
        prepared = model.prepare({k: v[:256] for k, v in train.arrays.items()})
        model.train_epoch(prepared, np.arange(256), seed=0)
        assert numba.get_num_threads() == min(threads, numba.config.NUMBA_NUM_THREADS)  # the count it ran on
        weights.append(model.P.copy())
    assert np.array_equal(weights[0], weights[1])


def test_plans_with_conv_passes_may_run_on_as_many_threads_as_chunks(monkeypatch):
    """Beside busy processes a plan with conv passes runs on netc's pool as many threads as their chunks (two
    per core); recurrent layers (one chunk per core) stop at one per core. On Numba's OpenMP layer it chooses
    between one thread, one per core and the chunks' count."""
    from netc.compiler.steps import busy_threads
    from netc.runtime.model import Model

    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.setenv("NETC_THREADS", "2")
    seed_cnn = build_graph(load_spec(SPECS / "seed-cnn.yaml"))
    assert busy_threads(seed_cnn, 32) == 4 and busy_threads(seed_cnn, 3) == 3  # three samples: three chunks
    lenet = build_graph(load_spec(SPECS.parent / "benchmarks" / "specs" / "lenet5.yaml"))
    assert busy_threads(lenet, 64) == 4
    lstm = build_graph(load_spec(SPECS.parent / "benchmarks" / "specs" / "lstm.yaml"))
    assert busy_threads(lstm, 32) == 2
    assert busy_threads(build_graph(load_spec(SPECS / "xor.yaml")), 32) == 1
    monkeypatch.delenv("NETC_THREADS")
    choice = Model(seed_cnn, batch=32).thread_choice
    chunks = min(numba.config.NUMBA_NUM_THREADS, 2 * cores())
    assert choice.counts == ([chunks] if chunks > cores() else [cores()])
    assert choice.threads(2.0) == choice.counts[0]
    assert choice.threads(0.0) == min(cores(), numba.config.NUMBA_NUM_THREADS)
    monkeypatch.setenv("NETC_REGION_POOL", "0")  # on OpenMP's threads: one thread too (it stalls no region)
    choice = Model(seed_cnn, batch=32).thread_choice
    assert choice.counts == sorted({1, cores(), min(numba.config.NUMBA_NUM_THREADS, 2 * cores())})


def test_beside_busy_processes_more_chunks_than_cores_run_a_thread_each_on_the_pool():
    """netc's pool: one thread per chunk where a region has more chunks than cores (no timing), one per core
    and the chunks' count timed where it has fewer; Numba's OpenMP layer times one thread as well."""
    from netc.cpuload import busy_counts

    assert busy_counts(2, 4, on_pool=True) == (4,)
    assert busy_counts(2, 2, on_pool=True) == (2,)
    assert busy_counts(2, 1, on_pool=True) == (1, 2)
    assert busy_counts(2, 4, on_pool=False) == (1, 2, 4)
    assert busy_counts(1, 2, on_pool=True) == (2,)
    assert busy_counts(1, 1, on_pool=False) == (1,)


def test_netc_threads_fixes_the_count_and_plans_without_parallel_regions_have_no_choice(monkeypatch):
    from netc.runtime.model import Model

    monkeypatch.setenv("NETC_THREADS", "1")
    assert Model(build_graph(load_spec(SPECS / "digits-cnn.yaml")), batch=8).thread_choice is None
    monkeypatch.delenv("NETC_THREADS")
    assert Model(build_graph(load_spec(SPECS / "xor.yaml"))).thread_choice is None


@pytest.mark.parametrize("cores, threads, others, expected", [
    (2, 2, 2.0, 1),  # two threads beside two busy processes: one core's share, one core of their own
    (2, 2, 1.9, 1),  # the watcher's reading, rounded
    (2, 2, 1.0, 2),  # beside one: 1.33 cores' share, so both cores
    (2, 4, 2.0, 2),  # four threads: 1.33 cores
    (2, 2, 0.3, 2),  # nothing busy
    (8, 8, 2.0, 7),  # 6.4 cores' share
    (4, 1, 3.0, 1),
])
def test_region_threads_are_packed_onto_their_share_of_the_cores(cores, threads, others, expected):
    from netc.cpuload import packed_cores

    assert packed_cores(cores, threads, others) == expected


def _sleeper():
    """A thread that waits (a stand-in for a pool worker), and the event that ends it."""
    import threading

    done = threading.Event()
    thread = threading.Thread(target=done.wait, daemon=True)
    thread.start()
    return thread, done


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and two CPUs")
def test_a_placement_holds_the_workers_while_busy_and_the_caller_for_one_call():
    from netc.cpuload import Placement, packed_cores

    allowed = os.sched_getaffinity(0)
    worker, done = _sleeper()
    try:
        placement = Placement()
        before = placement.enter(2, 2.0, [worker.native_id])
        packed = set(placement.packed)
        assert len(packed) == packed_cores(len(allowed), 2, 2.0) < len(allowed) and packed <= allowed
        assert os.sched_getaffinity(0) == packed and os.sched_getaffinity(worker.native_id) == packed
        placement.leave(before)
        assert os.sched_getaffinity(0) == allowed  # the caller only for the call
        assert os.sched_getaffinity(worker.native_id) == packed  # the workers while the load lasts
        assert placement.enter(2, 0.2, [worker.native_id]) is None  # quiet: everything back
        assert os.sched_getaffinity(worker.native_id) == allowed and os.sched_getaffinity(0) == allowed
        placement.enter(2, 1.0, [worker.native_id])  # beside one busy process: every core is their share
        assert os.sched_getaffinity(worker.native_id) == allowed
    finally:
        done.set()
        os.sched_setaffinity(0, allowed)


def test_packing_can_be_turned_off(monkeypatch):
    from netc.cpuload import packing

    monkeypatch.setenv("NETC_PACK", "0")
    assert packing() is False
    monkeypatch.setenv("NETC_PACK", "1")
    assert packing() is hasattr(os, "sched_setaffinity")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and two CPUs")
def test_a_model_beside_busy_processes_packs_its_threads_and_changes_no_number(monkeypatch):
    """Beside busy processes a conv plan on two threads runs them on its share of the cores: the same
    bits as unpacked (the chunks are the plan's); the caller's CPUs are its own again after the call."""
    import numpy as np

    from netc import cpuload, region_pool
    from netc.cpuload import ThreadChoice
    from netc.runtime.data import load_train_eval
    from netc.runtime.model import Model

    monkeypatch.delenv("NETC_THREADS", raising=False)
    monkeypatch.setattr(ThreadChoice, "threads", lambda self, others: 2)
    monkeypatch.setattr(cpuload.LoadWatcher, "cores_busy", lambda self: 2.0)
    monkeypatch.setattr(cpuload.LoadWatcher, "runnable_others", lambda self: 2.0)
    allowed = os.sched_getaffinity(0)
    loaded = load_spec(SPECS / "digits-cnn.yaml")
    train, _ = load_train_eval(loaded)
    weights = []
    for pack in ("0", "1"):
        monkeypatch.setenv("NETC_PACK", pack)
        model = Model(build_graph(loaded), seed=0, batch=32)
        prepared = model.prepare({k: v[:256] for k, v in train.arrays.items()})
        model.train_epoch(prepared, np.arange(256), seed=0)
        weights.append(model.P.copy())
        assert os.sched_getaffinity(0) == allowed
    pool = region_pool.pool()
    if pool is not None:  # on netc's pool: its workers held to the packed cores until the load goes
        assert {frozenset(os.sched_getaffinity(worker)) for worker in pool.worker_ids()} == \
            {frozenset(cpuload.placement().packed)}
        monkeypatch.setattr(cpuload.LoadWatcher, "cores_busy", lambda self: 0.0)
        model.train_epoch(prepared, np.arange(256), seed=0)
        assert all(os.sched_getaffinity(worker) == allowed for worker in pool.worker_ids())
    assert np.array_equal(weights[0], weights[1])


def test_other_processes_runnable_threads_are_counted_from_proc_stat(tmp_path):
    """procs_running less this process's running threads (the calling one among them); None where the
    file cannot be read or has no such line (then nothing is packed: the watcher counts no one)."""
    from netc.cpuload import _runnable_others

    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3 4 5 6 7 0 0 0\nprocs_running 7\nprocs_blocked 0\n")
    assert 0 <= _runnable_others(str(stat)) <= 6  # this thread is running as it reads
    stat.write_text("cpu  1 2 3 4 5 6 7 0 0 0\n")
    assert _runnable_others(str(stat)) is None
    assert _runnable_others(str(tmp_path / "missing")) is None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and two CPUs")
def test_a_caller_that_may_not_run_on_the_packed_cores_runs_where_it_may(monkeypatch):
    from netc.cpuload import Placement

    allowed = os.sched_getaffinity(0)

    def refuse(pid, cpus):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    placement = Placement()
    assert placement.enter(2, 2.0, []) is None  # nothing to restore after the call
    placement.leave(None)
    assert os.sched_getaffinity(0) == allowed
