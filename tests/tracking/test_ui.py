"""The MLflow UI on real parts (slow): the real `mlflow server` on a loopback port over a
store made by a small sweep (a parent run and two trials, one diverged) and one standalone run, checked through its
REST API and in headless Chromium. The server runs in its own process group, stopped as a
whole at the end (also when a test fails)."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
from helpers import ARTIFACTS, CONF, TINY, chromium_path, start_mlflow_server, stop_process_group
from hydra import compose, initialize_config_dir
from PIL import Image

from dropout_risk.tracking.run import Run
from dropout_risk.training.train import train

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--virtual-time-budget=20000"]


def _get(url: str, timeout: float = 30) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def _api(base: str, endpoint: str, body: dict | None = None, **query) -> dict:
    url = f"{base}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui_store")
    uri, artifacts = f"sqlite:///{root}/mlflow.db", str(root / "artifacts")
    base = [f"tracking.uri={uri}", f"tracking.artifact_location={artifacts}", "tracking.experiment=ui-check"]

    def cfg(*overrides):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=[*TINY, *ARTIFACTS, *base, *overrides])

    standalone = train(cfg("optim.lr=0.01"))
    parent = Run.start(uri, "ui-check", artifacts, "ui-sweep", tags={"sweep_id": "ui"})
    trials = [train(cfg(*ov), parent_run_id=parent.run_id, tags={"sweep_id": "ui", "trial": str(i), "phase": "scan"})
              for i, ov in enumerate([("optim=sgd", "optim.lr=0.3"),
                                      ("optim=sgd", "optim.lr=1e4", "trainer.max_epochs=5")])]
    parent.end("FINISHED")
    assert [r.outcome for r in trials] == ["converged", "diverged"]
    return {"root": root, "uri": uri, "standalone": standalone, "trials": trials, "results": [standalone, *trials],
            "parent": parent.run_id, "experiment_id": standalone.experiment_id}


@pytest.fixture(scope="module")
def server(sweep_store):
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job consumers: faster start
    proc, port = start_mlflow_server(["--backend-store-uri", sweep_store["uri"], "--workers", "1"],
                                     cwd=sweep_store["root"], env=env, timeout=120)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(proc)


def test_server_helper_moves_on_when_its_port_is_taken(tmp_path):
    """start_mlflow_server's first port is held by another server that answers /health "OK" (what
    a parallel test's MLflow server would do): the helper must not take that answer for its own
    server, see the bind error, and come up on another port."""

    class Impostor(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    impostor = HTTPServer(("127.0.0.1", 0), Impostor)
    taken = impostor.server_address[1]
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    try:
        proc, port = start_mlflow_server(["--backend-store-uri", f"sqlite:///{tmp_path}/empty.db", "--workers", "1"],
                                         cwd=tmp_path, env=env, timeout=120, ports=[taken])
        try:
            assert port != taken
            assert "address already in use" in (tmp_path / f"mlflow-server-{taken}.log").read_text().lower()
            assert _api(f"http://127.0.0.1:{port}", "experiments/search", max_results=10)["experiments"]
        finally:
            stop_process_group(proc)
        pgid = proc.pid
        try:
            os.killpg(pgid, 0)
            raise AssertionError(f"processes of the server's group {pgid} outlive stop_process_group")
        except ProcessLookupError:
            pass
    finally:
        impostor.shutdown()
        impostor.server_close()


def test_rest_api_serves_runs_histories_and_images(server, sweep_store):
    results = sweep_store["results"]
    found = _api(server, "runs/search", {"experiment_ids": [sweep_store["experiment_id"]], "max_results": 100})
    runs = {r["info"]["run_id"]: r for r in found["runs"]}
    assert {r.run_id for r in results} | {sweep_store["parent"]} == set(runs)
    for result in results:
        run = runs[result.run_id]
        assert run["info"]["run_name"] == result.run_name and run["info"]["status"] == "FINISHED"
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["outcome"] == result.outcome
        if result is not sweep_store["standalone"]:
            assert tags["mlflow.parentRunId"] == sweep_store["parent"]

        history = _api(server, "metrics/get-history", run_id=result.run_id, metric_key="train/loss",
                       max_results=100000)["metrics"]
        assert [m["step"] for m in history] == list(range(1, len(result.train_loss) + 1))
        if result.outcome == "converged":
            assert [m["value"] for m in history] == pytest.approx(result.train_loss)

        files = _api(server, "artifacts/list", run_id=result.run_id, path="images")["files"]
        pngs = sorted(f["path"] for f in files if f["path"].endswith(".png"))
        steps = {p.split("+step+")[1].split("+")[0] for p in pngs}
        assert len(steps) >= (2 if result.outcome == "converged" else 1), pngs  # one per epoch
        png = _get(f"{server}/get-artifact?" + urllib.parse.urlencode({"run_id": result.run_id, "path": pngs[-1]}))
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    # the mechanism lab page, as MLflow's artifact viewer fetches it
    standalone = sweep_store["standalone"]
    url = f"{server}/get-artifact?" + urllib.parse.urlencode({"run_id": standalone.run_id, "path": "mechanism/index.html"})
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.headers.get_content_type() == "text/html"
        page = resp.read().decode()
    assert standalone.run_id in page and 'id="mechanism-data"' in page and "<script src" not in page

    diverged = next(r for r in results if r.outcome == "diverged")
    tags = {t["key"]: t["value"] for t in runs[diverged.run_id]["data"]["tags"]}
    assert int(tags["diverged_at_step"]) == diverged.diverged_at_step


def test_compare_through_the_tracking_server(server, sweep_store, tmp_path):
    """compare() against the server's REST API (no SQL shortcut): same curves, files, a tagged run."""
    from mlflow import MlflowClient

    from dropout_risk.compare.run import compare

    result = compare(sweep=sweep_store["parent"], tracking_uri=server, out_dir=tmp_path / "out")
    trials = sweep_store["trials"]
    assert [r.run_id for r in result.runs] == [t.run_id for t in trials]
    for rec, trial in zip(result.runs, trials, strict=True):
        steps, values = rec.curves["train/loss"]
        assert list(steps) == list(range(1, len(trial.train_loss) + 1))
        assert rec.has_reliability
    assert all((tmp_path / "out" / n).stat().st_size > 0 for n in ("reliability_grid.png", "comparison.csv"))
    client = MlflowClient(server)
    run = client.get_run(result.comparison_run_id)
    assert run.data.tags["comparison_of"] == ",".join(t.run_id for t in trials)
    assert "reliability_grid.png" in {f.path for f in client.list_artifacts(result.comparison_run_id)}


def _dump_dom(chromium: str, url: str, profile: Path, needles: list[str]) -> str:
    dom = ""
    for attempt in range(2):  # a cold server may answer the first page load slowly
        proc = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}{attempt}", "--dump-dom", url],
                              capture_output=True, text=True, timeout=180)
        dom = proc.stdout
        if all(n in dom for n in needles):
            break
    assert "<html" in dom.lower(), proc.stderr[-2000:]
    return dom


# What MLflow 3.17's UI shows instead of a runs table: an unknown route ("Page Not Found"), an
# unknown experiment ("Experiment load error: ... does not exist" / "Experiment not found"), a
# crashed section ("Something went wrong with this section"), the server's own 404 page.
ERROR_MARKERS = ("not found", "went wrong", "error", "does not exist")


def _visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def _table_rows_drawn(png: Path) -> int:
    """The runs table's rows drawn in a 1400x900 screenshot of the runs page: text lines in the
    table's box (below the filters, left of the assistant panel) with ink in the name, created and
    duration columns and colour (run colour dot / link, status icon) in the first two; the header
    has no colour. An error page, a blank or half-loaded page has none."""
    px = np.asarray(Image.open(png).convert("RGB"), dtype=int)
    assert px.shape == (900, 1400, 3), px.shape
    table = px[250:850, 220:1000]
    ink = table.min(axis=2) < 200
    colour = table.max(axis=2) - table.min(axis=2) > 60
    name, created, duration = slice(80, 260), slice(260, 400), slice(700, 780)
    rows, y, has_ink = 0, 0, ink.any(axis=1)
    while y < len(has_ink):
        end = y
        while end < len(has_ink) and has_ink[end]:
            end += 1
        if 6 <= end - y <= 24 and all(ink[y:end, c].any() for c in (name, created, duration)) \
                and colour[y:end, name].any() and colour[y:end, created].any():
            rows += 1
        y = end + 1
    return rows


def _runs_view_problems(dom: str, png: Path, names: list[str], matching: int, rows: int) -> list[str]:
    """Why the dumped DOM and screenshot of a runs page are not a working runs view ([] if they
    are): the run names, the run count the table's footer shows once the search returned
    ("4 matching runs"), no error page text, and the table's rows drawn in the screenshot."""
    text = _visible_text(dom)
    problems = []
    if missing := [n for n in names if n not in text]:
        problems.append(f"names: {missing} not in the page")
    count = re.search(r"(\d+) matching runs", text)
    if count is None or int(count.group(1)) != matching:
        problems.append(f"count: {count and count.group(0)!r} instead of '{matching} matching runs'")
    if found := [m for m in ERROR_MARKERS if m in text.lower()]:
        problems.append(f"error: the page says {found}: {text[:300]!r}")
    if (drawn := _table_rows_drawn(png)) != rows:
        problems.append(f"screenshot: {drawn} table rows drawn instead of {rows}")
    return problems


def _screenshot(chromium: str, url: str, path: Path, profile: Path) -> Path:
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,900",
                    f"--screenshot={path}", url], capture_output=True, text=True, timeout=180)
    return path


def test_ui_renders_the_runs_in_headless_chromium(server, sweep_store, tmp_path):
    chromium = chromium_path()
    url = f"{server}/#/experiments/{sweep_store['experiment_id']}/runs?workflowType=machine_learning"
    matching = len(sweep_store["results"]) + 1  # and the sweep's parent run
    # the runs page as train.py prints it: top-level runs, a sweep's trials folded under its parent
    top = [sweep_store["standalone"].run_name, "ui-sweep"]
    dom = _dump_dom(chromium, url, tmp_path / "profile", top)
    shot = _screenshot(chromium, url, tmp_path / "runs.png", tmp_path / "profile_shot")
    assert _runs_view_problems(dom, shot, top, matching, rows=len(top)) == []
    # sorted by another column than the start time, the UI lists the trials flat
    trials = [r.run_name for r in sweep_store["trials"]]
    url_sorted = url + "&orderByKey=attributes.run_name&orderByAsc=true"
    dom = _dump_dom(chromium, url_sorted, tmp_path / "sorted", trials)
    shot = _screenshot(chromium, url_sorted, tmp_path / "sorted.png", tmp_path / "sorted_shot")
    assert _runs_view_problems(dom, shot, [*top, *trials], matching, rows=matching) == []


@pytest.mark.parametrize("where", ["unknown experiment", "unknown route"])
def test_ui_check_rejects_mlflow_error_pages(server, sweep_store, tmp_path, where):
    """The check above on pages that are not the runs view: every part of it says so."""
    chromium = chromium_path()
    url = {"unknown experiment": f"{server}/#/experiments/987654321/runs?workflowType=machine_learning",
           "unknown route": f"{server}/#/no-such-page"}[where]
    dom = _dump_dom(chromium, url, tmp_path / "profile", [])
    shot = _screenshot(chromium, url, tmp_path / "bad.png", tmp_path / "profile_shot")
    top = [sweep_store["standalone"].run_name, "ui-sweep"]
    problems = _runs_view_problems(dom, shot, top, len(sweep_store["results"]) + 1, rows=len(top))
    assert {p.split(":")[0] for p in problems} == {"names", "count", "error", "screenshot"}, problems
