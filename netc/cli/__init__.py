"""The `netc` command line: `netc.cli.app.app` with every command module registered.

Use `from netc.cli.app import app` (the typer object) in tests; `main()` is the
console script.
"""

from __future__ import annotations

import os
import sys

from netc.cli import (  # noqa: F401  (registration)
    cache_commands, predict_commands, run_commands, sample_commands, server_commands, spec_commands, sweep_commands,
    viz_commands,
)
from netc.cli import app as _app_module


def run() -> int:
    """Run the command in sys.argv as a process of its own does; its exit code, output flushed."""
    _app_module.OWN_PROCESS = True
    try:
        _app_module.app(prog_name="netc")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def main() -> None:
    """`python -m netc.cli`: the command in this process, never a server's (netc.client is the console
    script). Once a command is done, the process leaves without tearing the interpreter down:
    unloading Numba's compiled code and matplotlib costs 0.3-0.5 s that nobody waits for on purpose.
    Files are closed (and renamed into place) by then; a background compile is a process of its own
    and goes on."""
    os._exit(run())
