"""benchmarks/run.py's account of the machine: what it says when the environment pins OpenBLAS's
kernels below what the CPU runs (the figures then measure the pin, not the hardware); its
contended rounds; the peer frameworks it times in processes of their own; the SGEMM rate it divides by."""

from __future__ import annotations

import os

from benchmarks.run import blas_pin_text


def test_no_line_when_nothing_pins_openblas(monkeypatch):
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    assert blas_pin_text() is None


def test_a_pin_is_named_with_the_kernels_openblas_picks_without_it(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "512")
    text = blas_pin_text()
    assert "OPENBLAS_CORETYPE=Haswell, OPENBLAS_L2_SIZE=512" in text
    assert "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run.py" in text
    unpinned = text.split("unpinned, it runs ")[1].split(" kernels")[0]
    # read by a process without the pin: a kernel family of OpenBLAS's (Haswell itself on an AVX2 CPU)
    assert unpinned and unpinned != "(could not tell)" and " " not in unpinned.replace(" / ", "/")


def test_a_probe_that_fails_says_it_could_not_tell(monkeypatch):
    import subprocess

    import benchmarks.run as run

    def fails(*args, **kwargs):
        raise subprocess.CalledProcessError(1, args[0])

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    monkeypatch.setattr(run.subprocess, "run", fails)
    text = blas_pin_text()
    assert "(OPENBLAS_CORETYPE=Haswell)" in text and "unpinned, it runs (could not tell) kernels" in text


def test_contended_rounds_time_each_framework_quiet_and_loaded(monkeypatch):
    """--contended: an untimed epoch of each framework beside the busy processes, then per round each
    framework's quiet epoch with them stopped (SIGSTOP, state 'T'), then each one's untimed (at least
    one) and timed loaded epochs with them running; every busy process is gone afterwards."""
    import benchmarks.run as run

    monkeypatch.setattr(run, "cores", lambda: 2)
    monkeypatch.setattr(run, "LOADED_WARMUP", 1)
    monkeypatch.setattr(run, "LOAD_WARM_SECONDS", 0.0)  # one untimed loaded epoch each
    real_sleep = run.time.sleep
    monkeypatch.setattr(run.time, "sleep", lambda seconds: real_sleep(min(seconds, 0.05)))  # signals land in ms
    seen = []

    stopped = [False]  # what the harness last asked of the busy processes
    for name, value in (("pause", True), ("resume", False)):
        method = getattr(run._Busy, name)
        monkeypatch.setattr(run._Busy, name, lambda self, m=method, v=value: (stopped.__setitem__(0, v), m(self)))

    def states():
        # a signal takes effect when its process next runs: on a loaded machine, wait for it (up to 2 s)
        for _ in range(80):
            now = [open(f"/proc/{p.pid}/stat").read().split(") ")[1][0] for p in procs]
            if now.count("T") == (len(now) if stopped[0] else 0):
                break
            real_sleep(0.025)
        return now

    class Runner:
        def __init__(self, name):
            self.name = name

        def epoch(self):
            seen.append((self.name, states()))

    asked = []  # the seconds each timing covers
    monkeypatch.setattr(run, "_time", lambda fn, seconds=run.MIN_SAMPLE_SECONDS: asked.append(seconds) or fn() or 1.0)
    started = []
    real = run.subprocess.Popen
    monkeypatch.setattr(run.subprocess, "Popen", lambda *a, **k: started.append(real(*a, **k)) or started[-1])
    procs = started
    quiet, loaded = run.alternate_quiet_and_loaded({"a": Runner("a"), "b": Runner("b")}, rounds=2)
    assert quiet == {"a": [1.0, 1.0], "b": [1.0, 1.0]} and loaded == quiet
    quick, long = run.MIN_SAMPLE_SECONDS, run.LOADED_SAMPLE_SECONDS
    assert asked == [quick, quick, long, long] * 2 and long > quick  # loaded: over more of the scheduler's slices
    assert [name for name, _ in seen] == ["a", "b"] + ["a", "b", "a", "a", "b", "b"] * 2
    warmup, rounds = seen[:2], [seen[2:8], seen[8:]]
    loaded_epochs = warmup + [epoch for one in rounds for epoch in one[2:]]
    assert all("T" not in s for _, s in loaded_epochs), seen  # loaded: running (R) or scheduled out (S)
    assert all(s == ["T", "T"] for one in rounds for _, s in one[:2]), seen  # quiet: stopped
    assert len(started) == 2 and all(p.poll() is not None for p in started)


def test_a_peer_that_cannot_be_built_is_reported_and_its_process_ends():
    """A peer framework runs in a process of its own (benchmarks.run.PeerProcess): what failed in it
    comes back as an error naming the cause, and the process is gone."""
    import pytest

    import benchmarks.run as run

    with pytest.raises(RuntimeError, match="KeyError: 'no-such-framework'"):
        run.PeerProcess("no-such-framework", run.KEYS["seed-mlp"], {})


def test_a_peer_times_its_epochs_in_a_process_with_its_own_openmp_runtime():
    """PyTorch's libgomp has the soname of the one Numba loads: in netc's process PyTorch would run on
    netc's runtime and its settings; in its own process it loads its own and times its epochs there."""
    import pytest

    pytest.importorskip("torch")
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("no /proc/self/maps to list a process's libraries (not Linux)")
    import benchmarks.run as run

    workload = run.KEYS["seed-mlp"]
    w = run.WORKLOADS[workload]
    graph = run.load_graph(w.spec, w.batch, w.lr)
    netc = run.NetcRunner(graph, run.make_data(graph, 200))
    peer = run.PeerProcess("torch", workload, netc.model.get_weights())
    try:
        assert peer.timed() > 0
        with open(f"/proc/{peer.process.pid}/maps") as maps:
            libraries = {line.split()[-1] for line in maps if ".so" in line}
    finally:
        peer.close()
    assert not peer.process.is_alive()
    gomp = [path for path in libraries if "libgomp" in path]
    assert gomp and all("torch" in path for path in gomp), libraries


def test_a_peer_whose_process_ended_is_reported_not_waited_for():
    """A question to a peer whose process has died (killed, out of memory) raises with its exit code
    instead of waiting for an answer that will not come."""
    import multiprocessing

    import pytest

    import benchmarks.run as run

    context = multiprocessing.get_context("spawn")
    peer = object.__new__(run.PeerProcess)  # a peer whose process is gone, without building a framework
    peer.connection, child = context.Pipe()
    peer.process = context.Process(target=os._exit, args=(3,))
    peer.process.start()
    peer.process.join(30)
    child.close()
    with pytest.raises(RuntimeError, match=r"its process ended \(exit code 3\)"):
        peer.timed()


def test_each_workloads_share_of_sgemm_is_against_the_rate_read_beside_it(monkeypatch):
    """A workload's % of SGEMM divides by the mean of the readings before and after it (the VM's speed
    drifts within a run), not by the one at the start; the footer gives both."""
    from types import SimpleNamespace

    from benchmarks import run

    monkeypatch.setattr(run, "machine_text", lambda frameworks: "- machine: (not asked)")
    results = [{"workload": "w", "unit": "samples/s", "rates": {"netc": 1000.0}, "flops_per_unit": 1e8,
                "sgemm_gflops": [400.0, 500.0]},
               {"workload": "old", "unit": "samples/s", "rates": {"netc": 1000.0}, "flops_per_unit": 1e8}]
    text = run.render(results, {1: 250.0, 2: 1000.0}, SimpleNamespace(contended=False, no_startup=True, rounds=5))
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ")}
    assert rows["w"].endswith("| 22.2% |")  # 1e11 FLOP/s of 450 GFLOP/s
    assert rows["old"].endswith("| 10.0% |")  # no readings of its own: the start's 1,000
    assert "1 core 250, 2 cores 1000 at the start; on all cores before and after each workload 400-500" in text
