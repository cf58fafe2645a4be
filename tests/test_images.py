"""The images source (netc.runtime.data.images): folders of PNG/JPEG/BMP/GIF files written here with
Pillow, read into arrays (conversion, resizing, label order, explicit classes), every error path, and
one short `netc train` on such a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from netc.errors import DataError
from netc.runtime.data import SOURCES, image_files, load_dataset, load_image, load_train_eval
from netc.spec import load_spec_text

GRAY = "  image: {shape: [1, 4, 4]}\n  label: {shape: [], dtype: int64, classes: 2}"
RGB = "  image: {shape: [3, 4, 4]}\n  label: {shape: [], dtype: int64, classes: 2}"


def make(tmp_path: Path, data: str, inputs: str = GRAY, classes: int | None = None):
    """A spec with these inputs (a linear layer over the flattened image) and this `data:` body."""
    if classes is not None:
        inputs = inputs.replace("classes: 2", f"classes: {classes}")
    first = next(iter(inputs.strip().split(":")))
    text = ("netc: 1\nname: t\ninputs:\n" + inputs + "\n"
            f"layers:\n  - {{name: flat, op: flatten, in: {first}}}\n  - {{name: fc, op: linear, out: 2}}\n"
            "loss: {op: cross_entropy, input: fc, target: label}\n"
            "data:\n" + data + "\n")
    return load_spec_text(text, file=str(tmp_path / "s.yaml"), base_dir=tmp_path)


def save(path: Path, pixels, mode: str | None = None) -> Path:
    """Write `pixels` (uint8 [H, W] or [H, W, 3]) as an image file; the suffix picks the format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, np.uint8), mode).save(path)
    return path


def constant(value, size=(4, 4)) -> np.ndarray:
    return np.full(size, value, np.uint8)


def error_of(fn, *args, **kwargs):
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    (diag,) = info.value.diagnostics
    assert diag.code == "E-DATA" and diag.hint, diag.format()
    return diag


@pytest.fixture
def folder(tmp_path) -> Path:
    """pics/a/{0,1}.png and pics/b/0.png: grayscale 4x4, value 10*i (a) and 200 (b)."""
    for i in range(2):
        save(tmp_path / "pics" / "a" / f"{i}.png", constant(10 * i))
    save(tmp_path / "pics" / "b" / "0.png", constant(200))
    return tmp_path / "pics"


# --------------------------------------------------------------------------- arrays


def test_the_source_is_registered():
    assert "images" in SOURCES


def test_grayscale_pixels_labels_and_classes(tmp_path, folder):
    ds = load_dataset(make(tmp_path, "  train: {source: images, path: pics}"))
    x, y = ds.arrays["image"], ds.arrays["label"]
    assert x.dtype == np.float32 and x.shape == (3, 1, 4, 4) and x.flags.c_contiguous
    np.testing.assert_array_equal(x[:, 0, 0, 0], [0, 10, 200])  # pixel values 0..255 as written
    assert y.dtype == np.int64 and y.tolist() == [0, 0, 1]  # sorted subfolders: a -> 0, b -> 1
    assert ds.classes == ["a", "b"]


def test_explicit_classes_set_the_label_order(tmp_path, folder):
    save(folder / "c" / "0.png", constant(99))  # a subfolder not named in classes: left out
    ds = load_dataset(make(tmp_path, "  train: {source: images, path: pics, classes: [b, a]}"))
    assert ds.classes == ["b", "a"]
    assert ds.arrays["label"].tolist() == [0, 1, 1]
    np.testing.assert_array_equal(ds.arrays["image"][:, 0, 0, 0], [200, 0, 10])


def test_rgb_to_grayscale_is_pillows_luma(tmp_path):
    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "mixed": (12, 34, 56)}
    for name, rgb in colours.items():
        save(tmp_path / "pics" / name / "0.png", np.tile(np.array(rgb, np.uint8), (4, 4, 1)))
    ds = load_dataset(make(tmp_path, "  train: {source: images, path: pics}", classes=4))
    got = dict(zip(ds.classes, ds.arrays["image"][:, 0, 0, 0]))
    # ITU-R 601-2 luma as Pillow rounds it: L = R*299/1000 + G*587/1000 + B*114/1000
    assert got["red"] == 76 and got["green"] == 150 and got["blue"] == 29
    oracle = Image.new("RGB", (1, 1), colours["mixed"]).convert("L").getpixel((0, 0))
    assert got["mixed"] == oracle


def test_grayscale_to_rgb_repeats_the_channel_and_rgb_keeps_channel_order(tmp_path):
    save(tmp_path / "pics" / "a" / "0.png", constant(77))
    pixels = np.zeros((4, 4, 3), np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 10, 20, 30
    pixels[0, 3] = (1, 2, 3)  # row 0, column 3
    save(tmp_path / "pics" / "b" / "0.png", pixels)
    x = load_dataset(make(tmp_path, "  train: {source: images, path: pics}", RGB)).arrays["image"]
    assert x.shape == (2, 3, 4, 4)
    np.testing.assert_array_equal(x[0], np.full((3, 4, 4), 77))
    np.testing.assert_array_equal(x[1, :, 1, 1], [10, 20, 30])  # channels first
    np.testing.assert_array_equal(x[1, :, 0, 3], [1, 2, 3])  # [C, H, W]: row 0, column 3


def test_images_are_resized_bilinearly_to_the_input(tmp_path):
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (10, 12), dtype=np.uint8)  # height 10, width 12
    path = save(tmp_path / "pics" / "a" / "0.png", big)
    save(tmp_path / "pics" / "b" / "0.png", constant(5, (3, 2)))  # smaller than the input: scaled up
    inputs = GRAY.replace("[1, 4, 4]", "[1, 5, 6]")
    x = load_dataset(make(tmp_path, "  train: {source: images, path: pics}", inputs)).arrays["image"]
    assert x.shape == (2, 1, 5, 6)
    with Image.open(path) as image:
        oracle = np.asarray(image.resize((6, 5), Image.Resampling.BILINEAR), np.float32)
    np.testing.assert_array_equal(x[0, 0], oracle)
    np.testing.assert_array_equal(x[1, 0], np.full((5, 6), 5))  # a constant image stays constant


def test_jpeg_bmp_and_gif_are_read(tmp_path):
    save(tmp_path / "pics" / "a" / "0.jpg", constant(128))
    save(tmp_path / "pics" / "a" / "1.JPEG", constant(64))  # suffixes in any case
    save(tmp_path / "pics" / "b" / "0.bmp", constant(200))
    save(tmp_path / "pics" / "b" / "1.gif", constant(33))
    ds = load_dataset(make(tmp_path, "  train: {source: images, path: pics}"))
    values = ds.arrays["image"][:, 0, 0, 0]
    assert abs(values[0] - 128) <= 2 and abs(values[1] - 64) <= 2  # JPEG is lossy
    assert values[2:].tolist() == [200, 33]
    assert ds.arrays["label"].tolist() == [0, 0, 1, 1]


def test_other_files_are_ignored_and_the_order_is_sorted(tmp_path, folder):
    (folder / "notes.txt").write_text("files in the folder itself are not samples")
    save(folder / "stray.png", constant(1))  # an image in the folder itself: not in a class
    (folder / "a" / "labels.csv").write_text("not an image suffix")
    (folder / "a" / ".hidden.png").write_bytes(b"a hidden file: skipped, even though it is no image")
    save(folder / ".cache" / "0.png", constant(3))  # a hidden folder is not a class
    save(folder / "a" / ".thumbs" / "0.png", constant(4))  # nor are hidden folders inside one
    save(folder / "a" / "nested" / "0.png", constant(50))  # a class's subfolders are read
    save(folder / "a" / "10.png", constant(100))
    ds = load_dataset(make(tmp_path, "  train: {source: images, path: pics}"))
    assert ds.classes == ["a", "b"]
    # sorted by path: 0.png, 1.png, 10.png, nested/0.png (the names as text), then class b
    np.testing.assert_array_equal(ds.arrays["image"][:, 0, 0, 0], [0, 10, 100, 50, 200])
    assert [p.relative_to(folder).as_posix() for p in image_files(folder / "a")] == [
        "a/0.png", "a/1.png", "a/10.png", "a/nested/0.png"]


def test_limit_and_normalize_apply_as_for_other_sources(tmp_path, folder):
    ds = load_dataset(make(tmp_path, "  train: {source: images, path: pics, limit: 2, normalize: max}"))
    assert len(ds) == 2 and ds.arrays["label"].tolist() == [0, 0]
    np.testing.assert_allclose(ds.arrays["image"][:, 0, 0, 0], [0, 1])  # divided by the largest value, 10


def test_eval_takes_the_train_classes(tmp_path, folder):
    save(tmp_path / "test" / "b" / "0.png", constant(201))  # eval has only class b: its label stays 1
    train, evaluation = load_train_eval(make(tmp_path, "  train: {source: images, path: pics}\n"
                                                       "  eval: {source: images, path: test}"))
    assert evaluation.classes == ["a", "b"] and evaluation.arrays["label"].tolist() == [1]


def test_load_image_is_the_sources_conversion(tmp_path):
    path = save(tmp_path / "x.png", np.tile(np.array([255, 0, 0], np.uint8), (8, 8, 1)))
    gray = load_image(path, [1, 4, 4])
    rgb = load_image(path, (3, 2, 2))
    assert gray.dtype == np.float32 and gray.shape == (1, 4, 4) and (gray == 76).all()
    assert rgb.shape == (3, 2, 2) and rgb[:, 0, 0].tolist() == [255, 0, 0]
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        load_image(path, [64])


# --------------------------------------------------------------------------- errors


def test_missing_folder(tmp_path):
    d = error_of(load_dataset, make(tmp_path, "  train: {source: images, path: nowhere}"))
    assert "nowhere does not exist" in d.message and d.location.file.endswith("nowhere")
    assert d.path == "data.train" and "one subfolder per class" in d.hint
    (tmp_path / "file.png").write_bytes(b"")
    d = error_of(load_dataset, make(tmp_path, "  train: {source: images, path: file.png}"))
    assert "is a file, not a folder" in d.message


def test_too_few_class_folders(tmp_path):
    (tmp_path / "pics").mkdir()
    save(tmp_path / "pics" / "0.png", constant(0))  # images without class folders
    d = error_of(load_dataset, make(tmp_path, "  train: {source: images, path: pics}"))
    assert "has no subfolders" in d.message and "at least 2" in d.message and "subfolder named after it" in d.hint
    save(tmp_path / "pics" / "a" / "0.png", constant(0))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: images, path: pics}"))
    assert "only the subfolder a" in d.message and d.location.file == str(tmp_path / "pics")


def test_a_class_folder_without_images(tmp_path, folder):
    (folder / "c").mkdir()
    (folder / "c" / "readme.txt").write_text("no images here")
    d = error_of(load_dataset, make(tmp_path, "  train: {source: images, path: pics}", classes=3))
    assert d.message == f"the class folder {folder / 'c'} holds no images"
    assert d.location.file == str(folder / "c") and ".png" in d.hint and d.path == "data.train"


@pytest.mark.parametrize("content", [b"not an image at all", "truncated"])
def test_an_unreadable_image_is_named(tmp_path, folder, content):
    bad = folder / "b" / "broken.png"
    if content == "truncated":
        save(bad, np.random.default_rng(0).integers(0, 256, (32, 32)))  # noise: the pixel data is most of the file
        bad.write_bytes(bad.read_bytes()[:500])
    else:
        bad.write_bytes(content)
    d = error_of(load_dataset, make(tmp_path, "  train: {source: images, path: pics}"))
    assert d.message.startswith(f"cannot read {bad} as an image")
    assert d.location.file == str(bad) and d.path == "data.train"
    assert "damaged or not a PNG" in d.hint and "remove it" in d.hint


def test_classes_naming_a_missing_folder(tmp_path, folder):
    line = "  train: {source: images, path: pics, classes: [a, bb]}"
    d = error_of(load_dataset, make(tmp_path, line))
    assert d.message == f"class 'bb' has no folder {folder / 'bb'}"
    # at the name in the spec: data.train is line 11 of make()'s spec
    assert d.path == "data.train.classes[1]" and (d.location.line, d.location.col) == (11, line.index("bb") + 1)
    assert "did you mean 'b'?" in d.hint
    d = error_of(load_dataset, make(tmp_path, "  train: {source: images, path: pics, classes: [a, a]}"))
    assert "named twice" in d.message and d.path == "data.train.classes[1]"


def test_class_count_must_match_the_label_input(tmp_path, folder):
    save(folder / "c" / "0.png", constant(0))
    d = error_of(load_dataset, make(tmp_path, "  train: {source: images, path: pics}"))
    assert "has 3 classes (a, b, c) but label input 'label' has classes: 2" in d.message
    assert "inputs.label.classes` to 3" in d.hint and d.path == "data.train"


@pytest.mark.parametrize("inputs, fragment", [
    ("  image: {shape: [16]}\n  label: {shape: [], dtype: int64, classes: 2}", "shape [C, H, W]"),
    ("  image: {shape: [2, 4, 4]}\n  label: {shape: [], dtype: int64, classes: 2}", "not [2, 4, 4]"),
    ("  image: {shape: [1, 4, 4]}\n  other: {shape: [2]}\n  label: {shape: [], dtype: int64, classes: 2}",
     "one image input and one label input"),
    ("  image: {shape: [1, 4, 4]}\n  label: {shape: [2]}", "one image input and one label input"),
])
def test_the_inputs_must_be_one_image_and_one_label(tmp_path, folder, inputs, fragment):
    d = error_of(load_dataset, make(tmp_path, "  train: {source: images, path: pics}", inputs))
    assert fragment in d.message and d.path == "data.train"
    assert "shape" in d.hint


def test_eval_with_a_class_train_does_not_have(tmp_path, folder):
    save(tmp_path / "test" / "zebra" / "0.png", constant(0))
    with pytest.raises(DataError) as info:
        load_train_eval(make(tmp_path, "  train: {source: images, path: pics}\n"
                                       "  eval: {source: images, path: test}"))
    (d,) = info.value.diagnostics
    assert "class folders that data.train does not have: zebra" in d.message and d.path == "data.eval"
    assert "the train classes are a, b" in d.hint


def test_eval_classes_in_another_order_than_train_are_refused(tmp_path, folder):
    save(tmp_path / "test" / "a" / "0.png", constant(0))
    save(tmp_path / "test" / "b" / "0.png", constant(0))
    with pytest.raises(DataError) as info:
        load_train_eval(make(tmp_path, "  train: {source: images, path: pics}\n"
                                       "  eval: {source: images, path: test, classes: [b, a]}"))
    (d,) = info.value.diagnostics
    assert "data.eval's classes (b, a) are not data.train's (a, b) in the same order" in d.message
    assert d.path == "data.eval.classes" and "classes: [a, b]" in d.hint and d.location.line > 0


# --------------------------------------------------------------------------- training


@pytest.mark.compiled
def test_netc_train_on_an_image_folder(tmp_path, monkeypatch):
    import netc.cli  # noqa: F401  (registers every command)
    from netc.cli.app import app

    rng = np.random.default_rng(0)
    for cls, level in (("dark", 40), ("light", 210)):
        for i in range(12):
            pixels = np.clip(level + rng.normal(0, 20, (6, 6, 3)), 0, 255)
            save(tmp_path / "pics" / cls / f"{i:02}.png", pixels)
    (tmp_path / "s.yaml").write_text(
        "netc: 1\nname: shades\ninputs:\n"
        "  image: {shape: [1, 4, 4]}\n  label: {shape: [], dtype: int64, classes: 2}\n"
        "layers:\n  - {name: flat, op: flatten}\n  - {name: fc, op: linear, out: 2}\n"
        "loss: {op: cross_entropy, input: fc, target: label}\n"
        "optimizer: {type: sgd, lr: 0.5}\ntrain: {batch: 8, epochs: 10, seed: 0}\n"
        "data:\n  train: {source: images, path: pics, normalize: max}\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", "s.yaml", "--tier", "python", "-q"])
    assert result.exit_code == 0, result.output
    assert "done: 10 epochs" in result.stdout and (tmp_path / "runs" / "shades" / "last.safetensors").is_file()
    metrics = (tmp_path / "runs" / "shades" / "metrics.jsonl").read_text().splitlines()
    assert '"train_accuracy": 1.0' in metrics[-1]  # dark and light images: separable


def test_a_16_bit_grayscale_image_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    deep = (np.arange(16).reshape(4, 4) * 4000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    gray = load_image(tmp_path / "deep.png", [1, 4, 4])
    np.testing.assert_allclose(gray[0], deep * (255 / 65535), rtol=1e-6)
    rgb = load_image(tmp_path / "deep.png", [3, 4, 4])
    assert rgb.shape == (3, 4, 4) and (rgb[0] == rgb[2]).all() and rgb[0, 3, 3] == round(60000 * 255 / 65535)
