"""The figures and pages a run logs after fit: reliability diagrams, the backprop flow, the lab page."""

from __future__ import annotations

import math
import shutil

import numpy as np
import torch

from dropout_risk.analysis import mechanism
from dropout_risk.data.module import StudentDataModule
from dropout_risk.errors import ConfigError
from dropout_risk.lab.page import render_page
from dropout_risk.model.module import DropoutRiskModule
from dropout_risk.plots.flow import backprop_flow
from dropout_risk.plots.loss import loss_figure
from dropout_risk.plots.png import close
from dropout_risk.plots.reliability import reliability_diagram
from dropout_risk.tracking.names import (
    FLOW_ARTIFACT,
    LAB_PAGE_ARTIFACT,
    LOSS_ROOT_ARTIFACT,
    RELIABILITY_ARTIFACT,
    RELIABILITY_IMAGE_KEY,
    VAL_LOSS,
    optimizer_name,
)
from dropout_risk.tracking.run import Run
from dropout_risk.training.diagrams import EpochDiagrams


def log_reliability(run: Run, cfg, module: DropoutRiskModule, dm: StudentDataModule, name: str,
                     final_p: np.ndarray, verdict: str, reported_epoch: int | None = None,
                     references: list[tuple[str, np.ndarray]] | None = None, smece: float | None = None,
                     drawn: EpochDiagrams | None = None) -> None:
    """Per-epoch diagrams into the UI's image grid (key reliability/val), drawn after fit from
    the stored validation probabilities so plotting never slows training; the final model's one
    (the reported epoch's: the best with early stopping, else the last) also as
    plots/reliability_val.png, titled with `verdict` too (lr, outcome, ECE: a sweep's
    reliability grid is these images side by side). `references` (label, validation probabilities
    of the baselines) and the final model's `smece` are drawn in the final diagram only. `drawn`:
    the per-epoch diagrams a drawing process made during fit (training/diagrams.py), uploaded as
    they are; the final one is drawn here."""
    y = dm.tensors["val"][1].numpy().astype(np.int64)
    every = cfg.tracking.reliability_every_n_epochs
    n = len(module.val_probs)
    reported = n if reported_epoch is None else reported_epoch
    # Only the final diagram drawn (a sweep trial: every=1000): it also goes to step 0, where the
    # UI's image grid opens, and to the run's last epoch, where its slider ends.
    only_final = every > n
    folder, done = drawn.finish(skip=reported) if drawn is not None else (None, [])
    for epoch in range(1, n + 1):
        if epoch % every and epoch != reported:  # the reported (final) model is always drawn
            continue
        if epoch in done:  # drawn during fit
            continue
        # the reported epoch's model is the final one: its diagram is also plots/reliability_val.png
        final = (final_p is not None and epoch == reported
                 and np.allclose(module.val_probs[epoch - 1], final_p, rtol=0, atol=1e-6, equal_nan=True))
        title = f"{name} · epoch {epoch}" + (f"\n{verdict}" if final else "")
        extra = {"references": references or (), "smece": smece} if final else {}
        fig = reliability_diagram(y, module.val_probs[epoch - 1], title=title, **extra)
        run.log_image(fig, key=RELIABILITY_IMAGE_KEY, step=epoch, also_as=RELIABILITY_ARTIFACT if final else None,
                      more_steps=(0, n) if final and only_final else ())
        if final:
            final_p = None
        close(fig)
    if final_p is not None:  # training stopped mid-epoch (divergence): draw the final model too
        fig = reliability_diagram(y, final_p, title=f"{name} · final (val)\n{verdict}",
                                  references=references or (), smece=smece)
        # in the grid at the epoch it stopped in (n + 1), and at step 0 when no other is drawn
        run.log_image(fig, key=RELIABILITY_IMAGE_KEY, step=n + 1, also_as=RELIABILITY_ARTIFACT,
                      more_steps=(0,) if only_final else ())
        close(fig)
    if folder is not None:
        run.log_image_files(folder)
        shutil.rmtree(folder, ignore_errors=True)


def log_loss(run: Run, train_loss: list[float], val_history: list[dict[str, float]], steps_per_epoch: int,
             title: str, diverged_at_step: int | None = None) -> None:
    """loss.png at the artifact root: train loss per step, val loss per epoch (plots/loss.py)."""
    val = [h.get(VAL_LOSS, float("nan")) for h in val_history]
    fig = loss_figure(train_loss, val, steps_per_epoch, title, diverged_at_step)
    run.log_figure(fig, LOSS_ROOT_ARTIFACT)
    close(fig)


def page_student(cfg, dm: StudentDataModule) -> int:
    """The validation row the lab page follows (ConfigError when out of range)."""
    y = dm.tensors["val"][1]
    student = cfg.mechanism.student
    if student is None:
        positives = torch.nonzero(y == 1).flatten()
        return int(positives[0]) if len(positives) else 0
    if not 0 <= student < len(y):
        raise ConfigError(f"mechanism.student={student} is outside the validation split (0..{len(y) - 1}): "
                          "pass a row number in that range or mechanism.student=null")
    return student


def log_mechanism(run: Run, cfg, module: DropoutRiskModule, dm: StudentDataModule, name: str,
                   first_flow: dict[str, np.ndarray] | None) -> None:
    """plots/backprop_flow.png (training set, before the first step and after the last) and the
    mechanism lab page for one validation student (mechanism/index.html)."""
    x_train, y_train = dm.tensors["train"]
    if first_flow is not None:
        last_flow = mechanism.flow_profile(mechanism.trace(module.net, module.loss_fn, x_train, y_train))
        fig = backprop_flow(first_flow, last_flow, mechanism.layer_names(len(module.net.hidden)),
                            ("before step 1", f"after step {module.steps_taken} (end)"),
                            f"{name} · backprop flow on the training set")
        run.log_figure(fig, FLOW_ARTIFACT)
        close(fig)
    if not cfg.mechanism.page:
        return
    x, y = dm.tensors["val"]
    student = page_student(cfg, dm)
    raw = dm.data.features.iloc[dm.splits["val"][student]][dm.feature_names].to_numpy(dtype=np.float64)
    data = mechanism.page_data(
        module.net, module.loss_fn, cfg.loss.name, x, y, raw, dm.feature_names,
        student, float(cfg.optim.lr), optimizer_name(cfg), cfg.model.activation, name,
        run.run_id)
    numbers = [data["loss"], *data["grad_norms"], *data["weight_norms"]]
    if all(math.isfinite(v) for v in numbers):
        run.log_text(render_page(data), LAB_PAGE_ARTIFACT)
    else:  # a diverged network has no meaningful forward pass to show
        run.set_tags({"mechanism_page": "not drawn: the trained network's numbers are not finite"})
