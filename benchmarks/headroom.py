"""Where is the compression the default search leaves?  Two probes on one image at one ε.

    python benchmarks/headroom.py [--images rocket coffee] [--eps 0.1]

1. More search: the default GA with seeds 0, 1, 2, and a 4× larger search (population 96, 120
   generations, stall 30, padding up to 50 %, up to 16 modes); CR of each.
2. The error budget's split across the cuts: on the default search's best shape, every weight
   vector w ∈ {¼, ½, 1, 2, 4}^(d−1) with δ_k² = (ε²‖A‖² − spent)·w_k / Σ_{j≥k} w_j (still
   Σδ_k² ≤ ε²‖A‖²) against the even split; the best CR gain.
Searches run in this process (one core); CR only, no timings.  Rows go to
results/headroom.jsonl, the table to headroom.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import skimage.data
from _report import RESULTS, append_row, load_rows, machine, main_with_report, table

from shapesearch.engine.executors import LocalExecutor
from shapesearch.engine.search import SearchConfig, run_search
from shapesearch.engine.tt_svd import _decompose, _truncate, truncation_rank

JSONL = RESULTS / "headroom.jsonl"
MARKDOWN = Path(__file__).parent / "headroom.md"
LARGER = {"population": 96, "generations": 120, "stall": 30, "max_pad": 0.5, "max_order": 16}
WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)


def weighted_sweep(data: np.ndarray, budget: float, w) -> int:
    """TT parameters of the left-to-right float32 Gram sweep with the weighted budget split."""
    d, spent, params = data.ndim, 0.0, 0
    carry, r_prev = data, 1
    for k in range(d - 1):
        mat = carry.reshape(r_prev * data.shape[k], -1)
        dec = _decompose(mat, "gram")
        delta2 = (budget - spent) * w[k] / sum(w[k:d - 1])
        r, tail = truncation_rank(dec[1], max(delta2, 0.0), dec[2])
        _, carry = _truncate(mat, dec, r)
        spent += tail
        params += r_prev * data.shape[k] * r
        r_prev = r
    return params + r_prev * data.shape[-1]


def run_image(name: str, eps: float) -> dict:
    img = getattr(skimage.data, name)().astype(np.float64) / 255
    norm = float(np.linalg.norm(img))
    ex = LocalExecutor(img, norm)
    searches = {}
    for label, kw in [("default, seed 0", {}), ("default, seed 1", {"seed": 1}), ("default, seed 2", {"seed": 2}),
                      ("4× larger search", LARGER)]:
        found = run_search(img, SearchConfig(eps=eps, **kw), ex)
        searches[label] = {"cr": found.cr, "evaluations": found.evaluations, "shape": found.shape.describe()}
        if label == "default, seed 0":
            best = found.shape
    data = best.apply(img.astype(np.float32))
    if best.reverse_sweep:
        data = data.transpose(tuple(range(data.ndim))[::-1])
    budget = (eps * norm) ** 2
    even = weighted_sweep(data, budget, [1.0] * (data.ndim - 1))
    split = min(weighted_sweep(data, budget, list(w)) for w in itertools.product(WEIGHTS, repeat=data.ndim - 1))
    return {"image": name, "eps": eps, "searches": searches, "best_shape": best.describe(),
            "split_even_params": even, "split_best_params": split, "split_gain": even / split, "machine": machine()}


def run(args) -> None:
    for name in args.images:
        row = run_image(name, args.eps)
        append_row(JSONL, row)
        print(json.dumps(row), flush=True)


def report() -> str:
    rows = {(r["image"], r["eps"]): r for r in load_rows(JSONL)}
    body = []
    for r in rows.values():
        base = r["searches"]["default, seed 0"]["cr"]
        for label, s in r["searches"].items():
            body.append([r["image"], r["eps"], label, s["cr"], s["cr"] / base, s["evaluations"], s["shape"]])
        body.append([r["image"], r["eps"], f"best budget split on {r['best_shape']}", "", r["split_gain"], "", ""])
    return "\n".join(["# Headroom of the default search", "",
                      "Printed by `benchmarks/headroom.py` (rows in `results/headroom.jsonl`): more search, and the "
                      "best split of the error budget across the cuts of the default's best shape (brute force over "
                      f"{len(WEIGHTS)} weights per cut). CR gain against the default search with seed 0.", "",
                      table(["image", "ε", "probe", "CR", "gain", "evaluations", "shape"], body), ""])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", nargs="+", default=["rocket", "coffee"])
    p.add_argument("--eps", type=float, default=0.1)
    main_with_report(p, run, report, MARKDOWN)
