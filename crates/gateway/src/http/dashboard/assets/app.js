// pushgate dashboard: refreshes the figures, tables and charts from /dashboard/data every 2 s
// and runs the test-send form. Plain DOM and SVG, no framework, no inline script or style
// (the page's CSP).
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

const SVG = "http://www.w3.org/2000/svg";
const W = 600, H = 160, LEFT = 44, BOTTOM = 18, INTERVAL_S = 10;

function ago(seconds) {
  return seconds < 120 ? `${seconds} s ago` : `${Math.round(seconds / 60)} min ago`;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// A readable bound for an axis: 1, 2 or 5 times a power of ten, at least `max`.
function nice(max) {
  if (!(max > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(max)));
  for (const m of [1, 2, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

function short(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1).replace(/\.0$/, "") + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(1).replace(/\.0$/, "") + "k";
  return String(Math.round(v * 10) / 10);
}

// Draws `series` ([{name, values: [number|null]}]) over the last hour, newest at the right.
function draw(id, series, unit) {
  const box = document.getElementById("chart-" + id);
  if (!box) return;
  const n = Math.max(1, ...series.map(s => s.values.length));
  const top = nice(Math.max(0, ...series.flatMap(s => s.values.filter(v => v !== null))));
  const x = i => LEFT + (W - LEFT - 4) * (n === 1 ? 1 : i / (n - 1));
  const y = v => 4 + (H - BOTTOM - 4) * (1 - v / top);
  const parts = [
    svg("line", { class: "axis", x1: LEFT, y1: y(0), x2: W - 4, y2: y(0) }),
    svg("line", { class: "axis", x1: LEFT, y1: y(top), x2: W - 4, y2: y(top) }),
    svg("text", { class: "tick", x: LEFT - 4, y: y(top) + 4, "text-anchor": "end" }, short(top) + unit),
    svg("text", { class: "tick", x: LEFT - 4, y: y(0) + 4, "text-anchor": "end" }, "0"),
    svg("text", { class: "tick", x: LEFT, y: H - 4 }, ago(n * INTERVAL_S)),
    svg("text", { class: "tick", x: W - 4, y: H - 4, "text-anchor": "end" }, "now"),
  ];
  series.forEach((s, k) => {
    let d = "";
    s.values.forEach((v, i) => {
      if (v === null) return;
      d += (d === "" || s.values[i - 1] === null ? "M" : "L") + x(i + n - s.values.length).toFixed(1) + "," + y(v).toFixed(1);
    });
    if (d !== "") parts.push(svg("path", { class: "line s" + (k % 5), d, "data-series": s.name }));
    // The newest value, and any value with no neighbour to join (a lone delivery's latency),
    // as dots.
    const shift = n - s.values.length;
    s.values.forEach((v, i) => {
      const alone = (i === 0 || s.values[i - 1] === null) && (i === s.values.length - 1 || s.values[i + 1] === null);
      if (v !== null && (alone || i === s.values.length - 1)) {
        parts.push(svg("circle", { class: "dot s" + (k % 5), cx: x(i + shift), cy: y(v), r: 2.5 }));
      }
    });
  });
  box.replaceChildren(...parts);
  const legend = document.getElementById("legend-" + id);
  if (legend) legend.replaceChildren(...series.map((s, k) => {
    const item = el("span", null);
    item.appendChild(el("span", null, "swatch s" + (k % 5)));
    const last = s.values[s.values.length - 1];
    item.appendChild(document.createTextNode(`${s.name}${last === null || last === undefined ? "" : ": " + short(last) + unit}`));
    return item;
  }));
}

const CELL = { o: "ok", w: "warn", b: "bad", i: "idle" };

function charts(history) {
  const all = history.samples.concat([history.live]);
  // At least 2 s: just after a sample the interval in progress is a fraction of a second, and
  // a few deliveries in it would read as a spike.
  const rate = (n, s) => n / Math.max(s.seconds, 2);
  document.getElementById("charts").dataset.samples = history.samples.length;
  draw("delivered", [{ name: "delivered", values: all.map(s => rate(s.delivered, s)) }], "/s");
  // The four reasons with the most failures in the hour, the rest together.
  const totals = {};
  for (const s of all) for (const [r, n] of Object.entries(s.failed)) totals[r] = (totals[r] || 0) + n;
  const top = Object.keys(totals).sort((a, b) => totals[b] - totals[a]).slice(0, 4);
  const failed = top.map(r => ({ name: r || "(none)", values: all.map(s => rate(s.failed[r] || 0, s)) }));
  if (Object.keys(totals).length > top.length) {
    failed.push({ name: "other", values: all.map(s => rate(Object.entries(s.failed)
      .filter(([r]) => !top.includes(r)).reduce((a, [, n]) => a + n, 0), s)) });
  }
  if (failed.length === 0) failed.push({ name: "failed", values: all.map(() => 0) });
  draw("failed", failed, "/s");
  draw("latency", [
    { name: "p50", values: all.map(s => s.p50_ms) },
    { name: "p99", values: all.map(s => s.p99_ms) },
  ], " ms");
  draw("queue", [{ name: "waiting", values: all.map(s => s.queued) }], "");
  // Each app's strip: one letter a sample, the interval in progress last.
  document.getElementById("health").replaceChildren(...Object.entries(history.health).flatMap(([name, codes]) => {
    const strip = svg("svg", { viewBox: `0 0 ${W} 12`, preserveAspectRatio: "none", "data-app": name });
    const w = (W - 2) / Math.max(codes.length, 60);
    [...codes].forEach((c, i) => strip.appendChild(svg("rect", {
      class: "cell " + (CELL[c] || "idle"), x: W - (codes.length - i) * w, y: 0, width: Math.max(1, w - 1), height: 12,
    })));
    return [el("span", name), strip];
  }));
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
    a.settings, sends(a),
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
  if (data.history) charts(data.history);
  document.getElementById("updated").textContent = new Date(data.time_ms).toLocaleTimeString();
}

// An app's sends: paused by an operator or not, with the button that changes it.
function sends(a) {
  const cell = el("span");
  if (a.paused) {
    cell.appendChild(el("span", `paused since ${a.paused.since}` + (a.paused.reject ? ", refusing new" : ""), "bad"));
  } else {
    cell.appendChild(el("span", "sending", "ok"));
  }
  const b = el("button", a.paused ? "Resume" : "Pause");
  b.type = "button";
  b.id = (a.paused ? "resume-" : "pause-") + a.name;
  b.addEventListener("click", async () => {
    b.disabled = true;
    const r = await fetch(`/dashboard/apps/${encodeURIComponent(a.name)}/${a.paused ? "resume" : "pause"}`,
      { method: "POST", credentials: "same-origin", headers: { "x-csrf-token": csrf } });
    if (!r.ok) cell.appendChild(el("span", ` refused: ${r.status}`, "bad"));
    refresh();
  });
  cell.appendChild(document.createTextNode(" "));
  cell.appendChild(b);
  return cell;
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

const FINAL = new Set(["delivered", "failed", "expired", "cancelled"]);
const WAITING = new Set(["scheduled", "queued"]);

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

// The lookup box: a notification id shows its document and every attempt; a device token
// shows whether it is registered dead (with a button that clears it) and its last
// notifications, each a link to its own lookup.
const ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function table(head, rows, cls) {
  const t = el("table", null, cls);
  if (head) {
    const tr = el("tr");
    for (const h of head) tr.appendChild(el("th", h));
    t.appendChild(el("thead")).appendChild(tr);
  }
  t.appendChild(el("tbody")).replaceChildren(...rows);
  return t;
}

function stateCell(doc) {
  return el("span", doc.state, doc.state === "delivered" ? "ok" : (FINAL.has(doc.state) ? "bad" : ""));
}

function showNotification(out, doc) {
  const fields = [
    ["id", doc.id], ["app", doc.app], ["token", el("span", doc.token, "token")],
    ["state", stateCell(doc)], ["attempts", doc.attempts], ["last status", doc.status_code ?? "–"],
    ["reason", doc.reason ?? "–"], ["accepted", doc.created_at], ["updated", doc.updated_at],
    ["send at", doc.send_at ?? "–"], ["expires", doc.expires_at],
  ];
  const attempts = (doc.history || []).map((a, i) => row([
    i + 1, a.at, a.status_code ?? "–", a.reason ?? "–", a.connection ?? "–",
  ]));
  if (doc.request_id) fields.splice(1, 0, ["request", doc.request_id]);
  // What still waits can be taken back: this notification, or what of its request waits.
  const controls = el("div", null, "controls");
  if (WAITING.has(doc.state)) {
    const cancel = el("button", "Cancel");
    cancel.type = "button";
    cancel.id = "lookup-cancel";
    cancel.addEventListener("click", async () => {
      const r = await fetch(`/dashboard/notifications/${doc.id}/cancel`,
        { method: "POST", credentials: "same-origin", headers: { "x-csrf-token": csrf } });
      const answer = r.status === 204 ? null : await r.json().catch(() => null);
      if (r.ok) lookUp(doc.app, doc.id);
      else controls.appendChild(el("span", ` not cancelled: ${answer && answer.error ? answer.error.message : r.status}`, "bad"));
    });
    controls.appendChild(cancel);
  }
  if (doc.request_id && !FINAL.has(doc.state)) {
    const all = el("button", "Cancel its request");
    all.type = "button";
    all.id = "lookup-cancel-request";
    all.addEventListener("click", async () => {
      const r = await fetch(`/dashboard/requests/${doc.request_id}/cancel`,
        { method: "POST", credentials: "same-origin", headers: { "x-csrf-token": csrf } });
      const answer = await r.json().catch(() => null);
      if (r.ok) {
        await lookUp(doc.app, doc.id);
        document.getElementById("lookup-result").appendChild(el("p",
          `Its request: ${answer.cancelled} cancelled, ${answer.already_gone} already gone.`, "note"));
      } else {
        controls.appendChild(el("span", ` refused: ${answer && answer.error ? answer.error.message : r.status}`, "bad"));
      }
    });
    controls.appendChild(document.createTextNode(" "));
    controls.appendChild(all);
  }
  out.replaceChildren(
    table(null, fields.map(row), "fields"),
    controls,
    el("h3", "Attempts"),
    attempts.length ? table(["#", "time", "status", "reason", "connection"], attempts, "attempts")
      : el("p", "No attempt yet.", "note"));
}

function showToken(out, doc) {
  const dead = el("div", null, "dead");
  if (doc.dead) {
    dead.appendChild(el("span", `registered dead since ${doc.dead.since} (${doc.dead.reason}): sends to it are suppressed`, "bad"));
    const clear = el("button", "Clear");
    clear.type = "button";
    clear.id = "lookup-clear";
    clear.addEventListener("click", async () => {
      const r = await fetch(`/dashboard/tokens/${encodeURIComponent(doc.app)}/${doc.token}/clear`,
        { method: "POST", credentials: "same-origin", headers: { "x-csrf-token": csrf } });
      if (r.ok || r.status === 404) lookUp(doc.app, doc.token);
      else dead.appendChild(el("span", `refused: ${r.status}`, "bad"));
    });
    dead.appendChild(clear);
  } else {
    dead.appendChild(el("span", "not registered dead", "ok"));
  }
  const rows = doc.notifications.map(n => {
    const link = el("button", n.id, "link token");
    link.type = "button";
    link.addEventListener("click", () => lookUp(doc.app, n.id));
    return row([link, n.created_at, stateCell(n), n.attempts, n.reason ?? "–"]);
  });
  out.replaceChildren(dead, el("h3", `Last notifications to ${doc.token.slice(0, 12)}… (${doc.app})`),
    rows.length ? table(["id", "accepted", "state", "attempts", "reason"], rows, "notifications")
      : el("p", "None stored.", "note"));
  if (doc.truncated) out.appendChild(el("p", "Searched the newest 1,000,000 notifications only.", "note"));
}

// Only the latest lookup's answer is shown, whichever arrives first.
let lookups = 0;

async function lookUp(app, q) {
  const out = document.getElementById("lookup-result");
  const mine = ++lookups;
  document.getElementById("lookup-q").value = q;
  out.replaceChildren(el("p", "looking…", "note"));
  const url = ID.test(q) ? "/dashboard/notifications/" + q
    : `/dashboard/tokens/${encodeURIComponent(app)}/${encodeURIComponent(q)}`;
  let r, answer;
  try {
    r = await fetch(url, { credentials: "same-origin" });
    answer = await r.json().catch(() => null);
  } catch (e) {
    if (mine === lookups) out.replaceChildren(el("p", "The gateway did not answer.", "bad"));
    return;
  }
  if (mine !== lookups) return;
  if (r.status === 401) { window.location.reload(); return; }
  if (!r.ok) {
    const why = answer && answer.error ? answer.error.message : `HTTP ${r.status}`;
    out.replaceChildren(el("p", `${r.status === 404 ? "Not found" : "Refused"}: ${why}`, "bad"));
    return;
  }
  if (ID.test(q)) showNotification(out, answer); else showToken(out, answer);
}

document.getElementById("lookup-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  lookUp(form.get("app"), String(form.get("q")).trim());
});

refresh();
setInterval(refresh, 2000);
