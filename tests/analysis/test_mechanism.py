"""The mechanism metrics: the chain rule checked by hand against autograd, and the per-layer
numbers a real run logs to MLflow."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dropout_risk.analysis import mechanism
from dropout_risk.data.loaders import load_data
from dropout_risk.data.module import StudentDataModule
from dropout_risk.model.losses import loss_function
from dropout_risk.model.mlp import MLP
from dropout_risk.training.train import train

ACT_DERIVATIVE = {
    "relu": lambda z: (z > 0).to(z.dtype),
    "tanh": lambda z: 1 - torch.tanh(z) ** 2,
    "sigmoid": lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z)),
}


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("loss_name", ["bce", "mse"])
def test_chain_rule_by_hand_matches_autograd(activation, loss_name) -> None:
    """delta_{L+1} from the loss, delta_l = (W_{l+1}^T delta_{l+1}) * act'(z_l) and
    dL/dW_l = mean over the batch of delta_l h_{l-1}^T, computed by hand from the traced h and z,
    equal autograd's gradients."""
    torch.manual_seed(0)
    net = MLP(4, [5, 3], activation).double()
    x = torch.randn(7, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1, 0, 0], dtype=torch.float64)
    tr = mechanism.trace(net, loss_function(loss_name), x, y)

    p = torch.sigmoid(tr.z[-1][:, 0])
    # the output error of one student's loss w.r.t. its logit
    out = p - y if loss_name == "bce" else 2 * (p - y) * p * (1 - p)
    deltas = [out[:, None]]
    weights = [layer.weight.detach() for layer in net.layers]
    for i in range(len(weights) - 2, -1, -1):  # hidden layers, from the last back to the first
        deltas.insert(0, (deltas[0] @ weights[i + 1]) * ACT_DERIVATIVE[activation](tr.z[i]))
    for i, (delta, h_prev) in enumerate(zip(deltas, tr.h[:-1], strict=True)):
        by_hand = delta.T @ h_prev / len(x)  # dL/dW_l = delta_l h_{l-1}^T, averaged over the batch
        torch.testing.assert_close(tr.delta[i], delta, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(tr.grad[i], by_hand, rtol=1e-10, atol=1e-12)
    # and the trace left the parameters' .grad alone
    assert all(param.grad is None for param in net.parameters())


def _norms_by_autograd(net: MLP, loss_fn, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """The logged mechanism numbers of one step, from their definitions: act/l = RMS over the
    batch of ||h_l||, error/l = RMS of each student's ||dloss_b/dz_l|| (= batch x dL/dz_l),
    grad/l = ||dL/dW_l||_F; and train/grad_norm = ||dL/dtheta|| over every parameter. Written
    out layer by layer with torch.autograd.grad, independently of mechanism.trace."""
    h, hs, zs = x, [x], []
    for layer in net.hidden:
        z = layer(h)
        h = net.act(z)
        zs.append(z)
        hs.append(h)
    zs.append(net.out(h))
    hs.append(torch.sigmoid(zs[-1]))
    loss = loss_fn(zs[-1].squeeze(-1), y)
    params = list(net.parameters())
    grads = torch.autograd.grad(loss, zs + params)
    dz, dparams = grads[: len(zs)], dict(zip([id(p) for p in params], grads[len(zs):], strict=True))
    n = x.shape[0]

    def rms(t: torch.Tensor) -> float:
        return math.sqrt(float((t.detach().double() ** 2).sum(dim=1).mean()))

    out = {f"mechanism/act/l{i}": rms(t) for i, t in enumerate(hs)}
    out.update({f"mechanism/error/l{i}": rms(n * g) for i, g in enumerate(dz, start=1)})
    out.update({f"mechanism/grad/l{i}": float(torch.linalg.norm(dparams[id(layer.weight)].double()))
                for i, layer in enumerate(net.layers, start=1)})
    out["train/grad_norm"] = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads[len(zs):]))
    out["train/loss"] = float(loss.detach())
    return out


def test_layer_norms_match_their_definitions() -> None:
    torch.manual_seed(2)
    net = MLP(5, [6, 4], "tanh")
    x, y = torch.randn(11, 5), (torch.rand(11) < 0.5).float()
    expected = _norms_by_autograd(net, loss_function("bce"), x, y)
    got = mechanism.layer_norms(mechanism.trace(net, loss_function("bce"), x, y))
    assert set(got) == {k for k in expected if k.startswith("mechanism/")}
    for name, value in got.items():
        assert value == pytest.approx(expected[name], rel=1e-5), name
    # the numbers are not degenerate: every layer's differ
    assert len({round(v, 6) for v in got.values()}) == len(got)


def test_norms_of_one_student_factorise() -> None:
    """For one student dL/dW_l = delta_l h_{l-1}^T is an outer product, so the logged norms obey
    grad/l = error/l x act/l-1 exactly; for a batch, grad/l is at most that (Cauchy-Schwarz)."""
    torch.manual_seed(1)
    net = MLP(6, [8, 4], "relu")
    x, y = torch.randn(9, 6), torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 0, 0])
    one = mechanism.layer_norms(mechanism.trace(net, loss_function("bce"), x[:1], y[:1]))
    batch = mechanism.layer_norms(mechanism.trace(net, loss_function("bce"), x, y))
    for i in (1, 2, 3):
        assert one[f"mechanism/grad/l{i}"] == pytest.approx(
            one[f"mechanism/error/l{i}"] * one[f"mechanism/act/l{i - 1}"], rel=1e-5)
        assert batch[f"mechanism/grad/l{i}"] <= batch[f"mechanism/error/l{i}"] * batch[f"mechanism/act/l{i - 1}"] + 1e-9


def test_a_run_logs_mechanism_metrics(make_cfg, client) -> None:
    """Every 5 steps, per layer: finite act (l0..l3), error and grad (l1..l3), step 1's equal to
    their definitions; the gradient norm every step; the lab page as an artifact (the
    backprop-flow figure and the per-epoch diagrams are left out: tests/training draws them)."""
    cfg = make_cfg("mechanism.every_n_steps=5", "mechanism.page=true")
    result = train(cfg)
    run = client.get_run(result.run_id)
    names = {k for k in run.data.metrics if k.startswith("mechanism/")}
    assert names == {*(f"mechanism/act/l{i}" for i in range(4)),
                     *(f"mechanism/error/l{i}" for i in range(1, 4)),
                     *(f"mechanism/grad/l{i}" for i in range(1, 4))}
    n_steps = len(result.train_loss)
    for name in names:
        history = client.get_metric_history(result.run_id, name)
        assert [m.step for m in history] == list(range(1, n_steps + 1, 5))
        assert all(math.isfinite(m.value) and m.value > 0 for m in history)
    grad_norm = client.get_metric_history(result.run_id, "train/grad_norm")
    assert len(grad_norm) == n_steps and all(math.isfinite(m.value) and m.value > 0 for m in grad_norm)
    # step 1's numbers exactly: the initial network (seeded as train() seeds it) on the first
    # training batch (the data module's first shuffle), recomputed from the definitions
    dm = StudentDataModule(load_data(cfg.data, cfg.seed), cfg.data, cfg.seed)
    x, y = next(iter(dm.train_dataloader()))
    torch.manual_seed(cfg.seed)
    net = MLP(dm.n_features, list(cfg.model.hidden), cfg.model.activation)
    expected = _norms_by_autograd(net, loss_function(cfg.loss.name), x, y)
    assert result.train_loss[0] == pytest.approx(expected["train/loss"], rel=1e-6)  # the same batch
    for name in [*names, "train/grad_norm"]:
        first = client.get_metric_history(result.run_id, name)[0]
        assert first.step == 1
        assert first.value == pytest.approx(expected[name], rel=1e-5), name
    # with zero_grad the step's gradient is the batch's: its norm is bounded by the factorised norms
    steps = {m.step: m.value for m in client.get_metric_history(result.run_id, "mechanism/grad/l3")}
    errors = {m.step: m.value for m in client.get_metric_history(result.run_id, "mechanism/error/l3")}
    acts = {m.step: m.value for m in client.get_metric_history(result.run_id, "mechanism/act/l2")}
    assert all(steps[s] <= errors[s] * acts[s] * (1 + 1e-5) for s in steps)
    assert {f.path for f in client.list_artifacts(result.run_id, "mechanism")} == {"mechanism/index.html"}
    html = open(client.download_artifacts(result.run_id, "mechanism/index.html")).read()
    assert result.run_id in html and "<script src" not in html


def test_logged_norms_factorise_with_batches_of_one(make_cfg, client) -> None:
    """With one student per batch the logged numbers alone check the chain rule at every traced
    step: ||dL/dW_l|| = ||delta_l|| x ||h_{l-1}||."""
    result = train(make_cfg("data.n_students=200", "data.batch_size=1", "trainer.max_epochs=1",
                            "mechanism.every_n_steps=7", "mechanism.page=false", "mechanism.figure=false"))
    history = {name: {m.step: m.value for m in client.get_metric_history(result.run_id, name)}
               for name in ("mechanism/grad/l2", "mechanism/error/l2", "mechanism/act/l1")}
    steps = sorted(history["mechanism/grad/l2"])
    assert len(steps) == math.ceil(len(result.train_loss) / 7)
    grad = np.array([history["mechanism/grad/l2"][s] for s in steps])
    product = np.array([history["mechanism/error/l2"][s] * history["mechanism/act/l1"][s] for s in steps])
    np.testing.assert_allclose(grad, product, rtol=1e-5, atol=1e-12)


def test_mechanism_student_out_of_range_fails_before_a_run(make_cfg, client) -> None:
    from dropout_risk.errors import ConfigError

    before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    with pytest.raises(ConfigError, match="mechanism.student=99999"):
        train(make_cfg("mechanism.student=99999", "mechanism.page=true"))
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == before
