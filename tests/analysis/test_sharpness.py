"""sharpness (top Hessian eigenvalue by Hessian-vector products) against the full Hessian, and the
theory it feeds: plain gradient descent on a quadratic is stable below 2/lambda_max, unstable above."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from dropout_risk.analysis.sharpness import sharpness
from dropout_risk.analysis.thresholds import gd_threshold
from dropout_risk.model.losses import loss_function
from dropout_risk.model.mlp import MLP


def _full_hessian_eigenvalues(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """All eigenvalues (ascending) of the Hessian of the loss w.r.t. the flattened parameters, in float64."""
    named = [(name, p.detach().double()) for name, p in model.named_parameters()]
    flat = torch.cat([p.reshape(-1) for _, p in named])
    x64, y64 = x.double(), y.double()

    def loss_of(theta: torch.Tensor) -> torch.Tensor:
        params, start = {}, 0
        for name, p in named:
            params[name] = theta[start : start + p.numel()].view_as(p)
            start += p.numel()
        return loss_fn(functional_call(model, params, (x64,)), y64)

    hessian = torch.autograd.functional.hessian(loss_of, flat)
    return torch.linalg.eigvalsh(hessian)


def _tiny(activation: str, seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = MLP(3, [4, 3], activation)
    x = torch.randn(50, 3)
    y = (torch.rand(50) < 0.4).float()
    return model, x, y


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("loss", ["bce", "mse"])
@pytest.mark.parametrize("seed", [0, 4])
def test_sharpness_matches_the_full_hessian(activation: str, loss: str, seed: int) -> None:
    model, x, y = _tiny(activation, seed)
    loss_fn = loss_function(loss)
    eigenvalues = _full_hessian_eigenvalues(model, loss_fn, x, y)
    expected = float(eigenvalues[-1])
    assert expected > 0
    assert sharpness(model, loss_fn, x, y) == pytest.approx(expected, rel=1e-2)


def test_indefinite_hessian_needs_the_shift() -> None:
    """tanh + MSE on probabilities, seed 4: lambda_min = -0.157 outweighs lambda_max = 0.144."""
    model, x, y = _tiny("tanh", 4)
    loss_fn = loss_function("mse")
    eigenvalues = _full_hessian_eigenvalues(model, loss_fn, x, y)
    assert abs(float(eigenvalues[0])) > float(eigenvalues[-1]) > 0  # the case power iteration alone gets wrong
    assert sharpness(model, loss_fn, x, y) == pytest.approx(float(eigenvalues[-1]), rel=1e-2)


class _Quadratic(nn.Module):
    """loss(theta) = 0.5 theta' A theta (+ a linear term): the Hessian is A, whatever the data."""

    def __init__(self, a: torch.Tensor, theta0: torch.Tensor) -> None:
        super().__init__()
        self.a = a
        self.theta = nn.Parameter(theta0.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.theta

    def loss(self, theta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * theta @ self.a @ theta + theta @ y


def _quadratic_sharpness(eigenvalues: list[float], rotate: bool = False, **kwargs) -> float:
    a = torch.diag(torch.tensor(eigenvalues, dtype=torch.float64))
    if rotate:
        q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), dtype=torch.float64,
                                           generator=torch.Generator().manual_seed(1)))
        a = q @ a @ q.T
    model = _Quadratic(a, torch.ones(len(eigenvalues), dtype=torch.float64))
    x, y = torch.zeros(1), torch.linspace(-1, 1, len(eigenvalues), dtype=torch.float64)
    return sharpness(model, model.loss, x, y, **kwargs)


def test_quadratic_returns_the_top_positive_not_the_largest_magnitude() -> None:
    assert _quadratic_sharpness([5.0, 1.0, -7.0]) == pytest.approx(5.0, rel=1e-3)
    assert _quadratic_sharpness([5.0, 1.0, -7.0], rotate=True) == pytest.approx(5.0, rel=1e-3)
    assert _quadratic_sharpness([5.0, 1.0, 0.5]) == pytest.approx(5.0, rel=1e-3)


def test_quadratic_with_opposite_eigenvalues_of_equal_size() -> None:
    # power iteration on H alone mixes +5 and -5 forever: its Rayleigh quotient is meaningless
    assert _quadratic_sharpness([5.0, -5.0, 1.0], rotate=True) == pytest.approx(5.0, rel=1e-3)


def test_concave_and_flat_losses() -> None:
    lmax = _quadratic_sharpness([-1.0, -3.0], iters=200)
    assert lmax == pytest.approx(-1.0, rel=1e-2)
    assert gd_threshold(lmax) == math.inf
    assert _quadratic_sharpness([0.0, 0.0]) == 0.0


def test_no_side_effects_and_deterministic() -> None:
    model, x, y = _tiny("tanh", 0)
    loss_fn = loss_function("bce")
    model.out.bias.grad = torch.full_like(model.out.bias, 3.0)  # a gradient someone left there
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    first = sharpness(model, loss_fn, x, y, seed=7)
    assert sharpness(model, loss_fn, x, y, seed=7) == first  # bit-identical for the same seed
    assert sharpness(model, loss_fn, x, y, seed=8) == pytest.approx(first, rel=1e-3)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name
        if name == "out.bias":
            assert torch.equal(p.grad, torch.full_like(p, 3.0))
        else:
            assert p.grad is None, name


def test_works_under_no_grad_and_with_inference_tensors() -> None:
    model, x, y = _tiny("relu", 0)
    loss_fn = loss_function("bce")
    expected = sharpness(model, loss_fn, x, y)
    with torch.no_grad():
        assert sharpness(model, loss_fn, x, y) == expected
    with torch.inference_mode():
        x_inf, y_inf = x.clone(), y.clone()
    assert sharpness(model, loss_fn, x_inf, y_inf) == expected


def test_non_finite_loss_gives_nan_and_bad_arguments_raise() -> None:
    model, x, y = _tiny("relu", 0)
    loss_fn = loss_function("bce")
    x_bad = x.clone()
    x_bad[0, 0] = float("nan")
    assert math.isnan(sharpness(model, loss_fn, x_bad, y))
    with pytest.raises(ValueError, match="iters"):
        sharpness(model, loss_fn, x, y, iters=0)
    with pytest.raises(ValueError, match="scalar"):
        sharpness(model, lambda out, target: (out - target) ** 2, x, y)


def test_gd_threshold() -> None:
    assert gd_threshold(4.0) == 0.5
    assert gd_threshold(0.0) == math.inf
    assert gd_threshold(-2.0) == math.inf
    assert math.isnan(gd_threshold(float("nan")))


def _least_squares_problem() -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g, dtype=torch.float64) * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.3 + 0.1 * torch.randn(200, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    return model, x, y


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(out.squeeze(-1), y)


def test_gd_is_stable_just_below_two_over_lambda_and_diverges_just_above() -> None:
    """The classical threshold, checked numerically: full-batch plain SGD on least squares (a quadratic)."""
    model, x, y = _least_squares_problem()
    # the exact Hessian of mean((Xw + b - y)^2) is 2/n [X 1]'[X 1]
    design = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    exact = float(torch.linalg.eigvalsh(2.0 / len(x) * design.T @ design)[-1])
    lmax = sharpness(model, _mse, x, y)
    assert lmax == pytest.approx(exact, rel=1e-3)
    threshold = gd_threshold(lmax)
    optimum = float(_mse(design @ torch.linalg.lstsq(design, y.unsqueeze(-1)).solution, y))
    start = {name: p.detach().clone() for name, p in model.named_parameters()}

    def final_loss(lr: float, steps: int = 400) -> float:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(start[name])
        opt = torch.optim.SGD(model.parameters(), lr=lr)  # plain: no momentum, no weight decay
        for _ in range(steps):
            opt.zero_grad()
            loss = _mse(model(x), y)
            loss.backward()
            opt.step()
        with torch.no_grad():
            return float(_mse(model(x), y))

    with torch.no_grad():
        initial = float(_mse(model(x), y))
    below = final_loss(0.95 * threshold)
    assert below == pytest.approx(optimum, rel=1e-6)
    above = final_loss(1.05 * threshold)
    assert not math.isfinite(above) or above > 1e6 * initial


@pytest.mark.timeout(120)  # a hang or a many-fold slowdown fails; its speed is benchmarked, not tested
def test_sharpness_on_the_default_problem() -> None:
    """The default cohort MLP (10 features, hidden [64, 32], ~2.8k parameters) on 14k training rows:
    sharpness finishes (typically 0.4-0.6 s of CPU time on one thread) with a positive top
    eigenvalue that another random start of the iteration confirms."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(14_000, 10, generator=g)
    y = (torch.rand(14_000, generator=g) < 0.25).float()
    torch.manual_seed(0)
    model = MLP(10, [64, 32], "relu")
    loss_fn = loss_function("bce")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as train() runs it (trainer.num_threads=1); two threads are slower here
    try:
        lmax = sharpness(model, loss_fn, x, y)
        again = sharpness(model, loss_fn, x, y, seed=1)
    finally:
        torch.set_num_threads(threads)
    assert math.isfinite(lmax) and lmax > 0
    assert again == pytest.approx(lmax, rel=1e-2)
