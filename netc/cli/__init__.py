"""The `netc` command line: `netc.cli.app.app` with every command module registered.

Use `from netc.cli.app import app` (the typer object) in tests; `main()` is the
console script.
"""

from __future__ import annotations

from netc.cli import cache_commands, run_commands, spec_commands, viz_commands  # noqa: F401  (registration)
from netc.cli.app import app as _app


def main() -> None:
    _app(prog_name="netc")
