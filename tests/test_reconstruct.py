"""Projection plans and the pictures built on them (`netc viz reconstruct`, `occlusion`, `saliency`).

Oracles: deconvnet and guided projections against plain numpy written from the papers' rules
(Zeiler & Fergus 2014; Springenberg et al. 2015), saliency against the finite-difference gradient
of the class score in float64, occlusion against the brute-force loop over a numpy forward pass,
and a single linear conv layer's reconstruction against PyTorch's transposed convolution.
The CLI commands and every error path through the real typer app."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import netc.cli  # noqa: F401  (registers every command on the app)
from netc import viz
from netc.cli.app import app
from netc.compiler import compile_graph
from netc.compiler.projection import Projection, missing_rules
from netc.errors import NetcError
from netc.graph import build_graph
from netc.kernels.activation import DECONVNET_RELU, GUIDED_RELU, act_backward
from netc.ops.base import REGISTRY
from netc.runtime.checkpoint import save_checkpoint
from netc.runtime.model import Model
from netc.spec import load_spec, load_spec_text
from reference import network_forward

ROOT = Path(__file__).resolve().parent.parent
CNN = ROOT / "specs" / "digits-cnn.yaml"
XOR = ROOT / "specs" / "xor.yaml"
pytestmark = pytest.mark.compiled

runner = CliRunner(env={"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None, "COLUMNS": "200"})


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# conv -> relu -> maxpool -> conv -> relu: the deconvnet's layers, in float64
SMALL = """
netc: 1
name: small
inputs:
  image: {shape: [2, 9, 9]}
  label: {shape: [], dtype: int64, classes: 3}
layers:
  - {name: conv1, op: conv2d, in: image, filters: 4, kernel: 3, padding: 1}
  - {name: relu1, op: relu}
  - {name: pool1, op: maxpool2d, kernel: 2}
  - {name: conv2, op: conv2d, filters: 5, kernel: 3}
  - {name: relu2, op: relu}
  - {name: flat, op: flatten}
  - {name: fc, op: linear, out: 3}
loss: {op: cross_entropy, input: fc, target: label}
train: {batch: 4, dtype: float64}
"""


@pytest.fixture(scope="module")
def small():
    """The SMALL network, random weights (biases too, so every ReLU cuts somewhere), 7 random images."""
    graph = build_graph(load_spec_text(SMALL))
    rng = np.random.default_rng(3)
    weights = {"conv1.weight": rng.normal(size=(4, 2, 3, 3)), "conv1.bias": rng.normal(size=4) * 0.3,
               "conv2.weight": rng.normal(size=(5, 4, 3, 3)) * 0.5, "conv2.bias": rng.normal(size=5) * 0.3,
               "fc.weight": rng.normal(size=(3, 20)), "fc.bias": rng.normal(size=3)}
    return graph, weights, rng.normal(size=(7, 2, 9, 9))


# ----------------------------------------------------------------------- numpy, from the papers' rules


def conv(x, w, b, pad):
    """Cross-correlation of one image x (C, H, W) with w (F, C, k, k), stride 1."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    k = w.shape[2]
    oh, ow = x.shape[1] - k + 1, x.shape[2] - k + 1
    out = np.zeros((w.shape[0], oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = np.tensordot(w, x[:, i:i + k, j:j + k], axes=3) + b
    return out


def conv_transposed(r, w, pad, shape):
    """The deconvnet's filtering: r (F, OH, OW) spread back through the transposed filters of w onto (C, H, W)."""
    k = w.shape[2]
    out = np.zeros((shape[0], shape[1] + 2 * pad, shape[2] + 2 * pad))
    for i in range(r.shape[1]):
        for j in range(r.shape[2]):
            out[:, i:i + k, j:j + k] += np.tensordot(r[:, i, j], w, axes=1)
    return out[:, pad:pad + shape[1], pad:pad + shape[2]]


def maxpool(x):
    """2x2 stride-2 max pooling of (C, H, W) and its switches: where each maximum was (first on ties)."""
    c, h, w = x.shape
    y, switches = np.zeros((c, h // 2, w // 2)), np.zeros((c, h // 2, w // 2, 2), np.int64)
    for ch in range(c):
        for i in range(h // 2):
            for j in range(w // 2):
                window = x[ch, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                a, b = np.unravel_index(np.argmax(window), (2, 2))
                y[ch, i, j], switches[ch, i, j] = window[a, b], (2 * i + a, 2 * j + b)
    return y, switches


def unpool(r, switches, shape):
    """The deconvnet's unpooling: each signal placed where its window's maximum was."""
    out = np.zeros(shape)
    for ch, i, j in np.ndindex(r.shape):
        a, b = switches[ch, i, j]
        out[ch, a, b] += r[ch, i, j]
    return out


def relu_rule(r, z, method):
    """A ReLU's backward: deconvnet passes the signal's positive part, guided where the signal and
    the forward input are both positive, the gradient where the forward input is."""
    if method == "deconvnet":
        return np.maximum(r, 0.0)
    if method == "guided":
        return r * (z > 0) * (r > 0)
    return r * (z > 0)


def project_reference(x, weights, unit, method):
    """One image x (2, 9, 9): keep relu2's activation at unit = (map, y, x), project it to the input."""
    w1, b1, w2, b2 = (weights[k] for k in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"))
    z1 = conv(x, w1, b1, 1)
    a1 = np.maximum(z1, 0)
    p1, switches = maxpool(a1)
    z2 = conv(p1, w2, b2, 0)
    a2 = np.maximum(z2, 0)
    signal = np.zeros_like(a2)
    signal[tuple(unit)] = a2[tuple(unit)]
    r = relu_rule(signal, z2, method)
    r = conv_transposed(r, w2, 0, p1.shape)
    r = unpool(r, switches, a1.shape)
    r = relu_rule(r, z1, method)
    return conv_transposed(r, w1, 1, x.shape), a2


# ----------------------------------------------------------------------- projections


def test_relu_rules_are_the_kernel_branches():
    assert REGISTRY["relu"].activation.rules == {"deconvnet": DECONVNET_RELU, "guided": GUIDED_RELU}
    def chain(dy, y, rule):  # act_chain through the kernel that calls it (a helper has no Python entry)
        dx = np.zeros(1)
        act_backward(np.array([dy]), np.array([y]), dx, rule, 0.0, False)
        return dx[0]

    for dy, y in [(2.0, 1.0), (2.0, 0.0), (-2.0, 1.0), (-2.0, 0.0)]:
        assert chain(dy, y, DECONVNET_RELU) == max(dy, 0.0)
        assert chain(dy, y, GUIDED_RELU) == (dy if dy > 0 and y > 0 else 0.0)
        assert chain(dy, y, 1) == (dy if y > 0 else 0.0)  # relu's own


def test_the_projection_plan_is_the_backward_from_the_start_tensor(small):
    graph, _, _ = small
    plan = compile_graph(graph, 4, fuse_pools=False, projection=Projection("relu2", "deconvnet"))
    assert plan.needs_grad["image"] and plan.needs_grad["relu1"] and not plan.needs_grad["fc"]
    backward = " ".join(plan.sources["python"].split("def backward")[1].split("def epoch")[0].split())
    assert backward.count("B(False), I64(9), 0.0") == 2 and "I64(1), 0.0" not in backward  # the rule, not relu's
    assert "linear_backward" not in backward and "_update(" not in backward  # nothing above relu2, no updates
    training = compile_graph(graph, 4, fuse_pools=False)
    assert not training.needs_grad["image"] and "image" not in training.buffers.grads


@pytest.mark.parametrize("method", ["deconvnet", "guided", "gradient"])
def test_projection_through_conv_relu_maxpool_conv_equals_the_papers_rules(small, method):
    graph, weights, images = small
    relu2 = np.stack([project_reference(x, weights, (0, 0, 0), method)[1] for x in images])
    # per sample: the strongest unit of a map, and a unit that may be zero
    units = np.array([(s % 5,) + np.unravel_index(np.argmax(relu2[s, s % 5]), (2, 2)) for s in range(7)])
    units[6] = (1, 1, 0)
    got = viz.reconstruct(graph, weights, images, "conv2", units, method)
    expected = np.stack([project_reference(x, weights, u, method)[0] for x, u in zip(images, units)])
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert np.abs(expected[:6]).max() > 0


def test_the_three_methods_differ_on_this_net(small):
    graph, weights, images = small
    units = [(2, 0, 1)] * len(images)
    refs = {m: np.stack([project_reference(x, weights, units[0], m)[0] for x in images])
            for m in ("deconvnet", "guided", "gradient")}
    assert not np.allclose(refs["deconvnet"], refs["guided"])
    assert not np.allclose(refs["guided"], refs["gradient"])
    assert not np.allclose(refs["deconvnet"], refs["gradient"])


def test_projector_leaves_parameter_gradients_alone(small):
    graph, weights, images = small
    projector = viz.Projector(graph, weights, "relu2", "guided")
    signal = np.random.default_rng(0).normal(size=(7, 5, 2, 2))
    out = projector.project(images, signal)
    assert out.shape == (7, 2, 9, 9) and np.abs(out).max() > 0
    assert not projector.model.G.any()  # no parameter gradient computed
    np.testing.assert_allclose(projector.activations(images)[:, :, 0, 0], np.stack(
        [project_reference(x, weights, (0, 0, 0), "gradient")[1][:, 0, 0] for x in images]), rtol=1e-12)


def test_saliency_is_the_finite_difference_gradient_of_the_class_score(small):
    graph, weights, images = small
    images, classes = images[:3], np.array([0, 2, 1])
    grads = viz.input_gradients(graph, weights, images, classes)
    eps = 1e-6
    runner = viz.Runner(graph, weights)
    steps = np.eye(images[0].size).reshape((-1,) + images.shape[1:]) * eps
    for s in range(3):
        plus = runner.forward(images[s] + steps, ["fc"], "image")["fc"][:, classes[s]]
        minus = runner.forward(images[s] - steps, ["fc"], "image")["fc"][:, classes[s]]
        numeric = ((plus - minus) / (2 * eps)).reshape(images.shape[1:])
        np.testing.assert_allclose(grads[s], numeric, rtol=1e-5, atol=1e-7)
    maps = viz.saliency(graph, weights, images, classes)
    np.testing.assert_array_equal(maps, np.abs(grads).max(axis=1))
    assert viz.score_tensor(graph) == "fc"


def test_saliency_differentiates_the_logits_under_a_log_softmax():
    graph = build_graph(load_spec(ROOT / "specs" / "seed-cnn.yaml"))
    assert viz.score_tensor(graph) == "fc2"


def test_occlusion_equals_the_brute_force_loop(small):
    graph, weights, images = small
    spec = yaml.safe_load(SMALL)
    image, label, size, stride, fill = images[4], 2, 3, 2, np.array([0.25, -0.5])
    result = viz.occlusion(graph, weights, image, label, size, stride, fill, layer="conv2")
    assert result.tensor == "relu2" and result.what == "probability"
    whole = network_forward(spec, weights, {"image": image[None]})
    assert result.feature_map == int(np.argmax(whole["relu2"][0].reshape(5, -1).max(axis=1)))
    tops = range(0, 9 - size + 1, stride)
    assert list(result.tops) == list(tops) and list(result.lefts) == list(tops)
    for i, top in enumerate(tops):
        for j, left in enumerate(tops):
            hidden = image.copy()
            hidden[:, top:top + size, left:left + size] = fill[:, None, None]
            values = network_forward(spec, weights, {"image": hidden[None]})
            logits = values["fc"][0]
            p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            assert result.probability[i, j] == pytest.approx(p[label], rel=1e-10)
            assert result.activity[i, j] == pytest.approx(values["relu2"][0, result.feature_map].sum(), rel=1e-10)
    logits = whole["fc"][0]
    assert result.baseline == pytest.approx(np.exp(logits[label]) / np.exp(logits).sum(), rel=1e-10)


LINEAR = """
netc: 1
name: linear_conv
inputs:
  image: {shape: [3, 7, 6]}
  label: {shape: [], dtype: int64, classes: 2}
layers:
  - {name: conv1, op: conv2d, in: image, filters: 4, kernel: 3, stride: 2, padding: 1}
  - {name: flat, op: flatten}
  - {name: fc, op: linear, out: 2}
loss: {op: cross_entropy, input: fc, target: label}
train: {batch: 8, dtype: float64}
"""


@pytest.mark.parametrize("method", ["deconvnet", "guided", "gradient"])
def test_a_single_linear_conv_reconstructs_by_its_transposed_convolution(method):
    graph = build_graph(load_spec_text(LINEAR))
    rng = np.random.default_rng(1)
    weights = {"conv1.weight": rng.normal(size=(4, 3, 3, 3)), "conv1.bias": rng.normal(size=4),
               "fc.weight": rng.normal(size=(2, 48)), "fc.bias": np.zeros(2)}
    images = rng.normal(size=(5, 3, 7, 6))
    units = np.array([(0, 0, 0), (3, 3, 2), (1, 2, 1), (2, 0, 2), (3, 1, 0)])
    got = viz.reconstruct(graph, weights, images, "conv1", units, method)  # no ReLU: every method is the same
    values = viz.Projector(graph, weights, "conv1").activations(images)
    kept = viz.keep_units(values, units)
    # the transposed convolution (stride 2, padding 1) of one kept activation a at (f, y, x) is a times
    # filter f, placed on the unit's receptive field and cut to the image
    for s, (f, y, x) in enumerate(units):
        placed = np.zeros((3, 9, 8))
        placed[:, 2 * y:2 * y + 3, 2 * x:2 * x + 3] = kept[s, f, y, x] * weights["conv1.weight"][f]
        np.testing.assert_allclose(got[s], placed[:, 1:8, 1:7], atol=1e-12, err_msg=str(s))
    try:
        import torch
    except ImportError:
        return
    expected = torch.nn.functional.conv_transpose2d(torch.from_numpy(kept), torch.from_numpy(weights["conv1.weight"]),
                                                    stride=2, padding=1, output_padding=(0, 1)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


SIGMOID = """
netc: 1
name: sigmoid_cnn
inputs:
  image: {shape: [1, 8, 8]}
  label: {shape: [], dtype: int64, classes: 10}
layers:
  - {name: conv1, op: conv2d, in: image, filters: 4, kernel: 3, padding: 1}
  - {name: sig1, op: sigmoid}
  - {name: pool1, op: maxpool2d, kernel: 2}
  - {name: conv2, op: conv2d, filters: 4, kernel: 3, padding: 1}
  - {name: relu2, op: relu}
  - {name: flat, op: flatten}
  - {name: fc, op: linear, out: 10}
loss: {op: cross_entropy, input: fc, target: label}
train: {batch: 16}
data:
  train: {source: digits, split: train, normalize: max}
  eval: {source: digits, split: test, normalize: max}
"""


def test_projection_refuses_an_activation_without_a_rule():
    graph = build_graph(load_spec_text(SIGMOID))
    assert [n.name for n in missing_rules(graph, "relu2", "deconvnet")] == ["sig1"]
    assert missing_rules(graph, "relu2", "gradient") == [] and missing_rules(graph, "sig1", "guided")
    with pytest.raises(ValueError, match="guided has no backward rule for 'sig1' \\(sigmoid\\)"):
        compile_graph(graph, 4, fuse_pools=False, projection=Projection("relu2", "guided"))
    with pytest.raises(NetcError, match="deconvnet has no backward rule for 'sig1'"):
        viz.Projector(graph, Model(graph, tier="python").get_weights(), "relu2", "deconvnet")
    with pytest.raises(ValueError, match="cannot project from 'conv2': it is computed inside the step of conv2 \\+"):
        compile_graph(graph, 4, fuse_pools=False, projection=Projection("conv2"))
    with pytest.raises(ValueError, match="unknown projection method 'deconv'"):
        Projection("relu2", "deconv")


# ----------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """digits-cnn's initial weights as a checkpoint (the commands' mechanics need no training)."""
    folder = tmp_path_factory.mktemp("cnn")
    save_checkpoint(folder / "w.safetensors", Model(build_graph(load_spec(CNN)), tier="python").get_weights())
    return folder / "w.safetensors"


def check_png(path: Path, size=None) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG" and (size is None or image.size == tuple(size))
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 2, "a blank picture"
    return pixels


def test_reconstruct_command_draws_maps_beside_their_patches(cnn, tmp_path):
    out = tmp_path / "r.png"
    result = invoke("viz", "reconstruct", CNN, "--weights", cnn, "--layer", "conv2", "--top", "3", "--per-map", "4",
                    "-o", out)
    assert result.exit_code == 0, result.output
    assert "deconvnet reconstructions of maps" in result.output and "of conv2 (after the fused relu)" in result.output
    assert "4 per map beside their 8x8 patches, from 359 eval samples" in result.output
    check_png(out)
    chosen = invoke("viz", "reconstruct", CNN, "--weights", cnn, "--layer", "conv1", "--method", "guided",
                    "--map", "5", "--map", "2", "--per-map", "2", "--data", "train", "-o", tmp_path / "g.png")
    assert chosen.exit_code == 0, chosen.output
    assert "guided reconstructions of maps 5, 2 of conv1" in chosen.output


def test_top_reconstructions_agree_with_the_patches_and_project_each_unit(cnn):
    loaded = load_spec(CNN)
    found = viz.top_reconstructions(loaded, cnn, "conv2", "deconvnet", top=3, per_map=2)
    patches = viz.strongest_patches(loaded, cnn, "conv2", top=3, per_map=2)
    np.testing.assert_array_equal(found.maps, patches.maps)
    np.testing.assert_array_equal(found.samples, patches.samples)
    np.testing.assert_array_equal(found.units, patches.units)
    np.testing.assert_allclose(found.values, patches.values, rtol=1e-6)
    np.testing.assert_array_equal(np.isnan(found.patches), np.isnan(found.reconstructions))
    # each reconstruction is that one unit's projection (checked against the API on the same images)
    from netc.runtime.data import load_dataset

    data = load_dataset(loaded, "eval", load_dataset(loaded, "train").stats)
    i, j = 1, 1
    unit = np.array([[found.maps[i], *found.units[i, j]]])
    alone = viz.reconstruct(loaded_graph := build_graph(loaded), cnn, data.arrays["image"][[found.samples[i, j]]],
                            "conv2", unit)
    np.testing.assert_allclose(found.full[i, j], alone[0], rtol=1e-5, atol=1e-6)
    assert loaded_graph.spec.name == "digits_cnn"


def test_occlusion_and_saliency_commands(cnn, tmp_path):
    result = invoke("viz", "occlusion", CNN, "--weights", cnn, "-s", "3", "-s", "7", "--size", "4", "--stride", "2",
                    "--layer", "conv2", "--fill", "mean", "-o", tmp_path / "o.png")
    assert result.exit_code == 0, result.output
    assert "4x4 square, stride 2, mean fill" in result.output and "#3 " in result.output
    check_png(tmp_path / "o.png")
    result = invoke("viz", "saliency", CNN, "--weights", cnn, "--class", "3", "-o", tmp_path / "s.png")
    assert result.exit_code == 0, result.output
    assert "|d fc2[class] / d input| of #0 class 3" in result.output
    check_png(tmp_path / "s.png")


def test_the_viz_help_lists_the_new_pictures():
    help_text = invoke("viz", "--help").output
    assert "reconstruct" in help_text and "occlusion" in help_text and "saliency" in help_text
    assert "deconvnet" in invoke("viz", "reconstruct", "--help").output


def error_of(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return result.output


def test_errors_name_the_problem(cnn, tmp_path):
    out = tmp_path / "x.png"
    text = error_of(invoke("viz", "reconstruct", CNN, "--weights", cnn, "--layer", "pool1", "-o", out))
    assert "digits-cnn.yaml:12:" in text and "layer 'pool1' is a maxpool2d layer, not conv2d" in text
    assert "conv layers: conv1, conv2" in text
    text = error_of(invoke("viz", "reconstruct", CNN, "--weights", cnn, "--layer", "conv2", "--map", "32", "-o", out))
    assert "feature map 32 is out of range: conv2 has 32 maps (0..31)" in text
    text = error_of(invoke("viz", "occlusion", CNN, "--weights", cnn, "--size", "9", "-o", out))
    assert "occluder size 9 is larger than the image 8x8" in text and "a --size from 1 to 8" in text
    text = error_of(invoke("viz", "occlusion", CNN, "--weights", cnn, "--layer", "fc1", "-o", out))
    assert "layer 'fc1' is a linear layer" in text
    for command in ("occlusion", "saliency"):
        text = error_of(invoke("viz", command, CNN, "--weights", cnn, "-s", "1", "-s", "359", "-o", out))
        assert "sample 359 is out of range: the eval data has 359 samples (0..358)" in text
        assert "digits-cnn.yaml:" in text
    text = error_of(invoke("viz", "saliency", CNN, "--weights", cnn, "--class", "10", "-o", out))
    assert "class 10 is out of range: digits_cnn has 10 classes (0..9)" in text
    text = error_of(invoke("viz", "saliency", XOR, "--weights", cnn, "-o", out))
    assert "input 'x' has shape [2], not an image" in text
    assert not out.exists()


def test_a_method_without_a_rule_points_at_the_layer(tmp_path):
    spec = tmp_path / "sigmoid.yaml"
    spec.write_text(SIGMOID.lstrip())
    weights = tmp_path / "w.safetensors"
    save_checkpoint(weights, Model(build_graph(load_spec(spec)), tier="python").get_weights())
    for method in ("deconvnet", "guided"):
        text = error_of(invoke("viz", "reconstruct", spec, "--weights", weights, "--layer", "conv2", "--method",
                               method, "-o", tmp_path / "x.png"))
        assert "sigmoid.yaml:8:" in text
        assert f"the {method} method has a backward rule for relu only, and 'sig1' below conv2 is a sigmoid" in text
        assert "use --method gradient, or pick a conv layer before 'sig1'" in text
    text = error_of(invoke("viz", "reconstruct", spec, "--weights", weights, "--layer", "conv1", "-o",
                           tmp_path / "x.png"))
    assert "and conv1's own activation 'sig1' is a sigmoid" in text and "use --method gradient" in text
    fine = invoke("viz", "reconstruct", spec, "--weights", weights, "--layer", "conv2", "--method", "gradient",
                  "--top", "2", "--per-map", "2", "-o", tmp_path / "g.png")
    assert fine.exit_code == 0, fine.output
