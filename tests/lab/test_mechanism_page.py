"""The mechanism lab page: the HTML itself (fast), then the page driven in headless Chromium over the
DevTools protocol (slow): stepping, reduced motion, no network. Chromium runs in its own process
group, killed at the end of each test."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import chromium_path

from dropout_risk.lab.page import example_data, render_page
from dropout_risk.training.train import train

CHROMIUM_FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-background-networking --no-first-run "
    "--disable-dev-shm-usage --window-size=1200,900 --remote-debugging-port=0"
).split()
REDUCE = [{"name": "prefers-reduced-motion", "value": "reduce"}]
TITLES = {1: "Input", 2: "Forward", 3: "Loss", 4: "Backward", 5: "Update"}


def _embedded(html: str) -> str:
    match = re.search(r'<script type="application/json" id="mechanism-data">(.*?)</script>', html, re.S)
    assert match, "no embedded data script"
    return match.group(1)


def test_page_is_self_contained_and_embeds_the_data():
    data = example_data()
    html = render_page(data)
    assert html.startswith("<!doctype html>")
    assert not re.search(r"https?://|<link|<script\s[^>]*src|@import|url\(", html, re.I)
    assert json.loads(_embedded(html)) == data
    assert html.count("<script") == 2  # the data and the page's own script


def test_a_feature_name_cannot_close_the_script():
    data = example_data()
    data["feature_names"][0] = "</script><script>alert(1)</script><!--"
    html = render_page(data)
    payload = _embedded(html)
    assert "</" not in payload and "<!--" not in payload and "<\\/script>" in payload
    assert json.loads(payload)["feature_names"][0] == data["feature_names"][0]


def test_example_data_is_consistent():
    data = example_data(hidden=(6, 3, 2), n_features=4, seed=3)
    assert [len(a) for a in data["activations"]] == [4, 6, 3, 2, 1]
    assert data["activations"][0] == data["x"] and data["activations"][-1] == [data["p"]]
    # bce: dL/dlogit = p - y
    assert data["errors"][-1][0] == pytest.approx(data["p"] - data["label"], abs=1e-6)
    assert data["update_norms"] == pytest.approx([data["lr"] * g for g in data["grad_norms"]])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("lr"), "missing key.*lr"),
        (lambda d: d["x_raw"].pop(), "x_raw has 4 entries, expected 5"),
        (lambda d: d["errors"][0].append(0.0), r"errors\[0\] has 9 entries, expected 8"),
        (lambda d: d["grad_norms"].pop(), "grad_norms has 2 entries, expected 3"),
        (lambda d: d["activations"].pop(1), "activations has 3 entries, expected 4"),
        (lambda d: d.update(loss_name="hinge"), "loss_name must be"),
        (lambda d: d.update(x=1.0), "x must be a list"),
    ],
)
def test_render_page_rejects_bad_data(change, message):
    data = example_data()
    change(data)
    with pytest.raises(ValueError, match=message):
        render_page(data)


# ---- headless Chromium over the DevTools protocol


class _Page:
    """One page target over a CDP websocket: commands by id, events kept in order."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=10, suppress_origin=True)
        self.events: list[dict] = []
        self._id = 0

    def _recv(self) -> dict:
        msg = json.loads(self.ws.recv())
        if "method" in msg:
            self.events.append(msg)
        return msg

    def send(self, method: str, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while (msg := self._recv()).get("id") != self._id:
            pass
        assert "error" not in msg, f"{method}: {msg['error']}"
        return msg.get("result", {})

    def wait_for(self, event: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if hit := next((e for e in self.events if e["method"] == event), None):
                return hit
            self._recv()
        raise AssertionError(f"no {event} within {timeout} s")

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def state(self) -> dict:
        return self.js("""({
            step: document.getElementById('lab').dataset.step,
            title: document.getElementById('step-title').textContent,
            visible: [...document.querySelectorAll('[data-panel]')]
                .filter(p => !p.hidden && p.getClientRects().length > 0).map(p => p.dataset.panel),
            pressed: [...document.querySelectorAll('[data-goto]')]
                .filter(b => b.getAttribute('aria-pressed') === 'true').map(b => b.dataset.goto),
            current: document.querySelector('[aria-current="step"]').dataset.goto,
        })""")

    def click(self, selector: str) -> dict:
        self.js(f"document.querySelector({json.dumps(selector)}).click()")
        return self.state()


def _at(state: dict, n: int) -> bool:
    """The page is at step n: data-step, the one visible panel, the pressed and the current button."""
    s = str(n)
    return (state["step"], state["visible"], state["pressed"], state["current"]) == (s, [s], [s], s)


@contextmanager
def _open(tmp_path: Path, data: dict | None, *, reduced_motion: bool = False, setup=None, html: str | None = None):
    """Chromium on the page rendered from `data` (or the given `html`) as a file:// URL; yields
    the _Page once it has loaded."""
    chromium = chromium_path()
    pytest.importorskip("websocket", reason="websocket-client is not installed (pip install -e '.[test]')")
    tmp_path.mkdir(parents=True, exist_ok=True)
    page_file = tmp_path / "index.html"
    page_file.write_text(html if html is not None else render_page(data), encoding="utf-8")
    log = tmp_path / "chromium.log"
    with log.open("w") as err:
        args = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "about:blank"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    page = None
    try:
        deadline = time.monotonic() + 10
        while not (found := re.search(r"DevTools listening on ws://([^/\s]+)/", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, f"no DevTools: {log.read_text()}"
            time.sleep(0.05)
        with urllib.request.urlopen(f"http://{found.group(1)}/json/list", timeout=5) as resp:
            target = next(t for t in json.loads(resp.read()) if t["type"] == "page")
        page = _Page(target["webSocketDebuggerUrl"])
        page.send("Page.enable")
        page.send("Runtime.enable")
        if reduced_motion:
            page.send("Emulation.setEmulatedMedia", features=REDUCE)
        if setup:
            setup(page)
        page.events.clear()
        page.send("Page.navigate", url=page_file.as_uri())
        page.wait_for("Page.loadEventFired")
        errors = [e for e in page.events if e["method"] == "Runtime.exceptionThrown"]
        assert not errors, f"script error on the page: {errors[0]['params']['exceptionDetails']}"
        yield page
    finally:
        if page is not None:
            page.ws.close()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.mark.slow
def test_steps_move_with_next_previous_step_buttons_and_arrow_keys(tmp_path):
    # wide layers and many features: the compact strips and the "features not listed" note
    data = example_data(hidden=(256, 24, 3), n_features=300, seed=1)
    with _open(tmp_path, data) as page:
        first = page.state()
        assert _at(first, 1), first
        assert TITLES[1] in first["title"]
        assert page.js("document.querySelectorAll('#features tr').length") == 12
        assert "288 more of the 300" in page.js("document.getElementById('features-note').textContent")
        assert page.js("document.getElementById('prev').disabled")

        titles = [first["title"]]
        for n in range(2, 6):
            state = page.click("#next")
            assert _at(state, n), state
            assert TITLES[n] in state["title"] and state["title"] not in titles
            titles.append(state["title"])
        assert page.js("document.getElementById('next').disabled")
        assert page.click("#next")["step"] == "5"  # disabled at the last step

        for n in (2, 4, 1, 3):
            state = page.click(f'[data-goto="{n}"]')
            assert (state["step"], state["title"], state["visible"]) == (str(n), titles[n - 1], [str(n)])
        assert page.click("#prev")["step"] == "2"
        assert page.click("#prev")["step"] == "1"

        for key, code, expected in (("ArrowRight", 39, "2"), ("ArrowRight", 39, "3"), ("ArrowLeft", 37, "2")):
            for kind in ("keyDown", "keyUp"):
                page.send("Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code)
            assert page.state()["step"] == expected
        # the data reached the page as text: the name of the widest layer's column and the run name
        assert page.js("document.getElementById('run-title').textContent") == "Mechanism lab · example"
        names = page.js("[...document.querySelectorAll('#net .lname')].map(t => t.textContent).join('|')")
        assert names == "input|hidden 1|hidden 2|hidden 3|output"


@pytest.mark.slow
def test_reduced_motion_shows_the_steps_without_animation(tmp_path):
    data = example_data(hidden=(16, 8, 4, 4, 2), n_features=12)
    with _open(tmp_path / "reduce", data, reduced_motion=True) as page:
        assert page.js("matchMedia('(prefers-reduced-motion: reduce)').matches")
        assert page.js("document.getElementById('lab').dataset.motion") == "reduce"
        for n in range(1, 6):
            state = page.click(f'[data-goto="{n}"]') if n == 1 else page.click("#next")
            assert (state["step"], state["visible"]) == (str(n), [str(n)])
            assert page.js("document.getAnimations().length") == 0, f"animations running at step {n}"
        # the states still differ: error signals shown at step 5, not activations of the hidden layers
        assert page.js("getComputedStyle(document.querySelector('.c1 .dv')).opacity") == "1"
        assert page.js("getComputedStyle(document.querySelector('.c1 .hv')).opacity") == "0"

    with _open(tmp_path / "full", data) as page:
        assert page.js("document.getElementById('lab').dataset.motion") == "full"
        started = page.js("document.querySelector('#next').click(), document.getAnimations().length")
        assert page.state()["step"] == "2"
        assert started > 0, "moving to step 2 started no animation or transition"


@pytest.mark.slow
def test_page_loads_without_network_requests(tmp_path):
    with _open(tmp_path, example_data(), setup=lambda page: page.send("Network.enable")) as page:
        page.click("#next")
        page.click('[data-goto="5"]')
        sent = [e for e in page.events if e["method"] == "Network.requestWillBeSent"]
        requested = [e["params"]["request"]["url"] for e in sent]
        assert set(requested) <= {(tmp_path / "index.html").as_uri()}, f"the page requested {requested}"
        assert page.js("performance.getEntriesByType('resource').length") == 0


@pytest.mark.slow
def test_the_page_of_a_real_run_steps_through_all_five_states(make_cfg, client, tmp_path):
    """The artifact mechanism/index.html that train() logs, opened from the store."""
    result = train(make_cfg("mechanism.every_n_steps=0", "mechanism.page=true"))
    html = Path(client.download_artifacts(result.run_id, "mechanism/index.html", str(tmp_path))).read_text()
    data = json.loads(_embedded(html))
    assert data["run_id"] == result.run_id and data["layer_names"] == ["input", "hidden 1", "hidden 2", "output"]
    assert data["label"] == 1  # the default student: the first validation student who dropped out
    with _open(tmp_path / "page", None, html=html) as page:
        assert _at(page.state(), 1)
        titles = {page.state()["title"]}
        for n in range(2, 6):
            state = page.click("#next")
            assert _at(state, n), state
            titles.add(state["title"])
        assert len(titles) == 5
        assert _at(page.click("#prev"), 4)
