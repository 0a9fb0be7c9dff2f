"""Error-bounded TT-SVD on TensorLy backend ops (numpy, pytorch, ...).

Left-to-right sweep.  At cut k the discarded tail δ_k obeys Σ δ_k² ≤ ε²‖A‖²
(Oseledets 2011, Thm 2.2), so ‖A − Â‖_F ≤ ε‖A‖_F.  With ``carry_over`` the budget a cut
leaves unused is handed to the later cuts: δ_k² = (ε²‖A‖² − spent) / (d − k).
``method="gram"`` takes the eigen-decomposition of the Gram matrix of the smaller side
(fast, for the search); ``method="svd"`` a thin SVD (for confirming a final answer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorly as tl
from tensorly.tt_tensor import TTTensor

from ..errors import ArgumentError


@dataclass
class TTResult:
    """Cores (backend tensors), TT ranks (with the two boundary 1s), parameter count and
    relative Frobenius error predicted from the discarded tails."""

    cores: list
    ranks: tuple[int, ...]
    params: int
    rel_error: float

    def to_tensor(self):
        return tl.tt_to_tensor(TTTensor(self.cores))


def truncation_rank(eigs: np.ndarray, delta2: float, energy: float | None = None,
                    max_rank: int | None = None) -> tuple[int, float]:
    """The rank rule of every truncation (TT-SVD and the surrogate's bounds): the smallest
    rank r ≥ 1 whose discarded tail energy is ≤ ``delta2`` (at most ``max_rank``, whatever the
    tail then is).  Returns (r, tail).

    ``eigs``: squared singular values, descending; ``energy``: the unfolding's ‖·‖_F²
    (default: the sum of ``eigs``, for a full spectrum); ``delta2`` in the same squared units.
    """
    eigs = np.clip(eigs, 0.0, None)
    kept = np.cumsum(eigs)
    if energy is None:
        energy = eigs.sum()
    tails = np.maximum(energy - kept, 0.0)  # tails[r-1] = energy discarded when keeping r
    r = int(np.searchsorted(-tails, -delta2, side="left")) + 1
    r = min(max(r, 1), len(eigs), len(eigs) if max_rank is None else max(int(max_rank), 1))
    return r, float(tails[r - 1])


def _decompose(mat, method: str) -> tuple:
    """The full factorisation of an unfolding that :func:`_truncate` cuts at any rank: (method,
    squared singular values descending as float64, ‖mat‖², factors)."""
    m, n = tl.shape(mat)
    if method == "svd":
        energy = frobenius_norm(mat) ** 2
        u, s, vt = tl.svd(mat, full_matrices=False)
        return method, tl.to_numpy(s).astype(np.float64) ** 2, energy, (u, s, vt)
    if method != "gram":
        raise ArgumentError("method", f"{method!r} is unknown; use 'gram' or 'svd'")
    gram = tl.dot(mat, tl.transpose(mat)) if m <= n else tl.dot(tl.transpose(mat), mat)
    energy = float(np.trace(tl.to_numpy(gram).astype(np.float64)))  # = ‖mat‖²
    w, v = tl.eigh(gram)  # ascending
    return method, tl.to_numpy(w)[::-1].astype(np.float64), energy, (w, v)


def _truncate(mat, decomposition: tuple, r: int):
    """mat ≈ U @ C with orthonormal U of rank ``r``, from :func:`_decompose`.  Returns (U, C)."""
    method, _, _, factors = decomposition
    if method == "svd":
        u, s, vt = factors
        return u[:, :r], tl.reshape(s[:r], (r, 1)) * vt[:r, :]
    w, v = factors
    m, n = tl.shape(mat)
    if m <= n:
        u = tl.flip(v, axis=1)[:, :r]
        return u, tl.dot(tl.transpose(u), mat)
    v = tl.flip(v, axis=1)[:, :r]
    s = tl.sqrt(tl.clip(tl.flip(w)[:r], 1e-300, None))
    u = tl.dot(mat, v) / tl.reshape(s, (1, r))
    return u, tl.reshape(s, (r, 1)) * tl.transpose(v)


def tt_svd(tensor, eps: float, *, norm: float | None = None, carry_over: bool = True,
           method: str = "gram", reverse: bool = False, max_ranks: tuple[int, ...] | None = None) -> TTResult:
    """TT-SVD of ``tensor`` with relative error ≤ ``eps`` (Frobenius).

    ``norm`` is the reference ‖A‖_F the bound is relative to (default: the tensor's own;
    pass the unpadded norm for a zero-padded tensor so the bound holds on the original data).
    ``reverse`` sweeps right to left: same guarantee, often other ranks.  ``max_ranks`` (TT
    ranks with the boundary 1s, e.g. what a search found on other data) caps each rank: the
    parameters never exceed theirs, and the bound holds only where no cap binds (the returned
    ``rel_error`` says what was reached).
    """
    return tt_svd_grid(tensor, (eps,), norm=norm, carry_over=carry_over, method=method, reverse=reverse,
                       max_ranks=max_ranks)[0]


def tt_svd_grid(tensor, eps_grid, *, norm: float | None = None, carry_over: bool = True,
                method: str = "gram", reverse: bool = False,
                max_ranks: tuple[int, ...] | None = None) -> list[TTResult]:
    """:func:`tt_svd` at each ε of ``eps_grid``.  Sweeps share what they have in common: the
    first unfolding (the whole tensor) is factorised once, and sweeps that kept the same ranks
    so far share the next unfoldings' factorisations too (same ranks, same carried matrix)."""
    for eps in eps_grid:
        if not 0.0 <= eps < 1.0:
            raise ArgumentError("eps", f"must be in [0, 1) (relative Frobenius error), got {eps}")
    if max_ranks is not None and len(max_ranks) != tl.ndim(tensor) + 1:
        raise ArgumentError("max_ranks", f"needs {tl.ndim(tensor) + 1} TT ranks (the boundary 1s included) for a "
                                         f"{tl.ndim(tensor)}-way tensor, got {tuple(max_ranks)}")
    if reverse:
        order = tuple(range(tl.ndim(tensor)))[::-1]
        tts = tt_svd_grid(tl.transpose(tensor, order), eps_grid, norm=norm, carry_over=carry_over, method=method,
                          max_ranks=None if max_ranks is None else tuple(max_ranks)[::-1])
        return [TTResult([tl.transpose(c, (2, 1, 0)) for c in reversed(tt.cores)], tt.ranks[::-1], tt.params,
                         tt.rel_error) for tt in tts]
    shape = tl.shape(tensor)
    ref = frobenius_norm(tensor) if norm is None else float(norm)
    if len(shape) == 1:
        return [TTResult([tl.reshape(tensor, (1, shape[0], 1))], (1, 1), shape[0], 0.0) for _ in eps_grid]
    memo: dict = {(): (tl.reshape(tensor, (shape[0], -1)), None)}
    out = []
    for i, eps in enumerate(eps_grid):
        last = i == len(eps_grid) - 1
        tt, memo = _sweep(memo, shape, (eps * ref) ** 2, ref, carry_over, method, keep=not last, max_ranks=max_ranks)
        out.append(tt)
    return out


def _sweep(memo: dict, shape: tuple, budget: float, ref: float, carry_over: bool, method: str,
           keep: bool = True, max_ranks: tuple[int, ...] | None = None) -> tuple[TTResult, dict]:
    """The left-to-right sweep with squared error budget ``budget``.  ``memo``: the previous
    sweep's steps — by the ranks kept so far, the unfolding and its factorisation; by those ranks and the next one, the
    truncation.  Returns the TT and this sweep's steps (the grid is sorted, so neighbours share
    the most; keeping one path bounds the memory).  ``keep`` False (the last sweep) records
    nothing, so each step's unfolding and factors are freed as the sweep moves on."""
    d = len(shape)
    spent = 0.0
    cores, ranks = [], [1]
    path: dict = {}
    carry = None
    for k in range(d - 1):
        prefix = tuple(ranks[1:])
        mat, decomposition = memo.get(prefix) or (tl.reshape(carry, (ranks[-1] * shape[k], -1)), None)
        if decomposition is None:
            decomposition = _decompose(mat, method)
        if keep:
            path[prefix] = (mat, decomposition)
        delta2 = (budget - spent) / (d - 1 - k) if carry_over else budget / (d - 1)
        r, tail = truncation_rank(decomposition[1], max(delta2, 0.0), decomposition[2],
                                  None if max_ranks is None else max_ranks[k + 1])
        cut = ("cut", *prefix, r)
        u, carry = memo.get(cut) or _truncate(mat, decomposition, r)
        if keep:
            path[cut] = (u, carry)
        spent += tail
        cores.append(tl.reshape(u, (ranks[-1], shape[k], r)))
        ranks.append(r)
    cores.append(tl.reshape(carry, (ranks[-1], shape[-1], 1)))
    ranks.append(1)
    params = sum(int(math.prod(tl.shape(c))) for c in cores)
    rel = math.sqrt(spent) / ref if ref > 0 else 0.0
    return TTResult(cores, tuple(ranks), params, rel), path


def tt_params(ranks: tuple[int, ...], mode_sizes: tuple[int, ...]) -> int:
    """Parameters of a TT with these ranks (boundary 1s included) and mode sizes."""
    return sum(ranks[k] * n * ranks[k + 1] for k, n in enumerate(mode_sizes))


def frobenius_norm(tensor) -> float:
    """‖tensor‖_F as one inner product: no temporary copies (``tl.norm`` makes two, which
    matters for a tensor of 100 M entries)."""
    flat = tl.reshape(tensor, (-1,))
    return math.sqrt(max(float(tl.to_numpy(tl.dot(flat, flat))), 0.0))


def relative_error(reference, approximation) -> float:
    """‖reference − approximation‖_F / ‖reference‖_F, measured."""
    return frobenius_norm(reference - approximation) / frobenius_norm(reference)
