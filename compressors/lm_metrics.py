"""Perplexity and CPU speed, with the protocol stated in what they return."""

from __future__ import annotations

import math
import statistics
import time
from typing import TYPE_CHECKING

import torch
from torch import nn

from shapesearch.errors import ShapesearchError

from .corpus import token_ids

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@torch.no_grad()
def perplexity(model: nn.Module, tokenizer: PreTrainedTokenizerBase, text: str, window: int = 512,
               max_windows: int | None = None) -> dict:
    """exp(mean NLL) over the first ``max_windows`` (default all) non-overlapping windows of
    ``window`` tokens; each window predicts its last window − 1 tokens (no context carried
    across windows)."""
    ids = token_ids(tokenizer, text)
    n = ids.numel() // window
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise ShapesearchError(f"evaluation text has {ids.numel()} tokens, fewer than one window of {window}")
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
    ``prompt`` tokens from the start of ``text`` and ``new_tokens`` generated (median of ``repeats``)."""
    ids = token_ids(tokenizer, text)
    prompts = torch.stack([ids[i * prompt:(i + 1) * prompt] for i in range(batch)])
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
            "threads": torch.get_num_threads()}
