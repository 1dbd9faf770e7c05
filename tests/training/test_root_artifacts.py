"""What the UI's compare page and image grid need from every run (issue 17): the final reliability
diagram, the loss curves and the calibration figure at the artifact root (the compare page lists
top-level files only), the root copies the same bytes as the plots/ files, and the final diagram
in the image grid at step 0 when it is the only one drawn."""

from __future__ import annotations

import io

import numpy as np
from helpers import FIGURES, TINY
from PIL import Image

from dropout_risk.tracking.names import (
    CALIBRATION_ARTIFACT,
    PREDICTIONS_ARTIFACT,
    RELIABILITY_ARTIFACT,
    RELIABILITY_IMAGE_KEY,
)
from dropout_risk.training.train import train
from dropout_risk.training.train_population import MemberSpec, member_config, train_population


def _bytes(client, run_id: str, path: str) -> bytes:
    with open(client.download_artifacts(run_id, path), "rb") as f:
        return f.read()


def _grid_steps(client, run_id: str) -> list[int]:
    """The steps of the reliability/val images (MLflow's file names: images/<key, / as ~>+step+<n>+...)."""
    files = [f.path for f in client.list_artifacts(run_id, "images")]
    key = RELIABILITY_IMAGE_KEY.replace("/", "~") + "+step+"
    return sorted({int(p.split("+step+")[1].split("+")[0]) for p in files if key in p and p.endswith(".png")})


def _check_root(client, run_id: str, calibration: bool) -> None:
    top = {f.path for f in client.list_artifacts(run_id)}
    assert {"reliability.png", "loss.png"} <= top
    assert ("calibration.png" in top) == calibration
    assert _bytes(client, run_id, "reliability.png") == _bytes(client, run_id, RELIABILITY_ARTIFACT)
    if calibration:
        assert _bytes(client, run_id, "calibration.png") == _bytes(client, run_id, CALIBRATION_ARTIFACT)
    loss = Image.open(io.BytesIO(_bytes(client, run_id, "loss.png")))
    assert loss.size == (450, 300)
    px = np.asarray(loss.convert("RGB"), dtype=int)
    assert (px.max(axis=2) - px.min(axis=2) > 60).sum() > 200  # coloured curves drawn, not a blank canvas


def test_a_train_run_logs_the_compare_page_figures_at_the_root(make_cfg, client):
    result = train(make_cfg(*FIGURES, "calibration.figure=true", "trainer.early_stopping.enabled=false"))
    _check_root(client, result.run_id, calibration=True)
    # only the final diagram drawn (every=1000 as in sweeps): at step 0, where the grid opens, and the last epoch
    assert _grid_steps(client, result.run_id) == [0, 3]


def test_per_epoch_diagrams_stay_at_their_epochs(make_cfg, client):
    result = train(make_cfg(*FIGURES, "tracking.reliability_every_n_epochs=1", "trainer.early_stopping.enabled=false"))
    _check_root(client, result.run_id, calibration=False)
    assert _grid_steps(client, result.run_id) == [1, 2, 3]


def test_population_members_log_the_root_figures_and_a_diverged_one_its_final_diagram(make_cfg, client):
    cfg = make_cfg(*TINY, *FIGURES, "optim=sgd", "trainer.early_stopping.enabled=false", "baselines=none",
                   "mechanism.every_n_steps=0")
    specs = [MemberSpec(member_config(cfg, lr, name=f"root-{i}")) for i, lr in enumerate((0.05, 1e4))]
    results = train_population(specs)
    assert [r.outcome for r in results] == ["converged", "diverged"]
    for r in results:
        _check_root(client, r.run_id, calibration=False)
    assert _grid_steps(client, results[0].run_id) == [0, 3]
    # the diverged member stopped in its first epoch: its final diagram at step 0 and at that epoch
    assert _grid_steps(client, results[1].run_id) == [0, 1]


def test_figures_off_logs_the_numbers_and_predictions_but_no_image(make_cfg, client):
    """tracking.figures=false (big sweeps): no reliability diagram, no loss.png, no grid image; the
    metrics and predictions.npz, from which compare.py redraws, are all still there."""
    on = client.get_run(train(make_cfg(*FIGURES, "trainer.early_stopping.enabled=false")).run_id)
    off_id = train(make_cfg("tracking.figures=false", "trainer.early_stopping.enabled=false")).run_id
    off = client.get_run(off_id)
    top = {f.path for f in client.list_artifacts(off_id)}
    assert not {"reliability.png", "loss.png", "images"} & top and not _grid_steps(client, off_id)
    assert {f.path for f in client.list_artifacts(off_id, "plots")} == set()
    assert PREDICTIONS_ARTIFACT in {f.path for f in client.list_artifacts(off_id, "predictions")}
    assert off.data.tags["outcome"] == "converged" and set(off.data.metrics) == set(on.data.metrics)
    assert off.data.metrics["val/log_loss"] == on.data.metrics["val/log_loss"]  # same training, same numbers


def test_per_epoch_diagrams_drawn_beside_training_land_at_their_epochs(make_cfg, client, monkeypatch):
    """8 per-epoch diagrams: a forked process draws them during fit (training/diagrams.py), this
    process the ones it had not started at the end; the grid has each epoch once, the final one
    with its verdict (drawn here, not by the drawing process), and no drawing process is left."""
    import multiprocessing

    import dropout_risk.training.diagrams as diagrams

    made = []
    monkeypatch.setattr(diagrams.EpochDiagrams, "__init__", _recording(diagrams.EpochDiagrams.__init__, made))
    result = train(make_cfg(*FIGURES, "tracking.reliability_every_n_epochs=1", "trainer.max_epochs=8",
                            "trainer.early_stopping.enabled=false"))
    assert len(made) == 1  # the pool was used (8 >= POOL_MIN)
    assert _grid_steps(client, result.run_id) == list(range(1, 9))
    files = [f.path for f in client.list_artifacts(result.run_id, "images")]
    assert len([f for f in files if f.endswith(".png")]) == 8 and len([f for f in files if f.endswith(".webp")]) == 8
    final = next(f for f in files if "+step+8+" in f and f.endswith(".png"))
    assert _bytes(client, result.run_id, final) == _bytes(client, result.run_id, "reliability.png")
    first = Image.open(io.BytesIO(_bytes(client, result.run_id, next(f for f in files if "+step+1+" in f
                                                                     and f.endswith(".png")))))
    assert first.size == (450, 500)  # a one-line title: the final one is taller (its verdict line)
    assert not multiprocessing.active_children()


def _recording(init, made):
    def wrapped(self, *a, **k):
        made.append(self)
        init(self, *a, **k)

    return wrapped
