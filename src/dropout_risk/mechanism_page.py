"""The mechanism lab page: backpropagation on the real trained network, for one validation student.

``render_page(data)`` returns one self-contained HTML document (inline CSS and JS, no network) that
walks through five steps on the network's real numbers:

1. Input: the student's features (standardised, as the network sees them, and in raw units) enter h_0.
2. Forward: activations flow left to right, h_l = act(W_l h_{l-1} + b_l), up to p = sigmoid(logit);
   each layer is a column of units coloured by value (a strip of small cells when wide) with ||h_l||.
3. Loss: p against the label y and the loss value (bce = log loss, mse = squared error of p).
4. Backward: the error signals delta_l = dL/dz_l flow right to left by the chain rule,
   delta_l = (W_{l+1}^T delta_{l+1}) * act'(z_l), and dL/dW_l = delta_l h_{l-1}^T, with their norms.
5. Update: theta <- theta - lr * grad, with ||lr dL/dW_l|| per layer and relative to ||W_l||.

The data dict (contract in ``render_page``) is embedded as JSON in
``<script type="application/json" id="mechanism-data">``; the page's script writes every data value
with ``textContent``. Steps change with Previous/Next, the step buttons or the arrow keys; the root
``<main id="lab">`` carries ``data-step``. Under ``prefers-reduced-motion: reduce`` the same states are
shown with no animation or transition. Meant for the MLflow artifact ``mechanism/index.html``.
``example_data()`` builds a valid dict from a tiny torch MLP, for tests and for trying the page.
"""

from __future__ import annotations

import json
from typing import Any

_KEYS = (
    "run_name", "run_id", "student_index", "feature_names", "x", "x_raw", "label", "layer_names",
    "activation", "activations", "pre_activations", "logit", "p", "loss", "loss_name", "errors",
    "grad_norms", "weight_norms", "lr", "optimizer", "update_norms",
)  # fmt: skip


def _check(data: dict[str, Any]) -> None:
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise ValueError(f"mechanism page data is missing key(s): {', '.join(missing)}")

    def length(key: str, value: Any, expected: int | None = None) -> int:
        if not isinstance(value, list | tuple):
            raise ValueError(f"mechanism page data: {key} must be a list, got {type(value).__name__}")
        if expected is not None and len(value) != expected:
            raise ValueError(f"mechanism page data: {key} has {len(value)} entries, expected {expected}")
        return len(value)

    d = length("feature_names", data["feature_names"])
    if d == 0:
        raise ValueError("mechanism page data: feature_names is empty")
    length("x", data["x"], d)
    length("x_raw", data["x_raw"], d)
    n_cols = length("layer_names", data["layer_names"])
    if n_cols < 2:
        raise ValueError("mechanism page data: layer_names needs at least 'input' and 'output'")
    length("activations", data["activations"], n_cols)
    length("activations[0]", data["activations"][0], d)
    length(f"activations[{n_cols - 1}] (the output)", data["activations"][-1], 1)
    for key in ("pre_activations", "errors"):
        length(key, data[key], n_cols - 1)
        for i, values in enumerate(data[key]):
            length(f"{key}[{i}]", values, len(data["activations"][i + 1]))
    for key in ("grad_norms", "weight_norms", "update_norms"):
        length(key, data[key], n_cols - 1)
    if data["label"] not in (0, 1):
        raise ValueError(f"mechanism page data: label must be 0 or 1, got {data['label']!r}")
    if data["loss_name"] not in ("bce", "mse"):
        raise ValueError(f"mechanism page data: loss_name must be 'bce' or 'mse', got {data['loss_name']!r}")


def render_page(data: dict[str, Any]) -> str:
    """The complete HTML document for ``data``:

    run_name, run_id: str; student_index: int (row in the validation split);
    feature_names, x (standardised = h_0), x_raw: d entries each; label: 0 or 1;
    layer_names: "input", "hidden 1".."hidden L", "output" (L + 2); activation: str (hidden layers);
    activations: h_0..h_{L+1} (h_{L+1} = [p]); pre_activations, errors: z_l and delta_l = dL/dz_l for
    l = 1..L+1; logit, p, loss: float; loss_name: "bce" or "mse";
    grad_norms, weight_norms, update_norms: ||dL/dW_l||, ||W_l||, ||lr dL/dW_l|| for l = 1..L+1;
    lr: float; optimizer: str.  Raises ValueError on a missing key or lengths that disagree.
    """
    _check(data)
    payload = json.dumps(data, allow_nan=False).replace("</", "<\\/").replace("<!--", "\\u003c!--")
    return _TEMPLATE.replace("__DATA__", payload)


def example_data(hidden: tuple[int, ...] = (8, 4), n_features: int = 5, seed: int = 0) -> dict[str, Any]:
    """A valid page dict from a tiny random torch MLP (relu, sigmoid output, bce) and one random student."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        widths = [n_features, *hidden, 1]
        layers = [torch.nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        x_raw = 50 + 10 * torch.randn(n_features)
        x = (x_raw - 50) / 10
        label = int(torch.randint(0, 2, ()))
        h, hs, zs = x, [x], []
        for i, layer in enumerate(layers):
            z = layer(h)
            z.retain_grad()
            h = torch.sigmoid(z) if i == len(hidden) else torch.relu(z)
            zs.append(z)
            hs.append(h)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(zs[-1], torch.tensor([float(label)]))
        loss.backward()
    lr = 1e-3
    grads = [float(layer.weight.grad.norm()) for layer in layers]
    return {
        "run_name": "example", "run_id": "0" * 32, "student_index": seed,
        "feature_names": [f"feature_{i}" for i in range(n_features)],
        "x": x.tolist(), "x_raw": x_raw.tolist(), "label": label,
        "layer_names": ["input", *(f"hidden {i + 1}" for i in range(len(hidden))), "output"],
        "activation": "relu",
        "activations": [t.detach().tolist() for t in hs],
        "pre_activations": [z.detach().tolist() for z in zs],
        "logit": zs[-1].item(), "p": hs[-1].item(), "loss": loss.item(), "loss_name": "bce",
        "errors": [z.grad.tolist() for z in zs],
        "grad_norms": grads,
        "weight_norms": [float(layer.weight.detach().norm()) for layer in layers],
        "lr": lr, "optimizer": "AdamW",
        "update_norms": [lr * g for g in grads],
    }  # fmt: skip


_TEMPLATE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Mechanism lab</title>
<style>
:root { --fg: #1d2433; --muted: #5b6475; --line: #d5dbe4; --panel: #f5f7fa; --accent: #0f766e;
  --pos: #e4572e; --neg: #2f6fde; --dpos: #1b9e77; --dneg: #8e44ad; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: #fff; }
main { max-width: 1100px; margin: 0 auto; padding: 14px 18px 28px; }
h1 { font-size: 1.2rem; margin: 0; }
.meta { margin: 2px 0 0; color: var(--muted); font-size: .88rem; }
nav { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin: 12px 0 6px; }
button { font: inherit; font-size: .88rem; padding: 5px 12px; border: 1px solid var(--line); border-radius: 6px;
  background: #fff; color: var(--fg); cursor: pointer; }
button:hover:not(:disabled) { border-color: var(--accent); }
button:focus-visible { outline: 2px solid var(--accent); outline-offset: 2px; }
button:disabled { opacity: .4; cursor: default; }
button[aria-pressed="true"] { background: var(--accent); border-color: var(--accent); color: #fff; }
.steps { display: flex; gap: 4px; margin: 0 6px; }
#step-title { font-size: 1.08rem; margin: 8px 0 6px; }
.motion-note { display: none; color: var(--muted); font-size: .8rem; margin-left: auto; }
#lab[data-motion="reduce"] .motion-note { display: inline; }
#net { display: block; width: 100%; height: auto; background: var(--panel); border-radius: 8px; }
#net text { font-size: 11px; fill: var(--muted); }
#net .lname { font-size: 12px; font-weight: 600; fill: var(--fg); }
#net .fname { font-size: 10px; }
.base { fill: #fff; stroke: #aeb7c4; stroke-width: 1; }
.edges { stroke: #8c98a9; stroke-opacity: .16; fill: none; }
.band { fill: #8c98a9; fill-opacity: .13; stroke: none; }
.lossbox { fill: #fff; stroke: var(--fg); stroke-width: 1.2; }
#net .lossval { font-size: 13px; font-weight: 600; fill: var(--fg); }
.hv, .dv, .nh, .nd, .lg, .lu, .loss-node { opacity: 0; transition: opacity .45s ease; }
.pulse { opacity: 0; }
.pf, .pl { fill: var(--pos); }
.pb { fill: var(--dneg); }
@keyframes flow { 0% { opacity: 0; transform: translateX(0); } 15%, 85% { opacity: 1; }
  100% { opacity: 0; transform: translateX(var(--dx)); } }
@keyframes glow { 50% { stroke-opacity: .6; fill-opacity: .45; } }
@keyframes grow { from { transform: scaleX(0); } }
/* 1 input: only h_0 is known */
#lab[data-step="1"] .c0 .hv, #lab[data-step="1"] .c0 .nh { opacity: 1; }
/* 2 forward, 3 loss: every activation */
#lab[data-step="2"] .hv, #lab[data-step="2"] .nh, #lab[data-step="3"] .hv, #lab[data-step="3"] .nh { opacity: 1; }
#lab[data-step="2"] .hv, #lab[data-step="2"] .nh { transition-delay: calc(var(--i) * .55s); }
#lab[data-step="2"] .pf { animation: flow .55s ease-in-out calc(var(--i) * .55s) both; }
#lab[data-step="3"] .loss-node, #lab[data-step="4"] .loss-node, #lab[data-step="5"] .loss-node { opacity: 1; }
#lab[data-step="3"] .pl { animation: flow .6s ease-in-out both; }
/* 4 backward, 5 update: error signals; the input keeps its values, dimmed */
#lab[data-step="4"] .dv, #lab[data-step="4"] .nd, #lab[data-step="4"] .lg,
#lab[data-step="5"] .dv, #lab[data-step="5"] .nd, #lab[data-step="5"] .lu { opacity: 1; }
#lab[data-step="4"] .c0 .hv, #lab[data-step="5"] .c0 .hv { opacity: .35; }
#lab[data-step="4"] .dv, #lab[data-step="4"] .nd, #lab[data-step="4"] .lg { transition-delay: calc(var(--j) * .55s); }
#lab[data-step="4"] .pb { animation: flow .55s ease-in-out calc(var(--j) * .55s) both; }
#lab[data-step="5"] .wires > * { animation: glow 1s ease-in-out calc(var(--i) * .2s) both; }
.panel { background: var(--panel); border-radius: 8px; padding: 12px 16px; margin-top: 10px; }
.caption { margin: 0 0 8px; color: var(--muted); max-width: 80ch; }
.formula { display: inline-block; margin: 4px 12px 6px 0; padding: 5px 10px; background: #fff; border: 1px solid var(--line);
  border-radius: 6px; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .88rem; }
table { border-collapse: collapse; font-size: .86rem; margin-top: 6px; }
th, td { padding: 3px 14px 3px 0; text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { color: var(--muted); font-weight: 600; border-bottom: 1px solid var(--line); }
td.graph { text-align: left; }
td.name { max-width: 28ch; overflow: hidden; text-overflow: ellipsis; }
.bar { display: inline-block; height: 10px; width: calc(var(--w) * 160px); min-width: 1px; border-radius: 2px;
  background: var(--accent); transform-origin: left; animation: grow .7s ease-out both; vertical-align: middle; }
.bar.neg { background: var(--neg); }
.bar.pos { background: var(--pos); }
.note { color: var(--muted); font-size: .84rem; margin: 6px 0 0; }
.track { position: relative; height: 44px; max-width: 520px; margin: 8px 28px 30px; border-bottom: 2px solid var(--line); }
.track .gap { position: absolute; bottom: 0; height: 14px; background: var(--pos); opacity: .35; transform-origin: left;
  animation: grow .7s ease-out both; }
.track .mark { position: absolute; bottom: -6px; width: 2px; height: 30px; background: var(--fg); }
.track .mark span { position: absolute; top: -18px; left: 50%; transform: translateX(-50%); font-size: .8rem; white-space: nowrap; }
.track .mark.y { background: var(--accent); }
.track .mark.y span { top: 34px; }
@media (prefers-reduced-motion: reduce) {
  *, *::before, *::after { animation: none !important; transition: none !important; }
}
</style>
</head>
<body>
<main id="lab" data-step="1">
<header>
  <h1 id="run-title">Mechanism lab</h1>
  <p class="meta" id="run-meta"></p>
</header>
<nav aria-label="Steps">
  <button type="button" id="prev">&larr; Previous</button>
  <span class="steps">
    <button type="button" data-goto="1" aria-pressed="true" aria-current="step">1 Input</button>
    <button type="button" data-goto="2" aria-pressed="false">2 Forward</button>
    <button type="button" data-goto="3" aria-pressed="false">3 Loss</button>
    <button type="button" data-goto="4" aria-pressed="false">4 Backward</button>
    <button type="button" data-goto="5" aria-pressed="false">5 Update</button>
  </span>
  <button type="button" id="next">Next &rarr;</button>
  <span class="motion-note">Reduced motion: steps change without animation.</span>
</nav>
<h2 id="step-title" aria-live="polite">1 · Input</h2>
<svg id="net" viewBox="0 0 1000 440" role="img" aria-label="The network, one column of units per layer"></svg>

<section class="panel" data-panel="1">
  <p class="caption">The network sees this student as a vector h<sub>0</sub> = x of standardised features,
    (raw value &minus; training mean) / training std: 0 is an average student, &plusmn;1 one standard deviation away.
    Left column of the diagram: each input unit coloured by its value (orange above average, blue below).</p>
  <table><thead><tr><th>feature</th><th>raw value</th><th>standardised x</th><th></th></tr></thead><tbody id="features"></tbody></table>
  <p class="note" id="features-note"></p>
</section>

<section class="panel" data-panel="2" hidden>
  <p class="caption">Each layer takes the previous layer's output, multiplies it by its weights, adds its bias and
    applies the activation. The colours show each unit's value for this student (scaled per layer);
    &Vert;h<sub>l</sub>&Vert; is the Euclidean norm of the whole layer. The output unit's sigmoid turns the logit into
    the predicted dropout probability p.</p>
  <span class="formula">z<sub>l</sub> = W<sub>l</sub> h<sub>l&minus;1</sub> + b<sub>l</sub>,&nbsp; h<sub>l</sub> = <span id="act-name"></span>(z<sub>l</sub>)</span>
  <span class="formula">p = &sigma;(logit) = 1 / (1 + e<sup>&minus;logit</sup>)</span>
  <table><thead><tr><th>layer</th><th>units</th><th>&Vert;z<sub>l</sub>&Vert;</th><th>&Vert;h<sub>l</sub>&Vert;</th><th>units at 0</th></tr></thead><tbody id="forward"></tbody></table>
  <p class="note" id="forward-note"></p>
</section>

<section class="panel" data-panel="3" hidden>
  <p class="caption">The loss compares the predicted probability p with the label y (1 = dropped out, 0 = did not).
    It is the one number the whole network is trained to make small; the shaded gap is the error p &minus; y.</p>
  <div class="track" id="track"><div class="gap" id="gap"></div>
    <div class="mark" id="mark-p"><span id="mark-p-label"></span></div>
    <div class="mark y" id="mark-y"><span id="mark-y-label"></span></div></div>
  <span class="formula" id="loss-def"></span>
  <span class="formula" id="loss-value"></span>
</section>

<section class="panel" data-panel="4" hidden>
  <p class="caption">Backpropagation sends the error back through the same weights, right to left. The error signal
    &delta;<sub>l</sub> = dL/dz<sub>l</sub> says how much the loss would change if unit pre-activations moved;
    the chain rule computes each layer's &delta; from the next one, and each weight's gradient is its input
    activation times the error at its output (green = positive &delta;, purple = negative).</p>
  <span class="formula">&delta;<sub>out</sub> = dL/dlogit = <span id="delta-out"></span></span>
  <span class="formula">&delta;<sub>l</sub> = (W<sub>l+1</sub><sup>T</sup> &delta;<sub>l+1</sub>) &odot; <span id="act-name-2"></span>&prime;(z<sub>l</sub>)</span>
  <span class="formula">dL/dW<sub>l</sub> = &delta;<sub>l</sub> h<sub>l&minus;1</sub><sup>T</sup>,&nbsp; dL/db<sub>l</sub> = &delta;<sub>l</sub></span>
  <table><thead><tr><th>layer</th><th>&Vert;&delta;<sub>l</sub>&Vert;</th><th>&Vert;dL/dW<sub>l</sub>&Vert;</th><th></th></tr></thead><tbody id="backward"></tbody></table>
</section>

<section class="panel" data-panel="5" hidden>
  <p class="caption">Gradient descent moves every parameter a small step against its gradient. The table shows how
    large that step is for each weight matrix, alone and relative to the matrix itself (a common rule of thumb:
    around 10<sup>&minus;3</sup> per step is healthy; much larger steps overshoot, which is how training diverges).</p>
  <span class="formula">&theta; &larr; &theta; &minus; &eta; &nabla;<sub>&theta;</sub>L</span>
  <span class="formula" id="lr"></span>
  <table><thead><tr><th>weights</th><th>&Vert;W<sub>l</sub>&Vert;</th><th>&Vert;&eta; dL/dW<sub>l</sub>&Vert;</th><th>relative</th><th></th></tr></thead><tbody id="update"></tbody></table>
  <p class="note" id="update-note"></p>
</section>
</main>
<script type="application/json" id="mechanism-data">__DATA__</script>
<script>
(() => {
  'use strict';
  const D = JSON.parse(document.getElementById('mechanism-data').textContent);
  const lab = document.getElementById('lab');
  const svg = document.getElementById('net');
  const NS = svg.namespaceURI;
  const $ = id => document.getElementById(id);
  const TITLES = ['1 · Input', '2 · Forward pass', '3 · Loss', '4 · Backward pass', '5 · Update'];
  const nCols = D.activations.length;
  const out = nCols - 1;
  const fmt = v => {
    const a = Math.abs(v);
    return a === 0 ? '0' : (a >= 1e4 || a < 1e-3) ? v.toExponential(2) : String(+v.toPrecision(3));
  };
  const norm = a => Math.sqrt(a.reduce((s, v) => s + v * v, 0));
  const maxAbs = a => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0) || 1;
  const short = (s, n) => (s.length > n ? s.slice(0, n - 1) + '…' : s);

  function node(ns, tag, attrs, text) {
    const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  const s = (parent, tag, attrs, text) => parent.appendChild(node(NS, tag, attrs, text));
  const h = (tag, attrs, text) => node(null, tag, attrs, text);
  function bar(frac, cls) {
    const b = h('span', { class: 'bar ' + (cls || '') });
    b.style.setProperty('--w', Math.max(0, Math.min(1, frac)).toFixed(4));
    return b;
  }
  function row(tbody, cells) {
    const tr = tbody.insertRow();
    cells.forEach((c, k) => {
      const td = tr.insertCell();
      if (c instanceof Node) { td.className = 'graph'; td.appendChild(c); } else td.textContent = c;
      if (k === 0) { td.className = 'name'; td.title = c; }
    });
  }
  // white -> colour by |t| in [0, 1]; t < 0 takes the second colour
  const RGB = { pos: [228, 87, 46], neg: [47, 111, 222], dpos: [27, 158, 119], dneg: [142, 68, 173] };
  function colour(t, pos, neg) {
    const c = RGB[t < 0 ? neg : pos], k = Math.pow(Math.min(1, Math.abs(t)), 0.7);
    return 'rgb(' + c.map(x => Math.round(255 + (x - 255) * k)).join(',') + ')';
  }

  // ---- header
  document.title = 'Mechanism lab · ' + D.run_name;
  $('run-title').textContent = 'Mechanism lab · ' + D.run_name;
  $('run-meta').textContent = 'run ' + D.run_id + ' · validation student #' + D.student_index +
    ' · label y = ' + D.label + (D.label === 1 ? ' (dropped out)' : ' (did not drop out)');

  // ---- the network diagram: one column per layer, units centred on the line y = MID
  const W = 1000, H = 440, TOP = 56, BOTTOM = H - 50, MID = (TOP + BOTTOM) / 2;
  const X0 = nCols > 6 ? 190 : 210, XN = 790, LOSS_X = 905;
  const colX = i => X0 + (i * (XN - X0)) / (nCols - 1);
  const crowded = (XN - X0) / (nCols - 1) < 130;
  const cols = D.activations.map((hv, i) => {
    const n = hv.length, x = colX(i);
    if (n <= 24) {  // circles
      const gap = Math.min(30, (BOTTOM - TOP) / n), r = Math.max(3, Math.min(10, gap * 0.38));
      const pos = hv.map((_, k) => [x, MID + (k - (n - 1) / 2) * gap]);
      return { n, x, pos, r, half: r, top: pos[0][1] - r, bottom: pos[n - 1][1] + r };
    }
    const cell = 7, rows = Math.min(n, Math.floor((BOTTOM - TOP) / cell)), ncol = Math.ceil(n / rows);
    const left = x - (ncol * cell) / 2, top = MID - (rows * cell) / 2;
    const pos = hv.map((_, k) => [left + Math.floor(k / rows) * cell, top + (k % rows) * cell]);
    return { n, x, pos, cell, half: (ncol * cell) / 2, top, bottom: top + rows * cell };
  });

  function wires(g, a, b) {
    if (a.r && b.r && a.n * b.n <= 600) {
      const e = s(g, 'g', { class: 'edges' });
      a.pos.forEach(([x1, y1]) => b.pos.forEach(([x2, y2]) =>
        s(e, 'line', { x1: x1 + a.r, y1, x2: x2 - b.r, y2 })));
    } else {
      const xa = a.x + a.half, xb = b.x - b.half;
      s(g, 'polygon', { class: 'band', points: [xa, a.top, xb, b.top, xb, b.bottom, xa, a.bottom].join(' ') });
    }
  }
  function pulses(g, cls, x, dx, spread, idx) {
    for (const f of [-0.3, 0, 0.3]) {
      const c = s(g, 'circle', { class: 'pulse ' + cls, cx: x, cy: MID + f * spread, r: 4.5 });
      c.style.setProperty('--dx', dx + 'px');
      for (const [k, v] of Object.entries(idx)) c.style.setProperty(k, v);
    }
  }
  function units(g, col, values, scale, colours, tip) {
    values.forEach((v, k) => {
      const [x, y] = col.pos[k];
      const fill = colour(scale(v), ...colours);
      const u = col.r ? s(g, 'circle', { cx: x, cy: y, r: col.r, fill, stroke: '#6b7585', 'stroke-width': 0.6 })
        : s(g, 'rect', { x, y, width: col.cell - 1, height: col.cell - 1, fill });
      s(u, 'title', {}, tip(k));
    });
  }

  for (let l = 0; l < out; l++) {  // links: W_{l+1} joins column l to column l+1
    const a = cols[l], b = cols[l + 1], g = s(svg, 'g', { class: 'link' });
    const w = s(g, 'g', { class: 'wires' });
    w.style.setProperty('--i', l);
    wires(w, a, b);
    const x1 = a.x + a.half, x2 = b.x - b.half, spread = Math.min(a.bottom - a.top, b.bottom - b.top) / 2;
    pulses(g, 'pf', x1, x2 - x1, spread, { '--i': l });
    pulses(g, 'pb', x2, x1 - x2, spread, { '--j': out - l });
    const y = H - (crowded && l % 2 ? 6 : 19);  // crowded: alternate rows
    const label = (cls, text) => s(g, 'text', { class: cls, x: (x1 + x2) / 2, y, 'text-anchor': 'middle' }, text);
    label('lg', '‖∇W' + (l + 1) + '‖ ' + fmt(D.grad_norms[l])).style.setProperty('--j', out - l);
    label('lu', '‖η∇W' + (l + 1) + '‖ ' + fmt(D.update_norms[l]));
  }

  cols.forEach((col, i) => {
    const g = s(svg, 'g', { class: 'col c' + i });
    g.style.setProperty('--i', i);
    g.style.setProperty('--j', out - i + 1);
    const hv = D.activations[i], dv = i > 0 ? D.errors[i - 1] : null, zv = i > 0 ? D.pre_activations[i - 1] : null;
    s(g, 'text', { class: 'lname', x: col.x, y: 22, 'text-anchor': 'middle' }, D.layer_names[i]);
    s(g, 'text', { x: col.x, y: 38, 'text-anchor': 'middle' },
      i === 0 ? col.n + (col.n === 1 ? ' feature' : ' features') : i === out ? 'p' : col.n + (col.n === 1 ? ' unit' : ' units'));
    const base = s(g, 'g', {});
    col.pos.forEach(([x, y]) => col.r ? s(base, 'circle', { class: 'base', cx: x, cy: y, r: col.r })
      : s(base, 'rect', { class: 'base', x, y, width: col.cell - 1, height: col.cell - 1 }));
    const name = k => (i === 0 ? D.feature_names[k] : D.layer_names[i] + ' · unit ' + (k + 1));
    const mh = maxAbs(hv);
    units(s(g, 'g', { class: 'hv' }), col, hv, v => (i === out ? v : v / mh), ['pos', 'neg'], k => name(k) +
      (i === 0 ? '\nx = ' + fmt(hv[k]) + ' (raw ' + fmt(D.x_raw[k]) + ')' : '\nz = ' + fmt(zv[k]) + '\nh = ' + fmt(hv[k])));
    if (dv) {
      const md = maxAbs(dv);
      units(s(g, 'g', { class: 'dv' }), col, dv, v => v / md, ['dpos', 'dneg'], k => name(k) + '\nδ = ' + fmt(dv[k]));
      s(g, 'text', { class: 'nd', x: col.x, y: H - 36, 'text-anchor': 'middle' }, '‖δ‖ ' + fmt(norm(dv)));
    }
    s(g, 'text', { class: 'nh', x: col.x, y: H - 36, 'text-anchor': 'middle' },
      i === out ? 'p = ' + fmt(D.p) : '‖h‖ ' + fmt(norm(hv)));
    if (i === 0 && col.r && col.n <= 24) {  // feature names beside the input units
      col.pos.forEach(([x, y], k) => s(g, 'text', { class: 'fname', x: x - col.r - 6, y: y + 3.5, 'text-anchor': 'end' },
        short(D.feature_names[k], 22)));
    }
  });

  {  // the loss node, right of the output
    const o = cols[out], g = s(svg, 'g', { class: 'loss-node' });
    const x1 = o.x + o.half + 4, x2 = LOSS_X - 48;
    s(g, 'line', { x1, y1: MID, x2, y2: MID, stroke: '#8c98a9', 'stroke-width': 1.5 });
    pulses(g, 'pl', x1, x2 - x1, 0, {});
    pulses(g, 'pb', x2, x1 - x2, 0, { '--j': 0 });
    s(g, 'rect', { class: 'lossbox', x: LOSS_X - 48, y: MID - 30, width: 96, height: 60, rx: 8 });
    s(g, 'text', { class: 'lossval', x: LOSS_X, y: MID - 6, 'text-anchor': 'middle' }, 'L = ' + fmt(D.loss));
    s(g, 'text', { x: LOSS_X, y: MID + 14, 'text-anchor': 'middle' }, D.loss_name + ', y = ' + D.label);
  }

  // ---- step 1: the features, largest |x| first
  {
    const order = D.x.map((_, k) => k).sort((a, b) => Math.abs(D.x[b]) - Math.abs(D.x[a]));
    const shown = order.slice(0, 12), mx = maxAbs(D.x), tb = $('features');
    shown.forEach(k => row(tb, [D.feature_names[k], fmt(D.x_raw[k]), fmt(D.x[k]),
      bar(Math.abs(D.x[k]) / mx, D.x[k] < 0 ? 'neg' : 'pos')]));
    const hidden = D.x.length - shown.length;
    $('features-note').textContent = hidden > 0
      ? 'The ' + shown.length + ' features furthest from average; ' + hidden + ' more of the ' + D.x.length +
        ' features are not listed (all of them are in the diagram).'
      : 'All ' + D.x.length + ' features, furthest from average first.';
  }
  // ---- step 2: forward
  $('act-name').textContent = D.activation;
  $('act-name-2').textContent = D.activation;
  for (let i = 1; i < nCols; i++) {
    const hv = D.activations[i];
    row($('forward'), [D.layer_names[i], String(hv.length), fmt(norm(D.pre_activations[i - 1])), fmt(norm(hv)),
      i === out ? '–' : String(hv.filter(v => v === 0).length)]);
  }
  $('forward-note').textContent = 'Output: logit = ' + fmt(D.logit) + ', p = σ(logit) = ' + fmt(D.p) +
    ' (hidden layers use ' + D.activation + ').';
  // ---- step 3: loss
  {
    const p = D.p, y = D.label, lo = Math.min(p, y);
    $('gap').style.left = lo * 100 + '%';
    $('gap').style.width = Math.abs(p - y) * 100 + '%';
    $('mark-p').style.left = 'calc(' + p * 100 + '% - 1px)';
    $('mark-y').style.left = 'calc(' + y * 100 + '% - 1px)';
    $('mark-p-label').textContent = 'p = ' + fmt(p);
    $('mark-y-label').textContent = 'y = ' + y;
    if (D.loss_name === 'bce') {
      $('loss-def').textContent = 'bce (log loss): L = −[y·log p + (1−y)·log(1−p)]';
      $('loss-value').textContent = (y === 1 ? 'y = 1: L = −log p = −log ' + fmt(p)
        : 'y = 0: L = −log(1 − p) = −log ' + fmt(1 - p)) + ' = ' + fmt(D.loss);
    } else {
      $('loss-def').textContent = 'mse (squared error): L = (p − y)²';
      $('loss-value').textContent = 'L = (' + fmt(p) + ' − ' + y + ')² = ' + fmt(D.loss);
    }
  }
  // ---- step 4: backward, output first
  {
    const dOut = D.errors[out - 1][0];
    $('delta-out').textContent = (D.loss_name === 'bce' ? 'p − y' : '2(p − y)·p(1 − p)') + ' = ' + fmt(dOut);
    const mg = maxAbs(D.grad_norms);
    for (let l = out; l >= 1; l--) {
      row($('backward'), [D.layer_names[l], fmt(norm(D.errors[l - 1])), fmt(D.grad_norms[l - 1]),
        bar(D.grad_norms[l - 1] / mg)]);
    }
  }
  // ---- step 5: update
  $('lr').textContent = 'η = ' + fmt(D.lr) + ' (learning rate, ' + D.optimizer + ')';
  {
    const rel = D.update_norms.map((u, l) => (D.weight_norms[l] > 0 ? u / D.weight_norms[l] : 0));
    const mr = maxAbs(rel);
    rel.forEach((r, l) => row($('update'), ['W' + (l + 1) + ': ' + D.layer_names[l] + ' → ' + D.layer_names[l + 1],
      fmt(D.weight_norms[l]), fmt(D.update_norms[l]), fmt(r), bar(r / mr)]));
    $('update-note').textContent = 'These are plain gradient steps η·dL/dW from this one student. In training, ' +
      D.optimizer + ' uses the gradient averaged over a mini-batch, and adaptive optimisers (Adam, AdamW) also ' +
      'rescale each parameter\'s step, so the real change differs.';
  }

  // ---- controls
  const panels = [...document.querySelectorAll('[data-panel]')];
  const stepButtons = [...document.querySelectorAll('[data-goto]')];
  let step = 1;
  function show(n) {
    step = Math.max(1, Math.min(5, n));
    lab.dataset.step = String(step);
    $('step-title').textContent = TITLES[step - 1];
    panels.forEach(p => { p.hidden = p.dataset.panel !== String(step); });
    stepButtons.forEach(b => {
      const on = b.dataset.goto === String(step);
      b.setAttribute('aria-pressed', String(on));
      if (on) b.setAttribute('aria-current', 'step'); else b.removeAttribute('aria-current');
    });
    $('prev').disabled = step === 1;
    $('next').disabled = step === 5;
  }
  $('prev').addEventListener('click', () => show(step - 1));
  $('next').addEventListener('click', () => show(step + 1));
  stepButtons.forEach(b => b.addEventListener('click', () => show(Number(b.dataset.goto))));
  document.addEventListener('keydown', e => {
    if (e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
    if (e.key === 'ArrowRight') show(step + 1);
    else if (e.key === 'ArrowLeft') show(step - 1);
    else return;
    e.preventDefault();
  });
  // All motion is CSS, switched off by the stylesheet under reduced motion; no script loop runs.
  const reduce = matchMedia('(prefers-reduced-motion: reduce)');
  const motion = () => { lab.dataset.motion = reduce.matches ? 'reduce' : 'full'; };
  reduce.addEventListener('change', motion);
  motion();
  show(1);
})();
</script>
</body>
</html>
"""
