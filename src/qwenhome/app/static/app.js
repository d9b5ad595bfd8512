// qwenhome web page: chat (streamed), models in the home (what is served,
// switching it), pulls with live progress, the doctor. Plain JS, no build
// step. Extensions (e.g. images) are scripts listed by /api/info; they get
// window.qwenhome to add a panel.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { model: null, history: [], abort: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function humanSize(n) {
  if (n == null) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

class ApiProblem extends Error {
  // An error the API answered with: {code, message, hint, doctor?}.
  constructor(e, status) {
    super(`${e.code || status}: ${e.message || "request failed"}${e.hint ? ` (${e.hint})` : ""}`);
    this.code = e.code || String(status);
    this.text = e.message || "request failed";
    this.hint = e.hint || "";
    this.doctor = e.doctor || null;
  }
}

async function api(path, options = {}) {
  const resp = await fetch(path, options);
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new ApiProblem(body.error || { message: resp.statusText }, resp.status);
  return body;
}

// An error shown in place: its code, what happened, the hint, and for a
// network failure the doctor's verdict with its fix.
function problem(e) {
  const p = e instanceof ApiProblem ? e : new ApiProblem({ code: e.code, message: e.message || String(e), hint: e.hint, doctor: e.doctor }, "error");
  const node = el("div", { class: "problem", role: "alert", "data-code": p.code },
    el("span", { class: "badge error" }, p.code), " ", el("span", { class: "what" }, p.text));
  const d = p.doctor;
  if (p.hint && !(d && d.fix === p.hint)) node.append(el("div", { class: "hint" }, p.hint));
  if (d) {
    node.append(el("div", { class: `verdict st-${d.status}` },
      el("strong", {}, "Doctor: "), d.summary, d.code ? ` [${d.code}]` : "", d.fix ? el("div", { class: "fix" }, `Fix: ${d.fix}`) : ""));
  }
  return node;
}

function showIn(target, content) {
  target.replaceChildren(content instanceof Node ? content : document.createTextNode(String(content)));
}

// -- status -----------------------------------------------------------------------
async function refreshInfo() {
  try {
    const info = await api("/api/info");
    state.model = info.model;
    $("#model-name").textContent = info.model + (info.note ? ` (${info.note})` : "");
    $("#home-path").textContent = info.home;
    const badge = $("#model-status");
    badge.textContent = info.status;
    badge.className = `badge ${info.status}`;
    badge.title = info.status === "ready" ? "" : Object.values(info.engines || {})
      .map((e) => `${e.kind} ${e.model}: ${e.state}${e.last_exit ? ` (last exit: ${e.last_exit})` : ""}${e.error ? ` — ${e.error.message}` : ""}`).join("\n");
    if (info.status === "loading" || info.status === "restarting") setTimeout(refreshInfo, 1000);
    return info;
  } catch (err) {
    $("#model-status").textContent = "unreachable";
    $("#model-status").className = "badge error";
    setTimeout(refreshInfo, 2000);
    return null;
  }
}

// -- chat -------------------------------------------------------------------------
function addMessage(role, text) {
  const body = el("span", { class: "text" }, text);
  const node = el("div", { class: `msg ${role}` }, el("span", { class: "who" }, role), body);
  $("#chat-log").append(node);
  node.scrollIntoView({ block: "end" });
  return body;
}

async function* sseData(resp) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data) yield data;
    }
  }
}

async function sendChat(text) {
  state.history.push({ role: "user", content: text });
  addMessage("user", text);
  const out = addMessage("assistant", "");
  out.parentElement.setAttribute("aria-busy", "true");
  $("#chat-send").disabled = true;
  $("#chat-stop").disabled = false;
  state.abort = new AbortController();
  const started = performance.now();
  let first = null, pieces = 0, reply = "";
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: state.model, messages: state.history, stream: true }),
      signal: state.abort.signal,
    });
    if (!resp.ok) {
      const e = (await resp.json().catch(() => ({}))).error || {};
      throw new Error(`${e.code || resp.status}: ${e.message || resp.statusText}`);
    }
    for await (const data of sseData(resp)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(`${chunk.error.code}: ${chunk.error.message}`);
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) {
        if (first === null) first = performance.now();
        pieces++;
        out.parentElement.dataset.pieces = String(pieces);
        reply += delta.content;
        out.textContent = reply;
        out.parentElement.scrollIntoView({ block: "end" });
      }
    }
    state.history.push({ role: "assistant", content: reply });
    const secs = (performance.now() - started) / 1000;
    $("#chat-stats").textContent = first === null ? "" :
      `first token ${((first - started) / 1000).toFixed(2)} s · ${pieces} pieces in ${secs.toFixed(1)} s`;
  } catch (err) {
    if (err.name === "AbortError") {
      state.history.push({ role: "assistant", content: reply });
    } else {
      state.history.pop();
      out.parentElement.className = "msg error";
      out.textContent = String(err.message || err);
    }
  } finally {
    out.parentElement.removeAttribute("aria-busy");
    out.parentElement.dataset.done = "true";
    $("#chat-send").disabled = false;
    $("#chat-stop").disabled = true;
    state.abort = null;
  }
}

function setupChat() {
  const input = $("#chat-input");
  $("#chat-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text || state.abort) return;
    input.value = "";
    sendChat(text);
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("#chat-form").requestSubmit(); }
  });
  $("#chat-stop").addEventListener("click", () => state.abort && state.abort.abort());
  $("#chat-clear").addEventListener("click", () => { state.history = []; $("#chat-log").replaceChildren(); });
}

// -- models -----------------------------------------------------------------------
async function refreshModels() {
  let doc;
  try { doc = await api("/api/models"); } catch (err) { $("#models-message").textContent = err.message; return; }
  const rows = doc.models.map((m) => {
    const actions = el("td");
    if (m.kind && m.serving === "available") {
      actions.append(el("button", { type: "button", onclick: () => serveModel(m.kind, m.repo) }, "Serve"), " ");
    }
    actions.append(el("button", { type: "button", class: "secondary", onclick: () => verifyModel(m.repo) }, "Verify"));
    if (!m.served) actions.append(" ", el("button", { type: "button", class: "secondary", onclick: () => removeModel(m.repo) }, "Remove"));
    const serving = { served: ["ready", "served"], loading: ["loading", "loading"], failed: ["error", "failed"] }[m.serving]
      || (m.served ? ["ready", "served"] : null);
    return el("tr", { "data-repo": m.repo, "data-kind": m.kind || "", "data-serving": m.serving || "" },
      el("td", {}, m.repo, m.kind ? el("span", { class: "kind muted" }, m.kind) : "",
        serving ? el("span", { class: `badge ${serving[0]}` }, serving[1]) : "",
        m.note ? el("div", { class: "muted" }, m.note) : ""),
      el("td", {}, humanSize(m.size)),
      el("td", { class: `st-${m.state}` }, m.state),
      actions);
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "4", class: "muted" }, "The home is empty.")));
  $("#models-table tbody").replaceChildren(...rows);
  return doc;
}

// Serve another model of the home: it loads in a new worker, the old one is released.
async function serveModel(kind, repo) {
  const msg = $("#models-message");
  showIn(msg, `Loading ${repo} as the ${kind} model…`);
  try {
    await api("/api/served", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ [kind]: repo }) });
  } catch (err) { showIn(msg, problem(err)); return; }
  await refreshModels();
  for (;;) {
    const served = await api("/api/served").catch(() => null);
    const engine = served && served.served[kind];
    if (!engine || engine.model !== repo) break;
    if (engine.state === "ready") { showIn(msg, `${repo} is served.`); break; }
    if (engine.state === "failed") { showIn(msg, problem(engine.error || { code: "engine-load-failed", message: `${repo} failed to load` })); break; }
    await new Promise((r) => setTimeout(r, 500));
  }
  refreshInfo();
  refreshModels();
}

async function verifyModel(repo) {
  $("#models-message").textContent = `Verifying ${repo}…`;
  try {
    const r = await api(`/api/models/${repo}/verify`, { method: "POST" });
    $("#models-message").textContent = r.ok ? `${repo}: every file matches its hash.` : `${repo}: problems found: ${JSON.stringify(r.problems || r)}`;
  } catch (err) { showIn($("#models-message"), problem(err)); }
}

async function removeModel(repo) {
  if (!confirm(`Remove ${repo} from the home?`)) return;
  try {
    await api(`/api/models/${repo}`, { method: "DELETE" });
    $("#models-message").textContent = `${repo} removed.`;
  } catch (err) { showIn($("#models-message"), problem(err)); }
  refreshModels();
}

function followPull(id) {
  const bar = $("#pull-progress"), text = $("#pull-text");
  $("#pull-status").hidden = false;
  bar.hidden = false;
  bar.removeAttribute("value");  // indeterminate until the size is known
  const source = new EventSource(`/api/pulls/${id}/events`);
  source.onmessage = (msg) => {
    const e = JSON.parse(msg.data);
    if (e.event === "start" || e.event === "progress") {
      if (e.total) { bar.max = e.total; bar.value = e.done || 0; }
      const speed = e.speed ? ` at ${humanSize(e.speed)}/s` : "";
      text.textContent = `${e.repo}: ${humanSize(e.done || 0)} of ${humanSize(e.total || 0)}${speed}`;
    } else if (e.event === "result") {
      bar.max = 1; bar.value = 1;
      text.textContent = `${e.repo}: done (${humanSize(e.downloaded_bytes)} downloaded, ${humanSize(e.cached_bytes)} already here)`;
      source.close(); $("#pull-button").disabled = false; refreshModels();
    } else if (e.event === "error") {
      bar.removeAttribute("value"); bar.hidden = true;
      showIn(text, problem(new ApiProblem(e.error, "error")));
      source.close(); $("#pull-button").disabled = false; refreshModels();
    } else if (e.message) {
      text.textContent = `${e.repo}: ${e.message}`;
    }
  };
}

function setupModels() {
  $("#pull-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const repo = $("#pull-repo").value.trim();
    $("#pull-button").disabled = true;
    try {
      const job = await api("/api/models/pull", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ repo }),
      });
      followPull(job.id);
      refreshModels();
    } catch (err) {
      $("#pull-status").hidden = false;
      $("#pull-progress").hidden = true;
      showIn($("#pull-text"), problem(err));
      $("#pull-button").disabled = false;
    }
  });
}

// -- doctor -----------------------------------------------------------------------
async function runDoctor() {
  const button = $("#doctor-run");
  button.disabled = true;
  $("#doctor-summary").textContent = "Running…";
  try {
    const report = await api("/api/doctor");
    const rows = report.checks.map((c) => el("tr", {},
      el("td", {}, c.id), el("td", { class: `st-${c.status}` }, c.status),
      el("td", {}, c.summary + (c.code ? ` [${c.code}]` : "")), el("td", {}, c.fix || "")));
    $("#doctor-table tbody").replaceChildren(...rows);
    $("#doctor-table").hidden = false;
    const bad = report.checks.filter((c) => c.status === "fail").length;
    const warn = report.checks.filter((c) => c.status === "warn").length;
    $("#doctor-summary").textContent = `${report.checks.length} checks: ${bad} failed, ${warn} warnings`;
  } catch (err) {
    $("#doctor-summary").textContent = err.message;
  } finally {
    button.disabled = false;
  }
}

// -- extensions -------------------------------------------------------------------
window.qwenhome = { api, el, humanSize, problem, container: () => $("#extensions") };

function loadExtensions(info) {
  for (const ext of (info && info.extensions) || []) {
    if (ext.script) document.head.append(el("script", { src: ext.script, defer: "" }));
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  setupChat();
  setupModels();
  $("#doctor-run").addEventListener("click", runDoctor);
  const info = await refreshInfo();
  loadExtensions(info);
  refreshModels();
});
