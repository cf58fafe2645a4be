"""Training curves: loss and accuracy per epoch of one run (curves.png) or of several on one figure
(`netc plot`), read from the runs' metrics.jsonl."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from netc.errors import Location
from netc.viz.errors import viz_error
from netc.viz.figures import DPI, Picture, new_figure, save


@dataclass
class CurvesResult(Picture):
    runs: list[str] = field(default_factory=list)  # legend names
    epochs: list[int] = field(default_factory=list)  # epochs drawn per run
    accuracy: bool = False  # whether the accuracy panel is drawn
    learning_rate: bool = False  # whether the learning-rate panel is drawn (a run with a schedule)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The epoch records of a run folder's metrics.jsonl (E-VIZ when missing, empty or damaged)."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not run_dir.is_dir():
        raise viz_error("run folder not found", run_dir, "pass a folder made by `netc train` (runs/<name>)")
    if not metrics.exists():
        raise viz_error("the run folder has no metrics.jsonl", run_dir, "pass a folder made by `netc train`")
    records = []
    for number, line in enumerate(metrics.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "epoch" not in record or "train_loss" not in record:
                raise ValueError("not an epoch record")
        except ValueError as exc:
            raise viz_error(f"line {number} is not an epoch record: {exc}", Location(str(metrics), number, 1)) from None
        records.append(record)
    if not records:
        raise viz_error("the run has no finished epoch yet", metrics, "train for at least one epoch")
    return records


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _draw_runs(runs: list[tuple[str, list[dict]]], out: str | Path, title: str, dpi: int) -> CurvesResult:
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    accuracy = any(r.get("train_accuracy") is not None or r.get("eval_accuracy") is not None
                   for _, records in runs for r in records)
    # a learning-rate panel when some run's rate changed (optimizer.schedule)
    scheduled = any(len({r["lr"] for r in records if r.get("lr")}) > 1 for _, records in runs)
    names = ["loss"] + (["accuracy (%)"] if accuracy else []) + (["learning rate"] if scheduled else [])
    panels = len(names)
    figure, size = new_figure(5.0 * panels, 4.0, dpi)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    single = len(runs) == 1
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for (name, records), color in zip(runs, colors):
        marker = "o" if len(records) <= 30 else None
        for panel, (prefix, scale) in enumerate((("loss", 1.0), ("accuracy", 100.0))[:1 + accuracy]):
            for split, style in (("train", "-"), ("eval", "--")):
                xs, ys = _series(records, f"{split}_{prefix}")
                if not xs:
                    continue
                line_color = ("C0" if split == "train" else "C1") if single else color
                label = split if single else None
                axes[panel].plot(xs, [y * scale for y in ys], style, color=line_color, marker=marker, markersize=3,
                                 label=label)
        if scheduled:
            xs, ys = _series(records, "lr")
            axes[-1].plot(xs, ys, "-", color="C2" if single else color, marker=marker, markersize=3)
    if scheduled:
        axes[-1].set_yscale("log")
    for panel, label in enumerate(names):
        ax = axes[panel]
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    if single:
        for ax in axes:
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    else:
        handles = [Line2D([], [], color=c, label=name) for (name, _), c in zip(runs, colors)]
        handles += [Line2D([], [], color="black", linestyle="-", label="train"),
                    Line2D([], [], color="black", linestyle="--", label="eval")]
        axes[-1].legend(handles=handles, fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path, size = save(figure, out, size)
    return CurvesResult(path, size, runs=[name for name, _ in runs],
                        epochs=[len(records) for _, records in runs], accuracy=accuracy, learning_rate=scheduled)


def plot_curves(run_dir: str | Path, out: str | Path | None = None, dpi: int = DPI) -> CurvesResult:
    """Loss and accuracy per epoch, train and eval, of one run, and its learning rate when a schedule
    changed it (default: <run_dir>/curves.png)."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    name = _spec_name(run_dir)
    title = f"{name} ({run_dir.name})" if name and name != run_dir.name else run_dir.name
    return _draw_runs([(run_dir.name, records)], out or run_dir / "curves.png",
                      f"{title}: {len(records)} epoch{'s' if len(records) != 1 else ''}", dpi)


def _spec_name(run_dir: Path) -> str | None:
    """The network's name from the run's spec.yaml, when readable."""
    import yaml

    try:
        data = yaml.safe_load((run_dir / "spec.yaml").read_text())
        return str(data["name"]) if isinstance(data, dict) and "name" in data else None
    except (OSError, yaml.YAMLError):
        return None


def plot_runs(run_dirs: list[str | Path], out: str | Path, dpi: int = DPI) -> CurvesResult:
    """Several runs on one figure: a colour per run (legend: the folder names), train solid, eval dashed."""
    if not run_dirs:
        raise viz_error("no run folders given", hint="pass one or more folders made by `netc train`")
    paths = [Path(p) for p in run_dirs]
    names = [p.name for p in paths]
    names = [str(p) if names.count(p.name) > 1 else p.name for p in paths]  # same folder name: full path
    runs = [(name, read_metrics(path)) for name, path in zip(names, paths)]
    return _draw_runs(runs, out, f"{len(runs)} runs" if len(runs) > 1 else runs[0][0], dpi)


def save_run_curves(run_dir: str | Path) -> Path | None:
    """curves.png in a run folder at the end of `netc train`; a failure only costs the picture."""
    try:
        return plot_curves(run_dir).path
    except Exception:  # noqa: BLE001 - never lose a finished run to a plotting problem
        return None
