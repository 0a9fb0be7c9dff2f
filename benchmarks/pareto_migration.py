"""Choosing how often the Pareto islands trade shapes, on training photos only.

    python benchmarks/pareto_migration.py

`run_pareto` runs one GA island per grid ε; every ``migrate_every`` generations each island
receives its neighbours' best shapes (0: never, each island is then exactly the single-ε
search with the same seed).  Trading finds better shapes but keeps islands going longer.  This
script measures both on photos that `pareto.py` never reports (scikit-image training photos
and crops, as `tune_ga.py`): per photo and setting, the Pareto run's seconds against the six
single-ε searches' total, and the geometric-mean and worst CR ratio to them.  The rule,
fixed before the run: the default is the setting with the highest geometric-mean CR ratio
among those faster than the single searches by 10 % or more on every photo (else 0).

Rows go to results/pareto_migration.jsonl; the latest run's table to pareto_migration.md.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import numpy as np
import skimage.data
from _report import RESULTS, append_row, load_rows, machine, main_with_report, table
from pareto import GRID, timed
from tune_ga import BENCHMARK_IMAGES

from shapesearch.engine.pareto import eps_grid, run_pareto
from shapesearch.engine.search import SearchConfig, run_search

JSONL = RESULTS / "pareto_migration.jsonl"
MARKDOWN = Path(__file__).parent / "pareto_migration.md"
SETTINGS = (0, 1, 3)
MAX_TIME_RATIO = 0.9


def photos() -> list[tuple[str, np.ndarray]]:
    """Training photos near the benchmark photos' size (0.25–0.8 M entries), scaled to [0, 1]."""
    out = [(name, getattr(skimage.data, name)().astype(np.float64) / 255)
           for name in ("immunohistochemistry", "camera", "cell", "brick")]
    out.append(("hubble crop 480×600", skimage.data.hubble_deep_field()[200:680, 200:800].astype(np.float64) / 255))
    out.append(("retina crop 448×560", skimage.data.retina()[480:928, 420:980].astype(np.float64) / 255))
    assert not BENCHMARK_IMAGES & {name.split()[0] for name, _ in out}
    return out


def run(args) -> None:
    grid = eps_grid(*GRID)
    base = {"run": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(), "grid": grid}
    for name, tensor in photos():
        singles, singles_s = [], 0.0
        for eps in grid:
            single, seconds = timed(run_search, tensor, SearchConfig(eps=eps, seed=0))
            singles.append(single.cr)
            singles_s += seconds
        for every in SETTINGS:
            front, seconds = timed(partial(run_pareto, migrate_every=every), tensor, SearchConfig(seed=0), grid)
            ratios = [p.cr / s for p, s in zip(front.points, singles)]
            row = {**base, "image": name, "migrate_every": every, "pareto_seconds": seconds,
                   "singles_seconds": singles_s, "time_ratio": seconds / singles_s,
                   "cr_ratios": ratios, "geomean_cr_ratio": float(np.exp(np.mean(np.log(ratios)))),
                   "worst_cr_ratio": min(ratios), "evaluations": front.evaluations}
            append_row(JSONL, row)
            print(f"{name}, every {every}: time {row['time_ratio']:.2f}×, CR ratio geomean "
                  f"{row['geomean_cr_ratio']:.3f}, worst {row['worst_cr_ratio']:.3f}", flush=True)


def choice(rows: list[dict]) -> int:
    """The rule in the module docstring."""
    ok = [e for e in SETTINGS if all(r["time_ratio"] <= MAX_TIME_RATIO for r in rows if r["migrate_every"] == e)]
    if not ok:
        return 0
    return max(ok, key=lambda e: np.mean([np.log(r["geomean_cr_ratio"]) for r in rows if r["migrate_every"] == e]))


def report() -> str:
    rows = load_rows(JSONL)
    if not rows:
        return "# Pareto migration\n\nNo run yet: `python benchmarks/pareto_migration.py`."
    last = rows[-1]["run"]
    mine = [r for r in rows if r["run"] == last]
    body = [[r["image"], r["migrate_every"], r["pareto_seconds"], r["singles_seconds"], r["time_ratio"],
             r["geomean_cr_ratio"], r["worst_cr_ratio"]] for r in mine]
    summary = [[e, max(r["time_ratio"] for r in mine if r["migrate_every"] == e),
                float(np.exp(np.mean([np.log(r["geomean_cr_ratio"]) for r in mine if r["migrate_every"] == e]))),
                min(r["worst_cr_ratio"] for r in mine if r["migrate_every"] == e)] for e in SETTINGS]
    return "\n".join([
        "# How often the Pareto islands trade shapes (training photos only)", "",
        f"Printed by `benchmarks/pareto_migration.py` (rows in `results/pareto_migration.jsonl`), run {last} on "
        f"{mine[0]['machine']}. Grid ε = {', '.join(f'{e:g}' for e in mine[0]['grid'])}; seed 0, default "
        "settings, each search on a fresh Ray executor (start-up not timed). Time ratio = Pareto seconds / "
        "the six single-ε searches' seconds; CR ratio = Pareto CR / single CR at each ε.", "",
        table(["photo", "migrate every", "Pareto s", "singles s", "time ratio", "CR ratio (geomean)",
               "CR ratio (worst)"], body), "",
        table(["migrate every", "worst time ratio", "CR ratio (geomean over photos)", "worst CR ratio"], summary), "",
        f"Rule (fixed before the run): the highest geometric-mean CR ratio among settings with time ratio ≤ "
        f"{MAX_TIME_RATIO} on every photo. Chosen: **migrate every {choice(mine)}**.", ""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    main_with_report(p, run, report, MARKDOWN)


if __name__ == "__main__":
    main()
