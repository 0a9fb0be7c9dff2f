"""Searched vs balanced TT shapes at the same ε for every attention/MLP linear of a model.

    python benchmarks/layer_shapes.py [--model smollm2] [--format ttm] [--eps 0.2 0.3 ... 0.9]

Every layer is searched at every ε with the product defaults (``shapesearch layers``: one
Ray task per layer, 2 workers); the balanced shape (the Saten code's rule) is TT-SVD'd at the
same ε with the same rank rule.  One row per (layer, ε) goes to
results/layer_shapes-<model>-<format>.jsonl — the Saten and MiniLM benchmarks build their
budget plans from these rows — and the per-layer-type table to layer_shapes.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _report import RESULTS, append_row, load_rows, machine, table
from tqdm import tqdm

from compressors import load_model
from compressors.targets import layer_type, target_linears
from shapesearch.matrix import LayerPlan
from shapesearch.matrix.layer_search import LayerSearchConfig, search_layers

MARKDOWN = Path(__file__).parent / "layer_shapes.md"
GRID = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def jsonl(model: str, fmt: str) -> Path:
    return RESULTS / f"layer_shapes-{model}-{fmt}.jsonl"


def found_layers(model: str, fmt: str) -> dict[str, dict[float, LayerPlan]]:
    """{layer: {ε: layer plan}} from the committed rows."""
    out: dict[str, dict[float, LayerPlan]] = {}
    for r in load_rows(jsonl(model, fmt)):
        out.setdefault(r["layer"], {})[r["eps"]] = LayerPlan.from_dict(r, r["layer"])
    return out


def run(model_name: str, fmt: str, grid: list[float], workers: int) -> float:
    path = jsonl(model_name, fmt)
    model, _ = load_model(model_name, tokenizer=False)
    done = found_layers(model_name, fmt)
    weights = {n: m.weight.detach().float().numpy() for n, m in target_linears(model).items()
               if not set(grid) <= set(done.get(n, {}))}
    if not weights:
        return 0.0
    start = time.perf_counter()
    with tqdm(total=len(weights) * len(grid), desc=f"{model_name} {fmt}", unit="search", file=sys.stderr) as bar:
        found = search_layers(weights, grid, fmt, LayerSearchConfig(), workers=workers, progress=bar.update)
    wall = time.perf_counter() - start
    for name, by_eps in found.items():
        for rec in by_eps.values():
            append_row(path, {"model": model_name, "layer": name, "type": layer_type(name), **rec.to_dict(),
                              "machine": machine()})
    return wall


def report_markdown(models: list[str], formats: list[str], wall: dict) -> str:
    parts = ["# Searched vs balanced TT shapes per layer", "",
             "Printed by `benchmarks/layer_shapes.py` (rows in `results/layer_shapes-*.jsonl`). Every "
             "attention and MLP linear is searched at each ε with the `shapesearch layers` defaults "
             "(GA population 16, ≤ 20 generations, stall 8, surrogate seeds, balanced seed); the "
             "balanced shape (smallest factor sum, two factors per side, the Saten code's rule) is "
             "decomposed at the same ε with the same TT-SVD. Parameters are summed over all layers of a "
             "type; errors are measured in float64 (relative Frobenius). `ttm` = TT-matrix cores "
             "[r, m, n, r']; `tt` = the Saten code's TT of Wᵀ (input modes, then output modes).", ""]
    for model in models:
        for fmt in formats:
            rows = load_rows(jsonl(model, fmt))
            if not rows:
                continue
            parts += [f"## {model}, format {fmt}", ""]
            if (model, fmt) in wall:
                parts += [f"Search wall time of this run: {wall[model, fmt]:.0f} s on {rows[0]['machine']}.", ""]
            body = []
            for eps in sorted({r["eps"] for r in rows}):
                for t in dict.fromkeys(r["type"] for r in rows):
                    sel = [r for r in rows if r["eps"] == eps and r["type"] == t]
                    d, p, b = (sum(r[k] for r in sel) for k in ("dense_params", "params", "balanced_params"))
                    fewer = sum(r["params"] < r["balanced_params"] for r in sel)
                    more = sum(r["params"] > r["balanced_params"] for r in sel)
                    body.append([eps, t, len(sel), d, p, b, p / b, f"{fewer}/{more}",
                                 max(r["rel_error"] for r in sel), max(r["balanced"]["rel_error"] for r in sel),
                                 _common(sel)])
            parts += [table(["ε", "layer type", "layers", "dense", "searched", "balanced", "searched / balanced",
                             "layers fewer / more", "max error searched", "max error balanced",
                             "most common searched shape (out | in)"], body), ""]
    return "\n".join(parts)


def _common(rows: list[dict]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        key = f"{'·'.join(map(str, r['out_modes']))} | {'·'.join(map(str, r['in_modes']))}"
        counts[key] = counts.get(key, 0) + 1
    key, n = max(counts.items(), key=lambda kv: kv[1])
    return f"{key} ({n}×)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", nargs="+", default=["smollm2"])
    p.add_argument("--format", nargs="+", default=["ttm"], choices=["ttm", "tt"])
    p.add_argument("--eps", nargs="+", type=float, default=GRID)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    wall = {}
    for model in args.model:
        for fmt in args.format:
            seconds = run(model, fmt, args.eps, args.workers)
            if seconds:
                wall[model, fmt] = seconds
    text = report_markdown(["smollm2", "minilm"], ["ttm", "tt"], wall)
    MARKDOWN.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
