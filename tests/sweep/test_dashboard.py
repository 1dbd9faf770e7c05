"""`make dashboard`: optuna-dashboard on a sweep's journal storage, answering on loopback only,
with a diverged trial listed (FAIL, user attribute outcome=diverged) beside a converged one."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import optuna
import pytest
from helpers import ROOT, stop_process_group
from optuna.trial import TrialState

from dropout_risk.sweep.storage import make_storage

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=3) as resp:
        return json.loads(resp.read())


def test_make_dashboard_serves_the_study_on_loopback(tmp_path):
    journal = tmp_path / "optuna-journal.log"
    study = optuna.create_study(study_name="dash", storage=make_storage(f"journal://{journal}"))
    good = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 10, log=True)})
    good.set_user_attr("outcome", "converged")
    study.tell(good, 0.37)
    bad = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 10, log=True)})
    bad.set_user_attr("outcome", "diverged")
    bad.set_user_attr("diverged_at_step", 2)
    study.tell(bad, state=TrialState.FAIL)
    for _ in range(3):  # a port taken between picking and binding: try another
        port = _port()
        log = tmp_path / f"dashboard-{port}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(["make", "--no-print-directory", "dashboard", f"STORAGE={journal}",
                                     f"DASH_PORT={port}"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            studies = None
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    studies = _get(f"http://127.0.0.1:{port}/api/studies")
                    break
                except OSError:
                    time.sleep(0.5)
            if studies is None:
                if "in use" in log.read_text():
                    continue
                pytest.fail("optuna-dashboard never answered: " + log.read_text()[-2000:])
            [entry] = [s for s in studies["study_summaries"] if s["study_name"] == "dash"]
            detail = _get(f"http://127.0.0.1:{port}/api/studies/{entry['study_id']}?after=0")
            trials = {t["number"]: t for t in detail["trials"]}
            assert trials[1]["state"] == "Fail"
            attrs = {a["key"]: a["value"] for a in trials[1]["user_attrs"]}
            assert attrs["outcome"] == "diverged"  # listed, with what happened, though it has no value
            # bound to loopback only: no other address of this machine answers
            ss = subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout
            listening = [ln.split()[3] for ln in ss.splitlines()[1:] if ln.split()[3].endswith(f":{port}")]
            assert listening == [f"127.0.0.1:{port}"], listening
            return
        finally:
            stop_process_group(proc, grace=5)
    pytest.fail("no free port for optuna-dashboard after 3 tries")
