"""Whether a search of a tensor fits in this machine's memory, checked before it starts."""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

from ..errors import ShapesearchError

# bytes per tensor entry: the driver's float64 data and the object store's copy; per worker,
# its float32 cast, the tensorized copy and the sweep's first carry, and in the float64
# confirmation the tensorized copy, the SVD factors and the reconstruction
DRIVER_BYTES = 16
WORKER_BYTES = 32


def available_memory() -> int | None:
    """Bytes this machine can still give (Linux's MemAvailable), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def search_memory(entries: int, workers: int) -> int:
    """Bytes a search of ``entries`` entries needs on one machine with ``workers`` workers."""
    return entries * (DRIVER_BYTES + WORKER_BYTES * max(workers, 1))


def check_memory(entries: int, workers: int | None, name: str, local: bool = True) -> None:
    """Refuse, in one line, a search that would not fit in the memory available now.
    ``workers``: None = one per CPU; ``local``: False when the workers run on a cluster (only
    the driver's share is checked here)."""
    have = available_memory()
    if have is None:
        return
    count = (os.cpu_count() or 1) if workers is None else workers
    need = search_memory(entries, count) if local else entries * DRIVER_BYTES
    if need > have:
        gib = 2**30
        raise ShapesearchError(
            f"{name} has {entries:,} entries; searching it needs about {need / gib:.1f} GiB "
            f"({DRIVER_BYTES} + {WORKER_BYTES} bytes an entry per worker, {max(count, 1)} worker(s)) but "
            f"{have / gib:.1f} GiB is available; use fewer --workers, crop or resize the data, or a "
            "machine (or cluster) with more memory")


def peak_rss() -> int:
    """Bytes: the most resident memory this process has held so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def memory_report(entries: int, workers: int) -> dict:
    """For a result file: the estimate the check used and what this process actually peaked
    at (with ``workers`` 0 the search ran in it; Ray workers are separate processes)."""
    return {"estimated_bytes": search_memory(entries, workers), "this_process_peak_bytes": peak_rss(),
            "workers": workers}
