"""report.html: one page a perception engineer opens from disk, offline, to inspect a mining run.

    write_report(run_dir, info=info, samples=samples, errors_by_reason=errors.by_reason, vectors=sample)

What it shows, top to bottom: the run's warnings and summary, the scenarios (what each is, from its
candidates' metadata: "urban / night / rain", with drives, frames and peak novelty percentile), the
embedding map (PCA of the candidates over a fleet and reference sample, `mining/report_map.py`), the candidate
grid (thumbnail, rank, score, reasons; filter by signal, scenario, event, drive or any categorical metadata
column, sort by any numeric one; a click opens the nearest reference frames and the context strip,
`mining/report_grid.py`), the signal histograms (novelty's one per `novelty_calibration` when frames got
different ones: samples under `calibration_sample_key`, frames from `counts.novelty_calibrated_on`), what each
signal contributed, the dropped frames.

Files: report.html and `report_files/` beside it (small JPEG thumbnails, linked relatively). The script is
`mining/report.js`, inlined; nothing is fetched from a network. One colour per meaning in every plot:
FLEET (all scored frames, or a sample of them), REFERENCE, CANDIDATES; scenarios have their own palette.
Pure: the run's tables and the samples in, files out; the caller (jobs/mine.py) passes the map's vectors.
"""

from __future__ import annotations

import html
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from edgemine.contracts import (
    NOVELTY_CALIBRATION,
    REFERENCE_CALIBRATION,
    SIGNAL_COLUMNS,
    novelty_calibration_before_column,
)
from edgemine.mining.report_grid import (
    THUMB_PX,
    Similar,
    candidate_grid,
    metadata_columns,
    reason_kinds,
    scenario_cards,
    write_thumbnails,
)
from edgemine.mining.report_map import MapSample, Projection, project, svg_map
from edgemine.runtime import atomic_write_bytes

__all__ = ["FILES_DIR", "PALETTE", "SCENARIO_COLORS", "calibration_sample_key", "render_report", "svg_histogram",
           "write_report"]

FILES_DIR = "report_files"
# one colour per meaning, in every plot of the page
PALETTE = {"fleet": "#9fb4c9", "reference": "#d4a857", "candidates": "#c0392b", "threshold": "#333"}
LABELS = {"fleet": "all scored frames", "reference": "reference frames", "candidates": "candidates"}
SCENARIO_COLORS = ("#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#ff7f0e",
                   "#393b79", "#637939", "#7b4173", "#3182bd")
MAX_CARDS = 1000  # the grid shows the best candidates; candidates.parquet holds them all
_BY_CALIBRATION = "novelty@"


def calibration_sample_key(calibration: str) -> str:
    """The samples' key of the novelty percentiles of the frames whose `novelty_calibration` is `calibration`."""
    if not isinstance(calibration, str) or not calibration:
        raise ValueError(f"calibration={calibration!r} must be a non-empty novelty_calibration value")
    return _BY_CALIBRATION + calibration


def svg_histogram(values: np.ndarray, *, bins: int = 20, lo: float | None = None, hi: float | None = None,
                  color: str = PALETTE["fleet"], title: str = "", label: str = LABELS["fleet"],
                  overlay: np.ndarray | None = None, overlay_label: str = "",
                  overlay_color: str = PALETTE["candidates"], xlabel: str = "value",
                  ylabel: str = "share of frames (log)", threshold: float | None = None,
                  width: int = 360, height: int = 214, log: bool = True) -> str:
    """A histogram as SVG: bars for `values` (each bin's share), an outline for `overlay` (its own shares),
    both on a log-scaled share axis by default; labelled axes and a legend; an optional threshold line."""
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
    frac = counts / counts.sum()
    ofrac = None
    if overlay is not None:
        o = np.asarray(overlay, dtype=np.float64)
        o = o[np.isfinite(o)]
        if o.size:
            oc, _ = np.histogram(np.clip(o, lo, hi), bins=edges)
            ofrac = oc / oc.sum()
    pad_l, pad_r, pad_t, pad_b = 40, 12, 46, 34
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    top = max(float(frac.max()), float(ofrac.max()) if ofrac is not None else 0.0) or 1.0

    def y_of(f: float) -> float:
        s = (np.log10(1 + 1000 * f) / np.log10(1 + 1000 * top)) if log else f / top
        return pad_t + h - s * h

    bw = w / bins
    parts = [f"<text x='2' y='12' font-size='12' font-weight='600'>{html.escape(title)}</text>",
             f"<rect x='4' y='18' width='10' height='9' fill='{color}'/>"
             f"<text x='18' y='26' font-size='10'>{html.escape(label)} (n={v.size:,})</text>"]
    if ofrac is not None:
        parts.append(f"<line x1='3' y1='35' x2='15' y2='35' stroke='{overlay_color}' "
                     f"stroke-width='2'/><text x='18' y='38' font-size='10'>"
                     f"{html.escape(overlay_label)} (n={int(np.isfinite(np.asarray(overlay, float)).sum()):,})</text>")
    for i, f in enumerate(frac):
        y = y_of(float(f))
        parts.append(f"<rect x='{pad_l + i * bw:.1f}' y='{y:.1f}' width='{max(bw - 1, 0.5):.1f}' "
                     f"height='{pad_t + h - y:.1f}' fill='{color}'/>")
    if ofrac is not None:
        pts = []
        for i, f in enumerate(ofrac):
            y = y_of(float(f))
            pts += [f"{pad_l + i * bw:.1f},{y:.1f}", f"{pad_l + (i + 1) * bw:.1f},{y:.1f}"]
        parts.append(f"<polyline points='{' '.join(pts)}' fill='none' stroke='{overlay_color}' stroke-width='2'/>")
    if threshold is not None and lo <= threshold <= hi:
        x = pad_l + (threshold - lo) / (hi - lo) * w
        parts.append(f"<line x1='{x:.1f}' y1='{pad_t}' x2='{x:.1f}' y2='{pad_t + h}' stroke='{PALETTE['threshold']}'"
                     f" stroke-dasharray='3 2'/><text x='{x + 2:.1f}' y='{pad_t + 9}' font-size='9'>threshold</text>")
    axis = PALETTE["threshold"]
    parts.append(f"<line x1='{pad_l}' y1='{pad_t + h}' x2='{pad_l + w}' y2='{pad_t + h}' stroke='{axis}'/>"
                 f"<line x1='{pad_l}' y1='{pad_t}' x2='{pad_l}' y2='{pad_t + h}' stroke='{axis}'/>")
    for val, anchor in ((lo, "start"), ((lo + hi) / 2, "middle"), (hi, "end")):
        x = pad_l + (val - lo) / (hi - lo) * w
        parts.append(f"<text x='{x:.1f}' y='{pad_t + h + 11}' font-size='9' text-anchor='{anchor}'>{val:.3g}</text>")
    parts.append(f"<text x='{pad_l - 3}' y='{pad_t + 4}' font-size='9' text-anchor='end'>{top:.0%}</text>"
                 f"<text x='{pad_l - 3}' y='{pad_t + h}' font-size='9' text-anchor='end'>0</text>"
                 f"<text x='{pad_l + w / 2:.0f}' y='{height - 4}' font-size='10' text-anchor='middle'>"
                 f"{html.escape(xlabel)}</text>"
                 f"<text transform='translate(11 {pad_t + h / 2:.0f}) rotate(-90)' font-size='10' "
                 f"text-anchor='middle'>{html.escape(ylabel)}</text>")
    return (f"<svg class='hist' width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>"
            f"{''.join(parts)}</svg>")


def svg_bars(items: Sequence[tuple[str, float]], *, color: str = PALETTE["candidates"], width: int = 460,
             title: str = "") -> str:
    """Horizontal bars: (label, value in [0, 1])."""
    row = 20
    height = 18 + row * len(items)
    parts = [f"<text x='2' y='12' font-size='11'>{html.escape(title)}</text>"]
    for i, (label, v) in enumerate(items):
        y = 18 + i * row
        bw = max(0.0, min(1.0, v)) * (width - 190)
        parts.append(f"<text x='2' y='{y + 13}' font-size='11'>{html.escape(label)}</text>"
                     f"<rect x='130' y='{y + 2}' width='{bw:.1f}' height='14' fill='{color}'/>"
                     f"<text x='{134 + bw:.1f}' y='{y + 13}' font-size='11'>{v:.0%}</text>")
    return f"<svg width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>{''.join(parts)}</svg>"


CSS = """
body{font-family:system-ui,sans-serif;margin:20px 24px;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
.warning{background:#fff3cd;border:1px solid #e0b000;padding:8px 12px;border-radius:4px}
table{border-collapse:collapse;font-size:13px} td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
.num{text-align:right} .hist{display:inline-block;margin:4px 14px 4px 0;vertical-align:top}
.muted{color:#777} .small{font-size:12px} .row{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start}
.chip{color:#fff;border-radius:3px;padding:0 5px;font-size:11px;font-weight:600}
.scens{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:10px}
.scen{border:1px solid #ddd;border-top:4px solid #888;border-radius:6px;padding:8px;font-size:13px}
.scen .what{font-size:15px} .scen div{margin:2px 0}
.thumbs{display:flex;flex-wrap:wrap;gap:6px;margin-top:4px} figure{margin:0;font-size:11px;width:96px}
figure img,figure .noimg{width:96px;height:auto;display:block;image-rendering:pixelated}
.noimg{background:#eee;color:#888;font-size:11px;text-align:center;padding:30px 0}
#controls{display:flex;flex-wrap:wrap;gap:6px 14px;align-items:center;font-size:13px;margin:8px 0;
 position:sticky;top:0;background:#fff;padding:6px 0;z-index:2;border-bottom:1px solid #eee}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(172px,1fr));gap:8px}
.card{border:1px solid #ddd;border-left:5px solid #888;border-radius:5px;padding:5px;font-size:12px;cursor:pointer}
.card:hover,.card:focus{box-shadow:0 0 0 2px #888;outline:none} .card.sel{box-shadow:0 0 0 3px #222}
.card[hidden]{display:none} .card img.thumb,.card .noimg{width:100%;aspect-ratio:1;object-fit:cover;
 image-rendering:pixelated;display:block}
.card .meta{color:#555;margin-top:2px} .card .reasons{color:#555;font-size:11px;max-height:3.6em;overflow:hidden}
#detail{position:fixed;top:0;right:0;width:440px;height:100%;overflow:auto;background:#fff;z-index:5;
 box-shadow:-4px 0 16px rgba(0,0,0,.25);padding:12px 16px;box-sizing:border-box}
#detail[hidden]{display:none} #detail h3{font-size:15px;margin:4px 0 8px;word-break:break-all}
#detail img.big{width:256px;image-rendering:pixelated} #detail h4{margin:10px 0 2px;font-size:13px}
#detail figure,#detail figure img,#detail figure .noimg{width:74px}
#detail-close{float:right;font-size:18px;border:0;background:none;cursor:pointer}
#detail .facts td,#detail .facts th{padding:1px 6px;font-size:12px} ul.reasons{font-size:12px;padding-left:18px}
#tip{position:absolute;z-index:6;background:#fff;border:1px solid #999;padding:4px;font-size:11px;
 pointer-events:none} #tip img{width:128px;image-rendering:pixelated;display:block} #tip[hidden]{display:none}
#map .cand{cursor:pointer} #map .cand.off{opacity:.15} #map .cand.sel{stroke-width:3}
.summary{max-width:520px;flex:0 1 520px}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:4px;vertical-align:-1px}
"""


def _kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td class='num'>{html.escape(str(v))}</td></tr>"
                               for k, v in rows) + "</table>"


def _script() -> str:
    return resources.files("edgemine.mining").joinpath("report.js").read_text(encoding="utf-8")


def _json_for_script(obj: Any) -> str:
    """JSON safe inside a <script> element ('<' escaped, so no '</script>' can end it)."""
    return json.dumps(obj, default=str, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")


def _signal_plots(info: Mapping[str, Any], samples: Mapping[str, np.ndarray], candidates: Any) -> list[str]:
    counts = info.get("counts", {})
    weights = {n: float(s.get("weight", 0)) for n, s in info.get("signals", {}).items()}
    cand_cols = set(candidates.columns) if candidates is not None else set()
    out = []
    for name in ("score", *SIGNAL_COLUMNS):
        if name not in samples or not np.isfinite(samples[name]).any():
            continue
        ov = candidates[name].to_numpy(dtype=np.float64) if name in cand_cols and len(candidates) else None
        title = "fused score" if name == "score" else f"{name} (weight {weights.get(name, 0):g})"
        split = _novelty_by_calibration(samples, counts) if name == "novelty" else {}
        if len(split) > 1:  # percentiles of different calibrations share no axis: one histogram each
            out += [_calibration_histogram(title, value, values, frames, candidates)
                    for value, (values, frames) in split.items()]
            continue
        hi = max(1.0, float(np.nanmax(samples[name]))) if name == "score" else 1.0
        if name == "score" and ov is not None and ov.size:
            hi = max(hi, float(np.nanmax(ov)))
        thr = counts.get("threshold") if name == "score" else None
        xlabel = "fused score" if name == "score" else f"{name} percentile"
        if name == "novelty" and split:  # every frame ranked within one value: the axis says which
            xlabel = _novelty_axis(next(iter(split)))
        out.append(svg_histogram(samples[name], lo=0.0, hi=hi, title=title, overlay=ov,
                                 overlay_label=LABELS["candidates"], threshold=thr, xlabel=xlabel))
    for name in weights:
        raw, cal = samples.get(f"{name}_raw"), samples.get(f"calibration_{name}")
        if raw is not None and np.isfinite(raw).any() and cal is not None and name == "novelty":
            hi = float(np.nanpercentile(np.concatenate([raw[np.isfinite(raw)], cal[np.isfinite(cal)]]), 99.9))
            ref_label = ("reference vs its other drives" if counts.get("novelty_calibration") == "other_drives"
                         else "reference, leave-one-out")
            out.append(svg_histogram(raw, lo=0.0, hi=hi, title="novelty: kNN distance to the reference",
                                     overlay=cal, overlay_label=ref_label, overlay_color=PALETTE["reference"],
                                     xlabel="distance to the k-th nearest reference frame"))
    return out


def _novelty_by_calibration(samples: Mapping[str, np.ndarray],
                            counts: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, int]]:
    """value -> (its frames' novelty sample, its frame count), in `counts.novelty_calibrated_on`'s order; the
    count is the sample's size where the counts lack it."""
    frames = counts.get("novelty_calibrated_on") or {}
    found = {k[len(_BY_CALIBRATION):]: v for k, v in samples.items()
             if k.startswith(_BY_CALIBRATION) and np.isfinite(v).any()}
    order = [v for v in frames if v in found] + sorted(v for v in found if v not in frames)
    order.sort(key=lambda v: v != REFERENCE_CALIBRATION)  # the reference first, the others as counted
    return {v: (found[v], int(frames.get(v, np.isfinite(found[v]).sum()))) for v in order}


def _calibration_histogram(title: str, value: str, values: np.ndarray, frames: int, candidates: Any) -> str:
    """One calibration's novelty percentiles, its candidates as the line."""
    ov = None
    if candidates is not None and len(candidates) and NOVELTY_CALIBRATION in candidates.columns:
        ov = candidates.loc[candidates[NOVELTY_CALIBRATION] == value, "novelty"].to_numpy(dtype=np.float64)
    if value == REFERENCE_CALIBRATION:  # fleet frames ranked against the reference, not the reference's frames
        on, label = "against the reference", f"fleet frames ranked against the reference: {frames:,}"
    else:
        on, label = f"within {value}", f"fleet frames with {value}, ranked among themselves: {frames:,}"
    return svg_histogram(values, lo=0.0, hi=1.0, title=f"{title} · {on}", label=label, overlay=ov,
                         overlay_label="their candidates", xlabel=_novelty_axis(value))


def _novelty_axis(calibration: str) -> str:
    return "novelty percentile" if calibration == REFERENCE_CALIBRATION else f"novelty percentile within {calibration}"


def _contributions(info: Mapping[str, Any], candidates: Any) -> list[str]:
    weights = {n: float(s.get("weight", 0)) for n, s in info.get("signals", {}).items()}
    cand_cols = set(candidates.columns) if candidates is not None else set()
    used = {n: w for n, w in weights.items() if w > 0 and n in cand_cols}
    if not (used and candidates is not None and len(candidates)):
        return []
    import pandas as pd

    from edgemine.mining.fusion import DEFAULT_MAX_SURPRISE, contributions

    fusion = info.get("spec", {}).get("fusion", {})
    contrib = contributions({n: candidates[n].to_numpy(dtype=np.float64) for n in used}, weights=used,
                            mode=fusion.get("mode", "fisher"),
                            max_surprise=fusion.get("max_surprise", DEFAULT_MAX_SURPRISE))
    means = {n: float(np.mean(v)) for n, v in contrib.items()}
    total = sum(means.values()) or 1.0
    out = [svg_bars([(n, means[n] / total) for n in used],
                    title="share of the candidates' mean fused score, by signal")]
    fired = candidates["reasons"].explode().dropna() if "reasons" in cand_cols else None
    if fired is not None and len(fired):
        kinds = pd.Series([k for r in candidates["reasons"] for k in reason_kinds(r)]).value_counts()
        out.append("<p>Reasons among candidates: " + ", ".join(
            f"{html.escape(str(k))} ×{v}" for k, v in kinds.items()) + "</p>")
    return out


def _map_section(proj: Projection | None, candidates: Any, colors: Mapping[str, str]) -> str:
    if proj is None or not (len(proj.fleet) or len(proj.reference) or len(proj.candidates)):
        return "<p class='muted'>No embedding sample was given to this report.</p>"
    info: dict[str, tuple[int, str | None, str]] = {}
    if candidates is not None and len(candidates):
        for fid, rank, scen, score in zip(candidates["frame_id"], candidates["rank"], candidates["scenario_id"],
                                          candidates["score"], strict=True):
            s = scen if isinstance(scen, str) else None
            info[str(fid)] = (int(rank), s, f"#{int(rank)} {fid} · {float(score):.3f} · {s or 'fill'}")
    keep = [i for i, f in enumerate(proj.candidate_ids) if f in info]
    proj = Projection(fleet=proj.fleet, reference=proj.reference, candidates=proj.candidates[keep],
                      candidate_ids=[proj.candidate_ids[i] for i in keep], explained=proj.explained,
                      n_fleet_total=proj.n_fleet_total, n_reference_total=proj.n_reference_total)
    svg = svg_map(proj, fleet_color=PALETTE["fleet"], reference_color=PALETTE["reference"],
                  candidate_color=PALETTE["candidates"], candidate_info=info, scenario_colors=colors)
    scen_legend = "".join(f"<span><i style='background:{c}'></i>{html.escape(s)}</span>" for s, c in colors.items())
    return (f"<div class='legend'><span><i style='background:{PALETTE['fleet']}'></i>fleet sample "
            f"({len(proj.fleet):,} of {proj.n_fleet_total:,} frames)</span>"
            f"<span><i style='background:{PALETTE['reference']}'></i>reference sample ({len(proj.reference):,} of "
            f"{proj.n_reference_total:,})</span><span><i style='background:{PALETTE['candidates']}'></i>candidates "
            f"without a scenario (fill)</span>{scen_legend}</div>{svg}"
            "<p class='muted small'>PCA of the sampled fleet and reference embeddings (2 linear axes); hover a "
            "candidate for its thumbnail, click it for its evidence. Far from both clouds here means far in "
            "embedding space; close here need not mean close there.</p>")


def render_report(*, info: Mapping[str, Any], samples: Mapping[str, np.ndarray], candidates: Any,
                  scenarios: Any, errors_by_reason: Mapping[str, int], thumbs: Mapping[str, str] | None = None,
                  embedding_map: Projection | None = None, max_scenarios: int = 12,
                  max_cards: int = MAX_CARDS, similar: Mapping[str, Sequence[Similar]] | None = None) -> str:
    """The page as a string. `thumbs` maps a frame uri to its thumbnail's path relative to the page;
    `embedding_map` is the projected sample (`report_map.project`); `similar` maps a candidate's frame_id to
    its nearest fleet frames from other drives ("more like this", `Similar` rows)."""
    thumbs = thumbs or {}
    counts = info.get("counts", {})
    run_id = html.escape(info["run_id"])
    have_cands = candidates is not None and len(candidates) > 0
    if have_cands and NOVELTY_CALIBRATION not in candidates.columns and "novelty" in candidates.columns:
        # a run written before the column: "reference" unless it calibrated novelty within some value
        before = novelty_calibration_before_column(counts)
        candidates = candidates.assign(**{NOVELTY_CALIBRATION: candidates["novelty"].map(
            lambda v: before if v is not None and v == v else None)})
    scen_ids = sorted(str(s) for s in scenarios["scenario_id"]) if scenarios is not None and len(scenarios) else []
    colors = {s: SCENARIO_COLORS[i % len(SCENARIO_COLORS)] for i, s in enumerate(scen_ids)}
    cat, num = metadata_columns(candidates) if have_cands else ([], [])
    # columns that describe a frame: they vary among the candidates and are not identifiers (vehicle_id, ...)
    informative = {c for c in cat if candidates[c].dropna().astype(str).nunique() > 1 and not c.endswith("_id")}
    out: list[str] = [f"<!doctype html><html><head><meta charset='utf-8'><title>edgemine run {run_id}"
                      f"</title><style>{CSS}</style></head><body>",
                      f"<h1>edgemine mining run <code>{run_id}</code></h1>",
                      f"<p class='muted'>{html.escape(str(info.get('created_at', '')))} · encoder "
                      f"<code>{html.escape(str(info.get('encoder')))}</code> (dim {info.get('dim')}) · reference "
                      f"index {html.escape(str(info.get('reference_index', {}).get('kind')))} over "
                      f"{info.get('reference_index', {}).get('count')} frames</p>"]
    for w in info.get("warnings", []):
        out.append(f"<p class='warning'><strong>Warning:</strong> {html.escape(w)}</p>")
    out.append("<div class='row'><div class='summary'><h2>Summary</h2>" + _kv_table([
        ("frames in manifest", counts.get("manifest_frames")), ("usable (scored) frames", counts.get("scored_frames")),
        ("dropped frames", counts.get("dropped_total", 0)), ("frame threshold (fused score)", counts.get("threshold")),
        ("event peak threshold", counts.get("peak_threshold")),
        ("frames above threshold", counts.get("high_frames")), ("events", counts.get("events")),
        ("pool after de-dup", counts.get("pool")), ("scenarios", counts.get("scenarios")),
        ("candidates / budget", f"{counts.get('candidates')} / {counts.get('budget')}"),
        ("… from events above the thresholds", counts.get("above_threshold")),
        ("… filling the budget (best remaining frames)", counts.get("filled")),
        ("uncertainty from", ", ".join(counts.get("uncertainty_models", [])) or "manifest probs / none"),
    ]))
    if info.get("notes"):
        out.append("<ul class='small'>" + "".join(f"<li>{html.escape(n)}</li>" for n in info["notes"]) + "</ul>")
    out.append("</div><div><h2>Embedding map</h2>" + _map_section(embedding_map, candidates, colors) + "</div></div>")
    out.append("<h2>Scenarios</h2>")
    if scenarios is not None and len(scenarios) and have_cands:
        out.append(scenario_cards(scenarios, candidates, thumbs=thumbs, categorical=cat, informative=informative,
                                  colors=colors, max_scenarios=max_scenarios))
        if len(scenarios) > max_scenarios:
            out.append(f"<p class='muted'>{max_scenarios} of {len(scenarios)} scenarios; all in scenarios.parquet.</p>")
    else:
        out.append("<p>No scenarios: no frame reached the threshold.</p>")
    out.append("<h2 id='candidates'>Candidates</h2>")
    data: dict[str, Any] = {"cands": []}
    if have_cands:
        shown = candidates.sort_values("rank").head(max_cards)
        offsets = info.get("spec", {}).get("evidence", {}).get("context_offsets_s", [])
        grid, data = candidate_grid(shown, thumbs=thumbs, categorical=cat, numeric=num, informative=informative,
                                    scenario_colors=colors, fill_color=PALETTE["candidates"],
                                    context_offsets=offsets, similar=similar or {})
        out.append("<p class='muted small'>Click a card for its nearest reference frames and the frames around it"
                   " in its drive. Card colour: its scenario.</p>" + grid)
        if len(candidates) > max_cards:
            out.append(f"<p class='muted'>The best {max_cards} of {len(candidates)}; all in candidates.parquet.</p>")
    else:
        out.append("<p>No candidates.</p>")
    out.append("<h2>Signals</h2><p class='muted'>Bars: all scored frames (a uniform sample; novelty split by "
               "calibration, each histogram its own frames); line: the candidates (or, for distances, the "
               "reference). Shares of each population per bin, log-scaled.</p>")
    out += _signal_plots(info, samples, candidates)
    out.append("<h2>What each signal contributed</h2>")
    out += _contributions(info, candidates)
    out.append("<h2>Dropped frames</h2>")
    if errors_by_reason:
        rows = sorted(errors_by_reason.items(), key=lambda kv: -kv[1])[:20]
        out.append("<table><tr><th>stage: reason</th><th>frames</th></tr>" + "".join(
            f"<tr><td>{html.escape(k)}</td><td class='num'>{v}</td></tr>" for k, v in rows) + "</table>"
            "<p class='muted'>Every dropped frame is listed in errors.parquet.</p>")
    else:
        out.append("<p>None: every frame of the manifest was scored.</p>")
    timings = info.get("timings", {})
    if timings:
        out.append("<h2>Timings (s)</h2>" + _kv_table([(str(k), v) for k, v in timings.items()]))
    out.append("<div id='tip' hidden></div><aside id='detail' hidden><button id='detail-close' "
               "aria-label='close'>×</button><div id='detail-body'></div></aside>")
    out.append(f"<script type='application/json' id='report-data'>{_json_for_script(data)}</script>")
    out.append(f"<script>{_script()}</script></body></html>")
    return "\n".join(out)


def _evidence_uris(cands: Any, max_cards: int, similar: Mapping[str, Sequence[Similar]] | None = None) -> list[str]:
    uris: list[str] = [row.uri for rows in (similar or {}).values() for row in rows]
    if cands is not None and len(cands):
        for _, r in cands.sort_values("rank").head(max_cards).iterrows():
            uris.append(r.get("uri"))
            for col in ("neighbor_uris", "context_uris"):
                if col in cands.columns and r[col] is not None:
                    uris += list(r[col])
    return [u for u in uris if isinstance(u, str) and u]


def write_report(run_dir: str | os.PathLike[str], *, info: Mapping[str, Any], samples: Mapping[str, np.ndarray],
                 errors_by_reason: Mapping[str, int], vectors: MapSample | None = None,
                 thumb_px: int = THUMB_PX, max_cards: int = MAX_CARDS,
                 similar: Mapping[str, Sequence[Similar]] | None = None) -> Path:
    """report.html and its thumbnails (`report_files/`) in `run_dir`, from candidates.parquet and
    scenarios.parquet there, the run's info and samples, and the map's vectors (`report_map.MapSample`)."""
    run = Path(run_dir)
    cands = None
    if (run / "candidates.parquet").exists():
        names = pq.read_schema(run / "candidates.parquet").names
        cands = pq.read_table(run / "candidates.parquet",
                              columns=[c for c in names if c not in ("embedding", "probs")]).to_pandas()
    scen = pq.read_table(run / "scenarios.parquet").to_pandas() if (run / "scenarios.parquet").exists() else None
    files, tmp_files = run / FILES_DIR, run / f".{FILES_DIR}.partial"  # a folder: not one of the run's *.tmp
    shutil.rmtree(tmp_files, ignore_errors=True)
    try:
        thumbs = write_thumbnails(_evidence_uris(cands, max_cards, similar), tmp_files, prefix=FILES_DIR,
                                  size=thumb_px)
        proj = project(vectors) if vectors is not None else None
        page = render_report(info=info, samples=samples, candidates=cands, scenarios=scen,
                             errors_by_reason=errors_by_reason, thumbs=thumbs, embedding_map=proj,
                             max_cards=max_cards, similar=similar)
        shutil.rmtree(files, ignore_errors=True)
        os.replace(tmp_files, files)
    finally:
        shutil.rmtree(tmp_files, ignore_errors=True)
    atomic_write_bytes(run / "report.html", page.encode("utf-8"))
    return run / "report.html"
