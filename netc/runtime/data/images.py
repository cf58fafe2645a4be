"""The images source: a folder with one subfolder per class (PNG, JPEG, BMP, GIF read through Pillow).

    data: {train: {source: images, path: pictures/train}}    # pictures/train/cat/*.png, pictures/train/dog/*.jpg

Each image is converted to the channels of the spec's float input [C, H, W]
(C 1: Pillow's grayscale "L", C 3: "RGB"), resized to H x W (bilinear) and
kept as float32 pixel values 0..255; the spec's `normalize` then applies as
for every source. Labels are the class's position in `classes` (default:
the subfolders sorted by name); an eval split without `classes` takes the
train split's, so that a label means the same class in both (it may lack a
class's folder, not have one train lacks).

Samples are in a fixed order: class by class, and within a class the image
files of its folder tree sorted by path. Files in the folder itself, hidden
files and folders (".name") and files without an image suffix are ignored; a
file with an image suffix that Pillow cannot read is an error that names it.
`load_image` and `image_files` give `netc predict` the same conversion.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from netc.errors import DataError, Diagnostic, Location, did_you_mean
from netc.runtime.data.origin import CODE, Origin, resolve
from netc.runtime.data.sources import register_source
from netc.spec import models as m
from netc.spec.load import LoadedSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_MODES = {1: "L", 3: "RGB"}  # input channels -> Pillow mode
_UNREADABLE_HINT = ("the file is damaged or not a PNG, JPEG, BMP or GIF image despite its suffix; "
                    "replace it, or remove it from the folder")


@register_source("images")
def read_images(loaded: LoadedSpec, src: m.ImagesSource, origin: Origin) -> dict[str, np.ndarray]:
    image_input, label_input = _inputs(loaded, origin)
    shape = tuple(loaded.spec.inputs[image_input].shape)
    folder = resolve(loaded, src.path)
    origin.desc = str(folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DataError(Diagnostic(CODE, f"the images folder {folder} {what}", Location(str(folder)), origin.path,
                                   "path is a folder holding one subfolder per class (e.g. train/cat/*.png, "
                                   "train/dog/*.png), relative to the spec's folder"))
    classes = _classes(loaded, src, folder, origin)
    wanted = loaded.spec.inputs[label_input].classes
    if len(classes) != wanted:
        origin.fail(f"{folder} has {len(classes)} classes ({', '.join(classes)}) but label input "
                    f"'{label_input}' has classes: {wanted}",
                    f"set `inputs.{label_input}.classes` to {len(classes)}, or name the class subfolders to use "
                    f"with `classes: [...]`", label_input)
    files, labels = [], []
    for label, name in enumerate(classes):
        if not (folder / name).is_dir():
            continue  # only an eval split that takes train's classes gets here: it may lack a class
        found = image_files(folder / name)
        if not found:
            raise DataError(Diagnostic(CODE, f"the class folder {folder / name} holds no images",
                                       Location(str(folder / name)), origin.path,
                                       f"put the class's {', '.join(IMAGE_SUFFIXES)} files into it, or leave the "
                                       "class out of `classes`"))
        files += found
        labels += [label] * len(found)
    if src.limit is not None:  # spare reading images that are not used
        files, labels = files[: src.limit], labels[: src.limit]
    x = np.empty((len(files),) + shape, np.float32)
    for i, path in enumerate(files):
        x[i] = load_image(path, shape, origin.path)
    origin.classes = list(classes)
    return {image_input: x, label_input: np.array(labels, np.int64)}


def image_files(folder: str | Path) -> list[Path]:
    """The image files in `folder` and its subfolders, sorted by path; hidden files and folders and
    files without an image suffix (IMAGE_SUFFIXES, any case) are left out."""
    found = []
    # os.walk does not follow links to folders: a link loop cannot make it run forever
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # sorted in place: walked in order
        found += [Path(root) / n for n in names if not n.startswith(".") and n.lower().endswith(IMAGE_SUFFIXES)]
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def load_image(path: str | Path, shape, spec_path: str = "") -> np.ndarray:
    """The image at `path` as float32 [C, H, W] pixel values 0..255 for an input of `shape` [C, H, W]:
    converted to grayscale (C 1) or RGB (C 3) and resized to H x W (bilinear). A file Pillow cannot
    read is a DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    channels, height, width = _image_shape(shape)
    try:
        with Image.open(path) as image:
            if image.mode.startswith("I;16") or image.mode == "I":
                # 16-bit grayscale (depth, medical, scientific): scaled to 0..255 as a float image, since
                # Pillow's own conversion to 8 bits clips every value above 255
                deep = np.asarray(image, dtype=np.float32) * np.float32(255 / 65535)
                image = Image.fromarray(deep, mode="F") if channels == 1 else \
                    Image.fromarray(np.clip(deep + 0.5, 0, 255).astype(np.uint8))
            converted = image if image.mode == "F" else image.convert(_MODES[channels])  # reads the pixels
        if converted.size != (width, height):
            converted = converted.resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(converted, dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(Diagnostic(CODE, f"cannot read {path} as an image: {exc}", Location(str(path)), spec_path,
                                   _UNREADABLE_HINT)) from None
    # Pillow gives [H, W] (L) or [H, W, 3] (RGB); the network takes channels first
    return pixels[None] if channels == 1 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _image_shape(shape) -> tuple[int, int, int]:
    shape = tuple(shape)
    if len(shape) != 3 or shape[0] not in _MODES:
        raise ValueError(f"an image input has shape [C, H, W] with C 1 (grayscale) or 3 (RGB), not {list(shape)}")
    return shape


def _inputs(loaded: LoadedSpec, origin: Origin) -> tuple[str, str]:
    """(image input, label input) of the spec: one float [C, H, W] input (C 1 or 3) and one int64 label input."""
    inputs = loaded.spec.inputs
    floats = [n for n, i in inputs.items() if i.dtype == "float32"]
    labels = [n for n, i in inputs.items() if i.classes is not None]
    others = [n for n in inputs if n not in floats and n not in labels]
    if len(floats) != 1 or len(labels) != 1 or others:
        listing = ", ".join(f"{n} {list(i.shape)} {i.dtype}" for n, i in inputs.items())
        origin.fail(f"the images source gives one image input and one label input, but the spec's inputs are "
                    f"{listing}", "declare e.g. `image: {shape: [3, 32, 32]}` and "
                    "`label: {shape: [], dtype: int64, classes: N}`")
    name = floats[0]
    shape = inputs[name].shape
    if len(shape) != 3 or shape[0] not in _MODES:
        origin.fail(f"the images source needs input '{name}' of shape [C, H, W] with C 1 (grayscale) or 3 (RGB), "
                    f"not {list(shape)}", f"set `inputs.{name}.shape` to e.g. [1, 28, 28] or [3, 32, 32] (images "
                    "are converted and resized to it)", name)
    return name, labels[0]


def _classes(loaded: LoadedSpec, src: m.ImagesSource, folder: Path, origin: Origin) -> list[str]:
    """The class names in label order: `classes`, an eval split's train classes, or every subfolder sorted."""
    present = _subfolders(folder)
    train = loaded.spec.data.train
    if src.classes is None and origin.which == "eval" and isinstance(train, m.ImagesSource):
        # the eval split's labels must mean what train's do: take train's classes (when train's folder is there)
        inherited = train.classes or _subfolders(resolve(loaded, train.path))
        extra = [name for name in present if name not in inherited]
        if inherited and extra:
            raise DataError(Diagnostic(CODE, f"{folder} has class folders that data.train does not have: "
                                             f"{', '.join(extra)}", Location(str(folder / extra[0])), origin.path,
                                       f"the train classes are {', '.join(inherited)}; give data.eval "
                                       "`classes: [...]` to pick its class folders"))
        if inherited:
            return list(inherited)
    if src.classes is None:
        if len(present) < 2:
            have = f"only the subfolder {present[0]}" if present else "no subfolders"
            raise DataError(Diagnostic(CODE, f"{folder} has {have}; the images source needs one subfolder per "
                                             "class, at least 2", Location(str(folder)), origin.path,
                                       "put each class's images into a subfolder named after it, e.g. "
                                       f"{folder / 'cat'} and {folder / 'dog'}"))
        return present
    for i, name in enumerate(src.classes):
        where, path = loaded.smap.locate(("data", origin.which, "classes", i)), f"{origin.path}.classes[{i}]"
        if name in src.classes[:i]:
            raise DataError(Diagnostic(CODE, f"class '{name}' is named twice in classes", where, path,
                                       "name each class subfolder once"))
        if name not in present:
            hint = did_you_mean(name, present, f"subfolders of {folder}") if present else f"{folder} has no subfolders"
            raise DataError(Diagnostic(CODE, f"class '{name}' has no folder {folder / name}", where, path, hint))
    if origin.which == "eval" and isinstance(train, m.ImagesSource):
        # a label means a class: eval's list must be train's, in train's order (else labels swap silently)
        wanted = train.classes or _subfolders(resolve(loaded, train.path))
        if wanted and list(src.classes) != list(wanted):
            raise DataError(Diagnostic(CODE, f"data.eval's classes ({', '.join(src.classes)}) are not data.train's "
                                             f"({', '.join(wanted)}) in the same order, so a label would mean another "
                                             "class in evaluation", loaded.smap.locate(("data", "eval", "classes")),
                                       f"{origin.path}.classes", f"write `classes: [{', '.join(wanted)}]`, or leave "
                                       "it out: eval then takes train's classes"))
    return list(src.classes)


def _subfolders(folder: Path) -> list[str]:
    """The names of the folder's subfolders that are not hidden, sorted; none when it is not a folder."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
