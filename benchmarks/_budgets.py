"""Shared by the Saten and MiniLM benchmarks: TT-only, Saten (top-K and 2:4) and plain SVD
built to one parameter budget over the replaced linears.

Budget B = fraction × dense parameters of the replaced linears (weights + biases).
- TT only: per-layer ε from the searched grid so that Σ TT params ≤ B (least error energy);
- Saten top-K at density s: the TT part gets B − s·dense, the residual s·dense;
- Saten 2:4: the TT part gets B − dense/2 (2:4 keeps exactly half of every layer);
- SVD: one ρ for all layers, ranks ⌊mn(1 − ρ)/(m + n)⌋, Σ params ≤ B.
Every method's real parameter count is reported next to its score.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _report import append_row, load_rows, machine

import compressors
from compressors.low_rank import factorize, ranks_for_linears
from compressors.targets import target_linears
from shapesearch.errors import ShapesearchError
from shapesearch.matrix.layer_search import make_plan


def build(dense: torch.nn.Module, method: str, fraction: float, found: dict, fmt: str,
          density: float) -> tuple[torch.nn.Module, dict]:
    """A compressed copy of ``dense`` and its accounting, for method in
    tt / saten / saten-2:4 / svd."""
    model = copy.deepcopy(dense)
    linears = target_linears(model)
    weights = sum(m.weight.numel() for m in linears.values())
    biases = sum(m.bias.numel() for m in linears.values() if m.bias is not None)
    budget = int(fraction * (weights + biases))
    norms2 = {n: float(torch.sum(m.weight.double() ** 2)) for n, m in linears.items()}
    if method == "svd":
        ranks = ranks_for_linears(linears, budget)
        with torch.no_grad():
            for name, linear in linears.items():
                model.set_submodule(name, factorize(linear, ranks[name]))
        params = sum(p.numel() for m in (model.get_submodule(n) for n in linears) for p in m.parameters())
        return model, {"params": params, "budget": budget, "dense": weights + biases}
    residual = {"tt": 0.0, "saten": density, "saten-2:4": 0.5}[method]
    plan = make_plan(found, norms2, int(budget - biases - residual * weights))
    if method == "tt":
        config = compressors.TTConfig(plan=plan)
    elif method == "saten":
        config = compressors.SatenConfig(plan=plan, density=density)
    else:
        config = compressors.SatenConfig(plan=plan, nm=(2, 4))
    report = compressors.compress(model, config)
    eps = [r.eps for r in plan.layers.values()]
    return model, {"params": report["replaced_params_after"], "bytes": report["replaced_bytes_after"],
                   "dense_bytes": report["replaced_bytes_before"], "budget": budget, "dense": weights + biases,
                   "eps_mean": float(np.mean(eps)), "eps_min": min(eps), "eps_max": max(eps),
                   "model_ratio": report["model_ratio"]}


def run_grid(jsonl: Path, dense: torch.nn.Module, fractions: list[float], methods: list[str], found: dict,
             fmt: str, density: float, score: Callable[[torch.nn.Module], dict]) -> None:
    """Build and ``score`` every (method, fraction) not yet in ``jsonl``; one row each."""
    done = {(r["method"], r["fraction"]) for r in load_rows(jsonl)}
    for fraction in fractions:
        for method in methods:
            if (method, fraction) in done:
                continue
            print(f"  {method} @ {fraction} ...", file=sys.stderr, flush=True)
            try:
                model, acct = build(dense, method, fraction, found, fmt, density)
            except ShapesearchError as exc:  # a budget below a method's floor (2:4 keeps half of every layer)
                append_row(jsonl, {"method": method, "fraction": fraction, "error": str(exc), "machine": machine()})
                continue
            row = {"method": method, "fraction": fraction, "format": fmt,
                   "density": density if method == "saten" else None, **acct, **score(model)}
            append_row(jsonl, {**row, "machine": machine()})
            print(json.dumps(row), flush=True)
