"""The .npy header check that the npy and npz sources share.

A file (or archive member) is judged by its header before numpy allocates
anything: a truncated file whose header claims terabytes is reported, not a
MemoryError.
"""

from __future__ import annotations

import math
import tokenize

import numpy as np

DAMAGED_HINT = "the file was cut short or damaged (an interrupted download or copy?)"


def npy_problem(handle, total: int, holder: str) -> str | None:
    """What is wrong with the .npy bytes in `handle` (`total` bytes), judged from the header alone; None if sound.

    np.load allocates the header's shape before it reads, so a truncated file
    whose header claims terabytes fails with MemoryError; a garbled header
    fails inside numpy's header parser. Bytes that are not .npy at all are left
    to np.load, which tells an .npz archive or pickled data apart.
    """
    fmt = np.lib.format
    if handle.read(len(fmt.MAGIC_PREFIX)) != fmt.MAGIC_PREFIX:
        return None
    handle.seek(0)
    try:
        version = fmt.read_magic(handle)
        if version not in ((1, 0), (2, 0), (3, 0)):
            return f"has an unknown .npy format version {version[0]}.{version[1]}"
        # version 3.0 is 2.0 with a UTF-8 header: the same layout, and shape and dtype read the same
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read_header(handle)
    except (ValueError, SyntaxError, tokenize.TokenError) as exc:
        return f"has a damaged .npy header ({exc.args[0] if exc.args else type(exc).__name__})"
    if any(d < 0 for d in shape):
        return f"has a damaged .npy header (negative dimension in shape {list(shape)})"
    if dtype.hasobject:
        return None  # pickled data: np.load refuses it (allow_pickle=False)
    header = handle.tell()
    need, have = math.prod(shape) * dtype.itemsize, total - header  # exact: a damaged shape can pass int64
    if have < need:
        return (f"is truncated: its header says shape {list(shape)} of {dtype} ({need} bytes), "
                f"{holder} holds {have} bytes after its {header}-byte header")
    return None
