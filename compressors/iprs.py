"""Importance-preserving rank selection (IPRS) from FLAT-LLM.

Importance t_l = mean over tokens of arccos(clamp(cos(x_in, x_out), 0, 1)) / π (the
authors' code, not the paper's arccos-of-the-mean); the target ratio s (fraction of
decoder-linear parameters removed) maps to a mean keep ratio r̄; keep ratios are
allocated proportionally to t_l with a cap at 1 (paper Alg. 1, greedy).
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
                    intermediate: int) -> float:
    """r̄ such that keeping r̄ of V/O and MLP (Q/K untouched) removes ``ratio`` of the
    decoder-linear parameters (authors' ``compute_rank.py``, paper mode)."""
    p_q = hidden * heads * head_dim
    p_k = p_v = hidden * kv_heads * head_dim
    p_o = heads * head_dim * hidden
    p_mlp = hidden * intermediate
    total = 3 * p_mlp + p_q + p_k + p_v + p_o
    return ((1 - ratio) * total - (p_q + p_k)) / (3 * p_mlp + p_v + p_o)


def allocate(importance: list[float], mean_keep: float) -> list[float]:
    """Greedy capped proportional allocation: w ∈ (0, 1]^L, Σw = L·r̄, w ∝ t off the cap."""
    n = len(importance)
    if mean_keep >= 1.0:
        return [1.0] * n
    if any(t <= 0 for t in importance):
        raise ValueError("importance scores must be positive; a zero score means an identity layer")
    w = [0.0] * n
    budget = n * mean_keep
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
