"""TensorBoard event files of a run (`netc train --tensorboard`), written with tensorboardX.

    with TensorBoardLog(run_dir, model.get_weights) as board:
        board.epoch(record)          # after each epoch: its scalars and the weights' histograms

The events go straight into the run folder, so `tensorboard --logdir runs` shows each run
under its folder's name. The step is the epoch number (1, 2, ...), so a resumed run continues
its curves (in a new event file of the same folder; TensorBoard reads them together).
tensorboardX is an optional dependency, imported here only: `pip install -e ".[tensorboard]"`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

import numpy as np

from netc.runtime.rundir import guarded_write, run_error

INSTALL_HINT = 'pip install -e ".[tensorboard]"   (or: pip install "tensorboardX>=2.6,<3")'
# fields whose tag is not derived from their name (see `scalars`)
TAGS = {"samples_per_second": "speed/samples_per_second", "seconds": "speed/seconds"}
HISTOGRAM_BINS = 30  # tf.summary.histogram's default; tensorboardX's own (~1500 edges) makes ~10 KB a tensor an epoch


def require_tensorboardx():
    """tensorboardX's SummaryWriter, or an E-RUN error with the install hint (checked before a run
    claims its folder, so a missing library costs nothing)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise run_error("--tensorboard needs the 'tensorboardX' package, which is not installed", "",
                        INSTALL_HINT) from None
    return SummaryWriter


def scalars(fields: dict) -> dict[str, float]:
    """tag -> value of every numeric field of an epoch's metrics (a metrics.jsonl line), None skipped:
    `<split>_loss` -> loss/<split>, `<split>_accuracy` -> accuracy/<split>, a dict of values
    (`losses`: one per loss of the spec) -> loss/<name> each, others by TAGS or their own name.
    Derived from the names, so a field added to EpochRecord later is written too."""
    out: dict[str, float] = {}
    for name, value in fields.items():
        if name != "epoch" and _number(value):  # the epoch is the step
            split, _, kind = name.rpartition("_")
            out[f"{kind}/{split}" if split and kind in ("loss", "accuracy") else TAGS.get(name, name)] = float(value)
    for name, value in fields.items():
        if isinstance(value, dict):
            group = "loss" if name == "losses" else name
            for key, item in value.items():
                if _number(item):
                    tag = f"{group}/{key}"
                    out[tag if tag not in out else f"{name}/{key}"] = float(item)  # a loss named "train"
    return out


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class TensorBoardLog:
    """An event file in `run_dir`; `epoch(record)` writes an EpochRecord's scalars and, given
    `weights` (a function returning name -> array, e.g. `Model.get_weights`), a histogram of each
    tensor under weights/<name>. The file is opened at the first epoch (a resumed run that has
    nothing left to train adds none) and flushed every epoch, so a killed run keeps its finished epochs."""

    def __init__(self, run_dir: Path, weights: Callable[[], dict[str, np.ndarray]] | None = None):
        self.run_dir, self.weights, self.writer = run_dir, weights, None

    def epoch(self, record) -> None:
        with guarded_write(self.run_dir, "the TensorBoard events"):  # a full disk: E-RUN, not a traceback
            self._write(record)

    def _write(self, record) -> None:
        if self.writer is None:
            # tensorboardX names the file by the second it opens it, and a same-named file is overwritten:
            # the process and the first epoch keep a resumed run's file apart from the one before
            suffix = f".{os.getpid()}.from-epoch-{record.epoch}"
            self.writer = require_tensorboardx()(logdir=str(self.run_dir), filename_suffix=suffix)
        step = record.epoch
        for tag, value in scalars(dataclasses.asdict(record)).items():
            self.writer.add_scalar(tag, value, step)
        if self.weights is not None:
            for name, values in self.weights().items():
                if values.size and np.isfinite(values).all():  # tensorboardX refuses empty or non-finite
                    self.writer.add_histogram(f"weights/{name}", values, step, bins=HISTOGRAM_BINS)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
