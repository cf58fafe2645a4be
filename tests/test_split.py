"""`data.eval: {from_train: fraction}`: the seeded, stratified split of the train source, its
normalization (statistics from the kept part only), its errors, and a spec using it through validate and train."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import netc.cli  # noqa: F401  (registers every command)
from netc.cli.app import app
from netc.errors import DataError
from netc.runtime.data import compute_stats, load_dataset, load_train_eval, normalization_stats
from netc.runtime.data.split import held_count, split_indices
from netc.spec import load_spec_text

BLOBS_IN = "  x: {shape: [2]}\n  label: {shape: [], dtype: int64, classes: 3}"
REGRESSION = """netc: 1
name: r
inputs:
  x: {shape: [2]}
  y: {shape: [1]}
layers:
  - {name: fc, op: linear, in: x, out: 1}
loss: {op: mse, input: fc, target: y}
data:
"""


def make(tmp_path: Path, data: str, inputs: str = BLOBS_IN):
    """A classifier spec with these inputs and this `data:` body (indented two spaces), loaded from tmp_path."""
    text = ("netc: 1\nname: t\ninputs:\n" + inputs + "\n"
            "layers:\n  - {name: fc, op: linear, in: x, out: 3}\n"
            "loss: {op: cross_entropy, input: fc, target: label}\n"
            "data:\n" + data + "\n")
    return load_spec_text(text, file=str(tmp_path / "s.yaml"), base_dir=tmp_path)


def raw(tmp_path: Path, train: str, inputs: str = BLOBS_IN) -> dict[str, np.ndarray]:
    """The train source's arrays, not normalized and not split."""
    return load_dataset(make(tmp_path, f"  train: {train}", inputs)).arrays


def error_of(fn, *args) -> object:
    with pytest.raises(DataError) as info:
        fn(*args)
    (diag,) = info.value.diagnostics
    assert diag.code == "E-DATA" and diag.hint
    return diag


# --------------------------------------------------------------------------- the split itself


@pytest.mark.parametrize("n, fraction", [(10, 0.1), (30, 0.1), (1797, 0.1), (7, 0.5), (100, 0.25), (3, 0.2)])
def test_sizes_are_scikit_learns(n, fraction):
    from sklearn.model_selection import train_test_split

    kept, held = split_indices(n, fraction, 0)
    sk_train, sk_test = train_test_split(np.arange(n), test_size=fraction, random_state=0)
    assert (len(kept), len(held)) == (len(sk_train), len(sk_test)) == (n - held_count(n, fraction),
                                                                      held_count(n, fraction))


@pytest.mark.parametrize("stratified", [False, True])
def test_no_overlap_and_union_is_everything(stratified):
    labels = np.random.default_rng(1).integers(0, 4, 500) if stratified else None
    kept, held = split_indices(500, 0.3, 5, labels)
    assert len(np.intersect1d(kept, held)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([kept, held])), np.arange(500))
    assert np.all(np.diff(kept) > 0) and np.all(np.diff(held) > 0)  # both keep the source's order
    assert len(held) == 150


@pytest.mark.parametrize("stratified", [False, True])
def test_same_seed_same_split_other_seed_other_split(stratified):
    labels = np.repeat(np.arange(5), 40) if stratified else None
    a = split_indices(200, 0.2, 3, labels)
    b = split_indices(200, 0.2, 3, labels)
    c = split_indices(200, 0.2, 4, labels)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_stratified_keeps_each_class_share():
    labels = np.repeat([0, 1, 2], [60, 30, 10])
    kept, held = split_indices(100, 0.2, 0, labels)
    assert np.bincount(labels[held]).tolist() == [12, 6, 2]
    assert np.bincount(labels[kept]).tolist() == [48, 24, 8]
    # shares that do not divide evenly: each class within one sample of its share, the total exact
    labels = np.random.default_rng(0).integers(0, 7, 1000)
    kept, held = split_indices(1000, 0.15, 2, labels)
    counts = np.bincount(labels, minlength=7)
    assert len(held) == 150
    assert np.all(np.abs(np.bincount(labels[held], minlength=7) - counts * 0.15) < 1)


def test_a_plain_split_does_not_keep_shares_exactly():
    labels = np.repeat([0, 1], [50, 50])
    shares = {np.bincount(labels[split_indices(100, 0.2, seed)[1]], minlength=2)[0] for seed in range(20)}
    assert shares != {10}  # a random split scatters the classes; the stratified one would give 10 every time


# --------------------------------------------------------------------------- through load_dataset


def test_train_is_the_kept_part_and_eval_the_held_out_part(tmp_path):
    loaded = make(tmp_path, "  train: {source: blobs, n: 90, seed: 1}\n  eval: {from_train: 0.2, seed: 7}")
    full = raw(tmp_path, "{source: blobs, n: 90, seed: 1}")
    kept, held = split_indices(90, 0.2, 7, full["label"])
    train, ev = load_dataset(loaded, "train"), load_dataset(loaded, "eval")
    for name in ("x", "label"):
        np.testing.assert_array_equal(train.arrays[name], full[name][kept])
        np.testing.assert_array_equal(ev.arrays[name], full[name][held])
    assert (len(train), len(ev)) == (72, 18)
    assert np.bincount(ev.arrays["label"]).tolist() == [6, 6, 6]  # blobs has 30 of each class
    assert train.source == "blobs (3 classes), 20% held out (seed 7)"
    assert ev.source == "blobs (3 classes), the 20% held out (seed 7)"
    both = load_train_eval(loaded)
    np.testing.assert_array_equal(both[0].arrays["x"], train.arrays["x"])
    np.testing.assert_array_equal(both[1].arrays["x"], ev.arrays["x"])
    assert both[0].arrays["x"].flags.c_contiguous and both[1].arrays["x"].flags.c_contiguous


def test_split_comes_after_limit_and_other_seeds_split_otherwise(tmp_path):
    loaded = make(tmp_path, "  train: {source: blobs, n: 90, seed: 1, limit: 50}\n  eval: {from_train: 0.1}")
    train, ev = load_train_eval(loaded)
    assert (len(train), len(ev)) == (45, 5)
    first50 = raw(tmp_path, "{source: blobs, n: 90, seed: 1}")["x"][:50]
    np.testing.assert_array_equal(np.sort(np.concatenate([train.arrays["x"], ev.arrays["x"]]), axis=0),
                                  np.sort(first50, axis=0))
    other = load_train_eval(make(tmp_path, "  train: {source: blobs, n: 90, seed: 1, limit: 50}\n"
                                           "  eval: {from_train: 0.1, seed: 1}"))[1]
    assert not np.array_equal(other.arrays["x"], ev.arrays["x"])


def test_a_spec_without_labels_gets_a_plain_seeded_split(tmp_path):
    np.savez(tmp_path / "r.npz", x=np.arange(40.0).reshape(20, 2), y=np.arange(20.0).reshape(20, 1))
    text = REGRESSION + "  train: {source: npz, path: r.npz}\n  eval: {from_train: 0.25, seed: 3}\n"
    train, ev = load_train_eval(load_spec_text(text, file=str(tmp_path / "s.yaml"), base_dir=tmp_path))
    kept, held = split_indices(20, 0.25, 3)
    np.testing.assert_array_equal(ev.arrays["y"][:, 0], held)
    np.testing.assert_array_equal(train.arrays["y"][:, 0], kept)


@pytest.mark.parametrize("kind", ["standard", "minmax", "max"])
def test_statistics_come_from_the_kept_part_only(tmp_path, kind):
    full = {"x": np.random.default_rng(0).normal(size=(120, 2)).astype(np.float32),
            "label": np.arange(120) % 3}
    kept, held = split_indices(120, 0.25, 1, full["label"])
    full["x"][held[0]] = [100.0, -100.0]  # an outlier in the held-out part: it must not move the statistics
    np.savez(tmp_path / "d.npz", **full)
    loaded = make(tmp_path, f"  train: {{source: npz, path: d.npz, normalize: {kind}}}\n"
                            "  eval: {from_train: 0.25, seed: 1}")
    expected = compute_stats({"x": full["x"][kept]}, loaded.spec.inputs, kind)
    everything = compute_stats(full, loaded.spec.inputs, kind)
    assert not np.allclose(everything.scale["x"], expected.scale["x"])  # the held-out part would change them
    train, ev = load_train_eval(loaded)
    for stats in (train.stats, ev.stats, normalization_stats(loaded), load_dataset(loaded, "eval").stats):
        assert stats.kind == kind
        np.testing.assert_array_equal(stats.shift["x"], expected.shift["x"])
        np.testing.assert_array_equal(stats.scale["x"], expected.scale["x"])
    np.testing.assert_allclose(ev.arrays["x"], (full["x"][held] - expected.shift["x"]) / expected.scale["x"],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(load_dataset(loaded, "eval").arrays["x"], ev.arrays["x"])
    np.testing.assert_array_equal(load_dataset(loaded, "eval", train.stats).arrays["x"], ev.arrays["x"])
    np.testing.assert_array_equal(load_dataset(loaded, "train").arrays["x"], train.arrays["x"])


def test_a_normalizing_error_in_the_held_out_part_names_its_csv_row(tmp_path):
    kept, held = split_indices(10, 0.2, 0)
    values = np.where(np.arange(10) % 2 == 0, 0.0, 1e-30)
    values[held[0]] = 1e10  # minmax over the kept part spans 1e-30: this one becomes 1e40, beyond float32
    rows = "".join(f"{float(v)!r},{i % 2}\n" for i, v in enumerate(values))
    (tmp_path / "d.csv").write_text("a,y\n" + rows)
    inputs = "  x: {shape: [1]}\n  label: {shape: [], dtype: int64, classes: 2}"
    loaded = make(tmp_path, "  train: {source: csv, path: d.csv, normalize: minmax}\n"
                            "  eval: {from_train: 0.2, stratify: false}", inputs)
    assert np.ptp(values[kept]) == 1e-30
    d = error_of(load_train_eval, loaded)
    assert d.message.startswith(f"row {held[0] + 2}: column 'a'"), d.message  # the header is line 1
    assert d.location.line == held[0] + 2


# --------------------------------------------------------------------------- errors


def test_a_split_that_leaves_no_training_samples(tmp_path):
    loaded = make(tmp_path, "  train: {source: blobs, n: 6, limit: 3, normalize: max}\n"
                            "  eval: {from_train: 0.9, stratify: false}")
    for fn, args in ((load_train_eval, ()), (load_dataset, ("train",)), (load_dataset, ("eval",)),
                     (normalization_stats, ())):
        d = error_of(fn, loaded, *args)
        assert d.message == "holding out 0.9 of the 3 training samples leaves training no samples (3 held out, 0 kept)"
        assert (d.location.file, d.location.line, d.location.col) == (str(tmp_path / "s.yaml"), 11, 22)
        assert d.path == "data.eval.from_train" and "fraction" in d.hint


def test_a_split_that_leaves_no_evaluation_samples(tmp_path):
    loaded = make(tmp_path, "  train: {source: blobs, n: 6}\n  eval: {from_train: 0.0000000001, stratify: false}")
    d = error_of(load_train_eval, loaded)
    assert "leaves evaluation no samples (0 held out, 6 kept)" in d.message
    assert d.path == "data.eval.from_train" and d.location.line == 11


def test_stratify_needs_two_samples_of_each_class(tmp_path):
    np.savez(tmp_path / "c.npz", x=np.zeros((7, 2)), label=np.array([0, 0, 0, 1, 1, 2, 0]))
    loaded = make(tmp_path, "  train: {source: npz, path: c.npz}\n  eval: {from_train: 0.3}")
    d = error_of(load_train_eval, loaded)
    assert d.message == ("a stratified split needs at least 2 samples of each class, but class 2 has 1 among the "
                         "7 training samples")
    assert "stratify: false" in d.hint
    assert (d.location.line, d.location.col, d.path) == (11, 22, "data.eval.from_train")
    # two lone classes are both counted; stratify: false splits the same data
    np.savez(tmp_path / "c.npz", x=np.zeros((7, 2)), label=np.array([0, 0, 0, 1, 2, 0, 0]))
    assert "class 1 has 1" in error_of(load_dataset, loaded, "eval").message
    assert "(and 1 more class)" in error_of(load_dataset, loaded, "eval").message
    plain = make(tmp_path, "  train: {source: npz, path: c.npz}\n  eval: {from_train: 0.3, stratify: false}")
    assert [len(d) for d in load_train_eval(plain)] == [4, 3]


def test_asking_for_stratify_without_a_label_input(tmp_path):
    np.savez(tmp_path / "r.npz", x=np.zeros((10, 2)), y=np.zeros((10, 1)))
    text = REGRESSION + "  train: {source: npz, path: r.npz}\n  eval: {from_train: 0.2, stratify: true}\n"
    loaded = load_spec_text(text, file=str(tmp_path / "s.yaml"), base_dir=tmp_path)
    d = error_of(load_train_eval, loaded)
    assert "no label input" in d.message and "stratify: false" in d.hint
    assert (d.location.line, d.location.col, d.path) == (11, 37, "data.eval.stratify")


def test_every_problem_is_reported_together_with_augments(tmp_path):
    loaded = make(tmp_path, "  train: {source: blobs, n: 6, limit: 3}\n  eval: {from_train: 0.9, stratify: false}\n"
                            "  augment: {flip: true}")
    with pytest.raises(DataError) as info:
        load_train_eval(loaded)
    assert [d.path for d in info.value.diagnostics] == ["data.augment.flip", "data.eval.from_train"]


# --------------------------------------------------------------------------- validate and train


def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "held.yaml"
    path.write_text(
        "netc: 1\nname: held\ninputs:\n" + BLOBS_IN + "\n"
        "layers:\n  - {name: fc, op: linear, in: x, out: 3}\n"
        "loss: {op: cross_entropy, input: fc, target: label}\n"
        "optimizer: {type: sgd, lr: 0.1}\n"
        "train: {epochs: 2, batch: 16, checkpoints: {best: eval_accuracy}}\n"
        "data:\n  train: {source: blobs, n: 120, normalize: standard}\n  eval: {from_train: 0.25, seed: 3}\n")
    return path


def test_validate_accepts_a_spec_holding_out_from_train(tmp_path):
    result = CliRunner().invoke(app, ["validate", str(spec_file(tmp_path))])
    assert result.exit_code == 0, result.output


@pytest.mark.compiled
def test_training_evaluates_on_the_held_out_part(tmp_path):
    from netc.runtime.train import Trainer
    from netc.spec import load_spec

    trainer = Trainer(load_spec(spec_file(tmp_path)), runs_root=tmp_path / "runs", tier="python")
    assert (len(trainer.train_data), len(trainer.eval_data)) == (90, 30)
    result = trainer.run()
    assert len(result.epochs) == 2
    assert result.epochs[-1].eval_accuracy is not None and result.epochs[-1].eval_loss is not None
    assert (result.run_dir / "best.safetensors").exists()
