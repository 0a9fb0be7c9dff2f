"""Text classifiers on an encoder: build one, fine-tune it, measure its accuracy.

The classifier is transformers' own ``AutoModelForSequenceClassification`` of the encoder
(BERT: the pooled [CLS] through a new linear head), so a saved classifier is a plain
transformers directory.  Training draws batches from a seeded permutation of the training
texts (an epoch is one pass), with AdamW and a linear warm-up over the first 6 % of steps;
the same seed gives the same run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from shapesearch.errors import ArgumentError

from .conv1d_linear import as_linears
from .serialization import check_safetensors
from .text_tasks import LabelledText

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

MAX_TOKENS = 64  # review snippets: 99 % are under 40 words


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings: optimizer ``steps`` of ``batch`` texts at learning rate ``lr``."""

    steps: int = 300
    lr: float = 5e-5
    batch: int = 32
    seed: int = 0
    max_tokens: int = MAX_TOKENS

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ArgumentError("steps", f"must be >= 0 optimizer steps, got {self.steps}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ArgumentError("lr", f"must be a positive learning rate, got {self.lr}")
        if self.batch < 1:
            raise ArgumentError("batch", f"must be >= 1 texts per step, got {self.batch}")


def classifier_from_encoder(directory: str, classes: tuple[str, ...], seed: int = 0) -> nn.Module:
    """The encoder in ``directory`` with a new classification head for ``classes`` (seeded)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights are newly initialized": the head, as intended
    try:
        check_safetensors(directory)
        model = AutoModelForSequenceClassification.from_pretrained(
            directory, num_labels=len(classes), id2label=dict(enumerate(classes)),
            label2id={c: i for i, c in enumerate(classes)}, dtype=torch.float32,
            ignore_mismatched_sizes=True, use_safetensors=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    as_linears(model)
    return model.eval()


def _encode(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_tokens: int) -> dict:
    return tokenizer(texts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")


def batches(data: LabelledText, batch: int, seed: int):
    """Endless index batches over ``data``: a fresh seeded permutation per epoch."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(data)))
        rng.shuffle(order)
        for i in range(0, len(order) - batch + 1 if len(order) >= batch else 1, batch):
            yield order[i:i + batch]


def optimize(params: list[nn.Parameter], config: TrainConfig, loss_at: Callable[[int], torch.Tensor],
             weight_decay: float = 0.01, progress: Callable[[int, float], None] | None = None) -> list[float]:
    """``config.steps`` AdamW steps on ``loss_at(step)``, with a linear warm-up over the first
    6 % of the steps and the gradient norm clipped to 1; returns the losses.  A non-finite loss
    is an :class:`ArgumentError` on ``lr``."""
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=weight_decay)
    warm = max(1, round(0.06 * config.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    losses = []
    for step in range(config.steps):
        loss = loss_at(step)
        if not torch.isfinite(loss):
            raise ArgumentError("lr", f"{config.lr:g} made the training loss {loss.item()} at step {step + 1}; "
                                      "give a smaller learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress:
            progress(step, losses[-1])
    return losses


def train_classifier(model: nn.Module, tokenizer: PreTrainedTokenizerBase, data: LabelledText,
                     config: TrainConfig = TrainConfig(), draw=None,
                     progress: Callable[[int, float], None] | None = None) -> list[float]:
    """Fine-tune every parameter of ``model`` on ``data`` for ``config.steps`` steps; returns the
    losses.  ``draw``: a batch iterator to continue (so several calls share one pass order);
    ``progress(step, loss)`` after each step.  The model is left in eval mode."""
    if config.steps == 0:
        return []
    draw = draw if draw is not None else batches(data, config.batch, config.seed)

    def loss_at(step: int) -> torch.Tensor:
        idx = next(draw)
        enc = _encode(tokenizer, [data.texts[i] for i in idx], config.max_tokens)
        return model(**enc, labels=torch.tensor([data.labels[i] for i in idx])).loss

    torch.manual_seed(config.seed)  # dropout
    model.train()
    try:
        return optimize([p for p in model.parameters() if p.requires_grad], config, loss_at, progress=progress)
    finally:
        model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, tokenizer: PreTrainedTokenizerBase, data: LabelledText, batch: int = 128,
             max_tokens: int = MAX_TOKENS) -> float:
    """Fraction of ``data`` whose arg-max class is its label (texts batched by length, so
    little of each batch is padding)."""
    model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data.texts[i]))
    right = 0
    for i in range(0, len(order), batch):
        idx = order[i:i + batch]
        enc = _encode(tokenizer, [data.texts[j] for j in idx], max_tokens)
        pred = model(**enc).logits.argmax(-1)
        right += int((pred == torch.tensor([data.labels[j] for j in idx])).sum())
    return right / len(data)
