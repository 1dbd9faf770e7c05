"""Crashes leave nothing RUNNING, and a new store survives processes starting together.

A run records the process that writes it (host, pid, start time); the first time a process opens
a store (tracking/store.py::client, which every pipeline start goes through) it closes as KILLED the
RUNNING runs of this host whose process died. A new local SQLite store is created and migrated
under a file lock, so processes starting together on it all get their run.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import subprocess
import time

import pytest
from helpers import PYTHON, ROOT, TINY, run_pipeline
from mlflow import MlflowClient

from dropout_risk.tracking.process import dead_run_error, process_alive, process_tags, start_ticks
from dropout_risk.tracking.run import Run
from dropout_risk.tracking.store import client

HOST = socket.gethostname()


def _exited_child(reap: bool = True) -> int:
    """The pid of a child process that has exited: reaped (gone), or left a zombie."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    if reap:
        os.waitpid(pid, 0)
    else:
        while start_ticks(pid) is not None:  # until it is a zombie
            time.sleep(0.01)
    return pid


def test_process_tags_name_this_process_and_tell_a_reused_pid_apart() -> None:
    tags = process_tags()
    assert tags["host"] == HOST and tags["pid"] == str(os.getpid())
    assert process_alive(os.getpid(), tags["pid_start"])
    assert not process_alive(os.getpid(), str(int(tags["pid_start"]) + 1))  # same pid, another process
    assert not process_alive(_exited_child())
    zombie = _exited_child(reap=False)
    try:
        assert not process_alive(zombie)  # exited, not yet reaped: dead
    finally:
        os.waitpid(zombie, 0)


def test_the_first_open_of_a_store_closes_the_runs_whose_process_died(new_store, tmp_path, capsys) -> None:
    store = new_store(tmp_path / "store")
    raw = MlflowClient(store["uri"])
    exp = raw.create_experiment("crashes", artifact_location=store["artifacts"])
    dead, zombie = _exited_child(), _exited_child(reap=False)
    me = process_tags()

    def run(name: str, **tags: str) -> str:
        return raw.create_run(exp, run_name=name, tags=tags).info.run_id

    try:
        ids = {
            "dead": run("dead", host=HOST, pid=str(dead), pid_start="12345"),
            "zombie": run("zombie", host=HOST, pid=str(zombie)),
            "reused pid": run("reused", host=HOST, pid=me["pid"], pid_start=str(int(me["pid_start"]) + 1)),
            "live": run("live", **me),
            "other host": run("elsewhere", host=HOST + "-elsewhere", pid=str(dead)),
            "untagged": run("untagged"),
            "finished": run("finished", host=HOST, pid=str(dead)),
        }
        raw.set_terminated(ids["finished"], "FINISHED")
        client(store["uri"])  # what every pipeline start does first
    finally:
        os.waitpid(zombie, 0)
    closed = {"dead": dead, "zombie": zombie, "reused pid": os.getpid()}
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: closed 3 run(s) whose process died: "), lines
    assert set(lines[0].rsplit(": ", 1)[1].split(", ")) == {ids[k] for k in closed}
    for key, run_id in ids.items():
        got = raw.get_run(run_id)
        if key in closed:
            assert got.info.status == "KILLED", key
            assert got.data.tags["error"] == dead_run_error(closed[key], HOST)
            assert got.data.tags["error"] == f"process {closed[key]} on {HOST} died; closed as KILLED by a later start"
        else:
            assert got.info.status == ("FINISHED" if key == "finished" else "RUNNING"), key
            assert "error" not in got.data.tags
    client(store["uri"])  # once per process: no second search, no second line
    assert capsys.readouterr().err == ""


def test_every_run_records_its_process_and_a_reopened_run_is_claimed(new_store, tmp_path) -> None:
    store = new_store(tmp_path / "store")
    run = Run.start(store["uri"], "crashes", store["artifacts"], "mine")
    raw = MlflowClient(store["uri"])
    assert process_tags().items() <= raw.get_run(run.run_id).data.tags.items()
    # a resumed sweep reopens its parent run: the handle tags it with the process that writes it now
    raw.set_tag(run.run_id, "pid", str(_exited_child()))
    Run(client(store["uri"]), run.run_id)
    assert raw.get_run(run.run_id).data.tags["pid"] == str(os.getpid())
    run.end()


def _start_run(uri: str, artifacts: str, barrier, i: int) -> None:
    barrier.wait()  # all at once: the store does not exist yet
    Run.start(uri, "together", artifacts, f"process-{i}").end()


def test_processes_starting_together_on_a_new_store_all_get_their_run(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path}/fresh/mlflow.db"  # not the session's migrated copy: a new file
    ctx = mp.get_context("fork")  # the imports are done: the four start within milliseconds
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_start_run, args=(uri, str(tmp_path / "artifacts"), barrier, i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    raw = MlflowClient(uri)
    runs = raw.search_runs([raw.get_experiment_by_name("together").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"process-{i}" for i in range(4)]
    assert {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_kill_9_of_a_training_run_is_closed_by_the_next_start(new_store, tmp_path) -> None:
    store = new_store(tmp_path / "store")
    where = [f"tracking.uri={store['uri']}", f"tracking.artifact_location={store['artifacts']}", "baselines=none"]
    args = [PYTHON, str(ROOT / "pipelines" / "train.py"), *TINY, *where, "data.n_students=3000",
            "trainer.max_epochs=500", "trainer.early_stopping.enabled=false"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    raw = MlflowClient(store["uri"])
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and not (running := raw.search_runs(
                [e.experiment_id for e in raw.search_experiments()], "attributes.status = 'RUNNING'")):
            assert proc.poll() is None, "the training run ended before it could be killed"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(running) == 1, "no run appeared within 120 s"
    killed = running[0].info.run_id
    assert raw.get_run(killed).info.status == "RUNNING"  # what a SIGKILL leaves

    again = run_pipeline("train.py", *TINY, *where, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert [ln for ln in again.stderr.splitlines() if ln.startswith("note:")] == [
        f"note: closed 1 run(s) whose process died: {killed}"]
    got = raw.get_run(killed)
    assert got.info.status == "KILLED"
    assert got.data.tags["error"] == f"process {proc.pid} on {HOST} died; closed as KILLED by a later start"
    exps = [e.experiment_id for e in raw.search_experiments()]
    assert raw.search_runs(exps, "attributes.status = 'RUNNING'") == []
    assert raw.search_runs(exps, "attributes.status = 'FAILED'") == []
    assert len(raw.search_runs(exps, "attributes.status = 'FINISHED'")) == 1
