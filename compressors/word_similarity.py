"""Embedding quality of an encoder: Spearman correlation between its word similarities and
human scores on WordSim353 and SimLex-999 (the copies in gensim's test data, offline).

A word's vector is the encoder's mean-pooled last hidden state of the word on its own (with
its special tokens), as sentence-transformers pools all-MiniLM-L6-v2; similarity is cosine.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from shapesearch.errors import ArgumentError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DATASETS = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt"}


def word_pairs(name: str) -> list[tuple[str, str, float]]:
    """(word, word, human score) of a dataset in :data:`DATASETS` (``#`` lines skipped)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or spec.origin is None:
        raise ArgumentError("model", "word similarity needs the gensim package (pip install gensim)")
    path = Path(spec.origin).parent / "test" / "test_data" / DATASETS[name]
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if line.startswith("#") or len(parts) < 3:
            continue
        pairs.append((parts[0], parts[1], float(parts[2])))
    return pairs


@torch.no_grad()
def word_vectors(encoder: nn.Module, tokenizer: PreTrainedTokenizerBase, words: list[str],
                 batch: int = 256) -> torch.Tensor:
    """Mean-pooled last hidden states of each word alone, [len(words), hidden]."""
    encoder.eval()
    out = []
    for i in range(0, len(words), batch):
        enc = tokenizer(words[i:i + batch], padding=True, return_tensors="pt")
        hidden = encoder(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append((hidden * mask).sum(1) / mask.sum(1))
    return torch.cat(out)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's ρ (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a.numpy(), b.numpy()).statistic)


def word_similarity(encoder: nn.Module, tokenizer: PreTrainedTokenizerBase) -> dict[str, float]:
    """{dataset: Spearman ρ of cosine similarity against the human scores}; ``encoder`` is a
    bare encoder or a model whose ``base_model`` is one (e.g. a sequence classifier)."""
    encoder = getattr(encoder, "base_model", encoder)
    result = {}
    for name in DATASETS:
        pairs = word_pairs(name)
        words = sorted({w for a, b, _ in pairs for w in (a, b)})
        vectors = dict(zip(words, word_vectors(encoder, tokenizer, words)))
        cos = torch.stack([torch.cosine_similarity(vectors[a], vectors[b], dim=0) for a, b, _ in pairs])
        result[name] = spearman(cos, torch.tensor([s for _, _, s in pairs]))
    return result
