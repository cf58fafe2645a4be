"""`netc sweep` on this machine: trials per minute with 2 workers vs 1, and what a trial costs beyond its training.

    .venv/bin/python benchmarks/sweep.py                 # 16 trials of specs/digits-mlp.yaml, 1 then 2 workers
    .venv/bin/python benchmarks/sweep.py --trials 8 --workers 1 2

The sweep: digits-mlp as the spec has it (30 epochs, 1,437 training samples), its learning rate,
first-layer width and batch size drawn at random (seeded: both runs train the same 16 trials), no
base run, no pruning, on the embedded LocalCluster. Figures:

- trials/min, whole: 16 trials over the wall time of `Runner.run()` (cluster start, readying the
  workers, the trials, the pictures at the end);
- trials/min, trials: 16 trials from the first trial's submission to the last one's result;
- overhead per trial once warm: the client's wall time of a trial (submit to result) minus the
  worker's time for it (Trainer built and run), median over the trials that were not a worker's
  first (the first loads netc's kernels and the plan into the new process);
- the same trial as a plain `netc train` of its spec (a new process: start, imports, kernels
  loaded, training), and trained in this (warm) process by the Trainer: what the sweep's warm
  worker saves, and what it adds to the training itself.

Under load (other jobs on the cores) every figure moves; time it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "digits-mlp.yaml"

SWEEP = """netc-sweep: 1
name: bench_digits
spec: {spec}
metric: {{name: eval_accuracy}}
method: random
trials: {trials}
seed: 0
baseline: false
space:
  optimizer.lr: {{loguniform: [1.0e-4, 1.0e-2]}}
  layers[fc1].out: {{choice: [128, 256]}}
  train.batch: {{choice: [32, 64]}}
"""


def stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def run_sweep(folder: Path, trials: int, workers: int) -> dict:
    from netc.sweep.load import load_sweep
    from netc.sweep.runner import Options, Runner

    sweep = folder / f"sweep-{workers}.yaml"
    sweep.write_text(SWEEP.format(spec=SPEC, trials=trials))
    started = time.perf_counter()
    result = Runner(load_sweep(sweep), Options(out=folder / f"out-{workers}", workers=workers)).run()
    whole = time.perf_counter() - started
    records = [json.loads(line) for line in (result.folder / "trials.jsonl").read_text().splitlines()]
    assert len(records) == trials and all(r["status"] == "complete" for r in records), records
    first_submit = min(stamp(r["finished"]) - r["wall"] for r in records)
    last_result = max(stamp(r["finished"]) for r in records)
    firsts, warm = set(), []
    for record in sorted(records, key=lambda r: stamp(r["finished"]) - r["wall"]):
        if record["worker"] in firsts:
            warm.append(record)
        firsts.add(record["worker"])
    return {"workers": workers, "whole": whole, "trials_span": last_result - first_submit,
            "per_minute_whole": 60 * trials / whole, "per_minute_trials": 60 * trials / (last_result - first_submit),
            "overhead": statistics.median(r["wall"] - r["seconds"] for r in warm) if warm else float("nan"),
            "trial_seconds": statistics.median(r["seconds"] for r in warm) if warm else float("nan"),
            "records": records, "folder": result.folder}


def plain_train(spec: Path, rounds: int) -> float:
    """Median wall seconds of `netc train SPEC` in a new process (plan cached, kernels compiled)."""
    times = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as runs:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "netc.cli", "train", str(spec), "--run-dir", f"{runs}/run", "-q"],
                           check=True, capture_output=True, env={**os.environ, "NETC_BACKGROUND_COMPILE": "0"})
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def in_process(spec: Path, rounds: int) -> float:
    """Median seconds of Trainer(...) + run() for the spec in this process, once warm (first run dropped)."""
    from netc.runtime.train import Trainer
    from netc.spec import load_spec

    os.environ["NETC_BLAS_THREADS"] = "1"
    times = []
    for _ in range(rounds + 1):
        with tempfile.TemporaryDirectory() as runs:
            started = time.perf_counter()
            Trainer(load_spec(spec), run_dir=Path(runs) / "run", tier="auto").run()
            times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the plain netc train and in-process runs")
    args = parser.parse_args()
    os.environ.setdefault("NETC_BACKGROUND_COMPILE", "0")
    with tempfile.TemporaryDirectory(prefix="netc-bench-sweep-") as tmp:
        folder = Path(tmp)
        runs = [run_sweep(folder, args.trials, workers) for workers in args.workers]
        # one trial's spec (the median of the first run's trials whose worker had run their plan before),
        # trained plainly and in this process
        warm = [r for r in runs[0]["records"] if not r["new_plan"]] or runs[0]["records"]
        trial = sorted(warm, key=lambda r: r["seconds"])[len(warm) // 2]
        spec = runs[0]["folder"] / trial["run_dir"] / "spec.yaml"
        kept = folder / "trial-spec.yaml"
        kept.write_text(spec.read_text())
        plain = plain_train(kept, args.rounds)
        inside = in_process(kept, args.rounds)
        sweep_trial = next(r for r in runs[0]["records"] if r["trial"] == trial["trial"])
    print(f"`netc sweep` of {args.trials} random trials of specs/digits-mlp.yaml (30 epochs each), "
          f"{platform.machine()}, {os.cpu_count()} cores, {datetime.now():%Y-%m-%d}\n")
    print("| workers | whole sweep | trials/min (whole) | trials only | trials/min (trials) | overhead/trial (warm) | "
          "worker time/trial (warm, median) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        print(f"| {run['workers']} | {run['whole']:.1f} s | {run['per_minute_whole']:.1f} | "
              f"{run['trials_span']:.1f} s | {run['per_minute_trials']:.1f} | {run['overhead'] * 1000:.0f} ms | "
              f"{run['trial_seconds']:.2f} s |")
    if len(runs) >= 2:
        base, other = runs[0], runs[-1]
        print(f"\n{other['workers']} workers vs {base['workers']}: "
              f"{other['per_minute_whole'] / base['per_minute_whole']:.2f}x trials/min (whole), "
              f"{other['per_minute_trials'] / base['per_minute_trials']:.2f}x (trials only); target >= 1.7x")
    from netc.sweep.space import values_text

    print(f"\ntrial {trial['trial']} ({values_text(trial['params'])}):")
    print(f"- plain `netc train` of its spec (new process): {plain:.2f} s")
    print(f"- the Trainer in a warm process: {inside:.2f} s")
    print(f"- in the sweep ({base['workers']} worker): {sweep_trial['wall']:.2f} s submit to result, "
          f"{sweep_trial['seconds']:.2f} s on the worker")
    print(f"- overhead per trial over plain `netc train`: {sweep_trial['wall'] - plain:+.2f} s (target <= 0.5 s); "
          f"over the warm Trainer: {sweep_trial['wall'] - inside:+.2f} s")


if __name__ == "__main__":
    main()
