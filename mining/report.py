"""report.html: one self-contained page a perception engineer opens offline.

Signal histograms (inline SVG), what each signal contributed to the candidates, the top scenarios with
thumbnails (PNG data URIs), the candidate list with reasons, and the counts of dropped frames with their
reasons. No JavaScript, no network.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow.parquet as pq

from edgemine.contracts import SIGNAL_COLUMNS

COLORS = {"score": "#444", "novelty": "#1f77b4", "uncertainty": "#d62728", "rarity": "#2ca02c", "trigger": "#ff7f0e"}
THUMB_PX = 112


def thumbnail(uri: str | None, *, size: int = THUMB_PX) -> str | None:
    """A PNG data URI of the image at a local path or file:// URI, or None if it cannot be read."""
    if not uri:
        return None
    path = urlparse(uri).path if uri.startswith("file://") else uri
    if "://" in path or not os.path.exists(path):
        return None
    from PIL import Image

    try:
        with Image.open(path) as src:
            im = src.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
    except OSError:
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def svg_histogram(values: np.ndarray, *, bins: int = 20, lo: float | None = None, hi: float | None = None,
                  color: str = "#444", title: str = "", overlay: np.ndarray | None = None,
                  overlay_label: str = "", width: int = 320, height: int = 140, log: bool = True) -> str:
    """A small bar chart of a histogram (log-scaled counts by default), optionally with a second series."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return f"<div class='hist'><b>{html.escape(title)}</b><br><i>no values</i></div>"
    lo = float(np.min(v)) if lo is None else lo
    hi = float(np.max(v)) if hi is None else hi
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    counts, _ = np.histogram(np.clip(v, lo, hi), bins=edges)
    series = [(counts / counts.sum(), color, 1.0)]
    if overlay is not None:
        o = np.asarray(overlay, dtype=np.float64)
        o = o[np.isfinite(o)]
        if o.size:
            oc, _ = np.histogram(np.clip(o, lo, hi), bins=edges)
            series.append((oc / oc.sum(), "#999", 0.55))
    pad_l, pad_b = 6, 18
    w, h = width - pad_l, height - pad_b - 16
    top = max(float(s[0].max()) for s in series) or 1.0

    def scale(f: float) -> float:
        if not log:
            return f / top
        return np.log10(1 + 1000 * f) / np.log10(1 + 1000 * top)

    bw = w / bins
    rects = []
    for frac, col, alpha in series:
        for i, f in enumerate(frac):
            bh = scale(float(f)) * h
            rects.append(f"<rect x='{pad_l + i * bw:.1f}' y='{16 + h - bh:.1f}' width='{bw - 1:.1f}' "
                         f"height='{bh:.1f}' fill='{col}' fill-opacity='{alpha}'/>")
    legend = f" <tspan fill='#999'>(grey: {html.escape(overlay_label)})</tspan>" if len(series) > 1 else ""
    return (f"<svg class='hist' width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>"
            f"<text x='2' y='11' font-size='11'>{html.escape(title)}{legend}</text>{''.join(rects)}"
            f"<text x='{pad_l}' y='{height - 4}' font-size='10'>{lo:.3g}</text>"
            f"<text x='{width - 4}' y='{height - 4}' font-size='10' text-anchor='end'>{hi:.3g}</text></svg>")


def svg_bars(items: Sequence[tuple[str, float, str]], *, width: int = 420, title: str = "") -> str:
    """Horizontal bars: (label, value in [0, 1], colour)."""
    row = 20
    height = 18 + row * len(items)
    parts = [f"<text x='2' y='12' font-size='11'>{html.escape(title)}</text>"]
    for i, (label, v, col) in enumerate(items):
        y = 18 + i * row
        bw = max(0.0, min(1.0, v)) * (width - 170)
        parts.append(f"<text x='2' y='{y + 13}' font-size='11'>{html.escape(label)}</text>"
                     f"<rect x='110' y='{y + 2}' width='{bw:.1f}' height='14' fill='{col}'/>"
                     f"<text x='{114 + bw:.1f}' y='{y + 13}' font-size='11'>{v:.3f}</text>")
    return f"<svg width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>{''.join(parts)}</svg>"


CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
.warning{background:#fff3cd;border:1px solid #e0b000;padding:8px 12px;border-radius:4px}
table{border-collapse:collapse;font-size:13px} td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
.num{text-align:right} .hist{display:inline-block;margin:4px 10px 4px 0;vertical-align:top}
.scen{border:1px solid #ddd;border-radius:6px;padding:8px;margin:10px 0}
.thumbs{display:flex;flex-wrap:wrap;gap:6px} figure{margin:0;width:THUMBpx;font-size:11px}
figure img{width:THUMBpx;height:auto;display:block;image-rendering:pixelated}
.reasons{color:#555} .muted{color:#888}
""".replace("THUMB", str(THUMB_PX))


def _kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td class='num'>{html.escape(str(v))}</td></tr>"
                               for k, v in rows) + "</table>"


def _figure(uri: str | None, caption: str, title: str) -> str:
    src = thumbnail(uri)
    img = f"<img src='{src}' alt='{html.escape(caption)}'>" if src else "<div class='muted'>(no image)</div>"
    return f"<figure title='{html.escape(title)}'>{img}<figcaption>{html.escape(caption)}</figcaption></figure>"


def render_report(*, info: Mapping[str, Any], samples: Mapping[str, np.ndarray], candidates: Any,
                  scenarios: Any, errors_by_reason: Mapping[str, int], max_scenarios: int = 12,
                  thumbs_per_scenario: int = 8, max_list: int = 60) -> str:
    counts = info.get("counts", {})
    weights = {n: float(s.get("weight", 0)) for n, s in info.get("signals", {}).items()}
    run_id = html.escape(info["run_id"])
    out: list[str] = [f"<!doctype html><html><head><meta charset='utf-8'><title>edgemine run {run_id}"
           f"</title><style>{CSS}</style></head><body>",
           f"<h1>edgemine mining run <code>{run_id}</code></h1>",
           f"<p class='muted'>{html.escape(str(info.get('created_at', '')))} · encoder "
           f"<code>{html.escape(str(info.get('encoder')))}</code> (dim {info.get('dim')}) · reference index "
           f"{html.escape(str(info.get('reference_index', {}).get('kind')))} over "
           f"{info.get('reference_index', {}).get('count')} frames</p>"]
    for w in info.get("warnings", []):
        out.append(f"<p class='warning'><strong>Warning:</strong> {html.escape(w)}</p>")
    dropped = counts.get("dropped_total", 0)
    out.append("<h2>Summary</h2>" + _kv_table([
        ("frames in manifest", counts.get("manifest_frames")), ("usable (scored) frames", counts.get("scored_frames")),
        ("dropped frames", dropped), ("frame threshold (fused score)", counts.get("threshold")),
        ("event peak threshold", counts.get("peak_threshold")),
        ("frames above threshold", counts.get("high_frames")), ("events", counts.get("events")),
        ("pool after de-dup", counts.get("pool")), ("scenarios", counts.get("scenarios")),
        ("candidates / budget", f"{counts.get('candidates')} / {counts.get('budget')}"),
        ("… from events above the thresholds", counts.get("above_threshold")),
        ("… filling the budget (best remaining frames)", counts.get("filled")),
        ("uncertainty from", ", ".join(counts.get("uncertainty_models", [])) or "manifest probs / none"),
    ]))
    if info.get("notes"):
        out.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in info["notes"]) + "</ul>")
    out.append("<h2>Dropped frames</h2>")
    if errors_by_reason:
        rows = sorted(errors_by_reason.items(), key=lambda kv: -kv[1])[:20]
        out.append("<table><tr><th>stage: reason</th><th>frames</th></tr>" + "".join(
            f"<tr><td>{html.escape(k)}</td><td class='num'>{v}</td></tr>" for k, v in rows) + "</table>"
            "<p class='muted'>Every dropped frame is listed in errors.parquet.</p>")
    else:
        out.append("<p>None: every frame of the manifest was scored.</p>")
    out.append("<h2>Signals</h2><p class='muted'>Calibrated scores (percentiles) over all scored frames "
               "(sampled), log-scaled counts; grey: the candidates.</p>")
    cand_cols = set(candidates.columns) if candidates is not None else set()
    for name in ("score", *SIGNAL_COLUMNS):
        if name not in samples or not np.isfinite(samples[name]).any():
            continue
        ov = candidates[name].to_numpy(dtype=np.float64) if name in cand_cols and len(candidates) else None
        title = "fused score" if name == "score" else f"{name} percentile (weight {weights.get(name, 0):g})"
        hi = max(1.0, float(np.nanmax(samples[name]))) if name == "score" else 1.0
        if name == "score" and ov is not None and ov.size:
            hi = max(hi, float(np.nanmax(ov)))
        out.append(svg_histogram(samples[name], lo=0.0, hi=hi, color=COLORS.get(name, "#444"), title=title,
                                 overlay=ov, overlay_label="candidates"))
    for name in weights:
        raw, cal = samples.get(f"{name}_raw"), samples.get(f"calibration_{name}")
        if raw is not None and np.isfinite(raw).any() and cal is not None and name == "novelty":
            hi = float(np.nanpercentile(np.concatenate([raw[np.isfinite(raw)], cal[np.isfinite(cal)]]), 99.9))
            out.append(svg_histogram(raw, lo=0.0, hi=hi, color=COLORS["novelty"], title="novelty kNN distance",
                                     overlay=cal, overlay_label=(
                                         "reference to its other drives" if counts.get("novelty_calibration")
                                         == "other_drives" else "reference, leave-one-out")))
    out.append("<h2>What each signal contributed</h2>")
    used = {n: w for n, w in weights.items() if w > 0 and n in cand_cols}
    if used and candidates is not None and len(candidates):
        from edgemine.mining.fusion import DEFAULT_MAX_SURPRISE, contributions

        fusion = info.get("spec", {}).get("fusion", {})
        contrib = contributions({n: candidates[n].to_numpy(dtype=np.float64) for n in used}, weights=used,
                                mode=fusion.get("mode", "fisher"),
                                max_surprise=fusion.get("max_surprise", DEFAULT_MAX_SURPRISE))
        means = {n: float(np.mean(v)) for n, v in contrib.items()}
        total = sum(means.values()) or 1.0
        items = [(f"{n} ({means[n] / total:.0%})", means[n] / total, COLORS.get(n, "#444")) for n in used]
        out.append(svg_bars(items, title="share of the candidates' mean fused score, by signal"))
        fired = candidates["reasons"].explode().dropna() if "reasons" in cand_cols else None
        if fired is not None and len(fired):
            kinds = fired.str.split(" ").str[0].value_counts()
            out.append("<p>Reasons among candidates: " + ", ".join(
                f"{html.escape(k)} ×{v}" for k, v in kinds.items()) + "</p>")
    out.append("<h2>Top scenarios</h2>")
    if scenarios is not None and len(scenarios) and candidates is not None and len(candidates):
        sc = scenarios.sort_values(["n_candidates", "score_max"], ascending=[False, False]).head(max_scenarios)
        for _, s in sc.iterrows():
            members = candidates[candidates["scenario_id"] == s["scenario_id"]].sort_values("rank")
            head = (f"<b>{html.escape(s['scenario_id'])}</b> · {int(s['n_candidates'])} candidates of "
                    f"{int(s['n_frames'])} pool frames · {int(s['n_events'])} events in {int(s['n_drives'])} drives"
                    f" · peak score {s['score_max']:.3f}")
            sig = " · ".join(f"{n} peak {s[f'{n}_max']:.3f}" for n in SIGNAL_COLUMNS
                             if f"{n}_max" in s and s[f"{n}_max"] == s[f"{n}_max"])
            figs = "".join(_figure(r["uri"], f"#{r['rank']} {r['score']:.3f}", "; ".join(r["reasons"]))
                           for _, r in members.head(thumbs_per_scenario).iterrows())
            out.append(f"<div class='scen'>{head}<br><span class='muted'>{sig}</span>"
                       f"<div class='thumbs'>{figs}</div></div>")
    else:
        out.append("<p>No scenarios: no frame reached the threshold.</p>")
    out.append("<h2>Candidates</h2>")
    if candidates is not None and len(candidates):
        lines: list[str] = []
        for _, r in candidates.sort_values("rank").head(max_list).iterrows():
            lines.append(f"<tr><td class='num'>{r['rank']}</td><td>{html.escape(str(r['frame_id']))}</td>"
                        f"<td class='num'>{r['score']:.3f}</td><td>{html.escape(str(r.get('scenario_id')))}</td>"
                        f"<td>{html.escape(str(r.get('event_id')))}</td>"
                        f"<td class='reasons'>{html.escape('; '.join(r['reasons']))}</td></tr>")
        more = f"<p class='muted'>First {max_list} of {len(candidates)}; all in candidates.parquet.</p>" \
            if len(candidates) > max_list else ""
        out.append("<table><tr><th>rank</th><th>frame</th><th>score</th><th>scenario</th><th>event</th>"
                   "<th>reasons</th></tr>" + "".join(lines) + "</table>" + more)
    timings = info.get("timings", {})
    if timings:
        out.append("<h2>Timings (s)</h2>" + _kv_table([(str(k), v) for k, v in timings.items()]))
    out.append("</body></html>")
    return "\n".join(out)


def write_report(run_dir: str | os.PathLike[str], *, info: Mapping[str, Any], samples: Mapping[str, np.ndarray],
                 errors_by_reason: Mapping[str, int]) -> Path:
    run = Path(run_dir)
    cands = pq.read_table(run / "candidates.parquet").to_pandas() if (run / "candidates.parquet").exists() else None
    scen = pq.read_table(run / "scenarios.parquet").to_pandas() if (run / "scenarios.parquet").exists() else None
    page = render_report(info=info, samples=samples, candidates=cands, scenarios=scen,
                         errors_by_reason=errors_by_reason)
    tmp = run / "report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, run / "report.html")
    return run / "report.html"
