"""`netc server status` and `netc server stop`: the netc servers of this user (netc.server), which run
commands in processes forked from a netc already loaded."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer
from rich.table import Table

from netc.cli.app import app, handle_errors, stdout_console

server_app = typer.Typer(help="The netc servers that run commands without a fresh start (NETC_SERVER=0: none): "
                              "status, stop.", no_args_is_help=True)
app.add_typer(server_app, name="server")


def _ask_every_server(query: str) -> tuple[Path | None, list[tuple[str, dict]]]:
    """(the servers' folder, [(key, answer)] of every server that answered the query)."""
    from netc import client
    from netc.errors import Diagnostic, Location, RunError

    try:
        folder = Path(client.server_dir())
    except client.Unusable as exc:
        raise RunError(Diagnostic("E-SERVER", f"the netc server folder is not usable: {exc}",
                                  Location("NETC_SERVER_DIR"), hint="set NETC_SERVER_DIR to a folder of yours alone")) \
            from None
    answers = []
    for path in sorted(folder.glob("*.sock")):
        sock = client._connect(str(path))
        if sock is None:  # left by a server that ended: the next one for its key replaces it
            continue
        try:
            client.send_message(sock, {"query": query, "asker": os.getpid()})
            answer = client.receive_message(sock)
        except OSError:
            answer = None
        finally:
            sock.close()
        if answer is not None:
            answers.append((path.stem, answer))
    return folder, answers


@server_app.command("status")
@handle_errors
def status() -> None:
    """The servers running: their process, age, commands served and running, and whether they serve
    this netc (the same sources, interpreter and settings)."""
    from netc import client

    folder, answers = _ask_every_server("status")
    out = stdout_console()
    using = "on" if client.servers_wanted() else "off (NETC_SERVER=0, or a CI job)"
    if not answers:
        out.print(f"no netc server is running in {folder} (servers: {using}"
                  + ("; the next command starts one)" if client.servers_wanted() else ")"))
        return
    current = os.environ.get("NETC_SERVER_KEY") or client.server_key()  # the key the `netc` client computed
    table = Table(show_edge=False)
    for column in ("key", "pid", "up", "served", "running", "leaves when idle", "serves"):
        table.add_column(column, justify="right" if column in ("pid", "served", "running") else "left")
    for key, answer in answers:
        table.add_row(key, str(answer["pid"]), _duration(time.time() - answer["started"]), str(answer["served"]),
                      str(answer["running"]), "stopping" if answer["stopping"] else f"{_duration(answer['idle'])}",
                      "this netc" if key == current else "another netc or settings")
    out.print(f"netc servers in {folder} (servers: {using})")
    out.print(table)


@server_app.command("stop")
@handle_errors
def stop() -> None:
    """Stop every server of this user: none takes a new command; running ones finish first."""
    folder, answers = _ask_every_server("stop")
    running = sum(answer["running"] for _, answer in answers)
    stdout_console().print(f"stopped {len(answers)} netc {'server' if len(answers) == 1 else 'servers'} in {folder}"
                           + (f" ({running} running {'command finishes' if running == 1 else 'commands finish'} "
                              "first)" if running else ""))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
