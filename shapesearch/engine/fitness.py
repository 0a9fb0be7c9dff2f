"""How one candidate is scored: plain functions of (tensor, norm, item) that run in a worker.

They take plain tuples (a tensorization's canonical key) and return plain dicts, so any
executor (in-process or Ray) can ship them without pickling project classes.  ``tensor`` is
the array itself or, from an executor, the :class:`HeldTensor` it keeps, whose cast copies
then last as long as the executor (a worker casts its tensor to float32 once, not per task).
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

    @classmethod
    def for_eps(cls, eps: float, carry_over: bool = True) -> EvalSettings:
        """The fastest scoring that resolves ``eps``: a float32 Gram resolves singular values to
        about 3e-4 of the largest, a float64 Gram to about 1e-8; below that, a float64 SVD."""
        if eps >= 1e-3:
            return cls(eps, carry_over)
        return cls(eps, carry_over, "gram" if eps >= 1e-6 else "svd", "float64")


class HeldTensor:
    """The tensor an executor (or one of its workers) holds, with the copies of it cast to
    other dtypes, each made on first use and kept."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self._cast: dict[str, np.ndarray] = {}

    def as_dtype(self, dtype: str) -> np.ndarray:
        """The tensor in ``dtype`` (itself when it already has it)."""
        if dtype not in self._cast:
            self._cast[dtype] = self.array.astype(dtype, copy=False)
        return self._cast[dtype]


Source = np.ndarray | HeldTensor  # what a scoring function receives as ``tensor``


def _as_dtype(tensor: Source, dtype: str) -> np.ndarray:
    if isinstance(tensor, HeldTensor):
        return tensor.as_dtype(dtype)
    return tensor.astype(dtype, copy=False)


def cost_estimate(shape: Tensorization) -> float:
    """Rough cost of scoring ``shape``: the Gram matrix of its first unfolding (N·min side)."""
    sizes = shape.mode_sizes[::-1] if shape.reverse_sweep else shape.mode_sizes
    total = math.prod(sizes)
    return float(total) * min(sizes[0], total // sizes[0])


def _decompose(tensor: Source, norm: float, item: tuple, dtype: str, method: str):
    """(shape, TT of the tensorized data) for a (key, settings) work item."""
    key, settings = item
    settings = EvalSettings(**settings)
    shape = Tensorization.from_key(key)
    data = shape.apply(_as_dtype(tensor, dtype))
    return shape, tt_svd(data, settings.eps, norm=norm, carry_over=settings.carry_over, method=method,
                         reverse=shape.reverse_sweep)


def score(tensor: Source, norm: float, item: tuple) -> dict:
    """Fast fitness: TT-SVD on the tensorized data; error predicted from the discarded tails.

    ``norm``: ‖tensor‖_F, the reference of ε; ``item``: (tensorization key, settings dict).
    Returns TT parameters, ranks, the predicted relative error and the seconds it took."""
    start = time.perf_counter()
    settings = EvalSettings(**item[1])
    _, tt = _decompose(tensor, norm, item, settings.dtype, settings.method)
    return {"params": tt.params, "ranks": list(tt.ranks), "rel_error": tt.rel_error,
            "seconds": time.perf_counter() - start}


LARGE = 2**24  # entries above which a confirmation factorises Gram matrices, not the data


def confirm(tensor: Source, norm: float, item: tuple) -> dict:
    """Float64 sweep; the error is *measured* by reconstruction on the unpadded data.

    The sweep takes SVDs, or above :data:`LARGE` entries the float64 Gram route (an SVD of a
    100 M-entry unfolding holds three more copies of it; the Gram resolves ε ≥ 1e-6 and the
    error is measured either way).  As :func:`score`, plus the predicted error and the cores
    (float64 arrays)."""
    start = time.perf_counter()
    large = _as_dtype(tensor, "float64").size > LARGE and item[1]["eps"] >= 1e-6
    shape, tt = _decompose(tensor, norm, item, "float64", "gram" if large else "svd")
    approx = shape.invert(np.asarray(tt.to_tensor()))
    return {"params": tt.params, "ranks": list(tt.ranks), "predicted_error": tt.rel_error,
            "rel_error": relative_error(_as_dtype(tensor, "float64"), approx),
            "cores": [np.asarray(c) for c in tt.cores], "seconds": time.perf_counter() - start}


def unfolding_spectrum(tensor: Source, norm: float, item: tuple) -> np.ndarray:
    """Squared singular values (descending, float64) of the unfolding whose rows are the
    first ``state[a]`` digits of every axis ``a``."""
    axes, state = item
    axes = tuple(AxisSplit(n, tuple(d)) for n, d in axes)
    rest = tuple(len(a.digits) - s for a, s in zip(axes, state))
    shape = Tensorization(axes, (tuple(state), rest))
    mat = shape.apply(_as_dtype(tensor, "float64"))
    rows, cols = shape.mode_sizes
    mat = mat.reshape(rows, cols)
    gram = mat @ mat.T if rows <= cols else mat.T @ mat
    return np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None)
