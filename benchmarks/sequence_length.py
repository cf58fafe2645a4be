"""Compile time against sequence length: an LSTM spec at T = 8, 64 and 512 steps.

    .venv/bin/python benchmarks/sequence_length.py
    .venv/bin/python benchmarks/sequence_length.py --steps 8 64 512 4096
    .venv/bin/python benchmarks/sequence_length.py --cell    # the LSTM cell written as a block, under `scan`

A recurrent layer is one kernel pair whose loop runs over the time steps (netc.kernels.recurrent),
so the plan's source and its compile should not grow with T. For each T, in a fresh process with
the kernels already compiled (the first T compiles them, as a user's first run would; that row is
apart): the fused epoch loop compiled from an empty plan cache, the generated source's size, and
the time of one training step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SPEC = """netc: 1
name: lstm_t{steps}
inputs:
  x: {{shape: [{steps}, 16]}}
  label: {{shape: [], dtype: int64, classes: 10}}
layers:
  - {{name: lstm, op: lstm, hidden: 64}}
  - {{name: fc, op: linear, out: 10}}
loss: {{op: cross_entropy, input: fc, target: label}}
optimizer: {{type: adam, lr: 0.001}}
train: {{batch: 16}}
"""



def cell_spec(steps: int) -> str:
    """The same network with specs/digits-lstm-cell.yaml's block as its LSTM: a scan's loop."""
    import yaml

    spec = yaml.safe_load((ROOT / "specs" / "digits-lstm-cell.yaml").read_text())
    spec.update(name=f"lstm_cell_t{steps}", inputs={"x": {"shape": [steps, 16]},
                                                    "label": {"shape": [], "dtype": "int64", "classes": 10}},
                layers=[{"name": "lstm", "op": "scan", "block": "lstm_cell", "in": "x"},
                        {"name": "fc", "op": "linear", "out": 10}],
                optimizer={"type": "adam", "lr": 0.001}, train={"batch": 16})
    spec.pop("data")
    return yaml.safe_dump(spec, sort_keys=False)


# one fresh process per measurement: compile the fused loop of the spec, then time a few epochs
MEASURE = """
import json, sys, time
import numpy as np
from netc.compiler import FUSED
from netc.graph import build_graph
from netc.runtime.model import Model
from netc.spec import load_spec_text
loaded = load_spec_text(sys.argv[1], "lstm.yaml")
model = Model(build_graph(loaded), tier="fused")
started = time.perf_counter()
model.warm_up()
compile_s = time.perf_counter() - started
steps = loaded.spec.inputs["x"].shape[0]
rng = np.random.default_rng(0)
data = {"x": rng.normal(size=(64, steps, 16)).astype("float32"), "label": rng.integers(0, 10, 64)}
prepared = model.prepare(data)
times = []
for epoch in range(3):
    started = time.perf_counter()
    model.train_epoch(prepared, np.arange(64), seed=epoch)
    times.append((time.perf_counter() - started) / 4)  # 4 batches of 16
print(json.dumps({"compile_s": compile_s, "source_bytes": len(model.plan.sources[FUSED]),
                  "step_ms": 1000 * sorted(times)[1]}))
"""


def measure(steps: int, cache: Path, cell: bool) -> dict:
    env = {**os.environ, "NETC_CACHE_DIR": str(cache), "NETC_BACKGROUND_COMPILE": "0"}
    text = cell_spec(steps) if cell else SPEC.format(steps=steps)
    done = subprocess.run([sys.executable, "-c", MEASURE, text], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise SystemExit(f"T={steps} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 64, 512])
    parser.add_argument("--cell", action="store_true", help="the LSTM cell as a block under `scan`")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        first = measure(args.steps[0], cache, args.cell)  # compiles the kernels too (once per machine)
        print("| T | fused loop compile, s | plan source, bytes | training step, ms |")
        print("|---|---|---|---|")
        print(f"| {args.steps[0]} (empty cache: kernels too) | {first['compile_s']:.2f} | {first['source_bytes']:,} | "
              f"{first['step_ms']:.2f} |")
        for steps in args.steps:
            # the plan compiles again (its source and machine code removed); the kernels stay compiled
            for folder in [cache / "plans", *(cache / "numba").glob("*/plans-*")]:
                shutil.rmtree(folder, ignore_errors=True)
            row = measure(steps, cache, args.cell)
            print(f"| {steps} | {row['compile_s']:.2f} | {row['source_bytes']:,} | {row['step_ms']:.2f} |")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    kind = "the LSTM cell block under scan" if args.cell else "the lstm layer"
    print(f"\nmachine: {cpu}, {os.cpu_count()} cores; {kind}, hidden 64, 16 features, batch 16")


if __name__ == "__main__":
    main()
