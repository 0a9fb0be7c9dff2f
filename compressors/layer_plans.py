"""A TT shape plan for a model's linears: what ``shapesearch layers`` runs, as a library call.

Loads the model (or takes one), picks the linears a per-layer compressor rewrites
(``targets.target_linears``), searches each weight's TT shape with the GA of
``shapesearch.matrix.layer_search`` and returns the :class:`~shapesearch.matrix.plan.Plan`
that ``TTConfig`` / ``SatenConfig`` read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from torch import nn

from shapesearch.errors import ArgumentError
from shapesearch.matrix.formats import Format
from shapesearch.matrix.layer_search import DEFAULT_EPS_GRID, LayerSearchConfig, make_plan, search_layers
from shapesearch.matrix.plan import Plan

from .model_loading import load_model
from .targets import input_embedding, layer_type, target_linears
from .tt_embedding import padded_vocab


def budget_params(budget: float, dense: int) -> int:
    """A budget as a TT parameter count: ``budget`` below 1 is a fraction of ``dense`` (entries
    of the searched weights), otherwise a count."""
    return int(budget * dense if budget < 1 else budget)


def plan_layers(model: nn.Module | str, eps: float = 0.3, fmt: Format | str = Format.TTM,
                budget: float | None = None, eps_grid: Sequence[float] = DEFAULT_EPS_GRID,
                layers: str | None = None, generations: int = 20, population: int = 16, seed: int = 0,
                workers: int | None = None, address: str | None = None,
                progress: Callable[[int, int], None] | None = None, model_name: str | None = None,
                embeddings: bool = False) -> Plan:
    """Search a TT shape for every attention/MLP linear of ``model`` and return the plan.

    ``model``: a module, or a name/path for ``model_loading.load_model`` (recorded in the plan;
    ``model_name`` names a module).  ``eps``: relative Frobenius error bound per layer.  With
    ``budget`` (TT parameters for all searched layers together: a count, or below 1 a fraction
    of their dense entries) each layer picks its ε from ``eps_grid`` instead.  ``layers``: only
    layers whose name contains this text.  ``workers``: Ray workers (None: one per CPU, 0: in
    this process).  ``progress(n, total)``: n more of the ``total`` (layer, ε) searches are done.
    ``embeddings``: also the token embedding table [V, D], searched padded with zero rows to
    V_pad = a product of small factors (its plan entry has V_pad output features; a tied
    ``lm_head`` is served by the same compressed table)."""
    fmt = Format.parse(fmt)
    grid = _eps_values(eps, budget, eps_grid)
    if generations < 0:
        raise ArgumentError("generations", f"must be >= 0, got {generations}")
    if population < 2:
        raise ArgumentError("population", f"must be >= 2, got {population}")
    if isinstance(model, str):
        model_name = model_name or model
        model, _ = load_model(model, tokenizer=False)
    linears = select_linears(model, layers, embeddings)
    weights = {n: searched_weight(m) for n, m in linears.items()}
    dense = sum(w.size for w in weights.values())
    target = None if budget is None else budget_params(budget, dense)
    config = LayerSearchConfig(population=population, generations=generations, seed=seed,
                               stall=min(LayerSearchConfig.stall, max(generations, 1)))
    total = len(weights) * len(grid)
    found = search_layers(weights, grid, fmt, config, workers, address,
                          None if progress is None else lambda n: progress(n, total))
    norms2 = {n: float(np.sum(w.astype(np.float64) ** 2)) for n, w in weights.items()}
    return make_plan(found, norms2, target, seed, model=model_name,
                     layer_types={n: "embedding" if isinstance(m, nn.Embedding) else layer_type(n)
                                  for n, m in linears.items()},
                     biases={n: getattr(m, "bias", None) is not None for n, m in linears.items()})


def searched_weight(module: nn.Linear | nn.Embedding) -> np.ndarray:
    """The matrix a plan entry describes: a linear's weight, or an embedding table with zero
    rows up to :func:`padded_vocab` (they add nothing to its norm, so ε is the table's)."""
    weight = module.weight.detach().float().numpy()
    if isinstance(module, nn.Embedding):
        pad = padded_vocab(weight.shape[0]) - weight.shape[0]
        weight = np.concatenate([weight, np.zeros((pad, weight.shape[1]), weight.dtype)])
    return weight


def select_linears(model: nn.Module, layers: str | None = None,
                   embeddings: bool = False) -> dict[str, nn.Linear | nn.Embedding]:
    """The target linears (and with ``embeddings`` the token embedding) whose name contains
    ``layers`` (all of them for None)."""
    pool = dict(target_linears(model))
    if embeddings:
        pool.update([input_embedding(model)])
    linears = {n: m for n, m in pool.items() if layers is None or layers in n}
    if not linears:
        raise ArgumentError("layers", f"{layers!r}: no layer name contains it; drop it or check the names "
                                      f"(e.g. {next(iter(target_linears(model)))!r})")
    return linears


def _eps_values(eps: float, budget: float | None, eps_grid: Sequence[float]) -> list[float]:
    if budget is not None and not budget > 0:
        raise ArgumentError("budget", f"must be a positive parameter count or fraction, got {budget:g}")
    grid = sorted(set(eps_grid)) if budget is not None else [eps]
    if not grid or not all(0.0 < e < 1.0 for e in grid):
        argument = "eps_grid" if budget is not None else "eps"
        raise ArgumentError(argument, f"must be in (0, 1) (relative Frobenius error), got "
                                      f"{list(grid) if budget is not None else eps}")
    return grid
