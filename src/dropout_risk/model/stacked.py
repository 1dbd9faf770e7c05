"""K MLPs of one architecture as one network: each layer's weights stacked along a leading member
axis, the forward pass one batched matmul per layer (`torch.baddbmm`).

Why baddbmm and not `torch.func.stack_module_state` + `vmap(functional_call)`: forward + backward
of 32 members [64, 32] on 256-row batches is 1.6x faster this way on CPU (benchmarks/README.md,
bench_population), and the stacked tensors are plain parameters that one stock torch optimiser
steps. Member k is initialised exactly as `MLP` under `torch.manual_seed(seeds[k])` (what train()
does), so a member starts from the weights a plain run with that seed starts from.
"""

from __future__ import annotations

import torch
from torch import nn

from dropout_risk.model.mlp import ACTIVATIONS, MLP


class StackedMLP(nn.Module):
    """Parameters `weights[l]` [K, out, in] and `biases[l]` [K, out], hidden layers then the output."""

    def __init__(self, n_features: int, hidden: list[int], activation: str, seeds: list[int]) -> None:
        super().__init__()
        self.n_features, self.hidden_widths, self.activation = n_features, list(hidden), activation
        members = []
        for seed in seeds:
            torch.manual_seed(seed)  # the same initialisation a plain run with this seed gets
            members.append(MLP(n_features, list(hidden), activation))
        layers = [m.layers for m in members]
        self.weights = nn.ParameterList(nn.Parameter(torch.stack([ls[i].weight.detach() for ls in layers]))
                                        for i in range(len(layers[0])))
        self.biases = nn.ParameterList(nn.Parameter(torch.stack([ls[i].bias.detach() for ls in layers]))
                                       for i in range(len(layers[0])))
        self.act = ACTIVATIONS[activation]()

    @property
    def n_members(self) -> int:
        return self.weights[0].shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [K, B] from x [K, B, F] (each member its own rows) or [B, F] (the same rows for all)."""
        h = x if x.dim() == 3 else x.unsqueeze(0).expand(self.n_members, -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))  # h W^T + b, per member
            if i < last:
                h = self.act(h)
        return h.squeeze(-1)

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights (copies) under the names of a plain MLP's state_dict."""
        names = [f"hidden.{i}" for i in range(len(self.hidden_widths))] + ["out"]
        state = {}
        for name, w, b in zip(names, self.weights, self.biases, strict=True):
            state[f"{name}.weight"], state[f"{name}.bias"] = w.detach()[k].clone(), b.detach()[k].clone()
        return state

    def member(self, k: int) -> MLP:
        """Member k as a plain MLP (a copy of its weights), for everything that reports one model."""
        net = MLP(self.n_features, self.hidden_widths, self.activation)
        net.load_state_dict(self.member_state_dict(k))
        return net
