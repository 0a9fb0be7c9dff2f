"""Pareto mode against one single-ε search per grid point, on the four benchmark photos.

    python benchmarks/pareto.py            # grid 0.02:0.3 (6 points), the four photos
    python benchmarks/pareto.py --quick    # smoke run: one photo, 3 points

For each photo (scikit-image, scaled to [0, 1]): one `run_pareto` over the grid, then one
`run_search` per grid ε, all with seed 0 and default settings, each on a fresh Ray executor
(one worker per CPU) whose start-up is not timed, so the single-ε searches do not share the
surrogate's spectra that the Pareto run computes once.  Without migration (the default) each
Pareto island makes the same choices as the single search at its ε, so equal CRs are
expected; what the table measures is the time one batched run saves.  Per grid ε: the Pareto point's CR and
measured error, the single search's, and their ratio; per photo: the Pareto run's seconds
against the single searches' total.  Targets (issue 11): ratio ≥ 0.97 at every ε, and less
time than the single searches together.

Rows go to results/pareto.jsonl (tagged with the run's id); the latest full run's table to
pareto.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import skimage.data
from _report import RESULTS, append_row, load_rows, machine, main_with_report, table

from shapesearch.engine.executors import RayExecutor
from shapesearch.engine.pareto import eps_grid, run_pareto
from shapesearch.engine.search import SearchConfig, run_search
from shapesearch.jobs.search_job import unit_scale

JSONL = RESULTS / "pareto.jsonl"
MARKDOWN = Path(__file__).parent / "pareto.md"
IMAGES = ["astronaut", "coffee", "chelsea", "rocket"]  # as in image_search.py
GRID = (0.02, 0.3, 6)
TARGET_RATIO = 0.97


def timed(search, tensor: np.ndarray, *args):
    """``search(tensor, *args, executor)`` on a fresh executor, and its seconds (start-up excluded)."""
    executor = RayExecutor(tensor, float(np.linalg.norm(tensor)))
    try:
        t0 = time.perf_counter()
        out = search(tensor, *args, executor)
        return out, time.perf_counter() - t0
    finally:
        executor.close()


def run(args) -> None:
    images = IMAGES[:1] if args.quick else IMAGES
    grid = eps_grid(*GRID[:2], 3 if args.quick else GRID[2])
    base = {"run": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": args.quick, "machine": machine(), "grid": grid}
    for name in images:
        tensor, _ = unit_scale(getattr(skimage.data, name)().astype(np.float64) / 255)
        front, front_s = timed(run_pareto, tensor, SearchConfig(seed=0), grid)
        print(f"{name}: Pareto {front_s:.1f} s, {front.evaluations} evaluations", flush=True)
        singles_s = 0.0
        for p in front.points:
            single, seconds = timed(run_search, tensor, SearchConfig(eps=p.eps, seed=0))
            singles_s += seconds
            row = {**base, "image": name, "eps": p.eps, "pareto_cr": p.cr, "pareto_error": p.rel_error,
                   "pareto_shape": p.shape.describe(), "front": p.front, "single_cr": single.cr,
                   "single_error": single.rel_error, "single_shape": single.shape.describe(),
                   "single_seconds": seconds, "single_evaluations": single.evaluations, "ratio": p.cr / single.cr}
            append_row(JSONL, row)
            print(f"  ε={p.eps:g}: Pareto CR {p.cr:.2f} (error {p.rel_error:.4f}), single CR {single.cr:.2f} "
                  f"({seconds:.1f} s), ratio {row['ratio']:.3f}", flush=True)
        append_row(JSONL, {**base, "image": name, "summary": True, "pareto_seconds": front_s,
                           "pareto_evaluations": front.evaluations, "singles_seconds": singles_s})
        print(f"  Pareto {front_s:.1f} s against the single searches' {singles_s:.1f} s "
              f"({front_s / singles_s:.2f}×)", flush=True)


def report() -> str:
    rows = load_rows(JSONL)
    if not rows:
        return "# Pareto mode\n\nNo run yet: `python benchmarks/pareto.py`."
    full = [r for r in rows if not r["quick"]]
    last = (full or rows)[-1]["run"]
    mine = [r for r in rows if r["run"] == last]
    points = [r for r in mine if not r.get("summary")]
    sums = [r for r in mine if r.get("summary")]
    body = [[r["image"], r["eps"], r["pareto_cr"], r["pareto_error"], "yes" if r["front"] else "no",
             r["single_cr"], r["single_error"], r["ratio"], "yes" if r["ratio"] >= TARGET_RATIO else "**NO**"]
            for r in points]
    single_evals = {name: sum(r["single_evaluations"] for r in points if r["image"] == name) for name in IMAGES}
    time_rows = [[s["image"], s["pareto_seconds"], s["pareto_evaluations"], s["singles_seconds"],
                  single_evals.get(s["image"]), s["pareto_seconds"] / s["singles_seconds"],
                  "yes" if s["pareto_seconds"] < s["singles_seconds"] else "**NO**"] for s in sums]
    worst = min(r["ratio"] for r in points)
    quick = " **A `--quick` smoke run, not the benchmark.**" if mine[0]["quick"] else ""
    return "\n".join([
        "# Pareto mode against single-ε searches", "",
        f"Printed by `benchmarks/pareto.py` (rows in `results/pareto.jsonl`), run {last} on "
        f"{mine[0]['machine']}.{quick} "
        f"One `--pareto` search over ε = {', '.join(f'{e:g}' for e in mine[0]['grid'])} per photo, then one "
        "single-ε search per grid point; seed 0, default settings, each on a fresh Ray executor (one worker "
        "per CPU, start-up not timed). CR = original entries / TT parameters; errors measured by "
        "reconstruction.", "",
        table(["image", "ε", "Pareto CR", "Pareto error", "on front", "single CR", "single error",
               "Pareto / single", f"≥ {TARGET_RATIO}"], body), "",
        table(["image", "Pareto s", "Pareto evaluations", "single searches s (sum)", "single evaluations (sum)",
               "time ratio", "Pareto faster"], time_rows), "",
        f"Worst CR ratio: {worst:.3f}.", ""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one photo, 3 grid points")
    main_with_report(p, run, report, MARKDOWN)


if __name__ == "__main__":
    main()
