"""Sharpness during training: warm-started top_eigen, Adam-preconditioned sharpness and per-member
sharpness of a StackedMLP, each against a full Hessian eigendecomposition in float64, at trained
states (not only at init), plus the product count of a warm start and the absence of side effects."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from dropout_risk.analysis.sharpness import (
    adam_preconditioner,
    member_preconditioned_sharpness,
    member_sharpness,
    preconditioned_sharpness,
    sharpness,
    top_eigen,
)
from dropout_risk.analysis.thresholds import adam_threshold, gd_lr_threshold
from dropout_risk.model.losses import loss_function, member_losses
from dropout_risk.model.mlp import MLP
from dropout_risk.model.stacked import StackedMLP

ACCURATE = {"iters": 1000, "tol": 1e-6}  # to about float32 round-off: compare at 1e-3 and tighter


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _full_hessian(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The Hessian of the loss w.r.t. the parameters flattened in model.parameters() order, float64."""
    named = [(name, p.detach().double()) for name, p in model.named_parameters()]
    flat = torch.cat([p.reshape(-1) for _, p in named])

    def loss_of(theta: torch.Tensor) -> torch.Tensor:
        params, start = {}, 0
        for name, p in named:
            params[name] = theta[start : start + p.numel()].view_as(p)
            start += p.numel()
        return loss_fn(functional_call(model, params, (x.double(),)), y.double())

    return torch.autograd.functional.hessian(loss_of, flat)


def _preconditioned(hessian: torch.Tensor, p_diag: torch.Tensor) -> torch.Tensor:
    """P^{-1/2} H P^{-1/2}: symmetric, with the eigenvalues of P^{-1} H."""
    d = p_diag.rsqrt()
    return d[:, None] * hessian * d[None, :]


def _adam_p(opt: torch.optim.Optimizer, tensors: list[torch.Tensor], row: int | None = None) -> torch.Tensor:
    """Adam's P built here from the optimiser's state, independently of the module under test."""
    out = []
    for p in tensors:
        state, group = opt.state[p], opt.param_groups[0]
        (b1, b2), eps, t = group["betas"], group["eps"], float(state["step"])
        v = state["max_exp_avg_sq"] if group["amsgrad"] else state["exp_avg_sq"]
        v = v.double() if row is None else v[row].double()
        out.append(((1 - b1**t) * (torch.sqrt(v / (1 - b2**t)) + eps)).reshape(-1))
    return torch.cat(out)


def _data(seed: int = 0, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = ((x[:, 0] - 0.5 * x[:, 1] + 0.5 * torch.randn(n, generator=g)) > 0).float()
    return x, y


def _train(model: nn.Module, loss_fn, x, y, opt: torch.optim.Optimizer, steps: int) -> None:
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()


def _trained(activation: str, optimizer: str, steps: int = 300, **opt_kwargs):
    torch.manual_seed(0)
    model = MLP(3, [4, 3], activation)
    x, y = _data()
    loss_fn = loss_function("bce")
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
    else:
        opt = getattr(torch.optim, optimizer)(model.parameters(), **({"lr": 0.02} | opt_kwargs))
    _train(model, loss_fn, x, y, opt, steps)
    return model, loss_fn, x, y, opt


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("optimizer", ["sgd", "Adam"])
def test_trained_state_matches_the_full_hessian(activation: str, optimizer: str) -> None:
    model, loss_fn, x, y, _ = _trained(activation, optimizer)
    hessian = _full_hessian(model, loss_fn, x, y)
    eigenvalues, vectors = torch.linalg.eigh(hessian)
    expected = float(eigenvalues[-1])
    lam, v = top_eigen(model, loss_fn, x, y, **ACCURATE)
    assert lam == pytest.approx(expected, rel=1e-4)
    assert abs(float(v @ vectors[:, -1])) == pytest.approx(1.0, abs=1e-4)  # the eigenvector, too
    assert sharpness(model, loss_fn, x, y) == pytest.approx(expected, rel=1e-2)  # the defaults


@pytest.mark.parametrize(
    ("optimizer", "steps", "kwargs"),
    [
        ("Adam", 200, {}),
        ("Adam", 3, {}),  # early: the (1 - beta1^t) factor of P is 0.271, so a wrong P is far off
        ("AdamW", 150, {"weight_decay": 0.1, "betas": (0.8, 0.99)}),
        ("Adam", 100, {"amsgrad": True}),
    ],
)
def test_preconditioned_sharpness_matches_the_full_hessian(optimizer: str, steps: int, kwargs: dict) -> None:
    model, loss_fn, x, y, opt = _trained("tanh", optimizer, steps, **kwargs)
    hessian = _full_hessian(model, loss_fn, x, y)
    p_diag = _adam_p(opt, list(model.parameters()))
    expected = float(torch.linalg.eigvalsh(_preconditioned(hessian, p_diag))[-1])
    lam, _ = top_eigen(model, loss_fn, x, y, optimizer=opt, **ACCURATE)
    assert lam == pytest.approx(expected, rel=1e-3)
    assert preconditioned_sharpness(model, loss_fn, x, y, opt) == pytest.approx(expected, rel=1e-2)
    # and it is not the plain sharpness (the preconditioner matters)
    assert abs(expected - float(torch.linalg.eigvalsh(hessian)[-1])) > 0.1 * expected


@pytest.mark.parametrize("kwargs", [{}, {"amsgrad": True}, {"betas": (0.5, 0.9), "eps": 1e-3}])
def test_adam_preconditioner_is_what_torch_divides_by(kwargs: dict) -> None:
    """theta_t - theta_{t-1} = -lr P_t^{-1} m_t exactly, at every step t, for torch's own Adam."""
    torch.manual_seed(0)
    model = MLP(3, [4, 3], "tanh")
    x, y = _data()
    loss_fn = loss_function("bce")
    lr = 0.03
    opt = torch.optim.Adam(model.parameters(), lr=lr, **kwargs)
    params = list(model.parameters())
    for _ in range(5):
        before = [p.detach().clone() for p in params]
        _train(model, loss_fn, x, y, opt, 1)
        for p, old, p_diag in zip(params, before, adam_preconditioner(opt, params), strict=True):
            expected = -lr * opt.state[p]["exp_avg"].double() / p_diag
            torch.testing.assert_close((p.detach() - old).double(), expected, rtol=1e-4, atol=1e-7)


def test_adam_preconditioner_needs_a_stepped_adam() -> None:
    model = MLP(3, [4], "relu")
    with pytest.raises(ValueError, match="Adam state"):
        adam_preconditioner(torch.optim.Adam(model.parameters()), list(model.parameters()))


def test_thresholds() -> None:
    assert gd_lr_threshold(0.01) == pytest.approx(200.0)
    assert adam_threshold(0.01) == pytest.approx(3800.0)  # 38 / lr at beta1 = 0.9
    assert adam_threshold(1.0, beta1=0.0) == pytest.approx(gd_lr_threshold(1.0))  # no momentum: GD


@pytest.mark.parametrize("beta1", [0.9, 0.5])
def test_adam_threshold_is_where_frozen_adam_diverges(beta1: float) -> None:
    """Adam with a frozen preconditioner on 0.5 h theta^2 (preconditioned curvature h / P) is stable
    just below adam_threshold and diverges just above (Cohen et al. 2022, the EMA-momentum threshold)."""
    lr, p_diag = 0.01, 3.0

    def final(h: float, steps: int = 3000) -> float:
        theta, m = 1.0, 0.0
        for _ in range(steps):
            m = beta1 * m + (1 - beta1) * h * theta
            theta -= lr * m / p_diag
        return abs(theta)

    threshold = adam_threshold(lr, beta1) * p_diag  # in raw curvature h
    assert final(0.98 * threshold) < 1e-3
    above = final(1.02 * threshold)
    assert not math.isfinite(above) or above > 1e3


def _population(activation: str = "tanh", loss: str = "mse"):
    """Members seeded 0, 4, 1, 2 on the data _tiny(seed=4) of test_sharpness.py: member 1 is that net,
    whose tanh + MSE Hessian has a dominant negative eigenvalue (so it needs the per-member shift)."""
    torch.manual_seed(4)
    MLP(3, [4, 3], activation)  # the draws _tiny makes before its data
    x = torch.randn(50, 3)
    y = (torch.rand(50) < 0.4).float()
    net = StackedMLP(3, [4, 3], activation, seeds=[0, 4, 1, 2])
    return net, member_losses(loss), loss_function(loss), x, y


def _member_hessians(net: StackedMLP, loss_fn, x, y) -> list[torch.Tensor]:
    k = net.n_members
    xs = [x[i] if x.dim() == 3 else x for i in range(k)]
    ys = [y[i] if y.dim() == 2 else y for i in range(k)]
    return [_full_hessian(net.member(i), loss_fn, xs[i], ys[i]) for i in range(k)]


def _member_p(net: StackedMLP, opt: torch.optim.Optimizer, k: int) -> torch.Tensor:
    """Member k's P in its own MLP's parameter order (hidden.0.weight, hidden.0.bias, ...)."""
    tensors = [t for w, b in zip(net.weights, net.biases, strict=True) for t in (w, b)]
    return _adam_p(opt, tensors, row=k)


def test_member_sharpness_at_init_includes_a_member_with_a_dominant_negative_eigenvalue() -> None:
    net, losses, loss_fn, x, y = _population()
    hessians = _member_hessians(net, loss_fn, x, y)
    eigenvalues = [torch.linalg.eigvalsh(h) for h in hessians]
    assert abs(float(eigenvalues[1][0])) > float(eigenvalues[1][-1]) > 0  # member 1 needs phase 2
    lams, v = member_sharpness(net, losses, x, y, **ACCURATE)
    assert lams.dtype == torch.float64 and lams.shape == (4,)
    assert v.shape == (4, sum(p[0].numel() for p in net.parameters()))
    for k in range(4):
        assert float(lams[k]) == pytest.approx(float(eigenvalues[k][-1]), rel=1e-3), k
    default, _ = member_sharpness(net, losses, x, y)  # iters=20, tol=1e-3
    torch.testing.assert_close(default, torch.stack([e[-1] for e in eigenvalues]), rtol=3e-2, atol=0)


def _trained_population(steps: int = 150):
    net, losses, loss_fn, x, y = _population("relu", "bce")
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    yk = y.expand(net.n_members, -1)
    for _ in range(steps):
        opt.zero_grad()
        losses(net(x), yk).sum().backward()  # the population loss: the sum of the members' losses
        opt.step()
    return net, losses, loss_fn, x, y, opt


def test_member_sharpness_trained_with_a_nan_member() -> None:
    net, losses, loss_fn, x, y, opt = _trained_population()
    hessians = _member_hessians(net, loss_fn, x, y)
    expected = [float(torch.linalg.eigvalsh(h)[-1]) for h in hessians]
    expected_pre = [
        float(torch.linalg.eigvalsh(_preconditioned(h, _member_p(net, opt, k)))[-1]) for k, h in enumerate(hessians)
    ]
    lams, _ = member_sharpness(net, losses, x, y, **ACCURATE)
    pre, _ = member_preconditioned_sharpness(net, losses, x, y, opt, **ACCURATE)
    for k in range(4):
        assert float(lams[k]) == pytest.approx(expected[k], rel=1e-3), k
        assert float(pre[k]) == pytest.approx(expected_pre[k], rel=1e-3), k

    with torch.no_grad():
        net.weights[1][2, 0, 0] = float("nan")  # member 2 diverged
    lams, v = member_sharpness(net, losses, x, y, **ACCURATE)
    pre, _ = member_preconditioned_sharpness(net, losses, x, y, opt, **ACCURATE)
    assert math.isnan(float(lams[2])) and math.isnan(float(pre[2]))
    assert torch.isfinite(v).all()  # a usable warm start even for the dead member
    for k in (0, 1, 3):
        assert float(lams[k]) == pytest.approx(expected[k], rel=1e-3), k
        assert float(pre[k]) == pytest.approx(expected_pre[k], rel=1e-3), k


def test_member_preconditioned_sharpness_with_a_nan_optimiser_row() -> None:
    net, losses, loss_fn, x, y, opt = _trained_population(50)
    opt.state[net.biases[0]]["exp_avg_sq"][3, 1] = float("nan")
    pre, _ = member_preconditioned_sharpness(net, losses, x, y, opt, **ACCURATE)
    assert math.isnan(float(pre[3]))
    h0 = _full_hessian(net.member(0), loss_fn, x, y)
    expected = float(torch.linalg.eigvalsh(_preconditioned(h0, _member_p(net, opt, 0)))[-1])
    assert float(pre[0]) == pytest.approx(expected, rel=1e-3)


def test_member_sharpness_with_each_member_its_own_batch() -> None:
    net, losses, loss_fn, _, _ = _population("tanh", "bce")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 30, 3, generator=g)
    y = (torch.rand(4, 30, generator=g) < 0.5).float()
    lams, _ = member_sharpness(net, losses, x, y, **ACCURATE)
    for k, h in enumerate(_member_hessians(net, loss_fn, x, y)):
        assert float(lams[k]) == pytest.approx(float(torch.linalg.eigvalsh(h)[-1]), rel=1e-3), k


class _Counter:
    """Counts torch.autograd.grad calls: one gradient + one per Hessian-vector product."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls, grad = 0, torch.autograd.grad

        def counted(*args, **kwargs):
            self.calls += 1
            return grad(*args, **kwargs)

        monkeypatch.setattr(torch.autograd, "grad", counted)

    def products(self, fn, *args, **kwargs):
        self.calls = 0
        out = fn(*args, **kwargs)
        return out, self.calls - 1


def test_warm_start_converges_in_fewer_products(monkeypatch: pytest.MonkeyPatch) -> None:
    """Measured every 5 training steps, 5 times: started from the previous call's eigenvector, the
    iteration needs about half the products of a cold start (45 -> 21 for one model, 73 -> 47 and
    75 -> 40 for a population, plain and preconditioned), and gives the same values."""
    counter = _Counter(monkeypatch)
    model, loss_fn, x, y, opt = _trained("tanh", "sgd", steps=200)
    v, cold_total, warm_total = None, 0, 0
    for _ in range(5):
        _train(model, loss_fn, x, y, opt, 5)
        (cold, _), cold_products = counter.products(top_eigen, model, loss_fn, x, y, iters=100, tol=1e-4)
        (warm, v), warm_products = counter.products(top_eigen, model, loss_fn, x, y, v0=v, iters=100, tol=1e-4)
        assert warm == pytest.approx(cold, rel=1e-3)
        cold_total, warm_total = cold_total + cold_products, warm_total + warm_products
    expected = float(torch.linalg.eigvalsh(_full_hessian(model, loss_fn, x, y))[-1])
    assert warm == pytest.approx(expected, rel=1e-3)
    assert warm_total < 0.75 * cold_total, (warm_total, cold_total)

    for optimizer in (False, True):
        net, losses, _, x, y, opt = _trained_population(100)
        extra = {"optimizer": opt} if optimizer else {}
        v, cold_total, warm_total = None, 0, 0
        for _ in range(5):
            for _ in range(5):
                opt.zero_grad()
                losses(net(x), y.expand(4, -1)).sum().backward()
                opt.step()
            (cold, _), cold_products = counter.products(member_sharpness, net, losses, x, y, iters=100, tol=1e-4, **extra)
            (warm, v), warm_products = counter.products(
                member_sharpness, net, losses, x, y, v0=v, iters=100, tol=1e-4, **extra
            )
            torch.testing.assert_close(warm, cold, rtol=1e-3, atol=0)
            cold_total, warm_total = cold_total + cold_products, warm_total + warm_products
        assert warm_total < 0.75 * cold_total, (optimizer, warm_total, cold_total)


def test_nothing_is_mutated() -> None:
    model, loss_fn, x, y, opt = _trained("relu", "Adam", steps=20)
    net, losses, _, xs, ys, opt_s = _trained_population(20)
    snapshots = []
    for m, o in ((model, opt), (net, opt_s)):
        snapshots.append(
            (
                [p.detach().clone() for p in m.parameters()],
                [p.grad.clone() for p in m.parameters()],
                copy.deepcopy(o.state_dict()),
            )
        )
    v = torch.ones(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    v_before = v.clone()
    top_eigen(model, loss_fn, x, y, v0=v, optimizer=opt)
    preconditioned_sharpness(model, loss_fn, x, y, opt)
    sharpness(model, loss_fn, x, y)
    member_sharpness(net, losses, xs, ys)
    member_preconditioned_sharpness(net, losses, xs, ys, opt_s)
    assert torch.equal(v, v_before)  # the caller's start vector too
    for (m, o), (params, grads, state) in zip(((model, opt), (net, opt_s)), snapshots, strict=True):
        for p, before, grad in zip(m.parameters(), params, grads, strict=True):
            assert torch.equal(p.detach(), before) and torch.equal(p.grad, grad)
        now = o.state_dict()
        assert now["param_groups"] == state["param_groups"]
        for key, entry in state["state"].items():
            for name, value in entry.items():
                assert torch.equal(now["state"][key][name], value), (key, name)


def test_top_eigen_is_sharpness_with_a_vector() -> None:
    model, loss_fn, x, y, _ = _trained("tanh", "sgd", steps=50)
    lam, v = top_eigen(model, loss_fn, x, y, iters=50, tol=1e-4)
    assert lam == sharpness(model, loss_fn, x, y)
    assert v.dtype == torch.float64 and float(torch.linalg.vector_norm(v)) == pytest.approx(1.0)
    # a NaN or zero start vector falls back to a random one
    bad = torch.full_like(v, float("nan"))
    assert top_eigen(model, loss_fn, x, y, v0=bad, iters=50, tol=1e-4)[0] == pytest.approx(lam, rel=1e-3)
    assert top_eigen(model, loss_fn, x, y, v0=torch.zeros_like(v), iters=50, tol=1e-4)[0] == pytest.approx(lam, rel=1e-3)
    with pytest.raises(ValueError, match="v0"):
        top_eigen(model, loss_fn, x, y, v0=v[:-1])

