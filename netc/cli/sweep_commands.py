"""`netc sweep`: hyperparameter and architecture searches on Dask distributed, trials chosen by Optuna.

    netc sweep SWEEP.yaml             run it (same as `netc sweep run SWEEP.yaml`)
    netc sweep show sweeps/NAME       the leaderboard of a sweep folder
    netc sweep schema                 the sweep file's JSON Schema

Dask, distributed and Optuna are imported inside `run` (netc's 'sweep' extra); `show` and `schema`
need neither, and `netc validate` checks sweep files without them.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from netc.cli.app import app, handle_errors, stderr_console, stdout_console


class _RunByDefault(typer.core.TyperGroup):
    """`netc sweep SWEEP.yaml ...` is `netc sweep run SWEEP.yaml ...`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


sweep_app = typer.Typer(
    name="sweep",
    cls=_RunByDefault,
    help="Hyperparameter and architecture searches: `netc sweep SWEEP.yaml` runs the trials of a sweep file on "
         "Dask (an embedded cluster on this machine, or --scheduler ADDRESS) with Optuna choosing them; "
         "`netc sweep show FOLDER` prints the leaderboard. Needs netc's 'sweep' extra: "
         "pip install -e \".\\[sweep]\".",  # \\[: a bracket, not rich markup
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(sweep_app, name="sweep")


def sweep_command(name: str, **kwargs):
    def register(func):
        sweep_app.command(name, **kwargs)(handle_errors(func))
        return func

    return register


class ShowFormat(str, Enum):
    table = "table"
    markdown = "markdown"
    json = "json"


def metric_text(metric: str, value) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}%" if "accuracy" in metric else f"{value:.4f}"


def _difference(metric: str, goal: str, best: float, base: float) -> str:
    """How the best trial compares with the base spec, in the metric's units."""
    better = best > base if goal == "maximize" else best < base
    if "accuracy" in metric:
        gap = f"{abs(best - base) * 100:.2f} points"
    else:
        gap = f"{abs(best - base):.4f}"
    if best == base:
        return "the best trial ties with it"
    return f"the best trial is {gap} {'better' if better else 'worse'}"


def _values(params: dict) -> str:
    from netc.sweep.space import values_text

    return values_text(params)


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}:{rest:02d}"


def _trial_line(record: dict) -> str:
    label = str(record["trial"])
    epochs = len(record.get("epochs") or [])
    text = (f"{'base spec' if label == 'base' else f'trial {label:>3}'}  {record['status']:<8}  {record['metric']} "
            f"{metric_text(record['metric'], record.get('value')):>7}  {epochs:>3} epochs  "
            f"{_seconds(record.get('seconds') or 0.0)}")
    if record.get("params"):
        text += f"  {_values(record['params'])}"
    if record.get("attempt", 1) > 1:
        text += f"  (try {record['attempt']})"
    if record.get("message"):
        text += f"\n    {record['message']}"
    return text


def _live(progress) -> Group:
    """The live view: counts, best so far, ETA; the trials running now; the top five."""
    metric = progress.metric
    head = Text.assemble(
        ("trials ", "bold"), f"{progress.done}/{progress.total} done  ", (f"{len(progress.running)} running", "cyan"),
        "  ", (f"{progress.failed} failed", "red" if progress.failed else ""), f"  {progress.pruned} pruned  ",
        ("best ", "bold"), metric_text(metric, progress.best["value"]) if progress.best else "-",
        f" (trial {progress.best['trial']})" if progress.best else "", "  ETA ", _eta(progress.eta()))
    running = Table(title="running", title_justify="left", expand=False)
    for column in ("trial", "worker", "epoch", metric, "values"):
        running.add_column(column)
    for run in sorted(progress.running.values(), key=lambda r: (r.label != "base", r.label.zfill(6))):
        running.add_row(*(Text(cell) for cell in (run.label, run.worker.replace("tcp://", ""),
                                                  f"{run.epoch}/{run.epochs}", metric_text(metric, run.value),
                                                  _values(run.values))))
    return Group(head, running)


@sweep_command("run")
def run(
    sweep: Annotated[Path, typer.Argument(help="The sweep file.", show_default=False)],
    workers: Annotated[Optional[int], typer.Option(min=1, help="Worker processes of the embedded cluster (one "
                                                             "thread each; default: one per core).")] = None,
    scheduler: Annotated[Optional[str], typer.Option(help="Run on a running Dask cluster: its scheduler's address "
                                                        "(tcp://HOST:8786, tls://HOST:8786) instead of an embedded "
                                                        "one.", show_default=False)] = None,
    tls_ca_file: Annotated[Optional[Path], typer.Option(help="tls://: the CA certificate (else Dask's "
                                                           "configuration).", show_default=False)] = None,
    tls_cert: Annotated[Optional[Path], typer.Option(help="tls://: this client's certificate.",
                                                     show_default=False)] = None,
    tls_key: Annotated[Optional[Path], typer.Option(help="tls://: this client's private key.",
                                                    show_default=False)] = None,
    dashboard: Annotated[bool, typer.Option(help="Serve the embedded cluster's Dask dashboard on "
                                                 "http://127.0.0.1:8787 (off by default).")] = False,
    out: Annotated[Optional[Path], typer.Option(help="The sweep folder (default sweeps/<name>).",
                                                show_default=False)] = None,
    resume: Annotated[bool, typer.Option(help="Continue the sweep in the folder: finished trials are kept, "
                                              "unfinished ones run again.")] = False,
    ship: Annotated[bool, typer.Option(help="Workers send each trial's files back instead of writing into the "
                                            "sweep folder (the default when they cannot see it).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")] = False,
) -> None:
    """Run a sweep: trials on Dask, chosen by Optuna, recorded in a sweep folder (trials.jsonl, each trial's run
    folder, best/, pictures). Ctrl-C stops it cleanly; --resume continues it."""
    from netc.sweep.cluster import TlsFiles, cores, require_dask
    from netc.sweep.load import load_sweep
    from netc.sweep.runner import Options, Runner, default_folder

    require_dask()  # before anything is read or made
    loaded = load_sweep(sweep)
    if (tls_ca_file or tls_cert or tls_key) and not scheduler:
        raise typer.BadParameter("TLS files are for --scheduler tls://...", param_hint="--tls-ca-file")
    if workers is not None and scheduler:
        raise typer.BadParameter("--workers sizes the embedded cluster; a running one has its own workers",
                                 param_hint="--workers")
    options = Options(out=out, resume=resume, workers=workers, scheduler=scheduler,
                      tls=TlsFiles(*(str(p) if p else None for p in (tls_ca_file, tls_cert, tls_key))),
                      dashboard=dashboard, ship=ship)
    out_console, err = stdout_console(), stderr_console()
    terminal = out_console.is_terminal and not quiet
    folder = out or default_folder(loaded)
    sweep_spec = loaded.sweep
    where = f"the Dask cluster at {scheduler}" if scheduler else \
        f"{workers or cores()} local {'worker' if (workers or cores()) == 1 else 'workers'} (127.0.0.1 only)"
    if not quiet:
        out_console.print(f"sweep {loaded.name}: {sweep_spec.trial_count} trials ({sweep_spec.method}) of "
                          f"{loaded.base.file}, {sweep_spec.metric.name} ({sweep_spec.metric.direction}), on {where}",
                          soft_wrap=True, markup=False)
    live = Live(console=out_console, auto_refresh=False, transient=True) if terminal else None

    def on_update(progress) -> None:
        if live is not None:
            live.update(_live(progress), refresh=True)

    def on_trial(record, progress) -> None:
        if quiet:
            return
        (live.console if live is not None else out_console).print(_trial_line(record), soft_wrap=True,
                                                                   markup=False)

    def on_note(text: str) -> None:
        err.print(f"netc: {text}", soft_wrap=True, markup=False, style="yellow")

    runner = Runner(loaded, options, on_update=on_update, on_trial=on_trial, on_note=on_note)
    if live is not None:
        with live:
            result = runner.run()
    else:
        result = runner.run()
    _summary(result, loaded, sweep, folder)
    if result.interrupted:
        raise typer.Exit(130)


def _summary(result, loaded, sweep: Path, folder: Path) -> None:
    out = stdout_console()
    progress = result.progress
    metric, goal = progress.metric, progress.goal
    counts = f"{progress.complete} complete, {progress.pruned} pruned, {progress.failed} failed"
    if result.interrupted:
        stderr_console().print(f"interrupted: {progress.done} of {progress.total} trials finished ({counts}); "
                               f"continue with: netc sweep {sweep} --resume"
                               + (f" --out {folder}" if folder != Path("sweeps") / loaded.name else ""),
                               soft_wrap=True, markup=False)
    else:
        out.print(f"done: {progress.done} trials ({counts}) in {_seconds(result.seconds)}", markup=False)
    best, base = progress.best, progress.base
    if best is not None:
        out.print(f"best: trial {best['trial']}, {metric} {metric_text(metric, best['value'])} "
                  f"({_values(best['params'])})", soft_wrap=True, markup=False)
    if base is not None and base.get("value") is not None:
        line = f"base spec: {metric} {metric_text(metric, base['value'])}"
        if best is not None:
            line += f"; {_difference(metric, goal, best['value'], base['value'])}"
        out.print(line, markup=False)
    elif base is not None:
        out.print(f"base spec: failed ({base.get('message', '')})", soft_wrap=True, markup=False)
    from netc.sweep.folder import BEST

    files = [name for name in ("trials.jsonl", "study.db", "trials/", "best/", "params.png", "parallel.png")
             if (result.folder / name.rstrip("/")).exists()]
    out.print(f"sweep folder: {result.folder} ({', '.join(files)})", soft_wrap=True, markup=False)
    if best is not None and (result.folder / BEST).is_dir():
        out.print(f"leaderboard: netc sweep show {result.folder}", soft_wrap=True, markup=False)


@sweep_command("show")
def show(
    folder: Annotated[Path, typer.Argument(help="A sweep folder (sweeps/<name>).", show_default=False)],
    format: Annotated[ShowFormat, typer.Option("--format", "-f", help="table, markdown or json.")] = ShowFormat.table,
    top: Annotated[Optional[int], typer.Option(min=1, help="Only the best N trials.", show_default=False)] = None,
    pictures: Annotated[bool, typer.Option(help="Draw params.png and parallel.png again.")] = False,
) -> None:
    """The leaderboard of a sweep folder: trials best first (then pruned, then failed), the base spec's run."""
    from netc.sweep.folder import BASE, SweepFolder, is_sweep_folder, leaderboard, sweep_error

    if not is_sweep_folder(folder):
        raise sweep_error("not a sweep folder (no sweep.json)", folder, "pass the folder `netc sweep` wrote: "
                          "sweeps/<name> or its --out")
    sweep_folder = SweepFolder(folder)
    info = sweep_folder.info
    records = sweep_folder.records()
    metric, goal = info["metric"]["name"], info["metric"]["goal"]
    everything = leaderboard(records, goal)
    ranked = everything[:top] if top else everything
    base = records.get(BASE)
    paths = list(info["space"])
    if format is ShowFormat.json:
        typer.echo(json.dumps({"name": info.get("name"), "metric": info["metric"], "method": info.get("method"),
                               "trials": ranked, "base": base}, indent=2))
        return
    headers = ["#", "trial", "status", metric, *paths, "epochs", "seconds"]
    rows = []
    for rank, record in enumerate(ranked, 1):
        rows.append([str(rank) if record["status"] == "complete" else "", str(record["trial"]), record["status"],
                     metric_text(metric, record.get("value")),
                     *(_param(record["params"].get(p)) for p in paths), str(len(record.get("epochs") or [])),
                     _seconds(record.get("seconds") or 0.0)])
    if base is not None:
        rows.append(["", "base", base["status"], metric_text(metric, base.get("value")),
                     *(_param(_base_value(sweep_folder, p)) for p in paths), str(len(base.get("epochs") or [])),
                     _seconds(base.get("seconds") or 0.0)])
    counts = {status: sum(r["status"] == status for r in everything) for status in ("complete", "pruned", "failed")}
    title = (f"sweep {info.get('name')}: {metric} ({goal}), {info.get('method')}; {len(everything)} trials: "
             + ", ".join(f"{count} {status}" for status, count in counts.items())
             + (f"; the best {len(ranked)}" if top and top < len(everything) else ""))
    if format is ShowFormat.markdown:
        typer.echo(f"{title}\n")
        typer.echo("| " + " | ".join(headers) + " |")
        typer.echo("|" + "|".join("---:" if h in ("#", "trial", "epochs", "seconds") or h == metric else "---"
                                  for h in headers) + "|")
        for row in rows:
            typer.echo("| " + " | ".join(row) + " |")
    else:
        table = Table(title=Text(title))  # Text: spec paths hold brackets that are not markup
        for header in headers:
            table.add_column(Text(header), justify="right" if header in ("#", "trial", "epochs", "seconds", metric)
                             else "left")
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))
        stdout_console().print(table)
    failed = [r for r in ranked if r["status"] == "failed" and r.get("message")]
    for record in failed:
        stdout_console().print(f"trial {record['trial']} failed: {record['message']}", soft_wrap=True, markup=False)
    if pictures:
        from netc.sweep.pictures import draw_sweep

        for path in draw_sweep(sweep_folder):
            stdout_console().print(f"wrote {path}", soft_wrap=True, markup=False)


def _param(value) -> str:
    from netc.sweep.space import value_text

    return "-" if value is None else value_text(value)


def _base_value(folder, path: str):
    """The base spec's own value of a spec path (from the copy in the sweep folder)."""
    import yaml

    from netc.sweep.paths import PathError, get_value

    try:
        value = get_value(yaml.safe_load(folder.saved("spec.yaml")), path)
    except (PathError, yaml.YAMLError, TypeError):
        return None
    return value if isinstance(value, (int, float, str, bool)) else None


@sweep_command("schema")
def schema(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file instead of stdout.",
                                                   show_default=False)] = None,
) -> None:
    """Print the JSON Schema of the sweep file (for editors: yaml-language-server, VS Code)."""
    from netc.cli.spec_commands import write_schema
    from netc.sweep.model import sweep_schema

    write_schema(sweep_schema(), output)
