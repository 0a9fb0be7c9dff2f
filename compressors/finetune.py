"""Short fine-tuning in compressed space, on CPU.

Only the compressed layers train — TT cores, kept residual values (the mask never changes)
and their biases (regime (a) of the Saten notes; low-rank factors for the SVD baseline);
everything else stays frozen.  The loss is the next-token loss on text, or distillation from
the dense model: KL to its next-token distribution for a causal LM, MSE to its last hidden
states for an encoder.  Dropout stays off (eval mode), so a run is reproducible.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from shapesearch.errors import ArgumentError, ShapesearchError

from .architectures import decoder_layers
from .low_rank_linear import LowRankLinear
from .model_loading import is_causal_lm
from .saten import SatenLinear
from .tt_embedding import TTEmbedding
from .tt_linear import TTLinear, TTMatrixLinear

COMPRESSED = (TTMatrixLinear, TTLinear, SatenLinear, LowRankLinear, TTEmbedding)
TRAINED = ("compressed", "decoder-linears")
SCHEDULES = ("constant", "cosine")


@dataclass
class FinetuneConfig:
    """``steps`` optimizer steps of ``batch`` windows each; AdamW at learning rate ``lr`` (no
    weight decay by default: decay would pull the kept residual values and TT cores toward zero).
    ``distill``: KL to the dense teacher's next-token distribution at ``temperature``.
    ``train``: "compressed" (the compressed layers) or "decoder-linears" (every linear of the
    decoder stack, compressed or not: what a FLAT-LLM model, whose linears are only narrowed,
    has to train, so methods can get the same fine-tune).  ``schedule``: "constant", or "cosine"
    (``lr`` reached after a linear warmup over the first ``warmup`` fraction of the steps, then
    a cosine decay toward zero over the rest).  ``balance``: before training, rescale every TT
    layer's cores to equal norms (the function unchanged; see ``balance_``)."""

    steps: int = 100
    lr: float = 1e-4
    batch: int = 1
    distill: bool = False
    weight_decay: float = 0.0
    temperature: float = 1.0
    train: str = "compressed"
    schedule: str = "constant"
    warmup: float = 0.0
    balance: bool = False

    def __post_init__(self) -> None:
        if self.train not in TRAINED:
            raise ArgumentError("train", f"must be one of {', '.join(TRAINED)}, got {self.train!r}")
        if self.schedule not in SCHEDULES:
            raise ArgumentError("schedule", f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0.0 <= self.warmup < 1.0:
            raise ArgumentError("warmup", f"must be in [0, 1) (a fraction of the steps), got {self.warmup}")
        if self.steps < 0:
            raise ArgumentError("steps", f"must be >= 0 (optimizer steps of fine-tuning), got {self.steps}")
        if self.batch < 1:
            raise ArgumentError("batch", f"must be >= 1 (windows per optimizer step), got {self.batch}")
        if not self.lr > 0:
            raise ArgumentError("lr", f"must be positive (learning rate), got {self.lr}")
        if not self.weight_decay >= 0:
            raise ArgumentError("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if not self.temperature > 0:
            raise ArgumentError("temperature", f"must be positive (distillation temperature), got {self.temperature}")

    def lr_factor(self, step: int) -> float:
        """The multiple of ``lr`` used at optimizer step ``step`` (0-based)."""
        warm = round(self.warmup * self.steps)
        if step < warm:
            return (step + 1) / (warm + 1)
        if self.schedule == "constant":
            return 1.0
        span = max(1, self.steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / span))


def trainable_parameters(model: nn.Module, train: str = "compressed") -> list[nn.Parameter]:
    """Parameters of the compressed layers, or with ``train="decoder-linears"`` of every linear
    of the decoder stack (each once)."""
    kinds, root = COMPRESSED, model
    if train == "decoder-linears":
        kinds, root = (*COMPRESSED, nn.Linear), decoder_layers(model)
    params: dict[int, nn.Parameter] = {}
    for module in root.modules():
        if isinstance(module, kinds):
            params.update((id(p), p) for p in module.parameters())
    return list(params.values())


def _loss(model: nn.Module, teacher: nn.Module | None, ids: torch.Tensor, config: FinetuneConfig) -> torch.Tensor:
    if is_causal_lm(model):
        if teacher is None:
            return model(input_ids=ids, labels=ids, use_cache=False).loss
        logits = model(input_ids=ids, use_cache=False).logits
        with torch.no_grad():
            target = teacher(input_ids=ids, use_cache=False).logits
        t = config.temperature
        return nn.functional.kl_div(torch.log_softmax(logits / t, -1).flatten(0, -2),
                                    torch.log_softmax(target / t, -1).flatten(0, -2),
                                    log_target=True, reduction="batchmean") * t * t
    hidden = model(input_ids=ids).last_hidden_state
    with torch.no_grad():
        target = teacher(input_ids=ids).last_hidden_state
    return nn.functional.mse_loss(hidden, target)


def finetune(model: nn.Module, windows: list[torch.Tensor], config: FinetuneConfig | None = None,
             teacher: nn.Module | None = None, progress: bool = True) -> dict:
    """Train the compressed layers of ``model`` in place on token ``windows`` ([1, T] each).

    ``teacher`` (the dense model) is needed for distillation and for encoders (which have no
    language-model loss).  ``progress``: a tqdm bar on stderr.  Returns the mean loss of the
    first and last tenth of the steps, the trainable parameter count and the time in seconds."""
    from tqdm import tqdm

    config = config or FinetuneConfig()
    if not windows:
        raise ShapesearchError("fine-tuning needs at least one text window")
    if (config.distill or not is_causal_lm(model)) and teacher is None:
        raise ShapesearchError("distillation (and any encoder fine-tune) needs the dense model as teacher")
    params = trainable_parameters(model, config.train)
    if not params:
        raise ShapesearchError("the model has no compressed layers to fine-tune; compress it first")
    teacher = teacher if (config.distill or not is_causal_lm(model)) else None
    flags = {id(p): p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    model.eval()
    if config.balance:
        for module in model.modules():
            if isinstance(module, TTLinear | TTMatrixLinear):
                module.balance_()
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, config.lr_factor)
    losses, start = [], time.perf_counter()
    try:
        bar = tqdm(range(config.steps), desc="fine-tune", unit="step", file=sys.stderr, disable=not progress)
        for step in bar:
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for j in range(config.batch):
                ids = windows[(step * config.batch + j) % len(windows)]
                loss = _loss(model, teacher, ids, config) / config.batch
                loss.backward()
                total += float(loss.detach())
            opt.step()
            schedule.step()
            losses.append(total)
            bar.set_postfix(loss=f"{total:.4f}")
    finally:
        for p in model.parameters():
            p.requires_grad_(flags.get(id(p), True))
    seconds = time.perf_counter() - start
    head = losses[: max(1, len(losses) // 10)]
    tail = losses[-max(1, len(losses) // 10):]
    return {"steps": config.steps, "lr": config.lr, "batch": config.batch, "schedule": config.schedule,
            "warmup": config.warmup, "balance": config.balance,
            "loss": "distillation" if teacher is not None else "next-token",
            "trainable_params": sum(p.numel() for p in params),
            "loss_start": sum(head) / len(head) if losses else None,
            "loss_end": sum(tail) / len(tail) if losses else None,
            "seconds": seconds}
