"""The typer app, and the one place where errors are shown to a user.

Every command is registered with `command()`, which turns a `NetcError` into
`render_errors` output on stderr and exit code 1 — never a traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Annotated, Callable, Iterable

import typer
from rich.console import Console
from rich.text import Text

from netc import __version__
from netc.errors import Diagnostic, NetcError

# a test checks that SUMMARY names every command
SUMMARY = ("netc - a declarative neural-network compiler for YAML network specs: validate, inspect, schema, "
           "train, eval, predict, sample, gradcheck, time, plot, viz, export, cache, server, warmup, sweep.")

# True when this process runs one command and leaves (the console script, `python -m netc.cli`), not
# when the app is called in a longer-lived process (tests, a notebook): work that pays off only in a
# fresh process (the curves painter) looks here
OWN_PROCESS = False

app = typer.Typer(
    name="netc",
    help=SUMMARY,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _TrimmedLines:
    """A text stream that drops the spaces at the end of each line it passes on: rich pads table
    cells to their column's width, which a log file or a `diff` should not see."""

    def __init__(self, stream):
        self.stream, self.pending = stream, ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        if lines:
            self.stream.write("".join(line.rstrip(" ") + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.stream.write(self.pending.rstrip(" "))
            self.pending = ""
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def _console(stream, stderr: bool = False) -> Console:
    """A console on a stream; when it is not a terminal (a pipe, a file, a CI log) lines are never
    wrapped nor padded, so `run folder: ...` and copy-paste commands stay whole."""
    if stream.isatty():
        return Console(stderr=stderr, highlight=False)
    return Console(file=_TrimmedLines(stream), highlight=False, soft_wrap=True, width=10_000)


def stdout_console() -> Console:
    """A console on the current stdout (made per call so redirection and tests see the output)."""
    return _console(sys.stdout)


def stderr_console() -> Console:
    return _console(sys.stderr, stderr=True)


def render_diagnostics(diagnostics: Iterable[Diagnostic], console: Console | None = None) -> None:
    """`file:line:col: error[CODE]: message (at path)` and an indented `hint:` line for each, in red."""
    console = console or stderr_console()
    for diag in diagnostics:
        line = Text()
        if diag.location.file:
            line.append(f"{diag.location}: ", style="bold")
        line.append(f"error[{diag.code}]", style="bold red")
        line.append(f": {diag.message}", style="red")
        if diag.path:
            line.append(f" (at {diag.path})", style="dim")
        console.print(line, soft_wrap=True)  # soft_wrap: one line per error, whatever the width
        if diag.hint:
            console.print(Text.assemble(("  hint: ", "yellow"), diag.hint), soft_wrap=True)


def render_errors(exc: NetcError) -> None:
    """Show every diagnostic of a NetcError on stderr."""
    render_diagnostics(exc.diagnostics)


def handle_errors(func: Callable) -> Callable:
    """Wrap a command: a NetcError is rendered and exits with code 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except NetcError as exc:
            render_errors(exc)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            stderr_console().print(Text("interrupted", style="yellow"))
            raise typer.Exit(130) from None

    return wrapper


def command(name: str | None = None, **kwargs) -> Callable:
    """Register a command on `app` with the error handling every netc command has.

        @command("inspect")
        def inspect(spec: Path): ...
    """

    def register(func: Callable) -> Callable:
        app.command(name, **kwargs)(handle_errors(func))
        return func

    return register


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"netc {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", help="Show the netc version and exit.", callback=_show_version,
                     is_eager=True),
    ] = False,
) -> None:
    # the help text is SUMMARY, given to typer.Typer above
    return None
