"""Commands that compile and run a spec: train, eval, gradcheck.

Numba and the compiler are imported inside the commands, so `netc validate` never pays for them.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from netc.cli.app import command, stderr_console, stdout_console
from netc.cli.viz_commands import PICTURE_FORMATS
from netc.spec import load_spec


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


class Tier(str, Enum):
    auto = "auto"
    fused = "fused"
    python = "python"


def _plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


@command("train")
def train(
    spec: Annotated[Path, typer.Argument(help="The spec to train.")],
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Override train.epochs.")] = None,
    lr: Annotated[Optional[float], typer.Option(min=0.0, help="Override optimizer.lr.")] = None,
    batch: Annotated[Optional[int], typer.Option(min=1, help="Override train.batch.")] = None,
    seed: Annotated[Optional[int], typer.Option(min=0, help="Override train.seed.")] = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/<name>, numbered if taken).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --run-dir (default: the latest run of this spec).")] = False,
    init: Annotated[Optional[Path], typer.Option(help="Load matching weights from this checkpoint first.")] = None,
    force: Annotated[bool, typer.Option(help="Write into a --run-dir that is not a netc run folder (never over "
                                             "files netc did not write).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the final summary.")] = False,
    tier: Annotated[Tier, typer.Option(help="auto: the fused loop when compiled, else start on the Python tier "
                                           "while it compiles in the background; fused: compile it first; "
                                           "python: never compile glue. Same numbers in every tier.")] = Tier.auto,
    tensorboard: Annotated[bool, typer.Option(help="Also write TensorBoard events into the run folder: loss, "
                                                   "accuracy, lr, speed and weight histograms per epoch "
                                                   "(tensorboard --logdir runs). Needs tensorboardX, netc's "
                                                   "'tensorboard' extra.")] = False,
) -> None:
    """Train a spec: progress, eval each epoch, checkpoints and metrics in a run folder."""
    from netc.cli import app as cli_app
    from netc.compiler import kernel_library
    from netc.viz.curves import save_run_curves
    from netc.viz.painter import CurvesPainter

    # in a process of its own without matplotlib loaded (a netc server's child has it), curves.png is drawn
    # by a painter that imports it meanwhile, and on a machine where netc compiled nothing yet, the kernel
    # compilers start while the spec is read
    fresh = cli_app.OWN_PROCESS and "matplotlib" not in sys.modules
    draw_curves = CurvesPainter() if fresh else save_run_curves
    if cli_app.OWN_PROCESS:
        kernel_library.start_early()
    try:
        _train(spec, epochs, lr, batch, seed, run_dir, resume, init, force, quiet, tier, tensorboard, draw_curves)
    finally:
        kernel_library.stop_early()
        if isinstance(draw_curves, CurvesPainter):
            draw_curves.close()


def _train(spec, epochs, lr, batch, seed, run_dir, resume, init, force, quiet, tier, tensorboard, draw_curves):
    import time

    from netc.compiler import kernel_library
    from netc.runtime.rundir import RUN_FILES
    from netc.runtime.train import Overrides, Trainer

    out = stdout_console()
    log = not out.is_terminal  # a pipe or a log file: plain lines instead of a live progress bar
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[stats]}"),
                        TimeElapsedColumn(), console=out, transient=True, disable=quiet or not out.is_terminal)
    task = progress.add_task("compiling", total=None, stats="")

    def on_progress(epoch, done, total, loss, accuracy, rate):
        acc = f"  acc {_percent(accuracy)}" if accuracy is not None else ""
        progress.update(task, description=f"epoch {epoch + 1}/{trainer.spec.train.epochs}", total=total,
                        completed=done, stats=f"loss {loss:.4f}{acc}  {rate:,.0f} samples/s")

    def on_epoch(record):
        if board is not None:
            board.epoch(record)
        if quiet:
            return
        evaluated = ""
        if record.eval_loss is not None:
            evaluated = f"  eval loss {record.eval_loss:.4f}"
            if record.eval_accuracy is not None:
                evaluated += f"  eval acc {_percent(record.eval_accuracy)}"
            if record.eval_top_k_accuracy is not None:
                evaluated += f"  top-{trainer.spec.train.top_k} {_percent(record.eval_top_k_accuracy)}"
        if record.losses:  # several losses: each one's training mean
            evaluated += "  (" + ", ".join(f"{key[len('train_'):]} {value:.4f}" for key, value in record.losses.items()
                                           if key.startswith("train_")) + ")"
        acc = f"  acc {_percent(record.train_accuracy)}" if record.train_accuracy is not None else ""
        progress.console.print(f"epoch {record.epoch:>3}  loss {record.train_loss:.4f}{acc}{evaluated}"
                               f"  ({record.seconds:.2f} s, {record.samples_per_second:,.0f} samples/s)",
                               soft_wrap=True)

    def on_init(report):
        progress.console.print(f"init: loaded {len(report.matched)} tensors ({', '.join(report.matched)})")
        if report.missing:
            progress.console.print(f"  kept initial values: {', '.join(report.missing)}")
        if report.unexpected:
            progress.console.print(f"  ignored (not in this model): {', '.join(report.unexpected)}")
        for name, want, got in report.mismatched:
            progress.console.print(f"  ignored {name}: checkpoint {list(got)} vs model {list(want)}")

    def on_resume(folder, done, total):
        if done < total:
            progress.console.print(f"resuming {folder} from epoch {done + 1} of {total}")

    board = None
    if tensorboard:  # a missing tensorboardX is an error before the run folder is made
        from netc.runtime.tensorboard import TensorBoardLog, require_tensorboardx

        require_tensorboardx()
    trainer = Trainer(load_spec(spec), Overrides(epochs, lr, batch, seed), run_dir=run_dir, resume=resume,
                      init=str(init) if init else None, on_progress=on_progress, on_epoch=on_epoch, on_init=on_init,
                      on_resume=on_resume, force=force, on_finish=draw_curves, tier=tier.value)
    if tensorboard:
        board = TensorBoardLog(trainer.run_dir, trainer.model.get_weights)
    with progress, board or contextlib.nullcontext():  # the event file is closed however the run ends
        if log and not quiet:
            progress.console.print(f"preparing the compiled plan of '{trainer.spec.name}' "
                                   "(a spec's first run compiles it)")
        started = time.perf_counter()
        def on_compile(count: int) -> None:
            if not quiet:
                processes = "1 process" if count == 1 else "2 processes"
                progress.console.print(f"compiling netc's kernels for this machine (once): {count} in {processes}")

        compiled = trainer.model.warm_up(on_compile)
        kernel_library.stop_early()  # workers started early and not needed (a fused plan) leave now
        if not quiet and (log or compiled):
            seconds = time.perf_counter() - started
            if trainer.model.tier == "python":
                progress.console.print(f"plan started on the Python tier in {seconds:.1f} s")
                if trainer.model.compiles_in_background:
                    progress.console.print("its fused loop compiles in the background (once per plan); "
                                           "the run moves to it when it is ready")
            else:
                how = "compiled" if compiled else "loaded from the cache"
                progress.console.print(f"plan {how} in {seconds:.1f} s")
        result = trainer.run()
    if result.interrupted:
        stderr_console().print(f"interrupted: saved {result.run_dir / 'last.safetensors'}; "
                               f"continue with: netc train {spec} --resume --run-dir {result.run_dir}")
        raise typer.Exit(130)
    if result.already_finished:
        done = result.start_epoch
        out.print(f"{result.run_dir} is finished: {done} {_plural(done, 'epoch')} done; "
                  f"pass --epochs N (more than {done}) to train it longer")
        return
    last = result.epochs[-1] if result.epochs else None
    if last is not None:
        line = f"done: {last.epoch} {_plural(last.epoch, 'epoch')}, loss {last.train_loss:.4f}"
        if last.eval_accuracy is not None:
            line += f", eval accuracy {_percent(last.eval_accuracy)}"
        out.print(line)
    if result.stopped_early is not None:
        rule = trainer.spec.train.early_stop
        out.print(f"stopped early after epoch {result.stopped_early}: no {rule.monitor} improvement "
                  f"for {rule.patience} {_plural(rule.patience, 'epoch')}")
    if result.best is not None:
        epoch, metric, value = result.best
        shown = _percent(value) if metric.endswith("accuracy") else f"{value:.4f}"
        out.print(f"best: epoch {epoch} ({metric} {shown}), in best.safetensors")
    files = [name for name in RUN_FILES if (result.run_dir / name).exists()]
    out.print(f"run folder: {result.run_dir} ({', '.join(files)})")
    if board is not None:
        out.print(f"tensorboard events: {result.run_dir} (see them with: tensorboard --logdir {result.run_dir.parent})")


@command("eval")
def evaluate(
    spec: Annotated[Path, typer.Argument(help="The spec the weights belong to.")],
    weights: Annotated[Path, typer.Option(help="A checkpoint (.safetensors).")],
    split: Annotated[str, typer.Option(help="Which data: eval or train.")] = "eval",
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="table or json.")] = OutputFormat.table,
    plot: Annotated[Optional[Path], typer.Option(help="Also draw the confusion matrix into this picture; its "
                                                      f"suffix picks the format: {PICTURE_FORMATS}.")] = None,
    top_k: Annotated[Optional[int], typer.Option(min=1, help="Also the top-k accuracy: the class among the k "
                                                             "highest scores.")] = None,
) -> None:
    """Loss, accuracy, the confusion matrix and per-class precision, recall and F1 (with their macro
    averages) of a checkpoint on the spec's data."""
    from netc.runtime.train import evaluate_checkpoint

    if split not in ("eval", "train"):
        raise typer.BadParameter("split is eval or train", param_hint="--split")
    loaded = load_spec(spec)
    result = evaluate_checkpoint(loaded, weights, split)
    if plot is not None:
        from netc.viz import confusion_picture

        confusion_picture(loaded, result, split, plot)
    from netc.runtime.metrics import per_class, top_k_accuracy

    figures = per_class(result.confusion) if result.confusion is not None else None
    if top_k is not None and figures is None:
        raise typer.BadParameter("top-k accuracy needs classes; this spec's loss is mse on a float target",
                                 param_hint="--top-k")
    top = top_k_accuracy(result.scores, result.labels, top_k) if top_k is not None else None
    # a language model (text source): its loss in bits per character, the measure such models are compared by
    bits = result.loss / math.log(2) if _reads_text(loaded, split) else None
    if format == OutputFormat.json:
        stdout_console().print_json(json.dumps({
            "loss": result.loss, "accuracy": result.accuracy, "count": result.count,
            **({"bits_per_character": bits} if bits is not None else {}),
            "confusion": result.confusion.tolist() if result.confusion is not None else None,
            "per_class": figures["classes"] if figures else None, "macro": figures["macro"] if figures else None,
            **({"top_k": {"k": top_k, "accuracy": top}} if top_k is not None else {})}))
        return
    out = stdout_console()
    out.print(f"{split}: {result.count} samples  loss {result.loss:.4f}  accuracy {_percent(result.accuracy)}"
              + (f"  top-{top_k} accuracy {_percent(top)}" if top_k is not None else "")
              + (f"  {bits:.3f} bits per character" if bits is not None else ""))
    if bits is not None:  # a table per character of the vocabulary says little; --format json has it
        out.print("confusion matrix and per-class figures: --format json")
    elif result.confusion is not None:
        table = Table(title="confusion matrix (rows: true class, columns: predicted)")
        classes = len(result.confusion)
        table.add_column("true")
        for j in range(classes):
            table.add_column(str(j), justify="right")
        for i in range(classes):
            table.add_row(str(i), *(f"[bold]{v}[/bold]" if i == j else str(v) for j, v in enumerate(result.confusion[i])))
        out.print(table)
        scores = Table(title="per class")
        for column in ("class", "precision", "recall", "f1", "support"):
            scores.add_column(column, justify="right")
        for row in figures["classes"]:
            scores.add_row(str(row["class"]), f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}",
                           str(row["support"]))
        macro = figures["macro"]
        scores.add_row("macro", f"{macro['precision']:.4f}", f"{macro['recall']:.4f}", f"{macro['f1']:.4f}",
                       str(result.count))
        out.print(scores)
    if plot is not None:
        out.print(f"confusion matrix picture: {plot}")


def _reads_text(loaded, split: str) -> bool:
    """Whether the split's samples come from a text source (an eval held out of train: train's source)."""
    data = loaded.spec.data
    if data is None:
        return False
    source = data.eval if split == "eval" and data.eval is not None else data.train
    return getattr(source, "source", getattr(data.train, "source", None)) == "text"


@command("warmup")
def warmup() -> None:
    """Compile netc's kernel library for this machine (float32 and float64, two processes at once),
    once. `netc train` compiles the kernels it needs by itself; this does all of them ahead of time."""
    import time

    from netc.runtime.warmup import warmup as compile_library

    out = stdout_console()
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[stats]}"),
                        TimeElapsedColumn(), console=out, transient=True, disable=not out.is_terminal)
    task = progress.add_task("compiling netc's kernels for this machine", total=None, stats="")

    def on_progress(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total, stats=f"{done}/{total}")

    started = time.perf_counter()
    with progress:
        compiled, ready = compile_library(on_progress)
    seconds = time.perf_counter() - started
    if compiled:
        out.print(f"compiled {compiled} kernel {_plural(compiled, 'signature')} in {seconds:.1f} s "
                  f"({ready} were compiled already)")
    else:
        out.print(f"netc's kernels are compiled for this machine ({ready} {_plural(ready, 'signature')})")


@command("gradcheck")
def gradcheck_command(
    spec: Annotated[Path, typer.Argument(help="The spec to check.")],
    samples: Annotated[int, typer.Option(min=1, help="Random samples in the batch.")] = 4,
    entries: Annotated[int, typer.Option(min=1, help="Entries checked per tensor (sampled when larger).")] = 30,
    tolerance: Annotated[float, typer.Option(help="Largest accepted relative error.")] = 1e-6,
    seed: Annotated[int, typer.Option(help="Seed of the data and the sampled entries.")] = 0,
    training: Annotated[bool, typer.Option("--training", help="Check in training mode (batch statistics, dropout "
                                                                 "masks from --seed) instead of evaluation mode.")] = False,
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="table or json.")] = OutputFormat.table,
) -> None:
    """Central finite differences in float64 against the compiled backward pass; exit 1 above --tolerance."""
    from netc.graph import build_graph
    from netc.runtime.gradcheck import gradcheck

    graph = build_graph(load_spec(spec))
    results = gradcheck(graph, count=samples, max_entries=entries, seed=seed, tolerance=tolerance, training=training)
    failed = [r for r in results if r.max_rel_error > tolerance]
    if format == OutputFormat.json:
        stdout_console().print_json(json.dumps({"tolerance": tolerance, "ok": not failed, "tensors": [
            {"tensor": r.name, "layer": r.layer, "checked": r.checked, "size": r.size,
             "max_rel_error": r.max_rel_error, "max_abs_error": r.max_abs_error} for r in results]}))
    else:
        table = Table(title=f"gradcheck {graph.spec.name} (float64, central differences)")
        for column in ("tensor", "checked", "max rel error", "max abs error", ""):
            table.add_column(column, justify="left" if column == "tensor" else "right")
        for r in results:
            ok = r.max_rel_error <= tolerance
            table.add_row(r.name, f"{r.checked}/{r.size}", f"{r.max_rel_error:.2e}", f"{r.max_abs_error:.2e}",
                          "[green]ok[/green]" if ok else "[red]FAIL[/red]")
        stdout_console().print(table)
    if failed:
        stderr_console().print(f"[red]{len(failed)} tensor(s) above tolerance {tolerance:g}[/red]")
        raise typer.Exit(1)


@command("time")
def time_command(
    spec: Annotated[Path, typer.Argument(help="The spec to time.")],
    batch: Annotated[Optional[int], typer.Option(min=1, help="Batch size (default: train.batch).")] = None,
    iterations: Annotated[int, typer.Option(min=1, help="Timed iterations after warm-up.")] = 20,
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="table or json.")] = OutputFormat.table,
) -> None:
    """Forward and backward milliseconds per kernel (median and p90), and whole training steps."""
    import dataclasses

    from netc.graph import build_graph
    from netc.runtime.timing import time_plan

    result = time_plan(build_graph(load_spec(spec)), batch=batch, iterations=iterations)
    if format == OutputFormat.json:
        stdout_console().print_json(json.dumps(dataclasses.asdict(result)))
        return
    table = Table(title=f"netc time {spec} (batch {result.batch}, {result.iterations} iterations, median / p90 ms)")
    for column in ("#", "layers", "forward", "p90", "backward", "p90"):
        table.add_column(column, justify="left" if column == "layers" else "right")
    for s in result.steps:
        table.add_row(str(s.index), " + ".join(s.covers), f"{s.forward_ms:.4f}", f"{s.forward_p90_ms:.4f}",
                      "-" if s.backward_ms is None else f"{s.backward_ms:.4f}",
                      "-" if s.backward_p90_ms is None else f"{s.backward_p90_ms:.4f}")
    table.add_row("", "loss (+ its gradient)", f"{result.loss_ms:.4f}", "", "", "")
    out = stdout_console()
    out.print(table)
    out.print(f"forward {result.forward_ms:.3f} ms + loss {result.loss_ms:.3f} ms + backward {result.backward_ms:.3f} ms "
              f"per batch (kernels called one by one; {result.call_overhead_us:.1f} µs call overhead subtracted)")
    out.print(f"training step in the compiled loop (forward, loss, backward, fused updates): "
              f"{result.train_step_ms:.3f} ms = {result.samples_per_second:,.0f} samples/s")
