"""How much a layer's output error costs the model: a measured sensitivity per linear.

A small error δy on a layer's output raises the next-token loss by about ½ δyᵀ F δy, with F
the Fisher matrix of that output, E[g gᵀ] (g = ∂loss/∂y per token).  For an error with no
preferred direction this is ½ (E‖g‖² / d_out) ‖δy‖², so a layer's sensitivity is the mean
squared gradient per output entry.  An activation-aware plan's error energy per token is
ε²‖W L‖², and the budget is shared out to minimize Σ sensitivity × energy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from shapesearch.errors import ShapesearchError

from .model_loading import is_causal_lm


def output_sensitivity(model: nn.Module, windows: Iterable[torch.Tensor], names: Sequence[str]) -> dict[str, float]:
    """E‖∂loss/∂y‖² / d_out per named linear (y its output) of the next-token loss on ``windows``
    (token ids, each [1, T] or [T]), averaged over tokens.  The model's parameters are left as
    they were (no gradient is kept)."""
    if not is_causal_lm(model):
        raise ShapesearchError(f"sensitivity needs a causal LM's next-token loss; {type(model).__name__} has none "
                               "(drop the sensitivity budget for this model)")
    sums = dict.fromkeys(names, 0.0)
    tokens, training = 0, model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]

    def watch(name: str):
        def hook(module, args, out):
            if out.requires_grad:
                out.register_hook(lambda g: sums.__setitem__(name, sums[name] + float(g.double().pow(2).sum())))
        return hook

    handles = [model.get_submodule(n).register_forward_hook(watch(n)) for n in names]
    model.eval()
    try:
        for p, _ in flags:  # gradients reach the outputs without being stored on the weights
            p.requires_grad_(False)
        embedding = model.get_input_embeddings()
        for window in windows:
            ids = window.reshape(1, -1)
            with torch.enable_grad():
                inputs = embedding(ids).detach().requires_grad_(True)
                # sum (not mean) over the predicted tokens: each token's gradient as if alone
                loss = model(inputs_embeds=inputs, labels=ids, use_cache=False).loss * (ids.shape[1] - 1)
                loss.backward()
            tokens += ids.shape[1] - 1
    finally:
        for h in handles:
            h.remove()
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(training)
    if not tokens:
        raise ValueError("no calibration tokens to measure the sensitivity on")
    return {n: sums[n] / tokens / model.get_submodule(n).out_features for n in names}
