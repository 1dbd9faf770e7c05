"""The mechanism lab page: backpropagation on the real trained network, for one validation student.

``render_page(data)`` returns one self-contained HTML document (inline CSS and JS, no network) that
walks through five steps on the network's real numbers:

1. Input: the student's features (standardised, as the network sees them, and in raw units) enter h_0.
2. Forward: activations flow left to right, h_l = act(W_l h_{l-1} + b_l), up to p = sigmoid(logit);
   each layer is a column of units coloured by value (a strip of small cells when wide) with ||h_l||.
3. Loss: p against the label y and the loss value (bce = log loss, mse = squared error of p).
4. Backward: the error signals delta_l = dL/dz_l flow right to left by the chain rule,
   delta_l = (W_{l+1}^T delta_{l+1}) * act'(z_l), and dL/dW_l = delta_l h_{l-1}^T, with their norms.
5. Update: theta <- theta - lr * grad, with ||lr dL/dW_l|| per layer and relative to ||W_l||.

The data dict (contract in ``render_page``) is embedded as JSON in
``<script type="application/json" id="mechanism-data">``; the page's script writes every data value
with ``textContent``. Steps change with Previous/Next, the step buttons or the arrow keys; the root
``<main id="lab">`` carries ``data-step``. Under ``prefers-reduced-motion: reduce`` the same states are
shown with no animation or transition. Meant for the MLflow artifact ``mechanism/index.html``.
``example_data()`` builds a valid dict from a tiny torch MLP, for tests and for trying the page.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

_KEYS = (
    "run_name", "run_id", "student_index", "feature_names", "x", "x_raw", "label", "layer_names",
    "activation", "activations", "pre_activations", "logit", "p", "loss", "loss_name", "errors",
    "grad_norms", "weight_norms", "lr", "optimizer", "update_norms",
)  # fmt: skip


def _check(data: dict[str, Any]) -> None:
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise ValueError(f"mechanism page data is missing key(s): {', '.join(missing)}")

    def length(key: str, value: Any, expected: int | None = None) -> int:
        if not isinstance(value, list | tuple):
            raise ValueError(f"mechanism page data: {key} must be a list, got {type(value).__name__}")
        if expected is not None and len(value) != expected:
            raise ValueError(f"mechanism page data: {key} has {len(value)} entries, expected {expected}")
        return len(value)

    d = length("feature_names", data["feature_names"])
    if d == 0:
        raise ValueError("mechanism page data: feature_names is empty")
    length("x", data["x"], d)
    length("x_raw", data["x_raw"], d)
    n_cols = length("layer_names", data["layer_names"])
    if n_cols < 2:
        raise ValueError("mechanism page data: layer_names needs at least 'input' and 'output'")
    length("activations", data["activations"], n_cols)
    length("activations[0]", data["activations"][0], d)
    length(f"activations[{n_cols - 1}] (the output)", data["activations"][-1], 1)
    for key in ("pre_activations", "errors"):
        length(key, data[key], n_cols - 1)
        for i, values in enumerate(data[key]):
            length(f"{key}[{i}]", values, len(data["activations"][i + 1]))
    for key in ("grad_norms", "weight_norms", "update_norms"):
        length(key, data[key], n_cols - 1)
    if data["label"] not in (0, 1):
        raise ValueError(f"mechanism page data: label must be 0 or 1, got {data['label']!r}")
    if data["loss_name"] not in ("bce", "mse"):
        raise ValueError(f"mechanism page data: loss_name must be 'bce' or 'mse', got {data['loss_name']!r}")


def render_page(data: dict[str, Any]) -> str:
    """The complete HTML document for ``data``:

    run_name, run_id: str; student_index: int (row in the validation split);
    feature_names, x (standardised = h_0), x_raw: d entries each; label: 0 or 1;
    layer_names: "input", "hidden 1".."hidden L", "output" (L + 2); activation: str (hidden layers);
    activations: h_0..h_{L+1} (h_{L+1} = [p]); pre_activations, errors: z_l and delta_l = dL/dz_l for
    l = 1..L+1; logit, p, loss: float; loss_name: "bce" or "mse";
    grad_norms, weight_norms, update_norms: ||dL/dW_l||, ||W_l||, ||lr dL/dW_l|| for l = 1..L+1;
    lr: float; optimizer: str.  Raises ValueError on a missing key or lengths that disagree.
    """
    _check(data)
    payload = json.dumps(data, allow_nan=False).replace("</", "<\\/").replace("<!--", "\\u003c!--")
    return _template().replace("__DATA__", payload)


def example_data(hidden: tuple[int, ...] = (8, 4), n_features: int = 5, seed: int = 0) -> dict[str, Any]:
    """A valid page dict from a tiny random torch MLP (relu, sigmoid output, bce) and one random student."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        widths = [n_features, *hidden, 1]
        layers = [torch.nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        x_raw = 50 + 10 * torch.randn(n_features)
        x = (x_raw - 50) / 10
        label = int(torch.randint(0, 2, ()))
        h, hs, zs = x, [x], []
        for i, layer in enumerate(layers):
            z = layer(h)
            z.retain_grad()
            h = torch.sigmoid(z) if i == len(hidden) else torch.relu(z)
            zs.append(z)
            hs.append(h)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(zs[-1], torch.tensor([float(label)]))
        loss.backward()
    lr = 1e-3
    grads = [float(layer.weight.grad.norm()) for layer in layers]
    return {
        "run_name": "example", "run_id": "0" * 32, "student_index": seed,
        "feature_names": [f"feature_{i}" for i in range(n_features)],
        "x": x.tolist(), "x_raw": x_raw.tolist(), "label": label,
        "layer_names": ["input", *(f"hidden {i + 1}" for i in range(len(hidden))), "output"],
        "activation": "relu",
        "activations": [t.detach().tolist() for t in hs],
        "pre_activations": [z.detach().tolist() for z in zs],
        "logit": zs[-1].item(), "p": hs[-1].item(), "loss": loss.item(), "loss_name": "bce",
        "errors": [z.grad.tolist() for z in zs],
        "grad_norms": grads,
        "weight_norms": [float(layer.weight.detach().norm()) for layer in layers],
        "lr": lr, "optimizer": "AdamW",
        "update_norms": [lr * g for g in grads],
    }  # fmt: skip


@functools.cache
def _template() -> str:
    """page.html beside this module (package data): the page's HTML, CSS and JS, with __DATA__
    where the run's numbers go."""
    return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
