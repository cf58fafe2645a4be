"""The npy source: one .npy file per input, named in `arrays`."""

from __future__ import annotations

import numpy as np

from netc.errors import DataError, Diagnostic, did_you_mean
from netc.runtime.data.npy_header import DAMAGED_HINT, npy_problem
from netc.runtime.data.origin import CODE, Origin, missing_file, resolve
from netc.runtime.data.sources import register_source
from netc.spec import models as m
from netc.spec.load import LoadedSpec


@register_source("npy")
def read_npy(loaded: LoadedSpec, src: m.NpySource, origin: Origin) -> dict[str, np.ndarray]:
    inputs = loaded.spec.inputs
    for name in src.arrays:
        if name not in inputs:
            raise DataError(Diagnostic(CODE, f"arrays names '{name}', which is not an input of the spec",
                                       loaded.smap.locate(("data", origin.which, "arrays", name)),
                                       f"{origin.path}.arrays.{name}", did_you_mean(name, list(inputs), "inputs")))
    for name in inputs:
        if name not in src.arrays:
            raise DataError(Diagnostic(CODE, f"the npy source gives no array for input '{name}'",
                                       loaded.smap.locate(("data", origin.which, "arrays")), f"{origin.path}.arrays",
                                       f"add `{name}: <file>.npy` under arrays"))
    paths = {name: resolve(loaded, rel) for name, rel in src.arrays.items()}
    origin.desc = ", ".join(str(p) for p in paths.values())
    origin.files = {name: str(p) for name, p in paths.items()}
    out = {}
    for name in inputs:
        path = paths[name]
        if not path.is_file():
            missing_file(path, origin)
        hint = "write it with np.save(path, array); object (pickled) arrays are refused"
        try:
            with path.open("rb") as handle:
                problem = npy_problem(handle, path.stat().st_size, "the file")
            if problem:
                origin.fail(f"{path} {problem}", f"{DAMAGED_HINT}; write it again with np.save(path, array)", name)
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            origin.fail(f"cannot read {path} as a .npy file: {exc}", hint, name)
        if not isinstance(array, np.ndarray):
            array.close()
            origin.fail(f"{path} is an .npz archive, not a .npy file",
                        "use `source: npz` with its `path`", name)
        out[name] = array
    # messages about one input name its own file
    origin.desc = origin.desc if len(paths) > 1 else str(next(iter(paths.values())))
    return out
