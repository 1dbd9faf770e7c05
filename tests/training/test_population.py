"""The population engine (training/population.py): members are independent where it matters, each
member's lr is exact, seeds change initialisation and data order, and a member reports as a run."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from helpers import TINY

from dropout_risk.data.loaders import load_data
from dropout_risk.data.module import StudentDataModule
from dropout_risk.errors import ConfigError
from dropout_risk.model.optim import optimizer_factory
from dropout_risk.model.stacked import StackedMLP
from dropout_risk.training.memory import check_population_memory, population_bytes
from dropout_risk.training.population import Member, PopulationBatches, PopulationModule
from dropout_risk.training.train import train
from dropout_risk.training.train_population import MemberSpec, member_config, train_population

TOL = 1e-5  # members computed in different populations agree to rounding (batched vs plain kernels)


@pytest.fixture
def cohort(make_cfg):
    cfg = make_cfg(*TINY, "trainer.max_epochs=4", "trainer.early_stopping.enabled=false")
    data = load_data(cfg.data, cfg.seed)
    return cfg, StudentDataModule(data, cfg.data, cfg.seed)


def _fit(cfg, dm, members, epochs: int | None = None, **kw) -> PopulationModule:
    module = PopulationModule(dm.n_features, list(cfg.model.hidden), cfg.model.activation, cfg.loss.name,
                              optimizer_factory(cfg.optim), members, **kw)
    module.val_tensors = dm.tensors["val"]
    trainer = pl.Trainer(max_epochs=epochs or cfg.trainer.max_epochs, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=False, limit_val_batches=0,
                         num_sanity_val_steps=0, deterministic=True)
    x, y = dm.tensors["train"]
    trainer.fit(module, train_dataloaders=PopulationBatches(x, y, cfg.data.batch_size, [m.seed for m in members]))
    return module


def _val(module, k):
    return np.array([h["val/log_loss"] for h in module.members[k].val_history])


def test_a_diverging_member_does_not_disturb_the_others(cohort):
    cfg, dm = cohort
    with_it = _fit(cfg, dm, [Member(1e-3, 0), Member(50.0, 0), Member(1e-2, 1)])
    without = _fit(cfg, dm, [Member(1e-3, 0), Member(1e-2, 1)])
    assert [m.status for m in with_it.members] == ["live", "diverged", "live"]
    assert with_it.members[1].diverged_at_step <= 3 and "first loss" in with_it.members[1].reason
    assert len(with_it.members[1].val_history) == 1  # validated once, at the end of the epoch it stopped in
    for k_with, k_without in ((0, 0), (2, 1)):
        assert len(_val(with_it, k_with)) == 4
        np.testing.assert_allclose(_val(with_it, k_with), _val(without, k_without), rtol=0, atol=TOL)
    # frozen: the diverged member's weights stay those of the step it diverged at, while others train on
    one_epoch = _fit(cfg, dm, [Member(1e-3, 0), Member(50.0, 0), Member(1e-2, 1)], epochs=1)
    after_4, after_1 = with_it.member_state_dict(1), one_epoch.member_state_dict(1)
    assert all(torch.equal(after_4[k], after_1[k]) for k in after_4)
    assert not torch.equal(with_it.member_state_dict(0)["out.weight"], one_epoch.member_state_dict(0)["out.weight"])
    # and it cost nothing after its epoch: taken out of the stacked tensors and the optimiser state
    assert with_it.rows == [0, 2] and with_it.net.n_members == 2
    state = with_it.optimizers(use_pl_optimizer=False).state
    assert all(v.shape[0] == 2 for p in with_it.net.parameters() for v in state[p].values() if v.dim() > 0)
    steps = torch.stack(with_it.step_losses)
    assert steps.shape[1] == 3 and steps[with_it.epoch_ends[0]:, 1].isnan().all() and not steps[:, 0].isnan().any()


def test_each_member_lr_is_exact_against_a_plain_run(cohort, tmp_path, make_cfg):
    """Member k trained in a population = the same lr and seed trained alone by train()."""
    cfg, dm = cohort
    pop = _fit(cfg, dm, [Member(3e-3, 0), Member(3e-2, 0), Member(1e-3, 0)])
    for k, lr in ((0, 3e-3), (1, 3e-2)):
        alone = train(make_cfg(*TINY, "trainer.max_epochs=4", "trainer.early_stopping.enabled=false",
                               "baselines=none", f"optim.lr={lr}"))
        np.testing.assert_allclose(_val(pop, k), [h["val/log_loss"] for h in alone.val_history], rtol=0, atol=TOL)
    assert not np.allclose(_val(pop, 0), _val(pop, 1))  # and the lrs did differ


def test_seeds_change_initialisation_and_data_order(cohort):
    cfg, dm = cohort
    members = [Member(1e-2, 0), Member(1e-2, 1), Member(1e-2, 0)]
    init = StackedMLP(dm.n_features, list(cfg.model.hidden), cfg.model.activation, [m.seed for m in members])
    w = init.weights[0].detach()  # the initial weights: trained ones differ by rounding (SIMD lanes)
    assert torch.equal(w[0], w[2]) and not torch.equal(w[0], w[1])
    pop = _fit(cfg, dm, members)
    # same seed, same lr: the same member, to rounding (SIMD lanes differ with a member's offset)
    np.testing.assert_allclose(_val(pop, 0), _val(pop, 2), rtol=0, atol=TOL)
    assert not np.allclose(_val(pop, 0), _val(pop, 1))
    x, y = dm.tensors["train"]
    first = next(iter(PopulationBatches(x, y, 64, [0, 1, 0])))[0]
    assert torch.equal(first[0], first[2]) and not torch.equal(first[0], first[1])
    # the data order of seed s is the plain run's (InMemoryBatches with seed s)
    plain = next(iter(dm.train_dataloader()))[0]
    assert torch.equal(next(iter(PopulationBatches(x, y, cfg.data.batch_size, [cfg.seed])))[0][0], plain)


def test_early_stopping_and_pruning_stop_one_member(cohort):
    cfg, dm = cohort
    calls = []

    def prune(value, epoch):
        calls.append(epoch)
        return epoch == 2

    pop = _fit(cfg, dm, [Member(1e-3, 0, prune=prune), Member(1e-3, 0), Member(0.3, 0)],
               early_stopping=(1, 0.0))
    assert pop.members[0].status == "pruned" and calls == [1, 2] and len(pop.members[0].val_history) == 2
    assert pop.members[1].status == "live" and len(pop.members[1].val_history) == 4
    assert pop.members[2].status in ("stopped", "diverged")
    if pop.members[2].status == "stopped":  # patience 1: the first epoch without improvement stops it
        vals = _val(pop, 2)
        assert vals[-1] >= vals[:-1].min() and pop.members[2].best_epoch == int(np.argmin(vals)) + 1


def test_train_population_logs_one_run_per_member(make_cfg, client):
    cfg = make_cfg(*TINY, "tracking.figures=true", "baselines=none", "mechanism.every_n_steps=0")
    specs = [MemberSpec(member_config(cfg, lr, seed, f"member-{i}"), tags={"case": "population"})
             for i, (lr, seed) in enumerate([(1e-2, None), (80.0, None), (1e-2, 7)])]
    results = train_population(specs)
    assert [r.outcome for r in results] == ["converged", "diverged", "converged"]
    for r, spec in zip(results, specs, strict=True):
        run = client.get_run(r.run_id)
        assert run.info.status == "FINISHED" and run.info.run_name == spec.cfg.tracking.run_name
        assert run.data.tags["engine"] == "population" and run.data.tags["population_size"] == "3"
        assert run.data.params["optim.lr"] == str(spec.cfg.optim.lr)
        assert {"val/log_loss", "test/auroc", "train/loss", "train/loss_epoch", "time/fit_s"} <= set(run.data.metrics)
        history = client.get_metric_history(r.run_id, "train/loss")
        assert [m.step for m in history] == list(range(1, len(r.train_loss) + 1))
        files = {f.path for f in client.list_artifacts(r.run_id, "plots")}
        assert "plots/reliability_val.png" in files
    assert results[1].diverged_at_step == len(results[1].train_loss)  # its losses stop at the bad step
    assert client.get_run(results[2].run_id).data.params["trainer.seed"] == "7"


def test_step_metrics_every_n_steps_keeps_first_nth_and_last_and_every_step_in_the_predictions(make_cfg, client):
    """tracking.step_metrics_every_n_steps=6 (a sweep's 5): MLflow gets step 1, every 6th and the
    last of train/loss, the same values; predictions.npz keeps every step. Plain run and member."""
    from dropout_risk.tracking.names import PREDICTIONS_ARTIFACT

    cfg = make_cfg(*TINY, "baselines=none", "mechanism.every_n_steps=0", "tracking.step_metrics_every_n_steps=6")
    plain = train(cfg)
    [member] = train_population([MemberSpec(member_config(cfg, float(cfg.optim.lr), None, "member"))])
    for r in (plain, member):
        n = len(r.train_loss)
        assert n % 6 not in (0, 1)  # so that the last step is one the rule alone would drop
        history = client.get_metric_history(r.run_id, "train/loss")
        assert [m.step for m in history] == [1, *range(6, n + 1, 6), n]
        assert [m.value for m in history] == pytest.approx([r.train_loss[s - 1] for s in (m.step for m in history)])
        saved = np.load(client.download_artifacts(r.run_id, PREDICTIONS_ARTIFACT))
        np.testing.assert_array_equal(saved["train_loss"], np.asarray(r.train_loss, dtype=np.float32))


def test_a_population_too_large_for_memory_is_refused_with_the_fix():
    need = population_bytes(96, 30, [64, 32], 256, 14000, "torch.optim.AdamW", 3000, 20)
    assert population_bytes(32, 30, [64, 32], 256, 14000, "torch.optim.AdamW", 3000, 20) * 3 == need
    with pytest.raises(ConfigError, match=r"population of 96 members .* needs ~.* GiB .* sweep.population_size=\d+"):
        check_population_memory(96, 30, [64, 32], 256, 14000, "torch.optim.AdamW", "cpu", 3000, 20,
                                available=need // 2)
    check_population_memory(96, 30, [64, 32], 256, 14000, "torch.optim.AdamW", "cpu", 3000, 20, available=need * 2)


def test_members_that_differ_beyond_lr_and_seed_are_refused(make_cfg):
    cfg = make_cfg(*TINY, "baselines=none")
    other = make_cfg(*TINY, "baselines=none", "model.hidden=[8]")
    with pytest.raises(ConfigError, match="may differ only in optim.lr, trainer.seed"):
        train_population([MemberSpec(cfg), MemberSpec(other)])


def test_ctrl_c_between_two_reports_leaves_no_run_running(make_cfg, client, monkeypatch):
    """A KeyboardInterrupt while the members report (a worker whose coordinator died): the members
    already reported stay FINISHED, the one reporting and those not yet reported end KILLED."""
    import dropout_risk.training.train_population as mod

    real, calls = mod.report_model, []

    def report(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(mod, "report_model", report)
    cfg = make_cfg(*TINY, "baselines=none", "mechanism.every_n_steps=0")
    case = f"ctrl-c-{id(calls)}"
    specs = [MemberSpec(member_config(cfg, lr, None, f"m{i}"), tags={"test_case": case}) for i, lr in enumerate((1e-2, 2e-2, 3e-2))]
    with pytest.raises(KeyboardInterrupt):
        train_population(specs)
    runs = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id],
                              f"tags.test_case = '{case}'")
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [("m0", "FINISHED"), ("m1", "KILLED"), ("m2", "KILLED")]
