"""What a single run shows while it trains (trainer.progress; training/progress.py): a line per
epoch with train loss, val log loss and ECE, Lightning's bar carrying them, the report's plan, and
nothing from sweep trials. The process path (lines arriving while the run is still RUNNING) is in
tests/cli/test_pipeline_train.py."""

from __future__ import annotations

import io
import re

import pytest

from dropout_risk.training.progress import MetricsBar, progress_mode, report_plan
from dropout_risk.training.train import train

LINE = re.compile(r"^epoch +(\d+)/(\d+)  train loss (\d\.\d{4})  val log loss (\d\.\d{4})  ECE (\d\.\d{3})  \d+\.\d s$")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_the_bar_on_a_terminal_and_lines_elsewhere():
    assert progress_mode("auto", _Tty()) == "bar" and progress_mode("auto", io.StringIO()) == "lines"
    assert progress_mode("none", _Tty()) == "none" and progress_mode("lines", _Tty()) == "lines"


def test_lines_show_each_epochs_numbers_as_the_run_logs_them(make_cfg, client, capsys):
    result = train(make_cfg("trainer.progress=lines", "trainer.max_epochs=4", "trainer.early_stopping.enabled=false"))
    out = capsys.readouterr().out.splitlines()
    epochs = [LINE.match(ln) for ln in out if ln.startswith("epoch")]
    assert all(epochs) and [int(m.group(1)) for m in epochs] == [1, 2, 3, 4] and {m.group(2) for m in epochs} == {"4"}
    history = client.get_metric_history(result.run_id, "val/log_loss")
    by_step = {h.step: h.value for h in history}
    for m in epochs:  # the numbers printed are the run's own, per epoch
        epoch = int(m.group(1))
        assert float(m.group(4)) == pytest.approx(by_step[epoch], abs=5e-5)
        assert float(m.group(5)) == pytest.approx(result.val_history[epoch - 1]["val/ece"], abs=5e-4)
        loss = {h.step: h.value for h in client.get_metric_history(result.run_id, "train/loss_epoch")}[epoch]
        assert float(m.group(3)) == pytest.approx(loss, abs=5e-5)
    # then the report says what it computes and draws, within 100 columns a line
    plan = out[out.index(next(ln for ln in out if ln.startswith("report: "))):]
    assert plan[0].startswith("report: val/test metrics") and max(len(ln) for ln in out) <= 100


def test_none_prints_nothing_and_a_sweep_trial_shows_no_epochs(make_cfg, capsys):
    train(make_cfg("trainer.progress=none"))
    assert capsys.readouterr().out == ""
    assert make_cfg(config="sweep").trainer.progress == "none"


def test_the_bar_carries_the_last_loss_and_the_validation_numbers():
    class Module:
        step_losses = [0.71, 0.52]
        val_history = [{"val/log_loss": 0.4983, "val/ece": 0.0312}]

    class Trainer:
        progress_bar_metrics: dict = {}
        loggers: list = []

    bar = MetricsBar()
    items = bar.get_metrics(Trainer(), Module())
    assert items == {"loss": "0.5200", "val_log_loss": "0.4983", "ece": "0.031"}


def test_the_report_plan_names_what_this_config_draws(make_cfg):
    cfg = make_cfg("tracking.figures=true", "tracking.reliability_every_n_epochs=1", "calibration.figure=true",
                   "mechanism.page=true")
    plan = report_plan(cfg, epochs=3, diverged=False)
    assert "3 per-epoch reliability diagrams" in plan and "calibration.png" in plan and "lab page" in plan
    assert "temperature scaling" not in report_plan(cfg, epochs=3, diverged=True)
    lean = report_plan(make_cfg("baselines=none"), epochs=3, diverged=False)  # TINY: no figures
    assert "reliability" not in lean and "baselines" not in lean and "loss.png" not in lean
