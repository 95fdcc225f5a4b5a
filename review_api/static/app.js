// edgemine review page: plain JS, no build step. Keyboard first; every request carries the bearer token.
// Served under a strict Content-Security-Policy: no inline script or style, no eval, images as blob: URLs.
"use strict";

const $ = (sel) => document.querySelector(sel);
const $$ = (sel) => [...document.querySelectorAll(sel)];
const ROOT_KEYS = "asdfghjqwtyiop"; // letters free of the verdict/skip/undo/view keys (e n u k z v r l x i)
const CATEGORY_KEYS = "1234567890";
const INTENT_MS = 1500; // a text field may take focus this long after the user clicked, tabbed or pressed "/"

const state = {
  token: sessionStorage.getItem("edgemine-token") || "",
  me: null,
  view: "review",
  leadReviewing: false, // a lead chose to review (nothing is leased to a lead before that)
  current: null,      // {lease, item}
  amending: null,     // the withdrawn decision when the current item came back by undo
  shownAt: 0,
  verdict: null,
  category: null,
  roots: new Set(),
  key: null,          // idempotency key of the decision being made
  busy: false,
  decided: 0,         // this page's own count: shown only when the server's progress is unavailable
  seconds: 0,
  lastRun: null,
  blobs: [],
  renewTimer: null,
  gallery: [],        // the lightbox's frames: [{url, label}]
  galleryAt: 0,
  galleryReturn: null,
  detailReturn: null,
  intentAt: -Infinity,
  run: null,          // the lead view's run
  items: [],          // the lead view's item browser rows
  nextAfter: null,
  reviewers: new Map(), // reviewer_id -> name, learnt from the item browser's reviews
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

async function json(res) {
  try { return await res.json(); } catch (e) { return null; }
}

function detail(body) {
  if (!body || body.detail === undefined) return "unexpected answer";
  if (typeof body.detail === "string") return body.detail;
  return body.detail.map((e) => `${e.loc[e.loc.length - 1]}: ${e.msg}`).join("; ");
}

function toast(text, ms = 3000) {
  const t = $("#toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, ms);
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function words(s) { return s == null ? "" : String(s).replace(/_/g, " "); }

const STATUS_WORDS = { queued: "waiting reviews", complete: "complete", escalated: "escalated", resolved: "resolved by a lead", gold: "gold" };

function statusText(s) { return STATUS_WORDS[s] || words(s); }

// a probability that the answer is right, rounded down: "1.00" only for a lead's or a gold answer (exactly 1)
function confText(c) { return (Math.floor(c * 100 + 1e-9) / 100).toFixed(2); }

function label(verdict, category) {
  if (verdict === "edge_case") return category ? `edge case · ${words(category)}` : "edge case";
  return words(verdict);
}

function clock(iso) { return iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "–"; }

function fmt(x, digits = 3) { return x == null ? "–" : (typeof x === "number" ? x.toFixed(digits) : escapeHtml(x)); }

function age(seconds) {
  if (seconds == null) return "–";
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// ------------------------------------------------------------------ focus: text fields only on the user's say-so
function isTextField(el) {
  if (!el || !el.tagName) return false;
  if (el.isContentEditable || el.tagName === "TEXTAREA") return true;
  return el.tagName === "INPUT" && !["checkbox", "radio", "button", "submit"].includes(el.type);
}

function markIntent() { state.intentAt = performance.now(); }

function focusField(el) { markIntent(); el.focus(); }

// The browser may move focus into a field by itself (its own undo of an earlier edit does): a field the user
// did not click, tab to or open with "/" gives the focus straight back, so keys keep acting as shortcuts.
// The intent is used up by the next focus change, wherever it lands.
function guardFocus(ev) {
  const meant = performance.now() - state.intentAt <= INTENT_MS;
  state.intentAt = -Infinity;
  if (state.me && isTextField(ev.target) && !meant) ev.target.blur();
}

// ------------------------------------------------------------------ sign in
function signOut(message) {
  state.token = "";
  state.me = null;
  state.current = null;
  state.leadReviewing = false;
  sessionStorage.removeItem("edgemine-token");
  show("login");
  $("#tabs").hidden = true;
  $("#who").textContent = "";
  $("#login-error").textContent = message || "";
  focusField($("#token"));
}

async function signIn(token) {
  state.token = token.trim();
  let res;
  try { res = await api("GET", "/me"); } catch (e) { return; }
  if (!res.ok) { signOut(detail(await json(res))); return; }
  state.me = await res.json();
  sessionStorage.setItem("edgemine-token", state.token);
  $("#who").innerHTML = `${escapeHtml(state.me.name)} <span class="role">${state.me.role}</span> ` +
    `<a href="#" id="signout">sign out</a>`;
  $("#signout").onclick = (e) => { e.preventDefault(); signOut(); };
  $("#tabs").hidden = false;
  $("#tab-lead").hidden = !isLead();
  $("#help-views").hidden = !isLead(); // a reviewer has one view: no R · L line in the keys help
  document.activeElement && document.activeElement.blur();
  switchView(isLead() ? "lead" : "review"); // a lead lands on the lead view and is leased nothing
}

function isLead() { return !!state.me && state.me.role !== "reviewer"; }

function show(id) {
  for (const s of ["login", "review", "lead"]) $("#" + s).hidden = s !== id;
}

function switchView(view) {
  if (view === "lead" && !isLead()) return;
  state.view = view;
  $$(".tab").forEach((b) => {
    b.classList.toggle("active", b.dataset.view === view);
    if (b.dataset.view === view) b.setAttribute("aria-current", "page"); else b.removeAttribute("aria-current");
  });
  show(view);
  if (view === "review" && !state.current) {
    if (isLead() && !state.leadReviewing) showStart(); else nextItem();
  }
  if (view === "lead") loadLead();
}

function showStart() {
  $("#item").hidden = true;
  $("#empty").hidden = true;
  $("#start").hidden = false;
}

function startReviewing() {
  state.leadReviewing = true;
  $("#start").hidden = true;
  nextItem();
}

// ------------------------------------------------------------------ review: evidence
async function loadImage(img, url) {
  img.removeAttribute("src");
  img.classList.remove("missing");
  try {
    const res = await api("GET", url);
    if (!res.ok) { img.alt = "image unavailable"; img.classList.add("missing"); return; }
    const blobUrl = URL.createObjectURL(await res.blob());
    state.blobs.push(blobUrl);
    img.src = blobUrl;
  } catch (e) { img.alt = "image unavailable"; }
}

function offsetText(s) {
  if (s == null || Number.isNaN(s)) return null;
  if (Math.abs(s) < 0.05) return "0.0 s";
  return `${s > 0 ? "+" : "-"}${Math.abs(s).toFixed(1)} s`;
}

// Context frames in drive order with their time offset from the candidate; the candidate itself ("this
// frame", offset 0) is placed among them. Runs imported without offsets get their position only.
function contextEntries(item) {
  const offsets = item.context_offsets_s;
  const refs = item.context.map((ref, k) => {
    const s = offsets && ref.index < offsets.length ? offsets[ref.index] : null;
    return { ref, s, text: s == null ? `#${k + 1}` : offsetText(s), current: s != null && Math.abs(s) < 0.05 };
  });
  if (!offsets || refs.some((e) => e.current)) return refs;
  const me = { ref: item.frame, s: 0, text: "0.0 s", current: true };
  const at = refs.findIndex((e) => e.s > 0);
  refs.splice(at < 0 ? refs.length : at, 0, me);
  return refs;
}

function strip(el, entries, kind) {
  el.innerHTML = "";
  if (!entries.length) { el.innerHTML = `<span class="muted small">none</span>`; return; }
  for (const e of entries) {
    const fig = document.createElement("figure");
    if (e.current) fig.classList.add("current");
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "thumb";
    const img = document.createElement("img");
    img.alt = `${kind} ${e.text}${e.current ? " (this frame)" : ""}`;
    btn.appendChild(img);
    const at = state.gallery.length;
    state.gallery.push({ url: e.ref.url, label: `${kind} · ${e.current ? "this frame" : e.text}` });
    btn.onclick = () => openLightbox(at, btn);
    fig.appendChild(btn);
    const cap = document.createElement("figcaption");
    cap.textContent = e.current ? `◆ this frame` : e.text;
    fig.appendChild(cap);
    el.appendChild(fig);
    loadImage(img, e.ref.url + "?size=small");
  }
}

const KEY_META = [ // always visible under the frame: what a reviewer judges the scene by
  ["light", ["time_of_day", "light", "lighting"]],
  ["weather", ["weather"]],
  ["road", ["road_type", "road"]],
  ["traffic", ["traffic_density", "traffic"]],
];

function keyMeta(meta) {
  const parts = [];
  for (const [name, keys] of KEY_META) {
    const k = keys.find((key) => meta[key] != null && meta[key] !== "");
    if (k) parts.push(`${name}: ${words(meta[k])}`);
    else if (name !== "traffic") parts.push(`${name}: –`);
  }
  if (typeof meta.speed_mps === "number") parts.push(`speed: ${meta.speed_mps.toFixed(1)} m/s (${Math.round(meta.speed_mps * 3.6)} km/h)`);
  else if (typeof meta.speed_kmh === "number") parts.push(`speed: ${Math.round(meta.speed_kmh)} km/h`);
  else parts.push("speed: –");
  return parts.join(" · ");
}

// ------------------------------------------------------------------ lightbox
function openLightbox(index, opener) {
  if (!state.gallery.length) return;
  state.galleryReturn = opener || document.activeElement;
  $("#lightbox").hidden = false;
  showLightbox(index);
  $("#lightbox-close").focus();
}

function showLightbox(index) {
  const n = state.gallery.length;
  state.galleryAt = ((index % n) + n) % n;
  const g = state.gallery[state.galleryAt];
  const img = $("#lightbox-img");
  img.alt = g.label;
  $("#lightbox-caption").textContent = `${g.label} (${state.galleryAt + 1} of ${n})`;
  loadImage(img, g.url);
}

function closeLightbox() {
  $("#lightbox").hidden = true;
  const back = state.galleryReturn;
  state.galleryReturn = null;
  if (back && back.isConnected && !isTextField(back)) back.focus();
}

// ------------------------------------------------------------------ review: an item
function renderItem(next, preset) {
  state.blobs.forEach((u) => URL.revokeObjectURL(u));
  state.blobs = [];
  state.current = next;
  state.amending = preset || null;
  state.verdict = preset ? preset.verdict : null;
  state.category = preset ? preset.category : null;
  state.roots = new Set(preset ? preset.root_causes || [] : []);
  state.key = uuid();
  state.shownAt = performance.now();
  state.lastRun = next.item.run_id;
  const item = next.item;
  $("#start").hidden = true;
  $("#empty").hidden = true;
  $("#item").hidden = false;
  loadImage($("#frame-img"), item.frame.url);
  const when = new Date(item.timestamp).toISOString().replace("T", " ").slice(0, 19);
  $("#frame-caption").textContent = `${item.frame_id} · ${item.drive_id} · ${when} UTC` +
    (item.label ? ` · model says "${item.label}"` : "");
  $("#keymeta").textContent = keyMeta(item.metadata || {});
  $("#score").textContent = item.score == null ? "–" : item.score.toFixed(3);
  $("#rank").textContent = `rank ${item.rank} · ${item.run_id}`;
  const within = item.novelty_calibration && item.novelty_calibration !== "reference" ? item.novelty_calibration : "";
  $("#signals").innerHTML = Object.entries(item.signals).map(([k, v]) =>
    `<div class="signal"><span>${escapeHtml(k)}</span><div class="bar"><i data-share="${Math.round(100 * Math.max(0, Math.min(1, v || 0)))}"></i></div>` +
    `<b>${v == null ? "–" : v.toFixed(2)}</b></div>`).join("") +
    // novelty ranked among the fleet's frames of a value the reference lacks, not against the reference
    (within ? `<div class="small" id="novelty-within">novelty among this fleet's ${escapeHtml(within)} frames</div>` : "");
  // widths through the CSSOM: the Content-Security-Policy refuses inline style attributes in markup
  $$("#signals .bar i").forEach((bar) => { bar.style.width = `${bar.dataset.share}%`; });
  $("#reasons").innerHTML = item.reasons.map((r) => `<li>${escapeHtml(r)}</li>`).join("");
  $("#categories").innerHTML = item.taxonomy.categories.map((c, i) =>
    `<button type="button" class="chip" data-category="${escapeHtml(c)}">` +
    (i < CATEGORY_KEYS.length ? `<kbd>${CATEGORY_KEYS[i]}</kbd> ` : "") + `${escapeHtml(words(c))}</button>`).join("");
  $("#root-causes").innerHTML = item.taxonomy.root_causes.map((c, i) =>
    `<button type="button" class="chip" data-root="${escapeHtml(c)}">` +
    (i < ROOT_KEYS.length ? `<kbd>${ROOT_KEYS[i].toUpperCase()}</kbd> ` : "") + `${escapeHtml(words(c))}</button>`).join("");
  $("#metadata").innerHTML = Object.entries(item.metadata).map(([k, v]) =>
    `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(typeof v === "number" ? +v.toFixed(4) : v)}</td></tr>`).join("");
  $("#notes").value = preset && preset.notes ? preset.notes : "";
  $("#decision-error").textContent = "";
  const note = $("#amend-note");
  note.hidden = !preset;
  note.textContent = preset ? `You withdrew your decision of ${clock(preset.decided_at)} (${label(preset.verdict, preset.category)}). ` +
    "It is preselected: change what you want and press Enter to decide again." : "";
  state.gallery = [{ url: item.frame.url, label: "this frame" }];
  $("#frame-open").onclick = () => openLightbox(0, $("#frame-open"));
  strip($("#context"), contextEntries(item), "context");
  strip($("#neighbors"), item.neighbors.map((r) => ({ ref: r, text: r.distance != null ? `d=${r.distance.toFixed(3)}` : (r.frame_id || "") })), "known frame");
  strip($("#scenario"), item.scenario.map((r) => ({ ref: r, text: r.frame_id || "" })), "scenario peer");
  $$("#categories .chip").forEach((b) => { b.onclick = () => pickCategory(b.dataset.category); });
  $$("#root-causes .chip").forEach((b) => { b.onclick = () => toggleRoot(b.dataset.root); });
  updateDecisionUi();
  scheduleRenew(next.lease);
  loadProgress(item.run_id);
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
  $$(".verdicts button").forEach((b) => {
    b.classList.toggle("on", b.dataset.verdict === state.verdict);
    b.setAttribute("aria-pressed", String(b.dataset.verdict === state.verdict));
  });
  $$("#categories .chip").forEach((b) => {
    b.classList.toggle("on", b.dataset.category === state.category);
    b.setAttribute("aria-pressed", String(b.dataset.category === state.category));
  });
  $$("#root-causes .chip").forEach((b) => {
    b.classList.toggle("on", state.roots.has(b.dataset.root));
    b.setAttribute("aria-pressed", String(state.roots.has(b.dataset.root)));
  });
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

// ------------------------------------------------------------------ review: progress (from the server, so a reload keeps it)
function progressText(p) {
  const parts = [`Item ${p.position} of ${p.total_items} in this run`];
  parts.push(`you: ${p.mine_in_run} in this run, ${p.mine_today} today`);
  if (p.pace_s != null) parts.push(`${p.pace_s.toFixed(1)} s each`);
  return parts.join(" · ");
}

async function fetchProgress(runId) {
  const res = await api("GET", "/me/progress" + (runId ? `?run_id=${encodeURIComponent(runId)}` : ""));
  return res.ok ? res.json() : null;
}

async function loadProgress(runId) {
  let p = null;
  try { p = await fetchProgress(runId); } catch (e) { return; }
  if (!state.current || state.current.item.run_id !== runId) return;
  $("#progress").textContent = p ? progressText(p) :
    (state.decided ? `${state.decided} decided · ${(state.seconds / state.decided).toFixed(1)} s each` : "");
}

// ------------------------------------------------------------------ review: the queue
async function nextItem() {
  if (state.busy) return;
  state.busy = true;
  try {
    const res = await api("POST", "/queue/next");
    if (res.status === 204) { state.current = null; await showSummary(); return; }
    if (!res.ok) { toast(detail(await json(res))); return; }
    renderItem(await res.json());
  } catch (e) { /* signed out */ } finally { state.busy = false; }
}

function decisionState(d) {
  if (d.can_change) return `you can change it until ${clock(d.change_until)}`;
  return d.why_not || "final";
}

// The end of the queue: what you did, and what still waits and why.
async function showSummary() {
  $("#item").hidden = true;
  $("#start").hidden = true;
  $("#empty").hidden = false;
  const [p, recent] = await Promise.all([
    fetchProgress(state.lastRun).catch(() => null),
    api("GET", "/me/decisions?limit=5").then((r) => (r.ok ? r.json() : [])).catch(() => []),
  ]);
  const box = $("#summary");
  if (!p) {
    box.innerHTML = `<p>Your queue is empty. New runs appear here once they are imported.</p>`;
  } else {
    const left = p.total_items - p.done_items;
    $("#empty-title").textContent = left ? "Nothing more for you right now" : "This run is done";
    const pace = p.pace_s != null ? ` at ${p.pace_s.toFixed(1)} s each` : "";
    box.innerHTML = `<p id="summary-mine">You decided <b>${p.mine_in_run}</b> items of ${escapeHtml(p.run_id)}` +
      ` (${p.mine_today} today${pace}).</p>` +
      `<p id="summary-run"><b>${p.done_items}</b> of ${p.total_items} items of this run are done.</p>` +
      (p.waiting.length ? `<h3>Still waiting</h3><ul id="waiting" class="waiting">` +
        p.waiting.map((w) => `<li data-reason="${escapeHtml(w.reason)}">${escapeHtml(w.text)}</li>`).join("") + `</ul>`
        : (left ? "" : `<p>Nothing waits: every item has its consensus.</p>`));
  }
  $("#recent").innerHTML = recent.length ? recent.map((d, i) =>
    `<li><b>${escapeHtml(d.frame_id)}</b> ${escapeHtml(label(d.verdict, d.category))}` +
    `${i === 0 && d.can_change ? ` <button type="button" id="recent-undo" class="small-button">Undo <kbd>Z</kbd></button>` : ""}` +
    `<span class="muted small block">at ${clock(d.decided_at)} · ${escapeHtml(decisionState(d))}</span></li>`).join("")
    : `<li class="muted">none yet</li>`;
  const b = $("#recent-undo");
  if (b) b.onclick = undoLast;
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
  if (res.status === 409) { toast(detail(await json(res))); state.current = null; nextItem(); return; }
  if (!res.ok) { $("#decision-error").textContent = detail(await json(res)); return; }
  state.decided += 1;
  state.seconds += seconds;
  state.current = null;
  state.amending = null;
  nextItem();
}

async function skip() {
  if (!state.current || state.busy) return;
  await api("DELETE", `/leases/${state.current.lease.id}`);
  state.current = null;
  toast("Skipped: it goes to someone else.");
  nextItem();
}

// Undo: your newest decision is withdrawn (kept in the item's history) and the item comes back to you with
// that decision preselected; deciding it again goes through the normal submit.
async function undoLast() {
  if (state.busy || !state.me) return;
  state.busy = true;
  try {
    const res = await api("GET", "/me/decisions?limit=1");
    if (!res.ok) { toast(`Cannot undo: ${detail(await json(res))}`); return; }
    const [last] = await res.json();
    if (!last) { toast("Nothing to undo: you have no decisions yet."); return; }
    if (!last.can_change) { toast(`Cannot undo ${last.frame_id}: ${last.why_not || "it is final"}`, 5000); return; }
    const back = await api("DELETE", `/items/${last.item_id}/decisions/mine`);
    const body = await json(back);
    if (!back.ok) { toast(`Cannot undo ${last.frame_id}: ${detail(body)}`, 5000); return; }
    if (state.view !== "review") switchView("review");
    renderItem(body, last);
    toast(`Undone: ${last.frame_id} is yours again.`);
  } catch (e) { /* signed out */ } finally { state.busy = false; }
}

// ------------------------------------------------------------------ lead
async function loadLead() {
  const res = await api("GET", "/runs");
  if (!res.ok) { $("#lead-msg").textContent = detail(await json(res)); return; }
  const runs = await res.json();
  const sel = $("#run-select");
  const keep = sel.value;
  sel.innerHTML = runs.map((r) => `<option value="${escapeHtml(r.run_id)}">${escapeHtml(r.run_id)} (${r.n_items})</option>`).join("");
  if (keep && runs.some((r) => r.run_id === keep)) sel.value = keep;
  if (!runs.length) { $("#cards").innerHTML = `<p class="muted">No runs imported yet.</p>`; return; }
  state.run = runs.find((r) => r.run_id === sel.value);
  await loadRunMetrics(sel.value);
}

function consensusN(r) { return r.agreement_n ?? r.consensus_compared ?? null; }

async function loadRunMetrics(runId) {
  const [res, runRes] = await Promise.all([api("GET", `/runs/${encodeURIComponent(runId)}/metrics`),
    api("GET", `/runs/${encodeURIComponent(runId)}`)]);
  if (!res.ok) { $("#lead-msg").textContent = detail(await json(res)); return; }
  const m = await res.json();
  if (runRes.ok) state.run = await runRes.json();
  const q = m.queue, a = m.agreement;
  const warnings = [...new Set([...(m.warnings || []), ...((state.run && state.run.warnings) || [])])];
  const w = $("#warnings");
  w.hidden = !warnings.length;
  w.innerHTML = warnings.map((t) => `<li>⚠ ${escapeHtml(t)}</li>`).join("");
  const cards = [
    ["waiting reviews", q.waiting_reviews], ["in review", q.leased], ["complete", q.by_status.complete || 0],
    ["escalated", q.by_status.escalated || 0], ["resolved by a lead", q.by_status.resolved || 0],
    ["confirmed edge cases", q.confirmed_edge_cases],
    ["oldest waiting", age(q.oldest_waiting_seconds)], ["oldest escalation", age(q.oldest_escalation_seconds)],
    ["Cohen's κ (mean)", fmt(a.cohen_kappa_mean)], ["Fleiss' κ", fmt(a.fleiss_kappa)],
    ["Krippendorff's α", fmt(a.krippendorff_alpha)], ["items with overlap", a.items],
    ["review hours", fmt(m.review_hours, 2)], ["cost / edge case", fmt(m.cost_per_confirmed_edge_case, 2)],
  ];
  $("#cards").innerHTML = cards.map(([k, v]) => `<div class="card"><b>${v}</b><span>${k}</span></div>`).join("");
  $("#reviewer-table").innerHTML = `<tr><th>reviewer</th><th>decisions</th><th>items/h</th><th>median s</th>` +
    `<th>gold accuracy</th><th>gold seen</th><th>agrees with the others' consensus <small>(overlap items)</small></th><th>unsure</th></tr>` +
    m.reviewers.map((r) => `<tr><td>${escapeHtml(r.reviewer)}</td><td>${r.decisions}</td><td>${fmt(r.items_per_hour, 0)}</td>` +
      `<td>${fmt(r.median_seconds, 1)}</td><td>${fmt(r.gold_accuracy, 2)}</td><td>${r.gold_reviewed}</td>` +
      `<td>${fmt(r.agreement_with_consensus, 2)} <span class="muted">n=${consensusN(r) ?? "–"}</span></td><td>${fmt(r.unsure_rate, 2)}</td></tr>`).join("");
  $("#pairs-table").innerHTML = `<tr><th>pair</th><th>κ</th><th>n (items both reviewed)</th></tr>` +
    (a.cohen_kappa_pairs.length ? a.cohen_kappa_pairs.map((p) => `<tr><td>${escapeHtml(p.a)} · ${escapeHtml(p.b)}</td><td>${fmt(p.kappa)}</td><td>${p.n ?? p.items}</td></tr>`).join("")
      : `<tr><td colspan="3" class="muted">no item has two reviews yet</td></tr>`);
  for (const r of m.reviewers) if (r.reviewer_id != null) state.reviewers.set(r.reviewer_id, r.reviewer);
  fillFilters();
  await Promise.all([loadEscalations(runId), loadItems(false)]);
}

// ------------------------------------------------------------------ lead: escalations, resolvable by keyboard
async function loadEscalations(runId) {
  const res = await api("GET", `/escalations?run_id=${encodeURIComponent(runId)}&limit=50`);
  const list = res.ok ? await res.json() : [];
  const run = state.run;
  const box = $("#escalations");
  if (!list.length) { box.innerHTML = `<p class="muted">No escalations.</p>`; return; }
  box.innerHTML = "";
  list.forEach((e, n) => {
    const row = document.createElement("div");
    row.className = "escalation";
    row.tabIndex = 0;
    row.dataset.itemId = e.item_id;
    row.setAttribute("role", "group");
    row.setAttribute("aria-label", `escalation ${n + 1} of ${list.length}: ${e.frame_id}`);
    const votes = Object.entries(e.votes).map(([k, v]) => `${escapeHtml(words(k))} ×${v}`).join(", ") || "no votes";
    const why = e.reason_text || words(e.reason || "");
    row.innerHTML = `<img alt="frame ${escapeHtml(e.frame_id)}"><div><b>${escapeHtml(e.frame_id)}</b> <span class="muted">rank ${e.rank} · ${age((Date.now() - new Date(e.escalated_at)) / 1000)} ago</span>` +
      `<div class="why">${escapeHtml(why)}</div><div class="votes">votes: ${votes}</div><div class="resolve">` +
      `<select aria-label="verdict for ${escapeHtml(e.frame_id)}"><option value="not_edge_case">N · not an edge case</option>` +
      run.categories.map((c, i) => `<option value="${escapeHtml(c)}">${i < CATEGORY_KEYS.length ? CATEGORY_KEYS[i] + " · " : ""}edge case: ${escapeHtml(words(c))}</option>`).join("") +
      `</select> <label><input type="checkbox"> make gold (G)</label> <button type="button">Resolve <kbd>Enter</kbd></button></div></div>`;
    box.appendChild(row);
    loadImage(row.querySelector("img"), `/items/${e.item_id}/images/frame/0?size=small`);
    row.querySelector("button").onclick = () => resolveEscalation(row, e);
  });
}

async function resolveEscalation(row, e) {
  const choice = row.querySelector("select").value;
  const body = choice === "not_edge_case" ? { verdict: "not_edge_case" } : { verdict: "edge_case", category: choice };
  body.make_gold = row.querySelector("input").checked;
  const r = await api("POST", `/items/${e.item_id}/resolve`, body);
  if (!r.ok) { toast(detail(await json(r))); return; }
  toast(`Resolved ${e.frame_id}: ${label(body.verdict, body.category)}`);
  const rows = $$("#escalations .escalation");
  const at = rows.indexOf(row);
  await loadRunMetrics($("#run-select").value);
  const after = $$("#escalations .escalation");
  if (after.length) after[Math.min(at, after.length - 1)].focus(); // the next escalation, so Enter keeps going
}

function escalationKey(row, k, ev) {
  const sel = row.querySelector("select");
  if (k === "arrowdown" || k === "arrowup") { moveFocus("#escalations .escalation", row, k === "arrowdown" ? 1 : -1); return true; }
  if (k === "n") { sel.value = "not_edge_case"; return true; }
  if (CATEGORY_KEYS.includes(k)) {
    const i = CATEGORY_KEYS.indexOf(k);
    if (i < state.run.categories.length) sel.value = state.run.categories[i];
    return true;
  }
  if (k === "g") { const box = row.querySelector("input"); box.checked = !box.checked; return true; }
  if (k === "enter" && ev.target === row) { row.querySelector("button").click(); return true; }
  return false;
}

function moveFocus(selector, from, step) {
  const rows = $$(selector);
  const at = rows.indexOf(from);
  const to = rows[Math.max(0, Math.min(rows.length - 1, at + step))];
  if (to) to.focus();
}

// ------------------------------------------------------------------ lead: the item browser
function fillFilters() {
  const cat = $("#f-category");
  const keep = cat.value;
  cat.innerHTML = `<option value="">any</option>` + (state.run ? state.run.categories : []).map((c) =>
    `<option value="${escapeHtml(c)}">${escapeHtml(words(c))}</option>`).join("");
  cat.value = keep;
  const who = $("#f-reviewer");
  const keepWho = who.value;
  who.innerHTML = `<option value="">anyone</option>` + [...state.reviewers].sort((x, y) => x[1].localeCompare(y[1])).map(([id, name]) =>
    `<option value="${id}">${escapeHtml(name)}</option>`).join("");
  if ([...who.options].some((o) => o.value === keepWho)) who.value = keepWho;
}

function itemQuery(afterId) {
  const q = new URLSearchParams({ limit: "25" });
  for (const [key, id] of [["status", "#f-status"], ["disagreement", "#f-disagreement"], ["category", "#f-category"], ["reviewer_id", "#f-reviewer"]]) {
    if ($(id).value) q.set(key, $(id).value);
  }
  if (afterId != null) q.set("after_id", afterId);
  return q.toString();
}

async function loadItems(more) {
  const runId = $("#run-select").value;
  if (!runId) return;
  const res = await api("GET", `/runs/${encodeURIComponent(runId)}/items?${itemQuery(more ? state.nextAfter : null)}`);
  const body = await json(res);
  if (!res.ok) { $("#items-count").textContent = `item list unavailable: ${detail(body)}`; return; }
  let learnt = false;
  for (const it of body.items) for (const r of it.reviews) {
    if (!state.reviewers.has(r.reviewer_id)) { state.reviewers.set(r.reviewer_id, r.reviewer_name); learnt = true; }
  }
  if (learnt) fillFilters();
  state.items = more ? [...state.items, ...body.items] : body.items;
  state.nextAfter = body.next_after_id;
  $("#items-more").hidden = body.next_after_id == null;
  $("#items-count").textContent = `${body.total} item${body.total === 1 ? "" : "s"}` +
    (body.total > state.items.length ? `, first ${state.items.length} shown` : "");
  const width = Math.max(1, ...state.items.map((it) => Math.max(it.reviews.length, it.required_reviews || 0)));
  const head = `<tr><th>frame</th><th>rank</th><th>status</th><th>consensus</th>` +
    Array.from({ length: width }, (_, i) => `<th>review ${i + 1}</th>`).join("") + `</tr>`;
  $("#items-table").innerHTML = head + (state.items.length ? state.items.map((it) => {
    const cells = Array.from({ length: width }, (_, i) => {
      const r = it.reviews[i];
      if (!r) return i < (it.required_reviews || 0) ? `<td class="muted">waiting</td>` : `<td></td>`;
      return `<td><b>${escapeHtml(r.reviewer_name)}</b> ${escapeHtml(label(r.verdict, r.category))}` +
        (r.version > 1 ? ` <span class="muted">(v${r.version})</span>` : "") + `</td>`;
    }).join("");
    const cons = it.consensus_verdict ? `${escapeHtml(label(it.consensus_verdict, it.consensus_category))}` +
      (it.confidence != null ? ` <span class="muted">${confText(it.confidence)}</span>` : "") : `<span class="muted">–</span>`;
    return `<tr class="item-row${it.disagreement ? " disagree" : ""}" tabindex="0" data-item-id="${it.item_id}">` +
      `<td>${escapeHtml(it.frame_id)}${it.is_gold ? ' <span class="tag">gold</span>' : ""}${it.disagreement ? ' <span class="tag bad">disagree</span>' : ""}</td>` +
      `<td>${it.rank}</td><td>${escapeHtml(statusText(it.status))}${it.escalation_text || it.escalation_reason ? `<div class="muted small">${escapeHtml(it.escalation_text || words(it.escalation_reason))}</div>` : ""}</td>` +
      `<td>${cons}</td>${cells}</tr>`;
  }).join("") : `<tr><td colspan="${4 + width}" class="muted">no item matches</td></tr>`);
  $$("#items-table .item-row").forEach((tr) => { tr.onclick = () => openDetail(+tr.dataset.itemId, tr); });
}

const ACTIONS = { decide: "decided", amend: "changed their decision", undo: "withdrew their decision", resolve: "resolved" };

function entryText(x) { return x ? label(x.verdict, x.category) + (x.root_causes && x.root_causes.length ? ` [${x.root_causes.map(words).join(", ")}]` : "") + (x.notes ? ` “${x.notes}”` : "") : "–"; }

async function openDetail(itemId, opener) {
  const [res, hres] = await Promise.all([api("GET", `/items/${itemId}/review`), api("GET", `/items/${itemId}/history`)]);
  const it = await json(res);
  if (!res.ok) { toast(detail(it)); return; }
  const history = hres.ok ? await hres.json() : [];
  state.detailReturn = opener || document.activeElement;
  $("#detail-title").textContent = `${it.frame_id} · rank ${it.rank} · ${statusText(it.consensus.status)}`;
  const c = it.consensus;
  $("#detail-consensus").textContent = c.verdict ? `Consensus: ${label(c.verdict, c.category)} (${c.method || "?"}` +
    (c.confidence != null ? `, confidence ${confText(c.confidence)}` : "") + `), ${it.n_decisions} of ${it.required_reviews} reviews` :
    `No consensus yet: ${it.n_decisions} of ${it.required_reviews} reviews` + (c.escalation_reason ? `, escalated (${words(c.escalation_reason)})` : "");
  $("#detail-reviews").innerHTML = `<tr><th>reviewer</th><th>decision</th><th>root causes</th><th>notes</th><th>at</th></tr>` +
    (it.decisions.length ? it.decisions.map((d) => `<tr><td>${escapeHtml(d.reviewer)}</td><td>${escapeHtml(label(d.verdict, d.category))}</td>` +
      `<td>${escapeHtml(d.root_causes.map(words).join(", "))}</td><td>${escapeHtml(d.notes || "")}</td><td>${clock(d.decided_at)}</td></tr>`).join("")
      : `<tr><td colspan="5" class="muted">no reviews</td></tr>`);
  $("#detail-history").innerHTML = history.length ? history.map((h) =>
    `<li><span class="muted">${new Date(h.at).toLocaleString()}</span> <b>${escapeHtml(h.reviewer_name)}</b> ${ACTIONS[h.action] || escapeHtml(h.action)}: ` +
    (h.before ? `${escapeHtml(entryText(h.before))} → ` : "") + `${escapeHtml(entryText(h.after))}</li>`).join("")
    : `<li class="muted">${hres.ok ? "no history" : "history unavailable"}</li>`;
  $("#detail-meta").textContent = `${it.drive_id} · ${new Date(it.timestamp).toISOString().replace("T", " ").slice(0, 19)} UTC · ` +
    keyMeta(it.metadata || {});
  $("#detail").hidden = false;
  loadImage($("#detail-img"), `/items/${itemId}/images/frame/0`);
  $("#detail-close").focus();
}

function closeDetail() {
  $("#detail").hidden = true;
  if (state.detailReturn && state.detailReturn.isConnected) state.detailReturn.focus();
}

async function recompute() {
  const runId = $("#run-select").value;
  if (!runId) return;
  $("#lead-msg").textContent = "running Dawid-Skene…";
  const res = await api("POST", `/runs/${encodeURIComponent(runId)}/consensus`);
  const r = await json(res);
  $("#lead-msg").textContent = res.ok ? `Dawid-Skene: ${r.items_considered} items with ≥3 reviews, ${r.items_updated} changed, ${r.escalated} escalated` : detail(r);
  loadRunMetrics(runId);
}

// ------------------------------------------------------------------ keys
function onKey(ev) {
  const k = ev.key.toLowerCase();
  if (ev.key === "Tab") markIntent(); // tabbing into a field is the user's choice
  if (!$("#help").hidden) { if (ev.key === "Escape" || ev.key === "?") { $("#help").hidden = true; ev.preventDefault(); } return; }
  if (!$("#lightbox").hidden) {
    if (ev.key === "Escape" || k === "v") closeLightbox();
    else if (ev.key === "ArrowRight") showLightbox(state.galleryAt + 1);
    else if (ev.key === "ArrowLeft") showLightbox(state.galleryAt - 1);
    else return;
    ev.preventDefault();
    return;
  }
  if (!$("#detail").hidden) { if (ev.key === "Escape") { closeDetail(); ev.preventDefault(); } return; }
  const typing = isTextField(ev.target) || (ev.target && ev.target.tagName === "SELECT");
  if (typing) { // a field keeps its keys (its own Ctrl+Z included); only these leave it
    if (ev.key === "Escape") ev.target.blur();
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey) && ev.target.id === "notes") { ev.preventDefault(); submit(); }
    return;
  }
  if (!state.me) return;
  if ((ev.ctrlKey || ev.metaKey) && !ev.altKey && (k === "z" || k === "y")) {
    // not the browser's own undo: that would move focus into the last edited field (the notes) and type there
    ev.preventDefault();
    if (k === "z" && !ev.shiftKey && state.view === "review") undoLast();
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (k === "?") { $("#help").hidden = false; $("#help-close").focus(); ev.preventDefault(); return; }
  if (k === "r") { switchView("review"); ev.preventDefault(); return; }
  if (k === "l") { switchView("lead"); ev.preventDefault(); return; }
  if (state.view === "lead") { if (leadKey(ev, k)) ev.preventDefault(); return; }
  if (k === "z") { ev.preventDefault(); undoLast(); return; }
  if (!state.current) {
    if (k === " " || k === "enter") {
      ev.preventDefault();
      if (!$("#start").hidden) startReviewing(); else nextItem();
    }
    return;
  }
  // Space on a focused frame enlarges it (the button's own click); Enter still submits, wherever focus is
  if (ev.target.classList && ev.target.classList.contains("thumb") && k === " ") return;
  const cats = state.current.item.taxonomy.categories;
  const roots = state.current.item.taxonomy.root_causes;
  if (k === "e") pickVerdict("edge_case");
  else if (k === "n") pickVerdict("not_edge_case");
  else if (k === "u") pickVerdict("unsure");
  else if (CATEGORY_KEYS.includes(k) && CATEGORY_KEYS.indexOf(k) < cats.length) pickCategory(cats[CATEGORY_KEYS.indexOf(k)]);
  else if (ROOT_KEYS.includes(k) && ROOT_KEYS.indexOf(k) < roots.length) toggleRoot(roots[ROOT_KEYS.indexOf(k)]);
  else if (k === "enter") submit();
  else if (k === "k") skip();
  else if (k === "v") openLightbox(0, document.activeElement);
  else if (k === "/") focusField($("#notes"));
  else return;
  ev.preventDefault();
}

function leadKey(ev, k) {
  const row = ev.target.closest && ev.target.closest(".escalation");
  if (row && escalationKey(row, k, ev)) return true;
  const tr = ev.target.closest && ev.target.closest(".item-row");
  if (tr) {
    if (k === "arrowdown" || k === "arrowup") { moveFocus("#items-table .item-row", tr, k === "arrowdown" ? 1 : -1); return true; }
    if (k === "enter") { openDetail(+tr.dataset.itemId, tr); return true; }
  }
  if (k === "x") { const first = $("#escalations .escalation"); if (first) first.focus(); else toast("No escalations."); return true; }
  if (k === "i") { const first = $("#items-table .item-row"); if (first) first.focus(); else toast("No items listed."); return true; }
  return false;
}

window.addEventListener("DOMContentLoaded", () => {
  document.addEventListener("keydown", onKey);
  document.addEventListener("pointerdown", markIntent, true);
  document.addEventListener("focusin", guardFocus, true);
  $("#login-form").onsubmit = (e) => { e.preventDefault(); signIn($("#token").value); };
  $$(".tab").forEach((b) => { b.onclick = () => switchView(b.dataset.view); });
  $$(".verdicts button").forEach((b) => { b.onclick = () => pickVerdict(b.dataset.verdict); });
  $("#decision").onsubmit = (e) => { e.preventDefault(); submit(); };
  $("#skip").onclick = skip;
  $("#undo").onclick = undoLast;
  $("#retry").onclick = nextItem;
  $("#start-review").onclick = startReviewing;
  $("#help-link").onclick = (e) => { e.preventDefault(); $("#help").hidden = false; $("#help-close").focus(); };
  $("#help-close").onclick = () => { $("#help").hidden = true; };
  $("#lightbox-close").onclick = closeLightbox;
  $("#lightbox-prev").onclick = () => showLightbox(state.galleryAt - 1);
  $("#lightbox-next").onclick = () => showLightbox(state.galleryAt + 1);
  $("#detail-close").onclick = closeDetail;
  $("#refresh-lead").onclick = loadLead;
  $("#recompute").onclick = recompute;
  $("#run-select").onchange = () => { state.reviewers.clear(); loadLead(); };
  for (const id of ["#f-status", "#f-disagreement", "#f-category", "#f-reviewer"]) $(id).onchange = () => loadItems(false);
  $("#items-more").onclick = () => loadItems(true);
  if (state.token) signIn(state.token); else signOut();
});
