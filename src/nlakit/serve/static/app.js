// nlakit viewer: plain JavaScript, no build step, nothing fetched but this server's own API.
"use strict";

const $ = (id) => document.getElementById(id);
const S = { models: [], text: "", tokens: [], sel: null, explained: new Set(), heat: null, lastResults: {}, tokSeq: 0 };

async function api(path, body) {
  const res = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({ detail: res.statusText }));
  if (!res.ok) throw new Error(typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail));
  return data;
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

const fmt = (x) => (x === null || x === undefined ? "—" : x.toFixed(3));

// A signed bar in [-1, 1] with the zero line in the middle.
function bar(v, color) {
  const b = el("div", { class: "bar", title: fmt(v) }, el("div", { class: "zero" }));
  if (v === null || v === undefined) return b;
  const c = Math.max(-1, Math.min(1, v));
  const x = (c + 1) * 50;
  b.append(el("div", {
    class: "fill",
    style: `left:${Math.min(x, 50)}%;width:${Math.abs(x - 50)}%;background:${v >= 0 ? color : "#e03131"}`,
  }));
  return b;
}

// ---- models and text ----------------------------------------------------------------------------------
async function init() {
  try {
    const info = await api("/api/info");
    S.models = info.models;
    $("models").textContent = info.models.map((m) => `${m.name}: ${m.label} — layer ${m.layer} of ${m.target}`).join("  ·  ");
    if (info.models.length > 1) { $("compare-wrap").hidden = false; $("compare").checked = true; }
  } catch (e) { $("models").textContent = "server unreachable: " + e.message; }
}

function parseChat(raw) {
  const msgs = [];
  for (const line of raw.split("\n")) {
    const m = line.match(/^\s*(system|user|assistant)\s*:\s?(.*)$/i);
    if (m) msgs.push({ role: m[1].toLowerCase(), content: m[2] });
    else if (msgs.length) msgs[msgs.length - 1].content += "\n" + line;
    else if (line.trim()) msgs.push({ role: "user", content: line });
  }
  return msgs;
}

async function showTokens() {
  $("input-err").textContent = "";
  const raw = $("text").value;
  const body = $("chat").checked ? { messages: parseChat(raw) } : { text: raw };
  const seq = ++S.tokSeq;
  try {
    const r = await api("/api/tokenize", body);
    if (seq !== S.tokSeq) return; // a later "Show tokens" won
    S.text = r.text; S.tokens = r.tokens; S.sel = null; S.explained = new Set(); S.heat = null; S.lastResults = {};
    $("panels").replaceChildren();
    $("export").disabled = true;
    $("tokens-card").hidden = false;
    drawChips();
  } catch (e) { $("input-err").textContent = e.message; }
}

function drawChips() {
  const chips = S.tokens.map((t) => {
    const c = el("span", { class: "tok" + (t.sink ? " sink" : ""), "data-i": String(t.i), title: `token ${t.i}` });
    c.textContent = t.text;
    if (!t.sink) c.addEventListener("click", () => explainToken(t.i));
    return c;
  });
  $("chips").replaceChildren(...chips);
  recolor();
}

function chip(i) { return $("chips").querySelector(`.tok[data-i="${i}"]`); }

// ---- colouring ------------------------------------------------------------------------------------------
function recolor() {
  const mode = $("color").value;
  const kw = $("keyword").value.trim().toLowerCase();
  const byPos = {};
  if (S.heat) for (const r of S.heat.rows) byPos[r.pos] = r;
  for (const [pos, r] of Object.entries(S.lastResults)) byPos[pos] = byPos[pos] || r;
  let legend = "";
  for (const t of S.tokens) {
    const c = chip(t.i); if (!c) continue;
    const r = byPos[t.i];
    c.style.background = "";
    c.classList.toggle("done", S.explained.has(t.i));
    if (!r || mode === "none") continue;
    if (mode === "fve") {
      const f = Math.max(-1, Math.min(1, r.fve_nrm));
      c.style.background = f >= 0 ? `rgba(47,158,68,${0.1 + 0.65 * f})` : `rgba(224,49,49,${0.1 - 0.5 * f})`;
      legend = "green: high fve_nrm, red: below 0";
    } else if (mode === "keyword" && kw) {
      if ((r.explanation || "").toLowerCase().includes(kw)) c.style.background = "rgba(247,103,7,.55)";
      legend = `orange: the explanation mentions “${kw}”`;
    } else if (mode === "drift" && r.drift !== undefined && r.drift !== null) {
      c.style.background = `rgba(112,72,232,${0.05 + 0.7 * Math.min(1, r.drift)})`;
      legend = "purple: the explanation's meaning moved from the previous token's (1 − cos of their reconstructions)";
    }
  }
  $("legend").textContent = legend || (mode !== "none" && !S.heat ? "run the heatmap (or click tokens) to colour them" : "");
}

// ---- one token ------------------------------------------------------------------------------------------
function selectedModels() {
  return $("compare").checked && S.models.length > 1 ? S.models.map((m) => m.name) : [S.models[0].name];
}

async function explainToken(i) {
  S.sel = i;
  document.querySelectorAll(".tok.sel").forEach((c) => c.classList.remove("sel"));
  document.querySelectorAll(".tok.qhit-found,.tok.qhit-approx").forEach((c) => c.classList.remove("qhit-found", "qhit-approx"));
  chip(i).classList.add("sel");
  const names = selectedModels();
  const panels = names.map((n) => panelShell(n, i));
  $("panels").replaceChildren(...panels.map((p) => p.root));
  try {
    const r = names.length > 1 ? (await api("/api/compare", { text: S.text, pos: i, models: names })).panels
                               : [await api("/api/explain", { text: S.text, pos: i, model: names[0] })];
    if (S.sel !== i) return; // a later click won
    r.forEach((res, k) => fillPanel(panels[k], res));
    S.explained.add(i);
    S.lastResults[i] = r[0];
    $("export").disabled = false;
    markQuoteSpans(r[0]);
    recolor();
  } catch (e) {
    panels.forEach((p) => { p.status.className = "status err"; p.status.textContent = e.message; });
  }
}

function panelShell(name, i) {
  const m = S.models.find((x) => x.name === name);
  const status = el("div", { class: "status working", text: "working… (the AV is writing, the AR rebuilding)" });
  const body = el("div", { class: "body" });
  const root = el("div", { class: "panel", "data-model": name },
    el("h2", { text: `${m.label}` }),
    el("div", { class: "meta", text: `token ${i} ${JSON.stringify(S.tokens[i].text)} · layer ${m.layer} of ${m.target}` }),
    status, body);
  return { root, status, body };
}

function explanationWithQuotes(text, quotes) {
  const box = el("div", { class: "expl" });
  let at = 0;
  const marks = { found: "✓", approx: "≈", missing: "✗" };
  const words = { found: "found verbatim in the text", approx: "found approximately", missing: "not in the text (made up)" };
  for (const q of quotes) {
    if (q.start < at) continue;
    box.append(text.slice(at, q.start));
    box.append(el("span", { class: `q ${q.status}`, title: `${words[q.status]} (ratio ${q.ratio})`, text: text.slice(q.start, q.end) }));
    box.append(el("span", { class: `q-mark ${q.status}`, title: words[q.status], text: marks[q.status] }));
    at = q.end;
  }
  box.append(text.slice(at) || (text ? "" : "(empty)"));
  return box;
}

function scoreTable(res) {
  const t = el("table", { class: "scores" },
    el("tr", {}, el("th", { text: "predictor" }), el("th", { text: "fve_nrm" }), el("th", { class: "num" }),
       el("th", { text: "cosine" }), el("th", { class: "num" })));
  const add = (name, s, color, cls) => t.append(el("tr", { class: "bar-row " + (cls || ""), "data-name": name },
    el("td", { text: name }), el("td", {}, bar(s.fve_nrm, color)), el("td", { class: "num", text: fmt(s.fve_nrm) }),
    el("td", {}, bar(s.cos, color)), el("td", { class: "num", text: fmt(s.cos) })));
  add("NLA (this explanation)", res, "#3b5bdb", "nla");
  for (const [name, b] of Object.entries(res.baselines)) add(name, b, "#f59f00");
  return t;
}

function linesTable(res) {
  const wrap = el("div", { class: "lines" });
  if (!res.lines.length) return wrap;
  const sortBtn = el("button", { class: "sort", text: "sort by Δ" });
  const table = el("table", {});
  let sorted = false;
  const draw = () => {
    const rows = sorted ? [...res.lines].sort((a, b) => b.delta - a.delta) : res.lines;
    table.replaceChildren(el("tr", {}, el("th", { text: "line" }), el("th", { text: "Δfve_nrm when removed" }), el("th", { class: "num" })),
      ...rows.map((l) => el("tr", { class: "line-row" }, el("td", { text: l.line }), el("td", {}, bar(l.delta, "#5c7cfa")),
                                el("td", { class: "num", text: fmt(l.delta) }))));
    sortBtn.textContent = sorted ? "original order" : "sort by Δ";
  };
  sortBtn.addEventListener("click", () => { sorted = !sorted; draw(); });
  wrap.append(el("h3", {}, "Line salience", sortBtn));
  wrap.append(table);
  draw();
  return wrap;
}

function fillPanel(p, res) {
  p.status.className = "status";
  p.status.textContent = res.ok ? "" : "the explanation did not parse (no <explanation> pair): the raw output is shown";
  p.body.replaceChildren(explanationWithQuotes(res.explanation, res.quotes), scoreTable(res), linesTable(res));
  if (res.skipped_baselines.length) p.body.append(el("p", { class: "muted", text: "not available for this NLA: " + res.skipped_baselines.join(", ") }));
}

function markQuoteSpans(res) {
  for (const q of res.quotes) {
    if (!q.span || q.status === "missing") continue;
    for (const t of S.tokens) if (t.start < q.span[1] && t.end > q.span[0]) chip(t.i)?.classList.add("qhit-" + q.status);
  }
}

// ---- heatmap --------------------------------------------------------------------------------------------
async function runHeatmap() {
  const btn = $("heatmap"), prog = $("hm-progress");
  btn.disabled = true; prog.hidden = false; prog.value = 0; $("hm-status").textContent = "queued…";
  try {
    const { job } = await api("/api/heatmap", { text: S.text, model: S.models[0].name });
    for (;;) {
      await new Promise((r) => setTimeout(r, 400));
      const j = await api(`/api/jobs/${job}`);
      if (j.total) { prog.max = j.total; prog.value = j.done; $("hm-status").textContent = `${j.done} / ${j.total} tokens`; }
      if (j.state === "error") throw new Error(j.error);
      if (j.state === "done") {
        S.heat = j.result;
        $("hm-status").textContent = `${j.result.rows.length} tokens, mean fve_nrm ${fmt(j.result.aggregate.fve_nrm)}`;
        if ($("color").value === "none") $("color").value = "fve";
        recolor();
        break;
      }
    }
  } catch (e) { $("hm-status").textContent = e.message; }
  btn.disabled = false; prog.hidden = true;
}

// ---- export ---------------------------------------------------------------------------------------------
async function exportJson() {
  const positions = S.explained.size ? [...S.explained] : (S.heat ? S.heat.rows.map((r) => r.pos) : []);
  try {
    const r = await api("/api/export", { text: S.text, positions, model: S.models[0].name });
    const url = URL.createObjectURL(new Blob([JSON.stringify(r, null, 2)], { type: "application/json" }));
    const a = el("a", { href: url, download: "nlakit-explain.json" });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  } catch (e) { $("hm-status").textContent = "export failed: " + e.message; }
}

$("go").addEventListener("click", showTokens);
$("heatmap").addEventListener("click", runHeatmap);
$("export").addEventListener("click", exportJson);
$("color").addEventListener("change", recolor);
$("keyword").addEventListener("input", () => { if ($("keyword").value) $("color").value = "keyword"; recolor(); });
init().then(showTokens);
