"""How `netc validate` and `netc inspect` grow with the number of layers.

    .venv/bin/python benchmarks/spec_scale.py                       # 1k, 10k, 100k layers
    .venv/bin/python benchmarks/spec_scale.py --sizes 1000 10000 --repeat 5
    .venv/bin/python benchmarks/spec_scale.py --profile 10000       # where the time goes

Each size is a generated chain: input x [16], then linear(16) / relu alternating,
a last linear to 10 classes and a cross_entropy loss. Layers are unnamed, so
they take their default names (`linear0`, `relu1`, ...): a 100k chain is then
2 MB and ~400,000 YAML nodes, under the loader's limits (4 MiB, 500,000 nodes;
named layers would make ~600,000).

Two timings per command, each the median of `--repeat` runs:
- in-process: the functions the CLI command calls, output discarded (no
  interpreter start or imports);
- subprocess: `netc validate FILE` / `netc inspect FILE` as a user runs them,
  wall time including Python's start, stdout piped (not a terminal).
The per-layer columns make linear growth visible: they stay flat as N grows.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLASSES = 10


def chain_spec(layers: int, width: int = 16) -> str:
    """A valid spec of `layers` layers: linear/relu alternating, then a linear to the classes."""
    lines = [
        "netc: 1",
        f"name: chain_{layers}",
        "inputs:",
        f"  x: {{shape: [{width}]}}",
        f"  label: {{shape: [], dtype: int64, classes: {CLASSES}}}",
        "layers:",
    ]
    for i in range(layers - 1):
        lines.append(f"  - {{op: linear, out: {width}}}" if i % 2 == 0 else "  - {op: relu}")
    lines.append(f"  - {{op: linear, out: {CLASSES}}}")
    lines.append(f"loss: {{op: cross_entropy, input: linear{layers - 1}, target: label}}")
    lines.append("train: {batch: 32}")
    return "\n".join(lines) + "\n"


def chain_params(layers: int, width: int = 16) -> int:
    """Total params of `chain_spec(layers, width)`, for checking the inspect output."""
    hidden = layers // 2  # the linear layers among the first layers - 1 (every other one, from the first)
    return hidden * (width * width + width) + (width * CLASSES + CLASSES)


def run_validate(path: Path) -> None:
    """What `netc validate PATH` runs, output discarded."""
    from netc.cli.spec_commands import validate

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        validate([str(path)])


def run_inspect(path: Path) -> None:
    """What `netc inspect PATH` runs, output discarded (piped: the table is measured to full width)."""
    from netc.cli.spec_commands import inspect

    with contextlib.redirect_stdout(io.StringIO()):
        inspect(path)


def netc_command() -> list[str]:
    exe = Path(sys.executable).with_name("netc")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "netc.cli"]


def time_call(func, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_subprocess(args: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return statistics.median(times)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def check_once(path: Path, layers: int) -> None:
    """The chain is valid and inspect counts what it should, before anything is timed."""
    from netc import report
    from netc.graph import build_graph
    from netc.spec import load_spec

    result = report.validate_file(path)
    if not result.valid:
        raise SystemExit("\n".join(d.format() for d in result.diagnostics[:5]))
    summary = report.summarize(build_graph(load_spec(path), check_memory_for_batch=False))
    assert len(summary.layers) == layers, (len(summary.layers), layers)
    assert summary.total_params == chain_params(layers), (summary.total_params, chain_params(layers))


def benchmark(sizes: list[int], repeat: int, subprocess_runs: bool) -> None:
    print(f"CPU: {cpu_model()} ({platform.machine()}), Python {platform.python_version()}")
    print(f"medians of {repeat} runs; ms/layer = seconds * 1000 / layers\n")
    header = f"{'layers':>8}  {'validate s':>10}  {'inspect s':>10}  {'both s':>8}  {'ms/layer':>8}"
    if subprocess_runs:
        header += f"  {'cli validate s':>14}  {'cli inspect s':>13}  {'cli both s':>10}  {'ms/layer':>8}"
    print(header)
    print("-" * len(header))
    folder = Path(tempfile.mkdtemp(prefix="netc-scale-"))
    try:
        for layers in sizes:
            path = folder / f"chain_{layers}.yaml"
            path.write_text(chain_spec(layers), encoding="utf-8")
            check_once(path, layers)
            validate_s = time_call(lambda: run_validate(path), repeat)
            inspect_s = time_call(lambda: run_inspect(path), repeat)
            both = validate_s + inspect_s
            line = (f"{layers:>8,}  {validate_s:>10.3f}  {inspect_s:>10.3f}  {both:>8.3f}"
                    f"  {both * 1000 / layers:>8.4f}")
            if subprocess_runs:
                cli_validate = time_subprocess(netc_command() + ["validate", str(path)], repeat)
                cli_inspect = time_subprocess(netc_command() + ["inspect", str(path)], repeat)
                cli_both = cli_validate + cli_inspect
                line += (f"  {cli_validate:>14.3f}  {cli_inspect:>13.3f}  {cli_both:>10.3f}"
                         f"  {cli_both * 1000 / layers:>8.4f}")
            print(line, flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def profile(layers: int, top: int) -> None:
    """cProfile of validate then inspect, in-process, sorted by own time."""
    folder = Path(tempfile.mkdtemp(prefix="netc-scale-"))
    try:
        path = folder / f"chain_{layers}.yaml"
        path.write_text(chain_spec(layers), encoding="utf-8")
        for name, func in (("validate", run_validate), ("inspect", run_inspect)):
            func(path)  # imports happen outside the profile
            profiler = cProfile.Profile()
            profiler.runcall(func, path)
            print(f"== {name}, {layers:,} layers")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(top)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000],
                        help="numbers of layers (default: 1000 10000 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing; the median is shown")
    parser.add_argument("--no-subprocess", action="store_true", help="only the in-process timings")
    parser.add_argument("--profile", type=int, metavar="LAYERS", help="print a cProfile of one size instead")
    parser.add_argument("--top", type=int, default=25, help="rows of the profile")
    args = parser.parse_args()
    if args.profile:
        profile(args.profile, args.top)
    else:
        benchmark(args.sizes, args.repeat, not args.no_subprocess)


if __name__ == "__main__":
    main()
