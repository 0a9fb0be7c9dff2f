"""A linear layer stored and run as a TT-matrix (MPO): cores [r_{k-1}, m_k, n_k, r_k].

W [M, N] with M = Π m_k (output digits, coarse→fine) and N = Π n_k is reshaped to
(m_1 n_1, …, m_d n_d) and decomposed by the error-bounded TT-SVD.  The forward contracts the
input with one core at a time and never rebuilds W.
"""

from __future__ import annotations

import math

import numpy as np
import tensorly as tl
import torch
from torch import nn

from shapesearch.tt_svd import tt_svd


def matrix_to_tt_tensor(weight: np.ndarray, out_modes: tuple[int, ...], in_modes: tuple[int, ...]) -> np.ndarray:
    """W [M, N] → the d-way tensor with modes m_k·n_k (mode k pairs output digit k with input digit k)."""
    d = len(out_modes)
    t = weight.reshape(*out_modes, *in_modes)
    order = [i for k in range(d) for i in (k, d + k)]
    return t.transpose(order).reshape([m * n for m, n in zip(out_modes, in_modes)])


class TTMatrixLinear(nn.Module):
    """y = x Wᵀ + b with W held as TT-matrix cores; parameters Σ r_{k-1} m_k n_k r_k (+ bias)."""

    def __init__(self, cores: list[torch.Tensor], bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cores = nn.ParameterList(nn.Parameter(c) for c in cores)
        self.out_modes = tuple(int(c.shape[1]) for c in cores)
        self.in_modes = tuple(int(c.shape[2]) for c in cores)
        self.out_features, self.in_features = math.prod(self.out_modes), math.prod(self.in_modes)
        self.bias = None if bias is None else nn.Parameter(bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, out_modes: tuple[int, ...], in_modes: tuple[int, ...],
                    eps: float) -> TTMatrixLinear:
        """TT-SVD of ``linear.weight`` with relative Frobenius error ≤ ``eps``."""
        if len(out_modes) != len(in_modes):
            raise ValueError(f"need as many output as input modes, got {out_modes} and {in_modes}")
        if math.prod(out_modes) != linear.out_features or math.prod(in_modes) != linear.in_features:
            raise ValueError(f"modes {out_modes}×{in_modes} do not factor a "
                             f"{linear.out_features}×{linear.in_features} weight")
        w = linear.weight.detach().double().cpu().numpy()
        with tl.backend_context("numpy"):
            tt = tt_svd(matrix_to_tt_tensor(w, out_modes, in_modes), eps, method="svd")
        dtype, device = linear.weight.dtype, linear.weight.device
        cores = [torch.from_numpy(np.asarray(c).reshape(c.shape[0], m, n, c.shape[2])).to(dtype=dtype, device=device)
                 for c, m, n in zip(tt.cores, out_modes, in_modes)]
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(cores, bias)

    @property
    def ranks(self) -> tuple[int, ...]:
        return (1,) + tuple(int(c.shape[3]) for c in self.cores)

    def weight(self) -> torch.Tensor:
        """The dense W [M, N] (for checks; the forward does not use it)."""
        d = len(self.cores)
        full = self.cores[0]
        for c in self.cores[1:]:
            full = torch.einsum("...a,amnb->...mnb", full, c)
        full = full.reshape(*[s for m, n in zip(self.out_modes, self.in_modes) for s in (m, n)])
        order = [2 * k for k in range(d)] + [2 * k + 1 for k in range(d)]
        return full.permute(order).reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        state = x.reshape(-1, 1, self.in_features)  # [P, r, n_k·rest], P = batch × outputs so far
        for core in self.cores:
            a, m, n, b = core.shape
            p, _, rest = state.shape
            # one GEMM per core: [p·R, a·n] @ [a·n, m·b]
            left = state.reshape(p, a, n, rest // n).permute(0, 3, 1, 2).reshape(-1, a * n)
            out = left @ core.permute(0, 2, 1, 3).reshape(a * n, m * b)
            state = out.reshape(p, rest // n, m, b).permute(0, 2, 3, 1).reshape(p * m, b, rest // n)
        y = state.reshape(*lead, self.out_features)
        return y if self.bias is None else y + self.bias
