"""Backprop made visible: per-layer forward activations, backward error signals and gradients.

Layers are numbered like the maths: z_l = W_l h_{l-1} + b_l for l = 1 .. L+1 (L hidden layers,
then the output layer), h_l = act(z_l), h_0 = x, h_{L+1} = sigmoid(z_{L+1}) = p.

The chain rule gives, for one student's loss,

    delta_{L+1} = dloss/dz_{L+1}
    delta_l     = (W_{l+1}^T delta_{l+1}) * act'(z_l)
    dloss/dW_l  = delta_l h_{l-1}^T

and the batch gradient is the mean of these over the batch (the loss is the batch mean).

`layer_norms` turns one traced step into the numbers logged as `mechanism/act/l{l}` (RMS over the
batch of ||h_l||, l = 0 .. L+1), `mechanism/error/l{l}` (RMS over the batch of each student's
||delta_l||, l = 1 .. L+1) and `mechanism/grad/l{l}` (||dL/dW_l||_F of the gradient the step
used). For a batch of one student grad/l = error/l x act/l-1 exactly (an outer product's norm
is the product of the norms); for larger batches it is at most that (Cauchy-Schwarz).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Trace:
    """One forward + backward pass, per layer. Tensors are detached; errors are per student."""

    h: list[torch.Tensor]  # h_0 .. h_{L+1}, each (batch, n_l)
    z: list[torch.Tensor]  # z_1 .. z_{L+1}
    delta: list[torch.Tensor]  # per-student dloss_b/dz_l = batch * dL/dz_l, l = 1 .. L+1
    grad: list[torch.Tensor]  # dL/dW_l, l = 1 .. L+1 (the batch-mean loss)
    loss: torch.Tensor


def from_backward(x: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]], weights: list[torch.Tensor],
                  loss: torch.Tensor) -> Trace:
    """A Trace of a training step: `layers` recorded by `MLP.forward(x, record=...)` (which makes
    each z_l keep its gradient), after `loss.backward()` ran. `weights[l-1].grad` is the gradient
    the optimiser uses (accumulated over steps when zero_grad is skipped)."""
    batch = x.shape[0]
    return Trace(
        h=[x.detach()] + [h.detach() for _, h in layers],
        z=[z.detach() for z, _ in layers],
        delta=[z.grad.detach() * batch for z, _ in layers],
        grad=[w.grad.detach().clone() for w in weights],
        loss=loss.detach(),
    )


def trace(net, loss_fn, x: torch.Tensor, y: torch.Tensor) -> Trace:
    """Forward and backward on (x, y) without touching any parameter's .grad."""
    with torch.enable_grad():
        layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        logits = net(x, record=layers)
        loss = loss_fn(logits, y)
        weights = [layer.weight for layer in net.layers]
        zs = [z for z, _ in layers]
        grads = torch.autograd.grad(loss, zs + weights)
    n = len(zs)
    return Trace(
        h=[x.detach()] + [h.detach() for _, h in layers],
        z=[z.detach() for z in zs],
        delta=[g.detach() * x.shape[0] for g in grads[:n]],
        grad=[g.detach() for g in grads[n:]],
        loss=loss.detach(),
    )


def _rms_row_norm(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t.double()) / max(t.shape[0], 1) ** 0.5


def layer_norms(tr: Trace) -> dict[str, float]:
    """The mechanism metrics of one trace, named as logged (without the step)."""
    out = {f"mechanism/act/l{i}": h for i, h in enumerate(tr.h)}
    out.update({f"mechanism/error/l{i}": d for i, d in enumerate(tr.delta, start=1)})
    norms = {k: _rms_row_norm(v) for k, v in out.items()}
    norms.update({f"mechanism/grad/l{i}": torch.linalg.vector_norm(g.double()) for i, g in enumerate(tr.grad, start=1)})
    values = torch.stack(list(norms.values())).tolist()  # one device sync for all of them
    return dict(zip(norms, values, strict=True))


def flow_profile(tr: Trace) -> dict[str, np.ndarray]:
    """Per layer magnitudes for the backprop-flow figure: act (l = 0 .. L+1), error and grad
    (l = 1 .. L+1)."""
    m = layer_norms(tr)
    n = len(tr.grad)
    return {
        "act": np.array([m[f"mechanism/act/l{i}"] for i in range(n + 1)]),
        "error": np.array([m[f"mechanism/error/l{i}"] for i in range(1, n + 1)]),
        "grad": np.array([m[f"mechanism/grad/l{i}"] for i in range(1, n + 1)]),
    }


def layer_names(n_hidden: int) -> list[str]:
    return ["input", *(f"hidden {i}" for i in range(1, n_hidden + 1)), "output"]


def page_data(net, loss_fn, loss_name: str, x: torch.Tensor, y: torch.Tensor, x_raw: np.ndarray,
              feature_names: list[str], student: int, lr: float, optimizer: str, activation: str,
              run_name: str, run_id: str) -> dict:
    """What the mechanism lab page shows: one student's forward pass, loss, backward error
    signals and the size of a plain gradient step on that student alone, from the real net."""
    tr = trace(net, loss_fn, x[student : student + 1], y[student : student + 1])
    weights = [layer.weight.detach() for layer in net.layers]

    def row(t: torch.Tensor) -> list[float]:
        return [float(v) for v in t[0].double().cpu()]

    grad_norms = [float(torch.linalg.vector_norm(g.double())) for g in tr.grad]
    return {
        "run_name": run_name, "run_id": run_id, "student_index": int(student),
        "feature_names": list(feature_names),
        "x": row(tr.h[0]), "x_raw": [float(v) for v in x_raw],
        "label": int(y[student]),
        "layer_names": layer_names(len(tr.z) - 1),
        "activation": activation,
        "activations": [row(h) for h in tr.h],
        "pre_activations": [row(z) for z in tr.z],
        "logit": float(tr.z[-1][0, 0]), "p": float(tr.h[-1][0, 0]), "loss": float(tr.loss), "loss_name": loss_name,
        "errors": [row(d) for d in tr.delta],
        "grad_norms": grad_norms,
        "weight_norms": [float(torch.linalg.vector_norm(w.double())) for w in weights],
        "lr": float(lr), "optimizer": optimizer,
        "update_norms": [lr * g for g in grad_norms],
    }
