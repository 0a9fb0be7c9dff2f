"""``compress(model, config, calibration=...)``: one verb for every compressor.

The model is rewritten in place; the report gives per-layer shapes and parameters before
and after, both for the decoder linears (what "ratio" refers to) and the whole model.
What was done is recorded in ``model.config.shapesearch_compression`` so that
:func:`compressors.save` / :func:`compressors.load` can rebuild the shapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from shapesearch.errors import ArgumentError, ShapesearchError

from . import flat_llm, low_rank
from .architectures import check_supported, decoder_layers, decoder_linear_params, dims, total_params
from .calibration import sequential
from .flat_llm import FlatLLMConfig
from .low_rank import SVDConfig


def _check(model: nn.Module, config, calibration: list[torch.Tensor] | None, needs_data: bool) -> None:
    check_supported(model)
    if not 0.0 < config.ratio < 1.0:
        raise ShapesearchError(f"ratio must be in (0, 1) (fraction of decoder-linear parameters removed), "
                         f"got {config.ratio}")
    if needs_data and not calibration:
        raise ShapesearchError("calibration data is empty; give calibration text with enough tokens")
    if getattr(model.config, "shapesearch_compression", None):
        raise ShapesearchError("this model is already compressed; start from the dense model")


def flat_llm_budget(model: nn.Module, keep: list[float]) -> int:
    """Decoder-linear parameters FLAT-LLM leaves with keep ratios ``keep`` (computed, not built)."""
    d = dims(model)
    before = decoder_linear_params(model)
    removed = 0
    for layer, w in zip(decoder_layers(model), keep):
        if w >= 1.0:
            continue
        rank, width = flat_llm.layer_widths(d, w)
        attn, mlp = layer.self_attn, layer.mlp
        removed += (d.head_dim - rank) * d.kv_heads * (d.hidden + (attn.v_proj.bias is not None))
        removed += d.hidden * d.heads * (d.head_dim - rank)
        removed += (d.intermediate - width) * (2 * d.hidden + (mlp.gate_proj.bias is not None)
                                               + (mlp.up_proj.bias is not None) + d.hidden)
    return before - removed


_HANDLERS: dict[type, Callable[..., dict]] = {}


def register_handler(config_type: type) -> Callable:
    """Decorator: ``handler(model, config, **options) -> report`` compresses with configs of this type."""
    def register(handler: Callable[..., dict]) -> Callable[..., dict]:
        _HANDLERS[config_type] = handler
        return handler

    return register


def compress(model: nn.Module, config, **options) -> dict:
    """Rewrite ``model`` in place as ``config`` says; returns the report.

    ``config`` is one of the registered config types (FlatLLMConfig, SVDConfig, TTConfig,
    SatenConfig); ``options`` go to its handler (``calibration``: token windows [1, T];
    ``progress``: called with each finished layer's index; ``budget`` for the SVD baselines)."""
    handler = _HANDLERS.get(type(config))
    if handler is None:
        names = ", ".join(sorted(t.__name__ for t in _HANDLERS))
        raise ArgumentError("config", f"{type(config).__name__} is not a compression config; use one of {names}")
    return handler(model, config, **options)


@register_handler(FlatLLMConfig)
@register_handler(SVDConfig)
@torch.no_grad()
def _rank_reduction(model: nn.Module, config, calibration: list[torch.Tensor] | None = None,
                    progress: Callable[[int], None] | None = None, budget: int | None = None) -> dict:
    """FLAT-LLM or an SVD baseline.  For the SVD baselines, ``budget`` (decoder-linear
    parameters to keep) defaults to what FLAT-LLM keeps at the same ratio on this model, so
    the methods are compared at matched parameters."""
    is_flat = isinstance(config, FlatLLMConfig)
    _check(model, config, calibration, needs_data=is_flat or config.whiten or budget is None)
    model.eval()
    linear_before, total_before = decoder_linear_params(model), total_params(model)
    start = time.perf_counter()
    if is_flat:
        keep = flat_llm.keep_ratios(model, config, calibration)
        d = dims(model)
        layers: list[dict] = []
        sequential(model, calibration,
                   lambda i, layer, inputs: layers.append(flat_llm.rewrite_layer(layer, inputs, d, keep[i],
                                                                                 config.ridge)), progress)
        record = {"method": "flat-llm", "uniform": config.uniform, "layers": layers}
    else:
        if budget is None:
            budget = flat_llm_budget(model, flat_llm.keep_ratios(model, FlatLLMConfig(config.ratio), calibration))
        ranks = low_rank.ranks_for_budget(model, budget)
        method = "svd-llm" if config.whiten else "svd"
        layers = []
        if config.whiten:
            sequential(model, calibration,
                       lambda i, layer, inputs: layers.append(low_rank.rewrite_layer(layer, inputs, i, ranks, True)),
                       progress)
        else:
            for i, layer in enumerate(decoder_layers(model)):
                layers.append(low_rank.rewrite_layer(layer, None, i, ranks, False))
                if progress:
                    progress(i)
        record = {"method": method, "layers": [{"ranks": r} for r in layers]}
    seconds = time.perf_counter() - start
    record["ratio"] = config.ratio
    model.config.shapesearch_compression = record
    linear_after, total_after = decoder_linear_params(model), total_params(model)
    return {
        "method": record["method"],
        "ratio": config.ratio,
        "decoder_linear_params_before": linear_before,
        "decoder_linear_params_after": linear_after,
        "decoder_linear_removed": 1 - linear_after / linear_before,
        "params_before": total_before,
        "params_after": total_after,
        "total_removed": 1 - total_after / total_before,
        "calibration_seconds": seconds,
        "calibration_windows": len(calibration or []),
        "calibration_tokens": int(sum(w.numel() for w in calibration or [])),
        "layers": record["layers"],
    }
