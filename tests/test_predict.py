"""`netc predict` and netc.runtime.predict: predictions on PNGs and array files written here, checked
against Model.predict and plain numpy (weights set directly, no training), the csv/json/npz outputs,
--features, and every error path (located, exit 1, no traceback, nothing written)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import netc.cli  # noqa: F401  (registers every command)
from netc.cli.app import app
from netc.errors import DataError, RunError
from netc.graph import build_graph
from netc.runtime.checkpoint import save_checkpoint
from netc.runtime.data import load_dataset
from netc.runtime.model import Model
from netc.runtime.predict import Predictor, read_inputs
from netc.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner(env={"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None, "COLUMNS": "200"})
pytestmark = pytest.mark.compiled

IMAGES_SPEC = """netc: 1
name: shapes
inputs:
  image: {shape: [1, 4, 4]}
  label: {shape: [], dtype: int64, classes: 3}
layers:
  - {name: flat, op: flatten}
  - {name: hidden, op: linear, out: 5}
  - {name: act, op: relu}
  - {name: fc, op: linear, out: 3}
loss: {op: cross_entropy, input: fc, target: label}
train: {batch: 4}
data:
  train: {source: images, path: pics, normalize: max}
"""


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def save_png(path: Path, pixels) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, np.uint8)).save(path)
    return path


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A spec over a folder of 3 classes of 4x4 grayscale PNGs (largest pixel 200), a checkpoint with
    seeded weights, and 5 new PNGs in new/ to predict on; the test runs in the folder."""
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("circle", "square", "star")):
        for i in range(2):
            save_png(tmp_path / "pics" / cls / f"{i}.png", rng.integers(0, 150, (4, 4)) + 25 * c)
    for i in range(5):
        save_png(tmp_path / "new" / f"{i}.png", rng.integers(0, 200, (4, 4)))
    (tmp_path / "s.yaml").write_text(IMAGES_SPEC)
    weights = {"hidden.weight": rng.normal(size=(5, 16)), "hidden.bias": rng.normal(size=5),
               "fc.weight": rng.normal(size=(3, 5)), "fc.bias": rng.normal(size=3)}
    weights = {name: value.astype(np.float32) for name, value in weights.items()}
    (tmp_path / "run").mkdir()
    save_checkpoint(tmp_path / "run" / "w.safetensors", weights)
    monkeypatch.chdir(tmp_path)
    return tmp_path, weights


def new_pixels(folder: Path) -> np.ndarray:
    """The new PNGs as the network sees them: [N, 16], divided by the train folder's largest pixel."""
    scale = load_dataset(load_spec(folder / "s.yaml")).stats.scale["image"]
    raw = np.stack([np.asarray(Image.open(folder / "new" / f"{i}.png"), np.float64) for i in range(5)])
    return raw.reshape(5, 16) / scale


def numpy_forward(x: np.ndarray, w: dict) -> tuple[np.ndarray, np.ndarray]:
    """(act, fc) of the spec in float64."""
    act = np.maximum(x @ w["hidden.weight"].T + w["hidden.bias"], 0)
    return act, act @ w["fc.weight"].T + w["fc.bias"]


# --------------------------------------------------------------------------- the API


def test_probabilities_are_the_softmax_of_model_predict(work):
    folder, weights = work
    loaded = load_spec(folder / "s.yaml")
    inputs = read_inputs(loaded, ["new"])
    assert inputs.names == [str(Path("new") / f"{i}.png") for i in range(5)] and inputs.x.shape == (5, 1, 4, 4)
    result = Predictor(loaded, folder / "run" / "w.safetensors").predict(inputs.x)

    model = Model(build_graph(loaded), tier="python")
    model.set_weights(weights)
    logits = model.predict({"image": new_pixels(folder).reshape(5, 1, 4, 4)})
    np.testing.assert_allclose(result.outputs, logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(result.probabilities, softmax(logits.astype(np.float64)), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result.outputs, numpy_forward(new_pixels(folder), weights)[1], rtol=1e-4, atol=1e-5)
    assert result.classes == ["0", "1", "2"]  # no classes.json: the indices
    order, p = result.top_k(10)  # clamped to the 3 classes
    assert order.shape == (5, 3)
    np.testing.assert_array_equal(order, np.argsort(-result.probabilities, axis=1, kind="stable"))
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)


def test_features_are_the_layers_activations(work):
    folder, weights = work
    loaded = load_spec(folder / "s.yaml")
    predictor = Predictor(loaded, folder / "run" / "w.safetensors")
    x = read_inputs(loaded, ["new"]).x
    act, fc = numpy_forward(new_pixels(folder), weights)
    found = predictor.features(x, "fc")
    assert found.values.shape == (5, 3) and found.activation is None
    np.testing.assert_allclose(found.values, fc, rtol=1e-4, atol=1e-5)
    hidden = predictor.features(x, "hidden")  # relu fused into it: its output is what is stored
    assert hidden.activation == "relu" and hidden.tensor == "act"
    np.testing.assert_allclose(hidden.values, act, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(predictor.features(x, "act").values, hidden.values)
    flat = predictor.features(x, "flat")
    np.testing.assert_allclose(flat.values, new_pixels(folder), rtol=1e-6)


def test_nll_probabilities_are_exp_of_the_log_probabilities(work):
    folder, weights = work
    (folder / "nll.yaml").write_text(IMAGES_SPEC.replace(
        "loss: {op: cross_entropy, input: fc, target: label}",
        "  - {name: logp, op: log_softmax}\nloss: {op: nll, input: logp, target: label}"))
    loaded = load_spec(folder / "nll.yaml")
    result = Predictor(loaded, folder / "run" / "w.safetensors").predict(read_inputs(loaded, ["new"]).x)
    expected = softmax(numpy_forward(new_pixels(folder), weights)[1])
    np.testing.assert_allclose(result.probabilities, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.probabilities, np.exp(result.outputs), rtol=1e-6)


def test_a_regression_predicts_in_the_units_of_its_target(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(5, 2, (20, 2)).astype(np.float32)
    y = (100 + 10 * x[:, :1]).astype(np.float32)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    (tmp_path / "r.yaml").write_text(
        "netc: 1\nname: reg\ninputs:\n  x: {shape: [2]}\n  y: {shape: [1]}\n"
        "layers:\n  - {name: fc, op: linear, in: x, out: 1}\nloss: {op: mse, input: fc, target: y}\n"
        "data:\n  train: {source: npz, path: train.npz, normalize: standard}\n")
    w = {"fc.weight": np.array([[0.5, -0.25]], np.float32), "fc.bias": np.array([0.1], np.float32)}
    save_checkpoint(tmp_path / "w.safetensors", w)
    loaded = load_spec(tmp_path / "r.yaml")
    result = Predictor(loaded, tmp_path / "w.safetensors").predict(x[:3])
    assert result.classes is None and result.probabilities is None
    z = (x[:3] - x.mean(axis=0, dtype=np.float64)) / x.std(axis=0, dtype=np.float64)
    expected = (z @ w["fc.weight"].T + w["fc.bias"]) * y.std(dtype=np.float64) + y.mean(dtype=np.float64)
    np.testing.assert_allclose(result.outputs, expected, rtol=1e-5)

    np.save(tmp_path / "x.npy", x[:3])
    table = invoke("predict", tmp_path / "r.yaml", tmp_path / "x.npy", "--weights", tmp_path / "w.safetensors")
    assert table.exit_code == 0, table.output
    assert "reg: outputs" in table.stdout and f"x.npy[2]" in table.stdout
    out = tmp_path / "p.csv"
    assert invoke("predict", tmp_path / "r.yaml", tmp_path / "x.npy", "--weights", tmp_path / "w.safetensors",
                  "--out", out).exit_code == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["input", "output_0"] and len(rows) == 3
    np.testing.assert_allclose([float(r["output_0"]) for r in rows], expected[:, 0], rtol=1e-5)


def test_array_files_are_matched_to_the_input(work):
    folder, _ = work
    loaded = load_spec(folder / "s.yaml")
    pixels = np.arange(48, dtype=np.float32).reshape(3, 1, 4, 4)
    np.save(folder / "one.npy", pixels[0])  # one sample, without a sample axis
    np.save(folder / "flat.npy", pixels.reshape(3, 16))  # flat samples of the right size
    np.savez(folder / "named.npz", other=np.zeros(3), image=pixels[:2])  # by the input's name
    np.savez(folder / "only.npz", pictures=pixels[:1])  # the archive's only array
    header = ",".join(f"p{j}" for j in range(16))
    (folder / "rows.csv").write_text(header + ",label\n" + "".join(
        ",".join(str(v) for v in row) + f",{k}\n" for k, row in enumerate(pixels.reshape(3, 16))))
    (folder / "bare.csv").write_text(",".join(str(v) for v in pixels[2].ravel()) + "\n")
    inputs = read_inputs(loaded, ["one.npy", "flat.npy", "named.npz", "only.npz", "rows.csv", "bare.csv"])
    assert inputs.names == ["one.npy", "flat.npy[0]", "flat.npy[1]", "flat.npy[2]", "named.npz[0]", "named.npz[1]",
                            "only.npz", "rows.csv[0]", "rows.csv[1]", "rows.csv[2]", "bare.csv"]  # one: no [i]
    expected = pixels[[0, 0, 1, 2, 0, 1, 0, 0, 1, 2, 2]]
    np.testing.assert_array_equal(inputs.x, expected)
    assert inputs.x.dtype == np.float32


# --------------------------------------------------------------------------- the command


def test_predict_table_with_class_names(work):
    folder, _ = work
    (folder / "run" / "classes.json").write_text(json.dumps(["circle", "square", "star"]))
    result = invoke("predict", "s.yaml", "new", "new/0.png", "--weights", "run/w.safetensors", "--top-k", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].strip() == "shapes: top 2 classes"
    assert "top 1" in result.stdout and "top 2" in result.stdout and "top 3" not in result.stdout
    loaded = load_spec(folder / "s.yaml")
    p = Predictor(loaded, folder / "run" / "w.safetensors").predict(read_inputs(loaded, ["new/0.png"]).x)
    best = int(np.argmax(p.probabilities[0]))
    row = next(line for line in lines if "new/0.png" in line)
    assert f"{['circle', 'square', 'star'][best]} ({100 * p.probabilities[0, best]:.2f}%)" in row
    assert sum("new/0.png" in line for line in lines) == 2  # the folder's file and the file itself


def test_csv_and_json_outputs_parse_and_match(work):
    folder, _ = work
    loaded = load_spec(folder / "s.yaml")
    expected = Predictor(loaded, folder / "run" / "w.safetensors").predict(read_inputs(loaded, ["new"]).x)
    for name in ("p.csv", "p.json"):
        done = invoke("predict", "s.yaml", "new", "--weights", "run/w.safetensors", "--top-k", "5", "--out", name)
        assert done.exit_code == 0, done.output
        assert done.stdout.strip() == f"wrote {name}: top 3 classes of 5 inputs"
    rows = list(csv.DictReader(io.StringIO((folder / "p.csv").read_text())))
    assert list(rows[0]) == ["input", "rank", "class", "index", "probability"] and len(rows) == 15
    records = json.loads((folder / "p.json").read_text())
    assert [r["input"] for r in records] == [str(Path("new") / f"{i}.png") for i in range(5)]
    order, p = expected.top_k(3)
    for i, record in enumerate(records):
        assert [t["index"] for t in record["top"]] == order[i].tolist()
        assert [t["class"] for t in record["top"]] == [str(c) for c in order[i]]
        np.testing.assert_allclose([t["probability"] for t in record["top"]], p[i], rtol=1e-12)
        mine = [r for r in rows if r["input"] == record["input"]]
        assert [int(r["rank"]) for r in mine] == [1, 2, 3]
        np.testing.assert_allclose([float(r["probability"]) for r in mine], p[i], rtol=1e-12)


def test_features_command_writes_the_layers_activations(work):
    folder, weights = work
    done = invoke("predict", "s.yaml", "new", "--weights", "run/w.safetensors", "--features", "fc", "--out", "f.npz")
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == "wrote f.npz: features of fc (its output) [3] for 5 inputs"
    with np.load(folder / "f.npz", allow_pickle=False) as saved:
        assert set(saved.files) == {"features", "inputs"}
        np.testing.assert_allclose(saved["features"], numpy_forward(new_pixels(folder), weights)[1], rtol=1e-4,
                                   atol=1e-5)
        assert saved["inputs"].tolist() == [str(Path("new") / f"{i}.png") for i in range(5)]
    fused = invoke("predict", "s.yaml", "new/1.png", "--weights", "run/w.safetensors", "--features", "hidden")
    assert fused.exit_code == 0, fused.output
    assert fused.stdout.strip() == ("wrote features.npz: features of hidden (after the relu fused into it) [5] "
                                    "for 1 input")


# --------------------------------------------------------------------------- errors


def failed(result, code: str, fragment: str):
    """An error rendered as netc renders them: exit 1, the code and message on stderr, no traceback."""
    assert result.exit_code == 1, result.output
    assert f"error[{code}]" in result.output and fragment in result.output, result.output
    assert "Traceback" not in result.output


def nothing_written(folder: Path) -> None:
    assert not list(folder.glob("out.*")) and not (folder / "features.npz").exists()
    assert not list(folder.glob("*.tmp"))


@pytest.mark.parametrize("out", ["out.csv", "out.json", "out.npz"])
def test_errors_are_located_and_write_nothing(work, out):
    folder, _ = work
    extra = ["--out", out] + (["--features", "fc"] if out.endswith(".npz") else [])
    w = ["--weights", "run/w.safetensors"]

    failed(invoke("predict", "s.yaml", "new", "--weights", "run/none.safetensors", *extra),
           "E-CHECKPOINT", "checkpoint not found")
    save_checkpoint(folder / "other.safetensors", {"fc.weight": np.zeros((2, 2), np.float32)})
    failed(invoke("predict", "s.yaml", "new", "--weights", "other.safetensors", *extra),
           "E-RUN", "the checkpoint does not fit shapes")
    np.save(folder / "wrong.npy", np.zeros((2, 5), np.float32))
    failed(invoke("predict", "s.yaml", "wrong.npy", *w, *extra), "E-DATA", "expects samples of shape [1, 4, 4]")
    (folder / "new" / "broken.png").write_bytes(b"not a png")
    result = invoke("predict", "s.yaml", "new", *w, *extra)
    failed(result, "E-DATA", "cannot read new/broken.png as an image")
    assert "damaged or not a PNG" in result.output
    (folder / "new" / "broken.png").unlink()
    (folder / "empty").mkdir()
    failed(invoke("predict", "s.yaml", "empty", *w, *extra), "E-DATA", "the folder empty holds no images")
    result = invoke("predict", "s.yaml", "nwe", *w, *extra)
    failed(result, "E-DATA", "input not found: nwe")
    assert "did you mean 'new'?" in result.output
    (folder / "notes.txt").write_text("x")
    failed(invoke("predict", "s.yaml", "notes.txt", *w, *extra), "E-DATA", "not an image, .npy, .npz or .csv")
    (folder / "run" / "classes.json").write_text('["only", "two"]')
    failed(invoke("predict", "s.yaml", "new", *w, *extra), "E-PREDICT", "does not name the network's 3 classes")
    (folder / "run" / "classes.json").unlink()
    nothing_written(folder)


def test_an_unknown_layer(work):
    folder, _ = work
    result = invoke("predict", "s.yaml", "new", "--weights", "run/w.safetensors", "--features", "hiden")
    failed(result, "E-PREDICT", "no layer named 'hiden' in shapes")
    assert "did you mean 'hidden'?" in result.output and "s.yaml:7:3:" in result.output  # the spec's layers
    nothing_written(folder)


def test_images_need_an_image_input_and_outputs_a_known_suffix(work):
    folder, _ = work
    (folder / "flat.yaml").write_text(IMAGES_SPEC.replace("[1, 4, 4]", "[16]").replace(
        "  - {name: flat, op: flatten}\n", "").replace("data:\n  train: {source: images, path: pics, "
                                                      "normalize: max}\n", ""))
    result = invoke("predict", "flat.yaml", "new/0.png", "--weights", "run/w.safetensors")
    failed(result, "E-DATA", "new/0.png is an image, but input 'image' of shapes has shape [16]")
    bad = invoke("predict", "s.yaml", "new", "--weights", "run/w.safetensors", "--out", "out.txt")
    assert bad.exit_code == 2 and "a .csv or .json file" in bad.output
    bad = invoke("predict", "s.yaml", "new", "--weights", "run/w.safetensors", "--features", "fc", "--out", "f.csv")
    assert bad.exit_code == 2 and "an .npz archive" in bad.output
    nothing_written(folder)


def test_api_errors_are_netc_errors(work):
    folder, _ = work
    loaded = load_spec(folder / "s.yaml")
    with pytest.raises(RunError, match="checkpoint not found"):
        Predictor(loaded, folder / "nope.safetensors")
    with pytest.raises(DataError, match="holds no samples"):
        np.save(folder / "none.npy", np.zeros((0, 16), np.float32))
        read_inputs(loaded, ["none.npy"])


# --------------------------------------------------------------------------- the example


def test_the_features_example_runs(tmp_path):
    """examples/features_logreg.py: trains digits-cnn (one epoch here) and fits LogisticRegression on relu3."""
    env = {**os.environ, "NETC_BACKGROUND_COMPILE": "0"}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "features_logreg.py"), "--epochs", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "relu3 features: 64 per digit, 1438 train digits"
    accuracy = float(lines[1].split("test accuracy ")[1].split()[0])
    assert accuracy > 0.8, lines


def test_predict_reads_the_runs_normalization_and_needs_no_training_data(tmp_path):
    """A run folder holds the train split's statistics: predictions on a machine without the training
    data equal those with it."""
    from netc.runtime.checkpoint import NORMALIZATION, load_normalization
    from netc.runtime.data import normalization_stats
    from netc.runtime.predict import Predictor
    from netc.runtime.train import Overrides, Trainer
    from netc.spec import load_spec

    loaded = load_spec(ROOT / "specs" / "digits-mlp.yaml")
    run = Trainer(loaded, Overrides(epochs=1), run_dir=tmp_path / "run", tier="python").run().run_dir
    saved = load_normalization(run / NORMALIZATION)
    computed = normalization_stats(loaded)
    assert saved.kind == computed.kind == "max"
    for name in computed.shift:
        np.testing.assert_array_equal(saved.shift[name], computed.shift[name])
        np.testing.assert_array_equal(saved.scale[name], computed.scale[name])
    x = np.random.default_rng(0).uniform(0, 16, size=(5, 64))
    with_saved = Predictor(loaded, run / "last.safetensors").predict(x)
    (run / NORMALIZATION).unlink()
    with_data = Predictor(loaded, run / "last.safetensors").predict(x)
    np.testing.assert_array_equal(with_saved.outputs, with_data.outputs)
    (run / NORMALIZATION).write_bytes(b"not safetensors")
    with pytest.raises(RunError) as info:
        Predictor(loaded, run / "last.safetensors")
    assert info.value.diagnostics[0].code == "E-CHECKPOINT"
