"""Where a cold compile goes: seconds of Numba compilation per function (exclusive of the
functions it compiles in turn), for one spec with empty netc and Numba caches.

    .venv/bin/python benchmarks/compile_profile.py benchmarks/specs/lenet5.yaml
    .venv/bin/python benchmarks/compile_profile.py specs/digits-cnn.yaml --first-run

`--first-run` compiles, in this one process, the kernels a spec's first run on an empty cache has its
two workers compile (the Python tier's, parallel kernels as their serial twins) instead of the
training loop, and prints their CPU seconds.

Runs itself in a child process whose caches point at a fresh temporary folder (Numba reads
NUMBA_CACHE_DIR when it is imported), compiles the training loop (`Model.warm_up`) and prints
the table. Numba's own "numba:compile" events give the timings.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def profile(spec: str, top: int, first_run: bool) -> None:
    start = time.perf_counter()
    from numba.core import event

    exclusive: dict[str, float] = collections.defaultdict(float)
    compiles: collections.Counter = collections.Counter()
    stack: list[tuple[str, float]] = []

    class Listener(event.Listener):
        def on_start(self, ev):
            name = ev.data["dispatcher"].py_func.__qualname__
            compiles[name] += 1
            stack.append((name, time.perf_counter()))

        def on_end(self, ev):
            name, began = stack.pop()
            spent = time.perf_counter() - began
            exclusive[name] += spent
            if stack:  # charge the caller only for its own work
                exclusive[stack[-1][0]] -= spent

    event.register("numba:compile", Listener())
    import netc
    from netc.runtime.model import Model

    if first_run:
        from netc.compiler import kernel_library

        model = Model(netc.load(spec).graph, tier="auto", background=True)
        entries, _ = kernel_library.serial_twins(model.kernels_called())
        built, cpu = time.perf_counter(), time.process_time()
        kernel_library.compile_entries(entries)
        print(f"{spec}: imports and plan {built - start:.1f} s, its first run's {len(entries)} kernels "
              f"{time.perf_counter() - built:.2f} s ({time.process_time() - cpu:.2f} s of CPU)")
    else:
        model = Model(netc.load(spec).graph, tier="fused")
        built = time.perf_counter()
        model.warm_up()
        done = time.perf_counter()
        print(f"{spec}: imports and plan {built - start:.1f} s, Numba compile of the training loop {done - built:.1f} s")
    print(f"{'seconds':>8}  {'compiles':>8}  function")
    for name, seconds in sorted(exclusive.items(), key=lambda item: -item[1])[:top]:
        print(f"{seconds:8.2f}  {compiles[name]:8d}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec")
    parser.add_argument("--top", type=int, default=15, help="functions to list")
    parser.add_argument("--first-run", action="store_true", help="the kernels of a first run, not the training loop")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        profile(args.spec, args.top, args.first_run)
        return
    with tempfile.TemporaryDirectory() as empty:
        env = dict(os.environ, NETC_CACHE_DIR=empty, NUMBA_CACHE_DIR=empty)
        root = Path(__file__).resolve().parent.parent
        subprocess.run([sys.executable, __file__, args.spec, "--top", str(args.top), "--child"]
                       + ["--first-run"] * args.first_run, env=env, cwd=root, check=True)


if __name__ == "__main__":
    main()
