"""The theory drawn on the divergence chart: `sharpness`, the top eigenvalue lambda_max of the
training-loss Hessian (Hessian-vector products + power iteration), and `gd_threshold` =
2/lambda_max, the classical stability threshold of plain gradient descent on a quadratic.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _power_iteration(
    hvp: Callable[[torch.Tensor], torch.Tensor],
    v: torch.Tensor,
    shift: float,
    iters: int,
    tol: float,
) -> tuple[float, float, torch.Tensor]:
    """Power iteration on (H + shift I), float64 vectors.

    Returns (Rayleigh quotient v'(H + shift I)v, norm |(H + shift I)v| (an estimate of the
    largest |eigenvalue|), last unit vector). Stops when both estimates change by less than
    ``tol`` relative to their size from one iteration to the next, or after ``iters`` products.
    """
    rayleigh = norm = math.nan
    for _ in range(iters):
        w = hvp(v) + shift * v
        new_rayleigh = float(torch.dot(v, w))
        new_norm = float(torch.linalg.vector_norm(w))
        if not (math.isfinite(new_rayleigh) and math.isfinite(new_norm)):
            return math.nan, math.nan, v
        if new_norm == 0.0:  # (H + shift I) v = 0: v is in the null space, nothing to iterate
            return 0.0, 0.0, v
        converged = (
            abs(new_rayleigh - rayleigh) <= tol * abs(new_rayleigh)
            and abs(new_norm - norm) <= tol * new_norm
        )
        rayleigh, norm, v = new_rayleigh, new_norm, w / new_norm
        if converged:
            break
    return rayleigh, norm, v


def sharpness(
    model: torch.nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    iters: int = 50,
    tol: float = 1e-4,
    seed: int = 0,
) -> float:
    """lambda_max: the top (largest algebraic) eigenvalue of the Hessian of ``loss_fn(model(x), y)``.

    The Hessian is taken w.r.t. all parameters of ``model`` that require grad, at their current
    values, on the full ``(x, y)`` given (pass the whole training set or a fixed large batch:
    ``loss_fn`` must return the *mean* loss, as ``model.loss_function`` does). The Hessian is
    never formed: Hessian-vector products ``Hv = d(g . v)/dtheta`` (``g`` = the gradient built
    with ``create_graph=True`` once, then one more ``torch.autograd.grad`` per product) drive a
    power iteration. Vectors, Rayleigh quotients and norms are kept in float64; the products
    themselves run in the model's dtype.

    Power iteration finds the eigenvalue of largest *magnitude*, and a network's Hessian can
    have large negative eigenvalues, so this works in two phases:

    1. power iteration on H gives rho = max |lambda| (the norm |Hv|) and the Rayleigh quotient
       v'Hv. If v'Hv agrees with +rho (to 1e-3 relative), the dominant eigenvalue is positive
       and is lambda_max: done (the usual case for a trained or freshly initialised net).
    2. otherwise (the dominant eigenvalue is negative, or +rho and -rho both occur), power
       iteration on the positive semi-definite H + rho I, whose top eigenvalue is
       lambda_max + rho; lambda_max is that minus rho. Its absolute error is then about
       ``tol * 2 rho`` rather than ``tol * lambda_max``.

    Each phase stops when its estimates change by less than ``tol`` (relative) or after
    ``iters`` Hessian-vector products, so at most ``2 * iters`` products in all (plus one
    gradient). The result is deterministic given ``seed`` (the start vector is drawn from a
    ``torch.Generator`` seeded with it) and the data; it may be <= 0 (a locally concave loss)
    and is NaN when the loss or its derivatives are not finite.

    Side effects: none. Parameters are not changed and ``.grad`` is not touched (only
    ``torch.autograd.grad`` is used, never ``backward``); the model's train/eval mode is left as
    it is, so put a model with dropout or batch norm in eval mode first if that is what you want.
    """
    if iters < 1:
        raise ValueError(f"iters must be a positive integer, got {iters!r}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("sharpness: the model has no parameters that require grad")
    if x.is_inference():  # tensors made under torch.inference_mode cannot be saved for backward
        x = x.clone()
    if y.is_inference():
        y = y.clone()
    device, dtype = params[0].device, params[0].dtype
    sizes = [p.numel() for p in params]

    with torch.enable_grad():
        loss = loss_fn(model(x), y)
        if loss.dim() != 0:
            raise ValueError(
                f"sharpness: loss_fn must return a scalar (the mean loss), got shape {tuple(loss.shape)}"
            )
        if not torch.isfinite(loss):
            return math.nan
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        # parameters the loss does not depend on have zero Hessian rows: keep them out of the graph
        used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]

        def hvp(v: torch.Tensor) -> torch.Tensor:
            chunks = torch.split(v, sizes)
            out = torch.zeros_like(v)
            if not used:  # the loss is at most linear in the parameters: H = 0
                return out
            dot = sum(
                (grads[i] * chunks[i].view_as(params[i]).to(dtype)).sum() for i in used
            )
            hv = torch.autograd.grad(dot, [params[i] for i in used], retain_graph=True, allow_unused=True)
            out_chunks = torch.split(out, sizes)
            for i, h in zip(used, hv, strict=True):
                if h is not None:
                    out_chunks[i].copy_(h.reshape(-1))
            return out

        generator = torch.Generator().manual_seed(int(seed))
        v0 = torch.randn(sum(sizes), generator=generator, dtype=torch.float64).to(device)
        v0 /= torch.linalg.vector_norm(v0)

        # phase 1: the eigenvalue of largest magnitude
        rayleigh, rho, v = _power_iteration(hvp, v0, 0.0, iters, tol)
        if not math.isfinite(rayleigh) or rho == 0.0:
            return rayleigh
        if rayleigh > 0 and rho - rayleigh <= 1e-3 * rho:
            return rayleigh
        # phase 2: shift the spectrum to [0, 2 rho]; start from the phase-1 vector if it already
        # leans towards the positive end, else from a fresh random vector
        start = v if rayleigh > 0 else torch.randn(sum(sizes), generator=generator, dtype=torch.float64).to(device)
        start = start / torch.linalg.vector_norm(start)
        shifted, _, _ = _power_iteration(hvp, start, rho, iters, tol)
        return shifted - rho


def gd_threshold(lmax: float) -> float:
    """2 / lambda_max: the largest stable step of plain gradient descent on a quadratic.

    Infinite when lambda_max <= 0 (no positive curvature to overshoot), NaN when it is NaN.
    Momentum and adaptive optimisers (Adam, AdamW, ...) have other thresholds: this is the
    plain-GD reference.
    """
    lmax = float(lmax)
    if math.isnan(lmax):
        return math.nan
    if lmax <= 0:
        return math.inf
    return 2.0 / lmax
