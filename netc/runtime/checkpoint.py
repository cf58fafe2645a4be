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
from safetensors.numpy import load_file, save_file

from netc.errors import Diagnostic, Location, RunError


def _atomic_save(tensors: dict[str, np.ndarray], path: Path, metadata: dict[str, str]) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def save_checkpoint(path: Path, weights: dict[str, np.ndarray], state: dict[str, np.ndarray] | None = None,
                    progress: dict | None = None) -> None:
    """Write weights (and, for resume, optimizer state + progress) atomically."""
    meta = {"format": "netc-1", "progress": json.dumps(progress or {})}
    if state is not None:
        bundle = {f"weights/{k}": v for k, v in weights.items()}
        bundle.update({f"optimizer/{k}": v for k, v in state.items()})
        _atomic_save(bundle, state_path(path), meta)
    _atomic_save(weights, path, meta)


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
