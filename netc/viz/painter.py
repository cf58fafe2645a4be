"""curves.png drawn by a helper process, so that `netc train` does not wait for matplotlib.

Importing matplotlib and drawing a first figure (fonts, the Agg renderer) costs 0.5-0.8 s, as much
as a short run itself. The CLI starts a painter when a run begins: a second Python process that
imports matplotlib and draws a throwaway figure on the other core while this one trains; at the
end the run folder is sent over its stdin and it draws curves.png there. The painter is its own
session (Ctrl-C in the terminal interrupts the run, not the painter) and leaves when its stdin
closes, so it never outlives the run. When it cannot start, fails or takes too long, the picture
is drawn in this process as before: a painter only ever saves time.

Only worth it in a fresh process: a process that has matplotlib loaded already (a notebook, the
tests) draws in place (`save_run_curves`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from netc.viz.curves import save_run_curves

TIMEOUT = 60.0  # seconds the run waits for the painter before drawing itself


class CurvesPainter:
    """`painter(run_dir)` draws run_dir/curves.png and returns its path (None when it cannot be drawn),
    the same as `save_run_curves(run_dir)`."""

    def __init__(self, timeout: float = TIMEOUT):
        self.timeout = timeout
        try:
            self._process: subprocess.Popen | None = subprocess.Popen(
                [sys.executable, "-m", "netc.viz.painter"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True, start_new_session=os.name == "posix")
        except OSError:
            self._process = None

    def __call__(self, run_dir: str | Path) -> Path | None:
        process, self._process = self._process, None
        if process is not None:
            try:
                answer = _ask(process, f"{Path(run_dir).resolve()}\n", self.timeout)
            finally:
                _stop(process)  # not waiting for it to tear matplotlib down
            if answer.startswith("drawn "):
                return Path(answer[len("drawn "):].strip())
            if answer.startswith("none"):  # the run has nothing to draw: drawing here would fail the same way
                return None
        return save_run_curves(run_dir)

    def close(self) -> None:
        """Stop a painter that was never asked to draw (the run failed before its end)."""
        process, self._process = self._process, None
        if process is not None:
            _stop(process)


def _ask(process: subprocess.Popen, line: str, timeout: float) -> str:
    """Send one line, read the one-line answer (empty when the painter died or took too long)."""
    answer: list[str] = []
    reader = threading.Thread(target=lambda: answer.append(process.stdout.readline()), daemon=True)
    try:
        process.stdin.write(line)
        process.stdin.flush()
    except (OSError, ValueError):  # a dead painter, or a path its pipe cannot encode
        return ""
    reader.start()
    reader.join(timeout)
    return answer[0] if answer else ""


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


def _warm_up() -> None:
    """Import matplotlib and render a small figure once: what a first picture pays besides its data."""
    from matplotlib.lines import Line2D  # noqa: F401  (what curves.py imports)
    from matplotlib.ticker import MaxNLocator  # noqa: F401

    from netc.viz.figures import new_figure

    figure, _ = new_figure(2, 1)
    axes = figure.add_subplot()
    axes.plot([0, 1], [1, 0], label="loss")
    axes.set_title("warm-up")
    axes.legend()
    figure.tight_layout()
    figure.canvas.draw()


def main() -> None:
    try:  # below the run's own work: on a cold cache two processes compile kernels on the two cores
        os.nice(10)
    except (AttributeError, OSError):
        pass
    try:
        _warm_up()
    except Exception:  # noqa: BLE001 - the drawing below reports (as "none") what fails
        pass
    line = sys.stdin.readline().strip()
    if not line:  # the run ended without asking
        return
    path = save_run_curves(line)
    print(f"drawn {path}" if path is not None else "none", flush=True)


if __name__ == "__main__":
    main()
