"""netc's pool for Numba's parallel regions (netc.region_pool): every row of a region runs once, on
whichever thread claims it, so the numbers are those of Numba's own threading layer."""

import os
import subprocess
import sys
import threading

import numba
import numpy as np
import pytest
from numba import njit, prange

from netc import region_pool
from netc.errors import NetcError
from netc.jit import start_threads

from helpers import SPECS

pytestmark = pytest.mark.skipif(not region_pool.wanted(), reason="netc's pool runs on Linux x86-64")


@njit(parallel=True, nogil=True)
def _count_rows(runs, repeat):
    # each row adds 1 to its own cell, `repeat` times in a row of arithmetic: a row run twice, or not at
    # all, shows in `runs`
    for row in prange(runs.size):
        total = 0.0
        for i in range(repeat):
            total += 1.0 / (i + 1)
        runs[row] += 1 + 0 * total


@njit(parallel=True)
def _nested(out):
    for row in prange(out.shape[0]):
        _inner(out[row])


@njit(parallel=True)
def _inner(cells):
    for j in prange(cells.size):
        cells[j] += j


@pytest.fixture
def pool():
    start_threads()
    yield region_pool.pool()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("rows", [1, 3, 4, 17, 100])
def test_every_row_runs_once_on_any_thread_count(pool, threads, rows):
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    runs = np.zeros(rows, np.int64)
    for _ in range(50):
        _count_rows(runs, 200)
    assert np.array_equal(runs, np.full(rows, 50))


def test_regions_run_on_the_pool_and_one_thread_runs_them_alone(pool):
    runs = np.zeros(8, np.int64)
    numba.set_num_threads(1)
    before = pool.regions()
    _count_rows(runs, 10)
    assert pool.regions() == before  # on its caller, posted to no one
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    _count_rows(runs, 10)
    assert pool.regions() == before + 1
    assert np.array_equal(runs, np.full(8, 2))


@pytest.mark.parametrize("spin, caller_spin", [(region_pool.BUSY_SPIN, region_pool.BUSY_CALLER_SPIN),
                                               (region_pool.BUSY_SPIN, 0), (region_pool.QUIET_SPIN, 0),
                                               (0, region_pool.QUIET_SPIN), (0, 0)])
def test_waiting_threads_that_sleep_at_once_or_spin_miss_no_region(pool, spin, caller_spin):
    """Workers asleep on the futex are woken for each region (or find it done when they wake), and a
    caller asleep until the others' rows are done is woken by the last."""
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    pool.set_spin(spin, caller_spin)
    try:
        runs = np.zeros(16, np.int64)
        for _ in range(300):
            _count_rows(runs, 2_000)
        assert np.array_equal(runs, np.full(16, 300))
    finally:
        pool.set_spin(region_pool.QUIET_SPIN)


def test_spins_follow_the_load(pool):
    """Beside busy processes (netc.jit.prepare_threads, from the load watcher) the workers sleep almost
    at once and the caller spins long; alone both spin the quiet count."""
    from netc.jit import prepare_threads

    try:
        prepare_threads(1, None, busy=True)
        assert (pool.block[region_pool.SPIN], pool.block[region_pool.CALLER_SPIN]) == (
            region_pool.BUSY_SPIN, region_pool.BUSY_CALLER_SPIN)
        prepare_threads(1, None, busy=False)
        assert pool.block[region_pool.SPIN] == pool.block[region_pool.CALLER_SPIN] == region_pool.QUIET_SPIN
    finally:
        pool.set_spin(region_pool.QUIET_SPIN)


def test_regions_from_two_python_threads_at_once_each_run_whole(pool):
    """A region started while another runs takes its rows on its own thread."""
    results = {}

    def run(name):
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)  # per calling thread
        runs = np.zeros(12, np.int64)
        for _ in range(200):
            _count_rows(runs, 500)
        results[name] = runs

    threads = [threading.Thread(target=run, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(np.array_equal(runs, np.full(12, 200)) for runs in results.values())


def test_a_region_inside_a_row_runs_on_that_row_s_thread(pool):
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    out = np.zeros((6, 5))
    _nested(out)
    assert np.array_equal(out, np.tile(np.arange(5.0), (6, 1)))


def test_a_pool_stops_its_workers():
    own = region_pool.RegionPool(3)
    assert all(worker.is_alive() for worker in own.workers)
    own.close()
    assert not any(worker.is_alive() for worker in own.workers)


@pytest.mark.parametrize("text, wanted", [("", True), ("1", True), ("0", False)])
def test_netc_region_pool_chooses_the_pool(monkeypatch, text, wanted):
    monkeypatch.setenv("NETC_REGION_POOL", text)
    assert region_pool.wanted() is wanted


def test_a_netc_region_pool_that_is_neither_0_nor_1_is_an_error(monkeypatch):
    monkeypatch.setenv("NETC_REGION_POOL", "off")
    with pytest.raises(NetcError) as caught:
        region_pool.wanted()
    diagnostic = caught.value.diagnostics[0]
    assert diagnostic.code == "E-ENV" and "'off'" in diagnostic.message and "NETC_REGION_POOL=0" in diagnostic.hint


_WEIGHTS = """
import hashlib, sys
import numpy as np
import netc.jit
from netc.cpuload import ThreadChoice
from netc.graph import build_graph
from netc.runtime.data import load_train_eval
from netc.runtime.model import Model
from netc.spec import load_spec
ThreadChoice.threads = lambda self, others: int(sys.argv[2])
loaded = load_spec(sys.argv[1])
train, _ = load_train_eval(loaded)
model = Model(build_graph(loaded), seed=0, batch=32)
prepared = model.prepare({k: v[:128] for k, v in train.arrays.items()})
model.train_epoch(prepared, np.arange(128), seed=0)
from netc import region_pool
print(hashlib.sha256(model.P.tobytes()).hexdigest(), region_pool.pool() is not None)
"""


@pytest.mark.parametrize("spec", ["digits-cnn.yaml", "digits-lstm.yaml"])
def test_the_pool_gives_the_numbers_of_numba_s_threading_layer(spec):
    """The same bits after an epoch on the pool (four threads) and on Numba's OpenMP layer (two)."""
    def weights(threads, pool):
        env = dict(os.environ, NETC_REGION_POOL="1" if pool else "0", NETC_SERVER="0")
        env.pop("NETC_THREADS", None)
        result = subprocess.run([sys.executable, "-c", _WEIGHTS, str(SPECS / spec), str(threads)], capture_output=True,
                                text=True, env=env, timeout=600, check=True)
        digest, on_pool = result.stdout.split()
        assert on_pool == str(pool)
        return digest

    assert weights(4, True) == weights(2, False)
