"""The report's candidate grid and scenario cards: thumbnails on disk, metadata columns, per-card data.

    thumbs = write_thumbnails(uris, run_dir / "report_files", prefix="report_files")   # uri -> relative path
    cat, num = metadata_columns(candidates)
    grid_html, data = candidate_grid(candidates, thumbs=thumbs, categorical=cat, numeric=num, ...)

Thumbnails are small JPEGs beside report.html (never the full frames, never data URIs), named by a hash of
the frame's uri so a frame shown as a candidate, a neighbour and a context frame is written once. Images are
decoded through the core's guarded `decode_rgb`: a frame that cannot be read has no thumbnail, never an error.
"""

from __future__ import annotations

import hashlib
import html
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from edgemine.contracts import NOVELTY_CALIBRATION, NOVELTY_CALIBRATIONS, REFERENCE_CALIBRATION, SIGNAL_COLUMNS

THUMB_PX = 160
MAX_CATEGORIES = 50  # a string column with more distinct values among the candidates is an identifier
# candidates.parquet columns that are not the manifest's descriptive metadata
NOT_METADATA = {"frame_id", "rank", "score", "reasons", "scenario_id", "event_id", "selected_by", "drive_id",
                "timestamp", "uri", "embedding", "probs", "neighbor_ids", "neighbor_uris", "neighbor_distances",
                "context_uris", "context_offsets_s", "triggers_fired", *SIGNAL_COLUMNS, NOVELTY_CALIBRATION}


# ================================================================ thumbnails
def _read_bytes(uri: str) -> bytes | None:
    """The bytes at a local path, a file:// URI or any URI pyarrow.fs opens; None if unreadable."""
    try:
        if uri.startswith("file://"):
            path = unquote(urlparse(uri).path)
        elif "://" not in uri:
            path = uri
        else:
            import pyarrow.fs as pafs

            fs, p = pafs.FileSystem.from_uri(uri)
            with fs.open_input_stream(p) as f:
                return bytes(f.read())
        with open(path, "rb") as fh:
            return fh.read()
    except (OSError, ValueError):
        return None


def write_thumbnail(uri: str, dest: Path, *, size: int = THUMB_PX) -> bool:
    """A JPEG of at most `size` x `size` pixels of the image at `uri` in `dest`; False if it cannot be read."""
    from edgemine.errors import FrameError
    from edgemine.images import decode_rgb

    data = _read_bytes(uri)
    if data is None:
        return False
    try:
        im = decode_rgb(data, name=uri, draft=size)
    except FrameError:
        return False
    im.thumbnail((size, size))
    tmp = dest.with_suffix(".tmp")
    im.save(tmp, format="JPEG", quality=85)
    os.replace(tmp, dest)
    return True


def thumb_name(uri: str) -> str:
    return hashlib.sha1(uri.encode("utf-8")).hexdigest()[:20] + ".jpg"


def write_thumbnails(uris: Iterable[str | None], folder: Path, *, prefix: str, size: int = THUMB_PX,
                     workers: int = 4) -> dict[str, str]:
    """Thumbnails of every distinct uri in `folder`; returns uri -> `prefix/name` for those that could be read."""
    folder.mkdir(parents=True, exist_ok=True)
    todo = sorted({u for u in uris if u})

    def one(uri: str) -> tuple[str, bool]:
        name = thumb_name(uri)
        return name, (folder / name).exists() or write_thumbnail(uri, folder / name, size=size)

    n = max(1, min(workers, os.cpu_count() or 1))
    with ThreadPoolExecutor(n) as pool:  # decoding and resizing release the GIL
        done = list(pool.map(one, todo))
    return {u: f"{prefix}/{name}" for u, (name, ok) in zip(todo, done, strict=True) if ok}


# ================================================================ metadata columns
@dataclass(frozen=True)
class Similar:
    """One "more like this" neighbour of a candidate: a fleet frame of another drive."""

    uri: str
    frame_id: str
    drive_id: str
    distance: float


def _is_scalar_column(col: Any) -> bool:
    sample = col.dropna().head(20)
    return not any(isinstance(v, (list, tuple, np.ndarray, dict)) for v in sample)


def metadata_columns(cands: Any) -> tuple[list[str], list[str]]:
    """(categorical, numeric) manifest metadata columns of the candidates, in table order.

    Categorical: strings or booleans with at most MAX_CATEGORIES distinct values among the candidates.
    Numeric: ints and floats that are not the run's own columns (rank, score, signals, *_raw)."""
    import pandas as pd

    cat: list[str] = []
    num: list[str] = []
    for name in cands.columns:
        if name in NOT_METADATA or name.endswith("_raw"):
            continue
        col = cands[name]
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_object_dtype(col) or \
                isinstance(col.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(col):
            if _is_scalar_column(col) and 0 < col.dropna().astype(str).nunique() <= MAX_CATEGORIES:
                cat.append(name)
        elif pd.api.types.is_numeric_dtype(col):
            num.append(name)
    return cat, num


def _s(v: Any) -> str:
    """A cell as display text ('' for null)."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return ""
    try:
        if v != v:  # NaN / NaT
            return ""
    except (TypeError, ValueError):
        pass
    return str(v)


def _short(v: Any) -> str:
    f = _num(v)
    return "" if f is None else (str(int(f)) if f == int(f) and abs(f) < 1e12 else f"{f:.5g}")


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


NO_SIGNAL = "none strong"


def reason_kinds(reasons: Any) -> list[str]:
    """The signals a candidate's reasons name: 'novelty p99.9 (...)' -> 'novelty'; a reason that names no
    signal first ('no strong signal; top: ...', a fill frame's) -> NO_SIGNAL."""
    if reasons is None:
        return []
    out: list[str] = []
    for r in list(reasons):
        first = str(r).split(" ")[0]
        k = first if first in SIGNAL_COLUMNS else NO_SIGNAL
        if k not in out:
            out.append(k)
    return out


def modal_values(members: Any, columns: Sequence[str]) -> list[tuple[str, str, int, int]]:
    """(column, most common value, its count, non-null count) for each column with a value."""
    out = []
    for c in columns:
        vals = members[c].dropna().astype(str)
        if len(vals):
            vc = vals.value_counts()
            out.append((c, str(vc.index[0]), int(vc.iloc[0]), int(len(vals))))
    return out


def describe(members: Any, columns: Sequence[str], *, informative: set[str], most: int = 4) -> str:
    """'urban / night / rain': the most common values that at least half the members share, in the columns
    whose values vary across the candidates (a column that never varies says nothing about a scenario)."""
    modes = [m for m in modal_values(members, columns) if m[0] in informative and m[2] * 2 >= m[3]]
    modes.sort(key=lambda m: -m[2] / m[3])
    return " / ".join(v for _, v, _, _ in modes[:most]) or "mixed conditions"


# ================================================================ the grid
def _thumb_html(src: str | None, alt: str, cls: str = "") -> str:
    if not src:
        return f"<div class='noimg {cls}'>(no image)</div>"
    return f"<img class='{cls}' src='{html.escape(src)}' alt='{html.escape(alt)}'>"


def candidate_grid(cands: Any, *, thumbs: Mapping[str, str], categorical: Sequence[str], numeric: Sequence[str],
                   informative: set[str], scenario_colors: Mapping[str, str], fill_color: str,
                   context_offsets: Sequence[float] = (),
                   similar: Mapping[str, Sequence[Similar]] | None = None) -> tuple[str, dict[str, Any]]:
    """The controls and cards (HTML) and the data the page's script reads (JSON-able).

    Filters: the signals named in the reasons, scenario, event, drive, how it was selected, what its novelty
    was calibrated on ("reference" or a value the reference lacks, "time_of_day=night"), each categorical
    metadata column. Sort keys: rank, score, each signal's percentile and raw value, each numeric column.
    Each card holds its filter values as `data-f<i>="|v1|v2|"` and its sort values as `data-s<j>`."""
    rows = cands.sort_values("rank").reset_index(drop=True)
    filt_cols: list[tuple[str, str]] = [("signal (in the reasons)", "__signal"), ("scenario", "scenario_id"),
                                        ("event", "event_id"), ("drive", "drive_id"), ("selected by", "selected_by"),
                                        ("novelty calibrated on", NOVELTY_CALIBRATION)]
    filt_cols = [(label, c) for label, c in filt_cols if c == "__signal" or c in rows.columns]
    filt_cols += [(c, c) for c in categorical]
    sort_cols: list[tuple[str, str, str]] = [("rank", "rank", "asc"), ("fused score", "score", "desc")]
    for s in SIGNAL_COLUMNS:
        if s in rows.columns and rows[s].notna().any():
            sort_cols.append((f"{s} percentile", s, "desc"))
    for s in SIGNAL_COLUMNS:
        if f"{s}_raw" in rows.columns and rows[f"{s}_raw"].notna().any():
            sort_cols.append((f"{s} raw value", f"{s}_raw", "desc"))
    sort_cols += [(c, c, "desc") for c in numeric]

    def filt_values(r: Any, col: str) -> list[str]:
        if col == "__signal":
            return reason_kinds(r["reasons"])
        v = _s(r[col])
        return [v] if v else []

    cards, data = [], []
    options: list[dict[str, int]] = [{} for _ in filt_cols]
    for i, r in rows.iterrows():
        attrs = [f"data-i='{i}'", f"data-rank='{int(r['rank'])}'"]
        for j, (_, col) in enumerate(filt_cols):
            vals = filt_values(r, col)
            for v in vals:
                options[j][v] = options[j].get(v, 0) + 1
            attrs.append(f"data-f{j}='{html.escape('|' + '|'.join(vals) + '|')}'")
        for j, (_, key, _) in enumerate(sort_cols):
            num = _num(r[key])
            if num is not None:
                attrs.append(f"data-s{j}='{num:.9g}'")
        scen = _s(r.get("scenario_id"))
        col = scenario_colors.get(scen, fill_color)
        uri = _s(r.get("uri"))
        src = thumbs.get(uri)
        modes = " / ".join(_s(r[c]) for c in categorical if c in informative and _s(r[c]))
        reasons = [str(x) for x in (r["reasons"] if r["reasons"] is not None else [])]
        chip = (f"<span class='chip' style='background:{col}'>{html.escape(scen)}</span>" if scen
                else f"<span class='chip' style='background:{fill_color}'>fill</span>")
        cards.append(f"<div class='card' tabindex='0' style='border-left-color:{col}' {' '.join(attrs)}>"
                     f"{_thumb_html(src, str(r['frame_id']), 'thumb')}"
                     f"<div class='cap'><b>#{int(r['rank'])}</b> · {float(r['score']):.3f} {chip}</div>"
                     f"<div class='meta'>{html.escape(modes)}</div>"
                     f"<div class='reasons'>{html.escape('; '.join(reasons) or '(no signal above its percentile)')}"
                     f"</div></div>")
        nb_uris = list(r["neighbor_uris"]) if "neighbor_uris" in rows.columns and r["neighbor_uris"] is not None \
            else []
        nb_ids = list(r["neighbor_ids"]) if "neighbor_ids" in rows.columns and r["neighbor_ids"] is not None else []
        nb_d = list(r["neighbor_distances"]) if "neighbor_distances" in rows.columns and \
            r["neighbor_distances"] is not None else []
        ctx = list(r["context_uris"]) if "context_uris" in rows.columns and r["context_uris"] is not None else []
        # each context frame's own offset (runs before context_offsets_s: the spec's, when none was skipped)
        offs = r["context_offsets_s"] if "context_offsets_s" in rows.columns else None
        offs = list(offs) if offs is not None else (list(context_offsets) if len(ctx) == len(context_offsets)
                                                    else [])
        data.append({
            "frame_id": str(r["frame_id"]), "rank": int(r["rank"]), "score": float(r["score"]),
            "scenario": scen, "event": _s(r.get("event_id")), "drive": _s(r.get("drive_id")),
            "timestamp": _s(r.get("timestamp")), "selected_by": _s(r.get("selected_by")),
            "novelty_calibration": _s(r.get(NOVELTY_CALIBRATION)), "reasons": reasons,
            "img": src, "color": col,
            "signals": [[s, _num(r[s]), _num(r[f"{s}_raw"]) if f"{s}_raw" in rows.columns else None]
                        for s in SIGNAL_COLUMNS if s in rows.columns],
            "meta": [[c, _s(r[c])] for c in categorical] + [[c, _short(r[c])] for c in numeric],
            "neighbors": [[thumbs.get(u) if u else None, nb_ids[k] if k < len(nb_ids) else "",
                           _num(nb_d[k]) if k < len(nb_d) else None]
                          for k, u in enumerate(nb_uris or [None] * len(nb_ids))],
            "similar": [[thumbs.get(m.uri), m.frame_id, m.drive_id, m.distance]
                        for m in (similar or {}).get(str(r["frame_id"]), ())],
            "context": [[thumbs.get(u) if u else None, f"{offs[k]:+.1f} s" if k < len(offs) else ""]
                        for k, u in enumerate(ctx)],
        })
    controls = ["<div id='controls'>"]
    for j, (label, _) in enumerate(filt_cols):
        if not options[j]:
            continue
        opts = "".join(f"<option value='{html.escape(v)}'>{html.escape(v)} ({n})</option>"
                       for v, n in sorted(options[j].items()))
        controls.append(f"<label>{html.escape(label)} <select class='filter' data-f='{j}' "
                        f"aria-label='{html.escape(label)}'><option value=''>all</option>{opts}</select></label>")
    sopts = "".join(f"<option value='{j}' data-order='{o}'>{html.escape(label)}</option>"
                    for j, (label, _, o) in enumerate(sort_cols))
    controls.append(f"<label>sort by <select id='sort'>{sopts}</select></label>"
                    "<label><select id='order' aria-label='order'><option value='asc'>ascending</option>"
                    "<option value='desc'>descending</option></select></label>"
                    f"<span id='shown' class='muted'>{len(rows)} of {len(rows)} candidates</span></div>")
    grid = "".join(controls) + "<div id='grid'>" + "".join(cards) + "</div>"
    return grid, {"cands": data}


def _calibrations_said(calibrations: Any) -> str:
    """What a scenario's peak novelty was calibrated on, when not only the reference (scenarios.parquet's
    `novelty_calibrations`): a percentile among this fleet's time_of_day=night frames is not one against the
    reference, and a scenario of both mixes them. "" for the reference alone, none, or a run before the column."""
    values = [] if calibrations is None or isinstance(calibrations, float) else [str(v) for v in calibrations]
    if not values or values == [REFERENCE_CALIBRATION]:
        return ""
    if len(values) == 1:
        return f" among this fleet's {html.escape(values[0])} frames"
    return " (its frames' novelty mixes calibrations: " + html.escape(", ".join(
        "the reference" if v == REFERENCE_CALIBRATION else v for v in values)) + ")"


def scenario_cards(scen: Any, cands: Any, *, thumbs: Mapping[str, str], categorical: Sequence[str],
                   informative: set[str], colors: Mapping[str, str], max_scenarios: int = 12,
                   thumbs_per_scenario: int = 6) -> str:
    """One card per scenario (most candidates first): what it is from its candidates' metadata, how many
    drives, events and frames it spans, its peak novelty percentile (and what it was calibrated on, when not the
    reference) and fused score, its best thumbnails."""
    from edgemine.mining.calibration import format_percentile

    sc = scen.sort_values(["n_candidates", "score_max"], ascending=[False, False]).head(max_scenarios)
    out = ["<div class='scens'>"]
    for _, s in sc.iterrows():
        sid = str(s["scenario_id"])
        members = cands[cands["scenario_id"] == sid].sort_values("rank")
        col = colors.get(sid, "#888")
        nov = s.get("novelty_max")
        peak_nov = format_percentile(float(nov)) if nov is not None and nov == nov else "–"
        nov_on = _calibrations_said(s.get(NOVELTY_CALIBRATIONS))
        modes = modal_values(members, categorical)
        detail = " · ".join(f"{html.escape(c)}: {html.escape(v)} {k}/{n}" for c, v, k, n in modes)
        figs = "".join(
            f"<figure>{_thumb_html(thumbs.get(_s(r['uri'])), str(r['frame_id']))}"
            f"<figcaption>#{int(r['rank'])} · {float(r['score']):.3f}</figcaption></figure>"
            for _, r in members.head(thumbs_per_scenario).iterrows())
        sig = " · ".join(f"{n} {format_percentile(float(s[f'{n}_max']))}" for n in SIGNAL_COLUMNS
                         if f"{n}_max" in s and s[f"{n}_max"] == s[f"{n}_max"])
        out.append(
            f"<div class='scen' data-scenario='{html.escape(sid)}' style='border-top-color:{col}'>"
            f"<div class='scen-head'><span class='chip' style='background:{col}'>{html.escape(sid)}</span> "
            f"<b class='what'>{html.escape(describe(members, categorical, informative=informative))}</b></div>"
            f"<div>{int(s['n_candidates'])} candidates · {int(s['n_frames'])} frames · {int(s['n_events'])} events"
            f" · {int(s['n_drives'])} drives</div>"
            f"<div>peak novelty <b>{peak_nov}</b>{nov_on} · peak fused score {float(s['score_max']):.3f}</div>"
            f"<div class='muted small'>peaks: {sig or '–'}</div>"
            f"<div class='muted small'>most common among its {len(members)} candidates: {detail or '–'}</div>"
            f"<div class='thumbs'>{figs}</div></div>")
    out.append("</div>")
    return "".join(out)
