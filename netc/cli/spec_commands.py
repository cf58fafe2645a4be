"""Commands that read specs without data or compiling: validate, inspect, schema.

Nothing here imports numba or the compiler: `netc validate` on a hundred specs
takes about as long as Python takes to start.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from netc import report
from netc.cli.app import command, render_diagnostics, stderr_console, stdout_console
from netc.errors import Diagnostic, Location, SpecErrors


class ValidateFormat(str, Enum):
    text = "text"
    json = "json"
    github = "github"


class InspectFormat(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"
    dot = "dot"
    mermaid = "mermaid"


@command("validate")
def validate(
    specs: Annotated[
        list[str],
        typer.Argument(help="Spec files, folders (every *.yaml/*.yml inside, recursively) or quoted globs.",
                       show_default=False),
    ],
    format: Annotated[
        ValidateFormat,
        typer.Option("--format", "-f", help="text; json (one document); github (workflow annotations)."),
    ] = ValidateFormat.text,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also list the valid (and skipped) files.")] = False,
    only_specs: Annotated[bool, typer.Option(
        "--only-specs", help="Skip YAML files without a top-level `netc:` key (CI configs, compose, k8s files), "
                             "as a pre-commit hook over a whole repository needs.")] = False,
) -> None:
    """Check specs without data: schema, references, shapes, sharing, loss.

    Reports every error of every file. Exit code 0 when all are valid, 1 when
    any is not, 2 when nothing matched.
    """
    files, unmatched = report.find_spec_files(specs)
    err = stderr_console()
    for pattern in unmatched:
        err.print(f"warning: no spec files match '{pattern}'", style="yellow", markup=False, soft_wrap=True)
    if not files:
        err.print("error: no spec files to validate", style="bold red", markup=False)
        raise typer.Exit(2)
    skipped = [path for path in files if only_specs and not report.is_spec_file(path)]
    files = [path for path in files if path not in skipped]
    results = [report.validate_file(path) for path in files]
    out = stdout_console()
    if format is ValidateFormat.json:
        typer.echo(json.dumps(report.validation_dict(results, skipped), indent=2))
    elif format is ValidateFormat.github:
        for result in results:
            for diag in result.diagnostics:
                typer.echo(report.github_annotation(diag))
        typer.echo(report.validation_summary(results, len(skipped)))
    else:
        for result in results:
            if result.valid:
                if verbose:
                    out.print(f"ok      {result.file}", style="green", markup=False, soft_wrap=True)
            else:
                render_diagnostics(result.diagnostics)
        if verbose:
            for path in skipped:
                out.print(f"skipped {path} (no 'netc:' key)", style="dim", markup=False, soft_wrap=True)
        all_valid = all(result.valid for result in results)
        out.print(report.validation_summary(results, len(skipped)), style="bold green" if all_valid else "bold red",
                  markup=False, soft_wrap=True)
    if not all(result.valid for result in results):
        raise typer.Exit(1)


@command("inspect")
def inspect(
    spec: Annotated[Path, typer.Argument(help="The spec file.", show_default=False)],
    batch: Annotated[
        Optional[int],
        typer.Option("--batch", "-b", min=1, help="Batch size for the memory estimate (default: the spec's train.batch)."),
    ] = None,
    format: Annotated[
        InspectFormat,
        typer.Option("--format", "-f", help="table; json; markdown; dot (Graphviz); mermaid."),
    ] = InspectFormat.table,
    plan: Annotated[
        bool, typer.Option("--plan", help="Also compile the plan and show its kernels, arenas and generated source."),
    ] = False,
    expand: Annotated[
        bool, typer.Option("--expand", "-e", help="Show every layer of each block instance (default: one row per "
                                                  "instance; json always lists every layer)."),
    ] = False,
) -> None:
    """Summarize a spec without data: shapes, params, sharing, mult-adds, memory.

    Params of a shared tensor are counted once. Mult-adds are the
    multiply-accumulates of linear/conv weights per sample, as torchinfo.
    A block instance is one row unless --expand.
    """
    from netc.graph import build_graph
    from netc.spec import load_spec

    with report.gc_paused():
        graph = build_graph(load_spec(spec), check_memory_for_batch=False)  # inspect shows the need instead
        summary = report.summarize(graph, batch, expand)
        if format is InspectFormat.table:
            _print_wide(report.summary_renderable(summary))
        elif format is InspectFormat.json:
            typer.echo(report.to_json(summary))
        elif format is InspectFormat.markdown:
            typer.echo(report.to_markdown(summary), nl=False)
        elif format is InspectFormat.dot:
            typer.echo(report.to_dot(summary), nl=False)
        else:
            typer.echo(report.to_mermaid(summary), nl=False)
    if plan:  # imported here: the compiler pulls in Numba, which the other formats never need
        from netc.compiler import compile_graph
        from netc.compiler.describe import plan_renderable

        _print_wide(plan_renderable(compile_graph(graph, batch)))


def _print_wide(renderable) -> None:
    """Print at the terminal's width, or, when piped, as wide as the table needs (stdout_console:
    no wrapped cells, no trailing padding)."""
    stdout_console().print(renderable)


@command("schema")
def schema(
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Write to this file instead of stdout.", show_default=False),
    ] = None,
) -> None:
    """Print the JSON Schema of the spec language (for editors: yaml-language-server, VS Code)."""
    write_schema(report.spec_schema(), output)


def write_schema(schema: dict, output: Path | None) -> None:
    """A JSON Schema to stdout, or to `output` (E-FILE when it cannot be written)."""
    text = json.dumps(schema, indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise SpecErrors(Diagnostic("E-FILE", f"cannot write the schema: {exc.strerror}",
                                    Location(str(output)))) from None
    stderr_console().print(f"wrote {output}", markup=False, soft_wrap=True)
