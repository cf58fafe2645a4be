"""`netc cache info` and `netc cache clear`: where compiled code lives, how big it is, and a way to
start again from nothing (the layout is netc.codecache's)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from netc.cli.app import app, handle_errors, stdout_console

cache_app = typer.Typer(help="Where netc keeps compiled code (NETC_CACHE_DIR, default ~/.cache/netc): info, clear.",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")

# what netc writes under the root; `clear` removes these and nothing else
PARTS = {"plans": "generated plan modules, and markers of fused loops compiled on this machine",
         "numba": "machine code of the kernels and plans, one folder per netc/Numba/flags key"}


def _size(path: Path) -> tuple[int, int]:
    """(files, bytes) under `path`."""
    files = total = 0
    for item in path.rglob("*"):
        try:
            if item.is_file():
                files += 1
                total += item.stat().st_size
        except OSError:  # removed while we looked (another run clearing or rewriting)
            continue
    return files, total


def _human(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"


def _root() -> Path:
    from netc.codecache import wanted_root

    return wanted_root()


@cache_app.command("info")
@handle_errors
def info() -> None:
    """Where the cache is, how big each part is, and what the current key is."""
    from netc.codecache import code_digest

    root = _root()
    out = stdout_console()
    out.print(f"cache: {root}" + ("" if root.exists() else " (empty: nothing compiled yet)"))
    table = Table(show_edge=False)
    for column in ("part", "files", "size", "holds"):
        table.add_column(column, justify="right" if column in ("files", "size") else "left")
    total = 0
    for part, holds in PARTS.items():
        files, size = _size(root / part) if (root / part).exists() else (0, 0)
        total += size
        table.add_row(part + "/", f"{files:,}", _human(size), holds)
    out.print(table)
    key = code_digest()[:16]
    numba = root / "numba"
    keys = sorted(p.name for p in numba.iterdir() if p.is_dir()) if numba.exists() else []
    stale = [k for k in keys if k != key]
    plans = root / "plans"
    fused = len(list(plans.glob("*.fused"))) if plans.exists() else 0
    out.print(f"total: {_human(total)}; {fused} fused {'loop' if fused == 1 else 'loops'} ready")
    out.print(f"current key: numba/{key} (netc and Numba versions, kernel sources, jit flags, NUMBA_OPT)"
              + (f"; {len(stale)} older {'key' if len(stale) == 1 else 'keys'} unused by this netc" if stale else ""))


@cache_app.command("clear")
@handle_errors
def clear(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Remove every compiled kernel and plan: the next run compiles them again."""
    root = _root()
    present = [root / part for part in PARTS if (root / part).exists()]
    out = stdout_console()
    if not present:
        out.print(f"cache: {root} holds nothing to clear")
        return
    freed = sum(_size(path)[1] for path in present)
    if not yes and not typer.confirm(f"remove {_human(freed)} of compiled code under {root}?", default=False):
        raise typer.Exit(1)
    problems = []
    for path in present:
        shutil.rmtree(path, onerror=lambda function, name, exc: problems.append(f"{name}: {exc[1]}"))
    if problems:
        from netc.errors import Diagnostic, Location, RunError

        raise RunError(Diagnostic("E-CACHE", f"could not remove {len(problems)} cache entries "
                                  f"(first: {problems[0]})", Location(str(root)),
                                  hint="check the folder's permissions, or remove it by hand"))
    out.print(f"cleared {_human(freed)} under {root}")
