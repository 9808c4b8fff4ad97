// pyiii console: plain JS, no build step. Every value from the engine is put in
// the page as text (textContent / text nodes), never parsed as markup.
"use strict";

const PAGE_SIZE = 50;
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "onclick") node.addEventListener("click", value);
    else if (name === "className") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child == null ? "" : String(child)));
  }
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function preview(value, max = 120) {
  const text = typeof value === "string" ? JSON.stringify(value) : JSON.stringify(value);
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

function when(ms) {
  return ms ? new Date(ms).toLocaleString() : "—";
}

// --- talking to the engine ---------------------------------------------------------

const token = { value: sessionStorage.getItem("pyiii-token") || "" };

function headers(extra) {
  const out = Object.assign({}, extra || {});
  if (token.value) out["Authorization"] = "Bearer " + token.value;
  return out;
}

class Unauthorized extends Error {}

async function getJSON(path) {
  const resp = await fetch(path, { headers: headers() });
  if (resp.status === 401) throw new Unauthorized("token needed");
  return resp.json();
}

async function postJSON(path, body) {
  const resp = await fetch(path, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(body),
  });
  if (resp.status === 401) throw new Unauthorized("token needed");
  return resp.json();
}

// One function call, as a worker would make it: {result} or {error: {code, message}}.
function call(functionId, data) {
  return postJSON("/api/call", { function_id: functionId, data: data === undefined ? {} : data });
}

async function result(functionId, data) {
  const out = await call(functionId, data);
  if (out.error) throw Object.assign(new Error(out.error.message), { code: out.error.code, body: out.error });
  return out.result;
}

function errorText(err) {
  return err.code ? `${err.code}: ${err.message}` : String(err.message || err);
}

// --- live events (fetch-streamed server-sent events, so the token can be sent) -------

const listeners = { log: [], workers: [], functions: [] };
let streamBackoff = 500;

async function openStream() {
  const live = $("live");
  try {
    const resp = await fetch("/api/events", { headers: headers() });
    if (!resp.ok || !resp.body) throw new Error("stream refused: " + resp.status);
    live.classList.add("on");
    streamBackoff = 500;
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const chunk = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message";
        let data = "";
        for (const line of chunk.split("\n")) {
          if (line.startsWith("event: ")) event = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (!listeners[event] || !data) continue;
        const parsed = JSON.parse(data);
        for (const fn of listeners[event]) fn(parsed);
      }
    }
  } catch (err) {
    // reconnect below
  }
  live.classList.remove("on");
  setTimeout(openStream, streamBackoff);
  streamBackoff = Math.min(streamBackoff * 2, 10000);
}

// --- pages ---------------------------------------------------------------------------

const pages = {};
let current = null;

function show(name) {
  if (!pages[name]) name = "workers";
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== "page-" + name;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === name);
  current = name;
  pages[name].load().catch(report);
}

function report(err) {
  if (err instanceof Unauthorized) {
    askToken();
    return;
  }
  $("health").textContent = "error: " + errorText(err);
}

// Workers ------------------------------------------------------------------------------

pages.workers = {
  async load() {
    const out = await result("engine::workers::list", {});
    const workers = out.workers || [];
    $("workers-count").textContent = `${workers.length} connected`;
    fill($("workers-table").tBodies[0], workers.map((w) =>
      el("tr", {},
        el("td", {}, w.name),
        el("td", { className: "mono" }, w.id),
        el("td", {}, w.runtime || ""),
        el("td", {}, w.status),
        el("td", { className: "mono small" }, (w.functions || []).join(", ")),
        el("td", {}, when(w.connected_at_ms)))));
  },
};
listeners.workers.push(() => { if (current === "workers") pages.workers.load().catch(report); });

// Functions ----------------------------------------------------------------------------

const fnState = { all: [], selected: null };

pages.functions = {
  async load() {
    const out = await result("engine::functions::list", { include_internal: $("fn-internal").checked });
    fnState.all = out.functions || [];
    this.render();
  },
  render() {
    const needle = $("fn-filter").value.trim().toLowerCase();
    const shown = fnState.all.filter((f) =>
      !needle || f.function_id.toLowerCase().includes(needle) || String(f.worker_name).toLowerCase().includes(needle));
    $("functions-count").textContent = `${shown.length} of ${fnState.all.length}`;
    fill($("functions-table").tBodies[0], shown.map((f) => {
      const row = el("tr", { className: "pick" + (f.function_id === fnState.selected ? " selected" : "") },
        el("td", { className: "mono" }, f.function_id),
        el("td", {}, f.worker_name),
        el("td", {}, f.description || ""));
      row.dataset.fn = f.function_id;
      row.addEventListener("click", () => selectFunction(f.function_id));
      return row;
    }));
  },
};
listeners.functions.push(() => { if (current === "functions") pages.functions.load().catch(report); });

function selectFunction(id) {
  fnState.selected = id;
  $("invoke-fn").textContent = id;
  $("invoke-run").disabled = false;
  pages.functions.render();
}

function checkJSON(textarea, status) {
  try {
    JSON.parse(textarea.value || "null");
    textarea.classList.remove("invalid");
    if (status) status.textContent = "valid JSON";
    return true;
  } catch (err) {
    textarea.classList.add("invalid");
    if (status) status.textContent = "not JSON: " + err.message;
    return false;
  }
}

async function invoke() {
  const payload = $("invoke-payload");
  if (!checkJSON(payload, $("invoke-json-state"))) return;
  const status = $("invoke-status");
  status.className = "";
  status.textContent = "calling " + fnState.selected + "…";
  const started = performance.now();
  const out = await call(fnState.selected, JSON.parse(payload.value || "null"));
  const ms = (performance.now() - started).toFixed(1);
  if (out.error) {
    status.className = "error";
    status.textContent = `error ${out.error.code} (${ms} ms)`;
    $("invoke-output").textContent = JSON.stringify(out.error, null, 2);
  } else {
    status.className = "ok";
    status.textContent = `ok (${ms} ms)`;
    $("invoke-output").textContent = JSON.stringify(out.result, null, 2);
  }
}

// Triggers -----------------------------------------------------------------------------

pages.triggers = {
  async load() {
    const out = await result("engine::registered-triggers::list", {});
    const triggers = out.registered_triggers || [];
    $("triggers-count").textContent = `${triggers.length} registered`;
    fill($("triggers-table").tBodies[0], triggers.map((t) => {
      const action = el("td", {});
      if (t.trigger_type === "http") {
        action.append(el("button", { onclick: () => prepareHttp(t.config) }, "Test"));
      } else if (t.trigger_type === "cron") {
        action.append(el("button", { onclick: () => runCron(t) }, "Run now"));
      }
      return el("tr", {},
        el("td", {}, t.trigger_type),
        el("td", { className: "mono" }, t.function_id),
        el("td", { className: "mono small" }, preview(t.config, 160)),
        el("td", {}, t.worker_name),
        action);
    }));
  },
};

function prepareHttp(config) {
  const path = String(config.api_path || "/");
  $("http-path").value = path.startsWith("/") ? path : "/" + path;
  $("http-method").value = String(config.http_method || "GET").toUpperCase();
}

async function sendHttp() {
  const status = $("http-status");
  status.textContent = "sending…";
  const body = $("http-body").value;
  const out = await postJSON("/api/http-test", {
    method: $("http-method").value,
    path: $("http-path").value,
    body,
    headers: body ? { "Content-Type": "application/json" } : {},
  });
  if (out.error) {
    status.textContent = errorText(out.error);
    return;
  }
  status.textContent = `${out.status || "no answer"} · ${out.elapsed_ms} ms`;
  let text = out.body;
  try { text = JSON.stringify(JSON.parse(out.body), null, 2); } catch (err) { /* not JSON: as sent */ }
  $("http-output").textContent = text;
}

async function runCron(trigger) {
  $("cron-status").textContent = "running " + trigger.function_id + "…";
  const out = await postJSON("/api/cron/run", { trigger_id: trigger.id });
  if (out.error) {
    $("cron-status").textContent = "error " + errorText(out.error);
    $("cron-output").textContent = "";
  } else {
    $("cron-status").textContent = "ran " + trigger.function_id;
    $("cron-output").textContent = JSON.stringify(out.result, null, 2);
  }
}

// State --------------------------------------------------------------------------------

const st = { scope: null, cursors: [null], page: 0, next: null, total: 0, key: null, version: null, expiresAt: null };

pages.state = {
  async load() {
    const out = await getJSON("/api/scopes");
    if (out.error) {
      $("scopes-count").textContent = errorText(out.error);
      return;
    }
    $("scopes-count").textContent = `${out.total} scopes`;
    fill($("scopes-table").tBodies[0], out.scopes.map((s) => {
      const row = el("tr", { className: "pick" + (s.scope === st.scope ? " selected" : "") },
        el("td", { className: "mono" }, s.scope), el("td", { className: "num" }, s.keys));
      row.dataset.scope = s.scope;
      row.addEventListener("click", () => openScope(s.scope).catch(report));
      return row;
    }));
  },
};

async function openScope(scope) {
  if (scope !== st.scope) $("key-prefix").value = "";
  st.scope = scope;
  st.cursors = [null];
  st.page = 0;
  $("keys-scope").textContent = scope;
  for (const row of $("scopes-table").tBodies[0].rows) row.classList.toggle("selected", row.dataset.scope === scope);
  await loadKeys();
}

async function loadKeys() {
  const prefix = $("key-prefix").value;
  const request = { scope: st.scope, limit: PAGE_SIZE, with_keys: true, cursor: st.cursors[st.page] };
  if (prefix) request.prefix = prefix;
  const [page, counted] = await Promise.all([
    result("state::list", request),
    result("state::count", prefix ? { scope: st.scope, prefix } : { scope: st.scope }),
  ]);
  st.next = page.cursor;
  st.total = counted.count;
  const first = st.page * PAGE_SIZE;
  $("keys-page").textContent = page.items.length
    ? `page ${st.page + 1} · keys ${first + 1}-${first + page.items.length} of ${st.total}`
    : `no keys${prefix ? " with this prefix" : ""}`;
  $("keys-prev").disabled = st.page === 0;
  $("keys-next").disabled = !st.next;
  fill($("keys-table").tBodies[0], page.items.map((item) => {
    const row = el("tr", { className: "pick" + (item.key === st.key ? " selected" : "") },
      el("td", { className: "mono" }, item.key), el("td", { className: "mono small" }, preview(item.value)));
    row.dataset.key = item.key;
    row.addEventListener("click", () => openValue(item.key).catch(report));
    return row;
  }));
}

async function openValue(key) {
  st.key = key;
  for (const row of $("keys-table").tBodies[0].rows) row.classList.toggle("selected", row.dataset.key === key);
  const got = await result("state::get", { scope: st.scope, key, with_meta: true });
  $("value-key").textContent = `${st.scope} / ${key}`;
  $("value-message").textContent = "";
  $("value-message").className = "";
  if (!got.exists) {
    st.version = null;
    $("value-version").textContent = "—";
    $("value-expiry").textContent = "—";
    $("value-view").textContent = "(no such key: deleted or expired)";
    $("value-editor").value = "";
    for (const id of ["value-save", "value-delete"]) $(id).disabled = true;
    $("value-reload").disabled = false;
    return;
  }
  st.version = got.version;
  st.expiresAt = got.expires_at_ms || null;
  $("value-version").textContent = String(got.version);
  $("value-expiry").textContent = got.expires_at_ms ? when(got.expires_at_ms) : "never";
  $("value-view").textContent = JSON.stringify(got.value, null, 2);
  $("value-editor").value = JSON.stringify(got.value, null, 2);
  for (const id of ["value-save", "value-reload", "value-delete"]) $(id).disabled = false;
}

function valueMessage(text, kind) {
  const box = $("value-message");
  box.textContent = text;
  box.className = kind;
}

async function saveValue() {
  const editor = $("value-editor");
  if (!checkJSON(editor)) {
    valueMessage("The value is not valid JSON; nothing was saved.", "error");
    return;
  }
  // The version read is the precondition: a change made since then is reported, never overwritten.
  const request = {
    scope: st.scope, key: st.key, value: JSON.parse(editor.value), expect_version: st.version, with_meta: true,
  };
  if (st.expiresAt) {
    // A set without ttl_ms would drop the expiry; keep the key expiring when it would have.
    const left = st.expiresAt - Date.now();
    if (left <= 0) {
      valueMessage("This key has expired meanwhile; nothing was saved. Reload to see it.", "error");
      return;
    }
    request.ttl_ms = Math.max(1, Math.round(left));
  }
  const out = await call("state::set", request);
  if (out.error) {
    if (out.error.code === "VERSION_MISMATCH") {
      valueMessage(`Conflict: the value changed since you opened it (now version ${out.error.current_version}). ` +
        "Nothing was saved; Reload to see the current value.", "error conflict");
    } else {
      valueMessage("Not saved: " + errorText(out.error), "error");
    }
    return;
  }
  st.version = out.result.version;
  st.expiresAt = out.result.expires_at_ms || null;
  $("value-version").textContent = String(st.version);
  $("value-expiry").textContent = st.expiresAt ? when(st.expiresAt) : "never";
  $("value-view").textContent = JSON.stringify(out.result.new_value, null, 2);
  valueMessage(`Saved: version ${st.version}`, "ok");
  loadKeys().catch(report);
}

async function deleteValue() {
  if (!window.confirm(`Delete ${st.scope} / ${st.key}?`)) return;
  const out = await call("state::delete", { scope: st.scope, key: st.key, expect_version: st.version });
  if (out.error) {
    valueMessage(out.error.code === "VERSION_MISMATCH"
      ? `Conflict: the value changed (now version ${out.error.current_version}); nothing was deleted.`
      : "Not deleted: " + errorText(out.error), "error conflict");
    return;
  }
  valueMessage("Deleted.", "ok");
  for (const id of ["value-save", "value-delete"]) $(id).disabled = true;
  await Promise.all([loadKeys(), pages.state.load()]);
}

// Queues -------------------------------------------------------------------------------

const qs = { name: null };

pages.queues = {
  async load() {
    const listed = await call("engine::queue::list_topics", {});
    if (listed.error) {
      $("queues-status").textContent = listed.error.code === "function_not_found"
        ? "The queue module is not enabled in this engine." : errorText(listed.error);
      fill($("queues-table").tBodies[0], []);
      return;
    }
    $("queues-status").textContent = "";
    const rows = [];
    for (const q of listed.result) {
      const stats = await result("engine::queue::topic_stats", { topic: q.name });
      rows.push(el("tr", {},
        el("td", { className: "mono" }, q.name),
        el("td", {}, q.broker_type),
        el("td", { className: "num" }, stats.depth),
        el("td", { className: "num" }, stats.consumer_count),
        el("td", { className: "num" }, stats.dlq_depth),
        el("td", {}, el("button", { onclick: () => openDlq(q.name).catch(report) }, "Dead letters"))));
    }
    fill($("queues-table").tBodies[0], rows);
  },
};

async function openDlq(name) {
  qs.name = name;
  $("dlq-name").textContent = name;
  $("dlq-redrive-all").disabled = false;
  const letters = await result("engine::queue::dlq_messages", { topic: name, offset: 0, limit: 100 });
  fill($("dlq-table").tBodies[0], letters.map((d) => el("tr", {},
    el("td", { className: "mono small" }, d.id),
    el("td", { className: "mono" }, d.function_id),
    el("td", { className: "small" }, preview(d.error, 200)),
    el("td", {}, when(d.failed_at_ms)),
    el("td", { className: "mono small" }, preview(d.payload)),
    el("td", {},
      el("button", { onclick: () => dlqAction("iii::queue::redrive_message", d.id) }, "Redrive"),
      el("button", { className: "danger", onclick: () => dlqAction("iii::queue::discard_message", d.id) }, "Discard")))));
}

async function dlqAction(functionId, messageId) {
  const data = { queue: qs.name };
  if (messageId) data.message_id = messageId;
  const out = await call(functionId, data);
  $("dlq-message").textContent = out.error ? errorText(out.error) : JSON.stringify(out.result);
  await Promise.all([openDlq(qs.name), pages.queues.load()]);
}

// Streams ------------------------------------------------------------------------------

const streamState = { name: null, group: null, timer: null };
const STREAM_POLL_MS = 1000;

pages.streams = {
  async load() {
    const overview = await getJSON("/api/overview");
    const table = $("streams-table");
    if (!overview.modules.stream) {
      $("streams-status").textContent = "The streams module is not enabled in this engine.";
      table.hidden = true;
      return;
    }
    const listed = await result("stream::list_all", {});
    const rows = [];
    for (const stream of listed.stream || []) {
      for (const group of stream.groups || []) {
        rows.push(el("tr", {},
          el("td", { className: "mono" }, stream.id),
          el("td", { className: "mono" }, group),
          el("td", {}, el("button", { onclick: () => watchGroup(stream.id, group) }, "Watch"))));
      }
    }
    $("streams-status").textContent = rows.length ? "" : "No stream holds any item yet.";
    table.hidden = rows.length === 0;
    fill(table.tBodies[0], rows);
  },
};

function watchGroup(name, group) {
  streamState.name = name;
  streamState.group = group;
  $("stream-group").textContent = `${name} / ${group}`;
  if (streamState.timer) clearInterval(streamState.timer);
  const poll = () => {
    if (current !== "streams") return;
    result("stream::list", { stream_name: name, group_id: group }).then((items) => {
      fill($("stream-items").tBodies[0], (items || []).map((item) =>
        el("tr", {}, el("td", { className: "mono small" }, preview(item, 400)))));
      $("stream-polled").textContent = `${(items || []).length} items · ${new Date().toLocaleTimeString()}`;
    }).catch(report);
  };
  poll();
  streamState.timer = setInterval(poll, STREAM_POLL_MS);
}

// Logs ---------------------------------------------------------------------------------

const LEVELS = { DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40 };
const logState = { workers: new Set(), shown: 0 };
const MAX_LOG_LINES = 2000;

function logMatches(line) {
  const worker = $("log-worker").value;
  return line.levelno >= LEVELS[$("log-level").value] && (!worker || line.worker === worker);
}

function logRow(line) {
  return el("div", { className: "log " + line.level.toLowerCase() },
    el("span", { className: "ts" }, new Date(line.ts_ms).toLocaleTimeString()),
    el("span", { className: "lvl" }, line.level),
    el("span", { className: "who" }, line.worker + (line.function ? " " + line.function : "")),
    el("span", { className: "msg" }, line.message));
}

function noteWorker(name) {
  if (logState.workers.has(name)) return;
  logState.workers.add(name);
  $("log-worker").append(el("option", { value: name }, name));
}

pages.logs = {
  async load() {
    const params = new URLSearchParams({ limit: "500", level: $("log-level").value, worker: $("log-worker").value });
    const out = await getJSON("/api/logs?" + params);
    for (const name of out.workers) noteWorker(name);
    const rows = out.lines.map(logRow);
    $("log-lines").replaceChildren(...rows);
    logState.shown = rows.length;
    $("log-count").textContent = `${logState.shown} lines`;
  },
};

listeners.log.push((line) => {
  noteWorker(line.worker);
  if (current !== "logs" || !logMatches(line)) return;
  const box = $("log-lines");
  box.append(logRow(line));
  while (box.childElementCount > MAX_LOG_LINES) box.firstChild.remove();
  logState.shown = box.childElementCount;
  $("log-count").textContent = `${logState.shown} lines`;
});

// --- start ---------------------------------------------------------------------------------

function askToken() {
  $("login").hidden = false;
  for (const section of document.querySelectorAll(".page")) section.hidden = true;
  $("health").textContent = "auth token needed";
}

async function start() {
  let overview;
  try {
    overview = await getJSON("/api/overview");
  } catch (err) {
    report(err);
    return;
  }
  $("login").hidden = true;
  const h = overview.health;
  $("health").textContent = `${h.status} · ${h.workers} workers · ${h.functions} functions`;
  openStream();
  show(location.hash.slice(1));
}

function wire() {
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token.value = $("token-input").value;
    sessionStorage.setItem("pyiii-token", token.value);
    $("token-message").textContent = "";
    start();
  });
  $("fn-filter").addEventListener("input", () => pages.functions.render());
  $("fn-internal").addEventListener("change", () => pages.functions.load().catch(report));
  $("invoke-payload").addEventListener("input", () => checkJSON($("invoke-payload"), $("invoke-json-state")));
  $("invoke-format").addEventListener("click", () => {
    const payload = $("invoke-payload");
    if (checkJSON(payload, $("invoke-json-state"))) payload.value = JSON.stringify(JSON.parse(payload.value), null, 2);
  });
  $("invoke-run").addEventListener("click", () => invoke().catch(report));
  $("http-send").addEventListener("click", () => sendHttp().catch(report));
  $("key-prefix").addEventListener("input", () => {
    if (!st.scope) return;
    st.cursors = [null];
    st.page = 0;
    loadKeys().catch(report);
  });
  $("keys-next").addEventListener("click", () => {
    if (!st.next) return;
    st.cursors[st.page + 1] = st.next;
    st.page += 1;
    loadKeys().catch(report);
  });
  $("keys-prev").addEventListener("click", () => {
    if (st.page === 0) return;
    st.page -= 1;
    loadKeys().catch(report);
  });
  $("value-editor").addEventListener("input", () => checkJSON($("value-editor")));
  $("value-save").addEventListener("click", () => saveValue().catch(report));
  $("value-reload").addEventListener("click", () => openValue(st.key).catch(report));
  $("value-delete").addEventListener("click", () => deleteValue().catch(report));
  $("dlq-redrive-all").addEventListener("click", () => dlqAction("iii::queue::redrive", null).catch(report));
  $("log-level").addEventListener("change", () => pages.logs.load().catch(report));
  $("log-worker").addEventListener("change", () => pages.logs.load().catch(report));
  $("log-clear").addEventListener("click", () => { $("log-lines").replaceChildren(); $("log-count").textContent = ""; });
}

wire();
start();
