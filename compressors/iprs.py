"""Importance-preserving rank selection (IPRS) from FLAT-LLM.

Importance t_l = mean over tokens of arccos(clamp(cos(x_in, x_out), 0, 1)) / π (the
authors' code, not the paper's arccos-of-the-mean); the target ratio s (fraction of
decoder-linear parameters removed) maps to a mean keep ratio r̄; keep ratios are
allocated proportionally to t_l with a cap at 1 (paper Alg. 1) and, optionally, a floor
(the least a layer can keep).
"""

from __future__ import annotations

import math

import torch


def layer_importance(x_in: torch.Tensor, x_out: torch.Tensor) -> tuple[float, int]:
    """Sum over tokens of arccos(clamp(cos, 0, 1))/π and the token count, for one batch.

    ``x_in``/``x_out``: a decoder layer's input and output hidden states [..., d].
    """
    cos = torch.nn.functional.cosine_similarity(x_in.double(), x_out.double(), dim=-1)
    cos = torch.nan_to_num(cos, nan=0.5).clamp(0.0, 1.0)
    angles = torch.arccos(cos) / math.pi
    return float(angles.sum()), angles.numel()


def mean_keep_ratio(ratio: float, hidden: int, heads: int, kv_heads: int, head_dim: int,
                    intermediate: int, mlp_matrices: int = 3) -> float:
    """r̄ such that keeping r̄ of V/O and MLP (Q/K untouched) removes ``ratio`` of the
    decoder-linear parameters (authors' ``compute_rank.py``, paper mode; ``mlp_matrices``:
    3 for a gated MLP, 2 for up and down only)."""
    p_q = hidden * heads * head_dim
    p_k = p_v = hidden * kv_heads * head_dim
    p_o = heads * head_dim * hidden
    p_mlp = hidden * intermediate
    total = mlp_matrices * p_mlp + p_q + p_k + p_v + p_o
    return ((1 - ratio) * total - (p_q + p_k)) / (mlp_matrices * p_mlp + p_v + p_o)


def allocate(importance: list[float], mean_keep: float, floor: float = 0.0) -> list[float]:
    """Capped proportional allocation: w ∈ (0, 1]^L, Σw = L·r̄, w ∝ t off the cap (the paper's
    greedy Alg. 1, exactly as the authors' code computes it).

    ``floor``: the smallest keep ratio a layer can realise (one value dimension and one MLP
    neuron).  Only when the greedy allocation would go below it (ratios near the method's
    maximum) are the layers re-solved as w_l = clip(c·t_l, floor, 1); an r̄ at or below the
    floor gives every layer the floor."""
    n = len(importance)
    if mean_keep >= 1.0:
        return [1.0] * n
    if any(t <= 0 for t in importance):
        raise ValueError("importance scores must be positive; a zero score means an identity layer")
    w = _greedy(importance, n * mean_keep)
    if min(w) >= floor:
        return w
    if mean_keep <= floor:
        return [floor] * n
    return _clipped(importance, n * mean_keep, floor)


def _greedy(importance: list[float], budget: float) -> list[float]:
    n = len(importance)
    w = [0.0] * n
    active = list(range(n))
    while active:
        total = sum(importance[i] for i in active)
        share = {i: budget * importance[i] / total for i in active}
        capped = [i for i in active if share[i] > 1.0]
        if not capped:
            for i in active:
                w[i] = share[i]
            break
        for i in capped:
            w[i] = 1.0
        budget -= len(capped)
        active = [i for i in active if i not in capped]
    return w


def _clipped(importance: list[float], budget: float, floor: float) -> list[float]:
    """w_l = clip(c·t_l, floor, 1) with Σw = ``budget``: Σ clip(c·t) grows with c, so bisect
    for the scale, then solve it exactly on the layers off both bounds."""
    def total(c: float) -> float:
        return sum(min(1.0, max(floor, c * t)) for t in importance)

    low, high = 0.0, 1.0 / min(importance)
    for _ in range(2000):
        mid = (low + high) / 2
        if mid in (low, high):
            break
        low, high = (mid, high) if total(mid) < budget else (low, mid)
    c = high
    free = [t for t in importance if floor < c * t < 1.0]
    if free:
        fixed = sum(floor if c * t <= floor else 1.0 for t in importance if not floor < c * t < 1.0)
        c = (budget - fixed) / sum(free)
    return [min(1.0, max(floor, c * t)) for t in importance]
