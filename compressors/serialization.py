"""Save and load compressed models: safetensors weights + a config.json that records every
per-layer shape (``shapesearch_compression``).  No pickles.

A compressed model's config.json names the model type :data:`MODEL_TYPE` (the base type, e.g.
"llama", moves into the record): transformers alone refuses it with a message naming
``compressors.load``, whatever flags are passed, instead of building the dense base model and
loading the compressed weights into it as garbage.  ``import compressors`` registers that model
type with the Auto classes (:mod:`compressors.hf_auto`).  Dense models keep their config.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file
from torch import nn

from shapesearch.errors import ShapesearchError

from . import attention
from .architectures import Dims, block_parts, decoder_layers, dims
from .conv1d_linear import as_linears
from .low_rank_linear import LowRankLinear
from .slot_linear import SlotLinear
from .tt_compress import module_from_spec, tie_head

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, PreTrainedTokenizerBase

# transformers quotes an unknown model type in its error, so the type itself says what to do
MODEL_TYPE = "shapesearch-compressed (load it with: import compressors; compressors.load(dir))"
# a model class's own from_pretrained (LlamaForCausalLM.from_pretrained) only warns about a foreign
# model type; its config class does reject unknown layer types, quoting them
REFUSAL = ("not a plain transformers model: compressed by shapesearch; "
           "load it with: import compressors; compressors.load(dir)")
_STALE_WEIGHTS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json")
_BASE_TYPE, _BASE_LAYER_TYPES = "base_model_type", "base_layer_types"  # record keys holding what was replaced


def save(model: nn.Module, directory: str | Path, tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
    """Write ``model`` (and ``tokenizer``) to ``directory`` with safetensors weights; a compressed
    model's config.json is marked so that only :func:`load` (or the Auto classes once
    ``compressors`` is imported) reads it.  Files come out with the modes the umask gives."""
    directory = Path(directory)
    _remove_weights(directory)  # an overwritten model's shards or index would be read with the new weights
    before = _file_stamps(directory)
    model.save_pretrained(directory, safe_serialization=True, max_shard_size="100GB")
    if getattr(model.config, "shapesearch_compression", None):
        _mark_compressed(directory / "config.json")
        _write_module_weights(model, directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    _umask_modes(directory, before)
    return directory


def _write_module_weights(model: nn.Module, directory: Path) -> None:
    """A compressed model's weights under its modules' own names.  transformers ≥ 5 writes some
    families under older checkpoint names (GPT-NeoX's ``embed_out``, Mixtral's per-expert
    ``w1/w2/w3``) and renames them when it loads; :func:`load` reads a compressed model's
    weights as they are, so they are written as the modules name them.  A tensor that shares
    its storage with an earlier one (a tied ``lm_head``) is left out; loading ties it again."""
    from safetensors.torch import save_file

    state, seen = {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            state[name] = tensor.detach().contiguous()
    _remove_weights(directory)  # save_pretrained's, under the old names
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})


def _remove_weights(directory: Path) -> None:
    for pattern in _STALE_WEIGHTS:
        for path in directory.glob(pattern):
            path.unlink()


def _mark_compressed(path: Path) -> None:
    config = json.loads(path.read_text())
    record = config["shapesearch_compression"]
    record[_BASE_TYPE] = config["model_type"]
    if "layer_types" in config:
        record[_BASE_LAYER_TYPES] = config["layer_types"]
    config["model_type"] = MODEL_TYPE
    config["layer_types"] = [REFUSAL]
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")  # as transformers writes it


def _file_stamps(directory: Path) -> dict[Path, tuple[int, int, int]]:
    if not directory.is_dir():
        return {}
    return {p: (s.st_ino, s.st_mtime_ns, s.st_size) for p in directory.iterdir()
            if p.is_file() and not p.is_symlink() for s in [p.stat()]}


def _umask() -> int:
    try:  # Linux reports it without changing it (os.umask would, for every thread, for a moment)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _umask_modes(directory: Path, before: dict[Path, tuple[int, int, int]]) -> None:
    """safetensors writes through a private temporary file (mode 0600); give every file this save
    wrote the mode an ordinary write would have, and leave files it did not touch alone."""
    mode = 0o666 & ~_umask()
    for path, stamp in _file_stamps(directory).items():
        if before.get(path) != stamp:
            path.chmod(mode)


def _resize(model: nn.Module, record: dict) -> None:
    """Give a freshly built dense model the module shapes ``record`` describes."""
    method = record["method"]
    if method == "recipe":  # each step resized what the steps before it left
        for step in record["steps"]:
            _resize(model, step)
        return
    if method in ("tt", "saten", "ptnn"):
        dtype = next(model.parameters()).dtype
        for name, spec in record["layers"].items():
            model.set_submodule(name, module_from_spec(spec, dtype))
        tie_head(model, record)
        return
    d = dims(model) if method == "flat-llm" else None
    for i, (layer, spec) in enumerate(zip(decoder_layers(model), record["layers"])):
        if method == "flat-llm":
            if spec["keep"] < 1.0:
                _resize_flat_llm(layer, d, spec)
        elif method in ("svd", "svd-llm"):
            for path, rank in spec["ranks"].items():
                old = layer.get_submodule(path)
                layer.set_submodule(path, LowRankLinear(old.in_features, old.out_features, rank,
                                                        old.bias is not None, dtype=old.weight.dtype))
        else:
            raise ShapesearchError(f"layer {i}: unknown compression method {method!r} in config.json")


def _resize_flat_llm(layer: nn.Module, d: Dims, spec: dict) -> None:
    """Give one dense decoder layer the shapes FLAT-LLM left (``spec``: V head size, MLP width,
    and whether the values run narrow or in zero-padded slots)."""
    rank, width = spec["v_head_dim"], spec["mlp_width"]
    parts, mlp = block_parts(layer, d)
    attn = layer.get_submodule(parts.path)
    values, out = attn.get_submodule(parts.values), attn.get_submodule(parts.output)
    dtype = values.weight.dtype
    if spec.get("values", "narrow") == "narrow":
        attn.set_submodule(parts.values, nn.Linear(d.hidden, d.kv_heads * rank, bias=values.bias is not None,
                                                   dtype=dtype))
        attn.set_submodule(parts.output, nn.Linear(d.heads * rank, d.hidden, bias=out.bias is not None, dtype=dtype))
        attention.patch(attn)
    else:
        attn.set_submodule(parts.values, SlotLinear.from_spec(  # the queries and keys of a fused one stay in front
            {"in_features": d.hidden, "out_features": values.out_features, "inputs": None,
             "outputs": parts.value_rows(d).start + d.kv_heads * rank, "bias": values.bias is not None}, dtype))
        attn.set_submodule(parts.output, SlotLinear.from_spec(
            {"in_features": out.in_features, "out_features": d.hidden, "inputs": d.heads * rank, "outputs": None,
             "bias": out.bias is not None}, dtype))
    block = layer.get_submodule(mlp.path)
    for name in mlp.inputs:
        old = block.get_submodule(name)
        rows = 2 * width if mlp.fused else width
        block.set_submodule(name, nn.Linear(d.hidden, rows, bias=old.bias is not None, dtype=old.weight.dtype))
    old = block.get_submodule(mlp.down)
    block.set_submodule(mlp.down, nn.Linear(width, d.hidden, bias=old.bias is not None, dtype=old.weight.dtype))


def base_config(config: dict, name_or_path: str | Path = "") -> PreTrainedConfig:
    """The base model's config (e.g. a ``LlamaConfig`` with the compression record) from the dict
    of a config.json that :func:`save` marked compressed."""
    from transformers import CONFIG_MAPPING, __version__

    config = dict(config)
    record = dict(config.get("shapesearch_compression") or {})
    if _BASE_TYPE not in record:
        raise ShapesearchError(f"{name_or_path or 'this'} config.json names model type {MODEL_TYPE!r} but its "
                               f"shapesearch_compression record has no {_BASE_TYPE!r}; save the model again "
                               "with compressors.save")
    config["model_type"] = record.pop(_BASE_TYPE)
    if _BASE_LAYER_TYPES in record:
        config["layer_types"] = record.pop(_BASE_LAYER_TYPES)
    else:
        config.pop("layer_types", None)
    config["shapesearch_compression"] = record
    try:
        config_class = CONFIG_MAPPING[config["model_type"]]
    except KeyError:
        raise ShapesearchError(f"the compressed model's base type {config['model_type']!r} is unknown to "
                               f"transformers {__version__}; upgrade transformers") from None
    return config_class.from_dict(config, name_or_path=str(name_or_path))


def check_safetensors(directory: str | Path) -> None:
    """Refuse a model directory whose weights are only PyTorch pickles: a pickle can run code
    when it is read (even torch's restricted reader has had ways round it), so none is read."""
    directory = Path(directory)
    if not any(directory.glob("*.safetensors")) and any(directory.glob("*.bin")):
        raise ShapesearchError(f"{directory} holds its weights only as PyTorch pickles (.bin), which shapesearch "
                               "never reads; save the model with safetensors (model.save_pretrained(dir)) and give "
                               "that directory")


def read_config(directory: str | Path) -> PreTrainedConfig:
    """The config :func:`load` builds from: the base model's (with the compression record if any),
    also for directories written before compressed ones were marked, and for dense ones."""
    from transformers import AutoConfig

    directory = Path(directory)
    path = directory / "config.json"
    if not path.is_file():
        raise ShapesearchError(f"{directory} has no config.json; give a directory written by `compressors.save`")
    config = json.loads(path.read_text())
    if config.get("model_type") != MODEL_TYPE:
        return AutoConfig.from_pretrained(directory)
    return base_config(config, directory)


def is_causal_lm_name(name: str) -> bool:
    """Whether ``name`` is a causal-LM class transformers knows (``LlamaForCausalLM``, also
    ``GPT2LMHeadModel`` and the other names that do not end in ForCausalLM)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return name.endswith("ForCausalLM") or name in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


def _auto_class(config: PreTrainedConfig) -> type:
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    names = config.architectures or []
    if any(is_causal_lm_name(a) for a in names):
        return AutoModelForCausalLM
    if any(a.endswith("ForSequenceClassification") for a in names):
        return AutoModelForSequenceClassification
    return AutoModel


def build(config: PreTrainedConfig, dtype: torch.dtype | None = None,
          attn_implementation: str | None = None) -> nn.Module:
    """A model of ``config``'s (base) architecture with the recorded compressed shapes, freshly
    initialised."""
    model = _auto_class(config).from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    as_linears(model)
    record = getattr(config, "shapesearch_compression", None)
    if record:
        _resize(model, record)
    return model


def load(directory: str | Path, dtype: torch.dtype | None = None,
         attn_implementation: str | None = None) -> nn.Module:
    """Rebuild a model saved by :func:`save` (compressed or dense) and load its weights
    (in ``dtype``, default: the dtype it was saved in)."""
    return load_with_config(directory, read_config(directory), dtype, attn_implementation)


def load_with_config(directory: str | Path, config: PreTrainedConfig, dtype: torch.dtype | None = None,
                     attn_implementation: str | None = None) -> nn.Module:
    """:func:`load` with the (base) config already read from ``directory`` (and maybe adjusted)."""
    directory = Path(directory)
    saved = getattr(config, "dtype", None)
    dtype = dtype or (getattr(torch, saved) if isinstance(saved, str) else saved) or torch.float32
    record = getattr(config, "shapesearch_compression", None)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if not record:
        check_safetensors(directory)
        model, info = _auto_class(config).from_pretrained(directory, dtype=dtype, output_loading_info=True,
                                                          attn_implementation=attn_implementation,
                                                          use_safetensors=True)
        # transformers fills missing weights with random ones and only logs it: a wrong model
        missing = sorted(set(info["missing_keys"]) - tied) + sorted(k[0] for k in info["mismatched_keys"])
        if missing:
            raise ShapesearchError(f"{directory}: weights missing or of the wrong shape for its config.json "
                                   f"({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}); "
                                   "give a complete model directory")
        as_linears(model)
        return model.eval()
    model = build(config, dtype, attn_implementation)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ShapesearchError(f"{directory} has no .safetensors weights")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - tied:
        raise ShapesearchError(f"{directory}: weights do not match the recorded shapes "
                         f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    return model.eval()
