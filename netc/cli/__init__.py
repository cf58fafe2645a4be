"""The `netc` command line: `netc.cli.app.app` with every command module registered.

Use `from netc.cli.app import app` (the typer object) in tests; `main()` is the
console script.
"""

from __future__ import annotations

import os
import sys

from netc.cli import (  # noqa: F401  (registration)
    cache_commands, predict_commands, run_commands, sample_commands, spec_commands, sweep_commands, viz_commands,
)
from netc.cli import app as _app_module


def main() -> None:
    """The console script. Once a command is done, the process leaves without tearing the interpreter
    down: unloading Numba's compiled code and matplotlib costs 0.3-0.5 s that nobody waits for on
    purpose. Output is flushed first; files are closed (and renamed into place) by then; a background
    compile is a process of its own and goes on."""
    _app_module.OWN_PROCESS = True
    try:
        _app_module.app(prog_name="netc")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
