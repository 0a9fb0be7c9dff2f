"""Search state on disk as JSON (no pickles), every generation.

``checkpoint.json`` (population, RNG state, history, counters) is replaced atomically;
the fitness cache grows by appending its new entries to ``checkpoint-cache.jsonl``, so a
generation's write costs what it added, not the whole cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np

from ..errors import ShapesearchError

CHECKPOINT = "checkpoint.json"
CACHE_LOG = "checkpoint-cache.jsonl"


def key_to_json(key: tuple) -> dict:
    """A tensorization key (:attr:`Tensorization.key`) as JSON-ready dicts and lists."""
    axes, modes, reverse = key
    return {"axes": [[n, list(d)] for n, d in axes], "modes": [list(m) for m in modes], "reverse": reverse}


def key_from_json(d: dict) -> tuple:
    """Inverse of :func:`key_to_json`."""
    return (tuple((int(n), tuple(int(x) for x in digits)) for n, digits in d["axes"]),
            tuple(tuple(int(c) for c in m) for m in d["modes"]), bool(d["reverse"]))


def fingerprint(tensor: np.ndarray) -> str:
    """Identifies the data a checkpoint belongs to."""
    h = hashlib.sha256(str(tensor.shape).encode())
    h.update(np.ascontiguousarray(tensor, dtype=np.float64).tobytes())
    return h.hexdigest()[:32]


def rng_state(rng: random.Random) -> list:
    """``rng``'s state as JSON-ready lists."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_rng_state(rng: random.Random, state: list) -> None:
    """Restore ``rng`` to a state from :func:`rng_state`."""
    rng.setstate((state[0], tuple(state[1]), state[2]))


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: a crash leaves the old file or the new one,
    never half of one."""
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save(directory: Path, state: dict, new_cache: list[tuple[tuple, dict]], fresh: bool = False) -> None:
    """Append ``new_cache`` entries to the cache log (truncated first if ``fresh``), then
    replace the state file; ``state["cache_entries"]`` says how many log lines belong to it."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / CACHE_LOG).open("w" if fresh else "a") as f:
        f.writelines(json.dumps([key_to_json(k), v]) + "\n" for k, v in new_cache)
        f.flush()
        os.fsync(f.fileno())
    write_atomically(directory / CHECKPOINT, json.dumps(state))


def _strict(constant: str) -> None:
    raise ValueError(f"{constant} is not a number a checkpoint holds")


def _parse(text: str) -> object:
    """JSON without NaN / Infinity (Python's json would accept them)."""
    return json.loads(text, parse_constant=_strict)


def load(directory: Path) -> dict:
    """The state saved in ``directory``, with its cache entries under ``"cache"``; log lines
    written after the last state (a crash between the two writes) are ignored here and
    dropped by :func:`trim_cache_log` once the run goes on.  Reads only."""
    path = Path(directory) / CHECKPOINT
    log = Path(directory) / CACHE_LOG
    if not path.is_file():
        raise ShapesearchError(f"{path} not found: resuming needs the output directory of an earlier run")
    try:
        state = _parse(path.read_text())
        if not isinstance(state, dict):
            raise TypeError("not a JSON object")
        entries = state["cache_entries"]
        if not isinstance(entries, int) or entries < 0:
            raise TypeError("no cache_entries count")
    except (ValueError, KeyError, TypeError, OSError) as exc:  # JSON and UTF-8 errors are ValueErrors
        raise ShapesearchError(f"{path} is not a valid checkpoint ({exc}); start a new run instead") from exc
    try:
        lines = log.read_text().splitlines()[:entries] if entries else []
        state["cache"] = [_parse(line) for line in lines]
    except (ValueError, OSError) as exc:
        raise ShapesearchError(f"{log} is damaged ({exc}); start a new run instead") from exc
    if len(state["cache"]) != entries:
        raise ShapesearchError(f"{log} has {len(state['cache'])} of the checkpoint's {entries} entries "
                               "(truncated?); start a new run instead")
    return state


def trim_cache_log(directory: Path, entries: int) -> None:
    """Drop cache-log lines beyond the first ``entries`` (written after the last state), so
    that the run's next appends follow its own entries."""
    log = Path(directory) / CACHE_LOG
    with log.open("rb") as f:
        lines = f.read().split(b"\n")
    if len(lines) > entries + 1 or (len(lines) == entries + 1 and lines[-1]):
        log.write_bytes(b"".join(line + b"\n" for line in lines[:entries]))
