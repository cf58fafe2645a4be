"""The Python API, for notebooks and scripts (the lecture is a notebook).

    import netc
    net = netc.load("specs/xor.yaml")         # validated spec + typed graph (no compiling)
    print(net.summary().total_params)
    model = net.compile()                      # the fused plan, its memory, initial weights
    loss, grads = model.loss_and_gradients({"x": X, "label": y})
    result = net.train(epochs=50)              # the same run as `netc train`
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from netc.graph import Graph, build_graph
from netc.spec import LoadedSpec, load_spec, load_spec_text


@dataclass
class Network:
    loaded: LoadedSpec
    graph: Graph

    @property
    def spec(self):
        return self.loaded.spec

    def summary(self, batch: int | None = None):
        """Shapes, parameter counts, mult-adds and memory (what `netc inspect` shows)."""
        from netc.report import summarize

        return summarize(self.graph, batch)

    def compile(self, dtype: str | None = None, batch: int | None = None, seed: int | None = None):
        """A `netc.runtime.model.Model`: forward, loss, gradients, train/eval epochs, weights as numpy."""
        from netc.runtime.model import Model

        # the Python tier at once (unless the fused loop is compiled), the fused loop from a background compile
        return Model(self.graph, dtype=dtype, batch=batch, seed=seed, tier="auto", background=True)

    def data(self, which: str = "train"):
        """The spec's data as {input name: array} (`which` is train or eval)."""
        from netc.runtime.data import load_dataset

        stats = load_dataset(self.loaded, "train").stats if which == "eval" else None
        return load_dataset(self.loaded, which, stats).arrays

    def train(self, runs_root: str | Path = "runs", **overrides):
        """Train as `netc train` does (run folder, checkpoints); overrides: epochs, lr, batch, seed."""
        from netc.runtime.train import Overrides, Trainer
        from netc.viz import save_run_curves

        return Trainer(self.loaded, Overrides(**overrides), runs_root=Path(runs_root), on_finish=save_run_curves).run()


def load(path: str | Path) -> Network:
    """Load, validate and type-check a spec file. Raises netc.errors.SpecErrors."""
    loaded = load_spec(path)
    return Network(loaded, build_graph(loaded))


def loads(text: str, base_dir: str | Path = ".") -> Network:
    """The same from YAML text (relative data paths start at `base_dir`)."""
    loaded = load_spec_text(text, "<string>", Path(base_dir))
    return Network(loaded, build_graph(loaded))
