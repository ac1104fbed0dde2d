// pushgate dashboard: refreshes the figures and tables from /dashboard/data every 2 s and
// runs the test-send form. Plain DOM, no framework, no inline script (the page's CSP).
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
let previous = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = el("tr");
  for (const c of cells) {
    const td = el("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = String(c);
    tr.appendChild(td);
  }
  return tr;
}

function fill(id, rows) {
  const body = document.getElementById(id);
  body.replaceChildren(...rows);
}

function credentials(list) {
  const box = el("div");
  for (const c of list) {
    const expiry = c.not_after ? `until ${c.not_after} (${c.days_left} days)` : "does not expire";
    const d = el("div", `${c.active ? "▶ " : ""}${c.file} — ${c.kind}, ${expiry}`,
      "cred" + (c.expiring ? " expiring" : "") + (c.active ? " active" : ""));
    box.appendChild(d);
  }
  return box;
}

function render(data) {
  for (const [k, v] of Object.entries(data.figures)) {
    const f = document.getElementById("f-" + k);
    if (f) f.textContent = v;
  }
  if (previous) {
    const dt = (data.time_ms - previous.time_ms) / 1000;
    const dn = data.figures.delivered - previous.figures.delivered;
    if (dt > 0) document.getElementById("f-rate").textContent = Math.max(0, Math.round(dn / dt));
  }
  previous = data;
  fill("apps", data.apps.map(a => row([
    a.name,
    a.healthy ? el("span", "healthy", "ok") : el("span", "halted: " + a.halted, "bad"),
    a.connections, a.streams_in_flight, a.queued_in_memory, credentials(a.credentials),
    a.settings,
  ])));
  fill("reasons", data.failures_by_reason.map(r => row([r.reason, r.count])));
  document.getElementById("cluster-section").hidden = data.cluster.length === 0;
  fill("cluster", data.cluster.map(g => row([
    g.host + (g.this ? " (this one)" : ""), g.id, g.heartbeat_at, g.apps, g.holds,
  ])));
  fill("latest", data.latest_failures.map(f => row([
    f.time, f.app, el("span", f.token.slice(0, 12) + "…", "token"), f.state, f.reason,
  ])));
  document.getElementById("warnings").replaceChildren(
    ...data.warnings.map(w => el("p", "Credential: " + w, "warning")));
  document.getElementById("updated").textContent = new Date(data.time_ms).toLocaleTimeString();
}

async function refresh() {
  try {
    const r = await fetch("/dashboard/data", { credentials: "same-origin" });
    if (r.status === 401) { window.location.reload(); return; }
    if (r.ok) render(await r.json());
  } catch (e) {
    document.getElementById("updated").textContent = "unreachable";
  }
}

const FINAL = new Set(["delivered", "failed", "expired"]);

async function follow(id, out) {
  for (let i = 0; i < 120; i++) {
    const r = await fetch("/dashboard/notifications/" + id, { credentials: "same-origin" });
    if (r.ok) {
      const doc = await r.json();
      out.textContent = `${id}: ${doc.state}` + (doc.reason ? ` (${doc.reason})` : "");
      out.className = doc.state === "delivered" ? "ok" : (FINAL.has(doc.state) ? "bad" : "");
      if (FINAL.has(doc.state)) return;
    }
    await new Promise(done => setTimeout(done, 500));
  }
}

document.getElementById("send-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  const out = document.getElementById("send-result");
  out.className = "";
  out.textContent = "sending…";
  const r = await fetch("/dashboard/send", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", "x-csrf-token": csrf },
    body: JSON.stringify(Object.fromEntries(form.entries())),
  });
  const answer = await r.json();
  if (!r.ok) {
    out.className = "bad";
    out.textContent = `refused: ${answer.error.code}: ${answer.error.message}`;
    return;
  }
  out.textContent = `${answer.ids[0]}: queued`;
  follow(answer.ids[0], out);
});

refresh();
setInterval(refresh, 2000);
