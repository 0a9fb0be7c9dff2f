"""Perplexity against parameters over a grid of budgets: the front a user picks a model from.

Every (method, budget) point is one Ray task (``workers=0``: in this process) that loads the
model, compresses a copy and measures perplexity on held-out text.  TT / Saten points are
activation-aware with a sensitivity budget: their shapes are searched once, here, for every
budget, and each task rebuilds its plan's layers on the same calibration windows.  A point is
on the front when no other point has both fewer parameters and a lower perplexity.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from shapesearch.engine.executors import limit_threads, start_ray
from shapesearch.errors import ArgumentError, ShapesearchError
from shapesearch.paths import check_outside, check_writable_dir

from .architectures import check_decoder, decoder_linear_params, decoder_weight_params, total_params
from .compress import compress
from .corpus import read_text, wikipedia
from .flat_llm import FlatLLMConfig
from .layer_plans import search_options
from .lm_metrics import perplexity
from .low_rank import SVDLLMConfig
from .model_jobs import model_calibration
from .model_loading import skeleton
from .tt_compress import SatenConfig, TTConfig

FRONT_METHODS = ("flat-llm", "svd-llm", "tt", "saten")
EPS_GRID = (0.04, 0.06, 0.08, 0.12, 0.16, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6)  # activation-relative ε per layer
DENSITY = 0.05  # a Saten point's residual: this fraction of each layer's entries
FRONT_FILE, TABLE_FILE, PLOT_FILE = "front.json", "front.md", "front.png"


def model_front(model: str, budgets: Sequence[float], out: str | Path, methods: Sequence[str] = FRONT_METHODS, *,
                text: str | Path | None = None, calib: str | Path | None = None, samples: int = 32,
                seqlen: int = 512, seed: int = 0, windows: int = 10, eps_grid: Sequence[float] = EPS_GRID,
                workers: int | None = None, address: str | None = None, overwrite: bool = False) -> list[dict]:
    """Rows {method, budget, perplexity, params, decoder_fraction, seconds, front} (or
    {method, budget, error} for a point the method cannot make, e.g. a budget its rounding
    misses) for every method at every budget (the fraction of the decoder-linear parameters kept), written to
    ``out`` as front.json, a markdown table and a plot of perplexity against whole-model
    parameters.  ``text``: held-out text (default: the Wikipedia evaluation split), ``windows``
    windows of 512 tokens; calibration as for ``compress``."""
    budgets = sorted(set(budgets), reverse=True)
    if not budgets or not all(0.0 < b < 1.0 for b in budgets):
        raise ArgumentError("budgets", f"must be fractions in (0, 1) of the decoder-linear parameters kept, got "
                                       f"{list(budgets)}")
    unknown = sorted(set(methods) - set(FRONT_METHODS))
    if unknown or not methods:
        raise ArgumentError("methods", f"must be some of {', '.join(FRONT_METHODS)}, got {list(methods)}")
    if "saten" in methods and min(budgets) <= DENSITY:
        raise ArgumentError("budgets", f"must be above {DENSITY:g} for saten (its residual alone keeps that much)")
    if windows < 1:
        raise ArgumentError("windows", f"must be >= 1 (perplexity windows of 512 tokens), got {windows}")
    out = Path(out)
    check_outside(out, model)
    check_writable_dir(out, "out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ArgumentError("out", f"{out} is not empty; pick another directory or overwrite it")
    held_out = read_text(text, "evaluation", "text") if text is not None else wikipedia("evaluation")
    shape = skeleton(model)  # a model with no LM head has no perplexity: refused before any work
    if shape is not None:
        check_decoder(shape)
    import ray  # the points and the search run on it; a Ray this call starts is shut down at its end

    running = ray.is_initialized()
    try:
        return _front(model, budgets, out, methods, held_out, calib, samples, seqlen, seed, windows, eps_grid,
                      workers, address)
    finally:
        if not running and ray.is_initialized():
            ray.shutdown()


def _front(model: str, budgets: list[float], out: Path, methods: Sequence[str], held_out: str,
           calib: str | Path | None, samples: int, seqlen: int, seed: int, windows: int,
           eps_grid: Sequence[float], workers: int | None, address: str | None) -> list[dict]:
    net, _, calibration, _ = model_calibration(model, calib, samples, seqlen, seed)
    plans: dict[tuple[str, float], dict | None] = {}
    if {"tt", "saten"} & set(methods):
        options = search_options(net, eps_grid, calibration=calibration, sensitivity=True, workers=workers,
                                 address=address, model_name=model)
        for b in budgets:
            if "tt" in methods:
                plans["tt", b] = options.plan(b, sensitivity=True).to_dict()
            if "saten" in methods:
                plans["saten", b] = options.plan(b - DENSITY, sensitivity=True).to_dict()
    points = [(m, b, plans.get((m, b))) for b in budgets for m in methods]
    args = dict(model=model, calib=calib, samples=samples, seqlen=seqlen, seed=seed, text=held_out, windows=windows)
    if workers == 0:
        rows = [front_point(m, b, p, **args) for m, b, p in points]
    else:
        import ray

        start_ray(address, workers)
        task = ray.remote(num_cpus=1, max_retries=1)(_front_task)
        rows = ray.get([task.remote(m, b, p, args) for m, b, p in points])
    if all("error" in r for r in rows):
        raise ShapesearchError(f"no point of the front could be made ({rows[0]['method']} @ {rows[0]['budget']:g}: "
                               f"{rows[0]['error']}); give other budgets or methods")
    mark_front(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / FRONT_FILE).write_text(json.dumps(rows, indent=1) + "\n")
    (out / TABLE_FILE).write_text(front_table(rows) + "\n")
    plot_front(rows, out / PLOT_FILE, model)
    return rows


def _front_task(method: str, budget: float, plan: dict | None, args: dict) -> dict:
    limit_threads()
    return front_point(method, budget, plan, **args)


def front_point(method: str, budget: float, plan: dict | None, *, model: str, calib: str | Path | None,
                samples: int, seqlen: int, seed: int, text: str, windows: int) -> dict:
    """One point: ``model`` compressed by ``method`` to keep ``budget`` of its decoder linears."""
    net, tok, calibration, _ = model_calibration(model, calib, samples, seqlen, seed)
    dense = decoder_linear_params(net)
    start = time.perf_counter()
    try:
        compress(net, _config(method, budget, plan), calibration=calibration)
    except ShapesearchError as exc:  # e.g. a budget this method cannot meet on this model: the other points stand
        return {"method": method, "budget": budget, "error": str(exc)}
    seconds = time.perf_counter() - start
    measured = perplexity(net, tok, text, 512, windows)  # as many windows as the text holds, up to ``windows``
    return {"method": method, "budget": budget, "perplexity": measured["perplexity"], "windows": measured["windows"],
            "params": total_params(net), "decoder_fraction": decoder_weight_params(net) / dense, "seconds": seconds}


def _config(method: str, budget: float, plan: dict | None) -> object:
    if method == "flat-llm":
        return FlatLLMConfig(1 - budget)
    if method == "svd-llm":
        return SVDLLMConfig(1 - budget)
    if method == "tt":
        return TTConfig(plan)
    return SatenConfig(plan, density=DENSITY)


def mark_front(rows: list[dict]) -> None:
    """``front``: no other row has at most its parameters and perplexity, one of them lower
    (a point that could not be made, with its ``error``, is never on it)."""
    made = [r for r in rows if "error" not in r]
    for r in rows:
        r["front"] = "error" not in r and not any(
            o is not r and o["params"] <= r["params"] and o["perplexity"] <= r["perplexity"]
            and (o["params"], o["perplexity"]) != (r["params"], r["perplexity"]) for o in made)


def front_table(rows: list[dict]) -> str:
    lines = ["| method | budget | decoder linears kept | whole-model parameters | perplexity | front |",
             "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (-r["budget"], r.get("perplexity", float("inf")))):
        if "error" in r:
            lines.append(f"| {r['method']} | {r['budget']:g} | not made: {r['error']} | | | |")
            continue
        lines.append(f"| {r['method']} | {r['budget']:g} | {r['decoder_fraction']:.3f} | {r['params']:,} | "
                     f"{r['perplexity']:.2f} | {'yes' if r['front'] else ''} |")
    return "\n".join(lines)


def plot_front(rows: list[dict], path: Path, title: str) -> None:
    """Perplexity (log) against whole-model parameters, one colour per method, the front filled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method and "error" not in r), key=lambda r: r["params"])
        line, = ax.plot([r["params"] / 1e6 for r in mine], [r["perplexity"] for r in mine], "-", label=method)
        for r in mine:
            ax.plot(r["params"] / 1e6, r["perplexity"], "o", color=line.get_color(),
                    fillstyle="full" if r["front"] else "none")
    ax.set_yscale("log")
    ax.set_xlabel("whole-model parameters (M)")
    ax.set_ylabel("perplexity")
    ax.set_title(f"{title} (filled: on the front)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

