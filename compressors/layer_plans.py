"""A TT shape plan for a model's linears: what ``shapesearch layers`` runs, as a library call.

Loads the model (or takes one), picks the linears a per-layer compressor rewrites
(``targets.target_linears``), searches each weight's TT shape with the GA of
``shapesearch.matrix.layer_search`` and returns the :class:`~shapesearch.matrix.plan.Plan`
that ``TTConfig`` / ``SatenConfig`` read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from shapesearch.errors import ArgumentError, ShapesearchError
from shapesearch.matrix.formats import Format
from shapesearch.matrix.layer_search import DEFAULT_EPS_GRID, LayerSearchConfig, make_plan, search_layers
from shapesearch.matrix.plan import LayerPlan, Plan

from .calibration import input_moments, recorded_input_moments
from .conv1d_linear import as_linears
from .model_loading import load_model
from .sensitivity import output_sensitivity
from .targets import input_embedding, layer_type, target_linears
from .tt_embedding import padded_vocab
from .whitening import activation_error, whitened_tt_layer, whitening_factor

HELD_OUT = 0.25  # fraction of the calibration windows an activation-aware plan measures its errors on


def check_budget(budget: float | None) -> None:
    """A budget is a fraction in (0, 1) of the dense entries or a whole parameter count >= 2
    (1 or 1.5 would be taken as one parameter: surely not what was meant)."""
    if budget is None:
        return
    if not 0 < budget < 1 and not (budget >= 2 and float(budget).is_integer()):
        raise ArgumentError("budget", f"must be a fraction in (0, 1) of the dense parameters or a whole parameter "
                                      f"count, got {budget:g}")


def budget_params(budget: float, dense: int) -> int:
    """A budget as a TT parameter count: ``budget`` below 1 is a fraction of ``dense`` (entries
    of the searched weights), otherwise a count."""
    return int(budget * dense if budget < 1 else budget)


def plan_layers(model: nn.Module | str, eps: float = 0.3, fmt: Format | str = Format.TTM,
                budget: float | None = None, eps_grid: Sequence[float] = DEFAULT_EPS_GRID,
                layers: str | None = None, generations: int = 20, population: int = 16, seed: int = 0,
                workers: int | None = None, address: str | None = None,
                progress: Callable[[int, int], None] | None = None, model_name: str | None = None,
                embeddings: bool = False, calibration: Sequence[torch.Tensor] | None = None,
                sensitivity: bool = False) -> Plan:
    """Search a TT shape for every attention/MLP linear of ``model`` and return the plan.

    ``model``: a module, or a name/path for ``model_loading.load_model`` (recorded in the plan;
    ``model_name`` names a module).  ``eps``: relative Frobenius error bound per layer.  With
    ``budget`` (TT parameters for all searched layers together: a count, or below 1 a fraction
    of their dense entries) each layer picks its ε from ``eps_grid`` instead.  ``layers``: only
    layers whose name contains this text.  ``workers``: Ray workers (None: one per CPU, 0: in
    this process).  ``progress(n, total)``: n more of the ``total`` (layer, ε) searches are done.
    ``embeddings``: also the token embedding table [V, D], searched padded with zero rows to
    V_pad = a product of small factors (its plan entry has V_pad output features; a tied
    ``lm_head`` is served by the same compressed table).

    ``calibration`` (token windows, each [1, T]) makes the plan activation-aware: each linear
    is searched as W·L with L Lᵀ its input second moment on the first windows, keeping every
    input digit in one core, so ε (and the budget's error energy) is the relative error on the
    activations; the last :data:`HELD_OUT` of the windows are held back and each layer's
    ``held_out_error`` is measured on them (see ``compressors.whitening``).  ``sensitivity``
    (with ``calibration`` and ``budget``) weighs each layer's error energy by its measured
    sensitivity (``compressors.sensitivity``) when the budget is shared out."""
    check_budget(budget)
    if sensitivity and (calibration is None or budget is None):
        raise ArgumentError("sensitivity", "needs calibration windows and a budget (it decides how the budget is "
                                           "shared between layers)")
    options = search_options(model, [eps] if budget is None else eps_grid, fmt, layers=layers,
                             generations=generations, population=population, seed=seed, workers=workers,
                             address=address, progress=progress, model_name=model_name, embeddings=embeddings,
                             calibration=calibration, sensitivity=sensitivity)
    return options.plan(budget, sensitivity)


@dataclass
class LayerOptions:
    """Every searched layer at every ε searched: what plans pick from (one search, any budget).

    ``norms2``: ‖W‖²_F per layer (activation-aware: ‖W L‖²_F, the output energy per token);
    ``importance``: measured sensitivity per layer (or None); the rest is recorded in plans."""

    found: dict[str, dict[float, LayerPlan]]
    norms2: dict[str, float]
    layer_types: dict[str, str]
    biases: dict[str, bool]
    seed: int = 0
    model_name: str | None = None
    importance: dict[str, float] | None = None
    whitening: _Whitening | None = None

    @property
    def dense_params(self) -> int:
        return sum(next(iter(plans.values())).dense_params for plans in self.found.values())

    def plan(self, budget: float | None = None, sensitivity: bool = False) -> Plan:
        """The plan at ``budget`` (a count, or below 1 a fraction of the dense entries; None: the
        single ε searched), sharing it out by error energy, or with ``sensitivity`` by error
        energy × measured sensitivity."""
        check_budget(budget)
        if sensitivity and self.importance is None:
            raise ArgumentError("sensitivity", "was not measured for these options; search them with sensitivity")
        target = None if budget is None else budget_params(budget, self.dense_params)
        plan = make_plan(self.found, self.norms2, target, self.seed, model=self.model_name,
                         layer_types=self.layer_types, biases=self.biases,
                         importance=self.importance if sensitivity else None)
        return plan if self.whitening is None else self.whitening.record(plan, sensitivity)


@dataclass
class _Whitening:
    """What an activation-aware search whitened with, and the held-back moments its plans are
    measured on."""

    weights: dict[str, torch.Tensor]
    factors: dict[str, torch.Tensor]
    held_moments: dict[str, torch.Tensor]
    calibration: dict

    def record(self, plan: Plan, sensitivity: bool) -> Plan:
        layers = {}
        for name, rec in plan.layers.items():
            error = None
            if self.held_moments:
                w = self.weights[name]
                approx = whitened_tt_layer(w, rec.format, rec.out_modes, rec.in_modes, rec.eps, self.factors[name],
                                           rec.reverse_sweep).weight()
                error = activation_error(w, approx, self.held_moments[name])
            layers[name] = replace(rec, error_space="activation", held_out_error=error)
        return replace(plan, layers=layers, calibration={**self.calibration, "sensitivity": sensitivity})


def check_search_size(generations: int, population: int) -> None:
    """Refuse a layer GA that cannot run (ArgumentError naming the option)."""
    if generations < 0:
        raise ArgumentError("generations", f"must be >= 0, got {generations}")
    if population < 2:
        raise ArgumentError("population", f"must be >= 2, got {population}")


def search_options(model: nn.Module | str, eps_values: Sequence[float], fmt: Format | str = Format.TTM, *,
                   layers: str | None = None, generations: int = 20, population: int = 16, seed: int = 0,
                   workers: int | None = None, address: str | None = None,
                   progress: Callable[[int, int], None] | None = None, model_name: str | None = None,
                   embeddings: bool = False, calibration: Sequence[torch.Tensor] | None = None,
                   sensitivity: bool = False) -> LayerOptions:
    """Search every layer at every ε of ``eps_values`` (arguments as in :func:`plan_layers`)."""
    fmt = Format.parse(fmt)
    grid = sorted(set(eps_values))
    if not grid or not all(0.0 < e < 1.0 for e in grid):
        raise ArgumentError("eps" if len(grid) == 1 else "eps_grid",
                            f"must be in (0, 1) (relative Frobenius error), got {list(eps_values)}")
    check_search_size(generations, population)
    if calibration is not None and embeddings:
        raise ArgumentError("embeddings", "an activation-aware plan covers the linears only; plan the embedding "
                                          "in a separate (weight-space) plan")
    if sensitivity and calibration is None:
        raise ArgumentError("sensitivity", "needs calibration windows")
    if isinstance(model, str):
        model_name = model_name or model
        model, _ = load_model(model, tokenizer=False)
    as_linears(model)  # GPT-2's Conv1D projections are searched as the linears they are
    linears = select_linears(model, layers, embeddings)
    weights = {n: searched_weight(m) for n, m in linears.items()}
    config = LayerSearchConfig(population=population, generations=generations, seed=seed,
                               stall=min(LayerSearchConfig.stall, max(generations, 1)),
                               whole_input=calibration is not None)
    whitening = importance = None
    if calibration is not None:
        fit, held = split_calibration(calibration)
        names = list(weights)
        if sensitivity:  # its forward passes over the fit windows give the input moments too
            with recorded_input_moments(model, names) as moments:
                importance = output_sensitivity(model, fit, names)
        else:
            moments = input_moments(model, fit, names)
        factors = {n: whitening_factor(m) for n, m in moments.items()}
        originals = {n: linears[n].weight.detach().double() for n in weights}
        weights = {n: (originals[n] @ factors[n]).numpy() for n in weights}
        whitening = _Whitening(originals, factors, input_moments(model, held, names) if held else {},
                               {"windows": len(fit), "held_out_windows": len(held),
                                "tokens": int(sum(w.numel() for w in fit))})
    total = len(weights) * len(grid)
    found = search_layers(weights, grid, fmt, config, workers, address,
                          None if progress is None else lambda n: progress(n, total))
    for name, module in linears.items():  # a padded table's dense size is its real rows, not V_pad
        if isinstance(module, nn.Embedding):
            found[name] = {e: replace(rec, rows=module.num_embeddings) for e, rec in found[name].items()}
    return LayerOptions(
        found=found, norms2={n: float(np.sum(w.astype(np.float64) ** 2)) for n, w in weights.items()},
        layer_types={n: "embedding" if isinstance(m, nn.Embedding) else layer_type(n) for n, m in linears.items()},
        biases={n: getattr(m, "bias", None) is not None for n, m in linears.items()}, seed=seed,
        model_name=model_name, importance=importance, whitening=whitening)


def split_calibration(windows: Sequence[torch.Tensor] | None) -> tuple[list, list]:
    """(windows to fit on, the last :data:`HELD_OUT` of them held back; none with one window)."""
    if windows is None:
        return [], []
    windows = list(windows)
    if not windows:
        raise ArgumentError("calibration", "is empty; give token windows (e.g. calibration_windows(...))")
    held = int(np.ceil(HELD_OUT * len(windows))) if len(windows) > 1 else 0
    return windows[:len(windows) - held], windows[len(windows) - held:]


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
    ``layers`` (all of them for None); "embed" (any part of "embedding") also names the token
    embedding whatever the family calls it (GPT-2's ``wte``, Bloom's ``word_embeddings``)."""
    pool = dict(target_linears(model))
    table = None
    if embeddings:
        table, module = input_embedding(model)
        pool[table] = module
    linears = {n: m for n, m in pool.items()
               if layers is None or layers in n or (n == table and layers and layers in "embedding")}
    if not linears:
        raise ArgumentError("layers", f"{layers!r}: no layer name contains it; drop it or check the names "
                                      f"(e.g. {next(iter(target_linears(model)))!r})")
    return linears


@dataclass(frozen=True)
class PlanRequest:
    """A plan to search on the model as it is when compressed: what a recipe step after
    FLAT-LLM needs (its layers' sizes are known only then).  Fields as in :func:`plan_layers`;
    ``activations``: activation-aware on the compressor's calibration windows."""

    eps: float = 0.3
    budget: float | None = None
    format: str = Format.TTM.value
    eps_grid: tuple[float, ...] = DEFAULT_EPS_GRID
    layers: str | None = None
    activations: bool = False
    sensitivity: bool = False
    generations: int = 20
    population: int = 16
    seed: int = 0
    workers: int | None = None

    def __post_init__(self) -> None:
        Format.parse(self.format)
        check_budget(self.budget)
        if not all(0.0 < e < 1.0 for e in (self.eps, *self.eps_grid)):
            raise ArgumentError("eps", f"and eps_grid must be in (0, 1) (relative Frobenius error), got {self.eps} "
                                       f"and {list(self.eps_grid)}")
        if self.sensitivity and not (self.activations and self.budget is not None):
            raise ArgumentError("sensitivity", "needs activations and a budget")
        check_search_size(self.generations, self.population)
        object.__setattr__(self, "eps_grid", tuple(self.eps_grid))

    @classmethod
    def from_dict(cls, d: dict) -> PlanRequest:
        """From JSON (a recipe file); unknown keys are named."""
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ArgumentError("plan", f"unknown plan option(s) {unknown}; use {sorted(cls.__dataclass_fields__)}")
        return cls(**d)

    def make(self, model: nn.Module, calibration: Sequence[torch.Tensor] | None = None) -> Plan:
        """The plan for ``model`` now (activation-aware on ``calibration``)."""
        if self.activations and not calibration:
            raise ShapesearchError("an activation-aware plan request needs calibration windows")
        return plan_layers(model, eps=self.eps, fmt=self.format, budget=self.budget, eps_grid=self.eps_grid,
                           layers=self.layers, generations=self.generations, population=self.population,
                           seed=self.seed, workers=self.workers, model_name=getattr(model, "name_or_path", None),
                           calibration=calibration if self.activations else None, sensitivity=self.sensitivity)
