"""Embedding tables as tensor trains, with an optional sparse residual (Saten(e)), notes §8.

The table E [V, D] is treated as the weight of the output projection it can serve
(W = E, out = V tokens, in = D features), padded with zero rows to V_pad = a product of
small factors so the vocabulary splits into TT modes.  The TT part is a :class:`TTLinear`
or :class:`TTMatrixLinear` of the padded W, decomposed by the same ε-TT-SVD as every layer,
so a plan's shapes and ranks apply unchanged.  Two uses, neither rebuilds the table:

* lookup: row t of W is the cores contracted at the digits of t (a gather per core and a
  chain of small products per token), plus row t of the residual;
* tied logits: h·Eᵀ is the TT layer's factored forward, cut to the first V outputs, plus
  the residual's sparse product.

Padded ids are never returned: lookups check ids < V, logits have exactly V columns.

Rows matter as often as their tokens occur.  With ``row_weights`` w (e.g. √(count + 1) of each
token in the task's or calibration text) the TT is fitted to diag(w)·E, so ε bounds the
frequency-weighted error, and the table is read back through a per-row scale s = 1/w
(V more parameters).  A tied output projection's error is felt through the hidden states it
multiplies: with ``head_moment`` C = E[h hᵀ] (of ``lm_head``'s input on calibration text) the fit
is to diag(w)·E·S with S = (C + λ·I)^½, read back through M = S⁻¹ (D² more parameters), so the
logit error h·δᵀ is what ε bounds.  Either way the residual lives in the fitted space and keeps
its largest entries: table = diag(s)·(TT[:V] + R)·M.
:class:`TiedLMHead` serves ``lm_head`` from the same object without registering it a second
time, so its parameters are counted and saved once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from shapesearch.matrix.formats import Format

from .saten import SparseResidual, _tt_weight_f64
from .tt_linear import TT_LAYERS, TTLinear, TTMatrixLinear, _chain, tt_layer

SMALL_PRIMES = (2, 3, 5, 7)
# The ridge λ on the head moment, as a fraction of its mean eigenvalue: the same table serves
# lookups, whose error is not seen through the hidden states, so directions the hidden states
# hardly use must still count.  0.1 was chosen on a held-out half of the calibration text.
HEAD_DAMPING = 0.1


def padded_vocab(size: int) -> int:
    """The smallest V_pad ≥ ``size`` whose prime factors are all ≤ 7 (so it splits into TT modes),
    e.g. 30,522 → 30,720 = 2¹¹·3·5; 49,152 = 2¹⁴·3 stays."""
    if size < 1:
        raise ValueError(f"a vocabulary needs at least one token, got {size}")
    n = size
    while True:
        m = n
        for p in SMALL_PRIMES:
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def frequency_weights(token_ids: torch.Tensor, vocab: int) -> torch.Tensor:
    """√(count + 1) of each of ``vocab`` tokens in ``token_ids`` (add-one: unseen tokens keep
    weight 1), the row weights of a frequency-aware TT embedding."""
    ids = token_ids.reshape(-1).to(torch.long)
    ids = ids[(ids >= 0) & (ids < vocab)]
    return (torch.bincount(ids, minlength=vocab).double() + 1.0).sqrt()


def whitening(moment: torch.Tensor, damping: float = HEAD_DAMPING) -> tuple[torch.Tensor, torch.Tensor]:
    """S = (C + λ·mean eig(C)·I)^½ and S⁻¹ (float64, symmetric) of a second moment C [D, D]."""
    moment = moment.double()
    dim = moment.shape[0]
    if moment.shape != (dim, dim) or not bool(torch.isfinite(moment).all()):
        raise ValueError(f"head_moment must be a finite square [D, D] matrix, got shape {tuple(moment.shape)}")
    ridge = damping * float(torch.trace(moment)) / dim
    values, vectors = torch.linalg.eigh((moment + moment.T) / 2 + ridge * torch.eye(dim, dtype=moment.dtype))
    if ridge <= 0 or float(values.min()) <= 0:
        raise ValueError("head_moment must be positive semi-definite and non-zero")
    root = values.sqrt()
    return (vectors * root) @ vectors.T, (vectors / root) @ vectors.T


def _row_digits(ids: torch.Tensor, modes: Sequence[int]) -> list[torch.Tensor]:
    """Row-major digits of ``ids`` in ``modes`` (coarse first)."""
    digits, rest = [], ids
    for m in reversed(modes):
        digits.append(rest % m)
        rest = rest // m
    return digits[::-1]


class TTEmbedding(nn.Module):
    """nn.Embedding's lookup (and the tied output projection) from TT cores + a sparse residual.

    ``tt``: a bias-free TT layer whose weight is the padded (fitted) table [V_pad, D];
    ``residual``: a :class:`SparseResidual` [V, D] in the same space, or None (TT only);
    ``row_scale`` [V] and ``mix`` [D, D] read it back when given:
    table = diag(row_scale)·(TT[:V] + residual)·mix.  Parameters: cores + nnz + scales + mix."""

    def __init__(self, tt: TTLinear | TTMatrixLinear, num_embeddings: int,
                 residual: SparseResidual | None = None, padding_idx: int | None = None,
                 row_scale: torch.Tensor | None = None, mix: torch.Tensor | None = None) -> None:
        super().__init__()
        if not isinstance(tt, TTLinear | TTMatrixLinear) or tt.bias is not None:
            raise ValueError("tt must be a bias-free TTLinear or TTMatrixLinear")
        if not 1 <= num_embeddings <= tt.out_features:
            raise ValueError(f"num_embeddings {num_embeddings} must be in [1, {tt.out_features}] (the padded rows)")
        if residual is not None and (residual.out_features, residual.in_features) != (num_embeddings,
                                                                                        tt.in_features):
            raise ValueError(f"residual shape {(residual.out_features, residual.in_features)} must be the table's "
                             f"{(num_embeddings, tt.in_features)}")
        if row_scale is not None and row_scale.shape != (num_embeddings,):
            raise ValueError(f"row_scale must have shape ({num_embeddings},), got {tuple(row_scale.shape)}")
        self.tt, self.residual = tt, residual
        if mix is not None and mix.shape != (tt.in_features, tt.in_features):
            raise ValueError(f"mix must have shape ({tt.in_features}, {tt.in_features}), got {tuple(mix.shape)}")
        self.row_scale = None if row_scale is None else nn.Parameter(row_scale)
        self.mix = None if mix is None else nn.Parameter(mix)
        self.num_embeddings, self.embedding_dim = num_embeddings, tt.in_features
        self.padding_idx = padding_idx

    @classmethod
    def from_table(cls, table: torch.Tensor, format: Format | str, vocab_modes: Sequence[int],
                   dim_modes: Sequence[int], eps: float, density: float | None = None,
                   nm: tuple[int, int] | None = None, reverse: bool = False,
                   padding_idx: int | None = None, row_weights: torch.Tensor | None = None,
                   head_moment: torch.Tensor | None = None) -> TTEmbedding:
        """ε-TT-SVD of ``table`` [V, D] padded with zero rows to Π ``vocab_modes`` (relative
        Frobenius error ≤ ε, over the padded table, whose norm is the table's); then, with
        ``density`` or ``nm``, the sparse residual of E − TT(E) on the real rows (float64).
        With positive ``row_weights`` w [V] and / or the tied head's input moment C [D, D] the
        TT fits diag(w)·E·S instead (ε bounds that error; S = :func:`whitening` of C), read back
        through 1/w and S⁻¹, and the residual keeps that space's largest errors."""
        if density is not None and nm is not None:
            raise ValueError("give at most one of density (top-K) or nm (e.g. (2, 4)) for the residual")
        vocab, dim = table.shape
        padded = math.prod(int(m) for m in vocab_modes)
        if padded < vocab:
            raise ValueError(f"vocab_modes {tuple(vocab_modes)} cover {padded} rows; the table has {vocab}")
        weights = None
        if row_weights is not None:
            weights = torch.as_tensor(row_weights, dtype=torch.float64, device=table.device).reshape(-1)
            if weights.shape != (vocab,) or not bool((weights > 0).all() & torch.isfinite(weights).all()):
                raise ValueError(f"row_weights must be {vocab} positive finite numbers, one per row")
        fitted = table.detach().double()
        if weights is not None:
            fitted = fitted * weights[:, None]
        mix = None
        if head_moment is not None:
            if head_moment.shape != (dim, dim):
                raise ValueError(f"head_moment must be [{dim}, {dim}] (the table's width), "
                                 f"got {tuple(head_moment.shape)}")
            root, mix = whitening(head_moment.to(table.device))
            fitted = fitted @ root
        weight = fitted.to(table.dtype)
        if padded > vocab:
            weight = torch.cat([weight, weight.new_zeros(padded - vocab, dim)])
        tt = tt_layer(weight, format, vocab_modes, dim_modes, eps, reverse=reverse)
        residual = None
        if density is not None or nm is not None:
            error = fitted - _tt_weight_f64(tt)[:vocab].to(table.device)
            residual = (SparseResidual.top_k(error, density) if density is not None
                        else SparseResidual.n_m(error, int(nm[0]), int(nm[1])))
            residual = residual.to(table.dtype)
        scale = None if weights is None else (1.0 / weights).to(table.dtype)
        return cls(tt, vocab, residual, padding_idx, scale, None if mix is None else mix.to(table.dtype))

    @classmethod
    def within(cls, table: torch.Tensor, params: int, format: Format | str, vocab_modes: Sequence[int],
               dim_modes: Sequence[int], density: float | None = None, reverse: bool = False,
               padding_idx: int | None = None, row_weights: torch.Tensor | None = None,
               head_moment: torch.Tensor | None = None, steps: int = 10) -> tuple[TTEmbedding, float]:
        """The smallest-ε :meth:`from_table` whose parameters (cores, ``density``'s residual, row
        scales, mix) are at most ``params``, by bisection on ε over ``steps`` halvings; returns it
        and its ε.  Refuses a budget that even ε → 1 misses."""
        vocab, dim = table.shape
        fixed = ((0 if density is None else math.floor(density * vocab * dim + 0.5))
                 + (0 if row_weights is None else vocab) + (0 if head_moment is None else dim * dim))
        lo, hi, best = 0.0, 1.0, None
        for _ in range(steps):
            eps = (lo + hi) / 2
            tt = cls.from_table(table, format, vocab_modes, dim_modes, eps, reverse=reverse, row_weights=row_weights,
                                head_moment=head_moment)
            if sum(c.numel() for c in tt.tt.cores) + fixed <= params:
                best, hi = eps, eps
            else:
                lo = eps
        if best is None:
            raise ValueError(f"{params} parameters cannot hold this table's TT at any ε below 1 "
                             f"(the residual and scales alone take {fixed})")
        return cls.from_table(table, format, vocab_modes, dim_modes, best, density, None, reverse, padding_idx,
                              row_weights, head_moment), best

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, format: Format | str, vocab_modes: Sequence[int],
                       dim_modes: Sequence[int], eps: float, density: float | None = None,
                       nm: tuple[int, int] | None = None, reverse: bool = False,
                       row_weights: torch.Tensor | None = None,
                       head_moment: torch.Tensor | None = None) -> TTEmbedding:
        """:meth:`from_table` of ``embedding.weight`` (its padding index is kept)."""
        return cls.from_table(embedding.weight, format, vocab_modes, dim_modes, eps, density, nm, reverse,
                              embedding.padding_idx, row_weights, head_moment)

    # -- serialization --------------------------------------------------------------------------

    def spec(self) -> dict:
        """JSON-ready shapes; ``from_spec`` rebuilds a zero module a state dict loads into."""
        return {"format": "tt-embedding", "tt": self.tt.spec(), "num_embeddings": self.num_embeddings,
                "residual": None if self.residual is None else self.residual.spec(),
                "padding_idx": self.padding_idx, "row_scale": self.row_scale is not None, "mix": self.mix is not None}

    @classmethod
    def from_spec(cls, spec: dict, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> TTEmbedding:
        if spec.get("format") != "tt-embedding":
            raise ValueError(f"not a TT embedding spec (format {spec.get('format')!r}, expected 'tt-embedding')")
        tt = TT_LAYERS[Format.parse(spec["tt"]["format"])].from_spec(spec["tt"], dtype, device)
        residual = None if spec["residual"] is None else SparseResidual.from_spec(spec["residual"], dtype, device)
        vocab = int(spec["num_embeddings"])
        scale = torch.ones(vocab, dtype=dtype, device=device) if spec.get("row_scale") else None
        mix = torch.eye(tt.in_features, dtype=dtype, device=device) if spec.get("mix") else None
        return cls(tt, vocab, residual, spec.get("padding_idx"), scale, mix)

    # -- compute --------------------------------------------------------------------------------

    def _tt_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` (1-D) of the TT part, [n, D], from the cores at each id's digits."""
        tt = self.tt
        if isinstance(tt, TTMatrixLinear):
            # cores [r, m_k, n_k, r']: take m_k at digit k, chain over k → [n, N_<k·…, r']
            state = None
            for core, digit in zip(tt.cores, _row_digits(ids, tt.out_modes)):
                piece = core.permute(1, 0, 2, 3)[digit]  # [n, r, n_k, r']
                if state is None:
                    state = piece.reshape(len(ids), -1, piece.shape[-1])
                else:
                    n, cols, r = state.shape
                    state = torch.bmm(state, piece.reshape(n, r, -1)).reshape(n, -1, piece.shape[-1])
            return state.reshape(len(ids), tt.in_features)
        # format A: Wᵀ [D, V_pad] = A·B, A from the feature cores, column t of B from the
        # vocabulary cores at t's digits, chained right to left
        p = tt.in_order
        a = _chain(list(tt.cores[:p]), 1)[0]  # [D, r_p]
        column = None
        for core, digit in zip(reversed(list(tt.cores[p:])), reversed(_row_digits(ids, tt.out_modes))):
            piece = core.permute(1, 0, 2)[digit]  # [n, r, r']
            column = piece[..., 0] if column is None else torch.bmm(piece, column.unsqueeze(-1))[..., 0]
        return column @ a.T

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Embedding rows of the token ``ids`` (any shape) → [*ids.shape, D]."""
        flat = ids.reshape(-1)
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.num_embeddings):
            raise IndexError(f"token ids must be in [0, {self.num_embeddings}), got "
                             f"{int(flat.min())}..{int(flat.max())}")
        rows = self._tt_rows(flat)
        if self.residual is not None:
            rows = rows + self.residual.take_rows(flat)
        if self.mix is not None:
            rows = rows @ self.mix
        if self.row_scale is not None:
            rows = rows * self.row_scale[flat, None]
        return rows.reshape(*ids.shape, self.embedding_dim)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden·Eᵀ over the real vocabulary [*, V], in factored form (the tied output projection)."""
        if self.mix is not None:  # h·(X·M)ᵀ = (h·Mᵀ)·Xᵀ: the table is never rebuilt
            hidden = hidden @ self.mix.T
        out = self.tt(hidden)[..., :self.num_embeddings]
        if self.residual is not None:
            out = out + self.residual(hidden)
        return out if self.row_scale is None else out * self.row_scale

    def weight(self) -> torch.Tensor:
        """The dense table [V, D] (for checks; neither use builds it)."""
        table = self.tt.weight()[:self.num_embeddings]
        if self.residual is not None:
            table = table + self.residual.dense()
        if self.mix is not None:
            table = table @ self.mix
        return table if self.row_scale is None else table * self.row_scale[:, None]

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, padded_to={self.tt.out_features}"


class TiedLMHead(nn.Module):
    """``lm_head`` tied to a :class:`TTEmbedding`: logits = h·Eᵀ over the real vocabulary.

    The embedding is held without registering it, so the model counts and saves its
    parameters once (under the input embedding's name)."""

    def __init__(self, embedding: TTEmbedding) -> None:
        super().__init__()
        object.__setattr__(self, "embedding", embedding)
        self.in_features, self.out_features = embedding.embedding_dim, embedding.num_embeddings

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.embedding.logits(hidden)

    def extra_repr(self) -> str:
        return f"tied to a TT embedding ({self.out_features} × {self.in_features})"
