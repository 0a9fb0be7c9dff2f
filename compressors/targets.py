"""Which linears a per-layer compressor rewrites: every nn.Linear inside the model's stack of
repeated blocks (attention and MLP projections of a decoder or an encoder), found by
structure, not by architecture name — so Llama, Mistral, Qwen2, BERT and others work alike.
Embeddings, ``lm_head``, poolers and task heads stay dense."""

from __future__ import annotations

import re

from torch import nn

from shapesearch.errors import ShapesearchError


def block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(dotted name, ModuleList) of the longest list of repeated blocks in ``model``."""
    best = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(
                type(m) is type(module[0]) for m in module):
            if best is None or len(module) > len(best[1]):
                best = (name, module)
    if best is None:
        raise ShapesearchError(f"{type(model).__name__} has no list of repeated blocks to compress")
    return best


def target_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """{dotted name from the model root: linear} for every nn.Linear inside the blocks."""
    prefix, blocks = block_list(model)
    out = {f"{prefix}.{name}": m for name, m in blocks.named_modules() if isinstance(m, nn.Linear)}
    if not out:
        raise ShapesearchError(f"{type(model).__name__}: its blocks hold no nn.Linear layers to compress")
    return out


def layer_type(name: str) -> str:
    """The name without block indices, e.g. ``model.layers.3.mlp.up_proj`` → ``mlp.up_proj``."""
    return re.split(r"\.\d+\.", name)[-1]
