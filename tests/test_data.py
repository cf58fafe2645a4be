"""netc.runtime.data: every source, binding to inputs, normalization, limit and every error path."""

from __future__ import annotations

import gzip
import io
import struct
import typing
import zipfile
from pathlib import Path

import numpy as np
import pytest

from netc.errors import DataError
from netc.runtime.data import (SOURCES, Dataset, NormStats, digits_split, load_dataset, load_train_eval,
                               normalization_stats, read_idx)
from netc.spec import load_spec_text
from netc.spec import models as spec_models

XY = "  x: {shape: [2]}\n  label: {shape: [], dtype: int64, classes: 2}"


def make(tmp_path: Path, data: str, inputs: str = XY):
    """A spec with these inputs and this `data:` body (indented two spaces), loaded from tmp_path."""
    first = next(iter(inputs.strip().split(":")))
    text = (
        "netc: 1\nname: t\ninputs:\n" + inputs + "\n"
        f"layers:\n  - {{name: fc, op: linear, in: {first}, out: 2}}\n"
        "loss: {op: cross_entropy, input: fc, target: label}\n"
        + ("data:\n" + data + "\n" if data is not None else "")
    )
    return load_spec_text(text, file=str(tmp_path / "s.yaml"), base_dir=tmp_path)


def error_of(fn, *args, **kwargs):
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    (diag,) = info.value.diagnostics
    assert diag.code == "E-DATA"
    assert diag.hint
    return diag


def write_idx(path: Path, array: np.ndarray, code: int = 0x08, gz: bool = False) -> Path:
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    raw += np.ascontiguousarray(array, dtype=dtype).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def check_types(ds: Dataset):
    for name, a in ds.arrays.items():
        assert a.flags.c_contiguous
        assert a.dtype in (np.float32, np.int64), name
        assert len(a) == len(ds)


# --------------------------------------------------------------------------- generated sources


def test_xor_is_exactly_the_four_corners(tmp_path):
    ds = load_dataset(make(tmp_path, "  train: {source: xor}"))
    check_types(ds)
    np.testing.assert_array_equal(ds.arrays["x"], [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(ds.arrays["label"], [0, 1, 1, 0])
    assert ds.arrays["x"].dtype == np.float32 and ds.arrays["label"].dtype == np.int64
    assert "xor" in ds.source


def test_xor_noisy_cycles_the_corners_seeded(tmp_path):
    loaded = make(tmp_path, "  train: {source: xor, n: 40, noise: 0.1, seed: 3}\n"
                            "  eval: {source: xor, n: 40, noise: 0.1, seed: 4}")
    a, b = load_dataset(loaded), load_dataset(loaded)
    assert len(a) == 40
    np.testing.assert_array_equal(a.arrays["label"], np.tile([0, 1, 1, 0], 10))
    np.testing.assert_array_equal(a.arrays["x"], b.arrays["x"])
    corners = np.tile([[0, 0], [0, 1], [1, 0], [1, 1]], (10, 1))
    assert 0 < np.abs(a.arrays["x"] - corners).max() < 0.6
    assert not np.array_equal(a.arrays["x"], load_dataset(loaded, "eval").arrays["x"])


def test_spirals(tmp_path):
    inputs = "  p: {shape: [2]}\n  label: {shape: [], dtype: int64, classes: 4}"
    loaded = make(tmp_path, "  train: {source: spirals, n: 120, classes: 4, seed: 1}", inputs)
    ds = load_dataset(loaded)
    check_types(ds)
    assert ds.arrays["p"].shape == (120, 2)
    assert np.bincount(ds.arrays["label"]).tolist() == [30, 30, 30, 30]
    assert np.abs(ds.arrays["p"]).max() <= 1.0 + 1e-6
    np.testing.assert_array_equal(ds.arrays["p"], load_dataset(loaded).arrays["p"])


def test_blobs_seeded_centers(tmp_path):
    inputs = "  x: {shape: [3]}\n  label: {shape: [], dtype: int64, classes: 3}"
    loaded = make(tmp_path, "  train: {source: blobs, n: 90, features: 3, std: 0.1, seed: 5}\n"
                            "  eval: {source: blobs, n: 90, features: 3, std: 0.1, seed: 6}", inputs)
    a = load_dataset(loaded)
    check_types(a)
    assert a.arrays["x"].shape == (90, 3)
    np.testing.assert_array_equal(a.arrays["x"], load_dataset(loaded).arrays["x"])
    # tight blobs around seeded centers: each class's spread is small, and another seed moves the centers
    for k in range(3):
        assert a.arrays["x"][a.arrays["label"] == k].std(axis=0).max() < 0.3
    b = load_dataset(loaded, "eval")
    assert np.abs(a.arrays["x"][:3] - b.arrays["x"][:3]).max() > 1.0


# --------------------------------------------------------------------------- digits


DIGITS_IN = "  image: {shape: [1, 8, 8]}\n  label: {shape: [], dtype: int64, classes: 10}"


def test_digits_splits(tmp_path):
    loaded = make(tmp_path, "  train: {source: digits, split: train, split_seed: 7}\n"
                            "  eval: {source: digits, split: test, split_seed: 7}", DIGITS_IN)
    train, test = load_dataset(loaded), load_dataset(loaded, "eval")
    check_types(train)
    assert train.arrays["image"].shape == (1438, 1, 8, 8)
    assert len(train) + len(test) == 1797 and len(test) == 359
    assert train.source == "digits (train split)" and test.source == "digits (test split)"
    assert set(np.unique(test.arrays["label"])) == set(range(10))
    assert train.arrays["image"].max() == 16.0

    all_ = load_dataset(make(tmp_path, "  train: {source: digits}", DIGITS_IN))
    assert len(all_) == 1797
    # disjoint, covering, deterministic; another seed gives another split
    y = all_.arrays["label"]
    tr, te = digits_split(y, 0.2, 7)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == 1797
    np.testing.assert_array_equal(train.arrays["label"], y[tr])
    np.testing.assert_array_equal(train.arrays["image"].reshape(-1, 64), all_.arrays["image"].reshape(-1, 64)[tr])
    tr2, te2 = digits_split(y, 0.2, 7)
    np.testing.assert_array_equal(te, te2)
    assert not np.array_equal(te, digits_split(y, 0.2, 8)[1])
    assert len(digits_split(y, 0.5, 0)[1]) == round(1797 * 0.5)


def test_digits_flat_input_and_limit(tmp_path):
    inputs = "  pixels: {shape: [64]}\n  label: {shape: [], dtype: int64, classes: 10}"
    ds = load_dataset(make(tmp_path, "  train: {source: digits, split: train, limit: 100}", inputs))
    assert ds.arrays["pixels"].shape == (100, 64) and ds.arrays["label"].shape == (100,)


# --------------------------------------------------------------------------- npz / npy


def test_npz_by_name_and_keys(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 8, 8), dtype=np.uint8)
    labels = np.arange(6) % 3
    np.savez(tmp_path / "d.npz", image=images, label=labels, X=images, y=labels.reshape(6, 1))
    inputs = "  image: {shape: [1, 8, 8]}\n  label: {shape: [], dtype: int64, classes: 3}"
    ds = load_dataset(make(tmp_path, "  train: {source: npz, path: d.npz}", inputs))
    check_types(ds)
    assert ds.arrays["image"].shape == (6, 1, 8, 8)
    np.testing.assert_array_equal(ds.arrays["image"][:, 0], images.astype(np.float32))
    assert ds.source == str(tmp_path / "d.npz")
    keyed = load_dataset(make(tmp_path, "  train: {source: npz, path: d.npz, keys: {image: X, label: y}}", inputs))
    np.testing.assert_array_equal(keyed.arrays["label"], labels)


def test_npy_several_inputs(tmp_path):
    left = np.arange(12, dtype=np.float64).reshape(3, 4)
    np.save(tmp_path / "l.npy", left)
    np.save(tmp_path / "r.npy", -left)
    np.save(tmp_path / "s.npy", np.array([0, 1, 1], dtype=np.int32))
    inputs = ("  left: {shape: [4]}\n  right: {shape: [4]}\n"
              "  label: {shape: [], dtype: int64, classes: 2}")
    ds = load_dataset(make(tmp_path, "  train: {source: npy, arrays: {left: l.npy, right: r.npy, label: s.npy}}",
                           inputs))
    check_types(ds)
    np.testing.assert_array_equal(ds.arrays["right"], -left)
    assert ds.arrays["label"].dtype == np.int64


# --------------------------------------------------------------------------- csv


def test_csv_header_label_by_name_index_and_last(tmp_path):
    (tmp_path / "d.csv").write_text("a,cls,b\n1.5,1,2\n3,0,4\n\n\"5\",1,6\n")
    ds = load_dataset(make(tmp_path, "  train: {source: csv, path: d.csv, label: cls}"))
    check_types(ds)
    np.testing.assert_array_equal(ds.arrays["x"], [[1.5, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(ds.arrays["label"], [1, 0, 1])
    by_index = load_dataset(make(tmp_path, "  train: {source: csv, path: d.csv, label: 1}"))
    np.testing.assert_array_equal(by_index.arrays["label"], [1, 0, 1])

    (tmp_path / "n.csv").write_text("1;2;1\n3;4;0\n")
    ds = load_dataset(make(tmp_path, "  train: {source: csv, path: n.csv, header: false, delimiter: ';'}"))
    np.testing.assert_array_equal(ds.arrays["x"], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(ds.arrays["label"], [1, 0])


def test_csv_gzipped_and_limit(tmp_path):
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(b"a,b,y\n1,2,1\n3,4,0\n5,6,1\n"))
    ds = load_dataset(make(tmp_path, "  train: {source: csv, path: d.csv.gz, limit: 2}"))
    np.testing.assert_array_equal(ds.arrays["x"], [[1, 2], [3, 4]])


# --------------------------------------------------------------------------- idx


@pytest.mark.parametrize("gz", [False, True])
def test_idx_plain_and_gzipped(tmp_path, gz):
    rng = np.random.default_rng(1)
    train_x = rng.integers(0, 256, (5, 4, 4), dtype=np.uint8)
    test_x = rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    (tmp_path / "m").mkdir()
    write_idx(tmp_path / "m" / "train-images-idx3-ubyte", train_x, gz=gz)
    write_idx(tmp_path / "m" / "train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 4]), gz=gz)
    write_idx(tmp_path / "m" / "t10k-images-idx3-ubyte", test_x, gz=gz)
    write_idx(tmp_path / "m" / "t10k-labels-idx1-ubyte", np.array([9, 8, 7]), gz=gz)
    inputs = "  image: {shape: [1, 4, 4]}\n  label: {shape: [], dtype: int64, classes: 10}"
    loaded = make(tmp_path, "  train: {source: mnist-idx, path: m}\n  eval: {source: mnist-idx, path: m, split: test}",
                  inputs)
    train, test = load_dataset(loaded), load_dataset(loaded, "eval")
    check_types(train)
    np.testing.assert_array_equal(train.arrays["image"][:, 0], train_x)
    np.testing.assert_array_equal(test.arrays["label"], [9, 8, 7])
    flat = load_dataset(make(tmp_path, "  train: {source: mnist-idx, path: m}",
                             "  image: {shape: [16]}\n  label: {shape: [], dtype: int64, classes: 10}"))
    assert flat.arrays["image"].shape == (5, 16)


def test_read_idx_types(tmp_path):
    data = np.array([[1.5, -2.0], [3.0, 4.25]])
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "f", data, code=0x0D)), data)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "i", np.array([-3, 70000]), code=0x0C)), [-3, 70000])


# --------------------------------------------------------------------------- normalization


def test_normalization_uses_train_statistics(tmp_path):
    inputs = "  x: {shape: [3]}\n  label: {shape: [], dtype: int64, classes: 3}"
    for kind in ("standard", "minmax", "max"):
        loaded = make(tmp_path, f"  train: {{source: blobs, features: 3, seed: 1, limit: 50, normalize: {kind}}}\n"
                                f"  eval: {{source: blobs, features: 3, seed: 2, normalize: {kind}}}", inputs)
        raw_loaded = make(tmp_path, "  train: {source: blobs, features: 3, seed: 1, limit: 50}\n"
                                    "  eval: {source: blobs, features: 3, seed: 2}", inputs)
        raw_train = load_dataset(raw_loaded).arrays["x"].astype(np.float64)
        raw_eval = load_dataset(raw_loaded, "eval").arrays["x"].astype(np.float64)
        train = load_dataset(loaded)
        check_types(train)
        assert train.stats.kind == kind
        if kind == "standard":
            shift, scale = raw_train.mean(0), raw_train.std(0)
            np.testing.assert_allclose(train.arrays["x"].mean(0), 0, atol=1e-5)
            np.testing.assert_allclose(train.arrays["x"].std(0), 1, atol=1e-4)
        elif kind == "minmax":
            shift, scale = raw_train.min(0), raw_train.max(0) - raw_train.min(0)
            assert train.arrays["x"].min() == 0 and abs(train.arrays["x"].max() - 1) < 1e-6
        else:
            shift, scale = 0.0, np.abs(raw_train).max()
            assert abs(np.abs(train.arrays["x"]).max() - 1) < 1e-6
        expected = (raw_eval - shift) / scale
        ev = load_dataset(loaded, "eval", train.stats)
        np.testing.assert_allclose(ev.arrays["x"], expected, rtol=1e-5, atol=1e-5)
        # without stats, eval computes the train statistics itself
        np.testing.assert_allclose(load_dataset(loaded, "eval").arrays["x"], ev.arrays["x"])
        stats = normalization_stats(loaded)
        np.testing.assert_allclose(stats.shift["x"], train.stats.shift["x"])
        assert "label" not in stats.shift
        np.testing.assert_array_equal(ev.arrays["label"], load_dataset(raw_loaded, "eval").arrays["label"])


def test_normalization_constant_feature_and_none(tmp_path):
    np.savez(tmp_path / "c.npz", x=np.array([[1.0, 5.0], [3.0, 5.0]]), label=np.array([0, 1]))
    loaded = make(tmp_path, "  train: {source: npz, path: c.npz, normalize: standard}")
    x = load_dataset(loaded).arrays["x"]
    np.testing.assert_allclose(x, [[-1, 0], [1, 0]])
    none = load_dataset(make(tmp_path, "  train: {source: npz, path: c.npz}"))
    assert none.stats == NormStats("none")
    assert NormStats("none").apply({"x": x})["x"] is x


# --------------------------------------------------------------------------- errors: the spec


def test_no_data_section(tmp_path):
    d = error_of(load_dataset, make(tmp_path, None))
    assert "no data section" in d.message and d.location.file == str(tmp_path / "s.yaml")


def test_no_eval(tmp_path):
    d = error_of(load_dataset, make(tmp_path, "  train: {source: xor}"), "eval")
    assert d.message == "the spec has no data.eval" and d.path == "data.eval"
    assert d.location.file == str(tmp_path / "s.yaml") and d.location.line > 0


def test_eval_normalized_differently(tmp_path):
    loaded = make(tmp_path, "  train: {source: xor, normalize: max}\n  eval: {source: xor}")
    d = error_of(load_dataset, loaded, "eval")
    assert "'none'" in d.message and "'max'" in d.message and d.path == "data.eval.normalize"


def test_generated_shape_mismatch_points_at_spec(tmp_path):
    loaded = make(tmp_path, "  train: {source: xor}",
                  "  x: {shape: [3]}\n  label: {shape: [], dtype: int64, classes: 2}")
    d = error_of(load_dataset, loaded)
    assert "input 'x'" in d.message and "[3]" in d.message and "[2]" in d.message
    assert d.location.file == str(tmp_path / "s.yaml") and d.location.line == 10 and d.path == "data.train"


def test_several_float_inputs_need_npz(tmp_path):
    inputs = "  left: {shape: [64]}\n  right: {shape: [64]}\n  label: {shape: [], dtype: int64, classes: 2}"
    d = error_of(load_dataset, make(tmp_path, "  train: {source: digits}", inputs))
    assert "digits" in d.message and "left, right" in d.message
    assert "npz" in d.hint and "npy" in d.hint
    inputs = ("  x: {shape: [2]}\n  a: {shape: [], dtype: int64, classes: 2}\n"
              "  label: {shape: [], dtype: int64, classes: 2}")
    d = error_of(load_dataset, make(tmp_path, "  train: {source: xor}", inputs))
    assert "2 int64 inputs" in d.message and "npz" in d.hint


def test_labels_outside_classes_generated(tmp_path):
    loaded = make(tmp_path, "  train: {source: spirals, classes: 3}")
    d = error_of(load_dataset, loaded)
    assert d.message.startswith("sample 2: label 2 is outside [0, 2)")


# --------------------------------------------------------------------------- errors: files


def test_missing_files(tmp_path):
    (tmp_path / "data.npz").write_bytes(b"")
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: dta.npz}"))
    assert d.message == f"file not found: {tmp_path / 'dta.npz'}" and d.location.file == str(tmp_path / "dta.npz")
    assert "data.npz" in d.hint
    d = error_of(load_dataset, make(tmp_path, "  train: {source: csv, path: nope/d.csv}"))
    assert "not found" in d.message and "does not exist" in d.hint
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npy, arrays: {x: x.npy, label: y.npy}}"))
    assert d.location.file == str(tmp_path / "x.npy")
    d = error_of(load_dataset, make(tmp_path, "  train: {source: mnist-idx, path: mnist}"))
    assert "folder not found" in d.message
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "readme.txt").write_text("hi")
    d = error_of(load_dataset, make(tmp_path, "  train: {source: mnist-idx, path: m}"))
    assert "train-images-idx3-ubyte" in d.message and "readme.txt" in d.hint


def test_npz_missing_key_lists_keys(tmp_path):
    np.savez(tmp_path / "d.npz", features=np.zeros((3, 2)), label=np.zeros(3, dtype=int))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: d.npz}"))
    assert "no array 'x' for input 'x'" in d.message and "features, label" in d.message
    assert d.location.file == str(tmp_path / "d.npz") and "keys" in d.hint
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: d.npz, keys: {x: feature}}"))
    assert "no array 'feature'" in d.message and "did you mean 'features'" in d.hint
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: d.npz, keys: {z: features}}"))
    assert "'z'" in d.message and d.path == "data.train.keys.z"


def test_npz_not_an_archive(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"this is not a zip")
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: bad.npz}"))
    assert "cannot read" in d.message and d.location.file == str(tmp_path / "bad.npz")
    np.save(tmp_path / "a.npy", np.zeros(3))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: a.npy}"))
    assert "not an .npz archive" in d.message
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), label=np.zeros(1, dtype=int))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: obj.npz}"))
    assert "cannot read array 'x'" in d.message


def test_npy_mapping_errors(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npy, arrays: {x: x.npy}}"))
    assert "no array for input 'label'" in d.message and d.path == "data.train.arrays"
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npy, arrays: {x: x.npy, lable: x.npy}}"))
    assert "'lable'" in d.message and "did you mean 'label'" in d.hint
    (tmp_path / "junk.npy").write_bytes(b"junk")
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npy, arrays: {x: x.npy, label: junk.npy}}"))
    assert "cannot read" in d.message and d.location.file == str(tmp_path / "junk.npy")


def test_shape_mismatch_names_input_expected_and_found(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3)), label=np.zeros(4, dtype=int))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: d.npz}"))
    assert "input 'x' expects samples of shape [2]" in d.message and "[3]" in d.message
    assert d.location.file == str(tmp_path / "d.npz")
    # channels-last data for a channels-first input is refused, not silently reshaped
    np.savez(tmp_path / "c.npz", x=np.zeros((4, 4, 4, 3)), label=np.zeros(4, dtype=int))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: c.npz}",
                                    "  x: {shape: [3, 4, 4]}\n  label: {shape: [], dtype: int64, classes: 2}"))
    assert "[3, 4, 4]" in d.message and "[4, 4, 3]" in d.message and "moveaxis" in d.hint
    np.savez(tmp_path / "o.npz", x=np.zeros((4, 2)), label=np.eye(2, dtype=int)[[0, 1, 0, 1]])
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: o.npz}"))
    assert "one class index per sample" in d.message and "argmax" in d.hint


def test_label_dtype_and_range(tmp_path):
    np.savez(tmp_path / "f.npz", x=np.zeros((3, 2)), label=np.array([0.0, 1.0, 1.0]))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: f.npz}"))
    assert "needs integer class indices" in d.message and "float64" in d.message
    np.savez(tmp_path / "s.npz", x=np.zeros((3, 2)), label=np.array(["a", "b", "c"]))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: s.npz}"))
    assert "needs integer class indices" in d.message
    np.savez(tmp_path / "r.npz", x=np.zeros((4, 2)), label=np.array([0, 1, 5, -1]))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: r.npz}"))
    assert d.message.startswith("sample 2: label 5 is outside [0, 2)")
    assert d.location.file == str(tmp_path / "r.npz")
    np.savez(tmp_path / "t.npz", x=np.array([["a", "b"]] * 3), label=np.zeros(3, dtype=int))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: t.npz}"))
    assert "needs numbers" in d.message


def test_nan_and_inf_named_by_sample(tmp_path):
    x = np.zeros((5, 2))
    x[3, 1] = np.nan
    np.savez(tmp_path / "n.npz", x=x, label=np.zeros(5, dtype=int))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: n.npz}"))
    assert d.message.startswith("sample 3: feature 1 of input 'x' is") and "nan" in d.message
    x[3, 1] = 0
    x[1, 0] = 1e300  # beyond float32
    np.savez(tmp_path / "i.npz", x=x, label=np.zeros(5, dtype=int))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: i.npz}"))
    assert d.message.startswith("sample 1: feature 0") and "1e+300" in d.message


def test_different_lengths_and_empty(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 2)), label=np.zeros(4, dtype=int))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: d.npz}"))
    assert "different numbers of samples (x 5, label 4)" in d.message
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 2)), label=np.zeros(0, dtype=int))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: e.npz}"))
    assert "no samples" in d.message
    np.savez(tmp_path / "z.npz", x=np.float64(1.0), label=np.zeros(1, dtype=int))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: z.npz}"))
    assert "single value" in d.message


# --------------------------------------------------------------------------- errors: csv rows


def csv_error(tmp_path, text: str, extra: str = ""):
    (tmp_path / "d.csv").write_text(text)
    return error_of(load_dataset, make(tmp_path, "  train: {source: csv, path: d.csv" + extra + "}"))


def test_csv_unparseable_cell(tmp_path):
    d = csv_error(tmp_path, "a,b,y\n1,2,0\n3,oops,1\n")
    assert d.message == "row 3, column 'b' (1): cannot read 'oops' as a number"
    assert (d.location.file, d.location.line, d.location.col) == (str(tmp_path / "d.csv"), 3, 3)
    d = csv_error(tmp_path, "1,2,0\n\n3,,1\n", ", header: false")
    assert d.message == "row 3, column 1: cannot read an empty cell as a number" and d.location.line == 3


def test_csv_wrong_width_and_header(tmp_path):
    d = csv_error(tmp_path, "a,b,y\n1,2,0\n3,4\n")
    assert d.message == "row 3 has 2 columns but the header has 3" and d.location.line == 3
    d = csv_error(tmp_path, "a,b\n1,2,0\n3,4,1\n")
    assert "header has 2 columns" in d.message and d.location.line == 1


def test_csv_label_errors_name_the_row(tmp_path):
    d = csv_error(tmp_path, "a,b,y\n1,2,0\n\n3,4,1.5\n")
    assert d.message == "row 4: label column 'y' holds '1.5', not an integer class index"
    assert d.location.line == 4
    d = csv_error(tmp_path, "a,b,y\n1,2,0\n3,4,1\n\n5,6,7\n")
    assert d.message.startswith("row 5: label 7 is outside [0, 2)") and d.location.line == 5
    assert d.location.file == str(tmp_path / "d.csv")


def test_csv_nan_feature_names_row_and_column(tmp_path):
    d = csv_error(tmp_path, "a,b,y\n1,2,0\n3,nan,1\n")
    assert d.message.startswith("row 3: column 'b' of input 'x' is nan") and d.location.line == 3


def test_csv_label_column_errors(tmp_path):
    d = csv_error(tmp_path, "a,b,y\n1,2,0\n", ", label: cls")
    assert "no column 'cls'" in d.message and d.path == "data.train.label" and "a, b, y" in d.hint
    d = csv_error(tmp_path, "1,2,0\n", ", header: false, label: y")
    assert "no header" in d.message
    d = csv_error(tmp_path, "a,b,y\n1,2,0\n", ", label: 3")
    assert "label column 3 is outside the 3 columns" in d.message


def test_csv_empty(tmp_path):
    d = csv_error(tmp_path, "a,b,y\n")
    assert "no data rows" in d.message
    d = csv_error(tmp_path, "")
    assert "is empty" in d.message
    d = csv_error(tmp_path, "1\n2\n", ", header: false")
    assert "1 column" in d.message and "delimiter" in d.hint


# --------------------------------------------------------------------------- errors: idx


def idx_spec(tmp_path):
    return make(tmp_path, "  train: {source: mnist-idx, path: m}",
                "  image: {shape: [1, 2, 2]}\n  label: {shape: [], dtype: int64, classes: 10}")


def test_idx_bad_magic_and_truncated(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    images = write_idx(folder / "train-images-idx3-ubyte", np.zeros((3, 2, 2)))
    labels = write_idx(folder / "train-labels-idx1-ubyte", np.array([1, 2, 3]))
    assert len(load_dataset(idx_spec(tmp_path))) == 3

    good = images.read_bytes()
    images.write_bytes(b"\x08\x03" + good[2:])
    d = error_of(load_dataset, idx_spec(tmp_path))
    assert "magic number is 0x0803" in d.message and d.location.file == str(images)

    images.write_bytes(good[:-1])
    d = error_of(load_dataset, idx_spec(tmp_path))
    assert "truncated" in d.message and "12 bytes" in d.message and "11 bytes" in d.message
    images.write_bytes(good[:9])
    d = error_of(load_dataset, idx_spec(tmp_path))
    assert "truncated" in d.message and "header" in d.message
    images.write_bytes(good + b"\0")
    d = error_of(load_dataset, idx_spec(tmp_path))
    assert "1 bytes after" in d.message

    # gzipped: a truncated stream, and a good stream of a truncated file
    images.unlink()
    gz = folder / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(good)[:-10])
    d = error_of(load_dataset, idx_spec(tmp_path))
    assert "gzip" in d.message and d.location.file == str(gz)
    gz.write_bytes(gzip.compress(good[:-4]))
    d = error_of(load_dataset, idx_spec(tmp_path))
    assert "truncated" in d.message
    gz.write_bytes(gzip.compress(good))
    write_idx(labels, np.array([1, 2]))
    d = error_of(load_dataset, idx_spec(tmp_path))
    assert "3 images" in d.message and "2 labels" in d.message
    write_idx(labels, np.array([1, 2, 30]))
    d = error_of(load_dataset, idx_spec(tmp_path))
    assert d.message.startswith("sample 2: label 30 is outside [0, 10)") and d.location.file == str(labels)
    write_idx(labels, np.zeros((3, 2)))
    d = error_of(load_dataset, idx_spec(tmp_path))
    assert "one dimension" in d.message


def test_error_text_is_located(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,y\n1,x,0\n")
    with pytest.raises(DataError) as info:
        load_dataset(make(tmp_path, "  train: {source: csv, path: d.csv}"))
    assert str(info.value).startswith(f"{tmp_path / 'd.csv'}:2:3: error[E-DATA]: row 2, column 'b'")


# --------------------------------------------------------------------------- errors: headers that lie


def npy_bytes(shape, descr: str = "<f8", data: bytes = b"") -> bytes:
    """A .npy header claiming `shape`, followed by only `data`."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue() + data


def test_npy_header_larger_than_the_file(tmp_path):
    np.save(tmp_path / "y.npy", np.zeros(3, dtype=np.int64))
    spec = make(tmp_path, "  train: {source: npy, arrays: {x: x.npy, label: y.npy}}")
    (tmp_path / "x.npy").write_bytes(npy_bytes((1_000_000, 2_000_000), data=bytes(64)))  # 14.6 TiB claimed
    d = error_of(load_dataset, spec)
    assert d.message == (f"{tmp_path / 'x.npy'} is truncated: its header says shape [1000000, 2000000] of float64 "
                         "(16000000000000 bytes), the file holds 64 bytes after its 128-byte header")
    assert d.location.file == str(tmp_path / "x.npy") and d.path == "data.train" and "np.save" in d.hint
    # a shape whose size passes int64 is counted exactly
    (tmp_path / "x.npy").write_bytes(npy_bytes((2 ** 40, 2 ** 40), data=bytes(8)))
    d = error_of(load_dataset, spec)
    assert f"({2 ** 83} bytes)" in d.message
    # one byte short of a sound file
    good = npy_bytes((3, 2), data=np.zeros((3, 2)).tobytes())
    (tmp_path / "x.npy").write_bytes(good[:-1])
    assert "(48 bytes), the file holds 47 bytes" in error_of(load_dataset, spec).message
    (tmp_path / "x.npy").write_bytes(good)
    assert len(load_dataset(spec)) == 3


def test_npz_member_header_larger_than_the_member(tmp_path):
    with zipfile.ZipFile(tmp_path / "t.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", npy_bytes((1_000_000, 2_000_000), data=bytes(64)))
        archive.writestr("label.npy", npy_bytes((3,), "<i8", bytes(24)))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: t.npz}"))
    assert d.message == (f"array 'x' of {tmp_path / 't.npz'} is truncated: its header says shape [1000000, 2000000] "
                         "of float64 (16000000000000 bytes), the archive member x.npy holds 64 bytes after its "
                         "128-byte header")
    assert d.location.file == str(tmp_path / "t.npz") and "np.savez" in d.hint


def test_garbled_npy_headers(tmp_path):
    np.save(tmp_path / "y.npy", np.zeros(3, dtype=np.int64))
    spec = make(tmp_path, "  train: {source: npy, arrays: {x: x.npy, label: y.npy}}")
    header = npy_bytes((3, 2))
    for garbled, says in [(header[:20], "EOF"),  # cut inside the header
                          (header.replace(b"}", b" "), "EOF in multi-line"),  # numpy: a tokenize error
                          (header.replace(b"<f8", b"<zz"), "not a valid dtype"),
                          (header.replace(b"(3, 2)", b"(3,-2)"), "negative dimension"),
                          (b"\x93NUMPY\x09\x00" + header[8:], "unknown .npy format version 9.0")]:
        (tmp_path / "x.npy").write_bytes(garbled)
        d = error_of(load_dataset, spec)
        assert "damaged .npy header" in d.message or "format version" in d.message
        assert says in d.message and d.location.file == str(tmp_path / "x.npy")
    # an npz member that is not .npy at all (numpy would hand back bytes)
    with zipfile.ZipFile(tmp_path / "b.npz", "w") as archive:
        archive.writestr("x", b"hello world")
        archive.writestr("label.npy", npy_bytes((3,), "<i8", bytes(24)))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: npz, path: b.npz}"))
    assert d.message == f"array 'x' of {tmp_path / 'b.npz'} is not a .npy array (the member starts with b'hello wo')"


def test_idx_dimensions_past_int64(tmp_path):
    path = tmp_path / "f"
    for dims in [(2 ** 32 - 1,) * 3, (2 ** 16, 2 ** 16, 2 ** 32 - 1)]:
        path.write_bytes(bytes([0, 0, 0x0B, 3]) + struct.pack(">III", *dims) + bytes(12))
        with pytest.raises(DataError) as info:
            read_idx(path, "data.train")
        (d,) = info.value.diagnostics
        count = dims[0] * dims[1] * dims[2]
        assert d.message == (f"idx file is truncated: its header says {count} values of int16 "
                             f"(shape {'x'.join(map(str, dims))}, {2 * count} bytes) but the file holds 12 bytes "
                             "(6 values) after its 16-byte header")
        assert d.location.file == str(path) and d.path == "data.train" and d.hint


def test_csv_labels_named_as_written(tmp_path):
    for written, problem in [("1e20", "far outside the class indices 0..1"),
                             ("9223372036854775808", "far outside the class indices 0..1"),
                             ("-1e20", "far outside the class indices 0..1"),
                             ("9007199254740993", "far outside the class indices 0..1"),  # not a float64
                             ("1.50", "not an integer class index"),
                             ("inf", "not an integer class index")]:
        d = csv_error(tmp_path, f"a,b,y\n1,2,0\n\n3,4, {written}\n")
        assert d.message == f"row 4: label column 'y' holds '{written}', {problem}"
        assert d.location.line == 4 and d.hint == "labels are class indices 0..1"
    d = csv_error(tmp_path, "1,2,0\n3,4,1e20\n", ", header: false")
    assert d.message == "row 2: label column 2 holds '1e20', far outside the class indices 0..1"


def test_csv_byte_order_mark(tmp_path):
    bom = "\ufeffa,b,y\n1,2,0\n0,4,1\n".encode("utf-8")
    (tmp_path / "d.csv").write_bytes(bom)
    ds = load_dataset(make(tmp_path, "  train: {source: csv, path: d.csv, label: a}"))
    np.testing.assert_array_equal(ds.arrays["label"], [1, 0])
    np.testing.assert_array_equal(ds.arrays["x"], [[2, 0], [4, 1]])
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(bom))
    ds = load_dataset(make(tmp_path, "  train: {source: csv, path: d.csv.gz, label: a}"))
    np.testing.assert_array_equal(ds.arrays["label"], [1, 0])
    (tmp_path / "n.csv").write_bytes("\ufeff1,2,0\n3,4,1\n".encode("utf-8"))
    ds = load_dataset(make(tmp_path, "  train: {source: csv, path: n.csv, header: false}"))
    np.testing.assert_array_equal(ds.arrays["x"], [[1, 2], [3, 4]])
    # the row-by-row scan (after numpy's parser fails) sees the same columns
    (tmp_path / "e.csv").write_bytes("\ufeffa,b,y\n1,x,0\n".encode("utf-8"))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: csv, path: e.csv, label: a}"))
    assert d.message == "row 2, column 'b' (1): cannot read 'x' as a number"


# --------------------------------------------------------------------------- errors: normalization


def test_normalization_near_the_float32_limit(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,y\n-3e38,1,0\n3e38,2,1\n")
    for kind, expected in [("minmax", [[0, 0], [1, 1]]), ("standard", [[-1, -1], [1, 1]]),
                           ("max", [[-1, 1 / 3e38], [1, 2 / 3e38]])]:  # max: one peak for all features
        ds = load_dataset(make(tmp_path, f"  train: {{source: csv, path: d.csv, normalize: {kind}}}"))
        np.testing.assert_allclose(ds.arrays["x"], expected, rtol=1e-6)
        assert ds.arrays["x"].dtype == np.float32


def test_normalized_beyond_float32_names_the_column(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,y\n0,1,0\n1e-30,2,1\n")
    (tmp_path / "e.csv").write_text("a,b,y\n0,1,0\n\n1e10,2,1\n")
    loaded = make(tmp_path, "  train: {source: csv, path: t.csv, normalize: minmax}\n"
                            "  eval: {source: csv, path: e.csv, normalize: minmax}")
    train = load_dataset(loaded)
    d = error_of(load_dataset, loaded, "eval", train.stats)
    assert d.message == ("row 4: column 'a' of input 'x' is 1e+10, which `normalize: minmax` with the train "
                         "split's statistics (shift 0, scale 1e-30) turns into 1e+40, beyond float32 (±3.4e38)")
    assert (d.location.file, d.location.line) == (str(tmp_path / "e.csv"), 4) and d.path == "data.eval"
    assert "rescale column 'a'" in d.hint and "none, standard, max" in d.hint
    # arrays without column names name the feature index
    np.savez(tmp_path / "t.npz", x=np.array([[1e-30, 0.0], [0.0, 1e-30]]), label=np.array([0, 1]))
    np.savez(tmp_path / "e.npz", x=np.array([[1.0, 1e10]]), label=np.array([0]))
    loaded = make(tmp_path, "  train: {source: npz, path: t.npz, normalize: max}\n"
                            "  eval: {source: npz, path: e.npz, normalize: max}")
    d = error_of(load_dataset, loaded, "eval")
    assert d.message.startswith("sample 0: feature 1 of input 'x' is 1e+10, which `normalize: max`")
    assert d.location.file == str(tmp_path / "e.npz")


# --------------------------------------------------------------------------- both splits at once


def test_load_train_eval(tmp_path):
    loaded = make(tmp_path, "  train: {source: blobs, seed: 1, normalize: standard}\n"
                            "  eval: {source: blobs, seed: 2, normalize: standard}",
                  "  x: {shape: [2]}\n  label: {shape: [], dtype: int64, classes: 3}")
    train, ev = load_train_eval(loaded)
    np.testing.assert_array_equal(ev.arrays["x"], load_dataset(loaded, "eval", train.stats).arrays["x"])
    np.testing.assert_array_equal(train.arrays["x"], load_dataset(loaded).arrays["x"])
    train, ev = load_train_eval(make(tmp_path, "  train: {source: xor}"))
    assert len(train) == 4 and ev is None


def test_load_train_eval_reports_both_splits(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,y\n1,2,0\n3,oops,1\n")
    (tmp_path / "e.csv").write_text("a,b,y\n1,2,0\n3,4,7\n")
    loaded = make(tmp_path, "  train: {source: csv, path: t.csv, normalize: minmax}\n"
                            "  eval: {source: csv, path: e.csv, normalize: minmax}")
    with pytest.raises(DataError) as info:
        load_train_eval(loaded)
    first, second = info.value.diagnostics
    assert first.message == "row 3, column 'b' (1): cannot read 'oops' as a number"
    assert (first.location.file, first.path) == (str(tmp_path / "t.csv"), "data.train")
    assert second.message.startswith("row 3: label 7 is outside [0, 2)")
    assert (second.location.file, second.path) == (str(tmp_path / "e.csv"), "data.eval")
    assert "t.csv:3:3" in str(info.value) and "e.csv:3:1" in str(info.value)
    # eval's own spec check is reported alongside its file's error, and train's
    loaded = make(tmp_path, "  train: {source: csv, path: t.csv, normalize: minmax}\n"
                            "  eval: {source: csv, path: e.csv}")
    with pytest.raises(DataError) as info:
        load_train_eval(loaded)
    assert [d.path for d in info.value.diagnostics] == ["data.train", "data.eval.normalize", "data.eval"]
    # a sound train split and a broken eval: the eval error alone
    (tmp_path / "t.csv").write_text("a,b,y\n1,2,0\n3,4,1\n")
    with pytest.raises(DataError) as info:
        load_train_eval(loaded)
    assert [d.path for d in info.value.diagnostics] == ["data.eval.normalize", "data.eval"]


# --------------------------------------------------------------------------- the source registry


def spec_sources() -> list[str]:
    """The `source:` literals of the spec's data-source union, in its order."""
    union = typing.get_args(spec_models.DataSource)[0]
    return [literal for model in typing.get_args(union)
            for literal in typing.get_args(model.model_fields["source"].annotation)]


def test_every_spec_source_has_a_reader_and_every_reader_a_spec_source():
    # the same names in the same order: a spec without data is told the sources in SOURCES' order
    assert list(SOURCES) == spec_sources()
    assert all(callable(reader) for reader in SOURCES.values())


def test_no_data_section_hint_lists_the_sources(tmp_path):
    d = error_of(load_dataset, make(tmp_path, None))
    assert d.hint.endswith("(sources: xor, spirals, blobs, digits, npz, npy, csv, mnist-idx, images, text)")
