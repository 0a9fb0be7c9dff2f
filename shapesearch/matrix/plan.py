"""The layer plan: which TT shape each linear of a model gets, as versioned JSON.

``shapesearch layers`` (via :func:`shapesearch.matrix.layer_search.make_plan`) writes it and
the compressors (``compressors.tt_compress``) read it.  ε is the relative Frobenius error
‖W − W_TT‖_F / ‖W‖_F of a layer; parameters are stored values (TT cores, no bias).

Version 1 is the schema ``shapesearch layers`` has always written; files from before the
``version`` field existed are read as version 1.  Only the fields a compressor needs are
required per layer (format, out_modes, in_modes, eps), so a hand-written plan works too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ShapesearchError
from .formats import Format

PLAN_VERSION = 1
_WRITE = "write one with `shapesearch layers`"


def _fail(problem: str) -> ShapesearchError:
    return ShapesearchError(f"{problem}; {_WRITE}")


def _modes(where: str, key: str, value: Any) -> tuple[int, ...]:
    if not (isinstance(value, list | tuple) and value
            and all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in value)):
        raise _fail(f"{where}: {key} must be a non-empty list of positive integers, got {value!r}")
    return tuple(value)


def _number(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise _fail(f"{where}: {key} must be a finite number >= 0, got {value!r}")
    return value


@dataclass(frozen=True)
class BalancedShape:
    """The reference shape TT-SVD'd at the layer's ε, for comparison: the Saten authors' fixed (balanced)
    shape, or in an activation-aware plan the rank factorization (see ``layer_search``)."""

    out_modes: tuple[int, ...]
    in_modes: tuple[int, ...]
    ranks: tuple[int, ...]
    params: int
    rel_error: float

    def to_dict(self) -> dict:
        return {"out_modes": list(self.out_modes), "in_modes": list(self.in_modes), "ranks": list(self.ranks),
                "params": self.params, "rel_error": self.rel_error}

    @classmethod
    def from_dict(cls, d: dict) -> BalancedShape:
        return cls(tuple(d["out_modes"]), tuple(d["in_modes"]), tuple(d["ranks"]), d["params"], d["rel_error"])


@dataclass(frozen=True)
class LayerPlan:
    """One layer's TT shape: ``format`` with ``out_modes`` × ``in_modes`` (Π = out/in features),
    TT-SVD'd at relative Frobenius error ``eps`` sweeping right to left if ``reverse_sweep``.

    The search also records what it found (``ranks``, ``params`` = TT parameters,
    ``rel_error`` measured, the ``balanced`` shape at the same ε, GA ``evaluations`` and
    ``seconds``); the model adds ``type`` (name without block index) and ``bias``.  These are
    ``None`` in a hand-written plan.

    ``error_space`` "activation": ε (and ``rel_error``) are relative errors on the layer's
    calibration inputs, ‖(W − Ŵ)X‖_F / ‖W X‖_F, and the layer is built whitened by their second
    moment (``compressors.whitening``); ``held_out_error`` is that error measured on held-back
    calibration windows.  None: ε is the weight error ‖W − Ŵ‖_F / ‖W‖_F."""

    format: Format
    eps: float
    out_modes: tuple[int, ...]
    in_modes: tuple[int, ...]
    reverse_sweep: bool = False
    ranks: tuple[int, ...] | None = None
    params: int | None = None
    rel_error: float | None = None
    balanced: BalancedShape | None = None
    evaluations: int | None = None
    seconds: float | None = None
    type: str | None = None
    bias: bool | None = None
    error_space: str | None = None
    held_out_error: float | None = None
    rows: int | None = None  # an embedding table's real rows (out_features is its padded vocabulary)

    @property
    def activation_aware(self) -> bool:
        return self.error_space == "activation"

    @property
    def out_features(self) -> int:
        return math.prod(self.out_modes)

    @property
    def in_features(self) -> int:
        return math.prod(self.in_modes)

    @property
    def dense_params(self) -> int:
        """Entries of the dense weight, out·in (bias not included; an embedding's padding rows
        neither: they are not part of the original)."""
        return (self.rows or self.out_features) * self.in_features

    @property
    def balanced_params(self) -> int | None:
        return None if self.balanced is None else self.balanced.params

    def to_dict(self) -> dict:
        """JSON-ready record (fields that are ``None`` are left out)."""
        d = {"format": self.format.value, "eps": self.eps, "out_features": self.out_features,
             "in_features": self.in_features, "out_modes": list(self.out_modes), "in_modes": list(self.in_modes),
             "reverse_sweep": self.reverse_sweep, "ranks": None if self.ranks is None else list(self.ranks),
             "params": self.params, "dense_params": self.dense_params, "rel_error": self.rel_error,
             "balanced": None if self.balanced is None else self.balanced.to_dict(),
             "balanced_params": self.balanced_params, "evaluations": self.evaluations, "seconds": self.seconds,
             "type": self.type, "bias": self.bias, "error_space": self.error_space,
             "held_out_error": self.held_out_error, "rows": self.rows}
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, d: Any, name: str = "layer") -> LayerPlan:
        """A record as :meth:`to_dict` writes it, checked; ShapesearchError says what is wrong."""
        where = f"plan layer {name}"
        if not isinstance(d, dict):
            raise _fail(f"{where} is not a JSON object")
        missing = {"format", "out_modes", "in_modes", "eps"} - set(d)
        if missing:
            raise _fail(f"{where} lacks {sorted(missing)}")
        if d["format"] not in tuple(Format):
            raise _fail(f"{where}: format must be one of {', '.join(Format)}, got {d['format']!r}")
        out_modes, in_modes = _modes(where, "out_modes", d["out_modes"]), _modes(where, "in_modes", d["in_modes"])
        for key, modes in (("out_features", out_modes), ("in_features", in_modes)):
            if key in d and d[key] != math.prod(modes):
                raise _fail(f"{where}: {key} {d[key]} is not the product of its modes {list(modes)}")
        rows = d.get("rows")
        if rows is not None and not (isinstance(rows, int) and not isinstance(rows, bool)
                                     and 1 <= rows <= math.prod(out_modes)):
            raise _fail(f"{where}: rows must be a whole number from 1 to out_features, got {rows!r}")
        if d.get("error_space") not in (None, "weight", "activation"):
            raise _fail(f"{where}: error_space must be 'weight' or 'activation', got {d['error_space']!r}")
        balanced = d.get("balanced")
        try:
            return cls(format=Format(d["format"]), eps=_number(where, "eps", d["eps"]), out_modes=out_modes,
                       in_modes=in_modes, reverse_sweep=bool(d.get("reverse_sweep", False)),
                       ranks=None if d.get("ranks") is None else tuple(d["ranks"]), params=d.get("params"),
                       rel_error=d.get("rel_error"),
                       balanced=None if balanced is None else BalancedShape.from_dict(balanced),
                       evaluations=d.get("evaluations"), seconds=d.get("seconds"), type=d.get("type"),
                       bias=d.get("bias"), error_space=d.get("error_space"),
                       held_out_error=d.get("held_out_error"), rows=rows)
        except (KeyError, TypeError) as exc:
            raise _fail(f"{where} has a malformed record ({exc!r})") from exc


@dataclass(frozen=True)
class PlanSummary:
    """Totals over a plan's layers: parameters (TT and dense, balanced shapes), compression
    = dense / TT parameters, the budget and whether it is met, and the overall relative error
    √(Σ ε_l² ‖W_l‖²_F / Σ ‖W_l‖²_F)."""

    layers: int
    dense_params: int
    params: int
    balanced_params: int
    compression: float
    budget: int | None
    fits_budget: bool
    rel_error_all: float

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> PlanSummary:
        return cls(**{f.name: d[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Plan:
    """A TT shape per layer name (dotted, from the model root), with where it came from:
    ``model`` searched, ``format``, the single ``eps`` searched or, under a budget, the
    ``eps_grid`` each layer picked from.  An activation-aware plan records its ``calibration``
    (``windows`` fitted, ``held_out_windows``, ``tokens`` per window, ``sensitivity``): the
    compressor whitens with the first ``windows`` of the same calibration windows."""

    layers: dict[str, LayerPlan]
    model: str | None = None
    format: Format | None = None
    eps: float | None = None
    eps_grid: tuple[float, ...] | None = None
    summary: PlanSummary | None = None
    calibration: dict | None = None
    version: int = field(default=PLAN_VERSION)

    def __post_init__(self) -> None:
        if not self.layers:
            raise _fail("the plan lists no layers")

    def to_dict(self) -> dict:
        return {"version": self.version, "model": self.model,
                "format": None if self.format is None else self.format.value, "eps": self.eps,
                "eps_grid": None if self.eps_grid is None else list(self.eps_grid),
                "layers": {name: rec.to_dict() for name, rec in self.layers.items()},
                "summary": None if self.summary is None else self.summary.to_dict(),
                **({} if self.calibration is None else {"calibration": self.calibration})}

    @classmethod
    def from_dict(cls, d: Any) -> Plan:
        """A plan as :meth:`to_dict` writes it (or as written before the version field), checked."""
        if not isinstance(d, dict):
            raise _fail("the plan is not a JSON object")
        version = d.get("version", 1)  # files from before the field are version 1
        if version != PLAN_VERSION:
            raise ShapesearchError(f"plan version {version!r} is not one this shapesearch reads ({PLAN_VERSION}); "
                                   f"upgrade shapesearch or {_WRITE}")
        layers = d.get("layers")
        if not isinstance(layers, dict) or not layers:
            raise _fail("the plan lists no layers")
        recs = {name: LayerPlan.from_dict(rec, name) for name, rec in layers.items()}
        fmt = d.get("format")
        if fmt is not None and fmt not in tuple(Format):
            raise _fail(f"the plan's format must be one of {', '.join(Format)}, got {fmt!r}")
        summary = d.get("summary")
        try:
            summary = None if summary is None else PlanSummary.from_dict(summary)
        except (KeyError, TypeError) as exc:
            raise _fail(f"the plan's summary is malformed ({exc!r})") from exc
        grid = d.get("eps_grid")
        calibration = d.get("calibration")
        if any(r.activation_aware for r in recs.values()) and not (
                isinstance(calibration, dict) and isinstance(calibration.get("windows"), int)
                and calibration["windows"] >= 1):
            raise _fail("an activation-aware plan needs its calibration record (windows >= 1)")
        return cls(layers=recs, model=d.get("model"), format=None if fmt is None else Format(fmt), eps=d.get("eps"),
                   eps_grid=None if grid is None else tuple(grid), summary=summary, calibration=calibration,
                   version=version)

    def save(self, path: str | Path) -> Path:
        """Write the plan as JSON (parent folders created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read and check a plan file; ShapesearchError says what to do if it is not one."""
        path = Path(path)
        if path.is_dir():
            raise ShapesearchError(f"plan {path} is a directory; give the plan's .json file")
        if not path.is_file():
            raise ShapesearchError(f"plan {path} not found; write one with `shapesearch layers --out {path}`")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _fail(f"plan {path} is not JSON ({exc})") from exc
        return cls.from_dict(data)
