"""The report's embedding map: candidates over a sample of fleet and reference frames, in 2-D.

    sample = sample_map_vectors(frames_index, ref_index, candidate_ids, seed=0)   # bounded, from the indexes
    svg = svg_map(project(sample), colors=..., labels=...)

Why PCA (numpy SVD) and not UMAP/t-SNE: it is deterministic (the same run draws the same map), costs time
linear in the number of vectors (the fit sees at most `n_fleet + n_reference` of them, whatever the run's
size), and needs no extra dependency. Its two axes are the directions of largest variance of the fleet and
reference together, so a candidate far from both clouds is far in the embedding space too (the converse does
not hold: a 2-D linear view folds distant points together).

The vectors come from the indexes the run already holds (any object with `count`, `ids` and `reconstruct`,
as `edgemine.mining.index.VectorIndex` and the sharded index have): a few thousand random rows are
reconstructed, so the table of embeddings is never read, and nothing grows with the run.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

N_FLEET, N_REFERENCE = 5_000, 2_000


class _Rows(Protocol):
    @property
    def count(self) -> int: ...

    @property
    def ids(self) -> pa.Table: ...

    def reconstruct(self, rows: Any) -> np.ndarray: ...


@dataclass(frozen=True)
class MapSample:
    """Vectors for the map: a uniform sample of the run's frames and of the reference, and every candidate
    (`candidate_ids[i]` is row i of `candidates`; a candidate missing from the frames index is left out)."""

    fleet: np.ndarray
    reference: np.ndarray
    candidate_ids: list[str]
    candidates: np.ndarray
    n_fleet_total: int = 0
    n_reference_total: int = 0


@dataclass(frozen=True)
class Projection:
    """2-D coordinates of each part of a MapSample, and the share of variance each axis explains."""

    fleet: np.ndarray
    reference: np.ndarray
    candidates: np.ndarray
    candidate_ids: list[str]
    explained: tuple[float, float]
    n_fleet_total: int = 0
    n_reference_total: int = 0


def _random_rows(index: _Rows, n: int, rng: np.random.Generator) -> np.ndarray:
    count = int(index.count)
    if count <= 0 or n <= 0:
        return np.zeros((0, 0), dtype=np.float32)
    rows = np.sort(rng.choice(count, size=min(n, count), replace=False))
    return np.asarray(index.reconstruct(rows.tolist()), dtype=np.float32)


def sample_map_vectors(frames_index: _Rows, reference_index: _Rows | None, candidate_ids: Sequence[str] | pa.Array
                       | pa.ChunkedArray, *, n_fleet: int = N_FLEET, n_reference: int = N_REFERENCE,
                       seed: int = 0) -> MapSample:
    """Up to `n_fleet` random rows of the run's frames index and `n_reference` of the reference index, and
    the candidates' own rows, reconstructed from the indexes (bounded memory and time at any run size)."""
    rng = np.random.default_rng(seed)
    fleet = _random_rows(frames_index, n_fleet, rng)
    ref = _random_rows(reference_index, n_reference, rng) if reference_index is not None else fleet[:0]
    ids = pa.array(candidate_ids.to_pylist() if isinstance(candidate_ids, (pa.Array, pa.ChunkedArray))
                   else list(candidate_ids), pa.string())
    pos = pc.fill_null(pc.index_in(ids, value_set=frames_index.ids.column("frame_id").combine_chunks()), -1)
    pos_np = np.asarray(pos.to_numpy(zero_copy_only=False), dtype=np.int64)
    have = np.flatnonzero(pos_np >= 0)
    cand = np.asarray(frames_index.reconstruct(pos_np[have].tolist()), dtype=np.float32) if have.size \
        else np.zeros((0, fleet.shape[1] if fleet.ndim == 2 else 0), np.float32)
    return MapSample(fleet=fleet, reference=ref if ref.size else np.zeros((0, fleet.shape[1]), np.float32),
                     candidate_ids=[ids[int(i)].as_py() for i in have], candidates=cand,
                     n_fleet_total=int(frames_index.count),
                     n_reference_total=int(reference_index.count) if reference_index is not None else 0)


def pca_fit(x: np.ndarray, *, k: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, components (k, d), explained variance share per component) of the rows of `x` by SVD.

    Each component's sign is fixed (its largest-magnitude coefficient positive), so the map does not flip."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"pca_fit needs at least 2 rows of vectors, got shape {x.shape}")
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    comps = vt[:k]
    if comps.shape[0] < k:
        comps = np.vstack([comps, np.zeros((k - comps.shape[0], x.shape[1]))])
        s = np.concatenate([s, np.zeros(k - len(s))])
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    var = s**2
    share = var[:k] / var.sum() if var.sum() > 0 else np.zeros(k)
    return mean, comps, share


def project(sample: MapSample) -> Projection | None:
    """Fit PCA on the fleet and reference samples (the candidates too when those are few), project all three.

    None when there are fewer than two vectors or the vectors are empty."""
    parts = [p for p in (sample.fleet, sample.reference) if p.size]
    fit = np.concatenate(parts) if parts else np.zeros((0, 0))
    if fit.shape[0] < 2 and sample.candidates.size:
        fit = np.concatenate([p for p in (fit, sample.candidates) if p.size])
    if fit.ndim != 2 or fit.shape[0] < 2 or fit.shape[1] == 0:
        return None
    mean, comps, share = pca_fit(fit)

    def proj(v: np.ndarray) -> np.ndarray:
        return (np.asarray(v, np.float64) - mean) @ comps.T if v.size else np.zeros((0, 2))

    return Projection(fleet=proj(sample.fleet), reference=proj(sample.reference),
                      candidates=proj(sample.candidates), candidate_ids=list(sample.candidate_ids),
                      explained=(float(share[0]), float(share[1])), n_fleet_total=sample.n_fleet_total,
                      n_reference_total=sample.n_reference_total)


def svg_map(p: Projection, *, fleet_color: str, reference_color: str, candidate_color: str,
            candidate_info: Mapping[str, tuple[int, str | None, str]], scenario_colors: Mapping[str, str],
            width: int = 760, height: int = 500) -> str:
    """The map as inline SVG: fleet and reference samples as small muted dots, candidates on top as larger
    dots coloured by scenario (`candidate_info[frame_id]` = (rank, scenario_id, hover title)); each candidate
    dot carries `data-rank` so the page's script can show its thumbnail on hover and open it on click."""
    pad_l, pad_r, pad_t, pad_b = 30, 10, 10, 34
    pts = [a for a in (p.fleet, p.reference, p.candidates) if len(a)]
    allp = np.concatenate(pts)
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    lo, span = lo - 0.04 * span, span * 1.08
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def xy(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return pad_l + (a[:, 0] - lo[0]) / span[0] * w, pad_t + h - (a[:, 1] - lo[1]) / span[1] * h

    out = [f"<svg id='map' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
           f"xmlns='http://www.w3.org/2000/svg' role='img' aria-label='embedding map'>",
           f"<rect x='{pad_l}' y='{pad_t}' width='{w}' height='{h}' fill='#fcfcfc' stroke='#ccc'/>"]
    for name, arr, col in (("fleet", p.fleet, fleet_color), ("reference", p.reference, reference_color)):
        if len(arr):
            xs, ys = xy(arr)
            out.append(f"<g class='bg {name}' fill='{col}' fill-opacity='0.75'>" + "".join(
                f"<circle cx='{x:.1f}' cy='{y:.1f}' r='1.8'/>" for x, y in zip(xs, ys, strict=True)) + "</g>")
    if len(p.candidates):
        xs, ys = xy(p.candidates)
        dots = []
        order = sorted(range(len(p.candidate_ids)), key=lambda i: -candidate_info[p.candidate_ids[i]][0])
        for i in order:  # rank 1 drawn last, on top
            rank, scen, title = candidate_info[p.candidate_ids[i]]
            col = scenario_colors.get(scen or "", candidate_color)
            dots.append(f"<circle class='cand' data-rank='{rank}' cx='{xs[i]:.1f}' cy='{ys[i]:.1f}' r='5' "
                        f"fill='{col}' stroke='#222' stroke-width='0.8'><title>{html.escape(title)}</title></circle>")
        out.append("<g class='cands'>" + "".join(dots) + "</g>")
    e1, e2 = p.explained
    out.append(f"<text x='{pad_l + w / 2:.0f}' y='{height - 8}' font-size='12' text-anchor='middle'>"
               f"principal component 1 ({e1:.0%} of the sampled variance)</text>"
               f"<text transform='translate(14 {pad_t + h / 2:.0f}) rotate(-90)' font-size='12' "
               f"text-anchor='middle'>principal component 2 ({e2:.0%})</text>")
    out.append("</svg>")
    return "".join(out)
