"""Checkpoints in safetensors, never pickle, written atomically (temp file + rename).

`<name>.safetensors` holds only the weights, named like a PyTorch state_dict, so
`model.load_state_dict(safetensors.torch.load_file(path))` works; `<name>.state.safetensors`
holds everything `--resume` needs in one file (weights, optimizer state, where training
stood), so a process killed between the two writes never resumes from a mixed state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from netc.errors import Diagnostic, Location, RunError
from netc.runtime.data.dataset import NormStats

NORMALIZATION = "normalization.safetensors"  # a run's normalization statistics, beside its checkpoints


def _serialised(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    # np.require keeps 0-d tensors 0-d (num_batches_tracked); np.ascontiguousarray would make them [1]
    return _same_bytes(save({k: np.require(v, requirements="C") for k, v in tensors.items()}, metadata=metadata))


def _same_bytes(data: bytes) -> bytes:
    """The file with its metadata's keys sorted: safetensors writes them in a per-process hash order,
    so the same checkpoint got other bytes in every run (a hash or a diff of two runs told them apart).
    The header keeps its length (padded with spaces, as safetensors pads it), so every tensor's offset
    stays; a header that would grow (it does not: the same keys and values) is left as written."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    metadata = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(metadata.items()))} if metadata is not None else {}) | header
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > size:
        return data
    return data[:8] + text + b" " * (size - len(text)) + data[8 + size:]


def save_checkpoint(path: Path, weights: dict[str, np.ndarray], state: dict[str, np.ndarray] | None = None,
                    progress: dict | None = None) -> None:
    """Write weights (and, for resume, optimizer state + progress) atomically; raises OSError.

    Every file is written to a temporary name first and renamed only when all are written, so a
    failed write (disk full, file too large) leaves the previous checkpoint exactly as it was."""
    meta = {"format": "netc-1", "progress": json.dumps(progress or {})}
    files = {path: _serialised(weights, meta)}
    if state is not None:
        bundle = {f"weights/{k}": v for k, v in weights.items()}
        bundle.update({f"optimizer/{k}": v for k, v in state.items()})
        files[state_path(path)] = _serialised(bundle, meta)
    temps = {target: target.with_name(f"{target.name}.{os.getpid()}.tmp") for target in files}
    try:
        for target, data in files.items():
            temps[target].write_bytes(data)
        for target in (state_path(path), path):  # the resume state first: it alone is read by --resume
            if target in temps:
                os.replace(temps[target], target)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def state_path(path: Path) -> Path:
    return path.with_name(path.name.replace(".safetensors", "") + ".state.safetensors")


def load_weights(path: str | Path) -> dict[str, np.ndarray]:
    return _load(Path(path))[0]


def load_state(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """(weights, optimizer state, progress) saved for resuming next to the checkpoint `path`."""
    bundle, meta = _load(state_path(path))
    weights = {k.split("/", 1)[1]: v for k, v in bundle.items() if k.startswith("weights/")}
    state = {k.split("/", 1)[1]: v for k, v in bundle.items() if k.startswith("optimizer/")}
    return weights, state, json.loads(meta.get("progress", "{}"))


def _load(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    if not path.exists():
        raise RunError(Diagnostic("E-CHECKPOINT", "checkpoint not found", Location(str(path)),
                                  hint="train first, or pass the path of a .safetensors file"))
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunError(Diagnostic("E-CHECKPOINT", f"not a readable safetensors checkpoint: {exc}",
                                  Location(str(path)))) from None


def save_normalization(path: Path, stats: NormStats) -> None:
    """The train split's normalization statistics (shift and scale per input, float64), atomically, so
    predictions need the checkpoint's folder only, not the training data."""
    tensors = {f"{name}.shift": np.asarray(shift, np.float64) for name, shift in stats.shift.items()}
    tensors.update({f"{name}.scale": np.asarray(scale, np.float64) for name, scale in stats.scale.items()})
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(_serialised(tensors, {"format": "netc-1", "normalize": stats.kind}))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_normalization(path: Path) -> NormStats:
    tensors, meta = _load(path)
    kind = meta.get("normalize", "")
    names = {key.rsplit(".", 1)[0] for key in tensors}
    if kind not in ("standard", "minmax", "max") or any(f"{n}.shift" not in tensors or f"{n}.scale" not in tensors
                                                        for n in names):
        raise RunError(Diagnostic("E-CHECKPOINT", "not netc's normalization statistics", Location(str(path)),
                                  hint="delete it to compute the statistics from the spec's train data again"))
    return NormStats(kind, {n: tensors[f"{n}.shift"] for n in names}, {n: tensors[f"{n}.scale"] for n in names})
