"""Per-layer TT shapes for the weight matrices of a model.

Each weight is searched by the same GA as an image (``run_search`` with the ``ttm``/``tt``
layout, no padding, seeded with the balanced shape), in-process inside one Ray task per
layer (all its ε share the unfolding spectra): layers are independent, so this scales to as
many workers as the cluster has.
The balanced shape is TT-SVD'd in float64 at the same ε with the same rank rule, so
``balanced_params`` differs from ``params`` only by the shape.

A model repeats a few matrix sizes many times (every block's q_proj is 576 × 576), and
trained layers of one size favour the same shapes.  With ``warm_start`` only a few *leaders*
of each size get the full search (surrogate spectra, GA); every other layer starts from the
leaders' winners and its own balanced shape, fills a small population with their one-to-
three-move variants, and polishes by steepest descent: about a seventh of the evaluations
and no spectra (``benchmarks/layer_search_speed.md``).

With ``whole_input`` every input digit stays in one core (``ShapeSpace.whole_axis``).  The
activation-aware plan searches W·L (L Lᵀ the input second moment) this way: a matrix acting
on the inputs then folds into that core, so TT(W·L)·L⁻¹ costs the same parameters and its
error on the activations is exactly the searched one.  The reference shape is then the rank
factorization instead of the balanced one (which splits the inputs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..engine.executors import LocalExecutor, check_workers, start_ray
from ..engine.fitness import EvalSettings, confirm
from ..engine.search import SearchConfig, run_search
from ..errors import ArgumentError
from .budget import allocate
from .formats import Format, balanced_shape, input_axis, low_rank_shape, matrix_tensor, modes_of, shape_from_modes
from .plan import BalancedShape, LayerPlan, Plan, PlanSummary

DEFAULT_EPS_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # per-layer ε choices under a budget


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
    warm_start: bool = True  # see the module docstring
    leaders: int = 2  # fully searched layers per matrix size (the first and last of the size in model order)
    warm_population: int = 8
    whole_input: bool = False  # see the module docstring

    def __post_init__(self) -> None:
        if self.leaders < 1 or self.warm_population < 2:
            raise ArgumentError("leaders", f"needs leaders >= 1 and warm_population >= 2, got {self.leaders} and "
                                           f"{self.warm_population}")

    def search_config(self, eps: float, fmt: Format, warm: bool = False) -> SearchConfig:
        """The GA of a layer: the full search, or (``warm``) a follower's start and polish only."""
        whole = input_axis(fmt) if self.whole_input else None
        if warm:
            return SearchConfig(eps=eps, population=self.warm_population, generations=0, seed=self.seed, max_pad=0.0,
                                max_order=self.max_order, axis_per_mode=fmt.axis_per_mode, whole_axis=whole,
                                polish_rounds=self.polish_rounds, surrogate=False, confirm_top=2)
        return SearchConfig(eps=eps, population=self.population, generations=self.generations, stall=self.stall,
                            seed=self.seed, max_pad=0.0, max_order=self.max_order, axis_per_mode=fmt.axis_per_mode,
                            whole_axis=whole, polish_rounds=self.polish_rounds, surrogate=fmt is Format.TTM,
                            confirm_top=3)

    def reference_shape(self, out_features: int, in_features: int, fmt: Format):
        """The shape every search is seeded with and falls back to (see the module docstring)."""
        if self.whole_input:
            return low_rank_shape(out_features, in_features, fmt)
        return balanced_shape(out_features, in_features, fmt, self.balanced_order)


def search_matrix(weight: np.ndarray, eps: float | list[float], fmt: Format | str = Format.TTM,
                  config: LayerSearchConfig = LayerSearchConfig(),
                  starts: Mapping[float, Sequence[LayerPlan]] | None = None) -> LayerPlan | dict[float, LayerPlan]:
    """Fewest-parameter TT shape of ``weight`` [out, in] with relative Frobenius error ≤ ``eps``.

    Returns the layer's plan: modes, sweep, ranks, TT parameters, measured error, and the
    balanced shape's parameters and error at the same ε (never fewer: it seeds the search).
    With a list of ε, returns {ε: plan}; the unfolding spectra are computed once for all.
    ``starts``: per ε, plans of other layers of this size whose shapes a warm start begins
    from (see the module docstring); None: the full search."""
    fmt = Format.parse(fmt)
    tensor = np.ascontiguousarray(matrix_tensor(np.asarray(weight, dtype=np.float64), fmt))
    fast = LocalExecutor(tensor.astype(np.float32), float(np.linalg.norm(tensor)))
    out = {e: _search_one(tensor, fast, e, fmt, config, None if starts is None else starts[e])
           for e in (eps if isinstance(eps, list) else [eps])}
    return out if isinstance(eps, list) else out[eps]


def _measured(tensor: np.ndarray, norm: float, shape, eps: float) -> dict:
    rec = confirm(tensor, norm, (shape.key, EvalSettings(eps).to_dict()))
    rec.pop("cores")
    return rec


def _search_one(tensor: np.ndarray, fast: LocalExecutor, eps: float, fmt: Format,
                config: LayerSearchConfig, starts: Sequence[LayerPlan] | None = None) -> LayerPlan:
    start = time.perf_counter()
    norm = fast.norm
    out_features, in_features = tensor.shape if fmt is Format.TTM else tensor.shape[::-1]
    balanced = config.reference_shape(out_features, in_features, fmt)
    bal = _measured(tensor, norm, balanced, eps)
    references = {"balanced": balanced}
    for i, plan in enumerate(starts or ()):
        references[f"start {i}"] = shape_from_modes(plan.out_modes, plan.in_modes, fmt, plan.reverse_sweep)
    result = run_search(fast.tensor, config.search_config(eps, fmt, warm=starts is not None), fast,
                        references=references)
    shape, params, ranks, rel_error = result.shape, result.params, list(result.ranks), result.rel_error
    # the GA scores in float32: fall back to the float64-measured balanced shape when the
    # winner is no smaller or its confirmed error misses ε
    if bal["params"] < params or not result.rel_error <= eps:
        shape, params, ranks, rel_error = balanced, bal["params"], bal["ranks"], bal["rel_error"]
    out_modes, in_modes = modes_of(shape, fmt)
    b_out, b_in = modes_of(balanced, fmt)
    return LayerPlan(
        format=fmt, eps=eps, out_modes=out_modes, in_modes=in_modes, reverse_sweep=shape.reverse_sweep,
        ranks=tuple(ranks), params=int(params), rel_error=float(rel_error),
        balanced=BalancedShape(b_out, b_in, tuple(bal["ranks"]), int(bal["params"]), float(bal["rel_error"])),
        evaluations=result.evaluations, seconds=time.perf_counter() - start)


def _search_task(weight: np.ndarray, eps_values: list[float], fmt: Format, config: dict,
                 starts: dict | None = None) -> dict[float, LayerPlan]:
    from ..engine.executors import limit_threads

    limit_threads()
    return search_matrix(weight, list(eps_values), fmt, LayerSearchConfig(**config), starts)


def leaders(weights: Mapping[str, np.ndarray], per_size: int) -> list[str]:
    """The layers that get the full search: of each matrix size, the first and last (up to
    ``per_size``, spread evenly over the model order)."""
    sizes: dict[tuple, list[str]] = {}
    for name, w in weights.items():
        sizes.setdefault(w.shape, []).append(name)
    out = []
    for names in sizes.values():
        picks = np.linspace(0, len(names) - 1, min(per_size, len(names))).round().astype(int)
        out += [names[i] for i in dict.fromkeys(picks.tolist())]
    return out


def _starts(found: Mapping[str, dict[float, LayerPlan]], lead: list[str], shape: tuple,
            weights: Mapping[str, np.ndarray]) -> dict[float, list[LayerPlan]]:
    """Per ε, the plans of the leaders of this matrix size."""
    mine = [found[n] for n in lead if weights[n].shape == shape]
    return {e: [plans[e] for plans in mine] for e in mine[0]}


def search_layers(weights: Mapping[str, np.ndarray], eps_values: list[float], fmt: Format | str = Format.TTM,
                  config: LayerSearchConfig = LayerSearchConfig(), workers: int | None = None,
                  address: str | None = None,
                  progress: Callable[[int], None] | None = None) -> dict[str, dict[float, LayerPlan]]:
    """``search_matrix`` of every layer at every ε, one Ray task per layer (``workers=0``: in
    process), largest layer first; with ``config.warm_start`` the leaders first, then every
    other layer warm-started from its size's leaders.  Returns {layer name: {ε: plan}};
    ``progress(n)`` gets the number of (layer, ε) searches just finished."""
    fmt = Format.parse(fmt)
    eps_values = list(eps_values)
    check_workers(workers)
    lead = leaders(weights, config.leaders) if config.warm_start else list(weights)  # few: a list is fine
    waves = [lead, [n for n in weights if n not in lead]]
    found: dict[str, dict[float, LayerPlan]] = {}
    if workers == 0:
        for wave, follow in zip(waves, (False, True)):
            for name in sorted(wave, key=lambda n: -weights[n].size):
                starts = _starts(found, lead, weights[name].shape, weights) if follow else None
                found[name] = search_matrix(weights[name], eps_values, fmt, config, starts)
                if progress:
                    progress(len(eps_values))
        return {n: found[n] for n in weights}
    import ray

    start_ray(address, workers)
    task = ray.remote(num_cpus=1, max_retries=3)(_search_task)
    for wave, follow in zip(waves, (False, True)):
        refs = {task.remote(np.ascontiguousarray(weights[n]), eps_values, fmt, asdict(config),
                            _starts(found, lead, weights[n].shape, weights) if follow else None): n
                for n in sorted(wave, key=lambda n: -weights[n].size)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            found[refs[done[0]]] = ray.get(done[0])
            if progress:
                progress(len(eps_values))
    return {n: found[n] for n in weights}


def make_plan(found: Mapping[str, Mapping[float, LayerPlan]], norms2: Mapping[str, float], budget: int | None,
              seed: int = 0, *, model: str | None = None, layer_types: Mapping[str, str] | None = None,
              biases: Mapping[str, bool] | None = None, importance: Mapping[str, float] | None = None) -> Plan:
    """The plan: one layer plan per layer of ``found`` (from :func:`search_layers`).

    Without ``budget``, each layer at the single ε searched; with ``budget`` (TT parameters
    over all listed layers), the per-layer ε that fits it with the least total error energy
    Σ ε_l²‖W_l‖²_F (``norms2``: ‖W_l‖²_F; a DEAP GA over the choices, seeded greedily), or
    with ``importance`` (a measured sensitivity per layer) Σ importance_l ε_l²‖W_l‖²_F.
    ``model``, ``layer_types`` and ``biases`` (per layer name) are recorded as given."""
    names = list(found)
    grid = list(next(iter(found.values())))
    if budget is None:
        layers = {n: next(iter(found[n].values())) for n in names}
    else:
        weight = {n: norms2[n] * (1.0 if importance is None else importance[n]) for n in names}
        options = [[(rec.params, rec.rel_error ** 2 * weight[n]) for rec in found[n].values()] for n in names]
        choice = allocate(options, budget, seed)
        layers = {n: list(found[n].values())[c] for n, c in zip(names, choice)}
    layers = {n: replace(rec, type=None if layer_types is None else layer_types[n],
                         bias=None if biases is None else bool(biases[n])) for n, rec in layers.items()}
    params = sum(r.params for r in layers.values())
    dense = sum(r.dense_params for r in layers.values())
    balanced = sum(r.balanced_params for r in layers.values())
    energy = sum(r.rel_error ** 2 * norms2[n] for n, r in layers.items())
    summary = PlanSummary(layers=len(layers), dense_params=dense, params=params, balanced_params=balanced,
                          compression=dense / params if params else float("inf"), budget=budget,
                          fits_budget=budget is None or params <= budget,
                          rel_error_all=float(np.sqrt(energy / sum(norms2[n] for n in layers))))
    formats = {r.format for r in layers.values()}
    return Plan(layers=layers, model=model, format=formats.pop() if len(formats) == 1 else None,
                eps=grid[0] if budget is None else None, eps_grid=None if budget is None else tuple(grid),
                summary=summary)
