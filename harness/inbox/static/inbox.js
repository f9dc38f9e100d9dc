// The harness inbox. Every value from the harness is attacker-controlled mail data: it reaches the DOM
// only as text (textContent / text nodes, never innerHTML), and the HTML body lives in a sandboxed frame.
"use strict";

const PAGE_SIZE = 50;
const state = {
  tab: "deliveries",
  offset: 0,
  total: 0,
  selected: null,     // delivery id shown in the message view
  view: "html",
  catalog: [],
  overview: null,
};

// -- small DOM helpers ------------------------------------------------------------------------------------
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

async function api(path, options) {
  const response = await fetch(path, {headers: {"Content-Type": "application/json"}, ...options});
  const text = await response.text();
  let body = {};
  try { body = text ? JSON.parse(text) : {}; } catch (e) { body = {error: text}; }
  if (!response.ok) {
    const error = new Error(body.error || `${response.status} ${response.statusText}`);
    error.body = body;
    throw error;
  }
  return body;
}

function when(seconds) {
  if (!seconds) return "";
  return new Date(seconds * 1000).toLocaleTimeString([], {hour12: false}) + "." +
    String(Math.floor((seconds % 1) * 1000)).padStart(3, "0");
}

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function recipients(row) {
  const parts = [];
  if (row.to.length) parts.push("To: " + row.to.join(", "));
  if (row.cc.length) parts.push("Cc: " + row.cc.join(", "));
  if (row.bcc.length) parts.push("Bcc: " + row.bcc.join(", "));
  return parts.join("; ");
}

// A list cell: one line, cut with an ellipsis; the title attribute holds the whole value (as text).
function cell(name, value) {
  return el("td", {class: name, title: value}, value);
}

function identity(row) {
  if (row.user) return `user ${row.user}`;
  return row.appName ? `app ${row.appName}` : (row.appId ? `app ${row.appId}` : "");
}

// -- tabs ---------------------------------------------------------------------------------------------
function showTab(name) {
  state.tab = name;
  for (const button of document.querySelectorAll("#tabs button")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  for (const section of document.querySelectorAll("section.tab")) {
    section.hidden = section.id !== `tab-${name}`;
  }
  refresh();
}

function refresh() {
  const work = {deliveries: loadDeliveries, sent: loadSentItems, outbox: loadOutbox, faults: loadFaults,
                scenario: loadScenario}[state.tab];
  return work().catch((error) => console.warn("inbox:", error.message));
}

// -- deliveries ---------------------------------------------------------------------------------------
async function loadDeliveries() {
  const query = new URLSearchParams({offset: String(state.offset), limit: String(PAGE_SIZE)});
  const mailbox = $("filter-mailbox").value.trim();
  const transport = $("filter-transport").value;
  const text = $("filter-text").value.trim();
  if (mailbox) query.set("mailbox", mailbox);
  if (transport) query.set("transport", transport);
  if (text) query.set("q", text);
  const page = await api(`/api/deliveries/page?${query}`);
  state.total = page.total;
  const rows = page.items.map((row) => el("tr", {
      class: "delivery" + (row.id === state.selected ? " selected" : ""),
      dataset: {id: row.id, transport: row.transport},
      onclick: () => openMessage(row.id),
    },
    el("td", {class: "nowrap"}, when(row.time)),
    el("td", {}, el("span", {class: `badge ${row.transport}`}, row.transport)),
    cell("from", row.from),
    cell("subject", row.subject || "(no subject)"),
    cell("recipients", recipients(row)),
    cell("mailbox", row.mailbox),
    cell("identity", identity(row)),
    el("td", {class: "nowrap"}, size(row.size)),
    cell("attachments", row.attachments.join(", ")),
  ));
  fill($("deliveries").tBodies[0], rows);
  $("deliveries-empty").hidden = page.total > 0;
  const last = Math.min(state.offset + page.items.length, page.total);
  $("page-info").textContent = page.total ? `${state.offset + 1}-${last} of ${page.total}` : "0";
  $("page-newer").disabled = state.offset === 0;
  $("page-older").disabled = last >= page.total;
}

async function openMessage(id) {
  state.selected = id;
  for (const row of document.querySelectorAll("tr.delivery")) {
    row.classList.toggle("selected", row.dataset.id === id);
  }
  const detail = await api(`/api/deliveries/${encodeURIComponent(id)}`);
  const {summary, view} = detail;
  $("message").hidden = false;
  $("message").dataset.id = id;
  $("message-subject").textContent = summary.subject || "(no subject)";
  // Names as the headers carry them; Bcc (no header on SMTP) as addresses.
  const header = (name) => (view.headers.find(([k]) => k.toLowerCase() === name) || [])[1];
  const meta = [["From", view.from], ["To", header("to") || view.to.join(", ")],
                ["Cc", header("cc") || view.cc.join(", ")], ["Bcc", view.bcc.join(", ")], ["Via", `${summary.transport} as ${summary.mailbox}`],
                ["Identity", identity(summary)], ["Message-ID", summary.messageId],
                ["Request id", summary.requestId], ["Sent Items", summary.savedToSentItems ? "saved" : "not saved"]];
  $("message-meta").replaceChildren(...meta.filter(([, v]) => v).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  // The body frame: blocked remote images until asked.
  const frame = $("body-frame");
  frame.hidden = !view.hasHtml;
  $("no-html").hidden = view.hasHtml;
  document.querySelector("#view-html .remote-bar").hidden = !view.hasHtml;
  $("load-remote").disabled = false;
  frame.src = view.hasHtml ? `/frame/${encodeURIComponent(id)}` : "about:blank";
  $("view-text").textContent = view.text ?? "(no text body)";
  fill($("view-headers").tBodies[0], view.headers.map(([name, value]) => el("tr", {}, el("th", {}, name), el("td", {}, value))));
  $("source-kind").textContent = view.sourceKind === "mime" ? "MIME as received" : "Graph request body (JSON)";
  $("source").textContent = "loading…";
  const source = await fetch(`/api/deliveries/${encodeURIComponent(id)}/source`);
  $("source").textContent = await source.text();
  $("attachment-count").textContent = view.attachments.length ? `(${view.attachments.length})` : "";
  $("view-attachments").replaceChildren(...(view.attachments.length ? view.attachments.map((a) => el("li", {},
    a.kept ? el("a", {class: "attachment", href: `/api/deliveries/${encodeURIComponent(id)}/attachments/${a.index}`,
                      download: a.name}, a.name)
           : el("span", {}, a.name, " (bytes not kept)"),
    ` ${a.contentType}, ${size(a.size)}`, a.inline ? ` inline, Content-ID ${a.contentId}` : "",
  )) : [el("li", {class: "muted"}, "no attachments")]));
  loadMessageStatus(summary.messageId);
  // A text-only message opens on its text, without forgetting that the person prefers the HTML view.
  showView(state.view === "html" && !view.hasHtml ? "text" : state.view, false);
}

async function loadMessageStatus(messageId) {
  const box = $("view-status");
  if (!state.overview || !state.overview.outbox) {
    box.replaceChildren(el("p", {class: "muted"}, "outbox's side is not connected."));
    return;
  }
  try {
    const found = await api(`/outbox/status?internetMessageId=${encodeURIComponent(messageId || "")}`);
    box.replaceChildren(found.rows.length ? statusTable(found.rows) : el("p", {class: "muted"}, "no status row carries this Message-ID."));
  } catch (error) {
    box.replaceChildren(el("p", {class: "error"}, error.message));
  }
}

function showView(name, remember = true) {
  if (remember) state.view = name;
  for (const button of document.querySelectorAll("#message-tabs button")) {
    button.classList.toggle("active", button.dataset.view === name);
  }
  for (const view of document.querySelectorAll("#message .view")) {
    view.hidden = view.id !== `view-${name}`;
  }
}

// -- Sent Items ---------------------------------------------------------------------------------------
async function loadSentItems() {
  const select = $("sent-mailbox");
  const mailbox = select.value;
  if (!mailbox) return;
  const listing = await api(`/api/sent-items?mailbox=${encodeURIComponent(mailbox)}`);
  const addresses = (list) => list.map((r) => r.emailAddress.address).join(", ");
  // An item a client saved there (outbox's copy of an SMTP send) is no delivery: nothing to open.
  const kind = (m) => m.savedItemId ? (m.isDraft ? " (saved, a draft)" : " (saved copy)") : "";
  fill($("sent-items").tBodies[0], listing.value.map((m) => el("tr", {class: "sent-item", onclick: () => {
      if (!m.deliveryId) return;
      showTab("deliveries");
      openMessage(m.deliveryId);
    }},
    el("td", {class: "nowrap"}, m.sentDateTime || m.createdDateTime),
    el("td", {}, (m.subject || "(no subject)") + kind(m)),
    el("td", {}, addresses(m.toRecipients)), el("td", {}, addresses(m.ccRecipients)),
    el("td", {}, m.internetMessageId || ""), el("td", {}, m.hasAttachments ? "yes" : ""))));
}

// -- outbox's side ------------------------------------------------------------------------------------
function statusTable(rows) {
  return el("table", {class: "status"},
    el("thead", {}, el("tr", {}, ["id", "state", "attempts", "via", "mailbox", "last error", "request ids", "updated"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map(statusRow)));
}

function statusRow(row) {
  const error = row.lastError;
  return el("tr", {class: "status-row", dataset: {id: row.id, state: row.state}},
    el("td", {}, row.id), el("td", {}, el("span", {class: `state ${row.state}`}, row.state)), el("td", {}, row.attempts),
    el("td", {}, row.sentVia || row.transport || ""), el("td", {}, row.mailbox || ""),
    el("td", {}, error ? `${error.category} ${error.code || ""}${error.status ? ` (${error.status})` : ""}` : "",
       error && error.hint ? el("div", {class: "hint"}, error.hint) : null),
    el("td", {}, (row.requestIds || []).join(", ")), el("td", {class: "nowrap"}, row.updatedAt || ""));
}

async function requeue(selection, button) {
  button.disabled = true;
  try {
    const answer = await api("/outbox/requeue", {method: "POST", body: JSON.stringify(selection)});
    const done = (answer.requeued || []).length;
    const skipped = (answer.skipped || []).map((s) => `${s.id}: ${s.reason}`);
    const failed = (answer.failed || []).map((f) => `${f.id}: ${f.error}`);
    $("poison-message").textContent = [`requeued ${done}`, ...skipped, ...failed, answer.error || ""].filter(Boolean).join("; ");
  } catch (error) {
    $("poison-message").textContent = error.message;
  }
  await loadOutbox();
}

// The CLI's placeholders, filled as `outbox poison list` fills them (the mailbox, the sending app's id).
function personalize(hint, mailbox) {
  let text = mailbox ? hint.replaceAll("<mailbox>", mailbox) : hint;
  const o = state.overview;
  const app = o && o.apps.find((a) => a.name === o.sendingApp);
  if (app) text = text.replaceAll("<client id>", app.clientId).replaceAll("<application (client) id>", app.clientId);
  return text;
}

async function loadOutbox() {
  const connected = Boolean(state.overview && state.overview.outbox);
  $("outbox-off").hidden = connected;
  $("outbox-on").hidden = !connected;
  if (!connected) return;
  const where = state.overview.outbox;
  $("outbox-where").textContent = `queue ${where.queue}, poison queue ${where.poisonQueue}, status table ${where.statusTable}`;
  const [poison, status] = await Promise.allSettled([api("/outbox/poison"), api("/outbox/status")]);
  if (poison.status === "fulfilled") {
    const listing = poison.value;
    fill($("poison-groups").tBodies[0], (listing.groups || []).map((g) => el("tr", {class: "poison-group", dataset: {category: g.category}},
      el("td", {}, g.category), el("td", {}, g.mailbox || ""), el("td", {}, g.count), el("td", {}, g.codes.join(", ")),
      el("td", {class: "nowrap"}, g.lastFailedAt || ""), el("td", {class: "hint"}, personalize(g.hint || "(no hint)", g.mailbox)),
      el("td", {}, g.category === "invalid_message" ? el("span", {class: "muted"}, "send a corrected message") :
        el("button", {class: "requeue-group", onclick: (e) => requeue({category: g.category, mailbox: g.mailbox}, e.target)}, "Requeue")))));
    fill($("poison-messages").tBodies[0], (listing.messages || []).map((m) => el("tr", {class: "poison-message", dataset: {id: m.id}},
      el("td", {}, m.id), el("td", {}, m.category), el("td", {}, m.code || ""), el("td", {}, m.mailbox || ""),
      el("td", {}, m.attempts ?? ""), el("td", {class: "nowrap"}, m.failedAt || ""), el("td", {}, m.subject || ""),
      el("td", {}, el("button", {class: "requeue", onclick: (e) => requeue({ids: [m.id]}, e.target)}, "Requeue")))));
    if (!(listing.messages || []).length && !$("poison-message").textContent) $("poison-message").textContent = "empty";
  } else {
    $("poison-message").textContent = poison.reason.message;
  }
  if (status.status === "fulfilled") fill($("status-rows").tBodies[0], status.value.rows.map(statusRow));
}

// -- faults -------------------------------------------------------------------------------------------
async function loadFaults() {
  const listing = await api("/api/faults");
  fill($("faults").tBodies[0], listing.faults.map((f) => el("tr", {class: "fault", dataset: {id: f.id}},
    el("td", {}, f.id), el("td", {}, f.service), el("td", {}, f.action), el("td", {}, f.catalog || ""),
    el("td", {}, [f.mailbox && `mailbox ${f.mailbox}`, f.recipient && `recipient ${f.recipient}`,
                  f.operation && `operation ${f.operation}`].filter(Boolean).join(", ") || "every request"),
    el("td", {}, f.nth), el("td", {}, f.times ?? "∞"),
    el("td", {class: "matched"}, f.matched), el("td", {class: "fired"}, f.fired),
    el("td", {}, el("button", {class: "remove", onclick: async () => {
      await api(`/api/faults/${encodeURIComponent(f.id)}`, {method: "DELETE"});
      loadFaults();
    }}, "Remove")))));
}

function catalogOptions() {
  const form = $("fault-form");
  const service = form.elements.service.value;
  const transport = {graph: "graph", smtp: "smtp", entra: "entra", msi: "entra", keyvault: "keyvault"}[service];
  const entries = state.catalog.filter((e) => e.transport === transport || !transport);
  const select = form.elements.catalog;
  select.replaceChildren(el("option", {value: ""}, "(none)"), ...entries.map((e) =>
    el("option", {value: e.name}, `${e.name}: ${e.status ?? ""} ${e.code} (${e.category})`)));
}

async function addFault(event) {
  event.preventDefault();
  const form = event.target;
  const rule = {service: form.elements.service.value, action: form.elements.action.value};
  for (const name of ["catalog", "operation", "mailbox", "recipient"]) {
    const value = form.elements[name].value.trim();
    if (value) rule[name] = value;
  }
  for (const name of ["nth", "times", "retry_after"]) {
    const value = form.elements[name].value.trim();
    if (value) rule[name] = parseInt(value, 10);
  }
  if (form.elements.latency_s.value.trim()) rule.latency_s = parseFloat(form.elements.latency_s.value);
  try {
    await api("/api/faults", {method: "POST", body: JSON.stringify(rule)});
    $("fault-error").textContent = "";
  } catch (error) {
    $("fault-error").textContent = error.message;
  }
  loadFaults();
}

// -- scenario -----------------------------------------------------------------------------------------
const yes = (flag) => el("span", {class: flag ? "ok" : "bad"}, flag ? "yes" : "no");

async function loadOverview() {
  state.overview = await api("/overview");
  const o = state.overview;
  $("scenario-name").textContent = `scenario ${o.scenario} · tenant ${o.tenantDomain}` +
    (o.misconfigured.length ? ` · ${o.misconfigured.length} misconfigured` : "");
  const addresses = o.mailboxes.map((m) => m.address);
  $("mailbox-list").replaceChildren(...addresses.map((a) => el("option", {value: a})));
  const sent = $("sent-mailbox");
  const chosen = sent.value;
  sent.replaceChildren(...addresses.map((a) => el("option", {value: a}, a)));
  if (addresses.includes(chosen)) sent.value = chosen;
}

async function loadScenario() {
  await loadOverview();
  const o = state.overview;
  $("misconfigured").replaceChildren(...(o.misconfigured.length ? o.misconfigured.map((m) => el("li", {class: "bad"}, m))
                                                                : [el("li", {class: "ok"}, "nothing: the happy path")]));
  fill($("mailboxes").tBodies[0], o.mailboxes.map((m) => el("tr", {}, el("td", {}, m.address), el("td", {}, m.displayName),
    el("td", {}, yes(m.licensed)), el("td", {}, yes(m.smtpAuthEnabled)), el("td", {}, m.shared ? "yes" : ""), el("td", {}, m.sendAs.join(", ")))));
  fill($("apps").tBodies[0], o.apps.map((a) => el("tr", {}, el("td", {}, a.displayName || a.name), el("td", {}, a.clientId),
    el("td", {}, a.graphRoles.join(", ")), el("td", {}, yes(a.graphConsent)), el("td", {}, a.exchangeRoles.join(", ")),
    el("td", {}, yes(a.exchangeConsent)), el("td", {}, a.graphMailboxes.join(", ")))));
}

// -- live updates -------------------------------------------------------------------------------------
function listen() {
  const source = new EventSource("/events");
  let scenario = null;
  source.addEventListener("open", () => { $("live").textContent = "live"; $("live").classList.add("on"); });
  source.addEventListener("error", () => { $("live").textContent = "reconnecting…"; $("live").classList.remove("on"); });
  source.addEventListener("change", (event) => {
    const change = JSON.parse(event.data);
    const reload = scenario !== null && change.scenario !== scenario ? loadOverview() : Promise.resolve();
    scenario = change.scenario;
    reload.then(refresh);
  });
}

// -- wiring -------------------------------------------------------------------------------------------
function start() {
  for (const button of document.querySelectorAll("#tabs button")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  for (const button of document.querySelectorAll("#message-tabs button")) {
    button.addEventListener("click", () => showView(button.dataset.view));
  }
  $("load-remote").addEventListener("click", () => {
    $("body-frame").src = `/frame/${encodeURIComponent(state.selected)}?remote=1`;
    $("load-remote").disabled = true;
  });
  let typing = null;
  const filtersChanged = () => { state.offset = 0; clearTimeout(typing); typing = setTimeout(loadDeliveries, 150); };
  $("filter-mailbox").addEventListener("input", filtersChanged);
  $("filter-text").addEventListener("input", filtersChanged);
  $("filter-transport").addEventListener("change", filtersChanged);
  $("page-newer").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); loadDeliveries(); });
  $("page-older").addEventListener("click", () => { state.offset += PAGE_SIZE; loadDeliveries(); });
  $("sent-mailbox").addEventListener("change", loadSentItems);
  $("fault-form").addEventListener("submit", addFault);
  $("fault-form").elements.service.addEventListener("change", catalogOptions);
  $("fault-form").elements.catalog.addEventListener("change", () => {
    const form = $("fault-form");
    const entry = state.catalog.find((e) => e.name === form.elements.catalog.value);
    // An SMTP reply answers one stage: a rule for it belongs to that stage's operation.
    if (entry && entry.stage && form.elements.service.value === "smtp") form.elements.operation.value = entry.stage;
  });
  $("faults-clear").addEventListener("click", async () => { await api("/api/faults", {method: "DELETE"}); loadFaults(); });
  $("harness-reset").addEventListener("click", async () => {
    await api("/api/reset", {method: "POST", body: JSON.stringify({keepScenario: true})});
    refresh();
  });
  // Storage has no change feed: while the outbox tab is open it is read again every second.
  setInterval(() => { if (state.tab === "outbox" && !document.hidden) refresh(); }, 1000);
  api("/catalog").then((c) => { state.catalog = c.entries; catalogOptions(); });
  loadOverview().then(() => { refresh(); listen(); });
}

document.addEventListener("DOMContentLoaded", start);
