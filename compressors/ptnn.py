"""PTNN: partial tensorization with retraining, layer by layer — our reconstruction.

PTNN (Vadlamannati & Solgi, "Partial Tensorized Transformers for Natural Language
Processing", ICAART 2024) publishes no layer order, ranks, schedule or stopping rule (notes
§10), so every choice below is ours:

1. Optionally fine-tune the dense model first; its dev metric is the reference.
2. Candidates, in this stated order: the token embedding, then the FFN linears from the top
   block down, then the attention linears from the top block down (the layers nearest the
   task head first: they adapt fastest when retrained).
3. For each: search its TT shape at ε with the layer GA (the embedding's fitted to rows
   weighted by token frequency in the training texts, and sized to ``embedding_keep`` of the
   table), swap it in, retrain the whole model for ``steps`` steps, measure the dev metric.
   Keep it when dev ≥ reference − τ (default for a classifier: two standard errors of the
   reference's dev accuracy), else restore the whole model as it was before the candidate.
4. Stop when the whole model holds at most ``budget`` of its dense parameters, or when no
   candidate is left.

What "retrain" and "dev metric" mean is a :class:`~compressors.retraining.Retraining`:
``compress(model, PTNNConfig(...), tokenizer=tok, task=task)`` runs it on a sequence
classifier (accuracy); ``retraining=ImageDistillation(...)`` on a ViT (feature cosine to the
dense model, no labels; a ViT has no token embedding: ``embeddings=False``).  The report
holds every decision with its dev metric, the dense and final dev / test metric, and the
whole-model and replaced-layer parameter ratios.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from shapesearch.errors import ArgumentError, ShapesearchError
from shapesearch.matrix.formats import Format
from shapesearch.matrix.layer_search import LayerSearchConfig, search_matrix

from .accounting import dense_params, layer_params
from .classifier import TrainConfig
from .compress import ALREADY_COMPRESSED, register_handler
from .layer_plans import searched_weight
from .retraining import Retraining, TextClassification
from .targets import input_embedding, layer_type, target_linears
from .text_tasks import TextTask
from .tt_embedding import TTEmbedding
from .tt_linear import tt_layer

ATTENTION_WORDS = ("attention", "attn", "query", "key", "value", "q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class PTNNConfig:
    """PTNN settings.  ``budget``: whole-model parameter fraction to reach (embeddings
    included); ``tolerance`` τ: dev accuracy (a fraction, 0.01 = 1 point) a kept layer may
    lose against the dense reference (None: two standard errors of the reference's dev accuracy,
    2·√(a(1 − a)/n), the smallest drop a single dev measurement can tell from noise);
    ``eps`` / ``embedding_eps``: relative Frobenius error of each linear's TT / at which the
    embedding's shape is searched; ``steps``: retraining steps after each
    candidate; ``dense_steps``: dense fine-tuning first (0: the model is fine-tuned already);
    ``frequency_weighted``: fit the embedding's TT to rows weighted by √(count + 1) of each
    token in the training texts (rare rows may err more; see ``tt_embedding``);
    ``embedding_keep``: size the embedding's TT to this fraction of the table's parameters
    (its ε found by bisection on the shape searched at ``embedding_eps``; None: use that ε)."""

    budget: float = 0.6
    tolerance: float | None = None
    eps: float = 0.5
    embedding_eps: float = 0.5
    format: str = "tt"
    embeddings: bool = True
    steps: int = 40
    dense_steps: int = 300
    final_steps: int = 0
    lr: float = 5e-5
    batch: int = 32
    seed: int = 0
    search_generations: int = 10
    frequency_weighted: bool = True
    embedding_keep: float | None = 0.3

    def __post_init__(self) -> None:
        if not 0.0 < self.budget <= 1.0:
            raise ArgumentError("budget", f"must be in (0, 1] (fraction of the whole model's parameters), "
                                          f"got {self.budget}")
        if self.tolerance is not None and not 0.0 <= self.tolerance < 1.0:
            raise ArgumentError("tolerance", f"must be in [0, 1) (dev accuracy a kept layer may lose), "
                                             f"got {self.tolerance}")
        for name in ("eps", "embedding_eps"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ArgumentError(name, f"must be in (0, 1) (relative Frobenius error), got {value}")
        if self.embedding_keep is not None and not 0.0 < self.embedding_keep < 1.0:
            raise ArgumentError("embedding_keep", f"must be in (0, 1) (fraction of the table's parameters), "
                                                  f"got {self.embedding_keep}")
        self.format = Format.parse(self.format).value
        if self.search_generations < 0:
            raise ArgumentError("search_generations", f"must be >= 0, got {self.search_generations}")
        self.train_config(self.steps)  # checks steps, lr, batch
        self.train_config(self.dense_steps)
        if self.final_steps < 0:
            raise ArgumentError("final_steps", f"must be >= 0 retraining steps, got {self.final_steps}")

    def train_config(self, steps: int) -> TrainConfig:
        return TrainConfig(steps=steps, lr=self.lr, batch=self.batch, seed=self.seed)


def candidate_order(model: nn.Module, embeddings: bool = True) -> list[str]:
    """Layer names in PTNN's stated order: embedding, FFN top → bottom, attention top → bottom."""
    linears = list(target_linears(model))  # block order, bottom → top
    attention = [n for n in linears if any(w in layer_type(n) for w in ATTENTION_WORDS)]
    ffn = [n for n in linears if n not in attention]
    return ([input_embedding(model)[0]] if embeddings else []) + ffn[::-1] + attention[::-1]


def whole_params(model: nn.Module) -> int:
    """All distinct parameters (a shared table counts once)."""
    return sum(p.numel() for p in model.parameters())


def _tensorized(module: nn.Module, config: PTNNConfig, seed: int,
                row_weights: torch.Tensor | None = None) -> tuple[nn.Module, dict]:
    """The TT replacement of ``module`` at its ε with a GA-searched shape, and its plan row
    (an embedding's rows weighted by ``row_weights`` when given)."""
    eps = config.embedding_eps if isinstance(module, nn.Embedding) else config.eps
    weight = searched_weight(module)
    if row_weights is not None:  # a new array: the weight may share the model's memory
        scale = np.ones(len(weight), weight.dtype)
        scale[:len(row_weights)] = row_weights.numpy()
        weight = weight * scale[:, None]
    search = LayerSearchConfig(generations=config.search_generations, seed=seed,
                               stall=min(LayerSearchConfig.stall, max(config.search_generations, 1)))
    plan = search_matrix(weight.astype(np.float64), eps, config.format, search)
    if isinstance(module, nn.Embedding) and config.embedding_keep is not None:
        new, eps = TTEmbedding.within(module.weight, int(config.embedding_keep * module.weight.numel()), plan.format,
                                      plan.out_modes, plan.in_modes, reverse=plan.reverse_sweep,
                                      padding_idx=module.padding_idx, row_weights=row_weights)
    elif isinstance(module, nn.Embedding):
        new = TTEmbedding.from_embedding(module, plan.format, plan.out_modes, plan.in_modes, eps,
                                         reverse=plan.reverse_sweep, row_weights=row_weights)
    else:
        new = tt_layer(module.weight, plan.format, plan.out_modes, plan.in_modes, eps, plan.reverse_sweep,
                       module.bias)
    return new, {"eps": eps, "out_modes": list(plan.out_modes), "in_modes": list(plan.in_modes),
                 "ranks": list(plan.ranks or ()), "search_seconds": plan.seconds}


@register_handler(PTNNConfig)
def ptnn(model: nn.Module, config: PTNNConfig, *, tokenizer=None, task: TextTask | None = None,
         retraining: Retraining | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """Run PTNN on ``model`` (rewritten in place) and return the report (see the module
    docstring).  ``retraining`` says what to retrain on and how to score (a sequence
    classifier: ``tokenizer=`` and ``task=`` build one); report keys name its metric."""
    if retraining is None:
        if tokenizer is None or task is None:
            raise ArgumentError("task", "PTNN retrains: pass tokenizer= and task= (a TextTask), or retraining=, "
                                        "to compress()")
        retraining = TextClassification(tokenizer, task)
    if getattr(model.config, "shapesearch_compression", None):
        raise ShapesearchError(ALREADY_COMPRESSED)
    say = progress or (lambda message: None)
    metric = retraining.metric
    start = time.perf_counter()
    dense_losses = retraining.train(model, config.train_config(config.dense_steps))
    dense_dev, dense_test = retraining.dev(model), retraining.test(model)
    tolerance = config.tolerance
    if tolerance is None:
        tolerance = retraining.default_tolerance(dense_dev)
    say(f"dense: dev {dense_dev:.4f}, test {dense_test:.4f}; τ = {tolerance:.4f}")
    total_before = whole_params(model)
    target = config.budget * total_before
    order = candidate_order(model, config.embeddings)
    weights = retraining.embedding_weights(model) if config.embeddings and config.frequency_weighted else None
    decisions, layers, steps = [], {}, config.dense_steps
    for i, name in enumerate(order):
        if whole_params(model) <= target:
            break
        old = model.get_submodule(name)
        snapshot = copy.deepcopy(model.state_dict())
        t0 = time.perf_counter()
        new, row = _tensorized(old, config, config.seed + i,
                               weights if isinstance(old, nn.Embedding) else None)
        new.train(old.training)
        model.set_submodule(name, new)
        retraining.train(model, config.train_config(config.steps))
        steps += config.steps
        dev = retraining.dev(model)
        kept = dev >= dense_dev - tolerance
        row.update(name=name, dense_params=dense_params(old), params=layer_params(new), kept=kept,
                   seconds=time.perf_counter() - t0, **{f"dev_{metric}": dev})
        if kept:
            layers[name] = new.spec()
        else:
            model.set_submodule(name, old)
            model.load_state_dict(snapshot)
        row["model_ratio"] = whole_params(model) / total_before
        decisions.append(row)
        say(f"{name}: dev {dev:.4f} → {'kept' if kept else 'reverted'}, model at {row['model_ratio']:.3f}")
    final_dev = None
    if config.final_steps and layers:
        retraining.train(model, config.train_config(config.final_steps))
        steps += config.final_steps
        final_dev = retraining.dev(model)
        say(f"final retraining, {config.final_steps} steps: dev {final_dev:.4f}")
    model.config.shapesearch_compression = {"method": "ptnn", "format": config.format, "layers": layers}
    kept_rows = [r for r in decisions if r["kept"]]
    replaced_before = sum(r["dense_params"] for r in kept_rows)
    total_after = whole_params(model)
    return {
        "method": "ptnn", "retraining": retraining.description, "metric": metric,
        "budget": config.budget, "tolerance": tolerance,
        f"dense_dev_{metric}": dense_dev, f"dense_test_{metric}": dense_test,
        f"dev_{metric}": retraining.dev(model) if final_dev is None else final_dev,
        f"test_{metric}": retraining.test(model),
        "params_before": total_before, "params_after": total_after, "model_ratio": total_after / total_before,
        "budget_met": total_after <= target,
        "replaced_layers": len(kept_rows),
        "replaced_params_before": replaced_before,
        "replaced_params_after": sum(r["params"] for r in kept_rows),
        # None, not NaN, when nothing was replaced: NaN is not JSON
        "replaced_ratio": (sum(r["params"] for r in kept_rows) / replaced_before) if replaced_before else None,
        "train_steps": steps, "final_steps": config.final_steps if layers else 0,
        "dense_final_loss": dense_losses[-1] if dense_losses else None,
        "seconds": time.perf_counter() - start,
        "decisions": decisions,
    }
