"""How long a user waits before training: wall seconds from a fresh process, with empty or warm caches.

    .venv/bin/python benchmarks/startup.py              # every row, medians of 3 (cold: 2) rounds
    .venv/bin/python benchmarks/startup.py --rounds 5

Rows (the start-up issue's table):

- empty caches: `netc train specs/digits-cnn.yaml --epochs 1` with a new NETC_CACHE_DIR, so netc's
  kernels are compiled too (once per machine);
- kernels warm, a spec never compiled before, 1 epoch: digits-cnn with other widths (`netc train`),
  and LeNet-5, seed-cnn and siamese (a DAG with a shared layer) with other widths through the
  Python API on random data (their data sets are files this machine may not have);
- the same spec again (its plan cached: the fused loop, compiled by the background process);
- the same spec with other betas / weight decay (hyperparameters are data: no compile);
- the new-spec row and the last two again through a netc server (netc.server: the `netc` script hands the command to a
  process forked from a loaded netc; started once before these rows, as a first command would).

Each "new spec" round uses widths no earlier round used, so nothing is cached for it. After every
command the script waits for the background compile it started (netc.compiler.background), so
rounds do not overlap. Time it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
NETC = [sys.executable, "-m", "netc.cli"]  # the command in a process of its own
# the `netc` script, which hands the command to a netc server when one is up (netc.client)
CLIENT = [str(Path(sys.executable).parent / "netc")] if (Path(sys.executable).parent / "netc").exists() else \
    [sys.executable, "-m", "netc"]

# the API rows: build the model of a spec file and train one epoch of random data, from process start
API = """
import sys, time
start = float(sys.argv[2])
import numpy as np
from netc.graph import build_graph
from netc.runtime.model import Model
from netc.spec import load_spec
loaded = load_spec(sys.argv[1])
model = Model(build_graph(loaded), tier="auto", background=True)
rng = np.random.default_rng(0)
count = 4 * loaded.spec.train.batch
data = {k: rng.integers(0, i.classes, count) if i.classes else rng.normal(size=(count, *i.shape)).astype("float32")
        for k, i in loaded.spec.inputs.items()}
model.train_epoch(model.prepare(data), np.arange(count), seed=0)
print(time.time() - start)
"""


def wait_for_background(cache: Path, timeout: float = 300) -> None:
    """Until no `.types` file lacks its `.fused` marker, or the compile died (then nothing more comes)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        pending = [t for t in (cache / "plans").glob("*.types") if not t.with_suffix(".fused").exists()]
        alive = subprocess.run(["pgrep", "-f", "netc.compiler.background"], capture_output=True).returncode == 0
        if not pending or not alive:
            return
        time.sleep(0.2)


def timed(command: list[str], cache: Path, **extra_env: str) -> float:
    env = {**os.environ, "NETC_SERVER": "0", "NETC_CACHE_DIR": str(cache), **extra_env}
    started = time.time()
    done = subprocess.run(command + ([str(started)] if command[1] == "-c" else []), env=env, capture_output=True,
                          text=True, cwd=ROOT)
    wall = time.time() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    wait_for_background(cache)
    return float(done.stdout.strip().splitlines()[-1]) if command[1] == "-c" else wall


def variant(spec: str, folder: Path, tag: str, replace: dict[str, str]) -> Path:
    text = (SPECS / spec).read_text()
    for old, new in replace.items():
        assert old in text, (spec, old)
        text = text.replace(old, new)
    text = text.replace("path: ../data", f"path: {ROOT / 'data'}")  # data paths stay valid in another folder
    path = folder / f"{Path(spec).stem}-{tag}.yaml"
    path.write_text(text)
    return path


def train(spec: Path, run: Path, command: list[str] = NETC) -> list[str]:
    return command + ["train", str(spec), "--epochs", "1", "--run-dir", str(run), "--quiet"]


def start_server(cache: Path, folder: Path) -> dict[str, str]:
    """Start a netc server for `cache` (a first command does) and wait until it answers; the env that uses it."""
    from netc import client

    env = {"NETC_SERVER": "1", "NETC_SERVER_DIR": str(folder)}
    subprocess.run(CLIENT + ["validate", str(SPECS / "xor.yaml")],
                   env={**os.environ, "NETC_CACHE_DIR": str(cache), **env}, check=True, capture_output=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        for path in folder.glob("*.sock"):
            sock = client._connect(str(path))
            if sock is not None:
                sock.close()
                return env
        time.sleep(0.1)
    raise SystemExit("the netc server did not start: see its log in " + str(folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        digits = SPECS / "digits-cnn.yaml"
        for r in range(max(2, args.rounds - 1)):  # cold: a new cache each round
            cache = tmp / f"cold{r}"
            rows.setdefault("empty caches: netc train digits-cnn --epochs 1", []).append(
                timed(train(digits, tmp / f"run-cold{r}"), cache))
        warm = tmp / "cold0"  # kernels compiled by the first cold round
        for r in range(args.rounds):
            w = 17 + r
            spec = variant("digits-cnn.yaml", tmp, f"w{w}", {"filters: 16": f"filters: {w}", "out: 64": f"out: {w * 4}"})
            rows.setdefault("kernels warm, new spec: digits-cnn, other widths (netc train)", []).append(
                timed(train(spec, tmp / f"run-w{w}"), warm))
            rows.setdefault("same spec again, plan cached (netc train)", []).append(
                timed(train(spec, tmp / f"run-w{w}-again"), warm))
            other = variant("digits-cnn.yaml", tmp, f"w{w}-betas",
                            {"filters: 16": f"filters: {w}", "out: 64": f"out: {w * 4}",
                             "optimizer: {type: adam, lr: 0.002}":
                             "optimizer: {type: adam, lr: 0.002, betas: [0.85, 0.995], weight_decay: 0.0001}"})
            rows.setdefault("same spec, other betas / weight decay (netc train)", []).append(
                timed(train(other, tmp / f"run-w{w}-betas"), warm))
            if r == 0:
                served = start_server(warm, tmp / "servers")
            fresh = variant("digits-cnn.yaml", tmp, f"w{w}-served", {"filters: 16": f"filters: {w + 20}",
                                                                    "out: 64": f"out: {(w + 20) * 4}"})
            rows.setdefault("kernels warm, new spec: digits-cnn, other widths (netc train, served)", []).append(
                timed(train(fresh, tmp / f"run-w{w}-new-served", CLIENT), warm, **served))
            rows.setdefault("same spec again, plan cached (netc train, served)", []).append(
                timed(train(spec, tmp / f"run-w{w}-served", CLIENT), warm, **served))
            rows.setdefault("same spec, other betas / weight decay (netc train, served)", []).append(
                timed(train(other, tmp / f"run-w{w}-betas-served", CLIENT), warm, **served))
            for spec_name, replace in (("lenet.yaml", {"filters: 20": f"filters: {w + 3}"}),
                                       ("seed-cnn.yaml", {"filters: 64": f"filters: {w + 40}"}),
                                       ("siamese.yaml", {"out: 32, weight_init: he}": f"out: {w + 10}, weight_init: he}}",
                                                         "out: 32, share: enc_a}": f"out: {w + 10}, share: enc_a}}"})):
                path = variant(spec_name, tmp, f"w{w}", replace)
                rows.setdefault(f"kernels warm, new spec: {Path(spec_name).stem}, 1 epoch (API, random data)",
                                []).append(timed([sys.executable, "-c", API, str(path)], warm))
        subprocess.run(CLIENT + ["server", "stop"], env={**os.environ, "NETC_CACHE_DIR": str(warm), **served},
                       capture_output=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    flags = Path("/proc/cpuinfo").read_text()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    print("| measure (wall, fresh process) | median s | min–max s | rounds |")
    print("|---|---|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f}–{max(values):.2f} | {len(values)} |")
    print(f"\nmachine: {cpu} ({isa}), {os.cpu_count()} cores; Python {platform.python_version()}")


if __name__ == "__main__":
    main()
