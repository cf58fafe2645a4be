"""A sweep's pictures, drawn from trials.jsonl: the metric against each spec path (params.png) and
parallel coordinates of every finished trial (parallel.png); the best trial's training curves
(best/curves.png) come from netc.viz.

Drawn with matplotlib's Agg canvas through netc.viz's figure helpers (never pyplot).
"""

from __future__ import annotations

import math
from pathlib import Path

from netc.sweep.folder import BASE, SweepFolder, best_record, leaderboard

PARAMS = "params.png"
PARALLEL = "parallel.png"
BEST_COLOR = "#d62728"
BASE_COLOR = "#7f7f7f"


def _label(metric: str) -> str:
    return metric.replace("_", " ")


def _is_log(spec: dict) -> bool:
    return "loguniform" in spec or bool(spec.get("log"))


def _axis(path: str, spec: dict, values: list):
    """(position of each value, tick positions, tick labels, log scale) for one spec path."""
    if "choice" in spec:
        choices = list(spec["choice"])
        index = {repr(choice): i for i, choice in enumerate(choices)}
        return ([index.get(repr(v), math.nan) for v in values], list(range(len(choices))),
                [str(c) for c in choices], False)
    return [float(v) for v in values], None, None, _is_log(spec)


def _bounds(spec: dict) -> tuple[float, float] | None:
    """[low, high] of a numeric spec path of the space."""
    for kind in ("uniform", "loguniform", "int"):
        if kind in spec:
            return float(spec[kind][0]), float(spec[kind][1])
    return None


def _finished(folder: SweepFolder) -> tuple[dict, str, str, dict, list[dict]]:
    """(info, metric, goal, records, the trials with a value (complete or pruned), best first)."""
    info, records = folder.info, folder.records()
    metric, goal = info["metric"]["name"], info["metric"]["goal"]
    trials = [r for r in leaderboard(records, goal) if r.get("status") in ("complete", "pruned")
              and r.get("value") is not None]
    return info, metric, goal, records, trials


def draw_params(folder: SweepFolder, out: Path | None = None) -> Path | None:
    """The metric of each finished trial against each spec path of the space (one panel a path)."""
    from netc.viz.figures import new_figure, save

    info, metric, goal, records, trials = _finished(folder)
    if not trials:
        return None
    space = info["space"]
    columns = min(len(space), 3)
    rows = math.ceil(len(space) / columns)
    figure, size = new_figure(4.0 * columns, 3.2 * rows + 0.4)
    best = best_record(records, goal)
    base = records.get(BASE)
    for i, (path, spec) in enumerate(space.items()):
        ax = figure.add_subplot(rows, columns, i + 1)
        for status, marker, face in (("complete", "o", "#1f77b4"), ("pruned", "o", "none")):
            chosen = [r for r in trials if r["status"] == status and path in r["params"]]
            if not chosen:
                continue
            xs, ticks, labels, log = _axis(path, spec, [r["params"][path] for r in chosen])
            ax.scatter(xs, [r["value"] for r in chosen], marker=marker, facecolors=face, edgecolors="#1f77b4",
                       s=28, label=status, zorder=3)
        xs, ticks, labels, log = _axis(path, spec, [r["params"].get(path) for r in trials if path in r["params"]])
        if best is not None and path in best["params"]:
            bx, _, _, _ = _axis(path, spec, [best["params"][path]])
            ax.scatter(bx, [best["value"]], marker="*", s=160, color=BEST_COLOR, zorder=4,
                       label=f"best (trial {best['trial']})")
        if base is not None and base.get("value") is not None:
            ax.axhline(base["value"], color=BASE_COLOR, linestyle="--", linewidth=1, label="base spec")
        if ticks is not None:
            ax.set_xticks(ticks, labels)
            ax.set_xlim(-0.5, len(ticks) - 0.5)
        elif log:
            ax.set_xscale("log")
        ax.set_xlabel(path)
        ax.set_ylabel(_label(metric))
        ax.grid(True, alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7, loc="best")
    figure.suptitle(f"sweep {info.get('name', '')}: {_label(metric)} ({goal}) of {len(trials)} trials")
    figure.tight_layout()
    path, _ = save(figure, out or folder.path / PARAMS, size)
    return path


def draw_parallel(folder: SweepFolder, out: Path | None = None) -> Path | None:
    """Parallel coordinates: one vertical axis per spec path and one for the metric; a line per finished
    trial, colored by its rank (yellow: the best; the very best in red; dashed: pruned)."""
    import matplotlib as mpl

    from netc.viz.figures import new_figure, save

    info, metric, goal, records, trials = _finished(folder)
    if not trials:
        return None
    space = info["space"]
    paths = list(space)
    columns = [*paths, metric]
    figure, size = new_figure(1.9 * len(columns) + 1.5, 4.6)
    ax = figure.add_subplot(1, 1, 1)
    scaled, ticks = {}, {}
    for path in paths:
        positions, tick_at, tick_labels, log = _axis(path, space[path], [r["params"].get(path) for r in trials])
        if tick_at is not None:
            span = max(len(tick_at) - 1, 1)
            scaled[path] = [p / span for p in positions]
            ticks[path] = [(t / span, label) for t, label in zip(tick_at, tick_labels)]
        else:  # the space's own range, so that axes of two sweeps read alike
            transform = math.log10 if log else (lambda v: v)
            bounds = _bounds(space[path]) or (min(positions), max(positions))
            low, high = transform(bounds[0]), transform(bounds[1])
            span = (high - low) or 1.0
            scaled[path] = [(transform(p) - low) / span for p in positions]
            middle = 10 ** ((low + high) / 2) if log else (bounds[0] + bounds[1]) / 2
            ticks[path] = [(0.0, f"{bounds[0]:.3g}"), (0.5, f"{middle:.3g}"), (1.0, f"{bounds[1]:.3g}")]
    values = [r["value"] for r in trials]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    scaled[metric] = [(v - low) / span for v in values]
    ticks[metric] = [(0.0, f"{low:.4g}"), (0.5, f"{(low + high) / 2:.4g}"), (1.0, f"{high:.4g}")]
    # colored by rank, not by value: one diverged trial would otherwise paint every other line alike
    colormap = mpl.colormaps["viridis"]
    better_first = sorted(range(len(trials)), key=lambda i: -values[i] if goal == "maximize" else values[i])
    shade = {i: 1.0 - rank / max(len(trials) - 1, 1) for rank, i in enumerate(better_first)}
    best = best_record(records, goal)
    for i in reversed(better_first):  # the better lines on top
        record = trials[i]
        ys = [scaled[column][i] for column in columns]
        is_best = best is not None and record["trial"] == best["trial"]
        ax.plot(range(len(columns)), ys, color=BEST_COLOR if is_best else colormap(shade[i]),
                linewidth=2.4 if is_best else 1.0, alpha=1.0 if is_best else 0.75,
                linestyle="--" if record["status"] == "pruned" else "-", zorder=3 if is_best else 2)
    for x, column in enumerate(columns):
        ax.axvline(x, color="#333333", linewidth=0.8)
        for y, text in ticks[column]:
            ax.text(x - 0.03, y, text, fontsize=7, va="center", ha="right", zorder=5,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
    ax.set_xticks(range(len(columns)), [*paths, _label(metric)], fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.45, len(columns) - 0.8)
    ax.set_ylim(-0.05, 1.05)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    figure.suptitle(f"sweep {info.get('name', '')}: {len(trials)} trials" +
                    (f", best trial {best['trial']} in red" if best is not None else "") + " (dashed: pruned)")
    figure.tight_layout()
    path, _ = save(figure, out or folder.path / PARALLEL, size)
    return path


def draw_sweep(folder: SweepFolder) -> list[Path]:
    """Every picture of the sweep folder (those there is something to draw for)."""
    from netc.viz import save_run_curves

    drawn = [p for p in (draw_params(folder), draw_parallel(folder)) if p is not None]
    best = folder.path / "best"
    if (best / "metrics.jsonl").is_file():
        curves = save_run_curves(best)
        if curves is not None:
            drawn.append(curves)
    return drawn
