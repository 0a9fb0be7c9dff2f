"""Search state on disk as JSON (no pickles): written atomically every generation."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np

from .errors import UsageError

CHECKPOINT = "checkpoint.json"


def key_to_json(key: tuple) -> dict:
    axes, modes, reverse = key
    return {"axes": [[n, list(d)] for n, d in axes], "modes": [list(m) for m in modes], "reverse": reverse}


def key_from_json(d: dict) -> tuple:
    return (tuple((int(n), tuple(int(x) for x in digits)) for n, digits in d["axes"]),
            tuple(tuple(int(c) for c in m) for m in d["modes"]), bool(d["reverse"]))


def fingerprint(tensor: np.ndarray) -> str:
    """Identifies the data a checkpoint belongs to."""
    h = hashlib.sha256(str(tensor.shape).encode())
    h.update(np.ascontiguousarray(tensor, dtype=np.float64).tobytes())
    return h.hexdigest()[:32]


def rng_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def set_rng_state(state: list) -> None:
    random.setstate((state[0], tuple(state[1]), state[2]))


def save(directory: Path, state: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (CHECKPOINT + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, directory / CHECKPOINT)


def load(directory: Path) -> dict:
    path = Path(directory) / CHECKPOINT
    if not path.is_file():
        raise UsageError(f"{path} not found: --resume needs the --out directory of an earlier run")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not a valid checkpoint ({exc}); start a new run instead") from exc
