"""The `netc` command line: `netc.cli.app.app` with every command module registered.

Use `from netc.cli.app import app` (the typer object) in tests; `main()` is the
console script.
"""

from __future__ import annotations

import importlib.util

from netc.cli import spec_commands  # noqa: F401  (registers validate, inspect, schema)
from netc.cli.app import app as _app

# the runtime commands (train, eval, time, gradcheck) live in their own module;
# only its absence is tolerated, an ImportError inside it still surfaces
if importlib.util.find_spec("netc.cli.run_commands") is not None:
    from netc.cli import run_commands  # noqa: F401


def main() -> None:
    _app(prog_name="netc")
