"""``shapesearch layers``: a TT shape for every attention/MLP linear of a model, as a plan file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ShapesearchError


def add_parser(sub) -> None:
    lay = sub.add_parser("layers", help="search a TT shape for every attention/MLP linear of a model")
    lay.add_argument("--model", required=True, help="smollm2, minilm, a model directory, or a .gguf file")
    lay.add_argument("--eps", type=float, default=0.3,
                     help="relative Frobenius error bound per layer (default %(default)s)")
    lay.add_argument("--format", choices=["ttm", "tt"], default="ttm",
                     help="ttm: TT-matrix cores [r, m, n, r']; tt: the Saten code's TT of Wᵀ (default %(default)s)")
    lay.add_argument("--budget", type=float, default=None,
                     help="TT parameters for all searched layers together: a count (e.g. 20e6) or, below 1, "
                          "a fraction of their dense parameters; picks each layer's ε from --eps-grid")
    lay.add_argument("--eps-grid", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                     help="per-layer ε choices with --budget (default %(default)s)")
    lay.add_argument("--layers", default=None,
                     help="only layers whose name contains this text (e.g. 'layers.0.')")
    lay.add_argument("--generations", type=int, default=20, help="GA generations per layer (default %(default)s)")
    lay.add_argument("--population", type=int, default=16, help="GA population per layer (default %(default)s)")
    lay.add_argument("--seed", type=int, default=0)
    lay.add_argument("--workers", type=int, default=None,
                     help="Ray workers (default: one per CPU; 0 = in this process)")
    lay.add_argument("--address", default=None, help="join this Ray cluster (or set RAY_ADDRESS)")
    lay.add_argument("--out", type=Path, required=True, help="plan file to write (JSON)")
    lay.add_argument("--overwrite", action="store_true")
    lay.add_argument("--json", action="store_true")
    lay.set_defaults(run=layers_command)


def layers_command(args: argparse.Namespace) -> tuple[dict, str]:
    import numpy as np
    from tqdm import tqdm

    from compressors.model_loading import load_model
    from compressors.targets import layer_type, target_linears

    from ..matrix.layer_search import LayerSearchConfig, make_plan, search_layers

    grid = sorted(set(args.eps_grid)) if args.budget is not None else [args.eps]
    if not all(0.0 < e < 1.0 for e in grid):
        raise ShapesearchError(f"every ε must be in (0, 1) (relative Frobenius error), got {grid}")
    if args.budget is not None and args.budget <= 0:
        raise ShapesearchError(f"--budget must be a positive parameter count or fraction, got {args.budget:g}")
    if args.generations < 0 or args.population < 2:
        raise ShapesearchError("--generations must be >= 0 and --population >= 2")
    if args.out.exists() and not args.overwrite:
        raise ShapesearchError(f"{args.out} exists; choose another --out or pass --overwrite")
    if args.out.suffix != ".json":
        raise ShapesearchError(f"--out {args.out}: the plan is JSON; name it FILE.json")
    model, _ = load_model(args.model, tokenizer=False)
    linears = {n: m for n, m in target_linears(model).items() if args.layers is None or args.layers in n}
    if not linears:
        raise ShapesearchError(f"no layer name contains {args.layers!r}; drop --layers or check the names")
    weights = {n: m.weight.detach().float().numpy() for n, m in linears.items()}
    dense = sum(w.size for w in weights.values())
    budget = None if args.budget is None else int(args.budget * dense if args.budget < 1 else args.budget)
    config = LayerSearchConfig(population=args.population, generations=args.generations, seed=args.seed,
                               stall=min(LayerSearchConfig.stall, max(args.generations, 1)))
    with tqdm(total=len(weights) * len(grid), desc=f"layers {args.format}", unit="search", file=sys.stderr) as bar:
        found = search_layers(weights, grid, args.format, config, args.workers, args.address, bar.update)
    norms2 = {n: float(np.sum(w.astype(np.float64) ** 2)) for n, w in weights.items()}
    plan = make_plan(found, norms2, budget, args.seed)
    plan = {"model": args.model, "format": args.format, "eps": None if budget else args.eps,
            "eps_grid": grid if budget else None, **plan}
    for name, rec in plan["layers"].items():
        rec["type"] = layer_type(name)
        rec["bias"] = linears[name].bias is not None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(plan, indent=1) + "\n")
    return plan, _plan_table(plan, args.out)


def _plan_table(plan: dict, out: Path) -> str:
    by_type: dict[str, list[dict]] = {}
    for rec in plan["layers"].values():
        by_type.setdefault(rec["type"], []).append(rec)
    lines = ["| layer type | layers | dense | searched | balanced | searched/balanced | max error |",
             "|---|---|---|---|---|---|---|"]
    for t, recs in by_type.items():
        d, p, b = (sum(r[k] for r in recs) for k in ("dense_params", "params", "balanced_params"))
        lines.append(f"| {t} | {len(recs)} | {d:,} | {p:,} | {b:,} | {p / b:.3f} | "
                     f"{max(r['rel_error'] for r in recs):.4f} |")
    s = plan["summary"]
    budget = "" if s["budget"] is None else f" (budget {s['budget']:,}: {'fits' if s['fits_budget'] else 'MISSED'})"
    lines.append(f"\nTT parameters {s['params']:,} of {s['dense_params']:,} dense ({s['compression']:.2f}×), "
                 f"balanced shapes {s['balanced_params']:,}{budget}; plan written to {out}")
    return "\n".join(lines)


