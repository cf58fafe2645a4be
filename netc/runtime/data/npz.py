"""The npz source: one .npz archive whose arrays are matched to the inputs by name (or by `keys`)."""

from __future__ import annotations

import zipfile
import zlib

import numpy as np

from netc.errors import DataError, Diagnostic, did_you_mean
from netc.runtime.data.npy_header import DAMAGED_HINT, npy_problem
from netc.runtime.data.origin import CODE, Origin, missing_file, resolve
from netc.runtime.data.sources import register_source
from netc.spec import models as m
from netc.spec.load import LoadedSpec


@register_source("npz")
def read_npz(loaded: LoadedSpec, src: m.NpzSource, origin: Origin) -> dict[str, np.ndarray]:
    path = resolve(loaded, src.path)
    origin.in_file(path)
    if not path.is_file():
        missing_file(path, origin)
    inputs = loaded.spec.inputs
    keys = dict(src.keys or {})
    for name in keys:
        if name not in inputs:
            raise DataError(Diagnostic(CODE, f"keys names '{name}', which is not an input of the spec",
                                       loaded.smap.locate(("data", origin.which, "keys", name)),
                                       f"{origin.path}.keys.{name}", did_you_mean(name, list(inputs), "inputs")))
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        origin.fail(f"cannot read {path} as an .npz archive: {exc}",
                    "write it with np.savez(path, name=array, ...); object (pickled) arrays are refused")
    if isinstance(npz, np.ndarray):
        origin.fail(f"{path} is a .npy file, not an .npz archive", "use `source: npy` with `arrays: {input: path}`")
    with npz, zipfile.ZipFile(path) as archive:
        available = list(npz.files)
        out = {}
        for name in inputs:
            key = keys.get(name, name)
            if key not in available:
                listing = ", ".join(available) if available else "none"
                hint = did_you_mean(key, available, "arrays in the file") if available else "the archive is empty"
                if name not in keys:
                    hint += f"; or map the input to an array with `keys: {{{name}: <array name>}}`"
                origin.fail(f"{path} has no array '{key}' for input '{name}' (arrays in the file: {listing})",
                            hint, name)
            hint = "write it with np.savez(path, name=array, ...); object (pickled) arrays are refused"
            try:
                # npz[key] reads member `key` if the archive has one, else `key`.npy (as numpy does)
                member = archive.getinfo(key if key in archive.namelist() else key + ".npy")
                with archive.open(member) as handle:
                    problem = npy_problem(handle, member.file_size, f"the archive member {member.filename}")
                if problem:
                    origin.fail(f"array '{key}' of {path} {problem}",
                                f"{DAMAGED_HINT}; write it again with np.savez(path, name=array, ...)", name)
                out[name] = npz[key]
            except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
                origin.fail(f"cannot read array '{key}' of {path}: {exc}", hint, name)
            if not isinstance(out[name], np.ndarray):  # numpy hands back a member that is not .npy as bytes
                origin.fail(f"array '{key}' of {path} is not a .npy array (the member starts with "
                            f"{out[name][:8]!r})", "write the archive with np.savez(path, name=array, ...)", name)
    return out
