// The node's web console: plain JS over the node's own HTTP API, no build step.
"use strict";

const $ = (sel) => document.querySelector(sel);

async function getJSON(path, timeoutMs = 4000) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const resp = await fetch(path, { signal: ctl.signal, headers: { Accept: "application/json" } });
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.detail || resp.statusText);
    return { body, headers: resp.headers };
  } finally {
    clearTimeout(timer);
  }
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function heard(seconds) {
  if (seconds === undefined || seconds < 0) return "never";
  return seconds < 1 ? `${Math.round(seconds * 1000)} ms ago` : `${seconds.toFixed(1)} s ago`;
}

async function refreshMembers() {
  const { body } = await getJSON("/api/v1/members");
  const tbody = $("#members tbody");
  tbody.replaceChildren();
  let leader = "";
  for (const m of body.members) {
    const row = tbody.insertRow();
    row.dataset.memberId = m.id;
    if (m.raft_role === "leader") { row.classList.add("leader"); leader = m.id; }
    cell(row, m.id);
    cell(row, m.address);
    cell(row, m.raft_role, m.raft_role === "unknown" ? "bad" : "");
    cell(row, m.term);
    cell(row, m.commit_index);
    cell(row, m.applied_index);
    cell(row, m.status, m.status === "alive" ? "" : "bad");
    cell(row, m.gossip_status || "", m.gossip_status && m.gossip_status !== "alive" ? "warn" : "");
    cell(row, m.is_self ? "this node" : heard(m.gossip_last_heard_s));
  }
  const alive = body.members.filter((m) => m.status === "alive").length;
  $("#summary").textContent =
    `${alive} of ${body.members.length} members alive · leader: ${leader || "none"}`;
}

async function refreshTiers() {
  const { body } = await getJSON("/api/v1/status");
  const tbody = $("#tiers tbody");
  tbody.replaceChildren();
  for (const [name, t] of Object.entries(body.tiers)) {
    const row = tbody.insertRow();
    cell(row, name);
    cell(row, t.rf === 0 ? "all" : t.rf);
    cell(row, t.local_keys);
    cell(row, t.under_replicated, t.under_replicated > 0 ? "warn" : "");
    cell(row, t.hints_pending, t.hints_pending > 0 ? "warn" : "");
    cell(row, `${t.replica_lag_s.toFixed(1)} s`, t.replica_lag_s > 30 ? "bad" : "");
  }
}

async function refresh() {
  try {
    await Promise.all([refreshMembers(), refreshTiers()]);
  } catch (err) {
    $("#summary").textContent = `This node does not answer: ${err.message}`;
  }
}

function watchEvents() {
  const list = $("#events");
  const source = new EventSource("/api/v1/watch?prefix=");
  source.addEventListener("ready", () => { $("#stream-state").textContent = "(live)"; });
  source.addEventListener("change", (ev) => {
    const change = JSON.parse(ev.data);
    for (const e of change.events) {
      const item = document.createElement("li");
      const value = e.type === "put" ? ` = ${JSON.stringify(e.value)}` : "";
      item.textContent = `rev ${e.revision} ${e.type} ${e.key}${value}`;
      list.prepend(item);
    }
    while (list.children.length > 50) list.lastChild.remove();
  });
  source.onerror = () => { $("#stream-state").textContent = "(reconnecting…)"; };
}

let nextPage = "";

async function browse(path) {
  const { body, headers } = await getJSON(path);
  const tbody = $("#keys tbody");
  tbody.replaceChildren();
  for (const [key, value] of Object.entries(body)) {
    const row = tbody.insertRow();
    cell(row, key);
    cell(row, JSON.stringify(value));
  }
  const link = headers.get("Link") || "";
  nextPage = link.startsWith("<") ? link.slice(1, link.indexOf(">")) : "";
  $("#next").disabled = !nextPage;
}

$("#browse").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const prefix = encodeURIComponent($("#prefix").value);
  browse(`/state/system?prefix=${prefix}&limit=50`).catch((err) => alert(err.message));
});
$("#next").addEventListener("click", () => { if (nextPage) browse(nextPage); });

refresh();
setInterval(refresh, 2000);
watchEvents();
browse("/state/system?limit=50").catch(() => {});
