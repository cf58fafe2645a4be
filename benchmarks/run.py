"""netc against PyTorch on the CPU: the same networks, initial weights and data, timed
alternately in one run, each peer framework (PyTorch, JAX) in a process of its own (PeerProcess)
that times its epochs when asked. PyTorch is optional: without it only netc is timed.

    .venv/bin/python benchmarks/run.py                   # all workloads, a Markdown table
    .venv/bin/python benchmarks/run.py --only lenet5 --rounds 5
    .venv/bin/python benchmarks/run.py --torch-compile   # also torch.compile (slow to compile)
    .venv/bin/python benchmarks/run.py --jax             # also JAX (pip install -e ".[jax]")
    .venv/bin/python benchmarks/run.py --contended       # also beside one CPU-bound process per core

Reports samples/s (steps/s for the one-sample-per-step workloads), the ratio netc ÷ PyTorch
(and ÷ JAX's faster variant), the fraction of the machine's SGEMM rate (all cores, measured at
the start through the OpenBLAS netc calls) that each framework's training reaches (6 FLOPs per
forward multiply-add: forward, backward-data, backward-weights), netc's cold compile time
(empty caches) and warm start-up time (process start to the first training step done, data
loading excluded), peak memory of each framework (each alone in its own process), and the
versions. `--contended` times every framework beside one busy process per core too, loaded epochs
(over 1 s) after each quiet timing, and reports each one's slowdown (median loaded epoch ÷ median
quiet epoch), and below the table what the scheduler allows there: the slowdown of an ideal parallel
program with regions of 0.1-30 ms on 1, cores and 2x cores threads (benchmarks/contention_bound.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass
class Workload:
    name: str
    spec: str
    batch: int
    samples: int  # per timed epoch
    lr: float | None = None
    per_step: bool = False  # report steps/s


WORKLOADS = [
    Workload("seed-mlp (1 sample/step)", "specs/seed-mlp.yaml", 1, 10_000, lr=0.001, per_step=True),
    Workload("MLP 64-128-10, batch 32", "benchmarks/specs/mlp.yaml", 32, 16_384),
    Workload("MLP 64-128-10, batch 256", "benchmarks/specs/mlp.yaml", 256, 32_768),
    Workload("LeNet-5, batch 64", "benchmarks/specs/lenet5.yaml", 64, 8_192),
    Workload("seed-cnn, batch 32", "specs/seed-cnn.yaml", 32, 1_024),
    Workload("LSTM T=32 F=32 H=128, batch 32", "benchmarks/specs/lstm.yaml", 32, 2_048),
    Workload("RNN T=16 H=32 (1 sample/step)", "benchmarks/specs/rnn.yaml", 1, 2_000, per_step=True),
]
KEYS = {"seed-mlp": 0, "mlp32": 1, "mlp256": 2, "lenet5": 3, "seed-cnn": 4, "lstm": 5, "rnn": 6}


def load_graph(spec: str, batch: int, lr: float | None):
    from netc.graph import build_graph
    from netc.runtime.train import Overrides, apply_overrides
    from netc.spec import load_spec

    loaded = apply_overrides(load_spec(ROOT / spec), Overrides(batch=batch, lr=lr))
    return build_graph(loaded)


def make_data(graph, count: int, seed: int = 0) -> dict:
    from netc.runtime.gradcheck import random_batch

    arrays = random_batch(graph, count, seed)
    return {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in arrays.items()}


class NetcRunner:
    def __init__(self, graph, data):
        from netc.runtime.model import Model

        self.model = Model(graph, tier="fused")
        self.prepared = self.model.prepare(data)
        self.order = np.arange(self.prepared["__count__"], dtype=np.int64)
        self.model.warm_up()

    def epoch(self) -> None:
        self.model.train_epoch(self.prepared, self.order)


class TorchRunner:
    def __init__(self, graph, data, weights, compiled: bool):
        import torch

        from benchmarks.torch_model import GraphModule, loss_function, optimizer_for

        self.torch = torch
        module = GraphModule(graph)
        if weights is not None:  # the same start as netc
            module.load_netc_weights(weights)
        self.module = torch.compile(module) if compiled else module
        self.loss = loss_function(graph)
        self.optimizer = optimizer_for(graph, module.parameters())
        self.batch = graph.spec.train.batch
        self.inputs = {k: torch.from_numpy(v) for k, v in data.items() if v.dtype.kind == "f"}
        label = graph.spec.loss.target
        self.target = torch.from_numpy(data[label])
        self.count = len(self.target)
        self.epoch()  # warm up (and compile)

    def epoch(self) -> None:
        for start in range(0, self.count, self.batch):
            stop = start + self.batch
            self.optimizer.zero_grad(set_to_none=True)
            out = self.module(**{k: v[start:stop] for k, v in self.inputs.items()})
            self.loss(out, self.target[start:stop]).backward()
            self.optimizer.step()


def _time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


MIN_SAMPLE_SECONDS = 0.2  # each timing covers at least this long (seed-mlp's epoch is ~3 ms)
# ... and each timing beside busy processes this long: over 0.2 s a single thread's rate there moved 2.2x
# within a run (seed-mlp 3.3-7.2 M steps/s, and its slowdown per round 0.80-2.24x), as the scheduler
# placed it for a few of its ~3 ms slices; over 1 s, 1.10-1.43x (benchmarks/RESULTS.md, twenty-third session)
LOADED_SAMPLE_SECONDS = 1.0


def _time(fn, seconds: float = MIN_SAMPLE_SECONDS) -> float:
    """Seconds per call of `fn`, called as often as fits in `seconds` (once when a call takes
    longer): a single 3 ms epoch right after another framework's moved 0.8-4.5 M steps/s within one
    run, as whatever the scheduler did in those milliseconds counted whole."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / calls


def run_workload(w: Workload, rounds: int, peers: set[str], contended: bool) -> dict:
    graph = load_graph(w.spec, w.batch, w.lr)
    data = make_data(graph, w.samples)
    netc = NetcRunner(graph, data)
    runners = {"netc": netc}
    try:
        for name in PEERS:
            if name in peers:
                try:
                    runners[name] = PeerProcess(name, WORKLOADS.index(w), netc.model.get_weights())
                except Exception as exc:  # report, keep the rest of the suite
                    print(f"{name} failed on {w.name}: {exc}", file=sys.stderr)
        if contended:
            times, loaded = alternate_quiet_and_loaded(runners, rounds)
        else:
            times = alternate(runners, rounds)
    finally:
        for runner in runners.values():
            if isinstance(runner, PeerProcess):
                runner.close()
    units = w.samples / w.batch if w.per_step else w.samples
    result = {"workload": w.name, "unit": "steps/s" if w.per_step else "samples/s",
              "rates": {name: units / float(np.median(t)) for name, t in times.items()},
              "spreads": {name: [units / max(t), units / min(t)] for name, t in times.items()},
              "flops_per_unit": 6 * graph.macs * (w.batch if w.per_step else 1)}
    if contended:
        result["slowdowns"] = {name: float(np.median(loaded[name]) / np.median(times[name])) for name in runners}
        result["loaded_spreads"] = {name: [units / max(t), units / min(t)] for name, t in loaded.items()}
    return result


def _torch_runner(graph, data, weights, compiled: bool):
    return TorchRunner(graph, data, weights, compiled)


def _jax_runner(graph, data, weights, variant: str):
    from benchmarks.jax_model import JaxRunner

    return JaxRunner(graph, data, weights, variant)


PEERS = {"torch": (_torch_runner, {"compiled": False}), "torch.compile": (_torch_runner, {"compiled": True}),
         "jax.jit": (_jax_runner, {"variant": "jit"}), "jax.scan": (_jax_runner, {"variant": "scan"})}


class PeerProcess:
    """A peer framework in a process of its own, which times its own epochs when asked. In netc's
    process a peer would share its OpenMP runtime: PyTorch's bundled libgomp has the soname of the
    one Numba loads, so the dynamic linker loads one of them for both, configured by whichever came
    first (netc's, by the time PyTorch's first epoch ran: until the twelfth session PyTorch's OpenMP
    threads slept between parallel regions as netc asked of its own, and its LSTM ran 2.9 k samples/s
    instead of 10.9 k; RESULTS.md). Alone, each framework's threads behave as its users see them."""

    def __init__(self, name: str, workload: int, weights: dict):
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # nothing of this process's libraries inherited
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve_peer, args=(child, name, workload, weights), daemon=True)
        self.process.start()
        child.close()
        self._reply()  # built and warmed up

    def _reply(self):
        while not self.connection.poll(1.0):  # a dead process's pipe may stay open (a child of its own holds it)
            if not self.process.is_alive():
                raise RuntimeError(f"its process ended (exit code {self.process.exitcode})")
        try:
            status, value = self.connection.recv()
        except EOFError:
            self.process.join(5)
            raise RuntimeError(f"its process ended (exit code {self.process.exitcode})") from None
        if status == "error":
            raise RuntimeError(value)
        return value

    def _ask(self, command: str):
        try:
            self.connection.send(command)
        except OSError:  # its process has ended: _reply says so
            pass
        return self._reply()

    def epoch(self) -> None:
        self._ask(("epoch", None))

    def timed(self, seconds: float = MIN_SAMPLE_SECONDS) -> float:
        """Seconds per epoch, timed in the peer's process over `seconds` (as _time does)."""
        return self._ask(("time", seconds))

    def close(self) -> None:
        if self.process.is_alive():
            self.connection.send(("stop", None))
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()


def _serve_peer(connection, name: str, workload: int, weights: dict) -> None:
    """A peer's process: build the runner (the workload's graph and data, netc's initial weights),
    then run or time epochs on request until told to stop."""
    try:
        w = WORKLOADS[workload]
        graph = load_graph(w.spec, w.batch, w.lr)
        make, options = PEERS[name]
        runner = make(graph, make_data(graph, w.samples), weights, **options)
    except Exception as exc:
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    connection.send(("ready", None))
    while (command := connection.recv())[0] != "stop":
        try:
            connection.send(("ok", _time(runner.epoch, command[1]) if command[0] == "time" else runner.epoch()))
        except Exception as exc:
            connection.send(("error", f"{type(exc).__name__}: {exc}"))


def _timed(runner, seconds: float = MIN_SAMPLE_SECONDS) -> float:
    """Seconds per epoch: a peer's process times its own (no pipe in the timing)."""
    return runner.timed(seconds) if isinstance(runner, PeerProcess) else _time(runner.epoch, seconds)


SETTLE_SECONDS = 0.5  # between one timing and the next (PyTorch's threads spin ~0.2 s after its epochs)


def alternate(runners: dict, rounds: int) -> dict[str, list[float]]:
    """Epoch times per framework, one epoch of each in turn per round, so that drifts in the
    machine's speed hit every framework alike. Each timing starts SETTLE_SECONDS after the last:
    the previous framework's threads have stopped spinning, and netc's load watcher (netc.cpuload),
    which counts a peer's process as another process, sees the machine idle again (without the
    pause netc timed LeNet-5 at 61 k samples/s after PyTorch's epochs and 88 k alone; PyTorch's OpenMP
    threads spin for ~0.2 s after its epochs, 1.3-2 cores of another process to netc's watcher)."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            time.sleep(SETTLE_SECONDS)
            times[name].append(_timed(runner))
    return times


LOADED_WARMUP = 6  # epochs of each framework beside the busy processes before the timed rounds
LOAD_SETTLE_SECONDS = 1.0  # after the busy processes resume, before the loaded epochs
LOAD_WARM_SECONDS = 2.0  # of untimed loaded epochs of a framework before its loaded timing


def alternate_quiet_and_loaded(runners: dict, rounds: int) -> tuple[dict, dict]:
    """Epoch times per framework alone and beside one busy process per core, every framework's of each
    kind in every round (the busy processes stopped with SIGSTOP while the quiet epochs run): a drift in
    the machine's speed over the run, which moved a slowdown measured from two separate blocks of
    rounds by +-30% (LeNet-5 1.64-2.49x), hits both sides of each ratio alike. A training run makes
    many calls; the first LOADED_WARMUP epochs beside the busy processes are not timed. A framework's
    first second or two of epochs beside busy processes, after it sat idle, ran 2-4x slower than the
    epochs after them, on netc's threads and OpenMP's alike (benchmarks/RESULTS.md, twentieth session):
    each loaded timing follows LOAD_WARM_SECONDS of untimed loaded epochs, so that it measures training
    on a machine that stays busy, as a laptop's or a CI runner's does. A loaded timing covers
    LOADED_SAMPLE_SECONDS, a quiet one MIN_SAMPLE_SECONDS."""
    quiet: dict[str, list[float]] = {name: [] for name in runners}
    loaded: dict[str, list[float]] = {name: [] for name in runners}
    with busy_processes(cores()) as busy:
        time.sleep(LOAD_SETTLE_SECONDS)
        for runner in runners.values():  # untimed: the steady state is timed (netc's thread choice is
            for _ in range(LOADED_WARMUP):  # made in its first calls beside busy processes, netc.cpuload)
                runner.epoch()
        for _ in range(rounds):
            busy.pause()
            for name, runner in runners.items():
                time.sleep(SETTLE_SECONDS)  # the last framework's threads stopped spinning
                quiet[name].append(_timed(runner))
            busy.resume()
            time.sleep(LOAD_SETTLE_SECONDS)
            for name, runner in runners.items():
                warm = time.perf_counter() + LOAD_WARM_SECONDS
                runner.epoch()
                while time.perf_counter() < warm:
                    runner.epoch()
                loaded[name].append(_timed(runner, LOADED_SAMPLE_SECONDS))
    return quiet, loaded


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextmanager
def busy_processes(count: int):
    """`count` CPU-bound processes (a Python busy loop each) beside the timed run: a laptop or CI
    runner that is never idle."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5)  # let them start spinning
        yield _Busy(procs)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


class _Busy:
    """The busy processes, paused (SIGSTOP: they take no CPU) or running."""

    def __init__(self, procs):
        self.procs = procs

    def pause(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGSTOP)
        time.sleep(SETTLE_SECONDS)  # as after resume: the machine seen idle (netc.cpuload) before the timing starts

    def resume(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGCONT)
        time.sleep(SETTLE_SECONDS)  # running on every core, and seen to be (netc.cpuload), before the timing starts


def sgemm_rates(size: int = 1024, repeats: int = 10) -> dict[int, float]:
    """GFLOP/s of a square float32 GEMM through the OpenBLAS netc calls (SciPy's), on one core and
    on all of them: the best of `repeats`, what the hardware allows a training step's GEMMs."""
    from scipy.linalg.blas import sgemm
    from threadpoolctl import threadpool_limits

    from netc.jit import load_cython_blas

    load_cython_blas()
    a = np.asfortranarray(np.random.default_rng(0).random((size, size), dtype=np.float32))
    rates = {}
    for threads in sorted({1, cores()}):
        with threadpool_limits(threads, user_api="blas"):
            sgemm(1.0, a, a)
            best = min(_time_once(lambda: sgemm(1.0, a, a)) for _ in range(repeats))
        rates[threads] = 2 * size**3 / best / 1e9
    return rates


# ------------------------------------------------------------------ start-up and memory (subprocesses)

_STARTUP = """
import sys
sys.path.insert(0, {root!r})
import numpy as np
from benchmarks.run import WORKLOADS, load_graph, make_data
from netc.runtime.model import Model
w = WORKLOADS[{index}]
graph = load_graph(w.spec, w.batch, w.lr)
model = Model(graph, tier="fused")
model.warm_up()
prepared = model.prepare(make_data(graph, w.batch))
model.train_epoch(prepared, np.arange(w.batch))
print("first-step-done")
"""


def startup_seconds(index: int, env: dict) -> float:
    """Wall time from process start to the first training step done: imports, spec, graph,
    plan (compiled, or loaded from the cache), arenas, one step. Data loading is not counted."""
    code = _STARTUP.format(root=str(ROOT), index=index)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def cold_and_warm(index: int) -> tuple[float, float]:
    """Cold: empty netc and Numba caches (every kernel and the plan compiled). Warm: best of 3 after."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NETC_CACHE_DIR=cache, NUMBA_CACHE_DIR=cache)
        cold = startup_seconds(index, env)
        warm = min(startup_seconds(index, env) for _ in range(3))
    return cold, warm


_MEMORY = """
import sys, json
sys.path.insert(0, {root!r})
from benchmarks.run import WORKLOADS, load_graph, make_data
w = WORKLOADS[{index}]
graph = load_graph(w.spec, w.batch, w.lr)
data = make_data(graph, w.samples)
if {framework!r} == "torch":
    from benchmarks.run import TorchRunner
    runner = TorchRunner(graph, data, None, compiled=False)  # torch's own init: no netc in this process
else:
    from benchmarks.run import NetcRunner
    runner = NetcRunner(graph, data)
runner.epoch()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across execve, so a child would report its parent's peak
peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps(peak_kib))
"""


def peak_memory_mib(index: int, framework: str) -> float:
    """Peak resident memory of a process that trains one workload with one framework only."""
    code = _MEMORY.format(root=str(ROOT), index=index, framework=framework)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1]) / 1024


def cpu_text() -> str:
    """The CPU's model name and widest vector extension (figures move with both)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model}, {vector}"


_OPENBLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def blas_pin_text() -> str | None:
    """A line saying which GEMM kernels OpenBLAS would run here if the environment did not pin them.

    Some machines set OPENBLAS_CORETYPE (older OpenBLAS builds failed on their CPUs); on an AVX-512
    CPU pinned to Haswell, OpenBLAS runs its AVX2 kernels at about half the hardware's GEMM rate,
    and netc's speed and the SGEMM rate printed here drop with them (PyTorch and JAX bring their
    own GEMMs). Benchmark with both variables unset in that command alone."""
    if not any(name in os.environ for name in _OPENBLAS_PINS):
        return None
    code = ("import numpy, scipy.linalg; from threadpoolctl import threadpool_info; "
            "print(' / '.join(sorted({i.get('architecture') for i in threadpool_info() if i.get('internal_api') == 'openblas'})))")
    env = {k: v for k, v in os.environ.items() if k not in _OPENBLAS_PINS}
    try:
        unpinned = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                  timeout=60, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        unpinned = "(could not tell)"
    pins = ", ".join(f"{name}={os.environ[name]}" for name in _OPENBLAS_PINS if name in os.environ)
    return (f"- the environment pins OpenBLAS ({pins}); unpinned, it runs {unpinned} kernels on this CPU: "
            "for the hardware's rate run `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run.py ...`")


def machine_text(frameworks: list[str]) -> str:
    import numba
    from threadpoolctl import threadpool_info

    import netc

    blas = {i.get("internal_api"): f"{i.get('version')} {i.get('architecture')} x{i.get('num_threads')}"
            for i in threadpool_info()}
    lines = [f"- machine: {cpu_text()}, {os.cpu_count()} cores, {platform.platform()}",
             f"- Python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__} "
             f"({numba.threading_layer()} threading layer, NETC_THREADS={os.environ.get('NETC_THREADS', 'unset')}), "
             f"netc {netc.__version__}",
             f"- BLAS: {blas}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
             f"netc BLAS threads: per plan, 1 or all cores for GEMMs of 50 M+ multiply-adds (NETC_BLAS_THREADS={os.environ.get('NETC_BLAS_THREADS', 'unset')})"]
    pin = blas_pin_text()
    if pin:
        lines.append(pin)
    if "torch" in frameworks:
        import torch

        lines.append(f"- PyTorch {torch.__version__}, {torch.get_num_threads()} threads")
    if any(f.startswith("jax") for f in frameworks):
        import jax

        lines.append(f"- JAX {jax.__version__} ({jax.default_backend()})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(KEYS), help="run these workloads only")
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per framework (alternating)")
    parser.add_argument("--torch-compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--no-torch", action="store_true", help="time netc only")
    parser.add_argument("--jax", action="store_true", help="also time JAX: a jitted step per batch, and a "
                        "whole epoch as one jitted lax.scan")
    parser.add_argument("--contended", action="store_true", help="time every framework again beside one "
                        "CPU-bound process per core, and report each one's slowdown")
    parser.add_argument("--no-startup", action="store_true", help="skip compile/start-up/memory measurements")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    peers = set()
    if not args.no_torch:
        if _installed("torch"):
            peers |= {"torch"} | ({"torch.compile"} if args.torch_compile else set())
        else:
            print("PyTorch is not installed: no PyTorch column (pip install torch==2.13.0)", file=sys.stderr)
    if args.jax:
        if _installed("jax"):
            peers |= {"jax.jit", "jax.scan"}
        else:
            print("JAX is not installed: no JAX column (pip install -e '.[jax]')", file=sys.stderr)
    chosen = [WORKLOADS[KEYS[k]] for k in args.only] if args.only else WORKLOADS
    sgemm = sgemm_rates()
    print(json.dumps({"sgemm_gflops": sgemm}), file=sys.stderr)
    results = []
    for w in chosen:
        before = sgemm_rates()[cores()]
        result = run_workload(w, args.rounds, peers, args.contended)
        # the machine's rate next to the workload's own timings: a shared VM's speed drifts within a run
        # (seed-cnn's fraction moved 59-82% across runs against the one reading at the start)
        result["sgemm_gflops"] = [before, sgemm_rates()[cores()]]
        if not args.no_startup:
            index = WORKLOADS.index(w)
            result["cold_compile_s"], result["warm_start_s"] = cold_and_warm(index)
            result["peak_mib"] = {"netc": peak_memory_mib(index, "netc")}
            if "torch" in peers:
                result["peak_mib"]["torch"] = peak_memory_mib(index, "torch")
        results.append(result)
        print(json.dumps(result), file=sys.stderr)
    bound = None
    if args.contended:  # what the scheduler allows, read in the same run (the VM's state moves it)
        from benchmarks.contention_bound import measure, render as render_bound

        bound = measure()
        print(json.dumps({"ideal_program": bound}), file=sys.stderr)
    print(render(results, sgemm, args))
    if bound:
        print(render_bound(bound))
    if args.json:
        args.json.write_text(json.dumps({"sgemm_gflops": sgemm, "workloads": results, "ideal_program": bound},
                                        indent=2))


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def render(results: list[dict], sgemm: dict[int, float], args) -> str:
    names = set().union(*(r["rates"] for r in results))
    frameworks = [f for f in ("netc", "torch", "torch.compile", "jax.jit", "jax.scan") if f in names]
    jax = [f for f in frameworks if f.startswith("jax")]
    peak = sgemm[max(sgemm)]
    head = ["workload", "unit"] + frameworks
    head += [f"netc ÷ {f}" for f in frameworks if f.startswith("torch")] + (["netc ÷ JAX (best)"] if jax else [])
    head += ["% of SGEMM (read beside it): " + " / ".join(f for f in frameworks if f != "torch.compile")]
    if args.contended:
        head += ["slowdown under load: " + " / ".join(frameworks)]
    if not args.no_startup:
        head += ["netc cold compile", "netc warm start", "peak RSS netc / torch"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        rates = r["rates"]
        cells = [r["workload"], r["unit"]] + [f"{rates[f]:,.0f}" if f in rates else "-" for f in frameworks]
        cells += [f"**{rates['netc'] / rates[f]:.2f}×**" if f in rates else "-"
                  for f in frameworks if f.startswith("torch")]
        if jax:
            best = max((f for f in jax if f in rates), key=rates.get, default=None)
            cells.append(f"**{rates['netc'] / rates[best]:.2f}×** ({best[4:]})" if best else "-")
        near = float(np.mean(r["sgemm_gflops"])) if "sgemm_gflops" in r else peak  # read before and after it
        cells.append(" / ".join(f"{100 * rates[f] * r['flops_per_unit'] / (near * 1e9):.1f}%" if f in rates else "-"
                                for f in frameworks if f != "torch.compile"))
        if args.contended:
            cells.append(" / ".join(f"{r['slowdowns'][f]:.2f}×" if f in r["slowdowns"] else "-" for f in frameworks))
        if not args.no_startup:
            peak_mib = r["peak_mib"]
            cells += [f"{r['cold_compile_s']:.1f} s", f"{r['warm_start_s']:.2f} s",
                      f"{peak_mib['netc']:.0f} / {peak_mib.get('torch', float('nan')):.0f} MiB"]
        rows.append("| " + " | ".join(cells) + " |")
    rates_text = ", ".join(f"{threads} core{'s' if threads > 1 else ''} {rate:.0f}" for threads, rate in sorted(sgemm.items()))
    beside = [rate for r in results for rate in r.get("sgemm_gflops", [])]
    beside_text = (f"; on all cores before and after each workload {min(beside):.0f}-{max(beside):.0f}, each workload's "
                   "% of SGEMM against the mean of its two readings") if beside else ""
    return ("\n".join(rows) + "\n\n" + machine_text(frameworks)
            + f"\n- SGEMM 1024³ (GFLOP/s, best of 10): {rates_text} at the start{beside_text}"
            + f"\n- rounds: {args.rounds} (median)\n")


if __name__ == "__main__":
    main()
