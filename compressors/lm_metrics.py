"""Perplexity and CPU speed, with the protocol stated in what they return."""

from __future__ import annotations

import math
import statistics
import time
from typing import TYPE_CHECKING

import torch
from torch import nn

from shapesearch.errors import ArgumentError, ShapesearchError

from .corpus import token_ids

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def check_context(model: nn.Module, tokens: int, argument: str) -> None:
    """Refuse windows longer than the model's context (``max_position_embeddings``): learned
    positions (GPT-2) have no entry past it, rotary ones were never trained there."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and tokens > limit:
        raise ArgumentError(argument, f"{tokens} tokens is longer than the model's context of {limit}; give "
                                      f"{limit} or less")


@torch.no_grad()
def perplexity(model: nn.Module, tokenizer: PreTrainedTokenizerBase, text: str, window: int = 512,
               max_windows: int | None = None) -> dict:
    """exp(mean NLL) over the first ``max_windows`` (default all) non-overlapping windows of
    ``window`` tokens; each window predicts its last window − 1 tokens (no context carried
    across windows)."""
    check_context(model, window, "window")
    ids = token_ids(tokenizer, text)
    n = ids.numel() // window
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise ShapesearchError(f"evaluation text has {ids.numel()} tokens, fewer than one window of {window}; "
                               "give a longer text or a smaller window")
    nll, count = 0.0, 0
    for i in range(n):
        chunk = ids[i * window:(i + 1) * window].unsqueeze(0)
        logits = model(input_ids=chunk, use_cache=False).logits[0, :-1].double()
        nll += float(nn.functional.cross_entropy(logits, chunk[0, 1:], reduction="sum"))
        count += window - 1
    return {"perplexity": math.exp(nll / count), "tokens": count, "windows": n, "window": window}


@torch.no_grad()
def speed(model: nn.Module, tokenizer: PreTrainedTokenizerBase, text: str, batch: int = 4, prompt: int = 256,
          new_tokens: int = 32, repeats: int = 3) -> dict:
    """Prefill and greedy-decode throughput on CPU in tokens/s, for ``batch`` prompts of
    ``prompt`` tokens from the start of ``text`` and ``new_tokens`` generated (median of ``repeats``).

    The shape measured is the same for every text, so numbers compare across texts: a text
    shorter than ``batch`` × ``prompt`` tokens is repeated to fill the prompts
    (``text_tokens`` in the result says how many distinct tokens it had), and the prompt is
    cut to the model's ``max_position_embeddings`` − ``new_tokens`` if that is shorter."""
    ids = token_ids(tokenizer, text)
    if ids.numel() == 0:
        raise ShapesearchError("the speed text has no tokens; give a text with content")
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if limit:
        prompt = max(1, min(prompt, limit - new_tokens))
    need = batch * prompt
    text_tokens = ids.numel()
    if text_tokens < need:  # repeat: the speed of a forward pass does not depend on the token values
        ids = ids.repeat(-(-need // text_tokens))
    prompts = ids[:need].reshape(batch, prompt)
    mask = torch.ones_like(prompts)
    prefill, total = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(input_ids=prompts, attention_mask=mask, use_cache=True)
        prefill.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model.generate(input_ids=prompts, attention_mask=mask, max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, use_cache=True,
                       pad_token_id=tokenizer.eos_token_id)
        total.append(time.perf_counter() - t0)
    t_prefill, t_total = statistics.median(prefill), statistics.median(total)
    return {"prefill_tokens_per_s": batch * prompt / t_prefill,
            "decode_tokens_per_s": batch * (new_tokens - 1) / max(t_total - t_prefill, 1e-9),
            "batch": batch, "prompt_tokens": prompt, "new_tokens": new_tokens,
            "text_tokens": min(text_tokens, need), "prompt_repeated": text_tokens < need,
            "threads": torch.get_num_threads()}
