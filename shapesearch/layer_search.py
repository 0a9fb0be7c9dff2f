"""Per-layer TT shapes for the weight matrices of a model.

Each weight is searched by the same GA as an image (``run_search`` with the ``ttm``/``tt``
layout, no padding, seeded with the balanced shape), in-process inside one Ray task per
(layer, ε): layers are independent, so this scales to as many workers as the cluster has.
The balanced shape is TT-SVD'd in float64 at the same ε with the same rank rule, so
``balanced_params`` differs from ``params`` only by the shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from .errors import UsageError
from .evaluation import EvalSettings, confirm
from .executors import LocalExecutor
from .matrix_shapes import FORMATS, balanced_shape, matrix_tensor, modes_of
from .search import SearchConfig, run_search


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


def _measured(tensor: np.ndarray, norm: float, shape, eps: float) -> dict:
    rec = confirm(tensor, norm, (shape.key, EvalSettings(eps).to_dict()))
    rec.pop("cores")
    return rec


def search_matrix(weight: np.ndarray, eps: float, fmt: str = "ttm",
                  config: LayerSearchConfig = LayerSearchConfig()) -> dict:
    """Fewest-parameter TT shape of ``weight`` [out, in] with relative Frobenius error ≤ ``eps``.

    Returns a JSON-ready record: modes, sweep, ranks, parameters, measured error, and the
    balanced shape's parameters and error at the same ε (never fewer: it seeds the search)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    start = time.perf_counter()
    tensor = np.ascontiguousarray(matrix_tensor(np.asarray(weight, dtype=np.float64), fmt))
    norm = float(np.linalg.norm(tensor))
    out_features, in_features = weight.shape
    balanced = balanced_shape(out_features, in_features, fmt, config.balanced_order)
    bal = _measured(tensor, norm, balanced, eps)
    result = run_search(tensor.astype(np.float32), config.search_config(eps, fmt), LocalExecutor(tensor, norm),
                        references={"balanced": balanced})
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


def _search_task(weight: np.ndarray, eps: float, fmt: str, config: dict) -> dict:
    from .executors import limit_threads

    limit_threads()
    return search_matrix(weight, eps, fmt, LayerSearchConfig(**config))


def search_layers(weights: dict[str, np.ndarray], eps_values: list[float], fmt: str = "ttm",
                  config: LayerSearchConfig = LayerSearchConfig(), workers: int | None = None,
                  address: str | None = None,
                  progress: Callable[[], None] | None = None) -> dict[str, dict[float, dict]]:
    """``search_matrix`` for every (layer, ε), one Ray task each (``workers=0``: in process).

    Returns {layer name: {ε: record}}.  Tasks are submitted largest layer first."""
    jobs = sorted(((name, eps) for name in weights for eps in eps_values),
                  key=lambda j: -weights[j[0]].size)
    out: dict[str, dict[float, dict]] = {name: {} for name in weights}
    if workers == 0:
        for name, eps in jobs:
            out[name][eps] = search_matrix(weights[name], eps, fmt, config)
            if progress:
                progress()
        return out
    import ray

    from .executors import start_ray

    start_ray(address, workers)
    task = ray.remote(num_cpus=1, max_retries=3)(_search_task)
    refs = {}
    stored = {name: ray.put(np.ascontiguousarray(w)) for name, w in weights.items()}  # shared by its ε tasks
    for name, eps in jobs:
        refs[task.remote(stored[name], eps, fmt, asdict(config))] = (name, eps)
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        name, eps = refs[done[0]]
        out[name][eps] = ray.get(done[0])
        if progress:
            progress()
    return out


def make_plan(found: dict[str, dict[float, dict]], norms2: dict[str, float], budget: int | None,
              seed: int = 0) -> dict:
    """One record per layer: at the single ε searched, or, with ``budget`` (TT parameters
    over all listed layers), the per-layer ε that fits it with the least total error energy
    Σ ε_l²‖W_l‖²_F (a DEAP GA over the choices, seeded greedily)."""
    names = list(found)
    if budget is None:
        layers = {n: next(iter(found[n].values())) for n in names}
    else:
        from .budget import allocate

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
