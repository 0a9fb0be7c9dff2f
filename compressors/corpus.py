"""Text for calibration and evaluation, offline: any text file, or the Wikipedia articles
shipped in gensim's test data (split by article, so calibration and evaluation never share
an article)."""

from __future__ import annotations

import bz2
import random
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from shapesearch.errors import ArgumentError, ShapesearchError

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


def read_text(path: str | Path | None, part: str, argument: str | None = None) -> str:
    """The UTF-8 text of file ``path``, or with no path the Wikipedia ``part``.  A missing,
    unreadable, empty or non-UTF-8 file is an :class:`ArgumentError` naming ``argument``
    (a plain :class:`ShapesearchError` without one)."""
    if path is None:
        return wikipedia(part)
    path = Path(path)

    def bad(problem: str) -> ShapesearchError:
        return ArgumentError(argument, problem) if argument else ShapesearchError(f"text file {problem}")

    if path.is_dir():
        raise bad(f"{path} is a directory; give a text file")
    if not path.is_file():
        raise bad(f"{path} not found; give a text file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise bad(f"{path} is not UTF-8 text; give a UTF-8 text file") from exc
    except OSError as exc:
        raise bad(f"{path} cannot be read ({exc.strerror}); give a text file you may read") from exc
    if not text.strip():
        raise bad(f"{path} is empty; give a text file with content")
    return text


def token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> torch.Tensor:
    """``text`` as one 1-D tensor of token ids (no special tokens)."""
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def calibration_windows(tokenizer: PreTrainedTokenizerBase, text: str, samples: int, seqlen: int,
                        seed: int = 0) -> list[torch.Tensor]:
    """``samples`` windows of ``seqlen`` tokens at seeded random offsets, each [1, seqlen]."""
    ids = token_ids(tokenizer, text)
    if ids.numel() < seqlen + 1:
        raise ShapesearchError(f"calibration text has {ids.numel()} tokens; need more than seqlen = {seqlen} — "
                               "give a longer text or a smaller seqlen")
    rng = random.Random(seed)
    starts = [rng.randrange(0, ids.numel() - seqlen) for _ in range(samples)]
    return [ids[s:s + seqlen].unsqueeze(0) for s in starts]
