// vqmon live view: polls api/streams and keeps one card per stream up to date.
// Text goes in with textContent only (stream errors are free text); URLs are relative so the
// page also works behind a reverse proxy under a path prefix.
"use strict";

const POLL_MS = 2000;
const HISTORY = 120;          // points in each sparkline
const SVG_NS = "http://www.w3.org/2000/svg";
const cards = new Map();      // stream name -> card element

function fmt(v, digits = 1) {
  return v === null || v === undefined ? "–" : Number(v).toFixed(digits);
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function describeInstance(inst) {
  const parts = [`v${inst.version}`];
  for (const [model, backend] of Object.entries(inst.models || {})) parts.push(`${model}@${backend}`);
  if (inst.shard) {
    parts.push(`shard ${inst.shard.index}/${inst.shard.count} (${inst.shard.assigned} of ${inst.shard.configured} streams)`);
  }
  for (const [name, sink] of Object.entries(inst.sinks || {})) parts.push(`${name} ${sink.connected ? "up" : "DOWN"}`);
  return parts.join(" · ");
}

function polyline(cls, values, count) {
  const line = document.createElementNS(SVG_NS, "polyline");
  line.setAttribute("class", cls);
  const step = count > 1 ? 200 / (count - 1) : 0;
  const pts = [];
  values.forEach((v, i) => {
    if (v !== null) pts.push(`${(i * step).toFixed(1)},${(46 - (v / 100) * 44).toFixed(1)}`);
  });
  line.setAttribute("points", pts.join(" "));
  return line;
}

function drawSparkline(svg, history) {
  const scores = (history && history.smoothed) || [];
  const raw = (history && history.score) || [];
  const worst = (history && history.worst) || [];
  svg.replaceChildren(polyline("worst-line", worst, worst.length), polyline("raw-line", raw, raw.length),
                      polyline("score-line", scores, scores.length));
  svg.dataset.points = String(scores.length);
  const title = document.createElementNS(SVG_NS, "title");
  title.textContent = `last ${scores.length} scores: smoothed (solid), per frame (faint), worst region (dashed), 0-100`;
  svg.appendChild(title);
}

function newCard(name) {
  const card = document.getElementById("card").content.firstElementChild.cloneNode(true);
  card.dataset.stream = name;
  card.querySelector(".name").textContent = name;
  document.getElementById("streams").appendChild(card);
  cards.set(name, card);
  return card;
}

function update(card, s, now) {
  const q = (sel) => card.querySelector(sel);
  const state = q(".state");
  state.textContent = s.state;
  state.className = `state ${s.state}`;
  q(".url").textContent = s.url;
  q(".url").title = s.url;
  q(".error").textContent = s.up ? "" : (s.error || "");
  q(".smoothed").textContent = fmt(s.score_smoothed);
  q(".score").textContent = fmt(s.score);
  q(".worst").textContent = fmt(s.worst);
  drawSparkline(q(".spark"), s.history);
  const img = q(".thumb img");
  if (s.thumbnail && img.dataset.version !== String(s.thumbnail.version)) {
    img.dataset.version = String(s.thumbnail.version);
    img.src = `api/streams/${encodeURIComponent(s.name)}/thumbnail.jpg?v=${s.thumbnail.version}`;
    img.alt = `${s.name}: latest scored frame, region map overlaid (red = poor), worst cell outlined`;
  }
  const alerts = q(".alerts");
  alerts.replaceChildren(...s.alerts.map((a) => {
    const li = document.createElement("li");
    li.className = a.severity;
    li.textContent = `${a.severity}: ${a.condition} for ${ago(now - a.started_at)}`;
    return li;
  }));
  card.classList.toggle("alerting", s.alerts.some((a) => a.severity === "critical"));
  q(".stats").textContent =
    `${fmt(s.fps)} fps · ${s.scored} scored · ${s.dropped} dropped · ${s.reconnects} reconnects · ${s.model}`;
}

async function poll() {
  const conn = document.getElementById("connection");
  try {
    const res = await fetch(`api/streams?history=${HISTORY}`, { cache: "no-store" });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const data = await res.json();
    const now = data.instance.now;
    document.getElementById("instance").textContent = describeInstance(data.instance);
    const up = data.streams.filter((s) => s.up).length;
    const alerting = data.streams.filter((s) => s.alerts.length).length;
    document.getElementById("summary").textContent =
      `${data.streams.length} streams: ${up} up, ${data.streams.length - up} not up, ${alerting} with alerts`;
    const seen = new Set();
    for (const s of data.streams) {
      seen.add(s.name);
      update(cards.get(s.name) || newCard(s.name), s, now);
    }
    for (const [name, card] of cards) {
      if (!seen.has(name)) { card.remove(); cards.delete(name); }
    }
    conn.textContent = `updated ${new Date(now * 1000).toLocaleTimeString()}`;
    conn.classList.remove("lost");
  } catch (err) {
    conn.textContent = `connection lost (${err.message}); retrying`;
    conn.classList.add("lost");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
