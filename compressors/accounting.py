"""Parameter and byte counts of one (compressed) linear layer, notes §6.

* parameters: TT cores + kept residual entries + bias (the Saten code's convention; indices free);
* bytes: the same values at ``value_bytes`` each, plus the sparse index storage —
  unstructured (top-K) as CSR: nnz·(value + 4 B column) + (rows + 1)·4 B row pointers;
  N:M as values + ⌈log2 group⌉ bits of position per kept value (2:4 → nnz/4 B);
* dense: out·in + bias, the denominator of a layer's compression ratio.
"""

from __future__ import annotations

import math

from torch import nn

from .low_rank_linear import LowRankLinear
from .saten import SatenLinear, SparseResidual
from .tt_embedding import TTEmbedding
from .tt_linear import TTLinear, TTMatrixLinear

INDEX_BYTES = 4  # int32 CSR column indices and row pointers


def _unsupported(module: nn.Module) -> TypeError:
    return TypeError(f"no accounting for {type(module).__name__}; supported: nn.Linear, nn.Embedding, TTMatrixLinear, "
                     "TTLinear, SparseResidual, SatenLinear, TTEmbedding, LowRankLinear")


def _bias(module: nn.Module) -> int:
    return 0 if getattr(module, "bias", None) is None else module.bias.numel()


def layer_params(module: nn.Module) -> int:
    """Stored values: TT cores + nnz + bias (dense weight + bias for nn.Linear)."""
    if isinstance(module, nn.Linear | nn.Embedding):
        return module.weight.numel() + _bias(module)
    if isinstance(module, TTEmbedding):
        return (layer_params(module.tt) + (0 if module.residual is None else module.residual.nnz)
                + sum(t.numel() for t in (module.row_scale, module.mix) if t is not None))
    if isinstance(module, TTMatrixLinear | TTLinear):
        return sum(c.numel() for c in module.cores) + _bias(module)
    if isinstance(module, SparseResidual):
        return module.nnz
    if isinstance(module, SatenLinear):
        return layer_params(module.tt) + layer_params(module.residual) + _bias(module)
    if isinstance(module, LowRankLinear):
        return layer_params(module.first) + layer_params(module.second)
    raise _unsupported(module)


def dense_params(module: nn.Module) -> int:
    """Parameters of the dense nn.Linear the layer replaces: out·in + bias (V·D for an
    embedding table: its padded rows are not part of the original)."""
    if isinstance(module, nn.Embedding | TTEmbedding):
        return module.num_embeddings * module.embedding_dim
    if isinstance(module, LowRankLinear):
        return module.out_features * module.in_features + _bias(module.second)
    if not isinstance(module, nn.Linear | TTMatrixLinear | TTLinear | SparseResidual | SatenLinear):
        raise _unsupported(module)
    return module.out_features * module.in_features + _bias(module)


def sparse_index_bytes(residual: SparseResidual) -> int:
    """Bytes of the residual's positions: CSR column indices + row pointers (top-K), or
    ⌈log2 group⌉ bits per kept value (N:M); 0 for an empty residual (nothing is stored)."""
    if residual.nnz == 0:
        return 0
    if residual.pattern == "n:m":
        return math.ceil(residual.nnz * math.ceil(math.log2(residual.group)) / 8)
    return residual.nnz * INDEX_BYTES + (residual.out_features + 1) * INDEX_BYTES


def layer_bytes(module: nn.Module, value_bytes: int | None = None) -> int:
    """Bytes to store the layer, index storage included.  ``value_bytes``: bytes per stored
    value (e.g. 2 for fp16); default each tensor's own element size."""
    def values(t) -> int:
        return t.numel() * (t.element_size() if value_bytes is None else value_bytes)

    bias = 0 if getattr(module, "bias", None) is None else values(module.bias)
    if isinstance(module, nn.Linear | nn.Embedding):
        return values(module.weight) + bias
    if isinstance(module, TTEmbedding):
        residual = 0 if module.residual is None else layer_bytes(module.residual, value_bytes)
        readback = sum(values(t) for t in (module.row_scale, module.mix) if t is not None)
        return layer_bytes(module.tt, value_bytes) + residual + readback
    if isinstance(module, TTMatrixLinear | TTLinear):
        return sum(values(c) for c in module.cores) + bias
    if isinstance(module, SparseResidual):
        return values(module.values) + sparse_index_bytes(module)
    if isinstance(module, SatenLinear):
        return layer_bytes(module.tt, value_bytes) + layer_bytes(module.residual, value_bytes) + bias
    if isinstance(module, LowRankLinear):
        return layer_bytes(module.first, value_bytes) + layer_bytes(module.second, value_bytes)
    raise _unsupported(module)


def recount_bytes(model: nn.Module, report: dict) -> None:
    """Count a compression report's bytes again as ``model`` now stores its layers (after the
    float32 result was cast to the input's float16 / bfloat16): each replaced layer's row, the
    dense layers they replaced at the same element size, the sums; a recipe's steps too."""
    for step in report.get("steps", []):
        recount_bytes(model, step)
    size = next(model.parameters()).element_size()
    rows = [r for r in report.get("layers", []) if isinstance(r, dict) and "bytes" in r and "name" in r]
    for row in rows:
        row["dense_bytes"] = row["dense_params"] * size
        try:
            module = model.get_submodule(row["name"])
        except AttributeError:
            continue
        if layer_params(module) == row["params"]:  # still the layer this row describes (no later step replaced it)
            row["bytes"] = layer_bytes(module)
    if rows and "replaced_bytes_before" in report:
        before, after = sum(r["dense_bytes"] for r in rows), sum(r["bytes"] for r in rows)
        report.update(replaced_bytes_before=before, replaced_bytes_after=after, replaced_bytes_ratio=after / before)
