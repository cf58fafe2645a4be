"""The curves painter: curves.png drawn by a helper process while a run trains (netc.viz.painter),
and drawn in place whenever the helper cannot do it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from netc.viz.curves import plot_curves
from netc.viz.painter import CurvesPainter

ROOT = Path(__file__).resolve().parent.parent


def _run_folder(folder: Path, epochs: int = 3) -> Path:
    folder.mkdir()
    lines = [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.5 + e / 10, "eval_loss": 1.2 / e,
              "eval_accuracy": 0.4 + e / 10} for e in range(1, epochs + 1)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_the_painter_draws_what_plot_curves_draws(tmp_path):
    run = _run_folder(tmp_path / "run")
    painter = CurvesPainter()
    assert painter._process is not None and painter._process.poll() is None  # started at once, waiting
    path = painter(run)
    assert path == (run / "curves.png").resolve()
    drawn = _pixels(path)
    plot_curves(run, tmp_path / "here.png")  # the same picture, drawn in this process
    np.testing.assert_array_equal(drawn, _pixels(tmp_path / "here.png"))
    assert painter._process is None  # one picture per painter; the helper is gone


def test_a_run_with_nothing_to_draw_gives_none(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    assert CurvesPainter()(empty) is None
    assert not (empty / "curves.png").exists()


def test_a_painter_that_cannot_start_draws_in_this_process(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    painter = CurvesPainter()
    assert painter._process is None
    run = _run_folder(tmp_path / "run")
    assert painter(run) == run / "curves.png"
    _pixels(run / "curves.png")


def test_a_painter_that_died_or_hangs_is_replaced_by_drawing_here(tmp_path):
    painter = CurvesPainter()
    painter._process.kill()
    painter._process.wait()
    run = _run_folder(tmp_path / "died")
    assert painter(run) == run / "curves.png"
    _pixels(run / "curves.png")

    # a helper that never answers: the run waits `timeout` seconds, then draws itself
    slow = CurvesPainter(timeout=0.5)
    slow._process.kill()
    slow._process.wait()
    slow._process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
    hung = slow._process
    run = _run_folder(tmp_path / "hung")
    assert slow(run) == run / "curves.png"
    assert hung.poll() is not None  # stopped, not left behind


def test_close_stops_a_painter_never_asked(tmp_path):
    painter = CurvesPainter()
    process = painter._process
    painter.close()
    assert process.poll() is not None and painter._process is None
    painter.close()  # twice is harmless


def test_netc_train_in_its_own_process_leaves_curves_png(tmp_path):
    """The console script path (OWN_PROCESS): the painter draws, and no helper outlives the command."""
    spec = ROOT / "specs" / "xor.yaml"
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "netc.cli", "train", str(spec), "--epochs", "2", "--run-dir",
                           str(run), "--quiet"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "curves.png" in done.stdout
    assert _pixels(run / "curves.png").shape[0] > 100
    assert not _painters_in(tmp_path), "a painter outlived its run"


def _painters_in(folder: Path) -> list[int]:
    """Painter processes whose working folder is `folder` (a painter inherits its run's)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(proc / "cwd").resolve() == folder.resolve() and \
                    b"netc.viz.painter" in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found
