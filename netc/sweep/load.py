"""From a sweep file to a checked `LoadedSweep`, every error located in the file.

Checked here, without data and without Dask or Optuna (so `netc validate` reads sweep files):
the file against the `Sweep` model; the base spec (its own errors, in its own file); every spec
path of `space` and `fixed` against the base spec; the metric against what the spec records; and
the space itself: the base spec is resolved with each path's ends or choices in turn (and every
combination of them when there are few), and a value set that makes an invalid spec is an
error that names the values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from netc.errors import Diagnostic, Location, NetcError, SpecErrors
from netc.spec.load import LoadedSpec, load_spec, located_diagnostics
from netc.spec.yamlload import SourceMap, load_yaml
from netc.sweep.model import FORMAT_VERSION, VERSION_KEY, Sweep
from netc.sweep.paths import PathError, parse_path, resolve
from netc.sweep.space import probes, trial_spec, values_text

MAX_SPACE_ERRORS = 8  # value sets reported per file (each names its values)


@dataclass(frozen=True)
class LoadedSweep:
    sweep: Sweep
    smap: SourceMap
    file: str
    base: LoadedSpec  # the base spec, as its file has it
    base_data: dict  # the base spec's YAML data: what the spec paths edit

    @property
    def name(self) -> str:
        return self.sweep.name or _name_from(Path(self.file).stem)

    @property
    def base_dir(self) -> Path:
        """Where the trials' relative data paths resolve: the base spec's folder."""
        return self.base.base_dir

    def trial(self, values: dict, label: str, check_graph: bool = True) -> tuple[str, LoadedSpec]:
        """The spec of a trial with these values (and the fixed ones): YAML text and loaded. Raises
        SpecErrors whose messages name the values."""
        try:
            return trial_spec(self.base_data, self.sweep.fixed, values, f"{self.base.file} ({label})",
                              self.base_dir, check_graph)
        except SpecErrors as exc:
            shown = values_text(values) or "the fixed values"
            raise SpecErrors([Diagnostic(d.code, f"{shown} gives an invalid spec: "
                                         + (f"{d.path}: " if d.path else "") + d.message, Location(self.file),
                                         d.path, d.hint) for d in exc.diagnostics]) from None


def _name_from(stem: str) -> str:
    """A sweep name from a file name: letters, digits and _ (sweep-digits -> sweep_digits)."""
    name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in stem)
    return name if name and not name[0].isdigit() else f"sweep_{name}"


def _check_version(data, smap: SourceMap) -> None:
    if not isinstance(data, dict) or VERSION_KEY not in data:
        raise SpecErrors(Diagnostic("E-VERSION", f"missing the format version '{VERSION_KEY}'", smap.locate(()),
                                    VERSION_KEY, f"add '{VERSION_KEY}: {FORMAT_VERSION}' as the first line"))
    version = data[VERSION_KEY]
    if type(version) is not int or version != FORMAT_VERSION:
        raise SpecErrors(Diagnostic("E-VERSION", f"sweep format version {version!r} is not supported",
                                    smap.locate((VERSION_KEY,)), VERSION_KEY,
                                    f"this netc reads sweep format version {FORMAT_VERSION}"))


def load_sweep_text(text: str | bytes, file: str = "<string>", base_dir: Path | None = None,
                    check_space: bool = True) -> LoadedSweep:
    """Load and check a sweep file's text; `base_dir` is where its `spec` path starts. Raises
    SpecErrors with every problem found."""
    data, smap = load_yaml(text, file)
    _check_version(data, smap)
    try:
        sweep = Sweep.model_validate(data)
    except ValidationError as exc:
        raise SpecErrors(located_diagnostics(exc, data, smap, Sweep)) from None
    base_path = Path(os.path.normpath((base_dir if base_dir is not None else Path(".")) / sweep.spec))
    if not base_path.is_file():
        raise SpecErrors(Diagnostic("E-FILE", f"the base spec {base_path} is not a file", smap.locate(("spec",)),
                                    "spec", "`spec` is relative to the sweep file"))
    base = load_spec(base_path)  # its errors are located in its own file
    base_data, _ = load_yaml(base_path.read_bytes(), str(base_path))
    loaded = LoadedSweep(sweep, smap, file, base, base_data)
    problems = _path_problems(loaded)
    broken = {diag.path.split(".", 1)[1] for diag in problems}
    if not broken & set(sweep.fixed):
        problems += _fixed_problems(loaded) or (_space_problems(loaded, broken) if check_space else [])
    if problems:
        raise SpecErrors(sorted(problems, key=lambda d: (d.location.line, d.location.col)))
    return loaded


def load_sweep(path: str | Path, check_space: bool = True) -> LoadedSweep:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecErrors(Diagnostic("E-FILE", f"cannot read sweep file: {exc.strerror}", Location(str(path)))) from None
    return load_sweep_text(raw, str(path), path.parent, check_space)


def _path_problems(loaded: LoadedSweep) -> list[Diagnostic]:
    """Every spec path of space and fixed that leads nowhere in the base spec."""
    found = []
    for section in ("space", "fixed"):
        for text in getattr(loaded.sweep, section):
            try:
                resolve(loaded.base_data, parse_path(text))
            except PathError as exc:
                found.append(Diagnostic("E-SWEEP-PATH", f"spec path '{text}': {exc.message} (in {loaded.base.file})",
                                        loaded.smap.locate((section, text), key=True), f"{section}.{text}", exc.hint))
    return found


def _fixed_problems(loaded: LoadedSweep) -> list[Diagnostic]:
    """The base spec with `fixed` set must be valid, have data, and record the metric."""
    sweep = loaded.sweep
    where = ("fixed",) if sweep.fixed else ("spec",)
    try:
        _, spec = trial_spec(loaded.base_data, sweep.fixed, {}, loaded.base.file, loaded.base_dir)
    except NetcError as exc:
        return [Diagnostic(d.code, f"the base spec with the fixed values is invalid: {d.message}",
                           loaded.smap.locate(where), d.path, d.hint) for d in exc.diagnostics]
    spec = spec.spec
    metric = sweep.metric.name
    located = loaded.smap.locate(("metric", "name"))
    if spec.data is None:
        return [Diagnostic("E-SWEEP", "the base spec has no data: its trials have nothing to train on",
                           loaded.smap.locate(("spec",)), "spec", "add `data:` to the spec")]
    if metric.startswith("eval_") and spec.data.eval is None:
        return [Diagnostic("E-SWEEP", f"the spec has no data.eval, so {metric} is never measured", located,
                           "metric.name", "use a train_* metric, or give the spec data.eval (e.g. in fixed: "
                                          "`data.eval: {from_train: 0.2}`)")]
    if "accuracy" in metric and spec.losses[0].op == "mse":
        return [Diagnostic("E-SWEEP", f"the spec's loss is mse, which has no classes: {metric} is never measured",
                           located, "metric.name", "optimise a loss (eval_loss or train_loss)")]
    if metric == "eval_top_k_accuracy" and spec.train.top_k is None:
        return [Diagnostic("E-SWEEP", "eval_top_k_accuracy needs train.top_k in the spec", located, "metric.name",
                           "set it, e.g. in fixed: `train.top_k: 3`")]
    return []


def _space_problems(loaded: LoadedSweep, broken: set[str]) -> list[Diagnostic]:
    """Value sets of the space that make an invalid spec (each distinct problem once); the paths in
    `broken` lead nowhere and are left out."""
    found: list[Diagnostic] = []
    seen: set[tuple] = set()
    for varied, values in probes(loaded.sweep, broken):
        if varied is None and found:
            break  # combinations only once every path is fine alone
        try:
            loaded.trial(values, "probe")
        except NetcError as exc:
            where = ("space", varied) if varied is not None else ("space",)
            for diag in exc.diagnostics:
                key = (varied, diag.path, diag.code)
                if key not in seen:
                    seen.add(key)
                    found.append(Diagnostic("E-SWEEP-SPACE", diag.message, loaded.smap.locate(where, key=True),
                                            ".".join(where), diag.hint))
        if len(found) >= MAX_SPACE_ERRORS:
            break
    return found
