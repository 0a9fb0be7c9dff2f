"""Saten (sparse augmented tensor networks): W ≈ TT(W) + S with S sparse, taken from E = W − TT(W).

Notes §4–§5.  :class:`SparseResidual` holds only the kept entries of E (an nnz-long trainable
``values`` and fixed, sorted flat ``indices``); its forward is a CSR sparse × dense product, so
neither the forward nor the training step ever builds a dense [out, in] matrix.
:class:`SatenLinear` = a bias-free TT layer (format A or B) + the residual + the bias.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from shapesearch.matrix.formats import Format

from .tt_linear import TT_LAYERS, TTLinear, TTMatrixLinear, _CachedModule, _merge_cores, tt_layer
from .whitening import refit_sparse, whitened_tt_layer

PATTERNS = ("topk", "n:m")
# each alternation is one more TT-SVD and residual fit per layer; past a few the error stops
# falling (benchmarks/model_pareto.py runs 3), so a larger count only costs hours
MAX_ALTERNATIONS = 10


@functools.cache
def _spend_csr_beta_warning() -> None:
    """Build one throwaway CSR tensor with torch's "CSR support is in beta" warning ignored.

    torch raises that warning once per process (a C++ warn-once flag); the CSR ops used here
    are tested, so the first sparse product spends it here instead of in the user's output.
    Filtering around every product instead would reset Python's warning registries each call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        torch.sparse_csr_tensor(torch.zeros(2, dtype=torch.long), torch.zeros(1, dtype=torch.long), torch.zeros(1),
                                (1, 1), check_invariants=False)


class _SparseMatmul(torch.autograd.Function):
    """y [B, out] = x [B, in] @ Sᵀ with S = CSR(crow, col, values) [out, in].

    Backward (hand-written: about 2× faster than autograd through ``torch.sparse_csr_tensor``
    on CPU): ∂L/∂x = ∂L/∂y @ S via the CSR of Sᵀ, and ∂L/∂values = (∂L/∂yᵀ @ x) sampled at
    the kept entries only (``torch.sparse.sampled_addmm``), so the gradient is nnz-long."""

    @staticmethod
    def forward(ctx, values, x, crow, col, crow_t, col_t, perm_t, shape):
        _spend_csr_beta_warning()
        ctx.save_for_backward(values, x, crow, col, crow_t, col_t, perm_t)
        ctx.shape = shape
        s = torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)
        return torch.sparse.mm(s, x.T.contiguous()).T

    @staticmethod
    def backward(ctx, grad):
        values, x, crow, col, crow_t, col_t, perm_t = ctx.saved_tensors
        out_f, in_f = ctx.shape
        grad_t = grad.T.contiguous()  # [out, B]
        grad_values = grad_x = None
        if ctx.needs_input_grad[1]:
            s_t = torch.sparse_csr_tensor(crow_t, col_t, values[perm_t], (in_f, out_f), check_invariants=False)
            grad_x = torch.sparse.mm(s_t, grad_t).T
        if ctx.needs_input_grad[0]:
            mask = torch.sparse_csr_tensor(crow, col, torch.zeros_like(values), ctx.shape, check_invariants=False)
            grad_values = torch.sparse.sampled_addmm(mask, grad_t, x.contiguous()).values()
        return grad_values, grad_x, None, None, None, None, None, None


class SparseResidual(_CachedModule):
    """x ↦ x @ Sᵀ for a sparse S [out, in] with a fixed support.

    ``values`` (nn.Parameter, length nnz) are trainable; ``indices`` (long buffer) are the flat
    row-major positions out_index·in + in_index, sorted ascending, and never change.
    ``pattern`` "topk" (unstructured, stored as CSR) or "n:m" (``n_keep`` of every ``group``
    consecutive inputs in each output row; ``n_keep``/``group`` set)."""

    def __init__(self, indices: torch.Tensor, values: torch.Tensor, shape: tuple[int, int], pattern: str = "topk",
                 n_keep: int | None = None, group: int | None = None) -> None:
        super().__init__()
        out_f, in_f = (int(s) for s in shape)
        if pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
        if (pattern == "n:m") != (n_keep is not None and group is not None):
            raise ValueError("n_keep and group are given exactly for the 'n:m' pattern")
        if indices.dim() != 1 or values.shape != indices.shape:
            raise ValueError(f"indices and values must be 1-D of equal length, got {tuple(indices.shape)} "
                             f"and {tuple(values.shape)}")
        indices = indices.to(torch.long)
        if indices.numel() and (indices[0] < 0 or indices[-1] >= out_f * in_f
                                or bool((indices[1:] <= indices[:-1]).any())):
            raise ValueError(f"indices must be distinct, ascending and inside [0, {out_f * in_f})")
        self.out_features, self.in_features = out_f, in_f
        self.pattern, self.n_keep, self.group = pattern, n_keep, group
        self.values = nn.Parameter(values)
        self.register_buffer("indices", indices)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def top_k(cls, residual: torch.Tensor, density: float, scores: torch.Tensor | None = None) -> SparseResidual:
        """Keep exactly K = round(density·numel) (half up) entries of largest |E| (or of |scores|,
        same shape, e.g. a weighted error), ties to the lower flat index; values = E there.
        Density 0 keeps nothing, 1 keeps everything."""
        if residual.dim() != 2:
            raise ValueError(f"the residual must be a 2-D [out, in] matrix, got shape {tuple(residual.shape)}")
        try:
            density = float(density)
        except (TypeError, ValueError):
            raise ValueError(f"density must be a number in [0, 1], got {density!r}") from None
        if not 0.0 <= density <= 1.0:
            raise ValueError(f"density must be in [0, 1] (fraction of entries kept), got {density}")
        flat = residual.detach().reshape(-1)
        k = math.floor(density * flat.numel() + 0.5)
        rank = flat if scores is None else scores.detach().reshape(-1)
        # a stable descending sort keeps equal |E| in index order: ties go to the lower index
        order = torch.sort(rank.abs(), descending=True, stable=True).indices
        idx = torch.sort(order[:k]).values
        return cls(idx, flat[idx].clone(), tuple(residual.shape), "topk")

    @classmethod
    def n_m(cls, residual: torch.Tensor, n_keep: int, group: int,
            scores: torch.Tensor | None = None) -> SparseResidual:
        """In every output row, keep the ``n_keep`` largest |E| (or |scores|) of each ``group``
        consecutive input weights (ties to the lower index), e.g. (2, 4) = 2:4 along the
        reduction dimension."""
        if residual.dim() != 2:
            raise ValueError(f"the residual must be a 2-D [out, in] matrix, got shape {tuple(residual.shape)}")
        out_f, in_f = residual.shape
        if not (isinstance(n_keep, int) and isinstance(group, int) and 0 < n_keep <= group):
            raise ValueError(f"N:M sparsity needs integers 0 < n_keep ≤ group, got {n_keep}:{group}")
        if in_f % group:
            raise ValueError(f"N:M sparsity groups consecutive inputs: in_features {in_f} is not a multiple of "
                             f"group {group}; pick a group size that divides it or use density (top-k) instead")
        e = (residual if scores is None else scores).detach().reshape(out_f, in_f // group, group)
        keep = torch.sort(e.abs(), dim=-1, descending=True, stable=True).indices[..., :n_keep]
        base = torch.arange(out_f * (in_f // group), device=e.device).reshape(out_f, in_f // group, 1) * group
        idx = torch.sort((base + keep).reshape(-1)).values
        return cls(idx, residual.detach().reshape(-1)[idx].clone(), (out_f, in_f), "n:m", n_keep, group)

    def spec(self) -> dict:
        """JSON-ready shapes; ``from_spec`` rebuilds a zero module a state dict loads into."""
        out = {"format": "sparse", "pattern": self.pattern, "shape": [self.out_features, self.in_features],
               "nnz": self.nnz}
        if self.pattern == "n:m":
            out.update(n_keep=self.n_keep, group=self.group)
        return out

    @classmethod
    def from_spec(cls, spec: dict, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> SparseResidual:
        if spec.get("format") != "sparse":
            raise ValueError(f"not a sparse-residual spec (format {spec.get('format')!r}, expected 'sparse')")
        nnz = int(spec["nnz"])
        # placeholder support 0..nnz-1 (valid and sorted); load_state_dict overwrites it
        return cls(torch.arange(nnz, device=device), torch.zeros(nnz, dtype=dtype, device=device),
                   tuple(spec["shape"]), spec["pattern"], spec.get("n_keep"), spec.get("group"))

    # -- shapes ---------------------------------------------------------------------------------

    @property
    def nnz(self) -> int:
        return int(self.indices.numel())

    def rows_cols(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(output index, input index) of every kept entry, in storage order."""
        return self.indices // self.in_features, self.indices % self.in_features

    def dense(self) -> torch.Tensor:
        """The dense S [out, in] (for checks; the forward does not use it)."""
        flat = self.values.new_zeros(self.out_features * self.in_features)
        return flat.index_put((self.indices,), self.values).reshape(self.out_features, self.in_features)

    # -- compute --------------------------------------------------------------------------------

    def _structure(self) -> tuple[torch.Tensor, ...]:
        """CSR of S (crow, col) and of Sᵀ (crow, col, and the permutation of values into it)."""
        rows, cols = self.rows_cols()
        crow = self.indices.new_zeros(self.out_features + 1)
        crow[1:] = torch.bincount(rows, minlength=self.out_features).cumsum(0)
        perm_t = torch.argsort(cols * self.out_features + rows)
        crow_t = self.indices.new_zeros(self.in_features + 1)
        crow_t[1:] = torch.bincount(cols, minlength=self.in_features).cumsum(0)
        return crow, cols, crow_t, rows[perm_t], perm_t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features, the residual expects {self.in_features}")
        lead = x.shape[:-1]
        if self.nnz == 0:
            return x.new_zeros(*lead, self.out_features)
        # the support never changes, so its CSR is cached in every mode (keyed on the buffer)
        structure = self._derived.get([self.indices], None, self._structure)
        y = _SparseMatmul.apply(self.values, x.reshape(-1, self.in_features), *structure,
                                (self.out_features, self.in_features))
        return y.reshape(*lead, self.out_features)

    def take_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows ``rows`` (1-D output indices) of S, [n, in], gathered from the CSR segments
        (an embedding lookup: S is never made dense)."""
        n = rows.numel()
        out = self.values.new_zeros(n * self.in_features)
        if self.nnz == 0 or n == 0:
            return out.reshape(n, self.in_features)
        crow, cols = self._derived.get([self.indices], None, self._structure)[:2]
        start, counts = crow[rows], crow[rows + 1] - crow[rows]
        token = torch.repeat_interleave(torch.arange(n, device=rows.device), counts)
        offset = torch.arange(int(counts.sum()), device=rows.device) - torch.repeat_interleave(
            counts.cumsum(0) - counts, counts)
        pos = torch.repeat_interleave(start, counts) + offset
        out = out.index_add(0, token * self.in_features + cols[pos], self.values[pos])
        return out.reshape(n, self.in_features)

    def extra_repr(self) -> str:
        pat = self.pattern if self.pattern == "topk" else f"{self.n_keep}:{self.group}"
        return f"shape=({self.out_features}, {self.in_features}), nnz={self.nnz}, pattern={pat}"


def _tt_weight_f64(tt: TTLinear | TTMatrixLinear) -> torch.Tensor:
    """The TT part's dense W [out, in] contracted in float64 from its (possibly lower-precision) cores."""
    cores = [c.detach().double() for c in tt.cores]
    if isinstance(tt, TTMatrixLinear):
        return _merge_cores(cores)[0, :, :, 0]
    copy = TTLinear(cores, tt.in_order)
    return copy.weight().detach()


def _residual(error: torch.Tensor, density: float | None, nm: tuple[int, int] | None,
              factor: torch.Tensor | None) -> SparseResidual:
    """The sparse part of E (float64): top-K at ``density`` or N:M ``nm`` of |E|, or with an input
    ``factor`` L of |E_ij|·‖L_j‖ with values refitted to the activations."""
    scores = None if factor is None else error * factor.double().to(error.device).norm(dim=1)[None, :]
    residual = (SparseResidual.top_k(error, density, scores) if density is not None
                else SparseResidual.n_m(error, int(nm[0]), int(nm[1]), scores))
    if factor is not None:  # the values that are best on the inputs, not E's own
        with torch.no_grad():
            residual.values.copy_(refit_sparse(error, residual.indices, factor.to(error.device)))
    return residual


def _saten_error(error: torch.Tensor, residual: SparseResidual, factor: torch.Tensor | None) -> float:
    """‖(E − S) L‖_F (‖E − S‖_F without a factor) for E = W − TT(W) in float64."""
    with torch.no_grad():
        d = error - residual.dense().double()
        return float((d if factor is None else d @ factor.double().to(d.device)).norm())


class SatenLinear(nn.Module):
    """y = tt(x) + residual(x) + b: a bias-free TT layer plus a sparse residual (notes §9, Alg. 1).

    Parameters: TT cores + nnz + bias (index storage is counted in bytes by ``accounting``)."""

    def __init__(self, tt: TTLinear | TTMatrixLinear, residual: SparseResidual,
                 bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if not isinstance(tt, TTLinear | TTMatrixLinear):
            raise ValueError(f"tt must be a TTLinear or TTMatrixLinear, got {type(tt).__name__}")
        if tt.bias is not None:
            raise ValueError("the TT part must have no bias (SatenLinear holds the bias)")
        if (residual.out_features, residual.in_features) != (tt.out_features, tt.in_features):
            raise ValueError(f"residual shape {(residual.out_features, residual.in_features)} differs from the TT "
                             f"layer's {(tt.out_features, tt.in_features)}")
        self.tt, self.residual = tt, residual
        self.out_features, self.in_features = tt.out_features, tt.in_features
        if bias is not None and bias.shape != (self.out_features,):
            raise ValueError(f"bias must have shape ({self.out_features},), got {tuple(bias.shape)}")
        self.bias = None if bias is None else nn.Parameter(bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, format: Format | str, out_modes: Sequence[int], in_modes: Sequence[int],
                    eps: float, density: float | None = None, nm: tuple[int, int] | None = None,
                    reverse: bool = False, factor: torch.Tensor | None = None,
                    max_ranks: Sequence[int] | None = None, alternations: int = 0) -> SatenLinear:
        """ε-TT-SVD of W (relative Frobenius error ≤ ε; ttm: TT-matrix, paired modes; tt: plain TT
        of Wᵀ), then the sparse residual from E = W − TT(W) (float64): top-K at ``density``
        (fraction of the layer's entries kept) or N:M with ``nm`` = (n_keep, group).

        Activation-aware with ``factor`` = L (L Lᵀ the input second moment): the TT part is
        ``whitening.whitened_tt_layer`` (ε on the activations) and the residual keeps the
        entries of largest |E_ij|·‖x_j‖, the ones that matter on the inputs (as OATS ranks its
        sparse part) with values refitted to the activations (``whitening.refit_sparse``).
        ``max_ranks`` caps the TT ranks (``tt_linear.tt_layer``).

        ``alternations`` > 0: then refit the TT part to W − S at the ranks it has, pick S again
        from the new E, and so on (OATS's alternation, with a TT in place of the low-rank part);
        the parameter count never changes, and the pair of lowest error (on the activations
        with ``factor``, else on the weights) is kept, so it is never worse than none."""
        format = Format.parse(format)
        if (density is None) == (nm is None):
            raise ValueError("give exactly one of density (unstructured top-K) or nm (e.g. (2, 4))")
        if nm is not None and (not isinstance(nm, tuple | list) or len(nm) != 2):
            raise ValueError(f"nm must be a pair (n_keep, group) such as (2, 4), got {nm!r}")
        if isinstance(alternations, bool) or not (isinstance(alternations, int)
                                                   and 0 <= alternations <= MAX_ALTERNATIONS):
            raise ValueError(f"alternations must be an integer in [0, {MAX_ALTERNATIONS}], got {alternations!r}")
        w = linear.weight

        def fit(target: torch.Tensor, eps: float, ranks: Sequence[int] | None) -> TTLinear | TTMatrixLinear:
            if factor is None:
                return tt_layer(target, format, out_modes, in_modes, eps, reverse=reverse, max_ranks=ranks)
            return whitened_tt_layer(target, format, out_modes, in_modes, eps, factor, reverse=reverse,
                                     max_ranks=ranks)

        w64 = w.detach().double()
        tt = fit(w, eps, max_ranks)
        e = w64 - _tt_weight_f64(tt).to(w.device)
        residual = _residual(e, density, nm, factor)
        if alternations:
            best = (_saten_error(e, residual, factor), tt, residual)
            for _ in range(alternations):
                # ε 0 at the current ranks: the same parameters, fitted to what S leaves
                tt = fit(w64 - residual.dense().detach(), 0.0, tt.ranks).to(w.dtype)
                e = w64 - _tt_weight_f64(tt).to(w.device)
                residual = _residual(e, density, nm, factor)
                error = _saten_error(e, residual, factor)
                if error < best[0]:
                    best = (error, tt, residual)
            tt, residual = best[1], best[2]
        residual = residual.to(w.dtype)  # values only: the long indices are not floating point
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(tt, residual, bias)

    def spec(self) -> dict:
        """JSON-ready shapes; ``from_spec`` rebuilds a zero module a state dict loads into."""
        return {"format": "saten", "tt": self.tt.spec(), "residual": self.residual.spec(),
                "bias": self.bias is not None}

    @classmethod
    def from_spec(cls, spec: dict, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> SatenLinear:
        if spec.get("format") != "saten":
            raise ValueError(f"not a Saten spec (format {spec.get('format')!r}, expected 'saten')")
        tt = TT_LAYERS[Format.parse(spec["tt"]["format"])].from_spec(spec["tt"], dtype, device)
        residual = SparseResidual.from_spec(spec["residual"], dtype, device)
        bias = torch.zeros(tt.out_features, dtype=dtype, device=device) if spec["bias"] else None
        return cls(tt, residual, bias)

    @property
    def macs_per_token(self) -> int:
        """TT multiply-adds + one per kept residual entry (bias not included)."""
        return self.tt.macs_per_token + self.residual.nnz

    def weight(self) -> torch.Tensor:
        """The dense W_TT + S [out, in] (for checks; the forward does not use it)."""
        return self.tt.weight() + self.residual.dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.tt(x) + self.residual(x)
        return y if self.bias is None else y + self.bias

