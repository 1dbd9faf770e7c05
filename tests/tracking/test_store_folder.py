"""A local store whose folder cannot be written is one line and exit 2 before any run (issue 14,
item 10: a read-only or blocked mlruns/ ended in a traceback)."""

from __future__ import annotations

import pytest

from dropout_risk.cli.run import run_cli
from dropout_risk.training.train import train


@pytest.mark.parametrize("where", ["a file named mlruns", "a folder that cannot exist"])
def test_an_unwritable_store_folder_is_one_line(make_cfg, capsys, tmp_path, monkeypatch, where):
    if where == "a file named mlruns":
        (tmp_path / "mlruns").write_text("not a folder")
        monkeypatch.chdir(tmp_path)
        uri, folder = "sqlite:///mlruns/mlflow.db", tmp_path / "mlruns"
    else:
        uri, folder = "sqlite:////proc/no-such-folder/mlflow.db", "/proc/no-such-folder"
    cfg = make_cfg(f"tracking.uri={uri}")
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: train(cfg))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert info.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: tracking.uri={uri}: the store's folder {folder} is not a writable directory")
    assert "pass tracking.uri=sqlite:///<a writable folder>/mlflow.db" in err[0]
    if where == "a file named mlruns":
        assert (tmp_path / "mlruns").read_text() == "not a folder"  # nothing written
