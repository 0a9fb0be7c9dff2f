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
                 iterations: int = 40, direct: bool = True) -> torch.Tensor:
    """Values S on the given support (flat ``indices`` into E [out, in]) that lower ‖(E − S) L‖_F,
    row by row: the least-squares fit Σ_JJ s_J = (Σ e)_J (Σ = L Lᵀ) on each row's support J.

    A row whose |J|³/3 costs less than ``iterations`` conjugate-gradient steps of the whole
    row (2·in² each) is solved directly (Cholesky of Σ_JJ: exact); the others run those CG
    steps, started from whichever of E's own values and zero costs less, so they never make
    the activation error worse than either (E's own values can: whitening puts large entries of
    E where the inputs are small).  At a few percent density every row is direct.  ``direct``
    False: CG on every row (how it was done before; ``benchmarks/refit_sparse.py`` compares)."""
    e, moment = error.double(), factor.double() @ factor.double().T
    mask = torch.zeros(e.numel(), dtype=torch.bool, device=e.device)
    mask[indices] = True
    mask = mask.reshape(e.shape)
    counts = mask.sum(1)
    direct = (counts ** 3 < 6 * iterations * e.shape[1] ** 2) & direct
    x = torch.zeros_like(e)
    if direct.any():
        x[direct] = _direct_fit(e[direct], mask[direct], moment)
    if not direct.all():
        x[~direct] = _cg_fit(e[~direct], mask[~direct], moment, iterations)
    return x.reshape(-1)[indices]


def _direct_fit(e: torch.Tensor, mask: torch.Tensor, moment: torch.Tensor,
                chunk: int = 1 << 22) -> torch.Tensor:
    """Per row, s_J = Σ_JJ⁻¹ (Σ e)_J, rows batched by |J| (at most ``chunk`` entries of Σ_JJ at once)."""
    b, x, counts = e @ moment, torch.zeros_like(e), mask.sum(1)
    for k in counts.unique().tolist():
        rows = torch.nonzero(counts == k).flatten()
        step = max(1, chunk // max(k * k, 1))
        for i in range(0, len(rows) if k else 0, step):
            r = rows[i:i + step]
            cols = torch.nonzero(mask[r])[:, 1].reshape(len(r), k)  # each row's support, ascending
            a, rhs = moment[cols[:, :, None], cols[:, None, :]], b[r[:, None], cols]
            chol, info = torch.linalg.cholesky_ex(a)
            sol = torch.cholesky_solve(rhs[..., None], chol)[..., 0]
            if bool((info > 0).any()):  # Σ_JJ numerically singular: least squares
                bad = info > 0
                sol[bad] = torch.linalg.lstsq(a[bad], rhs[bad][..., None]).solution[..., 0]
            x[r[:, None], cols] = sol
    return x


def _cg_fit(e: torch.Tensor, mask: torch.Tensor, moment: torch.Tensor, iterations: int) -> torch.Tensor:
    """Conjugate gradients toward the same fit on every row at once (exact after |J| steps in
    exact arithmetic), from whichever of E's own values and zero costs less."""
    mask = mask.double()

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
    return x
