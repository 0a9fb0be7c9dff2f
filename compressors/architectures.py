"""Which model families the compressors rewrite, and where their parts are."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from shapesearch.errors import ShapesearchError

# SmolLM2 is a LlamaForCausalLM
SUPPORTED = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")


@dataclass(frozen=True)
class Dims:
    """Sizes of a decoder: hidden width, attention and KV heads, head size, MLP width, layers."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    layers: int


def check_supported(model: nn.Module) -> None:
    """Refuse a model family whose decoder layers the rank-reduction compressors do not know."""
    name = type(model).__name__
    if name not in SUPPORTED:
        raise ShapesearchError(f"unsupported architecture {name}; supported: {', '.join(SUPPORTED)} "
                         "(Llama family, including SmolLM2)")


def dims(model: nn.Module) -> Dims:
    """The model's sizes, from its config."""
    c = model.config
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return Dims(c.hidden_size, heads, c.num_key_value_heads, head_dim, c.intermediate_size,
                c.num_hidden_layers)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of decoder layers (Llama-family layout)."""
    return model.model.layers


def decoder_linear_params(model: nn.Module) -> int:
    """Parameters (weights and biases) of every nn.Linear inside the decoder layers."""
    return sum(p.numel() for layer in decoder_layers(model) for m in layer.modules()
               if isinstance(m, nn.Linear) for p in m.parameters())


def total_params(model: nn.Module) -> int:
    """All distinct parameters (a tied embedding / lm_head counts once)."""
    return sum(p.numel() for p in model.parameters())
