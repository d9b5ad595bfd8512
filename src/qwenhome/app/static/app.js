// qwenhome web page: chat (streamed), models in the home, pulls with live
// progress, the doctor. Plain JS, no build step. Extensions (e.g. images)
// are scripts listed by /api/info; they get window.qwenhome to add a panel.
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

async function api(path, options = {}) {
  const resp = await fetch(path, options);
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const e = body.error || {};
    throw new Error(`${e.code || resp.status}: ${e.message || resp.statusText}${e.hint ? ` (${e.hint})` : ""}`);
  }
  return body;
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
    if (info.status === "loading") setTimeout(refreshInfo, 1000);
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
    actions.append(el("button", { type: "button", class: "secondary", onclick: () => verifyModel(m.repo) }, "Verify"));
    if (!m.served) actions.append(" ", el("button", { type: "button", class: "secondary", onclick: () => removeModel(m.repo) }, "Remove"));
    return el("tr", { "data-repo": m.repo },
      el("td", {}, m.repo, m.served ? el("span", { class: "badge ready" }, "served") : "", m.note ? el("div", { class: "muted" }, m.note) : ""),
      el("td", {}, humanSize(m.size)),
      el("td", { class: `st-${m.state}` }, m.state),
      actions);
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "4", class: "muted" }, "The home is empty.")));
  $("#models-table tbody").replaceChildren(...rows);
}

async function verifyModel(repo) {
  $("#models-message").textContent = `Verifying ${repo}…`;
  try {
    const r = await api(`/api/models/${repo}/verify`, { method: "POST" });
    $("#models-message").textContent = r.ok ? `${repo}: every file matches its hash.` : `${repo}: problems found: ${JSON.stringify(r.problems || r)}`;
  } catch (err) { $("#models-message").textContent = err.message; }
}

async function removeModel(repo) {
  if (!confirm(`Remove ${repo} from the home?`)) return;
  try {
    await api(`/api/models/${repo}`, { method: "DELETE" });
    $("#models-message").textContent = `${repo} removed.`;
  } catch (err) { $("#models-message").textContent = err.message; }
  refreshModels();
}

function followPull(id) {
  const bar = $("#pull-progress"), text = $("#pull-text");
  $("#pull-status").hidden = false;
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
      text.textContent = `${e.repo}: ${e.error.code}: ${e.error.message}${e.error.hint ? ` (${e.error.hint})` : ""}`;
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
      $("#pull-text").textContent = err.message;
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
window.qwenhome = { api, el, humanSize, container: () => $("#extensions") };

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
