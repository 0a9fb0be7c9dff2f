"""Reading a real array from a user's file: .npy (never unpickled) or .safetensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from ..errors import ArgumentError, ShapesearchError


def load_array(path: Path, key: str | None) -> np.ndarray:
    """A real array from .npy (never unpickled) or .safetensors."""
    if not path.is_file():
        raise ShapesearchError(f"{path} not found; give a .npy or .safetensors file")
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ShapesearchError(f"{path}: {exc}; save a plain numeric array") from exc
    if path.suffix == ".safetensors":
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError, TypeError) as exc:
            raise ShapesearchError(f"{path} is not a readable safetensors file ({exc})") from exc
        if key is None and len(tensors) != 1:
            raise ArgumentError("key", f"is needed: {path} holds {len(tensors)} tensors; choose one "
                                f"({', '.join(sorted(tensors)[:5])})")
        name = key or next(iter(tensors))
        if name not in tensors:
            raise ArgumentError("key", f"{name!r}: {path} has no tensor of that name; choose one of "
                                f"{', '.join(sorted(tensors)[:5])}")
        return tensors[name]
    raise ShapesearchError(f"{path}: unsupported file type {path.suffix!r}; use .npy or .safetensors")
