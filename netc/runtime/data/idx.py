"""The mnist-idx source: MNIST-style idx files (optionally gzipped), and `read_idx` for one such file.

A split is two files in one folder, `<prefix>-images-idx3-ubyte` and
`<prefix>-labels-idx1-ubyte` (prefix train or t10k; `.idx3-ubyte` and a
`.gz` ending are found too). A file is checked against its own header
before its values are read.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from netc.errors import DataError, Diagnostic, Location
from netc.runtime.data.binding import bind_pair
from netc.runtime.data.origin import CODE, Origin, resolve
from netc.runtime.data.sources import register_source
from netc.spec import models as m
from netc.spec.load import LoadedSpec

_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@register_source("mnist-idx")
def read_idx_split(loaded: LoadedSpec, src: m.IdxSource, origin: Origin) -> dict[str, np.ndarray]:
    folder = resolve(loaded, src.path)
    origin.desc = f"{folder} ({src.split} split)"
    if not folder.is_dir():
        raise DataError(Diagnostic(CODE, f"folder not found: {folder}", Location(str(folder)), origin.path,
                                   "path is the folder holding the idx files, relative to the spec's folder"))
    prefix = "train" if src.split == "train" else "t10k"
    images_path = _find(folder, prefix, "images", 3, origin)
    labels_path = _find(folder, prefix, "labels", 1, origin)
    images, labels = read_idx(images_path, origin.path), read_idx(labels_path, origin.path)
    if images.ndim < 2:
        raise DataError(Diagnostic(CODE, f"an images file holds an array of samples (2 or more dimensions) but "
                                         f"{images_path} has shape {list(images.shape)}", Location(str(images_path)),
                                   origin.path, "is this the labels file?"))
    if labels.ndim != 1:
        raise DataError(Diagnostic(CODE, f"a labels file holds one dimension (one label per sample) but "
                                         f"{labels_path} has shape {list(labels.shape)}", Location(str(labels_path)),
                                   origin.path, "is this the images file?"))
    if len(images) != len(labels):
        raise DataError(Diagnostic(CODE, f"{images_path} has {len(images)} images but {labels_path} has "
                                         f"{len(labels)} labels", Location(str(labels_path)), origin.path,
                                   "the images and labels files must belong to the same split"))
    # problems with the features or the labels point at their own file
    floats = [n for n, i in loaded.spec.inputs.items() if i.dtype == "float32"]
    ints = [n for n, i in loaded.spec.inputs.items() if i.dtype == "int64"]
    if floats:
        origin.files[floats[0]] = str(images_path)
    if ints:
        origin.files[ints[0]] = str(labels_path)
    if src.limit is not None:  # spare converting samples that are not used
        images, labels = images[: src.limit], labels[: src.limit]
    return bind_pair(images, labels, loaded.spec.inputs, origin, src.source)


def _find(folder: Path, prefix: str, kind: str, nd: int, origin: Origin) -> Path:
    """The `kind` (images, labels) file of the split, under either of MNIST's spellings, gzipped or not."""
    names = [f"{prefix}-{kind}-idx{nd}-ubyte", f"{prefix}-{kind}.idx{nd}-ubyte"]
    for name in names:
        for suffix in ("", ".gz"):
            if (folder / (name + suffix)).is_file():
                return folder / (name + suffix)
    present = sorted(p.name for p in folder.iterdir())
    raise DataError(Diagnostic(
        CODE, f"no {names[0]} (or {names[0]}.gz) in {folder}", Location(str(folder / names[0])), origin.path,
        f"files in the folder: {', '.join(present[:20]) or 'none'}" + (" ..." if len(present) > 20 else ""),
    ))


def read_idx(path: str | Path, spec_path: str = "data") -> np.ndarray:
    """An idx file (MNIST's format, optionally gzipped) as an array of its header's shape and type."""
    path = Path(path)
    raw = _read_bytes(path, spec_path)
    loc = Location(str(path))

    def bad(message: str, hint: str) -> DataError:
        return DataError(Diagnostic(CODE, message, loc, spec_path, hint))

    if len(raw) < 4:
        raise bad(f"idx file is truncated: {len(raw)} bytes, shorter than the 4-byte magic number",
                  "download the file again")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise bad(f"not an idx file: the magic number is 0x{raw[:4].hex()}, expected 0x0000TTNN "
                  "(TT the type code 08/09/0b/0c/0d/0e, NN the number of dimensions)",
                  "is this an MNIST-style idx file (gunzipped or ending in .gz)?")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise bad(f"idx file is truncated: its header announces {ndim} dimensions ({header} bytes) "
                  f"but the file has {len(raw)} bytes", "download the file again")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    # exact Python integers: a damaged header's dimensions can multiply past int64
    count = math.prod(dims)
    need, have = count * dtype.itemsize, len(raw) - header
    shape = "x".join(str(d) for d in dims)
    if have < need:
        raise bad(f"idx file is truncated: its header says {count} values of {dtype.name} (shape {shape}, "
                  f"{need} bytes) but the file holds {have} bytes ({have // dtype.itemsize} values) "
                  f"after its {header}-byte header", "download the file again")
    if have > need:
        raise bad(f"idx file has {have - need} bytes after the {count} values (shape {shape}) its header "
                  "announces", "the file is damaged or not an idx file; download it again")
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def _read_bytes(path: Path, spec_path: str) -> bytes:
    """The file's bytes, gunzipped when they are gzip (whatever the name says)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(Diagnostic(CODE, f"cannot read {path}: {exc.strerror or exc}", Location(str(path)),
                                   spec_path, "check the path and the file's permissions")) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(Diagnostic(CODE, f"{path} is a damaged or truncated gzip file ({exc})",
                                       Location(str(path)), spec_path, "download the file again")) from None
    return raw
