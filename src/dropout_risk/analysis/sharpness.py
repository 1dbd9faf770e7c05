"""The theory drawn on the divergence chart and tracked during training.

* `sharpness`: the top eigenvalue lambda_max of the training-loss Hessian (Hessian-vector products
  + power iteration); the thresholds it is compared with are in analysis/thresholds.py.
* `top_eigen`: lambda_max *and* its eigenvector, started from the previous call's eigenvector, so
  that measuring it every N training steps converges in a few products.
* `preconditioned_sharpness`: lambda_max(P^{-1} H) for Adam/AdamW's preconditioner P, read from the
  torch optimiser's state (Cohen et al. 2022, "Adaptive Gradient Methods at the Edge of
  Stability").
* `member_sharpness` / `member_preconditioned_sharpness`: every member's lambda_max of a
  `StackedMLP` population in one power iteration.

All of them work on a "row" layout: K independent blocks of the Hessian (K population members, or
K = 1 for a plain model), each a row of a [K, n] float64 matrix, normalised and iterated on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from dropout_risk.model.stacked import StackedMLP

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
HvpFn = Callable[[torch.Tensor], torch.Tensor]

_F64 = torch.float64


def _power_iteration(
    hvp: HvpFn,
    v: torch.Tensor,
    shift: torch.Tensor,
    active: torch.Tensor,
    iters: int,
    tol: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Power iteration on (H + diag(shift) I), row by row: v [K, n] float64 unit rows, shift [K].

    ``hvp`` maps [K, n] to [K, n] and must be block-diagonal (row k of the output depends on row k
    of the input only). Returns per row (Rayleigh quotient v'(H + shift)v, norm |(H + shift)v|
    (an estimate of the largest |eigenvalue|), last unit vector). A row stops when both estimates
    change by less than ``tol`` relative to their size from one product to the next (it is then
    left as it is while the others go on), when its product is not finite (NaN, NaN) or zero
    (0, 0: v is in the null space); all stop after ``iters`` products. Rows not ``active`` at the
    start are not iterated (NaN, NaN, their v).
    """
    k = v.shape[0]
    rayleigh = torch.full((k,), math.nan, dtype=_F64, device=v.device)
    norm = rayleigh.clone()
    active = active.clone()
    for _ in range(iters):
        if not bool(active.any()):
            break
        w = hvp(v) + shift[:, None] * v
        new_rayleigh, new_norm = (v * w).sum(1), torch.linalg.vector_norm(w, dim=1)
        bad = ~(torch.isfinite(new_rayleigh) & torch.isfinite(new_norm))
        zero = ~bad & (new_norm == 0)  # (H + shift) v = 0: v is in the null space, both estimates 0
        converged = ((new_rayleigh - rayleigh).abs() <= tol * new_rayleigh.abs()) & (
            (new_norm - norm).abs() <= tol * new_norm
        )
        rayleigh = torch.where(active, new_rayleigh.masked_fill(bad, math.nan), rayleigh)
        norm = torch.where(active, new_norm.masked_fill(bad, math.nan), norm)
        moving = active & ~bad & ~zero
        # a stopped row keeps its last finite vector (a usable warm start next time)
        v = torch.where(moving[:, None], w / torch.where(moving, new_norm, 1.0)[:, None], v)
        active = moving & ~converged
    return rayleigh, norm, v


def _unit_rows(v: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Rows of v scaled to norm 1; rows that are zero or not finite are taken from ``fallback``."""
    norms = torch.linalg.vector_norm(v, dim=1)
    ok = torch.isfinite(norms) & (norms > 0)
    v = torch.where(ok[:, None], v / torch.where(ok, norms, 1.0)[:, None], fallback)
    return v / torch.linalg.vector_norm(v, dim=1, keepdim=True)


def _top_eigen_rows(
    params: list[torch.Tensor],
    losses: torch.Tensor,
    v0: torch.Tensor | None,
    iters: int,
    tol: float,
    seed: int,
    inv_sqrt_p: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """lambda_max of each of the K diagonal blocks of the Hessian of ``losses.sum()``.

    ``losses`` [K]: block k is the Hessian of losses[k] w.r.t. row k of every parameter (each
    parameter viewed as [K, -1]); losses[k] must not depend on the other rows. With ``inv_sqrt_p``
    [K, n] (P^{-1/2} of a diagonal P, in the same row layout), the blocks are P^{-1/2} H P^{-1/2},
    which have the eigenvalues of P^{-1} H. Returns (lambda_max [K] float64, unit eigenvectors
    [K, n] float64); a block whose loss, gradient or preconditioner is not finite gives NaN.
    """
    if iters < 1:
        raise ValueError(f"iters must be a positive integer, got {iters!r}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}")
    k = losses.numel()
    sizes = [p.numel() // k for p in params]
    n, device, dtype = sum(sizes), params[0].device, params[0].dtype
    generator = torch.Generator().manual_seed(int(seed))

    def random_rows() -> torch.Tensor:
        return torch.randn(k, n, generator=generator, dtype=_F64).to(device)

    if v0 is not None:
        if v0.numel() != k * n:
            raise ValueError(f"v0 has {v0.numel()} entries, the parameters {k} x {n}: a vector from another model?")
        v0 = v0.detach().to(device=device, dtype=_F64).reshape(k, n)
        ok = torch.isfinite(v0).all(1) & (v0.norm(dim=1) > 0)
        # a previous NaN row (dead member) restarts at random; no random draw when none is needed
        start = _unit_rows(v0, v0 if bool(ok.all()) else random_rows())
    else:
        start = random_rows()
        start = _unit_rows(start, start)

    alive = torch.isfinite(losses.detach())
    if inv_sqrt_p is not None:
        alive &= torch.isfinite(inv_sqrt_p).all(1)
        inv_sqrt_p = torch.where(alive[:, None], inv_sqrt_p, 1.0)  # NaN rows would leak through 0 * NaN
    nan_rows = torch.full((k,), math.nan, dtype=_F64, device=device)
    if not bool(alive.any()):
        return nan_rows, start

    with torch.enable_grad():
        total = torch.where(alive, losses, 0.0).sum()
        grads = torch.autograd.grad(total, params, create_graph=True, allow_unused=True)
        rows = {i: g.reshape(k, -1) for i, g in enumerate(grads) if g is not None}
        for g in rows.values():  # an overflowing gradient kills its member too
            alive &= torch.isfinite(g.detach()).all(1)
        if not bool(alive.any()):
            return nan_rows, start
        # parameters the loss does not depend on have zero Hessian rows: keep them out of the graph;
        # torch.where (not a product) so that a dead member's NaN gradient cannot reach the others
        used = {i: torch.where(alive[:, None], g, 0.0) for i, g in rows.items() if g.requires_grad}

        def hvp(v: torch.Tensor) -> torch.Tensor:
            out = torch.zeros_like(v)
            if not used:  # the loss is at most linear in the parameters: H = 0
                return out
            if inv_sqrt_p is not None:
                v = v * inv_sqrt_p
            chunks = torch.split(v, sizes, dim=1)
            dot = sum((g * chunks[i].to(dtype)).sum() for i, g in used.items())
            hv = torch.autograd.grad(dot, [params[i] for i in used], retain_graph=True, allow_unused=True)
            out_chunks = torch.split(out, sizes, dim=1)
            for i, h in zip(used, hv, strict=True):
                if h is not None:
                    out_chunks[i].copy_(h.reshape(k, -1))
            out = torch.where(alive[:, None], out, 0.0)  # a dead member's row may be NaN
            return out if inv_sqrt_p is None else out * inv_sqrt_p

        # phase 1: the eigenvalue of largest magnitude, per block
        zeros = torch.zeros(k, dtype=_F64, device=device)
        lam, rho, v = _power_iteration(hvp, start, zeros, alive, iters, tol)
        # phase 2 where v'Hv is not +rho (the dominant eigenvalue is negative, or +rho and -rho both
        # occur): power iteration on the PSD H + rho I, whose top eigenvalue is lambda_max + rho
        # warm-started from the previous top eigenvector, a few products leave |Hv| a little above
        # v'Hv: 5% tells a vector still on the top eigenvector from one drifting to a negative one
        done = (lam > 0) & (rho - lam <= (5e-2 if v0 is not None else 1e-3) * rho)
        again = torch.isfinite(lam) & (rho > 0) & ~done
        if bool(again.any()):
            # start from the phase-1 vector if it leans towards the positive end, else from the
            # caller's vector (the previous lambda_max eigenvector) or a fresh random one
            fallback = start if v0 is not None else _unit_rows(random_rows(), start)
            start2 = torch.where((lam > 0)[:, None], v, fallback)
            shifted, _, v2 = _power_iteration(hvp, start2, torch.where(again, rho, 0.0), again, iters, tol)
            lam = torch.where(again, shifted - rho, lam)
            v = torch.where(again[:, None], v2, v)
    return lam, v


def _inputs(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("sharpness: the model has no parameters that require grad")
    # tensors made under torch.inference_mode cannot be saved for backward
    return params, (x.clone() if x.is_inference() else x), (y.clone() if y.is_inference() else y)


def adam_preconditioner(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Adam/AdamW's diagonal preconditioner P for each of ``params`` (float64, the params' shapes).

    P_t = (1 - beta1^t) * (sqrt(v_t / (1 - beta2^t)) + eps), so that torch's update is exactly
    theta_t = theta_{t-1} - lr * P_t^{-1} m_t (torch/optim/adam.py, _single_tensor_adam, torch
    2.13: `step_size = lr / bias_correction1` l.498, `denom = (exp_avg_sq.sqrt() /
    bias_correction2_sqrt).add_(eps)` l.544; max_exp_avg_sq with amsgrad, l.542; checked in
    tests/analysis/test_sharpness_training.py), which is how the paper (Cohen et al. 2022,
    arXiv:2207.14484, section 2) writes P; its text was not re-read here. The authors' reference code
    (google/init2winit, hessian/precondition.py: `_make_adam_preconditioner`, l.22-39 at commit
    95ae521 "compute top eigenvalue of Adam-preconditioned Hessian"; `_maybe_bias_correct` +
    `_make_inv_power_preconditioner`, l.23-54 and l.141-144 at afd5a84) builds
    sqrt(nu / (1 - beta2^count)) + eps WITHOUT the (1 - beta1^t) factor, and hessian/hessian_eval.py
    `precondition_mvp_fn` (l.242-263 at 6f0890b^) takes the eigenvalues of P^{-1/2} H P^{-1/2}, as
    here. The two P differ only while beta1^t is not negligible (< 0.1% after 66 steps at 0.9).
    """
    groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out = []
    for p in params:
        state = optimizer.state.get(p, {})
        if id(p) not in groups or "exp_avg_sq" not in state:
            raise ValueError("adam_preconditioner: a parameter has no Adam state (not in the optimiser, or no step yet)")
        group = groups[id(p)]
        beta1, beta2 = (float(b) for b in group["betas"])
        t = float(state["step"])
        v = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
        v = v.detach().to(_F64)
        out.append((1 - beta1**t) * (torch.sqrt(v / (1 - beta2**t)) + float(group["eps"])))
    return out


def top_eigen(
    model: torch.nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    v0: torch.Tensor | None = None,
    iters: int = 20,
    tol: float = 1e-3,
    seed: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[float, torch.Tensor]:
    """(lambda_max, its unit eigenvector [n] float64) of the Hessian of ``loss_fn(model(x), y)``.

    What `sharpness` computes (see there), plus the eigenvector, and started from ``v0`` when
    given: pass the eigenvector the previous call returned (the parameters, flattened in
    ``model.parameters()`` order) and a call every N training steps converges in a few products,
    since the top eigenvector moves little between calls. With ``optimizer`` (a torch Adam/AdamW
    that has stepped ``model``), the eigenvalue is that of the preconditioned Hessian P^{-1} H
    (`adam_preconditioner`), computed on the symmetric P^{-1/2} H P^{-1/2} (same eigenvalues);
    the vector returned then lives in that space, which is what the next call's ``v0`` needs (a
    warm start helps less while P itself still changes fast, in Adam's first steps).

    At most ``2 * iters`` Hessian-vector products (plus one gradient). Side effects: none
    (parameters, ``.grad`` and the optimiser's state are only read; only ``torch.autograd.grad``).
    """
    params, x, y = _inputs(model, x, y)
    with torch.enable_grad():  # also the reshape: a view made under no_grad loses its graph
        loss = loss_fn(model(x), y)
        if loss.dim() != 0:
            raise ValueError(
                f"sharpness: loss_fn must return a scalar (the mean loss), got shape {tuple(loss.shape)}"
            )
        losses = loss.reshape(1)
    inv_sqrt_p = None
    if optimizer is not None:
        inv_sqrt_p = torch.cat([q.reshape(-1) for q in adam_preconditioner(optimizer, params)]).rsqrt()[None]
    lam, v = _top_eigen_rows(params, losses, v0, iters, tol, seed, inv_sqrt_p)
    return float(lam[0]), v[0]


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
    and is NaN when the loss or its derivatives are not finite. `top_eigen` is the same with the
    eigenvector and a warm start.

    Side effects: none. Parameters are not changed and ``.grad`` is not touched (only
    ``torch.autograd.grad`` is used, never ``backward``); the model's train/eval mode is left as
    it is, so put a model with dropout or batch norm in eval mode first if that is what you want.
    """
    return top_eigen(model, loss_fn, x, y, iters=iters, tol=tol, seed=seed)[0]


def preconditioned_sharpness(
    model: torch.nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    iters: int = 50,
    tol: float = 1e-4,
    seed: int = 0,
) -> float:
    """lambda_max(P^{-1} H) for the Adam/AdamW ``optimizer`` stepping ``model``: compare with
    `adam_threshold` (Cohen et al. 2022). `top_eigen` with ``optimizer`` gives the eigenvector too."""
    return top_eigen(model, loss_fn, x, y, iters=iters, tol=tol, seed=seed, optimizer=optimizer)[0]


def member_sharpness(
    net: StackedMLP,
    loss_fn_members: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    v0: torch.Tensor | None = None,
    iters: int = 20,
    tol: float = 1e-3,
    seed: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every member's lambda_max ([K] float64) and unit eigenvector ([K, n] float64) at once.

    ``loss_fn_members(net(x), y)`` must give each member's mean loss [K] (as
    ``dropout_risk.model.losses.member_losses`` does); x is [B, F] (the same batch for every
    member) or [K, B, F], y [B] or [K, B]. The members share no parameter, so the Hessian of the
    sum of their losses is block-diagonal with member k's own Hessian as block k: one power
    iteration on the stacked parameters, each member's block normalised on its own (rows of
    [K, n], n = one member's parameter count: row k of each of ``net.parameters()`` in turn), gives
    them all, with the two-phase shift of `sharpness` applied per member. Iterates until every
    member's estimates changed < ``tol`` (a member that converged early is left as it is) or
    ``iters`` products per phase. A member whose loss or gradient is not finite gets NaN; the
    others are unaffected. ``v0``: the [K, n] vectors a previous call returned (warm start).
    With ``optimizer``, the preconditioned P^{-1} H per member (`member_preconditioned_sharpness`).
    Side effects: none.
    """
    params, x, y = _inputs(net, x, y)
    k = params[0].shape[0]
    if any(p.dim() < 1 or p.shape[0] != k for p in params):
        raise ValueError("member_sharpness: every parameter must have the member axis K first")
    if y.dim() == 1:
        y = y.expand(k, -1)  # the same targets for every member
    with torch.enable_grad():
        losses = loss_fn_members(net(x), y)
    if tuple(losses.shape) != (k,):
        raise ValueError(f"member_sharpness: loss_fn_members must return one mean loss per member ({k},), got {tuple(losses.shape)}")
    inv_sqrt_p = None
    if optimizer is not None:
        p_diag = adam_preconditioner(optimizer, params)
        inv_sqrt_p = torch.cat([q.reshape(k, -1) for q in p_diag], dim=1).rsqrt()
    return _top_eigen_rows(params, losses, v0, iters, tol, seed, inv_sqrt_p)


def member_preconditioned_sharpness(
    net: StackedMLP,
    loss_fn_members: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    v0: torch.Tensor | None = None,
    iters: int = 20,
    tol: float = 1e-3,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every member's lambda_max(P_k^{-1} H_k), P_k from member k's rows of the Adam state.

    The optimiser's state tensors have the parameters' [K, ...] shapes, so member k's
    preconditioner is row k of each (`adam_preconditioner`). A population steps at lr = 1 and
    rescales each member's update by its own lr, which leaves exp_avg_sq as a plain run's: compare
    member k's value with ``adam_threshold(lr_k, beta1)``. See `member_sharpness`.
    """
    return member_sharpness(net, loss_fn_members, x, y, v0, iters, tol, seed, optimizer=optimizer)
