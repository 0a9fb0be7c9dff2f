"""Rewrite a model's linears as TT (``TTConfig``) or Saten (``SatenConfig``) layers from a plan.

A plan is what ``shapesearch layers`` writes: per layer name, the format (ttm / tt), the
searched modes, sweep direction and ε.  Each listed nn.Linear is replaced by a layer built
with the same error-bounded TT-SVD the search scored, so its ranks and parameters are the
plan's.  What was built is recorded per layer in ``model.config.shapesearch_compression``
(the module specs), so ``compressors.save`` / ``load`` rebuild it exactly.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from shapesearch.errors import ArgumentError, ShapesearchError
from shapesearch.matrix.plan import LayerPlan, Plan

from .accounting import dense_params, layer_bytes, layer_params
from .architectures import block_list
from .calibration import LayerInputs, input_moments, sequential, staged_moments
from .compress import ALREADY_COMPRESSED, register_handler
from .layer_plans import PlanRequest
from .saten import MAX_ALTERNATIONS, SatenLinear
from .targets import tied_output
from .tt_embedding import TiedLMHead, TTEmbedding
from .tt_linear import TT_LAYERS, tt_layer
from .whitening import activation_error, whitened_tt_layer, whitening_factor

SPEC_CLASSES: dict[str, type[nn.Module]] = {**TT_LAYERS, "saten": SatenLinear, "tt-embedding": TTEmbedding}


def read_plan(plan: Plan | dict | str | Path) -> Plan:
    """The plan as a checked :class:`Plan`: one already, its JSON dict, or the path of its file."""
    if isinstance(plan, Plan):
        return plan
    if isinstance(plan, dict):
        return Plan.from_dict(plan)
    return Plan.load(plan)


def _plan_argument(plan: Plan | PlanRequest | dict | str | Path) -> Plan | PlanRequest:
    if isinstance(plan, PlanRequest):
        return plan
    if isinstance(plan, dict) and not isinstance(plan.get("layers"), dict):  # options to search one with
        return PlanRequest.from_dict(plan)
    try:
        return read_plan(plan)
    except ShapesearchError as exc:
        raise ArgumentError("plan", f"is unusable: {exc}") from exc


@dataclass
class TTConfig:
    """Every layer of ``plan`` (a :class:`Plan`, its dict or the path of a plan JSON) as a TT
    alone; or a :class:`~compressors.layer_plans.PlanRequest` (or its dict): the plan is then
    searched on the model when it is compressed.  ``sequential`` (activation-aware plans):
    whiten each layer by the inputs it receives once the layers before it are compressed, as
    SVD-LLM and FLAT-LLM calibrate, at the ranks the plan's search found (so its parameter
    count holds); False: by the dense model's inputs at the plan's ε, the inputs its ε and
    held-out errors were measured on."""

    plan: Plan | PlanRequest | dict | str | Path
    sequential: bool = True

    def __post_init__(self) -> None:
        self.plan = _plan_argument(self.plan)


@dataclass
class SatenConfig:
    """TT from ``plan`` plus a sparse residual of E = W − TT(W): ``density`` (fraction of the
    layer's entries kept, exact top-K of |E|) or ``nm`` = (n, m): n of every m consecutive
    inputs of each output row (e.g. (2, 4)).  ``sequential`` as in :class:`TTConfig`.
    ``alternations``: after the first fit, refit the TT part to W − S at its ranks and choose S
    again this many times, keeping the lowest error (``SatenLinear.from_linear``; linears only)."""

    plan: Plan | PlanRequest | dict | str | Path
    density: float | None = None
    nm: tuple[int, int] | None = None
    sequential: bool = True
    alternations: int = 0

    def __post_init__(self) -> None:
        if (self.density is None) == (self.nm is None):
            raise ArgumentError("density", "and nm: give exactly one of density (e.g. 0.1) or nm (e.g. 2:4; (2, 4) "
                                           "in Python) for the sparse residual")
        if self.density is not None and not 0.0 <= self.density <= 1.0:
            raise ArgumentError("density", f"must be in [0, 1] (fraction of each layer's entries kept), "
                                           f"got {self.density}")
        if self.nm is not None:
            if not (len(self.nm) == 2 and all(isinstance(v, numbers.Integral) for v in self.nm)
                    and 0 < self.nm[0] <= self.nm[1]):
                given = ":".join(map(str, self.nm)) if isinstance(self.nm, tuple | list) else repr(self.nm)
                raise ArgumentError("nm", f"must be n:m with integers 0 < n <= m (e.g. 2:4; (2, 4) in Python), "
                                          f"got {given}")
            self.nm = (int(self.nm[0]), int(self.nm[1]))
        if isinstance(self.alternations, bool) or not (isinstance(self.alternations, numbers.Integral)
                                                        and 0 <= self.alternations <= MAX_ALTERNATIONS):
            raise ArgumentError("alternations", f"must be an integer in [0, {MAX_ALTERNATIONS}] (TT / sparse "
                                                f"refits), got {self.alternations!r}")
        self.alternations = int(self.alternations)
        self.plan = _plan_argument(self.plan)


def module_from_spec(spec: dict, dtype: torch.dtype) -> nn.Module:
    """An empty layer of the recorded shapes (what ``load`` fills from safetensors)."""
    cls = SPEC_CLASSES.get(spec.get("format"))
    if cls is None:
        raise ShapesearchError(f"unknown layer format {spec.get('format')!r} in config.json")
    return cls.from_spec(spec, dtype)


def _build(linear: nn.Linear | nn.Embedding, rec: LayerPlan, config: TTConfig | SatenConfig,
           embedding_weights: torch.Tensor | None = None, head_moment: torch.Tensor | None = None,
           factor: torch.Tensor | None = None) -> nn.Module:
    saten = isinstance(config, SatenConfig)
    if isinstance(linear, nn.Embedding):
        return TTEmbedding.from_embedding(linear, rec.format, rec.out_modes, rec.in_modes, rec.eps,
                                          density=config.density if saten else None,
                                          nm=config.nm if saten else None, reverse=rec.reverse_sweep,
                                          row_weights=embedding_weights, head_moment=head_moment)
    if saten:
        return SatenLinear.from_linear(linear, rec.format, rec.out_modes, rec.in_modes, rec.eps,
                                       density=config.density, nm=config.nm, reverse=rec.reverse_sweep, factor=factor,
                                       max_ranks=rec.ranks, alternations=config.alternations)
    if factor is not None:
        return whitened_tt_layer(linear.weight, rec.format, rec.out_modes, rec.in_modes, rec.eps, factor,
                                 rec.reverse_sweep, linear.bias, rec.ranks)
    return tt_layer(linear.weight, rec.format, rec.out_modes, rec.in_modes, rec.eps, rec.reverse_sweep, linear.bias)


@register_handler(TTConfig)
@register_handler(SatenConfig)
@torch.no_grad()
def tensorize(model: nn.Module, config: TTConfig | SatenConfig,
              progress: Callable[[int], None] | None = None, embedding_weights: torch.Tensor | None = None,
              head_moment: torch.Tensor | None = None,
              calibration: list[torch.Tensor] | None = None) -> dict:
    """Replace every planned nn.Linear (and nn.Embedding: a :class:`TTEmbedding`, which also
    serves a tied ``lm_head``) in place; returns the accounting report (``progress(i)`` after
    the i-th layer).  ``embedding_weights``: per-token row weights of the embedding's fit (e.g.
    ``tt_embedding.frequency_weights`` of calibration text), so ε bounds the weighted error;
    ``head_moment``: E[h hᵀ] of a tied ``lm_head``'s input (``calibration.head_input_moment``),
    which whitens the fit of a tied embedding (ignored for an untied one).  An activation-aware
    plan needs the ``calibration`` windows it was made on: its layers are whitened by their
    input moments on the plan's fitted windows (the first ``plan.calibration["windows"]``)."""
    plan, searched = config.plan, None
    if isinstance(plan, PlanRequest):
        if getattr(model.config, "shapesearch_compression", None):
            raise ShapesearchError(ALREADY_COMPRESSED)
        searched = time.perf_counter()
        plan = plan.make(model, calibration)
        searched = time.perf_counter() - searched
    if getattr(model.config, "shapesearch_compression", None):
        raise ShapesearchError(ALREADY_COMPRESSED)
    targets = {}
    for name, rec in plan.layers.items():
        try:
            linear = model.get_submodule(name)
        except AttributeError:
            raise ShapesearchError(f"the plan's layer {name} is not in this {type(model).__name__}; "
                                   "make the plan from the same model") from None
        if not _fits(linear, rec):
            raise ShapesearchError(f"the plan's layer {name} does not match this model's {linear}; "
                                   "make the plan from the same model")
        targets[name] = linear
    start = time.perf_counter()
    total_before = sum(p.numel() for p in model.parameters())
    layers, rows, tied = {}, [], None

    def swap(name: str, factor: torch.Tensor | None, moment: torch.Tensor | None = None) -> None:
        nonlocal tied
        linear, rec = targets[name], plan.layers[name]
        head = tied_output(model, linear) if isinstance(linear, nn.Embedding) else None
        try:
            new = _build(linear, _build_record(rec, factor is not None and config.sequential), config,
                         embedding_weights, head_moment if head is not None else None, factor)
        except ValueError as exc:
            raise ShapesearchError(f"layer {name}: {exc}") from exc
        new.train(linear.training)  # a fresh module is in training mode; an eval model must stay eval
        rows.append({"name": name, "dense_params": dense_params(linear), "params": layer_params(new),
                     "dense_bytes": layer_bytes(linear), "bytes": layer_bytes(new), "eps": rec.eps})
        if moment is not None:  # the error reached on the inputs it was fitted to (sequential: compressed ones)
            rows[-1]["activation_error"] = activation_error(linear.weight, new.weight(), moment)
        model.set_submodule(name, new)
        layers[name] = new.spec()
        if head is not None:
            tied = [head, name]
            model.set_submodule(head, TiedLMHead(new))
        if progress:
            progress(len(rows) - 1)

    aware = [n for n, rec in plan.layers.items() if rec.activation_aware]
    windows = _plan_windows(plan, calibration) if aware else []
    for name in targets:
        if name not in aware:
            swap(name, None)
    if aware and config.sequential:
        _swap_sequentially(model, aware, windows, swap)
    elif aware:
        for name, moment in input_moments(model, windows, aware).items():
            swap(name, whitening_factor(moment), moment)
    order = {name: i for i, name in enumerate(targets)}
    rows.sort(key=lambda r: order[r["name"]])
    method = "saten" if isinstance(config, SatenConfig) else "tt"
    record = {"method": method, "format": None if plan.format is None else plan.format.value, "layers": layers}
    if tied is not None:
        # the TT embedding now serves lm_head itself; transformers' tying would look for a weight
        record["tied_head"] = tied
        model.config.tie_word_embeddings = False
    if isinstance(config, SatenConfig):
        record.update(density=config.density, nm=None if config.nm is None else list(config.nm))
    model.config.shapesearch_compression = record
    report = accounting_report(model, rows, total_before, method, time.perf_counter() - start)
    if searched is not None:
        report.update(plan_seconds=searched, plan=plan.to_dict())
    return report


def _build_record(rec: LayerPlan, fixed_ranks: bool) -> LayerPlan:
    """What a layer is built from (``rec.ranks`` then cap the TT ranks): ε-truncated as the plan
    says or, for a layer fitted to other inputs than the plan's (``fixed_ranks``), at exactly
    the ranks the search found, so the plan's parameter count (its budget) holds; a
    hand-written plan without ranks keeps ε."""
    if fixed_ranks and rec.ranks is not None:
        return replace(rec, eps=0.0)  # ε 0 keeps every rank; the caps cut them to the plan's
    return replace(rec, ranks=None)


def _plan_windows(plan: Plan, calibration: list[torch.Tensor] | None) -> list[torch.Tensor]:
    """The windows an activation-aware plan was fitted on (the first ``plan.calibration["windows"]``)."""
    needed = plan.calibration["windows"]
    if calibration is None or len(calibration) < needed:
        raise ShapesearchError(f"this plan is activation-aware: give the calibration it was made on (at least "
                               f"{needed} windows; got {len(calibration or [])})")
    return list(calibration[:needed])


def _swap_sequentially(model: nn.Module, names: list[str], windows: list[torch.Tensor],
                       swap: Callable[[str, torch.Tensor, torch.Tensor], None]) -> None:
    """Whiten each layer by the inputs it gets once everything before it is compressed: decoder
    layer by decoder layer, and within one, stage by stage (``calibration.staged_moments``);
    linears outside the decoder stack afterwards, on the compressed stack's outputs."""
    try:
        prefix, _ = block_list(model)
    except ShapesearchError:
        prefix = None
    staged: dict[int, dict[str, str]] = {}  # decoder layer → {path inside it: full name}
    rest = []
    for name in names:
        index, path = "", ""
        if prefix and name.startswith(prefix + "."):
            index, _, path = name[len(prefix) + 1:].partition(".")
        if index.isdigit() and path:
            staged.setdefault(int(index), {})[path] = name
        else:
            rest.append(name)

    def rewrite(index: int, layer: nn.Module, inputs: LayerInputs) -> None:
        paths = staged.get(index, {})

        def swap_stage(stage: list[str], moment: torch.Tensor) -> None:
            factor = whitening_factor(moment)  # one input, one factor for the whole stage
            for path in stage:
                swap(paths[path], factor, moment)

        if paths:
            staged_moments(layer, inputs, list(paths), swap_stage)

    if staged:
        sequential(model, windows, rewrite)
    for name, moment in (input_moments(model, windows, rest) if rest else {}).items():
        swap(name, whitening_factor(moment), moment)


def _fits(module: nn.Module, rec: LayerPlan) -> bool:
    """Whether a plan record describes ``module``: a linear's [out, in], or an embedding table
    [V, D] padded to at least V rows."""
    if isinstance(module, nn.Linear):
        return (module.out_features, module.in_features) == (rec.out_features, rec.in_features)
    if isinstance(module, nn.Embedding):
        return rec.in_features == module.embedding_dim and rec.out_features >= module.num_embeddings
    return False


def tie_head(model: nn.Module, record: dict) -> None:
    """Serve the recorded tied ``lm_head`` from the model's TT embedding (after a load)."""
    if record.get("tied_head"):
        head, embedding = record["tied_head"]
        model.set_submodule(head, TiedLMHead(model.get_submodule(embedding)))


def accounting_report(model: nn.Module, rows: list[dict], total_before: int, method: str, seconds: float) -> dict:
    """Replaced-layer and whole-model ratios (parameters kept / dense), and bytes with indices."""
    sums = {k: sum(r[k] for r in rows) for k in ("dense_params", "params", "dense_bytes", "bytes")}
    total_after = sum(p.numel() for p in model.parameters())
    return {
        "method": method,
        "replaced_layers": len(rows),
        "replaced_params_before": sums["dense_params"], "replaced_params_after": sums["params"],
        "replaced_ratio": sums["params"] / sums["dense_params"],
        "replaced_bytes_before": sums["dense_bytes"], "replaced_bytes_after": sums["bytes"],
        "replaced_bytes_ratio": sums["bytes"] / sums["dense_bytes"],
        "params_before": total_before, "params_after": total_after,
        "model_ratio": total_after / total_before,
        "seconds": seconds,
        "layers": rows,
    }
