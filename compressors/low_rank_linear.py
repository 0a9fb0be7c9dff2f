"""A linear layer stored as two factors (truncated SVD, SVD-LLM): y = B (A x) + b."""

from __future__ import annotations

import torch
from torch import nn


class LowRankLinear(nn.Module):
    """y = second(first(x)); ``first`` [k, in] without bias, ``second`` [out, k]."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.first = nn.Linear(in_features, rank, bias=False, dtype=dtype, device=device)
        self.second = nn.Linear(rank, out_features, bias=bias, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))
