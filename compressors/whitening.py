"""Input whitening: the error a layer makes on the activations it sees, not on its weights.

For inputs x with second moment Σ = E[x xᵀ] and any L with L Lᵀ = Σ,
E‖(W − Ŵ) x‖² = ‖(W − Ŵ) L‖²_F, so factoring W·L and multiplying back by L⁻¹ bounds the
activation error exactly as a plain factorization bounds the weight error (SVD-LLM's
observation).  A TT layer keeps this at no parameter cost when every input digit sits in one
core (``LayerSearchConfig.whole_input``): L⁻¹ folds into that core (:func:`fold_inverse`).
This module owns the factor (float64 Cholesky) and the activation-relative error; the moments
it comes from are ``calibration.input_moments``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from shapesearch.matrix.formats import Format

from .tt_linear import TTLinear, TTMatrixLinear, tt_layer


def whitening_factor(moment: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor L (float64) of a PSD second moment, L Lᵀ = moment, with growing
    diagonal jitter if it is singular (too few tokens, dead inputs)."""
    moment = moment.double()
    eye = torch.eye(moment.shape[0], dtype=moment.dtype, device=moment.device)
    jitter = 1e-10 * float(torch.diagonal(moment).mean().clamp_min(1e-30))
    for _ in range(12):
        factor, info = torch.linalg.cholesky_ex(moment + jitter * eye)
        if int(info) == 0:
            return factor
        jitter *= 10
    raise RuntimeError("input covariance is not positive definite even with jitter")


def fold_inverse(layer: TTMatrixLinear | TTLinear, factor: torch.Tensor) -> None:
    """Replace the layer's W_TT by W_TT·L⁻¹ in place, folding L⁻¹ into the core that holds every
    input digit (ValueError if the inputs are split over several cores)."""
    inverse = torch.linalg.solve_triangular(factor.double(), torch.eye(factor.shape[0], dtype=torch.float64),
                                            upper=False)
    if isinstance(layer, TTLinear):
        if layer.in_order != 1:
            raise ValueError(f"activation-aware layers keep every input digit in one core; in_modes "
                             f"{layer.in_modes} split them")
        k, pattern = 0, "anb,nj->ajb"
    else:
        holders = [k for k, n in enumerate(layer.in_modes) if n > 1]
        if len(holders) > 1:
            raise ValueError(f"activation-aware layers keep every input digit in one core; in_modes "
                             f"{layer.in_modes} split them")
        k, pattern = (holders or [0])[0], "amnb,nj->amjb"
    core = layer.cores[k]
    with torch.no_grad():
        core.copy_(torch.einsum(pattern, core.double(), inverse).to(core.dtype))
    layer.clear_cache()


def whitened_tt_layer(weight: torch.Tensor, fmt: Format | str, out_modes: Sequence[int], in_modes: Sequence[int],
                      eps: float, factor: torch.Tensor, reverse: bool = False,
                      bias: torch.Tensor | None = None, max_ranks: Sequence[int] | None = None
                      ) -> TTMatrixLinear | TTLinear:
    """The TT layer TT(W·L)·L⁻¹ with ‖(W − Ŵ) L‖_F ≤ ε‖W L‖_F: ε is the relative error on
    activations whose second moment is L Lᵀ (ranks capped at ``max_ranks``).  Cores in W's dtype."""
    whitened = weight.detach().double() @ factor.double()
    layer = tt_layer(whitened, fmt, out_modes, in_modes, eps, reverse,
                     None if bias is None else bias.detach().double(), max_ranks)
    fold_inverse(layer, factor)
    return layer.to(weight.dtype)


def activation_error(weight: torch.Tensor, approx: torch.Tensor, moment: torch.Tensor) -> float:
    """√(tr(E Σ Eᵀ) / tr(W Σ Wᵀ)) with E = W − Ŵ: the relative error on inputs of second moment Σ."""
    w, approx, m = weight.detach().double(), approx.detach().double(), moment.double()
    e = w - approx
    return float(torch.sqrt(((e @ m) * e).sum() / ((w @ m) * w).sum().clamp_min(1e-300)))


def refit_sparse(error: torch.Tensor, indices: torch.Tensor, factor: torch.Tensor,
                 iterations: int = 40) -> torch.Tensor:
    """Values S on the given support (flat ``indices`` into E [out, in]) that lower ‖(E − S) L‖_F,
    row by row, toward the least-squares fit Σ_JJ s_J = (Σ e)_J (Σ = L Lᵀ): conjugate gradients
    on every row at once, started from whichever of E's own values and zero costs less, so the
    residual never makes the activation error worse than either (E's own values can: whitening
    puts large entries of E where the inputs are small).  Exact after |J| steps in exact
    arithmetic; ``iterations`` caps them."""
    e, moment = error.double(), factor.double() @ factor.double().T
    mask = torch.zeros(e.numel(), dtype=torch.float64)
    mask[indices] = 1.0
    mask = mask.reshape(e.shape)

    def cost(s: torch.Tensor) -> torch.Tensor:  # per row, (e − s)ᵀ Σ (e − s)
        d = e - s
        return ((d @ moment) * d).sum(1)

    x = torch.where((cost(e * mask) < cost(torch.zeros_like(e)))[:, None], e * mask, torch.zeros_like(e))
    r = mask * ((e - x) @ moment)  # minus the gradient of ½ cost, on the support
    p, rr = r.clone(), (r * r).sum(1)
    for _ in range(iterations):
        ap = mask * (p @ moment)
        pap = (p * ap).sum(1)
        alpha = torch.where(pap > 0, rr / pap.clamp_min(1e-300), torch.zeros_like(rr))
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * ap
        new = (r * r).sum(1)
        if float(new.max()) <= 1e-28 * float(rr.max().clamp_min(1e-300)):
            break
        p = r + torch.where(rr > 0, new / rr.clamp_min(1e-300), torch.zeros_like(rr))[:, None] * p
        rr = new
    return x.reshape(-1)[indices]
