"""Compressed directories through transformers' Auto classes.

``import compressors`` registers the model type that :func:`compressors.save` writes into a
compressed model's config.json, so ``AutoModelForCausalLM.from_pretrained(dir)`` (or
``AutoModelForSequenceClassification`` for a classifier, ``AutoModel`` for an encoder) returns
exactly what ``compressors.load(dir)`` does.  The classes
registered here only route to :func:`compressors.serialization.load_with_config`; the model
returned is the base architecture (e.g. ``LlamaForCausalLM``) with compressed layers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PreTrainedConfig,
)

from shapesearch.errors import ShapesearchError

from .serialization import MODEL_TYPE, base_config, build, is_causal_lm_name, load_with_config, read_config

# from_pretrained options that cannot change which model a local compressed directory gives
# (loading is strict: a weight of the wrong shape is an error, never skipped or re-initialised)
_HARMLESS = ("trust_remote_code", "adapter_kwargs", "revision", "cache_dir", "force_download", "local_files_only",
             "proxies", "token", "ignore_mismatched_sizes", "use_safetensors", "low_cpu_mem_usage",
             "code_revision", "_from_auto", "_from_pipeline")


class CompressedConfig(PreTrainedConfig):
    """A compressed directory's config.json as the Auto classes see it; :meth:`base` gives the
    config the model is built from (e.g. a ``LlamaConfig`` with the compression record)."""

    model_type = MODEL_TYPE

    def base(self) -> PreTrainedConfig:
        """The base model's config, with any attribute set on this one since it was read."""
        return base_config(self.to_dict(), self.name_or_path)


def _dtype(value: object) -> torch.dtype | None:
    if value is None or value == "auto":
        return None
    if isinstance(value, str) and isinstance(getattr(torch, value, None), torch.dtype):
        return getattr(torch, value)
    if isinstance(value, torch.dtype):
        return value
    raise ShapesearchError(f"dtype must be a torch dtype, its name (e.g. 'bfloat16') or 'auto', got {value!r}")


class _CompressedAuto:
    """What an Auto class calls for a compressed directory: ``from_pretrained`` / ``_from_config``."""

    config_class = CompressedConfig

    @classmethod
    def _select(cls, model: nn.Module) -> nn.Module:
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *model_args: object,
                        config: PreTrainedConfig | None = None, **kwargs: object) -> nn.Module:
        """``compressors.load(dir)``, honouring ``dtype`` / ``torch_dtype``, ``attn_implementation``,
        a single-device ``device_map`` and config attributes set through the Auto class."""
        directory = Path(pretrained_model_name_or_path) / str(kwargs.pop("subfolder", "") or "")
        if not (directory / "config.json").is_file():
            raise ShapesearchError(f"{directory} is not a local model directory; a compressed model loads from "
                                   "one (download it first, e.g. with huggingface_hub.snapshot_download)")
        if model_args:
            raise ShapesearchError("a compressed model takes no positional model arguments; pass only the directory")
        dtype = _dtype(kwargs.pop("dtype", None))
        torch_dtype = _dtype(kwargs.pop("torch_dtype", None))
        attn = kwargs.pop("attn_implementation", None)
        device_map = kwargs.pop("device_map", None)
        if (kwargs.get("adapter_kwargs") or {}).get("_adapter_model_path"):  # a PEFT adapter found in the directory
            raise ShapesearchError(f"{directory} holds a PEFT adapter; load the compressed model with "
                                   "compressors.load(dir) and apply the adapter to it with peft")
        for name in _HARMLESS:
            kwargs.pop(name, None)
        if kwargs:
            raise ShapesearchError(f"{directory} is a compressed model; loading it does not take "
                                   f"{', '.join(sorted(kwargs))}; load it with compressors.load(dir, dtype=..., "
                                   "attn_implementation=...)")
        if config is None:
            base = read_config(directory)
        elif isinstance(config, CompressedConfig):
            base = config.base()
            attn = attn or config._attn_implementation  # the Auto class hands it over inside the config
        else:
            raise ShapesearchError(f"config must be the compressed directory's own (AutoConfig.from_pretrained(dir) "
                                   f"with compressors imported), got a {type(config).__name__}")
        model = load_with_config(directory, base, dtype or torch_dtype, attn)
        if device_map is not None:
            if isinstance(device_map, dict) or device_map in ("auto", "balanced", "balanced_low_0", "sequential"):
                raise ShapesearchError("a compressed model loads onto one device: give device_map as a device "
                                       "(e.g. 'cuda:0'), or move it with .to(device) after loading")
            model = model.to(device_map)
        return cls._select(model)

    @classmethod
    def _from_config(cls, config: PreTrainedConfig, **kwargs: object) -> nn.Module:
        """A freshly initialised model of the recorded compressed shapes (no weights read)."""
        if not isinstance(config, CompressedConfig):
            raise ShapesearchError(f"expected the config of a compressed directory, got a {type(config).__name__}")
        dtype = _dtype(kwargs.pop("dtype", None)) or _dtype(kwargs.pop("torch_dtype", None))
        attn = kwargs.pop("attn_implementation", None) or config._attn_implementation
        return cls._select(build(config.base(), dtype, attn))


class CompressedModelForCausalLM(_CompressedAuto):
    """``AutoModelForCausalLM`` for a compressed directory: the compressed causal LM."""

    @classmethod
    def _select(cls, model: nn.Module) -> nn.Module:
        if not is_causal_lm_name(type(model).__name__):
            raise ShapesearchError(f"this compressed model is a {type(model).__name__} without an LM head; "
                                   "load it with AutoModel or compressors.load(dir)")
        return model


class CompressedModelForSequenceClassification(_CompressedAuto):
    """``AutoModelForSequenceClassification`` for a compressed directory: the compressed
    classifier (e.g. what ``compress ptnn`` writes)."""

    @classmethod
    def _select(cls, model: nn.Module) -> nn.Module:
        if not type(model).__name__.endswith("ForSequenceClassification"):
            raise ShapesearchError(f"this compressed model is a {type(model).__name__}, not a classifier; "
                                   "load it with AutoModel, AutoModelForCausalLM or compressors.load(dir)")
        return model


class CompressedModel(_CompressedAuto):
    """``AutoModel`` for a compressed directory: the bare model (an LM's body without its head)."""

    @classmethod
    def _select(cls, model: nn.Module) -> nn.Module:
        return getattr(model, "base_model", model)


def register() -> None:
    """Make the Auto classes load compressed directories (safe to call again)."""
    AutoConfig.register(MODEL_TYPE, CompressedConfig, exist_ok=True)
    AutoModelForCausalLM.register(CompressedConfig, CompressedModelForCausalLM, exist_ok=True)
    AutoModelForSequenceClassification.register(CompressedConfig, CompressedModelForSequenceClassification,
                                                exist_ok=True)
    AutoModel.register(CompressedConfig, CompressedModel, exist_ok=True)
