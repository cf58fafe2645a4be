"""Generated toy sources: xor, spirals and blobs, each (features, labels) from a seed."""

from __future__ import annotations

import numpy as np

from netc.runtime.data.binding import bind_pair
from netc.runtime.data.origin import Origin
from netc.runtime.data.sources import register_source
from netc.spec import models as m
from netc.spec.load import LoadedSpec

_XOR_CORNERS = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
_XOR_LABELS = np.array([0, 1, 1, 0], dtype=np.int64)


@register_source("xor")
def read_xor(loaded: LoadedSpec, src: m.XorSource, origin: Origin) -> dict[str, np.ndarray]:
    x, y = _xor(src)
    origin.desc = f"xor ({src.n} samples)"
    return bind_pair(x, y, loaded.spec.inputs, origin, src.source)


@register_source("spirals")
def read_spirals(loaded: LoadedSpec, src: m.SpiralsSource, origin: Origin) -> dict[str, np.ndarray]:
    x, y = _spirals(src)
    origin.desc = f"spirals ({src.classes} classes)"
    return bind_pair(x, y, loaded.spec.inputs, origin, src.source)


@register_source("blobs")
def read_blobs(loaded: LoadedSpec, src: m.BlobsSource, origin: Origin) -> dict[str, np.ndarray]:
    x, y = _blobs(src)
    origin.desc = f"blobs ({src.classes} classes)"
    return bind_pair(x, y, loaded.spec.inputs, origin, src.source)


def _xor(src: m.XorSource) -> tuple[np.ndarray, np.ndarray]:
    """n samples cycling through the four corners; Gaussian noise of std `noise` (none by default)."""
    corner = np.arange(src.n) % 4
    x = _XOR_CORNERS[corner].copy()
    if src.noise > 0:
        x += np.random.default_rng(src.seed).normal(0.0, src.noise, x.shape)
    return x, _XOR_LABELS[corner]


def _spirals(src: m.SpiralsSource) -> tuple[np.ndarray, np.ndarray]:
    """Arm k: radius r from 0 to 1, angle 2*pi*k/classes + 4r + noise (samples cycle through the arms)."""
    rng = np.random.default_rng(src.seed)
    labels = np.arange(src.n, dtype=np.int64) % src.classes
    radius = np.empty(src.n)
    for k in range(src.classes):
        members = np.flatnonzero(labels == k)
        radius[members] = np.linspace(0.0, 1.0, len(members)) if len(members) > 1 else 0.5
    angle = 2.0 * np.pi * labels / src.classes + 4.0 * radius + rng.normal(0.0, 1.0, src.n) * src.noise
    x = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1)
    return x, labels


def _blobs(src: m.BlobsSource) -> tuple[np.ndarray, np.ndarray]:
    """Centers uniform in [-10, 10]^features (seeded); samples cycle through the blobs."""
    rng = np.random.default_rng(src.seed)
    centers = rng.uniform(-10.0, 10.0, (src.classes, src.features))
    labels = np.arange(src.n, dtype=np.int64) % src.classes
    x = centers[labels] + rng.normal(0.0, src.std, (src.n, src.features))
    return x, labels
