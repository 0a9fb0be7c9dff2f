"""Unfolding-spectrum surrogate: guaranteed parameter upper bounds, by shortest path.

For fixed axis splits, the k-th TT unfolding of a tensorization depends only on the
*state* after k modes (how many digits of each axis are consumed), not on the path there.
So the spectra of all states are computed once; for d modes with the uniform per-cut
threshold δ = ε‖A‖/√(d−1), r(S) is the smallest rank whose tail is ≤ δ, and the cheapest
d-edge path from the empty to the full state, edge S→S' costing r(S)·n(S→S')·r(S'), is a
tensorization whose real TT-SVD (uniform or carry-over budget) has at most that many
parameters: projections only shrink singular values (Oseledets 2011, Thm 2.2).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .fitness import unfolding_spectrum
from .tensorization import AxisSplit, Tensorization, from_states
from .tt_svd import truncation_rank

if TYPE_CHECKING:
    from .executors import Executor

MAX_STATES = 2500
MAX_GRAM_FLOPS = 2e9  # unfoldings costlier than this keep the trivial bound r ≤ min(rows, cols)


@dataclass(frozen=True)
class SurrogateShape:
    shape: Tensorization
    bound_params: int


def lattice_states(axes: tuple[AxisSplit, ...]) -> list[tuple[int, ...]]:
    """All digit-count states, in an order where every state follows those it dominates."""
    return list(itertools.product(*(range(len(a.digits) + 1) for a in axes)))


def _unfolding_rows(axes: tuple[AxisSplit, ...], state: tuple[int, ...]) -> int:
    return math.prod(math.prod(a.digits[:k]) for a, k in zip(axes, state))


def compute_spectra(executor: Executor, axes: tuple[AxisSplit, ...]) -> dict[tuple[int, ...], np.ndarray]:
    """Squared singular values of the non-trivial unfoldings that are cheap enough, computed
    on the executor.  Kept in the executor's ``spectra`` dict (by axes) when it has one: the
    executor holds one tensor, so searches of it at several ε share the spectra."""
    cache = getattr(executor, "spectra", None)
    if cache is None:
        return _compute_spectra(executor, axes)
    if axes not in cache:
        cache[axes] = _compute_spectra(executor, axes)
    return cache[axes]


def _compute_spectra(executor: Executor, axes: tuple[AxisSplit, ...]) -> dict[tuple[int, ...], np.ndarray]:
    states = lattice_states(axes)
    full = states[-1]
    total = math.prod(a.padded for a in axes)

    def affordable(s) -> bool:
        rows = _unfolding_rows(axes, s)
        return total * min(rows, total // rows) <= MAX_GRAM_FLOPS

    inner = [s for s in states if any(s) and s != full and affordable(s)]
    plain_axes = tuple((a.size, a.digits) for a in axes)
    spectra = executor.map(unfolding_spectrum, [(plain_axes, s) for s in inner])
    return dict(zip(inner, spectra))


def _ranks(spectra: dict, axes: tuple[AxisSplit, ...], states: list, delta2: float) -> np.ndarray:
    """r(S) per state: from its spectrum, or min(rows, cols) where none was computed."""
    total = math.prod(a.padded for a in axes)
    ranks = np.ones(len(states))
    for i, s in enumerate(states[1:-1], start=1):
        eigs = spectra.get(s)
        if eigs is None:
            rows = _unfolding_rows(axes, s)
            ranks[i] = min(rows, total // rows)
            continue
        ranks[i] = truncation_rank(eigs, delta2)[0]
    return ranks


def shortest_paths(spectra: dict, axes: tuple[AxisSplit, ...], eps: float, norm: float,
                   orders: range) -> list[SurrogateShape]:
    """For each order d in ``orders``, the tensorization with the least bounded parameters."""
    states = lattice_states(axes)
    if len(states) > MAX_STATES:
        return []
    arr = np.array(states)
    logsize = np.zeros(len(states))
    for a, axis in enumerate(axes):
        prefix = np.concatenate([[0.0], np.cumsum(np.log(axis.digits))]) if axis.digits else np.zeros(1)
        logsize += prefix[arr[:, a]]
    dominated = np.all(arr[:, None, :] <= arr[None, :, :], axis=2) & ~np.eye(len(states), dtype=bool)
    # n(S→S') = size(S') / size(S): the product of the digits the edge adds
    edge = np.where(dominated, np.exp(logsize[None, :] - logsize[:, None]), np.inf)
    edge = np.round(edge)
    out = []
    for d in orders:
        delta2 = (eps * norm) ** 2 / max(d - 1, 1)
        r = _ranks(spectra, axes, states, delta2)
        cost = r[:, None] * edge * r[None, :]
        best = np.full(len(states), np.inf)
        best[0] = 0.0
        back = []
        for _ in range(d):
            total = best[:, None] + cost
            arg = np.argmin(total, axis=0)
            best = total[arg, np.arange(len(states))]
            back.append(arg)
        if not np.isfinite(best[-1]):
            continue
        path, node = [len(states) - 1], len(states) - 1
        for arg in reversed(back):
            node = int(arg[node])
            path.append(node)
        chain = [states[i] for i in reversed(path)]
        out.append(SurrogateShape(from_states(axes, chain), int(best[-1])))
    return out


def surrogate_seeds(executor: Executor, axes: tuple[AxisSplit, ...], eps: float, norm: float,
                    max_order: int = 12) -> list[SurrogateShape]:
    """Bounded-best shapes for d = 2 … max_order (none if the lattice is too large)."""
    if len(lattice_states(axes)) > MAX_STATES:
        return []
    total_digits = sum(len(a.digits) for a in axes)
    spectra = compute_spectra(executor, axes)
    top = min(max_order, total_digits)
    return shortest_paths(spectra, axes, eps, norm, range(2, top + 1))

