"""Checkpoints of a unit of work: serialised to bytes (so they can travel from a worker to the
driver) and written atomically (temp file, fsync, rename), so a kill never leaves half a file.

A checkpoint holds tensors, arrays as tensors and plain values only; it is read back with
``torch.load(weights_only=True)``, which never executes code from the file.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import torch


def to_bytes(state: dict[str, Any]) -> bytes:
    """``state`` serialised with ``torch.save`` (tensors are moved to the CPU first)."""
    buffer = io.BytesIO()
    torch.save(_to_cpu(state), buffer)
    return buffer.getvalue()


def from_bytes(payload: bytes) -> dict[str, Any]:
    """The state :func:`to_bytes` serialised, on the CPU, loaded with ``weights_only=True``."""
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)


def write_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that a reader sees the old file or the whole new one; a
    write that fails (a full disk) or is interrupted removes its temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value
