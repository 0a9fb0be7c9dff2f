"""``compress(model, config, **options)``: one verb for every compressor.

The model is rewritten in place; the report gives per-layer shapes and parameters before
and after, both for the decoder linears (what "ratio" refers to) and the whole model.
What was done is recorded in ``model.config.shapesearch_compression`` so that
:func:`compressors.save` / :func:`compressors.load` can rebuild the shapes.

Each compressor's handler lives next to its config and registers itself with
:func:`register_handler` (FLAT-LLM in ``flat_llm``, the SVD baselines in ``low_rank``, TT /
Saten in ``tt_compress``); importing :mod:`compressors` fills the registry.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from shapesearch.errors import ArgumentError, ShapesearchError

from .architectures import check_decoder, decoder_linear_params, decoder_weight_params, total_params
from .conv1d_linear import as_linears

_HANDLERS: dict[type, Callable[..., dict]] = {}


def register_handler(config_type: type) -> Callable:
    """Decorator: ``handler(model, config, **options) -> report`` compresses with configs of this type."""
    def register(handler: Callable[..., dict]) -> Callable[..., dict]:
        _HANDLERS[config_type] = handler
        return handler

    return register


def handler_for(config: object) -> Callable[..., dict]:
    """The handler registered for ``config``'s type (checks that it is a compression config)."""
    handler = _HANDLERS.get(type(config))
    if handler is None:
        names = ", ".join(sorted(t.__name__ for t in _HANDLERS))
        raise ArgumentError("config", f"{type(config).__name__} is not a compression config; use one of {names}")
    return handler


def compress(model: nn.Module, config: object | Sequence[object], **options) -> dict:
    """Rewrite ``model`` in place as ``config`` says; returns the report.

    ``config`` is one of the registered config types (FlatLLMConfig, SVDConfig, TTConfig,
    SatenConfig), or a list of them: a *recipe*, applied in order, each step to what the
    previous ones left (FLAT-LLM then TT on the narrowed layers, or TT on attention and Saten
    on the MLP).  ``options`` go to each handler that takes them (``calibration``: token
    windows [1, T]; ``progress``: called with each finished layer's index; ``budget`` for the
    SVD baselines).  What a handler cannot deliver (a ratio above the method's maximum for
    this model, calibration too small for its covariances) is refused before anything is
    rewritten.  A recipe's report lists every step's report under ``steps``; ``after_step``
    (recipes only) is called with the model and the step's report after each step, e.g. to
    measure perplexity there."""
    as_linears(model)  # GPT-2's Conv1D projections, which every handler finds as nn.Linear
    if isinstance(config, list | tuple):
        return compress_recipe(model, list(config), **options)
    return handler_for(config)(model, config, **options)


ALREADY_COMPRESSED = ("this model is already compressed; start from the dense model (several methods in turn: "
                      "one `compress recipe`, e.g. flat-llm then tt)")
RATE_REDUCTIONS = ("flat-llm", "svd", "svd-llm")  # methods that resize dense linears, so they go first


def compress_recipe(model: nn.Module, configs: list[object],
                    after_step: Callable[[nn.Module, dict], None] | None = None, **options) -> dict:
    """:func:`compress` with a list of configs (see there); the model records every step, so
    :func:`compressors.save` / ``load`` rebuild it."""
    if not configs:
        raise ArgumentError("config", "the recipe has no steps; give at least one compression config")
    handlers = [handler_for(c) for c in configs]  # every step is a known config before the first runs
    for i, c in enumerate(configs[1:], 1):
        if getattr(c, "method", None) in RATE_REDUCTIONS:
            raise ArgumentError("config", f"step {i + 1} ({c.method}) resizes dense linears: put it first in the "
                                          "recipe")
    if getattr(model.config, "shapesearch_compression", None):
        raise ShapesearchError(ALREADY_COMPRESSED)
    def counts() -> tuple[int, int]:
        return decoder_weight_params(model), total_params(model)

    before = counts()
    steps, records = [], []
    try:
        for config, handler in zip(configs, handlers):
            accepted = inspect.signature(handler).parameters
            report = handler(model, config, **{k: v for k, v in options.items() if k in accepted})
            records.append(model.config.shapesearch_compression)
            model.config.shapesearch_compression = None  # the next step starts from this model as it is
            report.update(zip(("decoder_linear_params_now", "params_now"), counts()))
            if after_step is not None:
                after_step(model, report)
            steps.append(report)
    finally:
        if records:
            model.config.shapesearch_compression = {"method": "recipe", "steps": records}
    after = counts()  # "decoder linear" parameters: what replaced them counts (TT cores, sparse values)
    return {"method": "recipe", "decoder_linear_params_before": before[0], "decoder_linear_params_after": after[0],
            "decoder_linear_removed": 1 - after[0] / before[0], "params_before": before[1], "params_after": after[1],
            "total_removed": 1 - after[1] / before[1], "steps": steps}


def check_ratio(ratio: float) -> None:
    """``ratio`` (fraction of decoder-linear parameters removed) must lie in (0, 1)."""
    if not 0.0 < ratio < 1.0:
        raise ArgumentError("ratio", f"must be in (0, 1) (fraction of decoder-linear parameters removed), "
                                     f"got {ratio}")


DELIVERY_TOLERANCE = 0.005  # |removed − ratio| a rank-reduction run may miss by (rounding to whole rows)


def format_ratio(ratio: float) -> str:
    """``ratio`` rounded down to 4 decimals, so that the number printed is itself reachable."""
    return f"{math.floor(ratio * 1e4) / 1e4:.4f}"


def calibration_tokens(calibration: list[torch.Tensor] | None) -> int:
    """Tokens in the calibration windows (each [1, T])."""
    return int(sum(w.numel() for w in calibration or []))


def check_calibration_size(tokens: int, needed: int, what: str, method: str) -> None:
    """Refuse calibration with fewer ``tokens`` than the ``needed`` rows of the largest
    covariance ``method`` estimates (``what`` names it, e.g. "MLP width 1536"): such a
    covariance is singular and the compressed model is garbage (perplexity in the billions)."""
    if tokens < needed:
        raise ShapesearchError(f"calibration has {tokens} tokens (samples × seqlen); {method} needs at least "
                               f"{needed} for this model's covariances ({what}) — raise samples or seqlen")


def check_delivery(method: str, ratio: float, removed: float, step: float = 0.0) -> None:
    """Refuse (before rewriting) a plan that would remove ``removed`` instead of ``ratio``;
    ``step``: the fraction one whole row per layer is worth (a small model cannot be cut finer)."""
    if abs(removed - ratio) > max(DELIVERY_TOLERANCE, step):
        raise ArgumentError("ratio", f"{ratio:g} cannot be met by {method} on this model: its layer sizes "
                                     f"would remove {removed:.4f} of the decoder-linear parameters; give another "
                                     "ratio")


def check_model(model: nn.Module, calibration: list[torch.Tensor] | None, needs_data: bool) -> None:
    """A dense decoder whose parts are found, and calibration windows when the method needs them."""
    check_decoder(model)
    if needs_data and not calibration:
        raise ShapesearchError("calibration data is empty; give calibration text with enough tokens")
    if getattr(model.config, "shapesearch_compression", None):
        raise ShapesearchError(ALREADY_COMPRESSED)


def decoder_counts(model: nn.Module) -> tuple[int, int]:
    """(decoder-linear parameters, all parameters) of ``model`` now."""
    return decoder_linear_params(model), total_params(model)


def decoder_report(model: nn.Module, record: dict, before: tuple[int, int], seconds: float,
                   calibration: list[torch.Tensor] | None) -> dict:
    """Record ``record`` in the model's config and return the rank-reduction report.

    ``before``: :func:`decoder_counts` of the dense model; ``seconds``: calibration and
    rewrite time in seconds."""
    model.config.shapesearch_compression = record
    (linear_before, total_before), (linear_after, total_after) = before, decoder_counts(model)
    return {
        "method": record["method"],
        "ratio": record["ratio"],
        "decoder_linear_params_before": linear_before,
        "decoder_linear_params_after": linear_after,
        "decoder_linear_removed": 1 - linear_after / linear_before,
        "params_before": total_before,
        "params_after": total_after,
        "total_removed": 1 - total_after / total_before,
        "calibration_seconds": seconds,
        "calibration_windows": len(calibration or []),
        "calibration_tokens": calibration_tokens(calibration),
        "layers": record["layers"],
    }
