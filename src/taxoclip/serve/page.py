"""The web page ``taxoclip serve`` offers people, and a plain page of the API.

Plain HTML, CSS and JavaScript, served by the app itself (``/``, ``/static/style.css``,
``/static/app.js``): no fonts, scripts or styles from another host, and the app's
Content-Security-Policy forbids them. Thumbnails are the browser's own object URLs of
the picked files; nothing is uploaded until "Identify" is pressed.
"""

from __future__ import annotations

import html
from typing import Any

INDEX_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>taxoclip — name the organisms in your photos</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/style.css">
<script src="/static/app.js" defer></script>
</head>
<body>
<header>
  <h1>taxoclip</h1>
  <p id="model-info" class="muted" aria-live="polite">loading model information…</p>
</header>
<main>
<form id="ask" novalidate>
  <div id="drop" class="drop" tabindex="0" role="button"
       aria-describedby="drop-help" aria-label="Drop photos here, or press to choose photos">
    <p><strong>Drop photos here</strong> or <label for="files" class="pick">choose photos</label></p>
    <p id="drop-help" class="muted">JPEG, PNG, WebP, GIF, BMP or TIFF; up to
      <span id="limit-files">32</span> at a time, <span id="limit-size">20 MB</span> each.</p>
    <input id="files" name="files" type="file" accept="image/*" multiple>
  </div>

  <fieldset>
    <legend>What to predict</legend>
    <div class="choice">
      <input type="radio" id="mode-tree" name="mode" value="tree" checked>
      <label for="mode-tree">Tree of life, at rank</label>
      <label for="rank" class="visually-hidden">Rank</label>
      <select id="rank" name="rank">
        <option>kingdom</option><option>phylum</option><option>class</option>
        <option>order</option><option>family</option><option>genus</option>
        <option selected>species</option>
      </select>
    </div>
    <div class="choice">
      <input type="radio" id="mode-labels" name="mode" value="labels">
      <label for="mode-labels">Custom labels</label>
      <label for="cls" class="visually-hidden">Custom labels, comma-separated</label>
      <input id="cls" name="cls" type="text" placeholder="e.g. a cat, a dog, a bird"
             aria-describedby="cls-help">
      <span id="cls-help" class="muted">comma-separated</span>
    </div>
    <div class="choice">
      <label for="k">Top</label>
      <input id="k" name="k" type="number" min="1" max="100" value="5">
      <span class="muted">predictions per photo</span>
    </div>
    <details>
      <summary>Restrict to some taxa</summary>
      <label for="subset">CSV: the first line names a rank, then one name per line</label>
      <textarea id="subset" name="subset" rows="4"
                placeholder="genus&#10;Panthera&#10;Felis"></textarea>
    </details>
  </fieldset>

  <div class="actions">
    <button id="go" type="submit">Identify</button>
    <button id="clear" type="button" class="secondary">Clear</button>
    <span id="status" role="status" aria-live="polite"></span>
  </div>
</form>

<section aria-labelledby="results-title">
  <h2 id="results-title" class="visually-hidden">Results</h2>
  <div id="results" aria-live="polite"></div>
</section>
</main>
<footer class="muted">
  The same rows as <code>taxoclip predict --format json</code>; JSON API:
  <a href="/docs">/docs</a> · <a href="/openapi.json">/openapi.json</a> ·
  <a href="/healthz">/healthz</a>
</footer>
</body>
</html>
"""

STYLE_CSS = """
:root { --fg: #1d2433; --muted: #5b6474; --line: #d5dae3; --accent: #1f6f4a;
  --accent-soft: #e3f1ea; --bad: #a3261b; --bad-soft: #fbe9e7; --bg: #fafbfc; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 78rem; padding: 1rem 1.5rem 3rem; color: var(--fg);
  background: var(--bg); font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto,
  "Helvetica Neue", Arial, sans-serif; }
header { display: flex; align-items: baseline; gap: 1rem; flex-wrap: wrap;
  border-bottom: 1px solid var(--line); margin-bottom: 1rem; }
h1 { margin: .4rem 0; font-size: 1.6rem; color: var(--accent); }
.muted { color: var(--muted); font-size: .9rem; }
.visually-hidden { position: absolute !important; width: 1px; height: 1px; overflow: hidden;
  clip: rect(0 0 0 0); white-space: nowrap; }
.drop { border: 2px dashed var(--line); border-radius: .75rem; padding: 1.25rem;
  text-align: center; background: #fff; cursor: pointer; }
.drop.over, .drop:focus-visible { border-color: var(--accent); background: var(--accent-soft);
  outline: none; }
.drop p { margin: .3rem 0; }
.pick { color: var(--accent); text-decoration: underline; cursor: pointer; }
#files { position: absolute; width: 1px; height: 1px; opacity: 0; }
fieldset { border: 1px solid var(--line); border-radius: .75rem; margin: 1rem 0;
  padding: .5rem 1rem 1rem; background: #fff; }
legend { font-weight: 600; padding: 0 .3rem; }
.choice { display: flex; align-items: center; gap: .5rem; margin: .5rem 0; flex-wrap: wrap; }
select, input[type=text], input[type=number], textarea { font: inherit; padding: .3rem .45rem;
  border: 1px solid var(--line); border-radius: .4rem; }
input[type=text] { min-width: 20rem; }
input[type=number] { width: 5rem; }
textarea { width: 100%; display: block; margin-top: .3rem; }
details { margin-top: .5rem; }
.actions { display: flex; gap: .75rem; align-items: center; }
button { font: inherit; padding: .5rem 1.3rem; border-radius: .5rem; border: 0;
  background: var(--accent); color: #fff; cursor: pointer; }
button.secondary { background: #e8ebf0; color: var(--fg); }
button:disabled { opacity: .6; cursor: progress; }
.file-result { display: grid; grid-template-columns: 7rem minmax(0, 1fr); gap: 1rem; background: #fff;
  border: 1px solid var(--line); border-radius: .75rem; padding: .75rem; margin: .75rem 0; }
.file-result img, .no-preview { width: 7rem; height: 7rem; object-fit: cover;
  border-radius: .5rem; background: #eef0f3; }
.no-preview { display: flex; align-items: center; justify-content: center; text-align: center;
  font-size: .8rem; color: var(--muted); }
.file-result > .body { min-width: 0; overflow-x: auto; }
.file-result h3 { margin: 0 0 .4rem; font-size: 1rem; word-break: break-all; }
.file-result.failed { border-color: var(--bad); background: var(--bad-soft); }
.error { color: var(--bad); font-weight: 600; margin: .25rem 0; }
.pending { color: var(--muted); }
table { border-collapse: collapse; width: 100%; font-size: .85rem; }
th, td { text-align: left; padding: .25rem .4rem; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { font-weight: 600; color: var(--muted); text-transform: capitalize; white-space: nowrap; }
td.species, td.classification { font-style: italic; font-weight: 600; }
td.score { white-space: nowrap; }
.track { display: inline-block; width: 4rem; height: .55rem; background: #e8ebf0;
  border-radius: .3rem; margin-right: .4rem; vertical-align: middle; overflow: hidden; }
.bar { display: block; height: 100%; background: var(--accent); }
tr.top td { background: var(--accent-soft); }
"""

APP_JS = r"""
"use strict";
const $ = (id) => document.getElementById(id);
const CONCURRENT = 4;  // requests in flight at once; the server batches them together
let picked = [];
let urls = [];

function setStatus(text) { $("status").textContent = text; }

async function loadInfo() {
  try {
    const info = await (await fetch("/healthz")).json();
    $("model-info").textContent = `model ${info.model} · ${info.index_size} taxa · ` +
      `runtime ${info.runtime}`;
    $("limit-files").textContent = info.limits.max_files;
    $("limit-size").textContent = (info.limits.max_upload_bytes / 1e6).toFixed(0) + " MB";
  } catch (err) {
    $("model-info").textContent = "server not answering /healthz";
  }
}

function pick(files) {
  picked = Array.from(files).filter((f) => f.size >= 0);
  setStatus(picked.length ? `${picked.length} photo(s) ready — press Identify` : "");
  showPending();
}

function clearAll() {
  urls.forEach((u) => URL.revokeObjectURL(u));
  urls = []; picked = []; $("files").value = ""; $("results").replaceChildren();
  setStatus("");
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function showPending() {
  urls.forEach((u) => URL.revokeObjectURL(u));
  urls = [];
  const results = $("results");
  results.replaceChildren();
  picked.forEach((file, i) => {
    const url = URL.createObjectURL(file);
    urls.push(url);
    const thumb = el("img", { src: url, alt: `photo ${file.name}` });
    thumb.addEventListener("error", () =>
      thumb.replaceWith(el("div", { class: "no-preview" }, "no preview")));
    const card = el("article", { class: "file-result", id: `result-${i}`,
                                 "aria-label": `results for ${file.name}` },
      thumb,
      el("div", { class: "body" }, el("h3", {}, file.name),
         el("p", { class: "pending" }, "waiting…")));
    results.append(card);
  });
}

const LABELS = { species_epithet: "epithet", common_name: "common name" };

function render(i, file, rows) {
  const card = $(`result-${i}`);
  const body = card.querySelector(".body");
  const failed = rows.length === 1 && rows[0].error !== undefined;
  card.classList.toggle("failed", failed);
  card.dataset.state = failed ? "error" : "done";
  const title = el("h3", {}, file.name);
  if (failed) {
    body.replaceChildren(title, el("p", { class: "error", role: "alert" },
                                   `Could not read this file: ${rows[0].error}`));
    return;
  }
  if (!rows.length) { body.replaceChildren(title, el("p", {}, "no prediction")); return; }
  const columns = Object.keys(rows[0]).filter((c) => c !== "file_name" && c !== "error");
  const head = el("tr", {}, ...columns.map((c) =>
    el("th", { scope: "col", "data-col": c }, LABELS[c] || c)));
  const table = el("table", { class: "rows" },
    el("caption", { class: "visually-hidden" }, `top ${rows.length} for ${file.name}`),
    el("thead", {}, head), el("tbody"));
  rows.forEach((row, r) => {
    const tr = el("tr", { class: r === 0 ? "result-row top" : "result-row" });
    for (const c of columns) {
      if (c === "score") {
        const pct = (100 * row.score);
        const bar = el("span", { class: "bar" });
        bar.style.width = `${Math.max(1, pct).toFixed(1)}%`;
        tr.append(el("td", { class: "score", "data-col": c },
          el("span", { class: "track", "aria-hidden": "true" }, bar),
          `${pct.toFixed(pct < 1 ? 2 : 1)} %`));
      } else {
        tr.append(el("td", { class: c, "data-col": c }, String(row[c] ?? "")));
      }
    }
    table.tBodies[0].append(tr);
  });
  body.replaceChildren(title, table);
}

function renderFailure(i, file, message) {
  render(i, file, [{ file_name: file.name, error: message }]);
}

async function identify(event) {
  event.preventDefault();
  if (!picked.length) { setStatus("choose or drop some photos first"); $("files").focus(); return; }
  showPending();
  const mode = document.querySelector("input[name=mode]:checked").value;
  const fields = new FormData();
  if (mode === "labels") {
    if (!$("cls").value.trim()) { setStatus("type some labels, comma-separated"); return; }
    fields.append("cls", $("cls").value);
  } else {
    fields.append("rank", $("rank").value);
    if ($("subset").value.trim()) fields.append("subset", $("subset").value);
  }
  if ($("k").value) fields.append("k", $("k").value);
  $("go").disabled = true;
  let done = 0;
  const queue = picked.map((file, i) => [file, i]);
  async function worker() {
    while (queue.length) {
      const [file, i] = queue.shift();
      const form = new FormData();
      for (const [k, v] of fields.entries()) form.append(k, v);
      form.append("files", file, file.name);
      try {
        const response = await fetch("/predict", { method: "POST", body: form });
        const answer = await response.json().catch(() => ({ detail: response.statusText }));
        if (response.ok) render(i, file, answer);
        else renderFailure(i, file, `${response.status}: ${answer.detail}`);
      } catch (err) {
        renderFailure(i, file, `no answer from the server (${err})`);
      }
      done += 1;
      setStatus(`${done} of ${picked.length} done`);
    }
  }
  await Promise.all(Array.from({ length: CONCURRENT }, worker));
  $("go").disabled = false;
}

document.addEventListener("DOMContentLoaded", () => {
  loadInfo();
  const drop = $("drop");
  $("files").addEventListener("change", (e) => pick(e.target.files));
  drop.addEventListener("click", (e) => {
    if (e.target.tagName !== "LABEL" && e.target.tagName !== "INPUT") $("files").click();
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("files").click(); }
  });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => pick(e.dataTransfer.files));
  $("cls").addEventListener("input", () => { $("mode-labels").checked = true; });
  $("rank").addEventListener("change", () => { $("mode-tree").checked = true; });
  $("ask").addEventListener("submit", identify);
  $("clear").addEventListener("click", clearAll);
});
"""


def api_page(schema: dict[str, Any]) -> str:
    """A plain HTML page of the API from its OpenAPI schema (FastAPI's own /docs page
    loads Swagger UI from a CDN, which a page we serve must not)."""
    esc = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(schema['info']['title'])} API</title>",
        "<link rel='stylesheet' href='/static/style.css'></head><body><main>",
        f"<h1>{esc(schema['info']['title'])} <span class='muted'>"
        f"{esc(schema['info']['version'])}</span></h1>",
        f"<p>{esc(schema['info'].get('description', ''))}</p>",
        "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>. "
        "Back to <a href='/'>the page</a>.</p>",
    ]
    for path, methods in schema.get("paths", {}).items():
        for method, spec in methods.items():
            parts.append(f"<h2><code>{esc(method.upper())} {esc(path)}</code></h2>")
            parts.append(f"<p>{esc(spec.get('summary', ''))}</p>")
            body = spec.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                props = content.get("schema", {}).get("properties", {})
                if props:
                    parts.append(
                        f"<p class='muted'>{esc(media)} fields:</p><table><thead><tr>"
                        "<th>field</th><th>type</th><th>meaning</th></tr></thead><tbody>"
                    )
                    for name, prop in props.items():
                        parts.append(
                            f"<tr><td><code>{esc(name)}</code></td>"
                            f"<td>{esc(str(prop.get('type', '')))}</td>"
                            f"<td>{esc(str(prop.get('description', '')))}</td></tr>"
                        )
                    parts.append("</tbody></table>")
            responses = spec.get("responses", {})
            if responses:
                parts.append("<ul>")
                for code, answer in responses.items():
                    parts.append(
                        f"<li><code>{esc(code)}</code> {esc(answer.get('description', ''))}</li>"
                    )
                parts.append("</ul>")
    parts.append("</main></body></html>")
    return "".join(parts)
