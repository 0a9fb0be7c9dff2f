"""A linear layer that reads some input slots and writes some output slots, zeros elsewhere.

FLAT-LLM narrows each value head from d_h to r dimensions.  Where a family's own attention
forward can be trusted with narrow values (checked by running it), V and O simply shrink.
Everywhere else the forward stays the family's own and the shapes it expects stay too: V
writes its r kept dimensions into the first r slots of each head and zeros in the rest, and
O reads only those slots.  Zeros contribute nothing to attention's weighted sum of values,
so the result is the narrow one; only the kept weights are stored.
"""

from __future__ import annotations

import torch
from torch import nn


class SlotLinear(nn.Module):
    """y[..., outputs] = x[..., inputs] · Wᵀ + b, and 0 in the other ``out_features`` slots.

    ``weight`` [len(outputs), len(inputs)]; ``inputs`` / ``outputs``: slot indices (None: all).
    The kept weights are an inner nn.Linear, so parameter counts see them as a linear's."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, in_features: int, out_features: int,
                 inputs: torch.Tensor | None = None, outputs: torch.Tensor | None = None) -> None:
        super().__init__()
        rows = out_features if outputs is None else len(outputs)
        cols = in_features if inputs is None else len(inputs)
        if tuple(weight.shape) != (rows, cols):
            raise ValueError(f"weight must be [{rows}, {cols}] for these slots, got {tuple(weight.shape)}")
        self.in_features, self.out_features = in_features, out_features
        self.linear = nn.Linear(cols, rows, bias=bias is not None, dtype=weight.dtype, device=weight.device)
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            if bias is not None:
                self.linear.bias.copy_(bias)
        self.register_buffer("inputs", None if inputs is None else inputs.to(torch.long))
        self.register_buffer("outputs", None if outputs is None else outputs.to(torch.long))

    def spec(self) -> dict:
        """JSON-ready shapes; ``from_spec`` rebuilds a zero module a state dict loads into."""
        return {"format": "slot-linear", "in_features": self.in_features, "out_features": self.out_features,
                "inputs": None if self.inputs is None else len(self.inputs),
                "outputs": None if self.outputs is None else len(self.outputs), "bias": self.linear.bias is not None}

    @classmethod
    def from_spec(cls, spec: dict, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> SlotLinear:
        inputs = None if spec["inputs"] is None else torch.zeros(spec["inputs"], dtype=torch.long, device=device)
        outputs = None if spec["outputs"] is None else torch.zeros(spec["outputs"], dtype=torch.long, device=device)
        rows = spec["out_features"] if outputs is None else len(outputs)
        cols = spec["in_features"] if inputs is None else len(inputs)
        bias = torch.zeros(rows, dtype=dtype, device=device) if spec["bias"] else None
        return cls(torch.zeros(rows, cols, dtype=dtype, device=device), bias, spec["in_features"],
                   spec["out_features"], inputs, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inputs is not None:
            x = x.index_select(-1, self.inputs)
        y = self.linear(x)
        if self.outputs is None:
            return y
        out = y.new_zeros(*y.shape[:-1], self.out_features)
        return out.index_copy(-1, self.outputs, y)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"reads={self.in_features if self.inputs is None else len(self.inputs)}, "
                f"writes={self.out_features if self.outputs is None else len(self.outputs)}")
