"""netc's thread policy beside busy processes, epoch by epoch: each round runs a few epochs alone
and a few beside one CPU-bound process per core (stopped with SIGSTOP while alone), with the
threads netc chooses (netc.cpuload.ThreadChoice) or with a count forced, and prints the median
samples/s of each phase per thread count that ran.

    .venv/bin/python benchmarks/threads_under_load.py lenet5 lstm seed-cnn
    .venv/bin/python benchmarks/threads_under_load.py lenet5 --threads 1   # one thread throughout
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import KEYS, WORKLOADS, NetcRunner, busy_processes, cores, load_graph, make_data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="+", choices=sorted(KEYS))
    parser.add_argument("--threads", type=int, default=None, help="force this many threads (default: netc's choice)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per phase and round")
    args = parser.parse_args()
    from netc.cpuload import ThreadChoice

    used: list[int] = []
    choose = ThreadChoice.threads

    def threads(self, others):
        chosen = args.threads or choose(self, others)
        used.append(chosen)
        return chosen

    ThreadChoice.threads = threads
    for key in args.workloads:
        w = WORKLOADS[KEYS[key]]
        graph = load_graph(w.spec, w.batch, w.lr)
        runner = NetcRunner(graph, make_data(graph, w.samples))
        used.clear()
        rates: dict[str, dict[int, list[float]]] = {"alone": {}, "loaded": {}}
        with busy_processes(cores()) as busy:
            for _ in range(args.rounds):
                for phase in rates:
                    busy.pause() if phase == "alone" else busy.resume()
                    for _ in range(args.epochs):
                        start = time.perf_counter()
                        runner.epoch()
                        rate = w.samples / (time.perf_counter() - start)
                        threads_used = used[-1] if used else 1  # a plan without parallel regions runs on one
                        rates[phase].setdefault(threads_used, []).append(rate)
        alone = np.median([r for values in rates["alone"].values() for r in values])
        loaded = np.median([r for values in rates["loaded"].values() for r in values])
        by_threads = {phase: ", ".join(f"{t} thread{'s' if t > 1 else ''}: {np.median(v):,.0f} ({len(v)} epochs)"
                                       for t, v in sorted(per.items())) for phase, per in rates.items()}
        print(f"{w.name}: alone {alone:,.0f} samples/s ({by_threads['alone']}); beside {cores()} busy processes "
              f"{loaded:,.0f} ({by_threads['loaded']}); slowdown {alone / loaded:.2f}x", flush=True)


if __name__ == "__main__":
    main()
