"""Baselines: plain truncated SVD and SVD-LLM (whitened SVD) of every decoder linear.

Each nn.Linear W [out, in] becomes ``second(first(x))`` with rank k: two matmuls, the head
and hidden sizes unchanged.  SVD-LLM whitens with S, S Sᵀ = Σ_tokens x xᵀ (float64
Cholesky, jitter added until it succeeds), takes the SVD of W S and sets
W ≈ U_k Σ_k V_kᵀ S⁻¹.  Ranks come from one global ratio ρ, k = ⌊m n (1 − ρ)/(m + n)⌋
(SVD-LLM's rule), with ρ chosen so the decoder linears match a parameter budget.

Limits, checked before any calibration (:meth:`SVDConfig.preflight`): every linear keeps rank
≥ 1, and the default budget is what FLAT-LLM keeps at the same ratio, so the ratio is bounded
by both (:func:`max_ratio`).  Plain SVD factors the weights alone: its calibration only feeds
FLAT-LLM's importance scores (for the matched budget), so any non-empty calibration will do.
SVD-LLM estimates input covariances up to d_int × d_int (``down_proj``) and needs at least
that many calibration tokens.

``compress(model, SVDConfig(...) / SVDLLMConfig(...), calibration=windows)`` runs
:func:`compress_low_rank`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from shapesearch.errors import ArgumentError

from .architectures import block_list, decoder_layers, decoder_linear_params, dims
from .calibration import Accumulator, LayerInputs, run_layer, sequential
from .compress import (
    calibration_tokens,
    check_calibration_size,
    check_delivery,
    check_model,
    check_ratio,
    decoder_counts,
    decoder_report,
    format_ratio,
    register_handler,
)
from .flat_llm import FlatLLMConfig, check_ratio_reachable, keep_ratios, kept_decoder_params, rounding_step
from .low_rank_linear import LowRankLinear
from .targets import target_linears
from .whitening import whitening_factor


@dataclass
class SVDConfig:
    """Truncated SVD per decoder linear; ``ratio``: fraction of decoder-linear parameters removed."""

    ratio: float = 0.2
    whiten: bool = False  # True: SVD-LLM

    def __post_init__(self) -> None:
        check_ratio(self.ratio)

    def preflight(self, model: nn.Module, tokens: int | None = None, budget: int | None = None) -> None:
        """Refuse, before any calibration, what this baseline cannot do on ``model``: a ratio
        above :func:`max_ratio` (or a ``budget`` below rank 1 everywhere), or, for SVD-LLM,
        fewer calibration ``tokens`` (None: not known yet) than its largest input covariance
        has rows.  Plain SVD needs no minimum: its weights are factored without data."""
        check_model(model, None, needs_data=False)
        floor = min_params(model)
        if budget is not None:
            if budget < floor:
                raise ArgumentError("budget", f"must be at least {floor} decoder-linear parameters (rank 1 in "
                                              f"every decoder linear), got {budget}")
        else:
            check_ratio_reachable(model, self.ratio, self.method)
            if self.ratio > max_ratio(model) + 1e-12:
                raise ArgumentError("ratio", f"{self.ratio:g} is more than this model allows: {self.method} can "
                                             f"remove at most {format_ratio(max_ratio(model))} of its "
                                             "decoder-linear parameters (rank 1 in every linear); give a smaller "
                                             "ratio")
        if self.whiten and tokens is not None:
            needed, what = calibration_tokens_needed(model)
            check_calibration_size(tokens, needed, what, self.method)

    @property
    def method(self) -> str:
        """The name in reports and config.json."""
        return "svd-llm" if self.whiten else "svd"


def SVDLLMConfig(ratio: float = 0.2) -> SVDConfig:  # noqa: N802 - reads like a config class
    """SVD-LLM: truncation-aware whitening with a float64 Cholesky factor of the inputs."""
    return SVDConfig(ratio=ratio, whiten=True)


def rank_for(out_features: int, in_features: int, rho: float) -> int:
    """SVD-LLM's rank for an [out, in] weight at global ratio ``rho``: ⌊m n (1 − ρ)/(m + n)⌋, at least 1."""
    return max(1, math.floor(out_features * in_features * (1 - rho) / (out_features + in_features)))


def min_params(model: nn.Module) -> int:
    """Decoder-linear parameters at rank 1 everywhere (weights + biases): the least SVD keeps."""
    return sum(m.in_features + m.out_features + (m.bias.numel() if m.bias is not None else 0)
               for m in target_linears(model).values())


def max_ratio(model: nn.Module) -> float:
    """The largest fraction of the decoder-linear parameters a rank-1 factorization removes."""
    return 1 - min_params(model) / decoder_linear_params(model)


def calibration_tokens_needed(model: nn.Module) -> tuple[int, str]:
    """(tokens, which covariance) for SVD-LLM's whitening: the Grams of the q/k/v and gate/up
    inputs (hidden size), the o_proj input (heads × head size) and the down_proj input (MLP
    width), each of which must be estimated at full rank."""
    d = dims(model)
    sizes = {f"MLP width {d.intermediate}": d.intermediate, f"hidden size {d.hidden}": d.hidden,
             f"attention width {d.heads * d.head_dim}": d.heads * d.head_dim}
    what = max(sizes, key=sizes.get)
    return sizes[what], what


def ranks_for_budget(model: nn.Module, budget: int) -> dict[str, int]:
    """Per-linear ranks from the single ρ that fits the decoder linears into ``budget`` params."""
    return ranks_for_linears(target_linears(model), budget)


def linear_params(linears: dict[str, nn.Linear], ranks: dict[str, int]) -> int:
    """Parameters of ``linears`` factored at ``ranks`` (weights + biases)."""
    return sum(ranks[name] * (m.in_features + m.out_features) + (m.bias.numel() if m.bias is not None else 0)
               for name, m in linears.items())


def ranks_for_linears(linears: dict[str, nn.Linear], budget: int) -> dict[str, int]:
    """Ranks from the single ρ that fits ``linears`` (weights + biases) into ``budget`` params."""
    shapes = {name: m.weight.shape for name, m in linears.items()}
    biases = sum(m.bias.numel() for m in linears.values() if m.bias is not None)

    def params(rho: float) -> int:
        return biases + sum(rank_for(o, i, rho) * (o + i) for o, i in shapes.values())

    lo, hi = 0.0, 1.0  # params(rho) decreases with rho
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if params(mid) <= budget else (mid, hi)
    return {name: rank_for(o, i, hi) for name, (o, i) in shapes.items()}


def factorize(linear: nn.Linear, rank: int, gram: torch.Tensor | None = None) -> LowRankLinear:
    """Truncated (optionally input-whitened) SVD of ``linear`` at ``rank``."""
    w = linear.weight.double()
    if gram is None:
        u, s, vt = torch.linalg.svd(w, full_matrices=False)
        right = vt[:rank]
    else:
        chol = whitening_factor(gram)
        u, s, vt = torch.linalg.svd(w @ chol, full_matrices=False)
        # V_kᵀ S⁻¹ via a triangular solve: (S⁻ᵀ V_k)ᵀ
        right = torch.linalg.solve_triangular(chol.T, vt[:rank].T, upper=True).T
    root = s[:rank].sqrt()
    out = LowRankLinear(linear.in_features, linear.out_features, rank, linear.bias is not None,
                        dtype=linear.weight.dtype, device=linear.weight.device)
    with torch.no_grad():
        out.first.weight.copy_(root[:, None] * right)
        out.second.weight.copy_(u[:, :rank] * root[None, :])
        if linear.bias is not None:
            out.second.bias.copy_(linear.bias)
    return out


def rewrite_layer(layer: nn.Module, inputs: LayerInputs | None, prefix: str, ranks: dict[str, int],
                  whiten: bool) -> dict[str, int]:
    """Factorize every linear of one decoder layer (named ``prefix``.path in ``ranks``);
    SVD-LLM gathers each one's input Gram first."""
    paths = [p for p, m in layer.named_modules() if isinstance(m, nn.Linear)]
    grams: dict[str, torch.Tensor] = {}
    if whiten:
        stats = {p: Accumulator(layer.get_submodule(p)) for p in paths}
        try:
            run_layer(layer, inputs)
        finally:
            grams = {p: a.close() for p, a in stats.items()}
    out = {}
    for p in paths:
        rank = ranks[f"{prefix}.{p}"]
        layer.set_submodule(p, factorize(layer.get_submodule(p), rank, grams.get(p)))
        out[p] = rank
    return out


@register_handler(SVDConfig)
@torch.no_grad()
def compress_low_rank(model: nn.Module, config: SVDConfig, calibration: list[torch.Tensor] | None = None,
                      progress: Callable[[int], None] | None = None, budget: int | None = None) -> dict:
    """Plain SVD or SVD-LLM in place; returns the report.

    ``budget`` (decoder-linear parameters to keep) defaults to what FLAT-LLM keeps at the same
    ratio on this model, so the methods are compared at matched parameters; that default (and
    SVD-LLM's whitening) needs ``calibration`` windows ([1, T] token ids each)."""
    check_model(model, calibration, needs_data=config.whiten or budget is None)
    config.preflight(model, calibration_tokens(calibration), budget)
    model.eval()
    before = decoder_counts(model)
    start = time.perf_counter()
    matched = budget is None
    if matched:
        budget = kept_decoder_params(model, keep_ratios(model, FlatLLMConfig(config.ratio), calibration))
    ranks = ranks_for_budget(model, budget)
    if matched:  # an explicit budget is its own target; the ratio is then only a label
        linears = target_linears(model)
        step = rounding_step(model) + max(m.in_features + m.out_features for m in linears.values()) / before[0]
        check_delivery(config.method, config.ratio, 1 - linear_params(linears, ranks) / before[0], step)
    layers = []
    prefix = block_list(model)[0]
    if config.whiten:
        sequential(model, calibration, lambda i, layer, inputs: layers.append(
            rewrite_layer(layer, inputs, f"{prefix}.{i}", ranks, True)), progress)
    else:
        for i, layer in enumerate(decoder_layers(model)):
            layers.append(rewrite_layer(layer, None, f"{prefix}.{i}", ranks, False))
            if progress:
                progress(i)
    record = {"method": config.method, "layers": [{"ranks": r} for r in layers], "ratio": config.ratio}
    return decoder_report(model, record, before, time.perf_counter() - start, calibration)
