"""A Pareto job: one search for a grid of ε, a TT file per point, ``pareto.json`` and a plot."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..engine.pareto import run_pareto
from ..engine.search import SearchConfig
from ..errors import ArgumentError, ShapesearchError
from . import artifacts
from .images import psnr
from .memory import children_peak, memory_report
from .search_job import Job, checked_input, executor_for, start_out

PARETO_FILE, PLOT_FILE = artifacts.PARETO_FILE, artifacts.PARETO_PLOT


def tt_file(eps: float) -> str:
    """The TT file of the point at ``eps``."""
    return artifacts.PARETO_TT.format(eps=eps)


def pick_point(directory: Path, eps: float) -> Path:
    """The TT file of the Pareto run in ``directory`` for an error bound of ``eps``: the
    point with the largest grid ε ≤ ``eps`` (the most compressed one that meets it)."""
    try:
        points = json.loads((Path(directory) / PARETO_FILE).read_text())["points"]
        grid = sorted(float(p["eps"]) for p in points)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ShapesearchError(f"{directory / PARETO_FILE} is not a readable Pareto result ({exc}); "
                               "run the search again") from exc
    if not grid:
        raise ShapesearchError(f"{directory / PARETO_FILE} holds no points; run the search again")
    if not 0 < eps < 1:  # NaN fails too
        raise ArgumentError("eps", f"{eps:g} is not a relative error; give a number in (0, 1) (ε = "
                                   f"{', '.join(f'{e:g}' for e in grid)} in {directory})")
    fitting = [e for e in grid if e <= eps]
    if not fitting:
        raise ArgumentError("eps", f"{eps:g} is below every point of the run in {directory} "
                                   f"(ε = {', '.join(f'{e:g}' for e in grid)}); give one of those or more")
    return Path(directory) / tt_file(fitting[-1])


def run_pareto_job(job: Job, config: SearchConfig, grid: tuple[float, ...],
                   on_generation: Callable[[dict], None] | None = None) -> dict:
    """Search the front, confirm every point, write its TT file, ``pareto.json`` and the plot."""
    start = time.perf_counter()
    if job.resume:
        raise ArgumentError("pareto", "runs cannot be resumed yet; start it again")
    data, searched, exponent, workers = checked_input(job)
    executor = executor_for(job, searched, workers)
    try:
        start_out(job)
        found = run_pareto(searched, config, grid, executor, on_generation=on_generation)
        n_workers = executor.workers
        children = children_peak()  # the workers' peaks, before they stop
    finally:
        executor.close()

    peak = 1.0 if job.kind == "image" else float(np.abs(data).max())
    points = []
    for p in found.points:
        cores, approx, rel_error = artifacts.stored_cores(p.cores, exponent, p.shape, searched, p.eps, p.rel_error)
        meta = {"kind": job.kind, "bits": job.bits, "name": job.name, "eps": p.eps}
        artifacts.save_tt(job.out / tt_file(p.eps), cores, p.shape, meta)
        quality = psnr(data, approx, peak=peak)
        del approx  # one point's reconstruction at a time
        points.append({"eps": p.eps, "shape": {"text": p.shape.describe(), **p.shape.to_dict()},
                       "ranks": list(p.ranks), "params": p.params, "cr": p.cr, "rel_error": rel_error,
                       "core_dtype": str(cores[0].dtype),
                       "psnr": quality if math.isfinite(quality) else None, "front": p.front,
                       "file": tt_file(p.eps)})
    plot_pareto(points, job.out / PLOT_FILE, f"{job.name}: CR and PSNR against ε")
    result = {
        "input": job.name,
        "input_shape": list(data.shape),
        "grid": list(grid),
        "seed": config.seed,
        "original_entries": int(data.size),
        "points": points,
        "evaluations": found.evaluations,
        "cache_hits": found.cache_hits,
        "search_seconds": found.seconds,
        "wall_seconds": time.perf_counter() - start,
        "workers": n_workers,
        "memory": memory_report(data.size, 0 if workers == 0 else n_workers, children),
        "generations": found.history[-1]["generation"],
        "history": found.history,
        "files": {"result": PARETO_FILE, "plot": PLOT_FILE},
    }
    artifacts.write_json(job.out / PARETO_FILE, result)
    return result


def plot_pareto(points: list[dict], path: Path, title: str) -> None:
    """CR (log) and PSNR against ε; points on the front filled, dominated ones hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = [p["eps"] for p in points]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(eps, [p["cr"] for p in points], color="tab:blue", label="CR")
    for p in points:
        ax.plot(p["eps"], p["cr"], "o", color="tab:blue", fillstyle="full" if p["front"] else "none")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ε (relative Frobenius error bound)")
    ax.set_ylabel("CR (original entries / TT parameters)", color="tab:blue")
    rated = [(p["eps"], p["psnr"]) for p in points if p["psnr"] is not None]
    if rated:
        twin = ax.twinx()
        twin.plot(*zip(*rated), "s--", color="tab:red", label="PSNR")
        twin.set_ylabel("PSNR (dB)", color="tab:red")
    ax.set_title(f"{title} (filled: on the front)")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
