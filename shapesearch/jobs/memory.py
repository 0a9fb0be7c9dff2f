"""Whether a search of a tensor fits in this machine's memory, checked before it starts."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ..errors import ShapesearchError

# bytes per tensor entry: the driver's float64 data, the object store's copy and the
# reconstruction; per worker, its float32 cast, the tensorized copies and the sweep's first
# factors, and in the float64 confirmation the tensorized copy and its factors.  Set above the
# peaks benchmarks/scaling.py measured (25 M and 100 M entries, 2 workers, 2.35 and 7.7 GB).
DRIVER_BYTES = 24
WORKER_BYTES = 40
RAY_BYTES = 768 * 2**20  # a local Ray head, raylet and idle workers, before any data


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
    """Bytes a search of ``entries`` entries needs on one machine with ``workers`` workers
    (0: in process, no Ray)."""
    return (RAY_BYTES if workers else 0) + entries * (DRIVER_BYTES + WORKER_BYTES * max(workers, 1))


def check_readable(need: int, what: str, advice: str) -> None:
    """Refuse, in one line, to read data that needs ``need`` bytes when less is available: a
    clear error before the read, not a MemoryError or the OOM killer halfway through it."""
    have = available_memory()
    if have is not None and need > have:
        raise ShapesearchError(f"{what} need about {need / 2**30:.1f} GiB to read, {have / 2**30:.1f} GiB is "
                               f"available; {advice}")


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


class PeakMemory:
    """The peak of the summed proportional set size (PSS) of a process (default: this one) and
    every process under it — on a local Ray cluster the head, raylet, object store and workers —
    sampled in a thread every ``every`` seconds from start to :meth:`stop`; benchmarks watch a
    CLI run with it from outside (a run itself reports :func:`children_peak`).  Shared pages
    (the object store) count once in all, split among the processes that map them."""

    def __init__(self, every: float = 0.5, pid: int | None = None) -> None:
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid)
        self.every, self.peak = every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="peak-memory")
        self._thread.start()

    def sample(self) -> int:
        """Bytes held now by the process tree."""
        total = 0
        for p in [self.root, *_descendants(self.root)]:
            try:
                total += p.memory_full_info().pss
            except (self._psutil.Error, AttributeError):  # gone, not ours, or no PSS on this OS
                try:
                    total += p.memory_info().rss
                except self._psutil.Error:
                    pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.every)

    def stop(self) -> int:
        """Stop sampling; the peak in bytes."""
        self._stop.set()
        self._thread.join()
        return self.peak


def _descendants(root) -> list:
    """The living processes under ``root`` (a psutil.Process); none if it is gone."""
    import psutil

    try:
        return root.children(recursive=True)
    except psutil.Error:
        return []


def _high_water(pid: int) -> int:
    """Bytes: a process's peak resident size (VmHWM in /proc/PID/status; 0 where unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def children_peak() -> int:
    """Bytes: the summed peak resident sizes of this process's living descendants (a local
    Ray's head, raylet and workers).  Read before they stop; no thread samples anything."""
    import psutil

    return sum(_high_water(p.pid) for p in _descendants(psutil.Process()))


def memory_report(entries: int, workers: int, children: int) -> dict:
    """For a result file: the estimate the memory check used, and an upper bound of the run's
    peak on this machine — this process's peak resident size plus ``children`` (from
    :func:`children_peak`).  A sum of peaks, and pages shared by several processes (the object
    store) count in each: the true simultaneous peak is lower.  On a remote cluster only this
    process counts."""
    own = _high_water(os.getpid())
    return {"estimated_bytes": search_memory(entries, workers), "peak_bytes_upper_bound": own + children,
            "workers": workers}
