"""Reading a real array from a user's file: .npy (never unpickled) or .safetensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from ..errors import ArgumentError, ShapesearchError


def _load_npy(path: Path) -> np.ndarray:
    # memory-mapped first: a header that promises more data than the file holds (or an
    # object dtype) is refused before anything is allocated
    try:
        mapped = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, EOFError, OSError) as exc:
        text = str(exc)
        if path.stat().st_size == 0:
            reason = "it is empty"
        elif "pickled" in text or "Python objects" in text:
            reason = "it holds pickled Python objects or is not a .npy file at all; pickles are never loaded"
        else:
            reason = text
        raise ShapesearchError(f"{path} is not a plain numeric .npy array ({reason}); "
                               "write one with numpy.save(path, array)") from exc
    if not isinstance(mapped, np.ndarray):  # an .npz archive renamed .npy
        raise ShapesearchError(f"{path} is not a single .npy array; save one array with numpy.save")
    return np.array(mapped)


def load_array(path: Path, key: str | None = None) -> np.ndarray:
    """A real array from .npy (never unpickled) or .safetensors (``key``: which tensor)."""
    path = Path(path)
    if not path.is_file():
        raise ShapesearchError(f"{path} not found; give a .npy or .safetensors file")
    if path.suffix == ".npy":
        if key is not None:
            raise ArgumentError("key", f"{key!r} names a tensor inside a .safetensors file; {path} is a .npy "
                                       "file, which holds one array: drop the key")
        return _load_npy(path)
    if path.suffix == ".safetensors":
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError, TypeError) as exc:
            raise ShapesearchError(f"{path} is not a readable safetensors file ({exc})") from exc
        if not tensors:
            raise ShapesearchError(f"{path} holds no tensors; give a file with at least one")
        if key is None and len(tensors) != 1:
            raise ArgumentError("key", f"is needed: {path} holds {len(tensors)} tensors; choose one "
                                f"({', '.join(sorted(tensors)[:5])})")
        name = key or next(iter(tensors))
        if name not in tensors:
            raise ArgumentError("key", f"{name!r}: {path} has no tensor of that name; choose one of "
                                f"{', '.join(sorted(tensors)[:5])}")
        return tensors[name]
    raise ShapesearchError(f"{path}: unsupported file type {path.suffix!r}; use .npy or .safetensors")
