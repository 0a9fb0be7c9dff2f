"""How one candidate is scored: plain functions of (tensor, norm, item) that run in a worker.

They take plain tuples (a tensorization's canonical key) and return plain dicts, so any
executor (in-process or Ray) can ship them without pickling project classes.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from .tensorization import AxisSplit, Tensorization
from .tt_svd import relative_error, tt_svd


@dataclass(frozen=True)
class EvalSettings:
    """ε (relative Frobenius error), budget carry-over, the fast path's method and dtype."""

    eps: float
    carry_over: bool = True
    method: str = "gram"
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return asdict(self)


_CAST: dict = {}  # (id, dtype) -> (tensor, cast copy): a worker casts its tensor once


def _as_dtype(tensor: np.ndarray, dtype: str) -> np.ndarray:
    key = (id(tensor), dtype)
    if key not in _CAST or _CAST[key][0] is not tensor:
        _CAST.clear()
        _CAST[key] = (tensor, tensor.astype(dtype, copy=False))
    return _CAST[key][1]


def cost_estimate(shape: Tensorization) -> float:
    """Rough cost of scoring ``shape``: the Gram matrix of its first unfolding (N·min side)."""
    sizes = shape.mode_sizes[::-1] if shape.reverse_sweep else shape.mode_sizes
    total = math.prod(sizes)
    return float(total) * min(sizes[0], total // sizes[0])


def _decompose(tensor: np.ndarray, norm: float, item: tuple, dtype: str, method: str):
    """(shape, TT of the tensorized data) for a (key, settings) work item."""
    key, settings = item
    settings = EvalSettings(**settings)
    shape = Tensorization.from_key(key)
    data = shape.apply(_as_dtype(tensor, dtype))
    return shape, tt_svd(data, settings.eps, norm=norm, carry_over=settings.carry_over, method=method,
                         reverse=shape.reverse_sweep)


def score(tensor: np.ndarray, norm: float, item: tuple) -> dict:
    """Fast fitness: TT-SVD on the tensorized data; error predicted from the discarded tails."""
    start = time.perf_counter()
    settings = EvalSettings(**item[1])
    _, tt = _decompose(tensor, norm, item, settings.dtype, settings.method)
    return {"params": tt.params, "ranks": list(tt.ranks), "rel_error": tt.rel_error,
            "seconds": time.perf_counter() - start}


def confirm(tensor: np.ndarray, norm: float, item: tuple) -> dict:
    """Float64 SVD sweep; the error is *measured* by reconstruction on the unpadded data."""
    start = time.perf_counter()
    shape, tt = _decompose(tensor, norm, item, "float64", "svd")
    approx = shape.invert(np.asarray(tt.to_tensor()))
    return {"params": tt.params, "ranks": list(tt.ranks), "predicted_error": tt.rel_error,
            "rel_error": relative_error(tensor.astype(np.float64, copy=False), approx),
            "cores": [np.asarray(c) for c in tt.cores], "seconds": time.perf_counter() - start}


def unfolding_spectrum(tensor: np.ndarray, norm: float, item: tuple) -> np.ndarray:
    """Squared singular values (descending, float64) of the unfolding whose rows are the
    first ``state[a]`` digits of every axis ``a``."""
    axes, state = item
    axes = tuple(AxisSplit(n, tuple(d)) for n, d in axes)
    rest = tuple(len(a.digits) - s for a, s in zip(axes, state))
    shape = Tensorization(axes, (tuple(state), rest))
    mat = shape.apply(tensor.astype(np.float64, copy=False))
    rows, cols = shape.mode_sizes
    mat = mat.reshape(rows, cols)
    gram = mat @ mat.T if rows <= cols else mat.T @ mat
    return np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None)
