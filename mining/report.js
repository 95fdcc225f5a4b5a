// report.html's script (inlined by edgemine.mining.report): filter and sort the candidate grid, open a
// candidate's evidence (nearest reference frames, context strip), thumbnails on the embedding map's dots.
// Plain DOM, no library, no network: the page is opened from disk.
(function () {
  "use strict";
  const dataEl = document.getElementById("report-data");
  if (!dataEl) return;
  const D = JSON.parse(dataEl.textContent);
  const grid = document.getElementById("grid");
  const cards = grid ? Array.from(grid.querySelectorAll(".card")) : [];
  const cardOfRank = new Map(cards.map((c) => [c.dataset.rank, c]));
  const sortSel = document.getElementById("sort");
  const orderSel = document.getElementById("order");
  const filters = Array.from(document.querySelectorAll("select.filter"));

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function fmt(v, digits) {
    return v === null || v === undefined ? "–" : Number(v).toFixed(digits);
  }

  function thumb(src, alt) {
    if (!src) return el("div", "noimg", "(no image)");
    const img = el("img");
    img.src = src;
    img.alt = alt;
    return img;
  }

  function apply() {
    const active = filters.filter((s) => s.value !== "").map((s) => ["f" + s.dataset.f, "|" + s.value + "|"]);
    let shown = 0;
    for (const c of cards) {
      const ok = active.every(([key, v]) => (c.dataset[key] || "").includes(v));
      c.hidden = !ok;
      if (ok) shown += 1;
    }
    if (sortSel && orderSel) {
      const key = "s" + sortSel.value;
      const sign = orderSel.value === "desc" ? -1 : 1;
      const val = (c) => (c.dataset[key] === undefined ? null : parseFloat(c.dataset[key]));
      const sorted = cards.slice().sort((a, b) => {
        const x = val(a), y = val(b);
        if (x === y) return a.dataset.rank - b.dataset.rank; // ties (and two missing values) by rank
        if (x === null) return 1; // missing values last, in either order
        if (y === null) return -1;
        return sign * (x - y);
      });
      for (const c of sorted) grid.appendChild(c);
    }
    const label = document.getElementById("shown");
    if (label) label.textContent = shown + " of " + cards.length + " candidates";
    for (const dot of document.querySelectorAll("#map .cand")) {
      const c = cardOfRank.get(dot.dataset.rank);
      dot.classList.toggle("off", !!c && c.hidden);
    }
  }

  function strip(title, items) {
    const box = el("div", "strip");
    box.appendChild(el("h4", null, title));
    const row = el("div", "thumbs");
    for (const it of items) {
      const f = el("figure");
      f.appendChild(thumb(it.src, it.caption));
      f.appendChild(el("figcaption", null, it.caption));
      row.appendChild(f);
    }
    if (!items.length) row.appendChild(el("div", "muted", "none stored"));
    box.appendChild(row);
    return box;
  }

  function show(i) {
    const c = D.cands[i];
    const panel = document.getElementById("detail");
    const body = document.getElementById("detail-body");
    if (!c || !panel || !body) return;
    body.replaceChildren();
    const head = el("h3", null, "#" + c.rank + " · " + c.frame_id);
    body.appendChild(head);
    const big = thumb(c.img, c.frame_id);
    big.classList.add("big");
    body.appendChild(big);
    const facts = el("table", "facts");
    const add = (k, v) => {
      if (v === "" || v === null || v === undefined) return;
      const tr = el("tr");
      tr.appendChild(el("th", null, k));
      tr.appendChild(el("td", null, String(v)));
      facts.appendChild(tr);
    };
    add("fused score", fmt(c.score, 3));
    add("scenario", c.scenario || "none (fill)");
    add("event", c.event);
    add("drive", c.drive);
    add("time", c.timestamp);
    add("selected by", c.selected_by);
    for (const [name, pct, raw] of c.signals) {
      if (pct !== null || raw !== null) add(name, "percentile " + fmt(pct, 4) + " · raw " + fmt(raw, 3));
    }
    add("novelty calibrated on", c.novelty_calibration === "reference" ? "the reference"
      : c.novelty_calibration ? "this fleet's " + c.novelty_calibration + " frames" : "");
    for (const [k, v] of c.meta) add(k, v);
    body.appendChild(facts);
    const ul = el("ul", "reasons");
    for (const r of c.reasons) ul.appendChild(el("li", null, r));
    body.appendChild(ul);
    body.appendChild(strip("Nearest reference frames", c.neighbors.map(([src, id, d]) => ({
      src: src, caption: (id || "") + (d === null ? "" : " · d " + fmt(d, 3)),
    }))));
    if (c.similar && c.similar.length) {
      body.appendChild(strip("More like this, from other drives", c.similar.map(([src, id, drive, d]) => ({
        src: src, caption: id + " · " + drive + " · d " + fmt(d, 3),
      }))));
    }
    const ctx = c.context.map(([src, label]) => ({src: src, caption: label || "same drive"}));
    const mid = Math.floor(ctx.length / 2);
    ctx.splice(mid, 0, {src: c.img, caption: "candidate (0 s)"});
    body.appendChild(strip("Context: the same drive around it", ctx));
    panel.hidden = false;
    for (const card of cards) card.classList.toggle("sel", card.dataset.i === String(i));
    for (const dot of document.querySelectorAll("#map .cand")) {
      dot.classList.toggle("sel", dot.dataset.rank === String(c.rank));
    }
  }

  for (const s of filters) s.addEventListener("change", apply);
  if (sortSel && orderSel) {
    sortSel.addEventListener("change", () => {
      orderSel.value = sortSel.selectedOptions[0].dataset.order || "desc";
      apply();
    });
    orderSel.addEventListener("change", apply);
  }
  for (const c of cards) {
    c.addEventListener("click", () => show(Number(c.dataset.i)));
    c.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        show(Number(c.dataset.i));
      }
    });
  }
  const close = document.getElementById("detail-close");
  if (close) close.addEventListener("click", () => { document.getElementById("detail").hidden = true; });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") document.getElementById("detail").hidden = true;
  });

  // the map: a candidate's thumbnail on hover, its evidence on click
  const tip = document.getElementById("tip");
  for (const dot of document.querySelectorAll("#map .cand")) {
    const card = cardOfRank.get(dot.dataset.rank);
    if (!card) continue;
    const c = D.cands[Number(card.dataset.i)];
    dot.addEventListener("mouseenter", (e) => {
      if (!tip) return;
      tip.replaceChildren(thumb(c.img, c.frame_id), el("div", null, "#" + c.rank + " · " + fmt(c.score, 3) +
        (c.scenario ? " · " + c.scenario : " · fill")));
      tip.hidden = false;
      tip.style.left = (e.pageX + 14) + "px";
      tip.style.top = (e.pageY + 14) + "px";
    });
    dot.addEventListener("mouseleave", () => { if (tip) tip.hidden = true; });
    dot.addEventListener("click", () => show(Number(card.dataset.i)));
  }
  apply();
})();
