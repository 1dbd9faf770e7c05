"""The MLP: h_0 = x, h_l = act(W_l h_{l-1} + b_l) for each hidden layer, logit = W_out h_L + b_out."""

from __future__ import annotations

import torch
from torch import nn

from dropout_risk.config.schema import ACTIVATION_NAMES

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}


assert tuple(ACTIVATIONS) == ACTIVATION_NAMES


class MLP(nn.Module):
    def __init__(self, n_features: int, hidden: list[int], activation: str = "relu") -> None:
        super().__init__()
        widths = [n_features, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.act = ACTIVATIONS[activation]()
        self.out = nn.Linear(widths[-1], 1)

    @property
    def layers(self) -> list[nn.Linear]:
        """W_1 .. W_{L+1}: the hidden layers, then the output layer."""
        return [*self.hidden, self.out]

    def forward(self, x: torch.Tensor, record: list | None = None) -> torch.Tensor:
        """The logit. With `record` (a list), appends (z_l, h_l) for every layer, the output's
        h being sigmoid(z); each z_l keeps its gradient for the backward pass to fill in."""
        h = x
        for layer in self.hidden:
            z = layer(h)
            h = self.act(z)
            if record is not None:
                record.append((z, h))
        z = self.out(h)
        if record is not None:
            record.append((z, torch.sigmoid(z)))
            for zl, _ in record:
                if zl.requires_grad:
                    zl.retain_grad()
        return z.squeeze(-1)
