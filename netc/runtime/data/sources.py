"""The source registry: one reader per `source:` value of the spec, and reading a split through it.

A reader is registered under the same name as the spec's `source:` literal:

    @register_source("xor")
    def read_xor(loaded, src, origin) -> dict[str, np.ndarray]: ...

It returns the source's arrays bound to the spec's inputs (name -> array with
one entry per sample) and may refine `origin` (a description, its file, CSV
rows) for later messages. `read_source` then applies what every source
shares: equal lengths, `limit`, and each input's checks. Importing the
package registers every reader, in the order of the spec's union (a test
checks that the two list the same sources).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from netc.runtime.data.binding import same_length, validate
from netc.runtime.data.origin import Origin
from netc.spec.load import LoadedSpec

Reader = Callable[[LoadedSpec, object, Origin], dict[str, np.ndarray]]  # (loaded, source model, origin)

SOURCES: dict[str, Reader] = {}


def register_source(name: str) -> Callable[[Reader], Reader]:
    """Register the decorated reader for `source: name`."""

    def register(reader: Reader) -> Reader:
        assert name not in SOURCES, name
        SOURCES[name] = reader
        return reader

    return register


def read_source(loaded: LoadedSpec, src, which: str) -> tuple[dict[str, np.ndarray], Origin]:
    """The source's arrays bound to the inputs, limited and validated (not normalized)."""
    spec_loc = loaded.smap.locate(("data", which))
    origin = Origin(src.source, spec_loc.file, f"data.{which}", spec_loc.line, spec_loc.col)
    # the spec's union admits only registered sources, so the lookup cannot miss
    arrays = same_length(SOURCES[src.source](loaded, src, origin), origin)
    if src.limit is not None:
        arrays = {name: a[: src.limit] for name, a in arrays.items()}
    return validate(arrays, loaded.spec.inputs, origin), origin
