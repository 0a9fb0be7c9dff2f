"""Small fixtures for the command-line tests: tiny random Llama / BERT model directories with a
tokenizer (no hub, no download), small images and arrays.

A model directory holds ``config.json``, safetensors weights and a fast tokenizer
(``tokenizer.json`` + ``tokenizer_config.json``) that ``AutoTokenizer.from_pretrained`` reads,
so ``--model DIR`` works for ``layers``, ``compress`` and ``eval``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# a few hundred words of varied English; the byte-level BPE below also covers any other text
TEXT = " ".join([
    "The history of the region is long and complex, shaped by rivers, mountains and trade.",
    "Early settlers farmed the valleys, raised cattle and built towns along the coast.",
    "In the nineteenth century railways connected the cities, and industry grew quickly.",
    "Scientists study the climate, the soil and the animals that live in the forests.",
    "Music, painting and literature flourished; many writers described the changing land.",
    "Today the economy depends on services, tourism, agriculture and modern manufacturing.",
    "Numbers such as 1, 2, 3, 1990 and 2024 appear in dates, prices and population counts.",
]) * 8

VOCAB = 320  # 256 byte tokens + merges + specials, below the models' vocab_size


def tiny_tokenizer():
    """A byte-level BPE tokenizer trained on :data:`TEXT` (every byte string encodes, no UNK)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 8, special_tokens=["<|endoftext|>", "[PAD]", "[UNK]",
                                                                         "[CLS]", "[SEP]", "[MASK]"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                   mask_token="[MASK]")


def tiny_llama_dir(path: Path, seed: int = 0, hidden: int = 32, intermediate: int = 64) -> Path:
    """A random 2-layer Llama (hidden 32, 4 heads of 8, 2 KV heads: GQA) with a tokenizer, saved to ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok) + 16, hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
                      max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


def tiny_bert_dir(path: Path, seed: int = 0) -> Path:
    """A random 2-layer BERT encoder (hidden 32) with a tokenizer, saved to ``path``."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    cfg = BertConfig(vocab_size=len(tok) + 16, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=512, pad_token_id=tok.pad_token_id)
    model = BertModel(cfg).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


def small_png(path: Path, h: int = 24, w: int = 30, mode: str = "RGB", seed: int = 0) -> Path:
    """A smooth random image saved as ``path`` (PNG/JPEG by suffix) in Pillow ``mode``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 4))
    for _ in range(4):
        cy, cx, s = rng.uniform(0, 1, 3)
        img += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (0.02 + 0.1 * s))[..., None] * rng.uniform(0.2, 1, 4)
    img = (img - img.min()) / (img.max() - img.min() + 1e-12)
    if mode == "I;16":
        im = Image.fromarray((img[..., 0] * 65535).round().astype(np.uint16))
    else:
        rgba = Image.fromarray((img * 255).round().astype(np.uint8), "RGBA")
        im = rgba.convert(mode)
    im.save(path)
    return path


def small_array(shape: tuple[int, ...] = (12, 10, 3), seed: int = 0) -> np.ndarray:
    """A smooth-ish float32 array (low rank plus noise)."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.standard_normal(shape), axis=0)
    return (x + 0.1 * rng.standard_normal(shape)).astype(np.float32)
