"""Final evaluation of a trained model: the metrics of a split and post-hoc temperature scaling."""

from __future__ import annotations

import numpy as np
import torch

from dropout_risk.analysis.calibration import apply_temperature, fit_temperature
from dropout_risk.analysis.metrics import binary_metrics, truth_metrics
from dropout_risk.analysis.smece import smece
from dropout_risk.data.module import StudentDataModule
from dropout_risk.model.module import DropoutRiskModule
from dropout_risk.plots.png import close
from dropout_risk.plots.reliability import reliability_pair
from dropout_risk.tracking.names import CALIBRATION_ARTIFACT
from dropout_risk.tracking.run import Run


def evaluate(module: DropoutRiskModule, x: torch.Tensor, y: torch.Tensor, p_true: np.ndarray | None, prefix: str):
    """Loss and every metric of one split; against p_true too where it is known."""
    with torch.no_grad():
        logits = module(x.to(module.device)).cpu()
    loss = float(module.loss_fn(logits, y))
    p = torch.sigmoid(logits.double()).numpy()
    yy = y.numpy().astype(np.int64)
    out = {f"{prefix}/loss": loss}
    out.update({f"{prefix}/{k}": v for k, v in binary_metrics(yy, p).items()})
    out[f"{prefix}/smece"] = smece(yy, p)  # smooth ECE: no bins to choose (relplot)
    if p_true is not None:
        out.update({f"{prefix}/{k}": v for k, v in truth_metrics(yy, p, p_true).items()})
    return out, logits.numpy(), p


CALIBRATED = ("log_loss", "brier", "ece", "ece_adaptive", "mce", "smece", "ece_true", "excess_log_loss")


def temperature_scaling(run: Run, dm: StudentDataModule, name: str, val_logits: np.ndarray,
                         test_logits: np.ndarray, figure: bool = True) -> dict[str, float]:
    """Fit T on validation logits only; report calibrated val and test metrics and draw the
    reliability diagram before and after side by side."""
    val_y = dm.tensors["val"][1].numpy().astype(np.int64)
    test_y = dm.tensors["test"][1].numpy().astype(np.int64)
    t = fit_temperature(val_logits, val_y)
    out = {"temperature": t}
    for split, logits, y in (("val", val_logits, val_y), ("test", test_logits, test_y)):
        p = apply_temperature(logits, t)
        m = binary_metrics(y, p)
        m["smece"] = smece(y, p)
        if dm.p_true(split) is not None:
            m.update(truth_metrics(y, p, dm.p_true(split)))
        out.update({f"{split}/{k}_calibrated": v for k, v in m.items() if k in CALIBRATED})
    if not figure:
        return out
    fig = reliability_pair(val_y, apply_temperature(val_logits, 1.0), apply_temperature(val_logits, t),
                           titles=(f"{name} · val, before", f"after temperature scaling (T = {t:.3g})"))
    run.log_figure(fig, CALIBRATION_ARTIFACT)
    close(fig)
    return out
