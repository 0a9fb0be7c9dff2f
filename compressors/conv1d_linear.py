"""GPT-2-style ``Conv1D`` projections as ``nn.Linear``s, so that every compressor finds them.

transformers' ``Conv1D`` (GPT-2, DistilGPT-2, GPT-2 family fine-tunes) computes x W + b with W
stored [in, out], the transpose of ``nn.Linear``'s.  :func:`as_linears` swaps each for a
:class:`Conv1DLinear`: an ``nn.Linear`` holding Wᵀ (the same function, exactly) whose state dict
keeps Conv1D's [in, out] layout, so a model saved after the swap — compressed or not — still
loads in transformers as it was, and :func:`as_linears` before loading reads it back.
"""

from __future__ import annotations

from torch import nn


class Conv1DLinear(nn.Linear):
    """An ``nn.Linear`` that reads and writes its weight in Conv1D's [in, out] layout."""

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        weight = destination[prefix + "weight"]
        destination[prefix + "weight"] = weight.t() if keep_vars else weight.t().contiguous()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        key = prefix + "weight"
        if key in state_dict:  # a wrong shape is then reported as transformers reports any
            state_dict[key] = state_dict[key].t()
        super()._load_from_state_dict(state_dict, prefix, *args)


def as_linears(model: nn.Module) -> int:
    """Replace every transformers ``Conv1D`` in ``model`` by an equal :class:`Conv1DLinear`
    (each weight transposed once into a contiguous copy; biases moved); returns how many were replaced."""
    swaps = [(name, m) for name, m in model.named_modules() if type(m).__name__ == "Conv1D"
             and hasattr(m, "nf") and getattr(m, "weight", None) is not None and m.weight.dim() == 2]
    for name, conv in swaps:
        n_in, n_out = conv.weight.shape
        linear = Conv1DLinear(n_in, n_out, bias=conv.bias is not None, device="meta")
        linear.weight = nn.Parameter(conv.weight.detach().t().contiguous(), requires_grad=conv.weight.requires_grad)
        if conv.bias is not None:
            linear.bias = conv.bias
        model.set_submodule(name, linear)
    return len(swaps)
