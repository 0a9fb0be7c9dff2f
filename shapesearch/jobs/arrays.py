"""Reading a real array from a user's file: .npy (never unpickled) or .safetensors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import BinaryIO

import numpy as np
from safetensors import SafetensorError, safe_open

from ..errors import ArgumentError, ShapesearchError
from .memory import check_readable


def _readable(entries: int, file_bytes: int, path: Path) -> None:
    """The tensor as read plus its float64 copy (the search's input) must fit in memory now."""
    check_readable(file_bytes + 8 * entries, f"{path}: {entries:,} entries",
                   "crop or resize the data, or use a machine with more memory")


def _npy_header(path: Path) -> None:
    """Check a .npy header against the file before anything is allocated: a numeric dtype and
    no more data promised than the file holds (a huge header would otherwise ask for terabytes)."""
    with path.open("rb") as f:
        check_npy_header(f, path.stat().st_size, path)


def check_npy_header(stream: BinaryIO, size: int, path: Path | str) -> None:
    """:func:`_npy_header` on an open stream of ``size`` bytes (an upload, before it is stored)."""
    if size == 0:
        raise ShapesearchError(f"{path} is empty; write an array with numpy.save(path, array)")
    try:
        version = np.lib.format.read_magic(stream)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(stream, max_header_size=100_000)
        offset = stream.tell()
    except (ValueError, EOFError, OSError) as exc:
        raise ShapesearchError(f"{path} is not a .npy array file ({exc}); write one with numpy.save") from exc
    if dtype.hasobject:
        raise ShapesearchError(f"{path} holds pickled Python objects, and pickles are never loaded; save a plain "
                               "numeric array with numpy.save")
    needed = math.prod(shape) * dtype.itemsize
    if needed > size - offset:
        raise ShapesearchError(f"{path}: its header promises {needed:,} bytes of data but the file holds "
                               f"{size - offset:,}; the file is truncated or damaged")
    _readable(math.prod(shape), needed, path)


def _load_npy(path: Path) -> np.ndarray:
    _npy_header(path)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise ShapesearchError(f"{path} is not a plain numeric .npy array ({exc}); "
                               "write one with numpy.save(path, array)") from exc


def _e4m3_values() -> np.ndarray:
    """The 256 values of float8 e4m3fn (bias 7, no infinities, NaN at S.1111.111)."""
    b = np.arange(256)
    exponent, mantissa = (b >> 3) & 0xF, (b & 7) / 8
    magnitude = np.where(exponent == 0, mantissa * 2.0**-6, (1 + mantissa) * 2.0 ** (exponent - 7))
    values = np.where(b >> 7, -magnitude, magnitude)
    values[(b & 0x7F) == 0x7F] = np.nan
    return values.astype(np.float32)


MAX_HEADER = 100_000_000  # bytes: the safetensors format's own limit

# numpy has no bfloat16 or float8: their bytes are widened exactly to float32
_WIDENED = {
    "BF16": lambda raw: (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32),
    "F8_E5M2": lambda raw: (raw.astype(np.uint16) << 8).view(np.float16).astype(np.float32),  # float16's top byte
    "F8_E4M3": lambda raw: _e4m3_values()[raw],
}


def chosen_tensor(path: Path | str, names: list[str], key: str | None) -> str:
    """The tensor ``key`` names among ``names`` (a .safetensors file's), or its only one."""
    if not names:
        raise ShapesearchError(f"{path} holds no tensors; give a file with at least one")
    if key is None and len(names) != 1:
        raise ArgumentError("key", f"is needed: {path} holds {len(names)} tensors; choose one "
                            f"({_listed(names)})")
    name = key or names[0]
    if name not in names:
        raise ArgumentError("key", f"{name!r}: {path} has no tensor of that name; choose one of {_listed(names)}")
    return name


def _listed(names: list[str], most: int = 8) -> str:
    """Up to ``most`` names, then how many more."""
    shown = sorted(names)[:most]
    return ", ".join(shown) + (f", … ({len(names) - most} more)" if len(names) > most else "")


def _header(stream: BinaryIO) -> object:
    """The JSON header at the start of a .safetensors stream (8-byte little-endian length, then JSON)."""
    size = int.from_bytes(stream.read(8), "little")
    if not 2 <= size <= MAX_HEADER:
        raise ValueError(f"a header of {size:,} bytes")
    return json.loads(stream.read(size))


def tensor_names(stream: BinaryIO) -> list[str] | None:
    """The tensor names in the .safetensors header at the start of ``stream`` (None: no readable
    header; loading the file will say why)."""
    try:
        header = _header(stream)
    except (ValueError, OSError):
        return None
    return [k for k in header if k != "__metadata__"] if isinstance(header, dict) else None


def _raw_bytes(path: Path, name: str) -> np.ndarray:
    """One tensor's bytes, straight from the file (the header was validated by ``safe_open``)."""
    with path.open("rb") as f:
        begin, end = _header(f)[name]["data_offsets"]
        return np.fromfile(f, dtype=np.uint8, count=end - begin, offset=begin)


def _load_safetensors(path: Path, key: str | None) -> np.ndarray:
    """Only the chosen tensor is read, so one layer of a large checkpoint costs only its own memory."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            name = chosen_tensor(path, list(f.keys()), key)
            view = f.get_slice(name)
            dtype, shape = view.get_dtype(), view.get_shape()
            _readable(math.prod(shape), 8 * math.prod(shape), path)  # 8: the widest dtype, or bytes + widened
            if dtype not in _WIDENED:
                return f.get_tensor(name)
        return _WIDENED[dtype](_raw_bytes(path, name)).reshape(shape)
    except ShapesearchError:  # ours, already one line that says what to do (it is a ValueError too)
        raise
    # TypeError / AttributeError: a dtype neither numpy nor _WIDENED knows; MemoryError: a header's promise
    except (SafetensorError, OSError, ValueError, TypeError, AttributeError, MemoryError, KeyError) as exc:
        raise ShapesearchError(f"{path} is not a readable safetensors file ({exc}); tensors of "
                               "float, int or bfloat16/float8 type are read") from exc


def check_no_key(path: Path | str, key: str | None) -> None:
    """A .npy file holds one array: a tensor ``key`` for it is a mistake, not something to ignore."""
    if key is not None:
        raise ArgumentError("key", f"{key!r} names a tensor inside a .safetensors file; {path} is a .npy "
                                   "file, which holds one array: drop the key")


def load_array(path: Path, key: str | None = None) -> np.ndarray:
    """A real array from .npy (never unpickled) or .safetensors (``key``: which tensor)."""
    path = Path(path)
    if not path.is_file():
        raise ShapesearchError(f"{path} not found; give a .npy or .safetensors file")
    if path.suffix == ".npy":
        check_no_key(path, key)
        return _load_npy(path)
    if path.suffix == ".safetensors":
        return _load_safetensors(path, key)
    raise ShapesearchError(f"{path}: unsupported file type {path.suffix!r}; use .npy or .safetensors")
