"""What a job may ask for: the options of its command-line twin, checked at submission.

A job's ``params`` are the CLI command's options by their long names (``eps``,
``population``, ``no_carry_over`` …, written with underscores); :func:`check_params` refuses
an unknown option or a bad value with the same one-line message the command prints, and
returns the options with their defaults filled in — what the driver then runs.  A layers or
compress job's values are checked by the library's own config objects (:func:`layers_request`,
:func:`compress_configs`: what the compress driver runs), once its paths are known to be
readable: a bad value is refused at submission, not after the job has waited in the queue and
loaded its model.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import TYPE_CHECKING

from ..engine.search import SearchConfig
from ..errors import ArgumentError, ShapesearchError

if TYPE_CHECKING:
    from compressors.layer_plans import PlanRequest

KINDS = ("image", "tensor", "layers", "compress")

# options every job takes besides its command's: scheduling
SCHEDULING = {"priority": int, "cpus": int}

_SEARCH = {"eps": float, "seed": int, "generations": int, "population": int, "stall": int, "restarts": int,
           "time_limit": float, "no_carry_over": bool}
OPTIONS: dict[str, dict[str, type]] = {
    "image": {**_SEARCH, "path": str},
    "tensor": {**_SEARCH, "path": str, "key": str},
    "layers": {"model": str, "eps": float, "format": str, "budget": float, "eps_grid": list, "layers": str,
               "generations": int, "population": int, "seed": int, "embeddings": bool},
    "compress": {"compressor": str, "model": str, "plan": str, "density": float, "nm": str, "finetune_steps": int,
                 "lr": float, "distill": bool, "ratio": float, "method": str, "uniform": bool, "calib": str,
                 "samples": int, "seqlen": int, "seed": int, "plain_embedding": bool, "dense_inputs": bool,
                 "lr_schedule": str, "warmup": float, "alternations": int},
}
# the defaults of the commands that are not SearchConfig's
DEFAULTS = {
    "layers": {"eps": 0.3, "format": "ttm", "generations": 20, "population": 16, "seed": 0},
    "compress": {"ratio": 0.2, "method": "flat-llm", "samples": 32, "seqlen": 512, "seed": 0, "finetune_steps": 0,
                 "lr": 1e-4, "distill": False, "uniform": False, "lr_schedule": "constant", "warmup": 0.0,
                 "alternations": 0},
}


def _typed(name: str, value: object, kind: type) -> object:
    if kind is bool:
        if not isinstance(value, bool):
            raise ArgumentError(name, f"must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgumentError(name, f"must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ArgumentError(name, f"must be a finite number, got {value!r}")
        return float(value)
    if kind is list:
        if not isinstance(value, list) or not value:
            raise ArgumentError(name, f"must be a non-empty list, got {value!r}")
        return [_typed(name, v, float) for v in value]
    if not isinstance(value, str) or not value:
        raise ArgumentError(name, f"must be a non-empty string, got {value!r}")
    return value


def check_params(kind: str, params: object) -> dict:
    """``params`` of a ``kind`` job, typed, checked and with defaults; ShapesearchError /
    ArgumentError (naming the option) otherwise."""
    if kind not in KINDS:
        raise ShapesearchError(f"unknown job kind {kind!r}; use one of {', '.join(KINDS)}")
    if not isinstance(params, dict):
        raise ShapesearchError(f"job options must be a JSON object, got {type(params).__name__}")
    allowed = {**OPTIONS[kind], **SCHEDULING}
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ShapesearchError(f"{kind} jobs take no option {unknown[0]!r}; they take {', '.join(sorted(allowed))}")
    out = {**DEFAULTS.get(kind, {}), **{k: _typed(k, v, allowed[k]) for k, v in params.items() if v is not None}}
    if "priority" in out and not -1000 <= out["priority"] <= 1000:
        raise ArgumentError("priority", f"must be in [-1000, 1000], got {out['priority']}")
    if "cpus" in out and out["cpus"] < 1:
        raise ArgumentError("cpus", f"must be >= 1 (evaluation tasks in flight), got {out['cpus']}")
    if kind in ("image", "tensor"):
        search_config(out)  # raises what the command would
    if kind == "compress" and out.get("compressor") not in ("flat-llm", "tt", "saten"):
        raise ArgumentError("compressor", f"must be flat-llm, tt or saten, got {out.get('compressor')!r}")
    if kind in ("layers", "compress") and "model" not in out:
        raise ArgumentError("model", "is required: smollm2, minilm, or a model directory the server may read")
    return out


def search_config(params: dict) -> SearchConfig:
    """The SearchConfig of an image/tensor job's checked params."""
    names = {f.name for f in fields(SearchConfig)}  # (``upload``, the file's name, is not a setting)
    given = {k: v for k, v in params.items() if k in names}
    if params.get("no_carry_over"):
        given["carry_over"] = False
    return SearchConfig(**given)


def layers_request(params: dict) -> PlanRequest:
    """The PlanRequest a layers job's checked params describe (its values checked there)."""
    from compressors.layer_plans import PlanRequest  # torch: imported once, at the first such job

    from ..matrix.layer_search import DEFAULT_EPS_GRID

    return PlanRequest(eps=params["eps"], budget=params.get("budget"), format=params["format"],
                       eps_grid=tuple(params.get("eps_grid") or DEFAULT_EPS_GRID), layers=params.get("layers"),
                       generations=params["generations"], population=params["population"], seed=params["seed"])


def compress_configs(params: dict) -> tuple[object, object]:
    """(compression config, fine-tune config) of a compress job's checked params, with its
    calibration windows checked: what the driver runs; the plan file is read here."""
    from compressors.model_jobs import check_windows, compression_config, finetune_config  # torch, once

    check_windows(params["samples"], params["seqlen"])
    config = compression_config(params["compressor"], ratio=params["ratio"], method=params["method"],
                                uniform=params["uniform"], plan=params.get("plan"), density=params.get("density"),
                                nm=params.get("nm"), finetune_steps=params["finetune_steps"],
                                dense_inputs=params.get("dense_inputs", False),
                                alternations=params.get("alternations", 0))
    tune = finetune_config(**{k: params[k] for k in ("finetune_steps", "lr", "distill", "lr_schedule", "warmup")})
    return config, tune
