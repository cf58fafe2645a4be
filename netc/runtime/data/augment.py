"""`data.augment`: random changes to training samples, a pure function of its arguments.

    out = augment(arrays, rule, spec.inputs, np.random.default_rng([seed, epoch, chunk, AUGMENT_STREAM]))

The training loop calls it on each chunk's samples in their shuffled order with
a generator seeded by (seed, epoch, chunk), so a resumed run draws the same
changes. For each input it changes, in the spec's input order, it applies and
draws in this order:

- crop  (images): pad each side with `crop` zeros, cut H x W at a random offset
  0..2*crop per axis and sample (torchvision's RandomCrop(size, padding));
- shift (images): move by dy, dx in -shift..shift, filling with the edge pixels;
- flip  (images): mirror left-right with probability 1/2 per sample;
- noise (any float input): add N(0, noise^2) per value.

Images are inputs of shape [C, H, W]; every array is (N, *shape) float32 in and
out, and labels and inputs the rule does not name pass through untouched.
Everything is vectorised over the chunk (no loop over samples).

`check_augment` reports what the rule asks that the spec's inputs cannot do.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from netc.errors import DataError, Diagnostic, did_you_mean, path_text
from netc.runtime.data.origin import CODE
from netc.spec import models as m
from netc.spec.load import LoadedSpec

AUGMENT_STREAM = 1  # a last seed word for augment, so its draws differ from the dropout stream of (seed, epoch, chunk)


def augment(arrays: dict[str, np.ndarray], rule: m.Augment, inputs: dict[str, m.InputSpec],
            rng: np.random.Generator, loss_targets: frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
    """New arrays for the inputs the rule changes (`loss_targets`: float inputs only the losses read,
    left alone unless `inputs:` names them); the others (labels included) are the same objects."""
    out = dict(arrays)
    for name in targets(rule, inputs, loss_targets):
        if name not in arrays:
            continue
        x = arrays[name]
        n = len(x)
        if is_image(inputs[name]):
            if rule.crop:
                oy, ox = rng.integers(0, 2 * rule.crop + 1, size=(2, n))
                x = crop(x, rule.crop, oy, ox)
            if rule.shift:
                dy, dx = rng.integers(-rule.shift, rule.shift + 1, size=(2, n))
                x = shift(x, rule.shift, dy, dx)
            if rule.flip:
                x = flip(x, rng.random(n) < 0.5)
        if rule.noise:
            x = add_noise(x, rule.noise, rng)
        out[name] = x
    return out


def targets(rule: m.Augment, inputs: dict[str, m.InputSpec], loss_targets: frozenset[str] = frozenset()) -> list[str]:
    """The inputs the rule changes: those it names, or every float input but the losses' targets (a
    regression's target is what the network should output, not a sample to vary); in spec order."""
    named = rule.inputs if rule.inputs is not None else [
        n for n, i in inputs.items() if i.dtype == "float32" and n not in loss_targets]
    return [name for name in inputs if name in named]


def is_image(inp: m.InputSpec) -> bool:
    return inp.dtype == "float32" and len(inp.shape) == 3


# --------------------------------------------------------------------------- the transforms, one draw given


def crop(x: np.ndarray, pad: int, oy: np.ndarray, ox: np.ndarray) -> np.ndarray:
    """Each sample padded with `pad` zeros and cut back to H x W at offset (oy[i], ox[i]) in 0..2*pad."""
    return _window(x, pad, "constant", oy, ox)


def shift(x: np.ndarray, most: int, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Each sample moved down dy[i] and right dx[i] pixels (|d| <= most), the edge pixels filling in:
    out[y, x] = in[clip(y - dy), clip(x - dx)]."""
    return _window(x, most, "edge", most - dy, most - dx)


def flip(x: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """The samples where `mirror` is true mirrored left-right (the last axis)."""
    out = x.copy()  # then overwrite the mirrored ones: half the traffic of np.where
    rows = np.flatnonzero(mirror)
    out[rows] = x[rows, ..., ::-1]
    return out


def add_noise(x: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(x.shape, dtype=np.float32)
    noise *= np.float32(std)
    noise += x
    return noise


def _window(x: np.ndarray, pad: int, mode: str, oy: np.ndarray, ox: np.ndarray) -> np.ndarray:
    # (N, C, H, W): pad H and W, then take each sample's H x W window of the (2p+1)^2 a strided view
    # offers: one gather into the output, the (2p+1)^2 windows never materialized
    n, c, h, w = x.shape
    if mode == "constant":  # zeros and one copy: twice as fast as np.pad's constant mode
        padded = np.zeros((n, c, h + 2 * pad, w + 2 * pad), x.dtype)
        padded[:, :, pad:pad + h, pad:pad + w] = x
    else:
        padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode=mode)
    windows = sliding_window_view(padded, (h, w), axis=(2, 3))  # (N, C, 2p+1, 2p+1, H, W)
    return windows[np.arange(len(x)), :, oy, ox]  # (N, C, H, W)


# --------------------------------------------------------------------------- the check


def check_augment(loaded: LoadedSpec) -> None:
    """Raise one DataError with every problem of `data.augment` against the spec's inputs (none: return)."""
    data = loaded.spec.data
    rule = data.augment if data is not None else None
    if rule is None:
        return
    inputs = loaded.spec.inputs
    floats = [name for name, inp in inputs.items() if inp.dtype == "float32"]
    images = [name for name in floats if is_image(inputs[name])]
    geometric = [t for t in ("crop", "shift", "flip") if getattr(rule, t)]
    problems: list[Diagnostic] = []

    def problem(where: tuple, message: str, hint: str) -> None:
        where = ("data", "augment") + where
        problems.append(Diagnostic(CODE, message, loaded.smap.locate(where), path_text(where), hint))

    image_list = f"image inputs: {', '.join(images)}" if images else "the spec has no image input ([C, H, W])"
    for i, name in enumerate(rule.inputs or []):
        if name not in inputs:
            problem(("inputs", i), f"data.augment names '{name}', which is not an input of the spec",
                    did_you_mean(name, floats, "float inputs") if floats else "the spec has no float input")
        elif inputs[name].dtype != "float32":
            problem(("inputs", i), f"data.augment names input '{name}', which is int64 (labels and indices are "
                    "never augmented)", f"float inputs: {', '.join(floats)}" if floats else
                    "the spec has no float input")
        elif geometric and not is_image(inputs[name]):
            problem(("inputs", i), f"{' and '.join(geometric)} change{'s' if len(geometric) == 1 else ''} images "
                    f"([C, H, W]) but input '{name}' has shape {inputs[name].shape}",
                    f"noise works on any float input; {image_list}")
    if rule.inputs is None and not floats:
        problem((), "data.augment has no input to change: the spec has no float input",
                "augmentation changes float inputs; remove data.augment")
    elif rule.inputs is None and geometric and not images:
        problem((geometric[0],), f"{' and '.join(geometric)} change{'s' if len(geometric) == 1 else ''} images "
                f"([C, H, W]) but the spec has none (float inputs: "
                f"{', '.join(f'{n} {inputs[n].shape}' for n in floats)})",
                "noise works on any float input; give an image input the shape [C, H, W]")
    # crop and shift must leave part of every image in place
    for key in ("crop", "shift"):
        amount = getattr(rule, key)
        for name in targets(rule, inputs):
            if amount and is_image(inputs[name]) and amount >= min(inputs[name].shape[1:]):
                _, h, w = inputs[name].shape
                problem((key,), f"{key} {amount} is not smaller than input '{name}' ({h} x {w} pixels)",
                        f"use {key} below {min(h, w)} (a few pixels, e.g. {max(1, min(h, w) // 8)})")
    if problems:
        raise DataError(problems)
