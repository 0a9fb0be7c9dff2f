"""Layer-by-layer calibration on cached inputs.

The embeddings of every calibration window are computed once; then each decoder layer is
visited in turn: a compressor gathers its statistics on the layer's cached inputs (which
already went through the compressed layers before it), rewrites it, and the rewritten layer
produces the inputs of the next one.  Layers left whole still run forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from .architectures import decoder_layers


class _Stop(Exception):
    pass


LayerInputs = list[tuple[torch.Tensor, dict]]


@torch.no_grad()
def first_layer_inputs(model: nn.Module, windows: Iterable[torch.Tensor]) -> LayerInputs:
    """(hidden states, keyword arguments) that the first decoder layer receives per window."""
    captured: LayerInputs = []

    def catch(module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        kwargs["use_cache"] = False
        # no cache: the layer's own name for it (``cache`` in transformers 5, ``past_key_values``
        # before); setting a name the layer does not use makes transformers warn on every call
        for key in ("cache", "past_key_values", "past_key_value"):
            if key in kwargs:
                kwargs[key] = None
        captured.append((hidden, kwargs))
        raise _Stop

    handle = decoder_layers(model)[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for ids in windows:
            try:
                model(input_ids=ids, use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
    return captured


@torch.no_grad()
def run_layer(layer: nn.Module, inputs: LayerInputs) -> LayerInputs:
    return [(layer(hidden, **kwargs), kwargs) for hidden, kwargs in inputs]


def sequential(model: nn.Module, windows: list[torch.Tensor],
               rewrite: Callable[[int, nn.Module, LayerInputs], None],
               progress: Callable[[int], None] | None = None) -> None:
    """Call ``rewrite(index, layer, inputs)`` on every decoder layer, in order, feeding each
    layer the outputs of the already rewritten layers before it."""
    inputs = first_layer_inputs(model, windows)
    for index, layer in enumerate(decoder_layers(model)):
        rewrite(index, layer, inputs)
        inputs = run_layer(layer, inputs)
        if progress:
            progress(index)


class Accumulator:
    """Σ over tokens of xᵀx (uncentered, float64) of what a module receives or emits."""

    def __init__(self, module: nn.Module, output: bool = False, groups: int = 1) -> None:
        self.sum: torch.Tensor | None = None
        self.groups = groups
        if output:
            self.handle = module.register_forward_hook(lambda m, a, out: self._add(out))
        else:
            self.handle = module.register_forward_pre_hook(lambda m, a: self._add(a[0]))

    def _add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).double()
        if self.groups > 1:  # per-group second moments, e.g. one per KV head: [G, dh, dh]
            x = x.reshape(x.shape[0], self.groups, -1).transpose(0, 1)
            gram = x.transpose(1, 2) @ x
        else:
            gram = x.T @ x
        self.sum = gram if self.sum is None else self.sum + gram

    def close(self) -> torch.Tensor:
        self.handle.remove()
        return self.sum
