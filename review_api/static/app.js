// edgemine review page: plain JS, no build step. Keyboard first; every request carries the bearer token.
"use strict";

const $ = (sel) => document.querySelector(sel);
const ROOT_KEYS = "asdfghjqwtyiop"; // letters free of the verdict/skip/view keys (e n u k r l)
const CATEGORY_KEYS = "1234567890";

const state = {
  token: sessionStorage.getItem("edgemine-token") || "",
  me: null,
  view: "review",
  current: null,      // {lease, item}
  shownAt: 0,
  verdict: null,
  category: null,
  roots: new Set(),
  key: null,          // idempotency key of the decision being made
  busy: false,
  decided: 0,
  seconds: 0,
  blobs: [],
  renewTimer: null,
};

function uuid() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return "k" + Date.now().toString(36) + Math.random().toString(36).slice(2);
}

async function api(method, path, body, extraHeaders) {
  const headers = Object.assign({ Authorization: "Bearer " + state.token }, extraHeaders || {});
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401) { signOut("Your token is not valid (any more)."); throw new Error("unauthorized"); }
  return res;
}

function detail(json) {
  if (!json || json.detail === undefined) return "unexpected answer";
  if (typeof json.detail === "string") return json.detail;
  return json.detail.map((e) => `${e.loc[e.loc.length - 1]}: ${e.msg}`).join("; ");
}

function toast(text, ms = 2500) {
  const t = $("#toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, ms);
}

// ------------------------------------------------------------------ sign in
function signOut(message) {
  state.token = "";
  sessionStorage.removeItem("edgemine-token");
  show("login");
  $("#tabs").hidden = true;
  $("#who").textContent = "";
  $("#login-error").textContent = message || "";
  $("#token").focus();
}

async function signIn(token) {
  state.token = token.trim();
  let res;
  try { res = await api("GET", "/me"); } catch (e) { return; }
  if (!res.ok) { signOut(detail(await res.json())); return; }
  state.me = await res.json();
  sessionStorage.setItem("edgemine-token", state.token);
  $("#who").innerHTML = `${escapeHtml(state.me.name)} <span class="role">${state.me.role}</span> ` +
    `<a href="#" id="signout">sign out</a>`;
  $("#signout").onclick = (e) => { e.preventDefault(); signOut(); };
  $("#tabs").hidden = false;
  $("#tab-lead").hidden = state.me.role === "reviewer";
  switchView("review");
}

function show(id) {
  for (const s of ["login", "review", "lead"]) $("#" + s).hidden = s !== id;
}

function switchView(view) {
  if (view === "lead" && (!state.me || state.me.role === "reviewer")) return;
  state.view = view;
  document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.view === view));
  show(view);
  if (view === "review" && !state.current) nextItem();
  if (view === "lead") loadLead();
}

// ------------------------------------------------------------------ review
function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

async function loadImage(img, url) {
  img.removeAttribute("src");
  try {
    const res = await api("GET", url);
    if (!res.ok) { img.alt = "image unavailable"; img.classList.add("missing"); return; }
    const blobUrl = URL.createObjectURL(await res.blob());
    state.blobs.push(blobUrl);
    img.src = blobUrl;
  } catch (e) { img.alt = "image unavailable"; }
}

function strip(el, refs, label) {
  el.innerHTML = "";
  if (!refs.length) { el.innerHTML = `<span class="muted small">none</span>`; return; }
  for (const ref of refs) {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.alt = label;
    fig.appendChild(img);
    const cap = document.createElement("figcaption");
    cap.textContent = ref.distance != null ? `d=${ref.distance.toFixed(3)}` : (ref.frame_id || "");
    fig.appendChild(cap);
    el.appendChild(fig);
    loadImage(img, ref.url + "?size=small");
  }
}

function renderItem(next) {
  state.blobs.forEach((u) => URL.revokeObjectURL(u));
  state.blobs = [];
  state.current = next;
  state.verdict = null;
  state.category = null;
  state.roots = new Set();
  state.key = uuid();
  state.shownAt = performance.now();
  const item = next.item;
  $("#empty").hidden = true;
  $("#item").hidden = false;
  loadImage($("#frame-img"), item.frame.url);
  const when = new Date(item.timestamp).toISOString().replace("T", " ").slice(0, 19);
  $("#frame-caption").textContent = `${item.frame_id} · ${item.drive_id} · ${when} UTC` +
    (item.label ? ` · model says "${item.label}"` : "");
  $("#score").textContent = item.score == null ? "–" : item.score.toFixed(3);
  $("#rank").textContent = `rank ${item.rank} · ${item.run_id}`;
  $("#signals").innerHTML = Object.entries(item.signals).map(([k, v]) =>
    `<div class="signal"><span>${escapeHtml(k)}</span><div class="bar"><i data-share="${Math.round(100 * Math.max(0, Math.min(1, v || 0)))}"></i></div>` +
    `<b>${v == null ? "–" : v.toFixed(2)}</b></div>`).join("");
  // widths through the CSSOM: the Content-Security-Policy refuses inline style attributes in markup
  document.querySelectorAll("#signals .bar i").forEach((bar) => { bar.style.width = `${bar.dataset.share}%`; });
  $("#reasons").innerHTML = item.reasons.map((r) => `<li>${escapeHtml(r)}</li>`).join("");
  $("#categories").innerHTML = item.taxonomy.categories.map((c, i) =>
    `<button type="button" class="chip" data-category="${escapeHtml(c)}">` +
    (i < CATEGORY_KEYS.length ? `<kbd>${CATEGORY_KEYS[i]}</kbd> ` : "") + `${escapeHtml(c.replace(/_/g, " "))}</button>`).join("");
  $("#root-causes").innerHTML = item.taxonomy.root_causes.map((c, i) =>
    `<button type="button" class="chip" data-root="${escapeHtml(c)}">` +
    (i < ROOT_KEYS.length ? `<kbd>${ROOT_KEYS[i].toUpperCase()}</kbd> ` : "") + `${escapeHtml(c.replace(/_/g, " "))}</button>`).join("");
  $("#metadata").innerHTML = Object.entries(item.metadata).map(([k, v]) =>
    `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(typeof v === "number" ? +v.toFixed(4) : v)}</td></tr>`).join("");
  $("#notes").value = "";
  $("#decision-error").textContent = "";
  strip($("#context"), item.context, "context frame");
  strip($("#neighbors"), item.neighbors, "reference frame");
  strip($("#scenario"), item.scenario, "scenario peer");
  document.querySelectorAll("#categories .chip").forEach((b) => { b.onclick = () => pickCategory(b.dataset.category); });
  document.querySelectorAll("#root-causes .chip").forEach((b) => { b.onclick = () => toggleRoot(b.dataset.root); });
  updateDecisionUi();
  scheduleRenew(next.lease);
}

function scheduleRenew(lease) {
  clearTimeout(state.renewTimer);
  const ms = new Date(lease.expires_at) - Date.now();
  $("#lease").textContent = `lease until ${new Date(lease.expires_at).toLocaleTimeString()}`;
  // renew at 80% of the lease while the page is open: reviewers who think long do not lose the item
  state.renewTimer = setTimeout(async () => {
    if (!state.current || state.current.lease.id !== lease.id) return;
    const res = await api("POST", `/leases/${lease.id}/renew`);
    if (res.ok) { state.current.lease = await res.json(); scheduleRenew(state.current.lease); }
  }, Math.max(5000, ms * 0.8));
}

function updateDecisionUi() {
  document.querySelectorAll(".verdicts button").forEach((b) => b.classList.toggle("on", b.dataset.verdict === state.verdict));
  document.querySelectorAll("#categories .chip").forEach((b) => b.classList.toggle("on", b.dataset.category === state.category));
  document.querySelectorAll("#root-causes .chip").forEach((b) => b.classList.toggle("on", state.roots.has(b.dataset.root)));
  $("#categories").classList.toggle("wanted", state.verdict === "edge_case" && !state.category);
  $("#submit").disabled = !state.verdict || (state.verdict === "edge_case" && !state.category);
}

function pickVerdict(v) {
  state.verdict = v;
  if (v !== "edge_case") state.category = null;
  updateDecisionUi();
}

function pickCategory(c) {
  state.category = c;
  state.verdict = "edge_case";
  updateDecisionUi();
}

function toggleRoot(r) {
  if (state.roots.has(r)) state.roots.delete(r); else state.roots.add(r);
  updateDecisionUi();
}

async function nextItem() {
  if (state.busy) return;
  state.busy = true;
  try {
    const res = await api("POST", "/queue/next");
    if (res.status === 204) {
      state.current = null;
      $("#item").hidden = true;
      $("#empty").hidden = false;
      return;
    }
    if (!res.ok) { toast(detail(await res.json())); return; }
    renderItem(await res.json());
  } finally { state.busy = false; }
}

async function submit() {
  if (!state.current || state.busy || $("#submit").disabled) return;
  state.busy = true;
  const item = state.current.item;
  const seconds = Math.round((performance.now() - state.shownAt) / 100) / 10;
  const body = { verdict: state.verdict, root_causes: [...state.roots], seconds };
  if (state.category) body.category = state.category;
  const notes = $("#notes").value.trim();
  if (notes) body.notes = notes;
  let res = null;
  for (let attempt = 0; attempt < 4 && !res; attempt++) { // retries reuse the idempotency key: never twice
    try { res = await api("POST", `/items/${item.id}/decisions`, body, { "Idempotency-Key": state.key }); }
    catch (e) { if (e.message === "unauthorized") { state.busy = false; return; } await new Promise((r) => setTimeout(r, 300 * (attempt + 1))); }
  }
  state.busy = false;
  if (!res) { $("#decision-error").textContent = "Network trouble: press Enter to try again."; return; }
  if (res.status === 409) { toast(detail(await res.json())); state.current = null; nextItem(); return; }
  if (!res.ok) { $("#decision-error").textContent = detail(await res.json()); return; }
  state.decided += 1;
  state.seconds += seconds;
  $("#session-stats").textContent = `${state.decided} decided · ${(state.seconds / state.decided).toFixed(1)} s each`;
  state.current = null;
  nextItem();
}

async function skip() {
  if (!state.current || state.busy) return;
  await api("DELETE", `/leases/${state.current.lease.id}`);
  state.current = null;
  toast("Skipped: it goes to someone else.");
  nextItem();
}

// ------------------------------------------------------------------ lead
async function loadLead() {
  const res = await api("GET", "/runs");
  if (!res.ok) { $("#lead-msg").textContent = detail(await res.json()); return; }
  const runs = await res.json();
  const sel = $("#run-select");
  const keep = sel.value;
  sel.innerHTML = runs.map((r) => `<option value="${escapeHtml(r.run_id)}">${escapeHtml(r.run_id)} (${r.n_items})</option>`).join("");
  if (keep && runs.some((r) => r.run_id === keep)) sel.value = keep;
  if (!runs.length) { $("#cards").innerHTML = `<p class="muted">No runs imported yet.</p>`; return; }
  await loadRunMetrics(sel.value);
}

function fmt(x, digits = 3) { return x == null ? "–" : (typeof x === "number" ? x.toFixed(digits) : escapeHtml(x)); }

function age(seconds) {
  if (seconds == null) return "–";
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

async function loadRunMetrics(runId) {
  const res = await api("GET", `/runs/${encodeURIComponent(runId)}/metrics`);
  if (!res.ok) { $("#lead-msg").textContent = detail(await res.json()); return; }
  const m = await res.json();
  const q = m.queue, a = m.agreement;
  const cards = [
    ["waiting reviews", q.waiting_reviews], ["in review", q.leased], ["complete", q.by_status.complete],
    ["escalated", q.by_status.escalated], ["confirmed edge cases", q.confirmed_edge_cases],
    ["oldest waiting", age(q.oldest_waiting_seconds)], ["oldest escalation", age(q.oldest_escalation_seconds)],
    ["Cohen's κ (mean)", fmt(a.cohen_kappa_mean)], ["Fleiss' κ", fmt(a.fleiss_kappa)],
    ["Krippendorff's α", fmt(a.krippendorff_alpha)], ["items with overlap", a.items],
    ["review hours", fmt(m.review_hours, 2)], ["cost / edge case", fmt(m.cost_per_confirmed_edge_case, 2)],
  ];
  $("#cards").innerHTML = cards.map(([k, v]) => `<div class="card"><b>${v}</b><span>${k}</span></div>`).join("");
  $("#reviewer-table").innerHTML = `<tr><th>reviewer</th><th>decisions</th><th>items/h</th><th>median s</th>` +
    `<th>gold accuracy</th><th>gold seen</th><th>agrees with consensus</th><th>unsure</th></tr>` +
    m.reviewers.map((r) => `<tr><td>${escapeHtml(r.reviewer)}</td><td>${r.decisions}</td><td>${fmt(r.items_per_hour, 0)}</td>` +
      `<td>${fmt(r.median_seconds, 1)}</td><td>${fmt(r.gold_accuracy, 2)}</td><td>${r.gold_reviewed}</td>` +
      `<td>${fmt(r.agreement_with_consensus, 2)}</td><td>${fmt(r.unsure_rate, 2)}</td></tr>`).join("");
  $("#pairs-table").innerHTML = `<tr><th>pair</th><th>κ</th><th>shared items</th></tr>` +
    a.cohen_kappa_pairs.map((p) => `<tr><td>${escapeHtml(p.a)} · ${escapeHtml(p.b)}</td><td>${fmt(p.kappa)}</td><td>${p.items}</td></tr>`).join("");
  await loadEscalations(runId);
}

async function loadEscalations(runId) {
  const res = await api("GET", `/escalations?run_id=${encodeURIComponent(runId)}&limit=50`);
  const list = await res.json();
  const runRes = await api("GET", `/runs/${encodeURIComponent(runId)}`);
  const run = await runRes.json();
  const box = $("#escalations");
  if (!list.length) { box.innerHTML = `<p class="muted">No escalations.</p>`; return; }
  box.innerHTML = "";
  for (const e of list) {
    const row = document.createElement("div");
    row.className = "escalation";
    const votes = Object.entries(e.votes).map(([k, v]) => `${escapeHtml(k)} ×${v}`).join(", ");
    row.innerHTML = `<img alt="frame"><div><b>${escapeHtml(e.frame_id)}</b> <span class="muted">rank ${e.rank} · ${escapeHtml(e.reason || "")} · ${age((Date.now() - new Date(e.escalated_at)) / 1000)} ago</span>` +
      `<div class="votes">${votes}</div><div class="resolve">` +
      `<select><option value="not_edge_case">not an edge case</option>` +
      run.categories.map((c) => `<option value="${escapeHtml(c)}">edge case: ${escapeHtml(c.replace(/_/g, " "))}</option>`).join("") +
      `</select> <label><input type="checkbox"> make gold</label> <button>Resolve</button></div></div>`;
    box.appendChild(row);
    loadImage(row.querySelector("img"), `/items/${e.item_id}/images/frame/0?size=small`);
    row.querySelector("button").onclick = async () => {
      const choice = row.querySelector("select").value;
      const body = choice === "not_edge_case" ? { verdict: "not_edge_case" } : { verdict: "edge_case", category: choice };
      body.make_gold = row.querySelector("input").checked;
      const r = await api("POST", `/items/${e.item_id}/resolve`, body);
      if (r.ok) { toast(`Resolved ${e.frame_id}`); loadRunMetrics(runId); } else toast(detail(await r.json()));
    };
  }
}

async function recompute() {
  const runId = $("#run-select").value;
  if (!runId) return;
  $("#lead-msg").textContent = "running Dawid-Skene…";
  const res = await api("POST", `/runs/${encodeURIComponent(runId)}/consensus`);
  const r = await res.json();
  $("#lead-msg").textContent = res.ok ? `Dawid-Skene: ${r.items_considered} items with ≥3 reviews, ${r.items_updated} changed, ${r.escalated} escalated` : detail(r);
  loadRunMetrics(runId);
}

// ------------------------------------------------------------------ keys
function onKey(ev) {
  const typing = ev.target && (ev.target.tagName === "TEXTAREA" || ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT");
  if (!$("#help").hidden) { if (ev.key === "Escape" || ev.key === "?") { $("#help").hidden = true; ev.preventDefault(); } return; }
  if (typing) {
    if (ev.key === "Escape") ev.target.blur();
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey) && ev.target.id === "notes") { ev.preventDefault(); submit(); }
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey || !state.me) return;
  const k = ev.key.toLowerCase();
  if (k === "?") { $("#help").hidden = false; ev.preventDefault(); return; }
  if (k === "r") { switchView("review"); return; }
  if (k === "l") { switchView("lead"); return; }
  if (state.view !== "review") return;
  if (!state.current) { if (k === " " || k === "enter") { ev.preventDefault(); nextItem(); } return; }
  const cats = state.current.item.taxonomy.categories;
  const roots = state.current.item.taxonomy.root_causes;
  if (k === "e") pickVerdict("edge_case");
  else if (k === "n") pickVerdict("not_edge_case");
  else if (k === "u") pickVerdict("unsure");
  else if (CATEGORY_KEYS.includes(k) && CATEGORY_KEYS.indexOf(k) < cats.length) pickCategory(cats[CATEGORY_KEYS.indexOf(k)]);
  else if (ROOT_KEYS.includes(k) && ROOT_KEYS.indexOf(k) < roots.length) toggleRoot(roots[ROOT_KEYS.indexOf(k)]);
  else if (k === "enter") submit();
  else if (k === "k") skip();
  else if (k === "/") $("#notes").focus();
  else return;
  ev.preventDefault();
}

window.addEventListener("DOMContentLoaded", () => {
  document.addEventListener("keydown", onKey);
  $("#login-form").onsubmit = (e) => { e.preventDefault(); signIn($("#token").value); };
  document.querySelectorAll(".tab").forEach((b) => { b.onclick = () => switchView(b.dataset.view); });
  document.querySelectorAll(".verdicts button").forEach((b) => { b.onclick = () => pickVerdict(b.dataset.verdict); });
  $("#decision").onsubmit = (e) => { e.preventDefault(); submit(); };
  $("#skip").onclick = skip;
  $("#retry").onclick = nextItem;
  $("#help-link").onclick = (e) => { e.preventDefault(); $("#help").hidden = false; };
  $("#help-close").onclick = () => { $("#help").hidden = true; };
  $("#refresh-lead").onclick = loadLead;
  $("#recompute").onclick = recompute;
  $("#run-select").onchange = () => loadRunMetrics($("#run-select").value);
  if (state.token) signIn(state.token); else signOut();
});
