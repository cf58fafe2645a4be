"""Runs never lose data or crash: run folders (two runs at once, folders that are not netc's,
read-only places, full disks), damaged caches, and what the CLI prints to a pipe.

Concurrency is tested with real processes (`python -m netc.cli`); a full disk with a file-size
limit (RLIMIT_FSIZE) and, where this machine lets the test mount one, a tiny tmpfs. Every case
checks the message and that the files a previous run left are byte-identical afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import netc.cli  # noqa: F401  (registers every command)
from netc.cli.app import SUMMARY, app
from netc.runtime.checkpoint import load_state, load_weights

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
XOR = SPECS / "xor.yaml"
MLP = SPECS / "digits-mlp.yaml"
pytestmark = pytest.mark.compiled

# not a terminal, and no COLUMNS: what a pipe or a CI log gets
runner = CliRunner(env={"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None, "COLUMNS": None})


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def netc(*args, cwd: Path, env: dict | None = None, file_limit: int | None = None, **popen):
    """`netc ARGS` in a process of its own; `file_limit` caps the size of files it writes (ulimit -f)."""

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    command = [sys.executable, "-m", "netc.cli", *map(str, args)]
    return subprocess.Popen(command, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=limit if file_limit else None, **popen)


def finish(process, timeout: float = 300) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file a run left, by name, except the lock (a run writes its own PID there)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".netc-lock"}


def wait_for_lock(folder: Path, pid: int, timeout: float = 120) -> None:
    lock = folder / ".netc-lock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lock.exists() and lock.read_text().strip() == str(pid):
            return
        time.sleep(0.02)
    raise AssertionError(f"the run never took its lock ({lock})")


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A tmpfs mounted at `path` for the test (skips where this machine does not allow mounting)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "netc-test", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def read_only_folder(path: Path):
    """A folder nothing can be written into: a read-only tmpfs for root (who ignores modes), else mode 555."""
    if os.geteuid() == 0:
        with tmpfs(path, "ro,size=64k") as folder:
            yield folder
    else:
        path.mkdir(parents=True)
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)


# ----------------------------------------------------------------------------- two runs, one folder


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path):
    run = tmp_path / "run"
    first = netc("train", XOR, "--epochs", "30", "--run-dir", run, cwd=tmp_path)
    try:
        wait_for_lock(run, first.pid)
        os.kill(first.pid, signal.SIGSTOP)  # holds the folder for as long as the second run needs
        before = snapshot(run)
        code, out, err = finish(netc("train", XOR, "--epochs", "30", "--run-dir", run, cwd=tmp_path))
        assert code == 1, out + err
        assert f"error[E-RUN]: the run folder is in use by another netc run (PID {first.pid})" in err
        assert str(run) in err
        no_traceback(out, err)
        assert snapshot(run) == before, "the refused run changed the folder"
        code, out, err = finish(netc("train", XOR, "--epochs", "30", "--run-dir", run, "--resume", cwd=tmp_path))
        assert code == 1 and f"in use by another netc run (PID {first.pid})" in err, out + err
    finally:
        os.kill(first.pid, signal.SIGCONT)
    code, out, err = finish(first)
    assert code == 0, out + err
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 31)), "metrics of one run only"


def test_runs_started_together_get_distinct_folders(tmp_path):
    claim = ("import sys; from pathlib import Path; from netc.runtime.rundir import RunFolder; "
             "print(RunFolder.new_numbered(Path('runs'), 'net').path)")
    processes = [subprocess.Popen([sys.executable, "-c", claim], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
                 for _ in range(6)]
    folders = [p.communicate(timeout=120)[0].strip() for p in processes]
    assert all(p.returncode == 0 for p in processes)
    assert sorted(folders) == sorted(["runs/net"] + [f"runs/net-{i}" for i in range(2, 7)])
    for folder in folders:
        assert (tmp_path / folder / ".netc-run").is_file()

    a, b = (netc("train", XOR, "--epochs", "2", cwd=tmp_path) for _ in range(2))
    (code_a, out_a, err_a), (code_b, out_b, err_b) = finish(a), finish(b)
    assert code_a == 0 and code_b == 0, err_a + err_b
    shown = sorted(line.split()[2] for line in (out_a + out_b).splitlines() if line.startswith("run folder:"))
    assert shown == ["runs/xor", "runs/xor-2"]
    for folder in shown:
        assert len((tmp_path / folder / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
    run = tmp_path / "run"
    first = netc("train", XOR, "--epochs", "5000", "--run-dir", run, cwd=tmp_path)
    wait_for_lock(run, first.pid)
    first.kill()
    finish(first)
    assert (run / ".netc-lock").read_text().strip() == str(first.pid), "the dead run's PID is still written"
    resume = ["--resume", "--epochs", "5001"] if (run / "last.safetensors").exists() else ["--epochs", "2"]
    code, out, err = finish(netc("train", XOR, "--run-dir", run, *resume, cwd=tmp_path))
    assert code == 0, out + err
    assert "in use" not in err


# ----------------------------------------------------------------------------- folders that are not netc's


def test_a_folder_that_is_not_a_netc_run_is_never_written(tmp_path):
    user = tmp_path / "project"
    user.mkdir()
    (user / "spec.yaml").write_text("my own spec\n")
    (user / "metrics.jsonl").write_text('{"mine": 1}\n')
    (user / "notes.txt").write_text("notes\n")
    before = snapshot(user)
    refused = invoke("train", XOR, "--epochs", "1", "--run-dir", user)
    assert refused.exit_code == 1
    assert "error[E-RUN]: the folder is not empty and is not a netc run folder" in refused.output
    assert "--force" in refused.output
    forced = invoke("train", XOR, "--epochs", "1", "--run-dir", user, "--force")
    assert forced.exit_code == 1
    assert "--force: the folder already holds spec.yaml, metrics.jsonl, which netc did not write" in forced.output
    no_traceback(refused.output, forced.output)
    assert snapshot(user) == before

    (user / "spec.yaml").unlink()
    (user / "metrics.jsonl").unlink()
    forced = invoke("train", XOR, "--epochs", "1", "--run-dir", user, "--force")
    assert forced.exit_code == 0, forced.output
    assert (user / "notes.txt").read_text() == "notes\n" and (user / "last.safetensors").is_file()
    assert (user / ".netc-run").is_file()

    again = invoke("train", XOR, "--epochs", "1", "--run-dir", user)
    assert again.exit_code == 1 and "the run folder already holds a run" in again.output

    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = invoke("train", XOR, "--run-dir", a_file)
    assert result.exit_code == 1 and "the run folder is a file" in result.output and a_file.read_text() == "x"


def test_read_only_places_are_errors(tmp_path, monkeypatch):
    with read_only_folder(tmp_path / "ro") as folder:
        result = invoke("train", XOR, "--epochs", "1", "--run-dir", folder / "run")
        assert result.exit_code == 1
        assert "error[E-RUN]: cannot create the run folder" in result.output
        assert "Read-only file system" in result.output or "Permission denied" in result.output
        monkeypatch.chdir(folder)
        result = invoke("train", XOR, "--epochs", "1")
        assert result.exit_code == 1 and "cannot create the runs folder" in result.output
        no_traceback(result.output)


# ----------------------------------------------------------------------------- full disks


def _trained_one_epoch(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    code, out, err = finish(netc("train", MLP, "--epochs", "1", "--run-dir", run, cwd=tmp_path))
    assert code == 0, out + err
    return run


def test_a_file_size_limit_keeps_the_last_checkpoint(tmp_path):
    run = _trained_one_epoch(tmp_path)
    before = snapshot(run)
    # the resume state (weights + Adam's moments, ~600 KB) no longer fits
    code, out, err = finish(netc("train", MLP, "--epochs", "2", "--run-dir", run, "--resume",
                                 cwd=tmp_path, file_limit=300_000))
    assert code == 1, out + err
    assert "error[E-RUN]: cannot write the checkpoint" in err and "File too large" in err
    assert "the last checkpoint) are intact" in err
    no_traceback(out, err)
    assert snapshot(run) == before, "a failed write changed the run's files"
    assert not list(run.glob("*.tmp"))
    code, out, err = finish(netc("train", MLP, "--epochs", "2", "--run-dir", run, "--resume", cwd=tmp_path))
    assert code == 0 and "resuming" in out and "from epoch 2 of 2" in out, out + err


def test_a_full_disk_keeps_the_last_checkpoint(tmp_path):
    reference = _trained_one_epoch(tmp_path)
    with tmpfs(tmp_path / "small", "size=1200k") as disk:
        run = disk / "run"
        code, out, err = finish(netc("train", MLP, "--epochs", "2", "--run-dir", run, cwd=tmp_path))
        assert code == 1, out + err
        assert "error[E-RUN]: cannot write the checkpoint" in err and "No space left on device" in err
        no_traceback(out, err)
        assert not list(run.glob("*.tmp"))
        assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]
        assert load_state(run / "last.safetensors")[2]["epoch"] == 1
        weights, expected = load_weights(run / "last.safetensors"), load_weights(reference / "last.safetensors")
        assert weights.keys() == expected.keys()
        assert all((weights[k] == expected[k]).all() for k in weights), "epoch 1's checkpoint, as written"


# ----------------------------------------------------------------------------- damaged caches

_TINY = '''
from netc.jit import kernel

@kernel
def one(x):
    return x + 1.0

@kernel
def two(x):
    return x * 2.0

@kernel
def three(x):
    return x - 3.0

@kernel
def four(x):
    return x / 4.0

@kernel
def five(x):
    return x + 5.0

@kernel
def six(x):
    return x * 6.0
'''
_CALL = ("import sys; sys.path.insert(0, '.'); import tiny; "
         "fs = [tiny.one, tiny.two, tiny.three, tiny.four, tiny.five, tiny.six]; "
         "print([f(10.0) for f in fs]); "
         "print([sum(f.stats.cache_misses.values()) for f in fs])")
_RESULTS = "[11.0, 20.0, 7.0, 2.5, 15.0, 60.0]"


def _call_tiny(folder: Path, before: str = "") -> tuple[str, str, str]:
    done = subprocess.run([sys.executable, "-c", before + _CALL], cwd=folder, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NETC_CACHE_DIR": str(folder / "cache")})
    assert done.returncode == 0, done.stdout + done.stderr
    results, misses = done.stdout.splitlines()
    return results, misses, done.stderr


def test_damaged_cache_entries_are_recompiled_never_run(tmp_path):
    (tmp_path / "tiny.py").write_text(_TINY)
    results, misses, err = _call_tiny(tmp_path)
    assert results == _RESULTS and misses == "[1, 1, 1, 1, 1, 1]" and err == ""
    results, misses, err = _call_tiny(tmp_path)
    assert results == _RESULTS and misses == "[0, 0, 0, 0, 0, 0]" and err == "", "loaded from the cache"

    def entry(name: str, suffix: str) -> Path:
        (found,) = (tmp_path / "cache").glob(f"numba/*/*/tiny.{name}-*{suffix}")
        return found

    data = {name: entry(name, ".1.nbc") for name in ("one", "two", "three", "five", "six")}
    raw = data["one"].read_bytes()
    data["one"].write_bytes(raw[: len(raw) // 2])  # truncated
    raw = bytearray(data["two"].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data["two"].write_bytes(bytes(raw))  # one byte garbled
    data["three"].write_bytes(b"")  # emptied
    index = entry("four", ".nbi")
    index.write_bytes(index.read_bytes()[:7])  # a truncated index
    five, six = data["five"].read_bytes(), data["six"].read_bytes()
    data["five"].write_bytes(six)  # machine code swapped between functions
    data["six"].write_bytes(five)

    results, misses, err = _call_tiny(tmp_path)
    assert results == _RESULTS, "the right results, from recompiled code"
    assert misses == "[1, 1, 1, 1, 1, 1]"
    lines = err.splitlines()
    assert len(lines) == 6 and all(line.startswith("netc: warning: cache entry ") for line in lines), err
    assert all(line.endswith("; recompiling") for line in lines), err
    for name in ("one", "two", "three", "five", "six"):
        assert sum(str(data[name]) in line and "checksum does not match" in line for line in lines) == 1, err
    assert sum(str(index) in line for line in lines) == 1, err

    results, misses, err = _call_tiny(tmp_path)  # healed: every entry written again
    assert results == _RESULTS and misses == "[0, 0, 0, 0, 0, 0]" and err == ""


def test_kernels_compiled_for_another_tile_shape_are_not_loaded(tmp_path):
    """netc's micro-kernel bakes its tile shape (from the CPU's flags) into compiled code, and plans size
    their scratch by it: a cache shared by machines of other flags under one NUMBA_CPU_NAME holds an entry
    per shape, and neither loads the other's."""
    (tmp_path / "tiny.py").write_text(_TINY)
    other = "import netc.kernels.gemm_sizes as g; g.TILE_LANES = 24; "  # before netc's cache reads it
    assert _call_tiny(tmp_path)[1:] == ("[1, 1, 1, 1, 1, 1]", "")
    assert _call_tiny(tmp_path, other)[1:] == ("[1, 1, 1, 1, 1, 1]", ""), "compiled again, nothing said"
    assert _call_tiny(tmp_path, other)[1:] == ("[0, 0, 0, 0, 0, 0]", "")
    assert _call_tiny(tmp_path)[1:] == ("[0, 0, 0, 0, 0, 0]", ""), "the first shape's entries are still there"


def test_a_damaged_plan_module_is_written_again(tmp_path, monkeypatch, capsys):
    from netc import errors
    from netc.compiler import cache

    monkeypatch.setattr(cache, "cache_dir", lambda: tmp_path)
    source = '"""a generated module"""\n\n\ndef answer():\n    return 42\n'
    path = tmp_path / f"netc_plan_{cache.plan_key(source)}.py"
    for damage in (b"\xff\xfe\x00garbled", source.encode()[:20], b""):
        path.write_bytes(damage)
        sys.modules.pop(path.stem, None)
        monkeypatch.setattr(errors, "_warned", set())
        module, written = cache.load_module(source)
        assert written == path and module.answer() == 42
        assert path.read_bytes() == source.encode()
        assert f"netc: warning: cache entry {path} was unreadable" in capsys.readouterr().err
    sys.modules.pop(path.stem, None)


def test_an_unusable_cache_folder_falls_back_to_a_temporary_one(tmp_path, monkeypatch, capsys):
    from netc import codecache, errors

    a_file = tmp_path / "cache-file"
    a_file.write_text("not a folder")
    monkeypatch.setenv("NETC_CACHE_DIR", str(a_file))
    monkeypatch.setattr(errors, "_warned", set())
    codecache.cache_root.cache_clear()
    try:
        root = codecache.cache_root()
        assert root.is_dir() and root != a_file and a_file.read_text() == "not a folder"
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"netc: warning: the cache folder {a_file} is not usable" in err
        assert f"using a temporary cache in {root}" in err
    finally:
        codecache.cache_root.cache_clear()

    # the whole run, in a process of its own: a warning, then a normal run
    code, out, err = finish(netc("train", XOR, "--epochs", "1", "--run-dir", tmp_path / "run", cwd=tmp_path,
                                 env={"NETC_CACHE_DIR": str(a_file)}))
    assert code == 0, out + err
    assert err.startswith(f"netc: warning: the cache folder {a_file} is not usable"), err
    assert "done: 1 epoch," in out


def test_a_read_only_cache_folder_falls_back(tmp_path, monkeypatch, capsys):
    from netc import codecache, errors

    with read_only_folder(tmp_path / "ro") as folder:
        monkeypatch.setenv("NETC_CACHE_DIR", str(folder))
        monkeypatch.setattr(errors, "_warned", set())
        codecache.cache_root.cache_clear()
        try:
            assert codecache.cache_root() != folder
        finally:
            codecache.cache_root.cache_clear()
    assert f"the cache folder {folder} is not usable" in capsys.readouterr().err


# ----------------------------------------------------------------------------- messages


def test_resume_says_what_it_resumes_and_when_a_run_is_finished(tmp_path):
    run = tmp_path / "run"
    first = invoke("train", XOR, "--epochs", "1", "--run-dir", run)
    assert first.exit_code == 0 and "done: 1 epoch, loss" in first.output
    finished = invoke("train", XOR, "--run-dir", run, "--resume")  # the run's own 1 epoch, not the spec's 200
    assert finished.exit_code == 0
    assert f"{run} is finished: 1 epoch done; pass --epochs N (more than 1)" in finished.output
    more = invoke("train", XOR, "--epochs", "3", "--run-dir", run, "--resume")
    assert more.exit_code == 0
    assert f"resuming {run} from epoch 2 of 3" in more.output and "done: 3 epochs" in more.output


def test_init_whose_shapes_all_differ_names_them(tmp_path):
    source = invoke("train", XOR, "--epochs", "1", "--run-dir", tmp_path / "small")
    assert source.exit_code == 0, source.output
    wide = tmp_path / "wide.yaml"
    wide.write_text(XOR.read_text().replace("out: 8", "out: 16").replace("out: 2", "out: 3")
                    .replace("classes: 2", "classes: 3"))
    result = invoke("train", wide, "--epochs", "1", "--run-dir", tmp_path / "wide",
                    "--init", tmp_path / "small" / "last.safetensors")
    assert result.exit_code == 1
    assert "no tensor of the checkpoint fits the model: the names match but the shapes differ" in result.output
    assert "hidden.weight: checkpoint [8, 2] vs model [16, 2]" in result.output
    assert "out.weight: checkpoint [2, 8] vs model [3, 16]" in result.output


def test_output_to_a_pipe_is_never_wrapped_nor_padded(tmp_path):
    deep = tmp_path / ("a-long-folder-name-" * 5) / "run"
    result = invoke("train", XOR, "--epochs", "2", "--run-dir", deep)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "preparing the compiled plan of 'xor' (a spec's first run compiles it)"
    assert lines[1].startswith("plan ") and lines[1].endswith(" s")
    assert [line.split()[:2] for line in lines[2:4]] == [["epoch", "1"], ["epoch", "2"]]
    assert f"run folder: {deep} (spec.yaml, metrics.jsonl, curves.png, last.safetensors, " \
           "last.state.safetensors)" in lines
    inspected = invoke("inspect", SPECS / "lenet.yaml")
    assert inspected.exit_code == 0
    assert all(line == line.rstrip() for line in inspected.stdout.splitlines())


def test_help_names_every_command_and_every_default():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from netc.cli.viz_commands import ONNX_OPSET, PICTURE_FORMATS
    from netc.export_onnx import DEFAULT_OPSET

    commands = typer_commands()
    assert set(commands) >= {"train", "eval", "validate", "inspect", "export", "viz"}
    for name in commands:
        assert name in SUMMARY, f"`netc --help` does not name {name}"
    assert ONNX_OPSET == DEFAULT_OPSET
    assert "[default: 21]" in invoke("export", "--help").output
    from netc import viz

    listed = {suffix for group in PICTURE_FORMATS.split(", ") for suffix in group.split("/")}
    assert listed == {"." + kind for kind in viz.PICTURE_FORMATS}
    assert set(viz.PICTURE_FORMATS) <= set(FigureCanvasAgg(Figure()).get_supported_filetypes())


def typer_commands() -> list[str]:
    import typer.main

    return sorted(typer.main.get_command(app).commands)


def test_a_trainer_holds_its_folder_until_its_run_ends(tmp_path):
    """The lock is released when the run ends: a second run into the folder then works (resume)."""
    from netc.runtime.train import Overrides, Trainer
    from netc.spec import load_spec

    run = tmp_path / "run"
    trainer = Trainer(load_spec(XOR), Overrides(epochs=1), run_dir=run)
    held = invoke("train", XOR, "--run-dir", run)
    assert held.exit_code == 1 and f"in use by another netc run (PID {os.getpid()})" in held.output
    trainer.run()
    resumed = invoke("train", XOR, "--epochs", "2", "--run-dir", run, "--resume")
    assert resumed.exit_code == 0, resumed.output

