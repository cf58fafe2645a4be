"""Pictures (netc/viz/ and `netc viz`/`plot`/`eval --plot`): every picture rendered from real
runs of digits-cnn and xor, checked as PNG files; receptive fields against a brute-force oracle;
the CLI commands and their errors through the real typer app."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import netc.cli  # noqa: F401  (registers every command on the app)
from netc import viz
from netc.cli.app import app
from netc.errors import NetcError
from netc.graph import build_graph
from netc.runtime.checkpoint import load_weights
from netc.runtime.data import load_dataset
from netc.runtime.model import EvalResult
from netc.runtime.train import Overrides, Trainer, evaluate_checkpoint
from netc.spec import load_spec, load_spec_text
from reference import network_forward

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
CNN = SPECS / "digits-cnn.yaml"
XOR = SPECS / "xor.yaml"
pytestmark = pytest.mark.compiled

runner = CliRunner(env={"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None, "COLUMNS": "200"})


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def check_png(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A readable PNG of `size` (width, height) whose pixels are not all the same; returns them."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        if size is not None:
            assert image.size == tuple(size)
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 2, "a blank picture"
    return pixels


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A short digits-cnn run and an xor run (each writes curves.png when it ends)."""
    root = tmp_path_factory.mktemp("runs")
    cnn = Trainer(load_spec(CNN), Overrides(epochs=2), runs_root=root, on_finish=viz.save_run_curves).run()
    xor = Trainer(load_spec(XOR), Overrides(epochs=20), runs_root=root, on_finish=viz.save_run_curves).run()
    return {"cnn": cnn.run_dir, "xor": xor.run_dir}


# --------------------------------------------------------------------------- curves


def test_training_writes_curves_png_into_the_run_folder(runs):
    for run in runs.values():
        check_png(run / "curves.png", (1000, 400))


def test_curves_of_one_run_and_a_comparison(runs, tmp_path):
    result = viz.plot_curves(runs["cnn"], tmp_path / "cnn.png")
    assert result.epochs == [2] and result.accuracy
    check_png(result.path, result.size)
    compare = viz.plot_runs([runs["cnn"], runs["xor"]], tmp_path / "compare.png")
    assert compare.runs == ["digits_cnn", "xor"]
    assert compare.epochs == [2, 20]
    check_png(compare.path, compare.size)


def test_curves_of_a_loss_without_accuracy_have_one_panel(tmp_path):
    run = tmp_path / "mse"
    run.mkdir()
    lines = [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": None, "eval_loss": None, "eval_accuracy": None}
             for e in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = viz.plot_curves(run)
    assert not result.accuracy and result.size == (500, 400)
    check_png(run / "curves.png", result.size)


def test_curves_of_a_scheduled_run_add_the_learning_rate(tmp_path):
    run = tmp_path / "scheduled"
    run.mkdir()
    lines = [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.5, "eval_loss": None, "eval_accuracy": None,
              "lr": 0.1 * 0.5 ** e} for e in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = viz.plot_curves(run)
    assert result.learning_rate and result.size == (1500, 400)
    check_png(run / "curves.png", result.size)
    constant = [dict(line, lr=0.1) for line in lines]  # a constant rate draws no panel
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in constant))
    assert not viz.plot_curves(run).learning_rate and viz.plot_curves(run).size == (1000, 400)


def test_curves_errors_and_the_quiet_hook(tmp_path):
    with pytest.raises(NetcError, match="no metrics.jsonl") as info:
        viz.plot_curves(tmp_path)
    assert info.value.diagnostics[0].code == "E-VIZ"
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(NetcError, match="no finished epoch"):
        viz.plot_curves(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 0.5}\n{"epoch": 2,\n')
    with pytest.raises(NetcError) as info:
        viz.plot_curves(tmp_path)
    assert info.value.diagnostics[0].location.line == 2
    assert viz.save_run_curves(tmp_path / "missing") is None  # `netc train`'s on_finish hook never raises
    assert not (tmp_path / "curves.png").exists()


# --------------------------------------------------------------------------- filters


def test_filters_of_a_trained_cnn(runs, tmp_path):
    weights = runs["cnn"] / "last.safetensors"
    conv1 = viz.filters_from_checkpoint(load_spec(CNN), weights, "conv1", tmp_path / "conv1.png")
    assert conv1.tiles == 16 * 1 and conv1.grid == (4, 4) and not conv1.rgb
    check_png(conv1.path, conv1.size)
    conv2 = viz.filters_from_checkpoint(load_spec(CNN), weights, "conv2", tmp_path / "conv2.png")
    assert conv2.tiles == 32 * 16 and conv2.grid == (32, 16)
    check_png(conv2.path, conv2.size)


def test_filters_of_three_channels_are_rgb_tiles(tmp_path):
    weight = np.random.default_rng(0).normal(size=(6, 3, 5, 5))
    result = viz.plot_filters(weight, tmp_path / "rgb.png", "conv")
    assert result.rgb and result.tiles == 6 and result.grid == (2, 3)
    pixels = check_png(result.path, result.size)
    assert (np.ptp(pixels.astype(int), axis=2) > 0).any()  # colour, not gray
    gray = viz.plot_filters(weight[:, :2], tmp_path / "gray.png")
    assert not gray.rgb and gray.tiles == 6 * 2


def test_filters_errors_name_the_problem(runs, tmp_path):
    loaded, weights = load_spec(CNN), runs["cnn"] / "last.safetensors"
    with pytest.raises(NetcError) as info:
        viz.filters_from_checkpoint(loaded, weights, "cnov1", tmp_path / "x.png")
    diag = info.value.diagnostics[0]
    assert diag.code == "E-VIZ" and "no layer named 'cnov1'" in diag.message and "did you mean 'conv1'" in diag.hint
    with pytest.raises(NetcError) as info:
        viz.filters_from_checkpoint(loaded, weights, "fc1", tmp_path / "x.png")
    diag = info.value.diagnostics[0]
    assert "linear layer, not conv2d" in diag.message and "conv1, conv2" in diag.hint
    assert diag.location.file == str(CNN) and diag.location.line == 17
    with pytest.raises(NetcError) as info:
        viz.filters_from_checkpoint(loaded, runs["xor"] / "last.safetensors", "conv1", tmp_path / "x.png")
    assert "no tensor 'conv1.weight'" in info.value.diagnostics[0].message
    with pytest.raises(NetcError, match="cannot write a '.xyz' picture"):
        viz.filters_from_checkpoint(loaded, weights, "conv1", tmp_path / "x.xyz")


# --------------------------------------------------------------------------- patches


def test_patches_show_the_strongest_units_of_the_fused_conv(runs, tmp_path):
    loaded, weights = load_spec(CNN), runs["cnn"] / "last.safetensors"
    result = viz.plot_patches(loaded, weights, "conv2", tmp_path / "patches.png", top=4, per_map=5)
    check_png(result.path, result.size)
    assert (result.tensor, result.activation) == ("relu2", "relu")  # conv2 is fused with relu2
    rf = result.rf
    assert rf.source == "image" and rf.size == (8, 8) and rf.jump == (2, 2) and rf.offset == (-3, -3)
    assert result.values.shape == (4, 5) and len(result.maps) == 4
    assert np.all(np.diff(result.values, axis=1) <= 0)  # strongest first in each row
    assert np.all(np.diff(result.values[:, 0]) <= 0)  # maps by their largest activation
    # the numbers are the activations a float64 NumPy oracle computes from the checkpoint
    data = load_dataset(loaded, "eval", load_dataset(loaded, "train").stats)
    spec = yaml.safe_load(CNN.read_text())
    relu2 = network_forward(spec, load_weights(weights), data.arrays)["relu2"]
    for i, c in enumerate(result.maps):
        for j, s in enumerate(result.samples[i]):
            y, x = result.units[i, j]
            assert relu2[s, c, y, x] == pytest.approx(result.values[i, j], rel=1e-4, abs=1e-5)
            assert relu2[s, c].max() == pytest.approx(result.values[i, j], rel=1e-4, abs=1e-5)
        assert relu2[:, c].max() == pytest.approx(result.values[i, 0], rel=1e-4, abs=1e-5)
    others = sorted(set(range(32)) - set(result.maps))
    assert relu2[:, others].max() <= result.values[-1, 0] + 1e-5


def test_patches_of_a_pool_layer_and_its_activation(runs, tmp_path):
    loaded, weights = load_spec(CNN), runs["cnn"] / "last.safetensors"
    pool = viz.plot_patches(loaded, weights, "pool1", tmp_path / "pool1.png", which="train", top=3, per_map=2)
    assert pool.activation is None and pool.rf.size == (4, 4) and pool.rf.jump == (2, 2)
    assert pool.count == len(load_dataset(loaded, "train"))
    relu = viz.plot_patches(loaded, weights, "relu1", tmp_path / "relu1.png", top=20, per_map=3)
    assert relu.activation is None and relu.rf.size == (3, 3) and len(relu.maps) == 16  # top capped at C


RGB_SPEC = """
netc: 1
name: rgb
inputs:
  image: {shape: [3, 10, 10]}
  label: {shape: [], dtype: int64, classes: 2}
layers:
  - {name: conv1, op: conv2d, filters: 4, kernel: 3}
  - {name: pool1, op: maxpool2d, kernel: 2}
  - {name: flat, op: flatten}
  - {name: fc, op: linear, out: 2}
loss: {op: cross_entropy, input: fc, target: label}
data:
  train: {source: npz, path: rgb.npz}
"""


def test_patches_and_filters_of_a_colour_input(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "rgb.npz", image=rng.random((20, 3, 10, 10)).astype(np.float32),
             label=rng.integers(0, 2, 20))
    (tmp_path / "rgb.yaml").write_text(RGB_SPEC)
    loaded = load_spec(tmp_path / "rgb.yaml")
    from netc.runtime.checkpoint import save_checkpoint
    from netc.runtime.model import Model

    save_checkpoint(tmp_path / "w.safetensors", Model(build_graph(loaded)).get_weights())
    result = viz.plot_patches(loaded, tmp_path / "w.safetensors", "conv1", tmp_path / "p.png", which="train",
                              top=2, per_map=3)
    assert result.activation is None and result.rf.size == (3, 3) and result.values.shape == (2, 3)
    pixels = check_png(result.path, result.size)
    assert (np.ptp(pixels.astype(int), axis=2) > 60).sum() > 100  # colour patches
    filters = viz.filters_from_checkpoint(loaded, tmp_path / "w.safetensors", "conv1", tmp_path / "f.png")
    assert filters.rgb and filters.tiles == 4


RF_SPEC = """
netc: 1
name: rf
inputs:
  image: {shape: [2, 17, 15]}
  label: {shape: [], dtype: int64, classes: 2}
layers:
  - {name: c1, op: conv2d, filters: 3, kernel: 5, stride: 2, padding: 2, bias: false}
  - {name: p1, op: avgpool2d, kernel: 3, stride: 2, padding: 1}
  - {name: t1, op: tanh}
  - {name: c2, op: conv2d, filters: 2, kernel: [3, 2], stride: [1, 2], bias: false}
  - {name: flat, op: flatten}
  - {name: fc, op: linear, out: 2}
loss: {op: cross_entropy, input: fc, target: label}
"""


def test_receptive_field_matches_a_brute_force_oracle():
    loaded = load_spec_text(RF_SPEC)
    graph = build_graph(loaded)
    rf = viz.receptive_field(graph, "c2")
    spec = yaml.safe_load(RF_SPEC)
    rng = np.random.default_rng(0)
    weights = {"c1.weight": rng.normal(size=(3, 2, 5, 5)), "c2.weight": rng.normal(size=(2, 3, 3, 2)),
               "fc.weight": np.zeros((2, 2 * 3 * 2)), "fc.bias": np.zeros(2)}
    base = rng.normal(size=(1, 2, 17, 15))
    # one sample per input pixel, with that pixel (both channels) changed
    pixels = [(r, c) for r in range(17) for c in range(15)]
    batch = np.repeat(base, len(pixels), axis=0)
    for index, (r, c) in enumerate(pixels):
        batch[index, :, r, c] += 1.0
    values = network_forward(spec, weights, {"image": np.concatenate([base, batch])})["c2"]
    changed = np.abs(values[1:] - values[:1]) > 1e-12  # [pixels, F, OH, OW]
    oh, ow = graph.shape_of("c2")[1:]
    assert (oh, ow) == (3, 2)
    for y in range(oh):
        for x in range(ow):
            top, left, bottom, right = rf.window(y, x)
            seen = {pixels[i] for i in np.flatnonzero(changed[:, 0, y, x])}
            inside = {(r, c) for r in range(max(top, 0), min(bottom, 17)) for c in range(max(left, 0), min(right, 15))}
            assert seen == inside, (y, x, rf)
    patch = viz.read_patch(base[0], rf, 0, 0)
    assert patch.shape == (2,) + rf.size and np.isnan(patch[:, 0, 0]).all()  # padding outside the image


def test_patches_errors(runs, tmp_path):
    loaded, weights = load_spec(CNN), runs["cnn"] / "last.safetensors"
    with pytest.raises(NetcError) as info:
        viz.plot_patches(loaded, weights, "fc1", tmp_path / "x.png")
    assert "not conv2d" in info.value.diagnostics[0].message and "conv1" in info.value.diagnostics[0].hint
    with pytest.raises(NetcError) as info:
        viz.plot_patches(loaded, weights, "relu3", tmp_path / "x.png")
    assert "gives [64], not feature maps" in info.value.diagnostics[0].message
    with pytest.raises(NetcError) as info:
        viz.plot_patches(load_spec(XOR), runs["xor"] / "last.safetensors", "act", tmp_path / "x.png")
    assert info.value.diagnostics[0].code == "E-VIZ"
    with pytest.raises(NetcError, match="does not fit digits_cnn"):
        viz.plot_patches(loaded, runs["xor"] / "last.safetensors", "conv2", tmp_path / "x.png")


# --------------------------------------------------------------------------- confusion


def test_confusion_matrix_picture(runs, tmp_path):
    loaded = load_spec(CNN)
    result = evaluate_checkpoint(loaded, runs["cnn"] / "last.safetensors")
    picture = viz.confusion_picture(loaded, result, "eval", tmp_path / "confusion.png")
    assert picture.classes == 10 and picture.annotated
    check_png(picture.path, picture.size)
    xor = evaluate_checkpoint(load_spec(XOR), runs["xor"] / "last.safetensors")
    check_png(viz.confusion_picture(load_spec(XOR), xor, "eval", tmp_path / "xor.png").path)
    many = viz.plot_confusion(np.random.default_rng(0).integers(0, 9, (40, 40)), tmp_path / "40.png")
    assert not many.annotated
    mse = load_spec_text(XOR.read_text().replace("op: cross_entropy", "op: mse"), "mse.yaml")
    with pytest.raises(NetcError, match="no confusion matrix") as info:
        viz.confusion_picture(mse, EvalResult(0.1, None, 4, None), "eval", tmp_path / "mse.png")
    assert info.value.diagnostics[0].location.line == 16


def test_the_runtime_never_imports_the_pictures():
    """Training reports its end through Trainer(on_finish=...); the CLI draws curves.png there."""
    for path in (ROOT / "netc" / "runtime").rglob("*.py"):
        text = path.read_text()
        assert "netc.viz" not in text and "from netc import viz" not in text, path


def test_pictures_never_touch_pyplot_or_a_screen(tmp_path):
    code = ("import sys, numpy as np; from netc import viz; "
            f"viz.plot_confusion(np.eye(3, dtype=int), {str(tmp_path / 'c.png')!r}); "
            "sys.exit('matplotlib.pyplot' in sys.modules)")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MPLBACKEND": "TkAgg"}  # no DISPLAY
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    check_png(tmp_path / "c.png")


# --------------------------------------------------------------------------- the CLI


def test_cli_viz_filters(runs, tmp_path):
    weights = runs["cnn"] / "last.safetensors"
    result = invoke("viz", "filters", CNN, "--weights", weights, "--layer", "conv1", "-o", tmp_path / "f.png")
    assert result.exit_code == 0, result.output
    assert "16 grayscale tiles" in result.stdout
    check_png(tmp_path / "f.png")
    result = invoke("viz", "filters", CNN, "--weights", weights, "--layer", "conv", "-o", tmp_path / "g.png")
    assert result.exit_code == 1
    assert "error[E-VIZ]: no layer named 'conv'" in result.stderr and "did you mean" in result.stderr
    assert "Traceback" not in result.output
    result = invoke("viz", "filters", CNN, "--weights", weights, "--layer", "pool1", "-o", tmp_path / "g.png")
    assert result.exit_code == 1 and "maxpool2d layer, not conv2d" in result.stderr
    result = invoke("viz", "filters", CNN, "--weights", runs["xor"] / "last.safetensors", "--layer", "conv1")
    assert result.exit_code == 1 and "no tensor 'conv1.weight'" in result.stderr
    result = invoke("viz", "filters", CNN, "--weights", tmp_path / "none.safetensors", "--layer", "conv1")
    assert result.exit_code == 1 and "error[E-CHECKPOINT]" in result.stderr
    assert not (tmp_path / "g.png").exists()


def test_cli_viz_patches(runs, tmp_path):
    weights = runs["cnn"] / "last.safetensors"
    out = tmp_path / "p.png"
    result = invoke("viz", "patches", CNN, "--weights", weights, "--layer", "conv2", "--data", "eval",
                    "-o", out, "--top", "3", "--per-map", "4")
    assert result.exit_code == 0, result.output
    assert "after the fused relu" in result.stdout and "4 patches of 8x8" in result.stdout
    check_png(out)
    result = invoke("viz", "patches", CNN, "--weights", weights, "--layer", "flat", "-o", out)
    assert result.exit_code == 1 and "error[E-VIZ]" in result.stderr
    result = invoke("viz", "patches", CNN, "--weights", weights, "--layer", "conv2", "--data", "test")
    assert result.exit_code == 2  # not a choice
    help_text = invoke("viz", "--help").stdout
    assert "filters" in help_text and "patches" in help_text


def test_cli_plot_and_eval_plot(runs, tmp_path):
    result = invoke("plot", runs["cnn"], runs["xor"], "-o", tmp_path / "compare.png")
    assert result.exit_code == 0, result.output
    assert "digits_cnn (2 epochs), xor (20 epochs)" in result.stdout
    check_png(tmp_path / "compare.png", (1000, 400))
    result = invoke("plot", runs["cnn"], tmp_path, "-o", tmp_path / "bad.png")
    assert result.exit_code == 1 and "error[E-VIZ]" in result.stderr and "metrics.jsonl" in result.stderr
    result = invoke("eval", CNN, "--weights", runs["cnn"] / "last.safetensors", "--plot", tmp_path / "cm.png")
    assert result.exit_code == 0, result.output
    assert "confusion matrix picture" in result.stdout
    check_png(tmp_path / "cm.png")


def test_cli_export_without_onnx_says_how_to_install_it(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    result = invoke("export", XOR, "--weights", runs["xor"] / "last.safetensors", "-o", tmp_path / "m.onnx")
    assert result.exit_code == 1
    assert "error[E-EXPORT]" in result.stderr and "pip install" in result.stderr
    assert not (tmp_path / "m.onnx").exists()
