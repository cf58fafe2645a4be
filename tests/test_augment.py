"""data.augment: each transform against a per-sample numpy reference with the same draws, the whole
rule against the documented draw order, determinism, what passes through untouched, and check_augment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import netc.cli  # noqa: F401  (registers every command)
from netc.cli.app import app
from netc.errors import DataError
from netc.runtime.data import load_train_eval
from netc.runtime.data.augment import augment, check_augment, crop, flip, shift
from netc.spec import load_spec_text
from netc.spec import models as m

IMAGE = {"image": m.InputSpec(shape=[3, 6, 5]), "label": m.InputSpec(shape=[], dtype="int64", classes=4)}


def images(n: int = 64, shape=(3, 6, 5), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def chunk(n: int = 64) -> dict[str, np.ndarray]:
    return {"image": images(n), "label": np.arange(n, dtype=np.int64) % 4}


# --------------------------------------------------------------------------- per-sample references


def crop_reference(x, pad, oy, ox):
    out = np.empty_like(x)
    h, w = x.shape[2:]
    for i in range(len(x)):
        padded = np.pad(x[i], ((0, 0), (pad, pad), (pad, pad)))
        out[i] = padded[:, oy[i]:oy[i] + h, ox[i]:ox[i] + w]
    return out


def shift_reference(x, dy, dx):
    """out[y, x] = in[y - dy, x - dx], positions past the border taking the nearest edge pixel."""
    out = np.empty_like(x)
    h, w = x.shape[2:]
    for i in range(len(x)):
        for y in range(h):
            for col in range(w):
                out[i, :, y, col] = x[i, :, min(max(y - dy[i], 0), h - 1), min(max(col - dx[i], 0), w - 1)]
    return out


def flip_reference(x, mirror):
    return np.stack([x[i, :, :, ::-1] if mirror[i] else x[i] for i in range(len(x))])


@pytest.mark.parametrize("pad", [1, 2, 4])
def test_crop_is_pad_then_cut_per_sample(pad):
    x = images()
    oy, ox = np.random.default_rng(pad).integers(0, 2 * pad + 1, size=(2, len(x)))
    got = crop(x, pad, oy, ox)
    np.testing.assert_array_equal(got, crop_reference(x, pad, oy, ox))
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == x.shape
    # the middle offset gives the image back
    np.testing.assert_array_equal(crop(x, pad, np.full(len(x), pad), np.full(len(x), pad)), x)


@pytest.mark.parametrize("most", [1, 2, 4])
def test_shift_moves_and_fills_with_the_edge(most):
    x = images()
    dy, dx = np.random.default_rng(most).integers(-most, most + 1, size=(2, len(x)))
    got = shift(x, most, dy, dx)
    np.testing.assert_array_equal(got, shift_reference(x, dy, dx))
    assert got.dtype == np.float32 and got.shape == x.shape
    one = np.arange(6 * 5, dtype=np.float32).reshape(1, 1, 6, 5)
    moved = shift(one, 2, np.array([1]), np.array([-2]))[0, 0]  # one down, two left
    np.testing.assert_array_equal(moved[1:, :3], one[0, 0, :5, 2:])
    np.testing.assert_array_equal(moved[0, :3], one[0, 0, 0, 2:])  # the top row repeated
    np.testing.assert_array_equal(moved[1:, 3:], np.repeat(one[0, 0, :5, 4:], 2, axis=1))  # the right column


def test_flip_mirrors_the_chosen_samples():
    x = images()
    mirror = np.random.default_rng(0).random(len(x)) < 0.5
    got = flip(x, mirror)
    np.testing.assert_array_equal(got, flip_reference(x, mirror))
    assert got.flags.c_contiguous and not np.shares_memory(got, x)


def test_the_rule_draws_crop_shift_flip_noise_in_that_order():
    x = chunk()
    rule = m.Augment(crop=2, shift=1, flip=True, noise=0.3)
    got = augment(x, rule, IMAGE, np.random.default_rng(11))
    rng = np.random.default_rng(11)
    n = len(x["image"])
    oy, ox = rng.integers(0, 5, size=(2, n))
    dy, dx = rng.integers(-1, 2, size=(2, n))
    mirror = rng.random(n) < 0.5
    noise = rng.standard_normal(x["image"].shape, dtype=np.float32) * np.float32(0.3)
    expected = flip_reference(shift_reference(crop_reference(x["image"], 2, oy, ox), dy, dx), mirror) + noise
    np.testing.assert_allclose(got["image"], expected, rtol=0, atol=1e-6)
    assert got["image"].dtype == np.float32 and got["image"].shape == x["image"].shape


def test_noise_alone_adds_gaussian_values_of_the_given_spread():
    x = {"v": np.zeros((4000, 16), np.float32)}
    got = augment(x, m.Augment(noise=0.5), {"v": m.InputSpec(shape=[16])}, np.random.default_rng(0))["v"]
    assert got.dtype == np.float32
    assert abs(got.mean()) < 0.01 and abs(got.std() - 0.5) < 0.01
    assert not x["v"].any()  # the input is unchanged


def test_same_seed_same_output_other_seed_other_output():
    x = chunk()
    rule = m.Augment(crop=1, flip=True, shift=1, noise=0.1)
    a = augment(x, rule, IMAGE, np.random.default_rng([0, 1, 2, 1]))
    b = augment(x, rule, IMAGE, np.random.default_rng([0, 1, 2, 1]))
    c = augment(x, rule, IMAGE, np.random.default_rng([0, 1, 3, 1]))
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["image"], c["image"])


def test_inputs_are_unchanged_and_labels_pass_through():
    x = chunk()
    before = {k: v.copy() for k, v in x.items()}
    out = augment(x, m.Augment(crop=2, flip=True, shift=2, noise=1.0), IMAGE, np.random.default_rng(0))
    for k in x:
        np.testing.assert_array_equal(x[k], before[k])
    assert out["label"] is x["label"]
    assert not np.shares_memory(out["image"], x["image"])


def test_only_the_named_inputs_change_and_geometry_only_images():
    inputs = {"a": m.InputSpec(shape=[1, 4, 4]), "b": m.InputSpec(shape=[1, 4, 4]), "v": m.InputSpec(shape=[3])}
    x = {"a": images(8, (1, 4, 4), 1), "b": images(8, (1, 4, 4), 2), "v": images(8, (3,), 3)}
    out = augment(x, m.Augment(flip=True, noise=0.1, inputs=["a"]), inputs, np.random.default_rng(0))
    assert out["b"] is x["b"] and out["v"] is x["v"] and not np.array_equal(out["a"], x["a"])
    # default: every float input; the vector gets the noise only, so its draws come after the images'
    out = augment(x, m.Augment(flip=True, noise=0.1), inputs, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        mirror = rng.random(8) < 0.5
        np.testing.assert_allclose(out[name], flip_reference(x[name], mirror)
                                   + 0.1 * rng.standard_normal((8, 1, 4, 4), dtype=np.float32), atol=1e-6)
    np.testing.assert_allclose(out["v"], x["v"] + 0.1 * rng.standard_normal((8, 3), dtype=np.float32), atol=1e-6)


def test_flip_probability_is_one_half_and_offsets_cover_their_range():
    n = 20000
    x = np.broadcast_to(np.arange(5, dtype=np.float32), (n, 1, 1, 5))
    out = augment({"i": x}, m.Augment(flip=True), {"i": m.InputSpec(shape=[1, 1, 5])}, np.random.default_rng(3))["i"]
    flipped = out[:, 0, 0, 0] == 4
    assert np.all(flipped | (out[:, 0, 0, 0] == 0))
    assert abs(flipped.mean() - 0.5) < 0.015  # 4.2 standard deviations of a fair coin over 20000 draws
    # crop 2 of a one-hot pixel: every offset 0..4 on each axis, about equally often
    dot = np.zeros((n, 1, 5, 5), np.float32)
    dot[:, 0, 2, 2] = 1
    out = augment({"i": dot}, m.Augment(crop=2), {"i": m.InputSpec(shape=[1, 5, 5])}, np.random.default_rng(4))["i"]
    rows, cols = np.nonzero(out[:, 0].sum(axis=2))[1], np.nonzero(out[:, 0].sum(axis=1))[1]
    assert len(rows) == len(cols) == n  # the pixel always stays inside: offsets within 0..2*crop
    assert np.all(np.abs(np.bincount(rows, minlength=5) / n - 0.2) < 0.015)
    assert np.all(np.abs(np.bincount(cols, minlength=5) / n - 0.2) < 0.015)


# --------------------------------------------------------------------------- check_augment


def spec_text(augment_line: str, inputs: str | None = None) -> str:
    inputs = inputs or ("  image: {shape: [1, 8, 8]}\n  v: {shape: [4]}\n"
                        "  label: {shape: [], dtype: int64, classes: 10}")
    return ("netc: 1\nname: t\ninputs:\n" + inputs + "\n"
            "layers:\n  - {name: flat, op: flatten, in: image}\n  - {name: fc, op: linear, out: 10}\n"
            "loss: {op: cross_entropy, input: fc, target: label}\n"
            "data:\n  train: {source: digits}\n  augment: " + augment_line + "\n")


def make(tmp_path: Path, augment_line: str, inputs: str | None = None):
    return load_spec_text(spec_text(augment_line, inputs), file=str(tmp_path / "s.yaml"), base_dir=tmp_path)


def problems(loaded) -> list:
    with pytest.raises(DataError) as info:
        check_augment(loaded)
    for d in info.value.diagnostics:
        assert d.code == "E-DATA" and d.hint and d.location.file.endswith("s.yaml") and d.location.line
    return info.value.diagnostics


def test_a_sound_rule_passes(tmp_path):
    check_augment(make(tmp_path, "{crop: 2, shift: 7, flip: true, noise: 0.1}"))
    check_augment(make(tmp_path, "{noise: 0.1, inputs: [v, image]}"))
    check_augment(make(tmp_path, "{crop: 1, inputs: [image]}"))


def test_unknown_and_integer_inputs(tmp_path):
    unknown, label = problems(make(tmp_path, "{noise: 0.1, inputs: [imgae, label]}"))
    assert unknown.message == "data.augment names 'imgae', which is not an input of the spec"
    assert "did you mean 'image'?" in unknown.hint
    assert (unknown.path, unknown.location.line, unknown.location.col) == ("data.augment.inputs[0]", 13, 34)
    assert "'label', which is int64" in label.message and label.path == "data.augment.inputs[1]"
    assert label.location.col == 41 and "float inputs: image, v" in label.hint


def test_geometry_needs_an_image_input(tmp_path):
    (d,) = problems(make(tmp_path, "{flip: true, crop: 1, inputs: [v]}"))
    assert d.message == "crop and flip change images ([C, H, W]) but input 'v' has shape [4]"
    assert d.hint == "noise works on any float input; image inputs: image"
    assert d.path == "data.augment.inputs[0]"
    (d,) = problems(make(tmp_path, "{shift: 1}", "  v: {shape: [4]}\n  label: {shape: [], dtype: int64, classes: 3}"))
    assert d.message == "shift changes images ([C, H, W]) but the spec has none (float inputs: v [4])"
    assert "noise works on any float input" in d.hint
    assert (d.path, d.location.line, d.location.col) == ("data.augment.shift", 12, 20)


def test_crop_and_shift_must_be_smaller_than_the_image(tmp_path):
    crop_problem, shift_problem = problems(make(tmp_path, "{crop: 8, shift: 9}"))
    assert crop_problem.message == "crop 8 is not smaller than input 'image' (8 x 8 pixels)"
    assert (crop_problem.path, crop_problem.location.col) == ("data.augment.crop", 19)
    assert shift_problem.message == "shift 9 is not smaller than input 'image' (8 x 8 pixels)"
    assert "below 8" in shift_problem.hint


def test_load_train_eval_and_netc_train_report_it(tmp_path, monkeypatch):
    image_only = "  image: {shape: [1, 8, 8]}\n  label: {shape: [], dtype: int64, classes: 10}"
    with pytest.raises(DataError) as info:
        load_train_eval(make(tmp_path, "{crop: 8}", image_only))
    assert [d.path for d in info.value.diagnostics] == ["data.augment.crop"]
    # netc train stops on it before compiling anything, with the file:line:col and the hint
    (tmp_path / "s.yaml").write_text(spec_text("{crop: 8}", image_only))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "s.yaml")])
    assert result.exit_code == 1
    assert "s.yaml:12:19" in result.output and "crop 8 is not smaller" in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- in the training loop


AUGMENTED = (Path(__file__).resolve().parent.parent / "specs" / "digits-cnn.yaml").read_text().replace(
    "train: {source: digits, split: train, normalize: max}",
    "train: {source: digits, split: train, normalize: max, limit: 300}",
).replace("train: {batch: 32, epochs: 15, seed: 0}", "train: {batch: 32, epochs: 2, seed: 0}") + \
    "  augment: {crop: 1, shift: 1, flip: true, noise: 0.1}\n"


def _recording_trainer(tmp_path, monkeypatch, run_dir, seed=0, **kwargs):
    """A Trainer of the augmented spec, chunks of 64 samples (five per epoch), recording what each
    compiled call trains on."""
    import netc.runtime.train as train_module
    from netc.runtime.train import Overrides, Trainer
    from netc.spec import load_spec_text

    monkeypatch.setattr(train_module, "CHUNK_SAMPLES", 64)
    loaded = load_spec_text(AUGMENTED, str(tmp_path / "aug.yaml"), tmp_path)
    trainer = Trainer(loaded, Overrides(seed=seed), run_dir=run_dir, tier="python", **kwargs)
    seen = []
    train_epoch = trainer.model.train_epoch

    def record(prepared, order, **named):
        seen.append(prepared["image"][order].copy())
        return train_epoch(prepared, order, **named)

    trainer.model.train_epoch = record
    return trainer, seen


def test_training_sees_augmented_samples_the_same_for_the_same_seed(tmp_path, monkeypatch):
    assert "augment:" in AUGMENTED and "limit: 300" in AUGMENTED and "epochs: 2" in AUGMENTED
    first, seen_first = _recording_trainer(tmp_path, monkeypatch, tmp_path / "a")
    first.run()
    again, seen_again = _recording_trainer(tmp_path, monkeypatch, tmp_path / "b")
    again.run()
    other, seen_other = _recording_trainer(tmp_path, monkeypatch, tmp_path / "c", seed=1)
    other.run()
    assert len(seen_first) == 10  # 2 epochs of 5 chunks
    for a, b in zip(seen_first, seen_again):
        np.testing.assert_array_equal(a, b)
    assert not any(np.array_equal(a, b) for a, b in zip(seen_first, seen_other))
    # the same samples are changed differently in the two epochs (drawn anew each epoch), and none is raw
    raw = first.train_data.arrays["image"].reshape(300, -1)
    epoch_one = np.concatenate(seen_first[:5])
    assert not any((epoch_one == row).all(axis=1).any() for row in raw[:50])
    for name in ("last.safetensors",):
        from safetensors.numpy import load_file

        a, b = load_file(str(tmp_path / "a" / name)), load_file(str(tmp_path / "b" / name))
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_run_resumed_mid_epoch_sees_the_same_samples_and_ends_with_the_same_weights(tmp_path, monkeypatch):
    from safetensors.numpy import load_file

    unbroken, seen_unbroken = _recording_trainer(tmp_path, monkeypatch, tmp_path / "whole")
    unbroken.run()
    broken, seen_broken = _recording_trainer(tmp_path, monkeypatch, tmp_path / "broken")
    broken.on_progress = lambda epoch, done, *rest: setattr(broken, "interrupted", epoch == 0 and done >= 4)
    assert broken.run().interrupted  # stopped after the second chunk of the first epoch
    assert len(seen_broken) == 2
    resumed, seen_resumed = _recording_trainer(tmp_path, monkeypatch, tmp_path / "broken", resume=True)
    resumed.run()
    for a, b in zip(seen_broken + seen_resumed, seen_unbroken, strict=True):
        np.testing.assert_array_equal(a, b)
    whole, again = load_file(str(tmp_path / "whole" / "last.safetensors")), load_file(str(tmp_path / "broken" / "last.safetensors"))
    for key in whole:
        np.testing.assert_array_equal(whole[key], again[key], err_msg=key)


def test_a_regression_target_is_not_augmented_unless_named():
    """By default every float input the network reads changes, not a target only the losses read."""
    inputs = {"x": m.InputSpec(shape=[4]), "t": m.InputSpec(shape=[4])}
    arrays = {"x": np.zeros((6, 4), np.float32), "t": np.zeros((6, 4), np.float32)}
    rule = m.Augment(noise=0.5)
    out = augment(arrays, rule, inputs, np.random.default_rng(0), frozenset({"t"}))
    assert out["t"] is arrays["t"] and not np.array_equal(out["x"], arrays["x"])
    named = augment(arrays, m.Augment(noise=0.5, inputs=["t"]), inputs, np.random.default_rng(0), frozenset({"t"}))
    assert not np.array_equal(named["t"], arrays["t"]) and named["x"] is arrays["x"]
