"""Which linears a per-layer compressor rewrites: every nn.Linear inside the model's stack of
repeated blocks (attention and MLP projections of a decoder or an encoder), found by
structure, not by architecture name — so Llama, Mistral, Qwen2, BERT and others work alike.
Poolers and task heads stay dense; the token embedding (and a ``lm_head`` tied to it) is
compressed only when asked for (:func:`input_embedding`)."""

from __future__ import annotations

import re

from torch import nn

from shapesearch.errors import ShapesearchError

from .architectures import block_list


def target_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """{dotted name from the model root: linear} for every nn.Linear inside the blocks."""
    prefix, blocks = block_list(model)
    out = {f"{prefix}.{name}": m for name, m in blocks.named_modules() if isinstance(m, nn.Linear)}
    if not out:
        raise ShapesearchError(f"{type(model).__name__}: its blocks hold no nn.Linear layers to compress")
    return out


def input_embedding(model: nn.Module) -> tuple[str, nn.Embedding]:
    """(dotted name, module) of the model's token embedding (transformers' own accessor)."""
    get = getattr(model, "get_input_embeddings", None)
    embedding = get() if get is not None else None
    if not isinstance(embedding, nn.Embedding):
        raise ShapesearchError(f"{type(model).__name__} has no token embedding table (nn.Embedding) to compress")
    return next(n for n, m in model.named_modules() if m is embedding), embedding


def tied_output(model: nn.Module, embedding: nn.Embedding) -> str | None:
    """The dotted name of the output projection that shares ``embedding``'s table, if any."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if get is not None else None
    if head is None or getattr(head, "weight", None) is not embedding.weight:
        return None
    return next(n for n, m in model.named_modules() if m is head)


def layer_type(name: str) -> str:
    """The name without block indices, e.g. ``model.layers.3.mlp.up_proj`` → ``mlp.up_proj``."""
    return re.split(r"\.\d+\.", name)[-1]
