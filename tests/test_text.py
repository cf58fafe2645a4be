"""The text source (netc.runtime.data.text): windows of characters and the next one, from a file or a
standard-library module, its held-out tail, its errors; and `netc sample` from a model trained on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from netc.cli.app import app
from netc.errors import DataError, NetcError
from netc.runtime.data import load_dataset
from netc.runtime.data.text import encode
from netc.runtime.train import Overrides, Trainer
from netc.spec import load_spec_text

runner = CliRunner(env={"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None, "COLUMNS": "200"})
PATTERN = "abcd\n" * 300  # a text a small LSTM learns exactly


def spec(tmp_path: Path, source: str, window: int = 6, vocabulary: int = 5, hidden: int = 16,
         extra_inputs: str = "") -> object:
    text = f"""netc: 1
name: chars
inputs:
  chars: {{shape: [{window}], dtype: int64, indices: {vocabulary}}}
  next: {{shape: [], dtype: int64, classes: {vocabulary}}}
{extra_inputs}layers:
  - {{name: emb, op: embedding, in: chars, num: {vocabulary}, dim: 8}}
  - {{name: lstm, op: lstm, hidden: {hidden}}}
  - {{name: out, op: linear, out: {vocabulary}}}
loss: {{op: cross_entropy, input: out, target: next}}
optimizer: {{type: adam, lr: 0.02}}
train: {{batch: 32, epochs: 4, seed: 0}}
data:
  train: {source}
"""
    path = tmp_path / "chars.yaml"
    path.write_text(text)
    return load_spec_text(text, file=str(path), base_dir=tmp_path)


def error_of(loaded, which: str = "train") -> str:
    with pytest.raises(DataError) as info:
        load_dataset(loaded, which)
    (diag,) = info.value.diagnostics
    assert diag.code == "E-DATA" and diag.hint, diag.format()
    return diag.format()


def test_windows_and_the_character_after_each(tmp_path):
    text = "hello, world\nhello again\n"
    (tmp_path / "t.txt").write_text(text)
    vocabulary = sorted(set(text))
    loaded = spec(tmp_path, "{source: text, path: t.txt, stride: 3}", window=4, vocabulary=len(vocabulary))
    data = load_dataset(loaded, "train")
    codes = encode(text, vocabulary)
    starts = np.arange(0, len(text) - 4, 3)
    np.testing.assert_array_equal(data.arrays["chars"], codes[starts[:, None] + np.arange(4)])
    np.testing.assert_array_equal(data.arrays["next"], codes[starts + 4])
    assert data.classes == vocabulary  # code-point order: "\n", " ", ",", "a", ...
    assert "".join(vocabulary[c] for c in data.arrays["chars"][1]) == "lo, "


def test_eval_is_the_texts_tail_and_train_the_rest(tmp_path):
    text = "".join(chr(ord("a") + i % 7) for i in range(200))
    (tmp_path / "t.txt").write_text(text)
    source = "{{source: text, path: t.txt, split: {}, eval_fraction: 0.25}}"
    train = load_dataset(spec(tmp_path, source.format("train"), window=5, vocabulary=7), "train")
    held = load_dataset(spec(tmp_path, source.format("eval"), window=5, vocabulary=7), "train")
    assert len(train.arrays["next"]) == 150 - 5 and len(held.arrays["next"]) == 50 - 5
    codes = encode(text, sorted(set(text)))
    np.testing.assert_array_equal(held.arrays["chars"][0], codes[150:155])  # starts where train ends


def test_a_standard_library_module_is_a_text_every_python_has(tmp_path):
    import textwrap

    text = Path(textwrap.__file__).read_text(encoding="utf-8")
    count = len(set(text))
    data = load_dataset(spec(tmp_path, "{source: text, module: textwrap, stride: 50}", window=16,
                             vocabulary=count), "train")
    assert len(data.classes) == count and data.arrays["chars"].shape == (len(range(0, len(text) - 16, 50)), 16)


def test_a_module_python_imports_frozen_is_read_from_its_source(tmp_path):
    import os

    text = Path(os.__file__).read_text(encoding="utf-8")
    data = load_dataset(spec(tmp_path, "{source: text, module: os, stride: 400}", window=8,
                             vocabulary=len(set(text))), "train")
    assert data.arrays["chars"].shape[1] == 8 and len(data.classes) == len(set(text))


@pytest.mark.parametrize("source, message", [
    ("{source: text, module: numpy}", "'numpy' is not a module of Python's standard library"),
    ("{source: text, module: no_such_module_here}", "is not a module of Python's standard library"),
    ("{source: text, path: missing.txt}", "text file not found"),
])
def test_a_text_that_cannot_be_read_is_a_located_error(tmp_path, source, message):
    assert message in error_of(spec(tmp_path, source))


def test_vocabulary_window_and_encoding_errors(tmp_path):
    (tmp_path / "t.txt").write_text("abcdef" * 10)
    shown = error_of(spec(tmp_path, "{source: text, path: t.txt}", vocabulary=5))
    assert "t.txt has 6 distinct characters but label input 'next' has classes: 5" in shown
    assert "set `inputs.next.classes` to 6" in shown and "chars.yaml:" in shown
    (tmp_path / "short.txt").write_text("abcde")
    assert "not more than a window of 6" in error_of(spec(tmp_path, "{source: text, path: short.txt}"))
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1") * 5)
    assert "not UTF-8 text" in error_of(spec(tmp_path, "{source: text, path: latin1.txt}"))
    extra = "  x: {shape: [3]}\n"
    (tmp_path / "p.txt").write_text(PATTERN)
    assert "one index input [T] and one label input" in error_of(
        spec(tmp_path, "{source: text, path: p.txt}", extra_inputs=extra))


def test_one_of_path_and_module():
    from netc.spec.models import TextSource

    for fields in ({}, {"path": "a.txt", "module": "argparse"}):
        with pytest.raises(ValueError, match="exactly one of path and module"):
            TextSource.model_validate({"source": "text", **fields})


@pytest.mark.compiled
def test_a_model_of_a_periodic_text_continues_it_and_samples_the_same_text_twice(tmp_path):
    (tmp_path / "p.txt").write_text(PATTERN)
    loaded = spec(tmp_path, "{source: text, path: p.txt}")
    result = Trainer(loaded, Overrides(), run_dir=tmp_path / "run").run()
    assert json.loads((result.run_dir / "classes.json").read_text()) == ["\n", "a", "b", "c", "d"]
    assert result.epochs[-1].train_accuracy > 0.99
    weights = result.run_dir / "last.safetensors"
    spec_file = tmp_path / "chars.yaml"
    greedy = runner.invoke(app, ["sample", str(spec_file), "--weights", str(weights), "--prompt", "ab",
                                 "--length", "12", "--temperature", "0"])
    assert greedy.exit_code == 0, greedy.output
    assert greedy.stdout.startswith("abcd\nabcd\nabcd") and "bits per character as drawn" in greedy.stderr
    cold = runner.invoke(app, ["sample", str(spec_file), "--weights", str(weights), "--prompt", "ab",
                               "--length", "12", "--temperature", "0.0001"])
    assert cold.exit_code == 0 and cold.stdout == greedy.stdout, cold.output  # a tiny temperature: greedy
    drawn = [runner.invoke(app, ["sample", str(spec_file), "--weights", str(weights), "--length", "40",
                                 "--temperature", "1.5", "--seed", str(seed)]).stdout for seed in (3, 3, 4)]
    assert drawn[0] == drawn[1] != drawn[2]

    scored = runner.invoke(app, ["eval", str(spec_file), "--weights", str(weights), "--split", "train", "-f", "json"])
    figures = json.loads(scored.stdout)
    assert figures["bits_per_character"] == pytest.approx(figures["loss"] / np.log(2), rel=1e-12)
    shown = runner.invoke(app, ["eval", str(spec_file), "--weights", str(weights), "--split", "train"]).stdout
    assert f"{figures['bits_per_character']:.3f} bits per character" in shown
    assert "confusion matrix (rows" not in shown  # a table per character: in --format json

    unknown = runner.invoke(app, ["sample", str(spec_file), "--weights", str(weights), "--prompt", "abz"])
    assert unknown.exit_code == 1 and "the prompt has characters the model never saw: ['z']" in unknown.output
    (result.run_dir / "classes.json").unlink()
    missing = runner.invoke(app, ["sample", str(spec_file), "--weights", str(weights)])
    assert missing.exit_code == 1 and "no vocabulary beside" in missing.output and "Traceback" not in missing.output


@pytest.mark.compiled
def test_sample_refuses_a_spec_that_is_not_a_character_model(tmp_path):
    digits = Path(__file__).resolve().parents[1] / "specs" / "digits-mlp.yaml"
    done = runner.invoke(app, ["sample", str(digits), "--weights", str(tmp_path / "w.safetensors")])
    assert done.exit_code == 1 and "is not a character model" in done.output
    with pytest.raises(NetcError):
        from netc.runtime.sample import sample
        from netc.spec import load_spec

        sample(load_spec(digits), tmp_path / "w.safetensors")
