"""The UI's compare-runs page shows the runs' figures side by side (slow; issue 17): the real
`mlflow server` on a loopback port over 3 runs (two converged, one diverged), headless Chromium
driven through the DevTools protocol: open the compare page, click `reliability.png` in its
Artifacts section, and find one rendered image per run; the same for `loss.png`. MLflow 3.17's
compare page lists top-level artifact files only: these are the root copies every run logs.
Screenshots go to the test's tmp folder."""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from helpers import chromium_path, start_mlflow_server, stop_process_group
from hydra import compose, initialize_config_dir

from dropout_risk.training.train import train

pytestmark = pytest.mark.slow
websocket = pytest.importorskip("websocket", reason="websocket-client drives Chromium's DevTools protocol")


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol (its own process group,
    stopped as a whole by close())."""

    def __init__(self, chromium: str, profile: Path, size: tuple[int, int] = (1400, 900)) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        self.ws = None
        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", f"--window-size={size[0]},{size[1]}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.ids = itertools.count(1)
        try:
            deadline = time.monotonic() + 60
            while not (port_file.exists() and port_file.read_text().strip()):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("chromium did not open its DevTools port")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
                page = next(p for p in json.loads(resp.read()) if p["type"] == "page")
            self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        except BaseException:
            self.close()
            raise

    def send(self, method: str, **params) -> dict:
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, js: str):
        return self.send("Runtime.evaluate", expression=js, returnByValue=True, awaitPromise=True) \
            .get("result", {}).get("value")

    def wait(self, js: str, timeout: float = 90, poll: float = 0.25):
        """The first truthy value of `js`, evaluated every `poll` s (None after `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := self.eval(js):
                return value
            time.sleep(poll)
        return None

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        try:
            if self.ws is not None:
                self.ws.close()
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def _click_js(text: str) -> str:
    """Click the innermost element whose text is `text`; its tag name, or null if there is none."""
    t = json.dumps(text)
    return f"""(() => {{
      for (const el of document.querySelectorAll('body *')) {{
        if (el.textContent.trim() === {t} && ![...el.children].some(c => c.textContent.trim() === {t})) {{
          el.scrollIntoView(); el.click(); return el.tagName;
        }}
      }}
      return null; }})()"""


def _images_js(n: int, height: int) -> str:
    """The images the artifact viewers show, once `n` of `height` px have loaded: [width, height]
    of each distinct source (the viewer keeps a second copy of each for its zoom); else null."""
    return f"""(() => {{ const seen = {{}};
      for (const img of document.images) {{
        if (img.src.startsWith('blob:') && img.complete && img.naturalHeight === {height}) {{
          seen[img.src] = [img.naturalWidth, img.naturalHeight];
        }}
      }}
      const found = Object.values(seen);
      return found.length >= {n} ? found : null; }})()"""


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory, new_store):
    from helpers import CONF, FIGURES, TINY

    store = new_store(tmp_path_factory.mktemp("compare_ui"))
    base = [f"tracking.uri={store['uri']}", f"tracking.artifact_location={store['artifacts']}",
            "tracking.experiment=compare-ui", "baselines=none", "optim=sgd"]

    def cfg(*overrides):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=[*TINY, *FIGURES, *base, *overrides])

    runs = [train(cfg(f"optim.lr={lr}")) for lr in (0.03, 0.3, 1e4)]
    assert [r.outcome for r in runs] == ["converged", "converged", "diverged"]
    return store, runs


@pytest.fixture(scope="module")
def server(three_runs):
    store, _ = three_runs
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc, port = start_mlflow_server(["--backend-store-uri", store["uri"], "--workers", "1"],
                                     cwd=Path(store["root"]), env=env, timeout=120)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(proc)


def test_compare_page_shows_each_runs_reliability_diagram_and_loss_curves(server, three_runs, tmp_path):
    _, runs = three_runs
    ids = [r.run_id for r in runs]
    query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([runs[0].experiment_id]),
                                    "workflowType": "machine_learning"})
    browser = Browser(chromium_path(), tmp_path / "profile")
    try:
        browser.send("Page.enable")
        browser.send("Page.navigate", url=f"{server}/#/compare-runs?{query}")
        assert browser.wait("document.body && document.body.innerText.includes('Comparing 3 Runs')"), \
            browser.eval("document.body && document.body.innerText.slice(0, 500)")
        # the Artifacts section lists the top-level files the three runs have in common
        assert browser.wait(_click_js("reliability.png")) is not None, \
            browser.eval("document.body.innerText.slice(-3000)")
        shown = browser.wait(_images_js(3, 517))
        browser.screenshot(tmp_path / "compare_reliability.png")
        assert shown == [[450, 517]] * 3, shown  # one full-size diagram per run
        assert browser.wait(_click_js("loss.png")) is not None
        shown = browser.wait(_images_js(3, 300))
        browser.screenshot(tmp_path / "compare_loss.png")
        assert shown == [[450, 300]] * 3, shown
    finally:
        browser.close()
