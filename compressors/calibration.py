"""Layer-by-layer calibration on cached inputs.

The embeddings of every calibration window are computed once; then each decoder layer is
visited in turn: a compressor gathers its statistics on the layer's cached inputs (which
already went through the compressed layers before it), rewrites it, and the rewritten layer
produces the inputs of the next one.  Layers left whole still run forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .architectures import decoder_layers


class _Stop(Exception):
    pass


LayerInputs = list[tuple[torch.Tensor, dict]]


def _without_cache(kwargs: dict) -> dict:
    kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
    kwargs["use_cache"] = False
    # no cache: the layer's own name for it (``cache`` in transformers 5, ``past_key_values``
    # before); setting a name the layer does not use makes transformers warn on every call
    for key in ("cache", "past_key_values", "past_key_value"):
        if key in kwargs:
            kwargs[key] = None
    return kwargs


@torch.no_grad()
def layer_inputs(model: nn.Module, windows: Iterable[torch.Tensor]) -> tuple[list[torch.Tensor], list[list[dict]]]:
    """(the hidden states entering the first decoder layer, per window; the keyword arguments
    each layer receives, [layer][window]).  Layers of one model may get different masks and
    rotary tables (sliding-window and global layers), so each keeps its own.  The layers are
    stood in for by the identity while this runs: only the embedding is computed."""
    layers = decoder_layers(model)
    hidden: list[torch.Tensor] = []
    kwargs: list[list[dict]] = [[] for _ in layers]

    def stand_in(index: int) -> Callable:
        def forward(*args, **kw):
            state = args[0] if args else kw["hidden_states"]
            if index == 0:
                hidden.append(state)
            kwargs[index].append(_without_cache(kw))
            if index == len(layers) - 1:
                raise _Stop
            return state
        return forward

    for i, layer in enumerate(layers):
        layer.forward = stand_in(i)  # an instance attribute: nn.Module.__call__ runs it instead
    try:
        for ids in windows:
            try:
                model(input_ids=ids, use_cache=False)
            except _Stop:
                pass
    finally:
        for layer in layers:
            del layer.forward
    return hidden, kwargs


def first_layer_inputs(model: nn.Module, windows: Iterable[torch.Tensor]) -> LayerInputs:
    """(hidden states, keyword arguments) that the first decoder layer receives per window."""
    hidden, kwargs = layer_inputs(model, windows)
    return list(zip(hidden, kwargs[0]))


@torch.no_grad()
def run_layer(layer: nn.Module, inputs: LayerInputs) -> LayerInputs:
    outputs = [(layer(hidden, **kwargs), kwargs) for hidden, kwargs in inputs]
    return [(out[0] if isinstance(out, tuple) else out, kwargs) for out, kwargs in outputs]


def sequential(model: nn.Module, windows: list[torch.Tensor],
               rewrite: Callable[[int, nn.Module, LayerInputs], None],
               progress: Callable[[int], None] | None = None) -> None:
    """Call ``rewrite(index, layer, inputs)`` on every decoder layer, in order, feeding each
    layer the outputs of the already rewritten layers before it (with its own masks and
    position tables)."""
    hidden, kwargs = layer_inputs(model, windows)
    for index, layer in enumerate(decoder_layers(model)):
        inputs = list(zip(hidden, kwargs[index]))
        rewrite(index, layer, inputs)
        hidden = [h for h, _ in run_layer(layer, inputs)]
        if progress:
            progress(index)


class Accumulator:
    """Σ over tokens of xᵀx (uncentered, float64) of what a module receives or emits (its
    columns ``part`` only, if given)."""

    def __init__(self, module: nn.Module, output: bool = False, groups: int = 1, part: slice | None = None) -> None:
        self.sum: torch.Tensor | None = None
        self.groups, self.part = groups, part
        if output:
            self.handle = module.register_forward_hook(lambda m, a, out: self._add(out))
        else:
            self.handle = module.register_forward_pre_hook(lambda m, a: self._add(a[0]))

    def _add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).double()
        if self.part is not None:  # e.g. the values of a fused [q | k | v] output
            x = x[:, self.part]
        if self.groups > 1:  # per-group second moments, e.g. one per KV head: [G, dh, dh]
            x = x.reshape(x.shape[0], self.groups, -1).transpose(0, 1)
            gram = x.transpose(1, 2) @ x
        else:
            gram = x.T @ x
        self.sum = gram if self.sum is None else self.sum + gram

    def close(self) -> torch.Tensor:
        self.handle.remove()
        return self.sum


@contextmanager
def recorded_input_moments(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """E[x xᵀ] (float64 [in, in]) of what each named linear receives in every forward of
    ``model`` run inside the block (so a pass run for another measure gives them too); the
    yielded dict is filled when the block ends.  Linears that read one tensor (q/k/v,
    gate/up) share its xᵀx: it is computed once."""
    sums: dict[str, torch.Tensor] = {}
    rows = dict.fromkeys(names, 0)
    last: list = [None, None]  # (the tensor, its xᵀx); holding it keeps its id from being reused

    def hook(name: str) -> Callable:
        def add(module: nn.Module, args: tuple) -> None:
            x = args[0]
            if last[0] is not x:
                flat = x.detach().reshape(-1, x.shape[-1]).double()
                last[:] = [x, flat.T @ flat]
            sums[name] = last[1] if name not in sums else sums[name] + last[1]
            rows[name] += x.shape[:-1].numel()
        return add

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    moments: dict[str, torch.Tensor] = {}
    try:
        yield moments
    finally:
        for h in handles:
            h.remove()
        last.clear()
    if not any(rows.values()):
        raise ValueError("no calibration windows to measure the layers' inputs on")
    missing = [n for n in names if not rows[n]]
    if missing:
        raise ValueError(f"no calibration window reached {missing[0]} to measure its inputs on")
    moments.update({n: sums[n] / rows[n] for n in names})


@torch.no_grad()
def input_moments(model: nn.Module, windows: Iterable[torch.Tensor], names: Sequence[str]) -> dict[str, torch.Tensor]:
    """E[x xᵀ] (float64 [in, in]) of what each named linear of the dense ``model`` receives on
    the token ``windows`` (each [1, T] or [T])."""
    training = model.training
    model.eval()  # no dropout in the statistics
    try:
        with recorded_input_moments(model, names) as moments:
            for window in windows:
                model(input_ids=window.reshape(1, -1), use_cache=False)
    finally:
        model.train(training)
    return moments


def _first_inputs(module: nn.Module, paths: Sequence[str], hidden: torch.Tensor,
                  kwargs: dict) -> dict[str, torch.Tensor]:
    """What each of the submodules ``paths`` receives first while ``module(hidden, **kwargs)``
    runs, in call order."""
    seen: dict[str, torch.Tensor] = {}

    def note(path: str) -> Callable:
        def hook(m: nn.Module, args: tuple) -> None:
            seen.setdefault(path, args[0])
        return hook

    hooks = [module.get_submodule(p).register_forward_pre_hook(note(p)) for p in paths]
    try:
        module(hidden, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return seen


@torch.no_grad()
def staged_moments(layer: nn.Module, inputs: LayerInputs, paths: Sequence[str],
                   rewrite: Callable[[list[str], torch.Tensor], None]) -> None:
    """Visit the linears ``paths`` of one layer a stage at a time, in the order its forward
    calls them; a stage is the linears that read the same input (q/k/v, gate/up).  For each,
    gather E[x xᵀ] (float64) of what they receive on ``inputs`` with the stages before already
    rewritten, then ``rewrite(stage, moment)`` — so each linear is fitted to the inputs it
    will really see (o_proj after the compressed q/k/v, down_proj after gate/up)."""
    pending = list(paths)
    tokens = sum(h.shape[:-1].numel() for h, _ in inputs)
    while pending:
        stage: list[str] = []
        gram = None
        for hidden, kwargs in inputs:
            seen = _first_inputs(layer, pending, hidden, kwargs)
            if not stage:
                if not seen:
                    raise ValueError(f"{sorted(pending)} received no input on the calibration windows")
                # the leading calls on one input; the held inputs keep their addresses from being
                # reused, so one address (and layout) means one tensor
                first = next(iter(seen.values()))
                for path, x in seen.items():
                    if (x.data_ptr(), x.shape, x.stride()) != (first.data_ptr(), first.shape, first.stride()):
                        break
                    stage.append(path)
            x = seen[stage[0]].detach().reshape(-1, seen[stage[0]].shape[-1]).double()
            gram = x.T @ x if gram is None else gram + x.T @ x
        rewrite(stage, gram / tokens)
        pending = [p for p in pending if p not in stage]


def head_input_moment(model: nn.Module, windows: Iterable[torch.Tensor]) -> torch.Tensor:
    """E[h hᵀ] (float64 [D, D]) of the hidden states the output projection (``lm_head``)
    receives on the calibration ``windows`` — what a tied TT embedding is whitened by."""
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output projection to measure")
    name = next(n for n, m in model.named_modules() if m is head)
    return input_moments(model, windows, [name])[name]
