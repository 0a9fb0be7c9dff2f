"""One compression job: check the inputs, search, confirm, write the artifacts."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine import checkpoint
from ..engine.executors import Executor, RayTaskExecutor, check_workers, make_executor
from ..engine.search import SearchConfig, resume_state, run_search
from ..errors import ArgumentError, ShapesearchError
from ..paths import check_writable_dir, make_dir
from . import artifacts
from .images import psnr
from .memory import check_memory, children_peak, memory_report
from .sources import SOURCE_FILE, Source

TINY = 20_000  # below this many entries, evaluate in process (Ray start-up would dominate)


@dataclass
class Job:
    """What to compress and where to put the results."""

    data: np.ndarray
    name: str
    out: Path
    kind: str = "array"  # "image" (pixels in [0, 1]) or "array"
    bits: int = 8  # image bit depth, for writing it back
    resume: bool = False
    overwrite: bool = False
    workers: int | None = None
    address: str | None = None
    source: Source | None = None  # where ``data`` came from: recorded, so that a resume needs no input
    shared: bool = False  # evaluations as Ray tasks on a cluster other jobs use too (no private workers)
    share: int | Callable[[], int] | None = None  # with ``shared``: tasks in flight (see RayTaskExecutor)
    on_evaluated: Callable[[int], None] | None = None  # with ``shared``: told each task's finished items
    task: object | None = None  # with ``shared``: the Ray remote function all jobs share (evaluation_task)


def check_data(data: np.ndarray, name: str) -> np.ndarray:
    """``data`` as float64 after checking it is real, finite, not all zeros and not tiny."""
    if data.dtype.kind not in "biuf":
        raise ShapesearchError(f"{name}: dtype {data.dtype} is not a real number type; give int or float data")
    if data.size < 4:
        raise ShapesearchError(f"{name} has only {data.size} {'entry' if data.size == 1 else 'entries'}; "
                               "nothing to compress")
    data = np.asarray(data, dtype=np.float64)
    if not np.all(np.isfinite(data)):
        raise ShapesearchError(f"{name} contains NaN or infinite values; clean them before compressing")
    if not np.any(data):
        raise ShapesearchError(f"{name} is all zeros; a relative error bound is meaningless for it")
    return data


# every file a run may leave; an overwritten run loses them all, so none is stale
RUN_FILES = (artifacts.RESULT_FILE, artifacts.TT_FILE, checkpoint.CHECKPOINT, checkpoint.CACHE_LOG,
             SOURCE_FILE, "reconstruction.png", "reconstruction.npy", "convergence.png",
             artifacts.PARETO_FILE, artifacts.PARETO_PLOT)


SAFE_RANGE = (1e-6, 1e6)  # max |x| the float32 Gram of the search handles without under/overflow


def unit_scale(data: np.ndarray) -> tuple[np.ndarray, int]:
    """(data / 2^e, e): data whose largest magnitude lies outside :data:`SAFE_RANGE` (1e300,
    subnormals) is scaled by a power of two into [0.5, 1), which is exact and leaves every
    relative error, shape and rank as it was; other data is returned as it is (e = 0)."""
    peak = float(np.max(np.abs(data)))
    if SAFE_RANGE[0] <= peak <= SAFE_RANGE[1]:
        return data, 0
    exponent = int(np.frexp(peak)[1])
    return np.ldexp(data, -exponent), exponent


def check_out(job: Job) -> None:
    """A writable ``out`` that does not hold an earlier run's results unless asked to
    overwrite (or resume) it; nothing is created here."""
    check_writable_dir(job.out)
    if job.resume:
        return
    taken = [f for f in (artifacts.RESULT_FILE, artifacts.TT_FILE, checkpoint.CHECKPOINT, artifacts.PARETO_FILE)
             if (job.out / f).exists()]
    if taken and not job.overwrite:
        resumable = checkpoint.CHECKPOINT in taken and artifacts.PARETO_FILE not in taken
        raise ArgumentError("out", f"{job.out} already holds a run ({taken[0]}); pick another out directory"
                            f"{', overwrite it, or resume it' if resumable else ' or overwrite it'}")


def start_out(job: Job) -> None:
    """Create ``out``; a fresh run removes an overwritten run's files and records its source."""
    make_dir(job.out)
    if job.resume:
        return
    for name in RUN_FILES:
        (job.out / name).unlink(missing_ok=True)
    for point in job.out.glob(artifacts.PARETO_TT.replace("{eps:g}", "*")):
        point.unlink()
    if job.source is not None:
        job.source.save(job.out)


def checked_input(job: Job) -> tuple[np.ndarray, np.ndarray, int, int | None]:
    """Everything checked before any search starts: (data as float64, the data searched,
    its power-of-two scaling exponent, the workers to use)."""
    check_workers(job.workers)
    data = check_data(job.data, job.name)
    check_out(job)
    searched, exponent = unit_scale(data)
    workers = 0 if job.workers is None and data.size < TINY and not job.address else job.workers
    check_memory(data.size, workers, job.name, local=job.address is None)
    return data, searched, exponent, workers


def executor_for(job: Job, searched: np.ndarray, workers: int | None) -> Executor:
    """Shared Ray tasks for a service job, else this job's own executor (a bad cluster address
    fails here, before anything is written)."""
    norm = float(np.linalg.norm(searched))
    if job.shared:
        return RayTaskExecutor(searched, norm, job.share, job.task, address=job.address,
                               on_evaluated=job.on_evaluated)
    return make_executor(searched, norm, workers, job.address)


def run_job(job: Job, config: SearchConfig,
            on_generation: Callable[[dict], None] | None = None) -> dict:
    """Search, confirm and write ``result.json``, ``tt.safetensors``, a reconstruction and a plot."""
    start = time.perf_counter()
    data, searched, exponent, workers = checked_input(job)
    if job.resume:  # before Ray starts: a wrong input or changed settings fail at once
        resume_state(job.out, searched, config)
    executor = executor_for(job, searched, workers)
    try:
        start_out(job)
        found = run_search(searched, config, executor, checkpoint_dir=job.out, resume=job.resume,
                           on_generation=on_generation)
        children = children_peak()  # the workers' peaks, before they stop
    finally:
        executor.close()

    cores, approx, rel_error = artifacts.stored_cores(found.cores, exponent, found.shape, searched, config.eps,
                                                      found.rel_error)
    files = {"tt": artifacts.TT_FILE, "result": artifacts.RESULT_FILE, "plot": "convergence.png"}
    meta = {"kind": job.kind, "bits": job.bits, "name": job.name, "eps": config.eps}
    artifacts.save_tt(job.out / artifacts.TT_FILE, cores, found.shape, meta)
    files["reconstruction"] = "reconstruction.png" if job.kind == "image" else "reconstruction.npy"
    artifacts.save_data(approx, job.out / files["reconstruction"], meta, overwrite=True)
    artifacts.plot_convergence(found.history, job.out / files["plot"],
                               f"{job.name}, ε = {config.eps}")
    quality = psnr(data, approx, peak=1.0 if job.kind == "image" else float(np.abs(data).max()))
    result = {
        "input": job.name,
        "input_shape": list(data.shape),
        "eps": config.eps,
        "seed": config.seed,
        "shape": {"text": found.shape.describe(), **found.shape.to_dict()},
        "ranks": list(found.ranks),
        "params": found.params,
        "original_entries": int(data.size),
        "cr": found.cr,
        "rel_error": rel_error,
        "core_dtype": str(cores[0].dtype),  # tt.safetensors: float32 where it still meets ε
        "psnr": quality if math.isfinite(quality) else None,  # None: exact
        "evaluations": found.evaluations,
        "cache_hits": found.cache_hits,
        "search_seconds": found.seconds,
        "wall_seconds": time.perf_counter() - start,
        "workers": executor.workers,
        "memory": memory_report(data.size, 0 if workers == 0 else executor.workers, children),
        "generations": found.history[-1]["generation"],
        "reference": found.reference,
        "surrogate": found.surrogate,
        "history": found.history,
        "files": files,
    }
    artifacts.write_json(job.out / artifacts.RESULT_FILE, result)
    return result
