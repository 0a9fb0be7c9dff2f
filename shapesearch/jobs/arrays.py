"""Reading a real array from a user's file: .npy (never unpickled) or .safetensors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from ..errors import ArgumentError, ShapesearchError


def _npy_header(path: Path) -> None:
    """Check a .npy header against the file before anything is allocated: a numeric dtype and
    no more data promised than the file holds (a huge header would otherwise ask for terabytes)."""
    size = path.stat().st_size
    if size == 0:
        raise ShapesearchError(f"{path} is empty; write an array with numpy.save(path, array)")
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f, max_header_size=100_000)
            offset = f.tell()
    except (ValueError, EOFError, OSError) as exc:
        raise ShapesearchError(f"{path} is not a .npy array file ({exc}); write one with numpy.save") from exc
    if dtype.hasobject:
        raise ShapesearchError(f"{path} holds pickled Python objects, and pickles are never loaded; save a plain "
                               "numeric array with numpy.save")
    needed = math.prod(shape) * dtype.itemsize
    if needed > size - offset:
        raise ShapesearchError(f"{path}: its header promises {needed:,} bytes of data but the file holds "
                               f"{size - offset:,}; the file is truncated or damaged")


def _load_npy(path: Path) -> np.ndarray:
    _npy_header(path)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise ShapesearchError(f"{path} is not a plain numeric .npy array ({exc}); "
                               "write one with numpy.save(path, array)") from exc


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
        # AttributeError: a dtype this numpy lacks (float8); MemoryError: a header's promise
        except (SafetensorError, OSError, ValueError, TypeError, AttributeError, MemoryError) as exc:
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
