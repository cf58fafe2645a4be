"""`netc train --tensorboard`: the event files read back (TFRecord framing parsed here, tensorboardX's
own Event proto; not the `tensorboard` package) hold metrics.jsonl's numbers, a resumed run continues
the steps, and a missing tensorboardX is a clean error that writes nothing."""

from __future__ import annotations

import dataclasses
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import netc.cli  # noqa: F401  (registers every command)
from netc.cli.app import app
from netc.runtime.tensorboard import TensorBoardLog, scalars

ROOT = Path(__file__).resolve().parents[1]
XOR = ROOT / "specs" / "xor.yaml"
runner = CliRunner(env={"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None, "COLUMNS": "200"})
SCALAR_TAGS = {"loss/train", "accuracy/train", "loss/eval", "accuracy/eval", "lr", "speed/samples_per_second",
               "speed/seconds"}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def read_events(path: Path) -> list:
    """The Event protos of one file: each record is a uint64 length, its masked CRC32C, the data and
    the data's masked CRC32C (TensorFlow's TFRecord); both CRCs are checked, as TensorBoard does."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    data, events, at = path.read_bytes(), [], 0
    while at < len(data):
        header = data[at:at + 8]
        (length,), (length_crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[at + 8:at + 12])
        body = data[at + 12:at + 12 + length]
        (body_crc,) = struct.unpack("<I", data[at + 12 + length:at + 16 + length])
        assert length_crc == masked_crc32c(header) and body_crc == masked_crc32c(body), f"{path}: bad CRC at {at}"
        events.append(Event.FromString(body))
        at += 16 + length
    return events


def run_events(run_dir: Path) -> tuple[dict, dict]:
    """Every scalar and histogram of a run folder's event files: {tag: {step: value}}, {tag: {step: proto}}."""
    values, histograms = {}, {}
    files = sorted(run_dir.glob("events.out.tfevents.*"))
    for path in files:
        for event in read_events(path):
            for value in event.summary.value:
                if value.HasField("histo"):
                    histograms.setdefault(value.tag, {})[event.step] = value.histo
                else:
                    assert event.step not in values.get(value.tag, {}), f"{value.tag} step {event.step} twice"
                    values.setdefault(value.tag, {})[event.step] = value.simple_value
    return values, histograms


def expected_scalars(run_dir: Path) -> dict:
    """metrics.jsonl as {tag: {epoch: value}}, rounded to float32 as TensorBoard's simple_value is."""
    wanted = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for tag, value in scalars(record).items():
            wanted.setdefault(tag, {})[record["epoch"]] = float(np.float32(value))
    return wanted


@pytest.mark.compiled
def test_events_hold_the_metrics_and_a_resumed_run_continues_them(tmp_path, monkeypatch):
    pytest.importorskip("tensorboardX")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "xor"
    first = invoke("train", XOR, "--epochs", "3", "--tensorboard", "-q")
    assert first.exit_code == 0, first.output
    assert "tensorboard events: runs/xor (see them with: tensorboard --logdir runs)" in first.stdout
    values, histograms = run_events(run)
    assert set(values) == SCALAR_TAGS and values == expected_scalars(run)
    assert all(sorted(steps) == [1, 2, 3] for steps in values.values())
    assert values["lr"] == {1: pytest.approx(0.05), 2: pytest.approx(0.05), 3: pytest.approx(0.05)}  # adam, no schedule
    assert set(histograms) == {f"weights/{layer}.{p}" for layer in ("hidden", "out") for p in ("weight", "bias")}
    assert histograms["weights/hidden.weight"][3].num == 16 and sorted(histograms["weights/out.bias"]) == [1, 2, 3]

    resumed = invoke("train", XOR, "--resume", "--epochs", "5", "--tensorboard", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # the first file is kept, a new one continues
    values, _ = run_events(run)
    assert all(sorted(steps) == [1, 2, 3, 4, 5] for steps in values.values())
    assert values == expected_scalars(run)

    finished = invoke("train", XOR, "--resume", "--tensorboard", "-q")  # nothing left to train: no new file
    assert finished.exit_code == 0 and len(list(run.glob("events.out.tfevents.*"))) == 2


def test_every_numeric_field_and_each_loss_get_a_tag(tmp_path):
    pytest.importorskip("tensorboardX")

    @dataclasses.dataclass
    class Record:  # EpochRecord with the per-loss values and a field added later
        epoch: int
        train_loss: float
        eval_loss: float | None
        lr: float
        losses: dict[str, float] | None
        grad_norm: float

    with TensorBoardLog(tmp_path) as board:
        board.epoch(Record(1, 0.5, None, 0.1, {"out": 0.25, "aux": 0.75, "train": 1.5}, 2.0))
        board.epoch(Record(2, 0.25, 0.5, 0.1, None, 1.0))
    values, histograms = run_events(tmp_path)
    tenth = float(np.float32(0.1))  # TensorBoard's scalars are float32
    assert values == {"loss/train": {1: 0.5, 2: 0.25}, "loss/eval": {2: 0.5}, "lr": {1: tenth, 2: tenth},
                      "loss/out": {1: 0.25}, "loss/aux": {1: 0.75}, "losses/train": {1: 1.5},  # "loss/train" is taken
                      "grad_norm": {1: 2.0, 2: 1.0}}
    assert histograms == {}


def test_without_tensorboardx_the_run_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` raises ImportError
    result = invoke("train", XOR, "--epochs", "1", "--tensorboard")
    assert result.exit_code == 1
    assert "error[E-RUN]: --tensorboard needs the 'tensorboardX' package, which is not installed" in result.output
    assert 'hint: pip install -e ".[tensorboard]"' in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # no run folder
