"""The warm-started layer search against the full one: SmolLM2's whole plan at one ε.

    python benchmarks/layer_search_speed.py [--eps 0.5] [--workers 2]

Every attention/MLP linear of SmolLM2-135M is searched with the `shapesearch layers` defaults
(one Ray task per layer, 2 workers): the leaders of each matrix size (first and last in model
order) get the full search, every other layer a warm start from them.  Measured in this run:
the wall time of the whole plan, its TT parameters against the committed full-search rows
of `layer_shapes.py` (`results/layer_shapes-smollm2-ttm.jsonl`, every layer fully searched,
the same ε and seed), and per matrix size the seconds and evaluations of a full search (the
leaders) and of a warm start (the followers).  The full plan's time is estimated from the
leaders' seconds as Σ over layers / workers.  A 7B estimate extrapolates the per-layer
seconds with a power law in m·n·min(m, n) (the flops of a Gram matrix, what one evaluation
costs) fitted to these sizes.

Targets (issue 14): the plan in ≤ 300 s, parameters within 2 % of the full search's.
Rows go to results/layer_search_speed.jsonl; the latest run's table to layer_search_speed.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _report import RESULTS, append_row, load_rows, machine, main_with_report, table
from layer_shapes import found_layers

from compressors import load_model
from compressors.layer_plans import searched_weight
from compressors.targets import target_linears
from shapesearch.matrix.layer_search import LayerSearchConfig, leaders, search_layers

JSONL = RESULTS / "layer_search_speed.jsonl"
MARKDOWN = Path(__file__).parent / "layer_search_speed.md"
TARGET_SECONDS, TARGET_RATIO = 300.0, 1.02
# Llama-2-7B's linears per block (out × in) and blocks; a "node" is assumed to run 32 workers
LLAMA_7B = {(4096, 4096): 4, (11008, 4096): 2, (4096, 11008): 1}
LLAMA_7B_BLOCKS, NODES, WORKERS_PER_NODE = 32, 16, 32


def run(args) -> None:
    model, _ = load_model("smollm2", tokenizer=False)
    weights = {n: searched_weight(model.get_submodule(n)) for n in target_linears(model)}
    committed = found_layers("smollm2", "ttm")
    config = LayerSearchConfig()
    lead = set(leaders(weights, config.leaders))
    for eps in args.eps:
        start = time.perf_counter()
        found = search_layers(weights, [eps], "ttm", config, workers=args.workers)
        wall = time.perf_counter() - start
        sizes = []
        for shape in dict.fromkeys(w.shape for w in weights.values()):
            names = [n for n in weights if weights[n].shape == shape]
            full = [found[n][eps] for n in names if n in lead]
            warm = [found[n][eps] for n in names if n not in lead]
            sizes.append({"shape": list(shape), "layers": len(names), "leaders": len(full),
                          "full_seconds": float(np.mean([p.seconds for p in full])),
                          "full_evaluations": float(np.mean([p.evaluations for p in full])),
                          "warm_seconds": float(np.mean([p.seconds for p in warm])) if warm else None,
                          "warm_evaluations": float(np.mean([p.evaluations for p in warm])) if warm else None})
        full_estimate = sum(s["full_seconds"] * s["layers"] for s in sizes) / args.workers
        params = sum(found[n][eps].params for n in weights)
        reference = sum(committed[n][eps].params for n in weights)
        worse = sum(found[n][eps].params > committed[n][eps].params for n in weights)
        row = {"run": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(), "eps": eps, "workers": args.workers,
               "layers": len(weights), "wall_seconds": wall, "full_estimate_seconds": full_estimate,
               "params": params, "full_params": reference, "ratio": params / reference, "layers_worse": worse,
               "sizes": sizes}
        append_row(JSONL, row)
        print(f"ε = {eps}: {wall:.0f} s (full search estimated {full_estimate:.0f} s), params {params} vs "
              f"{reference} ({row['ratio']:.4f}×)", flush=True)


def _flops(out_features: int, in_features: int) -> float:
    return float(out_features * in_features * min(out_features, in_features))


def _fit(sizes: list[dict], key: str) -> tuple[float, float]:
    """(a, b) of seconds ≈ a · (m·n·min(m, n))^b over the sizes that have ``key``."""
    pts = [(_flops(*s["shape"]), s[key]) for s in sizes if s[key]]
    b, log_a = np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)
    return float(np.exp(log_a)), float(b)


def report() -> str:
    rows = load_rows(JSONL)
    if not rows:
        return "# Layer search speed\n\nNo run yet: `python benchmarks/layer_search_speed.py`."
    last = rows[-1]["run"][:13]
    mine = [r for r in rows if r["run"][:13] == last]
    body = [[r["eps"], r["layers"], r["wall_seconds"], r["full_estimate_seconds"],
             r["full_estimate_seconds"] / r["wall_seconds"], r["params"], r["full_params"], f"{r['ratio']:.4f}",
             r["layers_worse"], "yes" if r["wall_seconds"] <= TARGET_SECONDS and r["ratio"] <= TARGET_RATIO
             else "**NO**"] for r in mine]
    sizes = [[r["eps"], "×".join(map(str, s["shape"])), s["layers"], s["leaders"], s["full_seconds"],
              s["full_evaluations"], s["warm_seconds"] or "—", s["warm_evaluations"] or "—"]
             for r in mine for s in r["sizes"]]
    a, b = _fit(mine[0]["sizes"], "warm_seconds")
    fa, fb = _fit(mine[0]["sizes"], "full_seconds")
    per_block = sum(n * a * _flops(o, i) ** b for (o, i), n in LLAMA_7B.items())
    leaders_7b = sum(min(2, LLAMA_7B_BLOCKS * n) * fa * _flops(o, i) ** fb for (o, i), n in LLAMA_7B.items())
    workers = NODES * WORKERS_PER_NODE
    # leaders first (all in parallel, the slowest bounds the wave), then the followers spread over every worker
    slowest_leader = max(fa * _flops(o, i) ** fb for (o, i) in LLAMA_7B)
    estimate = slowest_leader + LLAMA_7B_BLOCKS * per_block / workers
    return "\n".join([
        "# Warm-started layer search: SmolLM2's plan at one ε", "",
        f"Printed by `benchmarks/layer_search_speed.py` (rows in `results/layer_search_speed.jsonl`), run "
        f"{mine[0]['run']} on {mine[0]['machine']}, {mine[0]['workers']} Ray workers. Full search: the committed "
        "`layer_shapes.py` rows (every layer fully searched, same ε and seed); its time here is estimated from "
        "this run's leaders (mean seconds of a full search per size × layers / workers). Targets: ≤ "
        f"{TARGET_SECONDS:.0f} s and parameters ≤ {TARGET_RATIO}× the full search's.", "",
        table(["ε", "layers", "wall s", "full search s (estimated)", "speed-up", "TT params", "full-search params",
               "ratio", "layers with more params", "target met"], body), "",
        "Per matrix size (out × in): seconds and evaluations of one layer's search.", "",
        table(["ε", "size", "layers", "leaders", "full s", "full evaluations", "warm s", "warm evaluations"], sizes),
        "",
        f"Fit over these sizes, with F = m·n·min(m, n): warm start ≈ {a:.3g} · F^{b:.2f} s, full search ≈ "
        f"{fa:.3g} · F^{fb:.2f} s. Extrapolated to Llama-2-7B (32 blocks of 4 × 4096², 2 × 11008×4096, "
        f"1 × 4096×11008; 2 leaders per size) on {NODES} nodes × {WORKERS_PER_NODE} workers: the slowest leader "
        f"{slowest_leader / 60:.0f} min, then the followers {LLAMA_7B_BLOCKS * per_block / workers / 60:.0f} min, "
        f"about **{estimate / 3600:.1f} h** (leaders' total {leaders_7b / 3600:.1f} CPU-h). An extrapolation "
        "from matrices up to 0.9 M entries to 45 M (F 300× beyond the largest measured), not a measurement.", ""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--eps", nargs="+", type=float, default=[0.5])
    p.add_argument("--workers", type=int, default=2)
    main_with_report(p, run, report, MARKDOWN)


if __name__ == "__main__":
    main()
