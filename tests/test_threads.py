"""The thread policy: NETC_THREADS, and OpenMP threads that sleep rather than spin between
parallel regions (netc.jit.start_threads; measured in benchmarks/run.py --contended)."""

import os
import subprocess
import sys

import pytest

from netc.compiler.steps import blas_threads, cores, parallel_chunks
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
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.setenv("NETC_THREADS", "1")
    assert cores() == 1 and parallel_chunks(64) == 1
    monkeypatch.setenv("NETC_THREADS", "3")
    assert cores() == 3 and parallel_chunks(64) == 3 and parallel_chunks(2) == 2
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")  # Numba starts no more threads than this
    assert cores() == 2


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


def test_a_run_with_a_bad_netc_threads_stops_before_it_writes_anything(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "netc.cli", "train", str(SPECS / "xor.yaml"), "--epochs", "1",
                             "--run-dir", str(run_dir), "-q"], capture_output=True, text=True,
                            env=dict(os.environ, NETC_THREADS="many"), timeout=120)
    assert result.returncode != 0
    assert "NETC_THREADS: error[E-ENV]: NETC_THREADS='many' is not a thread count" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()


_POLICY = """
import os
from netc.jit import prepare_threads
prepare_threads(1)
print("after:", os.environ.get("OMP_WAIT_POLICY"))
"""


def _openmp_settings(env: dict) -> tuple[str, str]:
    """(what libgomp says it read as it loaded, OMP_WAIT_POLICY left in the environment)."""
    env = dict(env, OMP_DISPLAY_ENV="TRUE")
    result = subprocess.run([sys.executable, "-c", _POLICY], capture_output=True, text=True, env=env, timeout=120,
                            check=True)
    shown = next(line.strip() for line in result.stderr.splitlines() if line.strip().startswith("OMP_WAIT_POLICY"))
    return shown, result.stdout.strip()


def test_openmp_threads_wait_passively_and_the_environment_is_left_as_it_was():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _openmp_settings(env) == ("OMP_WAIT_POLICY = 'PASSIVE'", "after: None")


def test_a_wait_policy_the_user_chose_is_kept():
    assert _openmp_settings(dict(os.environ, OMP_WAIT_POLICY="ACTIVE")) == ("OMP_WAIT_POLICY = 'ACTIVE'",
                                                                           "after: ACTIVE")
