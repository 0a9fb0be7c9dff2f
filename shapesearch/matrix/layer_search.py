"""Per-layer TT shapes for the weight matrices of a model.

Each weight is searched by the same GA as an image (``run_search`` with the ``ttm``/``tt``
layout, no padding, seeded with the balanced shape), in-process inside one Ray task per
layer (all its ε share the unfolding spectra): layers are independent, so this scales to as
many workers as the cluster has.
The balanced shape is TT-SVD'd in float64 at the same ε with the same rank rule, so
``balanced_params`` differs from ``params`` only by the shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from ..engine.executors import LocalExecutor
from ..engine.fitness import EvalSettings, confirm
from ..engine.search import SearchConfig, run_search
from ..errors import ArgumentError
from .budget import allocate
from .formats import FORMATS, balanced_shape, matrix_tensor, modes_of


@dataclass(frozen=True)
class LayerSearchConfig:
    """GA settings per layer (smaller than for images: a model has hundreds of layers)."""

    population: int = 16
    generations: int = 20
    stall: int = 8
    polish_rounds: int = 3
    max_order: int = 8
    balanced_order: int = 2
    seed: int = 0

    def search_config(self, eps: float, fmt: str) -> SearchConfig:
        return SearchConfig(eps=eps, population=self.population, generations=self.generations, stall=self.stall,
                            seed=self.seed, max_pad=0.0, max_order=self.max_order, layout=fmt,
                            polish_rounds=self.polish_rounds, surrogate=fmt == "ttm", confirm_top=3)


def search_matrix(weight: np.ndarray, eps: float | list[float], fmt: str = "ttm",
                  config: LayerSearchConfig = LayerSearchConfig()) -> dict:
    """Fewest-parameter TT shape of ``weight`` [out, in] with relative Frobenius error ≤ ``eps``.

    Returns a JSON-ready record: modes, sweep, ranks, parameters, measured error, and the
    balanced shape's parameters and error at the same ε (never fewer: it seeds the search).
    With a list of ε, returns {ε: record}; the unfolding spectra are computed once for all."""
    if fmt not in FORMATS:
        raise ArgumentError("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    tensor = np.ascontiguousarray(matrix_tensor(np.asarray(weight, dtype=np.float64), fmt))
    fast = LocalExecutor(tensor.astype(np.float32), float(np.linalg.norm(tensor)))
    out = {e: _search_one(tensor, fast, e, fmt, config) for e in (eps if isinstance(eps, list) else [eps])}
    return out if isinstance(eps, list) else out[eps]


def _measured(tensor: np.ndarray, norm: float, shape, eps: float) -> dict:
    rec = confirm(tensor, norm, (shape.key, EvalSettings(eps).to_dict()))
    rec.pop("cores")
    return rec


def _search_one(tensor: np.ndarray, fast: LocalExecutor, eps: float, fmt: str, config: LayerSearchConfig) -> dict:
    start = time.perf_counter()
    norm = fast.norm
    out_features, in_features = tensor.shape if fmt == "ttm" else tensor.shape[::-1]
    balanced = balanced_shape(out_features, in_features, fmt, config.balanced_order)
    bal = _measured(tensor, norm, balanced, eps)
    result = run_search(fast.tensor, config.search_config(eps, fmt), fast, references={"balanced": balanced})
    best = {"shape": result.shape, "params": result.params, "ranks": list(result.ranks),
            "rel_error": result.rel_error}
    if bal["params"] < best["params"] or not result.rel_error <= eps:
        best = {"shape": balanced, "params": bal["params"], "ranks": bal["ranks"], "rel_error": bal["rel_error"]}
    out_modes, in_modes = modes_of(best["shape"], fmt)
    b_out, b_in = modes_of(balanced, fmt)
    return {
        "format": fmt, "eps": eps, "out_features": out_features, "in_features": in_features,
        "out_modes": list(out_modes), "in_modes": list(in_modes), "reverse_sweep": best["shape"].reverse_sweep,
        "ranks": best["ranks"], "params": int(best["params"]), "dense_params": out_features * in_features,
        "rel_error": float(best["rel_error"]),
        "balanced": {"out_modes": list(b_out), "in_modes": list(b_in), "ranks": bal["ranks"],
                     "params": int(bal["params"]), "rel_error": float(bal["rel_error"])},
        "balanced_params": int(bal["params"]),
        "evaluations": result.evaluations, "seconds": time.perf_counter() - start,
    }


def _search_task(weight: np.ndarray, eps_values: list[float], fmt: str, config: dict) -> dict:
    from ..engine.executors import limit_threads

    limit_threads()
    return search_matrix(weight, list(eps_values), fmt, LayerSearchConfig(**config))


def search_layers(weights: dict[str, np.ndarray], eps_values: list[float], fmt: str = "ttm",
                  config: LayerSearchConfig = LayerSearchConfig(), workers: int | None = None,
                  address: str | None = None,
                  progress: Callable[[int], None] | None = None) -> dict[str, dict[float, dict]]:
    """``search_matrix`` of every layer at every ε, one Ray task per layer (``workers=0``: in
    process), largest layer first.  Returns {layer name: {ε: record}}; ``progress(n)`` gets
    the number of (layer, ε) searches just finished."""
    eps_values = list(eps_values)
    names = sorted(weights, key=lambda n: -weights[n].size)
    if workers == 0:
        out = {}
        for name in names:
            out[name] = search_matrix(weights[name], eps_values, fmt, config)
            if progress:
                progress(len(eps_values))
        return {n: out[n] for n in weights}
    import ray

    from ..engine.executors import start_ray

    start_ray(address, workers)
    task = ray.remote(num_cpus=1, max_retries=3)(_search_task)
    refs = {task.remote(np.ascontiguousarray(weights[n]), eps_values, fmt, asdict(config)): n for n in names}
    out, pending = {}, list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        out[refs[done[0]]] = ray.get(done[0])
        if progress:
            progress(len(eps_values))
    return {n: out[n] for n in weights}


def make_plan(found: dict[str, dict[float, dict]], norms2: dict[str, float], budget: int | None,
              seed: int = 0) -> dict:
    """One record per layer: at the single ε searched, or, with ``budget`` (TT parameters
    over all listed layers), the per-layer ε that fits it with the least total error energy
    Σ ε_l²‖W_l‖²_F (a DEAP GA over the choices, seeded greedily)."""
    names = list(found)
    if budget is None:
        layers = {n: next(iter(found[n].values())) for n in names}
    else:
        options = [[(rec["params"], rec["rel_error"] ** 2 * norms2[n]) for rec in found[n].values()]
                   for n in names]
        choice = allocate(options, budget, seed)
        layers = {n: list(found[n].values())[c] for n, c in zip(names, choice)}
    params = sum(r["params"] for r in layers.values())
    dense = sum(r["dense_params"] for r in layers.values())
    balanced = sum(r["balanced_params"] for r in layers.values())
    energy = sum(r["rel_error"] ** 2 * norms2[n] for n, r in layers.items())
    return {
        "layers": layers,
        "summary": {"layers": len(layers), "dense_params": dense, "params": params, "balanced_params": balanced,
                    "compression": dense / params if params else float("inf"),
                    "budget": budget, "fits_budget": budget is None or params <= budget,
                    "rel_error_all": float(np.sqrt(energy / sum(norms2[n] for n in layers)))},
    }
