"""`netc sweep`: the sweep file (model, spec paths, located errors, `netc validate`), then sweeps on a real
Dask LocalCluster (folder, leaderboard, pictures, pruning, plans kept across trials, faults, sockets),
a sweep killed and resumed, and one through `--scheduler` on `dask scheduler` + two `dask worker`
processes (and one over TLS).

The sweep-file tests need neither Dask nor Optuna; the rest skip cleanly without them. Trials are
digits-mlp on 300-400 samples for a few epochs (a trial takes ~0.1 s once its worker is warm).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from textwrap import dedent

import pytest
import yaml
from typer.testing import CliRunner

from netc.cli.app import app
from netc.errors import NetcError
from netc.sweep.load import load_sweep, load_sweep_text
from netc.sweep.paths import ByName, PathError, get_value, parse_path, resolve, with_values

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "specs" / "digits-mlp.yaml"
EXAMPLE = ROOT / "examples" / "sweep-digits.yaml"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def sweep_file(folder: Path, body: str, name: str = "sweep.yaml") -> Path:
    """A sweep file over specs/digits-mlp.yaml (by absolute path) in `folder`."""
    path = folder / name
    path.write_text(f"netc-sweep: 1\nspec: {DIGITS}\n" + dedent(body).lstrip("\n"))
    return path


def errors_of(text: str, folder: Path) -> list:
    path = sweep_file(folder, text)
    with pytest.raises(NetcError) as caught:
        load_sweep(path)
    return caught.value.diagnostics


# ---------------------------------------------------------------------------------------- spec paths


def test_spec_paths_parse_resolve_and_set():
    assert parse_path("layers[fc1].out") == ("layers", ByName("fc1"), "out")
    assert parse_path("loss[0].weight") == ("loss", 0, "weight")
    data = yaml.safe_load(DIGITS.read_text())
    assert resolve(data, parse_path("layers[fc1].out")) == ("layers", 0, "out")
    assert resolve(data, parse_path("layers[relu2].op")) == ("layers", 4, "op")
    assert get_value(data, "optimizer.lr") == 0.001 and get_value(data, "optimizer.weight_decay") is None
    changed = with_values(data, {"layers[fc2].out": 64, "optimizer.weight_decay": 0.01, "train.early_stop.patience": 2})
    assert changed["layers"][3]["out"] == 64 and changed["optimizer"]["weight_decay"] == 0.01
    assert changed["train"]["early_stop"] == {"patience": 2}
    assert data["layers"][3]["out"] == 128  # the base data is never changed
    with pytest.raises(PathError, match="no element named 'fc9'"):
        resolve(data, parse_path("layers[fc9].out"))
    with pytest.raises(PathError, match="past its end"):
        resolve(data, parse_path("layers[6].out"))


# ---------------------------------------------------------------------------------------- the sweep file


def test_the_example_sweep_loads_and_validates():
    loaded = load_sweep(EXAMPLE)
    assert loaded.name == "sweep_digits" and loaded.sweep.trial_count == 32 and loaded.sweep.method == "tpe"
    assert loaded.base.spec.name == "digits_mlp" and loaded.sweep.prune.after_epochs == 3
    text, spec = loaded.trial({"optimizer.lr": 0.01, "layers[fc1].out": 32, "train.batch": 16}, "trial 0")
    assert spec.spec.optimizer.lr == 0.01 and spec.spec.layers[0].out == 32 and spec.spec.train.batch == 16
    assert yaml.safe_load(text)["layers"][0]["out"] == 32
    done = invoke("validate", EXAMPLE, ROOT / "specs" / "xor.yaml", "--only-specs", "-v")
    assert done.exit_code == 0, done.output
    assert f"ok      {EXAMPLE}" in done.output and "2 specs: 2 valid" in done.output


def test_errors_are_located_in_the_sweep_file(tmp_path):
    found = errors_of("""
        metric: {name: eval_acuracy}
        trials: 4
        space:
          optimizer.lr: {loguniform: [1.0e-4, 1.0e-1], stepp: 2}
          train.batch: {choice: []}
          "train..x": {int: [1, 2]}
        """, tmp_path)
    where = {(d.code, d.location.line, d.location.col) for d in found}
    assert ("E-VALUE", 3, 16) in where  # metric.name
    assert ("E-UNKNOWN-KEY", 6, 48) in where  # stepp, with a did-you-mean
    assert any(d.code == "E-UNKNOWN-KEY" and "did you mean 'step'" in d.hint for d in found)
    assert any(d.location.line == 7 and "at least 1 item" in d.message for d in found)
    assert any(d.location.line == 8 and "not a spec path" in d.message for d in found)


def test_paths_that_lead_nowhere_and_values_that_make_invalid_specs_are_named(tmp_path):
    found = errors_of("""
        metric: {name: eval_accuracy}
        method: random
        trials: 4
        space:
          optimizer.lr: {uniform: [0.0, 0.1]}
          layers[fc9].out: {choice: [32, 64]}
          train.batchh: {choice: [16, 32]}
          layers[relu1].op: {choice: [relu, relux]}
        """, tmp_path)
    by_line = {d.location.line: d for d in found}
    assert by_line[8].code == "E-SWEEP-PATH" and "no element named 'fc9'" in by_line[8].message
    assert "did you mean 'fc3'" in by_line[8].hint
    assert by_line[7].code == "E-SWEEP-SPACE" and by_line[7].message.startswith("optimizer.lr=0 gives an invalid spec")
    assert "greater than 0" in by_line[7].message
    assert "unknown key 'batchh'" in by_line[9].message and "did you mean 'batch'" in by_line[9].hint
    assert by_line[10].message.startswith("layers[relu1].op=relux gives an invalid spec")
    assert len(found) == 4


def test_method_rules(tmp_path):
    (grid_error,) = errors_of("""
        metric: {name: eval_accuracy}
        method: grid
        space: {optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}}
        """, tmp_path)
    assert "grid needs finitely many values" in grid_error.message
    (trials_error,) = errors_of("""
        metric: {name: eval_accuracy}
        method: random
        space: {optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}}
        """, tmp_path)
    assert "`trials` is needed" in trials_error.message
    grid = load_sweep(sweep_file(tmp_path, """
        metric: {name: eval_loss}
        method: grid
        space:
          optimizer.lr: {choice: [0.001, 0.01]}
          layers[fc1].out: {int: [16, 64], step: 16}
        """))
    assert grid.sweep.trial_count == 8 and grid.sweep.metric.direction == "minimize"
    (metric_error,) = errors_of("""
        metric: {name: eval_accuracy}
        trials: 2
        fixed: {data.eval: null}
        space: {optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}}
        """, tmp_path)
    assert "no data.eval" in metric_error.message and metric_error.location.line == 3


def test_version_and_schema(tmp_path):
    with pytest.raises(NetcError, match="sweep format version 2 is not supported"):
        load_sweep_text("netc-sweep: 2\n", "s.yaml", tmp_path)
    done = invoke("sweep", "schema")
    assert done.exit_code == 0, done.output
    schema = json.loads(done.output)
    assert schema["$schema"].startswith("http://json-schema.org/draft-07")
    assert {"netc-sweep", "spec", "metric", "method", "trials", "space", "prune"} <= set(schema["properties"])
    dimension = schema["$defs"]["Dimension"]["properties"]
    assert {"uniform", "loguniform", "int", "choice", "step", "log"} == set(dimension)


def test_without_dask_or_optuna_the_command_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # an import of it fails
    done = invoke("sweep", EXAMPLE)
    assert done.exit_code == 1
    assert "netc sweep needs optuna, which is not installed" in done.output
    assert 'pip install -e ".[sweep]"' in done.output


def test_a_plain_address_off_loopback_warns():
    from netc.sweep.cluster import unencrypted_warning

    assert unencrypted_warning("tcp://10.1.2.3:8786").startswith("tcp://10.1.2.3:8786 is not encrypted")
    assert unencrypted_warning("scheduler.example.org:8786") is not None
    for quiet in ("tcp://127.0.0.1:8786", "tcp://localhost:8786", "tcp://[::1]:8786", "tls://10.1.2.3:8786"):
        assert unencrypted_warning(quiet) is None, quiet


# ---------------------------------------------------------------------------------------- Optuna's side

optuna = pytest.importorskip("optuna")


# random search over two parameters (a float on a log scale, an int with a step)
RANDOM_DRAWS = """
        metric: {name: eval_accuracy}
        method: random
        trials: 5
        seed: 3
        space:
          optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}
          layers[fc1].out: {int: [8, 64], step: 8}
        """


def test_random_draws_depend_only_on_the_trial_number(tmp_path):
    pytest.importorskip("optuna")
    from netc.sweep.space import distributions
    from netc.sweep.study import open_study

    loaded = load_sweep(sweep_file(tmp_path, RANDOM_DRAWS))
    draws = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        study = open_study(tmp_path / name, loaded.sweep)
        trials = [study.ask(distributions(loaded.sweep)) for _ in range(3)]
        draws.append([t.params for t in trials])
    assert draws[0] == draws[1] and draws[0][0] != draws[0][1]
    assert all(8 <= d["layers[fc1].out"] <= 64 and d["layers[fc1].out"] % 8 == 0 for d in draws[0])


def test_a_trial_killed_in_the_middle_of_its_draws_gets_the_rest_on_resume(tmp_path):
    """SIGKILL between two of a trial's draws leaves it running with some values: a resumed sweep draws
    the others as the unbroken sweep did (random: from (seed, trial, path))."""
    pytest.importorskip("optuna")
    from netc.sweep.space import distributions
    from netc.sweep.study import again, open_study, unfinished

    loaded = load_sweep(sweep_file(tmp_path, RANDOM_DRAWS))
    space = distributions(loaded.sweep)
    (tmp_path / "whole").mkdir()
    whole = open_study(tmp_path / "whole", loaded.sweep).ask(space).params
    (tmp_path / "killed").mkdir()
    study = open_study(tmp_path / "killed", loaded.sweep)
    study.ask({"optimizer.lr": space["optimizer.lr"]})  # the kill came before layers[fc1].out was drawn
    (frozen,) = unfinished(open_study(tmp_path / "killed", loaded.sweep))
    assert set(frozen.params) == {"optimizer.lr"}
    _, values = again(study, frozen, loaded.sweep)
    assert values == whole


# ---------------------------------------------------------------------------------------- on a LocalCluster

pytest.importorskip("distributed")

from netc.sweep import cluster as clusters  # noqa: E402
from netc.sweep.runner import Options, Runner  # noqa: E402

SMALL = """
    metric: {name: eval_accuracy}
    method: random
    trials: 4
    seed: 0
    space:
      optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}
    fixed:
      train.epochs: 3
      data.train.limit: 400
    """


@pytest.fixture(scope="module")
def local():
    """One embedded cluster of two workers for the tests below that do not test its start."""
    cluster = clusters.embedded(2)
    yield cluster
    cluster.close()


def records_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "trials.jsonl").read_text().splitlines()]


def test_a_sweep_on_a_local_cluster_fills_its_folder(tmp_path, local):
    loaded = load_sweep(sweep_file(tmp_path, SMALL))
    seen = []
    result = Runner(loaded, Options(out=tmp_path / "out"), on_trial=lambda record, progress: seen.append(record),
                    cluster=local).run()
    out = result.folder
    assert not result.interrupted and result.progress.complete == 4 and result.progress.failed == 0
    records = records_of(out)
    assert sorted(str(r["trial"]) for r in records) == ["0", "1", "2", "3", "base"]
    for record in records:
        assert record["status"] == "complete" and len(record["epochs"]) == 3 and record["worker"].startswith("tcp://")
        assert record["value"] == record["epochs"][-1]["eval_accuracy"] and record["seconds"] > 0
        assert (out / record["run_dir"] / "last.safetensors").is_file()
    # the trials differ only in lr: one plan for every trial (a worker loads it once, never again)
    assert sum(bool(r["new_plan"]) for r in records) <= 2
    best = max((r for r in records if r["trial"] != "base"), key=lambda r: (r["value"], -r["trial"]))
    assert json.loads((out / "best" / "trial.json").read_text())["trial"] == best["trial"]
    assert (out / "best" / "spec.yaml").is_file() and (out / "best" / "last.safetensors").is_file()
    for picture in ("params.png", "parallel.png", "best/curves.png"):
        assert (out / picture).stat().st_size > 1000, picture
    assert (out / "study.db").is_file()
    shown = invoke("sweep", "show", out, "--format", "markdown")
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("sweep sweep: eval_accuracy (maximize), random; 4 trials: 4 complete, 0 pruned, "
                                   "0 failed\n")
    rows = [line for line in shown.output.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| # | trial | status | eval_accuracy | optimizer.lr | epochs | seconds |")
    assert rows[1].startswith(f"| 1 | {best['trial']} | complete | {100 * best['value']:.2f}% |")
    assert rows[-1].startswith("|  | base | complete |") and "| 0.001 |" in rows[-1]
    assert json.loads(invoke("sweep", "show", out, "-f", "json").output)["trials"][0]["trial"] == best["trial"]


def test_files_are_shipped_back_when_asked(tmp_path, local):
    loaded = load_sweep(sweep_file(tmp_path, SMALL.replace("trials: 4", "trials: 2") + "baseline: false\n"))
    result = Runner(loaded, Options(out=tmp_path / "out", ship=True), cluster=local).run()
    for record in records_of(result.folder):
        folder = result.folder / record["run_dir"]
        assert {"spec.yaml", "metrics.jsonl", "last.safetensors"} <= {p.name for p in folder.iterdir()}
        assert not (folder / ".netc-lock").exists()


def test_pruning_stops_trials_below_the_median(tmp_path, local):
    loaded = load_sweep(sweep_file(tmp_path, """
        metric: {name: eval_accuracy}
        method: random
        trials: 8
        baseline: false
        space:
          optimizer.lr: {loguniform: [1.0e-5, 1.0e-1]}
        fixed:
          train.epochs: 6
          data.train.limit: 300
        prune: {after_epochs: 2, startup_trials: 2}
        """))
    result = Runner(loaded, Options(out=tmp_path / "out"), cluster=local).run()
    records = records_of(result.folder)
    pruned = [r for r in records if r["status"] == "pruned"]
    assert pruned and result.progress.pruned == len(pruned)
    assert all(2 <= len(r["epochs"]) < 6 for r in pruned)
    study = optuna.load_study(study_name="netc-sweep", storage=f"sqlite:///{result.folder / 'study.db'}")
    states = {t.number: t.state.name for t in study.trials}
    assert {n for n, s in states.items() if s == "PRUNED"} == {r["trial"] for r in pruned}


def _flaky(job):
    """A trial task that loses its worker under the first try of lr 0.05, and raises for lr 0.02."""
    from netc.sweep.worker import run_trial

    if job.values.get("optimizer.lr") == 0.05 and job.attempt == 1:
        os._exit(1)
    if job.values.get("optimizer.lr") == 0.02:
        raise RuntimeError("a trial that raises")
    return run_trial(job)


def test_faults_are_recorded_and_the_sweep_goes_on(tmp_path):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import the tests
    loaded = load_sweep(sweep_file(tmp_path, """
        metric: {name: eval_accuracy}
        method: grid
        baseline: false
        space:
          optimizer.lr: {choice: [0.05, 0.02, 0.01, 1000.0]}
        fixed:
          optimizer: {type: sgd, lr: 0.1}
          train.epochs: 2
          data.train.limit: 300
        """))
    result = Runner(loaded, Options(out=tmp_path / "out", workers=2), task=_flaky).run()
    records = {r["params"]["optimizer.lr"]: r for r in records_of(result.folder)}
    assert sorted(r["trial"] for r in records.values()) == [0, 1, 2, 3]
    assert records[0.05]["status"] == "complete" and records[0.05]["attempt"] == 2  # run again on a new worker
    assert records[0.02]["status"] == "failed" and records[0.02]["message"] == "RuntimeError: a trial that raises"
    assert records[1000.0]["status"] == "failed" and "training diverged" in records[1000.0]["message"]
    assert records[0.01]["status"] == "complete" and records[0.01]["attempt"] == 1
    assert result.progress.failed == 2 and result.progress.complete == 2


def test_the_embedded_cluster_listens_on_loopback_only():
    import psutil

    def listening() -> list[tuple[int, str, int]]:
        me = psutil.Process()
        found = []
        for process in [me, *me.children(recursive=True)]:
            try:
                connections = process.net_connections(kind="inet")
            except psutil.Error:
                continue
            found += [(process.pid, c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN]
        return found

    before = set(listening())
    for dashboard in (False, True):
        cluster = clusters.embedded(2, dashboard=dashboard)
        try:
            opened = set(listening()) - before
            assert len(opened) >= 5  # a scheduler, two nannies, two workers (and a dashboard when asked for)
            outside = [socket for socket in opened if not clusters.is_loopback(socket[1])]
            assert not outside, f"listening outside loopback: {outside}"
            assert (cluster.dashboard or "").startswith("http://127.0.0.1:") == dashboard
        finally:
            cluster.close()


# ---------------------------------------------------------------------------------------- killed and resumed


def _sweep_process(sweep: Path, out: Path, *more: str) -> subprocess.Popen:
    netc = Path(sys.executable).with_name("netc")
    command = [str(netc)] if netc.exists() else [sys.executable, "-m", "netc.cli"]
    return subprocess.Popen([*command, "sweep", str(sweep), "--workers", "2", "--out", str(out), *more],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for_records(out: Path, count: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        trials = out / "trials.jsonl"
        if trials.exists() and len(trials.read_text().splitlines()) >= count:
            return
        assert process.poll() is None, process.communicate()[0]
        time.sleep(0.02)
    raise AssertionError("the sweep recorded too few trials in time")


RESUMABLE = """
    metric: {name: eval_accuracy}
    method: random
    trials: 10
    seed: 4
    baseline: false
    space:
      optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}
      layers[fc1].out: {choice: [32, 64]}
    fixed:
      train.epochs: 6
      data.train.limit: 400
    """


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, local):
    """RESUMABLE run whole (on the module's cluster): each trial's values and result, and best/trial.json."""
    folder = tmp_path_factory.mktemp("unbroken")
    result = Runner(load_sweep(sweep_file(folder, RESUMABLE)), Options(out=folder / "out"), cluster=local).run()
    trials = {r["trial"]: (r["params"], r["value"]) for r in records_of(result.folder)}
    return trials, json.loads((result.folder / "best" / "trial.json").read_text())


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_a_killed_sweep_resumes_to_the_unbroken_ones_best(tmp_path, how, unbroken):
    """Killed mid-way (SIGKILL: no chance to tidy up; SIGINT: Ctrl-C in a terminal, which reaches the whole
    process group), then resumed: every finished trial is kept and none runs twice, and the trials and the
    best are the unbroken sweep's (random draws by trial number; one thread per trial: the same numbers)."""
    sweep = sweep_file(tmp_path, RESUMABLE)
    broken = tmp_path / "broken"
    process = _sweep_process(sweep, broken)
    _wait_for_records(broken, 3, process)
    os.killpg(process.pid, getattr(signal, how))
    output = process.communicate(timeout=60)[0]
    if how == "SIGINT":
        assert process.returncode == 130, output
        assert f"continue with: netc sweep {sweep} --resume --out {broken}" in output
    before = {r["trial"]: r for r in records_of(broken)}
    assert 3 <= len(before) < 10
    resumed = invoke("sweep", sweep, "--workers", "2", "--out", broken, "--resume")
    assert resumed.exit_code == 0, resumed.output
    after = records_of(broken)
    numbers = [r["trial"] for r in after]
    assert sorted(numbers) == list(range(10)) and len(set(numbers)) == len(numbers)  # each trial once
    assert [r for r in after if r["trial"] in before] == list(before.values())  # finished ones not rerun
    assert not re.search(r"^trial +(" + "|".join(map(str, before)) + r") ", resumed.output, re.M)
    trials, best = unbroken
    assert {r["trial"]: (r["params"], r["value"]) for r in after} == trials
    assert json.loads((broken / "best" / "trial.json").read_text()) == best


# ---------------------------------------------------------------------------------------- --scheduler


def _dask(*args: str, **kwargs) -> subprocess.Popen:
    dask = Path(sys.executable).with_name("dask")
    command = [str(dask)] if dask.exists() else [sys.executable, "-m", "distributed.cli.dask_spec"]
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    return subprocess.Popen([*command, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            **kwargs)


def _scheduler_address(scheduler_file: Path, process: subprocess.Popen) -> str:
    started = time.monotonic()
    while time.monotonic() - started < 60:
        if scheduler_file.exists():
            try:
                return json.loads(scheduler_file.read_text())["address"]
            except (ValueError, KeyError):
                pass
        assert process.poll() is None, "dask scheduler exited"
        time.sleep(0.1)
    raise AssertionError("dask scheduler did not start")


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for process in reversed(started):
        process.terminate()
    for process in started:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # a worker still trying to say goodbye to a scheduler that left
            process.kill()
            process.wait()


def test_a_sweep_through_a_running_scheduler_and_two_workers(tmp_path, processes):
    scheduler_file = tmp_path / "scheduler.json"
    processes.append(_dask("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                           "--scheduler-file", str(scheduler_file)))
    address = _scheduler_address(scheduler_file, processes[0])
    for _ in range(2):
        processes.append(_dask("worker", address, "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
                               "--no-nanny"))
    sweep = sweep_file(tmp_path, SMALL)
    done = invoke("sweep", sweep, "--scheduler", address, "--out", tmp_path / "out")
    assert done.exit_code == 0, done.output
    assert f"on the Dask cluster at {address}" in done.output and "not encrypted" not in done.output
    records = records_of(tmp_path / "out")
    assert sorted(str(r["trial"]) for r in records) == ["0", "1", "2", "3", "base"]
    assert all(r["status"] == "complete" for r in records)
    assert len({r["worker"] for r in records}) == 2  # both workers ran trials
    assert "done: 4 trials (4 complete, 0 pruned, 0 failed)" in done.output


def test_a_sweep_over_tls(tmp_path, processes):
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    tls = ["--tls-ca-file", str(cert), "--tls-cert", str(cert), "--tls-key", str(key)]
    scheduler_file = tmp_path / "scheduler.json"
    processes.append(_dask("scheduler", "--protocol", "tls", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                           "--scheduler-file", str(scheduler_file), *tls))
    address = _scheduler_address(scheduler_file, processes[0])
    assert address.startswith("tls://")
    processes.append(_dask("worker", address, "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
                           "--no-nanny", *tls))
    sweep = sweep_file(tmp_path, SMALL.replace("trials: 4", "trials: 2") + "baseline: false\n")
    refused = invoke("sweep", sweep, "--scheduler", address, "--out", tmp_path / "no")
    assert refused.exit_code == 1 and "needs TLS files" in refused.output
    done = invoke("sweep", sweep, "--scheduler", address, "--out", tmp_path / "out", *tls)
    assert done.exit_code == 0, done.output
    assert [r["status"] for r in records_of(tmp_path / "out")] == ["complete", "complete"]


def test_a_record_after_a_line_a_kill_cut_short_stays_readable(tmp_path):
    from netc.sweep.folder import TRIALS, SweepFolder

    folder = SweepFolder.__new__(SweepFolder)
    folder.path = tmp_path
    (tmp_path / TRIALS).write_text('{"trial": 0, "status": "complete"}\n{"trial": 1, "sta')  # killed mid-write
    folder.append({"trial": 1, "status": "complete"})
    lines = (tmp_path / TRIALS).read_text().splitlines()
    assert json.loads(lines[-1]) == {"trial": 1, "status": "complete"} and len(lines) == 3
    assert folder.records()["1"] == {"trial": 1, "status": "complete"}


def test_a_grid_point_queued_but_never_asked_for_runs_once(tmp_path):
    """Killed between queueing a grid point and asking for it: the resumed sweep asks for that point
    once, and the next ask is the next point."""
    pytest.importorskip("optuna")
    from netc.sweep.study import ask, grid_points, open_study, unfinished

    loaded = load_sweep(sweep_file(tmp_path, """
        metric: {name: eval_accuracy}
        method: grid
        space:
          layers[fc1].out: {choice: [8, 16, 32, 64]}
        """))
    study = open_study(tmp_path, loaded.sweep)
    ask(study, loaded.sweep)
    study.enqueue_trial(grid_points(loaded.sweep)[1])  # the kill came here
    assert unfinished(study) and all(t.number == 0 for t in unfinished(study))
    second, third = ask(study, loaded.sweep), ask(study, loaded.sweep)
    assert [second.number, third.number] == [1, 2]
    points = grid_points(loaded.sweep)
    assert [second.params, third.params] == points[1:3]


def test_a_sweep_folder_another_sweep_holds_is_refused(tmp_path):
    from netc.runtime.rundir import hold_lock
    from netc.sweep.folder import LOCK, SweepFolder

    held = hold_lock(tmp_path / LOCK)  # another sweep's lock (flock: a second open file conflicts)
    try:
        with pytest.raises(NetcError) as info:
            SweepFolder(tmp_path).lock()
        (d,) = info.value.diagnostics
        assert f"in use by another netc sweep (PID {os.getpid()})" in d.message and "--out" in d.hint
    finally:
        held.close()
    folder = SweepFolder(tmp_path)
    folder.lock()  # free again once the holder closes it
    folder.release()
