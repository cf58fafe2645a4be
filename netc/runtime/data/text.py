"""The text source: next-character prediction over a text file, or over a module of Python's
standard library (a text every Python ships: no download).

The vocabulary is every distinct character of the whole text, in code-point order; a character is
its position there. Each sample is a window of T characters (the index input, shape [T]) and the
character after it (the label input, whose `classes` is the vocabulary's size); a label input of
shape [T] takes the character after every position instead (the window shifted by one: a loss at
every step). Windows start every
`stride` characters. `split: eval` is the text's last `eval_fraction`, `train` the rest: a
contiguous tail rather than random windows, since neighbouring windows overlap. The vocabulary goes
to the run folder as classes.json (the label names), which `netc sample` reads back.
"""

from __future__ import annotations

import importlib.util
import sysconfig
from pathlib import Path

import numpy as np

from netc.runtime.data.origin import Origin, missing_file, resolve
from netc.runtime.data.sources import register_source
from netc.spec import models as m
from netc.spec.load import LoadedSpec


@register_source("text")
def read_text(loaded: LoadedSpec, src: m.TextSource, origin: Origin) -> dict[str, np.ndarray]:
    path = text_path(loaded, src, origin)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        origin.in_file(path)
        origin.fail(f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})", "give a UTF-8 text file")
    except OSError as exc:
        origin.in_file(path)
        origin.fail(f"cannot read the file: {exc.strerror or exc}", "check the path and its permissions")
    tokens_input, label_input = _inputs(loaded, origin)
    vocabulary = sorted(set(text))
    window = loaded.spec.inputs[tokens_input].shape[0]
    labels_shape = loaded.spec.inputs[label_input].shape
    if labels_shape not in ([], [window]):
        origin.fail(f"label input '{label_input}' has shape {labels_shape}: the text source gives the next "
                    f"character after the window (shape []) or after each of its {window} positions "
                    f"(shape [{window}])", f"declare `inputs.{label_input}.shape` as [] or [{window}]", label_input)
    wanted, limit = loaded.spec.inputs[label_input].classes, loaded.spec.inputs[tokens_input].indices
    if len(vocabulary) != wanted:
        origin.fail(f"{path.name} has {len(vocabulary)} distinct characters but label input '{label_input}' has "
                    f"classes: {wanted}", f"set `inputs.{label_input}.classes` to {len(vocabulary)}", label_input)
    if limit < len(vocabulary):
        origin.fail(f"{path.name} has {len(vocabulary)} distinct characters but index input '{tokens_input}' has "
                    f"indices: {limit}", f"set `inputs.{tokens_input}.indices` (and the embedding's num) to "
                    f"{len(vocabulary)} or more", tokens_input)
    codes = encode(text, vocabulary)
    cut = int(round(len(codes) * (1 - src.eval_fraction)))
    part = {"train": codes[:cut], "eval": codes[cut:], "all": codes}[src.split]
    if len(part) <= window:
        origin.fail(f"the {src.split} part of {path.name} has {len(part)} characters, not more than a window "
                    f"of {window}", "use a longer text, a smaller eval_fraction or a shorter input")
    starts = np.arange(0, len(part) - window, src.stride)
    windows = part[starts[:, None] + np.arange(window)]
    origin.desc = f"{path.name} ({src.split} part, {len(starts)} windows of {window} characters)"
    origin.classes = vocabulary
    if loaded.spec.inputs[label_input].shape:  # [T]: the next character at every position
        return {tokens_input: windows, label_input: part[starts[:, None] + np.arange(1, window + 1)]}
    return {tokens_input: windows, label_input: part[starts + window]}


def text_path(loaded: LoadedSpec, src: m.TextSource, origin: Origin) -> Path:
    """The file a text source reads: its `path`, or the source file of the standard-library `module`."""
    if src.path is not None:
        path = resolve(loaded, src.path)
        if not path.is_file():
            missing_file(path, origin, "text file")
        return path
    try:
        found = importlib.util.find_spec(src.module)
    except (ImportError, ValueError):
        found = None
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    file = Path(getattr(found, "origin", None) or "")
    if getattr(found, "origin", None) == "frozen":  # os, codecs, io...: imported frozen, their source beside the rest
        file = stdlib.joinpath(*src.module.split(".")).with_suffix(".py")
    installed = {"site-packages", "dist-packages"} & set(file.parts)  # third-party code under the stdlib folder
    if file.suffix != ".py" or not file.is_file() or installed or not file.resolve().is_relative_to(stdlib):
        origin.fail(f"'{src.module}' is not a module of Python's standard library with a source file",
                    "name one such as argparse, textwrap or json.decoder")
    return file


def encode(text: str, vocabulary: list[str]) -> np.ndarray:
    """Each character's position in the vocabulary (every character of `text` must be in it)."""
    lookup = {char: code for code, char in enumerate(vocabulary)}
    return np.fromiter((lookup[char] for char in text), dtype=np.int64, count=len(text))


def window_inputs(loaded: LoadedSpec) -> tuple[str, str] | None:
    """The spec's index input of one axis (the window of characters) and its label input (the next
    character), when those are its only inputs: a character model's; else None."""
    inputs = loaded.spec.inputs
    tokens = [n for n, i in inputs.items() if i.indices is not None and len(i.shape) == 1]
    labels = [n for n, i in inputs.items() if i.classes is not None]
    if len(tokens) != 1 or len(labels) != 1 or len(inputs) != 2:
        return None
    return tokens[0], labels[0]


def _inputs(loaded: LoadedSpec, origin: Origin) -> tuple[str, str]:
    found = window_inputs(loaded)
    if found is None:
        inputs = loaded.spec.inputs
        origin.fail("the text source gives a window of characters and the character after it, for one index "
                    "input [T] and one label input; the spec has "
                    + ", ".join(f"{n} {list(i.shape)} {i.dtype}" for n, i in inputs.items()),
                    "declare e.g. `chars: {shape: [32], dtype: int64, indices: 96}` and "
                    "`next: {shape: [], dtype: int64, classes: 96}`")
    return found
