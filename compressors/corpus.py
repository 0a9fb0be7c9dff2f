"""Text for calibration and evaluation, offline: any text file, or the Wikipedia articles
shipped in gensim's test data (split by article, so calibration and evaluation never share
an article)."""

from __future__ import annotations

import bz2
import random
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from shapesearch.errors import ShapesearchError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

WIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def wikipedia(part: str, seed: int = 0, eval_fraction: float = 0.2) -> str:
    """The gensim Wikipedia articles, ``part`` = "calibration" or "evaluation" (a seeded split)."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki
    from gensim.test.utils import datapath

    with bz2.open(datapath(WIKI), "rb") as f:
        articles = [(title, filter_wiki(text)) for title, text, _ in extract_pages(f)
                    if not text.lstrip().lower().startswith("#redirect")]
    titles = sorted(t for t, _ in articles)
    random.Random(seed).shuffle(titles)
    held_out = set(titles[: max(1, round(eval_fraction * len(titles)))])
    keep = [text for title, text in articles if (title in held_out) == (part == "evaluation")]
    return "\n\n".join(keep)


def read_text(path: str | Path | None, part: str) -> str:
    """The UTF-8 text of file ``path``, or with no path the Wikipedia ``part``."""
    if path is None:
        return wikipedia(part)
    path = Path(path)
    if not path.is_file():
        raise ShapesearchError(f"text file {path} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ShapesearchError(f"{path} is not UTF-8 text") from exc
    if not text.strip():
        raise ShapesearchError(f"{path} is empty; give a text file with content")
    return text


def token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> torch.Tensor:
    """``text`` as one 1-D tensor of token ids (no special tokens)."""
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def calibration_windows(tokenizer: PreTrainedTokenizerBase, text: str, samples: int, seqlen: int,
                        seed: int = 0) -> list[torch.Tensor]:
    """``samples`` windows of ``seqlen`` tokens at seeded random offsets, each [1, seqlen]."""
    ids = token_ids(tokenizer, text)
    if ids.numel() < seqlen + 1:
        raise ShapesearchError(f"calibration text has {ids.numel()} tokens; need more than seqlen = {seqlen}")
    rng = random.Random(seed)
    starts = [rng.randrange(0, ids.numel() - seqlen) for _ in range(samples)]
    return [ids[s:s + seqlen].unsqueeze(0) for s in starts]
