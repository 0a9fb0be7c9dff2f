"""Save and load compressed models: safetensors weights + a config.json that records every
per-layer shape (``shapesearch_compression``).  No pickles."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file
from torch import nn

from shapesearch.errors import ShapesearchError

from . import attention
from .architectures import decoder_layers
from .low_rank import LowRankLinear
from .tt_compress import module_from_spec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def save(model: nn.Module, directory: str | Path, tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
    """Write ``model`` (and ``tokenizer``) to ``directory`` with safetensors weights."""
    directory = Path(directory)
    model.save_pretrained(directory, safe_serialization=True, max_shard_size="100GB")
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory


def _resize(model: nn.Module, record: dict) -> None:
    """Give a freshly built dense model the module shapes ``record`` describes."""
    method = record["method"]
    c = model.config
    if method in ("tt", "saten"):
        dtype = next(model.parameters()).dtype
        for name, spec in record["layers"].items():
            model.set_submodule(name, module_from_spec(spec, dtype))
        return
    for i, (layer, spec) in enumerate(zip(decoder_layers(model), record["layers"])):
        if method == "flat-llm":
            attn, mlp = layer.self_attn, layer.mlp
            dv, width = spec["v_head_dim"], spec["mlp_width"]
            if spec["keep"] >= 1.0:
                continue
            like = attn.v_proj
            attn.v_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * dv, bias=like.bias is not None,
                                    dtype=like.weight.dtype)
            attn.o_proj = nn.Linear(c.num_attention_heads * dv, c.hidden_size, bias=attn.o_proj.bias is not None,
                                    dtype=like.weight.dtype)
            attention.patch(attn)
            for name in ("gate_proj", "up_proj"):
                old = getattr(mlp, name)
                setattr(mlp, name, nn.Linear(c.hidden_size, width, bias=old.bias is not None, dtype=old.weight.dtype))
            old = mlp.down_proj
            mlp.down_proj = nn.Linear(width, c.hidden_size, bias=old.bias is not None, dtype=old.weight.dtype)
        elif method in ("svd", "svd-llm"):
            for path, rank in spec["ranks"].items():
                old = layer.get_submodule(path)
                layer.set_submodule(path, LowRankLinear(old.in_features, old.out_features, rank,
                                                        old.bias is not None, dtype=old.weight.dtype))
        else:
            raise ShapesearchError(f"layer {i}: unknown compression method {method!r} in config.json")


def load(directory: str | Path, dtype: torch.dtype | None = None,
         attn_implementation: str | None = None) -> nn.Module:
    """Rebuild a model saved by :func:`save` (compressed or dense) and load its weights
    (in ``dtype``, default: the dtype it was saved in)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ShapesearchError(f"{directory} has no config.json; give a directory written by `compressors.save`")
    config = AutoConfig.from_pretrained(directory)
    saved = getattr(config, "dtype", None)
    dtype = dtype or (getattr(torch, saved) if isinstance(saved, str) else saved) or torch.float32
    record = getattr(config, "shapesearch_compression", None)
    causal = any(a.endswith("ForCausalLM") for a in config.architectures or [])
    auto = AutoModelForCausalLM if causal else AutoModel
    if not record:
        return auto.from_pretrained(directory, dtype=dtype, attn_implementation=attn_implementation).eval()
    model = auto.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    _resize(model, record)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ShapesearchError(f"{directory} has no .safetensors weights")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if unexpected or set(missing) - tied:
        raise ShapesearchError(f"{directory}: weights do not match the recorded shapes "
                         f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    return model.eval()

