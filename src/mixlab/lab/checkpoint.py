"""Checkpoints and run files, written atomically, and the RNG state that makes a resume exact.

A crash (or Ctrl-C, or a killed job) can come at any moment, including in the middle of a write.
Every file here is therefore written to a temporary name in the same directory, flushed to disk,
and moved over the old one with `os.replace`, which is atomic on POSIX and Windows: a reader sees
the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"
RECORD_NAME = "record.json"

__all__ = [
    "CHECKPOINT_NAME",
    "RECORD_NAME",
    "atomic_write",
    "load_checkpoint",
    "restore_global_rng",
    "save_checkpoint",
    "global_rng_state",
    "write_json",
]


def atomic_write(path: str | Path, write: Callable[[Any], None], *, binary: bool = True) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then move it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """`torch.save` ``state`` to ``path`` atomically."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict | None:
    """Load a checkpoint written by `save_checkpoint`, or return None if there is none.

    Checkpoints are the lab's own files and may hold plain Python objects (configs, histories),
    so they are loaded with ``weights_only=False``: load only checkpoints you wrote.
    """
    path = Path(path)
    if not path.is_file():
        return None
    return torch.load(path, map_location=map_location, weights_only=False)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda f: f.write(text), binary=False)


def global_rng_state(device: torch.device) -> dict[str, Any]:
    """The global torch RNG state (CPU, plus ``device``'s CUDA generator when on CUDA)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_global_rng(state: dict[str, Any], device: torch.device) -> None:
    """Inverse of `global_rng_state`."""
    torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
