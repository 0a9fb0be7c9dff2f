"""Attention whose values have their own head size (transformers 5.x, Llama-like forwards).

The stock forward views V as ``(..., -1, head_dim)``, which breaks (or silently
mis-shapes) once ``v_proj`` is compressed.  Here V is viewed per KV head with the width
``v_proj`` actually has; Q/K keep ``head_dim`` and the 1/√head_dim scale.  Eager and SDPA
kernels and the dynamic KV cache accept a V width that differs from K's.  The swap only
changes the module's class (weights and buffers stay where they are).  FLAT-LLM uses it only
where it reproduces a family's own forward bit for bit (checked on the layer's inputs); other
families keep their forward and get zero-padded value slots (:mod:`.slot_linear`).
"""

from __future__ import annotations

from functools import cache

import torch
from torch import nn


def _forward(self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
             attention_mask: torch.Tensor | None = None, cache: object | None = None,
             past_key_values: object | None = None, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    # imported here: transformers' modeling code is half of ``import compressors``'s time
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, eager_attention_forward

    # transformers ≥ 5.? passes the KV cache as ``cache``; earlier releases as ``past_key_values``
    cache = cache if cache is not None else past_key_values
    input_shape = hidden_states.shape[:-1]
    qk_shape = (*input_shape, -1, self.head_dim)
    query = self.q_proj(hidden_states).view(qk_shape).transpose(1, 2)
    key = self.k_proj(hidden_states).view(qk_shape).transpose(1, 2)
    value = self.v_proj(hidden_states).view(*input_shape, self.config.num_key_value_heads, -1).transpose(1, 2)
    cos, sin = position_embeddings
    query, key = apply_rotary_pos_emb(query, key, cos, sin)
    if cache is not None:
        key, value = cache.update(key, value, self.layer_idx, kwargs=kwargs)
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
    sliding = getattr(self, "sliding_window", getattr(self.config, "sliding_window", None))
    out, weights = attend(self, query, key, value, attention_mask,
                          dropout=0.0 if not self.training else self.attention_dropout,
                          scaling=self.scaling, sliding_window=sliding, **kwargs)
    out = out.reshape(*input_shape, -1).contiguous()
    return self.o_proj(out), weights


@cache  # one subclass per base, so patched modules of the same base share a class
def _patched_class(base: type) -> type:
    # ``_unpatched`` marks the class as patched, which keeps patch() idempotent
    return type(f"VarHead{base.__name__}", (base,), {"forward": _forward, "_unpatched": base})


def patch(attn: nn.Module) -> None:
    """Let ``attn`` run with any ``v_proj`` width divisible by the number of KV heads."""
    if not hasattr(type(attn), "_unpatched"):
        attn.__class__ = _patched_class(type(attn))

